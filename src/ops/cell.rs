//! Fused recurrent cell steps (vanilla RNN, LSTM, GRU), forward and backward.
//!
//! One call computes one time step of one layer and direction for the whole
//! batch: the recurrent product of every gate and the cell update. The input
//! projection `xg = x·W_ihᵀ + b_ih` of all T steps is computed beforehand by one
//! large matmul; the weight gradients afterwards by large matmuls over all steps
//! (see `nn::rnn`). Semantics are PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU`,
//! including packed sequences (rows past their length carry their state and
//! output zeros).
//!
//! ## Buffers of one layer and direction
//! | buffer | shape | contents |
//! |---|---|---|
//! | `xg` | `[T, B, G·H]` | `W_ih x_t + b_ih` |
//! | `hs`, `cs` | `[T+1, B, H]` | state slots; step `t` reads slot `t` and writes `t+1` (reverse: reads `t+1`, writes `t`) |
//! | `gates` | `[T, B, 4H]` | LSTM: i, f, g, o; GRU: r, z, n, `W_hn h + b_hn` (RNN saves nothing) |
//! | `out` | `[T, B, out_ld]` | `h_t` at columns `out_col..out_col+H` |
//! | `dgh` | `[T, B, G·H]` | gradient of the recurrent pre-activations (LSTM/RNN: also of the input ones) |
//! | `dgx` | `[T, B, G·H]` | GRU only: gradient of the input pre-activations |
//! | `carry` | `[2, 2, B, H]` | backward ping-pong: gradient into the previous h and c |
//!
//! The backward step at time `t` computes `dh_t = dG_later·W_hh + carry + dout_t`
//! (the product of the step processed just before it), then this step's gate
//! gradients and carries: one dispatch per step, like the forward.
//!
//! CPU twin: [`forward_step_cpu`] / [`backward_step_cpu`], plain loops over
//! `(b, j)` after a matmul for the recurrent product. GPU: `shaders/lstm.wgsl`,
//! `gru.wgsl`, `rnn.wgsl` on top of `recurrent.wgsl` and `cell_common.wgsl`.

use rayon::prelude::*;

use super::matmul::{Gemm, gemm_cpu, u32_of};
use super::need_len;
use crate::error::{Error, Result};
use crate::gpu::kernel::{Access, KernelDef, KernelInfo, Shader, binding_names, kernel_params};
use crate::gpu::{DType, GpuTensor, Recorder, StepKernel};
use crate::ops::memory::read_layout;
use crate::precision::Precision;
use crate::real::Real;

/// Nonlinearity of a vanilla RNN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    Tanh,
    /// `relu`.
    Relu,
    /// The logistic sigmoid (ONNX's `RNN` with `activations = [Sigmoid]`).
    Sigmoid,
}

/// A recurrent cell type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Cell {
    /// Vanilla RNN.
    Rnn(Nonlinearity),
    /// LSTM (gates i, f, g, o).
    Lstm,
    /// GRU (gates r, z, n).
    Gru,
}

impl Cell {
    /// PyTorch's cell types (the vanilla RNN's sigmoid is ONNX's only).
    pub const ALL: [Cell; 4] = [
        Cell::Lstm,
        Cell::Gru,
        Cell::Rnn(Nonlinearity::Tanh),
        Cell::Rnn(Nonlinearity::Relu),
    ];

    /// Gates per hidden unit, G.
    pub fn gates(self) -> usize {
        match self {
            Cell::Rnn(_) => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// Values per hidden unit saved in `gates` for the backward (0 for the vanilla RNN).
    pub fn saved(self) -> usize {
        match self {
            Cell::Rnn(_) => 0,
            Cell::Lstm | Cell::Gru => 4,
        }
    }

    /// True for the LSTM (it has a cell state c).
    pub fn has_cell_state(self) -> bool {
        self == Cell::Lstm
    }

    /// `lstm`, `gru`, `rnn_tanh` or `rnn_relu`.
    pub fn name(self) -> &'static str {
        match self {
            Cell::Rnn(Nonlinearity::Tanh) => "rnn_tanh",
            Cell::Rnn(Nonlinearity::Relu) => "rnn_relu",
            Cell::Rnn(Nonlinearity::Sigmoid) => "rnn_sigmoid",
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }

    /// Parses the names [`Cell::name`] produces (and `rnn` for `rnn_tanh`).
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "lstm" => Cell::Lstm,
            "gru" => Cell::Gru,
            "rnn" | "rnn_tanh" => Cell::Rnn(Nonlinearity::Tanh),
            "rnn_relu" => Cell::Rnn(Nonlinearity::Relu),
            "rnn_sigmoid" => Cell::Rnn(Nonlinearity::Sigmoid),
            other => {
                return Err(Error::invalid(
                    "cell",
                    format!(
                        "unknown cell {other:?}; expected lstm, gru, rnn_tanh, rnn_relu or rnn_sigmoid"
                    ),
                ));
            }
        })
    }

    /// The activation of a vanilla RNN's update (`None` for the gated cells).
    fn rnn_act(self) -> Option<Act> {
        match self {
            Cell::Rnn(Nonlinearity::Tanh) => Some(Act::Tanh),
            Cell::Rnn(Nonlinearity::Relu) => Some(Act::Relu),
            Cell::Rnn(Nonlinearity::Sigmoid) => Some(Act::Sigmoid),
            _ => None,
        }
    }
}

/// An activation of a cell's equations (the ones ONNX names and every
/// runtime implements: `Sigmoid`, `Tanh`, `Relu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    /// `1 / (1 + e^{-x})`
    Sigmoid,
    /// `tanh x`
    Tanh,
    /// `max(x, 0)`
    Relu,
}

impl Act {
    /// The code the step kernels switch on (`CA_*` in `cell_common.wgsl`).
    fn code(self) -> u32 {
        match self {
            Act::Sigmoid => 0,
            Act::Tanh => 1,
            Act::Relu => 2,
        }
    }

    /// `sigmoid`, `tanh` or `relu`.
    pub fn name(self) -> &'static str {
        match self {
            Act::Sigmoid => "sigmoid",
            Act::Tanh => "tanh",
            Act::Relu => "relu",
        }
    }

    /// Parses an activation name, in any case (`Sigmoid`, `tanh`, ...);
    /// another ONNX activation is an error that names it.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "sigmoid" => Act::Sigmoid,
            "tanh" => Act::Tanh,
            "relu" => Act::Relu,
            _ => {
                return Err(Error::invalid(
                    "activations",
                    format!(
                        "activation {s:?} is not supported; the cells compute Sigmoid, Tanh and Relu"
                    ),
                ));
            }
        })
    }

    /// `act(x)`, with the cells' sigmoid and tanh.
    #[inline(always)]
    pub fn apply<T: Real>(self, x: T) -> T {
        match self {
            Act::Sigmoid => x.sigmoid_cell(),
            Act::Tanh => x.tanh_cell(),
            Act::Relu => x.max(T::zero()),
        }
    }

    /// `up · act'(x)` from the output `y = act(x)` (how the backward steps
    /// read the derivative off the saved activations; the products are
    /// formed left to right as `up · y · (1 − y)`, `up · (1 − y²)`).
    #[inline(always)]
    pub fn back<T: Real>(self, y: T, up: T) -> T {
        match self {
            Act::Sigmoid => up * y * (T::one() - y),
            Act::Tanh => up * (T::one() - y * y),
            Act::Relu => {
                if y > T::zero() {
                    up
                } else {
                    T::zero()
                }
            }
        }
    }
}

/// The activation functions of the gated cells, ONNX's `activations` list:
/// `f` for the gates (LSTM i, f, o; GRU r, z), `g` for the candidate (LSTM
/// g, GRU n), `h` for the LSTM's output `h = o · h(c)`. The default,
/// sigmoid / tanh / tanh, is PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Activations {
    /// Gates.
    pub f: Act,
    /// Candidate.
    pub g: Act,
    /// LSTM output (unused by the GRU).
    pub h: Act,
}

impl Default for Activations {
    fn default() -> Self {
        Activations {
            f: Act::Sigmoid,
            g: Act::Tanh,
            h: Act::Tanh,
        }
    }
}

impl Activations {
    /// Parses ONNX's list for `cell`: three names for the LSTM (f, g, h), two
    /// for the GRU (f, g), separated by commas (`sigmoid,tanh,tanh`).
    pub fn parse(cell: Cell, list: &str) -> Result<Self> {
        let acts = list
            .split(',')
            .map(|n| Act::parse(n.trim()))
            .collect::<Result<Vec<Act>>>()?;
        Self::from_list(cell, &acts)
    }

    /// The activations of ONNX's list for `cell`: `[f, g, h]` for the LSTM,
    /// `[f, g]` for the GRU.
    pub fn from_list(cell: Cell, names: &[Act]) -> Result<Self> {
        let want = match cell {
            Cell::Lstm => 3,
            Cell::Gru => 2,
            Cell::Rnn(_) => {
                return Err(Error::invalid(
                    "activations",
                    "a vanilla RNN's activation is its nonlinearity (rnn_tanh, rnn_relu, rnn_sigmoid)",
                ));
            }
        };
        if names.len() != want {
            return Err(Error::invalid(
                "activations",
                format!(
                    "{} names given; the {} takes {want} (f, g{})",
                    names.len(),
                    cell.name(),
                    if want == 3 { ", h" } else { "" }
                ),
            ));
        }
        Ok(Activations {
            f: names[0],
            g: names[1],
            h: if want == 3 { names[2] } else { Act::Tanh },
        })
    }

    /// `f,g,h` (LSTM) or `f,g` (GRU).
    pub fn list(&self, cell: Cell) -> String {
        match cell {
            Cell::Lstm => format!("{},{},{}", self.f.name(), self.g.name(), self.h.name()),
            _ => format!("{},{}", self.f.name(), self.g.name()),
        }
    }
}

/// The cells' variants beyond PyTorch's three (the attributes ONNX's
/// `LSTM`, `GRU` and `RNN` operators carry, and the literature's LSTM
/// variants). The default is PyTorch's cell exactly; every variant is a
/// fused kernel forward and backward with a CPU twin, like the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Variant {
    /// LSTM with peepholes (Gers & Schmidhuber 2000; ONNX's `P`): i and f
    /// also see `P_i ⊙ c_{t−1}`, `P_f ⊙ c_{t−1}`, o sees `P_o ⊙ c_t`; the
    /// weights are `weight_p_l{k}` `[3H]` in the order P_i, P_f, P_o (ONNX
    /// orders its P as P_i, P_o, P_f).
    pub peepholes: bool,
    /// LSTM with coupled input and forget gates, `f = 1 − i` (ONNX's
    /// `input_forget`; the f rows of the weights are kept and get zero gradients).
    pub coupled: bool,
    /// ONNX's `clip`, as onnxruntime computes it: every gate's
    /// pre-activation (after the bias and, in the LSTM, the peephole term)
    /// is clipped to `[−clip, clip]`; the LSTM's cell state never is.
    /// `None`: no clipping.
    pub cell_clip: Option<f32>,
    /// The gated cells' activations (ONNX's `activations`).
    pub activations: Activations,
    /// GRU with the reset gate applied before the recurrent product (Cho et
    /// al. 2014; ONNX's `linear_before_reset = 0`, Keras' `reset_after =
    /// False`): `n = g(W_in x + b_in + W_hn (r ⊙ h) + b_hn)`. Two dispatches
    /// a step, since the candidate needs every unit's `r ⊙ h`.
    pub reset_before: bool,
    /// LSTM with a projection (PyTorch's `proj_size`; Sak et al. 2014):
    /// `h = W_hr (o ⊙ h(c))` has P units, `0 < P < H`, with `weight_hr_l{k}`
    /// `[P, H]`; W_hh is `[4H, P]`, h and the layer output P wide, c H
    /// wide. Two dispatches a forward step (the cell, then the
    /// projection) and two a backward step. `0`: no projection.
    pub proj_size: usize,
}

impl Variant {
    /// True for PyTorch's cell.
    pub fn is_default(&self) -> bool {
        *self == Variant::default()
    }

    /// Rejects options the cell does not have and a clip that is not a
    /// positive finite number.
    pub fn validate(&self, cell: Cell) -> Result<()> {
        if self.proj_size > 0 && cell != Cell::Lstm {
            return Err(Error::invalid(
                "proj_size",
                format!("is an LSTM variant; this is {}", cell.name()),
            ));
        }
        if self.reset_before && cell != Cell::Gru {
            return Err(Error::invalid(
                "reset_before",
                format!("is a GRU variant; this is {}", cell.name()),
            ));
        }
        if cell != Cell::Lstm {
            for (on, what) in [(self.peepholes, "peepholes"), (self.coupled, "coupled")] {
                if on {
                    return Err(Error::invalid(
                        what,
                        format!("is an LSTM variant; this is {}", cell.name()),
                    ));
                }
            }
        }
        match cell {
            Cell::Rnn(_) if self.activations != Activations::default() => {
                return Err(Error::invalid(
                    "activations",
                    "a vanilla RNN's activation is its nonlinearity (rnn_tanh, rnn_relu, rnn_sigmoid)",
                ));
            }
            Cell::Gru if self.activations.h != Act::Tanh => {
                return Err(Error::invalid(
                    "activations",
                    "the GRU takes two activations (f, g); h is the LSTM's",
                ));
            }
            _ => {}
        }
        if let Some(c) = self.cell_clip
            && !(c.is_finite() && c > 0.0)
        {
            return Err(Error::invalid(
                "cell_clip",
                format!("{c} is not a positive finite threshold"),
            ));
        }
        Ok(())
    }

    /// Values per hidden unit a training forward saves in `gates`: the
    /// LSTM's and GRU's four, and for the vanilla RNN one (its clipped
    /// pre-activation) when clipping, else none.
    pub fn saved(&self, cell: Cell) -> usize {
        match cell {
            Cell::Rnn(_) => self.cell_clip.is_some() as usize,
            // With a projection, also o ⊙ h(c), the projection's input.
            Cell::Lstm => 4 + (self.proj_size > 0) as usize,
            Cell::Gru => 4,
        }
    }

    /// True when a step takes two dispatches that pass values in the gates
    /// (the reset-before GRU's r ⊙ h, the projection's m), so that even an
    /// inference forward needs a gates buffer.
    pub fn gates_between_dispatches(&self) -> bool {
        self.reset_before || self.proj_size > 0
    }

    /// True when `cell`'s saved gates can be packed two 16-bit values a
    /// word on the GPU, as the step kernels pair a unit's gate blocks 2q and
    /// 2q + 1: rows of an even number of blocks (the LSTM's and GRU's four,
    /// not the clipped RNN's one or the projection's five) that only the
    /// step kernels read (not the reset-before GRU's or the projection's,
    /// whose weight gradients multiply a block as a matrix).
    pub fn pairs_gates(&self, cell: Cell) -> bool {
        matches!(cell, Cell::Lstm | Cell::Gru)
            && self.saved(cell).is_multiple_of(2)
            && !self.gates_between_dispatches()
    }

    /// True when `cell`'s input projection xg and its gate gradients dgh can
    /// be packed on the GPU in the same pairing as the gates: rows of an even
    /// number of gate blocks (the LSTM's four, without a projection, whose
    /// dgh rows also hold dh), which the matmuls store and read paired
    /// ([`crate::ops::matmul::Gemm::paired`]). Not the GRU's three.
    pub fn pairs_rows(&self, cell: Cell) -> bool {
        cell.gates().is_multiple_of(2) && self.proj_size == 0
    }

    /// True when a step of `hidden` cells can hold its states hs and cs
    /// packed two 16-bit values a word on the GPU: an even H and state
    /// width (two units of a row share a word, which the step writes from
    /// two invocations' values at once, shaders/cell_common.wgsl's
    /// flush_pairs). Every cell.
    pub fn pairs_states(&self, hidden: usize) -> bool {
        hidden.is_multiple_of(2) && self.state_size(hidden).is_multiple_of(2)
    }

