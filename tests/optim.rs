//! Optimizers and clipping: PyTorch's trajectories (fixtures made by
//! tests/fixtures/pytorch/make_fixtures.py), CPU against GPU, and non-finite
//! gradients.

mod common;

use std::path::Path;

use rnn_wgpu::backend::{Backend, CpuBackend};
use rnn_wgpu::io::read_safetensors;
use rnn_wgpu::ops::optim::{Optimizer, UpdateSpec, clip_coef};
use rnn_wgpu::ops::reduce::ReduceOp;
use rnn_wgpu::parity::{Tolerance, compare, uniform};

struct Case {
    name: String,
    opt: Optimizer,
    clip: Option<f32>,
    p0: Vec<f64>,
    grads: Vec<Vec<f64>>,
    expected: Vec<Vec<f64>>,
}

fn f(v: &serde_json::Value, key: &str, default: f64) -> f32 {
    v.get(key).and_then(|x| x.as_f64()).unwrap_or(default) as f32
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch");
    let text = std::fs::read_to_string(dir.join("optimizers.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    let tensors = read_safetensors(&dir.join("optimizers.safetensors")).unwrap();
    manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_string();
            let k = &c["kwargs"];
            let lr = f(k, "lr", 0.0);
            let wd = f(k, "weight_decay", 0.0);
            let opt = match c["optimizer"].as_str().unwrap() {
                "SGD" => Optimizer::Sgd {
                    lr,
                    momentum: f(k, "momentum", 0.0),
                    dampening: f(k, "dampening", 0.0),
                    nesterov: k.get("nesterov").and_then(|x| x.as_bool()).unwrap_or(false),
                    weight_decay: wd,
                },
                "Adagrad" => Optimizer::Adagrad {
                    lr,
                    lr_decay: f(k, "lr_decay", 0.0),
                    eps: f(k, "eps", 1e-10),
                    weight_decay: wd,
                },
                "RMSprop" => Optimizer::RmsProp {
                    lr,
                    alpha: f(k, "alpha", 0.99),
                    eps: f(k, "eps", 1e-8),
                    momentum: f(k, "momentum", 0.0),
                    centered: k.get("centered").and_then(|x| x.as_bool()).unwrap_or(false),
                    weight_decay: wd,
                },
                "Adam" => {
                    let betas = k.get("betas").and_then(|b| b.as_array());
                    let beta =
                        |i: usize, d: f64| betas.map_or(d, |b| b[i].as_f64().unwrap_or(d)) as f32;
                    Optimizer::Adam {
                        lr,
                        beta1: beta(0, 0.9),
                        beta2: beta(1, 0.999),
                        eps: f(k, "eps", 1e-8),
                        weight_decay: wd,
                    }
                }
                other => panic!("unknown optimizer {other}"),
            };
            let get = |s: &str| tensors[&format!("{name}.{s}")].floats(s).unwrap();
            let n = get("p0").len();
            let rows = |v: Vec<f64>| v.chunks(n).map(|r| r.to_vec()).collect::<Vec<_>>();
            Case {
                clip: c["clip"].as_f64().map(|x| x as f32),
                opt,
                p0: get("p0"),
                grads: rows(get("grads")),
                expected: rows(get("expected")),
                name,
            }
        })
        .collect()
}

