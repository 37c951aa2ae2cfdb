//! 16-bit storage (f16, bf16) with f32 arithmetic: the CPU path stores
//! every value a kernel writes into a 16-bit tensor rounded to that
//! precision, the schedules agree bitwise, training keeps f32 master
//! weights and (f16) scales its loss, checkpoints stay f32, and a backend
//! without 16-bit kernels says so. The tolerances against PyTorch are in
//! tests/pytorch.rs.

mod common;

use rnn_wgpu::Precision;
use rnn_wgpu::backend::{Backend, CpuBackend, GpuBackend};
use rnn_wgpu::gpu::pair_word;
use rnn_wgpu::nn::case::{RnnCase, run_case_at};
use rnn_wgpu::nn::model::{Init, InputEncoding, ModelConfig};
use rnn_wgpu::nn::{RnnConfig, StepOrder};
use rnn_wgpu::ops::activation::{Activation, Span};
use rnn_wgpu::ops::cell::Cell;
use rnn_wgpu::ops::matmul::Gemm;
use rnn_wgpu::ops::optim::Optimizer;
use rnn_wgpu::parity::uniform;
use rnn_wgpu::train::schedule::Schedule;
use rnn_wgpu::train::tasks::TaskSpec;
use rnn_wgpu::train::{Bptt, LossScale, NonFinite, TrainConfig, Trainer};

const HALVES: [Precision; 2] = [Precision::F16, Precision::Bf16];

fn on_grid(p: Precision, v: &[f32]) -> bool {
    v.iter().all(|&x| p.round_f32(x).to_bits() == x.to_bits())
}

#[test]
fn kernels_store_into_a_16bit_tensor_on_its_grid() {
    let b = CpuBackend::<f32>::new();
    let a = b.tensor_f64(&[3, 4], &uniform(1, 12, -1.0, 1.0)).unwrap();
    let w = b.tensor_f64(&[4, 5], &uniform(2, 20, -1.0, 1.0)).unwrap();
    let plain = b.zeros(&[3, 5]).unwrap();
    b.gemm(&Gemm::nn(3, 5, 4), &a, &w, None, &plain).unwrap();
    let exact = b.read(&plain).unwrap();
    for p in HALVES {
        assert!(!on_grid(p, &exact), "{p}: an f32 tensor is not rounded");
        let c = b.zeros_stored(&[3, 5], p).unwrap();
        assert_eq!(b.store_of(&c), p);
        // A view keeps the storage's precision.
        assert_eq!(b.store_of(&b.reshape(&c, &[15]).unwrap()), p);
        let rounded: Vec<f32> = exact.iter().map(|&x| p.round_f32(x)).collect();
        b.gemm(&Gemm::nn(3, 5, 4), &a, &w, None, &c).unwrap();
        assert_eq!(b.read(&c).unwrap(), rounded, "{p}: matmul");
        b.fill(&c, 0, 15, 0.1).unwrap();
        assert_eq!(b.read(&c).unwrap(), vec![p.round_f32(0.1); 15], "{p}: fill");
        b.copy(&plain, 0, &c, 0, 15).unwrap();
        assert_eq!(b.read(&c).unwrap(), rounded, "{p}: copy");
        b.write(&c, &exact).unwrap();
        assert_eq!(b.read(&c).unwrap(), rounded, "{p}: write");
        b.activation(Activation::Tanh, Span::all(15), &plain, &c)
            .unwrap();
        let t = b.read(&c).unwrap();
        assert!(on_grid(p, &t), "{p}: activation");
        for (y, x) in t.iter().zip(&exact) {
            assert!(
                (y - x.tanh()).abs() <= 4e-3 * x.tanh().abs().max(1e-3),
                "{p}: tanh"
            );
        }
        assert_eq!(b.stored_bytes(&c), 30);
    }
    assert_eq!(b.stored_bytes(&plain), 60);
}

#[test]
fn schedules_agree_bitwise_in_16_bits_and_differ_from_f32() {
    let b = CpuBackend::<f32>::new();
    for cell in [Cell::Lstm, Cell::Gru] {
        let case = RnnCase::new(RnnConfig::new(cell, 4, 6).layers(3), 7, 3, 5);
        let data = case.data();
        let f32_run = run_case_at(
            &b,
            &case.config,
            &data,
            true,
            StepOrder::Layers,
            Precision::F32,
        )
        .unwrap();
        for p in HALVES {
            let run = |order| run_case_at(&b, &case.config, &data, true, order, p).unwrap();
            let (layers, wave) = (run(StepOrder::Layers), run(StepOrder::Wavefront));
            assert_eq!(layers.values(), wave.values(), "{cell:?} {p}: values");
            assert_eq!(
                layers.gradients(),
                wave.gradients(),
                "{cell:?} {p}: gradients"
            );
            assert_ne!(
                layers.values(),
                f32_run.values(),
                "{cell:?} {p}: nothing rounded"
            );
            let out: Vec<f32> = layers.output.iter().map(|&x| x as f32).collect();
            assert!(
                on_grid(p, &out),
                "{cell:?} {p}: the output is stored in 16 bits"
            );
        }
    }
}

fn model() -> ModelConfig {
    ModelConfig {
        vocab: 0,
        input: InputEncoding::Embedding(8),
        cell: Cell::Lstm,
        hidden: 24,
        layers: 1,
        dropout: 0.0,
        forget_bias: 1.0,
        init: Init::Uniform,
        variant: Default::default(),
        skip: Default::default(),
    }
}

fn config(precision: Precision) -> TrainConfig {
    TrainConfig {
        batch: 16,
        steps: 60,
        bptt: Bptt::Full,
        optimizer: Optimizer::adam(0.01),
        schedule: Schedule::Constant,
        clip: Some(1.0),
        seed: 9,
        non_finite: NonFinite::Error,
        eval_problems: 50,
        precision,
        ..TrainConfig::new(TaskSpec::add(2), model())
    }
}

