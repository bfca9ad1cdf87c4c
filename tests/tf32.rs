//! The TF32 tensor-core convolutions (kernels/conv2d_tf32.cu: the gathered GEMM of forward and
//! backward-data, and the kernel-gradient partials), run by the emulator, whose
//! mma.sync truncates any operand not rounded to TF32 and whose cp.async destinations hold NaN
//! until their wait: against the float64 reference within TF32's bound, and visibly rounded
//! (so the tensor-core path, not the FP32 one, ran).

mod common;

use common::{conv, nhwc, parity, tf32, tiles};
use whorl::backend::gpu::GpuBackend;
use whorl::backend::gpu::emulator::Emulator;
use whorl::backend::gpu::gemm_tiles::{self, GemmTile, TilePolicy};
use whorl::backend::reference::ReferenceBackend;
use whorl::backend::{Backend, ConvInput, Precision};
use whorl::model::Activation;

/// TF32 keeps 11 significant bits, so each rounded operand errs by at most 2^-11 relative and a
/// product by 2^-10; a sum of many products errs by less, relative to its own scale (2-5e-4 in
/// these cases). A forgotten rounding is caught by the emulator's broken-kernel tests, where
/// truncated operands bias a long positive sum far beyond this.
const TF32_BOUND: f64 = 1.0 / 1024.0;

#[test]
fn tf32_convolutions_match_the_reference_within_the_tf32_bound() {
    // Channel counts that are multiples of 4, odd image sizes, partial tiles of pixels and of
    // channels (68 > 64), K spanning several 16-wide slices, and an upsampled input.
    let cases = [
        (nhwc(2, 9, 11, 8), 12, ConvInput::Direct),
        (nhwc(3, 13, 6, 36), 68, ConvInput::Direct),
        (nhwc(2, 7, 5, 16), 20, ConvInput::Upsampled2),
        (nhwc(1, 1, 1, 4), 4, ConvInput::Upsampled2),
    ];
    for (case, (input, cout, read)) in cases.into_iter().enumerate() {
        let conv = conv(input, cout, read, Activation::Relu);
        let inputs = parity::conv_inputs(&conv, 100 + case as u64);
        let mut tf32 = GpuBackend::new(Emulator::new()).with_precision(Precision::Tf32);
        assert_eq!(tf32.precision(), Precision::Tf32);
        assert!(tf32.name().contains("TF32"), "{}", tf32.name());
        let got = parity::conv_outputs(&mut tf32, &conv, &inputs);
        let expected = parity::conv_outputs(&mut ReferenceBackend, &conv, &inputs);
        let errors = parity::errors(&parity::CONV_OUTPUTS, &got, &expected);
        let cin = input.channels;
        let context = format!("{input:?} -> {cout}, {read:?}: {errors:?}");
        for (name, error) in &errors {
            assert!(*error < TF32_BOUND, "{name}: {context}");
        }
        for (name, error) in &errors[..3] {
            assert!(
                *error > 2f64.powi(-16),
                "{name} shows no TF32 rounding, so it ran in FP32 ({cin} channels): {context}"
            );
        }
    }
}

#[test]
fn tf32_pooling_in_the_gemm_epilogue_gives_the_bits_of_the_pooling_in_turn() {
    let tf32 = || GpuBackend::new(Emulator::new()).with_precision(Precision::Tf32);
    parity::check_pooled_epilogue(tf32, TF32_BOUND);
}

#[test]
fn the_warpgroup_tile_pools_in_its_epilogue_with_the_bits_of_the_pooling_in_turn() {
    // The pooling tiles are [conv2d_gathered_gemm_tf32_pooled, the warpgroup one]; pooling in
    // turn runs the plain 33-64 channel candidate 1 (four warps), whose bits it must give.
    let warpgroup = || tf32_tiles(TilePolicy::Candidate(1));
    parity::check_pooled_epilogue(warpgroup, TF32_BOUND);
    let conv = &parity::pooled_epilogue_cases()[0];
    let [x, _, params] = parity::conv_inputs(conv, 70);
    let mut backend = warpgroup();
    parity::forward_and_pool_outputs(&mut backend, conv, &[x, params], false);
    let kernel = "conv2d_gathered_gemm_tf32_wgmma_pooled";
    assert!(
        backend.device().launches(kernel) > 0,
        "{kernel} did not run"
    );
}

