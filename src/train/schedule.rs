//! Learning-rate schedules, computed on the host (the rate goes to the GPU in
//! the optimizer's parameter block, so no GPU work is needed).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the learning rate changes over training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` steps (`torch.optim.lr_scheduler.StepLR`).
    Step {
        /// Steps between decays.
        every: u64,
        /// Factor per decay.
        gamma: f32,
    },
    /// Cosine from the base rate down to `min_lr` at the last step
    /// (`CosineAnnealingLR` with `T_max` = total steps).
    Cosine {
        /// Final rate.
        min_lr: f32,
    },
}

impl Schedule {
    /// Parses `constant`, `step[:every[:gamma]]` or `cosine[:min_lr]`.
    pub fn parse(s: &str, total_steps: u64) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |i: usize, default: f64| -> Result<f64> {
            match parts.get(i) {
                None => Ok(default),
                Some(v) => v.parse::<f64>().map_err(|_| {
                    Error::invalid("schedule", format!("{v:?} in {s:?} is not a number"))
                }),
            }
        };
        Ok(match parts[0] {
            "constant" => Schedule::Constant,
            "step" => Schedule::Step {
                every: num(1, (total_steps / 3).max(1) as f64)?.max(1.0) as u64,
                gamma: num(2, 0.1)? as f32,
            },
            "cosine" => Schedule::Cosine {
                min_lr: num(1, 0.0)? as f32,
            },
            other => {
                return Err(Error::invalid(
                    "schedule",
                    format!(
                        "unknown schedule {other:?}; expected constant, step[:every[:gamma]] or cosine[:min_lr]"
                    ),
                ));
            }
        })
    }

    /// The rate at 0-based `step` of `total` steps, from base rate `lr`.
    pub fn lr(&self, lr: f32, step: u64, total: u64) -> f32 {
        match *self {
            Schedule::Constant => lr,
            Schedule::Step { every, gamma } => {
                lr * gamma.powi((step / every.max(1)).min(i32::MAX as u64) as i32)
            }
            Schedule::Cosine { min_lr } => {
                let frac = (step.min(total) as f64 / total.max(1) as f64).min(1.0);
                let cos = (1.0 + (std::f64::consts::PI * frac).cos()) / 2.0;
                (min_lr as f64 + (lr - min_lr) as f64 * cos) as f32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(Schedule::Constant.lr(0.1, 50, 100), 0.1);
        let s = Schedule::parse("step:10:0.5", 100).unwrap();
        assert_eq!(s.lr(1.0, 9, 100), 1.0);
        assert_eq!(s.lr(1.0, 25, 100), 0.25);
        let c = Schedule::parse("cosine:0.1", 100).unwrap();
        assert!((c.lr(1.0, 0, 100) - 1.0).abs() < 1e-6);
        assert!((c.lr(1.0, 50, 100) - 0.55).abs() < 1e-6);
        assert!((c.lr(1.0, 100, 100) - 0.1).abs() < 1e-6);
        assert!(Schedule::parse("linear", 10).is_err());
        assert!(Schedule::parse("step:x", 10).is_err());
    }
}
