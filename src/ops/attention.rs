//! Multi-head scaled dot-product attention, causal or bidirectional, with an
//! optional key-padding mask ([B, T] i32, nonzero = attend, as Hugging
//! Face's `attention_mask`). q, k and v come either packed side by side in
//! one [B, T, 3C] tensor (GPT-2's c_attn) or as three [B, T, C] tensors
//! (BERT, ViT, CLIP); the output is [B, T, C] before the output projection.
//!
//! Two lowerings (`GraphOptions::attention`): the fused FlashAttention-style
//! kernels (no T×T tensor), or q·kᵀ, softmax and p·v as separate kernels.
//! Both move q, k, v to head-major [B, H, T, D] first and back after.

use anyhow::{ensure, Result};

use crate::graph::autodiff::{Backward, Target};
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{AttentionImpl, Graph, TensorId};
use crate::kernels::attention::{self as fa, AttentionSpec, MAX_HEAD_DIM};
use crate::kernels::heads::{self, HeadLayout};
use crate::kernels::matmul::MatmulSpec;
use crate::kernels::softmax;
use crate::runtime::DType;

use super::matmul::matmul_step;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub causal: bool,
}

impl AttentionShape {
    /// The fused kernels' view of this shape.
    pub fn fused_spec(&self) -> AttentionSpec {
        AttentionSpec::new(self.batch, self.heads, self.seq, self.head_dim, self.causal)
    }

    /// The batched matmuls of the unfused path: scores = q·kᵀ, y = p·v.
    pub fn unfused_specs(&self) -> (MatmulSpec, MatmulSpec) {
        let (t, d) = (self.seq, self.head_dim);
        let bh = self.batch * self.heads;
        let scores = MatmulSpec::new(t, t, d).batched(bh).trans_b(true);
        let y = MatmulSpec::new(t, d, t).batched(bh);
        (scores, y)
    }

