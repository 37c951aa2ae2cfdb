//! GPU faults and extremes: adapter limits enforced up front, device loss in
//! the middle of training, shader errors, bitwise determinism of whole passes,
//! and long or saturated sequences.

mod common;

use rnn_wgpu::Error;
use rnn_wgpu::backend::{Backend, CpuBackend, api};
use rnn_wgpu::nn::case::{RnnCase, run_case};
use rnn_wgpu::nn::model::{Init, InputEncoding, ModelConfig};
use rnn_wgpu::nn::{Rnn, RnnConfig};
use rnn_wgpu::ops::cell::{Cell, Nonlinearity};
use rnn_wgpu::ops::optim::Optimizer;
use rnn_wgpu::train::schedule::Schedule;
use rnn_wgpu::train::tasks::TaskSpec;
use rnn_wgpu::train::{Bptt, NonFinite, TrainConfig, Trainer};

fn train_config() -> TrainConfig {
    TrainConfig {
        task: TaskSpec::add(2),
        model: ModelConfig {
            vocab: 0,
            input: InputEncoding::Embedding(8),
            cell: Cell::Lstm,
            hidden: 16,
            layers: 2,
            dropout: 0.1,
            forget_bias: 1.0,
            init: Init::Uniform,
            variant: Default::default(),
            skip: Default::default(),
        },
        batch: 8,
        steps: 100,
        bptt: Bptt::Full,
        optimizer: Optimizer::adam(0.01),
        schedule: Schedule::Constant,
        clip: Some(1.0),
        seed: 9,
        non_finite: NonFinite::Error,
        eval_problems: 20,
        precision: Default::default(),
    }
}

