//! Shader sources, kernel descriptions and the pipelines built from them.
//!
//! Every kernel has the same binding convention:
//! - binding 0: a small uniform block of parameters (sizes, element offsets,
//!   strides, flags), bound with a dynamic offset into the context's parameter
//!   arena so that one bind group serves many dispatches;
//! - bindings 1..: storage buffers, read-only or read-write, as listed in the
//!   [`KernelSpec`].
//!
//! Tuning knobs and variants (transposes, activation kind) are WGSL `override`
//! constants set through the pipeline's compilation options, never string templates.
//!
//! The Rust side of that interface is declared once per kernel and described
//! in data, so it can be checked against the WGSL:
//! - each uniform block is a struct defined through `kernel_params!`, which
//!   keeps it `#[repr(C)]`, `Pod` and `Zeroable` and implements
//!   [`KernelParams`]: the name, byte offset and type of every field,
//!   padding included (a field may name its WGSL member when the spellings
//!   differ, e.g. `b as "B": u32`);
//! - each kernel is a [`KernelDef<P>`]: its [`KernelSpec`] (entry point and
//!   storage bindings, listed in ascending binding order), the override
//!   constants the host may set, and in its type the uniform block `P`.
//!   `Recorder::dispatch` takes a `KernelDef<P>` with a `&P`, so a kernel
//!   cannot be dispatched with another block, and refuses constants the
//!   definition does not list. Its buffers come as `(binding number, buffer)`
//!   pairs (the ops name the numbers after the WGSL variables), bound by
//!   number; the set of numbers must be exactly the spec's, each once
//!   (`KernelSpec::binding_order`), so no buffer depends on its position
//!   in a list;
//! - `ops::kernels()` lists the [`KernelInfo`] of every kernel the crate
//!   dispatches.
//!
//! `tests/shaders.rs` parses and validates every shader with naga and checks
//! each registered kernel against its entry point: the uniform at
//! `@group(0) @binding(0)` has the Rust block's members (names, offsets,
//! types) and size; the storage bindings the entry point uses are exactly the
//! spec's, with the same access (`read` ↔ [`Access::Read`], `read_write` ↔
//! [`Access::ReadWrite`]); every listed override constant exists; and every
//! compute entry point of every shader is registered.

use std::marker::PhantomData;

use crate::error::{Error, Result};

/// WGSL helpers prepended to every shader (stable activations, grid folding).
const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// The tiled recurrent products and the step bindings, prepended to the cell shaders.
const RECURRENT: &str = concat!(
    include_str!("../../shaders/recurrent.wgsl"),
    "\n",
    include_str!("../../shaders/cell_common.wgsl")
);

/// One WGSL file (one kernel family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    /// `shaders/matmul.wgsl`
    Matmul,
    /// `shaders/activation.wgsl`
    Activation,
    /// `shaders/softmax_xent.wgsl`
    SoftmaxXent,
    /// `shaders/reduce.wgsl`
    Reduce,
    /// `shaders/memory.wgsl`
    Memory,
    /// `shaders/embed.wgsl`
    Embed,
    /// `shaders/dropout.wgsl`
    Dropout,
    /// `shaders/optim.wgsl`
    Optim,
    /// `shaders/lstm.wgsl` (after `recurrent.wgsl` and `cell_common.wgsl`)
    Lstm,
    /// `shaders/gru.wgsl` (after `recurrent.wgsl` and `cell_common.wgsl`)
    Gru,
    /// `shaders/rnn.wgsl` (after `recurrent.wgsl` and `cell_common.wgsl`)
    Rnn,
    /// `shaders/gru_reset.wgsl` (after `recurrent.wgsl` and `cell_common.wgsl`)
    GruReset,
    /// `shaders/lstm_proj.wgsl` (after `recurrent.wgsl` and `cell_common.wgsl`)
    LstmProj,
    /// `shaders/skip.wgsl`
    Skip,
}

