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
use crate::memory;

/// File extensions read as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 7] = ["tif", "tiff", "bmp", "png", "jpg", "jpeg", "pgm"];

/// Folders deeper than this below the data folder are not searched (with a warning).
pub const MAX_DEPTH: usize = 32;

/// The image files found under a data folder, and the entries passed over with the reason.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    pub files: Vec<PathBuf>,
    pub skipped: Vec<(PathBuf, String)>,
}

/// Every image file under `dir`, recursively, in a deterministic (sorted path) order.
pub fn find_images(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(walk_images(dir, false)?.files)
}

/// Searches `dir` for image files, following links but visiting each folder and file once (by
/// device and inode), at most [`MAX_DEPTH`] folders deep. Folders too deep, repeats and images
/// that are not regular files (a FIFO, a socket) are passed over with a reason; an entry that
/// cannot be read (a dangling link, no permission) is an error, or with `skip_bad` passed over.
pub fn walk_images(dir: &Path, skip_bad: bool) -> Result<Walk> {
    use std::os::unix::fs::MetadataExt;
    let mut walk = Walk::default();
    let mut seen = std::collections::HashSet::new();
    let root = fs::metadata(dir).map_err(Error::io(dir))?;
    seen.insert((root.dev(), root.ino()));
    // Breadth first over sorted entries: of several paths to one file, the shallowest and then
    // first in sorted order is kept, whatever order the file system lists them in.
    let mut pending = std::collections::VecDeque::from([(dir.to_path_buf(), 0)]);
    while let Some((folder, depth)) = pending.pop_front() {
        let entries = match fs::read_dir(&folder).and_then(|e| e.collect::<Result<Vec<_>, _>>()) {
            Ok(entries) => entries,
            Err(e) if skip_bad && depth > 0 => {
                walk.skipped
                    .push((folder, format!("cannot read folder: {e}")));
                continue;
            }
            Err(e) => return Err(Error::io(&folder)(e)),
        };
        let mut paths: Vec<PathBuf> = entries.iter().map(fs::DirEntry::path).collect();
        paths.sort();
        for path in paths {
            let metadata = match fs::metadata(&path) {
                Ok(metadata) => metadata,
                Err(e) if skip_bad => {
                    walk.skipped.push((path, format!("cannot read: {e}")));
                    continue;
                }
                Err(e) => {
                    return Err(Error::BadImage {
                        path,
                        reason: format!("cannot read: {e} (a dangling link?)"),
                    });
                }
            };
            let passed_over = if !seen.insert((metadata.dev(), metadata.ino())) {
                (metadata.is_dir() || is_image(&path)).then_some("already visited by another path")
            } else if metadata.is_dir() {
                if depth < MAX_DEPTH {
                    pending.push_back((path.clone(), depth + 1));
                    None
                } else {
                    Some("folder nested too deep")
                }
            } else if !is_image(&path) {
                None
            } else if metadata.is_file() {
                walk.files.push(path.clone());
                None
            } else {
                Some("not a regular file")
            };
            if let Some(reason) = passed_over {
                walk.skipped.push((path, reason.into()));
            }
        }
    }
    walk.files.sort();
    walk.skipped.sort();
    Ok(walk)
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
        .map_err(|e| bad(format!("cannot open: {e}")))?
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?
        .decode()
        .map_err(|e| bad(e.to_string()))?;
    let gray = decoded.to_luma32f();
    if gray.iter().any(|v| !v.is_finite()) {
        return Err(bad("holds NaN or infinite pixel values".into()));
    }
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
    /// Entries passed over, with the reason: files that failed to decode (with --skip-bad), and
    /// what the folder walk did not take (see [`walk_images`]).
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
        let Walk { files, skipped } = walk_images(dir, skip_bad)?;
        if files.is_empty() {
            return Err(Error::EmptyDataDir {
                path: dir.to_path_buf(),
            });
        }
        memory::check_fits(
            &format!("{} images of {size}x{size}", files.len()),
            memory::dataset_bytes(files.len(), size),
        )
        .map_err(|why| Error::invalid("--size", why))?;
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
            skipped,
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
