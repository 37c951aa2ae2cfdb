//! The Rust/WGSL interface of every kernel, checked through naga's reflection
//! (no GPU needed).
//!
//! Each kernel's Rust side is data: `ops::kernels()` lists, for every kernel
//! the crate dispatches, its entry point, its storage bindings in ascending
//! order (launchers pass their buffers by binding number, checked against
//! this list by `Recorder::dispatch`), the override constants the host sets
//! and the uniform block's fields (from `kernel_params!`). Here every shader
//! is parsed and validated with naga (the same front end wgpu compiles it
//! with), and for every kernel:
//! - the uniform at `@group(0) @binding(0)` is a struct with the Rust block's
//!   members (names, byte offsets, types) and size, within `PARAM_WINDOW`;
//! - the storage bindings the entry point uses (naga's per-entry-point global
//!   uses, which is also what wgpu validates a pipeline layout against) are
//!   exactly the Rust list, in ascending binding order, with the same access
//!   (`var<storage, read>` ↔ `Access::Read`, `read_write` ↔ `Access::ReadWrite`);
//! - every override constant the Rust side sets is declared.
//!
//! Every message names the kernel, the field or binding, and both sides' values.
//! `a_wrong_description_is_reported` proves the check fails when it should.

use std::collections::{BTreeMap, HashMap, HashSet};

use naga::common::wgsl::TypeContext;
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};
use rnn_wgpu::gpu::kernel::{
    Access, KernelInfo, PARAM_WINDOW, ParamField, ParamType, ParamsLayout, Scalar, Shader,
};
use rnn_wgpu::ops;

/// A shader parsed and validated once.
struct Reflected {
    module: naga::Module,
    info: ModuleInfo,
}

/// Parses and validates the full source of `shader` (common prefix included).
fn reflect(shader: Shader) -> Result<Reflected, String> {
    let source = shader.source();
    let module = naga::front::wgsl::parse_str(&source)
        .map_err(|e| format!("{}: {}", shader.file(), e.emit_to_string(&source)))?;
    // What the context's device offers: no optional features (it requests
    // none), WebGPU's downlevel flags (pack2x16float and friends).
    let caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("{}: {}", shader.file(), e.emit_to_string(&source)))?;
    Ok(Reflected { module, info })
}

/// Every shader, reflected (panics with naga's message if one does not compile).
fn reflect_all() -> HashMap<Shader, Reflected> {
    Shader::ALL
        .iter()
        .map(|&s| (s, reflect(s).unwrap_or_else(|e| panic!("{e}"))))
        .collect()
}

/// The description's type of a WGSL type, if it has one.
fn param_type(inner: &naga::TypeInner) -> Option<ParamType> {
    let scalar = |s: naga::Scalar| match (s.kind, s.width) {
        (naga::ScalarKind::Uint, 4) => Some(Scalar::U32),
        (naga::ScalarKind::Sint, 4) => Some(Scalar::I32),
        (naga::ScalarKind::Float, 4) => Some(Scalar::F32),
        _ => None,
    };
    match *inner {
        naga::TypeInner::Scalar(s) => scalar(s).map(ParamType::Scalar),
        naga::TypeInner::Vector { size, scalar: s } => scalar(s).map(|scalar| ParamType::Vector {
            scalar,
            len: size as u32,
        }),
        _ => None,
    }
}

fn access_of(space: naga::AddressSpace) -> Option<Access> {
    match space {
        naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE) => {
            Some(Access::ReadWrite)
        }
        naga::AddressSpace::Storage { .. } => Some(Access::Read),
        _ => None,
    }
}

fn wgsl_access(access: Access) -> &'static str {
    match access {
        Access::Read => "var<storage, read>",
        Access::ReadWrite => "var<storage, read_write>",
    }
}

