//! Benchmarks: every kernel at the model's real shapes, then the whole training step and
//! inference, on any backend. `whorl bench` and `cargo bench` run this same code.
//!
//! Work counted per call (4 bytes per float; each tensor read or written once, the compulsory
//! traffic; P = output pixels of a convolution = batch x height x width of its output grid):
//! - convolution forward, backward-data, backward-filter: 2 x P x 9 x cin x cout FLOPs each
//!   (nominal: an upsampled input counts the full 3x3 over the 2x grid, whatever shortcut a
//!   backend takes); bytes: input + kernel and bias + output (backward-data: dz + kernel + dx;
//!   backward-filter: input + dz + kernel and bias gradients);
//! - max pooling: 3 comparisons per output; bytes input + output (backward: x + dy + dx);
//! - upsampling: no FLOPs; bytes input + 4 x input (backward the same);
//! - MSE loss: 3 FLOPs per element, two tensors read; its gradient 3 FLOPs, 3 tensors;
//! - RMSprop: 8 FLOPs and 20 bytes per parameter (read w, g, v; write w, v).
//!
//! A training image costs 11.33 GFLOP (forward 3.79) at 224x224.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, Conv, ConvInput, Nhwc, RmsProp};
use crate::error::Result;
use crate::graph::{self, Network};
use crate::model::{Activation, Architecture, Layer};

/// Floating-point operations and bytes of memory traffic of one call.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Work {
    pub flops: f64,
    pub bytes: f64,
}

/// 2 x P x 9 x cin x cout: one convolution pass (forward, backward-data or backward-filter).
pub fn conv_flops(conv: &Conv) -> f64 {
    let slot = &conv.slot;
    2.0 * conv.output().pixels() as f64 * 9.0 * (slot.in_channels * slot.out_channels) as f64
}

fn floats(n: usize) -> f64 {
    4.0 * n as f64
}

pub fn conv_forward_work(conv: &Conv) -> Work {
    let params = conv.slot.bias.end - conv.slot.weight.start;
    Work {
        flops: conv_flops(conv),
        bytes: floats(conv.input.len() + params + conv.output().len()),
    }
}

pub fn conv_backward_data_work(conv: &Conv) -> Work {
    Work {
        flops: conv_flops(conv),
        bytes: floats(conv.output().len() + conv.slot.weight.len() + conv.input.len()),
    }
}

pub fn conv_backward_filter_work(conv: &Conv) -> Work {
    let params = conv.slot.bias.end - conv.slot.weight.start;
    Work {
        flops: conv_flops(conv),
        bytes: floats(conv.input.len() + conv.output().len() + params),
    }
}

/// FLOPs of one training image (forward, backward-data except the first layer's, and
/// backward-filter of every convolution) and of its forward pass.
pub fn model_flops(architecture: &Architecture, size: usize) -> Result<(f64, f64)> {
    let convs = graph::convolutions(architecture, size, size, 1)?;
    let forward: f64 = convs.iter().map(conv_flops).sum();
    let first = convs.first().map_or(0.0, conv_flops);
    Ok((3.0 * forward - first, forward))
}

/// One kernel's measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelTiming {
    pub name: String,
    pub shape: String,
    pub median_ms: f64,
    pub gflops: f64,
    pub gbs: f64,
    pub work: Work,
    /// Share of the device's peak FLOP/s (or bandwidth for kernels with no FLOPs), if known.
    pub percent_of_peak: Option<f64>,
}

/// What `whorl bench` reports; bench/torch_baseline.py writes the same top-level fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub framework: String,
    pub device: String,
    pub batch_size: usize,
    pub size: usize,
    pub repeats: usize,
    pub train_step_ms: f64,
    pub train_images_per_s: f64,
    pub inference_ms: f64,
    pub inference_images_per_s: f64,
    pub kernels: Vec<KernelTiming>,
}

/// A device's peaks: FP32 FLOP/s (no tensor cores) and memory bandwidth in bytes/s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peaks {
    pub flops: f64,
    pub bytes_per_s: f64,
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Median device seconds ([`Backend::time`]: CUDA events on a GPU) of `repeats` calls of `op`
/// after one warm-up; `op` gets the call's index so it can rotate its inputs.
fn time<B: Backend>(
    backend: &mut B,
    repeats: usize,
    mut op: impl FnMut(&mut B, usize) -> Result<()>,
) -> Result<f64> {
    backend.time(|b| op(b, 0))?;
    let samples = (0..repeats.max(1))
        .map(|i| Ok(backend.time(|b| op(b, i + 1))?.1))
        .collect::<Result<Vec<_>>>()?;
    Ok(median(samples))
}

