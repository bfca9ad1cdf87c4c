//! The `whorl` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};
use whorl::backend::cpu::CpuBackend;
use whorl::backend::gpu::GpuBackend;
use whorl::backend::gpu::cuda::{self, CudaDevice, EMBEDDED_PTX};
use whorl::checkpoint::{self, Checkpoint};
use whorl::model::Architecture;
use whorl::train::{self, TrainConfig};
use whorl::{Error, Result};

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
    /// Print whorl's version and build, the CUDA driver, NVRTC and every GPU found.
    Info,
    /// Print the model's layers, output shapes and parameter counts (like Keras's summary()).
    Summary {
        /// Input height and width in pixels (a multiple of 4).
        #[arg(long, default_value_t = 224)]
        size: usize,
    },
}

#[derive(Args)]
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
