//! Reverse-mode autodiff: walks the forward ops backwards and appends the
//! kernel steps that compute every gradient.
//!
//! Gradient accumulation is decided here, at build time, so it happens in a
//! fixed order every step:
//! - a parameter's gradient is persistent, zeroed before each optimizer step,
//!   and every contribution adds into it (kernels run in accumulate mode);
//! - an activation's first contribution creates its gradient tensor, later
//!   ones add into it (matmul with β = 1, or a temporary plus an in-place add
//!   for kernels that only overwrite);
//! - a residual add passes its output gradient through: the first operand's
//!   gradient *is* the output's gradient tensor (no copy), which is safe
//!   because in reverse order the output's gradient has no reader left.

use std::collections::HashMap;

use anyhow::{bail, ensure, Result};

use super::step::{head_layouts, lower_forward, Step};
use super::{AttentionSaved, FwdOp, Graph, Role, TensorId};
use crate::kernels::matmul::MatmulSpec;
use crate::runtime::numel;

enum Target {
    /// A new gradient tensor: the kernel overwrites it.
    Fresh(TensorId),
    /// An existing gradient: the kernel must add into it.
    Accumulate(TensorId),
}

struct Backward<'g> {
    g: &'g mut Graph,
    grads: HashMap<TensorId, TensorId>,
    steps: Vec<Step>,
}

