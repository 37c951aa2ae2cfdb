//! # rnn-wgpu
//!
//! Recurrent neural networks (vanilla RNN, LSTM, GRU) trained and run on any GPU
//! through wgpu (Vulkan, Metal, DX12, GL), with a CPU reference path that
//! computes the same thing in plain Rust so that every GPU result can be checked.
//!
//! ```
//! use rnn_wgpu::backend::{Backend, CpuBackend};
//! use rnn_wgpu::nn::{Rnn, RnnConfig};
//! use rnn_wgpu::ops::cell::Cell;
//!
//! # fn main() -> rnn_wgpu::Result<()> {
//! // The CPU path; `rnn_wgpu::backend::GpuBackend::from_env()?` runs the same on a GPU.
//! let b = CpuBackend::<f32>::new();
//! let mut lstm = Rnn::new(b.clone(), RnnConfig::new(Cell::Lstm, 3, 8), 1)?;
//! let x = b.tensor_f32(&[5, 2, 3], &[0.5; 30])?; // [T, B, I]
//! let (out, saved) = lstm.forward_train(&x, None, None, None, None)?;
//! let grads = lstm.zeros_like_params()?;
//! let dx = lstm.backward(&saved, Some(&out.output), None, None, &grads)?;
//! assert_eq!(b.shape(&out.output), &[5, 2, 8]); // [T, B, H]
//! assert_eq!(b.shape(dx.input.as_ref().unwrap()), &[5, 2, 3]);
//! # Ok(())
//! # }
//! ```
//!
//! ## Values, not aliases
//! Every tensor a layer returns (outputs, final states, input gradients) is a
//! value: nothing the layer does later writes into it. Layers draw their
//! buffers from a pool and reuse one only when no handle outside the pool
//! refers to it ([`backend::Backend::is_unique`]), so a training loop reaches
//! an allocation-free steady state after its first steps while a caller's
//! tensors stay as they were. A training forward
//! ([`nn::Rnn::forward_train`], [`nn::model::SeqModel::forward_train`]) hands
//! out its saved activations, and the backward takes them: it differentiates
//! that forward, whatever ran in between. An inference forward keeps nothing
//! for a backward. [`nn::Rnn::step`] and [`nn::model::SeqModel::step`] stream
//! one time step at a time with the [`nn::State`] on the device.
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

#![deny(missing_docs)]

pub mod backend;
pub mod bench;
pub mod doctor;
pub mod error;
pub mod eval;
pub mod gpu;
pub mod gradcheck;
pub mod io;
pub mod nn;
pub mod onnx;
pub mod ops;
pub mod parity;
pub mod precision;
pub mod real;
pub mod train;

pub use error::{Error, Result};
pub use precision::Precision;
pub use real::Real;

// The README's Rust examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
