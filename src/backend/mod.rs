//! The compute backends. The layer graph calls the [`Backend`] trait and never looks inside a
//! buffer, so the CPU engine, the direct-loop reference and GPU engines are interchangeable.

pub mod cpu;
pub mod reference;

use crate::error::Result;
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

/// RMSprop's hyper-parameters; the defaults are Keras 3's.
#[derive(Clone, Copy, Debug, PartialEq)]
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

/// The operations the layer graph needs. Buffers may be longer than an operation's shape needs
/// (they are planned for the largest batch); operations use their leading elements.
///
/// Convolutions are 3x3, stride 1, one pixel of zero padding; `input` has shape
/// [batch, height, width, slot.in_channels] and the output [batch, height, width, slot.out_channels].
/// Their kernel [3, 3, cin, cout] and bias [cout] are read from (and their gradients written to)
/// the ranges `slot` gives in the flat parameter (gradient) buffer.
pub trait Backend {
    type Buffer;

    /// A short name for messages, e.g. "cpu (2 threads)".
    fn name(&self) -> String;

    /// Prepares scratch space for convolutions up to these shapes, so no step allocates.
    fn plan(&mut self, convs: &[(Nhwc, ParamSlot)]) -> Result<()>;

    /// A zero-filled buffer of `len` float32 values.
    fn alloc(&mut self, len: usize) -> Result<Self::Buffer>;
    fn upload(&mut self, host: &[f32], device: &mut Self::Buffer) -> Result<()>;
    fn download(&mut self, device: &Self::Buffer, host: &mut [f32]) -> Result<()>;

    /// output = activation(conv(input, kernel) + bias)
    fn conv2d_forward(
        &mut self,
        input: Nhwc,
        x: &Self::Buffer,
        params: &Self::Buffer,
        slot: &ParamSlot,
        activation: Activation,
        y: &mut Self::Buffer,
    ) -> Result<()>;

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
        input: Nhwc,
        dz: &Self::Buffer,
        params: &Self::Buffer,
        slot: &ParamSlot,
        dx: &mut Self::Buffer,
    ) -> Result<()>;

    /// dkernel[t, ci, co] = sum over pixels p of x[p + t, ci] * dz[p, co]; dbias[co] = sum over p of dz[p, co].
    /// Overwrites the slot's ranges of `grads`; deterministic (same bits every run).
    fn conv2d_backward_filter(
        &mut self,
        input: Nhwc,
        x: &Self::Buffer,
        dz: &Self::Buffer,
        grads: &mut Self::Buffer,
        slot: &ParamSlot,
    ) -> Result<()>;

    /// y = max of each 2x2 window (input height and width even).
    fn maxpool2_forward(
        &mut self,
        input: Nhwc,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<()>;

    /// dx = dy at the first maximum of each window in row-major order (as TensorFlow), 0 elsewhere.
    fn maxpool2_backward(
        &mut self,
        input: Nhwc,
        x: &Self::Buffer,
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
}