impl Backward<'_> {
    fn needs_grad(&self, x: TensorId) -> bool {
        self.g.desc(x).role != Role::Input
    }

    fn grad(&self, y: TensorId) -> Option<TensorId> {
        self.grads.get(&y).copied()
    }

    fn target(&mut self, x: TensorId) -> Target {
        if let Some(&pg) = self.g.param_grads.get(&x) {
            return Target::Accumulate(pg);
        }
        if let Some(&t) = self.grads.get(&x) {
            return Target::Accumulate(t);
        }
        let d = self.g.desc(x).clone();
        let t = self.g.planned(format!("grad.{}", d.name), &d.shape);
        self.grads.insert(x, t);
        Target::Fresh(t)
    }

    fn temp_like(&mut self, x: TensorId) -> TensorId {
        let d = self.g.desc(x).clone();
        self.g.planned(format!("grad.{}.part", d.name), &d.shape)
    }

    /// For kernels that can only overwrite their output: write straight into
    /// a fresh gradient, or into a temporary that is then added.
    fn contribute_overwrite(&mut self, x: TensorId, make: impl FnOnce(TensorId) -> Step) {
        match self.target(x) {
            Target::Fresh(t) => self.steps.push(make(t)),
            Target::Accumulate(acc) => {
                let tmp = self.temp_like(x);
                self.steps.push(make(tmp));
                self.steps.push(Step::AddInPlace { acc, addend: tmp });
            }
        }
    }

    /// dx contribution through a matmul: c = `spec` applied to (a, b) with
    /// β chosen by whether the target already holds a gradient.
    fn contribute_matmul(&mut self, x: TensorId, spec: MatmulSpec, a: TensorId, b: TensorId) {
        match self.target(x) {
            Target::Fresh(c) => self.steps.push(Step::Matmul {
                spec: spec.beta(0.0),
                a,
                b,
                bias: None,
                c,
            }),
            Target::Accumulate(c) => self.steps.push(Step::Matmul {
                spec: spec.beta(1.0),
                a,
                b,
                bias: None,
                c,
            }),
        }
    }

    fn op(&mut self, op: &FwdOp) -> Result<()> {
        match op.clone() {
            FwdOp::CrossEntropy { .. } => {} // its gradient was written in the forward pass
            FwdOp::Embedding {
                tokens,
                wte,
                wpe,
                out,
            } => {
                let Some(dy) = self.grad(out) else {
                    return Ok(());
                };
                let (Target::Accumulate(dwte), Target::Accumulate(dwpe)) =
                    (self.target(wte), self.target(wpe))
                else {
                    bail!("embedding tables must be parameters");
                };
                self.steps.push(Step::EmbeddingBackward {
                    tokens,
                    dout: dy,
                    dwte,
                    dwpe,
                });
            }
            FwdOp::LayerNorm {
                x,
                gamma,
                beta,
                mean,
                rstd,
                y,
                ..
            } => {
                let Some(dy) = self.grad(y) else {
                    return Ok(());
                };
                let (Target::Accumulate(dgamma), Target::Accumulate(dbeta)) =
                    (self.target(gamma), self.target(beta))
                else {
                    bail!("layernorm γ and β must be parameters");
                };
                self.contribute_overwrite(x, |dx| Step::LayerNormBackward {
                    dy,
                    x,
                    gamma,
                    mean,
                    rstd,
                    dx,
                    dgamma,
                    dbeta,
                    accumulate: true,
                });
            }
            FwdOp::Matmul {
                spec,
                a,
                b,
                bias,
                c,
            } => {
                let Some(dc) = self.grad(c) else {
                    return Ok(());
                };
                let contiguous = spec.batch == 1
                    || (spec.stride_a == spec.m * spec.k
                        && spec.stride_b == spec.k * spec.n
                        && spec.stride_c == spec.m * spec.n);
                ensure!(
                    contiguous,
                    "matmul backward needs contiguous batches (no broadcast)"
                );
                let (m, n, k, bt, al) = (spec.m, spec.n, spec.k, spec.batch, spec.alpha);
                if self.needs_grad(b) {
                    // dB = op(A)ᵀ·dC, or dCᵀ·op(A) when B is stored transposed.
                    let db = if spec.trans_b {
                        (
                            MatmulSpec::new(n, k, m).trans_a(true).trans_b(spec.trans_a),
                            dc,
                            a,
                        )
                    } else {
                        (MatmulSpec::new(k, n, m).trans_a(!spec.trans_a), a, dc)
                    };
                    self.contribute_matmul(b, db.0.batched(bt).alpha(al), db.1, db.2);
                }
                if let Some(bias) = bias {
                    let acc = match self.target(bias) {
                        Target::Fresh(t) => (t, false),
                        Target::Accumulate(t) => (t, true),
                    };
                    self.steps.push(Step::ColSum {
                        x: dc,
                        rows: bt * m,
                        cols: n,
                        out: acc.0,
                        accumulate: acc.1,
                    });
                }
                if self.needs_grad(a) {
                    // dA = dC·op(B)ᵀ, or op(B)·dCᵀ when A is stored transposed.
                    let da = if spec.trans_a {
                        (
                            MatmulSpec::new(k, m, n).trans_a(spec.trans_b).trans_b(true),
                            b,
                            dc,
                        )
                    } else {
                        (MatmulSpec::new(m, k, n).trans_b(!spec.trans_b), dc, b)
                    };
                    self.contribute_matmul(a, da.0.batched(bt).alpha(al), da.1, da.2);
                }
            }
            FwdOp::Gelu { x, y, kind } => {
                let Some(dy) = self.grad(y) else {
                    return Ok(());
                };
                self.contribute_overwrite(x, |dx| Step::GeluBackward { x, dy, dx, kind });
            }
            FwdOp::Add { a, b, out } => {
                let Some(dy) = self.grad(out) else {
                    return Ok(());
                };
                ensure!(a != b, "add(x, x) is not supported by autodiff; use scale");
                for (i, x) in [a, b].into_iter().enumerate() {
                    if !self.needs_grad(x) {
                        continue;
                    }
                    let fresh =
                        !self.grads.contains_key(&x) && !self.g.param_grads.contains_key(&x);
                    if fresh && i == 0 {
                        self.grads.insert(x, dy); // pass-through: share the tensor
                    } else if fresh {
                        let t = self.target(x);
                        let Target::Fresh(t) = t else { unreachable!() };
                        self.steps.push(Step::Copy { src: dy, dst: t });
                    } else {
                        let Target::Accumulate(acc) = self.target(x) else {
                            unreachable!()
                        };
                        self.steps.push(Step::AddInPlace { acc, addend: dy });
                    }
                }
            }
            FwdOp::Attention {
                qkv,
                out,
                attn,
                saved,
            } => {
                let Some(dy) = self.grad(out) else {
                    return Ok(());
                };
                let (qkv_l, out_l) = head_layouts(&attn);
                let (b, h, t, d) = (attn.batch, attn.heads, attn.seq, attn.head_dim);
                let bh = b * h;
                let scale = 1.0 / (d as f32).sqrt();
                let (q, k, v, y_heads) = saved.qkv_out();
                let dy_h = self.g.planned("grad.attn.y_heads", &[b, h, t, d]);
                let dq = self.g.planned("grad.attn.q", &[b, h, t, d]);
                let dk = self.g.planned("grad.attn.k", &[b, h, t, d]);
                let dv = self.g.planned("grad.attn.v", &[b, h, t, d]);
                self.steps.push(Step::ToHeads {
                    layout: out_l,
                    src: dy,
                    dst: dy_h,
                });
                match saved {
                    AttentionSaved::Fused { lse, .. } => {
                        self.steps.push(Step::AttentionBackward {
                            attn,
                            q,
                            k,
                            v,
                            o: y_heads,
                            lse,
                            d_o: dy_h,
                            dq,
                            dk,
                            dv,
                        });
                    }
                    AttentionSaved::Unfused { probs, .. } => {
                        let dprobs = self.g.planned("grad.attn.probs", &[bh, t, t]);
                        let dscores = self.g.planned("grad.attn.scores", &[bh, t, t]);
                        let s = &mut self.steps;
                        // y = P·V: dP = dY·Vᵀ, dV = Pᵀ·dY.
                        let dp_spec = MatmulSpec::new(t, t, d).batched(bh).trans_b(true);
                        s.push(Step::Matmul {
                            spec: dp_spec,
                            a: dy_h,
                            b: v,
                            bias: None,
                            c: dprobs,
                        });
                        let dv_spec = MatmulSpec::new(t, d, t).batched(bh).trans_a(true);
                        s.push(Step::Matmul {
                            spec: dv_spec,
                            a: probs,
                            b: dy_h,
                            bias: None,
                            c: dv,
                        });
                        s.push(Step::SoftmaxBackward {
                            y: probs,
                            dy: dprobs,
                            dx: dscores,
                        });
                        // S = scale·Q·Kᵀ: dQ = scale·dS·K, dK = scale·dSᵀ·Q.
                        let dq_spec = MatmulSpec::new(t, d, t).batched(bh).alpha(scale);
                        s.push(Step::Matmul {
                            spec: dq_spec,
                            a: dscores,
                            b: k,
                            bias: None,
                            c: dq,
                        });
                        let dk_spec = MatmulSpec::new(t, d, t)
                            .batched(bh)
                            .trans_a(true)
                            .alpha(scale);
                        s.push(Step::Matmul {
                            spec: dk_spec,
                            a: dscores,
                            b: q,
                            bias: None,
                            c: dk,
                        });
                    }
                }
                // The three from_heads fill disjoint thirds of d(qkv).
                let (dst, acc) = match self.target(qkv) {
                    Target::Fresh(t) => (t, None),
                    Target::Accumulate(acc) => (self.temp_like(qkv), Some(acc)),
                };
                for (l, src) in qkv_l.iter().zip([dq, dk, dv]) {
                    self.steps.push(Step::FromHeads {
                        layout: *l,
                        src,
                        dst,
                    });
                }
                if let Some(acc) = acc {
                    self.steps.push(Step::AddInPlace { acc, addend: dst });
                }
            }
        }
        Ok(())
    }
}

