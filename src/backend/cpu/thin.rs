//! Convolutions with one output channel read through an upsampling (conv6) as direct loops.
//! As im2col and a GEMM they would be four GEMMs of width 1 whose im2col copies every source
//! pixel sixteen times; here each output pixel is four dot products of a source pixel's
//! channels with a phase-kernel tap, read in place, with the vector instructions of the CPU it
//! runs on (`pulp` picks AVX-512 or AVX2 with FMA at run time) and every multiply-add fused, as
//! the GEMM kernels fuse them.
//!
//! (conv1, one input channel, stays a GEMM of depth 9: direct loops over its 32 output
//! channels were slower.)

use std::ops::Range;

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::conv::{PHASES, activate, chunk_pixels, phase_window, window_taps};
use crate::backend::{Conv, ConvInput};

/// Whether `conv` runs here rather than as im2col and a GEMM.
pub fn applies(conv: &Conv) -> bool {
    conv.read == ConvInput::Upsampled2 && conv.slot.out_channels == 1
}

/// y += a x
#[inline(always)]
fn axpy<S: Simd>(simd: S, y: &mut [f32], a: f32, x: &[f32]) {
    let (y_vectors, y_rest) = S::as_mut_simd_f32s(y);
    let (x_vectors, x_rest) = S::as_simd_f32s(x);
    let a_vector = simd.splat_f32s(a);
    for (y, x) in y_vectors.iter_mut().zip(x_vectors) {
        *y = simd.mul_add_f32s(a_vector, *x, *y);
    }
    for (y, x) in y_rest.iter_mut().zip(x_rest) {
        *y = a.mul_add(*x, *y);
    }
}

/// Adds a . b into `sums` (lane by lane, for the vectors' worth of a and b) and `rest` (the
/// elements past the last whole vector).
#[inline(always)]
fn dot_into<S: Simd>(simd: S, (sums, rest): (&mut S::f32s, &mut f32), a: &[f32], b: &[f32]) {
    let (a_vectors, a_rest) = S::as_simd_f32s(a);
    let (b_vectors, b_rest) = S::as_simd_f32s(b);
    for (a, b) in a_vectors.iter().zip(b_vectors) {
        *sums = simd.mul_add_f32s(*a, *b, *sums);
    }
    for (a, b) in a_rest.iter().zip(b_rest) {
        *rest = a.mul_add(*b, *rest);
    }
}

/// The forward pass over the source pixels from `first` whose outputs are `y`, with the four
/// 2x2 phase kernels [4, 2, 2, cin] (see conv.rs).
struct ForwardChunk<'a> {
    conv: &'a Conv,
    x: &'a [f32],
    kernel: &'a [f32],
    bias: &'a [f32],
    first: usize,
    y: &'a mut [f32],
}

impl WithSimd for ForwardChunk<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let ForwardChunk {
            conv,
            x,
            kernel,
            bias,
            first,
            y,
        } = self;
        let (input, cin, width) = (conv.input, conv.slot.in_channels, conv.input.width);
        // y[2i + a, 2j + b] = act(bias + sum over the phase taps (u, v) of
        // x[i + a - 1 + u, j + b - 1 + v, :] . phase_kernel[a, b][u, v, :])
        for q in 0..y.len() / 4 {
            let (row, j) = (q / width, q % width);
            for (phase, &(a, b)) in PHASES.iter().enumerate() {
                let sources = window_taps(input, input, phase_window(a, b), first + q);
                let (mut sums, mut rest) = (simd.splat_f32s(0.0), 0.0);
                for (tap, source) in sources.enumerate() {
                    let Some(s) = source else { continue };
                    let taps = &kernel[(4 * phase + tap) * cin..][..cin];
                    dot_into(simd, (&mut sums, &mut rest), &x[s * cin..][..cin], taps);
                }
                let z = bias[0] + simd.reduce_sum_f32s(sums) + rest;
                y[(2 * row + a) * 2 * width + 2 * j + b] = activate(conv.activation, z);
            }
        }
    }
}

/// y = act(conv(x) + bias) with the phase kernels `kernel`, in the chunks of whole source rows
/// the GEMM path uses (each source pixel has four outputs).
pub fn forward(conv: &Conv, x: &[f32], kernel: &[f32], bias: &[f32], y: &mut [f32]) {
    let per_chunk = chunk_pixels(conv.input);
    y[..conv.output().len()]
        .par_chunks_mut(4 * per_chunk)
        .enumerate()
        .for_each(|(chunk, y)| {
            let first = chunk * per_chunk;
            Arch::new().dispatch(ForwardChunk {
                conv,
                x,
                kernel,
                bias,
                first,
                y,
            })
        });
}

/// The kernel-and-bias gradient over some source pixels, laid out as the GEMM path
/// accumulates it: the phase kernels [4, 2, 2, cin], then the bias.
struct FilterPartial<'a> {
    conv: &'a Conv,
    x: &'a [f32],
    dz: &'a [f32],
    pixels: Range<usize>,
    partial: &'a mut [f32],
}

impl WithSimd for FilterPartial<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let FilterPartial {
            conv,
            x,
            dz,
            pixels,
            partial,
        } = self;
        let (input, cin, width) = (conv.input, conv.slot.in_channels, conv.input.width);
        let (dkernel, dbias) = partial.split_at_mut(partial.len() - 1);
        // phase_kernel[a, b][u, v, :] += dz[2i + a, 2j + b] x[i + a - 1 + u, j + b - 1 + v, :];
        // dbias += dz[2i + a, 2j + b]
        for pixel in pixels {
            let (row, j) = (pixel / width, pixel % width);
            for (phase, &(a, b)) in PHASES.iter().enumerate() {
                let g = dz[(2 * row + a) * 2 * width + 2 * j + b];
                dbias[0] += g;
                let sources = window_taps(input, input, phase_window(a, b), pixel);
                for (tap, source) in sources.enumerate() {
                    let Some(s) = source else { continue };
                    let taps = &mut dkernel[(4 * phase + tap) * cin..][..cin];
                    axpy(simd, taps, g, &x[s * cin..][..cin]);
                }
            }
        }
    }
}

/// Adds the kernel-and-bias gradient over source pixels `pixels` into `partial`.
pub fn filter_partial(
    conv: &Conv,
    x: &[f32],
    dz: &[f32],
    pixels: Range<usize>,
    partial: &mut [f32],
) {
    Arch::new().dispatch(FilterPartial {
        conv,
        x,
        dz,
        pixels,
        partial,
    })
}
