//! Checkpoints: a folder holding the weights and the optimizer's state as safetensors (Keras
//! names and layouts: conv1.weight `[3, 3, cin, cout]`, conv1.bias `[cout]`, ...) and a small JSON
//! file saying what produced them. Written to a temporary folder, then renamed into place.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::augment::Augmentation;
use crate::backend::{Optimizer, OptimizerKind};
use crate::error::{Error, Result};
use crate::memory;
use crate::model::Architecture;
use crate::normalize::Normalization;
use crate::schedule::Schedule;

pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const OPTIMIZER_FILE: &str = "rmsprop.safetensors";
/// Adam's state: momentum.conv1.weight ... (m) and velocity.conv1.weight ... (v).
pub const ADAM_FILE: &str = "adam.safetensors";
pub const META_FILE: &str = "checkpoint.json";
const FORMAT: &str = "whorl-checkpoint/1";
/// More epochs than any run reaches; a larger count in checkpoint.json is damage.
pub const MAX_EPOCHS: usize = 1 << 40;

/// What a checkpoint says about the run that wrote it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    pub whorl_version: String,
    pub architecture: String,
    pub parameters: usize,
    pub input_size: usize,
    /// Epochs completed.
    pub epoch: usize,
    /// Batches of the next epoch already trained (non-zero after an interruption).
    pub step_in_epoch: usize,
    /// Sum of the per-image training loss over those batches, and their image count.
    pub partial_loss_sum: f64,
    pub partial_images: usize,
    pub seed: u64,
    pub val_split: f64,
    pub batch_size: usize,
    pub learning_rate: f32,
    #[serde(serialize_with = "crate::path_text::serialize_lossy")]
    pub data_dir: PathBuf,
    /// The optimizer and its hyper-parameters (RMSprop in checkpoints written before Adam).
    #[serde(default)]
    pub optimizer: Optimizer,
    /// Optimizer steps taken (0 in checkpoints written before it was recorded).
    #[serde(default)]
    pub iterations: u64,
    /// The learning-rate schedule (constant in checkpoints written before schedules).
    #[serde(default)]
    pub schedule: Schedule,
    /// The training augmentations (none in checkpoints written before augmentation).
    #[serde(default)]
    pub augment: Vec<Augmentation>,
    /// How images are normalised before the model sees them (none in checkpoints written
    /// before normalisation); evaluation does the same and undoes it on the output.
    #[serde(default)]
    pub normalize: Normalization,
    /// Trained on input_size x input_size windows of images at their own resolution (false in
    /// checkpoints written before cropping): the model is meant for images at their sensor's
    /// resolution, so evaluation reconstructs them so by default.
    #[serde(default)]
    pub crop: bool,
}

impl CheckpointMeta {
    pub fn new(architecture: &Architecture) -> Self {
        CheckpointMeta {
            format: FORMAT.into(),
            whorl_version: env!("CARGO_PKG_VERSION").into(),
            architecture: architecture.signature(),
            parameters: architecture.param_count(),
            input_size: 224,
            epoch: 0,
            step_in_epoch: 0,
            partial_loss_sum: 0.0,
            partial_images: 0,
            seed: 13,
            val_split: 0.2,
            batch_size: 128,
            learning_rate: 1e-3,
            data_dir: PathBuf::new(),
            optimizer: Optimizer::default(),
            iterations: 0,
            schedule: Schedule::default(),
            augment: Vec::new(),
            normalize: Normalization::None,
            crop: false,
        }
    }
}

/// A loaded checkpoint: its description, flat parameters and optimizer state.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub params: Vec<f32>,
    /// RMSprop's or Adam's v.
    pub velocity: Vec<f32>,
    /// Adam's m; empty for RMSprop.
    pub momentum: Vec<f32>,
}

/// The file holding the state of this optimizer.
pub fn optimizer_file(kind: OptimizerKind) -> &'static str {
    match kind {
        OptimizerKind::Rmsprop => OPTIMIZER_FILE,
        OptimizerKind::Adam => ADAM_FILE,
    }
}

/// Float32 tensors by name: name -> (shape, values).
pub type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Every float32 tensor of a safetensors file.
pub fn read_tensors(path: &Path) -> Result<Tensors> {
    tensors_from_bytes(&read_safetensors_bytes(path)?, path)
}

