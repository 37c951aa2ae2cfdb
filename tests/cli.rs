//! The command line on bad input: every failure exits non-zero with one clear
//! line naming the problem, never panics, and never leaves a partial output.

mod common;

use common::Scratch;

use std::path::{Path, PathBuf};
use std::process::Command;

use rnn_wgpu::io::{HostData, HostTensor, TensorMap, read_safetensors, write_safetensors};
use rnn_wgpu::train::plot::svg_texts;

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

/// Fails if an atomic write left a temporary file in `dir`.
fn assert_no_temporaries(dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
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
        m.insert("weight_xr_l0".into(), HostTensor::f32(&[1], vec![0.0]));
    });
    eval_fails(
        &extra,
        &i,
        &out,
        &[],
        &["unexpected tensor \"weight_xr_l0\""],
    );
    // A projection's weight_hr must be [P, H] with weight_hh [4H, P].
    let flat_hr = edited(&w, &s.path("c2"), |m| {
        m.insert("weight_hr_l0".into(), HostTensor::f32(&[1], vec![0.0]));
    });
    eval_fails(
        &flat_hr,
        &i,
        &out,
        &[],
        &["weight_hr_l0 has shape [1]; expected a matrix"],
    );
    let odd_hr = edited(&w, &s.path("c3"), |m| {
        m.insert(
            "weight_hr_l0".into(),
            HostTensor::f32(&[2, 7], vec![0.0; 14]),
        );
    });
    eval_fails(
        &odd_hr,
        &i,
        &out,
        &[],
        &[
            "weight_hr_l0 has shape [2, 7]",
            "weight_hh [4H, P] and weight_hr [P, H]",
        ],
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
    assert_no_temporaries(&s.0);
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

/// A finished process: (success, stdout, stderr).
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs the binary in `dir` (the current directory when `None`).
fn run_in(dir: Option<&Path>, args: &[&str]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rnn-wgpu"));
    cmd.args(args).env("XDG_RUNTIME_DIR", "/tmp");
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "the CLI panicked: {stderr}");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    }
}

/// Small sizes: every training run in this file takes a fraction of a second.
const TINY: [&str; 12] = [
    "--backend",
    "cpu",
    "--hidden",
    "8",
    "--batch",
    "4",
    "--steps",
    "3",
    "--eval-problems",
    "10",
    "--embed",
    "4",
];

/// `train` with TINY sizes plus `extra`.
fn tiny(extra: &[&str]) -> Vec<String> {
    ["train"]
        .iter()
        .chain(&TINY)
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Runs a new `train` run with TINY sizes, checkpoint `dir/run.safetensors`
/// (replaced if there) and plot `dir/loss.svg`, plus `extra`.
fn train(dir: &Path, extra: &[&str]) -> (bool, String) {
    let ck = dir.join("run.safetensors").display().to_string();
    let plot = dir.join("loss.svg").display().to_string();
    let mut args = vec!["--checkpoint", &ck, "--plot", &plot, "--overwrite"];
    args.extend(extra);
    run(&strs(&tiny(&args)))
}

/// Resumes `dir/run.safetensors` on the CPU, plus `extra`.
fn resume(dir: &Path, extra: &[&str]) -> (bool, String) {
    let ck = dir.join("run.safetensors").display().to_string();
    let plot = dir.join("loss.svg").display().to_string();
    let mut args = vec![
        "train",
        "--backend",
        "cpu",
        "--resume",
        "--checkpoint",
        &ck,
        "--plot",
        &plot,
    ];
    args.extend(extra);
    run(&args)
}

/// Expects `args` to fail with one line that contains every needle.
fn refused(args: &[&str], needles: &[&str]) {
    let (ok, err) = run(args);
    assert!(!ok, "{args:?} should be refused");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} should mention {n:?}");
    }
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
}

