//! The image loader and the train/validation split.

mod common;

use std::path::Path;

use image::{ImageBuffer, Luma, Rgb};
use whorl::Error;
use whorl::data::{
    Dataset, MAX_DEPTH, epoch_order, find_images, images_needed, load_image, load_native_image,
    split, walk_images,
};

#[test]
fn every_format_decodes_to_grayscale_in_unit_range() {
    let dir = tempfile::tempdir().unwrap();
    let gray8 = ImageBuffer::from_fn(8, 8, |x, _| Luma([(x * 32) as u8]));
    let gray16: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(8, 8, |x, _| Luma([if x < 4 { 0 } else { 65535 }]));
    let colour = ImageBuffer::from_fn(8, 8, |_, _| Rgb([200u8, 200, 200]));
    gray8.save(dir.path().join("a.tif")).unwrap();
    gray16.save(dir.path().join("b.tiff")).unwrap();
    gray8.save(dir.path().join("c.bmp")).unwrap();
    colour.save(dir.path().join("d.png")).unwrap();
    gray8.save(dir.path().join("e.jpg")).unwrap();
    gray8.save(dir.path().join("f.pgm")).unwrap();
    gray8.save(dir.path().join("G.PNG")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();

    let files = find_images(dir.path()).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "G.PNG", "a.tif", "b.tiff", "c.bmp", "d.png", "e.jpg", "f.pgm"
        ]
    );
    for file in &files {
        let pixels = load_image(file, 8).unwrap();
        assert_eq!(pixels.len(), 64, "{file:?}");
        assert!(pixels.iter().all(|v| (0.0..=1.0).contains(v)), "{file:?}");
    }
    let sixteen = load_image(&dir.path().join("b.tiff"), 8).unwrap();
    assert_eq!((sixteen[0], sixteen[7]), (0.0, 1.0));
    let eight = load_image(&dir.path().join("a.tif"), 8).unwrap();
    assert!((eight[1] - 32.0 / 255.0).abs() < 1e-6);
    let grey = load_image(&dir.path().join("d.png"), 8).unwrap();
    assert!((grey[0] - 200.0 / 255.0).abs() < 1e-3);
    // Resizing keeps a flat image flat.
    let resized = load_image(&dir.path().join("d.png"), 12).unwrap();
    assert_eq!(resized.len(), 144);
    assert!(resized.iter().all(|v| (v - grey[0]).abs() < 1e-3));
}

#[test]
fn real_fingerprints_load_when_shared_data_is_present() {
    let shared = Path::new("../shared/data/real-fingerprints");
    if !shared.is_dir() {
        let why = format!(
            "{} not found (it sits beside the clone in CI)",
            shared.display()
        );
        common::skipped("real_fingerprints_load_when_shared_data_is_present", &why);
        return;
    }
    let dataset = Dataset::load(shared, 64, false, false).unwrap();
    assert!(dataset.len() >= 20, "{} images", dataset.len());
    for i in 0..dataset.len() {
        let image = dataset.image(i);
        let mean = image.iter().sum::<f32>() / image.len() as f32;
        let spread = image.iter().fold(0.0f32, |m, v| m.max((v - mean).abs()));
        assert!(spread > 0.1, "{:?} looks blank", dataset.files[i]);
    }
}

#[test]
fn a_file_that_fails_to_decode_is_named_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    common::write_striped_images(dir.path(), 3, 16);
    std::fs::write(dir.path().join("broken.png"), b"\x89PNG but not really").unwrap();
    let error = Dataset::load(dir.path(), 16, false, false).err().unwrap();
    assert!(matches!(error, Error::BadImage { .. }));
    let message = error.to_string();
    assert!(
        message.contains("broken.png") && message.contains("--skip-bad"),
        "{message}"
    );

    let dataset = Dataset::load(dir.path(), 16, true, false).unwrap();
    assert_eq!(dataset.len(), 3);
    assert_eq!(dataset.skipped.len(), 1);
    assert!(dataset.skipped[0].0.ends_with("broken.png"));
}

#[test]
fn empty_and_missing_folders_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let error = Dataset::load(dir.path(), 16, false, false).err().unwrap();
    assert!(matches!(error, Error::EmptyDataDir { .. }));
    let missing = dir.path().join("nope");
    let message = Dataset::load(&missing, 16, false, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        message.contains("--data") && message.contains("nope"),
        "{message}"
    );
}

