//! Any backend against any other, through the Backend trait alone: the same inputs uploaded to
//! both, every output (first filled with NaN, so unwritten elements show) compared.
#![allow(dead_code)]

use whorl::backend::{Adam, Backend, Conv, ConvInput, Nhwc, RmsProp, backward_in_turn};
use whorl::model::Activation;

use super::{CONV_CASES, conv, nhwc, random, relative_error};

fn upload<B: Backend>(backend: &mut B, values: &[f32]) -> B::Buffer {
    let mut buffer = backend.alloc(values.len()).unwrap();
    backend.upload(values, &mut buffer).unwrap();
    buffer
}

fn poisoned<B: Backend>(backend: &mut B, len: usize) -> B::Buffer {
    upload(backend, &vec![f32::NAN; len])
}

fn download<B: Backend>(backend: &mut B, buffer: &B::Buffer, len: usize) -> Vec<f32> {
    let mut host = vec![0.0; len];
    backend.download(buffer, &mut host).unwrap();
    host
}

/// The relative error of each named output of one backend against another's.
pub fn errors(
    names: &[&'static str],
    got: &[Vec<f32>],
    expected: &[Vec<f32>],
) -> Vec<(&'static str, f64)> {
    names
        .iter()
        .zip(got.iter().zip(expected))
        .map(|(name, (g, e))| {
            let e: Vec<f64> = e.iter().map(|&v| f64::from(v)).collect();
            (*name, relative_error(g, &e))
        })
        .collect()
}

pub const CONV_OUTPUTS: [&str; 4] = [
    "forward",
    "backward-data",
    "kernel gradient",
    "bias gradient",
];

/// Inputs of a convolution test: x, dz and the parameters.
pub fn conv_inputs(conv: &Conv, seed: u64) -> [Vec<f32>; 3] {
    [
        random(conv.input.len(), -1.0, 1.0, seed),
        random(conv.output().len(), -1.0, 1.0, seed + 1),
        random(conv.slot.bias.end, -0.5, 0.5, seed + 2),
    ]
}

/// Forward, backward-data, kernel gradient and bias gradient of `conv` on `backend`.
pub fn conv_outputs<B: Backend>(
    backend: &mut B,
    conv: &Conv,
    [x, dz, params]: &[Vec<f32>; 3],
) -> Vec<Vec<f32>> {
    backend.plan(std::slice::from_ref(conv)).unwrap();
    let (input, output, slot) = (conv.input.len(), conv.output().len(), &conv.slot);
    let (bx, bdz, bparams) = (
        upload(backend, x),
        upload(backend, dz),
        upload(backend, params),
    );
    let mut y = poisoned(backend, output);
    backend.conv2d_forward(conv, &bx, &bparams, &mut y).unwrap();
    let mut dx = poisoned(backend, input);
    backend
        .conv2d_backward_data(conv, &bdz, &bparams, &mut dx)
        .unwrap();
    let mut grads = poisoned(backend, slot.bias.end);
    backend
        .conv2d_backward_filter(conv, &bx, &bdz, &mut grads)
        .unwrap();
    let grads = download(backend, &grads, slot.bias.end);
    vec![
        download(backend, &y, output),
        download(backend, &dx, input),
        grads[slot.weight.clone()].to_vec(),
        grads[slot.bias.clone()].to_vec(),
    ]
}

pub const OTHER_OUTPUTS: [&str; 15] = [
    "maxpool forward",
    "maxpool backward",
    "maxpool backward with relu's derivative",
    "maxpool backward with sigmoid's derivative",
    "upsample forward",
    "upsample backward",
    "relu backward",
    "sigmoid backward",
    "mse",
    "mse backward",
    "rmsprop weights",
    "rmsprop velocity",
    "adam weights",
    "adam momentum",
    "adam velocity",
];

/// Pooling (its backward pass alone and with the input's ReLU or sigmoid derivative, x in
/// (0, 1) for sigmoid), upsampling, activation derivatives, the loss and its gradient, three RMSprop steps
/// and Adam's steps 5 to 7, on `input`-shaped tensors drawn from `seed`.
pub fn other_outputs<B: Backend>(backend: &mut B, input: Nhwc, seed: u64) -> Vec<Vec<f32>> {
    backend.plan(&[]).unwrap();
    let len = input.len();
    let x = upload(backend, &random(len, -1.0, 1.0, seed));
    let small = upload(backend, &random(len / 4, -1.0, 1.0, seed + 1));
    let large = upload(backend, &random(4 * len, -1.0, 1.0, seed + 2));
    let target_values = random(len, 0.0, 1.0, seed + 3);
    let target = upload(backend, &target_values);
    let mut out = Vec::new();
    let mut y = poisoned(backend, len / 4);
    backend.maxpool2_forward(input, &x, &mut y).unwrap();
    out.push(download(backend, &y, len / 4));
    for x_activation in [None, Some(Activation::Relu), Some(Activation::Sigmoid)] {
        let x = match x_activation {
            Some(Activation::Sigmoid) => &target,
            _ => &x,
        };
        let mut dx = poisoned(backend, len);
        backend
            .maxpool2_backward(input, (x, x_activation), &small, &mut dx)
            .unwrap();
        out.push(download(backend, &dx, len));
    }
    let mut y = poisoned(backend, 4 * len);
    backend.upsample2_forward(input, &x, &mut y).unwrap();
    out.push(download(backend, &y, 4 * len));
    let mut dx = poisoned(backend, len);
    backend.upsample2_backward(input, &large, &mut dx).unwrap();
    out.push(download(backend, &dx, len));
    for activation in [Activation::Relu, Activation::Sigmoid] {
        let mut grad = upload(backend, &random(len, -1.0, 1.0, seed));
        backend
            .activation_backward(activation, len, &target, &mut grad)
            .unwrap();
        out.push(download(backend, &grad, len));
    }
    out.push(vec![backend.mse_loss(len, &x, &target).unwrap() as f32]);
    let mut grad = poisoned(backend, len);
    backend.mse_backward(len, &x, &target, &mut grad).unwrap();
    out.push(download(backend, &grad, len));
    let mut w = upload(backend, &target_values);
    let mut v = upload(backend, &random(len, 0.0, 1e-3, seed + 4));
    for _ in 0..3 {
        backend
            .rmsprop_update(RmsProp::default(), &mut w, &x, &mut v)
            .unwrap();
    }
    out.push(download(backend, &w, len));
    out.push(download(backend, &v, len));
    let mut w = upload(backend, &target_values);
    let mut m = upload(backend, &random(len, -1e-2, 1e-2, seed + 5));
    let mut v = upload(backend, &random(len, 0.0, 1e-3, seed + 6));
    for t in 5..8 {
        backend
            .adam_update(Adam::default(), t, &mut w, &x, &mut m, &mut v)
            .unwrap();
    }
    out.push(download(backend, &w, len));
    out.push(download(backend, &m, len));
    out.push(download(backend, &v, len));
    out
}

/// Asserts every error is below `tolerance`, naming the output and the case.
pub fn assert_within(errors: &[(&str, f64)], tolerance: f64, case: &str) {
    for (name, error) in errors {
        assert!(
            *error < tolerance,
            "{name} {case}: relative error {error:e}"
        );
    }
}

pub const POOLED_OUTPUTS: [&str; 3] = [
    "pooled forward",
    "pooled kernel gradient",
    "pooled bias gradient",
];

/// A one-channel input's convolution with its 2x2 max pooling fused (conv1 and pool1):
/// forward, kernel gradient and bias gradient on `backend`, from x, dL/d pooled (the first
/// quarter of `dz`) and the parameters.
pub fn pooled_outputs<B: Backend>(
    backend: &mut B,
    conv: &Conv,
    [x, dz, params]: &[Vec<f32>; 3],
) -> Vec<Vec<f32>> {
    backend.plan(std::slice::from_ref(conv)).unwrap();
    let (pooled_len, slot) = (conv.output().len() / 4, &conv.slot);
    let (bx, bd, bparams) = (
        upload(backend, x),
        upload(backend, &dz[..pooled_len]),
        upload(backend, params),
    );
    let mut pooled = poisoned(backend, pooled_len);
    backend
        .conv2d_pooled_forward(conv, &bx, &bparams, &mut pooled)
        .unwrap();
    let mut grads = poisoned(backend, slot.bias.end);
    backend
        .conv2d_pooled_backward_filter(conv, &bx, &bparams, &bd, &mut grads)
        .unwrap();
    let grads = download(backend, &grads, slot.bias.end);
    vec![
        download(backend, &pooled, pooled_len),
        grads[slot.weight.clone()].to_vec(),
        grads[slot.bias.clone()].to_vec(),
    ]
}

pub const FUSED_BACKWARD_OUTPUTS: [&str; 3] = [
    "fused backward-data",
    "fused kernel gradient",
    "fused bias gradient",
];

/// dx (times `x_activation`'s derivative at x), the kernel gradient and the bias gradient of
/// `conv` on `backend`, from one `conv2d_backward`.
pub fn fused_backward_outputs<B: Backend>(
    backend: &mut B,
    conv: &Conv,
    inputs: &[Vec<f32>; 3],
    x_activation: Option<Activation>,
) -> Vec<Vec<f32>> {
    backward_outputs(backend, conv, inputs, x_activation, false)
}

/// The outputs of [`fused_backward_outputs`], or (`in_turn`) from `backward_in_turn`: the
/// kernel gradient, backward-data, then the activation's derivative.
pub fn backward_outputs<B: Backend>(
    backend: &mut B,
    conv: &Conv,
    [x, dz, params]: &[Vec<f32>; 3],
    x_activation: Option<Activation>,
    in_turn: bool,
) -> Vec<Vec<f32>> {
    backend.plan(std::slice::from_ref(conv)).unwrap();
    let (input, slot) = (conv.input.len(), &conv.slot);
    let (bx, bdz, bparams) = (
        upload(backend, x),
        upload(backend, dz),
        upload(backend, params),
    );
    let mut dx = poisoned(backend, input);
    let mut grads = poisoned(backend, slot.bias.end);
    let x = (&bx, x_activation);
    if in_turn {
        backward_in_turn(backend, conv, x, &bdz, &bparams, &mut grads, &mut dx).unwrap();
    } else {
        backend
            .conv2d_backward(conv, x, &bdz, &bparams, &mut grads, &mut dx)
            .unwrap();
    }
    let grads = download(backend, &grads, slot.bias.end);
    vec![
        download(backend, &dx, input),
        grads[slot.weight.clone()].to_vec(),
        grads[slot.bias.clone()].to_vec(),
    ]
}

/// Convolutions with one output channel of an upsampled input (conv6's kind), which
/// conv2d_backward runs as one kernel: those of CONV_CASES, and at odd heights and widths 40
/// channels (not a multiple of 32), 72 (two passes of 64 over each chunk) and 64 over enough
/// pixels for three chunks.
pub fn fused_backward_cases() -> Vec<Conv> {
    let mut inputs: Vec<_> = CONV_CASES
        .iter()
        .filter(|&&(_, cout)| cout == 1)
        .map(|&(input, _)| input)
        .collect();
    inputs.extend([nhwc(2, 7, 9, 40), nhwc(1, 9, 11, 72), nhwc(2, 47, 45, 64)]);
    inputs
        .into_iter()
        .map(|input| conv(input, 1, ConvInput::Upsampled2, Activation::Sigmoid))
        .collect()
}

/// x, dz and the parameters of a backward pass, x as an output of `x_activation` would be:
/// relu's (zeros where negative) or sigmoid's (in (0, 1)).
pub fn fused_backward_inputs(
    conv: &Conv,
    x_activation: Option<Activation>,
    seed: u64,
) -> [Vec<f32>; 3] {
    let [mut x, dz, params] = conv_inputs(conv, seed);
    for v in &mut x {
        *v = match x_activation {
            Some(Activation::Relu) => v.max(0.0),
            Some(Activation::Sigmoid) => 0.5 * (*v + 1.0),
            None => *v,
        };
    }
    [x, dz, params]
}

pub const X_ACTIVATIONS: [Option<Activation>; 3] =
    [Some(Activation::Relu), Some(Activation::Sigmoid), None];

pub const SCORED_OUTPUTS: [&str; 3] = ["scored forward", "scored dz", "scored loss"];

/// y, dz = dL/dz and the loss L = mse(y, target) of `conv` on `backend`, from one
/// `conv2d_forward_scored` (the loss read with `scored_loss`), or (`in_turn`) from
/// `conv2d_forward`, `mse_backward`, `activation_backward` and `mse_loss`.
pub fn scored_outputs<B: Backend>(
    backend: &mut B,
    conv: &Conv,
    [x, target, params]: &[Vec<f32>; 3],
    in_turn: bool,
) -> Vec<Vec<f32>> {
    backend.plan(std::slice::from_ref(conv)).unwrap();
    let output = conv.output().len();
    let (bx, btarget, bparams) = (
        upload(backend, x),
        upload(backend, target),
        upload(backend, params),
    );
    let (mut y, mut dz, mut loss) = (
        poisoned(backend, output),
        poisoned(backend, output),
        poisoned(backend, 1),
    );
    let mse = if in_turn {
        backend.conv2d_forward(conv, &bx, &bparams, &mut y).unwrap();
        backend.mse_backward(output, &y, &btarget, &mut dz).unwrap();
        backend
            .activation_backward(conv.activation, output, &y, &mut dz)
            .unwrap();
        backend.mse_loss(output, &y, &btarget).unwrap()
    } else {
        backend
            .conv2d_forward_scored(conv, &bx, &bparams, &btarget, &mut y, &mut dz, &mut loss)
            .unwrap();
        backend.scored_loss(output, (&y, &btarget), &loss).unwrap()
    };
    vec![
        download(backend, &y, output),
        download(backend, &dz, output),
        vec![mse as f32],
    ]
}

/// x, the target (in [0, 1], as images are) and the parameters of a scored forward pass.
pub fn scored_inputs(conv: &Conv, seed: u64) -> [Vec<f32>; 3] {
    [
        random(conv.input.len(), -1.0, 1.0, seed),
        random(conv.output().len(), 0.0, 1.0, seed + 1),
        random(conv.slot.bias.end, -0.5, 0.5, seed + 2),
    ]
}

/// Output convolutions to score: conv6's kind (one output channel of an upsampled input,
/// one kernel on a GPU), with sigmoid and with ReLU, also wider than a block's strip of source
/// columns (56 on a GPU) and taller than its rows (38): 40 rows of 61 columns of 6 channels
/// (copied a float at a time), 58 columns of 68 (a strip of 2 columns; two chunks of channels,
/// the second of 4); and others the GPU scores in turn.
pub fn scored_cases() -> Vec<Conv> {
    let mut cases = fused_backward_cases();
    cases.extend([
        conv(
            nhwc(1, 40, 61, 6),
            1,
            ConvInput::Upsampled2,
            Activation::Sigmoid,
        ),
        conv(
            nhwc(1, 17, 58, 68),
            1,
            ConvInput::Upsampled2,
            Activation::Sigmoid,
        ),
        conv(
            nhwc(2, 5, 7, 24),
            1,
            ConvInput::Upsampled2,
            Activation::Relu,
        ),
        conv(
            nhwc(2, 5, 7, 3),
            4,
            ConvInput::Upsampled2,
            Activation::Sigmoid,
        ),
        conv(nhwc(2, 5, 7, 3), 1, ConvInput::Direct, Activation::Sigmoid),
    ]);
    cases
}

/// The scored forward pass on backends made by `make`, for every [`scored_cases`]: y, dz and
/// the loss within `tolerance` of the float64 reference; y and dz the same bits as the
/// operations in turn on the same backend and the loss within 1e-6 of theirs; the same bits
/// on a second run.
pub fn check_scored<B: Backend>(make: impl Fn() -> B, tolerance: f64) {
    use whorl::backend::reference::ReferenceBackend;
    for (case, conv) in scored_cases().iter().enumerate() {
        let inputs = scored_inputs(conv, 50 + 3 * case as u64);
        let got = scored_outputs(&mut make(), conv, &inputs, false);
        let expected = scored_outputs(&mut ReferenceBackend, conv, &inputs, false);
        let errors = errors(&SCORED_OUTPUTS, &got, &expected);
        assert_within(&errors, tolerance, &format!("{conv:?}"));
        let in_turn = scored_outputs(&mut make(), conv, &inputs, true);
        assert_same_bits(&got[..2], &in_turn[..2], &format!("{conv:?}"));
        let loss_error = relative_error(&got[2], &[f64::from(in_turn[2][0])]);
        assert!(
            loss_error < 1e-6,
            "loss {loss_error:e} from in turn, {conv:?}"
        );
        let again = scored_outputs(&mut make(), conv, &inputs, false);
        assert_same_bits(&got, &again, &format!("{conv:?}"));
    }
}

pub const POOLED_EPILOGUE_OUTPUTS: [&str; 2] = ["forward, pooled in its epilogue", "its pooling"];

/// y and its 2x2 max pooling of `conv` on `backend`, from one `conv2d_forward_and_pool`, or
/// (`in_turn`) from `conv2d_forward` then `maxpool2_forward`.
pub fn forward_and_pool_outputs<B: Backend>(
    backend: &mut B,
    conv: &Conv,
    [x, params]: &[Vec<f32>; 2],
    in_turn: bool,
) -> Vec<Vec<f32>> {
    backend.plan(std::slice::from_ref(conv)).unwrap();
    let output = conv.output().len();
    let (bx, bparams) = (upload(backend, x), upload(backend, params));
    let (mut y, mut pooled) = (poisoned(backend, output), poisoned(backend, output / 4));
    if in_turn {
        backend.conv2d_forward(conv, &bx, &bparams, &mut y).unwrap();
        backend
            .maxpool2_forward(conv.output(), &y, &mut pooled)
            .unwrap();
    } else {
        backend
            .conv2d_forward_and_pool(conv, &bx, &bparams, &mut y, &mut pooled)
            .unwrap();
    }
    vec![
        download(backend, &y, output),
        download(backend, &pooled, output / 4),
    ]
}

/// Convolutions followed by a max pooling, all with even outputs. In TF32 the GEMM's regular
/// tile pools in its epilogue: 48 and 64 output channels over one to four tiles of pixels (the
/// last one partial, the channels partly filled), input channels that are multiples of 4
/// (tensor cores) and 3, which is not, ReLU and sigmoid; 32 and 72 output channels (the narrow
/// and wide tiles) pool in turn. In FP32 every plain convolution of several input channels
/// pools in its Winograd kernel's epilogue. The others pool in turn: an upsampled input, one
/// input channel.
pub fn pooled_epilogue_cases() -> Vec<Conv> {
    let direct = |input, cout| conv(input, cout, ConvInput::Direct, Activation::Relu);
    vec![
        direct(nhwc(3, 10, 14, 12), 48),
        direct(nhwc(2, 12, 8, 16), 64),
        direct(nhwc(2, 6, 6, 3), 40),
        conv(nhwc(2, 6, 8, 8), 44, ConvInput::Direct, Activation::Sigmoid),
        direct(nhwc(2, 6, 10, 8), 32),
        direct(nhwc(2, 12, 8, 16), 72),
        conv(nhwc(2, 3, 5, 8), 8, ConvInput::Upsampled2, Activation::Relu),
        direct(nhwc(2, 6, 8, 1), 8),
    ]
}

/// `conv2d_forward_and_pool` on backends made by `make`, for every [`pooled_epilogue_cases`]:
/// the same bits as the forward pass and the pooling in turn on the same backend, and within
/// `tolerance` of the float64 reference.
pub fn check_pooled_epilogue<B: Backend>(make: impl Fn() -> B, tolerance: f64) {
    use whorl::backend::reference::ReferenceBackend;
    for (case, conv) in pooled_epilogue_cases().iter().enumerate() {
        let [x, _, params] = conv_inputs(conv, 70 + 3 * case as u64);
        let inputs = [x, params];
        let got = forward_and_pool_outputs(&mut make(), conv, &inputs, false);
        let in_turn = forward_and_pool_outputs(&mut make(), conv, &inputs, true);
        assert_same_bits(&got, &in_turn, &format!("{conv:?}"));
        let expected = forward_and_pool_outputs(&mut ReferenceBackend, conv, &inputs, false);
        let errors = errors(&POOLED_EPILOGUE_OUTPUTS, &got, &expected);
        assert_within(&errors, tolerance, &format!("{conv:?}"));
    }
}

/// Fails, naming the first element that differs, unless `got` and `expected` are the same bits.
pub fn assert_same_bits(got: &[Vec<f32>], expected: &[Vec<f32>], case: &str) {
    let (got, expected) = (bits(got), bits(expected));
    assert_eq!(got.len(), expected.len(), "{case}: lengths differ");
    if let Some(i) = got.iter().zip(&expected).position(|(a, b)| a != b) {
        let (a, b) = (f32::from_bits(got[i]), f32::from_bits(expected[i]));
        panic!("{case}: element {i} is {a:e}, expected the bits of {b:e}");
    }
}

/// Every output's bits, to assert two runs gave the same results.
pub fn bits(outputs: &[Vec<f32>]) -> Vec<u32> {
    outputs.iter().flatten().map(|x| x.to_bits()).collect()
}
