//! `whorl bench` and `whorl compare`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use whorl::backend::Backend;
use whorl::backend::gpu::Device;
use whorl::model::Architecture;
use whorl::{Error, Result, bench};

use super::device::{Backends, Compute, on_device};

#[derive(Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) compute: Compute,

    /// Images per step.
    #[arg(long, default_value_t = 128)]
    pub(crate) batch_size: usize,

    /// Input size (a multiple of 4).
    #[arg(long, default_value_t = 224)]
    pub(crate) size: usize,

    /// Timed calls per kernel and per step (the median is reported), after one warm-up. Kernels
    /// are timed on the device (CUDA events on a GPU), the training step and inference by the
    /// wall clock with the next batch uploaded while each step runs, as in training.
    #[arg(long, default_value_t = 5)]
    pub(crate) repeats: usize,

    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,

    /// On a Hopper GPU (compute capability 9.0: H100, H200), time the warpgroup tiles (wgmma)
    /// too among the TF32 GEMMs' and kernel gradients' candidates, and keep them where they
    /// are fastest. Training does not use them yet: they have been checked in the emulator
    /// only, and a GPU may round their sums otherwise than the other tiles', so a choice
    /// between them could change a run's last bits. Without a Hopper GPU, or with
    /// --precision bf16 or fp32, nothing changes.
    #[arg(long)]
    pub(crate) warpgroup_tiles: bool,
}

pub(crate) fn run_bench(args: BenchArgs) -> Result<ExitCode> {
    if args.batch_size == 0 {
        return Err(Error::invalid("--batch-size", "must be at least 1"));
    }
    if args.repeats == 0 {
        return Err(Error::invalid("--repeats", "must be at least 1"));
    }
    if let Some(path) = &args.json {
        whorl::atomic::check_writable(path)?;
    }
    let architecture = Architecture::reference();
    architecture.shapes(args.size, args.size)?;
    // The benchmark holds the network and, per kernel, about three more batches of its tensors.
    let network = whorl::memory::network_bytes(&architecture, args.size, args.batch_size);
    let what = format!(
        "benchmarking {} images of {}x{}",
        args.batch_size, args.size, args.size
    );
    whorl::memory::check_fits(&what, network.map(|bytes| 2 * bytes))
        .map_err(|why| Error::invalid("--batch-size", why))?;
    let report = on_device(&args.compute, false, |backend| match backend {
        Backends::Cpu(cpu) => {
            if args.warpgroup_tiles {
                println!("--warpgroup-tiles: the CPU has none; benchmarking as without it");
            }
            let name = cpu.name();
            bench::run(cpu, &name, args.batch_size, args.size, args.repeats, None)
        }
        Backends::Gpu(gpu) => {
            if args.warpgroup_tiles && !gpu.device().runs_warpgroup_mma() {
                println!(
                    "--warpgroup-tiles: this GPU does not run them (compute capability 9.0 \
                     only); benchmarking as without it"
                );
            }
            let gpu = (*gpu).with_warpgroup_tiles(args.warpgroup_tiles);
            let name = gpu.name();
            let precision = gpu.precision();
            let peaks = gpu.device().info().peaks(precision);
            bench::run(gpu, &name, args.batch_size, args.size, args.repeats, peaks)
        }
    })?;
    print!("{}", bench::markdown(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("reports serialise");
        whorl::atomic::write_file(path, json.as_bytes())?;
        println!("JSON written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_compare(first: &Path, second: &Path) -> Result<ExitCode> {
    let read = |path: &Path| -> Result<bench::BenchReport> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::invalid(
                "compare",
                format!("{}: not a benchmark report: {e}", path.display()),
            )
        })
    };
    print!("{}", bench::compare(&read(first)?, &read(second)?));
    Ok(ExitCode::SUCCESS)
}
