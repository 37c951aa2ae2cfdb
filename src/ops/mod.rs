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
