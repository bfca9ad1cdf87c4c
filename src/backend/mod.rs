//! The compute backends. The layer graph calls the [`Backend`] trait and never looks inside a
//! buffer, so the CPU engine, the direct-loop reference and GPU engines are interchangeable.
//!
//! # Where each operation lives
//!
//! | operation ([`Backend`] method) | float64 reference | CPU engine | GPU | CUDA kernels (kernels/) | tests |
//! |---|---|---|---|---|---|
//! | `conv2d_forward` | reference.rs | cpu/conv.rs `forward`, cpu/winograd.rs, cpu/upsampled_winograd.rs, cpu/one_channel.rs | gpu/mod.rs | conv2d.cu `conv2d_gathered_gemm`, `conv2d_fold_phases_kernel`; conv2d_tf32.cu `conv2d_gathered_gemm_tf32`; conv2d_one_channel.cu `conv2d_one_input_channel` (conv1), `conv2d_upsampled_one_output_channel` (conv6) | ops, emulator, tf32, gpu |
//! | `conv2d_backward_data` | reference.rs | cpu/conv.rs `backward_data`, cpu/upsampled_winograd.rs | gpu/mod.rs | conv2d.cu `conv2d_flip_kernel`, `upsample2_box_sums`, the gathered GEMMs | ops, emulator, tf32, gpu |
//! | `conv2d_backward_filter` | reference.rs | cpu/conv.rs `backward_filter`, cpu/winograd.rs, cpu/upsampled_winograd.rs, cpu/one_channel.rs | gpu/mod.rs | conv2d.cu `conv2d_filter_partials`, `sum_partials`, `sum_partials_upsampled`, `upsample2_bias_partials`; conv2d_one_channel.cu `conv2d_filter_partials_one_channel` (conv1, conv6) | ops, emulator, gpu |
//! | `conv2d_backward` (backward-filter, backward-data and the input's activation derivative) | the three in turn (`backward_in_turn`) | cpu/conv.rs `backward_one_output` (cpu/one_channel.rs) for one output channel of an upsampled input (conv6), else `backward`: the kernel gradient, then backward-data with the derivative in its epilogue (an upsampled input's two from one transform of dz per piece, cpu/upsampled_winograd.rs `kernel_gradient`) | gpu/mod.rs: one kernel for an upsampled input with one output channel (conv6), else the kernel gradient, then backward-data with the derivative in its epilogue (an upsampled input's box sums of dz made once for both) | conv2d_one_channel.cu `conv2d_upsampled_one_output_channel_backward`; whorl.cuh `epilogue_output` in the backward-data kernels; conv2d.cu `sum_partials` | emulator, gpu, model |
//! | `conv2d_pooled_forward`, `conv2d_pooled_backward_filter` (conv1 with pool1) | reference.rs | cpu/conv.rs `pooled_forward`, `pooled_backward_filter` (cpu/one_channel.rs) | gpu/mod.rs | conv2d_one_channel.cu `conv2d_one_input_channel_pooled`, `conv2d_pooled_filter_partials_one_channel`; conv2d.cu `sum_partials` | ops, emulator, gpu, model |
//! | `activation_backward` | reference.rs | cpu/mod.rs | gpu/mod.rs | elementwise.cu `activation_backward` | ops, emulator |
//! | `maxpool2_forward`, `maxpool2_backward` (with the input's activation derivative) | reference.rs | cpu/mod.rs | gpu/mod.rs | pool.cu | ops, emulator |
//! | `conv2d_forward_and_pool` (a convolution and the pooling after it, y stored) | the two in turn | the two in turn | gpu/mod.rs: the GEMM's epilogue pools (a plain convolution of more than one input channel, even output), else the two in turn | conv2d.cu `conv2d_gathered_gemm*`, conv2d_tf32.cu `conv2d_gathered_gemm_tf32*` (`pooled`) | emulator, gpu |
//! | `upsample2_forward`, `upsample2_backward` | reference.rs | cpu/mod.rs | gpu/mod.rs | pool.cu | ops, emulator |
//! | `mse_loss`, `mse_backward` | reference.rs | cpu/mod.rs | gpu/mod.rs | loss.cu `mse_partials`, `mse_finish`; elementwise.cu `mse_backward` | ops, emulator |
//! | `conv2d_forward_scored`, `scored_loss` (the output convolution with the loss and dL/dz) | the three in turn, then `mse_loss` | the three in turn, then `mse_loss` | gpu/mod.rs: one kernel for an upsampled input with one output channel (conv6), else the three in turn; the loss from block partials | conv2d_one_channel.cu `conv2d_upsampled_one_output_channel_scored`; loss.cu `mse_partials`, `mse_finish` | emulator, gpu, model |
//! | optimizer updates | reference.rs | cpu/mod.rs | gpu/mod.rs | elementwise.cu | keras_reference, emulator |
//!
//! Tests are files of tests/: ops (CPU engine against the reference and finite differences),
//! emulator and tf32 (the CUDA kernels run on the CPU, against the reference), gpu (the same on
//! a real GPU, ignored without one), keras_reference (numbers computed by Keras). Every kernel
//! also compiles with NVRTC (tests/nvrtc.rs) and its work has a row in the benchmark
//! (src/bench/).
//!
//! # Adding an operation
//!
//! 1. A [`Backend`] method, its formula in the doc comment.
//! 2. The float64 reference in reference.rs, read top to bottom, the derivative in a one-line
//!    comment above the backward code.
//! 3. The CPU engine's version (cpu/), deterministic on any thread count.
//! 4. The CUDA kernel in the kernels/ file of its family, with a comment on what it computes,
//!    what each thread does and its launch shape; its tile sizes as `#define`s. build.rs
//!    generates its typed launch function and constants (`gpu::kernels`): call those from
//!    gpu/mod.rs, never a name and an argument list by hand.
//! 5. Tests: tests/ops.rs and tests/emulator.rs against the reference on odd shapes with
//!    partial tiles; tests/gpu.rs for real GPUs.
//! 6. A row in src/bench/timing.rs with its work in src/bench/work.rs.
//! 7. The layer graph (graph.rs) is the one place that decides when it runs.

