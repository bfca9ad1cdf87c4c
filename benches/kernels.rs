//! Every kernel at the model's shapes, then the training step and inference, on the CPU: the
//! same code as `whorl bench --device cpu`. Run with `cargo bench --bench kernels`; the batch
//! size comes from WHORL_BENCH_BATCH (default 128).

use whorl::backend::Backend;
use whorl::backend::cpu::CpuBackend;
use whorl::bench::{markdown, run};

fn main() -> Result<(), whorl::Error> {
    let batch = std::env::var("WHORL_BENCH_BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(128);
    let backend = CpuBackend::new();
    let device = backend.name();
    print!("{}", markdown(&run(backend, &device, batch, 224, 3, None)?));
    Ok(())
}
