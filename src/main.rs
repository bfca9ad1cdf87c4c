//! The `whorl` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use whorl::backend::Backend;
use whorl::backend::cpu::CpuBackend;
use whorl::backend::gpu::GpuBackend;
use whorl::backend::gpu::cuda::{self, CudaDevice, EMBEDDED_PTX};
use whorl::checkpoint::{self, Checkpoint};
use whorl::data::Dataset;
use whorl::model::Architecture;
use whorl::train::{self, TrainConfig};
use whorl::{Error, Result};
use whorl::{bench, evaluate, figures, gradcam};

/// Trains a convolutional autoencoder that reconstructs 224x224 grayscale fingerprint images.
#[derive(Parser)]
#[command(name = "whorl", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the reference autoencoder on a folder of fingerprint images.
    Train(TrainArgs),
    /// Generate synthetic fingerprints (SFinGe-style): a data set, or with --figure a picture.
    Synth(SynthArgs),
    /// Score a trained model: MSE, PSNR and SSIM per image, and their mean, median and worst
    /// per set, as a table (and JSON and CSV with --out).
    Eval(EvalArgs),
    /// Draw originals above their reconstructions and the error, for a random sample.
    Reconstruct(ReconstructArgs),
    /// Draw where a convolution layer builds the reconstruction (Grad-CAM, target: the sum of
    /// the output image; see the README).
    Gradcam(GradcamArgs),
    /// Redraw a run's loss curve (RUN/loss.png) from its history.csv.
    PlotHistory {
        /// The run folder (holding history.csv).
        run: PathBuf,
        /// Logarithmic loss axis.
        #[arg(long)]
        log: bool,
    },
    /// The whole job in a few minutes: synthesise a small data set, train briefly, evaluate on
    /// the validation split and on the other sensor, and draw every figure.
    Demo(DemoArgs),
    /// Time every kernel at the model's shapes, then the training step and inference
    /// (markdown on screen, JSON with --json).
    Bench(BenchArgs),
    /// Compare two benchmark JSON files (whorl's or bench/torch_baseline.py's): ratio table.
    Compare {
        /// The benchmark whose speed-up is reported.
        first: PathBuf,
        /// The one it is compared against.
        second: PathBuf,
    },
    /// Print whorl's version and build, the CUDA driver, NVRTC and every GPU found.
    Info,
    /// Print the model's layers, output shapes and parameter counts (like Keras's summary()).
    Summary {
        /// Input height and width in pixels (a multiple of 4).
        #[arg(long, default_value_t = 224)]
        size: usize,
    },
}

#[derive(Parser)]
struct TrainArgs {
    /// Folder of images, searched recursively: .tif/.tiff (8- or 16-bit), .bmp, .png,
    /// .jpg/.jpeg, .pgm. Colour is converted to luma; every image is resized to --size x --size
    /// with a bilinear (triangle) filter and scaled to [0, 1]. Without it: the synthetic default
    /// (optical-sensor impressions, generated once into the cache: $WHORL_CACHE, else
    /// ~/.cache/whorl), or with --resume the checkpoint's data folder.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,

    /// Fingers in the synthetic default data set (when no --data is given).
    #[arg(long, value_name = "N", default_value_t = 336)]
    synth_fingers: usize,

    /// Impressions per finger in the synthetic default data set (336 x 8 = 2,688 images, the
    /// size of the reference's training set).
    #[arg(long, value_name = "K", default_value_t = 8)]
    synth_impressions: usize,

    /// Epochs to train in this run; with --resume, epochs to add to the checkpoint's.
    #[arg(long, default_value_t = 200)]
    epochs: usize,

    /// Images per training step [default: 128, or the checkpoint's with --resume].
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,

    /// RMSprop learning rate (rho 0.9, epsilon 1e-7 as Keras) [default: 0.001, or the
    /// checkpoint's with --resume].
    #[arg(long, value_name = "RATE")]
    lr: Option<f32>,

