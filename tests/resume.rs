//! Resuming in the middle of an epoch with another batch size, and a run with a learning-rate
//! schedule, augmentation and normalisation: its first step replayed by hand, and its resume.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use clap::ValueEnum;
use whorl::augment::{self, Augmentation};
use whorl::backend::cpu::CpuBackend;
use whorl::backend::{Optimizer, OptimizerKind};
use whorl::checkpoint::{self, Checkpoint};
use whorl::data::{self, Dataset};
use whorl::graph::Network;
use whorl::model::Architecture;
use whorl::normalize::{self, Normalization};
use whorl::schedule::{Schedule, ScheduleKind};
use whorl::train::{TrainConfig, train};

fn config(data: &Path, out: &Path, batch_size: usize) -> TrainConfig {
    TrainConfig {
        data_dir: data.to_path_buf(),
        epochs: 1,
        batch_size,
        learning_rate: 1e-3,
        optimizer: OptimizerKind::Rmsprop,
        schedule: Schedule::default(),
        augment: Vec::new(),
        normalize: Normalization::None,
        val_split: 0.2,
        seed: 13,
        size: 16,
        crop: false,
        out_dir: out.to_path_buf(),
        save_every: 1,
        skip_bad: false,
        overwrite: false,
        verbose: false,
    }
}

fn load(dir: &Path) -> Checkpoint {
    checkpoint::load(dir, &Architecture::reference()).unwrap()
}

#[test]
fn a_mid_epoch_resume_continues_from_the_image_position_whatever_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 12, 16);
    let run = dir.path().join("run");
    // A stop asked for before the first step: one step is trained, then saved.
    let stop = AtomicBool::new(true);
    let first = train(CpuBackend::new(), &config(&data, &run, 4), None, &stop).unwrap();
    assert!(first.interrupted);
    let after_four = load(&first.last_checkpoint);
    assert_eq!(after_four.meta.partial_images, 4);

    let resumed = (first.last_checkpoint.clone(), after_four.clone());
    let second = train(
        CpuBackend::new(),
        &config(&data, &run, 2),
        Some(resumed),
        &stop,
    )
    .unwrap();
    let after_six = load(&second.last_checkpoint);
    assert_eq!(after_six.meta.partial_images, 6);

    // The step taken must be on images 4 and 5 of the epoch's order, not 2 and 3.
    let dataset = Dataset::load(&data, 16, false, false).unwrap();
    let split = data::split(dataset.len(), 0.2, 13, &data).unwrap();
    let order = data::epoch_order(&split.train, 13, 0);
    let mut batch = Vec::new();
    dataset.gather(&order[4..6], &mut batch);
    let arch = Architecture::reference();
    let mut net = Network::new(CpuBackend::new(), arch, 16, 16, 2, &after_four.params).unwrap();
    net.set_velocity(&after_four.velocity).unwrap();
    net.optimizer = Optimizer::new(OptimizerKind::Rmsprop, 1e-3);
    net.train_step(&batch).unwrap();
    assert!(net.params().unwrap() == after_six.params);
}

/// Adam at 1e-3 with a cosine schedule after half an epoch of warm-up, every augmentation and
/// stretched inputs, for two epochs.
fn shaped(data: &Path, out: &Path) -> TrainConfig {
    TrainConfig {
        epochs: 2,
        optimizer: OptimizerKind::Adam,
        schedule: Schedule {
            kind: ScheduleKind::Cosine,
            warmup_epochs: 0.5,
        },
        augment: Augmentation::value_variants().to_vec(),
        normalize: Normalization::Stretch,
        ..config(data, out, 4)
    }
}

#[test]
fn the_first_step_trains_on_normalised_augmented_images_at_the_scheduled_rate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 12, 16);
    let run = dir.path().join("run");
    let config = shaped(&data, &run);
    let first = train(CpuBackend::new(), &config, None, &AtomicBool::new(true)).unwrap();
    let after_one = load(&first.last_checkpoint);
    assert_eq!(after_one.meta.partial_images, 4);

    let mut dataset = Dataset::load(&data, 16, false, false).unwrap();
    normalize::normalize_batch(Normalization::Stretch, &mut dataset.pixels, 256);
    let split = data::split(dataset.len(), 0.2, 13, &data).unwrap();
    let order = data::epoch_order(&split.train, 13, 0);
    let mut batch = Vec::new();
    dataset.gather(&order[..4], &mut batch);
    for (image, &index) in batch.chunks_exact_mut(256).zip(&order[..4]) {
        augment::apply(&config.augment, 13, 0, index, image, 16);
    }
    let arch = Architecture::reference();
    let params = arch.glorot_uniform(13);
    let mut net = Network::new(CpuBackend::new(), arch, 16, 16, 4, &params).unwrap();
    // The first step's rate: a quarter of the warm-up's first half epoch (4 of 9 images).
    let rate = config.schedule.learning_rate(1e-3, 0.0, 4.0 / 9.0, 2);
    assert!((rate - 1e-3 * 8.0 / 9.0).abs() < 1e-9, "{rate}");
    net.optimizer = Optimizer::new(OptimizerKind::Adam, rate);
    net.train_step(&batch).unwrap();
    assert!(net.params().unwrap() == after_one.params);
}

#[test]
fn a_scheduled_augmented_run_interrupted_and_resumed_ends_as_one_straight_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 12, 16);
    let (straight, split) = (dir.path().join("straight"), dir.path().join("split"));
    // A run into `out`, asked to stop at once with `stop`, from `resume` if given.
    let run = |out: &Path, stop: bool, resume| {
        let config = shaped(&data, out);
        train(CpuBackend::new(), &config, resume, &AtomicBool::new(stop)).unwrap()
    };
    let whole = run(&straight, false, None);
    let stopped = run(&split, true, None);
    let saved = load(&stopped.last_checkpoint);
    assert_eq!(saved.meta.schedule, shaped(&data, &split).schedule);
    let resumed = run(&split, false, Some((stopped.last_checkpoint, saved)));
    assert_eq!(resumed.epochs_completed, 2);
    assert!(load(&resumed.last_checkpoint).params == load(&whole.last_checkpoint).params);
    assert_eq!(resumed.val_loss, whole.val_loss);

    // Validation images are never augmented: the recorded loss is the plain stretched images'.
    let mut dataset = Dataset::load(&data, 16, false, false).unwrap();
    normalize::normalize_batch(Normalization::Stretch, &mut dataset.pixels, 256);
    let split_indices = data::split(dataset.len(), 0.2, 13, &data).unwrap();
    let params = load(&whole.last_checkpoint).params;
    let arch = Architecture::reference();
    let mut net = Network::new(CpuBackend::new(), arch, 16, 16, 4, &params).unwrap();
    let loss = whorl::train::mean_loss(
        &mut net,
        &dataset,
        &split_indices.validation,
        None,
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(Some(loss), whole.val_loss);
}
