//! Convolutions on the CPU, one function per pass:
//! - forward: [`forward`], by Winograd's F(2x2, 3x3) ([`super::winograd`]) for a plain input
//!   (4/9 of the multiplies; F(4x4, 3x3), 1/4, with [`ConvScratch::winograd`] 4x4); for an
//!   upsampled one by F(3, 2) over the output's phases at the source's resolution
//!   ([`super::upsampled_winograd`]: 16/81).
//! - backward-data: [`backward_data`], a 3x3 'same' convolution of dz with the flipped kernel,
//!   by Winograd; of an upsampled input, a 3x3 pass at the source's resolution over 2x2 box
//!   sums of dz (1/4 of the work), by Winograd's F(4, 2) over the box sums
//!   ([`super::upsampled_winograd`]: 9/16 of that), or for one output channel as a gathered
//!   GEMM: each source pixel's box sums gathered into one row of a tile ([`super::gather`]),
//!   tiles multiplied by the kernel ([`super::gemm`]).
//! - backward-filter: [`backward_filter`], Winograd's algebra read backward, for a plain input
//!   by F(2x2, 3x3), for an upsampled input by F(4, 2) over the box sums of dz.
//! - the whole backward pass as training runs it: [`backward`], the two passes, an upsampled
//!   input's from one transform of dz; [`backward_one_output`] for one output channel.
//!
//! The one-channel convolutions, one input channel (conv1) and one output channel read
//! upsampled (conv6), run their forward and kernel-gradient passes in [`super::one_channel`].
//!
//! Pixels are cut into WORK_CHUNKS pieces of whole image rows whatever the thread count, and
//! reductions add the pieces in a fixed order, so results are the same bits on any machine.

use std::ops::Range;

use pulp::Arch;
use rayon::prelude::*;

use super::super::{Conv, ConvInput, Nhwc, WinogradTile};
use super::gather::Gather;
use super::gemm::{Matrix, gemm};
use super::one_channel;
use super::upsampled_winograd::{self, UpsampledConv};
use super::winograd::{self, SameConv};
use crate::model::Activation;

/// Pixels per gathered tile: a tile of the widest layer (9 x 128 taps) stays in L2.
pub const TILE_PIXELS: usize = 128;
/// The fixed partition of each convolution's pixels into independent pieces of work.
pub const WORK_CHUNKS: usize = 64;

/// Scratch space, sized once by [`ConvScratch::plan`] for the Winograd tile the plain
/// convolutions run by.
#[derive(Debug, Default)]
pub struct ConvScratch {
    /// The tile of the plain convolutions' Winograd passes, whose transforms the scratch holds.
    pub winograd: WinogradTile,
    /// Per chunk of work: a tile of gathered box sums, or a one-channel pass's scratch.
    tiles: Vec<f32>,
    tile_len: usize,
    /// Per chunk of work: a partial kernel-and-bias gradient.
    partials: Vec<f32>,
    partial_len: usize,
    /// A transformed kernel (flipped, phase or Winograd kernels), or the summed partials.
    kernel: Vec<f32>,
}

/// Values of a kernel gradient as accumulated (9 taps of cin x cout, or the positions of a
/// Winograd tile) plus the bias.
fn partial_len(conv: &Conv, tile: WinogradTile) -> usize {
    let slot = &conv.slot;
    if conv.read == ConvInput::Direct && slot.in_channels > 1 {
        winograd::positions(tile) * slot.in_channels * slot.out_channels + slot.out_channels
    } else {
        taps_gradient_len(conv)
    }
}

/// Values of a kernel gradient as 9 taps of cin x cout plus the bias.
fn taps_gradient_len(conv: &Conv) -> usize {
    let slot = &conv.slot;
    9 * slot.in_channels * slot.out_channels + slot.out_channels
}

/// Values of a transformed kernel: the flipped kernel, four 2x2 phase kernels, or the summed
/// partial gradient.
fn kernel_len(conv: &Conv, tile: WinogradTile) -> usize {
    let taps = match conv.read {
        // The flipped kernel and its Winograd transform.
        ConvInput::Direct => 9 + winograd::positions(tile),
        // The forward pass's 64 kernel transforms (the backward passes: the flipped kernel and
        // its 36 transforms; one output channel: four 2x2 phase kernels).
        ConvInput::Upsampled2 => 64,
    };
    let kernel = conv.slot.in_channels * conv.slot.out_channels;
    // The whole backward pass of one output channel keeps the flipped kernel beside the sums.
    (taps * kernel).max(9 * kernel + partial_len(conv, tile))
}

