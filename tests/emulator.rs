//! The CUDA kernels, run on the CPU by the emulator: every kernel against the float64
//! reference, whole training steps against the CPU engine, and the mistakes the emulator
//! must catch in deliberately broken kernels.

mod common;

use common::{
    CONV_CASES, FP32_GEMM_KERNELS, POOLED_CASES, bf16, conv, nhwc, parity, pipelined_losses,
    random, relative_error, tf32, tiles, widen,
};
use whorl::backend::cpu::CpuBackend;
use whorl::backend::gpu::emulator::Emulator;
use whorl::backend::gpu::{Device, DevicePtr, GpuBackend, KernelArg};
use whorl::backend::reference::ReferenceBackend;
use whorl::backend::{Backend, ConvInput, Optimizer, OptimizerKind, Precision};
use whorl::graph::Network;
use whorl::model::{Activation, Architecture};

#[test]
fn the_emulator_holds_every_kernel_of_kernels_dir() {
    let names = Emulator::kernels();
    for source in std::fs::read_dir("kernels").unwrap() {
        let path = source.unwrap().path();
        if path.extension().is_some_and(|e| e == "cu") {
            let text = std::fs::read_to_string(&path).unwrap();
            let count = text.matches("__global__").count();
            let listed = names
                .iter()
                .filter(|n| text.contains(&format!("{n}(")))
                .count();
            assert_eq!(listed, count, "{path:?}");
        }
    }
    assert!(names.iter().any(|n| n == "conv2d_gathered_gemm"));
}

fn emulated() -> GpuBackend<Emulator> {
    GpuBackend::new(Emulator::new())
}

#[test]
fn convolution_kernels_match_the_reference() {
    for (case, &(input, cout)) in CONV_CASES.iter().enumerate() {
        for read in [ConvInput::Direct, ConvInput::Upsampled2] {
            let activation = if case % 2 == 0 {
                Activation::Relu
            } else {
                Activation::Sigmoid
            };
            let conv = conv(input, cout, read, activation);
            let inputs = parity::conv_inputs(&conv, 10 * case as u64);
            let got = parity::conv_outputs(&mut emulated(), &conv, &inputs);
            let expected = parity::conv_outputs(&mut ReferenceBackend, &conv, &inputs);
            let errors = parity::errors(&parity::CONV_OUTPUTS, &got, &expected);
            parity::assert_within(&errors, 1e-5, &format!("{conv:?}"));
        }
    }
}

#[test]
fn upsampled_kernel_gradients_take_the_bias_from_the_box_sums_over_several_chunks() {
    // An upsampled convolution's kernel gradient is a GEMM of exactly cin columns; its bias
    // gradient adds dz's aligned box sums per chunk of source pixels (upsample2_bias_partials).
    // Here, in FP32 and on tensor cores: more source pixels than one chunk (1024), with box
    // sums of 5 channels (two quads, one load a channel: 128 pixels side by side in a block)
    // and of 260 (65 quads of 16-byte loads: 3 pixels side by side, 61 threads idle); and box
    // sums of 1028 channels, more quads than a block's threads: two rounds.
    let cases = [
        (nhwc(2, 24, 24, 4), 5),
        (nhwc(1, 34, 34, 4), 260),
        (nhwc(1, 3, 5, 4), 1028),
    ];
    for (input, cout) in cases {
        let conv = conv(input, cout, ConvInput::Upsampled2, Activation::Relu);
        let inputs = parity::conv_inputs(&conv, 70);
        let expected = parity::conv_outputs(&mut ReferenceBackend, &conv, &inputs);
        for precision in [Precision::Fp32, Precision::Tf32] {
            let mut backend = emulated().with_precision(precision);
            let got = parity::conv_outputs(&mut backend, &conv, &inputs);
            let errors = parity::errors(&parity::CONV_OUTPUTS, &got, &expected);
            let (_, bias) = errors[3];
            assert!(bias < 1e-5, "{precision:?} {conv:?}: {errors:?}");
            let (_, kernel) = errors[2];
            assert!(kernel < 1e-3, "{precision:?} {conv:?}: {errors:?}");
            let device = backend.device();
            assert_eq!(device.launches("upsample2_bias_partials"), 1);
            assert_eq!(device.launches("sum_partials"), 1, "the bias alone");
        }
    }
}

#[test]
fn the_fp32_gemm_tiles_a_shape_may_run_give_the_same_bits() {
    // More than 64 columns: the 128 x 128 tile or two columns of 128 x 64 tiles.
    let new = |policy| emulated().with_tile_policy(policy);
    let family: &[&str] = &["conv2d_gathered_gemm_wide", "conv2d_gathered_gemm"];
    tiles::check_candidates_agree(new, &[family]);
}

#[test]
fn fp32_plain_convolutions_run_all_three_passes_by_winograd_and_match_the_reference() {
    // Tiles cut by odd heights and widths, input channels that fill no chunk of 8 or end in a
    // partial one (5, 12, 37), output channels that fill no column block of 32 or spill into a
    // second (5, 8, 37, 64), several blocks of 32 tiles; one input channel (backward-data only);
    // a kernel gradient over 97 chunks of 3 steps of 8 tiles, the last chunk partial.
    let cases = [
        (nhwc(2, 7, 9, 5), 37),
        (nhwc(1, 13, 10, 12), 8),
        (nhwc(3, 6, 8, 9), 64),
        (nhwc(2, 5, 6, 1), 12),
        (nhwc(2, 66, 70, 3), 33),
    ];
    for (case, (input, cout)) in cases.into_iter().enumerate() {
        let conv = conv(input, cout, ConvInput::Direct, Activation::Relu);
        let inputs = parity::conv_inputs(&conv, 40 + case as u64);
        let mut backend = emulated();
        let got = parity::conv_outputs(&mut backend, &conv, &inputs);
        let expected = parity::conv_outputs(&mut ReferenceBackend, &conv, &inputs);
        let errors = parity::errors(&parity::CONV_OUTPUTS, &got, &expected);
        parity::assert_within(&errors, 1e-5, &format!("{conv:?}"));
        // Backward-data by Winograd, and the forward pass and kernel gradient but with one
        // input channel (direct loops); no GEMM.
        let several = usize::from(input.channels > 1);
        let device = backend.device();
        assert_eq!(device.launches("conv2d_winograd"), 1 + several, "{conv:?}");
        let filter = device.launches("conv2d_winograd_filter_partials");
        assert_eq!(filter, several, "{conv:?}");
        let gemms: usize = FP32_GEMM_KERNELS.iter().map(|k| device.launches(k)).sum();
        assert_eq!(gemms, 0, "{conv:?}");
    }
    // The forward pass pooled in its epilogue: the pooling's bits in turn, one launch.
    let pooled = conv(nhwc(3, 6, 10, 9), 40, ConvInput::Direct, Activation::Relu);
    let [x, _, params] = parity::conv_inputs(&pooled, 50);
    let mut backend = emulated();
    let got = parity::forward_and_pool_outputs(
        &mut backend,
        &pooled,
        &[x.clone(), params.clone()],
        false,
    );
    assert_eq!(backend.device().launches("conv2d_winograd"), 1);
    assert_eq!(backend.device().launches("maxpool2_forward"), 0);
    let in_turn = parity::forward_and_pool_outputs(&mut emulated(), &pooled, &[x, params], true);
    parity::assert_same_bits(&got, &in_turn, &format!("{pooled:?}"));
    // TF32 runs the same passes on tensor cores.
    let mut tf32 = emulated().with_precision(Precision::Tf32);
    let conv = conv(nhwc(1, 6, 6, 8), 16, ConvInput::Direct, Activation::Relu);
    parity::conv_outputs(&mut tf32, &conv, &parity::conv_inputs(&conv, 60));
    assert_eq!(tf32.device().launches("conv2d_winograd"), 0);
}

