//! Matrix products with few rows of A, in f32, on x86-64 CPUs with AVX-512
//! (or AVX2 and FMA) — the shapes of a recurrent step on the CPU: `C = A·Bᵀ`
//! for the forward (`h_prev [B, H] · W_hhᵀ`, the NT kernel) and `C = A·B` for
//! the backward (`dG [B, G·H] · W_hh`, the NN kernel), both through [`run`].
//!
//! A general GEMM packs both operands on every call; for a recurrent step that
//! means repacking the whole weight matrix at every time step. Here both
//! operands are read in place and nothing is copied. The result is the same
//! function as [`super::matmul::gemm_reference`]; only the summation order
//! differs (tested below against it), and it is fixed by the shape: the two
//! threads a large product is split over write disjoint columns of C.
//!
//! The NT kernel computes each output as a dot product of two contiguous rows,
//! in blocks of rows of A × rows of B: with AVX-512 4×4 blocks of sixteen-lane
//! FMAs (sixteen accumulators, eight loads per sixteen multiply-adds, the k
//! tail as a masked load), the sixteen lane sums reduced together at the end;
//! with AVX2 2×4 blocks of eight-lane FMAs (eight accumulators and six loaded
//! vectors fit the sixteen AVX registers).
//!
//! The NN kernel (AVX2) walks A's rows four at a time and B's rows in order,
//! broadcasting one value of each A row against sixteen contiguous values of
//! a B row (eight accumulators). It runs over k in blocks of 256 rows of B
//! (`KC`), so that a 16-column strip of B stays in the L1 cache while every
//! row block of A passes over it (for `dG · W_hh` at B = 32, H = 256 this took
//! the product from about 60 to 110 GFLOP/s on two cores). With AVX-512 the
//! general GEMM (`gemm`'s kernels) does the NN product better; see [`run`].
//!
//! Which products come here at all is [`run`]'s choice, by shape and
//! instruction set; [`run_isa`] runs a given set's kernels on every shape they
//! cover (the tests use it to check both sets on this CPU).

use crate::ops::matmul::Gemm;

/// Rows of A per block of the AVX2 NT kernel.
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 2;

/// Rows of B (the k extent) per block of the AVX2 NN product (a 16-column
/// strip: 16 KiB).
#[cfg(target_arch = "x86_64")]
const KC: usize = 256;

/// Rows of A at most for which this path is used.
pub const MAX_ROWS: usize = 64;

/// k at least for which [`run`] takes the NT kernels: below it the lane sums
/// at the end of every output cost about as much as the products, and the
/// packing GEMM does better (at M = 32: 125 against 140 GFLOP/s at k = 64,
/// even at k = 128, 250 against 70–110 at k = 256, on one Zen 5 core).
pub const NT_MIN_K: usize = 128;

/// m·n·k at least for which a product is split over the thread pool.
const SPLIT_MIN: usize = 1 << 20;

/// The instruction sets the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX2 and FMA: eight-lane kernels.
    Avx2,
    /// AVX-512 F: sixteen-lane kernels with masked edges.
    Avx512,
}

