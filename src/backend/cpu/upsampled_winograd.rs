//! A 3x3 'same' convolution of an upsampled input, y = conv3x3(upsample2(x)), by Winograd's
//! minimal filtering of two taps at the source's resolution: the forward pass over the
//! output's two phases per dimension by F(3, 2), the backward passes over the 2x2 box sums of
//! dz by F(4, 2). F(m, 2) computes m outputs of a correlation of two taps,
//! y_k = g0 d_k + g1 d_{k+1}, in m + 1 multiplies instead of 2m: y = A^T [(G g) ⊙ (B^T d)]. On
//! the points 0, 1, -1 and infinity,
//!
//! ```text
//! F(3, 2):  B^T d = (d0 - d2, d1 + d2, d2 - d1, d3 - d1)
//!           G g   = (g0, (g0 + g1) / 2, (g0 - g1) / 2, g1)
//!           A^T m = (m0 + m1 + m2, m1 - m2, m1 + m2 + m3)
//! ```
//!
//! and with the point 2 as well,
//!
//! ```text
//! F(4, 2):  B^T d = (2 d0 - d1 - 2 d2 + d3, -2 d1 - d2 + d3, 2 d1 - 3 d2 + d3, d3 - d1,
//!                    2 d1 - d2 - 2 d3 + d4)
//!           G g   = (g0 / 2, -(g0 + g1) / 2, (g1 - g0) / 6, (g0 + 2 g1) / 6, g1)
//!           A^T m = (m0 + m1 + m2 + m3, m1 - m2 + 2 m3, m1 + m2 + 4 m3, m1 - m2 + 8 m3 + m4)
//! ```
//!
//! Both passes take square tiles of source pixels and, as in winograd.rs, turn the sum over
//! channels into a GEMM per transformed position.
//!
//! **Forward.** Per dimension, with w the kernel's three taps, y[2s] = w0 x[s - 1] +
//! (w1 + w2) x[s] and y[2s + 1] = (w0 + w1) x[s] + w2 x[s + 1]: each output phase is a
//! correlation of two taps of the source. Over a tile of three source pixels s0 + k, the even
//! outputs read x[s0 - 1 ..= s0 + 2] and the odd ones x[s0 ..= s0 + 3], each by F(3, 2): 8
//! positions per dimension for 6 outputs, 64 per 3x3 tile (6x6 outputs) where the nominal
//! count is 324 multiplies per channel pair: 16/81 of it (the four 2x2 phase convolutions take
//! 144, F(2x2, 3x3) over the upsampled windows 81). F(4, 2) would take 100 per 4x4 tile, 12%
//! fewer multiplies, but its outputs' float32 error is about eight times larger (A^T's 8): at
//! conv5's shape 5e-6 of the outputs' scale instead of 6e-7.
//!
//! **Backward.** Per dimension (conv.rs's `backward_data` derives it), with B[m] = dz[m - 1] +
//! dz[m] and f the flipped kernel, dx[s] = f0 B[2s] + f1 B[2s + 1] + f2 B[2s + 2]. Over a tile
//! of four source pixels, with b_j = B[2 s0 + j] (j in 0..9, from the ten values
//! dz[2 s0 - 1 ..= 2 s0 + 8]):
//!
//! ```text
//! dx[s0 + k] = (f0 d_k + f2 d_{k+1}) + f1 e_k,   d_j = b_{2j} (5 values), e_k = b_{2k+1}
//! ```
//!
//! F(4, 2) over the even box sums and the middle tap over the odd ones: 9 transformed
//! positions per dimension,
//!
//! ```text
//! dx_tile = O [ (W f) ⊙ (T z) ],   T z = (B^T d, e),   W f = (G (f0, f2), f1 four times),
//! O = [A^T | I],
//! ```
//!
//! and in two dimensions 81 positions for a 4x4 tile of source pixels, where the box sums take
//! 9 x 16 = 144 multiplies per channel pair: 9/64 of the nominal count. The four middle
//! positions of a side all multiply f1, so the 81 positions take 6 x 6 = 36 distinct kernel
//! transforms; the positions that share one (a group: 1, 4 or 16 of them) are stored
//! together, and each group is one GEMM over all its positions and tiles. The kernel gradient
//! is the same algebra read backward: dU[g] = sum over the group's positions ξ and tiles of
//! V[ξ]^T X[ξ] with V = T z T^T and X = O^T x O (x the tile's source pixels), then
//! df = W^T dU W. The bias gradient sums dz, which the aligned boxes (positions e_k e_l) cover
//! once.

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::super::Nhwc;
use super::conv::{Epilogue, add};
use super::gemm::{Matrix, shallow_product};
use super::tile_transforms::{
    Line, strip_columns, transform_tile_windows, untransform_scratch_len, untransform_tiles,
};
use super::winograd::{Piece, for_each_group, transform_taps, weighted_sums, with_scratch};