/// Floats of scratch one chunk of work of this convolution needs: for the backward passes of
/// an upsampled input with one output channel, a tile of gathered box sums (and room for a
/// kernel gradient's product), or what the one-channel passes need. Winograd's pieces keep
/// their own scratch.
fn tile_len(conv: &Conv) -> usize {
    let gathered = match one_channel::writes_one_channel(conv) {
        true => TILE_PIXELS * 9 + 9 * conv.slot.in_channels,
        false => 0,
    };
    gathered.max(one_channel::scratch_floats(conv))
}

impl ConvScratch {
    /// Makes room for every convolution in `shapes`.
    pub fn plan(&mut self, convs: &[Conv]) {
        let tile = self.winograd;
        let partial_len = |conv| partial_len(conv, tile);
        self.partial_len = convs.iter().map(partial_len).max().unwrap_or(0);
        self.tile_len = convs.iter().map(tile_len).max().unwrap_or(0);
        self.tiles = vec![0.0; WORK_CHUNKS * self.tile_len];
        self.partials = vec![0.0; WORK_CHUNKS * self.partial_len];
        let kernel_len = |conv| kernel_len(conv, tile);
        self.kernel = vec![0.0; convs.iter().map(kernel_len).max().unwrap_or(0)];
    }

    pub fn fits(&self, conv: &Conv) -> bool {
        tile_len(conv) <= self.tile_len
            && partial_len(conv, self.winograd) <= self.partial_len
            && kernel_len(conv, self.winograd) <= self.kernel.len()
    }
}

pub(super) fn activate(activation: Activation, z: f32) -> f32 {
    match activation {
        Activation::Relu => z.max(0.0),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
    }
}

/// act'(z) from y = act(z): relu: y > 0; sigmoid: y (1 - y).
pub(super) fn derivative(activation: Activation, y: f32) -> f32 {
    match activation {
        Activation::Relu => f32::from(u8::from(y > 0.0)),
        Activation::Sigmoid => y * (1.0 - y),
    }
}

/// grad[i] *= act'(z) at y[i] = act(z): dL/dy to dL/dz, what every pass that ends in an
/// activation's derivative multiplies (so fused and separate passes give the same bits).
/// Inlined, as the epilogues below are, so that it runs at the vector width of the caller that
/// `pulp` compiled for the machine.
#[inline(always)]
pub(super) fn times_derivative(activation: Activation, grad: &mut [f32], y: &[f32]) {
    for (g, &y) in grad.iter_mut().zip(y) {
        *g *= derivative(activation, y);
    }
}

/// v = activation(v + bias[channel]) over rows of `bias.len()` channels. The activation is
/// chosen once, outside the loop: matched per value, the compiler computes the sigmoid's
/// exponential for ReLU layers too. Inlined, as [`times_derivative`] is.
#[inline(always)]
pub(super) fn add_bias_and_activate(values: &mut [f32], bias: &[f32], activation: Activation) {
    let rows = values.chunks_exact_mut(bias.len());
    match activation {
        Activation::Relu => rows.for_each(|row| {
            row.iter_mut()
                .zip(bias)
                .for_each(|(v, b)| *v = (*v + b).max(0.0));
        }),
        Activation::Sigmoid => rows.for_each(|row| {
            row.iter_mut()
                .zip(bias)
                .for_each(|(v, b)| *v = activate(activation, *v + b));
        }),
    }
}

