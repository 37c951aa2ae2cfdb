//! Recurrent layers: gradients against finite differences (CPU, f64), the GPU
//! against the CPU at step, layer and stack level, packed-sequence semantics,
//! and input errors.

mod common;

use rnn_wgpu::Error;
use rnn_wgpu::backend::{Backend, CpuBackend, GpuBackend, StepBackward, StepForward};
use rnn_wgpu::gpu::StepKernel;
use rnn_wgpu::gradcheck::GradCheck;
use rnn_wgpu::nn::case::{RnnCase, RnnResults, check_case_gradients, run_case, run_case_ordered};
use rnn_wgpu::nn::rnn::DirParams;
use rnn_wgpu::nn::rnn::LayerDropout;
use rnn_wgpu::nn::{Rnn, RnnConfig, StepOrder};
use rnn_wgpu::ops::cell::{Act, Activations, Cell, Nonlinearity, StepSpec, Variant};
use rnn_wgpu::ops::skip::Skip;
use rnn_wgpu::parity::{Tolerance, compare, rng, uniform};

use rand::RngExt;

const CELLS: [Cell; 4] = Cell::ALL;

fn cpu() -> CpuBackend<f64> {
    CpuBackend::new()
}

fn check(name: &str, expected: &[f64], actual: &[f64], tol: Tolerance) {
    if let Err(m) = compare(name, expected, actual, tol) {
        panic!("{m}");
    }
}

fn gradcheck(case: &RnnCase) {
    let lines = check_case_gradients(case, &GradCheck::default(), 24).unwrap();
    assert!(!lines.is_empty());
    for (name, r) in lines {
        if let Err(m) = r {
            panic!("{}: {name}: {m}", case.describe());
        }
    }
}

#[test]
fn every_gradient_of_every_cell_matches_finite_differences() {
    for (i, cell) in CELLS.into_iter().enumerate() {
        let cfg = RnnConfig::new(cell, 3, 4).layers(2).bidirectional(true);
        let case = RnnCase::new(cfg, 5, 3, 10 + i as u64)
            .with_states()
            .with_lengths(vec![5, 2, 4]);
        gradcheck(&case);
        let single = RnnCase::new(RnnConfig::new(cell, 2, 3), 4, 2, 20 + i as u64);
        gradcheck(&single);
    }
}

/// Every cell variant beyond PyTorch's, alone and combined.
fn variants() -> Vec<(Cell, Variant)> {
    let lstm = |f: &dyn Fn(&mut Variant)| {
        let mut v = Variant::default();
        f(&mut v);
        (Cell::Lstm, v)
    };
    let clip = |v: &mut Variant| v.cell_clip = Some(0.6);
    vec![
        lstm(&|v| v.peepholes = true),
        lstm(&|v| v.coupled = true),
        lstm(&clip),
        lstm(&|v| {
            v.peepholes = true;
            v.coupled = true;
            v.cell_clip = Some(0.8);
            v.activations = Activations {
                f: Act::Sigmoid,
                g: Act::Relu,
                h: Act::Sigmoid,
            };
        }),
        lstm(&|v| {
            v.activations = Activations {
                f: Act::Sigmoid,
                g: Act::Tanh,
                h: Act::Relu,
            }
        }),
        (
            Cell::Gru,
            Variant {
                cell_clip: Some(0.5),
                ..Default::default()
            },
        ),
        (
            Cell::Gru,
            Variant {
                activations: Activations {
                    f: Act::Sigmoid,
                    g: Act::Relu,
                    h: Act::Tanh,
                },
                ..Default::default()
            },
        ),
        (
            Cell::Gru,
            Variant {
                reset_before: true,
                ..Default::default()
            },
        ),
        (
            Cell::Gru,
            Variant {
                reset_before: true,
                cell_clip: Some(0.5),
                activations: Activations {
                    f: Act::Sigmoid,
                    g: Act::Relu,
                    h: Act::Tanh,
                },
                ..Default::default()
            },
        ),
        lstm(&|v| v.proj_size = 2),
        lstm(&|v| {
            v.proj_size = 3;
            v.peepholes = true;
            v.cell_clip = Some(0.7);
        }),
        (Cell::Rnn(Nonlinearity::Sigmoid), Variant::default()),
        (
            Cell::Rnn(Nonlinearity::Tanh),
            Variant {
                cell_clip: Some(0.5),
                ..Default::default()
            },
        ),
        (
            Cell::Rnn(Nonlinearity::Relu),
            Variant {
                cell_clip: Some(0.4),
                ..Default::default()
            },
        ),
    ]
}

#[test]
fn every_gradient_of_every_variant_matches_finite_differences() {
    for (i, (cell, v)) in variants().into_iter().enumerate() {
        let cfg = RnnConfig::new(cell, 3, 4)
            .variant(v)
            .layers(2)
            .bidirectional(true);
        let case = RnnCase::new(cfg, 5, 3, 40 + i as u64)
            .with_states()
            .with_lengths(vec![5, 2, 4]);
        gradcheck(&case);
    }
}

/// Residual and highway stacks, with every cell, one with a variant and dropout-free.
fn skip_configs() -> Vec<RnnConfig> {
    let mut v = Vec::new();
    for (i, cell) in CELLS.into_iter().enumerate() {
        let skip = if i % 2 == 0 {
            Skip::Residual
        } else {
            Skip::Highway
        };
        v.push(RnnConfig::new(cell, 3, 4).layers(3).skip(skip));
        let other = if skip == Skip::Residual {
            Skip::Highway
        } else {
            Skip::Residual
        };
        v.push(
            RnnConfig::new(cell, 2, 3)
                .layers(2)
                .bidirectional(true)
                .skip(other),
        );
    }
    let peep = Variant {
        peepholes: true,
        ..Default::default()
    };
    v.push(
        RnnConfig::new(Cell::Lstm, 3, 4)
            .variant(peep)
            .layers(2)
            .skip(Skip::Highway),
    );
    let proj = Variant {
        proj_size: 2,
        ..Default::default()
    };
    for skip in [Skip::Residual, Skip::Highway] {
        v.push(
            RnnConfig::new(Cell::Lstm, 3, 4)
                .variant(proj)
                .layers(2)
                .bidirectional(skip == Skip::Highway)
                .skip(skip),
        );
    }
    v
}

