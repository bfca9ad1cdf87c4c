//! Every CPU operation against its direct loop (float64), on small random shapes with odd
//! sizes and partial tiles, and every derivative against central finite differences.

mod common;

use common::{CONV_CASES, POOLED_CASES, conv, nhwc, parity, random, relative_error, widen};
use whorl::backend::cpu::CpuBackend;
use whorl::backend::reference as direct;
use whorl::backend::reference::ReferenceBackend;
use whorl::backend::{
    Adam, Backend, Conv, ConvInput, Nhwc, RmsProp, WinogradTile, backward_in_turn,
};
use whorl::model::Activation;

fn planned_cpu(conv: &Conv) -> CpuBackend {
    planned_cpu_by(conv, WinogradTile::TwoByTwo)
}

fn planned_cpu_by(conv: &Conv, tile: WinogradTile) -> CpuBackend {
    let mut cpu = CpuBackend::new().with_winograd_tile(tile);
    cpu.plan(std::slice::from_ref(conv)).unwrap();
    cpu
}

const READS: [ConvInput; 2] = [ConvInput::Direct, ConvInput::Upsampled2];

#[test]
fn convolutions_match_direct_loops() {
    for (case, &(input, cout)) in CONV_CASES.iter().enumerate() {
        for (read, activation) in READS
            .into_iter()
            .zip([Activation::Relu, Activation::Sigmoid])
        {
            let conv = conv(input, cout, read, activation);
            assert_cpu_passes_match_direct_loops(&conv, 10 * case as u64, BY_2X2);
        }
    }
}

#[test]
fn convolutions_by_4x4_tiles_match_direct_loops_and_differ_from_2x2s() {
    // The plain cases, with partial 4x4 tiles (odd sizes), and at 117 columns (30 tiles a row,
    // over the 29 a piece aims at) images cut into pieces of one tile row, within BY_4X4's
    // bound; every case with several input channels runs by Winograd, and its outputs must
    // then differ from F(2x2, 3x3)'s.
    let cases = CONV_CASES
        .into_iter()
        .chain([(nhwc(2, 30, 117, 5), 6), (nhwc(3, 13, 9, 16), 32)]);
    for (case, (input, cout)) in cases.enumerate() {
        let conv = conv(input, cout, ConvInput::Direct, Activation::Relu);
        let seed = 50 + case as u64;
        let by_4x4 = assert_cpu_passes_match_direct_loops(&conv, seed, BY_4X4);
        let by_2x2 = assert_cpu_passes_match_direct_loops(&conv, seed, BY_2X2);
        if input.channels > 1 && input.width > 1 {
            assert_ne!(
                parity::bits(&by_4x4[..1]),
                parity::bits(&by_2x2[..1]),
                "{conv:?}"
            );
        }
    }
}

#[test]
fn pooled_convolutions_match_direct_loops() {
    for (case, &(input, cout)) in POOLED_CASES.iter().enumerate() {
        for activation in [Activation::Relu, Activation::Sigmoid] {
            let conv = conv(input, cout, ConvInput::Direct, activation);
            let inputs = parity::conv_inputs(&conv, 10 * case as u64);
            let got = parity::pooled_outputs(&mut CpuBackend::new(), &conv, &inputs);
            let expected = parity::pooled_outputs(&mut ReferenceBackend, &conv, &inputs);
            let errors = parity::errors(&parity::POOLED_OUTPUTS, &got, &expected);
            parity::assert_within(&errors, 1e-5, &format!("{conv:?}"));
        }
    }
}

#[test]
fn pooled_convolution_gradients_match_finite_differences() {
    // L = sum(r * pooled): the reference's fused backward against the fused forward.
    let conv = conv(nhwc(2, 4, 6, 1), 3, ConvInput::Direct, Activation::Sigmoid);
    let params = widen(&random(conv.slot.bias.end, -0.5, 0.5, 1));
    let x = widen(&random(conv.input.len(), -1.0, 1.0, 2));
    let r = widen(&random(conv.output().len() / 4, -1.0, 1.0, 3));
    let loss = |params: &[f64]| {
        let mut pooled = vec![0.0; r.len()];
        ReferenceBackend
            .conv2d_pooled_forward(&conv, &x, &params.to_vec(), &mut pooled)
            .unwrap();
        dot(&r, &pooled)
    };
    let mut grads = vec![0.0; params.len()];
    ReferenceBackend
        .conv2d_pooled_backward_filter(&conv, &x, &params, &r, &mut grads)
        .unwrap();
    assert_close(&grads, &finite_differences(&params, loss), "pooled");
}

