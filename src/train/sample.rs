//! Generating text (or answers) from a trained model, one token at a time.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::tasks::Task;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nn::dense::argmax;
use crate::nn::model::SeqModel;
use crate::real::Real;

/// How to sample.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleOptions {
    /// Text the model reads first.
    pub prompt: String,
    /// 0 for greedy decoding; otherwise softmax(logits / temperature).
    pub temperature: f32,
    /// Most tokens to generate.
    pub length: usize,
    /// Seed of the sampling generator.
    pub seed: u64,
}

/// Generates up to `opts.length` tokens after the prompt. For `copy` and `add`
/// generation stops at the end-of-answer symbol, for `xml` at the end of the
/// document ([`Task::end_symbol`]), which is not returned.
pub fn sample<B: Backend>(
    model: &mut SeqModel<B>,
    task: &Task,
    opts: &SampleOptions,
) -> Result<String> {
    if opts.prompt.is_empty() {
        return Err(Error::invalid("prompt", "is empty"));
    }
    if !(opts.temperature >= 0.0 && opts.temperature.is_finite()) {
        return Err(Error::invalid(
            "temperature",
            format!("{} must be a finite number >= 0", opts.temperature),
        ));
    }
    let vocab = task.vocab();
    let ids = vocab.encode("prompt", &opts.prompt)?;
    let b = model.backend().clone();
    let v = model.config().vocab;
    let mut r = ChaCha8Rng::seed_from_u64(opts.seed);
    let end = task.end_symbol().and_then(|c| vocab.id(c));
    // The prompt in one forward, then one streaming step per generated token:
    // the state stays on the device, only the logits row is read back.
    let tokens = b.ints(&[ids.len(), 1], &ids)?;
    let mut out = model.forward(&tokens, None)?;
    let mut last = (ids.len() - 1) * v;
    let one = b.ints(&[1], &[0])?;
    let mut generated = Vec::new();
    for _ in 0..opts.length {
        let logits = b.read(&out.logits)?;
        let row: Vec<f64> = logits[last..last + v].iter().map(|x| x.f64()).collect();
        if let Some(bad) = row.iter().find(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                what: format!(
                    "logit after {} generated tokens (are the parameters intact?)",
                    generated.len()
                ),
                value: *bad,
            });
        }
        let next = pick(&row, opts.temperature, &mut r) as i32;
        if Some(next) == end {
            break;
        }
        generated.push(next);
        b.write_ints(&one, &[next])?;
        out = model.step(&one, Some(&out.state))?;
        last = 0;
    }
    Ok(vocab.decode(&generated))
}

/// Argmax at temperature 0, else a draw from softmax(row / temperature).
fn pick(row: &[f64], temperature: f32, r: &mut ChaCha8Rng) -> usize {
    if temperature == 0.0 {
        return argmax(row);
    }
    let t = temperature as f64;
    let m = row.iter().copied().fold(f64::MIN, f64::max);
    let w: Vec<f64> = row.iter().map(|x| ((x - m) / t).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut u = r.random_range(0.0..total);
    for (i, wi) in w.iter().enumerate() {
        if u < *wi {
            return i;
        }
        u -= wi;
    }
    w.len() - 1
}
