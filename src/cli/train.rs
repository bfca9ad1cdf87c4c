//! `whorl train`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use clap::ValueEnum;
use whorl::augment::{self, Augmentation};
use whorl::backend::OptimizerKind;
use whorl::checkpoint::{self, Checkpoint};
use whorl::model::Architecture;
use whorl::normalize::Normalization;
use whorl::schedule::{Schedule, ScheduleKind};
use whorl::train::{self, TrainConfig};
use whorl::{Error, Result};

use super::device::{Backends, Compute, on_device, parse_device};
use super::stop_signal;

#[derive(Parser)]
pub(crate) struct TrainArgs {
    /// Folder of images, searched recursively: .tif/.tiff (8- or 16-bit), .bmp, .png,
    /// .jpg/.jpeg, .pgm. Colour is converted to luma; every image is resized to --size x --size
    /// with a bilinear (triangle) filter and scaled to [0, 1]. Without it: the synthetic default
    /// (optical-sensor impressions, generated once into the cache: $WHORL_CACHE, else
    /// ~/.cache/whorl), or with --resume the checkpoint's data folder.
    #[arg(long, value_name = "DIR")]
    pub(crate) data: Option<PathBuf>,

    /// Fingers in the synthetic default data set (when no --data is given).
    #[arg(long, value_name = "N", default_value_t = 336)]
    pub(crate) synth_fingers: usize,

    /// Impressions per finger in the synthetic default data set (336 x 8 = 2,688 images, the
    /// size of the reference's training set).
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub(crate) synth_impressions: usize,

    /// Epochs to train in this run; with --resume, epochs to add to the checkpoint's.
    #[arg(long, default_value_t = 200)]
    pub(crate) epochs: usize,

    /// Images per training step [default: 128, or the checkpoint's with --resume].
    #[arg(long, value_name = "N")]
    pub(crate) batch_size: Option<usize>,

    /// Learning rate of the optimizer [default: 0.001, or the checkpoint's with --resume].
    #[arg(long, value_name = "RATE")]
    pub(crate) lr: Option<f32>,

    /// rmsprop (rho 0.9, epsilon 1e-7, as Keras 3) or adam (beta_1 0.9, beta_2 0.999,
    /// epsilon 1e-7, as Keras 3) [default: rmsprop, or the checkpoint's with --resume, which
    /// cannot change it].
    #[arg(long, value_enum)]
    pub(crate) optimizer: Option<OptimizerKind>,

    /// Learning-rate schedule: constant (the reference's) or cosine (half a cosine from --lr down
    /// to 0 at this run's last epoch; with --resume, the resumed run's last epoch, so a run
    /// resumed to its planned end continues its curve exactly) [default: constant, or the
    /// checkpoint's with --resume].
    #[arg(long, value_enum, value_name = "SCHEDULE")]
    pub(crate) lr_schedule: Option<ScheduleKind>,

    /// Epochs (fractions allowed) over which the learning rate rises linearly from 0 to the
    /// schedule's, counted from the first epoch of training [default: 0, or the checkpoint's
    /// with --resume].
    #[arg(long, value_name = "EPOCHS")]
    pub(crate) warmup_epochs: Option<f64>,

    /// Changes made at random to each training image each epoch, comma-separated: flip (the 8
    /// flips and quarter turns), rotate (up to 25 degrees), zoom (a crop of 62-100% of the side
    /// enlarged: a partial print at higher resolution), contrast (0.6-1.2x, gamma 0.67-1.5),
    /// invert (half the images: light ridges on dark), noise (Gaussian, up to 0.06); or none.
    /// The model reconstructs the changed image; validation images are never changed
    /// [default: none, or the checkpoint's with --resume].
    #[arg(long, value_name = "KINDS", value_parser = parse_augmentations)]
    pub(crate) augment: Option<Augmentations>,

    /// Input normalisation: none (pixels in [0, 1] as loaded, the reference's) or stretch (each
    /// image's 1st and 99th percentiles stretched to 0 and 1; the model reconstructs the
    /// stretched image and eval, reconstruct and gradcam undo the stretch on its output)
    /// [default: none; fixed by the checkpoint with --resume].
    #[arg(long, value_enum, value_name = "HOW")]
    pub(crate) normalize: Option<Normalization>,

    /// Fraction of the images held out for validation, chosen by --seed [default: 0.2; fixed by
    /// the checkpoint with --resume].
    #[arg(long, value_name = "FRACTION")]
    pub(crate) val_split: Option<f64>,

    /// Seed of the weight initialisation, the split and the per-epoch shuffles [default: 13;
    /// fixed by the checkpoint with --resume].
    #[arg(long)]
    pub(crate) seed: Option<u64>,

    /// Images are resized to SIZE x SIZE; a multiple of 4 [default: 224; fixed by the
    /// checkpoint with --resume].
    #[arg(long)]
    pub(crate) size: Option<usize>,

