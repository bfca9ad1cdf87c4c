//! The TF32 and BF16 tensor-core convolutions (kernels/conv2d_tf32.cu: the gathered GEMM of
//! forward and backward-data, and the kernel-gradient partials), run by the emulator, whose
//! mma.sync truncates any operand not rounded to TF32 and whose cp.async destinations hold NaN
//! until their wait: against the float64 reference within TF32's (BF16's) bound, and visibly
//! rounded (so the tensor-core path, not the FP32 one, ran).

mod common;

use common::{bf16, conv, nhwc, parity, tf32, tiles};
use whorl::backend::cpu::CpuBackend;
use whorl::backend::gpu::GpuBackend;
use whorl::backend::gpu::emulator::Emulator;
use whorl::backend::gpu::gemm_tiles::{self, GemmTile, TilePolicy};
use whorl::backend::reference::ReferenceBackend;
use whorl::backend::{Backend, ConvInput, Precision};
use whorl::graph::Network;
use whorl::model::{Activation, Architecture};

/// TF32 keeps 11 significant bits, so each rounded operand errs by at most 2^-11 relative and a
/// product by 2^-10; a sum of many products errs by less, relative to its own scale (2-5e-4 in
/// these cases). A forgotten rounding is caught by the emulator's broken-kernel tests, where
/// truncated operands bias a long positive sum far beyond this.
const TF32_BOUND: f64 = 1.0 / 1024.0;

/// BF16 keeps 8 significant bits: each rounded operand errs by at most 2^-8 relative and a
/// product by 2^-7; the sums err by less (1-4e-3 in these cases).
const BF16_BOUND: f64 = 1.0 / 128.0;

#[test]
fn tf32_convolutions_match_the_reference_within_the_tf32_bound() {
    check_against_the_reference(Precision::Tf32, TF32_BOUND, 2f64.powi(-16));
}

#[test]
fn bf16_convolutions_match_the_reference_within_the_bf16_bound() {
    // Errors above TF32's bound show BF16's rounding, not TF32's.
    check_against_the_reference(Precision::Bf16, BF16_BOUND, TF32_BOUND / 4.0);
}

