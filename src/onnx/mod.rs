//! ONNX models of recurrent layers: `rnn-wgpu eval --onnx` runs a graph made
//! of `LSTM`, `GRU` and `RNN` nodes (a single node, as ONNX's operator tests
//! write them, or the graphs `torch.onnx.export` writes) on any backend.
//!
//! The graph is evaluated node by node on the host, in the order ONNX
//! requires (topological): every recurrent node runs as a one-layer stack
//! on the chosen backend (the same fused kernels and CPU twin as everything
//! else), and the shape glue between them (`Transpose`, `Reshape`, `Concat`,
//! `Squeeze`, `Unsqueeze`, `Shape`, `Gather`, `Expand`, `Constant`,
//! `ConstantOfShape`, `Slice`, `Cast`, `Identity`) is computed on the host.
//! Any other operator is an error naming the node and the operator.
//!
//! Recurrent nodes follow ONNX's operators (opset 14): gate orders `iofc`
//! (LSTM, peepholes `iof`) and `zrh` (GRU) are mapped to PyTorch's `ifgo`
//! and `rzn`; `direction` forward, reverse (the sequence is reversed on the
//! host, each row within its own length) or bidirectional; `layout` 0 and
//! 1; `clip`, `input_forget`, `linear_before_reset` and `activations`
//! (Sigmoid, Tanh, Relu; a bidirectional node whose directions differ runs
//! as two one-direction nodes) through [`Variant`]; `sequence_lens` with ONNX's
//! meaning (outputs past a sequence's end are zero, `Y_h` its state at its
//! last step).
//!
//! The protobuf types are generated from ONNX's schema (`proto/onnx.proto`,
//! `src/onnx/proto.rs`) and decoded by `prost`.

#[allow(missing_docs, clippy::all)]
pub mod proto;

mod export;
pub use export::{export_stack, write_model};

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::io::{HostData, HostTensor, TensorMap};
use crate::nn::RnnConfig;
use crate::nn::StepOrder;
use crate::nn::case::{RnnCaseData, run_case_at};
use crate::ops::cell::{Act, Activations, Cell, Nonlinearity, Variant};
use crate::precision::Precision;

use proto::tensor_proto::DataType;

/// Reads an ONNX model file.
pub fn read_model(path: &Path) -> Result<proto::ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    proto::ModelProto::decode(bytes.as_slice())
        .map_err(|e| Error::format(path, format!("not an ONNX model (protobuf): {e}")))
}

fn node_err(node: &proto::NodeProto, msg: impl std::fmt::Display) -> Error {
    let name = if node.name().is_empty() {
        "(unnamed)"
    } else {
        node.name()
    };
    Error::invalid(
        format!("ONNX node {name} ({})", node.op_type()),
        msg.to_string(),
    )
}

/// The values of an ONNX tensor (initializers, `Constant` nodes).
pub fn tensor_value(t: &proto::TensorProto) -> Result<HostTensor> {
    let name = t.name();
    let bad = |msg: String| Error::invalid(format!("ONNX tensor {name:?}"), msg);
    if t.data_location() == proto::tensor_proto::DataLocation::External {
        return Err(bad(
            "is stored outside the model (external data): not supported".into(),
        ));
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("has a negative dimension {d}"))))
        .collect::<Result<Vec<usize>>>()?;
    let n: usize = shape.iter().product();
    let raw = t.raw_data();
    let from_raw = |width: usize| -> Result<Vec<[u8; 8]>> {
        if raw.len() != n * width {
            return Err(bad(format!(
                "holds {} bytes of raw data; its shape {shape:?} needs {}",
                raw.len(),
                n * width
            )));
        }
        Ok(raw
            .chunks(width)
            .map(|c| {
                let mut b = [0u8; 8];
                b[..width].copy_from_slice(c);
                b
            })
            .collect())
    };
    let data = match DataType::try_from(t.data_type()).unwrap_or(DataType::Undefined) {
        DataType::Float => HostData::F32(if raw.is_empty() {
            t.float_data.clone()
        } else {
            from_raw(4)?
                .iter()
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }),
        DataType::Double => HostData::F64(if raw.is_empty() {
            t.double_data.clone()
        } else {
            from_raw(8)?
                .iter()
                .map(|b| f64::from_le_bytes(*b))
                .collect()
        }),
        DataType::Int64 => HostData::I64(if raw.is_empty() {
            t.int64_data.clone()
        } else {
            from_raw(8)?
                .iter()
                .map(|b| i64::from_le_bytes(*b))
                .collect()
        }),
        DataType::Int32 => HostData::I32(if raw.is_empty() {
            t.int32_data.clone()
        } else {
            from_raw(4)?
                .iter()
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }),
        other => {
            return Err(bad(format!(
                "has element type {other:?}; supported: float, double, int32, int64"
            )));
        }
    };
    let len = match &data {
        HostData::F32(v) => v.len(),
        HostData::F64(v) => v.len(),
        HostData::I32(v) => v.len(),
        HostData::I64(v) => v.len(),
    };
    if len != n {
        return Err(bad(format!(
            "holds {len} values; its shape {shape:?} needs {n}"
        )));
    }
    Ok(HostTensor { shape, data })
}

fn attr<'a>(node: &'a proto::NodeProto, name: &str) -> Option<&'a proto::AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

fn attr_int(node: &proto::NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i())
}

