//! The whole model: its shapes and size, its gradient against finite differences, the CPU
//! engine against the direct loops over training steps, and training that learns.

mod common;

use common::{pipelined_losses, random, relative_error, widen};
use whorl::backend::WinogradTile;
use whorl::backend::cpu::CpuBackend;
use whorl::backend::reference::ReferenceBackend;
use whorl::graph::Network;
use whorl::model::{Architecture, Hwc};

#[test]
fn reference_model_has_314625_parameters_and_keras_shapes() {
    let arch = Architecture::reference();
    assert_eq!(arch.param_count(), 314_625);
    let shapes: Vec<(usize, usize, usize)> = arch
        .shapes(224, 224)
        .unwrap()
        .iter()
        .map(|s: &Hwc| (s.height, s.width, s.channels))
        .collect();
    assert_eq!(
        shapes,
        [
            (224, 224, 1),
            (224, 224, 32),
            (112, 112, 32),
            (112, 112, 64),
            (56, 56, 64),
            (56, 56, 128),
            (56, 56, 128),
            (112, 112, 128),
            (112, 112, 64),
            (224, 224, 64),
            (224, 224, 1),
        ]
    );
    let per_layer: Vec<usize> = arch
        .convs()
        .iter()
        .map(|s| s.bias.end - s.weight.start)
        .collect();
    assert_eq!(per_layer, [320, 18_496, 73_856, 147_584, 73_792, 577]);
    let summary = arch.summary(224, 224).unwrap();
    assert!(summary.contains("conv4 (Conv2D)") && summary.contains("(None, 56, 56, 128)"));
    assert!(summary.contains("Total params: 314,625"));
}

#[test]
fn sizes_must_be_multiples_of_four() {
    let arch = Architecture::reference();
    assert!(arch.shapes(12, 20).is_ok());
    for (h, w) in [(10, 12), (12, 6), (0, 8)] {
        let error = arch.shapes(h, w).unwrap_err().to_string();
        assert!(
            error.contains("--size") && error.contains("multiple of 4"),
            "{error}"
        );
    }
}

#[test]
fn glorot_init_is_seeded_within_keras_limits_with_zero_biases() {
    let arch = Architecture::reference();
    let params = arch.glorot_uniform(7);
    assert_eq!(params, arch.glorot_uniform(7));
    assert_ne!(params, arch.glorot_uniform(8));
    for slot in arch.convs() {
        let limit = (6.0 / (9.0 * (slot.in_channels + slot.out_channels) as f32)).sqrt();
        let weights = &params[slot.weight.clone()];
        let max = weights.iter().fold(0.0f32, |m, w| m.max(w.abs()));
        assert!(
            max <= limit && max > 0.9 * limit,
            "{}: {max} vs {limit}",
            slot.name
        );
        let mean = weights.iter().sum::<f32>() / weights.len() as f32;
        assert!(mean.abs() < limit / 5.0, "{}: mean {mean}", slot.name);
        assert!(params[slot.bias.clone()].iter().all(|&b| b == 0.0));
    }
}

#[test]
fn whole_model_gradient_matches_finite_differences() {
    let arch = Architecture::reference();
    let (size, batch) = (8, 2);
    let mut params = arch.glorot_uniform(3);
    // Non-zero biases, so their gradients are exercised away from the initial point too.
    for slot in arch.convs() {
        let values = random(slot.out_channels, -0.1, 0.1, slot.bias.start as u64);
        params[slot.bias.clone()].copy_from_slice(&values);
    }
    for p in &mut params {
        *p = (*p * 4096.0).round() / 4096.0;
    }
    let images = random(batch * size * size, 0.0, 1.0, 4);
    let mut net = Network::new(ReferenceBackend, arch.clone(), size, size, batch, &params).unwrap();
    net.forward(&images).unwrap();
    net.backward(batch).unwrap();
    let grads = widen(&net.gradients().unwrap());

    // Central differences of the float64 loss. The parameters are multiples of 2^-12 and
    // the step is 2^-20, so w +- h is exact in float32 and the step is small enough that
    // no ReLU or max switches inside it.
    let h = 2f32.powi(-20);
    for slot in arch.convs() {
        for range in [slot.weight.clone(), slot.bias.clone()] {
            let scale = grads[range.clone()]
                .iter()
                .fold(0.0f64, |m, g| m.max(g.abs()));
            let step = (range.len() / 7).max(1);
            for i in range.clone().step_by(step) {
                let mut probe = params.clone();
                probe[i] = params[i] + h;
                net.set_params(&probe).unwrap();
                let up = net.forward(&images).unwrap();
                probe[i] = params[i] - h;
                net.set_params(&probe).unwrap();
                let down = net.forward(&images).unwrap();
                let numeric = (up - down) / (2.0 * f64::from(h));
                assert!(
                    (grads[i] - numeric).abs() <= 1e-5 * scale,
                    "{} parameter {i}: analytic {} vs finite differences {numeric}",
                    slot.name,
                    grads[i]
                );
            }
        }
    }
}

