//! The CPU backend: every launch runs at once, in plain Rust, in f32 or f64.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};

use super::{Backend, PendingRead, XentBuffers, check_read_range};
use crate::error::{Error, Result};
use crate::gpu::{checked_numel, numel};
use crate::ops::activation::{self, Activation, Span};
use crate::ops::cell::{
    self, BackwardSlices, Cell, ForwardSlices, StepBackward, StepForward, StepSpec, Variant,
};
use crate::ops::dropout::{self, DropoutSpec};
use crate::ops::embed::{self, EmbedSpec};
use crate::ops::matmul::{Gemm, gemm_cpu};
use crate::ops::memory::{check_range, expect_f32_store, fill_cpu};
use crate::ops::optim::{self, GateSpec, Optimizer, UpdateSpec};
use crate::ops::reduce::{ColDot, ColSum, ReduceOp, dot_cols_cpu, reduce_cpu, sum_cols_cpu};
use crate::ops::skip::{self, Skip, SkipBackward, SkipForward};
use crate::ops::softmax_xent::{Rows, SUMMARY_LEN, argmax_rows_cpu, softmax_cpu, xent_cpu};
use crate::precision::Precision;
use crate::real::Real;

/// A host tensor. Cloning shares the storage (like a GPU buffer handle).
#[derive(Clone, Debug)]
pub struct CpuTensor<T> {
    data: Arc<RwLock<Vec<T>>>,
    shape: Vec<usize>,
    store: Precision,
}

/// An empty vector with room for `n` elements, or an error (never an abort)
/// when the host cannot provide it.
pub(crate) fn host_vec<T>(n: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
        op: format!("allocating {n} elements on the host"),
    })?;
    Ok(v)
}

/// A zero-filled vector of `n` elements, or an error (never an abort) when the
/// host cannot provide it.
pub(crate) fn host_zeros<T: Clone + Default>(shape: &[usize]) -> Result<Vec<T>> {
    let n = checked_numel(shape)
        .ok_or_else(|| Error::invalid("shape", format!("{shape:?} is too large")))?;
    let mut v = host_vec(n)?;
    v.resize(n, T::default());
    Ok(v)
}

impl<T: Real> CpuTensor<T> {
    /// Rounds `v[from .. from + n]` (as much as `v` holds) to the tensor's
    /// storage precision: what a kernel stored there, as 16-bit storage
    /// keeps it. `v` is this tensor's storage, borrowed for writing.
    fn settle(&self, v: &mut [T], from: usize, n: usize) {
        self.store.round_range(v, from, n);
    }

    /// [`CpuTensor::settle`] over the whole storage.
    fn settle_all(&self, v: &mut [T]) {
        self.settle(v, 0, v.len());
    }
}

impl<T: Clone> CpuTensor<T> {
    /// A tensor owning `data` with `shape`.
    pub fn new(shape: &[usize], data: Vec<T>) -> Result<Self> {
        let n = numel(shape);
        if n != data.len() {
            return Err(Error::invalid(
                "data",
                format!(
                    "{} values do not fill shape {shape:?} ({n} elements)",
                    data.len()
                ),
            ));
        }
        Ok(CpuTensor {
            data: Arc::new(RwLock::new(data)),
            shape: shape.to_vec(),
            store: Precision::F32,
        })
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// How the tensor stores its values: with a 16-bit precision every
    /// value the backend stores into it is rounded to that precision.
    pub fn store(&self) -> Precision {
        self.store
    }

    /// Borrow for reading; fails if `op` is writing this very storage.
    pub fn read(&self, op: &str, arg: &str) -> Result<RwLockReadGuard<'_, Vec<T>>> {
        match self.data.try_read() {
            Ok(g) => Ok(g),
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => Err(Error::Aliasing {
                op: op.into(),
                arg: arg.into(),
            }),
        }
    }