#[test]
fn pooled_convolution_kernels_match_the_reference() {
    for (case, &(input, cout)) in POOLED_CASES.iter().enumerate() {
        for activation in [Activation::Relu, Activation::Sigmoid] {
            let conv = conv(input, cout, ConvInput::Direct, activation);
            let inputs = parity::conv_inputs(&conv, 20 * case as u64);
            let got = parity::pooled_outputs(&mut emulated(), &conv, &inputs);
            let expected = parity::pooled_outputs(&mut ReferenceBackend, &conv, &inputs);
            let errors = parity::errors(&parity::POOLED_OUTPUTS, &got, &expected);
            parity::assert_within(&errors, 1e-5, &format!("{conv:?}"));
        }
    }
}

#[test]
fn pooled_convolution_kernels_are_deterministic_break_ties_and_refuse_other_convolutions() {
    // Two chunks of the kernel gradient (2310 pooled pixels), partial tiles and runs, two
    // channel blocks: as the reference, and the same bits every run.
    let pooled_conv = conv(nhwc(2, 66, 70, 1), 33, ConvInput::Direct, Activation::Relu);
    let inputs = parity::conv_inputs(&pooled_conv, 3);
    let first = parity::pooled_outputs(&mut emulated(), &pooled_conv, &inputs);
    let expected = parity::pooled_outputs(&mut ReferenceBackend, &pooled_conv, &inputs);
    let errors = parity::errors(&parity::POOLED_OUTPUTS, &first, &expected);
    parity::assert_within(&errors, 1e-5, &format!("{pooled_conv:?}"));
    let second = parity::pooled_outputs(&mut emulated(), &pooled_conv, &inputs);
    assert_eq!(parity::bits(&first), parity::bits(&second));
    // A zero kernel: the four outputs of every window are equal (the bias), and the first of
    // them (row-major) takes the window's gradient, its window of x as the kernel gradient's.
    for activation in [Activation::Relu, Activation::Sigmoid] {
        let tied = conv(nhwc(2, 12, 20, 1), 8, ConvInput::Direct, activation);
        let [x, dz, mut params] = parity::conv_inputs(&tied, 5);
        params[tied.slot.weight.clone()].fill(0.0);
        let inputs = [x, dz, params];
        let got = parity::pooled_outputs(&mut emulated(), &tied, &inputs);
        let expected = parity::pooled_outputs(&mut ReferenceBackend, &tied, &inputs);
        let errors = parity::errors(&parity::POOLED_OUTPUTS, &got, &expected);
        parity::assert_within(&errors, 1e-5, &format!("ties, {tied:?}"));
    }
    // Not a direct convolution of a one-channel input with an even output: an error.
    for conv in [
        conv(nhwc(1, 4, 4, 2), 3, ConvInput::Direct, Activation::Relu),
        conv(nhwc(1, 4, 4, 1), 3, ConvInput::Upsampled2, Activation::Relu),
        conv(nhwc(1, 5, 4, 1), 3, ConvInput::Direct, Activation::Relu),
        conv(nhwc(1, 4, 7, 1), 3, ConvInput::Direct, Activation::Relu),
    ] {
        let mut backend = emulated();
        backend.plan(std::slice::from_ref(&conv)).unwrap();
        let x = backend.alloc(conv.input.len()).unwrap();
        let params = backend.alloc(conv.slot.bias.end).unwrap();
        let mut pooled = backend.alloc(conv.output().len()).unwrap();
        assert!(
            backend
                .conv2d_pooled_forward(&conv, &x, &params, &mut pooled)
                .is_err(),
            "{conv:?}"
        );
        let d_pooled = backend.alloc(conv.output().len()).unwrap();
        let mut grads = backend.alloc(conv.slot.bias.end).unwrap();
        assert!(
            backend
                .conv2d_pooled_backward_filter(&conv, &x, &params, &d_pooled, &mut grads)
                .is_err(),
            "{conv:?}"
        );
    }
}

#[test]
fn fused_upsampled_backward_kernels_match_the_reference() {
    for (case, conv) in parity::fused_backward_cases().iter().enumerate() {
        for x_activation in parity::X_ACTIVATIONS {
            let inputs = parity::fused_backward_inputs(conv, x_activation, 30 * case as u64);
            let got = parity::fused_backward_outputs(&mut emulated(), conv, &inputs, x_activation);
            let expected =
                parity::fused_backward_outputs(&mut ReferenceBackend, conv, &inputs, x_activation);
            let errors = parity::errors(&parity::FUSED_BACKWARD_OUTPUTS, &got, &expected);
            parity::assert_within(&errors, 1e-5, &format!("{x_activation:?}, {conv:?}"));
        }
    }
}

#[test]
fn pooling_in_the_gemm_epilogue_gives_the_bits_of_the_pooling_in_turn() {
    parity::check_pooled_epilogue(emulated, 1e-5);
}

#[test]
fn scored_output_convolution_matches_the_reference_and_the_operations_in_turn() {
    parity::check_scored(emulated, 1e-5);
}

