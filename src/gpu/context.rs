//! The GPU context: instance, adapter, device, queue, limits, caches, and the
//! command recorder that turns many kernel launches into one submission.
//!
//! Flow of a launch: an op calls [`GpuContext::record`], which hands it a
//! [`Recorder`]; the op appends dispatches (kernel, buffers, a small parameter
//! block) and copies. Nothing reaches the GPU until [`GpuContext::flush`] or a
//! readback: then every parameter block is written into one uniform arena with
//! a single `write_buffer`, every command is encoded into one command encoder
//! (consecutive dispatches share a compute pass), and the encoder is submitted
//! once inside error scopes that turn wgpu errors into [`Error`]s. Once
//! [`ContextOptions::max_dispatches_per_submit`] dispatches are pending, the
//! recorder submits them on its own, so no command buffer grows long enough
//! for a display watchdog to reset the GPU.
//!
//! Limits: the device is opened with a known base set of limits (WebGPU's
//! defaults, or wgpu's downlevel set on GL-class adapters; [`LimitBase`]) plus
//! only what the kernels need above it ([`required_limits`]), never with
//! everything the adapter offers, so the tests exercise the limits every
//! WebGPU implementation guarantees.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::adapter::{AdapterSummary, ContextOptions, LimitBase, choose_adapter, new_instance};
use super::kernel::{
    Access, Kernel, KernelDef, KernelParams, KernelSpec, PARAM_WINDOW, PipelineKey, Shader,
    StepKernel, bind_group_layout,
};
use crate::error::{Error, Result};

/// Shared device health, written by wgpu's callbacks.
#[derive(Debug, Default)]
struct DeviceState {
    lost: AtomicBool,
    lost_reason: Mutex<Option<String>>,
    uncaptured: Mutex<Vec<String>>,
}

/// Counts of GPU work, for benchmarks and for checking the scheduler's structure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Of those, the recurrent cells' step kernels (one per layer,
    /// direction and time step, two for the reset-before GRU and the
    /// projected LSTM): the dependent chain of a pass.
    pub step_dispatches: u64,
    /// Queue submissions.
    pub submits: u64,
    /// Readbacks (buffer maps).
    pub readbacks: u64,
    /// Bytes those readbacks brought to the host.
    pub read_bytes: u64,
    /// Staging buffers created for readbacks (a readback reuses a free one
    /// of its size class when it can; see [`STAGING_KEPT`]).
    pub staging_allocations: u64,
    /// Tensor buffers allocated.
    pub allocations: u64,
    /// Bytes of those buffers.
    pub allocated_bytes: u64,
}

impl Counters {
    /// What happened between `earlier` and these counts.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            dispatches: self.dispatches - earlier.dispatches,
            step_dispatches: self.step_dispatches - earlier.step_dispatches,
            submits: self.submits - earlier.submits,
            readbacks: self.readbacks - earlier.readbacks,
            read_bytes: self.read_bytes - earlier.read_bytes,
            staging_allocations: self.staging_allocations - earlier.staging_allocations,
            allocations: self.allocations - earlier.allocations,
            allocated_bytes: self.allocated_bytes - earlier.allocated_bytes,
        }
    }
}

#[derive(Debug)]
enum Cmd {
    Dispatch {
        kernel: Arc<Kernel>,
        // Its buffers, in the order of the kernel's `KernelSpec::bindings`
        // (whatever order the launcher passed them in): `Pending::bound[bound
        // .. bound + n_bound]`. The kernel and its buffers are the key of its
        // cached bind group.
        bound: u32,
        n_bound: u32,
        param_offset: u32,
        groups: [u32; 3],
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    },
    Clear {
        buffer: wgpu::Buffer,
        offset: u64,
        size: u64,
    },
}

#[derive(Debug)]
struct Arena {
    buffer: wgpu::Buffer,
}

/// FxHash (rustc's hasher): the caches below are looked up for every
/// dispatch with small keys (a kernel's spec, a few buffer ids) that need
/// no protection against collisions chosen by an adversary.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, v: u8) {
        self.write_u64(v as u64);
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }

    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A cached bind group: its kernel and buffers, the group, and the flush
/// that last used it.
#[derive(Debug)]
struct CachedGroup {
    kernel: u64,
    buffers: Box<[wgpu::Buffer]>,
    group: wgpu::BindGroup,
    used: u64,
}

/// The bind group cache's key: a hash of the kernel and its buffers (the
/// entries under it are compared in full), so a lookup allocates nothing.
fn bind_hash(kernel: u64, buffers: &[wgpu::Buffer]) -> u64 {
    let mut h = FxHasher::default();
    kernel.hash(&mut h);
    buffers.hash(&mut h);
    h.finish()
}

/// Work recorded but not yet submitted.
#[derive(Debug, Default)]
struct Pending {
    cmds: Vec<Cmd>,
    // The dispatches among `cmds`.
    dispatches: usize,
    params: Vec<u8>,
    // The buffers of the dispatches in `cmds` (see `Cmd::Dispatch`). The
    // three vectors keep their capacity from one flush to the next, so
    // recording allocates nothing once they have grown.
    bound: Vec<wgpu::Buffer>,
    arena: Option<Arena>,
    // Compiled kernels, looked up for every dispatch under the lock that
    // recording holds anyway.
    pipelines: FxMap<PipelineKey, Arc<Kernel>>,
    // The pipeline found last, compared before the map is looked up.
    last_kernel: Option<(PipelineKey, Arc<Kernel>)>,
    // Cached bind groups by `bind_hash`. A bind group holds its buffers
    // alive, so unused ones are dropped after a few flushes.
    bind_groups: FxMap<u64, Vec<CachedGroup>>,
    // Flushes so far (asked for by a caller, or forced by the dispatch bound).
    flushes: u64,
    // The last submission made.
    last_submission: Option<wgpu::SubmissionIndex>,
}

/// The most storage buffers one of our kernels binds (`gru_backward` binds
/// 8; `tests/portability.rs` checks every shader entry point against it).
/// WebGPU's default; the downlevel base gives 4, so it is requested above it.
pub const KERNEL_STORAGE_BUFFERS_PER_STAGE: u32 = 8;

/// Downlevel capabilities every context requires: compute shaders (every
/// kernel) and the f16 packing builtins in f32 shaders (`memory.wgsl`, which
/// also holds `fill`). WebGPU adapters have both; a GL adapter may not.
pub const REQUIRED_DOWNLEVEL_FLAGS: wgpu::DownlevelFlags =
    wgpu::DownlevelFlags::COMPUTE_SHADERS.union(wgpu::DownlevelFlags::SHADER_F16_IN_F32);

