//! `whorl train` end to end: resume equivalence, checkpoints, Ctrl-C, NaN, and bad input.

mod common;

use common::{path, text, whorl};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use whorl::backend::{Adam, Optimizer};
use whorl::checkpoint::{self, Checkpoint, CheckpointMeta};
use whorl::model::Architecture;
use whorl::train::resolve_checkpoint;

/// A user error: exit status 1 (not a panic's 101) and a message containing every needle.
fn assert_user_error(output: &Output, needles: &[&str]) {
    let message = text(output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    for needle in needles {
        assert!(
            message.contains(needle),
            "expected {needle:?} in: {message}"
        );
    }
}

fn small_run(data: &Path, out: &Path, epochs: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        path(data),
        "--out",
        path(out),
        "--size",
        "16",
        "--batch-size",
        "3",
        "--epochs",
        epochs,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    whorl(&args)
}

fn history_losses(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("history.csv"))
        .unwrap()
        .lines()
        .map(|line| line.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

#[test]
fn two_epochs_then_two_more_equal_four_in_one_go() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 11, 20);
    let (straight, split) = (dir.path().join("straight"), dir.path().join("split"));
    assert!(small_run(&data, &straight, "4", &[]).status.success());
    assert!(small_run(&data, &split, "2", &[]).status.success());
    forget_the_optimizer(&split.join("checkpoints/epoch-0002"));
    let resumed = whorl(&[
        "train",
        "--resume",
        path(&split),
        "--epochs",
        "2",
        "--quiet",
    ]);
    assert!(resumed.status.success(), "{}", text(&resumed));

    for file in [checkpoint::WEIGHTS_FILE, checkpoint::OPTIMIZER_FILE] {
        let a = read(straight.join("checkpoints/epoch-0004").join(file));
        let b = read(split.join("checkpoints/epoch-0004").join(file));
        assert!(a == b, "{file} differs between 4 epochs and 2 + 2");
    }
    assert_eq!(history_losses(&straight), history_losses(&split));
    assert_eq!(history_losses(&split).len(), 5, "header and four epochs");
}

/// Makes a checkpoint look as one written before Adam: no optimizer or iteration count.
fn forget_the_optimizer(checkpoint_dir: &Path) {
    let meta_path = checkpoint_dir.join(checkpoint::META_FILE);
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    let fields = meta.as_object_mut().unwrap();
    assert!(fields.remove("optimizer").is_some() && fields.remove("iterations").is_some());
    std::fs::write(&meta_path, meta.to_string()).unwrap();
}

fn saved_meta(checkpoint_dir: &Path) -> CheckpointMeta {
    let text = std::fs::read_to_string(checkpoint_dir.join(checkpoint::META_FILE)).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn adam_resumes_exactly_and_refuses_another_optimizer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 11, 20);
    let (straight, split) = (dir.path().join("straight"), dir.path().join("split"));
    let adam = ["--optimizer", "adam"];
    assert!(small_run(&data, &straight, "4", &adam).status.success());
    assert!(small_run(&data, &split, "2", &adam).status.success());
    let resumed = whorl(&[
        "train",
        "--resume",
        path(&split),
        "--epochs",
        "2",
        "--quiet",
    ]);
    assert!(resumed.status.success(), "{}", text(&resumed));

    let (half, whole) = (
        split.join("checkpoints/epoch-0002"),
        split.join("checkpoints/epoch-0004"),
    );
    for file in [checkpoint::WEIGHTS_FILE, checkpoint::ADAM_FILE] {
        let a = read(straight.join("checkpoints/epoch-0004").join(file));
        let b = read(whole.join(file));
        assert!(a == b, "{file} differs between 4 epochs and 2 + 2");
    }
    assert!(!whole.join(checkpoint::OPTIMIZER_FILE).exists());
    assert_eq!(history_losses(&straight), history_losses(&split));
    let meta = saved_meta(&whole);
    assert_eq!(meta.optimizer, Optimizer::Adam(Adam::default()));
    assert!(meta.iterations > 0 && meta.iterations == 2 * saved_meta(&half).iterations);

    let output = whorl(&[
        "train",
        "--resume",
        path(&whole),
        "--optimizer",
        "rmsprop",
        "--epochs",
        "1",
        "--quiet",
    ]);
    assert_user_error(
        &output,
        &["epoch-0004", "--optimizer adam", "--optimizer rmsprop"],
    );
    assert_eq!(text(&output).trim().lines().count(), 1, "{}", text(&output));
}

