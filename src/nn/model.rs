//! The sequence model: tokens → embedding (or one-hot) → recurrent stack →
//! dropout → dense decoder → softmax cross-entropy at every step.
//!
//! All parameters live in one flat tensor with PyTorch-style names
//! (`embedding.weight`, `rnn.weight_ih_l0`, …, `decoder.weight`,
//! `decoder.bias`), and the gradients in another of the same layout, so an
//! optimizer update is one kernel and a gradient norm one reduction.
//!
//! [`SeqModel::forward`] is inference (logits and the final state, as values;
//! [`SeqModel::step`] streams one token at a time); [`SeqModel::forward_train`]
//! also returns what [`SeqModel::backward`] needs, and [`SeqModel::chunk`] does
//! both over a chunk of time steps. The trainer (`crate::train`) strings chunks
//! together for full or truncated BPTT.
//!
//! ```
//! use rnn_wgpu::backend::{Backend, CpuBackend};
//! use rnn_wgpu::nn::model::{ModelConfig, SeqModel};
//! use rnn_wgpu::ops::cell::Cell;
//!
//! # fn main() -> rnn_wgpu::Result<()> {
//! let b = CpuBackend::<f32>::new();
//! let config = ModelConfig { vocab: 5, ..ModelConfig::new(Cell::Lstm, 8) };
//! let mut model = SeqModel::new(b.clone(), config, &config.init_params(1)?)?;
//! // A prompt of three tokens for two streams ([T, B]), then one token per stream at a time.
//! let prompt = b.ints(&[3, 2], &[0, 1, 2, 3, 4, 0])?;
//! let mut out = model.forward(&prompt, None)?; // logits [T·B, V], the final state
//! for _ in 0..4 {
//!     let next = b.ints(&[2], &[1, 2])?; // one token per stream
//!     out = model.step(&next, Some(&out.state))?; // logits [B, V]
//! }
//! assert_eq!(b.shape(&out.logits), &[2, 5]);
//! # Ok(())
//! # }
//! ```

use serde::{Deserialize, Serialize};

use super::params::ParamLayout;
use super::pool::{Pool, next_owner_id};
use super::rnn::{
    BatchRows, LayerDropout, MAX_DIM, Rnn, RnnConfig, RnnSaved, State, check_index_range,
};
use crate::backend::{Backend, expect_shape, host_zeros};
use crate::error::{Error, Result};
use crate::ops::cell::{Cell, Variant};
use crate::ops::embed::EmbedSpec;
use crate::ops::matmul::Gemm;
use crate::ops::optim::{Optimizer, UpdateSpec};
use crate::ops::reduce::ColSum;
use crate::ops::skip::Skip;
use crate::ops::softmax_xent::Rows;
use crate::parity::rng;
use crate::precision::Precision;
use crate::real::Real;

use rand::RngExt;

/// How tokens enter the recurrent stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputEncoding {
    /// One-hot vectors of width V (no parameters).
    OneHot,
    /// A trained embedding table `[V, E]`.
    Embedding(usize),
}

/// Shape of a sequence model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Vocabulary V.
    pub vocab: usize,
    /// Input encoding.
    pub input: InputEncoding,
    /// Cell type.
    pub cell: Cell,
    /// Hidden size H.
    pub hidden: usize,
    /// Layers L.
    pub layers: usize,
    /// Dropout between layers and before the decoder (training only).
    pub dropout: f32,
    /// Initial value of the LSTM forget-gate biases (`bias_ih` and `bias_hh`
    /// each get half, so their sum is this; Jozefowicz et al. 2015 recommend 1).
    pub forget_bias: f32,
    /// Weight initialization.
    pub init: Init,
    /// The cell's variant (PyTorch's cell by default; older checkpoints
    /// have none).
    #[serde(default)]
    pub variant: Variant,
    /// Skip connections between the stacked layers.
    #[serde(default)]
    pub skip: Skip,
}

/// Weight initialization schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Init {
    /// PyTorch's default for recurrent layers: every parameter U(±1/√H).
    Uniform,
    /// Xavier/Glorot uniform for weight matrices, zero biases.
    Xavier,
    /// He (Kaiming) uniform for weight matrices, zero biases.
    He,
}