#[test]
fn split_is_seeded_disjoint_and_complete() {
    let dir = Path::new("data");
    let s = split(10, 0.2, 13, dir).unwrap();
    assert_eq!((s.train.len(), s.validation.len()), (8, 2));
    assert_eq!(s, split(10, 0.2, 13, dir).unwrap());
    assert_ne!(s, split(10, 0.2, 14, dir).unwrap());
    let mut all: Vec<usize> = s.train.iter().chain(&s.validation).copied().collect();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    // ceil, as scikit-learn: 11 images -> 3 for validation.
    assert_eq!(split(11, 0.2, 13, dir).unwrap().validation.len(), 3);
    assert_eq!(split(5, 0.0, 13, dir).unwrap().validation.len(), 0);
}

#[test]
fn too_few_images_or_a_bad_fraction_are_errors() {
    assert_eq!(images_needed(0.2), 2);
    assert_eq!(images_needed(0.0), 1);
    assert_eq!(images_needed(0.6), 3);
    let error = split(1, 0.2, 13, Path::new("prints")).unwrap_err();
    assert!(matches!(
        error,
        Error::TooFewImages {
            found: 1,
            needed: 2,
            ..
        }
    ));
    assert!(error.to_string().contains("prints"));
    for bad in [1.0, -0.1, f64::NAN] {
        let message = split(10, bad, 13, Path::new("x")).unwrap_err().to_string();
        assert!(message.contains("--val-split"), "{message}");
    }
}

#[test]
fn epoch_orders_are_seeded_permutations_that_change_every_epoch() {
    let train: Vec<usize> = (0..50).collect();
    let first = epoch_order(&train, 13, 0);
    assert_eq!(first, epoch_order(&train, 13, 0));
    assert_ne!(first, epoch_order(&train, 13, 1));
    assert_ne!(first, epoch_order(&train, 14, 0));
    let mut sorted = first.clone();
    sorted.sort();
    assert_eq!(sorted, train);
}

#[cfg(unix)]
#[test]
fn the_walk_visits_each_image_once_through_link_loops_and_passes_over_fifos() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    common::write_striped_images(dir.path(), 3, 8);
    symlink(".", dir.path().join("self")).unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    common::write_striped_images(&dir.path().join("a/b"), 1, 8);
    // Two folders linking to each other's parents: a loop that grows without dedup.
    symlink("../..", dir.path().join("a/b/up")).unwrap();
    symlink("../a", dir.path().join("a/again")).unwrap();
    let fifo = dir.path().join("pipe.png");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );

    let walk = walk_images(dir.path(), false).unwrap();
    assert_eq!(walk.files.len(), 4, "{:?}", walk.files);
    assert!(
        walk.files
            .iter()
            .all(|f| !f.starts_with(dir.path().join("self")))
    );
    let reason = |name: &str| {
        walk.skipped
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .map(|(_, r)| r.clone())
    };
    assert_eq!(reason("pipe.png").as_deref(), Some("not a regular file"));
    assert!(reason("self").unwrap().contains("already visited"));
    // A FIFO is never opened, so loading does not hang.
    let dataset = Dataset::load(dir.path(), 8, false, false).unwrap();
    assert_eq!(dataset.len(), 4);
}

#[cfg(unix)]
#[test]
fn a_dangling_link_is_an_error_or_skipped_with_skip_bad() {
    let dir = tempfile::tempdir().unwrap();
    common::write_striped_images(dir.path(), 2, 8);
    std::os::unix::fs::symlink("nowhere.png", dir.path().join("gone.png")).unwrap();
    let error = Dataset::load(dir.path(), 8, false, false).err().unwrap();
    assert!(matches!(&error, Error::BadImage { path, .. } if path.ends_with("gone.png")));
    assert!(error.to_string().contains("--skip-bad"), "{error}");
    let dataset = Dataset::load(dir.path(), 8, true, false).unwrap();
    assert_eq!(dataset.len(), 2);
    assert!(dataset.skipped.iter().any(|(p, _)| p.ends_with("gone.png")));
}

#[test]
fn folders_nested_deeper_than_the_bound_are_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut deep = dir.path().to_path_buf();
    for _ in 0..MAX_DEPTH + 1 {
        deep.push("d");
    }
    common::write_striped_images(&deep, 1, 8);
    common::write_striped_images(dir.path(), 1, 8);
    let walk = walk_images(dir.path(), false).unwrap();
    assert_eq!(walk.files.len(), 1);
    assert!(
        walk.skipped
            .iter()
            .any(|(_, reason)| reason.contains("too deep"))
    );
}

