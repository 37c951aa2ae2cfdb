//! ONNX models (`eval --onnx`): every fixture of tests/fixtures/onnx (made by
//! make_onnx_fixtures.py, onnxruntime the reference: single recurrent nodes
//! with random weights and every attribute, and the graphs torch.onnx.export
//! writes) on the CPU (f32, f64) and GPU paths, and the command line.
//! Tolerance: relative Frobenius error ≤ 1e-4 (onnxruntime computes in f32).

mod common;
#[path = "common/onnx_exports.rs"]
mod exports;

use std::path::{Path, PathBuf};
use std::process::Command;

use rnn_wgpu::Precision;
use rnn_wgpu::backend::{Backend, CpuBackend};
use rnn_wgpu::io::{TensorMap, read_safetensors};
use rnn_wgpu::onnx::{read_model, run_model, run_model_at};
use rnn_wgpu::parity::rel_frobenius;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

struct Case {
    name: String,
    /// A graph the evaluator must refuse (arithmetic instead of a recurrent node).
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
            refused: c["expect"].as_str() == Some("refused"),
        })
        .collect()
}

fn file(c: &Case, what: &str) -> PathBuf {
    dir().join(format!("{}.{what}", c.name))
}

fn compare(label: &str, c: &Case, got: &TensorMap) {
    compare_within(label, c, got, 1e-4);
}

/// Asserts every output of `got` within `tol` (relative Frobenius) of the
/// expected ones; returns the largest error.
fn compare_within(label: &str, c: &Case, got: &TensorMap, tol: f64) -> f64 {
    let expected = read_safetensors(&file(c, "expected.safetensors")).unwrap();
    let names = |m: &TensorMap| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(got), names(&expected), "{label} {}: outputs", c.name);
    let mut worst: f64 = 0.0;
    for (name, e) in &expected {
        let g = &got[name];
        assert_eq!(g.shape, e.shape, "{label} {}: shape of {name}", c.name);
        let err = rel_frobenius(&e.floats(name).unwrap(), &g.floats(name).unwrap());
        assert!(
            err <= tol,
            "{label} {}: {name}: relative Frobenius error {err:.3e} (tolerance {tol:.0e})",
            c.name
        );
        worst = worst.max(err);
    }
    worst
}

fn run_on<B: Backend>(b: &B, label: &str) {
    for c in cases() {
        let model = read_model(&file(&c, "onnx")).unwrap();
        let inputs = read_safetensors(&file(&c, "inputs.safetensors")).unwrap();
        let got = run_model(b, &model, &inputs);
        if c.refused {
            let err = got.unwrap_err().to_string();
            assert!(err.contains("dynamo=False"), "{}: {err}", c.name);
            continue;
        }
        compare(
            label,
            &c,
            &got.unwrap_or_else(|e| panic!("{label} {}: {e}", c.name)),
        );
    }
}

/// Tolerances of the recurrent nodes at 16-bit storage against
/// onnxruntime's f32 (relative Frobenius, every output; the worst over the
/// fixtures is about a third of each, see benches/RESULTS.md).
const F16_TOL: f64 = 2e-3;
const BF16_TOL: f64 = 1.5e-2;

/// Every fixture at `precision`; the worst error.
fn run_16bit_on<B: Backend>(b: &B, label: &str, precision: Precision) -> f64 {
    let tol = if precision == Precision::F16 {
        F16_TOL
    } else {
        BF16_TOL
    };
    let mut worst: f64 = 0.0;
    for c in cases().iter().filter(|c| !c.refused) {
        let model = read_model(&file(c, "onnx")).unwrap();
        let inputs = read_safetensors(&file(c, "inputs.safetensors")).unwrap();
        let got = run_model_at(b, &model, &inputs, precision)
            .unwrap_or_else(|e| panic!("{label} {precision} {}: {e}", c.name));
        // On the 16-bit grid (the recurrent nodes' outputs are stored there).
        for (name, v) in &got {
            let v = v.floats(name).unwrap();
            assert!(
                v.iter().all(|&x| precision.round_f32(x as f32) as f64 == x),
                "{label} {precision} {}: {name} is not on the grid",
                c.name
            );
        }
        worst = worst.max(compare_within(
            &format!("{label} {precision}"),
            c,
            &got,
            tol,
        ));
    }
    println!("{label} {precision}: worst relative Frobenius error {worst:.2e}");
    worst
}

