//! GPU side: adapter choice, the context (device, queue, limits, pipeline and
//! bind group caches, the recorder that batches launches into submissions of
//! a bounded number of dispatches), and tensors.

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
    required_limits,
};
pub use kernel::StepKernel;
pub use tensor::{DType, GpuTensor, checked_numel, download_many, numel};
