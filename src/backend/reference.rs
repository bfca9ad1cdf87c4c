//! The direct-loop reference: every operation written as the textbook loop, in float64.
//! Slow and obviously right; the tests hold the fast backends and the derivatives to it.

use super::{Adam, Backend, Conv, ConvInput, Nhwc, RmsProp};
use crate::error::Result;
use crate::model::Activation;

/// The pixel at (row, col) shifted by tap (ky, kx) of a 3x3 'same' window, if inside the image.
fn tap(input: Nhwc, row: usize, col: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
    let r = (row + ky).checked_sub(1)?;
    let c = (col + kx).checked_sub(1)?;
    (r < input.height && c < input.width).then_some((r, c))
}

fn at(shape: Nhwc, n: usize, row: usize, col: usize, ch: usize) -> usize {
    ((n * shape.height + row) * shape.width + col) * shape.channels + ch
}

fn activate(activation: Activation, z: f64) -> f64 {
    match activation {
        Activation::Relu => z.max(0.0),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
    }
}

/// `y[n, r, c, co] = act(bias[co] + sum over ky, kx, ci of x[n, r + ky - 1, c + kx - 1, ci] * kernel[ky, kx, ci, co])`
pub fn conv2d_forward(
    input: Nhwc,
    x: &[f64],
    kernel: &[f64],
    bias: &[f64],
    activation: Activation,
    y: &mut [f64],
) {
    let cout = bias.len();
    let output = Nhwc {
        channels: cout,
        ..input
    };
    for n in 0..input.batch {
        for row in 0..input.height {
            for col in 0..input.width {
                for co in 0..cout {
                    let mut z = bias[co];
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let Some((r, c)) = tap(input, row, col, ky, kx) else {
                                continue;
                            };
                            for ci in 0..input.channels {
                                let w = kernel[((ky * 3 + kx) * input.channels + ci) * cout + co];
                                z += x[at(input, n, r, c, ci)] * w;
                            }
                        }
                    }
                    y[at(output, n, row, col, co)] = activate(activation, z);
                }
            }
        }
    }
}

/// relu: dz = dy * (y > 0); sigmoid: dz = dy * y * (1 - y)
pub fn activation_backward(activation: Activation, y: &[f64], grad: &mut [f64]) {
    for (g, &y) in grad.iter_mut().zip(y) {
        *g *= match activation {
            Activation::Relu => f64::from(y > 0.0),
            Activation::Sigmoid => y * (1.0 - y),
        };
    }
}

