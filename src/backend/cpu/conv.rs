//! Convolutions on the CPU. Each output pixel's input window is gathered into one row of a tile
//! (im2col) and tiles are multiplied by the kernel with a GEMM (the `gemm` crate).
//!
//! A convolution that reads its input upsampled x2 (nearest) never builds the upsampled
//! tensor: an output pixel of row parity a and column parity b sees only a 2x2 window of
//! source pixels, so the 3x3 kernel folds into four 2x2 "phase" kernels: 4/9 of the work.
//!
//! A convolution with one output channel read upsampled (conv6) runs as direct loops instead:
//! see [`super::thin`].
//!
//! Pixels are cut into WORK_CHUNKS pieces of whole image rows whatever the thread count, and
//! reductions add the pieces in a fixed order, so results are the same bits on any machine.

use rayon::prelude::*;

use super::super::{Conv, ConvInput, Nhwc};
use super::thin;
use crate::model::Activation;

/// Pixels per im2col tile: a tile of the widest layer (9 x 128 taps) stays in L2.
pub const TILE_PIXELS: usize = 128;
/// The fixed partition of each convolution's pixels into independent pieces of work.
pub const WORK_CHUNKS: usize = 64;

/// For an output of parity p (0 even, 1 odd) and a 2x2 phase-kernel tap u: the taps of the
/// 3x3 kernel (along that axis) that read the same source pixel. Source offset is p - 1 + u.
const PHASE_TAPS: [[&[usize]; 2]; 2] = [[&[0], &[1, 2]], [&[0, 1], &[2]]];
/// For backward-data through an upsample: the 3x3 taps (along one axis) by which the output
/// at offset 2i - 1 + d (d = 0..4) reads source pixel i.
const TRANSPOSED_TAPS: [&[usize]; 4] = [&[2], &[1, 2], &[0, 1], &[0]];

/// Scratch space, sized once by [`ConvScratch::plan`].
#[derive(Debug, Default)]
pub struct ConvScratch {
    /// Per chunk of work: an im2col tile, then a tile of outputs or gathered gradients.
    tiles: Vec<f32>,
    tile_len: usize,
    /// Per chunk of work: a partial kernel-and-bias gradient.
    partials: Vec<f32>,
    partial_len: usize,
    /// A transformed kernel (flipped, phase or transposed), or the summed partials.
    kernel: Vec<f32>,
}

/// Widest im2col row any pass of this convolution gathers.
fn widest_row(conv: &Conv) -> usize {
    let (cin, cout) = (conv.slot.in_channels, conv.slot.out_channels);
    match conv.read {
        ConvInput::Direct => 9 * cin.max(cout),
        ConvInput::Upsampled2 => (4 * cin).max(16 * cout),
    }
}

/// Values of a kernel gradient as accumulated (9 taps, or four 2x2 phase kernels) plus bias.
fn partial_len(conv: &Conv) -> usize {
    let taps = match conv.read {
        ConvInput::Direct => 9,
        ConvInput::Upsampled2 => 16,
    };
    let slot = &conv.slot;
    taps * slot.in_channels * slot.out_channels + slot.out_channels
}

impl ConvScratch {
    /// Makes room for every convolution in `shapes`.
    pub fn plan(&mut self, convs: &[Conv]) {
        let widest = convs.iter().map(widest_row).max().unwrap_or(0);
        let cout = convs.iter().map(|c| c.slot.out_channels).max().unwrap_or(0);
        self.partial_len = convs.iter().map(partial_len).max().unwrap_or(0);
        self.tile_len = TILE_PIXELS * (widest + cout);
        self.tiles = vec![0.0; WORK_CHUNKS * self.tile_len];
        self.partials = vec![0.0; WORK_CHUNKS * self.partial_len];
        self.kernel = vec![0.0; self.partial_len];
    }

    pub fn fits(&self, conv: &Conv) -> bool {
        TILE_PIXELS * (widest_row(conv) + conv.slot.out_channels) <= self.tile_len
            && partial_len(conv) <= self.partial_len
    }
}

