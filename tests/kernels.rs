//! Kernel parity: every GPU kernel against its CPU twin (in f64) on named edge
//! shapes and seeded random shapes, plus stability and determinism checks.

mod common;

use rnn_wgpu::backend::{Backend, CpuBackend, GpuBackend, XentBuffers, api};
use rnn_wgpu::ops::activation::{Activation, Span};
use rnn_wgpu::ops::matmul::{Gemm, GemmKernel};
use rnn_wgpu::ops::reduce::{ColDot, ColSum, ReduceOp};
use rnn_wgpu::ops::softmax_xent::{IGNORE_INDEX, Rows, XentSummary};
use rnn_wgpu::parity::{Tolerance, compare, rng, uniform, uniform_i32};
use rnn_wgpu::{Error, Real};

use rand::RngExt;

fn cpu() -> CpuBackend<f64> {
    CpuBackend::new()
}

fn check(name: &str, expected: &[f64], actual: &[f64], tol: Tolerance) {
    if let Err(m) = compare(name, expected, actual, tol) {
        panic!("{m}");
    }
}

/// Runs one Gemm on the CPU (f64) and on the GPU with every kernel and compares.
fn gemm_case(
    gpu: &GpuBackend,
    name: &str,
    g: Gemm,
    a_len: usize,
    b_len: usize,
    c_len: usize,
    seed: u64,
) {
    gemm_case_with(
        gpu,
        &GemmKernel::FORCED,
        name,
        g,
        [a_len, b_len, c_len],
        seed,
    );
}

/// [`gemm_case`] with the given kernels; `lens` are the lengths of A, B and C.
fn gemm_case_with(
    gpu: &GpuBackend,
    kernels: &[GemmKernel],
    name: &str,
    g: Gemm,
    lens: [usize; 3],
    seed: u64,
) {
    let [a_len, b_len, c_len] = lens;
    let a = uniform(seed, a_len, -1.0, 1.0);
    let b = uniform(seed + 1, b_len, -1.0, 1.0);
    let bias = uniform(seed + 2, g.bias_off + g.n, -1.0, 1.0);
    let c0 = uniform(seed + 3, c_len, -1.0, 1.0);
    let cpu = cpu();
    let c_ref = cpu.tensor_f64(&[c_len], &c0).unwrap();
    cpu.gemm(
        &g,
        &cpu.tensor_f64(&[a_len], &a).unwrap(),
        &cpu.tensor_f64(&[b_len], &b).unwrap(),
        g.bias
            .then(|| cpu.tensor_f64(&[bias.len()], &bias).unwrap())
            .as_ref(),
        &c_ref,
    )
    .unwrap();
    let expected = cpu.read_f64(&c_ref).unwrap();
    // Error of an f32 dot product grows with sqrt(K) in practice.
    let tol = Tolerance::new(4e-6 * (g.k as f64).sqrt() + 1e-6, 1e-5);
    for &kernel in kernels {
        let gpu = gpu.clone().with_gemm_kernel(kernel);
        let c = gpu.tensor_f64(&[c_len], &c0).unwrap();
        gpu.gemm(
            &g,
            &gpu.tensor_f64(&[a_len], &a).unwrap(),
            &gpu.tensor_f64(&[b_len], &b).unwrap(),
            g.bias
                .then(|| gpu.tensor_f64(&[bias.len()], &bias).unwrap())
                .as_ref(),
            &c,
        )
        .unwrap();
        check(
            &format!("matmul {name} ({kernel:?})"),
            &expected,
            &gpu.read_f64(&c).unwrap(),
            tol,
        );
    }
}

