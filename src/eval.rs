//! `rnn-wgpu eval`: run a PyTorch `nn.LSTM` / `nn.GRU` / `nn.RNN` state_dict on
//! inputs from a file, forward and optionally backward, and write the results.
//!
//! File contract (other programs rely on it exactly):
//! - weights: the module's `state_dict()` saved with safetensors: for each layer
//!   `k` and direction, `weight_ih_l{k}[_reverse]` `[G·H, In]`, `weight_hh_l{k}`
//!   `[G·H, H]`, `bias_ih_l{k}` and `bias_hh_l{k}` `[G·H]`. Cell type, sizes,
//!   layers and directions are inferred from names and shapes. Beyond
//!   PyTorch's names: `weight_p_l{k}[_reverse]` `[3H]` (LSTM peepholes P_i,
//!   P_f, P_o), `weight_hr_l{k}[_reverse]` `[P, H]` (PyTorch's `proj_size`:
//!   then `weight_hh` is `[4H, P]`, and `h0`/`hn`/the output are P wide,
//!   `c0`/`cn` H) and, for layers `k ≥ 1`, `weight_t_l{k}` `[D·H, D·H]` and
//!   `bias_t_l{k}` `[D·H]` (highway connections); the options that names
//!   cannot show (coupled gates, clip, activations, residual connections)
//!   come from [`EvalOptions`].
//! - inputs: `input` `[T, B, I]`; optional `h0`, `c0` `[L·D, B, H]`, `lengths`
//!   `[B]` (int64 or int32, each in `1..=T`); with `--backward`: optional
//!   `grad_output` `[T, B, D·H]`, `grad_hn`, `grad_cn` (absent ones are zero).
//! - output: `output`, `hn`, `cn` (LSTM); with `--backward` also `grad_input`,
//!   `grad_h0` / `grad_c0` (when h0 / c0 were given) and `grad.<name>` for every
//!   parameter: the gradients of `Σ output⊙grad_output + Σ hn⊙grad_hn + Σ cn⊙grad_cn`.
//!   Written as f32, atomically.

use std::path::{Path, PathBuf};

use crate::backend::{BackendChoice, choose};
use crate::error::{Error, Result};
use crate::io::{HostTensor, TensorMap, flat_params, read_safetensors, write_safetensors};
use crate::nn::RnnConfig;
use crate::nn::StepOrder;
use crate::nn::case::{RnnCaseData, RnnResults, run_case_at};
use crate::nn::rnn::check_lengths;
use crate::ops::cell::{Act, Activations, Cell, Nonlinearity, Variant};
use crate::ops::skip::Skip;
use crate::precision::Precision;

/// Arguments of `rnn-wgpu eval`.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The state_dict file.
    pub weights: PathBuf,
    /// The inputs file.
    pub inputs: PathBuf,
    /// Where to write the results.
    pub out: PathBuf,
    /// Which backend computes.
    pub backend: BackendChoice,
    /// Also run the backward pass.
    pub backward: bool,
    /// For `nn.RNN` weights: the nonlinearity (tanh when `None`).
    pub nonlinearity: Option<Nonlinearity>,
    /// The cell's variant: coupled gates, clip and activations as given;
    /// peepholes are inferred from `weight_p_l{k}` (the field is ignored).
    pub variant: Variant,
    /// ONNX's activation list (`[f, g, h]` for an LSTM, `[f, g]` for a
    /// GRU), replacing `variant.activations` when given.
    pub activations: Option<Vec<Act>>,
    /// Residual connections between the layers (highway connections are
    /// inferred from `weight_t_l{k}`).
    pub residual: bool,
    /// Storage precision (f32, or 16-bit storage with f32 arithmetic).
    pub precision: Precision,
}

fn fmt_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::format(path, msg)
}

fn matrix<'a>(w: &'a TensorMap, path: &Path, name: &str) -> Result<&'a HostTensor> {
    match w.get(name) {
        Some(t) if t.shape.len() == 2 => Ok(t),
        Some(t) => Err(fmt_err(
            path,
            format!("{name} has shape {:?}; expected a matrix", t.shape),
        )),
        None => Err(fmt_err(
            path,
            format!("{name} is missing: not an nn.RNN / nn.LSTM / nn.GRU state_dict"),
        )),
    }
}

