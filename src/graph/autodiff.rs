//! Reverse-mode autodiff over any graph: walks the forward nodes backwards
//! and lets each op's gradient rule append the steps that compute the
//! gradients of its inputs.
//!
//! - Any number of losses: the total is Σ wᵢ·lossᵢ; each loss is seeded with
//!   the constant wᵢ·grad_scale, so a loss op can fold it into its kernel.
//! - Fan-out and tied weights: a tensor's first contribution creates its
//!   gradient, later ones add into it — decided here, at build time, so the
//!   sum happens in a fixed order every step (no atomics).
//! - A parameter's gradient is persistent, zeroed before each optimizer step
//!   and always accumulated into (so micro-batches add up).
//! - Inputs, frozen parameters and anything that does not depend on a
//!   trainable parameter need no gradient: nothing is computed for them.
//! - A gradient passed through unchanged (a residual add, a reshape) is not
//!   copied: the input's gradient *is* the output's gradient tensor. That is
//!   safe because in reverse order the output's gradient has no reader left
//!   once its producer has been visited.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, ensure, Context, Result};

use super::op::{HostTensor, NodeIo, Op};
use super::step::{lower_node, lower_nodes, Lowering, Step};
use super::{Graph, Role, TensorId};
use crate::kernels::elementwise;
use crate::runtime::{numel, DType};

/// Placeholder left in a node while its op is taken out to be called.
#[derive(Debug)]
pub(crate) struct Taken;

impl Op for Taken {
    fn name(&self) -> &'static str {
        "taken"
    }
    fn lower(&self, _: &NodeIo, _: &mut Lowering<'_>) -> Result<()> {
        bail!("internal: a node's op was used while taken out")
    }
    fn backward(&mut self, _: &NodeIo, _: &mut super::autodiff::Backward<'_>) -> Result<()> {
        bail!("internal: a node's op was used while taken out")
    }
    fn reference(&self, _: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        bail!("internal: a node's op was used while taken out")
    }
}

/// The gradient of an output, as a rule sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Grad {
    Tensor(TensorId),
    /// A loss seed: the gradient is this constant (the tensor is a scalar).
    Const(f32),
}

/// Where a contribution to a gradient goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A new gradient tensor: the kernel overwrites it.
    Fresh(TensorId),
    /// An existing gradient: the kernel must add into it.
    Accumulate(TensorId),
}

/// The state of a backward pass, handed to every gradient rule.
pub struct Backward<'g> {
    pub g: &'g mut Graph,
    grads: HashMap<TensorId, TensorId>,
    seeds: HashMap<TensorId, f32>,
    requires: Vec<bool>,
    /// Gradient memory (by root) → the tensor whose gradient it is. A rule
    /// may hand its outputs' gradients on to an input (they have no reader
    /// left), but never one tensor's gradient to two.
    owned: HashMap<TensorId, TensorId>,
    /// Outputs of the node whose rule is running.
    current: Vec<TensorId>,
    steps: Vec<Step>,
}

