//! The `rnn-wgpu` command line.
//!
//! No flag is ever silently ignored: a flag typed where it would have no
//! effect (another task's option, a model setting with `--resume`, a size for
//! `bench` without `--cell`, …) is refused with one line naming it and saying
//! why. The rules are the tables `TRAIN_UNUSED`, `SAMPLE_UNUSED`,
//! `BENCH_UNUSED` (and `BENCH_ON_UNUSED`, once the backend is chosen) and
//! `GRADCHECK_UNUSED`, checked by `refuse_unused` against
//! what was typed (clap's `ValueSource::CommandLine`), so defaults never trip them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use rnn_wgpu::Precision;
use rnn_wgpu::backend::{BackendChoice, GpuBackend};
use rnn_wgpu::eval::{EvalOptions, run as run_eval};
use rnn_wgpu::gpu::{GpuContext, list_adapters};
use rnn_wgpu::gradcheck::GradCheck;
use rnn_wgpu::nn::case::{RnnCase, check_case_gradients};
use rnn_wgpu::nn::model::{Init, InputEncoding, ModelConfig};
use rnn_wgpu::nn::{RnnConfig, StepOrder};
use rnn_wgpu::ops::cell::{Act, Activations, Cell, Nonlinearity, Variant};
use rnn_wgpu::ops::matmul::GemmKernel;
use rnn_wgpu::ops::optim::Optimizer;
use rnn_wgpu::ops::skip::Skip;
use rnn_wgpu::train::run::{Existing, PlotPath, RunOptions, run as run_training};
use rnn_wgpu::train::sample::{SampleOptions, sample};
use rnn_wgpu::train::schedule::Schedule;
use rnn_wgpu::train::tasks::TaskSpec;
use rnn_wgpu::train::{Bptt, NonFinite, TrainConfig};

#[derive(Parser)]
#[command(
    name = "rnn-wgpu",
    version,
    about = "Recurrent networks on any GPU through wgpu"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Auto,
    Gpu,
    Cpu,
    Cpu64,
}

impl From<BackendArg> for BackendChoice {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Gpu => BackendChoice::Gpu,
            BackendArg::Cpu => BackendChoice::Cpu,
            BackendArg::Cpu64 => BackendChoice::Cpu64,
        }
    }
}

/// `--precision`: how tensors are stored (arithmetic is f32 in every mode).
#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum PrecisionArg {
    F32,
    F16,
    Bf16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::F16 => Precision::F16,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum NonlinearityArg {
    Tanh,
    Relu,
    Sigmoid,
}

/// The cell options of ONNX's operators that a state_dict's names cannot
/// show (`train`, `eval`, `gradcheck`, `bench`).
#[derive(clap::Args, Clone, Debug, Default)]
struct CellOptionArgs {
    /// LSTM with coupled input and forget gates, f = 1 − i (ONNX input_forget).
    #[arg(long)]
    coupled: bool,
    /// Clip every gate's pre-activation (and the LSTM's c where h(c) reads it)
    /// to [−X, X] (ONNX clip).
    #[arg(long, value_name = "X")]
    cell_clip: Option<f32>,
    /// The gated cells' activations f,g[,h] from sigmoid, tanh, relu (ONNX
    /// activations; default sigmoid,tanh,tanh).
    #[arg(long, value_name = "F,G[,H]")]
    activations: Option<String>,
    /// GRU with the reset gate applied before the recurrent product (ONNX
    /// linear_before_reset = 0, Keras reset_after = False).
    #[arg(long)]
    reset_before: bool,
}

impl CellOptionArgs {
    /// The variant these flags ask for (with `stack`'s peepholes and
    /// projection) for `hidden` units of `cell`.
    fn variant(&self, cell: Cell, hidden: usize, stack: &StackArgs) -> rnn_wgpu::Result<Variant> {
        let v = || -> rnn_wgpu::Result<Variant> {
            let v = Variant {
                peepholes: stack.peepholes,
                proj_size: stack.proj_size,
                coupled: self.coupled,
                cell_clip: self.cell_clip,
                activations: match &self.activations {
                    Some(list) => Activations::parse(cell, list)?,
                    None => Activations::default(),
                },
                reset_before: self.reset_before,
            };
            v.validate(cell)?;
            v.check_proj(hidden)?;
            Ok(v)
        };
        v().map_err(|e| match e {
            // Name the flag the way it was typed.
            rnn_wgpu::Error::InvalidArgument { arg, reason } => rnn_wgpu::Error::InvalidArgument {
                arg: flag(&arg),
                reason,
            },
            e => e,
        })
    }
}

/// Peepholes and skip connections (`train`, `gradcheck`, `bench`; `eval`
/// infers them from the weights' names).
#[derive(clap::Args, Clone, Debug, Default)]
struct StackArgs {
    /// LSTM with peepholes: i and f see c_{t−1}, o sees c_t (ONNX P).
    #[arg(long)]
    peepholes: bool,
    /// LSTM with a projection of P < H units: h = W_hr (o ⊙ tanh c)
    /// (PyTorch's proj_size; 0: none).
    #[arg(long, default_value_t = 0, value_name = "P")]
    proj_size: usize,
    /// Residual connections between stacked layers: y = out + x.
    #[arg(long, conflicts_with = "highway")]
    residual: bool,
    /// Highway connections between stacked layers: y = T·out + (1 − T)·x.
    #[arg(long)]
    highway: bool,
}