/// Source pixels along a tile's side.
const TILE: usize = 4;
/// Pixels of dz along a tile's window: B[2 s0 .. 2 s0 + 9] reads dz[2 s0 - 1 ..= 2 s0 + 8].
const WINDOW: usize = 2 * TILE + 2;
/// Transformed positions along a tile's side: F(4, 2)'s five and the four middle taps.
const SIDE: usize = 9;
/// Transformed positions of a tile.
const POSITIONS: usize = SIDE * SIDE;
/// Kernel transforms along a side: F(4, 2)'s five, and the one of the middle taps.
const DISTINCT: usize = 6;
/// Groups of positions that share a kernel transform.
const GROUPS: usize = DISTINCT * DISTINCT;
/// Tiles a piece of work aims at: whole tile rows of one image, at least this many tiles.
const TILES_PER_PIECE: usize = 28;

/// G of F(4, 2), row p of the 5 x 2 matrix over the taps (g0, g1).
const G: [[f64; 2]; 5] = [
    [0.5, 0.0],
    [-0.5, -0.5],
    [-1.0 / 6.0, 1.0 / 6.0],
    [1.0 / 6.0, 1.0 / 3.0],
    [0.0, 1.0],
];

/// W, the backward passes' kernel transform along one dimension: row d of the 6 x 3 matrix
/// over the flipped taps (f0, f1, f2), d = [`distinct`] of a position: G over (f0, f2), then
/// f1.
const W: [[f64; 3]; DISTINCT] = {
    let mut w = [[0.0, 1.0, 0.0]; DISTINCT];
    let mut p = 0;
    while p < 5 {
        w[p] = [G[p][0], 0.0, G[p][1]];
        p += 1;
    }
    w
};

/// G of F(3, 2), row p of the 4 x 2 matrix over the taps (g0, g1).
const G3: [[f64; 2]; 4] = [[1.0, 0.0], [0.5, 0.5], [0.5, -0.5], [0.0, 1.0]];

/// Source pixels along a side of the forward pass's tiles.
const PHASE_TILE: usize = 3;
/// Transformed positions along a side of the forward pass: F(3, 2) for the even outputs, then
/// for the odd ones.
const PHASE_SIDE: usize = 8;
/// Source pixels along the forward pass's window: x[s0 - 1 ..= s0 + 3].
const PHASE_WINDOW: usize = PHASE_TILE + 2;
/// Outputs along a side of the forward pass's tiles.
const OUTPUTS: usize = 2 * PHASE_TILE;

/// The forward pass's kernel transform along one dimension: row p of the 8 x 3 matrix over the
/// taps (w0, w1, w2): G over the even outputs' taps (w0, w1 + w2), then over the odd ones'
/// (w0 + w1, w2).
const PHASE_W: [[f64; 3]; PHASE_SIDE] = {
    let mut w = [[0.0; 3]; PHASE_SIDE];
    let mut p = 0;
    while p < 4 {
        w[p] = [G3[p][0], G3[p][1], G3[p][1]];
        w[4 + p] = [G3[p][0], G3[p][0], G3[p][1]];
        p += 1;
    }
    w
};

