//! The synthetic fingerprint generator: determinism, realism checks that a bad generator
//! fails, files that whorl's loader reads, and sensor profiles that differ as declared.

mod common;

use std::f32::consts::PI;
use std::path::Path;

use rand::SeedableRng;
use whorl::data::Dataset;
use whorl::synth::orientation::{Point, circle, poincare_index};
use whorl::synth::{self, FingerClass, Manifest, Master, SENSORS, SynthConfig, sensor};

const SEED: u64 = 21;
const BLOCK: usize = 32;

/// Blocks of BLOCK x BLOCK pixels lying wholly inside the fingertip: (x, y) of their corner.
fn blocks_inside(master: &Master) -> Vec<(usize, usize)> {
    let w = master.width();
    let mut blocks = Vec::new();
    for by in (0..master.height() - BLOCK).step_by(BLOCK) {
        for bx in (0..w - BLOCK).step_by(BLOCK) {
            let inside = (0..BLOCK)
                .all(|dy| (0..BLOCK).all(|dx| master.mask[(by + dy) * w + bx + dx] >= 1.0));
            if inside {
                blocks.push((bx, by));
            }
        }
    }
    blocks
}

/// The period (pixels) of the strongest wave across the ridges of a block: its pixels
/// projected on the normal to `direction`, then a direct Fourier transform at periods 4 to 20
/// pixels (mean removed).
fn dominant_period(image: &[f32], width: usize, (bx, by): (usize, usize), direction: f32) -> f32 {
    let (nx, ny) = (-direction.sin(), direction.cos());
    let mut samples = Vec::with_capacity(BLOCK * BLOCK);
    for dy in 0..BLOCK {
        for dx in 0..BLOCK {
            samples.push((
                dx as f32 * nx + dy as f32 * ny,
                image[(by + dy) * width + bx + dx],
            ));
        }
    }
    let mean = samples.iter().map(|s| s.1).sum::<f32>() / samples.len() as f32;
    let mut best = (0.0, 0.0);
    for step in 0..=64 {
        let period = 4.0 + step as f32 * 0.25;
        let (mut re, mut im) = (0.0f32, 0.0f32);
        for &(across, v) in &samples {
            let phase = 2.0 * PI * across / period;
            re += (v - mean) * phase.cos();
            im += (v - mean) * phase.sin();
        }
        if re * re + im * im > best.0 {
            best = (re * re + im * im, period);
        }
    }
    best.1
}

/// Ridge direction in [0, pi) and coherence in [0, 1] of a block, from its structure tensor.
fn block_orientation(image: &[f32], width: usize, (bx, by): (usize, usize)) -> (f32, f32) {
    let (mut gxx, mut gyy, mut gxy) = (0.0f32, 0.0f32, 0.0f32);
    for y in by + 1..by + BLOCK - 1 {
        for x in bx + 1..bx + BLOCK - 1 {
            let gx = (image[y * width + x + 1] - image[y * width + x - 1]) / 2.0;
            let gy = (image[(y + 1) * width + x] - image[(y - 1) * width + x]) / 2.0;
            gxx += gx * gx;
            gyy += gy * gy;
            gxy += gx * gy;
        }
    }
    let coherence = ((gxx - gyy).powi(2) + 4.0 * gxy * gxy).sqrt() / (gxx + gyy);
    // The gradient's dominant direction is across the ridges; ridges run at right angles to it.
    let gradient = 0.5 * (2.0 * gxy).atan2(gxx - gyy);
    ((gradient + PI / 2.0).rem_euclid(PI), coherence)
}

fn angle_between(a: f32, b: f32) -> f32 {
    let d = (a - b).rem_euclid(PI);
    d.min(PI - d)
}

fn masters() -> Vec<Master> {
    FingerClass::ALL
        .iter()
        .enumerate()
        .flat_map(|(i, &class)| (0..3).map(move |k| synth::master(SEED, 10 * i + k, Some(class))))
        .collect()
}

