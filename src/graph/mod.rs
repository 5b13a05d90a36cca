//! The graph executor: a model is described once as a list of forward ops
//! over tensor ids ([`Graph`]); [`autodiff`] appends the backward ops;
//! [`plan`] places activations and temporaries in a reused set of buffers;
//! [`exec`] turns every op into pre-built dispatches and runs a whole step
//! as one command encoder and one submit.
//!
//! Two levels of op: [`FwdOp`] is what a model is written in (a linear layer,
//! attention, a layer norm), and carries the rule for its gradient; [`Step`]
//! is one kernel call of the library, what actually runs, forward and back.

pub mod autodiff;
pub mod dump;
pub mod exec;
pub mod plan;
pub mod step;

use std::collections::HashMap;

use anyhow::{bail, ensure, Result};

use crate::kernels::gelu::GeluKind;
use crate::kernels::matmul::MatmulSpec;
use crate::runtime::{numel, DType};

pub use exec::Executor;
pub use plan::MemoryPlan;
pub use step::Step;

/// Index of a tensor in its [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub u32);

/// Where a tensor's memory comes from, and how long it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A trainable parameter, owned by the [`ParamStore`](crate::model::ParamStore).
    Param,
    /// The gradient of a parameter: persistent, zeroed at the start of each
    /// optimizer step and accumulated into (so micro-batches add up).
    ParamGrad,
    /// Written from the host before each step (tokens, targets).
    Input,
    /// Kept after the step for the caller to read (the loss, logits if asked).
    Output,
    /// Everything else: forward activations, backward temporaries, the
    /// gradients of activations. Placed by the memory planner.
    Planned,
}

#[derive(Clone, Debug)]
pub struct TensorDesc {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub role: Role,
}

impl TensorDesc {
    pub fn bytes(&self) -> u64 {
        (numel(&self.shape) * self.dtype.size()) as u64
    }
}

/// Which attention kernels to use.
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
        Ok(match setting {
            "fused" => Self::Fused,
            "unfused" => Self::Unfused,
            "auto" | "" if gpu.is_cpu() => Self::Unfused,
            "auto" | "" => Self::Fused,
            other => bail!("attention {other:?}: expected fused, unfused or auto"),
        })
    }
}

/// A model-level op: the unit of the gradient rules in [`autodiff`].
#[derive(Clone, Debug)]
pub enum FwdOp {
    Embedding {
        tokens: TensorId,
        wte: TensorId,
        wpe: TensorId,
        out: TensorId,
    },
    LayerNorm {
        x: TensorId,
        gamma: TensorId,
        beta: TensorId,
        y: TensorId,
        mean: TensorId,
        rstd: TensorId,
        eps: f32,
    },
    /// c = α·op(a)·op(b) (+ bias), see [`MatmulSpec`].
    Matmul {
        spec: MatmulSpec,
        a: TensorId,
        b: TensorId,
        bias: Option<TensorId>,
        c: TensorId,
    },
    Gelu {
        x: TensorId,
        y: TensorId,
        kind: GeluKind,
    },
    Add {
        a: TensorId,
        b: TensorId,
        out: TensorId,
    },
    /// Multi-head self-attention on a fused qkv [B, T, 3C] → out [B, T, C].
    Attention {
        qkv: TensorId,
        out: TensorId,
        attn: AttentionShape,
        saved: AttentionSaved,
    },
    /// Mean cross-entropy of logits [rows, V] against targets [rows].
    CrossEntropy {
        logits: TensorId,
        targets: TensorId,
        losses: TensorId,
        loss: TensorId,
        /// Present when the graph trains: the fused kernel writes the
        /// gradient of the loss w.r.t. the logits in the forward pass.
        dlogits: Option<TensorId>,
        ignore_index: i32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub causal: bool,
}

/// Intermediates of an attention op kept for the backward pass. q, k, v and
/// the output are head-major [B, H, T, D] in both variants.
#[derive(Clone, Debug)]
pub enum AttentionSaved {
    Unfused {
        q: TensorId,
        k: TensorId,
        v: TensorId,
        /// Raw scores q·kᵀ [B·H, T, T]: a temporary, dead once softmax ran.
        scores: TensorId,
        /// Probabilities [B·H, T, T].
        probs: TensorId,
        y_heads: TensorId,
    },
    Fused {
        q: TensorId,
        k: TensorId,
        v: TensorId,
        y_heads: TensorId,
        /// Row log-sum-exp of the scaled, masked scores [B·H, T].
        lse: TensorId,
    },
}

impl AttentionSaved {
    /// (q, k, v, output), head-major.
    pub fn qkv_out(&self) -> (TensorId, TensorId, TensorId, TensorId) {
        match *self {
            AttentionSaved::Unfused {
                q, k, v, y_heads, ..
            }
            | AttentionSaved::Fused {
                q, k, v, y_heads, ..
            } => (q, k, v, y_heads),
        }
    }
}

/// A model's computation at one batch shape: tensors, forward ops, and (once
/// [`Graph::backward`] ran) the lowered forward and backward kernel steps.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub tensors: Vec<TensorDesc>,
    pub ops: Vec<FwdOp>,
    /// Parameters by name, in creation order.
    pub params: Vec<(String, TensorId)>,
    /// Parameter → its gradient (filled by [`Graph::backward`]).
    pub param_grads: HashMap<TensorId, TensorId>,
    /// Forward then backward kernel calls, in execution order.
    pub steps: Vec<Step>,
    /// How many of `steps` are the forward pass.
    pub n_forward_steps: usize,
    pub training: bool,
    /// The attention kernels [`Graph::self_attention`] lowers to (None: the
    /// default, [`AttentionImpl::Fused`]).
    pub attention: Option<AttentionImpl>,
}

