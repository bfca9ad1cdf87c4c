//! Agreement with Keras 3 (TensorFlow backend, computed in float64) on the reference model:
//! forward output, loss, every gradient, and the weights after one RMSprop step; and the
//! weights after one and three Adam steps. The cases and their tolerances are described in
//! tests/data/README.md.

mod common;

use std::path::Path;

use common::{relative_error, widen};
use whorl::backend::cpu::CpuBackend;
use whorl::backend::reference::ReferenceBackend;
use whorl::backend::{Adam, Backend, Optimizer, WinogradTile};
use whorl::checkpoint::{flatten_params, read_tensors};
use whorl::graph::Network;
use whorl::model::Architecture;

const CASE: &str = "tests/data/keras-reference-case.safetensors";
const ADAM_CASE: &str = "tests/data/keras-adam-case.safetensors";

/// The largest absolute difference between two equally long vectors.
fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
}

/// One forward and backward pass and one RMSprop step on the Keras case: output and loss
/// within 1e-5 relative, every gradient within `gradient_tolerance` of its tensor's scale, the
/// updated weights within 1e-5.
fn check_against_keras<B: Backend>(backend: B, input_size: usize, gradient_tolerance: f64) {
    let path = Path::new(CASE);
    let tensors = read_tensors(path).unwrap();
    let arch = Architecture::reference();
    let weights = flatten_params(&arch, &tensors, "weights.", path).unwrap();
    let expected_grads = flatten_params(&arch, &tensors, "grad.", path).unwrap();
    let expected_updated = flatten_params(&arch, &tensors, "updated.", path).unwrap();
    let (input_shape, input) = &tensors["input"];
    let (_, expected_output) = &tensors["output"];
    let expected_loss = f64::from(tensors["loss"].1[0]);
    assert_eq!(input_shape, &[2, 224, 224, 1]);
    assert_eq!(input_size, 224, "the Keras case is 224x224");

    let mut net = Network::new(backend, arch.clone(), 224, 224, 2, &weights).unwrap();
    let loss = net.forward(input).unwrap();
    let mut output = vec![0.0; input.len()];
    net.output(&mut output).unwrap();
    let output_error = relative_error(&output, &widen(expected_output));
    assert!(
        output_error < 1e-5,
        "output differs from Keras by {output_error:e}"
    );
    let loss_error = (loss - expected_loss).abs() / expected_loss;
    assert!(loss_error < 1e-5, "loss {loss} vs Keras {expected_loss}");

    net.backward(2).unwrap();
    let grads = net.gradients().unwrap();
    for slot in arch.convs() {
        for (part, range) in [("weight", slot.weight.clone()), ("bias", slot.bias.clone())] {
            let error = relative_error(&grads[range.clone()], &widen(&expected_grads[range]));
            assert!(
                error < gradient_tolerance,
                "grad {}.{part} differs from Keras by {error:e}",
                slot.name
            );
        }
    }

    net.apply_gradients().unwrap();
    let worst = largest_difference(&net.params().unwrap(), &expected_updated);
    assert!(
        worst < 1e-5,
        "updated weights differ from Keras by up to {worst:e}"
    );
}

#[test]
fn cpu_backend_matches_keras() {
    check_against_keras(CpuBackend::new(), 224, 1e-4);
}

#[test]
fn cpu_backend_by_4x4_tiles_stays_near_keras() {
    // F(4x4, 3x3) rounds conv2-conv4's outputs to about 1e-5 of their scale. The output and
    // the loss still agree within 1e-5, but conv1's to conv5's gradients move by 6e-4 to 2e-3
    // of their scale: ReLU derivatives and pooling windows' first maxima flip where a value
    // lies within that rounding of zero or of its neighbour (a perturbation of 5e-6 in
    // F(2x2, 3x3)'s activations moves them as much). The step's update stays within 1e-5.
    let by_4x4 = CpuBackend::new().with_winograd_tile(WinogradTile::FourByFour);
    check_against_keras(by_4x4, 224, 5e-3);
}

#[test]
#[ignore = "the float64 direct loops take minutes at 224x224; run with --ignored"]
fn reference_backend_matches_keras() {
    check_against_keras(ReferenceBackend, 224, 1e-4);
}

/// Three Adam steps on the Adam case's batch from the reference case's weights: the loss before
/// each step within 1e-5 relative, the weights after steps 1 and 3 within 1e-5.
fn adam_steps_match_keras<B: Backend>(backend: B) {
    let arch = Architecture::reference();
    let weights = flatten_params(
        &arch,
        &read_tensors(Path::new(CASE)).unwrap(),
        "weights.",
        Path::new(CASE),
    )
    .unwrap();
    let path = Path::new(ADAM_CASE);
    let tensors = read_tensors(path).unwrap();
    let (input_shape, input) = &tensors["input"];
    let [batch, size, ..] = input_shape[..] else {
        panic!("input shape {input_shape:?}")
    };
    let mut net = Network::new(backend, arch.clone(), size, size, batch, &weights).unwrap();
    net.optimizer = Optimizer::Adam(Adam::default());
    let expected_losses = &tensors["loss"].1;
    assert_eq!(expected_losses.len(), 3, "the case holds three steps");
    for (step, &expected_loss) in expected_losses.iter().enumerate() {
        let loss = net.train_step(input).unwrap();
        let expected_loss = f64::from(expected_loss);
        let loss_error = (loss - expected_loss).abs() / expected_loss;
        assert!(
            loss_error < 1e-5,
            "loss before step {}: {loss} vs Keras {expected_loss}",
            step + 1
        );
        let t = step + 1;
        if t == 1 || t == 3 {
            let expected = flatten_params(&arch, &tensors, &format!("step{t}."), path).unwrap();
            let worst = largest_difference(&net.params().unwrap(), &expected);
            assert!(
                worst < 1e-5,
                "weights after Adam step {t} differ from Keras by up to {worst:e}"
            );
        }
    }
    assert_eq!(net.iterations, 3);
}

#[test]
fn cpu_backend_follows_keras_adam_for_three_steps() {
    adam_steps_match_keras(CpuBackend::new());
}

#[test]
fn reference_backend_follows_keras_adam_for_three_steps() {
    adam_steps_match_keras(ReferenceBackend);
}
