//! Fingerprint images on disk -> float32 arrays in [0, 1], and the train/validation split.

use std::fs;
use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// File extensions read as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 7] = ["tif", "tiff", "bmp", "png", "jpg", "jpeg", "pgm"];

/// Every image file under `dir`, recursively, in a deterministic (sorted path) order.
pub fn find_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in fs::read_dir(&folder).map_err(Error::io(&folder))? {
            let path = entry.map_err(Error::io(&folder))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if is_image(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Decodes one image as grayscale (colour -> luma; 8- or 16-bit), resizes it to size x size
/// with a bilinear (triangle) filter and returns its pixels in [0, 1], row-major.
pub fn load_image(path: &Path, size: usize) -> Result<Vec<f32>> {
    let bad = |reason: String| Error::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    let decoded = image::ImageReader::open(path)
        .map_err(Error::io(path))?
        .with_guessed_format()
        .map_err(Error::io(path))?
        .decode()
        .map_err(|e| bad(e.to_string()))?;
    let gray = decoded.to_luma32f();
    let side = size as u32;
    let resized = if gray.dimensions() == (side, side) {
        gray
    } else {
        imageops::resize(&gray, side, side, FilterType::Triangle)
    };
    Ok(resized
        .into_raw()
        .into_iter()
        .map(|v| v.clamp(0.0, 1.0))
        .collect())
}

/// A folder of images, decoded and resized, held in memory.
pub struct Dataset {
    pub dir: PathBuf,
    pub size: usize,
    pub files: Vec<PathBuf>,
    /// [files.len(), size, size] pixels in [0, 1].
    pub pixels: Vec<f32>,
    /// Files that failed to decode and were skipped (with --skip-bad), with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Dataset {
    /// Loads every image under `dir` on all cores. A file that fails to decode is an error,
    /// or with `skip_bad` is left out and listed in `skipped`.
    pub fn load(dir: &Path, size: usize, skip_bad: bool, progress: bool) -> Result<Dataset> {
        if !dir.is_dir() {
            return Err(Error::invalid(
                "--data",
                format!("{} is not a folder", dir.display()),
            ));
        }
        let files = find_images(dir)?;
        if files.is_empty() {
            return Err(Error::EmptyDataDir {
                path: dir.to_path_buf(),
            });
        }
        let bar = if progress {
            ProgressBar::new(files.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("loading {pos}/{len} images [{bar:30}] {per_sec}")
                .expect("valid template"),
        );
        let decoded: Vec<Result<Vec<f32>>> = files
            .par_iter()
            .map(|path| {
                let image = load_image(path, size);
                bar.inc(1);
                image
            })
            .collect();
        bar.finish_and_clear();
        let mut dataset = Dataset {
            dir: dir.to_path_buf(),
            size,
            files: Vec::with_capacity(files.len()),
            pixels: Vec::with_capacity(files.len() * size * size),
            skipped: Vec::new(),
        };
        for (path, image) in files.into_iter().zip(decoded) {
            match image {
                Ok(pixels) => {
                    dataset.files.push(path);
                    dataset.pixels.extend_from_slice(&pixels);
                }
                Err(Error::BadImage { path, reason }) if skip_bad => {
                    dataset.skipped.push((path, reason))
                }
                Err(error) => return Err(error),
            }
        }
        if dataset.files.is_empty() {
            return Err(Error::EmptyDataDir {
                path: dir.to_path_buf(),
            });
        }
        Ok(dataset)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn image(&self, index: usize) -> &[f32] {
        let n = self.size * self.size;
        &self.pixels[index * n..(index + 1) * n]
    }

    /// Replaces the contents of `batch` with the images at `indices`, in that order.
    pub fn gather(&self, indices: &[usize], batch: &mut Vec<f32>) {
        batch.clear();
        for &i in indices {
            batch.extend_from_slice(self.image(i));
        }
    }
}

/// Indices of the training and validation images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
}

/// Images the split needs: at least one to train on, and one to validate on if val_split > 0.
pub fn images_needed(val_split: f64) -> usize {
    (1..)
        .find(|&n| {
            let val = validation_count(n, val_split);
            n > val && (val_split == 0.0 || val > 0)
        })
        .expect("some count satisfies a split below 1")
}

fn validation_count(count: usize, val_split: f64) -> usize {
    (count as f64 * val_split).ceil() as usize
}

/// Shuffles 0..count with `seed` and puts the first ceil(count * val_split) indices in the
/// validation set (as scikit-learn's train_test_split does); the rest are for training.
pub fn split(count: usize, val_split: f64, seed: u64, dir: &Path) -> Result<Split> {
    if !(0.0..1.0).contains(&val_split) {
        return Err(Error::invalid(
            "--val-split",
            format!("{val_split} is not in [0, 1)"),
        ));
    }
    let needed = images_needed(val_split);
    if count < needed {
        return Err(Error::TooFewImages {
            path: dir.to_path_buf(),
            found: count,
            needed,
            val_split,
        });
    }
    let mut order: Vec<usize> = (0..count).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let train = order.split_off(validation_count(count, val_split));
    Ok(Split {
        train,
        validation: order,
    })
}

/// The order in which epoch `epoch` (0-based) visits the training images: a shuffle that
/// depends only on the seed and the epoch, so a resumed run sees the same batches.
pub fn epoch_order(train: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    let mut order = train.to_vec();
    order.shuffle(&mut rng);
    order
}