pub mod cpu;
pub mod gpu;
pub mod reference;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Activation, ParamSlot};

/// A batch of channels-last images: [batch, height, width, channels].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nhwc {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl Nhwc {
    pub fn len(&self) -> usize {
        self.batch * self.height * self.width * self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn pixels(&self) -> usize {
        self.batch * self.height * self.width
    }
}

/// How a convolution reads its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvInput {
    /// The stored tensor itself.
    Direct,
    /// The stored tensor upsampled x2 (nearest neighbour), which is never materialised.
    Upsampled2,
}

/// How a GPU multiplies in its convolutions. The CPU always computes in FP32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Precision {
    /// Operands rounded to TF32 (10-bit mantissa, round to nearest) on tensor cores, float32
    /// accumulation: what PyTorch and TensorFlow run by default on Ampere and newer GPUs.
    #[default]
    Tf32,
    /// Operands rounded to BF16 (7-bit mantissa, round to nearest even) on tensor cores,
    /// float32 accumulation, weights and everything else: twice TF32's tensor-core rate, for
    /// 8 significant bits instead of 11.
    Bf16,
    /// Float32 operands and sums on the CUDA cores (the GPU runs the plain convolutions by
    /// Winograd's F(2x2, 3x3) in this precision, as the CPU engine runs its convolutions).
    Fp32,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
            Precision::Fp32 => "fp32",
        }
    }

    /// Whether its convolutions run on tensor cores (TF32 and BF16).
    pub fn on_tensor_cores(self) -> bool {
        self != Precision::Fp32
    }
}

