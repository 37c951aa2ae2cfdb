//! Values, not aliases: what a layer returns keeps its value whatever the
//! layer does next; a backward differentiates the forward whose saved
//! activations it is given; reused memory never leaks into results; a
//! training loop allocates nothing once warm; streaming one step at a time
//! computes what the whole sequence does. On the CPU and the GPU.

mod common;

use rnn_wgpu::Precision;
use rnn_wgpu::backend::{Backend, CpuBackend};
use rnn_wgpu::nn::model::{Init, InputEncoding, ModelConfig, SeqModel, Train};
use rnn_wgpu::nn::rnn::LayerDropout;
use rnn_wgpu::nn::{Rnn, RnnConfig, State};
use rnn_wgpu::ops::cell::{Cell, Nonlinearity};
use rnn_wgpu::ops::optim::Optimizer;
use rnn_wgpu::parity::{Tolerance, compare, uniform, uniform_i32};
use rnn_wgpu::train::schedule::Schedule;
use rnn_wgpu::train::tasks::TaskSpec;
use rnn_wgpu::train::{Bptt, NonFinite, TrainConfig, Trainer};

fn bits<B: Backend>(b: &B, t: &B::Tensor) -> Vec<u64> {
    b.read_f64(t).unwrap().iter().map(|v| v.to_bits()).collect()
}

fn tensor<B: Backend>(b: &B, shape: &[usize], seed: u64) -> B::Tensor {
    let n = shape.iter().product();
    b.tensor_f64(shape, &uniform(seed, n, -1.0, 1.0)).unwrap()
}

fn check(name: &str, expected: &[f64], actual: &[f64]) {
    if let Err(m) = compare(name, expected, actual, Tolerance::new(1e-5, 1e-4)) {
        panic!("{m}");
    }
}

/// Every cell, deep and bidirectional where the test allows it.
fn stacks(bidirectional: bool) -> Vec<RnnConfig> {
    Cell::ALL
        .into_iter()
        .map(|c| {
            RnnConfig::new(c, 3, 5)
                .layers(2)
                .bidirectional(bidirectional)
        })
        .collect()
}

fn dropout(step: u64) -> Option<LayerDropout> {
    Some(LayerDropout {
        p: 0.3,
        seed: 9,
        step,
        site: 0,
        rows: None,
    })
}

fn outputs_stay_as_returned<B: Backend>(b: B) {
    let (t, n) = (6, 3);
    for cfg in stacks(true) {
        let mut rnn = Rnn::new(b.clone(), cfg, 4).unwrap();
        let (x1, x2) = (tensor(&b, &[t, n, 3], 1), tensor(&b, &[t, n, 3], 2));
        let first = rnn.forward(&x1, None, None, None).unwrap();
        let kept = [bits(&b, &first.output), bits(&b, &first.hn)];
        // Forwards of the same shape, inference and training, then a backward.
        let other = rnn.forward(&x2, None, None, None).unwrap();
        assert_ne!(bits(&b, &other.output), kept[0], "{cfg:?}: inputs differ");
        let (trained, saved) = rnn.forward_train(&x2, None, None, None, None).unwrap();
        let grads = rnn.zeros_like_params().unwrap();
        let dy = tensor(&b, &[t, n, cfg.output_size()], 3);
        let g1 = rnn.backward(&saved, Some(&dy), None, None, &grads).unwrap();
        let g1_bits = bits(&b, g1.input.as_ref().unwrap());
        let dy2 = tensor(&b, &[t, n, cfg.output_size()], 4);
        let g2 = rnn
            .backward(&saved, Some(&dy2), None, None, &grads)
            .unwrap();
        assert_eq!(
            [bits(&b, &first.output), bits(&b, &first.hn)],
            kept,
            "{cfg:?}: a held output changed"
        );
        assert_eq!(bits(&b, &other.output), bits(&b, &trained.output));
        assert_eq!(
            bits(&b, g1.input.as_ref().unwrap()),
            g1_bits,
            "{cfg:?}: held input gradients changed"
        );
        assert_ne!(bits(&b, g2.input.as_ref().unwrap()), g1_bits);
    }
}