/// Every disagreement between the Rust description `k` and the WGSL `r` its
/// entry point is compiled from; empty when they agree.
fn mismatches(k: &KernelInfo, r: &Reflected) -> Vec<String> {
    let file = k.spec.shader.file();
    let kernel = format!("{} ({file})", k.spec.entry);
    let mut out = Vec::new();
    let module = &r.module;

    let Some(ep) = module
        .entry_points
        .iter()
        .position(|e| e.name == k.spec.entry)
    else {
        let names: Vec<&str> = module
            .entry_points
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        out.push(format!(
            "{kernel}: no entry point {:?} in the WGSL (it has {names:?})",
            k.spec.entry
        ));
        return out;
    };
    if module.entry_points[ep].stage != naga::ShaderStage::Compute {
        out.push(format!(
            "{kernel}: the entry point is a {:?} shader, not @compute",
            module.entry_points[ep].stage
        ));
    }
    let uses = r.info.get_entry_point(ep);

    // Binding 0: the uniform block against the Rust description.
    check_params(&kernel, &k.params, r, &mut out);

    // Bindings 1..: what the entry point uses, against the Rust list.
    let mut used: BTreeMap<u32, (String, Access)> = BTreeMap::new();
    let mut declared: BTreeMap<u32, String> = BTreeMap::new();
    for (handle, var) in module.global_variables.iter() {
        let Some(rb) = &var.binding else { continue };
        let name = var.name.clone().unwrap_or_else(|| "?".into());
        let is_used = !uses[handle].is_empty();
        if rb.group != 0 {
            if is_used {
                out.push(format!(
                    "{kernel}: uses `{name}` at @group({}) @binding({}); every kernel binds group 0 only",
                    rb.group, rb.binding
                ));
            }
            continue;
        }
        if rb.binding == 0 {
            continue;
        }
        declared.insert(rb.binding, name.clone());
        if !is_used {
            continue;
        }
        match access_of(var.space) {
            Some(access) => {
                used.insert(rb.binding, (name, access));
            }
            None => out.push(format!(
                "{kernel}: binding {} (`{name}`) is {:?}, not a storage buffer; after binding 0 \
                 kernels bind storage buffers only",
                rb.binding, var.space
            )),
        }
    }
    let listed: Vec<u32> = k.spec.bindings.iter().map(|&(b, _)| b).collect();
    if listed.windows(2).any(|w| w[0] >= w[1]) {
        out.push(format!(
            "{kernel}: Rust bindings {listed:?} are not in ascending binding order (each \
             number once, in the WGSL's order)"
        ));
    }
    for &(binding, access) in k.spec.bindings {
        if binding == 0 {
            out.push(format!(
                "{kernel}: binding 0 is the uniform block, yet the Rust list has it as a \
                 storage binding ({access:?})"
            ));
            continue;
        }
        match used.get(&binding) {
            Some((name, wgsl)) if *wgsl != access => out.push(format!(
                "{kernel}: binding {binding} (`{name}`): Rust Access::{access:?}, WGSL {}",
                wgsl_access(*wgsl)
            )),
            Some(_) => {}
            None => out.push(match declared.get(&binding) {
                Some(name) => format!(
                    "{kernel}: binding {binding}: Rust lists it (Access::{access:?}), but the \
                     entry point does not use `{name}` declared there"
                ),
                None => format!(
                    "{kernel}: binding {binding}: Rust lists it (Access::{access:?}), but the \
                     WGSL declares nothing at @group(0) @binding({binding})"
                ),
            }),
        }
    }
    for (binding, (name, access)) in &used {
        if !listed.contains(binding) {
            out.push(format!(
                "{kernel}: binding {binding} (`{name}`, {}) is used by the entry point but \
                 missing from the Rust bindings {listed:?}",
                wgsl_access(*access)
            ));
        }
    }

    // Override constants the host sets.
    let overrides: Vec<&str> = module
        .overrides
        .iter()
        .filter_map(|(_, o)| o.name.as_deref())
        .collect();
    for c in k.constants {
        if !overrides.contains(c) {
            out.push(format!(
                "{kernel}: override constant {c} is set by Rust but not declared in the WGSL \
                 (it declares {overrides:?})"
            ));
        }
    }
    out
}