impl StackArgs {
    /// The skip connections of a stack of `layers` layers.
    fn skip(&self, layers: usize) -> rnn_wgpu::Result<Skip> {
        let (skip, flag) = match (self.residual, self.highway) {
            (true, _) => (Skip::Residual, "--residual"),
            (_, true) => (Skip::Highway, "--highway"),
            _ => return Ok(Skip::None),
        };
        if layers < 2 {
            return Err(rnn_wgpu::Error::invalid(
                flag,
                format!("joins stacked layers; give --layers 2 or more (this stack has {layers})"),
            ));
        }
        Ok(skip)
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum TaskArg {
    Add,
    Copy,
    Text,
    Xml,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum ModelCell {
    Lstm,
    Gru,
    RnnTanh,
    RnnRelu,
    RnnSigmoid,
}

impl From<ModelCell> for Cell {
    fn from(c: ModelCell) -> Self {
        match c {
            ModelCell::Lstm => Cell::Lstm,
            ModelCell::Gru => Cell::Gru,
            ModelCell::RnnTanh => Cell::Rnn(Nonlinearity::Tanh),
            ModelCell::RnnRelu => Cell::Rnn(Nonlinearity::Relu),
            ModelCell::RnnSigmoid => Cell::Rnn(Nonlinearity::Sigmoid),
        }
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum OptimArg {
    Sgd,
    Momentum,
    Nesterov,
    Adagrad,
    Rmsprop,
    Adam,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum NonFiniteArg {
    Error,
    Skip,
}

/// Flags of `train`.
#[derive(clap::Args)]
struct TrainArgs {
    /// add: "123+456=579"; copy: reproduce a random string; text: a character
    /// model of --text FILE; xml: a character model of generated XML
    /// documents, `<a id="3"><em>xy</em></a>` [default: text with --text,
    /// else add].
    #[arg(long, value_enum)]
    task: Option<TaskArg>,
    /// The UTF-8 file of the text task (implies --task text).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Most digits per operand (add).
    #[arg(long, default_value_t = 3)]
    digits: usize,
    /// Write each sum least-significant digit first, `123+456=975`, the
    /// order a carry is computed in (add; the default: `--reverse-answer
    /// false` writes sums as usual).
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    reverse_answer: bool,
    /// Longest string (copy).
    #[arg(long, default_value_t = 10)]
    copy_length: usize,
    /// Alphabet size (copy).
    #[arg(long, default_value_t = 8)]
    symbols: usize,
    /// Window length T (text).
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Deepest nesting of elements, the root alone being 1 (xml).
    #[arg(long, default_value_t = 4)]
    xml_depth: usize,
    /// Longest document in characters, its final newline included (xml).
    #[arg(long, default_value_t = 60)]
    xml_length: usize,
    /// Cell type.
    #[arg(long, value_enum, default_value = "lstm")]
    cell: ModelCell,
    /// Hidden size H.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Layers L.
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Embedding width; 0 feeds one-hot vectors.
    #[arg(long, default_value_t = 16)]
    embed: usize,
    /// Dropout between layers and before the decoder.
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Weight initialization: uniform (PyTorch's), xavier or he.
    #[arg(long, default_value = "uniform")]
    init: String,
    /// Initial LSTM forget-gate bias (LSTM only).
    #[arg(long, default_value_t = 1.0)]
    forget_bias: f32,
    #[command(flatten)]
    cell_options: CellOptionArgs,
    #[command(flatten)]
    stack: StackArgs,
    /// Batch B.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Truncated BPTT: update every K steps (default: full BPTT).
    #[arg(long)]
    bptt: Option<usize>,
    /// Truncated BPTT: backpropagate K2 >= K steps (default K).
    #[arg(long)]
    bptt_k2: Option<usize>,
    /// Training steps (default 5000; with --resume, the checkpoint's total,
    /// and a larger value trains further).
    #[arg(long)]
    steps: Option<u64>,
    /// Optimizer (PyTorch's rules and defaults; momentum/nesterov use 0.9).
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimArg,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.005)]
    lr: f32,
    /// Learning-rate schedule: constant, step[:every[:gamma]], cosine[:min_lr].
    #[arg(long, default_value = "cosine:0.0002")]
    schedule: String,
    /// Clip the global gradient norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    /// Seed of parameters, data and dropout.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// auto: a hardware GPU if there is one, else the CPU path.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Checkpoint file. A new run refuses an existing one (see --resume,
    /// --overwrite). Default runs/<task>.safetensors, or the first free
    /// runs/<task>-N.safetensors when that exists.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Let a new run replace an existing --checkpoint file (or the default
    /// runs/<task>.safetensors instead of numbering).
    #[arg(long)]
    overwrite: bool,
    /// Steps between checkpoints (0: only at the end).
    #[arg(long, default_value_t = 500)]
    save_every: u64,
    /// Continue the run saved in --checkpoint, with its configuration.
    #[arg(long)]
    resume: bool,
    /// Loss-curve SVG (default <checkpoint>-loss.svg beside the checkpoint).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Steps between held-out evaluations (default: a tenth of the run).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Held-out problems per evaluation.
    #[arg(long, default_value_t = 1000)]
    eval_problems: usize,
    /// Stop after this many seconds (the final evaluation still runs).
    #[arg(long)]
    time_limit: Option<f64>,
    /// On a NaN or infinite gradient norm: stop with an error, or skip the update.
    #[arg(long, value_enum, default_value = "error")]
    non_finite: NonFiniteArg,
    /// Storage precision: f32, or 16-bit storage (f16, bf16) of weights,
    /// activations, states and gates with f32 arithmetic (f16 trains with dynamic loss scaling; checkpoints stay f32).
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionArg,
    /// Print one final JSON line on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum StepOrderArg {
    Auto,
    Layers,
    Wavefront,
}

impl From<StepOrderArg> for StepOrder {
    fn from(s: StepOrderArg) -> Self {
        match s {
            StepOrderArg::Auto => StepOrder::Auto,
            StepOrderArg::Layers => StepOrder::Layers,
            StepOrderArg::Wavefront => StepOrder::Wavefront,
        }
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum TableArg {
    Gpu,
    Cpu,
    Stack,
    Half,
    Small,
}

/// Flags of `bench`.
#[derive(clap::Args)]
struct BenchArgs {
    /// Where to run (auto: a hardware GPU, else the CPU path).
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Shape table from benches/shapes.json (default: gpu on a hardware GPU,
    /// cpu on the CPU path, small on a software adapter; stack: two-layer
    /// stacks, for --step-order; half: the shapes of the 16-bit comparison,
    /// for --precision).
    #[arg(long, value_enum)]
    table: Option<TableArg>,
    /// One shape instead of a table: cell (with --input, --hidden, --batch, --seq).
    #[arg(long, value_enum)]
    cell: Option<ModelCell>,
    /// Input size I.
    #[arg(long, default_value_t = 512)]
    input: usize,
    /// Hidden size H.
    #[arg(long, default_value_t = 512)]
    hidden: usize,
    /// Batch B.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Sequence length T.
    #[arg(long, default_value_t = 50)]
    seq: usize,
    /// Layers L.
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Two directions (with --cell).
    #[arg(long)]
    bidirectional: bool,
    /// Timed iterations per shape (the median is reported).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// How the passes order the layers' steps: auto (a wavefront where it
    /// runs and pays), layers, or wavefront (an error on a stack it cannot run).
    #[arg(long, value_enum, default_value = "auto")]
    step_order: StepOrderArg,
    /// Also run the matmul and cross-entropy micro-benchmarks.
    #[arg(long)]
    kernels: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// The device's peak fp32 rate in TFLOP/s for the roofline, with
    /// --peak-gbps (default: the built-in table by adapter name).
    #[arg(long, value_name = "TFLOPS")]
    peak_tflops: Option<f64>,
    /// The device's peak memory bandwidth in GB/s for the roofline, with
    /// --peak-tflops.
    #[arg(long, value_name = "GBPS")]
    peak_gbps: Option<f64>,
    /// The roofline's cost of one dependent dispatch, in µs (GPU).
    #[arg(long, default_value_t = rnn_wgpu::bench::LAUNCH_US, value_name = "US")]
    launch_us: f64,
    /// Storage precision of the recurrent shapes: f32, or 16-bit storage
    /// (f16, bf16) of weights, activations, states and gates with f32
    /// arithmetic (the --kernels micro-benchmarks run in f32).
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionArg,
    #[command(flatten)]
    cell_options: CellOptionArgs,
    #[command(flatten)]
    stack: StackArgs,
}

/// Flags of `sample`.
#[derive(clap::Args)]
struct SampleArgs {
    /// A checkpoint written by train.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to start from (default: a held-out problem for add/copy, the
    /// vocabulary's first character for text, `<` for xml).
    #[arg(long)]
    prompt: Option<String>,
    /// 0 for greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Most characters to generate.
    #[arg(long, default_value_t = 200)]
    length: usize,
    /// Seed of the sampling at a temperature above 0, and of the held-out
    /// problem picked when --prompt is left out (add/copy).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to run (auto: a hardware GPU, else the CPU).
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Storage precision: f32, or 16-bit storage (f16, bf16) of weights,
    /// activations, states and gates with f32 arithmetic (the checkpoint's f32 weights are rounded).
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionArg,
}

/// Flags of `gradcheck`.
#[derive(clap::Args)]
struct GradcheckArgs {
    /// Cell type.
    #[arg(long, value_enum, default_value = "all")]
    cell: CellArg,
    /// Input size I.
    #[arg(long, default_value_t = 3)]
    input: usize,
    /// Hidden size H.
    #[arg(long, default_value_t = 4)]
    hidden: usize,
    /// Layers L.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Bidirectional.
    #[arg(long)]
    bidirectional: bool,
    /// Sequence length T.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Batch B.
    #[arg(long, default_value_t = 3)]
    batch: usize,
    /// Give the rows varied lengths (packed sequences).
    #[arg(long)]
    lengths: bool,
    /// Seed of parameters and inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    cell_options: CellOptionArgs,
    #[command(flatten)]
    stack: StackArgs,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum CellArg {
    Lstm,
    Gru,
    RnnTanh,
    RnnRelu,
    RnnSigmoid,
    All,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the GPU adapters wgpu can see.
    Adapters,
    /// List adapters and check every kernel, cell and a training step on the
    /// chosen adapter against the CPU path (a pass/fail table).
    #[command(alias = "selfcheck")]
    Doctor {
        /// Storage precision: f32, or 16-bit storage (f16, bf16) of weights,
        /// activations, states and gates with f32 arithmetic.
        /// With f16 or bf16: the 16-bit checks instead of the f32 ones.
        #[arg(long, value_enum, default_value = "f32")]
        precision: PrecisionArg,
    },
    /// Run a PyTorch nn.LSTM / nn.GRU / nn.RNN state_dict, or an ONNX model of
    /// LSTM / GRU / RNN nodes, on inputs from a safetensors file.
    Eval {
        /// The module's state_dict, saved with safetensors (f32).
        #[arg(long, required_unless_present = "onnx", conflicts_with = "onnx")]
        weights: Option<PathBuf>,
        /// An ONNX model of LSTM / GRU / RNN nodes (and the shape glue that
        /// torch.onnx.export writes around them); forward only.
        #[arg(long)]
        onnx: Option<PathBuf>,
        /// `input` [T, B, I]; optional `h0`, `c0`, `lengths`, and with --backward
        /// `grad_output`, `grad_hn`, `grad_cn`.
        #[arg(long)]
        inputs: PathBuf,
        /// Where to write `output`, `hn`, `cn` (and the gradients with --backward).
        #[arg(long)]
        out: PathBuf,
        /// auto: a hardware GPU, else the CPU path; cpu64 computes in f64.
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendArg,
        /// Also compute the gradients of input, initial states and every parameter.
        #[arg(long)]
        backward: bool,
        /// Nonlinearity of nn.RNN weights (default tanh).
        #[arg(long, value_enum)]
        nonlinearity: Option<NonlinearityArg>,
        #[command(flatten)]
        cell_options: CellOptionArgs,
        /// Residual connections between the layers (highway ones are read
        /// off weight_t_l{k}; peepholes off weight_p_l{k}).
        #[arg(long)]
        residual: bool,
        /// Storage precision: f32, or 16-bit storage (f16, bf16) of weights,
        /// activations, states and gates with f32 arithmetic. The
        /// weights and inputs are rounded to it, as torch.autocast casts them.
        /// With --onnx it applies to the recurrent nodes.
        #[arg(long, value_enum, default_value = "f32")]
        precision: PrecisionArg,
    },
    /// Train a sequence model (the main job; defaults: the add task).
    ///
    /// Under `mpirun -n N` (a build with the `mpi` feature) the N ranks train
    /// one model data-parallel: each takes its share of every batch and the
    /// ranks sum their gradients; rank 0 alone prints, evaluates and saves.
    #[command(args_override_self = true, allow_negative_numbers = true)]
    Train(Box<TrainArgs>),
    /// Generate from a checkpoint, e.g. complete "123+456=".
    #[command(allow_negative_numbers = true)]
    Sample(SampleArgs),
    /// Time forward, backward and whole training steps of recurrent layers
    /// (and matmul / cross-entropy micro-benchmarks).
    Bench(BenchArgs),
    /// Check every gradient of a recurrent stack against finite differences (CPU, f64).
    Gradcheck(GradcheckArgs),
    /// Write a checkpoint's recurrent stack as an ONNX model (LSTM / GRU / RNN
    /// nodes, opset 14) that onnxruntime and `eval --onnx` run.
    Export {
        /// A checkpoint written by train.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Where to write the model.
        #[arg(long)]
        onnx: PathBuf,
        /// Give the model graph inputs h0 (and c0) [L·D, B, H]; without, the
        /// states start at zero.
        #[arg(long)]
        states: bool,
        /// Replace the file at --onnx if there is one.
        #[arg(long)]
        overwrite: bool,
    },
}

/// Whether the flag with clap id `id` was typed (not a default).
fn given(m: &ArgMatches, id: &str) -> bool {
    m.value_source(id) == Some(ValueSource::CommandLine)
}

/// The flag of a clap id: `copy_length` → `--copy-length`.
fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// The command-line name of a value: `ModelCell::RnnTanh` → `rnn-tanh`.
fn value_name<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_string())
}

/// One rule of a "no flag without effect" table: when `ignored` gives a
/// reason for the parsed arguments, typing any of the flags `ids` (clap ids:
/// the field names) is an error naming the flag and giving the reason.
struct Unused<A> {
    ids: &'static [&'static str],
    ignored: fn(&A) -> Option<String>,
}

/// Refuses the first typed flag that a rule of `rules` says would have no effect.
fn refuse_unused<A>(m: &ArgMatches, args: &A, rules: &[Unused<A>]) -> rnn_wgpu::Result<()> {
    for rule in rules {
        for id in rule.ids {
            if given(m, id)
                && let Some(why) = (rule.ignored)(args)
            {
                return Err(rnn_wgpu::Error::invalid(flag(id), why));
            }
        }
    }
    Ok(())
}

/// Flags of `train` that define the run: a resumed run takes them all from
/// its checkpoint.
const RUN_DEFINING: &[&str] = &[
    "task",
    "text",
    "digits",
    "reverse_answer",
    "copy_length",
    "symbols",
    "seq_len",
    "xml_depth",
    "xml_length",
    "cell",
    "hidden",
    "layers",
    "embed",
    "dropout",
    "init",
    "forget_bias",
    "coupled",
    "cell_clip",
    "activations",
    "reset_before",
    "peepholes",
    "proj_size",
    "residual",
    "highway",
    "batch",
    "bptt",
    "bptt_k2",
    "optimizer",
    "lr",
    "schedule",
    "clip",
    "seed",
    "eval_problems",
    "non_finite",
    "precision",
];

/// Flags of `train` that act on a resumed run too (`--steps` trains on to a
/// new total).
#[cfg(test)]
const RESUME_APPLIES: &[&str] = &[
    "steps",
    "backend",
    "checkpoint",
    "save_every",
    "resume",
    "plot",
    "eval_every",
    "time_limit",
    "json",
];

impl TrainArgs {
    /// The task: `--task`, else text when `--text` is given, else add.
    fn task(&self) -> TaskArg {
        self.task.unwrap_or(if self.text.is_some() {
            TaskArg::Text
        } else {
            TaskArg::Add
        })
    }

    /// A reason when the task is not `want`.
    fn other_task(&self, want: TaskArg) -> Option<String> {
        let task = self.task();
        (task != want).then(|| {
            format!(
                "applies to --task {} only; this run's task is {}",
                value_name(&want),
                value_name(&task)
            )
        })
    }
}

/// `train`: flags that would have no effect.
const TRAIN_UNUSED: &[Unused<TrainArgs>] = &[
    Unused {
        ids: RUN_DEFINING,
        ignored: |a| {
            a.resume
                .then(|| "has no effect with --resume: the checkpoint's value is used".into())
        },
    },
    Unused {
        ids: &["overwrite"],
        ignored: |a| {
            a.resume.then(|| {
                "has no effect with --resume, which continues its checkpoint and writes it back"
                    .into()
            })
        },
    },
    Unused {
        ids: &["text"],
        ignored: |a| match a.task {
            Some(t) if t != TaskArg::Text => Some(format!(
                "is the text task's file, and --task {} does not read it \
                 (leave out --task, or give --task text)",
                value_name(&t)
            )),
            _ => None,
        },
    },
    Unused {
        ids: &["digits", "reverse_answer"],
        ignored: |a| a.other_task(TaskArg::Add),
    },
    Unused {
        ids: &["copy_length", "symbols"],
        ignored: |a| a.other_task(TaskArg::Copy),
    },
    Unused {
        ids: &["seq_len"],
        ignored: |a| a.other_task(TaskArg::Text),
    },
    Unused {
        ids: &["xml_depth", "xml_length"],
        ignored: |a| a.other_task(TaskArg::Xml),
    },
    Unused {
        ids: &["forget_bias"],
        ignored: |a| {
            (a.cell != ModelCell::Lstm).then(|| {
                format!(
                    "applies to LSTM cells only; --cell is {}",
                    value_name(&a.cell)
                )
            })
        },
    },
    Unused {
        ids: &["forget_bias"],
        ignored: |a| {
            a.cell_options
                .coupled
                .then(|| "has no effect with --coupled, whose forget gate is 1 − i".into())
        },
    },
    Unused {
        ids: &["bptt_k2"],
        ignored: |a| a.bptt.is_none().then(|| "needs --bptt K".into()),
    },
];

/// What `sample`'s rules look at: the flags, and once the checkpoint is
/// read, its task's name and whether it has answers (add, copy) or starts
/// from a fixed prompt (text, xml).
struct SampleCtx {
    temperature: f32,
    prompt: bool,
    answers: Option<bool>,
    task: &'static str,
}

/// `sample`: flags that would have no effect.
const SAMPLE_UNUSED: &[Unused<SampleCtx>] = &[Unused {
    ids: &["seed"],
    ignored: |c| {
        if c.temperature != 0.0 {
            return None;
        }
        let start = if c.prompt {
            "--prompt is given".to_string()
        } else if c.answers == Some(false) {
            format!("{} models start from a fixed prompt", c.task)
        } else {
            return None;
        };
        Some(format!(
            "has no effect: --temperature 0 decodes greedily and {start} (the seed \
             matters above temperature 0, or for add/copy without --prompt)"
        ))
    },
}];

/// The flags of a stack's cell variant and skip connections
/// (`CellOptionArgs` and `StackArgs`).
const VARIANT_FLAGS: &[&str] = &[
    "coupled",
    "cell_clip",
    "activations",
    "reset_before",
    "peepholes",
    "proj_size",
    "residual",
    "highway",
];

/// `bench`: flags that would have no effect.
const BENCH_UNUSED: &[Unused<BenchArgs>] = &[
    Unused {
        ids: &["input", "hidden", "batch", "seq", "layers", "bidirectional"],
        ignored: |a| {
            a.cell.is_none().then(|| {
                "sizes the one shape benchmarked with --cell; without --cell the shape \
                 table runs (give --cell lstm|gru|rnn-tanh|rnn-relu)"
                    .into()
            })
        },
    },
    Unused {
        ids: VARIANT_FLAGS,
        ignored: |a| {
            a.cell.is_none().then(|| {
                "shapes the one stack benchmarked with --cell; the shape table runs \
                 PyTorch's cells"
                    .into()
            })
        },
    },
    Unused {
        ids: &["table"],
        ignored: |a| {
            a.cell.is_some().then(|| {
                "has no effect with --cell, which benchmarks one shape instead of a table".into()
            })
        },
    },
    Unused {
        ids: &["peak_tflops"],
        ignored: |a| {
            a.peak_gbps.is_none().then(|| {
                "needs --peak-gbps too: the roofline takes both peaks from the flags, or both \
                 from the table"
                    .into()
            })
        },
    },
    Unused {
        ids: &["peak_gbps"],
        ignored: |a| {
            a.peak_tflops.is_none().then(|| {
                "needs --peak-tflops too: the roofline takes both peaks from the flags, or both \
                 from the table"
                    .into()
            })
        },
    },
];

/// What `bench`'s rules look at once the backend is chosen.
struct BenchOn {
    /// The backend is a GPU (it launches dispatches).
    gpu: bool,
    /// The roofline has peaks (from the flags or the table).
    peak: bool,
    /// Why there are none, in words.
    no_peak: String,
}

/// `bench`: flags that would have no effect on the chosen backend.
const BENCH_ON_UNUSED: &[Unused<BenchOn>] = &[
    Unused {
        ids: &["launch_us"],
        ignored: |c| {
            (!c.gpu).then(|| {
                "has no effect on the CPU path, which launches no dispatches (its roofline's \
                 launch bound is 0)"
                    .into()
            })
        },
    },
    Unused {
        ids: &["launch_us"],
        ignored: |c| {
            (!c.peak).then(|| {
                format!(
                    "has no effect without a roofline: {}; pass --peak-tflops and --peak-gbps",
                    c.no_peak
                )
            })
        },
    },
];

/// `gradcheck`: flags that would have no effect.
const GRADCHECK_UNUSED: &[Unused<GradcheckArgs>] = &[Unused {
    ids: &["lengths"],
    // Row b gets length T - (b mod T): all T when B = 1 or T = 1.
    ignored: |a| {
        (a.batch == 1 || a.steps == 1).then(|| {
            "has no effect with --batch 1 or --steps 1: every row has the full length".into()
        })
    },
}];

/// The largest stack (parameters, or T·B) `gradcheck` accepts.
const GRADCHECK_MAX: usize = 100_000;

fn gradcheck(a: GradcheckArgs, m: &ArgMatches) -> rnn_wgpu::Result<bool> {
    refuse_unused(m, &a, GRADCHECK_UNUSED)?;
    let GradcheckArgs {
        cell,
        input,
        hidden,
        layers,
        bidirectional,
        steps,
        batch,
        lengths,
        seed,
        cell_options,
        stack,
    } = a;
    let cells = match cell {
        CellArg::Lstm => vec![Cell::Lstm],
        CellArg::Gru => vec![Cell::Gru],
        CellArg::RnnTanh => vec![Cell::Rnn(Nonlinearity::Tanh)],
        CellArg::RnnRelu => vec![Cell::Rnn(Nonlinearity::Relu)],
        CellArg::RnnSigmoid => vec![Cell::Rnn(Nonlinearity::Sigmoid)],
        CellArg::All => Cell::ALL.to_vec(),
    };
    for (arg, v) in [("--steps", steps), ("--batch", batch)] {
        if v == 0 {
            return Err(rnn_wgpu::Error::invalid(arg, "must be at least 1"));
        }
    }
    let gc = GradCheck::default();
    let mut ok = true;
    // Every stack is built (and its flags checked) before any is checked.
    let mut configs = Vec::with_capacity(cells.len());
    for &cell in &cells {
        let variant = cell_options.variant(cell, hidden, &stack).map_err(|e| {
            if cells.len() > 1 {
                rnn_wgpu::Error::invalid(
                    "--cell",
                    format!(
                        "all includes cells these variant flags do not fit ({e}); name one cell"
                    ),
                )
            } else {
                e
            }
        })?;
        let cfg = RnnConfig::new(cell, input, hidden)
            .variant(variant)
            .layers(layers)
            .bidirectional(bidirectional)
            .skip(stack.skip(layers)?);
        cfg.validate()?;
        configs.push(cfg);
    }
    println!(
        "central differences, h = {:e}; pass when |analytic - numeric| <= {:e} + {:e}·max(|analytic|, |numeric|)",
        gc.h, gc.tol.abs, gc.tol.rel
    );

    for cfg in configs {
        // Finite differences cost two forwards per probe: keep it to small stacks.
        let params = cfg.layout().total;
        if params > GRADCHECK_MAX || steps.saturating_mul(batch) > GRADCHECK_MAX {
            return Err(rnn_wgpu::Error::invalid(
                "gradcheck",
                format!(
                    "is for small stacks: {params} parameters and T·B = {}; at most {GRADCHECK_MAX} each",
                    steps.saturating_mul(batch)
                ),
            ));
        }
        let mut case = RnnCase::new(cfg, steps, batch, seed).with_states();
        if lengths {
            let l = (0..batch).map(|b| (steps - (b % steps)) as i32).collect();
            case = case.with_lengths(l);
        }
        println!("\n{}", case.describe());
        for (name, r) in check_case_gradients(&case, &gc, 64)? {
            match r {
                Ok(c) => println!(
                    "  {name:<28} {:>4} probes  max rel {:.2e}  pass",
                    c.n, c.max_rel
                ),
                Err(m) => {
                    ok = false;
                    println!("  {name:<28} FAIL\n{m}");
                }
            }
        }
    }
    Ok(ok)
}

fn train(a: TrainArgs, m: &ArgMatches) -> rnn_wgpu::Result<bool> {
    refuse_unused(m, &a, TRAIN_UNUSED)?;
    if a.resume && a.checkpoint.is_none() {
        return Err(rnn_wgpu::Error::invalid(
            "--resume",
            "needs --checkpoint PATH, the run to continue",
        ));
    }
    let task = match a.task() {
        TaskArg::Add => TaskSpec::Add {
            digits: a.digits,
            reverse_answer: a.reverse_answer,
        },
        TaskArg::Copy => TaskSpec::Copy {
            length: a.copy_length,
            symbols: a.symbols,
        },
        TaskArg::Xml => TaskSpec::Xml {
            depth: a.xml_depth,
            length: a.xml_length,
        },
        TaskArg::Text => TaskSpec::Text {
            path: a.text.clone().ok_or_else(|| {
                rnn_wgpu::Error::invalid("--text", "the text task needs --text FILE")
            })?,
            seq_len: a.seq_len,
        },
    };
    let name = task.name();
    let steps = a.steps.unwrap_or(5000);
    let optimizer = match a.optimizer {
        OptimArg::Sgd => Optimizer::sgd(a.lr),
        OptimArg::Momentum => Optimizer::momentum(a.lr, 0.9, false),
        OptimArg::Nesterov => Optimizer::momentum(a.lr, 0.9, true),
        OptimArg::Adagrad => Optimizer::adagrad(a.lr),
        OptimArg::Rmsprop => Optimizer::rmsprop(a.lr),
        OptimArg::Adam => Optimizer::adam(a.lr),
    };
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        return Err(rnn_wgpu::Error::invalid(
            "--lr",
            format!("{} must be a positive number", a.lr),
        ));
    }
    if !(a.clip >= 0.0 && a.clip.is_finite()) {
        return Err(rnn_wgpu::Error::invalid(
            "--clip",
            format!("{} must be a positive number (0 disables clipping)", a.clip),
        ));
    }
    let bptt = match (a.bptt, a.bptt_k2) {
        (None, None) => Bptt::Full,
        (Some(k), k2) => Bptt::Truncated {
            k1: k,
            k2: k2.unwrap_or(k),
        },
        (None, Some(_)) => return Err(rnn_wgpu::Error::invalid("--bptt-k2", "needs --bptt K")),
    };
    let config = TrainConfig {
        task,
        model: ModelConfig {
            vocab: 0,
            input: if a.embed == 0 {
                InputEncoding::OneHot
            } else {
                InputEncoding::Embedding(a.embed)
            },
            cell: a.cell.into(),
            hidden: a.hidden,
            layers: a.layers,
            dropout: a.dropout,
            forget_bias: a.forget_bias,
            init: Init::parse(&a.init)?,
            variant: a.cell_options.variant(a.cell.into(), a.hidden, &a.stack)?,
            skip: a.stack.skip(a.layers)?,
        },
        batch: a.batch,
        steps,
        bptt,
        optimizer,
        schedule: Schedule::parse(&a.schedule, steps)?,
        clip: (a.clip > 0.0).then_some(a.clip),
        seed: a.seed,
        non_finite: match a.non_finite {
            NonFiniteArg::Error => NonFinite::Error,
            NonFiniteArg::Skip => NonFinite::Skip,
        },
        eval_problems: a.eval_problems,
        precision: a.precision.into(),
    };
    // An explicit checkpoint that exists is another run's: refused unless
    // --resume or --overwrite. The default one is numbered instead.
    let (checkpoint, existing) = match a.checkpoint {
        Some(p) => (p, Existing::Refuse),
        None => {
            std::fs::create_dir_all("runs").map_err(|e| rnn_wgpu::Error::io("runs", e))?;
            (
                PathBuf::from("runs").join(format!("{name}.safetensors")),
                Existing::Number,
            )
        }
    };
    let opts = RunOptions {
        config,
        backend: a.backend.into(),
        checkpoint: Some(checkpoint),
        existing: if a.overwrite {
            Existing::Overwrite
        } else {
            existing
        },
        save_every: a.save_every,
        resume: a.resume,
        plot: a.plot.map_or(PlotPath::BesideCheckpoint, PlotPath::At),
        eval_every: a.eval_every,
        extend_to: a.steps,
        time_limit: a.time_limit,
        progress: true,
        stop: Some(stop_on_ctrl_c()),
        comm: None,
        local_rank: None,
        overlap: overlap_from_env()?,
    };
    let summary = run_data_parallel(opts)?;
    if summary.rank != 0 {
        // Rank 0's exit status is the job's: a launcher ends the job at the
        // first non-zero exit, which must not cut rank 0's last lines short.
        return Ok(true);
    }
    let summary = summary.summary;
    let closing = summary.closing_accuracy.map_or_else(String::new, |c| {
        format!(", closing tags {:.1} %", 100.0 * c)
    });
    eprintln!(
        "done: {} steps in {:.1} s ({:.0} tokens/s), final loss {:.4}, held-out accuracy {:.1} %{closing}",
        summary.steps,
        summary.seconds,
        summary.tokens_per_second,
        summary.final_loss,
        100.0 * summary.accuracy
    );
    if a.json {
        println!("{}", json_line(&summary)?);
    }
    // Stopped by Ctrl-C: saved, but not the run that was asked for.
    Ok(!summary.interrupted)
}

/// `RNN_WGPU_OVERLAP`: `1`/`on` (the default) sums each bucket of a
/// data-parallel run's gradients while the backward goes on, `0`/`off`
/// after it.
fn overlap_from_env() -> rnn_wgpu::Result<bool> {
    match std::env::var("RNN_WGPU_OVERLAP") {
        Err(_) => Ok(true),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "1" | "on" | "true" => Ok(true),
            "0" | "off" | "false" => Ok(false),
            other => Err(rnn_wgpu::Error::invalid(
                "RNN_WGPU_OVERLAP",
                format!("{other:?}: expected 1/on or 0/off"),
            )),
        },
    }
}

/// A run's summary and the rank that made it.
struct RankSummary {
    rank: usize,
    summary: rnn_wgpu::train::run::RunSummary,
}

/// Runs `opts` alone, or, when an MPI launcher started this process among
/// others, as one rank of a data-parallel run. A rank that fails ends the
/// whole job at once (no rank waits for a peer that is gone).
#[cfg(feature = "mpi")]
fn run_data_parallel(mut opts: RunOptions) -> rnn_wgpu::Result<RankSummary> {
    use rnn_wgpu::train::dist::{Collective, launched_world_size};
    use rnn_wgpu::train::mpi::MpiWorld;
    if launched_world_size().is_none_or(|n| n <= 1) {
        return run_alone(&opts);
    }
    let world = Arc::new(MpiWorld::init()?);
    let rank = world.rank();
    opts.local_rank = Some(world.local_rank());
    opts.comm = Some(world.clone());
    match run_training(&opts, &mut |line| eprintln!("{line}")) {
        Ok(summary) => Ok(RankSummary { rank, summary }),
        Err(e) => {
            eprintln!("error: rank {rank} of {}: {e}", world.size());
            world.abort(1)
        }
    }
}

/// Runs `opts` alone; refuses to when an MPI launcher started this process
/// among others (each would train alone and write the same files).
#[cfg(not(feature = "mpi"))]
fn run_data_parallel(opts: RunOptions) -> rnn_wgpu::Result<RankSummary> {
    if let Some(n) = rnn_wgpu::train::dist::launched_world_size().filter(|&n| n > 1) {
        return Err(rnn_wgpu::Error::invalid(
            "mpirun",
            format!(
                "this rnn-wgpu was built without MPI, so its {n} processes would each train \
                 alone; build it with `cargo build --release --features mpi` (needs \
                 openmpi-bin libopenmpi-dev libclang-dev)"
            ),
        ));
    }
    run_alone(&opts)
}

/// Runs `opts` in this process alone, logging to stderr.
fn run_alone(opts: &RunOptions) -> rnn_wgpu::Result<RankSummary> {
    let summary = run_training(opts, &mut |line| eprintln!("{line}"))?;
    Ok(RankSummary { rank: 0, summary })
}

/// A flag the first Ctrl-C (SIGINT) sets, so that training stops after its
/// current step and saves; a second one ends the process at once (the last
/// checkpoint written is intact: checkpoints are written atomically).
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step (Ctrl-C again to quit at once)");
    });
    if let Err(e) = installed {
        eprintln!("warning: Ctrl-C will end the run without saving ({e})");
    }
    stop
}

fn bench(a: BenchArgs, m: &ArgMatches) -> rnn_wgpu::Result<bool> {
    refuse_unused(m, &a, BENCH_UNUSED)?;
    use rnn_wgpu::bench::{
        Peak, RnnShape, bench_matmul, bench_rnn_at, bench_xent, lookup_peak, shape_table,
    };
    for (arg, v) in [
        ("--peak-tflops", a.peak_tflops),
        ("--peak-gbps", a.peak_gbps),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && v > 0.0)
        {
            return Err(rnn_wgpu::Error::invalid(
                arg,
                format!("must be a positive finite number, got {v}"),
            ));
        }
    }
    if !(a.launch_us.is_finite() && a.launch_us >= 0.0) {
        return Err(rnn_wgpu::Error::invalid(
            "--launch-us",
            format!(
                "must be a finite number of µs, at least 0, got {}",
                a.launch_us
            ),
        ));
    }
    let (chosen, why) = rnn_wgpu::backend::choose(a.backend.into())?;
    let software =
        matches!(&chosen, rnn_wgpu::backend::Chosen::Gpu(g) if g.ctx().adapter().is_software());
    // The roofline's peaks: both flags, or the table's row for a hardware adapter.
    let adapter = match &chosen {
        rnn_wgpu::backend::Chosen::Gpu(g) => Some(g.ctx().adapter().name.clone()),
        _ => None,
    };
    let (peak, no_peak): (Option<(Peak, String)>, String) = match (a.peak_tflops, a.peak_gbps) {
        (Some(tflops), Some(gbps)) => {
            (Some((Peak { tflops, gbps }, "flags".into())), String::new())
        }
        _ => match adapter.as_deref() {
            None => (None, "the CPU path's peaks are not in the table".into()),
            Some(name) if software => (None, format!("{name} is a software adapter")),
            Some(name) => match lookup_peak(name) {
                Some(e) => match e.peak {
                    Some(p) => (Some((p, format!("table: {}", e.name))), String::new()),
                    None => (None, format!("the table has no figures for {}", e.name)),
                },
                None => (None, format!("the table has no row for {name}")),
            },
        },
    };
    let on = BenchOn {
        gpu: adapter.is_some(),
        peak: peak.is_some(),
        no_peak: no_peak.clone(),
    };
    refuse_unused(m, &on, BENCH_ON_UNUSED)?;
    let shapes: Vec<RnnShape> = match a.cell {
        Some(cell) => {
            let variant = a.cell_options.variant(cell.into(), a.hidden, &a.stack)?;
            let cfg = RnnConfig::new(cell.into(), a.input, a.hidden)
                .variant(variant)
                .layers(a.layers)
                .bidirectional(a.bidirectional)
                .skip(a.stack.skip(a.layers)?);
            cfg.validate()?;
            for (arg, v) in [("--batch", a.batch), ("--seq", a.seq), ("--iters", a.iters)] {
                if v == 0 {
                    return Err(rnn_wgpu::Error::invalid(arg, "must be at least 1"));
                }
            }
            vec![RnnShape {
                cell: cell.into(),
                input: a.input,
                hidden: a.hidden,
                batch: a.batch,
                seq: a.seq,
                layers: a.layers,
                bidirectional: a.bidirectional,
                variant,
                skip: cfg.skip,
            }]
        }
        None => {
            let t = shape_table()?;
            let grid = match (a.table, &chosen) {
                (Some(TableArg::Gpu), _) => t.gpu,
                (Some(TableArg::Cpu), _) => t.cpu,
                (Some(TableArg::Stack), _) => t.stack,
                (Some(TableArg::Half), _) => t.half,
                (Some(TableArg::Small), _) => t.small,
                (None, rnn_wgpu::backend::Chosen::Gpu(_)) if !software => t.gpu,
                (None, rnn_wgpu::backend::Chosen::Gpu(_)) => t.small,
                (None, _) => t.cpu,
            };
            grid.shapes()?
        }
    };
    if !a.json {
        eprintln!("backend: {why}");
        if let Some(v) = shapes
            .first()
            .map(|s| s.describe_variant())
            .filter(|v| !v.is_empty())
        {
            eprintln!("variant: {v}");
        }
        match &peak {
            Some((p, source)) => eprintln!(
                "roofline: {} TFLOP/s, {} GB/s ({source}){}",
                p.tflops,
                p.gbps,
                if on.gpu {
                    format!(", {} µs a dependent dispatch", a.launch_us)
                } else {
                    String::new()
                }
            ),
            None => eprintln!("peak unknown: pass --peak-tflops/--peak-gbps ({no_peak})"),
        }
        println!(
            "{:<5} {:>5} {:>5} {:>4} {:>4} {:>11} {:>11} {:>11} {:>9} {:>10} {:>10} {:>6} {:>8} {:>9} {:>9} {:>7} {:>10}",
            "cell",
            "I",
            "H",
            "B",
            "T",
            "forward ms",
            "backward ms",
            "step ms",
            "GFLOP/s",
            "record ms",
            "dispatches",
            "chain",
            "step",
            "order",
            "limit ms",
            "% limit",
            "bound"
        );
    }
    let device = why.clone();
    rnn_wgpu::with_backend!(chosen, b => {
        let ctx = rnn_wgpu::backend::Backend::is_gpu(&b).then(|| gpu_ctx_of(&b)).flatten();
        for shape in &shapes {
            let mut r = bench_rnn_at(
                &b,
                ctx.as_deref(),
                &device,
                shape,
                a.iters,
                a.step_order.into(),
                a.precision.into(),
            )?;
            if let Some((p, source)) = &peak {
                r.set_roofline(*p, source, a.launch_us);
            }
            if a.json {
                println!("{}", json_line(&r)?);
            } else {
                let (limit, percent, bound) = match (r.limit_ms, r.fraction_of_limit, r.bound) {
                    (Some(l), Some(f), Some(b)) => {
                        (format!("{l:.3}"), format!("{:.1}", 100.0 * f), b.name())
                    }
                    _ => ("-".into(), "-".into(), "-"),
                };
                println!(
                    "{:<5} {:>5} {:>5} {:>4} {:>4} {:>11.3} {:>11.3} {:>11.3} {:>9.1} {:>10.3} {:>10} {:>6} {:>8} {:>9} {:>9} {:>7} {:>10}",
                    r.cell, r.input, r.hidden, r.batch, r.seq, r.forward_ms, r.backward_ms, r.step_ms,
                    r.gflops, r.record_ms, r.dispatches_per_step, r.recurrent_dispatches, r.step_kernel,
                    r.step_order, limit, percent, bound
                );
            }
        }
        if a.kernels {
            use rnn_wgpu::bench::{MATMUL_SHAPES, MATMUL_SHAPES_SMALL, XENT_SHAPES, XENT_SHAPES_SMALL};
            let big = rnn_wgpu::backend::Backend::is_gpu(&b) && !software;
            let (mm, xe) = if big { (MATMUL_SHAPES, XENT_SHAPES) } else { (MATMUL_SHAPES_SMALL, XENT_SHAPES_SMALL) };
            let mut results = Vec::new();
            // On the GPU, each tiled variant forced too, to compare them.
            let mut forced = Vec::new();
            if let Some(ctx) = &ctx {
                for kernel in [GemmKernel::Tiled, GemmKernel::Large] {
                    forced.push((kernel, GpuBackend::new(ctx.clone())?.with_gemm_kernel(kernel)));
                }
            }
            for &s in mm {
                results.push(bench_matmul(&b, ctx.as_deref(), s, a.iters)?);
                for (kernel, gk) in &forced {
                    let mut r = bench_matmul(gk, ctx.as_deref(), s, a.iters)?;
                    r.kernel = format!("{}[{}]", r.kernel, kernel.name());
                    results.push(r);
                }
            }
            for &s in xe {
                results.push(bench_xent(&b, ctx.as_deref(), s, a.iters)?);
            }
            for k in results {
                if a.json {
                    println!("{}", json_line(&k)?);
                } else {
                    println!("{:<17} {:<16} {:>9.3} ms {:>9.1} {}", k.kernel, k.shape, k.ms, k.rate, k.unit);
                }
            }
        }
        Ok::<(), rnn_wgpu::Error>(())
    })?;
    Ok(true)
}

