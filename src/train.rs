//! The training loop: epochs of shuffled batches, validation, history, checkpoints, and the
//! three ways a run ends early (a non-finite loss, Ctrl-C, an error).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use crate::atomic;
use crate::backend::{Backend, Optimizer, OptimizerKind};
use crate::checkpoint::{self, Checkpoint, CheckpointMeta};
use crate::data::{self, Dataset, Split};
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::model::Architecture;

/// Everything a training run needs to know.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub data_dir: PathBuf,
    /// Epochs to run now (on a resumed run, epochs to add).
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    pub optimizer: OptimizerKind,
    pub val_split: f64,
    pub seed: u64,
    pub size: usize,
    pub out_dir: PathBuf,
    /// Save a checkpoint every this many epochs (and always after the last).
    pub save_every: usize,
    pub skip_bad: bool,
    /// Draw progress bars and print per-epoch lines.
    pub verbose: bool,
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

pub const HISTORY_FILE: &str = "history.csv";
pub const LOSS_PLOT: &str = "loss.png";
const HISTORY_HEADER: &str = "epoch,train_loss,val_loss,seconds";

/// The checkpoint folder for `epoch` completed epochs plus `step` batches of the next.
pub fn checkpoint_dir(out_dir: &Path, epoch: usize, step: usize) -> PathBuf {
    let name = if step == 0 {
        format!("epoch-{epoch:04}")
    } else {
        format!("epoch-{epoch:04}-step-{step:05}")
    };
    out_dir.join("checkpoints").join(name)
}

/// A checkpoint folder, or the newest checkpoint of a run folder.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join(checkpoint::META_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    let folder = path.join("checkpoints");
    let newest = fs::read_dir(&folder).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|dir| {
                let text = fs::read_to_string(dir.join(checkpoint::META_FILE)).ok()?;
                let meta: CheckpointMeta = serde_json::from_str(&text).ok()?;
                Some(((meta.epoch, meta.step_in_epoch), dir))
            })
            .max()
    });
    newest
        .map(|(_, dir)| dir)
        .ok_or_else(|| Error::BadCheckpoint {
            path: path.to_path_buf(),
            reason: format!(
                "neither a checkpoint (no {}) nor a run folder with checkpoints",
                checkpoint::META_FILE
            ),
        })
}

/// The run folder a checkpoint belongs to (run/checkpoints/epoch-N -> run).
pub fn run_dir_of(checkpoint_dir: &Path) -> Option<PathBuf> {
    let parent = checkpoint_dir.parent()?;
    (parent.file_name()? == "checkpoints").then(|| parent.parent().map(Path::to_path_buf))?
}

/// `runs/train`, or `runs/train-2`, `runs/train-3`, ... whichever does not exist yet.
pub fn fresh_run_dir(root: &Path) -> PathBuf {
    (1..)
        .map(|i| match i {
            1 => root.join("train"),
            _ => root.join(format!("train-{i}")),
        })
        .find(|dir| !dir.exists())
        .expect("an unused name exists")
}

/// Rows of history.csv up to and including `epoch` (those a resumed run keeps).
fn history_until(path: &Path, epoch: usize) -> Vec<String> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter(|line| {
            let first = line.split(',').next().and_then(|e| e.parse::<usize>().ok());
            first.is_some_and(|e| e <= epoch)
        })
        .map(str::to_string)
        .collect()
}

/// Gathers the images of `chunk`, if any, and starts uploading them as the next batch. Called
/// after a step is issued and before its loss is read, so on a GPU the host work and the copy
/// overlap the step.
fn load_next<B: Backend>(
    net: &mut Network<B>,
    dataset: &Dataset,
    chunk: Option<&[usize]>,
    batch: &mut Vec<f32>,
) -> Result<()> {
    match chunk {
        Some(chunk) => {
            dataset.gather(chunk, batch);
            net.load_batch(batch)
        }
        None => Ok(()),
    }
}