/// A small text file for the text task.
fn text_file(s: &Scratch) -> String {
    let p = s.path("corpus.txt");
    let line = "the quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\n";
    std::fs::write(&p, line.repeat(40)).unwrap();
    p.display().to_string()
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
        (&["--text", &empty], "the text file is empty"),
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
        // A run that fails before its first save leaves no file behind.
        assert!(!s.path("run.safetensors").exists(), "{extra:?}");
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
    let (ok, err) = resume(&s.path("fresh"), &[]);
    assert!(!ok && err.contains("fresh"), "resume of nothing: {err}");
    refused(
        &["train", "--resume", "--backend", "cpu"],
        &["--resume: needs --checkpoint PATH"],
    );
}

#[test]
fn train_refuses_flags_of_another_task_or_cell() {
    let s = Scratch::new("cli-unused");
    let text = text_file(&s);
    let ck = s.path("never.safetensors").display().to_string();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--task", "copy", "--digits", "2"],
            &["--digits: applies to --task add only", "copy"],
        ),
        (
            &["--task", "copy", "--reverse-answer"],
            &["--reverse-answer: applies to --task add only", "copy"],
        ),
        (
            &["--copy-length", "4"],
            &["--copy-length", "--task copy only"],
        ),
        (&["--symbols", "4"], &["--symbols", "--task copy only"]),
        (&["--seq-len", "8"], &["--seq-len", "--task text only"]),
        (&["--xml-depth", "3"], &["--xml-depth", "--task xml only"]),
        (
            &["--task", "copy", "--xml-length", "30"],
            &["--xml-length: applies to --task xml only", "copy"],
        ),
        (
            &["--task", "xml", "--digits", "2"],
            &["--digits", "this run's task is xml"],
        ),
        (
            &["--task", "xml", "--text", &text],
            &["--text", "--task xml does not read it"],
        ),
        (
            &["--text", &text, "--digits", "2"],
            &["--digits", "this run's task is text"],
        ),
        (
            &["--task", "add", "--text", &text],
            &["--text", "--task add does not read it"],
        ),
        (
            &["--task", "copy", "--text", &text],
            &["--text", "--task copy"],
        ),
        (
            &["--cell", "gru", "--forget-bias", "2"],
            &["--forget-bias", "LSTM cells only", "gru"],
        ),
        (
            &["--cell", "rnn-relu", "--forget-bias", "0"],
            &["--forget-bias", "rnn-relu"],
        ),
    ];
    for (extra, needles) in cases {
        let mut args = vec!["--checkpoint", &ck];
        args.extend(*extra);
        refused(&strs(&tiny(&args)), needles);
    }
    assert!(!s.path("never.safetensors").exists());
    // The same flags are fine where they apply (and defaults never trip a rule).
    let (ok, err) = train(
        &s.0,
        &["--task", "copy", "--copy-length", "5", "--symbols", "4"],
    );
    assert!(ok, "{err}");
    let (ok, err) = train(&s.0, &["--cell", "gru"]);
    assert!(ok, "{err}");
}

#[test]
fn text_implies_the_text_task() {
    let s = Scratch::new("cli-text");
    let text = text_file(&s);
    let ck = s.path("text.safetensors").display().to_string();
    let out = run_in(
        None,
        &strs(&tiny(&[
            "--text",
            &text,
            "--seq-len",
            "16",
            "--checkpoint",
            &ck,
            "--json",
        ])),
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("task text"), "{}", out.stderr);
    assert!(out.stdout.contains("\"task\":\"text\""), "{}", out.stdout);
    // The plot's default is beside the checkpoint.
    assert!(s.path("text-loss.svg").exists());
    // A text model without --prompt starts from a fixed character: greedy
    // decoding leaves the seed nothing to do.
    let sample = [
        "sample",
        "--checkpoint",
        &ck,
        "--backend",
        "cpu",
        "--length",
        "5",
    ];
    let with_seed = [&sample[..], &["--seed", "2"]].concat();
    refused(&with_seed, &["--seed: has no effect", "text model"]);
    let warm = [&with_seed[..], &["--temperature", "0.5"]].concat();
    let (ok, err) = run(&warm);
    assert!(ok, "{err}");
}

