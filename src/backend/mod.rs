//! The backend trait: one set of kernel launches, two implementations.
//!
//! Layers, the BPTT scheduler and the training loop are written once against
//! [`Backend`]. [`CpuBackend`] runs every launch immediately in plain Rust
//! (generic over f32 and f64); [`GpuBackend`] records it for the GPU and submits
//! when results are read. The same schedule running on both is what lets us
//! compare CPU and GPU at every level: one kernel, one step, one layer, one
//! training step.
//!
//! Launches address tensors with element offsets, so a time step of a `[T, B, H]`
//! sequence or one gate block of a weight is an offset, not a copy.
//!
//! [`choose`] opens what a user asked for (`auto` takes a hardware GPU and
//! otherwise the CPU path) and [`crate::with_backend!`] runs generic code on it:
//!
//! ```
//! use rnn_wgpu::backend::{api, choose, Backend, BackendChoice};
//! use rnn_wgpu::ops::activation::Activation;
//!
//! # fn main() -> rnn_wgpu::Result<()> {
//! let (chosen, why) = choose(BackendChoice::Auto)?;
//! println!("running on {why}");
//! rnn_wgpu::with_backend!(chosen, b => {
//!     let x = b.tensor_f32(&[2, 2], &[-1.0, 0.0, 1.0, 2.0])?;
//!     let y = api::activate(&b, Activation::Relu, &x)?;
//!     assert_eq!(b.read_f64(&y)?, [0.0, 0.0, 1.0, 2.0]);
//!     let total = api::reduce(&b, rnn_wgpu::ops::reduce::ReduceOp::Sum, &x)?;
//!     assert_eq!(total, 2.0);
//! });
//! # Ok(())
//! # }
//! ```

mod choice;
mod cpu;
mod gpu;

pub use choice::{BackendChoice, Chosen, choose, choose_for_rank};
pub use cpu::{CpuBackend, CpuTensor};
pub(crate) use cpu::{host_vec, host_zeros};
pub use gpu::GpuBackend;

use std::fmt::Debug;

use crate::error::{Error, Result};
use crate::ops::activation::{Activation, Span};
use crate::ops::cell::{Cell, StepSpec, Variant};
pub use crate::ops::cell::{StepBackward, StepForward};
use crate::ops::dropout::DropoutSpec;
use crate::ops::embed::EmbedSpec;
use crate::ops::matmul::Gemm;
use crate::ops::optim::{GateSpec, Optimizer, UpdateSpec};
use crate::ops::reduce::{ColDot, ColSum, ReduceOp};
use crate::ops::skip::{Skip, SkipBackward, SkipForward};
use crate::ops::softmax_xent::{Rows, SUMMARY_LEN, XentSummary};
use crate::precision::Precision;
use crate::real::Real;

/// Buffers one cross-entropy evaluation writes.
#[derive(Clone, Debug)]
pub struct XentBuffers<B: Backend> {
    /// Per-row loss `[R]`.
    pub loss: B::Tensor,
    /// Per-row `(max, Σ exp(x − max), hit)` triples `[3R]` (scratch).
    pub stats: B::Tensor,
    /// Receives `[mean, count, sum, invalid, correct]` at `summary_off`.
    pub summary: B::Tensor,
    /// Offset of the summary in `summary`.
    pub summary_off: usize,
}

impl<B: Backend> XentBuffers<B> {
    /// Buffers for `rows` rows.
    pub fn new(backend: &B, rows: usize) -> Result<Self> {
        Ok(XentBuffers {
            loss: backend.zeros(&[rows])?,
            stats: backend.zeros(&[3 * rows])?,
            summary: backend.zeros(&[SUMMARY_LEN])?,
            summary_off: 0,
        })
    }

    /// The same buffers writing their summary into `summary` at `offset`.
    pub fn with_summary(mut self, summary: B::Tensor, offset: usize) -> Self {
        self.summary = summary;
        self.summary_off = offset;
        self
    }
}

