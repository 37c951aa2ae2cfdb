//! Writing a recurrent stack as an ONNX model (`rnn-wgpu export`): one
//! `LSTM` / `GRU` / `RNN` node per layer (opset 14, weights as initializers
//! in ONNX's gate orders), joined as `torch.onnx.export` joins them: each
//! layer's `Y` `[T, D, B, H]` is transposed and reshaped to the next layer's
//! `[T, B, D·H]`, the initial states are sliced per layer and the final ones
//! concatenated. Graph inputs `input` `[T, B, I]` and, when asked for,
//! `h0` (and `c0` for an LSTM) `[L·D, B, H]` (without them the states start
//! at zero); outputs `output` `[T, B, D·H]`, `hn`, `cn`. Every cell
//! variant ONNX's operators have is written as its attribute (peepholes,
//! `input_forget`, `clip`, `activations`, `linear_before_reset`); a
//! projection and skip connections, which those operators lack, are refused.

use super::proto;
use super::proto::tensor_proto::DataType;
use crate::error::{Error, Result};
use crate::nn::RnnConfig;
use crate::nn::rnn::DirParams;
use crate::ops::cell::{Act, Cell, Nonlinearity};
use crate::ops::skip::Skip;

/// The gate permutation from PyTorch's order to ONNX's (the inverse of the
/// import's): LSTM `ifgo` → `iofc`, GRU `rzn` → `zrh`.
fn onnx_order(cell: Cell) -> &'static [usize] {
    match cell {
        Cell::Lstm => &[0, 3, 1, 2],
        Cell::Gru => &[1, 0, 2],
        Cell::Rnn(_) => &[0],
    }
}

fn blocks(v: &[f64], order: &[usize], h: usize, cols: usize) -> Vec<f32> {
    order
        .iter()
        .flat_map(|&g| {
            v[g * h * cols..(g + 1) * h * cols]
                .iter()
                .map(|&x| x as f32)
        })
        .collect()
}

