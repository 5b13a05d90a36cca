//! The graph executor. A model is written as a list of [`Node`]s: each an
//! [`Op`] (from [`crate::ops`]) over tensor ids. [`autodiff`] appends the
//! backward computation; every op lowers itself to kernel [`Step`]s;
//! [`plan`] places activations and temporaries in a reused set of buffers;
//! [`exec`] builds every dispatch once and runs a whole step as one command
//! encoder and one submit.
//!
//! Nothing here knows any particular op: the planner, executor, autodiff and
//! graph dump see only nodes (an op, its inputs, its outputs) and steps (a
//! kernel call with the tensors it reads, writes and accumulates into).
//! Adding an op means adding one file to `src/ops/`.

pub mod autodiff;
pub mod dump;
pub mod eval;
pub mod exec;
pub mod op;
pub mod plan;
pub mod step;
#[cfg(test)]
mod tests;

use anyhow::{bail, ensure, Result};

use crate::runtime::{numel, DType};

pub use exec::{Executor, TensorMap};
pub use op::{HostTensor, Op};
pub use plan::MemoryPlan;
pub use step::Step;

/// Index of a tensor in its [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub u32);

/// Where a tensor's memory comes from, and how long it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A parameter, owned by the caller (a trainer's or a sampler's map).
    Param,
    /// The gradient of a trainable parameter: persistent, zeroed at the start
    /// of each optimizer step and accumulated into (so micro-batches add up).
    ParamGrad,
    /// Written from the host before each step (token ids, labels, pixels).
    Input,
    /// Kept after the step for the caller to read (losses, logits if asked).
    Output,
    /// Everything else: forward activations, backward temporaries, the
    /// gradients of activations. Placed by the memory planner.
    Planned,
}

/// A tensor that shares the memory of another (a reshape, a leading slice):
/// it has no buffer of its own and lives as long as its base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewOf {
    pub base: TensorId,
    /// Offset into the base, in elements. Must fall on a 256-byte boundary
    /// (WebGPU's storage binding alignment); 0 for reshapes.
    pub offset: usize,
}

#[derive(Clone, Debug)]
pub struct TensorDesc {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub role: Role,
    pub view: Option<ViewOf>,
}

impl TensorDesc {
    pub fn bytes(&self) -> u64 {
        (numel(&self.shape) * self.dtype.size()) as u64
    }
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
}

/// How a parameter starts out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Const(f32),
    /// N(0, std²), drawn from the model's seeded generator in declaration order.
    Normal(f32),
}

/// A parameter as the model declared it: its Hugging Face name, its tensor,
/// how it is initialised and how the optimizer treats it.
#[derive(Clone, Debug)]
pub struct ParamInfo {
    pub name: String,
    pub id: TensorId,
    pub init: Init,
    /// AdamW weight decay applies. Default by rank: matrices and embedding
    /// tables (rank ≥ 2) decay, vectors (biases, norm gains) do not.
    pub decay: bool,
    /// False for frozen parameters: no gradient, no optimizer state.
    pub trainable: bool,
}

/// One op applied to tensors. `outputs` include anything the op saves for its
/// backward pass (a LayerNorm's mean and rstd, attention's log-sum-exp).
#[derive(Debug)]
pub struct Node {
    pub op: Box<dyn Op>,
    pub inputs: Vec<TensorId>,
    pub outputs: Vec<TensorId>,
}

/// Which attention kernels attention ops lower to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionImpl {
    /// q·kᵀ, softmax and p·v as separate kernels, materialising the T×T
    /// probabilities. The reference path.
    Unfused,
    /// One FlashAttention-style kernel forward (online softmax over key
    /// tiles, saving only the row log-sum-exp) and three backward passes
    /// (`kernels::attention`): no T×T tensor at all.
    #[default]
    Fused,
}

impl AttentionImpl {
    /// The kernels a setting asks for on `gpu`: `fused`, `unfused`, or
    /// `auto` (or empty): unfused on CPU adapters, where it measured faster,
    /// fused elsewhere.
    pub fn choose(setting: &str, gpu: &crate::runtime::Gpu) -> Result<Self> {
        Self::choose_for(setting, gpu.is_cpu())
    }

