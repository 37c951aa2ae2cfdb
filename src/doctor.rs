//! A self-check a user can run on their own machine: every kernel on the chosen
//! adapter against the CPU reference in f64, with the worst errors, so one can
//! tell whether a driver computes correctly.

use std::time::Instant;

use crate::backend::{Backend, CpuBackend, GpuBackend, XentBuffers, api};
use crate::error::Result;
use crate::gpu::StepKernel;
use crate::nn::case::{RnnCase, run_case, run_case_at, run_case_ordered};
use crate::nn::model::{InputEncoding, ModelConfig};
use crate::nn::{RnnConfig, StepOrder};
use crate::ops::activation::{Activation, Span};
use crate::ops::cell::{Act, Activations, Cell, Nonlinearity, Variant};
use crate::ops::matmul::{Gemm, GemmKernel};
use crate::ops::optim::{Optimizer, UpdateSpec};
use crate::ops::reduce::{ColDot, ColSum, ReduceOp};
use crate::ops::skip::Skip;
use crate::ops::softmax_xent::{IGNORE_INDEX, Rows};
use crate::parity::{Tolerance, compare, uniform, uniform_i32};
use crate::precision::Precision;
use crate::train::schedule::Schedule;
use crate::train::tasks::TaskSpec;
use crate::train::{Bptt, TrainConfig, Trainer};

/// One line of the report.
#[derive(Clone, Debug)]
pub struct CheckRow {
    /// What was checked.
    pub name: String,
    /// Largest absolute difference from the reference.
    pub max_abs: f64,
    /// Largest relative difference.
    pub max_rel: f64,
    /// Whether it is within tolerance.
    pub pass: bool,
    /// The mismatch report when it is not (or the error that stopped it).
    pub detail: Option<String>,
}

/// A collection of check rows, printable as a table.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The rows, in order.
    pub rows: Vec<CheckRow>,
}

impl Report {
    /// True when every row passed.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.pass)
    }

    /// Compares `actual` against `expected` and records the outcome.
    pub fn compare(&mut self, name: &str, expected: &[f64], actual: &[f64], tol: Tolerance) {
        let row = match compare(name, expected, actual, tol) {
            Ok(c) => CheckRow {
                name: name.into(),
                max_abs: c.max_abs,
                max_rel: c.max_rel,
                pass: true,
                detail: None,
            },
            Err(m) => CheckRow {
                name: name.into(),
                max_abs: m.stats.max_abs,
                max_rel: m.stats.max_rel,
                pass: false,
                detail: Some(m.to_string()),
            },
        };
        self.rows.push(row);
    }

    /// Records the relative Frobenius error `‖actual − expected‖ / ‖expected‖`
    /// against `tol` (the measure of 16-bit storage, whose rounding error is
    /// relative to each value's magnitude and large next to tiny values).
    pub fn compare_frobenius(&mut self, name: &str, expected: &[f64], actual: &[f64], tol: f64) {
        let (max_abs, err) = if expected.len() == actual.len() {
            let max_abs = expected
                .iter()
                .zip(actual)
                .map(|(e, a)| (e - a).abs())
                .fold(0.0, f64::max);
            (max_abs, crate::parity::rel_frobenius(expected, actual))
        } else {
            (f64::NAN, f64::NAN)
        };
        let pass = err <= tol;
        self.rows.push(CheckRow {
            name: name.into(),
            max_abs,
            max_rel: err,
            pass,
            detail: (!pass).then(|| {
                format!(
                    "{name}: relative Frobenius error {err:.3e} > {tol:e} ({} values, {} expected)\n",
                    actual.len(),
                    expected.len()
                )
            }),
        });
    }

    /// Records a check that could not run.
    pub fn error(&mut self, name: &str, e: &crate::Error) {
        self.rows.push(CheckRow {
            name: name.into(),
            max_abs: f64::NAN,
            max_rel: f64::NAN,
            pass: false,
            detail: Some(e.to_string()),
        });
    }

    /// The report as a text table (with failure details underneath).
    pub fn table(&self) -> String {
        let width = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut s = format!(
            "{:<width$}  {:>11}  {:>11}  result\n",
            "check", "max |diff|", "max rel"
        );
        for r in &self.rows {
            s += &format!(
                "{:<width$}  {:>11.3e}  {:>11.3e}  {}\n",
                r.name,
                r.max_abs,
                r.max_rel,
                if r.pass { "pass" } else { "FAIL" }
            );
        }
        for r in self.rows.iter().filter(|r| !r.pass) {
            if let Some(d) = &r.detail {
                s += &format!("\n{d}");
            }
        }
        s
    }
}

