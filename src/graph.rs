//! The layer graph: forward walks the layer list keeping every activation, backward walks it
//! back. Every buffer is planned once for the largest batch; a step allocates nothing.
//!
//! The layer list is compiled into steps first: an upsampling layer followed by a convolution
//! becomes one step, a convolution that reads its input upsampled, so the upsampled tensor
//! (the largest of the model) is never stored.
//!
//! A training network also runs the first convolution (which reads the one-channel input)
//! and the max pooling after it as one step: the convolution's output, the largest tensor
//! after the upsampled ones, is never stored either; its backward pass computes it again
//! from the input. A network for Grad-CAM keeps every output ([`Network::keeping_every_output`]).
//!
//! The forward pass ends by scoring the output convolution against the input: the loss and
//! dL/dz of that convolution come out of the same step ([`Backend::conv2d_forward_scored`]),
//! and the backward walk starts from that dz.
//!
//! Batches go in through two input buffers: while a step runs on one, the next batch is
//! uploaded into the other ([`Network::load_batch`]), and the step's loss is read only when it
//! is asked for ([`Network::loss`]), so on a GPU the host prepares and sends batch k + 1 while
//! the device computes step k.

use crate::backend::{Backend, Conv, ConvInput, Nhwc, Optimizer};
use crate::error::{Error, Result};
use crate::model::{Activation, Architecture, Hwc, Layer};

/// One step of the compiled graph; `layer` indexes the architecture's layers, and a step
/// writes activations[layer + 1].
#[derive(Clone, Debug)]
enum Step {
    /// Reads activations[source]: the layer's own input, or, when `conv.read` is Upsampled2,
    /// the input of the upsampling layer before it. `conv.input.batch` is set per call.
    /// `input_activation`: the activation of the convolution whose output activations[source]
    /// is, whose derivative this step's backward pass applies to dx ([`Backend::conv2d_backward`]).
    /// `pooled`: a max pooling layer follows, and the forward pass writes its output,
    /// activations[layer + 2], in the same call ([`Backend::conv2d_forward_and_pool`]).
    Conv {
        layer: usize,
        source: usize,
        conv: Conv,
        input_activation: Option<Activation>,
        pooled: bool,
    },
    /// The convolution `conv_layer` of the network's input and the max pooling after it:
    /// reads activations[0], writes activations[conv_layer + 2].
    PooledConv {
        conv_layer: usize,
        conv: Conv,
    },
    /// `input_activation`: the activation of the convolution whose output the pooling reads,
    /// whose derivative its backward pass applies ([`Backend::maxpool2_backward`]).
    /// `by_convolution`: that convolution's step already wrote the pooled output (`pooled`),
    /// so the forward pass has nothing left to do here.
    MaxPool2 {
        layer: usize,
        input_activation: Option<Activation>,
        by_convolution: bool,
    },
    Upsample2 {
        layer: usize,
    },
}

impl Step {
    /// The last layer the step computes: activations[layer + 1] is its output.
    fn layer(&self) -> usize {
        match *self {
            Step::Conv { layer, .. } | Step::MaxPool2 { layer, .. } | Step::Upsample2 { layer } => {
                layer
            }
            Step::PooledConv { conv_layer, .. } => conv_layer + 1,
        }
    }
}

/// Which layer outputs a network stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outputs {
    /// What training needs: the first convolution is pooled in the same step.
    Needed,
    /// Every layer's output but an upsampling folded into a convolution (for Grad-CAM).
    Every,
}

/// Whether `architecture` starts with a convolution and a max pooling, which a training
/// network runs as one step ([`Backend::conv2d_pooled_forward`]).
pub fn pools_first_convolution(architecture: &Architecture) -> bool {
    matches!(
        architecture.layers[..],
        [Layer::Conv2d { .. }, Layer::MaxPool2 { .. }, ..]
    )
}