impl Isa {
    /// The widest set this CPU has, or `None` (no kernel runs).
    pub fn detect() -> Option<Isa> {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|isa| isa.available())
    }

    /// Whether this CPU can run kernels written for `self`.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Avx512 => std::is_x86_feature_detected!("avx512f"),
                Isa::Avx2 => {
                    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// `C (+)= op(A)·op(B)` for a [`Gemm`] with A not transposed (bias left out),
/// where a kernel here beats the general GEMM: the NT product with k ≥
/// [`NT_MIN_K`] on a CPU with AVX-512 or AVX2 and FMA, the NN product on one
/// with AVX2 and FMA but not AVX-512 (there `gemm`'s AVX-512 kernels on one
/// core took a recurrent step's `dG · W_hh` in less time than an AVX-512
/// version of this kernel on two, 85 against 105 µs, with the weights cold
/// in the cache). Returns false, touching nothing, elsewhere.
///
/// # Safety
/// `g` must have passed `Gemm::validate` against the lengths of `a`, `b` and `c`.
pub unsafe fn run(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> bool {
    let Some(isa) = Isa::detect() else {
        return false;
    };
    let wins = if g.trans_b {
        g.k >= NT_MIN_K
    } else {
        isa == Isa::Avx2
    };
    // SAFETY: forwarded from the caller's contract; the ISA is this CPU's.
    wins && unsafe { run_isa(isa, g, a, b, c) }
}

/// The kernels written for `isa`, which the caller has checked this CPU has
/// ([`Isa::available`]), on every shape they cover: `C[i, j] (+)= Σ_p A[i,
/// p]·B[j, p]` (the NT kernel) when B is transposed, `C[i, j] (+)= Σ_p A[i,
/// p]·B[p, j]` (the NN kernel, AVX2 only) otherwise, on the operands at their
/// offsets. Returns false, touching nothing, where none applies (A
/// transposed, more than [`MAX_ROWS`] rows, the NN product with AVX-512, a
/// shape below the AVX2 kernel's block).
///
/// # Safety
/// As for [`run`], and `isa.available()` must hold.
pub unsafe fn run_isa(isa: Isa, g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let (m, n, k) = (g.m, g.n, g.k);
        // The AVX2 NT kernel needs one 8-lane step of k, its NN kernel one
        // 16-column strip (the AVX-512 NT kernel masks its edges); `align` is
        // the column block each one works in.
        let (fits, align) = match (isa, g.trans_b) {
            (Isa::Avx2, true) => (k >= 8, 4),
            (Isa::Avx2, false) => (n >= 16, 16),
            (Isa::Avx512, true) => (true, 4),
            (Isa::Avx512, false) => (false, 0),
        };
        if g.trans_a || !fits || m == 0 || n == 0 || k == 0 || m > MAX_ROWS {
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
        // SAFETY (of each call): the caller checked that this CPU has `isa`.
        let columns = |from: usize, to: usize| unsafe {
            match (isa, g.trans_b) {
                (Isa::Avx2, true) => job.columns_avx2(from, to),
                (Isa::Avx2, false) => job.nn_columns_avx2(from, to),
                (Isa::Avx512, _) => job.nt_columns_avx512(from, to),
            }
        };
        // Split the columns of C over the pool's threads when there is enough
        // work, the same part to the same thread on every call: a recurrent
        // step multiplies by the same weights T times, and each core then
        // keeps its part of them in its own cache. Each output is computed
        // whole by one thread, so the split does not change the result.
        let threads = rayon::current_num_threads();
        if m * n * k >= SPLIT_MIN && n >= 2 * align && threads > 1 {
            rayon::broadcast(|ctx| {
                let width = n.div_ceil(ctx.num_threads()).div_ceil(align) * align;
                let from = (ctx.index() * width).min(n);
                let to = (from + width).min(n);
                if from < to {
                    columns(from, to);
                }
            });
        } else {
            columns(0, n);
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, g, a, b, c);
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

#[cfg(target_arch = "x86_64")]
impl Job {
    /// The NT product with AVX-512, columns `from..to` of C: each block of four
    /// columns (four rows of B, which then stay in the L1 cache) against every
    /// block of four rows of A (all of A, M·k ≤ 64·k values, read from the
    /// cache again for every block of columns).
    #[target_feature(enable = "avx512f")]
    unsafe fn nt_columns_avx512(&self, from: usize, to: usize) {
        let mut j0 = from;
        while j0 < to {
            let nj = (to - j0).min(4);
            let mut i0 = 0;
            while i0 < self.m {
                let mi = (self.m - i0).min(4);
                // SAFETY: rows i0..i0+mi of A, j0..j0+nj of B and the block of C
                // are inside the operands by `run`'s contract.
                unsafe { self.nt_block_avx512(i0, mi, j0, nj, i0 == 0 && j0 + 4 < to) };
                i0 += 4;
            }
            j0 += 4;
        }
    }

    /// One block of up to 4×4 outputs, sixteen lanes of k at a time (the
    /// tail's lanes masked). Rows beyond `mi`/`nj` reuse the block's first row
    /// (valid memory) and their results are dropped. With `prefetch` (the
    /// first row block of A against these rows of B), the next block's four
    /// rows of B are requested meanwhile: in a recurrent step the weights have
    /// often left the core's caches since the last step.
    #[target_feature(enable = "avx512f")]
    unsafe fn nt_block_avx512(&self, i0: usize, mi: usize, j0: usize, nj: usize, prefetch: bool) {
        use std::arch::x86_64::*;
        let arow = |r: usize| unsafe { self.a.0.add((i0 + if r < mi { r } else { 0 }) * self.lda) };
        let brow = |r: usize| unsafe { self.b.0.add((j0 + if r < nj { r } else { 0 }) * self.ldb) };
        let arows = [arow(0), arow(1), arow(2), arow(3)];
        let brows = [brow(0), brow(1), brow(2), brow(3)];
        let mut acc = [_mm512_setzero_ps(); 16];
        let mut p = 0;
        while p < self.k {
            let mask = lane_mask(self.k - p);
            // SAFETY: p < k, so every pointer is inside its row; lanes at or
            // beyond k are masked off (read as zero, never touched).
            unsafe {
                let b = [
                    _mm512_maskz_loadu_ps(mask, brows[0].add(p)),
                    _mm512_maskz_loadu_ps(mask, brows[1].add(p)),
                    _mm512_maskz_loadu_ps(mask, brows[2].add(p)),
                    _mm512_maskz_loadu_ps(mask, brows[3].add(p)),
                ];
                if prefetch {
                    for row in brows {
                        let next = row.wrapping_add(4 * self.ldb + p) as *const i8;
                        _mm_prefetch::<_MM_HINT_T0>(next);
                    }
                }
                for r in 0..4 {
                    let a = _mm512_maskz_loadu_ps(mask, arows[r].add(p));
                    for q in 0..4 {
                        acc[r * 4 + q] = _mm512_fmadd_ps(a, b[q], acc[r * 4 + q]);
                    }
                }
            }
            p += 16;
        }
        for r in 0..mi {
            let s = sum4([acc[r * 4], acc[r * 4 + 1], acc[r * 4 + 2], acc[r * 4 + 3]]);
            // SAFETY: (i0 + r, j0 + q) is inside C for q < nj.
            unsafe {
                let out = self.c.0.add((i0 + r) * self.ldc + j0);
                if nj == 4 {
                    let s = if self.accumulate {
                        _mm_add_ps(_mm_loadu_ps(out), s)
                    } else {
                        s
                    };
                    _mm_storeu_ps(out, s);
                } else {
                    let mut sums = [0.0f32; 4];
                    _mm_storeu_ps(sums.as_mut_ptr(), s);
                    for (q, &sum) in sums.iter().enumerate().take(nj) {
                        let o = out.add(q);
                        *o = if self.accumulate { *o + sum } else { sum };
                    }
                }
            }
        }
    }
}

/// The first `min(lanes, 16)` lanes.
#[cfg(target_arch = "x86_64")]
#[inline]
fn lane_mask(lanes: usize) -> u16 {
    if lanes >= 16 {
        u16::MAX
    } else {
        (1u16 << lanes) - 1
    }
}

/// The lane sums of four vectors, `[Σ v0, Σ v1, Σ v2, Σ v3]`: each halved to
/// eight lanes, then pairwise sums across the four.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn sum4(v: [std::arch::x86_64::__m512; 4]) -> std::arch::x86_64::__m128 {
    use std::arch::x86_64::*;
    let h = v.map(|x| {
        let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x));
        _mm256_add_ps(_mm512_castps512_ps256(x), _mm256_castpd_ps(hi))
    });
    // hadd(a, b) = [a0+a1, a2+a3, b0+b1, b2+b3] in each 128-bit half.
    let t = _mm256_hadd_ps(_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
    _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::matmul::gemm_reference;
    use crate::parity::uniform;

    fn random(seed: u64, len: usize) -> Vec<f32> {
        uniform(seed, len, -1.0, 1.0)
            .iter()
            .map(|&x| x as f32)
            .collect()
    }

    /// Each instruction set's kernels this CPU has, against the reference on
    /// padded strides, storing and accumulating. The AVX2 kernels decline
    /// shapes below their block (k < 8 for NT, n < 16 for NN); the AVX-512 NT
    /// kernel declines none, and there is no AVX-512 NN kernel.
    fn check(trans_b: bool, shapes: &[(usize, usize, usize)]) {
        for isa in [Isa::Avx2, Isa::Avx512] {
            if isa.available() {
                check_isa(isa, trans_b, shapes);
            }
        }
    }

    fn check_isa(isa: Isa, trans_b: bool, shapes: &[(usize, usize, usize)]) {
        for &(m, n, k) in shapes {
            let covered = match (isa, trans_b) {
                (Isa::Avx2, true) => k >= 8,
                (Isa::Avx2, false) => n >= 16,
                (Isa::Avx512, true) => true,
                (Isa::Avx512, false) => false,
            };
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
                // SAFETY: validated just above; `check` ran only the
                // instruction sets this CPU has.
                let ran = unsafe { run_isa(isa, &g, &a, &b, &mut got) };
                assert_eq!(ran, covered, "{isa:?} {m}x{n}x{k}: ran {ran}");
                if !ran {
                    assert_eq!(got, c0, "{isa:?} {m}x{n}x{k}: declined but wrote C");
                    continue;
                }
                for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                    let tol = 1e-5 * (k as f32).sqrt() * (1.0 + w.abs());
                    assert!(
                        (w - g).abs() <= tol,
                        "{isa:?} {m}x{n}x{k} [{i}]: {w} vs {g}"
                    );
                }
            }
        }
    }

    #[test]
    fn nt_matches_the_reference_on_edge_shapes() {
        check(
            true,
            &[
                (1, 1, 1),
                (2, 3, 7),
                (1, 1, 8),
                (3, 5, 9),
                (5, 6, 17),
                (4, 4, 16),
                (32, 1024, 256),
                (7, 130, 37),
                (64, 9, 1000),
                (17, 1023, 100),
            ],
        );
    }

    #[test]
    fn nn_matches_the_reference_on_edge_shapes() {
        check(
            false,
            &[
                (1, 1, 1),
                (2, 15, 3),
                (1, 16, 1),
                (3, 17, 9),
                (13, 70, 300),
                (6, 64, 129),
                (4, 32, 16),
                (32, 256, 1024),
                (7, 130, 37),
                (64, 40, 100),
                (9, 35, 700),
                (32, 200, 512),
            ],
        );
    }

    #[test]
    fn run_takes_only_the_products_it_wins() {
        let Some(isa) = Isa::detect() else {
            return; // no kernel on this CPU: `run` declines everything
        };
        let (a, b) = (random(1, 32 * 1024), random(2, 1024 * 1024));
        let mut c = vec![0.0; 32 * 1024];
        for (g, want) in [
            (Gemm::nt(32, 1024, NT_MIN_K), true),
            (Gemm::nt(32, 1024, NT_MIN_K - 1), false),
            (Gemm::nn(32, 256, 1024), isa == Isa::Avx2),
            (Gemm::tn(32, 256, 32), false),
            (Gemm::nt(MAX_ROWS + 1, 8, 256), false),
        ] {
            g.validate(a.len(), b.len(), None, c.len()).unwrap();
            // SAFETY: validated just above.
            let ran = unsafe { run(&g, &a, &b, &mut c) };
            assert_eq!(ran, want, "{isa:?}: {g:?}");
        }
    }
}