#[test]
fn training_keeps_f32_master_weights_and_follows_f32() {
    let mut f32_run = Trainer::new(CpuBackend::<f32>::new(), config(Precision::F32)).unwrap();
    let base: Vec<f64> = (0..40)
        .map(|_| f32_run.train_step().unwrap().loss)
        .collect();
    for p in HALVES {
        let mut t = Trainer::new(CpuBackend::<f32>::new(), config(p)).unwrap();
        let mut losses = Vec::new();
        for _ in 0..40 {
            let r = t.train_step().unwrap();
            assert_eq!(r.loss_scale.is_some(), p == Precision::F16, "{p}");
            losses.push(r.loss);
        }
        // Learning, and close to the f32 run.
        let (first, last) = (losses[0], losses[39]);
        assert!(last < 0.8 * first, "{p}: loss {first} -> {last}");
        assert!(
            (last - base[39]).abs() < 0.1 * base[39],
            "{p}: loss {last} after 40 steps, f32 {}",
            base[39]
        );
        let b = t.model().backend();
        let master = b.read(t.model().params()).unwrap();
        let copy = b.read(t.model().weights()).unwrap();
        assert!(!on_grid(p, &master), "{p}: the master weights are f32");
        assert!(on_grid(p, &copy), "{p}: the passes read 16-bit weights");
        let rounded: Vec<f32> = master.iter().map(|&x| p.round_f32(x)).collect();
        assert_eq!(
            copy, rounded,
            "{p}: the copy is the master, rounded, after the update"
        );
    }
}

#[test]
fn f16_overflow_skips_the_update_and_halves_the_scale() {
    let mut t = Trainer::new(CpuBackend::<f32>::new(), config(Precision::F16)).unwrap();
    t.set_loss_scale(LossScale {
        scale: rnn_wgpu::train::scale::MAX_SCALE,
        growth_interval: 3,
        ..LossScale::default()
    })
    .unwrap();
    let mut overflowed = 0;
    for _ in 0..30 {
        let before = t.read_params().unwrap();
        let scale = t.loss_scale().unwrap().scale;
        let r = t.train_step().unwrap();
        assert!(r.loss.is_finite());
        assert_eq!(r.loss_scale, Some(scale));
        let after = t.read_params().unwrap();
        if r.skipped > 0 {
            overflowed += 1;
            assert_eq!(before, after, "an overflowed step changes nothing");
            assert_eq!(t.loss_scale().unwrap().scale, scale / 2.0);
        } else {
            assert_ne!(before, after);
            assert!(
                r.grad_norm.is_finite() && r.grad_norm < 1e3,
                "unscaled norm {}",
                r.grad_norm
            );
        }
    }
    let s = t.loss_scale().unwrap();
    assert!(overflowed > 0, "2^24 overflows f16 gradients");
    assert_eq!(s.overflows, overflowed);
    // Three clean steps double it again: it settles below the start.
    assert!(s.scale < rnn_wgpu::train::scale::MAX_SCALE);
    assert_eq!(t.skipped(), overflowed);
    // Only f16 has a loss scale to set.
    let mut bf = Trainer::new(CpuBackend::<f32>::new(), config(Precision::Bf16)).unwrap();
    let e = bf
        .set_loss_scale(LossScale::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("only f16"), "{e}");
    let e = t
        .set_loss_scale(LossScale {
            scale: 3.0,
            ..LossScale::default()
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("power of two"), "{e}");
}

/// Per step (step, loss bits, skipped windows, scale), the scale after each
/// step, and the parameters' bits at the end.
type F16Run = (Vec<(u64, u64, usize, Option<f64>)>, Vec<f64>, Vec<u32>);

/// `steps` f16 steps, each begun while up to `depth - 1` before it are in
/// flight (a dropped step is begun again): the reports, the scales after
/// each step and the parameters.
fn f16_run<B: Backend>(b: B, non_finite: NonFinite, steps: u64, depth: usize) -> F16Run {
    let mut t = Trainer::new(
        b,
        TrainConfig {
            non_finite,
            ..config(Precision::F16)
        },
    )
    .unwrap();
    t.set_loss_scale(LossScale {
        scale: rnn_wgpu::train::scale::MAX_SCALE,
        growth_interval: 3,
        ..LossScale::default()
    })
    .unwrap();
    let mut reports = Vec::new();
    let mut scales = Vec::new();
    while t.step() < steps {
        while t.step() + (t.steps_in_flight() as u64) < steps && t.steps_in_flight() < depth {
            t.begin_step().unwrap();
        }
        let r = t.finish_step().unwrap().expect("a step in flight");
        reports.push((r.step, r.loss.to_bits(), r.skipped, r.loss_scale));
        scales.push(t.loss_scale().unwrap().scale);
    }
    assert_eq!(t.finish_step().unwrap(), None);
    let params = t.read_params().unwrap();
    (
        reports,
        scales,
        params.iter().map(|&x| (x as f32).to_bits()).collect(),
    )
}

fn f16_overlap_is_one_step_at_a_time<B: Backend>(b: B, steps: u64) {
    for non_finite in [NonFinite::Error, NonFinite::Skip] {
        let one = f16_run(b.clone(), non_finite, steps, 1);
        let skips = one.0.iter().filter(|r| r.2 > 0).count();
        let grows = one.1.windows(2).filter(|w| w[1] > w[0]).count();
        assert!(
            skips >= 2 && grows >= 1,
            "{non_finite:?}: {skips} overflows, {grows} growths"
        );
        for depth in [2, 3] {
            let got = f16_run(b.clone(), non_finite, steps, depth);
            assert_eq!(got.0, one.0, "{non_finite:?}, {depth} in flight: reports");
            assert_eq!(got.1, one.1, "{non_finite:?}, {depth} in flight: scales");
            assert!(
                got.2 == one.2,
                "{non_finite:?}, {depth} in flight: parameters"
            );
        }
    }
}

#[test]
fn f16_steps_overlap_through_overflows_as_one_at_a_time() {
    f16_overlap_is_one_step_at_a_time(CpuBackend::<f32>::new(), 24);
    if let Some(gpu) = common::gpu() {
        f16_overlap_is_one_step_at_a_time(gpu, 12);
    }
}

#[test]
fn checkpoints_stay_f32_and_resume_the_loss_scale() {
    let s = common::Scratch::new("precision-checkpoint");
    let path = s.path("f16.safetensors");
    let mut t = Trainer::new(CpuBackend::<f32>::new(), config(Precision::F16)).unwrap();
    t.set_loss_scale(LossScale {
        scale: 1024.0,
        ..LossScale::default()
    })
    .unwrap();
    for _ in 0..5 {
        t.train_step().unwrap();
    }
    t.save(&path).unwrap();
    let mut back = Trainer::load(CpuBackend::<f32>::new(), &path).unwrap();
    assert_eq!(back.config().precision, Precision::F16);
    assert_eq!(back.loss_scale(), t.loss_scale());
    assert_eq!(back.read_params().unwrap(), t.read_params().unwrap());
    // The same trajectory on.
    for _ in 0..3 {
        assert_eq!(back.train_step().unwrap(), t.train_step().unwrap());
    }
    // The saved weights are the f32 master copy, and a model loaded at
    // another precision reads them rounded.
    let (m, _, cfg) = rnn_wgpu::train::checkpoint::load_model_at(
        CpuBackend::<f32>::new(),
        &path,
        Precision::Bf16,
    )
    .unwrap();
    assert_eq!(cfg.precision, Precision::F16);
    let b = m.backend();
    let master = b.read(m.params()).unwrap();
    assert!(!on_grid(Precision::F16, &master));
    assert!(on_grid(Precision::Bf16, &b.read(m.weights()).unwrap()));
}

/// The GPU's `stored()` (integer rounding in WGSL) gives the host's bits
/// on every value: a sweep of bit patterns and the edges, through the
/// rounding copy into a 16-bit tensor.
#[test]
fn gpu_rounding_is_the_hosts_bit_for_bit() {
    let gpu = gpu_or_skip!();
    let mut vals: Vec<f32> = Vec::new();
    let mut b = 0u32;
    while let Some(next) = b.checked_add(65_537) {
        vals.push(f32::from_bits(b));
        b = next;
    }
    vals.extend([
        65504.0,
        65519.0,
        65520.0,
        65536.0,
        6.1035156e-5,
        6.097555e-5,
        5.9604645e-8,
        2.9802322e-8,
        2.980233e-8,
        8.940697e-8,
        1.0004883,
        1.0014648,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::INFINITY,
        f32::NAN,
    ]);
    let neg: Vec<f32> = vals.iter().map(|v| -v).collect();
    vals.extend(neg);
    // Non-NaN values only: a NaN's payload may change on the way.
    let vals: Vec<f32> = vals.into_iter().filter(|v| !v.is_nan()).collect();
    let n = vals.len();
    let src = gpu.tensor(&[n], &vals).unwrap();
    for p in HALVES {
        let dst = gpu.zeros_stored(&[n], p).unwrap();
        gpu.copy(&src, 0, &dst, 0, n).unwrap();
        let got = gpu.read(&dst).unwrap();
        for (x, g) in vals.iter().zip(&got) {
            assert_eq!(
                g.to_bits(),
                p.round_f32(*x).to_bits(),
                "{p}: {x:e} ({:#x}) -> {g:e}",
                x.to_bits()
            );
        }
    }
}

/// The GPU's packed 16-bit tensors (the passes' copy of the parameters):
/// half the bytes, written by the host and by copies from f32 at any
/// offsets (a word's other half kept), read back as the host rounds.
#[test]
fn gpu_packed_tensors_hold_half_the_bytes_and_copy_at_any_offset() {
    let gpu = gpu_or_skip!();
    let n = 11;
    let base: Vec<f64> = uniform(7, n, -2.0, 2.0);
    let src: Vec<f32> = uniform(8, 9, -70000.0, 70000.0)
        .iter()
        .map(|&x| x as f32)
        .chain([1e-6, -3e-8, 0.1])
        .collect();
    let src_t = gpu.tensor(&[src.len()], &src).unwrap();
    for p in HALVES {
        let t = gpu.tensor_packed(&[n], &base, p).unwrap();
        assert_eq!(gpu.store_of(&t), p);
        assert_eq!(gpu.held_bytes(&t), 2 * n as u64);
        let host: Vec<f32> = base.iter().map(|&x| p.round_f32(x as f32)).collect();
        assert_eq!(gpu.read(&t).unwrap(), host, "{p}: written");
        // Elements 3..8 from src[2..7]: odd start, odd end.
        gpu.copy(&src_t, 2, &t, 3, 5).unwrap();
        let mut want = host.clone();
        for i in 0..5 {
            want[3 + i] = p.round_f32(src[2 + i]);
        }
        let got = gpu.read(&t).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{p}: element {i}: {g:e} vs {w:e}");
        }
        // The whole range, from offset 0 (with ±∞ past f16's range).
        gpu.copy(&src_t, 1, &t, 0, n).unwrap();
        let want: Vec<f32> = src[1..=n].iter().map(|&x| p.round_f32(x)).collect();
        assert_eq!(gpu.read(&t).unwrap(), want, "{p}: whole");
        // Fills of whole words (the pool's NaN poisoning among them); a
        // range that splits a word is refused.
        gpu.fill(&t, 0, n, -0.3).unwrap();
        assert!(
            gpu.read(&t)
                .unwrap()
                .iter()
                .all(|&v| v == p.round_f32(-0.3)),
            "{p}"
        );
        gpu.fill(&t, 2, n - 2, f64::NAN).unwrap();
        let got = gpu.read(&t).unwrap();
        assert!(
            got[..2].iter().all(|&v| v == p.round_f32(-0.3)),
            "{p}: {got:?}"
        );
        assert!(got[2..].iter().all(|v| v.is_nan()), "{p}: {got:?}");
        let err = gpu.fill(&t, 1, 2, 0.0).unwrap_err().to_string();
        assert!(err.contains("splits a word"), "{p}: {err}");
    }
    // A model's weight copy is packed: half the parameters' bytes.
    let cfg = ModelConfig {
        vocab: 12,
        ..model()
    };
    let params = cfg.init_params(1).unwrap();
    let m =
        rnn_wgpu::nn::model::SeqModel::with_precision(gpu.clone(), cfg, &params, Precision::F16)
            .unwrap();
    assert_eq!(2 * gpu.held_bytes(m.weights()), gpu.held_bytes(m.params()));
}

