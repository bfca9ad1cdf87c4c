//! The backward passes of a 3x3 'same' convolution of an upsampled input,
//! y = conv3x3(upsample2(x)), by a Winograd algorithm over the 2x2 box sums of dz: 9/16 of the
//! multiplies of the box sums' 3x3 pass at the source's resolution.
//!
//! Per dimension (conv.rs's `backward_data` derives it), with B[m] = dz[m - 1] + dz[m] and f
//! the flipped kernel, dx[s] = f0 B[2s] + f1 B[2s + 1] + f2 B[2s + 2]. Over a tile of four
//! source pixels s0 + k (k in 0..4), with b_j = B[2 s0 + j] (j in 0..9, from the ten values
//! dz[2 s0 - 1 ..= 2 s0 + 8]):
//!
//!     dx[s0 + k] = (f0 d_k + f2 d_{k+1}) + f1 e_k,   d_j = b_{2j} (5 values), e_k = b_{2k+1}
//!
//! The first part is a correlation of two taps and four outputs, Winograd's F(4, 2) on the
//! points 0, 1, -1, 2 and infinity: 5 multiplies instead of 8; the second part is 4. So a
//! tile has 9 transformed positions per dimension,
//!
//!     dx_tile = O [ (W f) ⊙ (T z) ],   T z = (B^T d, e),   W f = (G (f0, f2), f1 four times),
//!     O = [A^T | I]   with
//!
//!     B^T d = (2 d0 - d1 - 2 d2 + d3, -2 d1 - d2 + d3, 2 d1 - 3 d2 + d3, d3 - d1,
//!              2 d1 - d2 - 2 d3 + d4)
//!     G g   = (g0 / 2, -(g0 + g1) / 2, (g1 - g0) / 6, (g0 + 2 g1) / 6, g1)
//!     A^T m = (m0 + m1 + m2 + m3, m1 - m2 + 2 m3, m1 + m2 + 4 m3, m1 - m2 + 8 m3 + m4)
//!
//! and in two dimensions 81 positions for a 4x4 tile of source pixels, where the box sums take
//! 9 x 16 = 144 multiplies per channel pair: as in winograd.rs, the sum over dz's channels
//! becomes a GEMM per position. The four middle positions of a side all multiply f1, so the 81
//! positions take 6 x 6 = 36 distinct kernel transforms; the positions that share one (a
//! group: 1, 4 or 16 of them) are stored together, and each group is one GEMM over all its
//! positions and tiles. The kernel gradient is the same algebra read backward:
//! dU[g] = sum over the group's positions ξ and tiles of V[ξ]^T X[ξ] with V = T z T^T and
//! X = O^T x O (x the tile's source pixels), then df = W^T dU W. The bias gradient sums dz,
//! which the aligned boxes (positions e_k e_l) cover once.

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use super::super::Nhwc;
use super::conv::add;
use super::gemm::{Matrix, gemm};
use super::winograd::{Piece, for_each_group, pixel, with_scratch};

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

/// W, the kernel transform along one dimension: row d of the 6 x 3 matrix over the flipped
/// taps (f0, f1, f2), d = [`distinct`] of a position.
const W: [[f64; 3]; DISTINCT] = [
    [0.5, 0.0, 0.0],
    [-0.5, 0.0, -0.5],
    [-1.0 / 6.0, 0.0, 1.0 / 6.0],
    [1.0 / 6.0, 0.0, 1.0 / 3.0],
    [0.0, 0.0, 1.0],
    [0.0, 1.0, 0.0],
];

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

/// The backward passes of a convolution of an upsampled input: the source's shape (x and
/// dx), and the channels of dz.
#[derive(Clone, Copy)]
pub struct BoxSumConv {
    pub input: Nhwc,
    pub cout: usize,
}

impl BoxSumConv {
    fn tiles_across(&self) -> usize {
        self.input.width.div_ceil(TILE)
    }

    fn tile_rows_per_piece(&self) -> usize {
        TILES_PER_PIECE.div_ceil(self.tiles_across())
    }

    fn pieces(&self) -> Vec<Piece> {
        let down = self.input.height.div_ceil(TILE);
        Piece::all(self.input.batch, down, self.tile_rows_per_piece())
    }

