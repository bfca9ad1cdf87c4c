//! `whorl demo`: the whole job, small.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser};
use whorl::backend::OptimizerKind;
use whorl::backend::gpu::cuda;
use whorl::{Error, Result, history};

use super::analyze::{
    EvalArgs, GradcamArgs, ModelArgs, ReconstructArgs, run_eval, run_gradcam, run_reconstruct,
};
use super::device::{Compute, DeviceChoice, parse_device};
use super::train::{TrainArgs, run_train};

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Folder for the data, the run and the figures.
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    pub(crate) out: PathBuf,

    /// Input size of the model.
    #[arg(long, default_value_t = 128)]
    pub(crate) size: usize,

    /// Training epochs (batch 16, learning rate 5e-4).
    #[arg(long, default_value_t = 10)]
    pub(crate) epochs: usize,

    /// Fingers of the optical-sensor set (training and validation); an eighth as many, at
    /// least 4, on the capacitive sensor for testing.
    #[arg(long, default_value_t = 96)]
    pub(crate) fingers: usize,

    /// Impressions per finger.
    #[arg(long, default_value_t = 8)]
    pub(crate) impressions: usize,

    #[command(flatten)]
    pub(crate) compute: Compute,

    /// The optimizer that trains the model: rmsprop or adam (as `whorl train`).
    #[arg(long, value_enum, default_value_t = OptimizerKind::Rmsprop)]
    pub(crate) optimizer: OptimizerKind,
}

/// Decides `--device auto` once, so the steps of the demo agree and say it once.
fn settle_device(compute: &mut Compute) -> Result<()> {
    if let DeviceChoice::Auto = parse_device(&compute.device)? {
        compute.device = match cuda::probe() {
            Ok((_, gpus)) if !gpus.is_empty() => "cuda:0".into(),
            Ok(_) => "cpu".into(),
            Err(reason) => {
                println!("device: no GPU ({reason}); computing on the CPU");
                "cpu".into()
            }
        };
    }
    Ok(())
}

/// The demo's data: optical-sensor prints to train on, another sensor's to test on.
fn synthesise(args: &DemoArgs, train_dir: &Path, test_dir: &Path) -> Result<()> {
    let set = |sensor: &str, first_finger: usize, fingers: usize| whorl::synth::SynthConfig {
        fingers,
        impressions: args.impressions,
        first_finger,
        sensor: whorl::synth::sensor::sensor(sensor)
            .expect("a built-in sensor")
            .clone(),
        seed: whorl::synth::DEFAULT_DATA_SEED,
    };
    whorl::synth::generate(train_dir, &set("optical", 0, args.fingers), true)?;
    whorl::synth::generate(
        test_dir,
        &set("capacitive", args.fingers, (args.fingers / 8).max(4)),
        true,
    )?;
    Ok(())
}

pub(crate) fn run_demo(mut args: DemoArgs) -> Result<ExitCode> {
    settle_device(&mut args.compute)?;
    let (data, run) = (args.out.join("data"), args.out.join("run"));
    let (train_dir, test_dir) = (data.join("train"), data.join("test"));
    println!("demo: synthesising fingerprints into {}", data.display());
    synthesise(&args, &train_dir, &test_dir)?;
    if run.exists() {
        std::fs::remove_dir_all(&run).map_err(Error::io(&run))?;
    }
    let train_args = TrainArgs::parse_from([
        "train",
        "--data",
        &train_dir.to_string_lossy(),
        "--out",
        &run.to_string_lossy(),
        "--size",
        &args.size.to_string(),
        "--epochs",
        &args.epochs.to_string(),
        "--batch-size",
        "16",
        "--lr",
        "0.0005",
        "--save-every",
        &args.epochs.to_string(),
        "--device",
        &args.compute.device,
        "--precision",
        args.compute.precision.name(),
        "--optimizer",
        &args.optimizer.to_string(),
    ]);
    let code = run_train(train_args)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let model = ModelArgs {
        model: Some(run.clone()),
        compute: args.compute.clone(),
    };
    let metrics = args.out.join("metrics.json");
    run_eval(EvalArgs {
        model: ModelArgs { ..model.clone() },
        data: vec![test_dir.clone()],
        split: Some("val".into()),
        out: Some(metrics.clone()),
        skip_bad: false,
        no_identity: true,
    })?;
    let reconstructions = args.out.join("reconstructions.png");
    run_reconstruct(ReconstructArgs {
        model: model.clone(),
        data: test_dir.clone(),
        out: reconstructions.clone(),
        count: 8,
        seed: 13,
        save_dir: None,
    })?;
    let first = whorl::data::find_images(&test_dir)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::EmptyDataDir {
            path: test_dir.clone(),
        })?;
    let gradcam = args.out.join("gradcam.png");
    run_gradcam(GradcamArgs {
        model,
        image: first,
        layer: "all".into(),
        out: gradcam.clone(),
    })?;
    println!("\ndemo files:");
    for (what, path) in [
        ("loss curve", run.join(history::LOSS_PLOT)),
        ("reconstructions (unseen sensor)", reconstructions),
        ("Grad-CAM, every layer", gradcam),
        ("scores (JSON; CSV beside it)", metrics),
        ("checkpoints", run.join("checkpoints")),
    ] {
        println!("  {what:<32} {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
