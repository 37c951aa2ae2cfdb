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