/// One JSON object on one line.
fn json_line<T: serde::Serialize>(v: &T) -> rnn_wgpu::Result<String> {
    serde_json::to_string(v).map_err(|e| rnn_wgpu::Error::invalid("json", e.to_string()))
}

/// The GPU context behind a backend, when it is the GPU one.
fn gpu_ctx_of<B: std::any::Any>(b: &B) -> Option<Arc<GpuContext>> {
    (b as &dyn std::any::Any)
        .downcast_ref::<GpuBackend>()
        .map(|g| g.ctx().clone())
}

/// `sample`: generates from a checkpoint and prints prompt + generation.
fn sample_cmd(a: SampleArgs, m: &ArgMatches) -> rnn_wgpu::Result<bool> {
    let ctx = |answers, task| SampleCtx {
        temperature: a.temperature,
        prompt: a.prompt.is_some(),
        answers,
        task,
    };
    refuse_unused(m, &ctx(None, ""), SAMPLE_UNUSED)?;
    let (chosen, _) = rnn_wgpu::backend::choose(a.backend.into())?;
    let text = rnn_wgpu::with_backend!(chosen, b => {
        let (mut model, task, config) =
            rnn_wgpu::train::checkpoint::load_model_at(b, &a.checkpoint, a.precision.into())?;
        refuse_unused(
            m,
            &ctx(Some(task.has_answers()), task.spec().name()),
            SAMPLE_UNUSED,
        )?;
        let seed = a.seed;
        let prompt = match a.prompt.clone() {
                    Some(p) => p,
                    None if task.has_answers() => {
                        let batch = task.eval_batch(config.seed ^ seed, 1)?;
                        let end = batch.answers.first().map_or(0, |a| a.0);
                        task.vocab().decode(&batch.inputs[..=end])
                    }
                    None => task.fixed_prompt(),
                };
                let opts = SampleOptions {
                    prompt: prompt.clone(),
                    temperature: a.temperature,
                    length: a.length,
                    seed,
                };
                sample(&mut model, &task, &opts).map(|s| {
                    // A reversed sum is also shown the usual way round.
                    let usual = match task.spec() {
                        TaskSpec::Add { reverse_answer: true, .. } => {
                            let digits: String = s.trim_end().chars().rev().collect();
                            format!("\n(written least-significant digit first: the sum is {digits})")
                        }
                        _ => String::new(),
                    };
                    format!("{prompt}{s}{usual}")
                })
    })?;
    println!("{text}");
    Ok(true)
}