/// Input sets rotated between calls, so no call finds its inputs in cache from the one before.
const ROTATIONS: usize = 3;

fn filled<B: Backend>(backend: &mut B, len: usize, seed: usize) -> Result<B::Buffer> {
    let values: Vec<f32> = (0..len)
        .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32) / 1000.0 - 0.25)
        .collect();
    let mut buffer = backend.alloc(len)?;
    backend.upload(&values, &mut buffer)?;
    Ok(buffer)
}

fn rotated<B: Backend>(backend: &mut B, len: usize) -> Result<Vec<B::Buffer>> {
    (0..ROTATIONS).map(|r| filled(backend, len, r)).collect()
}

fn timing(
    name: &str,
    shape: String,
    seconds: f64,
    work: Work,
    peaks: Option<Peaks>,
) -> KernelTiming {
    let percent_of_peak = peaks.map(|p| {
        if work.flops > 0.0 {
            100.0 * work.flops / seconds / p.flops
        } else {
            100.0 * work.bytes / seconds / p.bytes_per_s
        }
    });
    KernelTiming {
        name: name.to_string(),
        shape,
        median_ms: 1e3 * seconds,
        gflops: work.flops / seconds / 1e9,
        gbs: work.bytes / seconds / 1e9,
        work,
        percent_of_peak,
    }
}

fn conv_kernels<B: Backend>(
    backend: &mut B,
    conv: &Conv,
    repeats: usize,
    peaks: Option<Peaks>,
    out: &mut Vec<KernelTiming>,
) -> Result<()> {
    let count = conv.slot.bias.end;
    let params = filled(backend, count, 7)?;
    let inputs = rotated(backend, conv.input.len())?;
    let grads_out = rotated(backend, conv.output().len())?;
    let mut y = backend.alloc(conv.output().len())?;
    let mut dx = backend.alloc(conv.input.len())?;
    let mut grads = backend.alloc(count)?;
    let read = if conv.read == ConvInput::Upsampled2 {
        ", upsampled input"
    } else {
        ""
    };
    let shape = format!(
        "{}x{}x{}x{} -> {}{read}",
        conv.input.batch,
        conv.input.height,
        conv.input.width,
        conv.input.channels,
        conv.slot.out_channels
    );
    let name = conv.slot.name;
    let forward = time(backend, repeats, |b, i| {
        b.conv2d_forward(conv, &inputs[i % ROTATIONS], &params, &mut y)
    })?;
    out.push(timing(
        &format!("{name} forward"),
        shape.clone(),
        forward,
        conv_forward_work(conv),
        peaks,
    ));
    if name != "conv1" {
        let data = time(backend, repeats, |b, i| {
            b.conv2d_backward_data(conv, &grads_out[i % ROTATIONS], &params, &mut dx)
        })?;
        out.push(timing(
            &format!("{name} backward-data"),
            shape.clone(),
            data,
            conv_backward_data_work(conv),
            peaks,
        ));
    }
    let filter = time(backend, repeats, |b, i| {
        b.conv2d_backward_filter(
            conv,
            &inputs[i % ROTATIONS],
            &grads_out[i % ROTATIONS],
            &mut grads,
        )
    })?;
    out.push(timing(
        &format!("{name} backward-filter"),
        shape,
        filter,
        conv_backward_filter_work(conv),
        peaks,
    ));
    Ok(())
}

