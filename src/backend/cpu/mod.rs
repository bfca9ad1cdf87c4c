//! The CPU engine: convolutions in `conv` (plain ones by Winograd's F(2x2, 3x3), or
//! F(4x4, 3x3) with [`CpuBackend::with_winograd_tile`], in `winograd`; an upsampled input's
//! by F(4, 2) at the source's resolution in `upsampled_winograd`; the one-channel layers in
//! `one_channel`, with `gather` and `gemm`), pooling in `pool`, element-wise operations here,
//! every operation spread over threads with rayon.
//!
//! Work is cut into a fixed number of pieces whatever the thread count, and every reduction
//! adds its pieces in a fixed order, so a run gives the same bits on 1 thread or 64.

mod conv;
mod gather;
mod gemm;
mod one_channel;
mod pool;
mod tile_transforms;
mod upsampled_winograd;
mod winograd;

use std::sync::LazyLock;

use rayon::prelude::*;

use super::{Adam, Backend, Conv, ConvAlgorithm, ConvInput, Nhwc, RmsProp, WinogradTile};
use crate::error::{Error, Result};
use crate::model::Activation;
use conv::{ConvScratch, Epilogue};
use pool::{PoolRows, RouteToFirstMaxima};

/// Elements per piece of work in element-wise operations.
const ELEMENT_CHUNK: usize = 1 << 14;
/// Pieces of the loss, summed in order.
const LOSS_CHUNKS: usize = 64;

/// The vector instructions the convolutions run with on this CPU, as `pulp` and the GEMM
/// kernels choose them at run time.
fn vector_instructions() -> &'static str {
    struct Lanes;
    impl pulp::WithSimd for Lanes {
        type Output = usize;
        fn with_simd<S: pulp::Simd>(self, _: S) -> usize {
            S::F32_LANES
        }
    }
    match pulp::Arch::new().dispatch(Lanes) {
        16 => "AVX-512",
        8 => "AVX2",
        _ => "128-bit vectors",
    }
}

/// The processor, its threads and vector instructions, e.g. "Intel(R) Xeon(R) Processor, 2
/// threads, AVX-512, FP32": what a benchmark ran on (the same code runs at different speeds,
/// and in different proportions, on different processors).
pub fn description() -> String {
    static PROCESSOR: LazyLock<Option<String>> = LazyLock::new(|| {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
        processor_name(&cpuinfo).map(str::to_string)
    });
    let threads = rayon::current_num_threads();
    let simd = vector_instructions();
    match &*PROCESSOR {
        Some(processor) => format!("{processor}, {threads} threads, {simd}, FP32"),
        None => format!("{threads} threads, {simd}, FP32"),
    }
}

/// The first processor's name in the text of Linux's /proc/cpuinfo (its `model name`).
fn processor_name(cpuinfo: &str) -> Option<&str> {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map(|(_, name)| name.trim())
        .filter(|name| !name.is_empty())
}

/// The CPU backend; `plan` sizes its scratch space once.
#[derive(Debug, Default)]
pub struct CpuBackend {
    conv: ConvScratch,
    /// One partial sum per piece of the loss.
    partial_losses: Vec<f64>,
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same engine with its plain convolutions by F(m x m, 3x3) of `tile`
    /// (F(2x2, 3x3) by default).
    pub fn with_winograd_tile(mut self, tile: WinogradTile) -> Self {
        self.conv.winograd = tile;
        self
    }

    /// Fails unless `plan` made room for this convolution.
    fn check_planned(&self, conv: &Conv) -> Result<()> {
        if self.conv.fits(conv) {
            return Ok(());
        }
        Err(Error::Backend {
            backend: self.name(),
            reason: format!(
                "no scratch planned for convolution {} at {:?}",
                conv.slot.name, conv.input
            ),
        })
    }
}

impl Backend for CpuBackend {
    type Buffer = Vec<f32>;

    fn name(&self) -> String {
        match self.conv.winograd {
            WinogradTile::TwoByTwo => format!("cpu ({})", description()),
            WinogradTile::FourByFour => format!("cpu ({}, Winograd 4x4)", description()),
        }
    }

    fn conv_algorithm(&self) -> ConvAlgorithm {
        ConvAlgorithm::Winograd(self.conv.winograd)
    }

    fn plan(&mut self, convs: &[Conv]) -> Result<()> {
        self.conv.plan(convs);
        self.partial_losses = vec![0.0; LOSS_CHUNKS];
        Ok(())
    }

