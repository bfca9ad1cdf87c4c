//! Fingerprint images on disk -> float32 arrays in [0, 1], and the train/validation split.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
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
                        in_folder: true,
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

/// Decodes one image as grayscale (colour -> luma; 8- or 16-bit), refusing NaN and infinite
/// pixel values.
fn decode_gray(path: &Path) -> Result<ImageBuffer<Luma<f32>, Vec<f32>>> {
    let bad = |reason: String| Error::BadImage {
        path: path.to_path_buf(),
        reason,
        in_folder: false,
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
    Ok(gray)
}

/// Pixels in [0, 1], row-major.
fn clamped(gray: ImageBuffer<Luma<f32>, Vec<f32>>) -> Vec<f32> {
    gray.into_raw()
        .into_iter()
        .map(|v| v.clamp(0.0, 1.0))
        .collect()
}

/// Decodes one image as grayscale (colour -> luma; 8- or 16-bit), resizes it to size x size
/// with a bilinear (triangle) filter and returns its pixels in [0, 1], row-major.
pub fn load_image(path: &Path, size: usize) -> Result<Vec<f32>> {
    let gray = decode_gray(path)?;
    let side = size as u32;
    Ok(clamped(if gray.dimensions() == (side, side) {
        gray
    } else {
        imageops::resize(&gray, side, side, FilterType::Triangle)
    }))
}

/// Decodes one image as grayscale at its own resolution: (width, height, pixels in [0, 1]).
pub fn load_native_image(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let gray = decode_gray(path)?;
    let (width, height) = (gray.width() as usize, gray.height() as usize);
    Ok((width, height, clamped(gray)))
}

/// The side of the square canvas that holds a width x height image: its larger side rounded
/// up to a multiple of `multiple` (the model's downsampling).
pub fn canvas_side(width: usize, height: usize, multiple: usize) -> usize {
    width.max(height).div_ceil(multiple) * multiple
}

/// A width x height image at the top left of a side x side canvas, the rest filled by repeating
/// its last column and row.
pub fn pad(pixels: &[f32], width: usize, height: usize, side: usize) -> Vec<f32> {
    (0..side)
        .flat_map(|y| {
            let row = &pixels[y.min(height - 1) * width..][..width];
            (0..side).map(move |x| row[x.min(width - 1)])
        })
        .collect()
}

/// The width x height image at the top left of a side x side canvas (what [`pad`] padded), as
/// its own row-major pixels.
pub fn top_left(canvas: &[f32], side: usize, width: usize, height: usize) -> Vec<f32> {
    canvas
        .chunks(side)
        .take(height)
        .flat_map(|row| &row[..width])
        .copied()
        .collect()
}

/// A progress bar over `count` images on standard error (drawn only on a terminal), labelled
/// `what`.
pub fn images_bar(what: &str, count: usize) -> ProgressBar {
    let bar = ProgressBar::new(count as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{pos}}/{{len}} images [{{bar:30}}] {{per_sec}}"
        ))
        .expect("valid template"),
    );
    bar
}

/// A folder of images, decoded and resized, held in memory.
pub struct Dataset {
    pub dir: PathBuf,
    pub size: usize,
    pub files: Vec<PathBuf>,
    /// [files.len(), size, size] pixels in [0, 1].
    pub pixels: Vec<f32>,
    /// The (width, height) of each image's own pixels, at the top left of its size x size
    /// square: the whole square for resized images, less for images kept at their own
    /// resolution (see [`Dataset::load_native`]), whose canvas beyond is padding.
    pub extents: Vec<(usize, usize)>,
    /// Entries passed over, with the reason: files that failed to decode (with --skip-bad), and
    /// what the folder walk did not take (see [`walk_images`]).
    pub skipped: Vec<(PathBuf, String)>,
}

/// The images decoded from a folder: their files, (width, height, pixels), and what was
/// passed over.
type Decoded = (
    Vec<PathBuf>,
    Vec<(usize, usize, Vec<f32>)>,
    Vec<(PathBuf, String)>,
);

/// Decodes every image under `dir` on all cores with `decode`, after `check` accepts their
/// count. A file that fails to decode is an error, or with `skip_bad` is left out and listed.
fn decode_folder(
    dir: &Path,
    skip_bad: bool,
    progress: bool,
    check: impl Fn(usize) -> Result<()>,
    decode: impl Fn(&Path) -> Result<(usize, usize, Vec<f32>)> + Sync,
) -> Result<Decoded> {
    if !dir.is_dir() {
        return Err(Error::invalid(
            "--data",
            format!("{} is not a folder", dir.display()),
        ));
    }
    let Walk { files, mut skipped } = walk_images(dir, skip_bad)?;
    if files.is_empty() {
        return Err(Error::EmptyDataDir {
            path: dir.to_path_buf(),
        });
    }
    check(files.len())?;
    let bar = match progress {
        true => images_bar("loading", files.len()),
        false => ProgressBar::hidden(),
    };
    let decoded: Vec<Result<(usize, usize, Vec<f32>)>> = files
        .par_iter()
        .map(|path| {
            let image = decode(path);
            bar.inc(1);
            image
        })
        .collect();
    bar.finish_and_clear();
    let (mut kept, mut images) = (Vec::new(), Vec::new());
    for (path, image) in files.into_iter().zip(decoded) {
        match image {
            Ok(image) => {
                kept.push(path);
                images.push(image);
            }
            Err(Error::BadImage { path, reason, .. }) if skip_bad => skipped.push((path, reason)),
            Err(Error::BadImage { path, reason, .. }) => {
                return Err(Error::BadImage {
                    path,
                    reason,
                    in_folder: true,
                });
            }
            Err(error) => return Err(error),
        }
    }
    if kept.is_empty() {
        return Err(Error::EmptyDataDir {
            path: dir.to_path_buf(),
        });
    }
    Ok((kept, images, skipped))
}

