//! Checkpoints: one safetensors file holding the model's parameters under
//! PyTorch-compatible names (`rnn.weight_ih_l0` … are an `nn.LSTM`/`nn.GRU`/
//! `nn.RNN` state_dict after stripping `rnn.`), the optimizer state
//! (`optimizer.<state>.<parameter>`), and in the metadata the run's
//! configuration, vocabulary, counters and curves — everything `--resume`
//! needs to continue the identical trajectory. Written atomically.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::dist::Collective;
use super::tasks::{Task, Vocab};
use super::{EvalReport, HistoryPoint, LossScale, TrainConfig, Trainer};
use crate::backend::{Backend, host_vec};
use crate::error::{Error, Result};
use crate::io::{
    HostTensor, TensorMap, flat_params, named_floats, parse_safetensors, write_safetensors,
};
use crate::nn::model::SeqModel;
use crate::precision::Precision;
use crate::real::Real;

/// Points of the loss history a checkpoint keeps (evenly thinned beyond
/// this, so the metadata stays small however long the run).
pub const HISTORY_KEPT: usize = 20_000;

/// At most `max` points of `h`, evenly spaced, always keeping the last.
fn thin(h: &[HistoryPoint], max: usize) -> Vec<HistoryPoint> {
    if h.len() <= max {
        return h.to_vec();
    }
    let stride = h.len().div_ceil(max);
    let mut out: Vec<HistoryPoint> = h.iter().step_by(stride).copied().collect();
    if let (Some(last), Some(kept)) = (h.last(), out.last())
        && kept.step != last.step
    {
        out.push(*last);
    }
    out
}

/// Format tag stored in every checkpoint.
pub const FORMAT: &str = "rnn-wgpu-checkpoint/1";

/// What the metadata holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Meta {
    config: TrainConfig,
    vocab: Vocab,
    step: u64,
    updates: u64,
    skipped: u64,
    history: Vec<HistoryPoint>,
    evals: Vec<EvalReport>,
    /// Dynamic loss scaling's state (f16 runs; absent in older checkpoints).
    #[serde(default)]
    loss_scale: Option<LossScale>,
}

fn meta_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::format(path, format!("not an rnn-wgpu checkpoint: {what}"))
}

fn read_meta(path: &Path) -> Result<(TensorMap, Meta)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_meta(&bytes, path)
}

/// A checkpoint's tensors and metadata from its bytes (`path` names it in errors).
fn parse_meta(bytes: &[u8], path: &Path) -> Result<(TensorMap, Meta)> {
    if bytes.is_empty() {
        // What `train` leaves when it is killed before its first save.
        return Err(meta_err(
            path,
            "the file is empty: a run claimed this path and stopped before its first \
             save; remove it, or start a new run there with --overwrite",
        ));
    }
    let (_, header) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| meta_err(path, e))?;
    let md = header
        .metadata()
        .as_ref()
        .ok_or_else(|| meta_err(path, "no metadata"))?;
    if md.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(meta_err(path, format!("format is not {FORMAT}")));
    }
    let json = md
        .get("run")
        .ok_or_else(|| meta_err(path, "no run metadata"))?;
    let meta: Meta = serde_json::from_str(json).map_err(|e| meta_err(path, e))?;
    // Sizes come from the file: check them before anything is allocated.
    meta.config
        .model
        .validate()
        .map_err(|e| meta_err(path, format!("invalid model: {e}")))?;
    Ok((parse_safetensors(bytes, path)?, meta))
}

/// The tensor name of block `block` (of P values) of the optimizer state
/// `state` for `param`: `optimizer.<state>.<param>`, later blocks numbered.
fn state_key(state: &str, block: usize, param: &str) -> String {
    if block == 0 {
        format!("optimizer.{state}.{param}")
    } else {
        format!("optimizer.{state}.{block}.{param}")
    }
}

