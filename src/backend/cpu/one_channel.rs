//! The one-channel convolutions as direct loops: as gathered GEMMs they would be GEMMs of depth
//! 9 (one input channel, conv1) or of width 1 (one output channel read upsampled, conv6), whose
//! packing and gathers cost more than their arithmetic. Both run with the vector instructions
//! of the CPU they run on (`pulp` picks AVX-512 or AVX2 with FMA at run time), every
//! multiply-add fused as the GEMM kernels fuse them.
//!
//! - One input channel: a pixel's output channels are the vectors; each of its nine window
//!   values (copied nine to a row from three zero-padded source rows) is broadcast and
//!   multiplied into them, in the forward pass and in the kernel gradient alike.
//! - One output channel read upsampled: the forward pass multiplies every source pixel's
//!   channels by the 16 taps of the four phase kernels, the 16 products one vector summed over
//!   the channels with the pixel's values broadcast, twelve pixels at a time
//!   ([`PhaseProducts`]), then adds each output's four products from its 2x2 window; the
//!   kernel gradient is the GEMM of the nine box sums of dz each source pixel's taps see
//!   (transposed, [`super::gather`]) with the source pixels' channels (the algebra of
//!   `backward_data` in conv.rs). Backward-data is a gathered GEMM of depth 9 in conv.rs; in
//!   training, the whole backward pass takes each tile's box sums once for both
//!   ([`backward_one_output`]).

use std::ops::Range;

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::conv::{TILE_PIXELS, WORK_CHUNKS, activate, add, chunk_pixels, times_derivative};
use super::gather::Gather;
use super::gemm::{Matrix, gemm};
use super::pool::{
    PoolRows, RouteToFirstMaxima, derivative_lanes, first_maximum, to_first_maximum,
};
use crate::backend::{Conv, ConvInput, Nhwc};
use crate::model::Activation;

/// Source rows whose products the one-output-channel forward pass forms at a time. Each block
/// also needs the products of the rows above and below it, which it computes again: 2/16 more
/// arithmetic for a scratch space that stays in L2.
const PRODUCT_ROWS: usize = 16;

/// Whether `conv` reads one input channel directly (conv1).
pub fn reads_one_channel(conv: &Conv) -> bool {
    conv.read == ConvInput::Direct && conv.slot.in_channels == 1
}

/// Whether `conv` writes one output channel from an upsampled input (conv6).
pub fn writes_one_channel(conv: &Conv) -> bool {
    conv.read == ConvInput::Upsampled2 && conv.slot.out_channels == 1
}

/// Floats of scratch one chunk of work of `conv` needs here: with one input channel, a tile's
/// windows, three padded source rows and a tile's gradient, or what a pass pooled in the same
/// step needs ([`pooled_scratch_floats`]); with one output channel, the forward pass's
/// products of a block of rows, with a row above and below.
pub fn scratch_floats(conv: &Conv) -> usize {
    let width = conv.input.width;
    let cout = conv.slot.out_channels;
    if reads_one_channel(conv) {
        (9 * TILE_PIXELS + 3 * (width + 2)).max(pooled_scratch_floats(conv)) + 10 * cout
    } else if writes_one_channel(conv) {
        16 * (PRODUCT_ROWS + 2) * width
    } else {
        0
    }
}

/// padded[r, 1 + j] = pixel (i - 1 + r, j) of a one-channel image whose row i is row `g` of
/// the batch (`input`'s rows back to back), for r in 0..rows (3: the windows of row i; 4: of
/// rows i and i + 1); zeros outside the image.
fn pad_rows(x: &[f32], input: Nhwc, g: usize, (padded, rows): (&mut [f32], usize)) {
    let (height, width) = (input.height, input.width);
    for (r, padded) in padded[..rows * (width + 2)]
        .chunks_exact_mut(width + 2)
        .enumerate()
    {
        padded.fill(0.0);
        if (1..=height).contains(&(g % height + r)) {
            padded[1..=width].copy_from_slice(&x[(g + r - 1) * width..][..width]);
        }
    }
}

/// windows[p, :] = the 3x3 window, row-major, of pixel first + p of a one-channel image (zeros
/// outside it), read from the three padded rows around each pixel's row.
fn windows_3x3(x: &[f32], input: Nhwc, first: usize, windows: &mut [f32], padded: &mut [f32]) {
    let width = input.width;
    let (mut g, mut j) = (first / width, first % width);
    pad_rows(x, input, g, (&mut *padded, 3));
    for window in windows.chunks_exact_mut(9) {
        if j == width {
            (g, j) = (g + 1, 0);
            pad_rows(x, input, g, (&mut *padded, 3));
        }
        for (r, taps) in window.chunks_exact_mut(3).enumerate() {
            taps.copy_from_slice(&padded[r * (width + 2) + j..][..3]);
        }
        j += 1;
    }
}

/// v = activation(v) for every value.
#[inline(always)]
fn activate_all<S: Simd>(simd: S, activation: Activation, values: &mut [f32]) {
    match activation {
        Activation::Relu => {
            let (vectors, rest) = S::as_mut_simd_f32s(values);
            let zero = simd.splat_f32s(0.0);
            for v in vectors {
                *v = simd.max_f32s(*v, zero);
            }
            for v in rest {
                *v = v.max(0.0);
            }
        }
        Activation::Sigmoid => values
            .iter_mut()
            .for_each(|v| *v = activate(activation, *v)),
    }
}

