//! Throughput of a whole training step and of inference, as images per second.

use std::time::Instant;

use crate::backend::Backend;
use crate::error::Result;
use crate::graph::Network;
use crate::model::Architecture;

/// Floating-point operations of one 3x3 convolution layer's forward pass on one image
/// (2 per multiply-add); backward-data and backward-filter cost the same each.
pub fn conv_forward_flops(height: usize, width: usize, cin: usize, cout: usize) -> f64 {
    2.0 * (height * width * 9 * cin * cout) as f64
}

/// Forward FLOPs of the reference model's convolutions for one image (the layers that matter).
pub fn model_forward_flops(architecture: &Architecture, size: usize) -> Result<f64> {
    let shapes = architecture.shapes(size, size)?;
    Ok(architecture
        .param_slots()
        .iter()
        .zip(&shapes)
        .filter_map(|(slot, s)| {
            let slot = slot.as_ref()?;
            Some(conv_forward_flops(
                s.height,
                s.width,
                slot.in_channels,
                slot.out_channels,
            ))
        })
        .sum())
}

/// What one measurement found.
#[derive(Clone, Debug)]
pub struct Throughput {
    pub batch_size: usize,
    pub size: usize,
    /// Median seconds per training step (forward, backward, RMSprop) and per forward pass.
    pub train_step_seconds: f64,
    pub inference_seconds: f64,
}

impl Throughput {
    pub fn train_images_per_second(&self) -> f64 {
        self.batch_size as f64 / self.train_step_seconds
    }

    pub fn inference_images_per_second(&self) -> f64 {
        self.batch_size as f64 / self.inference_seconds
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Times `repeats` training steps and forward passes after one warm-up of each, on random images.
pub fn measure<B: Backend>(
    backend: B,
    batch_size: usize,
    size: usize,
    repeats: usize,
) -> Result<Throughput> {
    let architecture = Architecture::reference();
    let params = architecture.glorot_uniform(0);
    let mut net = Network::new(backend, architecture, size, size, batch_size, &params)?;
    let images: Vec<f32> = (0..batch_size * size * size)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let mut time = |train: bool| -> Result<f64> {
        let start = Instant::now();
        if train {
            net.train_step(&images)?;
        } else {
            net.forward(&images)?;
        }
        Ok(start.elapsed().as_secs_f64())
    };
    time(true)?;
    let train = (0..repeats.max(1))
        .map(|_| time(true))
        .collect::<Result<Vec<_>>>()?;
    time(false)?;
    let infer = (0..repeats.max(1))
        .map(|_| time(false))
        .collect::<Result<Vec<_>>>()?;
    Ok(Throughput {
        batch_size,
        size,
        train_step_seconds: median(train),
        inference_seconds: median(infer),
    })
}