impl Backward<'_> {
    /// The gradient of `y`, if anything downstream contributed one.
    pub fn grad(&self, y: TensorId) -> Option<Grad> {
        if let Some(&t) = self.grads.get(&y) {
            return Some(Grad::Tensor(t));
        }
        self.seeds.get(&y).map(|&c| Grad::Const(c))
    }

    /// The gradient of `y` as a tensor (a loss seed is filled into one).
    pub fn grad_tensor(&mut self, y: TensorId) -> Result<Option<TensorId>> {
        match self.grad(y) {
            None => Ok(None),
            Some(Grad::Tensor(t)) => Ok(Some(t)),
            Some(Grad::Const(c)) => Ok(Some(self.materialize_seed(y, c)?)),
        }
    }

    fn materialize_seed(&mut self, y: TensorId, c: f32) -> Result<TensorId> {
        let shape = self.g.shape(y).to_vec();
        let name = format!("grad.{}", self.g.name(y));
        let t = self.g.planned(name, &shape);
        self.steps.push(
            Step::new("fill", move |gpu, r| {
                Ok(vec![elementwise::fill(gpu, &r(t), c)?])
            })
            .writes([t]),
        );
        self.seeds.remove(&y);
        self.grads.insert(y, t);
        self.owned.insert(t, y);
        Ok(t)
    }

    /// Whether `x` needs a gradient (it depends on a trainable parameter).
    pub fn needs_grad(&self, x: TensorId) -> bool {
        self.requires.get(x.0 as usize).copied().unwrap_or(false)
    }

    /// Whether d`x` already exists (a parameter's gradient, or an earlier
    /// contribution): the next contribution must add into it.
    pub fn has_grad(&self, x: TensorId) -> bool {
        self.g.param_grads.contains_key(&x)
            || self.grads.contains_key(&x)
            || self.seeds.contains_key(&x)
    }

    /// Where the next contribution to d`x` goes.
    pub fn target(&mut self, x: TensorId) -> Result<Target> {
        if let Some(&pg) = self.g.param_grads.get(&x) {
            return Ok(Target::Accumulate(pg));
        }
        if let Some(c) = self.seeds.get(&x).copied() {
            return Ok(Target::Accumulate(self.materialize_seed(x, c)?));
        }
        if let Some(&t) = self.grads.get(&x) {
            return Ok(Target::Accumulate(t));
        }
        ensure!(
            self.g.desc(x).role != Role::Param,
            "internal: parameter {} needs a gradient but has none",
            self.g.name(x)
        );
        let d = self.g.desc(x).clone();
        let t = self.g.planned(format!("grad.{}", d.name), &d.shape);
        self.grads.insert(x, t);
        self.owned.insert(t, x);
        Ok(Target::Fresh(t))
    }

    /// A planned temporary of `x`'s shape.
    pub fn temp_like(&mut self, x: TensorId) -> TensorId {
        let d = self.g.desc(x).clone();
        self.g.planned(format!("grad.{}.part", d.name), &d.shape)
    }

    /// A planned temporary.
    pub fn temp(&mut self, name: impl Into<String>, shape: &[usize], dtype: DType) -> TensorId {
        self.g.planned_typed(name, shape, dtype)
    }

    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// For kernels that can only overwrite their output: write straight into
    /// a fresh gradient, or into a temporary that is then added.
    pub fn contribute_overwrite(
        &mut self,
        x: TensorId,
        make: impl FnOnce(TensorId) -> Step,
    ) -> Result<()> {
        match self.target(x)? {
            Target::Fresh(t) => self.steps.push(make(t)),
            Target::Accumulate(acc) => {
                let tmp = self.temp_like(x);
                self.steps.push(make(tmp));
                self.push_add(acc, tmp);
            }
        }
        Ok(())
    }

    /// For kernels with an accumulate mode: `make(target, accumulate)`.
    pub fn contribute_with(
        &mut self,
        x: TensorId,
        make: impl FnOnce(TensorId, bool) -> Step,
    ) -> Result<()> {
        let step = match self.target(x)? {
            Target::Fresh(t) => make(t, false),
            Target::Accumulate(t) => make(t, true),
        };
        self.steps.push(step);
        Ok(())
    }

    /// Adds the tensor `value` (same element count as `x`) to d`x`. When d`x`
    /// is fresh, `value` becomes it (a view if the shapes differ), unless
    /// `value` already serves as another tensor's gradient: then it is copied.
    pub fn contribute(&mut self, x: TensorId, value: TensorId) -> Result<()> {
        let (xs, vs) = (self.g.shape(x).to_vec(), self.g.shape(value).to_vec());
        ensure!(
            numel(&xs) == numel(&vs),
            "internal: a gradient of shape {vs:?} contributed to {} {xs:?}",
            self.g.name(x)
        );
        let fresh = !self.has_grad(x);
        let root = self.g.root(value);
        let persistent = self.g.desc(root).role != Role::Planned;
        let free = match self.owned.get(&root) {
            None => true,
            Some(owner) => self.current.contains(owner),
        };
        if fresh && free && !persistent {
            let t = if xs == vs {
                value
            } else {
                let name = format!("grad.{}", self.g.name(x));
                self.g.view(value, 0, &xs, name)?
            };
            self.owned.insert(root, x);
            self.grads.insert(x, t);
            return Ok(());
        }
        let src = self.same_shape(value, &xs)?;
        match self.target(x)? {
            Target::Fresh(t) => {
                self.steps.push(
                    Step::new("copy", move |gpu, r| {
                        Ok(vec![elementwise::copy(gpu, &r(src), &r(t))?])
                    })
                    .reads([src])
                    .writes([t]),
                );
            }
            Target::Accumulate(acc) => {
                if self.g.root(acc) == self.g.root(src) {
                    // add(x, x): never bind one buffer as both operands.
                    let tmp = self.temp_like(x);
                    self.steps.push(
                        Step::new("copy", move |gpu, r| {
                            Ok(vec![elementwise::copy(gpu, &r(src), &r(tmp))?])
                        })
                        .reads([src])
                        .writes([tmp]),
                    );
                    self.push_add(acc, tmp);
                } else {
                    self.push_add(acc, src);
                }
            }
        }
        Ok(())
    }

    /// `value` with shape `shape` (a view when it differs).
    fn same_shape(&mut self, value: TensorId, shape: &[usize]) -> Result<TensorId> {
        if self.g.shape(value) == shape {
            Ok(value)
        } else {
            let name = format!("{}.as{shape:?}", self.g.name(value));
            self.g.view(value, 0, shape, name)
        }
    }

    fn push_add(&mut self, acc: TensorId, addend: TensorId) {
        self.steps.push(
            Step::new("add_inplace", move |gpu, r| {
                Ok(vec![elementwise::add_inplace(gpu, &r(acc), &r(addend))?])
            })
            .reads([addend])
            .accumulates([acc]),
        );
    }

    /// Runs graph-building code inside a gradient rule (a rule written in
    /// terms of other ops): the nodes it creates are lowered into the
    /// backward pass right here, in order.
    pub fn emit<R>(&mut self, f: impl FnOnce(&mut Graph) -> Result<R>) -> Result<R> {
        let mark = self.g.nodes.len();
        let r = f(self.g)?;
        let mut cx = Lowering {
            g: self.g,
            steps: std::mem::take(&mut self.steps),
        };
        let mut res = Ok(());
        for i in mark..cx.g.nodes.len() {
            res = lower_node(&mut cx, i);
            if res.is_err() {
                break;
            }
        }
        self.steps = cx.steps;
        res?;
        Ok(r)
    }
}

