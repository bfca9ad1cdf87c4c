//! `whorl train` end to end: resume equivalence, checkpoints, Ctrl-C, NaN, and bad input.

mod common;

use common::{path, text, whorl};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use whorl::backend::{Adam, Optimizer};
use whorl::checkpoint::resolve_checkpoint;
use whorl::checkpoint::{self, Checkpoint, CheckpointMeta};
use whorl::model::Architecture;

/// An error of bad input: exit status 1 (not a panic's 101) and a one-line message containing
/// every needle.
fn assert_user_error(output: &Output, needles: &[&str]) {
    assert_error(output, 1, needles);
}

/// An error of a bad flag: exit status 2, as clap gives for its own usage errors.
fn assert_flag_error(output: &Output, needles: &[&str]) {
    assert_error(output, 2, needles);
}

fn assert_error(output: &Output, status: i32, needles: &[&str]) {
    let message = text(output);
    assert_eq!(output.status.code(), Some(status), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    let errors = message.lines().filter(|l| l.starts_with("error")).count();
    assert_eq!(errors, 1, "not one error line: {message}");
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
    let files = [checkpoint::WEIGHTS_FILE, checkpoint::OPTIMIZER_FILE];
    assert_two_more_epochs_match(&straight, &split, &files);
    assert_eq!(history_losses(&split).len(), 5, "header and four epochs");
}

#[test]
fn winograd_4x4_tiles_train_to_nearly_the_same_losses() {
    // The same run by F(2x2, 3x3) and by F(4x4, 3x3): other roundings, so other weights, but
    // losses within 1e-4 of each other after two epochs.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 11, 20);
    let run = |tile: &str| {
        let run = dir.path().join(tile);
        let output = small_run(
            &data,
            &run,
            "2",
            &["--device", "cpu", "--winograd-tile", tile],
        );
        assert!(output.status.success(), "{}", text(&output));
        let weights = read(
            run.join("checkpoints/epoch-0002")
                .join(checkpoint::WEIGHTS_FILE),
        );
        (history_losses(&run), weights)
    };
    let ((losses_2x2, weights_2x2), (losses_4x4, weights_4x4)) = (run("2x2"), run("4x4"));
    assert!(
        weights_2x2 != weights_4x4,
        "--winograd-tile 4x4 changed nothing"
    );
    let values = |line: &str| -> Vec<f64> {
        line.split(',')
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect()
    };
    for (two, four) in losses_2x2.iter().zip(&losses_4x4).skip(1) {
        for (a, b) in values(two).into_iter().zip(values(four)) {
            assert!((a - b).abs() <= 1e-4 * a.abs(), "{two} against {four}");
        }
    }
}

/// Resumes `split` (trained 2 epochs) for 2 more and checks that its epoch-4 `files` and its
/// loss history are those of `straight`, trained 4 epochs in one go.
fn assert_two_more_epochs_match(straight: &Path, split: &Path, files: &[&str]) {
    let resumed = whorl(&["train", "--resume", path(split), "--epochs", "2", "--quiet"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    for file in files {
        let a = read(straight.join("checkpoints/epoch-0004").join(file));
        let b = read(split.join("checkpoints/epoch-0004").join(file));
        assert!(a == b, "{file} differs between 4 epochs and 2 + 2");
    }
    assert_eq!(history_losses(straight), history_losses(split));
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
    let files = [checkpoint::WEIGHTS_FILE, checkpoint::ADAM_FILE];
    assert_two_more_epochs_match(&straight, &split, &files);

    let (half, whole) = (
        split.join("checkpoints/epoch-0002"),
        split.join("checkpoints/epoch-0004"),
    );
    assert!(!whole.join(checkpoint::OPTIMIZER_FILE).exists());
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
    assert_flag_error(
        &train(&["--data", path(&data), "--size", "18"]),
        &["--size", "18x18"],
    );
    let crop = train(&["--data", path(&data), "--crop", "18"]);
    assert_flag_error(&crop, &["--crop", "18x18"]);
    assert!(!text(&crop).contains("--size"), "{}", text(&crop));
    assert_flag_error(
        &train(&["--data", path(&data), "--device", "cuda"]),
        &["--device"],
    );
    assert_flag_error(
        &train(&["--data", path(&data), "--batch-size", "0"]),
        &["--batch-size"],
    );
    assert_flag_error(&train(&["--data", path(&data), "--lr=0"]), &["--lr"]);
    assert_flag_error(
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
fn an_unreadable_image_suggests_skip_bad_only_to_commands_that_have_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 3, 16);
    let broken = data.join("broken.png");
    std::fs::write(&broken, b"\x89PNG but not really").unwrap();
    let figure = dir.path().join("figure.png");
    // The bundled model: nothing to train first.
    let run = |command: &str, extra: &[&str]| {
        let mut args = vec![command, "--device", "cpu"];
        args.extend_from_slice(extra);
        whorl(&args)
    };
    let reconstruct = |extra: &[&str]| {
        let mut args = vec![
            "--data",
            path(&data),
            "--out",
            path(&figure),
            "--count",
            "2",
        ];
        args.extend_from_slice(extra);
        run("reconstruct", &args)
    };
    assert_user_error(&reconstruct(&[]), &["broken.png", "--skip-bad"]);
    let skipped = reconstruct(&["--skip-bad"]);
    assert!(skipped.status.success(), "{}", text(&skipped));
    assert!(text(&skipped).contains("warning: skipped") && text(&skipped).contains("broken.png"));
    assert!(figure.exists());

    let eval = run(
        "eval",
        &["--data", path(&data), "--no-identity", "--skip-bad"],
    );
    assert!(eval.status.success(), "{}", text(&eval));
    assert!(text(&eval).contains("warning: skipped") && text(&eval).contains("broken.png"));

    // One image, no folder to skip it in: the error names the file and no flag.
    let gradcam = run(
        "gradcam",
        &[
            "--image",
            path(&broken),
            "--out",
            path(&dir.path().join("g.png")),
        ],
    );
    assert_user_error(&gradcam, &["broken.png", "unreadable image"]);
    assert!(!text(&gradcam).contains("--skip-bad"), "{}", text(&gradcam));
}

#[test]
fn an_output_that_cannot_be_written_fails_before_the_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 2, 16);
    // A file where the outputs' folder should be: no output below it can be written.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let inside = |name: &str| path(&blocker.join(name)).to_string();
    let (json, png) = (inside("scores.json"), inside("figure.png"));
    let eval = whorl(&[
        "eval",
        "--device",
        "cpu",
        "--data",
        path(&data),
        "--out",
        &json,
    ]);
    assert_user_error(&eval, &["blocker"]);
    assert!(
        !text(&eval).contains("SSIM"),
        "scored first: {}",
        text(&eval)
    );
    let image = path(&data.join("print-000.png")).to_string();
    for output in [
        whorl(&[
            "reconstruct",
            "--device",
            "cpu",
            "--data",
            path(&data),
            "--out",
            &png,
        ]),
        whorl(&[
            "gradcam", "--device", "cpu", "--image", &image, "--out", &png,
        ]),
    ] {
        assert_user_error(&output, &["blocker"]);
        assert!(
            !text(&output).contains("model:"),
            "loaded first: {}",
            text(&output)
        );
    }
    let bench = whorl(&[
        "bench",
        "--device",
        "cpu",
        "--batch-size",
        "1",
        "--size",
        "8",
        "--repeats",
        "1",
        "--json",
        &json,
    ]);
    assert_user_error(&bench, &["blocker"]);
    assert!(
        !text(&bench).contains("training step"),
        "timed first: {}",
        text(&bench)
    );
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
        "--precision",
        "bf16 (tensor cores",
        "--winograd-tile",
        "4x4 (1/4 of them",
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
    assert_flag_error(
        &synth(&["--sensor", "ultrasonic"]),
        &["--sensor", "optical, capacitive"],
    );
    assert_flag_error(&synth(&["--size", "10x10"]), &["--size"]);
    assert_flag_error(&synth(&["--size", "wide"]), &["--size", "WxH"]);
    assert_flag_error(&synth(&["--fingers", "0"]), &["--fingers"]);
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
    assert_flag_error(&run("cuda:x"), &["--device", "cuda:x"]);
    assert!(
        report.contains("FP32"),
        "the CPU says it computes in FP32: {report}"
    );
    let precision = whorl(&["bench", "--device", "cpu", "--precision", "bf8"]);
    assert_flag_error(&precision, &["--precision", "bf8"]);
    let tile = whorl(&["bench", "--device", "cpu", "--winograd-tile", "3x3"]);
    assert_flag_error(&tile, &["--winograd-tile", "3x3"]);
    let huge = whorl(&[
        "bench",
        "--device",
        "cpu",
        "--batch-size",
        "18446744073709551615",
    ]);
    assert_flag_error(&huge, &["--batch-size", "memory"]);
    let no_repeats = whorl(&["bench", "--device", "cpu", "--repeats", "0"]);
    assert_flag_error(&no_repeats, &["--repeats", "at least 1"]);
    assert_flag_error(
        &run("tpu"),
        &["--device", "expected cpu, cuda, cuda:N or auto"],
    );
    if no_driver {
        assert_flag_error(
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

/// Starts a long training run on `data` into `run` and waits until its first epoch is in the
/// history (so it holds the run folder's lock and is between steps).
#[cfg(unix)]
fn start_long_run(data: &Path, run: &Path) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_whorl"))
        .args(["train", "--data", path(data), "--out", path(run)])
        .args(["--size", "16", "--batch-size", "2", "--epochs", "100000"])
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while history_losses_count(run) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no epoch finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[cfg(unix)]
#[test]
fn a_second_run_on_a_busy_run_folder_is_refused_and_sigterm_saves_and_exits_143_even_when_repeated()
{
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 8, 16);
    let run = dir.path().join("run");
    let mut first = start_long_run(&data, &run);
    let pid = first.id().to_string();

    let second = small_run(&data, &run, "1", &["--overwrite"]);
    assert_user_error(&second, &["run folder in use", &format!("PID {pid}")]);

    // Twice, as GNU timeout does (the job, then its process group): still a saved checkpoint.
    let killed = Command::new("kill")
        .args(["-TERM", &pid, &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(first.wait().unwrap().code(), Some(143));
    let saved = resolve_checkpoint(&run).unwrap();
    assert!(checkpoint::load(&saved, &Architecture::reference()).is_ok());
    // The lock went with the process: the run folder can be continued now.
    let resumed = whorl(&["train", "--resume", path(&run), "--epochs", "1", "--quiet"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
}

#[test]
fn a_new_run_refuses_a_run_folder_holding_checkpoints_unless_told_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 6, 16);
    let run = dir.path().join("run");
    assert!(
        small_run(&data, &run, "3", &["--save-every", "1"])
            .status
            .success()
    );

    let again = small_run(&data, &run, "1", &[]);
    assert_user_error(
        &again,
        &["already holds checkpoints", "epoch-0003", "--overwrite"],
    );
    // Resuming from an earlier checkpoint would leave the later ones mixed in.
    let early = run.join("checkpoints/epoch-0001");
    let branch = whorl(&["train", "--resume", path(&early), "--epochs", "1"]);
    assert_user_error(&branch, &["epoch-0003", "--overwrite"]);

    let replaced = small_run(&data, &run, "1", &["--overwrite"]);
    assert!(replaced.status.success(), "{}", text(&replaced));
    let names: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["epoch-0001"]);
    assert_eq!(
        history_losses(&run).len(),
        2,
        "header and the new run's epoch"
    );
}

#[test]
fn a_huge_learning_rate_saves_no_checkpoint_of_nan_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 9, 16);
    let run = dir.path().join("run");
    let output = small_run(&data, &run, "1", &["--lr", "1e30"]);
    assert_user_error(&output, &["became", "no checkpoint was saved yet"]);
    assert!(resolve_checkpoint(&run).is_err());

    // A checkpoint that already holds NaN (from an older whorl) is refused, never resumed.
    let arch = Architecture::reference();
    let mut params = arch.glorot_uniform(1);
    params[5] = f32::NAN;
    let poisoned = dir.path().join("poisoned/checkpoints/epoch-0001");
    let checkpoint = Checkpoint {
        meta: CheckpointMeta::new(&arch),
        params,
        velocity: vec![0.0; arch.param_count()],
        momentum: Vec::new(),
    };
    checkpoint::save(&poisoned, &arch, &checkpoint).unwrap();
    let output = whorl(&["train", "--resume", path(&poisoned), "--data", path(&data)]);
    assert_user_error(&output, &["weights.safetensors", "NaN"]);
}

/// Writes a checkpoint whose checkpoint.json has `field` set to the JSON `value`.
fn checkpoint_with(dir: &Path, field: &str, value: &str) -> PathBuf {
    let arch = Architecture::reference();
    let mut meta = CheckpointMeta::new(&arch);
    meta.input_size = 16;
    meta.batch_size = 3;
    let saved = dir.join(format!("{field}/checkpoints/epoch-0000"));
    let checkpoint = Checkpoint {
        meta,
        params: arch.glorot_uniform(1),
        velocity: vec![0.0; arch.param_count()],
        momentum: Vec::new(),
    };
    checkpoint::save(&saved, &arch, &checkpoint).unwrap();
    let meta_path = saved.join(checkpoint::META_FILE);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    json[field] = serde_json::from_str(value).unwrap();
    std::fs::write(&meta_path, json.to_string()).unwrap();
    saved
}

#[test]
fn hostile_sizes_and_checkpoint_values_are_one_line_errors_naming_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 4, 16);
    let out = dir.path().join("out");
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--data", path(&data), "--out", path(&out)];
        args.extend_from_slice(&["--epochs", "1", "--quiet"]);
        args.extend_from_slice(extra);
        whorl(&args)
    };
    assert_flag_error(
        &train(&["--batch-size", "18446744073709551615", "--size", "16"]),
        &["--batch-size", "memory"],
    );
    assert_flag_error(&train(&["--size", "40000"]), &["--size", "memory"]);
    assert_flag_error(&train(&["--epochs", "18446744073709551615"]), &["--epochs"]);

    for (field, value, needle) in [
        ("input_size", "1000000000", "input_size"),
        ("input_size", "18", "input_size"),
        ("epoch", "18446744073709551615", "epoch"),
        ("learning_rate", "-1.0", "learning_rate"),
        ("batch_size", "0", "batch_size"),
        ("val_split", "7.0", "val_split"),
        ("partial_images", "5", "partial_images"),
    ] {
        let saved = checkpoint_with(dir.path(), field, value);
        let output = whorl(&["train", "--resume", path(&saved), "--data", path(&data)]);
        assert_user_error(&output, &["checkpoint.json", needle]);
        assert!(
            !text(&output).contains("--"),
            "names a flag: {}",
            text(&output)
        );
        let eval = whorl(&["eval", "--model", path(&saved), "--data", path(&data)]);
        assert_eq!(eval.status.code(), Some(1), "{}", text(&eval));
    }
    // A batch size that cannot fit names the checkpoint's field, or the flag that set it.
    let big = checkpoint_with(dir.path(), "batch_size", "1000000000000");
    let output = whorl(&["train", "--resume", path(&big), "--data", path(&data)]);
    assert_user_error(&output, &["checkpoint.json", "batch_size", "memory"]);
    let output = whorl(&[
        "train",
        "--resume",
        path(&big),
        "--data",
        path(&data),
        "--batch-size",
        "2",
        "--epochs",
        "1",
        "--quiet",
    ]);
    assert!(output.status.success(), "{}", text(&output));
}

