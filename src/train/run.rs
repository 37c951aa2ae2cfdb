//! The `train` main job: a training run with progress, periodic evaluation,
//! checkpoints, a loss plot and a summary.
//!
//! Needs the `cli` feature (on by default): it draws a progress bar (indicatif)
//! and the loss plot (plotters).
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::dist::{Collective, same_on_all};
use super::plot::write_svg;
use super::{EvalReport, TrainConfig, Trainer};
use crate::backend::{Backend, BackendChoice, Chosen, choose_for_rank};
use crate::error::{Error, Result};
use crate::precision::Precision;
use crate::with_backend;

/// What a new run (not a resume) does when its checkpoint file exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refuse to start: the file holds another run.
    Refuse,
    /// Replace it (`--overwrite`); the old file stays intact until the first save.
    Overwrite,
    /// Write to the first free `<stem>-N.<ext>` beside it instead (N = 2, 3, …).
    Number,
}

/// Where the loss curve goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlotPath {
    /// No plot.
    Off,
    /// This file.
    At(PathBuf),
    /// `<checkpoint stem>-loss.svg` beside the checkpoint (none without one).
    BesideCheckpoint,
}

/// Everything `rnn-wgpu train` does besides the run's configuration.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run (ignored when resuming: the checkpoint's is used).
    pub config: TrainConfig,
    /// Where computation happens.
    pub backend: BackendChoice,
    /// Checkpoint file, written every `save_every` steps and at the end.
    pub checkpoint: Option<PathBuf>,
    /// What a new run does when `checkpoint` exists already.
    pub existing: Existing,
    /// Steps between checkpoints (0: only at the end).
    pub save_every: u64,
    /// Continue from `checkpoint`.
    pub resume: bool,
    /// Loss-curve SVG written at the end.
    pub plot: PlotPath,
    /// Steps between held-out evaluations (0: only at the end; `None`: a
    /// tenth of the run's total).
    pub eval_every: Option<u64>,
    /// Stop early after this many seconds (the final evaluation still runs).
    pub time_limit: Option<f64>,
    /// When resuming: train up to this total instead of the checkpoint's
    /// (the schedule's horizon moves with it).
    pub extend_to: Option<u64>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Set (by a Ctrl-C handler, say) to stop after the current step: the
    /// run then evaluates, saves its checkpoint and plot, and returns with
    /// [`RunSummary::interrupted`] set.
    pub stop: Option<Arc<AtomicBool>>,
    /// The ranks of a data-parallel run (`None`, or a group of one: alone).
    /// Every rank calls [`run`] with the same options; rank 0 alone logs,
    /// evaluates and writes the checkpoint and the plot, and every rank
    /// returns rank 0's evaluation in its summary (the files are named only
    /// in rank 0's).
    pub comm: Option<Arc<dyn Collective>>,
    /// This rank's place among the ranks on its machine: local rank k takes
    /// the k-th adapter ([`choose_for_rank`]). `None`: the rank's number.
    pub local_rank: Option<usize>,
    /// Whether a data-parallel run sums gradients while the backward goes on
    /// ([`Trainer::set_overlap`]; rank 0's setting is every rank's).
    pub overlap: bool,
}

/// The loss plot's default path for `checkpoint`: `<stem>-loss.svg` beside it.
pub fn plot_beside(checkpoint: &Path) -> PathBuf {
    let stem = checkpoint
        .file_stem()
        .map_or_else(|| "run".into(), |s| s.to_string_lossy());
    checkpoint.with_file_name(format!("{stem}-loss.svg"))
}

/// `path` numbered `n`: `dir/stem.ext` → `dir/stem-n.ext` (`n` ≥ 2).
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "run".into(), |s| s.to_string_lossy());
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    path.with_file_name(name)
}

