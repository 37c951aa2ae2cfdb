//! Matrix multiply: `C = op(A)·op(B) (+ bias) (+ C)`.
//!
//! One description, [`Gemm`], drives three implementations that compute the
//! same function:
//! - [`gemm_reference`]: three plain loops, the definition, read it first;
//! - [`gemm_cpu`]: the CPU path, through the `gemm` crate, and for the f32
//!   products of a recurrent step through `ops::small_gemm` (tested against the loops);
//! - [`gemm_gpu`]: `shaders/matmul.wgsl`, in a [`GemmKernel::Naive`], a
//!   [`GemmKernel::Tiled`] (64×64 workgroup-memory tiles, 4×4 register blocks)
//!   and a [`GemmKernel::Large`] variant (128×128 tiles, 8×8 register blocks
//!   read as vec4, next stage prefetched); [`GemmKernel::Auto`] picks by size.
//!
//! All matrices are row-major. `op(A)` is `M×K`: A is stored `[M, K]`, or `[K, M]`
//! when `trans_a`. `op(B)` is `K×N`: B is stored `[K, N]`, or `[N, K]` when
//! `trans_b`. The forward pass uses NT (`x · Wᵀ`), the backward pass NN
//! (`dY · W`) and TN (`dYᵀ · X`).
//!
//! ```
//! use rnn_wgpu::ops::matmul::{gemm_cpu, gemm_reference, Gemm};
//!
//! # fn main() -> rnn_wgpu::Result<()> {
//! // C[2, 2] = A[2, 3] · B[2, 3]ᵀ + bias, B read from offset 1 of its buffer.
//! let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
//! let b = [9.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]; // rows [1, 0, 0] and [0, 0, 1]
//! let bias = [10.0, 20.0];
//! let g = Gemm::nt(2, 2, 3).offsets(0, 1, 0).with_bias(0);
//! let mut c = [0.0; 4];
//! gemm_cpu(&g, &a, &b, Some(&bias), &mut c)?;
//! assert_eq!(c, [11.0, 23.0, 14.0, 26.0]);
//! let mut r = [0.0; 4];
//! gemm_reference(&g, &a, &b, Some(&bias), &mut r)?;
//! assert_eq!(r, c);
//! # Ok(())
//! # }
//! ```

use crate::error::{Error, Result};
use crate::gpu::kernel::{Access, KernelDef, KernelInfo, Shader, binding_names, kernel_params};
use crate::gpu::{DType, GpuTensor, Recorder};
use crate::ops::memory::read_layout;
use crate::real::Real;

/// A matrix multiply: sizes, layouts, element offsets and epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gemm {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// A is stored `[K, M]`.
    pub trans_a: bool,
    /// B is stored `[N, K]`.
    pub trans_b: bool,
    /// Row stride of A as stored.
    pub lda: usize,
    /// Row stride of B as stored.
    pub ldb: usize,
    /// Row stride of C.
    pub ldc: usize,
    /// Element offset of A in its buffer.
    pub a_off: usize,
    /// Element offset of B in its buffer.
    pub b_off: usize,
    /// Element offset of C in its buffer.
    pub c_off: usize,
    /// Element offset of the bias in its buffer.
    pub bias_off: usize,
    /// Add `bias[n]` to every row.
    pub bias: bool,
    /// Add to C instead of overwriting it.
    pub accumulate: bool,
    /// How a packed A (16-bit values two a word, on the GPU) pairs its
    /// elements: 0 side by side, P > 0 blocks of P (element `e` of block
    /// `u = e / P` in half `u & 1` of word `(u >> 1)·P + e mod P`: the LSTM's
    /// gate layout, shaders/common.wgsl's `pair_word`). The CPU, whose
    /// tensors hold one value a word, ignores it.
    pub a_pairs: usize,
    /// The same for a packed C. C's rows and offset then start on a word
    /// pair (multiples of 2, or of 2P).
    pub c_pairs: usize,
}

impl Gemm {
    /// `C[M,N] = A[M,K] · B[K,N]`, contiguous.
    pub fn nn(m: usize, n: usize, k: usize) -> Self {
        Gemm {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            lda: k,
            ldb: n,
            ldc: n,
            a_off: 0,
            b_off: 0,
            c_off: 0,
            bias_off: 0,
            bias: false,
            accumulate: false,
            a_pairs: 0,
            c_pairs: 0,
        }
    }

