//! The transformer layer every model here is built from: multi-head
//! attention and an MLP, each with a residual connection, LayerNorm before
//! (GPT-2, ViT, CLIP) or after (BERT), causal or bidirectional attention over
//! an optional key-padding mask. Only the parameter names differ between
//! architectures ([`LayerNames`]), so each model declares its layers under
//! its own Hugging Face names and shares the computation.

use anyhow::Result;

use super::vb::{LayerNorm, Linear, Vb};
use crate::graph::{Graph, Init, TensorId};
use crate::ops::Activation;

/// Where the LayerNorms sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// x + f(LN(x)) (GPT-2, ViT, CLIP).
    Pre,
    /// LN(f(x) + x) (BERT).
    Post,
}

/// The names of a layer's modules, relative to the layer's prefix.
#[derive(Clone, Copy, Debug)]
pub struct LayerNames {
    /// One Conv1D making q, k, v side by side (GPT-2's `attn.c_attn`), or
    /// three `nn.Linear`s.
    pub qkv: Qkv,
    pub out: &'static str,
    /// The LayerNorm of the attention block (before it when pre-norm).
    pub ln_attn: &'static str,
    pub up: &'static str,
    pub down: &'static str,
    /// The LayerNorm of the MLP block.
    pub ln_mlp: &'static str,
}