    /// dz's shape: the upsampled grid of cout channels.
    fn dz_shape(&self) -> Nhwc {
        Nhwc {
            height: 2 * self.input.height,
            width: 2 * self.input.width,
            channels: self.cout,
            ..self.input
        }
    }

    /// Floats of scratch one piece needs: transformed windows of dz [81, tiles, cout], the
    /// products or transformed source pixels [81, tiles, cin], and one tile's half-transformed
    /// window [10, 9, max(cin, cout)].
    fn piece_scratch_len(&self) -> usize {
        let tiles = self.tile_rows_per_piece() * self.tiles_across();
        let (cin, cout) = (self.input.channels, self.cout);
        POSITIONS * tiles * (cin + cout) + WINDOW * SIDE * cin.max(cout)
    }

    /// Values of a transformed kernel: [36, cout, cin].
    pub fn transformed_len(&self) -> usize {
        GROUPS * self.cout * self.input.channels
    }

    /// u[6 d + e, co, ci] = sum over taps (r, c) of W[d][r] W[e][c] flipped[(r, c), co, ci],
    /// in float64 and rounded once, from the flipped kernel [9, cout, cin] that the box sums
    /// multiply.
    pub fn transform_kernel(&self, flipped: &[f32], u: &mut [f32]) {
        let taps = self.cout * self.input.channels;
        let mut sum = vec![0.0f64; taps];
        for (g, u) in u[..GROUPS * taps].chunks_exact_mut(taps).enumerate() {
            let (d, e) = (g / DISTINCT, g % DISTINCT);
            sum.fill(0.0);
            for (tap, f) in flipped.chunks_exact(taps).take(9).enumerate() {
                // W is sparse: at most 4 of the 9 taps reach a group.
                let weight = W[d][tap / 3] * W[e][tap % 3];
                if weight != 0.0 {
                    for (s, &f) in sum.iter_mut().zip(f) {
                        *s += weight * f64::from(f);
                    }
                }
            }
            for (u, &s) in u.iter_mut().zip(&sum) {
                *u = s as f32;
            }
        }
    }

    /// The first row and the rows of group g's matrix in V, M or X ([81, tiles, c]): its
    /// positions times the piece's tiles.
    fn group_rows(g: usize, tiles: usize) -> (usize, usize) {
        let (start, end) = (GROUP_STARTS[g], GROUP_STARTS[g + 1]);
        (start * tiles, (end - start) * tiles)
    }
}

/// dx = the box sums of dz times the flipped kernel (conv.rs's `backward_data`), with the
/// transformed kernel `u` [36, cout, cin] ([`BoxSumConv::transform_kernel`]).
pub fn backward_data(conv: BoxSumConv, dz: &[f32], u: &[f32], dx: &mut [f32]) {
    let (height, width, cin) = (conv.input.height, conv.input.width, conv.input.channels);
    let image_len = height * width * cin;
    let piece_len = TILE * conv.tile_rows_per_piece() * width * cin;
    let outputs = dx[..conv.input.batch * image_len]
        .chunks_mut(image_len)
        .flat_map(|dx| dx.chunks_mut(piece_len));
    let pieces: Vec<(Piece, &mut [f32])> = conv.pieces().into_iter().zip(outputs).collect();
    pieces.into_par_iter().for_each(|(piece, dx)| {
        with_scratch(conv.piece_scratch_len(), |scratch| {
            Arch::new().dispatch(Data {
                conv,
                dz,
                u,
                piece,
                dx,
                scratch,
            })
        })
    });
}