    /// Train on random N x N windows of each image at its own resolution (partial prints at
    /// their sensor's scale, ridges as wide as the sensor made them) instead of whole images
    /// resized to --size; validation uses each image's centred window; a multiple of 4. A model
    /// trained so is meant for prints at their own resolution, so eval and reconstruct use
    /// --native-resolution for it [fixed by the checkpoint with --resume].
    #[arg(long, value_name = "N", conflicts_with = "size")]
    pub(crate) crop: Option<usize>,

    /// Run folder for history.csv and checkpoints/ [default: runs/train, or runs/train-N if
    /// taken; with --resume, the checkpoint's run folder].
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,

    /// Continue from a checkpoint folder, or from the newest checkpoint of a run folder: the
    /// weights, optimizer state and epoch counter carry on exactly.
    #[arg(long, value_name = "CHECKPOINT")]
    pub(crate) resume: Option<PathBuf>,

    /// Let a new run replace the checkpoints already in its --out folder (with --resume: those
    /// after the resumed one), instead of refusing to mix runs.
    #[arg(long)]
    pub(crate) overwrite: bool,

    /// Save a checkpoint every N epochs; one is always saved after the last epoch and on Ctrl-C.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub(crate) save_every: usize,

    /// Skip images that fail to decode (with a warning each and a count), instead of stopping.
    #[arg(long)]
    pub(crate) skip_bad: bool,

    #[command(flatten)]
    pub(crate) compute: Compute,

    /// Print only errors and the final line: no summary, progress bars or per-epoch lines.
    #[arg(long)]
    pub(crate) quiet: bool,
}

/// `--augment`'s list.
#[derive(Clone, Debug)]
pub(crate) struct Augmentations(Vec<Augmentation>);

