//! Benchmarks: the shape tables shared by the criterion benches, the `bench`
//! subcommand and the PyTorch script (`benches/shapes.json`), and the timing
//! of a recurrent layer's forward, backward and whole training step on any
//! backend.
//!
//! A "step" is the forward over `T` steps plus full backpropagation through
//! time (gradients of the input, initial states and every parameter), as in
//! training (`forward_train`, then `backward` of its saved activations); on the
//! GPU it is recorded and submitted as one submission (several beyond the
//! dispatch bound, which `record_ms` then includes), and the time includes
//! waiting for the GPU.
//!
//! Each step result carries a roofline: the step's FLOPs and least bytes,
//! counted from the shape ([`RnnShape::step_flops`], [`RnnShape::step_bytes`];
//! the step updates no parameters, so no optimizer is counted), and, given
//! the adapter's peaks ([`PEAKS`] by name, or the caller's), the least time
//! they allow: the largest of FLOPs at the peak rate, bytes at the peak
//! bandwidth and the chain of dependent step dispatches at a launch latency
//! ([`roofline`]), the fraction of it the measured step reaches and which of
//! the three binds.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, XentBuffers};
use crate::error::{Error, Result};
use crate::gpu::{Counters, GpuContext};
use crate::nn::{Rnn, RnnConfig, StepOrder};
use crate::ops::cell::{Cell, Variant};
use crate::ops::matmul::Gemm;
use crate::ops::optim::Optimizer;
use crate::ops::skip::Skip;
use crate::ops::softmax_xent::{IGNORE_INDEX, Rows};
use crate::parity::{uniform, uniform_i32};
use crate::precision::Precision;

/// Matrix-multiply shapes `(M, N, K)`: square sizes, and the shapes of an
/// LSTM's input projection (`T·B × 4H × I`) and recurrent product (`B × 4H × H`).
pub const MATMUL_SHAPES: &[(usize, usize, usize)] = &[
    (256, 256, 256),
    (1024, 1024, 1024),
    (4096, 4096, 4096),
    (1600, 2048, 512),
    (64, 4096, 1024),
];

/// Softmax cross-entropy shapes `(R, V)`: a character model and a word model.
pub const XENT_SHAPES: &[(usize, usize)] = &[(3200, 128), (1024, 32000)];

/// A reduced table for software adapters and quick runs.
pub const MATMUL_SHAPES_SMALL: &[(usize, usize, usize)] = &[(64, 64, 64), (128, 128, 128)];

/// A reduced table for software adapters and quick runs.
pub const XENT_SHAPES_SMALL: &[(usize, usize)] = &[(256, 128)];

/// One recurrent benchmark shape.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RnnShape {
    /// `lstm`, `gru`, `rnn_tanh` or `rnn_relu`.
    pub cell: Cell,
    /// I
    pub input: usize,
    /// H
    pub hidden: usize,
    /// B
    pub batch: usize,
    /// T
    pub seq: usize,
    /// L
    pub layers: usize,
    /// Two directions (the shape tables: one).
    #[serde(default)]
    pub bidirectional: bool,
    /// The cell's variant (PyTorch's cell in the shape tables).
    #[serde(default)]
    pub variant: Variant,
    /// Skip connections between the layers.
    #[serde(default)]
    pub skip: Skip,
}

/// The shape tables, as `benches/shapes.json` holds them.
#[derive(Clone, Debug, Deserialize)]
pub struct ShapeTable {
    /// Cells × inputs × hiddens × batches × sequence lengths, one layer: the GPU targets.
    pub gpu: Grid,
    /// The CPU target.
    pub cpu: Grid,
    /// Unidirectional stacks of two layers on a GPU, for the step orders
    /// (`--step-order`).
    pub stack: Grid,
    /// The 16-bit comparison on a GPU (`--precision f16` against
    /// PyTorch's `torch.autocast(dtype=torch.float16)`), a subset of `gpu`.
    pub half: Grid,
    /// A small grid for software adapters and quick checks.
    pub small: Grid,
}

/// A cartesian grid of shapes.
#[derive(Clone, Debug, Deserialize)]
pub struct Grid {
    /// Cell names.
    pub cells: Vec<String>,
    /// Input sizes.
    pub inputs: Vec<usize>,
    /// Hidden sizes.
    pub hiddens: Vec<usize>,
    /// Batch sizes.
    pub batches: Vec<usize>,
    /// Sequence lengths.
    pub seqs: Vec<usize>,
    /// Layers.
    pub layers: usize,
}

