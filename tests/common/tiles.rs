//! The gathered GEMM's candidate tiles (src/backend/gpu/gemm_tiles.rs) against each other in
//! the emulator: a backend may run any candidate of a shape, so they must give the same bits.

use whorl::backend::ConvInput;
use whorl::backend::gpu::GpuBackend;
use whorl::backend::gpu::emulator::Emulator;
use whorl::backend::gpu::gemm_tiles::{GemmTile, TilePolicy};
use whorl::model::Activation;

use super::{conv, nhwc, parity};

/// Forward and backward-data on GEMMs of both more than 64 columns and 33-64, odd shapes with
/// partial tiles of pixels and channels: 36 -> 100 runs its forward pass on the 128 x 128 tiles
/// (100 columns reach the last quarter of the tile, where a four-warp tile's second warp
/// column ends) and its backward-data (36 columns) on the 33-64 ones; the upsampled 104 -> 40
/// its four phase GEMMs (scattered at stride 2) on the 33-64 tiles and its backward-data over
/// dz's box sums (104 columns) on the 128 x 128 ones.
pub fn check_candidates_agree(
    new: impl Fn(TilePolicy) -> GpuBackend<Emulator>,
    families: &[(GemmTile, GemmTile)],
) {
    let cases = [
        (nhwc(2, 13, 11, 36), 100, ConvInput::Direct),
        (nhwc(1, 9, 7, 104), 40, ConvInput::Upsampled2),
    ];
    for (case, (input, cout, read)) in cases.into_iter().enumerate() {
        let conv = conv(input, cout, read, Activation::Relu);
        let inputs = parity::conv_inputs(&conv, 300 + case as u64);
        let (mut first, mut last) = (new(TilePolicy::Default), new(TilePolicy::Last));
        let expected = parity::conv_outputs(&mut first, &conv, &inputs);
        let got = parity::conv_outputs(&mut last, &conv, &inputs);
        let context = format!("{input:?} -> {cout}, {read:?}");
        parity::assert_same_bits(&got, &expected, &context);
        // Each backend ran its own candidate of every family.
        for &(default, other) in families {
            let (default, other) = (default.kernel_name(), other.kernel_name());
            assert!(first.device().launches(default) > 0, "{context}: {default}");
            assert!(last.device().launches(other) > 0, "{context}: {other}");
            assert_eq!(last.device().launches(default), 0, "{context}: {default}");
        }
    }
}