/// Runs a case through a backend: parameters after every step.
fn trajectory<B: Backend>(b: &B, c: &Case) -> Vec<Vec<f64>> {
    let n = c.p0.len();
    let (l1, l2) = c.opt.state_lens(n);
    let params = b.tensor_f64(&[n], &c.p0).unwrap();
    let s1 = b.zeros(&[l1.max(1)]).unwrap();
    let s2 = b.zeros(&[l2.max(1)]).unwrap();
    let stats = b.zeros(&[2]).unwrap();
    let grads = b.zeros(&[n]).unwrap();
    let mut out = Vec::new();
    for (s, g) in c.grads.iter().enumerate() {
        let gv: Vec<B::Elem> = b.read(&b.tensor_f64(&[n], g).unwrap()).unwrap();
        b.write(&grads, &gv).unwrap();
        // The norm is computed on the device, as in training.
        b.reduce(ReduceOp::SumSquares, &grads, 0, n, &stats, 1, false)
            .unwrap();
        let spec = UpdateSpec {
            n,
            step: s as u64 + 1,
            lr: c.opt.lr(),
            max_norm: c.clip,
            norm_idx: 1,
            loss_idx: None,
            grad_scale: 1.0,
        };
        b.optim_update(&c.opt, &spec, &params, &grads, &s1, &s2, &stats)
            .unwrap();
        out.push(b.read_f64(&params).unwrap());
    }
    out
}

fn check_all<B: Backend>(b: &B, tol: Tolerance) {
    let all = cases();
    assert!(all.len() >= 8);
    for c in &all {
        for (s, (got, want)) in trajectory(b, c).iter().zip(&c.expected).enumerate() {
            if let Err(m) = compare(
                &format!("{} ({}) step {}", c.name, b.describe(), s + 1),
                want,
                got,
                tol,
            ) {
                panic!("{m}");
            }
        }
    }
}

#[test]
fn cpu_f64_follows_pytorch() {
    // Hyper-parameters travel as f32 (as they do to the GPU), hence 1e-6.
    check_all(&CpuBackend::<f64>::new(), Tolerance::new(1e-7, 1e-6));
}

#[test]
fn cpu_f32_follows_pytorch() {
    check_all(&CpuBackend::<f32>::new(), Tolerance::new(1e-5, 2e-5));
}

#[test]
fn gpu_follows_pytorch() {
    let gpu = gpu_or_skip!();
    check_all(&gpu, Tolerance::new(1e-5, 2e-5));
}

#[test]
fn clip_coefficient_is_pytorchs() {
    assert_eq!(clip_coef(4.0, None), Some(1.0));
    assert_eq!(clip_coef(4.0, Some(10.0)), Some(1.0));
    let c = clip_coef(16.0f64, Some(2.0)).unwrap();
    assert!((c - 2.0 / (4.0 + 1e-6)).abs() < 1e-15);
    assert_eq!(clip_coef(f64::NAN, Some(1.0)), None);
    assert_eq!(clip_coef(f64::INFINITY, None), None);
}

/// A NaN gradient leaves parameters and optimizer state untouched, on both paths.
#[test]
fn non_finite_gradients_skip_the_update() {
    fn run<B: Backend>(b: &B) -> (Vec<f64>, Vec<f64>) {
        let n = 300;
        let opt = Optimizer::adam(0.1);
        let p0 = uniform(1, n, -1.0, 1.0);
        let params = b.tensor_f64(&[n], &p0).unwrap();
        let mut g = uniform(2, n, -1.0, 1.0);
        g[17] = f64::NAN;
        let grads = b.tensor_f64(&[n], &g).unwrap();
        let (s1, s2, stats) = (
            b.zeros(&[n]).unwrap(),
            b.zeros(&[n]).unwrap(),
            b.zeros(&[1]).unwrap(),
        );
        b.reduce(ReduceOp::SumSquares, &grads, 0, n, &stats, 0, false)
            .unwrap();
        let spec = UpdateSpec {
            n,
            step: 1,
            lr: 0.1,
            max_norm: Some(1.0),
            norm_idx: 0,
            loss_idx: None,
            grad_scale: 1.0,
        };
        b.optim_update(&opt, &spec, &params, &grads, &s1, &s2, &stats)
            .unwrap();
        let after = b.read_f64(&params).unwrap();
        let state = b.read_f64(&s1).unwrap();
        assert!(
            b.read_f64(&stats).unwrap()[0].is_nan(),
            "the norm reports the NaN"
        );
        (
            after
                .iter()
                .zip(&p0)
                .map(|(a, p)| a - (*p as f32 as f64))
                .collect(),
            state,
        )
    }
    for (moved, state) in [run(&CpuBackend::<f32>::new())]
        .into_iter()
        .chain(common::gpu().map(|g| run(&g)))
    {
        assert!(moved.iter().all(|&d| d == 0.0), "parameters changed");
        assert!(state.iter().all(|&s| s == 0.0), "optimizer state changed");
    }
}

