//! The GEMM kernels' compiled tiles: the gathered GEMM (forward and backward-data) and the
//! kernel-gradient partials, in FP32 (kernels/conv2d.cu), TF32 and BF16
//! (kernels/conv2d_tf32.cu), and the choice among them for one shape.
//!
//! Each shape has one or more candidate tiles, the first the default. Where there are several,
//! which is faster depends on the GPU and the layer:
//! - the TF32 and BF16 tiles in eight warps or in four with twice the warp tile (the gathered
//!   GEMM's 128 x 128 and 256 x 64 in 64 x 32 or 64 x 64 warp tiles, 256 x 32 in 32 x 32 or 64 x 32,
//!   the partials' 128 x 128 in 64 x 32 or 64 x 64): larger warp tiles read less shared memory
//!   per mma, more warps hide more latency;
//! - the gathered GEMM's 128 x 128 tiles on slices of 32 of K, too (half the barriers and copy
//!   set-ups per mma, for 96 KiB of shared memory: two blocks an SM on an H100, one on sm_89;
//!   the others take 16);
//! - an FP32 GEMM of more than 64 columns on the 128 x 128 tile or on 128 x 64 ones (more
//!   blocks);
//! - on Hopper (the compute_90a kernels), the TF32 GEMMs of more than 32 columns on warpgroup
//!   tiles too (wgmma: B read by the tensor cores straight from shared memory), and the TF32
//!   partials (their B transposed in shared memory first).
//!
//! So on a GPU the backend times every candidate at the shape's first use and keeps the
//! fastest, as cuDNN's benchmark mode does. The candidates of a shape give the same bits (every
//! output adds its products in the same order), so the choice changes the speed and never the
//! result; the emulator checks that, and keeps the default, since its timings say nothing
//! about a GPU.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;

use super::{Device, DevicePtr, Launch, kernels};
use crate::backend::Precision;
use crate::error::Result;

/// A compiled tile, as the choice among candidates needs it.
pub trait Tile: Copy + Eq + Debug {
    /// The kernel's name in kernels/*.cu.
    fn kernel_name(self) -> &'static str;
}

/// What a kernel's speed depends on, as a key for its choice.
pub trait Shape: Copy + Eq + Hash + Ord {
    /// What is computed, e.g. "401408 x 128 GEMM over K = 1152 (TF32)".
    fn describe(&self) -> String;
}

/// A compiled tile of the gathered GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmTile {
    /// FP32, 128 x 128, for more than 64 output channels.
    Fp32Wide,
    /// FP32, 128 x 64, for 33-64.
    Fp32,
    /// FP32, 128 x 64, pooling its output in the epilogue.
    Fp32Pooled,
    /// FP32, 256 x 32, for at most 32.
    Fp32Narrow,
    /// TF32, 128 x 128 in eight warps of 64 x 32.
    Tf32Wide,
    /// TF32, 128 x 128 in eight warps of 64 x 32 on slices of TF32_LONG_SLICE of K.
    Tf32WideLong,
    /// TF32, 128 x 128 in four warps of 64 x 64.
    Tf32WideFourWarps,
    /// TF32, 128 x 128 in four warps of 64 x 64 on slices of TF32_LONG_SLICE of K.
    Tf32WideFourWarpsLong,
    /// TF32, 256 x 64 in eight warps of 64 x 32.
    Tf32,
    /// TF32, 256 x 64 in four warps of 64 x 64.
    Tf32FourWarps,
    /// TF32, 256 x 64 pooling its output in the epilogue.
    Tf32Pooled,
    /// TF32, 256 x 32 in eight warps of 32 x 32.
    Tf32Narrow,
    /// TF32, 256 x 32 in four warps of 64 x 32.
    Tf32NarrowFourWarps,
    /// TF32 on Hopper's warpgroup MMA (wgmma, sm_90a), 128 x 128 in two warpgroups of
    /// 64 x 128 on slices of TF32_LONG_SLICE of K.
    Tf32WgmmaWide,
    /// The same in one warpgroup of two 64 x 128 blocks.
    Tf32WgmmaWideOneWarpgroup,
    /// The same, 128 x 64 in two warpgroups of 64 x 64.
    Tf32Wgmma,
    /// The same, pooling its output in the epilogue.
    Tf32WgmmaPooled,
    /// BF16, 128 x 128 in eight warps of 64 x 32.
    Bf16Wide,
    /// BF16, 128 x 128 in four warps of 64 x 64.
    Bf16WideFourWarps,
    /// BF16, 256 x 64 in eight warps of 64 x 32.
    Bf16,
    /// BF16, 256 x 64 in four warps of 64 x 64.
    Bf16FourWarps,
    /// BF16, 256 x 64 pooling its output in the epilogue.
    Bf16Pooled,
    /// BF16, 256 x 32 in eight warps of 32 x 32.
    Bf16Narrow,
    /// BF16, 256 x 32 in four warps of 64 x 32.
    Bf16NarrowFourWarps,
}