impl Init {
    /// Parses `uniform`, `xavier` or `he`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "uniform" | "pytorch" => Init::Uniform,
            "xavier" | "glorot" => Init::Xavier,
            "he" | "kaiming" => Init::He,
            other => {
                return Err(Error::invalid(
                    "init",
                    format!("unknown initialization {other:?}; expected uniform, xavier or he"),
                ));
            }
        })
    }
}

/// The largest vocabulary fed as one-hot vectors (the first layer's W_ih is
/// G·H × V; an embedding serves larger ones better).
pub const MAX_ONE_HOT: usize = 4096;

/// The site number of the dropout before the decoder (inner layers use 0..L-1).
const OUTPUT_DROPOUT_SITE: u32 = 1 << 16;

impl ModelConfig {
    /// One layer of `hidden` units of `cell` fed by a 16-wide embedding, no
    /// dropout, LSTM forget-gate bias 1, PyTorch's initialization (the
    /// defaults of `rnn-wgpu train`). The vocabulary is left 0: a
    /// [`crate::train::Trainer`] takes it from its task.
    pub fn new(cell: Cell, hidden: usize) -> Self {
        ModelConfig {
            vocab: 0,
            input: InputEncoding::Embedding(16),
            cell,
            hidden,
            layers: 1,
            dropout: 0.0,
            forget_bias: 1.0,
            init: Init::Uniform,
            variant: Variant::default(),
            skip: Skip::None,
        }
    }

    /// The stack in words: `lstm H=256 L=1`, with the variant and skip
    /// connections when it has them (`lstm (peepholes) H=64 L=2 highway`).
    pub fn describe_stack(&self) -> String {
        format!(
            "{}{} H={} L={}{}",
            self.cell.name(),
            self.variant.tag(self.cell),
            self.hidden,
            self.layers,
            self.skip.tag()
        )
    }

    /// Width of the stack's output, what the decoder reads: H, or P with a projection.
    pub fn output_width(&self) -> usize {
        self.variant.state_size(self.hidden)
    }

    /// Input width of the recurrent stack.
    pub fn input_width(&self) -> usize {
        match self.input {
            InputEncoding::OneHot => self.vocab,
            InputEncoding::Embedding(e) => e,
        }
    }

    /// The recurrent stack (unidirectional: a language model reads left to right).
    pub fn rnn(&self) -> RnnConfig {
        RnnConfig::new(self.cell, self.input_width(), self.hidden)
            .variant(self.variant)
            .layers(self.layers)
            .skip(self.skip)
    }

    /// Checks sizes.
    pub fn validate(&self) -> Result<()> {
        if self.vocab < 2 {
            return Err(Error::invalid(
                "vocabulary",
                format!("has {} symbols; needs at least 2", self.vocab),
            ));
        }
        if let InputEncoding::Embedding(0) = self.input {
            return Err(Error::invalid("embedding", "width must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                "dropout",
                format!("{} is outside [0, 1)", self.dropout),
            ));
        }
        if !self.forget_bias.is_finite() {
            return Err(Error::invalid(
                "forget_bias",
                format!("{} must be a finite number", self.forget_bias),
            ));
        }
        if self.input == InputEncoding::OneHot && self.vocab > MAX_ONE_HOT {
            return Err(Error::invalid(
                "embedding",
                format!(
                    "one-hot input is for vocabularies of at most {MAX_ONE_HOT} symbols \
                     (this one has {}); use an embedding",
                    self.vocab
                ),
            ));
        }
        for (arg, v) in [
            ("vocabulary", self.vocab),
            ("embedding", self.input_width()),
        ] {
            if v > MAX_DIM {
                return Err(Error::invalid(
                    arg,
                    format!("{v} is beyond the supported {MAX_DIM}"),
                ));
            }
        }
        self.rnn().validate()?;
        let extra =
            (self.vocab as u128) * (self.input_width() as u128 + self.output_width() as u128 + 1);
        check_index_range(
            "the model's parameters",
            self.rnn().layout().total as u128 + extra,
        )
    }

