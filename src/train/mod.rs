//! Training: batches from a task, full or truncated backpropagation through
//! time, gradient clipping and an optimizer on the device, evaluation on
//! held-out problems, checkpoints.
//!
//! ## One training step
//! ```text
//! batch(seed, step) ─upload─▶ tokens/targets of every window     (host → device, once)
//! for each window (one for full BPTT):
//!     zero grads
//!     forward + loss + backward over the window, from the carried state
//!     carry the state the next window starts from (a device-side copy)
//!     Σ grad² ─▶ stats            (one reduction)
//!     optimizer update: clipped by the norm in stats, skipped if not finite
//! read stats (loss, counts, norms of every window)            (the only readback)
//! ```
//! On the GPU everything up to the read is recorded into one submission (one
//! per `max_dispatches_per_submit` dispatches for long sequences).
//!
//! ## Overlapped steps
//! [`Trainer::begin_step`] records a step and only starts its read;
//! [`Trainer::finish_step`] waits for it and returns the report. Beginning
//! step n + 1 before finishing step n lets the host upload and record it
//! while the device runs step n. Nothing in step n + 1 depends on step n's
//! readback except whether the run stops at step n, so step n + 1 starts
//! with a gate on step n's stats (`gate_updates`): its updates are skipped
//! exactly when the host is going to stop at step n. The trajectory is the
//! same bit for bit as [`Trainer::train_step`]'s, one step at a time.
//! Under f16 loss scaling step n + 1 also depends on whether step n
//! skipped its update (the scale halves): it is recorded with the scale of
//! no skip, gated on that too, and recorded again when step n did skip
//! ([`Trainer::can_overlap`]).
//!
//! ## Truncated BPTT
//! With `k1 ≤ k2`, an update happens every `k1` steps and backpropagates through
//! the last `k2` (Williams & Peng's TBPTT(k1, k2)); `k1 = k2 = k` is the usual
//! chunking. Hidden (and cell) state flows forward across windows; gradients
//! stop at each window's start:
//! ```text
//! time     0 ─────── k1 ─────── 2k1 ─────── 3k1 ── T
//! window 1 [═══loss══)
//! window 2      [────┼═══loss═══)           ─ backprop only, ═ backprop + loss
//! window 3                 [────┼═══loss════)
//!               ◀── k2 ──▶
//! ```
//! Each window restarts from the state the previous window's forward computed
//! at its start (with the parameters before that window's update).
//!
//! ```
//! use rnn_wgpu::backend::CpuBackend;
//! use rnn_wgpu::nn::model::ModelConfig;
//! use rnn_wgpu::ops::cell::Cell;
//! use rnn_wgpu::train::tasks::TaskSpec;
//! use rnn_wgpu::train::{Bptt, TrainConfig, Trainer};
//!
//! # fn main() -> rnn_wgpu::Result<()> {
//! let mut config = TrainConfig::new(TaskSpec::add(2), ModelConfig::new(Cell::Gru, 16));
//! config.batch = 8;
//! config.eval_problems = 20;
//! config.bptt = Bptt::Truncated { k1: 4, k2: 6 }; // update every 4 steps, backpropagate 6
//! let mut trainer = Trainer::new(CpuBackend::<f32>::new(), config)?;
//! for _ in 0..3 {
//!     let r = trainer.train_step()?;
//!     assert!(r.loss.is_finite() && r.skipped == 0);
//! }
//! let e = trainer.evaluate()?; // held-out problems, never trained on
//! assert!(e.exact_match.is_some() && e.problems == 20);
//! # Ok(())
//! # }
//! ```

pub mod checkpoint;
pub mod dist;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod plot;
pub mod run;
pub mod sample;
pub mod scale;
pub mod schedule;
pub mod tasks;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, PendingRead};
use crate::error::{Error, Result};
use crate::nn::dense::argmax;
use crate::nn::model::{ModelConfig, SeqModel, Train};
use crate::nn::{BatchRows, State};
use crate::ops::optim::{GateSpec, Optimizer, UpdateSpec};
use crate::ops::reduce::ReduceOp;
use crate::ops::softmax_xent::{IGNORE_INDEX, Rows, SUMMARY_LEN, XentSummary};
use crate::precision::Precision;
use crate::real::Real;
use dist::Collective;
pub use scale::LossScale;
use schedule::Schedule;
use tasks::{Batch, Task, TaskSpec};

/// The most held-out problems one evaluation may use.
pub const MAX_EVAL_PROBLEMS: usize = 1_000_000;

/// Values per window in the stats buffer: the loss summary, then Σ grad².
pub const STATS_STRIDE: usize = 8;
const NORM: usize = SUMMARY_LEN;
// The loss sum and the invalid-target count in a window's summary
// (`[mean, count, sum, invalid, correct]`).
const LOSS_SUM: usize = 2;
const INVALID: usize = 3;

/// How far gradients flow back in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bptt {
    /// Through the whole sequence.
    Full,
    /// Update every `k1` steps, backpropagating `k2 >= k1` steps.
    Truncated {
        /// Steps between updates.
        k1: usize,
        /// Steps backpropagated.
        k2: usize,
    },
}

/// One window of truncated BPTT: steps `start..end`, loss on `loss_from..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First step run.
    pub start: usize,
    /// One past the last step.
    pub end: usize,
    /// First step whose targets count.
    pub loss_from: usize,
}

impl TrainConfig {
    /// `task` and `model` with the other defaults of `rnn-wgpu train`: batch
    /// 64, 5000 steps, full BPTT, Adam at 0.005 on a cosine schedule down to
    /// 0.0002, gradients clipped to norm 1, seed 1, a non-finite gradient
    /// stops the run, 1000 held-out problems per evaluation.
    pub fn new(task: TaskSpec, model: ModelConfig) -> Self {
        TrainConfig {
            task,
            model,
            batch: 64,
            steps: 5000,
            bptt: Bptt::Full,
            optimizer: Optimizer::adam(0.005),
            schedule: Schedule::Cosine { min_lr: 0.0002 },
            clip: Some(1.0),
            seed: 1,
            non_finite: NonFinite::Error,
            eval_problems: 1000,
            precision: Precision::F32,
        }
    }
}