/// The limits to request on an adapter offering `adapter`, with the base
/// [`ContextOptions::limits`] resolved (never [`LimitBase::Auto`]).
///
/// The base (WebGPU's defaults; with [`LimitBase::Auto`] the downlevel set
/// when the adapter cannot give those), raised only where a kernel needs more:
/// - `max_buffer_size` and `max_storage_buffer_binding_size`: the adapter's
///   (capped by [`ContextOptions::max_buffer_size`] and
///   [`ContextOptions::max_storage_binding`]), so tensors beyond the base's
///   256 MiB / 128 MiB work where the adapter allows them; sizes beyond
///   them are refused per tensor with [`Error::Limit`];
/// - `max_storage_buffers_per_shader_stage`: at least
///   [`KERNEL_STORAGE_BUFFERS_PER_STAGE`].
///
/// Everything else the kernels use fits both bases (checked by
/// `tests/portability.rs`): at most 256 invocations per workgroup (64, 256
/// or 32 × 8), at most 11 520 bytes of workgroup memory, one uniform
/// buffer with a dynamic offset and a 256-byte window. Fails with
/// [`Error::Limit`] naming the first limit the adapter cannot give.
pub fn required_limits(
    adapter: &wgpu::Limits,
    opts: &ContextOptions,
    adapter_name: &str,
) -> Result<(wgpu::Limits, LimitBase)> {
    let request = |base: LimitBase| -> wgpu::Limits {
        let mut l = base.limits().unwrap_or_default();
        l.max_buffer_size = adapter.max_buffer_size;
        l.max_storage_buffer_binding_size = adapter.max_storage_buffer_binding_size;
        if let Some(max) = opts.max_storage_binding {
            l.max_storage_buffer_binding_size = l.max_storage_buffer_binding_size.min(max);
        }
        if let Some(max) = opts.max_buffer_size {
            l.max_buffer_size = l.max_buffer_size.min(max);
        }
        l.max_storage_buffers_per_shader_stage = l
            .max_storage_buffers_per_shader_stage
            .max(KERNEL_STORAGE_BUFFERS_PER_STAGE);
        l
    };
    // The first limit of `want` that `adapter` cannot give: (name, wanted, offered).
    let shortfall = |want: &wgpu::Limits| {
        let mut first = None;
        want.check_limits_with_fail_fn(adapter, true, |name, want, have| {
            first.get_or_insert((name, want, have));
        });
        first
    };
    let base = match opts.limits {
        LimitBase::Auto if shortfall(&request(LimitBase::WebGpu)).is_none() => LimitBase::WebGpu,
        LimitBase::Auto => LimitBase::Downlevel,
        forced => forced,
    };
    let limits = request(base);
    match shortfall(&limits) {
        None => Ok((limits, base)),
        Some((limit, value, max)) => Err(Error::Limit {
            what: format!("a device on {adapter_name} at the {base} limits"),
            limit,
            value,
            max,
        }),
    }
}

/// Bind groups kept before the cache is cleared outright.
const BIND_GROUP_CACHE: usize = 4096;

/// Flushes (of any kind) a cached bind group may go unused before it (and its
/// hold on its buffers) is dropped: enough that a step split into many
/// submissions by the dispatch bound keeps its bind groups from one step to
/// the next, few enough that work which never reads back (streaming) does not
/// keep the buffers of old bind groups alive for long.
const BIND_GROUP_IDLE_FLUSHES: u64 = 64;

/// Owns everything GPU-side. Cheap to share behind an `Arc`; safe to use from several threads.
#[derive(Debug)]
pub struct GpuContext {
    _instance: wgpu::Instance,
    _adapter: wgpu::Adapter,
    device: wgpu::Device,
    queue: wgpu::Queue,
    summary: AdapterSummary,
    limits: wgpu::Limits,
    limit_base: LimitBase,
    max_groups_per_dim: u32,
    max_dispatches_per_submit: usize,
    // The forced recurrent-product variant (None: chosen per shape).
    step_kernel: Option<StepKernel>,
    /// Every shader compiled with runtime bounds checks (see ContextOptions).
    checked_shaders: bool,
    timeout: Duration,
    param_align: usize,
    state: Arc<DeviceState>,
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    next_kernel_id: AtomicU64,
    pending: Mutex<Pending>,
    dispatches: AtomicU64,
    step_dispatches: AtomicU64,
    submits: AtomicU64,
    readbacks: AtomicU64,
    read_bytes: AtomicU64,
    staging_allocations: AtomicU64,
    // Unmapped readback staging buffers, free for the next readback of
    // their size class (at most STAGING_KEPT of them, STAGING_KEPT_BYTES).
    staging_free: Mutex<Vec<wgpu::Buffer>>,
    allocations: AtomicU64,
    allocated_bytes: AtomicU64,
}

/// At most this many readback staging buffers are kept for reuse...
pub const STAGING_KEPT: usize = 8;
/// ... holding at most these many bytes together; a larger readback's buffer
/// is released after it.
pub const STAGING_KEPT_BYTES: u64 = 32 << 20;