#[test]
fn pooling_a_convolution_of_several_channels_is_an_error() {
    let conv = conv(nhwc(1, 4, 4, 3), 2, ConvInput::Direct, Activation::Relu);
    let mut cpu = planned_cpu(&conv);
    let (x, params) = (vec![0.0; conv.input.len()], vec![0.0; conv.slot.bias.end]);
    let mut pooled = vec![0.0; conv.output().len() / 4];
    let error = cpu
        .conv2d_pooled_forward(&conv, &x, &params, &mut pooled)
        .unwrap_err()
        .to_string();
    assert!(error.contains("one input channel"), "{error}");
}

#[test]
fn upsampled_convolution_equals_upsampling_then_convolving() {
    // The reference backend's Upsampled2 path is itself checked against the two plain ops.
    let input = nhwc(2, 3, 5, 4);
    let conv = conv(input, 3, ConvInput::Upsampled2, Activation::Relu);
    let x = widen(&random(input.len(), -1.0, 1.0, 1));
    let params = widen(&random(conv.slot.bias.end, -0.5, 0.5, 2));
    let up = nhwc(2, 6, 10, 4);
    let mut upsampled = vec![0.0; up.len()];
    direct::upsample2_forward(input, &x, &mut upsampled);
    let mut expected = vec![0.0; up.pixels() * 3];
    let (kernel, bias) = (
        &params[conv.slot.weight.clone()],
        &params[conv.slot.bias.clone()],
    );
    direct::conv2d_forward(
        up,
        &upsampled,
        kernel,
        bias,
        Activation::Relu,
        &mut expected,
    );
    let mut y = vec![0.0; expected.len()];
    ReferenceBackend
        .conv2d_forward(&conv, &x, &params, &mut y)
        .unwrap();
    assert_eq!(y, expected);
}

#[test]
fn upsampled_convolutions_match_direct_loops_when_work_chunks_span_images() {
    // 11 images of 13 rows: 143 rows in chunks of 3, so chunks cross image borders, and the
    // box sums of dz at those borders must not reach into the next image.
    for (cout, seed) in [(5, 70), (1, 80)] {
        let conv = conv(
            nhwc(11, 13, 7, 3),
            cout,
            ConvInput::Upsampled2,
            Activation::Relu,
        );
        assert_cpu_passes_match_direct_loops(&conv, seed, BY_2X2);
    }
}

#[test]
fn upsampled_convolutions_match_direct_loops_when_an_image_spans_pieces_of_work() {
    // 117 source columns make 30 tiles of 4 (the backward passes) and 39 of 3 (the forward)
    // across, more than a piece of work takes, so each image's 9 rows are several pieces; the
    // backward passes' last tile row has one row and the last tile of each row one column.
    let conv = conv(
        nhwc(2, 9, 117, 5),
        6,
        ConvInput::Upsampled2,
        Activation::Relu,
    );
    assert_cpu_passes_match_direct_loops(&conv, 90, BY_2X2);
}

/// F(2x2, 3x3), whose passes hold 1e-5 of each result's scale.
const BY_2X2: (WinogradTile, f64) = (WinogradTile::TwoByTwo, 1e-5);
/// F(4x4, 3x3), which rounds about ten times as much (at most 1e-5 seen).
const BY_4X4: (WinogradTile, f64) = (WinogradTile::FourByFour, 3e-5);

/// The CPU engine's forward, backward-data and kernel-gradient passes of `conv`, its plain
/// convolutions by `tile`, against the float64 direct loops, on random inputs from `seed`,
/// within `tolerance` of each result's scale; returns the engine's outputs.
fn assert_cpu_passes_match_direct_loops(
    conv: &Conv,
    seed: u64,
    (tile, tolerance): (WinogradTile, f64),
) -> Vec<Vec<f32>> {
    let inputs = parity::conv_inputs(conv, seed);
    let mut cpu = CpuBackend::new().with_winograd_tile(tile);
    let got = parity::conv_outputs(&mut cpu, conv, &inputs);
    let expected = parity::conv_outputs(&mut ReferenceBackend, conv, &inputs);
    let errors = parity::errors(&parity::CONV_OUTPUTS, &got, &expected);
    parity::assert_within(&errors, tolerance, &format!("{conv:?}"));
    got
}