/// Mean reconstruction loss over `indices`, in batches; weighted by image.
pub fn evaluate<B: Backend>(
    net: &mut Network<B>,
    dataset: &Dataset,
    indices: &[usize],
    batch: &mut Vec<f32>,
) -> Result<f64> {
    let mut chunks = indices.chunks(net.batch_capacity()).peekable();
    load_next(net, dataset, chunks.peek().copied(), batch)?;
    let mut sum = 0.0;
    while let Some(chunk) = chunks.next() {
        net.forward_loaded()?;
        load_next(net, dataset, chunks.peek().copied(), batch)?;
        sum += net.loss()? * chunk.len() as f64;
    }
    Ok(sum / indices.len() as f64)
}

/// Trains from scratch (`resume` None) or from a checkpoint (its folder and contents); stops early, after saving, when
/// `interrupt` is set.
pub fn train<B: Backend>(
    backend: B,
    config: &TrainConfig,
    resume: Option<(PathBuf, Checkpoint)>,
    interrupt: &AtomicBool,
) -> Result<TrainReport> {
    let architecture = Architecture::reference();
    let say = |line: String| {
        if config.verbose {
            println!("{line}");
        }
    };
    if config.epochs == 0 {
        return Err(Error::invalid("--epochs", "must be at least 1"));
    }
    if config.save_every == 0 {
        return Err(Error::invalid("--save-every", "must be at least 1"));
    }
    if !(config.learning_rate > 0.0 && config.learning_rate.is_finite()) {
        return Err(Error::invalid("--lr", "must be a positive number"));
    }
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
    architecture.shapes(config.size, config.size)?;

    let dataset = Dataset::load(
        &config.data_dir,
        config.size,
        config.skip_bad,
        config.verbose,
    )?;
    for (path, reason) in &dataset.skipped {
        eprintln!("warning: skipped {}: {reason}", path.display());
    }
    let Split { train, validation } = data::split(
        dataset.len(),
        config.val_split,
        config.seed,
        &config.data_dir,
    )?;
    say(format!(
        "data: {} images from {} ({} for training, {} for validation{}), {}x{}",
        dataset.len(),
        config.data_dir.display(),
        train.len(),
        validation.len(),
        match dataset.skipped.len() {
            0 => String::new(),
            n => format!(", {n} unreadable files skipped"),
        },
        config.size,
        config.size
    ));

    let mut last_checkpoint = resume.as_ref().map(|(dir, _)| dir.clone());
    let (params, state, mut meta) = match resume {
        Some((_, c)) => (c.params, Some((c.velocity, c.momentum)), c.meta),
        None => (
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
    say(architecture.summary(config.size, config.size)?);
    say(format!("backend: {}", net.backend().name()));

    fs::create_dir_all(&config.out_dir).map_err(Error::io(&config.out_dir))?;
    let history_path = config.out_dir.join(HISTORY_FILE);
    let mut history = history_until(&history_path, meta.epoch);
    atomic::write_file(&history_path, history_text(&history).as_bytes())?;

    let save = |net: &mut Network<B>, meta: &CheckpointMeta| -> Result<PathBuf> {
        let dir = checkpoint_dir(&config.out_dir, meta.epoch, meta.step_in_epoch);
        let checkpoint = Checkpoint {
            meta: CheckpointMeta {
                iterations: net.iterations,
                ..meta.clone()
            },
            params: net.params()?,
            velocity: net.velocity()?,
            momentum: match meta.optimizer {
                Optimizer::Rmsprop(_) => Vec::new(),
                Optimizer::Adam(_) => net.momentum()?,
            },
        };
        checkpoint::save(&dir, &architecture, &checkpoint)?;
        Ok(dir)
    };

    let mut report = TrainReport {
        epochs_completed: meta.epoch,
        last_checkpoint: PathBuf::new(),
        train_loss: None,
        val_loss: None,
        interrupted: false,
    };
    let mut batch = Vec::with_capacity(config.batch_size * config.size * config.size);
    let first_epoch = meta.epoch;
    for epoch in first_epoch..first_epoch + config.epochs {
        let started = Instant::now();
        let order = data::epoch_order(&train, config.seed, epoch);
        let bar = epoch_bar(
            config.verbose,
            epoch + 1,
            first_epoch + config.epochs,
            train.len(),
        );
        bar.set_position((meta.step_in_epoch * config.batch_size).min(train.len()) as u64);
        let mut chunks = order
            .chunks(config.batch_size)
            .enumerate()
            .skip(meta.step_in_epoch)
            .peekable();
        load_next(&mut net, &dataset, chunks.peek().map(|c| c.1), &mut batch)?;
        while let Some((step, chunk)) = chunks.next() {
            net.train_step_loaded()?;
            load_next(&mut net, &dataset, chunks.peek().map(|c| c.1), &mut batch)?;
            let loss = net.loss()?;
            if !loss.is_finite() {
                bar.abandon();
                return Err(Error::NonFiniteLoss {
                    loss,
                    epoch: epoch + 1,
                    step: step + 1,
                    last_good: match &last_checkpoint {
                        Some(dir) => format!("the last good checkpoint is {}", dir.display()),
                        None => "no checkpoint was saved yet; try a lower --lr".into(),
                    },
                });
            }
            meta.partial_loss_sum += loss * chunk.len() as f64;
            meta.partial_images += chunk.len();
            meta.step_in_epoch = step + 1;
            bar.inc(chunk.len() as u64);
            bar.set_message(format!(
                "loss {:.6}",
                meta.partial_loss_sum / meta.partial_images as f64
            ));
            if interrupt.load(Ordering::SeqCst)
                && step + 1 < order.len().div_ceil(config.batch_size)
            {
                bar.abandon();
                report.last_checkpoint = save(&mut net, &meta)?;
                report.interrupted = true;
                return Ok(report);
            }
        }
        bar.finish_and_clear();
        let train_loss = meta.partial_loss_sum / meta.partial_images.max(1) as f64;
        let val_loss = if validation.is_empty() {
            None
        } else {
            Some(evaluate(&mut net, &dataset, &validation, &mut batch)?)
        };
        let seconds = started.elapsed().as_secs_f64();
        meta.epoch = epoch + 1;
        meta.step_in_epoch = 0;
        meta.partial_loss_sum = 0.0;
        meta.partial_images = 0;
        history.push(format!(
            "{},{train_loss:.8},{},{seconds:.3}",
            epoch + 1,
            val_loss.map_or(String::new(), |v| format!("{v:.8}"))
        ));
        atomic::write_file(&history_path, history_text(&history).as_bytes())?;
        plot_history(&config.out_dir, false)?;
        say(format!(
            "epoch {}/{}  train_loss {train_loss:.6}  val_loss {}  {seconds:.1} s  {:.1} images/s",
            epoch + 1,
            first_epoch + config.epochs,
            val_loss.map_or("-".into(), |v| format!("{v:.6}")),
            train.len() as f64 / seconds
        ));
        report.epochs_completed = meta.epoch;
        report.train_loss = Some(train_loss);
        report.val_loss = val_loss;
        let last = epoch + 1 == first_epoch + config.epochs;
        if last || (epoch + 1) % config.save_every == 0 || interrupt.load(Ordering::SeqCst) {
            let dir = save(&mut net, &meta)?;
            last_checkpoint = Some(dir.clone());
            report.last_checkpoint = dir;
            if interrupt.load(Ordering::SeqCst) && !last {
                report.interrupted = true;
                return Ok(report);
            }
        }
    }
    Ok(report)
}

/// (epoch, training loss, validation loss) of every row of a run's history.csv.
pub fn read_history(run: &Path) -> Result<Vec<(usize, f64, Option<f64>)>> {
    let path = run.join(HISTORY_FILE);
    let text = fs::read_to_string(&path).map_err(Error::io(&path))?;
    text.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let parsed = (|| {
                let epoch = fields.first()?.parse().ok()?;
                let train = fields.get(1)?.parse().ok()?;
                let val = fields.get(2).and_then(|v| v.parse().ok());
                Some((epoch, train, val))
            })();
            parsed.ok_or_else(|| Error::BadCheckpoint {
                path: path.clone(),
                reason: format!("history row \"{line}\" is not epoch,train_loss,val_loss,seconds"),
            })
        })
        .collect()
}

/// Draws a run's loss.png (training and validation loss per epoch) from its history.csv.
pub fn plot_history(run: &Path, log_scale: bool) -> Result<PathBuf> {
    let path = run.join(LOSS_PLOT);
    crate::figures::loss_curve(&read_history(run)?, log_scale, &path)?;
    Ok(path)
}

fn history_text(rows: &[String]) -> String {
    let mut text = format!("{HISTORY_HEADER}\n");
    for row in rows {
        text += row;
        text.push('\n');
    }
    text
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