/// Runs `f` on the CPU reference (f64) and on the GPU and compares.
fn both(
    report: &mut Report,
    name: &str,
    tol: Tolerance,
    f: &dyn Fn(&dyn Runner) -> Result<Vec<f64>>,
    gpu: &GpuBackend,
) {
    let cpu = CpuBackend::<f64>::new();
    let expected = match f(&cpu) {
        Ok(v) => v,
        Err(e) => return report.error(name, &e),
    };
    match f(gpu) {
        Ok(actual) => report.compare(name, &expected, &actual, tol),
        Err(e) => report.error(name, &e),
    }
}

/// The kernel checks, written once for any backend.
trait Runner {
    fn matmul(
        &self,
        g: &Gemm,
        a: &[f64],
        b: &[f64],
        bias: &[f64],
        c_len: usize,
    ) -> Result<Vec<f64>>;
    fn act(&self, act: Activation, x: &[f64], dy: &[f64]) -> Result<Vec<f64>>;
    fn xent(&self, rows: usize, cols: usize, x: &[f64], t: &[i32]) -> Result<Vec<f64>>;
    fn softmax(&self, rows: usize, cols: usize, x: &[f64]) -> Result<Vec<f64>>;
    fn reduce(&self, x: &[f64], rows: usize, cols: usize) -> Result<Vec<f64>>;
    fn skipped_updates(&self, cases: &[(f64, f64)]) -> Result<Vec<f64>>;
}

impl<B: Backend> Runner for B {
    fn matmul(
        &self,
        g: &Gemm,
        a: &[f64],
        b: &[f64],
        bias: &[f64],
        c_len: usize,
    ) -> Result<Vec<f64>> {
        let c = self.zeros(&[c_len])?;
        let bias = self.tensor_f64(&[bias.len()], bias)?;
        self.gemm(
            g,
            &self.tensor_f64(&[a.len()], a)?,
            &self.tensor_f64(&[b.len()], b)?,
            g.bias.then_some(&bias),
            &c,
        )?;
        self.read_f64(&c)
    }

    fn act(&self, act: Activation, x: &[f64], dy: &[f64]) -> Result<Vec<f64>> {
        let n = x.len();
        let (xt, dyt) = (self.tensor_f64(&[n], x)?, self.tensor_f64(&[n], dy)?);
        let (y, dx) = (self.zeros(&[n])?, self.zeros(&[n])?);
        self.activation(act, Span::all(n), &xt, &y)?;
        self.activation_backward(act, Span::all(n), &xt, &dyt, &dx, false)?;
        let v = self.read_many(&[&y, &dx])?.concat();
        Ok(v.iter().map(|x| crate::Real::f64(*x)).collect())
    }

    fn xent(&self, rows: usize, cols: usize, x: &[f64], t: &[i32]) -> Result<Vec<f64>> {
        let shape = Rows { rows, cols };
        let xt = self.tensor_f64(&[rows, cols], x)?;
        let tt = self.ints(&[rows], t)?;
        let out = XentBuffers::new(self, rows)?;
        let dx = self.zeros(&[rows, cols])?;
        self.xent(shape, &xt, &tt, IGNORE_INDEX, 1.0, &out, Some(&dx))?;
        let mut v = self.read_f64(&out.summary)?[..1].to_vec();
        v.extend(self.read_f64(&out.loss)?);
        v.extend(self.read_f64(&dx)?);
        Ok(v)
    }

    fn softmax(&self, rows: usize, cols: usize, x: &[f64]) -> Result<Vec<f64>> {
        let y = api::softmax(self, &self.tensor_f64(&[rows, cols], x)?)?;
        self.read_f64(&y)
    }