/// A shape's candidates: `tiles`, then `warpgroup_tiles` where `warpgroups` (the device runs
/// them and the backend was asked to offer them).
fn with_warpgroup_tiles<T: Copy>(tiles: &[T], warpgroup_tiles: &[T], warpgroups: bool) -> Vec<T> {
    let warpgroup_tiles = if warpgroups { warpgroup_tiles } else { &[] };
    tiles.iter().chain(warpgroup_tiles).copied().collect()
}

/// The launch function every gathered-GEMM kernel has (build.rs generates them from the .cu
/// signatures): device, launch, src, the gather's 8 dimensions and its window origin, weights,
/// n, bias, activation, slope_at, out, out_h, out_w, out_stride, out_row, out_col, pooled.
pub type GemmKernel<D> = fn(
    &mut D,
    Launch,
    DevicePtr,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    DevicePtr,
    i32,
    DevicePtr,
    i32,
    DevicePtr,
    DevicePtr,
    i32,
    i32,
    i32,
    i32,
    i32,
    DevicePtr,
) -> Result<()>;

impl GemmTile {
    /// The tiles a GEMM of `n` output channels may run on, the default first: in `precision`
    /// (TF32 and BF16 on tensor cores), with Hopper's warpgroup tiles too (TF32) where the
    /// device runs them (`warpgroups`), `pooling` its output in the epilogue too (only the
    /// 33-64 channel tiles pool; they take no activation slope: they run forward passes).
    pub fn candidates(
        precision: Precision,
        warpgroups: bool,
        n: usize,
        pooling: bool,
    ) -> Vec<GemmTile> {
        use GemmTile::*;
        use Precision as P;
        let narrow = n <= kernels::GEMM_NARROW_TILE_N;
        let wide = n > kernels::GEMM_TILE_N;
        let (tiles, warpgroup_tiles): (&[GemmTile], &[GemmTile]) =
            match (precision, wide, narrow, pooling) {
                (_, true, _, true) | (_, _, true, true) => (&[], &[]),
                (P::Tf32, true, _, false) => (
                    &[
                        Tf32Wide,
                        Tf32WideLong,
                        Tf32WideFourWarps,
                        Tf32WideFourWarpsLong,
                    ],
                    &[Tf32WgmmaWide, Tf32WgmmaWideOneWarpgroup],
                ),
                (P::Tf32, false, false, true) => (&[Tf32Pooled], &[Tf32WgmmaPooled]),
                (P::Tf32, false, false, false) => (&[Tf32, Tf32FourWarps], &[Tf32Wgmma]),
                (P::Tf32, false, true, false) => (&[Tf32Narrow, Tf32NarrowFourWarps], &[]),
                (P::Bf16, true, _, false) => (&[Bf16Wide, Bf16WideFourWarps], &[]),
                (P::Bf16, false, false, true) => (&[Bf16Pooled], &[]),
                (P::Bf16, false, false, false) => (&[Bf16, Bf16FourWarps], &[]),
                (P::Bf16, false, true, false) => (&[Bf16Narrow, Bf16NarrowFourWarps], &[]),
                (P::Fp32, true, _, false) => (&[Fp32Wide, Fp32], &[]),
                (P::Fp32, false, false, true) => (&[Fp32Pooled], &[]),
                (P::Fp32, false, false, false) => (&[Fp32], &[]),
                (P::Fp32, false, true, false) => (&[Fp32Narrow], &[]),
            };
        with_warpgroup_tiles(tiles, warpgroup_tiles, warpgroups)
    }