/// dx[n, r + ky - 1, c + kx - 1, ci] += dz[n, r, c, co] * kernel[ky, kx, ci, co]
pub fn conv2d_backward_data(input: Nhwc, dz: &[f64], kernel: &[f64], cout: usize, dx: &mut [f64]) {
    let output = Nhwc {
        channels: cout,
        ..input
    };
    dx[..input.len()].fill(0.0);
    for n in 0..input.batch {
        for row in 0..input.height {
            for col in 0..input.width {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let Some((r, c)) = tap(input, row, col, ky, kx) else {
                            continue;
                        };
                        for ci in 0..input.channels {
                            for co in 0..cout {
                                let w = kernel[((ky * 3 + kx) * input.channels + ci) * cout + co];
                                dx[at(input, n, r, c, ci)] += dz[at(output, n, row, col, co)] * w;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dkernel[ky, kx, ci, co] = sum of x[n, r + ky - 1, c + kx - 1, ci] * dz[n, r, c, co]`; `dbias[co] = sum of dz[.., co]`
pub fn conv2d_backward_filter(
    input: Nhwc,
    x: &[f64],
    dz: &[f64],
    dkernel: &mut [f64],
    dbias: &mut [f64],
) {
    let cout = dbias.len();
    let output = Nhwc {
        channels: cout,
        ..input
    };
    dkernel.fill(0.0);
    dbias.fill(0.0);
    for n in 0..input.batch {
        for row in 0..input.height {
            for col in 0..input.width {
                for co in 0..cout {
                    let g = dz[at(output, n, row, col, co)];
                    dbias[co] += g;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let Some((r, c)) = tap(input, row, col, ky, kx) else {
                                continue;
                            };
                            for ci in 0..input.channels {
                                dkernel[((ky * 3 + kx) * input.channels + ci) * cout + co] +=
                                    x[at(input, n, r, c, ci)] * g;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The input position of the first maximum (row-major) of each 2x2 window, for every output element.
fn maxpool2_argmax(input: Nhwc, x: &[f64]) -> Vec<usize> {
    let mut argmax = Vec::with_capacity(input.len() / 4);
    for n in 0..input.batch {
        for row in 0..input.height / 2 {
            for col in 0..input.width / 2 {
                for ch in 0..input.channels {
                    let window = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .map(|(i, j)| at(input, n, 2 * row + i, 2 * col + j, ch));
                    let first_max = window
                        .into_iter()
                        .reduce(|best, i| if x[i] > x[best] { i } else { best });
                    argmax.push(first_max.expect("a 2x2 window is never empty"));
                }
            }
        }
    }
    argmax
}

/// y = max of each 2x2 window
pub fn maxpool2_forward(input: Nhwc, x: &[f64], y: &mut [f64]) {
    for (y, i) in y.iter_mut().zip(maxpool2_argmax(input, x)) {
        *y = x[i];
    }
}

/// dx = dy routed to each window's first maximum
pub fn maxpool2_backward(input: Nhwc, x: &[f64], dy: &[f64], dx: &mut [f64]) {
    dx[..input.len()].fill(0.0);
    for (&g, i) in dy.iter().zip(maxpool2_argmax(input, x)) {
        dx[i] = g;
    }
}

/// y[n, 2r + i, 2c + j, ch] = x[n, r, c, ch]
pub fn upsample2_forward(input: Nhwc, x: &[f64], y: &mut [f64]) {
    let output = Nhwc {
        height: 2 * input.height,
        width: 2 * input.width,
        ..input
    };
    for n in 0..output.batch {
        for row in 0..output.height {
            for col in 0..output.width {
                for ch in 0..output.channels {
                    y[at(output, n, row, col, ch)] = x[at(input, n, row / 2, col / 2, ch)];
                }
            }
        }
    }
}

/// dx[n, r, c, ch] = sum over i, j of dy[n, 2r + i, 2c + j, ch]
pub fn upsample2_backward(input: Nhwc, dy: &[f64], dx: &mut [f64]) {
    let output = Nhwc {
        height: 2 * input.height,
        width: 2 * input.width,
        ..input
    };
    dx[..input.len()].fill(0.0);
    for n in 0..output.batch {
        for row in 0..output.height {
            for col in 0..output.width {
                for ch in 0..output.channels {
                    dx[at(input, n, row / 2, col / 2, ch)] += dy[at(output, n, row, col, ch)];
                }
            }
        }
    }
}

/// mean of (prediction - target)^2
pub fn mse_loss(prediction: &[f64], target: &[f64]) -> f64 {
    let sum: f64 = prediction
        .iter()
        .zip(target)
        .map(|(p, t)| (p - t) * (p - t))
        .sum();
    sum / prediction.len() as f64
}

/// d mse / d prediction = 2 (prediction - target) / len
pub fn mse_backward(prediction: &[f64], target: &[f64], grad: &mut [f64]) {
    let scale = 2.0 / prediction.len() as f64;
    for ((g, p), t) in grad.iter_mut().zip(prediction).zip(target) {
        *g = scale * (p - t);
    }
}

/// v = rho v + (1 - rho) g^2; w = w - lr g / sqrt(v + epsilon)
pub fn rmsprop_update(hyper: RmsProp, params: &mut [f64], grads: &[f64], velocity: &mut [f64]) {
    let (lr, rho, eps) = (
        f64::from(hyper.learning_rate),
        f64::from(hyper.rho),
        f64::from(hyper.epsilon),
    );
    for ((w, &g), v) in params.iter_mut().zip(grads).zip(velocity.iter_mut()) {
        *v = rho * *v + (1.0 - rho) * g * g;
        *w -= lr * g / (*v + eps).sqrt();
    }
}

/// m = m + (g - m)(1 - beta_1); v = v + (g^2 - v)(1 - beta_2);
/// w = w - alpha m / (sqrt(v) + epsilon), alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)
pub fn adam_update(
    hyper: Adam,
    t: u64,
    params: &mut [f64],
    grads: &[f64],
    momentum: &mut [f64],
    velocity: &mut [f64],
) {
    let alpha = hyper.step_size(t);
    let (beta_1, beta_2, eps) = (
        f64::from(hyper.beta_1),
        f64::from(hyper.beta_2),
        f64::from(hyper.epsilon),
    );
    let state = momentum.iter_mut().zip(velocity.iter_mut());
    for ((w, &g), (m, v)) in params.iter_mut().zip(grads).zip(state) {
        *m += (g - *m) * (1.0 - beta_1);
        *v += (g * g - *v) * (1.0 - beta_2);
        *w -= alpha * *m / (v.sqrt() + eps);
    }
}

/// The input a convolution sees: the stored one, or it upsampled (a new tensor) and its shape.
fn conv_input(input: Nhwc, read: ConvInput, x: &[f64]) -> (Nhwc, std::borrow::Cow<'_, [f64]>) {
    match read {
        ConvInput::Direct => (input, x.into()),
        ConvInput::Upsampled2 => {
            let shape = upsampled(input);
            let mut up = vec![0.0; shape.len()];
            upsample2_forward(input, x, &mut up);
            (shape, up.into())
        }
    }
}

fn upsampled(input: Nhwc) -> Nhwc {
    Nhwc {
        height: 2 * input.height,
        width: 2 * input.width,
        ..input
    }
}

/// The direct loops above as a [`Backend`], computing in float64.
#[derive(Debug, Default)]
pub struct ReferenceBackend;

impl Backend for ReferenceBackend {
    type Buffer = Vec<f64>;

    fn name(&self) -> String {
        "reference (direct loops, float64)".into()
    }

    fn plan(&mut self, _convs: &[Conv]) -> Result<()> {
        Ok(())
    }

    fn alloc(&mut self, len: usize) -> Result<Vec<f64>> {
        Ok(vec![0.0; len])
    }

    fn upload(&mut self, host: &[f32], device: &mut Vec<f64>) -> Result<()> {
        for (d, &h) in device.iter_mut().zip(host) {
            *d = f64::from(h);
        }
        Ok(())
    }

    fn download(&mut self, device: &Vec<f64>, host: &mut [f32]) -> Result<()> {
        for (h, &d) in host.iter_mut().zip(device) {
            *h = d as f32;
        }
        Ok(())
    }

    fn conv2d_forward(
        &mut self,
        conv: &Conv,
        x: &Vec<f64>,
        params: &Vec<f64>,
        y: &mut Vec<f64>,
    ) -> Result<()> {
        let (input, x) = conv_input(conv.input, conv.read, x);
        let (kernel, bias) = (
            &params[conv.slot.weight.clone()],
            &params[conv.slot.bias.clone()],
        );
        conv2d_forward(input, &x, kernel, bias, conv.activation, y);
        Ok(())
    }

    fn activation_backward(
        &mut self,
        activation: Activation,
        len: usize,
        y: &Vec<f64>,
        grad: &mut Vec<f64>,
    ) -> Result<()> {
        activation_backward(activation, &y[..len], &mut grad[..len]);
        Ok(())
    }

    fn conv2d_backward_data(
        &mut self,
        conv: &Conv,
        dz: &Vec<f64>,
        params: &Vec<f64>,
        dx: &mut Vec<f64>,
    ) -> Result<()> {
        let (kernel, cout) = (&params[conv.slot.weight.clone()], conv.slot.out_channels);
        match conv.read {
            ConvInput::Direct => conv2d_backward_data(conv.input, dz, kernel, cout, dx),
            ConvInput::Upsampled2 => {
                let up = upsampled(conv.input);
                let mut dup = vec![0.0; up.len()];
                conv2d_backward_data(up, dz, kernel, cout, &mut dup);
                upsample2_backward(conv.input, &dup, dx);
            }
        }
        Ok(())
    }

    fn conv2d_backward_filter(
        &mut self,
        conv: &Conv,
        x: &Vec<f64>,
        dz: &Vec<f64>,
        grads: &mut Vec<f64>,
    ) -> Result<()> {
        let (input, x) = conv_input(conv.input, conv.read, x);
        let slot = &conv.slot;
        let (dkernel, dbias) =
            grads[slot.weight.start..slot.bias.end].split_at_mut(slot.weight.len());
        conv2d_backward_filter(input, &x, dz, dkernel, dbias);
        Ok(())
    }

    fn conv2d_pooled_forward(
        &mut self,
        conv: &Conv,
        x: &Vec<f64>,
        params: &Vec<f64>,
        pooled: &mut Vec<f64>,
    ) -> Result<()> {
        let mut y = vec![0.0; conv.output().len()];
        self.conv2d_forward(conv, x, params, &mut y)?;
        maxpool2_forward(conv.output(), &y, pooled);
        Ok(())
    }

    fn conv2d_pooled_backward_filter(
        &mut self,
        conv: &Conv,
        x: &Vec<f64>,
        params: &Vec<f64>,
        d_pooled: &Vec<f64>,
        grads: &mut Vec<f64>,
    ) -> Result<()> {
        let output = conv.output();
        let mut y = vec![0.0; output.len()];
        self.conv2d_forward(conv, x, params, &mut y)?;
        let mut dz = vec![0.0; output.len()];
        maxpool2_backward(output, &y, &d_pooled[..output.len() / 4], &mut dz);
        activation_backward(conv.activation, &y, &mut dz);
        self.conv2d_backward_filter(conv, x, &dz, grads)
    }

    fn maxpool2_forward(&mut self, input: Nhwc, x: &Vec<f64>, y: &mut Vec<f64>) -> Result<()> {
        maxpool2_forward(input, x, y);
        Ok(())
    }

    fn maxpool2_backward(
        &mut self,
        input: Nhwc,
        (x, x_activation): (&Vec<f64>, Option<Activation>),
        dy: &Vec<f64>,
        dx: &mut Vec<f64>,
    ) -> Result<()> {
        maxpool2_backward(input, x, dy, dx);
        if let Some(activation) = x_activation {
            let len = input.len();
            activation_backward(activation, &x[..len], &mut dx[..len]);
        }
        Ok(())
    }

    fn upsample2_forward(&mut self, input: Nhwc, x: &Vec<f64>, y: &mut Vec<f64>) -> Result<()> {
        upsample2_forward(input, x, y);
        Ok(())
    }

    fn upsample2_backward(&mut self, input: Nhwc, dy: &Vec<f64>, dx: &mut Vec<f64>) -> Result<()> {
        upsample2_backward(input, dy, dx);
        Ok(())
    }

    fn mse_loss(&mut self, len: usize, prediction: &Vec<f64>, target: &Vec<f64>) -> Result<f64> {
        Ok(mse_loss(&prediction[..len], &target[..len]))
    }

    fn mse_backward(
        &mut self,
        len: usize,
        prediction: &Vec<f64>,
        target: &Vec<f64>,
        grad: &mut Vec<f64>,
    ) -> Result<()> {
        mse_backward(&prediction[..len], &target[..len], &mut grad[..len]);
        Ok(())
    }

    fn rmsprop_update(
        &mut self,
        hyper: RmsProp,
        params: &mut Vec<f64>,
        grads: &Vec<f64>,
        velocity: &mut Vec<f64>,
    ) -> Result<()> {
        rmsprop_update(hyper, params, grads, velocity);
        Ok(())
    }

    fn adam_update(
        &mut self,
        hyper: Adam,
        t: u64,
        params: &mut Vec<f64>,
        grads: &Vec<f64>,
        momentum: &mut Vec<f64>,
        velocity: &mut Vec<f64>,
    ) -> Result<()> {
        adam_update(hyper, t, params, grads, momentum, velocity);
        Ok(())
    }
}