impl Shader {
    /// Every shader file.
    pub const ALL: [Shader; 14] = [
        Shader::Matmul,
        Shader::Activation,
        Shader::SoftmaxXent,
        Shader::Reduce,
        Shader::Memory,
        Shader::Embed,
        Shader::Dropout,
        Shader::Optim,
        Shader::Lstm,
        Shader::Gru,
        Shader::Rnn,
        Shader::GruReset,
        Shader::LstmProj,
        Shader::Skip,
    ];

    /// True for the recurrent cells' step kernels (what a pass chains one
    /// after another).
    pub fn is_step(self) -> bool {
        matches!(
            self,
            Shader::Lstm | Shader::Gru | Shader::Rnn | Shader::GruReset | Shader::LstmProj
        )
    }

    /// True for the hot kernels compiled without wgpu's runtime bounds checks
    /// unless [`ContextOptions::checked_shaders`](super::ContextOptions) asks
    /// for them: the cell steps and the matmul. Their launchers validate
    /// every buffer's length against the sizes in the uniform block before
    /// recording (`StepSpec` and `Gemm` validation), and every index the
    /// kernels form is guarded by those sizes, so a checked and an unchecked
    /// build compute bitwise the same (`tests/rnn.rs` and `doctor` compare them).
    pub fn is_trusted(self) -> bool {
        self.is_step() || self == Shader::Matmul
    }

    /// File name, for messages.
    pub fn file(self) -> &'static str {
        match self {
            Shader::Matmul => "matmul.wgsl",
            Shader::Activation => "activation.wgsl",
            Shader::SoftmaxXent => "softmax_xent.wgsl",
            Shader::Reduce => "reduce.wgsl",
            Shader::Memory => "memory.wgsl",
            Shader::Embed => "embed.wgsl",
            Shader::Dropout => "dropout.wgsl",
            Shader::Optim => "optim.wgsl",
            Shader::Lstm => "lstm.wgsl",
            Shader::Gru => "gru.wgsl",
            Shader::Rnn => "rnn.wgsl",
            Shader::GruReset => "gru_reset.wgsl",
            Shader::LstmProj => "lstm_proj.wgsl",
            Shader::Skip => "skip.wgsl",
        }
    }

    fn body(self) -> &'static str {
        match self {
            Shader::Matmul => include_str!("../../shaders/matmul.wgsl"),
            Shader::Activation => include_str!("../../shaders/activation.wgsl"),
            Shader::SoftmaxXent => include_str!("../../shaders/softmax_xent.wgsl"),
            Shader::Reduce => include_str!("../../shaders/reduce.wgsl"),
            Shader::Memory => include_str!("../../shaders/memory.wgsl"),
            Shader::Embed => include_str!("../../shaders/embed.wgsl"),
            Shader::Dropout => include_str!("../../shaders/dropout.wgsl"),
            Shader::Optim => include_str!("../../shaders/optim.wgsl"),
            Shader::Lstm => include_str!("../../shaders/lstm.wgsl"),
            Shader::Gru => include_str!("../../shaders/gru.wgsl"),
            Shader::Rnn => include_str!("../../shaders/rnn.wgsl"),
            Shader::GruReset => include_str!("../../shaders/gru_reset.wgsl"),
            Shader::LstmProj => include_str!("../../shaders/lstm_proj.wgsl"),
            Shader::Skip => include_str!("../../shaders/skip.wgsl"),
        }
    }

    /// The full WGSL source: the common helpers (and for the cells the
    /// recurrent helpers) followed by the file.
    pub fn source(self) -> String {
        match self {
            Shader::Lstm | Shader::Gru | Shader::Rnn | Shader::GruReset | Shader::LstmProj => {
                format!("{COMMON}\n{RECURRENT}\n{}", self.body())
            }
            _ => format!("{COMMON}\n{}", self.body()),
        }
    }
}

