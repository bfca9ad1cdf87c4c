//! Helpers shared by the integration tests.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use whorl::backend::{Conv, ConvInput, Nhwc};
use whorl::model::{Activation, ParamSlot};

/// max |actual - expected| / max |expected|: the error relative to the tensor's scale. A NaN
/// anywhere in `actual` fails (f64::max would skip it).
pub fn relative_error(actual: &[f32], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "tensor lengths differ");
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| (f64::from(a) - e).abs())
        .try_fold(0.0f64, |m, d| (!d.is_nan()).then_some(m.max(d)));
    let worst = worst.unwrap_or(f64::NAN);
    assert!(worst.is_finite(), "non-finite values in the result");
    if scale == 0.0 { worst } else { worst / scale }
}

pub fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// TF32 as cvt.rna.tf32.f32 rounds: 10 mantissa bits, nearest, ties away from zero.
pub fn tf32(value: f32) -> f32 {
    f32::from_bits((value.to_bits() + 0x1000) & !0x1fff)
}

/// BF16 as cvt.rn.bf16x2.f32 rounds: 7 mantissa bits, nearest, ties to even.
pub fn bf16(value: f32) -> f32 {
    half::bf16::from_f32(value).to_f32()
}

/// The FP32 convolution kernels that are GEMMs: the gathered GEMMs and the kernel-gradient
/// partials (the plain convolutions run by Winograd instead in FP32).
pub const FP32_GEMM_KERNELS: [&str; 6] = [
    "conv2d_gathered_gemm",
    "conv2d_gathered_gemm_wide",
    "conv2d_gathered_gemm_narrow",
    "conv2d_gathered_gemm_pooled",
    "conv2d_filter_partials",
    "conv2d_filter_partials_wide",
];

/// Uniform values in [low, high), reproducible from `seed`.
pub fn random(len: usize, low: f32, high: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(low..high)).collect()
}

/// Writes `count` small striped grayscale PNGs (like ridges, at varying angles) into `dir`.
/// Trains on `batches` as training does — each batch uploaded while the step before it is in
/// flight — and returns every step's loss.
pub fn pipelined_losses<B: whorl::backend::Backend>(
    net: &mut whorl::graph::Network<B>,
    batches: &[Vec<f32>],
) -> Vec<f64> {
    net.load_batch(&batches[0]).unwrap();
    (0..batches.len())
        .map(|step| {
            net.train_step_loaded().unwrap();
            if let Some(next) = batches.get(step + 1) {
                net.load_batch(next).unwrap();
            }
            net.loss().unwrap()
        })
        .collect()
}

pub fn write_striped_images(dir: &std::path::Path, count: usize, side: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for n in 0..count {
        let angle = n as f32 * 0.37;
        let image = image::GrayImage::from_fn(side, side, |x, y| {
            let t = x as f32 * angle.cos() + y as f32 * angle.sin();
            image::Luma([(127.0 + 100.0 * (t * 0.8).sin()) as u8])
        });
        image.save(dir.join(format!("print-{n:03}.png"))).unwrap();
    }
}

pub fn nhwc(batch: usize, height: usize, width: usize, channels: usize) -> Nhwc {
    Nhwc {
        batch,
        height,
        width,
        channels,
    }
}

/// A convolution of `input` to `cout` channels, its parameters at the start of the buffer.
pub fn conv(input: Nhwc, cout: usize, read: ConvInput, activation: Activation) -> Conv {
    let cin = input.channels;
    let weight = 0..9 * cin * cout;
    let slot = ParamSlot {
        name: "conv",
        in_channels: cin,
        out_channels: cout,
        bias: weight.end..weight.end + cout,
        weight,
    };
    Conv {
        input,
        read,
        slot,
        activation,
    }
}

