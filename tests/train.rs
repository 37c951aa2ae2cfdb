//! Training: CPU and GPU follow the same trajectory, runs repeat bit for bit,
//! truncated BPTT means what its definition says, resuming continues the
//! identical trajectory, every task learns, and faults are reported.

mod common;

use common::Scratch;

use std::path::PathBuf;

use rnn_wgpu::Error;
use rnn_wgpu::backend::{Backend, CpuBackend};
use rnn_wgpu::gradcheck::{GradCheck, spread_indices};
use rnn_wgpu::nn::dense::Mlp;
use rnn_wgpu::nn::model::{Init, InputEncoding, ModelConfig, SeqModel};
use rnn_wgpu::ops::activation::Activation;
use rnn_wgpu::ops::cell::{Cell, Nonlinearity};
use rnn_wgpu::ops::optim::{Optimizer, UpdateSpec};
use rnn_wgpu::ops::reduce::ReduceOp;
use rnn_wgpu::parity::{Tolerance, compare};
use rnn_wgpu::train::sample::{SampleOptions, sample};
use rnn_wgpu::train::schedule::Schedule;
use rnn_wgpu::train::tasks::TaskSpec;
use rnn_wgpu::train::{Bptt, NonFinite, TrainConfig, Trainer};

fn model(cell: Cell, layers: usize, dropout: f32) -> ModelConfig {
    ModelConfig {
        vocab: 0,
        input: InputEncoding::Embedding(8),
        cell,
        hidden: 16,
        layers,
        dropout,
        forget_bias: 1.0,
        init: Init::Uniform,
        variant: Default::default(),
        skip: Default::default(),
    }
}

fn config(task: TaskSpec, model: ModelConfig, optimizer: Optimizer) -> TrainConfig {
    TrainConfig {
        task,
        model,
        batch: 8,
        steps: 100,
        bptt: Bptt::Full,
        optimizer,
        schedule: Schedule::Constant,
        clip: Some(0.5),
        seed: 3,
        non_finite: NonFinite::Error,
        eval_problems: 50,
        precision: Default::default(),
    }
}

fn add() -> TaskSpec {
    TaskSpec::add(2)
}

fn text_file(s: &Scratch) -> PathBuf {
    let path = s.path("text.txt");
    let line = "the quick brown fox jumps over the lazy dog. ";
    std::fs::write(&path, line.repeat(60)).unwrap();
    path
}

fn losses<B: Backend>(t: &mut Trainer<B>, steps: usize) -> Vec<f64> {
    (0..steps).map(|_| t.train_step().unwrap().loss).collect()
}