#[derive(Clone, Copy, Debug)]
pub enum Qkv {
    Packed(&'static str),
    Separate(&'static str, &'static str, &'static str),
}

impl LayerNames {
    pub const GPT2: Self = Self {
        qkv: Qkv::Packed("attn.c_attn"),
        out: "attn.c_proj",
        ln_attn: "ln_1",
        up: "mlp.c_fc",
        down: "mlp.c_proj",
        ln_mlp: "ln_2",
    };
    pub const BERT: Self = Self {
        qkv: Qkv::Separate(
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
        ),
        out: "attention.output.dense",
        ln_attn: "attention.output.LayerNorm",
        up: "intermediate.dense",
        down: "output.dense",
        ln_mlp: "output.LayerNorm",
    };
    pub const VIT: Self = Self {
        qkv: Qkv::Separate(
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
        ),
        out: "attention.output.dense",
        ln_attn: "layernorm_before",
        up: "intermediate.dense",
        down: "output.dense",
        ln_mlp: "layernorm_after",
    };
    pub const CLIP: Self = Self {
        qkv: Qkv::Separate("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        out: "self_attn.out_proj",
        ln_attn: "layer_norm1",
        up: "mlp.fc1",
        down: "mlp.fc2",
        ln_mlp: "layer_norm2",
    };
}

/// The sizes and switches of a layer.
#[derive(Clone, Copy, Debug)]
pub struct LayerSpec {
    pub hidden: usize,
    pub inner: usize,
    pub heads: usize,
    pub eps: f32,
    pub act: Activation,
    pub norm: Norm,
    pub causal: bool,
    /// Bias on q, k, v (ViT's `qkv_bias`).
    pub qkv_bias: bool,
    /// Dropout on the attention and MLP outputs (training only).
    pub dropout: f32,
    /// Initialisers of the weights: q, k, v and up; the output projections.
    pub init: Init,
    pub init_out: Init,
}

enum QkvLayers {
    Packed(Linear),
    Separate(Linear, Linear, Linear),
}

/// One transformer layer's parameters.
pub struct Layer {
    spec: LayerSpec,
    ln_attn: LayerNorm,
    qkv: QkvLayers,
    out: Linear,
    ln_mlp: LayerNorm,
    up: Linear,
    down: Linear,
}

impl Layer {
    /// Declares the layer's parameters under `vb` (in GPT-2's order: the
    /// attention LayerNorm, q/k/v, the output projection, the MLP LayerNorm,
    /// the MLP), `nn.Linear` layouts unless q, k, v are packed Conv1Ds.
    pub fn new(g: &mut Graph, vb: &Vb, names: &LayerNames, s: LayerSpec) -> Result<Self> {
        let h = s.hidden;
        let ln_attn = LayerNorm::new(g, &vb.pp(names.ln_attn), h, s.eps)?;
        let conv1d = matches!(names.qkv, Qkv::Packed(_));
        let qkv = match names.qkv {
            Qkv::Packed(n) => QkvLayers::Packed(Linear::conv1d(g, &vb.pp(n), h, 3 * h, s.init)?),
            Qkv::Separate(q, k, v) => QkvLayers::Separate(
                Linear::new(g, &vb.pp(q), h, h, s.qkv_bias, s.init)?,
                Linear::new(g, &vb.pp(k), h, h, s.qkv_bias, s.init)?,
                Linear::new(g, &vb.pp(v), h, h, s.qkv_bias, s.init)?,
            ),
        };
        let dense = |g: &mut Graph, name: &str, i: usize, o: usize, init: Init| {
            if conv1d {
                Linear::conv1d(g, &vb.pp(name), i, o, init)
            } else {
                Linear::new(g, &vb.pp(name), i, o, true, init)
            }
        };
        let out = dense(g, names.out, h, h, s.init_out)?;
        let ln_mlp = LayerNorm::new(g, &vb.pp(names.ln_mlp), h, s.eps)?;
        let up = dense(g, names.up, h, s.inner, s.init)?;
        let down = dense(g, names.down, s.inner, h, s.init_out)?;
        Ok(Self {
            spec: s,
            ln_attn,
            qkv,
            out,
            ln_mlp,
            up,
            down,
        })
    }

    fn attention(&self, g: &mut Graph, x: TensorId, mask: Option<TensorId>) -> Result<TensorId> {
        let s = &self.spec;
        let a = match &self.qkv {
            QkvLayers::Packed(l) => {
                let qkv = l.forward(g, x)?;
                match mask {
                    None => g.self_attention(qkv, s.heads, s.causal)?,
                    Some(m) => g.self_attention_masked(qkv, s.heads, s.causal, Some(m))?,
                }
            }
            QkvLayers::Separate(q, k, v) => {
                let (qx, kx, vx) = (q.forward(g, x)?, k.forward(g, x)?, v.forward(g, x)?);
                g.attention(qx, kx, vx, s.heads, s.causal, mask)?
            }
        };
        let a = self.out.forward(g, a)?;
        g.dropout(a, s.dropout)
    }

    fn mlp(&self, g: &mut Graph, x: TensorId) -> Result<TensorId> {
        let m = self.up.forward(g, x)?;
        let m = g.activation(m, self.spec.act);
        let m = self.down.forward(g, m)?;
        g.dropout(m, self.spec.dropout)
    }

    /// The layer applied to `x` [B, T, H].
    pub fn forward(&self, g: &mut Graph, x: TensorId, mask: Option<TensorId>) -> Result<TensorId> {
        match self.spec.norm {
            Norm::Pre => {
                let a = self.ln_attn.forward(g, x)?;
                let a = self.attention(g, a, mask)?;
                let x = g.add(x, a)?;
                let m = self.ln_mlp.forward(g, x)?;
                let m = self.mlp(g, m)?;
                g.add(x, m)
            }
            Norm::Post => {
                let a = self.attention(g, x, mask)?;
                let r = g.add(a, x)?;
                let x = self.ln_attn.forward(g, r)?;
                let m = self.mlp(g, x)?;
                let r = g.add(m, x)?;
                self.ln_mlp.forward(g, r)
            }
        }
    }
}

/// `n` layers under `vb.<i>`, applied in order.
pub fn encoder(
    g: &mut Graph,
    vb: &Vb,
    n: usize,
    names: &LayerNames,
    spec: LayerSpec,
    mut x: TensorId,
    mask: Option<TensorId>,
) -> Result<TensorId> {
    for l in 0..n {
        let layer = Layer::new(g, &vb.pp(l), names, spec)?;
        x = layer.forward(g, x, mask)?;
    }
    Ok(x)
}