#[test]
fn xml_task_end_to_end() {
    let s = Scratch::new("cli-xml");
    let ck = s.path("xml.safetensors").display().to_string();
    let args = [
        "train",
        "--task",
        "xml",
        "--steps",
        "30",
        "--hidden",
        "32",
        "--backend",
        "cpu",
        "--checkpoint",
        &ck,
    ];
    let out = run_in(None, &[&args[..], &["--json"]].concat());
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("task xml"), "{}", out.stderr);
    // Every evaluation reports token accuracy and closing-tag accuracy.
    let last = out
        .stderr
        .lines()
        .find(|l| l.starts_with("step 30: held-out:"))
        .unwrap_or_else(|| panic!("no final evaluation in {}", out.stderr));
    for needle in ["token accuracy", "closing-tag accuracy", "1000 documents"] {
        assert!(last.contains(needle), "{last:?} should mention {needle:?}");
    }
    assert!(out.stderr.contains("closing tags"), "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(summary["task"], "xml", "{}", out.stdout);
    let closing = summary["closing_accuracy"].as_f64();
    assert!(
        closing.is_some_and(|c| (0.0..=1.0).contains(&c)),
        "{}",
        out.stdout
    );
    assert!(s.path("xml-loss.svg").exists());
    let (ok, err) = run(&[
        "train",
        "--backend",
        "cpu",
        "--resume",
        "--checkpoint",
        &ck,
        "--steps",
        "32",
    ]);
    assert!(ok && err.contains("done: 32 steps"), "{err}");
    // Generation starts a document from `<` and stops at its end.
    let sample = ["sample", "--checkpoint", &ck, "--backend", "cpu"];
    let out = run_in(None, &[&sample[..], &["--length", "30"]].concat());
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.starts_with('<'), "{}", out.stdout);
    assert_eq!(out.stdout.trim_end_matches('\n').lines().count(), 1);
    refused(
        &[&sample[..], &["--seed", "2"]].concat(),
        &[
            "--seed: has no effect",
            "xml models start from a fixed prompt",
        ],
    );
    let short = s.path("short.safetensors").display().to_string();
    let (ok, err) = run(&[&args[..9], &["--checkpoint", &short, "--xml-length", "10"]].concat());
    assert!(
        !ok && err.contains("xml task: depth 4 must be in 1..=32 and length 10 in 14..="),
        "{err}"
    );
    assert!(!s.path("short.safetensors").exists());
}

/// A variant stack trains, keeps its variant in the checkpoint and resumes as itself.
#[test]
fn variant_stacks_train_and_resume_as_themselves() {
    let s = Scratch::new("cli-variant");
    let flags = [
        "--layers",
        "2",
        "--peepholes",
        "--cell-clip",
        "3",
        "--activations",
        "sigmoid,tanh,relu",
        "--highway",
    ];
    let want = "lstm (peepholes, cell clip 3, activations sigmoid,tanh,relu) H=8 L=2 highway";
    let (ok, err) = train(&s.0, &flags);
    assert!(ok && err.contains(want), "{err}");
    let (ok, err) = resume(&s.0, &["--steps", "5"]);
    assert!(ok && err.contains(want), "{err}");
    let (ok, err) = train(
        &s.0,
        &[
            "--cell",
            "gru",
            "--reset-before",
            "--layers",
            "2",
            "--residual",
        ],
    );
    assert!(
        ok && err.contains("gru (reset before) H=8 L=2 residual"),
        "{err}"
    );
    // A projection: trains, resumes, and samples through its P-wide state.
    let (ok, err) = train(&s.0, &["--proj-size", "3", "--layers", "2"]);
    assert!(ok && err.contains("lstm (proj 3) H=8 L=2"), "{err}");
    let (ok, err) = resume(&s.0, &["--steps", "4"]);
    assert!(ok && err.contains("lstm (proj 3) H=8 L=2"), "{err}");
    let ck = s.path("run.safetensors").display().to_string();
    let (ok, err) = run(&[
        "sample",
        "--checkpoint",
        &ck,
        "--backend",
        "cpu",
        "--prompt",
        "12+3=",
    ]);
    assert!(ok, "{err}");
    refused(
        &strs(&tiny(&["--proj-size", "8"])),
        &["--proj-size", "smaller than the hidden size 8"],
    );
    refused(
        &strs(&tiny(&["--cell", "gru", "--peepholes"])),
        &["--peepholes", "LSTM", "gru"],
    );
    refused(
        &strs(&tiny(&["--cell", "lstm", "--reset-before"])),
        &["--reset-before", "GRU"],
    );
    refused(
        &strs(&tiny(&["--activations", "sigmoid,softsign,tanh"])),
        &["--activations", "softsign", "not supported"],
    );
    refused(&strs(&tiny(&["--residual"])), &["--residual", "stacked"]);
    refused(
        &strs(&tiny(&["--coupled", "--forget-bias", "2"])),
        &["--forget-bias", "--coupled"],
    );
}