#[test]
fn cpu_and_gpu_follow_the_same_trajectory() {
    let gpu = gpu_or_skip!();
    for opt in [Optimizer::sgd(0.5), Optimizer::adam(0.01)] {
        let cfg = config(add(), model(Cell::Lstm, 2, 0.2), opt);
        let mut c = Trainer::new(CpuBackend::<f32>::new(), cfg.clone()).unwrap();
        let mut g = Trainer::new(gpu.clone(), cfg).unwrap();
        let (lc, lg) = (losses(&mut c, 5), losses(&mut g, 5));
        let name = format!("{} losses", opt.name());
        if let Err(m) = compare(&name, &lc, &lg, Tolerance::new(1e-5, 1e-4)) {
            panic!("{m}");
        }
        let (pc, pg) = (c.read_params().unwrap(), g.read_params().unwrap());
        if let Err(m) = compare(
            &format!("{} parameters", opt.name()),
            &pc,
            &pg,
            Tolerance::new(1e-4, 1e-3),
        ) {
            panic!("{m}");
        }
        assert!(
            lc[4] < lc[0],
            "{}: the loss should fall: {lc:?}",
            opt.name()
        );
    }
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn repeats_bitwise<B: Backend>(b: B) {
    let cfg = config(add(), model(Cell::Gru, 2, 0.3), Optimizer::adam(0.01));
    let mut x = Trainer::new(b.clone(), cfg.clone()).unwrap();
    let mut y = Trainer::new(b, cfg).unwrap();
    assert_eq!(bits(&losses(&mut x, 4)), bits(&losses(&mut y, 4)));
    assert_eq!(
        bits(&x.read_params().unwrap()),
        bits(&y.read_params().unwrap())
    );
}

#[test]
fn same_seed_same_bits_on_cpu() {
    repeats_bitwise(CpuBackend::<f32>::new());
}

#[test]
fn same_seed_same_bits_on_gpu() {
    let gpu = gpu_or_skip!();
    repeats_bitwise(gpu);
}

#[test]
fn truncated_bptt_covering_the_sequence_is_full_bptt() {
    let s = Scratch::new("train-tbptt-full");
    let task = TaskSpec::Text {
        path: text_file(&s),
        seq_len: 9,
    };
    let run = |bptt: Bptt| {
        let mut cfg = config(
            task.clone(),
            model(Cell::Lstm, 2, 0.0),
            Optimizer::adam(0.01),
        );
        cfg.bptt = bptt;
        let mut t = Trainer::new(CpuBackend::<f32>::new(), cfg).unwrap();
        (bits(&losses(&mut t, 3)), bits(&t.read_params().unwrap()))
    };
    let full = run(Bptt::Full);
    assert_eq!(full, run(Bptt::Truncated { k1: 9, k2: 9 }));
    assert_eq!(full, run(Bptt::Truncated { k1: 20, k2: 30 }));
    assert_ne!(
        full,
        run(Bptt::Truncated { k1: 3, k2: 3 }),
        "truncation must change something"
    );
}

/// Mean cross-entropy of `targets` given logits, on the host.
fn host_xent(logits: &[f64], targets: &[i32], vocab: usize) -> f64 {
    let (mut sum, mut count) = (0.0, 0);
    for (r, &t) in targets.iter().enumerate() {
        if t < 0 {
            continue;
        }
        let row = &logits[r * vocab..(r + 1) * vocab];
        let m = row.iter().copied().fold(f64::MIN, f64::max);
        let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        sum += lse - row[t as usize];
        count += 1;
    }
    sum / count as f64
}

/// With k < T, the gradient of a window is the gradient of that window's loss
/// with the state it starts from held constant (checked by finite differences
/// on the f64 CPU path).
#[test]
fn truncated_gradients_follow_the_window_definition() {
    let s = Scratch::new("train-tbptt-def");
    let task = TaskSpec::Text {
        path: text_file(&s),
        seq_len: 9,
    };
    for (k1, k2) in [(3, 3), (3, 5)] {
        let mut cfg = config(task.clone(), model(Cell::Lstm, 2, 0.0), Optimizer::sgd(0.0));
        cfg.bptt = Bptt::Truncated { k1, k2 };
        cfg.clip = None;
        let cpu = CpuBackend::<f64>::new();
        let mut t = Trainer::new(cpu.clone(), cfg.clone()).unwrap();
        t.train_step().unwrap();
        // lr = 0: parameters are unchanged; the gradient buffer holds the last window's.
        let analytic = cpu.read(t.model().grads()).unwrap();
        let params = t.read_params().unwrap();
        let batch = t.task().train_batch(cfg.seed, 0, cfg.batch).unwrap();
        let bsz = cfg.batch;
        let windows = cfg.bptt.windows(batch.steps).unwrap();
        let w = windows[windows.len() - 1];
        let mcfg = *t.model().config();
        // The carried state: a forward from zero over steps 0..start (same parameters).
        let mut m = SeqModel::new(cpu.clone(), mcfg, &params).unwrap();
        let prefix = cpu
            .ints(&[w.start, bsz], &batch.inputs[..w.start * bsz])
            .unwrap();
        // A value: the forwards below leave it as it is.
        let state = m.forward(&prefix, None).unwrap().state;
        let tokens = cpu
            .ints(
                &[w.end - w.start, bsz],
                &batch.inputs[w.start * bsz..w.end * bsz],
            )
            .unwrap();
        let mut targets = batch.targets[w.start * bsz..w.end * bsz].to_vec();
        for x in targets.iter_mut().take((w.loss_from - w.start) * bsz) {
            *x = -100;
        }
        let mut loss = |p: &[f64]| {
            m.set_params(p).unwrap();
            let out = m.forward(&tokens, Some(&state)).unwrap();
            host_xent(&cpu.read(&out.logits).unwrap(), &targets, mcfg.vocab)
        };
        let idx = spread_indices(params.len(), 60);
        let gc = GradCheck::default();
        if let Err(e) = gc.check(
            &format!("TBPTT({k1},{k2}) window"),
            &mut loss,
            &params,
            &analytic,
            Some(&idx),
        ) {
            panic!("{e}");
        }
    }
}

fn resumes_identically<B: Backend>(b: B, tag: &str) {
    let s = Scratch::new(tag);
    let ck = s.path("run.safetensors");
    let cfg = config(add(), model(Cell::Lstm, 2, 0.2), Optimizer::adam(0.01));
    let mut a = Trainer::new(b.clone(), cfg).unwrap();
    losses(&mut a, 3);
    a.evaluate().unwrap();
    a.save(&ck).unwrap();
    let la = losses(&mut a, 3);
    let mut r = Trainer::load(b, &ck).unwrap();
    assert_eq!(r.step(), 3);
    assert_eq!(r.history().len(), 3);
    assert_eq!(r.evals().len(), 1);
    let lr = losses(&mut r, 3);
    assert_eq!(bits(&la), bits(&lr), "resumed losses differ");
    assert_eq!(
        bits(&a.read_params().unwrap()),
        bits(&r.read_params().unwrap())
    );
}

#[test]
fn resume_continues_the_identical_trajectory_on_cpu() {
    resumes_identically(CpuBackend::<f32>::new(), "resume-cpu");
}

#[test]
fn resume_continues_the_identical_trajectory_on_gpu() {
    let gpu = gpu_or_skip!();
    resumes_identically(gpu, "resume-gpu");
}

fn learns(task: TaskSpec, cell: Cell, steps: usize) {
    let mut cfg = config(task.clone(), model(cell, 1, 0.0), Optimizer::adam(0.02));
    cfg.model.hidden = 32;
    cfg.batch = 16;
    let mut t = Trainer::new(CpuBackend::<f32>::new(), cfg).unwrap();
    let l = losses(&mut t, steps);
    let first = l[..5].iter().sum::<f64>() / 5.0;
    let last = l[steps - 5..].iter().sum::<f64>() / 5.0;
    assert!(
        last < 0.6 * first,
        "{} with {}: loss went from {first:.3} to {last:.3}",
        task.name(),
        cell.name()
    );
    let e = t.evaluate().unwrap();
    assert!(e.loss.is_finite());
}

#[test]
fn every_task_learns() {
    let s = Scratch::new("train-tasks");
    learns(add(), Cell::Lstm, 150);
    learns(
        TaskSpec::Copy {
            length: 4,
            symbols: 4,
        },
        Cell::Gru,
        150,
    );
    learns(
        TaskSpec::Xml {
            depth: 3,
            length: 30,
        },
        Cell::Lstm,
        100,
    );
    learns(
        TaskSpec::Text {
            path: text_file(&s),
            seq_len: 16,
        },
        Cell::Rnn(Nonlinearity::Tanh),
        100,
    );
}

#[test]
fn a_training_step_is_one_submission_and_one_readback() {
    let Some(ctx) = common::gpu_ctx() else { return };
    let own = std::sync::Arc::new(
        rnn_wgpu::gpu::GpuContext::new(rnn_wgpu::gpu::ContextOptions::from_env().unwrap()).unwrap(),
    );
    let gpu = rnn_wgpu::backend::GpuBackend::new(own.clone()).unwrap();
    drop(ctx);
    let mut cfg = config(add(), model(Cell::Lstm, 2, 0.2), Optimizer::adam(0.01));
    cfg.bptt = Bptt::Truncated { k1: 4, k2: 6 };
    let mut t = Trainer::new(gpu, cfg).unwrap();
    t.train_step().unwrap();
    let before = own.counters();
    t.train_step().unwrap();
    let after = own.counters();
    assert_eq!(after.submits - before.submits, 1, "{before:?} -> {after:?}");
    assert_eq!(after.readbacks - before.readbacks, 1);
}

#[test]
fn non_finite_values_stop_or_skip() {
    let cfg = config(add(), model(Cell::Lstm, 1, 0.0), Optimizer::adam(0.01));
    let mut t = Trainer::new(CpuBackend::<f32>::new(), cfg.clone()).unwrap();
    let mut p = t.read_params().unwrap();
    p[0] = f64::NAN;
    p[100] = f64::NAN;
    t.model().set_params(&p).unwrap();
    let err = t.train_step().unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err}");
    assert!(err.to_string().contains("step 0"), "{err}");

    let mut cfg = cfg;
    cfg.non_finite = NonFinite::Skip;
    let mut t = Trainer::new(CpuBackend::<f32>::new(), cfg).unwrap();
    t.model().set_params(&p).unwrap();
    let r = t.train_step().unwrap();
    assert_eq!(r.skipped, 1);
    assert_eq!(t.skipped(), 1);
    let after = t.read_params().unwrap();
    // Skipped: every finite parameter is exactly where it was.
    for (a, b) in after.iter().zip(&p).filter(|(_, b)| b.is_finite()) {
        assert_eq!(*a, *b as f32 as f64);
    }
}