/// Streaming a projected LSTM step by step ends where the whole sequence does.
#[test]
fn projected_lstms_stream_like_the_whole_sequence() {
    let b = cpu();
    let cfg = RnnConfig::new(Cell::Lstm, 3, 5)
        .variant(Variant {
            proj_size: 2,
            ..Default::default()
        })
        .layers(2);
    let mut rnn = Rnn::new(b.clone(), cfg, 3).unwrap();
    let x = uniform(9, 4 * 2 * 3, -1.0, 1.0);
    let whole = rnn
        .forward(&b.tensor_f64(&[4, 2, 3], &x).unwrap(), None, None, None)
        .unwrap();
    assert_eq!(b.shape(&whole.output), [4, 2, 2]);
    assert_eq!(b.shape(&whole.hn), [2, 2, 2]);
    assert_eq!(b.shape(whole.cn.as_ref().unwrap()), [2, 2, 5]);
    let mut state = None;
    let mut outs = Vec::new();
    for t in 0..4 {
        let row = b.tensor_f64(&[2, 3], &x[t * 6..(t + 1) * 6]).unwrap();
        let (y, next) = rnn.step(&row, state.as_ref()).unwrap();
        outs.extend(b.read(&y).unwrap());
        state = Some(next);
    }
    check(
        "streamed output",
        &b.read(&whole.output).unwrap(),
        &outs,
        Tolerance::new(1e-12, 1e-12),
    );
    let s = state.unwrap();
    check(
        "streamed h",
        &b.read(&whole.hn).unwrap(),
        &b.read(&s.h).unwrap(),
        Tolerance::new(1e-12, 1e-12),
    );
}

#[test]
fn every_gradient_of_skip_stacks_matches_finite_differences() {
    for (i, cfg) in skip_configs().into_iter().enumerate() {
        let case = RnnCase::new(cfg, 4, 3, 70 + i as u64)
            .with_states()
            .with_lengths(vec![4, 1, 3]);
        gradcheck(&case);
    }
}

#[test]
fn gpu_matches_cpu_on_skip_stacks() {
    let gpu = gpu_or_skip!();
    for (i, cfg) in skip_configs().into_iter().enumerate() {
        let case = RnnCase::new(cfg, 5, 3, 600 + i as u64)
            .with_states()
            .with_lengths(vec![5, 2, 4]);
        gpu_vs_cpu(&gpu, &case);
    }
}

#[test]
fn a_skip_needs_a_stack() {
    let cfg = RnnConfig::new(Cell::Gru, 3, 4).skip(Skip::Residual);
    let err = Rnn::new(cpu(), cfg, 1).unwrap_err().to_string();
    assert!(err.contains("skip") && err.contains("stacked"), "{err}");
}

/// A clip that binds: some pre-activations of the case are clipped, and
/// the results differ from the unclipped cell's.
#[test]
fn the_clip_binds_in_the_variant_cases() {
    for (cell, v) in variants()
        .into_iter()
        .filter(|(_, v)| v.cell_clip.is_some())
    {
        let cfg = RnnConfig::new(cell, 3, 4).variant(v);
        let data = RnnCase::new(cfg, 5, 3, 7).data();
        let clipped = run_case(&cpu(), &cfg, &data, false).unwrap();
        let free = RnnConfig {
            variant: Variant {
                cell_clip: None,
                ..v
            },
            ..cfg
        };
        let unclipped = run_case(&cpu(), &free, &data, false).unwrap();
        assert_ne!(clipped.output, unclipped.output, "{}", cell.name());
    }
}

#[test]
fn gpu_matches_cpu_on_every_variant() {
    let _ = gpu_or_skip!();
    for (kernel, gpu) in step_variants() {
        eprintln!("step kernel: {}", kernel.name());
        for (i, (cell, v)) in variants().into_iter().enumerate() {
            let s = 500 + 10 * i as u64;
            let cases = [
                RnnCase::new(
                    RnnConfig::new(cell, 3, 5)
                        .variant(v)
                        .layers(2)
                        .bidirectional(true),
                    5,
                    4,
                    s,
                )
                .with_states()
                .with_lengths(vec![5, 1, 3, 4]),
                // Tile edges: H = 33, B = 9.
                RnnCase::new(RnnConfig::new(cell, 4, 33).variant(v), 3, 9, s + 1).with_states(),
            ];
            for case in &cases {
                gpu_vs_cpu(&gpu, case);
            }
        }
    }
}

fn results_match(name: &str, expected: &RnnResults, actual: &RnnResults) {
    let val = Tolerance::new(2e-5, 1e-4);
    let grad = Tolerance::new(1e-4, 1e-3);
    check(
        &format!("{name}: output"),
        &expected.output,
        &actual.output,
        val,
    );
    check(&format!("{name}: hn"), &expected.hn, &actual.hn, val);
    check(&format!("{name}: cn"), &expected.cn, &actual.cn, val);
    check(
        &format!("{name}: grad_input"),
        &expected.grad_input,
        &actual.grad_input,
        grad,
    );
    check(
        &format!("{name}: grad_h0"),
        &expected.grad_h0,
        &actual.grad_h0,
        grad,
    );
    check(
        &format!("{name}: grad_c0"),
        &expected.grad_c0,
        &actual.grad_c0,
        grad,
    );
    check(
        &format!("{name}: param grads"),
        &expected.grad_params,
        &actual.grad_params,
        grad,
    );
}

fn gpu_vs_cpu(gpu: &GpuBackend, case: &RnnCase) {
    let data = case.data();
    let expected = run_case(&cpu(), &case.config, &data, true).unwrap();
    let actual = run_case(gpu, &case.config, &data, true).unwrap();
    results_match(&case.describe(), &expected, &actual);
}

/// A context per recurrent-product variant, each forced for every step.
fn step_variants() -> Vec<(StepKernel, GpuBackend)> {
    StepKernel::ALL
        .into_iter()
        .filter_map(|k| common::own_gpu(|o| o.step_kernel = Some(k)).map(|(_, gpu)| (k, gpu)))
        .collect()
}

#[test]
fn gpu_matches_cpu_on_named_edge_cases() {
    let _ = gpu_or_skip!();
    for (variant, gpu) in step_variants() {
        named_edge_cases(&gpu, variant);
    }
}

fn named_edge_cases(gpu: &GpuBackend, variant: StepKernel) {
    eprintln!("step kernel: {}", variant.name());
    for (i, cell) in CELLS.into_iter().enumerate() {
        let s = 100 * i as u64;
        let cases = [
            RnnCase::new(RnnConfig::new(cell, 1, 1), 3, 2, s + 1), // H = 1, I = 1
            RnnCase::new(RnnConfig::new(cell, 3, 4), 4, 1, s + 2), // B = 1
            RnnCase::new(RnnConfig::new(cell, 3, 4), 1, 3, s + 3).with_states(), // T = 1
            RnnCase::new(RnnConfig::new(cell, 7, 33), 3, 9, s + 4), // tile edges: H = 33, B = 9
            RnnCase::new(RnnConfig::new(cell, 2, 12), 2, 17, s + 8), // H = 12, B = 17
            RnnCase::new(RnnConfig::new(cell, 2, 9), 2, 16, s + 9), // one full 16-row tile
            // T = 70: the resident kernel's 64 steps a dispatch, then 6.
            RnnCase::new(
                RnnConfig::new(cell, 3, 5).bidirectional(true),
                70,
                2,
                s + 10,
            )
            .with_states()
            .with_lengths(vec![70, 33]),
            RnnCase::new(RnnConfig::new(cell, 5, 6).layers(3), 4, 2, s + 5).with_states(),
            RnnCase::new(RnnConfig::new(cell, 4, 5).bidirectional(true), 5, 3, s + 6).with_states(),
            RnnCase::new(
                RnnConfig::new(cell, 3, 5).layers(2).bidirectional(true),
                6,
                4,
                s + 7,
            )
            .with_states()
            .with_lengths(vec![6, 1, 3, 5]),
        ];
        for case in &cases {
            gpu_vs_cpu(gpu, case);
        }
    }
}