/// The kernel transform of position p along a side.
const fn distinct(p: usize) -> usize {
    if p < DISTINCT { p } else { DISTINCT - 1 }
}

/// Positions along a side that share kernel transform d.
const fn sharing(d: usize) -> usize {
    if d + 1 < DISTINCT {
        1
    } else {
        SIDE + 1 - DISTINCT
    }
}

/// The first position of each group (6 d + e for the kernel transforms d, e of its rows and
/// columns) in the order V and M store them, and after the last group, POSITIONS.
const GROUP_STARTS: [usize; GROUPS + 1] = {
    let mut starts = [0; GROUPS + 1];
    let mut g = 0;
    while g < GROUPS {
        starts[g + 1] = starts[g] + sharing(g / DISTINCT) * sharing(g % DISTINCT);
        g += 1;
    }
    starts
};

/// Where V and M store position (p, q): its group's positions are row-major from the group's
/// start.
const SLOTS: [[usize; SIDE]; SIDE] = {
    let mut slots = [[0; SIDE]; SIDE];
    let mut p = 0;
    while p < SIDE {
        let mut q = 0;
        while q < SIDE {
            let (d, e) = (distinct(p), distinct(q));
            let within = (p - d) * sharing(e) + (q - e);
            slots[p][q] = GROUP_STARTS[DISTINCT * d + e] + within;
            q += 1;
        }
        p += 1;
    }
    slots
};

/// A convolution of an upsampled input: the source's shape (x and dx), and the output's
/// channels (y and dz).
#[derive(Clone, Copy)]
pub struct UpsampledConv {
    pub input: Nhwc,
    pub cout: usize,
}

impl UpsampledConv {
    /// Tiles of `tile` x `tile` source pixels across a row.
    fn tiles_across(&self, tile: usize) -> usize {
        self.input.width.div_ceil(tile)
    }

    fn tile_rows_per_piece(&self, tile: usize) -> usize {
        TILES_PER_PIECE.div_ceil(self.tiles_across(tile))
    }

    fn pieces(&self, tile: usize) -> Vec<Piece> {
        let down = self.input.height.div_ceil(tile);
        Piece::all(self.input.batch, down, self.tile_rows_per_piece(tile))
    }

    /// The pieces of tiles of `tile` source pixels, each with its rows of `out`, a tensor of
    /// shape `grid` that has `rows` rows for each row of tiles: y's for the forward pass, dx's
    /// for the backward passes.
    fn pieces_with_rows<'a>(
        &self,
        tile: usize,
        (out, grid, rows): (&'a mut [f32], Nhwc, usize),
    ) -> Vec<(Piece, &'a mut [f32])> {
        let image_len = grid.height * grid.width * grid.channels;
        let piece_len = rows * self.tile_rows_per_piece(tile) * grid.width * grid.channels;
        let outputs = out[..grid.batch * image_len]
            .chunks_mut(image_len)
            .flat_map(|out| out.chunks_mut(piece_len));
        self.pieces(tile).into_iter().zip(outputs).collect()
    }

    /// The output's shape (y and dz): the upsampled grid of cout channels.
    fn output_shape(&self) -> Nhwc {
        Nhwc {
            height: 2 * self.input.height,
            width: 2 * self.input.width,
            channels: self.cout,
            ..self.input
        }
    }