/// Relative Frobenius error between two runs' values and gradients.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    rnn_wgpu::parity::rel_frobenius(a, b)
}

/// The 16-bit path on the GPU against its CPU twin: every cell (and the
/// two-dispatch variants), each recurrent-product kernel forced, the
/// wavefront, packed lengths and initial states; at even H the states
/// packed, and the input rows and output gradient given packed. Both round the same
/// values at the same places; the f32 sums beneath them add in other
/// orders, so a value near a rounding boundary may land one 16-bit step
/// apart: within `doctor::twin_tolerance`, 5e-4 (f16) and 4e-3 (bf16),
/// relative Frobenius.
#[test]
fn gpu_16bit_path_matches_the_cpu_twin() {
    use rnn_wgpu::gpu::StepKernel;
    use rnn_wgpu::ops::cell::{Nonlinearity, Variant};
    let gpu = gpu_or_skip!();
    let cpu = CpuBackend::<f32>::new();
    let lstm = RnnConfig::new(Cell::Lstm, 5, 8);
    let mut cases = vec![
        RnnCase::new(lstm.layers(2).bidirectional(true), 6, 3, 11).with_lengths(vec![6, 3, 1]),
        RnnCase::new(RnnConfig::new(Cell::Gru, 5, 8), 6, 3, 12).with_states(),
        RnnCase::new(
            RnnConfig::new(Cell::Rnn(Nonlinearity::Relu), 5, 8),
            6,
            3,
            13,
        ),
        RnnCase::new(
            RnnConfig::new(Cell::Gru, 5, 8).variant(Variant {
                reset_before: true,
                ..Variant::default()
            }),
            5,
            2,
            14,
        ),
        RnnCase::new(
            lstm.variant(Variant {
                proj_size: 3,
                ..Variant::default()
            }),
            5,
            2,
            15,
        ),
    ];
    // Odd H: the packed gates' words pair gate blocks of one unit, never
    // units or rows (the LSTM's xg and gate gradients too: with
    // peepholes, their gradients read the packed dG's blocks).
    cases
        .push(RnnCase::new(RnnConfig::new(Cell::Lstm, 4, 7), 5, 3, 17).with_lengths(vec![5, 2, 4]));
    cases.push(RnnCase::new(
        RnnConfig::new(Cell::Lstm, 4, 7).variant(Variant {
            peepholes: true,
            ..Variant::default()
        }),
        4,
        3,
        19,
    ));
    cases.push(RnnCase::new(
        RnnConfig::new(Cell::Gru, 4, 7).bidirectional(true),
        5,
        3,
        18,
    ));
    // Even H and P: the states hs and cs packed two units a word (a
    // projection's h through its own dispatch; peepholes' gradients read
    // the packed c), from and into f32 initial and final states.
    cases.push(
        RnnCase::new(
            lstm.variant(Variant {
                proj_size: 4,
                ..Variant::default()
            }),
            5,
            2,
            20,
        )
        .with_states(),
    );
    cases.push(
        RnnCase::new(
            RnnConfig::new(Cell::Lstm, 4, 8).variant(Variant {
                peepholes: true,
                ..Variant::default()
            }),
            4,
            3,
            21,
        )
        .with_lengths(vec![2, 4, 3])
        .with_states(),
    );
    // Packed states across column and row tiles: H = 34 spans two of the
    // tiled kernel's 32-unit tiles and five of the split one's, B = 17 two
    // 16-row tiles (the resident kernel loops over the column tiles).
    for (cell, seed) in [(Cell::Lstm, 22), (Cell::Gru, 23)] {
        cases.push(RnnCase::new(RnnConfig::new(cell, 3, 34), 3, 17, seed).with_states());
    }
    // A unidirectional stack the wavefront runs.
    let wave = RnnCase::new(lstm.layers(3), 6, 2, 16).with_states();
    cases.push(wave.clone());
    for p in HALVES {
        let tol = rnn_wgpu::doctor::twin_tolerance(p);
        let mut worst: f64 = 0.0;
        for case in &cases {
            let data = case.data();
            let want = run_case_at(&cpu, &case.config, &data, true, StepOrder::Layers, p).unwrap();
            for kernel in StepKernel::ALL {
                let g = gpu.clone().with_step_kernel(kernel);
                let got = run_case_at(&g, &case.config, &data, true, StepOrder::Auto, p)
                    .unwrap_or_else(|e| panic!("{} {p} {}: {e}", case.describe(), kernel.name()));
                let (ev, eg) = (
                    rel(&want.values(), &got.values()),
                    rel(&want.gradients(), &got.gradients()),
                );
                assert!(
                    ev <= tol && eg <= tol,
                    "{} {p} [{}]: values {ev:.2e}, gradients {eg:.2e} > {tol:e}",
                    case.describe(),
                    kernel.name()
                );
                worst = worst.max(ev).max(eg);
                let out: Vec<f32> = got.output.iter().map(|&x| x as f32).collect();
                assert!(
                    on_grid(p, &out),
                    "{} {p}: the GPU stores in 16 bits",
                    case.describe()
                );
            }
        }
        let data = wave.data();
        let want = run_case_at(&cpu, &wave.config, &data, true, StepOrder::Wavefront, p).unwrap();
        let got = run_case_at(&gpu, &wave.config, &data, true, StepOrder::Wavefront, p).unwrap();
        let ev = rel(&want.values(), &got.values());
        let eg = rel(&want.gradients(), &got.gradients());
        assert!(ev <= tol && eg <= tol, "wavefront {p}: {ev:.2e}, {eg:.2e}");
        common::say(&format!(
            "gpu {p} against the cpu twin: at most {:.2e}",
            worst.max(ev).max(eg)
        ));
    }
}

