//! What every op provides. An op is one file in `src/ops/`: a builder
//! function on [`Graph`](super::Graph) (the shape rule: it checks the inputs,
//! creates the outputs and pushes a node), and an [`Op`] implementation with
//! the lowering to kernel steps, the gradient rule and an f64 CPU reference.

use std::fmt::Debug;

use anyhow::{ensure, Result};

use super::autodiff::Backward;
use super::step::Lowering;
use super::TensorId;

/// The tensors of one node, as its op sees them.
#[derive(Clone, Debug)]
pub struct NodeIo {
    pub inputs: Vec<TensorId>,
    pub outputs: Vec<TensorId>,
}

impl NodeIo {
    pub fn input(&self, i: usize) -> TensorId {
        self.inputs[i]
    }
    pub fn output(&self, i: usize) -> TensorId {
        self.outputs[i]
    }
}

pub trait Op: Debug + Send + Sync {
    /// Short name for dumps, profiles and errors ("layernorm").
    fn name(&self) -> &'static str;

    /// Appends the kernel steps that compute every output from the inputs.
    /// Runs after [`Op::backward`] in a training graph, so a gradient rule
    /// may ask its own forward to do more (cross-entropy writes d(logits)).
    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()>;

    /// The gradient rule: reads the gradients of the outputs (`cx.grad`) and
    /// contributes to the inputs that need one (`cx.needs_grad`), with
    /// backward kernels or with other ops. Only called when some output has a
    /// gradient.
    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()>;

    /// The f64 CPU reference: every output's value from the inputs' values
    /// (integer tensors hold their values as f64). Used by the graph-level
    /// gradient check and the op tests.
    fn reference(&self, inputs: &[&HostTensor]) -> Result<Vec<HostTensor>>;
}

/// A host tensor in f64, for references.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl HostTensor {
    pub fn new(shape: &[usize], data: Vec<f64>) -> Result<Self> {
        ensure!(
            crate::runtime::numel(shape) == data.len(),
            "host tensor of shape {shape:?} given {} values",
            data.len()
        );
        Ok(Self {
            shape: shape.to_vec(),
            data,
        })
    }
    pub fn zeros(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
            data: vec![0.0; crate::runtime::numel(shape)],
        }
    }
    pub fn scalar(v: f64) -> Self {
        Self {
            shape: vec![1],
            data: vec![v],
        }
    }
    pub fn from_f32(shape: &[usize], v: &[f32]) -> Self {
        Self {
            shape: shape.to_vec(),
            data: v.iter().map(|x| *x as f64).collect(),
        }
    }
    pub fn from_i32(shape: &[usize], v: &[i32]) -> Self {
        Self {
            shape: shape.to_vec(),
            data: v.iter().map(|x| *x as f64).collect(),
        }
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// The size of the last dimension (1 for a scalar).
    pub fn last_dim(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
    /// Rows when viewed as [numel / last_dim, last_dim].
    pub fn rows(&self) -> usize {
        self.numel() / self.last_dim().max(1)
    }
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|x| *x as f32).collect()
    }
}