    /// Whether a GEMM of `n` output channels can pool its output in the epilogue: only the
    /// 33-64 channel tiles are compiled to, in every precision.
    pub fn pools(n: usize) -> bool {
        let (warpgroups, pooling) = (false, true);
        !Self::candidates(Precision::Fp32, warpgroups, n, pooling).is_empty()
    }

    /// Its typed launch function.
    pub fn kernel<D: Device>(self) -> GemmKernel<D> {
        use GemmTile::*;
        match self {
            Fp32Wide => kernels::conv2d_gathered_gemm_wide,
            Fp32 => kernels::conv2d_gathered_gemm,
            Fp32Pooled => kernels::conv2d_gathered_gemm_pooled,
            Fp32Narrow => kernels::conv2d_gathered_gemm_narrow,
            Tf32Wide => kernels::conv2d_gathered_gemm_tf32_wide,
            Tf32WideLong => kernels::conv2d_gathered_gemm_tf32_wide_long,
            Tf32WideFourWarps => kernels::conv2d_gathered_gemm_tf32_wide_four_warps,
            Tf32WideFourWarpsLong => kernels::conv2d_gathered_gemm_tf32_wide_four_warps_long,
            Tf32 => kernels::conv2d_gathered_gemm_tf32,
            Tf32FourWarps => kernels::conv2d_gathered_gemm_tf32_four_warps,
            Tf32Pooled => kernels::conv2d_gathered_gemm_tf32_pooled,
            Tf32Narrow => kernels::conv2d_gathered_gemm_tf32_narrow,
            Tf32NarrowFourWarps => kernels::conv2d_gathered_gemm_tf32_narrow_four_warps,
            Tf32WgmmaWide => kernels::conv2d_gathered_gemm_tf32_wgmma_wide,
            Tf32WgmmaWideOneWarpgroup => {
                kernels::conv2d_gathered_gemm_tf32_wgmma_wide_one_warpgroup
            }
            Tf32Wgmma => kernels::conv2d_gathered_gemm_tf32_wgmma,
            Tf32WgmmaPooled => kernels::conv2d_gathered_gemm_tf32_wgmma_pooled,
            Bf16Wide => kernels::conv2d_gathered_gemm_bf16_wide,
            Bf16WideFourWarps => kernels::conv2d_gathered_gemm_bf16_wide_four_warps,
            Bf16 => kernels::conv2d_gathered_gemm_bf16,
            Bf16FourWarps => kernels::conv2d_gathered_gemm_bf16_four_warps,
            Bf16Pooled => kernels::conv2d_gathered_gemm_bf16_pooled,
            Bf16Narrow => kernels::conv2d_gathered_gemm_bf16_narrow,
            Bf16NarrowFourWarps => kernels::conv2d_gathered_gemm_bf16_narrow_four_warps,
        }
    }

    /// Pixels and channels of its tile, and floats of dynamic shared memory per block.
    fn dimensions(self) -> (usize, usize, usize) {
        use GemmTile::*;
        use kernels::*;
        match self {
            Fp32Wide => (GEMM_WIDE_TILE_P, GEMM_WIDE_TILE_N, GEMM_WIDE_SHARED_FLOATS),
            Fp32 | Fp32Pooled => (GEMM_TILE_P, GEMM_TILE_N, GEMM_SHARED_FLOATS),
            Fp32Narrow => (
                GEMM_NARROW_TILE_P,
                GEMM_NARROW_TILE_N,
                GEMM_NARROW_SHARED_FLOATS,
            ),
            Tf32Wide | Tf32WideFourWarps | Bf16Wide | Bf16WideFourWarps => {
                (TF32_WIDE_TILE_P, TF32_WIDE_TILE_N, TF32_WIDE_SHARED_FLOATS)
            }
            Tf32WideLong | Tf32WideFourWarpsLong => (
                TF32_WIDE_TILE_P,
                TF32_WIDE_TILE_N,
                TF32_WIDE_LONG_SHARED_FLOATS,
            ),
            Tf32 | Tf32FourWarps | Tf32Pooled | Bf16 | Bf16FourWarps | Bf16Pooled => {
                (TF32_TILE_P, TF32_TILE_N, TF32_SHARED_FLOATS)
            }
            Tf32Narrow | Tf32NarrowFourWarps | Bf16Narrow | Bf16NarrowFourWarps => (
                TF32_NARROW_TILE_P,
                TF32_NARROW_TILE_N,
                TF32_NARROW_SHARED_FLOATS,
            ),
            Tf32WgmmaWide | Tf32WgmmaWideOneWarpgroup => (
                TF32_WGMMA_TILE_P,
                TF32_WGMMA_WIDE_TILE_N,
                TF32_WGMMA_WIDE_SHARED_FLOATS,
            ),
            Tf32Wgmma | Tf32WgmmaPooled => (
                TF32_WGMMA_TILE_P,
                TF32_WGMMA_TILE_N,
                TF32_WGMMA_SHARED_FLOATS,
            ),
        }
    }