    /// Fraction of the images held out for validation, chosen by --seed [default: 0.2; fixed by
    /// the checkpoint with --resume].
    #[arg(long, value_name = "FRACTION")]
    val_split: Option<f64>,

    /// Seed of the weight initialisation, the split and the per-epoch shuffles [default: 13;
    /// fixed by the checkpoint with --resume].
    #[arg(long)]
    seed: Option<u64>,

    /// Images are resized to SIZE x SIZE; a multiple of 4 [default: 224; fixed by the
    /// checkpoint with --resume].
    #[arg(long)]
    size: Option<usize>,

    /// Run folder for history.csv and checkpoints/ [default: runs/train, or runs/train-N if
    /// taken; with --resume, the checkpoint's run folder].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Continue from a checkpoint folder, or from the newest checkpoint of a run folder: the
    /// weights, RMSprop state and epoch counter carry on exactly.
    #[arg(long, value_name = "CHECKPOINT")]
    resume: Option<PathBuf>,

    /// Save a checkpoint every N epochs; one is always saved after the last epoch and on Ctrl-C.
    #[arg(long, value_name = "N", default_value_t = 10)]
    save_every: usize,

    /// Skip images that fail to decode (with a warning each and a count), instead of stopping.
    #[arg(long)]
    skip_bad: bool,

    /// Where to compute: cpu, cuda (GPU 0), cuda:N, or auto (the first GPU when a driver and a
    /// GPU are present, else the CPU; it says which). CPU threads follow RAYON_NUM_THREADS
    /// (default: all cores).
    #[arg(long, default_value = "auto")]
    device: String,

    /// Print only errors and the final line: no summary, progress bars or per-epoch lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// A checkpoint folder, or a run folder (its newest checkpoint).
    #[arg(long, value_name = "CHECKPOINT")]
    model: PathBuf,

    /// Where to compute: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// A folder of images to score; repeat for several (e.g. another sensor's test set).
    #[arg(long, value_name = "DIR")]
    data: Vec<PathBuf>,

    /// Also score the validation split recorded in the checkpoint ("val"); the default when
    /// no --data is given.
    #[arg(long, value_name = "SPLIT", value_parser = ["val"])]
    split: Option<String>,

    /// Write the sets' scores as JSON here and every image's as CSV beside it (FILE.csv).
    #[arg(long, value_name = "FILE.json")]
    out: Option<PathBuf>,

    /// Skip images that fail to decode instead of stopping.
    #[arg(long)]
    skip_bad: bool,
}

#[derive(Args)]
struct ReconstructArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// Folder of images to sample from.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,

    /// The figure to write (PNG).
    #[arg(long, value_name = "FILE.png")]
    out: PathBuf,

    /// Images in the figure.
    #[arg(long, default_value_t = 10)]
    count: usize,

    /// Seed of the random sample.
    #[arg(long, default_value_t = 13)]
    seed: u64,

    /// Also write every image's reconstruction here, as PNG named after its source.
    #[arg(long, value_name = "DIR")]
    save_dir: Option<PathBuf>,
}

#[derive(Args)]
struct GradcamArgs {
    #[command(flatten)]
    model: ModelArgs,

    /// The image to explain (resized to the model's input size).
    #[arg(long, value_name = "FILE")]
    image: PathBuf,

    /// The convolution to explain, conv1 to conv6, or all (one row each).
    #[arg(long, default_value = "conv4")]
    layer: String,

    /// The figure to write (PNG): input, heat map with colour bar, overlay.
    #[arg(long, value_name = "FILE.png")]
    out: PathBuf,
}

#[derive(Args)]
struct DemoArgs {
    /// Folder for the data, the run and the figures.
    #[arg(long, value_name = "DIR", default_value = "runs/demo")]
    out: PathBuf,

