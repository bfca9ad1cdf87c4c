//! `whorl demo`: the whole job, small.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser};
use whorl::backend::OptimizerKind;
use whorl::backend::gpu::cuda;
use whorl::{Error, Result, history};

use whorl::evaluate::{self, SetReport};

use super::analyze::{
    EvalArgs, GradcamArgs, ModelArgs, ReconstructArgs, eval_reports, run_gradcam, run_reconstruct,
};
use super::device::{Compute, DeviceChoice, parse_device};
use super::train::{TrainArgs, run_train};

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Folder for the data, the run and the figures.
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    pub(crate) out: PathBuf,

    /// Side of the windows the model trains on, cut at random from the prints at their own
    /// resolution (`whorl train --crop`); a multiple of 4.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub(crate) crop: usize,

    /// Training epochs (batch 8, learning rate 1e-3).
    #[arg(long, default_value_t = DEMO_EPOCHS)]
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

    /// The optimizer that trains the model: adam or rmsprop (as `whorl train`).
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adam)]
    pub(crate) optimizer: OptimizerKind,

    /// Real prints to show both models on [default: ../shared/data/real-fingerprints, from the
    /// current folder or the repository whorl was built from, when it is there].
    #[arg(long, value_name = "DIR")]
    pub(crate) real_prints: Option<PathBuf>,

    /// Leave out the bundled model's NIST NBIS identity scores (about 0.15 s an image).
    #[arg(long)]
    pub(crate) no_identity: bool,

    /// Skip real prints that fail to decode instead of stopping.
    #[arg(long)]
    pub(crate) skip_bad: bool,
}

/// The demo's training length: what two CPU cores train in about a minute.
const DEMO_EPOCHS: usize = 5;

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

/// The demo's data: optical-sensor prints to train on, another sensor's, of fingers neither the
/// demo's model nor the bundled model trained on, to test on.
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
    // The test fingers follow both the demo's and the bundled model's training fingers.
    let first_test_finger = args.fingers.max(whorl::bundled::TRAINING_FINGERS);
    whorl::synth::generate(
        test_dir,
        &set("capacitive", first_test_finger, (args.fingers / 8).max(4)),
        true,
    )?;
    Ok(())
}

/// Where `whorl demo` looks for real prints when --real-prints is not given, relative to the
/// current folder and to the repository whorl was built from.
const REAL_PRINTS: &str = "../shared/data/real-fingerprints";

/// The folder of real prints to show the bundled model on: --real-prints, which must be a
/// folder, else [`REAL_PRINTS`] where it exists.
fn real_prints(args: &DemoArgs) -> Result<Option<PathBuf>> {
    match &args.real_prints {
        Some(dir) if dir.is_dir() => Ok(Some(dir.clone())),
        Some(dir) => Err(Error::invalid(
            "--real-prints",
            format!("{} is not a folder", dir.display()),
        )),
        None => Ok([
            PathBuf::from(REAL_PRINTS),
            Path::new(env!("CARGO_MANIFEST_DIR")).join(REAL_PRINTS),
        ]
        .into_iter()
        .find(|dir| dir.is_dir())),
    }
}

/// Scores `model` on `sets`, each report labelled with the model's name and the set's.
fn scores(
    model: &ModelArgs,
    name: &str,
    sets: &[(&str, &Path)],
    (identity, skip_bad): (bool, bool),
) -> Result<Vec<SetReport>> {
    let mut reports = eval_reports(&EvalArgs {
        model: model.clone(),
        data: sets.iter().map(|(_, dir)| dir.to_path_buf()).collect(),
        split: None,
        out: None,
        skip_bad,
        no_identity: !identity,
        native_resolution: false,
    })?;
    for (report, (label, _)) in reports.iter_mut().zip(sets) {
        report.label = format!("{name}: {label}");
    }
    Ok(reports)
}