/// The output tile of the CPU engine's plain 3x3 convolutions (conv2 to conv4, and
/// backward-data of every plain convolution), Winograd's F(m x m, 3x3). GPUs ignore it: their
/// FP32 path runs F(2x2, 3x3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WinogradTile {
    /// F(2x2, 3x3): 16 multiplies per 2x2 outputs and channel pair, 4/9 of the direct
    /// arithmetic; float32 rounding of about 1e-6 of the outputs' scale.
    #[default]
    #[value(name = "2x2")]
    TwoByTwo,
    /// F(4x4, 3x3): 36 multiplies per 4x4 outputs, 1/4 of the direct arithmetic; its
    /// transforms' larger coefficients round to about 1e-5 of the outputs' scale.
    #[value(name = "4x4")]
    FourByFour,
}

impl WinogradTile {
    pub fn name(self) -> &'static str {
        match self {
            WinogradTile::TwoByTwo => "2x2",
            WinogradTile::FourByFour => "4x4",
        }
    }

    /// Output pixels along a tile's side, m.
    pub fn side(self) -> usize {
        match self {
            WinogradTile::TwoByTwo => 2,
            WinogradTile::FourByFour => 4,
        }
    }

    /// The share of the direct arithmetic its passes execute: (m + 2)^2 multiplies per m x m
    /// outputs and channel pair, where the direct loops take 9 m^2 (4/9 and 1/4).
    pub fn share(self) -> f64 {
        let side = self.side() as f64;
        (side + 2.0).powi(2) / (9.0 * side * side)
    }
}

/// RMSprop's hyper-parameters; the defaults are Keras 3's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RmsProp {
    pub learning_rate: f32,
    pub rho: f32,
    pub epsilon: f32,
}

impl Default for RmsProp {
    fn default() -> Self {
        RmsProp {
            learning_rate: 1e-3,
            rho: 0.9,
            epsilon: 1e-7,
        }
    }
}

/// Adam's hyper-parameters; the defaults are Keras 3's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adam {
    pub learning_rate: f32,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            learning_rate: 1e-3,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        }
    }
}

impl Adam {
    /// The bias-corrected step size at step `t` (counted from 1), in float64:
    /// alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t).
    pub fn step_size(&self, t: u64) -> f64 {
        let t = i32::try_from(t).unwrap_or(i32::MAX);
        let (beta_1, beta_2) = (f64::from(self.beta_1), f64::from(self.beta_2));
        f64::from(self.learning_rate) * (1.0 - beta_2.powi(t)).sqrt() / (1.0 - beta_1.powi(t))
    }
}

/// The optimizer that trains a network, with its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    Rmsprop(RmsProp),
    Adam(Adam),
}

/// Which optimizer, as `--optimizer` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerKind {
    Rmsprop,
    Adam,
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::Rmsprop(RmsProp::default())
    }
}

impl Optimizer {
    /// `kind` with Keras 3's defaults and this learning rate.
    pub fn new(kind: OptimizerKind, learning_rate: f32) -> Self {
        match kind {
            OptimizerKind::Rmsprop => Optimizer::Rmsprop(RmsProp {
                learning_rate,
                ..RmsProp::default()
            }),
            OptimizerKind::Adam => Optimizer::Adam(Adam {
                learning_rate,
                ..Adam::default()
            }),
        }
    }

    /// The same optimizer stepping at `learning_rate` (as a schedule sets it step by step).
    pub fn with_learning_rate(self, learning_rate: f32) -> Self {
        match self {
            Optimizer::Rmsprop(hyper) => Optimizer::Rmsprop(RmsProp {
                learning_rate,
                ..hyper
            }),
            Optimizer::Adam(hyper) => Optimizer::Adam(Adam {
                learning_rate,
                ..hyper
            }),
        }
    }

