//! Seeded cases for recurrent stacks: inputs, one full forward + backward on
//! any backend, and the finite-difference check of every gradient.
//!
//! Shared by the test suite, `rnn-wgpu gradcheck` and the self-checks, so that
//! "what is checked" is defined once.

use super::rnn::{Rnn, RnnConfig, StepOrder};
use crate::backend::{Backend, CpuBackend};
use crate::error::{Error, Result};
use crate::gradcheck::{GradCheck, spread_indices};
use crate::parity::{Comparison, Mismatch, uniform};
use crate::precision::Precision;
use crate::real::Real;

/// A recurrent stack and the shape of one batch to run through it.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnCase {
    /// The stack.
    pub config: RnnConfig,
    /// T
    pub steps: usize,
    /// B
    pub batch: usize,
    /// Packed-sequence lengths `[B]`, if any.
    pub lengths: Option<Vec<i32>>,
    /// Pass an initial hidden state.
    pub with_h0: bool,
    /// Pass an initial cell state (LSTM).
    pub with_c0: bool,
    /// Seed of every random input.
    pub seed: u64,
}

/// The values of one run, in f64: parameters, inputs and output gradients
/// (what `rnn-wgpu eval` reads from its two files).
#[derive(Clone, Debug, PartialEq)]
pub struct RnnCaseData {
    /// T
    pub steps: usize,
    /// B
    pub batch: usize,
    /// Flat parameters `[P]`.
    pub params: Vec<f64>,
    /// `[T, B, I]`
    pub x: Vec<f64>,
    /// `[L·D, B, H]`
    pub h0: Option<Vec<f64>>,
    /// `[L·D, B, H]` (LSTM)
    pub c0: Option<Vec<f64>>,
    /// `[B]`, each in `1..=T`.
    pub lengths: Option<Vec<i32>>,
    /// `[T, B, D·H]`; zero when absent.
    pub grad_output: Option<Vec<f64>>,
    /// `[L·D, B, H]`; zero when absent.
    pub grad_hn: Option<Vec<f64>>,
    /// `[L·D, B, H]` (LSTM); zero when absent.
    pub grad_cn: Option<Vec<f64>>,
}

/// Everything a forward and backward produce, in f64.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RnnResults {
    /// `[T, B, D·H]`
    pub output: Vec<f64>,
    /// `[L·D, B, H]`
    pub hn: Vec<f64>,
    /// `[L·D, B, H]`
    pub cn: Vec<f64>,
    /// `[T, B, I]`
    pub grad_input: Vec<f64>,
    /// `[L·D, B, H]`
    pub grad_h0: Vec<f64>,
    /// `[L·D, B, H]`
    pub grad_c0: Vec<f64>,
    /// `[P]`
    pub grad_params: Vec<f64>,
}

impl RnnResults {
    /// Forward values, concatenated: output, hn, cn.
    pub fn values(&self) -> Vec<f64> {
        [&self.output, &self.hn, &self.cn]
            .into_iter()
            .flatten()
            .copied()
            .collect()
    }

    /// Gradients, concatenated: input, h0, c0, parameters.
    pub fn gradients(&self) -> Vec<f64> {
        [
            &self.grad_input,
            &self.grad_h0,
            &self.grad_c0,
            &self.grad_params,
        ]
        .into_iter()
        .flatten()
        .copied()
        .collect()
    }
}

impl RnnCase {
    /// A full-length case without initial states.
    pub fn new(config: RnnConfig, steps: usize, batch: usize, seed: u64) -> Self {
        RnnCase {
            config,
            steps,
            batch,
            lengths: None,
            with_h0: false,
            with_c0: false,
            seed,
        }
    }

    /// With initial states (h0, and c0 for an LSTM).
    pub fn with_states(mut self) -> Self {
        self.with_h0 = true;
        self.with_c0 = self.config.cell.has_cell_state();
        self
    }

    /// With packed-sequence lengths.
    pub fn with_lengths(mut self, lengths: Vec<i32>) -> Self {
        self.lengths = Some(lengths);
        self
    }

