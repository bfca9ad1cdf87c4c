//! The machinery of the Winograd passes' transforms, shared by [`super::winograd`] and
//! [`super::upsampled_winograd`]: a transform along one line of a tile ([`Line`]), run over
//! the tiles of a piece of work a strip of image rows at a time, into the transformed
//! positions that the GEMMs read ([`transform_tile_windows`]), and from the GEMMs' products
//! back to output rows ([`untransform_tiles`]). Both run down the columns of a whole tile row
//! at once (long runs of channels, in vector registers) and then along each tile's rows.

use super::super::Nhwc;
use super::conv::Epilogue;
use super::winograd::Piece;

/// Channels a transform takes at a time, in vector registers.
const LANES: usize = 16;

/// How far ahead, in floats, the strips' passes ask for each image row they read: 2 KiB, 32
/// cache lines.
const PREFETCH_DISTANCE: usize = 512;

/// Asks for the cache line at `at` to be brought into L1, without waiting for it: a hint,
/// which may point past the end of a row (a prefetch does not fault).
#[inline(always)]
pub(super) fn prefetch(at: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees, and faults on no address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(at.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// A transform along one line of a tile, channel by channel: the values of I rows at one
/// channel to the values of O rows. A type, not a closure or a fn item, so that every call is
/// direct and inlines into the caller that [`pulp::Arch::dispatch`] compiled for the machine's
/// vector width (a fn item called through `Fn` is a shim the compiler may keep out of line,
/// compiled for plain SSE2).
pub(super) trait Line<const I: usize, const O: usize> {
    /// For each output, the input it is a copy of, if it is one: [`transform_tile_windows`]
    /// reads those where they lie instead of writing them into its strip.
    const COPIES: [Option<usize>; O] = [None; O];

    fn values(inputs: [f32; I]) -> [f32; O];

    /// out[at[o] + k] = values(inputs[i][k] for each input i)[o] for every channel k below c,
    /// the first input's length (the others are at least as long); with `skip_copies`, only
    /// for the outputs that are not [`Line::COPIES`]. The inputs are rows of an image in
    /// memory (a strip's pass), so each is prefetched ahead as it is read.
    #[inline(always)]
    fn lanewise(inputs: &[&[f32]; I], (out, at): (&mut [f32], [usize; O]), skip_copies: bool) {
        let c = inputs[0].len();
        assert!(inputs.iter().all(|input| input.len() >= c));
        assert!(at.iter().all(|&at| at + c <= out.len()));
        let sources = inputs.map(<[f32]>::as_ptr);
        // SAFETY: each input holds c values, and each at[o] + c <= out.len() (asserted above);
        // `out` is borrowed mutably, so no input aliases it.
        unsafe { Self::lanewise_unchecked(sources, c, (out, at), (skip_copies, true)) }
    }

    /// The same over c channels of inputs that lie in one slice: input i from
    /// `input[from[i]..]`. The hot loops' form: no slice to make and check per input.
    #[inline(always)]
    fn lanewise_within(
        (input, from, c): (&[f32], [usize; I], usize),
        (out, at): (&mut [f32], [usize; O]),
    ) {
        assert!(from.iter().all(|&from| from + c <= input.len()));
        assert!(at.iter().all(|&at| at + c <= out.len()));
        let first = input.as_ptr();
        // SAFETY: each from[i] + c <= input.len() and at[o] + c <= out.len() (asserted
        // above); `out` is borrowed mutably, so `input` does not alias it.
        unsafe {
            Self::lanewise_unchecked(from.map(|i| first.add(i)), c, (out, at), (false, false))
        }
    }

    /// [`Line::lanewise`] on raw inputs, every output stored or, with `skip_copies`, those
    /// that are not copies; with `prefetch` (inputs that are rows of an image in memory), the
    /// line [`PREFETCH_DISTANCE`] ahead in each input asked for as a block is read. A strip's
    /// W rows are W streams read at once, which the hardware's prefetcher does not keep far
    /// enough ahead of: asking took 4-5% off conv5's kernel gradient (10 rows of dz), 1-2% off
    /// conv4's and 1.5-3% off the training step. Blocks of LANES channels copied into arrays,
    /// so that the compiler keeps them in vector registers (the inputs could alias, as far as
    /// it knows), then the remainder one channel at a time. The block is filled by a plain loop:
    /// built by `std::array::from_fn`, nine rows of it were made out of line and copied back
    /// through memmove (5% of conv5's backward-data). No bounds are checked here: checked
    /// indexing kept a comparison, a branch and an offset reloaded from the stack beside every
    /// load and store (3-7% of the Winograd passes).
    ///
    /// # Safety
    /// Each of `sources` must be valid for reading c values, each at[o] + c must be at most
    /// out.len(), and no source may overlap `out`.
    #[inline(always)]
    unsafe fn lanewise_unchecked(
        sources: [*const f32; I],
        c: usize,
        (out, at): (&mut [f32], [usize; O]),
        (skip_copies, prefetch): (bool, bool),
    ) {
        let whole = c / LANES * LANES;
        let first = out.as_mut_ptr();
        // SAFETY: at[o] <= out.len() (the caller's contract).
        let destinations: [*mut f32; O] = at.map(|at| unsafe { first.add(at) });
        let stored: [bool; O] = std::array::from_fn(|o| !skip_copies || Self::COPIES[o].is_none());
        for k in (0..whole).step_by(LANES) {
            if prefetch {
                for &source in &sources {
                    self::prefetch(source.wrapping_add(k + PREFETCH_DISTANCE));
                }
            }
            let mut block = [[0.0; LANES]; I];
            for (row, &source) in block.iter_mut().zip(&sources) {
                // SAFETY: k + LANES <= c, the values each source holds.
                unsafe { std::ptr::copy_nonoverlapping(source.add(k), row.as_mut_ptr(), LANES) };
            }
            let mut results = [[0.0; LANES]; O];
            for lane in 0..LANES {
                let values = Self::values(std::array::from_fn(|i| block[i][lane]));
                for (result, value) in results.iter_mut().zip(values) {
                    result[lane] = value;
                }
            }
            for o in 0..O {
                if stored[o] {
                    // SAFETY: at[o] + k + LANES <= at[o] + c <= out.len().
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            results[o].as_ptr(),
                            destinations[o].add(k),
                            LANES,
                        )
                    };
                }
            }
        }
        for k in whole..c {
            // SAFETY: k < c, and at[o] + k < out.len().
            let values = Self::values(sources.map(|source| unsafe { *source.add(k) }));
            for o in 0..O {
                if stored[o] {
                    unsafe { *destinations[o].add(k) = values[o] };
                }
            }
        }
    }
}

