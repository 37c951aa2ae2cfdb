//! Optimizers with PyTorch's update rules and defaults (SGD with momentum and
//! Nesterov, Adagrad, RMSprop, Adam), and gradient clipping by global norm
//! (`torch.nn.utils.clip_grad_norm_`: one norm over all parameters, scale
//! `min(1, max_norm / (norm + 1e-6))`).
//!
//! The norm comes from a buffer (the sum of squared gradients, computed by a
//! reduction), so the GPU clips and updates without a host round trip. When
//! the norm is not finite the update is skipped entirely; the caller learns it
//! when it reads the same value back with the loss.
//!
//! The step number (1-based, like PyTorch's `state['step']`) and the learning
//! rate of this step come from the host, so learning-rate schedules need no
//! GPU work; a skipped update still counts as a step.
//!
//! A trainer that records a step before it has read the previous one's
//! stats gates the new step's updates on them first ([`GateSpec`]): the
//! updates are skipped when the host is going to stop at the previous step.
//!
//! CPU twin: [`update_cpu`], [`gate_cpu`]. GPU: `shaders/optim.wgsl`.

use super::matmul::u32_of;
use super::need_len;
use crate::error::{Error, Result};
use crate::gpu::kernel::{Access, KernelDef, KernelInfo, Shader, binding_names, kernel_params};
use crate::gpu::{DType, GpuTensor, Recorder};
use crate::precision::Precision;
use crate::real::Real;

/// An optimizer and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Optimizer {
    /// `torch.optim.SGD`
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum factor (0 = plain SGD).
        momentum: f32,
        /// Dampening for momentum.
        dampening: f32,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 penalty.
        weight_decay: f32,
    },
    /// `torch.optim.Adagrad`
    Adagrad {
        /// Learning rate.
        lr: f32,
        /// Learning-rate decay per step.
        lr_decay: f32,
        /// Term added to the denominator.
        eps: f32,
        /// L2 penalty.
        weight_decay: f32,
    },
    /// `torch.optim.RMSprop`
    RmsProp {
        /// Learning rate.
        lr: f32,
        /// Smoothing constant.
        alpha: f32,
        /// Term added to the denominator.
        eps: f32,
        /// Momentum factor.
        momentum: f32,
        /// Normalize by the estimated variance of the gradient.
        centered: bool,
        /// L2 penalty.
        weight_decay: f32,
    },
    /// `torch.optim.Adam`
    Adam {
        /// Learning rate.
        lr: f32,
        /// Decay of the first moment.
        beta1: f32,
        /// Decay of the second moment.
        beta2: f32,
        /// Term added to the denominator.
        eps: f32,
        /// L2 penalty.
        weight_decay: f32,
    },
}

