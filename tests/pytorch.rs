//! PyTorch fixtures: `eval` semantics on the CPU and GPU paths against values
//! PyTorch computed in f64 (tests/fixtures/pytorch, made by make_fixtures.py):
//! its own modules (cases.json), and the cell variants and skip connections
//! through the script's autograd reference, itself checked against
//! PyTorch's modules where PyTorch has the cell (variants.json).
//! Tolerance: relative Frobenius error ≤ 1e-4 for values, ≤ 1e-3 for gradients.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rnn_wgpu::Precision;
use rnn_wgpu::backend::{Backend, BackendChoice, CpuBackend};
use rnn_wgpu::eval::{EvalOptions, load, output_tensors};
use rnn_wgpu::io::{TensorMap, read_safetensors};
use rnn_wgpu::nn::StepOrder;
use rnn_wgpu::nn::case::{run_case, run_case_at};
use rnn_wgpu::ops::cell::{Act, Nonlinearity, Variant};
use rnn_wgpu::parity::rel_frobenius;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pytorch")
}

struct Fixture {
    name: String,
    nonlinearity: Option<Nonlinearity>,
    /// The cell's options (variant fixtures): what `eval` cannot read off
    /// the weights' names.
    variant: Variant,
    activations: Option<Vec<Act>>,
    residual: bool,
}

fn nonlinearity(name: Option<&str>) -> Option<Nonlinearity> {
    match name {
        Some("relu") => Some(Nonlinearity::Relu),
        Some("tanh") => Some(Nonlinearity::Tanh),
        Some("sigmoid") => Some(Nonlinearity::Sigmoid),
        _ => None,
    }
}

fn manifest(file: &str, at_least: usize) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir().join(file)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap().clone();
    assert!(
        cases.len() >= at_least,
        "expected the full fixture set of {file}"
    );
    cases
}

/// PyTorch's own modules (cases.json, and the LSTMs with projections of
/// projections.json).
fn fixtures() -> Vec<Fixture> {
    manifest("cases.json", 9)
        .iter()
        .chain(&manifest("projections.json", 4))
        .map(|c| Fixture {
            name: c["name"].as_str().unwrap().to_string(),
            nonlinearity: nonlinearity(c["nonlinearity"].as_str()),
            variant: Variant::default(),
            activations: None,
            residual: false,
        })
        .collect()
}

