//! Recurrent stacks (`nn.RNN` / `nn.LSTM` / `nn.GRU`): parameters, the pooled
//! buffers of their passes, and the schedule of a whole sequence forward and
//! backward (full BPTT).
//!
//! The schedule is written once against [`Backend`]; on the GPU every launch
//! below is recorded into the pending submission and nothing is read back, so
//! a whole forward (or backward) pass is one submission (one per
//! `max_dispatches_per_submit` dispatches for long sequences).
//!
//! ## Forward, per layer `l` and direction `d`
//! 1. `xg = input · W_ihᵀ + b_ih` for all T steps: one matmul `[T·B, In] × [In, G·H]`.
//! 2. The initial state goes into slot 0 (forward) or slot T (reverse) of `hs`/`cs`.
//! 3. T fused cell steps, `t = 0..T` forward or `T−1..0` reverse, each writing
//!    its columns of the layer output `[T, B, D·H]`.
//! 4. The final slot is copied to `hn`/`cn`.
//!
//! ## Backward, layers from the top
//! 1. The carries start at `grad_hn`/`grad_cn`.
//! 2. T fused backward steps in the opposite time order, each computing its
//!    gate gradients `dG_t` (saved for step 4) and the carries.
//! 3. `grad_h0 = carry + dG_first·W_hh`, `grad_c0 = carry`.
//! 4. Weight gradients over all steps at once: `dW_ih += dGxᵀ·input`,
//!    `dW_hh += dGhᵀ·h_prev`, `db += Σ dG` (matmuls over `T·B` rows).
//! 5. The gradient of the layer input, `dGx · W_ih`, summed over directions,
//!    is the output gradient of the layer below.
//!
//! ## Values and saved activations
//! [`Rnn::forward`] is inference: it keeps two state slots per layer and no
//! gates, and returns values. [`Rnn::forward_train`] keeps every state slot
//! and the gates in an [`RnnSaved`], which [`Rnn::backward`] takes; the
//! stack's buffers come from a pool and are reused only when nobody holds
//! them. [`Rnn::step`] advances a [`State`] by one time step (streaming).
//!
//! ```
//! use rnn_wgpu::backend::{Backend, CpuBackend};
//! use rnn_wgpu::nn::{Rnn, RnnConfig};
//! use rnn_wgpu::ops::cell::Cell;
//!
//! # fn main() -> rnn_wgpu::Result<()> {
//! let b = CpuBackend::<f64>::new();
//! let mut rnn = Rnn::new(b.clone(), RnnConfig::new(Cell::Gru, 2, 3).layers(2), 1)?;
//! let x1 = b.tensor_f64(&[4, 1, 2], &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])?;
//! let x2 = b.tensor_f64(&[4, 1, 2], &[0.0; 8])?;
//! let (out1, saved1) = rnn.forward_train(&x1, None, None, None, None)?;
//! let kept = b.read(&out1.output)?;
//! rnn.forward(&x2, None, None, None)?; // another forward of the same shape…
//! assert_eq!(b.read(&out1.output)?, kept); // …leaves out1 as it was
//! let grads = rnn.zeros_like_params()?;
//! rnn.backward(&saved1, Some(&out1.output), None, None, &grads)?; // differentiates x1's forward
//!
//! // Streaming: the same sequence one step at a time ends in the same state.
//! let mut state = None;
//! for t in 0..4 {
//!     let row = b.tensor_f64(&[1, 2], &[0.1 + 0.2 * t as f64, 0.2 + 0.2 * t as f64])?;
//!     let (_, next) = rnn.step(&row, state.as_ref())?;
//!     state = Some(next);
//! }
//! let streamed = b.read(&state.unwrap().h)?;
//! for (s, w) in streamed.iter().zip(b.read(&out1.hn)?) {
//!     assert!((s - w).abs() < 1e-12);
//! }
//! # Ok(())
//! # }
//! ```

use super::params::{ParamEntry, ParamLayout};
use super::pool::{Pool, next_owner_id};
use crate::backend::{Backend, StepBackward, StepForward, expect_shape};
use crate::error::{Error, Result};
use crate::ops::cell::{Cell, DirStrides, Fusion, StepSpec, Variant, Wave};
use crate::ops::dropout::{DropoutKey, DropoutSpec, Shard};
use crate::ops::embed::{EmbedSpec, Table};
use crate::ops::matmul::Gemm;
use crate::ops::reduce::{ColDot, ColSum};
use crate::ops::skip::{Skip, SkipBackward, SkipForward};
use crate::parity::rng;
use crate::precision::Precision;
use crate::real::Real;
use serde::{Deserialize, Serialize};

use rand::RngExt;

/// Shape of a recurrent stack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RnnConfig {
    /// Cell type.
    pub cell: Cell,
    /// The cell's variant (PyTorch's cell by default), the same in every layer.
    pub variant: Variant,
    /// Input features I.
    pub input_size: usize,
    /// Hidden size H.
    pub hidden_size: usize,
    /// Layers L.
    pub num_layers: usize,
    /// Two directions (D = 2) when true.
    pub bidirectional: bool,
    /// How every layer above the first joins its input to its output.
    pub skip: Skip,
}

/// The largest supported size of one dimension (features, hidden units).
pub const MAX_DIM: usize = 1 << 20;

/// The most layers a stack may have.
pub const MAX_LAYERS: usize = 1024;

/// How a pass orders the steps of a stack's layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StepOrder {
    /// A wavefront where it can run and pays (each step its own dispatch,
    /// see [`Backend::steps_per_call`]: the GPU's tiled and split step
    /// kernels), else layer by layer.
    #[default]
    Auto,
    /// Each layer's whole sequence before the next layer's: an input matmul
    /// over all T steps, then the steps.
    Layers,
    /// A wavefront over the layers of a unidirectional stack: layer l at step
    /// t beside layer l + 1 at step t − 1 in one step call (mirrored in the
    /// backward), T + L − 1 calls a pass instead of L·T, each layer above the
    /// first computing its input product inside its step (see
    /// [`crate::ops::cell::Wave`]). It agrees with [`StepOrder::Layers`] to
    /// rounding (the input product's sums run in another order). A stack it
    /// cannot run (bidirectional, one layer, skip connections, dropout
    /// between layers, a projection, a step of two dispatches) is an error.
    Wavefront,
}

impl StepOrder {
    /// `auto`, `layers` or `wavefront`.
    pub fn name(&self) -> &'static str {
        match self {
            StepOrder::Auto => "auto",
            StepOrder::Layers => "layers",
            StepOrder::Wavefront => "wavefront",
        }
    }
}

/// Fails when `n` elements cannot be indexed by the kernels (u32).
pub fn check_index_range(what: &str, n: u128) -> Result<()> {
    if n > u32::MAX as u128 {
        return Err(Error::invalid(
            what,
            format!(
                "{n} elements; at most {} are supported in one tensor",
                u32::MAX
            ),
        ));
    }
    Ok(())
}

/// Offsets of one layer-direction's parameters in the flat buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirParams {
    /// `weight_ih` `[G·H, In]`
    pub w_ih: usize,
    /// `weight_hh` `[G·H, H]`
    pub w_hh: usize,
    /// `bias_ih` `[G·H]`
    pub b_ih: usize,
    /// `bias_hh` `[G·H]`
    pub b_hh: usize,
    /// `weight_p` `[3H]` (an LSTM with peepholes), else 0.
    pub peep: usize,
    /// `weight_hr` `[P, H]` (an LSTM with a projection), else 0.
    pub hr: usize,
}

impl DirParams {
    /// Offsets of layer `l`, direction `d` in `layout`, a layout built by
    /// [`RnnConfig::layout`], found by their names.
    pub fn of(layout: &ParamLayout, l: usize, d: usize) -> Result<Self> {
        let sfx = RnnConfig::suffix(l, d);
        let off = |name: &str| {
            layout
                .get(&format!("{name}{sfx}"))
                .map(|e| e.offset)
                .ok_or_else(|| {
                    Error::invalid(
                        "parameters",
                        format!("the layout has no {name}{sfx} (layer {l}, direction {d})"),
                    )
                })
        };
        Ok(DirParams {
            w_ih: off("weight_ih")?,
            w_hh: off("weight_hh")?,
            b_ih: off("bias_ih")?,
            b_hh: off("bias_hh")?,
            peep: layout
                .get(&format!("weight_p{sfx}"))
                .map_or(0, |e| e.offset),
            hr: layout
                .get(&format!("weight_hr{sfx}"))
                .map_or(0, |e| e.offset),
        })
    }

    fn shifted(self, by: usize) -> Self {
        DirParams {
            w_ih: self.w_ih + by,
            w_hh: self.w_hh + by,
            b_ih: self.b_ih + by,
            b_hh: self.b_hh + by,
            peep: self.peep + by,
            hr: self.hr + by,
        }
    }
}

/// Dropout on the outputs of every layer but the last (PyTorch's `dropout`
/// argument of `nn.LSTM`), keyed for reproducible masks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerDropout {
    /// Drop probability.
    pub p: f32,
    /// Training seed.
    pub seed: u64,
    /// Step (or chunk) counter: a new mask every step.
    pub step: u64,
    /// Dropout site of the first layer boundary (layer `l` uses `site + l`).
    pub site: u32,
    /// Where the batch sits in a global batch (data-parallel training): the
    /// masks are those of the global batch's rows. `None`: it is the batch.
    pub rows: Option<BatchRows>,
}

/// A data-parallel rank's share of a global batch: rows
/// `offset..offset + B` of `global`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRows {
    /// First global row.
    pub offset: usize,
    /// Rows of the global batch.
    pub global: usize,
}

impl LayerDropout {
    /// The mask of a `[T, B, W]` tensor at dropout site `site` (this seed and step).
    pub(crate) fn at_site(
        &self,
        site: u32,
        steps: usize,
        batch: usize,
        width: usize,
    ) -> DropoutSpec {
        DropoutSpec {
            n: steps * batch * width,
            x_off: 0,
            y_off: 0,
            p: self.p,
            key: DropoutKey {
                seed: self.seed,
                layer: site,
                step: self.step,
            },
            shard: self.rows.map(|r| Shard {
                width,
                batch,
                offset: r.offset,
                global: r.global,
            }),
        }
    }

    fn spec(&self, l: usize, steps: usize, batch: usize, width: usize) -> DropoutSpec {
        self.at_site(self.site + l as u32, steps, batch, width)
    }
}

impl RnnConfig {
    /// One layer, one direction.
    pub fn new(cell: Cell, input_size: usize, hidden_size: usize) -> Self {
        RnnConfig {
            cell,
            variant: Variant::default(),
            input_size,
            hidden_size,
            num_layers: 1,
            bidirectional: false,
            skip: Skip::None,
        }
    }