/// Infers the stack from a state_dict's names and shapes, and checks that every
/// tensor is there with the right shape and nothing else is.
pub fn infer_config(weights: &TensorMap, path: &Path, opts: &EvalOptions) -> Result<RnnConfig> {
    let nonlinearity = opts.nonlinearity;
    let whh = matrix(weights, path, "weight_hh_l0")?;
    let wih = matrix(weights, path, "weight_ih_l0")?;
    // A projection (PyTorch's proj_size): weight_hr_l0 [P, H], and W_hh [4H, P].
    let proj = match weights.get("weight_hr_l0") {
        Some(_) => Some(matrix(weights, path, "weight_hr_l0")?.shape.clone()),
        None => None,
    };
    let (gh, h) = match &proj {
        Some(hr) => (whh.shape[0], hr[1]),
        None => (whh.shape[0], whh.shape[1]),
    };
    if let Some(hr) = &proj
        && (gh != 4 * h || whh.shape[1] != hr[0])
    {
        return Err(fmt_err(
            path,
            format!(
                "weight_hr_l0 has shape {hr:?} and weight_hh_l0 {:?}: an LSTM with a projection \
                 has weight_hh [4H, P] and weight_hr [P, H]",
                whh.shape
            ),
        ));
    }
    if h == 0 || gh % h != 0 || ![1, 3, 4].contains(&(gh / h)) {
        return Err(fmt_err(
            path,
            format!(
                "weight_hh_l0 has shape {:?}: its rows must be 1, 3 or 4 times its columns \
                 (RNN, GRU, LSTM)",
                whh.shape
            ),
        ));
    }
    let cell = match (gh / h, nonlinearity) {
        (4, None) => Cell::Lstm,
        (3, None) => Cell::Gru,
        (1, n) => Cell::Rnn(n.unwrap_or(Nonlinearity::Tanh)),
        (g, Some(_)) => {
            return Err(Error::invalid(
                "--nonlinearity",
                format!(
                    "applies to nn.RNN weights only; these are {}",
                    if g == 4 { "an LSTM" } else { "a GRU" }
                ),
            ));
        }
        _ => return Err(fmt_err(path, "unrecognised gate count")),
    };
    let mut layers = 0;
    while weights.contains_key(&format!("weight_ih_l{layers}"))
        || weights.contains_key(&format!("weight_hh_l{layers}"))
    {
        layers += 1;
    }
    let bidirectional = weights.keys().any(|k| k.ends_with("_reverse"));
    let highway = weights.contains_key("weight_t_l1");
    let skip = match (highway, opts.residual) {
        (true, true) => {
            return Err(Error::invalid(
                "--residual",
                "the weights hold highway gates (weight_t_l1): a stack has one kind of skip connection",
            ));
        }
        (true, false) => Skip::Highway,
        (false, true) => Skip::Residual,
        (false, false) => Skip::None,
    };
    let variant = Variant {
        peepholes: weights.contains_key("weight_p_l0"),
        proj_size: proj.as_ref().map_or(0, |hr| hr[0]),
        activations: match &opts.activations {
            Some(list) => Activations::from_list(cell, list)?,
            None => opts.variant.activations,
        },
        ..opts.variant
    };
    let config = RnnConfig::new(cell, wih.shape[1], h)
        .variant(variant)
        .layers(layers)
        .bidirectional(bidirectional)
        .skip(skip);
    // Name the flags that set what the names cannot show.
    config.validate().map_err(|e| match e {
        Error::InvalidArgument { arg, reason } => Error::InvalidArgument {
            arg: match arg.as_str() {
                "coupled" | "reset_before" | "cell_clip" | "activations" => {
                    format!("--{}", arg.replace('_', "-"))
                }
                "skip" => "--residual".into(),
                _ => arg,
            },
            reason,
        },
        e => e,
    })?;
    let layout = config.layout();
    for e in &layout.entries {
        let letters = if e.name.starts_with("weight_ih") {
            "[G·H, In]"
        } else if e.name.starts_with("weight_hh") {
            if proj.is_some() {
                "[4H, P]"
            } else {
                "[G·H, H]"
            }
        } else if e.name.starts_with("weight_hr") {
            "[P, H]"
        } else if e.name.starts_with("weight_p") {
            "[3H]"
        } else if e.name.starts_with("weight_t") {
            "[D·H, D·H]"
        } else if e.name.starts_with("bias_t") {
            "[D·H]"
        } else {
            "[G·H]"
        };
        match weights.get(&e.name) {
            None => {
                return Err(fmt_err(
                    path,
                    format!(
                        "{} is missing (a {}-layer{} {} needs it; models built with bias=False \
                         are not supported)",
                        e.name,
                        layers,
                        if bidirectional { " bidirectional" } else { "" },
                        cell.name()
                    ),
                ));
            }
            Some(t) if t.shape != e.shape => {
                return Err(fmt_err(
                    path,
                    format!(
                        "{}: expected shape {letters} = {:?}, got {:?}",
                        e.name, e.shape, t.shape
                    ),
                ));
            }
            // (The values, and so their dtype, are read once by `load`.)
            Some(_) => {}
        }
    }
    if let Some(extra) = weights.keys().find(|k| layout.get(k).is_none()) {
        return Err(fmt_err(
            path,
            format!("unexpected tensor {extra:?}: not a parameter of this stack"),
        ));
    }
    Ok(config)
}