/// Times every kernel of a training step at `batch` images of `size` x `size`.
pub fn kernels<B: Backend>(
    backend: &mut B,
    batch: usize,
    size: usize,
    repeats: usize,
    peaks: Option<Peaks>,
) -> Result<Vec<KernelTiming>> {
    let architecture = Architecture::reference();
    let convs = graph::convolutions(&architecture, size, size, batch)?;
    backend.plan(&convs)?;
    let mut out = Vec::new();
    for conv in &convs {
        conv_kernels(backend, conv, repeats, peaks, &mut out)?;
    }
    let shapes = architecture.shapes(size, size)?;
    for (i, layer) in architecture.layers.iter().enumerate() {
        let s = shapes[i];
        let input = Nhwc {
            batch,
            height: s.height,
            width: s.width,
            channels: s.channels,
        };
        let shape = format!("{}x{}x{}x{}", batch, s.height, s.width, s.channels);
        let (len, name) = (input.len(), layer.name());
        match layer {
            Layer::MaxPool2 { .. } => {
                let xs = rotated(backend, len)?;
                let dy = filled(backend, len / 4, 3)?;
                let (mut y, mut dx) = (backend.alloc(len / 4)?, backend.alloc(len)?);
                let t = time(backend, repeats, |b, i| {
                    b.maxpool2_forward(input, &xs[i % ROTATIONS], &mut y)
                })?;
                let work = Work {
                    flops: 3.0 * (len / 4) as f64,
                    bytes: floats(len + len / 4),
                };
                out.push(timing(
                    &format!("{name} forward"),
                    shape.clone(),
                    t,
                    work,
                    peaks,
                ));
                let t = time(backend, repeats, |b, i| {
                    b.maxpool2_backward(input, &xs[i % ROTATIONS], &dy, &mut dx)
                })?;
                let work = Work {
                    flops: 3.0 * (len / 4) as f64,
                    bytes: floats(2 * len + len / 4),
                };
                out.push(timing(&format!("{name} backward"), shape, t, work, peaks));
            }
            Layer::Upsample2 { .. } => {
                let xs = rotated(backend, len)?;
                let dy = filled(backend, 4 * len, 3)?;
                let (mut y, mut dx) = (backend.alloc(4 * len)?, backend.alloc(len)?);
                let work = Work {
                    flops: 0.0,
                    bytes: floats(5 * len),
                };
                let t = time(backend, repeats, |b, i| {
                    b.upsample2_forward(input, &xs[i % ROTATIONS], &mut y)
                })?;
                out.push(timing(
                    &format!("{name} forward (folded into the next conv in training)"),
                    shape.clone(),
                    t,
                    work,
                    peaks,
                ));
                let t = time(backend, repeats, |b, _| {
                    b.upsample2_backward(input, &dy, &mut dx)
                })?;
                out.push(timing(
                    &format!("{name} backward (folded too)"),
                    shape,
                    t,
                    work,
                    peaks,
                ));
            }
            Layer::Conv2d { .. } => {}
        }
    }
    let len = batch * size * size;
    let shape = format!("{batch}x{size}x{size}x1");
    let (predictions, target) = (rotated(backend, len)?, filled(backend, len, 5)?);
    let mut grad = backend.alloc(len)?;
    let t = time(backend, repeats, |b, i| {
        b.mse_loss(len, &predictions[i % ROTATIONS], &target)
            .map(|_| ())
    })?;
    out.push(timing(
        "mse loss",
        shape.clone(),
        t,
        Work {
            flops: 3.0 * len as f64,
            bytes: floats(2 * len),
        },
        peaks,
    ));
    let t = time(backend, repeats, |b, i| {
        b.mse_backward(len, &predictions[i % ROTATIONS], &target, &mut grad)
    })?;
    out.push(timing(
        "mse backward",
        shape.clone(),
        t,
        Work {
            flops: 3.0 * len as f64,
            bytes: floats(3 * len),
        },
        peaks,
    ));
    let t = time(backend, repeats, |b, i| {
        let activation = if i % 2 == 0 {
            Activation::Relu
        } else {
            Activation::Sigmoid
        };
        b.activation_backward(activation, len, &target, &mut grad)
    })?;
    out.push(timing(
        "activation backward",
        shape,
        t,
        Work {
            flops: 2.0 * len as f64,
            bytes: floats(3 * len),
        },
        peaks,
    ));
    let count = architecture.param_count();
    let (mut w, g, mut v) = (
        filled(backend, count, 1)?,
        filled(backend, count, 2)?,
        filled(backend, count, 3)?,
    );
    let t = time(backend, repeats, |b, _| {
        b.rmsprop_update(RmsProp::default(), &mut w, &g, &mut v)
    })?;
    out.push(timing(
        "rmsprop (all parameters)",
        format!("{count} parameters"),
        t,
        Work {
            flops: 8.0 * count as f64,
            bytes: floats(5 * count),
        },
        peaks,
    ));
    Ok(out)
}