impl Optimizer {
    /// SGD with PyTorch's defaults (no momentum).
    pub fn sgd(lr: f32) -> Self {
        Optimizer::Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// SGD with momentum (Nesterov or classical).
    pub fn momentum(lr: f32, momentum: f32, nesterov: bool) -> Self {
        Optimizer::Sgd {
            lr,
            momentum,
            dampening: 0.0,
            nesterov,
            weight_decay: 0.0,
        }
    }

    /// Adagrad with PyTorch's defaults.
    pub fn adagrad(lr: f32) -> Self {
        Optimizer::Adagrad {
            lr,
            lr_decay: 0.0,
            eps: 1e-10,
            weight_decay: 0.0,
        }
    }

    /// RMSprop with PyTorch's defaults.
    pub fn rmsprop(lr: f32) -> Self {
        Optimizer::RmsProp {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            momentum: 0.0,
            centered: false,
            weight_decay: 0.0,
        }
    }

    /// Adam with PyTorch's defaults.
    pub fn adam(lr: f32) -> Self {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    /// Parses `sgd`, `momentum`, `nesterov`, `adagrad`, `rmsprop` or `adam` with learning rate `lr`.
    pub fn parse(name: &str, lr: f32) -> Result<Self> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "sgd" => Self::sgd(lr),
            "momentum" => Self::momentum(lr, 0.9, false),
            "nesterov" => Self::momentum(lr, 0.9, true),
            "adagrad" => Self::adagrad(lr),
            "rmsprop" => Self::rmsprop(lr),
            "adam" => Self::adam(lr),
            other => {
                return Err(Error::invalid(
                    "optimizer",
                    format!(
                        "unknown optimizer {other:?}; expected sgd, momentum, nesterov, adagrad, rmsprop or adam"
                    ),
                ));
            }
        })
    }

    /// A short name.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd {
                momentum, nesterov, ..
            } => match (*momentum != 0.0, *nesterov) {
                (false, _) => "sgd",
                (true, false) => "momentum",
                (true, true) => "nesterov",
            },
            Optimizer::Adagrad { .. } => "adagrad",
            Optimizer::RmsProp { .. } => "rmsprop",
            Optimizer::Adam { .. } => "adam",
        }
    }

    /// The base learning rate.
    pub fn lr(&self) -> f32 {
        match *self {
            Optimizer::Sgd { lr, .. }
            | Optimizer::Adagrad { lr, .. }
            | Optimizer::RmsProp { lr, .. }
            | Optimizer::Adam { lr, .. } => lr,
        }
    }

    /// Lengths of the two state buffers for `n` parameters (PyTorch's state:
    /// SGD momentum_buffer; Adagrad sum; RMSprop square_avg, then momentum_buffer
    /// and grad_avg; Adam exp_avg, exp_avg_sq).
    pub fn state_lens(&self, n: usize) -> (usize, usize) {
        match self {
            Optimizer::Sgd { momentum, .. } => (if *momentum != 0.0 { n } else { 0 }, 0),
            Optimizer::Adagrad { .. } => (n, 0),
            Optimizer::RmsProp { .. } => (n, 2 * n),
            Optimizer::Adam { .. } => (n, n),
        }
    }

    /// Names of the state buffers, as saved in checkpoints.
    pub fn state_names(&self) -> (&'static str, &'static str) {
        match self {
            Optimizer::Sgd { .. } => ("momentum_buffer", "unused"),
            Optimizer::Adagrad { .. } => ("sum", "unused"),
            Optimizer::RmsProp { .. } => ("square_avg", "momentum_buffer_grad_avg"),
            Optimizer::Adam { .. } => ("exp_avg", "exp_avg_sq"),
        }
    }
}

/// One update of `n` parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateSpec {
    /// Parameters.
    pub n: usize,
    /// 1-based step number.
    pub step: u64,
    /// Learning rate of this step (after any schedule).
    pub lr: f32,
    /// Clip the global gradient norm to this (None: no clipping).
    pub max_norm: Option<f32>,
    /// Index of the sum of squared gradients in the stats buffer.
    pub norm_idx: usize,
    /// Index of the loss in the stats buffer: a non-finite loss skips the update too.
    pub loss_idx: Option<usize>,
    /// The gradients (and the sum of their squares) are of the loss times
    /// `1 / grad_scale`: each gradient is multiplied by it before clipping
    /// and the update, and the norm by it before the clip (dynamic loss
    /// scaling; 1 otherwise, which changes no bit).
    pub grad_scale: f32,
}

kernel_params! {
    #[derive(Default)]
    struct Params {
        n: u32,
        norm_idx: u32,
        step: u32,
        flags: u32,
        lr: f32,
        weight_decay: f32,
        momentum: f32,
        dampening: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        max_norm: f32,
        bias_c1: f32,
        bias_c2_sqrt: f32,
        loss_idx: u32,
        stride: u32,
        invalid_idx: u32,
        grad_scale: f32,
        _pad2: u32,
    }
}

const NO_LOSS: u32 = u32::MAX;

const NESTEROV: u32 = 1;
const CENTERED: u32 = 2;
const FIRST: u32 = 4;
const GATE_FINITE: u32 = 8;