/// The uniform at `@group(0) @binding(0)` against the Rust block `p`.
fn check_params(kernel: &str, p: &ParamsLayout, r: &Reflected, out: &mut Vec<String>) {
    let module = &r.module;
    let types = module.to_ctx();
    let rust = p.name;
    if p.size as u64 > PARAM_WINDOW {
        out.push(format!(
            "{kernel}: Rust {rust} is {} bytes, over the {PARAM_WINDOW}-byte PARAM_WINDOW",
            p.size
        ));
    }
    let Some((_, var)) = module.global_variables.iter().find(|(_, v)| {
        v.binding
            .as_ref()
            .is_some_and(|b| b.group == 0 && b.binding == 0)
    }) else {
        out.push(format!(
            "{kernel}: no variable at @group(0) @binding(0) for Rust {rust}"
        ));
        return;
    };
    if var.space != naga::AddressSpace::Uniform {
        out.push(format!(
            "{kernel}: @group(0) @binding(0) is {:?}, not var<uniform>",
            var.space
        ));
    }
    let naga::TypeInner::Struct { members, span } = &module.types[var.ty].inner else {
        out.push(format!(
            "{kernel}: the uniform is a {}, not a struct like Rust {rust}",
            types.type_to_string(var.ty)
        ));
        return;
    };
    let wgsl = module.types[var.ty].name.as_deref().unwrap_or("?");
    if *span as usize != p.size {
        out.push(format!(
            "{kernel}: size: Rust {rust} is {} bytes, WGSL {wgsl} {span}",
            p.size
        ));
    }
    if members.len() != p.fields.len() {
        let names = |it: &mut dyn Iterator<Item = String>| it.collect::<Vec<_>>().join(", ");
        out.push(format!(
            "{kernel}: Rust {rust} has {} fields ({}), WGSL {wgsl} {} members ({})",
            p.fields.len(),
            names(&mut p.fields.iter().map(|f| f.name.to_string())),
            members.len(),
            names(&mut members.iter().map(|m| m.name.clone().unwrap_or_default())),
        ));
    }
    for (i, (f, m)) in p.fields.iter().zip(members).enumerate() {
        let name = m.name.as_deref().unwrap_or("?");
        let ty = param_type(&module.types[m.ty].inner);
        let wgsl_ty = types.type_to_string(m.ty);
        if f.name != name || f.offset != m.offset as usize || Some(f.ty) != ty {
            out.push(format!(
                "{kernel}: field {i}: Rust {rust} `{}`: {} at offset {}, WGSL {wgsl} `{name}`: \
                 {wgsl_ty} at offset {}",
                f.name, f.ty, f.offset, m.offset
            ));
        }
    }
}

#[test]
fn every_registered_kernel_matches_its_wgsl() {
    let shaders = reflect_all();
    let kernels = ops::kernels();
    let mut problems = Vec::new();
    for k in &kernels {
        problems.extend(mismatches(k, &shaders[&k.spec.shader]));
    }
    assert!(
        problems.is_empty(),
        "{} of {} kernels disagree with their WGSL:\n{}",
        problems.len(),
        kernels.len(),
        problems.join("\n")
    );
}