/// (input shape, output channels): single pixels, odd sizes, many tiles, wide channels.
pub const CONV_CASES: [(Nhwc, usize); 12] = [
    (
        Nhwc {
            batch: 1,
            height: 1,
            width: 1,
            channels: 1,
        },
        1,
    ),
    (
        Nhwc {
            batch: 2,
            height: 5,
            width: 7,
            channels: 3,
        },
        5,
    ),
    (
        Nhwc {
            batch: 3,
            height: 19,
            width: 23,
            channels: 4,
        },
        6,
    ),
    (
        Nhwc {
            batch: 1,
            height: 12,
            width: 12,
            channels: 1,
        },
        32,
    ),
    (
        Nhwc {
            batch: 2,
            height: 9,
            width: 6,
            channels: 64,
        },
        128,
    ),
    (
        Nhwc {
            batch: 2,
            height: 8,
            width: 8,
            channels: 64,
        },
        1,
    ),
    // Widths of whole tiles, whose strips need no padding: the kernel gradients' transforms
    // read their rows' copies where they lie.
    (
        Nhwc {
            batch: 2,
            height: 6,
            width: 8,
            channels: 20,
        },
        24,
    ),
    // 32 channels in and out, and pieces of 32 tiles (8 for the box sums): the CPU engine's
    // GEMMs run by blocks of 8 rows by 32 columns (`shallow_product`).
    (
        Nhwc {
            batch: 1,
            height: 8,
            width: 16,
            channels: 32,
        },
        32,
    ),
    // Thin convolutions (like conv6 and conv1) with channel counts that are not multiples of
    // a vector width.
    (
        Nhwc {
            batch: 1,
            height: 5,
            width: 7,
            channels: 20,
        },
        1,
    ),
    (
        Nhwc {
            batch: 2,
            height: 5,
            width: 3,
            channels: 1,
        },
        33,
    ),
    // Grids of more than one tile of the one-channel kernel gradient (256 pixels), with runs
    // of the one-channel forward kernels away from the image's border.
    (
        Nhwc {
            batch: 1,
            height: 17,
            width: 17,
            channels: 1,
        },
        4,
    ),
    (
        Nhwc {
            batch: 1,
            height: 20,
            width: 20,
            channels: 16,
        },
        1,
    ),
];

/// (one-channel input shape, output channels) of a convolution with its 2x2 max pooling fused:
/// a single window, widths that are not a multiple of a run, channel counts that are not
/// multiples of a vector width or whose vectors are odd in number (24: one of 16 channels and
/// eight past it with AVX-512, three of 8 with AVX2), and a grid of many chunks.
pub const POOLED_CASES: [(Nhwc, usize); 6] = [
    (
        Nhwc {
            batch: 1,
            height: 2,
            width: 2,
            channels: 1,
        },
        1,
    ),
    (
        Nhwc {
            batch: 2,
            height: 6,
            width: 10,
            channels: 1,
        },
        5,
    ),
    (
        Nhwc {
            batch: 1,
            height: 12,
            width: 12,
            channels: 1,
        },
        32,
    ),
    (
        Nhwc {
            batch: 2,
            height: 18,
            width: 34,
            channels: 1,
        },
        33,
    ),
    (
        Nhwc {
            batch: 3,
            height: 40,
            width: 48,
            channels: 1,
        },
        32,
    ),
    (
        Nhwc {
            batch: 1,
            height: 4,
            width: 6,
            channels: 1,
        },
        24,
    ),
];

/// Says loudly that a test did not run and why: straight to stderr, past the test harness's
/// output capture, so it shows in every `cargo test` run.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Runs the whorl binary.
pub fn whorl(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_whorl"))
        .args(args)
        .output()
        .expect("whorl runs")
}

/// Runs the whorl binary and asserts it succeeded.
pub fn whorl_ok(args: &[&str]) -> std::process::Output {
    let output = whorl(args);
    assert!(
        output.status.success(),
        "whorl {args:?} failed:\n{}",
        text(&output)
    );
    output
}

/// stderr then stdout, as text.
pub fn text(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout)
}

pub fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

pub mod parity;
pub mod tiles;