    /// Floats of scratch one piece needs: transformed windows of dz [81, tiles, cout], the
    /// products or transformed source pixels [81, tiles, cin], and a tile row's
    /// half-transformed strip of dz [9, columns, cout] or of x [9, columns, cin], or its
    /// half-transformed outputs [4, 9, across, cin] and its rows of outputs [4, 4 across,
    /// cin].
    fn piece_scratch_len(&self) -> usize {
        let across = self.tiles_across(TILE);
        let tiles = self.tile_rows_per_piece(TILE) * across;
        let (cin, cout) = (self.input.channels, self.cout);
        let half = (SIDE * strip_columns::<WINDOW>(2 * TILE, across) * cout)
            .max(SIDE * strip_columns::<TILE>(TILE, across) * cin)
            .max(untransform_scratch_len::<SIDE, TILE>(across, cin));
        POSITIONS * tiles * (cin + cout) + half
    }

    /// Values of the backward passes' transformed kernel: [36, cout, cin].
    pub fn transformed_len(&self) -> usize {
        GROUPS * self.cout * self.input.channels
    }

    /// u[6 d + e, co, ci] = sum over taps (r, c) of W[d][r] W[e][c] flipped[(r, c), co, ci]
    /// from the flipped kernel [9, cout, cin] that the box sums multiply.
    pub fn transform_kernel(&self, flipped: &[f32], u: &mut [f32]) {
        transform_taps(&W, flipped, &mut u[..self.transformed_len()]);
    }

    /// Values of the forward pass's transformed kernel: [64, cin, cout].
    pub fn forward_transformed_len(&self) -> usize {
        PHASE_SIDE * PHASE_SIDE * self.input.channels * self.cout
    }

    /// u[8 p + q, ci, co] = sum over taps (ky, kx) of PHASE_W[p][ky] PHASE_W[q][kx]
    /// kernel[ky, kx, ci, co].
    pub fn transform_forward_kernel(&self, kernel: &[f32], u: &mut [f32]) {
        transform_taps(&PHASE_W, kernel, &mut u[..self.forward_transformed_len()]);
    }

    /// Floats of scratch one piece of the forward pass needs: transformed windows of x [64,
    /// tiles, cin], the products [64, tiles, cout], and a tile row's half-transformed strip of
    /// x ([8, columns, cin]) or outputs ([6, 8, across, cout] and its rows of outputs [6,
    /// 6 across, cout]).
    fn forward_scratch_len(&self) -> usize {
        let across = self.tiles_across(PHASE_TILE);
        let tiles = self.tile_rows_per_piece(PHASE_TILE) * across;
        let (cin, cout) = (self.input.channels, self.cout);
        let positions = PHASE_SIDE * PHASE_SIDE;
        let strip = PHASE_SIDE * strip_columns::<PHASE_WINDOW>(PHASE_TILE, across) * cin;
        let half = strip.max(untransform_scratch_len::<PHASE_SIDE, OUTPUTS>(across, cout));
        positions * tiles * (cin + cout) + half
    }

    /// The first row and the rows of group g's matrix in V, M or X ([81, tiles, c]): its
    /// positions times the piece's tiles.
    fn group_rows(g: usize, tiles: usize) -> (usize, usize) {
        let (start, end) = (GROUP_STARTS[g], GROUP_STARTS[g + 1]);
        (start * tiles, (end - start) * tiles)
    }
}

/// y = epilogue(conv3x3(upsample2(x))) with the forward pass's transformed kernel `u`
/// [64, cin, cout] ([`UpsampledConv::transform_forward_kernel`]).
pub fn forward(conv: UpsampledConv, (x, u): (&[f32], &[f32]), epilogue: Epilogue, y: &mut [f32]) {
    let pieces = conv.pieces_with_rows(PHASE_TILE, (y, conv.output_shape(), OUTPUTS));
    pieces.into_par_iter().for_each(|(piece, y)| {
        with_scratch(conv.forward_scratch_len(), |scratch| {
            Arch::new().dispatch(Forward {
                conv,
                x,
                u,
                epilogue,
                piece,
                y,
                scratch,
            })
        })
    });
}

