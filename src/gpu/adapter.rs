//! Choosing an adapter: by backend, by name, or the best one available.
//!
//! Environment variables (read by [`ContextOptions::from_env`]):
//! - `RNN_WGPU_BACKEND`: comma list of `vulkan`, `metal`, `dx12`, `gl`, `primary`, `all`.
//! - `RNN_WGPU_ADAPTER`: a case-insensitive substring of the adapter name.
//! - `RNN_WGPU_STEP_KERNEL`: `auto` (default), `tiled` or `split`: the
//!   recurrent-product variant of the cell steps ([`StepKernel`]).
//! - `RNN_WGPU_LIMITS`: `auto` (default), `webgpu` or `downlevel`: the base
//!   set of device limits requested ([`LimitBase`]).
//! - `RNN_WGPU_DISPATCHES_PER_SUBMIT`: the most dispatches one submission
//!   holds ([`ContextOptions::max_dispatches_per_submit`]).

use std::fmt;
use std::time::Duration;

use super::kernel::StepKernel;
use crate::error::{Error, Result};

/// The set of device limits a context starts from before adding the few its
/// kernels need (see [`GpuContext::new`](super::GpuContext::new)).
///
/// Requesting a known base rather than everything the adapter offers keeps
/// every kernel inside limits that all WebGPU implementations give, so a
/// kernel that would only run on a generous adapter fails here, in the tests,
/// instead of on a user's machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitBase {
    /// WebGPU's defaults when the adapter gives all of them, else the
    /// downlevel set (GL-class adapters).
    #[default]
    Auto,
    /// WebGPU's default limits (`wgpu::Limits::default()`): what every WebGPU
    /// implementation guarantees (Vulkan, Metal, DX12 adapters give them).
    WebGpu,
    /// wgpu's downlevel defaults (`wgpu::Limits::downlevel_defaults()`), the
    /// GLES 3.1 level: 4 storage buffers per stage, 16 KiB uniform bindings,
    /// 16352 bytes of workgroup memory (Metal's limit).
    Downlevel,
}

impl LimitBase {
    /// The base's limits; `None` for [`LimitBase::Auto`], which depends on the adapter.
    pub fn limits(self) -> Option<wgpu::Limits> {
        match self {
            LimitBase::Auto => None,
            LimitBase::WebGpu => Some(wgpu::Limits::default()),
            LimitBase::Downlevel => Some(wgpu::Limits::downlevel_defaults()),
        }
    }

    /// The name used by `RNN_WGPU_LIMITS`.
    pub fn name(self) -> &'static str {
        match self {
            LimitBase::Auto => "auto",
            LimitBase::WebGpu => "webgpu",
            LimitBase::Downlevel => "downlevel",
        }
    }
}

impl fmt::Display for LimitBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitBase::Auto => "automatic",
            LimitBase::WebGpu => "WebGPU default",
            LimitBase::Downlevel => "downlevel",
        })
    }
}

impl std::str::FromStr for LimitBase {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(LimitBase::Auto),
            "webgpu" | "default" => Ok(LimitBase::WebGpu),
            "downlevel" => Ok(LimitBase::Downlevel),
            other => Err(format!(
                "unknown limit base {other:?}; expected auto, webgpu or downlevel"
            )),
        }
    }
}

/// The default of [`ContextOptions::max_dispatches_per_submit`].
///
/// Display watchdogs reset a GPU whose command buffer runs too long: Windows'
/// TDR after 2 s by default, macOS by aborting a command buffer that keeps a
/// display's GPU busy (Metal's "impacting interactivity" error). A long
/// sequence records thousands of dependent dispatches (one per layer,
/// direction and time step), so without a bound a training step would be one
/// command buffer as long as the whole step. The bound is a count, not a time:
/// a cell step's dispatch takes from microseconds to about a millisecond on a
/// GPU, so 256 of them stay far below those limits, while a training step of a
/// few layers over a short sequence (under 256 dispatches) stays one
/// submission and a submission's fixed cost (tens of microseconds) stays small
/// next to the work it carries. Lower it for very large shapes on a slow GPU.
pub const DEFAULT_MAX_DISPATCHES_PER_SUBMIT: usize = 256;