#[test]
fn fused_upsampled_backward_is_deterministic_and_other_convolutions_run_in_turn() {
    // Three chunks of 64 channels: the same bits every run.
    let fused = conv(
        nhwc(2, 47, 45, 64),
        1,
        ConvInput::Upsampled2,
        Activation::Sigmoid,
    );
    let inputs = parity::fused_backward_inputs(&fused, Some(Activation::Relu), 4);
    let run =
        || parity::fused_backward_outputs(&mut emulated(), &fused, &inputs, Some(Activation::Relu));
    assert_eq!(parity::bits(&run()), parity::bits(&run()));
    // Not one output channel of an upsampled input: the three operations in turn, with the
    // reference's results; an upsampled input's box sums of dz made once for both passes.
    for (case, other) in [
        conv(nhwc(2, 5, 7, 3), 5, ConvInput::Upsampled2, Activation::Relu),
        conv(
            nhwc(1, 6, 4, 40),
            2,
            ConvInput::Upsampled2,
            Activation::Sigmoid,
        ),
        conv(nhwc(2, 5, 7, 3), 1, ConvInput::Direct, Activation::Sigmoid),
        conv(nhwc(1, 6, 6, 8), 4, ConvInput::Direct, Activation::Relu),
    ]
    .iter()
    .enumerate()
    {
        for x_activation in parity::X_ACTIVATIONS {
            let inputs = parity::fused_backward_inputs(other, x_activation, 40 + case as u64);
            let mut backend = emulated();
            let got = parity::fused_backward_outputs(&mut backend, other, &inputs, x_activation);
            let expected =
                parity::fused_backward_outputs(&mut ReferenceBackend, other, &inputs, x_activation);
            let errors = parity::errors(&parity::FUSED_BACKWARD_OUTPUTS, &got, &expected);
            parity::assert_within(&errors, 1e-5, &format!("{x_activation:?}, {other:?}"));
            let box_sums = backend.device().launches("upsample2_box_sums");
            let upsampled = usize::from(other.read == ConvInput::Upsampled2);
            assert_eq!(box_sums, upsampled, "{other:?}");
        }
    }
}

#[test]
fn backward_data_applies_the_input_activations_derivative_in_its_epilogue() {
    // Every kernel that computes dx in conv2d_backward multiplies it by the derivative of x's
    // activation in its epilogue: no activation_backward launch, and the bits of the three
    // operations in turn. FP32: Winograd (plain inputs, one and two column blocks) and the
    // GEMM's 256 x 32 and 128 x 128 tiles (upsampled inputs, 8 and 72 input channels); TF32: the
    // tensor-core GEMM's 256 x 32, 256 x 64 and 128 x 128 tiles, and the CUDA-core GEMM for 3
    // channels.
    let cases = [
        (nhwc(2, 7, 9, 8), 12, ConvInput::Direct),
        (nhwc(2, 5, 7, 8), 12, ConvInput::Upsampled2),
        (nhwc(1, 6, 5, 3), 5, ConvInput::Direct),
        (nhwc(1, 5, 6, 72), 8, ConvInput::Upsampled2),
        (nhwc(1, 6, 7, 40), 16, ConvInput::Direct),
    ];
    for precision in [Precision::Fp32, Precision::Tf32] {
        for (case, &(input, cout, read)) in cases.iter().enumerate() {
            let conv = conv(input, cout, read, Activation::Relu);
            for x_activation in parity::X_ACTIVATIONS {
                let seed = 70 + case as u64;
                let inputs = parity::fused_backward_inputs(&conv, x_activation, seed);
                let mut backend = emulated().with_precision(precision);
                let got =
                    parity::backward_outputs(&mut backend, &conv, &inputs, x_activation, false);
                let context = format!("{precision:?}, {x_activation:?}, {conv:?}");
                assert_eq!(
                    backend.device().launches("activation_backward"),
                    0,
                    "{context}"
                );
                let mut in_turn = emulated().with_precision(precision);
                let expected =
                    parity::backward_outputs(&mut in_turn, &conv, &inputs, x_activation, true);
                parity::assert_same_bits(&got, &expected, &context);
            }
        }
    }
}

#[test]
fn pooling_upsampling_loss_and_optimizer_kernels_match_the_reference() {
    for (case, input) in [nhwc(1, 2, 2, 1), nhwc(2, 6, 10, 3), nhwc(3, 8, 14, 33)]
        .into_iter()
        .enumerate()
    {
        let got = parity::other_outputs(&mut emulated(), input, case as u64);
        let expected = parity::other_outputs(&mut ReferenceBackend, input, case as u64);
        let errors = parity::errors(&parity::OTHER_OUTPUTS, &got, &expected);
        parity::assert_within(&errors, 1e-6, &format!("{input:?}"));
    }
    // The loss reduction is deterministic: the same bits every run.
    let input = nhwc(2, 60, 70, 5);
    let first = parity::other_outputs(&mut emulated(), input, 7);
    assert_eq!(
        first[6],
        parity::other_outputs(&mut emulated(), input, 7)[6]
    );
}

#[test]
fn emulated_training_follows_the_cpu_engine_with_rmsprop() {
    emulated_training_follows_the_cpu_engine(OptimizerKind::Rmsprop);
}

#[test]
fn emulated_training_follows_the_cpu_engine_with_adam() {
    emulated_training_follows_the_cpu_engine(OptimizerKind::Adam);
}

fn emulated_training_follows_the_cpu_engine(kind: OptimizerKind) {
    let arch = Architecture::reference();
    let (size, batch) = (12, 3);
    let params = arch.glorot_uniform(9);
    let mut gpu = Network::new(
        GpuBackend::new(Emulator::new()),
        arch.clone(),
        size,
        size,
        batch,
        &params,
    )
    .unwrap();
    let mut cpu = Network::new(CpuBackend::new(), arch, size, size, batch, &params).unwrap();
    gpu.optimizer = Optimizer::new(kind, 1e-3);
    cpu.optimizer = gpu.optimizer;
    // The emulated network runs as training does: each batch is uploaded asynchronously while
    // the step before it is in flight, which the emulator checks against the fence contract.
    let batches: Vec<Vec<f32>> = (0..4)
        .map(|step| random(batch * size * size, 0.0, 1.0, 40 + step))
        .collect();
    let losses = pipelined_losses(&mut gpu, &batches);
    // Every activation derivative is applied inside the convolution and pooling kernels, and
    // conv5 makes the box sums of dz once a step.
    let device = gpu.backend().device();
    assert_eq!(device.launches("activation_backward"), 0);
    assert_eq!(device.launches("upsample2_box_sums"), batches.len());
    for (step, (images, &a)) in batches.iter().zip(&losses).enumerate() {
        let b = cpu.train_step(images).unwrap();
        assert!(
            (a - b).abs() < 1e-5 * b,
            "step {step}: emulated {a} vs cpu {b}"
        );
    }
    let error = relative_error(&gpu.params().unwrap(), &widen(&cpu.params().unwrap()));
    assert!(error < 1e-4, "weights after 4 steps differ by {error:e}");
    let error = relative_error(&gpu.velocity().unwrap(), &widen(&cpu.velocity().unwrap()));
    assert!(
        error < 1e-4,
        "optimizer state after 4 steps differs by {error:e}"
    );
    let error = relative_error(&gpu.momentum().unwrap(), &widen(&cpu.momentum().unwrap()));
    assert!(error < 1e-4, "momentum after 4 steps differs by {error:e}");
    // A partial batch through the same buffers.
    let images = random(2 * size * size, 0.0, 1.0, 99);
    let (a, b) = (gpu.forward(&images).unwrap(), cpu.forward(&images).unwrap());
    assert!((a - b).abs() < 1e-5 * b);
}

