//! The bundled model: built into the binary as the files in models/ say, it reconstructs the
//! ridges of prints from a sensor and fingers it never saw, and the commands use it when
//! `--model` is left out.

mod common;

use std::path::Path;

use common::{path, text, whorl, whorl_ok};

use whorl::backend::OptimizerKind;
use whorl::backend::cpu::CpuBackend;
use whorl::data::Dataset;
use whorl::model::Architecture;
use whorl::normalize::Normalization;
use whorl::{bundled, checkpoint, evaluate};

/// Two impressions of one finger far from the training set's (0 to 335) on the capacitive
/// sensor, which the bundled model never trained on.
fn unseen_prints(dir: &Path) {
    let config = whorl::synth::SynthConfig {
        fingers: 1,
        impressions: 2,
        first_finger: 5000,
        sensor: whorl::synth::sensor::sensor("capacitive").unwrap().clone(),
        seed: 77,
    };
    whorl::synth::generate(dir, &config, false).unwrap();
}

#[test]
fn the_built_in_model_is_the_one_in_models_and_loads_without_its_optimizer_state() {
    let arch = Architecture::reference();
    let built_in = bundled::load(&arch).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(bundled::DIR);
    assert!(!dir.join(checkpoint::ADAM_FILE).exists());
    assert_eq!(checkpoint::load_weights(&dir, &arch).unwrap(), built_in);
    assert_eq!(built_in.meta.input_size, 224);
    assert_eq!(built_in.meta.optimizer.kind(), OptimizerKind::Adam);
    assert!(checkpoint::load(&dir, &arch).is_err(), "no state to resume");
}

#[test]
fn the_bundled_model_reconstructs_an_unseen_sensor_s_ridges() {
    let dir = tempfile::tempdir().unwrap();
    unseen_prints(dir.path());
    let weights = evaluate::load_weights(None).unwrap();
    let size = weights.meta.input_size;
    let mut net =
        evaluate::network(CpuBackend::new(), &weights, size, evaluate::EVAL_BATCH).unwrap();
    let dataset = Dataset::load(dir.path(), size, false, false).unwrap();
    let report = evaluate::score(
        &mut net,
        &dataset,
        &[0, 1],
        Normalization::None,
        "unseen",
        false,
    )
    .unwrap();
    // The 336 prints of the default unseen-sensor test set score SSIM 0.83 at worst.
    assert!(report.ssim.worst > 0.8, "SSIM {:?}", report.ssim);
}

#[test]
fn eval_reconstruct_and_gradcam_use_the_bundled_model_by_default_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    unseen_prints(&data);
    let scores = dir.path().join("scores.json");
    let output = whorl_ok(&[
        "eval",
        "--data",
        path(&data),
        "--out",
        path(&scores),
        "--no-identity",
        "--device",
        "cpu",
    ]);
    let said = |output: &std::process::Output| {
        let message = text(output);
        let notice = format!("model: the bundled model {}", bundled::NAME);
        assert_eq!(message.matches(&notice).count(), 1, "{message}");
    };
    said(&output);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&scores).unwrap()).unwrap();
    assert!(json[0]["ssim"]["mean"].as_f64().unwrap() > 0.8, "{json}");

    let figure = dir.path().join("recon.png");
    said(&whorl_ok(&[
        "reconstruct",
        "--data",
        path(&data),
        "--out",
        path(&figure),
        "--count",
        "2",
        "--device",
        "cpu",
    ]));
    assert!(image::open(&figure).is_ok());
    let image = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "bmp"))
        .unwrap();
    let cam = dir.path().join("cam.png");
    said(&whorl_ok(&[
        "gradcam",
        "--image",
        path(&image),
        "--out",
        path(&cam),
        "--device",
        "cpu",
    ]));
    assert!(image::open(&cam).is_ok());

    for (args, flag) in [
        (vec!["eval", "--device", "cpu"], "--data"),
        (
            vec![
                "eval",
                "--split",
                "val",
                "--data",
                path(&data),
                "--device",
                "cpu",
            ],
            "--split",
        ),
    ] {
        let output = whorl(&args);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(2), "{message}");
        assert!(!message.contains("panicked"), "{message}");
        assert!(
            message.contains(flag) && message.contains("bundled"),
            "{message}"
        );
    }
}

#[test]
fn native_resolution_scores_and_saves_each_print_at_its_own_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    unseen_prints(&data);
    let scores = dir.path().join("scores.json");
    let saved = dir.path().join("saved");
    let native = ["--native-resolution", "--device", "cpu"];
    let eval = [
        "eval",
        "--no-identity",
        "--data",
        path(&data),
        "--out",
        path(&scores),
    ];
    whorl_ok(&[eval.as_slice(), &native].concat());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&scores).unwrap()).unwrap();
    let ssim = json[0]["ssim"]["mean"].as_f64().unwrap();
    // The default unseen-sensor test set scores 0.741 at its own 256x288.
    assert!(ssim > 0.65, "{json}");
    let figure = dir.path().join("recon.png");
    let args = [
        "reconstruct",
        "--data",
        path(&data),
        "--out",
        path(&figure),
        "--save-dir",
        path(&saved),
    ];
    whorl_ok(&[args.as_slice(), &native].concat());
    let written: Vec<_> = std::fs::read_dir(&saved).unwrap().collect();
    assert_eq!(written.len(), 2);
    for entry in written {
        let entry = entry.unwrap().path();
        let source = data.join(entry.file_stem().unwrap()).with_extension("bmp");
        assert_eq!(
            image::image_dimensions(&entry).unwrap(),
            image::image_dimensions(&source).unwrap()
        );
    }
}
