//! Timing: every kernel of a training step as a table of cases (a name, the work it does and
//! the call to time), then the whole training step and inference.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::report::{KernelTiming, median};
use super::work::{self, ConvPass, Work};
use crate::backend::gpu::cuda::Peaks;
use crate::backend::{Adam, Backend, Conv, ConvInput, Nhwc, RmsProp};
use crate::error::Result;
use crate::graph::{self, Network};
use crate::model::{Activation, Architecture, Layer};

/// Input sets rotated between calls, so no call finds its inputs in cache from the one before.
const ROTATIONS: usize = 3;

/// A call to time; it gets the call's index so it can rotate its inputs.
type TimedCall<'a, B> = Box<dyn FnMut(&mut B, usize) -> Result<()> + 'a>;

/// One row of the kernel table.
struct Case<'a, B> {
    name: String,
    shape: String,
    work: Work,
    run: TimedCall<'a, B>,
}

impl<'a, B> Case<'a, B> {
    fn new(
        name: impl Into<String>,
        shape: &str,
        work: Work,
        run: impl FnMut(&mut B, usize) -> Result<()> + 'a,
    ) -> Self {
        Case {
            name: name.into(),
            shape: shape.to_string(),
            work,
            run: Box::new(run),
        }
    }
}

/// The kernel table as it is timed, and a spinner on the terminal naming the row being timed.
struct Table {
    rows: Vec<KernelTiming>,
    progress: ProgressBar,
}

/// Median device seconds ([`Backend::time`]: CUDA events on a GPU) of `repeats` calls of each
/// case after one warm-up.
fn measure<B: Backend>(
    backend: &mut B,
    cases: Vec<Case<'_, B>>,
    repeats: usize,
    peaks: Option<Peaks>,
    out: &mut Table,
) -> Result<()> {
    for mut case in cases {
        out.progress.set_message(case.name.clone());
        backend.time(|b| (case.run)(b, 0))?;
        let samples = (0..repeats.max(1))
            .map(|i| Ok(backend.time(|b| (case.run)(b, i + 1))?.1))
            .collect::<Result<Vec<_>>>()?;
        out.rows.push(KernelTiming::new(
            case.name, case.shape, &samples, case.work, peaks,
        ));
    }
    Ok(())
}

/// A spinner on standard error (drawn only on a terminal): `what`, then its message (the row
/// being timed), and the time since it started.
pub(super) fn spinner(what: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template(&format!("{{spinner}} {what} {{msg}} ({{elapsed}})"))
            .expect("valid template"),
    );
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    spinner
}

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

/// A convolution's parameters and its ROTATIONS inputs, as every convolution row fills them.
fn conv_operands<B: Backend>(backend: &mut B, conv: &Conv) -> Result<(B::Buffer, Vec<B::Buffer>)> {
    let params = filled(backend, conv.slot.bias.end, 7)?;
    Ok((params, rotated(backend, conv.input.len())?))
}

fn shape_text(s: Nhwc) -> String {
    format!("{}x{}x{}x{}", s.batch, s.height, s.width, s.channels)
}

/// ", upsampled input" for a convolution that reads its input upsampled.
fn upsampled_text(conv: &Conv) -> &'static str {
    match conv.read {
        ConvInput::Upsampled2 => ", upsampled input",
        ConvInput::Direct => "",
    }
}