/// Training steps in f16 (with loss scaling) and bf16 on the GPU follow the
/// CPU twin's, and the GPU's 16-bit weight copy is its master rounded.
#[test]
fn gpu_16bit_training_follows_the_cpu_twin() {
    let gpu = gpu_or_skip!();
    for p in HALVES {
        let cfg = TrainConfig {
            steps: 10,
            ..config(p)
        };
        let mut c = Trainer::new(CpuBackend::<f32>::new(), cfg.clone()).unwrap();
        let mut g = Trainer::new(gpu.clone(), cfg).unwrap();
        for step in 0..5 {
            let (rc, rg) = (c.train_step().unwrap(), g.train_step().unwrap());
            assert_eq!(rc.loss_scale, rg.loss_scale, "{p} step {step}");
            let d = (rc.loss - rg.loss).abs() / rc.loss;
            assert!(d < 2e-3, "{p} step {step}: loss {} vs {}", rc.loss, rg.loss);
        }
        let (pc, pg) = (c.read_params().unwrap(), g.read_params().unwrap());
        let e = rel(&pc, &pg);
        assert!(e < 1e-3, "{p}: parameters {e:.2e} apart");
        let b = g.model().backend();
        let master = b.read(g.model().params()).unwrap();
        let copy = b.read(g.model().weights()).unwrap();
        let rounded: Vec<f32> = master.iter().map(|&x| p.round_f32(x)).collect();
        assert_eq!(copy, rounded, "{p}: the GPU's weight copy");
    }
}

/// Sampling at 16 bits from an f32 checkpoint: the CPU path, and the GPU's
/// 16-bit path writing the same greedy text.
#[test]
fn sampling_reads_an_f32_checkpoint_at_16_bits() {
    use rnn_wgpu::train::checkpoint::load_model_at;
    use rnn_wgpu::train::sample::{SampleOptions, sample};
    let s = common::Scratch::new("precision-sample");
    let path = s.path("f32.safetensors");
    let mut t = Trainer::new(CpuBackend::<f32>::new(), config(Precision::F32)).unwrap();
    for _ in 0..30 {
        t.train_step().unwrap();
    }
    t.save(&path).unwrap();
    let opts = SampleOptions {
        prompt: "12+34=".into(),
        temperature: 0.0,
        length: 6,
        seed: 1,
    };
    for p in HALVES {
        let (mut m, task, _) = load_model_at(CpuBackend::<f32>::new(), &path, p).unwrap();
        assert_eq!(m.precision(), p);
        let text = sample(&mut m, &task, &opts).unwrap();
        assert!(text.chars().count() <= 6, "{p}: {text:?}");
        if let Some(gpu) = common::gpu() {
            let (mut g, task, _) = load_model_at(gpu, &path, p).unwrap();
            assert_eq!(
                sample(&mut g, &task, &opts).unwrap(),
                text,
                "{p}: GPU and CPU"
            );
        }
    }
}