    /// Width of the hidden state h for `hidden` cells: P with a projection, else H.
    pub fn state_size(&self, hidden: usize) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            hidden
        }
    }

    /// Rejects a projection that is not in `1..hidden` (PyTorch's rule).
    pub fn check_proj(&self, hidden: usize) -> Result<()> {
        if self.proj_size > 0 && self.proj_size >= hidden {
            return Err(Error::invalid(
                "proj_size",
                format!(
                    "{} must be smaller than the hidden size {hidden}",
                    self.proj_size
                ),
            ));
        }
        Ok(())
    }

    /// Row stride of the gate gradients dgh: G·H, plus P with a projection
    /// (where the backward keeps dh between its two dispatches).
    pub fn dgh_width(&self, cell: Cell, hidden: usize) -> usize {
        cell.gates() * hidden + self.proj_size
    }

    /// Peephole weights per layer and direction (`3H` for an LSTM with peepholes).
    pub fn peephole_len(&self, hidden: usize) -> usize {
        if self.peepholes { 3 * hidden } else { 0 }
    }

    /// A short description for logs: `peepholes, coupled, clip 1, activations sigmoid,relu,tanh`,
    /// or `""` for the default.
    pub fn describe(&self, cell: Cell) -> String {
        let mut parts = Vec::new();
        if self.peepholes {
            parts.push("peepholes".to_string());
        }
        if self.coupled {
            parts.push("coupled".to_string());
        }
        if self.reset_before {
            parts.push("reset before".to_string());
        }
        if self.proj_size > 0 {
            parts.push(format!("proj {}", self.proj_size));
        }
        if let Some(c) = self.cell_clip {
            parts.push(format!("cell clip {c}"));
        }
        if self.activations != Activations::default() {
            parts.push(format!("activations {}", self.activations.list(cell)));
        }
        parts.join(", ")
    }

    /// [`Variant::describe`] in parentheses after a space (` (peepholes)`),
    /// or `""` for the default: what follows a cell's name in logs.
    pub fn tag(&self, cell: Cell) -> String {
        let v = self.describe(cell);
        if v.is_empty() { v } else { format!(" ({v})") }
    }

    fn clip<T: Real>(&self) -> Option<T> {
        self.cell_clip.map(|c| T::of(c as f64))
    }
}

/// `x` clipped to `[−c, c]` when `c` is set.
#[inline(always)]
fn clamp_opt<T: Real>(c: Option<T>, x: T) -> T {
    match c {
        Some(c) => x.max(-c).min(c),
        None => x,
    }
}

/// `d` where the clipped value `z` is strictly inside `(−c, c)` (the clip
/// passes gradients there), zero where it was clipped.
#[inline(always)]
fn clip_pass<T: Real>(c: Option<T>, z: T, d: T) -> T {
    match c {
        Some(c) if z.abs() >= c => T::zero(),
        _ => d,
    }
}

/// Where one step sits: sizes, time, direction, and offsets into shared buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepSpec {
    /// Batch B.
    pub batch: usize,
    /// Hidden size H.
    pub hidden: usize,
    /// Sequence length T.
    pub steps: usize,
    /// Time step t.
    pub t: usize,
    /// Reverse direction.
    pub reverse: bool,
    /// Backward only: the first step of the backward sweep (no product from a later step).
    pub first: bool,
    /// Backward only: which half of `carry` to read (the other is written).
    pub parity: usize,
    /// Offset of `W_hh` `[G·H, H]` in the weights buffer.
    pub whh_off: usize,
    /// Offset of `b_hh` `[G·H]` in the weights buffer.
    pub bhh_off: usize,
    /// First column of this direction in `out` / `dout`.
    pub out_col: usize,
    /// Row stride of `out` / `dout` (D·H).
    pub out_ld: usize,
    /// Forward only: keep two state slots addressed modulo 2 (`hs`, `cs`
    /// are `[2, B, H]`), for an inference forward that keeps nothing for a
    /// backward.
    pub ring: bool,
    /// The cell's variant (PyTorch's cell by default).
    pub variant: Variant,
    /// Offset of the peephole weights `[3H]` (P_i, P_f, P_o) in the weights
    /// buffer (an LSTM with peepholes).
    pub peep_off: usize,
    /// Offset of the projection `W_hr` `[P, H]` in the weights buffer (an
    /// LSTM with a projection).
    pub hr_off: usize,
    /// More work in the same step: the reverse direction beside this
    /// forward one, further time steps (none by default).
    pub fusion: Fusion,
    /// How the step's buffers store values (f32 by default): with a 16-bit
    /// precision every value a single step writes — the state slot, the
    /// saved gates, the output rows, and in the backward the gate gradients
    /// and the carries — is rounded to it as it is stored, so that the next
    /// step reads what 16-bit storage holds (see [`crate::precision`]).
    pub store: Precision,
}

/// Work a step takes on beside its own (one direction, one time step), so
/// that one dispatch does it: [`StepSpec::parts`] lists the single steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fusion {
    /// Direction 1, the reverse one, beside this forward step: at time
    /// T − 1 − t, its parameters and its parts of the buffers at these
    /// distances from direction 0's, its columns of `out` / `dout` after
    /// direction 0's.
    pub pair: Option<DirStrides>,
    /// Further time steps after this one, in the sweep's order (a forward:
    /// each direction's own time order; a backward: the reverse), each with
    /// the carries' parity flipped. A step of two dispatches (see
    /// [`Variant::gates_between_dispatches`]) cannot take further steps.
    pub more_steps: usize,
    /// Layers of a unidirectional stack stepped beside this one as a
    /// wavefront (see [`Wave`]); not with `pair` or `more_steps`.
    pub wave: Option<Wave>,
}

/// A wavefront over the layers of a unidirectional stack: one dispatch
/// steps layers `layer..layer + lanes`, layer `layer + i` at time `t − i`
/// (the step's `t` is layer `layer`'s), forward or backward. Each buffer
/// holds the whole stack, layer `k`'s part `k` strides in (`strides`; in
/// the weights, `strides.params` from one layer's parameters to the
/// next's), and the step's offsets (`whh_off`, `bhh_off`, `peep_off`) are
/// layer `layer`'s.
///
/// What a layer reads from its neighbours comes through the step itself:
/// - forward, a layer above the first computes its input product
///   `W_ih · h_below + b_ih` (the layer below's output at the same time step,
///   which the previous dispatch wrote) instead of reading `xg`, which holds
///   only layer 0's input projection (`strides.xg` is unused);
/// - backward, a layer below the top computes the gradient of its output,
///   the layer above's input-side gate gradients at the same time step times
///   that layer's `W_ih`, instead of reading `dout`, which holds only the
///   top layer's output gradient (`strides.out` is unused there).
///
/// Every layer writes its output into its part of `out` (`strides.out`).
/// The sums differ in order from a separate input matmul, so a wavefront's
/// results agree with the layer-by-layer schedule to rounding, not bitwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wave {
    /// The step's layer (the lowest in the dispatch).
    pub layer: usize,
    /// Layers in the dispatch (at least 1).
    pub lanes: usize,
    /// Layers L of the stack (the top one is L − 1).
    pub layers: usize,
    /// Distances between consecutive layers' parts.
    pub strides: DirStrides,
    /// Offset of layer 1's `W_ih` `[G·H, H]`; layer `k`'s is
    /// `(k − 1)·strides.params` further.
    pub wih_off: usize,
    /// Offset of layer 1's `b_ih` `[G·H]`, strided as `wih_off`.
    pub bih_off: usize,
}

/// Element distances between direction 0's and direction 1's parts of the
/// buffers of a fused step (the directions of a layer stored one after the
/// other in one buffer each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirStrides {
    /// In the weights (every offset of the step: W_hh, b_hh, peepholes, W_hr).
    pub params: usize,
    /// In `xg`.
    pub xg: usize,
    /// In `hs`.
    pub hs: usize,
    /// In `cs`.
    pub cs: usize,
    /// In `gates`.
    pub gates: usize,
    /// In `dgh`.
    pub dgh: usize,
    /// In `dgx`.
    pub dgx: usize,
    /// In `carry`.
    pub carry: usize,
    /// In `out` (a [`Wave`]'s layers; a pair's directions share `out` by
    /// columns).
    pub out: usize,
}

impl StepSpec {
    /// The single steps this one stands for, in the order a dispatch runs
    /// them (time steps in order, the directions of one time step together):
    /// `(direction, step)`, each without fusion. Direction 1's buffers are
    /// its parts, [`Fusion::pair`]'s strides further on.
    pub fn parts(&self, backward: bool) -> Result<Vec<(usize, StepSpec)>> {
        let f = self.fusion;
        if self.steps == 0 || self.t >= self.steps || f.more_steps >= self.steps {
            return Err(Error::invalid(
                "cell step",
                format!(
                    "t = {} and {} further steps do not fit T = {}",
                    self.t, f.more_steps, self.steps
                ),
            ));
        }
        if let Some(w) = f.wave {
            return self.wave_parts(&w, backward);
        }
        if f.pair.is_some() && self.reverse {
            return Err(Error::invalid(
                "cell step fusion",
                "a pair of directions is given by its forward direction (reverse = false)",
            ));
        }
        if f.more_steps > 0 && self.variant.gates_between_dispatches() {
            return Err(Error::invalid(
                "cell step fusion",
                "a step of two dispatches cannot take further steps",
            ));
        }
        let dirs = 1 + f.pair.is_some() as usize;
        let hp = self.state_size();
        let mut parts = Vec::with_capacity(dirs * (f.more_steps + 1));
        // (more_steps < T, so the capacity is bounded by the sequence.)
        for s in 0..=f.more_steps {
            // Direction 0's time: forward in time for a forward direction's
            // forward sweep and a reverse direction's backward one.
            let down = backward != self.reverse;
            let t = if down {
                self.t.checked_sub(s)
            } else {
                Some(self.t + s).filter(|&t| t < self.steps)
            }
            .ok_or_else(|| {
                Error::invalid(
                    "cell step fusion",
                    format!(
                        "{} further steps from t = {} leave 0..T = {}",
                        f.more_steps, self.t, self.steps
                    ),
                )
            })?;
            let one = StepSpec {
                t,
                first: self.first && s == 0,
                parity: (self.parity + s) % 2,
                fusion: Fusion::default(),
                ..*self
            };
            parts.push((0, one));
            if let Some(d) = f.pair {
                parts.push((
                    1,
                    StepSpec {
                        t: self.steps - 1 - t,
                        reverse: true,
                        whh_off: one.whh_off + d.params,
                        bhh_off: one.bhh_off + d.params,
                        peep_off: one.peep_off + d.params,
                        hr_off: one.hr_off + d.params,
                        out_col: one.out_col + hp,
                        ..one
                    },
                ));
            }
        }
        Ok(parts)
    }

    /// [`StepSpec::parts`] of a wavefront: `(layer, step)` for each layer of
    /// the dispatch, lowest first.
    fn wave_parts(&self, w: &Wave, backward: bool) -> Result<Vec<(usize, StepSpec)>> {
        let bad = |why: String| Err(Error::invalid("cell step wavefront", why));
        if self.fusion.pair.is_some() || self.fusion.more_steps > 0 || self.reverse {
            return bad("a wavefront steps one forward direction, one time step a layer".into());
        }
        if self.variant.gates_between_dispatches() {
            return bad("a step of two dispatches cannot be part of a wavefront".into());
        }
        if w.lanes == 0 || w.layer.saturating_add(w.lanes) > w.layers {
            return bad(format!(
                "layers {}..{} are not inside the stack's {}",
                w.layer,
                w.layer.saturating_add(w.lanes),
                w.layers
            ));
        }
        if self.out_col != 0 || self.out_ld != self.state_size() || self.variant.proj_size > 0 {
            return bad(format!(
                "every layer of a wavefront writes its own [T, B, H] output (out_col 0, out_ld H = {}; \
                 no projection), not columns {}.. of rows {} wide",
                self.hidden, self.out_col, self.out_ld
            ));
        }
        if w.lanes > self.t + 1 {
            return bad(format!(
                "{} layers from t = {} reach before time 0",
                w.lanes, self.t
            ));
        }
        let st = w.strides;
        Ok((0..w.lanes)
            .map(|i| {
                let t = self.t - i;
                let by = i * st.params;
                let one = StepSpec {
                    t,
                    first: backward && t + 1 == self.steps,
                    parity: if backward {
                        (self.steps - 1 - t) % 2
                    } else {
                        0
                    },
                    whh_off: self.whh_off + by,
                    bhh_off: self.bhh_off + by,
                    peep_off: self.peep_off + by,
                    fusion: Fusion::default(),
                    ..*self
                };
                (w.layer + i, one)
            })
            .collect())
    }

    /// Whether this step stands for more than one single step.
    fn is_fused(&self) -> bool {
        self.fusion != Fusion::default()
    }

    fn slot(&self, s: usize) -> usize {
        if self.ring { s % 2 } else { s }
    }

    /// The state slot this step reads.
    pub fn prev(&self) -> usize {
        self.slot(self.t + self.reverse as usize)
    }

    /// The state slot this step writes.
    pub fn next(&self) -> usize {
        self.slot(self.t + 1 - self.reverse as usize)
    }

    /// State slots the `hs` / `cs` buffers hold: `T + 1`, or 2 with a ring.
    pub fn slots(&self) -> usize {
        if self.ring { 2 } else { self.steps + 1 }
    }

    /// The time step processed just before this one in the backward sweep.
    fn later(&self) -> usize {
        if self.reverse { self.t - 1 } else { self.t + 1 }
    }

    fn out_index(&self, b: usize, j: usize) -> usize {
        (self.t * self.batch + b) * self.out_ld + self.out_col + j
    }

    fn need(arg: &str, want: usize, len: usize) -> Result<()> {
        need_len(format!("cell step {arg}"), want, len)
    }

    /// Checks the step against the cell and the buffer lengths it will touch.
    /// Width of h: P with a projection, else H.
    pub fn state_size(&self) -> usize {
        self.variant.state_size(self.hidden)
    }

    fn validate(&self, cell: Cell, backward: bool, lens: &Lens) -> Result<()> {
        self.variant.validate(cell)?;
        self.variant.check_proj(self.hidden)?;
        let (b, h, t) = (self.batch, self.hidden, self.steps);
        let hp = self.state_size();
        if b == 0 || h == 0 || t == 0 {
            return Err(Error::invalid(
                "cell step",
                format!("empty sizes: B = {b}, H = {h}, T = {t}"),
            ));
        }
        if self.t >= t {
            return Err(Error::invalid(
                "cell step t",
                format!("{} >= T = {t}", self.t),
            ));
        }
        if self.out_col.saturating_add(hp) > self.out_ld {
            return Err(Error::invalid(
                "cell step out_col",
                format!(
                    "columns {}..{} exceed the row stride {}",
                    self.out_col,
                    self.out_col + hp,
                    self.out_ld
                ),
            ));
        }
        if backward && self.ring {
            return Err(Error::invalid(
                "cell step ring",
                "a backward step needs every state slot, not a ring of two",
            ));
        }
        if backward {
            if self.parity > 1 {
                return Err(Error::invalid("cell step parity", "must be 0 or 1"));
            }
            let edge = if self.reverse {
                self.t == 0
            } else {
                self.t + 1 == t
            };
            if !self.first && edge {
                return Err(Error::invalid(
                    "cell step first",
                    "the last time step of the sweep order has no later step",
                ));
            }
        }
        // Saturating products: an absurd size fails the length check instead of wrapping.
        let m = |xs: &[usize]| xs.iter().fold(1usize, |acc, &x| acc.saturating_mul(x));
        let gh = m(&[cell.gates(), h]);
        Self::need(
            "weights (W_hh)",
            m(&[gh, hp]).saturating_add(self.whh_off),
            lens.weights,
        )?;
        if self.variant.proj_size > 0 {
            Self::need(
                "weights (W_hr)",
                m(&[hp, h]).saturating_add(self.hr_off),
                lens.weights,
            )?;
        }
        Self::need(
            "weights (b_hh)",
            gh.saturating_add(self.bhh_off),
            lens.weights,
        )?;
        if self.variant.peepholes {
            Self::need(
                "weights (peepholes)",
                m(&[3, h]).saturating_add(self.peep_off),
                lens.weights,
            )?;
        }
        Self::need("hs", m(&[self.slots(), b, hp]), lens.hs)?;
        if let Some(len) = lens.lengths {
            Self::need("lengths", b, len)?;
        }
        if cell.has_cell_state() {
            Self::need("cs", m(&[self.slots(), b, h]), lens.cs.unwrap_or(0))?;
        }
        // A forward saves gates only when given a buffer for them; a
        // backward needs them.
        let saved = self.variant.saved(cell);
        // The reset-before GRU passes r ⊙ h between its two dispatches in
        // the gates, so even an inference forward has them.
        // So does a projected LSTM, whose projection reads o ⊙ h(c) there.
        let passes = self.variant.gates_between_dispatches();
        if saved > 0 && (backward || lens.gates.is_some() || passes) {
            Self::need("gates", m(&[t, b, saved, h]), lens.gates.unwrap_or(0))?;
        }
        let out_len = m(&[t, b, self.out_ld]);
        let per_step = m(&[t, b, gh]);
        if backward {
            Self::need("dout", out_len, lens.out)?;
            let dgh_len = m(&[t, b, self.variant.dgh_width(cell, h)]);
            Self::need("dgh", dgh_len, lens.dgh)?;
            // The reset-before GRU's two sides share one gradient, dgh.
            if cell == Cell::Gru && !self.variant.reset_before {
                Self::need("dgx", per_step, lens.dgx.unwrap_or(0))?;
            }
            Self::need("carry", m(&[4, b, h]), lens.carry)?;
        } else {
            Self::need("xg", per_step, lens.xg)?;
            Self::need("out", out_len, lens.out)?;
        }
        Ok(())
    }
}

