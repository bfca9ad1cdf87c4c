//! The training loop: epochs of shuffled batches, validation, history, checkpoints, and the
//! three ways a run ends early (a non-finite loss, Ctrl-C, an error).

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::augment::{self, Augmentation};
use crate::backend::{Backend, Optimizer, OptimizerKind};
use crate::checkpoint::{self, Checkpoint, CheckpointMeta};
use crate::data::{self, Dataset, Split};
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::history::{self, EpochRow, History};
use crate::memory;
use crate::model::Architecture;
use crate::normalize::{self, Normalization};
use crate::run_folder::{Continued, RunFolder};
use crate::schedule::Schedule;

/// Everything a training run needs to know.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub data_dir: PathBuf,
    /// Epochs to run now (on a resumed run, epochs to add).
    pub epochs: usize,
    pub batch_size: usize,
    /// The base learning rate, which `schedule` shapes step by step.
    pub learning_rate: f32,
    pub optimizer: OptimizerKind,
    pub schedule: Schedule,
    /// Changes made to each training image each epoch (never to validation images).
    pub augment: Vec<Augmentation>,
    pub normalize: Normalization,
    pub val_split: f64,
    pub seed: u64,
    /// The side of the images the network trains on: whole images resized to it, or with
    /// `crop` windows of this side cut from the images at their own resolution.
    pub size: usize,
    /// Train on random size x size windows of the images at their own resolution (validation:
    /// the centred window) instead of whole images resized.
    pub crop: bool,
    pub out_dir: PathBuf,
    /// Save a checkpoint every this many epochs (and always after the last).
    pub save_every: usize,
    pub skip_bad: bool,
    /// Delete checkpoints already in `out_dir` that this run does not continue, instead of
    /// refusing to mix with them.
    pub overwrite: bool,
    /// Draw progress bars and print per-epoch lines.
    pub verbose: bool,
}

impl TrainConfig {
    /// The side of the training windows, when training on crops.
    pub fn crop_side(&self) -> Option<usize> {
        self.crop.then_some(self.size)
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct TrainReport {
    pub epochs_completed: usize,
    pub last_checkpoint: PathBuf,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub interrupted: bool,
}

/// How one pass over the training images ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EpochEnd {
    /// Every batch trained: the mean training loss of the epoch and the validation loss.
    Completed {
        train_loss: f64,
        val_loss: Option<f64>,
    },
    /// A stop was asked for; the batches trained so far are recorded in the metadata.
    Interrupted,
    /// The training loss of step `step` (1-based), or the validation loss after the last step
    /// (`step` None), is NaN or infinite.
    NonFinite {
        which: &'static str,
        loss: f64,
        step: Option<usize>,
    },
}

/// How the images of a batch are drawn from the data set: whole, or crop x crop windows; for
/// training epoch `epoch` with windows drawn at random and `augment` applied, or for
/// validation (`epoch` None) centred and unchanged.
#[derive(Clone, Copy)]
pub struct Sampling<'a> {
    pub crop: Option<usize>,
    pub augment: &'a [Augmentation],
    pub seed: u64,
    pub epoch: Option<usize>,
}

impl Sampling<'_> {
    /// Validation's: whole images, or with `crop` their centred windows; never augmented.
    pub fn validation(crop: Option<usize>) -> Sampling<'static> {
        Sampling {
            crop,
            augment: &[],
            seed: 0,
            epoch: None,
        }
    }

    /// Replaces `batch` with the images of `chunk` as this sampling draws them.
    fn gather(&self, dataset: &Dataset, chunk: &[usize], batch: &mut Vec<f32>) {
        let side = match self.crop {
            None => {
                dataset.gather(chunk, batch);
                dataset.size
            }
            Some(crop) => {
                let origins: Vec<(usize, usize)> = chunk
                    .iter()
                    .map(|&i| data::crop_origin(dataset.extents[i], crop, self.seed, self.epoch, i))
                    .collect();
                dataset.gather_crops(chunk, &origins, crop, batch);
                crop
            }
        };
        if let Some(epoch) = self.epoch.filter(|_| !self.augment.is_empty()) {
            batch
                .par_chunks_exact_mut(side * side)
                .zip(chunk)
                .for_each(|(image, &index)| {
                    augment::apply(self.augment, self.seed, epoch, index, image, side);
                });
        }
    }
}