    /// Named parameters, packed: embedding, recurrent stack, decoder.
    pub fn layout(&self) -> ParamLayout {
        let mut l = ParamLayout::default();
        if let InputEncoding::Embedding(e) = self.input {
            l.push("embedding.weight", &[self.vocab, e]);
        }
        l.extend_prefixed("rnn.", &self.rnn().layout());
        l.push("decoder.weight", &[self.vocab, self.output_width()]);
        l.push("decoder.bias", &[self.vocab]);
        l
    }

    /// Initial parameters from `seed` (after checking the sizes): by
    /// [`Init`], the LSTM forget-gate biases at `forget_bias`, the highway
    /// gates' biases at −1.
    pub fn init_params(&self, seed: u64) -> Result<Vec<f64>> {
        self.validate()?;
        let layout = self.layout();
        let mut r = rng(seed);
        let mut v: Vec<f64> = host_zeros(&[layout.total])?;
        let k = 1.0 / (self.hidden as f64).sqrt();
        for e in &layout.entries {
            let out = &mut v[e.range()];
            let is_bias = e.shape.len() == 1;
            let bound = match (e.name.as_str(), self.init) {
                ("embedding.weight", _) => {
                    // N(0, 1) like nn.Embedding, via Box-Muller.
                    for x in out.iter_mut() {
                        let (u1, u2): (f64, f64) =
                            (r.random_range(1e-12..1.0), r.random_range(0.0..1.0));
                        *x = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                    }
                    continue;
                }
                (_, Init::Uniform) => k,
                (_, _) if is_bias => 0.0,
                (_, Init::Xavier) => (6.0 / (e.shape[0] + e.shape[1]) as f64).sqrt(),
                (_, Init::He) => (6.0 / e.shape[1] as f64).sqrt(),
            };
            for x in out.iter_mut() {
                *x = if bound > 0.0 {
                    r.random_range(-bound..bound)
                } else {
                    0.0
                };
            }
            if e.name.starts_with("rnn.bias_t_") {
                // Highway gates start closed (T = σ(−1) ≈ 0.27): a layer
                // first mostly carries its input (Srivastava et al. 2015).
                out.fill(-1.0);
            }
            let gate_bias = e.name.starts_with("rnn.bias_ih") || e.name.starts_with("rnn.bias_hh");
            if self.cell == Cell::Lstm && gate_bias {
                // Gate order i, f, g, o: the second block is the forget gate.
                let h = self.hidden;
                for x in &mut out[h..2 * h] {
                    *x = self.forget_bias as f64 / 2.0;
                }
            }
        }
        Ok(v)
    }
}

/// What a chunk's forward is allowed to do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Train {
    /// Seed of the dropout masks.
    pub seed: u64,
    /// Counter keying this chunk's masks.
    pub step: u64,
    /// Where the batch sits in a global batch (a data-parallel rank's
    /// share): the masks are those of these rows of the global batch.
    pub rows: Option<BatchRows>,
}

impl Train {
    /// Masks keyed on `(seed, step)` for a whole batch.
    pub fn new(seed: u64, step: u64) -> Self {
        Train {
            seed,
            step,
            rows: None,
        }
    }
}

/// What a forward produced. Values: nothing the model does later writes to them.
#[derive(Clone, Debug)]
pub struct ForwardOut<B: Backend> {
    /// `[T·B, V]` logits, row `t·B + b`.
    pub logits: B::Tensor,
    /// The final states `[L, B, H]`: where a later forward or step continues.
    pub state: State<B>,
}

/// What a training forward ([`SeqModel::forward_train`]) keeps for its
/// backward ([`SeqModel::backward`]): the recurrent stack's saved forward,
/// the tokens, the decoder's input and the logits.
///
/// It refers to the `tokens` tensor the forward read (no copy is made):
/// writing other tokens into it before the backward scatters the embedding
/// gradient to the wrong rows.
#[derive(Debug)]
pub struct ModelSaved<B: Backend> {
    model: u64,
    steps: usize,
    batch: usize,
    tokens: B::Ints,
    rnn: RnnSaved<B>,
    top: B::Tensor,
    logits: B::Tensor,
    dropout: Option<LayerDropout>,
}