/// The kernel and bias gradients, per group of pieces ([`for_each_group`]) into its partial
/// of `size` values laid out as the gradients are ([3, 3, cin, cout], then [cout]): the
/// group's dU [36, cout, cin] and bias summed over its tiles in this thread's scratch, then
/// df = W^T dU W ([`Untransform`]). Returns the number of groups, whose partials the caller
/// adds in order.
pub fn kernel_gradient(
    conv: BoxSumConv,
    (x, dz): (&[f32], &[f32]),
    (partials, size): (&mut [f32], usize),
) -> usize {
    let pieces = conv.pieces();
    let sums_len = conv.transformed_len() + conv.cout;
    let scratch_len = sums_len + conv.piece_scratch_len();
    for_each_group(
        &pieces,
        (partials, size),
        scratch_len,
        |pieces, scratch, partial| {
            let (sums, scratch) = scratch.split_at_mut(sums_len);
            sums.fill(0.0);
            for &piece in pieces {
                Arch::new().dispatch(Filter {
                    conv,
                    x,
                    dz,
                    piece,
                    sums: &mut *sums,
                    scratch: &mut *scratch,
                });
            }
            Arch::new().dispatch(Untransform {
                conv,
                sums,
                grads: partial,
            });
        },
    )
}

/// The kernel and bias gradients from a group's sums: for each tap (ky, kx), the flipped tap
/// (r, c) = (2 - ky, 2 - kx) of df = W^T dU W in float64, its channels transposed back.
struct Untransform<'a> {
    conv: BoxSumConv,
    sums: &'a [f32],
    grads: &'a mut [f32],
}

impl WithSimd for Untransform<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Untransform { conv, sums, grads } = self;
        let (cin, cout) = (conv.input.channels, conv.cout);
        let taps = cin * cout;
        let (du, dbias) = sums.split_at(GROUPS * taps);
        let mut tap_sum = vec![0.0f64; taps];
        for (tap, dkernel) in grads[..9 * taps].chunks_exact_mut(taps).enumerate() {
            let (r, c) = (2 - tap / 3, 2 - tap % 3);
            tap_sum.fill(0.0);
            for (g, du) in du.chunks_exact(taps).enumerate() {
                // W is sparse: each tap takes 16 of the 36 groups.
                let weight = W[g / DISTINCT][r] * W[g % DISTINCT][c];
                if weight != 0.0 {
                    for (s, &d) in tap_sum.iter_mut().zip(du) {
                        *s += weight * f64::from(d);
                    }
                }
            }
            // tap_sum is [cout, cin]; the kernel gradient [cin, cout].
            for (ci, row) in dkernel.chunks_exact_mut(cout).enumerate() {
                for (co, g) in row.iter_mut().enumerate() {
                    *g = tap_sum[co * cin + ci] as f32;
                }
            }
        }
        grads[9 * taps..][..cout].copy_from_slice(dbias);
    }
}

/// backward-data on a piece, whose rows of dx are `dx` (from row TILE first_tile_row).
struct Data<'a> {
    conv: BoxSumConv,
    dz: &'a [f32],
    u: &'a [f32],
    piece: Piece,
    dx: &'a mut [f32],
    scratch: &'a mut [f32],
}

/// The kernel gradient of a piece, added into `sums`: dU [36, cout, cin], then the bias's
/// [cout].
struct Filter<'a> {
    conv: BoxSumConv,
    x: &'a [f32],
    dz: &'a [f32],
    piece: Piece,
    sums: &'a mut [f32],
    scratch: &'a mut [f32],
}

/// Channels a transform takes at a time, in vector registers.
const LANES: usize = 16;

/// out[at[o] + k] = f(the inputs' values at channel k)[o] for every channel k: blocks of LANES
/// channels copied into arrays, so that the compiler keeps them in vector registers (the
/// slices could alias, as far as it knows), then the remainder one channel at a time.
#[inline(always)]
fn lanewise<const I: usize, const O: usize>(
    inputs: &[&[f32]; I],
    (out, at): (&mut [f32], [usize; O]),
    f: impl Fn([f32; I]) -> [f32; O] + Copy,
) {
    let c = inputs[0].len();
    let whole = c / LANES * LANES;
    for k in (0..whole).step_by(LANES) {
        let block: [[f32; LANES]; I] =
            std::array::from_fn(|i| inputs[i][k..k + LANES].try_into().unwrap());
        let mut results = [[0.0; LANES]; O];
        for lane in 0..LANES {
            let values = f(std::array::from_fn(|i| block[i][lane]));
            for (result, value) in results.iter_mut().zip(values) {
                result[lane] = value;
            }
        }
        for (result, at) in results.iter().zip(at) {
            out[at + k..][..LANES].copy_from_slice(result);
        }
    }
    for k in whole..c {
        let values = f(std::array::from_fn(|i| inputs[i][k]));
        for (value, at) in values.into_iter().zip(at) {
            out[at + k] = value;
        }
    }
}

