//! Gradient checking by central finite differences, in f64.
//!
//! `numeric[i] = (f(x + h·eᵢ) − f(x − h·eᵢ)) / 2h` is compared with the
//! analytic gradient. In f64 with `h = 1e-6` the truncation error is about
//! `h²·f'''` and the rounding error about `1e-16·|f| / h`, so a correct backward
//! agrees to roughly 1e-8 relative; a wrong one is off by O(1).
//!
//! ```
//! use rnn_wgpu::gradcheck::GradCheck;
//!
//! // f(x) = Σ sin(xᵢ)·xᵢ, whose gradient is cos(xᵢ)·xᵢ + sin(xᵢ).
//! let mut f = |x: &[f64]| x.iter().map(|v| v.sin() * v).sum::<f64>();
//! let x = [0.3f64, -1.2, 2.0];
//! let right: Vec<f64> = x.iter().map(|v| v.cos() * v + v.sin()).collect();
//! assert!(GradCheck::default().check("f", &mut f, &x, &right, None).is_ok());
//! let wrong: Vec<f64> = x.iter().map(|v| v.cos() * v).collect();
//! assert!(GradCheck::default().check("f", &mut f, &x, &wrong, None).is_err());
//! ```

use crate::parity::Mismatch;
use crate::parity::{Comparison, Tolerance};

/// Step and tolerance of a gradient check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradCheck {
    /// Finite-difference step.
    pub h: f64,
    /// Pass when `|analytic − numeric| ≤ abs + rel·max(|analytic|, |numeric|)`.
    pub tol: Tolerance,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            h: 1e-6,
            tol: Tolerance::new(1e-8, 1e-6),
        }
    }
}

/// Central differences of `f` at `x` for the coordinates in `indices` (all when `None`).
pub fn numeric_gradient(
    f: &mut dyn FnMut(&[f64]) -> f64,
    x: &[f64],
    h: f64,
    indices: Option<&[usize]>,
) -> Vec<(usize, f64)> {
    let all: Vec<usize>;
    let idx = match indices {
        Some(i) => i,
        None => {
            all = (0..x.len()).collect();
            &all
        }
    };
    let mut xp = x.to_vec();
    idx.iter()
        .map(|&i| {
            let orig = xp[i];
            xp[i] = orig + h;
            let up = f(&xp);
            xp[i] = orig - h;
            let down = f(&xp);
            xp[i] = orig;
            (i, (up - down) / (2.0 * h))
        })
        .collect()
}

impl GradCheck {
    /// Checks `analytic` (the full gradient) against central differences of `f`
    /// at `x`, over `indices` (all coordinates when `None`).
    pub fn check(
        &self,
        name: &str,
        f: &mut dyn FnMut(&[f64]) -> f64,
        x: &[f64],
        analytic: &[f64],
        indices: Option<&[usize]>,
    ) -> Result<Comparison, Box<Mismatch>> {
        let numeric = numeric_gradient(f, x, self.h, indices);
        let mut stats = Comparison {
            n: numeric.len(),
            ..Default::default()
        };
        let mut failed = 0;
        let mut samples = Vec::new();
        for &(i, n) in &numeric {
            let a = analytic.get(i).copied().unwrap_or(f64::NAN);
            let diff = (a - n).abs();
            let scale = a.abs().max(n.abs());
            if diff > stats.max_abs || diff.is_nan() {
                stats.max_abs = diff;
                stats.worst = i;
            }
            if scale > 0.0 {
                stats.max_rel = stats.max_rel.max(diff / scale);
            }
            // Scale by the larger magnitude: symmetric in analytic and numeric.
            let ok = diff <= self.tol.abs + self.tol.rel * scale;
            if !ok {
                failed += 1;
                if samples.len() < 10 {
                    samples.push((i, n, a));
                }
            }
        }
        if failed > 0 {
            return Err(Box::new(Mismatch {
                name: format!("{name} (expected = finite differences, got = analytic)"),
                tol: self.tol,
                stats,
                failed,
                samples,
                lengths: None,
            }));
        }
        Ok(stats)
    }
}

/// Evenly spread coordinates to check when a tensor is too big to check whole.
pub fn spread_indices(len: usize, max: usize) -> Vec<usize> {
    if len <= max {
        return (0..len).collect();
    }
    (0..max).map(|i| i * len / max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_a_wrong_gradient() {
        let x: [f64; 3] = [0.3, -1.2, 2.0];
        let mut f = |x: &[f64]| x[0] * x[0] + (x[1] * x[2]).sin();
        let right = [0.6, (x[1] * x[2]).cos() * x[2], (x[1] * x[2]).cos() * x[1]];
        assert!(
            GradCheck::default()
                .check("f", &mut f, &x, &right, None)
                .is_ok()
        );
        let wrong = [0.6, right[1] * 1.001, right[2]];
        let err = GradCheck::default()
            .check("f", &mut f, &x, &wrong, None)
            .unwrap_err();
        assert_eq!(err.failed, 1);
        assert_eq!(err.samples[0].0, 1);
    }

    #[test]
    fn spread_covers_ends() {
        assert_eq!(spread_indices(3, 10), vec![0, 1, 2]);
        let s = spread_indices(1000, 5);
        assert_eq!(s.len(), 5);
        assert_eq!(s[0], 0);
        assert!(s[4] >= 800);
    }
}