/// dx = epilogue(the box sums of dz times the flipped kernel) (conv.rs's `backward_data`),
/// with the transformed kernel `u` [36, cout, cin] ([`UpsampledConv::transform_kernel`]).
pub fn backward_data(
    conv: UpsampledConv,
    (dz, u): (&[f32], &[f32]),
    epilogue: Epilogue,
    dx: &mut [f32],
) {
    conv.pieces_with_rows(TILE, (dx, conv.input, TILE))
        .into_par_iter()
        .for_each(|(piece, dx)| {
            with_scratch(conv.piece_scratch_len(), |scratch| {
                Arch::new().dispatch(Backward {
                    conv,
                    dz,
                    piece,
                    data: Some(PieceData { u, epilogue, dx }),
                    filter: None,
                    scratch,
                })
            })
        });
}

/// The kernel and bias gradients, per group of pieces ([`for_each_group`], at most
/// [`PIECE_GROUPS`](super::winograd::PIECE_GROUPS)) into its partial of `size` values laid out
/// as the gradients are ([3, 3, cin, cout], then [cout]): the group's dU [36, cin, cout] and
/// bias summed over its tiles in this thread's scratch, then df = W^T dU W ([`untransform`]).
/// With `data` (the transformed kernel u, the epilogue and dx), backward-data's dx as well, as
/// [`backward_data`] makes it, from the same transformed windows of dz: the two passes of the
/// backward pass for one transform. Returns the number of groups, whose partials the caller
/// adds in order.
pub fn kernel_gradient(
    conv: UpsampledConv,
    (x, dz): (&[f32], &[f32]),
    data: Option<(&[f32], Epilogue, &mut [f32])>,
    (partials, size): (&mut [f32], usize),
) -> usize {
    let mut pieces: Vec<(Piece, Option<PieceData>)> = match data {
        Some((u, epilogue, dx)) => conv
            .pieces_with_rows(TILE, (dx, conv.input, TILE))
            .into_iter()
            .map(|(piece, dx)| (piece, Some(PieceData { u, epilogue, dx })))
            .collect(),
        None => conv
            .pieces(TILE)
            .into_iter()
            .map(|piece| (piece, None))
            .collect(),
    };
    let sums_len = conv.transformed_len() + conv.cout;
    let scratch_len = sums_len + conv.piece_scratch_len();
    for_each_group(
        &mut pieces,
        (partials, size),
        scratch_len,
        |pieces, scratch, partial| {
            let (sums, scratch) = scratch.split_at_mut(sums_len);
            sums.fill(0.0);
            for (piece, data) in pieces {
                Arch::new().dispatch(Backward {
                    conv,
                    dz,
                    piece: *piece,
                    data: data.take(),
                    filter: Some(PieceFilter {
                        x,
                        sums: &mut *sums,
                    }),
                    scratch: &mut *scratch,
                });
            }
            untransform(&conv, sums, partial);
        },
    )
}

/// The kernel and bias gradients from a group's sums into `grads`: for each tap (ky, kx), the
/// flipped tap (r, c) = (2 - ky, 2 - kx) of df = W^T dU W in float64, [cin, cout] as the
/// gradient is.
fn untransform(conv: &UpsampledConv, sums: &[f32], grads: &mut [f32]) {
    let taps = conv.input.channels * conv.cout;
    let (du, dbias) = sums.split_at(GROUPS * taps);
    let weight = |tap: usize, g: usize| {
        let (r, c) = (2 - tap / 3, 2 - tap % 3);
        W[g / DISTINCT][r] * W[g % DISTINCT][c]
    };
    weighted_sums((du, taps), weight, &mut grads[..9 * taps]);
    grads[9 * taps..][..conv.cout].copy_from_slice(dbias);
}

/// A piece of the backward passes: its windows of dz transformed once, for backward-data, the
/// kernel gradient, or both.
struct Backward<'a> {
    conv: UpsampledConv,
    dz: &'a [f32],
    piece: Piece,
    data: Option<PieceData<'a>>,
    filter: Option<PieceFilter<'a>>,
    scratch: &'a mut [f32],
}

