//! Evaluation, figures and Grad-CAM: scores, PNGs whose panels are not blank, maps that
//! behave, and the demo end to end.

mod common;

use common::{path, whorl_ok as whorl};

use whorl::backend::cpu::CpuBackend;
use whorl::gradcam::{CamMap, conv_layer, grad_cam};
use whorl::graph::Network;
use whorl::model::Architecture;

/// Mean and standard deviation of the gray level inside a rectangle of an RGB image.
fn region_stats(image: &image::RgbImage, x: u32, y: u32, w: u32, h: u32) -> (f64, f64) {
    let values: Vec<f64> = (y..y + h)
        .flat_map(|yy| (x..x + w).map(move |xx| (xx, yy)))
        .map(|(xx, yy)| {
            let p = image.get_pixel(xx, yy);
            (f64::from(p[0]) + f64::from(p[1]) + f64::from(p[2])) / 3.0
        })
        .collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    (mean, var.sqrt())
}

#[test]
fn training_draws_the_loss_curve_and_eval_and_reconstruct_report_and_draw() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    common::write_striped_images(&data, 10, 40);
    let run = dir.path().join("run");
    whorl(&[
        "train",
        "--data",
        path(&data),
        "--out",
        path(&run),
        "--size",
        "32",
        "--epochs",
        "3",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--quiet",
    ]);
    let loss = image::open(run.join("loss.png")).unwrap().to_rgb8();
    assert_eq!(loss.dimensions(), (800, 500));
    let (_, spread) = region_stats(&loss, 0, 0, 800, 500);
    assert!(spread > 10.0, "the loss plot is blank");
    whorl(&["plot-history", path(&run), "--log"]);
    assert!(image::open(run.join("loss.png")).is_ok());

    let scores = dir.path().join("scores.json");
    let output = whorl(&[
        "eval",
        "--model",
        path(&run),
        "--split",
        "val",
        "--data",
        path(&data),
        "--out",
        path(&scores),
        "--device",
        "cpu",
    ]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.contains("validation split of") && table.contains("SSIM"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&scores).unwrap()).unwrap();
    let sets = json.as_array().unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(
        sets[0]["images"].as_array().unwrap().len(),
        2,
        "ceil(10 x 0.2) validation images"
    );
    assert_eq!(sets[1]["images"].as_array().unwrap().len(), 10);
    let ssim = sets[1]["ssim"]["mean"].as_f64().unwrap();
    assert!((-1.0..=1.0).contains(&ssim));
    let csv = std::fs::read_to_string(scores.with_extension("csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 12);

    let figure = dir.path().join("recon.png");
    let saved = dir.path().join("saved");
    whorl(&[
        "reconstruct",
        "--model",
        path(&run),
        "--data",
        path(&data),
        "--out",
        path(&figure),
        "--count",
        "4",
        "--save-dir",
        path(&saved),
        "--device",
        "cpu",
    ]);
    let image = image::open(&figure).unwrap().to_rgb8();
    // Layout: 110 px of labels, 4 tiles of 128 + 8, 8, a 70 px colour bar; a 34 px title,
    // 3 rows of 128 + 18 + 8, 8.
    assert_eq!(
        image.dimensions(),
        (110 + 4 * 136 + 8 + 70, 34 + 3 * 154 + 8)
    );
    for row in 0..3 {
        for column in 0..4 {
            let (x, y) = (110 + column * 136, 34 + row * 154 + 18);
            let (mean, spread) = region_stats(&image, x, y, 128, 128);
            assert!(
                mean < 250.0 || spread > 2.0,
                "panel ({row}, {column}) is blank"
            );
        }
    }
    // The originals are striped: their panels vary a lot.
    assert!(region_stats(&image, 110, 52, 128, 128).1 > 20.0);
    assert_eq!(std::fs::read_dir(&saved).unwrap().count(), 10);
}

/// A model trained briefly on 16 synthetic optical impressions of `size` x `size`, and one of
/// those images.
fn trained(size: usize) -> (Network<CpuBackend>, Vec<f32>) {
    let sensor = whorl::synth::sensor::sensor("optical").unwrap();
    let mut images = Vec::new();
    for finger in 0..4 {
        let master = whorl::synth::master(5, finger, None);
        for k in 0..4 {
            let print = whorl::synth::impression(&master, 5, finger, sensor, k);
            let small = image::imageops::resize(
                &print,
                size as u32,
                size as u32,
                image::imageops::FilterType::Triangle,
            );
            images.extend(small.pixels().map(|p| f32::from(p[0]) / 255.0));
        }
    }
    let arch = Architecture::reference();
    let mut net = Network::new(
        CpuBackend::new(),
        arch.clone(),
        size,
        size,
        16,
        &arch.glorot_uniform(5),
    )
    .unwrap();
    for _ in 0..250 {
        net.train_step(&images).unwrap();
    }
    let params = net.params().unwrap();
    let single =
        Network::keeping_every_output(CpuBackend::new(), arch, size, size, 1, &params).unwrap();
    (single, images[..size * size].to_vec())
}

#[test]
fn grad_cam_maps_are_normalised_differ_by_layer_and_ignore_a_blank_half() {
    let size = 48;
    let (mut net, print) = trained(size);
    // A fingerprint on the right; the left half blank (no signal).
    let image: Vec<f32> = (0..size * size)
        .map(|i| if i % size < size / 2 { 0.0 } else { print[i] })
        .collect();
    let mut maps = Vec::new();
    for name in ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6"] {
        let layer = conv_layer(&net, name).unwrap();
        let map = grad_cam(&mut net, &image, layer).unwrap();
        assert_eq!(map.values.len(), size * size);
        assert!(
            map.values
                .iter()
                .all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
            "{name}"
        );
        maps.push(map);
    }
    let distinct = maps
        .windows(2)
        .filter(|pair| pair[0].values != pair[1].values)
        .count();
    assert_eq!(distinct, 5, "the maps of successive layers should differ");
    // conv4 is the encoder's last layer (the decoder starts upsampling after it).
    let conv4 = &maps[3];
    assert!(!conv4.flat, "the last encoder layer's map is flat");
    let left: f32 = (0..size * size)
        .filter(|i| i % size < size / 2)
        .map(|i| conv4.values[i])
        .sum();
    let total: f32 = conv4.values.iter().sum();
    assert!(
        left < 0.3 * total,
        "conv4 puts {left} of {total} on the blank half"
    );
    assert!(conv_layer(&net, "pool1").is_err() && conv_layer(&net, "conv9").is_err());
}