    /// With skip connections `skip` between the stacked layers.
    pub fn skip(mut self, skip: Skip) -> Self {
        self.skip = skip;
        self
    }

    /// Whether layer `l` has a skip connection (every layer above the first).
    pub fn has_skip(&self, l: usize) -> bool {
        self.skip != Skip::None && l > 0
    }

    /// Whether the stack reads a packed 16-bit output gradient (a GPU
    /// tensor of [`Backend::zeros_packed`]): its top layer's steps read it,
    /// unless a skip connection there does (which reads 32-bit words). The
    /// input rows may always be packed: only the first layer's matrix
    /// products read them.
    pub fn reads_packed_output_grad(&self) -> bool {
        !self.has_skip(self.num_layers.saturating_sub(1))
    }

    /// With `n` layers.
    pub fn layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }

    /// With the cell variant `v`.
    pub fn variant(mut self, v: Variant) -> Self {
        self.variant = v;
        self
    }

    /// Bidirectional or not.
    pub fn bidirectional(mut self, yes: bool) -> Self {
        self.bidirectional = yes;
        self
    }

    /// D: 2 when bidirectional, else 1.
    pub fn directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    /// Input width of layer `l`: I for the first, D·H above (D·P with a projection).
    pub fn layer_input(&self, l: usize) -> usize {
        if l == 0 {
            self.input_size
        } else {
            self.output_size()
        }
    }

    /// Width of the hidden state h: H, or P with a projection (c stays H).
    pub fn state_size(&self) -> usize {
        self.variant.state_size(self.hidden_size)
    }

    /// Output width D·H (D·P with a projection).
    pub fn output_size(&self) -> usize {
        self.directions() * self.state_size()
    }

    /// Rejects empty and absurd sizes: every dimension in `1..=MAX_DIM`, at
    /// most `MAX_LAYERS` layers, and a parameter count the kernels can index (u32).
    pub fn validate(&self) -> Result<()> {
        self.variant.validate(self.cell)?;
        self.variant.check_proj(self.hidden_size)?;
        if self.skip != Skip::None && self.num_layers < 2 {
            return Err(Error::invalid(
                "skip",
                format!(
                    "{} connections join stacked layers; a stack of {} layer has none",
                    self.skip.name(),
                    self.num_layers
                ),
            ));
        }
        for (arg, v, max) in [
            ("input_size", self.input_size, MAX_DIM),
            ("hidden_size", self.hidden_size, MAX_DIM),
            ("num_layers", self.num_layers, MAX_LAYERS),
        ] {
            if v == 0 {
                return Err(Error::invalid(arg, "must be at least 1"));
            }
            if v > max {
                return Err(Error::invalid(
                    arg,
                    format!("{v} is beyond the supported {max}"),
                ));
            }
        }
        let (g, h, i) = (
            self.cell.gates() as u128,
            self.hidden_size as u128,
            self.input_size as u128,
        );
        let d = self.directions() as u128;
        // Per direction: W_ih, W_hh [G·H, P], biases, peepholes, W_hr [P, H].
        let peep = self.variant.peephole_len(self.hidden_size) as u128;
        let hp = self.state_size() as u128;
        let proj = if self.variant.proj_size > 0 {
            hp * h
        } else {
            0
        };
        let first = g * h * (i + hp + 2) + peep + proj;
        let rest = g * h * (d * hp + hp + 2) + peep + proj;
        let dh = d * hp;
        let highway = if self.skip == Skip::Highway {
            dh * (dh + 1)
        } else {
            0
        };
        let total = d * first + (self.num_layers as u128 - 1) * (d * rest + highway);
        check_index_range("the recurrent stack's parameters", total)
    }

    /// PyTorch's parameter name suffix: `_l{k}` and `_reverse` for the backward direction.
    pub fn suffix(l: usize, d: usize) -> String {
        format!("_l{l}{}", if d == 1 { "_reverse" } else { "" })
    }

    /// Parameters in PyTorch's order (per layer, per direction: `weight_ih`,
    /// `weight_hh` (`[G·H, P]` with a projection), `bias_ih`, `bias_hh`, then
    /// `weight_hr` `[P, H]` with a projection and `weight_p` `[3H]` with
    /// peepholes; after a layer's directions, with highway connections,
    /// `weight_t_l{k}` `[D·H, D·H]` and `bias_t_l{k}` `[D·H]`), packed into
    /// one flat buffer.
    pub fn layout(&self) -> ParamLayout {
        let gh = self.cell.gates() * self.hidden_size;
        let mut layout = ParamLayout::default();
        for l in 0..self.num_layers {
            for d in 0..self.directions() {
                let sfx = Self::suffix(l, d);
                layout.push(format!("weight_ih{sfx}"), &[gh, self.layer_input(l)]);
                layout.push(format!("weight_hh{sfx}"), &[gh, self.state_size()]);
                layout.push(format!("bias_ih{sfx}"), &[gh]);
                layout.push(format!("bias_hh{sfx}"), &[gh]);
                if self.variant.proj_size > 0 {
                    layout.push(
                        format!("weight_hr{sfx}"),
                        &[self.variant.proj_size, self.hidden_size],
                    );
                }
                if self.variant.peepholes {
                    layout.push(format!("weight_p{sfx}"), &[3 * self.hidden_size]);
                }
            }
            if self.skip == Skip::Highway && l > 0 {
                let dh = self.output_size();
                layout.push(format!("weight_t_l{l}"), &[dh, dh]);
                layout.push(format!("bias_t_l{l}"), &[dh]);
            }
        }
        layout
    }
}

/// What a forward keeps of one layer's cells for the backward: the states
/// and gates of every direction, direction 1's parts `strides` after
/// direction 0's.
#[derive(Debug)]
struct SavedCells<B: Backend> {
    hs: B::Tensor,
    cs: Option<B::Tensor>,
    gates: Option<B::Tensor>,
    strides: DirStrides,
}

#[derive(Debug)]
struct SavedLayer<B: Backend> {
    cells: SavedCells<B>,
    // With a skip connection: the cells' output and the highway gate T.
    cells_out: Option<B::Tensor>,
    gate: Option<B::Tensor>,
    // What the layer above read: this layer's output, masked when dropout is
    // on (`None` for the top layer, whose output only the caller holds).
    fed_up: Option<B::Tensor>,
}

/// What a wavefront's training forward keeps: every layer's states, gates
/// and output in one buffer each, layer `l`'s part `l` strides in.
#[derive(Debug)]
struct SavedWave<B: Backend> {
    hs: B::Tensor,
    cs: Option<B::Tensor>,
    gates: Option<B::Tensor>,
    outs: B::Tensor,
    strides: DirStrides,
}

/// What a stack reads: rows `[T, B, I]`, or tokens `[T, B]` standing for
/// one-hot rows.
#[derive(Clone, Copy)]
enum StackInput<'a, B: Backend> {
    Rows(&'a B::Tensor),
    OneHot(&'a B::Ints),
}

impl<B: Backend> StackInput<'_, B> {
    /// What a training forward keeps of it (a reference, not a copy).
    fn saved(&self) -> SavedInput<B> {
        match self {
            StackInput::Rows(x) => SavedInput::Rows((*x).clone()),
            StackInput::OneHot(t) => SavedInput::OneHot((*t).clone()),
        }
    }
}

/// The input a training forward read, for its backward.
#[derive(Debug)]
enum SavedInput<B: Backend> {
    Rows(B::Tensor),
    OneHot(B::Ints),
}

/// What a training forward ([`Rnn::forward_train`]) keeps for its backward:
/// the states and gates of every step, the stack's input and the dropout
/// masks' key. [`Rnn::backward`] differentiates exactly the forward that made
/// it, whatever ran in between; when it is dropped its memory goes back to the
/// stack's pool.
///
/// It refers to the input `x` the forward read (no copy is made): overwriting
/// `x` before the backward changes the weight gradients.
#[derive(Debug)]
pub struct RnnSaved<B: Backend> {
    stack: u64,
    steps: usize,
    batch: usize,
    input: SavedInput<B>,
    lengths: Option<B::Ints>,
    dropout: Option<LayerDropout>,
    layers: Vec<SavedLayer<B>>,
    // A wavefront's forward keeps its buffers here instead (layers is empty).
    wave: Option<SavedWave<B>>,
}

impl<B: Backend> RnnSaved<B> {
    /// T and B of the forward.
    pub fn shape(&self) -> (usize, usize) {
        (self.steps, self.batch)
    }
}

/// Result of a forward pass. The tensors are values: nothing the stack does
/// later writes to them.
#[derive(Clone, Debug)]
pub struct RnnOutput<B: Backend> {
    /// `[T, B, D·H]`
    pub output: B::Tensor,
    /// `[L·D, B, H]`
    pub hn: B::Tensor,
    /// `[L·D, B, H]` (LSTM)
    pub cn: Option<B::Tensor>,
}

impl<B: Backend> RnnOutput<B> {
    /// The final states, as the state a later forward or step starts from.
    pub fn state(&self) -> State<B> {
        State {
            h: self.hn.clone(),
            c: self.cn.clone(),
        }
    }
}

/// The recurrent state of a stack between calls, on the device: `h` (and `c`
/// for an LSTM), `[L·D, B, H]`, layer-major as PyTorch's `h_n`. Streaming
/// inference ([`Rnn::step`]) passes it from one step to the next without
/// reading it back; [`Backend::read`] on `h` reads it when wanted.
#[derive(Clone, Debug)]
pub struct State<B: Backend> {
    /// `[L·D, B, H]` hidden states.
    pub h: B::Tensor,
    /// `[L·D, B, H]` cell states (LSTM), else `None`.
    pub c: Option<B::Tensor>,
}

impl<B: Backend> State<B> {
    /// `(h0, c0)` of an optional state, as [`Rnn::forward`] takes them.
    pub fn split(state: Option<&Self>) -> (Option<&B::Tensor>, Option<&B::Tensor>) {
        match state {
            Some(s) => (Some(&s.h), s.c.as_ref()),
            None => (None, None),
        }
    }
}

/// Gradients of the inputs of a forward pass (parameter gradients are
/// accumulated into the caller's flat buffer). Values, like the outputs.
#[derive(Clone, Debug)]
pub struct RnnInputGrads<B: Backend> {
    /// `[T, B, I]`; `None` when input gradients are turned off
    /// ([`Rnn::set_input_gradient`]).
    pub input: Option<B::Tensor>,
    /// `[L·D, B, H]`
    pub h0: B::Tensor,
    /// `[L·D, B, H]` (LSTM)
    pub c0: Option<B::Tensor>,
}