fn contiguous(m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Gemm {
    let mut g = Gemm::nn(m, n, k);
    g.trans_a = ta;
    g.trans_b = tb;
    g.lda = if ta { m } else { k };
    g.ldb = if tb { k } else { n };
    g
}

const LAYOUTS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// Split K: each layout and tiled kernel, K split into 1, 2, 3 and 7 ranges
/// (ragged last range), more ranges than K, and the automatic plan on a
/// weight-gradient shape (few output tiles, long K); with offsets, strides,
/// bias and accumulation; against the CPU, and bitwise the same run to run.
#[test]
fn split_k_matches_cpu_and_repeats_bitwise() {
    use rnn_wgpu::ops::matmul::SplitK;
    let gpu = gpu_or_skip!();
    let splits = [
        SplitK::Into(1),
        SplitK::Into(2),
        SplitK::Into(3),
        SplitK::Into(7),
        SplitK::Auto,
    ];
    for (ta, tb) in LAYOUTS {
        for (m, n, k) in [(37, 70, 301), (3, 5, 2), (64, 48, 1300)] {
            let mut g = contiguous(m, n, k, ta, tb)
                .offsets(3, 5, 7)
                .accumulating(true);
            g.ldc = n + 2;
            let g = g.with_bias(4);
            let lens = [3 + m * k, 5 + k * n, 7 + m * (n + 2)];
            for split in splits {
                let gpu = gpu.clone().with_split_k(split);
                let name = format!("{m}x{n}x{k} ta={ta} tb={tb} {split:?}");
                gemm_case_with(
                    &gpu,
                    &[GemmKernel::Tiled, GemmKernel::Large],
                    &name,
                    g,
                    lens,
                    21,
                );
            }
        }
    }
    // The same inputs twice: bitwise the same result.
    let g = Gemm::tn(48, 40, 2000);
    let a = gpu
        .tensor_f64(&[2000 * 48], &uniform(5, 2000 * 48, -1.0, 1.0))
        .unwrap();
    let b = gpu
        .tensor_f64(&[2000 * 40], &uniform(6, 2000 * 40, -1.0, 1.0))
        .unwrap();
    let run = || {
        let c = gpu.zeros(&[48 * 40]).unwrap();
        gpu.gemm(&g, &a, &b, None, &c).unwrap();
        gpu.read_f64(&c)
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(SplitK::Auto.plan(&g, GemmKernel::Tiled), (7, 286));
    assert_eq!(run(), run(), "a split product repeats bitwise");
}

#[test]
fn matmul_named_edge_shapes() {
    let gpu = gpu_or_skip!();
    let shapes = [
        ("1x1x1", 1, 1, 1),
        ("k_much_larger_than_m_n", 2, 3, 1000),
        ("shapes_smaller_than_tile", 5, 7, 3),
        ("not_multiple_of_tile", 65, 67, 33),
        ("exact_tile", 64, 64, 16),
        ("exact_large_tile", 128, 128, 8),
        ("not_multiple_of_large_tile", 130, 131, 21),
        ("single_row", 1, 130, 17),
        ("single_column", 130, 1, 17),
    ];
    for (i, (name, m, n, k)) in shapes.into_iter().enumerate() {
        for (ta, tb) in LAYOUTS {
            let g = contiguous(m, n, k, ta, tb);
            gemm_case(
                &gpu,
                &format!("{name} ta={ta} tb={tb}"),
                g,
                m * k,
                k * n,
                m * n,
                i as u64 * 10,
            );
        }
    }
}

#[test]
fn matmul_bias_accumulate_offsets_strides() {
    let gpu = gpu_or_skip!();
    for (ta, tb) in LAYOUTS {
        let mut g = contiguous(9, 70, 13, ta, tb)
            .with_bias(3)
            .accumulating(true);
        g.lda += 2;
        g.ldb += 1;
        g.ldc = 75;
        g = g.offsets(5, 7, 11);
        let a_len = g.a_off + if ta { 13 * g.lda } else { 9 * g.lda };
        let b_len = g.b_off + if tb { 70 * g.ldb } else { 13 * g.ldb };
        let c_len = g.c_off + 9 * g.ldc;
        gemm_case(
            &gpu,
            &format!("strided ta={ta} tb={tb}"),
            g,
            a_len,
            b_len,
            c_len,
            99,
        );
    }
}

#[test]
fn matmul_random_shapes() {
    let gpu = gpu_or_skip!();
    let mut r = rng(2024);
    for case in 0..12 {
        let (m, n, k) = (
            r.random_range(1..200),
            r.random_range(1..200),
            r.random_range(1..120),
        );
        let (ta, tb) = LAYOUTS[case % 4];
        let g = contiguous(m, n, k, ta, tb).with_bias(0);
        gemm_case(
            &gpu,
            &format!("random #{case} {m}x{n}x{k}"),
            g,
            m * k,
            k * n,
            m * n,
            500 + case as u64,
        );
    }
}

#[test]
fn matmul_rejects_empty_and_out_of_bounds() {
    let gpu = gpu_or_skip!();
    let a = gpu.zeros(&[4]).unwrap();
    let err = gpu.gemm(&Gemm::nn(0, 2, 2), &a, &a, None, &a).unwrap_err();
    assert!(err.to_string().contains("matmul m"), "{err}");
    let err = gpu.gemm(&Gemm::nn(2, 2, 3), &a, &a, None, &a).unwrap_err();
    assert!(err.to_string().contains("matmul A"), "{err}");
    // The shape-checked API names the argument and the expected shape.
    let x = gpu.zeros(&[2, 3]).unwrap();
    let w = gpu.zeros(&[4, 5]).unwrap();
    let err = api::matmul(&gpu, &x, &w, false, false, None).unwrap_err();
    assert!(
        matches!(err, Error::Shape { ref arg, .. } if arg == "b"),
        "{err}"
    );
    let empty = gpu.zeros(&[0, 3]).unwrap();
    assert!(api::matmul(&gpu, &empty, &x, false, true, None).is_err());
}

fn special_inputs() -> Vec<f64> {
    let mut x = uniform(5, 300, -6.0, 6.0);
    x.extend([0.0, -0.0, 1e-7, -1e-7, 0.5, -0.5, 0.625, -0.625, 3.0, -3.0]);
    x.extend([
        100.0, -100.0, 1e4, -1e4, 20.0, -20.0, 15.0, -15.0, 88.0, -88.0,
    ]);
    x
}

#[test]
fn activations_forward_and_backward_match_cpu() {
    let gpu = gpu_or_skip!();
    let cpu = cpu();
    let x = special_inputs();
    let dy = uniform(6, x.len(), -2.0, 2.0);
    let n = x.len();
    for act in Activation::ALL {
        let xc = cpu.tensor_f64(&[n], &x).unwrap();
        let dyc = cpu.tensor_f64(&[n], &dy).unwrap();
        let y_ref = cpu
            .read_f64(&api::activate(&cpu, act, &xc).unwrap())
            .unwrap();
        let dx_ref = cpu
            .read_f64(&api::activate_backward(&cpu, act, &xc, &dyc).unwrap())
            .unwrap();
        // The GPU sees x rounded to f32; the reference must too.
        let x32: Vec<f64> = x.iter().map(|&v| v as f32 as f64).collect();
        let xc32 = cpu.tensor_f64(&[n], &x32).unwrap();
        let y_ref32 = cpu
            .read_f64(&api::activate(&cpu, act, &xc32).unwrap())
            .unwrap();
        assert!(
            y_ref.iter().chain(&dx_ref).all(|v| v.is_finite()),
            "{act:?}: reference not finite"
        );

        let xg = gpu.tensor_f64(&[n], &x).unwrap();
        let dyg = gpu.tensor_f64(&[n], &dy).unwrap();
        let y = gpu
            .read_f64(&api::activate(&gpu, act, &xg).unwrap())
            .unwrap();
        let dx = gpu
            .read_f64(&api::activate_backward(&gpu, act, &xg, &dyg).unwrap())
            .unwrap();
        assert!(
            y.iter().chain(&dx).all(|v| v.is_finite()),
            "{act:?}: GPU produced non-finite values"
        );
        check(
            &format!("{act:?} forward"),
            &y_ref32,
            &y,
            Tolerance::new(2e-6, 2e-6),
        );
        check(
            &format!("{act:?} backward"),
            &dx_ref,
            &dx,
            Tolerance::new(1e-5, 1e-5),
        );
    }
}

#[test]
fn activation_backward_accumulates_and_respects_offsets() {
    let gpu = gpu_or_skip!();
    let cpu = cpu();
    let x = uniform(1, 50, -3.0, 3.0);
    let dy = uniform(2, 50, -1.0, 1.0);
    let dx0 = uniform(3, 60, -1.0, 1.0);
    let span = Span {
        n: 30,
        x_off: 5,
        out_off: 20,
        dy_off: 10,
    };
    let act = Activation::GeluTanh;
    let expected = {
        let x = cpu.tensor_f64(&[50], &x).unwrap();
        let dy = cpu.tensor_f64(&[50], &dy).unwrap();
        let dx = cpu.tensor_f64(&[60], &dx0).unwrap();
        cpu.activation_backward(act, span, &x, &dy, &dx, true)
            .unwrap();
        cpu.read_f64(&dx).unwrap()
    };
    let (xg, dyg, dxg) = (
        gpu.tensor_f64(&[50], &x).unwrap(),
        gpu.tensor_f64(&[50], &dy).unwrap(),
        gpu.tensor_f64(&[60], &dx0).unwrap(),
    );
    gpu.activation_backward(act, span, &xg, &dyg, &dxg, true)
        .unwrap();
    check(
        "accumulate with offsets",
        &expected,
        &gpu.read_f64(&dxg).unwrap(),
        Tolerance::F32,
    );
    // Untouched elements stay exactly as they were.
    let got = gpu.read_f64(&dxg).unwrap();
    for i in (0..20).chain(50..60) {
        assert_eq!(got[i], dx0[i] as f32 as f64, "element {i} changed");
    }
}

/// Cross-entropy on one backend: summary, row losses, dlogits.
fn run_xent<B: Backend>(
    b: &B,
    rows: usize,
    cols: usize,
    logits: &[f64],
    targets: &[i32],
) -> (XentSummary, Vec<f64>, Vec<f64>) {
    let x = b.tensor_f64(&[rows, cols], logits).unwrap();
    let t = b.ints(&[rows], targets).unwrap();
    let out = XentBuffers::new(b, rows).unwrap();
    let dx = b.zeros(&[rows, cols]).unwrap();
    b.xent(
        Rows { rows, cols },
        &x,
        &t,
        IGNORE_INDEX,
        1.0,
        &out,
        Some(&dx),
    )
    .unwrap();
    (
        b.read_summary(&out).unwrap(),
        b.read_f64(&out.loss).unwrap(),
        b.read_f64(&dx).unwrap(),
    )
}

fn xent_case(
    gpu: &GpuBackend,
    name: &str,
    rows: usize,
    cols: usize,
    logits: &[f64],
    targets: &[i32],
) {
    let (s_ref, loss_ref, dx_ref) = run_xent(&cpu(), rows, cols, logits, targets);
    let (s, loss, dx) = run_xent(gpu, rows, cols, logits, targets);
    assert_eq!(s.count, s_ref.count, "{name}: valid rows");
    assert_eq!(s.invalid, s_ref.invalid, "{name}: invalid targets");
    assert_eq!(s.correct, s_ref.correct, "{name}: correct predictions");
    let scale = logits.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    let tol = Tolerance::new(2e-6 * scale, 1e-5);
    check(&format!("{name} mean loss"), &[s_ref.mean], &[s.mean], tol);
    check(&format!("{name} row losses"), &loss_ref, &loss, tol);
    check(
        &format!("{name} dlogits"),
        &dx_ref,
        &dx,
        Tolerance::new(1e-6, 1e-4),
    );
}

#[test]
fn cross_entropy_named_shapes() {
    let gpu = gpu_or_skip!();
    let cases: [(&str, usize, usize); 5] = [
        ("1x1", 1, 1),
        ("one_row_many_classes", 1, 1000),
        ("few_classes", 37, 5),
        ("not_multiple_of_workgroup", 30, 257),
        ("many_rows", 300, 3),
    ];
    for (i, (name, rows, cols)) in cases.into_iter().enumerate() {
        let logits = uniform(40 + i as u64, rows * cols, -4.0, 4.0);
        let mut targets = uniform_i32(50 + i as u64, rows, 0, cols as i32);
        if rows > 2 {
            targets[1] = IGNORE_INDEX;
        }
        xent_case(&gpu, name, rows, cols, &logits, &targets);
    }
}

#[test]
fn cross_entropy_random_shapes() {
    let gpu = gpu_or_skip!();
    let mut r = rng(77);
    for case in 0..6 {
        let (rows, cols) = (r.random_range(1..60), r.random_range(1..300));
        let logits = uniform(100 + case, rows * cols, -8.0, 8.0);
        let targets = uniform_i32(200 + case, rows, 0, cols as i32);
        xent_case(
            &gpu,
            &format!("random #{case} {rows}x{cols}"),
            rows,
            cols,
            &logits,
            &targets,
        );
    }
}

#[test]
fn cross_entropy_is_stable_for_huge_and_equal_logits() {
    let gpu = gpu_or_skip!();
    let (rows, cols) = (4, 6);
    let mut logits = vec![0.0; rows * cols];
    for (i, v) in logits.iter_mut().enumerate() {
        *v = match i / cols {
            0 => {
                if i % 2 == 0 {
                    1e4
                } else {
                    -1e4
                }
            }
            1 => 1e4,
            2 => -1e4,
            _ => 3.0,
        };
    }
    let targets = [1, 2, 3, 4];
    xent_case(&gpu, "huge logits", rows, cols, &logits, &targets);
    // Equal logits: the loss is ln V exactly and the softmax is uniform.
    let x = gpu.tensor_f64(&[rows, cols], &logits).unwrap();
    let t = gpu.ints(&[rows], &targets).unwrap();
    let (s, _) = api::cross_entropy(&gpu, &x, &t, IGNORE_INDEX).unwrap();
    // Row 0: three columns at 1e4, the target at -1e4; rows 1-3: equal logits.
    let expected = (2e4 + 3f64.ln() + 6f64.ln() * 3.0) / 4.0;
    assert!(
        (s.mean - expected).abs() < 1e-2,
        "mean {} vs {expected}",
        s.mean
    );
    let sm = gpu.read_f64(&api::softmax(&gpu, &x).unwrap()).unwrap();
    for (i, v) in sm.iter().enumerate().skip(cols) {
        assert!((v - 1.0 / 6.0).abs() < 1e-6, "softmax[{i}] = {v}");
    }
}

#[test]
fn cross_entropy_ignored_and_invalid_targets() {
    let gpu = gpu_or_skip!();
    let logits = uniform(9, 12, -1.0, 1.0);
    // All rows ignored: mean 0, gradient 0.
    xent_case(&gpu, "all ignored", 3, 4, &logits, &[IGNORE_INDEX; 3]);
    // Out-of-range targets are counted and rejected by the API.
    xent_case(&gpu, "invalid counted", 3, 4, &logits, &[0, 7, -3]);
    let x = gpu.tensor_f64(&[3, 4], &logits).unwrap();
    let t = gpu.ints(&[3], &[0, 7, -3]).unwrap();
    let err = api::cross_entropy(&gpu, &x, &t, IGNORE_INDEX).unwrap_err();
    assert!(
        err.to_string().contains("2 targets are outside [0, 4)"),
        "{err}"
    );
    let t_bad = gpu.ints(&[2], &[0, 1]).unwrap();
    let err = api::cross_entropy(&gpu, &x, &t_bad, IGNORE_INDEX).unwrap_err();
    assert!(
        matches!(err, Error::Shape { ref arg, .. } if arg == "targets"),
        "{err}"
    );
}

#[test]
fn softmax_matches_cpu() {
    let gpu = gpu_or_skip!();
    let cpu = cpu();
    for (i, (rows, cols)) in [(1, 1), (3, 1000), (50, 7), (2, 257)]
        .into_iter()
        .enumerate()
    {
        let x = uniform(300 + i as u64, rows * cols, -10.0, 10.0);
        let expected = cpu
            .read_f64(&api::softmax(&cpu, &cpu.tensor_f64(&[rows, cols], &x).unwrap()).unwrap())
            .unwrap();
        let got = gpu
            .read_f64(&api::softmax(&gpu, &gpu.tensor_f64(&[rows, cols], &x).unwrap()).unwrap())
            .unwrap();
        check(
            &format!("softmax {rows}x{cols}"),
            &expected,
            &got,
            Tolerance::new(1e-7, 1e-5),
        );
    }
}

#[test]
fn reductions_match_cpu_and_repeat_bitwise() {
    let gpu = gpu_or_skip!();
    let cpu = cpu();
    for (i, n) in [1usize, 255, 256, 4097, 100_000].into_iter().enumerate() {
        let x = uniform(400 + i as u64, n, -1.0, 1.0);
        let xc = cpu.tensor_f64(&[n], &x).unwrap();
        let xg = gpu.tensor_f64(&[n], &x).unwrap();
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::SumSquares] {
            let e = api::reduce(&cpu, op, &xc).unwrap();
            let a = api::reduce(&gpu, op, &xg).unwrap();
            let b = api::reduce(&gpu, op, &xg).unwrap();
            check(
                &format!("{op:?} of {n}"),
                &[e],
                &[a],
                Tolerance::new(1e-6 * (n as f64).sqrt(), 1e-5),
            );
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{op:?} of {n} is not reproducible"
            );
        }
    }
}