/// `bench`'s memory of a training step (the shape: an LSTM at
/// I = H = 256, B = 32, T = 50): the 16-bit layer holds at most 0.6× the
/// f32 layer at storage precision, the whole step (with the f32 master copy
/// and Adam's f32 states) at most 0.7×; as held, the CPU keeps 32-bit words.
#[test]
fn bench_counts_the_memory_of_a_16bit_step() {
    use rnn_wgpu::bench::{RnnShape, bench_rnn_at};
    let shape = RnnShape {
        cell: Cell::Lstm,
        input: 256,
        hidden: 256,
        batch: 32,
        seq: 50,
        layers: 1,
        bidirectional: false,
        variant: Default::default(),
        skip: Default::default(),
    };
    let b = CpuBackend::<f32>::new();
    let run = |p| bench_rnn_at(&b, None, "cpu", &shape, 1, StepOrder::Auto, p).unwrap();
    let (f32_run, f16_run) = (run(Precision::F32), run(Precision::F16));
    assert_eq!(f32_run.packed_memory_bytes, f32_run.memory_bytes);
    assert_eq!(f16_run.precision, "f16");
    let layer = f16_run.packed_layer_bytes as f64 / f32_run.layer_bytes as f64;
    let step = f16_run.packed_memory_bytes as f64 / f32_run.memory_bytes as f64;
    assert!(layer <= 0.6, "layer {layer:.3}");
    assert!(step <= 0.7, "step {step:.3}");
    // The CPU holds 16-bit values in f32 words: the same layer bytes.
    assert_eq!(f16_run.layer_bytes, f32_run.layer_bytes);
    // The 16-bit bytes are counted, not estimated: half of every 16-bit
    // tensor, the f32 gradients and states whole.
    let params = shape.config().layout().total as u64;
    assert_eq!(
        f16_run.packed_memory_bytes,
        f16_run.packed_layer_bytes + 12 * params
    );
}

/// On the GPU a 16-bit step holds its weight copy, its saved gates, the
/// input rows and output gradient the bench gives it packed, two values a
/// word; the LSTM also its input projection and gate gradients (one buffer
/// the pool hands to both), and at even H every cell its states hs and cs:
/// the layer's held bytes are the f32 layer's less half of each (LSTM and
/// GRU at odd and even H; the GRU's three-block xg, the output and the
/// activation gradients are still held in 32-bit words).
#[test]
fn gpu_16bit_step_holds_its_gates_packed() {
    use rnn_wgpu::bench::{RnnShape, bench_rnn_at};
    let gpu = gpu_or_skip!();
    for (cell, hidden) in [
        (Cell::Lstm, 7),
        (Cell::Gru, 7),
        (Cell::Lstm, 8),
        (Cell::Gru, 8),
    ] {
        let shape = RnnShape {
            cell,
            input: 6,
            hidden,
            batch: 3,
            seq: 4,
            layers: 1,
            bidirectional: false,
            variant: Default::default(),
            skip: Default::default(),
        };
        let run = |p| bench_rnn_at(&gpu, None, "gpu", &shape, 1, StepOrder::Auto, p).unwrap();
        let (f32_run, f16_run) = (run(Precision::F32), run(Precision::F16));
        let (t, b, h) = (shape.seq, shape.batch, hidden);
        let params = shape.config().layout().total;
        let gates = t * b * 4 * h;
        let lstm = cell == Cell::Lstm;
        let rows = if lstm { gates } else { 0 };
        let io = t * b * (shape.input + h);
        let state_sets = if h % 2 == 0 { 1 + usize::from(lstm) } else { 0 };
        let states = state_sets * (t + 1) * b * h;
        let halved = (params + gates + rows + io + states) as u64;
        assert_eq!(
            f16_run.layer_bytes,
            f32_run.layer_bytes - 2 * halved,
            "{cell:?} H = {h}"
        );
    }
}

/// Packed gates that a step cannot pair (a row of an odd number of gate
/// blocks, or gates a weight gradient reads as a matrix) are refused by the
/// GPU step before anything runs, naming the gates; the LSTM's are taken,
/// and its packed input projection too, but not the GRU's.
/// `logical`'s values in the stored order of a packed tensor pairing blocks
/// of `period` (the order `tensor_packed` writes and `read` returns).
fn to_stored<T: Copy + Default>(logical: &[T], period: usize) -> Vec<T> {
    let mut stored = vec![T::default(); logical.len()];
    for (e, &v) in logical.iter().enumerate() {
        let (w, half) = pair_word(e, period);
        stored[2 * w + half] = v;
    }
    stored
}

/// The logical order of a packed tensor's `stored` values.
fn from_stored<T: Copy>(stored: &[T], period: usize) -> Vec<T> {
    (0..stored.len())
        .map(|e| {
            let (w, half) = pair_word(e, period);
            stored[2 * w + half]
        })
        .collect()
}