    /// `C[M,N] = A[M,K] · B[N,K]ᵀ`, contiguous (a linear layer: `x · Wᵀ`).
    pub fn nt(m: usize, n: usize, k: usize) -> Self {
        Gemm {
            trans_b: true,
            ldb: k,
            ..Gemm::nn(m, n, k)
        }
    }

    /// `C[M,N] = A[K,M]ᵀ · B[K,N]`, contiguous (a weight gradient: `dYᵀ · X`).
    pub fn tn(m: usize, n: usize, k: usize) -> Self {
        Gemm {
            trans_a: true,
            lda: m,
            ..Gemm::nn(m, n, k)
        }
    }

    /// Adds `bias[bias_off + j]` to column `j`.
    pub fn with_bias(mut self, bias_off: usize) -> Self {
        self.bias = true;
        self.bias_off = bias_off;
        self
    }

    /// Accumulates into C.
    pub fn accumulating(mut self, accumulate: bool) -> Self {
        self.accumulate = accumulate;
        self
    }

    /// Sets the element offsets of A, B and C.
    pub fn offsets(mut self, a_off: usize, b_off: usize, c_off: usize) -> Self {
        self.a_off = a_off;
        self.b_off = b_off;
        self.c_off = c_off;
        self
    }

    /// Sets how a packed A and a packed C pair their elements (see
    /// [`Gemm::a_pairs`]).
    pub fn paired(mut self, a_pairs: usize, c_pairs: usize) -> Self {
        self.a_pairs = a_pairs;
        self.c_pairs = c_pairs;
        self
    }

    /// Sets the row strides of A, B and C.
    pub fn strides(mut self, lda: usize, ldb: usize, ldc: usize) -> Self {
        self.lda = lda;
        self.ldb = ldb;
        self.ldc = ldc;
        self
    }

    /// FLOPs of the multiply (2·M·N·K).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// (stored rows, stored columns) of A.
    fn a_stored(&self) -> (usize, usize) {
        if self.trans_a {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        }
    }

    fn b_stored(&self) -> (usize, usize) {
        if self.trans_b {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        }
    }

    /// Index of `op(A)[i, p]` in A's buffer.
    #[inline]
    pub fn a_index(&self, i: usize, p: usize) -> usize {
        if self.trans_a {
            self.a_off + p * self.lda + i
        } else {
            self.a_off + i * self.lda + p
        }
    }

    /// Index of `op(B)[p, j]` in B's buffer.
    #[inline]
    pub fn b_index(&self, p: usize, j: usize) -> usize {
        if self.trans_b {
            self.b_off + j * self.ldb + p
        } else {
            self.b_off + p * self.ldb + j
        }
    }

    /// Index of `C[i, j]`.
    #[inline]
    pub fn c_index(&self, i: usize, j: usize) -> usize {
        self.c_off + i * self.ldc + j
    }

    /// Checks sizes, strides and that every addressed element is inside its buffer.
    pub fn validate(
        &self,
        a_len: usize,
        b_len: usize,
        bias_len: Option<usize>,
        c_len: usize,
    ) -> Result<()> {
        for (name, v) in [("m", self.m), ("n", self.n), ("k", self.k)] {
            if v == 0 {
                return Err(Error::invalid(
                    format!("matmul {name}"),
                    "must be at least 1 (empty matrices are rejected)",
                ));
            }
        }
        let check = |arg: &str, (rows, cols): (usize, usize), ld: usize, off: usize, len: usize| {
            if ld < cols {
                return Err(Error::invalid(
                    format!("matmul {arg}"),
                    format!("row stride {ld} is smaller than the row length {cols}"),
                ));
            }
            let extent = (rows - 1)
                .checked_mul(ld)
                .and_then(|v| v.checked_add(off))
                .and_then(|v| v.checked_add(cols))
                .unwrap_or(usize::MAX);
            if extent > len {
                return Err(Error::invalid(
                    format!("matmul {arg}"),
                    format!(
                        "a {rows}x{cols} matrix at offset {off} with row stride {ld} needs \
                         {extent} elements, the buffer has {len}"
                    ),
                ));
            }
            Ok(())
        };
        check("A", self.a_stored(), self.lda, self.a_off, a_len)?;
        check("B", self.b_stored(), self.ldb, self.b_off, b_len)?;
        check("C", (self.m, self.n), self.ldc, self.c_off, c_len)?;
        match (self.bias, bias_len) {
            (true, Some(len)) => check("bias", (1, self.n), self.n, self.bias_off, len)?,
            (true, None) => {
                return Err(Error::invalid(
                    "matmul bias",
                    "the Gemm asks for a bias but none was given",
                ));
            }
            (false, _) => {}
        }
        Ok(())
    }
}