#[test]
fn conv2d_backward_filter_is_deterministic_across_thread_counts() {
    // Each algorithm: Winograd (plain, 4 channels in), direct loops (plain, one channel in),
    // Winograd over box sums (upsampled), and box sums as a GEMM of width 9 (upsampled, one
    // channel out).
    // Winograd by F(4x4, 3x3) too.
    for (read, cin, cout, tile) in [
        (ConvInput::Direct, 4, 6, WinogradTile::TwoByTwo),
        (ConvInput::Direct, 4, 6, WinogradTile::FourByFour),
        (ConvInput::Direct, 1, 6, WinogradTile::TwoByTwo),
        (ConvInput::Upsampled2, 4, 6, WinogradTile::TwoByTwo),
        (ConvInput::Upsampled2, 4, 1, WinogradTile::TwoByTwo),
    ] {
        let conv = conv(nhwc(3, 19, 23, cin), cout, read, Activation::Relu);
        let x = random(conv.input.len(), -1.0, 1.0, 1);
        let dz = random(conv.output().len(), -1.0, 1.0, 2);
        let grads_with = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut grads = vec![0.0; conv.slot.bias.end];
                planned_cpu_by(&conv, tile)
                    .conv2d_backward_filter(&conv, &x, &dz, &mut grads)
                    .unwrap();
                grads
            })
        };
        let one = grads_with(1);
        assert_eq!(one, grads_with(2), "{read:?} {cin} to {cout} {tile:?}");
        assert_eq!(one, grads_with(5), "{read:?} {cin} to {cout} {tile:?}");
    }
}

#[test]
fn the_whole_backward_pass_gives_the_three_passes_bits() {
    // conv6's kind runs as one pass over x, the others as the kernel gradient and then
    // backward-data with the input's activation derivative in its epilogue; the results must be
    // those of the kernel gradient, backward-data and the input's activation derivative in turn,
    // to the bit, on 1 and 3 threads, and follow the float64 reference.
    let several_outputs = CONV_CASES
        .iter()
        .filter(|&&(_, cout)| cout > 1)
        .flat_map(|&(input, cout)| READS.map(|read| conv(input, cout, read, Activation::Relu)));
    // An upsampled input's passes share their transform of dz, in groups of pieces of work:
    // 117 columns make a piece of each row of 4x4 tiles, 9 images of 30 rows 72 pieces, more
    // than its 16 groups, so groups hold five pieces (the last two) across images, each with
    // its rows of dx (the last of each image two rows).
    let many_pieces = conv(
        nhwc(9, 30, 117, 3),
        4,
        ConvInput::Upsampled2,
        Activation::Relu,
    );
    let cases: Vec<Conv> = parity::fused_backward_cases()
        .into_iter()
        .chain(several_outputs)
        .chain([many_pieces])
        .collect();
    for (case, conv) in cases.iter().enumerate() {
        for x_activation in parity::X_ACTIVATIONS {
            let [x, dz, params] =
                parity::fused_backward_inputs(conv, x_activation, 30 * case as u64);
            let run = |whole: bool, threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut cpu = planned_cpu(conv);
                    let mut grads = vec![f32::NAN; conv.slot.bias.end];
                    let mut dx = vec![f32::NAN; conv.input.len()];
                    let x = (&x, x_activation);
                    if whole {
                        cpu.conv2d_backward(conv, x, &dz, &params, &mut grads, &mut dx)
                    } else {
                        backward_in_turn(&mut cpu, conv, x, &dz, &params, &mut grads, &mut dx)
                    }
                    .unwrap();
                    vec![dx, grads]
                })
            };
            let context = format!("{x_activation:?}, {conv:?}");
            let whole = run(true, 3);
            parity::assert_same_bits(&whole, &run(false, 3), &context);
            parity::assert_same_bits(&whole, &run(true, 1), &context);
        }
        let x_activation = Some(Activation::Relu);
        let inputs = parity::fused_backward_inputs(conv, x_activation, 7);
        let got =
            parity::fused_backward_outputs(&mut CpuBackend::new(), conv, &inputs, x_activation);
        let expected =
            parity::fused_backward_outputs(&mut ReferenceBackend, conv, &inputs, x_activation);
        let errors = parity::errors(&parity::FUSED_BACKWARD_OUTPUTS, &got, &expected);
        parity::assert_within(&errors, 1e-5, &format!("{conv:?}"));
    }
}

