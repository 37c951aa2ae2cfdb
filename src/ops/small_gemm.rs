//! Matrix products with few rows of A, in f32, on x86-64 CPUs with AVX2 and
//! FMA — the shapes of a recurrent step on the CPU: `C = A·Bᵀ` for the forward
//! (`h_prev [B, H] · W_hhᵀ`, the NT kernel) and `C = A·B` for the backward
//! (`dG [B, G·H] · W_hh`, the NN kernel), both through [`run`].
//!
//! A general GEMM packs both operands on every call; for a recurrent step that
//! means repacking the whole weight matrix at every time step. Here both
//! operands are read in place: each output is a dot product of two contiguous
//! rows, computed in 2×4 blocks with eight-lane FMAs (eight accumulators and
//! six loaded vectors fit the sixteen AVX registers), so a block loads six
//! vectors per eight multiply-adds and nothing is copied. The result is the
//! same function as [`super::matmul::gemm_reference`]; only the summation
//! order differs (tested below against it).
//!
//! The NN kernel walks A's rows four at a time and B's rows in order, broadcasting
//! one value of each A row against sixteen contiguous values of a B row
//! (eight accumulators), again without copying either operand. It runs over
//! k in blocks of 256 rows of B (`KC`), so that a 16-column strip of B stays in
//! the L1 cache while every row block of A passes over it (for `dG · W_hh`
//! at B = 32, H = 256 this took the product from about 60 to 110 GFLOP/s on
//! two cores).

use crate::ops::matmul::Gemm;

/// Rows of A per block.
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 2;

/// Rows of B (the k extent) per block of the NN product.
#[cfg(target_arch = "x86_64")]
const KC: usize = 256;

/// Rows of A at most for which this path is used.
pub const MAX_ROWS: usize = 64;

