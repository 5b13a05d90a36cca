//! GPT-2, exactly: token and learned position embeddings, pre-LayerNorm
//! blocks (eps 1e-5) with causal multi-head self-attention scaled by
//! 1/√head_dim and a 4× MLP with tanh-GELU, a final LayerNorm, and an LM
//! head tied to the token embedding.
//!
//! Parameter names and layouts are Hugging Face's `GPT2LMHeadModel`
//! (Conv1D weights stored [in, out]), so checkpoints load in PyTorch as is.

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use crate::graph::{AttentionImpl, Graph, TensorId};
use crate::kernels::gelu::GeluKind;
use crate::runtime::DType;
use crate::util::Rng;

/// Field names follow `transformers.GPT2Config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Longest sequence (rows of the position table).
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_layer: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
}

fn default_eps() -> f32 {
    1e-5
}

/// The most parameters a GPT config may describe (2^36, 275 GB in f32):
/// beyond any single GPU, and a bound that keeps every size computation
/// far from overflow.
pub const MAX_PARAMS: u64 = 1 << 36;

impl GptConfig {
    pub fn new(
        vocab_size: usize,
        n_positions: usize,
        n_embd: usize,
        n_head: usize,
        n_layer: usize,
    ) -> Self {
        Self {
            vocab_size,
            n_positions,
            n_embd,
            n_head,
            n_layer,
            layer_norm_epsilon: default_eps(),
        }
    }

    /// GPT-2 small (124M parameters).
    pub fn gpt2_124m() -> Self {
        Self::new(50257, 1024, 768, 12, 12)
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.vocab_size > 0 && self.n_positions > 0 && self.n_layer > 0 && self.n_embd > 0,
            "GPT config: sizes must be positive (vocab_size {}, n_positions {}, n_embd {}, n_layer {})",
            self.vocab_size,
            self.n_positions,
            self.n_embd,
            self.n_layer
        );
        ensure!(
            self.checked_num_params().is_some_and(|n| n <= MAX_PARAMS),
            "GPT config: {} layers of {} dims with a vocabulary of {} and {} positions is more than \
             {MAX_PARAMS} parameters, beyond what Kiln can train or load",
            self.n_layer,
            self.n_embd,
            self.vocab_size,
            self.n_positions
        );
        ensure!(
            self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0,
            "GPT config: layer_norm_epsilon must be a positive number, got {}",
            self.layer_norm_epsilon
        );
        ensure!(
            self.n_head > 0 && self.n_embd.is_multiple_of(self.n_head),
            "GPT config: n_embd ({}) must be divisible by n_head ({})",
            self.n_embd,
            self.n_head
        );
        Ok(())
    }

    /// The parameter count without overflow: None when it does not fit u64.
    pub fn checked_num_params(&self) -> Option<u64> {
        let dims = [self.vocab_size, self.n_positions, self.n_embd, self.n_layer];
        if dims.iter().any(|&d| d as u128 > u32::MAX as u128) {
            return None;
        }
        let [v, p, c, l] = dims.map(|d| d as u128);
        let n = (v + p) * c + l * (12 * c * c + 13 * c) + 2 * c;
        u64::try_from(n).ok()
    }

    /// Every parameter's Hugging Face name and shape, in a fixed order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (c, v, p) = (self.n_embd, self.vocab_size, self.n_positions);
        let mut out = vec![
            ("transformer.wte.weight".to_string(), vec![v, c]),
            ("transformer.wpe.weight".to_string(), vec![p, c]),
        ];
        for l in 0..self.n_layer {
            let h = |s: &str| format!("transformer.h.{l}.{s}");
            out.extend([
                (h("ln_1.weight"), vec![c]),
                (h("ln_1.bias"), vec![c]),
                (h("attn.c_attn.weight"), vec![c, 3 * c]),
                (h("attn.c_attn.bias"), vec![3 * c]),
                (h("attn.c_proj.weight"), vec![c, c]),
                (h("attn.c_proj.bias"), vec![c]),
                (h("ln_2.weight"), vec![c]),
                (h("ln_2.bias"), vec![c]),
                (h("mlp.c_fc.weight"), vec![c, 4 * c]),
                (h("mlp.c_fc.bias"), vec![4 * c]),
                (h("mlp.c_proj.weight"), vec![4 * c, c]),
                (h("mlp.c_proj.bias"), vec![c]),
            ]);
        }
        out.push(("transformer.ln_f.weight".to_string(), vec![c]));
        out.push(("transformer.ln_f.bias".to_string(), vec![c]));
        out
    }

    pub fn num_params(&self) -> usize {
        self.param_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// GPT-2's initialisation: N(0, 0.02) for weights and embeddings, the
    /// residual projections scaled by 1/√(2·n_layer), zero biases, unit
    /// LayerNorm gains. Deterministic in `seed`.
    pub fn init_params(&self, seed: u64) -> Vec<(String, Vec<f32>)> {
        let mut rng = Rng::new(seed);
        let resid_std = 0.02 / (2.0 * self.n_layer as f32).sqrt();
        self.param_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let data = if name.ends_with("ln_1.weight")
                    || name.ends_with("ln_2.weight")
                    || name.ends_with("ln_f.weight")
                {
                    vec![1.0; n]
                } else if name.ends_with(".bias") {
                    vec![0.0; n]
                } else if name.ends_with("c_proj.weight") {
                    rng.vec_normal(n, resid_std)
                } else {
                    rng.vec_normal(n, 0.02)
                };
                (name, data)
            })
            .collect()
    }

    /// Whether AdamW decays this parameter by default: matmul weights yes;
    /// biases, LayerNorm parameters and embeddings no.
    pub fn decays(name: &str) -> bool {
        name.ends_with(".weight")
            && !name.contains(".ln_")
            && !name.contains("wte")
            && !name.contains("wpe")
    }
}

