//! Elementwise activations, forward and backward.
//!
//! CPU twin: [`Activation::apply`] / [`Activation::derivative`] (generic over
//! f32/f64), slice forms [`forward_cpu`] / [`backward_cpu`]. GPU:
//! `shaders/activation.wgsl`, whose functions live in `shaders/common.wgsl` so
//! the fused cell kernels share them. Every function is stable for any finite
//! input: results are finite wherever the true value is (checked at ±1e4).

use super::matmul::u32_of;
use crate::error::{Error, Result};
use crate::gpu::kernel::{Access, KernelDef, KernelInfo, Shader, binding_names, kernel_params};
use crate::gpu::{DType, GpuTensor, Recorder};
use crate::real::Real;

/// An activation function.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// `tanh x`
    Tanh,
    /// `max(x, 0)`
    Relu,
    /// `x` for `x > 0`, `slope·x` otherwise.
    LeakyRelu(f32),
    /// `0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))` (PyTorch `approximate='tanh'`).
    GeluTanh,
    /// `0.5·x·(1 + erf(x/√2))` (PyTorch's default GELU).
    GeluErf,
    /// `x`
    Identity,
}

impl Activation {
    /// Every kind, with a representative leaky slope (for tests and `doctor`).
    pub const ALL: [Activation; 7] = [
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Relu,
        Activation::LeakyRelu(0.01),
        Activation::GeluTanh,
        Activation::GeluErf,
        Activation::Identity,
    ];

    /// The `ACT_*` number used by the shaders.
    pub fn code(self) -> u32 {
        match self {
            Activation::Sigmoid => 0,
            Activation::Tanh => 1,
            Activation::Relu => 2,
            Activation::LeakyRelu(_) => 3,
            Activation::GeluTanh => 4,
            Activation::GeluErf => 5,
            Activation::Identity => 6,
        }
    }

    fn slope(self) -> f32 {
        match self {
            Activation::LeakyRelu(s) => s,
            _ => 0.0,
        }
    }

    /// Parses `sigmoid`, `tanh`, `relu`, `leaky_relu[:slope]`, `gelu`, `gelu_tanh`, `identity`.
    pub fn parse(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        let (name, arg) = match lower.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (lower.as_str(), None),
        };
        Ok(match name {
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "relu" => Activation::Relu,
            "leaky_relu" | "leakyrelu" => {
                let slope = match arg {
                    Some(a) => a.parse::<f32>().map_err(|_| {
                        Error::invalid("activation", format!("bad leaky_relu slope {a:?}"))
                    })?,
                    None => 0.01,
                };
                Activation::LeakyRelu(slope)
            }
            "gelu" | "gelu_erf" => Activation::GeluErf,
            "gelu_tanh" => Activation::GeluTanh,
            "identity" | "linear" | "none" => Activation::Identity,
            _ => {
                return Err(Error::invalid(
                    "activation",
                    format!(
                        "unknown activation {s:?}; expected sigmoid, tanh, relu, leaky_relu[:slope], \
                         gelu, gelu_tanh or identity"
                    ),
                ));
            }
        })
    }

    /// `act(x)`.
    pub fn apply<T: Real>(self, x: T) -> T {
        let half = T::of(0.5);
        let one = T::one();
        match self {
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => x.tanh(),
            Activation::Relu => x.max(T::zero()),
            Activation::LeakyRelu(s) => {
                if x > T::zero() {
                    x
                } else {
                    T::of(s as f64) * x
                }
            }
            Activation::GeluTanh => {
                let u = T::of(SQRT_2_OVER_PI) * (x + T::of(GELU_C) * x * x * x);
                half * x * (one + u.tanh())
            }
            Activation::GeluErf => half * x * (-x * T::of(std::f64::consts::FRAC_1_SQRT_2)).erfc(),
            Activation::Identity => x,
        }
    }

    /// `d act(x) / dx`.
    pub fn derivative<T: Real>(self, x: T) -> T {
        let half = T::of(0.5);
        let one = T::one();
        match self {
            Activation::Sigmoid => {
                let s = sigmoid(x);
                s * (one - s)
            }
            Activation::Tanh => {
                let t = x.tanh();
                one - t * t
            }
            Activation::Relu => {
                if x > T::zero() {
                    one
                } else {
                    T::zero()
                }
            }
            Activation::LeakyRelu(s) => {
                if x > T::zero() {
                    one
                } else {
                    T::of(s as f64)
                }
            }
            Activation::GeluTanh => {
                let c = T::of(GELU_C);
                let t = (T::of(SQRT_2_OVER_PI) * (x + c * x * x * x)).tanh();
                let du = T::of(SQRT_2_OVER_PI) * (one + T::of(3.0) * c * x * x);
                half * (one + t) + half * x * (one - t * t) * du
            }
            Activation::GeluErf => {
                let cdf = half * (-x * T::of(std::f64::consts::FRAC_1_SQRT_2)).erfc();
                let pdf = T::of(FRAC_1_SQRT_2PI) * (-half * x * x).exp();
                cdf + x * pdf
            }
            Activation::Identity => one,
        }
    }
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044715;
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

pub use crate::real::sigmoid;

/// `y[i] = act(x[i])`.
pub fn forward_cpu<T: Real>(act: Activation, x: &[T], y: &mut [T]) -> Result<()> {
    same_len("activation y", x.len(), y.len())?;
    for (y, &x) in y.iter_mut().zip(x) {
        *y = act.apply(x);
    }
    Ok(())
}