/// Column sums on named shapes: fewer rows than the 8 row lanes, rows and
/// columns off the 8 x 32 tile, a column count that is not a multiple of 32,
/// and a second output (`also_off`) taking the same sums.
#[test]
fn column_sums_match_cpu() {
    let gpu = gpu_or_skip!();
    let cpu = cpu();
    for (rows, cols, ld) in [
        (37, 300, 310),
        (1, 1, 1),
        (3, 33, 40),
        (64, 32, 32),
        (801, 7, 9),
    ] {
        let x = uniform(7, 5 + rows * ld, -1.0, 1.0);
        let out_len = 2 * cols + 9;
        let out0 = uniform(8, out_len, -1.0, 1.0);
        for (accumulate, also_off) in [
            (false, None),
            (true, None),
            (true, Some(cols + 6)),
            (false, Some(cols + 9)),
        ] {
            let s = ColSum {
                rows,
                cols,
                ld,
                x_off: 5,
                out_off: 4,
                accumulate,
                also_off,
                x_pairs: 0,
            };
            let oc = cpu.tensor_f64(&[out_len], &out0).unwrap();
            cpu.sum_cols(&s, &cpu.tensor_f64(&[x.len()], &x).unwrap(), &oc)
                .unwrap();
            let og = gpu.tensor_f64(&[out_len], &out0).unwrap();
            gpu.sum_cols(&s, &gpu.tensor_f64(&[x.len()], &x).unwrap(), &og)
                .unwrap();
            let (e, a) = (cpu.read_f64(&oc).unwrap(), gpu.read_f64(&og).unwrap());
            check(
                &format!(
                    "sum_cols {rows}x{cols} ld {ld} accumulate {accumulate} also {also_off:?}"
                ),
                &e,
                &a,
                Tolerance::new(1e-5 * (rows as f64).sqrt(), 1e-5),
            );
            if let Some(also) = also_off {
                let (first, second) = (&e[4..4 + cols], &e[also..also + cols]);
                if !accumulate {
                    assert_eq!(first, second, "both outputs take the same sums");
                }
            }
        }
    }
}