/// Convolutions in `precision` (TF32 or BF16) against the float64 reference: within `bound`,
/// and the three passes above `rounded` (so they ran on the tensor cores in that precision).
fn check_against_the_reference(precision: Precision, bound: f64, rounded: f64) {
    // Channel counts that are multiples of 4, odd image sizes, partial tiles of pixels and of
    // channels (68 > 64), K spanning several 16-wide slices, and an upsampled input.
    let cases = [
        (nhwc(2, 9, 11, 8), 12, ConvInput::Direct),
        (nhwc(3, 13, 6, 36), 68, ConvInput::Direct),
        (nhwc(2, 7, 5, 16), 20, ConvInput::Upsampled2),
        (nhwc(1, 1, 1, 4), 4, ConvInput::Upsampled2),
    ];
    let name = precision.name().to_uppercase();
    for (case, (input, cout, read)) in cases.into_iter().enumerate() {
        let conv = conv(input, cout, read, Activation::Relu);
        let inputs = parity::conv_inputs(&conv, 100 + case as u64);
        let mut backend = GpuBackend::new(Emulator::new()).with_precision(precision);
        assert_eq!(backend.precision(), precision);
        assert!(backend.name().contains(&name), "{}", backend.name());
        let got = parity::conv_outputs(&mut backend, &conv, &inputs);
        let expected = parity::conv_outputs(&mut ReferenceBackend, &conv, &inputs);
        let errors = parity::errors(&parity::CONV_OUTPUTS, &got, &expected);
        let cin = input.channels;
        let context = format!("{input:?} -> {cout}, {read:?}: {errors:?}");
        println!("{name} {context}");
        for (output, error) in &errors {
            assert!(*error < bound, "{output}: {context}");
        }
        for (output, error) in &errors[..3] {
            assert!(
                *error > rounded,
                "{output} shows no {name} rounding ({cin} channels): {context}"
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
fn bf16_pooling_in_the_gemm_epilogue_gives_the_bits_of_the_pooling_in_turn() {
    let bf16 = || GpuBackend::new(Emulator::new()).with_precision(Precision::Bf16);
    parity::check_pooled_epilogue(bf16, BF16_BOUND);
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
    // An operand left unrounded, which the tensor core truncates, errs by ~2^-12 relative and
    // fails this bound.
    check_exact_operands(Precision::Tf32, tf32);
}

#[test]
fn bf16_convolutions_multiply_exactly_the_operands_rounded_to_bf16() {
    // A fragment paired wrongly multiplies other operands, and fails this bound by far.
    check_exact_operands(Precision::Bf16, bf16);
}

/// What a pass in `precision` must compute: the float64 convolution of x, dz and the kernel
/// each rounded as `round` does (the bias is added in FP32), up to FP32 accumulation.
/// Direct convolutions only: the upsampled passes round sums of taps and of dz as well.
/// Output channels 12, 68 and 72 and input channels 8, 36 and 28 reach the 256 x 32,
/// 128 x 128 and 256 x 64 tiles of the gathered GEMM; the kernel gradients (9 cin + 1 rows
/// x cout columns) the 128 x 64 and 128 x 128 tiles.
fn check_exact_operands(precision: Precision, round: fn(f32) -> f32) {
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
            *w = round(*w);
        }
        let round_all = |v: &Vec<f32>| v.iter().map(|&e| round(e)).collect::<Vec<f32>>();
        let rounded = [round_all(x), round_all(dz), rounded_params];
        let mut backend = GpuBackend::new(Emulator::new()).with_precision(precision);
        let got = parity::conv_outputs(&mut backend, &conv, &inputs);
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

/// The BF16 kernels of the tile families with several candidates, eight warps first.
const BF16_TILE_FAMILIES: [&[&str]; 4] = [
    &[
        "conv2d_gathered_gemm_bf16_wide",
        "conv2d_gathered_gemm_bf16_wide_four_warps",
    ],
    &[
        "conv2d_gathered_gemm_bf16",
        "conv2d_gathered_gemm_bf16_four_warps",
    ],
    &[
        "conv2d_gathered_gemm_bf16_narrow",
        "conv2d_gathered_gemm_bf16_narrow_four_warps",
    ],
    &[
        "conv2d_filter_partials_bf16_wide",
        "conv2d_filter_partials_bf16_wide_four_warps",
    ],
];

#[test]
fn every_bf16_candidate_tile_gives_the_bits_of_the_eight_warp_tiles() {
    let bf16_tiles = |policy| {
        GpuBackend::new(Emulator::new())
            .with_precision(Precision::Bf16)
            .with_tile_policy(policy)
    };
    tiles::check_candidates_agree(bf16_tiles, &BF16_TILE_FAMILIES);
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

#[test]
fn emulated_training_on_tensor_cores_follows_the_cpu_engine() {
    // The whole model, a few RMSprop steps at 12x12: TF32 and BF16 losses stay within their
    // rounding of the CPU engine's FP32 ones, the GEMMs on that precision's kernels.
    let arch = Architecture::reference();
    let (size, batch) = (12, 3);
    let params = arch.glorot_uniform(9);
    let batches: Vec<Vec<f32>> = (0..3)
        .map(|step| common::random(batch * size * size, 0.0, 1.0, 60 + step))
        .collect();
    let mut cpu =
        Network::new(CpuBackend::new(), arch.clone(), size, size, batch, &params).unwrap();
    let expected: Vec<f64> = batches.iter().map(|b| cpu.train_step(b).unwrap()).collect();
    for (precision, bound, kernel) in [
        (Precision::Tf32, 1e-4, "conv2d_gathered_gemm_tf32_wide"),
        (Precision::Bf16, 1e-3, "conv2d_gathered_gemm_bf16_wide"),
    ] {
        let backend = GpuBackend::new(Emulator::new()).with_precision(precision);
        let mut gpu = Network::new(backend, arch.clone(), size, size, batch, &params).unwrap();
        for (step, (images, &b)) in batches.iter().zip(&expected).enumerate() {
            let a = gpu.train_step(images).unwrap();
            println!("{precision:?} step {step}: {a} (CPU {b})");
            assert!(
                (a - b).abs() < bound * b,
                "{precision:?} step {step}: {a} vs the CPU's {b}"
            );
        }
        let launches = gpu.backend().device().launches(kernel);
        assert!(launches > 0, "{precision:?}: {kernel} did not run");
    }
}