/// The steps of `architecture`, with each upsampling that feeds a convolution folded into it
/// and, for `Outputs::Needed`, a first convolution and its pooling made one step.
fn compile(architecture: &Architecture, shapes: &[Hwc], outputs: Outputs) -> Vec<Step> {
    let layers = &architecture.layers;
    let slots = architecture.param_slots();
    let folded = |i: usize| {
        matches!(layers[i], Layer::Upsample2 { .. })
            && matches!(layers.get(i + 1), Some(Layer::Conv2d { .. }))
    };
    let pooled = outputs == Outputs::Needed && pools_first_convolution(architecture);
    let mut steps = Vec::new();
    for (layer, kind) in layers.iter().enumerate() {
        match *kind {
            Layer::Conv2d { activation, .. } if layer == 0 && pooled => {
                steps.push(Step::PooledConv {
                    conv_layer: layer,
                    conv: Conv {
                        input: batch_of(0, shapes[0]),
                        read: ConvInput::Direct,
                        slot: slots[layer].clone().expect("a conv layer has parameters"),
                        activation,
                    },
                });
            }
            Layer::MaxPool2 { .. } if layer == 1 && pooled => {}
            Layer::Conv2d { activation, .. } => {
                let fused = layer > 0 && folded(layer - 1);
                let source = if fused { layer - 1 } else { layer };
                let conv = Conv {
                    input: batch_of(0, shapes[source]),
                    read: if fused {
                        ConvInput::Upsampled2
                    } else {
                        ConvInput::Direct
                    },
                    slot: slots[layer].clone().expect("a conv layer has parameters"),
                    activation,
                };
                steps.push(Step::Conv {
                    layer,
                    source,
                    conv,
                    input_activation: architecture.input_activation(source),
                    pooled: matches!(layers.get(layer + 1), Some(Layer::MaxPool2 { .. })),
                });
            }
            Layer::MaxPool2 { .. } => {
                // A convolution just before it is a Conv step with `pooled` (the pooled first
                // convolution is a PooledConv step and its pooling has no step).
                let input_activation = architecture.input_activation(layer);
                steps.push(Step::MaxPool2 {
                    layer,
                    input_activation,
                    by_convolution: input_activation.is_some(),
                })
            }
            Layer::Upsample2 { .. } if folded(layer) => {}
            Layer::Upsample2 { .. } => steps.push(Step::Upsample2 { layer }),
        }
    }
    steps
}

/// A model bound to a backend, with its parameters, gradients, optimizer state and activations.
pub struct Network<B: Backend> {
    backend: B,
    architecture: Architecture,
    /// Input and every layer's output, per image.
    shapes: Vec<Hwc>,
    steps: Vec<Step>,
    batch_capacity: usize,
    params: B::Buffer,
    grads: B::Buffer,
    /// The optimizer's state: RMSprop's and Adam's v, Adam's m.
    velocity: B::Buffer,
    momentum: B::Buffer,
    /// activations[0] is the input, activations[i + 1] the output of layer i (empty for an
    /// upsampling folded into the next convolution).
    activations: Vec<B::Buffer>,
    /// The other input buffer: the next batch is uploaded here, then swapped with
    /// activations[0].
    next_input: B::Buffer,
    /// Images in next_input, once loaded.
    loaded: Option<usize>,
    /// Images in the last forward pass.
    forwarded: Option<usize>,
    /// dL/d(output of the current layer) and dL/d(its input), swapped after each layer.
    grad_out: B::Buffer,
    grad_in: B::Buffer,
    /// Whether grad_out holds dL/dz of the output convolution, as the last forward pass left
    /// it ([`Backend::conv2d_forward_scored`]); a backward walk uses it up.
    output_dz_ready: bool,
    /// Where the last forward pass left its loss, for [`Backend::scored_loss`].
    loss: B::Buffer,
    pub optimizer: Optimizer,
    /// Optimizer steps taken (Keras's `iterations`); Adam's bias correction counts from it.
    pub iterations: u64,
}

