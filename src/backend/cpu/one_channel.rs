//! Convolutions with one output channel and an upsampled input (conv6) as direct loops. As
//! gathered GEMMs they would be GEMMs of width 1 whose gathers copy every source pixel many
//! times; here the forward pass computes each output pixel as four dot products of a source
//! pixel's channels with a phase-kernel tap, and the kernel gradient adds each source pixel's
//! channels, read in place, times the nine box sums of dz that its taps see (the algebra of
//! `backward_data` in conv.rs), with the vector instructions of the CPU it runs on (`pulp`
//! picks AVX-512 or AVX2 with FMA at run time) and every multiply-add fused, as the GEMM
//! kernels fuse them. Backward-data is a gathered GEMM of depth 9 in conv.rs.
//!
//! (conv1, one input channel, stays a GEMM of depth 9: direct loops over its 32 output
//! channels were slower.)

use std::ops::Range;

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::conv::{PHASES, activate, add, chunk_pixels};
use super::gather::{Gather, Placed, Window};
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
                let placed = Placed::new(input, input, Window::phase(a, b), first + q);
                let (mut sums, mut rest) = (simd.splat_f32s(0.0), 0.0);
                for (tap, source) in placed.taps().enumerate() {
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

/// The kernel-and-bias gradient over some source pixels, laid out as the GEMM path of
/// `conv.rs` accumulates it (`filter_box_sums`, with one output channel): the flipped taps
/// [2 - ky, 2 - kx, cin], then the bias.
struct FilterBoxSums<'a> {
    conv: &'a Conv,
    x: &'a [f32],
    dz: &'a [f32],
    pixels: Range<usize>,
    partial: &'a mut [f32],
}

impl WithSimd for FilterBoxSums<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let FilterBoxSums {
            conv,
            x,
            dz,
            pixels,
            partial,
        } = self;
        let cin = conv.slot.in_channels;
        let gather = Gather::box_sums(conv.output(), conv.input);
        let (dkernel, dbias) = partial.split_at_mut(partial.len() - 1);
        // partial[r, c, :] += box_sums(dz)[s][r, c] x[s, :]; dbias += box_sums(dz)[s][1, 1]
        let mut sums = [0.0; 9];
        for pixel in pixels {
            gather.rows(dz, pixel, &mut sums);
            dbias[0] += sums[4];
            let x = &x[pixel * cin..][..cin];
            for (taps, &g) in dkernel.chunks_exact_mut(cin).zip(&sums) {
                axpy(simd, taps, g, x);
            }
        }
    }
}

/// A tile's gradient with one output channel (see `filter_box_sums` in conv.rs): the tile's
/// sum is formed in `tile` and then added to `partial`, as the GEMM path adds a tile's
/// product, to keep the float32 sums short.
pub fn filter_box_sums<'a>(
    conv: &'a Conv,
    x: &'a [f32],
    dz: &'a [f32],
) -> impl Fn(Range<usize>, &mut [f32], &mut [f32]) + Sync + 'a {
    move |pixels, tile, partial| {
        let tile_sum = &mut tile[..partial.len()];
        tile_sum.fill(0.0);
        Arch::new().dispatch(FilterBoxSums {
            conv,
            x,
            dz,
            pixels,
            partial: tile_sum,
        });
        add(partial, tile_sum);
    }
}