/// The staging size of a readback of `bytes` (a multiple of 8): the next
/// power of two, at least 256 bytes, so that readbacks of similar sizes share
/// buffers; a readback too large to be kept gets exactly its size (no
/// rounding past the device's buffer limit, no memory wasted).
fn staging_class(bytes: u64) -> u64 {
    let class = bytes.max(256).next_power_of_two();
    if class <= STAGING_KEPT_BYTES {
        class
    } else {
        bytes
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of our locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl GpuContext {
    /// Opens the best adapter allowed by `opts` and creates a device on it
    /// with the limits of [`required_limits`]. Fails with [`Error::Limit`]
    /// naming the first limit the adapter cannot give, and with
    /// [`Error::RequestDevice`] when it lacks [`REQUIRED_DOWNLEVEL_FLAGS`] or
    /// the driver refuses the device.
    pub fn new(opts: ContextOptions) -> Result<Self> {
        let instance = new_instance(opts.backends);
        let adapter = choose_adapter(&instance, &opts)?;
        let summary = AdapterSummary::of(&adapter.get_info());
        // A known base plus what the kernels need, not everything the adapter
        // offers: a kernel relying on a generous adapter would then fail in
        // our tests rather than on a user's WebGPU implementation.
        let (limits, limit_base) = required_limits(&adapter.limits(), &opts, &summary.to_string())?;
        let missing = REQUIRED_DOWNLEVEL_FLAGS - adapter.get_downlevel_capabilities().flags;
        if !missing.is_empty() {
            return Err(Error::RequestDevice {
                adapter: summary.to_string(),
                message: format!("the adapter lacks the downlevel capabilities {missing:?}"),
            });
        }
        let desc = wgpu::DeviceDescriptor {
            label: Some("rnn-wgpu"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::RequestDevice {
                adapter: summary.to_string(),
                message: e.to_string(),
            }
        })?;
        let state = Arc::new(DeviceState::default());
        {
            let state = state.clone();
            device.set_device_lost_callback(move |reason, message| {
                *lock(&state.lost_reason) = Some(format!("{reason:?}: {message}"));
                state.lost.store(true, Ordering::SeqCst);
            });
        }
        {
            // Errors outside our error scopes must never panic (wgpu's default handler does).
            let state = state.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                lock(&state.uncaptured).push(e.to_string());
            }));
        }
        let max_groups_per_dim = opts
            .max_workgroups_per_dim
            .unwrap_or(u32::MAX)
            .min(limits.max_compute_workgroups_per_dimension)
            .max(1);
        let param_align = (limits.min_uniform_buffer_offset_alignment as usize).max(16);
        Ok(GpuContext {
            _instance: instance,
            _adapter: adapter,
            device,
            queue,
            summary,
            limits,
            limit_base,
            max_groups_per_dim,
            max_dispatches_per_submit: opts.max_dispatches_per_submit.max(1),
            step_kernel: opts.step_kernel,
            checked_shaders: opts.checked_shaders,
            timeout: opts.timeout,
            param_align,
            state,
            modules: Mutex::new(HashMap::new()),
            next_kernel_id: AtomicU64::new(0),
            pending: Mutex::new(Pending::default()),
            dispatches: AtomicU64::new(0),
            step_dispatches: AtomicU64::new(0),
            submits: AtomicU64::new(0),
            readbacks: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            staging_allocations: AtomicU64::new(0),
            staging_free: Mutex::new(Vec::new()),
            allocations: AtomicU64::new(0),
            allocated_bytes: AtomicU64::new(0),
        })
    }

    /// The recurrent-product variant of a cell step with `batch` rows and
    /// `hidden` units: the forced one ([`ContextOptions::step_kernel`]), else
    /// [`StepKernel::auto`].
    pub fn step_kernel(&self, batch: usize, hidden: usize) -> StepKernel {
        self.step_kernel
            .unwrap_or_else(|| StepKernel::auto(batch, hidden))
    }

    /// Opens a context as configured by the environment (`RNN_WGPU_BACKEND`,
    /// `RNN_WGPU_ADAPTER`, `RNN_WGPU_STEP_KERNEL`).
    pub fn from_env() -> Result<Self> {
        Self::new(ContextOptions::from_env()?)
    }

    /// The adapter this context runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// The device limits in force (those requested; see [`required_limits`]).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The base the limits were built on ([`LimitBase::WebGpu`] or
    /// [`LimitBase::Downlevel`]; `Auto` is resolved when the context opens).
    pub fn limit_base(&self) -> LimitBase {
        self.limit_base
    }

    /// The most dispatches one submission holds
    /// ([`ContextOptions::max_dispatches_per_submit`]).
    pub fn max_dispatches_per_submit(&self) -> usize {
        self.max_dispatches_per_submit
    }

    /// The wgpu device (for callers that record their own work).
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The per-dimension workgroup count above which grids are folded into 2-D.
    pub fn max_workgroups_per_dim(&self) -> u32 {
        self.max_groups_per_dim
    }

    /// Counts of dispatches, submits and readbacks so far.
    pub fn counters(&self) -> Counters {
        Counters {
            dispatches: self.dispatches.load(Ordering::Relaxed),
            step_dispatches: self.step_dispatches.load(Ordering::Relaxed),
            submits: self.submits.load(Ordering::Relaxed),
            readbacks: self.readbacks.load(Ordering::Relaxed),
            read_bytes: self.read_bytes.load(Ordering::Relaxed),
            staging_allocations: self.staging_allocations.load(Ordering::Relaxed),
            allocations: self.allocations.load(Ordering::Relaxed),
            allocated_bytes: self.allocated_bytes.load(Ordering::Relaxed),
        }
    }

    /// Destroys the device. Every later call returns [`Error::DeviceLost`]; used to test recovery.
    pub fn destroy_device(&self) {
        self.device.destroy();
        // The lost callback runs on the next poll; make the state visible now.
        let _ = self.device.poll(wgpu::PollType::Poll);
        if !self.state.lost.load(Ordering::SeqCst) {
            *lock(&self.state.lost_reason) = Some("Destroyed: device destroyed".into());
            self.state.lost.store(true, Ordering::SeqCst);
        }
    }

    /// Fails with [`Error::DeviceLost`] once the device is gone.
    pub fn check_alive(&self) -> Result<()> {
        if self.state.lost.load(Ordering::SeqCst) {
            let reason = lock(&self.state.lost_reason)
                .clone()
                .unwrap_or_else(|| "unknown".into());
            return Err(Error::DeviceLost { reason });
        }
        Ok(())
    }

    /// Workgroup grid for `groups` workgroups, folded into 2-D when it exceeds the
    /// per-dimension limit. Kernels rebuild the linear index with `linear_group()`.
    pub fn grid(&self, groups: u64) -> Result<[u32; 3]> {
        let max = self.max_groups_per_dim as u64;
        if groups <= max {
            return Ok([groups.max(1) as u32, 1, 1]);
        }
        let y = groups.div_ceil(max);
        if y > max {
            return Err(Error::Limit {
                what: format!("a grid of {groups} workgroups"),
                limit: "max_compute_workgroups_per_dimension (squared)",
                value: groups,
                max: max * max,
            });
        }
        Ok([max as u32, y as u32, 1])
    }

    /// Checks that a buffer of `bytes` can be bound as one storage binding.
    pub fn check_binding_size(&self, what: &str, bytes: u64) -> Result<()> {
        let max = self.limits.max_storage_buffer_binding_size;
        if bytes > max {
            return Err(Error::Limit {
                what: what.to_string(),
                limit: "max_storage_buffer_binding_size",
                value: bytes,
                max,
            });
        }
        Ok(())
    }

    /// Creates a storage buffer of `bytes` (rounded up to 4), zero-filled or holding `data`.
    pub(crate) fn create_buffer(
        &self,
        label: &str,
        bytes: u64,
        data: Option<&[u8]>,
    ) -> Result<wgpu::Buffer> {
        self.check_alive()?;
        let size = bytes.max(4).div_ceil(4) * 4;
        if size > self.limits.max_buffer_size {
            return Err(Error::Limit {
                what: format!("buffer {label}"),
                limit: "max_buffer_size",
                value: size,
                max: self.limits.max_buffer_size,
            });
        }
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: data.is_some(),
        });
        if let Some(data) = data {
            // Mapped at creation: fill it directly, no staging copy.
            match buffer.slice(..).get_mapped_range_mut() {
                Ok(mut view) => {
                    view.slice(..data.len()).copy_from_slice(data);
                    view.slice(data.len()..).fill(0);
                }
                Err(e) => {
                    return Err(Error::Gpu {
                        op: format!("upload {label}"),
                        message: e.to_string(),
                    });
                }
            }
            buffer.unmap();
        }
        self.pop_scopes(val, oom, &format!("allocate {label} ({size} bytes)"))?;
        self.allocations.fetch_add(1, Ordering::Relaxed);
        self.allocated_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(buffer)
    }

    /// Writes `data` into `buffer` at byte `offset`, after all work recorded so far.
    pub(crate) fn write_buffer(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        let mut pending = lock(&self.pending);
        // queue.write_buffer lands before the next submission's commands, so
        // earlier recorded work must be submitted first to keep program order.
        self.flush_locked(&mut pending, "write")?;
        self.queue.write_buffer(buffer, offset, data);
        Ok(())
    }

    fn module(&self, shader: Shader) -> Result<wgpu::ShaderModule> {
        let mut modules = lock(&self.modules);
        if let Some(m) = modules.get(&shader) {
            return Ok(m.clone());
        }
        let checks = if shader.is_trusted() && !self.checked_shaders {
            // Safety: see Shader::is_trusted. Only the bounds checks are
            // dropped; loop bounding and the integer-division guards stay.
            wgpu::ShaderRuntimeChecks {
                bounds_checks: false,
                ..wgpu::ShaderRuntimeChecks::checked()
            }
        } else {
            wgpu::ShaderRuntimeChecks::checked()
        };
        let module = self.compile_with(shader.file(), &shader.source(), checks)?;
        modules.insert(shader, module.clone());
        Ok(module)
    }

    /// Compiles WGSL `source`; a compile error becomes [`Error::ShaderCompile`]
    /// carrying the compiler's message.
    pub fn compile(&self, label: &str, source: &str) -> Result<wgpu::ShaderModule> {
        self.compile_with(label, source, wgpu::ShaderRuntimeChecks::checked())
    }

    fn compile_with(
        &self,
        label: &str,
        source: &str,
        checks: wgpu::ShaderRuntimeChecks,
    ) -> Result<wgpu::ShaderModule> {
        self.check_alive()?;
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        };
        // Safety: unchecked builds are only requested for Shader::is_trusted
        // kernels (see `module`); `checked()` is the safe default.
        let module = unsafe { self.device.create_shader_module_trusted(desc, checks) };
        if let Some(e) = pollster::block_on(val.pop()) {
            return Err(Error::ShaderCompile {
                shader: label.into(),
                entry: "(module)".into(),
                message: e.to_string(),
            });
        }
        Ok(module)
    }

    /// The pipeline for `spec` with `constants`, built once and cached in
    /// `pending` (whose lock the caller holds).
    fn kernel(
        &self,
        pending: &mut Pending,
        spec: KernelSpec,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<Kernel>> {
        let Some(key) = PipelineKey::new(spec, constants) else {
            return Err(Error::Gpu {
                op: spec.entry.into(),
                message: format!(
                    "internal: {} override constants (at most {})",
                    constants.len(),
                    super::kernel::MAX_CONSTANTS
                ),
            });
        };
        // Runs of dispatches of one kernel (a layer's time steps) skip the hash.
        if let Some((last, k)) = &pending.last_kernel
            && *last == key
        {
            return Ok(k.clone());
        }
        if let Some(k) = pending.pipelines.get(&key) {
            pending.last_kernel = Some((key, k.clone()));
            return Ok(k.clone());
        }
        // wgpu would refuse the layout too, but with a message naming no limit.
        let storage = spec.bindings.len() as u64;
        let max = self.limits.max_storage_buffers_per_shader_stage as u64;
        if storage > max {
            return Err(Error::Limit {
                what: format!("kernel {}", spec.entry),
                limit: "max_storage_buffers_per_shader_stage",
                value: storage,
                max,
            });
        }
        let module = self.module(spec.shader)?;
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = bind_group_layout(&self.device, &spec);
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(spec.entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(spec.entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(val.pop()) {
            return Err(Error::ShaderCompile {
                shader: spec.shader.file().into(),
                entry: spec.entry.into(),
                message: e.to_string(),
            });
        }
        let kernel = Arc::new(Kernel {
            id: self.next_kernel_id.fetch_add(1, Ordering::Relaxed),
            spec,
            pipeline,
            layout,
        });
        pending.pipelines.insert(key, kernel.clone());
        Ok(kernel)
    }

    /// Records GPU work. Everything `f` records is appended to the pending
    /// submission as a unit, and only if `f` succeeds.
    ///
    /// The recorder writes straight into the pending submission under its
    /// lock, taken once here: a dispatch takes no other lock and, once the
    /// pending vectors have grown, allocates nothing.
    pub fn record<R>(&self, f: impl FnOnce(&mut Recorder<'_>) -> Result<R>) -> Result<R> {
        self.check_alive()?;
        let mut pending = lock(&self.pending);
        // This op's parameter blocks start at an aligned offset (the padding
        // before it is never read).
        let base = pending.params.len().div_ceil(self.param_align) * self.param_align;
        pending.params.resize(base, 0);
        let mut rec = Recorder {
            ctx: self,
            cmds0: pending.cmds.len(),
            bound0: pending.bound.len(),
            params0: base,
            dispatches: 0,
            pending: &mut pending,
        };
        let out = f(&mut rec);
        let (cmds0, bound0, base, unit) = (rec.cmds0, rec.bound0, rec.params0, rec.dispatches);
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                pending.cmds.truncate(cmds0);
                pending.bound.truncate(bound0);
                pending.params.truncate(base);
                return Err(e);
            }
        };
        // Display watchdogs: submit what was pending before this op when the
        // op would take it past the bound. Program order is kept (the queue
        // runs submissions in order), so results do not change.
        let before = pending.dispatches;
        if before > 0 && before + unit > self.max_dispatches_per_submit {
            let cmds = pending.cmds.split_off(cmds0);
            let bound = pending.bound.split_off(bound0);
            let params = pending.params.split_off(base);
            self.flush_locked(&mut pending, "flush (dispatch bound)")?;
            // The flush left nothing pending: the op's blocks and buffers
            // move to the front.
            pending.params.extend_from_slice(&params);
            pending.bound.extend(bound);
            for mut cmd in cmds {
                if let Cmd::Dispatch {
                    bound,
                    param_offset,
                    ..
                } = &mut cmd
                {
                    *bound -= bound0 as u32;
                    *param_offset -= base as u32;
                }
                pending.cmds.push(cmd);
            }
        }
        pending.dispatches += unit;
        Ok(out)
    }

    /// Submits everything recorded so far: one command buffer and one submit
    /// for every [`GpuContext::max_dispatches_per_submit`] dispatches.
    pub fn flush(&self) -> Result<()> {
        let mut pending = lock(&self.pending);
        self.flush_locked(&mut pending, "flush")
    }

    /// Submits everything and waits for the GPU to finish it.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        self.wait("sync")
    }

    fn wait(&self, op: &str) -> Result<()> {
        self.wait_for(None, op)
    }

    /// Waits for `submission` (`None`: everything submitted).
    fn wait_for(&self, submission: Option<wgpu::SubmissionIndex>, op: &str) -> Result<()> {
        match self.device.poll(wgpu::PollType::Wait {
            submission_index: submission,
            timeout: Some(self.timeout),
        }) {
            Ok(_) => self.check_alive(),
            Err(wgpu::PollError::Timeout) => {
                self.check_alive()?;
                Err(Error::Timeout {
                    op: op.into(),
                    seconds: self.timeout.as_secs(),
                })
            }
            Err(e) => {
                self.check_alive()?;
                Err(Error::Gpu {
                    op: op.into(),
                    message: e.to_string(),
                })
            }
        }
    }

    fn pop_scopes(
        &self,
        val: wgpu::ErrorScopeGuard,
        oom: wgpu::ErrorScopeGuard,
        op: &str,
    ) -> Result<()> {
        // Scopes pop in reverse order of their pushes.
        let val = pollster::block_on(val.pop());
        let oom = pollster::block_on(oom.pop());
        self.check_alive()?;
        if oom.is_some() {
            return Err(Error::OutOfMemory { op: op.into() });
        }
        if let Some(e) = val {
            return Err(Error::Gpu {
                op: op.into(),
                message: e.to_string(),
            });
        }
        let uncaptured = std::mem::take(&mut *lock(&self.state.uncaptured));
        if !uncaptured.is_empty() {
            return Err(Error::Gpu {
                op: op.into(),
                message: uncaptured.join("; "),
            });
        }
        Ok(())
    }

    /// Submits the pending work.
    ///
    /// The parameter arena is written once, before the first of this flush's
    /// submissions, and rewritten by the next flush while these may still be
    /// running. That is safe: `queue.write_buffer` takes effect in queue
    /// order, after every earlier submission and before the next one (wgpu
    /// inserts the barrier between their uses of the arena), as WebGPU's
    /// queue timeline specifies.
    fn flush_locked(&self, pending: &mut Pending, op: &str) -> Result<()> {
        self.check_alive()?;
        if pending.cmds.is_empty() {
            return Ok(());
        }
        let mut cmds = std::mem::take(&mut pending.cmds);
        let mut params = std::mem::take(&mut pending.params);
        let mut bound = std::mem::take(&mut pending.bound);
        pending.dispatches = 0;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);

        // One uniform arena holds every dispatch's parameters; grow it (and drop
        // the bind groups that point at the old one) when this batch needs more.
        let need = (params.len() as u64 + PARAM_WINDOW).next_power_of_two();
        let arena_ok = pending
            .arena
            .as_ref()
            .is_some_and(|a| a.buffer.size() >= need);
        if !arena_ok {
            pending.bind_groups.clear();
            pending.arena = Some(Arena {
                buffer: self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params arena"),
                    size: need.max(4096),
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
            });
        }
        let Some(arena) = pending.arena.as_ref().map(|a| a.buffer.clone()) else {
            return Err(Error::Gpu {
                op: op.into(),
                message: "internal: parameter arena missing".into(),
            });
        };
        if !params.is_empty() {
            self.queue.write_buffer(&arena, 0, &params);
        }
        if pending.bind_groups.len() > BIND_GROUP_CACHE {
            pending.bind_groups.clear();
        }
        pending.flushes += 1;
        let now = pending.flushes;

        // One command buffer and one submit per `max_dispatches_per_submit`
        // dispatches (a single op larger than the bound is split too); copies
        // and clears go with the dispatches around them.
        let mut start = 0;
        while start < cmds.len() {
            let mut end = start;
            let (mut n_dispatch, mut n_step) = (0, 0);
            while let Some(cmd) = cmds.get(end) {
                if let Cmd::Dispatch { kernel, .. } = cmd {
                    if n_dispatch == self.max_dispatches_per_submit {
                        break;
                    }
                    n_dispatch += 1;
                    n_step += kernel.spec.shader.is_step() as u64;
                }
                end += 1;
            }
            let buffer = self.encode(pending, &cmds[start..end], &bound, &arena, now, op);
            pending.last_submission = Some(self.queue.submit([buffer]));
            self.submits.fetch_add(1, Ordering::Relaxed);
            self.dispatches
                .fetch_add(n_dispatch as u64, Ordering::Relaxed);
            self.step_dispatches.fetch_add(n_step, Ordering::Relaxed);
            start = end;
        }
        pending.bind_groups.retain(|_, groups| {
            groups.retain(|g| g.used + BIND_GROUP_IDLE_FLUSHES >= now);
            !groups.is_empty()
        });
        // Hand the (emptied) vectors back with their capacity. What the
        // commands held (buffers, kernels) is released here.
        cmds.clear();
        params.clear();
        bound.clear();
        pending.cmds = cmds;
        pending.params = params;
        pending.bound = bound;
        // Let wgpu retire finished work without blocking.
        let _ = self.device.poll(wgpu::PollType::Poll);
        self.pop_scopes(val, oom, op)
    }

    /// Encodes `cmds` into one command buffer; consecutive dispatches share a
    /// compute pass, and bind groups come from (and go into) the cache.
    fn encode(
        &self,
        pending: &mut Pending,
        cmds: &[Cmd],
        bound: &[wgpu::Buffer],
        arena: &wgpu::Buffer,
        now: u64,
        op: &str,
    ) -> wgpu::CommandBuffer {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(op) });
        let mut i = 0;
        while i < cmds.len() {
            match &cmds[i] {
                Cmd::Dispatch { .. } => {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: None,
                    });
                    while let Some(Cmd::Dispatch {
                        kernel,
                        bound: at,
                        n_bound,
                        param_offset,
                        groups,
                    }) = cmds.get(i)
                    {
                        let buffers = &bound[*at as usize..(*at + *n_bound) as usize];
                        let cached = pending
                            .bind_groups
                            .entry(bind_hash(kernel.id, buffers))
                            .or_default();
                        let found = cached
                            .iter_mut()
                            .find(|g| g.kernel == kernel.id && *g.buffers == *buffers);
                        let bind_group = match found {
                            Some(g) => {
                                g.used = now;
                                g.group.clone()
                            }
                            None => {
                                let group = self.bind_group(kernel, arena, buffers);
                                cached.push(CachedGroup {
                                    kernel: kernel.id,
                                    buffers: buffers.into(),
                                    group: group.clone(),
                                    used: now,
                                });
                                group
                            }
                        };
                        pass.set_pipeline(&kernel.pipeline);
                        pass.set_bind_group(0, &bind_group, &[*param_offset]);
                        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                        i += 1;
                    }
                }
                Cmd::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    size,
                } => {
                    encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size);
                    i += 1;
                }
                Cmd::Clear {
                    buffer,
                    offset,
                    size,
                } => {
                    encoder.clear_buffer(buffer, *offset, Some(*size));
                    i += 1;
                }
            }
        }
        encoder.finish()
    }

    fn bind_group(
        &self,
        kernel: &Kernel,
        arena: &wgpu::Buffer,
        buffers: &[wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: arena,
                offset: 0,
                size: wgpu::BufferSize::new(PARAM_WINDOW),
            }),
        }];
        for (&(binding, _), buffer) in kernel.spec.bindings.iter().zip(buffers) {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            });
        }
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.spec.entry),
            layout: &kernel.layout,
            entries: &entries,
        })
    }

    /// Copies byte ranges of buffers back to the host, in one submission and one map.
    pub(crate) fn read_buffers(&self, parts: &[(&wgpu::Buffer, u64, u64)]) -> Result<Vec<Vec<u8>>> {
        self.start_read(parts)?.finish(self)
    }

    /// Submits everything recorded so far followed by copies of byte ranges
    /// of buffers into one staging buffer, and asks for it to be mapped;
    /// [`ReadInFlight::finish`] waits for that submission alone (later ones
    /// may still run) and returns the bytes.
    pub(crate) fn start_read(&self, parts: &[(&wgpu::Buffer, u64, u64)]) -> Result<ReadInFlight> {
        self.check_alive()?;
        let mut layout = Vec::with_capacity(parts.len());
        let mut total = 0u64;
        for &(_, _, size) in parts {
            let padded = size.div_ceil(4) * 4;
            layout.push((total, size));
            // Map offsets must be multiples of 8.
            total += padded.div_ceil(8) * 8;
        }
        let staging = self.take_staging(total);
        let submission = {
            let mut pending = lock(&self.pending);
            for (&(buffer, offset, size), &(at, _)) in parts.iter().zip(&layout) {
                let padded = size.div_ceil(4) * 4;
                if padded > 0 {
                    pending.cmds.push(Cmd::Copy {
                        src: buffer.clone(),
                        src_offset: offset,
                        dst: staging.clone(),
                        dst_offset: at,
                        size: padded,
                    });
                }
            }
            self.flush_locked(&mut pending, "readback")?;
            pending.last_submission.clone()
        };
        let (sender, receiver) = futures_intrusive::channel::shared::oneshot_channel();
        staging
            .slice(..total.max(8))
            .map_async(wgpu::MapMode::Read, move |r| {
                sender.send(r).ok();
            });
        Ok(ReadInFlight {
            staging,
            mapped: total.max(8),
            layout,
            submission,
            receiver,
        })
    }

    /// A free staging buffer of `bytes`' size class, or a new one.
    fn take_staging(&self, bytes: u64) -> wgpu::Buffer {
        let class = staging_class(bytes);
        let mut free = lock(&self.staging_free);
        if let Some(i) = free.iter().position(|b| b.size() == class) {
            return free.swap_remove(i);
        }
        drop(free);
        self.staging_allocations.fetch_add(1, Ordering::Relaxed);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback staging"),
            size: class,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Keeps an unmapped staging buffer for the next readback of its size
    /// class, unless the free list is full (then it is released).
    fn give_staging(&self, buffer: wgpu::Buffer) {
        let mut free = lock(&self.staging_free);
        let held: u64 = free.iter().map(|b| b.size()).sum();
        if free.len() < STAGING_KEPT && held + buffer.size() <= STAGING_KEPT_BYTES {
            free.push(buffer);
        }
    }

    /// Bytes of the readback staging buffers kept for reuse.
    pub fn staging_bytes(&self) -> u64 {
        lock(&self.staging_free).iter().map(|b| b.size()).sum()
    }

    /// Releases the staging buffers kept for reuse (readbacks in flight keep
    /// theirs).
    pub fn release_staging(&self) {
        lock(&self.staging_free).clear();
    }
}