#[test]
fn a_grad_cam_map_of_a_padded_image_is_its_own_region_on_its_own_scale() {
    // A 4 x 4 canvas map whose peak (0.8) lies in the padding beyond a 3 x 2 image.
    let canvas = CamMap {
        layer: "conv4",
        values: vec![
            0.1, 0.4, 0.2, 0.8, //
            0.0, 0.3, 0.1, 0.5, //
            0.6, 0.6, 0.6, 0.6, //
            0.6, 0.6, 0.6, 0.6,
        ],
        width: 4,
        height: 4,
        flat: false,
    };
    let map = canvas.top_left(3, 2);
    assert_eq!((map.width, map.height, map.flat), (3, 2, false));
    let expected = [0.25, 1.0, 0.5, 0.0, 0.75, 0.25];
    for (got, want) in map.values.iter().zip(expected) {
        assert!((got - want).abs() < 1e-6, "{:?}", map.values);
    }
    assert_eq!(map.values.len(), 6);
    // Nothing above zero in the image's region: flat, all zero.
    let dark = CamMap {
        values: vec![0.0, 0.0, 0.9, 0.0, 0.0, 0.9, 0.9, 0.9, 0.9],
        width: 3,
        height: 3,
        ..canvas
    };
    let map = dark.top_left(2, 2);
    assert!(map.flat && map.values == [0.0; 4], "{map:?}");
}