    fn reduce(&self, x: &[f64], rows: usize, cols: usize) -> Result<Vec<f64>> {
        let xt = self.tensor_f64(&[x.len()], x)?;
        let out = self.zeros(&[3 + 2 * cols])?;
        for (i, op) in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::SumSquares]
            .into_iter()
            .enumerate()
        {
            self.reduce(op, &xt, 0, x.len(), &out, i, false)?;
        }
        let s = ColSum {
            out_off: 3,
            ..ColSum::new(rows, cols)
        };
        self.sum_cols(&s, &xt, &out)?;
        // Column dot products of x with itself shifted by a row.
        let d = ColDot {
            sum: ColSum {
                out_off: 3 + cols,
                ..ColSum::new(rows - 1, cols)
            },
            y_off: cols,
            y_ld: cols,
        };
        self.dot_cols(&d, &xt, &xt, &out)?;
        self.read_f64(&out)
    }

    /// The parameters after one Adam update for each `(Σg², loss)` written
    /// straight into the stats buffer.
    fn skipped_updates(&self, cases: &[(f64, f64)]) -> Result<Vec<f64>> {
        let n = 64;
        let opt = Optimizer::adam(0.01);
        let (l1, l2) = opt.state_lens(n);
        // Values exact in f32, so an update that is skipped reads back exactly.
        let p0: Vec<f64> = uniform(90, n, -1.0, 1.0)
            .iter()
            .map(|&v| v as f32 as f64)
            .collect();
        let grads = self.tensor_f64(&[n], &uniform(91, n, -1.0, 1.0))?;
        let mut out = Vec::new();
        for &(norm_sq, loss) in cases {
            let params = self.tensor_f64(&[n], &p0)?;
            let (s1, s2) = (self.zeros(&[l1])?, self.zeros(&[l2])?);
            let stats = self.tensor_f64(&[2], &[norm_sq, loss])?;
            let spec = UpdateSpec {
                n,
                step: 1,
                lr: opt.lr(),
                max_norm: Some(1.0),
                norm_idx: 0,
                loss_idx: Some(1),
                grad_scale: 1.0,
            };
            self.optim_update(&opt, &spec, &params, &grads, &s1, &s2, &stats)?;
            out.extend(self.read_f64(&params)?);
        }
        Ok(out)
    }
}