#[test]
fn recurrent_nodes_run_at_16_bits_within_tolerance() {
    let cpu = CpuBackend::<f32>::new();
    for p in [Precision::F16, Precision::Bf16] {
        let worst = run_16bit_on(&cpu, "cpu", p);
        // 16-bit storage really is used: f32 reaches 1e-4.
        assert!(worst > 1e-4, "{p}: worst error {worst:.2e}");
    }
    if let Some(gpu) = common::gpu() {
        for p in [Precision::F16, Precision::Bf16] {
            run_16bit_on(&gpu, "gpu", p);
        }
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
            // f32, then the recurrent nodes at f16 storage (named in the summary).
            for precision in ["f32", "f16"] {
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
                    "--precision",
                    precision,
                ]);
                let stdout = String::from_utf8_lossy(&res.stdout);
                assert!(
                    res.status.success()
                        && stdout.contains("recurrent, f16 storage") == (precision == "f16"),
                    "{stdout}{}",
                    String::from_utf8_lossy(&res.stderr)
                );
                let got = read_safetensors(&out).unwrap();
                let label = format!("cli {backend} {precision}");
                if precision == "f32" {
                    compare(&label, &c, &got);
                } else {
                    let err = compare_within(&label, &c, &got, F16_TOL);
                    assert!(err > 1e-5, "{label}: {err:.2e} is f32's");
                }
            }
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

/// Stacks written by `export_stack` and run back through the ONNX
/// evaluator give what the stack gives, with and without initial states;
/// what ONNX's nodes cannot express is refused.
#[test]
fn exported_stacks_run_back_to_the_same_outputs() {
    use rnn_wgpu::io::HostTensor;
    use rnn_wgpu::nn::RnnConfig;
    use rnn_wgpu::nn::case::{RnnCase, run_case};
    use rnn_wgpu::onnx::export_stack;
    use rnn_wgpu::ops::cell::{Act, Activations, Cell, Nonlinearity, Variant};
    use rnn_wgpu::ops::skip::Skip;
    let lstm = Variant {
        peepholes: true,
        coupled: true,
        cell_clip: Some(0.8),
        activations: Activations {
            f: Act::Sigmoid,
            g: Act::Relu,
            h: Act::Tanh,
        },
        ..Default::default()
    };
    let configs = [
        RnnConfig::new(Cell::Lstm, 3, 4)
            .layers(2)
            .bidirectional(true),
        RnnConfig::new(Cell::Lstm, 3, 4).variant(lstm).layers(2),
        RnnConfig::new(Cell::Gru, 2, 5)
            .layers(2)
            .bidirectional(true),
        RnnConfig::new(Cell::Gru, 2, 5).variant(Variant {
            reset_before: true,
            cell_clip: Some(0.5),
            ..Default::default()
        }),
        RnnConfig::new(Cell::Rnn(Nonlinearity::Relu), 3, 4).bidirectional(true),
        RnnConfig::new(Cell::Rnn(Nonlinearity::Sigmoid), 3, 4).layers(3),
    ];
    let b = CpuBackend::<f64>::new();
    for (i, cfg) in configs.into_iter().enumerate() {
        for states in [false, true] {
            let mut case = RnnCase::new(cfg, 4, 3, 300 + i as u64);
            if states {
                case = case.with_states();
            }
            let mut data = case.data();
            // The model holds f32 weights: compare against the same values.
            for v in &mut data.params {
                *v = *v as f32 as f64;
            }
            let model = export_stack(&cfg, &data.params, states).unwrap();
            let mut inputs = TensorMap::new();
            let ld = cfg.num_layers * cfg.directions();
            let put = |m: &mut TensorMap, n: &str, shape: &[usize], v: &[f64]| {
                m.insert(n.to_string(), HostTensor::f32_from_f64(shape, v));
            };
            // f32 inputs, as the file gives them.
            let r32 = |v: &[f64]| v.iter().map(|&x| x as f32 as f64).collect::<Vec<f64>>();
            data.x = r32(&data.x);
            put(&mut inputs, "input", &[4, 3, cfg.input_size], &data.x);
            if let Some(h0) = &mut data.h0 {
                *h0 = r32(h0);
                put(&mut inputs, "h0", &[ld, 3, cfg.hidden_size], h0);
            }
            if let Some(c0) = &mut data.c0 {
                *c0 = r32(c0);
                put(&mut inputs, "c0", &[ld, 3, cfg.hidden_size], c0);
            }
            let got = run_model(&b, &model, &inputs).unwrap();
            let want = run_case(&b, &cfg, &data, false).unwrap();
            let what = format!("{} states={states}", case.describe());
            let close = |name: &str, w: &[f64]| {
                let g = got[name].floats(name).unwrap();
                let err = rel_frobenius(w, &g);
                assert!(err <= 1e-6, "{what}: {name}: {err:.3e}");
            };
            close("output", &want.output);
            close("hn", &want.hn);
            if cfg.cell == Cell::Lstm {
                close("cn", &want.cn);
            }
        }
    }
    let proj = RnnConfig::new(Cell::Lstm, 3, 4).variant(Variant {
        proj_size: 2,
        ..Default::default()
    });
    let p = vec![0.0; proj.layout().total];
    let err = export_stack(&proj, &p, false).unwrap_err().to_string();
    assert!(err.contains("projection"), "{err}");
    let skip = RnnConfig::new(Cell::Gru, 3, 4)
        .layers(2)
        .skip(Skip::Residual);
    let p = vec![0.0; skip.layout().total];
    let err = export_stack(&skip, &p, false).unwrap_err().to_string();
    assert!(err.contains("residual"), "{err}");
}