/// Offsets of `n` rows of `c` channels one after the other.
fn consecutive<const N: usize>(c: usize) -> [usize; N] {
    std::array::from_fn(|row| row * c)
}

/// T over the ten rows of channels of a window's line of dz, into the nine rows `out`: the
/// pair sums b_j = r_j + r_{j+1}, then B^T over the even ones and the odd ones as they are.
#[inline(always)]
fn window_transform(rows: &[&[f32]; WINDOW], out: (&mut [f32], [usize; SIDE])) {
    lanewise(rows, out, |r| {
        let [d0, e0, d1, e1, d2, e2, d3, e3, d4] = std::array::from_fn(|j| r[j] + r[j + 1]);
        [
            2.0 * (d0 - d2) - d1 + d3,
            d3 - d2 - 2.0 * d1,
            2.0 * d1 - 3.0 * d2 + d3,
            d3 - d1,
            2.0 * (d1 - d3) - d2 + d4,
            e0,
            e1,
            e2,
            e3,
        ]
    });
}

/// O over nine rows of channels, into the four rows `out`: A^T over the first five, plus the
/// last four.
#[inline(always)]
fn output_transform(m: &[&[f32]; SIDE], out: (&mut [f32], [usize; TILE])) {
    lanewise(m, out, |m| {
        let (sum, difference) = (m[1] + m[2], m[1] - m[2]);
        [
            m[0] + sum + m[3] + m[5],
            difference + 2.0 * m[3] + m[6],
            sum + 4.0 * m[3] + m[7],
            difference + 8.0 * m[3] + m[4] + m[8],
        ]
    });
}

/// O^T over four rows of channels (a tile's line of source pixels), into the nine rows `out`.
#[inline(always)]
fn source_transform(x: &[&[f32]; TILE], out: (&mut [f32], [usize; SIDE])) {
    lanewise(x, out, |[x0, x1, x2, x3]| {
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
    });
}

/// Where tile t's values at positions (p, 0..9) start in V, M or X ([81, tiles, c]).
fn slots_of_row(p: usize, t: usize, tiles: usize, c: usize) -> [usize; SIDE] {
    std::array::from_fn(|q| (SLOTS[p][q] * tiles + t) * c)
}

/// V[(p, q), t, :] = (T z T^T)[p, q] for each tile t of the piece, z its 10x10 window of dz
/// from (8 ti - 1, 8 tj - 1): down the window's columns into `half` [10, 9, cout], then along
/// its rows.
#[inline(always)]
fn transform_windows(conv: &BoxSumConv, dz: &[f32], piece: Piece, v: &mut [f32], half: &mut [f32]) {
    let (cout, across, shape) = (conv.cout, conv.tiles_across(), conv.dz_shape());
    let tiles = piece.tile_rows * across;
    let zeros = vec![0.0; cout];
    for t in 0..tiles {
        let (ti, tj) = (piece.first_tile_row + t / across, t % across);
        let (top, left) = ((2 * TILE * ti) as isize - 1, (2 * TILE * tj) as isize - 1);
        for q in 0..WINDOW {
            let column = std::array::from_fn(|r| {
                let at = (top + r as isize, left + q as isize);
                pixel(dz, shape, piece.image, at, &zeros)
            });
            let out = &mut half[q * SIDE * cout..][..SIDE * cout];
            window_transform(&column, (out, consecutive(cout)));
        }
        for p in 0..SIDE {
            let row = std::array::from_fn(|q| &half[(q * SIDE + p) * cout..][..cout]);
            window_transform(&row, (&mut *v, slots_of_row(p, t, tiles, cout)));
        }
    }
}