/// What a Winograd pass does to its outputs after the channel sums.
#[derive(Clone, Copy)]
pub(super) enum Epilogue<'a> {
    /// Nothing: a gradient as it is.
    None,
    /// y = activation(sum + bias[channel]): a forward pass.
    BiasAndActivation(&'a [f32], Activation),
    /// dx = sum * activation'(x) at the same place, where x = activation(z') is the pass's
    /// output shape (all of it, not the piece): backward-data times the input's activation
    /// derivative, the multiplication [`Backend::activation_backward`] would do after it.
    ///
    /// [`Backend::activation_backward`]: super::super::Backend::activation_backward
    InputDerivative(&'a [f32], Activation),
}

impl Epilogue<'_> {
    /// Applies the epilogue to `out`, which starts at value `at` of the pass's output.
    #[inline(always)]
    pub(super) fn apply(self, out: &mut [f32], at: usize) {
        match self {
            Epilogue::None => {}
            Epilogue::BiasAndActivation(bias, activation) => {
                add_bias_and_activate(out, bias, activation)
            }
            Epilogue::InputDerivative(x, activation) => {
                times_derivative(activation, out, &x[at..][..out.len()])
            }
        }
    }

    /// Output rows staged in cache, each given the epilogue there and copied whole into
    /// `out`: `staged` holds rows `staged_width` values apart, each starting with `width`
    /// outputs; `out` holds rows of `width` values from value `at` of the pass's output, and
    /// takes as many staged rows as it has rows (a tile row may reach past the image's
    /// bottom). Written tile by tile straight into the output instead, a few pixels at a time
    /// in two to six rows, conv5's backward-data stored dx at about a third of the rate at
    /// which this machine stores one stream, and conv2's to conv5's Winograd passes took
    /// 3-10% longer (bench/results/2026-11-29-cpu-2-threads/staged-outputs/).
    #[inline(always)]
    pub(super) fn apply_and_store(
        self,
        (staged, staged_width): (&mut [f32], usize),
        out: &mut [f32],
        (width, at): (usize, usize),
    ) {
        let staged_rows = staged.chunks_exact_mut(staged_width);
        for (r, (out, staged)) in out.chunks_exact_mut(width).zip(staged_rows).enumerate() {
            let staged = &mut staged[..width];
            self.apply(staged, at + r * width);
            out.copy_from_slice(staged);
        }
    }
}

/// Pixels per chunk of work over `grid`: whole image rows, at most WORK_CHUNKS chunks.
pub(super) fn chunk_pixels(grid: Nhwc) -> usize {
    (grid.batch * grid.height).div_ceil(WORK_CHUNKS).max(1) * grid.width
}

/// out[p] = gathered row p times kernel, for every pixel p of the gather's grid.
fn gathered_gemm(
    (tiles, tile_len): (&mut [f32], usize),
    gather: &Gather,
    x: &[f32],
    kernel: Matrix,
    out: &mut [f32],
) {
    let (k, n) = (kernel.rows(), kernel.cols());
    let grid = gather.grid();
    let per_chunk = chunk_pixels(grid);
    out[..grid.pixels() * n]
        .par_chunks_mut(per_chunk * n)
        .zip(tiles.par_chunks_mut(tile_len))
        .enumerate()
        .for_each(|(chunk, (out_chunk, tile))| {
            for (t, out_tile) in out_chunk.chunks_mut(TILE_PIXELS * n).enumerate() {
                let pixels = out_tile.len() / n;
                let rows = &mut tile[..pixels * k];
                gather.rows(x, chunk * per_chunk + t * TILE_PIXELS, rows);
                gemm(Matrix::row_major(rows, pixels, k), kernel, out_tile, false);
            }
        });
}

/// Output phases (row parity a, column parity b), in the order of the phase kernels.
pub(super) const PHASES: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

/// For an output of parity p (0 even, 1 odd) and a 2x2 phase-kernel tap u: the taps of the
/// 3x3 kernel (along that axis) that read the same source pixel. Source offset is p - 1 + u.
const PHASE_TAPS: [[&[usize]; 2]; 2] = [[&[0], &[1, 2]], [&[0, 1], &[2]]];

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
#[inline(always)]
pub(super) fn add(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
}

/// dst[c, r] += src[r, c] for a row-major `rows` x `cols` src.
pub(super) fn add_transposed(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] += src[r * cols + c];
        }
    }
}

/// The convolution's kernel and bias in the flat parameter buffer.
fn kernel_and_bias<'a>(conv: &Conv, params: &'a [f32]) -> (&'a [f32], &'a [f32]) {
    (
        &params[conv.slot.weight.clone()],
        &params[conv.slot.bias.clone()],
    )
}

