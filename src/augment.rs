//! Training augmentation: each training image, each epoch, is changed at random before the
//! model sees it, and the model is asked to reconstruct the changed image. Geometry first (one
//! bilinear resampling for the flips, zoom and rotation together, edges repeated), then
//! contrast, polarity and noise. The draws depend only on the seed, the epoch and the image,
//! so a run (and a resumed run) sees the same images on any backend.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// One kind of change, as `--augment` names it.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Augmentation {
    /// One of the eight flips and quarter turns of the square, at random.
    Flip,
    /// A rotation by up to 25 degrees either way.
    Rotate,
    /// A random crop of 62-100% of the side, enlarged to the full side: a partial print, seen
    /// at up to 1.6 times the resolution.
    Zoom,
    /// Contrast 0.6-1.2 times about the image's mean, then a gamma of 0.67-1.5.
    Contrast,
    /// Half of the images inverted: light ridges on dark, as some sensors give.
    Invert,
    /// Gaussian pixel noise of standard deviation up to 0.06.
    Noise,
}

impl std::fmt::Display for Augmentation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Augmentation::Flip => "flip",
            Augmentation::Rotate => "rotate",
            Augmentation::Zoom => "zoom",
            Augmentation::Contrast => "contrast",
            Augmentation::Invert => "invert",
            Augmentation::Noise => "noise",
        })
    }
}