/// Column dot products (the peephole gradients) on the same named shapes.
#[test]
fn column_dot_products_match_cpu() {
    let gpu = gpu_or_skip!();
    let cpu = cpu();
    for (rows, cols, ld) in [(37, 300, 310), (1, 1, 1), (3, 33, 40), (801, 7, 9)] {
        let x = uniform(17, 5 + rows * ld, -1.0, 1.0);
        let y = uniform(18, 2 + rows * (cols + 1), -1.0, 1.0);
        let out0 = uniform(19, cols + 4, -1.0, 1.0);
        let d = ColDot {
            sum: ColSum {
                ld,
                x_off: 5,
                out_off: 4,
                accumulate: true,
                ..ColSum::new(rows, cols)
            },
            y_off: 2,
            y_ld: cols + 1,
        };
        let cpu_out = cpu.tensor_f64(&[out0.len()], &out0).unwrap();
        let (xc, yc) = (
            cpu.tensor_f64(&[x.len()], &x).unwrap(),
            cpu.tensor_f64(&[y.len()], &y).unwrap(),
        );
        cpu.dot_cols(&d, &xc, &yc, &cpu_out).unwrap();
        let gpu_out = gpu.tensor_f64(&[out0.len()], &out0).unwrap();
        let (xg, yg) = (
            gpu.tensor_f64(&[x.len()], &x).unwrap(),
            gpu.tensor_f64(&[y.len()], &y).unwrap(),
        );
        gpu.dot_cols(&d, &xg, &yg, &gpu_out).unwrap();
        let (e, a) = (
            cpu.read_f64(&cpu_out).unwrap(),
            gpu.read_f64(&gpu_out).unwrap(),
        );
        check(
            &format!("dot_cols {rows}x{cols}"),
            &e,
            &a,
            Tolerance::new(1e-5 * (rows as f64).sqrt(), 1e-5),
        );
    }
}