const INPUT_NAMES: [&str; 7] = [
    "input",
    "h0",
    "c0",
    "lengths",
    "grad_output",
    "grad_hn",
    "grad_cn",
];

/// Reads and checks the inputs file against `config`.
pub fn read_inputs(
    inputs: &TensorMap,
    path: &Path,
    config: &RnnConfig,
    backward: bool,
) -> Result<RnnCaseData> {
    if let Some(extra) = inputs.keys().find(|k| !INPUT_NAMES.contains(&k.as_str())) {
        return Err(fmt_err(
            path,
            format!(
                "unexpected tensor {extra:?}; expected {}",
                INPUT_NAMES.join(", ")
            ),
        ));
    }
    let x = inputs
        .get("input")
        .ok_or_else(|| fmt_err(path, "the tensor \"input\" [T, B, I] is missing"))?;
    if x.shape.len() != 3 || x.shape[2] != config.input_size || x.shape[0] == 0 || x.shape[1] == 0 {
        return Err(Error::shape(
            "input",
            format!("[T, B, I] with T, B >= 1 and I = {}", config.input_size),
            &x.shape,
        ));
    }
    let (steps, batch) = (x.shape[0], x.shape[1]);
    let state = vec![
        config.num_layers * config.directions(),
        batch,
        config.hidden_size,
    ];
    // h is P wide with a projection.
    let hstate = vec![state[0], batch, config.state_size()];
    let h_letters = if hstate == state {
        "[L·D, B, H]"
    } else {
        "[L·D, B, P]"
    };
    let lstm = config.cell.has_cell_state();
    let get = |name: &str, want: &[usize], letters: &str| -> Result<Option<Vec<f64>>> {
        match inputs.get(name) {
            None => Ok(None),
            Some(t) if t.shape != want => Err(Error::shape(
                name,
                format!("{letters} = {want:?}"),
                &t.shape,
            )),
            Some(t) => Ok(Some(t.floats(name)?)),
        }
    };
    let no_cell_state = |name: &str| {
        Error::invalid(
            name,
            format!(
                "is given, but only an LSTM has a cell state; the weights are {}",
                config.cell.name()
            ),
        )
    };
    if !lstm && inputs.contains_key("c0") {
        return Err(no_cell_state("c0"));
    }
    if backward && !lstm && inputs.contains_key("grad_cn") {
        return Err(no_cell_state("grad_cn"));
    }
    let lengths = match inputs.get("lengths") {
        None => None,
        Some(t) => {
            if t.shape != [batch] {
                return Err(Error::shape(
                    "lengths",
                    format!("[B] = [{batch}]"),
                    &t.shape,
                ));
            }
            let v = t.ints("lengths")?;
            let v: Vec<i32> = v
                .iter()
                .map(|&l| i32::try_from(l).unwrap_or(i32::MAX))
                .collect();
            check_lengths(&v, batch, steps)?;
            Some(v)
        }
    };
    let out_shape = [steps, batch, config.output_size()];
    Ok(RnnCaseData {
        steps,
        batch,
        params: Vec::new(),
        x: x.floats("input")?,
        h0: get("h0", &hstate, h_letters)?,
        c0: get("c0", &state, "[L·D, B, H]")?,
        lengths,
        grad_output: if backward {
            get("grad_output", &out_shape, "[T, B, D·H]")?
        } else {
            None
        },
        grad_hn: if backward {
            get("grad_hn", &hstate, h_letters)?
        } else {
            None
        },
        grad_cn: if backward {
            get("grad_cn", &state, "[L·D, B, H]")?
        } else {
            None
        },
    })
}

