//! Connections between stacked recurrent layers: residual (`y = out + x`,
//! GNMT) and highway (`y = T ⊙ out + (1 − T) ⊙ x` with a learned transform
//! gate `T = σ(x·W_tᵀ + b_t)`, Srivastava et al. 2015), forward and backward,
//! element-wise over a layer's `[T, B, D·H]` output. `x` is the layer's input
//! (the output of the layer below), `out` what its cells computed. The gate's
//! pre-activation is a matmul recorded before (see `nn::rnn`).
//!
//! CPU twin: [`forward_cpu`], [`backward_cpu`]. GPU: `shaders/skip.wgsl`.

use super::need_len;
use crate::error::{Error, Result};
use crate::gpu::kernel::{Access, KernelDef, KernelInfo, Shader, binding_names, kernel_params};
use crate::gpu::{DType, GpuTensor, Recorder};
use crate::ops::memory::shared_store;
use crate::real::Real;

/// How a stacked layer (every layer above the first) joins its input to its output.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Skip {
    /// Plain stacking: the layer's output is its cells' output.
    #[default]
    None,
    /// `y = out + x`.
    Residual,
    /// `y = T ⊙ out + (1 − T) ⊙ x`, `T = σ(x·W_tᵀ + b_t)`, with
    /// `weight_t_l{k}` `[D·H, D·H]` and `bias_t_l{k}` `[D·H]`.
    Highway,
}

impl Skip {
    /// `none`, `residual` or `highway`.
    pub fn name(self) -> &'static str {
        match self {
            Skip::None => "none",
            Skip::Residual => "residual",
            Skip::Highway => "highway",
        }
    }

    /// ` residual` or ` highway` (what follows a stack's sizes in logs), `""` for none.
    pub fn tag(self) -> String {
        match self {
            Skip::None => String::new(),
            s => format!(" {}", s.name()),
        }
    }
}

/// Tensors of a forward on any backend (`gate` for the highway only: the
/// pre-activation in, the gate `T` out).
pub struct SkipForward<'a, X> {
    /// `[n]` the layer's input.
    pub x: &'a X,
    /// `[n]` its cells' output.
    pub out: &'a X,
    /// `[n]` highway gate.
    pub gate: Option<&'a X>,
    /// `[n]` the layer's output.
    pub y: &'a X,
}

/// Tensors of a backward on any backend (the last three for the highway only).
pub struct SkipBackward<'a, X> {
    /// `[n]` gradient of the layer's output.
    pub dy: &'a X,
    /// `[n]` the gradient of the layer's input, overwritten with the skip's
    /// share (the cells' share is added after).
    pub dx: &'a X,
    /// `[n]` the layer's input.
    pub x: &'a X,
    /// `[n]` its cells' output.
    pub out: &'a X,
    /// `[n]` the gate `T` the forward left.
    pub gate: Option<&'a X>,
    /// `[n]` gradient of the cells' output.
    pub d_out: Option<&'a X>,
    /// `[n]` gradient of the gate's pre-activation.
    pub dgate: Option<&'a X>,
}

fn need_highway<T>(skip: Skip, t: Option<T>, what: &str) -> Result<Option<T>> {
    match (skip, t) {
        (Skip::Highway, None) => Err(Error::invalid(
            format!("skip {what}"),
            "is required for a highway connection",
        )),
        (_, t) => Ok(t),
    }
}

fn check_skip(skip: Skip) -> Result<()> {
    if skip == Skip::None {
        return Err(Error::invalid("skip", "none has no kernel"));
    }
    Ok(())
}