#[test]
fn cpu_training_follows_the_direct_loops() {
    // With either Winograd tile; at 20x20 conv3 and conv4 run on 5x5 images, a whole 4x4 tile
    // and partial ones.
    for tile in [WinogradTile::TwoByTwo, WinogradTile::FourByFour] {
        let arch = Architecture::reference();
        let (size, batch) = (20, 3);
        let params = arch.glorot_uniform(5);
        let engine = CpuBackend::new().with_winograd_tile(tile);
        let mut cpu = Network::new(engine, arch.clone(), size, size, batch, &params).unwrap();
        let mut reference =
            Network::new(ReferenceBackend, arch.clone(), size, size, batch, &params).unwrap();
        for step in 0..5 {
            let images = random(batch * size * size, 0.0, 1.0, 10 + step);
            let loss = cpu.train_step(&images).unwrap();
            let expected = reference.train_step(&images).unwrap();
            assert!(
                (loss - expected).abs() < 1e-5 * expected,
                "{tile:?} step {step}: {loss} vs {expected}"
            );
        }
        let error = relative_error(&cpu.params().unwrap(), &widen(&reference.params().unwrap()));
        assert!(
            error < 1e-4,
            "{tile:?}: weights after 5 steps differ by {error:e}"
        );
        let velocity = widen(&reference.velocity().unwrap());
        let error = relative_error(&cpu.velocity().unwrap(), &velocity);
        assert!(
            error < 1e-3,
            "{tile:?}: RMSprop state after 5 steps differs by {error:e}"
        );
    }
}

#[test]
fn pooling_the_first_convolution_changes_no_gradient_and_stores_less() {
    let arch = Architecture::reference();
    let (size, batch) = (16, 3);
    let params = arch.glorot_uniform(6);
    let images = random(batch * size * size, 0.0, 1.0, 7);
    let mut pooled =
        Network::new(CpuBackend::new(), arch.clone(), size, size, batch, &params).unwrap();
    let mut every =
        Network::keeping_every_output(CpuBackend::new(), arch, size, size, batch, &params).unwrap();
    // The same convolution rows, so the same forward pass to the bit.
    assert_eq!(
        pooled.forward(&images).unwrap(),
        every.forward(&images).unwrap()
    );
    pooled.backward(batch).unwrap();
    every.backward(batch).unwrap();
    let error = relative_error(
        &pooled.gradients().unwrap(),
        &widen(&every.gradients().unwrap()),
    );
    assert!(error < 1e-5, "gradients differ by {error:e}");
    // conv1's output is stored only by the network that keeps every output; pool1's by both.
    let error = pooled.layer_output(batch, 0).unwrap_err().to_string();
    assert!(error.contains("not stored"), "{error}");
    assert_eq!(
        every.layer_output(batch, 0).unwrap().len(),
        batch * size * size * 32
    );
    assert_eq!(
        pooled.layer_output(batch, 1).unwrap(),
        every.layer_output(batch, 1).unwrap()
    );
}

#[test]
fn a_layer_output_gradient_is_taken_before_its_activation() {
    // In training, a convolution's or a pooling's backward pass applies the derivative of the
    // activation that produced its input; stopping at that layer (Grad-CAM) must give
    // dL/d(its output) instead, which is not zero where ReLU cut the output to zero (conv2
    // feeds a pooling, conv3 and conv4 a convolution).
    let arch = Architecture::reference();
    let params = arch.glorot_uniform(8);
    let mut net =
        Network::keeping_every_output(CpuBackend::new(), arch.clone(), 16, 16, 1, &params).unwrap();
    let image = random(16 * 16, 0.0, 1.0, 9);
    for name in ["conv2", "conv3", "conv4"] {
        let layer = arch.layers.iter().position(|l| l.name() == name).unwrap();
        net.forward(&image).unwrap();
        let gradient = net
            .output_gradient(1, layer, &vec![1.0; image.len()])
            .unwrap();
        let output = net.layer_output(1, layer).unwrap();
        let below_zero = output.iter().zip(&gradient).filter(|(y, _)| **y == 0.0);
        let nonzero = below_zero.filter(|(_, g)| **g != 0.0).count();
        assert!(nonzero > 0, "{name}: the gradient is zero wherever ReLU is");
    }
}