#[test]
fn gpu_matches_cpu_on_random_cases() {
    let gpu = gpu_or_skip!();
    let mut r = rng(31337);
    for i in 0..8 {
        let cell = CELLS[i % 4];
        let (steps, batch) = (r.random_range(1..7), r.random_range(1..11));
        let cfg = RnnConfig::new(cell, r.random_range(1..9), r.random_range(1..40))
            .layers(r.random_range(1..4))
            .bidirectional(r.random_range(0..2) == 1);
        let mut case = RnnCase::new(cfg, steps, batch, 900 + i as u64);
        if r.random_range(0..2) == 1 {
            case = case.with_states();
        }
        if r.random_range(0..2) == 1 {
            let lengths = (0..batch)
                .map(|_| r.random_range(1..=steps as i32))
                .collect();
            case = case.with_lengths(lengths);
        }
        gpu_vs_cpu(&gpu, &case);
    }
}

/// Unidirectional stacks the wavefront schedule can run: every cell, the
/// variants whose step is one dispatch, 2 to 4 layers (4 layers over 2 steps:
/// more layers than steps), with states and packed lengths.
fn wave_cases(seed: u64) -> Vec<RnnCase> {
    let mut cases = Vec::new();
    let mut cells: Vec<(Cell, Variant)> =
        CELLS.into_iter().map(|c| (c, Variant::default())).collect();
    cells.extend(
        variants()
            .into_iter()
            .filter(|(_, v)| v.proj_size == 0 && !v.gates_between_dispatches()),
    );
    for (i, (cell, v)) in cells.into_iter().enumerate() {
        let s = seed + 10 * i as u64;
        let layers = 2 + i % 2;
        cases.push(
            RnnCase::new(
                RnnConfig::new(cell, 3, 5).variant(v).layers(layers),
                5,
                3,
                s,
            )
            .with_states()
            .with_lengths(vec![5, 2, 4]),
        );
    }
    for (i, cell) in CELLS.into_iter().enumerate() {
        let s = seed + 500 + i as u64;
        cases.push(RnnCase::new(RnnConfig::new(cell, 4, 6).layers(4), 2, 2, s).with_states());
        // Tile edges: H = 33, B = 9 (and I != H: layer 0's input differs).
        cases.push(RnnCase::new(
            RnnConfig::new(cell, 7, 33).layers(2),
            3,
            9,
            s + 50,
        ));
    }
    cases
}

/// The wavefront computes what the layer-by-layer schedule computes: on the
/// CPU in f64, to rounding (its input products sum in another order), in the
/// inference forward and in training.
#[test]
fn wavefront_matches_layers_on_the_cpu() {
    let tol = Tolerance::new(1e-12, 1e-10);
    for case in wave_cases(3000) {
        let data = case.data();
        let name = case.describe();
        for backward in [false, true] {
            let run = |s| run_case_ordered(&cpu(), &case.config, &data, backward, s).unwrap();
            let (layers, wave) = (run(StepOrder::Layers), run(StepOrder::Wavefront));
            assert!(!wave.output.is_empty(), "{name}");
            let pairs = [
                ("output", &layers.output, &wave.output),
                ("hn", &layers.hn, &wave.hn),
                ("cn", &layers.cn, &wave.cn),
                ("grad_input", &layers.grad_input, &wave.grad_input),
                ("grad_h0", &layers.grad_h0, &wave.grad_h0),
                ("grad_c0", &layers.grad_c0, &wave.grad_c0),
                ("grad_params", &layers.grad_params, &wave.grad_params),
            ];
            for (what, a, b) in pairs {
                check(&format!("{name} (backward {backward}): {what}"), a, b, tol);
            }
        }
    }
}

/// Every gradient of a wavefront stack against finite differences.
#[test]
fn every_gradient_of_a_wavefront_matches_finite_differences() {
    for (i, cell) in CELLS.into_iter().enumerate() {
        let cfg = RnnConfig::new(cell, 3, 4).layers(3);
        let case = RnnCase::new(cfg, 4, 3, 4000 + i as u64)
            .with_states()
            .with_lengths(vec![4, 1, 3]);
        let data = case.data();
        // Auto on the CPU runs layer by layer: the finite differences check
        // the forward's loss; the wavefront's gradients are compared to
        // them through the layer schedule's, which the cases check.
        let auto = run_case(&cpu(), &case.config, &data, true).unwrap();
        let wave =
            run_case_ordered(&cpu(), &case.config, &data, true, StepOrder::Wavefront).unwrap();
        check(
            &case.describe(),
            &auto.grad_params,
            &wave.grad_params,
            Tolerance::new(1e-12, 1e-10),
        );
        gradcheck(&case);
    }
}

/// The GPU's wavefront (forced, with each recurrent-product variant) against
/// the CPU's layer-by-layer results.
#[test]
fn gpu_wavefront_matches_cpu() {
    let _ = gpu_or_skip!();
    for (kernel, gpu) in step_variants() {
        eprintln!("step kernel: {}", kernel.name());
        for case in wave_cases(3100) {
            let data = case.data();
            let expected =
                run_case_ordered(&cpu(), &case.config, &data, true, StepOrder::Layers).unwrap();
            let actual =
                run_case_ordered(&gpu, &case.config, &data, true, StepOrder::Wavefront).unwrap();
            results_match(&case.describe(), &expected, &actual);
        }
    }
}

/// A wavefront forced on a stack it cannot run names the reason; the
/// automatic schedule runs such stacks layer by layer.
#[test]
fn a_wavefront_it_cannot_run_is_an_error() {
    let cpu = cpu();
    let proj = Variant {
        proj_size: 2,
        ..Default::default()
    };
    let refused = [
        (
            RnnConfig::new(Cell::Lstm, 3, 4)
                .layers(2)
                .bidirectional(true),
            "bidirectional",
        ),
        (RnnConfig::new(Cell::Gru, 3, 4), "one layer"),
        (
            RnnConfig::new(Cell::Lstm, 3, 4).layers(2).variant(proj),
            "two dispatches",
        ),
    ];
    for (cfg, why) in refused {
        let case = RnnCase::new(cfg, 3, 2, 5);
        let data = case.data();
        let e = run_case_ordered(&cpu, &cfg, &data, true, StepOrder::Wavefront).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("step_order") && msg.contains(why), "{msg}");
        run_case_ordered(&cpu, &cfg, &data, true, StepOrder::Auto).unwrap();
    }
    let mut rnn = Rnn::new(cpu.clone(), RnnConfig::new(Cell::Lstm, 3, 4).layers(2), 1).unwrap();
    rnn.set_step_order(StepOrder::Wavefront);
    let x = cpu.zeros(&[3, 2, 3]).unwrap();
    let e = rnn
        .forward_train(
            &x,
            None,
            None,
            None,
            Some(LayerDropout {
                p: 0.5,
                seed: 7,
                step: 0,
                site: 0,
                rows: None,
            }),
        )
        .unwrap_err();
    assert!(e.to_string().contains("dropout"), "{e}");
}