/// `C (+)= op(A)·op(B)` for a [`Gemm`] with A not transposed (bias left out):
/// `C[i, j] (+)= Σ_p A[i, p]·B[j, p]` (the NT kernel) when B is transposed,
/// `C[i, j] (+)= Σ_p A[i, p]·B[p, j]` (the NN kernel) otherwise, on the operands
/// at their offsets. Returns false, touching nothing, where neither applies (A
/// transposed, more than [`MAX_ROWS`] rows, a shape below the kernel's block, or
/// a CPU without AVX2 and FMA).
///
/// # Safety
/// `g` must have passed `Gemm::validate` against the lengths of `a`, `b` and `c`.
pub unsafe fn run(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let (m, n, k) = (g.m, g.n, g.k);
        // The NT kernel needs one 8-lane step of k, the NN kernel one
        // 16-column strip; `align` is the column block each one works in.
        let (fits, align) = if g.trans_b {
            (k >= 8, 4)
        } else {
            (n >= 16, 16)
        };
        if g.trans_a || !fits || m == 0 || n == 0 || k == 0 || m > MAX_ROWS {
            return false;
        }
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            return false;
        }
        // SAFETY: `validate` proved every element the strides and offsets
        // address in bounds; `c` is a unique borrow, so it cannot overlap `a`
        // or `b`.
        let job = unsafe {
            Job {
                m,
                k,
                a: SendPtr(a.as_ptr().add(g.a_off) as *mut f32),
                lda: g.lda,
                b: SendPtr(b.as_ptr().add(g.b_off) as *mut f32),
                ldb: g.ldb,
                c: SendPtr(c.as_mut_ptr().add(g.c_off)),
                ldc: g.ldc,
                accumulate: g.accumulate,
            }
        };
        let columns = |from: usize, to: usize| {
            if g.trans_b {
                job.columns(from, to)
            } else {
                job.nn_columns(from, to)
            }
        };
        // Split the columns of C over two threads when there is enough work.
        let half = (n / 2).div_ceil(align) * align;
        if (m * n * k) >= (1 << 20) && half > 0 && half < n {
            rayon::join(|| columns(0, half), || columns(half, n));
        } else {
            columns(0, n);
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (g, a, b, c);
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

// SAFETY: the pointers are only dereferenced inside `run`'s contract; the two
// threads write disjoint columns of C and only read A and B.
#[cfg(target_arch = "x86_64")]
unsafe impl Send for SendPtr {}
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for SendPtr {}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Job {
    m: usize,
    k: usize,
    a: SendPtr,
    lda: usize,
    b: SendPtr,
    ldb: usize,
    c: SendPtr,
    ldc: usize,
    accumulate: bool,
}

#[cfg(target_arch = "x86_64")]
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
impl Job {
    fn columns(&self, from: usize, to: usize) {
        // SAFETY: `run` checked AVX2 and FMA before creating the job.
        unsafe { self.columns_avx2(from, to) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn columns_avx2(&self, from: usize, to: usize) {
        let mut j0 = from;
        while j0 < to {
            let nj = (to - j0).min(4);
            let mut i0 = 0;
            while i0 < self.m {
                let mi = (self.m - i0).min(ROWS);
                // SAFETY: rows i0..i0+mi of A, j0..j0+nj of B and the block of C
                // are inside the operands by `run`'s contract.
                unsafe { self.block(i0, mi, j0, nj) };
                i0 += ROWS;
            }
            j0 += 4;
        }
    }

    /// One block of up to ROWS×4 outputs. Rows beyond `mi`/`nj` reuse the
    /// block's first row (valid memory) and their results are dropped.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block(&self, i0: usize, mi: usize, j0: usize, nj: usize) {
        use std::arch::x86_64::*;
        let k8 = self.k / 8 * 8;
        let arow = |r: usize| unsafe { self.a.0.add((i0 + if r < mi { r } else { 0 }) * self.lda) };
        let brow = |r: usize| unsafe { self.b.0.add((j0 + if r < nj { r } else { 0 }) * self.ldb) };
        let arows = [arow(0), arow(1)];
        let brows = [brow(0), brow(1), brow(2), brow(3)];
        let mut acc = [_mm256_setzero_ps(); ROWS * 4];
        let mut p = 0;
        while p < k8 {
            // SAFETY: p + 8 <= k, inside every row.
            unsafe {
                let b0 = _mm256_loadu_ps(brows[0].add(p));
                let b1 = _mm256_loadu_ps(brows[1].add(p));
                let b2 = _mm256_loadu_ps(brows[2].add(p));
                let b3 = _mm256_loadu_ps(brows[3].add(p));
                let a0 = _mm256_loadu_ps(arows[0].add(p));
                acc[0] = _mm256_fmadd_ps(a0, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(a0, b1, acc[1]);
                acc[2] = _mm256_fmadd_ps(a0, b2, acc[2]);
                acc[3] = _mm256_fmadd_ps(a0, b3, acc[3]);
                let a1 = _mm256_loadu_ps(arows[1].add(p));
                acc[4] = _mm256_fmadd_ps(a1, b0, acc[4]);
                acc[5] = _mm256_fmadd_ps(a1, b1, acc[5]);
                acc[6] = _mm256_fmadd_ps(a1, b2, acc[6]);
                acc[7] = _mm256_fmadd_ps(a1, b3, acc[7]);
            }
            p += 8;
        }
        for r in 0..mi {
            for q in 0..nj {
                // Horizontal sum of the eight lanes, then the k tail.
                let v = acc[r * 4 + q];
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_hadd_ps(s, s);
                let s = _mm_hadd_ps(s, s);
                let mut sum = _mm_cvtss_f32(s);
                for t in k8..self.k {
                    // SAFETY: t < k.
                    unsafe { sum += *arows[r].add(t) * *brows[q].add(t) };
                }
                // SAFETY: (i0 + r, j0 + q) is inside C.
                unsafe {
                    let out = self.c.0.add((i0 + r) * self.ldc + j0 + q);
                    *out = if self.accumulate { *out + sum } else { sum };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Job {
    fn nn_columns(&self, from: usize, to: usize) {
        // SAFETY: `run` checked AVX2 and FMA before creating the job.
        unsafe { self.nn_columns_avx2(from, to) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn nn_columns_avx2(&self, from: usize, to: usize) {
        // Blocked over k so that a strip of B (KC × 16, 16 KiB) stays in the
        // L1 cache while every row block of A is multiplied with it; the
        // partial sums of later k blocks are added to C.
        let full = from + (to - from) / 16 * 16;
        let mut p0 = 0;
        while p0 < self.k {
            let p1 = (p0 + KC).min(self.k);
            let accumulate = self.accumulate || p0 > 0;
            let mut j0 = from;
            while j0 < full {
                let mut i0 = 0;
                while i0 < self.m {
                    let mi = (self.m - i0).min(4);
                    // SAFETY: rows i0..i0+mi of A and C, columns j0..j0+16 of B
                    // and C and rows p0..p1 of B are inside the operands by
                    // `run`'s contract.
                    unsafe { self.nn_block(i0, mi, j0, p0..p1, accumulate) };
                    i0 += 4;
                }
                j0 += 16;
            }
            p0 = p1;
        }
        // Columns left over after the strips of sixteen.
        for i in 0..self.m {
            for j in full..to {
                let mut sum = 0.0f32;
                for p in 0..self.k {
                    // SAFETY: i < m, p < k, j < n.
                    unsafe {
                        sum += *self.a.0.add(i * self.lda + p) * *self.b.0.add(p * self.ldb + j)
                    };
                }
                // SAFETY: (i, j) is inside C.
                unsafe {
                    let out = self.c.0.add(i * self.ldc + j);
                    *out = if self.accumulate { *out + sum } else { sum };
                }
            }
        }
    }

    /// Rows i0..i0+mi (at most 4) of C, columns j0..j0+16, the products over
    /// `ps`, stored or (with `accumulate`) added to C.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn nn_block(&self, i0: usize, mi: usize, j0: usize, ps: Range<usize>, accumulate: bool) {
        use std::arch::x86_64::*;
        let arow = |r: usize| unsafe { self.a.0.add((i0 + if r < mi { r } else { 0 }) * self.lda) };
        let arows = [arow(0), arow(1), arow(2), arow(3)];
        let mut acc = [_mm256_setzero_ps(); 8];
        for p in ps {
            // SAFETY: p < k and j0 + 16 <= n.
            unsafe {
                let brow = self.b.0.add(p * self.ldb + j0);
                let b0 = _mm256_loadu_ps(brow);
                let b1 = _mm256_loadu_ps(brow.add(8));
                for r in 0..4 {
                    let a = _mm256_broadcast_ss(&*arows[r].add(p));
                    acc[2 * r] = _mm256_fmadd_ps(a, b0, acc[2 * r]);
                    acc[2 * r + 1] = _mm256_fmadd_ps(a, b1, acc[2 * r + 1]);
                }
            }
        }
        for r in 0..mi {
            // SAFETY: row i0 + r, columns j0..j0+16 are inside C.
            unsafe {
                let out = self.c.0.add((i0 + r) * self.ldc + j0);
                let (mut lo, mut hi) = (acc[2 * r], acc[2 * r + 1]);
                if accumulate {
                    lo = _mm256_add_ps(lo, _mm256_loadu_ps(out));
                    hi = _mm256_add_ps(hi, _mm256_loadu_ps(out.add(8)));
                }
                _mm256_storeu_ps(out, lo);
                _mm256_storeu_ps(out.add(8), hi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::matmul::gemm_reference;
    use crate::parity::uniform;

    fn fast_cpu() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    fn random(seed: u64, len: usize) -> Vec<f32> {
        uniform(seed, len, -1.0, 1.0)
            .iter()
            .map(|&x| x as f32)
            .collect()
    }

    /// `run` against the reference on padded strides, storing and accumulating.
    fn check(trans_b: bool, shapes: &[(usize, usize, usize)]) {
        for &(m, n, k) in shapes {
            let g = if trans_b {
                Gemm::nt(m, n, k)
            } else {
                Gemm::nn(m, n, k)
            };
            let (lda, ldb, ldc) = (k + 3, if trans_b { k + 1 } else { n + 1 }, n + 2);
            let a = random(1, m * lda);
            let b = random(2, if trans_b { n } else { k } * ldb);
            for accumulate in [false, true] {
                let g = g.strides(lda, ldb, ldc).accumulating(accumulate);
                let c0 = random(3, m * ldc);
                let mut want = c0.clone();
                gemm_reference(&g, &a, &b, None, &mut want).unwrap();
                let mut got = c0.clone();
                g.validate(a.len(), b.len(), None, got.len()).unwrap();
                // SAFETY: validated just above.
                if !unsafe { run(&g, &a, &b, &mut got) } {
                    assert!(
                        !fast_cpu(),
                        "{m}x{n}x{k}: the kernel declined a shape it covers"
                    );
                    return; // no AVX2/FMA on this CPU: nothing to compare
                }
                for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                    let tol = 1e-5 * (k as f32).sqrt() * (1.0 + w.abs());
                    assert!((w - g).abs() <= tol, "{m}x{n}x{k} [{i}]: {w} vs {g}");
                }
            }
        }
    }

    #[test]
    fn nt_matches_the_reference_on_edge_shapes() {
        check(
            true,
            &[
                (1, 1, 8),
                (3, 5, 9),
                (4, 4, 16),
                (32, 1024, 256),
                (7, 130, 37),
                (64, 9, 1000),
            ],
        );
    }

    #[test]
    fn nn_matches_the_reference_on_edge_shapes() {
        check(
            false,
            &[
                (1, 16, 1),
                (3, 17, 9),
                (4, 32, 16),
                (32, 256, 1024),
                (7, 130, 37),
                (64, 40, 100),
                (9, 35, 700),
            ],
        );
    }
}
