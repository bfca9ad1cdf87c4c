//! The CPU engine: convolutions as im2col tiles times a GEMM (the `gemm` crate), every operation
//! spread over threads with rayon.
//!
//! Work is cut into a fixed number of chunks whatever the thread count, and every reduction
//! adds its chunks in a fixed order, so a run gives the same bits on 1 thread or 64.

use rayon::prelude::*;

use super::{Backend, Nhwc, RmsProp};
use crate::error::{Error, Result};
use crate::model::{Activation, ParamSlot};

/// Pixels per im2col tile: a tile of the widest layer (9 x 128 taps) stays in L2.
const TILE_PIXELS: usize = 128;
/// The fixed partition of each operation's pixels into independent pieces of work.
const WORK_CHUNKS: usize = 64;
/// Elements per piece of work in element-wise operations.
const ELEMENT_CHUNK: usize = 1 << 14;

/// A strided view of a row-major or transposed matrix inside a slice.
#[derive(Clone, Copy)]
struct Matrix<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Matrix<'a> {
    fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Matrix {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    fn transposed(self) -> Self {
        Matrix {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// c[m, n] (row-major) = a[m, k] b[k, n], or c += a b when `accumulate`.
fn matmul(a: Matrix, b: Matrix, c: &mut [f32], accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && a.fits() && b.fits() && c.len() >= m * n);
    // SAFETY: the asserts above keep every index gemm computes from the shapes and strides
    // inside the three slices, and `c` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Copies the 3x3 neighbourhood of `col.len() / (9 cin)` pixels, starting at pixel `first`,
/// into rows of `col`: row r = [tap (0,0) channels, tap (0,1) channels, ..., tap (2,2) channels],
/// zeros where the tap falls outside the image.
fn im2col(input: Nhwc, x: &[f32], first: usize, col: &mut [f32]) {
    let cin = input.channels;
    let (h, w) = (input.height, input.width);
    for (offset, row) in col.chunks_exact_mut(9 * cin).enumerate() {
        let pixel = first + offset;
        let (image, y0, x0) = (pixel / (h * w), pixel / w % h, pixel % w);
        for (t, taps) in row.chunks_exact_mut(cin).enumerate() {
            let (yy, xx) = ((y0 + t / 3).wrapping_sub(1), (x0 + t % 3).wrapping_sub(1));
            if yy < h && xx < w {
                let src = ((image * h + yy) * w + xx) * cin;
                taps.copy_from_slice(&x[src..src + cin]);
            } else {
                taps.fill(0.0);
            }
        }
    }
}

fn activate(activation: Activation, z: f32) -> f32 {
    match activation {
        Activation::Relu => z.max(0.0),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
    }
}

/// The CPU backend; `plan` sizes its scratch space once.
#[derive(Debug, Default)]
pub struct CpuBackend {
    /// One im2col tile per chunk of work.
    columns: Vec<f32>,
    /// One partial kernel-and-bias gradient per chunk of work.
    partial_grads: Vec<f32>,
    /// The kernel flipped and transposed for backward-data.
    flipped: Vec<f32>,
    /// One partial sum per chunk of the loss.
    partial_losses: Vec<f64>,
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn pixels_per_chunk(pixels: usize) -> usize {
        pixels.div_ceil(WORK_CHUNKS).max(1)
    }

    /// Fails unless `plan` made room for im2col tiles `k` wide and gradients of `size` values.
    fn check_planned(&self, k: usize, size: usize) -> Result<()> {
        if self.columns.len() < WORK_CHUNKS * TILE_PIXELS * k || self.flipped.len() < size {
            return Err(Error::Backend {
                backend: self.name(),
                reason: format!("no scratch planned for a convolution {k} taps wide"),
            });
        }
        Ok(())
    }

    /// y = epilogue(im2col(x) kernel), tile by tile; `kernel` is [9 cin, cout] row-major.
    fn convolve(
        columns: &mut [f32],
        input: Nhwc,
        x: &[f32],
        kernel: &[f32],
        cout: usize,
        epilogue: Option<(&[f32], Activation)>,
        y: &mut [f32],
    ) {
        let k = 9 * input.channels;
        let per_chunk = Self::pixels_per_chunk(input.pixels());
        let kernel = Matrix::row_major(kernel, k, cout);
        y[..input.pixels() * cout]
            .par_chunks_mut(per_chunk * cout)
            .zip(columns.par_chunks_mut(TILE_PIXELS * k))
            .enumerate()
            .for_each(|(chunk, (y_chunk, col))| {
                let first = chunk * per_chunk;
                for (tile, y_tile) in y_chunk.chunks_mut(TILE_PIXELS * cout).enumerate() {
                    let pixels = y_tile.len() / cout;
                    let col = &mut col[..pixels * k];
                    im2col(input, x, first + tile * TILE_PIXELS, col);
                    matmul(Matrix::row_major(col, pixels, k), kernel, y_tile, false);
                    if let Some((bias, activation)) = epilogue {
                        for out in y_tile.chunks_exact_mut(cout) {
                            for (v, b) in out.iter_mut().zip(bias) {
                                *v = activate(activation, *v + b);
                            }
                        }
                    }
                }
            });
    }
}

impl Backend for CpuBackend {
    type Buffer = Vec<f32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn plan(&mut self, convs: &[(Nhwc, ParamSlot)]) -> Result<()> {
        let widest = convs
            .iter()
            .map(|(_, s)| 9 * s.in_channels.max(s.out_channels))
            .max()
            .unwrap_or(0);
        let largest = convs
            .iter()
            .map(|(_, s)| s.bias.end - s.weight.start)
            .max()
            .unwrap_or(0);
        self.columns = vec![0.0; WORK_CHUNKS * TILE_PIXELS * widest];
        self.partial_grads = vec![0.0; WORK_CHUNKS * largest];
        self.flipped = vec![0.0; largest];
        self.partial_losses = vec![0.0; WORK_CHUNKS];
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
        input: Nhwc,
        x: &Vec<f32>,
        params: &Vec<f32>,
        slot: &ParamSlot,
        activation: Activation,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        self.check_planned(9 * slot.in_channels, slot.bias.end - slot.weight.start)?;
        let bias = &params[slot.bias.clone()];
        let kernel = &params[slot.weight.clone()];
        let epilogue = Some((bias, activation));
        Self::convolve(
            &mut self.columns,
            input,
            x,
            kernel,
            slot.out_channels,
            epilogue,
            y,
        );
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
            .for_each(|(grad, y)| {
                for (g, &y) in grad.iter_mut().zip(y) {
                    *g *= match activation {
                        Activation::Relu => f32::from(u8::from(y > 0.0)),
                        Activation::Sigmoid => y * (1.0 - y),
                    };
                }
            });
        Ok(())
    }

    fn conv2d_backward_data(
        &mut self,
        input: Nhwc,
        dz: &Vec<f32>,
        params: &Vec<f32>,
        slot: &ParamSlot,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        let (cin, cout) = (slot.in_channels, slot.out_channels);
        self.check_planned(9 * cout, slot.bias.end - slot.weight.start)?;
        let kernel = &params[slot.weight.clone()];
        let flipped = &mut self.flipped[..kernel.len()];
        // flipped[2 - ky, 2 - kx, co, ci] = kernel[ky, kx, ci, co]
        for (t, taps) in kernel.chunks_exact(cin * cout).enumerate() {
            let dst = &mut flipped[(8 - t) * cin * cout..][..cin * cout];
            for ci in 0..cin {
                for co in 0..cout {
                    dst[co * cin + ci] = taps[ci * cout + co];
                }
            }
        }
        let output = Nhwc {
            channels: cout,
            ..input
        };
        Self::convolve(&mut self.columns, output, dz, flipped, cin, None, dx);
        Ok(())
    }

    fn conv2d_backward_filter(
        &mut self,
        input: Nhwc,
        x: &Vec<f32>,
        dz: &Vec<f32>,
        grads: &mut Vec<f32>,
        slot: &ParamSlot,
    ) -> Result<()> {
        let (k, cout) = (9 * slot.in_channels, slot.out_channels);
        let size = slot.bias.end - slot.weight.start;
        self.check_planned(k, size)?;
        let per_chunk = Self::pixels_per_chunk(input.pixels());
        let chunks = input.pixels().div_ceil(per_chunk);
        let dz = &dz[..input.pixels() * cout];
        self.partial_grads[..chunks * size]
            .par_chunks_mut(size)
            .zip(self.columns.par_chunks_mut(TILE_PIXELS * k))
            .zip(dz.par_chunks(per_chunk * cout))
            .enumerate()
            .for_each(|(chunk, ((partial, col), dz_chunk))| {
                let (dkernel, dbias) = partial.split_at_mut(k * cout);
                dbias.fill(0.0);
                for (tile, dz_tile) in dz_chunk.chunks(TILE_PIXELS * cout).enumerate() {
                    let pixels = dz_tile.len() / cout;
                    let col = &mut col[..pixels * k];
                    im2col(input, x, chunk * per_chunk + tile * TILE_PIXELS, col);
                    let col_t = Matrix::row_major(col, pixels, k).transposed();
                    let dz_tile_m = Matrix::row_major(dz_tile, pixels, cout);
                    matmul(col_t, dz_tile_m, dkernel, tile > 0);
                    for row in dz_tile.chunks_exact(cout) {
                        for (b, g) in dbias.iter_mut().zip(row) {
                            *b += g;
                        }
                    }
                }
            });
        let partials = &self.partial_grads[..chunks * size];
        grads[slot.weight.start..slot.bias.end]
            .par_chunks_mut(1024)
            .enumerate()
            .for_each(|(block, out)| {
                for (i, g) in out.iter_mut().enumerate() {
                    let at = block * 1024 + i;
                    *g = partials.chunks_exact(size).map(|p| p[at]).sum();
                }
            });
        Ok(())
    }

    fn maxpool2_forward(&mut self, input: Nhwc, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        let (w, c) = (input.width, input.channels);
        let out_row = w / 2 * c;
        y[..input.len() / 4]
            .par_chunks_mut(out_row)
            .enumerate()
            .for_each(|(r, y_row)| {
                let top = &x[2 * r * w * c..][..w * c];
                let bottom = &x[(2 * r + 1) * w * c..][..w * c];
                for (i, out) in y_row.iter_mut().enumerate() {
                    let (col, ch) = (i / c * 2, i % c);
                    let window = [
                        top[col * c + ch],
                        top[(col + 1) * c + ch],
                        bottom[col * c + ch],
                        bottom[(col + 1) * c + ch],
                    ];
                    *out = window.into_iter().reduce(f32::max).unwrap_or(f32::NAN);
                }
            });
        Ok(())
    }

    fn maxpool2_backward(
        &mut self,
        input: Nhwc,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        let (w, c) = (input.width, input.channels);
        let out_row = w / 2 * c;
        dx[..input.len()]
            .par_chunks_mut(2 * w * c)
            .zip(x[..input.len()].par_chunks(2 * w * c))
            .zip(dy[..input.len() / 4].par_chunks(out_row))
            .for_each(|((dx_rows, x_rows), dy_row)| {
                dx_rows.fill(0.0);
                for (i, &g) in dy_row.iter().enumerate() {
                    let (col, ch) = (i / c * 2, i % c);
                    let window = [
                        col * c + ch,
                        (col + 1) * c + ch,
                        (w + col) * c + ch,
                        (w + col + 1) * c + ch,
                    ];
                    let mut first_max = window[0];
                    for at in window {
                        if x_rows[at] > x_rows[first_max] {
                            first_max = at;
                        }
                    }
                    dx_rows[first_max] = g;
                }
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
        let per_chunk = len.div_ceil(WORK_CHUNKS).max(1);
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
}
