//! The gather of the one-output-channel upsampled convolution's backward GEMMs (conv6): for
//! each source pixel, the nine 2x2 box sums of dz its taps see, copied into one row of a tile
//! (im2col), so that a backward pass becomes tiles times a kernel matrix (backward-data) or
//! tiles against the source (kernel gradient).

use super::super::Nhwc;

/// Box sums per gathered row: a 3x3 grid of 2x2 boxes over a 4x4 window of dz.
pub(super) const TAPS: usize = 9;

/// The box sums of a one-channel dz of shape `dz`, gathered for each pixel of `grid`, the
/// source at half dz's resolution: source pixel (i, j) reads the 4x4 window of dz from
/// (2i - 1, 2j - 1), the output pixels whose 3x3 windows over the upsampled source read it.
#[derive(Clone, Copy)]
pub(super) struct Gather {
    dz: Nhwc,
    grid: Nhwc,
}

impl Gather {
    pub(super) fn box_sums(dz: Nhwc, grid: Nhwc) -> Self {
        debug_assert_eq!(dz.channels, 1, "the gather reads a one-channel dz");
        Gather { dz, grid }
    }

    pub(super) fn grid(&self) -> Nhwc {
        self.grid
    }

    /// Row p of `rows` gathers the window of grid pixel `first + p`: tap (r, q) (row-major) is
    /// (w[r, q] + w[r, q + 1]) + (w[r + 1, q] + w[r + 1, q + 1]) for the window w, pixels
    /// outside the image counted as zeros. Each grid row's stretch of pixels goes in one pass.
    pub(super) fn rows(&self, dz: &[f32], first: usize, rows: &mut [f32]) {
        let width = self.grid.width;
        let mut pixel = first;
        let mut rest = rows;
        while !rest.is_empty() {
            let column = pixel % width;
            let stretch = (width - column).min(rest.len() / TAPS);
            let (these, others) = std::mem::take(&mut rest).split_at_mut(stretch * TAPS);
            self.grid_row_stretch(dz, pixel, these);
            pixel += stretch;
            rest = others;
        }
    }

    /// [`rows`](Self::rows) for pixels `first..` of one grid row.
    fn grid_row_stretch(&self, dz: &[f32], first: usize, rows: &mut [f32]) {
        let (gh, gw) = (self.grid.height, self.grid.width);
        let (image, i, left) = (first / (gh * gw), first / gw % gh, first % gw);
        let (height, dz_width) = (self.dz.height, self.dz.width);
        // The window's four rows of dz, 2i - 1 ..= 2i + 2; None outside the image.
        let lines: [Option<&[f32]>; 4] = std::array::from_fn(|r| {
            let y = (2 * i + r).checked_sub(1).filter(|&y| y < height)?;
            Some(&dz[(image * height + y) * dz_width..][..dz_width])
        });
        for (j, row) in (left..).zip(rows.chunks_exact_mut(TAPS)) {
            // Each line's pair sums over the window's columns 2j - 1 ..= 2j + 2 (a plain loop:
            // as an array's map, its closure was sometimes left out of line, 10% of conv6's
            // backward-data).
            let mut pairs = [[0.0; 3]; 4];
            for (pairs, line) in pairs.iter_mut().zip(&lines) {
                if let Some(line) = line {
                    *pairs = pair_sums(line, j);
                }
            }
            for r in 0..3 {
                for q in 0..3 {
                    row[3 * r + q] = pairs[r][q] + pairs[r + 1][q];
                }
            }
        }
    }
}

/// (v[q] + v[q + 1]) for q in 0..3, v = `line`'s values 2j - 1 ..= 2j + 2 (zeros outside).
#[inline(always)]
fn pair_sums(line: &[f32], j: usize) -> [f32; 3] {
    let v = match line.get((2 * j).wrapping_sub(1)..2 * j + 3) {
        Some(&[a, b, c, d]) => [a, b, c, d],
        _ => std::array::from_fn(|k| {
            (2 * j + k)
                .checked_sub(1)
                .and_then(|c| line.get(c))
                .map_or(0.0, |&v| v)
        }),
    };
    [v[0] + v[1], v[1] + v[2], v[2] + v[3]]
}