impl Params {
    /// The scalars of one update, computed once (in f64, then rounded) for both paths.
    fn of(opt: &Optimizer, s: &UpdateSpec) -> Result<Self> {
        if s.step == 0 {
            return Err(Error::invalid(
                "optimizer step",
                "steps are numbered from 1",
            ));
        }
        if !(s.grad_scale > 0.0 && s.grad_scale.is_finite()) {
            return Err(Error::invalid(
                "grad_scale",
                format!("{} must be a positive finite number", s.grad_scale),
            ));
        }
        let mut p = Params {
            n: u32_of("parameters", s.n)?,
            norm_idx: u32_of("norm_idx", s.norm_idx)?,
            loss_idx: match s.loss_idx {
                Some(i) => u32_of("loss_idx", i)?.min(NO_LOSS - 1),
                None => NO_LOSS,
            },
            step: s.step.min(u32::MAX as u64) as u32,
            lr: s.lr,
            max_norm: s.max_norm.unwrap_or(0.0),
            grad_scale: s.grad_scale,
            bias_c1: 1.0,
            bias_c2_sqrt: 1.0,
            ..Default::default()
        };
        if s.step == 1 {
            p.flags |= FIRST;
        }
        match *opt {
            Optimizer::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
                ..
            } => {
                p.momentum = momentum;
                p.dampening = dampening;
                p.weight_decay = weight_decay;
                if nesterov {
                    p.flags |= NESTEROV;
                }
            }
            Optimizer::Adagrad {
                lr_decay,
                eps,
                weight_decay,
                ..
            } => {
                p.lr = (s.lr as f64 / (1.0 + (s.step - 1) as f64 * lr_decay as f64)) as f32;
                p.eps = eps;
                p.weight_decay = weight_decay;
            }
            Optimizer::RmsProp {
                alpha,
                eps,
                momentum,
                centered,
                weight_decay,
                ..
            } => {
                p.beta1 = alpha;
                p.eps = eps;
                p.momentum = momentum;
                p.weight_decay = weight_decay;
                if centered {
                    p.flags |= CENTERED;
                }
            }
            Optimizer::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => {
                p.beta1 = beta1;
                p.beta2 = beta2;
                p.eps = eps;
                p.weight_decay = weight_decay;
                let step = s.step.min(i32::MAX as u64) as i32;
                p.bias_c1 = (1.0 - (beta1 as f64).powi(step)) as f32;
                p.bias_c2_sqrt = (1.0 - (beta2 as f64).powi(step)).sqrt() as f32;
            }
        }
        Ok(p)
    }
}

fn check_lens(opt: &Optimizer, s: &UpdateSpec, lens: [usize; 5]) -> Result<()> {
    let [params, grads, s1, s2, stats] = lens;
    let (n1, n2) = opt.state_lens(s.n);
    for (arg, want, len) in [
        ("parameters", s.n, params),
        ("gradients", s.n, grads),
        ("optimizer state 1", n1, s1),
        ("optimizer state 2", n2, s2),
        ("stats (norm)", s.norm_idx.saturating_add(1), stats),
        (
            "stats (loss)",
            s.loss_idx.map_or(0, |i| i.saturating_add(1)),
            stats,
        ),
    ] {
        need_len(arg, want, len)?;
    }
    Ok(())
}

/// The clipping coefficient for a sum of squared gradients, or `None` to skip
/// (in `T`, as the shader computes it in f32).
pub fn clip_coef<T: Real>(norm_sq: T, max_norm: Option<f32>) -> Option<T> {
    clip_coef_scaled(norm_sq, max_norm, T::one())
}

/// [`clip_coef`] of gradients that are `1 / unscale` times the true ones:
/// the coefficient (times `unscale`) that takes each to its clipped true value.
pub fn clip_coef_scaled<T: Real>(norm_sq: T, max_norm: Option<f32>, unscale: T) -> Option<T> {
    let norm = norm_sq.sqrt() * unscale;
    if !norm.is_finite() {
        return None;
    }
    Some(match max_norm {
        Some(m) if m > 0.0 => (T::of(m as f64) / (norm + T::of(1e-6))).min(T::one()) * unscale,
        _ => unscale,
    })
}

