//! The master fingerprint: a ridge-frequency map, a fingertip mask, and the ridge pattern grown
//! from a few seeds by iterative, space-variant Gabor filtering along the orientation and
//! frequency maps (SFinGe, Cappelli, Maio and Maltoni, 2000). Where fronts grown from
//! different seeds meet out of phase, ridges end or fork: the minutiae come from the process.

use std::f32::consts::PI;

use rand::Rng;
use rayon::prelude::*;

use super::ValueNoise;
use super::orientation::{FingerClass, OrientationField, Point};

/// The master canvas: 320 x 384 pixels, 16 x 19 mm at 500 dpi.
pub const MASTER_WIDTH: usize = 320;
pub const MASTER_HEIGHT: usize = 384;

/// Gabor kernels: 15 rows x 16 columns (the last column zero, for 16-wide vector loads).
const RADIUS: usize = 7;
const ROWS: usize = 2 * RADIUS + 1;
const COLS: usize = 16;
/// Kernel bank resolution: orientations over [0, pi) and ridge periods in pixels.
const ORIENTATIONS: usize = 36;
const PERIOD_MIN: f32 = 6.0;
const PERIOD_STEP: f32 = 0.5;
const PERIODS: usize = 14;
/// Gaussian envelope along and across the ridges, in pixels.
const SIGMA_ALONG: f32 = 4.0;
const SIGMA_ACROSS: f32 = 3.0;
/// Each pass multiplies the filtered pattern by this and clips it to [-1, 1].
const GAIN: f32 = 4.0;
const MAX_PASSES: usize = 40;
const SETTLING_PASSES: usize = 4;
/// Passes at full resolution after the coarse growth.
const FINE_PASSES: usize = 3;

type Kernel = [[f32; COLS]; ROWS];

/// g(u, v) = exp(-u^2 / 2 sa^2 - v^2 / 2 sc^2) cos(2 pi v / period), u along and v across
/// the ridges, made zero-mean and scaled so a matching unit sinusoid passes with gain 1; on a
/// grid `scale` times as fine as the master's (periods and envelopes scaled alike).
fn gabor_kernel(theta: f32, period: f32, scale: f32) -> Kernel {
    let (s, c) = theta.sin_cos();
    let period = period * scale;
    let (sigma_along, sigma_across) = (SIGMA_ALONG * scale, SIGMA_ACROSS * scale);
    let mut kernel = [[0.0; COLS]; ROWS];
    let mut envelope = [[0.0; COLS]; ROWS];
    for (dy, row) in kernel.iter_mut().enumerate() {
        for (dx, k) in row.iter_mut().take(ROWS).enumerate() {
            let (x, y) = (dx as f32 - RADIUS as f32, dy as f32 - RADIUS as f32);
            let along = x * c + y * s;
            let across = -x * s + y * c;
            let e = (-along * along / (2.0 * sigma_along * sigma_along)
                - across * across / (2.0 * sigma_across * sigma_across))
                .exp();
            envelope[dy][dx] = e;
            *k = e * (2.0 * PI * across / period).cos();
        }
    }
    let total: f32 = kernel.iter().flatten().sum();
    let weight: f32 = envelope.iter().flatten().sum();
    let mut response = 0.0;
    for dy in 0..ROWS {
        for dx in 0..ROWS {
            kernel[dy][dx] -= envelope[dy][dx] * total / weight;
            let (x, y) = (dx as f32 - RADIUS as f32, dy as f32 - RADIUS as f32);
            response += kernel[dy][dx] * (2.0 * PI * (-x * s + y * c) / period).cos();
        }
    }
    for k in kernel.iter_mut().flatten() {
        *k /= response;
    }
    kernel
}

fn kernel_bank(scale: f32) -> Vec<Kernel> {
    (0..ORIENTATIONS)
        .flat_map(|o| {
            (0..PERIODS).map(move |p| {
                let theta = o as f32 * PI / ORIENTATIONS as f32;
                gabor_kernel(theta, PERIOD_MIN + p as f32 * PERIOD_STEP, scale)
            })
        })
        .collect()
}

fn kernel_index(theta: f32, period: f32) -> u16 {
    let o = (theta / PI * ORIENTATIONS as f32).round() as usize % ORIENTATIONS;
    let p = ((period - PERIOD_MIN) / PERIOD_STEP)
        .round()
        .clamp(0.0, (PERIODS - 1) as f32);
    (o * PERIODS + p as usize) as u16
}