#[test]
fn the_demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let real = dir.path().join("real");
    common::write_striped_images(&real, 3, 40);
    std::fs::write(real.join("broken.png"), b"\x89PNG but not really").unwrap();
    let demo = whorl(&[
        "demo",
        "--real-prints",
        path(&real),
        "--skip-bad",
        "--no-identity",
        "--out",
        path(&out),
        "--crop",
        "32",
        "--epochs",
        "1",
        "--fingers",
        "4",
        "--impressions",
        "2",
        "--device",
        "cpu",
    ]);
    // Each model's scores and figures load the real prints again, and the bundled model: the
    // bad print is named once, and so is the bundled model's notice.
    let stderr = String::from_utf8_lossy(&demo.stderr);
    assert_eq!(stderr.matches("skipped").count(), 1, "{stderr}");
    assert!(stderr.contains("broken.png"), "{stderr}");
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert_eq!(
        stdout.matches("model: the bundled model").count(),
        1,
        "{stdout}"
    );
    for file in [
        "run/loss.png",
        "reconstructions.png",
        "reconstructions-bundled.png",
        "reconstructions-real.png",
        "reconstructions-real-bundled.png",
        "gradcam.png",
        "metrics.json",
        "metrics.csv",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let ssim = |label: &str| {
        let set = json
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["label"] == label);
        set.unwrap_or_else(|| panic!("no {label} in {json}"))["ssim"]["mean"]
            .as_f64()
            .unwrap()
    };
    assert!(ssim("trained here: unseen sensor") < 0.8);
    assert!(ssim("bundled: unseen sensor") > 0.8, "{json}");
    for label in ["bundled: real prints", "trained here: real prints"] {
        assert!((-1.0..=1.0).contains(&ssim(label)), "{label}");
    }
    let real_set = json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "bundled: real prints")
        .unwrap();
    assert_eq!(
        real_set["images"].as_array().unwrap().len(),
        3,
        "broken.png skipped"
    );
    let gradcam = image::open(out.join("gradcam.png")).unwrap();
    assert!(
        gradcam.height() > gradcam.width(),
        "six rows of three panels"
    );
    let missing = dir.path().join("missing");
    let refused = common::whorl(&["demo", "--real-prints", path(&missing), "--out", path(&out)]);
    assert_eq!(refused.status.code(), Some(2), "{}", common::text(&refused));
    assert!(common::text(&refused).contains("--real-prints"));
}

#[test]
fn a_stretch_normalised_model_reconstructs_on_each_images_own_scale() {
    // Bright, low-contrast prints: gray levels 205-230 of 255.
    let dir = tempfile::tempdir().unwrap();
    for n in 0..2u32 {
        let image = image::GrayImage::from_fn(16, 16, |x, y| {
            image::Luma([(217.0 + 12.0 * ((x + 2 * y + n) as f32 * 0.9).sin()) as u8])
        });
        image
            .save(dir.path().join(format!("print-{n}.png")))
            .unwrap();
    }
    let dataset = whorl::data::Dataset::load(dir.path(), 16, false, false).unwrap();
    let params = Architecture::reference().glorot_uniform(3);
    let arch = Architecture::reference();
    let mut net = Network::new(CpuBackend::new(), arch, 16, 16, 2, &params).unwrap();
    let reconstruct = |net: &mut Network<CpuBackend>, normalization| {
        whorl::evaluate::reconstruct(net, &dataset, &[0, 1], normalization).unwrap()
    };
    let plain = reconstruct(&mut net, whorl::normalize::Normalization::None);
    let stretched = reconstruct(&mut net, whorl::normalize::Normalization::Stretch);
    // Untrained, the network's sigmoid gives about 0.5: far below these images when they go in
    // as they are, inside each image's own range when the stretch is undone on the output.
    assert!(plain.iter().all(|&v| v < 0.7), "{plain:?}");
    for (i, recon) in stretched.chunks(256).enumerate() {
        let image = dataset.image(i);
        let (low, high) = image
            .iter()
            .fold((1.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(
            recon.iter().all(|&v| v >= low - 1e-6 && v <= high + 1e-6),
            "image {i}: reconstruction outside [{low}, {high}]"
        );
    }
}
