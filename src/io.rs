//! Files: safetensors reading and writing, and atomic writes.
//!
//! Every file rnn-wgpu writes goes to a temporary file in the same directory
//! first and is renamed into place, so a crash or a full disk never leaves a
//! partial file where a good one was expected.
//!
//! ```
//! use rnn_wgpu::io::{read_safetensors, write_safetensors, HostTensor, TensorMap};
//!
//! # fn main() -> rnn_wgpu::Result<()> {
//! let path = std::env::temp_dir().join(format!("rnn-wgpu-io-doc-{}.safetensors", std::process::id()));
//! let mut tensors = TensorMap::new();
//! tensors.insert("input".into(), HostTensor::f32(&[2, 3], vec![0.5; 6]));
//! write_safetensors(&path, &tensors, None)?; // a temporary file, then a rename
//! let back = read_safetensors(&path)?;
//! assert_eq!(back["input"].floats("input")?, [0.5; 6]);
//! std::fs::remove_file(&path).ok();
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::backend::host_vec;
use crate::error::{Error, Result};
use crate::nn::ParamLayout;

/// Element data of a host tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// f32
    F32(Vec<f32>),
    /// f64
    F64(Vec<f64>),
    /// i32
    I32(Vec<i32>),
    /// i64
    I64(Vec<i64>),
}

/// A tensor read from or written to a file.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values.
    pub data: HostData,
}

/// Named tensors, sorted by name.
pub type TensorMap = BTreeMap<String, HostTensor>;

impl HostTensor {
    /// An f32 tensor.
    pub fn f32(shape: &[usize], data: Vec<f32>) -> Self {
        HostTensor {
            shape: shape.to_vec(),
            data: HostData::F32(data),
        }
    }

    /// An f32 tensor from f64 values (rounded).
    pub fn f32_from_f64(shape: &[usize], data: &[f64]) -> Self {
        Self::f32(shape, data.iter().map(|&v| v as f32).collect())
    }

    /// The element type, as safetensors names it.
    pub fn dtype_name(&self) -> &'static str {
        match self.data {
            HostData::F32(_) => "F32",
            HostData::F64(_) => "F64",
            HostData::I32(_) => "I32",
            HostData::I64(_) => "I64",
        }
    }

    /// Float values widened to f64; integer tensors are an error naming `what`.
    pub fn floats(&self, what: &str) -> Result<Vec<f64>> {
        match &self.data {
            HostData::F32(v) => Ok(v.iter().map(|&x| x as f64).collect()),
            HostData::F64(v) => Ok(v.clone()),
            _ => Err(Error::invalid(
                what,
                format!("expected F32 or F64 values, got {}", self.dtype_name()),
            )),
        }
    }

    /// Integer values; float tensors are an error naming `what`.
    pub fn ints(&self, what: &str) -> Result<Vec<i64>> {
        match &self.data {
            HostData::I32(v) => Ok(v.iter().map(|&x| x as i64).collect()),
            HostData::I64(v) => Ok(v.clone()),
            _ => Err(Error::invalid(
                what,
                format!("expected I64 or I32 values, got {}", self.dtype_name()),
            )),
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.data {
            HostData::F32(v) => bytemuck::cast_slice(v),
            HostData::F64(v) => bytemuck::cast_slice(v),
            HostData::I32(v) => bytemuck::cast_slice(v),
            HostData::I64(v) => bytemuck::cast_slice(v),
        }
    }
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        match self.data {
            HostData::F32(_) => Dtype::F32,
            HostData::F64(_) => Dtype::F64,
            HostData::I32(_) => Dtype::I32,
            HostData::I64(_) => Dtype::I64,
        }
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.bytes())
    }

    fn data_len(&self) -> usize {
        self.bytes().len()
    }
}

/// The values of the tensor `name` of `tensors` (read from `path`), which
/// must have `shape` and hold floats.
pub fn named_floats(
    tensors: &TensorMap,
    path: &Path,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f64>> {
    let t = tensors
        .get(name)
        .ok_or_else(|| Error::format(path, format!("tensor {name} is missing")))?;
    if t.shape != shape {
        return Err(Error::format(
            path,
            format!("{name}: expected shape {shape:?}, got {:?}", t.shape),
        ));
    }
    t.floats(name)
}

/// Every parameter of `layout`, in order, from the tensors of that name.
pub fn flat_params(tensors: &TensorMap, path: &Path, layout: &ParamLayout) -> Result<Vec<f64>> {
    let mut params = host_vec(layout.total)?;
    for e in &layout.entries {
        params.extend(named_floats(tensors, path, &e.name, &e.shape)?);
    }
    Ok(params)
}

/// Reads every tensor of a safetensors file (F32, F64, I32 and I64 are supported).
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_safetensors(&bytes, path)
}

/// Parses safetensors `bytes` read from `path` (named in errors).
pub fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<TensorMap> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))?;
    let mut out = TensorMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data = match view.dtype() {
            Dtype::F32 => HostData::F32(bytemuck::pod_collect_to_vec(raw)),
            Dtype::F64 => HostData::F64(bytemuck::pod_collect_to_vec(raw)),
            Dtype::I32 => HostData::I32(bytemuck::pod_collect_to_vec(raw)),
            Dtype::I64 => HostData::I64(bytemuck::pod_collect_to_vec(raw)),
            other => {
                return Err(Error::format(
                    path,
                    format!("tensor {name:?} has dtype {other:?}; supported: F32, F64, I32, I64"),
                ));
            }
        };
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// Serializes tensors (and optional string metadata) to safetensors bytes.
pub fn safetensors_bytes(
    tensors: &TensorMap,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    safetensors::serialize(tensors.iter(), metadata)
        .map_err(|e| Error::invalid("tensors", format!("cannot serialize: {e}")))
}

/// Writes tensors to `path` atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &TensorMap,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let bytes = safetensors_bytes(tensors, metadata)?;
    write_atomic(path, &bytes)
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it
/// over `path`. On any error the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid("path", "is empty"));
    }
    if path.is_dir() {
        return Err(Error::invalid(
            "path",
            format!("{} is a directory", path.display()),
        ));
    }
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_failure() {
        let dir = std::env::temp_dir().join(format!("rnn-wgpu-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.safetensors");
        let mut m = TensorMap::new();
        m.insert("x".into(), HostTensor::f32(&[2], vec![1.0, 2.0]));
        m.insert(
            "n".into(),
            HostTensor {
                shape: vec![1],
                data: HostData::I64(vec![7]),
            },
        );
        write_safetensors(&path, &m, None).unwrap();
        assert_eq!(read_safetensors(&path).unwrap(), m);
        // A path inside a missing directory fails and leaves nothing behind.
        let bad = dir.join("missing").join("b.safetensors");
        assert!(matches!(
            write_safetensors(&bad, &m, None),
            Err(Error::Io { .. })
        ));
        assert!(!bad.exists());
        // Garbage is a format error naming the file.
        std::fs::write(dir.join("c"), b"not a file").unwrap();
        let err = read_safetensors(&dir.join("c")).unwrap_err();
        assert!(
            err.to_string().contains("not a valid safetensors file"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
