//! Scoring a trained model: reconstructions of image sets, with MSE, PSNR and SSIM per image
//! and their mean, median and worst per set; as a table, JSON and CSV.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::atomic;
use crate::backend::Backend;
use crate::checkpoint::{self, CheckpointMeta};
use crate::data::{self, Dataset};
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::metrics;
use crate::model::Architecture;

/// Images per forward pass when evaluating.
pub const EVAL_BATCH: usize = 8;

/// A checkpoint loaded for inference on `backend`.
pub fn load_model<B: Backend>(backend: B, path: &Path) -> Result<(Network<B>, CheckpointMeta)> {
    let architecture = Architecture::reference();
    let dir = checkpoint::resolve_checkpoint(path)?;
    let checkpoint = checkpoint::load(&dir, &architecture)?;
    let size = checkpoint.meta.input_size;
    let net = Network::new(
        backend,
        architecture,
        size,
        size,
        EVAL_BATCH,
        &checkpoint.params,
    )?;
    Ok((net, checkpoint.meta))
}

/// The reconstructions of `indices` of `dataset`, in that order.
pub fn reconstruct<B: Backend>(
    net: &mut Network<B>,
    dataset: &Dataset,
    indices: &[usize],
) -> Result<Vec<f32>> {
    let n = dataset.size * dataset.size;
    let mut out = vec![0.0; indices.len() * n];
    let mut batch = Vec::with_capacity(EVAL_BATCH * n);
    for (chunk, slot) in indices
        .chunks(net.batch_capacity())
        .zip(out.chunks_mut(net.batch_capacity() * n))
    {
        dataset.gather(chunk, &mut batch);
        net.forward(&batch)?;
        net.output(slot)?;
    }
    Ok(out)
}

/// One image's scores.
#[derive(Clone, Debug, Serialize)]
pub struct ImageScore {
    #[serde(serialize_with = "crate::path_text::serialize_lossy")]
    pub file: PathBuf,
    pub mse: f64,
    pub psnr: f64,
    pub ssim: f64,
}

/// Mean, median and worst of one metric over a set.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub median: f64,
    pub worst: f64,
}

impl Summary {
    /// `higher_is_better` picks which end is the worst.
    fn of(values: &[f64], higher_is_better: bool) -> Summary {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Summary {
            mean: values.iter().sum::<f64>() / n as f64,
            median,
            worst: if higher_is_better {
                sorted[0]
            } else {
                sorted[n - 1]
            },
        }
    }
}

/// A labelled set of images and their scores.
#[derive(Clone, Debug, Serialize)]
pub struct SetReport {
    pub label: String,
    #[serde(serialize_with = "crate::path_text::serialize_lossy")]
    pub dir: PathBuf,
    pub mse: Summary,
    pub psnr: Summary,
    pub ssim: Summary,
    pub images: Vec<ImageScore>,
}

/// Scores the reconstruction of each of `indices` of `dataset`.
pub fn score<B: Backend>(
    net: &mut Network<B>,
    dataset: &Dataset,
    indices: &[usize],
    label: &str,
) -> Result<SetReport> {
    if indices.is_empty() {
        return Err(Error::EmptyDataDir {
            path: dataset.dir.clone(),
        });
    }
    let reconstructions = reconstruct(net, dataset, indices)?;
    let (n, side) = (dataset.size * dataset.size, dataset.size);
    let images: Vec<ImageScore> = indices
        .iter()
        .zip(reconstructions.chunks(n))
        .map(|(&i, recon)| {
            let original = dataset.image(i);
            ImageScore {
                file: dataset.files[i].clone(),
                mse: metrics::mse(original, recon),
                psnr: metrics::psnr(original, recon),
                ssim: metrics::ssim(original, recon, side, side),
            }
        })
        .collect();
    let column = |f: fn(&ImageScore) -> f64| images.iter().map(f).collect::<Vec<_>>();
    Ok(SetReport {
        label: label.to_string(),
        dir: dataset.dir.clone(),
        mse: Summary::of(&column(|s| s.mse), false),
        psnr: Summary::of(&column(|s| s.psnr), true),
        ssim: Summary::of(&column(|s| s.ssim), true),
        images,
    })
}

