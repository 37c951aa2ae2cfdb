//! The command line on bad input: every failure exits non-zero with one clear
//! line naming the problem, never panics, and never leaves a partial output.

mod common;

use common::Scratch;

use std::path::{Path, PathBuf};
use std::process::Command;

use rnn_wgpu::io::{HostData, HostTensor, TensorMap, read_safetensors, write_safetensors};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pytorch")
        .join(name)
}

/// Runs the binary; returns (success, stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rnn-wgpu"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "the CLI panicked: {stderr}");
    (out.status.success(), stderr)
}

/// Runs `eval` on the CPU and expects a failure whose message contains every `needle`.
fn eval_fails(weights: &Path, inputs: &Path, out: &Path, extra: &[&str], needles: &[&str]) {
    let (w, i, o) = (
        weights.display().to_string(),
        inputs.display().to_string(),
        out.display().to_string(),
    );
    let mut args = vec![
        "eval",
        "--weights",
        &w,
        "--inputs",
        &i,
        "--out",
        &o,
        "--backend",
        "cpu",
        "--backward",
    ];
    args.extend(extra);
    let (ok, err) = run(&args);
    assert!(!ok, "expected eval to fail for {needles:?}");
    for n in needles {
        assert!(err.contains(n), "message {err:?} should mention {n:?}");
    }
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one line, not a backtrace: {err}"
    );
}

fn lstm() -> (PathBuf, PathBuf) {
    (
        fixture("lstm_2layer_bi_states_lengths.weights.safetensors"),
        fixture("lstm_2layer_bi_states_lengths.inputs.safetensors"),
    )
}

fn edited(src: &Path, dst: &Path, edit: impl FnOnce(&mut TensorMap)) -> PathBuf {
    let mut m = read_safetensors(src).unwrap();
    edit(&mut m);
    write_safetensors(dst, &m, None).unwrap();
    dst.to_path_buf()
}

#[test]
fn eval_rejects_bad_weight_files() {
    let s = Scratch::new("cli-weights");
    let (w, i) = lstm();
    let out = s.path("out.safetensors");
    eval_fails(
        &s.path("nope.safetensors"),
        &i,
        &out,
        &[],
        &["nope.safetensors"],
    );
    std::fs::write(s.path("junk"), b"definitely not safetensors").unwrap();
    eval_fails(
        &s.path("junk"),
        &i,
        &out,
        &[],
        &["junk", "not a valid safetensors file"],
    );
    let no_bias = edited(&w, &s.path("a"), |m| {
        m.remove("bias_hh_l1_reverse");
    });
    eval_fails(&no_bias, &i, &out, &[], &["bias_hh_l1_reverse is missing"]);
    let bad_shape = edited(&w, &s.path("b"), |m| {
        m.insert(
            "weight_hh_l1".into(),
            HostTensor::f32(&[20, 4], vec![0.0; 80]),
        );
    });
    eval_fails(
        &bad_shape,
        &i,
        &out,
        &[],
        &["weight_hh_l1", "[G·H, H] = [20, 5]", "[20, 4]"],
    );
    let extra = edited(&w, &s.path("c"), |m| {
        m.insert("weight_hr_l0".into(), HostTensor::f32(&[1], vec![0.0]));
    });
    eval_fails(
        &extra,
        &i,
        &out,
        &[],
        &["unexpected tensor \"weight_hr_l0\""],
    );
    let odd = edited(&w, &s.path("d"), |m| {
        m.insert(
            "weight_hh_l0".into(),
            HostTensor::f32(&[7, 5], vec![0.0; 35]),
        );
    });
    eval_fails(&odd, &i, &out, &[], &["1, 3 or 4 times"]);
    eval_fails(
        &w,
        &i,
        &out,
        &["--nonlinearity", "relu"],
        &["--nonlinearity", "an LSTM"],
    );
    assert!(!out.exists(), "no output after failures");
}