impl Dataset {
    /// Loads every image under `dir` on all cores, resized to size x size. A file that fails
    /// to decode is an error, or with `skip_bad` is left out and listed in `skipped`.
    pub fn load(dir: &Path, size: usize, skip_bad: bool, progress: bool) -> Result<Dataset> {
        let check = |count: usize| {
            memory::check_fits(
                &format!("{count} images of {size}x{size}"),
                memory::dataset_bytes(count, size),
            )
            .map_err(|why| Error::invalid("--size", why))
        };
        let decode = |path: &Path| load_image(path, size).map(|pixels| (size, size, pixels));
        let (files, images, skipped) = decode_folder(dir, skip_bad, progress, check, decode)?;
        Ok(Dataset {
            dir: dir.to_path_buf(),
            size,
            extents: vec![(size, size); files.len()],
            files,
            pixels: images.into_iter().flat_map(|(_, _, p)| p).collect(),
            skipped,
        })
    }

    /// Loads every image under `dir` at its own resolution, each at the top left of a square
    /// canvas as large as the set's largest side rounded up to a multiple of `multiple`, the
    /// rest filled by repeating its edge ([`pad`]). `flag` is the option that asked for it, named
    /// when the set does not fit in memory.
    pub fn load_native(
        dir: &Path,
        multiple: usize,
        skip_bad: bool,
        progress: bool,
        flag: &'static str,
    ) -> Result<Dataset> {
        let (files, images, skipped) =
            decode_folder(dir, skip_bad, progress, |_| Ok(()), load_native_image)?;
        let largest = images.iter().map(|&(w, h, _)| w.max(h)).max().unwrap_or(1);
        let side = canvas_side(largest, largest, multiple);
        memory::check_fits(
            &format!("{} images padded to {side}x{side}", files.len()),
            memory::dataset_bytes(files.len(), side),
        )
        .map_err(|why| Error::invalid(flag, why))?;
        Ok(Dataset {
            dir: dir.to_path_buf(),
            size: side,
            files,
            pixels: images
                .iter()
                .flat_map(|(w, h, pixels)| pad(pixels, *w, *h, side))
                .collect(),
            extents: images.iter().map(|&(w, h, _)| (w, h)).collect(),
            skipped,
        })
    }

    /// Warns of every entry passed over, on standard error, once a process: a command that
    /// loads one folder several times (`whorl demo` loads each for each model's scores and
    /// figures) names each file once.
    pub fn warn_skipped(&self) {
        static WARNED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
        let mut warned = WARNED.lock().unwrap_or_else(PoisonError::into_inner);
        for (path, reason) in &self.skipped {
            if warned.insert(path.clone()) {
                eprintln!("warning: skipped {}: {reason}", path.display());
            }
        }
    }

    /// Moves every image onto a larger square canvas of `side`, padded as [`Dataset::load_native`]
    /// pads (so that sets of different sizes run through one network).
    pub fn pad_to(&mut self, side: usize) {
        if side <= self.size {
            return;
        }
        let pixels = (0..self.len())
            .flat_map(|i| {
                let (width, height) = self.extents[i];
                pad(&self.region(i, self.image(i)), width, height, side)
            })
            .collect();
        self.pixels = pixels;
        self.size = side;
    }

    /// The image's own pixels out of a size x size buffer laid out as its canvas (the image
    /// itself, or its reconstruction): width x height, row-major.
    pub fn region(&self, index: usize, canvas: &[f32]) -> Vec<f32> {
        let (width, height) = self.extents[index];
        top_left(canvas, self.size, width, height)
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

    /// Replaces the contents of `batch` with the crop x crop windows of the images at
    /// `indices` whose top left corners are `origins`, in that order.
    pub fn gather_crops(
        &self,
        indices: &[usize],
        origins: &[(usize, usize)],
        crop: usize,
        batch: &mut Vec<f32>,
    ) {
        batch.clear();
        for (&i, &(x, y)) in indices.iter().zip(origins) {
            for row in self.image(i).chunks_exact(self.size).skip(y).take(crop) {
                batch.extend_from_slice(&row[x..x + crop]);
            }
        }
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

/// The top left corner of the crop x crop window that image `index`, of `extent` (width,
/// height), is trained on in epoch `epoch`: anywhere inside the image, drawn from the seed, the
/// epoch and the image; with `epoch` None (validation), the centred window. In a direction
/// where the image is smaller than the window, it starts at 0 and the canvas's repeated edge
/// fills the rest.
pub fn crop_origin(
    extent: (usize, usize),
    crop: usize,
    seed: u64,
    epoch: Option<usize>,
    index: usize,
) -> (usize, usize) {
    let (room_x, room_y) = (extent.0.saturating_sub(crop), extent.1.saturating_sub(crop));
    match epoch {
        None => (room_x / 2, room_y / 2),
        Some(epoch) => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6372_6f70_7321_2121);
            rng.set_stream(((epoch as u64) << 32) | index as u64);
            (rng.random_range(0..=room_x), rng.random_range(0..=room_y))
        }
    }
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