    /// Borrow for writing; fails if `op` reads this very storage as an input.
    pub fn write(&self, op: &str, arg: &str) -> Result<RwLockWriteGuard<'_, Vec<T>>> {
        match self.data.try_write() {
            Ok(g) => Ok(g),
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => Err(Error::Aliasing {
                op: op.into(),
                arg: arg.into(),
            }),
        }
    }

    /// A copy of the values.
    pub fn to_vec(&self) -> Vec<T> {
        match self.data.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces every value with `data` (same length).
    pub fn overwrite(&self, data: &[T]) -> Result<()>
    where
        T: Copy,
    {
        let mut g = self.write("write", "tensor")?;
        if g.len() != data.len() {
            return Err(Error::invalid(
                "data",
                format!("{} values for a tensor of {}", data.len(), g.len()),
            ));
        }
        g.copy_from_slice(data);
        Ok(())
    }

    /// The same storage with another shape of the same number of elements.
    pub fn view(&self, shape: &[usize]) -> Result<Self> {
        let n = numel(shape);
        let have = numel(&self.shape);
        if n != have {
            return Err(Error::invalid(
                "shape",
                format!("cannot view {:?} as {shape:?}", self.shape),
            ));
        }
        Ok(CpuTensor {
            data: self.data.clone(),
            shape: shape.to_vec(),
            store: self.store,
        })
    }

    fn same_storage(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }

    /// True when no other handle (a clone or a view) shares the storage.
    pub fn is_unique(&self) -> bool {
        Arc::strong_count(&self.data) == 1
    }
}

/// Runs every launch immediately on the host, in precision `T`. Clones share
/// the allocation counter.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend<T> {
    _t: PhantomData<T>,
    // Tensors and bytes allocated.
    allocations: Arc<[AtomicU64; 2]>,
}

impl<T: Real> CpuBackend<T> {
    /// A CPU backend computing in `T`.
    pub fn new() -> Self {
        CpuBackend {
            _t: PhantomData,
            allocations: Arc::default(),
        }
    }

    fn counted<E: Clone>(&self, shape: &[usize], data: Vec<E>) -> Result<CpuTensor<E>> {
        let bytes = (data.len() * std::mem::size_of::<E>()) as u64;
        let t = CpuTensor::new(shape, data)?;
        self.allocations[0].fetch_add(1, Ordering::Relaxed);
        self.allocations[1].fetch_add(bytes, Ordering::Relaxed);
        Ok(t)
    }
}

impl<T: Real> Backend for CpuBackend<T> {
    type Elem = T;
    type Tensor = CpuTensor<T>;
    type Ints = CpuTensor<i32>;

    fn describe(&self) -> String {
        format!("cpu ({})", T::NAME)
    }

    fn is_gpu(&self) -> bool {
        false
    }

    fn zeros(&self, shape: &[usize]) -> Result<Self::Tensor> {
        self.counted(shape, host_zeros(shape)?)
    }

    fn tensor(&self, shape: &[usize], data: &[T]) -> Result<Self::Tensor> {
        self.counted(shape, data.to_vec())
    }

    fn ints(&self, shape: &[usize], data: &[i32]) -> Result<Self::Ints> {
        self.counted(shape, data.to_vec())
    }

    fn zeros_stored(&self, shape: &[usize], store: Precision) -> Result<Self::Tensor> {
        let mut t = self.zeros(shape)?;
        t.store = store;
        Ok(t)
    }

    fn store_of(&self, t: &Self::Tensor) -> Precision {
        t.store
    }

    fn supports(&self, _p: Precision) -> bool {
        true
    }

    fn is_unique(&self, t: &Self::Tensor) -> bool {
        t.is_unique()
    }

    fn allocations(&self) -> u64 {
        self.allocations[0].load(Ordering::Relaxed)
    }

    fn allocated_bytes(&self) -> u64 {
        self.allocations[1].load(Ordering::Relaxed)
    }