    /// Input size of the model.
    #[arg(long, default_value_t = 128)]
    size: usize,

    /// Training epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,

    /// Fingers of the optical-sensor set (training and validation); an eighth as many, at
    /// least 4, on the capacitive sensor for testing.
    #[arg(long, default_value_t = 96)]
    fingers: usize,

    /// Impressions per finger.
    #[arg(long, default_value_t = 8)]
    impressions: usize,

    /// Where to compute: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args)]
struct BenchArgs {
    /// Where to compute: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,

    /// Images per step.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,

    /// Input size (a multiple of 4).
    #[arg(long, default_value_t = 224)]
    size: usize,

    /// Timed calls per kernel (the median is reported), after one warm-up.
    #[arg(long, default_value_t = 5)]
    repeats: usize,

    /// Also write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Args)]
#[command(after_help = synth_help())]
struct SynthArgs {
    /// Folder to write the images and manifest.json into (created if needed).
    #[arg(long, value_name = "DIR", required_unless_present = "figure")]
    out: Option<PathBuf>,

    /// Number of distinct fingers; each gets a class drawn with natural frequencies (arch 3.7%,
    /// tented arch 2.9%, left loop 33.8%, right loop 31.7%, whorl 27.9%).
    #[arg(long, value_name = "N", default_value_t = 10)]
    fingers: usize,

    /// Impressions per finger: each a new placement, rotation, distortion, pressure, skin
    /// condition and noise.
    #[arg(long, value_name = "K", default_value_t = 8)]
    impressions: usize,

    /// Number of the first finger; give two sets different ranges to keep their fingers apart.
    #[arg(long, value_name = "N", default_value_t = 0)]
    first_finger: usize,

    /// Sensor profile (see below).
    #[arg(long, value_name = "NAME", default_value = "optical")]
    sensor: String,

    /// Seed: the same seed gives the same bytes, on any number of threads.
    #[arg(long, default_value_t = 13)]
    seed: u64,

    /// Image size WxH in pixels instead of the sensor's own.
    #[arg(long, value_name = "WxH")]
    size: Option<String>,

