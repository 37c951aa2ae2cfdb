//! The `rnn-wgpu` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use rnn_wgpu::backend::{BackendChoice, GpuBackend};
use rnn_wgpu::eval::{EvalOptions, run as run_eval};
use rnn_wgpu::gpu::{GpuContext, list_adapters};
use rnn_wgpu::gradcheck::GradCheck;
use rnn_wgpu::nn::RnnConfig;
use rnn_wgpu::nn::case::{RnnCase, check_case_gradients};
use rnn_wgpu::ops::cell::{Cell, Nonlinearity};

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

#[derive(Clone, Copy, ValueEnum)]
enum NonlinearityArg {
    Tanh,
    Relu,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum CellArg {
    Lstm,
    Gru,
    RnnTanh,
    RnnRelu,
    All,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the GPU adapters wgpu can see.
    Adapters,
    /// Run every kernel on the best adapter against the CPU reference and print a table.
    Selfcheck,
    /// Run a PyTorch nn.LSTM / nn.GRU / nn.RNN state_dict on inputs from a safetensors file.
    Eval {
        /// The module's state_dict, saved with safetensors (f32).
        #[arg(long)]
        weights: PathBuf,
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
    },
    /// Check every gradient of a recurrent stack against finite differences (CPU, f64).
    Gradcheck {
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
    },
}

#[allow(clippy::too_many_arguments)]
fn gradcheck(
    cell: CellArg,
    input: usize,
    hidden: usize,
    layers: usize,
    bidirectional: bool,
    steps: usize,
    batch: usize,
    lengths: bool,
    seed: u64,
) -> rnn_wgpu::Result<bool> {
    let cells = match cell {
        CellArg::Lstm => vec![Cell::Lstm],
        CellArg::Gru => vec![Cell::Gru],
        CellArg::RnnTanh => vec![Cell::Rnn(Nonlinearity::Tanh)],
        CellArg::RnnRelu => vec![Cell::Rnn(Nonlinearity::Relu)],
        CellArg::All => vec![
            Cell::Lstm,
            Cell::Gru,
            Cell::Rnn(Nonlinearity::Tanh),
            Cell::Rnn(Nonlinearity::Relu),
        ],
    };
    for (arg, v) in [("--steps", steps), ("--batch", batch)] {
        if v == 0 {
            return Err(rnn_wgpu::Error::invalid(arg, "must be at least 1"));
        }
    }
    let gc = GradCheck::default();
    let mut ok = true;
    println!(
        "central differences, h = {:e}; pass when |analytic - numeric| <= {:e} + {:e}·max(|analytic|, |numeric|)",
        gc.h, gc.tol.abs, gc.tol.rel
    );
    for cell in cells {
        let cfg = RnnConfig::new(cell, input, hidden)
            .layers(layers)
            .bidirectional(bidirectional);
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

fn run(cli: Cli) -> rnn_wgpu::Result<bool> {
    match cli.cmd {
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
        Cmd::Selfcheck => {
            let ctx = GpuContext::from_env()?;
            println!("adapter: {}", ctx.adapter());
            let gpu = GpuBackend::new(Arc::new(ctx))?;
            let (report, secs) = rnn_wgpu::selfcheck::selfcheck(&gpu);
            print!("{}", report.table());
            let failed = report.rows.iter().filter(|r| !r.pass).count();
            println!(
                "{} checks, {} failed, {:.1} s",
                report.rows.len(),
                failed,
                secs
            );
            Ok(report.passed())
        }
        Cmd::Eval {
            weights,
            inputs,
            out,
            backend,
            backward,
            nonlinearity,
        } => {
            let opts = EvalOptions {
                weights,
                inputs,
                out,
                backend: backend.into(),
                backward,
                nonlinearity: nonlinearity.map(|n| match n {
                    NonlinearityArg::Tanh => Nonlinearity::Tanh,
                    NonlinearityArg::Relu => Nonlinearity::Relu,
                }),
            };
            println!("{}", run_eval(&opts)?);
            Ok(true)
        }
        Cmd::Gradcheck {
            cell,
            input,
            hidden,
            layers,
            bidirectional,
            steps,
            batch,
            lengths,
            seed,
        } => gradcheck(
            cell,
            input,
            hidden,
            layers,
            bidirectional,
            steps,
            batch,
            lengths,
            seed,
        ),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
