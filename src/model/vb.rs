//! Declaring parameters once, under their Hugging Face names, in candle's
//! `VarBuilder` spirit: a [`Vb`] is a name prefix (`vb.pp("attn").pp("c_attn")`),
//! and the layer helpers here declare their parameters through it (name,
//! shape, initialiser and optimizer group in one place) and apply them.

use std::fmt::Display;

use anyhow::Result;

use crate::graph::{Graph, Init, TensorId};

/// A scoped parameter name prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vb {
    prefix: String,
}

impl Vb {
    /// The empty prefix.
    pub fn root() -> Self {
        Self::default()
    }

    /// The prefix extended by `.s` ("push prefix").
    pub fn pp(&self, s: impl Display) -> Self {
        let s = s.to_string();
        Self {
            prefix: if self.prefix.is_empty() {
                s
            } else {
                format!("{}.{s}", self.prefix)
            },
        }
    }

    /// The full name of `leaf` under this prefix.
    pub fn path(&self, leaf: &str) -> String {
        self.pp(leaf).prefix
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Declares `<prefix>.<leaf>` (decay by rank).
    pub fn param(
        &self,
        g: &mut Graph,
        leaf: &str,
        shape: &[usize],
        init: Init,
    ) -> Result<TensorId> {
        g.param(&self.path(leaf), shape, init)
    }

    /// Declares `<prefix>.<leaf>` with an explicit weight-decay choice.
    pub fn param_decay(
        &self,
        g: &mut Graph,
        leaf: &str,
        shape: &[usize],
        init: Init,
        decay: bool,
    ) -> Result<TensorId> {
        g.param_with(&self.path(leaf), shape, init, Some(decay))
    }
}

/// A dense layer: `weight` and optional `bias`.
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    pub weight: TensorId,
    pub bias: Option<TensorId>,
    /// Weight stored [out, in] (`nn.Linear`) rather than [in, out] (GPT-2's `Conv1D`).
    pub transposed: bool,
}

impl Linear {
    /// `nn.Linear(d_in, d_out)`: weight [out, in], bias [out] (zeros).
    pub fn new(
        g: &mut Graph,
        vb: &Vb,
        d_in: usize,
        d_out: usize,
        bias: bool,
        init: Init,
    ) -> Result<Self> {
        let weight = vb.param(g, "weight", &[d_out, d_in], init)?;
        let bias = if bias {
            Some(vb.param(g, "bias", &[d_out], Init::Zeros)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            transposed: true,
        })
    }

    /// Hugging Face's `Conv1D(d_out, d_in)` (GPT-2): weight [in, out], bias [out].
    pub fn conv1d(g: &mut Graph, vb: &Vb, d_in: usize, d_out: usize, init: Init) -> Result<Self> {
        let weight = vb.param(g, "weight", &[d_in, d_out], init)?;
        let bias = Some(vb.param(g, "bias", &[d_out], Init::Zeros)?);
        Ok(Self {
            weight,
            bias,
            transposed: false,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: TensorId) -> Result<TensorId> {
        g.linear(x, self.weight, self.bias, self.transposed)
    }
}

/// `nn.LayerNorm(c, eps)`: `weight` (ones) and `bias` (zeros), no decay.
#[derive(Clone, Copy, Debug)]
pub struct LayerNorm {
    pub weight: TensorId,
    pub bias: TensorId,
    pub eps: f32,
}

impl LayerNorm {
    pub fn new(g: &mut Graph, vb: &Vb, c: usize, eps: f32) -> Result<Self> {
        Ok(Self {
            weight: vb.param(g, "weight", &[c], Init::Ones)?,
            bias: vb.param(g, "bias", &[c], Init::Zeros)?,
            eps,
        })
    }

    pub fn forward(&self, g: &mut Graph, x: TensorId) -> Result<TensorId> {
        g.layernorm(x, self.weight, self.bias, self.eps)
    }
}