#[test]
fn resume_refuses_every_flag_that_defines_the_run() {
    let s = Scratch::new("cli-resume");
    let (ok, err) = train(&s.0, &[]);
    assert!(ok, "{err}");
    let before = std::fs::read(s.path("run.safetensors")).unwrap();
    let text = text_file(&s);
    let defining: &[&[&str]] = &[
        &["--task", "copy"],
        &["--text", &text],
        &["--digits", "2"],
        &["--reverse-answer", "false"],
        &["--copy-length", "3"],
        &["--symbols", "3"],
        &["--seq-len", "8"],
        &["--xml-depth", "3"],
        &["--xml-length", "30"],
        &["--cell", "gru"],
        &["--hidden", "8"],
        &["--layers", "2"],
        &["--embed", "0"],
        &["--dropout", "0.1"],
        &["--init", "xavier"],
        &["--forget-bias", "0"],
        &["--peepholes"],
        &["--proj-size", "2"],
        &["--coupled"],
        &["--cell-clip", "1"],
        &["--activations", "sigmoid,tanh,relu"],
        &["--reset-before"],
        &["--residual"],
        &["--highway"],
        &["--batch", "2"],
        &["--bptt", "2"],
        &["--bptt", "2", "--bptt-k2", "3"],
        &["--optimizer", "sgd"],
        &["--lr", "0.1"],
        &["--schedule", "constant"],
        &["--clip", "0"],
        &["--seed", "2"],
        &["--eval-problems", "5"],
        &["--non-finite", "skip"],
    ];
    let ck = s.path("run.safetensors").display().to_string();
    let base = ["train", "--backend", "cpu", "--resume", "--checkpoint", &ck];
    for extra in defining {
        let flag = extra[0];
        refused(
            &[&base[..], extra].concat(),
            &[
                &format!("{flag}: has no effect with --resume"),
                "the checkpoint's value is used",
            ],
        );
    }
    refused(
        &[&base[..], &["--overwrite"]].concat(),
        &["--overwrite: has no effect with --resume"],
    );
    // Known only once the checkpoint is read (after the backend line).
    let (ok, err) = run(&[&base[..], &["--steps", "2"]].concat());
    assert!(
        !ok && err.contains("--steps: 2 is below the 3 steps"),
        "{err}"
    );
    assert_eq!(std::fs::read(s.path("run.safetensors")).unwrap(), before);
    // What does apply to a resumed run is accepted.
    let (ok, err) = resume(
        &s.0,
        &[
            "--steps",
            "4",
            "--eval-every",
            "1",
            "--save-every",
            "1",
            "--time-limit",
            "100",
            "--json",
        ],
    );
    assert!(ok && err.contains("done: 4 steps"), "{err}");
}