/// A device that can run rnn-wgpu's kernels.
pub trait Backend: Clone {
    /// Scalar type computed in (f32 on the GPU; f32 or f64 on the CPU).
    type Elem: Real;
    /// A float tensor.
    type Tensor: Clone + Debug;
    /// An i32 tensor (class targets, sequence lengths).
    type Ints: Clone + Debug;

    /// What this backend runs on, in words.
    fn describe(&self) -> String;

    /// True for the GPU backend.
    fn is_gpu(&self) -> bool;

    /// A zero-filled tensor.
    fn zeros(&self, shape: &[usize]) -> Result<Self::Tensor>;

    /// A tensor holding `data`.
    fn tensor(&self, shape: &[usize], data: &[Self::Elem]) -> Result<Self::Tensor>;

    /// An i32 tensor holding `data`.
    fn ints(&self, shape: &[usize], data: &[i32]) -> Result<Self::Ints>;

    /// A zero-filled tensor that stores its values at `store`: with a
    /// 16-bit precision, every value a kernel (or [`Backend::write`],
    /// [`Backend::fill`], [`Backend::copy`]) stores into it is rounded to
    /// that precision (see [`crate::precision`]). Fails on a backend that
    /// has no such storage ([`Backend::supports`]).
    fn zeros_stored(&self, shape: &[usize], store: Precision) -> Result<Self::Tensor> {
        if store.is_16bit() {
            return Err(unsupported_precision(&self.describe(), store));
        }
        self.zeros(shape)
    }

    /// A zero-filled tensor stored at `store` that only the kernels that
    /// know its packing write: on the GPU a 16-bit one is packed two values
    /// a word, so that it takes half the memory and every read of it half
    /// the bandwidth. Two kinds use it: the passes' copy of the parameters
    /// (written by [`Backend::write`] and by [`Backend::copy`] from an f32
    /// tensor, read by every kernel) and the gates a training forward saves
    /// for its backward (written and read only by the cell steps, which pair
    /// gate blocks in a word; see `shaders/cell_common.wgsl`), besides
    /// [`Backend::fill`] of whole words. [`Backend::read`] and
    /// [`Backend::copy`] take a packed tensor's values in word order, which
    /// is element order for the parameters but not for the paired gates.
    /// Elsewhere (and in f32), [`Backend::zeros_stored`].
    fn zeros_packed(&self, shape: &[usize], store: Precision) -> Result<Self::Tensor> {
        self.zeros_stored(shape, store)
    }

    /// How `t` stores its values ([`Backend::zeros_stored`]).
    fn store_of(&self, _t: &Self::Tensor) -> Precision {
        Precision::F32
    }

    /// Bytes the backend holds for `t`. By default a value takes a word of
    /// the scalar type, as a 16-bit tensor of [`Backend::zeros_stored`]
    /// does on both backends (its values on the 16-bit grid); the GPU's
    /// packed tensors ([`Backend::zeros_packed`]) take 2 bytes a value.
    fn held_bytes(&self, t: &Self::Tensor) -> u64 {
        (self.numel(t) * std::mem::size_of::<Self::Elem>()) as u64
    }

    /// Bytes `t` takes at its storage precision, 2 a value in 16 bits: what
    /// it holds once 16-bit tensors are packed two values a word.
    fn stored_bytes(&self, t: &Self::Tensor) -> u64 {
        let store = self.store_of(t);
        let per = if store.is_16bit() {
            store.bytes()
        } else {
            std::mem::size_of::<Self::Elem>()
        };
        (self.numel(t) * per) as u64
    }

    /// True when tensors can be stored at `p` on this backend.
    fn supports(&self, p: Precision) -> bool {
        !p.is_16bit()
    }

    /// True when no other handle (a clone or a reshaped view) shares `t`'s
    /// storage: the holder of `t` is its only user, so its memory may be reused.
    fn is_unique(&self, t: &Self::Tensor) -> bool;