/// The exports onnxruntime ran (tests/fixtures/onnx/exported_*): the export
/// still writes those exact bytes, and the evaluator reproduces
/// onnxruntime's outputs on them, on the CPU and GPU paths.
#[test]
fn onnxruntime_runs_our_exports_to_our_outputs() {
    use prost::Message;
    let gpu = common::gpu();
    for (i, (name, cfg, states)) in exports::stacks().into_iter().enumerate() {
        let model =
            rnn_wgpu::onnx::export_stack(&cfg, &exports::params(&cfg, 700 + i as u64), states)
                .unwrap();
        let path = dir().join(format!("{name}.onnx"));
        let committed = std::fs::read(&path).unwrap();
        assert!(
            model.encode_to_vec() == committed,
            "{name}: the export no longer writes the model onnxruntime ran; rerun \
             `cargo run --release --example onnx_exports` and ort_exports.py"
        );
        let c = Case {
            name: name.to_string(),
            refused: false,
        };
        let model = read_model(&path).unwrap();
        let inputs = read_safetensors(&file(&c, "inputs.safetensors")).unwrap();
        compare(
            "cpu",
            &c,
            &run_model(&CpuBackend::<f32>::new(), &model, &inputs).unwrap(),
        );
        if let Some(g) = &gpu {
            compare("gpu", &c, &run_model(g, &model, &inputs).unwrap());
        }
    }
}

/// A trained checkpoint through `export` and back through `eval --onnx`
/// gives what its stack gives; `export` refuses to replace a file.
#[test]
fn a_trained_checkpoint_exports_and_runs_back() {
    use rnn_wgpu::io::{HostTensor, write_safetensors};
    use rnn_wgpu::nn::case::{RnnCaseData, run_case};
    use rnn_wgpu::train::checkpoint::load_stack;
    let tmp = std::env::temp_dir().join(format!("rnn-wgpu-export-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let ck = tmp.join("run.safetensors");
    let res = cli(&[
        "train",
        "--backend",
        "cpu",
        "--cell",
        "gru",
        "--layers",
        "2",
        "--hidden",
        "8",
        "--embed",
        "4",
        "--batch",
        "4",
        "--steps",
        "3",
        "--eval-problems",
        "10",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--plot",
        tmp.join("l.svg").to_str().unwrap(),
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let model = tmp.join("m.onnx");
    let export = |extra: &[&str]| {
        let mut a = vec![
            "export",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--onnx",
            model.to_str().unwrap(),
            "--states",
        ];
        a.extend(extra);
        cli(&a)
    };
    let res = export(&[]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let again = export(&[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && err.contains("--overwrite"),
        "{err}"
    );
    assert!(export(&["--overwrite"]).status.success());
    let (cfg, params) = load_stack(&ck).unwrap();
    let (t, b, ld) = (5, 2, cfg.num_layers * cfg.directions());
    let x: Vec<f64> = (0..t * b * cfg.input_size)
        .map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0)
        .collect();
    let h0: Vec<f64> = (0..ld * b * cfg.hidden_size)
        .map(|i| ((i * 3 % 7) as f64 - 3.0) / 4.0)
        .collect();
    let mut inputs = TensorMap::new();
    inputs.insert(
        "input".into(),
        HostTensor::f32_from_f64(&[t, b, cfg.input_size], &x),
    );
    inputs.insert(
        "h0".into(),
        HostTensor::f32_from_f64(&[ld, b, cfg.hidden_size], &h0),
    );
    let inputs_path = tmp.join("x.safetensors");
    write_safetensors(&inputs_path, &inputs, None).unwrap();
    let out = tmp.join("o.safetensors");
    let res = cli(&[
        "eval",
        "--onnx",
        model.to_str().unwrap(),
        "--inputs",
        inputs_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--backend",
        "cpu",
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let got = read_safetensors(&out).unwrap();
    let data = RnnCaseData {
        steps: t,
        batch: b,
        params,
        x: inputs["input"].floats("x").unwrap(),
        h0: Some(inputs["h0"].floats("h0").unwrap()),
        c0: None,
        lengths: None,
        grad_output: None,
        grad_hn: None,
        grad_cn: None,
    };
    let want = run_case(&CpuBackend::<f64>::new(), &cfg, &data, false).unwrap();
    for (name, w) in [("output", &want.output), ("hn", &want.hn)] {
        let err = rel_frobenius(w, &got[name].floats(name).unwrap());
        assert!(err <= 1e-5, "{name}: {err:.3e}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}
