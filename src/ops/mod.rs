//! Kernels, one module per family. Each module holds the CPU reference (plain
//! Rust, generic over f32/f64, written to be read first) beside the GPU launcher
//! that records its WGSL twin from `shaders/`.

pub mod activation;
pub mod cell;
pub mod dropout;
pub mod embed;
pub mod matmul;
pub mod memory;
pub mod optim;
pub mod reduce;
pub mod skip;
pub mod small_gemm;
pub mod softmax_xent;

use crate::error::{Error, Result};
use crate::gpu::kernel::KernelInfo;

/// Every kernel the crate dispatches, each with its storage bindings, the
/// override constants the host sets and its uniform block's description:
/// what `tests/shaders.rs` checks against the WGSL. Each module lists its own
/// beside its definitions (`KERNELS`); a new kernel goes there.
pub fn kernels() -> Vec<KernelInfo> {
    [
        matmul::KERNELS,
        activation::KERNELS,
        softmax_xent::KERNELS,
        reduce::KERNELS,
        memory::KERNELS,
        embed::KERNELS,
        dropout::KERNELS,
        optim::KERNELS,
        cell::KERNELS,
        skip::KERNELS,
    ]
    .concat()
}

/// Fails unless a buffer of `len` elements holds the `want` elements an
/// operation addresses (`want` computed with saturating arithmetic, so an
/// absurd size fails here instead of wrapping).
pub(crate) fn need_len(arg: impl Into<String>, want: usize, len: usize) -> Result<()> {
    if len < want {
        return Err(Error::invalid(
            arg,
            format!("needs {want} elements, has {len}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::gpu::kernel::Shader;

    /// Every op module's binding names (`binding_names!`), with the shaders
    /// that declare them.
    fn tables() -> Vec<(Shader, &'static [(&'static str, u32)])> {
        let mut t = vec![
            (Shader::Matmul, super::matmul::binding::NAMES),
            (Shader::Activation, super::activation::binding::NAMES),
            (Shader::SoftmaxXent, super::softmax_xent::binding::NAMES),
            (Shader::Reduce, super::reduce::binding::NAMES),
            (Shader::Memory, super::memory::binding::NAMES),
            (Shader::Embed, super::embed::binding::NAMES),
            (Shader::Dropout, super::dropout::binding::NAMES),
            (Shader::Optim, super::optim::binding::NAMES),
            (Shader::Skip, super::skip::binding::NAMES),
        ];
        for cell in [
            Shader::Lstm,
            Shader::Gru,
            Shader::Rnn,
            Shader::GruReset,
            Shader::LstmProj,
        ] {
            t.push((cell, super::cell::binding::NAMES));
        }
        t
    }

    #[test]
    fn binding_names_are_the_shaders_variables() {
        let mut problems = Vec::new();
        let mut covered = std::collections::BTreeSet::new();
        for (shader, names) in tables() {
            covered.insert(shader.file());
            let module = naga::front::wgsl::parse_str(&shader.source())
                .unwrap_or_else(|e| panic!("{}: {e}", shader.file()));
            for &(name, number) in names {
                let var = module.global_variables.iter().find(|(_, v)| {
                    v.binding
                        .as_ref()
                        .is_some_and(|b| b.group == 0 && b.binding == number)
                });
                let found = var.and_then(|(_, v)| v.name.clone());
                if found.as_deref() != Some(name.to_lowercase().as_str()) {
                    problems.push(format!(
                        "{}: binding::{name} = {number}, but the WGSL binding {number} is {found:?}",
                        shader.file()
                    ));
                }
            }
        }
        let all: std::collections::BTreeSet<&str> = Shader::ALL.iter().map(|s| s.file()).collect();
        assert_eq!(covered, all, "a shader has no binding names");
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
