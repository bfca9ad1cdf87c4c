//! Fuzzing: thousands of mutated copies of valid files fed to the image loader, the safetensors
//! reader and checkpoint.json parsing. Seeded, so a failure repeats; bounded in count and time,
//! so the suite stays fast on a busy machine. Every input must give a value or an error, never
//! a panic or an abort.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use whorl::checkpoint::{self, Checkpoint, CheckpointMeta};
use whorl::model::Architecture;

/// Inputs per target, unless the time budget runs out first; the fewest it must have seen.
const INPUTS: usize = 2000;
const BUDGET: Duration = Duration::from_secs(6);
const AT_LEAST: usize = 1000;

/// Values that break size arithmetic when they land in a length or count.
const EXTREMES: [u64; 6] = [0, 1, 0x7fff_ffff, 0xffff_ffff, 1 << 53, u64::MAX];

/// One random mutation of `bytes`; `hot` is the length of the prefix most mutations hit (the
/// header, where lengths and offsets live).
fn mutate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>, hot: usize) {
    let len = bytes.len().max(1);
    let at = if rng.random_bool(0.8) {
        rng.random_range(0..hot.clamp(1, len))
    } else {
        rng.random_range(0..len)
    };
    match rng.random_range(0..6) {
        0 if !bytes.is_empty() => bytes[at] ^= 1 << rng.random_range(0..8),
        1 if !bytes.is_empty() => bytes[at] = rng.random(),
        2 => {
            let value = EXTREMES[rng.random_range(0..EXTREMES.len())].to_le_bytes();
            let width = [2, 4, 8][rng.random_range(0..3)];
            for (i, b) in value.iter().take(width).enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        3 => bytes.truncate(at),
        4 => {
            let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
            let at = at.min(bytes.len());
            bytes.splice(at..at, extra);
        }
        _ => {
            let end = (at + rng.random_range(1..64)).min(bytes.len());
            let at = at.min(end);
            bytes.drain(at..end);
        }
    }
}

/// Feeds `check` mutated copies of the seeds until the budget is spent; returns the count.
fn fuzz(seeds: &[Vec<u8>], hot: usize, seed: u64, mut check: impl FnMut(&[u8])) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let started = Instant::now();
    let mut count = 0;
    while count < INPUTS && started.elapsed() < BUDGET {
        let mut bytes = seeds[count % seeds.len()].clone();
        for _ in 0..rng.random_range(1..5) {
            mutate(&mut rng, &mut bytes, hot);
        }
        check(&bytes);
        count += 1;
    }
    count
}

#[test]
fn the_image_loader_survives_thousands_of_mutated_images() {
    let dir = tempfile::tempdir().unwrap();
    let image = image::GrayImage::from_fn(12, 10, |x, y| image::Luma([(x * 20 + y) as u8]));
    let formats = ["png", "bmp", "tif", "pgm", "jpg"];
    let seeds: Vec<Vec<u8>> = formats
        .iter()
        .map(|ext| {
            let path = dir.path().join(format!("seed.{ext}"));
            image.save(&path).unwrap();
            std::fs::read(&path).unwrap()
        })
        .collect();
    let mut n = 0;
    let count = fuzz(&seeds, 64, 1, |bytes| {
        let path = dir
            .path()
            .join(format!("input.{}", formats[n % formats.len()]));
        n += 1;
        std::fs::write(&path, bytes).unwrap();
        if let Ok(pixels) = whorl::data::load_image(&path, 8) {
            assert_eq!(pixels.len(), 64);
        }
    });
    assert!(count >= AT_LEAST, "only {count} images in {BUDGET:?}");
}

fn write_valid_checkpoint(dir: &Path) {
    let arch = Architecture::reference();
    let mut meta = CheckpointMeta::new(&arch);
    meta.input_size = 16;
    let saved = Checkpoint {
        meta,
        params: arch.glorot_uniform(3),
        velocity: vec![0.0; arch.param_count()],
        momentum: Vec::new(),
    };
    checkpoint::save(dir, &arch, &saved).unwrap();
}

#[test]
fn the_safetensors_reader_survives_thousands_of_mutated_files() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved");
    write_valid_checkpoint(&saved);
    let weights = std::fs::read(saved.join(checkpoint::WEIGHTS_FILE)).unwrap();
    // A small file of the same layout keeps each input cheap; the whole one is fuzzed too,
    // less often.
    let conv6_bias =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &[0, 0, 128, 63])
            .unwrap();
    let small = safetensors::serialize([("conv6.bias", conv6_bias)], None).unwrap();
    let header = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    let mut seeds = vec![small; 15];
    seeds.push(weights);
    let arch = Architecture::reference();
    let path = dir.path().join("input.safetensors");
    let count = fuzz(&seeds, header, 2, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        if let Ok(tensors) = checkpoint::read_tensors(&path)
            && let Ok(flat) = checkpoint::flatten_params(&arch, &tensors, "", &path)
        {
            assert_eq!(flat.len(), arch.param_count());
        }
    });
    assert!(count >= AT_LEAST, "only {count} files in {BUDGET:?}");
}

#[test]
fn checkpoint_json_parsing_survives_thousands_of_mutated_files() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    write_valid_checkpoint(&ckpt);
    let meta_path = ckpt.join(checkpoint::META_FILE);
    let seed = std::fs::read(&meta_path).unwrap();
    // Besides byte mutations, every field set to values that break size arithmetic.
    let json: serde_json::Value = serde_json::from_slice(&seed).unwrap();
    let mut seeds = vec![seed.clone()];
    for field in json.as_object().unwrap().keys() {
        for value in [
            "0",
            "-1",
            "1e308",
            "18446744073709551615",
            "1000000000",
            "null",
            "\"x\"",
        ] {
            let mut changed = json.clone();
            changed[field] = serde_json::from_str(value).unwrap();
            seeds.push(changed.to_string().into_bytes());
        }
    }
    let arch = Architecture::reference();
    let count = fuzz(&seeds, seed.len(), 3, |bytes| {
        std::fs::write(&meta_path, bytes).unwrap();
        if let Ok(loaded) = checkpoint::load(&ckpt, &arch) {
            assert!(loaded.meta.batch_size > 0 && loaded.meta.input_size % 4 == 0);
        }
    });
    assert!(count >= AT_LEAST, "only {count} files in {BUDGET:?}");
}