#[test]
fn column_sums_refuse_overlapping_outputs() {
    let cpu = cpu();
    let x = cpu.tensor_f64(&[12], &[1.0; 12]).unwrap();
    let out = cpu.tensor_f64(&[20], &[0.0; 20]).unwrap();
    let s = ColSum {
        also_off: Some(3),
        ..ColSum::new(3, 4)
    };
    let err = cpu.sum_cols(&s, &x, &out).unwrap_err().to_string();
    assert!(
        err.contains("also_off") && err.contains("overlaps"),
        "{err}"
    );
}

#[test]
fn every_kernel_is_bitwise_reproducible() {
    let gpu = gpu_or_skip!();
    let x = uniform(11, 70 * 90, -2.0, 2.0);
    let run = || {
        let a = gpu.tensor_f64(&[70, 90], &x).unwrap();
        let c = api::matmul(&gpu, &a, &a, false, true, None).unwrap();
        let y = api::activate(&gpu, Activation::GeluErf, &c).unwrap();
        let t = gpu.ints(&[70], &uniform_i32(3, 70, 0, 70)).unwrap();
        let (s, dx) = api::cross_entropy(&gpu, &y, &t, IGNORE_INDEX).unwrap();
        let mut v = gpu.read_f64(&dx).unwrap();
        v.push(s.mean);
        v
    };
    let (first, second) = (run(), run());
    assert!(
        first
            .iter()
            .zip(&second)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}

#[test]
fn folded_grids_cover_every_element() {
    // At most 80 workgroups per dimension: every launch below needs more, so
    // each one runs on a grid folded into 2-D with a ragged last row.
    let Some(gpu) = common::gpu_with_fold(80) else {
        return;
    };
    let cpu = cpu();
    let n = 256 * 90 + 3;
    let x = uniform(12, n, -3.0, 3.0);
    let y = api::activate(&gpu, Activation::Tanh, &gpu.tensor_f64(&[n], &x).unwrap()).unwrap();
    let y_ref = api::activate(&cpu, Activation::Tanh, &cpu.tensor_f64(&[n], &x).unwrap()).unwrap();
    check(
        "folded tanh",
        &cpu.read_f64(&y_ref).unwrap(),
        &gpu.read_f64(&y).unwrap(),
        Tolerance::F32,
    );

    // 100 tiles for the tiled kernel, 5625 groups for the naive one.
    let g = contiguous(600, 600, 4, false, true);
    gemm_case(&gpu, "folded matmul", g, 600 * 4, 600 * 4, 600 * 600, 13);

    // 90 tiles of 128 x 128 for the large kernel (the naive one's grid would
    // exceed even the folded limit).
    let (m, n) = (1280, 1152);
    let g = contiguous(m, n, 2, false, false);
    let lens = [m * 2, 2 * n, m * n];
    gemm_case_with(&gpu, &[GemmKernel::Large], "folded large", g, lens, 17);

    let (rows, cols) = (85, 9);
    let logits = uniform(14, rows * cols, -2.0, 2.0);
    xent_case(
        &gpu,
        "folded xent",
        rows,
        cols,
        &logits,
        &uniform_i32(15, rows, 0, cols as i32),
    );

    let big = uniform(16, 4096 * 100, -1.0, 1.0);
    let e = api::reduce(
        &cpu,
        ReduceOp::Sum,
        &cpu.tensor_f64(&[big.len()], &big).unwrap(),
    )
    .unwrap();
    let a = api::reduce(
        &gpu,
        ReduceOp::Sum,
        &gpu.tensor_f64(&[big.len()], &big).unwrap(),
    )
    .unwrap();
    check("folded sum", &[e], &[a], Tolerance::new(1e-3, 1e-5));
    assert_eq!(gpu.ctx().grid(81).unwrap(), [80, 2, 1]);
    assert!(
        gpu.ctx().grid(80 * 80 + 1).is_err(),
        "grids beyond max^2 must be rejected"
    );
}

#[test]
fn fill_copy_and_f16_round_trip() {
    let gpu = gpu_or_skip!();
    let t = gpu.tensor_f64(&[10], &[1.0; 10]).unwrap();
    gpu.fill(&t, 2, 3, 7.5).unwrap();
    gpu.fill(&t, 6, 2, 0.0).unwrap();
    let u = gpu.zeros(&[4]).unwrap();
    gpu.copy(&t, 1, &u, 0, 4).unwrap();
    assert_eq!(
        gpu.read_f64(&t).unwrap(),
        [1.0, 1.0, 7.5, 7.5, 7.5, 1.0, 0.0, 0.0, 1.0, 1.0]
    );
    assert_eq!(gpu.read_f64(&u).unwrap(), [1.0, 7.5, 7.5, 7.5]);
    assert!(gpu.fill(&t, 8, 3, 1.0).is_err());

    use half::f16;
    use rnn_wgpu::gpu::{DType, GpuTensor};
    use rnn_wgpu::ops::memory::{cast, f16_to_f32_cpu, f32_to_f16_cpu};
    let ctx = gpu.ctx();
    let mut vals: Vec<f32> = uniform(17, 101, -70000.0, 70000.0)
        .iter()
        .map(|&v| v as f32)
        .collect();
    vals.extend([0.0, -0.0, 1.0, 65504.0, -65519.0, 1e-5, 3.25]);
    let x = GpuTensor::from_f32(ctx, &[vals.len()], &vals).unwrap();
    let h = cast(ctx, &x, DType::F16).unwrap();
    let got = h.to_f16_vec(ctx).unwrap();
    let want = f32_to_f16_cpu(&vals);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let d = (g.to_bits() as i32 - w.to_bits() as i32).abs();
        assert!(d <= 1, "f16 of {} : got {g} want {w}", vals[i]);
    }
    // f16 -> f32 is exact.
    let halves: Vec<f16> = want.clone();
    let packed = GpuTensor::from_f16(ctx, &[halves.len()], &halves).unwrap();
    let back = cast(ctx, &packed, DType::F32)
        .unwrap()
        .to_f32_vec(ctx)
        .unwrap();
    assert_eq!(back, f16_to_f32_cpu(&halves));
}

