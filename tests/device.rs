//! Context behaviour: batching into one submission, device loss, typed errors.

mod common;

use rnn_wgpu::Error;
use rnn_wgpu::backend::{Backend, api};
use rnn_wgpu::gpu::{ContextOptions, DType, GpuContext, GpuTensor};
use rnn_wgpu::ops::activation::Activation;

#[test]
fn many_launches_make_one_submission_and_one_readback() {
    // A context of its own so other tests' work does not count.
    let Some((ctx, gpu)) = common::own_gpu(|_| {}) else {
        return;
    };
    let x = gpu.tensor_f32(&[4, 4], &[0.5; 16]).unwrap();
    let before = ctx.counters();
    let mut y = x.clone();
    for _ in 0..10 {
        y = api::matmul(&gpu, &y, &x, false, false, None).unwrap();
        y = api::activate(&gpu, Activation::Tanh, &y).unwrap();
    }
    let v = gpu.read(&y).unwrap();
    let after = ctx.counters();
    assert_eq!(after.submits - before.submits, 1, "{before:?} -> {after:?}");
    assert_eq!(after.readbacks - before.readbacks, 1);
    assert_eq!(after.dispatches - before.dispatches, 20);
    assert!(v.iter().all(|v| v.is_finite()));
}

#[test]
fn a_lost_device_fails_every_later_call_cleanly() {
    let Some((ctx, gpu)) = common::own_gpu(|_| {}) else {
        return;
    };
    let x = gpu.tensor_f32(&[2, 2], &[1.0; 4]).unwrap();
    ctx.destroy_device();
    let err = api::matmul(&gpu, &x, &x, false, false, None).unwrap_err();
    assert!(matches!(err, Error::DeviceLost { .. }), "{err}");
    assert!(matches!(gpu.read(&x), Err(Error::DeviceLost { .. })));
    assert!(matches!(gpu.zeros(&[3]), Err(Error::DeviceLost { .. })));
    assert!(err.to_string().contains("device was lost"), "{err}");
}

#[test]
fn wrong_dtypes_and_lengths_are_errors() {
    let gpu = gpu_or_skip!();
    let ctx = gpu.ctx();
    let ints = GpuTensor::from_i32(ctx, &[3], &[1, 2, 3]).unwrap();
    let err = ints.to_f32_vec(ctx).unwrap_err();
    assert!(err.to_string().contains("I32"), "{err}");
    let err = GpuTensor::from_f32(ctx, &[2, 2], &[1.0; 3]).unwrap_err();
    assert!(
        err.to_string()
            .contains("3 values do not fill shape [2, 2]"),
        "{err}"
    );
    let err = rnn_wgpu::ops::memory::cast(ctx, &ints, DType::F16).unwrap_err();
    assert!(err.to_string().contains("cast"), "{err}");
    let x = gpu.tensor_f32(&[4], &[0.0; 4]).unwrap();
    assert!(gpu.reshape(&x, &[3]).is_err());
    assert_eq!(gpu.reshape(&x, &[2, 2]).unwrap().shape(), &[2, 2]);
}

#[test]
fn an_oversized_buffer_is_rejected_up_front() {
    let gpu = gpu_or_skip!();
    let max = gpu.ctx().limits().max_buffer_size;
    let elems = (max / 4 + 1) as usize;
    let err = gpu.zeros(&[elems]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Limit {
                limit: "max_buffer_size",
                ..
            }
        ),
        "{err}"
    );
}

