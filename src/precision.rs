//! Storage precision: f32, or 16-bit storage (IEEE half `f16`, or `bf16`)
//! with f32 arithmetic.
//!
//! In a 16-bit mode the tensors a pass keeps — the forward copy of the
//! parameters, activations, saved states and gates, and the activation
//! gradients of the backward — hold 16-bit values, while every product and
//! sum accumulates in f32 and the cell nonlinearities run in f32. Master
//! weights, weight gradients, optimizer state and loss statistics stay f32.
//!
//! A value is stored by rounding it to the nearest 16-bit value (ties to
//! even, overflow to ±∞, NaN kept), exactly what `half`'s conversions and
//! WGSL's `pack2x16float` do; [`Precision::round`] is that rounding, applied
//! where a kernel stores into a 16-bit tensor. The CPU path keeps the
//! rounded values in its f32 (or f64) vectors, so its numbers are those of
//! 16-bit storage without a conversion at every read.
//!
//! f16 has 11 significant bits and a range of ±65504 (subnormals down to
//! 2⁻²⁴): its training needs dynamic loss scaling (the trainer's
//! `LossScale`). bf16 has 8 significant bits and f32's
//! range, so it needs none.
//!
//! A model trains at a precision set once, in the library as on the command
//! line (`--precision`):
//!
//! ```
//! use rnn_wgpu::Precision;
//! use rnn_wgpu::backend::{Backend, CpuBackend};
//! use rnn_wgpu::nn::model::ModelConfig;
//! use rnn_wgpu::ops::cell::Cell;
//! use rnn_wgpu::train::tasks::TaskSpec;
//! use rnn_wgpu::train::{TrainConfig, Trainer};
//!
//! # fn main() -> rnn_wgpu::Result<()> {
//! let mut config = TrainConfig::new(TaskSpec::add(2), ModelConfig::new(Cell::Lstm, 32));
//! (config.batch, config.eval_problems, config.precision) = (8, 20, Precision::F16);
//! let mut trainer = Trainer::new(CpuBackend::<f32>::new(), config)?;
//! let report = trainer.train_step()?;
//! // f16 scales its loss (2^16 to start); the master weights stay f32 and
//! // the passes read them rounded to f16.
//! assert_eq!(report.loss_scale, Some(65536.0));
//! let b = trainer.model().backend();
//! let copy = b.read(trainer.model().weights())?;
//! assert!(copy.iter().all(|&w| Precision::F16.round_f32(w) == w));
//! # Ok(())
//! # }
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::real::Real;

/// How tensors are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats everywhere.
    #[default]
    F32,
    /// IEEE 754 binary16 storage, f32 arithmetic.
    F16,
    /// bfloat16 storage (f32's exponent, 8 significant bits), f32 arithmetic.
    Bf16,
}

/// The largest finite f16 value.
pub const F16_MAX: f32 = 65504.0;

impl Precision {
    /// Every precision, f32 first.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Bf16];

    /// Parses `f32`, `f16` (or `fp16`, `half`) or `bf16`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Precision::F32,
            "f16" | "fp16" | "half" | "float16" => Precision::F16,
            "bf16" | "bfloat16" => Precision::Bf16,
            other => {
                return Err(Error::invalid(
                    "precision",
                    format!("unknown precision {other:?}; expected f32, f16 or bf16"),
                ));
            }
        })
    }

    /// `"f32"`, `"f16"` or `"bf16"`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// The value of the shaders' `STORE` override constant (0 f32, 1 f16,
    /// 2 bf16; `stored()` in `shaders/common.wgsl` rounds by it).
    pub fn code(self) -> u32 {
        match self {
            Precision::F32 => 0,
            Precision::F16 => 1,
            Precision::Bf16 => 2,
        }
    }

    /// True for the 16-bit modes.
    pub fn is_16bit(self) -> bool {
        self != Precision::F32
    }

    /// Bytes one stored element takes.
    pub fn bytes(self) -> usize {
        if self.is_16bit() { 2 } else { 4 }
    }

    /// True when training needs dynamic loss scaling (f16's narrow range).
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::F16
    }

    /// `x` as this precision stores it (f32: rounded to f32).
    #[inline]
    pub fn round_f32(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::F16 => round_f16(x),
            Precision::Bf16 => round_bf16(x),
        }
    }

    /// `x` as this precision stores it, in `T` (an f64 value is rounded
    /// once, directly to the 16-bit grid; f32 storage of an f64 backend
    /// keeps f64).
    #[inline]
    pub fn round<T: Real>(self, x: T) -> T {
        match self {
            Precision::F32 => x,
            Precision::F16 => T::of(half::f16::from_f64(x.f64()).to_f64()),
            Precision::Bf16 => T::of(half::bf16::from_f64(x.f64()).to_f64()),
        }
    }

    /// Rounds `v[from .. from + n]` in place (as much of it as `v` holds):
    /// what a kernel stored there, as this precision keeps it.
    pub fn round_range<T: Real>(self, v: &mut [T], from: usize, n: usize) {
        let end = from.saturating_add(n).min(v.len());
        if from < end {
            self.round_slice(&mut v[from..end]);
        }
    }

    /// Rounds every value of `v` in place ([`Precision::round`]; for f32
    /// values the branch-free [`round_f16`] / [`round_bf16`], which
    /// vectorize).
    pub fn round_slice<T: Real>(self, v: &mut [T]) {
        if !self.is_16bit() {
            return;
        }
        if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
            // T is f32: the same slice, typed.
            let v32: &mut [f32] = bytemuck::cast_slice_mut(v);
            match self {
                Precision::F16 => v32.iter_mut().for_each(|x| *x = round_f16(*x)),
                Precision::Bf16 => v32.iter_mut().for_each(|x| *x = round_bf16(*x)),
                Precision::F32 => {}
            }
            return;
        }
        v.iter_mut().for_each(|x| *x = self.round(*x));
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `x` rounded to the nearest f16 value (ties to even; beyond ±65504 to
/// ±∞ from 65520 on, as IEEE rounding has it; NaN stays NaN), as an f32.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    // Both cases computed, one selected: no branch, so slices vectorize.
    let bits = x.to_bits();
    let sign = bits & 0x8000_0000;
    let abs = bits & 0x7fff_ffff;
    // Normal: keep 10 of f32's 23 fraction bits, ties to even (a carry
    // into the exponent is the right result); from 65520 on, ∞.
    let normal = (abs + 0x0fff + ((abs >> 13) & 1)) & !0x1fff;
    let normal = if normal > 0x477f_e000 {
        0x7f80_0000
    } else {
        normal
    };
    // Below 2⁻¹⁴: f16's subnormals, multiples of 2⁻²⁴. Added to 0.5, whose
    // ulp is 2⁻²⁴, the value is rounded to that grid (ties to even: 0.5 is
    // an even multiple), and taking 0.5 away again is exact.
    let sub = ((f32::from_bits(abs) + 0.5) - 0.5).to_bits();
    let r = if abs < 0x3880_0000 { sub } else { normal };
    // NaN stays NaN (∞ came through the normal case).
    f32::from_bits(if abs > 0x7f80_0000 { bits } else { r | sign })
}