#[test]
fn train_never_overwrites_another_runs_checkpoint() {
    let s = Scratch::new("cli-overwrite");
    let ck = s.path("mine.safetensors").display().to_string();
    let args = tiny(&["--checkpoint", &ck]);
    let (ok, err) = run(&strs(&args));
    assert!(ok, "{err}");
    let first = std::fs::read(&ck).unwrap();
    // The same command again: refused, the file untouched.
    refused(
        &strs(&args),
        &[
            "--checkpoint",
            "mine.safetensors",
            "--resume",
            "--overwrite",
        ],
    );
    assert_eq!(std::fs::read(&ck).unwrap(), first);
    // An empty file (a run still starting) is not taken either.
    let starting = s.path("starting.safetensors");
    std::fs::write(&starting, b"").unwrap();
    let starting = starting.display().to_string();
    refused(
        &strs(&tiny(&["--checkpoint", &starting])),
        &["starting.safetensors", "empty"],
    );
    // A run that fails before its first save gives its claimed path back.
    let fresh = s.path("fresh.safetensors");
    let fresh_arg = fresh.display().to_string();
    let (ok, err) = run(&strs(&tiny(&["--checkpoint", &fresh_arg, "--hidden", "0"])));
    assert!(!ok && err.contains("hidden_size"), "{err}");
    assert!(!fresh.exists(), "the placeholder of a failed run stayed");
    // --overwrite replaces it (another seed: other parameters).
    let (ok, err) = run(&strs(&tiny(&[
        "--checkpoint",
        &ck,
        "--overwrite",
        "--seed",
        "7",
    ])));
    assert!(ok, "{err}");
    assert_ne!(std::fs::read(&ck).unwrap(), first);
    assert_no_temporaries(&s.0);
}

#[test]
fn default_checkpoints_are_numbered() {
    let s = Scratch::new("cli-numbered");
    let args = tiny(&["--task", "copy", "--copy-length", "5", "--symbols", "4"]);
    for n in 1..=3 {
        let out = run_in(Some(&s.0), &strs(&args));
        assert!(out.ok, "{}", out.stderr);
        if n > 1 {
            let name = format!("runs/copy-{n}.safetensors");
            assert!(
                out.stderr
                    .contains(&format!("exists: this run is written to {name}")),
                "{}",
                out.stderr
            );
        }
    }
    for f in [
        "copy.safetensors",
        "copy-loss.svg",
        "copy-2.safetensors",
        "copy-2-loss.svg",
        "copy-3.safetensors",
        "copy-3-loss.svg",
    ] {
        assert!(s.path("runs").join(f).exists(), "runs/{f} missing");
    }
    // --overwrite takes the plain name again instead of a new number.
    let out = run_in(
        Some(&s.0),
        &strs(&[&args[..], &["--overwrite".into()]].concat()),
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr.contains("checkpoint: runs/copy.safetensors"),
        "{}",
        out.stderr
    );
    assert!(!s.path("runs/copy-4.safetensors").exists());
}

