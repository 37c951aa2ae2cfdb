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
}

impl Shader {
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
        }
    }

    /// The full WGSL source: the common helpers (and for the cells the
    /// recurrent helpers) followed by the file.
    pub fn source(self) -> String {
        match self {
            Shader::Lstm | Shader::Gru | Shader::Rnn => {
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
    /// 32 hidden units × 8 batch rows per workgroup, the reduction staged
    /// through workgroup memory: few workgroups, much reuse (large batches).
    Tiled,
    /// 8 hidden units × 8 batch rows per workgroup, the reduction split over
    /// 32 lanes and summed in workgroup memory: four times the workgroups,
    /// few barriers (small batches).
    Split,
}

impl StepKernel {
    /// Every variant.
    pub const ALL: [StepKernel; 2] = [StepKernel::Tiled, StepKernel::Split];

    /// Hidden units per workgroup.
    pub fn units(self) -> usize {
        match self {
            StepKernel::Tiled => 32,
            StepKernel::Split => 8,
        }
    }

    /// Batch rows per workgroup.
    pub const ROWS: usize = 8;

    /// The name used by `RNN_WGPU_STEP_KERNEL` and the benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            StepKernel::Tiled => "tiled",
            StepKernel::Split => "split",
        }
    }

    /// Workgroups of one step for `batch` rows and `hidden` units.
    pub fn groups(self, batch: usize, hidden: usize) -> u64 {
        (hidden as u64).div_ceil(self.units() as u64) * (batch as u64).div_ceil(Self::ROWS as u64)
    }

    /// The variant used when none is forced: split while the tiled grid
    /// would have fewer than [`StepKernel::TILED_MIN_GROUPS`] workgroups
    /// (too few to occupy a discrete GPU), tiled beyond.
    pub fn auto(batch: usize, hidden: usize) -> StepKernel {
        if StepKernel::Tiled.groups(batch, hidden) < Self::TILED_MIN_GROUPS {
            StepKernel::Split
        } else {
            StepKernel::Tiled
        }
    }

    /// See [`StepKernel::auto`].
    pub const TILED_MIN_GROUPS: u64 = 128;

    /// The pipeline's override constants.
    pub(crate) fn constants(self) -> &'static [(&'static str, f64)] {
        match self {
            StepKernel::Tiled => &[("SPLIT", 0.0)],
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
            other => Err(format!(
                "unknown step kernel {other:?}; expected auto, tiled or split"
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

/// A kernel: an entry point of a shader and the storage bindings it uses, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelSpec {
    /// The WGSL file.
    pub shader: Shader,
    /// The entry point.
    pub entry: &'static str,
    /// `(binding number, access)` of each storage buffer, in the order buffers are passed.
    pub bindings: &'static [(u32, Access)],
}

/// Size of the uniform parameter window each dispatch sees. Every kernel's
/// `Params` struct must fit in it.
pub(crate) const PARAM_WINDOW: u64 = 256;

/// A compiled kernel: pipeline plus its bind group layout.
#[derive(Debug)]
pub(crate) struct Kernel {
    pub id: u64,
    pub spec: KernelSpec,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// Key of the pipeline cache: the kernel and its override constants (as bit patterns).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    pub spec: KernelSpec,
    pub constants: Vec<(&'static str, u64)>,
}

impl PipelineKey {
    pub fn new(spec: KernelSpec, constants: &[(&'static str, f64)]) -> Self {
        PipelineKey {
            spec,
            constants: constants.iter().map(|(k, v)| (*k, v.to_bits())).collect(),
        }
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
