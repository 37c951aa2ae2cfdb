//! PyTorch fixtures: `eval` semantics on the CPU and GPU paths against values
//! PyTorch computed in f64 (tests/fixtures/pytorch, made by make_fixtures.py).
//! Tolerance: relative Frobenius error ≤ 1e-4 for values, ≤ 1e-3 for gradients.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rnn_wgpu::backend::{Backend, BackendChoice, CpuBackend};
use rnn_wgpu::eval::{EvalOptions, load, output_tensors};
use rnn_wgpu::io::{TensorMap, read_safetensors};
use rnn_wgpu::nn::case::run_case;
use rnn_wgpu::ops::cell::Nonlinearity;
use rnn_wgpu::parity::rel_frobenius;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch")
}

struct Fixture {
    name: String,
    nonlinearity: Option<Nonlinearity>,
}

fn fixtures() -> Vec<Fixture> {
    let text = std::fs::read_to_string(dir().join("cases.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 9, "expected the full fixture set");
    cases
        .iter()
        .map(|c| Fixture {
            name: c["name"].as_str().unwrap().to_string(),
            nonlinearity: match c["nonlinearity"].as_str() {
                Some("relu") => Some(Nonlinearity::Relu),
                Some("tanh") => Some(Nonlinearity::Tanh),
                _ => None,
            },
        })
        .collect()
}

fn options(f: &Fixture, out: PathBuf) -> EvalOptions {
    EvalOptions {
        weights: dir().join(format!("{}.weights.safetensors", f.name)),
        inputs: dir().join(format!("{}.inputs.safetensors", f.name)),
        out,
        backend: BackendChoice::Cpu,
        backward: true,
        nonlinearity: f.nonlinearity,
    }
}

/// Every expected tensor is produced, nothing else, each within tolerance.
fn compare_to_expected(label: &str, f: &Fixture, got: &TensorMap) {
    let expected =
        read_safetensors(&dir().join(format!("{}.expected.safetensors", f.name))).unwrap();
    let names = |m: &TensorMap| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(got),
        names(&expected),
        "{label} {}: tensor names",
        f.name
    );
    for (name, e) in &expected {
        let g = &got[name];
        assert_eq!(g.shape, e.shape, "{label} {}: shape of {name}", f.name);
        let err = rel_frobenius(&e.floats(name).unwrap(), &g.floats(name).unwrap());
        let tol = if name.starts_with("grad") { 1e-3 } else { 1e-4 };
        assert!(
            err <= tol,
            "{label} {}: {name}: relative Frobenius error {err:.3e} > {tol:e}",
            f.name
        );
    }
}

fn eval_on<B: Backend>(b: &B, label: &str) {
    for f in fixtures() {
        let (config, data) = load(&options(&f, PathBuf::new())).unwrap();
        let r = run_case(b, &config, &data, true).unwrap();
        compare_to_expected(label, &f, &output_tensors(&config, &data, &r, true));
    }
}

#[test]
fn cpu_f32_matches_pytorch() {
    eval_on(&CpuBackend::<f32>::new(), "cpu");
}

#[test]
fn cpu_f64_matches_pytorch() {
    eval_on(&CpuBackend::<f64>::new(), "cpu64");
}

#[test]
fn gpu_matches_pytorch() {
    let gpu = gpu_or_skip!();
    eval_on(&gpu, "gpu");
}

fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rnn-wgpu"))
        .args(args)
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()),
        )
        .output()
        .unwrap()
}

/// The command line end to end, on both backends, for an LSTM and a ReLU RNN.
#[test]
fn eval_command_writes_the_contract() {
    let have_gpu = common::gpu_ctx().is_some();
    let tmp = std::env::temp_dir().join(format!("rnn-wgpu-eval-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let all = fixtures();
    let picks = ["lstm_2layer_bi_states_lengths", "rnn_relu_1layer_lengths"];
    for f in all.iter().filter(|f| picks.contains(&f.name.as_str())) {
        for backend in ["cpu", "gpu"] {
            if backend == "gpu" && !have_gpu {
                continue;
            }
            let out = tmp.join(format!("{}.{backend}.safetensors", f.name));
            let o = options(f, out.clone());
            let mut args = vec![
                "eval".to_string(),
                "--weights".into(),
                o.weights.display().to_string(),
                "--inputs".into(),
                o.inputs.display().to_string(),
                "--out".into(),
                out.display().to_string(),
                "--backend".into(),
                backend.into(),
                "--backward".into(),
            ];
            if f.nonlinearity == Some(Nonlinearity::Relu) {
                args.extend(["--nonlinearity".into(), "relu".into()]);
            }
            let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let res = run_cli(&args);
            assert!(
                res.status.success(),
                "eval failed: {}",
                String::from_utf8_lossy(&res.stderr)
            );
            compare_to_expected(
                &format!("cli {backend}"),
                f,
                &read_safetensors(&out).unwrap(),
            );
        }
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}