/// A convolution's passes: forward, backward-data (not for the first layer, whose input needs
/// no gradient) and backward-filter.
fn conv_timings<B: Backend>(
    backend: &mut B,
    (conv, input_activation): (&Conv, Option<Activation>),
    repeats: usize,
    peaks: Option<Peaks>,
    out: &mut Table,
) -> Result<()> {
    let count = conv.slot.bias.end;
    let (params, inputs) = conv_operands(backend, conv)?;
    let grads_out = rotated(backend, conv.output().len())?;
    let mut y = backend.alloc(conv.output().len())?;
    let mut dx = backend.alloc(conv.input.len())?;
    let mut grads = backend.alloc(count)?;
    let shape = format!(
        "{} -> {}{}",
        shape_text(conv.input),
        conv.slot.out_channels,
        upsampled_text(conv)
    );
    let name = |pass: ConvPass| format!("{} {}", conv.slot.name, pass.name());
    let algorithm = backend.conv_algorithm();
    let work = |pass: ConvPass| work::conv_work(conv, pass, algorithm);
    let mut cases = vec![Case::new(
        name(ConvPass::Forward),
        &shape,
        work(ConvPass::Forward),
        |b: &mut B, i| b.conv2d_forward(conv, &inputs[i % ROTATIONS], &params, &mut y),
    )];
    if conv.slot.name != "conv1" {
        cases.push(Case::new(
            name(ConvPass::BackwardData),
            &shape,
            work(ConvPass::BackwardData),
            |b: &mut B, i| {
                b.conv2d_backward_data(conv, &grads_out[i % ROTATIONS], &params, &mut dx)
            },
        ));
    }
    cases.push(Case::new(
        name(ConvPass::BackwardFilter),
        &shape,
        work(ConvPass::BackwardFilter),
        |b: &mut B, i| {
            let (x, dz) = (&inputs[i % ROTATIONS], &grads_out[i % ROTATIONS]);
            b.conv2d_backward_filter(conv, x, dz, &mut grads)
        },
    ));
    measure(backend, cases, repeats, peaks, out)?;
    // The whole backward pass as training runs it, where its input is a convolution's output.
    let Some(activation) = input_activation else {
        return Ok(());
    };
    let whole = Case::new(
        format!(
            "{} backward, as in training (both passes and the input's {} derivative)",
            conv.slot.name,
            activation.name()
        ),
        &shape,
        work::conv_backward_work(conv, algorithm),
        |b: &mut B, i| {
            let (x, dz) = (&inputs[i % ROTATIONS], &grads_out[i % ROTATIONS]);
            b.conv2d_backward(
                conv,
                (x, Some(activation)),
                dz,
                &params,
                &mut grads,
                &mut dx,
            )
        },
    );
    measure(backend, vec![whole], repeats, peaks, out)
}

/// A convolution and the max pooling after it in one call, as training runs them.
fn conv_and_pool_timings<B: Backend>(
    backend: &mut B,
    (conv, pool): (&Conv, &Layer),
    repeats: usize,
    peaks: Option<Peaks>,
    out: &mut Table,
) -> Result<()> {
    let (params, inputs) = conv_operands(backend, conv)?;
    let output = conv.output().len();
    let (mut y, mut pooled) = (backend.alloc(output)?, backend.alloc(output / 4)?);
    let shape = format!(
        "{} -> {}, then 2x2 max pooled",
        shape_text(conv.input),
        conv.slot.out_channels
    );
    let name = format!(
        "{} forward + {} (one call, as in training)",
        conv.slot.name,
        pool.name()
    );
    let work = work::conv_and_pool_work(conv, backend.conv_algorithm());
    let fused = Case::new(name, &shape, work, |b: &mut B, i| {
        let x = &inputs[i % ROTATIONS];
        b.conv2d_forward_and_pool(conv, x, &params, &mut y, &mut pooled)
    });
    measure(backend, vec![fused], repeats, peaks, out)
}

/// The model's output convolution scored against a target (its loss and dL/dz), as training
/// runs it.
fn scored_conv_timings<B: Backend>(
    backend: &mut B,
    conv: &Conv,
    repeats: usize,
    peaks: Option<Peaks>,
    out: &mut Table,
) -> Result<()> {
    let (params, inputs) = conv_operands(backend, conv)?;
    let output = conv.output().len();
    let target = filled(backend, output, 5)?;
    let (mut y, mut dz, mut loss) = (
        backend.alloc(output)?,
        backend.alloc(output)?,
        backend.alloc(1)?,
    );
    let shape = format!(
        "{} -> {}{}, scored",
        shape_text(conv.input),
        conv.slot.out_channels,
        upsampled_text(conv)
    );
    let name = format!(
        "{} forward with the loss and dL/dz (fused, as in training)",
        conv.slot.name
    );
    let work = work::scored_conv_work(conv, backend.conv_algorithm());
    let scored = Case::new(name, &shape, work, |b: &mut B, i| {
        let x = &inputs[i % ROTATIONS];
        b.conv2d_forward_scored(conv, x, &params, &target, &mut y, &mut dz, &mut loss)
    });
    measure(backend, vec![scored], repeats, peaks, out)
}