/// The definition: `C[i,j] = Σ_p op(A)[i,p]·op(B)[p,j] + bias[j] (+ C[i,j])`.
pub fn gemm_reference<T: Real>(
    g: &Gemm,
    a: &[T],
    b: &[T],
    bias: Option<&[T]>,
    c: &mut [T],
) -> Result<()> {
    g.validate(a.len(), b.len(), bias.map(|x| x.len()), c.len())?;
    for i in 0..g.m {
        for j in 0..g.n {
            let mut acc = T::zero();
            for p in 0..g.k {
                acc += a[g.a_index(i, p)] * b[g.b_index(p, j)];
            }
            if let (true, Some(bias)) = (g.bias, bias) {
                acc += bias[g.bias_off + j];
            }
            let idx = g.c_index(i, j);
            if g.accumulate {
                acc += c[idx];
            }
            c[idx] = acc;
        }
    }
    Ok(())
}

/// [`super::small_gemm::run`] when `T` is f32 (it returns false, touching
/// nothing, where it does not apply); false for other types.
fn small_f32<T: Real>(g: &Gemm, a: &[T], b: &[T], c: &mut [T]) -> bool {
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<f32>() {
        return false;
    }
    // T is f32, so these casts reinterpret the same elements.
    let (a, b): (&[f32], &[f32]) = (bytemuck::cast_slice(a), bytemuck::cast_slice(b));
    let c: &mut [f32] = bytemuck::cast_slice_mut(c);
    // SAFETY: the caller validated `g` against these operands' lengths.
    unsafe { super::small_gemm::run(g, a, b, c) }
}

/// The CPU path: the same function through `gemm`'s blocked kernels
/// ([`Real::gemm_raw`]), or `ops::small_gemm`'s where they win.
pub fn gemm_cpu<T: Real>(
    g: &Gemm,
    a: &[T],
    b: &[T],
    bias: Option<&[T]>,
    c: &mut [T],
) -> Result<()> {
    g.validate(a.len(), b.len(), bias.map(|x| x.len()), c.len())?;
    // A recurrent step's `h · W_hhᵀ` (few rows of A; and `dG · W_hh` on CPUs
    // with AVX2 but not AVX-512) skips the packing a general GEMM does on
    // every call (f32; see ops::small_gemm).
    if small_f32(g, a, b, c) {
        add_bias(g, bias, c);
        return Ok(());
    }
    // Transposes are strides: op(A)[i,p] = A[a_index(i,p)].
    let (rsa, csa) = if g.trans_a { (1, g.lda) } else { (g.lda, 1) };
    let (rsb, csb) = if g.trans_b { (1, g.ldb) } else { (g.ldb, 1) };
    let beta = if g.accumulate { T::one() } else { T::zero() };
    // SAFETY: `validate` proved every element addressed through these offsets
    // and strides lies inside `a`, `b` and `c`; `c` is a unique borrow, so it
    // cannot overlap `a` or `b`.
    unsafe {
        T::gemm_raw(
            g.m,
            g.k,
            g.n,
            T::one(),
            a.as_ptr().add(g.a_off),
            rsa as isize,
            csa as isize,
            b.as_ptr().add(g.b_off),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr().add(g.c_off),
            g.ldc as isize,
            1,
        );
    }
    add_bias(g, bias, c);
    Ok(())
}

/// Adds the bias row to every row of C (after the product, as the shader does).
fn add_bias<T: Real>(g: &Gemm, bias: Option<&[T]>, c: &mut [T]) {
    if let (true, Some(bias)) = (g.bias, bias) {
        let bias = &bias[g.bias_off..g.bias_off + g.n];
        for i in 0..g.m {
            let row = &mut c[g.c_index(i, 0)..g.c_index(i, 0) + g.n];
            for (x, &b) in row.iter_mut().zip(bias) {
                *x += b;
            }
        }
    }
}

