//! The reference autoencoder as data: a list of layers, their shapes and their parameters.

use std::ops::Range;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// The non-linearity fused into a convolution's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Sigmoid,
}

impl Activation {
    /// The name a reader knows it by.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "ReLU",
            Activation::Sigmoid => "sigmoid",
        }
    }
}

/// One layer of the graph. Convolutions are 3x3, stride 1, 'same' zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Conv2d {
        name: &'static str,
        out_channels: usize,
        activation: Activation,
    },
    /// 2x2 max pooling, stride 2.
    MaxPool2 { name: &'static str },
    /// Nearest-neighbour upsampling by 2 in both directions.
    Upsample2 { name: &'static str },
}

impl Layer {
    pub fn name(&self) -> &'static str {
        match *self {
            Layer::Conv2d { name, .. } | Layer::MaxPool2 { name } | Layer::Upsample2 { name } => {
                name
            }
        }
    }

    fn keras_type(&self) -> &'static str {
        match self {
            Layer::Conv2d { .. } => "Conv2D",
            Layer::MaxPool2 { .. } => "MaxPooling2D",
            Layer::Upsample2 { .. } => "UpSampling2D",
        }
    }
}

/// Height, width and channels of one image's activation (channels-last).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hwc {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl Hwc {
    pub fn len(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where one convolution's kernel `[3, 3, cin, cout]` and bias `[cout]` sit in the flat parameter buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSlot {
    pub name: &'static str,
    pub in_channels: usize,
    pub out_channels: usize,
    pub weight: Range<usize>,
    pub bias: Range<usize>,
}

impl ParamSlot {
    pub fn weight_shape(&self) -> [usize; 4] {
        [3, 3, self.in_channels, self.out_channels]
    }
}

/// A model: an input size and a list of layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Architecture {
    pub name: &'static str,
    pub layers: Vec<Layer>,
}

impl Architecture {
    /// The published fingerprint autoencoder: 314,625 parameters.
    pub fn reference() -> Architecture {
        use Activation::{Relu, Sigmoid};
        let conv = |name, out_channels, activation| Layer::Conv2d {
            name,
            out_channels,
            activation,
        };
        Architecture {
            name: "whorl-autoencoder-v1",
            layers: vec![
                conv("conv1", 32, Relu),
                Layer::MaxPool2 { name: "pool1" },
                conv("conv2", 64, Relu),
                Layer::MaxPool2 { name: "pool2" },
                conv("conv3", 128, Relu),
                conv("conv4", 128, Relu),
                Layer::Upsample2 { name: "up1" },
                conv("conv5", 64, Relu),
                Layer::Upsample2 { name: "up2" },
                conv("conv6", 1, Sigmoid),
            ],
        }
    }

    /// How many times the input is halved: H and W must be divisible by 2^this.
    pub fn downsampling(&self) -> usize {
        let pools = self
            .layers
            .iter()
            .filter(|l| matches!(l, Layer::MaxPool2 { .. }))
            .count();
        1 << pools
    }

    /// The activation that produced the input of `layer`: that of the convolution just before
    /// it, if the layer before is a convolution.
    pub fn input_activation(&self, layer: usize) -> Option<Activation> {
        match layer.checked_sub(1).map(|p| &self.layers[p]) {
            Some(&Layer::Conv2d { activation, .. }) => Some(activation),
            _ => None,
        }
    }

    /// Checks an input size and returns the shape of the input and of every layer's output.
    pub fn shapes(&self, height: usize, width: usize) -> Result<Vec<Hwc>> {
        let factor = self.downsampling();
        if height == 0
            || width == 0
            || !height.is_multiple_of(factor)
            || !width.is_multiple_of(factor)
        {
            return Err(Error::invalid(
                "--size",
                format!(
                    "{height}x{width} is not a positive multiple of {factor} in both directions, \
                     which the model's {} pooling layers need",
                    factor.trailing_zeros()
                ),
            ));
        }
        let mut shape = Hwc {
            height,
            width,
            channels: 1,
        };
        let mut shapes = vec![shape];
        for layer in &self.layers {
            shape = match *layer {
                Layer::Conv2d { out_channels, .. } => Hwc {
                    channels: out_channels,
                    ..shape
                },
                Layer::MaxPool2 { .. } => Hwc {
                    height: shape.height / 2,
                    width: shape.width / 2,
                    ..shape
                },
                Layer::Upsample2 { .. } => Hwc {
                    height: shape.height * 2,
                    width: shape.width * 2,
                    ..shape
                },
            };
            shapes.push(shape);
        }
        Ok(shapes)
    }

