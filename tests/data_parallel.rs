//! Data-parallel training with ranks as threads ([`ThreadGroup`]): N ranks
//! train what one process trains on the same global batch (within
//! rounding), hold bit-identical parameters, repeat bitwise, and resume a
//! checkpoint with another N. The same runs over MPI are in `tests/mpi.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use rnn_wgpu::backend::{Backend, CpuBackend};
use rnn_wgpu::nn::model::ModelConfig;
use rnn_wgpu::ops::cell::Cell;
use rnn_wgpu::train::dist::{Collective, ThreadGroup, ThreadRank};
use rnn_wgpu::train::tasks::TaskSpec;
use rnn_wgpu::train::{Bptt, TrainConfig, Trainer};

fn config(cell: Cell, bptt: Bptt, dropout: f32) -> TrainConfig {
    let mut model = ModelConfig::new(cell, 12);
    model.layers = 2;
    model.dropout = dropout;
    let mut c = TrainConfig::new(TaskSpec::add(2), model);
    c.batch = 7; // shares of 4 and 3 rows, or 3, 2, 2
    c.steps = 40;
    c.bptt = bptt;
    c.eval_problems = 16;
    c
}

/// Per-step losses and the final parameters of a run of `steps` steps.
struct Run {
    losses: Vec<f64>,
    params: Vec<f64>,
}

fn train_alone<B: Backend>(b: B, c: &TrainConfig, steps: usize) -> Run {
    let mut t = Trainer::new(b, c.clone()).unwrap();
    let losses = (0..steps).map(|_| t.train_step().unwrap().loss).collect();
    Run {
        losses,
        params: t.read_params().unwrap(),
    }
}