/// The ids a caller needs in a built GPT graph.
#[derive(Clone, Debug)]
pub struct GptGraph {
    pub graph: Graph,
    pub tokens: TensorId,
    pub targets: TensorId,
    pub logits: TensorId,
    pub loss: TensorId,
}

/// Options for [`build`]. `BuildOptions { batch, seq, ..Default::default() }`
/// is a forward-only graph with fused attention.
#[derive(Clone, Copy, Debug)]
pub struct BuildOptions {
    pub batch: usize,
    pub seq: usize,
    /// Append the backward pass.
    pub training: bool,
    /// Keep logits readable after the step (costs B·T·V floats of memory
    /// that the planner could otherwise reuse).
    pub keep_logits: bool,
    /// Scale of the loss gradient (1 / gradient-accumulation steps).
    pub grad_scale: f32,
    /// Attention kernels: fused (the default) or the unfused reference path.
    pub attention: AttentionImpl,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            batch: 1,
            seq: 1,
            training: false,
            keep_logits: false,
            grad_scale: 1.0,
            attention: AttentionImpl::default(),
        }
    }
}

/// Builds GPT-2's forward (and, when training, backward) graph for one batch shape.
pub fn build(cfg: &GptConfig, o: &BuildOptions) -> Result<GptGraph> {
    cfg.validate()?;
    ensure!(
        o.seq >= 1 && o.seq <= cfg.n_positions,
        "sequence length {} must be between 1 and n_positions = {}",
        o.seq,
        cfg.n_positions
    );
    ensure!(o.batch >= 1, "batch size must be at least 1");
    let mut g = Graph::with_attention(o.attention);
    let mut p = std::collections::HashMap::new();
    for (name, shape) in cfg.param_shapes() {
        let id = g.param(&name, &shape);
        p.insert(name, id);
    }
    let w = |s: &str| p[s];
    let eps = cfg.layer_norm_epsilon;
    let tokens = g.input("tokens", &[o.batch, o.seq], DType::I32);
    let targets = g.input("targets", &[o.batch, o.seq], DType::I32);

    let mut x = g.embedding(
        tokens,
        w("transformer.wte.weight"),
        w("transformer.wpe.weight"),
    )?;
    for l in 0..cfg.n_layer {
        let n = |s: &str| w(&format!("transformer.h.{l}.{s}"));
        // x = x + proj(attention(ln_1(x)))
        let h = g.layernorm(x, n("ln_1.weight"), n("ln_1.bias"), eps)?;
        let qkv = g.linear(
            h,
            n("attn.c_attn.weight"),
            Some(n("attn.c_attn.bias")),
            false,
        )?;
        let a = g.self_attention(qkv, cfg.n_head, true)?;
        let a = g.linear(
            a,
            n("attn.c_proj.weight"),
            Some(n("attn.c_proj.bias")),
            false,
        )?;
        x = g.add(x, a)?;
        // x = x + mlp(ln_2(x))
        let h = g.layernorm(x, n("ln_2.weight"), n("ln_2.bias"), eps)?;
        let h = g.linear(h, n("mlp.c_fc.weight"), Some(n("mlp.c_fc.bias")), false)?;
        let h = g.gelu(h, GeluKind::Tanh);
        let h = g.linear(h, n("mlp.c_proj.weight"), Some(n("mlp.c_proj.bias")), false)?;
        x = g.add(x, h)?;
    }
    let x = g.layernorm(
        x,
        w("transformer.ln_f.weight"),
        w("transformer.ln_f.bias"),
        eps,
    )?;
    // LM head tied to the token embedding: logits = x·wteᵀ.
    let logits = g.linear(x, w("transformer.wte.weight"), None, true)?;
    g.rename(logits, "logits");
    let loss = g.cross_entropy(logits, targets, -1)?;
    if o.keep_logits {
        g.keep(logits);
    }
    if o.training {
        g.backward(o.grad_scale)?;
    } else {
        g.forward_only()?;
    }
    Ok(GptGraph {
        graph: g,
        tokens,
        targets,
        logits,
        loss,
    })
}
