//! Runs wherever WebGPU runs: every shader entry point within the limits
//! every WebGPU implementation (and wgpu's downlevel, GL-class set) gives,
//! checked through naga's reflection; the whole self-check on a device opened
//! at the downlevel limits, and on a GL adapter when wgpu sees one; and
//! non-finite values handled by bit tests that fast math (Metal) cannot fold.

mod common;

use rnn_wgpu::backend::{Backend, CpuBackend, api};
use rnn_wgpu::doctor::selfcheck;
use rnn_wgpu::gpu::kernel::Shader;
use rnn_wgpu::gpu::{KERNEL_STORAGE_BUFFERS_PER_STAGE, LimitBase};
use rnn_wgpu::ops::activation::Activation;
use rnn_wgpu::parity::Tolerance;
use wgpu::naga;

/// What one entry point uses, from naga's analysis (globals reached from the
/// entry point, through the functions it calls).
#[derive(Debug)]
struct EntryUse {
    name: String,
    workgroup_size: [u32; 3],
    workgroup_bytes: u32,
    storage_buffers: u32,
    uniform_buffers: u32,
    uniform_bytes: u32,
    groups: Vec<u32>,
}

fn entry_uses(shader: Shader) -> Vec<EntryUse> {
    let source = shader.source();
    let module = naga::front::wgsl::parse_str(&source)
        .unwrap_or_else(|e| panic!("{}: {}", shader.file(), e.emit_to_string(&source)));
    // What wgpu validates with on a device with no optional features: the f16
    // packing builtins (memory.wgsl) come with the downlevel flag
    // SHADER_F16_IN_F32, which the context requires.
    let caps =
        naga::valid::Capabilities::default() | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", shader.file(), e.emit_to_string(&source)));
    module
        .entry_points
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            assert_eq!(ep.stage, naga::ShaderStage::Compute, "{}", ep.name);
            let uses = info.get_entry_point(i);
            let mut u = EntryUse {
                name: format!("{}::{}", shader.file(), ep.name),
                workgroup_size: ep.workgroup_size,
                workgroup_bytes: 0,
                storage_buffers: 0,
                uniform_buffers: 0,
                uniform_bytes: 0,
                groups: Vec::new(),
            };
            for (h, var) in module.global_variables.iter() {
                if uses[h].is_empty() {
                    continue;
                }
                let bytes = module.types[var.ty].inner.size(module.to_ctx());
                if let Some(b) = &var.binding {
                    u.groups.push(b.group);
                }
                match var.space {
                    naga::AddressSpace::WorkGroup => u.workgroup_bytes += bytes,
                    naga::AddressSpace::Storage { .. } => u.storage_buffers += 1,
                    naga::AddressSpace::Uniform => {
                        u.uniform_buffers += 1;
                        u.uniform_bytes += bytes;
                    }
                    _ => {}
                }
            }
            u
        })
        .collect()
}

/// Every entry point fits both bases a context may open with (WebGPU's
/// defaults and the downlevel set), with storage buffers up to what
/// `required_limits` asks above the base. wgpu checks some of this when a
/// pipeline is built, but not workgroup memory (a kernel over 16 KiB would run
/// on lavapipe's 32 KiB and fail on Metal), and only for kernels a test builds.
#[test]
fn every_entry_point_fits_the_webgpu_and_downlevel_limits() {
    let webgpu = wgpu::Limits::default();
    let downlevel = wgpu::Limits::downlevel_defaults();
    let floor = |f: fn(&wgpu::Limits) -> u32| f(&webgpu).min(f(&downlevel));
    let invocations = floor(|l| l.max_compute_invocations_per_workgroup);
    let size = [
        floor(|l| l.max_compute_workgroup_size_x),
        floor(|l| l.max_compute_workgroup_size_y),
        floor(|l| l.max_compute_workgroup_size_z),
    ];
    let workgroup_bytes = floor(|l| l.max_compute_workgroup_storage_size);
    // The uniform window every dispatch binds (kernel::PARAM_WINDOW), well
    // inside both bases' uniform binding size (16 KiB downlevel).
    let window = 256;
    assert!(window as u64 <= downlevel.max_uniform_buffer_binding_size);
    let mut most_storage = 0;
    let mut most_workgroup = 0;
    let mut entries = 0;
    for shader in Shader::ALL {
        for u in entry_uses(shader) {
            entries += 1;
            let [x, y, z] = u.workgroup_size;
            assert!(
                x * y * z <= invocations,
                "{}: > {invocations} invocations ({u:?})",
                u.name
            );
            for d in 0..3 {
                assert!(
                    u.workgroup_size[d] <= size[d],
                    "{}: workgroup size above {size:?}",
                    u.name
                );
            }
            assert!(
                u.workgroup_bytes <= workgroup_bytes,
                "{}: > {workgroup_bytes} bytes of workgroup memory ({u:?})",
                u.name
            );
            assert!(
                u.storage_buffers <= KERNEL_STORAGE_BUFFERS_PER_STAGE
                    && u.storage_buffers <= webgpu.max_storage_buffers_per_shader_stage,
                "{}: more storage buffers than requested ({u:?})",
                u.name
            );
            assert!(
                u.uniform_buffers == 1 && u.uniform_bytes <= window,
                "{}: one parameter block of at most {window} bytes ({u:?})",
                u.name
            );
            assert!(
                u.groups.iter().all(|&g| g == 0),
                "{}: bind group 0 only",
                u.name
            );
            most_storage = most_storage.max(u.storage_buffers);
            most_workgroup = most_workgroup.max(u.workgroup_bytes);
        }
    }
    assert!(entries >= 25, "only {entries} entry points found");
    // The constant states what the kernels need, no more.
    assert_eq!(most_storage, KERNEL_STORAGE_BUFFERS_PER_STAGE);
    eprintln!(
        "{entries} entry points; at most {most_storage} storage buffers and \
         {most_workgroup} bytes of workgroup memory"
    );
}