/// A readback started by `GpuContext::start_read`.
pub(crate) struct ReadInFlight {
    staging: wgpu::Buffer,
    /// The mapped bytes at its start (the buffer may be larger).
    mapped: u64,
    /// Offset in the staging buffer and size of every part.
    layout: Vec<(u64, u64)>,
    submission: Option<wgpu::SubmissionIndex>,
    receiver: futures_intrusive::channel::shared::OneshotReceiver<
        std::result::Result<(), wgpu::BufferAsyncError>,
    >,
}

impl ReadInFlight {
    /// Waits for the copies' submission and the map; the bytes of every part.
    pub(crate) fn finish(self, ctx: &GpuContext) -> Result<Vec<Vec<u8>>> {
        let ReadInFlight {
            staging,
            mapped,
            layout,
            submission,
            receiver,
        } = self;
        ctx.wait_for(submission, "readback")?;
        ctx.readbacks.fetch_add(1, Ordering::Relaxed);
        let bytes: u64 = layout.iter().map(|&(_, size)| size).sum();
        ctx.read_bytes.fetch_add(bytes, Ordering::Relaxed);
        match pollster::block_on(receiver.receive()) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                ctx.check_alive()?;
                return Err(Error::Gpu {
                    op: "readback".into(),
                    message: e.to_string(),
                });
            }
            None => {
                ctx.check_alive()?;
                return Err(Error::Gpu {
                    op: "readback".into(),
                    message: "the map callback was dropped".into(),
                });
            }
        }
        let out = {
            let view = staging
                .slice(..mapped)
                .get_mapped_range()
                .map_err(|e| Error::Gpu {
                    op: "readback".into(),
                    message: e.to_string(),
                })?;
            layout
                .iter()
                .map(|&(at, size)| view[at as usize..(at + size) as usize].to_vec())
                .collect()
        };
        staging.unmap();
        ctx.give_staging(staging);
        Ok(out)
    }
}