impl Bptt {
    /// The windows covering `steps` time steps.
    pub fn windows(&self, steps: usize) -> Result<Vec<Window>> {
        match *self {
            Bptt::Full => Ok(vec![Window {
                start: 0,
                end: steps,
                loss_from: 0,
            }]),
            Bptt::Truncated { k1, k2 } => {
                if k1 == 0 || k2 < k1 {
                    return Err(Error::invalid(
                        "truncation",
                        format!("needs 1 <= k1 <= k2, got k1 = {k1}, k2 = {k2}"),
                    ));
                }
                let mut out = Vec::new();
                let mut prev = 0;
                while prev < steps {
                    let end = (prev + k1).min(steps);
                    // The new steps plus k2 - k1 steps of history (a partial
                    // last chunk stays partial, as plain chunking has it).
                    out.push(Window {
                        start: prev.saturating_sub(k2 - k1),
                        end,
                        loss_from: prev,
                    });
                    prev = end;
                }
                Ok(out)
            }
        }
    }
}

/// What to do when the gradient norm (or the loss) is NaN or infinite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NonFinite {
    /// Stop with [`Error::NonFinite`].
    Error,
    /// Skip the update (the device already left parameters and state untouched) and go on.
    Skip,
}

/// Everything that defines a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The task.
    pub task: TaskSpec,
    /// The model (its vocabulary is the task's).
    pub model: ModelConfig,
    /// Batch B.
    pub batch: usize,
    /// Total training steps.
    pub steps: u64,
    /// Full or truncated BPTT.
    pub bptt: Bptt,
    /// Optimizer and base learning rate.
    pub optimizer: Optimizer,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Clip the global gradient norm to this.
    pub clip: Option<f32>,
    /// Seed of parameters, data and dropout.
    pub seed: u64,
    /// Non-finite policy.
    pub non_finite: NonFinite,
    /// Held-out problems per evaluation.
    pub eval_problems: usize,
    /// Storage precision of the passes (f32 in checkpoints written before
    /// it); f16 trains with dynamic loss scaling ([`LossScale`]).
    #[serde(default)]
    pub precision: Precision,
}

/// The outcome of one training step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// 0-based step just completed.
    pub step: u64,
    /// Mean loss over the step's targets.
    pub loss: f64,
    /// Fraction of targets predicted (argmax, teacher forcing).
    pub accuracy: f64,
    /// Targets that counted.
    pub tokens: usize,
    /// Global gradient norm of the last window (before clipping).
    pub grad_norm: f64,
    /// Windows whose update was skipped (non-finite norm).
    pub skipped: usize,
    /// The loss scale the step's backward used (f16 training; `None`
    /// otherwise). A step whose gradients overflowed was skipped (counted
    /// in `skipped`) and the next one runs at half the scale.
    pub loss_scale: Option<f64>,
}

/// The outcome of an evaluation on held-out problems.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Step at which it was taken.
    pub step: u64,
    /// Mean loss.
    pub loss: f64,
    /// Fraction of targets predicted.
    pub token_accuracy: f64,
    /// Fraction of problems answered exactly (`copy`, `add`): greedy decoding
    /// gets a whole answer right exactly when every answer step's argmax is
    /// right under teacher forcing, so this is measured in one forward.
    pub exact_match: Option<f64>,
    /// Fraction of closing-tag name characters predicted (`xml`: the targets
    /// [`Batch::closing`] lists, the characters of `name` in each `</name>`);
    /// `None` for the other tasks (and in checkpoints written before it).
    #[serde(default)]
    pub closing_accuracy: Option<f64>,
    /// Problems evaluated.
    pub problems: usize,
}

/// Loss and accuracy of one step, for curves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Step.
    pub step: u64,
    /// Loss.
    pub loss: f64,
    /// Token accuracy.
    pub accuracy: f64,
}

/// Per-window device tensors of a batch shape.
#[derive(Debug)]
struct WindowBufs<B: Backend> {
    tokens: B::Ints,
    targets: B::Ints,
}

/// The held-out problems on the device, and where their predictions go
/// (tasks scored by whole answers or closing tags).
#[derive(Debug)]
struct EvalBufs<B: Backend> {
    tokens: B::Ints,
    targets: B::Ints,
    predicted: Option<B::Ints>,
}

/// A step recorded (on the GPU: submitted) whose stats the host has not read.
#[derive(Debug)]
struct InFlight<E> {
    step: u64,
    /// The updates it counted (one per window), given back if it is dropped.
    updates: u64,
    stats: PendingRead<E>,
}

/// A training run in progress.
#[derive(Debug)]
pub struct Trainer<B: Backend> {
    config: TrainConfig,
    task: Task,
    model: SeqModel<B>,
    backend: B,
    s1: B::Tensor,
    s2: B::Tensor,
    stats: B::Tensor,
    windows: Vec<Window>,
    window_bufs: Vec<WindowBufs<B>>,
    eval_bufs: Option<EvalBufs<B>>,
    /// Steps recorded but not finished, oldest first.
    in_flight: VecDeque<InFlight<B::Elem>>,
    /// Dynamic loss scaling (f16).
    loss_scale: Option<LossScale>,
    step: u64,
    updates: u64,
    skipped: u64,
    history: Vec<HistoryPoint>,
    evals: Vec<EvalReport>,
    dist: Option<Dist>,
    /// Host copy of the gradients summed over ranks (reused every window).
    reduce_buf: Vec<B::Elem>,
    rank_sum: dist::RankSum<B::Elem>,
}

