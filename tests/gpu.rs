//! On a real GPU: every kernel against the float64 reference at small odd shapes and against
//! the CPU engine at the model's own shapes (batch 128, 224x224), and whole training steps
//! against the CPU engine. Marked ignored, since CI has no GPU; on a GPU machine run
//!
//!     cargo test --release --test gpu -- --ignored
//!
//! (or scripts/gpu-check.sh, which also runs training, benchmarks and the PyTorch baseline).

mod common;

use common::{
    CONV_CASES, POOLED_CASES, conv, nhwc, parity, pipelined_losses, random, relative_error, widen,
};
use whorl::backend::cpu::CpuBackend;
use whorl::backend::gpu::cuda::CudaDevice;
use whorl::backend::gpu::gemm_tiles::TilePolicy;
use whorl::backend::gpu::{Device, GpuBackend};
use whorl::backend::reference::ReferenceBackend;
use whorl::backend::{Backend, ConvInput, Precision};
use whorl::graph::{Network, convolutions};
use whorl::model::{Activation, Architecture};

fn gpu() -> GpuBackend<CudaDevice> {
    GpuBackend::new(CudaDevice::new(0).expect("these tests need a CUDA GPU and driver"))
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu -- --ignored"]
fn gpu_kernels_match_the_reference_at_small_shapes() {
    for (case, &(input, cout)) in CONV_CASES.iter().enumerate() {
        for read in [ConvInput::Direct, ConvInput::Upsampled2] {
            let conv = conv(input, cout, read, Activation::Sigmoid);
            let inputs = parity::conv_inputs(&conv, 10 * case as u64);
            let got = parity::conv_outputs(&mut gpu(), &conv, &inputs);
            let expected = parity::conv_outputs(&mut ReferenceBackend, &conv, &inputs);
            let errors = parity::errors(&parity::CONV_OUTPUTS, &got, &expected);
            parity::assert_within(&errors, 1e-5, &format!("{conv:?}"));
        }
    }
    for input in [nhwc(1, 2, 2, 1), nhwc(3, 8, 14, 33)] {
        let got = parity::other_outputs(&mut gpu(), input, 1);
        let expected = parity::other_outputs(&mut ReferenceBackend, input, 1);
        let errors = parity::errors(&parity::OTHER_OUTPUTS, &got, &expected);
        parity::assert_within(&errors, 1e-6, &format!("{input:?}"));
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu -- --ignored"]
fn gpu_pooled_convolution_kernels_match_the_reference() {
    for (case, &(input, cout)) in POOLED_CASES.iter().enumerate() {
        for activation in [Activation::Relu, Activation::Sigmoid] {
            let conv = conv(input, cout, ConvInput::Direct, activation);
            let inputs = parity::conv_inputs(&conv, 20 * case as u64);
            let got = parity::pooled_outputs(&mut gpu(), &conv, &inputs);
            let expected = parity::pooled_outputs(&mut ReferenceBackend, &conv, &inputs);
            let errors = parity::errors(&parity::POOLED_OUTPUTS, &got, &expected);
            parity::assert_within(&errors, 1e-5, &format!("{conv:?}"));
            // Deterministic: the same bits on a second run.
            let again = parity::pooled_outputs(&mut gpu(), &conv, &inputs);
            assert_eq!(parity::bits(&got), parity::bits(&again), "{conv:?}");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu -- --ignored"]
fn gpu_fused_upsampled_backward_matches_the_reference_and_the_cpu_engine() {
    for (case, conv) in parity::fused_backward_cases().iter().enumerate() {
        for x_activation in parity::X_ACTIVATIONS {
            let inputs = parity::fused_backward_inputs(conv, x_activation, 30 * case as u64);
            let got = parity::fused_backward_outputs(&mut gpu(), conv, &inputs, x_activation);
            let expected =
                parity::fused_backward_outputs(&mut ReferenceBackend, conv, &inputs, x_activation);
            let errors = parity::errors(&parity::FUSED_BACKWARD_OUTPUTS, &got, &expected);
            parity::assert_within(&errors, 1e-5, &format!("{x_activation:?}, {conv:?}"));
            // Deterministic: the same bits on a second run.
            let again = parity::fused_backward_outputs(&mut gpu(), conv, &inputs, x_activation);
            assert_eq!(
                parity::bits(&got),
                parity::bits(&again),
                "{x_activation:?}, {conv:?}"
            );
        }
    }
    // conv6 at the model's shapes, its input conv5's relu output, against the CPU engine.
    for batch in [1, 128] {
        let conv6 = convolutions(&Architecture::reference(), 224, 224, batch)
            .unwrap()
            .into_iter()
            .find(|conv| conv.slot.name == "conv6")
            .unwrap();
        assert_eq!(
            (conv6.read, conv6.slot.out_channels),
            (ConvInput::Upsampled2, 1)
        );
        let relu = Some(Activation::Relu);
        let inputs = parity::fused_backward_inputs(&conv6, relu, batch as u64);
        let got = parity::fused_backward_outputs(&mut gpu(), &conv6, &inputs, relu);
        let expected =
            parity::fused_backward_outputs(&mut CpuBackend::new(), &conv6, &inputs, relu);
        let errors = parity::errors(&parity::FUSED_BACKWARD_OUTPUTS, &got, &expected);
        parity::assert_within(&errors, 1e-4, &format!("conv6 at batch {batch}"));
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu -- --ignored"]
fn gpu_scored_output_convolution_matches_the_reference_and_the_operations_in_turn() {
    parity::check_scored(gpu, 1e-5);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu -- --ignored"]
fn gpu_pooling_in_the_gemm_epilogue_gives_the_bits_of_the_pooling_in_turn() {
    parity::check_pooled_epilogue(gpu, 1e-5);
    parity::check_pooled_epilogue(|| gpu().with_precision(Precision::Tf32), 1.0 / 1024.0);
    parity::check_pooled_epilogue(|| gpu().with_precision(Precision::Bf16), 1.0 / 128.0);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu -- --ignored"]
fn tf32_convolutions_match_the_cpu_engine_at_the_model_shapes_within_2_to_the_minus_11() {
    check_against_the_cpu_engine_at_the_model_shapes(Precision::Tf32, 1.0 / 2048.0);
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu -- --ignored"]
fn bf16_convolutions_match_the_cpu_engine_at_the_model_shapes_within_2_to_the_minus_7() {
    check_against_the_cpu_engine_at_the_model_shapes(Precision::Bf16, 1.0 / 128.0);
}

/// Every model convolution at batch 8 in `precision` against the CPU engine, within `bound`;
/// the errors are printed.
fn check_against_the_cpu_engine_at_the_model_shapes(precision: Precision, bound: f64) {
    for conv in convolutions(&Architecture::reference(), 224, 224, 8).unwrap() {
        let inputs = parity::conv_inputs(&conv, 5);
        let mut backend = gpu().with_precision(precision);
        let got = parity::conv_outputs(&mut backend, &conv, &inputs);
        let expected = parity::conv_outputs(&mut CpuBackend::new(), &conv, &inputs);
        let errors = parity::errors(&parity::CONV_OUTPUTS, &got, &expected);
        let name = format!("{} in {}", conv.slot.name, precision.name().to_uppercase());
        println!("{name}: {errors:?}");
        parity::assert_within(&errors, bound, &name);
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu -- --ignored"]
fn warpgroup_tiles_match_the_cpu_engine_at_the_model_shapes_within_2_to_the_minus_11() {
    // Hopper's wgmma tiles (compute_90a), each model convolution's last candidate where it has
    // one: within TF32's bound of the CPU engine, and whether they give the mma.sync tiles'
    // bits (which decides whether training may time them against each other) is printed.
    let test = "warpgroup_tiles_match_the_cpu_engine_at_the_model_shapes_within_2_to_the_minus_11";
    if !gpu().device().runs_warpgroup_mma() {
        common::skipped(
            test,
            "this GPU does not run the warpgroup tiles (sm_90 only)",
        );
        return;
    }
    for conv in convolutions(&Architecture::reference(), 224, 224, 8).unwrap() {
        let inputs = parity::conv_inputs(&conv, 7);
        let tf32 = || gpu().with_precision(Precision::Tf32);
        let mut warpgroups = tf32()
            .with_warpgroup_tiles(true)
            .with_tile_policy(TilePolicy::Candidate(usize::MAX));
        let got = parity::conv_outputs(&mut warpgroups, &conv, &inputs);
        let expected = parity::conv_outputs(&mut CpuBackend::new(), &conv, &inputs);
        let errors = parity::errors(&parity::CONV_OUTPUTS, &got, &expected);
        let name = format!("{} on the warpgroup tiles", conv.slot.name);
        parity::assert_within(&errors, 1.0 / 2048.0, &name);
        let mma_sync = parity::conv_outputs(&mut tf32(), &conv, &inputs);
        let same = parity::bits(&got) == parity::bits(&mma_sync);
        let verdict = if same { "give" } else { "differ from" };
        println!("{name}: {verdict} the mma.sync tiles' bits");
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu -- --ignored"]
fn gpu_tile_candidates_give_the_same_bits_and_the_timed_choices_are_reported() {
    // Every model convolution at batch 8 and an odd one with partial tiles, in every
    // precision: the default tiles, every other candidate and the tiles the backend times
    // give the same bits.
    let mut convs = convolutions(&Architecture::reference(), 224, 224, 8).unwrap();
    convs.push(conv(
        nhwc(2, 13, 11, 36),
        100,
        ConvInput::Direct,
        Activation::Relu,
    ));
    for precision in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
        let new = |policy| gpu().with_precision(precision).with_tile_policy(policy);
        let mut timed = new(TilePolicy::Timed);
        for conv in &convs {
            let inputs = parity::conv_inputs(conv, 6);
            let default = parity::conv_outputs(&mut new(TilePolicy::Default), conv, &inputs);
            for index in 1..3 {
                let mut other = new(TilePolicy::Candidate(index));
                let got = parity::conv_outputs(&mut other, conv, &inputs);
                let name = format!("{} in {precision:?}, candidate {index}", conv.slot.name);
                parity::assert_same_bits(&got, &default, &name);
            }
            let chosen = parity::conv_outputs(&mut timed, conv, &inputs);
            let name = format!("{} in {precision:?}: timed tiles", conv.slot.name);
            parity::assert_same_bits(&chosen, &default, &name);
        }
        let choices = timed.timed_choices();
        println!("timed tiles in {precision:?}: {choices:#?}");
        // conv4's forward pass on tensor cores; in FP32, where conv2-conv4 run by Winograd,
        // conv5's backward-data over the box sums (K = 9 x 64).
        let (k, pass) = match precision {
            Precision::Tf32 | Precision::Bf16 => (1152, "conv4's forward"),
            Precision::Fp32 => (576, "conv5's backward-data"),
        };
        assert!(
            choices
                .iter()
                .any(|c| c.contains(&format!("GEMM over K = {k}"))),
            "{pass} GEMM was not timed: {choices:?}"
        );
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu -- --ignored"]
fn gpu_kernels_match_the_cpu_engine_at_the_model_shapes() {
    for batch in [1, 128] {
        for conv in convolutions(&Architecture::reference(), 224, 224, batch).unwrap() {
            let inputs = parity::conv_inputs(&conv, batch as u64);
            let got = parity::conv_outputs(&mut gpu(), &conv, &inputs);
            let expected = parity::conv_outputs(&mut CpuBackend::new(), &conv, &inputs);
            let errors = parity::errors(&parity::CONV_OUTPUTS, &got, &expected);
            parity::assert_within(
                &errors,
                1e-4,
                &format!("{} at batch {batch}", conv.slot.name),
            );
        }
        let input = nhwc(batch, 224, 224, 32);
        let got = parity::other_outputs(&mut gpu(), input, 3);
        let expected = parity::other_outputs(&mut CpuBackend::new(), input, 3);
        let errors = parity::errors(&parity::OTHER_OUTPUTS, &got, &expected);
        parity::assert_within(&errors, 1e-5, &format!("{input:?}"));
    }
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test gpu -- --ignored"]
fn gpu_training_steps_follow_the_cpu_engine() {
    for (size, batch, steps) in [(20, 3, 4), (224, 1, 3), (224, 128, 2)] {
        let arch = Architecture::reference();
        let params = arch.glorot_uniform(13);
        let mut on_gpu = Network::new(gpu(), arch.clone(), size, size, batch, &params).unwrap();
        let mut on_cpu = Network::new(CpuBackend::new(), arch, size, size, batch, &params).unwrap();
        // As training runs: each batch uploaded asynchronously while the step before runs.
        let batches: Vec<Vec<f32>> = (0..steps)
            .map(|step| random(batch * size * size, 0.0, 1.0, step))
            .collect();
        let losses = pipelined_losses(&mut on_gpu, &batches);
        for (step, (images, &a)) in batches.iter().zip(&losses).enumerate() {
            let b = on_cpu.train_step(images).unwrap();
            assert!(
                (a - b).abs() < 1e-4 * b,
                "{size}x{size} batch {batch} step {step}: {a} vs {b}"
            );
        }
        let error = relative_error(&on_gpu.params().unwrap(), &widen(&on_cpu.params().unwrap()));
        assert!(
            error < 1e-3,
            "{size}x{size} batch {batch}: weights differ by {error:e}"
        );
    }
}
