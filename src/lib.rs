//! whorl: a convolutional autoencoder for fingerprint images, trained on hand-written kernels.
//!
//! The model is data ([`model::Architecture`]); the layer graph ([`graph::Network`]) walks it
//! forward and back and calls a [`backend::Backend`] for every operation.

pub mod atomic;
pub mod augment;
pub mod backend;
pub mod bench;
pub mod bilinear;
pub mod bundled;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod figures;
pub mod gradcam;
pub mod graph;
pub mod history;
#[cfg(feature = "nbis")]
pub mod identity;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod normalize;
pub mod path_text;
pub mod run_folder;
pub mod schedule;
pub mod synth;
pub mod train;

pub use error::{Error, Result};