/// The hot kernels compiled without runtime bounds checks (the default
/// build) compute bitwise what the checked build computes, with each
/// recurrent-product variant, on tile edges, two layers, both directions and
/// packed lengths.
#[test]
fn unchecked_hot_kernels_match_the_checked_build_bitwise() {
    let _ = gpu_or_skip!();
    for kernel in StepKernel::ALL {
        let build = |checked: bool| {
            common::own_gpu(|o| {
                o.step_kernel = Some(kernel);
                o.checked_shaders = checked;
            })
            .map(|(_, g)| g)
        };
        let (Some(checked), Some(unchecked)) = (build(true), build(false)) else {
            return;
        };
        for (i, cell) in CELLS.into_iter().enumerate() {
            let case = RnnCase::new(
                RnnConfig::new(cell, 5, 33).layers(2).bidirectional(true),
                3,
                17,
                500 + i as u64,
            )
            .with_states()
            .with_lengths((0..17).map(|b| 1 + b % 3).collect());
            let data = case.data();
            let e = run_case(&checked, &case.config, &data, true).unwrap();
            let a = run_case(&unchecked, &case.config, &data, true).unwrap();
            let bits = |r: &RnnResults| -> Vec<u64> {
                r.values()
                    .into_iter()
                    .chain(r.gradients())
                    .map(f64::to_bits)
                    .collect()
            };
            assert!(
                bits(&e) == bits(&a),
                "{} [{}]: unchecked differs from checked",
                case.describe(),
                kernel.name()
            );
        }
    }
}

/// Both directions of a layer share each step dispatch: each direction's
/// output is bitwise that of a one-direction layer with its weights (the
/// reverse one on the time-reversed sequence), and so are the forward
/// direction's parameter gradients (the reverse one's sum their rows in
/// another order, so they agree to rounding), with
/// each recurrent-product variant; and the resident kernel (which also
/// advances many steps a dispatch) computes bitwise what the tiled one does.
#[test]
fn fused_directions_and_steps_compute_each_direction_bitwise() {
    let _ = gpu_or_skip!();
    let (steps, batch, input, hidden) = (4, 17, 5, 33);
    let mut tiled_bits = Vec::new();
    for kernel in StepKernel::ALL {
        let Some((_, gpu)) = common::own_gpu(|o| o.step_kernel = Some(kernel)) else {
            return;
        };
        let mut bits_of_kernel = Vec::new();
        for (i, cell) in CELLS.into_iter().enumerate() {
            let bi = RnnConfig::new(cell, input, hidden).bidirectional(true);
            let one = RnnConfig::new(cell, input, hidden);
            let (bl, ul) = (bi.layout(), one.layout());
            let params = uniform(40 + i as u64, bl.total, -0.4, 0.4);
            let x = uniform(50 + i as u64, steps * batch * input, -1.0, 1.0);
            let dy = uniform(60 + i as u64, steps * batch * 2 * hidden, -1.0, 1.0);
            // Runs `cfg` on x (time-reversed when `rev`) with the output
            // gradient's columns `cols`; returns the output (in x's time
            // order), then the parameter gradients.
            let run = |cfg: RnnConfig, p: &[f64], rev: bool, cols: std::ops::Range<usize>| {
                let w = cfg.output_size();
                let order = |t: usize| if rev { steps - 1 - t } else { t };
                let mut xs = vec![0.0; x.len()];
                let mut g = vec![0.0; steps * batch * w];
                for t in 0..steps {
                    let (src, dst) = (order(t) * batch * input, t * batch * input);
                    xs[dst..dst + batch * input].copy_from_slice(&x[src..src + batch * input]);
                    for b in 0..batch {
                        let from = (order(t) * batch + b) * 2 * hidden + cols.start;
                        let to = (t * batch + b) * w;
                        g[to..to + w].copy_from_slice(&dy[from..from + w]);
                    }
                }
                let mut rnn = Rnn::from_params(
                    gpu.clone(),
                    cfg,
                    &p.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                )
                .unwrap();
                let xt = gpu.tensor_f64(&[steps, batch, input], &xs).unwrap();
                let gt = gpu.tensor_f64(&[steps, batch, w], &g).unwrap();
                let (out, saved) = rnn.forward_train(&xt, None, None, None, None).unwrap();
                let grads = rnn.zeros_like_params().unwrap();
                rnn.backward(&saved, Some(&gt), None, None, &grads).unwrap();
                let o = gpu.read_f64(&out.output).unwrap();
                let mut y = vec![0.0; o.len()];
                for t in 0..steps {
                    let (src, dst) = (t * batch * w, order(t) * batch * w);
                    y[dst..dst + batch * w].copy_from_slice(&o[src..src + batch * w]);
                }
                (y, gpu.read_f64(&grads).unwrap())
            };
            let (y, g) = run(bi, &params, false, 0..2 * hidden);
            for (d, suffix) in [(0, ""), (1, "_reverse")] {
                let mut p = vec![0.0; ul.total];
                for e in &ul.entries {
                    let src = bl.get(&format!("{}{suffix}", e.name)).unwrap();
                    let n: usize = e.shape.iter().product();
                    p[e.offset..e.offset + n].copy_from_slice(&params[src.offset..src.offset + n]);
                }
                let (y1, g1) = run(one, &p, d == 1, d * hidden..(d + 1) * hidden);
                for r in 0..steps * batch {
                    let fused = &y[r * 2 * hidden + d * hidden..r * 2 * hidden + (d + 1) * hidden];
                    let alone = &y1[r * hidden..(r + 1) * hidden];
                    assert!(
                        fused
                            .iter()
                            .zip(alone)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{} {} direction {d}: output row {r} differs",
                        kernel.name(),
                        cell.name()
                    );
                }
                for e in &ul.entries {
                    let src = bl.get(&format!("{}{suffix}", e.name)).unwrap();
                    let n: usize = e.shape.iter().product();
                    let (a, b) = (&g[src.offset..src.offset + n], &g1[e.offset..e.offset + n]);
                    let name = format!(
                        "{} {} direction {d}: gradient of {}",
                        kernel.name(),
                        cell.name(),
                        e.name
                    );
                    if d == 0 {
                        assert!(
                            a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{name} differs"
                        );
                    } else {
                        // The weight gradients sum over (t, b) rows, which
                        // the time-reversed run visits in another order.
                        check(&name, a, b, Tolerance::new(1e-5, 1e-4));
                    }
                }
            }
            bits_of_kernel.extend(y.iter().chain(&g).map(|v| v.to_bits()));
        }
        match kernel {
            StepKernel::Tiled => tiled_bits = bits_of_kernel,
            StepKernel::Resident => {
                assert!(tiled_bits == bits_of_kernel, "resident differs from tiled")
            }
            _ => {}
        }
    }
}