/// Runs every kernel on `gpu` against the f64 CPU reference.
pub fn run_kernels(gpu: &GpuBackend) -> Report {
    let mut report = Report::default();
    let shapes = [(1, 1, 1), (33, 65, 70), (3, 5, 700), (128, 96, 64)];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        for (ta, tb) in [(false, true), (false, false), (true, false)] {
            let mut g = Gemm::nn(m, n, k).with_bias(0);
            g.trans_a = ta;
            g.trans_b = tb;
            g.lda = if ta { m } else { k };
            g.ldb = if tb { k } else { n };
            let a = uniform(10 + i as u64, m * k, -1.0, 1.0);
            let b = uniform(20 + i as u64, k * n, -1.0, 1.0);
            let bias = uniform(30 + i as u64, n, -1.0, 1.0);
            let tol = Tolerance::new(4e-6 * (k as f64).sqrt() + 1e-6, 1e-5);
            for kernel in GemmKernel::FORCED {
                let layout = format!(
                    "{}{}",
                    if ta { "T" } else { "N" },
                    if tb { "T" } else { "N" }
                );
                let name = format!("matmul {kernel:?} {layout} {m}x{n}x{k}");
                let gk = gpu.clone().with_gemm_kernel(kernel);
                both(
                    &mut report,
                    &name,
                    tol,
                    &|r| r.matmul(&g, &a, &b, &bias, m * n),
                    &gk,
                );
            }
        }
    }
    let mut x = uniform(40, 500, -8.0, 8.0);
    x.extend([100.0, -100.0, 1e4, -1e4, 0.0]);
    let dy = uniform(41, x.len(), -1.0, 1.0);
    let x32: Vec<f64> = x.iter().map(|&v| v as f32 as f64).collect();
    for act in Activation::ALL {
        both(
            &mut report,
            &format!("activation {act:?} fwd+bwd"),
            Tolerance::new(1e-5, 1e-5),
            &|r| r.act(act, &x32, &dy),
            gpu,
        );
    }
    for (rows, cols) in [(1, 1), (40, 257), (3, 2000)] {
        let logits = uniform(50 + rows as u64, rows * cols, -6.0, 6.0);
        let mut t = uniform_i32(60 + rows as u64, rows, 0, cols as i32);
        if rows > 2 {
            t[1] = IGNORE_INDEX;
        }
        both(
            &mut report,
            &format!("softmax {rows}x{cols}"),
            Tolerance::new(1e-7, 1e-5),
            &|r| r.softmax(rows, cols, &logits),
            gpu,
        );
        both(
            &mut report,
            &format!("cross-entropy {rows}x{cols}"),
            Tolerance::new(2e-6, 1e-4),
            &|r| r.xent(rows, cols, &logits, &t),
            gpu,
        );
    }
    // The optimizer skips an update whose gradient norm or loss is not finite
    // by testing the bits of the stored values; shaders compiled with fast
    // math (Metal) could fold a comparison-based test away. A finite update
    // comes first, so a kernel that never updates fails too.
    let inf = f64::INFINITY;
    let cases = [
        (1.0, 0.5),
        (f64::NAN, 0.5),
        (inf, 0.5),
        (-inf, 0.5),
        (1.0, f64::NAN),
        (1.0, inf),
        (1.0, -inf),
    ];
    both(
        &mut report,
        "optimizer skips NaN / ±inf norms and losses",
        Tolerance::new(1e-6, 1e-6),
        &|r| r.skipped_updates(&cases),
        gpu,
    );
    let v = uniform(70, 300 * 41, -1.0, 1.0);
    both(
        &mut report,
        "reductions (sum, max, sumsq, column sums and dot products)",
        Tolerance::new(1e-4, 1e-5),
        &|r| r.reduce(&v, 300, 41),
        gpu,
    );
    // Every cell with each recurrent-product variant forced in turn.
    for kernel in StepKernel::ALL {
        let gpu = &gpu.clone().with_step_kernel(kernel);
        for (i, cell) in Cell::ALL.into_iter().enumerate() {
            let cfg = RnnConfig::new(cell, 5, 37).layers(2).bidirectional(true);
            let case = RnnCase::new(cfg, 6, 9, 80 + i as u64)
                .with_states()
                .with_lengths(vec![6, 3, 1, 6, 5, 2, 4, 6, 6]);
            rnn_case(&mut report, gpu, &case, kernel.name());
            // A unidirectional stack as a wavefront, against the CPU's
            // layer order.
            let cfg = RnnConfig::new(cell, 5, 37).layers(3);
            let case = RnnCase::new(cfg, 6, 9, 85 + i as u64)
                .with_states()
                .with_lengths(vec![6, 3, 1, 6, 5, 2, 4, 6, 6]);
            let tag = format!("{}, wavefront", kernel.name());
            rnn_case_ordered(&mut report, gpu, &case, &tag, StepOrder::Wavefront);
        }
        for (i, cfg) in variant_stacks().into_iter().enumerate() {
            let case = RnnCase::new(cfg, 5, 9, 90 + i as u64)
                .with_states()
                .with_lengths(vec![5, 3, 1, 5, 4, 2, 4, 5, 5]);
            rnn_case(&mut report, gpu, &case, kernel.name());
        }
    }
    report
}

/// The cell variants and skip connections `doctor` checks: an LSTM with
/// every variant at once (peepholes, coupled gates, clip, activations) and
/// highway connections, a clipped reset-before GRU with relu candidates and
/// residual connections, a clipped sigmoid RNN, and a bidirectional LSTM
/// with a projection, peepholes and residual connections.
pub fn variant_stacks() -> Vec<RnnConfig> {
    let lstm = Variant {
        peepholes: true,
        coupled: true,
        cell_clip: Some(0.8),
        activations: Activations {
            f: Act::Sigmoid,
            g: Act::Relu,
            h: Act::Sigmoid,
        },
        reset_before: false,
        proj_size: 0,
    };
    let gru = Variant {
        cell_clip: Some(0.6),
        reset_before: true,
        activations: Activations {
            g: Act::Relu,
            ..Activations::default()
        },
        ..Variant::default()
    };
    let rnn = Variant {
        cell_clip: Some(0.5),
        ..Variant::default()
    };
    let proj = Variant {
        proj_size: 13,
        peepholes: true,
        ..Variant::default()
    };
    vec![
        RnnConfig::new(Cell::Lstm, 5, 37)
            .variant(lstm)
            .layers(2)
            .bidirectional(true)
            .skip(Skip::Highway),
        RnnConfig::new(Cell::Gru, 5, 37)
            .variant(gru)
            .layers(2)
            .skip(Skip::Residual),
        RnnConfig::new(Cell::Rnn(Nonlinearity::Sigmoid), 5, 37).variant(rnn),
        RnnConfig::new(Cell::Lstm, 5, 37)
            .variant(proj)
            .layers(2)
            .bidirectional(true)
            .skip(Skip::Residual),
    ]
}