#[test]
fn cpu_f32_path_agrees_with_f64_path() {
    let c32 = CpuBackend::<f32>::new();
    let c64 = cpu();
    let a = uniform(20, 12 * 30, -1.0, 1.0);
    let b = uniform(21, 30 * 7, -1.0, 1.0);
    fn product<B: Backend>(be: &B, a: &[f64], b: &[f64]) -> Vec<f64> {
        let x = be.tensor_f64(&[12, 30], a).unwrap();
        let y = be.tensor_f64(&[30, 7], b).unwrap();
        be.read_f64(&api::matmul(be, &x, &y, false, false, None).unwrap())
            .unwrap()
    }
    let (r32, r64) = (product(&c32, &a, &b), product(&c64, &a, &b));
    check("cpu f32 vs f64", &r64, &r32, Tolerance::new(1e-5, 1e-5));
    assert_eq!(f64::NAME, "f64");
}

#[test]
fn cpu_f32_path_is_stable_at_extremes() {
    let c32 = CpuBackend::<f32>::new();
    let c64 = cpu();
    let x = [100.0, -100.0, 1e4, -1e4, 88.5, -88.5, 0.0];
    let dy = [1.0; 7];
    for act in Activation::ALL {
        let y32 = c32
            .read_f64(&api::activate(&c32, act, &c32.tensor_f64(&[7], &x).unwrap()).unwrap())
            .unwrap();
        let y64 = c64
            .read_f64(&api::activate(&c64, act, &c64.tensor_f64(&[7], &x).unwrap()).unwrap())
            .unwrap();
        let d32 = c32
            .read_f64(
                &api::activate_backward(
                    &c32,
                    act,
                    &c32.tensor_f64(&[7], &x).unwrap(),
                    &c32.tensor_f64(&[7], &dy).unwrap(),
                )
                .unwrap(),
            )
            .unwrap();
        assert!(
            y32.iter().chain(&d32).all(|v| v.is_finite()),
            "{act:?}: {y32:?} {d32:?}"
        );
        check(
            &format!("{act:?} f32 vs f64"),
            &y64,
            &y32,
            Tolerance::new(1e-6, 1e-6),
        );
    }
    // Cross-entropy with logits of +-1e4 in f32.
    let logits = [1e4, -1e4, 1e4, -1e4, -1e4, -1e4];
    let (s32, _, dx32) = run_xent(&c32, 2, 3, &logits, &[1, 0]);
    let (s64, _, dx64) = run_xent(&c64, 2, 3, &logits, &[1, 0]);
    assert!(s32.mean.is_finite() && dx32.iter().all(|v| v.is_finite()));
    check(
        "xent f32 vs f64",
        &[s64.mean],
        &[s32.mean],
        Tolerance::new(1e-3, 1e-6),
    );
    check(
        "xent grad f32 vs f64",
        &dx64,
        &dx32,
        Tolerance::new(1e-7, 1e-6),
    );
}