/// True when `a` and `b` name the same file (the same name in the same
/// directory, however the directories are spelled).
fn same_path(a: &Path, b: &Path) -> bool {
    let dir = |p: &Path| {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::canonicalize(parent.unwrap_or(Path::new("."))).ok()
    };
    a == b || (a.file_name() == b.file_name() && dir(a).is_some() && dir(a) == dir(b))
}

/// Numbered names tried before giving up.
const MAX_NUMBER: u32 = 100_000;

/// A checkpoint path reserved for a new run: created empty (atomically, so
/// two runs started together never share it) and removed again if the run
/// ends before writing anything to it.
#[derive(Debug)]
struct Claim(Option<PathBuf>);

impl Drop for Claim {
    fn drop(&mut self) {
        // A checkpoint is never empty: an empty file is still our placeholder.
        if let Some(p) = &self.0
            && std::fs::metadata(p).is_ok_and(|m| m.len() == 0)
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Creates `path` if it does not exist: `Ok(false)` when it does.
fn create_new(path: &Path) -> Result<bool> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The checkpoint a new run writes, by `existing`, with its claim.
fn claim(
    path: &Path,
    existing: Existing,
    plot: &PlotPath,
    log: &mut dyn FnMut(&str),
) -> Result<(PathBuf, Claim)> {
    match existing {
        Existing::Overwrite => Ok((path.to_path_buf(), Claim(None))),
        Existing::Refuse => {
            if create_new(path)? {
                return Ok((path.to_path_buf(), Claim(Some(path.to_path_buf()))));
            }
            let what = if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
                "exists (empty: a run that is starting, or one stopped before its first save)"
            } else {
                "exists and holds another run"
            };
            Err(Error::invalid(
                "--checkpoint",
                format!(
                    "{} {what}; --resume continues it, --overwrite replaces it",
                    path.display()
                ),
            ))
        }
        Existing::Number => {
            let beside = *plot == PlotPath::BesideCheckpoint;
            for n in 1..=MAX_NUMBER {
                let p = if n == 1 {
                    path.to_path_buf()
                } else {
                    numbered(path, n)
                };
                // A default plot is numbered with its checkpoint: skip a
                // number whose plot is there too.
                if beside && plot_beside(&p).exists() {
                    continue;
                }
                if create_new(&p)? {
                    if n > 1 {
                        log(&format!(
                            "{} exists: this run is written to {}",
                            path.display(),
                            p.display()
                        ));
                    }
                    return Ok((p.clone(), Claim(Some(p))));
                }
            }
            Err(Error::invalid(
                "--checkpoint",
                format!(
                    "{} and {MAX_NUMBER} numbered variants exist; give --checkpoint PATH",
                    path.display()
                ),
            ))
        }
    }
}

/// The final summary (also printed as one JSON line with `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// Task name.
    pub task: String,
    /// Cell name.
    pub cell: String,
    /// `gpu`, `cpu` or `cpu64`.
    pub backend: String,
    /// What was used and why.
    pub device: String,
    /// Steps completed.
    pub steps: u64,
    /// Mean training loss over the last steps (up to 50).
    pub final_loss: f64,
    /// Held-out exact match (`copy`, `add`) or token accuracy (`text`, `xml`).
    pub accuracy: f64,
    /// Held-out accuracy on the characters of closing tags' names (`xml`,
    /// see [`EvalReport::closing_accuracy`]); `None` for the other tasks.
    pub closing_accuracy: Option<f64>,
    /// Held-out loss.
    pub eval_loss: f64,
    /// Wall time of this invocation.
    pub seconds: f64,
    /// Input tokens per second.
    pub tokens_per_second: f64,
    /// Updates skipped for non-finite gradients.
    pub skipped_updates: u64,
    /// Storage precision (`f32`, `f16`, `bf16`).
    pub precision: String,
    /// The loss scale at the end (f16 training; `None` otherwise).
    pub loss_scale: Option<f64>,
    /// Steps whose gradients overflowed f16 (skipped, the scale halved;
    /// counted in `skipped_updates` too).
    pub loss_scale_overflows: Option<u64>,
    /// Checkpoint written, if any.
    pub checkpoint: Option<String>,
    /// Plot written, if any.
    pub plot: Option<String>,
    /// True when [`RunOptions::stop`] ended the run early.
    pub interrupted: bool,
    /// Ranks that trained (1 alone).
    pub world_size: usize,
    /// This rank's seconds in the sums over ranks once every rank was there
    /// (reading the gradients, the exchange, the sum, writing back); 0 alone.
    pub reduce_seconds: f64,
    /// This rank's seconds waiting for the other ranks to reach a sum (the
    /// slowest rank sets the pace); 0 alone.
    pub reduce_wait_seconds: f64,
}