fn backward_differentiates_its_own_forward<B: Backend>(b: B) {
    let (t, n) = (5, 2);
    for cfg in stacks(true) {
        let run = |interleave: bool| {
            let mut rnn = Rnn::new(b.clone(), cfg, 7).unwrap();
            let x = tensor(&b, &[t, n, 3], 11);
            let (_, saved) = rnn.forward_train(&x, None, None, None, dropout(1)).unwrap();
            if interleave {
                // Unrelated work of the same shape between forward and backward.
                rnn.forward(&tensor(&b, &[t, n, 3], 12), None, None, None)
                    .unwrap();
                let (_, other) = rnn
                    .forward_train(&tensor(&b, &[t, n, 3], 13), None, None, None, dropout(2))
                    .unwrap();
                drop(other);
            }
            let grads = rnn.zeros_like_params().unwrap();
            let dy = tensor(&b, &[t, n, cfg.output_size()], 14);
            let g = rnn.backward(&saved, Some(&dy), None, None, &grads).unwrap();
            [bits(&b, &grads), bits(&b, g.input.as_ref().unwrap())]
        };
        assert_eq!(run(true), run(false), "{cfg:?}");
    }
}

/// With reused buffers poisoned (NaN), a second identical pass gives the
/// first pass's bits: no kernel reads memory it did not write, in f32 and
/// in 16 bits (where the GPU packs the saved gates).
fn reuse_leaks_nothing<B: Backend>(b: B) {
    let (t, n) = (4, 3);
    let lengths = [4, 1, 3];
    for (cfg, p) in stacks(true)
        .into_iter()
        .flat_map(|cfg| [(cfg, Precision::F32), (cfg, Precision::F16)])
    {
        let mut rnn = Rnn::new(b.clone(), cfg, 8).unwrap();
        rnn.set_precision(p).unwrap();
        rnn.set_poison_reused(true);
        let x = tensor(&b, &[t, n, 3], 21);
        let state = [cfg.num_layers * cfg.directions(), n, cfg.hidden_size];
        let h0 = tensor(&b, &state, 22);
        let c0 = cfg.cell.has_cell_state().then(|| tensor(&b, &state, 23));
        let dy = tensor(&b, &[t, n, cfg.output_size()], 24);
        let dhn = tensor(&b, &state, 25);
        let mut pass = || {
            let inferred = rnn
                .forward(&x, Some(&h0), c0.as_ref(), Some(&lengths))
                .unwrap();
            let infer = [bits(&b, &inferred.output), bits(&b, &inferred.hn)];
            drop(inferred);
            let (out, saved) = rnn
                .forward_train(&x, Some(&h0), c0.as_ref(), Some(&lengths), dropout(3))
                .unwrap();
            let grads = rnn.zeros_like_params().unwrap();
            let g = rnn
                .backward(&saved, Some(&dy), Some(&dhn), None, &grads)
                .unwrap();
            let mut all = vec![bits(&b, &out.output), bits(&b, &out.hn), bits(&b, &grads)];
            all.extend([bits(&b, &g.h0), bits(&b, g.input.as_ref().unwrap())]);
            all.extend(g.c0.as_ref().map(|c| bits(&b, c)));
            all.extend(infer);
            all
        };
        let first = pass();
        let second = pass();
        assert_eq!(first, second, "{cfg:?} {p}");
        assert!(
            first
                .iter()
                .flatten()
                .all(|v| f64::from_bits(*v).is_finite()),
            "{cfg:?} {p}: a NaN leaked"
        );
    }
}

fn model_config(cell: Cell, vocab: usize) -> ModelConfig {
    ModelConfig {
        vocab,
        input: InputEncoding::Embedding(4),
        cell,
        hidden: 6,
        layers: 2,
        dropout: 0.25,
        forget_bias: 1.0,
        init: Init::Uniform,
        variant: Default::default(),
        skip: Default::default(),
    }
}

fn model_chunks_leak_nothing<B: Backend>(b: B) {
    let (t, n, v) = (5, 3, 7);
    for cell in [Cell::Lstm, Cell::Gru] {
        let cfg = model_config(cell, v);
        let mut m = SeqModel::new(b.clone(), cfg, &cfg.init_params(2).unwrap()).unwrap();
        m.set_poison_reused(true);
        let tokens = b
            .ints(&[t, n], &uniform_i32(31, t * n, 0, v as i32))
            .unwrap();
        let targets = b
            .ints(&[t, n], &uniform_i32(32, t * n, 0, v as i32))
            .unwrap();
        let stats = b.zeros(&[8]).unwrap();
        let train = Some(Train::new(1, 2));
        let mut pass = || {
            m.zero_grads().unwrap();
            let (out, saved) = m.chunk(&tokens, &targets, None, train, &stats, 0).unwrap();
            let later = m.state_after(&saved, 2).unwrap();
            let evaluated = m.evaluate(&tokens, &targets, &stats, 0).unwrap();
            vec![
                bits(&b, &out.logits),
                bits(&b, &out.state.h),
                bits(&b, m.grads()),
                bits(&b, &later.h),
                bits(&b, &evaluated.logits),
                bits(&b, &stats),
            ]
        };
        let first = pass();
        assert_eq!(first, pass(), "{cell:?}");
    }
}