/// `doctor --precision f16|bf16`: the 16-bit checks on the CPU path (the
/// reference of the GPU's 16-bit path) and on the adapter.
fn doctor_16bit(precision: Precision) -> rnn_wgpu::Result<bool> {
    use rnn_wgpu::doctor::{Report, precision_check};
    let start = std::time::Instant::now();
    let mut report = Report::default();
    precision_check(
        &mut report,
        &rnn_wgpu::backend::CpuBackend::<f32>::new(),
        precision,
        "cpu",
    );
    let ctx = GpuContext::new(rnn_wgpu::gpu::ContextOptions::from_env()?)?;
    println!("checking: {} ({precision} storage)", ctx.adapter());
    let gpu = GpuBackend::new(Arc::new(ctx))?;
    precision_check(&mut report, &gpu, precision, "gpu");
    print!("{}", report.table());
    let failed = report.rows.iter().filter(|r| !r.pass).count();
    println!(
        "{} checks, {} failed, {:.1} s",
        report.rows.len(),
        failed,
        start.elapsed().as_secs_f64()
    );
    Ok(report.passed())
}

/// The matches of the subcommand (the flags `refuse_unused` looks at).
fn sub_matches(m: &ArgMatches) -> &ArgMatches {
    m.subcommand().map_or(m, |(_, s)| s)
}