/// GPU kernel variant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GemmKernel {
    /// One invocation per element of C; kept as the readable reference.
    Naive,
    /// 64×64 tiles in workgroup memory with 4×4 register blocks.
    Tiled,
    /// 128×128 tiles with 8×8 register blocks, K staged 8 deep with the next
    /// stage prefetched into registers: four times the work per workgroup.
    Large,
    /// [`GemmKernel::Large`] when its grid has at least
    /// [`GemmKernel::LARGE_MIN_GROUPS`] workgroups, else [`GemmKernel::Tiled`].
    #[default]
    Auto,
}

impl GemmKernel {
    /// Every variant that runs as itself (all but [`GemmKernel::Auto`]).
    pub const FORCED: [GemmKernel; 3] = [GemmKernel::Naive, GemmKernel::Tiled, GemmKernel::Large];

    /// See [`GemmKernel::Auto`]: below this many 128×128 tiles, the 64×64
    /// tiles keep more of a GPU busy.
    pub const LARGE_MIN_GROUPS: u64 = 256;

    /// The variant that runs `g`.
    pub fn resolve(self, g: &Gemm) -> GemmKernel {
        match self {
            GemmKernel::Auto if tiles(g, 128) >= Self::LARGE_MIN_GROUPS => GemmKernel::Large,
            GemmKernel::Auto => GemmKernel::Tiled,
            k => k,
        }
    }

    /// Its name in benchmarks and reports.
    pub fn name(self) -> &'static str {
        match self {
            GemmKernel::Naive => "naive",
            GemmKernel::Tiled => "tiled",
            GemmKernel::Large => "large",
            GemmKernel::Auto => "auto",
        }
    }
}

/// How the GPU splits a product's K (the reduction) over workgroups
/// (`GpuBackend::with_split_k`). A weight gradient sums over K = T·B rows
/// into few output tiles, too few to occupy a GPU: split, each copy of the
/// tiles sums a contiguous range of K into a scratch, and a second pass adds
/// the partials in a fixed order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SplitK {
    /// Split when the output has fewer than [`SplitK::TARGET_GROUPS`] tiles
    /// and K holds at least two [`SplitK::MIN_CHUNK`] ranges: into as many
    /// as reach the target, at most [`SplitK::MAX_SPLITS`].
    #[default]
    Auto,
    /// Never split.
    Off,
    /// Into about this many ranges (at most K; 1 is no split): K is cut
    /// into equal ranges of ⌈K / n⌉, so the count may come out lower.
    Into(usize),
}

impl SplitK {
    /// See [`SplitK::Auto`].
    pub const TARGET_GROUPS: u64 = 256;
    /// See [`SplitK::Auto`].
    pub const MIN_CHUNK: usize = 256;
    /// See [`SplitK::Auto`].
    pub const MAX_SPLITS: usize = 32;

    /// `(splits, chunk)`: how many ranges of K `g` is summed in with the
    /// (resolved) `kernel`, and the length of all but the last. The naive
    /// kernel never splits.
    pub fn plan(self, g: &Gemm, kernel: GemmKernel) -> (usize, usize) {
        let side = match kernel {
            GemmKernel::Naive => return (1, g.k),
            GemmKernel::Large => 128,
            _ => 64,
        };
        let wanted = match self {
            SplitK::Off => 1,
            SplitK::Into(n) => n.clamp(1, g.k.max(1)),
            SplitK::Auto => {
                let tiles = tiles(g, side);
                // (An empty output is refused by validation.)
                if tiles == 0 || tiles >= Self::TARGET_GROUPS || g.k < 2 * Self::MIN_CHUNK {
                    1
                } else {
                    ((Self::TARGET_GROUPS / tiles) as usize)
                        .min(g.k / Self::MIN_CHUNK)
                        .clamp(1, Self::MAX_SPLITS)
                }
            }
        };
        let chunk = g.k.div_ceil(wanted.max(1)).max(1);
        (g.k.div_ceil(chunk).max(1), chunk)
    }
}

/// Square tiles of side `side` covering C.
fn tiles(g: &Gemm, side: u64) -> u64 {
    (g.m as u64).div_ceil(side) * (g.n as u64).div_ceil(side)
}