impl<B: Backend> Trainer<B> {
    /// Writes the run to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.idle("save")?;
        let b = &self.backend;
        let v = b.read_many(&[self.model.params(), &self.s1, &self.s2])?;
        let layout = self.model.layout();
        let mut tensors = TensorMap::new();
        let as_f32 = |x: &[B::Elem]| x.iter().map(|v| v.f64() as f32).collect::<Vec<f32>>();
        for e in &layout.entries {
            tensors.insert(
                e.name.clone(),
                HostTensor::f32(&e.shape, as_f32(&v[0][e.range()])),
            );
        }
        let n = layout.total;
        let (l1, l2) = self.config.optimizer.state_lens(n);
        let (name1, name2) = self.config.optimizer.state_names();
        for (state, len, name) in [(&v[1], l1, name1), (&v[2], l2, name2)] {
            // Each state is one or more blocks of P values, saved per parameter.
            for block in 0..len / n.max(1) {
                for e in &layout.entries {
                    let r = e.range();
                    let key = state_key(name, block, &e.name);
                    let vals = as_f32(&state[block * n + r.start..block * n + r.end]);
                    tensors.insert(key, HostTensor::f32(&e.shape, vals));
                }
            }
        }
        let meta = Meta {
            config: self.config.clone(),
            vocab: self.task.vocab().clone(),
            step: self.step,
            updates: self.updates,
            skipped: self.skipped,
            history: thin(&self.history, HISTORY_KEPT),
            evals: self.evals.clone(),
            loss_scale: self.loss_scale,
        };
        let json = serde_json::to_string(&meta)
            .map_err(|e| Error::invalid("checkpoint", format!("cannot encode metadata: {e}")))?;
        let mut md = HashMap::new();
        md.insert("format".to_string(), FORMAT.to_string());
        md.insert("run".to_string(), json);
        write_safetensors(path, &tensors, Some(md))
    }

    /// Restores a run saved by [`Trainer::save`] onto `backend`.
    pub fn load(backend: B, path: &Path) -> Result<Self> {
        let (tensors, meta) = read_meta(path)?;
        Self::restore(backend, path, tensors, meta, None)
    }

    /// [`Trainer::load`] as a rank of a data-parallel group: rank 0 reads
    /// `path` and sends it to the others, so only rank 0 needs the file.
    /// The group may have another size than the one that saved it.
    pub fn load_data_parallel(backend: B, path: &Path, comm: Arc<dyn Collective>) -> Result<Self> {
        // A failed read still takes part in the broadcast, so that no rank
        // waits for a file that never comes.
        let (mut buf, failed) = match comm.rank() {
            0 => match std::fs::read(path) {
                Ok(b) => (b, None),
                Err(e) => (Vec::new(), Some(Error::io(path, e))),
            },
            _ => (Vec::new(), None),
        };
        comm.broadcast(0, &mut buf)?;
        if let Some(e) = failed {
            return Err(e);
        }
        if buf.is_empty() && comm.rank() != 0 {
            return Err(Error::Distributed {
                rank: comm.rank(),
                message: format!("rank 0 could not read {} (or it is empty)", path.display()),
            });
        }
        let (tensors, meta) = parse_meta(&buf, path)?;
        Self::restore(backend, path, tensors, meta, Some(comm))
    }

    fn restore(
        backend: B,
        path: &Path,
        tensors: TensorMap,
        meta: Meta,
        comm: Option<Arc<dyn Collective>>,
    ) -> Result<Self> {
        let task = Task::with_vocab(meta.config.task.clone(), meta.vocab.clone())?;
        let layout = meta.config.model.layout();
        let params = flat_params(&tensors, path, &layout)?;
        let mut t = Trainer::build(backend, meta.config.clone(), task, &params, comm)?;
        let n = layout.total;
        let (l1, l2) = meta.config.optimizer.state_lens(n);
        let (name1, name2) = meta.config.optimizer.state_names();
        for (target, len, name) in [(&t.s1, l1, name1), (&t.s2, l2, name2)] {
            if len == 0 {
                continue;
            }
            let mut state = host_vec(len)?;
            for block in 0..len / n {
                for e in &layout.entries {
                    let key = state_key(name, block, &e.name);
                    state.extend(named_floats(&tensors, path, &key, &e.shape)?);
                }
            }
            let v: Vec<B::Elem> = state.iter().map(|&x| B::Elem::of(x)).collect();
            t.backend.write(target, &v)?;
        }
        t.step = meta.step;
        t.updates = meta.updates;
        t.skipped = meta.skipped;
        t.history = meta.history;
        t.evals = meta.evals;
        if t.loss_scale.is_some()
            && let Some(ls) = meta.loss_scale
        {
            t.loss_scale = Some(ls);
        }
        Ok(t)
    }
}

/// Loads only the model (for sampling): the model, the task and the run's configuration.
pub fn load_model<B: Backend>(backend: B, path: &Path) -> Result<(SeqModel<B>, Task, TrainConfig)> {
    load_model_at(backend, path, Precision::F32)
}

/// [`load_model`] computing at `precision`: the checkpoint's f32 weights
/// are the model's master parameters, and in a 16-bit mode its passes read
/// them rounded to 16 bits ([`SeqModel::with_precision`]).
pub fn load_model_at<B: Backend>(
    backend: B,
    path: &Path,
    precision: Precision,
) -> Result<(SeqModel<B>, Task, TrainConfig)> {
    let (tensors, meta) = read_meta(path)?;
    // Sampling needs the vocabulary only, not the training data.
    let task = Task::from_vocab(meta.config.task.clone(), meta.vocab.clone());
    let layout = meta.config.model.layout();
    let params = flat_params(&tensors, path, &layout)?;
    let model = SeqModel::with_precision(backend, meta.config.model, &params, precision)?;
    Ok((model, task, meta.config))
}

/// The recurrent stack of the checkpoint at `path`: its shape and its flat
/// parameters (laid out by [`crate::nn::RnnConfig::layout`]), for export.
pub fn load_stack(path: &Path) -> Result<(crate::nn::RnnConfig, Vec<f64>)> {
    let (tensors, meta) = read_meta(path)?;
    let model = meta.config.model;
    let layout = model.layout();
    let params = flat_params(&tensors, path, &layout)?;
    let rnn = model.rnn();
    let start = layout
        .get("rnn.weight_ih_l0")
        .map(|e| e.offset)
        .ok_or_else(|| Error::format(path, "holds no recurrent stack (rnn.weight_ih_l0)"))?;
    let end = start + rnn.layout().total;
    Ok((rnn, params[start..end].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_ends_and_bounds_the_length() {
        let h: Vec<HistoryPoint> = (0..100_001)
            .map(|i| HistoryPoint {
                step: i,
                loss: 0.0,
                accuracy: 0.0,
            })
            .collect();
        let t = thin(&h, HISTORY_KEPT);
        assert!(t.len() <= HISTORY_KEPT + 1);
        assert_eq!(t.first().map(|p| p.step), Some(0));
        assert_eq!(t.last().map(|p| p.step), Some(100_000));
        assert_eq!(thin(&h[..10], HISTORY_KEPT).len(), 10);
    }
}