/// What a backend is, for comparing ranks: its kind and adapter name.
fn identity(chosen: &Chosen) -> String {
    match chosen {
        Chosen::Gpu(g) => format!("gpu on {}", g.ctx().adapter().name),
        other => other.name().to_string(),
    }
}

/// Why a run stops before a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// [`RunOptions::stop`] was set (on some rank).
    Interrupted,
    /// [`RunOptions::time_limit`] passed (on some rank).
    TimeLimit,
}

/// Whether the run stops before step `step` is recorded (every rank stops
/// at the same step: none waits for a step the others skip), saying so
/// through `log`.
fn stop_before<B: Backend>(
    trainer: &Trainer<B>,
    opts: &RunOptions,
    start: &Instant,
    step: u64,
    log: &mut dyn FnMut(&str),
) -> Result<Option<Stop>> {
    let asked = opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
    if trainer.any_rank(asked)? {
        log(&format!(
            "interrupted at step {step}: evaluating and saving"
        ));
        return Ok(Some(Stop::Interrupted));
    }
    let over = opts
        .time_limit
        .is_some_and(|limit| start.elapsed().as_secs_f64() > limit);
    if let (Some(limit), true) = (opts.time_limit, trainer.any_rank(over)?) {
        log(&format!("time limit of {limit} s reached at step {step}"));
        return Ok(Some(Stop::TimeLimit));
    }
    Ok(None)
}

/// Runs training on the backend `opts.backend` asks for.
///
/// A new run never replaces an existing checkpoint unless `opts.existing` is
/// [`Existing::Overwrite`]; with [`Existing::Number`] it takes the first free
/// numbered name (and says so through `log`).
pub fn run(opts: &RunOptions, log: &mut dyn FnMut(&str)) -> Result<RunSummary> {
    let comm = opts.comm.clone().filter(|c| c.size() > 1);
    match &comm {
        Some(c) if c.rank() != 0 => {
            // Another rank's files are rank 0's to check and write.
            let (chosen, why) = choose_rank_backend(opts, c.as_ref())?;
            let name = chosen.name().to_string();
            let paths = Paths {
                checkpoint: opts.checkpoint.clone(),
                plot: None,
            };
            let mut quiet = |_: &str| {};
            with_backend!(chosen, b => run_on(b, &name, &why, opts, &paths, &mut quiet))
        }
        _ => run_root(opts, log),
    }
}

/// The backend of a rank, checked to be the same on every rank: ranks on
/// different kinds of device would round differently and drift apart.
fn choose_rank_backend(opts: &RunOptions, comm: &dyn Collective) -> Result<(Chosen, String)> {
    let local = opts.local_rank.unwrap_or(comm.rank());
    let (chosen, why) = choose_for_rank(opts.backend, Some(local))?;
    let id = identity(&chosen);
    same_on_all(comm, "backend", id.as_bytes()).map_err(|e| Error::Distributed {
        rank: comm.rank(),
        message: format!(
            "{e} (this rank: {id}); every rank needs the same kind of device \
             (pass the same --backend, or RNN_WGPU_ADAPTER)"
        ),
    })?;
    Ok((chosen, why))
}