/// Gathers the images of `chunk`, if any, as `sampling` draws them, and starts uploading them
/// as the next batch. Called after a step is issued and before its loss is read, so on a GPU
/// the host work and the copy overlap the step.
fn load_next<B: Backend>(
    net: &mut Network<B>,
    dataset: &Dataset,
    chunk: Option<&[usize]>,
    batch: &mut Vec<f32>,
    sampling: Sampling,
) -> Result<()> {
    let Some(chunk) = chunk else {
        return Ok(());
    };
    sampling.gather(dataset, chunk, batch);
    net.load_batch(batch)
}

/// Mean reconstruction loss over `indices`, in batches; weighted by image. With `crop`, of each
/// image's centred crop x crop window.
pub fn mean_loss<B: Backend>(
    net: &mut Network<B>,
    dataset: &Dataset,
    indices: &[usize],
    crop: Option<usize>,
    batch: &mut Vec<f32>,
) -> Result<f64> {
    let mut chunks = indices.chunks(net.batch_capacity()).peekable();
    let sampling = Sampling::validation(crop);
    load_next(net, dataset, chunks.peek().copied(), batch, sampling)?;
    let mut sum = 0.0;
    while let Some(chunk) = chunks.next() {
        net.forward_loaded()?;
        load_next(net, dataset, chunks.peek().copied(), batch, sampling)?;
        sum += net.loss()? * chunk.len() as f64;
    }
    Ok(sum / indices.len() as f64)
}

/// A run in progress: the network, its data and what a checkpoint records about it.
struct Run<'a, B: Backend> {
    config: &'a TrainConfig,
    architecture: Architecture,
    net: Network<B>,
    dataset: Dataset,
    split: Split,
    meta: CheckpointMeta,
    batch: Vec<f32>,
    interrupt: &'a AtomicBool,
    /// The newest checkpoint this run saved or continues from (all its values finite).
    last_good: Option<PathBuf>,
}