    pub fn kind(&self) -> OptimizerKind {
        match self {
            Optimizer::Rmsprop(_) => OptimizerKind::Rmsprop,
            Optimizer::Adam(_) => OptimizerKind::Adam,
        }
    }
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptimizerKind::Rmsprop => "rmsprop",
            OptimizerKind::Adam => "adam",
        })
    }
}

/// One convolution as a backend sees it: 3x3, stride 1, one pixel of zero padding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv {
    /// The stored input, [batch, height, width, slot.in_channels]. With
    /// [`ConvInput::Upsampled2`] the convolution reads it upsampled x2, its output is
    /// [batch, 2 height, 2 width, cout], and backward-data returns the gradient of the stored
    /// (not upsampled) input.
    pub input: Nhwc,
    pub read: ConvInput,
    /// Where the kernel `[3, 3, cin, cout]` and bias `[cout]` sit in the flat parameter buffer (and
    /// their gradients in the flat gradient buffer).
    pub slot: ParamSlot,
    pub activation: Activation,
}

impl Conv {
    /// The output's shape.
    pub fn output(&self) -> Nhwc {
        let scale = match self.read {
            ConvInput::Direct => 1,
            ConvInput::Upsampled2 => 2,
        };
        Nhwc {
            height: scale * self.input.height,
            width: scale * self.input.width,
            channels: self.slot.out_channels,
            ..self.input
        }
    }
}

impl Conv {
    /// Ok when the 2x2 max pooling after the convolution can run in the same pass
    /// ([`Backend::conv2d_pooled_forward`]): one input channel read directly, an output of even
    /// height and width. Otherwise an error of `backend` saying so.
    pub fn check_poolable(&self, backend: impl Into<String>) -> Result<()> {
        let output = self.output();
        if self.read == ConvInput::Direct
            && self.slot.in_channels == 1
            && output.height.is_multiple_of(2)
            && output.width.is_multiple_of(2)
        {
            return Ok(());
        }
        Err(Error::Backend {
            backend: backend.into(),
            reason: format!(
                "convolution {} cannot be pooled in the same pass: that takes one input \
                 channel, read directly, and an output of even height and width (this one \
                 reads {} channels {:?} into {}x{})",
                self.slot.name, self.slot.in_channels, self.read, output.height, output.width
            ),
        })
    }
}

/// How an engine computes its convolutions, for counting the arithmetic it executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// Sums over each tap, as written (the GPU's TF32 kernels, the reference).
    Direct,
    /// Winograd's F(2x2, 3x3) for the plain convolutions' passes as `Winograd`, an upsampled
    /// input's passes as `Direct` (the GPU in FP32).
    WinogradPlain,
    /// Winograd's algorithms (the CPU engine): every pass of a plain convolution with several
    /// input channels (and backward-data of any plain one) by F(m x m, 3x3) with the tile's m,
    /// at 4/9 (2x2) or 1/4 (4x4) of the multiplies; and for an upsampled input with several
    /// output channels, its forward pass by F(3, 2) over the output's phases at 16/81, its
    /// backward passes by F(4, 2) over the box sums of dz at 9/64.
    Winograd(WinogradTile),
}

/// The operations the layer graph needs. Buffers may be longer than an operation's shape needs
/// (they are planned for the largest batch); operations use their leading elements.
pub trait Backend {
    type Buffer;

    /// A short name for messages, e.g. "cpu (Intel(R) Xeon(R) Processor, 2 threads, AVX-512,
    /// FP32)".
    fn name(&self) -> String;

    /// The precision of its convolutions' multiplications.
    fn precision(&self) -> Precision {
        Precision::Fp32
    }

    /// How it computes its convolutions, for counting the arithmetic it executes.
    fn conv_algorithm(&self) -> ConvAlgorithm {
        ConvAlgorithm::Direct
    }

    /// The kernels it chose by timing alternatives on its device so far, one line each (what
    /// they compute: the kernel), for reports; none where it times nothing.
    fn timed_choices(&self) -> Vec<String> {
        Vec::new()
    }