impl Grid {
    /// Every shape of the grid.
    pub fn shapes(&self) -> Result<Vec<RnnShape>> {
        let mut out = Vec::new();
        for c in &self.cells {
            let cell = Cell::parse(c)?;
            for &input in &self.inputs {
                for &hidden in &self.hiddens {
                    for &batch in &self.batches {
                        for &seq in &self.seqs {
                            out.push(RnnShape {
                                cell,
                                input,
                                hidden,
                                batch,
                                seq,
                                layers: self.layers,
                                bidirectional: false,
                                variant: Variant::default(),
                                skip: Skip::None,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The shared table (`benches/shapes.json`, also read by `benches/pytorch_bench.py`).
pub fn shape_table() -> Result<ShapeTable> {
    serde_json::from_str(include_str!("../benches/shapes.json"))
        .map_err(|e| Error::invalid("benches/shapes.json", e.to_string()))
}

impl RnnShape {
    /// The variant and skip connections in words, `""` for PyTorch's stack.
    pub fn describe_variant(&self) -> String {
        let mut parts = vec![self.variant.describe(self.cell)];
        if self.skip != Skip::None {
            parts.push(self.skip.name().to_string());
        }
        parts.retain(|p| !p.is_empty());
        parts.join(", ")
    }

    /// FLOPs of the forward: `2·T·B·G·H·(In + P)` per direction (P = H, or
    /// the projection's width, whose product adds `2·T·B·P·H`) summed over
    /// layers, plus a highway gate's `2·T·B·(D·P)²` above the first.
    pub fn forward_flops(&self) -> f64 {
        let g = self.cell.gates() as f64;
        let (t, b, h) = (self.seq as f64, self.batch as f64, self.hidden as f64);
        let p = self.variant.state_size(self.hidden) as f64;
        let d = if self.bidirectional { 2.0 } else { 1.0 };
        let proj = if self.variant.proj_size > 0 {
            p * h
        } else {
            0.0
        };
        (0..self.layers)
            .map(|l| {
                let i = if l == 0 { self.input as f64 } else { d * p };
                let highway = if l > 0 && self.skip == Skip::Highway {
                    d * p * d * p
                } else {
                    0.0
                };
                2.0 * t * b * (d * (g * h * (i + p) + proj) + highway)
            })
            .sum()
    }

    /// FLOPs of forward plus backward (the backward does twice the forward's matmuls).
    pub fn step_flops(&self) -> f64 {
        3.0 * self.forward_flops()
    }

    /// The stack this shape benchmarks.
    pub fn config(&self) -> RnnConfig {
        RnnConfig::new(self.cell, self.input, self.hidden)
            .variant(self.variant)
            .layers(self.layers)
            .bidirectional(self.bidirectional)
            .skip(self.skip)
    }

    /// The least memory traffic of a training step (forward and full
    /// backward; with `optimizer`, its update too), in bytes of elements of
    /// `elem` bytes (4 for f32).
    ///
    /// Counted, with N the stack's parameters, for `T` steps of `B` rows:
    /// - parameters: all N read once in the forward and once in the
    ///   backward, and the recurrent weights (W_hh, and W_hr with a
    ///   projection) once more at every further time step of each layer and
    ///   direction in each pass, since each step is its own dispatch and
    ///   needs them whole (`(T − 1)·L·D·(G·H·P + P·H)` per pass);
    /// - gradients: all N written once;
    /// - each layer's input `[T, B, In]` read in the forward (once for both
    ///   directions: their input products can be one) and again in the
    ///   backward (for dW_ih);
    /// - the saved states, per layer and direction: h `[T, B, P]` (which is
    ///   the layer's output) and the LSTM's c `[T, B, H]`, written in the
    ///   forward and read in the backward; with a skip connection, the
    ///   layer's mixed output `[T, B, D·P]` written too;
    /// - each layer's output gradient `[T, B, D·P]` read and its input
    ///   gradient `[T, B, In]` written (the stack's input gradient at the
    ///   bottom, the gradient handed down between layers);
    /// - the optimizer: parameters and gradients read, its state buffers
    ///   (`Optimizer::state_lens`) read and written, parameters written.
    ///
    /// It is a lower bound for the step as the stack runs it, layer after
    /// layer and one dispatch per time step, if nothing stays on chip from one
    /// dispatch to the next: it leaves out what an implementation could
    /// recompute or fuse away (the input products' pre-activations, the
    /// gates, which the backward could recompute from the saved states and
    /// the input, the intermediate gradients of a layer's backward), the
    /// biases' and peepholes' re-reads at each step, and the initial and
    /// final states (`[B, P]`, small beside `[T, B, P]`). A cache that holds
    /// W_hh between steps serves those re-reads faster than memory, so a
    /// measured step may beat this count at the memory's bandwidth.
    pub fn step_bytes(&self, elem: usize, optimizer: Option<&Optimizer>) -> u64 {
        let cfg = self.config();
        let n = cfg.layout().total as u64;
        let (t, b) = (self.seq as u64, self.batch as u64);
        let (g, h) = (self.cell.gates() as u64, self.hidden as u64);
        let p = cfg.state_size() as u64;
        let (d, l) = (cfg.directions() as u64, self.layers as u64);
        let c = if self.cell == Cell::Lstm { h } else { 0 };
        let proj = if self.variant.proj_size > 0 { p * h } else { 0 };
        let recurrent = l * d * (g * h * p + proj);
        // Parameters in each pass, then the gradients.
        let params = 2 * (n + t.saturating_sub(1) * recurrent) + n;
        // Elements per (time step, row) of the sequences each layer moves.
        let per_row: u64 = (0..self.layers)
            .map(|layer| {
                let input = cfg.layer_input(layer) as u64;
                let saved = d * (p + c);
                let mixed = if cfg.has_skip(layer) { d * p } else { 0 };
                let forward = input + saved + mixed;
                let backward = input + saved + d * p + input;
                forward + backward
            })
            .sum();
        let update = optimizer.map_or(0, |o| {
            let (s1, s2) = o.state_lens(n as usize);
            3 * n + 2 * (s1 + s2) as u64
        });
        (params + t * b * per_row + update) * elem as u64
    }
}

/// Bytes of an f32 element (the unit of [`RnnShape::step_bytes`] today).
pub const F32_BYTES: usize = 4;

/// An adapter's peak fp32 arithmetic rate (without tensor cores or other
/// matrix units) and memory bandwidth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    /// TFLOP/s (10¹² FLOP/s).
    pub tflops: f64,
    /// GB/s (10⁹ bytes/s).
    pub gbps: f64,
}

/// One row of [`PEAKS`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakEntry {
    /// Matched against the adapter's name, case-insensitively, as whole
    /// words (`L4` is not `L40S`).
    pub pattern: &'static str,
    /// The part it stands for, in words.
    pub name: &'static str,
    /// `None` where one name covers parts of very different peaks: the row
    /// keeps them from taking a shorter pattern's figures.
    pub peak: Option<Peak>,
}

const fn row(pattern: &'static str, name: &'static str, tflops: f64, gbps: f64) -> PeakEntry {
    PeakEntry {
        pattern,
        name,
        peak: Some(Peak { tflops, gbps }),
    }
}

const fn unknown(pattern: &'static str, name: &'static str) -> PeakEntry {
    PeakEntry {
        pattern,
        name,
        peak: None,
    }
}

/// Peak fp32 rates (no tensor cores) and memory bandwidths of adapters by
/// name; the longest pattern found in the adapter's name wins.
///
/// Sources: NVIDIA's data sheets (H100, H200, A100, L4: "FP32" rows, not
/// "TF32 Tensor Core") and GeForce specification pages (shader TFLOPS: 2 ×
/// CUDA cores × boost clock); AMD's Radeon RX 7900 specification pages
/// ("Peak Single Precision", dual issue); Apple's product pages and press
/// releases for the memory bandwidths and the M1 and M2 families' TFLOPS.
/// Apple gives no FLOP/s for the M3 and M4: theirs are GPU cores × 128 lanes ×
/// 2 × clock (about 1.6 and 1.7 GHz). Where one name is sold with several
/// core counts (Apple's chips, the A100) the figures are the fullest part's,
/// so a smaller part's fraction of the limit reads low. The A100 row is the
/// SXM4 80 GB (2039 GB/s); the 40 GB parts have 1555 GB/s, to be passed with
/// `--peak-gbps` (and `--peak-tflops 19.5`).
pub const PEAKS: &[PeakEntry] = &[
    row("H100", "NVIDIA H100 SXM", 67.0, 3350.0),
    row("H100 PCIe", "NVIDIA H100 PCIe", 51.0, 2000.0),
    row("H100 NVL", "NVIDIA H100 NVL", 60.0, 3938.0),
    row("H200", "NVIDIA H200 SXM", 67.0, 4800.0),
    row("H200 NVL", "NVIDIA H200 NVL", 60.0, 4800.0),
    row("A100", "NVIDIA A100 SXM4 80GB", 19.5, 2039.0),
    row("L4", "NVIDIA L4", 30.3, 300.0),
    row("RTX 4090", "NVIDIA GeForce RTX 4090", 82.6, 1008.0),
    row("RTX 4090 D", "NVIDIA GeForce RTX 4090 D", 73.5, 1008.0),
    row("RTX 3080", "NVIDIA GeForce RTX 3080", 29.8, 760.0),
    row("RTX 3080 Ti", "NVIDIA GeForce RTX 3080 Ti", 34.1, 912.0),
    row("Apple M1", "Apple M1 (8-core GPU)", 2.6, 68.0),
    row("Apple M1 Pro", "Apple M1 Pro (16-core GPU)", 5.2, 200.0),
    row("Apple M1 Max", "Apple M1 Max (32-core GPU)", 10.4, 400.0),
    row(
        "Apple M1 Ultra",
        "Apple M1 Ultra (64-core GPU)",
        21.0,
        800.0,
    ),
    row("Apple M2", "Apple M2 (10-core GPU)", 3.6, 100.0),
    row("Apple M2 Pro", "Apple M2 Pro (19-core GPU)", 6.8, 200.0),
    row("Apple M2 Max", "Apple M2 Max (38-core GPU)", 13.6, 400.0),
    row(
        "Apple M2 Ultra",
        "Apple M2 Ultra (76-core GPU)",
        27.2,
        800.0,
    ),
    row("Apple M3", "Apple M3 (10-core GPU)", 4.1, 100.0),
    unknown("Apple M3 Pro", "Apple M3 Pro"),
    unknown("Apple M3 Max", "Apple M3 Max"),
    unknown("Apple M3 Ultra", "Apple M3 Ultra"),
    row("Apple M4", "Apple M4 (10-core GPU)", 4.3, 120.0),
    unknown("Apple M4 Pro", "Apple M4 Pro"),
    unknown("Apple M4 Max", "Apple M4 Max"),
    row("RX 7900 XTX", "AMD Radeon RX 7900 XTX", 61.4, 960.0),
    row("RX 7900 XT", "AMD Radeon RX 7900 XT", 51.5, 800.0),
];

/// Words in an adapter's name that mark a laptop part, whose clocks follow
/// its power limit: no row applies to it.
const LAPTOP_WORDS: &[&str] = &["laptop", "max-q"];

/// Whether `pattern` occurs in `name` (both lower case) as whole words: the
/// characters on either side, if any, are not letters or digits.
fn has_words(name: &str, pattern: &str) -> bool {
    let edge = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
    name.match_indices(pattern).any(|(at, _)| {
        edge(name[..at].chars().next_back()) && edge(name[at + pattern.len()..].chars().next())
    })
}

/// The row of [`PEAKS`] for an adapter's name: the longest pattern that
/// occurs in it as whole words, case-insensitively; `None` for a name no
/// pattern matches and for laptop parts. The row's `peak` may still be
/// `None` (a name without one set of figures).
pub fn lookup_peak(adapter: &str) -> Option<&'static PeakEntry> {
    let name = adapter.to_ascii_lowercase();
    if LAPTOP_WORDS.iter().any(|w| has_words(&name, w)) {
        return None;
    }
    PEAKS
        .iter()
        .filter(|e| has_words(&name, &e.pattern.to_ascii_lowercase()))
        .max_by_key(|e| e.pattern.len())
}

/// The default cost of one dependent dispatch, in µs: from one kernel's end
/// to the next one's start on a hardware GPU (launch and the barrier between
/// them) takes a few µs; 5 is a round figure, not a measurement
/// (`bench --launch-us` sets another).
pub const LAUNCH_US: f64 = 5.0;

/// Which limit bounds a step from below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    /// Its FLOPs at the peak arithmetic rate.
    Arithmetic,
    /// Its bytes at the peak memory bandwidth.
    Bandwidth,
    /// Its chain of dependent dispatches at the launch latency.
    Launches,
}

impl Bound {
    /// `arithmetic`, `bandwidth` or `launches`.
    pub fn name(self) -> &'static str {
        match self {
            Bound::Arithmetic => "arithmetic",
            Bound::Bandwidth => "bandwidth",
            Bound::Launches => "launches",
        }
    }
}

/// A step's roofline: the least time its work allows and what sets it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Roofline {
    /// The largest of the three lower bounds, in ms.
    pub limit_ms: f64,
    /// `limit_ms` / the measured time: 1 runs at the limit (above 1: the
    /// step beat a bound's assumptions, e.g. W_hh served from a cache).
    pub fraction: f64,
    /// Which bound is the largest (the first of arithmetic, bandwidth,
    /// launches on a tie).
    pub bound: Bound,
}

/// The roofline of `flops` and `bytes` and a chain of `launches` dependent
/// dispatches of `launch_us` each, on `peak`, for a step measured at
/// `measured_ms`.
pub fn roofline(
    flops: f64,
    bytes: u64,
    launches: u64,
    peak: Peak,
    launch_us: f64,
    measured_ms: f64,
) -> Roofline {
    let times = [
        (Bound::Arithmetic, flops / (peak.tflops * 1e12)),
        (Bound::Bandwidth, bytes as f64 / (peak.gbps * 1e9)),
        (Bound::Launches, launches as f64 * launch_us / 1e6),
    ];
    let (bound, seconds) = times
        .into_iter()
        .fold(times[0], |best, t| if t.1 > best.1 { t } else { best });
    let limit_ms = seconds * 1e3;
    Roofline {
        limit_ms,
        fraction: limit_ms / measured_ms,
        bound,
    }
}

/// One benchmark result, one JSON object per line with `--json`.
#[derive(Clone, Debug, Serialize)]
pub struct RnnBench {
    /// `rnn-wgpu` (the PyTorch script writes `pytorch`).
    pub implementation: String,
    /// `gpu` or `cpu`.
    pub backend: String,
    /// The adapter or CPU.
    pub device: String,
    /// Cell name.
    pub cell: String,
    /// The cell's variant and skip connections in words (empty for PyTorch's stack).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// I
    pub input: usize,
    /// H
    pub hidden: usize,
    /// B
    pub batch: usize,
    /// T
    pub seq: usize,
    /// L
    pub layers: usize,
    /// Two directions.
    pub bidirectional: bool,
    /// Storage precision (`f32`, `f16`, `bf16`).
    pub precision: String,
    /// Memory a training step holds, in bytes: parameters (a 16-bit mode
    /// adds the f32 master copy), f32 gradients, Adam's two f32 states,
    /// input and output gradient, and the stack's workspace (activations,
    /// saved states and gates, activation gradients). The CPU holds a
    /// 16-bit tensor's values in 32-bit words; the GPU packs the weight copy,
    /// the LSTM's and GRU's saved gates (not a projection's or the
    /// reset-before GRU's), the LSTM's input projection and gate
    /// gradients, the states h and c (even H), the input rows and the
    /// output gradient two values a word and holds the other activations in
    /// 32-bit words; `packed_memory_bytes` is the figure
    /// with every 16-bit tensor at storage precision.
    pub memory_bytes: u64,
    /// Of `memory_bytes`, what the recurrent layer itself holds: the
    /// weights it reads, its f32 gradients, input and output gradient, and
    /// its workspace (not the master copy nor the optimizer's state).
    pub layer_bytes: u64,
    /// `memory_bytes` with every 16-bit tensor at 2 bytes a value (packed
    /// two a word).
    pub packed_memory_bytes: u64,
    /// `layer_bytes` at 2 bytes a 16-bit value.
    pub packed_layer_bytes: u64,
    /// Median forward time.
    pub forward_ms: f64,
    /// Median backward time (step − forward of the same iteration).
    pub backward_ms: f64,
    /// Median time of forward + backward.
    pub step_ms: f64,
    /// Step FLOPs per second, in GFLOP/s.
    pub gflops: f64,
    /// Host time spent recording a step (GPU; 0 on the CPU).
    pub record_ms: f64,
    /// Compute dispatches per step (GPU).
    pub dispatches_per_step: u64,
    /// Of those, the cells' step kernels: the chain of dependent dispatches
    /// (2·L·D·T layer by layer, twice that for the reset-before GRU and the
    /// projected LSTM; 2·(T + L − 1) for a wavefront; fewer with the
    /// resident kernel's multi-step dispatches).
    pub recurrent_dispatches: u64,
    /// Queue submissions per step (GPU).
    pub submits_per_step: u64,
    /// Tensors allocated per step once warm (0: the step reuses its memory).
    pub allocations_per_step: u64,
    /// The cell steps' recurrent-product variant (`tiled` or `split`; empty on the CPU).
    pub step_kernel: String,
    /// How the passes ordered the layers' steps: `layers` or `wavefront`
    /// (see [`StepOrder`]).
    pub step_order: String,
    /// The step's FLOPs ([`RnnShape::step_flops`]).
    pub min_flops: f64,
    /// The least bytes the step moves ([`RnnShape::step_bytes`], f32).
    pub min_bytes: u64,
    /// The peak fp32 TFLOP/s the roofline assumes (`null`: peak unknown).
    pub peak_tflops: Option<f64>,
    /// The peak memory bandwidth in GB/s the roofline assumes.
    pub peak_gbps: Option<f64>,
    /// Where the peaks come from: `table: <part>` ([`PEAKS`]) or `flags`.
    pub peak_source: Option<String>,
    /// The cost assumed per dependent dispatch, in µs.
    pub launch_us: Option<f64>,
    /// The least time the step's work allows ([`roofline`]).
    pub limit_ms: Option<f64>,
    /// `limit_ms / step_ms`.
    pub fraction_of_limit: Option<f64>,
    /// Which limit binds: `arithmetic`, `bandwidth` or `launches`.
    pub bound: Option<Bound>,
}

impl RnnBench {
    /// Fills the roofline's fields for `peak` (from `source`: `table: <part>`
    /// or `flags`) and a cost of `launch_us` per dependent dispatch
    /// (`recurrent_dispatches` of them).
    pub fn set_roofline(&mut self, peak: Peak, source: &str, launch_us: f64) {
        let r = roofline(
            self.min_flops,
            self.min_bytes,
            self.recurrent_dispatches,
            peak,
            launch_us,
            self.step_ms,
        );
        self.peak_tflops = Some(peak.tflops);
        self.peak_gbps = Some(peak.gbps);
        self.peak_source = Some(source.into());
        self.launch_us = Some(launch_us);
        self.limit_ms = Some(r.limit_ms);
        self.fraction_of_limit = Some(r.fraction);
        self.bound = Some(r.bound);
    }
}

/// Waits for the GPU's work, if there is a GPU.
fn sync(ctx: Option<&GpuContext>) -> Result<()> {
    ctx.map_or(Ok(()), |c| c.sync())
}

fn backend_name<B: Backend>(b: &B) -> String {
    if b.is_gpu() { "gpu" } else { "cpu" }.into()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Times forward, backward and the whole step of one stack shape on `b`.
/// `ctx` (the GPU context, if any) supplies dispatch and submit counts.
pub fn bench_rnn<B: Backend>(
    b: &B,
    ctx: Option<&GpuContext>,
    device: &str,
    shape: &RnnShape,
    iters: usize,
) -> Result<RnnBench> {
    bench_rnn_ordered(b, ctx, device, shape, iters, StepOrder::Auto)
}

/// [`bench_rnn`] with the stack's passes ordered by `order`.
pub fn bench_rnn_ordered<B: Backend>(
    b: &B,
    ctx: Option<&GpuContext>,
    device: &str,
    shape: &RnnShape,
    iters: usize,
    order: StepOrder,
) -> Result<RnnBench> {
    bench_rnn_at(b, ctx, device, shape, iters, order, Precision::F32)
}

/// [`bench_rnn_ordered`] at `precision`: in a 16-bit mode the stack reads
/// a 16-bit copy of its parameters and stores its input, output gradient,
/// activations and activation gradients in 16 bits (the parameter
/// gradients are f32).
pub fn bench_rnn_at<B: Backend>(
    b: &B,
    ctx: Option<&GpuContext>,
    device: &str,
    shape: &RnnShape,
    iters: usize,
    order: StepOrder,
    precision: Precision,
) -> Result<RnnBench> {
    let cfg = shape.config();
    let n = cfg.layout().total;
    let k = 1.0 / (cfg.hidden_size as f64).sqrt();
    let weights = b.tensor_packed(&[n], &uniform(1, n, -k, k), precision)?;
    let mut rnn = Rnn::shared(b.clone(), cfg, weights.clone(), 0)?;
    rnn.set_precision(precision)?;
    rnn.set_step_order(order);
    let (t, bsz) = (shape.seq, shape.batch);
    let wavefront = rnn.runs_wavefront(t, bsz, false)?;
    // The input rows and the output gradient, packed two 16-bit values a
    // word on the GPU (the first layer's products read x packed, its step
    // reads dy packed), except a gradient that a skip connection reads.
    let x = b.tensor_packed(
        &[t, bsz, shape.input],
        &uniform(2, t * bsz * shape.input, -1.0, 1.0),
        precision,
    )?;
    let dy_data = uniform(3, t * bsz * cfg.output_size(), -1.0, 1.0);
    let dy_shape = [t, bsz, cfg.output_size()];
    let dy = if cfg.reads_packed_output_grad() {
        b.tensor_packed(&dy_shape, &dy_data, precision)?
    } else {
        b.tensor_stored(&dy_shape, &dy_data, precision)?
    };
    let grads = rnn.zeros_like_params()?;
    let sync = || sync(ctx);
    let counters = || ctx.map(|c| c.counters()).unwrap_or_default();
    let train_step = |rnn: &mut Rnn<B>| -> Result<()> {
        let (_, saved) = rnn.forward_train(&x, None, None, None, None)?;
        rnn.backward(&saved, Some(&dy), None, None, &grads)?;
        Ok(())
    };
    // Warm up: pipelines, bind groups, the stack's pooled buffers.
    for _ in 0..2 {
        train_step(&mut rnn)?;
        sync()?;
    }
    let (mut fwd, mut bwd, mut step, mut rec) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut per_step = Counters::default();
    let mut allocations = 0;
    for i in 0..iters.max(1) {
        // The training forward alone.
        let t0 = Instant::now();
        drop(rnn.forward_train(&x, None, None, None, None)?);
        sync()?;
        fwd.push(t0.elapsed().as_secs_f64() * 1e3);
        // The whole step, recorded then submitted.
        let c0 = counters();
        let a0 = b.allocations();
        let t0 = Instant::now();
        train_step(&mut rnn)?;
        let recorded = t0.elapsed().as_secs_f64() * 1e3;
        sync()?;
        let total = t0.elapsed().as_secs_f64() * 1e3;
        if i == 0 {
            per_step = counters().since(&c0);
            allocations = b.allocations() - a0;
        }
        step.push(total);
        rec.push(if ctx.is_some() { recorded } else { 0.0 });
        bwd.push(total - fwd[fwd.len() - 1]);
    }
    let step_ms = median(step);
    // What a training step holds: the parameters the passes read (and in
    // 16 bits their f32 master copy), the f32 gradients and Adam's two f32
    // states, the input and output gradient, and the stack's workspace.
    let f32_bytes = (n * F32_BYTES) as u64;
    let layer = |packed: bool| {
        let bytes = |t: &B::Tensor| {
            if packed {
                b.stored_bytes(t)
            } else {
                b.held_bytes(t)
            }
        };
        bytes(&weights) + bytes(&grads) + bytes(&x) + bytes(&dy) + rnn.workspace_bytes(packed)
    };
    let (layer_bytes, packed_layer_bytes) = (layer(false), layer(true));
    let master_and_adam = if precision.is_16bit() { f32_bytes } else { 0 } + 2 * f32_bytes;
    Ok(RnnBench {
        implementation: "rnn-wgpu".into(),
        backend: backend_name(b),
        device: device.into(),
        cell: shape.cell.name().into(),
        variant: shape.describe_variant(),
        input: shape.input,
        hidden: shape.hidden,
        batch: shape.batch,
        seq: shape.seq,
        layers: shape.layers,
        bidirectional: shape.bidirectional,
        forward_ms: median(fwd),
        backward_ms: median(bwd),
        step_ms,
        gflops: shape.step_flops() / (step_ms * 1e-3) / 1e9,
        record_ms: median(rec),
        dispatches_per_step: per_step.dispatches,
        recurrent_dispatches: per_step.step_dispatches,
        submits_per_step: per_step.submits,
        allocations_per_step: allocations,
        step_kernel: ctx
            .map(|c| c.step_kernel(bsz, shape.hidden).name().to_string())
            .unwrap_or_default(),
        step_order: if wavefront {
            StepOrder::Wavefront
        } else {
            StepOrder::Layers
        }
        .name()
        .into(),
        min_flops: shape.step_flops(),
        // (The parameter gradients are f32 in every mode.)
        min_bytes: shape.step_bytes(precision.bytes(), None)
            + (F32_BYTES - precision.bytes()) as u64 * n as u64,
        precision: precision.name().into(),
        memory_bytes: layer_bytes + master_and_adam,
        layer_bytes,
        packed_memory_bytes: packed_layer_bytes + master_and_adam,
        packed_layer_bytes,
        peak_tflops: None,
        peak_gbps: None,
        peak_source: None,
        launch_us: None,
        limit_ms: None,
        fraction_of_limit: None,
        bound: None,
    })
}

/// A kernel micro-benchmark result.
#[derive(Clone, Debug, Serialize)]
pub struct KernelBench {
    /// `matmul_nt` or `softmax_xent`.
    pub kernel: String,
    /// `gpu` or `cpu`.
    pub backend: String,
    /// The shape, in words.
    pub shape: String,
    /// Median time.
    pub ms: f64,
    /// GFLOP/s (matmul) or GB/s (cross-entropy).
    pub rate: f64,
    /// `GFLOP/s` or `GB/s`.
    pub unit: String,
}

/// Times `C = A·Bᵀ` of `(m, n, k)` on `b`.
pub fn bench_matmul<B: Backend>(
    b: &B,
    ctx: Option<&GpuContext>,
    (m, n, k): (usize, usize, usize),
    iters: usize,
) -> Result<KernelBench> {
    let g = Gemm::nt(m, n, k);
    let a = b.tensor_f64(&[m, k], &uniform(1, m * k, -1.0, 1.0))?;
    let w = b.tensor_f64(&[n, k], &uniform(2, n * k, -1.0, 1.0))?;
    let c = b.zeros(&[m, n])?;
    let times = time(ctx, iters, || b.gemm(&g, &a, &w, None, &c))?;
    let ms = median(times);
    Ok(KernelBench {
        kernel: "matmul_nt".into(),
        backend: backend_name(b),
        shape: format!("{m}x{n}x{k}"),
        ms,
        rate: g.flops() / (ms * 1e-3) / 1e9,
        unit: "GFLOP/s".into(),
    })
}

/// Times the fused cross-entropy with its gradient on `(rows, classes)`.
pub fn bench_xent<B: Backend>(
    b: &B,
    ctx: Option<&GpuContext>,
    (rows, cols): (usize, usize),
    iters: usize,
) -> Result<KernelBench> {
    let x = b.tensor_f64(&[rows, cols], &uniform(3, rows * cols, -3.0, 3.0))?;
    let t = b.ints(&[rows], &uniform_i32(4, rows, 0, cols as i32))?;
    let out = XentBuffers::new(b, rows)?;
    let dx = b.zeros(&[rows, cols])?;
    let times = time(ctx, iters, || {
        b.xent(
            Rows { rows, cols },
            &x,
            &t,
            IGNORE_INDEX,
            1.0,
            &out,
            Some(&dx),
        )
    })?;
    let ms = median(times);
    // Logits read twice, the gradient written once.
    let bytes = (rows * cols * 4 * 3) as f64;
    Ok(KernelBench {
        kernel: "softmax_xent".into(),
        backend: backend_name(b),
        shape: format!("{rows}x{cols}"),
        ms,
        rate: bytes / (ms * 1e-3) / 1e9,
        unit: "GB/s".into(),
    })
}

fn time(
    ctx: Option<&GpuContext>,
    iters: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    let sync = || sync(ctx);
    for _ in 0..2 {
        f()?;
        sync()?;
    }
    let mut out = Vec::new();
    for _ in 0..iters.max(1) {
        let t0 = Instant::now();
        f()?;
        sync()?;
        out.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cell::Nonlinearity;

    fn shape(cell: Cell, input: usize, hidden: usize, batch: usize, seq: usize) -> RnnShape {
        RnnShape {
            cell,
            input,
            hidden,
            batch,
            seq,
            layers: 1,
            bidirectional: false,
            variant: Variant::default(),
            skip: Skip::None,
        }
    }

    #[test]
    fn step_counts_of_a_tiny_lstm_by_hand() {
        // LSTM, I = 2, H = 3, B = 1, T = 2: G·H = 12.
        let s = shape(Cell::Lstm, 2, 3, 1, 2);
        // Forward 2·T·B·G·H·(I + H) = 2·2·1·12·5; the step three times that.
        assert_eq!(s.forward_flops(), 240.0);
        assert_eq!(s.step_flops(), 720.0);
        // N = 12·2 + 12·3 + 12 + 12 = 84; W_hh 36 more per further step in
        // each pass: 2·(84 + 36) read, 84 gradients written.
        let params = 2 * (84 + 36) + 84;
        // Per (step, row): forward x 2 + h 3 + c 3; backward x 2, h and c 6,
        // dy 3, dx 2.
        let seqs = 2 * (8 + 13);
        assert_eq!(s.step_bytes(4, None), 4 * (params + seqs));
        // Adam: parameters and gradients read, exp_avg and exp_avg_sq read
        // and written, parameters written.
        let adam = Optimizer::adam(1e-3);
        assert_eq!(
            s.step_bytes(4, Some(&adam)),
            4 * (params + seqs + 3 * 84 + 2 * 168)
        );
        // Plain SGD keeps no state.
        let sgd = Optimizer::sgd(0.1);
        assert_eq!(s.step_bytes(4, Some(&sgd)), 4 * (params + seqs + 3 * 84));
    }

    #[test]
    fn step_counts_of_a_residual_gru_stack_by_hand() {
        // 2 GRU layers, I = 1, H = 2, B = 2, T = 3, residual, 16-bit elements.
        let s = RnnShape {
            layers: 2,
            skip: Skip::Residual,
            ..shape(Cell::Gru, 1, 2, 2, 3)
        };
        // Layer 0: 2·T·B·G·H·(1 + 2) = 216; layer 1: 2·6·6·(2 + 2) = 288.
        assert_eq!(s.forward_flops(), 504.0);
        assert_eq!(s.step_flops(), 1512.0);
        // N = (6 + 12 + 12) + (12 + 12 + 12) = 66; W_hh 2·12 per further
        // step, two further steps, each pass.
        let params = 2 * (66 + 2 * 24) + 66;
        // Per (step, row): layer 0 forward x 1 + h 2, backward x 1 + h 2 +
        // dy 2 + dx 1; layer 1 forward x 2 + h 2 + mixed output 2, backward
        // x 2 + h 2 + dy 2 + dx 2.
        let seqs = 6 * (3 + 6 + 6 + 8);
        assert_eq!(s.step_bytes(2, None), 2 * (params + seqs));
    }

    #[test]
    fn step_bytes_of_a_bidirectional_projected_lstm() {
        // LSTM, I = 2, H = 3, P = 1, D = 2, B = 1, T = 2.
        let s = RnnShape {
            bidirectional: true,
            variant: Variant {
                proj_size: 1,
                ..Default::default()
            },
            ..shape(Cell::Lstm, 2, 3, 1, 2)
        };
        // Per direction: W_ih 24, W_hh 12, biases 24, W_hr 3: 63; N = 126.
        // Recurrent weights W_hh + W_hr = 15 per direction.
        let params = 2 * (126 + 2 * 15) + 126;
        // Per (step, row): forward x 2 + 2·(h 1 + c 3); backward x 2, the
        // same 8 saved, dy 2, dx 2.
        let seqs = 2 * (10 + 14);
        assert_eq!(s.step_bytes(4, None), 4 * (params + seqs));
        // A vanilla RNN saves h alone.
        let r = shape(Cell::Rnn(Nonlinearity::Tanh), 1, 1, 1, 1);
        // N = 1 + 1 + 2; T = 1: no re-reads. Forward x 1 + h 1, backward
        // x 1 + h 1 + dy 1 + dx 1.
        assert_eq!(r.step_bytes(4, None), 4 * (2 * 4 + 4 + 6));
    }

    #[test]
    fn the_longest_whole_word_pattern_names_the_peak() {
        let name = |adapter: &str| lookup_peak(adapter).map(|e| e.name);
        assert_eq!(name("NVIDIA H200"), Some("NVIDIA H200 SXM"));
        assert_eq!(name("NVIDIA H200 NVL"), Some("NVIDIA H200 NVL"));
        assert_eq!(name("NVIDIA H100 80GB HBM3"), Some("NVIDIA H100 SXM"));
        assert_eq!(name("NVIDIA H100 PCIe"), Some("NVIDIA H100 PCIe"));
        assert_eq!(name("nvidia h100 pcie/PCIe/SSE2"), Some("NVIDIA H100 PCIe"));
        assert_eq!(name("NVIDIA A100-SXM4-80GB"), Some("NVIDIA A100 SXM4 80GB"));
        assert_eq!(name("NVIDIA L4"), Some("NVIDIA L4"));
        assert_eq!(name("NVIDIA L40S"), None);
        assert_eq!(
            name("NVIDIA GeForce RTX 3080 Ti"),
            Some("NVIDIA GeForce RTX 3080 Ti")
        );
        assert_eq!(name("NVIDIA GeForce RTX 4090 Laptop GPU"), None);
        assert_eq!(
            name("AMD Radeon RX 7900 XTX (RADV NAVI31)"),
            Some("AMD Radeon RX 7900 XTX")
        );
        assert_eq!(name("AMD Radeon RX 7900 XT"), Some("AMD Radeon RX 7900 XT"));
        assert_eq!(name("AMD Radeon RX 7900 GRE"), None);
        assert_eq!(name("Apple M1"), Some("Apple M1 (8-core GPU)"));
        assert_eq!(name("Apple M2 Max"), Some("Apple M2 Max (38-core GPU)"));
        assert_eq!(name("Apple M10"), None);
        assert_eq!(name("llvmpipe (LLVM 15.0.7, 256 bits)"), None);
        let h200 = lookup_peak("NVIDIA H200").and_then(|e| e.peak);
        assert_eq!(
            h200,
            Some(Peak {
                tflops: 67.0,
                gbps: 4800.0
            })
        );
        // A row without figures keeps the base chip's from applying.
        let m3_max = lookup_peak("Apple M3 Max").unwrap();
        assert_eq!((m3_max.name, m3_max.peak), ("Apple M3 Max", None));
        // Every pattern is found in its own name and wins there.
        for e in PEAKS {
            assert_eq!(lookup_peak(e.pattern), Some(e), "{}", e.pattern);
            if let Some(p) = e.peak {
                assert!(p.tflops > 0.0 && p.gbps > 0.0, "{}", e.pattern);
            }
        }
    }

    #[test]
    fn the_largest_bound_binds() {
        let peak = Peak {
            tflops: 1.0,
            gbps: 1.0,
        };
        // 2e9 FLOPs at 1 TFLOP/s: 2 ms; 1e6 bytes at 1 GB/s: 1 ms; 100
        // launches of 5 µs: 0.5 ms.
        let r = roofline(2e9, 1_000_000, 100, peak, 5.0, 4.0);
        assert_eq!(r.bound, Bound::Arithmetic);
        assert!((r.limit_ms - 2.0).abs() < 1e-12, "{r:?}");
        assert!((r.fraction - 0.5).abs() < 1e-12, "{r:?}");
        let r = roofline(2e9, 3_000_000, 100, peak, 5.0, 4.0);
        assert_eq!(r.bound, Bound::Bandwidth);
        assert!((r.limit_ms - 3.0).abs() < 1e-12, "{r:?}");
        let r = roofline(2e9, 3_000_000, 1000, peak, 5.0, 4.0);
        assert_eq!(r.bound, Bound::Launches);
        assert!((r.limit_ms - 5.0).abs() < 1e-12, "{r:?}");
        assert!((r.fraction - 1.25).abs() < 1e-12, "{r:?}");
        // No launches (the CPU path): the other two decide.
        let r = roofline(1e9, 2_000_000, 0, peak, 5.0, 4.0);
        assert_eq!(r.bound, Bound::Bandwidth);
        // A tie goes to the first of arithmetic, bandwidth, launches.
        let r = roofline(1e9, 1_000_000, 200, peak, 5.0, 4.0);
        assert_eq!(r.bound, Bound::Arithmetic);
        assert_eq!(
            serde_json::to_string(&Bound::Launches).unwrap(),
            format!("\"{}\"", Bound::Launches.name())
        );
    }
}
