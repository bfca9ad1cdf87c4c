//! The work a benchmarked call does: floating-point operations and bytes of memory traffic.
//!
//! Two FLOP counts per call (4 bytes per float; bytes are the compulsory traffic, each tensor
//! read or written once; P = output pixels of a convolution = batch x height x width of its
//! output grid):
//! - nominal, as PyTorch or a paper counts the model: a convolution pass (forward,
//!   backward-data or backward-filter) is 2 x P x 9 x cin x cout, an upsampled input counted
//!   as the full 3x3 over the 2x grid;
//! - executed, the arithmetic whorl's engines actually do: an upsampled convolution's forward
//!   is four 2x2 "phase" convolutions (4/9 of nominal) and its backward passes are 3x3 passes
//!   at the source resolution over 2x2 box sums of dz (1/4 of nominal, the box sums' few adds
//!   per element of dz not counted); on an engine that runs Winograd's F(2x2, 3x3) (the CPU,
//!   and the GPU in FP32), the plain convolutions' passes execute 4/9 of nominal but for
//!   conv1's forward and kernel gradient (one input channel, direct loops), and on the CPU an
//!   upsampled input's forward 16/81 (Winograd's F(3, 2) over the output's phases: 64
//!   multiplies per 3x3 source pixels instead of 324) and its backward passes 9/64 (F(4, 2)
//!   over the box sums: 81 per 4x4 source pixels instead of 144) but for conv6's (one output
//!   channel: phase convolutions and box sums), the transforms' adds not counted; every other
//!   pass executes its nominal count.
//!
//! Bytes: convolution forward input + kernel and bias + output; backward-data dz + kernel +
//! dx; backward-filter input + dz + kernel and bias gradients; conv1 pooled in the same pass
//! ([`pooled_conv_work`]) input + kernel and bias + the pooled tensor, its backward counting
//! the forward arithmetic it does again; the output convolution scored against its target
//! ([`scored_conv_work`]) the forward's, the target and dz; a convolution pooled in the same
//! call ([`conv_and_pool_work`]) the forward's and the pooled output. Max pooling: 3 comparisons per
//! output, input + output (backward x + dy + dx). Upsampling: no FLOPs, input + 4 x input.
//! MSE loss: 3 FLOPs per element, two tensors; its gradient 3 FLOPs, three tensors. Activation
//! derivative: 2 FLOPs, three tensors. RMSprop: 8 FLOPs and 20 bytes per parameter; Adam: 12
//! FLOPs and 28 bytes (read w, g, m, v; write w, m, v).
//!
//! A training image costs 11.33 nominal GFLOP (forward 3.79) at 224x224.

use serde::{Deserialize, Serialize};

use crate::backend::{Conv, ConvAlgorithm, ConvInput};
use crate::error::Result;
use crate::graph;
use crate::model::Architecture;

/// Floating-point operations (nominal and executed) and bytes of memory traffic of one call.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Work {
    pub flops: f64,
    #[serde(default)]
    pub executed_flops: f64,
    pub bytes: f64,
}

impl Work {
    /// Work whose executed arithmetic is its nominal count.
    pub fn plain(flops: f64, bytes: f64) -> Work {
        Work {
            flops,
            executed_flops: flops,
            bytes,
        }
    }
}

/// The three passes of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPass {
    Forward,
    BackwardData,
    BackwardFilter,
}

impl ConvPass {
    pub fn name(self) -> &'static str {
        match self {
            ConvPass::Forward => "forward",
            ConvPass::BackwardData => "backward-data",
            ConvPass::BackwardFilter => "backward-filter",
        }
    }
}

/// 2 x P x 9 x cin x cout: one convolution pass, nominal.
pub fn conv_flops(conv: &Conv) -> f64 {
    let slot = &conv.slot;
    2.0 * conv.output().pixels() as f64 * 9.0 * (slot.in_channels * slot.out_channels) as f64
}