/// Records the commands of one op (or a group of ops) into the pending
/// submission; [`GpuContext::record`] removes them again if the op fails.
pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    pending: &'a mut Pending,
    // Where this op's commands, buffers and parameter blocks start.
    cmds0: usize,
    bound0: usize,
    params0: usize,
    // This op's dispatches so far.
    dispatches: usize,
}

impl Recorder<'_> {
    /// The context being recorded into.
    pub fn ctx(&self) -> &GpuContext {
        self.ctx
    }

    /// Records one dispatch of `def` (with override `constants`, each one
    /// `def` lists) over `groups` workgroups, with `params` (the block type
    /// `def` names) as the uniform block and each of `buffers` bound to the
    /// binding its number names, `(binding, buffer)` pairs in any order.
    ///
    /// Nothing is recorded unless the numbers are exactly the storage
    /// bindings of `def`'s spec, each once (an internal [`Error::Gpu`] naming
    /// the kernel and the binding otherwise), every buffer fits one binding
    /// ([`Error::Limit`]), and no buffer bound read-write is bound twice
    /// ([`Error::Aliasing`]).
    pub(crate) fn dispatch<P: KernelParams>(
        &mut self,
        def: KernelDef<P>,
        constants: &[(&'static str, f64)],
        buffers: &[(u32, &wgpu::Buffer)],
        params: &P,
        groups: [u32; 3],
    ) -> Result<()> {
        let spec = def.spec();
        let declared = def.info().constants;
        if let Some((name, _)) = constants.iter().find(|(n, _)| !declared.contains(n)) {
            return Err(Error::Gpu {
                op: spec.entry.into(),
                message: format!(
                    "internal: override constant {name} is not among those its KernelDef lists ({declared:?})"
                ),
            });
        }
        let bytes = bytemuck::bytes_of(params);
        if bytes.len() as u64 > PARAM_WINDOW {
            return Err(Error::Gpu {
                op: spec.entry.into(),
                message: format!(
                    "internal: {} parameter bytes (max {PARAM_WINDOW})",
                    bytes.len()
                ),
            });
        }
        // From here on `buffers[i]` goes to `spec.bindings[i]`.
        // (Every one of the first `n` slots is filled.)
        let (slots, n) = spec.binding_order(buffers)?;
        let buffers = &slots[..n];
        for b in buffers.iter().flatten() {
            self.ctx.check_binding_size(spec.entry, b.size())?;
        }
        // A buffer written by a dispatch may not be bound to it a second time
        // (wgpu would reject the whole submission at flush).
        for (i, (&(_, access), b)) in spec.bindings.iter().zip(buffers).enumerate() {
            if access == Access::ReadWrite
                && let Some(j) = buffers
                    .iter()
                    .enumerate()
                    .position(|(j, o)| j != i && o == b)
            {
                return Err(Error::Aliasing {
                    op: spec.entry.into(),
                    arg: format!(
                        "binding {} (also bound at {})",
                        spec.bindings[j].0, spec.bindings[i].0
                    ),
                });
            }
        }
        let kernel = self.ctx.kernel(self.pending, spec, constants)?;
        let pending = &mut *self.pending;
        let align = self.ctx.param_align;
        let offset = pending.params.len().div_ceil(align) * align;
        pending.params.resize(offset, 0);
        pending.params.extend_from_slice(bytes);
        let at = pending.bound.len() as u32;
        pending
            .bound
            .extend(buffers.iter().flatten().map(|&b| b.clone()));
        pending.cmds.push(Cmd::Dispatch {
            kernel,
            bound: at,
            n_bound: n as u32,
            param_offset: offset as u32,
            groups,
        });
        self.dispatches += 1;
        Ok(())
    }

    /// True when this recorder has recorded nothing (yet).
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.pending.cmds.len() == self.cmds0
            && self.pending.bound.len() == self.bound0
            && self.pending.params.len() == self.params0
    }

    /// Records a buffer-to-buffer copy of `size` bytes (offsets and size multiples of 4).
    pub(crate) fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        if size > 0 {
            self.pending.cmds.push(Cmd::Copy {
                src: src.clone(),
                src_offset,
                dst: dst.clone(),
                dst_offset,
                size,
            });
        }
    }

    /// Records zeroing `size` bytes of `buffer` from `offset` (multiples of 4).
    pub(crate) fn clear(&mut self, buffer: &wgpu::Buffer, offset: u64, size: u64) {
        if size > 0 {
            self.pending.cmds.push(Cmd::Clear {
                buffer: buffer.clone(),
                offset,
                size,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::kernel::kernel_params;

    /// A context on this machine's adapter, or `None` (with a message) when
    /// it has none; under `CI=true` a missing adapter is a failure, as in
    /// `tests/common`.
    fn gpu() -> Option<GpuContext> {
        match ContextOptions::from_env().and_then(GpuContext::new) {
            Ok(ctx) => Some(ctx),
            Err(e)
                if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false") =>
            {
                panic!("CI=true and the GPU tests cannot run: {e}")
            }
            Err(e) => {
                eprintln!("skipping a GPU test: {e}");
                None
            }
        }
    }

    kernel_params! {
        // `shaders/memory.wgsl`'s block.
        struct MemoryParams {
            n: u32,
            off: u32,
            value: f32,
            src_off: u32,
        }
    }

    /// `f32_to_f16`: reads binding 2 (`src_f32`), writes binding 3 (`dst_words`).
    const TO_F16: KernelDef<MemoryParams> = KernelDef::new(
        Shader::Memory,
        "f32_to_f16",
        &[(2, Access::Read), (3, Access::ReadWrite)],
        &[],
    );

    #[test]
    fn dispatch_binds_by_number_and_records_nothing_on_a_wrong_binding() {
        let Some(ctx) = gpu() else { return };
        let x = [1.0f32, -2.0, 0.5, 3.0];
        let src = ctx
            .create_buffer("src", 16, Some(bytemuck::cast_slice(&x)))
            .unwrap();
        let dst = ctx.create_buffer("dst", 8, None).unwrap();
        let p = MemoryParams {
            n: 4,
            off: 0,
            value: 0.0,
            src_off: 0,
        };
        let before = ctx.counters().dispatches;
        ctx.record(|rec| {
            let wrong: [&[(u32, &wgpu::Buffer)]; 3] = [
                &[(1, &src), (3, &dst)],            // 1 is not f32_to_f16's
                &[(3, &dst)],                       // 2 is missing
                &[(2, &src), (3, &dst), (2, &src)], // 2 twice
            ];
            for buffers in wrong {
                let err = rec
                    .dispatch(TO_F16, &[], buffers, &p, [1, 1, 1])
                    .unwrap_err();
                assert!(
                    matches!(&err, Error::Gpu { op, message }
                        if op == "f32_to_f16" && message.starts_with("internal: ")),
                    "{err}"
                );
                assert!(rec.is_empty());
            }
            // Two numbers, one buffer, one of them written: still refused.
            let err = rec
                .dispatch(TO_F16, &[], &[(2, &src), (3, &src)], &p, [1, 1, 1])
                .unwrap_err();
            assert!(matches!(err, Error::Aliasing { .. }), "{err}");
            assert!(rec.is_empty());
            Ok(())
        })
        .unwrap();
        ctx.flush().unwrap();
        assert_eq!(ctx.counters().dispatches, before, "nothing was submitted");
        // Given out of binding order, each buffer still goes to its number.
        ctx.record(|rec| rec.dispatch(TO_F16, &[], &[(3, &dst), (2, &src)], &p, [1, 1, 1]))
            .unwrap();
        let words = ctx.read_buffers(&[(&dst, 0, 8)]).unwrap();
        let half = |v: f32| half::f16::from_f32(v).to_bits() as u32;
        let want = [half(x[0]) | half(x[1]) << 16, half(x[2]) | half(x[3]) << 16];
        assert_eq!(words[0], bytemuck::cast_slice::<u32, u8>(&want));
        assert_eq!(ctx.counters().dispatches, before + 1);
    }

    fn opts(limits: LimitBase) -> ContextOptions {
        ContextOptions {
            limits,
            ..ContextOptions::default()
        }
    }

    #[test]
    fn limits_are_a_base_plus_what_the_kernels_need() {
        // A generous adapter (lavapipe-like): the WebGPU defaults, except the
        // buffer sizes, which are the adapter's.
        let big = wgpu::Limits {
            max_buffer_size: 2 << 30,
            max_storage_buffer_binding_size: 1 << 30,
            max_storage_buffers_per_shader_stage: 32,
            max_compute_workgroup_storage_size: 32 << 10,
            min_uniform_buffer_offset_alignment: 32,
            ..wgpu::Limits::default()
        };
        let (l, base) = required_limits(&big, &opts(LimitBase::Auto), "big").unwrap();
        assert_eq!(base, LimitBase::WebGpu);
        let expected = wgpu::Limits {
            max_buffer_size: 2 << 30,
            max_storage_buffer_binding_size: 1 << 30,
            ..wgpu::Limits::default()
        };
        assert_eq!(l, expected);
        // Forced downlevel: the downlevel set with 8 storage buffers per stage.
        let (l, base) = required_limits(&big, &opts(LimitBase::Downlevel), "big").unwrap();
        assert_eq!(base, LimitBase::Downlevel);
        let expected = wgpu::Limits {
            max_buffer_size: 2 << 30,
            max_storage_buffer_binding_size: 1 << 30,
            max_storage_buffers_per_shader_stage: KERNEL_STORAGE_BUFFERS_PER_STAGE,
            ..wgpu::Limits::downlevel_defaults()
        };
        assert_eq!(l, expected);
        // The options still cap the two sizes.
        let capped = ContextOptions {
            max_storage_binding: Some(64 << 10),
            max_buffer_size: Some(1 << 20),
            ..ContextOptions::default()
        };
        let (l, _) = required_limits(&big, &capped, "big").unwrap();
        assert_eq!(l.max_storage_buffer_binding_size, 64 << 10);
        assert_eq!(l.max_buffer_size, 1 << 20);
    }

    #[test]
    fn a_gl_class_adapter_gets_the_downlevel_base_or_a_limit_error() {
        // Below the WebGPU defaults (Metal-like workgroup memory, GLES-like
        // texture sizes) but with 8 storage buffers: the downlevel base.
        let mut gl = wgpu::Limits::downlevel_defaults();
        gl.max_storage_buffers_per_shader_stage = 8;
        let (l, base) = required_limits(&gl, &opts(LimitBase::Auto), "gl").unwrap();
        assert_eq!(base, LimitBase::Downlevel);
        assert_eq!(l.max_compute_workgroup_storage_size, 16352);
        // Forcing the WebGPU base there names the first limit it lacks.
        let err = required_limits(&gl, &opts(LimitBase::WebGpu), "gl").unwrap_err();
        match err {
            Error::Limit {
                limit, value, max, ..
            } => {
                assert_eq!(
                    (limit, value, max),
                    ("max_texture_dimension_1d", 8192, 2048)
                );
            }
            other => panic!("expected a limit error, got {other}"),
        }
        // Only 4 storage buffers per stage (GLES 3.1's minimum): the fused
        // cell steps cannot run, and the error says why.
        gl.max_storage_buffers_per_shader_stage = 4;
        let err = required_limits(&gl, &opts(LimitBase::Auto), "gl").unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                Error::Limit {
                    limit: "max_storage_buffers_per_shader_stage",
                    value: 8,
                    max: 4,
                    ..
                }
            ),
            "{text}"
        );
        assert!(text.contains("gl at the downlevel limits"), "{text}");
    }
}