#[test]
fn the_plot_has_axes_ticks_and_a_legend() {
    let s = Scratch::new("cli-plot");
    let (ok, err) = train(&s.0, &["--eval-every", "1"]);
    assert!(ok, "{err}");
    let svg = std::fs::read_to_string(s.path("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let texts = svg_texts(&svg);
    for needle in [
        "step",
        "training loss",
        "held-out exact match (%)",
        "0",
        "3",
        "0 %",
        "50 %",
        "100 %",
        "training loss (each step)",
        "training loss (smoothed)",
        "held-out exact match (right axis)",
    ] {
        assert!(
            texts.iter().any(|t| t == needle),
            "{needle:?} not among {texts:?}"
        );
    }
    assert!(svg.contains("<polyline"), "no curves");
}

#[test]
fn sample_bench_and_gradcheck_refuse_flags_without_effect() {
    let s = Scratch::new("cli-others");
    let (ok, err) = train(&s.0, &[]);
    assert!(ok, "{err}");
    let ck = s.path("run.safetensors").display().to_string();
    let sample = ["sample", "--checkpoint", &ck, "--backend", "cpu"];
    refused(
        &[&sample[..], &["--prompt", "1+2=", "--seed", "3"]].concat(),
        &["--seed: has no effect", "--prompt is given"],
    );
    for extra in [
        &["--prompt", "1+2=", "--seed", "3", "--temperature", "0.5"][..],
        &["--seed", "3"],
    ] {
        let (ok, err) = run(&[&sample[..], extra].concat());
        assert!(ok, "sample {extra:?}: {err}");
    }
    for size in ["--input", "--hidden", "--batch", "--seq", "--layers"] {
        refused(
            &["bench", "--backend", "cpu", size, "4"],
            &[&format!("{size}: "), "--cell"],
        );
    }
    refused(
        &[
            "bench",
            "--backend",
            "cpu",
            "--cell",
            "lstm",
            "--table",
            "small",
        ],
        &["--table: has no effect with --cell"],
    );
    for extra in [["--batch", "1"], ["--steps", "1"]] {
        refused(
            &[&["gradcheck", "--lengths"][..], &extra].concat(),
            &["--lengths: has no effect"],
        );
    }
}

/// `bench` on the CPU path with peaks from the flags: the roofline's fields
/// in its JSON agree with the shape's counts and with each other; without
/// peaks they are null; bad peaks are refused naming the flag.
#[test]
fn bench_reports_a_roofline() {
    use rnn_wgpu::bench::{F32_BYTES, RnnShape};
    use rnn_wgpu::ops::cell::{Cell, Variant};
    use rnn_wgpu::ops::skip::Skip;
    let shape = [
        "bench",
        "--backend",
        "cpu",
        "--cell",
        "gru",
        "--input",
        "4",
        "--hidden",
        "8",
        "--batch",
        "2",
        "--seq",
        "3",
        "--iters",
        "1",
    ];
    let json = |extra: &[&str]| -> serde_json::Value {
        let out = run_in(None, &[&shape[..], &["--json"], extra].concat());
        assert!(out.ok, "{extra:?}: {}", out.stderr);
        serde_json::from_str(out.stdout.trim()).unwrap()
    };
    let r = json(&["--peak-tflops", "0.5", "--peak-gbps", "40"]);
    let want = RnnShape {
        cell: Cell::Gru,
        input: 4,
        hidden: 8,
        batch: 2,
        seq: 3,
        layers: 1,
        bidirectional: false,
        variant: Variant::default(),
        skip: Skip::None,
    };
    // 3 · 2·T·B·G·H·(I + H)
    assert_eq!(r["min_flops"], 3.0 * 2.0 * 3.0 * 2.0 * 24.0 * 12.0, "{r}");
    assert_eq!(r["min_flops"], want.step_flops(), "{r}");
    assert_eq!(r["min_bytes"], want.step_bytes(F32_BYTES, None), "{r}");
    assert_eq!(r["peak_tflops"], 0.5, "{r}");
    assert_eq!(r["peak_gbps"], 40.0, "{r}");
    assert_eq!(r["peak_source"], "flags", "{r}");
    let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k} in {r}"));
    // No dispatches on the CPU: the larger of the other two bounds.
    assert_eq!(r["recurrent_dispatches"], 0, "{r}");
    let arithmetic = f("min_flops") / 0.5e12 * 1e3;
    let bandwidth = f("min_bytes") / 40e9 * 1e3;
    let limit = f("limit_ms");
    assert!(
        (limit - arithmetic.max(bandwidth)).abs() <= 1e-9 * limit,
        "{r}"
    );
    let fraction = f("fraction_of_limit");
    assert!(fraction > 0.0 && fraction.is_finite(), "{r}");
    assert!(
        (fraction - limit / f("step_ms")).abs() <= 1e-9 * fraction,
        "{r}"
    );
    let bound = r["bound"].as_str().unwrap_or_default();
    assert!(
        ["arithmetic", "bandwidth", "launches"].contains(&bound),
        "{r}"
    );
    assert_eq!(
        bound,
        if arithmetic >= bandwidth {
            "arithmetic"
        } else {
            "bandwidth"
        },
        "{r}"
    );
    // The CPU's peaks are not in the table: the counts stay, the rest is null.
    let r = json(&[]);
    assert_eq!(r["min_bytes"], want.step_bytes(F32_BYTES, None), "{r}");
    for k in [
        "peak_tflops",
        "peak_gbps",
        "peak_source",
        "limit_ms",
        "fraction_of_limit",
        "bound",
    ] {
        assert!(r[k].is_null(), "{k} in {r}");
    }
    let out = run_in(None, &shape);
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("peak unknown: pass --peak-tflops/--peak-gbps"),
        "{}",
        out.stderr
    );
    for (extra, needle) in [
        (
            &["--peak-tflops", "0", "--peak-gbps", "40"][..],
            "--peak-tflops: must be a positive",
        ),
        (
            &["--peak-tflops", "nan", "--peak-gbps", "40"],
            "--peak-tflops: must be a positive",
        ),
        (
            &["--peak-tflops", "1", "--peak-gbps=-5"],
            "--peak-gbps: must be a positive",
        ),
        (&["--peak-tflops", "1"], "--peak-tflops: needs --peak-gbps"),
        (&["--peak-gbps", "1"], "--peak-gbps: needs --peak-tflops"),
        (
            &["--launch-us", "3"],
            "--launch-us: has no effect on the CPU path",
        ),
    ] {
        refused(&[&shape[..], extra].concat(), &[needle]);
    }
}

