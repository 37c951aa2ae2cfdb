//! `mpirun -n 2 rnn-wgpu train`: data-parallel training over MPI equals one
//! process within rounding, repeats bitwise, resumes with another number of
//! ranks, and ends within a bounded time when a rank fails or is killed,
//! leaving its last checkpoint intact.
//!
//! Needs the `mpi` feature and `mpirun` (Open MPI: `openmpi-bin
//! libopenmpi-dev libclang-dev`); `scripts/test.sh` installs them and runs
//! `cargo test --release --features mpi --test mpi`. With CI=true a missing
//! `mpirun` fails these tests instead of skipping them.
mod common;

use common::Scratch;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rnn_wgpu::io::read_safetensors;

const BIN: &str = env!("CARGO_BIN_EXE_rnn-wgpu");

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// True when `mpirun` runs; with CI=true its absence is a failure.
fn have_mpirun() -> bool {
    let ok = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !in_ci(),
            "CI=true and mpirun is missing: install openmpi-bin libopenmpi-dev libclang-dev"
        );
        common::say("skipping MPI tests: no mpirun (install openmpi-bin)");
    }
    ok
}

/// `mpirun -n n` (or the binary alone for `n = 0`) with `args`, one thread
/// per rank, in `dir`, with `env` set on every rank.
fn command(dir: &Path, n: usize, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut vars = vec![
        ("RAYON_NUM_THREADS", "1"),
        ("MATMUL_NUM_THREADS", "1"),
        ("XDG_RUNTIME_DIR", "/tmp"),
    ];
    vars.extend_from_slice(env);
    let mut c = if n == 0 {
        Command::new(BIN)
    } else {
        let mut c = Command::new("mpirun");
        c.args(["--oversubscribe", "-n", &n.to_string()]);
        for (k, _) in &vars {
            c.args(["-x", k]);
        }
        c.arg(BIN);
        c
    };
    c.args(args).current_dir(dir).envs(vars.iter().copied());
    // Open MPI refuses root (CI containers) without both of these.
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

fn run(dir: &Path, n: usize, args: &[&str]) -> Output {
    let out = command(dir, n, args, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "a rank panicked: {stderr}");
    out
}

/// The one JSON summary a run prints (rank 0's).
fn summary(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(
        lines.len(),
        1,
        "one summary expected: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(lines[0]).unwrap()
}

fn train(dir: &Path, n: usize, extra: &[&str]) -> serde_json::Value {
    let model = [
        "--hidden",
        "24",
        "--batch",
        "16",
        "--dropout",
        "0.1",
        "--layers",
        "2",
        "--eval-problems",
        "50",
        "--eval-every",
        "10",
    ];
    // A resumed run takes its model and run settings from the checkpoint.
    let resume = extra.contains(&"--resume");
    let mut args = vec!["train", "--backend", "cpu", "--json"];
    if !resume {
        args.extend_from_slice(&model);
    }
    args.extend_from_slice(extra);
    let out = run(dir, n, &args);
    assert!(
        out.status.success(),
        "{n} ranks: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    summary(&out)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs())
}

fn params(path: &Path) -> Vec<(String, Vec<f32>)> {
    let mut v: Vec<(String, Vec<f32>)> = read_safetensors(path)
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.floats(&k).unwrap().iter().map(|&x| x as f32).collect(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn two_ranks_train_what_one_process_trains_and_repeat_bitwise() {
    if !have_mpirun() {
        return;
    }
    let dir = Scratch::new("mpi-equal");
    let steps = ["--steps", "40"];
    let one = train(
        &dir.0,
        0,
        &[&steps[..], &["--checkpoint", "one.st"]].concat(),
    );
    let a = train(&dir.0, 2, &[&steps[..], &["--checkpoint", "a.st"]].concat());
    let b = train(&dir.0, 2, &[&steps[..], &["--checkpoint", "b.st"]].concat());
    assert_eq!(a["final_loss"], b["final_loss"]);
    assert_eq!(one["world_size"], 1);
    assert_eq!(a["world_size"], 2);
    let (l1, l2) = (
        one["final_loss"].as_f64().unwrap(),
        a["final_loss"].as_f64().unwrap(),
    );
    assert!(
        rel(l1, l2) < 1e-4,
        "final loss {l2} with 2 ranks, {l1} alone"
    );
    // Bitwise the same run twice with 2 ranks: every tensor of the
    // checkpoint (parameters and optimizer state) bit for bit.
    let (fa, fb) = (dir.path("a.st"), dir.path("b.st"));
    let bits = |p: &Path| -> Vec<(String, Vec<u32>)> {
        params(p)
            .into_iter()
            .map(|(k, v)| (k, v.iter().map(|x| x.to_bits()).collect()))
            .collect()
    };
    assert_eq!(bits(&fa), bits(&fb));
    let (pa, p1) = (params(&fa), params(&dir.path("one.st")));
    for ((name, x), (_, y)) in pa.iter().zip(&p1) {
        let worst = x
            .iter()
            .zip(y)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-3, "{name}: 2 ranks and 1 differ by {worst}");
    }
}

#[test]
fn a_run_resumes_with_another_number_of_ranks() {
    if !have_mpirun() {
        return;
    }
    let dir = Scratch::new("mpi-resume");
    // 20 steps with 2 ranks, then 20 more alone; 20 alone, then 20 more
    // with 2 ranks; both against 20 and 20 more alone (a resume to more
    // steps moves the schedule's horizon, so all three resume).
    train(&dir.0, 0, &["--steps", "20", "--checkpoint", "w.st"]);
    let whole = train(
        &dir.0,
        0,
        &["--steps", "40", "--checkpoint", "w.st", "--resume"],
    );
    train(&dir.0, 2, &["--steps", "20", "--checkpoint", "x.st"]);
    let x = train(
        &dir.0,
        0,
        &["--steps", "40", "--checkpoint", "x.st", "--resume"],
    );
    train(&dir.0, 0, &["--steps", "20", "--checkpoint", "y.st"]);
    let y = train(
        &dir.0,
        2,
        &["--steps", "40", "--checkpoint", "y.st", "--resume"],
    );
    let w = whole["final_loss"].as_f64().unwrap();
    for (name, s) in [("2 then 1", &x), ("1 then 2", &y)] {
        assert_eq!(s["steps"], 40);
        let l = s["final_loss"].as_f64().unwrap();
        assert!(rel(w, l) < 1e-4, "{name}: final loss {l}, {w} in one run");
    }
}

/// Pids of the processes whose environment holds `tag` and `OMPI_COMM_WORLD_RANK=rank`.
fn ranks_tagged(tag: &str, rank: usize) -> Vec<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
                vars.contains(&tag.as_bytes()) && vars.contains(&want.as_bytes())
            })
        })
        .collect()
}