    /// [`AttentionImpl::choose`] without a device: `cpu_adapter` says what it is.
    pub fn choose_for(setting: &str, cpu_adapter: bool) -> Result<Self> {
        Ok(match setting {
            "fused" => Self::Fused,
            "unfused" => Self::Unfused,
            "auto" | "" if cpu_adapter => Self::Unfused,
            "auto" | "" => Self::Fused,
            other => bail!("attention {other:?}: expected fused, unfused or auto"),
        })
    }
}

/// Settings that change how ops lower, fixed when the graph is created.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GraphOptions {
    pub attention: AttentionImpl,
    /// Dropout is active (training graphs); evaluation graphs leave it off.
    pub dropout: bool,
}

/// A model's computation at one batch shape: tensors, nodes, parameters, and
/// (once lowered) the forward and backward kernel steps.
#[derive(Debug, Default)]
pub struct Graph {
    pub tensors: Vec<TensorDesc>,
    pub nodes: Vec<Node>,
    /// How many of `nodes` are the forward computation (the rest were
    /// created by gradient rules and are lowered into the backward pass).
    pub n_forward_nodes: usize,
    /// Parameters in declaration order.
    pub params: Vec<ParamInfo>,
    /// Trainable parameter → its gradient (filled by [`Graph::backward`]).
    pub param_grads: std::collections::BTreeMap<TensorId, TensorId>,
    /// Forward then backward kernel steps, in execution order.
    pub steps: Vec<Step>,
    /// How many of `steps` are the forward pass.
    pub n_forward_steps: usize,
    /// True once [`Graph::backward`] lowered a training graph.
    pub training: bool,
    pub options: GraphOptions,
    /// The loss tensors and their weights in the total loss (set by backward).
    pub losses: Vec<(TensorId, f32)>,
}

impl Graph {
    pub fn new(options: GraphOptions) -> Self {
        Self {
            options,
            ..Default::default()
        }
    }

    /// A graph whose attention ops use `attention` (dropout off).
    pub fn with_attention(attention: AttentionImpl) -> Self {
        Self::new(GraphOptions {
            attention,
            dropout: false,
        })
    }

    pub fn desc(&self, id: TensorId) -> &TensorDesc {
        &self.tensors[id.0 as usize]
    }
    pub fn shape(&self, id: TensorId) -> &[usize] {
        &self.tensors[id.0 as usize].shape
    }
    pub fn dtype(&self, id: TensorId) -> DType {
        self.tensors[id.0 as usize].dtype
    }
    pub fn name(&self, id: TensorId) -> &str {
        &self.tensors[id.0 as usize].name
    }

    /// The tensor that owns the memory of `id` (itself unless a view).
    pub fn root(&self, mut id: TensorId) -> TensorId {
        while let Some(v) = self.desc(id).view {
            id = v.base;
        }
        id
    }

    /// Element offset of `id` within its root's memory.
    pub fn root_offset(&self, mut id: TensorId) -> usize {
        let mut off = 0;
        while let Some(v) = self.desc(id).view {
            off += v.offset;
            id = v.base;
        }
        off
    }

    pub(crate) fn add_tensor(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        dtype: DType,
        role: Role,
    ) -> TensorId {
        let id = TensorId(self.tensors.len() as u32);
        self.tensors.push(TensorDesc {
            name: name.into(),
            shape: shape.to_vec(),
            dtype,
            role,
            view: None,
        });
        id
    }

    /// A planned f32 tensor (activation or temporary).
    pub fn planned(&mut self, name: impl Into<String>, shape: &[usize]) -> TensorId {
        self.add_tensor(name, shape, DType::F32, Role::Planned)
    }

    /// A planned tensor of any element type.
    pub fn planned_typed(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        dtype: DType,
    ) -> TensorId {
        self.add_tensor(name, shape, dtype, Role::Planned)
    }

    /// A tensor sharing `base`'s memory from element `offset` on (no copy).
    /// The byte offset must be a multiple of 256 (see [`ViewOf`]).
    pub fn view(
        &mut self,
        base: TensorId,
        offset: usize,
        shape: &[usize],
        name: impl Into<String>,
    ) -> Result<TensorId> {
        let b = self.desc(base).clone();
        ensure!(
            offset + numel(shape) <= b.numel(),
            "view of {shape:?} at element {offset} runs past {} {:?}",
            b.name,
            b.shape
        );
        let bytes = (self.root_offset(base) + offset) * b.dtype.size();
        ensure!(
            bytes.is_multiple_of(crate::runtime::pool::ALIGN as usize),
            "a view of {} must start on a 256-byte boundary (offset {bytes} bytes)",
            b.name
        );
        let id = self.add_tensor(name, shape, b.dtype, Role::Planned);
        // A view of a persistent tensor is resolved from it; the role only
        // matters to the planner, which follows the view to its root.
        self.tensors[id.0 as usize].view = Some(ViewOf { base, offset });
        Ok(id)
    }