#[test]
fn tf32_convolutions_multiply_exactly_the_operands_rounded_to_tf32() {
    // What a TF32 pass must compute: the float64 convolution of x, dz and the kernel each
    // rounded to TF32 (the bias is added in FP32), up to FP32 accumulation. An operand left
    // unrounded, which the tensor core truncates, errs by ~2^-12 relative and fails this bound.
    // Direct convolutions only: the upsampled passes round sums of taps and of dz as well.
    // Output channels 12, 68 and 72 and input channels 8, 36 and 28 reach the 256 x 32,
    // 128 x 128 and 256 x 64 tiles of the gathered GEMM; the kernel gradients (9 cin + 1 rows
    // x cout columns) the 128 x 64 and 128 x 128 tiles.
    let cases = [
        (nhwc(2, 9, 11, 8), 12),
        (nhwc(3, 13, 6, 36), 68),
        (nhwc(2, 7, 9, 28), 72),
    ];
    for (case, (input, cout)) in cases.into_iter().enumerate() {
        let conv = conv(input, cout, ConvInput::Direct, Activation::Relu);
        let inputs = parity::conv_inputs(&conv, 200 + case as u64);
        let [x, dz, params] = &inputs;
        let mut rounded_params = params.clone();
        for w in &mut rounded_params[conv.slot.weight.clone()] {
            *w = tf32(*w);
        }
        let round = |v: &Vec<f32>| v.iter().map(|&e| tf32(e)).collect::<Vec<f32>>();
        let rounded = [round(x), round(dz), rounded_params];
        let mut tf32_backend = GpuBackend::new(Emulator::new()).with_precision(Precision::Tf32);
        let got = parity::conv_outputs(&mut tf32_backend, &conv, &inputs);
        let expected = parity::conv_outputs(&mut ReferenceBackend, &conv, &rounded);
        let errors = parity::errors(&parity::CONV_OUTPUTS, &got, &expected);
        parity::assert_within(&errors, 2f64.powi(-16), &format!("{input:?} -> {cout}"));
    }
}

#[test]
fn channel_counts_that_are_not_multiples_of_4_fall_back_to_exact_fp32() {
    let conv = conv(nhwc(2, 6, 5, 3), 5, ConvInput::Direct, Activation::Sigmoid);
    let inputs = parity::conv_inputs(&conv, 7);
    let mut tf32 = GpuBackend::new(Emulator::new()).with_precision(Precision::Tf32);
    let got = parity::conv_outputs(&mut tf32, &conv, &inputs);
    let expected = parity::conv_outputs(&mut ReferenceBackend, &conv, &inputs);
    let errors = parity::errors(&parity::CONV_OUTPUTS, &got, &expected);
    parity::assert_within(&errors, 1e-5, "3 -> 5 channels");
}

/// TF32 tiles picked by `policy`, Hopper's warpgroup tiles among the candidates (the emulator
/// runs them).
fn tf32_tiles(policy: TilePolicy) -> GpuBackend<Emulator> {
    GpuBackend::new(Emulator::new())
        .with_precision(Precision::Tf32)
        .with_warpgroup_tiles(true)
        .with_tile_policy(policy)
}

/// The kernels of the tile families, eight warps first: the gathered GEMM's for more than 64
/// output channels (and on slices of 32 of K, and in warpgroups), for 33-64 (and in
/// warpgroups) and for at most 32, and the kernel-gradient partials' wide and 64-column ones
/// (and in warpgroups).
const TILE_FAMILIES: [&[&str]; 5] = [
    &[
        "conv2d_gathered_gemm_tf32_wide",
        "conv2d_gathered_gemm_tf32_wide_long",
        "conv2d_gathered_gemm_tf32_wide_four_warps",
        "conv2d_gathered_gemm_tf32_wide_four_warps_long",
        "conv2d_gathered_gemm_tf32_wgmma_wide",
        "conv2d_gathered_gemm_tf32_wgmma_wide_one_warpgroup",
    ],
    &[
        "conv2d_gathered_gemm_tf32",
        "conv2d_gathered_gemm_tf32_four_warps",
        "conv2d_gathered_gemm_tf32_wgmma",
    ],
    &[
        "conv2d_gathered_gemm_tf32_narrow",
        "conv2d_gathered_gemm_tf32_narrow_four_warps",
    ],
    &[
        "conv2d_filter_partials_tf32_wide",
        "conv2d_filter_partials_tf32_wide_four_warps",
        "conv2d_filter_partials_tf32_wgmma_wide",
    ],
    &[
        "conv2d_filter_partials_tf32",
        "conv2d_filter_partials_tf32_wgmma",
    ],
];