/// The convolutions among `steps`, for batches of `batch`.
fn conv_steps(steps: &[Step], batch: usize) -> Vec<Conv> {
    steps
        .iter()
        .filter_map(|step| match step {
            Step::Conv { conv, .. } | Step::PooledConv { conv, .. } => {
                Some(with_batch(conv, batch))
            }
            _ => None,
        })
        .collect()
}

/// What a training step does with one convolution of [`convolutions`] besides its own passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvInTraining {
    /// The activation whose derivative its backward pass applies to dx (that of the
    /// convolution whose output it reads), if any.
    pub input_activation: Option<Activation>,
    /// The max pooling layer whose output its forward pass writes in the same call
    /// ([`Backend::conv2d_forward_and_pool`]), if any; a first convolution pooled in a step of
    /// its own ([`pools_first_convolution`]) has none.
    pub pooling: Option<usize>,
}

/// For each convolution of [`convolutions`], what training does with it besides its passes.
pub fn convolutions_in_training(
    architecture: &Architecture,
    height: usize,
    width: usize,
) -> Result<Vec<ConvInTraining>> {
    let shapes = architecture.shapes(height, width)?;
    let steps = compile(architecture, &shapes, Outputs::Needed);
    Ok(steps
        .iter()
        .filter_map(|step| match *step {
            Step::Conv {
                layer,
                input_activation,
                pooled,
                ..
            } => Some(ConvInTraining {
                input_activation,
                pooling: pooled.then_some(layer + 1),
            }),
            Step::PooledConv { .. } => Some(ConvInTraining {
                input_activation: None,
                pooling: None,
            }),
            _ => None,
        })
        .collect())
}

/// Every convolution the graph runs for `architecture` on batches of `batch` images of
/// height x width, as the backend sees it (upsamplings folded in; the first one is pooled in
/// the same step when [`pools_first_convolution`]).
pub fn convolutions(
    architecture: &Architecture,
    height: usize,
    width: usize,
    batch: usize,
) -> Result<Vec<Conv>> {
    let shapes = architecture.shapes(height, width)?;
    Ok(conv_steps(
        &compile(architecture, &shapes, Outputs::Needed),
        batch,
    ))
}

/// `(&v[i], &mut v[j])` for i != j.
fn pair<T>(v: &mut [T], i: usize, j: usize) -> (&T, &mut T) {
    assert_ne!(i, j);
    if i < j {
        let (lo, hi) = v.split_at_mut(j);
        (&lo[i], &mut hi[0])
    } else {
        let (lo, hi) = v.split_at_mut(i);
        (&hi[0], &mut lo[j])
    }
}

impl<B: Backend> Network<B> {
    /// Plans every buffer for batches of up to `batch_capacity` images of height x width and
    /// loads `params` (the flat parameter vector, see [`Architecture::param_slots`]). Stores
    /// what training needs: see the module's introduction.
    pub fn new(
        backend: B,
        architecture: Architecture,
        height: usize,
        width: usize,
        batch_capacity: usize,
        params: &[f32],
    ) -> Result<Self> {
        let size = (height, width, batch_capacity);
        Self::build(backend, architecture, size, params, Outputs::Needed)
    }

    /// As [`new`](Self::new), keeping every layer's output (but an upsampling folded into the
    /// next convolution), for [`layer_output`](Self::layer_output) and
    /// [`output_gradient`](Self::output_gradient) on any convolution.
    pub fn keeping_every_output(
        backend: B,
        architecture: Architecture,
        height: usize,
        width: usize,
        batch_capacity: usize,
        params: &[f32],
    ) -> Result<Self> {
        let size = (height, width, batch_capacity);
        Self::build(backend, architecture, size, params, Outputs::Every)
    }