/// One-hot tokens (the first layer gathers W_ih's columns and scatters its
/// gradient back into them) compute what the same stack computes on the
/// one-hot rows themselves: outputs, final states and parameter gradients,
/// on the CPU in f64 and on the GPU, with a token outside the vocabulary (a
/// row of zeros), two layers, both directions and packed lengths.
#[test]
fn one_hot_tokens_match_one_hot_rows() {
    let (steps, batch, vocab, hidden) = (5, 3, 7, 9);
    let tokens: Vec<i32> = (0..steps * batch).map(|i| (i * 5 % 8) as i32).collect(); // 7 is outside
    let mut rows = vec![0.0; steps * batch * vocab];
    for (n, &t) in tokens.iter().enumerate() {
        if (t as usize) < vocab {
            rows[n * vocab + t as usize] = 1.0;
        }
    }
    fn run<B: Backend>(
        b: &B,
        cfg: RnnConfig,
        tokens: &[i32],
        rows: &[f64],
        one_hot: bool,
    ) -> Vec<f64> {
        let (steps, batch) = (5, 3);
        let mut rnn = Rnn::new(b.clone(), cfg, 77).unwrap();
        if !cfg.bidirectional {
            rnn.set_step_order(StepOrder::Wavefront);
        }
        let lengths = [5, 2, 4];
        let (out, saved) = if one_hot {
            let t = b.ints(&[steps, batch], tokens).unwrap();
            rnn.forward_train_one_hot(&t, None, None, Some(&lengths), None)
                .unwrap()
        } else {
            let x = b.tensor_f64(&[steps, batch, cfg.input_size], rows).unwrap();
            rnn.forward_train(&x, None, None, Some(&lengths), None)
                .unwrap()
        };
        let grads = rnn.zeros_like_params().unwrap();
        let dy = uniform(78, steps * batch * cfg.output_size(), -1.0, 1.0);
        let dy = b
            .tensor_f64(&[steps, batch, cfg.output_size()], &dy)
            .unwrap();
        rnn.backward(&saved, Some(&dy), None, None, &grads).unwrap();
        let mut v = b.read_f64(&out.output).unwrap();
        v.extend(b.read_f64(&out.hn).unwrap());
        v.extend(b.read_f64(&grads).unwrap());
        v
    }
    let gpu = common::gpu();
    // Bidirectional: layer by layer; unidirectional: a wavefront.
    for (cell, bidirectional) in CELLS.into_iter().flat_map(|c| [(c, true), (c, false)]) {
        let cfg = RnnConfig::new(cell, vocab, hidden)
            .layers(2)
            .bidirectional(bidirectional);
        let name = format!("one-hot {} (bidirectional {bidirectional})", cell.name());
        let cpu = cpu();
        check(
            &format!("{name} (cpu)"),
            &run(&cpu, cfg, &tokens, &rows, false),
            &run(&cpu, cfg, &tokens, &rows, true),
            Tolerance::new(1e-13, 1e-12),
        );
        if let Some(gpu) = &gpu {
            check(
                &format!("{name} (gpu)"),
                &run(gpu, cfg, &tokens, &rows, false),
                &run(gpu, cfg, &tokens, &rows, true),
                Tolerance::new(1e-5, 1e-4),
            );
        }
    }
}

/// A fused step that does not fit its sequence, or a pair of directions
/// whose parts overlap, is an error before anything runs (CPU and GPU), and
/// a matmul with an empty output is refused on both backends alike.
#[test]
fn bad_fusions_are_errors() {
    use rnn_wgpu::ops::cell::{DirStrides, Fusion, Wave};
    use rnn_wgpu::ops::matmul::Gemm;
    fn attempt<B: Backend>(b: &B, fusion: Fusion, t: usize) -> rnn_wgpu::Error {
        let (steps, batch, h) = (4, 2, 3);
        let part = steps * batch * 4 * h;
        let slots = (steps + 1) * batch * h;
        let t_ = |n: usize| b.tensor_f64(&[n], &vec![0.1; n]).unwrap();
        let (xg, w, hs, cs, gates, out) = (
            t_(2 * part),
            t_(200),
            t_(2 * slots),
            t_(2 * slots),
            t_(2 * part),
            t_(steps * batch * 2 * h),
        );
        let before = b.read_f64(&hs).unwrap();
        let spec = StepSpec {
            batch,
            hidden: h,
            steps,
            t,
            // A wavefront's layers each write [T, B, H] (two of them fit).
            out_ld: if fusion.wave.is_some() { h } else { 2 * h },
            fusion,
            ..Default::default()
        };
        let bufs = StepForward {
            xg: &xg,
            weights: &w,
            lengths: None,
            hs: &hs,
            cs: Some(&cs),
            gates: Some(&gates),
            out: &out,
        };
        let err = b.cell_forward(Cell::Lstm, &spec, &bufs).unwrap_err();
        assert_eq!(b.read_f64(&hs).unwrap(), before, "nothing ran: {err}");
        err
    }
    let good = DirStrides {
        xg: 4 * 2 * 12,
        hs: 5 * 2 * 3,
        cs: 5 * 2 * 3,
        gates: 4 * 2 * 12,
        ..Default::default()
    };
    let backends: Vec<Box<dyn Fn(Fusion, usize) -> String>> = {
        let mut v: Vec<Box<dyn Fn(Fusion, usize) -> String>> =
            vec![Box::new(|f, t| attempt(&cpu(), f, t).to_string())];
        if let Some(g) = common::gpu() {
            v.push(Box::new(move |f, t| attempt(&g, f, t).to_string()));
        }
        v
    };
    for run in &backends {
        let huge = Fusion {
            pair: None,
            more_steps: usize::MAX / 2,
            wave: None,
        };
        assert!(run(huge, 0).contains("do not fit"));
        let past = Fusion {
            pair: Some(good),
            more_steps: 0,
            wave: None,
        };
        assert!(run(past, 4).contains("do not fit"));
        let over = Fusion {
            pair: Some(good),
            more_steps: 3,
            wave: None,
        };
        assert!(run(over, 1).contains("do not fit") || run(over, 1).contains("leave"));
        let overlap = Fusion {
            pair: Some(DirStrides { hs: 3, ..good }),
            more_steps: 0,
            wave: None,
        };
        let e = run(overlap, 0);
        assert!(e.contains("hs") && e.contains("inside"), "{e}");
        // Wavefronts: beside a pair, past the stack's layers, before time 0,
        // a lone lane whose layer's part overlaps the one below it reads.
        let wave = Wave {
            layer: 0,
            lanes: 2,
            layers: 2,
            strides: DirStrides {
                out: 4 * 2 * 3,
                ..good
            },
            wih_off: 0,
            bih_off: 0,
        };
        let paired = Fusion {
            pair: Some(good),
            wave: Some(wave),
            ..Default::default()
        };
        assert!(run(paired, 1).contains("one forward direction"));
        let past = Fusion {
            wave: Some(Wave { layer: 1, ..wave }),
            ..Default::default()
        };
        let e = run(past, 1);
        assert!(e.contains("layers 1..3") && e.contains("inside"), "{e}");
        let early = Fusion {
            wave: Some(wave),
            ..Default::default()
        };
        assert!(run(early, 0).contains("before time 0"));
        let lone = Fusion {
            wave: Some(Wave {
                layer: 1,
                lanes: 1,
                strides: DirStrides {
                    hs: 0,
                    ..wave.strides
                },
                ..wave
            }),
            ..Default::default()
        };
        let e = run(lone, 1);
        assert!(e.contains("hs") && e.contains("inside"), "{e}");
    }
    // An empty product: the same error on both backends (no panic in the
    // GPU's split planning).
    let g = Gemm::nn(0, 4, 600);
    let cpu = cpu();
    let (a, bm, c) = (
        cpu.zeros(&[2400]).unwrap(),
        cpu.zeros(&[2400]).unwrap(),
        cpu.zeros(&[4]).unwrap(),
    );
    assert!(cpu.gemm(&g, &a, &bm, None, &c).is_err());
    if let Some(gpu) = common::gpu() {
        let (a, bm, c) = (
            gpu.zeros(&[2400]).unwrap(),
            gpu.zeros(&[2400]).unwrap(),
            gpu.zeros(&[4]).unwrap(),
        );
        assert!(gpu.gemm(&g, &a, &bm, None, &c).is_err());
    }
}

