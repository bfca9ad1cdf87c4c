//! Scoring a trained model: reconstructions of image sets, with MSE, PSNR and SSIM per image
//! and their mean, median and worst per set, and (with the `nbis` feature) whether each
//! reconstruction is still the same finger; as a table, JSON and CSV.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::atomic;
use crate::backend::Backend;
use crate::bundled;
use crate::checkpoint::{self, CheckpointMeta};
use crate::data::{self, Dataset};
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::metrics;
use crate::model::Architecture;
use crate::normalize::{self, Normalization};

/// Images per forward pass when evaluating.
pub const EVAL_BATCH: usize = 8;

/// The weights of a checkpoint folder or run folder (its newest checkpoint), or with `None`
/// of the bundled model ([`crate::bundled`]).
pub fn load_weights(path: Option<&Path>) -> Result<checkpoint::Weights> {
    let architecture = Architecture::reference();
    match path {
        Some(path) => {
            checkpoint::load_weights(&checkpoint::resolve_checkpoint(path)?, &architecture)
        }
        None => bundled::load(&architecture),
    }
}

/// An inference network for batches of up to `batch` images of side x side, which need not be
/// the size the model was trained at (it is fully convolutional).
pub fn network<B: Backend>(
    backend: B,
    weights: &checkpoint::Weights,
    side: usize,
    batch: usize,
) -> Result<Network<B>> {
    Network::new(
        backend,
        Architecture::reference(),
        side,
        side,
        batch,
        &weights.params,
    )
}

/// The reconstructions of `indices` of `dataset`, in that order; each image normalised as
/// `normalization` says before the model sees it, and the normalisation undone on its output.
pub fn reconstruct<B: Backend>(
    net: &mut Network<B>,
    dataset: &Dataset,
    indices: &[usize],
    normalization: Normalization,
) -> Result<Vec<f32>> {
    let n = dataset.size * dataset.size;
    let mut out = vec![0.0; indices.len() * n];
    let mut batch = Vec::with_capacity(EVAL_BATCH * n);
    for (chunk, slot) in indices
        .chunks(net.batch_capacity())
        .zip(out.chunks_mut(net.batch_capacity() * n))
    {
        dataset.gather(chunk, &mut batch);
        let stretches = normalize::normalize_batch(normalization, &mut batch, n);
        net.forward(&batch)?;
        net.output(slot)?;
        for (stretch, image) in stretches.iter().zip(slot.chunks_exact_mut(n)) {
            stretch.undo(image);
        }
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
    /// NBIS's verdict; absent without the `nbis` feature or when MINDTCT finds no minutiae in
    /// the original.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityScore>,
}

/// BOZORTH3 scores of one image (see [`crate::identity`]). Genuine and impostor scores need a
/// manifest.json (as `whorl synth` writes) naming each file's finger: the genuine partner is
/// another impression of the same finger in the set, the impostor the next image of another
/// finger; both are compared as originals.
#[derive(Clone, Debug, Serialize)]
pub struct IdentityScore {
    /// Minutiae MINDTCT finds in the original and in the reconstruction.
    pub minutiae: usize,
    pub reconstruction_minutiae: usize,
    /// The original against its reconstruction.
    pub kept: i32,
    /// The original and the reconstruction against the genuine partner.
    pub genuine: Option<i32>,
    pub genuine_reconstructed: Option<i32>,
    /// The original and the reconstruction against the impostor.
    pub impostor: Option<i32>,
    pub impostor_reconstructed: Option<i32>,
}

/// A set of BOZORTH3 scores: their mean and the share above NIST's match threshold (40).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MatchRate {
    pub pairs: usize,
    pub mean: f64,
    pub share_above_threshold: f64,
}

impl MatchRate {
    fn of(scores: impl Iterator<Item = Option<i32>>) -> Option<MatchRate> {
        let scores: Vec<i32> = scores.flatten().collect();
        let pairs = scores.len();
        (pairs > 0).then(|| MatchRate {
            pairs,
            mean: scores.iter().map(|&s| f64::from(s)).sum::<f64>() / pairs as f64,
            share_above_threshold: scores.iter().filter(|&&s| s > MATCH_THRESHOLD).count() as f64
                / pairs as f64,
        })
    }
}

/// A set's identity scores, over the images whose original has minutiae.
#[derive(Clone, Debug, Serialize)]
pub struct IdentitySummary {
    pub kept: MatchRate,
    pub genuine: Option<MatchRate>,
    pub genuine_reconstructed: Option<MatchRate>,
    pub impostor: Option<MatchRate>,
    pub impostor_reconstructed: Option<MatchRate>,
}

impl IdentitySummary {
    fn of(images: &[ImageScore]) -> Option<IdentitySummary> {
        let scores = || images.iter().filter_map(|s| s.identity.as_ref());
        Some(IdentitySummary {
            kept: MatchRate::of(scores().map(|s| Some(s.kept)))?,
            genuine: MatchRate::of(scores().map(|s| s.genuine)),
            genuine_reconstructed: MatchRate::of(scores().map(|s| s.genuine_reconstructed)),
            impostor: MatchRate::of(scores().map(|s| s.impostor)),
            impostor_reconstructed: MatchRate::of(scores().map(|s| s.impostor_reconstructed)),
        })
    }
}

/// BOZORTH3's match threshold, as NIST uses it.
pub const MATCH_THRESHOLD: i32 = 40;

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
    /// Absent without the `nbis` feature or when no original has minutiae.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySummary>,
    pub images: Vec<ImageScore>,
}