    fn build(
        mut backend: B,
        architecture: Architecture,
        (height, width, batch_capacity): (usize, usize, usize),
        params: &[f32],
        outputs: Outputs,
    ) -> Result<Self> {
        let shapes = architecture.shapes(height, width)?;
        if batch_capacity == 0 {
            return Err(Error::invalid("--batch-size", "must be at least 1"));
        }
        let count = architecture.param_count();
        if params.len() != count {
            return Err(Error::invalid(
                "parameters",
                format!("{} values given, the model has {count}", params.len()),
            ));
        }
        if !matches!(architecture.layers.last(), Some(Layer::Conv2d { .. })) {
            return Err(Error::invalid(
                "model",
                "the last layer must be a convolution: the loss and its gradient are computed \
                 with it",
            ));
        }
        let steps = compile(&architecture, &shapes, outputs);
        backend.plan(&conv_steps(&steps, batch_capacity))?;
        let mut device_params = backend.alloc(count)?;
        backend.upload(params, &mut device_params)?;
        let grads = backend.alloc(count)?;
        let velocity = backend.alloc(count)?;
        let momentum = backend.alloc(count)?;
        let mut stored = vec![true; shapes.len()];
        for step in &steps {
            match *step {
                Step::Conv { layer, source, .. } => {
                    stored[source + 1..layer + 1].fill(false);
                    stored[source] = true;
                }
                Step::PooledConv { conv_layer, .. } => stored[conv_layer + 1] = false,
                _ => {}
            }
        }
        let activations = shapes
            .iter()
            .zip(&stored)
            .map(|(s, &kept)| backend.alloc(if kept { batch_capacity * s.len() } else { 0 }))
            .collect::<Result<Vec<_>>>()?;
        let largest = shapes
            .iter()
            .zip(&stored)
            .filter(|(_, kept)| **kept)
            .map(|(s, _)| s.len())
            .max()
            .unwrap_or(0)
            * batch_capacity;
        let grad_out = backend.alloc(largest)?;
        let grad_in = backend.alloc(largest)?;
        let next_input = backend.alloc(batch_capacity * shapes[0].len())?;
        let loss = backend.alloc(1)?;
        Ok(Network {
            backend,
            architecture,
            shapes,
            steps,
            batch_capacity,
            params: device_params,
            grads,
            velocity,
            momentum,
            activations,
            next_input,
            loaded: None,
            forwarded: None,
            grad_out,
            grad_in,
            output_dz_ready: false,
            loss,
            optimizer: Optimizer::default(),
            iterations: 0,
        })
    }

    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn batch_capacity(&self) -> usize {
        self.batch_capacity
    }

    /// The per-image shape of activation `index` (0: the input, i + 1: the output of layer i).
    pub fn layer_shape(&self, index: usize) -> Hwc {
        self.shapes[index]
    }

    /// Values in one input image (height x width x 1).
    pub fn image_len(&self) -> usize {
        self.shapes[0].len()
    }

    fn check_batch(&self, images: &[f32]) -> Result<usize> {
        let per_image = self.image_len();
        let batch = images.len() / per_image;
        if batch == 0 || batch > self.batch_capacity || !images.len().is_multiple_of(per_image) {
            return Err(Error::invalid(
                "batch",
                format!(
                    "{} values is not 1 to {} images of {per_image} values",
                    images.len(),
                    self.batch_capacity
                ),
            ));
        }
        Ok(batch)
    }

    /// Starts uploading `images` ([batch, height, width, 1]) as the next batch and returns
    /// without waiting for it: on a GPU the copy overlaps the step already queued.
    pub fn load_batch(&mut self, images: &[f32]) -> Result<()> {
        let batch = self.check_batch(images)?;
        self.backend.upload_async(images, &mut self.next_input)?;
        self.loaded = Some(batch);
        Ok(())
    }

    /// Makes the loaded batch the input and marks a fence: the next [`load_batch`] writes the
    /// other buffer, which only the steps issued before this fence read.
    ///
    /// [`load_batch`]: Self::load_batch
    fn take_batch(&mut self) -> Result<usize> {
        let batch = self.loaded.take().ok_or_else(|| {
            Error::invalid("batch", "no batch was loaded before the step (load_batch)")
        })?;
        std::mem::swap(&mut self.activations[0], &mut self.next_input);
        self.backend.fence()?;
        self.forwarded = Some(batch);
        Ok(batch)
    }