/// The output file's tensors.
pub fn output_tensors(
    config: &RnnConfig,
    data: &RnnCaseData,
    r: &RnnResults,
    backward: bool,
) -> TensorMap {
    let state = [
        config.num_layers * config.directions(),
        data.batch,
        config.hidden_size,
    ];
    let hstate = [state[0], data.batch, config.state_size()];
    let mut m = TensorMap::new();
    let mut put = |name: &str, shape: &[usize], v: &[f64]| {
        m.insert(name.to_string(), HostTensor::f32_from_f64(shape, v));
    };
    put(
        "output",
        &[data.steps, data.batch, config.output_size()],
        &r.output,
    );
    put("hn", &hstate, &r.hn);
    if config.cell.has_cell_state() {
        put("cn", &state, &r.cn);
    }
    if backward {
        put(
            "grad_input",
            &[data.steps, data.batch, config.input_size],
            &r.grad_input,
        );
        if data.h0.is_some() {
            put("grad_h0", &hstate, &r.grad_h0);
        }
        if data.c0.is_some() {
            put("grad_c0", &state, &r.grad_c0);
        }
        for e in &config.layout().entries {
            put(
                &format!("grad.{}", e.name),
                &e.shape,
                &r.grad_params[e.range()],
            );
        }
    }
    m
}

/// Reads both files and checks them; returns the stack and the run's data.
pub fn load(opts: &EvalOptions) -> Result<(RnnConfig, RnnCaseData)> {
    let weights = read_safetensors(&opts.weights)?;
    let config = infer_config(&weights, &opts.weights, opts)?;
    let inputs = read_safetensors(&opts.inputs)?;
    let mut data = read_inputs(&inputs, &opts.inputs, &config, opts.backward)?;
    data.params = flat_params(&weights, &opts.weights, &config.layout())?;
    Ok((config, data))
}

/// Fails early when `path` cannot be an output file (missing directory, a directory).
pub fn check_output_path(arg: &str, path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::invalid(
            arg,
            format!("{} is a directory", path.display()),
        ));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(Error::invalid(
            arg,
            format!("directory {} does not exist", parent.display()),
        ));
    }
    Ok(())
}

/// Runs `eval`: returns a one-line summary of what was computed where.
pub fn run(opts: &EvalOptions) -> Result<String> {
    check_output_path("--out", &opts.out)?;
    let (config, data) = load(opts)?;
    let (backend, why) = choose(opts.backend)?;
    let results = crate::with_backend!(backend, b => run_case_at(
        &b,
        &config,
        &data,
        opts.backward,
        StepOrder::Auto,
        opts.precision
    ))?;
    let tensors = output_tensors(&config, &data, &results, opts.backward);
    write_safetensors(&opts.out, &tensors, None)?;
    let prec = if opts.precision.is_16bit() {
        format!(", {} storage", opts.precision)
    } else {
        String::new()
    };
    Ok(format!(
        "{}{} I={} H={} L={}{}{}, T={} B={}{}: {} tensors written to {} ({why}{prec})",
        config.cell.name(),
        config.variant.tag(config.cell),
        config.input_size,
        config.hidden_size,
        config.num_layers,
        if config.bidirectional {
            " bidirectional"
        } else {
            ""
        },
        config.skip.tag(),
        data.steps,
        data.batch,
        if opts.backward {
            ", forward and backward"
        } else {
            ", forward"
        },
        tensors.len(),
        opts.out.display(),
    ))
}