/// Compares a forward + backward of `case` on `gpu` with the f64 CPU path;
/// `tag` is appended to the case's name.
pub fn rnn_case(report: &mut Report, gpu: &GpuBackend, case: &RnnCase, tag: &str) {
    rnn_case_ordered(report, gpu, case, tag, StepOrder::Auto)
}

/// [`rnn_case`] with the GPU's passes in `order` (the CPU's: layer by layer).
pub fn rnn_case_ordered(
    report: &mut Report,
    gpu: &GpuBackend,
    case: &RnnCase,
    tag: &str,
    order: StepOrder,
) {
    let name = format!("{} [{tag}]", case.describe());
    let data = case.data();
    let cpu = CpuBackend::<f64>::new();
    let (expected, actual) = match (
        run_case(&cpu, &case.config, &data, true),
        run_case_ordered(gpu, &case.config, &data, true, order),
    ) {
        (Ok(e), Ok(a)) => (e, a),
        (Err(e), _) | (_, Err(e)) => return report.error(&name, &e),
    };
    let values = Tolerance::new(2e-5, 1e-4);
    let grads = Tolerance::new(1e-4, 1e-3);
    report.compare(
        &format!("{name}: forward"),
        &expected.values(),
        &actual.values(),
        values,
    );
    report.compare(
        &format!("{name}: backward"),
        &expected.gradients(),
        &actual.gradients(),
        grads,
    );
}

/// The training steps of [`training_check`].
fn training_config() -> TrainConfig {
    let model = ModelConfig {
        input: InputEncoding::Embedding(8),
        layers: 2,
        dropout: 0.1,
        ..ModelConfig::new(Cell::Lstm, 24)
    };
    TrainConfig {
        batch: 16,
        steps: 100,
        bptt: Bptt::Truncated { k1: 4, k2: 6 },
        optimizer: Optimizer::adam(0.01),
        schedule: Schedule::Constant,
        seed: 11,
        eval_problems: 20,
        ..TrainConfig::new(TaskSpec::add(2), model)
    }
}

/// Three training steps of `config`: the losses and the parameters after.
fn train_three<B: crate::backend::Backend>(
    b: B,
    config: &TrainConfig,
) -> crate::Result<(Vec<f64>, Vec<f64>)> {
    let mut t = Trainer::new(b, config.clone())?;
    let losses = (0..3)
        .map(|_| t.train_step().map(|r| r.loss))
        .collect::<crate::Result<Vec<f64>>>()?;
    Ok((losses, t.read_params()?))
}

/// A few training steps (LSTM, two layers, dropout, Adam, clipping) on the
/// GPU against the CPU path in f32: losses and parameters must agree.
pub fn training_check(report: &mut Report, gpu: &GpuBackend) {
    let config = training_config();
    let name = "training: 3 steps, LSTM L=2, TBPTT(4,6), dropout, Adam, clipping";
    match (
        train_three(CpuBackend::<f32>::new(), &config),
        train_three(gpu.clone(), &config),
    ) {
        (Ok((le, pe)), Ok((la, pa))) => {
            report.compare(
                &format!("{name}: losses"),
                &le,
                &la,
                Tolerance::new(1e-5, 1e-4),
            );
            report.compare(
                &format!("{name}: parameters"),
                &pe,
                &pa,
                Tolerance::new(1e-4, 1e-3),
            );
        }
        (Err(e), _) | (_, Err(e)) => report.error(name, &e),
    }
}

/// The training steps of [`training_check`] on `unchecked` (a context whose
/// hot kernels are compiled without runtime bounds checks, the default) and
/// on `checked` (every shader checked): they must agree bitwise.
pub fn unchecked_check(report: &mut Report, checked: &GpuBackend, unchecked: &GpuBackend) {
    let config = training_config();
    let name = "unchecked hot kernels: 3 training steps, bitwise as checked";
    match (
        train_three(checked.clone(), &config),
        train_three(unchecked.clone(), &config),
    ) {
        (Ok((le, pe)), Ok((la, pa))) => {
            let (e, a): (Vec<f64>, Vec<f64>) = (
                le.iter().chain(&pe).copied().collect(),
                la.iter().chain(&pa).copied().collect(),
            );
            report.compare(name, &e, &a, Tolerance::new(0.0, 0.0));
        }
        (Err(e), _) | (_, Err(e)) => report.error(name, &e),
    }
}

