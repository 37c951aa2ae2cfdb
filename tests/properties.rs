//! Property-based tests: random shapes and values for every kernel and every
//! cell, GPU against the CPU reference (f64) within tolerance. When a property
//! fails, proptest shrinks the case to a minimal failing shape.

mod common;

use std::sync::OnceLock;

use proptest::prelude::*;
use rnn_wgpu::backend::{Backend, CpuBackend, GpuBackend, XentBuffers, api};
use rnn_wgpu::gpu::StepKernel;
use rnn_wgpu::nn::RnnConfig;
use rnn_wgpu::nn::case::{RnnCase, run_case};
use rnn_wgpu::ops::activation::Activation;
use rnn_wgpu::ops::cell::Cell;
use rnn_wgpu::ops::matmul::{Gemm, GemmKernel};
use rnn_wgpu::ops::reduce::ReduceOp;
use rnn_wgpu::ops::softmax_xent::{IGNORE_INDEX, Rows};
use rnn_wgpu::parity::{Tolerance, compare, uniform, uniform_i32};

fn gpu() -> Option<GpuBackend> {
    common::gpu()
}

/// A context with the tiled recurrent product forced (shapes this small get
/// the split one by default).
fn tiled_steps_gpu() -> Option<GpuBackend> {
    static GPU: OnceLock<Option<GpuBackend>> = OnceLock::new();
    GPU.get_or_init(|| common::own_gpu(|o| o.step_kernel = Some(StepKernel::Tiled)).map(|(_, g)| g))
        .clone()
}

fn cpu() -> CpuBackend<f64> {
    CpuBackend::new()
}

fn close(name: &str, e: &[f64], a: &[f64], tol: Tolerance) -> Result<(), TestCaseError> {
    compare(name, e, a, tol)
        .map(|_| ())
        .map_err(|m| TestCaseError::fail(m.to_string()))
}

fn gemm_run<B: Backend>(
    b: &B,
    g: &Gemm,
    a: &[f64],
    w: &[f64],
    bias: &[f64],
    c_len: usize,
) -> Vec<f64> {
    let c = b.zeros(&[c_len]).unwrap();
    let bias_t = b.tensor_f64(&[bias.len()], bias).unwrap();
    b.gemm(
        g,
        &b.tensor_f64(&[a.len()], a).unwrap(),
        &b.tensor_f64(&[w.len()], w).unwrap(),
        g.bias.then_some(&bias_t),
        &c,
    )
    .unwrap();
    b.read_f64(&c).unwrap()
}

fn act_run<B: Backend>(b: &B, act: Activation, x: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = x.len();
    let (xt, dyt) = (
        b.tensor_f64(&[n], x).unwrap(),
        b.tensor_f64(&[n], dy).unwrap(),
    );
    let y = b.read_f64(&api::activate(b, act, &xt).unwrap()).unwrap();
    let dx = b
        .read_f64(&api::activate_backward(b, act, &xt, &dyt).unwrap())
        .unwrap();
    (y, dx)
}