    /// Its launch over a GEMM of `pixels` rows and `n` columns: blocks of the tile, threads
    /// per block, dynamic shared memory.
    pub fn launch(self, pixels: usize, n: usize) -> Launch {
        let (tile_p, tile_n, shared_floats) = self.dimensions();
        use GemmTile::*;
        let threads = match self {
            Tf32WideFourWarps
            | Tf32WideFourWarpsLong
            | Tf32FourWarps
            | Tf32NarrowFourWarps
            | Bf16WideFourWarps
            | Bf16FourWarps
            | Bf16NarrowFourWarps => kernels::TF32_FOUR_WARPS_THREADS,
            Tf32WgmmaWide | Tf32Wgmma | Tf32WgmmaPooled => kernels::TF32_WGMMA_THREADS,
            Tf32WgmmaWideOneWarpgroup => kernels::TF32_WGMMA_ONE_WARPGROUP_THREADS,
            _ => kernels::WHORL_THREADS,
        };
        Launch {
            grid: [pixels.div_ceil(tile_p) as u32, n.div_ceil(tile_n) as u32, 1],
            block: [threads as u32, 1, 1],
            shared_bytes: 4 * shared_floats,
        }
    }
}

impl Tile for GemmTile {
    fn kernel_name(self) -> &'static str {
        use GemmTile::*;
        match self {
            Fp32Wide => "conv2d_gathered_gemm_wide",
            Fp32 => "conv2d_gathered_gemm",
            Fp32Pooled => "conv2d_gathered_gemm_pooled",
            Fp32Narrow => "conv2d_gathered_gemm_narrow",
            Tf32Wide => "conv2d_gathered_gemm_tf32_wide",
            Tf32WideLong => "conv2d_gathered_gemm_tf32_wide_long",
            Tf32WideFourWarps => "conv2d_gathered_gemm_tf32_wide_four_warps",
            Tf32WideFourWarpsLong => "conv2d_gathered_gemm_tf32_wide_four_warps_long",
            Tf32 => "conv2d_gathered_gemm_tf32",
            Tf32FourWarps => "conv2d_gathered_gemm_tf32_four_warps",
            Tf32Pooled => "conv2d_gathered_gemm_tf32_pooled",
            Tf32Narrow => "conv2d_gathered_gemm_tf32_narrow",
            Tf32NarrowFourWarps => "conv2d_gathered_gemm_tf32_narrow_four_warps",
            Tf32WgmmaWide => "conv2d_gathered_gemm_tf32_wgmma_wide",
            Tf32WgmmaWideOneWarpgroup => "conv2d_gathered_gemm_tf32_wgmma_wide_one_warpgroup",
            Tf32Wgmma => "conv2d_gathered_gemm_tf32_wgmma",
            Tf32WgmmaPooled => "conv2d_gathered_gemm_tf32_wgmma_pooled",
            Bf16Wide => "conv2d_gathered_gemm_bf16_wide",
            Bf16WideFourWarps => "conv2d_gathered_gemm_bf16_wide_four_warps",
            Bf16 => "conv2d_gathered_gemm_bf16",
            Bf16FourWarps => "conv2d_gathered_gemm_bf16_four_warps",
            Bf16Pooled => "conv2d_gathered_gemm_bf16_pooled",
            Bf16Narrow => "conv2d_gathered_gemm_bf16_narrow",
            Bf16NarrowFourWarps => "conv2d_gathered_gemm_bf16_narrow_four_warps",
        }
    }
}

