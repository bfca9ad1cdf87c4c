//! Sensor profiles: how a family of fingerprint sensors renders a finger, and the file format
//! it writes. Training and validation use one family, testing an unseen one, as in the
//! reference protocol.

use image::ImageFormat;

/// What a sensor changes: image size, file format, background and ridge gray levels (with
/// per-impression jitter), blur, pixel noise, row striping, ridge texture, background
/// blotches and gamma.
#[derive(Clone, Debug, PartialEq)]
pub struct Sensor {
    pub name: &'static str,
    pub summary: &'static str,
    pub width: usize,
    pub height: usize,
    pub format: ImageFormat,
    pub extension: &'static str,
    pub background: f32,
    pub background_jitter: f32,
    pub ridge: f32,
    pub ridge_jitter: f32,
    /// Gaussian blur sigma in pixels (0: none).
    pub blur: f32,
    /// Per-pixel Gaussian noise, gray levels.
    pub noise: f32,
    /// Per-row offset noise, gray levels (line-scanning sensors).
    pub row_stripes: f32,
    /// How strongly ink varies along ridges (pores, uneven contact): 0 none, 1 full.
    pub ridge_texture: f32,
    /// Amplitude of slow background variation (residue, uneven lighting), gray levels.
    pub blotches: f32,
    pub gamma: f32,
}

/// The sensor families whorl can imitate.
pub const SENSORS: [Sensor; 2] = [
    Sensor {
        name: "optical",
        summary: "FTIR optical scanner like FVC2002 DB1: 388x374, 8-bit .tif, near-white background, \
                  dark high-contrast ridges broken by pores and uneven contact, slight blur, \
                  low noise",
        width: 388,
        height: 374,
        format: ImageFormat::Tiff,
        extension: "tif",
        background: 238.0,
        background_jitter: 8.0,
        ridge: 45.0,
        ridge_jitter: 15.0,
        blur: 0.6,
        noise: 4.0,
        row_stripes: 0.0,
        ridge_texture: 0.6,
        blotches: 8.0,
        gamma: 1.0,
    },
    Sensor {
        name: "capacitive",
        summary: "solid-state capacitive sensor: 256x288, 8-bit .bmp, gray background, lower \
                  contrast, grainy pixel noise and row striping, no blur",
        width: 256,
        height: 288,
        format: ImageFormat::Bmp,
        extension: "bmp",
        background: 185.0,
        background_jitter: 8.0,
        ridge: 95.0,
        ridge_jitter: 12.0,
        blur: 0.0,
        noise: 11.0,
        row_stripes: 5.0,
        ridge_texture: 0.25,
        blotches: 6.0,
        gamma: 1.25,
    },
];

/// The sensor called `name`.
pub fn sensor(name: &str) -> Option<&'static Sensor> {
    SENSORS.iter().find(|s| s.name == name)
}