/// y = activation(conv(x, kernel) + bias); `kernel` is [3, 3, cin, cout].
pub fn forward(scratch: &mut ConvScratch, conv: &Conv, x: &[f32], params: &[f32], y: &mut [f32]) {
    let (kernel, bias) = kernel_and_bias(conv, params);
    match conv.read {
        ConvInput::Direct if one_channel::reads_one_channel(conv) => {
            let tiles = (&mut scratch.tiles[..], scratch.tile_len);
            one_channel::forward_one_input(conv, (x, kernel, bias), tiles, y);
        }
        ConvInput::Upsampled2 if one_channel::writes_one_channel(conv) => {
            // The phase kernels by channel, [cin, 16]: each channel's 16 taps side by side.
            let cin = conv.slot.in_channels;
            let by_channel = &mut scratch.kernel[..16 * cin];
            by_channel.fill(0.0);
            for_each_phase_tap(|p, t| {
                for (c, &w) in kernel[t * cin..][..cin].iter().enumerate() {
                    by_channel[16 * c + p] += w;
                }
            });
            let tiles = (&mut scratch.tiles[..], scratch.tile_len);
            let by_channel = &scratch.kernel[..16 * cin];
            one_channel::forward_one_output(conv, (x, by_channel, bias), tiles, y);
        }
        ConvInput::Direct => {
            let same = SameConv {
                input: conv.input,
                cout: conv.slot.out_channels,
                epilogue: Epilogue::BiasAndActivation(bias, conv.activation),
                tile: scratch.winograd,
            };
            let transformed = &mut scratch.kernel[..same.transformed_len()];
            same.transform_kernel(kernel, transformed);
            winograd::convolve(same, x, transformed, y);
        }
        ConvInput::Upsampled2 => {
            let phases = upsampled(conv);
            let transformed = &mut scratch.kernel[..phases.forward_transformed_len()];
            phases.transform_forward_kernel(kernel, transformed);
            let epilogue = Epilogue::BiasAndActivation(bias, conv.activation);
            upsampled_winograd::forward(phases, (x, transformed), epilogue, y);
        }
    }
}

/// pooled = maxpool2(activation(conv(x, kernel) + bias)) for one input channel.
pub fn pooled_forward(
    scratch: &mut ConvScratch,
    conv: &Conv,
    x: &[f32],
    params: &[f32],
    pooled: &mut [f32],
) {
    let (kernel, bias) = kernel_and_bias(conv, params);
    let operands = (x, kernel, bias);
    let tiles = (&mut scratch.tiles[..], scratch.tile_len);
    one_channel::forward_pooled(conv, operands, tiles, pooled);
}

/// The kernel and bias gradients of [`pooled_forward`] from dL/d pooled, into `grads` =
/// [dkernel (9 cout), dbias (cout)]: per-chunk partials added in their order.
pub fn pooled_backward_filter(
    scratch: &mut ConvScratch,
    conv: &Conv,
    (x, params): (&[f32], &[f32]),
    d_pooled: &[f32],
    grads: &mut [f32],
) {
    let (kernel, bias) = kernel_and_bias(conv, params);
    let operands = (x, kernel, bias);
    let size = taps_gradient_len(conv);
    let tiles = (&mut scratch.tiles[..], scratch.tile_len);
    let partials = (&mut scratch.partials[..], size);
    let chunks = one_channel::filter_pooled(conv, operands, d_pooled, tiles, partials);
    sum_in_order(&scratch.partials[..chunks * size], &mut grads[..size]);
}

