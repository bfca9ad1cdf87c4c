//! 3x3 'same' convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016). Each 2x2 block of outputs (a tile) is
//!
//! ```text
//! Y = A^T [ sum over input channels of (G g G^T) ⊙ (B^T d B) ] A
//! ```
//!
//! over the tile's 4x4 input window d (from row 2 ti - 1, column 2 tj - 1; zeros outside the
//! image) and each 3x3 kernel g, so that the sum over channels becomes 16 GEMMs, one per
//! position ξ of the 4x4 transformed tile: M[ξ] (tiles x cout) = V[ξ] (tiles x cin) U[ξ]
//! (cin x cout). That is 16 multiplies per 2x2 outputs and channel pair instead of 36: 4/9 of
//! the direct arithmetic. In one dimension, for outputs y0 = d0 g0 + d1 g1 + d2 g2 and
//! y1 = d1 g0 + d2 g1 + d3 g2 (a correlation, as convolution layers compute):
//!
//! ```text
//! B^T d = (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
//! G g   = (g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2)
//! A^T m = (m0 + m1 + m2, m1 - m2 - m3)
//! ```
//!
//! With `--winograd-tile 4x4` the same passes run by F(4x4, 3x3) (points 0, ±1, ±2 and
//! infinity): 4x4 output tiles over 6x6 windows, 36 GEMMs, 36 multiplies per 4x4 outputs: 1/4
//! of the direct arithmetic, for rounding errors about ten times F(2x2, 3x3)'s (the transforms'
//! coefficients reach 5 and 8, the kernel's 1/24):
//!
//! ```text
//! B^T d = (4 d0 - 5 d2 + d4, -4 d1 - 4 d2 + d3 + d4, 4 d1 - 4 d2 - d3 + d4,
//!          -2 d1 - d2 + 2 d3 + d4, 2 d1 - d2 - 2 d3 + d4, 4 d1 - 5 d3 + d5)
//! G g   = (g0 / 4, -(g0 + g1 + g2) / 6, -(g0 - g1 + g2) / 6, (g0 + 2 g1 + 4 g2) / 24,
//!          (g0 - 2 g1 + 4 g2) / 24, g2)
//! A^T m = (m0 + m1 + m2 + m3 + m4, m1 - m2 + 2 m3 - 2 m4, m1 + m2 + 4 m3 + 4 m4,
//!          m1 - m2 + 8 m3 - 8 m4 + m5)
//! ```
//!
//! The plain convolutions with several input channels run all three passes here: forward;
//! backward-data, itself a 'same' convolution of dz with the flipped kernel; and
//! backward-filter, the same algebra read backward ([`kernel_gradient`]). Tiles are taken a few
//! tile rows of one image at a time (a piece of work), so that a piece's transformed tiles stay
//! in L2; outputs do not depend on how the work is cut, and the kernel gradient's pieces are
//! added in a fixed order.

use std::cell::RefCell;
use std::marker::PhantomData;

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::super::{Nhwc, WinogradTile};
use super::conv::{Epilogue, add, sum_in_order};
use super::gemm::{Matrix, shallow_product};
use super::tile_transforms::{
    Line, strip_columns, transform_tile_windows, untransform_scratch_len, untransform_tiles,
};

/// Positions times tiles a piece of work aims at: whole tile rows of one image, at least this
/// many tiles' positions (64 tiles of F(2x2, 3x3), 29 of F(4x4, 3x3)), so that a piece's
/// transformed tiles stay in L2.
const POSITIONS_PER_PIECE: usize = 1024;

