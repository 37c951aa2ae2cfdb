//! The `rnn-wgpu` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rnn_wgpu::backend::GpuBackend;
use rnn_wgpu::gpu::{GpuContext, list_adapters};

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

#[derive(Subcommand)]
enum Cmd {
    /// List the GPU adapters wgpu can see.
    Adapters,
    /// Run every kernel on the best adapter against the CPU reference and print a table.
    Selfcheck,
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
            let gpu = GpuBackend::new(std::sync::Arc::new(ctx))?;
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