/// A first convolution and its max pooling as one pass, forward and backward-filter, as
/// training runs them.
fn pooled_conv_timings<B: Backend>(
    backend: &mut B,
    (conv, pool): (&Conv, &Layer),
    repeats: usize,
    peaks: Option<Peaks>,
    out: &mut Table,
) -> Result<()> {
    let count = conv.slot.bias.end;
    let (params, inputs) = conv_operands(backend, conv)?;
    let d_pooled = rotated(backend, conv.output().len() / 4)?;
    let mut pooled = backend.alloc(conv.output().len() / 4)?;
    let mut grads = backend.alloc(count)?;
    let shape = format!(
        "{} -> {}, 2x2 max pooled",
        shape_text(conv.input),
        conv.slot.out_channels
    );
    let name = |pass: &str| {
        let names = format!("{} + {}", conv.slot.name, pool.name());
        format!("{names} {pass} (fused, as in training)")
    };
    let cases = vec![
        Case::new(
            name("forward"),
            &shape,
            work::pooled_conv_work(conv, false),
            |b: &mut B, i| {
                b.conv2d_pooled_forward(conv, &inputs[i % ROTATIONS], &params, &mut pooled)
            },
        ),
        Case::new(
            name("backward-filter"),
            &shape,
            work::pooled_conv_work(conv, true),
            |b: &mut B, i| {
                let (x, d) = (&inputs[i % ROTATIONS], &d_pooled[i % ROTATIONS]);
                b.conv2d_pooled_backward_filter(conv, x, &params, d, &mut grads)
            },
        ),
    ];
    measure(backend, cases, repeats, peaks, out)
}

/// A pooling or upsampling layer, forward and backward, on an input of shape `input`; a
/// pooling's backward pass with the derivative of `input_activation`, the activation that
/// produced its input, as training runs it.
fn resampling_timings<B: Backend>(
    backend: &mut B,
    (layer, input_activation): (&Layer, Option<Activation>),
    input: Nhwc,
    repeats: usize,
    peaks: Option<Peaks>,
    out: &mut Table,
) -> Result<()> {
    let (len, name, shape) = (input.len(), layer.name(), shape_text(input));
    let xs = rotated(backend, len)?;
    match layer {
        Layer::MaxPool2 { .. } => {
            let dy = filled(backend, len / 4, 3)?;
            let (mut y, mut dx) = (backend.alloc(len / 4)?, backend.alloc(len)?);
            let cases = vec![
                Case::new(
                    format!("{name} forward"),
                    &shape,
                    work::maxpool_work(len, false),
                    |b: &mut B, i| b.maxpool2_forward(input, &xs[i % ROTATIONS], &mut y),
                ),
                Case::new(
                    match input_activation {
                        Some(activation) => {
                            format!(
                                "{name} backward (with the input's {} derivative)",
                                activation.name()
                            )
                        }
                        None => format!("{name} backward"),
                    },
                    &shape,
                    work::maxpool_work(len, true),
                    |b: &mut B, i| {
                        let x = (&xs[i % ROTATIONS], input_activation);
                        b.maxpool2_backward(input, x, &dy, &mut dx)
                    },
                ),
            ];
            measure(backend, cases, repeats, peaks, out)
        }
        Layer::Upsample2 { .. } => {
            let dy = filled(backend, 4 * len, 3)?;
            let (mut y, mut dx) = (backend.alloc(4 * len)?, backend.alloc(len)?);
            let cases = vec![
                Case::new(
                    format!("{name} forward (folded into the next conv in training)"),
                    &shape,
                    work::upsample_work(len),
                    |b: &mut B, i| b.upsample2_forward(input, &xs[i % ROTATIONS], &mut y),
                ),
                Case::new(
                    format!("{name} backward (folded too)"),
                    &shape,
                    work::upsample_work(len),
                    |b: &mut B, _| b.upsample2_backward(input, &dy, &mut dx),
                ),
            ];
            measure(backend, cases, repeats, peaks, out)
        }
        Layer::Conv2d { .. } => Ok(()),
    }
}