fn attr_ints(node: &proto::NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn attr_string(node: &proto::NodeProto, name: &str) -> Result<Option<String>> {
    attr(node, name)
        .map(|a| {
            String::from_utf8(a.s().to_vec())
                .map_err(|_| node_err(node, format!("attribute {name} is not UTF-8")))
        })
        .transpose()
}

/// Elements `idx` of `t` (flat indices), as a tensor of `shape`.
fn take(t: &HostTensor, shape: Vec<usize>, idx: &[usize]) -> HostTensor {
    fn pick<T: Copy>(v: &[T], idx: &[usize]) -> Vec<T> {
        idx.iter().map(|&i| v[i]).collect()
    }
    let data = match &t.data {
        HostData::F32(v) => HostData::F32(pick(v, idx)),
        HostData::F64(v) => HostData::F64(pick(v, idx)),
        HostData::I32(v) => HostData::I32(pick(v, idx)),
        HostData::I64(v) => HostData::I64(pick(v, idx)),
    };
    HostTensor { shape, data }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Every multi-index of `shape`, row-major, mapped through `f` to a flat source index.
fn gather_by(shape: &[usize], mut f: impl FnMut(&[usize]) -> usize) -> Vec<usize> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut ix = vec![0usize; shape.len()];
    for _ in 0..n {
        out.push(f(&ix));
        for d in (0..shape.len()).rev() {
            ix[d] += 1;
            if ix[d] < shape[d] {
                break;
            }
            ix[d] = 0;
        }
    }
    out
}

fn transpose(t: &HostTensor, perm: &[usize]) -> HostTensor {
    let src = strides(&t.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
    let idx = gather_by(&shape, |ix| {
        ix.iter().zip(perm).map(|(&i, &p)| i * src[p]).sum()
    });
    take(t, shape, &idx)
}

/// `parts` joined along axis `ax` (they agree on every other axis and on
/// their element type).
fn concat(parts: &[&HostTensor], ax: usize) -> Result<HostTensor> {
    let first = parts
        .first()
        .ok_or_else(|| Error::invalid("concat", "nothing to join"))?;
    let mut shape = first.shape.clone();
    shape[ax] = 0;
    for p in parts {
        let mut a = p.shape.clone();
        let mut b = first.shape.clone();
        a[ax] = 0;
        b[ax] = 0;
        if a != b || p.dtype_name() != first.dtype_name() {
            return Err(Error::invalid(
                "concat",
                "inputs differ beyond the concatenation axis",
            ));
        }
        shape[ax] += p.shape[ax];
    }
    // The parts' data one after another, then picked element by element.
    let mut all = (*first).clone();
    let mut offsets = Vec::with_capacity(parts.len());
    let mut total = 0usize;
    for p in parts {
        offsets.push(total);
        total += p.shape.iter().product::<usize>();
    }
    for p in &parts[1..] {
        match (&mut all.data, &p.data) {
            (HostData::F32(a), HostData::F32(b)) => a.extend_from_slice(b),
            (HostData::F64(a), HostData::F64(b)) => a.extend_from_slice(b),
            (HostData::I32(a), HostData::I32(b)) => a.extend_from_slice(b),
            (HostData::I64(a), HostData::I64(b)) => a.extend_from_slice(b),
            _ => {
                return Err(Error::invalid(
                    "concat",
                    "inputs of different element types",
                ));
            }
        }
    }
    let bounds: Vec<usize> = parts
        .iter()
        .scan(0, |acc, p| {
            *acc += p.shape[ax];
            Some(*acc)
        })
        .collect();
    let idx = gather_by(&shape, |ix| {
        let k = bounds.iter().position(|&b| ix[ax] < b).unwrap_or(0);
        let start = if k == 0 { 0 } else { bounds[k - 1] };
        let st = strides(&parts[k].shape);
        let local: usize = ix
            .iter()
            .enumerate()
            .map(|(d, &i)| if d == ax { i - start } else { i } * st[d])
            .sum();
        offsets[k] + local
    });
    Ok(take(&all, shape, &idx))
}

/// Index `i` of axis `ax` of `t`, the axis kept (size 1).
fn select(t: &HostTensor, ax: usize, i: usize) -> HostTensor {
    let mut shape = t.shape.clone();
    shape[ax] = 1;
    let st = strides(&t.shape);
    let idx = gather_by(&shape, |o| {
        o.iter()
            .enumerate()
            .map(|(d, &v)| if d == ax { i } else { v } * st[d])
            .sum()
    });
    take(t, shape, &idx)
}

fn ints_of(node: &proto::NodeProto, t: &HostTensor, what: &str) -> Result<Vec<i64>> {
    t.ints(what)
        .map_err(|_| node_err(node, format!("{what} must be an integer tensor")))
}

fn axis(node: &proto::NodeProto, a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if !(0..r).contains(&v) {
        return Err(node_err(
            node,
            format!("axis {a} is outside a rank-{rank} tensor"),
        ));
    }
    Ok(v as usize)
}

fn i64_tensor(shape: Vec<usize>, v: Vec<i64>) -> HostTensor {
    HostTensor {
        shape,
        data: HostData::I64(v),
    }
}

/// One of the shape-glue operators, on host tensors.
fn glue(node: &proto::NodeProto, ins: &[Option<HostTensor>]) -> Result<Vec<HostTensor>> {
    let need = |i: usize| -> Result<&HostTensor> {
        ins.get(i)
            .and_then(|t| t.as_ref())
            .ok_or_else(|| node_err(node, format!("input {i} is missing")))
    };
    let out = match node.op_type() {
        "Identity" => need(0)?.clone(),
        "Constant" => {
            if let Some(t) = attr(node, "value").and_then(|a| a.t.as_ref()) {
                tensor_value(t)?
            } else if let Some(a) = attr(node, "value_ints") {
                i64_tensor(vec![a.ints.len()], a.ints.clone())
            } else if let Some(a) = attr(node, "value_int") {
                i64_tensor(vec![], vec![a.i()])
            } else if let Some(a) = attr(node, "value_floats") {
                HostTensor::f32(&[a.floats.len()], a.floats.clone())
            } else if let Some(a) = attr(node, "value_float") {
                HostTensor::f32(&[], vec![a.f()])
            } else {
                return Err(node_err(node, "has no value this evaluator reads"));
            }
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = ints_of(node, need(0)?, "shape")?
                .iter()
                .map(|&d| d.max(0) as usize)
                .collect();
            let n = shape.iter().product();
            match attr(node, "value").and_then(|a| a.t.as_ref()) {
                Some(v) => {
                    let v = tensor_value(v)?;
                    take(&v, shape, &vec![0; n])
                }
                None => HostTensor::f32(&shape, vec![0.0; n]),
            }
        }
        "Cast" => {
            let t = need(0)?;
            let to = DataType::try_from(attr_int(node, "to").unwrap_or(0) as i32)
                .unwrap_or(DataType::Undefined);
            let shape = t.shape.clone();
            match to {
                DataType::Float => HostTensor::f32(
                    &shape,
                    match &t.data {
                        HostData::F32(v) => v.clone(),
                        HostData::F64(v) => v.iter().map(|&x| x as f32).collect(),
                        HostData::I32(v) => v.iter().map(|&x| x as f32).collect(),
                        HostData::I64(v) => v.iter().map(|&x| x as f32).collect(),
                    },
                ),
                DataType::Int64 => i64_tensor(
                    shape,
                    match &t.data {
                        HostData::F32(v) => v.iter().map(|&x| x as i64).collect(),
                        HostData::F64(v) => v.iter().map(|&x| x as i64).collect(),
                        HostData::I32(v) => v.iter().map(|&x| x as i64).collect(),
                        HostData::I64(v) => v.clone(),
                    },
                ),
                DataType::Int32 => HostTensor {
                    shape,
                    data: HostData::I32(match &t.data {
                        HostData::F32(v) => v.iter().map(|&x| x as i32).collect(),
                        HostData::F64(v) => v.iter().map(|&x| x as i32).collect(),
                        HostData::I32(v) => v.clone(),
                        HostData::I64(v) => v.iter().map(|&x| x as i32).collect(),
                    }),
                },
                other => return Err(node_err(node, format!("casts to {other:?}: not supported"))),
            }
        }
        "Shape" => {
            let t = need(0)?;
            let r = t.shape.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clampi(attr_int(node, "start").unwrap_or(0));
            let end = clampi(attr_int(node, "end").unwrap_or(r));
            let dims: Vec<i64> = t.shape[start..end.max(start)]
                .iter()
                .map(|&d| d as i64)
                .collect();
            i64_tensor(vec![dims.len()], dims)
        }
        "Transpose" => {
            let t = need(0)?;
            let perm: Vec<usize> = match attr_ints(node, "perm") {
                Some(p) => p
                    .iter()
                    .map(|&a| axis(node, a, t.shape.len()))
                    .collect::<Result<_>>()?,
                None => (0..t.shape.len()).rev().collect(),
            };
            let mut seen = perm.clone();
            seen.sort_unstable();
            if seen != (0..t.shape.len()).collect::<Vec<_>>() {
                return Err(node_err(
                    node,
                    format!("perm {perm:?} is not a permutation"),
                ));
            }
            transpose(t, &perm)
        }
        "Reshape" => {
            let t = need(0)?;
            let want = ints_of(node, need(1)?, "shape")?;
            let allowzero = attr_int(node, "allowzero").unwrap_or(0) == 1;
            let n: usize = t.shape.iter().product();
            let mut shape = Vec::with_capacity(want.len());
            let mut infer = None;
            for (i, &d) in want.iter().enumerate() {
                match d {
                    -1 if infer.is_none() => {
                        infer = Some(i);
                        shape.push(1);
                    }
                    0 if !allowzero => shape.push(*t.shape.get(i).ok_or_else(|| {
                        node_err(
                            node,
                            format!("shape {want:?} copies a dimension the input lacks"),
                        )
                    })?),
                    d if d >= 0 => shape.push(d as usize),
                    _ => return Err(node_err(node, format!("shape {want:?} is not valid"))),
                }
            }
            if let Some(i) = infer {
                let rest: usize = shape.iter().product();
                if rest == 0 || !n.is_multiple_of(rest) {
                    return Err(node_err(
                        node,
                        format!("cannot infer -1 in {want:?} for {n} values"),
                    ));
                }
                shape[i] = n / rest;
            }
            if shape.iter().product::<usize>() != n {
                return Err(node_err(
                    node,
                    format!("shape {want:?} does not hold the input's {:?}", t.shape),
                ));
            }
            HostTensor {
                shape,
                data: t.data.clone(),
            }
        }
        "Squeeze" | "Unsqueeze" => {
            let t = need(0)?;
            let axes = match ins.get(1).and_then(|x| x.as_ref()) {
                Some(a) => Some(ints_of(node, a, "axes")?),
                None => attr_ints(node, "axes"),
            };
            let mut shape = t.shape.clone();
            if node.op_type() == "Squeeze" {
                let drop: Vec<usize> = match axes {
                    Some(a) => a
                        .iter()
                        .map(|&x| axis(node, x, shape.len()))
                        .collect::<Result<_>>()?,
                    None => (0..shape.len()).filter(|&i| shape[i] == 1).collect(),
                };
                if let Some(&d) = drop.iter().find(|&&d| shape[d] != 1) {
                    return Err(node_err(
                        node,
                        format!("axis {d} has size {}, not 1", shape[d]),
                    ));
                }
                shape = (0..shape.len())
                    .filter(|i| !drop.contains(i))
                    .map(|i| shape[i])
                    .collect();
            } else {
                let a = axes.ok_or_else(|| node_err(node, "has no axes"))?;
                let rank = shape.len() + a.len();
                let mut add: Vec<usize> = a
                    .iter()
                    .map(|&x| axis(node, x, rank))
                    .collect::<Result<_>>()?;
                add.sort_unstable();
                for d in add {
                    shape.insert(d, 1);
                }
            }
            HostTensor {
                shape,
                data: t.data.clone(),
            }
        }
        "Concat" => {
            let parts: Vec<&HostTensor> = ins.iter().flatten().collect();
            let first = parts
                .first()
                .ok_or_else(|| node_err(node, "has no inputs"))?;
            let ax = axis(node, attr_int(node, "axis").unwrap_or(0), first.shape.len())?;
            concat(&parts, ax).map_err(|e| node_err(node, e))?
        }
        "Gather" => {
            let t = need(0)?;
            let ind = need(1)?;
            let ax = axis(node, attr_int(node, "axis").unwrap_or(0), t.shape.len())?;
            let dim = t.shape[ax] as i64;
            let ix: Vec<usize> = ints_of(node, ind, "indices")?
                .iter()
                .map(|&i| {
                    let v = if i < 0 { i + dim } else { i };
                    if (0..dim).contains(&v) {
                        Ok(v as usize)
                    } else {
                        Err(node_err(
                            node,
                            format!("index {i} is outside axis {ax} of size {dim}"),
                        ))
                    }
                })
                .collect::<Result<_>>()?;
            let mut shape: Vec<usize> = t.shape[..ax].to_vec();
            shape.extend(&ind.shape);
            shape.extend(&t.shape[ax + 1..]);
            let st = strides(&t.shape);
            let ir = ind.shape.len();
            let ist = strides(&ind.shape);
            let idx = gather_by(&shape, |o| {
                let flat_i: usize = (0..ir).map(|d| o[ax + d] * ist[d]).sum();
                let mut src = ix[flat_i] * st[ax];
                for d in 0..ax {
                    src += o[d] * st[d];
                }
                for d in ax + 1..t.shape.len() {
                    src += o[d - 1 + ir] * st[d];
                }
                src
            });
            take(t, shape, &idx)
        }
        "Expand" => {
            let t = need(0)?;
            let want = ints_of(node, need(1)?, "shape")?;
            let rank = want.len().max(t.shape.len());
            let pad = |s: &[usize]| {
                let mut v = vec![1usize; rank - s.len()];
                v.extend(s);
                v
            };
            let src = pad(&t.shape);
            let w = pad(&want.iter().map(|&d| d.max(0) as usize).collect::<Vec<_>>());
            let mut shape = Vec::with_capacity(rank);
            for (&a, &b) in src.iter().zip(&w) {
                if a != b && a != 1 && b != 1 {
                    return Err(node_err(
                        node,
                        format!("cannot broadcast {:?} to {want:?}", t.shape),
                    ));
                }
                shape.push(a.max(b));
            }
            let st = strides(&src);
            let idx = gather_by(&shape, |o| {
                o.iter()
                    .enumerate()
                    .map(|(d, &i)| if src[d] == 1 { 0 } else { i * st[d] })
                    .sum()
            });
            take(t, shape, &idx)
        }
        "Slice" => {
            let t = need(0)?;
            let starts = ints_of(node, need(1)?, "starts")?;
            let ends = ints_of(node, need(2)?, "ends")?;
            let rank = t.shape.len();
            let axes: Vec<usize> = match ins.get(3).and_then(|x| x.as_ref()) {
                Some(a) => ints_of(node, a, "axes")?
                    .iter()
                    .map(|&x| axis(node, x, rank))
                    .collect::<Result<_>>()?,
                None => (0..starts.len()).collect(),
            };
            let steps = match ins.get(4).and_then(|x| x.as_ref()) {
                Some(s) => ints_of(node, s, "steps")?,
                None => vec![1; starts.len()],
            };
            if starts.len() != ends.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err(node_err(
                    node,
                    "starts, ends, axes and steps differ in length",
                ));
            }
            let mut begin = vec![0i64; rank];
            let mut step = vec![1i64; rank];
            let mut shape = t.shape.clone();
            for k in 0..axes.len() {
                let (d, dim) = (axes[k], t.shape[axes[k]] as i64);
                let s = steps[k];
                if s == 0 {
                    return Err(node_err(node, "a step of 0"));
                }
                let norm = |v: i64| if v < 0 { v + dim } else { v };
                let (lo, hi) = if s > 0 { (0, dim) } else { (-1, dim - 1) };
                let b = norm(starts[k]).clamp(lo, hi);
                let e = norm(ends[k]).clamp(lo, hi);
                let n = if s > 0 {
                    (e - b + s - 1).div_euclid(s).max(0)
                } else {
                    (b - e - s - 1).div_euclid(-s).max(0)
                };
                begin[d] = b;
                step[d] = s;
                shape[d] = n as usize;
            }
            let st = strides(&t.shape);
            let idx = gather_by(&shape, |o| {
                o.iter()
                    .enumerate()
                    .map(|(d, &i)| (begin[d] + i as i64 * step[d]) as usize * st[d])
                    .sum()
            });
            take(t, shape, &idx)
        }
        other @ ("MatMul" | "Gemm" | "Add" | "Mul" | "Tanh" | "Relu" | "Sigmoid") => {
            return Err(node_err(
                node,
                format!(
                    "operator {other} is not supported: this evaluator runs recurrent nodes and \
                     their shape glue, not arithmetic (torch.onnx.export's dynamo exporter \
                     unrolls nn.RNN into per-step MatMul/Add/Tanh; export with dynamo=False)"
                ),
            ));
        }
        other => {
            return Err(node_err(
                node,
                format!(
                    "operator {other} is not supported (only LSTM, GRU, RNN and the shape glue \
                     around them: Transpose, Reshape, Concat, Squeeze, Unsqueeze, Shape, Gather, \
                     Expand, Constant, ConstantOfShape, Slice, Cast, Identity)"
                ),
            ));
        }
    };
    Ok(vec![out])
}

/// The gate permutation from ONNX's order to PyTorch's, per cell.
fn gate_order(cell: Cell) -> &'static [usize] {
    match cell {
        // ONNX i, o, f, c → i, f, g (= c), o
        Cell::Lstm => &[0, 2, 3, 1],
        // ONNX z, r, h → r, z, n (= h)
        Cell::Gru => &[1, 0, 2],
        Cell::Rnn(_) => &[0],
    }
}