/// The variants, computed by the fixture script's own autograd reference
/// (variants.json).
fn variant_fixtures() -> Vec<Fixture> {
    manifest("variants.json", 11)
        .iter()
        .map(|c| {
            let v = &c["variant"];
            let acts: Vec<&str> = v["activations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let module = c["module"].as_str().unwrap();
            // An RNN's one activation is its nonlinearity; the GRU takes two.
            let (nonlinearity, activations) = match module {
                "RNN" => (nonlinearity(acts.first().copied()), None),
                "GRU" => (None, Some(&acts[..2])),
                _ => (None, Some(&acts[..])),
            };
            Fixture {
                name: c["name"].as_str().unwrap().to_string(),
                nonlinearity,
                variant: Variant {
                    coupled: v["coupled"].as_bool().unwrap(),
                    cell_clip: v["cell_clip"].as_f64().map(|c| c as f32),
                    reset_before: v["reset_before"].as_bool().unwrap(),
                    ..Variant::default()
                },
                activations: activations
                    .map(|a| a.iter().map(|n| Act::parse(n).unwrap()).collect()),
                residual: v["skip"].as_str() == Some("residual"),
            }
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
        variant: f.variant,
        activations: f.activations.clone(),
        residual: f.residual,
        precision: Precision::F32,
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
    for f in fixtures().into_iter().chain(variant_fixtures()) {
        let (config, data) = load(&options(&f, PathBuf::new())).unwrap();
        let r = run_case(b, &config, &data, true).unwrap();
        compare_to_expected(label, &f, &output_tensors(&config, &data, &r, true));
    }
}

/// The worst relative Frobenius error of the values and of the gradients
/// over every fixture, computed at `precision` on `b`.
fn worst_errors<B: Backend>(b: &B, precision: Precision) -> (f64, String, f64, String) {
    let (mut worst_v, mut at_v, mut worst_g, mut at_g) = (0.0, String::new(), 0.0, String::new());
    for f in fixtures().into_iter().chain(variant_fixtures()) {
        let (config, data) = load(&options(&f, PathBuf::new())).unwrap();
        let r = run_case_at(b, &config, &data, true, StepOrder::Auto, precision).unwrap();
        let got = output_tensors(&config, &data, &r, true);
        let expected =
            read_safetensors(&dir().join(format!("{}.expected.safetensors", f.name))).unwrap();
        for (name, e) in &expected {
            let err = rel_frobenius(&e.floats(name).unwrap(), &got[name].floats(name).unwrap());
            let (worst, at) = if name.starts_with("grad") {
                (&mut worst_g, &mut at_g)
            } else {
                (&mut worst_v, &mut at_v)
            };
            if err > *worst {
                *worst = err;
                *at = format!("{} {name}", f.name);
            }
        }
    }
    (worst_v, at_v, worst_g, at_g)
}

/// 16-bit storage with f32 arithmetic against PyTorch's f64 values: f16
/// within 2e-3 (values) and 1e-2 (gradients), bf16 (three fewer
/// significant bits) within 1.5e-2 and 5e-2 (measured 2026-12-03: f16
/// 8.6e-4 and 2.4e-3 at worst, bf16 5.6e-3 and 1.4e-2).
#[test]
fn cpu_16bit_storage_matches_pytorch_within_its_tolerance() {
    let b = CpuBackend::<f32>::new();
    for (p, tol_v, tol_g) in [
        (Precision::F16, 2e-3, 1e-2),
        (Precision::Bf16, 1.5e-2, 5e-2),
    ] {
        let (v, at_v, g, at_g) = worst_errors(&b, p);
        eprintln!("{p}: worst value error {v:.3e} ({at_v}), worst gradient error {g:.3e} ({at_g})");
        assert!(
            v <= tol_v,
            "{p}: {at_v}: relative Frobenius error {v:.3e} > {tol_v:e}"
        );
        assert!(
            g <= tol_g,
            "{p}: {at_g}: relative Frobenius error {g:.3e} > {tol_g:e}"
        );
        // The rounding is real: 16-bit storage is measurably less exact
        // than f32's ~1e-6.
        assert!(
            v > 1e-5,
            "{p}: values agree to {v:.3e}, as if nothing were rounded"
        );
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
fn gpu_16bit_storage_matches_pytorch_within_its_tolerance() {
    let gpu = gpu_or_skip!();
    for (p, tol_v, tol_g) in [
        (Precision::F16, 2e-3, 1e-2),
        (Precision::Bf16, 1.5e-2, 5e-2),
    ] {
        let (v, at_v, g, at_g) = worst_errors(&gpu, p);
        common::say(&format!(
            "gpu {p}: worst value error {v:.3e} ({at_v}), worst gradient error {g:.3e} ({at_g})"
        ));
        assert!(
            v <= tol_v,
            "gpu {p}: {at_v}: relative Frobenius error {v:.3e} > {tol_v:e}"
        );
        assert!(
            g <= tol_g,
            "gpu {p}: {at_g}: relative Frobenius error {g:.3e} > {tol_g:e}"
        );
    }
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

/// The command line end to end, on both backends, for an LSTM, a ReLU RNN
/// and three variant stacks (every option flag of `eval`).
#[test]
fn eval_command_writes_the_contract() {
    let have_gpu = common::gpu_ctx().is_some();
    let tmp = std::env::temp_dir().join(format!("rnn-wgpu-eval-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let all: Vec<Fixture> = fixtures().into_iter().chain(variant_fixtures()).collect();
    let picks = [
        "lstm_2layer_bi_states_lengths",
        "rnn_relu_1layer_lengths",
        "lstm_peep_coupled_clip_acts",
        "lstm_proj_2layer_bi_states_lengths",
        "lstm_residual_3layer",
        "rnn_sigmoid_2layer_lengths",
    ];
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
            match f.nonlinearity {
                Some(Nonlinearity::Relu) => args.extend(["--nonlinearity".into(), "relu".into()]),
                Some(Nonlinearity::Sigmoid) => {
                    args.extend(["--nonlinearity".into(), "sigmoid".into()])
                }
                _ => {}
            }
            if f.variant.coupled {
                args.push("--coupled".into());
            }
            if let Some(c) = f.variant.cell_clip {
                args.extend(["--cell-clip".into(), c.to_string()]);
            }
            if let Some(a) = &f.activations {
                let names: Vec<&str> = a.iter().map(|a| a.name()).collect();
                args.extend(["--activations".into(), names.join(",")]);
            }
            if f.variant.reset_before {
                args.push("--reset-before".into());
            }
            if f.residual {
                args.push("--residual".into());
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

/// `eval --precision f16` end to end on both backends: the outputs within
/// f16's tolerance (and not f32's bits), the summary naming the storage
/// (`eval --onnx --precision`: tests/onnx.rs).
#[test]
fn eval_command_at_16_bits() {
    let s = common::Scratch::new("eval-f16");
    let f = fixtures()
        .into_iter()
        .find(|f| f.name == "lstm_2layer_bi_states_lengths")
        .unwrap();
    let out = s.path("f16.safetensors");
    let o = options(&f, out.clone());
    let (w, i, o_) = (
        o.weights.display().to_string(),
        o.inputs.display().to_string(),
        out.display().to_string(),
    );
    let base = [
        "eval",
        "--weights",
        &w,
        "--inputs",
        &i,
        "--out",
        &o_,
        "--backward",
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        run_cli(&a)
    };
    let res = with(&["--backend", "cpu", "--precision", "f16"]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(
        String::from_utf8_lossy(&res.stdout).contains("f16 storage"),
        "{}",
        String::from_utf8_lossy(&res.stdout)
    );
    let got = read_safetensors(&out).unwrap();
    let expected =
        read_safetensors(&dir().join(format!("{}.expected.safetensors", f.name))).unwrap();
    let mut worst: f64 = 0.0;
    for (name, e) in &expected {
        let err = rel_frobenius(&e.floats(name).unwrap(), &got[name].floats(name).unwrap());
        let tol = if name.starts_with("grad") { 1e-2 } else { 2e-3 };
        assert!(err <= tol, "{name}: {err:.3e} > {tol:e}");
        worst = worst.max(err);
    }
    assert!(worst > 1e-5, "f16 storage rounds: {worst:.3e}");
    if common::gpu_ctx().is_some() {
        // The GPU's 16-bit path within the same tolerance.
        let res = with(&["--backend", "gpu", "--precision", "f16"]);
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        let got = read_safetensors(&out).unwrap();
        for (name, e) in &expected {
            let err = rel_frobenius(&e.floats(name).unwrap(), &got[name].floats(name).unwrap());
            let tol = if name.starts_with("grad") { 1e-2 } else { 2e-3 };
            assert!(err <= tol, "gpu {name}: {err:.3e} > {tol:e}");
        }
    }
}