/// A sequence model on backend `B`.
#[derive(Debug)]
pub struct SeqModel<B: Backend> {
    id: u64,
    config: ModelConfig,
    layout: ParamLayout,
    backend: B,
    params: B::Tensor,
    /// What the passes read: `params` itself in f32, a 16-bit copy
    /// otherwise (refreshed by [`SeqModel::refresh_weights`]).
    weights: B::Tensor,
    precision: Precision,
    grads: B::Tensor,
    rnn: Rnn<B>,
    pool: Pool<B>,
}

impl<B: Backend> SeqModel<B> {
    /// A model holding the flat parameters `values` (laid out by [`ModelConfig::layout`]).
    pub fn new(backend: B, config: ModelConfig, values: &[f64]) -> Result<Self> {
        Self::with_precision(backend, config, values, Precision::F32)
    }

    /// [`SeqModel::new`] computing at `precision`: in a 16-bit mode the
    /// parameters stay f32 (the master copy the optimizer updates, as do
    /// the gradients), the forward and backward read a 16-bit copy of them
    /// ([`SeqModel::weights`]), and activations, saved states and gates and
    /// the activation gradients are stored in 16 bits
    /// ([`crate::precision`]).
    pub fn with_precision(
        backend: B,
        config: ModelConfig,
        values: &[f64],
        precision: Precision,
    ) -> Result<Self> {
        config.validate()?;
        let layout = config.layout();
        if values.len() != layout.total {
            return Err(Error::invalid(
                "parameters",
                format!("{} values for a model of {}", values.len(), layout.total),
            ));
        }
        let params = backend.tensor_f64(&[layout.total], values)?;
        let weights = if precision.is_16bit() {
            let w = backend.zeros_packed(&[layout.total], precision)?;
            backend.copy(&params, 0, &w, 0, layout.total)?;
            w
        } else {
            params.clone()
        };
        let grads = backend.zeros(&[layout.total])?;
        let rnn_offset = layout
            .get("rnn.weight_ih_l0")
            .map(|e| e.offset)
            .ok_or_else(|| Error::invalid("layout", "has no recurrent stack"))?;
        let mut rnn = Rnn::shared(backend.clone(), config.rnn(), weights.clone(), rnn_offset)?;
        rnn.set_precision(precision)?;
        // One-hot inputs are constants: their gradient would be thrown away.
        rnn.set_input_gradient(config.input != InputEncoding::OneHot);
        let mut pool = Pool::default();
        pool.set_store(precision);
        Ok(SeqModel {
            id: next_owner_id(),
            config,
            layout,
            backend,
            params,
            weights,
            precision,
            grads,
            rnn,
            pool,
        })
    }

    /// The precision the model computes at ([`SeqModel::with_precision`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The parameters the passes read `[P]`: [`SeqModel::params`] in f32,
    /// their 16-bit copy otherwise — the model's own buffer, which every
    /// [`SeqModel::refresh_weights`] (after each update) overwrites; read
    /// it to keep its values.
    pub fn weights(&self) -> &B::Tensor {
        &self.weights
    }

    /// Copies the f32 parameters into the 16-bit copy the passes read
    /// (after an optimizer update; nothing to do in f32).
    pub fn refresh_weights(&self) -> Result<()> {
        if self.precision.is_16bit() {
            self.backend
                .copy(&self.params, 0, &self.weights, 0, self.layout.total)?;
        }
        Ok(())
    }