/// G of F(2x2, 3x3), the kernel transform: row a of the 4 x 3 matrix.
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// G of F(4x4, 3x3): row a of the 6 x 3 matrix.
const G4: [[f64; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// A 3x3 'same' convolution: its input's shape, its output channels, what follows the
/// channel sums (bias and activation; nothing for a gradient, or the derivative of the
/// activation before it), and the Winograd tile it runs by.
#[derive(Clone, Copy)]
pub struct SameConv<'a> {
    pub input: Nhwc,
    pub cout: usize,
    pub epilogue: Epilogue<'a>,
    pub tile: WinogradTile,
}

/// Winograd's F(T x T, 3x3) over windows of W = T + 2 pixels a side, W x W transformed
/// positions a tile: its transforms along one line of a tile.
trait MinimalFiltering<const W: usize, const T: usize> {
    /// B^T over a line of a tile's window.
    type Input: Line<W, W>;
    /// A^T over a line of products.
    type Output: Line<W, T>;
    /// A over a line of a tile's block of dz, for the kernel gradient.
    type Block: Line<T, W>;
    /// The position along a side at which A sums a line of the block: the bias gradient's
    /// share of a block is its transform at this position along both sides.
    const SUM: usize;
}

/// F(2x2, 3x3).
struct F2x2;

impl MinimalFiltering<4, 2> for F2x2 {
    type Input = InputTransform2;
    type Output = OutputTransform2;
    type Block = BlockTransform2;
    const SUM: usize = 1;
}

/// F(4x4, 3x3).
struct F4x4;

impl MinimalFiltering<6, 4> for F4x4 {
    type Input = InputTransform4;
    type Output = OutputTransform4;
    type Block = BlockTransform4;
    const SUM: usize = 1;
}

/// Some whole tile rows of one image: a piece of work.
#[derive(Clone, Copy)]
pub(super) struct Piece {
    pub(super) image: usize,
    pub(super) first_tile_row: usize,
    pub(super) tile_rows: usize,
}

impl Piece {
    /// Every piece of work over `batch` images of `tiles_down` tile rows, `per_piece` tile
    /// rows a piece (the last of an image may have fewer), image by image, top to bottom.
    pub(super) fn all(batch: usize, tiles_down: usize, per_piece: usize) -> Vec<Piece> {
        (0..batch)
            .flat_map(|image| {
                (0..tiles_down)
                    .step_by(per_piece)
                    .map(move |first_tile_row| Piece {
                        image,
                        first_tile_row,
                        tile_rows: per_piece.min(tiles_down - first_tile_row),
                    })
            })
            .collect()
    }
}

/// Groups of pieces of work whose kernel gradients are summed apart, each into its own
/// partial. A group costs a fixed amount besides its pieces' work (zeroing its partial, its
/// share of the final sum, and for conv5 turning its 36 sums into the kernel's in float64):
/// with [`WORK_CHUNKS`](super::conv::WORK_CHUNKS) groups that took 6% of conv5's kernel
/// gradient and 4-10% of conv2's to conv4's at batch 32. 16 still give each of up to 16
/// threads a group.
pub(super) const PIECE_GROUPS: usize = 16;

/// Runs `work(pieces, scratch, partial)` on groups of consecutive `pieces` (pieces of work,
/// with what each one writes where it writes more than its group's partial), at most
/// [`PIECE_GROUPS`] groups and the same ones whatever the thread count, each group into its
/// own partial of `size` values of `partials`, with a scratch of `scratch_len` floats
/// ([`with_scratch`]). Returns the number of groups, whose partials the caller adds in order.
pub(super) fn for_each_group<T: Send>(
    pieces: &mut [T],
    (partials, size): (&mut [f32], usize),
    scratch_len: usize,
    work: impl Fn(&mut [T], &mut [f32], &mut [f32]) + Sync,
) -> usize {
    let per_group = pieces.len().div_ceil(PIECE_GROUPS).max(1);
    let groups = pieces.len().div_ceil(per_group);
    pieces
        .par_chunks_mut(per_group)
        .zip(partials[..groups * size].par_chunks_mut(size))
        .for_each(|(pieces, partial)| {
            with_scratch(scratch_len, |scratch| work(pieces, scratch, partial));
        });
    groups
}

thread_local! {
    /// Each thread's scratch for the pieces of work it takes, kept from call to call.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats in a cache line: the scratch starts on one.
const LINE: usize = 16;

/// Runs `work` on `len` floats of this thread's scratch, which grows to the largest length
/// asked for and stays, so that a step allocates (and the system zeroes pages) only the first
/// time. What `work` finds there is left from earlier work. The scratch starts on a cache line,
/// so that the transforms' and the GEMMs' 64-byte loads and stores (channel counts are
/// multiples of 16) each touch one line, not two: a large allocation starts 16 bytes past a
/// page (3% of conv5's backward-filter).
pub(super) fn with_scratch<R>(len: usize, work: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < len + LINE {
            scratch.resize(len + LINE, 0.0);
        }
        // Below LINE: an f32 pointer is 4-byte aligned.
        let skip = scratch.as_ptr().align_offset(LINE * size_of::<f32>());
        work(&mut scratch[skip..skip + len])
    })
}