#[test]
fn ridges_have_a_500_dpi_period_and_follow_the_orientation_field() {
    for master in masters() {
        let w = master.width();
        let blocks = blocks_inside(&master);
        assert!(
            blocks.len() >= 40,
            "{:?}: {} blocks inside",
            master.class,
            blocks.len()
        );
        let near_singular = |(bx, by): (usize, usize)| {
            let c = Point {
                x: (bx + BLOCK / 2) as f32,
                y: (by + BLOCK / 2) as f32,
            };
            let points = master.field.cores.iter().chain(&master.field.deltas);
            points
                .map(|p| (p.x - c.x).hypot(p.y - c.y))
                .any(|d| d < 1.5 * BLOCK as f32)
        };
        let (mut in_band, mut coherent, mut aligned, mut regular) = (0, 0, 0, 0);
        for &block in &blocks {
            let (direction, coherence) = block_orientation(&master.ridges, w, block);
            let period = dominant_period(&master.ridges, w, block, direction);
            in_band += usize::from((7.0..=11.5).contains(&period));
            if near_singular(block) {
                continue;
            }
            regular += 1;
            coherent += usize::from(coherence > 0.6);
            let expected = master
                .field
                .at((block.0 + BLOCK / 2) as f32, (block.1 + BLOCK / 2) as f32);
            aligned += usize::from(angle_between(direction, expected) < 15f32.to_radians());
        }
        let class = master.class;
        assert!(
            in_band * 10 >= blocks.len() * 9,
            "{class:?}: {in_band}/{} in band",
            blocks.len()
        );
        assert!(
            coherent * 10 >= regular * 9,
            "{class:?}: {coherent}/{regular} coherent"
        );
        assert!(
            aligned * 10 >= regular * 9,
            "{class:?}: {aligned}/{regular} aligned"
        );
    }
}

#[test]
fn the_realism_checks_reject_noise_and_the_wrong_ridge_period() {
    let (w, h) = (128, 128);
    let mut rng_state = 12345u32;
    let noise: Vec<f32> = (0..w * h)
        .map(|_| {
            rng_state = rng_state
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            (rng_state >> 8) as f32 / (1u32 << 24) as f32
        })
        .collect();
    let fine_stripes: Vec<f32> = (0..w * h)
        .map(|i| (2.0 * PI * (i % w) as f32 / 5.0).cos())
        .collect();
    let block = (48, 48);
    let (_, coherence) = block_orientation(&noise, w, block);
    assert!(coherence < 0.3, "noise has coherence {coherence}");
    let (direction, coherence) = block_orientation(&fine_stripes, w, block);
    assert!(coherence > 0.9);
    assert!(
        angle_between(direction, PI / 2.0) < 0.05,
        "vertical stripes read as {direction}"
    );
    let period = dominant_period(&fine_stripes, w, block, direction);
    assert!(
        (period - 5.0).abs() < 0.3,
        "5-pixel stripes read as {period}"
    );
}