    /// The parameter slot of every layer (None for layers without parameters), in layer order.
    pub fn param_slots(&self) -> Vec<Option<ParamSlot>> {
        let mut offset = 0;
        let mut channels = 1;
        self.layers
            .iter()
            .map(|layer| match *layer {
                Layer::Conv2d {
                    name, out_channels, ..
                } => {
                    let weight = offset..offset + 9 * channels * out_channels;
                    let bias = weight.end..weight.end + out_channels;
                    offset = bias.end;
                    let slot = ParamSlot {
                        name,
                        in_channels: channels,
                        out_channels,
                        weight,
                        bias,
                    };
                    channels = out_channels;
                    Some(slot)
                }
                _ => None,
            })
            .collect()
    }

    pub fn convs(&self) -> Vec<ParamSlot> {
        self.param_slots().into_iter().flatten().collect()
    }

    pub fn param_count(&self) -> usize {
        self.convs().last().map_or(0, |slot| slot.bias.end)
    }

    /// A one-line description that a checkpoint must match to be loaded into this model.
    pub fn signature(&self) -> String {
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|layer| match *layer {
                Layer::Conv2d {
                    name,
                    out_channels,
                    activation,
                } => format!("{name}:conv3x3-{out_channels}-{activation:?}").to_lowercase(),
                Layer::MaxPool2 { name } => format!("{name}:maxpool2"),
                Layer::Upsample2 { name } => format!("{name}:upsample2"),
            })
            .collect();
        format!("{} [{}]", self.name, layers.join(" "))
    }

    /// A table like Keras's model.summary(): layer, output shape, parameters, total.
    pub fn summary(&self, height: usize, width: usize) -> Result<String> {
        let shapes = self.shapes(height, width)?;
        let slots = self.param_slots();
        let shape_text = |s: &Hwc| format!("(None, {}, {}, {})", s.height, s.width, s.channels);
        let rule = "─".repeat(66);
        let mut out = format!("Model: \"{}\"\n{rule}\n", self.name);
        out += &format!(
            "{:<28}{:<26}{:>12}\n{rule}\n",
            "Layer (type)", "Output Shape", "Param #"
        );
        out += &format!(
            "{:<28}{:<26}{:>12}\n",
            "input (InputLayer)",
            shape_text(&shapes[0]),
            0
        );
        for ((layer, shape), slot) in self.layers.iter().zip(&shapes[1..]).zip(&slots) {
            let params = slot.as_ref().map_or(0, |s| s.bias.end - s.weight.start);
            let label = format!("{} ({})", layer.name(), layer.keras_type());
            out += &format!(
                "{label:<28}{:<26}{:>12}\n",
                shape_text(shape),
                group_thousands(params)
            );
        }
        out += &format!(
            "{rule}\nTotal params: {} ({:.2} MB)\n",
            group_thousands(self.param_count()),
            self.param_count() as f64 * 4.0 / 1e6
        );
        Ok(out)
    }

    /// Keras's defaults: glorot_uniform kernels, limit sqrt(6 / (fan_in + fan_out)) with
    /// fan_in = 9 cin and fan_out = 9 cout; zero biases. Deterministic for a seed.
    pub fn glorot_uniform(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = vec![0.0f32; self.param_count()];
        for slot in self.convs() {
            let fan_in = 9 * slot.in_channels;
            let fan_out = 9 * slot.out_channels;
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            for w in &mut params[slot.weight.clone()] {
                *w = rng.random_range(-limit..limit);
            }
        }
        params
    }
}

/// 314625 -> "314,625".
pub fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