/// [`run`] alone, or as rank 0 of a data-parallel run.
fn run_root(opts: &RunOptions, log: &mut dyn FnMut(&str)) -> Result<RunSummary> {
    if let Some(p) = &opts.checkpoint {
        crate::eval::check_output_path("--checkpoint", p)?;
    }
    if let Some(t) = opts.time_limit
        && !(t > 0.0 && t.is_finite())
    {
        return Err(Error::invalid(
            "--time-limit",
            format!("{t} must be a positive number of seconds"),
        ));
    }
    if let PlotPath::At(p) = &opts.plot {
        crate::eval::check_output_path("--plot", p)?;
        if opts.checkpoint.as_deref().is_some_and(|c| same_path(p, c)) {
            return Err(Error::invalid(
                "--plot",
                format!(
                    "{} is the checkpoint's path; give the plot its own",
                    p.display()
                ),
            ));
        }
        // A new run's plot replaces no file unless asked to (a resumed run
        // redraws its own plot).
        if !opts.resume && opts.existing != Existing::Overwrite && p.exists() {
            return Err(Error::invalid(
                "--plot",
                format!("{} exists; --overwrite replaces it", p.display()),
            ));
        }
    }
    let (checkpoint, _claim) = match (&opts.checkpoint, opts.resume) {
        (None, true) => return Err(Error::invalid("--resume", "needs --checkpoint PATH")),
        (Some(p), false) => {
            let (p, c) = claim(p, opts.existing, &opts.plot, log)?;
            (Some(p), c)
        }
        (p, _) => (p.clone(), Claim(None)),
    };
    let plot = match (&opts.plot, &checkpoint) {
        (PlotPath::At(p), _) => Some(p.clone()),
        (PlotPath::BesideCheckpoint, Some(c)) => Some(plot_beside(c)),
        _ => None,
    };
    let (chosen, why) = match opts.comm.as_ref().filter(|c| c.size() > 1) {
        Some(c) => {
            let (chosen, why) = choose_rank_backend(opts, c.as_ref())?;
            log(&format!(
                "{} ranks, data-parallel; rank 0's backend: {why}",
                c.size()
            ));
            (chosen, why)
        }
        None => {
            let (chosen, why) = choose_for_rank(opts.backend, None)?;
            log(&format!("backend: {why}"));
            (chosen, why)
        }
    };
    let name = chosen.name().to_string();
    let paths = Paths { checkpoint, plot };
    with_backend!(chosen, b => run_on(b, &name, &why, opts, &paths, log))
}

/// The files a run writes, once chosen.
struct Paths {
    checkpoint: Option<PathBuf>,
    plot: Option<PathBuf>,
}

fn percent(v: f64) -> String {
    format!("{:.1} %", 100.0 * v)
}

fn describe_eval(e: &EvalReport) -> String {
    match e.exact_match {
        Some(x) => format!(
            "held-out: exact match {} of {} problems, token accuracy {}, loss {:.4}",
            percent(x),
            e.problems,
            percent(e.token_accuracy),
            e.loss
        ),
        None => {
            let closing = e.closing_accuracy.map_or_else(String::new, |c| {
                format!(
                    ", closing-tag accuracy {} ({} documents)",
                    percent(c),
                    e.problems
                )
            });
            format!(
                "held-out: token accuracy {}{closing}, loss {:.4} (perplexity {:.2})",
                percent(e.token_accuracy),
                e.loss,
                e.loss.exp()
            )
        }
    }
}