/// `dx[i] = dy[i]·act'(x[i])`, or `dx[i] += …` when `accumulate`.
pub fn backward_cpu<T: Real>(
    act: Activation,
    x: &[T],
    dy: &[T],
    dx: &mut [T],
    accumulate: bool,
) -> Result<()> {
    same_len("activation dy", x.len(), dy.len())?;
    same_len("activation dx", x.len(), dx.len())?;
    for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
        let g = dy * act.derivative(x);
        *dx = if accumulate { *dx + g } else { g };
    }
    Ok(())
}

fn same_len(arg: &str, want: usize, got: usize) -> Result<()> {
    if want != got {
        return Err(Error::invalid(
            arg,
            format!("has {got} elements, expected {want} (the length of x)"),
        ));
    }
    Ok(())
}

kernel_params! {
    struct Params {
        n: u32,
        x_off: u32,
        out_off: u32,
        dy_off: u32,
        slope: f32,
        flags: u32,
        _pad0: u32,
        _pad1: u32,
    }
}

// Binding numbers of `shaders/activation.wgsl`, named after its variables.
binding_names! {
    X = 1,
    Y = 2,
    DY = 3,
    DX = 4,
}

const FORWARD: KernelDef<Params> = KernelDef::new(
    Shader::Activation,
    "act_forward",
    &[(binding::X, Access::Read), (binding::Y, Access::ReadWrite)],
    &["ACT", "STORE"],
);

const BACKWARD: KernelDef<Params> = KernelDef::new(
    Shader::Activation,
    "act_backward",
    &[
        (binding::X, Access::Read),
        (binding::DY, Access::Read),
        (binding::DX, Access::ReadWrite),
    ],
    &["ACT", "STORE"],
);

/// Every kernel of this module (see [`super::kernels`]).
pub(super) const KERNELS: &[KernelInfo] = &[FORWARD.info(), BACKWARD.info()];

/// An elementwise range: `n` elements starting at each operand's offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Number of elements.
    pub n: usize,
    /// Offset in x.
    pub x_off: usize,
    /// Offset in the output (y or dx).
    pub out_off: usize,
    /// Offset in dy (backward only).
    pub dy_off: usize,
}

impl Span {
    /// The whole of `n`-element operands.
    pub fn all(n: usize) -> Self {
        Span {
            n,
            ..Default::default()
        }
    }
}

fn check_span(arg: &str, off: usize, n: usize, len: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid("activation n", "must be at least 1"));
    }
    if off.checked_add(n).is_none_or(|end| end > len) {
        return Err(Error::invalid(
            arg,
            format!("{n} elements at offset {off} do not fit in {len}"),
        ));
    }
    Ok(())
}

/// Records `y = act(x)` on the GPU.
pub fn forward_gpu(
    rec: &mut Recorder<'_>,
    act: Activation,
    span: Span,
    x: &GpuTensor,
    y: &GpuTensor,
) -> Result<()> {
    x.expect_dtype("activation x", DType::F32)?;
    y.expect_dtype("activation y", DType::F32)?;
    check_span("activation x", span.x_off, span.n, x.len())?;
    check_span("activation y", span.out_off, span.n, y.len())?;
    let params = Params {
        n: u32_of("n", span.n)?,
        x_off: u32_of("x_off", span.x_off)?,
        out_off: u32_of("out_off", span.out_off)?,
        dy_off: 0,
        slope: act.slope(),
        flags: 0,
        _pad0: 0,
        _pad1: 0,
    };
    let grid = rec.ctx().grid((span.n as u64).div_ceil(256))?;
    rec.dispatch(
        FORWARD,
        &[
            ("ACT", act.code() as f64),
            crate::ops::memory::store_constant(y),
        ],
        &[(binding::X, x.buffer()), (binding::Y, y.buffer())],
        &params,
        grid,
    )
}

/// Records `dx = dy·act'(x)` (or `dx += …`) on the GPU.
pub fn backward_gpu(
    rec: &mut Recorder<'_>,
    act: Activation,
    span: Span,
    x: &GpuTensor,
    dy: &GpuTensor,
    dx: &GpuTensor,
    accumulate: bool,
) -> Result<()> {
    for (arg, t) in [
        ("activation x", x),
        ("activation dy", dy),
        ("activation dx", dx),
    ] {
        t.expect_dtype(arg, DType::F32)?;
    }
    check_span("activation x", span.x_off, span.n, x.len())?;
    check_span("activation dy", span.dy_off, span.n, dy.len())?;
    check_span("activation dx", span.out_off, span.n, dx.len())?;
    let params = Params {
        n: u32_of("n", span.n)?,
        x_off: u32_of("x_off", span.x_off)?,
        out_off: u32_of("out_off", span.out_off)?,
        dy_off: u32_of("dy_off", span.dy_off)?,
        slope: act.slope(),
        flags: accumulate as u32,
        _pad0: 0,
        _pad1: 0,
    };
    let grid = rec.ctx().grid((span.n as u64).div_ceil(256))?;
    rec.dispatch(
        BACKWARD,
        &[
            ("ACT", act.code() as f64),
            crate::ops::memory::store_constant(dx),
        ],
        &[
            (binding::X, x.buffer()),
            (binding::DY, dy.buffer()),
            (binding::DX, dx.buffer()),
        ],
        &params,
        grid,
    )
}