/// The recurrent-product variant of the fused cell steps (`shaders/recurrent.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StepKernel {
    /// 32 hidden units × 16 batch rows per workgroup (two rows per
    /// invocation), the reduction staged through workgroup memory: few
    /// workgroups, much reuse (large batches).
    Tiled,
    /// 8 hidden units × 16 batch rows per workgroup, the reduction split over
    /// 32 lanes (each lane's partial sums of all 16 rows in registers) and
    /// summed in workgroup memory: four times the workgroups, few barriers
    /// (small batches).
    Split,
    /// One workgroup owns all the hidden units of its 16 batch rows (the
    /// tiled product, column tile after column tile), so it needs no other
    /// workgroup's results to take the next time step: one dispatch advances
    /// up to [`StepKernel::RESIDENT_STEPS`] steps with only workgroup
    /// barriers between them (small H, where launches cost more than the
    /// arithmetic).
    Resident,
}

impl StepKernel {
    /// Every variant.
    pub const ALL: [StepKernel; 3] = [StepKernel::Tiled, StepKernel::Split, StepKernel::Resident];

    /// Hidden units per column tile (a resident workgroup takes them all,
    /// one 32-unit tile after another).
    pub fn units(self) -> usize {
        match self {
            StepKernel::Tiled | StepKernel::Resident => 32,
            StepKernel::Split => 8,
        }
    }

    /// Batch rows per workgroup: each W_hh value a workgroup reads serves
    /// this many rows, so a step reads W_hh ⌈B / 16⌉ times.
    pub const ROWS: usize = 16;

    /// The name used by `RNN_WGPU_STEP_KERNEL` and the benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            StepKernel::Tiled => "tiled",
            StepKernel::Split => "split",
            StepKernel::Resident => "resident",
        }
    }

    /// Workgroups of one step (one direction) for `batch` rows and `hidden` units.
    pub fn groups(self, batch: usize, hidden: usize) -> u64 {
        let rows = (batch as u64).div_ceil(Self::ROWS as u64);
        match self {
            StepKernel::Resident => rows,
            _ => (hidden as u64).div_ceil(self.units() as u64) * rows,
        }
    }

    /// The variant used when none is forced: resident up to
    /// [`StepKernel::RESIDENT_MAX_UNITS`] units (at most four column tiles a
    /// step per workgroup, where the launches of one dispatch per step cost
    /// more than the arithmetic), then split while the tiled grid would have
    /// fewer than [`StepKernel::TILED_MIN_GROUPS`] workgroups (too few to
    /// occupy a discrete GPU), tiled beyond. These are chosen on paper;
    /// `run_comparison.sh --gpu` times every variant forced.
    pub fn auto(batch: usize, hidden: usize) -> StepKernel {
        if hidden <= Self::RESIDENT_MAX_UNITS {
            StepKernel::Resident
        } else if StepKernel::Tiled.groups(batch, hidden) < Self::TILED_MIN_GROUPS {
            StepKernel::Split
        } else {
            StepKernel::Tiled
        }
    }

    /// See [`StepKernel::auto`].
    pub const RESIDENT_MAX_UNITS: usize = 128;

    /// The most time steps one resident dispatch advances (a bound on how
    /// long one dispatch runs, for display watchdogs).
    pub const RESIDENT_STEPS: usize = 64;

    /// See [`StepKernel::auto`].
    pub const TILED_MIN_GROUPS: u64 = 128;

    /// The pipeline's override constants.
    pub(crate) fn constants(self) -> &'static [(&'static str, f64)] {
        match self {
            StepKernel::Tiled | StepKernel::Resident => &[("SPLIT", 0.0)],
            StepKernel::Split => &[("SPLIT", 1.0)],
        }
    }
}

impl std::str::FromStr for StepKernel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tiled" => Ok(StepKernel::Tiled),
            "split" => Ok(StepKernel::Split),
            "resident" => Ok(StepKernel::Resident),
            other => Err(format!(
                "unknown step kernel {other:?}; expected auto, tiled, split or resident"
            )),
        }
    }
}