/// A recurrent stack on backend `B`. Its parameters live in a flat tensor,
/// its own or a model's shared one (at `offset`); gradients use the same layout.
#[derive(Debug)]
pub struct Rnn<B: Backend> {
    id: u64,
    config: RnnConfig,
    layout: ParamLayout,
    backend: B,
    params: B::Tensor,
    offset: usize,
    input_grad: bool,
    step_order: StepOrder,
    precision: Precision,
    pool: Pool<B>,
    // The last packed-sequence lengths uploaded, and their tensor.
    lengths: Option<(Vec<i32>, B::Ints)>,
}

/// The shape of initial and final states, as errors name it.
const STATE_SHAPE: &str = "[L·D, B, H]";

/// The shape of h states, as errors name it: P wide with a projection.
fn h_state_letters(cfg: &RnnConfig) -> &'static str {
    if cfg.variant.proj_size > 0 {
        "[L·D, B, P]"
    } else {
        STATE_SHAPE
    }
}

/// What a forward keeps: nothing (inference) or everything its backward needs.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Infer,
    Train(Option<LayerDropout>),
}

impl<B: Backend> Rnn<B> {
    /// A stack with PyTorch's default initialization: every parameter uniform
    /// in `±1/√H`, from `seed`.
    pub fn new(backend: B, config: RnnConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let layout = config.layout();
        let k = 1.0 / (config.hidden_size as f64).sqrt();
        let mut r = rng(seed);
        let values: Vec<B::Elem> = (0..layout.total)
            .map(|_| B::Elem::of(r.random_range(-k..k)))
            .collect();
        Self::from_params(backend, config, &values)
    }

    /// A stack holding the flat parameters `values` (laid out by [`RnnConfig::layout`]).
    pub fn from_params(backend: B, config: RnnConfig, values: &[B::Elem]) -> Result<Self> {
        config.validate()?;
        let layout = config.layout();
        if values.len() != layout.total {
            return Err(Error::invalid(
                "parameters",
                format!(
                    "{} values given, the {} layout has {}",
                    values.len(),
                    config.cell.name(),
                    layout.total
                ),
            ));
        }
        let params = backend.tensor(&[layout.total], values)?;
        Self::shared(backend, config, params, 0)
    }

    /// A stack whose parameters are the elements `offset..offset + P` of
    /// `params` (a model's flat buffer); gradients go to the same range of the
    /// gradient buffer passed to [`Rnn::backward`].
    pub fn shared(backend: B, config: RnnConfig, params: B::Tensor, offset: usize) -> Result<Self> {
        config.validate()?;
        let layout = config.layout();
        let len = backend.numel(&params);
        if offset.saturating_add(layout.total) > len {
            return Err(Error::invalid(
                "parameters",
                format!(
                    "{} parameters at offset {offset} do not fit in a buffer of {len}",
                    layout.total
                ),
            ));
        }
        Ok(Rnn {
            id: next_owner_id(),
            config,
            layout,
            backend,
            params,
            offset,
            input_grad: true,
            step_order: StepOrder::Auto,
            precision: Precision::F32,
            pool: Pool::default(),
            lengths: None,
        })
    }

    /// Whether [`Rnn::backward`] computes the gradient of the input (on by
    /// default; a model fed one-hot vectors has no use for it, and skipping it
    /// saves a `[T·B, G·H] × [G·H, I]` matmul per direction).
    pub fn set_input_gradient(&mut self, on: bool) {
        self.input_grad = on;
    }

    /// Stores the stack's activations, saved states and gates, and the
    /// activation gradients of its backward at `p` (f32 by default), every
    /// product and sum still accumulating in f32 ([`crate::precision`]).
    /// The parameters are read from the tensor the stack was given: a
    /// [`crate::nn::model::SeqModel`] of a 16-bit precision gives it a
    /// 16-bit copy of its f32 master weights. Fails on a backend without
    /// 16-bit storage.
    pub fn set_precision(&mut self, p: Precision) -> Result<()> {
        if !self.backend.supports(p) {
            return Err(crate::backend::unsupported_precision(
                &self.backend.describe(),
                p,
            ));
        }
        self.precision = p;
        self.pool.set_store(p);
        Ok(())
    }

    /// Bytes of the stack's pooled buffers (activations, saved states and
    /// gates, activation gradients, in use or free): as held
    /// ([`Backend::held_bytes`]), or with `packed` at their storage
    /// precision ([`Backend::stored_bytes`]).
    pub fn workspace_bytes(&self, packed: bool) -> u64 {
        self.pool.bytes(&self.backend, packed)
    }

    /// The precision of the stack's activations ([`Rnn::set_precision`]).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// How the passes order the layers' steps ([`StepOrder::Auto`] by
    /// default). A backward follows the order of the forward it
    /// differentiates.
    pub fn set_step_order(&mut self, order: StepOrder) {
        self.step_order = order;
    }

