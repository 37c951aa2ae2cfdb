//! The stacks whose ONNX exports are fixtures (tests/fixtures/onnx/exported_*.onnx,
//! written by `cargo run --release --example onnx_exports`, run by
//! onnxruntime in tests/fixtures/onnx/ort_exports.py), shared by the test
//! and the example.

use rnn_wgpu::nn::RnnConfig;
use rnn_wgpu::ops::cell::{Act, Activations, Cell, Nonlinearity, Variant};
use rnn_wgpu::parity::uniform;

/// Name, stack, and whether the initial states are graph inputs.
pub fn stacks() -> Vec<(&'static str, RnnConfig, bool)> {
    let lstm = Variant {
        peepholes: true,
        coupled: true,
        cell_clip: Some(0.6),
        activations: Activations {
            f: Act::Sigmoid,
            g: Act::Relu,
            h: Act::Tanh,
        },
        ..Default::default()
    };
    let gru = Variant {
        reset_before: true,
        cell_clip: Some(0.5),
        ..Default::default()
    };
    vec![
        (
            "exported_lstm_variants_2layer_bi",
            RnnConfig::new(Cell::Lstm, 3, 4)
                .variant(lstm)
                .layers(2)
                .bidirectional(true),
            true,
        ),
        (
            "exported_gru_reset_before_2layer",
            RnnConfig::new(Cell::Gru, 2, 5).variant(gru).layers(2),
            false,
        ),
        (
            "exported_gru_pytorch_bi",
            RnnConfig::new(Cell::Gru, 3, 4).bidirectional(true),
            true,
        ),
        (
            "exported_rnn_sigmoid_2layer",
            RnnConfig::new(Cell::Rnn(Nonlinearity::Sigmoid), 3, 4).layers(2),
            true,
        ),
    ]
}

/// Seeded parameters in PyTorch's range, exact in f32.
pub fn params(cfg: &RnnConfig, seed: u64) -> Vec<f64> {
    let k = 1.0 / (cfg.hidden_size as f64).sqrt();
    uniform(seed, cfg.layout().total, -k, k)
        .into_iter()
        .map(|v| v as f32 as f64)
        .collect()
}
