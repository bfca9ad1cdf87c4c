//! Image-quality metrics of a reconstruction against its original, both in [0, 1]:
//! MSE, PSNR and SSIM, computed as scikit-image computes them.

/// Mean of (a - b)^2.
pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x - y) * f64::from(x - y))
        .sum();
    sum / a.len() as f64
}

/// Peak signal-to-noise ratio in dB for data range 1: 10 log10(1 / MSE); infinite for
/// identical images.
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    let error = mse(a, b);
    if error == 0.0 {
        f64::INFINITY
    } else {
        -10.0 * error.log10()
    }
}

/// The normalised 1-D Gaussian of scipy.ndimage.gaussian_filter: sigma 1.5, truncated at 3.5
/// sigma (radius 5, an 11-tap window).
fn gaussian_taps() -> [f64; 11] {
    let sigma = 1.5f64;
    let mut taps = [0.0; 11];
    for (i, t) in taps.iter_mut().enumerate() {
        let x = i as f64 - 5.0;
        *t = (-0.5 * x * x / (sigma * sigma)).exp();
    }
    let total: f64 = taps.iter().sum();
    taps.map(|t| t / total)
}

/// scipy's 'reflect' boundary (d c b a | a b c d | d c b a) for index i in 0..n.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let period = 2 * n;
    let i = i.rem_euclid(period);
    (if i < n { i } else { period - 1 - i }) as usize
}

/// Separable Gaussian filter of a row-major width x height image, reflect boundary.
fn gaussian_filter(image: &[f64], width: usize, height: usize) -> Vec<f64> {
    let taps = gaussian_taps();
    let mut rows = vec![0.0; image.len()];
    for y in 0..height {
        for x in 0..width {
            rows[y * width + x] = (0..11)
                .map(|k| taps[k] * image[y * width + reflect(x as isize + k as isize - 5, width)])
                .sum();
        }
    }
    let mut out = vec![0.0; image.len()];
    for y in 0..height {
        for x in 0..width {
            out[y * width + x] = (0..11)
                .map(|k| taps[k] * rows[reflect(y as isize + k as isize - 5, height) * width + x])
                .sum();
        }
    }
    out
}

/// Mean structural similarity (Wang, Bovik, Sheikh and Simoncelli, 2004) as scikit-image's
/// structural_similarity(a, b, data_range=1, gaussian_weights=True, sigma=1.5,
/// use_sample_covariance=False): Gaussian-weighted local means, variances and covariance,
/// K1 = 0.01, K2 = 0.03, averaged over the image less a 5-pixel border.
pub fn ssim(a: &[f32], b: &[f32], width: usize, height: usize) -> f64 {
    assert!(
        width > 10 && height > 10,
        "SSIM needs images larger than its 11x11 window"
    );
    let x: Vec<f64> = a.iter().map(|&v| f64::from(v)).collect();
    let y: Vec<f64> = b.iter().map(|&v| f64::from(v)).collect();
    let product = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(u, v)| u * v).collect::<Vec<_>>();
    let (ux, uy) = (
        gaussian_filter(&x, width, height),
        gaussian_filter(&y, width, height),
    );
    let uxx = gaussian_filter(&product(&x, &x), width, height);
    let uyy = gaussian_filter(&product(&y, &y), width, height);
    let uxy = gaussian_filter(&product(&x, &y), width, height);
    let (c1, c2) = (0.01f64 * 0.01, 0.03f64 * 0.03);
    let mut total = 0.0;
    let mut count = 0usize;
    for row in 5..height - 5 {
        for col in 5..width - 5 {
            let i = row * width + col;
            let (vx, vy, vxy) = (
                uxx[i] - ux[i] * ux[i],
                uyy[i] - uy[i] * uy[i],
                uxy[i] - ux[i] * uy[i],
            );
            let numerator = (2.0 * ux[i] * uy[i] + c1) * (2.0 * vxy + c2);
            let denominator = (ux[i] * ux[i] + uy[i] * uy[i] + c1) * (vx + vy + c2);
            total += numerator / denominator;
            count += 1;
        }
    }
    total / count as f64
}