/// One input channel, forward, for the pixels whose windows are `windows`:
/// y[p, :] = act(bias + sum over the window's taps t of window(p)[t] kernel[t, :]), each
/// vector of output channels summed in a register over the nine broadcast window values, the
/// taps in order. The vectors go two at a time over groups of [`PIXELS_AT_ONCE`] pixels
/// ([`two_vectors_of_groups`]); the vectors and channels past those pairs, and the pixels past
/// the groups, a pixel at a time ([`one_pixel`]), to the same bits; then the activation.
struct OneInputForward<'a> {
    activation: Activation,
    windows: &'a [f32],
    kernel: &'a [f32],
    bias: &'a [f32],
    y: &'a mut [f32],
}

/// Pixels whose outputs the forward pass sums together: with two vectors each, eight
/// independent chains of multiply-adds keep both FMA pipes busy. A pixel at a time (a chain of
/// nine a vector, the taps' vectors reloaded for every pixel) took 3.2 times as long at 32
/// channels, over two rows of 224 pixels held in cache.
const PIXELS_AT_ONCE: usize = 4;

/// A one-input-channel kernel [9, cout] and its bias, as rows of values and as vectors.
struct OneInputKernel<'a, S: Simd> {
    taps: [&'a [f32]; 9],
    tap_vectors: [&'a [S::f32s]; 9],
    bias: &'a [f32],
    bias_vectors: &'a [S::f32s],
}

/// Vectors v and v + 1 of the outputs `out` [pixels, cout] before the activation, the pixels
/// [`PIXELS_AT_ONCE`] at a time (`windows` [pixels, 9], pixels a multiple of it): the taps'
/// vectors in registers, eight sums in registers over them. Plain index loops over arrays of
/// constant length, so that the compiler keeps every vector in a register.
#[inline(always)]
fn two_vectors_of_groups<S: Simd>(
    simd: S,
    (windows, kernel): (&[f32], &OneInputKernel<S>),
    v: usize,
    out: &mut [f32],
) {
    let cout = kernel.bias.len();
    let mut taps = [[simd.splat_f32s(0.0); 2]; 9];
    for (taps, row) in taps.iter_mut().zip(&kernel.tap_vectors) {
        *taps = [row[v], row[v + 1]];
    }
    let bias = [kernel.bias_vectors[v], kernel.bias_vectors[v + 1]];
    let groups = out.chunks_exact_mut(PIXELS_AT_ONCE * cout);
    for (out, windows) in groups.zip(windows.chunks_exact(9 * PIXELS_AT_ONCE)) {
        let windows: &[f32; 9 * PIXELS_AT_ONCE] = windows.try_into().unwrap();
        let mut sums = [bias; PIXELS_AT_ONCE];
        for t in 0..9 {
            for p in 0..PIXELS_AT_ONCE {
                let value = simd.splat_f32s(windows[9 * p + t]);
                for i in 0..2 {
                    sums[p][i] = simd.mul_add_f32s(value, taps[t][i], sums[p][i]);
                }
            }
        }
        for p in 0..PIXELS_AT_ONCE {
            let vectors = S::as_mut_simd_f32s(&mut out[p * cout..][..cout]).0;
            vectors[v] = sums[p][0];
            vectors[v + 1] = sums[p][1];
        }
    }
}

/// One pixel's outputs before the activation from vector `first` on, then the channels past
/// the vectors.
#[inline(always)]
fn one_pixel<S: Simd>(
    simd: S,
    window: &[f32],
    kernel: &OneInputKernel<S>,
    first: usize,
    out: &mut [f32],
) {
    let mut values = [simd.splat_f32s(0.0); 9];
    for (value, &w) in values.iter_mut().zip(window) {
        *value = simd.splat_f32s(w);
    }
    let (out_vectors, out_rest) = S::as_mut_simd_f32s(out);
    for (v, out) in out_vectors.iter_mut().enumerate().skip(first) {
        let mut z = kernel.bias_vectors[v];
        for (value, taps) in values.iter().zip(&kernel.tap_vectors) {
            z = simd.mul_add_f32s(*value, taps[v], z);
        }
        *out = z;
    }
    let (bias, taps) = (kernel.bias, &kernel.taps);
    let first_rest = bias.len() - out_rest.len();
    for (c, out) in (first_rest..).zip(out_rest) {
        *out = (0..9).fold(bias[c], |z, t| window[t].mul_add(taps[t][c], z));
    }
}

impl WithSimd for OneInputForward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let OneInputForward {
            activation,
            windows,
            kernel,
            bias,
            y,
        } = self;
        let cout = bias.len();
        let taps: [&[f32]; 9] = std::array::from_fn(|t| &kernel[t * cout..][..cout]);
        let kernel = OneInputKernel::<S> {
            taps,
            tap_vectors: taps.map(|taps| S::as_simd_f32s(taps).0),
            bias,
            bias_vectors: S::as_simd_f32s(bias).0,
        };
        let grouped = y.len() / cout / PIXELS_AT_ONCE * PIXELS_AT_ONCE;
        let (grouped_y, last_y) = y.split_at_mut(grouped * cout);
        let (grouped_windows, last_windows) = windows.split_at(9 * grouped);
        let paired = kernel.bias_vectors.len() / 2 * 2;
        for v in (0..paired).step_by(2) {
            two_vectors_of_groups(simd, (grouped_windows, &kernel), v, grouped_y);
        }
        if paired * S::F32_LANES < cout {
            let pixels = grouped_y.chunks_exact_mut(cout);
            for (out, window) in pixels.zip(grouped_windows.chunks_exact(9)) {
                one_pixel(simd, window, &kernel, paired, out);
            }
        }
        let last_pixels = last_y.chunks_exact_mut(cout);
        for (out, window) in last_pixels.zip(last_windows.chunks_exact(9)) {
            one_pixel(simd, window, &kernel, 0, out);
        }
        activate_all(simd, activation, y);
    }
}