#[test]
fn singular_points_are_where_the_class_puts_them() {
    for master in masters() {
        let field = &master.field;
        let (cores, deltas) = master.class.singular_point_counts();
        assert_eq!((field.cores.len(), field.deltas.len()), (cores, deltas));
        let index_around =
            |p: Point, r: f32| poincare_index(|x, y| field.at(x, y), &circle(p, r, 64));
        for &core in &field.cores {
            assert!(
                (index_around(core, 5.0) - 0.5).abs() < 0.01,
                "{:?} core",
                master.class
            );
        }
        for &delta in &field.deltas {
            assert!(
                (index_around(delta, 5.0) + 0.5).abs() < 0.01,
                "{:?} delta",
                master.class
            );
        }
        // No other singular point: scan the canvas in 8-pixel cells.
        let mut found = 0;
        for cy in (4..master.height()).step_by(8) {
            for cx in (4..master.width()).step_by(8) {
                let cell = [(0.0, 0.0), (8.0, 0.0), (8.0, 8.0), (0.0, 8.0)].map(|(dx, dy)| Point {
                    x: cx as f32 + dx,
                    y: cy as f32 + dy,
                });
                if poincare_index(|x, y| field.at(x, y), &cell).abs() > 0.25 {
                    found += 1;
                }
            }
        }
        assert_eq!(found, cores + deltas, "{:?}: singular cells", master.class);
        // Loops open away from their delta: left loops have the delta on the right.
        match master.class {
            FingerClass::LeftLoop => assert!(field.deltas[0].x > field.cores[0].x),
            FingerClass::RightLoop => assert!(field.deltas[0].x < field.cores[0].x),
            FingerClass::TentedArch => {
                assert!((field.deltas[0].x - field.cores[0].x).abs() < 20.0);
            }
            _ => {}
        }
        for p in field.cores.iter().chain(&field.deltas) {
            let inside = master.mask[p.y as usize * master.width() + p.x as usize];
            assert!(
                inside > 0.0,
                "{:?}: singular point outside the fingertip",
                master.class
            );
        }
    }
}

#[test]
fn the_fingertip_covers_a_plausible_part_of_the_canvas_and_the_image() {
    for master in masters() {
        let fraction = master.mask.iter().sum::<f32>() / master.mask.len() as f32;
        assert!(
            (0.45..0.8).contains(&fraction),
            "{:?}: mask {fraction}",
            master.class
        );
        for sensor in SENSORS.iter() {
            let image = synth::impression(&master, SEED, 0, sensor, 0);
            // Finger pixels: 8x8 cells whose gray levels vary (ridges), unlike the background.
            let (w, h) = (sensor.width, sensor.height);
            let (mut cells, mut ridged) = (0, 0);
            for cy in (0..h - 8).step_by(8) {
                for cx in (0..w - 8).step_by(8) {
                    let values: Vec<f32> = (0..64)
                        .map(|i| {
                            f32::from(image.get_pixel((cx + i % 8) as u32, (cy + i / 8) as u32)[0])
                        })
                        .collect();
                    let mean = values.iter().sum::<f32>() / 64.0;
                    let spread = values.iter().map(|v| (v - mean).abs()).sum::<f32>() / 64.0;
                    cells += 1;
                    ridged += usize::from(spread > 3.0 * sensor.noise.max(4.0));
                }
            }
            let covered = ridged as f32 / cells as f32;
            assert!(
                (0.2..0.95).contains(&covered),
                "{} covers {covered}",
                sensor.name
            );
        }
    }
}

#[test]
fn classes_occur_with_natural_frequencies() {
    let mut counts = [0usize; 5];
    for finger in 0..4000 {
        let class = synth::master_class(SEED, finger);
        counts[FingerClass::ALL.iter().position(|&c| c == class).unwrap()] += 1;
    }
    for (class, count) in FingerClass::ALL.iter().zip(counts) {
        let share = count as f64 / 4000.0;
        assert!(
            (share - class.frequency()).abs() < 0.025,
            "{class:?}: {share}"
        );
    }
}

fn read_dir_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn config(sensor_name: &str, seed: u64) -> SynthConfig {
    SynthConfig {
        fingers: 3,
        impressions: 2,
        first_finger: 0,
        sensor: sensor::sensor(sensor_name).unwrap().clone(),
        seed,
    }
}

#[test]
fn same_seed_same_bytes_on_any_thread_count_other_seed_other_images() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: u64, threads: usize| {
        let out = dir.path().join(name);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| synth::generate(&out, &config("optical", seed), false).unwrap());
        read_dir_bytes(&out)
    };
    let one = run("a", 1, 1);
    assert_eq!(one, run("b", 1, 2));
    assert_eq!(one, run("c", 1, 3));
    let other = run("d", 2, 2);
    assert_eq!(one.len(), other.len());
    for ((name, a), (_, b)) in one.iter().zip(&other) {
        if name.ends_with(".tif") {
            assert_ne!(a, b, "{name} is the same under another seed");
        }
    }
}

