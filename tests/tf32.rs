//! The TF32 tensor-core convolutions (kernels/conv2d_tf32.cu: the gathered GEMM of forward and
//! backward-data, and the kernel-gradient partials), run by the emulator, whose
//! mma.sync truncates any operand not rounded to TF32 and whose cp.async destinations hold NaN
//! until their wait: against the float64 reference within TF32's bound, and visibly rounded
//! (so the tensor-core path, not the FP32 one, ran).

mod common;

use common::{conv, nhwc, parity, tf32};
use whorl::backend::gpu::GpuBackend;
use whorl::backend::gpu::emulator::Emulator;
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