/// y = act(conv(x, kernel) + bias) for one input channel; `kernel` is [3, 3, 1, cout].
pub fn forward_one_input(
    conv: &Conv,
    (x, kernel, bias): (&[f32], &[f32], &[f32]),
    (tiles, tile_len): (&mut [f32], usize),
    y: &mut [f32],
) {
    let cout = conv.slot.out_channels;
    let per_chunk = chunk_pixels(conv.input);
    y[..conv.output().len()]
        .par_chunks_mut(per_chunk * cout)
        .zip(tiles.par_chunks_mut(tile_len))
        .enumerate()
        .for_each(|(chunk, (y, scratch))| {
            let (windows, padded) = scratch.split_at_mut(9 * TILE_PIXELS);
            for (tile, y) in y.chunks_mut(TILE_PIXELS * cout).enumerate() {
                let windows = &mut windows[..9 * y.len() / cout];
                let first = chunk * per_chunk + tile * TILE_PIXELS;
                windows_3x3(x, conv.input, first, windows, padded);
                let activation = conv.activation;
                let (windows, y) = (&*windows, y);
                Arch::new().dispatch(OneInputForward {
                    activation,
                    windows,
                    kernel,
                    bias,
                    y,
                });
            }
        });
}

/// One input channel, a kernel gradient over some pixels: sums[t, :] += window(p)[t] dz[p, :]
/// and the bias's sums[9, :] += dz[p, :] over the pixels p of dz, in order, each vector of
/// output channels summed in ten registers, two vectors at a time ([`filter_vectors`]).
/// `window` gives pixel p's 3x3 window, row-major.
struct OneInputFilter<'a, W> {
    window: W,
    dz: &'a [f32],
    sums: &'a mut [f32],
}

impl<W: Fn(usize) -> [f32; 9]> WithSimd for OneInputFilter<'_, W> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let OneInputFilter { window, dz, sums } = self;
        let cout = sums.len() / 10;
        let vectors = cout / S::F32_LANES;
        let paired = vectors / 2 * 2;
        for v in (0..paired).step_by(2) {
            filter_vectors::<2, S>(simd, (&window, dz), v, sums);
        }
        for v in paired..vectors {
            filter_vectors::<1, S>(simd, (&window, dz), v, sums);
        }
        for k in vectors * S::F32_LANES..cout {
            for (p, g) in dz.chunks_exact(cout).enumerate() {
                for (t, value) in window(p).into_iter().enumerate() {
                    sums[t * cout + k] = value.mul_add(g[k], sums[t * cout + k]);
                }
                sums[9 * cout + k] += g[k];
            }
        }
    }
}

/// [`OneInputFilter`]'s sums of the N vectors of output channels from vector v: each
/// pixel's window values broadcast once for all N, the 10 N sums in registers. (A vector at a
/// time, each value broadcast for each vector, conv1's kernel gradient with pool1 took a
/// third longer: the broadcasts compete with the multiply-adds for the same ports.)
#[inline(always)]
fn filter_vectors<const N: usize, S: Simd>(
    simd: S,
    (window, dz): (&impl Fn(usize) -> [f32; 9], &[f32]),
    v: usize,
    sums: &mut [f32],
) {
    let cout = sums.len() / 10;
    let mut totals = [[simd.splat_f32s(0.0); N]; 10];
    for (p, g) in dz.chunks_exact(cout).enumerate() {
        let g = S::as_simd_f32s(g).0;
        let g: [S::f32s; N] = std::array::from_fn(|i| g[v + i]);
        for (totals, value) in totals.iter_mut().zip(window(p)) {
            let value = simd.splat_f32s(value);
            for (total, &g) in totals.iter_mut().zip(&g) {
                *total = simd.mul_add_f32s(value, g, *total);
            }
        }
        for (total, &g) in totals[9].iter_mut().zip(&g) {
            *total = simd.add_f32s(*total, g);
        }
    }
    for (row, totals) in sums.chunks_exact_mut(cout).zip(totals) {
        S::as_mut_simd_f32s(row).0[v..v + N].copy_from_slice(&totals);
    }
}

/// Pixel p's window among `windows` [pixels, 9] ([`windows_3x3`]).
#[inline(always)]
fn copied_window(windows: &[f32], p: usize) -> [f32; 9] {
    windows[9 * p..][..9].try_into().unwrap()
}

