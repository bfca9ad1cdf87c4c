//! Identity kept (the `nbis` feature): NIST NBIS on real prints from ../shared — a print
//! matches itself and another impression of its finger, not another finger — and on a
//! synthetic set with a manifest, the genuine and impostor scores `whorl eval` reports.
#![cfg(feature = "nbis")]

use std::path::Path;

use whorl::backend::cpu::CpuBackend;
use whorl::data::Dataset;
use whorl::evaluate::{self, EVAL_BATCH, MATCH_THRESHOLD};
use whorl::graph::Network;
use whorl::identity::{self, Minutiae};
use whorl::model::Architecture;
use whorl::normalize::Normalization;

const REAL: &str = "../shared/data/real-fingerprints";

/// The minutiae of every image of `dir` as `whorl eval` finds them: loaded at `size`, then
/// resized back to the file's own dimensions; by file name.
fn minutiae_of(dir: &Path, size: usize) -> Vec<(String, Minutiae)> {
    let dataset = Dataset::load(dir, size, false, false).unwrap();
    (0..dataset.len())
        .map(|i| {
            let file = &dataset.files[i];
            let native = image::image_dimensions(file).unwrap();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            let found =
                identity::minutiae(dataset.image(i), (size as u32, size as u32), native).unwrap();
            (name, found)
        })
        .collect()
}

fn named<'a>(found: &'a [(String, Minutiae)], name: &str) -> &'a Minutiae {
    &found.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn a_real_print_matches_itself_and_its_finger_but_not_another_finger() {
    let found = minutiae_of(&Path::new(REAL).join("fvc2002-db1b-kjanko"), 384);
    let (probe, mate, other) = (
        named(&found, "102_1.tif"),
        named(&found, "102_2.tif"),
        named(&found, "101_2.tif"),
    );
    assert!(probe.len() > 10, "MINDTCT found {} minutiae", probe.len());
    let itself = probe.score(probe);
    let genuine = probe.score(mate);
    let impostor = probe.score(other);
    assert!(itself > 4 * MATCH_THRESHOLD, "itself: {itself}");
    assert!(genuine > MATCH_THRESHOLD, "another impression: {genuine}");
    assert!(impostor < MATCH_THRESHOLD, "another finger: {impostor}");
}

#[test]
fn tiny_and_blank_images_get_no_score_instead_of_a_crash() {
    let side = identity::MIN_SIDE - 1;
    let tiny = vec![0.5; (side * side) as usize];
    assert!(identity::minutiae(&tiny, (side, side), (388, 374)).is_none());
    let blank = identity::minutiae(&vec![0.5; 64 * 64], (64, 64), (388, 374)).unwrap();
    assert!(blank.is_empty());
    let found = minutiae_of(&Path::new(REAL).join("fvc2002-db1b-kjanko"), 384);
    assert_eq!(blank.score(&found[0].1), 0);
}

/// Three fingers, two optical impressions each, with their manifest.json.
fn synthetic_set(dir: &Path) {
    let config = whorl::synth::SynthConfig {
        fingers: 3,
        impressions: 2,
        first_finger: 0,
        sensor: whorl::synth::sensor::sensor("optical").unwrap().clone(),
        seed: whorl::synth::DEFAULT_DATA_SEED,
    };
    whorl::synth::generate(dir, &config, false).unwrap();
}

#[test]
fn synthetic_sets_get_genuine_and_impostor_scores_from_their_manifest() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_set(dir.path());
    let dataset = Dataset::load(dir.path(), 256, false, false).unwrap();
    let all: Vec<usize> = (0..dataset.len()).collect();
    // A perfect reconstruction keeps identity fully; a blank one keeps none.
    let perfect = identity::scores(&dataset, &all, &dataset.pixels);
    let blank = identity::scores(&dataset, &all, &vec![0.5; dataset.pixels.len()]);
    for (p, b) in perfect.iter().zip(&blank) {
        let (p, b) = (p.as_ref().unwrap(), b.as_ref().unwrap());
        assert!(p.kept > MATCH_THRESHOLD, "{p:?}");
        assert_eq!(p.genuine, p.genuine_reconstructed);
        assert_eq!(p.impostor, p.impostor_reconstructed);
        assert!(p.genuine.is_some() && p.impostor.is_some(), "{p:?}");
        assert_eq!((b.kept, b.reconstruction_minutiae), (0, 0));
        assert_eq!(b.genuine_reconstructed, Some(0));
    }
}

#[test]
fn eval_reports_identity_beside_the_image_scores() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_set(dir.path());
    let size = 256;
    let dataset = Dataset::load(dir.path(), size, false, false).unwrap();
    let arch = Architecture::reference();
    let params = arch.glorot_uniform(1);
    let mut net = Network::new(CpuBackend::new(), arch, size, size, EVAL_BATCH, &params).unwrap();
    let all: Vec<usize> = (0..dataset.len()).collect();
    let report = evaluate::score(
        &mut net,
        &dataset,
        &all,
        Normalization::None,
        "synthetic",
        true,
    )
    .unwrap();

    let identity = report.identity.as_ref().unwrap();
    let scored = report
        .images
        .iter()
        .filter(|s| s.identity.is_some())
        .count();
    assert_eq!(identity.kept.pairs, scored);
    // An untrained model's flat output is no longer the finger; the originals still are.
    assert!(identity.kept.share_above_threshold == 0.0, "{identity:?}");
    let (genuine, impostor) = (identity.genuine.unwrap(), identity.impostor.unwrap());
    assert!(
        genuine.share_above_threshold > impostor.share_above_threshold,
        "{identity:?}"
    );
    assert!(evaluate::table(std::slice::from_ref(&report)).contains("identity kept"));

    let json = dir.path().join("scores.json");
    let csv = evaluate::write(std::slice::from_ref(&report), &json).unwrap();
    let csv = std::fs::read_to_string(csv).unwrap();
    assert!(csv.lines().next().unwrap().contains(",bozorth_kept,"));
    assert_eq!(csv.lines().count(), 1 + dataset.len());
}
