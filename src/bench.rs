//! Benchmark shapes, shared by the criterion benches (`benches/`) and the
//! `bench` subcommand so their numbers line up shape by shape.

/// Matrix-multiply shapes `(M, N, K)`: square sizes, and the shapes of an
/// LSTM's input projection (`T·B × 4H × I`) and recurrent product (`B × 4H × H`).
pub const MATMUL_SHAPES: &[(usize, usize, usize)] = &[
    (256, 256, 256),
    (1024, 1024, 1024),
    (4096, 4096, 4096),
    (1600, 2048, 512),
    (64, 4096, 1024),
];

/// Softmax cross-entropy shapes `(R, V)`: a character model and a word model.
pub const XENT_SHAPES: &[(usize, usize)] = &[(3200, 128), (1024, 32000)];

/// A reduced table for software adapters and quick runs.
pub const MATMUL_SHAPES_SMALL: &[(usize, usize, usize)] = &[(64, 64, 64), (128, 128, 128)];

/// A reduced table for software adapters and quick runs.
pub const XENT_SHAPES_SMALL: &[(usize, usize)] = &[(256, 128)];
