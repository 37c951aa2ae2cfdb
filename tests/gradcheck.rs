//! Gradient checks: every backward of the kernel layer against central finite
//! differences on the CPU path in f64.

use rnn_wgpu::backend::{Backend, CpuBackend, XentBuffers, api};
use rnn_wgpu::gradcheck::GradCheck;
use rnn_wgpu::ops::activation::Activation;
use rnn_wgpu::ops::matmul::Gemm;
use rnn_wgpu::ops::softmax_xent::{IGNORE_INDEX, Rows};
use rnn_wgpu::parity::{uniform, uniform_i32};

fn cpu() -> CpuBackend<f64> {
    CpuBackend::new()
}

fn ok<T>(r: Result<T, Box<rnn_wgpu::parity::Mismatch>>) -> T {
    r.unwrap_or_else(|m| panic!("{m}"))
}

#[test]
fn activation_derivatives_match_finite_differences() {
    let mut x = uniform(1, 200, -6.0, 6.0);
    x.extend([0.3, -0.3, 1e-3, -1e-3, 0.7, -0.7, 10.0, -10.0]);
    for act in Activation::ALL {
        // ReLU-like kinks at 0 have no derivative; keep the points away from them.
        let pts: Vec<f64> = x.iter().copied().filter(|v| v.abs() > 1e-4).collect();
        for v in pts {
            let mut f = |p: &[f64]| act.apply(p[0]);
            let analytic = [act.derivative(v)];
            ok(GradCheck::default().check(
                &format!("{act:?} at {v}"),
                &mut f,
                &[v],
                &analytic,
                None,
            ));
        }
    }
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let b = cpu();
    let (rows, cols) = (7, 5);
    let logits = uniform(2, rows * cols, -3.0, 3.0);
    let mut targets = uniform_i32(3, rows, 0, cols as i32);
    targets[2] = IGNORE_INDEX;
    let shape = Rows { rows, cols };
    let t = b.ints(&[rows], &targets).unwrap();
    let out = XentBuffers::new(&b, rows).unwrap();
    let scale = 0.7;
    let mut mean_loss = |x: &[f64]| {
        let xt = b.tensor_f64(&[rows, cols], x).unwrap();
        b.xent(shape, &xt, &t, IGNORE_INDEX, scale, &out, None)
            .unwrap();
        scale * b.read_summary(&out).unwrap().mean
    };
    let x = b.tensor_f64(&[rows, cols], &logits).unwrap();
    let dx = b.zeros(&[rows, cols]).unwrap();
    b.xent(shape, &x, &t, IGNORE_INDEX, scale, &out, Some(&dx))
        .unwrap();
    let analytic = b.read_f64(&dx).unwrap();
    ok(GradCheck::default().check(
        "cross-entropy dlogits",
        &mut mean_loss,
        &logits,
        &analytic,
        None,
    ));
    // Ignored row: exactly zero gradient.
    assert!(analytic[2 * cols..3 * cols].iter().all(|&g| g == 0.0));
}

/// The matmul layouts the backward passes use (NN for dX = dY·W, TN for
/// dW = dYᵀ·X) really are the gradients of the forward layout (NT: Y = X·Wᵀ + b).
#[test]
fn linear_layer_gradients_from_matmul_layouts() {
    let b = cpu();
    let (m, n, k) = (4, 3, 5);
    let x = uniform(4, m * k, -1.0, 1.0);
    let w = uniform(5, n * k, -1.0, 1.0);
    let bias = uniform(6, n, -1.0, 1.0);
    let dy = uniform(7, m * n, -1.0, 1.0);
    // L = Σ dy ⊙ (X·Wᵀ + b)
    let loss = |x: &[f64], w: &[f64], bias: &[f64]| {
        let y = api::matmul(
            &b,
            &b.tensor_f64(&[m, k], x).unwrap(),
            &b.tensor_f64(&[n, k], w).unwrap(),
            false,
            true,
            Some(&b.tensor_f64(&[n], bias).unwrap()),
        )
        .unwrap();
        b.read_f64(&y)
            .unwrap()
            .iter()
            .zip(&dy)
            .map(|(a, c)| a * c)
            .sum::<f64>()
    };
    let dyt = b.tensor_f64(&[m, n], &dy).unwrap();
    let dx = api::matmul(
        &b,
        &dyt,
        &b.tensor_f64(&[n, k], &w).unwrap(),
        false,
        false,
        None,
    )
    .unwrap();
    let dw = api::matmul(
        &b,
        &dyt,
        &b.tensor_f64(&[m, k], &x).unwrap(),
        true,
        false,
        None,
    )
    .unwrap();
    let db = b.zeros(&[n]).unwrap();
    b.sum_cols(&rnn_wgpu::ops::reduce::ColSum::new(m, n), &dyt, &db)
        .unwrap();
    let gc = GradCheck::default();
    ok(gc.check(
        "dX",
        &mut |v| loss(v, &w, &bias),
        &x,
        &b.read_f64(&dx).unwrap(),
        None,
    ));
    ok(gc.check(
        "dW",
        &mut |v| loss(&x, v, &bias),
        &w,
        &b.read_f64(&dw).unwrap(),
        None,
    ));
    ok(gc.check(
        "db",
        &mut |v| loss(&x, &w, v),
        &bias,
        &b.read_f64(&db).unwrap(),
        None,
    ));
    // Accumulating a second product adds exactly.
    let acc = b.tensor_f64(&[m, k], &b.read_f64(&dx).unwrap()).unwrap();
    let g = Gemm::nn(m, k, n).accumulating(true);
    b.gemm(&g, &dyt, &b.tensor_f64(&[n, k], &w).unwrap(), None, &acc)
        .unwrap();
    let doubled = b.read_f64(&acc).unwrap();
    for (d, s) in doubled.iter().zip(b.read_f64(&dx).unwrap()) {
        assert!((d - 2.0 * s).abs() < 1e-12);
    }
}
