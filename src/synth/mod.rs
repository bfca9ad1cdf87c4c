//! Synthetic fingerprints in the style of SFinGe (Cappelli, Maio and Maltoni, "Synthetic
//! fingerprint-image generation", ICPR 2000): a master fingerprint per finger (class, singular
//! points, orientation field, ridge frequency, ridges grown by Gabor filtering, fingertip
//! mask), then impressions of it as a sensor captures them. whorl's default training data.

pub mod impression;
pub mod orientation;
pub mod ridges;
pub mod sensor;
pub mod skin;

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, Luma};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::error::{Error, Result};
pub use orientation::FingerClass;
pub use ridges::Master;
pub use sensor::{SENSORS, Sensor};

/// Bumped whenever the generator's output changes, so cached data sets are remade.
pub const GENERATOR_VERSION: u32 = 2;
pub const MANIFEST_FILE: &str = "manifest.json";

/// A standard normal sample.
pub fn gaussian(rng: &mut (impl RngCore + ?Sized)) -> f32 {
    rng.sample(StandardNormal)
}

/// Value noise: random values in [-1, 1] on a grid of `cell`-pixel squares, blended smoothly
/// between grid points. Cheap to evaluate anywhere; constant beyond the grid's edge.
#[derive(Clone, Debug)]
pub struct ValueNoise {
    columns: usize,
    rows: usize,
    cell: f32,
    values: Vec<f32>,
}

impl ValueNoise {
    /// Noise over [0, width] x [0, height] with features about `cell` pixels across.
    pub fn new(rng: &mut (impl RngCore + ?Sized), width: f32, height: f32, cell: f32) -> Self {
        let columns = (width / cell).ceil() as usize + 2;
        let rows = (height / cell).ceil() as usize + 2;
        let values = (0..columns * rows)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        ValueNoise {
            columns,
            rows,
            cell,
            values,
        }
    }

    pub fn at(&self, x: f32, y: f32) -> f32 {
        let gx = (x / self.cell).clamp(0.0, (self.columns - 2) as f32 + 0.999);
        let gy = (y / self.cell).clamp(0.0, (self.rows - 2) as f32 + 0.999);
        let (ix, iy) = (gx as usize, gy as usize);
        let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
        let (fx, fy) = (smooth(gx - ix as f32), smooth(gy - iy as f32));
        let v = |dx: usize, dy: usize| self.values[(iy + dy) * self.columns + ix + dx];
        let top = v(0, 0) + fx * (v(1, 0) - v(0, 0));
        let bottom = v(0, 1) + fx * (v(1, 1) - v(0, 1));
        top + fy * (bottom - top)
    }
}

/// The random stream of finger `finger`'s master fingerprint: it depends on the seed and the
/// finger only, so a finger looks the same on every sensor and on any number of threads.
fn master_rng(seed: u64, finger: usize) -> ChaCha8Rng {
    finger_stream(seed, finger, 0)
}

/// Stream `low` of finger `finger`'s streams under `seed`; each random draw of the generator
/// comes from one of these, told apart by `low` (below 2^16).
fn finger_stream(seed: u64, finger: usize, low: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((finger as u64) << 16) | low);
    rng
}

/// The position of `sensor` in [`SENSORS`] (0 for a sensor not in it).
fn sensor_index(sensor: &Sensor) -> u64 {
    SENSORS
        .iter()
        .position(|s| s.name == sensor.name)
        .unwrap_or(0) as u64
}

fn impression_rng(seed: u64, finger: usize, sensor: &Sensor, impression: usize) -> ChaCha8Rng {
    finger_stream(
        seed,
        finger,
        (sensor_index(sensor) << 8) | (impression as u64 + 1),
    )
}

/// The class of finger `finger`, drawn with natural frequencies.
pub fn master_class(seed: u64, finger: usize) -> FingerClass {
    FingerClass::draw(&mut master_rng(seed, finger))
}

/// The master fingerprint of finger `finger`: of its own class, or of `class` when given.
pub fn master(seed: u64, finger: usize, class: Option<FingerClass>) -> Master {
    let mut rng = master_rng(seed, finger);
    let drawn = FingerClass::draw(&mut rng);
    Master::generate(class.unwrap_or(drawn), &mut rng)
}

