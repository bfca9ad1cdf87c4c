//! Figures as PNG: panels of images with labels, colour maps with a colour bar, loss curves.
//! Text is drawn with DejaVu Sans, embedded in the binary (no system fonts needed).

use std::io::Cursor;
use std::path::Path;
use std::sync::Once;

use image::{GrayImage, ImageFormat, Rgb, RgbImage};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::atomic;
use crate::error::{Error, Result};

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans is a valid font"));
    });
}

fn drawing_error(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(reason),
    }
}

/// Writes `image` as a PNG, atomically.
pub fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| drawing_error(path)(e.to_string()))?;
    atomic::write_file(path, bytes.get_ref())
}

/// The jet colour map: dark blue (0) through cyan, yellow, to dark red (1).
pub fn jet(value: f32) -> Rgb<u8> {
    let v = value.clamp(0.0, 1.0);
    let channel = |offset: f32| (1.5 - (4.0 * v - offset).abs()).clamp(0.0, 1.0);
    Rgb([channel(3.0), channel(2.0), channel(1.0)].map(|c| (255.0 * c).round() as u8))
}

/// A [0, 1] map as a jet-coloured image.
pub fn colorize(values: &[f32], width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| jet(values[(y * width + x) as usize]))
}

/// A [0, 1] image as gray.
pub fn gray(values: &[f32], width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = (255.0 * values[(y * width + x) as usize].clamp(0.0, 1.0)).round() as u8;
        Rgb([v, v, v])
    })
}

/// A gray image as RGB.
pub fn from_gray(image: &GrayImage) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let v = image.get_pixel(x, y)[0];
        Rgb([v, v, v])
    })
}

/// One panel of a figure: an image and the caption drawn above it.
pub struct Panel {
    pub caption: String,
    pub image: RgbImage,
}

/// A grid of panels: a title, then rows, each with a label on its left; every image scaled to
/// `tile` pixels square. With `colorbar`, a jet colour bar from 0 to 1 on the right.
pub fn panel_grid(
    title: &str,
    rows: &[(String, Vec<Panel>)],
    tile: u32,
    colorbar: bool,
) -> Result<RgbImage> {
    register_font();
    let (label_width, caption, gap, top) = (110u32, 18u32, 8u32, 34u32);
    let columns = rows
        .iter()
        .map(|(_, panels)| panels.len())
        .max()
        .unwrap_or(0) as u32;
    let bar = if colorbar { 70 } else { 0 };
    let width = label_width + columns * (tile + gap) + gap + bar;
    let height = top + rows.len() as u32 * (tile + caption + gap) + gap;
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    let error = |e: String| Error::Backend {
        backend: "figure".into(),
        reason: e,
    };
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        let text = |size: u32| (FONT, size).into_font().color(&BLACK);
        root.draw_text(title, &text(18), (gap as i32, 8))
            .map_err(|e| error(e.to_string()))?;
        for (r, (label, panels)) in rows.iter().enumerate() {
            let y0 = (top + r as u32 * (tile + caption + gap)) as i32;
            root.draw_text(
                label,
                &text(14),
                (gap as i32, y0 + caption as i32 + tile as i32 / 2 - 8),
            )
            .map_err(|e| error(e.to_string()))?;
            for (c, panel) in panels.iter().enumerate() {
                let x0 = (label_width + c as u32 * (tile + gap)) as i32;
                root.draw_text(&panel.caption, &text(12), (x0, y0 + 2))
                    .map_err(|e| error(e.to_string()))?;
                // Scaled to fit the tile, its aspect kept, at the tile's top left.
                let (w, h) = panel.image.dimensions();
                let scale = f64::from(tile) / f64::from(w.max(h));
                let fit = |side: u32| ((f64::from(side) * scale).round() as u32).clamp(1, tile);
                let (w, h) = (fit(w), fit(h));
                let scaled = image::imageops::resize(
                    &panel.image,
                    w,
                    h,
                    image::imageops::FilterType::Triangle,
                );
                let element: BitMapElement<(i32, i32)> = BitMapElement::with_owned_buffer(
                    (x0, y0 + caption as i32),
                    (w, h),
                    scaled.into_raw(),
                )
                .ok_or_else(|| error("an image buffer of the wrong size".into()))?;
                root.draw(&element).map_err(|e| error(e.to_string()))?;
            }
        }
        if colorbar {
            let x0 = (width - bar + 12) as i32;
            let (y0, y1) = (top as i32 + caption as i32, (height - gap) as i32 - 10);
            for y in y0..y1 {
                let value = 1.0 - (y - y0) as f32 / (y1 - y0) as f32;
                let Rgb([r, g, b]) = jet(value);
                root.draw(&Rectangle::new(
                    [(x0, y), (x0 + 16, y + 1)],
                    RGBColor(r, g, b).filled(),
                ))
                .map_err(|e| error(e.to_string()))?;
            }
            for (value, y) in [("1", y0), ("0.5", (y0 + y1) / 2), ("0", y1 - 10)] {
                root.draw_text(value, &text(12), (x0 + 20, y))
                    .map_err(|e| error(e.to_string()))?;
            }
        }
        root.present().map_err(|e| error(e.to_string()))?;
    }
    Ok(RgbImage::from_raw(width, height, buffer).expect("sized to the figure"))
}

