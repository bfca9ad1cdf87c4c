//! Builds the kernels two ways:
//! - PTX for real GPUs: NVRTC (loaded at build time through cudarc) compiles kernels/*.cu, as
//!   one self-contained source, for compute_89 (Ada, L40S, and newer GPUs) and compute_90a
//!   (Hopper, H100 and H200: with the warpgroup-MMA kernels, which only sm_90 runs); the binary
//!   embeds both and picks the one for the GPU it runs on. A kernel that does not
//!   compile fails the build with NVRTC's log. Without libnvrtc, a cargo warning says so and
//!   the binary compiles the embedded source at first use with the NVRTC it finds then.
//! - The CUDA-on-CPU emulator: g++ compiles every kernels/*.cu (and the deliberately broken
//!   kernels of tests/kernels/) as host code against kernels/emu/cuda_emu.h, with a table of
//!   every __global__ function so kernels can be launched by name.
//! - The kernel contract (build/kernel_contract.rs): a Rust module with the kernels' constants
//!   and one typed launch function per kernel, read from the same sources.

#[path = "build/kernel_contract.rs"]
mod kernel_contract;

use std::fs;
use std::path::{Path, PathBuf};

fn cuda_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "cu"));
    files.sort();
    files
}

/// PTX targets embedded in the binary.
const PTX_TARGETS: [&str; 2] = ["compute_89", "compute_90a"];

/// Every kernels/*.cu with kernels/whorl.cuh inlined: a source NVRTC compiles with no include
/// path, at build time or at run time.
fn self_contained_source(kernels: &Path, header: &str) -> String {
    let mut source = header.replace("#pragma once", "");
    for file in cuda_sources(kernels) {
        let text = fs::read_to_string(&file).expect("readable kernel source");
        source += &format!(
            "\n// ---- {} ----\n",
            file.file_name().unwrap().to_string_lossy()
        );
        source += &text.replace("#include \"whorl.cuh\"", "");
    }
    source
}

fn compile_ptx(source: &str, out: &Path) {
    // SAFETY: only probes whether libnvrtc can be loaded.
    let present = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    for arch in PTX_TARGETS {
        let ptx = if present {
            let options = cudarc::nvrtc::CompileOptions {
                arch: Some(arch),
                name: Some("whorl_kernels.cu".into()),
                ..Default::default()
            };
            match cudarc::nvrtc::compile_ptx_with_opts(source, options) {
                Ok(ptx) => ptx.to_src(),
                Err(error) => panic!("kernels/ do not compile with NVRTC for {arch}:\n{error:?}"),
            }
        } else {
            String::new()
        };
        fs::write(out.join(format!("whorl_{arch}.ptx")), ptx).expect("OUT_DIR is writable");
    }
    if !present {
        println!(
            "cargo:warning=libnvrtc not found at build time: the kernels are not embedded as PTX; \
             on a GPU whorl compiles them at first use with the NVRTC it finds then"
        );
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let kernels = root.join("kernels");
    let sources: Vec<PathBuf> = cuda_sources(&kernels)
        .into_iter()
        .chain(cuda_sources(&root.join("tests/kernels")))
        .collect();

    let header = fs::read_to_string(kernels.join("whorl.cuh")).expect("kernels/whorl.cuh");
    let mut unit = String::from("#include \"cuda_emu.h\"\n#include \"runtime.h\"\n");
    let mut table = String::new();
    let mut all = Vec::new();
    let mut launched = Vec::new();
    for source in &sources {
        let text = fs::read_to_string(source).expect("readable kernel source");
        let file = source
            .strip_prefix(&root)
            .unwrap_or(source)
            .display()
            .to_string();
        unit += &format!("#include \"{}\"\n", source.display());
        for kernel in kernel_contract::kernels(&text, &header, &file) {
            table += &format!("    {{\"{0}\", &Entry<&{0}>::call}},\n", kernel.name);
            if source.starts_with(&kernels) {
                launched.push((file.clone(), kernel.clone()));
            }
            all.push(kernel);
        }
        println!("cargo:rerun-if-changed={}", source.display());
    }
    unit += &format!(
        "namespace whorl_emu {{\nconst KernelEntry kernels[] = {{\n{table}}};\nconst int kernel_count = {};\n}}\n",
        all.len()
    );
    let constants: Vec<_> = std::iter::once(kernels.join("whorl.cuh"))
        .chain(cuda_sources(&kernels))
        .flat_map(|path| {
            let text = fs::read_to_string(&path).expect("readable kernel source");
            let file = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            kernel_contract::constants(&text)
                .into_iter()
                .map(move |c| (file.clone(), c))
        })
        .collect();
    let contract = kernel_contract::rust_module(&constants, &launched, &all);
    fs::write(out.join("kernel_contract.rs"), contract).expect("OUT_DIR is writable");
    let source = self_contained_source(&kernels, &header);
    fs::write(out.join("whorl_kernels.cu"), &source).expect("OUT_DIR is writable");
    compile_ptx(&source, &out);

    let generated = out.join("emulated_kernels.cpp");
    fs::write(&generated, unit).expect("OUT_DIR is writable");

    for file in ["cuda_emu.h", "runtime.h", "runtime.cpp"] {
        println!("cargo:rerun-if-changed=kernels/emu/{file}");
    }
    println!("cargo:rerun-if-changed=kernels/whorl.cuh");
    println!("cargo:rerun-if-changed=build/kernel_contract.rs");
    println!("cargo:rerun-if-env-changed=LD_LIBRARY_PATH");
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
