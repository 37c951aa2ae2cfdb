//! Shared test setup: one GPU context per test binary, and the CI rule that a
//! missing adapter is a failure, never a skip.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rnn_wgpu::backend::GpuBackend;
use rnn_wgpu::gpu::{ContextOptions, GpuContext};

static CTX: OnceLock<Option<Arc<GpuContext>>> = OnceLock::new();

/// The tests' context options: the environment's, with every shader
/// compiled with runtime bounds checks (the unchecked hot kernels are
/// compared with these bitwise in `tests/rnn.rs`).
pub fn test_options() -> rnn_wgpu::Result<ContextOptions> {
    let mut opts = ContextOptions::from_env()?;
    opts.checked_shaders = true;
    Ok(opts)
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The shared GPU context, or `None` (with a message saying what to install)
/// when this machine has no adapter. Under `CI=true` a missing adapter panics.
pub fn gpu_ctx() -> Option<Arc<GpuContext>> {
    CTX.get_or_init(|| {
        let opened = test_options().and_then(GpuContext::new);
        match opened {
            Ok(ctx) => {
                eprintln!("GPU tests run on {}", ctx.adapter());
                Some(Arc::new(ctx))
            }
            Err(e) if in_ci() => {
                panic!("CI=true and the GPU tests cannot run: {e}")
            }
            Err(e) => {
                eprintln!("skipping GPU tests: {e}");
                None
            }
        }
    })
    .clone()
}

/// A GPU backend on the shared context.
pub fn gpu() -> Option<GpuBackend> {
    let ctx = gpu_ctx()?;
    match GpuBackend::new(ctx) {
        Ok(b) => Some(b),
        Err(e) => panic!("GPU backend setup failed: {e}"),
    }
}

/// A context of its own with a lowered per-dimension workgroup limit, so the
/// grid folding paths run on small shapes.
pub fn gpu_with_fold(max_per_dim: u32) -> Option<GpuBackend> {
    own_gpu(|o| o.max_workgroups_per_dim = Some(max_per_dim)).map(|(_, g)| g)
}

/// Returns early from a GPU test when there is no adapter (outside CI).
#[macro_export]
macro_rules! gpu_or_skip {
    () => {
        match common::gpu() {
            Some(b) => b,
            None => return,
        }
    };
}

/// A context of its own (so counters and device loss touch only this test),
/// with options edited by `edit`; `None` when there is no adapter.
pub fn own_gpu(edit: impl FnOnce(&mut ContextOptions)) -> Option<(Arc<GpuContext>, GpuBackend)> {
    gpu_ctx()?;
    let mut opts = test_options().ok()?;
    edit(&mut opts);
    let ctx = Arc::new(GpuContext::new(opts).unwrap_or_else(|e| panic!("second context: {e}")));
    let gpu = GpuBackend::new(ctx.clone()).unwrap_or_else(|e| panic!("backend: {e}"));
    Some((ctx, gpu))
}

/// Writes `line` to the terminal even while the test harness captures output
/// (it captures `print!`/`eprint!`, not writes to the stderr handle), for
/// what a reader of a passing run must see, such as a check that was skipped.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A context of its own on a GL adapter (wgpu's GL backend; on Linux headless
/// through EGL), with options edited by `edit`, or why there is none: no GL
/// adapter, or one that cannot open a device for our kernels.
pub fn own_gl_gpu(
    edit: impl FnOnce(&mut ContextOptions),
) -> Result<(Arc<GpuContext>, GpuBackend), String> {
    let adapters = rnn_wgpu::gpu::list_adapters(wgpu::Backends::GL);
    if adapters.is_empty() {
        return Err("wgpu sees no GL adapter".into());
    }
    let mut opts = ContextOptions {
        backends: wgpu::Backends::GL,
        checked_shaders: true,
        ..ContextOptions::default()
    };
    edit(&mut opts);
    let ctx = GpuContext::new(opts).map_err(|e| format!("the GL adapter cannot open: {e}"))?;
    let ctx = Arc::new(ctx);
    let gpu = GpuBackend::new(ctx.clone()).map_err(|e| format!("GL backend setup: {e}"))?;
    Ok((ctx, gpu))
}

/// A temporary directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory named after `tag` and the process.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("rnn-wgpu-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One optimizer of each kind with its options on (momentum with Nesterov
/// and weight decay, centered RMSprop with momentum), and plain SGD.
pub fn every_optimizer() -> Vec<rnn_wgpu::ops::optim::Optimizer> {
    use rnn_wgpu::ops::optim::Optimizer;
    vec![
        Optimizer::sgd(0.5),
        Optimizer::Sgd {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 0.01,
        },
        Optimizer::Adagrad {
            lr: 0.1,
            lr_decay: 0.0,
            eps: 1e-10,
            weight_decay: 0.0,
        },
        Optimizer::RmsProp {
            lr: 0.01,
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.5,
            centered: true,
            weight_decay: 0.0,
        },
        Optimizer::adam(0.1),
    ]
}