/// dx = d loss / d input, from dz = d loss / d (pre-activation output).
///
/// Plain input: dx[i] = sum over k of w[k] dz[i + 1 - k] per dimension, a 3x3 convolution of
/// dz with flipped[2 - ky, 2 - kx, co, ci] = kernel[ky, kx, ci, co].
///
/// Input read upsampled, per dimension (u = upsample2(x), y[p] = sum over t in {-1, 0, 1} of
/// w[t] u[p + t], dz = 0 outside the image):
/// dx[s] = du[2s] + du[2s + 1] = sum over t of w[t] (dz[2s - t] + dz[2s + 1 - t])
///       = w[0] E[s] + w[1] O[s - 1] + w[-1] O[s],
/// E[s] = dz[2s] + dz[2s + 1] (aligned pairs), O[s] = dz[2s + 1] + dz[2s + 2] (odd pairs).
/// With B[m] = dz[m - 1] + dz[m] and k = t + 1: dx[s] = sum over r in 0..3 of w[2 - r] B[2s + r]
/// (B[2s] = O[s - 1], B[2s + 1] = E[s], B[2s + 2] = O[s]): the same flipped kernel over a 3-tap
/// window at stride 2 of the pair sums B. In two dimensions the pair sums multiply into the
/// 2x2 box sums of the 4x4 window of dz from (2i - 1, 2j - 1) ([`Gather::box_sums`]): a 3x3
/// pass at the source's resolution instead of one at the upsampled resolution, computed by
/// Winograd's F(4, 2) ([`upsampled_winograd`]), or for one output channel as a gathered GEMM.
/// Then `epilogue` on dx: [`Epilogue::None`], or the input's activation derivative.
pub fn backward_data(
    scratch: &mut ConvScratch,
    conv: &Conv,
    (dz, kernel): (&[f32], &[f32]),
    epilogue: Epilogue,
    dx: &mut [f32],
) {
    let (input, cin, cout) = (conv.input, conv.slot.in_channels, conv.slot.out_channels);
    flip_kernel(conv, kernel, &mut scratch.kernel[..9 * cin * cout]);
    match conv.read {
        ConvInput::Direct => {
            // A 'same' convolution of dz (cout channels) into cin channels, by Winograd.
            let same = SameConv {
                input: conv.output(),
                cout: cin,
                epilogue,
                tile: scratch.winograd,
            };
            let (flipped, transformed) = scratch.kernel.split_at_mut(9 * cin * cout);
            same.transform_kernel(flipped, transformed);
            winograd::convolve(same, dz, transformed, dx);
        }
        ConvInput::Upsampled2 if one_channel::writes_one_channel(conv) => {
            let gather = Gather::box_sums(conv.output(), input);
            let flipped = Matrix::row_major(&scratch.kernel, 9 * cout, cin);
            let tiles = (&mut scratch.tiles[..], scratch.tile_len);
            gathered_gemm(tiles, &gather, dz, flipped, dx);
            let chunk = chunk_pixels(input) * cin;
            dx[..input.len()]
                .par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, dx)| epilogue.apply(dx, i * chunk));
        }
        ConvInput::Upsampled2 => {
            let (flipped, transformed) = scratch.kernel.split_at_mut(9 * cin * cout);
            let boxes = upsampled(conv);
            boxes.transform_kernel(flipped, transformed);
            upsampled_winograd::backward_data(boxes, (dz, transformed), epilogue, dx);
        }
    }
}

/// The whole backward pass of a convolution of several output channels, for
/// [`Backend::conv2d_backward`](crate::backend::Backend::conv2d_backward): the kernel and bias
/// gradients into `grads` as [`backward_filter`] makes them, and dx as [`backward_data`] makes
/// it with `epilogue`. An upsampled input's two passes share one transform of dz
/// ([`upsampled_winograd::kernel_gradient`] with backward-data's part); the others run in turn.
/// The same bits as the two passes.
pub fn backward(
    scratch: &mut ConvScratch,
    conv: &Conv,
    x: &[f32],
    (dz, kernel): (&[f32], &[f32]),
    (epilogue, grads): (Epilogue, &mut [f32]),
    dx: &mut [f32],
) {
    if conv.read == ConvInput::Direct || one_channel::writes_one_channel(conv) {
        backward_filter(scratch, conv, x, dz, grads);
        backward_data(scratch, conv, (dz, kernel), epilogue, dx);
        return;
    }
    let (cin, cout) = (conv.slot.in_channels, conv.slot.out_channels);
    flip_kernel(conv, kernel, &mut scratch.kernel[..9 * cin * cout]);
    let (flipped, transformed) = scratch.kernel.split_at_mut(9 * cin * cout);
    upsampled(conv).transform_kernel(flipped, transformed);
    let data = Some((&transformed[..], epilogue, dx));
    upsampled_kernel_gradient(&mut scratch.partials, conv, (x, dz), data, grads);
}