/// The scheduler's structure, counted by the engine (one step a dispatch,
/// the tiled kernel): a forward is, per layer, one input matmul per
/// direction plus one dispatch per time step for both directions; a
/// backward is, per layer, the carries' fill, one dispatch per time step for
/// both directions, and per direction the large products and reductions over
/// all steps (grad_h0, dW_ih, dW_hh, the bias sums — one for the LSTM, whose
/// b_ih and b_hh take the same sums, two for the GRU — and the input
/// gradient); and the whole forward + backward is one submission.
#[test]
fn one_dispatch_per_layer_and_step() {
    use rnn_wgpu::gpu::StepKernel;
    use rnn_wgpu::nn::{Rnn, RnnConfig};
    use rnn_wgpu::ops::cell::Cell;
    let Some((ctx, gpu)) = common::own_gpu(|o| o.step_kernel = Some(StepKernel::Tiled)) else {
        return;
    };
    let (layers, dirs, steps) = (2u64, 2u64, 5u64);
    for cell in [Cell::Lstm, Cell::Gru] {
        let cfg = RnnConfig::new(cell, 3, 8).layers(2).bidirectional(true);
        let mut rnn = Rnn::new(gpu.clone(), cfg, 1).unwrap();
        let x = gpu.tensor_f32(&[5, 2, 3], &[0.1; 30]).unwrap();
        let grads = rnn.zeros_like_params().unwrap();
        ctx.flush().unwrap();
        let c0 = ctx.counters();
        let (out, saved) = rnn.forward_train(&x, None, None, None, None).unwrap();
        let c1 = ctx.counters();
        rnn.backward(&saved, Some(&out.output), None, None, &grads)
            .unwrap();
        let c2 = ctx.counters();
        assert_eq!(c1.submits, c0.submits, "the forward is only recorded");
        assert_eq!(c2.submits, c1.submits, "the backward is only recorded");
        gpu.read(&grads).unwrap();
        let c3 = ctx.counters();
        assert_eq!(
            c3.submits - c0.submits,
            1,
            "one submission for forward and backward"
        );
        assert_eq!(c3.readbacks - c0.readbacks, 1);
        let dispatches = c3.dispatches - c0.dispatches;
        let bias_sums = if cell == Cell::Gru { 2 } else { 1 };
        let forward = layers * (dirs + steps);
        // (The first layer computes no input gradient.)
        let backward = layers * (1 + steps + dirs * (3 + bias_sums)) + (layers - 1) * dirs;
        assert_eq!(dispatches, forward + backward, "{}", cell.name());
    }
}

