//! Learning-rate schedules: the rate each optimizer step uses, as a function of how far the run
//! has come. The position is counted in epochs (images seen / training images), so a schedule
//! means the same at any batch size and a resumed run continues it exactly.

use serde::{Deserialize, Serialize};

/// The shape of the learning rate over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The same rate throughout (Keras's default, and the reference's).
    #[default]
    Constant,
    /// Half a cosine from the rate down to zero at the run's last epoch (Keras's CosineDecay
    /// with alpha 0).
    Cosine,
}

impl std::fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScheduleKind::Constant => "constant",
            ScheduleKind::Cosine => "cosine",
        })
    }
}

/// A schedule and its warm-up, as a checkpoint records them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    /// Epochs over which the rate rises linearly from zero before the schedule takes over.
    pub warmup_epochs: f64,
}

impl Schedule {
    /// The learning rate of the step that starts at `position` epochs into training and covers
    /// `step_epochs` of an epoch, in a run that ends at epoch `last_epoch`.
    ///
    /// warm-up: base * min(1, (position + step) / warmup); cosine: base * (1 + cos(pi * position
    /// / last_epoch)) / 2, after the warm-up's factor.
    pub fn learning_rate(
        &self,
        base: f32,
        position: f64,
        step_epochs: f64,
        last_epoch: usize,
    ) -> f32 {
        let warmup = match self.warmup_epochs > 0.0 {
            true => ((position + step_epochs) / self.warmup_epochs).min(1.0),
            false => 1.0,
        };
        let shape = match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Cosine => {
                let progress = (position / last_epoch.max(1) as f64).clamp(0.0, 1.0);
                0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        };
        (f64::from(base) * warmup * shape) as f32
    }

    /// How `whorl train` describes it.
    pub fn describe(&self, last_epoch: usize) -> String {
        let shape = match self.kind {
            ScheduleKind::Constant => "constant".to_string(),
            ScheduleKind::Cosine => format!("cosine decay to 0 at epoch {last_epoch}"),
        };
        match self.warmup_epochs > 0.0 {
            true => format!(
                "{shape}, after a linear warm-up of {} epochs",
                self.warmup_epochs
            ),
            false => shape,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_without_warmup_is_the_base_rate() {
        let schedule = Schedule::default();
        for position in [0.0, 3.5, 99.0] {
            assert_eq!(schedule.learning_rate(1e-3, position, 0.1, 10), 1e-3);
        }
    }

    #[test]
    fn cosine_starts_at_the_base_halves_midway_and_ends_at_zero() {
        let schedule = Schedule {
            kind: ScheduleKind::Cosine,
            warmup_epochs: 0.0,
        };
        assert_eq!(schedule.learning_rate(2e-3, 0.0, 0.1, 10), 2e-3);
        assert!((schedule.learning_rate(2e-3, 5.0, 0.1, 10) - 1e-3).abs() < 1e-9);
        assert!(schedule.learning_rate(2e-3, 10.0, 0.1, 10).abs() < 1e-12);
        let rates: Vec<f32> = (0..10)
            .map(|e| schedule.learning_rate(2e-3, e as f64, 0.1, 10))
            .collect();
        assert!(rates.windows(2).all(|w| w[1] < w[0]), "{rates:?}");
    }

    #[test]
    fn warmup_rises_linearly_then_hands_over() {
        let schedule = Schedule {
            kind: ScheduleKind::Constant,
            warmup_epochs: 2.0,
        };
        assert!((schedule.learning_rate(1e-3, 0.0, 0.5, 10) - 2.5e-4).abs() < 1e-9);
        assert!((schedule.learning_rate(1e-3, 0.5, 0.5, 10) - 5e-4).abs() < 1e-9);
        assert_eq!(schedule.learning_rate(1e-3, 1.5, 0.5, 10), 1e-3);
        assert_eq!(schedule.learning_rate(1e-3, 7.0, 0.5, 10), 1e-3);
    }
}
