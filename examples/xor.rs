//! XOR with a multi-layer perceptron: the classic problem a linear model cannot
//! solve. Trains a 2-8-2 MLP (tanh hidden layer, softmax cross-entropy) with
//! Adam, and a 2-2 linear model for comparison, on the best backend.
//!
//!     cargo run --release --example xor [-- --backend cpu|gpu|auto]

use rnn_wgpu::backend::{Backend, BackendChoice, choose};
use rnn_wgpu::nn::dense::Mlp;
use rnn_wgpu::ops::activation::Activation;
use rnn_wgpu::ops::optim::{Optimizer, UpdateSpec};
use rnn_wgpu::ops::reduce::ReduceOp;

const X: [f64; 8] = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
const Y: [i32; 4] = [0, 1, 1, 0];

fn train<B: Backend>(b: &B, widths: &[usize]) -> rnn_wgpu::Result<()> {
    let mut mlp = Mlp::new(b.clone(), widths, Activation::Tanh, Activation::Identity, 5)?;
    let x = b.tensor_f64(&[4, 2], &X)?;
    let y = b.ints(&[4], &Y)?;
    let opt = Optimizer::adam(0.05);
    let n = mlp.layout().total;
    let (l1, l2) = opt.state_lens(n);
    let (s1, s2, stats) = (b.zeros(&[l1])?, b.zeros(&[l2])?, b.zeros(&[8])?);
    for step in 1..=400u64 {
        b.fill(mlp.grads(), 0, n, 0.0)?;
        mlp.classify_step(&x, &y, &stats, 0)?; // loss summary at stats[0..5]
        b.reduce(ReduceOp::SumSquares, mlp.grads(), 0, n, &stats, 6, false)?;
        let spec = UpdateSpec {
            n,
            step,
            lr: 0.05,
            max_norm: None,
            norm_idx: 6,
            loss_idx: None,
            grad_scale: 1.0,
        };
        b.optim_update(&opt, &spec, mlp.params(), mlp.grads(), &s1, &s2, &stats)?;
    }
    let (pred, summary) = mlp.evaluate(&x, &y)?;
    let right = pred.iter().zip(Y).filter(|(p, t)| **p as i32 == *t).count();
    println!(
        "{:<14} loss {:.4}  predictions {:?}  {right}/4 correct",
        format!("{widths:?}"),
        summary.mean,
        pred
    );
    Ok(())
}

fn main() -> rnn_wgpu::Result<()> {
    let arg = std::env::args().skip_while(|a| a != "--backend").nth(1);
    let choice = match arg.as_deref() {
        Some(s) => BackendChoice::parse(s)?,
        None => BackendChoice::Auto,
    };
    let (chosen, why) = choose(choice)?;
    println!("backend: {why}");
    rnn_wgpu::with_backend!(chosen, b => {
        train(&b, &[2, 8, 2])?;
        train(&b, &[2, 2])
    })
}
