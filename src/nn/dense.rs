//! Dense layers (`y = act(x·Wᵀ + b)`, PyTorch's `nn.Linear` layout) and a
//! multi-layer perceptron of them, trained with the same kernels, loss and
//! optimizers as the recurrent models.
//!
//! The classic check: XOR is not linearly separable, so a single linear layer
//! cannot fit it and one hidden layer can (see `examples/xor.rs`).

use super::params::ParamLayout;
use crate::backend::{Backend, XentBuffers, expect_shape};
use crate::error::{Error, Result};
use crate::ops::activation::{Activation, Span};
use crate::ops::matmul::Gemm;
use crate::ops::reduce::ColSum;
use crate::ops::softmax_xent::{IGNORE_INDEX, Rows, XentSummary};
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

/// Layer buffers of one batch size.
#[derive(Debug)]
struct DenseWs<B: Backend> {
    z: B::Tensor,
    y: B::Tensor,
    dz: B::Tensor,
    dx: B::Tensor,
}

/// A multi-layer perceptron with its parameters and gradients in flat buffers.
#[derive(Debug)]
pub struct Mlp<B: Backend> {
    backend: B,
    layers: Vec<Dense>,
    layout: ParamLayout,
    params: B::Tensor,
    grads: B::Tensor,
    ws: Vec<DenseWs<B>>,
    // Loss buffers and logit gradients for classification, per batch size.
    head: Option<(XentBuffers<B>, B::Tensor)>,
    batch: usize,
    input: Option<B::Tensor>,
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
            backend,
            layers,
            layout,
            params,
            grads,
            ws: Vec::new(),
            head: None,
            batch: 0,
            input: None,
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

    fn ensure_ws(&mut self, n: usize) -> Result<()> {
        if self.batch == n && !self.ws.is_empty() {
            return Ok(());
        }
        let b = &self.backend;
        self.ws = self
            .layers
            .iter()
            .map(|l| {
                Ok(DenseWs {
                    z: b.zeros(&[n, l.outputs])?,
                    y: b.zeros(&[n, l.outputs])?,
                    dz: b.zeros(&[n, l.outputs])?,
                    dx: b.zeros(&[n, l.inputs])?,
                })
            })
            .collect::<Result<_>>()?;
        let classes = self.layers[self.layers.len() - 1].outputs;
        self.head = Some((XentBuffers::new(b, n)?, b.zeros(&[n, classes])?));
        self.batch = n;
        Ok(())
    }

    /// `x` `[N, in]` through every layer; returns the output `[N, out]`.
    pub fn forward(&mut self, x: &B::Tensor) -> Result<B::Tensor> {
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
        self.ensure_ws(n)?;
        let b = &self.backend;
        let mut input = x.clone();
        for (l, ws) in self.layers.iter().zip(&self.ws) {
            let g = Gemm::nt(n, l.outputs, l.inputs)
                .offsets(0, l.w_off, 0)
                .with_bias(l.b_off);
            b.gemm(&g, &input, &self.params, Some(&self.params), &ws.z)?;
            b.activation(l.act, Span::all(n * l.outputs), &ws.z, &ws.y)?;
            input = ws.y.clone();
        }
        self.input = Some(x.clone());
        Ok(input)
    }

    /// Backpropagates `dy` (gradient of the last output); gradients are added
    /// to the gradient buffer; returns the gradient of the input.
    pub fn backward(&mut self, dy: &B::Tensor) -> Result<B::Tensor> {
        let Some(x) = self.input.clone() else {
            return Err(Error::invalid("backward", "called before any forward"));
        };
        let n = self.batch;
        let last = self.layers.len() - 1;
        expect_shape(
            "dy",
            "[N, out]",
            &[n, self.layers[last].outputs],
            self.backend.shape(dy),
        )?;
        let b = &self.backend;
        let mut grad = dy.clone();
        for i in (0..self.layers.len()).rev() {
            let (l, ws) = (&self.layers[i], &self.ws[i]);
            let input = if i == 0 {
                x.clone()
            } else {
                self.ws[i - 1].y.clone()
            };
            b.activation_backward(l.act, Span::all(n * l.outputs), &ws.z, &grad, &ws.dz, false)?;
            b.gemm(
                &Gemm::tn(l.outputs, l.inputs, n)
                    .offsets(0, 0, l.w_off)
                    .accumulating(true),
                &ws.dz,
                &input,
                None,
                &self.grads,
            )?;
            let cs = ColSum {
                out_off: l.b_off,
                accumulate: true,
                ..ColSum::new(n, l.outputs)
            };
            b.sum_cols(&cs, &ws.dz, &self.grads)?;
            b.gemm(
                &Gemm::nn(n, l.inputs, l.outputs).offsets(0, l.w_off, 0),
                &ws.dz,
                &self.params,
                None,
                &ws.dx,
            )?;
            grad = ws.dx.clone();
        }
        Ok(grad)
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
        let logits = self.forward(x)?;
        let n = self.batch;
        let classes = self.layers[self.layers.len() - 1].outputs;
        expect_shape("targets", "[N]", &[n], self.backend.int_shape(targets))?;
        let Some((head, dlogits)) = &self.head else {
            return Err(Error::invalid("mlp", "no loss buffers after forward"));
        };
        let xent = head.clone().with_summary(stats.clone(), stats_off);
        let dlogits = dlogits.clone();
        let rows = Rows {
            rows: n,
            cols: classes,
        };
        self.backend.xent(
            rows,
            &logits,
            targets,
            IGNORE_INDEX,
            1.0,
            &xent,
            Some(&dlogits),
        )?;
        self.backward(&dlogits)?;
        Ok(())
    }

    /// Predicted class of every row of `x`, and the summary of the loss against `targets`.
    pub fn evaluate(
        &mut self,
        x: &B::Tensor,
        targets: &B::Ints,
    ) -> Result<(Vec<usize>, XentSummary)> {
        let logits = self.forward(x)?;
        let n = self.batch;
        let classes = self.layers[self.layers.len() - 1].outputs;
        let b = &self.backend;
        let Some((xent, _)) = &self.head else {
            return Err(Error::invalid("mlp", "no loss buffers after forward"));
        };
        b.xent(
            Rows {
                rows: n,
                cols: classes,
            },
            &logits,
            targets,
            IGNORE_INDEX,
            1.0,
            xent,
            None,
        )?;
        let v = b.read_many(&[&logits, &xent.summary])?;
        let preds = v[0].chunks(classes).map(argmax).collect();
        let summary = XentSummary::from_slice(&v[1].iter().map(|x| x.f64()).collect::<Vec<_>>());
        Ok((preds, summary))
    }
}

/// Index of the first largest value.
pub fn argmax<T: PartialOrd + Copy>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}