/// Floats of scratch [`untransform_tiles`] needs for a row of `across` tiles of P x P
/// positions into O x O outputs, of `c` channels: a tile row's half-transformed outputs
/// [O, P, across, c] and its rows of outputs [O, O across, c].
pub(super) const fn untransform_scratch_len<const P: usize, const O: usize>(
    across: usize,
    c: usize,
) -> usize {
    O * (P + O) * across * c
}

/// The outputs of a piece's tiles (`across` tiles a row) from their transformed positions:
/// `m` [P x P slots, tiles, c], position (p, q) of every tile at slot `slot(p, q)`. For each
/// tile row, T runs down the columns of all its tiles at once into `lines` [O, P, across, c],
/// then along each tile's rows into `rows` [O, O across, c] (both in `scratch`, of
/// [`untransform_scratch_len`] floats); the epilogue runs over those rows while they are in
/// cache, and each is copied whole into `out` ([`Epilogue::apply_and_store`]: rows of `width`
/// pixels, the columns and rows past the image's edges left out; `out` starts at value
/// `first_output` of the pass's output).
#[inline(always)]
pub(super) fn untransform_tiles<const P: usize, const O: usize, T: Line<P, O>>(
    (m, slot, c): (&[f32], impl Fn(usize, usize) -> usize, usize),
    (piece, across): (Piece, usize),
    scratch: &mut [f32],
    (out, width): (&mut [f32], usize),
    (epilogue, first_output): (Epilogue, usize),
) {
    let (lines, rows) = scratch.split_at_mut(O * P * across * c);
    let tiles = piece.tile_rows * across;
    let row_len = across * c;
    let staged_width = O * across;
    for local_row in 0..piece.tile_rows {
        let first_tile = local_row * across;
        for q in 0..P {
            let column = std::array::from_fn(|p| (slot(p, q) * tiles + first_tile) * c);
            let at = std::array::from_fn(|r| (r * P + q) * row_len);
            T::lanewise_within((m, column, row_len), (&mut *lines, at));
        }
        for r in 0..O {
            for tj in 0..across {
                let line = std::array::from_fn(|q| (r * P + q) * row_len + tj * c);
                let at = (r * staged_width + O * tj) * c;
                T::lanewise_within(
                    (&*lines, line, c),
                    (&mut *rows, std::array::from_fn(|o| at + o * c)),
                );
            }
        }
        let first_row = O * local_row * width * c;
        epilogue.apply_and_store(
            (&mut rows[..O * staged_width * c], staged_width * c),
            &mut out[first_row..],
            (width * c, first_output + first_row),
        );
    }
}

