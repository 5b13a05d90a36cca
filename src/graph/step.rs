//! Kernel steps: one call into the kernel library each, over tensor ids.

use anyhow::Result;

use super::{AttentionSaved, AttentionShape, FwdOp, Graph, TensorId};
use crate::kernels::attention::AttentionSpec;
use crate::kernels::gelu::GeluKind;
use crate::kernels::heads::HeadLayout;
use crate::kernels::matmul::MatmulSpec;
use crate::kernels::{
    attention, crossentropy, elementwise, embedding, gelu, heads, layernorm, matmul, reduce,
    softmax,
};
use crate::runtime::{Dispatch, Gpu, Tensor};

#[derive(Clone, Debug)]
pub enum Step {
    Embedding {
        tokens: TensorId,
        wte: TensorId,
        wpe: TensorId,
        out: TensorId,
    },
    /// Accumulates into dwte and dwpe.
    EmbeddingBackward {
        tokens: TensorId,
        dout: TensorId,
        dwte: TensorId,
        dwpe: TensorId,
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
    LayerNormBackward {
        dy: TensorId,
        x: TensorId,
        gamma: TensorId,
        mean: TensorId,
        rstd: TensorId,
        dx: TensorId,
        dgamma: TensorId,
        dbeta: TensorId,
        accumulate: bool,
    },
    /// `spec.beta != 0` reads and accumulates into c.
    Matmul {
        spec: MatmulSpec,
        a: TensorId,
        b: TensorId,
        bias: Option<TensorId>,
        c: TensorId,
    },
    ColSum {
        x: TensorId,
        rows: usize,
        cols: usize,
        out: TensorId,
        accumulate: bool,
    },
    Gelu {
        x: TensorId,
        y: TensorId,
        kind: GeluKind,
    },
    GeluBackward {
        x: TensorId,
        dy: TensorId,
        dx: TensorId,
        kind: GeluKind,
    },
    Add {
        a: TensorId,
        b: TensorId,
        out: TensorId,
    },
    AddInPlace {
        acc: TensorId,
        addend: TensorId,
    },
    Copy {
        src: TensorId,
        dst: TensorId,
    },
    Softmax {
        x: TensorId,
        y: TensorId,
        scale: f32,
        causal: Option<usize>,
    },
    SoftmaxBackward {
        y: TensorId,
        dy: TensorId,
        dx: TensorId,
    },
    /// Fused attention forward on head-major q, k, v: writes o and the row
    /// log-sum-exp.
    Attention {
        attn: AttentionShape,
        q: TensorId,
        k: TensorId,
        v: TensorId,
        o: TensorId,
        lse: TensorId,
    },
    /// Fused attention backward: overwrites dq, dk, dv.
    AttentionBackward {
        attn: AttentionShape,
        q: TensorId,
        k: TensorId,
        v: TensorId,
        o: TensorId,
        lse: TensorId,
        d_o: TensorId,
        dq: TensorId,
        dk: TensorId,
        dv: TensorId,
    },
    ToHeads {
        layout: HeadLayout,
        src: TensorId,
        dst: TensorId,
    },
    FromHeads {
        layout: HeadLayout,
        src: TensorId,
        dst: TensorId,
    },
    CrossEntropy {
        logits: TensorId,
        targets: TensorId,
        losses: TensorId,
        loss: TensorId,
        dlogits: Option<TensorId>,
        ignore_index: i32,
        grad_scale: f32,
    },
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Embedding { .. } => "embedding",
            Step::EmbeddingBackward { .. } => "embedding_backward",
            Step::LayerNorm { .. } => "layernorm",
            Step::LayerNormBackward { .. } => "layernorm_backward",
            Step::Matmul { .. } => "matmul",
            Step::ColSum { .. } => "col_sum",
            Step::Gelu { .. } => "gelu",
            Step::GeluBackward { .. } => "gelu_backward",
            Step::Add { .. } => "add",
            Step::AddInPlace { .. } => "add_inplace",
            Step::Copy { .. } => "copy",
            Step::Softmax { .. } => "softmax",
            Step::SoftmaxBackward { .. } => "softmax_backward",
            Step::Attention { .. } => "attention",
            Step::AttentionBackward { .. } => "attention_backward",
            Step::ToHeads { .. } => "to_heads",
            Step::FromHeads { .. } => "from_heads",
            Step::CrossEntropy { .. } => "cross_entropy",
        }
    }

    /// Tensors read (including those accumulated into, which must hold a
    /// value before the step).
    pub fn reads(&self) -> Vec<TensorId> {
        match *self {
            Step::Embedding {
                tokens, wte, wpe, ..
            } => vec![tokens, wte, wpe],
            Step::EmbeddingBackward {
                tokens,
                dout,
                dwte,
                dwpe,
            } => vec![tokens, dout, dwte, dwpe],
            Step::LayerNorm { x, gamma, beta, .. } => vec![x, gamma, beta],
            Step::LayerNormBackward {
                dy,
                x,
                gamma,
                mean,
                rstd,
                dgamma,
                dbeta,
                accumulate,
                ..
            } => {
                let mut v = vec![dy, x, gamma, mean, rstd];
                if accumulate {
                    v.extend([dgamma, dbeta]);
                }
                v
            }
            Step::Matmul {
                spec,
                a,
                b,
                bias,
                c,
            } => {
                let mut v = vec![a, b];
                v.extend(bias);
                if spec.beta != 0.0 {
                    v.push(c);
                }
                v
            }
            Step::ColSum {
                x, out, accumulate, ..
            } => {
                if accumulate {
                    vec![x, out]
                } else {
                    vec![x]
                }
            }
            Step::Gelu { x, .. } => vec![x],
            Step::GeluBackward { x, dy, .. } => vec![x, dy],
            Step::Add { a, b, .. } => vec![a, b],
            Step::AddInPlace { acc, addend } => vec![acc, addend],
            Step::Copy { src, .. } => vec![src],
            Step::Softmax { x, .. } => vec![x],
            Step::SoftmaxBackward { y, dy, .. } => vec![y, dy],
            Step::Attention { q, k, v, .. } => vec![q, k, v],
            Step::AttentionBackward {
                q,
                k,
                v,
                o,
                lse,
                d_o,
                ..
            } => vec![q, k, v, o, lse, d_o],
            Step::ToHeads { src, .. } => vec![src],
            // Writes only some columns: the others must already hold values
            // (or be written by sibling steps), so count dst as read too.
            Step::FromHeads { src, .. } => vec![src],
            Step::CrossEntropy {
                logits, targets, ..
            } => vec![logits, targets],
        }
    }

    pub fn writes(&self) -> Vec<TensorId> {
        match *self {
            Step::Embedding { out, .. } => vec![out],
            Step::EmbeddingBackward { dwte, dwpe, .. } => vec![dwte, dwpe],
            Step::LayerNorm { y, mean, rstd, .. } => vec![y, mean, rstd],
            Step::LayerNormBackward {
                dx, dgamma, dbeta, ..
            } => vec![dx, dgamma, dbeta],
            Step::Matmul { c, .. } => vec![c],
            Step::ColSum { out, .. } => vec![out],
            Step::Gelu { y, .. } => vec![y],
            Step::GeluBackward { dx, .. } => vec![dx],
            Step::Add { out, .. } => vec![out],
            Step::AddInPlace { acc, .. } => vec![acc],
            Step::Copy { dst, .. } => vec![dst],
            Step::Softmax { y, .. } => vec![y],
            Step::SoftmaxBackward { dx, .. } => vec![dx],
            Step::Attention { o, lse, .. } => vec![o, lse],
            Step::AttentionBackward { dq, dk, dv, .. } => vec![dq, dk, dv],
            Step::ToHeads { dst, .. } => vec![dst],
            Step::FromHeads { dst, .. } => vec![dst],
            Step::CrossEntropy {
                losses,
                loss,
                dlogits,
                ..
            } => {
                let mut v = vec![losses, loss];
                v.extend(dlogits);
                v
            }
        }
    }

    /// Floating-point operations, for reports (multiply-add = 2).
    pub fn flops(&self, g: &Graph) -> u64 {
        let n = |id: TensorId| crate::runtime::numel(g.shape(id)) as u64;
        match *self {
            Step::Matmul { spec, .. } => 2 * (spec.batch * spec.m * spec.n * spec.k) as u64,
            Step::Softmax { x, .. } | Step::SoftmaxBackward { y: x, .. } => 5 * n(x),
            Step::LayerNorm { x, .. } | Step::LayerNormBackward { x, .. } => 8 * n(x),
            Step::CrossEntropy { logits, .. } => 5 * n(logits),
            Step::Gelu { x, .. } | Step::GeluBackward { x, .. } => 10 * n(x),
            Step::ColSum { x, .. } => n(x),
            Step::Attention { attn, .. } => fused_spec(&attn).forward_flops(),
            Step::AttentionBackward { attn, .. } => fused_spec(&attn).backward_flops(),
            _ => 0,
        }
    }

    /// Builds the dispatches of this step over resolved tensors.
    pub fn build(&self, gpu: &Gpu, t: &dyn Fn(TensorId) -> Tensor) -> Result<Vec<Dispatch>> {
        Ok(match self {
            Step::Embedding {
                tokens,
                wte,
                wpe,
                out,
            } => {
                vec![embedding::embedding_forward(
                    gpu,
                    &t(*tokens),
                    &t(*wte),
                    &t(*wpe),
                    &t(*out),
                )?]
            }
            Step::EmbeddingBackward {
                tokens,
                dout,
                dwte,
                dwpe,
            } => embedding::embedding_backward(gpu, &t(*tokens), &t(*dout), &t(*dwte), &t(*dwpe))?,
            Step::LayerNorm {
                x,
                gamma,
                beta,
                y,
                mean,
                rstd,
                eps,
            } => vec![layernorm::layernorm_forward(
                gpu,
                &t(*x),
                &t(*gamma),
                &t(*beta),
                &t(*y),
                &t(*mean),
                &t(*rstd),
                *eps,
            )?],
            Step::LayerNormBackward {
                dy,
                x,
                gamma,
                mean,
                rstd,
                dx,
                dgamma,
                dbeta,
                accumulate,
            } => layernorm::layernorm_backward(
                gpu,
                &t(*dy),
                &t(*x),
                &t(*gamma),
                &t(*mean),
                &t(*rstd),
                &t(*dx),
                &t(*dgamma),
                &t(*dbeta),
                *accumulate,
            )?,
            Step::Matmul {
                spec,
                a,
                b,
                bias,
                c,
            } => {
                let bias_t = bias.map(t);
                vec![matmul::matmul(
                    gpu,
                    spec,
                    &t(*a),
                    &t(*b),
                    bias_t.as_ref(),
                    &t(*c),
                )?]
            }
            Step::ColSum {
                x,
                rows,
                cols,
                out,
                accumulate,
            } => reduce::col_sum(gpu, &t(*x), *rows, *cols, &t(*out), *accumulate)?,
            Step::Gelu { x, y, kind } => vec![gelu::gelu_forward(gpu, &t(*x), &t(*y), *kind)?],
            Step::GeluBackward { x, dy, dx, kind } => {
                vec![gelu::gelu_backward(gpu, &t(*x), &t(*dy), &t(*dx), *kind)?]
            }
            Step::Add { a, b, out } => vec![elementwise::add(gpu, &t(*a), &t(*b), &t(*out))?],
            Step::AddInPlace { acc, addend } => {
                vec![elementwise::add_inplace(gpu, &t(*acc), &t(*addend))?]
            }
            Step::Copy { src, dst } => vec![elementwise::copy(gpu, &t(*src), &t(*dst))?],
            Step::Softmax {
                x,
                y,
                scale,
                causal,
            } => {
                vec![softmax::softmax_forward_scaled(
                    gpu,
                    &t(*x),
                    &t(*y),
                    *scale,
                    *causal,
                )?]
            }
            Step::SoftmaxBackward { y, dy, dx } => {
                vec![softmax::softmax_backward(gpu, &t(*y), &t(*dy), &t(*dx))?]
            }
            Step::Attention {
                attn,
                q,
                k,
                v,
                o,
                lse,
            } => attention::attention_forward(
                gpu,
                &fused_spec(attn),
                &t(*q),
                &t(*k),
                &t(*v),
                None,
                &t(*o),
                &t(*lse),
            )?,
            Step::AttentionBackward {
                attn,
                q,
                k,
                v,
                o,
                lse,
                d_o,
                dq,
                dk,
                dv,
            } => attention::attention_backward(
                gpu,
                &fused_spec(attn),
                &t(*q),
                &t(*k),
                &t(*v),
                &t(*o),
                &t(*lse),
                &t(*d_o),
                None,
                &t(*dq),
                &t(*dk),
                &t(*dv),
            )?,
            Step::ToHeads { layout, src, dst } => {
                vec![heads::to_heads(gpu, layout, &t(*src), &t(*dst))?]
            }
            Step::FromHeads { layout, src, dst } => {
                vec![heads::from_heads(gpu, layout, &t(*src), &t(*dst))?]
            }
            Step::CrossEntropy {
                logits,
                targets,
                losses,
                loss,
                dlogits,
                ignore_index,
                grad_scale,
            } => {
                let dl = dlogits.map(t);
                crossentropy::cross_entropy(
                    gpu,
                    &t(*logits),
                    &t(*targets),
                    &t(*losses),
                    &t(*loss),
                    dl.as_ref(),
                    *ignore_index,
                    *grad_scale,
                )?
            }
        })
    }
}