/// Training and validation loss per epoch, labelled axes and legend; log scale on request.
pub fn loss_curve(
    epochs: &[(usize, f64, Option<f64>)],
    log_scale: bool,
    path: &Path,
) -> Result<()> {
    register_font();
    let (width, height) = (800u32, 500u32);
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    let error = drawing_error(path);
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        let values: Vec<f64> = epochs
            .iter()
            .flat_map(|&(_, t, v)| std::iter::once(t).chain(v))
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        let (low, high) = values
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(l, h), &v| (l.min(v), h.max(v)));
        let (low, high) = if values.is_empty() {
            (1e-4, 1.0)
        } else {
            (low, high)
        };
        let first = epochs.first().map_or(0, |e| e.0);
        let last = epochs.last().map_or(1, |e| e.0).max(first + 1);
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption("Reconstruction loss (MSE)", (FONT, 20))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70);
        let train: Vec<(f64, f64)> = epochs.iter().map(|&(e, t, _)| (e as f64, t)).collect();
        let validation: Vec<(f64, f64)> = epochs
            .iter()
            .filter_map(|&(e, _, v)| Some((e as f64, v?)))
            .collect();
        let x_range = first as f64..last as f64;
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc("epoch")
                    .y_desc("loss")
                    .label_style((FONT, 14))
                    .draw()
                    .map_err(|e| error(e.to_string()))?;
                chart
                    .draw_series(LineSeries::new(train.clone(), BLUE.stroke_width(2)))
                    .map_err(|e| error(e.to_string()))?
                    .label("training")
                    .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
                if !validation.is_empty() {
                    chart
                        .draw_series(LineSeries::new(validation.clone(), RED.stroke_width(2)))
                        .map_err(|e| error(e.to_string()))?
                        .label("validation")
                        .legend(|(x, y)| {
                            PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2))
                        });
                }
                chart
                    .configure_series_labels()
                    .label_font((FONT, 14))
                    .border_style(BLACK)
                    .background_style(WHITE)
                    .draw()
                    .map_err(|e| error(e.to_string()))?;
            }};
        }
        if log_scale {
            draw!(
                builder
                    .build_cartesian_2d(x_range, (low * 0.9..high * 1.1).log_scale())
                    .map_err(|e| error(e.to_string()))?
            );
        } else {
            draw!(
                builder
                    .build_cartesian_2d(x_range, 0.0..high * 1.1)
                    .map_err(|e| error(e.to_string()))?
            );
        }
        root.present().map_err(|e| error(e.to_string()))?;
    }
    save_png(
        &RgbImage::from_raw(width, height, buffer).expect("sized to the figure"),
        path,
    )
}