#[test]
fn an_asynchronous_upload_into_a_buffer_in_use_is_caught() {
    let mut gpu = emulated();
    let input = nhwc(1, 4, 4, 2);
    let mut x = gpu.alloc(input.len()).unwrap();
    let mut y = gpu.alloc(4 * input.len()).unwrap();
    let host = random(input.len(), 0.0, 1.0, 1);
    gpu.upload_async(&host, &mut x).unwrap();
    gpu.upsample2_forward(input, &x, &mut y).unwrap();
    let error = gpu.upload_async(&host, &mut x).unwrap_err().to_string();
    assert!(error.contains("since the last fence"), "{error}");
    let mut other = gpu.alloc(input.len()).unwrap();
    gpu.upload_async(&host, &mut other).unwrap();
    gpu.fence().unwrap();
    gpu.upload_async(&host, &mut x).unwrap();
}

fn launch_broken(
    kernel: &str,
    threads: u32,
    args: impl Fn(&[whorl::backend::gpu::DevicePtr]) -> Vec<KernelArg>,
    shared: usize,
) -> (Result<(), String>, Vec<f32>) {
    let mut device = Emulator::new();
    let input = device.alloc(threads as usize).unwrap();
    device
        .upload(&(0..threads).map(|i| i as f32).collect::<Vec<_>>(), input)
        .unwrap();
    let output = device.alloc(threads as usize).unwrap();
    let result = device.launch(
        kernel,
        [1, 1, 1],
        [threads, 1, 1],
        shared,
        &args(&[input, output]),
    );
    let mut host = vec![0.0; threads as usize];
    device.download(output, &mut host).unwrap();
    (result.map_err(|e| e.to_string()), host)
}

#[test]
fn the_emulator_catches_broken_kernels() {
    let (result, _) = launch_broken(
        "broken_out_of_bounds_write",
        64,
        |b| vec![KernelArg::I32(64), KernelArg::Ptr(b[1])],
        0,
    );
    let message = result.unwrap_err();
    assert!(
        message.contains("broken_out_of_bounds_write") && message.contains("out-of-bounds write"),
        "{message}"
    );

    let (result, out) = launch_broken(
        "broken_missing_barrier",
        64,
        |b| vec![KernelArg::Ptr(b[0]), KernelArg::Ptr(b[1])],
        64 * 4,
    );
    result.unwrap();
    assert!(
        out.iter().any(|v| v.is_nan()),
        "reads of unwritten shared memory must show as NaN: {out:?}"
    );
    let (result, out) = launch_broken(
        "broken_missing_barrier",
        1,
        |b| vec![KernelArg::Ptr(b[0]), KernelArg::Ptr(b[1])],
        4,
    );
    result.unwrap();
    assert_eq!(out, [0.0], "one thread reads only what it wrote");

    // A launch giving a kernel less dynamic shared memory than it uses: 64 floats written into
    // 48, and the same launch with enough, which runs.
    let args =
        |b: &[whorl::backend::gpu::DevicePtr]| vec![KernelArg::Ptr(b[0]), KernelArg::Ptr(b[1])];
    let (result, _) = launch_broken("broken_shared_overrun", 64, args, 48 * 4);
    let message = result.unwrap_err();
    assert!(
        message.contains("broken_shared_overrun")
            && message.contains("past its end")
            && message.contains("192 bytes of dynamic shared memory"),
        "{message}"
    );
    let (result, out) = launch_broken("broken_shared_overrun", 64, args, 64 * 4);
    result.unwrap();
    assert_eq!(out, (0..64).rev().map(|i| i as f32).collect::<Vec<_>>());

    let (result, _) = launch_broken(
        "broken_divergent_barrier",
        64,
        |b| vec![KernelArg::Ptr(b[1])],
        0,
    );
    let message = result.unwrap_err();
    assert!(message.contains("barrier divergence"), "{message}");

    let (result, _) = launch_broken("broken_early_exit", 64, |b| vec![KernelArg::Ptr(b[1])], 0);
    let message = result.unwrap_err();
    assert!(
        message.contains("exited while other threads wait"),
        "{message}"
    );

    let (result, _) = launch_broken("no_such_kernel", 32, |_| vec![], 0);
    assert!(
        result
            .unwrap_err()
            .contains("no kernel named no_such_kernel")
    );
}

/// A device copy of each of `arrays`, in order.
fn uploaded(device: &mut Emulator, arrays: &[&[f32]]) -> Vec<DevicePtr> {
    arrays
        .iter()
        .map(|values| {
            let ptr = device.alloc(values.len()).unwrap();
            device.upload(values, ptr).unwrap();
            ptr
        })
        .collect()
}

fn run_tile(kernel: &str, a: &[f32], b: &[f32], c: &[f32], shared: usize) -> Vec<f32> {
    let mut device = Emulator::new();
    let pointers = uploaded(&mut device, &[a, b, c]);
    let args: Vec<KernelArg> = pointers.iter().map(|&p| KernelArg::Ptr(p)).collect();
    device
        .launch(kernel, [1, 1, 1], [32, 1, 1], shared, &args)
        .unwrap();
    let mut out = vec![0.0; c.len()];
    device.download(pointers[2], &mut out).unwrap();
    out
}

#[test]
fn tensor_core_tiles_round_like_the_hardware() {
    // Values with mantissa bits below TF32's and half's precision.
    let a: Vec<f32> = (0..128).map(|i| 1.0 + i as f32 * 1.2345e-4).collect();
    let b: Vec<f32> = (0..128).map(|i| 0.5 - i as f32 * 2.3456e-4).collect();
    let c = run_tile("wmma_tf32_tile", &a, &b, &[0.0; 256], 0);
    let (mut exact_differs, mut worst) = (false, 0.0f32);
    for i in 0..16 {
        for j in 0..16 {
            let dot = |round: fn(f32) -> f32| {
                (0..8).fold(0.0f32, |s, k| {
                    s + round(a[i * 8 + k]) * round(b[k * 16 + j])
                })
            };
            approx::assert_relative_eq!(c[i * 16 + j], dot(tf32), max_relative = 1e-6);
            exact_differs |= c[i * 16 + j] != dot(|v| v);
            worst = worst.max((c[i * 16 + j] - dot(|v| v)).abs());
        }
    }
    assert!(
        exact_differs && worst > 1e-5,
        "TF32 inputs must be rounded (worst {worst})"
    );

    let a: Vec<f32> = (0..256).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..256).map(|i| (i as f32 * 0.11).cos()).collect();
    let c0: Vec<f32> = (0..256).map(|i| i as f32 * 0.01).collect();
    let c = run_tile("wmma_half_tile", &a, &b, &c0, 2 * 2 * 256);
    let h = |v: f32| half::f16::from_f32(v).to_f32();
    for i in 0..16 {
        for j in 0..16 {
            // b is column-major: element (k, j) at j * 16 + k.
            let expected = (0..16).fold(c0[i * 16 + j], |s, k| {
                s + h(a[i * 16 + k]) * h(b[j * 16 + k])
            });
            approx::assert_relative_eq!(c[i * 16 + j], expected, max_relative = 1e-6);
        }
    }
}

