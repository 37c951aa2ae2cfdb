//! ONNX models (`eval --onnx`): every fixture of tests/fixtures/onnx (made by
//! make_onnx_fixtures.py, onnxruntime the reference: single recurrent nodes
//! with random weights and every attribute, and the graphs torch.onnx.export
//! writes) on the CPU (f32, f64) and GPU paths, and the command line.
//! Tolerance: relative Frobenius error ≤ 1e-4 (onnxruntime computes in f32).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rnn_wgpu::backend::{Backend, CpuBackend};
use rnn_wgpu::io::{TensorMap, read_safetensors};
use rnn_wgpu::onnx::{read_model, run_model};
use rnn_wgpu::parity::rel_frobenius;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

struct Case {
    name: String,
    /// The fixture a run must refuse (per-direction activations).
    refused: bool,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(dir().join("onnx.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 20, "expected the full ONNX fixture set");
    cases
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            refused: c["notes"].as_str() == Some("directions differ"),
        })
        .collect()
}

fn file(c: &Case, what: &str) -> PathBuf {
    dir().join(format!("{}.{what}", c.name))
}

fn compare(label: &str, c: &Case, got: &TensorMap) {
    let expected = read_safetensors(&file(c, "expected.safetensors")).unwrap();
    let names = |m: &TensorMap| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(got), names(&expected), "{label} {}: outputs", c.name);
    for (name, e) in &expected {
        let g = &got[name];
        assert_eq!(g.shape, e.shape, "{label} {}: shape of {name}", c.name);
        let err = rel_frobenius(&e.floats(name).unwrap(), &g.floats(name).unwrap());
        assert!(
            err <= 1e-4,
            "{label} {}: {name}: relative Frobenius error {err:.3e}",
            c.name
        );
    }
}

fn run_on<B: Backend>(b: &B, label: &str) {
    for c in cases() {
        let model = read_model(&file(&c, "onnx")).unwrap();
        let inputs = read_safetensors(&file(&c, "inputs.safetensors")).unwrap();
        let got = run_model(b, &model, &inputs);
        if c.refused {
            let err = got.unwrap_err().to_string();
            assert!(
                err.contains("activations per direction"),
                "{}: {err}",
                c.name
            );
            continue;
        }
        compare(
            label,
            &c,
            &got.unwrap_or_else(|e| panic!("{label} {}: {e}", c.name)),
        );
    }
}

#[test]
fn cpu_f32_matches_onnxruntime() {
    run_on(&CpuBackend::<f32>::new(), "cpu");
}

#[test]
fn cpu_f64_matches_onnxruntime() {
    run_on(&CpuBackend::<f64>::new(), "cpu64");
}

#[test]
fn gpu_matches_onnxruntime() {
    let gpu = gpu_or_skip!();
    run_on(&gpu, "gpu");
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rnn-wgpu"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap()
}

/// `eval --onnx` end to end: a single node and an exported PyTorch stack on
/// the CPU (and the GPU when there is one); bad models end in one line.
#[test]
fn eval_onnx_writes_every_graph_output() {
    let have_gpu = common::gpu_ctx().is_some();
    let tmp = std::env::temp_dir().join(format!("rnn-wgpu-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let picks = [
        "lstm_bidirectional_peepholes_seqlens",
        "torch_lstm_2layer_bidirectional",
    ];
    for c in cases()
        .into_iter()
        .filter(|c| picks.contains(&c.name.as_str()))
    {
        for backend in ["cpu", "gpu"] {
            if backend == "gpu" && !have_gpu {
                continue;
            }
            let out = tmp.join(format!("{}.{backend}.safetensors", c.name));
            let (m, i, o) = (
                file(&c, "onnx"),
                file(&c, "inputs.safetensors"),
                out.clone(),
            );
            let res = cli(&[
                "eval",
                "--onnx",
                m.to_str().unwrap(),
                "--inputs",
                i.to_str().unwrap(),
                "--out",
                o.to_str().unwrap(),
                "--backend",
                backend,
            ]);
            assert!(
                res.status.success(),
                "{}",
                String::from_utf8_lossy(&res.stderr)
            );
            compare(
                &format!("cli {backend}"),
                &c,
                &read_safetensors(&out).unwrap(),
            );
        }
    }
    // Not protobuf.
    let junk = tmp.join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let some = cases().into_iter().next().unwrap();
    let inputs = file(&some, "inputs.safetensors");
    let out = tmp.join("o.safetensors");
    let res = cli(&[
        "eval",
        "--onnx",
        junk.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--backend",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        !res.status.success() && err.contains("not an ONNX model"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // --onnx with a flag that only a state_dict needs.
    let model = file(&some, "onnx");
    let res = cli(&[
        "eval",
        "--onnx",
        model.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--coupled",
    ]);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success() && err.contains("--coupled"), "{err}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