/// The augmentations in use, in a canonical order, each once.
pub fn canonical(kinds: &[Augmentation]) -> Vec<Augmentation> {
    let mut kinds = kinds.to_vec();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// How `whorl train` describes a set of augmentations.
pub fn describe(kinds: &[Augmentation]) -> String {
    match kinds.is_empty() {
        true => "none".into(),
        false => kinds
            .iter()
            .map(Augmentation::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The random stream of image `image` in epoch `epoch`: apart from the split's and the
/// shuffles' streams, which use the seed itself.
fn image_rng(seed: u64, epoch: usize, image: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6175_676d_656e_7421);
    rng.set_stream(((epoch as u64) << 32) | image as u64);
    rng
}

/// Bilinear sample of a side x side image at (x, y), edges repeated beyond it.
fn sample(image: &[f32], side: usize, x: f32, y: f32) -> f32 {
    let last = (side - 1) as f32;
    crate::bilinear::sample(image, side, side, x.clamp(0.0, last), y.clamp(0.0, last))
}

/// Changes `image` (side x side, values in [0, 1]) in place by `kinds`, drawn for image `index`
/// of epoch `epoch`.
pub fn apply(
    kinds: &[Augmentation],
    seed: u64,
    epoch: usize,
    index: usize,
    image: &mut [f32],
    side: usize,
) {
    if kinds.is_empty() {
        return;
    }
    let rng = &mut image_rng(seed, epoch, index);
    let uses = |kind| kinds.contains(&kind);
    // Every draw is made whether or not its kind is in use, so adding one kind leaves the
    // others' draws for an image unchanged.
    let (turns, mirror) = (rng.random_range(0..4u32), rng.random_bool(0.5));
    let angle = rng.random_range(-25.0f32..25.0).to_radians();
    let zoom = rng.random_range(1.0f32..1.6);
    let (shift_x, shift_y) = (
        rng.random_range(-0.5f32..0.5),
        rng.random_range(-0.5f32..0.5),
    );
    let gain = rng.random_range(0.6f32..1.2);
    let gamma = rng.random_range(-0.4f32..0.4).exp();
    let inverted = rng.random_bool(0.5);
    let noise = rng.random_range(0.0f32..0.06);

    if uses(Augmentation::Flip) || uses(Augmentation::Rotate) || uses(Augmentation::Zoom) {
        let (turns, mirror) = match uses(Augmentation::Flip) {
            true => (turns, mirror),
            false => (0, false),
        };
        let angle = if uses(Augmentation::Rotate) {
            angle
        } else {
            0.0
        };
        let zoom = if uses(Augmentation::Zoom) { zoom } else { 1.0 };
        let center = (side - 1) as f32 / 2.0;
        // The crop may move anywhere it stays inside the image.
        let slack = center * (1.0 - 1.0 / zoom);
        let (cx, cy) = (
            center + 2.0 * shift_x * slack,
            center + 2.0 * shift_y * slack,
        );
        let (sin, cos) = angle.sin_cos();
        let source = image.to_vec();
        for (row, values) in image.chunks_exact_mut(side).enumerate() {
            for (column, value) in values.iter_mut().enumerate() {
                // Output pixel -> flipped and turned -> rotated and scaled about the crop's
                // centre -> source pixel.
                let (mut u, mut v) = (column as f32 - center, row as f32 - center);
                if mirror {
                    u = -u;
                }
                for _ in 0..turns {
                    (u, v) = (-v, u);
                }
                let (u, v) = ((cos * u - sin * v) / zoom, (sin * u + cos * v) / zoom);
                *value = sample(&source, side, cx + u, cy + v);
            }
        }
    }
    if uses(Augmentation::Contrast) {
        let mean = image.iter().sum::<f32>() / image.len() as f32;
        for value in image.iter_mut() {
            *value = (mean + gain * (*value - mean)).clamp(0.0, 1.0).powf(gamma);
        }
    }
    if uses(Augmentation::Invert) && inverted {
        for value in image.iter_mut() {
            *value = 1.0 - *value;
        }
    }
    if uses(Augmentation::Noise) {
        for value in image.iter_mut() {
            let z: f32 = rng.sample(StandardNormal);
            *value = (*value + noise * z).clamp(0.0, 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    /// A side x side test image with no symmetry: a ramp plus a bright spot off the diagonal.
    fn picture(side: usize) -> Vec<f32> {
        (0..side * side)
            .map(|i| {
                let (x, y) = (i % side, i / side);
                let spot = if x == 2 && y == 5 { 0.5 } else { 0.0 };
                (x as f32 + 3.0 * y as f32) / (4.0 * side as f32) + spot
            })
            .collect()
    }

    #[test]
    fn no_augmentation_leaves_the_image_alone() {
        let mut image = picture(16);
        apply(&[], 13, 0, 0, &mut image, 16);
        assert_eq!(image, picture(16));
    }

    #[test]
    fn flips_move_pixels_exactly_and_keep_their_values() {
        let side = 16;
        let original = picture(side);
        let mut sorted_original = original.clone();
        sorted_original.sort_by(f32::total_cmp);
        let mut changed = 0;
        for index in 0..16 {
            let mut image = original.clone();
            apply(&[Augmentation::Flip], 13, 0, index, &mut image, side);
            let mut sorted = image.clone();
            sorted.sort_by(f32::total_cmp);
            for (a, b) in sorted.iter().zip(&sorted_original) {
                assert!((a - b).abs() < 1e-6, "a flip changed a value: {a} vs {b}");
            }
            changed += usize::from(image != original);
        }
        assert!(changed >= 8, "only {changed} of 16 images were flipped");
    }

    #[test]
    fn draws_are_repeatable_and_differ_by_epoch_and_image() {
        let kinds = [
            Augmentation::Rotate,
            Augmentation::Zoom,
            Augmentation::Contrast,
            Augmentation::Noise,
        ];
        let run = |epoch, index| {
            let mut image = picture(24);
            apply(&kinds, 13, epoch, index, &mut image, 24);
            image
        };
        assert_eq!(run(3, 7), run(3, 7));
        assert_ne!(run(3, 7), run(4, 7));
        assert_ne!(run(3, 7), run(3, 8));
    }

    #[test]
    fn every_kind_keeps_values_in_range() {
        let all = Augmentation::value_variants();
        for index in 0..20 {
            let mut image = picture(20);
            apply(all, 5, 1, index, &mut image, 20);
            assert!(image.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    #[test]
    fn invert_turns_half_the_images_to_their_negative() {
        let original = picture(8);
        let inverted = (0..40)
            .filter(|&index| {
                let mut image = original.clone();
                apply(&[Augmentation::Invert], 13, 0, index, &mut image, 8);
                if image == original {
                    return false;
                }
                assert!(
                    image
                        .iter()
                        .zip(&original)
                        .all(|(a, b)| (a + b - 1.0).abs() < 1e-6)
                );
                true
            })
            .count();
        assert!((10..=30).contains(&inverted), "{inverted} of 40 inverted");
    }

    #[test]
    fn zoom_enlarges_a_crop() {
        // A horizontal ramp: a crop enlarged k times rises k times more slowly.
        let side = 32;
        let ramp: Vec<f32> = (0..side * side)
            .map(|i| (i % side) as f32 / side as f32)
            .collect();
        let mut image = ramp.clone();
        apply(&[Augmentation::Zoom], 13, 0, 3, &mut image, side);
        let slope = image[side * 16 + 20] - image[side * 16 + 10];
        let original = ramp[side * 16 + 20] - ramp[side * 16 + 10];
        assert!(
            slope < original * 0.9999 && slope > original / 1.61,
            "{slope} vs {original}"
        );
    }
}