/// Matmuls over packed 16-bit operands (the LSTM's input projection into
/// packed, gate-paired xg; its gate gradients read as a paired A): every
/// kernel, split or not, computes bit for bit what it computes on the same
/// values held in 32-bit words, and what cannot pair is refused.
#[test]
fn gpu_matmul_reads_and_stores_paired_16bit_operands() {
    use rnn_wgpu::backend::GpuBackend;
    use rnn_wgpu::ops::matmul::{GemmKernel, SplitK};
    let gpu = gpu_or_skip!();
    // (C's pairing period, A's, columns): odd blocks, blocks across the
    // large kernel's 128-wide tiles, side by side.
    let cases: [(usize, usize, usize); 3] = [(3, 5, 12), (33, 0, 132), (0, 7, 134)];
    let (m, k): (usize, usize) = (37, 19);
    for p in HALVES {
        for (c_pairs, a_pairs, n) in cases {
            let unit = 2 * c_pairs.max(1);
            let (ldc, c_off) = (n + unit, unit);
            let c_len = c_off + (m - 1) * ldc + n + unit;
            let c_len = c_len.div_ceil(unit) * unit;
            let a_unit = 2 * a_pairs.max(1);
            let a_len = (3 + m * k).div_ceil(a_unit) * a_unit;
            let rounded = |seed, len| -> Vec<f64> {
                uniform(seed, len, -1.0, 1.0)
                    .iter()
                    .map(|&x| p.round_f32(x as f32) as f64)
                    .collect()
            };
            let a = rounded(1, a_len);
            let b = uniform(2, n * k, -1.0, 1.0);
            let bias = uniform(3, n + 1, -1.0, 1.0);
            let c0 = rounded(4, c_len);
            for (trans_a, c_packed) in [(false, true), (true, false)] {
                let mut g = Gemm::nt(m, n, k)
                    .offsets(3, 0, c_off)
                    .with_bias(1)
                    .accumulating(true)
                    .strides(if trans_a { m } else { k }, k, ldc)
                    .paired(a_pairs, if c_packed { c_pairs } else { 0 });
                g.trans_a = trans_a;
                for kernel in GemmKernel::FORCED {
                    for split in [SplitK::Into(1), SplitK::Into(3)] {
                        let b_gpu: GpuBackend =
                            gpu.clone().with_gemm_kernel(kernel).with_split_k(split);
                        let run = |packed: bool| -> Vec<f32> {
                            let a_t = if packed {
                                b_gpu.tensor_packed(&[a_len], &to_stored(&a, a_pairs), p)
                            } else {
                                b_gpu.tensor_stored(&[a_len], &a, p)
                            }
                            .unwrap();
                            let c_t = if packed && c_packed {
                                b_gpu.tensor_packed(&[c_len], &to_stored(&c0, c_pairs), p)
                            } else {
                                b_gpu.tensor_stored(&[c_len], &c0, p)
                            }
                            .unwrap();
                            let b_t = b_gpu.tensor_f64(&[b.len()], &b).unwrap();
                            let bias_t = b_gpu.tensor_f64(&[bias.len()], &bias).unwrap();
                            let g = if packed { g } else { g.paired(0, 0) };
                            b_gpu.gemm(&g, &a_t, &b_t, Some(&bias_t), &c_t).unwrap();
                            let got = b_gpu.read(&c_t).unwrap();
                            if packed && c_packed {
                                from_stored(&got, c_pairs)
                            } else {
                                got
                            }
                        };
                        let (want, got) = (run(false), run(true));
                        let what = format!(
                            "{p} {kernel:?} {split:?} trans_a {trans_a} C pairs {c_pairs} A pairs {a_pairs}"
                        );
                        assert!(on_grid(p, &want), "{what}");
                        for (i, (x, y)) in want.iter().zip(&got).enumerate() {
                            assert_eq!(
                                x.to_bits(),
                                y.to_bits(),
                                "{what}: element {i}: {x:e} vs {y:e}"
                            );
                        }
                    }
                }
            }
        }
        // A packed C whose rows do not start on a pair of blocks, and a
        // pairing for an operand held in 32-bit words, are refused.
        let a_t = gpu
            .tensor_stored(&[24], &uniform(5, 24, -1.0, 1.0), p)
            .unwrap();
        let b_t = gpu.tensor_f64(&[24], &uniform(6, 24, -1.0, 1.0)).unwrap();
        let c_t = gpu.zeros_packed(&[64], p).unwrap();
        let err = gpu
            .gemm(
                &Gemm::nt(2, 12, 2).strides(2, 2, 14).paired(0, 3),
                &a_t,
                &b_t,
                None,
                &c_t,
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("matmul C") && err.contains("row stride"),
            "{err}"
        );
        let err = gpu
            .gemm(&Gemm::nt(2, 12, 2).paired(2, 3), &a_t, &b_t, None, &c_t)
            .unwrap_err()
            .to_string();
        assert!(err.contains("matmul A") && err.contains("packed"), "{err}");
    }
}

/// Column sums and dot products (the bias and peephole gradients) over
/// packed, gate-paired 16-bit gate gradients: bit for bit what they give
/// over the same values in 32-bit words.
#[test]
fn gpu_column_reductions_read_paired_16bit_values() {
    use rnn_wgpu::ops::reduce::{ColDot, ColSum};
    let gpu = gpu_or_skip!();
    let (rows, h) = (45, 5);
    let ld = 4 * h;
    let len = 2 * ld + rows * ld;
    for p in HALVES {
        let x: Vec<f64> = uniform(11, len, -2.0, 2.0)
            .iter()
            .map(|&v| p.round_f32(v as f32) as f64)
            .collect();
        let y = gpu
            .tensor_f64(&[len], &uniform(12, len, -1.0, 1.0))
            .unwrap();
        for pairs in [0, h] {
            let s = ColSum {
                ld,
                x_off: 2 * ld,
                out_off: 1,
                accumulate: true,
                also_off: Some(2 * ld),
                x_pairs: pairs,
                ..ColSum::new(rows, ld)
            };
            let d = ColDot {
                sum: ColSum {
                    also_off: None,
                    x_off: 2 * ld + h,
                    cols: 2 * h,
                    ..s
                },
                y_off: 3,
                y_ld: ld,
            };
            let run = |packed: bool| -> (Vec<f32>, Vec<f32>) {
                let x_t = if packed {
                    gpu.tensor_packed(&[len], &to_stored(&x, pairs), p)
                } else {
                    gpu.tensor_stored(&[len], &x, p)
                }
                .unwrap();
                let pairs = if packed { pairs } else { 0 };
                let out = gpu
                    .tensor_f64(&[3 * ld], &uniform(13, 3 * ld, -1.0, 1.0))
                    .unwrap();
                gpu.sum_cols(
                    &ColSum {
                        x_pairs: pairs,
                        ..s
                    },
                    &x_t,
                    &out,
                )
                .unwrap();
                let dots = gpu
                    .tensor_f64(&[3 * ld], &uniform(14, 3 * ld, -1.0, 1.0))
                    .unwrap();
                let dd = ColDot {
                    sum: ColSum {
                        x_pairs: pairs,
                        ..d.sum
                    },
                    ..d
                };
                gpu.dot_cols(&dd, &x_t, &y, &dots).unwrap();
                (gpu.read(&out).unwrap(), gpu.read(&dots).unwrap())
            };
            let (want, got) = (run(false), run(true));
            assert_eq!(want, got, "{p} pairs {pairs}");
        }
        let words = gpu.tensor_stored(&[len], &x, p).unwrap();
        let out = gpu.zeros(&[ld]).unwrap();
        let s = ColSum {
            x_pairs: h,
            ..ColSum::new(rows, ld)
        };
        let err = gpu.sum_cols(&s, &words, &out).unwrap_err().to_string();
        assert!(
            err.contains("sum_cols x") && err.contains("packed"),
            "{err}"
        );
    }
}