kernel_params! {
    struct Params {
        m: u32,
        n: u32,
        k: u32,
        lda: u32,
        ldb: u32,
        ldc: u32,
        a_off: u32,
        b_off: u32,
        c_off: u32,
        bias_off: u32,
        flags: u32,
        splits: u32,
        k_chunk: u32,
        a_kstep: u32,
        b_kstep: u32,
        c_split: u32,
        c_pairs: u32,
        a_pairs: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

// Binding numbers of `shaders/matmul.wgsl`, named after its variables.
binding_names! {
    A = 1,
    B = 2,
    BIAS = 3,
    C = 4,
}

const BINDINGS: &[(u32, Access)] = &[
    (binding::A, Access::Read),
    (binding::B, Access::Read),
    (binding::BIAS, Access::Read),
    (binding::C, Access::ReadWrite),
];

const CONSTANTS: &[&str] = &[
    "TRANS_A",
    "TRANS_B",
    "STORE",
    "A_LAYOUT",
    "B_LAYOUT",
    "BIAS_LAYOUT",
    "VCOLS",
    "C_LAYOUT",
];

const NAIVE: KernelDef<Params> =
    KernelDef::new(Shader::Matmul, "matmul_naive", BINDINGS, CONSTANTS);

const TILED: KernelDef<Params> =
    KernelDef::new(Shader::Matmul, "matmul_tiled", BINDINGS, CONSTANTS);

const LARGE: KernelDef<Params> =
    KernelDef::new(Shader::Matmul, "matmul_large", BINDINGS, CONSTANTS);

const SPLIT_SUM: KernelDef<Params> = KernelDef::new(
    Shader::Matmul,
    "matmul_split_sum",
    &[
        (binding::A, Access::Read),
        (binding::BIAS, Access::Read),
        (binding::C, Access::ReadWrite),
    ],
    &["STORE", "BIAS_LAYOUT", "VCOLS", "C_LAYOUT"],
);

/// Every kernel of this module (see [`super::kernels`]).
pub(super) const KERNELS: &[KernelInfo] =
    &[NAIVE.info(), TILED.info(), LARGE.info(), SPLIT_SUM.info()];

/// Elements of the scratch a split product needs (`splits · M · N`).
pub fn split_scratch_len(g: &Gemm, splits: usize) -> usize {
    if splits <= 1 {
        0
    } else {
        splits.saturating_mul(g.m).saturating_mul(g.n)
    }
}

/// Converts a size or offset to the u32 the shaders index with.
pub(crate) fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(what, format!("{v} does not fit in 32 bits")))
}