/// The kernel transform G of a tile's algorithm, a row per position along a side.
fn kernel_transform(tile: WinogradTile) -> &'static [[f64; 3]] {
    match tile {
        WinogradTile::TwoByTwo => &G,
        WinogradTile::FourByFour => &G4,
    }
}

/// Positions of a transformed tile, (m + 2)^2: 16 for F(2x2, 3x3), 36 for F(4x4, 3x3).
pub(super) fn positions(tile: WinogradTile) -> usize {
    (tile.side() + 2).pow(2)
}

impl SameConv<'_> {
    fn positions(&self) -> usize {
        positions(self.tile)
    }

    /// Tiles per row: one per m pixels.
    fn tiles_across(&self) -> usize {
        self.input.width.div_ceil(self.tile.side())
    }

    fn tiles_down(&self) -> usize {
        self.input.height.div_ceil(self.tile.side())
    }

    /// Tile rows per piece of work.
    fn tile_rows_per_piece(&self) -> usize {
        let tiles = POSITIONS_PER_PIECE.div_ceil(self.positions());
        tiles.div_ceil(self.tiles_across())
    }

    /// Every piece of work, image by image, top to bottom.
    fn pieces(&self) -> Vec<Piece> {
        let per_piece = self.tile_rows_per_piece();
        Piece::all(self.input.batch, self.tiles_down(), per_piece)
    }

    /// Floats of scratch one piece of work needs.
    fn scratch_len(&self) -> usize {
        match self.tile {
            WinogradTile::TwoByTwo => self.scratch_len_of::<4, 2>(),
            WinogradTile::FourByFour => self.scratch_len_of::<6, 4>(),
        }
    }

    /// [`SameConv::scratch_len`] of F(T x T, 3x3): a piece's transformed inputs [W W, tiles,
    /// cin], its products or transformed blocks of dz [W W, tiles, cout], and a tile row's
    /// half-transformed strip of x [W, columns, cin] or of dz [W, columns, cout], or its
    /// half-transformed outputs [T, W, across, cout] and its rows of outputs [T, T across,
    /// cout].
    fn scratch_len_of<const W: usize, const T: usize>(&self) -> usize {
        let across = self.tiles_across();
        let tiles = self.tile_rows_per_piece() * across;
        let (cin, cout) = (self.input.channels, self.cout);
        let half = (W * strip_columns::<W>(T, across) * cin)
            .max(W * strip_columns::<T>(T, across) * cout)
            .max(untransform_scratch_len::<W, T>(across, cout));
        W * W * tiles * (cin + cout) + half
    }

    /// Values of a transformed kernel [positions, cin, cout], or of its gradient with the
    /// bias's.
    pub fn transformed_len(&self) -> usize {
        self.positions() * self.input.channels * self.cout + self.cout
    }

    /// u[W a + b, ci, co] = (G g G^T)[a, b] for each 3x3 kernel g of `kernel` [3, 3, cin,
    /// cout], W positions a side.
    pub fn transform_kernel(&self, kernel: &[f32], u: &mut [f32]) {
        let taps = self.input.channels * self.cout;
        let positions = self.positions();
        transform_taps(
            kernel_transform(self.tile),
            kernel,
            &mut u[..positions * taps],
        );
    }
}

/// u[p rows.len() + q, i] = sum over taps (r, c) of rows[p][r] rows[q][c] kernel[3 r + c, i]:
/// a kernel of 9 taps of `u.len() / rows.len()^2` values each transformed by `rows` along both
/// dimensions, summed in float64 over the taps the rows reach and rounded once.
pub(super) fn transform_taps(rows: &[[f64; 3]], kernel: &[f32], u: &mut [f32]) {
    let taps = u.len() / (rows.len() * rows.len());
    let weight = |xi: usize, tap: usize| {
        let (p, q) = (xi / rows.len(), xi % rows.len());
        rows[p][tap / 3] * rows[q][tap % 3]
    };
    weighted_sums((&kernel[..9 * taps], taps), weight, u);
}

