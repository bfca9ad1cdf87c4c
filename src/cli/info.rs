//! `whorl info`.

use std::process::ExitCode;

use whorl::Result;
use whorl::backend::cpu;
use whorl::backend::gpu::cuda::{self, EMBEDDED_PTX};

pub(crate) fn run_info() -> Result<ExitCode> {
    println!("whorl {}", env!("CARGO_PKG_VERSION"));
    let embedded: Vec<&str> = EMBEDDED_PTX
        .iter()
        .filter(|(_, ptx)| !ptx.is_empty())
        .map(|(target, _)| *target)
        .collect();
    if embedded.is_empty() {
        println!("kernels: not embedded (built without NVRTC); compiled at first use on a GPU");
    } else {
        println!("kernels: embedded as PTX for {}", embedded.join(", "));
    }
    match cuda::nvrtc_version() {
        Some((major, minor)) => println!("NVRTC: {major}.{minor}"),
        None => println!("NVRTC: not found"),
    }
    match cuda::probe() {
        Ok((version, gpus)) => {
            println!("CUDA driver: {}.{}", version / 1000, version % 1000 / 10);
            if gpus.is_empty() {
                println!("GPUs: none");
            }
            for gpu in gpus {
                let (major, minor) = gpu.compute_capability;
                println!(
                    "cuda:{}: {}, compute capability {major}.{minor}, {} SMs, {:.1} GiB",
                    gpu.ordinal,
                    gpu.name,
                    gpu.multiprocessors,
                    gpu.memory_bytes as f64 / (1u64 << 30) as f64
                );
                let precision = if major >= 8 {
                    "TF32 on tensor cores by default (--precision bf16: BF16 on tensor cores; \
                     --precision fp32: FP32 on the CUDA cores)"
                } else {
                    "FP32 only (TF32 and BF16 need compute capability 8.0 or more)"
                };
                println!("  convolutions: {precision}");
            }
        }
        Err(reason) => println!("CUDA driver: none ({reason})"),
    }
    println!("CPU: {}", cpu::description());
    Ok(ExitCode::SUCCESS)
}