#[test]
fn eval_rejects_bad_inputs() {
    let s = Scratch::new("cli-inputs");
    let (w, i) = lstm();
    let out = s.path("out.safetensors");
    let no_input = edited(&i, &s.path("a"), |m| {
        m.remove("input");
    });
    eval_fails(
        &w,
        &no_input,
        &out,
        &[],
        &["\"input\" [T, B, I] is missing"],
    );
    let bad = edited(&i, &s.path("b"), |m| {
        m.insert("input".into(), HostTensor::f32(&[6, 3, 4], vec![0.0; 72]));
    });
    eval_fails(
        &w,
        &bad,
        &out,
        &[],
        &["input: expected shape [T, B, I]", "I = 3"],
    );
    let long = edited(&i, &s.path("c"), |m| {
        m.insert(
            "lengths".into(),
            HostTensor {
                shape: vec![3],
                data: HostData::I64(vec![6, 7, 1]),
            },
        );
    });
    eval_fails(&w, &long, &out, &[], &["lengths[1] = 7 is outside 1..=6"]);
    let zero = edited(&i, &s.path("d"), |m| {
        m.insert(
            "lengths".into(),
            HostTensor {
                shape: vec![3],
                data: HostData::I32(vec![0, 1, 1]),
            },
        );
    });
    eval_fails(&w, &zero, &out, &[], &["lengths[0] = 0"]);
    let float_len = edited(&i, &s.path("e"), |m| {
        m.insert("lengths".into(), HostTensor::f32(&[3], vec![1.0; 3]));
    });
    eval_fails(
        &w,
        &float_len,
        &out,
        &[],
        &["lengths", "expected I64 or I32"],
    );
    let h0 = edited(&i, &s.path("f"), |m| {
        m.insert("h0".into(), HostTensor::f32(&[2, 3, 5], vec![0.0; 30]));
    });
    eval_fails(
        &w,
        &h0,
        &out,
        &[],
        &["h0: expected shape [L·D, B, H] = [4, 3, 5]"],
    );
    let go = edited(&i, &s.path("g"), |m| {
        m.insert(
            "grad_output".into(),
            HostTensor::f32(&[6, 3, 5], vec![0.0; 90]),
        );
    });
    eval_fails(&w, &go, &out, &[], &["grad_output", "[6, 3, 10]"]);
    let unknown = edited(&i, &s.path("h"), |m| {
        m.insert("x".into(), HostTensor::f32(&[1], vec![0.0]));
    });
    eval_fails(&w, &unknown, &out, &[], &["unexpected tensor \"x\""]);
    // c0 with GRU weights.
    let gw = fixture("gru_1layer_states.weights.safetensors");
    let gi = edited(
        &fixture("gru_1layer_states.inputs.safetensors"),
        &s.path("i"),
        |m| {
            m.insert("c0".into(), HostTensor::f32(&[1, 2, 3], vec![0.0; 6]));
        },
    );
    eval_fails(
        &gw,
        &gi,
        &out,
        &[],
        &["c0", "only an LSTM has a cell state"],
    );
    assert!(!out.exists());
}