/// Values a block of [`weighted_sums`] holds: 128 float64 sums, 16 AVX-512 registers.
const SUM_BLOCK: usize = 128;

/// out[o] = the sum over j of weight(o, j) parts[j], in float64 and rounded once, for parts
/// of `n` values laid one after another in `parts`, and outputs likewise in `out`: the sum
/// over the parts in their order, over those whose weight is not zero (the transforms'
/// matrices are sparse; the others would add only zeros). Block by block of [`SUM_BLOCK`]
/// values: an output's sums stay in registers while the parts' blocks go by, and the blocks,
/// read once from memory, stay in L1 for the next output. Summing an output at a time over
/// whole parts (a float64 sum of `n` values in memory, read and written for each part) took
/// conv5's kernel gradient 1.24-1.28 ms on one thread at batch 32 (16 groups of 36 parts into
/// 9 outputs of 8,192 values) against 0.75-0.77.
pub(super) fn weighted_sums(
    (parts, n): (&[f32], usize),
    weight: impl Fn(usize, usize) -> f64,
    out: &mut [f32],
) {
    Arch::new().dispatch(WeightedSums {
        parts: (parts, n),
        weight,
        out,
    });
}

/// [`weighted_sums`]' operands, for [`pulp::Arch::dispatch`]: a struct whose `with_simd` is
/// inlined, so that the blocks compile for the machine's vector width (the same loops in a
/// closure passed to the dispatch were left out of line, compiled for plain SSE2, and took 3.4
/// times as long).
struct WeightedSums<'a, F> {
    parts: (&'a [f32], usize),
    weight: F,
    out: &'a mut [f32],
}

impl<F: Fn(usize, usize) -> f64> WithSimd for WeightedSums<'_, F> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let WeightedSums { parts, weight, out } = self;
        let n = parts.1;
        let whole = n / SUM_BLOCK * SUM_BLOCK;
        for first in (0..whole).step_by(SUM_BLOCK) {
            weighted_block::<SUM_BLOCK>(parts, &weight, out, first);
        }
        for first in whole..n {
            weighted_block::<1>(parts, &weight, out, first);
        }
    }
}

/// [`weighted_sums`] over the LEN values of every part and output from `first`.
#[inline(always)]
fn weighted_block<const LEN: usize>(
    (parts, n): (&[f32], usize),
    weight: &impl Fn(usize, usize) -> f64,
    out: &mut [f32],
    first: usize,
) {
    for o in 0..out.len() / n {
        let mut sum = [0.0f64; LEN];
        for j in 0..parts.len() / n {
            let weight = weight(o, j);
            if weight != 0.0 {
                for (s, &v) in sum.iter_mut().zip(&parts[j * n + first..][..LEN]) {
                    *s += weight * f64::from(v);
                }
            }
        }
        for (out, &s) in out[o * n + first..][..LEN].iter_mut().zip(&sum) {
            *out = s as f32;
        }
    }
}

/// y = epilogue(conv3x3(x, u)) with the transformed kernel `u` [positions, cin, cout]
/// ([`SameConv::transform_kernel`]).
pub fn convolve(conv: SameConv, x: &[f32], u: &[f32], y: &mut [f32]) {
    match conv.tile {
        WinogradTile::TwoByTwo => convolve_by::<4, 2, F2x2>(conv, x, u, y),
        WinogradTile::FourByFour => convolve_by::<6, 4, F4x4>(conv, x, u, y),
    }
}

/// [`convolve`] by F(T x T, 3x3).
fn convolve_by<const W: usize, const T: usize, A: MinimalFiltering<W, T>>(
    conv: SameConv,
    x: &[f32],
    u: &[f32],
    y: &mut [f32],
) {
    let (height, width) = (conv.input.height, conv.input.width);
    let image_len = height * width * conv.cout;
    let piece_len = T * conv.tile_rows_per_piece() * width * conv.cout;
    let outputs = y[..conv.input.batch * image_len]
        .chunks_mut(image_len)
        .flat_map(|y| y.chunks_mut(piece_len));
    let pieces: Vec<(Piece, &mut [f32])> = conv.pieces().into_iter().zip(outputs).collect();
    pieces.into_par_iter().for_each(|(piece, y)| {
        with_scratch(conv.scratch_len(), |scratch| {
            Arch::new().dispatch(Forward::<W, T, A> {
                conv,
                x,
                u,
                piece,
                y,
                scratch,
                algorithm: PhantomData,
            })
        })
    });
}