/// backward-data on a piece: the transformed kernel, the epilogue, and the piece's rows of dx
/// (from row TILE first_tile_row).
struct PieceData<'a> {
    u: &'a [f32],
    epilogue: Epilogue<'a>,
    dx: &'a mut [f32],
}

/// The kernel gradient of a piece: x, and the sums it adds into, dU [36, cin, cout] then the
/// bias's [cout].
struct PieceFilter<'a> {
    x: &'a [f32],
    sums: &'a mut [f32],
}

/// The forward pass of a piece, whose outputs are `y` (its output rows, from row
/// 6 first_tile_row).
struct Forward<'a> {
    conv: UpsampledConv,
    x: &'a [f32],
    u: &'a [f32],
    epilogue: Epilogue<'a>,
    piece: Piece,
    y: &'a mut [f32],
    scratch: &'a mut [f32],
}

/// B^T of F(4, 2) over five values.
#[inline(always)]
fn f42_input([d0, d1, d2, d3, d4]: [f32; 5]) -> [f32; 5] {
    [
        2.0 * (d0 - d2) - d1 + d3,
        d3 - d2 - 2.0 * d1,
        2.0 * d1 - 3.0 * d2 + d3,
        d3 - d1,
        2.0 * (d1 - d3) - d2 + d4,
    ]
}

/// A^T of F(4, 2) over five products.
#[inline(always)]
fn f42_output([m0, m1, m2, m3, m4]: [f32; 5]) -> [f32; 4] {
    let (sum, difference) = (m1 + m2, m1 - m2);
    [
        m0 + sum + m3,
        difference + 2.0 * m3,
        sum + 4.0 * m3,
        difference + 8.0 * m3 + m4,
    ]
}

/// T over the ten rows of a window's line of dz, into nine: the pair sums
/// b_j = r_j + r_{j+1}, then B^T over the even ones and the odd ones as they are.
struct WindowTransform;

impl Line<WINDOW, SIDE> for WindowTransform {
    #[inline(always)]
    fn values(r: [f32; WINDOW]) -> [f32; SIDE] {
        let [d0, e0, d1, e1, d2, e2, d3, e3, d4] = std::array::from_fn(|j| r[j] + r[j + 1]);
        let [t0, t1, t2, t3, t4] = f42_input([d0, d1, d2, d3, d4]);
        [t0, t1, t2, t3, t4, e0, e1, e2, e3]
    }
}

/// O over nine rows, into four: A^T over the first five, plus the last four.
struct OutputTransform;

impl Line<SIDE, TILE> for OutputTransform {
    #[inline(always)]
    fn values(m: [f32; SIDE]) -> [f32; TILE] {
        let y = f42_output([m[0], m[1], m[2], m[3], m[4]]);
        [y[0] + m[5], y[1] + m[6], y[2] + m[7], y[3] + m[8]]
    }
}

/// O^T over four rows (a tile's line of source pixels), into nine.
struct SourceTransform;

impl Line<TILE, SIDE> for SourceTransform {
    const COPIES: [Option<usize>; SIDE] = [
        Some(0),
        None,
        None,
        None,
        Some(3),
        Some(0),
        Some(1),
        Some(2),
        Some(3),
    ];

    #[inline(always)]
    fn values([x0, x1, x2, x3]: [f32; TILE]) -> [f32; SIDE] {
        let (even, odd) = (x0 + x2, x1 + x3);
        [
            x0,
            even + odd,
            even - odd,
            x0 + 2.0 * x1 + 4.0 * x2 + 8.0 * x3,
            x3,
            x0,
            x1,
            x2,
            x3,
        ]
    }
}

/// B^T of F(3, 2) over four values.
#[inline(always)]
fn f32_input([d0, d1, d2, d3]: [f32; 4]) -> [f32; 4] {
    [d0 - d2, d1 + d2, d2 - d1, d3 - d1]
}