/// A strided view of a matrix inside a slice.
#[derive(Clone, Copy)]
struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Matrix {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    fn transposed(self) -> Self {
        Matrix {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// c[m, n] (row-major) = a[m, k] b[k, n], or c += a b when `accumulate`.
fn matmul(a: Matrix, b: Matrix, c: &mut [f32], accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && a.fits() && b.fits() && c.len() >= m * n);
    // SAFETY: the asserts above keep every index gemm computes from the shapes and strides
    // inside the three slices, and `c` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// A square window of `size` x `size` pixels: for grid pixel (i, j) it covers rows
/// stride * i + origin.0 + 0..size and columns stride * j + origin.1 + 0..size.
#[derive(Clone, Copy)]
pub(super) struct Window {
    size: usize,
    stride: usize,
    origin: (isize, isize),
}

const SAME_3X3: Window = Window {
    size: 3,
    stride: 1,
    origin: (-1, -1),
};

/// For each tap of `window` (row-major) at `pixel` ((image, i, j) of a grid of `grid.height` x
/// `grid.width`): the index of the source pixel under it, or None where the window leaves the
/// image.
pub(super) fn window_taps(
    src: Nhwc,
    grid: Nhwc,
    window: Window,
    pixel: usize,
) -> impl Iterator<Item = Option<usize>> {
    let (gh, gw) = (grid.height, grid.width);
    let (image, i, j) = (pixel / (gh * gw), pixel / gw % gh, pixel % gw);
    (0..window.size * window.size).map(move |t| {
        let r = (window.stride * i + t / window.size) as isize + window.origin.0;
        let q = (window.stride * j + t % window.size) as isize + window.origin.1;
        ((0..src.height as isize).contains(&r) && (0..src.width as isize).contains(&q))
            .then(|| (image * src.height + r as usize) * src.width + q as usize)
    })
}

/// Row r of `col` gathers the window of grid pixel `first + r` from `src`: taps in row-major
/// order, each with all of src's channels, zeros where the window leaves the image.
fn im2col(src: Nhwc, x: &[f32], grid: Nhwc, window: Window, first: usize, col: &mut [f32]) {
    let c = src.channels;
    for (offset, row) in col
        .chunks_exact_mut(window.size * window.size * c)
        .enumerate()
    {
        let sources = window_taps(src, grid, window, first + offset);
        if c == 1 {
            // One channel (conv1): a value per tap, without a copy call per value.
            for (tap, source) in row.iter_mut().zip(sources) {
                *tap = source.map_or(0.0, |s| x[s]);
            }
            continue;
        }
        for (taps, source) in row.chunks_exact_mut(c).zip(sources) {
            match source {
                Some(s) => taps.copy_from_slice(&x[s * c..][..c]),
                None => taps.fill(0.0),
            }
        }
    }
}

pub(super) fn activate(activation: Activation, z: f32) -> f32 {
    match activation {
        Activation::Relu => z.max(0.0),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
    }
}

/// Pixels per chunk of work over `grid`: whole image rows, at most WORK_CHUNKS chunks.
pub(super) fn chunk_pixels(grid: Nhwc) -> usize {
    (grid.batch * grid.height).div_ceil(WORK_CHUNKS).max(1) * grid.width
}

/// out[p] = epilogue(window(p) kernel) for every pixel p of `grid`, rows of `out` in pixel order.
#[allow(clippy::too_many_arguments)]
fn gathered_matmul(
    (tiles, tile_len): (&mut [f32], usize),
    grid: Nhwc,
    src: Nhwc,
    x: &[f32],
    window: Window,
    kernel: Matrix,
    epilogue: Option<(&[f32], Activation)>,
    out: &mut [f32],
) {
    let (k, n) = (kernel.rows, kernel.cols);
    let per_chunk = chunk_pixels(grid);
    out[..grid.pixels() * n]
        .par_chunks_mut(per_chunk * n)
        .zip(tiles.par_chunks_mut(tile_len))
        .enumerate()
        .for_each(|(chunk, (out_chunk, tile))| {
            for (t, out_tile) in out_chunk.chunks_mut(TILE_PIXELS * n).enumerate() {
                let pixels = out_tile.len() / n;
                let col = &mut tile[..pixels * k];
                im2col(
                    src,
                    x,
                    grid,
                    window,
                    chunk * per_chunk + t * TILE_PIXELS,
                    col,
                );
                matmul(Matrix::row_major(col, pixels, k), kernel, out_tile, false);
                if let Some((bias, activation)) = epilogue {
                    for row in out_tile.chunks_exact_mut(n) {
                        for (v, b) in row.iter_mut().zip(bias) {
                            *v = activate(activation, *v + b);
                        }
                    }
                }
            }
        });
}

/// Output phases (row parity a, column parity b), in the order of the phase kernels.
pub(super) const PHASES: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

/// The 2x2 window of source pixels that output phase (a, b) of source pixel (i, j) reads:
/// rows i + a - 1 and i + a, columns j + b - 1 and j + b.
pub(super) fn phase_window(a: usize, b: usize) -> Window {
    Window {
        size: 2,
        stride: 1,
        origin: (a as isize - 1, b as isize - 1),
    }
}

/// Calls `f(phase_tap, tap)` for each 3x3 kernel tap (3 ky + kx) that a tap of a phase kernel
/// sums (4 phase + 2 u + v): phase kernel (a, b) at (u, v) is the sum of those 3x3 taps.
fn for_each_phase_tap(mut f: impl FnMut(usize, usize)) {
    for (phase, &(a, b)) in PHASES.iter().enumerate() {
        for (u, rows) in PHASE_TAPS[a].iter().enumerate() {
            for (v, cols) in PHASE_TAPS[b].iter().enumerate() {
                for &ky in *rows {
                    for &kx in *cols {
                        f(4 * phase + 2 * u + v, 3 * ky + kx);
                    }
                }
            }
        }
    }
}

/// dst[i] += src[i]
fn add(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
}

/// y = activation(conv(x, kernel) + bias); `kernel` is [3, 3, cin, cout].
pub fn forward(scratch: &mut ConvScratch, conv: &Conv, x: &[f32], params: &[f32], y: &mut [f32]) {
    let (input, cin, cout) = (conv.input, conv.slot.in_channels, conv.slot.out_channels);
    let (kernel, bias) = (
        &params[conv.slot.weight.clone()],
        &params[conv.slot.bias.clone()],
    );
    let activation = conv.activation;
    if conv.read == ConvInput::Direct {
        let kernel = Matrix::row_major(kernel, 9 * cin, cout);
        let epilogue = Some((bias, activation));
        let tiles = (&mut scratch.tiles[..], scratch.tile_len);
        gathered_matmul(tiles, input, input, x, SAME_3X3, kernel, epilogue, y);
        return;
    }
    // Upsampled input: each source pixel (i, j) yields output pixels (2i + a, 2j + b), each a
    // 2x2 window of source pixels times phase kernel (a, b). A chunk of source rows owns the
    // output rows twice as many, so chunks write disjoint parts of y.
    let block = 4 * cin * cout;
    let tap = cin * cout;
    let kernels = &mut scratch.kernel[..4 * block];
    kernels.fill(0.0);
    for_each_phase_tap(|p, t| add(&mut kernels[p * tap..][..tap], &kernel[t * tap..][..tap]));
    let kernels = &scratch.kernel[..4 * block];
    if thin::applies(conv) {
        thin::forward(conv, x, kernels, bias, y);
        return;
    }
    let per_chunk = chunk_pixels(input);
    let width = input.width;
    y[..4 * input.pixels() * cout]
        .par_chunks_mut(4 * per_chunk * cout)
        .zip(scratch.tiles.par_chunks_mut(scratch.tile_len))
        .enumerate()
        .for_each(|(chunk, (y_chunk, tile))| {
            let first = chunk * per_chunk;
            let chunk_len = y_chunk.len() / (4 * cout);
            let (col, out) = tile.split_at_mut(TILE_PIXELS * 4 * cin);
            for start in (0..chunk_len).step_by(TILE_PIXELS) {
                let pixels = TILE_PIXELS.min(chunk_len - start);
                for (phase, &(a, b)) in PHASES.iter().enumerate() {
                    let window = phase_window(a, b);
                    let col = &mut col[..pixels * 4 * cin];
                    im2col(input, x, input, window, first + start, col);
                    let phase_kernel = Matrix::row_major(&kernels[phase * block..], 4 * cin, cout);
                    let out = &mut out[..pixels * cout];
                    matmul(
                        Matrix::row_major(col, pixels, 4 * cin),
                        phase_kernel,
                        out,
                        false,
                    );
                    for (q, z) in out.chunks_exact(cout).enumerate() {
                        let (row, j) = ((start + q) / width, (start + q) % width);
                        let at = ((2 * row + a) * 2 * width + 2 * j + b) * cout;
                        for ((v, z), bias) in y_chunk[at..at + cout].iter_mut().zip(z).zip(bias) {
                            *v = activate(activation, z + bias);
                        }
                    }
                }
            }
        });
}

/// dx = d loss / d input, from dz = d loss / d (pre-activation output).
pub fn backward_data(
    scratch: &mut ConvScratch,
    conv: &Conv,
    dz: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
) {
    let (input, cin, cout) = (conv.input, conv.slot.in_channels, conv.slot.out_channels);
    let output = conv.output();
    match conv.read {
        ConvInput::Direct => {
            // dx = conv(dz, flipped), flipped[2 - ky, 2 - kx, co, ci] = kernel[ky, kx, ci, co]
            let flipped = &mut scratch.kernel[..9 * cin * cout];
            flipped.fill(0.0);
            for (t, taps) in kernel.chunks_exact(cin * cout).enumerate() {
                add_transposed(taps, cin, cout, &mut flipped[(8 - t) * cin * cout..]);
            }
            let kernel = Matrix::row_major(&scratch.kernel, 9 * cout, cin);
            let tiles = (&mut scratch.tiles[..], scratch.tile_len);
            gathered_matmul(tiles, input, output, dz, SAME_3X3, kernel, None, dx);
        }
        ConvInput::Upsampled2 => {
            // dx[i, j] = sum over a 4x4 window of dz at stride 2 from (2i - 1, 2j - 1), with
            // transposed[dr, dc, co, ci] = sum of kernel[ky, kx, ci, co] over the taps that
            // reach source pixel (i, j) from output (2i - 1 + dr, 2j - 1 + dc).
            let block = cin * cout;
            let transposed = &mut scratch.kernel[..16 * block];
            transposed.fill(0.0);
            for dr in 0..4 {
                for dc in 0..4 {
                    let dst = &mut transposed[(4 * dr + dc) * block..][..block];
                    for &ky in TRANSPOSED_TAPS[dr] {
                        for &kx in TRANSPOSED_TAPS[dc] {
                            let taps = &kernel[(3 * ky + kx) * block..][..block];
                            add_transposed(taps, cin, cout, dst);
                        }
                    }
                }
            }
            let window = Window {
                size: 4,
                stride: 2,
                origin: (-1, -1),
            };
            let kernel = Matrix::row_major(&scratch.kernel, 16 * cout, cin);
            let tiles = (&mut scratch.tiles[..], scratch.tile_len);
            gathered_matmul(tiles, input, output, dz, window, kernel, None, dx);
        }
    }
}

/// dst[co, ci] += src[ci, co]
fn add_transposed(src: &[f32], cin: usize, cout: usize, dst: &mut [f32]) {
    for ci in 0..cin {
        for co in 0..cout {
            dst[co * cin + ci] += src[ci * cout + co];
        }
    }
}

/// dkernel[ky, kx, ci, co] = sum over output pixels p of input(p + tap)[ci] * dz[p, co] and
/// dbias[co] = sum over p of dz[p, co], into `grads` = [dkernel (9 cin cout), dbias (cout)].
pub fn backward_filter(
    scratch: &mut ConvScratch,
    conv: &Conv,
    x: &[f32],
    dz: &[f32],
    grads: &mut [f32],
) {
    let (input, cin, cout) = (conv.input, conv.slot.in_channels, conv.slot.out_channels);
    let size = partial_len(conv);
    let per_chunk = chunk_pixels(input);
    let chunks = input.pixels().div_ceil(per_chunk);
    let output = conv.output();
    let width = input.width;
    let tile_len = scratch.tile_len;
    // Each chunk of source pixels accumulates its own partial gradient.
    scratch.partials[..chunks * size]
        .par_chunks_mut(size)
        .zip(scratch.tiles.par_chunks_mut(tile_len))
        .enumerate()
        .for_each(|(chunk, (partial, tile))| {
            let first = chunk * per_chunk;
            let chunk_len = per_chunk.min(input.pixels() - first);
            let (dkernel, dbias) = partial.split_at_mut(size - cout);
            dkernel.fill(0.0);
            dbias.fill(0.0);
            if thin::applies(conv) {
                // Tile by tile, as the GEMM path adds, to keep the float32 sums short.
                let tile_sum = &mut tile[..size];
                for start in (0..chunk_len).step_by(TILE_PIXELS) {
                    let pixels = first + start..first + chunk_len.min(start + TILE_PIXELS);
                    tile_sum.fill(0.0);
                    thin::filter_partial(conv, x, dz, pixels, tile_sum);
                    add(partial, tile_sum);
                }
                return;
            }
            for start in (0..chunk_len).step_by(TILE_PIXELS) {
                let pixels = TILE_PIXELS.min(chunk_len - start);
                match conv.read {
                    ConvInput::Direct => {
                        let col = &mut tile[..pixels * 9 * cin];
                        im2col(input, x, input, SAME_3X3, first + start, col);
                        let dz_tile = &dz[(first + start) * cout..][..pixels * cout];
                        accumulate_outer(col, dz_tile, pixels, dkernel, dbias);
                    }
                    ConvInput::Upsampled2 => {
                        let (col, gathered) = tile.split_at_mut(TILE_PIXELS * 4 * cin);
                        for (phase, &(a, b)) in PHASES.iter().enumerate() {
                            let window = phase_window(a, b);
                            let col = &mut col[..pixels * 4 * cin];
                            im2col(input, x, input, window, first + start, col);
                            // dz of output pixels (2i + a, 2j + b) for this tile's source pixels.
                            let gathered = &mut gathered[..pixels * cout];
                            for (q, g) in gathered.chunks_exact_mut(cout).enumerate() {
                                let pixel = first + start + q;
                                let (row, j) = (pixel / width, pixel % width);
                                let at = ((2 * row + a) * output.width + 2 * j + b) * cout;
                                g.copy_from_slice(&dz[at..at + cout]);
                            }
                            let block = &mut dkernel[phase * 4 * cin * cout..][..4 * cin * cout];
                            accumulate_outer(col, gathered, pixels, block, dbias);
                        }
                    }
                }
            }
        });
    // Sum the chunks in order into one partial, then fold phase kernels back onto the 3x3 taps.
    let partials = &scratch.partials[..chunks * size];
    let total = match conv.read {
        ConvInput::Direct => &mut grads[..size],
        ConvInput::Upsampled2 => &mut scratch.kernel[..size],
    };
    total
        .par_chunks_mut(1024)
        .enumerate()
        .for_each(|(block, out)| {
            for (i, g) in out.iter_mut().enumerate() {
                *g = partials
                    .chunks_exact(size)
                    .map(|p| p[block * 1024 + i])
                    .sum();
            }
        });
    if conv.read == ConvInput::Upsampled2 {
        let block = cin * cout;
        let (dkernel, dbias) = grads.split_at_mut(9 * block);
        let total = &scratch.kernel;
        dkernel.fill(0.0);
        for_each_phase_tap(|p, t| {
            add(
                &mut dkernel[t * block..][..block],
                &total[p * block..][..block],
            )
        });
        dbias[..cout].copy_from_slice(&total[16 * block..][..cout]);
    }
}

/// dkernel += col^T dz and dbias += column sums of dz, for a tile of `pixels` rows.
fn accumulate_outer(
    col: &[f32],
    dz: &[f32],
    pixels: usize,
    dkernel: &mut [f32],
    dbias: &mut [f32],
) {
    let (k, cout) = (col.len() / pixels, dbias.len());
    let col_t = Matrix::row_major(col, pixels, k).transposed();
    matmul(col_t, Matrix::row_major(dz, pixels, cout), dkernel, true);
    for row in dz.chunks_exact(cout) {
        dbias.iter_mut().zip(row).for_each(|(b, g)| *b += g);
    }
}