impl Graph {
    /// Makes this a training graph: the loss op also writes d(loss)/d(logits)
    /// (scaled by `grad_scale`, e.g. 1/accumulation steps), parameter
    /// gradients are created, and the forward and backward steps lowered.
    pub fn backward(&mut self, grad_scale: f32) -> Result<()> {
        ensure!(self.steps.is_empty(), "graph already lowered");
        let ce: Vec<usize> = (0..self.ops.len())
            .filter(|&i| matches!(self.ops[i], FwdOp::CrossEntropy { .. }))
            .collect();
        ensure!(
            ce.len() == 1,
            "backward needs exactly one loss op, found {}",
            ce.len()
        );
        let FwdOp::CrossEntropy { logits, .. } = self.ops[ce[0]] else {
            unreachable!()
        };
        let shape = self.shape(logits).to_vec();
        let dl = self.planned("grad.logits", &shape);
        if let FwdOp::CrossEntropy { dlogits, .. } = &mut self.ops[ce[0]] {
            *dlogits = Some(dl);
        }
        let grads = HashMap::from([(logits, dl)]);
        for (name, id) in self.params.clone() {
            let shape = self.shape(id).to_vec();
            let g = self.add_tensor_role(&format!("grad.{name}"), &shape, Role::ParamGrad);
            self.param_grads.insert(id, g);
        }
        self.training = true;
        let mut steps = lower_forward(self)?;
        for s in &mut steps {
            if let Step::CrossEntropy { grad_scale: gs, .. } = s {
                *gs = grad_scale;
            }
        }
        self.n_forward_steps = steps.len();
        let ops = self.ops.clone();
        let mut bw = Backward {
            g: self,
            grads,
            steps: Vec::new(),
        };
        for op in ops.iter().rev() {
            bw.op(op)?;
        }
        let back = bw.steps;
        steps.extend(back);
        self.steps = steps;
        Ok(())
    }

    fn add_tensor_role(&mut self, name: &str, shape: &[usize], role: Role) -> TensorId {
        let id = self.planned(name, shape);
        self.tensors[id.0 as usize].role = role;
        id
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.params
            .iter()
            .map(|(_, id)| numel(self.shape(*id)))
            .sum()
    }
}