/// Head layouts of q, k, v within qkv [B, T, 3C], and of the output [B, T, C].
pub fn head_layouts(a: &AttentionShape) -> ([HeadLayout; 3], HeadLayout) {
    let c = a.heads * a.head_dim;
    let part = |col, row_stride| HeadLayout {
        batch: a.batch,
        seq: a.seq,
        heads: a.heads,
        head_dim: a.head_dim,
        row_stride,
        col,
    };
    (
        [part(0, 3 * c), part(c, 3 * c), part(2 * c, 3 * c)],
        part(0, c),
    )
}

/// The fused kernels' view of an attention shape.
pub fn fused_spec(a: &AttentionShape) -> AttentionSpec {
    AttentionSpec::new(a.batch, a.heads, a.seq, a.head_dim, a.causal)
}

/// The batched matmul shapes of unfused attention: scores = q·kᵀ·scale, y = p·v.
pub fn attention_specs(a: &AttentionShape) -> (MatmulSpec, MatmulSpec) {
    let (t, d) = (a.seq, a.head_dim);
    let bh = a.batch * a.heads;
    let scores = MatmulSpec::new(t, t, d).batched(bh).trans_b(true);
    let y = MatmulSpec::new(t, d, t).batched(bh);
    (scores, y)
}

/// The forward kernel steps of every op, in order.
pub fn lower_forward(g: &Graph) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for op in &g.ops {
        match op.clone() {
            FwdOp::Embedding {
                tokens,
                wte,
                wpe,
                out,
            } => steps.push(Step::Embedding {
                tokens,
                wte,
                wpe,
                out,
            }),
            FwdOp::LayerNorm {
                x,
                gamma,
                beta,
                y,
                mean,
                rstd,
                eps,
            } => steps.push(Step::LayerNorm {
                x,
                gamma,
                beta,
                y,
                mean,
                rstd,
                eps,
            }),
            FwdOp::Matmul {
                spec,
                a,
                b,
                bias,
                c,
            } => steps.push(Step::Matmul {
                spec,
                a,
                b,
                bias,
                c,
            }),
            FwdOp::Gelu { x, y, kind } => steps.push(Step::Gelu { x, y, kind }),
            FwdOp::Add { a, b, out } => steps.push(Step::Add { a, b, out }),
            FwdOp::Attention {
                qkv,
                out,
                attn,
                saved,
            } => {
                let (qkv_l, out_l) = head_layouts(&attn);
                let (q, k, v, y_heads) = saved.qkv_out();
                for (l, dst) in qkv_l.iter().zip([q, k, v]) {
                    steps.push(Step::ToHeads {
                        layout: *l,
                        src: qkv,
                        dst,
                    });
                }
                match saved {
                    AttentionSaved::Unfused { scores, probs, .. } => {
                        let (s_spec, y_spec) = attention_specs(&attn);
                        steps.push(Step::Matmul {
                            spec: s_spec,
                            a: q,
                            b: k,
                            bias: None,
                            c: scores,
                        });
                        steps.push(Step::Softmax {
                            x: scores,
                            y: probs,
                            scale: 1.0 / (attn.head_dim as f32).sqrt(),
                            causal: attn.causal.then_some(attn.seq),
                        });
                        steps.push(Step::Matmul {
                            spec: y_spec,
                            a: probs,
                            b: v,
                            bias: None,
                            c: y_heads,
                        });
                    }
                    AttentionSaved::Fused { lse, .. } => steps.push(Step::Attention {
                        attn,
                        q,
                        k,
                        v,
                        o: y_heads,
                        lse,
                    }),
                }
                steps.push(Step::FromHeads {
                    layout: out_l,
                    src: y_heads,
                    dst: out,
                });
            }
            FwdOp::CrossEntropy {
                logits,
                targets,
                losses,
                loss,
                dlogits,
                ignore_index,
            } => steps.push(Step::CrossEntropy {
                logits,
                targets,
                losses,
                loss,
                dlogits,
                ignore_index,
                grad_scale: 1.0,
            }),
        }
    }
    Ok(steps)
}
