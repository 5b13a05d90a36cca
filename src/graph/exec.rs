//! The executor: allocates a graph's tensors once (parameters come from the
//! caller, activations from the memory plan), builds every bind group once,
//! and encodes a whole forward + backward pass into a command encoder.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};

use super::plan::{plan, MemoryPlan};
use super::{Graph, Role, TensorId};
use crate::runtime::{numel, DType, Dispatch, Gpu, Tensor};

/// Parameters (or any named tensors) on the GPU, by name.
pub type TensorMap = BTreeMap<String, Tensor>;

pub struct Executor {
    gpu: Gpu,
    pub graph: Graph,
    pub plan: MemoryPlan,
    tensors: Vec<Option<Tensor>>,
    /// The dispatches of each step, built once.
    dispatches: Vec<Vec<Dispatch>>,
    /// Physical buffers of the plan's slots.
    _slots: Vec<Tensor>,
}

impl Executor {
    /// Binds `graph` to the parameters in `params` (matched by name and
    /// shape) and allocates everything else.
    pub fn new(gpu: &Gpu, graph: Graph, params: &TensorMap) -> Result<Self> {
        Self::build(gpu, graph, params, true)
    }

    /// An executor with one buffer per tensor (no memory reuse), so that
    /// every intermediate can be read after a run: for diagnostics.
    pub fn unplanned(gpu: &Gpu, graph: Graph, params: &TensorMap) -> Result<Self> {
        Self::build(gpu, graph, params, false)
    }

    fn build(gpu: &Gpu, graph: Graph, params: &TensorMap, reuse: bool) -> Result<Self> {
        if graph.steps.is_empty() {
            bail!("graph has no steps: call forward_only() or backward() first");
        }
        let mut plan = plan(&graph)?;
        if !reuse {
            // One slot per planned tensor.
            let mut bytes = Vec::new();
            for (i, s) in plan.slot_of.iter_mut().enumerate() {
                if s.is_some() {
                    *s = Some(bytes.len());
                    bytes.push(graph.tensors[i].bytes());
                }
            }
            plan.slot_bytes = bytes;
        }
        let slots: Vec<Tensor> = plan
            .slot_bytes
            .iter()
            .map(|&b| gpu.empty(&[(b as usize).div_ceil(4).max(1)], DType::F32))
            .collect::<Result<_>>()
            .context("allocating activation buffers")?;
        let mut tensors: Vec<Option<Tensor>> = Vec::with_capacity(graph.tensors.len());
        for (i, d) in graph.tensors.iter().enumerate() {
            let t = if let Some(v) = d.view {
                // Bases come first (a view is created after its base); a view
                // of memory nothing touches is not placed either.
                match &tensors[v.base.0 as usize] {
                    Some(base) => Some(base.view(v.offset, &d.shape)?),
                    None => None,
                }
            } else {
                match d.role {
                    Role::Param => {
                        let p = params
                            .get(&d.name)
                            .ok_or_else(|| anyhow!("parameter {} is missing", d.name))?;
                        if p.shape() != d.shape.as_slice() {
                            bail!(
                                "parameter {} has shape {:?}, the model needs {:?}",
                                d.name,
                                p.shape(),
                                d.shape
                            );
                        }
                        Some(p.clone())
                    }
                    Role::ParamGrad | Role::Output | Role::Input => {
                        Some(gpu.zeros(&d.shape, d.dtype)?)
                    }
                    Role::Planned => match plan.slot_of[i] {
                        Some(s) => Some(
                            slots[s]
                                .retyped(d.dtype)?
                                .view(0, &[numel(&d.shape)])?
                                .reshape(&d.shape)?,
                        ),
                        None => None,
                    },
                }
            };
            tensors.push(t);
        }
        let resolve = |id: TensorId| -> Tensor {
            tensors[id.0 as usize]
                .clone()
                .expect("a step uses a tensor the plan did not place")
        };
        let mut dispatches = Vec::with_capacity(graph.steps.len());
        for (i, s) in graph.steps.iter().enumerate() {
            dispatches.push(
                s.build(gpu, &resolve)
                    .with_context(|| format!("building step {i} ({})", s.name))?,
            );
        }
        Ok(Self {
            gpu: gpu.clone(),
            graph,
            plan,
            tensors,
            dispatches,
            _slots: slots,
        })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    pub fn tensor(&self, id: TensorId) -> Option<&Tensor> {
        self.tensors[id.0 as usize].as_ref()
    }

    /// A non-planned tensor by name (inputs, outputs, parameter gradients).
    pub fn named(&self, name: &str) -> Result<&Tensor> {
        self.graph
            .tensors
            .iter()
            .position(|t| t.name == name && t.role != Role::Planned)
            .and_then(|i| self.tensors[i].as_ref())
            .ok_or_else(|| anyhow!("graph has no input/output tensor named {name:?}"))
    }

    /// The gradient of a parameter, by the parameter's name.
    pub fn param_grad(&self, name: &str) -> Option<&Tensor> {
        let id = self.graph.param_id(name)?;
        let g = self.graph.param_grads.get(&id)?;
        self.tensor(*g)
    }

    /// (name, gradient) of every trainable parameter, in declaration order.
    pub fn param_grads(&self) -> Vec<(String, Tensor)> {
        self.graph
            .params
            .iter()
            .filter_map(|p| {
                let g = self.graph.param_grads.get(&p.id)?;
                Some((p.name.clone(), self.tensor(*g)?.clone()))
            })
            .collect()
    }

    /// The dispatches of each step (parallel to `graph.steps`).
    pub fn step_dispatches(&self) -> &[Vec<Dispatch>] {
        &self.dispatches
    }

    pub fn dispatch_count(&self) -> usize {
        self.dispatches
            .iter()
            .flatten()
            .filter(|d| !d.workgroups.contains(&0))
            .count()
    }

    /// Clears every parameter gradient (call once per optimizer step, before
    /// the first micro-batch).
    pub fn encode_zero_grads(&self, enc: &mut wgpu::CommandEncoder) {
        for g in self.graph.param_grads.values() {
            if let Some(t) = self.tensor(*g) {
                enc.clear_buffer(t.buffer(), t.offset(), Some(t.bytes().div_ceil(4) * 4));
            }
        }
    }

    /// Encodes every step (forward, then backward if the graph trains) into
    /// one compute pass.
    pub fn encode(&self, enc: &mut wgpu::CommandEncoder) {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("kiln graph"),
            timestamp_writes: None,
        });
        for d in self.dispatches.iter().flatten() {
            d.encode(&mut pass);
        }
    }

    /// One pass: zero gradients (if training), run every step, submit.
    pub fn run(&self) -> wgpu::SubmissionIndex {
        let mut enc = self
            .gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kiln step"),
            });
        if self.graph.training {
            self.encode_zero_grads(&mut enc);
        }
        self.encode(&mut enc);
        self.gpu.queue().submit([enc.finish()])
    }
}
