//! The GPU backend: every launch is recorded into the context's pending
//! submission; nothing runs until a read (or an explicit flush).

use std::sync::{Arc, Mutex};

use super::{Backend, PendingRead, RangeAndInts, XentBuffers, check_read_range};
use crate::error::Result;
use crate::gpu::{DType, GpuContext, GpuTensor, StepKernel, download_many};
use crate::ops::activation::{self, Activation, Span};
use crate::ops::cell::{self, Cell, StepBackward, StepForward, StepSpec, Variant};
use crate::ops::dropout::{self, DropoutSpec};
use crate::ops::embed::{self, EmbedSpec};
use crate::ops::matmul::{self, Gemm, GemmKernel, SplitK, gemm_gpu};
use crate::ops::memory::{copy_gpu, fill_gpu};
use crate::ops::optim::{self, GateSpec, Optimizer, UpdateSpec};
use crate::ops::reduce::{self, ColDot, ColSum, ReduceOp, reduce_gpu, sum_cols_gpu};
use crate::ops::skip::{self, Skip, SkipBackward, SkipForward};
use crate::ops::softmax_xent::{self, Rows, XentOut};
use crate::precision::Precision;

/// Records every launch for the GPU.
#[derive(Clone, Debug)]
pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    gemm: GemmKernel,
    step_kernel: Option<StepKernel>,
    // Partial results of whole-vector reductions (at most 1024 partials).
    scratch: GpuTensor,
    // Bound where a kernel's optional i32 input (sequence lengths) is absent.
    dummy_ints: GpuTensor,
    // Bound where a cell step saves no gates (an inference forward).
    dummy_floats: GpuTensor,
    split_k: SplitK,
    // Scratch of the embedding backward's sort (i32) and of split matmuls'
    // partials (f32), each grown to the largest need seen and reused: the
    // dispatches that use one are recorded together, and the queue runs
    // them before any later use.
    embed_scratch: Arc<Mutex<Option<GpuTensor>>>,
    split_scratch: Arc<Mutex<Option<GpuTensor>>>,
}

impl GpuBackend {
    /// A backend on `ctx`, choosing the matmul variant by size ([`GemmKernel::Auto`]).
    pub fn new(ctx: Arc<GpuContext>) -> Result<Self> {
        let scratch = GpuTensor::zeros(&ctx, &[reduce::partials(usize::MAX)], DType::F32)?;
        let dummy_ints = GpuTensor::zeros(&ctx, &[1], DType::I32)?;
        let dummy_floats = GpuTensor::zeros(&ctx, &[1], DType::F32)?;
        Ok(GpuBackend {
            ctx,
            gemm: GemmKernel::Auto,
            step_kernel: None,
            scratch,
            dummy_ints,
            dummy_floats,
            split_k: SplitK::Auto,
            embed_scratch: Arc::new(Mutex::new(None)),
            split_scratch: Arc::new(Mutex::new(None)),
        })
    }

    /// Opens the best adapter (honouring `RNN_WGPU_BACKEND` / `RNN_WGPU_ADAPTER`).
    pub fn from_env() -> Result<Self> {
        Self::new(Arc::new(GpuContext::from_env()?))
    }

    /// Selects the matmul variant.
    pub fn with_gemm_kernel(mut self, kernel: GemmKernel) -> Self {
        self.gemm = kernel;
        self
    }

    /// Forces the cell steps' recurrent-product variant for the steps this
    /// backend (and its clones) records; others on the same context keep
    /// theirs. Every variant computes the same function.
    pub fn with_step_kernel(mut self, kernel: StepKernel) -> Self {
        self.step_kernel = Some(kernel);
        self
    }

    /// The recurrent-product variant of a cell step with `batch` rows and
    /// `units` units: the forced one ([`GpuBackend::with_step_kernel`]),
    /// else the context's ([`GpuContext::step_kernel`]).
    pub fn step_kernel(&self, batch: usize, units: usize) -> StepKernel {
        self.step_kernel
            .unwrap_or_else(|| self.ctx.step_kernel(batch, units))
    }

    /// Sets how matmuls split their reduction ([`SplitK::Auto`] by default).
    pub fn with_split_k(mut self, split: SplitK) -> Self {
        self.split_k = split;
        self
    }

    /// A scratch tensor of at least `need` elements of `dtype` from `slot`,
    /// allocated (or grown) only when the one there is smaller.
    fn scratch(
        &self,
        slot: &Mutex<Option<GpuTensor>>,
        need: usize,
        dtype: DType,
    ) -> Result<GpuTensor> {
        let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match slot.as_ref() {
            Some(t) if t.len() >= need => Ok(t.clone()),
            _ => {
                let t = GpuTensor::zeros(&self.ctx, &[need.max(1)], dtype)?;
                *slot = Some(t.clone());
                Ok(t)
            }
        }
    }

