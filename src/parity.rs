//! The parity harness: seeded inputs, a tolerance, and a comparison that says
//! exactly where and by how much two results differ.
//!
//! Used by the test suite (CPU vs GPU, fast vs reference, PyTorch fixtures)
//! and by the `doctor` command on a user's machine.
//!
//! ```
//! use rnn_wgpu::parity::{compare, uniform, Tolerance};
//!
//! let expected = uniform(7, 100, -1.0, 1.0); // seeded: the same values every run
//! let mut actual = expected.clone();
//! assert!(compare("close", &expected, &actual, Tolerance::new(1e-6, 1e-5)).is_ok());
//! actual[42] += 0.5;
//! let m = compare("off", &expected, &actual, Tolerance::new(1e-6, 1e-5)).unwrap_err();
//! assert!(m.to_string().contains("[42]"), "{m}"); // where, and by how much
//! ```

use std::fmt;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A value passes when `|actual − expected| ≤ abs + rel·|expected|`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub abs: f64,
    /// Relative part, scaled by the magnitude of the expected value.
    pub rel: f64,
}

impl Tolerance {
    /// A tolerance of `abs + rel·|expected|`.
    pub const fn new(abs: f64, rel: f64) -> Self {
        Tolerance { abs, rel }
    }

    /// f32 GPU against an f64 reference for short dot products and elementwise
    /// functions: a few ulps of f32 relative, a little more absolute.
    pub const F32: Tolerance = Tolerance::new(1e-5, 1e-5);

    /// Does `actual` pass against `expected`? NaN never passes unless both are
    /// NaN; infinities must match exactly.
    pub fn allows(&self, expected: f64, actual: f64) -> bool {
        if expected.is_nan() || actual.is_nan() {
            return expected.is_nan() && actual.is_nan();
        }
        if expected.is_infinite() || actual.is_infinite() {
            return expected == actual;
        }
        (actual - expected).abs() <= self.abs + self.rel * expected.abs()
    }
}

/// Summary of a passing comparison.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Comparison {
    /// Number of values compared.
    pub n: usize,
    /// Largest absolute difference.
    pub max_abs: f64,
    /// Largest difference relative to `|expected|` (over values with `|expected| > 0`).
    pub max_rel: f64,
    /// Index of the largest absolute difference.
    pub worst: usize,
}

/// A failing comparison, with enough detail to debug from the message alone.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// What was compared.
    pub name: String,
    /// The tolerance used.
    pub tol: Tolerance,
    /// Statistics over all values.
    pub stats: Comparison,
    /// How many values failed.
    pub failed: usize,
    /// The first failing `(index, expected, actual)` triples (at most ten).
    pub samples: Vec<(usize, f64, f64)>,
    /// Set when the lengths differ: `(expected, actual)`.
    pub lengths: Option<(usize, usize)>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((e, a)) = self.lengths {
            return write!(f, "{}: expected {e} values, got {a}", self.name);
        }
        writeln!(
            f,
            "{}: {} of {} values outside tolerance (abs {:e} + rel {:e}·|expected|); \
             max |diff| {:e} at index {}, max rel diff {:e}",
            self.name,
            self.failed,
            self.stats.n,
            self.tol.abs,
            self.tol.rel,
            self.stats.max_abs,
            self.stats.worst,
            self.stats.max_rel
        )?;
        for (i, e, a) in &self.samples {
            writeln!(f, "  [{i}] expected {e:.9e}, got {a:.9e}, diff {:e}", a - e)?;
        }
        Ok(())
    }
}

impl std::error::Error for Mismatch {}

/// Compares `actual` to `expected` value by value.
pub fn compare(
    name: &str,
    expected: &[f64],
    actual: &[f64],
    tol: Tolerance,
) -> Result<Comparison, Box<Mismatch>> {
    let mut stats = Comparison {
        n: expected.len(),
        ..Default::default()
    };
    if expected.len() != actual.len() {
        return Err(Box::new(Mismatch {
            name: name.into(),
            tol,
            stats,
            failed: 0,
            samples: vec![],
            lengths: Some((expected.len(), actual.len())),
        }));
    }
    let mut failed = 0;
    let mut samples = Vec::new();
    for (i, (&e, &a)) in expected.iter().zip(actual).enumerate() {
        let diff = (a - e).abs();
        if diff > stats.max_abs || (diff.is_nan() && !stats.max_abs.is_nan()) {
            stats.max_abs = diff;
            stats.worst = i;
        }
        if e != 0.0 {
            let rel = diff / e.abs();
            if rel > stats.max_rel {
                stats.max_rel = rel;
            }
        }
        if !tol.allows(e, a) {
            failed += 1;
            if samples.len() < 10 {
                samples.push((i, e, a));
            }
        }
    }
    if failed > 0 {
        return Err(Box::new(Mismatch {
            name: name.into(),
            tol,
            stats,
            failed,
            samples,
            lengths: None,
        }));
    }
    Ok(stats)
}

/// Converts any slice of reals to f64 for comparison.
pub fn to_f64<T: crate::Real>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.f64()).collect()
}

/// Relative Frobenius error `‖actual − expected‖ / ‖expected‖` (absolute when
/// the reference is all zeros).
pub fn rel_frobenius(expected: &[f64], actual: &[f64]) -> f64 {
    let num: f64 = expected
        .iter()
        .zip(actual)
        .map(|(e, a)| (a - e) * (a - e))
        .sum::<f64>()
        .sqrt();
    let den: f64 = expected.iter().map(|e| e * e).sum::<f64>().sqrt();
    if den > 0.0 { num / den } else { num }
}

/// A seeded generator (ChaCha8), so every test input is reproducible from its seed.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `n` values uniform in `[lo, hi)`, from `seed`.
pub fn uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut r = rng(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

/// `n` integers uniform in `[lo, hi)`, from `seed`.
pub fn uniform_i32(seed: u64, n: usize, lo: i32, hi: i32) -> Vec<i32> {
    let mut r = rng(seed);
    (0..n).map(|_| r.random_range(lo..hi)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatch_names_the_worst_value() {
        let e = [1.0, 2.0, 3.0, 4.0];
        let a = [1.0, 2.5, 3.0, 4.0 + 1e-9];
        let err = compare("demo", &e, &a, Tolerance::new(1e-6, 1e-6)).unwrap_err();
        assert_eq!(err.failed, 1);
        assert_eq!(err.stats.worst, 1);
        let msg = err.to_string();
        assert!(msg.contains("demo: 1 of 4"), "{msg}");
        assert!(msg.contains("[1] expected"), "{msg}");
        assert!(compare("ok", &e, &e, Tolerance::new(0.0, 0.0)).is_ok());
    }

    #[test]
    fn nan_and_length_are_failures() {
        let t = Tolerance::new(1.0, 1.0);
        assert!(!t.allows(1.0, f64::NAN));
        assert!(t.allows(f64::NAN, f64::NAN));
        assert!(!t.allows(f64::INFINITY, 1e300));
        assert!(compare("len", &[1.0], &[1.0, 2.0], t).is_err());
    }

    #[test]
    fn seeded_inputs_repeat() {
        assert_eq!(uniform(7, 5, -1.0, 1.0), uniform(7, 5, -1.0, 1.0));
        assert_ne!(uniform(7, 5, -1.0, 1.0), uniform(8, 5, -1.0, 1.0));
    }
}
