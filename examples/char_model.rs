//! A character-level model of a text file, trained step by step with the library's pieces
//! (forward, backward, gradient norm, clipped Adam: one submission and one readback per
//! step on a GPU), then sampled token by token.
//!
//!     cargo run --release --example char_model -- FILE [STEPS] [auto|gpu|cpu]

use rnn_wgpu::Error;
use rnn_wgpu::backend::{Backend, BackendChoice, choose};
use rnn_wgpu::nn::model::{ModelConfig, SeqModel, Train};
use rnn_wgpu::ops::{cell::Cell, optim::Optimizer, optim::UpdateSpec, reduce::ReduceOp};
use rnn_wgpu::train::sample::{SampleOptions, sample};
use rnn_wgpu::train::tasks::{Task, TaskSpec};

fn train<B: Backend>(b: B, path: &str, steps: u64) -> rnn_wgpu::Result<()> {
    let (batch, seq_len, path) = (16, 48, path.into());
    let task = Task::new(TaskSpec::Text { path, seq_len })?;
    let config = ModelConfig {
        vocab: task.vocab().len(),
        ..ModelConfig::new(Cell::Lstm, 128)
    };
    let mut model = SeqModel::new(b.clone(), config, &config.init_params(1)?)?;
    let n = model.layout().total;
    let opt = Optimizer::adam(0.005);
    let (l1, l2) = opt.state_lens(n);
    let (s1, s2, stats) = (b.zeros(&[l1])?, b.zeros(&[l2])?, b.zeros(&[8])?);
    let (shape, zeros) = ([seq_len, batch], vec![0; seq_len * batch]);
    let (tokens, targets) = (b.ints(&shape, &zeros)?, b.ints(&shape, &zeros)?);
    for step in 0..steps {
        let data = task.train_batch(1, step, batch)?; // 16 windows of the file, [T, B]
        b.write_ints(&tokens, &data.inputs)?;
        b.write_ints(&targets, &data.targets)?;
        model.zero_grads()?;
        let (_, saved) = model.forward_train(&tokens, None, Some(Train::new(1, step)))?;
        model.backward(&saved, &targets, &stats, 0)?; // loss summary into stats[0..5]
        b.reduce(ReduceOp::SumSquares, model.grads(), 0, n, &stats, 6, false)?; // Σg²
        let spec = UpdateSpec {
            n,
            step: step + 1,
            lr: 0.005,
            max_norm: Some(1.0),
            norm_idx: 6,
            loss_idx: Some(2),
            grad_scale: 1.0,
        };
        b.optim_update(&opt, &spec, model.params(), model.grads(), &s1, &s2, &stats)?;
        if step % 10 == 0 || step + 1 == steps {
            let s = b.read_f64(&stats)?; // the step's only readback
            println!("{step:>4}: loss {:.3}, |g| {:.2}", s[0], s[6].sqrt());
        }
    }
    // The start of a held-out window, continued one streaming step per character.
    let prompt = task.vocab().decode(&task.eval_batch(1, 1)?.inputs[..24]);
    let opts = SampleOptions {
        prompt: prompt.clone(),
        temperature: 0.5,
        length: 80,
        seed: 1,
    };
    println!("{prompt:?} → {:?}", sample(&mut model, &task, &opts)?);
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> rnn_wgpu::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = || Error::invalid("usage", "char_model FILE [STEPS] [auto|gpu|cpu]");
    let path = args.get(1).ok_or_else(usage)?;
    let steps = args
        .get(2)
        .map_or(Ok(300), |s| s.parse().map_err(|_| usage()))?;
    let (chosen, why) = choose(BackendChoice::parse(args.get(3).map_or("auto", |s| s))?)?;
    println!("backend: {why}");
    rnn_wgpu::with_backend!(chosen, b => train(b, path, steps))
}