/// The skin that impression `impression` of finger `finger` shows on `sensor`: nothing for a
/// sensor that shows none of it; else the finger's marks (the same on every impression) and
/// this impression's variation, each from a stream of its own.
pub fn skin(
    master: &Master,
    seed: u64,
    finger: usize,
    sensor: &Sensor,
    impression: usize,
) -> skin::Skin {
    if !skin::Skin::shown_by(sensor) {
        return skin::Skin::default();
    }
    let (width, height) = (master.width() as f32, master.height() as f32);
    let variation_stream = 0xe000 | (sensor_index(sensor) << 8) | (impression as u64 & 0xff);
    skin::Skin {
        marks: skin::Marks::draw(
            sensor,
            width,
            height,
            &mut finger_stream(seed, finger, 0xf000),
        ),
        variation: Some(skin::Variation::draw(
            sensor,
            width,
            height,
            &mut finger_stream(seed, finger, variation_stream),
        )),
    }
}

/// Impression `impression` of `master` (finger `finger`) on `sensor`.
pub fn impression(
    master: &Master,
    seed: u64,
    finger: usize,
    sensor: &Sensor,
    impression: usize,
) -> GrayImage {
    impression::render(
        master,
        sensor,
        &skin(master, seed, finger, sensor, impression),
        &mut impression_rng(seed, finger, sensor, impression),
    )
}

/// What `whorl synth` makes.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub fingers: usize,
    pub impressions: usize,
    /// Fingers are numbered from here (a test set of other fingers starts after a training set).
    pub first_finger: usize,
    pub sensor: Sensor,
    pub seed: u64,
}

/// One generated image, as listed in manifest.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub file: String,
    pub finger: usize,
    pub impression: usize,
    pub class: FingerClass,
    pub sensor: String,
    pub seed: u64,
}

/// manifest.json: how a data set was generated and what each file is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub generator: String,
    pub whorl_version: String,
    pub seed: u64,
    pub sensor: String,
    pub width: usize,
    pub height: usize,
    pub fingers: usize,
    pub impressions: usize,
    pub images: Vec<ManifestEntry>,
}

fn encode(image: GrayImage, sensor: &Sensor, path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Cursor::new(Vec::new());
    DynamicImage::ImageLuma8(image)
        .write_to(&mut bytes, sensor.format)
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok(bytes.into_inner())
}