#[test]
fn xor_needs_a_hidden_layer() {
    fn accuracy<B: Backend>(b: B, widths: &[usize]) -> f64 {
        let mut mlp =
            Mlp::new(b.clone(), widths, Activation::Tanh, Activation::Identity, 5).unwrap();
        let x = b
            .tensor_f64(&[4, 2], &[0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
            .unwrap();
        let y = b.ints(&[4], &[0, 1, 1, 0]).unwrap();
        let opt = Optimizer::adam(0.05);
        let n = mlp.layout().total;
        let (s1, s2, stats) = (
            b.zeros(&[n]).unwrap(),
            b.zeros(&[n]).unwrap(),
            b.zeros(&[8]).unwrap(),
        );
        for step in 1..=400 {
            b.fill(mlp.grads(), 0, n, 0.0).unwrap();
            mlp.classify_step(&x, &y, &stats, 0).unwrap();
            b.reduce(ReduceOp::SumSquares, mlp.grads(), 0, n, &stats, 6, false)
                .unwrap();
            let spec = UpdateSpec {
                n,
                step,
                lr: 0.05,
                max_norm: None,
                norm_idx: 6,
                loss_idx: None,
                grad_scale: 1.0,
            };
            b.optim_update(&opt, &spec, mlp.params(), mlp.grads(), &s1, &s2, &stats)
                .unwrap();
        }
        let (pred, _) = mlp.evaluate(&x, &y).unwrap();
        pred.iter()
            .zip([0, 1, 1, 0])
            .filter(|(p, t)| **p == *t)
            .count() as f64
            / 4.0
    }
    assert_eq!(accuracy(CpuBackend::<f32>::new(), &[2, 8, 2]), 1.0);
    assert!(
        accuracy(CpuBackend::<f32>::new(), &[2, 2]) <= 0.75,
        "a linear model cannot fit XOR"
    );
    if let Some(gpu) = common::gpu() {
        assert_eq!(accuracy(gpu, &[2, 8, 2]), 1.0);
    }
}

#[test]
fn checkpoints_and_sampling() {
    let s = Scratch::new("train-ckpt");
    let ck = s.path("a.safetensors");
    let cfg = config(add(), model(Cell::Gru, 1, 0.0), Optimizer::adam(0.01));
    let mut t = Trainer::new(CpuBackend::<f32>::new(), cfg).unwrap();
    losses(&mut t, 2);
    t.save(&ck).unwrap();
    let (mut m, task, _) =
        rnn_wgpu::train::checkpoint::load_model(CpuBackend::<f32>::new(), &ck).unwrap();
    let opts = SampleOptions {
        prompt: "12+34=".into(),
        temperature: 0.0,
        length: 5,
        seed: 1,
    };
    let out = sample(&mut m, &task, &opts).unwrap();
    assert!(out.chars().count() <= 5);
    assert!(out.chars().all(|c| task.vocab().id(c).is_some()));
    let bad = SampleOptions {
        prompt: "12*3=".into(),
        ..opts.clone()
    };
    let err = sample(&mut m, &task, &bad).unwrap_err();
    assert!(
        err.to_string().contains("'*' is not in the vocabulary"),
        "{err}"
    );
    let empty = SampleOptions {
        prompt: String::new(),
        ..opts
    };
    assert!(sample(&mut m, &task, &empty).is_err());
    // Not a checkpoint: a plain safetensors file, and garbage.
    let plain = s.path("plain.safetensors");
    let mut map = rnn_wgpu::io::TensorMap::new();
    map.insert("x".into(), rnn_wgpu::io::HostTensor::f32(&[1], vec![1.0]));
    rnn_wgpu::io::write_safetensors(&plain, &map, None).unwrap();
    let err = Trainer::load(CpuBackend::<f32>::new(), &plain).unwrap_err();
    assert!(
        err.to_string().contains("not an rnn-wgpu checkpoint"),
        "{err}"
    );
    std::fs::write(s.path("junk"), b"junk").unwrap();
    assert!(Trainer::load(CpuBackend::<f32>::new(), &s.path("junk")).is_err());
    // The empty file a killed run leaves says what it is.
    std::fs::write(s.path("empty"), b"").unwrap();
    let err = Trainer::load(CpuBackend::<f32>::new(), &s.path("empty")).unwrap_err();
    assert!(
        err.to_string().contains("stopped before its first save"),
        "{err}"
    );
}

/// Every field of a step report, as bits.
fn report_bits(r: &rnn_wgpu::train::StepReport) -> (u64, u64, u64, u64, usize, usize) {
    (
        r.step,
        r.loss.to_bits(),
        r.accuracy.to_bits(),
        r.grad_norm.to_bits(),
        r.tokens,
        r.skipped,
    )
}

/// `steps` steps recorded `depth` at a time (each begun while the ones
/// before it are in flight), their reports in order.
fn overlapped<B: Backend>(
    t: &mut Trainer<B>,
    steps: usize,
    depth: usize,
) -> Vec<rnn_wgpu::train::StepReport> {
    let mut out = Vec::new();
    let mut begun = 0;
    while out.len() < steps {
        while begun < steps && t.steps_in_flight() < depth {
            t.begin_step().unwrap();
            begun += 1;
        }
        out.push(t.finish_step().unwrap().expect("a step in flight"));
    }
    assert_eq!(t.finish_step().unwrap(), None);
    out
}

fn overlap_is_bitwise_one_step_at_a_time<B: Backend>(b: B) {
    let mut tbptt = config(add(), model(Cell::Gru, 2, 0.3), Optimizer::adam(0.01));
    tbptt.bptt = Bptt::Truncated { k1: 3, k2: 5 };
    let full = config(
        add(),
        model(Cell::Lstm, 2, 0.2),
        Optimizer::momentum(0.1, 0.9, true),
    );
    for (name, cfg) in [("tbptt gru", tbptt), ("full lstm", full)] {
        let mut one = Trainer::new(b.clone(), cfg.clone()).unwrap();
        let want: Vec<_> = (0..6).map(|_| one.train_step().unwrap()).collect();
        let params = bits(&one.read_params().unwrap());
        // And the step after goes on identically (optimizer state, step count).
        let next = report_bits(&one.train_step().unwrap());
        for depth in [2, 3] {
            let mut t = Trainer::new(b.clone(), cfg.clone()).unwrap();
            let got = overlapped(&mut t, 6, depth);
            assert_eq!(
                got.iter().map(report_bits).collect::<Vec<_>>(),
                want.iter().map(report_bits).collect::<Vec<_>>(),
                "{name}, {depth} in flight"
            );
            assert_eq!(
                bits(&t.read_params().unwrap()),
                params,
                "{name}, {depth} in flight: parameters"
            );
            assert_eq!(t.history(), &one.history()[..6]);
            assert_eq!(report_bits(&t.train_step().unwrap()), next);
        }
    }
}

#[test]
fn overlapped_steps_are_bitwise_one_step_at_a_time_on_cpu() {
    overlap_is_bitwise_one_step_at_a_time(CpuBackend::<f32>::new());
}

#[test]
fn overlapped_steps_are_bitwise_one_step_at_a_time_on_gpu() {
    let gpu = gpu_or_skip!();
    overlap_is_bitwise_one_step_at_a_time(gpu);
}

/// A non-finite step under `NonFinite::Error` with the next steps already
/// recorded: the error is the same, the steps recorded after it changed
/// nothing (the device gated their updates), and training goes on from
/// there exactly as after the same error one step at a time.
fn overlap_stops_where_one_step_at_a_time_stops<B: Backend>(b: B) {
    let cfg = config(add(), model(Cell::Lstm, 1, 0.0), Optimizer::adam(0.01));
    let mut one = Trainer::new(b.clone(), cfg.clone()).unwrap();
    let mut ahead = Trainer::new(b, cfg).unwrap();
    for t in [&mut one, &mut ahead] {
        t.train_step().unwrap();
    }
    let good = one.read_params().unwrap();
    let mut bad = good.clone();
    bad[3] = f64::NAN;
    let err_one = {
        one.model().set_params(&bad).unwrap();
        one.train_step().unwrap_err().to_string()
    };
    ahead.model().set_params(&bad).unwrap();
    ahead.begin_step().unwrap();
    ahead.begin_step().unwrap();
    ahead.begin_step().unwrap();
    let err_ahead = ahead.finish_step().unwrap_err().to_string();
    assert_eq!(err_ahead, err_one);
    assert!(err_ahead.contains("step 1"), "{err_ahead}");
    assert_eq!(ahead.steps_in_flight(), 0);
    assert_eq!(ahead.step(), one.step());
    assert_eq!(
        bits(&ahead.read_params().unwrap()),
        bits(&one.read_params().unwrap())
    );
    // Repaired, both go on with the same bits (same optimizer state and
    // update count).
    for t in [&mut one, &mut ahead] {
        t.model().set_params(&good).unwrap();
    }
    let want: Vec<_> = (0..2)
        .map(|_| report_bits(&one.train_step().unwrap()))
        .collect();
    let got: Vec<_> = overlapped(&mut ahead, 2, 2)
        .iter()
        .map(report_bits)
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        bits(&ahead.read_params().unwrap()),
        bits(&one.read_params().unwrap())
    );
}

#[test]
fn overlap_stops_where_one_step_at_a_time_stops_on_cpu() {
    overlap_stops_where_one_step_at_a_time_stops(CpuBackend::<f32>::new());
}

#[test]
fn overlap_stops_where_one_step_at_a_time_stops_on_gpu() {
    let gpu = gpu_or_skip!();
    overlap_stops_where_one_step_at_a_time_stops(gpu);
}

#[test]
fn steps_in_flight_keep_the_trainer_busy() {
    let cfg = config(add(), model(Cell::Gru, 1, 0.0), Optimizer::adam(0.01));
    let mut t = Trainer::new(CpuBackend::<f32>::new(), cfg).unwrap();
    t.begin_step().unwrap();
    for err in [
        t.train_step().unwrap_err(),
        t.evaluate().unwrap_err(),
        t.read_params().unwrap_err(),
    ] {
        assert!(err.to_string().contains("in flight"), "{err}");
    }
    assert_eq!(t.finish_step().unwrap().map(|r| r.step), Some(0));
    assert!(t.evaluate().is_ok());
}

/// The `train` job (which records each step while the one before runs,
/// waiting only at evaluations and checkpoints) against one step at a
/// time with the same evaluations: the same history, evaluations and
/// parameters, bit for bit.
#[cfg(feature = "cli")]
fn the_train_job_is_bitwise_one_step_at_a_time<B: Backend>(
    choice: rnn_wgpu::backend::BackendChoice,
    reference: B,
    tag: &str,
) {
    use rnn_wgpu::train::run::{Existing, PlotPath, RunOptions, run};
    let s = Scratch::new(tag);
    let ck = s.path("run.safetensors");
    let mut cfg = config(add(), model(Cell::Lstm, 1, 0.1), Optimizer::adam(0.01));
    cfg.steps = 11;
    let opts = RunOptions {
        config: cfg.clone(),
        backend: choice,
        checkpoint: Some(ck.clone()),
        existing: Existing::Refuse,
        save_every: 4,
        resume: false,
        plot: PlotPath::Off,
        eval_every: Some(3),
        time_limit: None,
        extend_to: None,
        progress: false,
        stop: None,
        comm: None,
        local_rank: None,
        overlap: true,
    };
    run(&opts, &mut |_| {}).unwrap();
    let done = Trainer::load(reference.clone(), &ck).unwrap();
    let mut one = Trainer::new(reference, cfg).unwrap();
    for step in 1..=11 {
        one.train_step().unwrap();
        if step % 3 == 0 && step < 11 {
            one.evaluate().unwrap();
        }
    }
    one.evaluate().unwrap();
    assert_eq!(done.step(), 11);
    // The checkpoint keeps them as JSON: compare the reference's the same way.
    fn through_json<T: serde::Serialize + serde::de::DeserializeOwned>(v: &[T]) -> Vec<T> {
        serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
    }
    assert_eq!(done.history(), through_json(one.history()));
    assert_eq!(done.evals(), through_json(one.evals()));
    assert_eq!(
        bits(&done.read_params().unwrap()),
        bits(&one.read_params().unwrap())
    );
}

#[cfg(feature = "cli")]
#[test]
fn the_train_job_is_bitwise_one_step_at_a_time_on_cpu() {
    the_train_job_is_bitwise_one_step_at_a_time(
        rnn_wgpu::backend::BackendChoice::Cpu,
        CpuBackend::<f32>::new(),
        "train-job-cpu",
    );
}

#[cfg(feature = "cli")]
#[test]
fn the_train_job_is_bitwise_one_step_at_a_time_on_gpu() {
    if common::gpu_ctx().is_none() {
        return;
    }
    let gpu = rnn_wgpu::backend::GpuBackend::from_env().unwrap();
    the_train_job_is_bitwise_one_step_at_a_time(
        rnn_wgpu::backend::BackendChoice::Gpu,
        gpu,
        "train-job-gpu",
    );
}

/// An evaluation reads back the loss summary and one class per position,
/// not the logits, and reports what the logits give on the host.
fn evaluation_matches_the_logits<B: Backend>(b: B, task: TaskSpec) {
    let cfg = config(task, model(Cell::Gru, 1, 0.0), Optimizer::adam(0.01));
    let mut t = Trainer::new(b.clone(), cfg).unwrap();
    losses(&mut t, 3);
    let e = t.evaluate().unwrap();
    // The same forward on the host's side: logits, then argmax there.
    let batch = t
        .task()
        .eval_batch(t.config().seed, t.config().eval_problems)
        .unwrap();
    let mut m = SeqModel::new(b.clone(), t.config().model, &t.read_params().unwrap()).unwrap();
    let tokens = b.ints(&[batch.steps, batch.batch], &batch.inputs).unwrap();
    let logits = b.read(&m.forward(&tokens, None).unwrap().logits).unwrap();
    let v = t.config().model.vocab;
    if t.task().has_answers() {
        let want = rnn_wgpu::train::exact_match(&batch, &logits, v);
        assert_eq!(e.exact_match.map(f64::to_bits), Some(want.to_bits()));
    } else {
        assert_eq!(e.exact_match, None);
    }
    if t.task().has_closing_tags() {
        let want = rnn_wgpu::train::positions_right(&batch, &batch.closing, &logits, v);
        assert_eq!(e.closing_accuracy.map(f64::to_bits), Some(want.to_bits()));
    }
}

#[test]
fn evaluation_matches_the_logits_on_cpu_and_gpu() {
    let xml = TaskSpec::Xml {
        depth: 2,
        length: 20,
    };
    for task in [
        add(),
        TaskSpec::Copy {
            length: 4,
            symbols: 4,
        },
        xml,
    ] {
        evaluation_matches_the_logits(CpuBackend::<f32>::new(), task.clone());
        if let Some(gpu) = common::gpu() {
            evaluation_matches_the_logits(gpu, task);
        }
    }
}

#[test]
fn an_evaluation_reads_back_one_class_per_position() {
    let Some((ctx, gpu)) = common::own_gpu(|_| {}) else {
        return;
    };
    let cfg = config(add(), model(Cell::Lstm, 1, 0.0), Optimizer::adam(0.01));
    let mut t = Trainer::new(gpu, cfg).unwrap();
    t.evaluate().unwrap();
    let before = ctx.counters();
    t.evaluate().unwrap();
    let read = ctx.counters().since(&before);
    let batch = t
        .task()
        .eval_batch(t.config().seed, t.config().eval_problems)
        .unwrap();
    let rows = (batch.steps * batch.batch) as u64;
    assert_eq!(read.readbacks, 1);
    // The summary [mean, count, sum, invalid, correct] and [T·B] classes.
    assert_eq!(read.read_bytes, 4 * (5 + rows), "{read:?}");
}