    /// Bytes of the scratch this backend (and its clones) keeps grown for
    /// the embedding backward's sort and split matmuls' partials.
    pub fn scratch_bytes(&self) -> u64 {
        [&self.embed_scratch, &self.split_scratch]
            .iter()
            .map(|slot| {
                let slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                slot.as_ref()
                    .map_or(0, |t| (t.dtype().size() * t.len()) as u64)
            })
            .sum()
    }

    /// Releases that scratch (after a one-off large evaluation, say); the
    /// next op that needs it allocates it again. Work already recorded keeps
    /// the buffers it uses until it has run.
    pub fn release_scratch(&self) {
        for slot in [&self.embed_scratch, &self.split_scratch] {
            *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        }
    }

    /// The context.
    pub fn ctx(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    fn placeholders(&self) -> cell::Placeholders<'_> {
        cell::Placeholders {
            ints: &self.dummy_ints,
            floats: &self.dummy_floats,
            step_kernel: self.step_kernel,
        }
    }
}

impl Backend for GpuBackend {
    type Elem = f32;
    type Tensor = GpuTensor;
    type Ints = GpuTensor;

    fn describe(&self) -> String {
        format!("gpu: {}", self.ctx.adapter())
    }

    fn is_gpu(&self) -> bool {
        true
    }

    fn zeros(&self, shape: &[usize]) -> Result<GpuTensor> {
        GpuTensor::zeros(&self.ctx, shape, DType::F32)
    }

    fn tensor(&self, shape: &[usize], data: &[f32]) -> Result<GpuTensor> {
        GpuTensor::from_f32(&self.ctx, shape, data)
    }

    fn ints(&self, shape: &[usize], data: &[i32]) -> Result<GpuTensor> {
        GpuTensor::from_i32(&self.ctx, shape, data)
    }

    fn zeros_stored(&self, shape: &[usize], store: Precision) -> Result<GpuTensor> {
        GpuTensor::zeros(&self.ctx, shape, DType::F32)?.stored_at(store)
    }

    fn zeros_packed(&self, shape: &[usize], store: Precision) -> Result<GpuTensor> {
        if !store.is_16bit() {
            return self.zeros(shape);
        }
        GpuTensor::zeros_packed(&self.ctx, shape, store)
    }

    fn store_of(&self, t: &GpuTensor) -> Precision {
        t.store()
    }

    fn held_bytes(&self, t: &GpuTensor) -> u64 {
        (t.len() * t.dtype().size()) as u64
    }

    fn supports(&self, _p: Precision) -> bool {
        // Every kernel a training step uses rounds its stores by `STORE`.
        true
    }

    fn is_unique(&self, t: &GpuTensor) -> bool {
        t.is_unique()
    }

    fn allocations(&self) -> u64 {
        self.ctx.counters().allocations
    }

    fn allocated_bytes(&self) -> u64 {
        self.ctx.counters().allocated_bytes
    }