/// Step grids beyond the per-dimension workgroup limit (forced to 4) are folded
/// into 2-D, with each recurrent-product variant.
#[test]
fn folded_step_grids_match_the_cpu() {
    let _ = gpu_or_skip!();
    for kernel in StepKernel::ALL {
        let Some((ctx, gpu)) = common::own_gpu(|o| {
            o.max_workgroups_per_dim = Some(4);
            o.step_kernel = Some(kernel);
        }) else {
            return;
        };
        // Tiled: 2 x 3 = 6 workgroups; split: 5 x 3 = 15; resident (all
        // units a workgroup): 5 at 80 rows.
        let hidden = 40;
        let batch = if kernel == StepKernel::Resident {
            80
        } else {
            33
        };
        assert!(kernel.groups(batch, hidden) > 4);
        assert_eq!(ctx.step_kernel(batch, hidden), kernel);
        for (i, cell) in CELLS.into_iter().enumerate() {
            let case = RnnCase::new(RnnConfig::new(cell, 3, hidden), 3, batch, 70 + i as u64)
                .with_states();
            gpu_vs_cpu(&gpu, &case);
        }
    }
}

/// One forward and one backward step, GPU against CPU, on random buffers,
/// with each recurrent-product variant.
#[test]
fn single_steps_match_between_gpu_and_cpu() {
    let _ = gpu_or_skip!();
    for (variant, gpu) in step_variants() {
        single_steps(&gpu, variant);
    }
}

fn single_steps(gpu: &GpuBackend, variant: StepKernel) {
    for (ci, cell) in CELLS.into_iter().enumerate() {
        let (steps, batch, h) = (3, 5, 37);
        let gh = cell.gates() * h;
        let s = StepSpec {
            batch,
            hidden: h,
            steps,
            t: 1,
            reverse: false,
            first: false,
            parity: 1,
            whh_off: 7,
            bhh_off: 7 + gh * h,
            out_col: h,
            out_ld: 2 * h,
            ring: false,
            ..Default::default()
        };
        let seed = 40 + ci as u64 * 10;
        let weights = uniform(seed, 7 + gh * h + gh + 3, -0.3, 0.3);
        let xg = uniform(seed + 1, steps * batch * gh, -2.0, 2.0);
        let states = uniform(seed + 2, (steps + 1) * batch * h, -1.0, 1.0);
        let gates = uniform(seed + 3, steps * batch * 4 * h, 0.05, 0.95);
        let dout = uniform(seed + 4, steps * batch * 2 * h, -1.0, 1.0);
        let dg = uniform(seed + 5, steps * batch * gh, -1.0, 1.0);
        let carry = uniform(seed + 6, 4 * batch * h, -1.0, 1.0);
        let lengths = [3, 1, 2, 3, 2];
        fn run<B: Backend>(
            b: &B,
            cell: Cell,
            s: &StepSpec,
            v: [&[f64]; 7],
            lengths: &[i32],
        ) -> Vec<Vec<f64>> {
            let [weights, xg, states, gates, dout, dg, carry] = v;
            let t = |x: &[f64]| b.tensor_f64(&[x.len()], x).unwrap();
            let (w, xg, hs, cs, gt) = (t(weights), t(xg), t(states), t(states), t(gates));
            let out = b.zeros(&[dout.len()]).unwrap();
            let lens = b.ints(&[lengths.len()], lengths).unwrap();
            let lstm = cell.has_cell_state();
            let saved = cell.saved() > 0;
            let fwd = StepForward {
                xg: &xg,
                weights: &w,
                lengths: Some(&lens),
                hs: &hs,
                cs: lstm.then_some(&cs),
                gates: saved.then_some(&gt),
                out: &out,
            };
            b.cell_forward(cell, s, &fwd).unwrap();
            let (dout, dgh, dgx, carry) = (t(dout), t(dg), t(dg), t(carry));
            let bwd = StepBackward {
                weights: &w,
                lengths: Some(&lens),
                hs: &hs,
                cs: lstm.then_some(&cs),
                gates: saved.then_some(&gt),
                dout: &dout,
                dgh: &dgh,
                dgx: (cell == Cell::Gru).then_some(&dgx),
                carry: &carry,
            };
            b.cell_backward(cell, s, &bwd).unwrap();
            [&hs, &cs, &gt, &out, &dgh, &dgx, &carry]
                .iter()
                .map(|x| b.read_f64(x).unwrap())
                .collect()
        }
        let v = [&weights[..], &xg, &states, &gates, &dout, &dg, &carry];
        let expected = run(&cpu(), cell, &s, v, &lengths);
        let actual = run(gpu, cell, &s, v, &lengths);
        let names = ["hs", "cs", "gates", "out", "dgh", "dgx", "carry"];
        for ((name, e), a) in names.iter().zip(&expected).zip(&actual) {
            check(
                &format!("{} step {name} ({})", cell.name(), variant.name()),
                e,
                a,
                Tolerance::new(2e-5, 1e-4),
            );
        }
        // The inference form of the same step: two state slots (t = 1 reads
        // slot 1 and writes slot 0) and no saved gates. Same output as the
        // saving step, on both backends.
        let ring = StepSpec { ring: true, ..s };
        let bh = batch * h;
        // Ring slot 1 holds the state slot 1 of the full buffer; slot 0 is overwritten.
        let ring_states: Vec<f64> = [&states[..bh], &states[bh..2 * bh]].concat();
        fn infer<B: Backend>(
            b: &B,
            cell: Cell,
            s: &StepSpec,
            [weights, xg, states]: [&[f64]; 3],
            out_len: usize,
            lengths: &[i32],
        ) -> Vec<Vec<f64>> {
            let t = |x: &[f64]| b.tensor_f64(&[x.len()], x).unwrap();
            let (w, xg, hs, cs) = (t(weights), t(xg), t(states), t(states));
            let out = b.zeros(&[out_len]).unwrap();
            let lens = b.ints(&[lengths.len()], lengths).unwrap();
            let fwd = StepForward {
                xg: &xg,
                weights: &w,
                lengths: Some(&lens),
                hs: &hs,
                cs: cell.has_cell_state().then_some(&cs),
                gates: None,
                out: &out,
            };
            b.cell_forward(cell, s, &fwd).unwrap();
            [&hs, &cs, &out]
                .iter()
                .map(|x| b.read_f64(x).unwrap())
                .collect()
        }
        let v = [&weights[..], &xg, &ring_states];
        let expected_ring = infer(&cpu(), cell, &ring, v, dout.len(), &lengths);
        let actual_ring = infer(gpu, cell, &ring, v, dout.len(), &lengths);
        let tag = format!("{} inference step ({})", cell.name(), variant.name());
        check(
            &format!("{tag} h"),
            &expected_ring[0][..bh],
            &actual_ring[0][..bh],
            Tolerance::new(2e-5, 1e-4),
        );
        check(
            &format!("{tag} out"),
            &expected_ring[2],
            &actual_ring[2],
            Tolerance::new(2e-5, 1e-4),
        );
        // The slot written is slot 0 of the ring, slot 2 of the full buffer.
        assert_eq!(expected_ring[0][..bh], expected[0][2 * bh..3 * bh], "{tag}");
        assert_eq!(expected_ring[2], expected[3], "{tag}");
        if cell.has_cell_state() {
            assert_eq!(expected_ring[1][..bh], expected[1][2 * bh..3 * bh], "{tag}");
            check(
                &format!("{tag} c"),
                &expected_ring[1][..bh],
                &actual_ring[1][..bh],
                Tolerance::new(2e-5, 1e-4),
            );
        }
    }
}