#[test]
fn generated_files_decode_with_the_loader_and_match_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["optical", "capacitive"] {
        let out = dir.path().join(name);
        let manifest = synth::generate(&out, &config(name, 3), false).unwrap();
        let text = std::fs::read_to_string(out.join(synth::MANIFEST_FILE)).unwrap();
        let written: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(written, manifest);
        assert_eq!(manifest.images.len(), 6);
        for entry in &manifest.images {
            assert!(out.join(&entry.file).is_file(), "{}", entry.file);
            assert_eq!((entry.sensor.as_str(), entry.seed), (name, 3));
        }
        let dataset = Dataset::load(&out, 64, false, false).unwrap();
        assert_eq!(dataset.len(), 6);
        assert!(dataset.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

/// Mean gray level and mean absolute difference between horizontal neighbours, over a border
/// strip (background) of a decoded image.
fn background_stats(path: &Path) -> (f32, f32, (u32, u32)) {
    let image = image::open(path).unwrap().to_luma8();
    let (w, h) = image.dimensions();
    let (mut sum, mut diff, mut n) = (0.0f32, 0.0f32, 0.0f32);
    for y in 0..h.min(12) {
        for x in 1..w {
            let (a, b) = (image.get_pixel(x - 1, y)[0], image.get_pixel(x, y)[0]);
            sum += f32::from(b);
            diff += (f32::from(a) - f32::from(b)).abs();
            n += 1.0;
        }
    }
    (sum / n, diff / n, (w, h))
}

#[test]
fn sensor_profiles_differ_as_declared() {
    let dir = tempfile::tempdir().unwrap();
    let mut stats = Vec::new();
    for name in ["optical", "capacitive"] {
        let out = dir.path().join(name);
        let manifest = synth::generate(&out, &config(name, 4), false).unwrap();
        let sensor = sensor::sensor(name).unwrap();
        let measured: Vec<_> = manifest
            .images
            .iter()
            .map(|e| {
                assert!(e.file.ends_with(sensor.extension));
                background_stats(&out.join(&e.file))
            })
            .collect();
        for m in &measured {
            assert_eq!(m.2, (sensor.width as u32, sensor.height as u32));
        }
        let n = measured.len() as f32;
        stats.push((
            measured.iter().map(|m| m.0).sum::<f32>() / n,
            measured.iter().map(|m| m.1).sum::<f32>() / n,
        ));
    }
    let (optical, capacitive) = (stats[0], stats[1]);
    assert!(
        optical.0 > capacitive.0 + 20.0,
        "backgrounds {optical:?} vs {capacitive:?}"
    );
    assert!(
        capacitive.1 > 2.0 * optical.1,
        "noise {optical:?} vs {capacitive:?}"
    );
    let tif = std::fs::read(dir.path().join("optical/f00000_0.tif")).unwrap();
    let bmp = std::fs::read(dir.path().join("capacitive/f00000_0.bmp")).unwrap();
    assert!(tif.starts_with(b"II*\0") || tif.starts_with(b"MM\0*"));
    assert!(bmp.starts_with(b"BM"));
}

#[test]
fn the_default_data_set_is_made_once_with_a_test_set_from_the_other_sensor() {
    let cache = tempfile::tempdir().unwrap();
    let data = synth::default_data(cache.path(), 4, 2, false).unwrap();
    let read = |dir: &Path| -> Manifest {
        serde_json::from_str(&std::fs::read_to_string(dir.join(synth::MANIFEST_FILE)).unwrap())
            .unwrap()
    };
    let (train, test) = (read(&data.train), read(&data.test));
    assert_eq!((train.sensor.as_str(), train.images.len()), ("optical", 8));
    assert_eq!((test.sensor.as_str(), test.images.len()), ("capacitive", 8));
    let train_fingers: Vec<usize> = train.images.iter().map(|e| e.finger).collect();
    assert!(
        test.images
            .iter()
            .all(|e| !train_fingers.contains(&e.finger))
    );
    // A second call finds it and does not regenerate.
    let stamp = std::fs::metadata(data.train.join(synth::MANIFEST_FILE))
        .unwrap()
        .modified()
        .unwrap();
    let again = synth::default_data(cache.path(), 4, 2, false).unwrap();
    assert_eq!(again.train, data.train);
    let after = std::fs::metadata(data.train.join(synth::MANIFEST_FILE))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(stamp, after);
}

/// FNV-1a of an image's pixel bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn the_optical_and_capacitive_impressions_stay_those_of_generator_version_2() {
    // The cached default data set and the bundled model's training data are generator version
    // 2's: a change to these sensors' output must bump GENERATOR_VERSION (and remake the cache),
    // so these hashes of version 2's pixels must hold while it stays 2.
    assert_eq!(synth::GENERATOR_VERSION, 2);
    let hashes: Vec<u64> = [("optical", 3), ("capacitive", 7)]
        .into_iter()
        .map(|(name, finger)| {
            let master = synth::master(2000, finger, None);
            let image = synth::impression(&master, 2000, finger, sensor::sensor(name).unwrap(), 1);
            fnv1a(image.as_raw())
        })
        .collect();
    assert_eq!(
        hashes,
        [0x5ce3_9f90_3c30_8dd2, 0x120a_4ac4_01a8_e313],
        "{hashes:x?}"
    );
}

#[test]
fn only_the_ink_sensor_shows_creases_and_scars_and_a_finger_keeps_them_on_every_impression() {
    let ink = sensor::sensor("ink").unwrap();
    let master = synth::master(SEED, 0, None);
    for name in ["optical", "capacitive"] {
        let skin = synth::skin(&master, SEED, 0, sensor::sensor(name).unwrap(), 0);
        assert!(
            skin.variation.is_none() && skin.marks.count() == (0, 0),
            "{name}"
        );
    }
    let (mut creased, mut scarred) = (0, 0);
    for finger in 0..12 {
        let master = synth::master(SEED, finger, None);
        let first = synth::skin(&master, SEED, finger, ink, 0);
        let second = synth::skin(&master, SEED, finger, ink, 1);
        assert_eq!(first.marks.count(), second.marks.count());
        // The marks are the finger's: the same ink left everywhere on both impressions.
        for (x, y) in [
            (100.0, 150.0),
            (180.0, 220.0),
            (240.0, 300.0),
            (150.0, 260.0),
        ] {
            assert_eq!(first.marks.ink_left(x, y), second.marks.ink_left(x, y));
        }
        let (creases, scars) = first.marks.count();
        creased += usize::from(creases > 0);
        scarred += usize::from(scars > 0);
    }
    assert!(
        creased >= 6 && (1..=10).contains(&scarred),
        "{creased} creased, {scarred} scarred"
    );

    // A crease takes ink away along its line: an impression with the finger's marks is lighter
    // inside the finger than the same impression without them.
    let finger = (0..12)
        .find(|&f| {
            synth::skin(&synth::master(SEED, f, None), SEED, f, ink, 0)
                .marks
                .count()
                .0
                > 0
        })
        .unwrap();
    let master = synth::master(SEED, finger, None);
    let skin = synth::skin(&master, SEED, finger, ink, 0);
    let unmarked = synth::skin::Skin {
        marks: synth::skin::Marks::default(),
        ..skin.clone()
    };
    let render = |skin: &synth::skin::Skin| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let image = synth::impression::render(&master, ink, skin, &mut rng);
        image.pixels().map(|p| f64::from(p[0])).sum::<f64>()
    };
    assert!(render(&skin) > render(&unmarked));
}