    /// Runs the model on `images` ([batch, height, width, 1]) and returns the MSE of the
    /// reconstruction against the input.
    pub fn forward(&mut self, images: &[f32]) -> Result<f64> {
        self.load_batch(images)?;
        self.forward_loaded()?;
        self.loss()
    }

    /// Issues the forward pass on the loaded batch, scoring the output against the input (the
    /// loss, and dL/dz of the output convolution for the backward pass); returns its number
    /// of images.
    pub fn forward_loaded(&mut self) -> Result<usize> {
        let batch = self.take_batch()?;
        let output_layer = self.architecture.layers.len() - 1;
        for step in &self.steps {
            match step {
                Step::Conv {
                    layer,
                    source,
                    conv,
                    ..
                } if *layer == output_layer => {
                    let (inputs, output) = self.activations.split_at_mut(layer + 1);
                    let (x, target) = (&inputs[*source], &inputs[0]);
                    let conv = with_batch(conv, batch);
                    self.backend.conv2d_forward_scored(
                        &conv,
                        x,
                        &self.params,
                        target,
                        &mut output[0],
                        &mut self.grad_out,
                        &mut self.loss,
                    )?;
                    self.output_dz_ready = true;
                }
                Step::Conv {
                    layer,
                    source,
                    conv,
                    pooled: true,
                    ..
                } => {
                    let (inputs, outputs) = self.activations.split_at_mut(layer + 1);
                    let (y, pooled) = outputs.split_at_mut(1);
                    let conv = with_batch(conv, batch);
                    let (x, params) = (&inputs[*source], &self.params);
                    self.backend.conv2d_forward_and_pool(
                        &conv,
                        x,
                        params,
                        &mut y[0],
                        &mut pooled[0],
                    )?
                }
                Step::Conv {
                    layer,
                    source,
                    conv,
                    ..
                } => {
                    let (x, y) = pair(&mut self.activations, *source, layer + 1);
                    let conv = with_batch(conv, batch);
                    self.backend.conv2d_forward(&conv, x, &self.params, y)?
                }
                Step::PooledConv { conv_layer, conv } => {
                    let (x, pooled) = pair(&mut self.activations, 0, conv_layer + 2);
                    let conv = with_batch(conv, batch);
                    self.backend
                        .conv2d_pooled_forward(&conv, x, &self.params, pooled)?
                }
                Step::MaxPool2 {
                    by_convolution: true,
                    ..
                } => {}
                Step::MaxPool2 { layer, .. } => {
                    let input = batch_of(batch, self.shapes[*layer]);
                    let (x, y) = pair(&mut self.activations, *layer, layer + 1);
                    self.backend.maxpool2_forward(input, x, y)?
                }
                Step::Upsample2 { layer } => {
                    let input = batch_of(batch, self.shapes[*layer]);
                    let (x, y) = pair(&mut self.activations, *layer, layer + 1);
                    self.backend.upsample2_forward(input, x, y)?
                }
            }
        }
        Ok(batch)
    }

    /// The MSE of the last forward pass's reconstruction against its input (waits for it).
    pub fn loss(&mut self) -> Result<f64> {
        let batch = self
            .forwarded
            .ok_or_else(|| Error::invalid("loss", "no forward pass has run"))?;
        let len = batch * self.image_len();
        let last = self.activations.len() - 1;
        let outputs = (&self.activations[last], &self.activations[0]);
        self.backend.scored_loss(len, outputs, &self.loss)
    }

    /// After [`forward`](Self::forward) on a batch of `batch` images: every parameter's gradient
    /// of the loss, into the gradient buffer.
    pub fn backward(&mut self, batch: usize) -> Result<()> {
        self.backward_until(batch, None, None)
    }

