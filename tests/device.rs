//! Context behaviour: batching into one submission, device loss, typed errors.

mod common;

use rnn_wgpu::Error;
use rnn_wgpu::backend::{Backend, api};
use rnn_wgpu::gpu::{DType, GpuTensor};
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

/// The scheduler's structure, counted by the engine: a forward is one input
/// matmul plus one dispatch per time step for each layer and direction; a
/// backward is one dispatch per time step plus six large reductions over all
/// steps (grad_h0, dW_ih, dW_hh, two bias sums, the input gradient); and the
/// whole forward + backward is one submission.
#[test]
fn one_dispatch_per_layer_direction_and_step() {
    use rnn_wgpu::nn::{Rnn, RnnConfig};
    use rnn_wgpu::ops::cell::Cell;
    let Some((ctx, gpu)) = common::own_gpu(|_| {}) else {
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
        let forward = layers * dirs * (1 + steps);
        let backward = layers * dirs * (steps + 6);
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