/// The embedding forward and backward on named shapes: one token, a
/// vocabulary whose keys need one to four radix passes (V = 1, 15, 16, 300,
/// 5000; a key of V marks a token outside [0, V)), more positions than the
/// sort's 128 slices, one token everywhere, no valid token. The backward sums
/// each token's rows in position order, bitwise as the CPU twin does.
#[test]
fn embedding_matches_cpu() {
    use rnn_wgpu::ops::embed::{EmbedSpec, Table};
    let gpu = gpu_or_skip!();
    // The f32 CPU path: the GPU must reproduce its sums bit for bit.
    let cpu = CpuBackend::<f32>::new();
    let cases: [(usize, usize, usize, &str); 8] = [
        (300, 13, 17, "random"),
        (1, 1, 1, "random"),
        (40, 3, 15, "random"),
        (200, 2, 16, "random"),
        (1000, 5, 300, "random"),
        (700, 4, 5000, "random"),
        (257, 3, 9, "one token"),
        (50, 2, 4, "none valid"),
    ];
    // Both table layouts: rows [V, E], and columns of a [E, ld] matrix with
    // a bias (a layer's W_ih read for one-hot rows), the output at an
    // offset and the output gradient's rows wider than E.
    for ((n, e, v, kind), columns) in cases.into_iter().flat_map(|c| [(c, false), (c, true)]) {
        let table_kind = match columns {
            false => Table::Rows,
            true => Table::Columns {
                ld: v + 2,
                bias_off: 5 + e * (v + 2),
                dout_ld: e + 3,
            },
        };
        let s = EmbedSpec {
            n,
            e,
            v,
            table_off: 5,
            table: table_kind,
            out_off: if columns { 2 } else { 0 },
        };
        let (table_len, dout_len) = match columns {
            false => (5 + v * e, n * e),
            true => (5 + e * (v + 2) + e, 2 + n * (e + 3)),
        };
        let mut tokens = match kind {
            "one token" => vec![(v / 2) as i32; n],
            "none valid" => (0..n)
                .map(|i| if i % 2 == 0 { -3 } else { v as i32 })
                .collect(),
            _ => uniform_i32(1 + n as u64, n, 0, v as i32),
        };
        if kind == "random" && n > 9 {
            tokens[3] = -1; // out of range: zeros forward, ignored backward
            tokens[9] = v as i32;
        }
        let table = uniform(2, table_len, -1.0, 1.0);
        let dout = uniform(3, dout_len, -1.0, 1.0);
        let d0 = uniform(4, table_len, -1.0, 1.0);
        for accumulate in [true, false] {
            let expected = embed_run(&cpu, &s, &tokens, &table, &dout, &d0, accumulate);
            let got = embed_run(&gpu, &s, &tokens, &table, &dout, &d0, accumulate);
            let name = format!(
                "embedding N={n} E={e} V={v} {kind} columns={columns} accumulate={accumulate}"
            );
            check(&name, &expected, &got, Tolerance::new(0.0, 0.0));
            assert!(
                expected
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}: not bitwise the CPU's"
            );
            if kind == "random" && n > 9 && !columns {
                assert!(got[3 * e..4 * e].iter().all(|&x| x == 0.0));
            }
        }
    }
}

/// One embedding forward and backward on a backend, read back.
fn embed_run<B: Backend>(
    b: &B,
    s: &rnn_wgpu::ops::embed::EmbedSpec,
    t: &[i32],
    table: &[f64],
    dout: &[f64],
    d0: &[f64],
    accumulate: bool,
) -> Vec<f64> {
    let tok = b.ints(&[t.len()], t).unwrap();
    let out = b.zeros(&[s.out_off + s.n * s.e]).unwrap();
    let tab = b.tensor_f64(&[table.len()], table).unwrap();
    b.embed_forward(s, &tok, &tab, &out).unwrap();
    let dt = b.tensor_f64(&[d0.len()], d0).unwrap();
    let dy = b.tensor_f64(&[dout.len()], dout).unwrap();
    b.embed_backward(s, &tok, &dy, &dt, accumulate).unwrap();
    let mut v = b.read_f64(&out).unwrap();
    v.extend(b.read_f64(&dt).unwrap());
    v
}

/// Dropout of `x` under `s` on `b`.
fn dropout_on<B: Backend>(b: &B, s: &rnn_wgpu::ops::dropout::DropoutSpec, x: &[f64]) -> Vec<f64> {
    let y = b.zeros(&[s.n]).unwrap();
    b.dropout(s, &b.tensor_f64(&[x.len()], x).unwrap(), &y)
        .unwrap();
    b.read_f64(&y).unwrap()
}

