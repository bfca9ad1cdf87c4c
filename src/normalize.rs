//! Input normalisation: what is done to each image before the model sees it, and undone to
//! the model's output, so that scores and figures compare a reconstruction with the image as
//! it was.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How each image is normalised, as `--normalize` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// Pixels as loaded, in [0, 1] (the reference's).
    #[default]
    None,
    /// Each image's contrast stretched so its 1st percentile becomes 0 and its 99th 1 (values
    /// beyond clipped); the model learns to reconstruct the stretched image, and its output is
    /// mapped back by the inverse of the image's own stretch.
    Stretch,
}

impl std::fmt::Display for Normalization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Normalization::None => "none",
            Normalization::Stretch => "stretch",
        })
    }
}

/// The narrowest range a stretch widens to [0, 1]: a nearly flat image is not blown up into
/// noise.
const MIN_RANGE: f32 = 0.05;

/// An affine map of one image's pixels, v -> (v - low) / range, and its inverse.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stretch {
    pub low: f32,
    pub range: f32,
}

impl Stretch {
    pub const IDENTITY: Stretch = Stretch {
        low: 0.0,
        range: 1.0,
    };

    /// The stretch `normalization` gives `image`.
    pub fn of(normalization: Normalization, image: &[f32]) -> Stretch {
        match normalization {
            Normalization::None => Stretch::IDENTITY,
            Normalization::Stretch => {
                // The two order statistics, without sorting the whole image.
                let mut values = image.to_vec();
                let rank = |fraction: f32| ((values.len() - 1) as f32 * fraction) as usize;
                let (low_rank, high_rank) = (rank(0.01), rank(0.99));
                let (below, &mut high, _) =
                    values.select_nth_unstable_by(high_rank, f32::total_cmp);
                let low = match low_rank < high_rank {
                    true => *below.select_nth_unstable_by(low_rank, f32::total_cmp).1,
                    false => high,
                };
                Stretch {
                    low,
                    range: (high - low).max(MIN_RANGE),
                }
            }
        }
    }

    /// v -> clamp((v - low) / range, 0, 1).
    pub fn apply(&self, image: &mut [f32]) {
        if *self == Stretch::IDENTITY {
            return;
        }
        for v in image {
            *v = ((*v - self.low) / self.range).clamp(0.0, 1.0);
        }
    }

    /// v -> low + range v.
    pub fn undo(&self, image: &mut [f32]) {
        if *self == Stretch::IDENTITY {
            return;
        }
        for v in image {
            *v = self.low + self.range * *v;
        }
    }
}

/// Normalises every image of `images` (consecutive blocks of `image_len` pixels) in place, on
/// all cores, and returns each one's stretch, to undo on its reconstruction.
pub fn normalize_batch(
    normalization: Normalization,
    images: &mut [f32],
    image_len: usize,
) -> Vec<Stretch> {
    images
        .par_chunks_exact_mut(image_len)
        .map(|image| {
            let stretch = Stretch::of(normalization, image);
            stretch.apply(image);
            stretch
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_the_identity() {
        let mut image = vec![0.2, 0.4, 0.9];
        let stretches = normalize_batch(Normalization::None, &mut image, 3);
        assert_eq!(image, vec![0.2, 0.4, 0.9]);
        assert_eq!(stretches, vec![Stretch::IDENTITY]);
    }

    #[test]
    fn stretch_maps_the_percentiles_to_the_ends_and_undo_restores_the_inside() {
        // A low-contrast image: values 0.40..0.60 in 201 steps.
        let original: Vec<f32> = (0..=200).map(|i| 0.4 + 0.2 * i as f32 / 200.0).collect();
        let mut image = original.clone();
        let stretches = normalize_batch(Normalization::Stretch, &mut image, original.len());
        assert!(image[2].abs() < 1e-6 && (image[198] - 1.0).abs() < 1e-6);
        assert!(image.iter().all(|v| (0.0..=1.0).contains(v)));
        let mut back = image.clone();
        stretches[0].undo(&mut back);
        for (a, b) in back[2..=198].iter().zip(&original[2..=198]) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn a_flat_image_is_not_blown_up() {
        let mut image = vec![0.5; 100];
        image[0] = 0.51;
        let stretch = Stretch::of(Normalization::Stretch, &image);
        assert_eq!(stretch.range, MIN_RANGE);
        stretch.apply(&mut image);
        assert!(image.iter().all(|&v| v <= 0.2 + 1e-6));
    }
}