/// Buffer lengths, for validation.
#[derive(Default)]
struct Lens {
    xg: usize,
    weights: usize,
    lengths: Option<usize>,
    hs: usize,
    cs: Option<usize>,
    gates: Option<usize>,
    out: usize,
    dgh: usize,
    dgx: Option<usize>,
    carry: usize,
}

impl Lens {
    /// The lengths of direction `d`'s parts: each buffer from its offset on.
    fn for_direction(&self, d: usize, st: &DirStrides) -> Lens {
        let less = |len: usize, stride: usize| len.saturating_sub(d.saturating_mul(stride));
        Lens {
            xg: less(self.xg, st.xg),
            weights: self.weights,
            lengths: self.lengths,
            hs: less(self.hs, st.hs),
            cs: self.cs.map(|l| less(l, st.cs)),
            gates: self.gates.map(|l| less(l, st.gates)),
            out: less(self.out, st.out),
            dgh: less(self.dgh, st.dgh),
            dgx: self.dgx.map(|l| less(l, st.dgx)),
            carry: less(self.carry, st.carry),
        }
    }
}

impl StepSpec {
    /// [`StepSpec::parts`], each checked against its direction's part of
    /// the buffers.
    fn checked_parts(
        &self,
        cell: Cell,
        backward: bool,
        lens: &Lens,
    ) -> Result<Vec<(usize, StepSpec)>> {
        let parts = self.parts(backward)?;
        if let Some(w) = self.fusion.wave {
            return self.checked_wave(cell, backward, lens, &w, parts);
        }
        let st = self.fusion.pair.unwrap_or_default();
        for (d, one) in &parts {
            one.validate(cell, backward, &lens.for_direction(*d, &st))?;
        }
        if self.fusion.pair.is_some() {
            self.check_apart(cell, backward, lens, &st)?;
        }
        Ok(parts)
    }

    /// A wavefront's parts, each checked against its layer's part of the
    /// buffers (and the W_ih it multiplies), the layers' parts disjoint.
    fn checked_wave(
        &self,
        cell: Cell,
        backward: bool,
        lens: &Lens,
        w: &Wave,
        parts: Vec<(usize, StepSpec)>,
    ) -> Result<Vec<(usize, StepSpec)>> {
        let mut st = w.strides;
        if backward {
            // dout holds the top layer's gradient only.
            st.out = 0;
        }
        let gh = cell.gates().saturating_mul(self.hidden);
        for (k, one) in &parts {
            let mut part = lens.for_direction(*k, &st);
            // Where the step computes its input product (forward, above the
            // first layer) or its output gradient (backward, below the top),
            // it reads no xg or dout.
            let reads = match backward {
                true => (*k + 1 < w.layers).then_some(*k + 1),
                false => (*k > 0).then_some(*k),
            };
            if reads.is_some() {
                if backward {
                    part.out = usize::MAX;
                } else {
                    part.xg = usize::MAX;
                }
            }
            one.validate(cell, backward, &part)?;
            if let (true, Some(m)) = (backward, reads) {
                // The layer above's gate gradients at this step's row, read
                // by the in-step product (that layer may be outside the
                // dispatch's lanes).
                let above = lens.for_direction(m, &st);
                let rows = self.steps.saturating_mul(self.batch);
                Self::need(
                    "dgh (the layer above's part)",
                    rows.saturating_mul(self.variant.dgh_width(cell, self.hidden)),
                    above.dgh,
                )?;
                if let Some(dgx) = above.dgx {
                    Self::need("dgx (the layer above's part)", rows.saturating_mul(gh), dgx)?;
                }
            }
            if let Some(m) = reads {
                let by = (m - 1).saturating_mul(st.params);
                let wih = gh.saturating_mul(self.hidden);
                Self::need(
                    "weights (W_ih)",
                    w.wih_off.saturating_add(by).saturating_add(wih),
                    lens.weights,
                )?;
                Self::need(
                    "weights (b_ih)",
                    w.bih_off.saturating_add(by).saturating_add(gh),
                    lens.weights,
                )?;
            }
        }
        // Layers read their neighbours' parts (even a dispatch of one lane),
        // so the parts must be apart whenever the stack has two layers.
        if w.layers > 1 {
            self.check_apart(cell, backward, lens, &st)?;
            if !backward && st.out < self.steps.saturating_mul(self.batch * self.out_ld) {
                return Err(Error::invalid(
                    "cell step out",
                    format!(
                        "a layer's part starts {} elements after the one below's, \
                         inside the {} that one writes",
                        st.out,
                        self.steps * self.batch * self.out_ld
                    ),
                ));
            }
        }
        Ok(parts)
    }

    /// A pair's directions (or a wavefront's layers) write disjoint parts:
    /// each written buffer's stride is at least what one part spans.
    fn check_apart(&self, cell: Cell, backward: bool, lens: &Lens, st: &DirStrides) -> Result<()> {
        let (b, h, t) = (self.batch, self.hidden, self.steps);
        let m = |xs: &[usize]| xs.iter().fold(1usize, |acc, &x| acc.saturating_mul(x));
        let saved = self.variant.saved(cell);
        let mut spans = vec![("hs", st.hs, m(&[self.slots(), b, self.state_size()]))];
        if cell.has_cell_state() {
            spans.push(("cs", st.cs, m(&[self.slots(), b, h])));
        }
        if saved > 0 && lens.gates.is_some() && !backward {
            spans.push(("gates", st.gates, m(&[t, b, saved, h])));
        }
        if backward {
            spans.push(("dgh", st.dgh, m(&[t, b, self.variant.dgh_width(cell, h)])));
            if lens.dgx.is_some() {
                spans.push(("dgx", st.dgx, m(&[t, b, cell.gates(), h])));
            }
            spans.push(("carry", st.carry, m(&[4, b, h])));
        }
        for (arg, stride, span) in spans {
            if stride < span {
                return Err(Error::invalid(
                    format!("cell step {arg}"),
                    format!(
                        "the second part starts {stride} elements after the first's, \
                         inside the {span} the first writes"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `v[from..]`, or an error naming the buffer when it is shorter.
fn tail<'v, T>(arg: &str, v: &'v [T], from: usize) -> Result<&'v [T]> {
    v.get(from..).ok_or_else(|| {
        Error::invalid(
            format!("cell step {arg}"),
            format!(
                "holds {} elements, fewer than its second direction's offset {from}",
                v.len()
            ),
        )
    })
}

/// `v[from..]` mutably, as [`tail`].
fn tail_mut<'v, T>(arg: &str, v: &'v mut [T], from: usize) -> Result<&'v mut [T]> {
    let len = v.len();
    v.get_mut(from..).ok_or_else(|| {
        Error::invalid(
            format!("cell step {arg}"),
            format!("holds {len} elements, fewer than its second direction's offset {from}"),
        )
    })
}

fn is_active(lengths: Option<&[i32]>, b: usize, t: usize) -> bool {
    lengths.is_none_or(|l| (t as i64) < l[b] as i64)
}

/// Tensors of a forward cell step on any backend (`X` a float tensor, `I` an
/// i32 tensor); see the module docs for the layouts.
pub struct StepForward<'a, X, I> {
    /// `[T, B, G·H]` input projections.
    pub xg: &'a X,
    /// Flat parameters (W_hh, b_hh at the step's offsets).
    pub weights: &'a X,
    /// `[B]` sequence lengths, or `None` for full length.
    pub lengths: Option<&'a I>,
    /// `[T+1, B, H]` hidden-state slots (`[2, B, H]` with [`StepSpec::ring`]).
    pub hs: &'a X,
    /// `[T+1, B, H]` cell-state slots (LSTM; `[2, B, H]` with a ring).
    pub cs: Option<&'a X>,
    /// `[T, B, 4H]` gates saved for the backward (LSTM, GRU); `None` saves
    /// nothing (an inference forward).
    pub gates: Option<&'a X>,
    /// `[T, B, D·H]` layer output.
    pub out: &'a X,
}

/// Tensors of a backward cell step on any backend.
pub struct StepBackward<'a, X, I> {
    /// Flat parameters.
    pub weights: &'a X,
    /// `[B]` sequence lengths, or `None`.
    pub lengths: Option<&'a I>,
    /// `[T+1, B, H]`
    pub hs: &'a X,
    /// `[T+1, B, H]` (LSTM)
    pub cs: Option<&'a X>,
    /// `[T, B, 4H]` (LSTM, GRU)
    pub gates: Option<&'a X>,
    /// `[T, B, D·H]` gradient of the layer output.
    pub dout: &'a X,
    /// `[T, B, G·H]` gradient of the recurrent pre-activations.
    pub dgh: &'a X,
    /// `[T, B, G·H]` gradient of the input pre-activations (GRU).
    pub dgx: Option<&'a X>,
    /// `[2, 2, B, H]` ping-pong carries.
    pub carry: &'a X,
}

/// Host buffers of a forward step.
pub struct ForwardSlices<'a, T> {
    /// `[T, B, G·H]`
    pub xg: &'a [T],
    /// Flat parameters (W_hh, b_hh at the spec's offsets).
    pub weights: &'a [T],
    /// `[B]`, optional.
    pub lengths: Option<&'a [i32]>,
    /// `[T+1, B, H]`
    pub hs: &'a mut [T],
    /// `[T+1, B, H]`, LSTM only.
    pub cs: Option<&'a mut [T]>,
    /// `[T, B, 4H]`, LSTM and GRU.
    pub gates: Option<&'a mut [T]>,
    /// `[T, B, out_ld]`
    pub out: &'a mut [T],
}

/// Host buffers of a backward step.
pub struct BackwardSlices<'a, T> {
    /// Flat parameters.
    pub weights: &'a [T],
    /// `[B]`, optional.
    pub lengths: Option<&'a [i32]>,
    /// `[T+1, B, H]`
    pub hs: &'a [T],
    /// `[T+1, B, H]`, LSTM only.
    pub cs: Option<&'a [T]>,
    /// `[T, B, 4H]`, LSTM and GRU.
    pub gates: Option<&'a [T]>,
    /// `[T, B, out_ld]`
    pub dout: &'a [T],
    /// `[T, B, G·H]`
    pub dgh: &'a mut [T],
    /// `[T, B, G·H]`, GRU only.
    pub dgx: Option<&'a mut [T]>,
    /// `[2, 2, B, H]`
    pub carry: &'a mut [T],
}

fn missing(arg: &str, cell: Cell) -> Error {
    Error::invalid(
        format!("cell step {arg}"),
        format!("is required for {}", cell.name()),
    )
}

/// One forward step on the host: the reference the GPU kernels are checked against.
pub fn forward_step_cpu<T: Real>(
    cell: Cell,
    s: &StepSpec,
    bufs: ForwardSlices<'_, T>,
) -> Result<()> {
    forward_one(cell, s, bufs, None)
}

/// [`forward_step_cpu`]; `x_in`, when given, is the step's input product
/// `[B, G·H]` (b_ih included), read instead of `xg`'s rows (a wavefront's
/// layer above the first).
fn forward_one<T: Real>(
    cell: Cell,
    s: &StepSpec,
    bufs: ForwardSlices<'_, T>,
    x_in: Option<&[T]>,
) -> Result<()> {
    let ForwardSlices {
        xg,
        weights,
        lengths,
        hs,
        mut cs,
        mut gates,
        out,
    } = bufs;
    let lens = Lens {
        xg: xg.len(),
        weights: weights.len(),
        lengths: lengths.map(|l| l.len()),
        hs: hs.len(),
        cs: cs.as_ref().map(|c| c.len()),
        gates: gates.as_ref().map(|g| g.len()),
        out: out.len(),
        ..Default::default()
    };
    if s.is_fused() {
        // Each single step on its direction's (or layer's) part of the
        // buffers, in order, all checked before the first runs.
        let parts = s.checked_parts(cell, false, &lens)?;
        let wave = s.fusion.wave;
        let st = wave.map_or(s.fusion.pair.unwrap_or_default(), |w| w.strides);
        let mut x_in = Vec::new();
        for (d, one) in parts {
            // A wavefront's layer above the first: W_ih · (the layer
            // below's output at this step) + b_ih.
            let input = match wave {
                Some(w) if d > 0 => {
                    let (bsz, h) = (one.batch, one.hidden);
                    let gh = cell.gates() * h;
                    let by = (d - 1) * st.params;
                    x_in.resize(bsz * gh, T::zero());
                    let g = Gemm::nt(bsz, gh, h)
                        .offsets((d - 1) * st.out + one.t * bsz * h, w.wih_off + by, 0)
                        .with_bias(w.bih_off + by);
                    gemm_cpu(&g, out, weights, Some(weights), &mut x_in)?;
                    // (Stored, like the layer order's xg, at the step's precision.)
                    s.store.round_slice(&mut x_in);
                    Some(&x_in[..])
                }
                _ => None,
            };
            let view = ForwardSlices {
                // (A wavefront's xg is layer 0's alone.)
                xg: tail("xg", xg, if wave.is_some() { 0 } else { d * st.xg })?,
                weights,
                lengths,
                hs: tail_mut("hs", &mut *hs, d * st.hs)?,
                cs: cs
                    .as_deref_mut()
                    .map(|c| tail_mut("cs", c, d * st.cs))
                    .transpose()?,
                gates: gates
                    .as_deref_mut()
                    .map(|g| tail_mut("gates", g, d * st.gates))
                    .transpose()?,
                out: tail_mut("out", &mut *out, d * st.out)?,
            };
            forward_one(cell, &one, view, input)?;
        }
        return Ok(());
    }
    // The step in f32, then (16-bit storage) what it stored rounded to the
    // precision; the two-dispatch variants round what passes between their
    // dispatches as they go.
    let view = ForwardSlices {
        xg,
        weights,
        lengths,
        hs: &mut *hs,
        cs: cs.as_deref_mut(),
        gates: gates.as_deref_mut(),
        out: &mut *out,
    };
    forward_single(cell, s, view, x_in, &lens)?;
    let (bsz, h, p) = (s.batch, s.hidden, s.store);
    if p.is_16bit() {
        let w = s.variant.state_size(h);
        p.round_range(hs, s.next() * bsz * w, bsz * w);
        if let Some(c) = cs {
            p.round_range(c, s.next() * bsz * h, bsz * h);
        }
        if let Some(g) = gates {
            let sv = s.variant.saved(cell) * h;
            p.round_range(g, s.t * bsz * sv, bsz * sv);
        }
        p.round_range(out, s.t * bsz * s.out_ld, bsz * s.out_ld);
    }
    Ok(())
}