#[test]
fn counts_that_would_do_nothing_or_overflow_are_errors_not_silent_success() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prints");
    let synth = |extra: &[&str]| {
        let mut args = vec!["synth", "--out", path(&out)];
        args.extend_from_slice(extra);
        whorl(&args)
    };
    assert_flag_error(
        &synth(&["--first-finger", "18446744073709551610", "--fingers", "10"]),
        &["--first-finger"],
    );
    assert_flag_error(
        &synth(&["--fingers", "18446744073709551610", "--impressions", "10"]),
        &["--fingers"],
    );
    assert_flag_error(&synth(&["--impressions", "0"]), &["--impressions"]);
    assert!(!out.exists(), "nothing is written for a bad count");
    let output = Command::new(env!("CARGO_BIN_EXE_whorl"))
        .args(["train", "--synth-fingers", "0", "--out", path(&out)])
        .env("WHORL_CACHE", dir.path().join("cache"))
        .output()
        .unwrap();
    assert_flag_error(&output, &["--synth-fingers"]);
}

#[cfg(unix)]
#[test]
fn paths_that_are_not_utf8_are_stored_and_printed_lossily() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join(OsStr::from_bytes(b"prints-\xff"));
    common::write_striped_images(&data, 6, 16);
    std::fs::rename(
        data.join("print-000.png"),
        data.join(OsStr::from_bytes(b"odd-\xfe.png")),
    )
    .unwrap();
    let run = dir.path().join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_whorl"))
        .args([
            "train", "--size", "16", "--epochs", "1", "--quiet", "--data",
        ])
        .arg(&data)
        .args(["--out", path(&run)])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let meta = checkpoint::load(
        &resolve_checkpoint(&run).unwrap(),
        &Architecture::reference(),
    )
    .unwrap()
    .meta;
    assert!(meta.data_dir.to_string_lossy().ends_with("prints-\u{fffd}"));

    let scores = dir.path().join("scores");
    let output = Command::new(env!("CARGO_BIN_EXE_whorl"))
        .args([
            "eval",
            "--model",
            path(&run),
            "--out",
            path(&scores),
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let json = std::fs::read_to_string(scores.with_extension("json")).unwrap_or_default()
        + &std::fs::read_to_string(&scores).unwrap_or_default();
    assert!(json.contains("odd-\u{fffd}.png"), "{json}");
}

#[test]
fn a_failed_loss_curve_is_a_warning_and_stale_staging_is_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 6, 16);
    let run = dir.path().join("run");
    // A folder where loss.png goes cannot be replaced by the drawing.
    std::fs::create_dir_all(run.join("loss.png/in-the-way")).unwrap();
    // Left by a process that no longer runs (no PID is this large).
    let stale = run.join("checkpoints/.epoch-0001.partial-2147483647");
    std::fs::create_dir_all(&stale).unwrap();
    let output = small_run(&data, &run, "1", &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("warning: loss curve not drawn"));
    assert!(resolve_checkpoint(&run).unwrap().ends_with("epoch-0001"));
    assert!(!stale.exists());
}

