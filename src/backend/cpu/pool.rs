//! 2x2 max pooling over pairs of rows, a vector of channels at a time: the maxima, and the
//! routing of the pooled gradient to each window's first maximum (row-major; a later value
//! replaces the best so far only when greater, as TensorFlow and the GPU's kernels choose).
//! conv1's fused pooling and the pooling layers share them.

use pulp::{Simd, WithSimd};

use crate::model::Activation;

/// The maximum of each lane's 2x2 window [a, b, c, d] (row-major) and where it first stands
/// (a later value replaces the best so far only when greater): whether b, c and d each
/// replaced the best so far, as the pooling backward pass routes gradients.
#[inline(always)]
pub(super) fn first_maximum<S: Simd>(
    simd: S,
    [a, b, c, d]: [S::f32s; 4],
) -> (S::f32s, [S::m32s; 3]) {
    let take_b = simd.greater_than_f32s(b, a);
    let best = simd.select_f32s(take_b, b, a);
    let take_c = simd.greater_than_f32s(c, best);
    let best = simd.select_f32s(take_c, c, best);
    let take_d = simd.greater_than_f32s(d, best);
    (simd.select_f32s(take_d, d, best), [take_b, take_c, take_d])
}

/// g routed to its 2x2 window's first maximum (row-major), from whether b, c and d each
/// replaced the best so far ([`first_maximum`]): the gradients of a, b, c and d.
#[inline(always)]
pub(super) fn to_first_maximum<S: Simd>(
    simd: S,
    g: S::f32s,
    [take_b, take_c, take_d]: [S::m32s; 3],
) -> [S::f32s; 4] {
    let zero = simd.splat_f32s(0.0);
    let later = simd.or_m32s(take_c, take_d);
    [
        simd.select_f32s(simd.or_m32s(take_b, later), zero, g),
        simd.select_f32s(later, zero, simd.select_f32s(take_b, g, zero)),
        simd.select_f32s(take_d, zero, simd.select_f32s(take_c, g, zero)),
        simd.select_f32s(take_d, g, zero),
    ]
}

/// Window j's four values at channels k..k + n (a vector or less) of two rows of `channels`
/// channels, `top` and `bottom`.
#[inline(always)]
fn window_lanes<S: Simd>(
    simd: S,
    (top, bottom): (&[f32], &[f32]),
    channels: usize,
    (j, k, n): (usize, usize, usize),
) -> [S::f32s; 4] {
    let at = 2 * j * channels + k;
    [
        simd.partial_load_f32s(&top[at..][..n]),
        simd.partial_load_f32s(&top[at + channels..][..n]),
        simd.partial_load_f32s(&bottom[at..][..n]),
        simd.partial_load_f32s(&bottom[at + channels..][..n]),
    ]
}

/// act'(z) from y = act(z), a vector at a time, to the bits of conv.rs's `derivative`: relu:
/// 1 where y > 0, else 0; sigmoid: y (1 - y); without an activation, 1.
#[inline(always)]
pub(super) fn derivative_lanes<S: Simd>(
    simd: S,
    activation: Option<Activation>,
    y: S::f32s,
) -> S::f32s {
    let (zero, one) = (simd.splat_f32s(0.0), simd.splat_f32s(1.0));
    match activation {
        Some(Activation::Relu) => simd.select_f32s(simd.greater_than_f32s(y, zero), one, zero),
        Some(Activation::Sigmoid) => simd.mul_f32s(y, simd.sub_f32s(one, y)),
        None => one,
    }
}

/// pooled[j, :] = the maximum of window j of `rows`, two rows of `channels` channels, a vector of
/// channels at a time.
pub(super) struct PoolRows<'a> {
    pub rows: &'a [f32],
    pub channels: usize,
    pub pooled: &'a mut [f32],
}

impl WithSimd for PoolRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let PoolRows {
            rows,
            channels,
            pooled,
        } = self;
        let rows = rows.split_at(rows.len() / 2);
        for (j, out) in pooled.chunks_exact_mut(channels).enumerate() {
            for k in (0..channels).step_by(S::F32_LANES) {
                let n = (channels - k).min(S::F32_LANES);
                let (best, _) = first_maximum(simd, window_lanes(simd, rows, channels, (j, k, n)));
                simd.partial_store_f32s(&mut out[k..][..n], best);
            }
        }
    }
}

/// d_rows (the gradient of `rows`) = d_pooled[j, :] at the first maximum of window j of
/// `rows` (the activation's outputs) times the activation's derivative there, 0 elsewhere, a
/// vector of channels at a time.
pub(super) struct RouteToFirstMaxima<'a> {
    pub activation: Option<Activation>,
    pub rows: &'a [f32],
    pub channels: usize,
    pub d_pooled: &'a [f32],
    pub d_rows: &'a mut [f32],
}

impl WithSimd for RouteToFirstMaxima<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let RouteToFirstMaxima {
            activation,
            rows,
            channels,
            d_pooled,
            d_rows,
        } = self;
        let rows = rows.split_at(rows.len() / 2);
        let (d_top, d_bottom) = d_rows.split_at_mut(rows.0.len());
        for (j, g) in d_pooled.chunks_exact(channels).enumerate() {
            for k in (0..channels).step_by(S::F32_LANES) {
                let n = (channels - k).min(S::F32_LANES);
                let window = window_lanes(simd, rows, channels, (j, k, n));
                let (best, [take_b, take_c, take_d]) = first_maximum(simd, window);
                let g = simd.partial_load_f32s(&g[k..][..n]);
                let g = simd.mul_f32s(g, derivative_lanes(simd, activation, best));
                let [to_a, to_b, to_c, to_d] = to_first_maximum(simd, g, [take_b, take_c, take_d]);
                let at = 2 * j * channels + k;
                simd.partial_store_f32s(&mut d_top[at..][..n], to_a);
                simd.partial_store_f32s(&mut d_top[at + channels..][..n], to_b);
                simd.partial_store_f32s(&mut d_bottom[at..][..n], to_c);
                simd.partial_store_f32s(&mut d_bottom[at + channels..][..n], to_d);
            }
        }
    }
}
