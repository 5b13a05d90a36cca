//! Kernel steps: one call into the kernel library each, over tensor ids.
//! The planner, executor, dump and profiler see only this: a name, what the
//! step reads, writes and accumulates into, its cost, and a function that
//! builds its dispatches once the tensors have memory.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{Graph, TensorId};
use crate::runtime::{DType, Dispatch, Gpu, Tensor};

/// Resolves a tensor id to its GPU tensor (inside [`Step::build`]).
pub type Resolve<'a> = dyn Fn(TensorId) -> Tensor + 'a;

type BuildFn = dyn Fn(&Gpu, &Resolve<'_>) -> Result<Vec<Dispatch>> + Send + Sync;

/// One kernel call (possibly several dispatches).
#[derive(Clone)]
pub struct Step {
    /// Kernel name for dumps and profiles ("matmul", "layernorm_backward").
    pub name: &'static str,
    /// A short description of the call's shape, for profiles ("512×384×128").
    pub detail: String,
    /// Tensors read.
    pub reads: Vec<TensorId>,
    /// Tensors overwritten.
    pub writes: Vec<TensorId>,
    /// Tensors read and added to (they must hold a value before the step).
    pub accumulates: Vec<TensorId>,
    /// Floating-point operations (multiply-add = 2), for reports.
    pub flops: u64,
    build: Arc<BuildFn>,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Step({} reads {:?} writes {:?} acc {:?})",
            self.name, self.reads, self.writes, self.accumulates
        )
    }
}

impl Step {
    /// A step named `name` whose dispatches `build` makes from resolved tensors.
    pub fn new(
        name: &'static str,
        build: impl Fn(&Gpu, &Resolve<'_>) -> Result<Vec<Dispatch>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            detail: String::new(),
            reads: Vec::new(),
            writes: Vec::new(),
            accumulates: Vec::new(),
            flops: 0,
            build: Arc::new(build),
        }
    }
    pub fn reads(mut self, ids: impl IntoIterator<Item = TensorId>) -> Self {
        self.reads.extend(ids);
        self
    }
    pub fn writes(mut self, ids: impl IntoIterator<Item = TensorId>) -> Self {
        self.writes.extend(ids);
        self
    }
    pub fn accumulates(mut self, ids: impl IntoIterator<Item = TensorId>) -> Self {
        self.accumulates.extend(ids);
        self
    }
    pub fn flops(mut self, flops: u64) -> Self {
        self.flops = flops;
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Every tensor that must hold a value before the step.
    pub fn inputs(&self) -> impl Iterator<Item = TensorId> + '_ {
        self.reads.iter().chain(&self.accumulates).copied()
    }

    /// Every tensor that holds a new value after the step.
    pub fn outputs(&self) -> impl Iterator<Item = TensorId> + '_ {
        self.writes.iter().chain(&self.accumulates).copied()
    }

    /// Builds the dispatches over resolved tensors.
    pub fn build(&self, gpu: &Gpu, resolve: &Resolve<'_>) -> Result<Vec<Dispatch>> {
        (self.build)(gpu, resolve)
    }
}

/// Where an op lowers its forward computation: the graph (for temporaries)
/// and the list of steps being built.
pub struct Lowering<'g> {
    pub g: &'g mut Graph,
    pub steps: Vec<Step>,
}

impl Lowering<'_> {
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }
    /// A planned temporary.
    pub fn temp(&mut self, name: impl Into<String>, shape: &[usize], dtype: DType) -> TensorId {
        self.g.planned_typed(name, shape, dtype)
    }
    pub fn shape(&self, id: TensorId) -> &[usize] {
        self.g.shape(id)
    }
}

/// Lowers the nodes in `range`, in order, to steps.
pub fn lower_nodes(g: &mut Graph, range: Range<usize>) -> Result<Vec<Step>> {
    let mut cx = Lowering {
        g,
        steps: Vec::new(),
    };
    for i in range {
        lower_node(&mut cx, i)?;
    }
    Ok(cx.steps)
}

/// Lowers node `i` into `cx`.
pub(crate) fn lower_node(cx: &mut Lowering<'_>, i: usize) -> Result<()> {
    // Take the op out so it can read the graph mutably while lowering.
    let op = std::mem::replace(&mut cx.g.nodes[i].op, Box::new(super::autodiff::Taken));
    let io = super::op::NodeIo {
        inputs: cx.g.nodes[i].inputs.clone(),
        outputs: cx.g.nodes[i].outputs.clone(),
    };
    let r = op
        .lower(&io, cx)
        .with_context(|| format!("lowering node {i} ({})", op.name()));
    cx.g.nodes[i].op = op;
    r
}