/// Aliasing: a dispatch writing a buffer it also reads is refused before
/// anything is submitted (as the CPU refuses it); a copy within one buffer
/// behaves as on the CPU (memmove).
#[test]
fn aliasing_is_refused_or_handled_like_the_cpu() {
    use rnn_wgpu::backend::CpuBackend;
    use rnn_wgpu::ops::matmul::Gemm;
    let gpu = gpu_or_skip!();
    let a = gpu.tensor_f32(&[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let err = gpu.gemm(&Gemm::nn(2, 2, 2), &a, &a, None, &a).unwrap_err();
    assert!(matches!(err, Error::Aliasing { .. }), "{err}");
    let cpu = CpuBackend::<f32>::new();
    let c = cpu.tensor_f32(&[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert!(matches!(
        cpu.gemm(&Gemm::nn(2, 2, 2), &c, &c, None, &c),
        Err(Error::Aliasing { .. })
    ));
    // The GPU is still usable, and overlapping copies match the CPU.
    let v: Vec<f32> = (0..10).map(|i| i as f32).collect();
    let g = gpu.tensor_f32(&[10], &v).unwrap();
    let h = cpu.tensor_f32(&[10], &v).unwrap();
    gpu.copy(&g, 0, &g, 3, 6).unwrap();
    cpu.copy(&h, 0, &h, 3, 6).unwrap();
    assert_eq!(gpu.read(&g).unwrap(), cpu.read(&h).unwrap());
}

/// The default bound is the documented one, and a step of the structure test
/// above stays far inside it.
#[test]
fn the_default_dispatch_bound_is_documented() {
    use rnn_wgpu::gpu::{ContextOptions, DEFAULT_MAX_DISPATCHES_PER_SUBMIT};
    assert_eq!(DEFAULT_MAX_DISPATCHES_PER_SUBMIT, 256);
    assert_eq!(
        ContextOptions::default().max_dispatches_per_submit,
        DEFAULT_MAX_DISPATCHES_PER_SUBMIT
    );
    let Some(ctx) = common::gpu_ctx() else { return };
    assert_eq!(
        ctx.max_dispatches_per_submit(),
        ContextOptions::from_env()
            .unwrap()
            .max_dispatches_per_submit
    );
}

/// With a bound of `b` dispatches, single-dispatch ops fill submissions of
/// exactly `b`; an op of several dispatches (cross-entropy: three) larger
/// than the bound is split too. Results match one submission bit for bit.
#[test]
fn the_dispatch_bound_splits_submissions_without_changing_results() {
    use rnn_wgpu::backend::XentBuffers;
    use rnn_wgpu::ops::softmax_xent::{IGNORE_INDEX, Rows};
    fn run(bound: usize) -> Option<(Vec<f32>, Vec<f32>, u64, u64)> {
        // One step a dispatch (the tiled kernel): enough dispatches to split.
        let (ctx, gpu) = common::own_gpu(|o| {
            o.max_dispatches_per_submit = bound;
            o.step_kernel = Some(rnn_wgpu::gpu::StepKernel::Tiled);
        })?;
        let x = gpu.tensor_f32(&[4, 4], &[0.25; 16]).unwrap();
        let before = ctx.counters();
        let mut y = x.clone();
        for i in 0..10 {
            y = api::matmul(&gpu, &y, &x, i % 2 == 1, false, None).unwrap();
            let act = [Activation::Tanh, Activation::Sigmoid][i % 2];
            y = api::activate(&gpu, act, &y).unwrap();
        }
        let v = gpu.read(&y).unwrap();
        let after = ctx.counters();
        // Cross-entropy records three dependent dispatches as one op.
        let rows = Rows { rows: 4, cols: 4 };
        let targets = gpu.ints(&[4], &[0, 3, IGNORE_INDEX, 1]).unwrap();
        let out = XentBuffers::new(&gpu, 4).unwrap();
        let dx = gpu.zeros(&[4, 4]).unwrap();
        gpu.xent(rows, &y, &targets, IGNORE_INDEX, 1.0, &out, Some(&dx))
            .unwrap();
        let g = gpu.read_many(&[&dx, &out.loss]).unwrap().concat();
        let last = ctx.counters();
        assert_eq!(after.dispatches - before.dispatches, 20);
        assert_eq!(last.dispatches - after.dispatches, 3);
        Some((
            v,
            g,
            after.submits - before.submits,
            last.submits - after.submits,
        ))
    }
    let Some((v, g, one, xent_one)) = run(rnn_wgpu::gpu::DEFAULT_MAX_DISPATCHES_PER_SUBMIT) else {
        return;
    };
    assert_eq!((one, xent_one), (1, 1));
    for (bound, submits, xent_submits) in [(1, 20, 3), (6, 4, 1), (2, 10, 2)] {
        let (w, h, s, xs) = run(bound).unwrap();
        assert_eq!((s, xs), (submits, xent_submits), "bound {bound}");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&v), bits(&w), "bound {bound}: forward values");
        assert_eq!(bits(&g), bits(&h), "bound {bound}: cross-entropy");
    }
}

/// A recurrent forward + backward and whole training steps (two layers,
/// truncated BPTT, dropout, Adam with clipping) split into many submissions
/// with a small bound, with every parameter update, per-step parameter block
/// and carried state landing where it would in one submission: bitwise the
/// same results.
#[test]
fn long_work_split_by_the_bound_is_bitwise_the_same() {
    use rnn_wgpu::nn::RnnConfig;
    use rnn_wgpu::nn::case::{RnnCase, run_case};
    use rnn_wgpu::nn::model::{InputEncoding, ModelConfig};
    use rnn_wgpu::ops::cell::Cell;
    use rnn_wgpu::ops::optim::Optimizer;
    use rnn_wgpu::train::schedule::Schedule;
    use rnn_wgpu::train::tasks::TaskSpec;
    use rnn_wgpu::train::{Bptt, TrainConfig, Trainer};
    let cfg = RnnConfig::new(Cell::Lstm, 3, 8)
        .layers(2)
        .bidirectional(true);
    let case = RnnCase::new(cfg, 7, 3, 5)
        .with_states()
        .with_lengths(vec![7, 4, 1]);
    let data = case.data();
    let model = ModelConfig {
        input: InputEncoding::Embedding(8),
        layers: 2,
        dropout: 0.2,
        ..ModelConfig::new(Cell::Gru, 16)
    };
    let train = TrainConfig {
        batch: 8,
        steps: 100,
        bptt: Bptt::Truncated { k1: 3, k2: 5 },
        optimizer: Optimizer::adam(0.01),
        schedule: Schedule::Constant,
        clip: Some(0.5),
        seed: 4,
        eval_problems: 20,
        ..TrainConfig::new(TaskSpec::add(2), model)
    };
    // (forward + backward values and gradients, their [dispatches,
    // submissions]; losses and parameters of 3 training steps, [dispatches,
    // submissions] of one step)
    type Run = (Vec<u64>, [u64; 2], Vec<u64>, [u64; 2]);
    let bits = |v: Vec<f64>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let run = |bound: usize| -> Option<Run> {
        // One step a dispatch (the tiled kernel): enough dispatches to split.
        let (ctx, gpu) = common::own_gpu(|o| {
            o.max_dispatches_per_submit = bound;
            o.step_kernel = Some(rnn_wgpu::gpu::StepKernel::Tiled);
        })?;
        let c0 = ctx.counters();
        let r = run_case(&gpu, &case.config, &data, true).unwrap();
        let c1 = ctx.counters();
        assert!(c1.dispatches - c0.dispatches > 40, "{c0:?} -> {c1:?}");
        let mut values = bits(r.values());
        values.extend(bits(r.gradients()));
        let mut t = Trainer::new(gpu, train.clone()).unwrap();
        let mut steps = vec![t.train_step().unwrap().loss.to_bits()];
        let c2 = ctx.counters();
        steps.push(t.train_step().unwrap().loss.to_bits());
        let c3 = ctx.counters();
        assert!(c3.dispatches - c2.dispatches > 100, "{c2:?} -> {c3:?}");
        steps.push(t.train_step().unwrap().loss.to_bits());
        steps.extend(bits(t.read_params().unwrap()));
        Some((
            values,
            [c1.dispatches - c0.dispatches, c1.submits - c0.submits],
            steps,
            [c3.dispatches - c2.dispatches, c3.submits - c2.submits],
        ))
    };
    let Some((values, [_, case_submits], steps, [_, step_submits])) =
        run(rnn_wgpu::gpu::DEFAULT_MAX_DISPATCHES_PER_SUBMIT)
    else {
        return;
    };
    assert_eq!(
        (case_submits, step_submits),
        (1, 1),
        "one submission each at the default bound"
    );
    let (split_values, case, split_steps, step) = run(16).unwrap();
    // At most 16 dispatches per submission (a readback adds none).
    for [dispatches, submits] in [case, step] {
        assert!(
            submits >= dispatches.div_ceil(16) && submits > 1,
            "{dispatches} dispatches in {submits} submissions"
        );
    }
    assert_eq!(values, split_values, "forward + backward");
    assert_eq!(steps, split_steps, "training losses and parameters");
}

/// A data-parallel rank's adapter: the k-th one (wrapping around), or the
/// k-th hardware one for `--backend auto`, whose absence is a clear error
/// (the trainer then takes the CPU path).
#[test]
fn ranks_take_the_kth_adapter_and_hardware_only_refuses_software() {
    if common::gpu_ctx().is_none() {
        return;
    }
    let base = ContextOptions::from_env().unwrap();
    let first = GpuContext::new(base.clone()).unwrap();
    // Past the last adapter the count wraps around: 7 ranks on this machine
    // still each open one, the same as rank 0 when there is one adapter.
    let mut k = base.clone();
    k.ordinal = Some(7);
    let seventh = GpuContext::new(k).unwrap();
    let adapters = rnn_wgpu::gpu::list_adapters(base.backends);
    let api = first.adapter().backend;
    if adapters.iter().filter(|a| a.backend == api).count() == 1 {
        assert_eq!(seventh.adapter(), first.adapter());
    }
    let mut hw = base;
    hw.hardware_only = true;
    match GpuContext::new(hw) {
        Ok(ctx) => assert!(!ctx.adapter().is_software(), "{}", ctx.adapter()),
        Err(e) => {
            assert!(adapters.iter().all(|a| a.is_software()), "{e}");
            assert!(e.to_string().contains("no hardware adapter"), "{e}");
        }
    }
}

/// Readbacks reuse their staging buffers by size class: a repeated read
/// creates none, a larger one creates one, and what is kept stays bounded.
#[test]
fn readbacks_reuse_their_staging_buffers() {
    use rnn_wgpu::gpu::STAGING_KEPT_BYTES;
    let Some((ctx, gpu)) = common::own_gpu(|_| {}) else {
        return;
    };
    let small = gpu.tensor_f32(&[10], &[1.5; 10]).unwrap();
    let staged = |f: &dyn Fn()| {
        let before = ctx.counters().staging_allocations;
        f();
        ctx.counters().staging_allocations - before
    };
    assert_eq!(
        staged(&|| assert_eq!(gpu.read(&small).unwrap(), vec![1.5; 10])),
        1
    );
    for _ in 0..3 {
        assert_eq!(
            staged(&|| assert_eq!(gpu.read(&small).unwrap(), vec![1.5; 10])),
            0
        );
    }
    let big: Vec<f32> = (0..100_000).map(|i| i as f32).collect();
    let large = gpu.tensor_f32(&[big.len()], &big).unwrap();
    assert_eq!(staged(&|| assert_eq!(gpu.read(&large).unwrap(), big)), 1);
    assert_eq!(staged(&|| assert_eq!(gpu.read(&large).unwrap(), big)), 0);
    // Many size classes: at most STAGING_KEPT buffers, STAGING_KEPT_BYTES, kept.
    for k in 0..12 {
        let n = 64 << k;
        let t = gpu.zeros(&[n]).unwrap();
        assert_eq!(gpu.read(&t).unwrap().len(), n);
    }
    let kept = ctx.staging_bytes();
    assert!(kept > 0 && kept <= STAGING_KEPT_BYTES, "{kept}");
    // The smallest class (256 bytes) is still kept beside the others.
    assert_eq!(
        staged(&|| assert_eq!(gpu.read(&small).unwrap(), vec![1.5; 10])),
        0
    );
}

/// The backend's grown scratch and the context's staging buffers can be
/// released; the next op that needs scratch allocates it again, with the
/// same results.
#[test]
fn scratch_and_staging_can_be_released() {
    use rnn_wgpu::ops::matmul::Gemm;
    let Some((ctx, gpu)) = common::own_gpu(|_| {}) else {
        return;
    };
    // A weight-gradient-like product, K = 4096 rows: split over K.
    let (m, n, k) = (8, 8, 4096);
    let a = gpu.tensor_f32(&[k, m], &vec![0.25; k * m]).unwrap();
    let b = gpu.tensor_f32(&[k, n], &vec![0.5; k * n]).unwrap();
    let run = || {
        let c = gpu.zeros(&[m, n]).unwrap();
        gpu.gemm(&Gemm::tn(m, n, k), &a, &b, None, &c).unwrap();
        gpu.read(&c).unwrap()
    };
    let first = run();
    assert!(first.iter().all(|&v| v == 0.125 * k as f32), "{first:?}");
    let grown = gpu.scratch_bytes();
    assert!(grown > 0, "the split product kept no scratch");
    assert!(ctx.staging_bytes() > 0);
    gpu.release_scratch();
    ctx.release_staging();
    assert_eq!(gpu.scratch_bytes(), 0);
    assert_eq!(ctx.staging_bytes(), 0);
    assert_eq!(run(), first);
    assert_eq!(gpu.scratch_bytes(), grown);
}
