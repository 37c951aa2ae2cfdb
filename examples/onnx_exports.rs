//! Writes the ONNX exports of the stacks in tests/common/onnx_exports.rs into
//! a directory (default tests/fixtures/onnx), for onnxruntime to run
//! (tests/fixtures/onnx/ort_exports.py): `cargo run --release --example
//! onnx_exports [DIR]`.

#[path = "../tests/common/onnx_exports.rs"]
mod exports;

fn main() -> rnn_wgpu::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/onnx".into());
    for (i, (name, cfg, states)) in exports::stacks().into_iter().enumerate() {
        let model =
            rnn_wgpu::onnx::export_stack(&cfg, &exports::params(&cfg, 700 + i as u64), states)?;
        let path = std::path::Path::new(&dir).join(format!("{name}.onnx"));
        rnn_wgpu::onnx::write_model(&path, &model)?;
        println!("{}", path.display());
    }
    Ok(())
}