/// How a [`GpuContext`](super::GpuContext) picks and configures its adapter.
#[derive(Clone, Debug)]
pub struct ContextOptions {
    /// Backends to consider.
    pub backends: wgpu::Backends,
    /// Case-insensitive substring the adapter name must contain.
    pub adapter_name: Option<String>,
    /// Lower the per-dimension workgroup limit used for grid folding (tests use this
    /// to run the folding paths on small shapes). `None` uses the adapter's limit.
    pub max_workgroups_per_dim: Option<u32>,
    /// How long to wait for the GPU before giving up with [`Error::Timeout`].
    pub timeout: Duration,
    /// Request at most this `max_storage_buffer_binding_size` (tests use it to
    /// run the limit paths on small shapes). `None` takes the adapter's.
    pub max_storage_binding: Option<u64>,
    /// Request at most this `max_buffer_size`. `None` takes the adapter's.
    pub max_buffer_size: Option<u64>,
    /// Force a recurrent-product variant for every cell step. `None` picks
    /// one per shape ([`StepKernel::auto`]).
    pub step_kernel: Option<StepKernel>,
    /// The base set of device limits ([`LimitBase`]); the context adds what
    /// its kernels need above it (larger buffers and storage bindings up to
    /// the adapter's, 8 storage buffers per stage) and fails with
    /// [`Error::Limit`] naming the first limit the adapter cannot give.
    /// Tests force [`LimitBase::Downlevel`] to check that every kernel runs
    /// on GL-class limits.
    pub limits: LimitBase,
    /// The most compute dispatches one submission holds: recorded work is
    /// submitted automatically once this many dispatches are pending, so no
    /// command buffer runs long enough for a display watchdog to reset the
    /// GPU. Splitting never changes results (the queue runs submissions in
    /// order). Default [`DEFAULT_MAX_DISPATCHES_PER_SUBMIT`]; at least 1.
    pub max_dispatches_per_submit: usize,
    /// Take the k-th of the matching adapters instead of the best one
    /// (counting best first, among those of the best one's API so a GPU
    /// listed by two APIs counts once; wrapping around when k is past the
    /// last). Data-parallel ranks on one machine pass their local rank, so
    /// that each gets its own GPU.
    pub ordinal: Option<usize>,
    /// Consider hardware adapters only (no software rasterizer such as
    /// llvmpipe); with none, [`Error::NoAdapter`].
    pub hardware_only: bool,
    /// Compile every shader with wgpu's runtime bounds checks. Without this
    /// (the default) the hot kernels ([`Shader::is_trusted`](super::kernel::Shader::is_trusted):
    /// the cell steps and the matmul, whose launchers validate every buffer
    /// against the sizes the kernel indexes with) are compiled without
    /// them; `doctor` and the tests run checked. `RNN_WGPU_CHECKED_SHADERS=1`
    /// sets it.
    pub checked_shaders: bool,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            backends: wgpu::Backends::all(),
            adapter_name: None,
            max_workgroups_per_dim: None,
            timeout: Duration::from_secs(600),
            max_storage_binding: None,
            max_buffer_size: None,
            step_kernel: None,
            limits: LimitBase::Auto,
            max_dispatches_per_submit: DEFAULT_MAX_DISPATCHES_PER_SUBMIT,
            ordinal: None,
            hardware_only: false,
            checked_shaders: false,
        }
    }
}

impl ContextOptions {
    /// Options from `RNN_WGPU_BACKEND`, `RNN_WGPU_ADAPTER`,
    /// `RNN_WGPU_STEP_KERNEL`, `RNN_WGPU_LIMITS`,
    /// `RNN_WGPU_DISPATCHES_PER_SUBMIT` and `RNN_WGPU_CHECKED_SHADERS`
    /// (`1`/`true` or `0`/`false`); defaults where unset.
    pub fn from_env() -> Result<Self> {
        let mut opts = ContextOptions::default();
        if let Ok(list) = std::env::var("RNN_WGPU_BACKEND")
            && !list.trim().is_empty()
        {
            opts.backends = parse_backends(&list)
                .map_err(|reason| Error::invalid("RNN_WGPU_BACKEND", reason))?;
        }
        if let Ok(name) = std::env::var("RNN_WGPU_ADAPTER")
            && !name.trim().is_empty()
        {
            opts.adapter_name = Some(name.trim().to_string());
        }
        if let Ok(kernel) = std::env::var("RNN_WGPU_STEP_KERNEL") {
            opts.step_kernel = parse_step_kernel(&kernel)
                .map_err(|reason| Error::invalid("RNN_WGPU_STEP_KERNEL", reason))?;
        }
        if let Ok(base) = std::env::var("RNN_WGPU_LIMITS") {
            opts.limits = base
                .parse()
                .map_err(|reason| Error::invalid("RNN_WGPU_LIMITS", reason))?;
        }
        if let Ok(n) = std::env::var("RNN_WGPU_DISPATCHES_PER_SUBMIT")
            && !n.trim().is_empty()
        {
            opts.max_dispatches_per_submit = parse_dispatch_bound(&n)
                .map_err(|reason| Error::invalid("RNN_WGPU_DISPATCHES_PER_SUBMIT", reason))?;
        }
        if let Ok(v) = std::env::var("RNN_WGPU_CHECKED_SHADERS") {
            opts.checked_shaders = match v.trim().to_ascii_lowercase().as_str() {
                "" | "0" | "false" | "no" => false,
                "1" | "true" | "yes" => true,
                other => {
                    return Err(Error::invalid(
                        "RNN_WGPU_CHECKED_SHADERS",
                        format!("expected 1 or 0, got {other:?}"),
                    ));
                }
            };
        }
        Ok(opts)
    }
}

