//! One impression of a master fingerprint as a sensor captures it: placement and rotation on
//! the sensor, elastic skin distortion, the contact region a finger's pressure makes, the skin's
//! condition (wet ridges thick and merged, dry ridges thin and broken), then the sensor's own
//! background, blur, noise and contrast.

use image::{GrayImage, ImageBuffer, Luma};
use rand::Rng;

use super::ridges::Master;
use super::sensor::Sensor;
use super::skin::Skin;
use super::{ValueNoise, gaussian};

/// Pixels between exact evaluations of the elastic warp along a row.
const WARP_STEP: usize = 16;

/// smoothstep: 0 below `low`, 1 above `high`, a cubic between.
fn smoothstep(low: f32, high: f32, x: f32) -> f32 {
    let t = ((x - low) / (high - low)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Bilinear sample of a row-major `width` x `height` map, `outside` beyond its edges.
fn sample(map: &[f32], width: usize, height: usize, x: f32, y: f32, outside: f32) -> f32 {
    if !(x >= 0.0 && y >= 0.0 && x < (width - 1) as f32 && y < (height - 1) as f32) {
        return outside;
    }
    crate::bilinear::sample(map, width, height, x, y)
}

/// Renders one impression of `master` on `sensor`, with what it shows of the finger's `skin`.
pub fn render(master: &Master, sensor: &Sensor, skin: &Skin, rng: &mut impl Rng) -> GrayImage {
    let (mw, mh) = (master.width(), master.height());
    let (w, h) = (sensor.width, sensor.height);

    // Pose: the finger's centre lands near the sensor's centre, rotated by a few degrees.
    let angle = (7.0 * gaussian(rng)).clamp(-20.0, 20.0).to_radians();
    let (sin, cos) = angle.sin_cos();
    let shift = (rng.random_range(-22.0..22.0), rng.random_range(-22.0..22.0));
    // Elastic distortion: a smooth displacement of a few pixels.
    let stretch = rng.random_range(1.0..4.5);
    let (warp_x, warp_y) = (
        ValueNoise::new(rng, w as f32, h as f32, 140.0),
        ValueNoise::new(rng, w as f32, h as f32, 140.0),
    );
    // Contact region: an ellipse of the fingertip pressed on the glass, off-centre.
    let contact_center = (
        mw as f32 / 2.0 + rng.random_range(-25.0..25.0),
        mh as f32 / 2.0 + rng.random_range(-20.0..35.0),
    );
    let contact_radii = (
        rng.random_range(115.0..175.0),
        rng.random_range(140.0..210.0),
    );
    let pressure = rng.random_range(0.75..1.0);
    // Skin: the level at which the ridge pattern counts as ridge (low: wet, thick ridges).
    let wetness = rng.random_range(-0.4..0.4);
    let edge = rng.random_range(0.12..0.3);
    // Dry skin breaks ridges into pieces: small blobs of the finger where ink fails.
    let dry_breaks = ValueNoise::new(rng, mw as f32, mh as f32, 6.0);
    let dry = wetness > 0.15;
    // Ink varies along the ridges at the scale of sweat pores.
    let texture = ValueNoise::new(rng, mw as f32, mh as f32, 2.5);
    let break_level = 1.05 - 1.2 * wetness;

    let background = sensor.background + sensor.background_jitter * gaussian(rng);
    let ridge_gray = sensor.ridge + sensor.ridge_jitter * gaussian(rng);
    let blotches = ValueNoise::new(rng, w as f32, h as f32, 90.0);

    // The warp varies slowly: evaluate it every WARP_STEP pixels along a row and interpolate.
    let knots = w / WARP_STEP + 2;
    let mut warp = vec![(0.0f32, 0.0f32); knots];
    let mut gray = vec![0.0f32; w * h];
    for (row, values) in gray.chunks_exact_mut(w).enumerate() {
        let py = row as f32;
        for (k, knot) in warp.iter_mut().enumerate() {
            let px = (k * WARP_STEP) as f32;
            *knot = (stretch * warp_x.at(px, py), stretch * warp_y.at(px, py));
        }
        for (column, value) in values.iter_mut().enumerate() {
            let px = column as f32;
            let (k, t) = (
                column / WARP_STEP,
                (column % WARP_STEP) as f32 / WARP_STEP as f32,
            );
            let (a, b) = (warp[k], warp[k + 1]);
            // Sensor pixel -> master pixel: undo the shift and the rotation about the centres,
            // then warp.
            let (dx, dy) = (px - w as f32 / 2.0 - shift.0, py - h as f32 / 2.0 - shift.1);
            let x = cos * dx + sin * dy + mw as f32 / 2.0 + a.0 + t * (b.0 - a.0);
            let y = -sin * dx + cos * dy + mh as f32 / 2.0 + a.1 + t * (b.1 - a.1);

            let mask = sample(&master.mask, mw, mh, x, y, 0.0);
            let (ex, ey) = (
                (x - contact_center.0) / contact_radii.0,
                (y - contact_center.1) / contact_radii.1,
            );
            let contact = smoothstep(0.0, 0.12, 1.0 - (ex * ex + ey * ey).sqrt());
            let ridge = sample(&master.ridges, mw, mh, x, y, -1.0);
            let (level, ink_share) = match &skin.variation {
                Some(variation) => (
                    wetness + variation.threshold_shift(x, y),
                    variation.ink(x, y) * skin.marks.ink_left(x, y),
                ),
                None => (wetness, 1.0),
            };
            let mut ink = ink_share * smoothstep(level - edge, level + edge, ridge);
            if dry && dry_breaks.at(x, y) > break_level {
                ink *= 0.25;
            }
            ink *= 1.0 - sensor.ridge_texture * smoothstep(0.1, 0.7, texture.at(x, y));
            let bg = background + sensor.blotches * blotches.at(px, py);
            // In [0, 1] while the image crate blurs it (it clamps float images to that range).
            *value = (bg + (ridge_gray - bg) * ink * mask * contact * pressure) / 255.0;
        }
    }

    let mut image: ImageBuffer<Luma<f32>, Vec<f32>> =
        ImageBuffer::from_raw(w as u32, h as u32, gray).expect("sized to the sensor");
    if sensor.blur > 0.0 {
        image = image::imageops::fast_blur(&image, sensor.blur);
    }
    let stripes: Vec<f32> = (0..h).map(|_| sensor.row_stripes * gaussian(rng)).collect();
    let contrast: Vec<u8> = (0..256)
        .map(|v| (255.0 * (v as f32 / 255.0).powf(sensor.gamma)).round() as u8)
        .collect();
    GrayImage::from_fn(w as u32, h as u32, |x, y| {
        let v =
            255.0 * image.get_pixel(x, y)[0] + stripes[y as usize] + sensor.noise * gaussian(rng);
        Luma([contrast[v.round().clamp(0.0, 255.0) as usize]])
    })
}