/// The whole self-check (every kernel and variant, every cell with each step
/// variant, three training steps) on a device opened at the downlevel limits.
#[test]
fn selfcheck_passes_at_the_downlevel_limits() {
    let Some((ctx, gpu)) = common::own_gpu(|o| o.limits = LimitBase::Downlevel) else {
        return;
    };
    assert_eq!(ctx.limit_base(), LimitBase::Downlevel);
    let l = ctx.limits();
    let d = wgpu::Limits::downlevel_defaults();
    assert_eq!(l.max_storage_buffers_per_shader_stage, 8);
    assert_eq!(
        l.max_compute_workgroup_storage_size,
        d.max_compute_workgroup_storage_size
    );
    assert_eq!(
        l.max_uniform_buffer_binding_size,
        d.max_uniform_buffer_binding_size
    );
    let (report, secs) = selfcheck(&gpu);
    assert!(report.passed(), "{}", report.table());
    eprintln!(
        "downlevel self-check on {}: {} checks in {secs:.1} s",
        ctx.adapter(),
        report.rows.len()
    );
}

/// The default context opens at the WebGPU defaults on this machine's adapter
/// (every other test runs there).
#[test]
fn the_default_context_requests_the_webgpu_defaults() {
    let Some(ctx) = common::gpu_ctx() else { return };
    if ctx.limit_base() != LimitBase::WebGpu {
        common::say(&format!(
            "note: {} cannot give the WebGPU defaults; the tests run at the {} limits",
            ctx.adapter(),
            ctx.limit_base()
        ));
        return;
    }
    let w = wgpu::Limits::default();
    let l = ctx.limits();
    assert_eq!(
        l.max_storage_buffers_per_shader_stage,
        w.max_storage_buffers_per_shader_stage
    );
    assert_eq!(
        l.max_compute_workgroup_storage_size,
        w.max_compute_workgroup_storage_size
    );
    assert_eq!(
        l.max_compute_invocations_per_workgroup,
        w.max_compute_invocations_per_workgroup
    );
    assert_eq!(
        l.max_compute_workgroups_per_dimension,
        w.max_compute_workgroups_per_dimension
    );
    assert_eq!(l.min_uniform_buffer_offset_alignment, 256);
    assert!(l.max_buffer_size >= l.max_storage_buffer_binding_size);
}

/// The self-check on wgpu's GL backend, at the downlevel limits GL-class
/// adapters get, when this machine has a GL adapter that opens headless
/// (Mesa's llvmpipe through EGL on Linux). It is not required, even under
/// CI=true: scripts/test.sh cannot be sure to install a working EGL stack, so
/// a run without one says so on the terminal instead.
#[test]
fn selfcheck_passes_on_gl_when_there_is_a_gl_adapter() {
    let (ctx, gpu) = match common::own_gl_gpu(|o| o.limits = LimitBase::Downlevel) {
        Ok(opened) => opened,
        Err(why) => {
            common::say(&format!(
                "NOTE: the GL self-check did not run: {why}. On Debian/Ubuntu, \
                 `apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri` provides one (llvmpipe)."
            ));
            return;
        }
    };
    assert_eq!(ctx.adapter().backend, wgpu::Backend::Gl);
    let (report, secs) = selfcheck(&gpu);
    assert!(report.passed(), "{}: {}", ctx.adapter(), report.table());
    common::say(&format!(
        "GL self-check on {}: {} checks passed in {secs:.1} s",
        ctx.adapter(),
        report.rows.len()
    ));
}

/// Activations keep NaN and infinities as the CPU does (tanh used to turn a
/// NaN into ±1 through `min(NaN, 15)`).
#[test]
fn activations_keep_nan_and_infinities_like_the_cpu() {
    let gpu = gpu_or_skip!();
    let cpu = CpuBackend::<f32>::new();
    let x = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.5,
        2.0,
        30.0,
        -30.0,
    ];
    let n = x.len();
    for act in Activation::ALL {
        let want = cpu
            .read(&api::activate(&cpu, act, &cpu.tensor_f32(&[n], &x).unwrap()).unwrap())
            .unwrap();
        let got = gpu
            .read(&api::activate(&gpu, act, &gpu.tensor_f32(&[n], &x).unwrap()).unwrap())
            .unwrap();
        let tol = Tolerance::new(1e-6, 1e-6);
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert!(
                tol.allows(*w as f64, *g as f64),
                "{act:?}({}): CPU {w}, GPU {g}",
                x[i]
            );
        }
    }
}