impl WithSimd for Data<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Data {
            conv,
            dz,
            u,
            piece,
            dx,
            scratch,
        } = self;
        let (cin, cout, width) = (conv.input.channels, conv.cout, conv.input.width);
        let across = conv.tiles_across();
        let tiles = piece.tile_rows * across;
        let (v, rest) = scratch.split_at_mut(POSITIONS * tiles * cout);
        let (m, half) = rest.split_at_mut(POSITIONS * tiles * cin);
        transform_windows(&conv, dz, piece, v, half);
        // M[ξ] = V[ξ] U[g] for the positions ξ of each group g and every tile: the sums over
        // dz's channels.
        for (g, u) in u.chunks_exact(cout * cin).take(GROUPS).enumerate() {
            let (first, rows) = BoxSumConv::group_rows(g, tiles);
            let v = Matrix::row_major(&v[first * cout..], rows, cout);
            let u = Matrix::row_major(u, cout, cin);
            gemm(v, u, &mut m[first * cin..][..rows * cin], false);
        }
        // dx_tile = O M O^T: down the columns into `lines` [4, 9, cin], then along the rows,
        // for the source pixels inside the image.
        let (lines, block) = half.split_at_mut(TILE * SIDE * cin);
        let block = &mut block[..TILE * cin];
        for t in 0..tiles {
            let (local_row, tj) = (t / across, t % across);
            for q in 0..SIDE {
                let column = std::array::from_fn(|p| &m[(SLOTS[p][q] * tiles + t) * cin..][..cin]);
                let at = std::array::from_fn(|k| (k * SIDE + q) * cin);
                output_transform(&column, (&mut *lines, at));
            }
            for (k, line) in lines.chunks_exact(SIDE * cin).enumerate() {
                let row = TILE * local_row + k;
                if row * width * cin >= dx.len() {
                    break;
                }
                let line = std::array::from_fn(|q| &line[q * cin..][..cin]);
                output_transform(&line, (&mut *block, consecutive(cin)));
                let cols = (width - TILE * tj).min(TILE);
                dx[(row * width + TILE * tj) * cin..][..cols * cin]
                    .copy_from_slice(&block[..cols * cin]);
            }
        }
    }
}

impl WithSimd for Filter<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let Filter {
            conv,
            x,
            dz,
            piece,
            sums,
            scratch,
        } = self;
        let (cin, cout) = (conv.input.channels, conv.cout);
        let across = conv.tiles_across();
        let tiles = piece.tile_rows * across;
        let (v, rest) = scratch.split_at_mut(POSITIONS * tiles * cout);
        let (xt, half) = rest.split_at_mut(POSITIONS * tiles * cin);
        transform_windows(&conv, dz, piece, v, half);
        // X[ξ, t, :] = (O^T x O)[p, q] of tile t's 4x4 source pixels (zeros outside the image):
        // down the tile's columns into `lines` [4, 9, cin], then along the rows.
        let zeros = vec![0.0; cin];
        let lines = &mut half[..TILE * SIDE * cin];
        for t in 0..tiles {
            let (ti, tj) = (piece.first_tile_row + t / across, t % across);
            let (top, left) = ((TILE * ti) as isize, (TILE * tj) as isize);
            for l in 0..TILE {
                let column = std::array::from_fn(|k| {
                    let at = (top + k as isize, left + l as isize);
                    pixel(x, conv.input, piece.image, at, &zeros)
                });
                let out = &mut lines[l * SIDE * cin..][..SIDE * cin];
                source_transform(&column, (out, consecutive(cin)));
            }
            for p in 0..SIDE {
                let row = std::array::from_fn(|l| &lines[(l * SIDE + p) * cin..][..cin]);
                source_transform(&row, (&mut *xt, slots_of_row(p, t, tiles, cin)));
            }
        }
        // dU[g] += V^T X over the positions of each group g and every tile.
        let (du, dbias) = sums.split_at_mut(GROUPS * cout * cin);
        for (g, du) in du.chunks_exact_mut(cout * cin).enumerate() {
            let (first, rows) = BoxSumConv::group_rows(g, tiles);
            let v = Matrix::row_major(&v[first * cout..], rows, cout).transposed();
            let xt = Matrix::row_major(&xt[first * cin..], rows, cin);
            gemm(v, xt, du, true);
        }
        // The aligned boxes of the tiles' source pixels: the last group, (e_k e_l).
        let (first, _) = BoxSumConv::group_rows(GROUPS - 1, tiles);
        for values in v[first * cout..].chunks_exact(cout) {
            add(dbias, values);
        }
    }
}