/// The window of pixel p of two output rows of `width` pixels (the first row's, then the
/// second's), read from the four zero-padded source rows around them (`padded`, [4, width +
/// 2]).
#[inline(always)]
fn window_around_two_rows(padded: &[f32], width: usize, p: usize) -> [f32; 9] {
    let row = usize::from(p >= width);
    let at = row * (width + 2) + p - row * width;
    std::array::from_fn(|t| padded[at + (t / 3) * (width + 2) + t % 3])
}

/// A tile's gradient with one input channel, laid out as the kernel gradient is ([9, 1,
/// cout] then the bias): the tile's sum is formed in `tile` and then added to `partial`, to
/// keep the float32 sums short.
pub fn filter_one_input<'a>(
    conv: &'a Conv,
    x: &'a [f32],
    dz: &'a [f32],
) -> impl Fn(Range<usize>, &mut [f32], &mut [f32]) + Sync + 'a {
    let (input, cout) = (conv.input, conv.slot.out_channels);
    move |pixels, tile, partial| {
        let (windows, rest) = tile.split_at_mut(9 * TILE_PIXELS);
        let (padded, sums) = rest.split_at_mut(3 * (input.width + 2));
        let windows = &mut windows[..9 * pixels.len()];
        windows_3x3(x, input, pixels.start, windows, padded);
        let windows = &*windows;
        let sums = &mut sums[..partial.len()];
        sums.fill(0.0);
        Arch::new().dispatch(OneInputFilter {
            window: |p| copied_window(windows, p),
            dz: &dz[pixels.start * cout..pixels.end * cout],
            sums,
        });
        add(partial, sums);
    }
}

/// Floats of a pooled pass's scratch for one pooled row: the windows of the two output rows
/// under it, the padded source rows around them (four; three at a time for the windows), those
/// output rows, and (backward) their gradient.
fn pooled_scratch_floats(conv: &Conv) -> usize {
    let width = conv.input.width;
    let rows = 2 * width * conv.slot.out_channels;
    18 * width + 4 * (width + 2) + 2 * rows
}

/// Pooled rows per chunk of work: whole rows of the pooled grid, at most WORK_CHUNKS chunks.
fn pooled_rows_per_chunk(conv: &Conv) -> usize {
    let input = conv.input;
    (input.batch * input.height / 2)
        .div_ceil(WORK_CHUNKS)
        .max(1)
}

/// The two output rows under pooled row `pooled_row`, act(conv(x) + bias), into `rows`, and
/// their windows, into `windows`, which the kernel gradient reads again. The forward pass and
/// the backward pass compute them alike, so to the same bits.
fn output_rows(
    conv: &Conv,
    (x, kernel, bias): (&[f32], &[f32], &[f32]),
    pooled_row: usize,
    (windows, padded): (&mut [f32], &mut [f32]),
    rows: &mut [f32],
) {
    let first = 2 * pooled_row * conv.input.width;
    windows_3x3(x, conv.input, first, windows, padded);
    Arch::new().dispatch(OneInputForward {
        activation: conv.activation,
        windows,
        kernel,
        bias,
        y: rows,
    });
}

/// Channels the pooled passes take in registers ([`window_outputs`]): a multiple of two
/// vectors of the widest (AVX-512's 16 lanes).
const POOLED_ROW_CHANNELS: usize = 32;

/// Whether the pooled passes of `conv` run in registers ([`window_outputs`]): with ReLU and a
/// multiple of [`POOLED_ROW_CHANNELS`] channels (conv1); otherwise through the output rows in
/// scratch ([`output_rows`]).
fn pooled_in_registers(conv: &Conv) -> bool {
    conv.activation == Activation::Relu
        && conv.slot.out_channels.is_multiple_of(POOLED_ROW_CHANNELS)
}

/// The vectors v and v + 1 of the output channels of the taps of `kernel` [9, cout] and of
/// `bias`, for [`window_outputs`].
#[inline(always)]
fn vector_pair<S: Simd>(
    (kernel, bias): (&[f32], &[f32]),
    v: usize,
) -> ([[S::f32s; 2]; 9], [S::f32s; 2]) {
    let cout = bias.len();
    let pair = |values: &[f32]| {
        let vectors = S::as_simd_f32s(values).0;
        [vectors[v], vectors[v + 1]]
    };
    let taps = std::array::from_fn(|t| pair(&kernel[t * cout..][..cout]));
    (taps, pair(bias))
}

/// Window j's four outputs relu(bias + conv) (row-major: output (a, b) is pixel (2 r + a,
/// 2 j + b) of the two output rows), in the channels of a [`vector_pair`], summed in registers
/// from `padded` (the four zero-padded source rows around the two rows, [4, row]). The same
/// sums in the same order as [`OneInputForward`] and the same activation as `activate_all`, so
/// the bits of [`output_rows`], without storing the windows or the outputs.
#[inline(always)]
fn window_outputs<S: Simd>(
    simd: S,
    (padded, row): (&[f32], usize),
    j: usize,
    (taps, bias): (&[[S::f32s; 2]; 9], [S::f32s; 2]),
) -> [[S::f32s; 2]; 4] {
    let mut sums = [bias; 4];
    for (t, taps) in taps.iter().enumerate() {
        let (ty, tx) = (t / 3, t % 3);
        for (p, sums) in sums.iter_mut().enumerate() {
            let (a, b) = (p / 2, p % 2);
            let value = simd.splat_f32s(padded[(a + ty) * row + 2 * j + b + tx]);
            for (sum, &tap) in sums.iter_mut().zip(taps) {
                *sum = simd.mul_add_f32s(value, tap, *sum);
            }
        }
    }
    let zero = simd.splat_f32s(0.0);
    for sums in &mut sums {
        for sum in sums {
            *sum = simd.max_f32s(*sum, zero);
        }
    }
    sums
}

