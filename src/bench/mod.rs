//! Benchmarks: every kernel at the model's real shapes, then the whole training step and
//! inference, on any backend. `whorl bench` and `cargo bench` run this same code.
//!
//! - [`work`]: what each call computes and moves (nominal and executed FLOPs, bytes);
//! - [`timing`]: the table of timed kernels, and the training step and inference;
//! - [`report`]: the report, as JSON and markdown, and the comparison of two reports.

pub mod report;
pub mod timing;
pub mod work;

pub use report::{BenchReport, KernelTiming, compare, markdown};
pub use timing::{kernels, throughput};
pub use work::{Work, model_executed_flops, model_flops};

use crate::backend::Backend;
use crate::backend::gpu::cuda::Peaks;
use crate::error::Result;

/// The whole benchmark on one backend: kernels, then training and inference throughput.
pub fn run<B: Backend>(
    mut backend: B,
    device: &str,
    batch: usize,
    size: usize,
    repeats: usize,
    peaks: Option<Peaks>,
) -> Result<BenchReport> {
    let kernels = kernels(&mut backend, batch, size, repeats, peaks)?;
    let timed_tiles = backend.timed_choices();
    let progress = timing::spinner("timing the training step and inference");
    let (train, inference) = throughput(backend, batch, size, repeats)?;
    progress.finish_and_clear();
    Ok(BenchReport {
        framework: format!("whorl {}", env!("CARGO_PKG_VERSION")),
        device: device.to_string(),
        batch_size: batch,
        size,
        repeats,
        train_step_ms: 1e3 * train,
        train_images_per_s: batch as f64 / train,
        inference_ms: 1e3 * inference,
        inference_images_per_s: batch as f64 / inference,
        kernels,
        timed_tiles,
    })
}
