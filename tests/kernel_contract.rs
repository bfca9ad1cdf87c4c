//! The kernel contract: build.rs reads every kernel signature and constant from kernels/ and
//! generates typed launch functions, so a wrong argument count or type does not compile; the
//! emulator checks launches by name against the same signatures.

#[path = "../build/kernel_contract.rs"]
#[allow(dead_code)]
mod kernel_contract;

use kernel_contract::{Kernel, ParamType, constants, kernels, rust_module};
use whorl::backend::gpu::emulator::Emulator;
use whorl::backend::gpu::{Device, KernelArg, kernels as generated};

const SOURCE: &str = r#"
#define TILE 64
#define SHARED_FLOATS (2 * TILE * (TILE + 1))  // two tiles, padded
#define SQUARE(x) ((x) * (x))
#define not_a_constant 3

// Scales a vector.
extern "C" __global__ void __launch_bounds__(256)
scale(int len, float factor, const float* __restrict__ in, float* __restrict__ out) {
    int i = threadIdx.x;
}

extern "C" __global__ void no_arguments() {}
"#;

/// A kernel's parameters as (name, type).
fn names_and_types(kernel: &Kernel) -> Vec<(&str, ParamType)> {
    kernel
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.ty))
        .collect()
}

#[test]
fn signatures_are_read_with_their_parameter_names_and_types() {
    let found = kernels(SOURCE, "", "scale.cu");
    assert_eq!(found.len(), 2);
    let scale = &found[0];
    assert_eq!(scale.name, "scale");
    assert_eq!(
        names_and_types(scale),
        [
            ("len", ParamType::Int),
            ("factor", ParamType::Float),
            ("in", ParamType::Pointer),
            ("out", ParamType::Pointer),
        ]
    );
    assert_eq!(found[1].name, "no_arguments");
    assert!(found[1].params.is_empty());
}

#[test]
fn a_parameter_list_defined_once_stands_where_a_signature_names_it() {
    let header = "#define SOURCE_PARAMS const float* __restrict__ in, \\\n    int len\n";
    let source = "#define OUTPUT_PARAMS float* out\n\
        extern \"C\" __global__ void copy(SOURCE_PARAMS, OUTPUT_PARAMS) {}\n\
        extern \"C\" __global__ void scaled_copy(SOURCE_PARAMS, float factor,\n    \
        OUTPUT_PARAMS) {}\n";
    let found = kernels(source, header, "copy.cu");
    let signatures: Vec<&str> = found.iter().map(|k| k.signature.as_str()).collect();
    assert_eq!(
        signatures,
        [
            "copy(const float* __restrict__ in, int len, float* out)",
            "scaled_copy(const float* __restrict__ in, int len, float factor, float* out)",
        ]
    );
    assert_eq!(
        names_and_types(&found[1]),
        [
            ("in", ParamType::Pointer),
            ("len", ParamType::Int),
            ("factor", ParamType::Float),
            ("out", ParamType::Pointer),
        ]
    );
}

#[test]
fn integer_constants_are_read_and_macros_are_not() {
    let found: Vec<(String, String)> = constants(SOURCE)
        .into_iter()
        .map(|c| (c.name, c.expression))
        .collect();
    assert_eq!(
        found,
        [
            ("TILE".to_string(), "64".to_string()),
            (
                "SHARED_FLOATS".to_string(),
                "(2 * TILE * (TILE + 1))".to_string()
            ),
        ]
    );
}

#[test]
#[should_panic(expected = "parameter `double x` has type `double`")]
fn a_parameter_type_outside_the_contract_stops_the_build() {
    kernels(
        "extern \"C\" __global__ void f(double x) {}",
        "",
        "kernels/f.cu",
    );
}

#[test]
fn the_generated_launcher_takes_the_signature_in_order() {
    let found = kernels(SOURCE, "", "kernels/scale.cu");
    let launched = vec![("kernels/scale.cu".to_string(), found[0].clone())];
    let module = rust_module(&[], &launched, &found);
    assert!(
        module.contains(
            "pub fn scale<D: Device + ?Sized>(device: &mut D, launch: Launch, len: i32, \
             factor: f32, r#in: DevicePtr, out: DevicePtr) -> Result<()>"
        ),
        "{module}"
    );
    assert!(module.contains("(\"scale\", 4),"), "{module}");
    assert!(module.contains("(\"no_arguments\", 0),"), "{module}");
}

#[test]
fn the_engine_constants_are_the_kernels_own() {
    let header = std::fs::read_to_string("kernels/whorl.cuh").unwrap();
    assert!(header.contains(&format!(
        "#define WHORL_THREADS {}",
        generated::WHORL_THREADS
    )));
    assert_eq!(generated::arity("rmsprop_update"), Some(7));
    assert_eq!(generated::arity("no_such_kernel"), None);
}

#[test]
fn the_emulator_refuses_a_launch_with_the_wrong_argument_count() {
    let mut device = Emulator::new();
    let buffer = device.alloc(8).unwrap();
    let error = device
        .launch(
            "mse_backward",
            [1, 1, 1],
            [8, 1, 1],
            0,
            &[KernelArg::I32(8), KernelArg::Ptr(buffer)],
        )
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("mse_backward takes 4 arguments, but the launch passed 2"),
        "{error}"
    );
    let error = device
        .launch("no_such_kernel", [1, 1, 1], [1, 1, 1], 0, &[])
        .unwrap_err()
        .to_string();
    assert!(error.contains("no kernel named no_such_kernel"), "{error}");
}