/// One forward step of `cell` at H = `h` in f16 on the GPU with packed
/// weights, and packed those of xg, hs, cs, gates and out that `pack`
/// names (the others in 32-bit words).
fn packed_step_attempt(
    gpu: &GpuBackend,
    cell: Cell,
    variant: rnn_wgpu::ops::cell::Variant,
    h: usize,
    pack: &[&str],
) -> rnn_wgpu::Result<()> {
    use rnn_wgpu::ops::cell::{StepForward, StepSpec};
    let p = Precision::F16;
    let (steps, batch) = (3, 2);
    let saved = variant.saved(cell).max(1);
    let hp = variant.state_size(h);
    let take = |name: &str, n: usize| {
        if pack.contains(&name) {
            gpu.zeros_packed(&[n], p)
        } else {
            gpu.zeros_stored(&[n], p)
        }
    };
    let xg = take("xg", steps * batch * cell.gates() * h)?;
    let w = gpu.zeros_packed(&[4096], p)?;
    let hs = take("hs", (steps + 1) * batch * hp)?;
    let cs = take("cs", (steps + 1) * batch * h)?;
    let gates = take("gates", steps * batch * saved * h)?;
    let out = take("out", steps * batch * hp)?;
    let spec = StepSpec {
        batch,
        hidden: h,
        steps,
        out_ld: hp,
        variant,
        store: p,
        ..Default::default()
    };
    let bufs = StepForward {
        xg: &xg,
        weights: &w,
        lengths: None,
        hs: &hs,
        cs: cell.has_cell_state().then_some(&cs),
        gates: Some(&gates),
        out: &out,
    };
    gpu.cell_forward(cell, &spec, &bufs)
}

#[test]
fn gpu_refuses_packed_gates_it_cannot_pair() {
    use rnn_wgpu::ops::cell::{Nonlinearity, Variant};
    let gpu = gpu_or_skip!();
    let h = 4;
    let attempt_with = |cell: Cell, variant: Variant, packed_xg: bool| {
        let pack: &[&str] = if packed_xg {
            &["gates", "xg"]
        } else {
            &["gates"]
        };
        packed_step_attempt(&gpu, cell, variant, h, pack)
    };
    let attempt = |cell, variant| attempt_with(cell, variant, false);
    attempt(Cell::Lstm, Variant::default()).unwrap();
    attempt(Cell::Gru, Variant::default()).unwrap();
    // The LSTM's input projection pairs as its gates do; the GRU's three
    // blocks cannot.
    attempt_with(Cell::Lstm, Variant::default(), true).unwrap();
    let err = attempt_with(Cell::Gru, Variant::default(), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cell xg") && err.contains("packed"), "{err}");
    let refused = [
        (
            Cell::Rnn(Nonlinearity::Tanh),
            Variant {
                cell_clip: Some(3.0),
                ..Variant::default()
            },
        ),
        (
            Cell::Lstm,
            Variant {
                proj_size: 2,
                ..Variant::default()
            },
        ),
        (
            Cell::Gru,
            Variant {
                reset_before: true,
                ..Variant::default()
            },
        ),
    ];
    for (cell, variant) in refused {
        let err = attempt(cell, variant).unwrap_err().to_string();
        assert!(
            err.contains("gates") && err.contains("packed"),
            "{cell:?} {variant:?}: {err}"
        );
    }
}

/// The embedding gather into packed 16-bit rows (a 16-bit pass's input to
/// the stack): bit for bit what the same gather stores in 32-bit words,
/// both table layouts, from an even offset, at an odd element count (the
/// last word's other half kept); an odd offset is refused.
#[test]
fn gpu_embedding_gathers_into_packed_rows() {
    use rnn_wgpu::ops::embed::{EmbedSpec, Table};
    let gpu = gpu_or_skip!();
    let (n, e, v) = (5, 3, 7);
    let tokens = gpu.ints(&[n], &[0, 6, 3, -1, 7]).unwrap();
    let table: Vec<f64> = (0..e * (v + 2) + e + 4)
        .map(|i| (i as f64 * 0.37).sin())
        .collect();
    for p in HALVES {
        let tab = gpu.tensor_packed(&[table.len()], &table, p).unwrap();
        for table_kind in [
            Table::Rows,
            Table::Columns {
                ld: v + 2,
                bias_off: 4 + e * (v + 2),
                dout_ld: e,
            },
        ] {
            let s = EmbedSpec {
                n,
                e,
                v,
                table_off: 4,
                table: table_kind,
                out_off: 2,
            };
            let len = s.out_off + n * e + 1;
            let gather = |packed: bool| {
                let out = if packed {
                    gpu.zeros_packed(&[len], p).unwrap()
                } else {
                    gpu.zeros_stored(&[len], p).unwrap()
                };
                gpu.fill(&out, 0, len, 0.5).unwrap();
                gpu.embed_forward(&s, &tokens, &tab, &out).map(|()| out)
            };
            let (plain, packed) = (gather(false).unwrap(), gather(true).unwrap());
            let (want, got) = (gpu.read(&plain).unwrap(), gpu.read(&packed).unwrap());
            assert_eq!(want, got, "{p} {table_kind:?}");
            assert_eq!(got[len - 1], 0.5, "{p}: the last word's other half");
            let odd = EmbedSpec { out_off: 1, ..s };
            let out = gpu.zeros_packed(&[len], p).unwrap();
            let err = gpu
                .embed_forward(&odd, &tokens, &tab, &out)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("embedding output") && err.contains("even"),
                "{err}"
            );
        }
    }
}

/// Packed states and output: two units a word, so an even H (and state
/// width), and hs and cs in one layout.
#[test]
fn gpu_refuses_packed_states_it_cannot_pair() {
    use rnn_wgpu::ops::cell::{Nonlinearity, Variant};
    let gpu = gpu_or_skip!();
    let plain = Variant::default();
    // (Gates in 32-bit words: a projection cannot pack them.)
    let all: &[&str] = &["hs", "cs", "out"];
    for cell in [Cell::Lstm, Cell::Gru, Cell::Rnn(Nonlinearity::Tanh)] {
        packed_step_attempt(&gpu, cell, plain, 4, all).unwrap();
        packed_step_attempt(&gpu, cell, plain, 4, &["out"]).unwrap();
        let err = packed_step_attempt(&gpu, cell, plain, 3, all)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cell states") && err.contains("even"),
            "{cell:?}: {err}"
        );
    }
    let err = packed_step_attempt(&gpu, Cell::Lstm, plain, 4, &["hs"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cell cs") && err.contains("one layout"),
        "{err}"
    );
    // A projection's P is the state width: even, or refused.
    let proj = |p: usize| Variant {
        proj_size: p,
        ..Variant::default()
    };
    packed_step_attempt(&gpu, Cell::Lstm, proj(2), 4, all).unwrap();
    let err = packed_step_attempt(&gpu, Cell::Lstm, proj(3), 4, all)
        .unwrap_err()
        .to_string();
    assert!(err.contains("state width") && err.contains("even"), "{err}");
}