/// `run(rank)` on each of `n` ranks, each in its own thread (a wait on the
/// others fails after `timeout`), the results in rank order.
fn on_ranks<T: Send>(n: usize, timeout: Duration, run: impl Fn(ThreadRank) -> T + Sync) -> Vec<T> {
    let ranks = ThreadGroup::new(n, timeout);
    std::thread::scope(|s| {
        let handles: Vec<_> = ranks
            .into_iter()
            .map(|rank| {
                let run = &run;
                s.spawn(move || run(rank))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Every rank's run, each rank a thread with a backend from `backend`.
fn train_ranks<B: Backend + Send + 'static>(
    n: usize,
    backend: impl Fn() -> B + Sync,
    c: &TrainConfig,
    steps: usize,
) -> Vec<Run> {
    train_ranks_with(n, backend, c, steps, true)
}

/// [`train_ranks`] with the sum over ranks overlapping the backward or not.
fn train_ranks_with<B: Backend + Send + 'static>(
    n: usize,
    backend: impl Fn() -> B + Sync,
    c: &TrainConfig,
    steps: usize,
    overlap: bool,
) -> Vec<Run> {
    on_ranks(n, Duration::from_secs(120), |rank| {
        let comm: Arc<dyn Collective> = Arc::new(rank);
        let mut t = Trainer::data_parallel(backend(), c.clone(), comm).unwrap();
        t.set_overlap(overlap);
        assert_eq!(t.world_size(), n);
        let losses = (0..steps).map(|_| t.train_step().unwrap().loss).collect();
        t.check_replicas().unwrap();
        Run {
            losses,
            params: t.read_params().unwrap(),
        }
    })
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-30)
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_matches_one_process(alone: &Run, ranks: &[Run], what: &str) {
    for (r, run) in ranks.iter().enumerate() {
        assert_eq!(
            bits(&run.params),
            bits(&ranks[0].params),
            "{what}: rank {r}'s parameters differ from rank 0's"
        );
        assert_eq!(
            bits(&run.losses),
            bits(&ranks[0].losses),
            "{what}: rank {r}'s losses"
        );
    }
    let (a, d) = (
        alone.losses.last().unwrap(),
        ranks[0].losses.last().unwrap(),
    );
    assert!(
        rel(*a, *d) < 1e-4,
        "{what}: final loss {d} with {} ranks, {a} alone",
        ranks.len()
    );
    let worst = alone
        .params
        .iter()
        .zip(&ranks[0].params)
        .map(|(a, d)| (a - d).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-3, "{what}: parameters differ by up to {worst}");
}

#[test]
fn ranks_train_what_one_process_trains() {
    let steps = 40;
    for (cell, bptt, dropout) in [
        (Cell::Lstm, Bptt::Full, 0.25),
        (Cell::Gru, Bptt::Truncated { k1: 3, k2: 5 }, 0.0),
    ] {
        let c = config(cell, bptt, dropout);
        let alone = train_alone(CpuBackend::<f64>::new(), &c, steps);
        for n in [2, 3] {
            let ranks = train_ranks(n, CpuBackend::<f64>::new, &c, steps);
            assert_matches_one_process(&alone, &ranks, &format!("{cell:?} f64, {n} ranks"));
        }
        // f32: the same within f32 rounding, and bitwise repeatable for a given N.
        let alone = train_alone(CpuBackend::<f32>::new(), &c, steps);
        let a = train_ranks(2, CpuBackend::<f32>::new, &c, steps);
        let b = train_ranks(2, CpuBackend::<f32>::new, &c, steps);
        assert_eq!(
            bits(&a[0].params),
            bits(&b[0].params),
            "{cell:?}: not repeatable"
        );
        let (x, y) = (alone.losses.last().unwrap(), a[0].losses.last().unwrap());
        assert!(
            rel(*x, *y) < 1e-3,
            "{cell:?} f32: final loss {y} with 2 ranks, {x} alone"
        );
    }
}

/// A variant stack (an LSTM with peepholes and a projection, highway
/// connections) trains over ranks as one process does: its extra parameters
/// are in the layers' ranges the overlapped sum sends.
#[test]
fn variant_stacks_train_over_ranks_as_alone() {
    let mut c = config(Cell::Lstm, Bptt::Full, 0.0);
    c.model.variant = rnn_wgpu::ops::cell::Variant {
        peepholes: true,
        proj_size: 5,
        ..Default::default()
    };
    c.model.skip = rnn_wgpu::ops::skip::Skip::Highway;
    let alone = train_alone(CpuBackend::<f64>::new(), &c, 20);
    let ranks = train_ranks(2, CpuBackend::<f64>::new, &c, 20);
    assert_matches_one_process(&alone, &ranks, "variant stack f64, 2 ranks");
}

#[test]
fn ranks_on_the_gpu_train_what_one_gpu_trains() {
    let gpu = gpu_or_skip!();
    let c = config(Cell::Lstm, Bptt::Full, 0.25);
    let steps = 6;
    let alone = train_alone(gpu.clone(), &c, steps);
    let ranks = train_ranks(2, || gpu.clone(), &c, steps);
    for r in &ranks {
        assert_eq!(bits(&r.params), bits(&ranks[0].params));
    }
    // The overlapped sum reads each bucket back while later work runs.
    let off = train_ranks_with(2, || gpu.clone(), &c, steps, false);
    assert_eq!(
        bits(&off[0].params),
        bits(&ranks[0].params),
        "overlapped and not"
    );
    let (x, y) = (
        alone.losses.last().unwrap(),
        ranks[0].losses.last().unwrap(),
    );
    assert!(
        rel(*x, *y) < 1e-4,
        "final loss {y} with 2 GPU ranks, {x} alone"
    );
}

#[test]
fn a_checkpoint_resumes_with_another_number_of_ranks() {
    let dir = common::Scratch::new("dp-resume");
    let path = dir.path("run.safetensors");
    let c = config(Cell::Gru, Bptt::Full, 0.0);
    // 10 steps with 3 ranks, saved by rank 0, then 10 more with 2 ranks,
    // against the same 10 more alone from the same checkpoint.
    on_ranks(3, Duration::from_secs(120), |rank| {
        let comm: Arc<dyn Collective> = Arc::new(rank);
        let mut t = Trainer::data_parallel(CpuBackend::<f64>::new(), c.clone(), comm).unwrap();
        for _ in 0..10 {
            t.train_step().unwrap();
        }
        if t.rank() == 0 {
            t.save(&path).unwrap();
        }
    });
    let resumed = on_ranks(2, Duration::from_secs(120), |rank| {
        let comm: Arc<dyn Collective> = Arc::new(rank);
        let mut t = Trainer::load_data_parallel(CpuBackend::<f64>::new(), &path, comm).unwrap();
        assert_eq!(t.step(), 10);
        for _ in 0..10 {
            t.train_step().unwrap();
        }
        t.read_params().unwrap()
    });
    let mut alone = Trainer::load(CpuBackend::<f64>::new(), &path).unwrap();
    for _ in 0..10 {
        alone.train_step().unwrap();
    }
    let alone = alone.read_params().unwrap();
    assert_eq!(bits(&resumed[0]), bits(&resumed[1]));
    let worst = alone
        .iter()
        .zip(&resumed[0])
        .map(|(a, d)| (a - d).abs())
        .fold(0.0, f64::max);
    assert!(
        worst < 1e-9,
        "resumed with 2 ranks: parameters differ by {worst}"
    );
}

#[test]
fn a_batch_smaller_than_the_group_is_refused() {
    let mut c = config(
        Cell::Rnn(rnn_wgpu::ops::cell::Nonlinearity::Tanh),
        Bptt::Full,
        0.0,
    );
    c.batch = 2;
    let ranks = ThreadGroup::new(3, Duration::from_secs(5));
    let comm: Arc<dyn Collective> = Arc::new(ranks.into_iter().next().unwrap());
    let err = Trainer::data_parallel(CpuBackend::<f32>::new(), c, comm)
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 rows cannot be shared by 3 ranks"), "{err}");
}

/// Ranks that would not sum the same things stop before the first step,
/// with an error naming the rank and what differs.
#[test]
fn ranks_that_differ_are_refused_before_the_first_step() {
    fn first_step_errors(edit: impl Fn(usize, &mut TrainConfig, &mut bool) + Sync) -> Vec<String> {
        on_ranks(2, Duration::from_secs(60), |rank| {
            let r = rank.rank();
            let mut c = config(Cell::Gru, Bptt::Full, 0.0);
            let mut overlap = true;
            edit(r, &mut c, &mut overlap);
            let comm: Arc<dyn Collective> = Arc::new(rank);
            let mut t = Trainer::data_parallel(CpuBackend::<f32>::new(), c, comm).unwrap();
            t.set_overlap(overlap);
            t.train_step().unwrap_err().to_string()
        })
    }
    let errs = first_step_errors(|r, c, _| c.seed = 1 + r as u64);
    assert!(
        errs.iter().all(|e| e.contains("rank 1's configuration")),
        "{errs:?}"
    );
    let errs = first_step_errors(|r, _, o| *o = r == 0);
    assert!(
        errs.iter().all(|e| e.contains("rank 1's overlap setting")),
        "{errs:?}"
    );
}

/// f16 over ranks: the ranks scale their losses alike (the scale is part of
/// what they agree on), skip the same overflowing steps (the sum of squares
/// is of the summed gradients), stay bit-identical, and train what one
/// process trains.
#[test]
fn f16_ranks_scale_and_skip_together() {
    use rnn_wgpu::Precision;
    use rnn_wgpu::train::LossScale;
    use rnn_wgpu::train::scale::MAX_SCALE;
    let mut c = config(Cell::Lstm, Bptt::Full, 0.0);
    c.precision = Precision::F16;
    let steps = 16;
    let scale = LossScale {
        scale: MAX_SCALE,
        growth_interval: 3,
        ..LossScale::default()
    };
    let mut alone = Trainer::new(CpuBackend::<f32>::new(), c.clone()).unwrap();
    alone.set_loss_scale(scale).unwrap();
    let alone_losses: Vec<f64> = (0..steps)
        .map(|_| alone.train_step().unwrap().loss)
        .collect();
    // Per rank: (loss bits, skipped windows, scale) per step, and the parameters.
    type RankRun = (Vec<(u64, usize, Option<f64>)>, Vec<f64>);
    let runs: Vec<RankRun> = on_ranks(2, Duration::from_secs(120), |rank| {
        let comm: Arc<dyn Collective> = Arc::new(rank);
        let mut t = Trainer::data_parallel(CpuBackend::<f32>::new(), c.clone(), comm).unwrap();
        t.set_loss_scale(scale).unwrap();
        let reports = (0..steps)
            .map(|_| {
                let r = t.train_step().unwrap();
                (r.loss.to_bits(), r.skipped, r.loss_scale)
            })
            .collect();
        t.check_replicas().unwrap();
        (reports, t.read_params().unwrap())
    });
    assert_eq!(runs[0].0, runs[1].0, "the ranks' reports");
    assert_eq!(bits(&runs[0].1), bits(&runs[1].1), "the ranks' parameters");
    let skips = runs[0].0.iter().filter(|r| r.1 > 0).count();
    assert!(skips >= 2, "2^24 overflows: {skips} skipped steps");
    let last = f64::from_bits(runs[0].0[steps - 1].0);
    let want = alone_losses[steps - 1];
    assert!(
        rel(last, want) < 2e-2,
        "final loss {last} over 2 ranks, {want} alone"
    );
    // A rank with another loss scale is refused before the first step.
    let errs = on_ranks(2, Duration::from_secs(60), |rank| {
        let r = rank.rank();
        let comm: Arc<dyn Collective> = Arc::new(rank);
        let mut t = Trainer::data_parallel(CpuBackend::<f32>::new(), c.clone(), comm).unwrap();
        if r == 1 {
            t.set_loss_scale(scale).unwrap();
        }
        t.train_step().unwrap_err().to_string()
    });
    assert!(
        errs.iter().all(|e| e.contains("rank 1's configuration")),
        "{errs:?}"
    );
}