    /// Whether a pass over `steps` × `batch` rows runs as a wavefront (see
    /// [`StepOrder`]); `dropout`: the pass drops between layers.
    pub fn runs_wavefront(&self, steps: usize, batch: usize, dropout: bool) -> Result<bool> {
        let cfg = &self.config;
        // The largest buffer a wavefront holds for the whole stack: the gate
        // gradients [L, T, B, G·H] (or the saved gates, or the state slots).
        let width = cfg.cell.gates().max(cfg.variant.saved(cfg.cell)) * cfg.hidden_size;
        let stack_wide = [cfg.num_layers, steps.saturating_add(1), batch, width]
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d));
        let fits = stack_wide
            .is_some_and(|n| n <= self.backend.max_tensor_elems() && u32::try_from(n).is_ok());
        let why = if cfg.bidirectional {
            Some("a bidirectional layer's next layer needs both directions' whole output")
        } else if cfg.num_layers < 2 {
            Some("it has one layer")
        } else if (1..cfg.num_layers).any(|l| cfg.has_skip(l)) {
            Some("a skip connection joins a layer's whole input to its output")
        } else if dropout {
            Some("dropout between layers")
        } else if cfg.variant.proj_size > 0 {
            Some("a projected LSTM's step is two dispatches")
        } else if cfg.variant.gates_between_dispatches() {
            Some("its step is two dispatches")
        } else if self.wave_plan()?.is_none() {
            Some("its layers' parameters are not evenly spaced")
        } else if !fits {
            Some(
                "its buffers for the whole stack ([L, T, B, G·H]) exceed the largest \
                 tensor this backend binds",
            )
        } else {
            None
        };
        match (self.step_order, why) {
            (StepOrder::Layers, _) | (StepOrder::Auto, Some(_)) => Ok(false),
            (StepOrder::Wavefront, Some(why)) => Err(Error::invalid(
                "step_order",
                format!("a wavefront cannot run this stack: {why}"),
            )),
            (StepOrder::Wavefront, None) => Ok(true),
            (StepOrder::Auto, None) => {
                Ok(self
                    .backend
                    .steps_per_call(&cfg.variant, batch, cfg.hidden_size)
                    == 1)
            }
        }
    }

    /// Every layer's parameter offsets and the distance from one layer's to
    /// the next's, when that distance is the same between all layers (and
    /// every layer above the first reads H features), as a wavefront needs.
    fn wave_plan(&self) -> Result<Option<(Vec<DirParams>, usize)>> {
        let cfg = &self.config;
        if cfg.num_layers < 2 || cfg.directions() != 1 {
            return Ok(None);
        }
        let plan = (0..cfg.num_layers)
            .map(|l| Ok(DirParams::of(&self.layout, l, 0)?.shifted(self.offset)))
            .collect::<Result<Vec<_>>>()?;
        let stride = plan[1].w_hh - plan[0].w_hh;
        let even = plan.iter().enumerate().all(|(l, p)| {
            let at = |base: usize, k: usize| base + k * stride;
            p.w_hh == at(plan[0].w_hh, l)
                && p.b_hh == at(plan[0].b_hh, l)
                && (!cfg.variant.peepholes || p.peep == at(plan[0].peep, l))
                && (l == 0
                    || (p.w_ih == at(plan[1].w_ih, l - 1)
                        && p.b_ih == at(plan[1].b_ih, l - 1)
                        && cfg.layer_input(l) == cfg.hidden_size))
        });
        Ok(even.then_some((plan, stride)))
    }

    /// Fills every buffer the stack reuses with NaN before handing it out, so
    /// that a kernel reading memory it did not write shows up in its results
    /// (a debugging aid; it costs one fill per reuse).
    pub fn set_poison_reused(&mut self, on: bool) {
        self.pool.set_poison(on);
    }

    /// Offset of this stack's parameters in the flat buffer.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The configuration.
    pub fn config(&self) -> &RnnConfig {
        &self.config
    }

    /// Names, shapes and offsets of the parameters.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The flat parameter tensor `[P]`.
    pub fn params(&self) -> &B::Tensor {
        &self.params
    }

    /// A zero tensor shaped like the parameter buffer, for gradients.
    pub fn zeros_like_params(&self) -> Result<B::Tensor> {
        let shape = self.backend.shape(&self.params).to_vec();
        self.backend.zeros(&shape)
    }

    /// Runs the whole sequence `x` `[T, B, I]` from initial states `h0`, `c0`
    /// `[L·D, B, H]` (zeros when `None`; `c0` only for the LSTM), with optional
    /// per-row `lengths` (each in `1..=T`, PyTorch's packed-sequence meaning).
    /// Inference: nothing is kept for a backward (see [`Rnn::forward_train`]).
    pub fn forward(
        &mut self,
        x: &B::Tensor,
        h0: Option<&B::Tensor>,
        c0: Option<&B::Tensor>,
        lengths: Option<&[i32]>,
    ) -> Result<RnnOutput<B>> {
        Ok(self
            .run_forward(StackInput::Rows(x), h0, c0, lengths, Mode::Infer)?
            .0)
    }

    /// [`Rnn::forward`] of one-hot rows: `tokens` `[T, B]` stand for rows of
    /// I = `input_size` zeros with a one at the token (a token outside
    /// `[0, I)`: all zeros). The first layer's input product is then a
    /// gather of `W_ih`'s columns, not a matmul with K = I; its backward a
    /// scatter of the gate gradients into those columns, and there is no
    /// input gradient.
    pub fn forward_one_hot(
        &mut self,
        tokens: &B::Ints,
        h0: Option<&B::Tensor>,
        c0: Option<&B::Tensor>,
        lengths: Option<&[i32]>,
    ) -> Result<RnnOutput<B>> {
        Ok(self
            .run_forward(StackInput::OneHot(tokens), h0, c0, lengths, Mode::Infer)?
            .0)
    }

    /// [`Rnn::forward_train`] of one-hot rows (see [`Rnn::forward_one_hot`]).
    pub fn forward_train_one_hot(
        &mut self,
        tokens: &B::Ints,
        h0: Option<&B::Tensor>,
        c0: Option<&B::Tensor>,
        lengths: Option<&[i32]>,
        dropout: Option<LayerDropout>,
    ) -> Result<(RnnOutput<B>, RnnSaved<B>)> {
        let (out, saved) = self.run_forward(
            StackInput::OneHot(tokens),
            h0,
            c0,
            lengths,
            Mode::Train(dropout),
        )?;
        let saved = saved.ok_or_else(|| Error::invalid("forward", "saved nothing"))?;
        Ok((out, saved))
    }

    /// [`Rnn::forward`] that also returns what [`Rnn::backward`] needs, with
    /// optional dropout between layers (training).
    pub fn forward_train(
        &mut self,
        x: &B::Tensor,
        h0: Option<&B::Tensor>,
        c0: Option<&B::Tensor>,
        lengths: Option<&[i32]>,
        dropout: Option<LayerDropout>,
    ) -> Result<(RnnOutput<B>, RnnSaved<B>)> {
        let (out, saved) =
            self.run_forward(StackInput::Rows(x), h0, c0, lengths, Mode::Train(dropout))?;
        let saved = saved.ok_or_else(|| Error::invalid("forward", "saved nothing"))?;
        Ok((out, saved))
    }

    /// One time step of streaming inference: `x` `[B, I]` (one input row per
    /// batch element) from `state` (zeros when `None`), returning the output
    /// `[B, H]` and the new state. Nothing is read back; the old state is left
    /// as it was. Only causal (unidirectional) stacks can be streamed.
    pub fn step(
        &mut self,
        x: &B::Tensor,
        state: Option<&State<B>>,
    ) -> Result<(B::Tensor, State<B>)> {
        let cfg = self.config;
        if cfg.bidirectional {
            return Err(Error::invalid(
                "step",
                "a bidirectional stack reads the whole sequence; only a unidirectional one can be streamed",
            ));
        }
        let xs = self.backend.shape(x).to_vec();
        if xs.len() != 2 || xs[1] != cfg.input_size || xs[0] == 0 {
            return Err(Error::shape(
                "x",
                format!("[B, I] with B >= 1 and I = {}", cfg.input_size),
                &xs,
            ));
        }
        let x3 = self.backend.reshape(x, &[1, xs[0], xs[1]])?;
        let (h0, c0) = State::split(state);
        let out = self.forward(&x3, h0, c0, None)?;
        let y = self
            .backend
            .reshape(&out.output, &[xs[0], cfg.state_size()])?;
        Ok((y, out.state()))
    }

    /// The lengths on the device. Never written after upload, so the last
    /// upload serves again for the same values (a loop over equal lengths
    /// allocates nothing), shared with any saved forward that holds it.
    fn lengths_tensor(&mut self, lengths: &[i32]) -> Result<B::Ints> {
        if let Some((values, t)) = &self.lengths
            && values.as_slice() == lengths
        {
            return Ok(t.clone());
        }
        let t = self.backend.ints(&[lengths.len()], lengths)?;
        self.lengths = Some((lengths.to_vec(), t.clone()));
        Ok(t)
    }

    /// Zero states for a batch of `batch` rows.
    pub fn zero_state(&mut self, batch: usize) -> Result<State<B>> {
        let cfg = self.config;
        let ld = cfg.num_layers * cfg.directions();
        let (hshape, cshape) = ([ld, batch, cfg.state_size()], [ld, batch, cfg.hidden_size]);
        let b = &self.backend;
        Ok(State {
            h: self.pool.zeros(b, &hshape)?,
            c: cfg
                .cell
                .has_cell_state()
                .then(|| self.pool.zeros(b, &cshape))
                .transpose()?,
        })
    }

    fn run_forward(
        &mut self,
        x: StackInput<'_, B>,
        h0: Option<&B::Tensor>,
        c0: Option<&B::Tensor>,
        lengths: Option<&[i32]>,
        mode: Mode,
    ) -> Result<(RnnOutput<B>, Option<RnnSaved<B>>)> {
        let cfg = self.config;
        let dropout = match mode {
            Mode::Train(Some(d)) => {
                if !(0.0..1.0).contains(&d.p) {
                    return Err(Error::invalid(
                        "dropout",
                        format!("probability {} is outside [0, 1)", d.p),
                    ));
                }
                Some(d).filter(|d| d.p > 0.0 && cfg.num_layers > 1)
            }
            _ => None,
        };
        let train = mode != Mode::Infer;
        let (steps, batch) = match x {
            StackInput::Rows(x) => match self.backend.shape(x) {
                &[t, b, i] if i == cfg.input_size && t > 0 && b > 0 => (t, b),
                xs => {
                    return Err(Error::shape(
                        "input",
                        format!("[T, B, I] with T, B >= 1 and I = {}", cfg.input_size),
                        xs,
                    ));
                }
            },
            StackInput::OneHot(tokens) => match self.backend.int_shape(tokens) {
                &[t, b] if t > 0 && b > 0 => (t, b),
                s => return Err(Error::shape("tokens", "[T, B] with T, B >= 1", s)),
            },
        };
        let (h, dirs) = (cfg.hidden_size, cfg.directions());
        let hp = cfg.state_size();
        let state = [cfg.num_layers * dirs, batch, h];
        let hstate = [cfg.num_layers * dirs, batch, hp];
        let h_shape = h_state_letters(&cfg);
        if let Some(h0) = h0 {
            expect_shape("h0", h_shape, &hstate, self.backend.shape(h0))?;
        }
        if let Some(c0) = c0 {
            if !cfg.cell.has_cell_state() {
                return Err(Error::invalid(
                    "c0",
                    format!("only an LSTM has a cell state; this is {}", cfg.cell.name()),
                ));
            }
            expect_shape("c0", STATE_SHAPE, &state, self.backend.shape(c0))?;
        }
        let lengths = lengths
            .map(|l| {
                check_lengths(l, batch, steps)?;
                self.lengths_tensor(l)
            })
            .transpose()?;
        self.pool.next_pass(&self.backend);
        let b = &self.backend;
        let pool = &mut self.pool;
        let (bh, bp) = (batch * h, batch * hp);
        let gh = cfg.cell.gates() * h;
        let lstm = cfg.cell.has_cell_state();
        let passes = cfg.variant.gates_between_dispatches();
        // Training keeps every state slot and the gates; inference two slots
        // (a ring) and no gates.
        let slots = if train { steps + 1 } else { 2 };
        let hn = pool.take(b, &hstate)?;
        let cn = pool.take_if(b, lstm, &state)?;
        if self.runs_wavefront(steps, batch, dropout.is_some())? {
            let pass = Pass {
                steps,
                batch,
                train,
            };
            return self.wave_forward(x, (h0, c0), lengths, pass, hn, cn);
        }
        let b = &self.backend;
        let pool = &mut self.pool;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        // The layer's input rows (none for one-hot tokens into the first).
        let (mut input, one_hot) = match x {
            StackInput::Rows(x) => (Some(x.clone()), None),
            StackInput::OneHot(t) => (None, Some(t.clone())),
        };
        let mut output = None;
        for l in 0..cfg.num_layers {
            let in_size = cfg.layer_input(l);
            let out = pool.take(b, &[steps, batch, cfg.output_size()])?;
            // Both directions' parts one after the other in each buffer, so
            // that one dispatch steps both (`Fusion::pair`).
            let p0 = DirParams::of(&self.layout, l, 0)?.shifted(self.offset);
            let saved_per_unit = cfg.variant.saved(cfg.cell);
            let strides = DirStrides {
                params: direction_stride(&self.layout, l, dirs)?,
                xg: steps * batch * gh,
                hs: slots * bp,
                cs: slots * bh,
                gates: steps * batch * saved_per_unit * h,
                ..Default::default()
            };
            // The input projection of every step of every direction: a
            // temporary (packed in the gates' pairing where the rows pair).
            let pairs = row_pairs(&cfg, self.precision, input.is_none());
            let xg = take_rows(pool, b, pairs, &[dirs, steps, batch, gh])?;
            for d in 0..dirs {
                let p = DirParams::of(&self.layout, l, d)?.shifted(self.offset);
                match (&input, &one_hot) {
                    (Some(input), _) => {
                        let g = Gemm::nt(steps * batch, gh, in_size)
                            .offsets(0, p.w_ih, d * strides.xg)
                            .with_bias(p.b_ih)
                            .paired(0, pairs);
                        b.gemm(&g, input, &self.params, Some(&self.params), &xg)?;
                    }
                    // One-hot rows: W_ih's columns of the tokens, plus b_ih.
                    (None, Some(tokens)) => {
                        let s = one_hot_columns(steps * batch, gh, in_size, &p, d * strides.xg, 0);
                        b.embed_forward(&s, tokens, &self.params, &xg)?;
                    }
                    (None, None) => return Err(Error::invalid("input", "no input for a layer")),
                }
            }
            let packed = packs_states(&cfg, self.precision);
            let hs = take_rows(pool, b, packed, &[dirs, slots, batch, hp])?;
            let cs = take_states_if(pool, b, lstm, packed, &[dirs, slots, batch, h])?;
            // (A step of two dispatches passes values in the gates, so
            // its inference keeps them too.)
            let gates = take_gates(
                pool,
                b,
                &cfg,
                (train || passes) && saved_per_unit > 0,
                &[dirs, steps, batch, saved_per_unit * h],
            )?;
            // Direction 0's step at t, standing for `more` further steps and
            // (bidirectional) direction 1's.
            let spec = |t: usize, more: usize| StepSpec {
                batch,
                hidden: h,
                steps,
                t,
                whh_off: p0.w_hh,
                bhh_off: p0.b_hh,
                out_col: 0,
                out_ld: dirs * hp,
                ring: !train,
                variant: cfg.variant,
                peep_off: p0.peep,
                hr_off: p0.hr,
                fusion: Fusion {
                    pair: (dirs == 2).then_some(strides),
                    more_steps: more,
                    ..Default::default()
                },
                store: self.precision,
                ..Default::default()
            };
            // Each direction's first and last state slots.
            let ends = |d: usize| -> Result<(usize, usize)> {
                let parts = spec(0, 0).parts(false)?;
                let last = spec(steps - 1, 0).parts(false)?;
                Ok((parts[d].1.prev(), last[d].1.next()))
            };
            for d in 0..dirs {
                let sd = l * dirs + d;
                let first = ends(d)?.0;
                load_state(b, h0, sd * bp, &hs, d * strides.hs + first * bp, bp)?;
                if let Some(cs) = &cs {
                    load_state(b, c0, sd * bh, cs, d * strides.cs + first * bh, bh)?;
                }
            }
            let bufs = StepForward {
                xg: &xg,
                weights: &self.params,
                lengths: lengths.as_ref(),
                hs: &hs,
                cs: cs.as_ref(),
                gates: gates.as_ref(),
                out: &out,
            };
            let per_call = b.steps_per_call(&cfg.variant, batch, h).max(1);
            let mut t = 0;
            while t < steps {
                let n = per_call.min(steps - t);
                b.cell_forward(cfg.cell, &spec(t, n - 1), &bufs)?;
                t += n;
            }
            for d in 0..dirs {
                let sd = l * dirs + d;
                let last = ends(d)?.1;
                b.copy(&hs, d * strides.hs + last * bp, &hn, sd * bp, bp)?;
                if let (Some(cs), Some(cn)) = (&cs, &cn) {
                    b.copy(cs, d * strides.cs + last * bh, cn, sd * bh, bh)?;
                }
            }
            let saved_cells = train.then_some(SavedCells {
                hs,
                cs,
                gates,
                strides,
            });
            // A skip connection joins the layer's input to its cells' output.
            let (out, cells_out, gate) = if cfg.has_skip(l) {
                // (Only between layers: the input is the layer below's rows.)
                let input = input
                    .as_ref()
                    .ok_or_else(|| Error::invalid("input", "a skip connection needs input rows"))?;
                let n = steps * batch * cfg.output_size();
                let shape = [steps, batch, cfg.output_size()];
                let gate = match cfg.skip {
                    Skip::Highway => {
                        let g = pool.take(b, &shape)?;
                        let (w, bias) = highway_offsets(&self.layout, self.offset, l)?;
                        let dh = cfg.output_size();
                        let mm = Gemm::nt(steps * batch, dh, dh)
                            .offsets(0, w, 0)
                            .with_bias(bias);
                        b.gemm(&mm, input, &self.params, Some(&self.params), &g)?;
                        Some(g)
                    }
                    _ => None,
                };
                let y = pool.take(b, &shape)?;
                let t = SkipForward {
                    x: input,
                    out: &out,
                    gate: gate.as_ref(),
                    y: &y,
                };
                b.skip_forward(cfg.skip, n, &t)?;
                (y, Some(out), gate)
            } else {
                (out, None, None)
            };
            let fed_up = if l + 1 == cfg.num_layers {
                output = Some(out);
                None
            } else if let Some(drop) = dropout {
                let dropped = pool.take(b, &[steps, batch, cfg.output_size()])?;
                let spec = drop.spec(l, steps, batch, cfg.output_size());
                b.dropout(&spec, &out, &dropped)?;
                Some(dropped)
            } else {
                Some(out)
            };
            if let Some(next) = &fed_up {
                input = Some(next.clone());
            }
            if train {
                layers.push(SavedLayer {
                    cells: saved_cells.ok_or_else(|| {
                        Error::invalid("forward_train", "kept no states for the backward")
                    })?,
                    cells_out,
                    gate,
                    fed_up,
                });
            }
        }
        let output = output.ok_or_else(|| Error::invalid("num_layers", "must be at least 1"))?;
        let saved = train.then(|| RnnSaved {
            stack: self.id,
            steps,
            batch,
            input: x.saved(),
            lengths,
            dropout,
            layers,
            wave: None,
        });
        Ok((RnnOutput { output, hn, cn }, saved))
    }

    /// Backpropagates through the forward that returned `saved`: the
    /// gradients of `Σ output⊙grad_output + Σ hn⊙grad_hn + Σ cn⊙grad_cn`
    /// (absent gradients count as zero). Parameter gradients are **added** to
    /// `param_grads` `[P]`; the input and initial-state gradients are returned.
    /// The parameters must be the ones the forward ran with.
    pub fn backward(
        &mut self,
        saved: &RnnSaved<B>,
        grad_output: Option<&B::Tensor>,
        grad_hn: Option<&B::Tensor>,
        grad_cn: Option<&B::Tensor>,
        param_grads: &B::Tensor,
    ) -> Result<RnnInputGrads<B>> {
        self.backward_with(
            saved,
            grad_output,
            grad_hn,
            grad_cn,
            param_grads,
            &mut |_| Ok(()),
        )
    }

    /// [`Rnn::backward`], calling `ready` with the range of `param_grads`
    /// that holds a layer's parameters (all its directions) as soon as the
    /// backward has recorded their last gradient, top layer first: a
    /// data-parallel trainer starts summing them over ranks while the layers
    /// below are still differentiated. The ranges are in the buffer's
    /// coordinates (this stack's offset included) and cover the stack's
    /// parameters once.
    pub fn backward_with(
        &mut self,
        saved: &RnnSaved<B>,
        grad_output: Option<&B::Tensor>,
        grad_hn: Option<&B::Tensor>,
        grad_cn: Option<&B::Tensor>,
        param_grads: &B::Tensor,
        ready: &mut dyn FnMut(std::ops::Range<usize>) -> Result<()>,
    ) -> Result<RnnInputGrads<B>> {
        let cfg = self.config;
        if saved.stack != self.id {
            return Err(Error::invalid(
                "saved",
                "comes from another stack's forward; pass the one this stack's forward_train returned",
            ));
        }
        let (steps, batch, h, dirs) = (saved.steps, saved.batch, cfg.hidden_size, cfg.directions());
        let hp = cfg.state_size();
        let state = [cfg.num_layers * dirs, batch, h];
        let hstate = [cfg.num_layers * dirs, batch, hp];
        let h_shape = h_state_letters(&cfg);
        let out_shape = [steps, batch, cfg.output_size()];
        let b = &self.backend;
        expect_shape(
            "param_grads",
            "the shape of the parameter buffer",
            b.shape(&self.params),
            b.shape(param_grads),
        )?;
        if let Some(g) = grad_output {
            expect_shape("grad_output", "[T, B, D·H]", &out_shape, b.shape(g))?;
        }
        if let Some(g) = grad_hn {
            expect_shape("grad_hn", h_shape, &hstate, b.shape(g))?;
        }
        if let Some(g) = grad_cn {
            if !cfg.cell.has_cell_state() {
                return Err(Error::invalid(
                    "grad_cn",
                    format!("only an LSTM has a cell state; this is {}", cfg.cell.name()),
                ));
            }
            expect_shape("grad_cn", STATE_SHAPE, &state, b.shape(g))?;
        }
        self.pool.next_pass(b);
        let pool = &mut self.pool;
        let mut dout = match grad_output {
            Some(g) => g.clone(),
            None => pool.zeros(b, &out_shape)?,
        };
        let (bh, bp) = (batch * h, batch * hp);
        let gh = cfg.cell.gates() * h;
        // Row stride of the gate gradients (G·H, + P with a projection).
        let dl = cfg.variant.dgh_width(cfg.cell, h);
        let rows = steps * batch;
        let lstm = cfg.cell.has_cell_state();
        let grad_h0 = pool.take(b, &hstate)?;
        let grad_c0 = pool.take_if(b, lstm, &state)?;
        if let Some(wave) = &saved.wave {
            let grads = WaveGrads {
                dout,
                grad_hn,
                grad_cn,
                param_grads,
                grad_h0,
                grad_c0,
            };
            return self.wave_backward(saved, wave, grads, ready);
        }
        let mut grad_input = None;
        for l in (0..cfg.num_layers).rev() {
            let layer = &saved.layers[l];
            // The layer's input rows, or (the first layer) one-hot tokens.
            let (input, tokens) = match (l.checked_sub(1), &saved.input) {
                (None, SavedInput::Rows(x)) => (Some(x), None),
                (None, SavedInput::OneHot(t)) => (None, Some(t)),
                (Some(below), _) => (
                    Some(saved.layers[below].fed_up.as_ref().ok_or_else(|| {
                        Error::invalid("saved", "holds no input for a layer above the first")
                    })?),
                    None,
                ),
            };
            let in_size = cfg.layer_input(l);
            let want_dx = l > 0 || (self.input_grad && input.is_some());
            let dx = pool.take_if(b, want_dx, &[steps, batch, in_size])?;
            let rows_in = || input.ok_or_else(|| Error::invalid("saved", "holds no input rows"));
            // A skip connection: its share of dx first (the cells' is added
            // below); the cells see the gradient of their own output.
            let skip = cfg.has_skip(l);
            let mut dgate = None;
            if let (true, Some(dx_t)) = (skip, &dx) {
                let cells_out = layer.cells_out.as_ref().ok_or_else(|| {
                    Error::invalid("saved", "holds no cell output for a skip connection")
                })?;
                let (d_out, dg) = match cfg.skip {
                    Skip::Highway => (
                        Some(pool.take(b, &out_shape)?),
                        Some(pool.take(b, &out_shape)?),
                    ),
                    _ => (None, None),
                };
                let t = SkipBackward {
                    dy: &dout,
                    dx: dx_t,
                    x: rows_in()?,
                    out: cells_out,
                    gate: layer.gate.as_ref(),
                    d_out: d_out.as_ref(),
                    dgate: dg.as_ref(),
                };
                b.skip_backward(cfg.skip, rows * cfg.output_size(), &t)?;
                if let Some(d_out) = d_out {
                    dout = d_out;
                }
                dgate = dg;
            }
            let cells = &layer.cells;
            let reset = cfg.variant.reset_before;
            // The GRU's input and recurrent sides differ (by r in the n
            // block) unless the reset gate comes before the product.
            let separate_dgx = cfg.cell == Cell::Gru && !reset;
            // (Packed in the gates' pairing where the rows pair, as the
            // forward's xg, whose memory the pool hands out again.)
            let dg_pairs = row_pairs(&cfg, self.precision, input.is_none());
            let dgh = take_rows(pool, b, dg_pairs, &[dirs, steps, batch, dl])?;
            let dgx = pool.take_if(b, separate_dgx, &[dirs, steps, batch, gh])?;
            let carry = pool.take(b, &[dirs, 2, 2, batch, h])?;
            let st = DirStrides {
                dgh: steps * batch * dl,
                dgx: steps * batch * gh,
                carry: 4 * bh,
                ..cells.strides
            };
            // Carries start at the gradients of the final states.
            b.fill(&carry, 0, dirs * 4 * bh, 0.0)?;
            for d in 0..dirs {
                let sd = l * dirs + d;
                if let Some(g) = grad_hn {
                    b.copy(g, sd * bp, &carry, d * st.carry, bp)?;
                }
                if let Some(g) = grad_cn {
                    b.copy(g, sd * bh, &carry, d * st.carry + bh, bh)?;
                }
            }
            let bufs = StepBackward {
                weights: &self.params,
                lengths: saved.lengths.as_ref(),
                hs: &cells.hs,
                cs: cells.cs.as_ref(),
                gates: cells.gates.as_ref(),
                dout: &dout,
                dgh: &dgh,
                dgx: dgx.as_ref(),
                carry: &carry,
            };
            // The sweep: direction 0 from T - 1 down (direction 1 up from 0
            // beside it), `per_call` steps a call.
            let p0 = DirParams::of(&self.layout, l, 0)?.shifted(self.offset);
            let per_call = b.steps_per_call(&cfg.variant, batch, h).max(1);
            let mut s = 0;
            while s < steps {
                let n = per_call.min(steps - s);
                let spec = StepSpec {
                    batch,
                    hidden: h,
                    steps,
                    t: steps - 1 - s,
                    reverse: false,
                    first: s == 0,
                    parity: s % 2,
                    whh_off: p0.w_hh,
                    bhh_off: p0.b_hh,
                    out_col: 0,
                    out_ld: dirs * hp,
                    ring: false,
                    variant: cfg.variant,
                    peep_off: p0.peep,
                    hr_off: p0.hr,
                    fusion: Fusion {
                        pair: (dirs == 2).then_some(st),
                        more_steps: n - 1,
                        ..Default::default()
                    },
                    store: self.precision,
                };
                b.cell_backward(cfg.cell, &spec, &bufs)?;
                s += n;
            }
            let grad_bufs = GradBuffers {
                dgh: &dgh,
                dg_pairs,
                dgx: dgx.as_ref(),
                carry: &carry,
                hs: &cells.hs,
                cs: cells.cs.as_ref(),
                gates: cells.gates.as_ref(),
                grad_h0: &grad_h0,
                grad_c0: grad_c0.as_ref(),
                param_grads,
            };
            for d in 0..dirs {
                let part = GradPart {
                    p: DirParams::of(&self.layout, l, d)?.shifted(self.offset),
                    state: l * dirs + d,
                    reverse: d == 1,
                    o_dgh: d * st.dgh,
                    o_dgx: if separate_dgx { d * st.dgx } else { d * st.dgh },
                    o_hs: d * st.hs,
                    o_cs: d * st.cs,
                    o_gates: d * st.gates,
                    o_carry: d * st.carry,
                    input: match (input, tokens) {
                        (Some(x), _) => LayerIn::Rows(x, 0),
                        (None, Some(t)) => LayerIn::OneHot(t),
                        (None, None) => return Err(Error::invalid("saved", "holds no input")),
                    },
                    in_size,
                    // (summed over directions, and onto a skip's share)
                    dx: dx.as_ref().map(|dx| (dx, d > 0 || skip)),
                };
                part_grads(b, &cfg, &self.params, steps, batch, &part, &grad_bufs)?;
            }
            // The highway gate's parameters and its share of dx.
            if let (Some(dg), Some(dx)) = (&dgate, &dx) {
                let (w, bias) = highway_offsets(&self.layout, self.offset, l)?;
                let dh = cfg.output_size();
                let g = Gemm::tn(dh, dh, rows).offsets(0, 0, w).accumulating(true);
                b.gemm(&g, dg, rows_in()?, None, param_grads)?;
                let cs = ColSum {
                    out_off: bias,
                    accumulate: true,
                    ..ColSum::new(rows, dh)
                };
                b.sum_cols(&cs, dg, param_grads)?;
                let g = Gemm::nn(rows, dh, dh).offsets(0, w, 0).accumulating(true);
                b.gemm(&g, dg, &self.params, None, dx)?;
            }
            // Layer l's parameters (every direction) are complete.
            ready(layer_range(&self.layout, self.offset, cfg.num_layers, l)?)?;
            match (l, dx) {
                (0, dx) => grad_input = dx,
                (_, Some(dx)) => {
                    // The layer below fed its (masked) output up: its output
                    // gradient is this input gradient, masked the same way.
                    dout = match saved.dropout {
                        Some(drop) => {
                            let dd = pool.take(b, &out_shape)?;
                            let spec = drop.spec(l - 1, steps, batch, cfg.output_size());
                            b.dropout(&spec, &dx, &dd)?;
                            dd
                        }
                        None => dx,
                    };
                }
                (_, None) => {
                    return Err(Error::invalid(
                        "backward",
                        "no gradient for the layer below",
                    ));
                }
            }
        }
        Ok(RnnInputGrads {
            input: grad_input,
            h0: grad_h0,
            c0: grad_c0,
        })
    }

    /// The wavefront's forward (see [`StepOrder::Wavefront`]): layer 0's
    /// input projection over all steps, then T + L − 1 step calls, call `w`
    /// stepping every layer `l` with `0 <= w − l < T` at time `w − l`.
    fn wave_forward(
        &mut self,
        x: StackInput<'_, B>,
        (h0, c0): (Option<&B::Tensor>, Option<&B::Tensor>),
        lengths: Option<B::Ints>,
        pass: Pass,
        hn: B::Tensor,
        cn: Option<B::Tensor>,
    ) -> Result<(RnnOutput<B>, Option<RnnSaved<B>>)> {
        let cfg = self.config;
        let Pass {
            steps,
            batch,
            train,
        } = pass;
        let (plan, wave) = self.wave_strides(steps, batch, train)?;
        let st = wave.strides;
        let (b, pool) = (&self.backend, &mut self.pool);
        let (h, layers) = (cfg.hidden_size, cfg.num_layers);
        let (bh, gh) = (batch * h, cfg.cell.gates() * h);
        let saved_per_unit = cfg.variant.saved(cfg.cell);
        let slots = st.hs / bh;
        let p0 = plan[0];
        let pairs = row_pairs(&cfg, self.precision, matches!(x, StackInput::OneHot(_)));
        let xg = take_rows(pool, b, pairs, &[steps, batch, gh])?;
        match x {
            StackInput::Rows(x) => {
                let g = Gemm::nt(steps * batch, gh, cfg.input_size)
                    .offsets(0, p0.w_ih, 0)
                    .with_bias(p0.b_ih)
                    .paired(0, pairs);
                b.gemm(&g, x, &self.params, Some(&self.params), &xg)?;
            }
            StackInput::OneHot(tokens) => {
                let s = one_hot_columns(steps * batch, gh, cfg.input_size, &p0, 0, 0);
                b.embed_forward(&s, tokens, &self.params, &xg)?;
            }
        }
        let lstm = cfg.cell.has_cell_state();
        let packed = packs_states(&cfg, self.precision);
        let hs = take_rows(pool, b, packed, &[layers, slots, batch, h])?;
        let cs = take_states_if(pool, b, lstm, packed, &[layers, slots, batch, h])?;
        let gates = take_gates(
            pool,
            b,
            &cfg,
            train && saved_per_unit > 0,
            &[layers, steps, batch, saved_per_unit * h],
        )?;
        let outs = pool.take(b, &[layers, steps, batch, h])?;
        for l in 0..layers {
            load_state(b, h0, l * bh, &hs, l * st.hs, bh)?;
            if let Some(cs) = &cs {
                load_state(b, c0, l * bh, cs, l * st.cs, bh)?;
            }
        }
        let bufs = StepForward {
            xg: &xg,
            weights: &self.params,
            lengths: lengths.as_ref(),
            hs: &hs,
            cs: cs.as_ref(),
            gates: gates.as_ref(),
            out: &outs,
        };
        for w in 0..steps + layers - 1 {
            let lo = w.saturating_sub(steps - 1);
            let hi = w.min(layers - 1);
            let mut spec = wave_step(
                &cfg,
                &plan[lo],
                steps,
                batch,
                w - lo,
                !train,
                Wave {
                    layer: lo,
                    lanes: hi - lo + 1,
                    ..wave
                },
            );
            spec.store = self.precision;
            b.cell_forward(cfg.cell, &spec, &bufs)?;
        }
        // The slot after the last step.
        let last = if train { steps } else { steps % 2 };
        for l in 0..layers {
            b.copy(&hs, l * st.hs + last * bh, &hn, l * bh, bh)?;
            if let (Some(cs), Some(cn)) = (&cs, &cn) {
                b.copy(cs, l * st.cs + last * bh, cn, l * bh, bh)?;
            }
        }
        let output = pool.take(b, &[steps, batch, h])?;
        b.copy(&outs, (layers - 1) * st.out, &output, 0, steps * bh)?;
        let saved = train.then(|| RnnSaved {
            stack: self.id,
            steps,
            batch,
            input: x.saved(),
            lengths,
            dropout: None,
            layers: Vec::new(),
            wave: Some(SavedWave {
                hs,
                cs,
                gates,
                outs,
                strides: st,
            }),
        });
        Ok((RnnOutput { output, hn, cn }, saved))
    }

    /// Every layer's parameter offsets and the wavefront's strides for a
    /// pass of `steps` × `batch` (training: every state slot).
    fn wave_strides(
        &self,
        steps: usize,
        batch: usize,
        train: bool,
    ) -> Result<(Vec<DirParams>, Wave)> {
        let cfg = &self.config;
        let (plan, stride) = self.wave_plan()?.ok_or_else(|| {
            Error::invalid("step_order", "a wavefront needs evenly spaced layers")
        })?;
        let bh = batch * cfg.hidden_size;
        let slots = if train { steps + 1 } else { 2 };
        let strides = DirStrides {
            params: stride,
            hs: slots * bh,
            cs: slots * bh,
            gates: steps * batch * cfg.variant.saved(cfg.cell) * cfg.hidden_size,
            out: steps * bh,
            ..Default::default()
        };
        let wave = Wave {
            layer: 0,
            lanes: 1,
            layers: cfg.num_layers,
            strides,
            wih_off: plan[1].w_ih,
            bih_off: plan[1].b_ih,
        };
        Ok((plan, wave))
    }

    /// The wavefront's backward: T + L − 1 step calls from the top layer's
    /// last step (call `s` steps every layer `l` at time
    /// `T − 1 − s + (L − 1 − l)` inside `0..T`), then every layer's weight
    /// gradients from the top, as the layer-by-layer backward computes them.
    fn wave_backward(
        &mut self,
        saved: &RnnSaved<B>,
        wave: &SavedWave<B>,
        grads: WaveGrads<'_, B>,
        ready: &mut dyn FnMut(std::ops::Range<usize>) -> Result<()>,
    ) -> Result<RnnInputGrads<B>> {
        let cfg = self.config;
        let (steps, batch) = (saved.steps, saved.batch);
        let (plan, shape) = self.wave_strides(steps, batch, true)?;
        let (b, pool) = (&self.backend, &mut self.pool);
        let (h, layers) = (cfg.hidden_size, cfg.num_layers);
        let (bh, gh) = (batch * h, cfg.cell.gates() * h);
        let gru = cfg.cell == Cell::Gru;
        // (One-hot tokens' lookup reads the first layer's part unpaired.)
        let one_hot = matches!(saved.input, SavedInput::OneHot(_));
        let dg_pairs = row_pairs(&cfg, self.precision, one_hot);
        let dgh = take_rows(pool, b, dg_pairs, &[layers, steps, batch, gh])?;
        let dgx = pool.take_if(b, gru, &[layers, steps, batch, gh])?;
        let carry = pool.take(b, &[layers, 2, 2, batch, h])?;
        let st = DirStrides {
            dgh: steps * batch * gh,
            dgx: if gru { steps * batch * gh } else { 0 },
            carry: 4 * bh,
            // dout is the top layer's alone.
            out: 0,
            ..wave.strides
        };
        b.fill(&carry, 0, layers * 4 * bh, 0.0)?;
        for l in 0..layers {
            if let Some(g) = grads.grad_hn {
                b.copy(g, l * bh, &carry, l * st.carry, bh)?;
            }
            if let Some(g) = grads.grad_cn {
                b.copy(g, l * bh, &carry, l * st.carry + bh, bh)?;
            }
        }
        let bufs = StepBackward {
            weights: &self.params,
            lengths: saved.lengths.as_ref(),
            hs: &wave.hs,
            cs: wave.cs.as_ref(),
            gates: wave.gates.as_ref(),
            dout: &grads.dout,
            dgh: &dgh,
            dgx: dgx.as_ref(),
            carry: &carry,
        };
        let top = layers - 1;
        for s in 0..steps + top {
            let lo = top.saturating_sub(s);
            let hi = top.min(top + steps - 1 - s);
            let t = steps - 1 - s + (top - lo);
            let mut spec = wave_step(
                &cfg,
                &plan[lo],
                steps,
                batch,
                t,
                false,
                Wave {
                    layer: lo,
                    lanes: hi - lo + 1,
                    strides: st,
                    ..shape
                },
            );
            spec.store = self.precision;
            b.cell_backward(cfg.cell, &spec, &bufs)?;
        }
        let grad_bufs = GradBuffers {
            dgh: &dgh,
            dg_pairs,
            dgx: dgx.as_ref(),
            carry: &carry,
            hs: &wave.hs,
            cs: wave.cs.as_ref(),
            gates: wave.gates.as_ref(),
            grad_h0: &grads.grad_h0,
            grad_c0: grads.grad_c0.as_ref(),
            param_grads: grads.param_grads,
        };
        let mut grad_input = None;
        for l in (0..layers).rev() {
            let input = match (l, &saved.input) {
                (0, SavedInput::Rows(x)) => LayerIn::Rows(x, 0),
                (0, SavedInput::OneHot(t)) => LayerIn::OneHot(t),
                // The layer below's output, as the layer-by-layer order reads it.
                _ => LayerIn::Rows(&wave.outs, (l - 1) * wave.strides.out),
            };
            let want_dx = l == 0 && self.input_grad && matches!(input, LayerIn::Rows(..));
            let dx = pool.take_if(b, want_dx, &[steps, batch, cfg.layer_input(l)])?;
            let part = GradPart {
                p: plan[l],
                state: l,
                reverse: false,
                o_dgh: l * st.dgh,
                o_dgx: l * if gru { st.dgx } else { st.dgh },
                o_hs: l * st.hs,
                o_cs: l * st.cs,
                o_gates: l * st.gates,
                o_carry: l * st.carry,
                input,
                in_size: cfg.layer_input(l),
                dx: dx.as_ref().map(|d| (d, false)),
            };
            part_grads(b, &cfg, &self.params, steps, batch, &part, &grad_bufs)?;
            ready(layer_range(&self.layout, self.offset, cfg.num_layers, l)?)?;
            if l == 0 {
                grad_input = dx;
            }
        }
        Ok(RnnInputGrads {
            input: grad_input,
            h0: grads.grad_h0,
            c0: grads.grad_c0,
        })
    }

    /// The parameter called `name` (PyTorch naming), read back.
    pub fn read_param(&self, name: &str) -> Result<Vec<B::Elem>> {
        let e = self.entry(name)?;
        let all = self.backend.read(&self.params)?;
        let start = self.offset + e.offset;
        Ok(all[start..start + e.len()].to_vec())
    }

    /// The state after `steps` time steps of the forward that returned
    /// `saved` (slot `steps` of every layer), as a new value `[L, B, H]`.
    /// Truncated BPTT restarts the next window from it; unidirectional only.
    pub fn state_after(&mut self, saved: &RnnSaved<B>, steps: usize) -> Result<State<B>> {
        let cfg = self.config;
        if saved.stack != self.id {
            return Err(Error::invalid(
                "saved",
                "comes from another stack's forward",
            ));
        }
        if cfg.bidirectional {
            return Err(Error::invalid(
                "state_after",
                "a bidirectional stack has no state in the middle of a sequence",
            ));
        }
        if steps > saved.steps {
            return Err(Error::invalid(
                "state_after",
                format!("step {steps} is beyond the forward's T = {}", saved.steps),
            ));
        }
        let b = &self.backend;
        let shape = [cfg.num_layers, saved.batch, cfg.hidden_size];
        let hshape = [cfg.num_layers, saved.batch, cfg.state_size()];
        let h = self.pool.take(b, &hshape)?;
        let c = self.pool.take_if(b, cfg.cell.has_cell_state(), &shape)?;
        let bh = saved.batch * cfg.hidden_size;
        let bp = saved.batch * cfg.state_size();
        for (l, layer) in saved.layers.iter().enumerate() {
            let dw = &layer.cells;
            b.copy(&dw.hs, steps * bp, &h, l * bp, bp)?;
            if let (Some(cs), Some(c)) = (&dw.cs, &c) {
                b.copy(cs, steps * bh, c, l * bh, bh)?;
            }
        }
        if let Some(w) = &saved.wave {
            for l in 0..cfg.num_layers {
                b.copy(&w.hs, l * w.strides.hs + steps * bh, &h, l * bh, bh)?;
                if let (Some(cs), Some(c)) = (&w.cs, &c) {
                    b.copy(cs, l * w.strides.cs + steps * bh, c, l * bh, bh)?;
                }
            }
        }
        Ok(State { h, c })
    }

    fn entry(&self, name: &str) -> Result<&ParamEntry> {
        self.layout
            .get(name)
            .ok_or_else(|| Error::invalid("parameter", format!("no parameter named {name:?}")))
    }
}