#[test]
fn eval_never_leaves_a_partial_or_clobbered_output() {
    let s = Scratch::new("cli-out");
    let (w, i) = lstm();
    eval_fails(
        &w,
        &i,
        &s.path("missing/dir/out.safetensors"),
        &[],
        &["does not exist"],
    );
    eval_fails(&w, &i, &s.0, &[], &["is a directory"]);
    // A failing run leaves an existing file untouched.
    let keep = s.path("keep.safetensors");
    std::fs::write(&keep, b"keep").unwrap();
    let broken = edited(&i, &s.path("broken"), |m| {
        m.remove("input");
    });
    eval_fails(&w, &broken, &keep, &[], &["input"]);
    assert_eq!(std::fs::read(&keep).unwrap(), b"keep");
    let leftovers: Vec<_> = std::fs::read_dir(&s.0)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[test]
fn flags_are_checked() {
    let (ok, err) = run(&[
        "eval",
        "--weights",
        "a",
        "--inputs",
        "b",
        "--out",
        "c",
        "--backend",
        "tpu",
    ]);
    assert!(!ok && err.contains("tpu"), "{err}");
    let (ok, err) = run(&["gradcheck", "--hidden", "four"]);
    assert!(!ok && err.contains("four"), "{err}");
    let (ok, err) = run(&["gradcheck", "--steps", "0", "--lengths"]);
    assert!(!ok && err.contains("--steps: must be at least 1"), "{err}");
    let (ok, err) = run(&["gradcheck", "--hidden", "0"]);
    assert!(
        !ok && err.contains("hidden_size: must be at least 1"),
        "{err}"
    );
}

/// Runs `train` on the CPU in `dir` with small sizes plus `extra`.
fn train(dir: &Path, extra: &[&str]) -> (bool, String) {
    let ck = dir.join("run.safetensors").display().to_string();
    let plot = dir.join("loss.svg").display().to_string();
    let mut args = vec![
        "train",
        "--backend",
        "cpu",
        "--hidden",
        "8",
        "--batch",
        "4",
        "--steps",
        "3",
        "--digits",
        "2",
        "--eval-problems",
        "10",
        "--checkpoint",
        &ck,
        "--plot",
        &plot,
    ];
    args.extend(extra);
    run(&args)
}

#[test]
fn train_rejects_bad_settings() {
    let s = Scratch::new("cli-train");
    let d = &s.0;
    let empty = s.path("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.display().to_string();
    let missing = s.path("missing.txt").display().to_string();
    let cases: [(&[&str], &str); 12] = [
        (
            &["--task", "text"],
            "--text: the text task needs --text FILE",
        ),
        (&["--task", "text", "--text", &missing], "missing.txt"),
        (
            &["--task", "text", "--text", &empty],
            "the text file is empty",
        ),
        (&["--hidden", "0"], "hidden_size: must be at least 1"),
        (
            &["--hidden", "100000000"],
            "hidden_size: 100000000 is beyond the supported",
        ),
        (&["--batch", "0"], "batch: must be at least 1"),
        (&["--dropout", "1.5"], "dropout: 1.5 is outside [0, 1)"),
        (&["--lr", "-1"], "--lr: -1 must be a positive number"),
        (&["--clip", "-2"], "--clip: -2 must be a positive number"),
        (&["--bptt", "0"], "truncation: needs 1 <= k1 <= k2"),
        (&["--bptt-k2", "3"], "--bptt-k2: needs --bptt K"),
        (&["--schedule", "linear"], "unknown schedule \"linear\""),
    ];
    for (extra, needle) in cases {
        let (ok, err) = train(d, extra);
        assert!(!ok, "train {extra:?} should fail");
        assert!(
            err.contains(needle),
            "train {extra:?}: {err:?} should mention {needle:?}"
        );
    }
    let bad_dir = s.path("nowhere/run.safetensors").display().to_string();
    let (ok, err) = run(&[
        "train",
        "--backend",
        "cpu",
        "--steps",
        "1",
        "--checkpoint",
        &bad_dir,
    ]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, err) = run(&["train", "--steps", "ten"]);
    assert!(!ok && err.contains("ten"), "{err}");
    let (ok, err) = train(&s.path("fresh"), &["--resume"]);
    assert!(!ok, "resume without a checkpoint: {err}");
}

#[test]
fn train_resume_and_sample_end_to_end() {
    let s = Scratch::new("cli-e2e");
    let (ok, err) = train(&s.0, &["--json"]);
    assert!(ok, "{err}");
    assert!(s.path("run.safetensors").exists() && s.path("loss.svg").exists());
    // Resuming a finished run without --steps keeps its total.
    let ck_arg = s.path("run.safetensors").display().to_string();
    let plot_arg = s.path("loss.svg").display().to_string();
    let (ok, err) = run(&[
        "train",
        "--backend",
        "cpu",
        "--resume",
        "--checkpoint",
        &ck_arg,
        "--plot",
        &plot_arg,
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("resumed") && err.contains("done: 3 steps"),
        "{err}"
    );
    let (ok, err) = train(&s.0, &["--resume", "--steps", "5"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("resumed") && err.contains("at step 3") && err.contains("done: 5 steps"),
        "{err}"
    );
    let ck = s.path("run.safetensors").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_rnn-wgpu"))
        .args([
            "sample",
            "--checkpoint",
            &ck,
            "--prompt",
            "12+3=",
            "--backend",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("12+3="));
    let (ok, err) = run(&[
        "sample",
        "--checkpoint",
        &ck,
        "--prompt",
        "12*3=",
        "--backend",
        "cpu",
    ]);
    assert!(!ok && err.contains("'*' is not in the vocabulary"), "{err}");
    let missing = s.path("none.safetensors").display().to_string();
    let (ok, err) = run(&["sample", "--checkpoint", &missing, "--backend", "cpu"]);
    assert!(!ok && err.contains("none.safetensors"), "{err}");
    let (ok, err) = run(&[
        "sample",
        "--checkpoint",
        &ck,
        "--temperature",
        "-1",
        "--backend",
        "cpu",
    ]);
    assert!(!ok && err.contains("temperature"), "{err}");
}

#[test]
fn doctor_passes_on_this_adapter() {
    if common::gpu_ctx().is_none() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_rnn-wgpu"))
        .arg("doctor")
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "doctor failed:\n{text}");
    assert!(
        text.contains("adapters:") && text.contains("0 failed"),
        "{text}"
    );
    assert!(text.contains("training: 3 steps"), "{text}");
}