#[test]
fn train_resume_and_sample_end_to_end() {
    let s = Scratch::new("cli-e2e");
    let (ok, err) = train(&s.0, &["--json", "--digits", "2"]);
    assert!(ok, "{err}");
    assert!(s.path("run.safetensors").exists() && s.path("loss.svg").exists());
    // Resuming a finished run without --steps keeps its total.
    let (ok, err) = resume(&s.0, &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("resumed") && err.contains("done: 3 steps"),
        "{err}"
    );
    let (ok, err) = resume(&s.0, &["--steps", "5"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("resumed") && err.contains("at step 3") && err.contains("done: 5 steps"),
        "{err}"
    );
    let ck = s.path("run.safetensors").display().to_string();
    let out = run_in(
        None,
        &[
            "sample",
            "--checkpoint",
            &ck,
            "--prompt",
            "12+3=",
            "--backend",
            "cpu",
        ],
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.starts_with("12+3="));
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

#[test]
fn the_plot_never_replaces_a_checkpoint_or_another_file() {
    let s = Scratch::new("cli-plot-guard");
    let ck = s.path("a.safetensors").display().to_string();
    let (ok, err) = run(&strs(&tiny(&["--checkpoint", &ck, "--plot", &ck])));
    assert!(
        !ok && err.contains("--plot") && err.contains("checkpoint"),
        "{err}"
    );
    // The same file spelled another way.
    let dotted = s.0.join(".").join("a.safetensors").display().to_string();
    let (ok, err) = run(&strs(&tiny(&["--checkpoint", &ck, "--plot", &dotted])));
    assert!(!ok && err.contains("--plot"), "{err}");
    let plot = s.path("kept.svg");
    std::fs::write(&plot, b"keep").unwrap();
    let p = plot.display().to_string();
    let (ok, err) = run(&strs(&tiny(&["--checkpoint", &ck, "--plot", &p])));
    assert!(!ok && err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(&plot).unwrap(), b"keep");
    let (ok, err) = run(&strs(&tiny(&[
        "--checkpoint",
        &ck,
        "--plot",
        &p,
        "--overwrite",
    ])));
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));
}

#[test]
fn non_finite_numbers_are_refused() {
    let s = Scratch::new("cli-non-finite");
    for (flag, value) in [
        ("--time-limit", "nan"),
        ("--time-limit", "-1"),
        ("--forget-bias", "inf"),
    ] {
        let (ok, err) = train(&s.0, &[flag, value]);
        let name = flag.trim_start_matches("--").replace('-', "_");
        assert!(
            !ok && (err.contains(flag) || err.contains(&name)),
            "{flag} {value}: {err}"
        );
    }
}