/// Once warm, a training step allocates no tensor: not with truncated BPTT
/// (a full and a partial window), dropout, two layers, nor after evaluations.
fn training_allocates_nothing_once_warm<B: Backend>(b: B) {
    let cfg = TrainConfig {
        task: TaskSpec::add(2),
        model: model_config(Cell::Lstm, 0),
        batch: 4,
        steps: 100,
        bptt: Bptt::Truncated { k1: 4, k2: 6 },
        optimizer: Optimizer::adam(0.01),
        schedule: Schedule::Constant,
        clip: Some(1.0),
        seed: 5,
        non_finite: NonFinite::Error,
        eval_problems: 20,
        precision: Default::default(),
    };
    let mut trainer = Trainer::new(b.clone(), cfg).unwrap();
    for _ in 0..2 {
        trainer.train_step().unwrap();
    }
    trainer.evaluate().unwrap();
    let before = b.allocations();
    for _ in 0..2 {
        for _ in 0..2 {
            trainer.train_step().unwrap();
        }
        trainer.evaluate().unwrap();
    }
    assert_eq!(
        b.allocations(),
        before,
        "allocations in warm training steps"
    );
}

/// A fresh one-layer LSTM's inference forward allocates its results (output,
/// hn, cn), the input projection and two state slots each of h and c: no
/// gates, no gradient buffer. A training forward keeps every state slot and
/// the gates instead of two slots.
fn inference_allocates_no_backward_buffers<B: Backend>(b: B) {
    let (t, n, h) = (20, 4, 8);
    let cfg = RnnConfig::new(Cell::Lstm, 3, h);
    let x = tensor(&b, &[t, n, 3], 61);
    let elements = |slots: usize, gates: usize| {
        let states = 2 * n * h; // hn, cn
        states + t * n * h + t * n * 4 * h + 2 * slots * n * h + gates
    };
    let mut rnn = Rnn::new(b.clone(), cfg, 1).unwrap();
    let before = b.allocated_bytes();
    rnn.forward(&x, None, None, None).unwrap();
    assert_eq!(b.allocated_bytes() - before, 4 * elements(2, 0) as u64);
    let mut rnn = Rnn::new(b.clone(), cfg, 1).unwrap();
    let before = b.allocated_bytes();
    let kept = rnn.forward_train(&x, None, None, None, None).unwrap();
    assert_eq!(
        b.allocated_bytes() - before,
        4 * elements(t + 1, t * n * 4 * h) as u64
    );
    drop(kept);
}

/// Each generic check as a test on the CPU path (f32), `cpu::name`, and on
/// the GPU, `gpu::name`: the shared context, or for the checks listed after
/// `own:` (they count allocations) a context of their own.
macro_rules! on_cpu_and_gpu {
    (shared: [$($check:ident),* $(,)?], own: [$($own:ident),* $(,)?]) => {
        mod cpu {
            $(
                #[test]
                fn $check() {
                    super::$check(rnn_wgpu::backend::CpuBackend::<f32>::new());
                }
            )*
            $(
                #[test]
                fn $own() {
                    super::$own(rnn_wgpu::backend::CpuBackend::<f32>::new());
                }
            )*
        }
        mod gpu {
            use crate::common;
            $(
                #[test]
                fn $check() {
                    super::$check(crate::gpu_or_skip!());
                }
            )*
            $(
                #[test]
                fn $own() {
                    if let Some((_, gpu)) = common::own_gpu(|_| {}) {
                        super::$own(gpu);
                    }
                }
            )*
        }
    };
}

on_cpu_and_gpu!(
    shared: [
        outputs_stay_as_returned,
        backward_differentiates_its_own_forward,
        reuse_leaks_nothing,
        model_chunks_leak_nothing,
        inference_forward_is_the_training_forward,
        streaming_matches_the_whole_sequence,
    ],
    own: [
        training_allocates_nothing_once_warm,
        inference_allocates_no_backward_buffers,
    ]
);

