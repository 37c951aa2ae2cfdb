//! GPU side: adapter choice, the context (device, queue, limits, pipeline and
//! bind group caches, the recorder that batches launches into submissions of
//! a bounded number of dispatches), and tensors.
//!
//! ```
//! use std::sync::Arc;
//! use rnn_wgpu::backend::{Backend, GpuBackend};
//! use rnn_wgpu::gpu::{list_adapters, ContextOptions, GpuContext};
//!
//! # fn main() -> rnn_wgpu::Result<()> {
//! for adapter in list_adapters(wgpu::Backends::all()) {
//!     println!("{adapter}"); // name, API, device type, driver
//! }
//! // The best adapter, or the one RNN_WGPU_BACKEND / RNN_WGPU_ADAPTER name.
//! let ctx = match GpuContext::new(ContextOptions::from_env()?) {
//!     Ok(ctx) => Arc::new(ctx),
//!     Err(e) => {
//!         eprintln!("no GPU adapter: {e}");
//!         return Ok(());
//!     }
//! };
//! let gpu = GpuBackend::new(ctx.clone())?;
//! let x = gpu.tensor_f32(&[3], &[1.0, 2.0, 3.0])?;
//! gpu.fill(&x, 1, 2, 0.5)?; // recorded, not yet submitted
//! assert_eq!(gpu.read(&x)?, [1.0, 0.5, 0.5]); // one submission, one readback
//! assert_eq!(ctx.counters().readbacks, 1);
//! # Ok(())
//! # }
//! ```

pub mod adapter;
pub mod context;
pub mod kernel;
pub mod tensor;

pub use adapter::{
    AdapterSummary, ContextOptions, DEFAULT_MAX_DISPATCHES_PER_SUBMIT, LimitBase, install_hint,
    list_adapters,
};
pub use context::{
    Counters, GpuContext, KERNEL_STORAGE_BUFFERS_PER_STAGE, REQUIRED_DOWNLEVEL_FLAGS, Recorder,
    STAGING_KEPT, STAGING_KEPT_BYTES, required_limits,
};
pub use kernel::StepKernel;
pub use tensor::{DType, GpuTensor, checked_numel, download_many, numel, pair_word};