#[test]
fn adapter_limits_are_enforced_up_front() {
    let Some((ctx, gpu)) = common::own_gpu(|o| {
        o.max_storage_binding = Some(64 << 10);
        o.max_buffer_size = Some(1 << 20);
    }) else {
        return;
    };
    assert_eq!(ctx.limits().max_storage_buffer_binding_size, 64 << 10);
    // Allocation beyond max_buffer_size.
    let err = gpu.zeros(&[(1 << 20) / 4 + 1]).unwrap_err();
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
    // A binding beyond max_storage_buffer_binding_size, before anything is submitted.
    let a = gpu.zeros(&[130, 130]).unwrap();
    let err = api::matmul(&gpu, &a, &a, false, false, None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Limit {
                limit: "max_storage_buffer_binding_size",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("matmul_tiled"), "{err}");
    // A recurrent workspace too large to bind.
    let mut rnn = Rnn::new(gpu.clone(), RnnConfig::new(Cell::Lstm, 4, 32), 1).unwrap();
    let x = gpu.zeros(&[64, 16, 4]).unwrap();
    let err = rnn.forward(&x, None, None, None).unwrap_err();
    assert!(matches!(err, Error::Limit { .. }), "{err}");
    // Small work still runs on the same context.
    let b = gpu.tensor_f32(&[8, 8], &[0.5; 64]).unwrap();
    let c = api::matmul(&gpu, &b, &b, false, false, None).unwrap();
    assert_eq!(gpu.read(&c).unwrap()[0], 2.0);
}

#[test]
fn device_loss_mid_training_keeps_the_checkpoint_and_resume_continues() {
    let Some((ctx, gpu)) = common::own_gpu(|_| {}) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("rnn-wgpu-loss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = dir.join("run.safetensors");
    let mut t = Trainer::new(gpu, train_config()).unwrap();
    t.train_step().unwrap();
    t.train_step().unwrap();
    t.save(&ck).unwrap();
    let saved = std::fs::read(&ck).unwrap();
    t.train_step().unwrap();
    ctx.destroy_device();
    let err = t.train_step().unwrap_err();
    assert!(matches!(err, Error::DeviceLost { .. }), "{err}");
    let err = t.save(&ck).unwrap_err();
    assert!(matches!(err, Error::DeviceLost { .. }), "{err}");
    assert_eq!(
        std::fs::read(&ck).unwrap(),
        saved,
        "the checkpoint must be intact"
    );
    // A fresh device resumes exactly where the checkpoint stopped.
    let (_, fresh) = common::own_gpu(|_| {}).unwrap();
    let mut resumed = Trainer::load(fresh.clone(), &ck).unwrap();
    let mut reference = Trainer::new(fresh, train_config()).unwrap();
    let r: Vec<u64> = (0..4)
        .map(|_| reference.train_step().unwrap().loss.to_bits())
        .collect();
    let s: Vec<u64> = (0..2)
        .map(|_| resumed.train_step().unwrap().loss.to_bits())
        .collect();
    assert_eq!(&r[2..], &s[..]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shader_errors_carry_the_compilers_message() {
    let Some(ctx) = common::gpu_ctx() else { return };
    let err = ctx
        .compile("broken.wgsl", "fn f( -> f32 { return 1.0; }")
        .unwrap_err();
    match &err {
        Error::ShaderCompile {
            shader, message, ..
        } => {
            assert_eq!(shader, "broken.wgsl");
            assert!(message.contains("expected"), "{message}");
        }
        other => panic!("expected a shader error, got {other}"),
    }
    assert!(
        ctx.compile("fine.wgsl", "fn f() -> f32 { return 1.0; }")
            .is_ok()
    );
}

#[test]
fn whole_recurrent_passes_repeat_bitwise_on_the_gpu() {
    let gpu = gpu_or_skip!();
    for cell in [Cell::Lstm, Cell::Gru, Cell::Rnn(Nonlinearity::Relu)] {
        let cfg = RnnConfig::new(cell, 5, 40).layers(2).bidirectional(true);
        let case = RnnCase::new(cfg, 7, 9, 3)
            .with_states()
            .with_lengths(vec![7, 2, 5, 7, 1, 6, 3, 7, 4]);
        let data = case.data();
        let a = run_case(&gpu, &case.config, &data, true).unwrap();
        let b = run_case(&gpu, &case.config, &data, true).unwrap();
        let bits = |v: Vec<f64>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a.values()), bits(b.values()), "{}", cell.name());
        assert_eq!(bits(a.gradients()), bits(b.gradients()), "{}", cell.name());
    }
}

/// T = 10 000 with inputs of ±1e4: every value and gradient stays finite, and
/// the GPU agrees with the CPU.
#[test]
fn long_saturated_sequences_stay_finite() {
    let steps = 10_000;
    for (i, cell) in Cell::ALL.into_iter().enumerate() {
        let cfg = RnnConfig::new(cell, 3, 8);
        let mut case = RnnCase::new(cfg, steps, 2, 40 + i as u64).with_states();
        case.lengths = Some(vec![steps as i32, 7_321]);
        let mut data = case.data();
        for (j, x) in data.x.iter_mut().enumerate() {
            *x = if j % 3 == 0 { 1e4 } else { -1e4 * x.signum() };
        }
        let cpu = run_case(&CpuBackend::<f32>::new(), &case.config, &data, true).unwrap();
        assert!(
            cpu.values()
                .iter()
                .chain(&cpu.gradients())
                .all(|v| v.is_finite()),
            "{}: CPU produced non-finite values",
            cell.name()
        );
        // The GPU runs the two gated cells (20 000 dispatches each on a software adapter).
        if matches!(cell, Cell::Lstm | Cell::Gru)
            && let Some(gpu) = common::gpu()
        {
            let g = run_case(&gpu, &case.config, &data, true).unwrap();
            assert!(
                g.values()
                    .iter()
                    .chain(&g.gradients())
                    .all(|v| v.is_finite())
            );
            let tol = rnn_wgpu::parity::Tolerance::new(1e-4, 1e-3);
            if let Err(m) =
                rnn_wgpu::parity::compare("long sequence values", &cpu.values(), &g.values(), tol)
            {
                panic!("{}: {m}", cell.name());
            }
        }
    }
}