/// One update on the host. Returns false (and changes nothing) when the norm is not finite.
pub fn update_cpu<T: Real>(
    opt: &Optimizer,
    s: &UpdateSpec,
    params: &mut [T],
    grads: &[T],
    s1: &mut [T],
    s2: &mut [T],
    stats: &[T],
) -> Result<bool> {
    check_lens(
        opt,
        s,
        [params.len(), grads.len(), s1.len(), s2.len(), stats.len()],
    )?;
    let p = Params::of(opt, s)?;
    // Same arithmetic as the shader, in T.
    let loss_ok = s.loss_idx.is_none_or(|i| stats[i].is_finite());
    let unscale = T::of(p.grad_scale as f64);
    let Some(coef) = clip_coef_scaled(stats[s.norm_idx], s.max_norm, unscale).filter(|_| loss_ok)
    else {
        return Ok(false);
    };
    let one = T::one();
    let c = |v: f32| T::of(v as f64);
    let (lr, wd, mom, damp) = (c(p.lr), c(p.weight_decay), c(p.momentum), c(p.dampening));
    let (b1, b2, eps) = (c(p.beta1), c(p.beta2), c(p.eps));
    let n = s.n;
    for i in 0..n {
        let mut g = grads[i] * coef + wd * params[i];
        match opt {
            Optimizer::Sgd { .. } => {
                if p.momentum != 0.0 {
                    let buf = if p.flags & FIRST != 0 {
                        g
                    } else {
                        mom * s1[i] + (one - damp) * g
                    };
                    s1[i] = buf;
                    g = if p.flags & NESTEROV != 0 {
                        g + mom * buf
                    } else {
                        buf
                    };
                }
                params[i] -= lr * g;
            }
            Optimizer::Adagrad { .. } => {
                let sum = s1[i] + g * g;
                s1[i] = sum;
                params[i] -= lr * g / (sum.sqrt() + eps);
            }
            Optimizer::RmsProp { .. } => {
                let sq = b1 * s1[i] + (one - b1) * g * g;
                s1[i] = sq;
                let avg = if p.flags & CENTERED != 0 {
                    let ga = b1 * s2[n + i] + (one - b1) * g;
                    s2[n + i] = ga;
                    (sq - ga * ga).sqrt() + eps
                } else {
                    sq.sqrt() + eps
                };
                if p.momentum > 0.0 {
                    let buf = mom * s2[i] + g / avg;
                    s2[i] = buf;
                    params[i] -= lr * buf;
                } else {
                    params[i] -= lr * g / avg;
                }
            }
            Optimizer::Adam { .. } => {
                let m = b1 * s1[i] + (one - b1) * g;
                let v = b2 * s2[i] + (one - b2) * g * g;
                s1[i] = m;
                s2[i] = v;
                let denom = v.sqrt() / c(p.bias_c2_sqrt) + eps;
                params[i] -= (lr / c(p.bias_c1)) * m / denom;
            }
        }
    }
    Ok(true)
}

/// The gate of a step's updates on the previous step's stats: `windows`
/// windows of `stride` values each, from index 0 of the stats buffer (the
/// previous step's, still there when the new step starts). The host stops
/// at that step when a window counts an invalid target (offset `invalid`)
/// or, with `finite`, when its loss sum (`loss`) or sum of squares (`norm`)
/// is not finite; then every window's `norm` cell becomes NaN, otherwise 0.
/// The new step's norm reductions accumulate into those cells (`0 + Σg²` is
/// `Σg²` exactly), so a gated step's updates are all skipped, and a gated
/// step gates the next one in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateSpec {
    /// Windows per step.
    pub windows: usize,
    /// Values per window.
    pub stride: usize,
    /// Offset of the sum of squared gradients in a window.
    pub norm: usize,
    /// Offset of the loss sum.
    pub loss: usize,
    /// Offset of the invalid-target count.
    pub invalid: usize,
    /// Also stop on a non-finite loss sum or sum of squares.
    pub finite: bool,
}

impl GateSpec {
    fn check_len(&self, len: usize) -> Result<()> {
        let last = self.norm.max(self.loss).max(self.invalid);
        if self.windows == 0 || last >= self.stride {
            return Err(Error::invalid(
                "gate",
                format!(
                    "{} windows with offsets up to {last} in a stride of {}",
                    self.windows, self.stride
                ),
            ));
        }
        need_len(
            "stats (gate)",
            self.windows.saturating_mul(self.stride),
            len,
        )
    }