    /// Prepares scratch space for these convolutions (at the largest batch), so no step allocates.
    fn plan(&mut self, convs: &[Conv]) -> Result<()>;

    /// Runs `work` and returns its result with the seconds the device spent on the operations
    /// it issued: CUDA events around them on a GPU, the wall clock where every operation runs
    /// before its call returns.
    fn time<T>(&mut self, work: impl FnOnce(&mut Self) -> Result<T>) -> Result<(T, f64)>
    where
        Self: Sized,
    {
        let start = std::time::Instant::now();
        let result = work(self)?;
        Ok((result, start.elapsed().as_secs_f64()))
    }

    /// A zero-filled buffer of `len` float32 values.
    fn alloc(&mut self, len: usize) -> Result<Self::Buffer>;
    fn upload(&mut self, host: &[f32], device: &mut Self::Buffer) -> Result<()>;
    fn download(&mut self, device: &Self::Buffer, host: &mut [f32]) -> Result<()>;

    /// Starts copying `host` into `device` and may return before the copy is done: a GPU
    /// stages it through pinned memory and copies on a stream of its own while the queued
    /// kernels run. Operations issued afterwards see the new contents. The copy waits only for
    /// the operations issued before the last [`fence`](Self::fence), so none issued after that
    /// fence may read `device`.
    fn upload_async(&mut self, host: &[f32], device: &mut Self::Buffer) -> Result<()> {
        self.upload(host, device)
    }

    /// Marks the point that later [`upload_async`](Self::upload_async) copies wait for.
    fn fence(&mut self) -> Result<()> {
        Ok(())
    }

    /// y = activation(conv(x, kernel) + bias)
    fn conv2d_forward(
        &mut self,
        conv: &Conv,
        x: &Self::Buffer,
        params: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<()>;

    /// The model's output convolution as a forward pass ends, scored against `target`: `y` as
    /// [`conv2d_forward`](Self::conv2d_forward) makes it, and `dz` = dL/dz for the loss
    /// L = mse(y, target) over y's values, where the backward pass starts: 2 (y - target) / len
    /// ([`mse_backward`](Self::mse_backward)) times the activation's derivative at y
    /// ([`activation_backward`](Self::activation_backward)), the same bits as those two. A
    /// backend may also leave L in `loss` (one value) for
    /// [`scored_loss`](Self::scored_loss). By default the three operations in turn
    /// ([`forward_scored_in_turn`]); a backend may fuse them, reading y once.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_forward_scored(
        &mut self,
        conv: &Conv,
        x: &Self::Buffer,
        params: &Self::Buffer,
        target: &Self::Buffer,
        y: &mut Self::Buffer,
        dz: &mut Self::Buffer,
        _loss: &mut Self::Buffer,
    ) -> Result<()>
    where
        Self: Sized,
    {
        forward_scored_in_turn(self, conv, (x, params, target), y, dz)
    }

    /// L = mse(y, target) over `len` values after the
    /// [`conv2d_forward_scored`](Self::conv2d_forward_scored) that wrote `y` and `loss`
    /// (waits for it): by default [`mse_loss`](Self::mse_loss) of y; a backend that left L in
    /// `loss` reads it there.
    fn scored_loss(
        &mut self,
        len: usize,
        (y, target): (&Self::Buffer, &Self::Buffer),
        _loss: &Self::Buffer,
    ) -> Result<f64> {
        self.mse_loss(len, y, target)
    }

    /// In place on `grad` (dL/dy on entry, dL/dz on exit) where y = activation(z):
    /// relu: dz = dy * (y > 0); sigmoid: dz = dy * y * (1 - y).
    fn activation_backward(
        &mut self,
        activation: Activation,
        len: usize,
        y: &Self::Buffer,
        grad: &mut Self::Buffer,
    ) -> Result<()>;

