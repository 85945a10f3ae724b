//! Learning-rate schedules, as pure functions of the global step: a resumed run computes the
//! same rate at the same step as an uninterrupted one, with no scheduler state to restore.

use serde::{Deserialize, Serialize};

/// How the learning rate moves after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum LrSchedule {
    /// Fixed.
    Constant,
    /// Half-cosine decay to zero over the steps after warmup (Loshchilov & Hutter, SGDR).
    Cosine,
    /// Multiply by `gamma` every `every_epochs` epochs (Keras' step decay, torch's StepLR).
    Step { every_epochs: usize, gamma: f64 },
}

/// The rate schedule of a run: base rate, shape, and linear warmup over the first steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrPlan {
    pub base: f64,
    pub schedule: LrSchedule,
    /// Steps of linear warmup from base / warmup_steps to base (0 = none).
    pub warmup_steps: usize,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
}

impl LrPlan {
    /// The learning rate of (0-based) `step`.
    pub fn rate(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            LrSchedule::Constant => self.base,
            LrSchedule::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = (step - self.warmup_steps) as f64 / span;
                self.base * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
            LrSchedule::Step {
                every_epochs,
                gamma,
            } => {
                let epoch = step / self.steps_per_epoch.max(1);
                self.base * gamma.powi((epoch / every_epochs.max(1)) as i32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(schedule: LrSchedule, warmup_steps: usize) -> LrPlan {
        LrPlan {
            base: 0.1,
            schedule,
            warmup_steps,
            steps_per_epoch: 10,
            total_steps: 100,
        }
    }

    #[test]
    fn warmup_rises_linearly_then_hands_over() {
        let p = plan(LrSchedule::Constant, 4);
        let expected = [0.025, 0.05, 0.075, 0.1, 0.1, 0.1];
        for (step, want) in expected.into_iter().enumerate() {
            assert!(
                (p.rate(step) - want).abs() < 1e-12,
                "step {step}: {}",
                p.rate(step)
            );
        }
    }

    #[test]
    fn cosine_decays_from_base_to_zero_after_warmup() {
        let p = plan(LrSchedule::Cosine, 10);
        assert!((p.rate(10) - 0.1).abs() < 1e-12);
        assert!((p.rate(55) - 0.05).abs() < 1e-12);
        assert!(p.rate(99) < 1e-3 && p.rate(99) > 0.0);
        assert!((1..100).all(|s| s < 10 || p.rate(s) <= p.rate(s - 1)));
    }

    #[test]
    fn step_decay_multiplies_every_n_epochs() {
        let p = plan(
            LrSchedule::Step {
                every_epochs: 3,
                gamma: 0.5,
            },
            0,
        );
        assert_eq!(p.rate(0), 0.1);
        assert_eq!(p.rate(29), 0.1);
        assert_eq!(p.rate(30), 0.05);
        assert_eq!(p.rate(65), 0.025);
    }
}