    /// After [`forward`](Self::forward) on `batch` images: d target / d (output of `layer`),
    /// [batch, height, width, channels] of that layer, for a target whose gradient with respect
    /// to the model's output is `d_output`, by walking backward down to the layer. The layer's
    /// output must be stored (any layer but an upsampling folded into a convolution).
    pub fn output_gradient(
        &mut self,
        batch: usize,
        layer: usize,
        d_output: &[f32],
    ) -> Result<Vec<f32>> {
        self.check_stored(layer)?;
        self.backward_until(batch, Some(layer), Some(d_output))?;
        let len = batch * self.shapes[layer + 1].len();
        to_host(&mut self.backend, &self.grad_out, len)
    }

    /// Fails unless the output of `layer` is stored.
    fn check_stored(&self, layer: usize) -> Result<()> {
        if self.steps.iter().any(|step| step.layer() == layer) {
            return Ok(());
        }
        Err(Error::invalid(
            "layer",
            format!(
                "the output of layer {layer} is not stored (an upsampling folded into the next \
                 convolution, or a convolution pooled in the same step: \
                 Network::keeping_every_output stores it)"
            ),
        ))
    }

    /// The output of `layer` from the last forward pass on `batch` images.
    pub fn layer_output(&mut self, batch: usize, layer: usize) -> Result<Vec<f32>> {
        self.check_stored(layer)?;
        let len = batch * self.shapes[layer + 1].len();
        to_host(&mut self.backend, &self.activations[layer + 1], len)
    }

    /// Walks the steps backward from the loss; with `stop`, stops when the gradient of that
    /// layer's output is in `grad_out`.
    fn backward_until(
        &mut self,
        batch: usize,
        stop: Option<usize>,
        seed: Option<&[f32]>,
    ) -> Result<()> {
        let last = self.activations.len() - 1;
        let len = batch * self.image_len();
        // Whether grad_out already holds dL/dz of the next convolution walked back (the forward
        // pass's scoring, or the step after it, applied its activation's derivative).
        let mut before_activation = false;
        match seed {
            Some(d_output) => self.backend.upload(d_output, &mut self.grad_out)?,
            None if self.output_dz_ready => before_activation = true,
            None => self.backend.mse_backward(
                len,
                &self.activations[last],
                &self.activations[0],
                &mut self.grad_out,
            )?,
        }
        self.output_dz_ready = false;
        for step in self.steps.iter().rev() {
            if stop == Some(step.layer()) {
                return Ok(());
            }
            match step {
                Step::Conv {
                    layer,
                    source,
                    conv,
                    input_activation,
                    ..
                } => {
                    let conv = with_batch(conv, batch);
                    let (x, y) = (&self.activations[*source], &self.activations[layer + 1]);
                    let backend = &mut self.backend;
                    if !before_activation {
                        let output_len = conv.output().len();
                        backend.activation_backward(
                            conv.activation,
                            output_len,
                            y,
                            &mut self.grad_out,
                        )?;
                    }
                    if *source == 0 {
                        backend.conv2d_backward_filter(
                            &conv,
                            x,
                            &self.grad_out,
                            &mut self.grads,
                        )?;
                        break;
                    }
                    // x is a convolution's activated output: its derivative goes into dx here,
                    // unless the walk stops at that layer and wants dL/dx itself.
                    let x_activation = input_activation.filter(|_| stop != Some(source - 1));
                    backend.conv2d_backward(
                        &conv,
                        (x, x_activation),
                        &self.grad_out,
                        &self.params,
                        &mut self.grads,
                        &mut self.grad_in,
                    )?;
                    before_activation = x_activation.is_some();
                }
                Step::PooledConv { conv, .. } => {
                    // The network's input needs no gradient: the walk ends here.
                    let conv = with_batch(conv, batch);
                    let x = &self.activations[0];
                    return self.backend.conv2d_pooled_backward_filter(
                        &conv,
                        x,
                        &self.params,
                        &self.grad_out,
                        &mut self.grads,
                    );
                }
                Step::MaxPool2 {
                    layer,
                    input_activation,
                    ..
                } => {
                    let input = batch_of(batch, self.shapes[*layer]);
                    let x = &self.activations[*layer];
                    // As for a convolution: the derivative goes into dx unless the walk stops
                    // at the layer that produced x.
                    let x_activation = input_activation.filter(|_| stop != Some(layer - 1));
                    self.backend.maxpool2_backward(
                        input,
                        (x, x_activation),
                        &self.grad_out,
                        &mut self.grad_in,
                    )?;
                    before_activation = x_activation.is_some();
                }
                Step::Upsample2 { layer } => {
                    let input = batch_of(batch, self.shapes[*layer]);
                    self.backend
                        .upsample2_backward(input, &self.grad_out, &mut self.grad_in)?;
                    before_activation = false;
                }
            }
            std::mem::swap(&mut self.grad_out, &mut self.grad_in);
        }
        Ok(())
    }

