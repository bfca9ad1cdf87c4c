//! What a benchmark reports, as JSON, as markdown, and side by side with another report.

use serde::{Deserialize, Serialize};

use super::work::Work;
use crate::backend::gpu::cuda::Peaks;

/// One kernel's measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelTiming {
    pub name: String,
    pub shape: String,
    pub median_ms: f64,
    /// The fastest and the slowest of the timed calls, so a reader can tell a difference from
    /// the noise; absent in reports from other tools and from before whorl recorded them.
    #[serde(default)]
    pub min_ms: Option<f64>,
    #[serde(default)]
    pub max_ms: Option<f64>,
    /// Nominal GFLOP/s (the model's FLOPs as PyTorch counts them, over the time taken).
    pub gflops: f64,
    /// GFLOP/s of the arithmetic executed.
    #[serde(default)]
    pub executed_gflops: f64,
    pub gbs: f64,
    pub work: Work,
    /// Share of the device's FP32 (or, with TF32 or BF16 convolutions, that) peak reached by the
    /// executed arithmetic (or of its memory bandwidth, for kernels with no FLOPs), if the
    /// peaks are known.
    pub percent_of_peak: Option<f64>,
}

impl KernelTiming {
    /// The timing of `name` from the seconds each timed call took (at least one), reported by
    /// their median.
    pub fn new(
        name: String,
        shape: String,
        samples: &[f64],
        work: Work,
        peaks: Option<Peaks>,
    ) -> KernelTiming {
        let seconds = median(samples);
        let (fastest, slowest) = samples
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &s| {
                (lo.min(s), hi.max(s))
            });
        let percent_of_peak = peaks.map(|p| {
            if work.executed_flops > 0.0 {
                100.0 * work.executed_flops / seconds / p.flops
            } else {
                100.0 * work.bytes / seconds / p.bytes_per_s
            }
        });
        KernelTiming {
            name,
            shape,
            median_ms: 1e3 * seconds,
            min_ms: Some(1e3 * fastest),
            max_ms: Some(1e3 * slowest),
            gflops: work.flops / seconds / 1e9,
            executed_gflops: work.executed_flops / seconds / 1e9,
            gbs: work.bytes / seconds / 1e9,
            work,
            percent_of_peak,
        }
    }
}

/// The median of some timings (the upper one of an even count).
pub(super) fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// What `whorl bench` reports; bench/torch_baseline.py writes the same top-level fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub framework: String,
    pub device: String,
    pub batch_size: usize,
    pub size: usize,
    pub repeats: usize,
    pub train_step_ms: f64,
    pub train_images_per_s: f64,
    pub inference_ms: f64,
    pub inference_images_per_s: f64,
    pub kernels: Vec<KernelTiming>,
    /// The GEMM tiles chosen by timing on the device, one line each (`M x N GEMM over K = K
    /// (TF32): KEPT (MS ms; OTHER MS ms)`); empty where nothing was timed (the CPU, the
    /// emulator) and in reports from before whorl timed tiles.
    #[serde(default)]
    pub timed_tiles: Vec<String>,
}

/// The report as markdown tables.
pub fn markdown(report: &BenchReport) -> String {
    let mut out = format!(
        "{} on {}: batch {}, {}x{}, median of {} after a warm-up\n\n",
        report.framework,
        report.device,
        report.batch_size,
        report.size,
        report.size,
        report.repeats
    );
    out += "Nominal GFLOP/s count the model's FLOPs as PyTorch does (a 3x3 convolution over an \
            upsampled input at its full size); executed GFLOP/s count the arithmetic whorl does \
            (4/9 of nominal for an upsampled convolution's forward, 1/4 for its backward \
            passes; on the CPU, by Winograd's F(2x2, 3x3), 4/9 for the plain convolutions' \
            passes but conv1's (1/4 by F(4x4, 3x3) where the device says Winograd 4x4), and \
            for conv5 16/81 (forward, by F(3, 2) over the output's phases) and 9/64 \
            (backward, by F(4, 2) over the box sums)); % of peak uses the executed count, \
            against the CUDA cores' FP32 peak, or with TF32 or BF16 convolutions the tensor \
            cores' dense peak in that precision (conv1 and conv6, one channel wide, run on the \
            CUDA cores in every precision).\n\n";
    out += "| kernel | shape | ms | fastest-slowest ms | nominal GFLOP/s | executed GFLOP/s | GB/s | % of peak |\n\
            |---|---|---:|---:|---:|---:|---:|---:|\n";
    for k in &report.kernels {
        let spread = match (k.min_ms, k.max_ms) {
            (Some(min), Some(max)) => format!("{min:.3}-{max:.3}"),
            _ => "-".into(),
        };
        out += &format!(
            "| {} | {} | {:.3} | {spread} | {:.1} | {:.1} | {:.1} | {} |\n",
            k.name,
            k.shape,
            k.median_ms,
            k.gflops,
            k.executed_gflops,
            k.gbs,
            k.percent_of_peak.map_or("-".into(), |p| format!("{p:.1}"))
        );
    }
    out += &format!(
        "\n| | ms | images/s |\n|---|---:|---:|\n| training step | {:.1} | {:.1} |\n| inference | {:.1} | {:.1} |\n",
        report.train_step_ms,
        report.train_images_per_s,
        report.inference_ms,
        report.inference_images_per_s
    );
    if !report.timed_tiles.is_empty() {
        out += "\nGEMM tiles chosen by timing the candidates on this device at first use:\n\n";
        for line in &report.timed_tiles {
            out += &format!("- {line}\n");
        }
    }
    out
}

/// Ratios of two reports' throughputs (a / b), and of their kernels' times (b / a) where the
/// names match: a's speed-up over b, each under 1 marked "slower", and a kernel whose timed
/// calls' ranges overlap in the two reports marked so (its difference is within their noise).
pub fn compare(a: &BenchReport, b: &BenchReport) -> String {
    let mut out = format!(
        "| | {} ({}) | {} ({}) | {}'s speed-up |\n|---|---:|---:|---:|\n",
        a.framework, a.device, b.framework, b.device, a.framework
    );
    // "slower" where the ratio prints below 1.00x.
    let speed_up = |ratio: f64, overlap: bool| {
        let notes: Vec<&str> = [(ratio < 0.995, "slower"), (overlap, "ranges overlap")]
            .into_iter()
            .filter_map(|(marked, note)| marked.then_some(note))
            .collect();
        match notes.is_empty() {
            true => format!("{ratio:.2}x"),
            false => format!("{ratio:.2}x ({})", notes.join(", ")),
        }
    };
    for (what, x, y) in [
        ("training", a.train_images_per_s, b.train_images_per_s),
        (
            "inference",
            a.inference_images_per_s,
            b.inference_images_per_s,
        ),
    ] {
        out += &format!(
            "| {what} images/s | {x:.1} | {y:.1} | {} |\n",
            speed_up(x / y, false)
        );
    }
    for k in &a.kernels {
        if let Some(other) = b.kernels.iter().find(|o| o.name == k.name) {
            let (x, y) = (k.median_ms, other.median_ms);
            let overlap = match (k.min_ms, k.max_ms, other.min_ms, other.max_ms) {
                (Some(lo), Some(hi), Some(other_lo), Some(other_hi)) => {
                    lo <= other_hi && other_lo <= hi
                }
                _ => false,
            };
            out += &format!(
                "| {} ms | {x:.3} | {y:.3} | {} |\n",
                k.name,
                speed_up(y / x, overlap)
            );
        }
    }
    out
}