/// `x` rounded to the nearest bf16 value (ties to even; overflow to ±∞;
/// NaN stays NaN), as an f32.
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return x;
    }
    f32::from_bits((bits + 0x7fff + ((bits >> 16) & 1)) & 0xffff_0000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn check_f16(x: f32) {
        let want = f16::from_f32(x).to_f32();
        let got = round_f16(x);
        assert!(
            want.to_bits() == got.to_bits() || (want.is_nan() && got.is_nan()),
            "{x:e} ({:#x}): {got:e} vs half's {want:e}",
            x.to_bits()
        );
        assert_eq!(
            Precision::F16.round(x as f64).to_bits(),
            f16::from_f64(x as f64).to_f64().to_bits()
        );
    }

    fn check_bf16(x: f32) {
        let want = bf16::from_f32(x).to_f32();
        let got = round_bf16(x);
        assert!(
            want.to_bits() == got.to_bits() || (want.is_nan() && got.is_nan()),
            "{x:e} ({:#x}): {got:e} vs half's {want:e}",
            x.to_bits()
        );
    }

    #[test]
    fn rounding_matches_half_on_edges_and_a_sweep() {
        let edges = [
            0.0,
            -0.0,
            1.0,
            F16_MAX,
            65519.0,
            65520.0,
            65536.0,
            -65520.0,
            6.103_515_6e-5, // 2^-14
            6.097_555e-5,   // just below
            5.960_464_5e-8, // 2^-24
            2.980_232_2e-8, // 2^-25: ties to 0
            2.980_233e-8,   // just above: rounds up
            8.940_697e-8,   // 1.5·2^-24: ties to even (2·2^-24)
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1.000_976_6, // 1 + 2^-10
            1.000_488_3, // 1 + 2^-11: tie, to even (1)
            1.001_464_8, // 1 + 3·2^-11: tie, to even (1 + 2^-9)
        ];
        for x in edges {
            check_f16(x);
            check_f16(-x);
            check_bf16(x);
            check_bf16(-x);
        }
        // Every 4099th bit pattern (odd stride: all low-bit residues).
        let mut b = 0u32;
        while let Some(next) = b.checked_add(4099) {
            check_f16(f32::from_bits(b));
            check_bf16(f32::from_bits(b));
            b = next;
        }
    }

    #[test]
    fn slices_round_like_scalars_in_f32_and_f64() {
        let vals: Vec<f32> = (0..1000)
            .map(|i| (i as f32 - 500.0) * 0.37e-3 * (i as f32))
            .collect();
        for p in Precision::ALL {
            let mut v = vals.clone();
            p.round_slice(&mut v);
            let mut w: Vec<f64> = vals.iter().map(|&x| x as f64).collect();
            p.round_slice(&mut w);
            for ((a, b), x) in v.iter().zip(&w).zip(&vals) {
                assert_eq!(*a, p.round_f32(*x));
                if p.is_16bit() {
                    // A 16-bit value is exact in f32: both paths agree.
                    assert_eq!(*a as f64, *b);
                } else {
                    assert_eq!(*b, *x as f64);
                }
            }
            // Rounding is idempotent.
            let again: Vec<f32> = v.iter().map(|&x| p.round_f32(x)).collect();
            assert_eq!(again, v);
        }
    }

    #[test]
    fn parse_and_names() {
        for p in Precision::ALL {
            assert_eq!(Precision::parse(p.name()).unwrap(), p);
        }
        assert_eq!(Precision::parse("half").unwrap(), Precision::F16);
        let e = Precision::parse("f8").unwrap_err().to_string();
        assert!(e.contains("precision") && e.contains("f16"), "{e}");
        assert_eq!(Precision::F16.bytes(), 2);
        assert!(Precision::F16.needs_loss_scaling() && !Precision::Bf16.needs_loss_scaling());
    }
}
