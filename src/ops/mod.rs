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