/// A master fingerprint: everything about one finger that its impressions share.
#[derive(Clone, Debug)]
pub struct Master {
    pub class: FingerClass,
    pub field: OrientationField,
    /// Ridge period in pixels at each pixel (row-major, MASTER_WIDTH x MASTER_HEIGHT).
    pub periods: Vec<f32>,
    /// 1 inside the fingertip, 0 outside, a soft edge between.
    pub mask: Vec<f32>,
    /// The ridge pattern in [-1, 1]: +1 on a ridge, -1 in a valley.
    pub ridges: Vec<f32>,
}

impl Master {
    pub fn width(&self) -> usize {
        MASTER_WIDTH
    }

    pub fn height(&self) -> usize {
        MASTER_HEIGHT
    }

    /// Grows the master fingerprint of one finger of `class`.
    pub fn generate(class: FingerClass, rng: &mut impl Rng) -> Master {
        let (w, h) = (MASTER_WIDTH, MASTER_HEIGHT);
        let center = Point {
            x: w as f32 / 2.0,
            y: h as f32 / 2.0 + 10.0,
        };
        let field = OrientationField::random(class, center, rng);

        // A superellipse fingertip, flatter at the sides than an ellipse.
        let (a, b) = (
            rng.random_range(118.0..148.0),
            rng.random_range(150.0..180.0),
        );
        let tip = Point {
            x: center.x + rng.random_range(-6.0..6.0),
            y: center.y + rng.random_range(-8.0..8.0),
        };
        let mask: Vec<f32> = (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                let r = ((x - tip.x) / a).abs().powf(2.5) + ((y - tip.y) / b).abs().powf(2.5);
                // 1 inside, falling to 0 over about 6 pixels at the edge.
                ((1.0 - r) * 25.0).clamp(0.0, 1.0)
            })
            .collect();

        // Ridge period around 9 pixels (500 dpi), varying smoothly by up to about 10%.
        let base = rng.random_range(8.3..9.7);
        let wobble = ValueNoise::new(rng, w as f32, h as f32, 120.0);
        let periods: Vec<f32> = (0..w * h)
            .map(|i| base * (1.0 + 0.1 * wobble.at((i % w) as f32, (i / w) as f32)))
            .collect();

        let ridges = grow_ridges(&field, &periods, &mask, rng);
        Master {
            class,
            field,
            periods,
            mask,
            ridges,
        }
    }
}

/// A pattern on a grid `width` wide, padded so that kernels never leave it.
struct Canvas {
    width: usize,
    values: Vec<f32>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Canvas {
            width,
            values: vec![0.0; (width + COLS) * (height + 2 * RADIUS)],
        }
    }

    fn at(&self, x: usize, y: usize) -> usize {
        (y + RADIUS) * (self.width + COLS) + x + RADIUS
    }

    /// One pass: each pixel of the fingertip's bounding box filtered by its own kernel from
    /// `bank` (index[pixel]), amplified by GAIN and clipped to [-1, 1].
    fn filter(&mut self, next: &mut Canvas, bank: &[Kernel], index: &[u16], bounds: &Bounds) {
        let (w, pw) = (self.width, self.width + COLS);
        let pattern = &self.values;
        next.values
            .par_chunks_mut(pw)
            .enumerate()
            .skip(RADIUS + bounds.rows.start)
            .take(bounds.rows.len())
            .for_each(|(padded_row, out)| {
                let y = padded_row - RADIUS;
                for x in bounds.columns.clone() {
                    let kernel = &bank[index[y * w + x] as usize];
                    let mut sum = [0.0f32; COLS];
                    for (dy, row) in kernel.iter().enumerate() {
                        let start = (y + dy) * pw + x;
                        let window: &[f32; COLS] =
                            pattern[start..start + COLS].try_into().expect("16 values");
                        for i in 0..COLS {
                            sum[i] += row[i] * window[i];
                        }
                    }
                    out[x + RADIUS] = (GAIN * sum.iter().sum::<f32>()).clamp(-1.0, 1.0);
                }
            });
        std::mem::swap(&mut self.values, &mut next.values);
    }
}

/// The fingertip's bounding box, plus a kernel's reach, on a grid.
struct Bounds {
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
}

fn bounds(mask: &[f32], w: usize, h: usize) -> Bounds {
    let (mut x0, mut x1, mut y0, mut y1) = (w, 0, h, 0);
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m > 0.0) {
        (x0, x1, y0, y1) = (x0.min(i % w), x1.max(i % w), y0.min(i / w), y1.max(i / w));
    }
    Bounds {
        rows: y0.saturating_sub(RADIUS)..(y1 + RADIUS + 1).min(h),
        columns: x0.saturating_sub(RADIUS)..(x1 + RADIUS + 1).min(w),
    }
}