#[test]
fn dropout_masks_are_bitwise_identical_on_cpu_and_gpu() {
    use rnn_wgpu::ops::dropout::{DropoutKey, DropoutSpec};
    let gpu = gpu_or_skip!();
    let c32 = CpuBackend::<f32>::new();
    let n = 5000;
    let x = uniform(5, n + 7, -2.0, 2.0);
    for (p, step) in [(0.1, 0u64), (0.5, 7), (0.9, u64::MAX - 3)] {
        let s = DropoutSpec {
            n,
            x_off: 7,
            y_off: 0,
            p,
            key: DropoutKey {
                seed: 42,
                layer: 3,
                step,
            },
            shard: None,
        };
        let (a, g) = (dropout_on(&c32, &s, &x), dropout_on(&gpu, &s, &x));
        assert!(
            a.iter().zip(&g).all(|(a, g)| a.to_bits() == g.to_bits()),
            "p = {p}"
        );
        let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
        assert!(
            (dropped - p as f64).abs() < 0.03,
            "p = {p}: dropped {dropped}"
        );
    }
    let same = gpu.zeros(&[4]).unwrap();
    let s = DropoutSpec {
        n: 4,
        x_off: 0,
        y_off: 0,
        p: 0.5,
        key: DropoutKey {
            seed: 1,
            layer: 0,
            step: 0,
        },
        shard: None,
    };
    assert!(matches!(
        gpu.dropout(&s, &same, &same),
        Err(Error::Aliasing { .. })
    ));
    assert!(
        c32.dropout(&s, &c32.zeros(&[4]).unwrap(), &c32.zeros(&[3]).unwrap())
            .is_err()
    );
}

/// A data-parallel rank's share of a batch draws the global batch's masks:
/// dropout of rows `offset..offset + B` equals those rows of the global
/// batch's dropout, on the CPU and bit for bit on the GPU.
#[test]
fn sharded_dropout_masks_are_the_global_batchs_rows() {
    use rnn_wgpu::ops::dropout::{DropoutKey, DropoutSpec, Shard};
    let gpu = gpu_or_skip!();
    let c32 = CpuBackend::<f32>::new();
    let (t, global, w) = (3, 5, 7);
    let key = DropoutKey {
        seed: 11,
        layer: 2,
        step: 4,
    };
    let x = uniform(8, t * global * w, -2.0, 2.0);
    let whole = DropoutSpec {
        n: t * global * w,
        x_off: 0,
        y_off: 0,
        p: 0.4,
        key,
        shard: None,
    };
    let full = dropout_on(&c32, &whole, &x);
    for (offset, batch) in [(0, 2), (2, 2), (4, 1), (0, 5)] {
        let rows = |v: &[f64]| -> Vec<f64> {
            (0..t)
                .flat_map(|s| {
                    let at = (s * global + offset) * w;
                    v[at..at + batch * w].to_vec()
                })
                .collect()
        };
        let part = DropoutSpec {
            n: t * batch * w,
            shard: Some(Shard {
                width: w,
                batch,
                offset,
                global,
            }),
            ..whole
        };
        let local = rows(&x);
        let want = rows(&full);
        for (name, got) in [
            ("cpu", dropout_on(&c32, &part, &local)),
            ("gpu", dropout_on(&gpu, &part, &local)),
        ] {
            assert!(
                want.iter()
                    .zip(&got)
                    .all(|(a, g)| a.to_bits() == g.to_bits()),
                "{name}: rows {offset}..{} of {global}",
                offset + batch
            );
        }
    }
    let bad = DropoutSpec {
        n: t * 2 * w,
        shard: Some(Shard {
            width: w,
            batch: 2,
            offset: 4,
            global,
        }),
        ..whole
    };
    let err = c32
        .dropout(
            &bad,
            &c32.zeros(&[bad.n]).unwrap(),
            &c32.zeros(&[bad.n]).unwrap(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("rows 4..6 of 5"), "{err}");
}

#[test]
fn argmax_rows_match_the_host_argmax() {
    let gpu = gpu_or_skip!();
    let cpu = CpuBackend::<f32>::new();
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    // Ties (the first wins), NaN first (it stays), NaN later (skipped),
    // infinities, one column, and random rows past a workgroup of 64.
    let named: Vec<(usize, Vec<f64>)> = vec![
        (4, vec![1.0, 3.0, 3.0, 2.0]),
        (4, vec![nan, 5.0, 6.0, 7.0]),
        (4, vec![1.0, nan, 0.5, 2.0]),
        (4, vec![-inf, -inf, -1e30, -inf]),
        (4, vec![0.0, inf, inf, nan]),
        (4, vec![-0.0, 0.0, -0.0, 0.0]),
        (1, vec![nan]),
        (7, uniform(41, 7 * 130, -3.0, 3.0)),
    ];
    for (cols, x) in named {
        let rows = Rows {
            rows: x.len() / cols,
            cols,
        };
        let want: Vec<i32> = x
            .chunks(cols)
            .map(|r| {
                let r: Vec<f32> = r.iter().map(|&v| v as f32).collect();
                rnn_wgpu::nn::dense::argmax(&r) as i32
            })
            .collect();
        let on_cpu = {
            let t = cpu.tensor_f64(&[rows.rows, cols], &x).unwrap();
            let p = cpu.ints(&[rows.rows], &vec![-1; rows.rows]).unwrap();
            cpu.argmax_rows(rows, &t, &p).unwrap();
            cpu.read_i32(&p).unwrap()
        };
        let on_gpu = {
            let t = gpu.tensor_f64(&[rows.rows, cols], &x).unwrap();
            let p = gpu.ints(&[rows.rows], &vec![-1; rows.rows]).unwrap();
            gpu.argmax_rows(rows, &t, &p).unwrap();
            gpu.read_i32(&p).unwrap()
        };
        assert_eq!(on_cpu, want, "cpu, {cols} columns: {x:?}");
        assert_eq!(on_gpu, want, "gpu, {cols} columns: {x:?}");
    }
    // Too short an output is refused, not written past.
    let t = gpu.tensor_f64(&[3, 2], &[0.0; 6]).unwrap();
    let p = gpu.ints(&[2], &[0; 2]).unwrap();
    assert!(gpu.argmax_rows(Rows { rows: 3, cols: 2 }, &t, &p).is_err());
}