#[test]
fn pooled_convolution_gradient_is_deterministic_across_thread_counts() {
    let conv = conv(nhwc(3, 18, 22, 1), 6, ConvInput::Direct, Activation::Relu);
    let [x, d_pooled, params] = parity::conv_inputs(&conv, 5);
    let grads_with = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut grads = vec![0.0; conv.slot.bias.end];
            planned_cpu(&conv)
                .conv2d_pooled_backward_filter(&conv, &x, &params, &d_pooled, &mut grads)
                .unwrap();
            grads
        })
    };
    let one = grads_with(1);
    assert_eq!(one, grads_with(2));
    assert_eq!(one, grads_with(5));
}

#[test]
fn unplanned_convolution_is_an_error() {
    let small = conv(nhwc(1, 4, 4, 2), 2, ConvInput::Direct, Activation::Relu);
    let wide = conv(nhwc(1, 4, 4, 8), 8, ConvInput::Direct, Activation::Relu);
    let mut cpu = planned_cpu(&small);
    let (x, mut y) = (vec![0.0; 128], vec![0.0; 128]);
    let params = vec![0.0; wide.slot.bias.end];
    let error = cpu.conv2d_forward(&wide, &x, &params, &mut y).unwrap_err();
    assert!(error.to_string().contains("no scratch planned"), "{error}");
}

const POOL_CASES: [Nhwc; 4] = [
    Nhwc {
        batch: 1,
        height: 2,
        width: 2,
        channels: 1,
    },
    Nhwc {
        batch: 2,
        height: 6,
        width: 10,
        channels: 3,
    },
    Nhwc {
        batch: 3,
        height: 8,
        width: 14,
        channels: 5,
    },
    Nhwc {
        batch: 1,
        height: 4,
        width: 2,
        channels: 64,
    },
];

#[test]
fn maxpool2_matches_direct_loops() {
    for (case, &input) in POOL_CASES.iter().enumerate() {
        let x = random(input.len(), -1.0, 1.0, case as u64);
        let dy = random(input.len() / 4, -1.0, 1.0, 50 + case as u64);
        let mut cpu = CpuBackend::new();
        let mut y = vec![f32::NAN; input.len() / 4];
        cpu.maxpool2_forward(input, &x, &mut y).unwrap();
        let mut expected = vec![0.0; y.len()];
        direct::maxpool2_forward(input, &widen(&x), &mut expected);
        assert_eq!(relative_error(&y, &expected), 0.0, "forward {input:?}");

        // The routed gradient alone, then times the derivative of the activation that
        // produced x (x as ReLU's or sigmoid's output would be).
        for x_activation in [None, Some(Activation::Relu), Some(Activation::Sigmoid)] {
            let x: Vec<f32> = match x_activation {
                Some(Activation::Relu) => x.iter().map(|v| v.max(0.0)).collect(),
                Some(Activation::Sigmoid) => x.iter().map(|v| 0.5 * (v + 1.0)).collect(),
                None => x.clone(),
            };
            let mut dx = vec![f32::NAN; input.len()];
            cpu.maxpool2_backward(input, (&x, x_activation), &dy, &mut dx)
                .unwrap();
            let mut expected = vec![0.0; dx.len()];
            direct::maxpool2_backward(input, &widen(&x), &widen(&dy), &mut expected);
            if let Some(activation) = x_activation {
                direct::activation_backward(activation, &widen(&x), &mut expected);
            }
            // Routing is exact; sigmoid's derivative is a float32 product.
            let tolerance = match x_activation {
                Some(Activation::Sigmoid) => 1e-6,
                _ => 0.0,
            };
            let error = relative_error(&dx, &expected);
            assert!(
                error <= tolerance,
                "backward {input:?} {x_activation:?}: {error:e}"
            );
        }
    }
}

