//! The gather of the upsampled convolutions' backward GEMMs: for each source pixel, the nine
//! 2x2 box sums of dz its taps see, copied into one row of a tile (im2col), so that a backward
//! pass becomes tiles times a kernel matrix (backward-data) or tiles against the source
//! (kernel gradient).

use super::super::Nhwc;

/// The widest window gathered.
const MAX_WINDOW: usize = 4;

/// A square window of `size` x `size` pixels (at most [`MAX_WINDOW`]): for grid pixel (i, j)
/// it covers source rows stride * i + origin.0 + 0..size and columns stride * j + origin.1 +
/// 0..size.
#[derive(Clone, Copy)]
pub(super) struct Window {
    size: usize,
    stride: usize,
    origin: (isize, isize),
}

impl Window {
    /// The 4x4 window at stride 2 from (2i - 1, 2j - 1): the output pixels whose 3x3 windows
    /// over an upsampled-x2 input read source pixel (i, j).
    pub(super) const UPSAMPLED_READERS: Window = Window {
        size: 4,
        stride: 2,
        origin: (-1, -1),
    };
}

/// Where a window lies in the source at one grid pixel: each window row's first source pixel
/// and each window column, None where it leaves the image.
#[derive(Clone, Copy)]
struct Placed {
    rows: [Option<usize>; MAX_WINDOW],
    cols: [Option<usize>; MAX_WINDOW],
    size: usize,
    /// The source column of the window's first column, and the window's step per grid column.
    left: isize,
    stride: usize,
    src_width: usize,
}

/// `at` as an index below `len`, None outside 0..len.
fn inside(at: isize, len: usize) -> Option<usize> {
    usize::try_from(at).ok().filter(|&at| at < len)
}

impl Placed {
    /// `window` at `pixel`, which is (image, i, j) of a grid of `grid.height` x `grid.width`.
    fn new(src: Nhwc, grid: Nhwc, window: Window, pixel: usize) -> Self {
        let (gh, gw) = (grid.height, grid.width);
        let (image, i, j) = (pixel / (gh * gw), pixel / gw % gh, pixel % gw);
        let top = (window.stride * i) as isize + window.origin.0;
        let left = (window.stride * j) as isize + window.origin.1;
        Placed {
            rows: std::array::from_fn(|r| {
                inside(top + r as isize, src.height).map(|y| (image * src.height + y) * src.width)
            }),
            cols: std::array::from_fn(|q| inside(left + q as isize, src.width)),
            size: window.size,
            left,
            stride: window.stride,
            src_width: src.width,
        }
    }

    /// Moves the window to the next pixel of the same grid row.
    fn step_right(&mut self) {
        self.left += self.stride as isize;
        let (left, width) = (self.left, self.src_width);
        self.cols = std::array::from_fn(|q| inside(left + q as isize, width));
    }

    /// The source pixel under window pixel (r, q), None outside the image.
    #[inline(always)]
    fn at(&self, r: usize, q: usize) -> Option<usize> {
        Some(self.rows[r]? + self.cols[q]?)
    }
}

/// The box sums of a source tensor of shape `src` gathered for each pixel of `grid`: tap
/// (r, q) sums window pixels (r, q), (r, q + 1), (r + 1, q) and (r + 1, q + 1) of the window.
#[derive(Clone, Copy)]
pub(super) struct Gather {
    src: Nhwc,
    grid: Nhwc,
    window: Window,
}

impl Gather {
    /// The nine 2x2 box sums of the 4x4 window [`Window::UPSAMPLED_READERS`] of `src`.
    pub(super) fn box_sums(src: Nhwc, grid: Nhwc) -> Self {
        Gather {
            src,
            grid,
            window: Window::UPSAMPLED_READERS,
        }
    }

    pub(super) fn grid(&self) -> Nhwc {
        self.grid
    }

    /// Taps per gathered row.
    fn tap_count(&self) -> usize {
        (self.window.size - 1).pow(2)
    }

    /// Values per gathered row.
    pub(super) fn row_len(&self) -> usize {
        self.tap_count() * self.src.channels
    }

    /// Row r of `rows` gathers the window of grid pixel `first + r` from `x`: taps in
    /// row-major order, each with all of the source's channels, zeros outside the image.
    pub(super) fn rows(&self, x: &[f32], first: usize, rows: &mut [f32]) {
        let width = self.grid.width;
        let mut placed = Placed::new(self.src, self.grid, self.window, first);
        let mut column = first % width;
        for (offset, row) in rows.chunks_exact_mut(self.row_len()).enumerate() {
            box_sum_taps(self.src.channels, x, &placed, row);
            column += 1;
            if column == width {
                column = 0;
                placed = Placed::new(self.src, self.grid, self.window, first + offset + 1);
            } else {
                placed.step_right();
            }
        }
    }
}

/// One gathered row of 2x2 box sums over the window `placed`:
/// tap (r, q) = (x[r, q] + x[r, q + 1]) + (x[r + 1, q] + x[r + 1, q + 1]), pixels outside
/// the image counted as zeros.
fn box_sum_taps(c: usize, x: &[f32], placed: &Placed, row: &mut [f32]) {
    let side = placed.size - 1;
    if c == 1 {
        // One channel (conv6's dz): values, without a slice per value.
        let value = |r: usize, q: usize| placed.at(r, q).map_or(0.0, |s| x[s]);
        for (tap, out) in row.iter_mut().enumerate() {
            let (r, q) = (tap / side, tap % side);
            *out = (value(r, q) + value(r, q + 1)) + (value(r + 1, q) + value(r + 1, q + 1));
        }
        return;
    }
    let pixel = |r: usize, q: usize| placed.at(r, q).map(|s| &x[s * c..][..c]);
    for (tap, out) in row.chunks_exact_mut(c).enumerate() {
        let (r, q) = (tap / side, tap % side);
        let corners = [
            pixel(r, q),
            pixel(r, q + 1),
            pixel(r + 1, q),
            pixel(r + 1, q + 1),
        ];
        if let [Some(a), Some(b), Some(d), Some(e)] = corners {
            // Inside the image, the common case: one pass.
            for ((((o, a), b), d), e) in out.iter_mut().zip(a).zip(b).zip(d).zip(e) {
                *o = (a + b) + (d + e);
            }
            continue;
        }
        let [a, b, d, e] =
            corners.map(|corner| move |k: usize| corner.map_or(0.0, |corner: &[f32]| corner[k]));
        for (k, o) in out.iter_mut().enumerate() {
            *o = (a(k) + b(k)) + (d(k) + e(k));
        }
    }
}