/// Median seconds of a whole training step and of a forward pass, after one warm-up each, in
/// the steady state of training: each step runs on the batch uploaded during the step before,
/// uploads the next one and reads its loss; wall clock, what a user waits for.
pub fn throughput<B: Backend>(
    backend: B,
    batch: usize,
    size: usize,
    repeats: usize,
) -> Result<(f64, f64)> {
    let architecture = Architecture::reference();
    let params = architecture.glorot_uniform(0);
    let mut net = Network::new(backend, architecture, size, size, batch, &params)?;
    let images: Vec<f32> = (0..batch * size * size)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    net.load_batch(&images)?;
    let mut run = |train: bool| -> Result<f64> {
        let start = Instant::now();
        if train {
            net.train_step_loaded()?;
        } else {
            net.forward_loaded()?;
        }
        net.load_batch(&images)?;
        net.loss()?;
        Ok(start.elapsed().as_secs_f64())
    };
    run(true)?;
    let train = (0..repeats.max(1))
        .map(|_| run(true))
        .collect::<Result<Vec<_>>>()?;
    run(false)?;
    let infer = (0..repeats.max(1))
        .map(|_| run(false))
        .collect::<Result<Vec<_>>>()?;
    Ok((median(train), median(infer)))
}

/// The whole benchmark on one backend: kernels, then training and inference throughput.
pub fn run<B: Backend>(
    mut backend: B,
    device: &str,
    batch: usize,
    size: usize,
    repeats: usize,
    peaks: Option<Peaks>,
) -> Result<BenchReport> {
    let kernels = kernels(&mut backend, batch, size, repeats, peaks)?;
    let (train, inference) = throughput(backend, batch, size, repeats)?;
    Ok(BenchReport {
        framework: format!("whorl {}", env!("CARGO_PKG_VERSION")),
        device: device.to_string(),
        batch_size: batch,
        size,
        repeats,
        train_step_ms: 1e3 * train,
        train_images_per_s: batch as f64 / train,
        inference_ms: 1e3 * inference,
        inference_images_per_s: batch as f64 / inference,
        kernels,
    })
}

/// The report as markdown tables.
pub fn markdown(report: &BenchReport) -> String {
    let mut out = format!(
        "{} on {}: batch {}, {}x{}, median of {} after a warm-up\n\n",
        report.framework,
        report.device,
        report.batch_size,
        report.size,
        report.size,
        report.repeats
    );
    out += "| kernel | shape | ms | GFLOP/s | GB/s | % of peak |\n|---|---|---:|---:|---:|---:|\n";
    for k in &report.kernels {
        out += &format!(
            "| {} | {} | {:.3} | {:.1} | {:.1} | {} |\n",
            k.name,
            k.shape,
            k.median_ms,
            k.gflops,
            k.gbs,
            k.percent_of_peak.map_or("-".into(), |p| format!("{p:.1}"))
        );
    }
    out += &format!(
        "\n| | ms | images/s |\n|---|---:|---:|\n| training step | {:.1} | {:.1} |\n| inference | {:.1} | {:.1} |\n",
        report.train_step_ms,
        report.train_images_per_s,
        report.inference_ms,
        report.inference_images_per_s
    );
    out
}

/// Ratios of two reports' throughputs (a / b), and of their kernels' times (b / a) where the
/// names match.
pub fn compare(a: &BenchReport, b: &BenchReport) -> String {
    let mut out = format!(
        "| | {} ({}) | {} ({}) | ratio |\n|---|---:|---:|---:|\n",
        a.framework, a.device, b.framework, b.device
    );
    out += &format!(
        "| training images/s | {:.1} | {:.1} | {:.2}x |\n",
        a.train_images_per_s,
        b.train_images_per_s,
        a.train_images_per_s / b.train_images_per_s
    );
    out += &format!(
        "| inference images/s | {:.1} | {:.1} | {:.2}x |\n",
        a.inference_images_per_s,
        b.inference_images_per_s,
        a.inference_images_per_s / b.inference_images_per_s
    );
    for k in &a.kernels {
        if let Some(other) = b.kernels.iter().find(|o| o.name == k.name) {
            out += &format!(
                "| {} ms | {:.3} | {:.3} | {:.2}x |\n",
                k.name,
                k.median_ms,
                other.median_ms,
                other.median_ms / k.median_ms
            );
        }
    }
    out
}
