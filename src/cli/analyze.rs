//! `whorl eval`, `whorl reconstruct` and `whorl gradcam`: a trained model looked at.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use whorl::backend::Backend;
use whorl::checkpoint::{CheckpointMeta, Weights};
use whorl::data::Dataset;
use whorl::graph::Network;
use whorl::normalize::Stretch;
use whorl::{Error, Result, bundled, evaluate, figures, gradcam};

use super::device::{Backends, Compute, on_device, with_backend};

#[derive(Args, Clone)]
pub(crate) struct ModelArgs {
    /// A checkpoint folder, or a run folder (its newest checkpoint). Without it: the bundled
    /// model synthetic-adam-224, built into whorl (trained by whorl on its synthetic default
    /// data, 224x224, Adam; see models/synthetic-adam-224/MODEL.md), which has no validation
    /// split to score.
    #[arg(long, value_name = "CHECKPOINT")]
    pub(crate) model: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) compute: Compute,
}

/// `--native-resolution`, for eval and reconstruct.
const NATIVE_RESOLUTION_HELP: &str = "Reconstruct each image at its own width and height instead \
    of resized to the model's input size (the model is fully convolutional): each is placed at \
    the top left of a square canvas (the largest side of the sets, rounded up to a multiple of \
    4), the rest filled by repeating its edge, reconstructed one at a time and cropped back, so \
    scores, figures and NBIS's minutiae take the image as its sensor made it. Always on for a \
    model trained on crops (whorl train --crop).";

#[derive(Args)]
pub(crate) struct EvalArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,

    /// A folder of images to score; repeat for several (e.g. another sensor's test set).
    #[arg(long, value_name = "DIR")]
    pub(crate) data: Vec<PathBuf>,

    /// Also score the validation split recorded in the checkpoint ("val"); the default when
    /// no --data is given. Not with the bundled model, whose training data is not built in.
    #[arg(long, value_name = "SPLIT", value_parser = ["val"])]
    pub(crate) split: Option<String>,

    /// Write the sets' scores as JSON here and every image's as CSV beside it (FILE.csv).
    #[arg(long, value_name = "FILE.json")]
    pub(crate) out: Option<PathBuf>,

    /// Skip images that fail to decode instead of stopping.
    #[arg(long)]
    pub(crate) skip_bad: bool,

    /// Leave out the NIST NBIS identity scores (MINDTCT minutiae and BOZORTH3 matching, one
    /// image at a time: about 0.15 s an image).
    #[arg(long)]
    pub(crate) no_identity: bool,

    #[arg(long, help = NATIVE_RESOLUTION_HELP)]
    pub(crate) native_resolution: bool,
}

#[derive(Args)]
pub(crate) struct ReconstructArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,

    /// Folder of images to sample from.
    #[arg(long, value_name = "DIR")]
    pub(crate) data: PathBuf,

    /// The figure to write (PNG).
    #[arg(long, value_name = "FILE.png")]
    pub(crate) out: PathBuf,

    /// Images in the figure.
    #[arg(long, default_value_t = 10)]
    pub(crate) count: usize,

    /// Seed of the random sample.
    #[arg(long, default_value_t = 13)]
    pub(crate) seed: u64,

    /// Also write every image's reconstruction here, as PNG named after its source.
    #[arg(long, value_name = "DIR")]
    pub(crate) save_dir: Option<PathBuf>,

    /// Skip images that fail to decode instead of stopping.
    #[arg(long)]
    pub(crate) skip_bad: bool,

    #[arg(long, help = NATIVE_RESOLUTION_HELP)]
    pub(crate) native_resolution: bool,
}

#[derive(Args)]
pub(crate) struct GradcamArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,

    /// The image to explain (resized to the model's input size).
    #[arg(long, value_name = "FILE")]
    pub(crate) image: PathBuf,

    /// The convolution to explain, conv1 to conv6, or all (one row each).
    #[arg(long, default_value = "conv4")]
    pub(crate) layer: String,

    /// The figure to write (PNG): input, heat map with colour bar, overlay.
    #[arg(long, value_name = "FILE.png")]
    pub(crate) out: PathBuf,
}

/// The weights of `--model`, or of the bundled model when it is left out, saying so once a
/// process (`whorl demo` loads it for its scores and for each figure).
fn load_weights(args: &ModelArgs) -> Result<Weights> {
    static NOTICED: AtomicBool = AtomicBool::new(false);
    if args.model.is_none() && !NOTICED.swap(true, Ordering::Relaxed) {
        println!("{}", bundled::notice());
    }
    evaluate::load_weights(args.model.as_deref())
}