/// One input channel, forward, then 2x2 max pooling, for one pooled row in registers
/// ([`window_outputs`]): each window's maximum, as [`PoolRows`] takes it, into `pooled`.
struct PooledRowForward<'a> {
    padded: &'a [f32],
    kernel: &'a [f32],
    bias: &'a [f32],
    pooled: &'a mut [f32],
}

impl WithSimd for PooledRowForward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let PooledRowForward {
            padded,
            kernel,
            bias,
            pooled,
        } = self;
        let cout = bias.len();
        let row = padded.len() / 4;
        for v in (0..cout / S::F32_LANES).step_by(2) {
            let pair = vector_pair::<S>((kernel, bias), v);
            for (j, out) in pooled.chunks_exact_mut(cout).enumerate() {
                let outputs = window_outputs(simd, (padded, row), j, (&pair.0, pair.1));
                let out = S::as_mut_simd_f32s(out).0;
                for i in 0..2 {
                    out[v + i] = first_maximum(simd, std::array::from_fn(|p| outputs[p][i])).0;
                }
            }
        }
    }
}

/// The gradient of the two output rows under one pooled row in registers
/// ([`window_outputs`]): dL/d pooled routed to each window's first maximum times ReLU's
/// derivative there, 0 elsewhere, as [`RouteToFirstMaxima`] routes it, into `d_rows` [2,
/// width, cout].
struct PooledRowGradient<'a> {
    padded: &'a [f32],
    kernel: &'a [f32],
    bias: &'a [f32],
    d_pooled: &'a [f32],
    d_rows: &'a mut [f32],
}

impl WithSimd for PooledRowGradient<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let PooledRowGradient {
            padded,
            kernel,
            bias,
            d_pooled,
            d_rows,
        } = self;
        let (cout, row) = (bias.len(), padded.len() / 4);
        let vectors = cout / S::F32_LANES;
        let (d_top, d_bottom) = d_rows.split_at_mut(d_rows.len() / 2);
        for v in (0..vectors).step_by(2) {
            let pair = vector_pair::<S>((kernel, bias), v);
            let windows = d_pooled.chunks_exact(cout).zip(
                d_top
                    .chunks_exact_mut(2 * cout)
                    .zip(d_bottom.chunks_exact_mut(2 * cout)),
            );
            for (j, (g, (top, bottom))) in windows.enumerate() {
                let outputs = window_outputs(simd, (padded, row), j, (&pair.0, pair.1));
                let g = S::as_simd_f32s(g).0;
                let (top, bottom) = (S::as_mut_simd_f32s(top).0, S::as_mut_simd_f32s(bottom).0);
                for i in 0..2 {
                    let (best, taken) = first_maximum(simd, std::array::from_fn(|p| outputs[p][i]));
                    let slope = derivative_lanes(simd, Some(Activation::Relu), best);
                    let g = simd.mul_f32s(g[v + i], slope);
                    let [to_a, to_b, to_c, to_d] = to_first_maximum(simd, g, taken);
                    (top[v + i], top[vectors + v + i]) = (to_a, to_b);
                    (bottom[v + i], bottom[vectors + v + i]) = (to_c, to_d);
                }
            }
        }
    }
}

/// pooled = maxpool2(act(conv(x, kernel) + bias)) for one input channel: each chunk of whole
/// pooled rows forms each of its rows from the source rows around it, in registers where
/// [`pooled_in_registers`], else through the two output rows under it in scratch, whose 2x2
/// windows' maxima it then keeps; the full-resolution output is never stored.
pub fn forward_pooled(
    conv: &Conv,
    operands: (&[f32], &[f32], &[f32]),
    (tiles, tile_len): (&mut [f32], usize),
    pooled: &mut [f32],
) {
    let (width, cout) = (conv.input.width, conv.slot.out_channels);
    let pooled_row_len = width / 2 * cout;
    let per_chunk = pooled_rows_per_chunk(conv);
    let in_registers = pooled_in_registers(conv);
    pooled[..conv.output().len() / 4]
        .par_chunks_mut(per_chunk * pooled_row_len)
        .zip(tiles.par_chunks_mut(tile_len))
        .enumerate()
        .for_each(|(chunk, (pooled, tile))| {
            let (windows, rest) = tile.split_at_mut(18 * width);
            let (padded, rest) = rest.split_at_mut(4 * (width + 2));
            let rows = &mut rest[..2 * width * cout];
            for (r, out) in pooled.chunks_exact_mut(pooled_row_len).enumerate() {
                let pooled_row = chunk * per_chunk + r;
                if in_registers {
                    let (x, kernel, bias) = operands;
                    pad_rows(x, conv.input, 2 * pooled_row, (&mut *padded, 4));
                    Arch::new().dispatch(PooledRowForward {
                        padded,
                        kernel,
                        bias,
                        pooled: out,
                    });
                    continue;
                }
                let scratch = (&mut *windows, &mut *padded);
                output_rows(conv, operands, pooled_row, scratch, rows);
                Arch::new().dispatch(PoolRows {
                    rows,
                    channels: cout,
                    pooled: out,
                });
            }
        });
}