/// How a kernel uses a storage binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
}

/// A kernel: an entry point of a shader and the storage bindings it uses, in
/// ascending binding order. Built by [`KernelDef::new`], which ties it to its
/// uniform block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelSpec {
    /// The WGSL file.
    pub shader: Shader,
    /// The entry point.
    pub entry: &'static str,
    /// `(binding number, access)` of each storage buffer the entry point uses,
    /// in ascending binding order. A launcher passes each buffer with the
    /// number of the binding it goes to, in any order.
    pub bindings: &'static [(u32, Access)],
}

impl KernelSpec {
    /// [`KernelSpec::binding_order`] as a vector (the tests' form).
    #[cfg(test)]
    pub(crate) fn in_binding_order<T: Copy>(&self, given: &[(u32, T)]) -> Result<Vec<T>> {
        let (items, n) = self.binding_order::<T>(given)?;
        Ok(items[..n].iter().flatten().copied().collect())
    }

    /// The items of `given`, `(binding number, item)` pairs in any order,
    /// rearranged into the order of [`KernelSpec::bindings`]: the first `n`
    /// slots of the array, all filled (no allocation: `Recorder::dispatch`
    /// calls it for every dispatch).
    ///
    /// This is how `Recorder::dispatch` checks a launcher's buffers before
    /// anything is recorded; it is pure so that the check is tested without a
    /// GPU. Fails with an internal [`Error::Gpu`] naming the kernel and the
    /// binding unless `given` names every binding of the spec exactly once and
    /// nothing else (or the spec lists more than [`MAX_STORAGE_BINDINGS`]).
    pub(crate) fn binding_order<T: Copy>(
        &self,
        given: &[(u32, T)],
    ) -> Result<([Option<T>; MAX_STORAGE_BINDINGS], usize)> {
        let internal = |message: String| Error::Gpu {
            op: self.entry.into(),
            message: format!("internal: {message}"),
        };
        let numbers = || self.bindings.iter().map(|&(n, _)| n).collect::<Vec<_>>();
        for (i, &(n, _)) in given.iter().enumerate() {
            if !self.bindings.iter().any(|&(b, _)| b == n) {
                return Err(internal(format!(
                    "a buffer is passed for binding {n}, which kernel {} does not use (its storage bindings are {:?})",
                    self.entry,
                    numbers()
                )));
            }
            if given[..i].iter().any(|&(m, _)| m == n) {
                return Err(internal(format!(
                    "two buffers are passed for binding {n} of kernel {}",
                    self.entry
                )));
            }
        }
        if self.bindings.len() > MAX_STORAGE_BINDINGS {
            return Err(internal(format!(
                "kernel {} lists {} storage bindings (at most {MAX_STORAGE_BINDINGS})",
                self.entry,
                self.bindings.len()
            )));
        }
        let mut out = [None; MAX_STORAGE_BINDINGS];
        for (slot, &(n, access)) in out.iter_mut().zip(self.bindings) {
            let item = given.iter().find(|&&(m, _)| m == n).map(|&(_, item)| item);
            if item.is_none() {
                return Err(internal(format!(
                    "no buffer is passed for binding {n} ({access:?}) of kernel {} (its storage bindings are {:?})",
                    self.entry,
                    numbers()
                )));
            }
            *slot = item;
        }
        Ok((out, self.bindings.len()))
    }
}

/// Size of the uniform parameter window each dispatch sees. Every kernel's
/// `Params` struct must fit in it (`kernel_params!` checks at compile time).
pub const PARAM_WINDOW: u64 = 256;

/// A scalar type of a uniform field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scalar {
    /// `u32`
    U32,
    /// `i32`
    I32,
    /// `f32`
    F32,
}