/// A non-finite loss skips the update even when the gradients are finite.
#[test]
fn non_finite_loss_skips_the_update() {
    fn run<B: Backend>(b: &B) -> bool {
        let n = 64;
        let opt = Optimizer::sgd(0.5);
        let p0 = uniform(3, n, -1.0, 1.0);
        let params = b.tensor_f64(&[n], &p0).unwrap();
        let grads = b.tensor_f64(&[n], &uniform(4, n, -1.0, 1.0)).unwrap();
        let stats = b.tensor_f64(&[2], &[f64::INFINITY, 0.0]).unwrap();
        b.reduce(ReduceOp::SumSquares, &grads, 0, n, &stats, 1, false)
            .unwrap();
        let (s1, s2) = (b.zeros(&[1]).unwrap(), b.zeros(&[1]).unwrap());
        let spec = UpdateSpec {
            n,
            step: 1,
            lr: 0.5,
            max_norm: None,
            norm_idx: 1,
            loss_idx: Some(0),
            grad_scale: 1.0,
        };
        b.optim_update(&opt, &spec, &params, &grads, &s1, &s2, &stats)
            .unwrap();
        let after = b.read_f64(&params).unwrap();
        after.iter().zip(&p0).all(|(a, p)| *a == *p as f32 as f64)
    }
    assert!(
        run(&CpuBackend::<f32>::new()),
        "CPU applied an update with an infinite loss"
    );
    if let Some(gpu) = common::gpu() {
        assert!(run(&gpu), "GPU applied an update with an infinite loss");
    }
}

/// Every optimizer, on both paths, skips the whole update (parameters and
/// state untouched) for each non-finite or negative sum of squares and each
/// non-finite loss written straight into the stats buffer: ±inf, NaN, and a
/// negative Σg² whose square root would be NaN. The GPU tests the bits of the
/// values as loaded (common.wgsl `is_finite_f32`), which fast math (Metal)
/// cannot fold away; a finite control moves the parameters.
#[test]
fn every_optimizer_skips_non_finite_norms_and_losses() {
    let optimizers = common::every_optimizer();
    let (inf, nan) = (f64::INFINITY, f64::NAN);
    // (Σg², loss, what)
    let bad = [
        (inf, 0.5, "+inf norm"),
        (-inf, 0.5, "-inf norm"),
        (nan, 0.5, "NaN norm"),
        (-4.0, 0.5, "negative sum of squares"),
        (1.0, nan, "NaN loss"),
        (1.0, inf, "+inf loss"),
        (1.0, -inf, "-inf loss"),
    ];
    // Whether the update moved the parameters or the optimizer state.
    fn moved<B: Backend>(b: &B, opt: &Optimizer, norm_sq: f64, loss: f64) -> bool {
        let n = 40;
        let (l1, l2) = opt.state_lens(n);
        let p0: Vec<f64> = uniform(5, n, -1.0, 1.0)
            .iter()
            .map(|&v| v as f32 as f64)
            .collect();
        let params = b.tensor_f64(&[n], &p0).unwrap();
        let grads = b.tensor_f64(&[n], &uniform(6, n, -1.0, 1.0)).unwrap();
        let s1 = b.zeros(&[l1.max(1)]).unwrap();
        let s2 = b.zeros(&[l2.max(1)]).unwrap();
        let stats = b.tensor_f64(&[2], &[norm_sq, loss]).unwrap();
        let spec = UpdateSpec {
            n,
            step: 1,
            lr: opt.lr(),
            max_norm: Some(1.0),
            norm_idx: 0,
            loss_idx: Some(1),
            grad_scale: 1.0,
        };
        b.optim_update(opt, &spec, &params, &grads, &s1, &s2, &stats)
            .unwrap();
        let after = b.read_many(&[&params, &s1, &s2]).unwrap();
        let p: Vec<f64> = after[0].iter().map(|v| rnn_wgpu::Real::f64(*v)).collect();
        let state_moved = after[1..]
            .iter()
            .flatten()
            .any(|v| rnn_wgpu::Real::f64(*v) != 0.0);
        p != p0 || state_moved
    }
    let cpu = CpuBackend::<f32>::new();
    let gpu = common::gpu();
    for opt in &optimizers {
        assert!(moved(&cpu, opt, 1.0, 0.5), "{opt:?}: CPU control");
        if let Some(g) = &gpu {
            assert!(moved(g, opt, 1.0, 0.5), "{opt:?}: GPU control");
        }
        for &(norm_sq, loss, what) in &bad {
            assert!(
                !moved(&cpu, opt, norm_sq, loss),
                "{opt:?}, {what}: CPU updated"
            );
            if let Some(g) = &gpu {
                assert!(
                    !moved(g, opt, norm_sq, loss),
                    "{opt:?}, {what}: GPU updated"
                );
            }
        }
    }
}

