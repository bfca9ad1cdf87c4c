//! The model built into whorl: `models/synthetic-adam-224/`, trained by whorl on its synthetic
//! default data (its MODEL.md says how), used by `eval`, `reconstruct` and `gradcam` when no
//! `--model` is given.

use std::path::Path;

use crate::checkpoint::{self, Weights};
use crate::error::Result;
use crate::model::Architecture;

/// The bundled model's name.
pub const NAME: &str = "synthetic-adam-224";

/// Fingers of the synthetic default it trained on (numbers 0 to 335, optical impressions);
/// prints of later fingers are ones it never saw.
pub const TRAINING_FINGERS: usize = 336;

/// Where its files are in the repository; errors name it.
pub const DIR: &str = "models/synthetic-adam-224";

const META: &str = include_str!("../models/synthetic-adam-224/checkpoint.json");
const WEIGHTS: &[u8] = include_bytes!("../models/synthetic-adam-224/weights.safetensors");

/// One line saying that the bundled model is in use, and how to use another.
pub fn notice() -> String {
    format!(
        "model: the bundled model {NAME} (trained by whorl on synthetic prints, see {DIR}/MODEL.md; \
         --model to use another)"
    )
}

/// The bundled model's description and weights, checked as any checkpoint is.
pub fn load(architecture: &Architecture) -> Result<Weights> {
    checkpoint::weights_from_bytes(META, WEIGHTS, Path::new(DIR), architecture)
}