#[test]
fn maxpool2_backward_routes_ties_to_the_first_maximum() {
    // One 2x2 window, channels-last: channel 0 holds [1, 3, 3, 3], channel 1 [5, 2, 5, 5].
    let input = nhwc(1, 2, 2, 2);
    let x = vec![1.0, 5.0, 3.0, 2.0, 3.0, 5.0, 3.0, 5.0];
    let dy = vec![10.0, 20.0];
    let mut dx = vec![f32::NAN; 8];
    CpuBackend::new()
        .maxpool2_backward(input, (&x, None), &dy, &mut dx)
        .unwrap();
    assert_eq!(dx, [0.0, 20.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn upsample2_matches_direct_loops() {
    for (case, &input) in POOL_CASES.iter().enumerate() {
        let x = random(input.len(), -1.0, 1.0, case as u64);
        let dy = random(4 * input.len(), -1.0, 1.0, 70 + case as u64);
        let mut cpu = CpuBackend::new();
        let mut y = vec![f32::NAN; 4 * input.len()];
        cpu.upsample2_forward(input, &x, &mut y).unwrap();
        let mut expected = vec![0.0; y.len()];
        direct::upsample2_forward(input, &widen(&x), &mut expected);
        assert_eq!(relative_error(&y, &expected), 0.0, "forward {input:?}");

        let mut dx = vec![f32::NAN; input.len()];
        cpu.upsample2_backward(input, &dy, &mut dx).unwrap();
        let mut expected = vec![0.0; dx.len()];
        direct::upsample2_backward(input, &widen(&dy), &mut expected);
        let error = relative_error(&dx, &expected);
        assert!(error < 1e-6, "backward {input:?}: error {error:e}");
    }
}

#[test]
fn activations_mse_and_optimizers_match_direct_loops() {
    let len = 40_003;
    let y = random(len, -1.0, 1.0, 1);
    let target = random(len, 0.0, 1.0, 2);
    let upstream = random(len, -1.0, 1.0, 3);
    let mut cpu = CpuBackend::new();
    cpu.plan(&[]).unwrap();
    for activation in [Activation::Relu, Activation::Sigmoid] {
        let mut grad = upstream.clone();
        cpu.activation_backward(activation, len, &y, &mut grad)
            .unwrap();
        let mut expected = widen(&upstream);
        direct::activation_backward(activation, &widen(&y), &mut expected);
        assert!(relative_error(&grad, &expected) < 1e-6, "{activation:?}");
    }

    let loss = cpu.mse_loss(len, &y, &target).unwrap();
    let expected = direct::mse_loss(&widen(&y), &widen(&target));
    assert!((loss - expected).abs() < 1e-9 * expected);
    let mut grad = vec![f32::NAN; len];
    cpu.mse_backward(len, &y, &target, &mut grad).unwrap();
    let mut expected = vec![0.0; len];
    direct::mse_backward(&widen(&y), &widen(&target), &mut expected);
    assert!(relative_error(&grad, &expected) < 1e-6);

    let hyper = RmsProp::default();
    let (mut w, g, mut v) = (y.clone(), upstream.clone(), random(len, 0.0, 1e-3, 4));
    let (mut w64, mut v64) = (widen(&w), widen(&v));
    for _ in 0..3 {
        cpu.rmsprop_update(hyper, &mut w, &g, &mut v).unwrap();
        direct::rmsprop_update(hyper, &mut w64, &widen(&g), &mut v64);
    }
    assert!(relative_error(&w, &w64) < 1e-6);
    assert!(relative_error(&v, &v64) < 1e-6);

    let hyper = Adam::default();
    let (mut w, mut m, mut v) = (y.clone(), vec![0.0; len], vec![0.0; len]);
    let (mut w64, mut m64, mut v64) = (widen(&w), vec![0.0; len], vec![0.0; len]);
    for t in 1..4 {
        cpu.adam_update(hyper, t, &mut w, &g, &mut m, &mut v)
            .unwrap();
        direct::adam_update(hyper, t, &mut w64, &widen(&g), &mut m64, &mut v64);
    }
    assert!(relative_error(&w, &w64) < 1e-6);
    assert!(relative_error(&m, &m64) < 1e-6);
    assert!(relative_error(&v, &v64) < 1e-6);
}

/// Central differences of `loss` at `x`, one coordinate at a time.
fn finite_differences(x: &[f64], loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let h = 1e-6;
    let mut probe = x.to_vec();
    (0..x.len())
        .map(|i| {
            probe[i] = x[i] + h;
            let up = loss(&probe);
            probe[i] = x[i] - h;
            let down = loss(&probe);
            probe[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

fn assert_close(analytic: &[f64], numeric: &[f64], what: &str) {
    let scale = numeric.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    for (i, (a, n)) in analytic.iter().zip(numeric).enumerate() {
        assert!(
            (a - n).abs() <= 1e-6 * scale,
            "{what}[{i}]: analytic {a} vs finite differences {n}"
        );
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    let input = nhwc(2, 4, 5, 3);
    let cout = 2;
    let x = widen(&random(input.len(), -1.0, 1.0, 1));
    let kernel = widen(&random(9 * 3 * cout, -0.5, 0.5, 2));
    let bias = widen(&random(cout, -0.5, 0.5, 3));
    let r = widen(&random(input.pixels() * cout, -1.0, 1.0, 4));
    let activation = Activation::Sigmoid;
    let forward = |x: &[f64], kernel: &[f64], bias: &[f64]| {
        let mut y = vec![0.0; r.len()];
        direct::conv2d_forward(input, x, kernel, bias, activation, &mut y);
        y
    };
    // L = sum(r * y), so dL/dy = r.
    let y = forward(&x, &kernel, &bias);
    let mut dz = r.clone();
    direct::activation_backward(activation, &y, &mut dz);
    let mut dx = vec![0.0; x.len()];
    direct::conv2d_backward_data(input, &dz, &kernel, cout, &mut dx);
    let (mut dkernel, mut dbias) = (vec![0.0; kernel.len()], vec![0.0; cout]);
    direct::conv2d_backward_filter(input, &x, &dz, &mut dkernel, &mut dbias);

    let numeric = finite_differences(&x, |x| dot(&r, &forward(x, &kernel, &bias)));
    assert_close(&dx, &numeric, "dx");
    let numeric = finite_differences(&kernel, |k| dot(&r, &forward(&x, k, &bias)));
    assert_close(&dkernel, &numeric, "dkernel");
    let numeric = finite_differences(&bias, |b| dot(&r, &forward(&x, &kernel, b)));
    assert_close(&dbias, &numeric, "dbias");
}

#[test]
fn relu_gradient_matches_finite_differences() {
    // Values kept away from the kink at 0, where the derivative is undefined.
    let z: Vec<f64> = widen(&random(64, 0.05, 1.0, 1))
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 2 == 0 { *v } else { -v })
        .collect();
    let r = widen(&random(64, -1.0, 1.0, 2));
    let relu = |z: &[f64]| z.iter().map(|v| v.max(0.0)).collect::<Vec<_>>();
    let mut dz = r.clone();
    direct::activation_backward(Activation::Relu, &relu(&z), &mut dz);
    let numeric = finite_differences(&z, |z| dot(&r, &relu(z)));
    assert_close(&dz, &numeric, "relu");
}

#[test]
fn pooling_and_upsampling_gradients_match_finite_differences() {
    let input = nhwc(2, 4, 6, 3);
    let x = widen(&random(input.len(), -1.0, 1.0, 1));
    let r = widen(&random(input.len() / 4, -1.0, 1.0, 2));
    let pool = |x: &[f64]| {
        let mut y = vec![0.0; r.len()];
        direct::maxpool2_forward(input, x, &mut y);
        y
    };
    let mut dx = vec![0.0; x.len()];
    direct::maxpool2_backward(input, &x, &r, &mut dx);
    assert_close(
        &dx,
        &finite_differences(&x, |x| dot(&r, &pool(x))),
        "maxpool",
    );

    let r = widen(&random(4 * input.len(), -1.0, 1.0, 3));
    let upsample = |x: &[f64]| {
        let mut y = vec![0.0; r.len()];
        direct::upsample2_forward(input, x, &mut y);
        y
    };
    let mut dx = vec![0.0; x.len()];
    direct::upsample2_backward(input, &r, &mut dx);
    assert_close(
        &dx,
        &finite_differences(&x, |x| dot(&r, &upsample(x))),
        "upsample",
    );
}

#[test]
fn mse_gradient_matches_finite_differences() {
    let prediction = widen(&random(30, 0.0, 1.0, 1));
    let target = widen(&random(30, 0.0, 1.0, 2));
    let mut grad = vec![0.0; 30];
    direct::mse_backward(&prediction, &target, &mut grad);
    let numeric = finite_differences(&prediction, |p| direct::mse_loss(p, &target));
    assert_close(&grad, &numeric, "mse");
}