/// The model's name for figure titles.
fn model_name(args: &ModelArgs) -> String {
    match &args.model {
        Some(path) => short_name(path),
        None => format!("the bundled model {}", bundled::NAME),
    }
}

/// The bundled model's training data is not built in, so it has no validation split to score.
fn check_split(args: &EvalArgs) -> Result<()> {
    if args.model.model.is_some() {
        return Ok(());
    }
    let why = "the bundled model's validation split is part of the synthetic default set it was \
               trained on, which is not built into whorl";
    match (&args.split, args.data.is_empty()) {
        (Some(_), _) => Err(Error::invalid(
            "--split",
            format!("{why}; give --model a checkpoint to score its split, or score --data DIR"),
        )),
        (None, true) => Err(Error::invalid(
            "--data",
            format!(
                "required with the bundled model ({why}): a folder of images to score, e.g. \
                 ../shared/data/real-fingerprints"
            ),
        )),
        (None, false) => Ok(()),
    }
}

/// The scores `whorl eval` prints, one report per set.
pub(crate) fn eval_reports(args: &EvalArgs) -> Result<Vec<evaluate::SetReport>> {
    check_split(args)?;
    with_backend!(&args.model.compute, false, eval_on(args))
}

pub(crate) fn run_eval(args: EvalArgs) -> Result<ExitCode> {
    if let Some(path) = &args.out {
        whorl::atomic::check_writable(path)?;
    }
    let reports = eval_reports(&args)?;
    print!("{}", evaluate::table(&reports));
    if let Some(path) = &args.out {
        let csv = evaluate::write(&reports, path)?;
        println!("scores written to {} and {}", path.display(), csv.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn eval_on<B: Backend>(backend: B, args: &EvalArgs) -> Result<Vec<evaluate::SetReport>> {
    let weights = load_weights(&args.model)?;
    let meta = &weights.meta;
    let native = native_resolution(args.native_resolution, meta);
    let load = |dir: &Path| load_set(dir, meta, native, args.skip_bad);
    let mut sets = Vec::new();
    if args.split.is_some() || args.data.is_empty() {
        let dataset = load(&meta.data_dir)?;
        let validation = evaluate::validation_indices(meta, &dataset)?;
        let label = format!("validation split of {}", short_name(&meta.data_dir));
        sets.push((dataset, validation, label));
    }
    for dir in &args.data {
        let dataset = load(dir)?;
        let all: Vec<usize> = (0..dataset.len()).collect();
        sets.push((dataset, all, short_name(dir)));
    }
    let side = sets
        .iter()
        .map(|(d, _, _)| d.size)
        .max()
        .unwrap_or(meta.input_size);
    for (dataset, _, _) in &mut sets {
        dataset.pad_to(side);
    }
    let mut net = evaluate::network(backend, &weights, side, batch(native))?;
    sets.iter()
        .map(|(dataset, indices, label)| {
            evaluate::score(
                &mut net,
                dataset,
                indices,
                meta.normalize,
                label,
                !args.no_identity,
            )
        })
        .collect()
}

/// A folder of images as the model sees them: resized to its input size, or with
/// `native_resolution` each at its own resolution on a canvas padded to a multiple of the
/// model's downsampling; what was passed over is warned of.
fn load_set(
    dir: &Path,
    meta: &CheckpointMeta,
    native_resolution: bool,
    skip_bad: bool,
) -> Result<Dataset> {
    let dataset = if native_resolution {
        load_native_set(dir, skip_bad)?
    } else {
        Dataset::load(dir, meta.input_size, skip_bad, true)?
    };
    dataset.warn_skipped();
    Ok(dataset)
}

/// A folder of images each at its own resolution, on a canvas that one image at a time
/// through the network fits in memory.
fn load_native_set(dir: &Path, skip_bad: bool) -> Result<Dataset> {
    let architecture = whorl::model::Architecture::reference();
    let dataset = Dataset::load_native(
        dir,
        architecture.downsampling(),
        skip_bad,
        true,
        "--native-resolution",
    )?;
    let side = dataset.size;
    let need = whorl::memory::network_bytes(&architecture, side, 1);
    whorl::memory::check_fits(&format!("an image of {side}x{side}"), need)
        .map_err(|why| Error::invalid("--native-resolution", why))?;
    Ok(dataset)
}

/// Whether images go through the model at their own resolution: when asked for, and always for
/// a model trained on crops at their own resolution (`whorl train --crop`).
fn native_resolution(asked: bool, meta: &CheckpointMeta) -> bool {
    asked || meta.crop
}

/// Images per forward pass: one at a time at their own resolution, whose canvas can be large.
fn batch(native_resolution: bool) -> usize {
    if native_resolution {
        1
    } else {
        evaluate::EVAL_BATCH
    }
}

/// The last two components of a path, for labels.
fn short_name(path: &Path) -> String {
    let parts: Vec<String> = path
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.into_iter().rev().collect::<Vec<_>>().join("/")
}

pub(crate) fn run_reconstruct(args: ReconstructArgs) -> Result<ExitCode> {
    whorl::atomic::check_writable(&args.out)?;
    if let Some(dir) = &args.save_dir {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    with_backend!(&args.model.compute, false, reconstruct_on(&args))?;
    println!("figure written to {}", args.out.display());
    if let Some(dir) = &args.save_dir {
        println!("reconstructions written to {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn reconstruct_on<B: Backend>(backend: B, args: &ReconstructArgs) -> Result<()> {
    if args.count == 0 {
        return Err(Error::invalid("--count", "must be at least 1"));
    }
    let weights = load_weights(&args.model)?;
    let native = native_resolution(args.native_resolution, &weights.meta);
    let dataset = load_set(&args.data, &weights.meta, native, args.skip_bad)?;
    let mut net = evaluate::network(backend, &weights, dataset.size, batch(native))?;
    let mut order: Vec<usize> = (0..dataset.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(args.seed));
    order.truncate(args.count);
    let n = dataset.size * dataset.size;
    // With --save-dir every image is reconstructed once; the figure's sample is taken from those.
    let all: Option<Vec<f32>> = match &args.save_dir {
        Some(_) => {
            let every: Vec<usize> = (0..dataset.len()).collect();
            Some(evaluate::reconstruct(
                &mut net,
                &dataset,
                &every,
                weights.meta.normalize,
            )?)
        }
        None => None,
    };
    let reconstructions = match &all {
        Some(all) => order
            .iter()
            .flat_map(|&i| &all[i * n..(i + 1) * n])
            .copied()
            .collect(),
        None => evaluate::reconstruct(&mut net, &dataset, &order, weights.meta.normalize)?,
    };
    let title = format!(
        "Reconstructions of {} by {}",
        short_name(&args.data),
        model_name(&args.model)
    );
    let figure = evaluate::reconstruction_figure(&title, &dataset, &order, &reconstructions)?;
    figures::save_png(&figure, &args.out)?;
    if let (Some(dir), Some(all)) = (&args.save_dir, &all) {
        for (i, (file, recon)) in dataset.files.iter().zip(all.chunks(n)).enumerate() {
            let (width, height) = dataset.extents[i];
            let stem = file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            figures::save_png(
                &figures::gray(&dataset.region(i, recon), width as u32, height as u32),
                &dir.join(format!("{stem}.png")),
            )?;
        }
    }
    Ok(())
}

pub(crate) fn run_gradcam(args: GradcamArgs) -> Result<ExitCode> {
    whorl::atomic::check_writable(&args.out)?;
    with_backend!(&args.model.compute, false, gradcam_on(&args))?;
    println!("Grad-CAM figure written to {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn gradcam_on<B: Backend>(backend: B, args: &GradcamArgs) -> Result<()> {
    let weights = load_weights(&args.model)?;
    // A model trained on crops sees the image at its own resolution, on a square canvas; the
    // figure shows the image's own region (width x height) of it.
    let (image, size, (width, height)) = match weights.meta.crop {
        false => {
            let size = weights.meta.input_size;
            (
                whorl::data::load_image(&args.image, size)?,
                size,
                (size, size),
            )
        }
        true => {
            let (width, height, pixels) = whorl::data::load_native_image(&args.image)?;
            let multiple = whorl::model::Architecture::reference().downsampling();
            let side = whorl::data::canvas_side(width, height, multiple);
            let canvas = whorl::data::pad(&pixels, width, height, side);
            (canvas, side, (width, height))
        }
    };
    let architecture = whorl::model::Architecture::reference();
    let mut net =
        Network::keeping_every_output(backend, architecture, size, size, 1, &weights.params)?;
    // The model sees the image normalised as it was trained; the figure shows it as it is.
    let mut seen = image.clone();
    Stretch::of(weights.meta.normalize, &image).apply(&mut seen);
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
        .map(|layer| Ok(gradcam::grad_cam(&mut net, &seen, layer)?.top_left(width, height)))
        .collect::<Result<Vec<_>>>()?;
    let image = whorl::data::top_left(&image, size, width, height);
    let title = format!(
        "Grad-CAM of the reconstruction by {} (target: sum of the output): {}",
        model_name(&args.model),
        short_name(&args.image)
    );
    figures::save_png(&gradcam::figure(&title, &image, &maps)?, &args.out)
}