/// What a GEMM's speed depends on: the gather's dimensions (grid batch, height, width; source
/// height, width, channels; window, stride) and window origin, the output's channels and
/// scatter stride, the precision it multiplies in and whether it pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GemmShape {
    pub gather: [i32; 8],
    pub origin: (i32, i32),
    pub n: usize,
    pub out_stride: usize,
    pub precision: Precision,
    pub pooling: bool,
}

impl Shape for GemmShape {
    /// E.g. "401408 x 128 GEMM over K = 1152 (TF32)".
    fn describe(&self) -> String {
        let [grid_n, grid_h, grid_w, _, _, src_c, window, ..] = self.gather.map(i64::from);
        let precision = self.precision.name().to_uppercase();
        format!(
            "{} x {} GEMM over K = {} ({precision})",
            grid_n * grid_h * grid_w,
            self.n,
            window * window * src_c
        )
    }
}

/// A compiled tile of the kernel-gradient partials (`window(p)[k] * second[p, c]` summed over
/// chunks of pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FilterTile {
    /// FP32, FILTER_TILE_K x FILTER_TILE_N.
    Fp32,
    /// FP32, FILTER_WIDE_TILE x FILTER_WIDE_TILE.
    Fp32Wide,
    /// TF32, 128 x 64 in eight warps of 32 x 32.
    Tf32,
    /// TF32, 128 x 128 in eight warps of 64 x 32.
    Tf32Wide,
    /// TF32, 128 x 128 in four warps of 64 x 64.
    Tf32WideFourWarps,
    /// TF32 on Hopper's warpgroup MMA (wgmma, sm_90a), 128 x 64 in two warpgroups of 64 x 64,
    /// B transposed in shared memory.
    Tf32Wgmma,
    /// The same, 128 x 128 in two warpgroups of 64 x 128.
    Tf32WgmmaWide,
    /// BF16, 128 x 64 in eight warps of 32 x 32.
    Bf16,
    /// BF16, 128 x 128 in eight warps of 64 x 32.
    Bf16Wide,
    /// BF16, 128 x 128 in four warps of 64 x 64.
    Bf16WideFourWarps,
}

/// The launch function every kernel-gradient partials kernel has: device, launch, src, the
/// gather's 8 dimensions and its origin, second, n, ones_row, pixels_per_chunk, partial.
pub type FilterKernel<D> = fn(
    &mut D,
    Launch,
    DevicePtr,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    DevicePtr,
    i32,
    i32,
    i32,
    DevicePtr,
) -> Result<()>;

impl FilterTile {
    /// The tiles partials may run on, the default first: in `precision` (TF32 and BF16 on
    /// tensor cores), with Hopper's warpgroup tiles too (TF32) where the device runs them
    /// (`warpgroups`), on the wide tile (128 columns and more) or not.
    pub fn candidates(precision: Precision, warpgroups: bool, wide: bool) -> Vec<FilterTile> {
        use FilterTile::*;
        use Precision as P;
        let (tiles, warpgroup_tiles): (&[FilterTile], &[FilterTile]) = match (precision, wide) {
            (P::Tf32, true) => (&[Tf32Wide, Tf32WideFourWarps], &[Tf32WgmmaWide]),
            (P::Tf32, false) => (&[Tf32], &[Tf32Wgmma]),
            (P::Bf16, true) => (&[Bf16Wide, Bf16WideFourWarps], &[]),
            (P::Bf16, false) => (&[Bf16], &[]),
            (P::Fp32, true) => (&[Fp32Wide], &[]),
            (P::Fp32, false) => (&[Fp32], &[]),
        };
        with_warpgroup_tiles(tiles, warpgroup_tiles, warpgroups)
    }