/// Records `C = op(A)·op(B) (+ bias) (+ C)` on the GPU, K split as `split`
/// plans it: a split product needs `scratch` (f32, at least
/// [`split_scratch_len`] elements); without one it is not split.
#[allow(clippy::too_many_arguments)]
pub fn gemm_gpu(
    rec: &mut Recorder<'_>,
    kernel: GemmKernel,
    split: SplitK,
    g: &Gemm,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    c: &GpuTensor,
    scratch: Option<&GpuTensor>,
) -> Result<()> {
    let a_layout = read_layout("matmul A", a)?;
    let b_layout = read_layout("matmul B", b)?;
    let c_layout = read_layout("matmul C", c)?;
    let bias_layout = bias.map(|t| read_layout("matmul bias", t)).transpose()?;
    g.validate(a.len(), b.len(), bias.map(|x| x.len()), c.len())?;
    check_pairs(g, a_layout > 0.0, c_layout > 0.0)?;
    // Every index the kernels form must fit in u32 (the hot kernels run
    // without runtime bounds checks).
    let extent = |(rows, cols): (usize, usize), ld: usize, off: usize| {
        (rows - 1)
            .saturating_mul(ld)
            .saturating_add(off)
            .saturating_add(cols)
    };
    u32_of("matmul A's extent", extent(g.a_stored(), g.lda, g.a_off))?;
    u32_of("matmul B's extent", extent(g.b_stored(), g.ldb, g.b_off))?;
    u32_of("matmul C's extent", extent((g.m, g.n), g.ldc, g.c_off))?;
    let params = Params {
        m: u32_of("m", g.m)?,
        n: u32_of("n", g.n)?,
        k: u32_of("k", g.k)?,
        lda: u32_of("lda", g.lda)?,
        ldb: u32_of("ldb", g.ldb)?,
        ldc: u32_of("ldc", g.ldc)?,
        a_off: u32_of("a_off", g.a_off)?,
        b_off: u32_of("b_off", g.b_off)?,
        c_off: u32_of("c_off", g.c_off)?,
        bias_off: u32_of("bias_off", g.bias_off)?,
        flags: (g.bias as u32) | ((g.accumulate as u32) << 1),
        splits: 1,
        k_chunk: 0,
        a_kstep: 0,
        b_kstep: 0,
        c_split: 0,
        c_pairs: u32_of("c_pairs", g.c_pairs)?,
        a_pairs: u32_of("a_pairs", g.a_pairs)?,
        _pad0: 0,
        _pad1: 0,
    };
    let mut constants = [
        ("TRANS_A", g.trans_a as u32 as f64),
        ("TRANS_B", g.trans_b as u32 as f64),
        crate::ops::memory::store_constant(c),
        ("A_LAYOUT", a_layout),
        ("B_LAYOUT", b_layout),
        // Without a bias the binding holds A (its layout then, unread).
        ("BIAS_LAYOUT", bias_layout.unwrap_or(a_layout)),
        ("VCOLS", (c_layout > 0.0) as u32 as f64),
        ("C_LAYOUT", c_layout),
    ];
    // Without a bias the binding still needs a read-only buffer: reuse A.
    let bias_buf = bias.unwrap_or(a).buffer();
    let resolved = kernel.resolve(g);
    let (spec, groups) = match resolved {
        GemmKernel::Naive => (NAIVE, (g.m as u64 * g.n as u64).div_ceil(64)),
        GemmKernel::Large => (LARGE, tiles(g, 128)),
        GemmKernel::Tiled | GemmKernel::Auto => (TILED, tiles(g, 64)),
    };
    let (splits, chunk) = split.plan(g, resolved);
    let scratch = scratch.filter(|_| splits > 1);
    if scratch.is_some() {
        // The partials are f32 (in C's stored order); the sum stores into C
        // at C's precision and layout.
        constants[2].1 = 0.0;
        constants[7].1 = 0.0;
    }
    // The product: into C, or a split one's partials into the scratch.
    let (first, target, groups) = match scratch {
        None => (params, c, groups),
        Some(scratch) => {
            scratch.expect_dtype("matmul scratch", DType::F32)?;
            let need = split_scratch_len(g, splits);
            if scratch.len() < need {
                return Err(Error::invalid(
                    "matmul scratch",
                    format!(
                        "holds {} elements; a split into {splits} needs {need}",
                        scratch.len()
                    ),
                ));
            }
            u32_of("splits·M·N", need)?;
            // K steps along A's and B's stored rows or columns.
            let a_kstep = if g.trans_a { chunk * g.lda } else { chunk };
            let b_kstep = if g.trans_b { chunk } else { chunk * g.ldb };
            let part = Params {
                ldc: u32_of("N", g.n)?,
                c_off: 0,
                flags: 0,
                splits: u32_of("splits", splits)?,
                k_chunk: u32_of("k chunk", chunk)?,
                a_kstep: u32_of("A's K step", a_kstep)?,
                b_kstep: u32_of("B's K step", b_kstep)?,
                c_split: u32_of("M·N", g.m * g.n)?,
                ..params
            };
            (part, scratch, groups * splits as u64)
        }
    };
    rec.dispatch(
        spec,
        &constants,
        &[
            (binding::A, a.buffer()),
            (binding::B, b.buffer()),
            (binding::BIAS, bias_buf),
            (binding::C, target.buffer()),
        ],
        &first,
        rec.ctx().grid(groups)?,
    )?;
    let Some(scratch) = scratch else {
        return Ok(());
    };
    // The partials added in order, with the bias and the accumulation.
    let sum = Params {
        splits: first.splits,
        c_split: first.c_split,
        ..params
    };
    rec.dispatch(
        SPLIT_SUM,
        &[
            crate::ops::memory::store_constant(c),
            // Without a bias the binding holds the f32 scratch.
            ("BIAS_LAYOUT", bias_layout.unwrap_or(0.0)),
            ("VCOLS", (c_layout > 0.0) as u32 as f64),
            ("C_LAYOUT", c_layout),
        ],
        &[
            (binding::A, scratch.buffer()),
            (binding::BIAS, bias.unwrap_or(scratch).buffer()),
            (binding::C, c.buffer()),
        ],
        &sum,
        rec.ctx().grid((g.m as u64 * g.n as u64).div_ceil(256))?,
    )
}