/// Parses a dispatch bound: a whole number of at least 1.
pub fn parse_dispatch_bound(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "expected a whole number of dispatches, at least 1, got {:?}",
            s.trim()
        )),
    }
}

/// Parses `auto` (or nothing: `None`), `tiled` or `split`.
pub fn parse_step_kernel(s: &str) -> std::result::Result<Option<StepKernel>, String> {
    match s.trim() {
        "" => Ok(None),
        w if w.eq_ignore_ascii_case("auto") => Ok(None),
        w => w.parse().map(Some),
    }
}

/// Parses a comma list of backend names.
pub fn parse_backends(list: &str) -> std::result::Result<wgpu::Backends, String> {
    let mut out = wgpu::Backends::empty();
    for word in list.split(',').map(|w| w.trim().to_ascii_lowercase()) {
        out |= match word.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "primary" => wgpu::Backends::PRIMARY,
            "all" => wgpu::Backends::all(),
            other => {
                return Err(format!(
                    "unknown backend {other:?}; expected a comma list of vulkan, metal, dx12, gl, primary, all"
                ));
            }
        };
    }
    Ok(out)
}

/// What an adapter is, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name, e.g. `NVIDIA H100 80GB HBM3` or `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// Backend, e.g. `Vulkan`.
    pub backend: wgpu::Backend,
    /// Device type; `Cpu` means a software rasterizer such as llvmpipe.
    pub device_type: wgpu::DeviceType,
    /// Driver name and version as reported.
    pub driver: String,
}

impl AdapterSummary {
    pub(crate) fn of(info: &wgpu::AdapterInfo) -> Self {
        let driver = match (info.driver.is_empty(), info.driver_info.is_empty()) {
            (false, false) => format!("{} {}", info.driver, info.driver_info),
            (false, true) => info.driver.clone(),
            (true, _) => info.driver_info.clone(),
        };
        AdapterSummary {
            name: info.name.clone(),
            backend: info.backend,
            device_type: info.device_type,
            driver,
        }
    }

    /// True for software adapters (device type `Cpu`, e.g. llvmpipe/lavapipe, WARP, SwiftShader).
    pub fn is_software(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }

    /// Ranking used for "best available": discrete > integrated > virtual > software,
    /// then native APIs before GL.
    fn rank(&self) -> (u8, u8) {
        let kind = match self.device_type {
            wgpu::DeviceType::DiscreteGpu => 4,
            wgpu::DeviceType::IntegratedGpu => 3,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Cpu => 1,
            wgpu::DeviceType::Other => 0,
        };
        let api = match self.backend {
            wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 2,
            wgpu::Backend::Gl => 1,
            _ => 0,
        };
        (kind, api)
    }
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}, {:?}, driver {})",
            self.name, self.backend, self.device_type, self.driver
        )
    }
}

/// What to install when no adapter exists, for this platform.
pub fn install_hint() -> String {
    if cfg!(target_os = "linux") {
        "Install a Vulkan driver: your GPU vendor's driver, or Mesa's (on Debian/Ubuntu: \
         `sudo apt-get install -y mesa-vulkan-drivers`, which also provides the lavapipe \
         software adapter). Set RNN_WGPU_BACKEND=gl to try OpenGL instead."
            .to_string()
    } else if cfg!(target_os = "macos") {
        "Metal should always be available on macOS 10.13 or later; check that the process \
         is not sandboxed away from the GPU."
            .to_string()
    } else if cfg!(target_os = "windows") {
        "Install or update your GPU driver (DirectX 12 or Vulkan); the WARP software adapter \
         ships with Windows 10 and later."
            .to_string()
    } else {
        "Install a Vulkan, Metal or DirectX 12 driver for this machine.".to_string()
    }
}

/// All adapters the instance can see for `backends`.
pub fn list_adapters(backends: wgpu::Backends) -> Vec<AdapterSummary> {
    let instance = new_instance(backends);
    pollster::block_on(instance.enumerate_adapters(backends))
        .iter()
        .map(|a| AdapterSummary::of(&a.get_info()))
        .collect()
}