/// Draws `count` reconstructions of `data` by `model`.
fn draw(
    model: &ModelArgs,
    data: &Path,
    out: &Path,
    (count, skip_bad): (usize, bool),
) -> Result<()> {
    run_reconstruct(ReconstructArgs {
        model: model.clone(),
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        count,
        seed: 13,
        save_dir: None,
        skip_bad,
        native_resolution: false,
    })
    .map(drop)
}

pub(crate) fn run_demo(mut args: DemoArgs) -> Result<ExitCode> {
    settle_device(&mut args.compute)?;
    let real = real_prints(&args)?;
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
        "--crop",
        &args.crop.to_string(),
        "--epochs",
        &args.epochs.to_string(),
        "--batch-size",
        "8",
        "--save-every",
        &args.epochs.to_string(),
        "--device",
        &args.compute.device,
        "--precision",
        args.compute.precision.name(),
        "--winograd-tile",
        args.compute.winograd_tile.name(),
        "--optimizer",
        &args.optimizer.to_string(),
    ]);
    let code = run_train(train_args)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let trained = ModelArgs {
        model: Some(run.clone()),
        compute: args.compute.clone(),
    };
    let bundled = ModelArgs {
        model: None,
        compute: args.compute.clone(),
    };
    println!(
        "\ndemo: scoring the model trained here ({} epochs on {}x{} windows of the prints at \
         their own resolution, so it reconstructs whole prints at their own resolution) beside \
         the bundled model {} (150 epochs on 2,150 synthetic optical prints resized to \
         224x224); neither saw the test set's fingers or sensor, nor any real print",
        args.epochs,
        args.crop,
        args.crop,
        whorl::bundled::NAME
    );
    let mut sets = vec![("unseen sensor", test_dir.as_path())];
    match &real {
        Some(dir) => sets.push(("real prints", dir.as_path())),
        None => println!(
            "demo: no real prints at {REAL_PRINTS} (from here or from the repository); \
             --real-prints DIR to show some"
        ),
    }
    let mut reports = scores(&trained, "trained here", &sets, (false, args.skip_bad))?;
    let identity = !args.no_identity;
    reports.extend(scores(
        &bundled,
        "bundled",
        &sets,
        (identity, args.skip_bad),
    )?);
    println!();
    print!("{}", evaluate::table(&reports));
    let metrics = args.out.join("metrics.json");
    evaluate::write(&reports, &metrics)?;

    let figure = |name: &str| args.out.join(format!("{name}.png"));
    let sample = (8, args.skip_bad);
    draw(&trained, &test_dir, &figure("reconstructions"), sample)?;
    draw(
        &bundled,
        &test_dir,
        &figure("reconstructions-bundled"),
        sample,
    )?;
    if let Some(dir) = &real {
        draw(&trained, dir, &figure("reconstructions-real"), sample)?;
        draw(
            &bundled,
            dir,
            &figure("reconstructions-real-bundled"),
            sample,
        )?;
    }
    let first = whorl::data::find_images(&test_dir)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::EmptyDataDir {
            path: test_dir.clone(),
        })?;
    let gradcam = args.out.join("gradcam.png");
    run_gradcam(GradcamArgs {
        model: trained,
        image: first,
        layer: "all".into(),
        out: gradcam.clone(),
    })?;
    println!("\ndemo files:");
    let mut files = vec![
        ("loss curve (trained here)", run.join(history::LOSS_PLOT)),
        ("reconstructions, unseen sensor", figure("reconstructions")),
        (
            "the same by the bundled model",
            figure("reconstructions-bundled"),
        ),
    ];
    if real.is_some() {
        files.extend([
            (
                "reconstructions, real prints",
                figure("reconstructions-real"),
            ),
            (
                "the same by the bundled model",
                figure("reconstructions-real-bundled"),
            ),
        ]);
    }
    files.extend([
        ("Grad-CAM, every layer (trained here)", gradcam),
        ("scores (JSON; CSV beside it)", metrics),
        ("checkpoints (trained here)", run.join("checkpoints")),
    ]);
    for (what, path) in files {
        println!("  {what:<36} {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