#[test]
fn half_and_bfloat16_conversions_match_the_half_crate() {
    // Subnormals, ties, the largest finite values, overflow, infinities and NaN.
    let values: Vec<f32> = (0..3000)
        .map(|i| {
            let t = i as f32 - 1500.0;
            t * t.abs() * 1e-3 * if i % 3 == 0 { 1e-7 } else { 1.0 }
        })
        .chain([
            65504.0,
            65519.0,
            65520.0,
            1e-8,
            -2.9802322e-8,
            0.0,
            -0.0,
            3.0e38,
        ])
        .chain([
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            1.0 + 2f32.powi(-8),
        ])
        .chain([f32::INFINITY, f32::NEG_INFINITY, f32::NAN])
        .collect();
    let mut device = Emulator::new();
    let input = device.alloc(values.len()).unwrap();
    let output = device.alloc(values.len()).unwrap();
    device.upload(&values, input).unwrap();
    let n = values.len();
    let grid = [(n as u32).div_ceil(256), 1, 1];
    let args = [
        KernelArg::I32(n as i32),
        KernelArg::Ptr(input),
        KernelArg::Ptr(output),
    ];
    type Conversion = fn(f32) -> f32;
    let conversions: [(&str, Conversion); 2] = [
        ("round_trip_half", |v| half::f16::from_f32(v).to_f32()),
        ("round_trip_bfloat16", |v| half::bf16::from_f32(v).to_f32()),
    ];
    for (kernel, convert) in conversions {
        device.launch(kernel, grid, [256, 1, 1], 0, &args).unwrap();
        let mut got = vec![0.0; n];
        device.download(output, &mut got).unwrap();
        for (&g, &v) in got.iter().zip(&values) {
            let expected = convert(v);
            let same = g.to_bits() == expected.to_bits() || (g.is_nan() && expected.is_nan());
            assert!(
                same,
                "{kernel}({v:e}) = {g:e}, the half crate says {expected:e}"
            );
        }
    }
}

#[test]
fn warp_intrinsics_and_atomics_behave_as_on_a_gpu() {
    let mut device = Emulator::new();
    let out = device.alloc(4 * 64).unwrap();
    let counter = device.alloc(1).unwrap();
    let args = [KernelArg::Ptr(out), KernelArg::Ptr(counter)];
    device
        .launch(
            "warp_and_atomic_intrinsics",
            [3, 1, 1],
            [64, 1, 1],
            0,
            &args,
        )
        .unwrap();
    let mut values = vec![0.0; 4 * 64];
    device.download(out, &mut values).unwrap();
    for (t, v) in values.chunks(4).enumerate() {
        let warp = (t / 32 * 32) as f32;
        let lane_sum = (0..32).map(|l| warp + l as f32).sum::<f32>();
        let next = if t % 32 == 31 {
            t as f32 + 1.0
        } else {
            t as f32 + 2.0
        };
        assert_eq!(v, [lane_sum, 1.0, warp, next], "thread {t}");
    }
    let mut count = [0.0f32];
    device.download(counter, &mut count).unwrap();
    assert_eq!(
        count[0].to_bits(),
        3 * 64,
        "192 atomic increments of an int"
    );
}

/// The (row, column) of A, B and C that lane `lane`'s registers hold in an m16n8k8 TF32 mma,
/// as the PTX ISA lays the fragments out (g = lane / 4, t = lane % 4).
type Fragments = (
    [(usize, usize); 4],
    [(usize, usize); 2],
    [(usize, usize); 4],
);
fn m16n8k8_fragments(lane: usize) -> Fragments {
    let (g, t) = (lane / 4, lane % 4);
    (
        [(g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4)],
        [(t, g), (t + 4, g)],
        [
            (g, 2 * t),
            (g, 2 * t + 1),
            (g + 8, 2 * t),
            (g + 8, 2 * t + 1),
        ],
    )
}

/// C (16 x 8, row-major) as the 32 lanes' m16n8 C fragments, lane-major (4 values a lane).
fn c_fragments(c: &[f32]) -> Vec<f32> {
    (0..32)
        .flat_map(|lane| m16n8k8_fragments(lane).2.map(|(i, j)| c[i * 8 + j]))
        .collect()
}

/// D (16 x 8, row-major) from the 32 lanes' m16n8 D fragments, lane-major.
fn from_c_fragments(registers: &[f32]) -> Vec<f32> {
    let mut d = vec![0.0f32; 16 * 8];
    for lane in 0..32 {
        for (r, (i, j)) in m16n8k8_fragments(lane).2.into_iter().enumerate() {
            d[i * 8 + j] = registers[lane * 4 + r];
        }
    }
    d
}

/// The low 13 bits of a float dropped: what the tensor core reads of an unrounded operand.
fn truncated_to_tf32(value: f32) -> f32 {
    f32::from_bits(value.to_bits() & !0x1fff)
}

#[test]
fn the_tf32_mma_follows_the_ptx_fragment_layout_and_truncates_unrounded_operands() {
    // Values with mantissa bits below TF32's, so rounding and truncation differ.
    let a = random(16 * 8, -2.0, 2.0, 1);
    let b = random(8 * 8, -2.0, 2.0, 2);
    let c = random(16 * 8, -1.0, 1.0, 3);
    let (mut a_regs, mut b_regs) = (vec![], vec![]);
    for lane in 0..32 {
        let (fa, fb, _) = m16n8k8_fragments(lane);
        a_regs.extend(fa.map(|(i, k)| a[i * 8 + k]));
        b_regs.extend(fb.map(|(k, j)| b[k * 8 + j]));
    }
    let c_regs = c_fragments(&c);
    let mut device = Emulator::new();
    let buffers = uploaded(&mut device, &[&a_regs, &b_regs, &c_regs, &c_regs]);
    let mut product = |round: bool| {
        let mut args = vec![KernelArg::I32(round.into())];
        args.extend(buffers.iter().map(|&p| KernelArg::Ptr(p)));
        device
            .launch("mma_tf32_fragments", [1, 1, 1], [32, 1, 1], 0, &args)
            .unwrap();
        let mut d_regs = vec![0.0; 128];
        device.download(buffers[3], &mut d_regs).unwrap();
        from_c_fragments(&d_regs)
    };
    let expected = |operand| mma_reference(&a, &b, &c, 8, operand);
    let (rounded, truncated) = (expected(tf32), expected(truncated_to_tf32));
    assert!(relative_error(&product(true), &rounded) < 1e-6);
    assert!(relative_error(&product(false), &truncated) < 1e-6);
    let apart = relative_error(&product(true), &truncated);
    assert!(
        apart > 1e-4,
        "rounded and truncated operands must give different products ({apart:e})"
    );

    let error = device
        .launch(
            "mma_tf32_fragments",
            [1, 1, 1],
            [16, 1, 1],
            0,
            &[KernelArg::I32(1)]
                .into_iter()
                .chain(buffers.iter().map(|&p| KernelArg::Ptr(p)))
                .collect::<Vec<_>>(),
        )
        .unwrap_err()
        .to_string();
    assert!(error.contains("needs all 32 lanes"), "{error}");
}