    fn params(&self) -> Result<Params> {
        Ok(Params {
            n: u32_of("windows", self.windows)?,
            norm_idx: u32_of("norm", self.norm)?,
            loss_idx: u32_of("loss", self.loss)?,
            stride: u32_of("stride", self.stride)?,
            invalid_idx: u32_of("invalid", self.invalid)?,
            flags: if self.finite { GATE_FINITE } else { 0 },
            ..Default::default()
        })
    }
}

/// The gate on the host. Returns whether the updates are stopped.
pub fn gate_cpu<T: Real>(g: &GateSpec, stats: &mut [T]) -> Result<bool> {
    g.check_len(stats.len())?;
    let stop = stats.chunks(g.stride).take(g.windows).any(|w| {
        // The host reads the count as an integer (NaN is 0, +inf many).
        let invalid = w[g.invalid].f64() >= 1.0;
        invalid || (g.finite && !(w[g.norm].is_finite() && w[g.loss].is_finite()))
    });
    let v = if stop { T::nan() } else { T::zero() };
    for w in stats.chunks_mut(g.stride).take(g.windows) {
        w[g.norm] = v;
    }
    Ok(stop)
}

// Binding numbers of `shaders/optim.wgsl`, named after its variables.
binding_names! {
    PARAMS = 1,
    GRADS = 2,
    S1 = 3,
    S2 = 4,
    STATS = 5,
    GATE_STATS = 6,
    COPY_WORDS = 7,
}

const R: Access = Access::Read;
const W: Access = Access::ReadWrite;
// SGD and Adagrad keep one state buffer (no s2).
const ONE_STATE: &[(u32, Access)] = &[
    (binding::PARAMS, W),
    (binding::GRADS, R),
    (binding::S1, W),
    (binding::STATS, R),
];
const TWO_STATES: &[(u32, Access)] = &[
    (binding::PARAMS, W),
    (binding::GRADS, R),
    (binding::S1, W),
    (binding::S2, W),
    (binding::STATS, R),
];

// The `_copy` variants also write the packed 16-bit copy of the parameters.
const ONE_STATE_COPY: &[(u32, Access)] = &[
    (binding::PARAMS, W),
    (binding::GRADS, R),
    (binding::S1, W),
    (binding::STATS, R),
    (binding::COPY_WORDS, W),
];
const TWO_STATES_COPY: &[(u32, Access)] = &[
    (binding::PARAMS, W),
    (binding::GRADS, R),
    (binding::S1, W),
    (binding::S2, W),
    (binding::STATS, R),
    (binding::COPY_WORDS, W),
];

const SGD: KernelDef<Params> = KernelDef::new(Shader::Optim, "sgd", ONE_STATE, &[]);
const ADAGRAD: KernelDef<Params> = KernelDef::new(Shader::Optim, "adagrad", ONE_STATE, &[]);
const RMSPROP: KernelDef<Params> = KernelDef::new(Shader::Optim, "rmsprop", TWO_STATES, &[]);
const ADAM: KernelDef<Params> = KernelDef::new(Shader::Optim, "adam", TWO_STATES, &[]);
const STORE: &[&str] = &["STORE"];
const SGD_COPY: KernelDef<Params> =
    KernelDef::new(Shader::Optim, "sgd_copy", ONE_STATE_COPY, STORE);
const ADAGRAD_COPY: KernelDef<Params> =
    KernelDef::new(Shader::Optim, "adagrad_copy", ONE_STATE_COPY, STORE);
const RMSPROP_COPY: KernelDef<Params> =
    KernelDef::new(Shader::Optim, "rmsprop_copy", TWO_STATES_COPY, STORE);
const ADAM_COPY: KernelDef<Params> =
    KernelDef::new(Shader::Optim, "adam_copy", TWO_STATES_COPY, STORE);
const GATE: KernelDef<Params> = KernelDef::new(
    Shader::Optim,
    "gate_updates",
    &[(binding::GATE_STATS, W)],
    &[],
);