/// The validation split a checkpoint was trained with: its data folder, split by its seed.
pub fn validation_split(meta: &CheckpointMeta, skip_bad: bool) -> Result<(Dataset, Vec<usize>)> {
    let dataset = Dataset::load(&meta.data_dir, meta.input_size, skip_bad, false)?;
    let split = data::split(dataset.len(), meta.val_split, meta.seed, &meta.data_dir)?;
    Ok((dataset, split.validation))
}

fn decibels(value: f64) -> String {
    if value.is_infinite() {
        "inf".into()
    } else {
        format!("{value:.2}")
    }
}

/// The reports as a table: one row per set, mean / median / worst of each metric.
pub fn table(reports: &[SetReport]) -> String {
    let mut out = format!(
        "{:<34} {:>6}  {:>26}  {:>22}  {:>20}\n",
        "set", "images", "MSE mean/median/worst", "PSNR dB mean/med/worst", "SSIM mean/med/worst"
    );
    for r in reports {
        out += &format!(
            "{:<34} {:>6}  {:>8.5} {:>8.5} {:>8.5}  {:>6} {:>6} {:>6}  {:>6.4} {:>6.4} {:>6.4}\n",
            r.label,
            r.images.len(),
            r.mse.mean,
            r.mse.median,
            r.mse.worst,
            decibels(r.psnr.mean),
            decibels(r.psnr.median),
            decibels(r.psnr.worst),
            r.ssim.mean,
            r.ssim.median,
            r.ssim.worst,
        );
    }
    out
}

/// Writes the reports as JSON to `path` and one row per image as CSV beside it (.csv).
pub fn write(reports: &[SetReport], path: &Path) -> Result<PathBuf> {
    let json = serde_json::to_string_pretty(reports).expect("reports serialise");
    atomic::write_file(path, json.as_bytes())?;
    let csv_path = path.with_extension("csv");
    let mut csv = String::from("set,file,mse,psnr,ssim\n");
    for r in reports {
        for s in &r.images {
            csv += &format!(
                "{},{},{:.8},{},{:.6}\n",
                r.label.replace(',', ";"),
                s.file.display().to_string().replace(',', ";"),
                s.mse,
                decibels(s.psnr),
                s.ssim
            );
        }
    }
    atomic::write_file(&csv_path, csv.as_bytes())?;
    Ok(csv_path)
}

/// The reference's figure, extended: originals on top, reconstructions below (with SSIM),
/// then the absolute error with the jet colour map (colour bar: 0 to 1).
pub fn reconstruction_figure(
    title: &str,
    dataset: &Dataset,
    indices: &[usize],
    reconstructions: &[f32],
) -> Result<image::RgbImage> {
    use crate::figures::{Panel, colorize, gray, panel_grid};
    let (side, n) = (dataset.size as u32, dataset.size * dataset.size);
    let (mut originals, mut outputs, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (&i, recon) in indices.iter().zip(reconstructions.chunks(n)) {
        let original = dataset.image(i);
        let name = dataset.files[i]
            .file_stem()
            .map_or(String::new(), |s| s.to_string_lossy().into_owned());
        let error: Vec<f32> = original
            .iter()
            .zip(recon)
            .map(|(a, b)| (a - b).abs())
            .collect();
        originals.push(Panel {
            caption: name,
            image: gray(original, side, side),
        });
        outputs.push(Panel {
            caption: format!(
                "SSIM {:.3}",
                metrics::ssim(original, recon, dataset.size, dataset.size)
            ),
            image: gray(recon, side, side),
        });
        errors.push(Panel {
            caption: format!("MSE {:.4}", metrics::mse(original, recon)),
            image: colorize(&error, side, side),
        });
    }
    let rows = [
        ("original".to_string(), originals),
        ("reconstructed".to_string(), outputs),
        ("|error|".to_string(), errors),
    ];
    panel_grid(title, &rows, 128, true)
}
