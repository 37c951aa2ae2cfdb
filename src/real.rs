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

    /// General matrix multiply through `matrixmultiply`:
    /// `C = alpha * A·B + beta * C` with A `m×k`, B `k×n`, C `m×n`, each given
    /// by a row stride and a column stride (so transposes are free).
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
        unsafe {
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
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
        unsafe {
            matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
        }
    }
}