    fn alloc(&mut self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn upload(&mut self, host: &[f32], device: &mut Vec<f32>) -> Result<()> {
        device[..host.len()].copy_from_slice(host);
        Ok(())
    }

    fn download(&mut self, device: &Vec<f32>, host: &mut [f32]) -> Result<()> {
        host.copy_from_slice(&device[..host.len()]);
        Ok(())
    }

    fn conv2d_forward(
        &mut self,
        conv: &Conv,
        x: &Vec<f32>,
        params: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        self.check_planned(conv)?;
        conv::forward(&mut self.conv, conv, x, params, y);
        Ok(())
    }

    fn activation_backward(
        &mut self,
        activation: Activation,
        len: usize,
        y: &Vec<f32>,
        grad: &mut Vec<f32>,
    ) -> Result<()> {
        grad[..len]
            .par_chunks_mut(ELEMENT_CHUNK)
            .zip(y[..len].par_chunks(ELEMENT_CHUNK))
            .for_each(|(grad, y)| conv::times_derivative(activation, grad, y));
        Ok(())
    }

    fn conv2d_backward_data(
        &mut self,
        conv: &Conv,
        dz: &Vec<f32>,
        params: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        self.check_planned(conv)?;
        let kernel = &params[conv.slot.weight.clone()];
        conv::backward_data(&mut self.conv, conv, (dz, kernel), Epilogue::None, dx);
        Ok(())
    }

    fn conv2d_backward_filter(
        &mut self,
        conv: &Conv,
        x: &Vec<f32>,
        dz: &Vec<f32>,
        grads: &mut Vec<f32>,
    ) -> Result<()> {
        self.check_planned(conv)?;
        let grads = &mut grads[conv.slot.weight.start..conv.slot.bias.end];
        conv::backward_filter(&mut self.conv, conv, x, dz, grads);
        Ok(())
    }

    fn conv2d_backward(
        &mut self,
        conv: &Conv,
        x: (&Vec<f32>, Option<Activation>),
        dz: &Vec<f32>,
        params: &Vec<f32>,
        grads: &mut Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        // One output channel of an upsampled input (conv6): one pass over x (conv.rs). Else
        // the kernel gradient and backward-data (with the activation's derivative in its
        // epilogue after an activation), an upsampled input's from one transform of dz.
        let one_output =
            conv.read == ConvInput::Upsampled2 && one_channel::writes_one_channel(conv);
        let (x, x_activation) = (&x.0[..conv.input.len()], x.1);
        let kernel = &params[conv.slot.weight.clone()];
        self.check_planned(conv)?;
        if one_output {
            let slot = &conv.slot;
            conv::backward_one_output(
                &mut self.conv,
                conv,
                (x, x_activation),
                (&dz[..conv.output().len()], kernel),
                &mut grads[slot.weight.start..slot.bias.end],
                &mut dx[..conv.input.len()],
            );
            return Ok(());
        }
        let epilogue = match x_activation {
            Some(activation) => Epilogue::InputDerivative(x, activation),
            None => Epilogue::None,
        };
        let grads = &mut grads[conv.slot.weight.start..conv.slot.bias.end];
        conv::backward(&mut self.conv, conv, x, (dz, kernel), (epilogue, grads), dx);
        Ok(())
    }

    fn conv2d_pooled_forward(
        &mut self,
        conv: &Conv,
        x: &Vec<f32>,
        params: &Vec<f32>,
        pooled: &mut Vec<f32>,
    ) -> Result<()> {
        conv.check_poolable(self.name())?;
        self.check_planned(conv)?;
        conv::pooled_forward(&mut self.conv, conv, x, params, pooled);
        Ok(())
    }

    fn conv2d_pooled_backward_filter(
        &mut self,
        conv: &Conv,
        x: &Vec<f32>,
        params: &Vec<f32>,
        d_pooled: &Vec<f32>,
        grads: &mut Vec<f32>,
    ) -> Result<()> {
        conv.check_poolable(self.name())?;
        self.check_planned(conv)?;
        let grads = &mut grads[conv.slot.weight.start..conv.slot.bias.end];
        conv::pooled_backward_filter(&mut self.conv, conv, (x, params), d_pooled, grads);
        Ok(())
    }

    fn maxpool2_forward(&mut self, input: Nhwc, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        // Output row r reads input rows 2r and 2r + 1.
        let (w, c) = (input.width, input.channels);
        y[..input.len() / 4]
            .par_chunks_mut(w / 2 * c)
            .zip(x[..input.len()].par_chunks(2 * w * c))
            .for_each(|(pooled, rows)| {
                pulp::Arch::new().dispatch(PoolRows {
                    rows,
                    channels: c,
                    pooled,
                })
            });
        Ok(())
    }

    fn maxpool2_backward(
        &mut self,
        input: Nhwc,
        (x, x_activation): (&Vec<f32>, Option<Activation>),
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        // Each output pixel's gradient goes to the first of its four inputs (row-major) that
        // holds the window's maximum, times the activation's derivative there; the other three
        // get zero.
        let (w, c) = (input.width, input.channels);
        dx[..input.len()]
            .par_chunks_mut(2 * w * c)
            .zip(x[..input.len()].par_chunks(2 * w * c))
            .zip(dy[..input.len() / 4].par_chunks(w / 2 * c))
            .for_each(|((d_rows, rows), d_pooled)| {
                pulp::Arch::new().dispatch(RouteToFirstMaxima {
                    activation: x_activation,
                    rows,
                    channels: c,
                    d_pooled,
                    d_rows,
                })
            });
        Ok(())
    }

    fn upsample2_forward(&mut self, input: Nhwc, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        // Output row r of the whole batch copies input row r / 2, each pixel twice.
        let c = input.channels;
        let in_row = input.width * c;
        y[..4 * input.len()]
            .par_chunks_mut(2 * in_row)
            .enumerate()
            .for_each(|(r, y_row)| {
                let x_row = &x[r / 2 * in_row..][..in_row];
                for (pair, pixel) in y_row.chunks_exact_mut(2 * c).zip(x_row.chunks_exact(c)) {
                    pair[..c].copy_from_slice(pixel);
                    pair[c..].copy_from_slice(pixel);
                }
            });
        Ok(())
    }

    fn upsample2_backward(&mut self, input: Nhwc, dy: &Vec<f32>, dx: &mut Vec<f32>) -> Result<()> {
        let c = input.channels;
        let in_row = input.width * c;
        dx[..input.len()]
            .par_chunks_mut(in_row)
            .zip(dy[..4 * input.len()].par_chunks(4 * in_row))
            .for_each(|(dx_row, dy_rows)| {
                let (top, bottom) = dy_rows.split_at(2 * in_row);
                for (i, g) in dx_row.iter_mut().enumerate() {
                    let (col, ch) = (i / c * 2, i % c);
                    let (left, right) = (col * c + ch, (col + 1) * c + ch);
                    *g = top[left] + top[right] + bottom[left] + bottom[right];
                }
            });
        Ok(())
    }

    fn mse_loss(&mut self, len: usize, prediction: &Vec<f32>, target: &Vec<f32>) -> Result<f64> {
        let per_chunk = len.div_ceil(LOSS_CHUNKS).max(1);
        let partials = &mut self.partial_losses[..len.div_ceil(per_chunk)];
        partials
            .par_iter_mut()
            .zip(prediction[..len].par_chunks(per_chunk))
            .zip(target[..len].par_chunks(per_chunk))
            .for_each(|((sum, p), t)| {
                *sum = p
                    .iter()
                    .zip(t)
                    .map(|(&p, &t)| f64::from(p - t) * f64::from(p - t))
                    .sum();
            });
        Ok(partials.iter().sum::<f64>() / len as f64)
    }

    fn mse_backward(
        &mut self,
        len: usize,
        prediction: &Vec<f32>,
        target: &Vec<f32>,
        grad: &mut Vec<f32>,
    ) -> Result<()> {
        let scale = 2.0 / len as f32;
        grad[..len]
            .par_chunks_mut(ELEMENT_CHUNK)
            .zip(prediction[..len].par_chunks(ELEMENT_CHUNK))
            .zip(target[..len].par_chunks(ELEMENT_CHUNK))
            .for_each(|((g, p), t)| {
                for ((g, p), t) in g.iter_mut().zip(p).zip(t) {
                    *g = scale * (p - t);
                }
            });
        Ok(())
    }

    fn rmsprop_update(
        &mut self,
        hyper: RmsProp,
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        velocity: &mut Vec<f32>,
    ) -> Result<()> {
        let RmsProp {
            learning_rate: lr,
            rho,
            epsilon,
        } = hyper;
        params
            .par_chunks_mut(ELEMENT_CHUNK)
            .zip(grads.par_chunks(ELEMENT_CHUNK))
            .zip(velocity.par_chunks_mut(ELEMENT_CHUNK))
            .for_each(|((w, g), v)| {
                for ((w, &g), v) in w.iter_mut().zip(g).zip(v) {
                    *v = rho * *v + (1.0 - rho) * g * g;
                    *w -= lr * g / (*v + epsilon).sqrt();
                }
            });
        Ok(())
    }

    fn adam_update(
        &mut self,
        hyper: Adam,
        t: u64,
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        momentum: &mut Vec<f32>,
        velocity: &mut Vec<f32>,
    ) -> Result<()> {
        let alpha = hyper.step_size(t) as f32;
        let (one_minus_beta_1, one_minus_beta_2) = (1.0 - hyper.beta_1, 1.0 - hyper.beta_2);
        let epsilon = hyper.epsilon;
        params
            .par_chunks_mut(ELEMENT_CHUNK)
            .zip(grads.par_chunks(ELEMENT_CHUNK))
            .zip(momentum.par_chunks_mut(ELEMENT_CHUNK))
            .zip(velocity.par_chunks_mut(ELEMENT_CHUNK))
            .for_each(|(((w, g), m), v)| {
                let state = m.iter_mut().zip(v.iter_mut());
                for ((w, &g), (m, v)) in w.iter_mut().zip(g).zip(state) {
                    *m += (g - *m) * one_minus_beta_1;
                    *v += (g * g - *v) * one_minus_beta_2;
                    *w -= alpha * *m / (v.sqrt() + epsilon);
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::processor_name;

    #[test]
    fn the_processor_is_named_from_cpuinfo() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
                   model\t\t: 207\nmodel name\t: Intel(R) Xeon(R) Processor\n\
                   stepping\t: 2\n\nprocessor\t: 1\nmodel name\t: another\n";
        assert_eq!(processor_name(x86), Some("Intel(R) Xeon(R) Processor"));
        let without = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0c\n";
        assert_eq!(processor_name(without), None);
        assert_eq!(processor_name("model name\t:\n"), None);
    }
}