    /// A short description, e.g. `lstm I=3 H=4 L=2 bi T=5 B=2 lengths h0`
    /// (the variant in parentheses after the cell, when it has one).
    pub fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "{}{} I={} H={} L={}{}{} T={} B={}{}{}",
            c.cell.name(),
            c.variant.tag(c.cell),
            c.input_size,
            c.hidden_size,
            c.num_layers,
            if c.bidirectional { " bi" } else { "" },
            c.skip.tag(),
            self.steps,
            self.batch,
            if self.lengths.is_some() {
                " lengths"
            } else {
                ""
            },
            if self.with_h0 { " h0" } else { "" },
        )
    }

    fn state_len(&self) -> usize {
        let c = &self.config;
        c.num_layers * c.directions() * self.batch * c.hidden_size
    }

    /// Seeded values: parameters in PyTorch's default range, inputs and
    /// gradients uniform in ±1.
    pub fn data(&self) -> RnnCaseData {
        let c = &self.config;
        let k = 1.0 / (c.hidden_size as f64).sqrt();
        let s = self.seed;
        let n_state = self.state_len();
        // h (and its gradient) is P wide with a projection.
        let n_h = n_state / c.hidden_size * c.state_size();
        let out_len = self.steps * self.batch * c.output_size();
        let lstm = c.cell.has_cell_state();
        RnnCaseData {
            steps: self.steps,
            batch: self.batch,
            params: uniform(s, c.layout().total, -k, k),
            x: uniform(s + 1, self.steps * self.batch * c.input_size, -1.0, 1.0),
            h0: self.with_h0.then(|| uniform(s + 2, n_h, -1.0, 1.0)),
            c0: (self.with_c0 && lstm).then(|| uniform(s + 3, n_state, -1.0, 1.0)),
            lengths: self.lengths.clone(),
            grad_output: Some(uniform(s + 4, out_len, -1.0, 1.0)),
            grad_hn: Some(uniform(s + 5, n_h, -1.0, 1.0)),
            grad_cn: lstm.then(|| uniform(s + 6, n_state, -1.0, 1.0)),
        }
    }
}

/// Runs the forward (and, if `backward`, the training forward and the
/// backward) of a stack shaped by `config` on `backend` with `data`; returns
/// every result in f64. Without `backward` the forward is the inference one
/// and the gradient fields are empty; without a cell state, `cn` and
/// `grad_c0` are.
pub fn run_case<B: Backend>(
    backend: &B,
    config: &RnnConfig,
    data: &RnnCaseData,
    backward: bool,
) -> Result<RnnResults> {
    run_case_ordered(backend, config, data, backward, StepOrder::Auto)
}

/// [`run_case`] with the passes ordered by `order`.
pub fn run_case_ordered<B: Backend>(
    backend: &B,
    config: &RnnConfig,
    data: &RnnCaseData,
    backward: bool,
    order: StepOrder,
) -> Result<RnnResults> {
    run_case_at(backend, config, data, backward, order, Precision::F32)
}

/// [`run_case_ordered`] at `precision`: in a 16-bit mode the parameters,
/// the inputs (x, the initial states, the incoming gradients) and every
/// activation are stored in 16 bits, as `torch.autocast` casts them; the
/// parameter gradients are f32 sums.
pub fn run_case_at<B: Backend>(
    backend: &B,
    config: &RnnConfig,
    data: &RnnCaseData,
    backward: bool,
    order: StepOrder,
    precision: Precision,
) -> Result<RnnResults> {
    let c = config;
    let weights = backend.tensor_packed(&[data.params.len()], &data.params, precision)?;
    let mut rnn = Rnn::shared(backend.clone(), *c, weights, 0)?;
    if data.params.len() != rnn.layout().total {
        return Err(Error::invalid(
            "parameters",
            format!(
                "{} values given, the {} layout has {}",
                data.params.len(),
                c.cell.name(),
                rnn.layout().total
            ),
        ));
    }
    rnn.set_precision(precision)?;
    rnn.set_step_order(order);
    let (steps, batch) = (data.steps, data.batch);
    let state = [c.num_layers * c.directions(), batch, c.hidden_size];
    let hstate = [state[0], batch, c.state_size()];
    let opt = |shape: &[usize], v: &Option<Vec<f64>>| {
        v.as_ref()
            .map(|v| backend.tensor_stored(shape, v, precision))
            .transpose()
    };
    // The input rows and the output gradient packed where the stack reads
    // them so (on the GPU, two 16-bit values a word).
    let x = backend.tensor_packed(&[steps, batch, c.input_size], &data.x, precision)?;
    let h0 = opt(&hstate, &data.h0)?;
    let c0 = opt(&state, &data.c0)?;
    let lengths = data.lengths.as_deref();
    let (out, grads) = if backward {
        let (out, saved) = rnn.forward_train(&x, h0.as_ref(), c0.as_ref(), lengths, None)?;
        let go_shape = [steps, batch, c.output_size()];
        let go = match &data.grad_output {
            Some(v) if c.reads_packed_output_grad() => {
                Some(backend.tensor_packed(&go_shape, v, precision)?)
            }
            v => opt(&go_shape, v)?,
        };
        let ghn = opt(&hstate, &data.grad_hn)?;
        let gcn = opt(&state, &data.grad_cn)?;
        let params = rnn.zeros_like_params()?;
        let inputs = rnn.backward(&saved, go.as_ref(), ghn.as_ref(), gcn.as_ref(), &params)?;
        (out, Some((inputs, params)))
    } else {
        (rnn.forward(&x, h0.as_ref(), c0.as_ref(), lengths)?, None)
    };
    let mut list = vec![&out.output, &out.hn];
    list.extend(out.cn.as_ref());
    if let Some((inputs, params)) = &grads {
        list.extend(inputs.input.as_ref());
        list.extend([&inputs.h0, params]);
        list.extend(inputs.c0.as_ref());
    }
    // One readback for everything.
    let mut vals = backend
        .read_many(&list)?
        .into_iter()
        .map(|v| v.iter().map(|x| x.f64()).collect::<Vec<f64>>());
    let mut next = || vals.next().unwrap_or_default();
    let lstm = c.cell.has_cell_state();
    let mut r = RnnResults {
        output: next(),
        hn: next(),
        ..Default::default()
    };
    if lstm {
        r.cn = next();
    }
    if backward {
        r.grad_input = next();
        r.grad_h0 = next();
        r.grad_params = next();
        if lstm {
            r.grad_c0 = next();
        }
    }
    Ok(r)
}