fn run(cli: Cli, m: &ArgMatches) -> rnn_wgpu::Result<bool> {
    let m = sub_matches(m);
    match cli.cmd {
        Cmd::Bench(args) => bench(args, m),
        Cmd::Train(args) => train(*args, m),
        Cmd::Sample(args) => sample_cmd(args, m),
        Cmd::Adapters => {
            let adapters = list_adapters(wgpu::Backends::all());
            if adapters.is_empty() {
                println!("no adapters found. {}", rnn_wgpu::gpu::install_hint());
                return Ok(false);
            }
            for a in adapters {
                println!("{a}");
            }
            Ok(true)
        }
        Cmd::Doctor { precision } => {
            let adapters = list_adapters(wgpu::Backends::all());
            println!("adapters:");
            if adapters.is_empty() {
                println!("  none. {}", rnn_wgpu::gpu::install_hint());
                return Ok(false);
            }
            for a in &adapters {
                println!("  {a}");
            }
            let precision: Precision = precision.into();
            if precision.is_16bit() {
                return doctor_16bit(precision);
            }
            // The checks run on shaders compiled with runtime bounds checks;
            // then the default build (hot kernels unchecked) is compared with it.
            let opts = rnn_wgpu::gpu::ContextOptions::from_env()?;
            let checked = rnn_wgpu::gpu::ContextOptions {
                checked_shaders: true,
                ..opts.clone()
            };
            let ctx = GpuContext::new(checked)?;
            println!("checking: {}", ctx.adapter());
            let software = ctx.adapter().is_software();
            let gpu = GpuBackend::new(Arc::new(ctx))?;
            let start = std::time::Instant::now();
            let (mut report, _) = rnn_wgpu::doctor::selfcheck(&gpu);
            match GpuContext::new(opts).and_then(|c| GpuBackend::new(Arc::new(c))) {
                Ok(unchecked) => rnn_wgpu::doctor::unchecked_check(&mut report, &gpu, &unchecked),
                Err(e) => report.error("unchecked hot kernels", &e),
            }
            let secs = start.elapsed().as_secs_f64();
            print!("{}", report.table());
            let failed = report.rows.iter().filter(|r| !r.pass).count();
            println!(
                "{} checks, {} failed, {:.1} s",
                report.rows.len(),
                failed,
                secs
            );
            if software {
                println!(
                    "note: this is a software adapter: it computes correctly but far more slowly \
                     than a GPU, and `train --backend auto` uses the CPU path instead."
                );
            }
            if failed > 0 {
                println!(
                    "this adapter's results differ from the CPU reference beyond tolerance; \
                     update the driver, or choose another adapter with RNN_WGPU_ADAPTER / RNN_WGPU_BACKEND."
                );
            }
            Ok(report.passed())
        }
        Cmd::Eval {
            weights,
            onnx,
            inputs,
            out,
            backend,
            backward,
            nonlinearity,
            cell_options,
            residual,
            precision,
        } => {
            if let Some(model) = onnx {
                // An ONNX node carries its cell's attributes.
                for id in [
                    "backward",
                    "nonlinearity",
                    "coupled",
                    "cell_clip",
                    "activations",
                    "reset_before",
                    "residual",
                ] {
                    if given(m, id) {
                        return Err(rnn_wgpu::Error::invalid(
                            flag(id),
                            "has no effect with --onnx: the model's nodes carry their \
                             attributes, and ONNX models run forward only",
                        ));
                    }
                }
                let opts = rnn_wgpu::onnx::OnnxEvalOptions {
                    model,
                    inputs,
                    out,
                    backend: backend.into(),
                    precision: precision.into(),
                };
                println!("{}", rnn_wgpu::onnx::run(&opts)?);
                return Ok(true);
            }
            let weights = weights.ok_or_else(|| {
                rnn_wgpu::Error::invalid("--weights", "eval needs --weights FILE or --onnx MODEL")
            })?;
            let nonlinearity = nonlinearity.map(|n| match n {
                NonlinearityArg::Tanh => Nonlinearity::Tanh,
                NonlinearityArg::Relu => Nonlinearity::Relu,
                NonlinearityArg::Sigmoid => Nonlinearity::Sigmoid,
            });
            // The cell's options are checked once the weights show the cell.
            let activations = cell_options
                .activations
                .as_deref()
                .map(|list| list.split(',').map(|n| Act::parse(n.trim())).collect())
                .transpose()?;
            let variant = Variant {
                coupled: cell_options.coupled,
                cell_clip: cell_options.cell_clip,
                reset_before: cell_options.reset_before,
                ..Variant::default()
            };
            let opts = EvalOptions {
                weights,
                inputs,
                out,
                backend: backend.into(),
                backward,
                nonlinearity,
                variant,
                activations,
                residual,
                precision: precision.into(),
            };
            println!("{}", run_eval(&opts)?);
            Ok(true)
        }
        Cmd::Gradcheck(args) => gradcheck(args, m),
        Cmd::Export {
            checkpoint,
            onnx,
            states,
            overwrite,
        } => {
            rnn_wgpu::eval::check_output_path("--onnx", &onnx)?;
            if onnx.exists() && !overwrite {
                return Err(rnn_wgpu::Error::invalid(
                    "--onnx",
                    format!("{} exists; give --overwrite to replace it", onnx.display()),
                ));
            }
            let (config, params) = rnn_wgpu::train::checkpoint::load_stack(&checkpoint)?;
            let model = rnn_wgpu::onnx::export_stack(&config, &params, states)?;
            rnn_wgpu::onnx::write_model(&onnx, &model)?;
            println!(
                "{} I={} H={} L={}{}: {} written (inputs: input [T, B, {}]{}; outputs: output, hn{})",
                config.cell.name(),
                config.input_size,
                config.hidden_size,
                config.num_layers,
                if config.bidirectional {
                    " bidirectional"
                } else {
                    ""
                },
                onnx.display(),
                config.input_size,
                match (states, config.cell.has_cell_state()) {
                    (true, true) => ", h0, c0",
                    (true, false) => ", h0",
                    _ => "",
                },
                if config.cell.has_cell_state() {
                    ", cn"
                } else {
                    ""
                },
            );
            Ok(true)
        }
    }
}