/// Packed sequences: each row gives the same outputs and final states as the
/// same row run alone with T = its length; outputs past the length are zero.
#[test]
fn lengths_mean_what_packed_sequences_mean() {
    let b = cpu();
    for (ci, cell) in CELLS.into_iter().enumerate() {
        let cfg = RnnConfig::new(cell, 3, 4).layers(2).bidirectional(true);
        let (steps, batch) = (6, 3);
        let lengths = [6, 2, 4];
        let mut rnn = Rnn::new(b.clone(), cfg, 5 + ci as u64).unwrap();
        let x = uniform(70, steps * batch * 3, -1.0, 1.0);
        let out = rnn
            .forward(
                &b.tensor(&[steps, batch, 3], &x).unwrap(),
                None,
                None,
                Some(&lengths),
            )
            .unwrap();
        let (y, hn) = (b.read(&out.output).unwrap(), b.read(&out.hn).unwrap());
        let width = cfg.output_size();
        for (row, &len) in lengths.iter().enumerate() {
            let len = len as usize;
            let xr: Vec<f64> = (0..len)
                .flat_map(|t| x[(t * batch + row) * 3..(t * batch + row + 1) * 3].to_vec())
                .collect();
            let mut alone =
                Rnn::from_params(b.clone(), cfg, &b.read(rnn.params()).unwrap()).unwrap();
            let o = alone
                .forward(&b.tensor(&[len, 1, 3], &xr).unwrap(), None, None, None)
                .unwrap();
            let (ya, hna) = (b.read(&o.output).unwrap(), b.read(&o.hn).unwrap());
            for t in 0..steps {
                let got = &y[(t * batch + row) * width..(t * batch + row + 1) * width];
                if t < len {
                    check(
                        "output",
                        &ya[t * width..(t + 1) * width],
                        got,
                        Tolerance::new(1e-12, 1e-12),
                    );
                } else {
                    assert!(
                        got.iter().all(|&v| v == 0.0),
                        "{}: output past length",
                        cell.name()
                    );
                }
            }
            for sd in 0..4 {
                check(
                    "hn",
                    &hna[sd * 4..(sd + 1) * 4],
                    &hn[(sd * batch + row) * 4..(sd * batch + row + 1) * 4],
                    Tolerance::new(1e-12, 1e-12),
                );
            }
        }
    }
}