/// The tolerances of 16-bit storage against the f64 reference, as relative
/// Frobenius errors: (values, gradients, losses).
pub fn precision_tolerances(p: Precision) -> (f64, f64, f64) {
    match p {
        Precision::F32 => (1e-5, 1e-4, 1e-5),
        Precision::F16 => (2e-3, 1e-2, 2e-3),
        Precision::Bf16 => (1.5e-2, 5e-2, 1.5e-2),
    }
}

/// The tolerance of the GPU's 16-bit path against its CPU twin (relative
/// Frobenius): about one 16-bit step, the most a value near a rounding
/// boundary can move when the f32 sums beneath it add in another order
/// (measured on lavapipe: bitwise equal, or 1.4e-6, in f16).
pub fn twin_tolerance(p: Precision) -> f64 {
    match p {
        Precision::F32 => 1e-5,
        Precision::F16 => 5e-4,
        Precision::Bf16 => 4e-3,
    }
}

/// The 16-bit checks of `doctor --precision`: stacks of every cell forward
/// and backward with `p` storage on `b` against the f64 CPU path, and three
/// training steps against f32 training, within [`precision_tolerances`];
/// on a GPU also against the CPU's 16-bit path (its twin, which rounds the
/// same values at the same places). `label` names the backend in the rows.
pub fn precision_check<B: Backend>(report: &mut Report, b: &B, p: Precision, label: &str) {
    let (tol_v, tol_g, tol_loss) = precision_tolerances(p);
    let cases = [
        RnnCase::new(RnnConfig::new(Cell::Lstm, 5, 8).layers(2), 6, 3, 41),
        RnnCase::new(
            RnnConfig::new(Cell::Gru, 5, 8).bidirectional(true),
            6,
            3,
            42,
        ),
        RnnCase::new(
            RnnConfig::new(Cell::Rnn(Nonlinearity::Tanh), 5, 8),
            6,
            3,
            43,
        ),
    ];
    let cpu = CpuBackend::<f64>::new();
    for case in &cases {
        let name = format!("{} [{label}, {p}]", case.describe());
        let data = case.data();
        match (
            run_case(&cpu, &case.config, &data, true),
            run_case_at(b, &case.config, &data, true, StepOrder::Auto, p),
        ) {
            (Ok(e), Ok(a)) => {
                if b.is_gpu() {
                    let twin = CpuBackend::<f32>::new();
                    match run_case_at(&twin, &case.config, &data, true, StepOrder::Auto, p) {
                        Ok(t) => {
                            report.compare_frobenius(
                                &format!("{name}: forward, cpu twin"),
                                &t.values(),
                                &a.values(),
                                twin_tolerance(p),
                            );
                            report.compare_frobenius(
                                &format!("{name}: backward, cpu twin"),
                                &t.gradients(),
                                &a.gradients(),
                                twin_tolerance(p),
                            );
                        }
                        Err(e) => report.error(&name, &e),
                    }
                }
                report.compare_frobenius(
                    &format!("{name}: forward"),
                    &e.values(),
                    &a.values(),
                    tol_v,
                );
                report.compare_frobenius(
                    &format!("{name}: backward"),
                    &e.gradients(),
                    &a.gradients(),
                    tol_g,
                );
            }
            (Err(e), _) | (_, Err(e)) => report.error(&name, &e),
        }
    }
    let name = format!("training: 3 steps [{label}, {p}] against f32");
    let config = training_config();
    let at = TrainConfig {
        precision: p,
        ..config.clone()
    };
    match (
        train_three(CpuBackend::<f32>::new(), &config),
        train_three(b.clone(), &at),
    ) {
        (Ok((le, _)), Ok((la, _))) => {
            report.compare_frobenius(&format!("{name}: losses"), &le, &la, tol_loss)
        }
        (Err(e), _) | (_, Err(e)) => report.error(&name, &e),
    }
}

/// Runs every check on `gpu` and reports the time taken.
pub fn selfcheck(gpu: &GpuBackend) -> (Report, f64) {
    let start = Instant::now();
    let mut report = run_kernels(gpu);
    training_check(&mut report, gpu);
    (report, start.elapsed().as_secs_f64())
}