/// The type of a uniform field: a scalar, or a WGSL vector `vecN<T>`
/// (written `[T; N]` on the Rust side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamType {
    /// A scalar.
    Scalar(Scalar),
    /// `vec{len}<scalar>`.
    Vector {
        /// The element type.
        scalar: Scalar,
        /// Number of elements (2, 3 or 4 in WGSL).
        len: u32,
    },
}

impl std::fmt::Display for ParamType {
    /// The WGSL spelling, for messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |s: Scalar| match s {
            Scalar::U32 => "u32",
            Scalar::I32 => "i32",
            Scalar::F32 => "f32",
        };
        match *self {
            ParamType::Scalar(s) => f.write_str(name(s)),
            ParamType::Vector { scalar, len } => write!(f, "vec{len}<{}>", name(scalar)),
        }
    }
}

/// Rust types a uniform field may have, and the [`ParamType`] each stands for.
pub trait ParamFieldType {
    /// The field's type as WGSL sees it.
    const TYPE: ParamType;
}

impl ParamFieldType for u32 {
    const TYPE: ParamType = ParamType::Scalar(Scalar::U32);
}

impl ParamFieldType for i32 {
    const TYPE: ParamType = ParamType::Scalar(Scalar::I32);
}

impl ParamFieldType for f32 {
    const TYPE: ParamType = ParamType::Scalar(Scalar::F32);
}

impl<T: ParamFieldType, const N: usize> ParamFieldType for [T; N] {
    const TYPE: ParamType = match T::TYPE {
        ParamType::Scalar(scalar) => ParamType::Vector {
            scalar,
            len: N as u32,
        },
        // Evaluated at compile time: a nested array cannot be declared.
        ParamType::Vector { .. } => panic!("uniform fields are scalars or [scalar; N]"),
    };
}

/// One field of a uniform block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamField {
    /// The WGSL member's name.
    pub name: &'static str,
    /// Byte offset in the block.
    pub offset: usize,
    /// Its type.
    pub ty: ParamType,
}

/// A kernel's uniform block (binding 0), described field by field; implemented
/// by `kernel_params!`.
pub trait KernelParams: bytemuck::Pod {
    /// The Rust type's path, for messages.
    const NAME: &'static str;
    /// Every field in declaration order, padding included.
    const FIELDS: &'static [ParamField];
}

/// A [`KernelParams`] type's description, without the type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamsLayout {
    /// [`KernelParams::NAME`].
    pub name: &'static str,
    /// `size_of` the Rust struct.
    pub size: usize,
    /// [`KernelParams::FIELDS`].
    pub fields: &'static [ParamField],
}

impl ParamsLayout {
    /// The description of `P`.
    pub const fn of<P: KernelParams>() -> Self {
        ParamsLayout {
            name: P::NAME,
            size: std::mem::size_of::<P>(),
            fields: P::FIELDS,
        }
    }
}

/// Defines a kernel's uniform block: the struct as written, `#[repr(C)]` with
/// `Clone, Copy, Debug, Pod, Zeroable`, and its [`KernelParams`] description
/// (field names, `offset_of!` offsets, types). A field whose WGSL member is
/// spelled differently names it: `b as "B": u32`. The block must fit in
/// [`PARAM_WINDOW`] (a compile-time check).
///
/// ```text
/// kernel_params! {
///     struct Params {
///         n: u32,
///         slope: f32,
///         _pad0: u32,
///         _pad1: u32,
///     }
/// }
/// ```
macro_rules! kernel_params {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fattr:meta])* $field:ident $(as $wgsl:literal)? : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$attr])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $( $(#[$fattr])* $field: $ty, )*
        }

        impl $crate::gpu::kernel::KernelParams for $name {
            const NAME: &'static str = concat!(module_path!(), "::", stringify!($name));
            const FIELDS: &'static [$crate::gpu::kernel::ParamField] = &[$(
                $crate::gpu::kernel::ParamField {
                    name: $crate::gpu::kernel::kernel_params!(@name $field $($wgsl)?),
                    offset: ::core::mem::offset_of!($name, $field),
                    ty: <$ty as $crate::gpu::kernel::ParamFieldType>::TYPE,
                },
            )*];
        }

        const _: () = assert!(
            ::core::mem::size_of::<$name>() as u64 <= $crate::gpu::kernel::PARAM_WINDOW,
            "a uniform block must fit in PARAM_WINDOW"
        );
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $wgsl:literal) => { $wgsl };
}
pub(crate) use kernel_params;