/// Two (row, column) positions: the values of one register of BF16 pairs, low half first.
type Pair = [(usize, usize); 2];

/// The m16n8k16 BF16 fragments of lane `lane` (g = lane / 4, t = lane % 4): A's (row, k) and
/// B's (k, column) pairs, as the PTX ISA lays them out.
fn m16n8k16_fragments(lane: usize) -> ([Pair; 4], [Pair; 2]) {
    let (g, t) = (lane / 4, lane % 4);
    let a = |row: usize, k: usize| [(row, k), (row, k + 1)];
    let b = |k: usize| [(k, g), (k + 1, g)];
    (
        [
            a(g, 2 * t),
            a(g + 8, 2 * t),
            a(g, 2 * t + 8),
            a(g + 8, 2 * t + 8),
        ],
        [b(2 * t), b(2 * t + 8)],
    )
}

/// C + A B in float64 over `k` of K, A (16 x k) and B (k x 8) row-major, their values through
/// `operand` (what the tensor cores multiply).
fn mma_reference(a: &[f32], b: &[f32], c: &[f32], k: usize, operand: fn(f32) -> f32) -> Vec<f64> {
    (0..16 * 8)
        .map(|ij| {
            let (i, j) = (ij / 8, ij % 8);
            (0..k).fold(f64::from(c[ij]), |s, l| {
                s + f64::from(operand(a[i * k + l])) * f64::from(operand(b[l * 8 + j]))
            })
        })
        .collect()
}

#[test]
fn the_bf16_mma_follows_the_ptx_fragment_layout_and_rounds_to_nearest_even() {
    let a = random(16 * 16, -2.0, 2.0, 11);
    let b = random(16 * 8, -2.0, 2.0, 12);
    let c = random(16 * 8, -1.0, 1.0, 13);
    let (mut a_regs, mut b_regs) = (vec![], vec![]);
    for lane in 0..32 {
        let (fa, fb) = m16n8k16_fragments(lane);
        a_regs.extend(fa.iter().flatten().map(|&(i, k)| a[i * 16 + k]));
        b_regs.extend(fb.iter().flatten().map(|&(k, j)| b[k * 8 + j]));
    }
    let d_regs = run_tile("mma_bf16_fragments", &a_regs, &b_regs, &c_fragments(&c), 0);
    let d = from_c_fragments(&d_regs);
    let rounded = mma_reference(&a, &b, &c, 16, bf16);
    assert!(relative_error(&d, &rounded) < 1e-6);
    let tf32_apart = relative_error(&d, &mma_reference(&a, &b, &c, 16, tf32));
    assert!(
        tf32_apart > 1e-4,
        "the operands must be BF16, not TF32 ({tf32_apart:e})"
    );
}

#[test]
fn bf16_fragments_paired_from_tf32_fragments_multiply_as_a_bf16_mma() {
    // The convolution kernels read m16n8k8 (TF32 layout) fragments and pair two of them into an
    // m16n8k16 BF16 one (bf16_a_fragment, bf16_b_fragment): the product must be A B with the
    // operands rounded to BF16, and A paired across rows instead must not be.
    let a = random(16 * 16, -2.0, 2.0, 21);
    let b = random(16 * 8, -2.0, 2.0, 22);
    let zeros = vec![0.0f32; 16 * 8];
    let expected = mma_reference(&a, &b, &zeros, 16, bf16);
    let product = |kernel| run_tile(kernel, &a, &b, &zeros, 0);
    assert!(relative_error(&product("bf16_mma_of_tf32_fragments"), &expected) < 1e-6);
    let mixed_rows = product("broken_bf16_mma_of_tf32_fragments_mixed_rows");
    let broken = relative_error(&mixed_rows, &expected);
    assert!(broken > 0.1, "A paired across rows gives A B ({broken:e})");
}

/// Runs `kernel(input, output)` on one warp, `input` holding `values`; returns the
/// `output_len` values of its output.
fn run_one_warp(kernel: &str, values: &[f32], output_len: usize) -> Vec<f32> {
    let mut device = Emulator::new();
    let (input, output) = (
        device.alloc(values.len()).unwrap(),
        device.alloc(output_len).unwrap(),
    );
    device.upload(values, input).unwrap();
    let args = [KernelArg::Ptr(input), KernelArg::Ptr(output)];
    device
        .launch(kernel, [1, 1, 1], [32, 1, 1], 0, &args)
        .unwrap();
    let mut host = vec![0.0; output_len];
    device.download(output, &mut host).unwrap();
    host
}

#[test]
fn ldmatrix_gives_each_lane_one_word_of_a_row_of_each_of_four_matrices() {
    let values: Vec<f32> = (0..128).map(|i| i as f32).collect();
    let words = run_one_warp("ldmatrix_x4_words", &values, 128);
    for lane in 0..32 {
        for matrix in 0..4 {
            // Row lane / 4 of the matrix comes from the lane 8 matrix + lane / 4, which points
            // at shared row 5 times its number (mod 32); the lane takes its word lane % 4.
            let row = 5 * (8 * matrix + lane / 4) % 32;
            assert_eq!(
                words[4 * lane + matrix],
                values[4 * row + lane % 4],
                "lane {lane}, matrix {matrix}"
            );
        }
    }
}

#[test]
fn cp_async_destinations_read_nan_until_a_wait_retires_their_group() {
    let values: Vec<f32> = (0..512).map(|i| i as f32 + 1.0).collect();
    let seen = run_one_warp("cp_async_groups", &values, 4 * 512);
    // Per snapshot, how many of chunks 0 (group 0), 1 (group 1, zero-filled), 2 (group 2) and
    // 3 (never committed until the last snapshot) have landed.
    for (snapshot, landed) in [1, 2, 3, 4].into_iter().enumerate() {
        for t in 0..32 {
            for i in 0..16 {
                let got = seen[512 * snapshot + 16 * t + i];
                let chunk = i / 4;
                if chunk >= landed {
                    assert!(
                        got.is_nan(),
                        "snapshot {snapshot}, thread {t}: chunk {chunk} landed early"
                    );
                } else {
                    let expected = if chunk == 1 { 0.0 } else { values[16 * t + i] };
                    assert_eq!(got, expected, "snapshot {snapshot}, thread {t}, value {i}");
                }
            }
        }
    }

    let (result, _) = launch_broken(
        "broken_misaligned_cp_async",
        1,
        |b| vec![KernelArg::Ptr(b[0]), KernelArg::Ptr(b[1])],
        0,
    );
    let message = result.unwrap_err();
    assert!(message.contains("not 16-byte aligned"), "{message}");
    let (result, _) = launch_broken(
        "broken_misaligned_cp_async_4",
        1,
        |b| vec![KernelArg::Ptr(b[0]), KernelArg::Ptr(b[1])],
        0,
    );
    let message = result.unwrap_err();
    assert!(message.contains("cp.async of 4 bytes"), "{message}");
    assert!(message.contains("not 4-byte aligned"), "{message}");
}