/// The kernel-and-bias gradient of [`forward_pooled`] from dL/d pooled, into `partials` (one
/// per chunk of whole pooled rows, [9, 1, cout] then the bias): each chunk computes the two
/// output rows under each of its pooled rows again (in registers where
/// [`pooled_in_registers`]), routes each window's gradient to its first maximum times the
/// activation's derivative there, and adds those rows' gradient, summed first over the two
/// rows. Returns the number of chunks.
pub fn filter_pooled(
    conv: &Conv,
    operands: (&[f32], &[f32], &[f32]),
    d_pooled: &[f32],
    (tiles, tile_len): (&mut [f32], usize),
    (partials, size): (&mut [f32], usize),
) -> usize {
    let (width, cout) = (conv.input.width, conv.slot.out_channels);
    let pooled_row_len = width / 2 * cout;
    let per_chunk = pooled_rows_per_chunk(conv);
    let in_registers = pooled_in_registers(conv);
    let d_pooled = &d_pooled[..conv.output().len() / 4];
    d_pooled
        .par_chunks(per_chunk * pooled_row_len)
        .zip(partials.par_chunks_mut(size))
        .zip(tiles.par_chunks_mut(tile_len))
        .enumerate()
        .for_each(|(chunk, ((d_pooled, partial), tile))| {
            partial.fill(0.0);
            let (windows, rest) = tile.split_at_mut(18 * width);
            let (padded, rest) = rest.split_at_mut(4 * (width + 2));
            let (rows, rest) = rest.split_at_mut(2 * width * cout);
            let (dz, rest) = rest.split_at_mut(2 * width * cout);
            let sums = &mut rest[..size];
            for (r, d_pooled) in d_pooled.chunks_exact(pooled_row_len).enumerate() {
                let pooled_row = chunk * per_chunk + r;
                sums.fill(0.0);
                if in_registers {
                    let (x, kernel, bias) = operands;
                    pad_rows(x, conv.input, 2 * pooled_row, (&mut *padded, 4));
                    let padded = &*padded;
                    Arch::new().dispatch(PooledRowGradient {
                        padded,
                        kernel,
                        bias,
                        d_pooled,
                        d_rows: dz,
                    });
                    Arch::new().dispatch(OneInputFilter {
                        window: |p| window_around_two_rows(padded, width, p),
                        dz,
                        sums,
                    });
                } else {
                    let scratch = (&mut *windows, &mut *padded);
                    output_rows(conv, operands, pooled_row, scratch, rows);
                    Arch::new().dispatch(RouteToFirstMaxima {
                        activation: Some(conv.activation),
                        rows,
                        channels: cout,
                        d_pooled,
                        d_rows: dz,
                    });
                    let windows = &*windows;
                    Arch::new().dispatch(OneInputFilter {
                        window: |p| copied_window(windows, p),
                        dz,
                        sums,
                    });
                }
                add(partial, sums);
            }
        });
    d_pooled.len().div_ceil(per_chunk * pooled_row_len)
}

/// Source pixels whose 16 products [`PhaseProducts`] sums together: twelve independent chains
/// of multiply-adds, the phase kernels' vector for a channel loaded once for all twelve.
const PRODUCT_PIXELS: usize = 12;

/// The products of conv6's forward pass, P[s, k] = x[s, :] . phase_kernels[k, :] for the 16
/// taps k of the four phase kernels: `sources` [pixels, cin], `by_channel` the phase kernels
/// [cin, 16], `products` [pixels, 16]. Each pixel's 16 products are one vector (or several, on
/// narrower vectors), summed over the channels in order by multiply-adds with the pixel's
/// value broadcast: the `gemm` crate's kernel for this shape sums them in the same order to
/// the same bits, but took 1.4 times as long (it reads the pixels' rows 6 at a time).
struct PhaseProducts<'a> {
    sources: &'a [f32],
    by_channel: &'a [f32],
    products: &'a mut [f32],
}

impl WithSimd for PhaseProducts<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let PhaseProducts {
            sources,
            by_channel,
            products,
        } = self;
        let cin = by_channel.len() / 16;
        let weights = S::as_simd_f32s(by_channel).0;
        let out = S::as_mut_simd_f32s(products).0;
        let pixels = sources.len() / cin;
        let grouped = pixels / PRODUCT_PIXELS * PRODUCT_PIXELS;
        for s in (0..grouped).step_by(PRODUCT_PIXELS) {
            products_of_pixels::<PRODUCT_PIXELS, S>(simd, (sources, cin), weights, s, out);
        }
        for s in grouped..pixels {
            products_of_pixels::<1, S>(simd, (sources, cin), weights, s, out);
        }
    }
}