/// The kernel and bias gradient, into `grads` = [dkernel [3, 3, cin, cout], dbias [cout]], of
/// a 'same' convolution of x whose output has the gradient dz. A tile's forward pass is
/// Y = A^T (U ⊙ V) A with U = G g G^T, linear in g, so read backward
///
/// ```text
/// dU[ξ] = sum over tiles of V[ξ]^T dM[ξ],  dM = A dY A^T,  dg = G^T dU G
/// ```
///
/// with dY the tile's 2x2 (or 4x4) block of dz (zeros outside the image): 16 (or 36) GEMMs
/// of (cin x tiles) by (tiles x cout) per piece, added into one partial per group of pieces
/// (at most [`PIECE_GROUPS`] groups, the same whatever the thread count), the partials summed
/// in order, then transformed back. `partials` holds PIECE_GROUPS x [`SameConv::transformed_len`]
/// values, `total` one.
pub fn kernel_gradient(
    conv: SameConv,
    (x, dz): (&[f32], &[f32]),
    (partials, total): (&mut [f32], &mut [f32]),
    grads: &mut [f32],
) {
    let (cin, cout) = (conv.input.channels, conv.cout);
    let size = conv.transformed_len();
    let pieces = &mut conv.pieces();
    let groups = match conv.tile {
        WinogradTile::TwoByTwo => filter_by::<4, 2, F2x2>(conv, (x, dz), pieces, (partials, size)),
        WinogradTile::FourByFour => {
            filter_by::<6, 4, F4x4>(conv, (x, dz), pieces, (partials, size))
        }
    };
    let total = &mut total[..size];
    sum_in_order(&partials[..groups * size], total);
    // dg[ky, kx] = sum over a, b of G[a, ky] G[b, kx] dU[W a + b], in float64.
    let (g, taps, positions) = (kernel_transform(conv.tile), cin * cout, conv.positions());
    let weight = |tap: usize, xi: usize| g[xi / g.len()][tap / 3] * g[xi % g.len()][tap % 3];
    weighted_sums(
        (&total[..positions * taps], taps),
        weight,
        &mut grads[..9 * taps],
    );
    grads[9 * taps..][..cout].copy_from_slice(&total[positions * taps..]);
}

/// [`kernel_gradient`]'s pieces by F(T x T, 3x3), each group of them into its partial;
/// returns the number of groups.
fn filter_by<const W: usize, const T: usize, A: MinimalFiltering<W, T>>(
    conv: SameConv,
    (x, dz): (&[f32], &[f32]),
    pieces: &mut [Piece],
    partials: (&mut [f32], usize),
) -> usize {
    for_each_group(
        pieces,
        partials,
        conv.scratch_len(),
        |pieces, scratch, partial| {
            partial.fill(0.0);
            for &mut piece in pieces {
                Arch::new().dispatch(Filter::<W, T, A> {
                    conv,
                    x,
                    dz,
                    piece,
                    partial: &mut *partial,
                    scratch: &mut *scratch,
                    algorithm: PhantomData,
                });
            }
        },
    )
}

/// The forward pass of a piece by F(T x T, 3x3), whose outputs are `y` (its output rows, from
/// T first_tile_row).
struct Forward<'a, const W: usize, const T: usize, A: MinimalFiltering<W, T>> {
    conv: SameConv<'a>,
    x: &'a [f32],
    u: &'a [f32],
    piece: Piece,
    y: &'a mut [f32],
    scratch: &'a mut [f32],
    algorithm: PhantomData<A>,
}

/// The kernel gradient of a piece by F(T x T, 3x3), added into `partial`: [W W, cin, cout],
/// then [cout].
struct Filter<'a, const W: usize, const T: usize, A: MinimalFiltering<W, T>> {
    conv: SameConv<'a>,
    x: &'a [f32],
    dz: &'a [f32],
    piece: Piece,
    partial: &'a mut [f32],
    scratch: &'a mut [f32],
    algorithm: PhantomData<A>,
}