#[test]
fn every_candidate_tile_gives_the_bits_of_the_eight_warp_tiles() {
    tiles::check_candidates_agree(tf32_tiles, &TILE_FAMILIES);
}

#[test]
fn timed_tiles_are_chosen_once_per_shape_inside_a_running_timer_and_keep_the_bits() {
    let conv = conv(nhwc(2, 13, 11, 36), 68, ConvInput::Direct, Activation::Relu);
    let inputs = parity::conv_inputs(&conv, 400);
    let expected = parity::conv_outputs(&mut tf32_tiles(TilePolicy::Default), &conv, &inputs);
    let mut timed = tf32_tiles(TilePolicy::Timed);
    // The candidates are timed inside the caller's timer, as a benchmark's warm-up does.
    let (got, seconds) = timed
        .time(|b| Ok(parity::conv_outputs(b, &conv, &inputs)))
        .unwrap();
    assert!(seconds > 0.0);
    parity::assert_same_bits(&got, &expected, "timed tiles");
    let choices = timed.timed_choices();
    // "<shape>: <kept kernel> (<ms>; <each other kernel> <ms>)": forward on the 128 x 128
    // tiles, backward-data (36 columns) on the 256 x 64 ones, the kernel gradient (9 x 36 + 1
    // rows of 68 columns) on the wide partials tiles.
    let shapes = [
        ("286 x 68 GEMM over K = 324 (TF32): ", TILE_FAMILIES[0]),
        ("286 x 36 GEMM over K = 612 (TF32): ", TILE_FAMILIES[1]),
        (
            "325 x 68 kernel-gradient partials over 286 pixels in 1 chunk (TF32): ",
            TILE_FAMILIES[3],
        ),
    ];
    assert_eq!(choices.len(), shapes.len(), "{choices:?}");
    for (shape, family) in shapes {
        let line = choices.iter().find(|c| c.starts_with(shape));
        let line = line.unwrap_or_else(|| panic!("{shape} not among {choices:?}"));
        for kernel in family {
            let name = format!("{kernel} ");
            assert!(line.contains(&name), "{kernel} missing from {line}");
        }
        assert_eq!(line.matches(" ms").count(), family.len(), "{line}");
    }
    // The second time, each shape runs its choice once: no candidate is timed again.
    let launched = |b: &mut GpuBackend<Emulator>| -> usize {
        let kernels = TILE_FAMILIES.iter().flat_map(|family| family.iter());
        kernels.map(|k| b.device().launches(k)).sum()
    };
    let before = launched(&mut timed);
    let again = parity::conv_outputs(&mut timed, &conv, &inputs);
    assert_eq!(launched(&mut timed) - before, shapes.len());
    parity::assert_same_bits(&again, &expected, "the timed tiles, again");
}

#[test]
fn the_fastest_candidate_wins_a_tie_goes_to_the_default_and_both_times_are_reported() {
    let (eight, four) = (GemmTile::Tf32Wide, GemmTile::Tf32WideFourWarps);
    assert_eq!(gemm_tiles::fastest(&[(eight, 2e-3), (four, 1e-3)]), four);
    assert_eq!(gemm_tiles::fastest(&[(eight, 1e-3), (four, 2e-3)]), eight);
    assert_eq!(gemm_tiles::fastest(&[(eight, 1e-3), (four, 1e-3)]), eight);
    let timed = gemm_tiles::TimedTile {
        tile: four,
        times: vec![(eight, 2e-3), (four, 1e-3)],
    };
    assert_eq!(
        timed.describe(2),
        "conv2d_gathered_gemm_tf32_wide_four_warps (0.500 ms; conv2d_gathered_gemm_tf32_wide \
         1.000 ms)"
    );
}