/// The scalar whose gradients `run_case` computes:
/// `Σ output⊙grad_output + Σ hn⊙grad_hn + Σ cn⊙grad_cn`, on the f64 CPU path.
pub fn case_loss(config: &RnnConfig, data: &RnnCaseData) -> Result<f64> {
    let r = run_case(&CpuBackend::<f64>::new(), config, data, false)?;
    let dot = |a: &[f64], b: &Option<Vec<f64>>| {
        b.as_ref()
            .map_or(0.0, |b| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>())
    };
    Ok(dot(&r.output, &data.grad_output) + dot(&r.hn, &data.grad_hn) + dot(&r.cn, &data.grad_cn))
}

/// One line of a gradient check: what, and how it went.
pub type CheckLine = (String, std::result::Result<Comparison, Box<Mismatch>>);

/// Checks every gradient of `case` (each parameter tensor, the input, h0, c0)
/// against central finite differences on the f64 CPU path. At most
/// `max_per_tensor` coordinates of each tensor are probed (evenly spread).
pub fn check_case_gradients(
    case: &RnnCase,
    gc: &GradCheck,
    max_per_tensor: usize,
) -> Result<Vec<CheckLine>> {
    let data = case.data();
    let analytic = run_case(&CpuBackend::<f64>::new(), &case.config, &data, true)?;
    let mut lines = Vec::new();
    let mut err = None;
    {
        let mut probe =
            |name: String, x: &[f64], grad: &[f64], set: &dyn Fn(&mut RnnCaseData, &[f64])| {
                let idx = spread_indices(x.len(), max_per_tensor);
                let mut f = |v: &[f64]| {
                    let mut d = data.clone();
                    set(&mut d, v);
                    match case_loss(&case.config, &d) {
                        Ok(l) => l,
                        Err(e) => {
                            err = Some(e);
                            f64::NAN
                        }
                    }
                };
                lines.push((name.clone(), gc.check(&name, &mut f, x, grad, Some(&idx))));
            };
        for e in &case.config.layout().entries {
            let range = e.range();
            let slice = data.params[range.clone()].to_vec();
            let grad = analytic.grad_params[range.clone()].to_vec();
            probe(format!("grad.{}", e.name), &slice, &grad, &|d, v| {
                d.params[range.clone()].copy_from_slice(v)
            });
        }
        probe(
            "grad_input".into(),
            &data.x,
            &analytic.grad_input,
            &|d, v| d.x = v.to_vec(),
        );
        if let Some(h0) = &data.h0 {
            probe("grad_h0".into(), h0, &analytic.grad_h0, &|d, v| {
                d.h0 = Some(v.to_vec())
            });
        }
        if let Some(c0) = &data.c0 {
            probe("grad_c0".into(), c0, &analytic.grad_c0, &|d, v| {
                d.c0 = Some(v.to_vec())
            });
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(lines),
    }
}