    /// Tensors allocated through this backend and its clones so far (float
    /// and i32; clones and views of tensors are not allocations). On the GPU
    /// the count is the context's, shared by every backend on it.
    fn allocations(&self) -> u64;

    /// Bytes of those tensors (GPU buffers are rounded up to 4 bytes).
    fn allocated_bytes(&self) -> u64;

    /// Shape of a tensor.
    fn shape<'a>(&self, t: &'a Self::Tensor) -> &'a [usize];

    /// Shape of an i32 tensor.
    fn int_shape<'a>(&self, t: &'a Self::Ints) -> &'a [usize];

    /// The same storage with another shape of the same number of elements.
    fn reshape(&self, t: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;

    /// The same i32 storage with another shape of the same number of elements.
    fn reshape_ints(&self, t: &Self::Ints, shape: &[usize]) -> Result<Self::Ints>;

    /// Reads several tensors back (on the GPU: one submission, one map).
    fn read_many(&self, ts: &[&Self::Tensor]) -> Result<Vec<Vec<Self::Elem>>>;

    /// Reads an i32 tensor back.
    fn read_i32(&self, t: &Self::Ints) -> Result<Vec<i32>>;

    /// Overwrites a tensor with `data`, after all work recorded so far.
    fn write(&self, t: &Self::Tensor, data: &[Self::Elem]) -> Result<()>;

    /// Overwrites an i32 tensor with `data`, after all work recorded so far.
    fn write_ints(&self, t: &Self::Ints, data: &[i32]) -> Result<()>;

    /// `t[off .. off + n] = value`.
    fn fill(&self, t: &Self::Tensor, off: usize, n: usize, value: f64) -> Result<()>;

    /// Copies `n` elements.
    fn copy(
        &self,
        src: &Self::Tensor,
        src_off: usize,
        dst: &Self::Tensor,
        dst_off: usize,
        n: usize,
    ) -> Result<()>;

    /// `C = op(A)·op(B) (+ bias) (+ C)`; see [`Gemm`].
    fn gemm(
        &self,
        g: &Gemm,
        a: &Self::Tensor,
        b: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        c: &Self::Tensor,
    ) -> Result<()>;

    /// `y = act(x)` over `span`.
    fn activation(
        &self,
        act: Activation,
        span: Span,
        x: &Self::Tensor,
        y: &Self::Tensor,
    ) -> Result<()>;

    /// `dx (+)= dy·act'(x)` over `span`.
    fn activation_backward(
        &self,
        act: Activation,
        span: Span,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        dx: &Self::Tensor,
        accumulate: bool,
    ) -> Result<()>;

    /// Row softmax of `x` `[R, V]` into `y`.
    fn softmax(&self, shape: Rows, x: &Self::Tensor, y: &Self::Tensor) -> Result<()>;

    /// Softmax cross-entropy of `x` `[R, V]` against `targets`, writing
    /// `out.loss`, `out.summary` and, if given, `dx = scale·(softmax − onehot)/count`.
    #[allow(clippy::too_many_arguments)]
    fn xent(
        &self,
        shape: Rows,
        x: &Self::Tensor,
        targets: &Self::Ints,
        ignore_index: i32,
        scale: f64,
        out: &XentBuffers<Self>,
        dx: Option<&Self::Tensor>,
    ) -> Result<()>;

    /// Column sums; see [`ColSum`].
    fn sum_cols(&self, s: &ColSum, x: &Self::Tensor, out: &Self::Tensor) -> Result<()>;

    /// Column dot products; see [`ColDot`].
    fn dot_cols(
        &self,
        d: &ColDot,
        x: &Self::Tensor,
        y: &Self::Tensor,
        out: &Self::Tensor,
    ) -> Result<()>;

    /// `out[out_off] (+)= op(x[x_off .. x_off + n])`.
    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &self,
        op: ReduceOp,
        x: &Self::Tensor,
        x_off: usize,
        n: usize,
        out: &Self::Tensor,
        out_off: usize,
        accumulate: bool,
    ) -> Result<()>;

    /// The most time steps one [`Backend::cell_forward`] /
    /// [`Backend::cell_backward`] call may advance for this shape
    /// ([`crate::ops::cell::Fusion::more_steps`] + 1; `units`: H, or a
    /// projection's P): on the GPU, several with the resident step kernel
    /// and 1 otherwise; on the CPU, which runs them in turn, as many as the
    /// resident kernel takes. A step of two dispatches takes 1.
    fn steps_per_call(&self, variant: &Variant, batch: usize, units: usize) -> usize;

    /// The most f32 elements one tensor a kernel binds may hold (the GPU's
    /// storage-binding and buffer limits; on the CPU, no limit).
    fn max_tensor_elems(&self) -> usize {
        usize::MAX
    }

    /// One fused forward step of a recurrent cell.
    fn cell_forward(
        &self,
        cell: Cell,
        s: &StepSpec,
        bufs: &StepForward<'_, Self::Tensor, Self::Ints>,
    ) -> Result<()>;

    /// One fused backward step of a recurrent cell.
    fn cell_backward(
        &self,
        cell: Cell,
        s: &StepSpec,
        bufs: &StepBackward<'_, Self::Tensor, Self::Ints>,
    ) -> Result<()>;

    /// A skip connection's forward over `n` elements (see [`crate::ops::skip`]).
    fn skip_forward(&self, skip: Skip, n: usize, t: &SkipForward<'_, Self::Tensor>) -> Result<()>;

    /// A skip connection's backward over `n` elements.
    fn skip_backward(&self, skip: Skip, n: usize, t: &SkipBackward<'_, Self::Tensor>)
    -> Result<()>;

    /// `out[n, :] = table[tokens[n], :]`.
    fn embed_forward(
        &self,
        s: &EmbedSpec,
        tokens: &Self::Ints,
        table: &Self::Tensor,
        out: &Self::Tensor,
    ) -> Result<()>;

    /// `dtable[v, :] (+)= Σ_{n: tokens[n] = v} dout[n, :]`.
    fn embed_backward(
        &self,
        s: &EmbedSpec,
        tokens: &Self::Ints,
        dout: &Self::Tensor,
        dtable: &Self::Tensor,
        accumulate: bool,
    ) -> Result<()>;

    /// Inverted dropout keyed on `s.key` (also its own backward).
    fn dropout(&self, s: &DropoutSpec, x: &Self::Tensor, y: &Self::Tensor) -> Result<()>;

    /// One optimizer update, clipped by the norm in `stats` (skipped if not finite).
    #[allow(clippy::too_many_arguments)]
    fn optim_update(
        &self,
        opt: &Optimizer,
        s: &UpdateSpec,
        params: &Self::Tensor,
        grads: &Self::Tensor,
        s1: &Self::Tensor,
        s2: &Self::Tensor,
        stats: &Self::Tensor,
    ) -> Result<()>;

    /// [`Backend::optim_update`] that also writes the updated parameters
    /// `[0, s.n)` into `copy`, a 16-bit copy of them (a packed tensor of
    /// [`Backend::zeros_packed`] on the GPU), rounded to its precision: the
    /// 16-bit weights a mixed-precision model's passes read, refreshed by
    /// the update itself (one kernel on the GPU). A skipped update leaves
    /// both as they were. By default, the update and then [`Backend::copy`],
    /// which is the result every backend gives.
    #[allow(clippy::too_many_arguments)]
    fn optim_update_copy(
        &self,
        opt: &Optimizer,
        s: &UpdateSpec,
        params: &Self::Tensor,
        grads: &Self::Tensor,
        s1: &Self::Tensor,
        s2: &Self::Tensor,
        stats: &Self::Tensor,
        copy: &Self::Tensor,
    ) -> Result<()> {
        crate::ops::optim::check_copy(s.n, self.store_of(copy), self.numel(copy))?;
        self.optim_update(opt, s, params, grads, s1, s2, stats)?;
        self.copy(params, 0, copy, 0, s.n)
    }

    /// `predicted[r]` = the argmax of row `r` of `x` `[R, V]` (the first
    /// index of its largest value, [`crate::ops::softmax_xent::argmax`]).
    fn argmax_rows(&self, shape: Rows, x: &Self::Tensor, predicted: &Self::Ints) -> Result<()>;

    /// Gates the updates of a step recorded before the previous step's
    /// stats were read: see [`GateSpec`].
    fn gate_updates(&self, g: &GateSpec, stats: &Self::Tensor) -> Result<()>;

    /// Submits recorded work (no-op on the CPU).
    fn flush(&self) -> Result<()>;

    // ---- conveniences built on the above ----

    /// Number of elements of a tensor.
    fn numel(&self, t: &Self::Tensor) -> usize {
        self.shape(t).iter().product()
    }

    /// A tensor from f64 values (rounded to the backend's precision).
    fn tensor_f64(&self, shape: &[usize], data: &[f64]) -> Result<Self::Tensor> {
        let v: Vec<Self::Elem> = data.iter().map(|&x| Self::Elem::of(x)).collect();
        self.tensor(shape, &v)
    }

    /// A tensor stored at `store` holding `data` (rounded to `store`).
    fn tensor_stored(
        &self,
        shape: &[usize],
        data: &[f64],
        store: Precision,
    ) -> Result<Self::Tensor> {
        if !store.is_16bit() {
            return self.tensor_f64(shape, data);
        }
        written(self, self.zeros_stored(shape, store)?, data)
    }

    /// [`Backend::zeros_packed`] holding `data` (rounded to `store`).
    fn tensor_packed(
        &self,
        shape: &[usize],
        data: &[f64],
        store: Precision,
    ) -> Result<Self::Tensor> {
        if !store.is_16bit() {
            return self.tensor_f64(shape, data);
        }
        written(self, self.zeros_packed(shape, store)?, data)
    }

    /// A tensor from f32 values.
    fn tensor_f32(&self, shape: &[usize], data: &[f32]) -> Result<Self::Tensor> {
        let v: Vec<Self::Elem> = data.iter().map(|&x| Self::Elem::of(x as f64)).collect();
        self.tensor(shape, &v)
    }

    /// Reads a tensor back.
    fn read(&self, t: &Self::Tensor) -> Result<Vec<Self::Elem>> {
        Ok(self.read_many(&[t])?.pop().unwrap_or_default())
    }

    /// Reads a tensor back into `out` (replacing its contents), reusing its
    /// memory where the backend can: a loop that reads every step then
    /// allocates nothing once `out` is large enough.
    fn read_into(&self, t: &Self::Tensor, out: &mut Vec<Self::Elem>) -> Result<()> {
        *out = self.read(t)?;
        Ok(())
    }

    /// Starts reading `t[range]` back, after all work recorded so far,
    /// without waiting for it: [`PendingRead::wait`] (on any thread) returns
    /// the values. On the GPU the work recorded so far is submitted and the
    /// read is a copy into a staging buffer mapped when the GPU gets there,
    /// so the host can go on recording (and the GPU computing) meanwhile;
    /// the CPU path reads at once.
    fn read_range_async(
        &self,
        t: &Self::Tensor,
        range: std::ops::Range<usize>,
    ) -> Result<PendingRead<Self::Elem>> {
        let all = self.read(t)?;
        check_read_range(&range, all.len())?;
        Ok(PendingRead::ready(all[range].to_vec()))
    }

    /// Reads `t[range]` and whole i32 tensors back together (on the GPU:
    /// one submission, one map, only those bytes).
    fn read_range_and_ints(
        &self,
        t: &Self::Tensor,
        range: std::ops::Range<usize>,
        ints: &[&Self::Ints],
    ) -> Result<RangeAndInts<Self::Elem>> {
        let all = self.read(t)?;
        check_read_range(&range, all.len())?;
        let ints = ints
            .iter()
            .map(|i| self.read_i32(i))
            .collect::<Result<_>>()?;
        Ok((all[range].to_vec(), ints))
    }

    /// Reads a tensor back as f64.
    fn read_f64(&self, t: &Self::Tensor) -> Result<Vec<f64>> {
        Ok(self.read(t)?.iter().map(|v| v.f64()).collect())
    }

    /// Reads a cross-entropy summary.
    fn read_summary(&self, out: &XentBuffers<Self>) -> Result<XentSummary> {
        let v = self.read_f64(&out.summary)?;
        Ok(XentSummary::from_slice(
            v.get(out.summary_off..).unwrap_or(&[]),
        ))
    }
}

/// What [`Backend::read_range_and_ints`] reads: the float range, then each
/// i32 tensor.
pub type RangeAndInts<T> = (Vec<T>, Vec<Vec<i32>>);

/// Fails unless `range` runs forward within a tensor of `len` elements
/// (the check of every [`Backend::read_range_async`]).
pub(crate) fn check_read_range(range: &std::ops::Range<usize>, len: usize) -> Result<()> {
    if range.start > range.end {
        return Err(Error::invalid("range", format!("{range:?} runs backwards")));
    }
    crate::ops::memory::check_range("range", range.start, range.len(), len)
}

/// Values being read back ([`Backend::read_range_async`]).
pub struct PendingRead<T>(Box<dyn FnOnce() -> Result<Vec<T>> + Send>);

impl<T: Send + 'static> PendingRead<T> {
    /// Values already on the host.
    pub fn ready(values: Vec<T>) -> Self {
        PendingRead(Box::new(move || Ok(values)))
    }

    /// A read that `finish` completes (waiting for the device).
    pub fn later(finish: impl FnOnce() -> Result<Vec<T>> + Send + 'static) -> Self {
        PendingRead(Box::new(finish))
    }

    /// Waits for the values.
    pub fn wait(self) -> Result<Vec<T>> {
        (self.0)()
    }
}