/// Rows of `m` (`[G·H, cols]` flattened) with the gate blocks permuted by `order`.
fn reorder(m: &[f64], order: &[usize], h: usize, cols: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(m.len());
    for &g in order {
        out.extend_from_slice(&m[g * h * cols..(g + 1) * h * cols]);
    }
    out
}

fn act_of(node: &proto::NodeProto, name: &str) -> Result<Act> {
    Act::parse(name).map_err(|_| {
        node_err(
            node,
            format!(
                "activation {name} is not supported (the cells compute Sigmoid, Tanh and Relu)"
            ),
        )
    })
}

/// One recurrent node, run on `backend` as a one-layer stack.
fn recurrent<B: Backend>(
    backend: &B,
    node: &proto::NodeProto,
    ins: &[Option<HostTensor>],
    precision: Precision,
) -> Result<Vec<Option<HostTensor>>> {
    let op = node.op_type();
    let input = |i: usize| ins.get(i).and_then(|t| t.as_ref());
    let floats = |i: usize, what: &str| -> Result<Option<(Vec<usize>, Vec<f64>)>> {
        input(i)
            .map(|t| {
                Ok((
                    t.shape.clone(),
                    t.floats(what).map_err(|e| node_err(node, e))?,
                ))
            })
            .transpose()
    };
    let (x_shape, x) = floats(0, "X")?.ok_or_else(|| node_err(node, "input X is missing"))?;
    let (w_shape, w) = floats(1, "W")?.ok_or_else(|| node_err(node, "input W is missing"))?;
    let (r_shape, r) = floats(2, "R")?.ok_or_else(|| node_err(node, "input R is missing"))?;
    let direction = attr_string(node, "direction")?.unwrap_or_else(|| "forward".into());
    let dirs = match direction.as_str() {
        "forward" | "reverse" => 1,
        "bidirectional" => 2,
        d => {
            return Err(node_err(
                node,
                format!("direction {d:?}: expected forward, reverse or bidirectional"),
            ));
        }
    };
    let layout = attr_int(node, "layout").unwrap_or(0);
    if layout != 0 && layout != 1 {
        return Err(node_err(node, format!("layout {layout}: expected 0 or 1")));
    }
    for a in ["activation_alpha", "activation_beta"] {
        if attr(node, a).is_some() {
            return Err(node_err(
                node,
                format!(
                    "attribute {a} is not supported (it parameterizes activations beyond Sigmoid, Tanh and Relu)"
                ),
            ));
        }
    }
    let acts: Vec<Act> = attr(node, "activations")
        .map(|a| {
            a.strings
                .iter()
                .map(|s| act_of(node, &String::from_utf8_lossy(s)))
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    let per_dir = match op {
        "LSTM" => 3,
        "GRU" => 2,
        _ => 1,
    };
    if !acts.is_empty() && acts.len() != per_dir * dirs {
        return Err(node_err(
            node,
            format!(
                "{} activations given; {op} takes {per_dir} per direction",
                acts.len()
            ),
        ));
    }
    if dirs == 2 && !acts.is_empty() && acts[..per_dir] != acts[per_dir..] {
        return split_directions(backend, node, ins, per_dir, layout, precision);
    }
    let cell = match op {
        "LSTM" => Cell::Lstm,
        "GRU" => Cell::Gru,
        _ => Cell::Rnn(match acts.first() {
            None | Some(Act::Tanh) => Nonlinearity::Tanh,
            Some(Act::Relu) => Nonlinearity::Relu,
            Some(Act::Sigmoid) => Nonlinearity::Sigmoid,
        }),
    };
    let g = cell.gates();
    // W [D, G·H, I], R [D, G·H, H]
    if w_shape.len() != 3 || w_shape[0] != dirs || w_shape[1] % g != 0 {
        return Err(node_err(
            node,
            format!("W has shape {w_shape:?}; expected [{dirs}, {g}·H, I]"),
        ));
    }
    let h = w_shape[1] / g;
    let i_size = w_shape[2];
    if let Some(hs) = attr_int(node, "hidden_size")
        && hs as usize != h
    {
        return Err(node_err(
            node,
            format!("hidden_size {hs} disagrees with W {w_shape:?} (H = {h})"),
        ));
    }
    if r_shape != [dirs, g * h, h] {
        return Err(node_err(
            node,
            format!("R has shape {r_shape:?}; expected [{dirs}, {}, {h}]", g * h),
        ));
    }
    let mut variant = Variant::default();
    if let Some(c) = attr(node, "clip") {
        variant.cell_clip = Some(c.f());
    }
    if cell == Cell::Lstm {
        variant.coupled = attr_int(node, "input_forget").unwrap_or(0) == 1;
        if acts.len() >= 3 {
            variant.activations = Activations::from_list(cell, &acts[..3])?;
        }
    }
    if cell == Cell::Gru {
        // ONNX's default is the reset gate before the product.
        variant.reset_before = attr_int(node, "linear_before_reset").unwrap_or(0) == 0;
        if acts.len() >= 2 {
            variant.activations = Activations::from_list(cell, &acts[..2])?;
        }
    }
    let bias = floats(3, "B")?;
    if let Some((s, _)) = &bias
        && s != &[dirs, 2 * g * h]
    {
        return Err(node_err(
            node,
            format!("B has shape {s:?}; expected [{dirs}, {}]", 2 * g * h),
        ));
    }
    let peep = if cell == Cell::Lstm {
        floats(7, "P")?
    } else {
        None
    };
    if let Some((s, _)) = &peep
        && s != &[dirs, 3 * h]
    {
        return Err(node_err(
            node,
            format!("P has shape {s:?}; expected [{dirs}, {}]", 3 * h),
        ));
    }
    variant.peepholes = peep.is_some();
    let config = RnnConfig::new(cell, i_size, h)
        .variant(variant)
        .bidirectional(dirs == 2);
    config.validate().map_err(|e| node_err(node, e))?;
    // X [T, B, I] (layout 1: [B, T, I]).
    if x_shape.len() != 3 || x_shape[2] != i_size {
        return Err(node_err(
            node,
            format!("X has shape {x_shape:?}; expected rank 3 with I = {i_size}"),
        ));
    }
    let (steps, batch) = if layout == 0 {
        (x_shape[0], x_shape[1])
    } else {
        (x_shape[1], x_shape[0])
    };
    // Layout 1 puts the batch first: swap the first two axes.
    let to_tbi = |v: Vec<f64>, shape: &[usize]| -> Vec<f64> {
        if layout == 0 {
            return v;
        }
        let st = strides(shape);
        let swapped = [shape[1], shape[0], shape[2]];
        gather_by(&swapped, |ix| ix[0] * st[1] + ix[1] * st[0] + ix[2] * st[2])
            .into_iter()
            .map(|i| v[i])
            .collect()
    };
    let x = to_tbi(x, &x_shape);
    let lengths = input(4)
        .map(|t| {
            let v = ints_of(node, t, "sequence_lens")?;
            if t.shape != [batch] {
                return Err(node_err(
                    node,
                    format!("sequence_lens has shape {:?}; expected [{batch}]", t.shape),
                ));
            }
            v.iter()
                .map(|&l| {
                    if l < 1 || l as usize > steps {
                        Err(node_err(
                            node,
                            format!("sequence_lens holds {l}; each must be in 1..={steps}"),
                        ))
                    } else {
                        Ok(l as i32)
                    }
                })
                .collect::<Result<Vec<i32>>>()
        })
        .transpose()?;
    // initial_h / initial_c [D, B, H] (layout 1: [B, D, H]).
    let state = |i: usize, what: &str| -> Result<Option<Vec<f64>>> {
        match floats(i, what)? {
            None => Ok(None),
            Some((s, v)) => {
                let want = if layout == 0 {
                    [dirs, batch, h]
                } else {
                    [batch, dirs, h]
                };
                if s != want {
                    return Err(node_err(
                        node,
                        format!("{what} has shape {s:?}; expected {want:?}"),
                    ));
                }
                Ok(Some(to_tbi(v, &s)))
            }
        }
    };
    let h0 = state(5, "initial_h")?;
    let c0 = if cell == Cell::Lstm {
        state(6, "initial_c")?
    } else {
        None
    };
    // Parameters in PyTorch's layout, direction by direction.
    let order = gate_order(cell);
    let mut params = Vec::with_capacity(config.layout().total);
    for d in 0..dirs {
        let gh = g * h;
        params.extend(reorder(
            &w[d * gh * i_size..(d + 1) * gh * i_size],
            order,
            h,
            i_size,
        ));
        params.extend(reorder(&r[d * gh * h..(d + 1) * gh * h], order, h, h));
        match &bias {
            Some((_, b)) => {
                let b = &b[d * 2 * gh..(d + 1) * 2 * gh];
                params.extend(reorder(&b[..gh], order, h, 1));
                params.extend(reorder(&b[gh..], order, h, 1));
            }
            None => params.extend(std::iter::repeat_n(0.0, 2 * gh)),
        }
        if let Some((_, p)) = &peep {
            // ONNX i, o, f → P_i, P_f, P_o
            params.extend(reorder(&p[d * 3 * h..(d + 1) * 3 * h], &[0, 2, 1], h, 1));
        }
    }
    // A reverse-only node runs forward over each row's sequence reversed
    // (within its own length), and its outputs are reversed back.
    let reverse = direction == "reverse";
    let lens: Vec<usize> = match &lengths {
        Some(l) => l.iter().map(|&v| v as usize).collect(),
        None => vec![steps; batch],
    };
    let flip = |v: &[f64], width: usize| -> Vec<f64> {
        let mut out = vec![0.0; v.len()];
        for (b, &len) in lens.iter().enumerate() {
            for t in 0..len {
                let (src, dst) = (((len - 1 - t) * batch + b) * width, (t * batch + b) * width);
                out[dst..dst + width].copy_from_slice(&v[src..src + width]);
            }
        }
        out
    };
    let x = if reverse { flip(&x, i_size) } else { x };
    let data = RnnCaseData {
        steps,
        batch,
        params,
        x,
        h0,
        c0,
        lengths,
        grad_output: None,
        grad_hn: None,
        grad_cn: None,
    };
    let res = run_case_at(backend, &config, &data, false, StepOrder::Auto, precision)
        .map_err(|e| node_err(node, e))?;
    let y = if reverse {
        flip(&res.output, h)
    } else {
        res.output
    };
    // Ours: [T, B, D, H] and [D, B, H]; ONNX: [T, D, B, H] / [B, T, D, H] and [D, B, H] / [B, D, H].
    let y = HostTensor::f32_from_f64(&[steps, batch, dirs, h], &y);
    let y = transpose(
        &y,
        if layout == 0 {
            &[0, 2, 1, 3]
        } else {
            &[1, 0, 2, 3]
        },
    );
    let final_state = |v: &[f64]| {
        let t = HostTensor::f32_from_f64(&[dirs, batch, h], v);
        if layout == 0 {
            t
        } else {
            transpose(&t, &[1, 0, 2])
        }
    };
    let mut outs = vec![Some(y), Some(final_state(&res.hn))];
    if cell == Cell::Lstm {
        outs.push(Some(final_state(&res.cn)));
    }
    Ok(outs)
}

/// A bidirectional node whose directions have different activations: each
/// direction as its own node (forward, and reverse), on its slices of the
/// weights and initial states; the outputs joined along the direction axis.
fn split_directions<B: Backend>(
    backend: &B,
    node: &proto::NodeProto,
    ins: &[Option<HostTensor>],
    per_dir: usize,
    layout: i64,
    precision: Precision,
) -> Result<Vec<Option<HostTensor>>> {
    // The direction axis: W, R, B, P on 0; initial_h / initial_c on 0
    // (layout 0) or 1 (layout 1).
    let state_axis = if layout == 0 { 0 } else { 1 };
    let acts = attr(node, "activations")
        .map(|a| a.strings.clone())
        .unwrap_or_default();
    let mut outs: Vec<Vec<Option<HostTensor>>> = Vec::with_capacity(2);
    for (d, direction) in ["forward", "reverse"].into_iter().enumerate() {
        let mut one = node.clone();
        for a in &mut one.attribute {
            match a.name() {
                "direction" => a.s = Some(direction.as_bytes().to_vec()),
                "activations" => a.strings = acts[d * per_dir..(d + 1) * per_dir].to_vec(),
                _ => {}
            }
        }
        let sliced: Vec<Option<HostTensor>> = ins
            .iter()
            .enumerate()
            .map(|(k, t)| {
                t.as_ref().map(|t| match k {
                    // X and sequence_lens are shared.
                    0 | 4 => t.clone(),
                    5 | 6 => select(t, state_axis, d),
                    _ => select(t, 0, d),
                })
            })
            .collect();
        outs.push(recurrent(backend, &one, &sliced, precision)?);
    }
    // Y: [T, D, B, H] (axis 1) or [B, T, D, H] (axis 2); Y_h, Y_c: [D, B, H]
    // (axis 0) or [B, D, H] (axis 1).
    let (y_axis, s_axis) = if layout == 0 { (1, 0) } else { (2, 1) };
    (0..outs[0].len())
        .map(|k| {
            let parts: Vec<&HostTensor> = outs.iter().filter_map(|o| o[k].as_ref()).collect();
            concat(&parts, if k == 0 { y_axis } else { s_axis })
                .map(Some)
                .map_err(|e| node_err(node, e))
        })
        .collect()
}

/// Runs the graph of `model` on `backend` with the graph inputs `inputs`
/// (every input that is not an initializer, by name); returns every graph
/// output by name.
pub fn run_model<B: Backend>(
    backend: &B,
    model: &proto::ModelProto,
    inputs: &TensorMap,
) -> Result<TensorMap> {
    run_model_at(backend, model, inputs, Precision::F32)
}

/// [`run_model`] with the recurrent nodes (LSTM, GRU, RNN) computed at
/// `precision`: in a 16-bit mode their weights, inputs, initial states and
/// every activation are stored in 16 bits with f32 arithmetic
/// ([`run_case_at`], as `torch.autocast` casts a recurrent layer); the other
/// nodes (reshapes, slices, concatenations) move values unchanged.
pub fn run_model_at<B: Backend>(
    backend: &B,
    model: &proto::ModelProto,
    inputs: &TensorMap,
    precision: Precision,
) -> Result<TensorMap> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("ONNX model", "has no graph"))?;
    let mut env: HashMap<String, HostTensor> = HashMap::new();
    for t in &graph.initializer {
        env.insert(t.name().to_string(), tensor_value(t)?);
    }
    // Graph inputs without an initializer must be given; those with one
    // (a default) may be.
    let needed: Vec<&str> = graph
        .input
        .iter()
        .map(|i| i.name())
        .filter(|n| !env.contains_key(*n))
        .collect();
    if let Some(name) = needed.iter().find(|n| !inputs.contains_key(**n)) {
        return Err(Error::invalid(
            "--inputs",
            format!(
                "graph input {name:?} is missing (inputs: {})",
                needed.join(", ")
            ),
        ));
    }
    for i in &graph.input {
        if let Some(t) = inputs.get(i.name()) {
            env.insert(i.name().to_string(), t.clone());
        }
    }
    if let Some(extra) = inputs
        .keys()
        .find(|k| !graph.input.iter().any(|i| i.name() == k.as_str()))
    {
        return Err(Error::invalid(
            "--inputs",
            format!(
                "{extra:?} is not an input of the graph (inputs: {})",
                needed.join(", ")
            ),
        ));
    }
    for node in &graph.node {
        if !node.domain().is_empty() && node.domain() != "ai.onnx" {
            return Err(node_err(
                node,
                format!("domain {:?} is not supported", node.domain()),
            ));
        }
        let ins: Vec<Option<HostTensor>> = node
            .input
            .iter()
            .map(|n| {
                if n.is_empty() {
                    Ok(None)
                } else {
                    env.get(n).cloned().map(Some).ok_or_else(|| {
                        node_err(node, format!("input {n:?} is not computed before it"))
                    })
                }
            })
            .collect::<Result<_>>()?;
        let outs: Vec<Option<HostTensor>> = match node.op_type() {
            "LSTM" | "GRU" | "RNN" => recurrent(backend, node, &ins, precision)?,
            _ => glue(node, &ins)?.into_iter().map(Some).collect(),
        };
        for (name, v) in node.output.iter().zip(outs) {
            if let (false, Some(v)) = (name.is_empty(), v) {
                env.insert(name.clone(), v);
            }
        }
    }
    let mut out = TensorMap::new();
    for o in &graph.output {
        let v = env.remove(o.name()).ok_or_else(|| {
            Error::invalid(
                "ONNX model",
                format!("graph output {:?} is never computed", o.name()),
            )
        })?;
        out.insert(o.name().to_string(), v);
    }
    Ok(out)
}