/// Ctrl-C stops a run after its current step, which then evaluates and saves
/// a checkpoint that resumes (and exits non-zero: the run is not finished).
#[test]
fn ctrl_c_saves_the_run() {
    use std::io::{BufRead, BufReader};
    let s = Scratch::new("cli-ctrl-c");
    let ck = s.path("run.safetensors");
    let args = tiny(&[
        "--steps",
        "1000000",
        "--save-every",
        "0",
        "--checkpoint",
        &ck.display().to_string(),
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rnn-wgpu"))
        .args(&args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.starts_with("task ");
        log.push(line);
        if started {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    log.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let log = log.join("\n");
    assert!(
        !status.success(),
        "an interrupted run exits non-zero: {log}"
    );
    assert!(log.contains("interrupted at step"), "{log}");
    let t = rnn_wgpu::train::Trainer::load(rnn_wgpu::backend::CpuBackend::<f32>::new(), &ck)
        .unwrap_or_else(|e| panic!("the checkpoint does not load: {e}\n{log}"));
    assert!(t.step() > 0 && t.step() < 1_000_000, "step {}", t.step());
}

/// Started by an MPI launcher, a build without the `mpi` feature refuses to
/// train instead of running N independent copies that write the same files.
#[cfg(not(feature = "mpi"))]
#[test]
fn train_under_mpirun_without_mpi_support_is_refused() {
    let dir = Scratch::new("no-mpi");
    let out = Command::new(env!("CARGO_BIN_EXE_rnn-wgpu"))
        .args(["train", "--backend", "cpu", "--steps", "2", "--checkpoint"])
        .arg(dir.path("x.st"))
        .env("XDG_RUNTIME_DIR", "/tmp")
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("built without MPI") && stderr.contains("--features mpi"),
        "{stderr}"
    );
    assert!(!dir.path("x.st").exists());
}

/// `bench --step-order`: the order that ran is reported, its dispatch chain
/// on the GPU follows the formula (T + L − 1 a pass as a wavefront, L·T layer
/// by layer, with the tiled step kernel), and a wavefront the stack cannot
/// run is an error naming why.
#[test]
fn bench_runs_each_step_order() {
    let args = |backend: &'static str, order: &'static str, extra: &[&'static str]| {
        let mut v = vec![
            "bench",
            "--backend",
            backend,
            "--cell",
            "lstm",
            "--input",
            "3",
            "--hidden",
            "5",
            "--batch",
            "2",
            "--seq",
            "4",
            "--layers",
            "3",
            "--iters",
            "1",
            "--json",
            "--step-order",
            order,
        ];
        v.extend_from_slice(extra);
        v
    };
    let json = |out: &Out| -> serde_json::Value {
        assert!(out.ok, "{}", out.stderr);
        serde_json::from_str(out.stdout.trim()).unwrap()
    };
    for (order, ran) in [
        ("auto", "layers"),
        ("layers", "layers"),
        ("wavefront", "wavefront"),
    ] {
        let r = json(&run_in(None, &args("cpu", order, &[])));
        assert_eq!(r["step_order"], ran, "{order}: {r}");
    }
    let out = run_in(None, &args("cpu", "wavefront", &["--bidirectional"]));
    assert!(
        !out.ok && out.stderr.contains("step_order") && out.stderr.contains("bidirectional"),
        "{}",
        out.stderr
    );
    if common::gpu_ctx().is_none() {
        return;
    }
    for (order, ran, chain) in [
        ("auto", "wavefront", 2 * (4 + 3 - 1)),
        ("layers", "layers", 2 * 3 * 4),
        ("wavefront", "wavefront", 2 * (4 + 3 - 1)),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_rnn-wgpu"))
            .args(args("gpu", order, &[]))
            .env("XDG_RUNTIME_DIR", "/tmp")
            .env("RNN_WGPU_STEP_KERNEL", "tiled")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        assert_eq!(r["step_order"], ran, "{order}: {r}");
        assert_eq!(r["step_kernel"], "tiled", "{r}");
        assert_eq!(r["recurrent_dispatches"], chain, "{order}: {r}");
    }
}
