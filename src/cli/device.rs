//! `--device`: the CPU, a GPU through the CUDA kernels, or whichever is present.

use clap::Args;
use whorl::backend::cpu::CpuBackend;
use whorl::backend::gpu::GpuBackend;
use whorl::backend::gpu::cuda::CudaDevice;
use whorl::backend::{Precision, WinogradTile};
use whorl::{Error, Result};

/// Where and how to compute: `--device`, `--precision` and `--winograd-tile`, for every command
/// that runs the model.
#[derive(Args, Clone, Debug)]
pub(crate) struct Compute {
    /// Where to compute: cpu, cuda (GPU 0), cuda:N, or auto (the first GPU when a driver and a
    /// GPU are present, else the CPU; it says which). CPU threads follow RAYON_NUM_THREADS
    /// (default: all cores).
    #[arg(long, default_value = "auto")]
    pub(crate) device: String,

    /// How a GPU multiplies in its convolutions: tf32 (tensor cores, operands rounded to TF32,
    /// sums in float32: what PyTorch and TensorFlow do by default), bf16 (tensor cores,
    /// operands rounded to BF16 at twice TF32's rate, sums, weights and everything else in
    /// float32) or fp32 (float32 operands and sums on the CUDA cores, the plain convolutions by
    /// Winograd's F(2x2, 3x3) as on the CPU). The CPU always computes in FP32.
    #[arg(long, value_enum, default_value_t = Precision::Tf32)]
    pub(crate) precision: Precision,

    /// The CPU's output tile for its plain convolutions (conv2 to conv4, and backward-data of
    /// every plain one), Winograd's F(m x m, 3x3): 2x2 (4/9 of the direct multiplies, float32
    /// rounding of about 1e-6 of the outputs' scale) or 4x4 (1/4 of them: training about a
    /// fifth faster, rounding about ten times larger). GPUs ignore it.
    #[arg(long, value_enum, default_value_t = WinogradTile::TwoByTwo)]
    pub(crate) winograd_tile: WinogradTile,
}

/// Where `--device` asks to compute.
pub(crate) enum DeviceChoice {
    Cpu,
    Auto,
    Cuda(usize),
}

pub(crate) fn parse_device(device: &str) -> Result<DeviceChoice> {
    match device {
        "cpu" => Ok(DeviceChoice::Cpu),
        "auto" => Ok(DeviceChoice::Auto),
        "cuda" => Ok(DeviceChoice::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceChoice::Cuda)
            .ok_or_else(|| {
                Error::invalid(
                    "--device",
                    format!("unknown device \"{other}\" (expected cpu, cuda, cuda:N or auto)"),
                )
            }),
    }
}

/// Runs `job` on the backend `--device` names: the CPU with `--winograd-tile`, or a GPU
/// through the CUDA kernels in `--precision`.
pub(crate) fn on_device<T>(
    compute: &Compute,
    quiet: bool,
    job: impl FnOnce(Backends) -> Result<T>,
) -> Result<T> {
    let device = compute.device.as_str();
    let gpu = |ordinal| {
        CudaDevice::new(ordinal).map(|d| {
            Backends::Gpu(Box::new(
                GpuBackend::new(d).with_precision(compute.precision),
            ))
        })
    };
    let cpu = || Backends::Cpu(CpuBackend::new().with_winograd_tile(compute.winograd_tile));
    let backend = match parse_device(device)? {
        DeviceChoice::Cpu => cpu(),
        DeviceChoice::Cuda(ordinal) => gpu(ordinal)
            .map_err(|e| Error::invalid("--device", format!("{device}: {e} (use --device cpu)")))?,
        DeviceChoice::Auto => gpu(0).unwrap_or_else(|reason| {
            if !quiet {
                println!("device: no GPU ({reason}); computing on the CPU");
            }
            cpu()
        }),
    };
    job(backend)
}

/// The backends a command can run on.
pub(crate) enum Backends {
    Cpu(CpuBackend),
    Gpu(Box<GpuBackend<CudaDevice>>),
}

/// Runs `$job(backend, ...)` on the backend `--device` names, whichever type it has.
macro_rules! with_backend {
    ($device:expr, $quiet:expr, $job:ident($($arg:expr),*)) => {
        on_device($device, $quiet, |backend| match backend {
            Backends::Cpu(cpu) => $job(cpu, $($arg),*),
            Backends::Gpu(gpu) => $job(*gpu, $($arg),*),
        })
    };
}
pub(crate) use with_backend;