    fn shape<'a>(&self, t: &'a Self::Tensor) -> &'a [usize] {
        t.shape()
    }

    fn int_shape<'a>(&self, t: &'a Self::Ints) -> &'a [usize] {
        t.shape()
    }

    fn reshape(&self, t: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor> {
        t.view(shape)
    }

    fn reshape_ints(&self, t: &Self::Ints, shape: &[usize]) -> Result<Self::Ints> {
        t.view(shape)
    }

    fn read_many(&self, ts: &[&Self::Tensor]) -> Result<Vec<Vec<T>>> {
        Ok(ts.iter().map(|t| t.to_vec()).collect())
    }

    fn read_i32(&self, t: &Self::Ints) -> Result<Vec<i32>> {
        Ok(t.to_vec())
    }

    fn read_range_async(
        &self,
        t: &Self::Tensor,
        range: std::ops::Range<usize>,
    ) -> Result<PendingRead<T>> {
        let all = t.read("read", "tensor")?;
        check_read_range(&range, all.len())?;
        Ok(PendingRead::ready(all[range].to_vec()))
    }

    fn read_into(&self, t: &Self::Tensor, out: &mut Vec<T>) -> Result<()> {
        out.clear();
        out.extend_from_slice(&t.read("read", "tensor")?);
        Ok(())
    }

    fn write(&self, t: &Self::Tensor, data: &[T]) -> Result<()> {
        t.overwrite(data)?;
        if t.store.is_16bit() {
            t.settle_all(&mut t.write("write", "tensor")?);
        }
        Ok(())
    }

    fn write_ints(&self, t: &Self::Ints, data: &[i32]) -> Result<()> {
        t.overwrite(data)
    }

    fn fill(&self, t: &Self::Tensor, off: usize, n: usize, value: f64) -> Result<()> {
        fill_cpu(
            &mut t.write("fill", "tensor")?,
            off,
            n,
            t.store.round(T::of(value)),
        )
    }

    fn copy(
        &self,
        src: &Self::Tensor,
        src_off: usize,
        dst: &Self::Tensor,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        if src.same_storage(dst) {
            let mut d = dst.write("copy", "destination")?;
            check_range("copy source", src_off, n, d.len())?;
            check_range("copy destination", dst_off, n, d.len())?;
            d.copy_within(src_off..src_off + n, dst_off);
            dst.settle(&mut d, dst_off, n);
            return Ok(());
        }
        let s = src.read("copy", "source")?;
        let mut d = dst.write("copy", "destination")?;
        check_range("copy source", src_off, n, s.len())?;
        check_range("copy destination", dst_off, n, d.len())?;
        d[dst_off..dst_off + n].copy_from_slice(&s[src_off..src_off + n]);
        dst.settle(&mut d, dst_off, n);
        Ok(())
    }

    fn gemm(
        &self,
        g: &Gemm,
        a: &Self::Tensor,
        b: &Self::Tensor,
        bias: Option<&Self::Tensor>,
        c: &Self::Tensor,
    ) -> Result<()> {
        let a = a.read("matmul", "A")?;
        let b = b.read("matmul", "B")?;
        let bias = bias.map(|t| t.read("matmul", "bias")).transpose()?;
        let mut cv = c.write("matmul", "C")?;
        gemm_cpu(g, &a, &b, bias.as_deref().map(|v| v.as_slice()), &mut cv)?;
        if g.m > 0 {
            // Rows c_off + i·ldc, n wide: the span from the first to the last.
            c.settle(
                &mut cv,
                g.c_off,
                (g.m - 1).saturating_mul(g.ldc).saturating_add(g.n),
            );
        }
        Ok(())
    }

    fn activation(
        &self,
        act: Activation,
        span: Span,
        x: &Self::Tensor,
        y: &Self::Tensor,
    ) -> Result<()> {
        let x = x.read("activation", "x")?;
        let mut yv = y.write("activation", "y")?;
        check_range("activation x", span.x_off, span.n, x.len())?;
        check_range("activation y", span.out_off, span.n, yv.len())?;
        activation::forward_cpu(
            act,
            &x[span.x_off..span.x_off + span.n],
            &mut yv[span.out_off..span.out_off + span.n],
        )?;
        y.settle(&mut yv, span.out_off, span.n);
        Ok(())
    }

    fn activation_backward(
        &self,
        act: Activation,
        span: Span,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        dx: &Self::Tensor,
        accumulate: bool,
    ) -> Result<()> {
        let x = x.read("activation backward", "x")?;
        let dy = dy.read("activation backward", "dy")?;
        let mut dxv = dx.write("activation backward", "dx")?;
        check_range("activation x", span.x_off, span.n, x.len())?;
        check_range("activation dy", span.dy_off, span.n, dy.len())?;
        check_range("activation dx", span.out_off, span.n, dxv.len())?;
        activation::backward_cpu(
            act,
            &x[span.x_off..span.x_off + span.n],
            &dy[span.dy_off..span.dy_off + span.n],
            &mut dxv[span.out_off..span.out_off + span.n],
            accumulate,
        )?;
        dx.settle(&mut dxv, span.out_off, span.n);
        Ok(())
    }

    fn softmax(&self, shape: Rows, x: &Self::Tensor, y: &Self::Tensor) -> Result<()> {
        let x = x.read("softmax", "x")?;
        let mut yv = y.write("softmax", "y")?;
        softmax_cpu(shape, &x, &mut yv)?;
        y.settle_all(&mut yv);
        Ok(())
    }

    fn xent(
        &self,
        shape: Rows,
        x: &Self::Tensor,
        targets: &Self::Ints,
        ignore_index: i32,
        scale: f64,
        out: &XentBuffers<Self>,
        dx: Option<&Self::Tensor>,
    ) -> Result<()> {
        for (arg, t) in [
            ("loss", &out.loss),
            ("stats", &out.stats),
            ("summary", &out.summary),
        ] {
            expect_f32_store("cross_entropy", arg, t.store)?;
        }
        let x = x.read("cross_entropy", "logits")?;
        let t = targets.read("cross_entropy", "targets")?;
        let mut loss = out.loss.write("cross_entropy", "loss")?;
        let mut dxv = dx
            .map(|d| d.write("cross_entropy", "dlogits"))
            .transpose()?;
        let s = xent_cpu(
            shape,
            &x,
            &t,
            ignore_index,
            T::of(scale),
            &mut loss,
            dxv.as_deref_mut().map(|v| v.as_mut_slice()),
        )?;
        if let (Some(d), Some(v)) = (dx, dxv.as_deref_mut()) {
            d.settle_all(v);
        }
        let mut summary = out.summary.write("cross_entropy", "summary")?;
        let off = out.summary_off;
        if summary.len() < off.saturating_add(SUMMARY_LEN) {
            return Err(Error::invalid(
                "summary",
                format!("needs {SUMMARY_LEN} elements at offset {off}"),
            ));
        }
        for (d, v) in summary[off..off + SUMMARY_LEN].iter_mut().zip(s.to_vec()) {
            *d = T::of(v);
        }
        Ok(())
    }

    fn sum_cols(&self, s: &ColSum, x: &Self::Tensor, out: &Self::Tensor) -> Result<()> {
        expect_f32_store("sum_cols", "out", out.store)?;
        let x = x.read("sum_cols", "x")?;
        sum_cols_cpu(s, &x, &mut out.write("sum_cols", "out")?)
    }

    fn dot_cols(
        &self,
        d: &ColDot,
        x: &Self::Tensor,
        y: &Self::Tensor,
        out: &Self::Tensor,
    ) -> Result<()> {
        expect_f32_store("dot_cols", "out", out.store)?;
        let x = x.read("dot_cols", "x")?;
        let y = y.read("dot_cols", "y")?;
        dot_cols_cpu(d, &x, &y, &mut out.write("dot_cols", "out")?)
    }

    fn reduce(
        &self,
        op: ReduceOp,
        x: &Self::Tensor,
        x_off: usize,
        n: usize,
        out: &Self::Tensor,
        out_off: usize,
        accumulate: bool,
    ) -> Result<()> {
        expect_f32_store("reduce", "out", out.store)?;
        let x = x.read("reduce", "x")?;
        let mut ov = out.write("reduce", "out")?;
        check_range("reduce x", x_off, n, x.len())?;
        check_range("reduce out", out_off, 1, ov.len())?;
        let v = reduce_cpu(op, &x[x_off..x_off + n])?;
        ov[out_off] = match (accumulate, op) {
            (false, _) => v,
            (true, ReduceOp::Max) => ov[out_off].max(v),
            (true, _) => ov[out_off] + v,
        };
        Ok(())
    }

    fn steps_per_call(&self, variant: &Variant, _batch: usize, _units: usize) -> usize {
        // The schedule the resident GPU kernel runs; the host takes the
        // steps in turn either way.
        if variant.gates_between_dispatches() {
            1
        } else {
            crate::gpu::StepKernel::RESIDENT_STEPS
        }
    }

    fn cell_forward(
        &self,
        cell: Cell,
        s: &StepSpec,
        b: &StepForward<'_, Self::Tensor, Self::Ints>,
    ) -> Result<()> {
        const OP: &str = "cell forward";
        cell::check_step_stores(
            OP,
            s.store,
            &[
                ("hs", Some(b.hs.store)),
                ("cs", b.cs.map(|t| t.store)),
                ("gates", b.gates.map(|t| t.store)),
                ("out", Some(b.out.store)),
            ],
        )?;
        let xg = b.xg.read(OP, "xg")?;
        let weights = b.weights.read(OP, "weights")?;
        let lengths = b.lengths.map(|l| l.read(OP, "lengths")).transpose()?;
        let mut hs = b.hs.write(OP, "hs")?;
        let mut cs = b.cs.map(|t| t.write(OP, "cs")).transpose()?;
        let mut gates = b.gates.map(|t| t.write(OP, "gates")).transpose()?;
        let mut out = b.out.write(OP, "out")?;
        cell::forward_step_cpu(
            cell,
            s,
            ForwardSlices {
                xg: &xg,
                weights: &weights,
                lengths: lengths.as_deref().map(|v| v.as_slice()),
                hs: &mut hs,
                cs: cs.as_deref_mut().map(|v| v.as_mut_slice()),
                gates: gates.as_deref_mut().map(|v| v.as_mut_slice()),
                out: &mut out,
            },
        )
    }

    fn cell_backward(
        &self,
        cell: Cell,
        s: &StepSpec,
        b: &StepBackward<'_, Self::Tensor, Self::Ints>,
    ) -> Result<()> {
        const OP: &str = "cell backward";
        cell::check_step_stores(
            OP,
            s.store,
            &[
                ("dgh", Some(b.dgh.store)),
                ("dgx", b.dgx.map(|t| t.store)),
                ("carry", Some(b.carry.store)),
            ],
        )?;
        let weights = b.weights.read(OP, "weights")?;
        let lengths = b.lengths.map(|l| l.read(OP, "lengths")).transpose()?;
        let hs = b.hs.read(OP, "hs")?;
        let cs = b.cs.map(|t| t.read(OP, "cs")).transpose()?;
        let gates = b.gates.map(|t| t.read(OP, "gates")).transpose()?;
        let dout = b.dout.read(OP, "dout")?;
        let mut dgh = b.dgh.write(OP, "dgh")?;
        let mut dgx = b.dgx.map(|t| t.write(OP, "dgx")).transpose()?;
        let mut carry = b.carry.write(OP, "carry")?;
        cell::backward_step_cpu(
            cell,
            s,
            BackwardSlices {
                weights: &weights,
                lengths: lengths.as_deref().map(|v| v.as_slice()),
                hs: &hs,
                cs: cs.as_deref().map(|v| v.as_slice()),
                gates: gates.as_deref().map(|v| v.as_slice()),
                dout: &dout,
                dgh: &mut dgh,
                dgx: dgx.as_deref_mut().map(|v| v.as_mut_slice()),
                carry: &mut carry,
            },
        )
    }

    fn embed_forward(
        &self,
        s: &EmbedSpec,
        tokens: &Self::Ints,
        table: &Self::Tensor,
        out: &Self::Tensor,
    ) -> Result<()> {
        let tokens = tokens.read("embedding", "tokens")?;
        let table = table.read("embedding", "table")?;
        let mut ov = out.write("embedding", "output")?;
        embed::forward_cpu(s, &tokens, &table, &mut ov)?;
        out.settle_all(&mut ov);
        Ok(())
    }

    fn embed_backward(
        &self,
        s: &EmbedSpec,
        tokens: &Self::Ints,
        dout: &Self::Tensor,
        dtable: &Self::Tensor,
        accumulate: bool,
    ) -> Result<()> {
        let tokens = tokens.read("embedding backward", "tokens")?;
        let dout = dout.read("embedding backward", "dout")?;
        let mut dv = dtable.write("embedding backward", "dtable")?;
        embed::backward_cpu(s, &tokens, &dout, &mut dv, accumulate)?;
        dtable.settle_all(&mut dv);
        Ok(())
    }

    fn skip_forward(&self, skip: Skip, n: usize, t: &SkipForward<'_, Self::Tensor>) -> Result<()> {
        const OP: &str = "skip forward";
        let x = t.x.read(OP, "x")?;
        let out = t.out.read(OP, "out")?;
        let mut gate = t.gate.map(|g| g.write(OP, "gate")).transpose()?;
        let mut y = t.y.write(OP, "y")?;
        skip::forward_cpu(
            skip,
            n,
            &x,
            &out,
            gate.as_deref_mut().map(|v| v.as_mut_slice()),
            &mut y,
        )?;
        t.y.settle_all(&mut y);
        if let (Some(g), Some(v)) = (t.gate, gate.as_deref_mut()) {
            g.settle_all(v);
        }
        Ok(())
    }

    fn skip_backward(
        &self,
        skip: Skip,
        n: usize,
        t: &SkipBackward<'_, Self::Tensor>,
    ) -> Result<()> {
        const OP: &str = "skip backward";
        let dy = t.dy.read(OP, "dy")?;
        let x = t.x.read(OP, "x")?;
        let out = t.out.read(OP, "out")?;
        let gate = t.gate.map(|g| g.read(OP, "gate")).transpose()?;
        let mut d_out = t.d_out.map(|g| g.write(OP, "d_out")).transpose()?;
        let mut dgate = t.dgate.map(|g| g.write(OP, "dgate")).transpose()?;
        let mut dx = t.dx.write(OP, "dx")?;
        skip::backward_cpu(
            skip,
            n,
            skip::BackwardSlices {
                dy: &dy,
                dx: &mut dx,
                x: &x,
                out: &out,
                gate: gate.as_deref().map(|v| v.as_slice()),
                d_out: d_out.as_deref_mut().map(|v| v.as_mut_slice()),
                dgate: dgate.as_deref_mut().map(|v| v.as_mut_slice()),
            },
        )?;
        t.dx.settle_all(&mut dx);
        if let (Some(g), Some(v)) = (t.d_out, d_out.as_deref_mut()) {
            g.settle_all(v);
        }
        if let (Some(g), Some(v)) = (t.dgate, dgate.as_deref_mut()) {
            g.settle_all(v);
        }
        Ok(())
    }

    fn dropout(&self, s: &DropoutSpec, x: &Self::Tensor, y: &Self::Tensor) -> Result<()> {
        let x = x.read("dropout", "x")?;
        let mut yv = y.write("dropout", "y")?;
        dropout::apply_cpu(s, &x, &mut yv)?;
        y.settle_all(&mut yv);
        Ok(())
    }

    fn optim_update(
        &self,
        opt: &Optimizer,
        s: &UpdateSpec,
        params: &Self::Tensor,
        grads: &Self::Tensor,
        s1: &Self::Tensor,
        s2: &Self::Tensor,
        stats: &Self::Tensor,
    ) -> Result<()> {
        const OP: &str = "optimizer";
        for (arg, t) in [
            ("parameters", params),
            ("gradients", grads),
            ("state 1", s1),
            ("state 2", s2),
            ("stats", stats),
        ] {
            expect_f32_store(OP, arg, t.store)?;
        }
        let grads = grads.read(OP, "gradients")?;
        let stats = stats.read(OP, "stats")?;
        let mut pv = params.write(OP, "parameters")?;
        let mut s1 = s1.write(OP, "state 1")?;
        let mut s2 = s2.write(OP, "state 2")?;
        optim::update_cpu(opt, s, &mut pv, &grads, &mut s1, &mut s2, &stats)?;
        Ok(())
    }

    fn argmax_rows(&self, shape: Rows, x: &Self::Tensor, predicted: &Self::Ints) -> Result<()> {
        let x = x.read("argmax", "x")?;
        let mut predicted = predicted.write("argmax", "predicted")?;
        argmax_rows_cpu(shape, &x, &mut predicted)
    }

    fn gate_updates(&self, g: &GateSpec, stats: &Self::Tensor) -> Result<()> {
        let mut stats = stats.write("gate", "stats")?;
        optim::gate_cpu(g, &mut stats)?;
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