    /// Instead of a data set, draw FILE.png: one row per class with its master fingerprint and
    /// --impressions impressions on each sensor.
    #[arg(long, value_name = "FILE")]
    figure: Option<PathBuf>,
}

fn synth_help() -> String {
    let mut text = String::from("Sensor profiles:\n");
    for sensor in whorl::synth::SENSORS.iter() {
        text += &format!("  {:<11} {}\n", sensor.name, sensor.summary);
    }
    text
}

fn parse_size(text: &str) -> Result<(usize, usize)> {
    let bad = || Error::invalid("--size", format!("\"{text}\" is not WxH, e.g. 388x374"));
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let (w, h) = (
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    );
    if !(32..=4096).contains(&w) || !(32..=4096).contains(&h) {
        return Err(Error::invalid(
            "--size",
            "width and height must be 32 to 4096 pixels",
        ));
    }
    Ok((w, h))
}

fn run_synth(args: SynthArgs) -> Result<ExitCode> {
    let mut sensor = whorl::synth::sensor::sensor(&args.sensor)
        .ok_or_else(|| {
            let names: Vec<_> = whorl::synth::SENSORS.iter().map(|s| s.name).collect();
            Error::invalid(
                "--sensor",
                format!(
                    "unknown sensor \"{}\" (known: {})",
                    args.sensor,
                    names.join(", ")
                ),
            )
        })?
        .clone();
    if let Some(size) = &args.size {
        (sensor.width, sensor.height) = parse_size(size)?;
    }
    if let Some(path) = &args.figure {
        let figure = whorl::synth::figure(args.seed, args.impressions.min(4), 160);
        let mut bytes = std::io::Cursor::new(Vec::new());
        figure
            .write_to(&mut bytes, image::ImageFormat::Png)
            .map_err(|e| Error::invalid("--figure", e.to_string()))?;
        whorl::atomic::write_file(path, bytes.get_ref())?;
        println!("figure written to {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let out = args.out.expect("clap requires --out without --figure");
    let config = whorl::synth::SynthConfig {
        fingers: args.fingers,
        impressions: args.impressions,
        first_finger: args.first_finger,
        sensor,
        seed: args.seed,
    };
    let started = std::time::Instant::now();
    let manifest = whorl::synth::generate(&out, &config, true)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} {} images ({}x{}) of {} fingers written to {} in {seconds:.1} s ({:.0} images/s); manifest {}",
        manifest.images.len(),
        manifest.sensor,
        manifest.width,
        manifest.height,
        manifest.fingers,
        out.display(),
        manifest.images.len() as f64 / seconds,
        out.join(whorl::synth::MANIFEST_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Fills unset flags from the checkpoint (or the defaults); a flag that contradicts what the
/// checkpoint fixes is an error naming that flag.
fn resolve(args: &TrainArgs, resume: Option<&Checkpoint>) -> Result<TrainConfig> {
    fn fixed<T: PartialEq + std::fmt::Display + Copy>(
        flag: &'static str,
        given: Option<T>,
        saved: T,
    ) -> Result<T> {
        match given {
            Some(value) if value != saved => Err(Error::invalid(
                flag,
                format!("{value} differs from the checkpoint's {saved}; a resumed run keeps it"),
            )),
            _ => Ok(saved),
        }
    }
    let (size, seed, val_split, batch_size, learning_rate, data_dir) = match resume {
        Some(c) => (
            fixed("--size", args.size, c.meta.input_size)?,
            fixed("--seed", args.seed, c.meta.seed)?,
            fixed("--val-split", args.val_split, c.meta.val_split)?,
            args.batch_size.unwrap_or(c.meta.batch_size),
            args.lr.unwrap_or(c.meta.learning_rate),
            args.data.clone().unwrap_or_else(|| c.meta.data_dir.clone()),
        ),
        None => (
            args.size.unwrap_or(224),
            args.seed.unwrap_or(13),
            args.val_split.unwrap_or(0.2),
            args.batch_size.unwrap_or(128),
            args.lr.unwrap_or(1e-3),
            args.data
                .clone()
                .ok_or_else(|| Error::invalid("--data", "a folder of images is required"))?,
        ),
    };
    if batch_size == 0 {
        return Err(Error::invalid("--batch-size", "must be at least 1"));
    }
    let out_dir = match (&args.out, &args.resume) {
        (Some(out), _) => out.clone(),
        (None, Some(resumed)) => {
            train::run_dir_of(resumed).unwrap_or_else(|| PathBuf::from("runs/resumed"))
        }
        (None, None) => train::fresh_run_dir(&PathBuf::from("runs")),
    };
    Ok(TrainConfig {
        data_dir,
        epochs: args.epochs,
        batch_size,
        learning_rate,
        val_split,
        seed,
        size,
        out_dir,
        save_every: args.save_every,
        skip_bad: args.skip_bad,
        verbose: !args.quiet,
    })
}

/// Where `--device` asks to compute.
enum DeviceChoice {
    Cpu,
    Auto,
    Cuda(usize),
}

fn parse_device(device: &str) -> Result<DeviceChoice> {
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

/// Runs `job` on the backend `--device` names: the CPU, or a GPU through the CUDA kernels.
fn on_device<T>(device: &str, quiet: bool, job: impl FnOnce(Backends) -> Result<T>) -> Result<T> {
    let gpu = |ordinal| CudaDevice::new(ordinal).map(|d| Backends::Gpu(GpuBackend::new(d)));
    let backend = match parse_device(device)? {
        DeviceChoice::Cpu => Backends::Cpu(CpuBackend::new()),
        DeviceChoice::Cuda(ordinal) => gpu(ordinal)
            .map_err(|e| Error::invalid("--device", format!("{device}: {e} (use --device cpu)")))?,
        DeviceChoice::Auto => gpu(0).unwrap_or_else(|reason| {
            if !quiet {
                println!("device: no GPU ({reason}); computing on the CPU");
            }
            Backends::Cpu(CpuBackend::new())
        }),
    };
    job(backend)
}

/// The backends a command can run on.
enum Backends {
    Cpu(CpuBackend),
    Gpu(GpuBackend<CudaDevice>),
}

/// Runs `$job(backend, ...)` on the backend `--device` names, whichever type it has.
macro_rules! with_backend {
    ($device:expr, $quiet:expr, $job:ident($($arg:expr),*)) => {
        on_device($device, $quiet, |backend| match backend {
            Backends::Cpu(cpu) => $job(cpu, $($arg),*),
            Backends::Gpu(gpu) => $job(gpu, $($arg),*),
        })
    };
}

fn run_eval(args: EvalArgs) -> Result<ExitCode> {
    let reports = with_backend!(&args.model.device, false, eval_on(&args))?;
    print!("{}", evaluate::table(&reports));
    if let Some(path) = &args.out {
        let csv = evaluate::write(&reports, path)?;
        println!("scores written to {} and {}", path.display(), csv.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_on<B: Backend>(backend: B, args: &EvalArgs) -> Result<Vec<evaluate::SetReport>> {
    let (mut net, meta) = evaluate::load_model(backend, &args.model.model)?;
    let mut reports = Vec::new();
    if args.split.is_some() || args.data.is_empty() {
        let (dataset, validation) = evaluate::validation_split(&meta, args.skip_bad)?;
        let label = format!("validation split of {}", short_name(&meta.data_dir));
        reports.push(evaluate::score(&mut net, &dataset, &validation, &label)?);
    }
    for dir in &args.data {
        let dataset = Dataset::load(dir, meta.input_size, args.skip_bad, false)?;
        let all: Vec<usize> = (0..dataset.len()).collect();
        reports.push(evaluate::score(&mut net, &dataset, &all, &short_name(dir))?);
    }
    Ok(reports)
}

/// The last two components of a path, for labels.
fn short_name(path: &std::path::Path) -> String {
    let parts: Vec<String> = path
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

fn run_reconstruct(args: ReconstructArgs) -> Result<ExitCode> {
    with_backend!(&args.model.device, false, reconstruct_on(&args))?;
    println!("figure written to {}", args.out.display());
    if let Some(dir) = &args.save_dir {
        println!("reconstructions written to {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn reconstruct_on<B: Backend>(backend: B, args: &ReconstructArgs) -> Result<()> {
    let (mut net, meta) = evaluate::load_model(backend, &args.model.model)?;
    let dataset = Dataset::load(&args.data, meta.input_size, false, false)?;
    if args.count == 0 {
        return Err(Error::invalid("--count", "must be at least 1"));
    }
    let mut order: Vec<usize> = (0..dataset.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(args.seed));
    order.truncate(args.count);
    let reconstructions = evaluate::reconstruct(&mut net, &dataset, &order)?;
    let title = format!("Reconstructions of {}", short_name(&args.data));
    let figure = evaluate::reconstruction_figure(&title, &dataset, &order, &reconstructions)?;
    figures::save_png(&figure, &args.out)?;
    if let Some(dir) = &args.save_dir {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let all: Vec<usize> = (0..dataset.len()).collect();
        let n = dataset.size * dataset.size;
        let side = dataset.size as u32;
        for (&i, recon) in all
            .iter()
            .zip(evaluate::reconstruct(&mut net, &dataset, &all)?.chunks(n))
        {
            let stem = dataset.files[i]
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            figures::save_png(
                &figures::gray(recon, side, side),
                &dir.join(format!("{stem}.png")),
            )?;
        }
    }
    Ok(())
}

fn run_gradcam(args: GradcamArgs) -> Result<ExitCode> {
    with_backend!(&args.model.device, false, gradcam_on(&args))?;
    println!("Grad-CAM figure written to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn gradcam_on<B: Backend>(backend: B, args: &GradcamArgs) -> Result<()> {
    let (mut net, meta) = evaluate::load_model(backend, &args.model.model)?;
    let image = whorl::data::load_image(&args.image, meta.input_size)?;
    let layers: Vec<usize> = if args.layer == "all" {
        net.architecture()
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l, whorl::model::Layer::Conv2d { .. }))
            .map(|(i, _)| i)
            .collect()
    } else {
        vec![gradcam::conv_layer(&net, &args.layer)?]
    };
    let maps = layers
        .into_iter()
        .map(|layer| gradcam::grad_cam(&mut net, &image, layer))
        .collect::<Result<Vec<_>>>()?;
    let title = format!(
        "Grad-CAM of the reconstruction (target: sum of the output): {}",
        short_name(&args.image)
    );
    figures::save_png(&gradcam::figure(&title, &image, &maps)?, &args.out)
}

fn run_demo(mut args: DemoArgs) -> Result<ExitCode> {
    // Decide "auto" once, so the steps below agree and say it once.
    if let DeviceChoice::Auto = parse_device(&args.device)? {
        args.device = match cuda::probe() {
            Ok((_, gpus)) if !gpus.is_empty() => "cuda:0".into(),
            Ok(_) => "cpu".into(),
            Err(reason) => {
                println!("device: no GPU ({reason}); computing on the CPU");
                "cpu".into()
            }
        };
    }
    let (data, run) = (args.out.join("data"), args.out.join("run"));
    let (train_dir, test_dir) = (data.join("train"), data.join("test"));
    let set = |sensor: &str, first_finger: usize, fingers: usize| whorl::synth::SynthConfig {
        fingers,
        impressions: args.impressions,
        first_finger,
        sensor: whorl::synth::sensor::sensor(sensor)
            .expect("a built-in sensor")
            .clone(),
        seed: whorl::synth::DEFAULT_DATA_SEED,
    };
    println!("demo: synthesising fingerprints into {}", data.display());
    whorl::synth::generate(&train_dir, &set("optical", 0, args.fingers), true)?;
    whorl::synth::generate(
        &test_dir,
        &set("capacitive", args.fingers, (args.fingers / 8).max(4)),
        true,
    )?;
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
        "--save-every",
        &args.epochs.to_string(),
        "--device",
        &args.device,
    ]);
    let code = run_train(train_args)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let model = ModelArgs {
        model: run.clone(),
        device: args.device.clone(),
    };
    let metrics = args.out.join("metrics.json");
    run_eval(EvalArgs {
        model: ModelArgs { ..model.clone() },
        data: vec![test_dir.clone()],
        split: Some("val".into()),
        out: Some(metrics.clone()),
        skip_bad: false,
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
        ("loss curve", run.join(train::LOSS_PLOT)),
        ("reconstructions (unseen sensor)", reconstructions),
        ("Grad-CAM, every layer", gradcam),
        ("scores (JSON; CSV beside it)", metrics),
        ("checkpoints", run.join("checkpoints")),
    ] {
        println!("  {what:<32} {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn run_bench(args: BenchArgs) -> Result<ExitCode> {
    if args.batch_size == 0 {
        return Err(Error::invalid("--batch-size", "must be at least 1"));
    }
    Architecture::reference().shapes(args.size, args.size)?;
    let report = on_device(&args.device, false, |backend| match backend {
        Backends::Cpu(cpu) => {
            let name = cpu.name();
            bench::run(cpu, &name, args.batch_size, args.size, args.repeats, None)
        }
        Backends::Gpu(mut gpu) => {
            let name = gpu.name();
            let peaks = cuda::peaks(gpu.device().info());
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

fn run_compare(first: &std::path::Path, second: &std::path::Path) -> Result<ExitCode> {
    let read = |path: &std::path::Path| -> Result<bench::BenchReport> {
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

fn run_info() -> Result<ExitCode> {
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
            }
        }
        Err(reason) => println!("CUDA driver: none ({reason})"),
    }
    println!("CPU: {} threads", rayon::current_num_threads());
    Ok(ExitCode::SUCCESS)
}

fn run_train(mut args: TrainArgs) -> Result<ExitCode> {
    parse_device(&args.device)?;
    if args.data.is_none() && args.resume.is_none() {
        let cache = whorl::synth::cache_root();
        let (fingers, impressions) = (args.synth_fingers, args.synth_impressions);
        let data = whorl::synth::default_data(&cache, fingers, impressions, !args.quiet)?;
        if !args.quiet {
            println!(
                "data: no --data given, using the synthetic default in {} (test set from the \
                 other sensor in {})",
                data.train.display(),
                data.test.display()
            );
        }
        args.data = Some(data.train);
    }
    let architecture = Architecture::reference();
    let resume = match &args.resume {
        Some(path) => {
            let dir = train::resolve_checkpoint(path)?;
            args.resume = Some(dir.clone());
            let loaded = checkpoint::load(&dir, &architecture)?;
            Some((dir, loaded))
        }
        None => None,
    };
    let config = resolve(&args, resume.as_ref().map(|(_, c)| c))?;
    if let (Some((dir, c)), true) = (&resume, config.verbose) {
        let step = match c.meta.step_in_epoch {
            0 => String::new(),
            s => format!(", step {s} of the next"),
        };
        println!(
            "resuming from {} (epoch {}{step})",
            dir.display(),
            c.meta.epoch
        );
    }

    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupt);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted twice: quitting without saving");
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupted: saving a checkpoint after this step (Ctrl-C again quits at once)"
        );
    })
    .map_err(|e| Error::invalid("Ctrl-C handler", e.to_string()))?;

    let report = on_device(&args.device, args.quiet, |backend| match backend {
        Backends::Cpu(cpu) => train::train(cpu, &config, resume, &interrupt),
        Backends::Gpu(gpu) => train::train(gpu, &config, resume, &interrupt),
    })?;
    if report.interrupted {
        println!(
            "interrupted after {} epochs; checkpoint saved to {} (resume with --resume {})",
            report.epochs_completed,
            report.last_checkpoint.display(),
            report.last_checkpoint.display()
        );
        return Ok(ExitCode::from(130));
    }
    println!(
        "trained {} epochs: train_loss {}  val_loss {}; checkpoint {}; history {}",
        report.epochs_completed,
        report.train_loss.map_or("-".into(), |v| format!("{v:.6}")),
        report.val_loss.map_or("-".into(), |v| format!("{v:.6}")),
        report.last_checkpoint.display(),
        config.out_dir.join(train::HISTORY_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`whorl info | head`), instead of failing to print.
    // SAFETY: restores the default action of one signal before any thread starts.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let result = match Cli::parse().command {
        Command::Train(args) => run_train(args),
        Command::Synth(args) => run_synth(args),
        Command::Info => run_info(),
        Command::Bench(args) => run_bench(args),
        Command::Compare { first, second } => run_compare(&first, &second),
        Command::Eval(args) => run_eval(args),
        Command::Reconstruct(args) => run_reconstruct(args),
        Command::Gradcam(args) => run_gradcam(args),
        Command::PlotHistory { run, log } => train::plot_history(&run, log).map(|path| {
            println!("loss curve written to {}", path.display());
            ExitCode::SUCCESS
        }),
        Command::Demo(args) => run_demo(args),
        Command::Summary { size } => Architecture::reference().summary(size, size).map(|s| {
            print!("{s}");
            ExitCode::SUCCESS
        }),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::FAILURE
    })
}