/// Grows the ridges in two stages. First on a grid half as fine (a quarter of the pixels):
/// a few patches of the local sinusoid seeded at random places inside the mask, then passes
/// of the space-variant Gabor filter until the pattern fills the fingertip. Then, upsampled to
/// the master's grid, a few passes at full resolution sharpen it.
fn grow_ridges(
    field: &OrientationField,
    periods: &[f32],
    mask: &[f32],
    rng: &mut impl Rng,
) -> Vec<f32> {
    let (w, h) = (MASTER_WIDTH, MASTER_HEIGHT);
    let (cw, ch) = (w / 2, h / 2);
    // The coarse grid samples the master at every other pixel.
    let coarse = |i: usize| (2 * (i / cw)) * w + 2 * (i % cw);
    let coarse_mask: Vec<f32> = (0..cw * ch).map(|i| mask[coarse(i)]).collect();
    let coarse_index: Vec<u16> = (0..cw * ch)
        .map(|i| {
            let (x, y) = (2 * (i % cw), 2 * (i / cw));
            kernel_index(field.at(x as f32, y as f32), periods[coarse(i)])
        })
        .collect();

    let mut pattern = Canvas::new(cw, ch);
    let seeds = rng.random_range(20..30);
    let mut placed = 0;
    while placed < seeds {
        let (sx, sy) = (rng.random_range(0..cw), rng.random_range(0..ch));
        if coarse_mask[sy * cw + sx] < 1.0 {
            continue;
        }
        placed += 1;
        let theta = field.at(2.0 * sx as f32, 2.0 * sy as f32);
        let (s, c) = theta.sin_cos();
        let phase = rng.random_range(0.0..2.0 * PI);
        let period = periods[coarse(sy * cw + sx)] / 2.0;
        for y in sy.saturating_sub(3)..(sy + 4).min(ch) {
            for x in sx.saturating_sub(3)..(sx + 4).min(cw) {
                let across = -(x as f32 - sx as f32) * s + (y as f32 - sy as f32) * c;
                let at = pattern.at(x, y);
                pattern.values[at] = (2.0 * PI * across / period + phase).cos();
            }
        }
    }

    let (bank, box_coarse) = (kernel_bank(0.5), bounds(&coarse_mask, cw, ch));
    let mut next = Canvas::new(cw, ch);
    let inside = coarse_mask.iter().filter(|&&m| m > 0.5).count();
    let mut remaining = MAX_PASSES;
    while remaining > 0 {
        remaining -= 1;
        pattern.filter(&mut next, &bank, &coarse_index, &box_coarse);
        // Filled: ridges everywhere in the fingertip but on their zero crossings; a few more
        // passes even out the last fronts.
        let grown = (0..cw * ch)
            .filter(|&i| {
                coarse_mask[i] > 0.5 && pattern.values[pattern.at(i % cw, i / cw)].abs() > 0.05
            })
            .count();
        if remaining > SETTLING_PASSES && grown as f32 >= 0.985 * inside as f32 {
            remaining = SETTLING_PASSES;
        }
    }

    // Bilinear upsampling to the master's grid, then full-resolution passes.
    let mut fine = Canvas::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let (fx, fy) = (x as f32 / 2.0, y as f32 / 2.0);
            let (x0, y0) = ((fx as usize).min(cw - 1), (fy as usize).min(ch - 1));
            let (x1, y1) = ((x0 + 1).min(cw - 1), (y0 + 1).min(ch - 1));
            let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
            let v = |x: usize, y: usize| pattern.values[pattern.at(x, y)];
            let top = v(x0, y0) + tx * (v(x1, y0) - v(x0, y0));
            let bottom = v(x0, y1) + tx * (v(x1, y1) - v(x0, y1));
            let at = fine.at(x, y);
            fine.values[at] = top + ty * (bottom - top);
        }
    }
    let index: Vec<u16> = (0..w * h)
        .map(|i| kernel_index(field.at((i % w) as f32, (i / w) as f32), periods[i]))
        .collect();
    let (bank, box_fine) = (kernel_bank(1.0), bounds(mask, w, h));
    let mut next = Canvas::new(w, h);
    for _ in 0..FINE_PASSES {
        fine.filter(&mut next, &bank, &index, &box_fine);
    }
    (0..w * h)
        .map(|i| fine.values[fine.at(i % w, i / w)])
        .collect()
}