impl<B: Backend> Run<'_, B> {
    fn stop_requested(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }

    /// The learning rate of the step that trains `images` images after the first `done` of
    /// epoch `epoch`, in a run that ends at `last_epoch`.
    fn learning_rate(&self, epoch: usize, done: usize, images: usize, last_epoch: usize) -> f32 {
        let per_epoch = self.split.train.len() as f64;
        self.config.schedule.learning_rate(
            self.config.learning_rate,
            epoch as f64 + done as f64 / per_epoch,
            images as f64 / per_epoch,
            last_epoch,
        )
    }

    /// Trains epoch `epoch` (0-based) from the image the metadata says it stands at (so a
    /// resumed run continues the same image order whatever its batch size), then validates.
    fn run_epoch(
        &mut self,
        epoch: usize,
        last_epoch: usize,
        bar: &ProgressBar,
    ) -> Result<EpochEnd> {
        let order = data::epoch_order(&self.split.train, self.config.seed, epoch);
        let done = self.meta.partial_images;
        bar.set_position(done as u64);
        let mut chunks = order[done..].chunks(self.config.batch_size).peekable();
        let sampling = Sampling {
            crop: self.config.crop_side(),
            augment: &self.config.augment,
            seed: self.config.seed,
            epoch: Some(epoch),
        };
        let (net, dataset, batch) = (&mut self.net, &self.dataset, &mut self.batch);
        load_next(net, dataset, chunks.peek().copied(), batch, sampling)?;
        while let Some(chunk) = chunks.next() {
            let rate = self.learning_rate(epoch, self.meta.partial_images, chunk.len(), last_epoch);
            let net = &mut self.net;
            net.optimizer = net.optimizer.with_learning_rate(rate);
            net.train_step_loaded()?;
            load_next(
                net,
                &self.dataset,
                chunks.peek().copied(),
                &mut self.batch,
                sampling,
            )?;
            let loss = net.loss()?;
            let meta = &mut self.meta;
            meta.step_in_epoch += 1;
            if !loss.is_finite() {
                return Ok(EpochEnd::NonFinite {
                    which: "training loss",
                    loss,
                    step: Some(meta.step_in_epoch),
                });
            }
            meta.partial_loss_sum += loss * chunk.len() as f64;
            meta.partial_images += chunk.len();
            bar.inc(chunk.len() as u64);
            bar.set_message(format!(
                "loss {:.6}",
                meta.partial_loss_sum / meta.partial_images as f64
            ));
            if self.interrupt.load(Ordering::SeqCst) && chunks.peek().is_some() {
                return Ok(EpochEnd::Interrupted);
            }
        }
        let train_loss = self.meta.partial_loss_sum / self.meta.partial_images.max(1) as f64;
        let val_loss = match self.split.validation.is_empty() {
            true => None,
            false => Some(mean_loss(
                &mut self.net,
                &self.dataset,
                &self.split.validation,
                self.config.crop_side(),
                &mut self.batch,
            )?),
        };
        if let Some(loss) = val_loss.filter(|v| !v.is_finite()) {
            return Ok(EpochEnd::NonFinite {
                which: "validation loss",
                loss,
                step: None,
            });
        }
        self.meta.epoch = epoch + 1;
        self.meta.step_in_epoch = 0;
        self.meta.partial_loss_sum = 0.0;
        self.meta.partial_images = 0;
        Ok(EpochEnd::Completed {
            train_loss,
            val_loss,
        })
    }

    /// Writes the checkpoint of where the run stands and returns its folder; refuses (naming
    /// the last good checkpoint) when a weight or an optimizer value is NaN or infinite.
    fn save(&mut self) -> Result<PathBuf> {
        let dir = checkpoint::checkpoint_dir(
            &self.config.out_dir,
            self.meta.epoch,
            self.meta.step_in_epoch,
        );
        let checkpoint = Checkpoint {
            meta: CheckpointMeta {
                iterations: self.net.iterations,
                ..self.meta.clone()
            },
            params: self.net.params()?,
            velocity: self.net.velocity()?,
            momentum: match self.meta.optimizer {
                Optimizer::Rmsprop(_) => Vec::new(),
                Optimizer::Adam(_) => self.net.momentum()?,
            },
        };
        let finite = |values: &[f32]| values.iter().all(|v| v.is_finite());
        if ![
            &checkpoint.params,
            &checkpoint.velocity,
            &checkpoint.momentum,
        ]
        .iter()
        .all(|values| finite(values))
        {
            let at = match self.meta.step_in_epoch {
                0 => format!("after epoch {}", self.meta.epoch),
                step => format!("at epoch {}, step {step}", self.meta.epoch + 1),
            };
            return Err(self.non_finite(format!("the weights became NaN or infinite {at}")));
        }
        checkpoint::save(&dir, &self.architecture, &checkpoint)?;
        self.last_good = Some(dir.clone());
        Ok(dir)
    }

    /// The error that ends a run gone non-finite, naming the newest checkpoint known good.
    fn non_finite(&self, what: String) -> Error {
        Error::NonFinite {
            what,
            last_good: match &self.last_good {
                Some(dir) => format!("the last good checkpoint is {}", dir.display()),
                None => "no checkpoint was saved yet; try a lower --lr".into(),
            },
        }
    }
}

/// Checks the settings that do not depend on the data.
fn check_config(config: &TrainConfig, architecture: &Architecture) -> Result<()> {
    if config.epochs == 0 {
        return Err(Error::invalid("--epochs", "must be at least 1"));
    }
    if config.save_every == 0 {
        return Err(Error::invalid("--save-every", "must be at least 1"));
    }
    if config.epochs > checkpoint::MAX_EPOCHS {
        return Err(Error::invalid(
            "--epochs",
            format!("must be at most {}", checkpoint::MAX_EPOCHS),
        ));
    }
    if !(config.learning_rate > 0.0 && config.learning_rate.is_finite()) {
        return Err(Error::invalid("--lr", "must be a positive number"));
    }
    architecture.shapes(config.size, config.size)?;
    memory::check_fits(
        &format!(
            "{} images of {}x{}",
            config.batch_size, config.size, config.size
        ),
        memory::network_bytes(architecture, config.size, config.batch_size),
    )
    .map_err(|why| Error::invalid("--batch-size", why))
}