/// An upsampled input's convolution as [`upsampled_winograd`] takes it.
fn upsampled(conv: &Conv) -> UpsampledConv {
    UpsampledConv {
        input: conv.input,
        cout: conv.slot.out_channels,
    }
}

/// An upsampled input's kernel and bias gradients into `grads`
/// ([`upsampled_winograd::kernel_gradient`], its groups' partials added in order), and with
/// `data` backward-data's dx from the same transforms of dz.
fn upsampled_kernel_gradient(
    partials: &mut [f32],
    conv: &Conv,
    (x, dz): (&[f32], &[f32]),
    data: Option<(&[f32], Epilogue, &mut [f32])>,
    grads: &mut [f32],
) {
    let size = taps_gradient_len(conv);
    let groups =
        upsampled_winograd::kernel_gradient(upsampled(conv), (x, dz), data, (partials, size));
    sum_in_order(&partials[..groups * size], &mut grads[..size]);
}

/// flipped[2 - ky, 2 - kx, co, ci] = kernel[ky, kx, ci, co]: backward-data's kernel.
fn flip_kernel(conv: &Conv, kernel: &[f32], flipped: &mut [f32]) {
    let (cin, cout) = (conv.slot.in_channels, conv.slot.out_channels);
    flipped.fill(0.0);
    for (t, taps) in kernel.chunks_exact(cin * cout).enumerate() {
        add_transposed(taps, cin, cout, &mut flipped[(8 - t) * cin * cout..]);
    }
}

/// The whole backward pass of a convolution with one output channel of an upsampled input
/// (conv6), for [`Backend::conv2d_backward`](crate::backend::Backend::conv2d_backward): the
/// kernel and bias gradients into `grads` as [`backward_filter`] makes them, and dx as
/// [`backward_data`] makes it times the derivative at x of `x_activation`, in one pass over the
/// tiles of source pixels, each tile's box sums of dz gathered once for both
/// ([`one_channel::backward_one_output`]). The same bits as the three passes.
pub fn backward_one_output(
    scratch: &mut ConvScratch,
    conv: &Conv,
    x: (&[f32], Option<Activation>),
    (dz, kernel): (&[f32], &[f32]),
    grads: &mut [f32],
    dx: &mut [f32],
) {
    let cin = conv.slot.in_channels;
    let size = taps_gradient_len(conv);
    let chunks = conv.input.pixels().div_ceil(chunk_pixels(conv.input));
    let (flipped, total) = scratch.kernel.split_at_mut(9 * cin);
    flip_kernel(conv, kernel, flipped);
    let tile_work =
        one_channel::backward_one_output(conv, x, dz, Matrix::row_major(flipped, 9, cin));
    let partials = &mut scratch.partials[..chunks * size];
    let tiles = (&mut scratch.tiles[..], scratch.tile_len);
    chunk_partials_and_rows(conv.input, tiles, (partials, size), (dx, cin), tile_work);
    sum_in_order(&scratch.partials[..chunks * size], &mut total[..size]);
    unflip_box_sum_gradient(conv, &total[..size], grads);
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
    let size = taps_gradient_len(conv);
    let chunks = conv.input.pixels().div_ceil(chunk_pixels(conv.input));
    let partials = &mut scratch.partials[..chunks * size];
    let tiles = (&mut scratch.tiles[..], scratch.tile_len);
    match conv.read {
        ConvInput::Direct if one_channel::reads_one_channel(conv) => {
            let tile_gradient = one_channel::filter_one_input(conv, x, dz);
            chunk_partials(conv.input, tiles, (partials, size), tile_gradient);
            sum_in_order(&scratch.partials[..chunks * size], &mut grads[..size]);
        }
        ConvInput::Direct => {
            let same = SameConv {
                input: conv.input,
                cout: conv.slot.out_channels,
                epilogue: Epilogue::None,
                tile: scratch.winograd,
            };
            let sums = (&mut scratch.partials[..], &mut scratch.kernel[..]);
            winograd::kernel_gradient(same, (x, dz), sums, grads);
        }
        ConvInput::Upsampled2 if one_channel::writes_one_channel(conv) => {
            let tile_gradient = one_channel::filter_one_output(conv, x, dz);
            chunk_partials(conv.input, tiles, (partials, size), tile_gradient);
            let total = &mut scratch.kernel[..size];
            sum_in_order(&scratch.partials[..chunks * size], total);
            unflip_box_sum_gradient(conv, total, grads);
        }
        ConvInput::Upsampled2 => {
            upsampled_kernel_gradient(&mut scratch.partials, conv, (x, dz), None, grads);
        }
    }
}