/// [`PhaseProducts`] for the N pixels from `first`: each vector of their 16 products summed in
/// a register over the channels, the N sums side by side. Plain index loops over arrays of
/// constant length, so that the compiler keeps every sum in a register.
#[inline(always)]
fn products_of_pixels<const N: usize, S: Simd>(
    simd: S,
    (sources, cin): (&[f32], usize),
    weights: &[S::f32s],
    first: usize,
    out: &mut [S::f32s],
) {
    let per_pixel = 16 / S::F32_LANES;
    let rows: [&[f32]; N] = std::array::from_fn(|p| &sources[(first + p) * cin..][..cin]);
    for h in 0..per_pixel {
        let mut sums = [simd.splat_f32s(0.0); N];
        for c in 0..cin {
            let w = weights[c * per_pixel + h];
            for p in 0..N {
                sums[p] = simd.mul_add_f32s(w, simd.splat_f32s(rows[p][c]), sums[p]);
            }
        }
        for p in 0..N {
            out[(first + p) * per_pixel + h] = sums[p];
        }
    }
}

/// One output channel read upsampled, forward, with the four 2x2 phase kernels by channel,
/// `by_channel` [cin, 4 phases, 2, 2] (see conv.rs): with the products
/// P[s, 4 phase + 2u + v] = x[s, :] . by_channel[:, phase, u, v] of every source pixel s
/// ([`PhaseProducts`]), y[2i + a, 2j + b] = act(bias + sum over u, v in {0, 1} of
/// P[(i + a - 1 + u, j + b - 1 + v), 4 phase(a, b) + 2u + v]), source pixels outside the image
/// counting as zeros. A chunk of whole source rows owns the output rows twice as many; it
/// forms the products of PRODUCT_ROWS rows at a time (with the rows above and below).
pub fn forward_one_output(
    conv: &Conv,
    (x, by_channel, bias): (&[f32], &[f32], &[f32]),
    (tiles, tile_len): (&mut [f32], usize),
    y: &mut [f32],
) {
    let input = conv.input;
    let (height, width, cin) = (input.height, input.width, input.channels);
    let rows = input.batch * height;
    let per_chunk = chunk_pixels(input);
    let by_channel = &by_channel[..16 * cin];
    y[..4 * input.pixels()]
        .par_chunks_mut(4 * per_chunk)
        .zip(tiles.par_chunks_mut(tile_len))
        .enumerate()
        .for_each(|(chunk, (y, products))| {
            let first_row = chunk * per_chunk / width;
            let end_row = first_row + y.len() / (4 * width);
            for start in (first_row..end_row).step_by(PRODUCT_ROWS) {
                let end = end_row.min(start + PRODUCT_ROWS);
                let (top, bottom) = (start.saturating_sub(1), rows.min(end + 1));
                let products = &mut products[..16 * (bottom - top) * width];
                let sources = &x[top * width * cin..bottom * width * cin];
                Arch::new().dispatch(PhaseProducts {
                    sources,
                    by_channel,
                    products,
                });
                for g in start..end {
                    for a in 0..2 {
                        let out_row = 2 * (g - first_row) + a;
                        let out = &mut y[out_row * 2 * width..][..2 * width];
                        let source_rows = |u: usize| {
                            // Tap u of output row 2i + a reads source row i + a - 1 + u, inside
                            // the image when 1 <= i + a + u <= height.
                            let inside = (1..=height).contains(&(g % height + a + u));
                            let row = (g + a + u - 1 - top) * 16 * width;
                            inside.then(|| &products[row..][..16 * width])
                        };
                        let source_products = [source_rows(0), source_rows(1)];
                        output_row(conv.activation, (bias[0], a), source_products, out);
                    }
                }
            }
        });
}

/// y[2i + a, :] from the products of the two source rows its taps u = 0, 1 read (None outside
/// the image): output (2i + a, 2j + b) adds, after the bias, the products of taps
/// 4 (2a + b) + 2u + v at source columns j + b - 1 + v inside the row, u then v in order.
#[inline(always)]
fn output_row(
    activation: Activation,
    (bias, a): (f32, usize),
    rows: [Option<&[f32]>; 2],
    out: &mut [f32],
) {
    let width = out.len() / 2;
    let rows = rows.map(|row| row.map(|row| row.as_chunks::<16>().0));
    let (even, odd) = (4 * (2 * a), 4 * (2 * a + 1));
    for (j, out) in out.as_chunks_mut::<2>().0.iter_mut().enumerate() {
        let (mut z_even, mut z_odd) = (bias, bias);
        for (u, row) in rows.iter().enumerate() {
            let Some(row) = row else { continue };
            // Even outputs read columns j - 1 and j, odd ones j and j + 1.
            if j > 0 {
                z_even += row[j - 1][even + 2 * u];
            }
            z_even += row[j][even + 2 * u + 1];
            z_odd += row[j][odd + 2 * u];
            if j + 1 < width {
                z_odd += row[j + 1][odd + 2 * u + 1];
            }
        }
        out[0] = activate(activation, z_even);
        out[1] = activate(activation, z_odd);
    }
}

/// A tile's gradient with one output channel read upsampled, laid out as conv.rs's
/// `unflip_box_sum_gradient` reads it ([9 flipped taps, 1, cin] then the bias): the GEMM
/// box_sums(dz)^T x of the tile's source pixels, [9, cin], and the bias's share, the aligned
/// boxes (tap 4), which cover dz once. (As x^T box_sums(dz), [cin, 9], the `gemm` crate's
/// vectors ran along the nine taps: 4.5 ms more of conv6's backward pass at batch 32.)
pub fn filter_one_output<'a>(
    conv: &'a Conv,
    x: &'a [f32],
    dz: &'a [f32],
) -> impl Fn(Range<usize>, &mut [f32], &mut [f32]) + Sync + 'a {
    let gather = Gather::box_sums(conv.output(), conv.input);
    move |pixels, tile, partial| {
        add_tile_gradient(conv, &gather, (x, dz), pixels, tile, partial);
    }
}

