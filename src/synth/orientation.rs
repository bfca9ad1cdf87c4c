//! Where ridges run: the fingerprint class, its singular points (cores and deltas) and the
//! orientation field they induce (Sherlock and Monro's zero-pole model), with an arch term for
//! the classes that have no singular point.

use std::f32::consts::PI;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::gaussian;

/// The five Henry classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FingerClass {
    Arch,
    TentedArch,
    LeftLoop,
    RightLoop,
    Whorl,
}

impl FingerClass {
    pub const ALL: [FingerClass; 5] = [
        FingerClass::Arch,
        FingerClass::TentedArch,
        FingerClass::LeftLoop,
        FingerClass::RightLoop,
        FingerClass::Whorl,
    ];

    /// How often each class occurs in nature (Wilson, Candela and Watson, 1994), as SFinGe
    /// draws them: arch 3.7%, tented arch 2.9%, left loop 33.8%, right loop 31.7%, whorl 27.9%.
    pub fn frequency(self) -> f64 {
        match self {
            FingerClass::Arch => 0.037,
            FingerClass::TentedArch => 0.029,
            FingerClass::LeftLoop => 0.338,
            FingerClass::RightLoop => 0.317,
            FingerClass::Whorl => 0.279,
        }
    }

    pub fn draw(rng: &mut impl Rng) -> FingerClass {
        let mut u = rng.random::<f64>();
        for class in FingerClass::ALL {
            if u < class.frequency() {
                return class;
            }
            u -= class.frequency();
        }
        FingerClass::Whorl
    }

    /// (cores, deltas) a print of this class has.
    pub fn singular_point_counts(self) -> (usize, usize) {
        match self {
            FingerClass::Arch => (0, 0),
            FingerClass::TentedArch | FingerClass::LeftLoop | FingerClass::RightLoop => (1, 1),
            FingerClass::Whorl => (2, 2),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FingerClass::Arch => "arch",
            FingerClass::TentedArch => "tented_arch",
            FingerClass::LeftLoop => "left_loop",
            FingerClass::RightLoop => "right_loop",
            FingerClass::Whorl => "whorl",
        }
    }
}

/// A point in pixels: x to the right, y down.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

/// The orientation field of one finger: ridge direction in radians, in [0, pi), at any point.
#[derive(Clone, Debug)]
pub struct OrientationField {
    pub class: FingerClass,
    pub cores: Vec<Point>,
    pub deltas: Vec<Point>,
    /// For arches: the height of the arch bump, its width and where it fades (pixels).
    arch: Option<(f32, f32, f32)>,
    center: Point,
}

impl OrientationField {
    /// Places the class's singular points around `center` with natural jitter; for a loop
    /// the delta sits below the core on the side opposite the loop's opening.
    pub fn random(class: FingerClass, center: Point, rng: &mut impl Rng) -> Self {
        let jitter = |sd: f32, rng: &mut dyn rand::RngCore| sd * gaussian(rng);
        let at = |dx: f32, dy: f32| Point {
            x: center.x + dx,
            y: center.y + dy,
        };
        let mut field = OrientationField {
            class,
            cores: Vec::new(),
            deltas: Vec::new(),
            arch: None,
            center,
        };
        match class {
            FingerClass::Arch => {
                let height = rng.random_range(25.0..45.0);
                let width = rng.random_range(70.0..110.0);
                let fade = center.y + rng.random_range(0.0..60.0);
                field.arch = Some((height, width, fade));
            }
            FingerClass::TentedArch => {
                let core = at(jitter(8.0, rng), -25.0 + jitter(10.0, rng));
                let below = rng.random_range(45.0..70.0);
                field.cores.push(core);
                field.deltas.push(Point {
                    x: core.x + jitter(4.0, rng),
                    y: core.y + below,
                });
            }
            FingerClass::LeftLoop | FingerClass::RightLoop => {
                let side = if class == FingerClass::LeftLoop {
                    1.0
                } else {
                    -1.0
                };
                let core = at(jitter(12.0, rng), -35.0 + jitter(12.0, rng));
                field.cores.push(core);
                field.deltas.push(Point {
                    x: core.x + side * rng.random_range(70.0..110.0),
                    y: core.y + rng.random_range(80.0..120.0),
                });
            }
            FingerClass::Whorl => {
                let upper = at(jitter(8.0, rng), -40.0 + jitter(8.0, rng));
                let lower = Point {
                    x: upper.x + jitter(10.0, rng),
                    y: upper.y + rng.random_range(22.0..40.0),
                };
                field.cores = vec![upper, lower];
                let below = lower.y + rng.random_range(45.0..75.0);
                field.deltas = vec![
                    Point {
                        x: upper.x - rng.random_range(60.0..95.0),
                        y: below + jitter(8.0, rng),
                    },
                    Point {
                        x: upper.x + rng.random_range(60.0..95.0),
                        y: below + jitter(8.0, rng),
                    },
                ];
            }
        }
        field
    }

    /// The ridge direction at (x, y), in [0, pi): half the sum of the angles seen from each
    /// core, minus half the sum seen from each delta (zero-pole model); for arches, the slope
    /// of a bump y = -h exp(-x^2 / w^2) that fades below the fingertip's middle.
    pub fn at(&self, x: f32, y: f32) -> f32 {
        let mut theta = 0.0;
        for c in &self.cores {
            theta += 0.5 * (y - c.y).atan2(x - c.x);
        }
        for d in &self.deltas {
            theta -= 0.5 * (y - d.y).atan2(x - d.x);
        }
        if let Some((height, width, fade)) = self.arch {
            let u = (x - self.center.x) / width;
            let strength = height / (1.0 + ((y - fade) / 40.0).exp());
            theta += (strength * 2.0 * u / width * (-u * u).exp()).atan();
        }
        theta.rem_euclid(PI)
    }
}

/// The Poincare index of `orientation` along a closed polygon: the total turn of the ridge
/// direction (taking each step's change in (-pi/2, pi/2]) over 2 pi. About +1/2 around a core,
/// -1/2 around a delta, 0 around a region with no singular point.
pub fn poincare_index(orientation: impl Fn(f32, f32) -> f32, polygon: &[Point]) -> f32 {
    let mut total = 0.0;
    for (i, p) in polygon.iter().enumerate() {
        let q = polygon[(i + 1) % polygon.len()];
        let mut step = orientation(q.x, q.y) - orientation(p.x, p.y);
        if step > PI / 2.0 {
            step -= PI;
        } else if step <= -PI / 2.0 {
            step += PI;
        }
        total += step;
    }
    total / (2.0 * PI)
}

/// `samples` points on a circle, counter-clockwise in image coordinates' own sense.
pub fn circle(center: Point, radius: f32, samples: usize) -> Vec<Point> {
    (0..samples)
        .map(|i| {
            let a = 2.0 * PI * i as f32 / samples as f32;
            Point {
                x: center.x + radius * a.cos(),
                y: center.y + radius * a.sin(),
            }
        })
        .collect()
}