    /// Its typed launch function.
    pub fn kernel<D: Device>(self) -> FilterKernel<D> {
        use FilterTile::*;
        match self {
            Fp32 => kernels::conv2d_filter_partials,
            Fp32Wide => kernels::conv2d_filter_partials_wide,
            Tf32 => kernels::conv2d_filter_partials_tf32,
            Tf32Wide => kernels::conv2d_filter_partials_tf32_wide,
            Tf32WideFourWarps => kernels::conv2d_filter_partials_tf32_wide_four_warps,
            Tf32Wgmma => kernels::conv2d_filter_partials_tf32_wgmma,
            Tf32WgmmaWide => kernels::conv2d_filter_partials_tf32_wgmma_wide,
            Bf16 => kernels::conv2d_filter_partials_bf16,
            Bf16Wide => kernels::conv2d_filter_partials_bf16_wide,
            Bf16WideFourWarps => kernels::conv2d_filter_partials_bf16_wide_four_warps,
        }
    }

    /// Its launch over partials of `rows` x `columns` in `chunks` chunks.
    pub fn launch(self, rows: usize, columns: usize, chunks: usize) -> Launch {
        use FilterTile::*;
        use kernels::*;
        let (tile_rows, tile_columns, shared_floats) = match self {
            Fp32 => (FILTER_TILE_K, FILTER_TILE_N, FILTER_SHARED_FLOATS),
            Fp32Wide => (
                FILTER_WIDE_TILE,
                FILTER_WIDE_TILE,
                FILTER_WIDE_SHARED_FLOATS,
            ),
            Tf32 | Bf16 => (
                TF32_FILTER_ROWS,
                TF32_FILTER_COLUMNS,
                TF32_FILTER_SHARED_FLOATS,
            ),
            Tf32Wide | Tf32WideFourWarps | Bf16Wide | Bf16WideFourWarps => (
                TF32_FILTER_ROWS,
                TF32_FILTER_WIDE_COLUMNS,
                TF32_FILTER_WIDE_SHARED_FLOATS,
            ),
            Tf32Wgmma => (
                TF32_FILTER_ROWS,
                TF32_FILTER_COLUMNS,
                TF32_WGMMA_FILTER_SHARED_FLOATS,
            ),
            Tf32WgmmaWide => (
                TF32_FILTER_ROWS,
                TF32_FILTER_WIDE_COLUMNS,
                TF32_WGMMA_FILTER_WIDE_SHARED_FLOATS,
            ),
        };
        let threads = match self {
            Tf32WideFourWarps | Bf16WideFourWarps => TF32_FOUR_WARPS_THREADS,
            _ => WHORL_THREADS,
        };
        Launch {
            grid: [
                rows.div_ceil(tile_rows) as u32,
                columns.div_ceil(tile_columns) as u32,
                chunks as u32,
            ],
            block: [threads as u32, 1, 1],
            shared_bytes: 4 * shared_floats,
        }
    }
}

impl Tile for FilterTile {
    fn kernel_name(self) -> &'static str {
        use FilterTile::*;
        match self {
            Fp32 => "conv2d_filter_partials",
            Fp32Wide => "conv2d_filter_partials_wide",
            Tf32 => "conv2d_filter_partials_tf32",
            Tf32Wide => "conv2d_filter_partials_tf32_wide",
            Tf32WideFourWarps => "conv2d_filter_partials_tf32_wide_four_warps",
            Tf32Wgmma => "conv2d_filter_partials_tf32_wgmma",
            Tf32WgmmaWide => "conv2d_filter_partials_tf32_wgmma_wide",
            Bf16 => "conv2d_filter_partials_bf16",
            Bf16Wide => "conv2d_filter_partials_bf16_wide",
            Bf16WideFourWarps => "conv2d_filter_partials_bf16_wide_four_warps",
        }
    }
}

/// What kernel-gradient partials' speed depends on: the gather's dimensions (as
/// [`GemmShape`]'s) and origin, the partials' rows and columns, the pixels per chunk and the
/// chunks, the precision they multiply in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilterShape {
    pub gather: [i32; 8],
    pub origin: i32,
    pub rows: usize,
    pub columns: usize,
    pub pixels_per_chunk: usize,
    pub chunks: usize,
    pub precision: Precision,
}