#[test]
fn a_malformed_history_is_its_own_error_not_a_bad_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("history.csv"),
        "epoch,train_loss,val_loss,seconds\n1,0.5,0.4,1.0\nfoo,bar\n",
    )
    .unwrap();
    let output = whorl(&["plot-history", path(dir.path())]);
    assert_user_error(
        &output,
        &["history.csv, line 3", "not a readable training history"],
    );
    assert!(!text(&output).contains("checkpoint"));
}

#[test]
fn a_run_folder_inside_the_data_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 4, 16);
    let output = small_run(&data, &data.join("run"), "1", &[]);
    assert_flag_error(&output, &["--out", "inside the --data folder"]);
    assert!(!data.join("run").exists());
}

#[test]
fn synth_removes_staging_files_of_dead_processes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("prints");
    std::fs::create_dir_all(&out).unwrap();
    let stale = out.join(".f00000_0.bmp.partial-2147483647");
    std::fs::write(&stale, b"half an image").unwrap();
    let output = whorl(&[
        "synth",
        "--out",
        path(&out),
        "--fingers",
        "1",
        "--impressions",
        "1",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(!stale.exists());
}

#[test]
fn a_run_on_crops_trains_at_the_images_own_resolution_and_keeps_its_crops_when_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 6, 40);
    let run = dir.path().join("run");
    let output = whorl(&[
        "train",
        "--data",
        path(&data),
        "--out",
        path(&run),
        "--crop",
        "16",
        "--augment",
        "zoom",
        "--batch-size",
        "3",
        "--epochs",
        "1",
        "--device",
        "cpu",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("at their own resolution, 16x16 crops"));
    let meta = saved_meta(&run.join("checkpoints/epoch-0001"));
    assert!(meta.crop && meta.input_size == 16);

    // Reconstructed at the prints' own 40x40, not resized to the 16-pixel windows.
    let saved = dir.path().join("reconstructions");
    let figure = dir.path().join("figure.png");
    common::whorl_ok(&[
        "reconstruct",
        "--model",
        path(&run),
        "--data",
        path(&data),
        "--out",
        path(&figure),
        "--save-dir",
        path(&saved),
        "--device",
        "cpu",
    ]);
    let one = image::open(saved.join("print-000.png")).unwrap();
    assert_eq!((one.width(), one.height()), (40, 40));

    // Grad-CAM of a 40 x 20 print shows the print, not its padded square canvas: the heat
    // map's panel (jet colours, never white) is 192 x 96 at its tile's top left, white below.
    let wide = dir.path().join("wide.png");
    image::imageops::crop_imm(&one.to_luma8(), 0, 0, 40, 20)
        .to_image()
        .save(&wide)
        .unwrap();
    let cam = dir.path().join("cam.png");
    let grad_cam = |image: &std::path::Path| {
        common::whorl_ok(&[
            "gradcam",
            "--model",
            path(&run),
            "--image",
            path(image),
            "--layer",
            "conv4",
            "--out",
            path(&cam),
            "--device",
            "cpu",
        ]);
        image::open(&cam).unwrap().to_rgb8()
    };
    // The heat panel's tile starts at (110 + 192 + 8, 34 + 18) (figures::panel_grid).
    let (x, y) = (310 + 96, 52);
    let white = image::Rgb([255u8, 255, 255]);
    let wide_cam = grad_cam(&wide);
    assert_ne!(
        *wide_cam.get_pixel(x, y + 48),
        white,
        "the map's upper half"
    );
    assert_eq!(
        *wide_cam.get_pixel(x, y + 144),
        white,
        "below a 40 x 20 map"
    );
    let square_cam = grad_cam(&data.join("print-000.png"));
    assert_ne!(
        *square_cam.get_pixel(x, y + 144),
        white,
        "a square map fills its tile"
    );

    let resume = |flag: &str, value: &str| {
        whorl(&[
            "train",
            "--resume",
            path(&run),
            flag,
            value,
            "--epochs",
            "1",
        ])
    };
    assert_flag_error(&resume("--size", "16"), &["--size", "16x16 crops"]);
    assert_flag_error(&resume("--crop", "24"), &["--crop", "24", "16"]);
    assert!(resume("--crop", "16").status.success());

    let whole = dir.path().join("whole");
    assert!(small_run(&data, &whole, "1", &[]).status.success());
    assert_flag_error(
        &whorl(&["train", "--resume", path(&whole), "--crop", "16"]),
        &["--crop", "whole images"],
    );
    assert_flag_error(
        &whorl(&[
            "train",
            "--data",
            path(&data),
            "--crop",
            "16",
            "--size",
            "16",
        ]),
        &["--crop", "--size"],
    );
}
