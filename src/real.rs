//! The scalar types of the CPU path.
//!
//! The CPU reference is generic over [`Real`], implemented for `f32` (the
//! precision the GPU computes in) and `f64` (what gradient checks use).

use std::fmt::{Debug, Display};

/// A floating-point scalar the CPU path can compute in.
pub trait Real:
    num_traits::Float
    + num_traits::FromPrimitive
    + num_traits::ToPrimitive
    + std::iter::Sum
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + bytemuck::Pod
    + 'static
{
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;

    /// Converts from `f64` (rounding to nearest for `f32`).
    fn of(v: f64) -> Self;

    /// Converts to `f64` exactly.
    fn f64(self) -> f64;

    /// The complementary error function, `1 - erf(x)`, accurate in relative terms even where it is tiny.
    fn erfc(self) -> Self;

    /// `tanh`, as the cells compute it. For f32 this is the algorithm of the
    /// shaders (`tanh_f` in `shaders/common.wgsl`, Cephes `tanhf`: an odd
    /// polynomial below 0.625, `1 − 2/(e^{2|x|} + 1)` above; relative error
    /// below 2.5e-7), several times faster than libm's `tanhf`; for f64 it is
    /// libm's `tanh`, the reference.
    fn tanh_cell(self) -> Self;

    /// The logistic sigmoid as the cells compute it: for f32 `1 / (1 + e^{-x})`
    /// with a branch-free polynomial `exp` (Cephes `expf`, about 1 ulp) so
    /// loops over it vectorize; for f64 the stable libm form, the reference.
    fn sigmoid_cell(self) -> Self;

    /// General matrix multiply through `gemm`:
    /// `C = alpha * A·B + beta * C` with A `m×k`, B `k×n`, C `m×n`, each given
    /// by a row stride and a column stride (so transposes are free). With
    /// `beta` zero, C is written without being read (a NaN there is not kept).
    ///
    /// `gemm` picks its AVX-512, AVX2 or portable kernels at run time. A
    /// product of at least [`GEMM_PARALLEL_MIN`] multiply-adds is split over
    /// rayon's pool, by blocks of rows and columns of C only: every output's
    /// sum runs in the same order whatever the number of threads, so results
    /// are bitwise the same from run to run and from one pool size to another.
    ///
    /// # Safety
    /// Every element addressed through the pointers and strides must be in bounds,
    /// and `c` must not overlap `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

impl Real for f32 {
    const NAME: &'static str = "f32";

    fn of(v: f64) -> Self {
        v as f32
    }

    fn f64(self) -> f64 {
        self as f64
    }

    fn erfc(self) -> Self {
        libm::erfcf(self)
    }

    // The coefficients are Cephes' published ones, digit for digit as in the
    // shader. Both branches are computed and one is selected, so loops over
    // this vectorize.
    #[allow(clippy::excessive_precision)]
    #[inline(always)]
    fn tanh_cell(self) -> Self {
        let a = self.abs();
        let z = self * self;
        let small = ((((-5.704_988_7e-3 * z + 2.063_908_9e-2) * z - 5.373_971_6e-2) * z
            + 1.333_144_2e-1)
            * z
            - 3.333_328_2e-1)
            * z
            * a
            + a;
        // (Not `a.min(15.0)`, which would turn a NaN into 15.)
        let capped = if a > 15.0 { 15.0 } else { a };
        let large = 1.0 - 2.0 / (expf_cell(2.0 * capped) + 1.0);
        let r = if a < 0.625 { small } else { large };
        f32::copysign(r, self)
    }

    #[inline(always)]
    fn sigmoid_cell(self) -> Self {
        1.0 / (1.0 + expf_cell(-self))
    }

    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { gemm_any(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

impl Real for f64 {
    const NAME: &'static str = "f64";

    fn of(v: f64) -> Self {
        v
    }

    fn f64(self) -> f64 {
        self
    }

    fn erfc(self) -> Self {
        libm::erfc(self)
    }

    #[inline]
    fn tanh_cell(self) -> Self {
        self.tanh()
    }

    #[inline]
    fn sigmoid_cell(self) -> Self {
        sigmoid(self)
    }

    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { gemm_any(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
    }
}

/// Multiply-adds (m·n·k) at least for which [`Real::gemm_raw`] splits a
/// product over rayon's pool. Below it one thread does better on a small
/// machine: waking the pool's threads costs tens of µs (on a 2-core virtual
/// machine, a recurrent step's `dG · W_hh`, 32×256×1024, took 85 µs on one
/// core and over 110 µs on two); the whole-sequence products of a training
/// step (T·B rows) are far above it.
pub const GEMM_PARALLEL_MIN: usize = 1 << 25;

/// [`Real::gemm_raw`] for either type, in `gemm`'s terms: it computes
/// `dst = alpha·dst + beta·lhs·rhs` (its alpha and beta are ours swapped), and
/// reads dst only when asked to.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_any<T: Real>(
    m: usize,
    k: usize,
    n: usize,
    alpha: T,
    a: *const T,
    rsa: isize,
    csa: isize,
    b: *const T,
    rsb: isize,
    csb: isize,
    beta: T,
    c: *mut T,
    rsc: isize,
    csc: isize,
) {
    let parallelism = if m.saturating_mul(n).saturating_mul(k) >= GEMM_PARALLEL_MIN {
        // 0: as many threads as the current pool has.
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: forwarded from the caller's contract (the same pointers and
    // strides, with C's as dst's).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            csc,
            rsc,
            beta != T::zero(),
            a,
            csa,
            rsa,
            b,
            csb,
            rsb,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Logistic sigmoid, never taking `exp` of a large positive number.
pub fn sigmoid<T: Real>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// `e^x` in f32 without branches or libm (Cephes `expf`: reduce by ln 2,
/// degree-6 polynomial, scale by 2^n through the exponent bits). Inputs are
/// clamped to [-87.3, 88], where the result is a normal f32.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn expf_cell(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.0);
    // n = round(x·log2 e) with float operations only: adding 1.5·2²³ rounds to
    // an integer, which then sits in the low mantissa bits. (A float-to-int
    // cast would be a saturating scalar conversion per lane; this vectorizes
    // and lets a NaN through.)
    const SHIFT: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let ni = shifted.to_bits().wrapping_sub(SHIFT.to_bits()) as i32;
    let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4;
    let z = r * r;
    let p = (((((1.987_569_15e-4 * r + 1.398_199_95e-3) * r + 8.333_451_9e-3) * r
        + 4.166_579_59e-2)
        * r
        + 1.666_666_55e-1)
        * r
        + 5.000_000_1e-1)
        * z
        + r
        + 1.0;
    // |n| ≤ 127 after the clamp, so n + 127 is a normal exponent.
    p * f32::from_bits((ni.wrapping_add(127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_cell_tanh_is_accurate_and_odd() {
        let mut worst = 0.0f64;
        for i in -20000..=20000 {
            let x = i as f32 * 1e-3;
            let exact = (x as f64).tanh();
            let got = x.tanh_cell() as f64;
            assert_eq!(got, -((-x).tanh_cell() as f64));
            if exact != 0.0 {
                worst = worst.max(((got - exact) / exact).abs());
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(1e4f32.tanh_cell(), 1.0);
        assert_eq!((-1e4f32).tanh_cell(), -1.0);
        assert_eq!(0.5f64.tanh_cell(), 0.5f64.tanh());
    }

    #[test]
    fn f32_cell_exp_and_sigmoid_are_accurate() {
        let mut worst = 0.0f64;
        for i in -8700..=8800 {
            let x = i as f32 * 1e-2;
            let exact = (x as f64).exp();
            worst = worst.max(((expf_cell(x) as f64 - exact) / exact).abs());
        }
        assert!(worst < 3e-7, "exp: worst relative error {worst:e}");
        for i in -2000..=2000 {
            let x = i as f32 * 1e-2;
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            let got = x.sigmoid_cell() as f64;
            assert!(
                ((got - exact) / exact).abs() < 5e-7,
                "sigmoid({x}) = {got}, want {exact}"
            );
        }
        assert!(1e4f32.sigmoid_cell() == 1.0 && (-1e4f32).sigmoid_cell() < 1e-37);
        assert!(expf_cell(1e4).is_finite() && expf_cell(-1e4) > 0.0);
        // A NaN stays a NaN, so a diverging run is seen as one.
        assert!(expf_cell(f32::NAN).is_nan() && f32::NAN.sigmoid_cell().is_nan());
        assert!(f32::NAN.tanh_cell().is_nan());
    }
}