/// Names an op module's storage bindings after its shader's WGSL variables:
/// `binding_names! { XG = 1, WEIGHTS = 2 }` defines `mod binding` with one
/// `u32` constant per binding and `NAMES`, each constant's name with its
/// number. A test (`ops::tests`) checks every name, lowercased, against the
/// variable the shader declares at that binding, so a launcher that passes
/// `(binding::HS, hs)` passes `hs` to the WGSL `hs`.
macro_rules! binding_names {
    ($($name:ident = $number:literal),* $(,)?) => {
        pub(super) mod binding {
            $(
                #[doc = concat!("`", stringify!($name), "`'s binding number.")]
                pub const $name: u32 = $number;
            )*
            /// Every binding: its constant's name and number.
            #[allow(dead_code)]
            pub const NAMES: &[(&str, u32)] = &[$((stringify!($name), $number)),*];
        }
    };
}
pub(crate) use binding_names;

/// A registered kernel, without its uniform block's type: what
/// `ops::kernels()` lists and `tests/shaders.rs` checks against the WGSL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelInfo {
    /// Entry point and storage bindings.
    pub spec: KernelSpec,
    /// The override constants the host may set on its pipeline.
    pub constants: &'static [&'static str],
    /// The uniform block it is dispatched with.
    pub params: ParamsLayout,
}

/// A kernel as the ops define it: its [`KernelSpec`], the override constants
/// the host may set, and, in the type, the uniform block `P` it is
/// dispatched with (`Recorder::dispatch` takes a `&P` beside it).
#[derive(Clone, Copy, Debug)]
pub struct KernelDef<P> {
    info: KernelInfo,
    _params: PhantomData<fn() -> P>,
}

impl<P: KernelParams> KernelDef<P> {
    /// Entry point `entry` of `shader`, its storage `bindings` in ascending
    /// binding order, and the names of the override `constants` the host sets.
    pub const fn new(
        shader: Shader,
        entry: &'static str,
        bindings: &'static [(u32, Access)],
        constants: &'static [&'static str],
    ) -> Self {
        KernelDef {
            info: KernelInfo {
                spec: KernelSpec {
                    shader,
                    entry,
                    bindings,
                },
                constants,
                params: ParamsLayout::of::<P>(),
            },
            _params: PhantomData,
        }
    }

    /// Entry point and bindings.
    pub const fn spec(&self) -> KernelSpec {
        self.info.spec
    }

    /// The description without the type.
    pub const fn info(&self) -> KernelInfo {
        self.info
    }
}

