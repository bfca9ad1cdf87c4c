//! MSE, PSNR and SSIM against scikit-image.

use whorl::metrics::{mse, psnr, ssim};

fn gray(path: &str) -> (Vec<f32>, usize, usize) {
    let image = image::open(path).unwrap().to_luma32f();
    let (w, h) = image.dimensions();
    (image.into_raw(), w as usize, h as usize)
}

#[test]
fn identical_images_are_perfect() {
    let (a, w, h) = gray("tests/data/ssim-original.png");
    assert_eq!(mse(&a, &a), 0.0);
    assert_eq!(psnr(&a, &a), f64::INFINITY);
    assert!((ssim(&a, &a, w, h) - 1.0).abs() < 1e-12);
}

/// The expected values were computed with scikit-image 0.26.0 on the same PNGs read as
/// 8-bit gray and divided by 255:
///   structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
///                         use_sample_covariance=False)
///   peak_signal_noise_ratio(x, y, data_range=1.0); mean_squared_error(x, y)
#[test]
fn a_reconstruction_scores_as_scikit_image_scores_it() {
    let (a, w, h) = gray("tests/data/ssim-original.png");
    let (b, _, _) = gray("tests/data/ssim-reconstruction.png");
    assert_eq!((w, h), (64, 56));
    assert!((mse(&a, &b) - 0.008779890632723678).abs() < 1e-9);
    assert!((psnr(&a, &b) - 20.56510893877546).abs() < 1e-6);
    assert!(
        (ssim(&a, &b, w, h) - 0.7277616317480012).abs() < 1e-6,
        "{}",
        ssim(&a, &b, w, h)
    );
    // Symmetric, and worse for a worse reconstruction.
    assert!((ssim(&b, &a, w, h) - ssim(&a, &b, w, h)).abs() < 1e-12);
    let flat = vec![0.5f32; a.len()];
    assert!(ssim(&a, &flat, w, h) < 0.1);
}
