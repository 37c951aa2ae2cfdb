//! The `train` main job: a training run with progress, periodic evaluation,
//! checkpoints, a loss plot and a summary.
//!
//! Needs the `cli` feature (on by default): it draws a progress bar (indicatif)
//! and the loss plot (plotters).
#![cfg(feature = "cli")]

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::plot::write_svg;
use super::{EvalReport, TrainConfig, Trainer};
use crate::backend::{Backend, BackendChoice, choose};
use crate::error::{Error, Result};
use crate::with_backend;

/// Everything `rnn-wgpu train` does besides the run's configuration.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run (ignored when resuming: the checkpoint's is used).
    pub config: TrainConfig,
    /// Where computation happens.
    pub backend: BackendChoice,
    /// Checkpoint file, written every `save_every` steps and at the end.
    pub checkpoint: Option<PathBuf>,
    /// Steps between checkpoints (0: only at the end).
    pub save_every: u64,
    /// Continue from `checkpoint`.
    pub resume: bool,
    /// Loss-curve SVG written at the end.
    pub plot: Option<PathBuf>,
    /// Steps between held-out evaluations (0: only at the end).
    pub eval_every: u64,
    /// Stop early after this many seconds (the final evaluation still runs).
    pub time_limit: Option<f64>,
    /// When resuming: train up to this total instead of the checkpoint's
    /// (the schedule's horizon moves with it).
    pub extend_to: Option<u64>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
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
    /// Held-out exact match (`copy`, `add`) or token accuracy (`text`).
    pub accuracy: f64,
    /// Held-out loss.
    pub eval_loss: f64,
    /// Wall time of this invocation.
    pub seconds: f64,
    /// Input tokens per second.
    pub tokens_per_second: f64,
    /// Updates skipped for non-finite gradients.
    pub skipped_updates: u64,
    /// Checkpoint written, if any.
    pub checkpoint: Option<String>,
    /// Plot written, if any.
    pub plot: Option<String>,
}

/// Runs training on the backend `opts.backend` asks for.
pub fn run(opts: &RunOptions, log: &mut dyn FnMut(&str)) -> Result<RunSummary> {
    let (chosen, why) = choose(opts.backend)?;
    log(&format!("backend: {why}"));
    let name = chosen.name().to_string();
    with_backend!(chosen, b => run_on(b, &name, &why, opts, log))
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
        None => format!(
            "held-out: token accuracy {}, loss {:.4} (perplexity {:.2})",
            percent(e.token_accuracy),
            e.loss,
            e.loss.exp()
        ),
    }
}

fn run_on<B: Backend>(
    backend: B,
    backend_name: &str,
    why: &str,
    opts: &RunOptions,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary> {
    for (arg, p) in [("--checkpoint", &opts.checkpoint), ("--plot", &opts.plot)] {
        if let Some(p) = p {
            crate::eval::check_output_path(arg, p)?;
        }
    }
    let mut trainer = match (&opts.checkpoint, opts.resume) {
        (Some(path), true) => {
            let mut t = Trainer::load(backend, path)?;
            if let Some(total) = opts.extend_to {
                t.set_total_steps(total);
            }
            log(&format!("resumed {} at step {}", path.display(), t.step()));
            t
        }
        (None, true) => return Err(Error::invalid("--resume", "needs --checkpoint PATH")),
        _ => Trainer::new(backend, opts.config.clone())?,
    };
    let cfg = trainer.config().clone();
    let m = &cfg.model;
    log(&format!(
        "task {} | {} H={} L={} | {} params | batch {} × {} steps | {} lr {} | {} steps",
        cfg.task.name(),
        m.cell.name(),
        m.hidden,
        m.layers,
        trainer.model().layout().total,
        cfg.batch,
        trainer.task().steps(),
        cfg.optimizer.name(),
        cfg.optimizer.lr(),
        cfg.steps
    ));
    let start = Instant::now();
    let first = trainer.step();
    let total = cfg.steps;
    let bar = if opts.progress && first < total {
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
    while trainer.step() < total {
        if let Some(limit) = opts.time_limit
            && start.elapsed().as_secs_f64() > limit
        {
            log(&format!(
                "time limit of {limit} s reached at step {}",
                trainer.step()
            ));
            break;
        }
        let r = trainer.train_step()?;
        smooth = Some(smooth.map_or(r.loss, |s| 0.95 * s + 0.05 * r.loss));
        smooth_acc = 0.95 * smooth_acc + 0.05 * r.accuracy;
        let done = trainer.step();
        if let Some(bar) = &bar {
            let rate =
                (done - first) as f64 * tokens_per_step / start.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(done);
            bar.set_message(format!(
                "loss {:.4} acc {} {:.0} tok/s",
                smooth.unwrap_or(r.loss),
                percent(smooth_acc),
                rate
            ));
        }
        if opts.eval_every > 0 && done.is_multiple_of(opts.eval_every) && done < total {
            let e = trainer.evaluate()?;
            let line = format!("step {done}: loss {:.4}; {}", r.loss, describe_eval(&e));
            match &bar {
                Some(bar) if !bar.is_hidden() => bar.println(line),
                _ => log(&line),
            }
        }
        if let (Some(path), true) = (&opts.checkpoint, opts.save_every > 0)
            && done.is_multiple_of(opts.save_every)
        {
            trainer.save(path)?;
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let seconds = start.elapsed().as_secs_f64();
    let e = trainer.evaluate()?;
    log(&format!("step {}: {}", trainer.step(), describe_eval(&e)));
    if let Some(path) = &opts.checkpoint {
        trainer.save(path)?;
        log(&format!("checkpoint: {}", path.display()));
    }
    if let Some(path) = &opts.plot {
        let title = format!(
            "{} — {} H={} L={}, {} lr {}",
            cfg.task.name(),
            m.cell.name(),
            m.hidden,
            m.layers,
            cfg.optimizer.name(),
            cfg.optimizer.lr()
        );
        write_svg(path, &title, trainer.history(), trainer.evals())?;
        log(&format!("plot: {}", path.display()));
    }
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
        eval_loss: e.loss,
        seconds,
        tokens_per_second: trained as f64 * tokens_per_step / seconds.max(1e-9),
        skipped_updates: trainer.skipped(),
        checkpoint: opts.checkpoint.as_ref().map(|p| p.display().to_string()),
        plot: opts.plot.as_ref().map(|p| p.display().to_string()),
    })
}