/// A compiled kernel: pipeline plus its bind group layout.
#[derive(Debug)]
pub(crate) struct Kernel {
    pub id: u64,
    pub spec: KernelSpec,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// The most storage buffers a [`KernelSpec`] may list (WebGPU's default
/// `max_storage_buffers_per_shader_stage`; the context requests no more).
pub const MAX_STORAGE_BINDINGS: usize = 8;

/// The most override constants one dispatch may set.
pub const MAX_CONSTANTS: usize = 12;

/// Key of the pipeline cache: the kernel and its override constants (as bit
/// patterns), held inline so that looking a pipeline up allocates nothing.
/// Compared and hashed by hand: the names are `&'static str`s, almost always
/// the same statics, so equal pointers settle a comparison without a
/// `memcmp` (which the derived comparison calls for every name, even empty
/// ones, and which costs more than the rest of a dispatch).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PipelineKey {
    pub spec: KernelSpec,
    constants: [(&'static str, u64); MAX_CONSTANTS],
    n_constants: usize,
}

/// `a == b`, by pointer first.
fn same_str(a: &'static str, b: &'static str) -> bool {
    (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b
}

impl PartialEq for PipelineKey {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.spec, &other.spec);
        let bindings = std::ptr::eq(a.bindings, b.bindings) || a.bindings == b.bindings;
        a.shader == b.shader
            && same_str(a.entry, b.entry)
            && bindings
            && self.n_constants == other.n_constants
            && self.constants[..self.n_constants]
                .iter()
                .zip(&other.constants[..other.n_constants])
                .all(|(&(n, v), &(m, w))| v == w && same_str(n, m))
    }
}

impl Eq for PipelineKey {}

impl std::hash::Hash for PipelineKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // What `eq` compares, names by length and entry point by content
        // (equal keys hash alike whatever their pointers).
        self.spec.shader.hash(state);
        state.write(self.spec.entry.as_bytes());
        state.write_usize(self.spec.bindings.len());
        state.write_usize(self.n_constants);
        for &(name, value) in &self.constants[..self.n_constants] {
            state.write_usize(name.len());
            state.write_u64(value);
        }
    }
}

