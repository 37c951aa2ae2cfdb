//! Dense layers (`y = act(x·Wᵀ + b)`, PyTorch's `nn.Linear` layout) and a
//! multi-layer perceptron of them, trained with the same kernels, loss and
//! optimizers as the recurrent models.
//!
//! The classic check: XOR is not linearly separable, so a single linear layer
//! cannot fit it and one hidden layer can (see `examples/xor.rs`).

use super::params::ParamLayout;
use super::pool::{Pool, next_owner_id};
use crate::backend::{Backend, expect_shape};
use crate::error::{Error, Result};
use crate::ops::activation::{Activation, Span};
use crate::ops::matmul::Gemm;
use crate::ops::reduce::ColSum;
use crate::ops::softmax_xent::{Rows, SUMMARY_LEN, XentSummary};
use crate::parity::rng;
use crate::real::Real;

use rand::RngExt;

/// One dense layer inside a flat parameter buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dense {
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
    /// Activation applied to `x·Wᵀ + b`.
    pub act: Activation,
    /// Offset of `weight` `[out, in]`.
    pub w_off: usize,
    /// Offset of `bias` `[out]`.
    pub b_off: usize,
}

/// What a training forward of an [`Mlp`] keeps for its backward: the input
/// and every layer's pre-activation and output.
#[derive(Debug)]
pub struct MlpSaved<B: Backend> {
    mlp: u64,
    rows: usize,
    input: B::Tensor,
    // Per layer: (z = x·Wᵀ + b, y = act(z)).
    layers: Vec<(B::Tensor, B::Tensor)>,
}

/// A multi-layer perceptron with its parameters and gradients in flat buffers.
#[derive(Debug)]
pub struct Mlp<B: Backend> {
    id: u64,
    backend: B,
    layers: Vec<Dense>,
    layout: ParamLayout,
    params: B::Tensor,
    grads: B::Tensor,
    pool: Pool<B>,
}

impl<B: Backend> Mlp<B> {
    /// Layers of widths `widths[0] → widths[1] → …`, with `act` on every hidden
    /// layer and `out_act` on the last; PyTorch's default `nn.Linear` init
    /// (U(±1/√in) for weights and biases) from `seed`.
    pub fn new(
        backend: B,
        widths: &[usize],
        act: Activation,
        out_act: Activation,
        seed: u64,
    ) -> Result<Self> {
        if widths.len() < 2 || widths.contains(&0) {
            return Err(Error::invalid(
                "widths",
                format!("{widths:?}: need at least an input and an output width, all >= 1"),
            ));
        }
        let mut layout = ParamLayout::default();
        let mut layers = Vec::new();
        for (i, w) in widths.windows(2).enumerate() {
            let w_off = layout.push(format!("layers.{i}.weight"), &[w[1], w[0]]);
            let b_off = layout.push(format!("layers.{i}.bias"), &[w[1]]);
            let last = i + 2 == widths.len();
            layers.push(Dense {
                inputs: w[0],
                outputs: w[1],
                act: if last { out_act } else { act },
                w_off,
                b_off,
            });
        }
        let mut r = rng(seed);
        let mut values = vec![B::Elem::of(0.0); layout.total];
        for l in &layers {
            let k = 1.0 / (l.inputs as f64).sqrt();
            for v in &mut values[l.w_off..l.b_off + l.outputs] {
                *v = B::Elem::of(r.random_range(-k..k));
            }
        }
        let params = backend.tensor(&[layout.total], &values)?;
        let grads = backend.zeros(&[layout.total])?;
        Ok(Mlp {
            id: next_owner_id(),
            backend,
            layers,
            layout,
            params,
            grads,
            pool: Pool::default(),
        })
    }