/// Columns of the strip that a row of `across` tiles reads: their W x W windows, `step`
/// apart.
pub(super) const fn strip_columns<const W: usize>(step: usize, across: usize) -> usize {
    step * (across - 1) + W
}

/// Each tile t of a piece (`across` tiles a row) transformed by T: its W x W window of
/// `tensor` (of shape `shape`, zeros outside the image) from row step ti - before and column
/// step tj - before, into `out` [P x P slots, tiles, c], position (p, q) of every tile at slot
/// `slot(p, q)` (as [`untransform_tiles`] reads them). T runs down the columns of each tile
/// row's strip of W rows at once, every column of the image in one call, into `half` [P,
/// columns, c] (the strip's columns from image column -before, those outside the image zero),
/// then along each tile's rows. Where the strip needs no padding (no column before the image
/// or past it), its rows that copy a row of the window ([`Line::COPIES`]) are not written: the
/// pass along the tiles' rows reads that row of the image (or of zeros) instead, which took
/// 1-2% off conv5's kernel gradient, whose transform of x copies 6 of its 9 rows.
#[inline(always)]
pub(super) fn transform_tile_windows<const W: usize, const P: usize, T: Line<W, P>>(
    (tensor, shape): (&[f32], Nhwc),
    (piece, across): (Piece, usize),
    (step, before): (usize, usize),
    half: &mut [f32],
    (out, slot): (&mut [f32], impl Fn(usize, usize) -> usize),
) {
    let c = shape.channels;
    let tiles = piece.tile_rows * across;
    let columns = strip_columns::<W>(step, across);
    let inside = shape.width.min(columns - before);
    let half = &mut half[..P * columns * c];
    for line in half.chunks_exact_mut(columns * c) {
        line[..before * c].fill(0.0);
        line[(before + inside) * c..].fill(0.0);
    }
    let in_place = before == 0 && inside == columns;
    let zeros = vec![0.0; inside * c];
    let row_len = shape.width * c;
    let image = &tensor[piece.image * shape.height * row_len..][..shape.height * row_len];
    for local_row in 0..piece.tile_rows {
        let top = step * (piece.first_tile_row + local_row);
        let rows = std::array::from_fn(|r| match (top + r).checked_sub(before) {
            Some(row) if row < shape.height => &image[row * row_len..][..inside * c],
            _ => &zeros[..],
        });
        T::lanewise(
            &rows,
            (
                &mut *half,
                std::array::from_fn(|p| (p * columns + before) * c),
            ),
            in_place,
        );
        // Row p of every tile in turn: P output streams at a time, each a run of whole tiles,
        // where tile by tile they were P x P short ones (1.5% of the training step).
        for p in 0..P {
            let (line, first) = match T::COPIES[p] {
                Some(r) if in_place => (rows[r], 0),
                _ => (&*half, p * columns * c),
            };
            for tj in 0..across {
                let t = local_row * across + tj;
                let line_at = std::array::from_fn(|q| first + (step * tj + q) * c);
                let at = std::array::from_fn(|q| (slot(p, q) * tiles + t) * c);
                T::lanewise_within((line, line_at, c), (&mut *out, at));
            }
        }
    }
}
