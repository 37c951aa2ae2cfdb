//! # rnn-wgpu
//!
//! Recurrent neural networks (vanilla RNN, LSTM, GRU) trained and run on any GPU
//! through wgpu (Vulkan, Metal, DX12, GL), with a CPU reference path that
//! computes the same thing in plain Rust so that every GPU result can be checked.
//!
//! ## Dimension letters
//! Used throughout the code, the docs and the error messages:
//!
//! | letter | meaning |
//! |---|---|
//! | `T` | time steps (sequence length) |
//! | `B` | batch |
//! | `I` | input features |
//! | `H` | hidden size |
//! | `G` | gates per cell: 4 for LSTM, 3 for GRU, 1 for RNN |
//! | `L` | layers |
//! | `D` | directions: 2 when bidirectional, else 1 |
//! | `V` | vocabulary / classes |
//! | `R` | rows of a softmax (usually `T·B`) |
//! | `M, N, K` | matrix multiply: `C[M,N] = A[M,K]·B[K,N]` |
//!
//! Gradients carry a `d` prefix (`dlogits`, `dh`).
//!
//! ## Layers of the crate
//! - [`gpu`]: the context (adapter, device, limits, caches, the recorder that
//!   turns many launches into one submission) and [`gpu::GpuTensor`].
//! - [`ops`]: one module per kernel family; each holds the CPU reference and the
//!   GPU launcher of the same function.
//! - [`backend`]: the [`backend::Backend`] trait implemented by
//!   [`backend::CpuBackend`] and [`backend::GpuBackend`], so that everything
//!   above the kernels is written once and runs on both.
//! - [`nn`]: layers written once against the backend: recurrent stacks
//!   ([`nn::Rnn`], PyTorch's `nn.RNN`/`nn.LSTM`/`nn.GRU`), the sequence model,
//!   dense layers.
//! - [`train`]: tasks, full and truncated BPTT, optimizers, checkpoints,
//!   sampling, and with the `cli` feature the `train` job (`train::run`) and
//!   its loss plot (`train::plot`).
//! - [`eval`]: the `eval` file contract (PyTorch state_dicts in safetensors).
//! - [`parity`] and [`gradcheck`]: the CPU-vs-GPU comparison harness and
//!   finite-difference checks; [`doctor`]: the self-check of an adapter.
//! - [`bench`](mod@bench): benchmark shapes and timing.
//!
//! ## Features
//! - `cli` (default): the `rnn-wgpu` binary and `train::run` / `train::plot`,
//!   with clap, indicatif and plotters. `default-features = false` leaves the
//!   library without them.

pub mod backend;
pub mod bench;
pub mod doctor;
pub mod error;
pub mod eval;
pub mod gpu;
pub mod gradcheck;
pub mod io;
pub mod nn;
pub mod ops;
pub mod parity;
pub mod real;
pub mod train;

pub use error::{Error, Result};
pub use real::Real;