/// |C - AB| allowed for a TF32 GEMM against float64: sqrt(K) 2^-11 max|A| max|B|, the
/// rounding error of K products of operands rounded to 10 mantissa bits.
fn tf32_bound(k: usize, a: &[f32], b: &[f32]) -> f64 {
    let largest = |v: &[f32]| v.iter().fold(0.0f64, |m, x| m.max(f64::from(x.abs())));
    (k as f64).sqrt() * 2f64.powi(-11) * largest(a) * largest(b)
}

/// max |C - AB| over C = `kernel`(A, B) on the emulator, against float64 (infinite when C holds
/// a NaN), and the TF32 bound for these operands.
fn tf32_gemm_error(kernel: &str, (m, n, k): (usize, usize, usize), low: f32) -> (f64, f64) {
    let a = random(m * k, low, 1.0, (m * k) as u64);
    let b = random(k * n, low, 1.0, (k * n + 1) as u64);
    let mut device = Emulator::new();
    let (pa, pb, pc) = (
        device.alloc(a.len()).unwrap(),
        device.alloc(b.len()).unwrap(),
        device.alloc(m * n).unwrap(),
    );
    device.upload(&a, pa).unwrap();
    device.upload(&b, pb).unwrap();
    device.upload(&vec![f32::NAN; m * n], pc).unwrap();
    let grid = [n.div_ceil(64) as u32, m.div_ceil(64) as u32, 1];
    let args = [m, n, k]
        .map(|d| KernelArg::I32(d as i32))
        .into_iter()
        .chain([pa, pb, pc].map(KernelArg::Ptr))
        .collect::<Vec<_>>();
    device.launch(kernel, grid, [128, 1, 1], 0, &args).unwrap();
    let mut c = vec![0.0; m * n];
    device.download(pc, &mut c).unwrap();
    let mut worst = 0.0f64;
    for (ij, &got) in c.iter().enumerate() {
        let (i, j) = (ij / n, ij % n);
        let exact = (0..k).fold(0.0, |s, l| {
            s + f64::from(a[i * k + l]) * f64::from(b[l * n + j])
        });
        let error = (f64::from(got) - exact).abs();
        worst = worst.max(if error.is_nan() { f64::INFINITY } else { error });
    }
    (worst, tf32_bound(k, &a, &b))
}

/// Shapes that are no multiple of the 64 x 64 x 16 tile, with slices fewer than the pipeline's
/// stages (k = 4, 12), and several blocks.
const GEMM_SHAPES: [(usize, usize, usize); 4] =
    [(37, 44, 300), (130, 36, 52), (5, 4, 4), (70, 68, 12)];

#[test]
fn a_tiled_tf32_gemm_on_a_cp_async_pipeline_matches_float64_within_the_tf32_bound() {
    for shape in GEMM_SHAPES {
        for low in [-1.0, 0.0] {
            let (error, bound) = tf32_gemm_error("tf32_gemm", shape, low);
            println!(
                "tf32_gemm {shape:?} in [{low}, 1): error {:.3} x the bound",
                error / bound
            );
            assert!(
                error <= bound,
                "{shape:?}, operands in [{low}, 1): error {error:e} above the bound {bound:e}"
            );
        }
    }
}

#[test]
fn the_emulator_catches_broken_tensor_core_kernels() {
    // Each mistake, on a shape where it matters: the result is off by more than ten times the
    // bound the correct kernel keeps, or NaN. Truncation biases every product toward zero, so
    // it shows on a long reduction of positive operands.
    for (kernel, shape, low) in [
        ("broken_tf32_gemm_swapped_fragment", (37, 44, 300), -1.0),
        ("broken_tf32_gemm_missing_wait", (37, 44, 300), -1.0),
        ("broken_tf32_gemm_short_wait", (37, 44, 300), -1.0),
        ("broken_tf32_gemm_missing_barrier", (37, 44, 300), -1.0),
        ("broken_tf32_gemm_unrounded", (21, 20, 1000), 0.0),
    ] {
        let (error, bound) = tf32_gemm_error(kernel, shape, low);
        println!("{kernel} {shape:?}: error {:.1} x the bound", error / bound);
        assert!(
            error > 10.0 * bound,
            "{kernel}: error {error:e} within ten times the bound {bound:e}"
        );
        let (error, bound) = tf32_gemm_error("tf32_gemm", shape, low);
        assert!(
            error <= bound,
            "tf32_gemm on {shape:?}: {error:e} > {bound:e}"
        );
    }
}

/// The dynamic shared memory of tests/kernels/warpgroup_mma.cu's products: at most 128 x 32
/// floats of B and room to align them to 1024 bytes.
const WARPGROUP_SHARED_BYTES: usize = 128 * 32 * 4 + 1024;

/// D = A B by `kernel` of tests/kernels/warpgroup_mma.cu on one block of `threads` threads (64
/// rows per warpgroup of 128), A (rows x 32) row-major, B (32 x 64) given K-major (64 x 32):
/// the launch's result and D (rows x 64, row-major).
fn warpgroup_product(
    kernel: &str,
    threads: u32,
    a: &[f32],
    b_k_major: &[f32],
) -> (Result<(), String>, Vec<f32>) {
    warpgroup_product_of_width(kernel, threads, a, b_k_major, 64)
}

/// [`warpgroup_product`] by a kernel whose D has `columns` columns.
fn warpgroup_product_of_width(
    kernel: &str,
    threads: u32,
    a: &[f32],
    b_k_major: &[f32],
    columns: usize,
) -> (Result<(), String>, Vec<f32>) {
    let mut device = Emulator::new();
    let d = vec![0.0; a.len() / 32 * columns];
    let buffers = uploaded(&mut device, &[a, b_k_major, &d]);
    let args: Vec<KernelArg> = buffers.iter().map(|&p| KernelArg::Ptr(p)).collect();
    let result = device.launch(
        kernel,
        [1, 1, 1],
        [threads, 1, 1],
        WARPGROUP_SHARED_BYTES,
        &args,
    );
    let mut product = d;
    device.download(buffers[2], &mut product).unwrap();
    (result.map_err(|e| e.to_string()), product)
}