/// The loss, its gradient, the activation derivative and the optimizer step.
fn loss_and_update_timings<B: Backend>(
    backend: &mut B,
    len: usize,
    shape: &str,
    parameters: usize,
    repeats: usize,
    peaks: Option<Peaks>,
    out: &mut Table,
) -> Result<()> {
    let (predictions, target) = (rotated(backend, len)?, filled(backend, len, 5)?);
    let (mut loss_grad, mut activation_grad) = (backend.alloc(len)?, backend.alloc(len)?);
    let (mut w, g, mut v) = (
        filled(backend, parameters, 1)?,
        filled(backend, parameters, 2)?,
        filled(backend, parameters, 3)?,
    );
    let (mut adam_w, mut m, mut adam_v) = (
        filled(backend, parameters, 4)?,
        filled(backend, parameters, 5)?,
        filled(backend, parameters, 6)?,
    );
    let cases = vec![
        Case::new(
            "mse loss",
            shape,
            work::mse_loss_work(len),
            |b: &mut B, i| {
                b.mse_loss(len, &predictions[i % ROTATIONS], &target)
                    .map(|_| ())
            },
        ),
        Case::new(
            "mse backward",
            shape,
            work::mse_backward_work(len),
            |b: &mut B, i| {
                b.mse_backward(len, &predictions[i % ROTATIONS], &target, &mut loss_grad)
            },
        ),
        Case::new(
            "activation backward",
            shape,
            work::activation_backward_work(len),
            |b: &mut B, i| {
                let activation = [Activation::Relu, Activation::Sigmoid][i % 2];
                b.activation_backward(activation, len, &target, &mut activation_grad)
            },
        ),
        Case::new(
            "rmsprop (all parameters)",
            &format!("{parameters} parameters"),
            work::rmsprop_work(parameters),
            |b: &mut B, _| b.rmsprop_update(RmsProp::default(), &mut w, &g, &mut v),
        ),
        Case::new(
            "adam (all parameters)",
            &format!("{parameters} parameters"),
            work::adam_work(parameters),
            |b: &mut B, i| {
                let step = i as u64 + 1;
                b.adam_update(Adam::default(), step, &mut adam_w, &g, &mut m, &mut adam_v)
            },
        ),
    ];
    measure(backend, cases, repeats, peaks, out)
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
    let mut out = Table {
        rows: Vec::new(),
        progress: spinner("timing"),
    };
    let in_training = graph::convolutions_in_training(&architecture, size, size)?;
    for (conv, context) in convs.iter().zip(&in_training) {
        conv_timings(
            backend,
            (conv, context.input_activation),
            repeats,
            peaks,
            &mut out,
        )?;
    }
    if graph::pools_first_convolution(&architecture) {
        let pair = (&convs[0], &architecture.layers[1]);
        pooled_conv_timings(backend, pair, repeats, peaks, &mut out)?;
    }
    if let Some(output) = convs.last() {
        scored_conv_timings(backend, output, repeats, peaks, &mut out)?;
    }
    for (conv, context) in convs.iter().zip(&in_training) {
        if let Some(pooling) = context.pooling {
            let pool = &architecture.layers[pooling];
            conv_and_pool_timings(backend, (conv, pool), repeats, peaks, &mut out)?;
        }
    }
    let shapes = architecture.shapes(size, size)?;
    for (i, (layer, s)) in architecture.layers.iter().zip(shapes).enumerate() {
        let input = Nhwc {
            batch,
            height: s.height,
            width: s.width,
            channels: s.channels,
        };
        let resampling = (layer, architecture.input_activation(i));
        resampling_timings(backend, resampling, input, repeats, peaks, &mut out)?;
    }
    let len = batch * size * size;
    let shape = format!("{batch}x{size}x{size}x1");
    let parameters = architecture.param_count();
    loss_and_update_timings(backend, len, &shape, parameters, repeats, peaks, &mut out)?;
    out.progress.finish_and_clear();
    Ok(out.rows)
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
    Ok((median(&train), median(&infer)))
}