/// [`filter_one_output`]'s work on one tile; returns the tile's box sums of dz, [pixels, 9],
/// which backward-data reads too.
fn add_tile_gradient<'t>(
    conv: &Conv,
    gather: &Gather,
    (x, dz): (&[f32], &[f32]),
    pixels: Range<usize>,
    tile: &'t mut [f32],
    partial: &mut [f32],
) -> &'t [f32] {
    let cin = conv.slot.in_channels;
    let (sums, product) = tile.split_at_mut(9 * TILE_PIXELS);
    let sums = &mut sums[..9 * pixels.len()];
    gather.rows(dz, pixels.start, sums);
    let product = &mut product[..9 * cin];
    let x = Matrix::row_major(&x[pixels.start * cin..pixels.end * cin], pixels.len(), cin);
    let sums_by_tap = Matrix::row_major(sums, pixels.len(), 9).transposed();
    gemm(sums_by_tap, x, product, false);
    let (dkernel, dbias) = partial.split_at_mut(9 * cin);
    add(dkernel, product);
    dbias[0] += sums.chunks_exact(9).map(|taps| taps[4]).sum::<f32>();
    sums
}

/// The whole backward pass of a tile with one output channel read upsampled (conv6): the
/// kernel gradient as [`filter_one_output`], and the tile's rows of dx from the same box sums
/// times the flipped kernel ([9, cin], as conv.rs's `backward_data` multiplies them), times the
/// derivative at x of `x_activation`, the activation that produced x (as activation_backward
/// applies it): the three passes' bits, x and the box sums read once.
pub(super) fn backward_one_output<'a>(
    conv: &'a Conv,
    (x, x_activation): (&'a [f32], Option<Activation>),
    dz: &'a [f32],
    flipped: Matrix<'a>,
) -> impl Fn(Range<usize>, &mut [f32], &mut [f32], &mut [f32]) + Sync + 'a {
    let cin = conv.slot.in_channels;
    let gather = Gather::box_sums(conv.output(), conv.input);
    move |pixels, tile, partial, dx| {
        let (rows, x_tile) = (pixels.len(), &x[pixels.start * cin..pixels.end * cin]);
        let sums = add_tile_gradient(conv, &gather, (x, dz), pixels, tile, partial);
        gemm(Matrix::row_major(sums, rows, 9), flipped, dx, false);
        if let Some(activation) = x_activation {
            times_derivative(activation, dx, x_tile);
        }
    }
}

#[cfg(test)]
mod tests {
    use pulp::{Arch, Scalar, Scalar128b, Scalar256b, Simd, WithSimd};

    use super::PhaseProducts;

    /// P[s, k] = sum over c in order of x[s, c] by_channel[c, k], each a chain of fused
    /// multiply-adds from zero, as every vector width must give it.
    fn products_in_order(sources: &[f32], by_channel: &[f32], cin: usize) -> Vec<f32> {
        sources
            .chunks_exact(cin)
            .flat_map(|x| {
                (0..16).map(move |k| {
                    (0..cin).fold(0.0f32, |sum, c| x[c].mul_add(by_channel[16 * c + k], sum))
                })
            })
            .collect()
    }

    /// [`PhaseProducts`] with the vectors of `simd`, or with this machine's (None).
    fn phase_products<S: Simd>(simd: Option<S>, sources: &[f32], by_channel: &[f32]) -> Vec<f32> {
        let mut products = vec![f32::NAN; sources.len() / (by_channel.len() / 16) * 16];
        let work = PhaseProducts {
            sources,
            by_channel,
            products: &mut products,
        };
        match simd {
            Some(simd) => work.with_simd(simd),
            None => Arch::new().dispatch(work),
        }
        products
    }

    #[test]
    fn phase_products_are_the_same_bits_at_every_vector_width() {
        // 29 pixels: two groups of twelve and five one at a time; a pixel's 16 products take
        // 16, 4 or 2 vectors of 1, 4 or 8 lanes, and this machine's (one of 16 with AVX-512).
        let cin = 5;
        let value = |i: usize| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 1.7;
        let sources: Vec<f32> = (0..29 * cin).map(value).collect();
        let by_channel: Vec<f32> = (0..16 * cin).map(|i| value(i + 31)).collect();
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        let expected = bits(products_in_order(&sources, &by_channel, cin));
        let (x, k) = (&sources[..], &by_channel[..]);
        assert_eq!(bits(phase_products(Some(Scalar), x, k)), expected, "1 lane");
        assert_eq!(
            bits(phase_products(Some(Scalar128b), x, k)),
            expected,
            "4 lanes"
        );
        assert_eq!(
            bits(phase_products(Some(Scalar256b), x, k)),
            expected,
            "8 lanes"
        );
        assert_eq!(
            bits(phase_products(None::<Scalar>, x, k)),
            expected,
            "this machine"
        );
    }
}