fn tensor(name: &str, dims: &[usize], data: Vec<f32>) -> proto::TensorProto {
    proto::TensorProto {
        name: Some(name.into()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(DataType::Float as i32),
        float_data: data,
        ..Default::default()
    }
}

fn ints(name: &str, data: &[i64]) -> proto::TensorProto {
    proto::TensorProto {
        name: Some(name.into()),
        dims: vec![data.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

fn attr_i(name: &str, v: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_f(name: &str, v: f32) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn attr_s(name: &str, v: &str) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(proto::attribute_proto::AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> proto::NodeProto {
    proto::NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A dimension of a graph input or output: a size, or a symbolic name.
enum Dim {
    Size(usize),
    Named(&'static str),
}

fn value_info(name: &str, dims: &[Dim]) -> proto::ValueInfoProto {
    use proto::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = |d: &Dim| Dimension {
        value: Some(match d {
            Dim::Size(v) => Value::DimValue(*v as i64),
            Dim::Named(n) => Value::DimParam((*n).into()),
        }),
        ..Default::default()
    };
    proto::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(
                proto::type_proto::Tensor {
                    elem_type: Some(DataType::Float as i32),
                    shape: Some(proto::TensorShapeProto {
                        dim: dims.iter().map(dim).collect(),
                    }),
                },
            )),
            denotation: None,
        }),
        ..Default::default()
    }
}

fn act_name(a: Act) -> &'static str {
    match a {
        Act::Sigmoid => "Sigmoid",
        Act::Tanh => "Tanh",
        Act::Relu => "Relu",
    }
}

/// The ONNX model of a stack shaped by `config` with the flat parameters
/// `params` (laid out by [`RnnConfig::layout`]); `states`: with the initial
/// states as graph inputs. `T` and `B` are symbolic.
pub fn export_stack(config: &RnnConfig, params: &[f64], states: bool) -> Result<proto::ModelProto> {
    config.validate()?;
    let v = config.variant;
    if v.proj_size > 0 {
        return Err(Error::invalid(
            "export",
            "ONNX's LSTM has no projection (proj_size): this stack cannot be written as ONNX nodes",
        ));
    }
    if config.skip != Skip::None {
        return Err(Error::invalid(
            "export",
            format!(
                "{} connections between layers are not ONNX recurrent nodes: this stack cannot be written as ONNX nodes",
                config.skip.name()
            ),
        ));
    }
    let layout = config.layout();
    if params.len() != layout.total {
        return Err(Error::invalid(
            "parameters",
            format!(
                "{} values; the stack's layout has {}",
                params.len(),
                layout.total
            ),
        ));
    }
    let (cell, h, dirs, layers) = (
        config.cell,
        config.hidden_size,
        config.directions(),
        config.num_layers,
    );
    let gh = cell.gates() * h;
    let op = match cell {
        Cell::Lstm => "LSTM",
        Cell::Gru => "GRU",
        Cell::Rnn(_) => "RNN",
    };
    let lstm = cell == Cell::Lstm;
    let order = onnx_order(cell);
    let mut init = Vec::new();
    let mut nodes = Vec::new();
    let ld = layers * dirs;
    init.push(ints("reshape_tb", &[0, 0, -1]));
    let mut x = "input".to_string();
    let mut finals_h = Vec::new();
    let mut finals_c = Vec::new();
    for l in 0..layers {
        let in_size = config.layer_input(l);
        let (mut w, mut r, mut b, mut p) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for d in 0..dirs {
            let o = DirParams::of(&layout, l, d)?;
            w.extend(blocks(
                &params[o.w_ih..o.w_ih + gh * in_size],
                order,
                h,
                in_size,
            ));
            r.extend(blocks(&params[o.w_hh..o.w_hh + gh * h], order, h, h));
            b.extend(blocks(&params[o.b_ih..o.b_ih + gh], order, h, 1));
            b.extend(blocks(&params[o.b_hh..o.b_hh + gh], order, h, 1));
            if v.peepholes {
                // P_i, P_f, P_o → ONNX's i, o, f
                p.extend(blocks(&params[o.peep..o.peep + 3 * h], &[0, 2, 1], h, 1));
            }
        }
        let name = |s: &str| format!("{s}_l{l}");
        init.push(tensor(&name("W"), &[dirs, gh, in_size], w));
        init.push(tensor(&name("R"), &[dirs, gh, h], r));
        init.push(tensor(&name("B"), &[dirs, 2 * gh], b));
        // This layer's initial states: its rows of h0 / c0, or zeros ("").
        if states {
            init.push(ints(&name("state_lo"), &[(l * dirs) as i64]));
            init.push(ints(&name("state_hi"), &[((l + 1) * dirs) as i64]));
            init.push(ints(&name("state_axis"), &[0]));
        }
        let mut state_in = |src: &str| {
            if !states {
                return String::new();
            }
            let dst = name(src);
            nodes.push(node(
                "Slice",
                &dst,
                &[
                    src,
                    &name("state_lo"),
                    &name("state_hi"),
                    &name("state_axis"),
                ],
                &[&dst],
            ));
            dst
        };
        let h_in = state_in("h0");
        let c_in = if lstm { state_in("c0") } else { String::new() };
        let mut inputs = vec![
            x.clone(),
            name("W"),
            name("R"),
            name("B"),
            String::new(),
            h_in,
        ];
        if lstm {
            inputs.push(c_in);
            if v.peepholes {
                init.push(tensor(&name("P"), &[dirs, 3 * h], p));
                inputs.push(name("P"));
            }
        }
        let mut outputs = vec![name("Y"), name("Y_h")];
        if lstm {
            outputs.push(name("Y_c"));
        }
        let ins: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let outs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        let mut n = node(op, &name(op), &ins, &outs);
        n.attribute.push(attr_i("hidden_size", h as i64));
        n.attribute.push(attr_s(
            "direction",
            if dirs == 2 {
                "bidirectional"
            } else {
                "forward"
            },
        ));
        if let Some(c) = v.cell_clip {
            n.attribute.push(attr_f("clip", c));
        }
        let acts: Vec<Act> = match cell {
            Cell::Lstm => vec![v.activations.f, v.activations.g, v.activations.h],
            Cell::Gru => vec![v.activations.f, v.activations.g],
            Cell::Rnn(Nonlinearity::Tanh) => vec![Act::Tanh],
            Cell::Rnn(Nonlinearity::Relu) => vec![Act::Relu],
            Cell::Rnn(Nonlinearity::Sigmoid) => vec![Act::Sigmoid],
        };
        n.attribute.push(proto::AttributeProto {
            name: Some("activations".into()),
            r#type: Some(proto::attribute_proto::AttributeType::Strings as i32),
            strings: (0..dirs)
                .flat_map(|_| acts.iter().map(|&a| act_name(a).as_bytes().to_vec()))
                .collect(),
            ..Default::default()
        });
        if lstm && v.coupled {
            n.attribute.push(attr_i("input_forget", 1));
        }
        if cell == Cell::Gru {
            n.attribute
                .push(attr_i("linear_before_reset", (!v.reset_before) as i64));
        }
        nodes.push(n);
        // Y [T, D, B, H] → [T, B, D, H] → [T, B, D·H]
        nodes.push({
            let mut t = node("Transpose", &name("Y_t"), &[&name("Y")], &[&name("Y_t")]);
            t.attribute.push(attr_ints("perm", &[0, 2, 1, 3]));
            t
        });
        let next = if l + 1 == layers {
            "output".to_string()
        } else {
            name("out")
        };
        nodes.push(node(
            "Reshape",
            &next,
            &[&name("Y_t"), "reshape_tb"],
            &[&next],
        ));
        x = next;
        finals_h.push(name("Y_h"));
        finals_c.push(name("Y_c"));
    }
    let concat = |parts: &[String], out: &str| {
        let ins: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut c = node("Concat", out, &ins, &[out]);
        c.attribute.push(attr_i("axis", 0));
        c
    };
    nodes.push(concat(&finals_h, "hn"));
    if lstm {
        nodes.push(concat(&finals_c, "cn"));
    }
    // [L·D, B, H] with B symbolic.
    let state = |n: &str| value_info(n, &[Dim::Size(ld), Dim::Named("B"), Dim::Size(h)]);
    let seq = |n: &str, width: usize| {
        value_info(n, &[Dim::Named("T"), Dim::Named("B"), Dim::Size(width)])
    };
    let mut inputs = vec![seq("input", config.input_size)];
    let mut outputs = vec![seq("output", config.output_size()), state("hn")];
    if states {
        inputs.push(state("h0"));
        if lstm {
            inputs.push(state("c0"));
        }
    }
    if lstm {
        outputs.push(state("cn"));
    }
    Ok(proto::ModelProto {
        ir_version: Some(8),
        producer_name: Some("rnn-wgpu".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(14),
        }],
        graph: Some(proto::GraphProto {
            name: Some(format!("{}_stack", cell.name())),
            node: nodes,
            initializer: init,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Writes `model` to `path` atomically.
pub fn write_model(path: &std::path::Path, model: &proto::ModelProto) -> Result<()> {
    use prost::Message;
    crate::io::write_atomic(path, &model.encode_to_vec())
}