fn run_on<B: Backend>(
    backend: B,
    backend_name: &str,
    why: &str,
    opts: &RunOptions,
    paths: &Paths,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary> {
    let comm = opts.comm.clone().filter(|c| c.size() > 1);
    let root = comm.as_ref().is_none_or(|c| c.rank() == 0);
    let mut trainer = match (&paths.checkpoint, opts.resume) {
        (Some(path), true) => {
            let mut t = match &comm {
                Some(c) => Trainer::load_data_parallel(backend, path, c.clone())?,
                None => Trainer::load(backend, path)?,
            };
            if let Some(total) = opts.extend_to {
                if total < t.step() {
                    return Err(Error::invalid(
                        "--steps",
                        format!(
                            "{total} is below the {} steps {} has trained already",
                            t.step(),
                            path.display()
                        ),
                    ));
                }
                t.set_total_steps(total);
            }
            log(&format!("resumed {} at step {}", path.display(), t.step()));
            t
        }
        (None, true) => return Err(Error::invalid("--resume", "needs --checkpoint PATH")),
        _ => match &comm {
            Some(c) => Trainer::data_parallel(backend, opts.config.clone(), c.clone())?,
            None => Trainer::new(backend, opts.config.clone())?,
        },
    };
    // Every rank takes rank 0's setting (an environment variable need not
    // reach every machine).
    let mut overlap = vec![u8::from(opts.overlap)];
    if let Some(c) = &comm {
        c.broadcast(0, &mut overlap)?;
    }
    trainer.set_overlap(overlap.first().is_some_and(|&o| o != 0));
    let cfg = trainer.config().clone();
    let m = &cfg.model;
    log(&format!(
        "task {} | {} | {} params | batch {} × {} steps | {} lr {} | {} steps{}",
        cfg.task.name(),
        m.describe_stack(),
        trainer.model().layout().total,
        cfg.batch,
        trainer.task().steps(),
        cfg.optimizer.name(),
        cfg.optimizer.lr(),
        cfg.steps,
        match cfg.precision {
            Precision::F32 => String::new(),
            Precision::F16 => " | f16 storage, dynamic loss scaling".into(),
            p => format!(" | {p} storage"),
        }
    ));
    let start = Instant::now();
    let first = trainer.step();
    let total = cfg.steps;
    let eval_every = opts.eval_every.unwrap_or((total / 10).max(1));
    let bar = if opts.progress && root && first < total {
        let bar = ProgressBar::new(total);
        bar.set_position(first);
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:30.cyan/blue} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Some(bar)
    } else {
        None
    };
    let tokens_per_step = (trainer.task().steps() * cfg.batch) as f64;
    let mut smooth: Option<f64> = None;
    let mut smooth_acc = 0.0;
    let mut interrupted = false;
    // The host reads a step's parameters only at an evaluation or a
    // checkpoint: there it waits for the step; elsewhere the next step is
    // recorded (on the GPU: uploaded and submitted) while the one before
    // runs, and that one's loss is read afterwards. The trajectory is the
    // same bit for bit (see Trainer::begin_step). A data-parallel rank
    // runs one step at a time (Trainer::can_overlap).
    let overlap = trainer.can_overlap();
    let saves = paths.checkpoint.is_some() && opts.save_every > 0 && root;
    let waits_before = |s: u64| {
        (eval_every > 0 && s.is_multiple_of(eval_every) && s < total)
            || (saves && s.is_multiple_of(opts.save_every))
    };
    let mut stop_after = false;
    while trainer.step() < total {
        if trainer.steps_in_flight() == 0 {
            match stop_before(&trainer, opts, &start, trainer.step(), log)? {
                Some(stop) => {
                    interrupted |= stop == Stop::Interrupted;
                    break;
                }
                None => trainer.begin_step()?,
            }
        }
        // One step ahead, unless the host must see the parameters after
        // the step in flight first (or it is the last).
        let ahead = trainer.step() + 1;
        if overlap && ahead < total && !waits_before(ahead) {
            match stop_before(&trainer, opts, &start, ahead, log)? {
                Some(stop) => {
                    interrupted |= stop == Stop::Interrupted;
                    stop_after = true;
                }
                None => trainer.begin_step()?,
            }
        }
        let Some(r) = trainer.finish_step()? else {
            break;
        };
        smooth = Some(smooth.map_or(r.loss, |s| 0.95 * s + 0.05 * r.loss));
        smooth_acc = 0.95 * smooth_acc + 0.05 * r.accuracy;
        let done = trainer.step();
        // (f16: the loss scale, a power of two.)
        let scale = r
            .loss_scale
            .map_or_else(String::new, |s| format!(" scale 2^{}", s.log2().round()));
        if let Some(bar) = &bar {
            let rate =
                (done - first) as f64 * tokens_per_step / start.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(done);
            bar.set_message(format!(
                "loss {:.4} acc {} {:.0} tok/s{scale}",
                smooth.unwrap_or(r.loss),
                percent(smooth_acc),
                rate
            ));
        }
        if eval_every > 0 && done.is_multiple_of(eval_every) && done < total {
            if root {
                let e = trainer.evaluate()?;
                let line = format!(
                    "step {done}: loss {:.4}{scale}; {}",
                    r.loss,
                    describe_eval(&e)
                );
                match &bar {
                    Some(bar) if !bar.is_hidden() => bar.println(line),
                    _ => log(&line),
                }
            }
            trainer.check_replicas()?;
        }
        if let (Some(path), true) = (&paths.checkpoint, saves)
            && done.is_multiple_of(opts.save_every)
        {
            trainer.save(path)?;
        }
        if stop_after {
            break;
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let seconds = start.elapsed().as_secs_f64();
    trainer.check_replicas()?;
    let e = match &comm {
        None => trainer.evaluate()?,
        Some(c) => {
            // Rank 0 evaluates and tells the others.
            let mut bytes = Vec::new();
            if root {
                let e = trainer.evaluate()?;
                bytes = serde_json::to_vec(&e).map_err(|err| Error::Distributed {
                    rank: 0,
                    message: format!("cannot encode the evaluation: {err}"),
                })?;
            }
            c.broadcast(0, &mut bytes)?;
            serde_json::from_slice(&bytes).map_err(|err| Error::Distributed {
                rank: c.rank(),
                message: format!("rank 0's evaluation did not arrive whole: {err}"),
            })?
        }
    };
    log(&format!("step {}: {}", trainer.step(), describe_eval(&e)));
    if let (Some(path), true) = (&paths.checkpoint, root) {
        trainer.save(path)?;
        log(&format!("checkpoint: {}", path.display()));
    }
    if let (Some(path), true) = (&paths.plot, root) {
        let title = format!(
            "{} — {}, {} lr {}",
            cfg.task.name(),
            m.describe_stack(),
            cfg.optimizer.name(),
            cfg.optimizer.lr()
        );
        write_svg(path, &title, trainer.history(), trainer.evals())?;
        log(&format!("plot: {}", path.display()));
    }
    // No rank ends before rank 0 has written its files: a launcher ends the
    // whole job when a rank exits non-zero (an interrupted run does).
    trainer.any_rank(false)?;
    let hist = trainer.history();
    let tail = &hist[hist.len().saturating_sub(50)..];
    let final_loss = tail.iter().map(|p| p.loss).sum::<f64>() / tail.len().max(1) as f64;
    let trained = trainer.step() - first;
    Ok(RunSummary {
        task: cfg.task.name().into(),
        cell: m.cell.name().into(),
        backend: backend_name.into(),
        device: why.into(),
        steps: trainer.step(),
        final_loss,
        accuracy: e.exact_match.unwrap_or(e.token_accuracy),
        closing_accuracy: e.closing_accuracy,
        eval_loss: e.loss,
        seconds,
        tokens_per_second: trained as f64 * tokens_per_step / seconds.max(1e-9),
        skipped_updates: trainer.skipped(),
        precision: cfg.precision.name().into(),
        loss_scale: trainer.loss_scale().map(|s| s.scale),
        loss_scale_overflows: trainer.loss_scale().map(|s| s.overflows),
        checkpoint: paths.checkpoint.as_ref().map(|p| p.display().to_string()),
        plot: paths.plot.as_ref().map(|p| p.display().to_string()),
        interrupted,
        world_size: trainer.world_size(),
        reduce_seconds: trainer.reduce_seconds().0,
        reduce_wait_seconds: trainer.reduce_seconds().1,
    })
}