fn parse_augmentations(text: &str) -> std::result::Result<Augmentations, String> {
    if text == "none" {
        return Ok(Augmentations(Vec::new()));
    }
    let kinds = text
        .split(',')
        .map(|name| {
            Augmentation::from_str(name.trim(), false).map_err(|_| {
                format!(
                    "\"{name}\" is not an augmentation (expected a comma-separated list of {}, \
                     or none)",
                    augment::describe(Augmentation::value_variants())
                )
            })
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Augmentations(augment::canonical(&kinds)))
}

/// Fills unset flags from the checkpoint (or the defaults); a flag that contradicts what the
/// checkpoint fixes is an error naming that flag.
fn resolve(args: &TrainArgs, resume: Option<(&Path, &Checkpoint)>) -> Result<TrainConfig> {
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
    let saved = resume.map(|(_, c)| &c.meta);
    let schedule = Schedule {
        kind: args
            .lr_schedule
            .unwrap_or(saved.map_or(ScheduleKind::Constant, |m| m.schedule.kind)),
        warmup_epochs: args
            .warmup_epochs
            .unwrap_or(saved.map_or(0.0, |m| m.schedule.warmup_epochs)),
    };
    if !(schedule.warmup_epochs >= 0.0 && schedule.warmup_epochs.is_finite()) {
        return Err(Error::invalid(
            "--warmup-epochs",
            "must be a number of epochs, 0 or more",
        ));
    }
    let augment = match (&args.augment, saved) {
        (Some(Augmentations(kinds)), _) => kinds.clone(),
        (None, Some(meta)) => meta.augment.clone(),
        (None, None) => Vec::new(),
    };
    let crop = match saved {
        Some(meta) => {
            let n = meta.input_size;
            match (meta.crop, args.crop, args.size) {
                (true, _, Some(_)) => Err(Error::invalid(
                    "--size",
                    format!(
                        "the checkpoint trains on {n}x{n} crops (--crop); a resumed run keeps them"
                    ),
                )),
                (false, Some(_), _) => Err(Error::invalid(
                    "--crop",
                    format!(
                        "the checkpoint trains on whole images resized to {n}x{n}; a resumed run keeps them"
                    ),
                )),
                _ => Ok(meta.crop),
            }?
        }
        None => args.crop.is_some(),
    };
    let size_flag = if crop { "--crop" } else { "--size" };
    let (size, seed, val_split, batch_size, learning_rate, data_dir, normalize) = match resume {
        Some((_, c)) => (
            fixed(size_flag, args.crop.or(args.size), c.meta.input_size)?,
            fixed("--seed", args.seed, c.meta.seed)?,
            fixed("--val-split", args.val_split, c.meta.val_split)?,
            args.batch_size.unwrap_or(c.meta.batch_size),
            args.lr.unwrap_or(c.meta.learning_rate),
            args.data.clone().unwrap_or_else(|| c.meta.data_dir.clone()),
            fixed("--normalize", args.normalize, c.meta.normalize)?,
        ),
        None => (
            args.crop.or(args.size).unwrap_or(224),
            args.seed.unwrap_or(13),
            args.val_split.unwrap_or(0.2),
            args.batch_size.unwrap_or(128),
            args.lr.unwrap_or(1e-3),
            args.data
                .clone()
                .ok_or_else(|| Error::invalid("--data", "a folder of images is required"))?,
            args.normalize.unwrap_or_default(),
        ),
    };
    if batch_size == 0 {
        return Err(Error::invalid("--batch-size", "must be at least 1"));
    }
    check_training_fits(args, resume, (size, size_flag), batch_size)?;
    let out_dir = match (&args.out, &args.resume) {
        (Some(out), _) => out.clone(),
        (None, Some(resumed)) => {
            checkpoint::run_dir_of(resumed).unwrap_or_else(|| PathBuf::from("runs/resumed"))
        }
        (None, None) => checkpoint::fresh_run_dir(&PathBuf::from("runs")),
    };
    let saved_optimizer = resume.map(|(_, c)| c.meta.optimizer.kind());
    Ok(TrainConfig {
        data_dir,
        epochs: args.epochs,
        batch_size,
        learning_rate,
        optimizer: args
            .optimizer
            .or(saved_optimizer)
            .unwrap_or(OptimizerKind::Rmsprop),
        schedule,
        augment,
        normalize,
        val_split,
        seed,
        size,
        crop,
        out_dir,
        save_every: args.save_every,
        skip_bad: args.skip_bad,
        overwrite: args.overwrite,
        verbose: !args.quiet,
    })
}

/// Checks that a training batch fits in memory, naming the flag or checkpoint field that set the
/// batch size. `size_flag` is the flag that sets the size: --crop or --size.
fn check_training_fits(
    args: &TrainArgs,
    resume: Option<(&Path, &Checkpoint)>,
    (size, size_flag): (usize, &'static str),
    batch_size: usize,
) -> Result<()> {
    let architecture = Architecture::reference();
    architecture
        .shapes(size, size)
        .map_err(|error| match error {
            Error::InvalidArgument { reason, .. } => Error::invalid(size_flag, reason),
            other => other,
        })?;
    let need = whorl::memory::network_bytes(&architecture, size, batch_size);
    let what = format!("{batch_size} images of {size}x{size}");
    let Err(why) = whorl::memory::check_fits(&what, need) else {
        return Ok(());
    };
    match resume {
        Some((dir, _)) if args.batch_size.is_none() => Err(Error::BadCheckpoint {
            path: dir.join(checkpoint::META_FILE),
            reason: format!("field batch_size = {batch_size}: {why} (pass a smaller --batch-size)"),
        }),
        _ if args.crop.or(args.size).is_some() && args.batch_size.is_none() => {
            Err(Error::invalid(size_flag, why))
        }
        _ => Err(Error::invalid("--batch-size", why)),
    }
}

/// Checks the counts of the synthetic default data set.
fn check_synth_counts(args: &TrainArgs) -> Result<()> {
    if args.synth_fingers == 0 {
        return Err(Error::invalid("--synth-fingers", "must be at least 1"));
    }
    if args.synth_impressions == 0 {
        return Err(Error::invalid("--synth-impressions", "must be at least 1"));
    }
    super::synth::check_image_count(args.synth_fingers, args.synth_impressions)
        .map_err(|why| Error::invalid("--synth-fingers", why))
}

pub(crate) fn run_train(mut args: TrainArgs) -> Result<ExitCode> {
    parse_device(&args.compute.device)?;
    if args.data.is_none() && args.resume.is_none() {
        check_synth_counts(&args)?;
        let cache = whorl::synth::cache_root();
        whorl::atomic::remove_stale_staging(&cache)?;
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
            let dir = checkpoint::resolve_checkpoint(path)?;
            args.resume = Some(dir.clone());
            let loaded = checkpoint::load(&dir, &architecture)?;
            Some((dir, loaded))
        }
        None => None,
    };
    let config = resolve(&args, resume.as_ref().map(|(dir, c)| (dir.as_path(), c)))?;
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

    stop_signal::install()?;
    let report = on_device(&args.compute, args.quiet, |backend| match backend {
        Backends::Cpu(cpu) => train::train(cpu, &config, resume, &stop_signal::STOP),
        Backends::Gpu(gpu) => train::train(*gpu, &config, resume, &stop_signal::STOP),
    })?;
    if report.interrupted {
        println!(
            "interrupted after {} epochs; checkpoint saved to {} (resume with --resume {})",
            report.epochs_completed,
            report.last_checkpoint.display(),
            report.last_checkpoint.display()
        );
        return Ok(ExitCode::from(stop_signal::exit_status()));
    }
    println!(
        "trained {} epochs: train_loss {}  val_loss {}; checkpoint {}; history {}",
        report.epochs_completed,
        report.train_loss.map_or("-".into(), |v| format!("{v:.6}")),
        report.val_loss.map_or("-".into(), |v| format!("{v:.6}")),
        report.last_checkpoint.display(),
        config.out_dir.join(whorl::history::HISTORY_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}