/// A data-parallel rank's part in a run.
#[derive(Debug)]
struct Dist {
    comm: Arc<dyn Collective>,
    /// The rows of every global batch this rank trains on.
    rows: Range<usize>,
    /// Time spent summing over ranks once all are there: reading the
    /// gradients, the exchange, the sum and writing back.
    reduce_time: std::time::Duration,
    /// Time spent waiting for the other ranks to reach the sum.
    wait_time: std::time::Duration,
    /// Sum each bucket of gradients while the backward goes on.
    overlap: bool,
    /// Whether the ranks have checked that they run the same thing.
    agreed: bool,
}

impl<B: Backend> Trainer<B> {
    /// A fresh run: parameters initialized from the seed.
    pub fn new(backend: B, mut config: TrainConfig) -> Result<Self> {
        let task = Task::new(config.task.clone())?;
        config.model.vocab = task.vocab().len();
        let params = config.model.init_params(config.seed)?;
        Self::build(backend, config, task, &params, None)
    }

    /// A fresh run as rank `comm.rank()` of a data-parallel group of
    /// `comm.size()` (see [`dist`]): every rank calls this with the same
    /// configuration, trains on its share of every batch of `config.batch`
    /// rows, and holds the same parameters after every step.
    pub fn data_parallel(
        backend: B,
        mut config: TrainConfig,
        comm: Arc<dyn Collective>,
    ) -> Result<Self> {
        let task = Task::new(config.task.clone())?;
        config.model.vocab = task.vocab().len();
        let params = config.model.init_params(config.seed)?;
        Self::build(backend, config, task, &params, Some(comm))
    }