/// Calls `tile_gradient(pixels, tile, partial)` for each tile of at most TILE_PIXELS source
/// pixels of `grid`, in order, each chunk of work into its own zeroed partial of `size`.
fn chunk_partials(
    grid: Nhwc,
    tiles: (&mut [f32], usize),
    partials: (&mut [f32], usize),
    tile_gradient: impl Fn(Range<usize>, &mut [f32], &mut [f32]) + Sync,
) {
    let no_rows = (&mut [][..], 0);
    chunk_partials_and_rows(
        grid,
        tiles,
        partials,
        no_rows,
        |pixels, tile, partial, _| tile_gradient(pixels, tile, partial),
    );
}

/// [`chunk_partials`], each tile's call also given its pixels' rows of `out` (`n` values a
/// pixel) to write: `tile_work(pixels, tile, partial, rows)`.
fn chunk_partials_and_rows(
    grid: Nhwc,
    (tiles, tile_len): (&mut [f32], usize),
    (partials, size): (&mut [f32], usize),
    (out, n): (&mut [f32], usize),
    tile_work: impl Fn(Range<usize>, &mut [f32], &mut [f32], &mut [f32]) + Sync,
) {
    let per_chunk = chunk_pixels(grid);
    let chunks = partials.len() / size;
    let mut rows = Vec::with_capacity(chunks);
    let mut rest = &mut out[..grid.pixels().min(chunks * per_chunk) * n];
    for chunk in 0..chunks {
        let pixels = per_chunk.min(grid.pixels() - chunk * per_chunk);
        let (these, others) = rest.split_at_mut(pixels * n);
        rows.push(these);
        rest = others;
    }
    partials
        .par_chunks_mut(size)
        .zip(tiles.par_chunks_mut(tile_len))
        .zip(rows)
        .enumerate()
        .for_each(|(chunk, ((partial, tile), chunk_rows))| {
            partial.fill(0.0);
            let pixels = chunk * per_chunk..grid.pixels().min((chunk + 1) * per_chunk);
            for start in pixels.clone().step_by(TILE_PIXELS) {
                let end = pixels.end.min(start + TILE_PIXELS);
                let tile_rows =
                    &mut chunk_rows[(start - pixels.start) * n..(end - pixels.start) * n];
                tile_work(start..end, tile, partial, tile_rows);
            }
        });
}

/// total[i] = the sum over partials (each total.len() long) of partial[i], in their order:
/// from -0.0 (as `Iterator::sum` starts), each block of 1024 values adding one partial's
/// block at a time, compiled for the machine's vector width (outside a dispatch, plain
/// SSE2: 2% of conv3's and conv4's kernel gradients).
pub(super) fn sum_in_order(partials: &[f32], total: &mut [f32]) {
    let size = total.len();
    let arch = Arch::new();
    total
        .par_chunks_mut(1024)
        .enumerate()
        .for_each(|(block, out)| {
            arch.dispatch(|| {
                out.fill(-0.0);
                for partial in partials.chunks_exact(size) {
                    add(out, &partial[block * 1024..][..out.len()]);
                }
            })
        });
}

/// grads[ky, kx, ci, co] = total[2 - ky, 2 - kx, co, ci], and the bias as it is.
fn unflip_box_sum_gradient(conv: &Conv, total: &[f32], grads: &mut [f32]) {
    let (cin, cout) = (conv.slot.in_channels, conv.slot.out_channels);
    let (dkernel, dbias) = grads.split_at_mut(9 * cin * cout);
    dkernel.fill(0.0);
    for (t, tap) in total.chunks_exact(cin * cout).take(9).enumerate() {
        add_transposed(tap, cout, cin, &mut dkernel[(8 - t) * cin * cout..]);
    }
    dbias[..cout].copy_from_slice(&total[9 * cin * cout..][..cout]);
}