    /// One optimizer update of [`SeqModel::params`] from
    /// [`SeqModel::grads`] ([`Backend::optim_update`]); in a 16-bit mode
    /// the update also refreshes the copy the passes read
    /// ([`Backend::optim_update_copy`]: one kernel on the GPU), so no
    /// [`SeqModel::refresh_weights`] is needed after it.
    pub fn optim_update(
        &self,
        opt: &Optimizer,
        spec: &UpdateSpec,
        s1: &B::Tensor,
        s2: &B::Tensor,
        stats: &B::Tensor,
    ) -> Result<()> {
        let b = &self.backend;
        if self.precision.is_16bit() {
            b.optim_update_copy(
                opt,
                spec,
                &self.params,
                &self.grads,
                s1,
                s2,
                stats,
                &self.weights,
            )
        } else {
            b.optim_update(opt, spec, &self.params, &self.grads, s1, s2, stats)
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Parameter names, shapes and offsets.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The flat parameters `[P]`.
    pub fn params(&self) -> &B::Tensor {
        &self.params
    }

    /// The flat gradients `[P]`.
    pub fn grads(&self) -> &B::Tensor {
        &self.grads
    }

    /// Fills every buffer the model and its stack reuse with NaN before
    /// handing it out (a debugging aid: see [`Rnn::set_poison_reused`]).
    pub fn set_poison_reused(&mut self, on: bool) {
        self.pool.set_poison(on);
        self.rnn.set_poison_reused(on);
    }

    fn offset(&self, name: &str) -> Result<usize> {
        self.layout
            .get(name)
            .map(|e| e.offset)
            .ok_or_else(|| Error::invalid("layout", format!("no parameter {name}")))
    }

    fn check_tokens(&self, arg: &str, t: &B::Ints) -> Result<(usize, usize)> {
        match self.backend.int_shape(t) {
            [steps, batch] if *steps > 0 && *batch > 0 => Ok((*steps, *batch)),
            s => Err(Error::shape(arg, "[T, B] with T, B >= 1", s)),
        }
    }

    /// The stack's input rows `[T, B, E]` for `tokens` `[T, B]`: embedded,
    /// or `None` for one-hot inputs, which the stack reads as tokens (its
    /// first layer gathers W_ih's columns).
    fn embed(&mut self, tokens: &B::Ints, steps: usize, batch: usize) -> Result<Option<B::Tensor>> {
        let cfg = self.config;
        if cfg.input == InputEncoding::OneHot {
            return Ok(None);
        }
        // Packed two 16-bit values a word on the GPU in a 16-bit pass: only
        // the stack's first-layer matrix products read them.
        let x = self
            .pool
            .take_packed(&self.backend, &[steps, batch, cfg.input_width()])?;
        let s = EmbedSpec {
            n: steps * batch,
            e: cfg.input_width(),
            v: cfg.vocab,
            table_off: self.offset("embedding.weight")?,
            ..Default::default()
        };
        self.backend.embed_forward(&s, tokens, &self.weights, &x)?;
        Ok(Some(x))
    }

    /// Logits `[T·B, V]` of the decoder over `top` `[T, B, H]`.
    fn decode(&mut self, top: &B::Tensor, rows: usize) -> Result<B::Tensor> {
        let (v, h) = (self.config.vocab, self.config.output_width());
        let logits = self.pool.take(&self.backend, &[rows, v])?;
        let g = Gemm::nt(rows, v, h)
            .offsets(0, self.offset("decoder.weight")?, 0)
            .with_bias(self.offset("decoder.bias")?);
        self.backend
            .gemm(&g, top, &self.weights, Some(&self.weights), &logits)?;
        Ok(logits)
    }

    /// Checks a starting state against `[L, B, H]`.
    fn check_state(&self, state: Option<&State<B>>, batch: usize) -> Result<()> {
        let Some(s) = state else { return Ok(()) };
        let want = [self.config.layers, batch, self.config.hidden];
        let want_h = [self.config.layers, batch, self.config.output_width()];
        let letters = if want_h == want {
            "[L, B, H]"
        } else {
            "[L, B, P]"
        };
        expect_shape("state.h", letters, &want_h, self.backend.shape(&s.h))?;
        match (&s.c, self.config.cell.has_cell_state()) {
            (Some(c), true) => expect_shape("state.c", "[L, B, H]", &want, self.backend.shape(c)),
            (None, false) => Ok(()),
            (None, true) => Err(Error::invalid("state.c", "an LSTM state needs c")),
            (Some(_), false) => Err(Error::invalid(
                "state.c",
                format!(
                    "only an LSTM has a cell state; this is {}",
                    self.config.cell.name()
                ),
            )),
        }
    }

    /// The inference forward over `tokens` `[T, B]` from `state` (zeros when
    /// `None`): logits `[T·B, V]` and the final state, as values. Nothing is
    /// kept for a backward.
    pub fn forward(&mut self, tokens: &B::Ints, state: Option<&State<B>>) -> Result<ForwardOut<B>> {
        let (steps, batch) = self.check_tokens("tokens", tokens)?;
        self.check_state(state, batch)?;
        self.pool.next_pass(&self.backend);
        let x = self.embed(tokens, steps, batch)?;
        let (h0, c0) = State::split(state);
        let out = match &x {
            Some(x) => self.rnn.forward(x, h0, c0, None)?,
            None => self.rnn.forward_one_hot(tokens, h0, c0, None)?,
        };
        drop(x);
        let logits = self.decode(&out.output, steps * batch)?;
        Ok(ForwardOut {
            logits,
            state: out.state(),
        })
    }

    /// One step of streaming inference: `tokens` `[B]` (one per batch row)
    /// from `state` (zeros when `None`); logits `[B, V]` and the new state,
    /// with nothing read back.
    pub fn step(&mut self, tokens: &B::Ints, state: Option<&State<B>>) -> Result<ForwardOut<B>> {
        let batch = match self.backend.int_shape(tokens) {
            [b] if *b > 0 => *b,
            s => return Err(Error::shape("tokens", "[B] with B >= 1", s)),
        };
        let tokens = self.backend.reshape_ints(tokens, &[1, batch])?;
        self.forward(&tokens, state)
    }

    /// Zero states for a batch of `batch` rows (where a stream starts).
    pub fn zero_state(&mut self, batch: usize) -> Result<State<B>> {
        self.rnn.zero_state(batch)
    }

    /// The training forward over `tokens` `[T, B]` from `state` (with
    /// dropout when `train` is given): logits and final state as values, and
    /// what [`SeqModel::backward`] needs.
    pub fn forward_train(
        &mut self,
        tokens: &B::Ints,
        state: Option<&State<B>>,
        train: Option<Train>,
    ) -> Result<(ForwardOut<B>, ModelSaved<B>)> {
        let (steps, batch) = self.check_tokens("tokens", tokens)?;
        self.check_state(state, batch)?;
        self.pool.next_pass(&self.backend);
        let rows = steps * batch;
        let x = self.embed(tokens, steps, batch)?;
        let drop = self.dropout_for(train);
        let (h0, c0) = State::split(state);
        let (out, rnn) = match &x {
            Some(x) => self.rnn.forward_train(x, h0, c0, None, drop)?,
            None => self.rnn.forward_train_one_hot(tokens, h0, c0, None, drop)?,
        };
        let top = match drop {
            Some(d) => {
                let top = self
                    .pool
                    .take(&self.backend, &[steps, batch, self.config.output_width()])?;
                let width = self.config.output_width();
                let spec = d.at_site(OUTPUT_DROPOUT_SITE, steps, batch, width);
                self.backend.dropout(&spec, &out.output, &top)?;
                top
            }
            None => out.output.clone(),
        };
        let logits = self.decode(&top, rows)?;
        let saved = ModelSaved {
            model: self.id,
            steps,
            batch,
            tokens: tokens.clone(),
            rnn,
            top,
            logits: logits.clone(),
            dropout: drop,
        };
        Ok((
            ForwardOut {
                logits,
                state: out.state(),
            },
            saved,
        ))
    }

    /// Records the loss and backward of the forward that returned `saved`:
    /// gradients of the mean cross-entropy against `targets` `[T, B]`
    /// (`IGNORE_INDEX` where no loss) are **added** to the gradient buffer, and
    /// the loss summary is written to `stats` at `stats_off`. Gradients stop
    /// at the forward's initial state.
    pub fn backward(
        &mut self,
        saved: &ModelSaved<B>,
        targets: &B::Ints,
        stats: &B::Tensor,
        stats_off: usize,
    ) -> Result<()> {
        self.backward_scaled(saved, targets, 1.0, stats, stats_off)
    }

    /// [`SeqModel::backward`] of `scale ×` the mean loss. A data-parallel rank
    /// weights its share of a batch by the fraction of the batch's targets it
    /// holds, so that the ranks' gradients sum to the whole batch's.
    pub fn backward_scaled(
        &mut self,
        saved: &ModelSaved<B>,
        targets: &B::Ints,
        scale: f64,
        stats: &B::Tensor,
        stats_off: usize,
    ) -> Result<()> {
        self.backward_with(saved, targets, scale, stats, stats_off, &mut |_| Ok(()))
    }

    /// [`SeqModel::backward_scaled`], calling `ready` with each range of the
    /// gradient buffer as soon as the backward has recorded its last
    /// gradient: the decoder, then the stack's layers top first, then the
    /// embedding. The ranges cover the parameters once. A data-parallel
    /// trainer starts summing each over the ranks while the rest of the
    /// backward runs.
    pub fn backward_with(
        &mut self,
        saved: &ModelSaved<B>,
        targets: &B::Ints,
        scale: f64,
        stats: &B::Tensor,
        stats_off: usize,
        ready: &mut dyn FnMut(std::ops::Range<usize>) -> Result<()>,
    ) -> Result<()> {
        if !scale.is_finite() {
            return Err(Error::invalid(
                "loss scale",
                format!("{scale} is not a finite number"),
            ));
        }
        if saved.model != self.id {
            return Err(Error::invalid(
                "saved",
                "comes from another model's forward; pass the one this model's forward_train returned",
            ));
        }
        let (steps, batch) = (saved.steps, saved.batch);
        expect_shape(
            "targets",
            "[T, B] of the forward",
            &[steps, batch],
            self.backend.int_shape(targets),
        )?;
        self.pool.next_pass(&self.backend);
        let cfg = self.config;
        let (v, h, rows) = (cfg.vocab, cfg.output_width(), steps * batch);
        let dlogits = self.pool.take(&self.backend, &[rows, v])?;
        self.record_loss(
            &saved.logits,
            targets,
            stats,
            stats_off,
            scale,
            Some(&dlogits),
        )?;
        let b = &self.backend;
        // Decoder: logits = top · Wᵀ + b.
        let w_off = self.offset("decoder.weight")?;
        let b_off = self.offset("decoder.bias")?;
        // The stack's output gradient: packed on the GPU in a 16-bit pass
        // where the stack reads it so and the product can store it (an
        // even width; no output dropout, whose kernel reads 32-bit words).
        let packed =
            saved.dropout.is_none() && cfg.rnn().reads_packed_output_grad() && h.is_multiple_of(2);
        let dh = if packed {
            self.pool.take_packed(b, &[steps, batch, h])?
        } else {
            self.pool.take(b, &[steps, batch, h])?
        };
        b.gemm(
            &Gemm::nn(rows, h, v).offsets(0, w_off, 0),
            &dlogits,
            &self.weights,
            None,
            &dh,
        )?;
        b.gemm(
            &Gemm::tn(v, h, rows).offsets(0, 0, w_off).accumulating(true),
            &dlogits,
            &saved.top,
            None,
            &self.grads,
        )?;
        let cs = ColSum {
            out_off: b_off,
            accumulate: true,
            ..ColSum::new(rows, v)
        };
        b.sum_cols(&cs, &dlogits, &self.grads)?;
        ready(w_off..b_off + v)?;
        let dout = match saved.dropout {
            Some(d) => {
                let dtop = self.pool.take(b, &[steps, batch, h])?;
                b.dropout(&d.at_site(OUTPUT_DROPOUT_SITE, steps, batch, h), &dh, &dtop)?;
                dtop
            }
            None => dh,
        };
        let g = self
            .rnn
            .backward_with(&saved.rnn, Some(&dout), None, None, &self.grads, ready)?;
        if let (InputEncoding::Embedding(_), Some(d_input)) = (cfg.input, &g.input) {
            let s = EmbedSpec {
                n: rows,
                e: cfg.input_width(),
                v,
                table_off: self.offset("embedding.weight")?,
                ..Default::default()
            };
            self.backend
                .embed_backward(&s, &saved.tokens, d_input, &self.grads, true)?;
            ready(s.table_off..s.table_off + v * s.e)?;
        }
        Ok(())
    }

    /// Forward, loss and backward over one chunk ([`SeqModel::forward_train`]
    /// then [`SeqModel::backward`]); returns both results.
    pub fn chunk(
        &mut self,
        tokens: &B::Ints,
        targets: &B::Ints,
        state: Option<&State<B>>,
        train: Option<Train>,
        stats: &B::Tensor,
        stats_off: usize,
    ) -> Result<(ForwardOut<B>, ModelSaved<B>)> {
        self.check_targets(tokens, targets)?;
        let (out, saved) = self.forward_train(tokens, state, train)?;
        self.backward(&saved, targets, stats, stats_off)?;
        Ok((out, saved))
    }

    /// The state after `steps` steps of the forward that returned `saved`
    /// (truncated BPTT starts the next window from it).
    pub fn state_after(&mut self, saved: &ModelSaved<B>, steps: usize) -> Result<State<B>> {
        if saved.model != self.id {
            return Err(Error::invalid(
                "saved",
                "comes from another model's forward",
            ));
        }
        self.rnn.state_after(&saved.rnn, steps)
    }

    /// The inference forward and the loss against `targets` `[T, B]`, summary
    /// into `stats` at `stats_off`; no gradients.
    pub fn evaluate(
        &mut self,
        tokens: &B::Ints,
        targets: &B::Ints,
        stats: &B::Tensor,
        stats_off: usize,
    ) -> Result<ForwardOut<B>> {
        self.check_targets(tokens, targets)?;
        let out = self.forward(tokens, None)?;
        self.record_loss(&out.logits, targets, stats, stats_off, 1.0, None)?;
        Ok(out)
    }

    /// `(T, B)` of `tokens`, after checking that `targets` has the same shape.
    fn check_targets(&self, tokens: &B::Ints, targets: &B::Ints) -> Result<(usize, usize)> {
        let (steps, batch) = self.check_tokens("tokens", tokens)?;
        expect_shape(
            "targets",
            "[T, B]",
            &[steps, batch],
            self.backend.int_shape(targets),
        )?;
        Ok((steps, batch))
    }

    /// The dropout of a training forward (none when evaluating or with p = 0).
    fn dropout_for(&self, train: Option<Train>) -> Option<LayerDropout> {
        train
            .filter(|_| self.config.dropout > 0.0)
            .map(|t| LayerDropout {
                p: self.config.dropout,
                seed: t.seed,
                step: t.step,
                site: 0,
                rows: t.rows,
            })
    }

    /// Records the cross-entropy of `logits` against `targets`, its summary
    /// into `stats` at `stats_off`, and with `dlogits` the gradient of
    /// `scale ×` the mean loss with respect to the logits.
    fn record_loss(
        &mut self,
        logits: &B::Tensor,
        targets: &B::Ints,
        stats: &B::Tensor,
        stats_off: usize,
        scale: f64,
        dlogits: Option<&B::Tensor>,
    ) -> Result<()> {
        let b = &self.backend;
        let rows = b.numel(logits) / self.config.vocab;
        let targets_flat = b.reshape_ints(targets, &[rows])?;
        let shape = Rows {
            rows,
            cols: self.config.vocab,
        };
        self.pool.xent(
            b,
            shape,
            logits,
            &targets_flat,
            stats,
            stats_off,
            scale,
            dlogits,
        )
    }

    /// Offset of the recurrent stack's parameters.
    pub fn rnn_offset(&self) -> usize {
        self.rnn.offset()
    }

    /// The recurrent stack.
    pub fn rnn(&self) -> &Rnn<B> {
        &self.rnn
    }

    /// Overwrites every parameter.
    pub fn set_params(&self, values: &[f64]) -> Result<()> {
        if values.len() != self.layout.total {
            return Err(Error::invalid(
                "parameters",
                format!("{} values for {}", values.len(), self.layout.total),
            ));
        }
        let v: Vec<B::Elem> = values.iter().map(|&x| B::Elem::of(x)).collect();
        self.backend.write(&self.params, &v)?;
        self.refresh_weights()
    }

    /// Zeroes the gradients.
    pub fn zero_grads(&self) -> Result<()> {
        self.backend.fill(&self.grads, 0, self.layout.total, 0.0)
    }
}