/// The forward on the host.
pub fn forward_cpu<T: Real>(
    skip: Skip,
    n: usize,
    x: &[T],
    out: &[T],
    gate: Option<&mut [T]>,
    y: &mut [T],
) -> Result<()> {
    check_skip(skip)?;
    for (arg, len) in [("x", x.len()), ("out", out.len()), ("y", y.len())] {
        need_len(format!("skip {arg}"), n, len)?;
    }
    match need_highway(skip, gate, "gate")? {
        None => {
            for i in 0..n {
                y[i] = out[i] + x[i];
            }
        }
        Some(g) => {
            need_len("skip gate", n, g.len())?;
            let one = T::one();
            for i in 0..n {
                let t = g[i].sigmoid_cell();
                g[i] = t;
                y[i] = t * out[i] + (one - t) * x[i];
            }
        }
    }
    Ok(())
}

/// Host buffers of a backward.
pub struct BackwardSlices<'a, T> {
    /// `[n]`
    pub dy: &'a [T],
    /// `[n]`, overwritten.
    pub dx: &'a mut [T],
    /// `[n]`
    pub x: &'a [T],
    /// `[n]`
    pub out: &'a [T],
    /// `[n]` (highway)
    pub gate: Option<&'a [T]>,
    /// `[n]` (highway), written.
    pub d_out: Option<&'a mut [T]>,
    /// `[n]` (highway), written.
    pub dgate: Option<&'a mut [T]>,
}

/// The backward on the host.
pub fn backward_cpu<T: Real>(skip: Skip, n: usize, b: BackwardSlices<'_, T>) -> Result<()> {
    check_skip(skip)?;
    for (arg, len) in [
        ("dy", b.dy.len()),
        ("dx", b.dx.len()),
        ("x", b.x.len()),
        ("out", b.out.len()),
    ] {
        need_len(format!("skip {arg}"), n, len)?;
    }
    let gate = need_highway(skip, b.gate, "gate")?;
    let d_out = need_highway(skip, b.d_out, "d_out")?;
    let dgate = need_highway(skip, b.dgate, "dgate")?;
    match (gate, d_out, dgate) {
        (Some(t), Some(d_out), Some(dgate)) => {
            for (arg, len) in [
                ("gate", t.len()),
                ("d_out", d_out.len()),
                ("dgate", dgate.len()),
            ] {
                need_len(format!("skip {arg}"), n, len)?;
            }
            let one = T::one();
            for i in 0..n {
                let g = b.dy[i];
                d_out[i] = g * t[i];
                dgate[i] = g * (b.out[i] - b.x[i]) * t[i] * (one - t[i]);
                b.dx[i] = g * (one - t[i]);
            }
        }
        _ => b.dx[..n].copy_from_slice(&b.dy[..n]),
    }
    Ok(())
}