/// Every kernel of this module (see [`super::kernels`]).
pub(super) const KERNELS: &[KernelInfo] = &[
    SGD.info(),
    ADAGRAD.info(),
    RMSPROP.info(),
    ADAM.info(),
    SGD_COPY.info(),
    ADAGRAD_COPY.info(),
    RMSPROP_COPY.info(),
    ADAM_COPY.info(),
    GATE.info(),
];

/// Records the gate on the GPU (one invocation).
pub fn gate_gpu(rec: &mut Recorder<'_>, g: &GateSpec, stats: &GpuTensor) -> Result<()> {
    stats.expect_dtype("stats", DType::F32)?;
    g.check_len(stats.len())?;
    rec.dispatch(
        GATE,
        &[],
        &[(binding::GATE_STATS, stats.buffer())],
        &g.params()?,
        [1, 1, 1],
    )
}

fn kernel(opt: &Optimizer, copy: bool) -> KernelDef<Params> {
    match (opt, copy) {
        (Optimizer::Sgd { .. }, false) => SGD,
        (Optimizer::Adagrad { .. }, false) => ADAGRAD,
        (Optimizer::RmsProp { .. }, false) => RMSPROP,
        (Optimizer::Adam { .. }, false) => ADAM,
        (Optimizer::Sgd { .. }, true) => SGD_COPY,
        (Optimizer::Adagrad { .. }, true) => ADAGRAD_COPY,
        (Optimizer::RmsProp { .. }, true) => RMSPROP_COPY,
        (Optimizer::Adam { .. }, true) => ADAM_COPY,
    }
}

/// Fails unless `copy` can take the updated parameters `[0, n)` as the
/// 16-bit copy the passes read: stored at 16 bits, at least `n` long.
pub fn check_copy(n: usize, store: Precision, len: usize) -> Result<()> {
    if !store.is_16bit() {
        return Err(Error::invalid(
            "optimizer copy",
            "is stored in f32; the update writes a 16-bit copy (use the update without one)",
        ));
    }
    need_len("optimizer copy", n, len)
}

/// Records one update on the GPU; with `copy` (a packed 16-bit tensor,
/// from element 0) the same kernel writes the updated parameters into it,
/// rounded to its precision.
#[allow(clippy::too_many_arguments)]
pub fn update_gpu(
    rec: &mut Recorder<'_>,
    opt: &Optimizer,
    s: &UpdateSpec,
    params: &GpuTensor,
    grads: &GpuTensor,
    s1: &GpuTensor,
    s2: &GpuTensor,
    stats: &GpuTensor,
    copy: Option<&GpuTensor>,
) -> Result<()> {
    for (arg, t) in [
        ("parameters", params),
        ("gradients", grads),
        ("optimizer state 1", s1),
        ("optimizer state 2", s2),
        ("stats", stats),
    ] {
        t.expect_dtype(arg, DType::F32)?;
        crate::ops::memory::expect_f32_store("optimizer", arg, t.store())?;
    }
    check_lens(
        opt,
        s,
        [params.len(), grads.len(), s1.len(), s2.len(), stats.len()],
    )?;
    let p = Params::of(opt, s)?;
    let def = kernel(opt, copy.is_some());
    let two = def.spec().bindings.contains(&(binding::S2, W));
    let mut buffers: Vec<(u32, &wgpu::Buffer)> = vec![
        (binding::PARAMS, params.buffer()),
        (binding::GRADS, grads.buffer()),
        (binding::S1, s1.buffer()),
        (binding::STATS, stats.buffer()),
    ];
    if two {
        buffers.push((binding::S2, s2.buffer()));
    }
    let (constants, invocations) = match copy {
        Some(c) => {
            let Some(store) = c.dtype().packed() else {
                return Err(Error::invalid(
                    "optimizer copy",
                    format!(
                        "is a {:?} tensor; the update writes a packed 16-bit copy",
                        c.dtype()
                    ),
                ));
            };
            check_copy(s.n, store, c.len())?;
            buffers.push((binding::COPY_WORDS, c.buffer()));
            (vec![("STORE", store.code() as f64)], s.n.div_ceil(2))
        }
        None => (Vec::new(), s.n),
    };
    let grid = rec.ctx().grid((invocations as u64).div_ceil(256))?;
    rec.dispatch(def, &constants, &buffers, &p, grid)
}