/// The inference forward (two state slots, no saved gates) computes the same
/// bits as the training forward.
fn inference_forward_is_the_training_forward<B: Backend>(b: B) {
    let (t, n) = (5, 3);
    for cfg in stacks(true) {
        let mut rnn = Rnn::new(b.clone(), cfg, 3).unwrap();
        let x = tensor(&b, &[t, n, 3], 41);
        let lengths = [5, 2, 4];
        let inferred = rnn.forward(&x, None, None, Some(&lengths)).unwrap();
        let (trained, _) = rnn
            .forward_train(&x, None, None, Some(&lengths), None)
            .unwrap();
        assert_eq!(bits(&b, &inferred.output), bits(&b, &trained.output));
        assert_eq!(bits(&b, &inferred.hn), bits(&b, &trained.hn), "{cfg:?}");
        if let (Some(a), Some(c)) = (&inferred.cn, &trained.cn) {
            assert_eq!(bits(&b, a), bits(&b, c), "{cfg:?}");
        }
    }
}

/// Feeding a sequence one step at a time gives the outputs and final state
/// of the whole-sequence forward; each step leaves the state it started from
/// as it was.
fn streaming_matches_the_whole_sequence<B: Backend>(b: B) {
    let (t, n) = (6, 2);
    for cfg in stacks(false) {
        let mut rnn = Rnn::new(b.clone(), cfg, 6).unwrap();
        let xs = uniform(51, t * n * 3, -1.0, 1.0);
        let x = b.tensor_f64(&[t, n, 3], &xs).unwrap();
        let whole = rnn.forward(&x, None, None, None).unwrap();
        let expected = b.read_f64(&whole.output).unwrap();
        let mut state: Option<State<B>> = None;
        for step in 0..t {
            let row = b
                .tensor_f64(&[n, 3], &xs[step * n * 3..(step + 1) * n * 3])
                .unwrap();
            let before = state.as_ref().map(|s| bits(&b, &s.h));
            let (y, next) = rnn.step(&row, state.as_ref()).unwrap();
            if let (Some(s), Some(before)) = (&state, before) {
                assert_eq!(bits(&b, &s.h), before, "a step changed its input state");
            }
            let h = cfg.hidden_size;
            check(
                &format!("{:?} step {step}", cfg.cell),
                &expected[step * n * h..(step + 1) * n * h],
                &b.read_f64(&y).unwrap(),
            );
            state = Some(next);
        }
        let last = state.unwrap();
        check(
            &format!("{:?} final h", cfg.cell),
            &b.read_f64(&whole.hn).unwrap(),
            &b.read_f64(&last.h).unwrap(),
        );
        if let (Some(c), Some(cn)) = (&last.c, &whole.cn) {
            check("final c", &b.read_f64(cn).unwrap(), &b.read_f64(c).unwrap());
        }
    }
    // The model streams tokens the same way.
    let v = 7;
    let cfg = model_config(Cell::Gru, v);
    let mut m = SeqModel::new(b.clone(), cfg, &cfg.init_params(4).unwrap()).unwrap();
    let ids = uniform_i32(52, t * n, 0, v as i32);
    let whole = m.forward(&b.ints(&[t, n], &ids).unwrap(), None).unwrap();
    let expected = b.read_f64(&whole.logits).unwrap();
    let mut state = m.zero_state(n).unwrap();
    for step in 0..t {
        let tokens = b.ints(&[n], &ids[step * n..(step + 1) * n]).unwrap();
        let out = m.step(&tokens, Some(&state)).unwrap();
        check(
            &format!("model step {step}"),
            &expected[step * n * v..(step + 1) * n * v],
            &b.read_f64(&out.logits).unwrap(),
        );
        state = out.state;
    }
}

#[test]
fn streaming_refuses_what_it_cannot_do() {
    let b = CpuBackend::<f32>::new();
    let bi = RnnConfig::new(Cell::Lstm, 3, 4).bidirectional(true);
    let mut rnn = Rnn::new(b.clone(), bi, 1).unwrap();
    let err = rnn.step(&b.zeros(&[2, 3]).unwrap(), None).unwrap_err();
    assert!(err.to_string().contains("unidirectional"), "{err}");
    let cfg = RnnConfig::new(Cell::Rnn(Nonlinearity::Tanh), 3, 4);
    let mut rnn = Rnn::new(b.clone(), cfg, 1).unwrap();
    let err = rnn.step(&b.zeros(&[2, 4]).unwrap(), None).unwrap_err();
    assert!(err.to_string().contains("[B, I]"), "{err}");
    let wrong = State {
        h: b.zeros(&[1, 3, 4]).unwrap(),
        c: None,
    };
    let err = rnn
        .step(&b.zeros(&[2, 3]).unwrap(), Some(&wrong))
        .unwrap_err();
    assert!(err.to_string().contains("h0"), "{err}");
}