impl PipelineKey {
    /// `None` when `constants` holds more than [`MAX_CONSTANTS`].
    pub fn new(spec: KernelSpec, constants: &[(&'static str, f64)]) -> Option<Self> {
        let mut key = PipelineKey {
            spec,
            constants: [("", 0); MAX_CONSTANTS],
            n_constants: constants.len(),
        };
        if constants.len() > MAX_CONSTANTS {
            return None;
        }
        for (slot, &(name, value)) in key.constants.iter_mut().zip(constants) {
            *slot = (name, value.to_bits());
        }
        Some(key)
    }
}

pub(crate) fn bind_group_layout(device: &wgpu::Device, spec: &KernelSpec) -> wgpu::BindGroupLayout {
    let mut entries = vec![wgpu::BindGroupLayoutEntry {
        binding: 0,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            // One arena serves every dispatch; each dispatch picks its window by offset.
            has_dynamic_offset: true,
            min_binding_size: None,
        },
        count: None,
    }];
    for &(binding, access) in spec.bindings {
        entries.push(wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage {
                    read_only: access == Access::Read,
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
    }
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(spec.entry),
        entries: &entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_shader_file() {
        // Every kernel file in shaders/ is a `Shader` (the prefixes are not).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
        let prefixes = ["common.wgsl", "recurrent.wgsl", "cell_common.wgsl"];
        let listed: std::collections::BTreeSet<&str> =
            Shader::ALL.iter().map(|s| s.file()).collect();
        assert_eq!(listed.len(), Shader::ALL.len(), "a file is listed twice");
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".wgsl") && !prefixes.contains(&name.as_str()) {
                assert!(
                    listed.contains(name.as_str()),
                    "shaders/{name} is not in Shader::ALL"
                );
            }
        }
    }

    kernel_params! {
        struct Probe {
            n: u32,
            len as "L": i32,
            scale: f32,
            _pad0: u32,
            v: [f32; 4],
        }
    }

    #[test]
    fn the_description_follows_the_struct() {
        let u = ParamType::Scalar(Scalar::U32);
        let field = |name, offset, ty| ParamField { name, offset, ty };
        assert_eq!(
            Probe::FIELDS,
            &[
                field("n", 0, u),
                field("L", 4, ParamType::Scalar(Scalar::I32)),
                field("scale", 8, ParamType::Scalar(Scalar::F32)),
                field("_pad0", 12, u),
                field(
                    "v",
                    16,
                    ParamType::Vector {
                        scalar: Scalar::F32,
                        len: 4
                    }
                ),
            ]
        );
        let layout = ParamsLayout::of::<Probe>();
        assert_eq!(layout.size, 32);
        assert_eq!(layout.name, "rnn_wgpu::gpu::kernel::tests::Probe");
        assert_eq!(Probe::FIELDS[4].ty.to_string(), "vec4<f32>");
        let p = Probe {
            n: 1,
            len: -2,
            scale: 0.5,
            _pad0: 0,
            v: [0.0; 4],
        };
        assert_eq!(bytemuck::bytes_of(&p).len(), 32);
    }

    /// A spec shaped like `act_backward`: three bindings with a gap.
    const SPEC: KernelSpec = KernelSpec {
        shader: Shader::Activation,
        entry: "act_backward",
        bindings: &[(1, Access::Read), (3, Access::Read), (4, Access::ReadWrite)],
    };

    fn internal_message(r: Result<Vec<&str>>) -> String {
        match r {
            Err(Error::Gpu { op, message }) => {
                assert_eq!(op, "act_backward");
                assert!(message.starts_with("internal: "), "{message}");
                message
            }
            other => panic!("expected an internal Error::Gpu, got {other:?}"),
        }
    }

    #[test]
    fn buffers_are_bound_by_number_in_any_order() {
        let order = SPEC.in_binding_order(&[(4, "dx"), (1, "x"), (3, "dy")]);
        assert_eq!(order.unwrap(), ["x", "dy", "dx"]);
        let order = SPEC.in_binding_order(&[(1, "x"), (3, "dy"), (4, "dx")]);
        assert_eq!(order.unwrap(), ["x", "dy", "dx"]);
        let none = KernelSpec {
            bindings: &[],
            ..SPEC
        };
        assert_eq!(
            none.in_binding_order::<&str>(&[]).unwrap(),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn a_binding_the_kernel_does_not_use_is_refused() {
        // 2 is act_forward's y, not an act_backward binding.
        let m = internal_message(SPEC.in_binding_order(&[(1, "x"), (2, "dy"), (4, "dx")]));
        assert!(m.contains("binding 2"), "{m}");
        assert!(m.contains("act_backward"), "{m}");
        assert!(m.contains("[1, 3, 4]"), "{m}");
        // One too many.
        let m = internal_message(SPEC.in_binding_order(&[
            (1, "x"),
            (3, "dy"),
            (4, "dx"),
            (5, "extra"),
        ]));
        assert!(m.contains("binding 5"), "{m}");
    }

    #[test]
    fn a_missing_binding_is_refused() {
        let m = internal_message(SPEC.in_binding_order(&[(1, "x"), (4, "dx")]));
        assert!(
            m.contains("no buffer is passed for binding 3 (Read)"),
            "{m}"
        );
        assert!(m.contains("act_backward"), "{m}");
        let m = internal_message(SPEC.in_binding_order(&[]));
        assert!(m.contains("binding 1"), "{m}");
    }

    #[test]
    fn a_binding_given_twice_is_refused() {
        // The right count, but 3 twice and 4 missing (a number typed twice).
        let m = internal_message(SPEC.in_binding_order(&[(1, "x"), (3, "dy"), (3, "dx")]));
        assert!(m.contains("two buffers are passed for binding 3"), "{m}");
        assert!(m.contains("act_backward"), "{m}");
        // The same buffer under the same number twice, beside every binding.
        let m =
            internal_message(SPEC.in_binding_order(&[(1, "x"), (3, "dy"), (4, "dx"), (1, "x")]));
        assert!(m.contains("binding 1"), "{m}");
    }

    #[test]
    fn a_def_carries_its_spec_and_block() {
        const DEF: KernelDef<Probe> =
            KernelDef::new(Shader::Memory, "fill", &[(1, Access::ReadWrite)], &["OP"]);
        let info = DEF.info();
        assert_eq!(info.spec, DEF.spec());
        assert_eq!(info.spec.entry, "fill");
        assert_eq!(info.constants, &["OP"]);
        assert_eq!(info.params, ParamsLayout::of::<Probe>());
    }
}
