//! Picking a backend from a user's choice (`auto`, `gpu`, `cpu`, `cpu64`).

use std::sync::Arc;

use super::{CpuBackend, GpuBackend};
use crate::error::{Error, Result};
use crate::gpu::{ContextOptions, GpuContext};

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// A hardware GPU if there is one, else the CPU path (a software adapter
    /// such as llvmpipe is far slower than the CPU path, so it is not used).
    #[default]
    Auto,
    /// The best GPU adapter, software or not.
    Gpu,
    /// The CPU path in f32.
    Cpu,
    /// The CPU path in f64 (the reference precision).
    Cpu64,
}

impl BackendChoice {
    /// Parses `auto`, `gpu`, `cpu` or `cpu64`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => BackendChoice::Auto,
            "gpu" => BackendChoice::Gpu,
            "cpu" => BackendChoice::Cpu,
            "cpu64" => BackendChoice::Cpu64,
            other => {
                return Err(Error::invalid(
                    "backend",
                    format!("unknown backend {other:?}; expected auto, gpu, cpu or cpu64"),
                ));
            }
        })
    }
}

/// A backend ready to use.
#[derive(Clone, Debug)]
pub enum Chosen {
    /// GPU.
    Gpu(GpuBackend),
    /// CPU, f32.
    Cpu(CpuBackend<f32>),
    /// CPU, f64.
    Cpu64(CpuBackend<f64>),
}

impl Chosen {
    /// `gpu`, `cpu` or `cpu64`.
    pub fn name(&self) -> &'static str {
        match self {
            Chosen::Gpu(_) => "gpu",
            Chosen::Cpu(_) => "cpu",
            Chosen::Cpu64(_) => "cpu64",
        }
    }
}

/// Opens the backend `choice` asks for; the string says what was picked and why.
pub fn choose(choice: BackendChoice) -> Result<(Chosen, String)> {
    choose_for_rank(choice, None)
}

/// [`choose`] for the `local_rank`-th process on this machine (data-parallel
/// training): `auto` takes the k-th hardware adapter for local rank k (the
/// CPU path where there is none), `gpu` the k-th adapter of any kind. Ranks
/// past the last adapter wrap around and share one.
pub fn choose_for_rank(
    choice: BackendChoice,
    local_rank: Option<usize>,
) -> Result<(Chosen, String)> {
    let opts = || -> Result<ContextOptions> {
        let mut o = ContextOptions::from_env()?;
        o.ordinal = local_rank;
        Ok(o)
    };
    match choice {
        BackendChoice::Cpu => Ok((Chosen::Cpu(CpuBackend::new()), "cpu (f32)".into())),
        BackendChoice::Cpu64 => Ok((Chosen::Cpu64(CpuBackend::new()), "cpu (f64)".into())),
        BackendChoice::Gpu => on_gpu(GpuContext::new(opts()?)?),
        BackendChoice::Auto if local_rank.is_some() => {
            let mut o = opts()?;
            o.hardware_only = true;
            match GpuContext::new(o) {
                Ok(ctx) => on_gpu(ctx),
                Err(e) => Ok((
                    Chosen::Cpu(CpuBackend::new()),
                    format!("cpu (f32): no hardware GPU adapter for this rank ({e})"),
                )),
            }
        }
        BackendChoice::Auto => match GpuContext::from_env() {
            Ok(ctx) if !ctx.adapter().is_software() => on_gpu(ctx),
            Ok(ctx) => Ok((
                Chosen::Cpu(CpuBackend::new()),
                format!(
                    "cpu (f32): the only GPU adapter is a software one ({}), which is slower \
                     than the CPU path; pass --backend gpu to use it anyway",
                    ctx.adapter().name
                ),
            )),
            Err(e) => Ok((
                Chosen::Cpu(CpuBackend::new()),
                format!("cpu (f32): no usable GPU adapter ({e})"),
            )),
        },
    }
}

fn on_gpu(ctx: GpuContext) -> Result<(Chosen, String)> {
    let why = format!("gpu: {}", ctx.adapter());
    Ok((Chosen::Gpu(GpuBackend::new(Arc::new(ctx))?), why))
}

/// Runs a generic expression with the chosen backend bound to `$b`.
#[macro_export]
macro_rules! with_backend {
    ($chosen:expr, $b:ident => $body:expr) => {
        match $chosen {
            $crate::backend::Chosen::Gpu($b) => $body,
            $crate::backend::Chosen::Cpu($b) => $body,
            $crate::backend::Chosen::Cpu64($b) => $body,
        }
    };
}