#[test]
fn checkpoints_round_trip_and_refuse_other_models() {
    let dir = tempfile::tempdir().unwrap();
    let arch = Architecture::reference();
    let mut meta = CheckpointMeta::new(&arch);
    meta.epoch = 7;
    let saved = Checkpoint {
        meta,
        params: arch.glorot_uniform(1),
        velocity: common::random(arch.param_count(), 0.0, 1e-3, 2),
        momentum: Vec::new(),
    };
    let ckpt = dir.path().join("run/checkpoints/epoch-0007");
    checkpoint::save(&ckpt, &arch, &saved).unwrap();
    assert_eq!(checkpoint::load(&ckpt, &arch).unwrap(), saved);
    // Saving again over it replaces it whole and leaves no staging folders behind.
    checkpoint::save(&ckpt, &arch, &saved).unwrap();
    let entries = std::fs::read_dir(ckpt.parent().unwrap()).unwrap().count();
    assert_eq!(entries, 1);
    assert_eq!(resolve_checkpoint(&dir.path().join("run")).unwrap(), ckpt);

    // Another architecture.
    let meta_path = ckpt.join(checkpoint::META_FILE);
    let json = std::fs::read_to_string(&meta_path).unwrap();
    std::fs::write(&meta_path, json.replace("conv3x3-128", "conv3x3-256")).unwrap();
    let output = whorl(&["train", "--resume", path(&ckpt), "--epochs", "1"]);
    assert_user_error(&output, &["epoch-0007", "architecture", "conv3x3-256"]);
    std::fs::write(&meta_path, &json).unwrap();

    // Damaged weights.
    std::fs::write(ckpt.join(checkpoint::WEIGHTS_FILE), b"garbage").unwrap();
    let output = whorl(&["train", "--resume", path(&ckpt), "--epochs", "1"]);
    assert_user_error(
        &output,
        &["weights.safetensors", "not a readable whorl checkpoint"],
    );

    // Not a checkpoint at all.
    let output = whorl(&["train", "--resume", path(dir.path()), "--epochs", "1"]);
    assert_user_error(&output, &["neither a checkpoint"]);
}

#[test]
fn bad_input_gives_a_clear_error_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 4, 16);
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let one = dir.path().join("one");
    common::write_striped_images(&one, 1, 16);
    let out = dir.path().join("out");

    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--out", path(&out), "--epochs", "1"];
        args.extend_from_slice(extra);
        whorl(&args)
    };
    assert_user_error(
        &train(&["--data", path(&empty)]),
        &["no images found", "empty"],
    );
    assert_user_error(
        &train(&["--data", path(&one)]),
        &["1 usable images", "at least 2"],
    );
    assert_user_error(
        &train(&["--data", path(&data), "--size", "18"]),
        &["--size", "18x18"],
    );
    assert_user_error(
        &train(&["--data", path(&data), "--device", "cuda"]),
        &["--device"],
    );
    assert_user_error(
        &train(&["--data", path(&data), "--batch-size", "0"]),
        &["--batch-size"],
    );
    assert_user_error(&train(&["--data", path(&data), "--lr=0"]), &["--lr"]);
    assert_user_error(
        &train(&["--data", path(&data), "--val-split", "1.5"]),
        &["--val-split"],
    );
    assert_user_error(
        &train(&["--resume", path(&out.join("missing"))]),
        &["missing"],
    );

    std::fs::write(data.join("zz-broken.bmp"), b"BM not a bitmap").unwrap();
    assert_user_error(
        &train(&["--data", path(&data), "--size", "16"]),
        &["zz-broken.bmp"],
    );
    let skipped = train(&[
        "--data",
        path(&data),
        "--size",
        "16",
        "--skip-bad",
        "--quiet",
    ]);
    assert!(skipped.status.success(), "{}", text(&skipped));
    assert!(text(&skipped).contains("skipped") && text(&skipped).contains("zz-broken.bmp"));
}