/// Fails unless the pairings of `g` suit its operands: a pairing only for a
/// packed A or C, and a packed C whose rows and offset start on a word
/// (a pair of P-wide blocks with `c_pairs` = P), so that each word is one
/// row's two columns.
fn check_pairs(g: &Gemm, a_packed: bool, c_packed: bool) -> Result<()> {
    for (arg, pairs, packed) in [("A", g.a_pairs, a_packed), ("C", g.c_pairs, c_packed)] {
        if pairs > 0 && !packed {
            return Err(Error::invalid(
                format!("matmul {arg}"),
                format!(
                    "pairs its elements in blocks of {pairs}, which only a packed 16-bit tensor can"
                ),
            ));
        }
    }
    if !c_packed {
        return Ok(());
    }
    let unit = 2 * g.c_pairs.max(1);
    for (what, v) in [("columns", g.n), ("row stride", g.ldc), ("offset", g.c_off)] {
        if !v.is_multiple_of(unit) {
            return Err(Error::invalid(
                "matmul C",
                format!(
                    "is packed two values a word (pairs of blocks of {}), so its {what} must be \
                     a multiple of {unit}, not {v}; store C in 32-bit words (zeros_stored)",
                    g.c_pairs.max(1)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_the_large_tiles_from_256_of_them() {
        assert_eq!(
            GemmKernel::Auto.resolve(&Gemm::nt(2048, 2048, 8)),
            GemmKernel::Large
        ); // 256
        assert_eq!(
            GemmKernel::Auto.resolve(&Gemm::nt(1920, 2048, 8)),
            GemmKernel::Tiled
        ); // 240
        assert_eq!(
            GemmKernel::Auto.resolve(&Gemm::nt(3200, 4096, 512)),
            GemmKernel::Large
        );
        assert_eq!(
            GemmKernel::Auto.resolve(&Gemm::nt(50, 4096, 512)),
            GemmKernel::Tiled
        );
        assert_eq!(
            GemmKernel::Naive.resolve(&Gemm::nt(4096, 4096, 8)),
            GemmKernel::Naive
        );
        assert_eq!(
            GemmKernel::Large.resolve(&Gemm::nt(1, 1, 1)),
            GemmKernel::Large
        );
    }

    #[test]
    fn validate_names_the_bad_operand() {
        let g = Gemm::nn(2, 3, 4);
        let err = g.validate(7, 12, None, 6).unwrap_err().to_string();
        assert!(err.contains("matmul A"), "{err}");
        let err = Gemm::nn(0, 3, 4)
            .validate(8, 12, None, 6)
            .unwrap_err()
            .to_string();
        assert!(err.contains("matmul m"), "{err}");
        let err = g
            .with_bias(0)
            .validate(8, 12, None, 6)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bias"), "{err}");
    }

    #[test]
    fn cpu_path_matches_the_loops_in_every_layout() {
        let a: Vec<f64> = (0..40).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..40).map(|i| (i as f64 * 0.11).cos()).collect();
        let bias: Vec<f64> = (0..8).map(|i| i as f64 * 0.5).collect();
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let mut g = Gemm::nn(3, 4, 5).with_bias(1).accumulating(true);
            g.trans_a = ta;
            g.trans_b = tb;
            g.lda = if ta { 3 } else { 5 } + 1;
            g.ldb = if tb { 5 } else { 4 } + 2;
            g.ldc = 6;
            g.a_off = 2;
            g.b_off = 1;
            g.c_off = 3;
            let mut c1: Vec<f64> = (0..30).map(|i| i as f64).collect();
            let mut c2 = c1.clone();
            gemm_reference(&g, &a, &b, Some(&bias), &mut c1).unwrap();
            gemm_cpu(&g, &a, &b, Some(&bias), &mut c2).unwrap();
            for (x, y) in c1.iter().zip(&c2) {
                assert!((x - y).abs() < 1e-12, "{ta} {tb}: {x} vs {y}");
            }
        }
    }
}