#[test]
fn the_update_gate_stops_where_the_host_stops() {
    use rnn_wgpu::ops::optim::{GateSpec, gate_cpu};
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    // Two windows of [mean, count, sum, invalid, correct, norm, -, -]; the
    // second window varies.
    let window = |sum: f64, invalid: f64, norm: f64| [0.5, 4.0, sum, invalid, 3.0, norm, 7.0, 8.0];
    let cases = [
        (window(2.0, 0.0, 1.5), false, false),
        (window(nan, 0.0, 1.5), true, false),
        (window(-inf, 0.0, 1.5), true, false),
        (window(2.0, 0.0, inf), true, false),
        (window(2.0, 0.0, nan), true, false),
        (window(2.0, 1.0, 1.5), true, true),
        (window(2.0, 0.5, 1.5), false, false),
        (window(2.0, nan, 1.5), false, false),
        (window(2.0, inf, 1.5), true, true),
        (window(2.0, -inf, 1.5), false, false),
    ];
    let gpu = common::gpu();
    for (second, stops_finite, stops_always) in cases {
        for finite in [true, false] {
            let g = GateSpec {
                windows: 2,
                stride: 8,
                norm: 5,
                loss: 2,
                invalid: 3,
                finite,
            };
            let mut stats: Vec<f64> = window(1.0, 0.0, 0.25).into_iter().chain(second).collect();
            // One more window's worth past the gate's two: never touched.
            stats.extend([9.0; 8]);
            let stops = if finite { stops_finite } else { stops_always };
            let mut want = stats.clone();
            for w in 0..2 {
                want[w * 8 + 5] = if stops { nan } else { 0.0 };
            }
            let mut host = stats.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            assert_eq!(
                gate_cpu(&g, &mut host).unwrap(),
                stops,
                "{second:?} {finite}"
            );
            let same = |got: &[f64], on: &str| {
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        a.to_bits() == (*b as f32 as f64).to_bits() || (a.is_nan() && b.is_nan()),
                        "{on}: stats[{i}] = {a}, want {b} ({second:?}, finite {finite})"
                    );
                }
            };
            same(&host.iter().map(|&v| v as f64).collect::<Vec<_>>(), "cpu");
            if let Some(gpu) = &gpu {
                let t = gpu.tensor_f64(&[stats.len()], &stats).unwrap();
                gpu.gate_updates(&g, &t).unwrap();
                same(&gpu.read_f64(&t).unwrap(), "gpu");
            }
        }
    }
    // A window past the buffer is refused.
    let bad = GateSpec {
        windows: 3,
        stride: 8,
        norm: 5,
        loss: 2,
        invalid: 3,
        finite: true,
    };
    assert!(gate_cpu(&bad, &mut [0.0f32; 16]).is_err());
}