impl Graph {
    pub fn new() -> Self {
        Self {
            attention: Some(AttentionImpl::default()),
            ..Default::default()
        }
    }

    /// A graph whose attention ops use `attention`.
    pub fn with_attention(attention: AttentionImpl) -> Self {
        Self {
            attention: Some(attention),
            ..Default::default()
        }
    }

    pub fn desc(&self, id: TensorId) -> &TensorDesc {
        &self.tensors[id.0 as usize]
    }
    pub fn shape(&self, id: TensorId) -> &[usize] {
        &self.tensors[id.0 as usize].shape
    }

    fn add_tensor(
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
        });
        id
    }

    /// A planned f32 tensor (activation or temporary).
    pub fn planned(&mut self, name: impl Into<String>, shape: &[usize]) -> TensorId {
        self.add_tensor(name, shape, DType::F32, Role::Planned)
    }

    pub fn param(&mut self, name: &str, shape: &[usize]) -> TensorId {
        let id = self.add_tensor(name, shape, DType::F32, Role::Param);
        self.params.push((name.to_string(), id));
        id
    }

    pub fn input(&mut self, name: &str, shape: &[usize], dtype: DType) -> TensorId {
        self.add_tensor(name, shape, dtype, Role::Input)
    }

    /// Marks a tensor as a result the caller reads after the step, so the
    /// planner never reuses its memory.
    pub fn keep(&mut self, id: TensorId) {
        let d = &mut self.tensors[id.0 as usize];
        if d.role == Role::Planned {
            d.role = Role::Output;
        }
    }

    /// Gives a tensor a clearer name (for dumps and [`Executor::named`]).
    pub fn rename(&mut self, id: TensorId, name: &str) {
        self.tensors[id.0 as usize].name = name.to_string();
    }

    pub fn param_id(&self, name: &str) -> Option<TensorId> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }

    // ---- model-building ops -------------------------------------------------

    /// Token plus position embedding: tokens [B, T] → [B, T, C].
    pub fn embedding(
        &mut self,
        tokens: TensorId,
        wte: TensorId,
        wpe: TensorId,
    ) -> Result<TensorId> {
        let (ts, es) = (self.shape(tokens).to_vec(), self.shape(wte).to_vec());
        ensure!(
            ts.len() == 2 && es.len() == 2,
            "embedding: tokens must be [B, T] and wte [V, C]"
        );
        ensure!(
            self.shape(wpe)[0] >= ts[1] && self.shape(wpe)[1] == es[1],
            "embedding: wpe {:?} cannot serve T = {} with C = {}",
            self.shape(wpe),
            ts[1],
            es[1]
        );
        let out = self.planned("embed", &[ts[0], ts[1], es[1]]);
        self.ops.push(FwdOp::Embedding {
            tokens,
            wte,
            wpe,
            out,
        });
        Ok(out)
    }

    /// LayerNorm over the last dimension.
    pub fn layernorm(
        &mut self,
        x: TensorId,
        gamma: TensorId,
        beta: TensorId,
        eps: f32,
    ) -> Result<TensorId> {
        let shape = self.shape(x).to_vec();
        let c = *shape.last().unwrap_or(&0);
        ensure!(
            self.shape(gamma) == [c] && self.shape(beta) == [c],
            "layernorm: γ/β must be [{c}] for input {shape:?}"
        );
        let rows = numel(&shape) / c;
        let name = self
            .desc(gamma)
            .name
            .trim_end_matches(".weight")
            .to_string();
        let y = self.planned(format!("{name}.out"), &shape);
        let mean = self.planned(format!("{name}.mean"), &[rows]);
        let rstd = self.planned(format!("{name}.rstd"), &[rows]);
        self.ops.push(FwdOp::LayerNorm {
            x,
            gamma,
            beta,
            y,
            mean,
            rstd,
            eps,
        });
        Ok(y)
    }

    /// y = x·W (+ b) over the last dimension of x, W stored [in, out] as in
    /// Hugging Face's GPT-2 Conv1D (or [out, in] with `trans_w`).
    pub fn linear(
        &mut self,
        x: TensorId,
        w: TensorId,
        bias: Option<TensorId>,
        trans_w: bool,
    ) -> Result<TensorId> {
        let xs = self.shape(x).to_vec();
        let ws = self.shape(w).to_vec();
        ensure!(
            ws.len() == 2,
            "linear: weight {} must be 2-D, is {ws:?}",
            self.desc(w).name
        );
        let (k_in, n_out) = if trans_w {
            (ws[1], ws[0])
        } else {
            (ws[0], ws[1])
        };
        let k = *xs.last().unwrap_or(&0);
        ensure!(
            k == k_in,
            "linear: input {xs:?} has last dim {k} but weight {} {ws:?} expects {k_in}",
            self.desc(w).name
        );
        if let Some(b) = bias {
            ensure!(self.shape(b) == [n_out], "linear: bias must be [{n_out}]");
        }
        let rows = numel(&xs) / k;
        let mut ys = xs.clone();
        *ys.last_mut().unwrap() = n_out;
        let name = self.desc(w).name.trim_end_matches(".weight").to_string();
        let c = self.planned(format!("{name}.out"), &ys);
        let spec = MatmulSpec::new(rows, n_out, k).trans_b(trans_w);
        self.ops.push(FwdOp::Matmul {
            spec,
            a: x,
            b: w,
            bias,
            c,
        });
        Ok(c)
    }

    pub fn gelu(&mut self, x: TensorId, kind: GeluKind) -> TensorId {
        let shape = self.shape(x).to_vec();
        let y = self.planned(format!("{}.gelu", self.desc(x).name), &shape);
        self.ops.push(FwdOp::Gelu { x, y, kind });
        y
    }

    pub fn add(&mut self, a: TensorId, b: TensorId) -> Result<TensorId> {
        ensure!(
            self.shape(a) == self.shape(b),
            "add: shapes {:?} and {:?} differ",
            self.shape(a),
            self.shape(b)
        );
        let shape = self.shape(a).to_vec();
        let out = self.planned("residual", &shape);
        self.ops.push(FwdOp::Add { a, b, out });
        Ok(out)
    }

    /// Multi-head self-attention on qkv [B, T, 3C] (q, k, v side by side as
    /// GPT-2's c_attn produces them); returns [B, T, C] before the output projection.
    pub fn self_attention(
        &mut self,
        qkv: TensorId,
        heads: usize,
        causal: bool,
    ) -> Result<TensorId> {
        let s = self.shape(qkv).to_vec();
        ensure!(
            s.len() == 3 && s[2].is_multiple_of(3),
            "attention: qkv must be [B, T, 3C], is {s:?}"
        );
        let (b, t, c) = (s[0], s[1], s[2] / 3);
        ensure!(
            heads > 0 && c % heads == 0,
            "attention: C = {c} is not divisible by {heads} heads"
        );
        let d = c / heads;
        let attn = AttentionShape {
            batch: b,
            seq: t,
            heads,
            head_dim: d,
            causal,
        };
        let q = self.planned("attn.q", &[b, heads, t, d]);
        let k = self.planned("attn.k", &[b, heads, t, d]);
        let v = self.planned("attn.v", &[b, heads, t, d]);
        let saved = match self.attention.unwrap_or_default() {
            AttentionImpl::Unfused => AttentionSaved::Unfused {
                q,
                k,
                v,
                scores: self.planned("attn.scores", &[b * heads, t, t]),
                probs: self.planned("attn.probs", &[b * heads, t, t]),
                y_heads: self.planned("attn.y_heads", &[b, heads, t, d]),
            },
            AttentionImpl::Fused => {
                ensure!(
                    d <= crate::kernels::attention::MAX_HEAD_DIM,
                    "attention: head_dim {d} exceeds the fused kernel's {}; use \
                     AttentionImpl::Unfused",
                    crate::kernels::attention::MAX_HEAD_DIM
                );
                AttentionSaved::Fused {
                    q,
                    k,
                    v,
                    y_heads: self.planned("attn.y_heads", &[b, heads, t, d]),
                    lse: self.planned("attn.lse", &[b * heads, t]),
                }
            }
        };
        let out = self.planned("attn.out", &[b, t, c]);
        self.ops.push(FwdOp::Attention {
            qkv,
            out,
            attn,
            saved,
        });
        Ok(out)
    }

    /// Mean cross-entropy; returns the loss tensor [1] (kept for reading).
    pub fn cross_entropy(
        &mut self,
        logits: TensorId,
        targets: TensorId,
        ignore_index: i32,
    ) -> Result<TensorId> {
        let ls = self.shape(logits).to_vec();
        let rows = numel(&ls) / ls.last().copied().unwrap_or(1);
        ensure!(
            numel(self.shape(targets)) == rows,
            "cross_entropy: {} targets for {rows} rows of logits {ls:?}",
            numel(self.shape(targets))
        );
        let losses = self.planned("losses", &[rows]);
        let loss = self.add_tensor("loss", &[1], DType::F32, Role::Output);
        self.ops.push(FwdOp::CrossEntropy {
            logits,
            targets,
            losses,
            loss,
            dlogits: None,
            ignore_index,
        });
        Ok(loss)
    }

    /// Lowers the forward ops to kernel steps without a backward pass
    /// (evaluation, sampling).
    pub fn forward_only(&mut self) -> Result<()> {
        if !self.steps.is_empty() {
            bail!("graph already lowered");
        }
        self.training = false;
        self.steps = step::lower_forward(self)?;
        self.n_forward_steps = self.steps.len();
        Ok(())
    }
}
