//! Bilinear sampling of a row-major image: augmentation's resampling and the synthetic sensor's
//! impression of a master print both read between pixels through it.

/// The bilinear sample of a row-major `width` x `height` map at (x, y), within
/// [0, width - 1] x [0, height - 1]; on the last column or row, the neighbour past it is the
/// edge itself.
pub fn sample(map: &[f32], width: usize, height: usize, x: f32, y: f32) -> f32 {
    let (x0, y0) = (x as usize, y as usize);
    let (x1, y1) = ((x0 + 1).min(width - 1), (y0 + 1).min(height - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |x: usize, y: usize| map[y * width + x];
    let top = at(x0, y0) + fx * (at(x1, y0) - at(x0, y0));
    let bottom = at(x0, y1) + fx * (at(x1, y1) - at(x0, y1));
    top + fy * (bottom - top)
}