/// F(2x2, 3x3)'s B^T over a line of a tile's 4x4 window: (r0 - r2, r1 + r2, r2 - r1, r1 - r3).
struct InputTransform2;

impl Line<4, 4> for InputTransform2 {
    #[inline(always)]
    fn values([r0, r1, r2, r3]: [f32; 4]) -> [f32; 4] {
        [r0 - r2, r1 + r2, r2 - r1, r1 - r3]
    }
}

/// F(2x2, 3x3)'s A^T over a line of four products: (m0 + m1 + m2, m1 - m2 - m3).
struct OutputTransform2;

impl Line<4, 2> for OutputTransform2 {
    #[inline(always)]
    fn values([m0, m1, m2, m3]: [f32; 4]) -> [f32; 2] {
        [m0 + m1 + m2, m1 - m2 - m3]
    }
}

/// F(2x2, 3x3)'s A over a line of a tile's 2x2 block of dz: (r0, r0 + r1, r0 - r1, -r1).
struct BlockTransform2;

impl Line<2, 4> for BlockTransform2 {
    const COPIES: [Option<usize>; 4] = [Some(0), None, None, None];

    #[inline(always)]
    fn values([r0, r1]: [f32; 2]) -> [f32; 4] {
        [r0, r0 + r1, r0 - r1, -r1]
    }
}

/// F(4x4, 3x3)'s B^T over a line of a tile's 6x6 window (the module's header gives it). Its
/// rows for the points 1 and -1 are one even and one odd part added and subtracted, as are
/// those for 2 and -2.
struct InputTransform4;

impl Line<6, 6> for InputTransform4 {
    #[inline(always)]
    fn values([r0, r1, r2, r3, r4, r5]: [f32; 6]) -> [f32; 6] {
        let (even_at_1, odd_at_1) = (r4 - 4.0 * r2, r3 - 4.0 * r1);
        let (even_at_2, odd_at_2) = (r4 - r2, 2.0 * (r3 - r1));
        [
            4.0 * r0 - 5.0 * r2 + r4,
            even_at_1 + odd_at_1,
            even_at_1 - odd_at_1,
            even_at_2 + odd_at_2,
            even_at_2 - odd_at_2,
            4.0 * r1 - 5.0 * r3 + r5,
        ]
    }
}

/// F(4x4, 3x3)'s A^T over a line of six products: (m0 + m1 + m2 + m3 + m4,
/// m1 - m2 + 2 (m3 - m4), m1 + m2 + 4 (m3 + m4), m1 - m2 + 8 (m3 - m4) + m5).
struct OutputTransform4;

impl Line<6, 4> for OutputTransform4 {
    #[inline(always)]
    fn values([m0, m1, m2, m3, m4, m5]: [f32; 6]) -> [f32; 4] {
        let (sum_at_1, difference_at_1) = (m1 + m2, m1 - m2);
        let (sum_at_2, difference_at_2) = (m3 + m4, m3 - m4);
        [
            m0 + sum_at_1 + sum_at_2,
            difference_at_1 + 2.0 * difference_at_2,
            sum_at_1 + 4.0 * sum_at_2,
            difference_at_1 + 8.0 * difference_at_2 + m5,
        ]
    }
}

/// F(4x4, 3x3)'s A over a line of a tile's 4x4 block of dz: the block's line as a polynomial
/// at the points 0, 1, -1, 2, -2, and its last value: (r0, r0 + r1 + r2 + r3,
/// r0 - r1 + r2 - r3, r0 + 2 r1 + 4 r2 + 8 r3, r0 - 2 r1 + 4 r2 - 8 r3, r3).
struct BlockTransform4;

impl Line<4, 6> for BlockTransform4 {
    const COPIES: [Option<usize>; 6] = [Some(0), None, None, None, None, Some(3)];