#[test]
fn a_data_set_too_large_for_memory_is_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    common::write_striped_images(dir.path(), 2, 8);
    // 2 images of 2^20 x 2^20 pixels: 8 TiB.
    let error = Dataset::load(dir.path(), 1 << 20, false, false)
        .err()
        .unwrap();
    let message = error.to_string();
    assert!(
        message.starts_with("--size") && message.contains("memory"),
        "{message}"
    );
}

#[test]
fn an_image_with_nan_pixels_is_named_not_trained_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut pixels = image::Rgb32FImage::from_pixel(8, 8, Rgb([0.5, 0.5, 0.5]));
    pixels.put_pixel(3, 3, Rgb([f32::NAN, 0.5, 0.5]));
    let path = dir.path().join("float.tif");
    image::DynamicImage::ImageRgb32F(pixels)
        .save(&path)
        .unwrap();
    let error = load_image(&path, 8).err().unwrap();
    assert!(matches!(&error, Error::BadImage { path: p, .. } if *p == path));
    assert!(error.to_string().contains("NaN"), "{error}");
}

#[test]
fn native_resolution_keeps_each_image_whole_on_an_edge_padded_canvas() {
    let dir = tempfile::tempdir().unwrap();
    let shapes = [(30u32, 20u32), (17, 41)];
    for (k, &(w, h)) in shapes.iter().enumerate() {
        let image = ImageBuffer::from_fn(w, h, |x, y| {
            Luma([((x * 7 + y * 3 + k as u32) % 256) as u8])
        });
        image.save(dir.path().join(format!("{k}.png"))).unwrap();
    }
    let mut set = Dataset::load_native(dir.path(), 4, false, false, "--native-resolution").unwrap();
    assert_eq!(
        set.size, 44,
        "the largest side, 41, rounded up to a multiple of 4"
    );
    for round in 0..2 {
        for (i, file) in set.files.clone().iter().enumerate() {
            let (width, height, own) = load_native_image(file).unwrap();
            assert_eq!(set.extents[i], (width, height));
            assert_eq!(set.region(i, set.image(i)), own, "round {round}");
            let canvas = set.image(i);
            let last = own[(height - 1) * width + width - 1];
            assert_eq!(
                canvas[set.size * set.size - 1],
                last,
                "the corner repeats the last pixel"
            );
            assert_eq!(
                canvas[set.size - 1],
                own[width - 1],
                "the first row repeats its end"
            );
        }
        set.pad_to(52);
    }
    assert_eq!(set.size, 52);
}

#[test]
fn crop_windows_lie_inside_each_image_are_repeatable_and_centred_for_validation() {
    let extent = (388, 374);
    let mut corners = std::collections::HashSet::new();
    for epoch in 0..3 {
        for index in 0..20 {
            let (x, y) = whorl::data::crop_origin(extent, 128, 13, Some(epoch), index);
            assert!(x + 128 <= 388 && y + 128 <= 374, "({x}, {y})");
            assert_eq!(
                (x, y),
                whorl::data::crop_origin(extent, 128, 13, Some(epoch), index)
            );
            corners.insert((x, y));
        }
    }
    assert!(
        corners.len() > 50,
        "only {} distinct windows of 60",
        corners.len()
    );
    assert_eq!(
        whorl::data::crop_origin(extent, 128, 13, None, 5),
        (130, 123)
    );
    // Narrower than the window: it starts at the left edge, the canvas's padding fills the rest.
    assert_eq!(
        whorl::data::crop_origin((100, 300), 128, 13, Some(2), 1).0,
        0
    );

    // gather_crops copies exactly the window.
    let dir = tempfile::tempdir().unwrap();
    let image = image::GrayImage::from_fn(12, 8, |x, y| image::Luma([(10 * x + y) as u8]));
    image.save(dir.path().join("a.png")).unwrap();
    let set = Dataset::load_native(dir.path(), 4, false, false, "--crop").unwrap();
    let mut batch = Vec::new();
    set.gather_crops(&[0], &[(3, 2)], 4, &mut batch);
    let expected: Vec<f32> = (2..6)
        .flat_map(|y| (3..7).map(move |x| (10 * x + y) as f32 / 255.0))
        .collect();
    assert_eq!(batch, expected);
}