/// A B in float64 with A's values through `operand` (what the tensor cores multiply), B given
/// K-major (64 x 32).
fn warpgroup_reference(a: &[f32], b_k_major: &[f32], operand: fn(f32) -> f32) -> Vec<f64> {
    (0..a.len() / 32 * 64)
        .map(|ij| {
            let (i, j) = (ij / 64, ij % 64);
            (0..32).fold(0.0, |s, k| {
                s + f64::from(operand(a[i * 32 + k])) * f64::from(b_k_major[j * 32 + k])
            })
        })
        .collect()
}

/// Operands for the warpgroup products: A (`rows` x 32) with mantissa bits below TF32's, so
/// rounding and truncation differ; B K-major (64 x 32), TF32 values.
fn warpgroup_operands(rows: usize) -> (Vec<f32>, Vec<f32>) {
    let a = random(rows * 32, -2.0, 2.0, rows as u64);
    let b = random(64 * 32, -2.0, 2.0, 5)
        .into_iter()
        .map(tf32)
        .collect();
    (a, b)
}

#[test]
fn wgmma_gives_each_warp_its_rows_of_the_product_with_the_bits_of_mma_sync() {
    // One warpgroup, and two (warps 4-7 hold rows 64-127). B reaches the tensor cores through
    // the descriptors of its 128-byte swizzle, in two groups of two wgmma each.
    for threads in [128, 256] {
        let (a, b) = warpgroup_operands(64 * threads as usize / 128);
        let (result, d) = warpgroup_product("warpgroup_product", threads, &a, &b);
        result.unwrap();
        let error = relative_error(&d, &warpgroup_reference(&a, &b, tf32));
        assert!(error < 1e-6, "{threads} threads: error {error:e}");
        let (result, by_mma_sync) =
            warpgroup_product("warpgroup_product_by_mma_sync", threads, &a, &b);
        result.unwrap();
        let case = format!("wgmma and mma.sync, {threads} threads");
        parity::assert_same_bits(std::slice::from_ref(&d), &[by_mma_sync], &case);

        // One m64n128k8 per 8 of K over B's columns twice: both halves of each row of its D
        // are the 64-column product's row, bit for bit.
        let (result, wide) =
            warpgroup_product_of_width("warpgroup_product_128_columns", threads, &a, &b, 128);
        result.unwrap();
        let twice: Vec<f32> = d.chunks(64).flat_map(|row| [row, row].concat()).collect();
        let case = format!("wgmma m64n128k8 and m64n64k8, {threads} threads");
        parity::assert_same_bits(&[wide], &[twice], &case);
    }

    // The descriptors of a tile 3 KiB into dynamic shared memory, 8 values (32 bytes) along
    // its rows at a time: start address / 16, leading byte offset 1, stride 1024 / 16, layout 1.
    let mut device = Emulator::new();
    let out = device.alloc(8).unwrap();
    let shared = 3 * 1024 + 128;
    device
        .launch(
            "wgmma_descriptor_fields",
            [1, 1, 1],
            [1, 1, 1],
            shared,
            &[KernelArg::Ptr(out)],
        )
        .unwrap();
    let mut fields = vec![0.0f32; 8];
    device.download(out, &mut fields).unwrap();
    for k in 0..4 {
        let (low, high) = (fields[2 * k].to_bits(), fields[2 * k + 1].to_bits());
        assert_eq!(low, ((3 * 1024 + 32 * k as u32) >> 4) | 1 << 16, "k = {k}");
        assert_eq!(high, (1024 >> 4) | 1 << 30, "k = {k}");
    }
    let error = device
        .launch(
            "broken_shared_address_of_static_shared",
            [1, 1, 1],
            [32, 1, 1],
            shared,
            &[KernelArg::Ptr(out)],
        )
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("outside the block's dynamic shared memory"),
        "{error}"
    );
}

/// How the emulator must show a broken warpgroup kernel's mistake.
enum Caught {
    /// D reads NaN everywhere.
    Nan,
    /// D is off from the product by more than this, relative to its scale.
    WrongNumbers(f64),
    /// The launch fails with a message holding this.
    Reported(&'static str),
}

#[test]
fn the_emulator_catches_broken_warpgroup_mma_kernels() {
    let (a, b) = warpgroup_operands(128);
    let expected = warpgroup_reference(&a, &b, tf32);
    for (kernel, caught) in [
        ("broken_warpgroup_read_before_wait", Caught::Nan),
        ("broken_warpgroup_short_wait", Caught::Nan),
        (
            "broken_warpgroup_no_swizzle_descriptor",
            Caught::Reported("descriptor of layout type 0"),
        ),
        // Rows n of groups after the first read row n / 8 + n % 8 of the tile.
        ("broken_warpgroup_stride_of_128", Caught::WrongNumbers(0.1)),
        // Truncated operands: checked against the truncated product below too.
        ("broken_warpgroup_unrounded", Caught::WrongNumbers(1e-4)),
        (
            "broken_warpgroup_no_proxy_fence",
            Caught::Reported("no fence_async_proxy_shared in that thread"),
        ),
        (
            "broken_warpgroup_no_wgmma_fence",
            Caught::Reported("without a wgmma_fence"),
        ),
        // B read as the zeros written over it: D is 0.
        ("broken_warpgroup_overwritten_b", Caught::WrongNumbers(0.99)),
        // The same values, but landed after the issue and not fenced: reported when the wait
        // reads them.
        (
            "broken_warpgroup_unfenced_refill",
            Caught::Reported("retiring it"),
        ),
        (
            "broken_warpgroup_no_commit",
            Caught::Reported("2 never committed"),
        ),
        (
            "broken_warpgroup_no_wait",
            Caught::Reported("4 wgmma not retired when it exits"),
        ),
    ] {
        let (result, d) = warpgroup_product(kernel, 256, &a, &b);
        match caught {
            Caught::Nan => {
                result.unwrap();
                assert!(d.iter().all(|v| v.is_nan()), "{kernel}: D must read NaN");
            }
            Caught::WrongNumbers(off) => {
                result.unwrap();
                let error = relative_error(&d, &expected);
                println!("{kernel}: error {error:e}");
                assert!(error > off, "{kernel}: error {error:e}, not above {off:e}");
            }
            Caught::Reported(text) => {
                let message = result.unwrap_err();
                assert!(
                    message.contains(kernel) && message.contains(text),
                    "{kernel}: {message}"
                );
            }
        }
    }
    let (result, d) = warpgroup_product("broken_warpgroup_unrounded", 256, &a, &b);
    result.unwrap();
    let error = relative_error(&d, &warpgroup_reference(&a, &b, truncated_to_tf32));
    assert!(error < 1e-6, "the tensor cores truncate: error {error:e}");
}