kernel_params! {
    struct Params {
        n: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

// Binding numbers of `shaders/skip.wgsl`, named after its variables.
binding_names! {
    X = 1,
    OUT = 2,
    GATE = 3,
    Y = 4,
    DY = 5,
    SAVED_GATE = 6,
    D_OUT = 7,
    DGATE = 8,
    DX = 9,
}

const R: Access = Access::Read;
const W: Access = Access::ReadWrite;

const RESIDUAL_FORWARD: KernelDef<Params> = KernelDef::new(
    Shader::Skip,
    "residual_forward",
    &[(binding::X, R), (binding::OUT, R), (binding::Y, W)],
    &["STORE"],
);

const HIGHWAY_FORWARD: KernelDef<Params> = KernelDef::new(
    Shader::Skip,
    "highway_forward",
    &[
        (binding::X, R),
        (binding::OUT, R),
        (binding::GATE, W),
        (binding::Y, W),
    ],
    &["STORE"],
);

const RESIDUAL_BACKWARD: KernelDef<Params> = KernelDef::new(
    Shader::Skip,
    "residual_backward",
    &[(binding::DY, R), (binding::DX, W)],
    &["STORE"],
);

const HIGHWAY_BACKWARD: KernelDef<Params> = KernelDef::new(
    Shader::Skip,
    "highway_backward",
    &[
        (binding::X, R),
        (binding::OUT, R),
        (binding::DY, R),
        (binding::SAVED_GATE, R),
        (binding::D_OUT, W),
        (binding::DGATE, W),
        (binding::DX, W),
    ],
    &["STORE"],
);

/// Every kernel of this module (see [`super::kernels`]).
pub(super) const KERNELS: &[KernelInfo] = &[
    RESIDUAL_FORWARD.info(),
    HIGHWAY_FORWARD.info(),
    RESIDUAL_BACKWARD.info(),
    HIGHWAY_BACKWARD.info(),
];

fn f32_tensors(ts: &[(&str, &GpuTensor)], n: usize) -> Result<()> {
    for (arg, t) in ts {
        t.expect_dtype(&format!("skip {arg}"), DType::F32)?;
        need_len(format!("skip {arg}"), n, t.len())?;
    }
    Ok(())
}

fn launch(
    rec: &mut Recorder<'_>,
    kernel: KernelDef<Params>,
    n: usize,
    buffers: &[(u32, &wgpu::Buffer)],
    store: (&'static str, f64),
) -> Result<()> {
    let params = Params {
        n: super::matmul::u32_of("n", n)?,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    let grid = rec.ctx().grid((n as u64).div_ceil(256))?;
    rec.dispatch(kernel, &[store], buffers, &params, grid)
}

/// Records a forward on the GPU.
pub fn forward_gpu(
    rec: &mut Recorder<'_>,
    skip: Skip,
    n: usize,
    t: &SkipForward<'_, GpuTensor>,
) -> Result<()> {
    check_skip(skip)?;
    f32_tensors(&[("x", t.x), ("out", t.out), ("y", t.y)], n)?;
    let mut buffers = vec![
        (binding::X, t.x.buffer()),
        (binding::OUT, t.out.buffer()),
        (binding::Y, t.y.buffer()),
    ];
    let kernel = match need_highway(skip, t.gate, "gate")? {
        None => RESIDUAL_FORWARD,
        Some(g) => {
            f32_tensors(&[("gate", g)], n)?;
            buffers.push((binding::GATE, g.buffer()));
            HIGHWAY_FORWARD
        }
    };
    let store = shared_store("skip forward", &[("y", Some(t.y)), ("gate", t.gate)])?;
    launch(rec, kernel, n, &buffers, store)
}

/// Records a backward on the GPU.
pub fn backward_gpu(
    rec: &mut Recorder<'_>,
    skip: Skip,
    n: usize,
    t: &SkipBackward<'_, GpuTensor>,
) -> Result<()> {
    check_skip(skip)?;
    f32_tensors(&[("dy", t.dy), ("dx", t.dx)], n)?;
    let gate = need_highway(skip, t.gate, "gate")?;
    let d_out = need_highway(skip, t.d_out, "d_out")?;
    let dgate = need_highway(skip, t.dgate, "dgate")?;
    match (gate, d_out, dgate) {
        (Some(g), Some(d_out), Some(dgate)) => {
            f32_tensors(
                &[
                    ("x", t.x),
                    ("out", t.out),
                    ("gate", g),
                    ("d_out", d_out),
                    ("dgate", dgate),
                ],
                n,
            )?;
            let buffers = [
                (binding::X, t.x.buffer()),
                (binding::OUT, t.out.buffer()),
                (binding::DY, t.dy.buffer()),
                (binding::SAVED_GATE, g.buffer()),
                (binding::D_OUT, d_out.buffer()),
                (binding::DGATE, dgate.buffer()),
                (binding::DX, t.dx.buffer()),
            ];
            let store = shared_store(
                "skip backward",
                &[
                    ("dx", Some(t.dx)),
                    ("d_out", Some(d_out)),
                    ("dgate", Some(dgate)),
                ],
            )?;
            launch(rec, HIGHWAY_BACKWARD, n, &buffers, store)
        }
        _ => launch(
            rec,
            RESIDUAL_BACKWARD,
            n,
            &[(binding::DY, t.dy.buffer()), (binding::DX, t.dx.buffer())],
            crate::ops::memory::store_constant(t.dx),
        ),
    }
}