#[test]
fn every_compute_entry_point_is_registered_once() {
    let shaders = reflect_all();
    let kernels = ops::kernels();
    let mut seen = HashSet::new();
    for k in &kernels {
        assert!(
            seen.insert((k.spec.shader, k.spec.entry)),
            "{} ({}) is registered twice",
            k.spec.entry,
            k.spec.shader.file()
        );
    }
    let mut missing = Vec::new();
    for shader in Shader::ALL {
        for ep in &shaders[&shader].module.entry_points {
            if !seen.contains(&(shader, ep.name.as_str())) {
                missing.push(format!("{} ({})", ep.name, shader.file()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "entry points no KernelDef registers (add them to their module's KERNELS): {}",
        missing.join(", ")
    );
}

/// A description of `base` with `fields` instead of its own.
fn with_fields(base: KernelInfo, fields: Vec<ParamField>, size: usize) -> KernelInfo {
    KernelInfo {
        params: ParamsLayout {
            fields: Box::leak(fields.into_boxed_slice()),
            size,
            ..base.params
        },
        ..base
    }
}

fn with_bindings(base: KernelInfo, bindings: Vec<(u32, Access)>) -> KernelInfo {
    let mut k = base;
    k.spec.bindings = Box::leak(bindings.into_boxed_slice());
    k
}

/// The single mismatch report of `k`, which must contain every one of `parts`.
fn expect_one(k: &KernelInfo, r: &Reflected, parts: &[&str]) {
    let found = mismatches(k, r);
    assert_eq!(found.len(), 1, "expected one mismatch, got {found:#?}");
    for part in parts {
        assert!(
            found[0].contains(part),
            "{:?} does not mention {part:?}",
            found[0]
        );
    }
}

#[test]
fn a_wrong_description_is_reported() {
    let r = reflect(Shader::Matmul).unwrap();
    let base = ops::kernels()
        .into_iter()
        .find(|k| k.spec.entry == "matmul_naive")
        .unwrap();
    assert_eq!(mismatches(&base, &r), Vec::<String>::new());
    let fields = base.params.fields.to_vec();
    let size = base.params.size;

    // A field at the wrong offset, under another name, of another type.
    let mut f = fields.clone();
    f[3].offset += 4;
    expect_one(
        &with_fields(base, f, size),
        &r,
        &["matmul_naive", "field 3", "`lda`", "offset 16", "offset 12"],
    );
    let mut f = fields.clone();
    f[3].name = "ld_a";
    expect_one(&with_fields(base, f, size), &r, &["`ld_a`", "`lda`"]);
    let mut f = fields.clone();
    f[2].ty = ParamType::Scalar(Scalar::F32);
    expect_one(
        &with_fields(base, f, size),
        &r,
        &["field 2", "`k`: f32", "`k`: u32"],
    );

    // A field missing on the Rust side: count and size both differ.
    let mut f = fields.clone();
    f.pop();
    let found = mismatches(&with_fields(base, f, size - 4), &r);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found
            .iter()
            .any(|m| m.contains("76 bytes") && m.contains("80"))
    );
    assert!(
        found
            .iter()
            .any(|m| m.contains("19 fields") && m.contains("20 members"))
    );

    // A block too large for the window.
    let big = KernelInfo {
        params: ParamsLayout {
            size: 512,
            ..base.params
        },
        ..base
    };
    assert!(
        mismatches(&big, &r)
            .iter()
            .any(|m| m.contains("PARAM_WINDOW"))
    );

    // Bindings: wrong access, one used but not listed, one listed but unused,
    // out of order.
    use Access::{Read as R, ReadWrite as W};
    expect_one(
        &with_bindings(base, vec![(1, R), (2, R), (3, W), (4, W)]),
        &r,
        &[
            "binding 3",
            "`bias`",
            "Rust Access::ReadWrite",
            "var<storage, read>",
        ],
    );
    expect_one(
        &with_bindings(base, vec![(1, R), (2, R), (3, R)]),
        &r,
        &[
            "binding 4",
            "`c`",
            "read_write",
            "missing from the Rust bindings",
        ],
    );
    expect_one(
        &with_bindings(base, vec![(1, R), (2, R), (3, R), (4, W), (5, R)]),
        &r,
        &["binding 5", "declares nothing"],
    );
    expect_one(
        &with_bindings(base, vec![(2, R), (1, R), (3, R), (4, W)]),
        &r,
        &["[2, 1, 3, 4]", "ascending"],
    );

    // An override constant the shader does not declare.
    let k = KernelInfo {
        constants: &["TRANS_A", "TRANS_C"],
        ..base
    };
    expect_one(&k, &r, &["TRANS_C", "TRANS_A"]);

    // An entry point that does not exist.
    let mut k = base;
    k.spec.entry = "matmul_huge";
    expect_one(&k, &r, &["matmul_huge", "matmul_naive"]);
}

#[test]
fn a_binding_the_entry_point_does_not_use_is_reported() {
    // embed_forward does not touch dtable (binding 5, declared in the file).
    let r = reflect(Shader::Embed).unwrap();
    let base = ops::kernels()
        .into_iter()
        .find(|k| k.spec.entry == "embed_forward")
        .unwrap();
    let mut bindings = base.spec.bindings.to_vec();
    bindings.push((5, Access::ReadWrite));
    expect_one(
        &with_bindings(base, bindings),
        &r,
        &["embed_forward", "binding 5", "does not use `dtable`"],
    );
}