/// A^T of F(3, 2) over four products.
#[inline(always)]
fn f32_output([m0, m1, m2, m3]: [f32; 4]) -> [f32; 3] {
    [m0 + m1 + m2, m1 - m2, m1 + m2 + m3]
}

/// The forward pass's input transform over the five rows of a tile's line of source pixels,
/// into eight: B^T over the even outputs' window (rows 0..4), then over the odd outputs' (rows
/// 1..5).
struct PhaseInputTransform;

impl Line<PHASE_WINDOW, PHASE_SIDE> for PhaseInputTransform {
    #[inline(always)]
    fn values([z0, z1, z2, z3, z4]: [f32; PHASE_WINDOW]) -> [f32; PHASE_SIDE] {
        let [a0, a1, a2, a3] = f32_input([z0, z1, z2, z3]);
        let [b0, b1, b2, b3] = f32_input([z1, z2, z3, z4]);
        [a0, a1, a2, a3, b0, b1, b2, b3]
    }
}

/// The forward pass's output transform over eight rows, into six: A^T over each phase's four,
/// the even outputs and the odd ones interleaved.
struct PhaseOutputTransform;

impl Line<PHASE_SIDE, OUTPUTS> for PhaseOutputTransform {
    #[inline(always)]
    fn values(m: [f32; PHASE_SIDE]) -> [f32; OUTPUTS] {
        let [e0, e1, e2] = f32_output([m[0], m[1], m[2], m[3]]);
        let [o0, o1, o2] = f32_output([m[4], m[5], m[6], m[7]]);
        [e0, o0, e1, o1, e2, o2]
    }
}

impl WithSimd for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Forward {
            conv,
            x,
            u,
            epilogue,
            piece,
            y,
            scratch,
        } = self;
        let out = conv.output_shape();
        let (cin, cout, width) = (conv.input.channels, conv.cout, out.width);
        let across = conv.tiles_across(PHASE_TILE);
        let tiles = piece.tile_rows * across;
        let positions = PHASE_SIDE * PHASE_SIDE;
        let (v, rest) = scratch.split_at_mut(positions * tiles * cin);
        let (m, half) = rest.split_at_mut(positions * tiles * cout);
        // V[(p, q), t, :]: tile t's 5x5 window of x from (3 ti - 1, 3 tj - 1), transformed by
        // the two phases' B^T.
        transform_tile_windows::<PHASE_WINDOW, PHASE_SIDE, PhaseInputTransform>(
            (x, conv.input),
            (piece, across),
            (PHASE_TILE, 1),
            half,
            (&mut *v, |p, q| PHASE_SIDE * p + q),
        );
        // M[ξ] = V[ξ] U[ξ]: the sums over x's channels of every tile at position ξ.
        for (xi, m) in m.chunks_exact_mut(tiles * cout).enumerate() {
            let v = Matrix::row_major(&v[xi * tiles * cin..], tiles, cin);
            let u = Matrix::row_major(&u[xi * cin * cout..], cin, cout);
            shallow_product(v, u, m, false);
        }
        // y_tile = the phases' A^T on both sides, then the epilogue ([`untransform_tiles`]).
        let first_output =
            (piece.image * out.height + OUTPUTS * piece.first_tile_row) * width * cout;
        untransform_tiles::<PHASE_SIDE, OUTPUTS, PhaseOutputTransform>(
            (m, |p, q| PHASE_SIDE * p + q, cout),
            (piece, across),
            half,
            (y, width),
            (epilogue, first_output),
        );
    }
}