#[test]
fn layout_offsets_agree_with_the_layout() {
    for cell in CELLS {
        let cfg = RnnConfig::new(cell, 3, 5).layers(3).bidirectional(true);
        let layout = cfg.layout();
        for l in 0..3 {
            for d in 0..2 {
                let sfx = RnnConfig::suffix(l, d);
                let p = DirParams::of(&layout, l, d).unwrap();
                assert_eq!(
                    layout.get(&format!("weight_ih{sfx}")).unwrap().offset,
                    p.w_ih
                );
                assert_eq!(
                    layout.get(&format!("weight_hh{sfx}")).unwrap().offset,
                    p.w_hh
                );
                assert_eq!(layout.get(&format!("bias_ih{sfx}")).unwrap().offset, p.b_ih);
                assert_eq!(layout.get(&format!("bias_hh{sfx}")).unwrap().offset, p.b_hh);
            }
        }
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let b = cpu();
    let cfg = RnnConfig::new(Cell::Gru, 3, 4).layers(2);
    let mut rnn = Rnn::new(b.clone(), cfg, 1).unwrap();
    let grads = rnn.zeros_like_params().unwrap();
    // A saved forward belongs to the stack that made it.
    let mut other = Rnn::new(b.clone(), cfg, 1).unwrap();
    let (_, foreign) = other
        .forward_train(&b.zeros(&[5, 2, 3]).unwrap(), None, None, None, None)
        .unwrap();
    let err = rnn
        .backward(&foreign, None, None, None, &grads)
        .unwrap_err();
    assert!(err.to_string().contains("another stack"), "{err}");
    let x = b.zeros(&[5, 2, 4]).unwrap();
    let err = rnn.forward(&x, None, None, None).unwrap_err();
    assert!(
        matches!(err, Error::Shape { ref arg, .. } if arg == "input"),
        "{err}"
    );
    let x = b.zeros(&[5, 2, 3]).unwrap();
    let h0 = b.zeros(&[1, 2, 4]).unwrap();
    let err = rnn.forward(&x, Some(&h0), None, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("h0: expected shape [L·D, B, H] = [2, 2, 4]"),
        "{err}"
    );
    let c0 = b.zeros(&[2, 2, 4]).unwrap();
    let err = rnn.forward(&x, None, Some(&c0), None).unwrap_err();
    assert!(err.to_string().contains("only an LSTM"), "{err}");
    let err = rnn.forward(&x, None, None, Some(&[5, 6])).unwrap_err();
    assert!(
        err.to_string().contains("lengths[1] = 6 is outside 1..=5"),
        "{err}"
    );
    let err = rnn.forward(&x, None, None, Some(&[5])).unwrap_err();
    assert!(
        matches!(err, Error::Shape { ref arg, .. } if arg == "lengths"),
        "{err}"
    );
    let err = rnn.forward(&x, None, None, Some(&[0, 1])).unwrap_err();
    assert!(err.to_string().contains("lengths[0] = 0"), "{err}");
    let (_, saved) = rnn.forward_train(&x, None, None, None, None).unwrap();
    let bad = b.zeros(&[5, 2, 3]).unwrap();
    let err = rnn
        .backward(&saved, Some(&bad), None, None, &grads)
        .unwrap_err();
    assert!(err.to_string().contains("grad_output"), "{err}");
    assert!(RnnConfig::new(Cell::Lstm, 0, 4).validate().is_err());
    assert!(Rnn::from_params(b.clone(), cfg, &[0.0; 3]).is_err());
}

/// `bench` reports the chain of dependent step dispatches of a training
/// step: both directions of a layer share each dispatch, so 2·L·T (forward
/// and backward) with one step a dispatch, twice that for the variants that
/// take two dispatches a step, and 2·L·⌈T/64⌉ with the resident kernel,
/// which advances up to 64 steps a dispatch (single-dispatch steps only).
#[test]
fn recurrent_dispatches_follow_the_formula() {
    use rnn_wgpu::bench::{RnnShape, bench_rnn};
    let rb = Variant {
        reset_before: true,
        ..Default::default()
    };
    let proj = Variant {
        proj_size: 3,
        ..Default::default()
    };
    let shapes = [
        (Cell::Lstm, 1, false, 5, Variant::default(), 1),
        (Cell::Gru, 2, true, 3, Variant::default(), 1),
        (
            Cell::Rnn(Nonlinearity::Tanh),
            3,
            false,
            4,
            Variant::default(),
            1,
        ),
        (Cell::Lstm, 1, true, 130, Variant::default(), 1),
        (Cell::Gru, 1, true, 4, rb, 2),
        (Cell::Lstm, 2, false, 3, proj, 2),
    ];
    for kernel in [StepKernel::Tiled, StepKernel::Resident] {
        // A context of its own: the shared one counts the other tests' work too.
        let Some((ctx, gpu)) = common::own_gpu(|o| o.step_kernel = Some(kernel)) else {
            return;
        };
        for (cell, layers, bidirectional, seq, variant, per_step) in shapes {
            let shape = RnnShape {
                cell,
                input: 4,
                hidden: 6,
                batch: 2,
                seq,
                layers,
                bidirectional,
                variant,
                skip: Skip::None,
            };
            let r = bench_rnn(&gpu, Some(&ctx), "", &shape, 1).unwrap();
            // A unidirectional stack of one-dispatch steps runs as a
            // wavefront with single-step kernels: T + L - 1 calls a pass.
            let want = match (kernel, per_step) {
                (StepKernel::Resident, 1) => 2 * layers * seq.div_ceil(StepKernel::RESIDENT_STEPS),
                (_, 1) if !bidirectional && layers > 1 => 2 * (seq + layers - 1),
                _ => 2 * layers * seq * per_step,
            } as u64;
            assert_eq!(r.recurrent_dispatches, want, "{} {shape:?}", kernel.name());
            assert!(r.dispatches_per_step > r.recurrent_dispatches, "{shape:?}");
        }
    }
}

/// A step kernel forced on a backend applies to that backend and its
/// clones, not to others on the same context; the resident kernel computes
/// bitwise what the tiled one does.
#[test]
fn a_forced_step_kernel_belongs_to_its_backend() {
    let gpu = gpu_or_skip!();
    let v = Variant::default();
    let tiled = gpu.clone().with_step_kernel(StepKernel::Tiled);
    let resident = gpu.clone().with_step_kernel(StepKernel::Resident);
    assert_eq!(tiled.steps_per_call(&v, 4, 8), 1);
    assert!(resident.steps_per_call(&v, 4, 8) > 1);
    assert_eq!(resident.clone().step_kernel(4, 8), StepKernel::Resident);
    assert_eq!(gpu.step_kernel(4, 8), gpu.ctx().step_kernel(4, 8));
    let case = RnnCase::new(RnnConfig::new(Cell::Lstm, 3, 5).layers(2), 5, 3, 77).with_states();
    let data = case.data();
    let run =
        |b: &GpuBackend| run_case_ordered(b, &case.config, &data, true, StepOrder::Layers).unwrap();
    assert_eq!(run(&tiled), run(&resident));
}

/// Truncated BPTT's restart state (`state_after`) from a wavefront's forward
/// is the layer order's, at the start, in the middle and at the end.
#[test]
fn a_wavefront_restarts_truncated_bptt_like_the_layers() {
    let cpu = cpu();
    for cell in CELLS {
        let cfg = RnnConfig::new(cell, 3, 5).layers(3);
        let (steps, batch) = (6, 2);
        let x = cpu
            .tensor_f64(
                &[steps, batch, 3],
                &uniform(7, steps * batch * 3, -1.0, 1.0),
            )
            .unwrap();
        let states = |order: StepOrder| {
            let mut rnn = Rnn::new(cpu.clone(), cfg, 11).unwrap();
            rnn.set_step_order(order);
            let (_, saved) = rnn.forward_train(&x, None, None, None, None).unwrap();
            [0, 2, steps]
                .into_iter()
                .flat_map(|k| {
                    let s = rnn.state_after(&saved, k).unwrap();
                    let mut v = cpu.read_f64(&s.h).unwrap();
                    v.extend(s.c.map(|c| cpu.read_f64(&c).unwrap()).unwrap_or_default());
                    v
                })
                .collect::<Vec<f64>>()
        };
        let (layers, wave) = (states(StepOrder::Layers), states(StepOrder::Wavefront));
        assert!(layers.iter().any(|&v| v != 0.0));
        check(
            &format!("{} state_after", cell.name()),
            &layers,
            &wave,
            Tolerance::new(1e-12, 1e-10),
        );
    }
}

/// A stack whose whole-stack wavefront buffers exceed the adapter's largest
/// binding runs layer by layer under `Auto` (each layer's buffers fit), and
/// a forced wavefront says why it cannot run.
#[test]
fn a_wavefront_too_big_for_the_adapter_falls_back_to_layers() {
    let _ = gpu_or_skip!();
    // L = 4, T = 40, B = 8, LSTM H = 16: [L, T + 1, B, 4H] is 335 872 bytes,
    // one layer's at most about 84 KiB; the binding limit 128 KiB.
    let Some((_, gpu)) = common::own_gpu(|o| {
        o.step_kernel = Some(StepKernel::Tiled);
        o.max_storage_binding = Some(128 << 10);
    }) else {
        return;
    };
    let case = RnnCase::new(RnnConfig::new(Cell::Lstm, 3, 16).layers(4), 40, 8, 5);
    let data = case.data();
    let rnn = Rnn::new(gpu.clone(), case.config, 1).unwrap();
    assert!(!rnn.runs_wavefront(40, 8, false).unwrap());
    assert!(rnn.runs_wavefront(4, 8, false).unwrap());
    let expected = run_case(&cpu(), &case.config, &data, true).unwrap();
    let actual = run_case(&gpu, &case.config, &data, true).unwrap();
    results_match(&case.describe(), &expected, &actual);
    let e = run_case_ordered(&gpu, &case.config, &data, true, StepOrder::Wavefront).unwrap_err();
    assert!(e.to_string().contains("whole stack"), "{e}");
}