/// One single step of [`forward_one`], in f32 but for what a two-dispatch
/// variant stores between its dispatches, rounded to `s.store`.
fn forward_single<T: Real>(
    cell: Cell,
    s: &StepSpec,
    bufs: ForwardSlices<'_, T>,
    x_in: Option<&[T]>,
    lens: &Lens,
) -> Result<()> {
    let mid = s.store;
    let ForwardSlices {
        xg,
        weights,
        lengths,
        hs,
        cs,
        gates,
        out,
    } = bufs;
    s.validate(cell, false, lens)?;
    if s.variant.proj_size > 0 {
        let (Some(cs), Some(gates)) = (cs, gates) else {
            return Err(missing("cs/gates", cell));
        };
        return lstm_proj_forward_cpu(s, xg, weights, lengths, hs, cs, gates, out, mid);
    }
    let (bsz, h) = (s.batch, s.hidden);
    let gh = cell.gates() * h;
    let bh = bsz * h;
    let (prev, next) = (s.prev() * bh, s.next() * bh);

    // rec[b, m] = Σ_k h_prev[b, k]·W_hh[m, k] + b_hh[m]
    let mut rec = vec![T::zero(); bsz * gh];
    let g = Gemm::nt(bsz, gh, h)
        .offsets(prev, s.whh_off, 0)
        .with_bias(s.bhh_off);
    gemm_cpu(&g, hs, weights, Some(weights), &mut rec)?;

    if cell == Cell::Gru && s.variant.reset_before {
        let gates = gates.ok_or_else(|| missing("gates", cell))?;
        return gru_reset_forward_cpu(s, xg, weights, lengths, hs, gates, out, &rec, mid);
    }
    if cell.has_cell_state() && cs.is_none() {
        return Err(missing("cs", cell));
    }
    // Per-row views of this step (rows are independent).
    let t0 = s.t * bsz;
    let (h_prev, h_next) = rows_mut(hs, prev, next, bh);
    let (c_prev, c_next) = match cs {
        Some(c) => {
            let (p, n) = rows_mut(c, prev, next, bh);
            (Some(p), Some(n))
        }
        None => (None, None),
    };
    let mut c_prev = c_prev.map(|c| c.chunks(h));
    let mut c_next = c_next.map(|c| c.chunks_mut(h));
    let sv = s.variant.saved(cell) * h;
    let mut gate_rows = gates
        .filter(|_| sv > 0)
        .map(|g| g[t0 * sv..(t0 + bsz) * sv].chunks_mut(sv));
    let peep = s
        .variant
        .peepholes
        .then(|| &weights[s.peep_off..s.peep_off + 3 * h]);
    let out_rows = out[t0 * s.out_ld..(t0 + bsz) * s.out_ld].chunks_mut(s.out_ld);
    let mut rows: Vec<ForwardRow<'_, T>> = x_in
        .unwrap_or(&xg[t0 * gh..(t0 + bsz) * gh])
        .chunks(gh)
        .zip(rec.chunks(gh))
        .zip(h_prev.chunks(h).zip(h_next.chunks_mut(h)))
        .zip(out_rows)
        .enumerate()
        .map(|(b, (((x, r), (h_prev, h_next)), out))| ForwardRow {
            live: is_active(lengths, b, s.t),
            x,
            r,
            h_prev,
            h_next,
            c_prev: c_prev.as_mut().and_then(|i| i.next()),
            c_next: c_next.as_mut().and_then(|i| i.next()),
            gates: gate_rows.as_mut().and_then(|i| i.next()),
            out: &mut out[s.out_col..s.out_col + h],
            variant: s.variant,
            peep,
        })
        .collect();
    for_each_row(&mut rows, bh, |row| row.run(cell));
    Ok(())
}

/// One batch row of a forward step.
struct ForwardRow<'a, T> {
    live: bool,
    x: &'a [T],
    r: &'a [T],
    h_prev: &'a [T],
    h_next: &'a mut [T],
    c_prev: Option<&'a [T]>,
    c_next: Option<&'a mut [T]>,
    gates: Option<&'a mut [T]>,
    out: &'a mut [T],
    variant: Variant,
    peep: Option<&'a [T]>,
}

impl<T: Real> ForwardRow<'_, T> {
    /// The row's update, 8 lanes wide where the CPU has AVX2 (the row loops
    /// vectorize; the baseline x86-64 build only has 4-lane SSE2).
    fn run(&mut self, cell: Cell) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { self.run_avx2(cell) };
            return;
        }
        self.run_base(cell);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&mut self, cell: Cell) {
        self.run_base(cell);
    }

    #[inline(always)]
    fn run_base(&mut self, cell: Cell) {
        if !self.live {
            // Past the row's length: carry the state, output zeros.
            self.h_next.copy_from_slice(self.h_prev);
            self.out.fill(T::zero());
            if let (Some(p), Some(n)) = (self.c_prev, self.c_next.as_deref_mut()) {
                n.copy_from_slice(p);
            }
            if let Some(g) = self.gates.as_deref_mut() {
                g.fill(T::zero());
            }
            return;
        }
        if !self.variant.is_default() {
            self.run_variant(cell);
            return;
        }
        match (
            cell,
            self.c_prev,
            self.c_next.as_deref_mut(),
            self.gates.as_deref_mut(),
        ) {
            (Cell::Lstm, Some(cp), Some(cn), Some(g)) => {
                lstm_forward_row::<T, true>(self.x, self.r, cp, cn, self.h_next, g, self.out)
            }
            (Cell::Lstm, Some(cp), Some(cn), None) => {
                lstm_forward_row::<T, false>(self.x, self.r, cp, cn, self.h_next, &mut [], self.out)
            }
            (Cell::Gru, _, _, Some(g)) => {
                gru_forward_row::<T, true>(self.x, self.r, self.h_prev, self.h_next, g, self.out)
            }
            (Cell::Gru, _, _, None) => gru_forward_row::<T, false>(
                self.x,
                self.r,
                self.h_prev,
                self.h_next,
                &mut [],
                self.out,
            ),
            (Cell::Rnn(_), _, _, _) => rnn_forward_row(
                cell.rnn_act().unwrap_or(Act::Tanh),
                self.x,
                self.r,
                self.h_next,
                self.out,
            ),
            // The buffers were checked before the rows were built.
            _ => {}
        }
    }

    /// A variant's update: the equations of [`Variant`] element by element
    /// (the default cells keep their vectorized rows above). With a clip
    /// the clipped pre-activations are saved (the backward recomputes the
    /// activations and knows where the clip stopped the gradient), else the
    /// activations, as the default cells do.
    #[inline(always)]
    fn run_variant(&mut self, cell: Cell) {
        let v = self.variant;
        let clip = v.clip::<T>();
        let h = self.h_next.len();
        let acts = v.activations;
        let one = T::one();
        let mut gates = self.gates.as_deref_mut();
        match cell {
            Cell::Lstm => {
                let (Some(cp), Some(cn)) = (self.c_prev, self.c_next.as_deref_mut()) else {
                    return;
                };
                for j in 0..h {
                    let x = |g: usize| self.x[g * h + j] + self.r[g * h + j];
                    let (mut pi, mut pf, pg, mut po) = (x(0), x(1), x(2), x(3));
                    if let Some(p) = self.peep {
                        pi += p[j] * cp[j];
                        pf += p[h + j] * cp[j];
                    }
                    let (zi, zf, zg) = (
                        clamp_opt(clip, pi),
                        clamp_opt(clip, pf),
                        clamp_opt(clip, pg),
                    );
                    let i = acts.f.apply(zi);
                    let f = if v.coupled { one - i } else { acts.f.apply(zf) };
                    let g = acts.g.apply(zg);
                    let c = f * cp[j] + i * g;
                    if let Some(p) = self.peep {
                        po += p[2 * h + j] * c;
                    }
                    let zo = clamp_opt(clip, po);
                    let o = acts.f.apply(zo);
                    let hv = o * acts.h.apply(c);
                    if let Some(gs) = gates.as_deref_mut() {
                        let keep = if clip.is_some() {
                            [zi, zf, zg, zo]
                        } else {
                            [i, f, g, o]
                        };
                        for (k, val) in keep.into_iter().enumerate() {
                            gs[k * h + j] = val;
                        }
                    }
                    cn[j] = c;
                    self.h_next[j] = hv;
                    self.out[j] = hv;
                }
            }
            Cell::Gru => {
                for j in 0..h {
                    let zr = clamp_opt(clip, self.x[j] + self.r[j]);
                    let zz = clamp_opt(clip, self.x[h + j] + self.r[h + j]);
                    let r = acts.f.apply(zr);
                    let z = acts.f.apply(zz);
                    let hn = self.r[2 * h + j];
                    let zn = clamp_opt(clip, self.x[2 * h + j] + r * hn);
                    let n = acts.g.apply(zn);
                    let hv = (one - z) * n + z * self.h_prev[j];
                    if let Some(gs) = gates.as_deref_mut() {
                        let keep = if clip.is_some() {
                            [zr, zz, zn, hn]
                        } else {
                            [r, z, n, hn]
                        };
                        for (k, val) in keep.into_iter().enumerate() {
                            gs[k * h + j] = val;
                        }
                    }
                    self.h_next[j] = hv;
                    self.out[j] = hv;
                }
            }
            Cell::Rnn(_) => {
                let act = cell.rnn_act().unwrap_or(Act::Tanh);
                for j in 0..h {
                    let z = clamp_opt(clip, self.x[j] + self.r[j]);
                    let hv = act.apply(z);
                    if let Some(gs) = gates.as_deref_mut() {
                        gs[j] = z;
                    }
                    self.h_next[j] = hv;
                    self.out[j] = hv;
                }
            }
        }
    }
}

/// Elements per step above which the rows are split across threads.
const PARALLEL_MIN: usize = 4096;

/// Runs `f` on every row, on several threads when the step is large enough to gain.
fn for_each_row<R: Send>(rows: &mut [R], elements: usize, f: impl Fn(&mut R) + Sync + Send) {
    if elements >= PARALLEL_MIN && rows.len() > 1 {
        rows.par_iter_mut().for_each(f);
    } else {
        rows.iter_mut().for_each(f);
    }
}

/// A read-only row at `read` and a writable row at `write` of one buffer
/// (two different state slots, so they never overlap).
fn rows_mut<T>(v: &mut [T], read: usize, write: usize, len: usize) -> (&[T], &mut [T]) {
    if read < write {
        let (lo, hi) = v.split_at_mut(write);
        (&lo[read..read + len], &mut hi[..len])
    } else {
        let (lo, hi) = v.split_at_mut(read);
        (&hi[..len], &mut lo[write..write + len])
    }
}

/// Four consecutive blocks of `h`.
#[inline(always)]
fn quarters<T>(v: &[T], h: usize) -> (&[T], &[T], &[T], &[T]) {
    let (a, rest) = v.split_at(h);
    let (b, rest) = rest.split_at(h);
    let (c, d) = rest.split_at(h);
    (a, b, c, &d[..h])
}

#[inline(always)]
fn quarters_mut<T>(v: &mut [T], h: usize) -> (&mut [T], &mut [T], &mut [T], &mut [T]) {
    let (a, rest) = v.split_at_mut(h);
    let (b, rest) = rest.split_at_mut(h);
    let (c, d) = rest.split_at_mut(h);
    (a, b, c, &mut d[..h])
}

// The row functions below are the cell equations for one batch row. Every
// slice is cut to exactly H first, so the loops have no bounds checks and,
// with the branch-free f32 sigmoid/tanh, vectorize.

/// Four blocks of `h` of `gates` when `SAVE` (a training forward), else four
/// empty slices that the row loops never touch (an inference forward).
#[inline(always)]
#[allow(clippy::type_complexity)]
fn saved_quarters<T, const SAVE: bool>(
    gates: &mut [T],
    h: usize,
) -> (&mut [T], &mut [T], &mut [T], &mut [T]) {
    if SAVE {
        quarters_mut(gates, h)
    } else {
        (&mut [], &mut [], &mut [], &mut [])
    }
}

/// LSTM: i, f, o = σ(x + r), g = tanh(x + r); c' = f·c + i·g; h' = o·tanh(c').
/// The gates are saved (for the backward) when `SAVE`.
#[inline(always)]
fn lstm_forward_row<T: Real, const SAVE: bool>(
    x: &[T],
    r: &[T],
    c_prev: &[T],
    c_next: &mut [T],
    h_next: &mut [T],
    gates: &mut [T],
    out: &mut [T],
) {
    let h = c_prev.len();
    let (xi, xf, xg, xo) = quarters(x, h);
    let (ri, rf, rg, ro) = quarters(r, h);
    let (gi, gf, gg, go) = saved_quarters::<T, SAVE>(gates, h);
    let (c_next, h_next, out) = (&mut c_next[..h], &mut h_next[..h], &mut out[..h]);
    for j in 0..h {
        let i = (xi[j] + ri[j]).sigmoid_cell();
        let f = (xf[j] + rf[j]).sigmoid_cell();
        let g = (xg[j] + rg[j]).tanh_cell();
        let o = (xo[j] + ro[j]).sigmoid_cell();
        let c = f * c_prev[j] + i * g;
        let hv = o * c.tanh_cell();
        if SAVE {
            gi[j] = i;
            gf[j] = f;
            gg[j] = g;
            go[j] = o;
        }
        c_next[j] = c;
        h_next[j] = hv;
        out[j] = hv;
    }
}

/// GRU: r, z = σ(x + r); n = tanh(x_n + r·(W_hn h + b_hn)); h' = (1 − z)·n + z·h.
/// r, z, n and `W_hn h + b_hn` are saved when `SAVE`.
#[inline(always)]
fn gru_forward_row<T: Real, const SAVE: bool>(
    x: &[T],
    rec: &[T],
    h_prev: &[T],
    h_next: &mut [T],
    gates: &mut [T],
    out: &mut [T],
) {
    let h = h_prev.len();
    let (xr, rest) = x.split_at(h);
    let (xz, xn) = rest.split_at(h);
    let (rr, rest) = rec.split_at(h);
    let (rz, rn) = rest.split_at(h);
    let (xn, rn) = (&xn[..h], &rn[..h]);
    let (gr, gz, gn, ghn) = saved_quarters::<T, SAVE>(gates, h);
    let (h_next, out) = (&mut h_next[..h], &mut out[..h]);
    let one = T::one();
    for j in 0..h {
        let r = (xr[j] + rr[j]).sigmoid_cell();
        let z = (xz[j] + rz[j]).sigmoid_cell();
        let hn = rn[j];
        let n = (xn[j] + r * hn).tanh_cell();
        let hv = (one - z) * n + z * h_prev[j];
        if SAVE {
            gr[j] = r;
            gz[j] = z;
            gn[j] = n;
            ghn[j] = hn;
        }
        h_next[j] = hv;
        out[j] = hv;
    }
}

/// Vanilla RNN: h' = act(x + r), act tanh, relu or sigmoid.
#[inline(always)]
fn rnn_forward_row<T: Real>(act: Act, x: &[T], r: &[T], h_next: &mut [T], out: &mut [T]) {
    let h = h_next.len();
    let (x, r, out) = (&x[..h], &r[..h], &mut out[..h]);
    for j in 0..h {
        let pre = x[j] + r[j];
        let hv = match act {
            Act::Relu => pre.max(T::zero()),
            Act::Tanh => pre.tanh_cell(),
            Act::Sigmoid => pre.sigmoid_cell(),
        };
        h_next[j] = hv;
        out[j] = hv;
    }
}

/// One backward step on the host.
pub fn backward_step_cpu<T: Real>(
    cell: Cell,
    s: &StepSpec,
    bufs: BackwardSlices<'_, T>,
) -> Result<()> {
    backward_one(cell, s, bufs, None)
}