impl WithSimd for Backward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Backward {
            conv,
            dz,
            piece,
            data,
            filter,
            scratch,
        } = self;
        let (across, cout) = (conv.tiles_across(TILE), conv.cout);
        let tiles = piece.tile_rows * across;
        let (v, rest) = scratch.split_at_mut(POSITIONS * tiles * cout);
        let (products, half) = rest.split_at_mut(POSITIONS * tiles * conv.input.channels);
        // V[(p, q), t, :] = (T z T^T)[p, q] of tile t's 10x10 window z of dz from
        // (8 ti - 1, 8 tj - 1).
        transform_tile_windows::<WINDOW, SIDE, WindowTransform>(
            (dz, conv.output_shape()),
            (piece, across),
            (2 * TILE, 1),
            half,
            (&mut *v, |p, q| SLOTS[p][q]),
        );
        if let Some(filter) = filter {
            add_kernel_gradient(&conv, piece, filter, v, (products, half));
        }
        if let Some(data) = data {
            write_dx(&conv, piece, data, v, (products, half));
        }
    }
}

/// backward-data's rows of dx of a piece from its transformed windows of dz V, with `m` for
/// the products [81, tiles, cin] and `half` for a tile row's half-transformed outputs.
#[inline(always)]
fn write_dx(
    conv: &UpsampledConv,
    piece: Piece,
    PieceData { u, epilogue, dx }: PieceData,
    v: &[f32],
    (m, half): (&mut [f32], &mut [f32]),
) {
    let (cin, cout, width) = (conv.input.channels, conv.cout, conv.input.width);
    let across = conv.tiles_across(TILE);
    let tiles = piece.tile_rows * across;
    // M[ξ] = V[ξ] U[g] for the positions ξ of each group g and every tile: the sums over
    // dz's channels.
    for (g, u) in u.chunks_exact(cout * cin).take(GROUPS).enumerate() {
        let (first, rows) = UpsampledConv::group_rows(g, tiles);
        let v = Matrix::row_major(&v[first * cout..], rows, cout);
        let u = Matrix::row_major(u, cout, cin);
        shallow_product(v, u, &mut m[first * cin..][..rows * cin], false);
    }
    // dx_tile = O M O^T, then the epilogue ([`untransform_tiles`]).
    let first_output =
        (piece.image * conv.input.height + TILE * piece.first_tile_row) * width * cin;
    untransform_tiles::<SIDE, TILE, OutputTransform>(
        (m, |p, q| SLOTS[p][q], cin),
        (piece, across),
        half,
        (dx, width),
        (epilogue, first_output),
    );
}

/// The kernel gradient of a piece added into its sums from its transformed windows of dz V,
/// with `xt` for the transformed source pixels [81, tiles, cin] and `half` for a tile row's
/// half-transformed strip of source pixels.
#[inline(always)]
fn add_kernel_gradient(
    conv: &UpsampledConv,
    piece: Piece,
    PieceFilter { x, sums }: PieceFilter,
    v: &[f32],
    (xt, half): (&mut [f32], &mut [f32]),
) {
    let (cin, cout) = (conv.input.channels, conv.cout);
    let across = conv.tiles_across(TILE);
    let tiles = piece.tile_rows * across;
    // X[ξ, t, :] = (O^T x O)[p, q] of tile t's 4x4 source pixels.
    transform_tile_windows::<TILE, SIDE, SourceTransform>(
        (x, conv.input),
        (piece, across),
        (TILE, 0),
        half,
        (&mut *xt, |p, q| SLOTS[p][q]),
    );
    // dU[g] += X^T V over the positions of each group g and every tile, [cin, cout] as the
    // kernel gradient is (as [cout, cin] its untransform wrote the gradient a column at a time).
    let (du, dbias) = sums.split_at_mut(GROUPS * cin * cout);
    for (g, du) in du.chunks_exact_mut(cin * cout).enumerate() {
        let (first, rows) = UpsampledConv::group_rows(g, tiles);
        let xt = Matrix::row_major(&xt[first * cin..], rows, cin).transposed();
        let v = Matrix::row_major(&v[first * cout..], rows, cout);
        shallow_product(xt, v, du, true);
    }
    // The aligned boxes of the tiles' source pixels: the last group, (e_k e_l).
    let (first, _) = UpsampledConv::group_rows(GROUPS - 1, tiles);
    for values in v[first * cout..].chunks_exact(cout) {
        add(dbias, values);
    }
}
