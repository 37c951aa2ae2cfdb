//! Dynamic loss scaling for f16 training.
//!
//! f16's smallest subnormal is 2⁻²⁴ ≈ 6e-8, so small activation gradients
//! stored in f16 flush to zero. The backward therefore differentiates the
//! loss times a scale `S` (2¹⁶ to start), which lifts them into f16's
//! range, and the optimizer divides the weight gradients (kept in f32) by
//! `S` again before clipping and updating ([`crate::ops::optim::UpdateSpec::grad_scale`]).
//! A step whose gradients overflow (a non-finite sum of squares) skips its
//! update, as any non-finite step does, and halves `S`; after
//! `growth_interval` clean steps in a row `S` doubles. These are PyTorch's
//! `torch.amp.GradScaler` defaults (2¹⁶, ×2 every 2000 clean steps, ×½ on
//! an overflow). bf16 has f32's range and needs none of this.

use serde::{Deserialize, Serialize};

/// The first scale.
pub const INITIAL_SCALE: f64 = 65536.0;
/// Clean steps before the scale doubles.
pub const GROWTH_INTERVAL: u64 = 2000;
/// The scale never goes below this (a run whose gradients overflow at
/// scale 1 has a real overflow, which halving further would hide)…
pub const MIN_SCALE: f64 = 1.0;
/// …nor above this.
pub const MAX_SCALE: f64 = 16_777_216.0;

/// The state of dynamic loss scaling (saved in checkpoints, so a resumed
/// run goes on with the same scale).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    /// The factor the loss is multiplied by.
    pub scale: f64,
    /// Clean steps since the last change.
    pub clean: u64,
    /// Clean steps after which the scale doubles.
    pub growth_interval: u64,
    /// Steps whose gradients overflowed (their updates were skipped).
    pub overflows: u64,
}

impl Default for LossScale {
    fn default() -> Self {
        LossScale {
            scale: INITIAL_SCALE,
            clean: 0,
            growth_interval: GROWTH_INTERVAL,
            overflows: 0,
        }
    }
}

impl LossScale {
    /// Takes a finished step into account: `overflowed` when its gradients
    /// were not finite (the update was skipped).
    pub fn update(&mut self, overflowed: bool) {
        if overflowed {
            self.overflows += 1;
            self.clean = 0;
            self.scale = (self.scale * 0.5).max(MIN_SCALE);
        } else {
            self.clean += 1;
            if self.clean >= self.growth_interval.max(1) {
                self.clean = 0;
                self.scale = (self.scale * 2.0).min(MAX_SCALE);
            }
        }
    }

    /// `1 / scale` as the optimizer multiplies the gradients by it (exact:
    /// the scale is a power of two).
    pub fn unscale(&self) -> f32 {
        (1.0 / self.scale) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_overflow_doubles_after_clean_steps() {
        let mut s = LossScale {
            growth_interval: 3,
            ..LossScale::default()
        };
        s.update(true);
        assert_eq!((s.scale, s.overflows, s.clean), (32768.0, 1, 0));
        s.update(false);
        s.update(false);
        assert_eq!(s.scale, 32768.0);
        s.update(false);
        assert_eq!((s.scale, s.clean), (65536.0, 0));
        assert_eq!(s.unscale(), 1.0 / 65536.0);
        for _ in 0..40 {
            s.update(true);
        }
        assert_eq!(s.scale, MIN_SCALE);
        for _ in 0..200 {
            s.update(false);
        }
        assert_eq!(s.scale, MAX_SCALE);
    }
}