    /// One optimizer step with the gradients of the last backward pass.
    pub fn apply_gradients(&mut self) -> Result<()> {
        self.iterations += 1;
        match self.optimizer {
            Optimizer::Rmsprop(hyper) => self.backend.rmsprop_update(
                hyper,
                &mut self.params,
                &self.grads,
                &mut self.velocity,
            ),
            Optimizer::Adam(hyper) => self.backend.adam_update(
                hyper,
                self.iterations,
                &mut self.params,
                &self.grads,
                &mut self.momentum,
                &mut self.velocity,
            ),
        }
    }

    /// forward, backward and one optimizer step; returns the batch's loss before the step.
    pub fn train_step(&mut self, images: &[f32]) -> Result<f64> {
        self.load_batch(images)?;
        self.train_step_loaded()?;
        self.loss()
    }

    /// Issues forward, backward and one optimizer step on the loaded batch without waiting
    /// for them; [`loss`](Self::loss) reads the batch's loss before the step.
    pub fn train_step_loaded(&mut self) -> Result<()> {
        let batch = self.forward_loaded()?;
        self.backward(batch)?;
        self.apply_gradients()
    }

    /// The reconstructions of the last forward pass: [batch, height, width, 1].
    pub fn output(&mut self, out: &mut [f32]) -> Result<()> {
        let last = self.activations.len() - 1;
        self.backend.download(&self.activations[last], out)
    }

    pub fn params(&mut self) -> Result<Vec<f32>> {
        to_host(
            &mut self.backend,
            &self.params,
            self.architecture.param_count(),
        )
    }

    pub fn gradients(&mut self) -> Result<Vec<f32>> {
        to_host(
            &mut self.backend,
            &self.grads,
            self.architecture.param_count(),
        )
    }

    pub fn velocity(&mut self) -> Result<Vec<f32>> {
        to_host(
            &mut self.backend,
            &self.velocity,
            self.architecture.param_count(),
        )
    }

    pub fn momentum(&mut self) -> Result<Vec<f32>> {
        to_host(
            &mut self.backend,
            &self.momentum,
            self.architecture.param_count(),
        )
    }

    pub fn set_params(&mut self, params: &[f32]) -> Result<()> {
        self.backend.upload(params, &mut self.params)
    }

    pub fn set_velocity(&mut self, velocity: &[f32]) -> Result<()> {
        self.backend.upload(velocity, &mut self.velocity)
    }

    pub fn set_momentum(&mut self, momentum: &[f32]) -> Result<()> {
        self.backend.upload(momentum, &mut self.momentum)
    }
}

fn with_batch(conv: &Conv, batch: usize) -> Conv {
    Conv {
        input: Nhwc {
            batch,
            ..conv.input
        },
        ..conv.clone()
    }
}

fn batch_of(batch: usize, shape: Hwc) -> Nhwc {
    Nhwc {
        batch,
        height: shape.height,
        width: shape.width,
        channels: shape.channels,
    }
}

fn to_host<B: Backend>(backend: &mut B, buffer: &B::Buffer, len: usize) -> Result<Vec<f32>> {
    let mut host = vec![0.0; len];
    backend.download(buffer, &mut host)?;
    Ok(host)
}
