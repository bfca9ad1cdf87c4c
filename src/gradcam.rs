//! Grad-CAM (Selvaraju et al., 2017) adapted to the autoencoder.
//!
//! The reference picked one output pixel as a pseudo class, which explains one pixel. whorl's
//! target is the whole reconstruction: the sum of the output image. A channel's weight is then
//! how much it raises the reconstruction on average, and the map shows where the layer's
//! activations build the output. (The MSE against the input is the other natural choice, but
//! its gradient, 2 (output - input), changes sign from pixel to pixel, so the spatial means
//! that make the channel weights cancel out and deep layers' maps come out flat.)
//! Channel weights are the spatial mean of the target's gradient with respect to the layer's
//! activations; the map is ReLU of the weighted sum of the activation channels, normalised to
//! [0, 1] (a map with nothing above zero is reported flat) and resized bilinearly to the input.

use image::{ImageBuffer, Luma};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::model::Layer;

/// A Grad-CAM map at the input's size, values in [0, 1].
#[derive(Clone, Debug)]
pub struct CamMap {
    pub layer: &'static str,
    /// width x height, row-major.
    pub values: Vec<f32>,
    pub width: usize,
    pub height: usize,
    /// True when no channel helps the target anywhere (all zero): nothing to normalise.
    pub flat: bool,
}

impl CamMap {
    /// The map of the width x height image at the top left of this map's square canvas (a
    /// model trained on crops sees an image padded to a square): that region, normalised to
    /// its own peak, flat where nothing in it is above zero.
    pub fn top_left(&self, width: usize, height: usize) -> CamMap {
        let values = crate::data::top_left(&self.values, self.width, width, height);
        let peak = values.iter().fold(0.0f32, |m, &v| m.max(v));
        let flat = !(peak > 0.0 && peak.is_finite());
        CamMap {
            layer: self.layer,
            values: values
                .into_iter()
                .map(|v| if flat { 0.0 } else { v / peak })
                .collect(),
            width,
            height,
            flat,
        }
    }
}

/// The index of the convolution layer called `name`.
pub fn conv_layer(net: &Network<impl Backend>, name: &str) -> Result<usize> {
    net.architecture()
        .layers
        .iter()
        .position(|l| matches!(l, Layer::Conv2d { .. }) && l.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = net
                .architecture()
                .layers
                .iter()
                .filter(|l| matches!(l, Layer::Conv2d { .. }))
                .map(Layer::name)
                .collect();
            Error::invalid(
                "--layer",
                format!(
                    "no convolution \"{name}\" (expected one of {} or all)",
                    names.join(", ")
                ),
            )
        })
}

/// Grad-CAM of convolution layer `layer` for one image of the network's input size.
pub fn grad_cam<B: Backend>(net: &mut Network<B>, image: &[f32], layer: usize) -> Result<CamMap> {
    let name = net.architecture().layers[layer].name();
    net.forward(image)?;
    // d (sum of the output) / d output = 1 everywhere.
    let gradient = net.output_gradient(1, layer, &vec![1.0; image.len()])?;
    let activations = net.layer_output(1, layer)?;
    let shape = net.layer_shape(layer + 1);
    let (pixels, channels) = (shape.height * shape.width, shape.channels);
    // weight[c] = mean over pixels p of d target / d A[p, c]
    let mut weights = vec![0.0f64; channels];
    for row in gradient.chunks_exact(channels) {
        for (w, g) in weights.iter_mut().zip(row) {
            *w += f64::from(*g) / pixels as f64;
        }
    }
    let cam: Vec<f32> = activations
        .chunks_exact(channels)
        .map(|a| {
            let sum: f64 = a.iter().zip(&weights).map(|(&x, w)| f64::from(x) * w).sum();
            sum.max(0.0) as f32
        })
        .collect();
    let peak = cam.iter().fold(0.0f32, |m, &v| m.max(v));
    let flat = !(peak > 0.0 && peak.is_finite());
    let normalised: Vec<f32> = cam
        .iter()
        .map(|&v| if flat { 0.0 } else { v / peak })
        .collect();
    let size = (image.len() as f64).sqrt() as usize;
    let small: ImageBuffer<Luma<f32>, Vec<f32>> =
        ImageBuffer::from_raw(shape.width as u32, shape.height as u32, normalised)
            .expect("sized to the layer");
    let resized = image::imageops::resize(
        &small,
        size as u32,
        size as u32,
        image::imageops::FilterType::Triangle,
    );
    Ok(CamMap {
        layer: name,
        values: resized
            .into_raw()
            .into_iter()
            .map(|v| v.clamp(0.0, 1.0))
            .collect(),
        width: size,
        height: size,
        flat,
    })
}

/// One row per map: the input, the jet heat map, and the two overlaid; a colour bar. The image
/// has each map's width and height.
pub fn figure(title: &str, image: &[f32], maps: &[CamMap]) -> Result<image::RgbImage> {
    use crate::figures::{Panel, colorize, gray, panel_grid};
    let rows: Vec<(String, Vec<Panel>)> = maps
        .iter()
        .map(|map| {
            let (width, height) = (map.width as u32, map.height as u32);
            let heat = colorize(&map.values, width, height);
            let mut overlay = gray(image, width, height);
            for (o, h) in overlay.pixels_mut().zip(heat.pixels()) {
                for c in 0..3 {
                    o[c] = ((u16::from(o[c]) + u16::from(h[c])) / 2) as u8;
                }
            }
            let label = if map.flat {
                format!("{} (flat)", map.layer)
            } else {
                map.layer.to_string()
            };
            let panels = vec![
                Panel {
                    caption: "input".into(),
                    image: gray(image, width, height),
                },
                Panel {
                    caption: "Grad-CAM".into(),
                    image: heat,
                },
                Panel {
                    caption: "overlay".into(),
                    image: overlay,
                },
            ];
            (label, panels)
        })
        .collect();
    panel_grid(title, &rows, 192, true)
}