/// Scores the reconstruction of each of `indices` of `dataset`; with `identity` (and the
/// `nbis` feature) also whether it is still the same finger.
pub fn score<B: Backend>(
    net: &mut Network<B>,
    dataset: &Dataset,
    indices: &[usize],
    normalization: Normalization,
    label: &str,
    identity: bool,
) -> Result<SetReport> {
    if indices.is_empty() {
        return Err(Error::EmptyDataDir {
            path: dataset.dir.clone(),
        });
    }
    let reconstructions = reconstruct(net, dataset, indices, normalization)?;
    let n = dataset.size * dataset.size;
    let identities = match identity {
        #[cfg(feature = "nbis")]
        true => crate::identity::scores(dataset, indices, &reconstructions),
        _ => vec![None; indices.len()],
    };
    let images: Vec<ImageScore> = indices
        .iter()
        .zip(reconstructions.chunks(n))
        .zip(identities)
        .map(|((&i, recon), identity)| {
            let (width, height) = dataset.extents[i];
            let original = dataset.region(i, dataset.image(i));
            let recon = dataset.region(i, recon);
            ImageScore {
                file: dataset.files[i].clone(),
                mse: metrics::mse(&original, &recon),
                psnr: metrics::psnr(&original, &recon),
                ssim: metrics::ssim(&original, &recon, width, height),
                identity,
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
        identity: IdentitySummary::of(&images),
        images,
    })
}

/// The validation split a checkpoint was trained with, as indices of its data folder (loaded
/// as `dataset`), split by its seed.
pub fn validation_indices(meta: &CheckpointMeta, dataset: &Dataset) -> Result<Vec<usize>> {
    let split = data::split(dataset.len(), meta.val_split, meta.seed, &meta.data_dir)?;
    Ok(split.validation)
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
    if reports.iter().any(|r| r.identity.is_some()) {
        out += &identity_table(reports);
    }
    out
}

/// "mean score / share above the threshold", or "-".
fn match_rate(rate: Option<MatchRate>) -> String {
    rate.map_or("-".into(), |r| {
        format!("{:.1} / {:.0}%", r.mean, 100.0 * r.share_above_threshold)
    })
}

/// The NBIS rows: BOZORTH3 mean score and share above the threshold per comparison.
fn identity_table(reports: &[SetReport]) -> String {
    let mut out = format!(
        "\nidentity kept (NIST NBIS: BOZORTH3 mean score / share above {MATCH_THRESHOLD}, the same finger)\n\
         {:<34} {:>6}  {:>16}  {:>16} {:>16}  {:>16} {:>16}\n",
        "set",
        "prints",
        "orig vs recon",
        "genuine: orig",
        "genuine: recon",
        "impostor: orig",
        "impostor: recon"
    );
    for r in reports {
        let Some(id) = &r.identity else { continue };
        out += &format!(
            "{:<34} {:>6}  {:>16}  {:>16} {:>16}  {:>16} {:>16}\n",
            r.label,
            id.kept.pairs,
            match_rate(Some(id.kept)),
            match_rate(id.genuine),
            match_rate(id.genuine_reconstructed),
            match_rate(id.impostor),
            match_rate(id.impostor_reconstructed),
        );
    }
    out
}

/// Writes the reports as JSON to `path` and one row per image as CSV beside it (.csv).
pub fn write(reports: &[SetReport], path: &Path) -> Result<PathBuf> {
    let json = serde_json::to_string_pretty(reports).expect("reports serialise");
    atomic::write_file(path, json.as_bytes())?;
    let csv_path = path.with_extension("csv");
    let mut csv = String::from(
        "set,file,mse,psnr,ssim,minutiae,reconstruction_minutiae,bozorth_kept,\
         bozorth_genuine,bozorth_genuine_reconstructed,bozorth_impostor,\
         bozorth_impostor_reconstructed\n",
    );
    let cell = |v: Option<i32>| v.map_or(String::new(), |v| v.to_string());
    for r in reports {
        for s in &r.images {
            let identity = s.identity.as_ref().map_or(",,,,,,".into(), |id| {
                format!(
                    "{},{},{},{},{},{},{}",
                    id.minutiae,
                    id.reconstruction_minutiae,
                    id.kept,
                    cell(id.genuine),
                    cell(id.genuine_reconstructed),
                    cell(id.impostor),
                    cell(id.impostor_reconstructed)
                )
            });
            csv += &format!(
                "{},{},{:.8},{},{:.6},{identity}\n",
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
    let n = dataset.size * dataset.size;
    let (mut originals, mut outputs, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (&i, recon) in indices.iter().zip(reconstructions.chunks(n)) {
        let (width, height) = dataset.extents[i];
        let (original, recon) = (
            dataset.region(i, dataset.image(i)),
            dataset.region(i, recon),
        );
        let (w, h) = (width as u32, height as u32);
        let name = dataset.files[i]
            .file_stem()
            .map_or(String::new(), |s| s.to_string_lossy().into_owned());
        let error: Vec<f32> = original
            .iter()
            .zip(&recon)
            .map(|(a, b)| (a - b).abs())
            .collect();
        originals.push(Panel {
            caption: name,
            image: gray(&original, w, h),
        });
        outputs.push(Panel {
            caption: format!(
                "SSIM {:.3}",
                metrics::ssim(&original, &recon, width, height)
            ),
            image: gray(&recon, w, h),
        });
        errors.push(Panel {
            caption: format!("MSE {:.4}", metrics::mse(&original, &recon)),
            image: colorize(&error, w, h),
        });
    }
    let rows = [
        ("original".to_string(), originals),
        ("reconstructed".to_string(), outputs),
        ("|error|".to_string(), errors),
    ];
    panel_grid(title, &rows, 128, true)
}
