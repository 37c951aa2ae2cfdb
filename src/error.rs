//! One error type for the whole crate.
//!
//! Every public function returns [`Result`]. Variants are structured so that a
//! caller (or the CLI) can say exactly what went wrong: which argument, which
//! shape was expected, which adapter limit was hit, which file was bad.

use std::path::PathBuf;

/// The crate's result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in rnn-wgpu.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor argument has the wrong shape.
    #[error("{arg}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Name of the argument (as the user knows it).
        arg: String,
        /// The expected shape, written with dimension letters, e.g. `[T, B, I] = [5, 2, 3]`.
        expected: String,
        /// The shape that was passed.
        got: Vec<usize>,
    },

    /// An argument has a value outside what the operation accepts.
    #[error("{arg}: {reason}")]
    InvalidArgument {
        /// Name of the argument.
        arg: String,
        /// What was wrong and what was expected.
        reason: String,
    },

    /// No GPU adapter could be found at all.
    #[error("no GPU adapter found. {hint}")]
    NoAdapter {
        /// What to install or set to get one.
        hint: String,
    },

    /// Adapters exist, but none matches the requested backend or name.
    #[error("no GPU adapter matches {wanted}; available adapters: {available}")]
    AdapterNotFound {
        /// What was asked for.
        wanted: String,
        /// The adapters that do exist.
        available: String,
    },

    /// The adapter refused to create a device.
    #[error("could not open a device on adapter {adapter}: {message}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// The driver's message.
        message: String,
    },

    /// A WGSL shader failed to compile or a pipeline could not be created.
    #[error("shader {shader}, entry point {entry}: pipeline creation failed: {message}")]
    ShaderCompile {
        /// Shader file.
        shader: String,
        /// Entry point.
        entry: String,
        /// The compiler's message.
        message: String,
    },

    /// wgpu reported a validation or internal error while recording or submitting work.
    #[error("GPU error during {op}: {message}")]
    Gpu {
        /// What we were doing.
        op: String,
        /// wgpu's message.
        message: String,
    },

    /// The device ran out of memory.
    #[error("GPU out of memory during {op}")]
    OutOfMemory {
        /// What we were doing.
        op: String,
    },

    /// The device was lost (driver reset, `destroy`, unplugged GPU). Every later call fails with this.
    #[error("the GPU device was lost ({reason}); create a new context to continue")]
    DeviceLost {
        /// The reason wgpu gave.
        reason: String,
    },

    /// Waiting for the GPU took longer than the context's timeout.
    #[error("timed out after {seconds} s waiting for the GPU during {op}")]
    Timeout {
        /// What we were waiting for.
        op: String,
        /// The timeout.
        seconds: u64,
    },

    /// A size exceeds one of the adapter's limits.
    #[error("{what} needs {value}, above the adapter limit {limit} = {max}")]
    Limit {
        /// What needed it.
        what: String,
        /// Name of the wgpu limit.
        limit: &'static str,
        /// What was needed.
        value: u64,
        /// What the adapter allows.
        max: u64,
    },

    /// A host buffer was passed as both input and output of one CPU operation.
    #[error("{op}: {arg} is the same buffer as the output and is already borrowed")]
    Aliasing {
        /// The operation.
        op: String,
        /// The argument.
        arg: String,
    },

    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file exists but its contents are not what was expected.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A value that must be finite (a loss, a gradient norm) is NaN or infinite.
    #[error("non-finite {what}: {value}")]
    NonFinite {
        /// What was not finite.
        what: String,
        /// Its value.
        value: f64,
    },

    /// Data-parallel training failed between ranks (a rank left, the ranks
    /// disagree, or the transport reported an error).
    #[error("data-parallel rank {rank}: {message}")]
    Distributed {
        /// The rank that saw the failure.
        rank: usize,
        /// What happened.
        message: String,
    },
}

impl Error {
    /// Builds an [`Error::InvalidArgument`].
    pub fn invalid(arg: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            arg: arg.into(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Shape`].
    pub fn shape(arg: impl Into<String>, expected: impl Into<String>, got: &[usize]) -> Self {
        Error::Shape {
            arg: arg.into(),
            expected: expected.into(),
            got: got.to_vec(),
        }
    }

    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}