/// Loads the data, builds the network from the checkpoint (or fresh weights) and opens the run
/// folder.
fn start<'a, B: Backend>(
    backend: B,
    config: &'a TrainConfig,
    resume: Option<(PathBuf, Checkpoint)>,
    interrupt: &'a AtomicBool,
) -> Result<Run<'a, B>> {
    let architecture = Architecture::reference();
    check_config(config, &architecture)?;
    if let Some((dir, c)) = &resume {
        let saved = c.meta.optimizer.kind();
        if saved != config.optimizer {
            return Err(Error::OptimizerMismatch {
                path: dir.clone(),
                given: config.optimizer,
                saved,
            });
        }
    }
    let mut dataset = match config.crop {
        false => Dataset::load(
            &config.data_dir,
            config.size,
            config.skip_bad,
            config.verbose,
        )?,
        true => {
            let multiple = architecture.downsampling();
            let (dir, progress) = (&config.data_dir, config.verbose);
            let mut dataset =
                Dataset::load_native(dir, multiple, config.skip_bad, progress, "--crop")?;
            dataset.pad_to(config.size);
            dataset
        }
    };
    let canvas = dataset.size * dataset.size;
    normalize::normalize_batch(config.normalize, &mut dataset.pixels, canvas);
    dataset.warn_skipped();
    let split = data::split(
        dataset.len(),
        config.val_split,
        config.seed,
        &config.data_dir,
    )?;
    say(config, describe_data(config, &dataset, &split));
    if let Some((dir, c)) = &resume
        && c.meta.partial_images > split.train.len()
    {
        return Err(Error::BadCheckpoint {
            path: dir.join(checkpoint::META_FILE),
            reason: format!(
                "field partial_images = {}: more than the {} training images of {}",
                c.meta.partial_images,
                split.train.len(),
                config.data_dir.display()
            ),
        });
    }

    let (last_good, params, state, mut meta) = match resume {
        Some((dir, c)) => (Some(dir), c.params, Some((c.velocity, c.momentum)), c.meta),
        None => (
            None,
            architecture.glorot_uniform(config.seed),
            None,
            CheckpointMeta::new(&architecture),
        ),
    };
    meta.input_size = config.size;
    meta.seed = config.seed;
    meta.val_split = config.val_split;
    meta.batch_size = config.batch_size;
    meta.learning_rate = config.learning_rate;
    meta.optimizer = Optimizer::new(config.optimizer, config.learning_rate);
    meta.schedule = config.schedule;
    meta.augment = config.augment.clone();
    meta.normalize = config.normalize;
    meta.crop = config.crop;
    meta.data_dir = fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());

    let mut net = Network::new(
        backend,
        architecture.clone(),
        config.size,
        config.size,
        config.batch_size,
        &params,
    )?;
    if let Some((velocity, momentum)) = state {
        net.set_velocity(&velocity)?;
        if !momentum.is_empty() {
            net.set_momentum(&momentum)?;
        }
    }
    net.optimizer = meta.optimizer;
    net.iterations = meta.iterations;
    say(config, describe_training(config, meta.epoch));
    say(config, architecture.summary(config.size, config.size)?);
    say(config, format!("backend: {}", net.backend().name()));
    Ok(Run {
        config,
        architecture,
        net,
        dataset,
        split,
        meta,
        batch: Vec::with_capacity(config.batch_size * config.size * config.size),
        interrupt,
        last_good,
    })
}