impl<T> std::fmt::Debug for PendingRead<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingRead")
    }
}

/// `t` after writing `data` into it.
fn written<B: Backend>(b: &B, t: B::Tensor, data: &[f64]) -> Result<B::Tensor> {
    let v: Vec<B::Elem> = data.iter().map(|&x| B::Elem::of(x)).collect();
    b.write(&t, &v)?;
    Ok(t)
}

/// The error of a backend asked for a precision it has no kernels for.
pub fn unsupported_precision(backend: &str, p: Precision) -> Error {
    Error::invalid(
        "precision",
        format!("{backend} cannot store tensors in {p}; use another backend, or --precision f32"),
    )
}

/// Fails unless `got` equals `want`, naming `arg` and the expected shape in letters.
pub fn expect_shape(arg: &str, letters: &str, want: &[usize], got: &[usize]) -> Result<()> {
    if want != got {
        return Err(Error::shape(arg, format!("{letters} = {want:?}"), got));
    }
    Ok(())
}

/// Tensor-level operations with shape checks: the convenient way to call the
/// kernels on either backend.
pub mod api {
    use super::*;

    /// `op(a)·op(b) (+ bias)` for 2-D `a`, `b`; returns a new `[M, N]` tensor.
    pub fn matmul<B: Backend>(
        backend: &B,
        a: &B::Tensor,
        b: &B::Tensor,
        trans_a: bool,
        trans_b: bool,
        bias: Option<&B::Tensor>,
    ) -> Result<B::Tensor> {
        let (sa, sb) = (backend.shape(a), backend.shape(b));
        if sa.len() != 2 {
            return Err(Error::shape(
                "a",
                "a matrix [M, K] (or [K, M] transposed)",
                sa,
            ));
        }
        if sb.len() != 2 {
            return Err(Error::shape(
                "b",
                "a matrix [K, N] (or [N, K] transposed)",
                sb,
            ));
        }
        let (m, k) = if trans_a {
            (sa[1], sa[0])
        } else {
            (sa[0], sa[1])
        };
        let (kb, n) = if trans_b {
            (sb[1], sb[0])
        } else {
            (sb[0], sb[1])
        };
        if kb != k {
            let want = if trans_b { [n, k] } else { [k, n] };
            return Err(Error::shape(
                "b",
                format!(
                    "{} = {want:?} (K from a)",
                    if trans_b { "[N, K]" } else { "[K, N]" }
                ),
                sb,
            ));
        }
        let mut g = Gemm::nn(m, n, k);
        g.trans_a = trans_a;
        g.trans_b = trans_b;
        g.lda = sa[1];
        g.ldb = sb[1];
        if let Some(bias) = bias {
            expect_shape("bias", "[N]", &[n], backend.shape(bias))?;
            g = g.with_bias(0);
        }
        let c = backend.zeros(&[m, n])?;
        backend.gemm(&g, a, b, bias, &c)?;
        Ok(c)
    }