/// The bytes of a safetensors file, refusing one too large to hold in memory.
fn read_safetensors_bytes(path: &Path) -> Result<Vec<u8>> {
    let length = fs::metadata(path).map_err(Error::io(path))?.len();
    memory::check_fits("its bytes", Some(2 * u128::from(length))).map_err(|reason| {
        Error::BadCheckpoint {
            path: path.to_path_buf(),
            reason,
        }
    })?;
    fs::read(path).map_err(Error::io(path))
}

/// Every float32 tensor of the bytes of a safetensors file; `path` names them in errors.
pub fn tensors_from_bytes(bytes: &[u8], path: &Path) -> Result<Tensors> {
    let bad = |reason: String| Error::BadCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            if view.dtype() != Dtype::F32 {
                return Err(bad(format!("tensor {name} is {:?}, not F32", view.dtype())));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok((name, (view.shape().to_vec(), values)))
        })
        .collect()
}

/// Gathers `{prefix}conv1.weight` ... `{prefix}conv6.bias` into the flat parameter layout,
/// checking every name and shape.
pub fn flatten_params(
    architecture: &Architecture,
    tensors: &Tensors,
    prefix: &str,
    path: &Path,
) -> Result<Vec<f32>> {
    let mut flat = vec![0.0; architecture.param_count()];
    for slot in architecture.convs() {
        let parts = [
            ("weight", slot.weight.clone(), slot.weight_shape().to_vec()),
            ("bias", slot.bias.clone(), vec![slot.out_channels]),
        ];
        for (part, range, shape) in parts {
            let name = format!("{prefix}{}.{part}", slot.name);
            let (found_shape, values) = tensors.get(&name).ok_or_else(|| Error::BadCheckpoint {
                path: path.to_path_buf(),
                reason: format!("tensor {name} is missing"),
            })?;
            if *found_shape != shape {
                return Err(Error::BadCheckpoint {
                    path: path.to_path_buf(),
                    reason: format!("tensor {name} has shape {found_shape:?}, expected {shape:?}"),
                });
            }
            flat[range].copy_from_slice(values);
        }
    }
    Ok(flat)
}

/// Writes the flat parameters as Keras-named tensors into a safetensors file.
pub fn write_params(architecture: &Architecture, flat: &[f32], path: &Path) -> Result<()> {
    write_prefixed(architecture, &[("", flat)], path)
}