    #[inline(always)]
    fn values([r0, r1, r2, r3]: [f32; 4]) -> [f32; 6] {
        let (even_at_1, odd_at_1) = (r0 + r2, r1 + r3);
        let (even_at_2, odd_at_2) = (r0 + 4.0 * r2, 2.0 * r1 + 8.0 * r3);
        [
            r0,
            even_at_1 + odd_at_1,
            even_at_1 - odd_at_1,
            even_at_2 + odd_at_2,
            even_at_2 - odd_at_2,
            r3,
        ]
    }
}

/// V[W a + b, t, :] = (B^T d B)[a, b] for each tile t of a piece: its W x W window d of x from
/// (T ti - 1, T tj - 1), zeros outside the image.
#[inline(always)]
fn transform_windows<const W: usize, const T: usize, A: MinimalFiltering<W, T>>(
    conv: &SameConv,
    x: &[f32],
    piece: Piece,
    v: &mut [f32],
    half: &mut [f32],
) {
    transform_tile_windows::<W, W, A::Input>(
        (x, conv.input),
        (piece, conv.tiles_across()),
        (T, 1),
        half,
        (v, |a, b| W * a + b),
    );
}

impl<const W: usize, const T: usize, A: MinimalFiltering<W, T>> WithSimd for Forward<'_, W, T, A> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Forward {
            conv,
            x,
            u,
            piece,
            y,
            scratch,
            ..
        } = self;
        let (cin, cout, width) = (conv.input.channels, conv.cout, conv.input.width);
        let across = conv.tiles_across();
        let tiles = piece.tile_rows * across;
        let (v, rest) = scratch.split_at_mut(W * W * tiles * cin);
        let (m, half) = rest.split_at_mut(W * W * tiles * cout);
        transform_windows::<W, T, A>(&conv, x, piece, v, half);
        // M[ξ] = V[ξ] U[ξ]: the channel sums of every tile at transformed position ξ.
        for (xi, m) in m.chunks_exact_mut(tiles * cout).enumerate() {
            let v = Matrix::row_major(&v[xi * tiles * cin..], tiles, cin);
            let u = Matrix::row_major(&u[xi * cin * cout..], cin, cout);
            shallow_product(v, u, m, false);
        }
        // Y = A^T M A, then the epilogue ([`untransform_tiles`]). y starts at value
        // first_output of the whole output.
        let first_output =
            (piece.image * conv.input.height + T * piece.first_tile_row) * width * cout;
        untransform_tiles::<W, T, A::Output>(
            (m, |a, b| W * a + b, cout),
            (piece, across),
            half,
            (y, width),
            (conv.epilogue, first_output),
        );
    }
}

impl<const W: usize, const T: usize, A: MinimalFiltering<W, T>> WithSimd for Filter<'_, W, T, A> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Filter {
            conv,
            x,
            dz,
            piece,
            partial,
            scratch,
            ..
        } = self;
        let (cin, cout) = (conv.input.channels, conv.cout);
        let across = conv.tiles_across();
        let tiles = piece.tile_rows * across;
        let (v, rest) = scratch.split_at_mut(W * W * tiles * cin);
        let (dm, half) = rest.split_at_mut(W * W * tiles * cout);
        transform_windows::<W, T, A>(&conv, x, piece, v, half);
        // dM[W a + b, t, :] = (A dY A^T)[a, b] of tile t's T x T block dY of dz from
        // (T ti, T tj), zeros outside the image.
        let out_shape = Nhwc {
            channels: cout,
            ..conv.input
        };
        transform_tile_windows::<T, W, A::Block>(
            (dz, out_shape),
            (piece, across),
            (T, 0),
            half,
            (&mut *dm, |a, b| W * a + b),
        );
        // dU[ξ] += V[ξ]^T dM[ξ]
        let (du, partial_bias) = partial.split_at_mut(W * W * cin * cout);
        for (xi, du) in du.chunks_exact_mut(cin * cout).enumerate() {
            let v = Matrix::row_major(&v[xi * tiles * cin..], tiles, cin).transposed();
            let dm = Matrix::row_major(&dm[xi * tiles * cout..], tiles, cout);
            shallow_product(v, dm, du, true);
        }
        // The bias gradient sums dz: each block's sum is its position (SUM, SUM).
        let sum = W * A::SUM + A::SUM;
        for block_sum in dm[sum * tiles * cout..][..tiles * cout].chunks_exact(cout) {
            add(partial_bias, block_sum);
        }
    }
}