    /// dx[p, ci] = sum over taps t and co of dz[p - t, co] * kernel[t, ci, co]
    /// (the convolution of dz with the kernel flipped in space and transposed in channels).
    fn conv2d_backward_data(
        &mut self,
        conv: &Conv,
        dz: &Self::Buffer,
        params: &Self::Buffer,
        dx: &mut Self::Buffer,
    ) -> Result<()>;

    /// dkernel[t, ci, co] = sum over pixels p of x[p + t, ci] * dz[p, co];
    /// `dbias[co]` = sum over p of `dz[p, co]`. Overwrites the slot's ranges of `grads`;
    /// deterministic (same bits every run).
    fn conv2d_backward_filter(
        &mut self,
        conv: &Conv,
        x: &Self::Buffer,
        dz: &Self::Buffer,
        grads: &mut Self::Buffer,
    ) -> Result<()>;

    /// The backward pass through a convolution whose input x is the output of an activation
    /// (`x_activation`, x = activation(z')) or not (None): the kernel and bias gradients of
    /// [`conv2d_backward_filter`](Self::conv2d_backward_filter) into `grads`, and `dx` =
    /// [`conv2d_backward_data`](Self::conv2d_backward_data)'s result times the activation's
    /// derivative at x (dL/dz', as [`activation_backward`](Self::activation_backward) would
    /// make it). By default the three operations in turn ([`backward_in_turn`]); a backend may
    /// fuse them, reading x once.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_backward(
        &mut self,
        conv: &Conv,
        (x, x_activation): (&Self::Buffer, Option<Activation>),
        dz: &Self::Buffer,
        params: &Self::Buffer,
        grads: &mut Self::Buffer,
        dx: &mut Self::Buffer,
    ) -> Result<()>
    where
        Self: Sized,
    {
        backward_in_turn(self, conv, (x, x_activation), dz, params, grads, dx)
    }

    /// `y` as [`conv2d_forward`](Self::conv2d_forward) makes it and `pooled` its 2x2 max pooling
    /// ([`maxpool2_forward`](Self::maxpool2_forward)): a convolution followed by a pooling
    /// layer. By default the two in turn; a backend may pool in the convolution's epilogue
    /// (where the output's height and width are even), reading y no more.
    fn conv2d_forward_and_pool(
        &mut self,
        conv: &Conv,
        x: &Self::Buffer,
        params: &Self::Buffer,
        y: &mut Self::Buffer,
        pooled: &mut Self::Buffer,
    ) -> Result<()> {
        self.conv2d_forward(conv, x, params, y)?;
        self.maxpool2_forward(conv.output(), y, pooled)
    }

    /// pooled = maxpool2(activation(conv(x, kernel) + bias)): a convolution of a stored,
    /// one-channel input (the network's) and the 2x2 max pooling after it, as one operation
    /// whose full-resolution output is never stored. The output's height and width are even.
    fn conv2d_pooled_forward(
        &mut self,
        conv: &Conv,
        x: &Self::Buffer,
        params: &Self::Buffer,
        pooled: &mut Self::Buffer,
    ) -> Result<()>;

    /// The kernel and bias gradients of [`conv2d_pooled_forward`](Self::conv2d_pooled_forward)
    /// from dL/d pooled: those of [`conv2d_backward_filter`](Self::conv2d_backward_filter) for
    /// dz[p, co] = d_pooled[window of p, co] act'(z[p, co]) where p is its window's first
    /// maximum of y = activation(z) (row-major, as [`maxpool2_backward`](Self::maxpool2_backward)),
    /// 0 elsewhere; y is computed again from x, as the forward pass computed it. Overwrites the
    /// slot's ranges of `grads`; deterministic.
    fn conv2d_pooled_backward_filter(
        &mut self,
        conv: &Conv,
        x: &Self::Buffer,
        params: &Self::Buffer,
        d_pooled: &Self::Buffer,
        grads: &mut Self::Buffer,
    ) -> Result<()>;

    /// y = max of each 2x2 window (input height and width even).
    fn maxpool2_forward(
        &mut self,
        input: Nhwc,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<()>;

    /// dx = dy at the first maximum of each window in row-major order (as TensorFlow), 0
    /// elsewhere, times the derivative there of `x_activation`, the activation that produced x
    /// (dL/dz of that layer, as [`activation_backward`](Self::activation_backward) would make
    /// it), if any.
    fn maxpool2_backward(
        &mut self,
        input: Nhwc,
        x: (&Self::Buffer, Option<Activation>),
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    ) -> Result<()>;

    /// y[2h + i, 2w + j] = x[h, w] for i, j in {0, 1}.
    fn upsample2_forward(
        &mut self,
        input: Nhwc,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<()>;

    /// dx[h, w] = sum over i, j in {0, 1} of dy[2h + i, 2w + j].
    fn upsample2_backward(
        &mut self,
        input: Nhwc,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    ) -> Result<()>;

    /// mean over the first `len` elements of (prediction - target)^2; deterministic.
    fn mse_loss(
        &mut self,
        len: usize,
        prediction: &Self::Buffer,
        target: &Self::Buffer,
    ) -> Result<f64>;

    /// grad = d mse / d prediction = 2 (prediction - target) / len
    fn mse_backward(
        &mut self,
        len: usize,
        prediction: &Self::Buffer,
        target: &Self::Buffer,
        grad: &mut Self::Buffer,
    ) -> Result<()>;

    /// Keras's RMSprop over every parameter at once:
    /// v = rho v + (1 - rho) g^2; w = w - lr g / sqrt(v + epsilon).
    fn rmsprop_update(
        &mut self,
        hyper: RmsProp,
        params: &mut Self::Buffer,
        grads: &Self::Buffer,
        velocity: &mut Self::Buffer,
    ) -> Result<()>;

    /// Keras's Adam over every parameter at once, at step `t` (counted from 1):
    /// m = m + (g - m)(1 - beta_1); v = v + (g^2 - v)(1 - beta_2);
    /// w = w - alpha m / (sqrt(v) + epsilon) with alpha = [`Adam::step_size`]`(t)`.
    fn adam_update(
        &mut self,
        hyper: Adam,
        t: u64,
        params: &mut Self::Buffer,
        grads: &Self::Buffer,
        momentum: &mut Self::Buffer,
        velocity: &mut Self::Buffer,
    ) -> Result<()>;
}

/// [`Backend::conv2d_backward`] as three operations: the kernel gradient, backward-data, then
/// the input's activation derivative on dx.
pub fn backward_in_turn<B: Backend>(
    backend: &mut B,
    conv: &Conv,
    (x, x_activation): (&B::Buffer, Option<Activation>),
    dz: &B::Buffer,
    params: &B::Buffer,
    grads: &mut B::Buffer,
    dx: &mut B::Buffer,
) -> Result<()> {
    backend.conv2d_backward_filter(conv, x, dz, grads)?;
    backend.conv2d_backward_data(conv, dz, params, dx)?;
    match x_activation {
        Some(activation) => backend.activation_backward(activation, conv.input.len(), x, dx),
        None => Ok(()),
    }
}

/// y and dz of [`Backend::conv2d_forward_scored`] as three operations: the forward pass, the
/// loss's gradient, then the activation's derivative.
pub fn forward_scored_in_turn<B: Backend>(
    backend: &mut B,
    conv: &Conv,
    (x, params, target): (&B::Buffer, &B::Buffer, &B::Buffer),
    y: &mut B::Buffer,
    dz: &mut B::Buffer,
) -> Result<()> {
    backend.conv2d_forward(conv, x, params, y)?;
    let len = conv.output().len();
    backend.mse_backward(len, y, target, dz)?;
    backend.activation_backward(conv.activation, len, y, dz)
}
