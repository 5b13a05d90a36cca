//! A batch: the named tensors a model's forward takes (`input_ids`,
//! `attention_mask`, `labels`, `pixel_values`…), as Hugging Face names them.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};

use crate::io::checkpoint::{NamedTensor, TensorData};
use crate::runtime::DType;

/// Shape and element type of one named input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl InputSpec {
    pub fn new(name: &str, shape: &[usize], dtype: DType) -> Self {
        Self {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype,
        }
    }
}

/// Named host tensors (f32 or i32), by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    pub tensors: BTreeMap<String, NamedTensor>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an i32 tensor.
    pub fn with_i32(mut self, name: &str, shape: &[usize], data: Vec<i32>) -> Self {
        self.insert(NamedTensor::i32(name, shape.to_vec(), data));
        self
    }

    /// Adds (or replaces) an f32 tensor.
    pub fn with_f32(mut self, name: &str, shape: &[usize], data: Vec<f32>) -> Self {
        self.insert(NamedTensor::f32(name, shape.to_vec(), data));
        self
    }

    pub fn insert(&mut self, t: NamedTensor) {
        self.tensors.insert(t.name.clone(), t);
    }

    pub fn remove(&mut self, name: &str) -> Option<NamedTensor> {
        self.tensors.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The i32 values of `name`, or an error naming what is missing.
    pub fn i32(&self, name: &str) -> Result<&[i32]> {
        let t = self
            .get(name)
            .ok_or_else(|| anyhow!("the batch has no `{name}` tensor"))?;
        match &t.data {
            TensorData::I32(v) => Ok(v),
            TensorData::F32(_) => bail!("batch tensor `{name}` is f32; it must hold i32 ids"),
        }
    }

    /// The f32 values of `name`, or an error naming what is missing.
    pub fn f32(&self, name: &str) -> Result<&[f32]> {
        let t = self
            .get(name)
            .ok_or_else(|| anyhow!("the batch has no `{name}` tensor"))?;
        match &t.data {
            TensorData::F32(v) => Ok(v),
            TensorData::I32(_) => bail!("batch tensor `{name}` is i32; it must hold f32 values"),
        }
    }

    /// Name, shape and element type of every tensor, in name order.
    pub fn layout(&self) -> Vec<InputSpec> {
        self.tensors
            .values()
            .map(|t| InputSpec {
                name: t.name.clone(),
                shape: t.shape.clone(),
                dtype: match t.data {
                    TensorData::F32(_) => DType::F32,
                    TensorData::I32(_) => DType::I32,
                },
            })
            .collect()
    }

    /// Fails unless the batch holds exactly the tensors of `layout`.
    pub fn check_layout(&self, layout: &[InputSpec]) -> Result<()> {
        let mine = self.layout();
        if mine != layout {
            let show = |l: &[InputSpec]| {
                l.iter()
                    .map(|s| format!("{} {}{:?}", s.name, s.dtype.name(), s.shape))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            bail!(
                "batch holds [{}] but the graph was built for [{}]",
                show(&mine),
                show(layout)
            );
        }
        Ok(())
    }

    /// Concatenates batches along their first dimension (every tensor).
    pub fn concat(parts: &[Batch]) -> Result<Batch> {
        let Some(first) = parts.first() else {
            bail!("concat of no batches");
        };
        let mut out = Batch::new();
        for (name, t0) in &first.tensors {
            let mut shape = t0.shape.clone();
            ensure_nonempty(name, &shape)?;
            shape[0] = 0;
            let mut data = match t0.data {
                TensorData::F32(_) => TensorData::F32(Vec::new()),
                TensorData::I32(_) => TensorData::I32(Vec::new()),
            };
            for p in parts {
                let t = p
                    .get(name)
                    .ok_or_else(|| anyhow!("concat: a batch lacks `{name}`"))?;
                if t.shape[1..] != t0.shape[1..] {
                    bail!(
                        "concat: `{name}` shapes {:?} and {:?} differ",
                        t.shape,
                        t0.shape
                    );
                }
                shape[0] += t.shape[0];
                match (&mut data, &t.data) {
                    (TensorData::F32(d), TensorData::F32(s)) => d.extend_from_slice(s),
                    (TensorData::I32(d), TensorData::I32(s)) => d.extend_from_slice(s),
                    _ => bail!("concat: `{name}` dtypes differ"),
                }
            }
            out.insert(NamedTensor {
                name: name.clone(),
                shape,
                data,
            });
        }
        Ok(out)
    }
}

fn ensure_nonempty(name: &str, shape: &[usize]) -> Result<()> {
    if shape.is_empty() {
        bail!("`{name}` is a scalar; batch tensors have a leading batch dimension");
    }
    Ok(())
}