#[test]
fn a_backward_pass_without_a_new_forward_pass_computes_the_loss_gradient_again() {
    // The forward pass leaves dL/dz of the output convolution for the backward pass, which uses
    // it up; a second backward pass, here after a walk that seeded its own gradient, computes
    // it again from the stored output and gets the same gradients.
    let arch = Architecture::reference();
    let (size, batch) = (16, 2);
    let params = arch.glorot_uniform(5);
    let mut net =
        Network::new(CpuBackend::new(), arch.clone(), size, size, batch, &params).unwrap();
    let images = random(batch * size * size, 0.0, 1.0, 6);
    net.forward(&images).unwrap();
    net.backward(batch).unwrap();
    let first = net.gradients().unwrap();
    let conv4 = arch
        .layers
        .iter()
        .position(|l| l.name() == "conv4")
        .unwrap();
    net.output_gradient(batch, conv4, &random(images.len(), -1.0, 1.0, 7))
        .unwrap();
    net.backward(batch).unwrap();
    assert_eq!(first, net.gradients().unwrap());
}

#[test]
fn a_few_hundred_steps_cut_the_loss_tenfold() {
    let arch = Architecture::reference();
    let (size, batch) = (16, 4);
    // Smooth, structured images (stripes at several angles), like ridges.
    let images: Vec<f32> = (0..batch * size * size)
        .map(|i| {
            let (n, y, x) = (i / (size * size), i / size % size, i % size);
            let angle = n as f32 * 0.7;
            let t = x as f32 * angle.cos() + y as f32 * angle.sin();
            0.5 + 0.4 * (t * 0.9).sin()
        })
        .collect();
    let params = arch.glorot_uniform(13);
    let mut net = Network::new(CpuBackend::new(), arch, size, size, batch, &params).unwrap();
    let first = net.train_step(&images).unwrap();
    let mut last = first;
    for _ in 0..300 {
        last = net.train_step(&images).unwrap();
    }
    assert!(last < first / 10.0, "loss went from {first} to {last}");
}

#[test]
fn partial_batches_use_only_their_images() {
    let arch = Architecture::reference();
    let params = arch.glorot_uniform(1);
    let images = random(2 * 8 * 8, 0.0, 1.0, 2);
    let mut big = Network::new(CpuBackend::new(), arch.clone(), 8, 8, 5, &params).unwrap();
    let mut exact = Network::new(CpuBackend::new(), arch, 8, 8, 2, &params).unwrap();
    assert_eq!(
        big.forward(&images).unwrap(),
        exact.forward(&images).unwrap()
    );
    big.backward(2).unwrap();
    exact.backward(2).unwrap();
    assert_eq!(big.gradients().unwrap(), exact.gradients().unwrap());
    assert!(big.forward(&random(6 * 64, 0.0, 1.0, 3)).is_err());
}

#[test]
fn pipelined_steps_equal_plain_steps_and_each_loaded_batch_runs_once() {
    let arch = Architecture::reference();
    let params = arch.glorot_uniform(4);
    let batches: Vec<Vec<f32>> = (0..3)
        .map(|i| random(2 * 8 * 8, 0.0, 1.0, 20 + i))
        .collect();
    let mut plain = Network::new(CpuBackend::new(), arch.clone(), 8, 8, 2, &params).unwrap();
    let mut piped = Network::new(CpuBackend::new(), arch, 8, 8, 2, &params).unwrap();
    assert!(piped.loss().is_err(), "no forward pass has run yet");
    assert!(piped.train_step_loaded().is_err(), "no batch is loaded");
    // A second load replaces the first.
    piped.load_batch(&batches[2]).unwrap();
    let losses = pipelined_losses(&mut piped, &batches);
    for (images, loss) in batches.iter().zip(losses) {
        assert_eq!(loss, plain.train_step(images).unwrap());
    }
    assert_eq!(piped.params().unwrap(), plain.params().unwrap());
    assert!(piped.forward_loaded().is_err(), "the last batch was used");
}