#[test]
fn the_optimizer_writes_the_16bit_copy_in_its_own_dispatch() {
    use rnn_wgpu::ops::optim::UpdateSpec;
    let Some((ctx, gpu)) = common::own_gpu(|_| {}) else {
        return;
    };
    let cpu = CpuBackend::<f32>::new();
    let optimizers = common::every_optimizer();
    // An odd count (the last word's high half is outside) over several
    // workgroups; two steps, the second skipped (a non-finite loss).
    let n = 1001;
    assert!(refusal(&cpu, false, 5).contains("f32"));
    let p0: Vec<f64> = uniform(21, n, -2.0, 2.0);
    let g0: Vec<f64> = uniform(22, n, -1.0, 1.0);
    type Run = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);
    // (params, state 1, state 2, the copy) after the steps, through the
    // update with a copy (`fused`) or the update and then a copy.
    fn run<B: Backend<Elem = f32>>(
        b: &B,
        opt: &Optimizer,
        p: Precision,
        p0: &[f64],
        g0: &[f64],
        packed: bool,
        fused: bool,
    ) -> Run {
        let n = p0.len();
        let (l1, l2) = opt.state_lens(n);
        let params = b.tensor_f64(&[n], p0).unwrap();
        let grads = b.tensor_f64(&[n], g0).unwrap();
        let s1 = b.zeros(&[l1.max(1)]).unwrap();
        let s2 = b.zeros(&[l2.max(1)]).unwrap();
        let copy = if packed {
            b.zeros_packed(&[n], p).unwrap()
        } else {
            b.zeros_stored(&[n], p).unwrap()
        };
        // A marker the skipped step must leave: the copy of the first step.
        for (step, loss) in [(1, 0.5), (2, f64::NAN)] {
            let stats = b.tensor_f64(&[2], &[0.7, loss]).unwrap();
            let spec = UpdateSpec {
                n,
                step,
                lr: opt.lr(),
                max_norm: Some(1.0),
                norm_idx: 0,
                loss_idx: Some(1),
                grad_scale: 1.0,
            };
            if fused {
                b.optim_update_copy(opt, &spec, &params, &grads, &s1, &s2, &stats, &copy)
                    .unwrap();
            } else {
                b.optim_update(opt, &spec, &params, &grads, &s1, &s2, &stats)
                    .unwrap();
                b.copy(&params, 0, &copy, 0, n).unwrap();
            }
        }
        let v = b.read_many(&[&params, &s1, &s2, &copy]).unwrap();
        (v[0].clone(), v[1].clone(), v[2].clone(), v[3].clone())
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for opt in &optimizers {
        for p in HALVES {
            let what = format!("{opt:?} {p}");
            let c0 = ctx.counters();
            let fused = run(&gpu, opt, p, &p0, &g0, true, true);
            let c1 = ctx.counters();
            let apart = run(&gpu, opt, p, &p0, &g0, true, false);
            let c2 = ctx.counters();
            // One kernel a step, where the update and the copy are two.
            assert_eq!(c2.dispatches - c1.dispatches, 4, "{what}");
            assert_eq!(c1.dispatches - c0.dispatches, 2, "{what}");
            // The same parameters, state and copy as the update then a copy.
            assert_eq!(bits(&fused.0), bits(&apart.0), "{what}: parameters");
            assert_eq!(bits(&fused.1), bits(&apart.1), "{what}: state 1");
            assert_eq!(bits(&fused.2), bits(&apart.2), "{what}: state 2");
            assert_eq!(bits(&fused.3), bits(&apart.3), "{what}: copy");
            // The copy is the parameters rounded.
            let rounded: Vec<f32> = fused.0.iter().map(|&x| p.round_f32(x)).collect();
            assert_eq!(bits(&fused.3), bits(&rounded), "{what}: copy of the update");
            assert_ne!(fused.0, p0.iter().map(|&x| x as f32).collect::<Vec<_>>());
            // The CPU twin (its copy a rounded f32 tensor).
            let twin = run(&cpu, opt, p, &p0, &g0, false, true);
            let close = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
            };
            assert!(close(&fused.0, &twin.0), "{what}: GPU vs CPU parameters");
            let rounded_twin: Vec<f32> = twin.0.iter().map(|&x| p.round_f32(x)).collect();
            assert_eq!(bits(&twin.3), bits(&rounded_twin), "{what}: CPU copy");
        }
    }
    // A copy the update cannot write: f32, or too short.
    for e in [
        refusal(&gpu, false, 5),
        refusal(&gpu, true, 4),
        refusal(&cpu, false, 5),
        refusal(&cpu, true, 4),
    ] {
        assert!(e.contains("optimizer copy"), "{e}");
    }
    assert!(refusal(&gpu, false, 5).contains("f32"));
}

/// The error of an Adam update of 5 values with a copy of `len` (16-bit
/// when `half`, f32 otherwise).
fn refusal<B: Backend>(b: &B, half: bool, len: usize) -> String {
    use rnn_wgpu::ops::optim::UpdateSpec;
    let opt = Optimizer::adam(0.1);
    let n = 5;
    let (l1, l2) = opt.state_lens(n);
    let params = b.zeros(&[n]).unwrap();
    let grads = b.zeros(&[n]).unwrap();
    let s1 = b.zeros(&[l1]).unwrap();
    let s2 = b.zeros(&[l2]).unwrap();
    let stats = b.tensor_f64(&[2], &[0.7, 0.5]).unwrap();
    let copy = if half {
        b.zeros_packed(&[len], Precision::F16).unwrap()
    } else {
        b.zeros(&[len]).unwrap()
    };
    let spec = UpdateSpec {
        n,
        step: 1,
        lr: 0.1,
        max_norm: None,
        norm_idx: 0,
        loss_idx: Some(1),
        grad_scale: 1.0,
    };
    b.optim_update_copy(&opt, &spec, &params, &grads, &s1, &s2, &stats, &copy)
        .unwrap_err()
        .to_string()
}
