//! Identity kept: whether a reconstruction is still the same finger, by NIST's NBIS through the
//! `nbis-rs` crate — MINDTCT finds each image's minutiae and BOZORTH3 scores two sets of them
//! (higher is more alike; above [`MATCH_THRESHOLD`] counts as the same finger).
//!
//! Each evaluated image is compared with its reconstruction, and where the set's manifest.json
//! names each file's finger, with another impression of the same finger and with another
//! finger, so the reconstruction's scores stand beside the original's.
//!
//! MINDTCT is tuned for 500 ppi scans (a ridge period of about 9 pixels), so an image the
//! model sees at `--size` is first resized back to its file's own width and height, taken to
//! be a 500 ppi capture (one seen at its own resolution, `--native-resolution`, already is).
//! NBIS's C code keeps global state, so every call into it is serialised.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Mutex, MutexGuard};

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageFormat};
use rayon::prelude::*;

use crate::data::Dataset;
use crate::evaluate::IdentityScore;
pub use crate::evaluate::MATCH_THRESHOLD;
use crate::synth::{MANIFEST_FILE, Manifest};

/// MINDTCT can crash on images smaller than this on either side; they get no minutiae.
pub const MIN_SIDE: u32 = 16;

/// The resolution MINDTCT is told (and tuned for), in pixels per inch.
const PPI: f64 = 500.0;

static NBIS: Mutex<()> = Mutex::new(());

/// Holds NBIS for one call; a panic in an earlier call leaves nothing to repair.
fn nbis_lock() -> MutexGuard<'static, ()> {
    NBIS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One image's minutiae, as MINDTCT finds them.
#[derive(Clone, Debug)]
pub struct Minutiae(nbis::Minutiae);

impl Minutiae {
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The BOZORTH3 score of two sets; 0 when either is empty.
    pub fn score(&self, other: &Minutiae) -> i32 {
        if self.is_empty() || other.is_empty() {
            return 0;
        }
        let _held = nbis_lock();
        self.0.compare(&other.0)
    }
}

/// The minutiae of `pixels` (`shape`: width x height, values in [0, 1]) after resizing to
/// `native` (width, height); None when either is smaller than [`MIN_SIDE`] on a side or
/// MINDTCT fails on it.
pub fn minutiae(pixels: &[f32], shape: (u32, u32), native: (u32, u32)) -> Option<Minutiae> {
    let (width, height) = native;
    if shape.0.min(shape.1) < MIN_SIDE || width < MIN_SIDE || height < MIN_SIDE {
        return None;
    }
    let bytes: Vec<u8> = pixels
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let image = GrayImage::from_raw(shape.0, shape.1, bytes)?;
    let resized = image::imageops::resize(&image, width, height, FilterType::Triangle);
    let mut png = Cursor::new(Vec::new());
    DynamicImage::ImageLuma8(resized)
        .write_to(&mut png, ImageFormat::Png)
        .ok()?;
    let _held = nbis_lock();
    nbis::extract_minutiae(png.get_ref(), Some(PPI))
        .ok()
        .map(Minutiae)
}

/// The finger of each of `indices`, from the manifest.json beside the images; None without a
/// readable manifest or when it does not list every one of them.
fn fingers(dataset: &Dataset, indices: &[usize]) -> Option<Vec<usize>> {
    let text = std::fs::read_to_string(dataset.dir.join(MANIFEST_FILE)).ok()?;
    let manifest: Manifest = serde_json::from_str(&text).ok()?;
    let by_file: HashMap<&str, usize> = manifest
        .images
        .iter()
        .map(|entry| (entry.file.as_str(), entry.finger))
        .collect();
    indices
        .iter()
        .map(|&i| {
            let name = dataset.files[i].strip_prefix(&dataset.dir).ok()?;
            by_file.get(name.to_str()?).copied()
        })
        .collect()
}

/// The identity scores of each of `indices` against its reconstruction (`reconstructions`,
/// in the same order), and against genuine and impostor partners where a manifest names the
/// fingers. Images are prepared on all cores; NBIS runs one call at a time.
pub fn scores(
    dataset: &Dataset,
    indices: &[usize],
    reconstructions: &[f32],
) -> Vec<Option<IdentityScore>> {
    let side = dataset.size;
    let bar = crate::data::images_bar("minutiae (NBIS)", indices.len());
    let found: Vec<(Option<Minutiae>, Option<Minutiae>)> = indices
        .par_iter()
        .zip(reconstructions.par_chunks(side * side))
        .map(|(&i, recon)| {
            let (width, height) = dataset.extents[i];
            let shape = (width as u32, height as u32);
            let native = image::image_dimensions(&dataset.files[i]).unwrap_or(shape);
            let pair = (
                minutiae(&dataset.region(i, dataset.image(i)), shape, native),
                minutiae(&dataset.region(i, recon), shape, native),
            );
            bar.inc(1);
            pair
        })
        .collect();
    bar.finish_and_clear();
    let fingers = fingers(dataset, indices);
    let usable = |q: usize| found[q].0.as_ref().filter(|m| !m.is_empty());
    (0..indices.len())
        .map(|p| {
            let original = usable(p)?;
            let recon = found[p].1.as_ref();
            let against = |partner: Option<&Minutiae>| {
                partner.map(|other| (original.score(other), recon.map_or(0, |r| r.score(other))))
            };
            let (genuine, impostor) = match &fingers {
                Some(f) => {
                    let n = indices.len();
                    let genuine = (0..n).find(|&q| q != p && f[q] == f[p] && usable(q).is_some());
                    let impostor = (1..n)
                        .map(|k| (p + k) % n)
                        .find(|&q| f[q] != f[p] && usable(q).is_some());
                    (
                        against(genuine.and_then(usable)),
                        against(impostor.and_then(usable)),
                    )
                }
                None => (None, None),
            };
            Some(IdentityScore {
                minutiae: original.len(),
                reconstruction_minutiae: recon.map_or(0, Minutiae::len),
                kept: recon.map_or(0, |r| original.score(r)),
                genuine: genuine.map(|g| g.0),
                genuine_reconstructed: genuine.map(|g| g.1),
                impostor: impostor.map(|i| i.0),
                impostor_reconstructed: impostor.map(|i| i.1),
            })
        })
        .collect()
}