/// [`backward_step_cpu`]; `up`, when given, is the gradient of the step's
/// output `[B, H]`, read instead of `dout`'s rows (a wavefront's layer below
/// the top).
fn backward_one<T: Real>(
    cell: Cell,
    s: &StepSpec,
    bufs: BackwardSlices<'_, T>,
    up: Option<&[T]>,
) -> Result<()> {
    let BackwardSlices {
        weights,
        lengths,
        hs,
        cs,
        gates,
        dout,
        dgh,
        mut dgx,
        carry,
    } = bufs;
    let lens = Lens {
        weights: weights.len(),
        lengths: lengths.map(|l| l.len()),
        hs: hs.len(),
        cs: cs.map(|c| c.len()),
        gates: gates.map(|g| g.len()),
        out: dout.len(),
        dgh: dgh.len(),
        dgx: dgx.as_ref().map(|d| d.len()),
        carry: carry.len(),
        ..Default::default()
    };
    if s.is_fused() {
        let parts = s.checked_parts(cell, true, &lens)?;
        let wave = s.fusion.wave;
        let st = wave.map_or(s.fusion.pair.unwrap_or_default(), |w| w.strides);
        let mut grad = Vec::new();
        for (d, one) in parts {
            // A wavefront's layer below the top: the layer above's
            // input-side gate gradients at this step times its W_ih.
            let up = match wave {
                Some(w) if d + 1 < w.layers => {
                    let (bsz, h) = (one.batch, one.hidden);
                    let gh = cell.gates() * h;
                    let (src, stride) = match dgx.as_deref() {
                        Some(x) => (x, st.dgx),
                        None => (&*dgh, st.dgh),
                    };
                    grad.resize(bsz * h, T::zero());
                    let g = Gemm::nn(bsz, h, gh).offsets(
                        (d + 1) * stride + one.t * bsz * gh,
                        w.wih_off + d * st.params,
                        0,
                    );
                    gemm_cpu(&g, src, weights, None, &mut grad)?;
                    // (Stored, like the layer order's input gradient, at the
                    // step's precision.)
                    s.store.round_slice(&mut grad);
                    Some(&grad[..])
                }
                _ => None,
            };
            let view = BackwardSlices {
                weights,
                lengths,
                hs: tail("hs", hs, d * st.hs)?,
                cs: cs.map(|c| tail("cs", c, d * st.cs)).transpose()?,
                gates: gates.map(|g| tail("gates", g, d * st.gates)).transpose()?,
                dout,
                dgh: tail_mut("dgh", &mut *dgh, d * st.dgh)?,
                dgx: dgx
                    .as_deref_mut()
                    .map(|g| tail_mut("dgx", g, d * st.dgx))
                    .transpose()?,
                carry: tail_mut("carry", &mut *carry, d * st.carry)?,
            };
            backward_one(cell, &one, view, up)?;
        }
        return Ok(());
    }
    let view = BackwardSlices {
        weights,
        lengths,
        hs,
        cs,
        gates,
        dout,
        dgh: &mut *dgh,
        dgx: dgx.as_deref_mut(),
        carry: &mut *carry,
    };
    backward_single(cell, s, view, up, &lens)?;
    let (bsz, h, p) = (s.batch, s.hidden, s.store);
    if p.is_16bit() {
        let dl = s.variant.dgh_width(cell, h);
        p.round_range(dgh, s.t * bsz * dl, bsz * dl);
        if let Some(d) = dgx {
            let gh = cell.gates() * h;
            p.round_range(d, s.t * bsz * gh, bsz * gh);
        }
        p.round_range(carry, 0, carry.len());
    }
    Ok(())
}

/// One single step of [`backward_one`], rounding as [`forward_single`] does.
fn backward_single<T: Real>(
    cell: Cell,
    s: &StepSpec,
    bufs: BackwardSlices<'_, T>,
    up: Option<&[T]>,
    lens: &Lens,
) -> Result<()> {
    let mid = s.store;
    let BackwardSlices {
        weights,
        lengths,
        hs,
        cs,
        gates,
        dout,
        dgh,
        mut dgx,
        carry,
    } = bufs;
    s.validate(cell, true, lens)?;
    let (bsz, h) = (s.batch, s.hidden);
    let gh = cell.gates() * h;
    let bh = bsz * h;
    let (prev, next) = (s.prev() * bh, s.next() * bh);

    // acc[b, j] = Σ_m dG_later[b, m]·W_hh[m, j]
    if s.variant.proj_size > 0 {
        let (Some(cs), Some(gates)) = (cs, gates) else {
            return Err(missing("cs/gates", cell));
        };
        return lstm_proj_backward_cpu(s, lengths, cs, gates, weights, dout, dgh, carry, mid);
    }
    // (The reset-before GRU: over r's and z's rows only; its n part comes
    // through r ⊙ h, below.)
    let reset = cell == Cell::Gru && s.variant.reset_before;
    let mut acc = vec![T::zero(); bh];
    if !s.first {
        let rows = if reset { 2 * h } else { gh };
        let g = Gemm {
            lda: gh,
            ..Gemm::nn(bsz, h, rows).offsets(s.later() * bsz * gh, s.whh_off, 0)
        };
        gemm_cpu(&g, dgh, weights, None, &mut acc)?;
    }
    if reset {
        let gates = gates.ok_or_else(|| missing("gates", cell))?;
        return gru_reset_backward_cpu(s, lengths, hs, gates, weights, dout, dgh, carry, acc, mid);
    }

    // carry is [2 (parity), 2 (h, c), B, H]: read one half, write the other.
    let (lo, hi) = carry.split_at_mut(2 * bh);
    let (carry_in, carry_out): (&[T], &mut [T]) = if s.parity == 0 { (lo, hi) } else { (hi, lo) };
    let (dh_in, dc_in) = carry_in.split_at(bh);
    let (dh_out, dc_out) = carry_out.split_at_mut(bh);
    for b in 0..bsz {
        let live = is_active(lengths, b, s.t);
        let row = (s.t * bsz + b) * gh;
        let sv = s.variant.saved(cell) * h;
        let srow = (s.t * bsz + b) * sv;
        let hr = b * h..(b + 1) * h;
        // dh of this step's output state: from the later step, the carry and
        // the output (accumulated in place in `acc`).
        let dh = &mut acc[hr.clone()];
        for (d, c) in dh.iter_mut().zip(&dh_in[hr.clone()]) {
            *d += *c;
        }
        if live {
            let o = s.out_index(b, 0);
            let grad = match up {
                Some(up) => &up[b * h..(b + 1) * h],
                None => &dout[o..o + h],
            };
            for (d, g) in dh.iter_mut().zip(grad) {
                *d += *g;
            }
        }
        let dh = &*dh;
        let dgh_row = &mut dgh[row..row + gh];
        if !live {
            // Past the row's length: the step is the identity.
            dgh_row.fill(T::zero());
            if let Some(dgx) = dgx.as_deref_mut() {
                dgx[row..row + gh].fill(T::zero());
            }
            dh_out[hr.clone()].copy_from_slice(dh);
            if cell.has_cell_state() {
                dc_out[hr.clone()].copy_from_slice(&dc_in[hr]);
            }
            continue;
        }
        if !s.variant.is_default() {
            fn need<'v, T>(t: Option<&'v [T]>, what: &str, cell: Cell) -> Result<&'v [T]> {
                t.ok_or_else(|| missing(what, cell))
            }
            let row_of = |base: usize| base + b * h..base + (b + 1) * h;
            let bufs = VariantBack {
                dh,
                saved: match sv {
                    0 => &[],
                    _ => &need(gates, "gates", cell)?[srow..srow + sv],
                },
                dgh: dgh_row,
                peep: s
                    .variant
                    .peepholes
                    .then(|| &weights[s.peep_off..s.peep_off + 3 * h]),
            };
            match cell {
                Cell::Lstm => {
                    let cs = need(cs, "cs", cell)?;
                    bufs.lstm(
                        &s.variant,
                        &dc_in[hr.clone()],
                        &cs[row_of(prev)],
                        &cs[row_of(next)],
                        &mut dc_out[hr.clone()],
                    );
                    dh_out[hr].fill(T::zero());
                }
                Cell::Gru => {
                    let dgx = dgx.as_deref_mut().ok_or_else(|| missing("dgx", cell))?;
                    bufs.gru(
                        &s.variant,
                        &hs[row_of(prev)],
                        &mut dgx[row..row + gh],
                        &mut dh_out[hr],
                    );
                }
                Cell::Rnn(_) => {
                    bufs.rnn(&s.variant, cell, &hs[row_of(next)]);
                    dh_out[hr].fill(T::zero());
                }
            }
            continue;
        }
        match cell {
            Cell::Lstm => {
                let (Some(cs), Some(gates)) = (cs, gates) else {
                    return Err(missing("cs/gates", cell));
                };
                lstm_backward_row(
                    dh,
                    &dc_in[hr.clone()],
                    &gates[srow..srow + 4 * h],
                    &cs[prev + b * h..prev + (b + 1) * h],
                    &cs[next + b * h..next + (b + 1) * h],
                    dgh_row,
                    &mut dc_out[hr.clone()],
                );
                dh_out[hr].fill(T::zero());
            }
            Cell::Gru => {
                let (Some(gates), Some(dgx)) = (gates, dgx.as_deref_mut()) else {
                    return Err(missing("gates/dgx", cell));
                };
                gru_backward_row(
                    dh,
                    &gates[srow..srow + 4 * h],
                    &hs[prev + b * h..prev + (b + 1) * h],
                    &mut dgx[row..row + gh],
                    dgh_row,
                    &mut dh_out[hr],
                );
            }
            Cell::Rnn(_) => {
                let h_next = &hs[next + b * h..next + (b + 1) * h];
                let act = cell.rnn_act().unwrap_or(Act::Tanh);
                for ((d, &g), &hv) in dgh_row.iter_mut().zip(dh).zip(h_next) {
                    *d = act.back(hv, g);
                }
                dh_out[hr].fill(T::zero());
            }
        }
    }
    Ok(())
}

/// A projected LSTM's forward step on the host: the recurrent product of
/// the P-wide h, the cell's update on its H units (the variant rows, with
/// `m = o ⊙ h(c)` where an unprojected cell writes h; m saved in the gates'
/// fifth block), then `h = m·W_hrᵀ` for the live rows.
#[allow(clippy::too_many_arguments)]
fn lstm_proj_forward_cpu<T: Real>(
    s: &StepSpec,
    xg: &[T],
    weights: &[T],
    lengths: Option<&[i32]>,
    hs: &mut [T],
    cs: &mut [T],
    gates: &mut [T],
    out: &mut [T],
    mid: Precision,
) -> Result<()> {
    let (bsz, h, hp) = (s.batch, s.hidden, s.state_size());
    let (gh, sv) = (4 * h, 5 * h);
    let (bp, bh) = (bsz * hp, bsz * h);
    let mut rec = vec![T::zero(); bsz * gh];
    let g = Gemm::nt(bsz, gh, hp)
        .offsets(s.prev() * bp, s.whh_off, 0)
        .with_bias(s.bhh_off);
    gemm_cpu(&g, hs, weights, Some(weights), &mut rec)?;
    let peep = s
        .variant
        .peepholes
        .then(|| &weights[s.peep_off..s.peep_off + 3 * h]);
    let mut m = vec![T::zero(); bh];
    let mut spare = vec![T::zero(); h];
    for b in 0..bsz {
        let t0 = s.t * bsz + b;
        let srow = t0 * sv;
        let (cp, cn) = rows_mut(cs, s.prev() * bh + b * h, s.next() * bh + b * h, h);
        if !is_active(lengths, b, s.t) {
            cn.copy_from_slice(cp);
            gates[srow..srow + sv].fill(T::zero());
            continue;
        }
        let mut row = ForwardRow {
            live: true,
            x: &xg[t0 * gh..(t0 + 1) * gh],
            r: &rec[b * gh..(b + 1) * gh],
            h_prev: &[],
            h_next: &mut m[b * h..(b + 1) * h],
            c_prev: Some(cp),
            c_next: Some(cn),
            gates: Some(&mut gates[srow..srow + 4 * h]),
            out: &mut spare,
            variant: s.variant,
            peep,
        };
        row.run_variant(Cell::Lstm);
        // m as the second dispatch reads it back from the gates.
        mid.round_slice(&mut m[b * h..(b + 1) * h]);
        gates[srow + 4 * h..srow + sv].copy_from_slice(&m[b * h..(b + 1) * h]);
    }
    let mut proj = vec![T::zero(); bp];
    let g = Gemm::nt(bsz, hp, h).offsets(0, s.hr_off, 0);
    gemm_cpu(&g, &m, weights, None, &mut proj)?;
    let (prev, next) = (s.prev() * bp, s.next() * bp);
    for b in 0..bsz {
        let o = s.out_index(b, 0);
        let (row, dst) = (b * hp..(b + 1) * hp, next + b * hp);
        if is_active(lengths, b, s.t) {
            out[o..o + hp].copy_from_slice(&proj[row.clone()]);
            hs[dst..dst + hp].copy_from_slice(&proj[row]);
        } else {
            // Past the row's end h is carried.
            out[o..o + hp].fill(T::zero());
            hs.copy_within(prev + row.start..prev + row.end, dst);
        }
    }
    Ok(())
}

/// A projected LSTM's backward step on the host: `dh = dG_later·W_hh +
/// carry + dout` (P wide, kept in dgh's last P columns), `dm = dh·W_hr`, then
/// the cell's gradients from dm (the variant rows).
#[allow(clippy::too_many_arguments)]
fn lstm_proj_backward_cpu<T: Real>(
    s: &StepSpec,
    lengths: Option<&[i32]>,
    cs: &[T],
    gates: &[T],
    weights: &[T],
    dout: &[T],
    dgh: &mut [T],
    carry: &mut [T],
    mid: Precision,
) -> Result<()> {
    let (bsz, h, hp) = (s.batch, s.hidden, s.state_size());
    let (gh, sv, dl) = (4 * h, 5 * h, 4 * h + hp);
    let bh = bsz * h;
    let mut dh = vec![T::zero(); bsz * hp];
    if !s.first {
        let g = Gemm {
            lda: dl,
            ..Gemm::nn(bsz, hp, gh).offsets(s.later() * bsz * dl, s.whh_off, 0)
        };
        gemm_cpu(&g, dgh, weights, None, &mut dh)?;
    }
    // carry is [2, 2, B, H]; its h blocks hold [B, P].
    let (lo, hi) = carry.split_at_mut(2 * bh);
    let (carry_in, carry_out): (&[T], &mut [T]) = if s.parity == 0 { (lo, hi) } else { (hi, lo) };
    let (dh_in, dc_in) = carry_in.split_at(bh);
    let (dh_out, dc_out) = carry_out.split_at_mut(bh);
    for b in 0..bsz {
        let o = s.out_index(b, 0);
        let live = is_active(lengths, b, s.t);
        let row = (s.t * bsz + b) * dl;
        for j in 0..hp {
            let mut d = dh[b * hp + j] + dh_in[b * hp + j];
            if live {
                d += dout[o + j];
            }
            // (As the first dispatch stores it and the second reads it.)
            let d = mid.round(d);
            dh[b * hp + j] = d;
            dgh[row + gh + j] = d;
        }
    }
    let mut dm = vec![T::zero(); bh];
    let g = Gemm::nn(bsz, h, hp).offsets(0, s.hr_off, 0);
    gemm_cpu(&g, &dh, weights, None, &mut dm)?;
    let peep = s
        .variant
        .peepholes
        .then(|| &weights[s.peep_off..s.peep_off + 3 * h]);
    let (prev, next) = (s.prev() * bh, s.next() * bh);
    for b in 0..bsz {
        let row = (s.t * bsz + b) * dl;
        let srow = (s.t * bsz + b) * sv;
        let hr = b * h..(b + 1) * h;
        if !is_active(lengths, b, s.t) {
            dgh[row..row + gh].fill(T::zero());
            dh_out[b * hp..(b + 1) * hp].copy_from_slice(&dh[b * hp..(b + 1) * hp]);
            dc_out[hr.clone()].copy_from_slice(&dc_in[hr]);
            continue;
        }
        let back = VariantBack {
            dh: &dm[hr.clone()],
            saved: &gates[srow..srow + 4 * h],
            dgh: &mut dgh[row..row + gh],
            peep,
        };
        back.lstm(
            &s.variant,
            &dc_in[hr.clone()],
            &cs[prev + b * h..prev + (b + 1) * h],
            &cs[next + b * h..next + (b + 1) * h],
            &mut dc_out[hr],
        );
        dh_out[b * hp..(b + 1) * hp].fill(T::zero());
    }
    Ok(())
}