/// Arguments of `rnn-wgpu eval --onnx`.
#[derive(Clone, Debug)]
pub struct OnnxEvalOptions {
    /// The ONNX model.
    pub model: std::path::PathBuf,
    /// One tensor per graph input that is not an initializer, by name.
    pub inputs: std::path::PathBuf,
    /// Where to write every graph output, by name.
    pub out: std::path::PathBuf,
    /// Which backend runs the recurrent nodes.
    pub backend: crate::backend::BackendChoice,
    /// The precision of the recurrent nodes ([`run_model_at`]).
    pub precision: Precision,
}

/// Runs `eval --onnx`: returns a one-line summary of what was computed where.
pub fn run(opts: &OnnxEvalOptions) -> Result<String> {
    crate::eval::check_output_path("--out", &opts.out)?;
    let model = read_model(&opts.model)?;
    let inputs = crate::io::read_safetensors(&opts.inputs)?;
    let (backend, why) = crate::backend::choose(opts.backend)?;
    let precision = opts.precision;
    let outputs = crate::with_backend!(backend, b => run_model_at(&b, &model, &inputs, precision))?;
    crate::io::write_safetensors(&opts.out, &outputs, None)?;
    let graph = model.graph.as_ref();
    let recurrent = graph.map_or(0, |g| {
        g.node
            .iter()
            .filter(|n| matches!(n.op_type(), "LSTM" | "GRU" | "RNN"))
            .count()
    });
    let nodes = graph.map_or(0, |g| g.node.len());
    Ok(format!(
        "{} node{} ({recurrent} recurrent{}): {} output{} ({}) written to {} ({why})",
        nodes,
        if nodes == 1 { "" } else { "s" },
        if precision.is_16bit() {
            format!(", {precision} storage")
        } else {
            String::new()
        },
        outputs.len(),
        if outputs.len() == 1 { "" } else { "s" },
        outputs.keys().cloned().collect::<Vec<_>>().join(", "),
        opts.out.display(),
    ))
}