#[test]
fn a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 9, 16);
    let run = dir.path().join("run");
    assert!(small_run(&data, &run, "1", &[]).status.success());
    let good = run.join("checkpoints/epoch-0001");
    let before = read(good.join(checkpoint::WEIGHTS_FILE));

    let output = whorl(&[
        "train",
        "--resume",
        path(&run),
        "--epochs",
        "3",
        "--lr",
        "1e30",
    ]);
    assert_user_error(
        &output,
        &["loss became", "last good checkpoint", "epoch-0001"],
    );
    assert_eq!(read(good.join(checkpoint::WEIGHTS_FILE)), before);
    assert_eq!(resolve_checkpoint(&run).unwrap(), good);
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 12, 16);
    let run = dir.path().join("interrupted");
    let mut child = Command::new(env!("CARGO_BIN_EXE_whorl"))
        .args([
            "train",
            "--data",
            path(&data),
            "--out",
            path(&run),
            "--size",
            "16",
        ])
        .args(["--batch-size", "2", "--epochs", "100000", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until at least one epoch is in the history, then press Ctrl-C.
    let started = Instant::now();
    while history_losses_count(&run) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no epoch finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));

    let saved = resolve_checkpoint(&run).unwrap();
    let meta = checkpoint::load(&saved, &Architecture::reference())
        .unwrap()
        .meta;
    let resumed = whorl(&[
        "train",
        "--resume",
        path(&saved),
        "--epochs",
        "1",
        "--quiet",
    ]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    let target = meta.epoch + 1;

    let straight = dir.path().join("straight");
    let output = Command::new(env!("CARGO_BIN_EXE_whorl"))
        .args([
            "train",
            "--data",
            path(&data),
            "--out",
            path(&straight),
            "--size",
            "16",
        ])
        .args([
            "--batch-size",
            "2",
            "--epochs",
            &target.to_string(),
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let name = format!("checkpoints/epoch-{target:04}");
    assert!(
        read(run.join(&name).join(checkpoint::WEIGHTS_FILE))
            == read(straight.join(&name).join(checkpoint::WEIGHTS_FILE)),
        "resuming from {saved:?} did not reproduce the uninterrupted run"
    );
}

fn history_losses_count(run: &Path) -> usize {
    std::fs::read_to_string(run.join("history.csv")).map_or(0, |t| t.lines().count())
}

#[test]
fn help_explains_every_training_flag() {
    let output = whorl(&["train", "--help"]);
    assert!(output.status.success());
    let help = text(&output);
    for flag in [
        "--data",
        "--epochs",
        "--batch-size",
        "--lr",
        "--val-split",
        "--seed",
        "--size",
        "--out",
        "--resume",
        "--save-every",
        "--skip-bad",
        "--device",
        "--optimizer",
        "bilinear",
        "[default: 200]",
    ] {
        assert!(help.contains(flag), "train --help lacks {flag}");
    }
    let summary = whorl(&["summary"]);
    assert!(text(&summary).contains("Total params: 314,625"));
}

#[test]
fn synth_writes_a_data_set_and_names_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prints");
    let output = whorl(&[
        "synth",
        "--out",
        path(&out),
        "--fingers",
        "2",
        "--impressions",
        "2",
        "--size",
        "200x150",
        "--sensor",
        "capacitive",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let mut images: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".bmp"))
        .collect();
    images.sort();
    assert_eq!(
        images,
        [
            "f00000_0.bmp",
            "f00000_1.bmp",
            "f00001_0.bmp",
            "f00001_1.bmp"
        ]
    );
    let first = image::open(out.join(&images[0])).unwrap();
    assert_eq!((first.width(), first.height()), (200, 150));
    assert!(out.join("manifest.json").is_file());

    let synth = |extra: &[&str]| {
        let mut args = vec!["synth", "--out", path(&out)];
        args.extend_from_slice(extra);
        whorl(&args)
    };
    assert_user_error(
        &synth(&["--sensor", "ultrasonic"]),
        &["--sensor", "optical, capacitive"],
    );
    assert_user_error(&synth(&["--size", "10x10"]), &["--size"]);
    assert_user_error(&synth(&["--size", "wide"]), &["--size", "WxH"]);
    assert_user_error(&synth(&["--fingers", "0"]), &["--fingers"]);
    let help = text(&whorl(&["synth", "--help"]));
    assert!(help.contains("optical") && help.contains("capacitive") && help.contains(".bmp"));
}

#[test]
fn train_without_data_generates_and_uses_the_synthetic_default() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run = dir.path().join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_whorl"))
        .args([
            "train",
            "--synth-fingers",
            "4",
            "--synth-impressions",
            "2",
            "--size",
            "32",
        ])
        .args(["--epochs", "1", "--batch-size", "4", "--out", path(&run)])
        .env("WHORL_CACHE", &cache)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("synthetic default"));
    let set = cache.join(format!(
        "synthetic-v{}-seed2000-4x2",
        whorl::synth::GENERATOR_VERSION
    ));
    assert!(set.join("train/manifest.json").is_file() && set.join("test/manifest.json").is_file());
    let meta = checkpoint::load(
        &resolve_checkpoint(&run).unwrap(),
        &Architecture::reference(),
    )
    .unwrap()
    .meta;
    assert!(meta.data_dir.ends_with("train"), "{:?}", meta.data_dir);
    assert!(
        meta.data_dir
            .starts_with(std::fs::canonicalize(&cache).unwrap())
    );
}

#[test]
fn info_and_devices_report_a_missing_gpu_cleanly() {
    let info = whorl(&["info"]);
    assert!(info.status.success(), "{}", text(&info));
    let report = text(&info);
    assert!(
        report.contains("kernels:") && report.contains("CUDA driver:"),
        "{report}"
    );
    let no_driver = report.contains("CUDA driver: none");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 4, 16);
    let run = |device: &str| {
        whorl(&[
            "train",
            "--data",
            path(&data),
            "--out",
            path(&dir.path().join(device)),
            "--size",
            "16",
            "--epochs",
            "1",
            "--device",
            device,
        ])
    };
    assert_user_error(&run("cuda:x"), &["--device", "cuda:x"]);
    assert_user_error(
        &run("tpu"),
        &["--device", "expected cpu, cuda, cuda:N or auto"],
    );
    if no_driver {
        assert_user_error(
            &run("cuda"),
            &["--device", "no CUDA driver", "--device cpu"],
        );
        let auto = run("auto");
        assert!(auto.status.success(), "{}", text(&auto));
        assert!(
            text(&auto).contains("computing on the CPU"),
            "{}",
            text(&auto)
        );
    } else {
        common::skipped(
            "info_and_devices_report_a_missing_gpu_cleanly (no-driver half)",
            "this machine has a CUDA driver",
        );
    }
}