    /// A run with a given task (vocabulary) and parameters, e.g. from a checkpoint.
    pub(crate) fn build(
        backend: B,
        config: TrainConfig,
        task: Task,
        params: &[f64],
        comm: Option<Arc<dyn Collective>>,
    ) -> Result<Self> {
        if config.batch == 0 {
            return Err(Error::invalid("batch", "must be at least 1"));
        }
        let dist = match comm {
            Some(comm) if comm.size() > 1 => {
                if config.batch < comm.size() {
                    return Err(Error::invalid(
                        "batch",
                        format!(
                            "{} rows cannot be shared by {} ranks; give at least one row per rank",
                            config.batch,
                            comm.size()
                        ),
                    ));
                }
                if comm.rank() >= comm.size() {
                    return Err(Error::Distributed {
                        rank: comm.rank(),
                        message: format!("is not a rank of a group of {}", comm.size()),
                    });
                }
                let rows = dist::share(config.batch, comm.rank(), comm.size());
                Some(Dist {
                    comm,
                    rows,
                    reduce_time: std::time::Duration::ZERO,
                    wait_time: std::time::Duration::ZERO,
                    overlap: true,
                    agreed: false,
                })
            }
            _ => None,
        };
        let local_batch = dist.as_ref().map_or(config.batch, |d| d.rows.len());
        if config.model.vocab != task.vocab().len() {
            return Err(Error::invalid(
                "vocabulary",
                format!(
                    "the model has {} symbols, the task {}",
                    config.model.vocab,
                    task.vocab().len()
                ),
            ));
        }
        if let Some(c) = config.clip
            && !(c > 0.0 && c.is_finite())
        {
            return Err(Error::invalid(
                "clip",
                format!("{c} must be a positive number"),
            ));
        }
        let steps = task.steps();
        let windows = config.bptt.windows(steps)?;
        config.model.validate()?;
        // The largest per-batch tensor: [T + 1, B, max(5H + P, V, E)] (the
        // gates and gate gradients of a projected LSTM are the widest).
        let m = &config.model;
        let width = (5 * m.hidden + m.variant.proj_size)
            .max(m.vocab)
            .max(m.input_width()) as u128;
        crate::nn::rnn::check_index_range(
            "batch × steps (a workspace tensor)",
            (steps as u128 + 1) * config.batch as u128 * width,
        )?;
        if config.eval_problems == 0 || config.eval_problems > MAX_EVAL_PROBLEMS {
            return Err(Error::invalid(
                "eval_problems",
                format!(
                    "{} is outside 1..={MAX_EVAL_PROBLEMS}",
                    config.eval_problems
                ),
            ));
        }
        crate::nn::rnn::check_index_range(
            "evaluation problems × steps (a workspace tensor)",
            (steps as u128 + 1) * config.eval_problems as u128 * width,
        )?;
        let model =
            SeqModel::with_precision(backend.clone(), config.model, params, config.precision)?;
        let loss_scale = config
            .precision
            .needs_loss_scaling()
            .then(LossScale::default);
        let n = model.layout().total;
        let (l1, l2) = config.optimizer.state_lens(n);
        let s1 = backend.zeros(&[l1.max(1)])?;
        let s2 = backend.zeros(&[l2.max(1)])?;
        let stats = backend.zeros(&[(windows.len() + 1) * STATS_STRIDE])?;
        let window_bufs = windows
            .iter()
            .map(|w| {
                let shape = [w.end - w.start, local_batch];
                let zeros = vec![0; shape[0] * shape[1]];
                Ok(WindowBufs {
                    tokens: backend.ints(&shape, &zeros)?,
                    targets: backend.ints(&shape, &zeros)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Trainer {
            config,
            task,
            model,
            backend,
            s1,
            s2,
            stats,
            windows,
            window_bufs,
            eval_bufs: None,
            in_flight: VecDeque::new(),
            loss_scale,
            step: 0,
            updates: 0,
            skipped: 0,
            history: Vec::new(),
            evals: Vec::new(),
            dist,
            reduce_buf: Vec::new(),
            rank_sum: dist::RankSum::default(),
        })
    }

    /// This rank of a data-parallel run (0 alone).
    pub fn rank(&self) -> usize {
        self.dist.as_ref().map_or(0, |d| d.comm.rank())
    }

    /// Ranks of the run (1 alone).
    pub fn world_size(&self) -> usize {
        self.dist.as_ref().map_or(1, |d| d.comm.size())
    }

    /// The rows of every batch this rank trains on (all of them alone).
    pub fn rows(&self) -> Range<usize> {
        self.dist
            .as_ref()
            .map_or(0..self.config.batch, |d| d.rows.clone())
    }

    /// True on every rank when `flag` is true on any (alone: `flag`): ranks
    /// agree on stopping so that none waits for a step the others skip.
    pub fn any_rank(&self, flag: bool) -> Result<bool> {
        match &self.dist {
            Some(d) => dist::any_rank(d.comm.as_ref(), flag),
            None => Ok(flag),
        }
    }

    /// Checks that every rank holds bit-identical parameters and optimizer
    /// state (an error names the first rank that differs); alone, nothing.
    pub fn check_replicas(&self) -> Result<()> {
        let Some(d) = &self.dist else {
            return Ok(());
        };
        let v = self
            .backend
            .read_many(&[self.model.params(), &self.s1, &self.s2])?;
        let bytes: Vec<u8> = v
            .iter()
            .flat_map(|x| bytemuck::cast_slice::<B::Elem, u8>(x).to_vec())
            .collect();
        dist::same_on_all(
            d.comm.as_ref(),
            &format!("parameters and optimizer state at step {}", self.step),
            &bytes,
        )
    }

    /// Seconds this rank has spent summing gradients over the ranks once
    /// all of them were there (reading the gradients from the device, the
    /// exchange, the sum, writing back), and seconds it waited for the
    /// others to get there; both 0 alone.
    pub fn reduce_seconds(&self) -> (f64, f64) {
        self.dist.as_ref().map_or((0.0, 0.0), |d| {
            (d.reduce_time.as_secs_f64(), d.wait_time.as_secs_f64())
        })
    }

    /// Whether the sum over ranks overlaps the backward (on by default):
    /// every bucket of gradients (the decoder, each layer, the embedding) is
    /// summed as soon as the backward has produced it, while it computes the
    /// rest. Off, the sum follows the whole backward. Either way the sums
    /// are the same bits. Alone, nothing changes.
    pub fn set_overlap(&mut self, on: bool) {
        if let Some(d) = &mut self.dist {
            d.overlap = on;
        }
    }

    /// The collective of a data-parallel run.
    pub fn collective(&self) -> Option<&Arc<dyn Collective>> {
        self.dist.as_ref().map(|d| &d.comm)
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The task.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The model.
    pub fn model(&self) -> &SeqModel<B> {
        &self.model
    }

    /// Steps completed.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Updates whose norm was not finite and that were skipped.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The state of dynamic loss scaling (f16 training; `None` otherwise).
    pub fn loss_scale(&self) -> Option<&LossScale> {
        self.loss_scale.as_ref()
    }

    /// Replaces the state of dynamic loss scaling (to start from another
    /// scale or grow at another interval). Fails unless the run trains in
    /// f16, or when the scale is not a power of two in
    /// `[MIN_SCALE, MAX_SCALE]` (its inverse must be exact).
    pub fn set_loss_scale(&mut self, s: LossScale) -> Result<()> {
        self.idle("set_loss_scale")?;
        if self.loss_scale.is_none() {
            return Err(Error::invalid(
                "loss scale",
                format!(
                    "only f16 training scales its loss; this run stores in {}",
                    self.config.precision
                ),
            ));
        }
        let exp = s.scale.log2();
        if !(s.scale >= scale::MIN_SCALE && s.scale <= scale::MAX_SCALE && exp == exp.round()) {
            return Err(Error::invalid(
                "loss scale",
                format!(
                    "{} is not a power of two in [{}, {}]",
                    s.scale,
                    scale::MIN_SCALE,
                    scale::MAX_SCALE
                ),
            ));
        }
        self.loss_scale = Some(s);
        Ok(())
    }

    /// Loss and accuracy of every step so far.
    pub fn history(&self) -> &[HistoryPoint] {
        &self.history
    }

    /// Every evaluation so far.
    pub fn evals(&self) -> &[EvalReport] {
        &self.evals
    }

    /// Changes the total number of steps (to train longer after a resume).
    pub fn set_total_steps(&mut self, steps: u64) {
        self.config.steps = steps;
    }

    /// The learning rate of step `step`.
    pub fn lr_at(&self, step: u64) -> f32 {
        self.config
            .schedule
            .lr(self.config.optimizer.lr(), step, self.config.steps)
    }

    /// Uploads this rank's rows of every window of `batch`; returns each
    /// window's loss scale (its share of the window's targets; 1 alone).
    fn upload_windows(&self, batch: &Batch) -> Result<Vec<f64>> {
        let bsz = batch.batch;
        let rows = self.rows();
        let vocab = self.config.model.vocab as i32;
        let mut scales = Vec::with_capacity(self.windows.len());
        for (w, bufs) in self.windows.iter().zip(&self.window_bufs) {
            let range = w.start * bsz..w.end * bsz;
            let mut targets = batch.targets[range.clone()].to_vec();
            // Steps before loss_from are run for their state only.
            for t in targets.iter_mut().take((w.loss_from - w.start) * bsz) {
                *t = IGNORE_INDEX;
            }
            let (tokens, targets) = if rows.len() == bsz {
                scales.push(1.0);
                (batch.inputs[range].to_vec(), targets)
            } else {
                let mine = |v: &[i32]| -> Vec<i32> {
                    v.chunks_exact(bsz)
                        .flat_map(|step| step[rows.clone()].iter().copied())
                        .collect()
                };
                let mine_targets = mine(&targets);
                let counted = |v: &[i32]| v.iter().filter(|&&t| (0..vocab).contains(&t)).count();
                let all = counted(&targets);
                scales.push(if all == 0 {
                    0.0
                } else {
                    counted(&mine_targets) as f64 / all as f64
                });
                (mine(&batch.inputs[range]), mine_targets)
            };
            self.backend.write_ints(&bufs.tokens, &tokens)?;
            self.backend.write_ints(&bufs.targets, &targets)?;
        }
        Ok(scales)
    }

    /// The backward of window `c` with the sum over ranks overlapping it:
    /// each bucket of gradients the backward completes (the decoder, each
    /// layer top first, the embedding) is read back without waiting and
    /// handed to an exchange thread, which sums the buckets in order while
    /// the rest of the backward is recorded and computed. The sums are the
    /// same bits as [`Trainer::sum_over_ranks`] gives. Returns the time the
    /// step waited for the sums after its backward (the exposed part).
    fn backward_overlapped(
        &mut self,
        comm: &dyn Collective,
        saved: &crate::nn::model::ModelSaved<B>,
        targets: &B::Ints,
        scale: f64,
        c: usize,
    ) -> Result<std::time::Duration> {
        let b = self.backend.clone();
        let grads = self.model.grads().clone();
        let n = self.model.layout().total;
        let rank = comm.rank();
        let lost = || Error::Distributed {
            rank,
            message: "the gradient exchange thread stopped".into(),
        };
        let mut rank_sum = std::mem::take(&mut self.rank_sum);
        let (tx, rx) = std::sync::mpsc::channel::<(Range<usize>, PendingRead<B::Elem>)>();
        let (backward, exchanged, exposed) = std::thread::scope(|s| {
            let worker = s.spawn(move || {
                let mut out = Vec::new();
                for (range, pending) in rx {
                    let mut v = pending.wait()?;
                    rank_sum.sum(comm, &mut v)?;
                    out.push((range, v));
                }
                Ok::<_, Error>((out, rank_sum))
            });
            let backward = self.model.backward_with(
                saved,
                targets,
                scale,
                &self.stats,
                c * STATS_STRIDE,
                &mut |range| {
                    let pending = b.read_range_async(&grads, range.clone())?;
                    tx.send((range, pending)).map_err(|_| lost())
                },
            );
            drop(tx);
            let waited = std::time::Instant::now();
            let exchanged = worker.join().map_err(|_| lost());
            (backward, exchanged, waited.elapsed())
        });
        let (buckets, rank_sum) = exchanged??;
        self.rank_sum = rank_sum;
        backward?;
        let start = std::time::Instant::now();
        // The buckets must tile the gradients exactly once.
        let mut ranges: Vec<Range<usize>> = buckets.iter().map(|(r, _)| r.clone()).collect();
        ranges.sort_by_key(|r| r.start);
        let end = ranges
            .iter()
            .try_fold(0, |next, r| (r.start == next).then_some(r.end));
        if end != Some(n) {
            return Err(Error::Distributed {
                rank,
                message: format!("the backward's gradient buckets {ranges:?} do not tile 0..{n}"),
            });
        }
        let host = &mut self.reduce_buf;
        host.clear();
        host.resize(n, B::Elem::of(0.0));
        for (range, v) in &buckets {
            host[range.clone()].copy_from_slice(v);
        }
        self.finish_sum(comm, c)?;
        Ok(exposed + start.elapsed())
    }

    /// Sums the gradients and the loss summary of window `c` over the
    /// ranks (in rank order) and writes them back.
    fn sum_over_ranks(&mut self, comm: &dyn Collective, c: usize) -> Result<()> {
        self.backend
            .read_into(self.model.grads(), &mut self.reduce_buf)?;
        self.rank_sum.sum(comm, &mut self.reduce_buf)?;
        self.finish_sum(comm, c)
    }

    /// With the summed gradients in `reduce_buf`: sums window `c`'s loss
    /// summary (`[mean, count, sum, invalid, correct]`, the mean recomputed)
    /// and writes both back.
    fn finish_sum(&mut self, comm: &dyn Collective, c: usize) -> Result<()> {
        let b = &self.backend;
        let at = c * STATS_STRIDE;
        let mut stats = b.read(&self.stats)?;
        let mut summary = stats[at..at + SUMMARY_LEN].to_vec();
        self.rank_sum.sum(comm, &mut summary)?;
        stats[at..at + SUMMARY_LEN].copy_from_slice(&summary);
        let (count, sum) = (stats[at + 1].f64(), stats[at + 2].f64());
        stats[at] = B::Elem::of(if count > 0.0 { sum / count } else { 0.0 });
        b.write(self.model.grads(), &self.reduce_buf)?;
        b.write(&self.stats, &stats)
    }

    /// Before a data-parallel run's first step: checks that every rank
    /// trains the same configuration and vocabulary with the same overlap
    /// setting from the same parameters and optimizer state, so that the
    /// ranks' sums line up (an error names the first rank that differs).
    fn check_agreement(&mut self) -> Result<()> {
        let Some(d) = &self.dist else {
            return Ok(());
        };
        let comm = d.comm.clone();
        let config =
            serde_json::to_vec(&(&self.config, self.task.vocab(), self.step, self.loss_scale))
                .map_err(|e| Error::invalid("configuration", format!("cannot encode: {e}")))?;
        dist::same_on_all(
            comm.as_ref(),
            "configuration (task, vocabulary, model, batch, optimizer, precision, seed, \
             step, loss scale)",
            &config,
        )?;
        dist::same_on_all(
            comm.as_ref(),
            "overlap setting (Trainer::set_overlap, RNN_WGPU_OVERLAP)",
            &[u8::from(d.overlap)],
        )?;
        self.check_replicas()?;
        if let Some(d) = &mut self.dist {
            d.agreed = true;
        }
        Ok(())
    }

    /// One training step on the next batch: records it, waits for it and
    /// returns its report ([`Trainer::begin_step`] then
    /// [`Trainer::finish_step`]). No step may be in flight.
    pub fn train_step(&mut self) -> Result<StepReport> {
        self.idle("train_step")?;
        self.begin_step()?;
        self.finish_step()?.ok_or_else(|| Error::Gpu {
            op: "train_step".into(),
            message: "internal: the step recorded is not in flight".into(),
        })
    }

    /// Steps recorded by [`Trainer::begin_step`] and not yet finished.
    pub fn steps_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether [`Trainer::begin_step`] may record a step while another is
    /// in flight: alone, yes; a data-parallel rank sums its gradients over
    /// the ranks on the host within each step (a readback and a write), so
    /// it waits for the device there anyway and runs one step at a time.
    ///
    /// Under dynamic loss scaling (f16) a step's scale depends on whether
    /// the steps before it skipped their updates. A step recorded while
    /// others are in flight takes the scale they lead to if none skips
    /// (overflows are rare), and its gate also stops its updates when the
    /// step before it skipped (a non-finite loss or norm); when the host
    /// then finds a skipped step, the steps recorded after it (all gated,
    /// so nothing of theirs was applied) are dropped and recorded again
    /// with the scale it left. The trajectory is the same as one step at a
    /// time.
    pub fn can_overlap(&self) -> bool {
        self.dist.is_none()
    }

    /// The loss scale of the next step recorded: the current one taken
    /// through every step in flight as if none skips (`None` without loss
    /// scaling).
    fn next_loss_scale(&self) -> Option<LossScale> {
        self.loss_scale.map(|mut s| {
            for _ in &self.in_flight {
                s.update(false);
            }
            s
        })
    }

    /// Records the next training step (the one after those in flight) and
    /// starts reading its stats, without waiting for the device: on the GPU
    /// the step is submitted and the host can prepare the next one while
    /// it runs. [`Trainer::finish_step`] returns the reports in order.
    ///
    /// A step recorded while another is in flight is gated on the device
    /// by the stats of the step before it ([`GateSpec`]): when the host
    /// will stop at that step (a non-finite loss or gradient norm under
    /// [`NonFinite::Error`], targets outside the vocabulary), the gated
    /// step's updates are skipped, so that stopping leaves the parameters
    /// and optimizer state exactly where one step at a time leaves them.
    /// Otherwise the gate changes no bit: the trajectory is the same as
    /// [`Trainer::train_step`]'s, step for step.
    pub fn begin_step(&mut self) -> Result<()> {
        if !self.in_flight.is_empty() && !self.can_overlap() {
            return Err(Error::invalid(
                "begin_step",
                "a data-parallel rank runs one step at a time (its sum over ranks \
                 waits for the device within the step); finish the step in flight first",
            ));
        }
        if self.dist.as_ref().is_some_and(|d| !d.agreed) {
            self.check_agreement()?;
        }
        let step = self.step + self.in_flight.len() as u64;
        let batch = self
            .task
            .train_batch(self.config.seed, step, self.config.batch)?;
        let lr = self.lr_at(step);
        let step_scale = self.next_loss_scale();
        let loss_scale = step_scale.map_or(1.0, |l| l.scale);
        let scales: Vec<f64> = self
            .upload_windows(&batch)?
            .into_iter()
            .map(|s| s * loss_scale)
            .collect();
        let rows = self.dist.as_ref().map(|d| BatchRows {
            offset: d.rows.start,
            global: self.config.batch,
        });
        let b = self.backend.clone();
        let n = self.model.layout().total;
        // The previous step's stats are still in the buffer (this step's
        // first loss overwrites them): gate this step's updates on them.
        let gated = !self.in_flight.is_empty();
        if gated {
            let gate = GateSpec {
                windows: self.windows.len(),
                stride: STATS_STRIDE,
                norm: NORM,
                loss: LOSS_SUM,
                invalid: INVALID,
                // Under loss scaling a skipped step changes the scale the
                // steps after it take: they are recorded again (finish_step).
                finite: self.config.non_finite == NonFinite::Error || self.loss_scale.is_some(),
            };
            b.gate_updates(&gate, &self.stats)?;
        }
        let updates_before = self.updates;
        // The state a window starts from: the one the previous window's
        // forward reached at this window's start.
        let mut carry: Option<State<B>> = None;
        for (c, w) in self.windows.clone().into_iter().enumerate() {
            let bufs = &self.window_bufs[c];
            self.model.zero_grads()?;
            let state = carry.as_ref().filter(|_| w.start > 0);
            let train = Train {
                seed: self.config.seed,
                step: step * self.windows.len() as u64 + c as u64,
                rows,
            };
            let (_, saved) = self.model.forward_train(&bufs.tokens, state, Some(train))?;
            match self.dist.as_ref().map(|d| (d.comm.clone(), d.overlap)) {
                None => self.model.backward_scaled(
                    &saved,
                    &bufs.targets,
                    scales[c],
                    &self.stats,
                    c * STATS_STRIDE,
                )?,
                Some((comm, overlap)) => {
                    let targets = bufs.targets.clone();
                    if !overlap {
                        self.model.backward_scaled(
                            &saved,
                            &targets,
                            scales[c],
                            &self.stats,
                            c * STATS_STRIDE,
                        )?;
                    }
                    // A one-byte exchange where the sum starts (before an
                    // overlapped backward, after a plain one): the time
                    // until every rank is there is waiting.
                    let start = std::time::Instant::now();
                    dist::any_rank(comm.as_ref(), false)?;
                    let arrived = start.elapsed();
                    let exposed = if overlap {
                        self.backward_overlapped(comm.as_ref(), &saved, &targets, scales[c], c)?
                    } else {
                        self.sum_over_ranks(comm.as_ref(), c)?;
                        start.elapsed() - arrived
                    };
                    if let Some(d) = &mut self.dist {
                        d.wait_time += arrived;
                        d.reduce_time += exposed;
                    }
                }
            }
            if let Some(next) = self.windows.get(c + 1)
                && next.start > 0
            {
                carry = Some(self.model.state_after(&saved, next.start - w.start)?);
            }
            // Gated, the sum of squares is added to the gate's 0 (the same
            // bits) or NaN (the update is skipped).
            let norm_idx = c * STATS_STRIDE + NORM;
            b.reduce(
                ReduceOp::SumSquares,
                self.model.grads(),
                0,
                n,
                &self.stats,
                norm_idx,
                gated,
            )?;
            self.updates += 1;
            let spec = UpdateSpec {
                n,
                step: self.updates,
                lr,
                max_norm: self.config.clip,
                norm_idx,
                // The summary's loss sum: a non-finite loss skips the update too.
                loss_idx: Some(c * STATS_STRIDE + LOSS_SUM),
                grad_scale: step_scale.map_or(1.0, |l| l.unscale()),
            };
            // In a 16-bit mode this also refreshes the copy the next
            // window's (and step's) passes read.
            self.model.optim_update(
                &self.config.optimizer,
                &spec,
                &self.s1,
                &self.s2,
                &self.stats,
            )?;
        }
        // The only readback of the step, started now and waited for by
        // finish_step.
        let stats = b.read_range_async(&self.stats, 0..self.windows.len() * STATS_STRIDE)?;
        self.in_flight.push_back(InFlight {
            step,
            updates: self.updates - updates_before,
            stats,
        });
        Ok(())
    }

    /// Waits for the oldest step in flight and returns its report (`None`
    /// when no step is in flight). On an error (a non-finite value under
    /// [`NonFinite::Error`], invalid targets) the steps recorded after it
    /// are dropped: their updates were skipped on the device, so the
    /// trainer is where [`Trainer::train_step`] leaves it after the same
    /// error, and the next step recorded is the failed one again.
    pub fn finish_step(&mut self) -> Result<Option<StepReport>> {
        let Some(done) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        let report = done
            .stats
            .wait()
            .and_then(|stats| self.step_report(done.step, &stats));
        match report {
            Ok(report) => {
                self.skipped += report.skipped as u64;
                if let Some(ls) = &mut self.loss_scale {
                    ls.update(report.skipped > 0);
                    if report.skipped > 0 {
                        // The steps after it took the scale of no skip and
                        // were gated (nothing of theirs applied): the next
                        // begin_step records them again.
                        self.drop_in_flight();
                    }
                }
                self.history.push(HistoryPoint {
                    step: report.step,
                    loss: report.loss,
                    accuracy: report.accuracy,
                });
                self.step += 1;
                Ok(Some(report))
            }
            Err(e) => {
                self.drop_in_flight();
                Err(e)
            }
        }
    }

    /// Forgets the steps in flight, whose updates were gated off: their
    /// reads finish (or fail) with the device; nothing is kept.
    fn drop_in_flight(&mut self) {
        for later in self.in_flight.drain(..) {
            let _ = later.stats.wait();
            self.updates -= later.updates;
        }
    }

    /// Fails when steps are in flight: `what` needs the state after the
    /// last step finished.
    fn idle(&self, what: &str) -> Result<()> {
        match self.in_flight.len() {
            0 => Ok(()),
            n => Err(Error::invalid(
                what,
                format!(
                    "{n} training steps are in flight; finish them first (Trainer::finish_step)"
                ),
            )),
        }
    }

    /// The report of step `step` from its stats (`windows × STATS_STRIDE`
    /// values); an error where the run must stop.
    fn step_report(&self, step: u64, stats: &[B::Elem]) -> Result<StepReport> {
        let stats: Vec<f64> = stats.iter().map(|v| v.f64()).collect();
        let mut total = XentSummary::default();
        let mut skipped = 0;
        let mut norm_sq = 0.0;
        for c in 0..self.windows.len() {
            let at = c * STATS_STRIDE;
            let s = XentSummary::from_slice(&stats[at..at + SUMMARY_LEN]);
            norm_sq = stats[at + NORM];
            let bad_loss = !s.sum.is_finite();
            if !norm_sq.is_finite() || bad_loss {
                // Under loss scaling, gradients that overflow f16 (a finite
                // loss) are expected now and then: skipped, and the scale halves.
                let overflow = self.loss_scale.is_some() && !bad_loss;
                if self.config.non_finite == NonFinite::Error && !overflow {
                    let (what, value) = if bad_loss {
                        ("loss", s.sum)
                    } else {
                        ("gradient norm", norm_sq.sqrt())
                    };
                    return Err(Error::NonFinite {
                        what: format!(
                            "{what} at step {step} (window {c}); the update was not applied"
                        ),
                        value,
                    });
                }
                skipped += 1;
            }
            total.count += s.count;
            total.correct += s.correct;
            total.invalid += s.invalid;
            total.sum += s.sum;
        }
        if total.invalid > 0 {
            return Err(Error::invalid(
                "targets",
                format!("{} targets are outside the vocabulary", total.invalid),
            ));
        }
        Ok(StepReport {
            step,
            loss: total.sum / total.count.max(1) as f64,
            accuracy: total.correct as f64 / total.count.max(1) as f64,
            tokens: total.count,
            grad_norm: norm_sq.sqrt() / self.loss_scale.map_or(1.0, |l| l.scale),
            skipped,
            loss_scale: self.loss_scale.map(|l| l.scale),
        })
    }

    /// Evaluates on the task's held-out problems (one forward, one
    /// readback of what the report needs: the loss summary and, for tasks
    /// scored by whole answers or closing tags, each position's predicted
    /// class, `[T·B]` classes instead of `[T·B, V]` logits).
    pub fn evaluate(&mut self) -> Result<EvalReport> {
        self.idle("evaluate")?;
        let problems = self.config.eval_problems;
        let batch = self.task.eval_batch(self.config.seed, problems)?;
        let shape = [batch.steps, batch.batch];
        let rows = Rows {
            rows: batch.steps * batch.batch,
            cols: self.config.model.vocab,
        };
        // Predictions are needed only to match whole answers or to score
        // closing tags.
        let answers = self.task.has_answers();
        let closing = self.task.has_closing_tags();
        // The held-out problems are the same at every evaluation: uploaded once.
        let bufs = match &self.eval_bufs {
            Some(bufs) => bufs,
            None => self.eval_bufs.insert(EvalBufs {
                tokens: self.backend.ints(&shape, &batch.inputs)?,
                targets: self.backend.ints(&shape, &batch.targets)?,
                predicted: match answers || closing {
                    true => Some(self.backend.ints(&[rows.rows], &vec![0; rows.rows])?),
                    false => None,
                },
            }),
        };
        let off = self.windows.len() * STATS_STRIDE;
        let fwd = self
            .model
            .evaluate(&bufs.tokens, &bufs.targets, &self.stats, off)?;
        if let Some(predicted) = &bufs.predicted {
            self.backend.argmax_rows(rows, &fwd.logits, predicted)?;
        }
        let wanted: Vec<&B::Ints> = bufs.predicted.iter().collect();
        let (summary, predicted) =
            self.backend
                .read_range_and_ints(&self.stats, off..off + SUMMARY_LEN, &wanted)?;
        let summary: Vec<f64> = summary.iter().map(|x| x.f64()).collect();
        let s = XentSummary::from_slice(&summary);
        let predicted = predicted.first();
        let exact_match = predicted
            .filter(|_| answers)
            .map(|p| exact_match_predicted(&batch, p));
        let closing_accuracy = predicted
            .filter(|_| closing)
            .map(|p| positions_right_predicted(&batch, &batch.closing, p));
        let report = EvalReport {
            step: self.step,
            loss: s.mean,
            token_accuracy: s.correct as f64 / s.count.max(1) as f64,
            exact_match,
            closing_accuracy,
            problems,
        };
        self.evals.push(report);
        Ok(report)
    }

    /// Parameters as f64, in layout order.
    pub fn read_params(&self) -> Result<Vec<f64>> {
        self.idle("read_params")?;
        self.backend.read_f64(self.model.params())
    }
}

/// Fraction of rows whose every answer step has its target as the argmax.
pub fn exact_match<T: Real>(batch: &Batch, logits: &[T], vocab: usize) -> f64 {
    exact_match_predicted(batch, &predictions(logits, vocab))
}

/// Fraction of rows whose every answer step's predicted class (time-major
/// `t·B + b`, the argmax of its logits) is its target.
pub fn exact_match_predicted(batch: &Batch, predicted: &[i32]) -> f64 {
    let bsz = batch.batch;
    let right = batch
        .answers
        .iter()
        .enumerate()
        .filter(|&(b, &(start, end))| {
            (start..end).all(|t| {
                let i = t * bsz + b;
                predicted
                    .get(i)
                    .is_some_and(|p| Some(p) == batch.targets.get(i))
            })
        })
        .count();
    right as f64 / batch.answers.len().max(1) as f64
}

/// Fraction of the time-major `positions` (`t·B + b`, e.g.
/// [`Batch::closing`]) whose target is the argmax of its logits.
pub fn positions_right<T: Real>(
    batch: &Batch,
    positions: &[usize],
    logits: &[T],
    vocab: usize,
) -> f64 {
    positions_right_predicted(batch, positions, &predictions(logits, vocab))
}

/// Fraction of the time-major `positions` whose predicted class is their target.
pub fn positions_right_predicted(batch: &Batch, positions: &[usize], predicted: &[i32]) -> f64 {
    let right = positions
        .iter()
        .filter(|&&i| {
            predicted
                .get(i)
                .zip(batch.targets.get(i))
                .is_some_and(|(p, t)| p == t)
        })
        .count();
    right as f64 / positions.len().max(1) as f64
}

/// The argmax of every row of `vocab` logits.
fn predictions<T: Real>(logits: &[T], vocab: usize) -> Vec<i32> {
    logits
        .chunks_exact(vocab.max(1))
        .map(|row| argmax(row) as i32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_windows() {
        let w = Bptt::Truncated { k1: 4, k2: 4 }.windows(10).unwrap();
        let spans: Vec<(usize, usize, usize)> =
            w.iter().map(|w| (w.start, w.end, w.loss_from)).collect();
        assert_eq!(spans, [(0, 4, 0), (4, 8, 4), (8, 10, 8)]);
        let w = Bptt::Truncated { k1: 3, k2: 5 }.windows(9).unwrap();
        let spans: Vec<(usize, usize, usize)> =
            w.iter().map(|w| (w.start, w.end, w.loss_from)).collect();
        assert_eq!(spans, [(0, 3, 0), (1, 6, 3), (4, 9, 6)]);
        assert_eq!(
            Bptt::Truncated { k1: 20, k2: 20 }.windows(9).unwrap(),
            Bptt::Full.windows(9).unwrap()
        );
        assert!(Bptt::Truncated { k1: 4, k2: 2 }.windows(9).is_err());
    }

    #[test]
    fn closing_tags_are_scored_at_their_positions() {
        let task = Task::new(TaskSpec::Xml {
            depth: 3,
            length: 30,
        })
        .unwrap();
        let b = task.eval_batch(1, 4).unwrap();
        let v = task.vocab().len();
        // Logits that predict every target except at the first closing position.
        let mut logits = vec![0.0f32; b.targets.len() * v];
        for (i, &t) in b.targets.iter().enumerate() {
            if t >= 0 {
                logits[i * v + t as usize] = 1.0;
            }
        }
        assert_eq!(positions_right(&b, &b.closing, &logits, v), 1.0);
        let first = b.closing[0];
        logits[first * v + b.targets[first] as usize] = -1.0;
        let expected = (b.closing.len() - 1) as f64 / b.closing.len() as f64;
        assert_eq!(positions_right(&b, &b.closing, &logits, v), expected);
        assert_eq!(positions_right(&b, &[], &logits, v), 0.0);
    }

    #[test]
    fn evaluations_saved_before_closing_tag_accuracy_still_load() {
        let old = r#"{"step":5,"loss":0.5,"token_accuracy":0.75,"exact_match":0.5,"problems":10}"#;
        let e: EvalReport = serde_json::from_str(old).unwrap();
        assert_eq!(e.closing_accuracy, None);
        assert_eq!(e.exact_match, Some(0.5));
    }
}