/// The range of layer `l`'s parameters (every direction) in a flat buffer
/// holding `layout` at `offset`, of a stack of `layers`.
fn layer_range(
    layout: &ParamLayout,
    offset: usize,
    layers: usize,
    l: usize,
) -> Result<std::ops::Range<usize>> {
    let start = DirParams::of(layout, l, 0)?.w_ih;
    let end = match l + 1 < layers {
        true => DirParams::of(layout, l + 1, 0)?.w_ih,
        false => layout.total,
    };
    Ok(offset + start..offset + end)
}

/// The sizes of a forward pass.
#[derive(Clone, Copy)]
struct Pass {
    steps: usize,
    batch: usize,
    train: bool,
}

/// The gradients a wavefront's backward starts from, and where its
/// initial-state gradients go.
struct WaveGrads<'a, B: Backend> {
    dout: B::Tensor,
    grad_hn: Option<&'a B::Tensor>,
    grad_cn: Option<&'a B::Tensor>,
    param_grads: &'a B::Tensor,
    grad_h0: B::Tensor,
    grad_c0: Option<B::Tensor>,
}

/// The step call of a wavefront at time `t` of its lowest layer (whose
/// parameters are `p`).
fn wave_step(
    cfg: &RnnConfig,
    p: &DirParams,
    steps: usize,
    batch: usize,
    t: usize,
    ring: bool,
    wave: Wave,
) -> StepSpec {
    StepSpec {
        batch,
        hidden: cfg.hidden_size,
        steps,
        t,
        whh_off: p.w_hh,
        bhh_off: p.b_hh,
        peep_off: p.peep,
        out_col: 0,
        out_ld: cfg.hidden_size,
        ring,
        variant: cfg.variant,
        fusion: Fusion {
            wave: Some(wave),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// What a layer reads: rows (with their offset) or one-hot tokens.
#[derive(Clone, Copy)]
enum LayerIn<'a, B: Backend> {
    Rows(&'a B::Tensor, usize),
    OneHot(&'a B::Ints),
}

/// The buffers of one layer's backward (every direction's or, in a
/// wavefront, every layer's parts) that [`part_grads`] reads and adds to.
struct GradBuffers<'a, B: Backend> {
    dgh: &'a B::Tensor,
    /// How a packed dgh pairs its elements (see [`row_pairs`]; 0 unpaired).
    dg_pairs: usize,
    dgx: Option<&'a B::Tensor>,
    carry: &'a B::Tensor,
    hs: &'a B::Tensor,
    cs: Option<&'a B::Tensor>,
    gates: Option<&'a B::Tensor>,
    grad_h0: &'a B::Tensor,
    grad_c0: Option<&'a B::Tensor>,
    param_grads: &'a B::Tensor,
}

/// One layer-direction's part of those buffers: its parameters, its state
/// index (`l·D + d`), where its parts start, its input, and where the
/// gradient of its input goes (`(dx, accumulate)`), if anywhere.
struct GradPart<'a, B: Backend> {
    p: DirParams,
    state: usize,
    reverse: bool,
    o_dgh: usize,
    o_dgx: usize,
    o_hs: usize,
    o_cs: usize,
    o_gates: usize,
    o_carry: usize,
    input: LayerIn<'a, B>,
    in_size: usize,
    dx: Option<(&'a B::Tensor, bool)>,
}

/// After a layer-direction's backward sweep: the initial-state gradients,
/// its weight and bias gradients over all T·B rows at once, and the
/// gradient of its input.
fn part_grads<B: Backend>(
    b: &B,
    cfg: &RnnConfig,
    params: &B::Tensor,
    steps: usize,
    batch: usize,
    part: &GradPart<'_, B>,
    bufs: &GradBuffers<'_, B>,
) -> Result<()> {
    let h = cfg.hidden_size;
    let hp = cfg.state_size();
    let (bh, bp) = (batch * h, batch * hp);
    let gh = cfg.cell.gates() * h;
    let dl = cfg.variant.dgh_width(cfg.cell, h);
    let proj = cfg.variant.proj_size > 0;
    let reset = cfg.variant.reset_before;
    let separate_dgx = cfg.cell == Cell::Gru && !reset;
    let rows = steps * batch;
    let in_size = part.in_size;
    let GradBuffers {
        dgh,
        dg_pairs,
        dgx,
        carry,
        hs,
        cs,
        gates,
        grad_h0,
        grad_c0,
        param_grads,
    } = *bufs;
    let GradPart {
        p,
        state: sd,
        reverse,
        o_dgh,
        o_dgx,
        o_hs,
        o_cs,
        o_gates,
        o_carry,
        ..
    } = *part;
    // grad_h0 = carry + dG(last step of the sweep) · W_hh (the
    // reset-before GRU: r's and z's rows; the carry holds n's part)
    let par = steps % 2;
    let t_last = if reverse { steps - 1 } else { 0 };
    b.copy(carry, o_carry + par * 2 * bh, grad_h0, sd * bp, bp)?;
    let rec_rows = if reset { 2 * h } else { gh };
    let g = Gemm {
        lda: dl,
        ..Gemm::nn(batch, hp, rec_rows)
            .offsets(o_dgh + t_last * batch * dl, p.w_hh, sd * bp)
            .accumulating(true)
            .paired(dg_pairs, 0)
    };
    b.gemm(&g, dgh, params, None, grad_h0)?;
    if let Some(gc0) = grad_c0 {
        b.copy(carry, o_carry + (par * 2 + 1) * bh, gc0, sd * bh, bh)?;
    }
    // Weight gradients over all T·B rows at once (dgh's rows are
    // dl wide: the gates', and a projection's dh).
    let dgx = dgx.unwrap_or(dgh);
    match part.input {
        LayerIn::Rows(input, in_off) => {
            let g = Gemm {
                lda: dl,
                ..Gemm::tn(gh, in_size, rows)
                    .offsets(o_dgx, in_off, p.w_ih)
                    .accumulating(true)
                    .paired(dg_pairs, 0)
            };
            b.gemm(&g, dgx, input, None, param_grads)?;
        }
        // One-hot rows: each token's gate gradients added into
        // its column of W_ih, in position order.
        LayerIn::OneHot(tokens) => {
            let s = one_hot_columns(rows, gh, in_size, &p, o_dgx, dl);
            b.embed_backward(&s, tokens, dgx, param_grads, true)?;
        }
    }
    let prev_rows = if reverse { bp } else { 0 };
    let g = Gemm {
        lda: dl,
        ..Gemm::tn(rec_rows, hp, rows)
            .offsets(o_dgh, o_hs + prev_rows, p.w_hh)
            .accumulating(true)
            .paired(dg_pairs, 0)
    };
    b.gemm(&g, dgh, hs, None, param_grads)?;
    if let (true, Some(gates)) = (proj, gates) {
        // dW_hr = dhᵀ · m, m = o ⊙ h(c) in the gates' fifth block.
        let g = Gemm {
            lda: dl,
            ldb: 5 * h,
            ..Gemm::tn(hp, h, rows)
                .offsets(o_dgh + gh, o_gates + 4 * h, p.hr)
                .accumulating(true)
        };
        b.gemm(&g, dgh, gates, None, param_grads)?;
    }
    if let (true, Some(gates)) = (reset, gates) {
        // dW_hn = dnᵀ · (r ⊙ h), r ⊙ h in the gates' fourth block.
        let g = Gemm {
            lda: gh,
            ldb: 4 * h,
            ..Gemm::tn(h, h, rows)
                .offsets(o_dgh + 2 * h, o_gates + 3 * h, p.w_hh + 2 * h * h)
                .accumulating(true)
        };
        b.gemm(&g, dgh, gates, None, param_grads)?;
    }
    // The bias gradients: the same sums for b_ih and b_hh unless
    // the GRU's input side differs (then one pass each).
    let bias = |x_off: usize, out_off: usize, also: Option<usize>| ColSum {
        ld: dl,
        x_off,
        out_off,
        accumulate: true,
        also_off: also,
        x_pairs: dg_pairs,
        ..ColSum::new(rows, gh)
    };
    if separate_dgx {
        b.sum_cols(&bias(o_dgx, p.b_ih, None), dgx, param_grads)?;
        b.sum_cols(&bias(o_dgh, p.b_hh, None), dgh, param_grads)?;
    } else {
        b.sum_cols(&bias(o_dgh, p.b_ih, Some(p.b_hh)), dgh, param_grads)?;
    }
    // Peephole gradients: dP_i = Σ di ⊙ c_prev, dP_f = Σ df ⊙ c_prev,
    // dP_o = Σ do ⊙ c (over T·B rows; c_prev of the row of step t
    // is slot t forward, t + 1 reverse).
    if let (true, Some(cs)) = (cfg.variant.peepholes, cs) {
        let (prev_base, next_base) = if reverse { (bh, 0) } else { (0, bh) };
        for (k, gate, base) in [(0, 0, prev_base), (1, 1, prev_base), (2, 3, next_base)] {
            let dot = ColDot {
                sum: ColSum {
                    ld: dl,
                    x_off: o_dgh + gate * h,
                    out_off: p.peep + k * h,
                    accumulate: true,
                    x_pairs: dg_pairs,
                    ..ColSum::new(rows, h)
                },
                y_off: o_cs + base,
                y_ld: h,
            };
            b.dot_cols(&dot, dgh, cs, param_grads)?;
        }
    }
    // Gradient of this layer's input, summed over directions
    // (for the first layer only when the caller wants it).
    if let Some((dx, accumulate)) = part.dx {
        let g = Gemm {
            lda: dl,
            ..Gemm::nn(rows, in_size, gh)
                .offsets(o_dgx, p.w_ih, 0)
                .accumulating(accumulate)
                .paired(dg_pairs, 0)
        };
        b.gemm(&g, dgx, params, None, dx)?;
    }
    Ok(())
}

/// The first layer's input product for one-hot rows as a lookup: `rows`
/// rows of `gh` gate pre-activations from the columns of `W_ih` `[gh,
/// vocab]` at `p`, plus `b_ih` (forward, output at `out_off`); backward, the
/// gate gradients at `out_off`, rows `dout_ld` apart, into those columns.
fn one_hot_columns(
    rows: usize,
    gh: usize,
    vocab: usize,
    p: &DirParams,
    out_off: usize,
    dout_ld: usize,
) -> EmbedSpec {
    EmbedSpec {
        n: rows,
        e: gh,
        v: vocab,
        table_off: p.w_ih,
        table: Table::Columns {
            ld: vocab,
            bias_off: p.b_ih,
            dout_ld: dout_ld.max(gh),
        },
        out_off,
    }
}

/// The distance between layer `l`'s two directions' parameters (0 with one
/// direction): every offset of direction 1 must be direction 0's plus the
/// same stride, as the layout places them, for one dispatch to step both.
fn direction_stride(layout: &ParamLayout, l: usize, dirs: usize) -> Result<usize> {
    if dirs < 2 {
        return Ok(0);
    }
    let (a, b) = (DirParams::of(layout, l, 0)?, DirParams::of(layout, l, 1)?);
    let stride = b.w_ih.wrapping_sub(a.w_ih);
    let same = [
        (a.w_hh, b.w_hh),
        (a.b_ih, b.b_ih),
        (a.b_hh, b.b_hh),
        (a.peep, b.peep),
        (a.hr, b.hr),
    ]
    .iter()
    .all(|&(x, y)| y.wrapping_sub(x) == stride || (x == 0 && y == 0));
    if b.w_ih < a.w_ih || !same {
        return Err(Error::invalid(
            "parameters",
            format!("layer {l}'s reverse direction is not laid out as its forward one"),
        ));
    }
    Ok(stride)
}

/// Offsets (the stack's `offset` included) of layer `l`'s highway weights
/// `[D·H, D·H]` and bias `[D·H]`.
fn highway_offsets(layout: &ParamLayout, offset: usize, l: usize) -> Result<(usize, usize)> {
    let off = |name: String| {
        layout
            .get(&name)
            .map(|e| offset + e.offset)
            .ok_or_else(|| Error::invalid("parameters", format!("the layout has no {name}")))
    };
    Ok((off(format!("weight_t_l{l}"))?, off(format!("bias_t_l{l}"))?))
}

/// How a layer's input projection xg and gate gradients dgh are packed:
/// in the gates' pairing (blocks of H, [`Variant::pairs_rows`]) in a 16-bit
/// pass whose rows pair and come from rows (`one_hot`: the one-hot lookup
/// writes and reads them plain), else 0 (32-bit words, or plain on the CPU,
/// which ignores the pairing).
fn row_pairs(cfg: &RnnConfig, precision: Precision, one_hot: bool) -> usize {
    if precision.is_16bit() && cfg.variant.pairs_rows(cfg.cell) && !one_hot {
        cfg.hidden_size
    } else {
        0
    }
}

/// A layer's xg or dgh (`packed` > 0: the pairing), or its states (`packed`
/// 1): packed ([`Pool::take_packed`]) when `packed` > 0.
fn take_rows<B: Backend>(
    pool: &mut Pool<B>,
    b: &B,
    packed: usize,
    shape: &[usize],
) -> Result<B::Tensor> {
    if packed > 0 {
        pool.take_packed(b, shape)
    } else {
        pool.take(b, shape)
    }
}

/// 1 when a 16-bit pass packs the layers' states hs and cs two values a
/// word on the GPU ([`Variant::pairs_states`]), else 0 (the argument of
/// [`take_rows`]).
fn packs_states(cfg: &RnnConfig, precision: Precision) -> usize {
    usize::from(precision.is_16bit() && cfg.variant.pairs_states(cfg.hidden_size))
}

/// The cell states (`want`: an LSTM), as [`take_rows`].
fn take_states_if<B: Backend>(
    pool: &mut Pool<B>,
    b: &B,
    want: bool,
    packed: usize,
    shape: &[usize],
) -> Result<Option<B::Tensor>> {
    want.then(|| take_rows(pool, b, packed, shape)).transpose()
}

/// The gates a forward saves (`want`): packed ([`Pool::take_packed`]) where
/// the step kernels pair them ([`Variant::pairs_gates`]), otherwise like
/// the other activations.
fn take_gates<B: Backend>(
    pool: &mut Pool<B>,
    b: &B,
    cfg: &RnnConfig,
    want: bool,
    shape: &[usize],
) -> Result<Option<B::Tensor>> {
    if !want {
        return Ok(None);
    }
    if cfg.variant.pairs_gates(cfg.cell) {
        pool.take_packed(b, shape).map(Some)
    } else {
        pool.take(b, shape).map(Some)
    }
}

fn load_state<B: Backend>(
    b: &B,
    src: Option<&B::Tensor>,
    src_off: usize,
    dst: &B::Tensor,
    dst_off: usize,
    n: usize,
) -> Result<()> {
    match src {
        Some(s) => b.copy(s, src_off, dst, dst_off, n),
        None => b.fill(dst, dst_off, n, 0.0),
    }
}

/// Checks packed-sequence lengths: `[B]`, each in `1..=T`.
pub fn check_lengths(lengths: &[i32], batch: usize, steps: usize) -> Result<()> {
    if lengths.len() != batch {
        return Err(Error::shape(
            "lengths",
            format!("[B] = [{batch}]"),
            &[lengths.len()],
        ));
    }
    if let Some((i, &v)) = lengths
        .iter()
        .enumerate()
        .find(|(_, v)| **v < 1 || **v as i64 > steps as i64)
    {
        return Err(Error::invalid(
            "lengths",
            format!("lengths[{i}] = {v} is outside 1..={steps} (T)"),
        ));
    }
    Ok(())
}
