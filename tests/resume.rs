//! Resuming in the middle of an epoch with another batch size.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use whorl::backend::cpu::CpuBackend;
use whorl::backend::{Optimizer, OptimizerKind};
use whorl::checkpoint::{self, Checkpoint};
use whorl::data::{self, Dataset};
use whorl::graph::Network;
use whorl::model::Architecture;
use whorl::train::{TrainConfig, train};

fn config(data: &Path, out: &Path, batch_size: usize) -> TrainConfig {
    TrainConfig {
        data_dir: data.to_path_buf(),
        epochs: 1,
        batch_size,
        learning_rate: 1e-3,
        optimizer: OptimizerKind::Rmsprop,
        val_split: 0.2,
        seed: 13,
        size: 16,
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
