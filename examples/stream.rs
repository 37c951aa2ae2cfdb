//! Streaming inference: three sensors send one frame each per tick; a
//! two-layer LSTM advances its state (kept on the device) one step per tick,
//! and the application reads an output back only every 50 ticks. At the end
//! the streamed outputs are checked against one forward over the whole
//! recording, which must agree to rounding.
//!
//!     cargo run --release --example stream [-- auto|gpu|cpu]

use rnn_wgpu::backend::{Backend, BackendChoice, choose};
use rnn_wgpu::nn::{Rnn, RnnConfig, State};
use rnn_wgpu::ops::cell::Cell;
use rnn_wgpu::{Error, Real};

const SENSORS: usize = 3; // B: independent streams, one batch row each
const CHANNELS: usize = 2; // I: values per frame
const TICKS: usize = 200; // T

/// The frame of every sensor at tick `t`: a noisy sine and cosine, each
/// sensor at its own frequency.
fn frame(t: usize) -> Vec<f32> {
    (0..SENSORS)
        .flat_map(|s| {
            let phase = t as f32 * 0.05 * (s + 1) as f32;
            let noise = ((t * 7919 + s * 104_729) % 1000) as f32 / 1000.0 - 0.5;
            [phase.sin() + 0.1 * noise, phase.cos()]
        })
        .collect()
}

fn stream<B: Backend>(b: B) -> rnn_wgpu::Result<()> {
    let cfg = RnnConfig::new(Cell::Lstm, CHANNELS, 32).layers(2);
    let mut lstm = Rnn::new(b.clone(), cfg, 2024)?;
    let mut state: Option<State<B>> = None; // zeros until the first step
    let mut streamed = Vec::new();
    for t in 0..TICKS {
        let x = b.tensor_f32(&[SENSORS, CHANNELS], &frame(t))?; // [B, I]
        let (y, next) = lstm.step(&x, state.as_ref())?; // y [B, H]; no readback
        state = Some(next);
        streamed.push(y);
        if t % 50 == 49 {
            let y = b.read_f64(&streamed[t])?;
            println!("tick {t:>3}: sensor 0 → {:+.4} {:+.4} …", y[0], y[1]);
        }
    }
    // The same recording as one sequence [T, B, I].
    let all: Vec<f32> = (0..TICKS).flat_map(frame).collect();
    let x = b.tensor_f32(&[TICKS, SENSORS, CHANNELS], &all)?;
    let whole = b.read_f64(&lstm.forward(&x, None, None, None)?.output)?;
    let step_rows: Vec<&B::Tensor> = streamed.iter().collect();
    let streamed: Vec<f64> = b
        .read_many(&step_rows)?
        .concat()
        .iter()
        .map(|v| v.f64())
        .collect();
    let worst = whole
        .iter()
        .zip(&streamed)
        .map(|(w, s)| (w - s).abs())
        .fold(0.0, f64::max);
    println!(
        "{TICKS} ticks × {SENSORS} sensors: largest difference from the whole-sequence forward {worst:.2e}"
    );
    if worst > 1e-4 {
        return Err(Error::invalid(
            "stream",
            format!("streamed outputs differ by {worst:e}"),
        ));
    }
    Ok(())
}

fn main() {
    let run = || -> rnn_wgpu::Result<()> {
        let arg = std::env::args().nth(1);
        let (chosen, why) = choose(BackendChoice::parse(arg.as_deref().unwrap_or("auto"))?)?;
        println!("backend: {why}");
        rnn_wgpu::with_backend!(chosen, b => stream(b))
    };
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