/// The arithmetic a pass executes on an engine that computes convolutions by `algorithm`:
/// nominal, except an upsampled input's 4/9 (forward) and 1/4 (backward passes), and with
/// Winograd 4/9 for the plain passes (1/4 with F(4x4, 3x3); and with `Winograd`, not
/// `WinogradPlain`, 16/81 for an upsampled input's forward and 9/64 for its backward passes),
/// but for the one-channel layers' direct loops.
pub fn conv_executed_flops(conv: &Conv, pass: ConvPass, algorithm: ConvAlgorithm) -> f64 {
    let (plain_share, winograd_upsampled) = match algorithm {
        ConvAlgorithm::Direct => (1.0, false),
        ConvAlgorithm::WinogradPlain => (4.0 / 9.0, false),
        ConvAlgorithm::Winograd(tile) => (tile.share(), true),
    };
    let one_channel = match conv.read {
        ConvInput::Direct => conv.slot.in_channels == 1 && pass != ConvPass::BackwardData,
        ConvInput::Upsampled2 => conv.slot.out_channels == 1,
    };
    let share = match (conv.read, pass) {
        (ConvInput::Direct, _) if !one_channel => plain_share,
        (ConvInput::Direct, _) => 1.0,
        (ConvInput::Upsampled2, ConvPass::Forward) if winograd_upsampled && !one_channel => {
            16.0 / 81.0
        }
        (ConvInput::Upsampled2, ConvPass::Forward) => 4.0 / 9.0,
        (ConvInput::Upsampled2, _) if winograd_upsampled && !one_channel => 9.0 / 64.0,
        (ConvInput::Upsampled2, _) => 0.25,
    };
    share * conv_flops(conv)
}

fn floats(n: usize) -> f64 {
    4.0 * n as f64
}

pub fn conv_work(conv: &Conv, pass: ConvPass, algorithm: ConvAlgorithm) -> Work {
    let params = conv.slot.bias.end - conv.slot.weight.start;
    let (input, output) = (conv.input.len(), conv.output().len());
    let bytes = match pass {
        ConvPass::Forward => floats(input + params + output),
        ConvPass::BackwardData => floats(output + conv.slot.weight.len() + input),
        ConvPass::BackwardFilter => floats(input + output + params),
    };
    Work {
        flops: conv_flops(conv),
        executed_flops: conv_executed_flops(conv, pass, algorithm),
        bytes,
    }
}

/// A convolution's whole backward pass as training runs it ([`Backend::conv2d_backward`]):
/// backward-data and the kernel gradient, with the input's activation derivative applied to
/// dx (2 FLOPs per input value); bytes x and dz read once, dx written once, the kernel read
/// and its gradient written.
///
/// [`Backend::conv2d_backward`]: crate::backend::Backend::conv2d_backward
pub fn conv_backward_work(conv: &Conv, algorithm: ConvAlgorithm) -> Work {
    let (data, filter) = (
        conv_work(conv, ConvPass::BackwardData, algorithm),
        conv_work(conv, ConvPass::BackwardFilter, algorithm),
    );
    let params = conv.slot.bias.end - conv.slot.weight.start;
    let derivative = 2.0 * conv.input.len() as f64;
    Work {
        flops: data.flops + filter.flops + derivative,
        executed_flops: data.executed_flops + filter.executed_flops + derivative,
        bytes: floats(2 * conv.input.len() + conv.output().len() + 2 * params),
    }
}

/// A convolution and the 2x2 max pooling after it in one call, as training runs them
/// ([`Backend::conv2d_forward_and_pool`]): the forward pass, then 3 comparisons per pooled
/// value; bytes the forward's and the pooled output written.
///
/// [`Backend::conv2d_forward_and_pool`]: crate::backend::Backend::conv2d_forward_and_pool
pub fn conv_and_pool_work(conv: &Conv, algorithm: ConvAlgorithm) -> Work {
    let forward = conv_work(conv, ConvPass::Forward, algorithm);
    let pooled = conv.output().len() / 4;
    let comparisons = 3.0 * pooled as f64;
    Work {
        flops: forward.flops + comparisons,
        executed_flops: forward.executed_flops + comparisons,
        bytes: forward.bytes + floats(pooled),
    }
}