/// A reset-before GRU's forward step on the host, after the product of
/// every gate with h (`rec`, of which the n block is not used): r, z and
/// `q = r ⊙ h` (saved in the gates' fourth block), then `q·W_hnᵀ + b_hn`,
/// the candidate and the update.
#[allow(clippy::too_many_arguments)]
fn gru_reset_forward_cpu<T: Real>(
    s: &StepSpec,
    xg: &[T],
    weights: &[T],
    lengths: Option<&[i32]>,
    hs: &mut [T],
    gates: &mut [T],
    out: &mut [T],
    rec: &[T],
    mid: Precision,
) -> Result<()> {
    let (bsz, h) = (s.batch, s.hidden);
    let (gh, bh) = (3 * h, bsz * h);
    let (prev, next) = (s.prev() * bh, s.next() * bh);
    let (clip, a) = (s.variant.clip::<T>(), s.variant.activations);
    let keep = |act: T, z: T| if clip.is_some() { z } else { act };
    let h_prev = hs[prev..prev + bh].to_vec();
    let mut q = vec![T::zero(); bh];
    for b in 0..bsz {
        let (row, srow) = ((s.t * bsz + b) * gh, (s.t * bsz + b) * 4 * h);
        let g = &mut gates[srow..srow + 4 * h];
        if !is_active(lengths, b, s.t) {
            g.fill(T::zero());
            continue;
        }
        for j in 0..h {
            let zr = clamp_opt(clip, xg[row + j] + rec[b * gh + j]);
            let zz = clamp_opt(clip, xg[row + h + j] + rec[b * gh + h + j]);
            let r = a.f.apply(zr);
            g[j] = keep(r, zr);
            g[h + j] = keep(a.f.apply(zz), zz);
            q[b * h + j] = r * h_prev[b * h + j];
            g[3 * h + j] = q[b * h + j];
        }
        // As the first dispatch stores them and the second reads them.
        mid.round_slice(g);
        mid.round_slice(&mut q[b * h..(b + 1) * h]);
    }
    let mut rn = vec![T::zero(); bh];
    let mm = Gemm::nt(bsz, h, h)
        .offsets(0, s.whh_off + 2 * h * h, 0)
        .with_bias(s.bhh_off + 2 * h);
    gemm_cpu(&mm, &q, weights, Some(weights), &mut rn)?;
    for b in 0..bsz {
        let (row, srow) = ((s.t * bsz + b) * gh, (s.t * bsz + b) * 4 * h);
        let o = s.out_index(b, 0);
        let hp = &h_prev[b * h..(b + 1) * h];
        if !is_active(lengths, b, s.t) {
            hs[next + b * h..next + (b + 1) * h].copy_from_slice(hp);
            out[o..o + h].fill(T::zero());
            continue;
        }
        for j in 0..h {
            let sz = gates[srow + h + j];
            let z = if clip.is_some() { a.f.apply(sz) } else { sz };
            let zn = clamp_opt(clip, xg[row + 2 * h + j] + rn[b * h + j]);
            let n = a.g.apply(zn);
            let hv = (T::one() - z) * n + z * hp[j];
            gates[srow + 2 * h + j] = keep(n, zn);
            hs[next + b * h + j] = hv;
            out[o + j] = hv;
        }
    }
    Ok(())
}

/// A reset-before GRU's backward step on the host, after the product of the
/// later step's r and z gradients with their rows of W_hh (`acc`): dz, dn,
/// then `dq = dn·W_hn`, dr, and the carry `dh'·z + dq ⊙ r`.
#[allow(clippy::too_many_arguments)]
fn gru_reset_backward_cpu<T: Real>(
    s: &StepSpec,
    lengths: Option<&[i32]>,
    hs: &[T],
    gates: &[T],
    weights: &[T],
    dout: &[T],
    dgh: &mut [T],
    carry: &mut [T],
    mut acc: Vec<T>,
    mid: Precision,
) -> Result<()> {
    let (bsz, h) = (s.batch, s.hidden);
    let (gh, bh) = (3 * h, bsz * h);
    let prev = s.prev() * bh;
    let (clip, a) = (s.variant.clip::<T>(), s.variant.activations);
    let gate = |v: T, act: Act| if clip.is_some() { act.apply(v) } else { v };
    let (lo, hi) = carry.split_at_mut(2 * bh);
    let (carry_in, carry_out): (&[T], &mut [T]) = if s.parity == 0 { (lo, hi) } else { (hi, lo) };
    let dh_out = &mut carry_out[..bh];
    for b in 0..bsz {
        let (row, srow) = ((s.t * bsz + b) * gh, (s.t * bsz + b) * 4 * h);
        let live = is_active(lengths, b, s.t);
        let o = s.out_index(b, 0);
        for j in 0..h {
            let mut dh = acc[b * h + j] + carry_in[b * h + j];
            if live {
                dh += dout[o + j];
            }
            acc[b * h + j] = dh;
        }
        if !live {
            dgh[row..row + gh].fill(T::zero());
            dh_out[b * h..(b + 1) * h].copy_from_slice(&acc[b * h..(b + 1) * h]);
            continue;
        }
        for j in 0..h {
            let dh = acc[b * h + j];
            let (sz, sn) = (gates[srow + h + j], gates[srow + 2 * h + j]);
            let (z, n) = (gate(sz, a.f), gate(sn, a.g));
            let dn = clip_pass(clip, sn, a.g.back(n, dh * (T::one() - z)));
            dgh[row + h + j] = clip_pass(clip, sz, a.f.back(z, dh * (hs[prev + b * h + j] - n)));
            dgh[row + 2 * h + j] = dn;
            dh_out[b * h + j] = dh * z;
        }
    }
    // As the first dispatch stores them and the second reads them.
    mid.round_range(dgh, s.t * bsz * gh, bsz * gh);
    mid.round_slice(dh_out);
    // dq = dn · W_hn, for every row (a past-the-end row's dn is zero).
    let mut dq = vec![T::zero(); bh];
    let mm = Gemm {
        lda: gh,
        ..Gemm::nn(bsz, h, h).offsets(s.t * bsz * gh + 2 * h, s.whh_off + 2 * h * h, 0)
    };
    gemm_cpu(&mm, dgh, weights, None, &mut dq)?;
    for b in 0..bsz {
        let (row, srow) = ((s.t * bsz + b) * gh, (s.t * bsz + b) * 4 * h);
        if !is_active(lengths, b, s.t) {
            continue;
        }
        for j in 0..h {
            let sr = gates[srow + j];
            let r = gate(sr, a.f);
            let d = dq[b * h + j];
            dgh[row + j] = clip_pass(clip, sr, a.f.back(r, d * hs[prev + b * h + j]));
            dh_out[b * h + j] += d * r;
        }
    }
    Ok(())
}

/// One live row of a variant's backward step: dh of the row, what its
/// forward saved, its gate gradients (written) and the peephole weights.
struct VariantBack<'a, T> {
    dh: &'a [T],
    saved: &'a [T],
    dgh: &'a mut [T],
    peep: Option<&'a [T]>,
}

impl<T: Real> VariantBack<'_, T> {
    /// A saved gate value: with a clip the clipped pre-activation `z`
    /// (returned with `act(z)`), else the activation itself.
    #[inline(always)]
    fn gate(&self, v: &Variant, act: Act, k: usize, j: usize) -> (T, T) {
        let z = self.saved[k * self.dh.len() + j];
        if v.cell_clip.is_some() {
            (act.apply(z), z)
        } else {
            (z, T::zero())
        }
    }

    fn lstm(self, v: &Variant, dc_in: &[T], c_prev: &[T], c_next: &[T], dc_out: &mut [T]) {
        let h = self.dh.len();
        let clip = v.clip::<T>();
        let a = v.activations;
        let one = T::one();
        for j in 0..h {
            let (i, zi) = self.gate(v, a.f, 0, j);
            let (f, zf) = if v.coupled {
                (one - i, T::zero())
            } else {
                self.gate(v, a.f, 1, j)
            };
            let (g, zg) = self.gate(v, a.g, 2, j);
            let (o, zo) = self.gate(v, a.f, 3, j);
            let hc = a.h.apply(c_next[j]);
            let dh = self.dh[j];
            let d_o = clip_pass(clip, zo, a.f.back(o, dh * hc));
            let mut dc = dc_in[j] + a.h.back(hc, dh * o);
            if let Some(p) = self.peep {
                dc += d_o * p[2 * h + j];
            }
            let di_up = if v.coupled {
                dc * (g - c_prev[j])
            } else {
                dc * g
            };
            let di = clip_pass(clip, zi, a.f.back(i, di_up));
            let df = if v.coupled {
                T::zero()
            } else {
                clip_pass(clip, zf, a.f.back(f, dc * c_prev[j]))
            };
            let dg = clip_pass(clip, zg, a.g.back(g, dc * i));
            let mut dcp = dc * f;
            if let Some(p) = self.peep {
                dcp += di * p[j] + df * p[h + j];
            }
            self.dgh[j] = di;
            self.dgh[h + j] = df;
            self.dgh[2 * h + j] = dg;
            self.dgh[3 * h + j] = d_o;
            dc_out[j] = dcp;
        }
    }

    fn gru(self, v: &Variant, h_prev: &[T], dgx: &mut [T], dh_out: &mut [T]) {
        let h = self.dh.len();
        let clip = v.clip::<T>();
        let a = v.activations;
        let one = T::one();
        for j in 0..h {
            let (r, zr) = self.gate(v, a.f, 0, j);
            let (z, zz) = self.gate(v, a.f, 1, j);
            let (n, zn) = self.gate(v, a.g, 2, j);
            let hn = self.saved[3 * h + j];
            let dh = self.dh[j];
            let dn = clip_pass(clip, zn, a.g.back(n, dh * (one - z)));
            let dr = clip_pass(clip, zr, a.f.back(r, dn * hn));
            let dz = clip_pass(clip, zz, a.f.back(z, dh * (h_prev[j] - n)));
            dgx[j] = dr;
            dgx[h + j] = dz;
            dgx[2 * h + j] = dn;
            self.dgh[j] = dr;
            self.dgh[h + j] = dz;
            self.dgh[2 * h + j] = dn * r;
            dh_out[j] = dh * z;
        }
    }

    fn rnn(self, v: &Variant, cell: Cell, h_next: &[T]) {
        let clip = v.clip::<T>();
        let act = cell.rnn_act().unwrap_or(Act::Tanh);
        for (j, d) in self.dgh.iter_mut().enumerate() {
            *d = match clip {
                Some(_) => {
                    let z = self.saved[j];
                    clip_pass(clip, z, act.back(act.apply(z), self.dh[j]))
                }
                None => act.back(h_next[j], self.dh[j]),
            };
        }
    }
}

/// LSTM gate gradients of one row from dh, the incoming dc, the saved gates
/// and c; writes dG = [di, df, dg, do] (pre-activation) and dc for the previous step.
fn lstm_backward_row<T: Real>(
    dh: &[T],
    dc_in: &[T],
    gates: &[T],
    c_prev: &[T],
    c_next: &[T],
    dg: &mut [T],
    dc_out: &mut [T],
) {
    let h = dh.len();
    let (gi, gf, gg, go) = quarters(gates, h);
    let (di, df, dgg, dout) = quarters_mut(dg, h);
    let (dc_in, c_prev, c_next, dc_out) =
        (&dc_in[..h], &c_prev[..h], &c_next[..h], &mut dc_out[..h]);
    let one = T::one();
    for j in 0..h {
        let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
        let tc = c_next[j].tanh_cell();
        let dc = dc_in[j] + dh[j] * o * (one - tc * tc);
        di[j] = dc * g * i * (one - i);
        df[j] = dc * c_prev[j] * f * (one - f);
        dgg[j] = dc * i * (one - g * g);
        dout[j] = dh[j] * tc * o * (one - o);
        dc_out[j] = dc * f;
    }
}

/// GRU gate gradients of one row: dGx (input side), dGh (recurrent side,
/// the n block scaled by r) and the gradient flowing straight into h_prev.
fn gru_backward_row<T: Real>(
    dh: &[T],
    gates: &[T],
    h_prev: &[T],
    dgx: &mut [T],
    dgh: &mut [T],
    dh_out: &mut [T],
) {
    let h = dh.len();
    let (gr, gz, gn, ghn) = quarters(gates, h);
    let (xr, rest) = dgx.split_at_mut(h);
    let (xz, xn) = rest.split_at_mut(h);
    let (hr, rest) = dgh.split_at_mut(h);
    let (hz, hn_) = rest.split_at_mut(h);
    let (xn, hn_, h_prev, dh_out) = (&mut xn[..h], &mut hn_[..h], &h_prev[..h], &mut dh_out[..h]);
    let one = T::one();
    for j in 0..h {
        let (r, z, n, hn) = (gr[j], gz[j], gn[j], ghn[j]);
        let dn = dh[j] * (one - z) * (one - n * n);
        let dr = dn * hn * r * (one - r);
        let dz = dh[j] * (h_prev[j] - n) * z * (one - z);
        xr[j] = dr;
        xz[j] = dz;
        xn[j] = dn;
        hr[j] = dr;
        hz[j] = dz;
        hn_[j] = dn * r;
        dh_out[j] = dh[j] * z;
    }
}

kernel_params! {
    struct Params {
        // The WGSL block spells the dimensions as letters.
        b as "B": u32,
        h as "H": u32,
        steps as "T": u32,
        t: u32,
        reverse: u32,
        first: u32,
        parity: u32,
        has_lengths: u32,
        whh_off: u32,
        bhh_off: u32,
        out_col: u32,
        out_ld: u32,
        save: u32,
        ring: u32,
        act_f: u32,
        act_g: u32,
        act_h: u32,
        peepholes: u32,
        coupled: u32,
        peep_off: u32,
        clip: f32,
        reset_before: u32,
        dg_ld: u32,
        dg_rows: u32,
        pk: u32,
        vec_ld: u32,
        hp: u32,
        cell_h: u32,
        gates_ld: u32,
        proj: u32,
        dirs: u32,
        d_param: u32,
        d_xg: u32,
        d_hs: u32,
        d_cs: u32,
        d_gates: u32,
        d_dgh: u32,
        d_dgx: u32,
        d_carry: u32,
        k_steps: u32,
        t_down: u32,
        resident: u32,
        wave: u32,
        l0: u32,
        top: u32,
        wih_off: u32,
        bih_off: u32,
        d_out: u32,
    }
}

impl Params {
    fn of(cell: Cell, s: &StepSpec, has_lengths: bool, save: bool) -> Result<Self> {
        // Every index the kernels form must fit in u32.
        let gh = cell.gates().max(s.variant.saved(cell)) * s.hidden;
        let biggest = (s.steps + 1)
            .checked_mul(s.batch)
            .and_then(|v| v.checked_mul(gh.max(s.out_ld)))
            .ok_or_else(|| Error::invalid("cell step", "sizes overflow"))?;
        u32_of("T·B·G·H", biggest)?;
        let v = s.variant;
        Ok(Params {
            b: u32_of("B", s.batch)?,
            h: u32_of("H", s.hidden)?,
            steps: u32_of("T", s.steps)?,
            t: u32_of("t", s.t)?,
            reverse: s.reverse as u32,
            first: s.first as u32,
            parity: s.parity as u32,
            has_lengths: has_lengths as u32,
            whh_off: u32_of("whh_off", s.whh_off)?,
            bhh_off: u32_of("bhh_off", s.bhh_off)?,
            out_col: u32_of("out_col", s.out_col)?,
            out_ld: u32_of("out_ld", s.out_ld)?,
            save: save as u32,
            ring: s.ring as u32,
            act_f: cell.rnn_act().unwrap_or(v.activations.f).code(),
            act_g: v.activations.g.code(),
            act_h: v.activations.h.code(),
            peepholes: v.peepholes as u32,
            coupled: v.coupled as u32,
            peep_off: u32_of("peep_off", s.peep_off)?,
            // 0 means no clip (a clip is positive).
            clip: v.cell_clip.unwrap_or(0.0),
            reset_before: v.reset_before as u32,
            // The backward product's gate gradients: all G·H of a row; the
            // reset-before GRU's first dispatch only r and z's.
            dg_ld: u32_of("G·H", v.dgh_width(cell, s.hidden))?,
            dg_rows: u32_of(
                "G·H",
                if v.reset_before { 2 } else { cell.gates() } * s.hidden,
            )?,
            // The forward product reads h (P wide with a projection).
            pk: u32_of("P", s.state_size())?,
            vec_ld: u32_of("P", s.state_size())?,
            hp: u32_of("P", s.state_size())?,
            cell_h: u32_of("H", s.hidden)?,
            gates_ld: u32_of("gates", v.saved(cell).max(1) * s.hidden)?,
            proj: (v.proj_size > 0) as u32,
            dirs: 1,
            d_param: 0,
            d_xg: 0,
            d_hs: 0,
            d_cs: 0,
            d_gates: 0,
            d_dgh: 0,
            d_dgx: 0,
            d_carry: 0,
            k_steps: 1,
            t_down: 0,
            resident: 0,
            wave: 0,
            l0: 0,
            top: 0,
            wih_off: 0,
            bih_off: 0,
            d_out: 0,
        })
    }