    /// Declares a parameter (or returns the one already declared under this
    /// name, for tied weights; its shape must agree). `decay: None` chooses
    /// by rank: matrices and embedding tables decay, vectors do not.
    pub fn param_with(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        decay: Option<bool>,
    ) -> Result<TensorId> {
        if let Some(p) = self.params.iter().find(|p| p.name == name) {
            ensure!(
                self.shape(p.id) == shape,
                "parameter {name} is declared twice with different shapes: {:?} and {shape:?}",
                self.shape(p.id)
            );
            return Ok(p.id);
        }
        // A scalar parameter (shape [], as CLIP's logit_scale) holds one value.
        ensure!(
            shape.iter().all(|&d| d > 0),
            "parameter {name}: every dimension must be at least 1, got {shape:?}"
        );
        let id = self.add_tensor(name, shape, DType::F32, Role::Param);
        self.params.push(ParamInfo {
            name: name.to_string(),
            id,
            init,
            decay: decay.unwrap_or(shape.len() >= 2),
            trainable: true,
        });
        Ok(id)
    }

    /// [`Graph::param_with`] with decay chosen by rank.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Result<TensorId> {
        self.param_with(name, shape, init, None)
    }

    /// Freezes parameters whose name satisfies `pred` (call before
    /// [`Graph::backward`]): they get no gradient and no optimizer state.
    pub fn freeze(&mut self, pred: impl Fn(&str) -> bool) {
        for p in &mut self.params {
            if pred(&p.name) {
                p.trainable = false;
            }
        }
    }

    pub fn input(&mut self, name: &str, shape: &[usize], dtype: DType) -> TensorId {
        self.add_tensor(name, shape, dtype, Role::Input)
    }

    /// Input tensors by name, in creation order.
    pub fn inputs(&self) -> Vec<(String, TensorId)> {
        self.tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| t.role == Role::Input)
            .map(|(i, t)| (t.name.clone(), TensorId(i as u32)))
            .collect()
    }

    /// Marks a tensor as a result the caller reads after the step, so the
    /// planner never reuses its memory (for a view: the memory of its base).
    pub fn keep(&mut self, id: TensorId) {
        let root = self.root(id);
        let d = &mut self.tensors[root.0 as usize];
        if d.role == Role::Planned {
            d.role = Role::Output;
        }
    }

    /// Gives a tensor a clearer name (for dumps and [`Executor::named`]).
    pub fn rename(&mut self, id: TensorId, name: &str) {
        self.tensors[id.0 as usize].name = name.to_string();
    }

    pub fn param_id(&self, name: &str) -> Option<TensorId> {
        self.params.iter().find(|p| p.name == name).map(|p| p.id)
    }

    pub fn param_info(&self, id: TensorId) -> Option<&ParamInfo> {
        self.params.iter().find(|p| p.id == id)
    }

    /// Appends a node. Ops' builder functions (in `src/ops/`) create the
    /// output tensors with their shape rule, then call this.
    pub fn push_node(&mut self, op: impl Op + 'static, inputs: &[TensorId], outputs: &[TensorId]) {
        self.nodes.push(Node {
            op: Box::new(op),
            inputs: inputs.to_vec(),
            outputs: outputs.to_vec(),
        });
    }

    /// Total number of parameter elements.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| self.desc(p.id).numel()).sum()
    }

    /// Lowers the forward nodes to kernel steps without a backward pass
    /// (evaluation, sampling).
    pub fn forward_only(&mut self) -> Result<()> {
        ensure!(self.steps.is_empty(), "graph already lowered");
        self.n_forward_nodes = self.nodes.len();
        self.training = false;
        let steps = step::lower_nodes(self, 0..self.n_forward_nodes)?;
        self.n_forward_steps = steps.len();
        self.steps = steps;
        Ok(())
    }
}