pub(crate) fn new_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Picks the adapter `opts` asks for: the best matching one.
pub(crate) fn choose_adapter(
    instance: &wgpu::Instance,
    opts: &ContextOptions,
) -> Result<wgpu::Adapter> {
    let adapters = pollster::block_on(instance.enumerate_adapters(opts.backends));
    if adapters.is_empty() {
        return Err(Error::NoAdapter {
            hint: install_hint(),
        });
    }
    let summaries: Vec<AdapterSummary> = adapters
        .iter()
        .map(|a| AdapterSummary::of(&a.get_info()))
        .collect();
    let wanted = opts.adapter_name.as_ref().map(|n| n.to_lowercase());
    let mut matching: Vec<(wgpu::Adapter, &AdapterSummary)> = adapters
        .into_iter()
        .zip(summaries.iter())
        .filter(|(_, s)| {
            wanted
                .as_ref()
                .is_none_or(|w| s.name.to_lowercase().contains(w.as_str()))
                && !(opts.hardware_only && s.is_software())
        })
        .collect();
    // Best first; equal ranks keep the instance's order.
    matching.sort_by_key(|(_, s)| std::cmp::Reverse(s.rank()));
    if let Some(api) = matching.first().map(|(_, s)| s.backend) {
        matching.retain(|(_, s)| s.backend == api);
    }
    let count = matching.len();
    let pick = opts.ordinal.unwrap_or(0) % count.max(1);
    match matching.into_iter().nth(pick) {
        Some((adapter, _)) => Ok(adapter),
        None if opts.hardware_only && wanted.is_none() => Err(Error::NoAdapter {
            hint: format!(
                "no hardware adapter (only software ones: {}). {}",
                summaries
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
                install_hint()
            ),
        }),
        None => Err(Error::AdapterNotFound {
            wanted: format!(
                "{}name containing {:?}",
                if opts.hardware_only {
                    "hardware adapter with a "
                } else {
                    ""
                },
                opts.adapter_name.clone().unwrap_or_default()
            ),
            available: summaries
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_lists_parse() {
        assert_eq!(parse_backends("vulkan").unwrap(), wgpu::Backends::VULKAN);
        assert_eq!(
            parse_backends("Metal, dx12").unwrap(),
            wgpu::Backends::METAL | wgpu::Backends::DX12
        );
        let err = parse_backends("vulkan,cuda").unwrap_err();
        assert!(err.contains("\"cuda\""), "{err}");
    }

    #[test]
    fn step_kernels_parse_and_auto_follows_the_tiled_grid() {
        assert_eq!(parse_step_kernel(" ").unwrap(), None);
        assert_eq!(parse_step_kernel("Auto").unwrap(), None);
        assert_eq!(parse_step_kernel("tiled").unwrap(), Some(StepKernel::Tiled));
        assert_eq!(parse_step_kernel("SPLIT").unwrap(), Some(StepKernel::Split));
        let err = parse_step_kernel("fast").unwrap_err();
        assert!(err.contains("\"fast\"") && err.contains("tiled"), "{err}");
        // Tiled grid: ceil(H / 32) * ceil(B / 16) workgroups; split: ceil(H / 8) * ceil(B / 16).
        assert_eq!(StepKernel::Tiled.groups(17, 33), 4);
        assert_eq!(StepKernel::Split.groups(17, 33), 10);
        assert_eq!(StepKernel::Tiled.groups(16, 32), 1);
        assert_eq!(StepKernel::auto(16, 1024), StepKernel::Split); // 32 tiled groups
        assert_eq!(StepKernel::auto(64, 512), StepKernel::Split); // 64
        assert_eq!(StepKernel::auto(128, 512), StepKernel::Tiled); // 128
        assert_eq!(StepKernel::auto(64, 1024), StepKernel::Tiled); // 128
        assert_eq!(StepKernel::auto(1, 4096), StepKernel::Tiled); // 128
    }

    #[test]
    fn limit_bases_and_dispatch_bounds_parse() {
        assert_eq!("".parse::<LimitBase>().unwrap(), LimitBase::Auto);
        assert_eq!(" WebGPU".parse::<LimitBase>().unwrap(), LimitBase::WebGpu);
        assert_eq!(
            "downlevel".parse::<LimitBase>().unwrap(),
            LimitBase::Downlevel
        );
        let err = "gles".parse::<LimitBase>().unwrap_err();
        assert!(
            err.contains("\"gles\"") && err.contains("downlevel"),
            "{err}"
        );
        for base in [LimitBase::Auto, LimitBase::WebGpu, LimitBase::Downlevel] {
            assert_eq!(base.name().parse::<LimitBase>().unwrap(), base);
        }
        assert_eq!(parse_dispatch_bound(" 64 ").unwrap(), 64);
        assert!(
            parse_dispatch_bound("0")
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(parse_dispatch_bound("-3").is_err());
    }
}