    /// The fields of a fused step `s` (see [`Fusion`]): its directions,
    /// their strides, the steps it advances and which way time goes.
    fn fused(self, s: &StepSpec, backward: bool) -> Result<Self> {
        let f = s.fusion;
        if let Some(w) = f.wave {
            return self.wave(s, &w, backward);
        }
        let st = f.pair.unwrap_or_default();
        let dirs = 1 + f.pair.is_some() as u32;
        // Direction 1's indices reach one stride further.
        for (arg, stride) in [
            ("xg", st.xg),
            ("hs", st.hs),
            ("cs", st.cs),
            ("gates", st.gates),
            ("dgh", st.dgh),
            ("dgx", st.dgx),
            ("carry", st.carry),
        ] {
            u32_of(arg, stride.saturating_mul(2))?;
        }
        Ok(Params {
            dirs,
            d_param: u32_of("direction stride", st.params)?,
            d_xg: u32_of("xg", st.xg)?,
            d_hs: u32_of("hs", st.hs)?,
            d_cs: u32_of("cs", st.cs)?,
            d_gates: u32_of("gates", st.gates)?,
            d_dgh: u32_of("dgh", st.dgh)?,
            d_dgx: u32_of("dgx", st.dgx)?,
            d_carry: u32_of("carry", st.carry)?,
            k_steps: u32_of("steps", f.more_steps + 1)?,
            t_down: (backward != s.reverse) as u32,
            ..self
        })
    }
}

impl Params {
    /// The fields of a wavefront's step (see [`Wave`]): offsets of layer 0
    /// and layer 1's W_ih, the layers' strides, the dispatch's lowest layer
    /// and the top one.
    fn wave(self, s: &StepSpec, w: &Wave, backward: bool) -> Result<Self> {
        let st = w.strides;
        // Every index of the top layer's part fits u32.
        for (arg, stride) in [
            ("hs", st.hs),
            ("cs", st.cs),
            ("gates", st.gates),
            ("dgh", st.dgh),
            ("dgx", st.dgx),
            ("carry", st.carry),
            ("out", st.out),
            ("weights", st.params),
        ] {
            u32_of(arg, stride.saturating_mul(w.layers))?;
        }
        if backward && st.dgx != 0 && st.dgx != st.dgh {
            return Err(Error::invalid(
                "cell step wavefront",
                format!(
                    "dgx's layer stride {} must equal dgh's {} (the kernel finds both at one offset)",
                    st.dgx, st.dgh
                ),
            ));
        }
        let back = w.layer * st.params;
        let layer0 = |arg: &str, off: usize| {
            off.checked_sub(back)
                .ok_or_else(|| {
                    Error::invalid(
                        format!("cell step {arg}"),
                        format!(
                            "offset {off} is less than layer {}'s stride {} times {}",
                            w.layer, st.params, w.layer
                        ),
                    )
                })
                .and_then(|o| u32_of(arg, o))
        };
        Ok(Params {
            wave: 1 + backward as u32,
            dirs: u32_of("layers", w.lanes)?,
            l0: u32_of("layer", w.layer)?,
            top: u32_of("layers", w.layers.saturating_sub(1))?,
            whh_off: layer0("whh_off", s.whh_off)?,
            bhh_off: layer0("bhh_off", s.bhh_off)?,
            // Without peepholes the offset is unused (and 0 for every layer).
            peep_off: if s.variant.peepholes {
                layer0("peep_off", s.peep_off)?
            } else {
                0
            },
            wih_off: u32_of("wih_off", w.wih_off)?,
            bih_off: u32_of("bih_off", w.bih_off)?,
            d_param: u32_of("layer stride", st.params)?,
            d_xg: 0,
            d_hs: u32_of("hs", st.hs)?,
            d_cs: u32_of("cs", st.cs)?,
            d_gates: u32_of("gates", st.gates)?,
            d_dgh: u32_of("dgh", st.dgh)?,
            d_dgx: u32_of("dgx", st.dgx)?,
            d_carry: u32_of("carry", st.carry)?,
            // The backward's dout is the top layer's alone.
            d_out: if backward { 0 } else { u32_of("out", st.out)? },
            t: u32_of("t", s.t)?,
            k_steps: 1,
            t_down: 0,
            ..self
        })
    }
}

// Binding numbers of `shaders/cell_common.wgsl` (shared by the three cell
// shaders), named after its variables. Each kernel binds the subset it uses.
binding_names! {
    XG = 1,
    WEIGHTS = 2,
    LENGTHS = 3,
    HS = 4,
    CS = 5,
    GATES = 6,
    OUT = 7,
    DOUT = 8,
    DGH = 9,
    DGX = 10,
    CARRY = 11,
    HS_SAVED = 12,
    CS_SAVED = 13,
    GATES_SAVED = 14,
}

const R: Access = Access::Read;
const W: Access = Access::ReadWrite;

/// The override constants of every step kernel: the recurrent-product
/// variant (see [`crate::gpu::StepKernel`]) and where the forward product's
/// vector comes from.
const STEP_CONSTANTS: &[&str] = &[
    "SPLIT",
    "FROM_GATES",
    "STORE",
    "W_LAYOUT",
    "G_LAYOUT",
    "XG_LAYOUT",
    "DG_LAYOUT",
    "S_LAYOUT",
    "O_LAYOUT",
    "D_LAYOUT",
];

const LSTM_FORWARD: KernelDef<Params> = KernelDef::new(
    Shader::Lstm,
    "lstm_forward",
    &[
        (binding::XG, R),
        (binding::WEIGHTS, R),
        (binding::LENGTHS, R),
        (binding::HS, W),
        (binding::CS, W),
        (binding::GATES, W),
        (binding::OUT, W),
    ],
    STEP_CONSTANTS,
);

const GRU_FORWARD: KernelDef<Params> = KernelDef::new(
    Shader::Gru,
    "gru_forward",
    &[
        (binding::XG, R),
        (binding::WEIGHTS, R),
        (binding::LENGTHS, R),
        (binding::HS, W),
        (binding::GATES, W),
        (binding::OUT, W),
    ],
    STEP_CONSTANTS,
);

const RNN_FORWARD: KernelDef<Params> = KernelDef::new(
    Shader::Rnn,
    "rnn_forward",
    &[
        (binding::XG, R),
        (binding::WEIGHTS, R),
        (binding::LENGTHS, R),
        (binding::HS, W),
        (binding::GATES, W),
        (binding::OUT, W),
    ],
    STEP_CONSTANTS,
);

const LSTM_BACKWARD: KernelDef<Params> = KernelDef::new(
    Shader::Lstm,
    "lstm_backward",
    &[
        (binding::WEIGHTS, R),
        (binding::LENGTHS, R),
        (binding::DOUT, R),
        (binding::DGH, W),
        (binding::CARRY, W),
        (binding::CS_SAVED, R),
        (binding::GATES_SAVED, R),
    ],
    STEP_CONSTANTS,
);

const GRU_BACKWARD: KernelDef<Params> = KernelDef::new(
    Shader::Gru,
    "gru_backward",
    &[
        (binding::WEIGHTS, R),
        (binding::LENGTHS, R),
        (binding::DOUT, R),
        (binding::DGH, W),
        (binding::DGX, W),
        (binding::CARRY, W),
        (binding::HS_SAVED, R),
        (binding::GATES_SAVED, R),
    ],
    STEP_CONSTANTS,
);

const RNN_BACKWARD: KernelDef<Params> = KernelDef::new(
    Shader::Rnn,
    "rnn_backward",
    &[
        (binding::WEIGHTS, R),
        (binding::LENGTHS, R),
        (binding::DOUT, R),
        (binding::DGH, W),
        (binding::CARRY, W),
        (binding::HS_SAVED, R),
        (binding::GATES_SAVED, R),
    ],
    STEP_CONSTANTS,
);

const GRU_RESET_FORWARD: KernelDef<Params> = KernelDef::new(
    Shader::GruReset,
    "gru_reset_forward",
    &[
        (binding::XG, R),
        (binding::WEIGHTS, R),
        (binding::LENGTHS, R),
        (binding::HS, W),
        (binding::GATES, W),
        (binding::OUT, W),
    ],
    STEP_CONSTANTS,
);

const GRU_RESET_BACKWARD: KernelDef<Params> = KernelDef::new(
    Shader::GruReset,
    "gru_reset_backward",
    &[
        (binding::WEIGHTS, R),
        (binding::LENGTHS, R),
        (binding::DGH, W),
        (binding::CARRY, W),
        (binding::HS_SAVED, R),
        (binding::GATES_SAVED, R),
    ],
    STEP_CONSTANTS,
);

const LSTM_PROJECT: KernelDef<Params> = KernelDef::new(
    Shader::LstmProj,
    "lstm_project",
    &[
        (binding::WEIGHTS, R),
        (binding::LENGTHS, R),
        (binding::HS, W),
        (binding::GATES, W),
        (binding::OUT, W),
    ],
    STEP_CONSTANTS,
);

const LSTM_PROJECT_BACKWARD: KernelDef<Params> = KernelDef::new(
    Shader::LstmProj,
    "lstm_project_backward",
    &[
        (binding::WEIGHTS, R),
        (binding::LENGTHS, R),
        (binding::DOUT, R),
        (binding::DGH, W),
        (binding::CARRY, W),
    ],
    STEP_CONSTANTS,
);

/// Every kernel of this module (see [`super::kernels`]).
pub(super) const KERNELS: &[KernelInfo] = &[
    LSTM_PROJECT.info(),
    LSTM_PROJECT_BACKWARD.info(),
    LSTM_FORWARD.info(),
    GRU_FORWARD.info(),
    RNN_FORWARD.info(),
    LSTM_BACKWARD.info(),
    GRU_BACKWARD.info(),
    RNN_BACKWARD.info(),
    GRU_RESET_FORWARD.info(),
    GRU_RESET_BACKWARD.info(),
];

fn forward_kernel(cell: Cell) -> KernelDef<Params> {
    match cell {
        Cell::Lstm => LSTM_FORWARD,
        Cell::Gru => GRU_FORWARD,
        Cell::Rnn(_) => RNN_FORWARD,
    }
}

fn backward_kernel(cell: Cell) -> KernelDef<Params> {
    match cell {
        Cell::Lstm => LSTM_BACKWARD,
        Cell::Gru => GRU_BACKWARD,
        Cell::Rnn(_) => RNN_BACKWARD,
    }
}

/// Fails unless every given buffer of a step (its store, when given)
/// stores at the step's precision `want`: both backends check the buffers
/// a step writes with it.
pub(crate) fn check_step_stores(
    op: &str,
    want: Precision,
    stores: &[(&str, Option<Precision>)],
) -> Result<()> {
    for (arg, store) in stores {
        if let Some(store) = *store
            && store != want
        {
            return Err(Error::invalid(
                format!("{op} {arg}"),
                format!("is stored in {store} but the step stores in {want} (StepSpec::store)"),
            ));
        }
    }
    Ok(())
}

/// How a step's buffers hold their values: the `W_LAYOUT`, `G_LAYOUT`,
/// `XG_LAYOUT`, `DG_LAYOUT`, `S_LAYOUT`, `O_LAYOUT` and `D_LAYOUT` override
/// constants (0: f32 words; 1, 2: f16, bf16 packed two a word; the gates,
/// xg and dgh in cell_common.wgsl's pairing of gate blocks, the states hs
/// and cs, the output and its gradient side by side).
#[derive(Clone, Copy, Default)]
struct Layouts {
    weights: f64,
    gates: f64,
    xg: f64,
    dgh: f64,
    states: f64,
    out: f64,
    dout: f64,
}

/// The layout code of an optional buffer (0 when absent).
fn layout_of(arg: &str, t: Option<&GpuTensor>) -> Result<f64> {
    t.map(|t| read_layout(arg, t))
        .transpose()
        .map(|c| c.unwrap_or(0.0))
}

impl Layouts {
    fn of(
        weights: &GpuTensor,
        gates: Option<&GpuTensor>,
        xg: Option<&GpuTensor>,
        dgh: Option<&GpuTensor>,
    ) -> Result<Layouts> {
        Ok(Layouts {
            weights: read_layout("weights", weights)?,
            gates: layout_of("gates", gates)?,
            xg: layout_of("xg", xg)?,
            dgh: layout_of("dgh", dgh)?,
            ..Layouts::default()
        })
    }

    /// With the states' (hs and cs: one layout), the output's and its
    /// gradient's layouts.
    fn with_states(
        self,
        hs: &GpuTensor,
        cs: Option<&GpuTensor>,
        out: Option<&GpuTensor>,
        dout: Option<&GpuTensor>,
    ) -> Result<Layouts> {
        let states = read_layout("hs", hs)?;
        if let Some(cs) = cs
            && cs.dtype() != hs.dtype()
        {
            return Err(Error::invalid(
                "cell cs",
                format!(
                    "is {:?} but hs is {:?}: the step reads both states in one layout",
                    cs.dtype(),
                    hs.dtype()
                ),
            ));
        }
        Ok(Layouts {
            states,
            out: layout_of("out", out)?,
            dout: layout_of("dout", dout)?,
            ..self
        })
    }
}

/// Fails unless packed states or a packed output (which the step writes a
/// word at a time from two units of one row, cell_common.wgsl's
/// flush_pairs) suit the step: an even number of units (H, or a
/// projection's P), and every part and column block starting on a word.
fn check_packed_states(params: &Params, layouts: &Layouts) -> Result<()> {
    let mut parts = Vec::new();
    if layouts.states > 0.0 {
        parts.extend([
            ("hs part stride", params.d_hs),
            ("cs part stride", params.d_cs),
            ("hidden size", params.h),
            ("state width", params.hp),
            ("cell width", params.cell_h),
        ]);
    }
    if layouts.out > 0.0 {
        parts.extend([
            ("out part stride", params.d_out),
            ("out row stride", params.out_ld),
            ("out column", params.out_col),
            ("hidden size", params.h),
            ("state width", params.hp),
        ]);
    }
    match parts.iter().find(|(_, v)| v % 2 != 0) {
        Some((what, v)) => Err(Error::invalid(
            "cell states",
            format!(
                "are packed two 16-bit values a word, which needs the {what} even (it is {v}); \
                 give them in 32-bit words (Backend::zeros_stored)"
            ),
        )),
        None => Ok(()),
    }
}

/// The length of a gates tensor: f32 words, or packed 16-bit values (a
/// packed one holds its own precision, which `G_LAYOUT` decodes; the
/// forward's `check_step_stores` requires it to be the step's).
fn gates_len(t: Option<&GpuTensor>) -> Result<Option<usize>> {
    t.map(|t| {
        read_layout("gates", t)?;
        Ok(t.len())
    })
    .transpose()
}