impl Graph {
    /// Makes this a training graph for the total loss Σ wᵢ·lossᵢ (each loss
    /// a one-element tensor), its gradient scaled by `grad_scale` (e.g. 1 /
    /// accumulation steps): creates the parameter gradients, runs every
    /// gradient rule, then lowers the forward and backward steps.
    pub fn backward(&mut self, losses: &[(TensorId, f32)], grad_scale: f32) -> Result<()> {
        ensure!(self.steps.is_empty(), "graph already lowered");
        ensure!(
            !losses.is_empty(),
            "backward needs at least one loss tensor"
        );
        for &(l, w) in losses {
            ensure!(
                numel(self.shape(l)) == 1,
                "loss {} has shape {:?}; a loss must be a single value",
                self.name(l),
                self.shape(l)
            );
            ensure!(w.is_finite(), "loss {} has weight {w}", self.name(l));
        }
        self.n_forward_nodes = self.nodes.len();
        self.losses = losses.to_vec();
        // The caller reads the losses after the step.
        for &(l, _) in losses {
            self.keep(l);
        }

        // What depends on a trainable parameter.
        let mut requires = vec![false; self.tensors.len()];
        for p in &self.params {
            requires[p.id.0 as usize] = p.trainable;
        }
        for n in &self.nodes {
            if n.inputs.iter().any(|i| requires[i.0 as usize]) {
                for o in &n.outputs {
                    requires[o.0 as usize] = true;
                }
            }
        }
        let used: HashSet<TensorId> = self.nodes.iter().flat_map(|n| n.inputs.clone()).collect();
        for p in self.params.clone() {
            if p.trainable && used.contains(&p.id) {
                let shape = self.shape(p.id).to_vec();
                let g = self.add_tensor(
                    format!("grad.{}", p.name),
                    &shape,
                    DType::F32,
                    Role::ParamGrad,
                );
                self.param_grads.insert(p.id, g);
            }
        }
        let mut seeds = HashMap::new();
        for &(l, w) in losses {
            *seeds.entry(l).or_insert(0.0) += w * grad_scale;
        }
        self.training = true;

        let n_fwd = self.n_forward_nodes;
        let mut bw = Backward {
            g: self,
            grads: HashMap::new(),
            seeds,
            requires,
            owned: HashMap::new(),
            current: Vec::new(),
            steps: Vec::new(),
        };
        for i in (0..n_fwd).rev() {
            let outs = bw.g.nodes[i].outputs.clone();
            if !outs.iter().any(|o| bw.grad(*o).is_some()) {
                continue;
            }
            let mut op = std::mem::replace(&mut bw.g.nodes[i].op, Box::new(Taken));
            bw.current = outs.clone();
            let io = NodeIo {
                inputs: bw.g.nodes[i].inputs.clone(),
                outputs: outs,
            };
            let r = op
                .backward(&io, &mut bw)
                .with_context(|| format!("gradient of node {i} ({})", op.name()));
            bw.g.nodes[i].op = op;
            r?;
        }
        let back = bw.steps;
        let mut steps = lower_nodes(self, 0..n_fwd)?;
        self.n_forward_steps = steps.len();
        steps.extend(back);
        self.steps = steps;
        Ok(())
    }
}