/// Writes several flat parameter-shaped vectors into one safetensors file, each vector's
/// tensors named `{prefix}conv1.weight` ...
fn write_prefixed(
    architecture: &Architecture,
    parts: &[(&str, &[f32])],
    path: &Path,
) -> Result<()> {
    let mut views = Vec::new();
    for (prefix, flat) in parts {
        let bytes: &[u8] = bytemuck::cast_slice(flat);
        for slot in architecture.convs() {
            let parts = [
                ("weight", slot.weight.clone(), slot.weight_shape().to_vec()),
                ("bias", slot.bias.clone(), vec![slot.out_channels]),
            ];
            for (part, range, shape) in parts {
                let data = &bytes[range.start * 4..range.end * 4];
                let view = TensorView::new(Dtype::F32, shape, data).map_err(|e| Error::Io {
                    path: path.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                views.push((format!("{prefix}{}.{part}", slot.name), view));
            }
        }
    }
    safetensors::serialize_to_file(views, None, path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Saves a checkpoint folder atomically: everything is written to a temporary sibling folder,
/// which is then renamed to `dir`. An existing `dir` is replaced only once the new one is whole.
pub fn save(dir: &Path, architecture: &Architecture, checkpoint: &Checkpoint) -> Result<()> {
    let staging = crate::atomic::staging_path(dir)?;
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(Error::io(&staging))?;
    }
    fs::create_dir(&staging).map_err(Error::io(&staging))?;
    write_params(
        architecture,
        &checkpoint.params,
        &staging.join(WEIGHTS_FILE),
    )?;
    let kind = checkpoint.meta.optimizer.kind();
    let optimizer_path = staging.join(optimizer_file(kind));
    match kind {
        OptimizerKind::Rmsprop => {
            write_params(architecture, &checkpoint.velocity, &optimizer_path)?
        }
        OptimizerKind::Adam => write_prefixed(
            architecture,
            &[
                ("momentum.", &checkpoint.momentum),
                ("velocity.", &checkpoint.velocity),
            ],
            &optimizer_path,
        )?,
    }
    let json = serde_json::to_string_pretty(&checkpoint.meta).expect("metadata serialises");
    let meta_path = staging.join(META_FILE);
    fs::write(&meta_path, json + "\n").map_err(Error::io(&meta_path))?;
    if dir.exists() {
        let retired = staging.with_extension("retired");
        fs::rename(dir, &retired).map_err(Error::io(dir))?;
        fs::rename(&staging, dir).map_err(Error::io(dir))?;
        fs::remove_dir_all(&retired).map_err(Error::io(&retired))
    } else {
        fs::rename(&staging, dir).map_err(Error::io(dir))
    }
}

/// checkpoint.json is a few hundred bytes; one larger than this is not read.
const MAX_META_BYTES: u64 = 1 << 20;

/// The text of a checkpoint.json, refusing a file too large to be one.
fn read_meta_text(path: &Path) -> Result<String> {
    let length = fs::metadata(path).map_err(Error::io(path))?.len();
    if length > MAX_META_BYTES {
        return Err(Error::BadCheckpoint {
            path: path.to_path_buf(),
            reason: format!("{length} bytes, far more than a checkpoint.json holds"),
        });
    }
    fs::read_to_string(path).map_err(Error::io(path))
}

/// Checks every number of a checkpoint.json that training or loading would act on, naming the
/// field that is out of range.
fn check_meta(meta: &CheckpointMeta, architecture: &Architecture) -> Result<(), String> {
    let field = |name: &str, value: &dyn std::fmt::Display, why: &str| {
        Err(format!("field {name} = {value}: {why}"))
    };
    if architecture
        .shapes(meta.input_size, meta.input_size)
        .is_err()
    {
        let factor = architecture.downsampling();
        return field(
            "input_size",
            &meta.input_size,
            &format!("not a positive multiple of {factor}"),
        );
    }
    let one_image = memory::network_bytes(architecture, meta.input_size, 1);
    if let Err(why) = memory::check_fits("images of that size", one_image) {
        return field("input_size", &meta.input_size, &why);
    }
    if meta.parameters != architecture.param_count() {
        let why = format!("the model has {}", architecture.param_count());
        return field("parameters", &meta.parameters, &why);
    }
    if meta.epoch > MAX_EPOCHS {
        return field("epoch", &meta.epoch, "beyond any real run");
    }
    if meta.batch_size == 0 {
        return field("batch_size", &meta.batch_size, "must be at least 1");
    }
    if !(meta.learning_rate > 0.0 && meta.learning_rate.is_finite()) {
        return field(
            "learning_rate",
            &meta.learning_rate,
            "must be a positive number",
        );
    }
    if !(0.0..1.0).contains(&meta.val_split) {
        return field("val_split", &meta.val_split, "not in [0, 1)");
    }
    if !(meta.partial_loss_sum >= 0.0 && meta.partial_loss_sum.is_finite()) {
        return field(
            "partial_loss_sum",
            &meta.partial_loss_sum,
            "must be finite and not negative",
        );
    }
    if (meta.step_in_epoch == 0) != (meta.partial_images == 0) {
        let why = format!("does not match step_in_epoch = {}", meta.step_in_epoch);
        return field("partial_images", &meta.partial_images, &why);
    }
    Ok(())
}

/// What inference needs of a checkpoint: its description and weights, without the optimizer's
/// state.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    pub meta: CheckpointMeta,
    pub params: Vec<f32>,
}

/// Parses and checks the text of a checkpoint.json against `architecture`; `dir` names the
/// checkpoint in errors.
fn parse_meta(text: &str, dir: &Path, architecture: &Architecture) -> Result<CheckpointMeta> {
    let bad = |reason: String| Error::BadCheckpoint {
        path: dir.to_path_buf(),
        reason,
    };
    let meta: CheckpointMeta =
        serde_json::from_str(text).map_err(|e| bad(format!("{META_FILE}: {e}")))?;
    if meta.format != FORMAT {
        return Err(bad(format!(
            "format \"{}\" is not \"{FORMAT}\"",
            meta.format
        )));
    }
    if meta.architecture != architecture.signature() {
        return Err(Error::ArchitectureMismatch {
            path: dir.to_path_buf(),
            found: meta.architecture,
            expected: architecture.signature(),
        });
    }
    check_meta(&meta, architecture).map_err(|reason| Error::BadCheckpoint {
        path: dir.join(META_FILE),
        reason,
    })?;
    Ok(meta)
}

/// Refuses NaN and infinite values, naming the file that holds them.
fn check_finite(values: &[f32], path: &Path) -> Result<()> {
    if values.iter().all(|v| v.is_finite()) {
        return Ok(());
    }
    Err(Error::BadCheckpoint {
        path: path.to_path_buf(),
        reason: "holds NaN or infinite values".into(),
    })
}

/// The flat parameters from the bytes of a weights.safetensors; `dir` names the checkpoint in
/// errors.
fn params_from_bytes(weights: &[u8], dir: &Path, architecture: &Architecture) -> Result<Vec<f32>> {
    let path = dir.join(WEIGHTS_FILE);
    let params = flatten_params(
        architecture,
        &tensors_from_bytes(weights, &path)?,
        "",
        &path,
    )?;
    check_finite(&params, &path)?;
    Ok(params)
}

/// A checkpoint's weights from the text of its checkpoint.json and the bytes of its
/// weights.safetensors (a checkpoint built into the binary); `dir` names it in errors.
pub fn weights_from_bytes(
    meta_text: &str,
    weights: &[u8],
    dir: &Path,
    architecture: &Architecture,
) -> Result<Weights> {
    let meta = parse_meta(meta_text, dir, architecture)?;
    let params = params_from_bytes(weights, dir, architecture)?;
    Ok(Weights { meta, params })
}

/// Loads the description and weights of a checkpoint folder, which is all inference needs: the
/// optimizer's state may be absent.
pub fn load_weights(dir: &Path, architecture: &Architecture) -> Result<Weights> {
    if !dir.is_dir() {
        return Err(Error::BadCheckpoint {
            path: dir.to_path_buf(),
            reason: format!(
                "not a folder (a checkpoint is a folder holding {META_FILE}, {WEIGHTS_FILE} and {OPTIMIZER_FILE} or {ADAM_FILE})"
            ),
        });
    }
    let meta = parse_meta(&read_meta_text(&dir.join(META_FILE))?, dir, architecture)?;
    let weights = read_safetensors_bytes(&dir.join(WEIGHTS_FILE))?;
    let params = params_from_bytes(&weights, dir, architecture)?;
    Ok(Weights { meta, params })
}

/// Loads a checkpoint folder written by [`save`], with its optimizer's state, checking that it
/// fits `architecture`.
pub fn load(dir: &Path, architecture: &Architecture) -> Result<Checkpoint> {
    let Weights { meta, params } = load_weights(dir, architecture)?;
    let optimizer_path = dir.join(optimizer_file(meta.optimizer.kind()));
    let state = read_tensors(&optimizer_path)?;
    let (velocity, momentum) = match meta.optimizer.kind() {
        OptimizerKind::Rmsprop => (
            flatten_params(architecture, &state, "", &optimizer_path)?,
            Vec::new(),
        ),
        OptimizerKind::Adam => (
            flatten_params(architecture, &state, "velocity.", &optimizer_path)?,
            flatten_params(architecture, &state, "momentum.", &optimizer_path)?,
        ),
    };
    check_finite(&velocity, &optimizer_path)?;
    check_finite(&momentum, &optimizer_path)?;
    Ok(Checkpoint {
        meta,
        params,
        velocity,
        momentum,
    })
}

/// The checkpoint folder for `epoch` completed epochs plus `step` batches of the next.
pub fn checkpoint_dir(out_dir: &Path, epoch: usize, step: usize) -> PathBuf {
    let name = if step == 0 {
        format!("epoch-{epoch:04}")
    } else {
        format!("epoch-{epoch:04}-step-{step:05}")
    };
    out_dir.join("checkpoints").join(name)
}

/// The checkpoints of a run folder whose checkpoint.json reads, with (epoch, step in epoch).
pub fn checkpoints_in(run: &Path) -> Vec<((usize, usize), PathBuf)> {
    let Ok(entries) = fs::read_dir(run.join("checkpoints")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|dir| {
            let text = read_meta_text(&dir.join(META_FILE)).ok()?;
            let meta: CheckpointMeta = serde_json::from_str(&text).ok()?;
            Some(((meta.epoch, meta.step_in_epoch), dir))
        })
        .collect()
}

/// A checkpoint folder, or the newest checkpoint of a run folder.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if path.join(META_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    checkpoints_in(path)
        .into_iter()
        .max()
        .map(|(_, dir)| dir)
        .ok_or_else(|| Error::BadCheckpoint {
            path: path.to_path_buf(),
            reason: format!(
                "neither a checkpoint (no {META_FILE}) nor a run folder with checkpoints"
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