/// Fails unless a packed xg or dgh (the step's own pairs: `(name, tensor,
/// part stride)`) suits the step: a variant whose rows pair
/// ([`Variant::pairs_rows`]) and parts that start on a word pair.
fn check_packed_rows(
    cell: Cell,
    s: &StepSpec,
    params: &Params,
    rows: &[(&str, &GpuTensor, u32)],
) -> Result<()> {
    for &(arg, t, stride) in rows {
        if t.dtype().packed().is_none() {
            continue;
        }
        if !s.variant.pairs_rows(cell) {
            return Err(Error::invalid(
                format!("cell {arg}"),
                format!(
                    "is packed ({}), which only an LSTM's rows of four gate blocks can be \
                     (without a projection), and this step is {}{}; give it in 32-bit words \
                     (Backend::zeros_stored)",
                    t.store(),
                    cell.name(),
                    if s.variant.proj_size > 0 {
                        " with a projection"
                    } else {
                        ""
                    },
                ),
            ));
        }
        check_pair_stride(arg, stride, params)?;
    }
    Ok(())
}

/// Fails unless a packed `arg`'s parts (directions, a wavefront's layers),
/// `stride` elements apart, start on a pair of gate blocks (a multiple of 2H).
fn check_pair_stride(arg: &str, stride: u32, params: &Params) -> Result<()> {
    let h = params.h.max(1);
    if stride.is_multiple_of(2 * h) {
        return Ok(());
    }
    Err(Error::invalid(
        format!("cell {arg}"),
        format!(
            "holds packed values, so each direction's or layer's part must start on a pair \
             of gate blocks: stride {stride} is not a multiple of 2H = {}",
            2 * h
        ),
    ))
}

/// Fails unless packed gates (`gates` of a 16-bit packed dtype) suit the
/// step: a variant whose gates pair ([`Variant::pairs_gates`]), and parts
/// (directions, a wavefront's layers) that start on a word pair (`d_gates`
/// a multiple of 2H).
fn check_packed_gates(
    cell: Cell,
    s: &StepSpec,
    params: &Params,
    gates: Option<&GpuTensor>,
) -> Result<()> {
    let Some(g) = gates.filter(|g| g.dtype().packed().is_some()) else {
        return Ok(());
    };
    let v = &s.variant;
    if !v.pairs_gates(cell) {
        let what = if v.proj_size > 0 {
            format!("{} with a projection", cell.name())
        } else if v.reset_before {
            format!("{} reset-before", cell.name())
        } else {
            format!("{} saving {} value(s) a unit", cell.name(), v.saved(cell))
        };
        return Err(Error::invalid(
            "cell gates",
            format!(
                "are packed ({}), which only an LSTM's or GRU's four saved gates can be \
                 (without a projection or reset-before), and this step is {what}; \
                 give them in 32-bit words (Backend::zeros_stored)",
                g.store()
            ),
        ));
    }
    check_pair_stride("gates", params.d_gates, params)
}

/// Records one step dispatch with the recurrent-product variant `forced`, else the
/// context's, on weights and gates laid out as `layouts` says.
#[allow(clippy::too_many_arguments)]
fn dispatch_step(
    rec: &mut Recorder<'_>,
    kernel: KernelDef<Params>,
    s: &StepSpec,
    buffers: &[(u32, &wgpu::Buffer)],
    params: &Params,
    from_gates: bool,
    forced: Option<StepKernel>,
    layouts: Layouts,
) -> Result<()> {
    // The units this dispatch owns: H, or the projection's P.
    let units = params.h as usize;
    let variant = forced.unwrap_or_else(|| rec.ctx().step_kernel(s.batch, units));
    let resident = variant == StepKernel::Resident;
    if params.k_steps > 1 && !resident {
        return Err(Error::invalid(
            "cell step fusion",
            format!(
                "{} steps in one dispatch need the resident step kernel; this context uses {}",
                params.k_steps,
                variant.name()
            ),
        ));
    }
    let params = &Params {
        resident: resident as u32,
        ..*params
    };
    let groups = variant.groups(s.batch, units) * params.dirs as u64;
    let grid = rec.ctx().grid(groups)?;
    // The variant's SPLIT, the step's STORE, the layouts, then FROM_GATES
    // when set (no allocation a step).
    let split = variant.constants()[0];
    let all = [
        split,
        ("STORE", s.store.code() as f64),
        ("W_LAYOUT", layouts.weights),
        ("G_LAYOUT", layouts.gates),
        ("XG_LAYOUT", layouts.xg),
        ("DG_LAYOUT", layouts.dgh),
        ("S_LAYOUT", layouts.states),
        ("O_LAYOUT", layouts.out),
        ("D_LAYOUT", layouts.dout),
        ("FROM_GATES", 1.0),
    ];
    let constants: &[(&str, f64)] = if from_gates { &all } else { &all[..9] };
    rec.dispatch(kernel, constants, buffers, params, grid)
}

/// The parameters of a reset-before GRU step's second dispatch: the
/// products with W_hn (rows 2H.. of W_hh) and b_hn; backward, over this
/// step's dn (H rows of gate gradients at row stride 3H).
fn reset_params(s: &StepSpec, first: &Params) -> Result<Params> {
    let h = s.hidden;
    Ok(Params {
        whh_off: u32_of("whh_off", s.whh_off + 2 * h * h)?,
        bhh_off: u32_of("bhh_off", s.bhh_off + 2 * h)?,
        dg_rows: u32_of("H", h)?,
        // r ⊙ h from the gates' fourth block.
        vec_ld: u32_of("4H", 4 * h)?,
        ..*first
    })
}

/// The parameters of a projected LSTM's projection dispatch (its units are
/// the P of h): forward `h = W_hr m` with m from the gates' fifth block,
/// backward `dh = dG_later·W_hh + carry + dout`.
fn proj_params(s: &StepSpec, cell_params: &Params) -> Result<Params> {
    let (h, hp) = (s.hidden, s.state_size());
    Ok(Params {
        h: u32_of("P", hp)?,
        whh_off: u32_of("hr_off", s.hr_off)?,
        pk: u32_of("H", h)?,
        vec_ld: u32_of("5H", 5 * h)?,
        dg_rows: u32_of("4H", 4 * h)?,
        ..*cell_params
    })
}

/// GPU buffers of a forward step.
pub type ForwardTensors<'a> = StepForward<'a, GpuTensor, GpuTensor>;

/// GPU buffers of a backward step.
pub type BackwardTensors<'a> = StepBackward<'a, GpuTensor, GpuTensor>;

fn f32_len(arg: &str, t: &GpuTensor) -> Result<usize> {
    t.expect_dtype(arg, DType::F32)?;
    Ok(t.len())
}

fn lengths_len(lengths: Option<&GpuTensor>) -> Result<Option<usize>> {
    lengths
        .map(|l| {
            l.expect_dtype("lengths", DType::I32)?;
            Ok(l.len())
        })
        .transpose()
}

/// Placeholder buffers bound where a step's optional buffer is absent: `ints`
/// for the lengths (read), `floats` for the gates of a forward that saves
/// nothing (never touched). Two buffers, since one dispatch may not bind the
/// same buffer read-only and writable.
#[derive(Clone, Copy)]
pub struct Placeholders<'a> {
    /// A one-element i32 tensor.
    pub ints: &'a GpuTensor,
    /// A one-element f32 tensor.
    pub floats: &'a GpuTensor,
    /// The backend's forced recurrent-product variant (`None`: the
    /// context's, [`crate::gpu::GpuContext::step_kernel`]).
    pub step_kernel: Option<StepKernel>,
}

/// Records one forward step (with its [`Fusion`]: one dispatch per phase);
/// `dummies` fill the bindings of absent buffers.
pub fn forward_step_gpu(
    rec: &mut Recorder<'_>,
    cell: Cell,
    s: &StepSpec,
    bufs: &ForwardTensors<'_>,
    dummies: Placeholders<'_>,
) -> Result<()> {
    let fused = *s;
    let layouts = Layouts::of(bufs.weights, bufs.gates, Some(bufs.xg), None)?.with_states(
        bufs.hs,
        bufs.cs,
        Some(bufs.out),
        None,
    )?;
    let lens = Lens {
        xg: bufs.xg.len(),
        weights: bufs.weights.len(),
        lengths: lengths_len(bufs.lengths)?,
        hs: bufs.hs.len(),
        cs: bufs.cs.map(GpuTensor::len),
        gates: gates_len(bufs.gates)?,
        out: bufs.out.len(),
        ..Default::default()
    };
    check_step_stores(
        "cell forward",
        s.store,
        &[
            ("hs", Some(bufs.hs.store())),
            ("cs", bufs.cs.map(GpuTensor::store)),
            ("gates", bufs.gates.map(GpuTensor::store)),
            ("out", Some(bufs.out.store())),
        ],
    )?;
    // Every single step the dispatch stands for, checked; the uniform is
    // the first's with the fusion's fields.
    let one = s.checked_parts(cell, false, &lens)?[0].1;
    let s = &one;
    let params =
        Params::of(cell, s, bufs.lengths.is_some(), bufs.gates.is_some())?.fused(&fused, false)?;
    check_packed_gates(cell, s, &params, bufs.gates)?;
    check_packed_rows(cell, s, &params, &[("xg", bufs.xg, params.d_xg)])?;
    check_packed_states(&params, &layouts)?;
    if s.variant.proj_size > 0 {
        check_packed_states(&proj_params(s, &params)?, &layouts)?;
    }
    let lengths = bufs.lengths.unwrap_or(dummies.ints).buffer();
    // Without a gates buffer nothing is saved (p.save = 0); the kernel still
    // declares the binding, so a placeholder fills it.
    let gates = bufs.gates.unwrap_or(dummies.floats).buffer();
    let mut buffers = vec![
        (binding::XG, bufs.xg.buffer()),
        (binding::WEIGHTS, bufs.weights.buffer()),
        (binding::LENGTHS, lengths),
        (binding::HS, bufs.hs.buffer()),
        (binding::OUT, bufs.out.buffer()),
    ];
    // Beside those every cell binds: the LSTM its cell state and gates, the
    // GRU its gates, the RNN nothing more.
    match (cell, bufs.cs) {
        (Cell::Lstm, Some(cs)) => {
            buffers.extend([(binding::CS, cs.buffer()), (binding::GATES, gates)]);
        }
        // The RNN saves its clipped pre-activations when clipping.
        (Cell::Gru | Cell::Rnn(_), _) => buffers.push((binding::GATES, gates)),
        _ => return Err(missing("cs", cell)),
    }
    dispatch_step(
        rec,
        forward_kernel(cell),
        s,
        &buffers,
        &params,
        false,
        dummies.step_kernel,
        layouts,
    )?;
    if s.variant.proj_size > 0 {
        // h = W_hr m and the output, from the m the cell saved.
        let params = proj_params(s, &params)?;
        buffers.retain(|(n, _)| ![binding::CS, binding::XG].contains(n));
        dispatch_step(
            rec,
            LSTM_PROJECT,
            s,
            &buffers,
            &params,
            true,
            dummies.step_kernel,
            layouts,
        )?;
    }
    if cell == Cell::Gru && s.variant.reset_before {
        // The candidate and the update, from the r ⊙ h the first saved.
        let params = reset_params(s, &params)?;
        buffers.retain(|(n, _)| *n != binding::CS);
        dispatch_step(
            rec,
            GRU_RESET_FORWARD,
            s,
            &buffers,
            &params,
            true,
            dummies.step_kernel,
            layouts,
        )?;
    }
    Ok(())
}

/// Records one backward step (with its [`Fusion`]).
pub fn backward_step_gpu(
    rec: &mut Recorder<'_>,
    cell: Cell,
    s: &StepSpec,
    bufs: &BackwardTensors<'_>,
    dummies: Placeholders<'_>,
) -> Result<()> {
    let fused = *s;
    let layouts = Layouts::of(bufs.weights, bufs.gates, None, Some(bufs.dgh))?.with_states(
        bufs.hs,
        bufs.cs,
        None,
        Some(bufs.dout),
    )?;
    let opt_len = |arg: &str, t: Option<&GpuTensor>| t.map(|t| f32_len(arg, t)).transpose();
    let lens = Lens {
        weights: bufs.weights.len(),
        lengths: lengths_len(bufs.lengths)?,
        hs: bufs.hs.len(),
        cs: bufs.cs.map(GpuTensor::len),
        gates: gates_len(bufs.gates)?,
        out: bufs.dout.len(),
        dgh: bufs.dgh.len(),
        dgx: opt_len("dgx", bufs.dgx)?,
        carry: f32_len("carry", bufs.carry)?,
        ..Default::default()
    };
    check_step_stores(
        "cell backward",
        s.store,
        &[
            ("dgh", Some(bufs.dgh.store())),
            ("dgx", bufs.dgx.map(GpuTensor::store)),
            ("carry", Some(bufs.carry.store())),
        ],
    )?;
    let one = s.checked_parts(cell, true, &lens)?[0].1;
    let s = &one;
    let params = Params::of(cell, s, bufs.lengths.is_some(), false)?.fused(&fused, true)?;
    check_packed_gates(cell, s, &params, bufs.gates)?;
    check_packed_rows(cell, s, &params, &[("dgh", bufs.dgh, params.d_dgh)])?;
    let lengths = bufs.lengths.unwrap_or(dummies.ints).buffer();
    let mut buffers = vec![
        (binding::WEIGHTS, bufs.weights.buffer()),
        (binding::LENGTHS, lengths),
        (binding::DOUT, bufs.dout.buffer()),
        (binding::DGH, bufs.dgh.buffer()),
        (binding::CARRY, bufs.carry.buffer()),
    ];
    // Beside those every cell binds: the LSTM its cell state and gates (its
    // gradient needs no h), the GRU h, its gates and dgx, the RNN h.
    match (cell, bufs.cs, bufs.gates, bufs.dgx) {
        (Cell::Lstm, Some(cs), Some(gates), _) => {
            buffers.extend([
                (binding::CS_SAVED, cs.buffer()),
                (binding::GATES_SAVED, gates.buffer()),
            ]);
        }
        // (The reset-before GRU has one gate-gradient buffer, dgh.)
        (Cell::Gru, _, Some(gates), dgx) if s.variant.reset_before || dgx.is_some() => buffers
            .extend([
                (binding::HS_SAVED, bufs.hs.buffer()),
                (binding::GATES_SAVED, gates.buffer()),
                (binding::DGX, dgx.unwrap_or(dummies.floats).buffer()),
            ]),
        (Cell::Rnn(_), _, gates, _) => buffers.extend([
            (binding::HS_SAVED, bufs.hs.buffer()),
            (
                binding::GATES_SAVED,
                gates.unwrap_or(dummies.floats).buffer(),
            ),
        ]),
        _ => return Err(missing("cs/gates/dgx", cell)),
    }
    if s.variant.proj_size > 0 {
        // dh (P wide) first, then the cell's gradients from dm = dh·W_hr.
        let pp = Params {
            whh_off: params.whh_off,
            ..proj_params(s, &params)?
        };
        let keep = [
            binding::WEIGHTS,
            binding::LENGTHS,
            binding::DOUT,
            binding::DGH,
            binding::CARRY,
        ];
        let first: Vec<_> = buffers
            .iter()
            .filter(|(n, _)| keep.contains(n))
            .copied()
            .collect();
        dispatch_step(
            rec,
            LSTM_PROJECT_BACKWARD,
            s,
            &first,
            &pp,
            false,
            dummies.step_kernel,
            layouts,
        )?;
        let cell_params = Params {
            whh_off: u32_of("hr_off", s.hr_off)?,
            dg_rows: u32_of("P", s.state_size())?,
            ..params
        };
        return dispatch_step(
            rec,
            backward_kernel(cell),
            s,
            &buffers,
            &cell_params,
            false,
            dummies.step_kernel,
            layouts,
        );
    }
    dispatch_step(
        rec,
        backward_kernel(cell),
        s,
        &buffers,
        &params,
        false,
        dummies.step_kernel,
        layouts,
    )?;
    if cell == Cell::Gru && s.variant.reset_before {
        // dr and the carry's r part, from this step's dn.
        let params = reset_params(s, &params)?;
        buffers.retain(|(n, _)| ![binding::DOUT, binding::DGX].contains(n));
        dispatch_step(
            rec,
            GRU_RESET_BACKWARD,
            s,
            &buffers,
            &params,
            false,
            dummies.step_kernel,
            layouts,
        )?;
    }
    Ok(())
}