/// Waits for `child` at most `limit`; kills it and fails past that.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{what}: the job was still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A long 2-rank CPU run in `dir` checkpointing to `checkpoint` (with
/// `extra` flags), its ranks tagged in their environment so the test can
/// find their processes: the job and the tag.
fn spawn_long_run(dir: &Path, name: &str, checkpoint: &str, extra: &[&str]) -> (Child, String) {
    let tag_value = format!("{name}-{}", std::process::id());
    let mut args = vec![
        "train",
        "--backend",
        "cpu",
        "--hidden",
        "16",
        "--batch",
        "8",
        "--steps",
        "1000000",
        "--eval-every",
        "0",
        "--eval-problems",
        "20",
        "--checkpoint",
        checkpoint,
    ];
    args.extend_from_slice(extra);
    let child = command(dir, 2, &args, &[("RNN_WGPU_TEST_TAG", &tag_value)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, format!("RNN_WGPU_TEST_TAG={tag_value}"))
}

#[test]
fn a_killed_rank_ends_the_job_and_the_checkpoint_resumes() {
    if !have_mpirun() {
        return;
    }
    let dir = Scratch::new("mpi-kill");
    let (mut child, tag) = spawn_long_run(&dir.0, "kill", "k.st", &["--save-every", "5"]);
    // Wait for a first checkpoint, then kill rank 1.
    let ckpt = dir.path("k.st");
    let start = Instant::now();
    while !std::fs::metadata(&ckpt).is_ok_and(|m| m.len() > 0) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint after 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let victims = ranks_tagged(&tag, 1);
    assert_eq!(victims.len(), 1, "rank 1's process: {victims:?}");
    Command::new("kill")
        .args(["-9", &victims[0].to_string()])
        .status()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(30), "rank 1 killed");
    assert!(!status.success());
    assert!(ranks_tagged(&tag, 0).is_empty(), "rank 0 outlived the job");
    // The last checkpoint is whole and resumes.
    let out = run(
        &dir.0,
        0,
        &[
            "train",
            "--backend",
            "cpu",
            "--checkpoint",
            "k.st",
            "--resume",
            "--steps",
            "12",
            "--json",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Saved every 5 steps: resumed at a multiple of 5 (12 may be behind it
    // when the kill came late; then --steps is refused, also a clean exit).
    assert!(
        out.status.success() || stderr.contains("is below the"),
        "{stderr}"
    );
    assert!(
        stderr.contains("resumed") || stderr.contains("is below the"),
        "{stderr}"
    );
}

#[test]
fn a_rank_that_fails_ends_the_job_with_its_error() {
    if !have_mpirun() {
        return;
    }
    let dir = Scratch::new("mpi-fail");
    // Rank 1 on another kind of device than rank 0: refused by rank 1
    // (MPMD: one program per rank).
    let args = [
        "train",
        "--hidden",
        "8",
        "--batch",
        "4",
        "--steps",
        "1000",
        "--checkpoint",
        "f.st",
    ];
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-n", "1", BIN])
        .args(args)
        .args(["--backend", "cpu", ":", "-n", "1", BIN])
        .args(args)
        .args(["--backend", "cpu64"])
        .current_dir(&dir.0)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(30), "mismatched ranks");
    assert!(!status.success());
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("backend differs from rank 0's"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn two_gpu_ranks_train_what_one_gpu_trains() {
    if !have_mpirun() || common::gpu_ctx().is_none() {
        return;
    }
    let dir = Scratch::new("mpi-gpu");
    // With one adapter (lavapipe here) both ranks take it (wrapping around).
    let args = |ckpt: &'static str| {
        vec![
            "train",
            "--backend",
            "gpu",
            "--hidden",
            "16",
            "--batch",
            "8",
            "--steps",
            "12",
            "--eval-problems",
            "10",
            "--json",
            "--checkpoint",
            ckpt,
        ]
    };
    let one = run(&dir.0, 0, &args("one.st"));
    let two = run(&dir.0, 2, &args("two.st"));
    assert!(
        two.status.success(),
        "{}",
        String::from_utf8_lossy(&two.stderr)
    );
    let (one, two) = (summary(&one), summary(&two));
    assert_eq!(two["world_size"], 2);
    assert_eq!(two["backend"], "gpu");
    let (l1, l2) = (
        one["final_loss"].as_f64().unwrap(),
        two["final_loss"].as_f64().unwrap(),
    );
    assert!(
        rel(l1, l2) < 1e-4,
        "final loss {l2} with 2 GPU ranks, {l1} alone"
    );
}

#[test]
fn interrupted_ranks_stop_after_the_same_step_and_rank_0_saves() {
    if !have_mpirun() {
        return;
    }
    let dir = Scratch::new("mpi-int");
    let (mut child, tag) = spawn_long_run(&dir.0, "int", "i.st", &[]);
    // Both ranks running (and past their first steps), then SIGINT to each.
    let start = Instant::now();
    while ranks_tagged(&tag, 0).is_empty() || ranks_tagged(&tag, 1).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the ranks did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    for rank in [0, 1] {
        for pid in ranks_tagged(&tag, rank) {
            Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .unwrap();
        }
    }
    let status = wait_bounded(&mut child, Duration::from_secs(60), "interrupted ranks");
    assert!(!status.success(), "an interrupted run exits non-zero");
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("interrupted at step"), "{stderr}");
    assert!(stderr.contains("checkpoint: i.st"), "{stderr}");
    // The checkpoint resumes, at the step the ranks stopped after.
    let at = stderr
        .split("interrupted at step ")
        .nth(1)
        .and_then(|s| s.split(':').next())
        .unwrap()
        .to_string();
    let more = (at.parse::<u64>().unwrap() + 2).to_string();
    let out = run(
        &dir.0,
        0,
        &[
            "train",
            "--backend",
            "cpu",
            "--checkpoint",
            "i.st",
            "--resume",
            "--steps",
            &more,
            "--json",
        ],
    );
    assert!(out.status.success());
    let resumed = String::from_utf8_lossy(&out.stderr);
    assert!(resumed.contains(&format!("at step {at}")), "{resumed}");
}
