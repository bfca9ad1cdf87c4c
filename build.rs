//! Builds the CUDA-on-CPU emulator: g++ compiles every kernels/*.cu (and the deliberately broken
//! kernels of tests/kernels/) as host code against kernels/emu/cuda_emu.h, with a table of
//! every __global__ function so kernels can be launched by name.

use std::fs;
use std::path::{Path, PathBuf};

/// The names of the __global__ functions in a CUDA source.
fn kernel_names(source: &str) -> Vec<String> {
    source
        .split("__global__")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix("void")?.trim_start();
            let rest = match rest.strip_prefix("__launch_bounds__") {
                Some(bounds) => &bounds[bounds.find(')')? + 1..],
                None => rest,
            };
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

fn cuda_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "cu"));
    files.sort();
    files
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let kernels = root.join("kernels");
    let sources: Vec<PathBuf> = cuda_sources(&kernels)
        .into_iter()
        .chain(cuda_sources(&root.join("tests/kernels")))
        .collect();

    let mut unit = String::from("#include \"cuda_emu.h\"\n#include \"runtime.h\"\n");
    let mut table = String::new();
    let mut count = 0;
    for source in &sources {
        let text = fs::read_to_string(source).expect("readable kernel source");
        unit += &format!("#include \"{}\"\n", source.display());
        for name in kernel_names(&text) {
            table += &format!("    {{\"{name}\", &Entry<&{name}>::call}},\n");
            count += 1;
        }
        println!("cargo:rerun-if-changed={}", source.display());
    }
    unit += &format!(
        "namespace whorl_emu {{\nconst KernelEntry kernels[] = {{\n{table}}};\nconst int kernel_count = {count};\n}}\n"
    );
    let generated = out.join("emulated_kernels.cpp");
    fs::write(&generated, unit).expect("OUT_DIR is writable");

    for file in ["cuda_emu.h", "runtime.h", "runtime.cpp"] {
        println!("cargo:rerun-if-changed=kernels/emu/{file}");
    }
    println!("cargo:rerun-if-changed=kernels/whorl.cuh");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=tests/kernels");
    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .include(kernels.join("emu"))
        .include(&kernels)
        .file(kernels.join("emu/runtime.cpp"))
        .file(&generated)
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-unused-function")
        .compile("whorl_emu");
}