/// The model's output convolution scored against its target as training runs it
/// ([`Backend::conv2d_forward_scored`]): the forward pass, then per output value the loss's
/// 3 FLOPs and its gradient's 5 (the MSE's 3 and the activation derivative's 2); bytes the
/// forward's, the target read and dz written.
///
/// [`Backend::conv2d_forward_scored`]: crate::backend::Backend::conv2d_forward_scored
pub fn scored_conv_work(conv: &Conv, algorithm: ConvAlgorithm) -> Work {
    let forward = conv_work(conv, ConvPass::Forward, algorithm);
    let output = conv.output().len();
    let scoring = 8.0 * output as f64;
    Work {
        flops: forward.flops + scoring,
        executed_flops: forward.executed_flops + scoring,
        bytes: forward.bytes + floats(2 * output),
    }
}

/// A first convolution and its 2x2 max pooling as one pass, as training runs them
/// ([`graph::pools_first_convolution`]): forward, the convolution's arithmetic, the pooling's
/// comparisons and the pooled output alone written; backward (the kernel gradient), the
/// forward's arithmetic again, which it recomputes, then the kernel gradient's, reading the
/// input and dL/d pooled. Either counts the same FLOPs nominal and executed: one input
/// channel runs direct loops on every engine.
pub fn pooled_conv_work(conv: &Conv, backward: bool) -> Work {
    let params = conv.slot.bias.end - conv.slot.weight.start;
    let pooled = conv.output().len() / 4;
    let forward = conv_flops(conv) + 3.0 * pooled as f64;
    let flops = if backward {
        forward + conv_flops(conv)
    } else {
        forward
    };
    Work::plain(flops, floats(conv.input.len() + params + pooled))
}

/// 2x2 max pooling of an input of `len` values, forward or backward.
pub fn maxpool_work(len: usize, backward: bool) -> Work {
    let tensors = if backward { 2 * len } else { len };
    Work::plain(3.0 * (len / 4) as f64, floats(tensors + len / 4))
}

/// Nearest x2 upsampling of an input of `len` values, either direction.
pub fn upsample_work(len: usize) -> Work {
    Work::plain(0.0, floats(5 * len))
}

pub fn mse_loss_work(len: usize) -> Work {
    Work::plain(3.0 * len as f64, floats(2 * len))
}

pub fn mse_backward_work(len: usize) -> Work {
    Work::plain(3.0 * len as f64, floats(3 * len))
}

pub fn activation_backward_work(len: usize) -> Work {
    Work::plain(2.0 * len as f64, floats(3 * len))
}

pub fn rmsprop_work(parameters: usize) -> Work {
    Work::plain(8.0 * parameters as f64, floats(5 * parameters))
}

pub fn adam_work(parameters: usize) -> Work {
    Work::plain(12.0 * parameters as f64, floats(7 * parameters))
}

/// Nominal FLOPs of one training image (forward, backward-data except the first layer's, and
/// backward-filter of every convolution) and of its forward pass.
pub fn model_flops(architecture: &Architecture, size: usize) -> Result<(f64, f64)> {
    let convs = graph::convolutions(architecture, size, size, 1)?;
    let forward: f64 = convs.iter().map(conv_flops).sum();
    let first = convs.first().map_or(0.0, conv_flops);
    Ok((3.0 * forward - first, forward))
}

/// The same as [`model_flops`], counting the arithmetic executed by an engine that computes
/// convolutions by `algorithm` (and the first convolution's forward pass twice where training
/// pools it in the same step).
pub fn model_executed_flops(
    architecture: &Architecture,
    size: usize,
    algorithm: ConvAlgorithm,
) -> Result<(f64, f64)> {
    let convs = graph::convolutions(architecture, size, size, 1)?;
    let executed = |c: &Conv, p: ConvPass| conv_executed_flops(c, p, algorithm);
    let pass = |p: ConvPass| -> f64 { convs.iter().map(|c| executed(c, p)).sum() };
    let forward = pass(ConvPass::Forward);
    let first = convs
        .first()
        .map_or(0.0, |c| executed(c, ConvPass::BackwardData));
    let train = forward + pass(ConvPass::BackwardData) - first + pass(ConvPass::BackwardFilter);
    // A pooled first convolution's kernel gradient computes its forward pass again.
    let recomputed = match convs.first() {
        Some(c) if graph::pools_first_convolution(architecture) => executed(c, ConvPass::Forward),
        _ => 0.0,
    };
    Ok((train + recomputed, forward))
}