    /// `act(x)`, any shape.
    pub fn activate<B: Backend>(backend: &B, act: Activation, x: &B::Tensor) -> Result<B::Tensor> {
        let shape = backend.shape(x).to_vec();
        let y = backend.zeros(&shape)?;
        backend.activation(act, Span::all(backend.numel(x)), x, &y)?;
        Ok(y)
    }

    /// `dy·act'(x)`, any shape.
    pub fn activate_backward<B: Backend>(
        backend: &B,
        act: Activation,
        x: &B::Tensor,
        dy: &B::Tensor,
    ) -> Result<B::Tensor> {
        let shape = backend.shape(x).to_vec();
        expect_shape("dy", "the shape of x", &shape, backend.shape(dy))?;
        let dx = backend.zeros(&shape)?;
        backend.activation_backward(act, Span::all(backend.numel(x)), x, dy, &dx, false)?;
        Ok(dx)
    }

    fn rows_of<B: Backend>(backend: &B, arg: &str, x: &B::Tensor) -> Result<Rows> {
        match backend.shape(x) {
            [r, v] if *r > 0 && *v > 0 => Ok(Rows { rows: *r, cols: *v }),
            s => Err(Error::shape(arg, "[R, V] with R, V >= 1", s)),
        }
    }

    /// Row softmax of `[R, V]`.
    pub fn softmax<B: Backend>(backend: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let rows = rows_of(backend, "x", x)?;
        let y = backend.zeros(&[rows.rows, rows.cols])?;
        backend.softmax(rows, x, &y)?;
        Ok(y)
    }

    /// Mean cross-entropy of `logits` `[R, V]` against `targets` `[R]`, and its
    /// gradient with respect to the logits. Out-of-range targets are an error.
    pub fn cross_entropy<B: Backend>(
        backend: &B,
        logits: &B::Tensor,
        targets: &B::Ints,
        ignore_index: i32,
    ) -> Result<(XentSummary, B::Tensor)> {
        let rows = rows_of(backend, "logits", logits)?;
        expect_shape("targets", "[R]", &[rows.rows], backend.int_shape(targets))?;
        let out = XentBuffers::new(backend, rows.rows)?;
        let dx = backend.zeros(&[rows.rows, rows.cols])?;
        backend.xent(rows, logits, targets, ignore_index, 1.0, &out, Some(&dx))?;
        let summary = backend.read_summary(&out)?.check(rows.cols)?;
        Ok((summary, dx))
    }

    /// Σ, max or Σx² of a whole tensor.
    pub fn reduce<B: Backend>(backend: &B, op: ReduceOp, x: &B::Tensor) -> Result<f64> {
        let out = backend.zeros(&[1])?;
        backend.reduce(op, x, 0, backend.numel(x), &out, 0, false)?;
        Ok(backend.read_f64(&out)?[0])
    }
}