impl Shape for FilterShape {
    /// E.g. "1153 x 128 kernel-gradient partials over 401408 pixels in 128 chunks (TF32)".
    fn describe(&self) -> String {
        let [grid_n, grid_h, grid_w, ..] = self.gather.map(i64::from);
        let precision = self.precision.name().to_uppercase();
        let chunks = match self.chunks {
            1 => "1 chunk".to_string(),
            chunks => format!("{chunks} chunks"),
        };
        format!(
            "{} x {} kernel-gradient partials over {} pixels in {chunks} ({precision})",
            self.rows,
            self.columns,
            grid_n * grid_h * grid_w,
        )
    }
}

/// How a shape with several candidate tiles picks one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TilePolicy {
    /// The first candidate: the emulator's default, since its timings say nothing about a GPU.
    Default,
    /// The candidate at this index, or the last where a shape has fewer: to check that every
    /// candidate gives the default's bits.
    Candidate(usize),
    /// The fastest candidate, timed at the shape's first use: a GPU's default.
    Timed,
}

/// A timed choice: the tile kept, and every candidate's seconds for the timed launches.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedTile<T> {
    pub tile: T,
    pub times: Vec<(T, f64)>,
}

impl<T: Tile> TimedTile<T> {
    /// E.g. "conv2d_gathered_gemm_tf32_wide_four_warps (0.801 ms; conv2d_gathered_gemm_tf32_wide
    /// 0.953 ms)": the kept kernel first, each time per launch.
    pub fn describe(&self, launches: usize) -> String {
        let ms = |seconds: f64| 1e3 * seconds / launches as f64;
        let kept = self.times.iter().find(|(t, _)| *t == self.tile);
        let others: Vec<String> = self
            .times
            .iter()
            .filter(|(t, _)| *t != self.tile)
            .map(|(t, s)| format!("{} {:.3} ms", t.kernel_name(), ms(*s)))
            .collect();
        format!(
            "{} ({:.3} ms; {})",
            self.tile.kernel_name(),
            kept.map_or(f64::NAN, |(_, s)| ms(*s)),
            others.join(", ")
        )
    }
}

/// The tile each shape of one kernel family runs on.
#[derive(Debug)]
pub struct TileChoices<S, T> {
    policy: TilePolicy,
    timed: HashMap<S, TimedTile<T>>,
}

impl<S: Shape, T: Tile> TileChoices<S, T> {
    pub fn new(policy: TilePolicy) -> Self {
        TileChoices {
            policy,
            timed: HashMap::new(),
        }
    }

    /// The tile of `shape` among its `candidates` (not empty), unless it must be timed first.
    pub fn pick(&self, shape: &S, candidates: &[T]) -> Option<T> {
        match (self.policy, candidates) {
            (_, [only]) | (TilePolicy::Default, [only, ..]) => Some(*only),
            (TilePolicy::Candidate(i), _) => candidates.get(i).or(candidates.last()).copied(),
            _ => self.timed.get(shape).map(|t| t.tile),
        }
    }

    /// Keeps the fastest of `times` (seconds per candidate) for `shape`, and returns it.
    pub fn keep_fastest(&mut self, shape: S, times: Vec<(T, f64)>) -> T {
        let tile = fastest(&times);
        self.timed.insert(shape, TimedTile { tile, times });
        tile
    }

    /// Every timed choice as a line, `SHAPE: KEPT (MS ms; OTHER MS ms, ...)`, for `launches`
    /// timed launches a candidate, in the shapes' order.
    pub fn describe(&self, launches: usize) -> Vec<String> {
        let mut all: Vec<_> = self.timed.iter().collect();
        all.sort_by_key(|(shape, _)| **shape);
        let line = |(shape, timed): (&S, &TimedTile<T>)| {
            format!("{}: {}", shape.describe(), timed.describe(launches))
        };
        all.into_iter().map(line).collect()
    }
}

/// The fastest of `times` (each candidate with its seconds); the earlier one on a tie.
pub fn fastest<T: Copy>(times: &[(T, f64)]) -> T {
    let mut best = times[0];
    for &(tile, seconds) in &times[1..] {
        if seconds < best.1 {
            best = (tile, seconds);
        }
    }
    best.0
}
