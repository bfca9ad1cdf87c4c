//! The skin's own variety, beyond the ridge pattern: ridge width and ink that vary across the
//! finger (per impression: pressure and ink differ each time), and creases and scars (per
//! finger: they are on every impression). All in master coordinates, so they move with the
//! finger. Drawn from their own random streams, never from the impression's, so a sensor that
//! shows none of it renders exactly as it did before they existed.

use rand::Rng;

use super::ValueNoise;
use super::sensor::Sensor;

/// A crease: a thin light line through `point` along `direction` (a unit vector).
#[derive(Clone, Debug)]
struct Crease {
    point: (f32, f32),
    direction: (f32, f32),
    half_width: f32,
    strength: f32,
}

/// A scar: a light stroke along an arc of a circle, between two angles.
#[derive(Clone, Debug)]
struct Scar {
    center: (f32, f32),
    radius: f32,
    angles: (f32, f32),
    half_width: f32,
    strength: f32,
}

/// One finger's creases and scars, as a sensor with `creases` and `scar_chance` shows them.
#[derive(Clone, Debug, Default)]
pub struct Marks {
    creases: Vec<Crease>,
    scars: Vec<Scar>,
}

impl Marks {
    /// Draws the marks of a finger whose master is `width` x `height` pixels.
    pub fn draw(sensor: &Sensor, width: f32, height: f32, rng: &mut impl Rng) -> Marks {
        let count = match sensor.creases {
            0 => 0,
            most => rng.random_range(0..=most),
        };
        let creases = (0..count)
            .map(|_| {
                // Mostly across the finger, like flexion creases; a few at steeper angles.
                let angle: f32 = rng.random_range(-0.5f32..0.5);
                Crease {
                    point: (
                        width * rng.random_range(0.3..0.7),
                        height * rng.random_range(0.35..0.85),
                    ),
                    direction: (angle.cos(), angle.sin()),
                    half_width: rng.random_range(0.8..2.5),
                    strength: rng.random_range(0.5..1.0),
                }
            })
            .collect();
        let scars = match rng.random_bool(f64::from(sensor.scar_chance)) {
            false => Vec::new(),
            true => {
                let start: f32 = rng.random_range(0.0..std::f32::consts::TAU);
                vec![Scar {
                    center: (
                        width * rng.random_range(0.3..0.7),
                        height * rng.random_range(0.3..0.7),
                    ),
                    radius: rng.random_range(25.0..70.0),
                    angles: (start, start + rng.random_range(0.4..1.4)),
                    half_width: rng.random_range(2.0..4.5),
                    strength: rng.random_range(0.7..1.0),
                }]
            }
        };
        Marks { creases, scars }
    }

    /// The share of the ink that remains at master pixel (x, y): 1 away from every mark, down
    /// to 1 - strength on one.
    pub fn ink_left(&self, x: f32, y: f32) -> f32 {
        let mut left = 1.0f32;
        for crease in &self.creases {
            let (dx, dy) = (x - crease.point.0, y - crease.point.1);
            let distance = (dx * crease.direction.1 - dy * crease.direction.0).abs();
            left *= 1.0 - crease.strength * fade(distance, crease.half_width);
        }
        for scar in &self.scars {
            let (dx, dy) = (x - scar.center.0, y - scar.center.1);
            let mut angle = dy.atan2(dx);
            if angle < scar.angles.0 {
                angle += std::f32::consts::TAU;
            }
            if angle <= scar.angles.1 {
                let distance = ((dx * dx + dy * dy).sqrt() - scar.radius).abs();
                left *= 1.0 - scar.strength * fade(distance, scar.half_width);
            }
        }
        left
    }

    /// How many creases and scars there are.
    pub fn count(&self) -> (usize, usize) {
        (self.creases.len(), self.scars.len())
    }
}

/// 1 on a line, falling smoothly to 0 at `half_width` from it.
fn fade(distance: f32, half_width: f32) -> f32 {
    let t = (1.0 - distance / half_width).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// How ridge width and ink vary across the finger in one impression.
#[derive(Clone, Debug)]
pub struct Variation {
    width: ValueNoise,
    ink: ValueNoise,
    width_amount: f32,
    ink_amount: f32,
}

impl Variation {
    /// Draws the variation of one impression of a `width` x `height` master.
    pub fn draw(sensor: &Sensor, width: f32, height: f32, rng: &mut impl Rng) -> Variation {
        Variation {
            width: ValueNoise::new(rng, width, height, 110.0),
            ink: ValueNoise::new(rng, width, height, 90.0),
            width_amount: sensor.width_variation,
            ink_amount: sensor.contrast_variation,
        }
    }

    /// How far the ridge/valley threshold moves at master pixel (x, y).
    pub fn threshold_shift(&self, x: f32, y: f32) -> f32 {
        self.width_amount * self.width.at(x, y)
    }

    /// The share of the ink that takes at master pixel (x, y).
    pub fn ink(&self, x: f32, y: f32) -> f32 {
        1.0 - self.ink_amount * 0.5 * (1.0 + self.ink.at(x, y))
    }
}

/// What of the skin's variety one impression shows: nothing, for sensors that show none.
#[derive(Clone, Debug, Default)]
pub struct Skin {
    pub marks: Marks,
    pub variation: Option<Variation>,
}

impl Skin {
    /// Whether `sensor` shows any of the skin's variety.
    pub fn shown_by(sensor: &Sensor) -> bool {
        sensor.width_variation > 0.0
            || sensor.contrast_variation > 0.0
            || sensor.creases > 0
            || sensor.scar_chance > 0.0
    }
}