    fn shape<'a>(&self, t: &'a GpuTensor) -> &'a [usize] {
        t.shape()
    }

    fn int_shape<'a>(&self, t: &'a GpuTensor) -> &'a [usize] {
        t.shape()
    }

    fn reshape(&self, t: &GpuTensor, shape: &[usize]) -> Result<GpuTensor> {
        t.reshape(shape)
    }

    fn reshape_ints(&self, t: &GpuTensor, shape: &[usize]) -> Result<GpuTensor> {
        t.reshape(shape)
    }

    fn read_many(&self, ts: &[&GpuTensor]) -> Result<Vec<Vec<f32>>> {
        download_many(&self.ctx, ts)
    }

    fn read_i32(&self, t: &GpuTensor) -> Result<Vec<i32>> {
        t.to_i32_vec(&self.ctx)
    }

    fn read_range_async(
        &self,
        t: &GpuTensor,
        range: std::ops::Range<usize>,
    ) -> Result<PendingRead<f32>> {
        t.expect_dtype("tensor", DType::F32)?;
        check_read_range(&range, t.len())?;
        let (at, bytes) = ((range.start * 4) as u64, (range.len() * 4) as u64);
        let read = self.ctx.start_read(&[(t.buffer(), at, bytes)])?;
        let ctx = self.ctx.clone();
        Ok(PendingRead::later(move || {
            let mut parts = read.finish(&ctx)?;
            Ok(bytemuck::pod_collect_to_vec(
                &parts.pop().unwrap_or_default(),
            ))
        }))
    }

    fn write(&self, t: &GpuTensor, data: &[f32]) -> Result<()> {
        if t.dtype().packed().is_some() {
            return t.write_packed(&self.ctx, data);
        }
        if t.store().is_16bit() {
            // Rounded on the host, as a kernel storing them would.
            let v: Vec<f32> = data.iter().map(|&x| t.store().round_f32(x)).collect();
            return t.write_f32(&self.ctx, &v);
        }
        t.write_f32(&self.ctx, data)
    }

    fn write_ints(&self, t: &GpuTensor, data: &[i32]) -> Result<()> {
        t.write_i32(&self.ctx, data)
    }

    fn fill(&self, t: &GpuTensor, off: usize, n: usize, value: f64) -> Result<()> {
        self.ctx
            .record(|rec| fill_gpu(rec, t, off, n, value as f32))
    }

    fn copy(
        &self,
        src: &GpuTensor,
        src_off: usize,
        dst: &GpuTensor,
        dst_off: usize,
        n: usize,
    ) -> Result<()> {
        self.ctx
            .record(|rec| copy_gpu(rec, src, src_off, dst, dst_off, n))
    }

    fn gemm(
        &self,
        g: &Gemm,
        a: &GpuTensor,
        b: &GpuTensor,
        bias: Option<&GpuTensor>,
        c: &GpuTensor,
    ) -> Result<()> {
        let (splits, _) = self.split_k.plan(g, self.gemm.resolve(g));
        let scratch = match splits {
            0 | 1 => None,
            _ => Some(self.scratch(
                &self.split_scratch,
                matmul::split_scratch_len(g, splits),
                DType::F32,
            )?),
        };
        self.ctx.record(|rec| {
            gemm_gpu(
                rec,
                self.gemm,
                self.split_k,
                g,
                a,
                b,
                bias,
                c,
                scratch.as_ref(),
            )
        })
    }

    fn activation(&self, act: Activation, span: Span, x: &GpuTensor, y: &GpuTensor) -> Result<()> {
        self.ctx
            .record(|rec| activation::forward_gpu(rec, act, span, x, y))
    }

    fn activation_backward(
        &self,
        act: Activation,
        span: Span,
        x: &GpuTensor,
        dy: &GpuTensor,
        dx: &GpuTensor,
        accumulate: bool,
    ) -> Result<()> {
        self.ctx
            .record(|rec| activation::backward_gpu(rec, act, span, x, dy, dx, accumulate))
    }

    fn softmax(&self, shape: Rows, x: &GpuTensor, y: &GpuTensor) -> Result<()> {
        self.ctx
            .record(|rec| softmax_xent::softmax_gpu(rec, shape, x, y))
    }

    fn xent(
        &self,
        shape: Rows,
        x: &GpuTensor,
        targets: &GpuTensor,
        ignore_index: i32,
        scale: f64,
        out: &XentBuffers<Self>,
        dx: Option<&GpuTensor>,
    ) -> Result<()> {
        let out = XentOut {
            loss: &out.loss,
            stats: &out.stats,
            summary: &out.summary,
            summary_off: out.summary_off,
            dlogits: dx,
        };
        self.ctx.record(|rec| {
            softmax_xent::xent_gpu(rec, shape, x, targets, ignore_index, scale as f32, out)
        })
    }

    fn sum_cols(&self, s: &ColSum, x: &GpuTensor, out: &GpuTensor) -> Result<()> {
        self.ctx.record(|rec| sum_cols_gpu(rec, s, x, out))
    }

    fn dot_cols(&self, d: &ColDot, x: &GpuTensor, y: &GpuTensor, out: &GpuTensor) -> Result<()> {
        self.ctx
            .record(|rec| reduce::dot_cols_gpu(rec, d, x, y, out))
    }

    fn reduce(
        &self,
        op: ReduceOp,
        x: &GpuTensor,
        x_off: usize,
        n: usize,
        out: &GpuTensor,
        out_off: usize,
        accumulate: bool,
    ) -> Result<()> {
        self.ctx.record(|rec| {
            reduce_gpu(
                rec,
                op,
                x,
                x_off,
                n,
                &self.scratch,
                out,
                out_off,
                accumulate,
            )
        })
    }

    fn max_tensor_elems(&self) -> usize {
        let l = self.ctx.limits();
        let bytes = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
        usize::try_from(bytes / 4).unwrap_or(usize::MAX)
    }

    fn steps_per_call(&self, variant: &Variant, batch: usize, units: usize) -> usize {
        let resident = self.step_kernel(batch, units) == StepKernel::Resident;
        if resident && !variant.gates_between_dispatches() {
            // Fewer steps a dispatch when a forced resident kernel walks many
            // column tiles a step, so no dispatch runs much longer than 64
            // steps at H = 128 (display watchdogs).
            let tiles = units.div_ceil(32).max(1);
            (StepKernel::RESIDENT_STEPS * 4 / tiles).clamp(1, StepKernel::RESIDENT_STEPS)
        } else {
            1
        }
    }

    fn cell_forward(
        &self,
        cell: Cell,
        s: &StepSpec,
        b: &StepForward<'_, Self::Tensor, Self::Ints>,
    ) -> Result<()> {
        self.ctx
            .record(|rec| cell::forward_step_gpu(rec, cell, s, b, self.placeholders()))
    }

    fn cell_backward(
        &self,
        cell: Cell,
        s: &StepSpec,
        b: &StepBackward<'_, Self::Tensor, Self::Ints>,
    ) -> Result<()> {
        self.ctx
            .record(|rec| cell::backward_step_gpu(rec, cell, s, b, self.placeholders()))
    }

    fn embed_forward(
        &self,
        s: &EmbedSpec,
        tokens: &GpuTensor,
        table: &GpuTensor,
        out: &GpuTensor,
    ) -> Result<()> {
        self.ctx
            .record(|rec| embed::forward_gpu(rec, s, tokens, table, out))
    }

    fn embed_backward(
        &self,
        s: &EmbedSpec,
        tokens: &GpuTensor,
        dout: &GpuTensor,
        dtable: &GpuTensor,
        accumulate: bool,
    ) -> Result<()> {
        let need = embed::sort_scratch_len(s);
        let scratch = self.scratch(&self.embed_scratch, need, DType::I32)?;
        self.ctx
            .record(|rec| embed::backward_gpu(rec, s, tokens, dout, dtable, accumulate, &scratch))
    }

    fn skip_forward(&self, skip: Skip, n: usize, t: &SkipForward<'_, GpuTensor>) -> Result<()> {
        self.ctx.record(|rec| skip::forward_gpu(rec, skip, n, t))
    }

    fn skip_backward(&self, skip: Skip, n: usize, t: &SkipBackward<'_, GpuTensor>) -> Result<()> {
        self.ctx.record(|rec| skip::backward_gpu(rec, skip, n, t))
    }

    fn dropout(&self, s: &DropoutSpec, x: &GpuTensor, y: &GpuTensor) -> Result<()> {
        self.ctx.record(|rec| dropout::apply_gpu(rec, s, x, y))
    }

    fn optim_update(
        &self,
        opt: &Optimizer,
        s: &UpdateSpec,
        params: &GpuTensor,
        grads: &GpuTensor,
        s1: &GpuTensor,
        s2: &GpuTensor,
        stats: &GpuTensor,
    ) -> Result<()> {
        self.ctx
            .record(|rec| optim::update_gpu(rec, opt, s, params, grads, s1, s2, stats, None))
    }

    fn optim_update_copy(
        &self,
        opt: &Optimizer,
        s: &UpdateSpec,
        params: &GpuTensor,
        grads: &GpuTensor,
        s1: &GpuTensor,
        s2: &GpuTensor,
        stats: &GpuTensor,
        copy: &GpuTensor,
    ) -> Result<()> {
        optim::check_copy(s.n, copy.store(), copy.len())?;
        if copy.dtype().packed().is_none() {
            // A 16-bit tensor held in f32 words: the update, then a copy.
            self.optim_update(opt, s, params, grads, s1, s2, stats)?;
            return self.copy(params, 0, copy, 0, s.n);
        }
        self.ctx
            .record(|rec| optim::update_gpu(rec, opt, s, params, grads, s1, s2, stats, Some(copy)))
    }

    fn argmax_rows(&self, shape: Rows, x: &GpuTensor, predicted: &GpuTensor) -> Result<()> {
        self.ctx
            .record(|rec| softmax_xent::argmax_rows_gpu(rec, shape, x, predicted))
    }

    fn gate_updates(&self, g: &GateSpec, stats: &GpuTensor) -> Result<()> {
        self.ctx.record(|rec| optim::gate_gpu(rec, g, stats))
    }

    fn read_range_and_ints(
        &self,
        t: &GpuTensor,
        range: std::ops::Range<usize>,
        ints: &[&GpuTensor],
    ) -> Result<RangeAndInts<f32>> {
        t.expect_dtype("tensor", DType::F32)?;
        check_read_range(&range, t.len())?;
        let mut parts = vec![(
            t.buffer(),
            (range.start * 4) as u64,
            (range.len() * 4) as u64,
        )];
        for i in ints {
            i.expect_dtype("ints", DType::I32)?;
            parts.push((i.buffer(), 0, (i.len() * 4) as u64));
        }
        let mut bytes = self.ctx.read_buffers(&parts)?.into_iter();
        let floats = bytemuck::pod_collect_to_vec(&bytes.next().unwrap_or_default());
        Ok((
            floats,
            bytes.map(|b| bytemuck::pod_collect_to_vec(&b)).collect(),
        ))
    }

    fn flush(&self) -> Result<()> {
        self.ctx.flush()
    }
}