const CELLS: [Cell; 4] = Cell::ALL;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn matmul(m in 1usize..200, n in 1usize..200, k in 1usize..130, ta: bool, tb: bool, bias: bool,
              kernel in 0usize..3, seed: u64) {
        let Some(gpu) = gpu() else { return Ok(()) };
        let gpu = gpu.with_gemm_kernel(GemmKernel::FORCED[kernel]);
        let mut g = Gemm::nn(m, n, k);
        g.trans_a = ta;
        g.trans_b = tb;
        g.lda = if ta { m } else { k };
        g.ldb = if tb { k } else { n };
        if bias {
            g = g.with_bias(0);
        }
        let a = uniform(seed, m * k, -1.0, 1.0);
        let w = uniform(seed ^ 1, k * n, -1.0, 1.0);
        let bv = uniform(seed ^ 2, n, -1.0, 1.0);
        let tol = Tolerance::new(4e-6 * (k as f64).sqrt() + 1e-6, 1e-5);
        let name = format!("matmul {:?}", GemmKernel::FORCED[kernel]);
        close(&name, &gemm_run(&cpu(), &g, &a, &w, &bv, m * n), &gemm_run(&gpu, &g, &a, &w, &bv, m * n), tol)?;
    }

    #[test]
    fn activations(values in prop::collection::vec(-1e4f64..1e4, 1..400), which in 0usize..7, scale in 0.001f64..10.0) {
        let Some(gpu) = gpu() else { return Ok(()) };
        let act = Activation::ALL[which];
        // Values rounded to f32, as the GPU sees them; both near 0 and saturating.
        let x: Vec<f64> = values.iter().map(|v| (v * scale / 1e3) as f32 as f64).collect();
        let n = x.len();
        let dy = uniform(n as u64, n, -1.0, 1.0);
        let (y_ref, dx_ref) = act_run(&cpu(), act, &x, &dy);
        let (y, dx) = act_run(&gpu, act, &x, &dy);
        prop_assert!(y.iter().chain(&dx).all(|v| v.is_finite()));
        close(&format!("{act:?}"), &y_ref, &y, Tolerance::new(2e-6, 2e-6))?;
        close(&format!("{act:?}'"), &dx_ref, &dx, Tolerance::new(1e-5, 1e-5))?;
    }

    #[test]
    fn cross_entropy(rows in 1usize..50, cols in 1usize..300, spread in 0.1f64..50.0, seed: u64) {
        let Some(gpu) = gpu() else { return Ok(()) };
        let x = uniform(seed, rows * cols, -spread, spread);
        let mut t = uniform_i32(seed ^ 3, rows, 0, cols as i32);
        if rows > 1 {
            t[rows / 2] = IGNORE_INDEX;
        }
        fn run<B: Backend>(b: &B, rows: usize, cols: usize, x: &[f64], t: &[i32]) -> (Vec<f64>, Vec<f64>) {
            let out = XentBuffers::new(b, rows).unwrap();
            let dx = b.zeros(&[rows, cols]).unwrap();
            b.xent(Rows { rows, cols }, &b.tensor_f64(&[rows, cols], x).unwrap(), &b.ints(&[rows], t).unwrap(),
                   IGNORE_INDEX, 1.0, &out, Some(&dx)).unwrap();
            let mut v = b.read_f64(&out.summary).unwrap();
            v.extend(b.read_f64(&out.loss).unwrap());
            (v, b.read_f64(&dx).unwrap())
        }
        let (s_ref, d_ref) = run(&cpu(), rows, cols, &x, &t);
        let (s, d) = run(&gpu, rows, cols, &x, &t);
        close("loss", &s_ref, &s, Tolerance::new(4e-6 * spread, 1e-5))?;
        close("dlogits", &d_ref, &d, Tolerance::new(1e-6, 1e-4))?;
    }

    #[test]
    fn reductions(n in 1usize..20_000, seed: u64) {
        let Some(gpu) = gpu() else { return Ok(()) };
        let x = uniform(seed, n, -1.0, 1.0);
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::SumSquares] {
            let e = api::reduce(&cpu(), op, &cpu().tensor_f64(&[n], &x).unwrap()).unwrap();
            let a = api::reduce(&gpu, op, &gpu.tensor_f64(&[n], &x).unwrap()).unwrap();
            close(&format!("{op:?}"), &[e], &[a], Tolerance::new(1e-6 * (n as f64).sqrt(), 1e-5))?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn cells(which in 0usize..4, steps in 1usize..6, batch in 1usize..11, input in 1usize..7,
             hidden in 1usize..40, layers in 1usize..3, bidirectional: bool, states: bool,
             lengths in prop::collection::vec(1i32..6, 10), tiled: bool, seed: u64) {
        let Some(gpu) = (if tiled { tiled_steps_gpu() } else { gpu() }) else { return Ok(()) };
        let cfg = RnnConfig::new(CELLS[which], input, hidden).layers(layers).bidirectional(bidirectional);
        let mut case = RnnCase::new(cfg, steps, batch, seed);
        if states {
            case = case.with_states();
        }
        if seed % 2 == 0 {
            case = case.with_lengths(lengths[..batch].iter().map(|&l| l.min(steps as i32)).collect());
        }
        let data = case.data();
        let e = run_case(&cpu(), &case.config, &data, true).unwrap();
        let a = run_case(&gpu, &case.config, &data, true).unwrap();
        let name = format!("{} (tiled steps: {tiled})", case.describe());
        close(&format!("{name} values"), &e.values(), &a.values(), Tolerance::new(2e-5, 1e-4))?;
        close(&format!("{name} gradients"), &e.gradients(), &a.gradients(), Tolerance::new(1e-4, 1e-3))?;
    }
}