/// Trains from scratch (`resume` None) or from a checkpoint (its folder and contents); stops early, after saving, when
/// `interrupt` is set.
pub fn train<B: Backend>(
    backend: B,
    config: &TrainConfig,
    resume: Option<(PathBuf, Checkpoint)>,
    interrupt: &AtomicBool,
) -> Result<TrainReport> {
    check_out_is_outside_data(config)?;
    let _claim = RunFolder::claim(
        &config.out_dir,
        resume
            .as_ref()
            .map(|(dir, c)| Continued { dir, meta: &c.meta }),
        config.overwrite,
    )?;
    let mut run = start(backend, config, resume, interrupt)?;
    let mut history = History::continue_at(&config.out_dir, run.meta.epoch)?;
    let mut report = TrainReport {
        epochs_completed: run.meta.epoch,
        last_checkpoint: PathBuf::new(),
        train_loss: None,
        val_loss: None,
        interrupted: false,
    };
    let first_epoch = run.meta.epoch;
    // Both are at most MAX_EPOCHS (checked), so the sum cannot overflow.
    let last_epoch = first_epoch + config.epochs;
    for epoch in first_epoch..last_epoch {
        let started = Instant::now();
        let images = run.split.train.len();
        let bar = epoch_bar(config.verbose, epoch + 1, last_epoch, images);
        let (train_loss, val_loss) = match run.run_epoch(epoch, last_epoch, &bar)? {
            EpochEnd::Completed {
                train_loss,
                val_loss,
            } => (train_loss, val_loss),
            EpochEnd::Interrupted => {
                bar.abandon();
                report.last_checkpoint = run.save()?;
                report.interrupted = true;
                return Ok(report);
            }
            EpochEnd::NonFinite { which, loss, step } => {
                bar.abandon();
                let at = match step {
                    Some(step) => format!("at epoch {}, step {step}", epoch + 1),
                    None => format!("after epoch {}", epoch + 1),
                };
                return Err(run.non_finite(format!("the {which} became {loss} {at}")));
            }
        };
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        history.push(EpochRow {
            epoch: epoch + 1,
            train_loss,
            val_loss,
            seconds,
        })?;
        if let Err(error) = history::plot_history(&config.out_dir, false) {
            eprintln!("warning: loss curve not drawn: {error}");
        }
        say(
            config,
            format!(
                "epoch {}/{last_epoch}  train_loss {train_loss:.6}  val_loss {}  {seconds:.1} s  {:.1} images/s",
                epoch + 1,
                val_loss.map_or("-".into(), |v| format!("{v:.6}")),
                images as f64 / seconds
            ),
        );
        report.epochs_completed = run.meta.epoch;
        report.train_loss = Some(train_loss);
        report.val_loss = val_loss;
        let last = epoch + 1 == last_epoch;
        if last || (epoch + 1) % config.save_every == 0 || run.stop_requested() {
            report.last_checkpoint = run.save()?;
            if run.stop_requested() && !last {
                report.interrupted = true;
                return Ok(report);
            }
        }
    }
    Ok(report)
}

/// Refuses a run folder inside the data folder: its loss curve would be read back as a
/// training image by the next run.
fn check_out_is_outside_data(config: &TrainConfig) -> Result<()> {
    let canonical = |path: &std::path::Path| fs::canonicalize(path).ok();
    // A run folder not made yet is judged by its parent.
    let out = canonical(&config.out_dir).or_else(|| {
        let parent = config
            .out_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty());
        Some(
            canonical(parent.unwrap_or(std::path::Path::new(".")))?
                .join(config.out_dir.file_name()?),
        )
    });
    match (out, canonical(&config.data_dir)) {
        (Some(out), Some(data)) if out.starts_with(&data) => Err(Error::invalid(
            "--out",
            format!(
                "{} is inside the --data folder {}, where its loss.png would be read as an image",
                config.out_dir.display(),
                config.data_dir.display()
            ),
        )),
        _ => Ok(()),
    }
}

fn say(config: &TrainConfig, line: String) {
    if config.verbose {
        println!("{line}");
    }
}

fn describe_data(config: &TrainConfig, dataset: &Dataset, split: &Split) -> String {
    let shape = match config.crop {
        false => format!("resized to {0}x{0}", config.size),
        true => format!(
            "at their own resolution, {0}x{0} crops (random in training, centred in validation)",
            config.size
        ),
    };
    format!(
        "data: {} images from {} ({} for training, {} for validation{}), {shape}",
        dataset.len(),
        config.data_dir.display(),
        split.train.len(),
        split.validation.len(),
        match dataset.skipped.len() {
            0 => String::new(),
            n => format!(", {n} entries skipped"),
        },
    )
}

fn describe_training(config: &TrainConfig, first_epoch: usize) -> String {
    format!(
        "training: {} at learning rate {} ({}), batch {}; augmentation: {}; normalisation: {}",
        config.optimizer,
        config.learning_rate,
        config.schedule.describe(first_epoch + config.epochs),
        config.batch_size,
        augment::describe(&config.augment),
        config.normalize
    )
}

fn epoch_bar(verbose: bool, epoch: usize, epochs: usize, images: usize) -> ProgressBar {
    if !verbose {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(images as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "epoch {epoch}/{epochs} [{{bar:30}}] {{pos}}/{{len}} images  {{per_sec}}  {{msg}}  eta {{eta}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