    /// The layers.
    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }

    /// Parameter names and offsets.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// The flat parameters.
    pub fn params(&self) -> &B::Tensor {
        &self.params
    }

    /// The flat gradients.
    pub fn grads(&self) -> &B::Tensor {
        &self.grads
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn classes(&self) -> usize {
        self.layers[self.layers.len() - 1].outputs
    }

    /// `x` `[N, in]` through every layer; returns the output `[N, out]` (a
    /// value) and, when `train`, what the backward needs.
    fn run(&mut self, x: &B::Tensor, train: bool) -> Result<(B::Tensor, Option<MlpSaved<B>>)> {
        let shape = self.backend.shape(x).to_vec();
        let first = self.layers[0].inputs;
        if shape.len() != 2 || shape[1] != first || shape[0] == 0 {
            return Err(Error::shape(
                "x",
                format!("[N, {first}] with N >= 1"),
                &shape,
            ));
        }
        let n = shape[0];
        self.pool.next_pass(&self.backend);
        let b = &self.backend;
        let mut input = x.clone();
        let mut saved = Vec::new();
        for l in &self.layers {
            let z = self.pool.take(b, &[n, l.outputs])?;
            let y = self.pool.take(b, &[n, l.outputs])?;
            let g = Gemm::nt(n, l.outputs, l.inputs)
                .offsets(0, l.w_off, 0)
                .with_bias(l.b_off);
            b.gemm(&g, &input, &self.params, Some(&self.params), &z)?;
            b.activation(l.act, Span::all(n * l.outputs), &z, &y)?;
            input = y.clone();
            if train {
                saved.push((z, y));
            }
        }
        let saved = train.then(|| MlpSaved {
            mlp: self.id,
            rows: n,
            input: x.clone(),
            layers: saved,
        });
        Ok((input, saved))
    }

    /// `x` `[N, in]` through every layer; returns the output `[N, out]`
    /// (inference: nothing is kept for a backward).
    pub fn forward(&mut self, x: &B::Tensor) -> Result<B::Tensor> {
        Ok(self.run(x, false)?.0)
    }

    /// [`Mlp::forward`] that also returns what [`Mlp::backward`] needs.
    pub fn forward_train(&mut self, x: &B::Tensor) -> Result<(B::Tensor, MlpSaved<B>)> {
        let (y, saved) = self.run(x, true)?;
        let saved = saved.ok_or_else(|| Error::invalid("forward", "saved nothing"))?;
        Ok((y, saved))
    }

    /// Backpropagates `dy` (gradient of the output of the forward that
    /// returned `saved`); gradients are added to the gradient buffer; returns
    /// the gradient of the input.
    pub fn backward(&mut self, saved: &MlpSaved<B>, dy: &B::Tensor) -> Result<B::Tensor> {
        if saved.mlp != self.id {
            return Err(Error::invalid(
                "saved",
                "comes from another network's forward",
            ));
        }
        let n = saved.rows;
        expect_shape(
            "dy",
            "[N, out]",
            &[n, self.classes()],
            self.backend.shape(dy),
        )?;
        self.pool.next_pass(&self.backend);
        let b = &self.backend;
        let mut grad = dy.clone();
        for i in (0..self.layers.len()).rev() {
            let (l, (z, _)) = (&self.layers[i], &saved.layers[i]);
            let input = match i.checked_sub(1) {
                None => &saved.input,
                Some(below) => &saved.layers[below].1,
            };
            let dz = self.pool.take(b, &[n, l.outputs])?;
            b.activation_backward(l.act, Span::all(n * l.outputs), z, &grad, &dz, false)?;
            b.gemm(
                &Gemm::tn(l.outputs, l.inputs, n)
                    .offsets(0, 0, l.w_off)
                    .accumulating(true),
                &dz,
                input,
                None,
                &self.grads,
            )?;
            let cs = ColSum {
                out_off: l.b_off,
                accumulate: true,
                ..ColSum::new(n, l.outputs)
            };
            b.sum_cols(&cs, &dz, &self.grads)?;
            let dx = self.pool.take(b, &[n, l.inputs])?;
            b.gemm(
                &Gemm::nn(n, l.inputs, l.outputs).offsets(0, l.w_off, 0),
                &dz,
                &self.params,
                None,
                &dx,
            )?;
            grad = dx;
        }
        Ok(grad)
    }

    /// Mean cross-entropy of `logits` `[N, classes]` against `targets` `[N]`,
    /// summary into `stats` at `stats_off`, and the logits' gradient when `dlogits`.
    fn loss(
        &mut self,
        logits: &B::Tensor,
        targets: &B::Ints,
        stats: &B::Tensor,
        stats_off: usize,
        dlogits: Option<&B::Tensor>,
    ) -> Result<()> {
        let b = &self.backend;
        let rows = Rows {
            rows: b.shape(logits)[0],
            cols: self.classes(),
        };
        expect_shape("targets", "[N]", &[rows.rows], b.int_shape(targets))?;
        self.pool
            .xent(b, rows, logits, targets, stats, stats_off, 1.0, dlogits)
    }

    /// Forward, mean cross-entropy against class `targets` `[N]` (the last
    /// layer's outputs are the logits), and backward. Writes the loss summary
    /// into `stats` at `stats_off`.
    pub fn classify_step(
        &mut self,
        x: &B::Tensor,
        targets: &B::Ints,
        stats: &B::Tensor,
        stats_off: usize,
    ) -> Result<()> {
        let (logits, saved) = self.forward_train(x)?;
        let dlogits = self
            .pool
            .take(&self.backend, &[saved.rows, self.classes()])?;
        self.loss(&logits, targets, stats, stats_off, Some(&dlogits))?;
        self.backward(&saved, &dlogits)?;
        Ok(())
    }

    /// Predicted class of every row of `x`, and the summary of the loss against `targets`.
    pub fn evaluate(
        &mut self,
        x: &B::Tensor,
        targets: &B::Ints,
    ) -> Result<(Vec<usize>, XentSummary)> {
        let logits = self.forward(x)?;
        let summary = self.pool.take(&self.backend, &[SUMMARY_LEN])?;
        self.loss(&logits, targets, &summary, 0, None)?;
        let v = self.backend.read_many(&[&logits, &summary])?;
        let preds = v[0].chunks(self.classes()).map(argmax).collect();
        let summary = XentSummary::from_slice(&v[1].iter().map(|x| x.f64()).collect::<Vec<_>>());
        Ok((preds, summary))
    }
}

/// Index of the first largest value.
pub fn argmax<T: PartialOrd + Copy>(row: &[T]) -> usize {
    crate::ops::softmax_xent::argmax(row)
}