    fn c(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// The attention op. Inputs: qkv (packed) or q, k, v; then the mask if any.
/// Outputs: out [B, T, C], then head-major q, k, v, y_heads [B, H, T, D],
/// then lse [B·H, T] (fused) or scores and probs [B·H, T, T] (unfused).
#[derive(Debug, Clone)]
pub struct Attention {
    pub shape: AttentionShape,
    pub packed: bool,
    pub masked: bool,
    pub imp: AttentionImpl,
}

impl Graph {
    /// Self-attention on q, k, v packed side by side in `qkv` [B, T, 3C].
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
        self.attention_impl(&[qkv], s[0], s[1], s[2] / 3, heads, causal, None)
    }

    /// [`Graph::self_attention`] with an optional key-padding `mask` [B, T]
    /// (i32: nonzero = attend).
    pub fn self_attention_masked(
        &mut self,
        qkv: TensorId,
        heads: usize,
        causal: bool,
        mask: Option<TensorId>,
    ) -> Result<TensorId> {
        let s = self.shape(qkv).to_vec();
        ensure!(
            s.len() == 3 && s[2].is_multiple_of(3),
            "attention: qkv must be [B, T, 3C], is {s:?}"
        );
        self.attention_impl(&[qkv], s[0], s[1], s[2] / 3, heads, causal, mask)
    }

    /// Attention over separate q, k, v [B, T, C] with an optional key-padding
    /// `mask` [B, T] (i32: nonzero = attend).
    pub fn attention(
        &mut self,
        q: TensorId,
        k: TensorId,
        v: TensorId,
        heads: usize,
        causal: bool,
        mask: Option<TensorId>,
    ) -> Result<TensorId> {
        let s = self.shape(q).to_vec();
        ensure!(
            s.len() == 3 && self.shape(k) == s && self.shape(v) == s,
            "attention: q, k, v must all be [B, T, C]; got {s:?}, {:?}, {:?}",
            self.shape(k),
            self.shape(v)
        );
        self.attention_impl(&[q, k, v], s[0], s[1], s[2], heads, causal, mask)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_impl(
        &mut self,
        srcs: &[TensorId],
        b: usize,
        t: usize,
        c: usize,
        heads: usize,
        causal: bool,
        mask: Option<TensorId>,
    ) -> Result<TensorId> {
        ensure!(
            heads > 0 && c > 0 && c.is_multiple_of(heads),
            "attention: C = {c} is not divisible by {heads} heads"
        );
        if let Some(m) = mask {
            ensure!(
                self.shape(m) == [b, t] && self.dtype(m) == DType::I32,
                "attention: the mask must be i32 [B, T] = [{b}, {t}], is {} {:?}",
                self.dtype(m).name(),
                self.shape(m)
            );
        }
        let d = c / heads;
        let imp = self.options.attention;
        if imp == AttentionImpl::Fused {
            ensure!(
                d <= MAX_HEAD_DIM,
                "attention: head_dim {d} exceeds the fused kernel's {MAX_HEAD_DIM}; use the unfused attention"
            );
        }
        let shape = AttentionShape {
            batch: b,
            seq: t,
            heads,
            head_dim: d,
            causal,
        };
        let hm = [b, heads, t, d];
        let out = self.planned("attn.out", &[b, t, c]);
        let mut outs = vec![
            out,
            self.planned("attn.q", &hm),
            self.planned("attn.k", &hm),
            self.planned("attn.v", &hm),
            self.planned("attn.y_heads", &hm),
        ];
        match imp {
            AttentionImpl::Fused => outs.push(self.planned("attn.lse", &[b * heads, t])),
            AttentionImpl::Unfused => {
                outs.push(self.planned("attn.scores", &[b * heads, t, t]));
                outs.push(self.planned("attn.probs", &[b * heads, t, t]));
            }
        }
        let mut ins = srcs.to_vec();
        ins.extend(mask);
        self.push_node(
            Attention {
                shape,
                packed: srcs.len() == 1,
                masked: mask.is_some(),
                imp,
            },
            &ins,
            &outs,
        );
        Ok(out)
    }
}

impl Attention {
    /// Where q, k, v sit in their source tensors, and where the output goes.
    fn layouts(&self) -> ([HeadLayout; 3], HeadLayout) {
        let a = &self.shape;
        let c = a.c();
        let part = |col, row_stride| HeadLayout {
            batch: a.batch,
            seq: a.seq,
            heads: a.heads,
            head_dim: a.head_dim,
            row_stride,
            col,
        };
        let qkv = if self.packed {
            [part(0, 3 * c), part(c, 3 * c), part(2 * c, 3 * c)]
        } else {
            [part(0, c); 3]
        };
        (qkv, part(0, c))
    }

    /// The source tensor of q, k and v.
    fn sources(&self, io: &NodeIo) -> [TensorId; 3] {
        if self.packed {
            [io.input(0); 3]
        } else {
            [io.input(0), io.input(1), io.input(2)]
        }
    }

    fn mask(&self, io: &NodeIo) -> Option<TensorId> {
        self.masked
            .then(|| io.input(if self.packed { 1 } else { 3 }))
    }
}

fn to_heads_step(layout: HeadLayout, src: TensorId, dst: TensorId) -> Step {
    Step::new("to_heads", move |gpu, r| {
        Ok(vec![heads::to_heads(gpu, &layout, &r(src), &r(dst))?])
    })
    .reads([src])
    .writes([dst])
}

/// Writes some columns of `dst`; the others are left as they are.
fn from_heads_step(layout: HeadLayout, src: TensorId, dst: TensorId) -> Step {
    Step::new("from_heads", move |gpu, r| {
        Ok(vec![heads::from_heads(gpu, &layout, &r(src), &r(dst))?])
    })
    .reads([src])
    .writes([dst])
}

impl Op for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (src_l, out_l) = self.layouts();
        let srcs = self.sources(io);
        let (q, k, v, y) = (io.output(1), io.output(2), io.output(3), io.output(4));
        for ((l, src), dst) in src_l.iter().zip(srcs).zip([q, k, v]) {
            cx.push(to_heads_step(*l, src, dst));
        }
        let a = self.shape;
        match self.imp {
            AttentionImpl::Unfused => {
                let (scores, probs) = (io.output(5), io.output(6));
                let (s_spec, y_spec) = a.unfused_specs();
                cx.push(matmul_step(s_spec, q, k, None, scores));
                let scale = 1.0 / (a.head_dim as f32).sqrt();
                let n = cx.g.desc(scores).numel() as u64;
                let mask = self.mask(io);
                let (causal, heads) = (a.causal, a.heads);
                cx.push(
                    Step::new("softmax", move |gpu, r| {
                        Ok(vec![match mask {
                            // Masked: a row may see no key at all (probs 0).
                            Some(m) => softmax::softmax_forward_masked(
                                gpu,
                                &r(scores),
                                &r(probs),
                                scale,
                                causal,
                                &r(m),
                                heads,
                            )?,
                            None => softmax::softmax_forward_scaled(
                                gpu,
                                &r(scores),
                                &r(probs),
                                scale,
                                causal.then_some(a.seq),
                            )?,
                        }])
                    })
                    .reads([scores])
                    .reads(mask)
                    .writes([probs])
                    .flops(5 * n),
                );
                cx.push(matmul_step(y_spec, probs, v, None, y));
            }
            AttentionImpl::Fused => {
                let lse = io.output(5);
                let spec = a.fused_spec();
                let mask = self.mask(io);
                cx.push(
                    Step::new("attention", move |gpu, r| {
                        let m = mask.map(r);
                        fa::attention_forward(
                            gpu,
                            &spec,
                            &r(q),
                            &r(k),
                            &r(v),
                            m.as_ref(),
                            &r(y),
                            &r(lse),
                        )
                    })
                    .reads([q, k, v])
                    .reads(mask)
                    .writes([y, lse])
                    .flops(spec.forward_flops())
                    .detail(format!(
                        "B·H {} T {} D {}",
                        spec.batch_heads, spec.seq, spec.head_dim
                    )),
                );
            }
        }
        cx.push(from_heads_step(out_l, y, io.output(0)));
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let Some(dy) = cx.grad_tensor(io.output(0))? else {
            return Ok(());
        };
        let srcs = self.sources(io);
        if !srcs.iter().any(|s| cx.needs_grad(*s)) {
            return Ok(());
        }
        let (src_l, out_l) = self.layouts();
        let a = self.shape;
        let (b, h, t, d) = (a.batch, a.heads, a.seq, a.head_dim);
        let bh = b * h;
        let scale = 1.0 / (d as f32).sqrt();
        let (q, k, v, y) = (io.output(1), io.output(2), io.output(3), io.output(4));
        let hm = [b, h, t, d];
        let dy_h = cx.temp("grad.attn.y_heads", &hm, DType::F32);
        let dq = cx.temp("grad.attn.q", &hm, DType::F32);
        let dk = cx.temp("grad.attn.k", &hm, DType::F32);
        let dv = cx.temp("grad.attn.v", &hm, DType::F32);
        cx.push(to_heads_step(out_l, dy, dy_h));
        match self.imp {
            AttentionImpl::Fused => {
                let lse = io.output(5);
                let spec = a.fused_spec();
                let mask = self.mask(io);
                cx.push(
                    Step::new("attention_backward", move |gpu, r| {
                        let m = mask.map(r);
                        fa::attention_backward(
                            gpu,
                            &spec,
                            &r(q),
                            &r(k),
                            &r(v),
                            &r(y),
                            &r(lse),
                            &r(dy_h),
                            m.as_ref(),
                            &r(dq),
                            &r(dk),
                            &r(dv),
                        )
                    })
                    .reads([q, k, v, y, lse, dy_h])
                    .reads(mask)
                    .writes([dq, dk, dv])
                    .flops(spec.backward_flops()),
                );
            }
            AttentionImpl::Unfused => {
                let probs = io.output(6);
                let dprobs = cx.temp("grad.attn.probs", &[bh, t, t], DType::F32);
                let dscores = cx.temp("grad.attn.scores", &[bh, t, t], DType::F32);
                // y = P·V: dP = dY·Vᵀ, dV = Pᵀ·dY.
                let dp_spec = MatmulSpec::new(t, t, d).batched(bh).trans_b(true);
                cx.push(matmul_step(dp_spec, dy_h, v, None, dprobs));
                let dv_spec = MatmulSpec::new(t, d, t).batched(bh).trans_a(true);
                cx.push(matmul_step(dv_spec, probs, dy_h, None, dv));
                let n = (bh * t * t) as u64;
                cx.push(
                    Step::new("softmax_backward", move |gpu, r| {
                        Ok(vec![softmax::softmax_backward(
                            gpu,
                            &r(probs),
                            &r(dprobs),
                            &r(dscores),
                        )?])
                    })
                    .reads([probs, dprobs])
                    .writes([dscores])
                    .flops(5 * n),
                );
                // S = scale·Q·Kᵀ: dQ = scale·dS·K, dK = scale·dSᵀ·Q.
                let dq_spec = MatmulSpec::new(t, d, t).batched(bh).alpha(scale);
                cx.push(matmul_step(dq_spec, dscores, k, None, dq));
                let dk_spec = MatmulSpec::new(t, d, t)
                    .batched(bh)
                    .trans_a(true)
                    .alpha(scale);
                cx.push(matmul_step(dk_spec, dscores, q, None, dk));
            }
        }
        if self.packed {
            // The three from_heads fill disjoint thirds of d(qkv).
            let qkv = srcs[0];
            let (dst, acc) = match cx.target(qkv)? {
                Target::Fresh(t) => (t, None),
                Target::Accumulate(acc) => (cx.temp_like(qkv), Some(acc)),
            };
            for (l, src) in src_l.iter().zip([dq, dk, dv]) {
                cx.push(from_heads_step(*l, src, dst));
            }
            if let Some(acc) = acc {
                cx.push(
                    Step::new("add_inplace", move |gpu, r| {
                        Ok(vec![crate::kernels::elementwise::add_inplace(
                            gpu,
                            &r(acc),
                            &r(dst),
                        )?])
                    })
                    .reads([dst])
                    .accumulates([acc]),
                );
            }
        } else {
            for ((l, src), part) in src_l.iter().zip(srcs).zip([dq, dk, dv]) {
                if cx.needs_grad(src) {
                    let l = *l;
                    cx.contribute_overwrite(src, |t| from_heads_step(l, part, t))?;
                }
            }
        }
        Ok(())
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let a = self.shape;
        let (b, h, t, d) = (a.batch, a.heads, a.seq, a.head_dim);
        let c = a.c();
        let (src_l, _) = self.layouts();
        let srcs: Vec<&HostTensor> = if self.packed {
            vec![ins[0]; 3]
        } else {
            vec![ins[0], ins[1], ins[2]]
        };
        let mask = self.masked.then(|| ins[if self.packed { 1 } else { 3 }]);
        // Head-major copies of q, k, v.
        let heads: Vec<Vec<f64>> = srcs
            .iter()
            .zip(&src_l)
            .map(|(s, l)| {
                let mut o = vec![0.0; b * h * t * d];
                for bi in 0..b {
                    for hi in 0..h {
                        for ti in 0..t {
                            for di in 0..d {
                                o[((bi * h + hi) * t + ti) * d + di] =
                                    s.data[(bi * t + ti) * l.row_stride + l.col + hi * d + di];
                            }
                        }
                    }
                }
                o
            })
            .collect();
        let (q, k, v) = (&heads[0], &heads[1], &heads[2]);
        let scale = 1.0 / (d as f64).sqrt();
        let mut scores = vec![0.0; b * h * t * t];
        let mut probs = vec![0.0; b * h * t * t];
        let mut lse = vec![f64::NEG_INFINITY; b * h * t];
        let mut y = vec![0.0; b * h * t * d];
        for bi in 0..b {
            for hi in 0..h {
                let bh = bi * h + hi;
                for i in 0..t {
                    let visible = |j: usize| {
                        !(a.causal && j > i) && mask.is_none_or(|m| m.data[bi * t + j] != 0.0)
                    };
                    let z: Vec<Option<f64>> = (0..t)
                        .map(|j| {
                            let s: f64 = (0..d)
                                .map(|x| q[(bh * t + i) * d + x] * k[(bh * t + j) * d + x])
                                .sum();
                            scores[(bh * t + i) * t + j] = s;
                            visible(j).then_some(s * scale)
                        })
                        .collect();
                    let m = z.iter().flatten().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                    if m == f64::NEG_INFINITY {
                        continue; // sees no key: o = 0, lse = −∞
                    }
                    let sum: f64 = z.iter().flatten().map(|x| (x - m).exp()).sum();
                    lse[bh * t + i] = m + sum.ln();
                    for j in 0..t {
                        if let Some(zj) = z[j] {
                            let p = (zj - m).exp() / sum;
                            probs[(bh * t + i) * t + j] = p;
                            for x in 0..d {
                                y[(bh * t + i) * d + x] += p * v[(bh * t + j) * d + x];
                            }
                        }
                    }
                }
            }
        }
        let mut out = vec![0.0; b * t * c];
        for bi in 0..b {
            for hi in 0..h {
                for ti in 0..t {
                    for di in 0..d {
                        out[(bi * t + ti) * c + hi * d + di] = y[((bi * h + hi) * t + ti) * d + di];
                    }
                }
            }
        }
        let hm = [b, h, t, d];
        let mut res = vec![
            HostTensor::new(&[b, t, c], out)?,
            HostTensor::new(&hm, q.clone())?,
            HostTensor::new(&hm, k.clone())?,
            HostTensor::new(&hm, v.clone())?,
            HostTensor::new(&hm, y)?,
        ];
        match self.imp {
            AttentionImpl::Fused => res.push(HostTensor::new(&[b * h, t], lse)?),
            AttentionImpl::Unfused => {
                res.push(HostTensor::new(&[b * h, t, t], scores)?);
                res.push(HostTensor::new(&[b * h, t, t], probs)?);
            }
        }
        Ok(res)
    }
}