/// Generates the data set into `out` (created if needed): every image written atomically,
/// then manifest.json. Deterministic for a seed whatever the thread count.
pub fn generate(out: &Path, config: &SynthConfig, progress: bool) -> Result<Manifest> {
    if config.fingers == 0 || config.impressions == 0 {
        return Err(Error::invalid(
            "--fingers/--impressions",
            "both must be at least 1",
        ));
    }
    fs::create_dir_all(out).map_err(Error::io(out))?;
    let total = config.fingers * config.impressions;
    let bar = if progress {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "synth {} [{{bar:30}}] {{pos}}/{{len}} images  {{per_sec}}  eta {{eta}}",
            config.sensor.name
        ))
        .expect("valid template"),
    );
    let sensor = &config.sensor;
    let entries: Vec<Vec<ManifestEntry>> = (config.first_finger
        ..config.first_finger + config.fingers)
        .into_par_iter()
        .map(|finger| {
            let master = master(config.seed, finger, None);
            (0..config.impressions)
                .map(|k| {
                    let image = impression(&master, config.seed, finger, sensor, k);
                    let file = format!("f{finger:05}_{k}.{}", sensor.extension);
                    let path = out.join(&file);
                    atomic::write_file(&path, &encode(image, sensor, &path)?)?;
                    bar.inc(1);
                    Ok(ManifestEntry {
                        file,
                        finger,
                        impression: k,
                        class: master.class,
                        sensor: sensor.name.to_string(),
                        seed: config.seed,
                    })
                })
                .collect()
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    let manifest = Manifest {
        generator: format!("whorl-synth/{GENERATOR_VERSION}"),
        whorl_version: env!("CARGO_PKG_VERSION").into(),
        seed: config.seed,
        sensor: sensor.name.into(),
        width: sensor.width,
        height: sensor.height,
        fingers: config.fingers,
        impressions: config.impressions,
        images: entries.into_iter().flatten().collect(),
    };
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    atomic::write_file(&out.join(MANIFEST_FILE), json.as_bytes())?;
    Ok(manifest)
}

/// Where generated data sets are cached: $WHORL_CACHE, else $XDG_CACHE_HOME/whorl, else
/// ~/.cache/whorl, else .whorl-cache in the working folder.
pub fn cache_root() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("WHORL_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("whorl")))
        .or_else(|| var("HOME").map(|p| p.join(".cache/whorl")))
        .unwrap_or_else(|| PathBuf::from(".whorl-cache"))
}

/// The default data set: `train/`, impressions from the optical sensor (training and
/// validation), and `test/`, impressions of other fingers from the capacitive sensor.
#[derive(Clone, Debug)]
pub struct DefaultData {
    pub root: PathBuf,
    pub train: PathBuf,
    pub test: PathBuf,
}

/// The seed of the default data set, separate from training's --seed.
pub const DEFAULT_DATA_SEED: u64 = 2000;

/// Generates the default data set under `cache` (see [`cache_root`]) unless it is already
/// there: `fingers` x `impressions` optical images (2,688 by default, as the reference's) and an
/// eighth as many other fingers (at least 4) on the capacitive sensor for testing.
pub fn default_data(
    cache: &Path,
    fingers: usize,
    impressions: usize,
    progress: bool,
) -> Result<DefaultData> {
    let root = cache.join(format!(
        "synthetic-v{GENERATOR_VERSION}-seed{DEFAULT_DATA_SEED}-{fingers}x{impressions}"
    ));
    let data = DefaultData {
        train: root.join("train"),
        test: root.join("test"),
        root: root.clone(),
    };
    if data.train.join(MANIFEST_FILE).is_file() && data.test.join(MANIFEST_FILE).is_file() {
        return Ok(data);
    }
    let staging = atomic::staging_path(&root)?;
    let sets = [
        ("train", "optical", 0, fingers),
        ("test", "capacitive", fingers, (fingers / 8).max(4)),
    ];
    for (folder, sensor, first_finger, count) in sets {
        let config = SynthConfig {
            fingers: count,
            impressions,
            first_finger,
            sensor: sensor::sensor(sensor).expect("a built-in sensor").clone(),
            seed: DEFAULT_DATA_SEED,
        };
        generate(&staging.join(folder), &config, progress)?;
    }
    if root.exists() {
        fs::remove_dir_all(&root).map_err(Error::io(&root))?;
    }
    fs::rename(&staging, &root).map_err(Error::io(&root))?;
    Ok(data)
}

/// A figure: one row per class, its master fingerprint, then `impressions` impressions on each
/// sensor, every panel fitted into `tile` x `tile` pixels on white.
pub fn figure(seed: u64, impressions: usize, tile: u32) -> GrayImage {
    let gap = 6;
    let columns = 1 + impressions * SENSORS.len();
    let rows = FingerClass::ALL.len();
    let mut canvas = GrayImage::from_pixel(
        gap + columns as u32 * (tile + gap),
        gap + rows as u32 * (tile + gap),
        Luma([255]),
    );
    let panels: Vec<(usize, usize, GrayImage)> = FingerClass::ALL
        .par_iter()
        .enumerate()
        .flat_map(|(row, &class)| {
            let finger = 1_000_000 + row;
            let master = master(seed, finger, Some(class));
            let mut panels = vec![(row, 0, master_picture(&master))];
            for (s, sensor) in SENSORS.iter().enumerate() {
                for k in 0..impressions {
                    let column = 1 + s * impressions + k;
                    panels.push((row, column, impression(&master, seed, finger, sensor, k)));
                }
            }
            panels
        })
        .collect();
    for (row, column, panel) in panels {
        let (w, h) = panel.dimensions();
        let scale = tile as f32 / w.max(h) as f32;
        let (sw, sh) = ((w as f32 * scale) as u32, (h as f32 * scale) as u32);
        let small = image::imageops::resize(&panel, sw, sh, image::imageops::FilterType::Triangle);
        let x = gap + column as u32 * (tile + gap) + (tile - sw) / 2;
        let y = gap + row as u32 * (tile + gap) + (tile - sh) / 2;
        image::imageops::overlay(&mut canvas, &small, i64::from(x), i64::from(y));
    }
    canvas
}

/// The master's ridges inside its fingertip mask, dark ridges on white.
pub fn master_picture(master: &Master) -> GrayImage {
    let w = master.width() as u32;
    GrayImage::from_fn(w, master.height() as u32, |x, y| {
        let i = (y * w + x) as usize;
        let ink = (master.ridges[i] + 1.0) / 2.0 * master.mask[i];
        Luma([(255.0 * (1.0 - ink)).round() as u8])
    })
}