fn main() -> ExitCode {
    // Mesa's drivers print "XDG_RUNTIME_DIR is invalid or not set" on every
    // device they open when it is unset (a bare shell, a container, CI). Give
    // them a directory before any thread exists.
    #[cfg(target_os = "linux")]
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: first statement of main, before any other thread is started.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli, &matches) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arguments of subcommand `cmd`: (clap id, long flag).
    fn args_of(cmd: &str) -> Vec<(String, Option<String>)> {
        let mut c = Cli::command();
        c.build();
        let sub = c
            .find_subcommand(cmd)
            .unwrap_or_else(|| panic!("no subcommand {cmd}"));
        sub.get_arguments()
            .filter(|a| !["help", "version"].contains(&a.get_id().as_str()))
            .map(|a| (a.get_id().to_string(), a.get_long().map(str::to_string)))
            .collect()
    }

    fn ids<A>(rules: &[Unused<A>]) -> Vec<&'static str> {
        rules.iter().flat_map(|r| r.ids.iter().copied()).collect()
    }

    #[test]
    fn every_rule_names_a_flag_of_its_command() {
        // A misspelt id would never match (clap only checks ids in debug builds).
        for (cmd, rule_ids) in [
            ("train", ids(TRAIN_UNUSED)),
            ("sample", ids(SAMPLE_UNUSED)),
            ("bench", ids(BENCH_UNUSED)),
            ("bench", ids(BENCH_ON_UNUSED)),
            ("gradcheck", ids(GRADCHECK_UNUSED)),
        ] {
            let args = args_of(cmd);
            for id in rule_ids {
                let long = args.iter().find(|(a, _)| a == id).map(|(_, l)| l.clone());
                assert_eq!(
                    long,
                    Some(Some(flag(id)[2..].to_string())),
                    "{cmd}: rule id {id} is not the flag {}",
                    flag(id)
                );
            }
        }
    }

    #[test]
    fn every_train_flag_is_classified_for_resume() {
        // A new flag of `train` must say whether a resumed run uses it.
        for (id, _) in args_of("train") {
            let known = RUN_DEFINING.contains(&id.as_str())
                || RESUME_APPLIES.contains(&id.as_str())
                || id == "overwrite";
            assert!(
                known,
                "train --{id}: add it to RUN_DEFINING or RESUME_APPLIES"
            );
        }
    }

    #[test]
    fn defaults_never_trip_a_rule() {
        let m = Cli::command()
            .try_get_matches_from(["rnn-wgpu", "train", "--cell", "gru", "--resume"])
            .unwrap();
        let cli = Cli::from_arg_matches(&m).unwrap();
        let Cmd::Train(a) = cli.cmd else {
            panic!("not train")
        };
        assert!(refuse_unused(sub_matches(&m), &*a, TRAIN_UNUSED).is_err());
        let m = Cli::command()
            .try_get_matches_from(["rnn-wgpu", "train", "--resume", "--steps", "9"])
            .unwrap();
        let Cmd::Train(a) = Cli::from_arg_matches(&m).unwrap().cmd else {
            panic!("not train")
        };
        assert!(refuse_unused(sub_matches(&m), &*a, TRAIN_UNUSED).is_ok());
    }
}
