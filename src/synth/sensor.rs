//! Sensor profiles: how a family of fingerprint sensors renders a finger, and the file format
//! it writes. Training and validation use one family, testing an unseen one, as in the
//! reference protocol.

use image::ImageFormat;

/// What a sensor changes: image size, file format, background and ridge gray levels (with
/// per-impression jitter), blur, pixel noise, row striping, ridge texture, background
/// blotches and gamma; and how much of the skin's own variety it shows (ridge width and ink
/// varying across the finger, creases, scars), which the optical and capacitive profiles leave
/// out so that their images stay those of generator version 2.
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
    /// How far the ridge/valley threshold wanders across the finger, so ridges thicken and thin
    /// from place to place (0: not at all; the threshold's own range is about -0.4..0.4).
    pub width_variation: f32,
    /// How much the ink's density fades across the finger: 0 not at all, 1 from full to none.
    pub contrast_variation: f32,
    /// The most creases (thin light lines across the ridges, mostly near-horizontal) a finger
    /// has; each finger has between none and this many, on every impression.
    pub creases: usize,
    /// The chance that a finger has a scar (a short light curved stroke), on every impression.
    pub scar_chance: f32,
}

/// The sensor families whorl can imitate.
pub const SENSORS: [Sensor; 4] = [
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
        width_variation: 0.0,
        contrast_variation: 0.0,
        creases: 0,
        scar_chance: 0.0,
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
        width_variation: 0.0,
        contrast_variation: 0.0,
        creases: 0,
        scar_chance: 0.0,
    },
    Sensor {
        name: "ink",
        summary: "ink on a card, scanned at 500 dpi like the NIST special databases: 320x360, \
                  8-bit .png, off-white paper with smudges, heavy uneven ink (ridges thick and \
                  merged in places, faded in others), creases and scars",
        width: 320,
        height: 360,
        format: ImageFormat::Png,
        extension: "png",
        background: 218.0,
        background_jitter: 14.0,
        ridge: 38.0,
        ridge_jitter: 18.0,
        blur: 0.9,
        noise: 5.0,
        row_stripes: 0.0,
        ridge_texture: 0.7,
        blotches: 18.0,
        gamma: 0.9,
        width_variation: 0.35,
        contrast_variation: 0.45,
        creases: 5,
        scar_chance: 0.4,
    },
    Sensor {
        name: "strip",
        summary: "narrow strip of a swipe sensor's reassembled frames, like libfprint's UPEK \
                  TouchStrip image: 144x384, 8-bit .png, light gray, low contrast (pale ridges \
                  on a light background), faint row seams, ridge width and ink varying along \
                  the finger",
        width: 144,
        height: 384,
        format: ImageFormat::Png,
        extension: "png",
        background: 228.0,
        background_jitter: 6.0,
        ridge: 155.0,
        ridge_jitter: 10.0,
        blur: 0.5,
        noise: 3.0,
        row_stripes: 2.5,
        ridge_texture: 0.2,
        blotches: 4.0,
        gamma: 1.0,
        width_variation: 0.25,
        contrast_variation: 0.3,
        creases: 2,
        scar_chance: 0.1,
    },
];

/// The sensor called `name`.
pub fn sensor(name: &str) -> Option<&'static Sensor> {
    SENSORS.iter().find(|s| s.name == name)
}
