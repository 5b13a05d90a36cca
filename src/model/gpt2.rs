//! GPT-2, exactly (`GPT2LMHeadModel`): token and learned position
//! embeddings, pre-LayerNorm blocks with causal multi-head self-attention
//! scaled by 1/√head_dim and an MLP (`n_inner`, default 4·n_embd, with the
//! config's activation, tanh-GELU by default), a final LayerNorm, and an LM
//! head tied to the token embedding (or separate, `tie_word_embeddings:
//! false`). Parameter names and layouts are Hugging Face's (Conv1D weights
//! stored [in, out]), so checkpoints load in PyTorch as they are.
//!
//! Inputs: `input_ids` [B, T] i32, and for a loss `targets` [B, T] (the next
//! token at each position, −100 or −1 = not predicted) — or Hugging Face's
//! `labels`, aligned with `input_ids` and shifted here, as the PyTorch model
//! does. Outputs: `loss`, `logits` [B, T, V].

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, ensure, Result};
use serde::{Deserialize, Serialize};

use super::heads::ClassHead;
use super::transformer::{encoder, LayerNames, LayerSpec, Norm};
use super::vb::{LayerNorm, Linear, Vb};
use super::{Dims, Model, Outputs};
use crate::data::{Batch, InputSpec};
use crate::graph::{Graph, Init, TensorId};
use crate::io::checkpoint::NamedTensor;
use crate::ops::Activation;
use crate::runtime::DType;

/// Targets equal to this (Hugging Face's convention) or −1 are not predicted.
pub const IGNORE_INDEX: i32 = -100;

/// `transformers.GPT2Config`: the fields Kiln reads and writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Longest sequence (rows of the position table).
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_layer: usize,
    /// Hidden size of the MLP; `None` means 4·n_embd.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Dropout after the embeddings, and on the attention and MLP outputs
    /// (training only).
    #[serde(default)]
    pub embd_pdrop: f32,
    #[serde(default)]
    pub resid_pdrop: f32,
    /// Dropout of the attention probabilities: Kiln's attention kernels do
    /// not apply it (a warning says so when it is set).
    #[serde(default)]
    pub attn_pdrop: f32,
}

fn default_eps() -> f32 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}
fn default_true() -> bool {
    true
}

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
            n_inner: None,
            activation_function: default_act(),
            layer_norm_epsilon: default_eps(),
            tie_word_embeddings: true,
            embd_pdrop: 0.0,
            resid_pdrop: 0.0,
            attn_pdrop: 0.0,
        }
    }

    /// GPT-2 small (124M parameters).
    pub fn gpt2_124m() -> Self {
        Self::new(50257, 1024, 768, 12, 12)
    }

    /// The MLP's hidden size.
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.vocab_size > 0 && self.n_positions > 0 && self.n_layer > 0 && self.n_embd > 0,
            "GPT config: vocab_size, n_positions, n_embd and n_layer must be positive \
             (got {}, {}, {}, {})",
            self.vocab_size,
            self.n_positions,
            self.n_embd,
            self.n_layer
        );
        ensure!(
            self.n_head > 0 && self.n_embd.is_multiple_of(self.n_head),
            "GPT config: n_embd ({}) must be divisible by n_head ({})",
            self.n_embd,
            self.n_head
        );
        ensure!(self.inner() > 0, "GPT config: n_inner must be positive");
        super::check_size(
            "GPT config",
            self.n_layer,
            self.n_embd,
            self.inner(),
            self.vocab_size.saturating_add(self.n_positions),
        )?;
        ensure!(
            self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon >= 0.0,
            "GPT config: layer_norm_epsilon must be finite and ≥ 0"
        );
        Activation::from_hf(&self.activation_function)?;
        for (k, p) in [
            ("embd_pdrop", self.embd_pdrop),
            ("resid_pdrop", self.resid_pdrop),
            ("attn_pdrop", self.attn_pdrop),
        ] {
            ensure!(
                (0.0..1.0).contains(&p),
                "GPT config: {k} must be in [0, 1), got {p}"
            );
        }
        Ok(())
    }

    /// Every parameter's Hugging Face name and shape, in declaration order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        super::param_shapes(&Gpt2::new(self.clone()).expect("a valid config"))
            .expect("GPT-2 declares its parameters")
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
        super::init_params(&Gpt2::new(self.clone()).expect("a valid config"), seed)
            .expect("GPT-2 declares its parameters")
    }
}

/// Refuses `config.json` switches that change the computation in ways
/// Kiln's GPT-2 does not implement.
fn check_unsupported(v: &serde_json::Value) -> Result<()> {
    let flag = |k: &str, ok: bool| -> Result<()> {
        if let Some(x) = v.get(k) {
            if !x.is_null() && x.as_bool() != Some(ok) {
                bail!("config.json sets {k} = {x}; Kiln's GPT-2 supports only {ok} (the default)");
            }
        }
        Ok(())
    };
    flag("scale_attn_weights", true)?;
    flag("scale_attn_by_inverse_layer_idx", false)?;
    flag("add_cross_attention", false)?;
    Ok(())
}

/// A GPT-2 language model (`GPT2LMHeadModel`), or with a class head
/// `GPT2ForSequenceClassification`: `score` [num_labels, n_embd] (no bias) on
/// the final state of each sequence's last token that is not padding, as
/// Hugging Face finds it (the rightmost id ≠ `pad_token_id`; the last
/// position when the config has no pad id). A batch may give the positions
/// itself as `pool_index` [B] (i32).
#[derive(Clone, Debug)]
pub struct Gpt2 {
    pub cfg: GptConfig,
    pub classify: Option<ClassHead>,
    /// The padding id a classifier skips when it looks for the last token.
    pub pad_token_id: Option<i64>,
}

pub const SEQ_CLS: &str = "GPT2ForSequenceClassification";

impl Gpt2 {
    pub fn new(cfg: GptConfig) -> Result<Self> {
        cfg.validate()?;
        if cfg.attn_pdrop > 0.0 {
            log::warn!(
                "GPT-2 config: attn_pdrop = {} is not applied (Kiln's attention kernels have no \
                 dropout on the probabilities); embd_pdrop and resid_pdrop are",
                cfg.attn_pdrop
            );
        }
        Ok(Self {
            cfg,
            classify: None,
            pad_token_id: None,
        })
    }

    /// The same transformer with a sequence-classification head.
    pub fn classifier(cfg: GptConfig, head: ClassHead, pad_token_id: Option<i64>) -> Result<Self> {
        let mut m = Self::new(cfg)?;
        m.classify = Some(head);
        m.pad_token_id = pad_token_id;
        Ok(m)
    }

    /// From Hugging Face's `config.json`, honouring every field that changes
    /// the computation or refusing it with a clear error.
    pub fn from_config_json(v: &serde_json::Value) -> Result<Self> {
        check_unsupported(v)?;
        let cfg: GptConfig = serde_json::from_value(v.clone())
            .map_err(|e| anyhow!("config.json is not a valid GPT-2 config: {e}"))?;
        if super::names_architecture(v, SEQ_CLS) {
            let head = ClassHead::from_config(v)?.ok_or_else(|| {
                anyhow!("config.json names {SEQ_CLS} but gives neither id2label nor num_labels")
            })?;
            let pad = v.get("pad_token_id").and_then(|p| p.as_i64());
            return Self::classifier(cfg, head, pad);
        }
        Self::new(cfg)
    }

    /// HF's pooled position of each row: the rightmost id that is not the
    /// pad id (0 when a row is all padding), or the last position.
    fn pool_positions(&self, ids: &[i32], t: usize) -> Vec<i32> {
        ids.chunks(t)
            .map(|row| match self.pad_token_id {
                None => t as i32 - 1,
                Some(p) => row.iter().rposition(|&x| x as i64 != p).unwrap_or(0) as i32,
            })
            .collect()
    }
}

impl Model for Gpt2 {
    fn architecture(&self) -> &'static str {
        match self.classify {
            None => "GPT2LMHeadModel",
            Some(_) => SEQ_CLS,
        }
    }

    fn head_prefixes(&self) -> Vec<String> {
        match self.classify {
            None => vec!["lm_head.".into()],
            Some(_) => vec!["score.".into()],
        }
    }

    fn config_json(&self) -> serde_json::Value {
        let c = &self.cfg;
        let mut v = serde_json::json!({
            "model_type": "gpt2",
            "architectures": [self.architecture()],
            "vocab_size": c.vocab_size,
            "n_positions": c.n_positions,
            "n_ctx": c.n_positions,
            "n_embd": c.n_embd,
            "n_layer": c.n_layer,
            "n_head": c.n_head,
            "n_inner": c.n_inner,
            "activation_function": c.activation_function,
            "layer_norm_epsilon": c.layer_norm_epsilon,
            "resid_pdrop": c.resid_pdrop,
            "embd_pdrop": c.embd_pdrop,
            "attn_pdrop": c.attn_pdrop,
            "tie_word_embeddings": c.tie_word_embeddings,
            // Kiln's vocabularies have no special tokens unless a GPT-2
            // tokenizer brings them (`transformers` otherwise assumes 50256).
            "bos_token_id": null,
            "eos_token_id": null,
        });
        if let Some(h) = &self.classify {
            h.write_config(&mut v);
            v["pad_token_id"] = self.pad_token_id.into();
        }
        v
    }

    fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "GPT {} layers, {} heads, {} dims, context {}, vocab {}",
            c.n_layer, c.n_head, c.n_embd, c.n_positions, c.vocab_size
        )
    }

    fn input_specs(&self, d: Dims) -> Vec<InputSpec> {
        let ids = InputSpec::new("input_ids", &[d.batch, d.seq], DType::I32);
        match &self.classify {
            None => vec![
                ids,
                InputSpec::new("targets", &[d.batch, d.seq], DType::I32),
            ],
            Some(h) => vec![
                ids,
                h.label_spec(d.batch),
                InputSpec::new("pool_index", &[d.batch], DType::I32),
            ],
        }
    }

    fn forward(&self, g: &mut Graph, inputs: &BTreeMap<String, TensorId>) -> Result<Outputs> {
        let c = &self.cfg;
        let ids = *inputs
            .get("input_ids")
            .ok_or_else(|| anyhow!("GPT-2 needs `input_ids` (i32 [B, T])"))?;
        let s = g.shape(ids).to_vec();
        ensure!(
            s.len() == 2 && g.dtype(ids) == DType::I32,
            "input_ids must be i32 [B, T], is {} {s:?}",
            g.dtype(ids).name()
        );
        ensure!(
            s[1] <= c.n_positions,
            "sequence length {} exceeds the model's context n_positions = {}",
            s[1],
            c.n_positions
        );
        let (e, act) = (c.n_embd, Activation::from_hf(&c.activation_function)?);
        let eps = c.layer_norm_epsilon;
        let std = Init::Normal(0.02);
        let resid = Init::Normal(0.02 / (2.0 * c.n_layer as f32).sqrt());
        let vb = Vb::root().pp("transformer");
        // Embeddings take no weight decay (as in the PyTorch reference).
        let wte = vb
            .pp("wte")
            .param_decay(g, "weight", &[c.vocab_size, e], std, false)?;
        let wpe = vb
            .pp("wpe")
            .param_decay(g, "weight", &[c.n_positions, e], std, false)?;
        let x = g.token_position_embedding(ids, wte, wpe)?;
        let x = g.dropout(x, c.embd_pdrop)?;
        let spec = LayerSpec {
            hidden: e,
            inner: c.inner(),
            heads: c.n_head,
            eps,
            act,
            norm: Norm::Pre,
            causal: true,
            qkv_bias: true,
            dropout: c.resid_pdrop,
            init: std,
            init_out: resid,
        };
        let x = encoder(g, &vb.pp("h"), c.n_layer, &LayerNames::GPT2, spec, x, None)?;
        let x = LayerNorm::new(g, &vb.pp("ln_f"), e, eps)?.forward(g, x)?;
        if let Some(head) = &self.classify {
            let at = *inputs.get("pool_index").ok_or_else(|| {
                anyhow!("{SEQ_CLS} needs `pool_index` (i32 [B]; prepare_batch adds it)")
            })?;
            let pooled = g.gather_row(x, at)?;
            let score = Linear::new(g, &Vb::root().pp("score"), e, head.num_labels(), false, std)?;
            let logits = score.forward(g, pooled)?;
            return head.outputs(g, logits, inputs.get("labels").copied());
        }
        // LM head: tied to the token embedding (logits = x·wteᵀ), or its own.
        let head = if c.tie_word_embeddings {
            wte
        } else {
            Vb::root()
                .pp("lm_head")
                .param(g, "weight", &[c.vocab_size, e], std)?
        };
        let logits = g.linear(x, head, None, true)?;
        g.rename(logits, "logits");
        let mut out = Outputs::default();
        out.tensors.insert("logits".into(), logits);
        if let Some(&targets) = inputs.get("targets") {
            ensure!(
                g.shape(targets) == s.as_slice(),
                "targets {:?} must have the shape of input_ids {s:?}",
                g.shape(targets)
            );
            let loss = g.cross_entropy(logits, targets, IGNORE_INDEX)?;
            out.losses.push(("loss".into(), loss, 1.0));
            out.tensors.insert("loss".into(), loss);
        }
        Ok(out)
    }

    fn prepare_batch(&self, batch: &mut Batch) -> Result<()> {
        let v = self.cfg.vocab_size as i32;
        let ids = batch.i32("input_ids")?;
        let shape = batch
            .get("input_ids")
            .map(|t| t.shape.clone())
            .unwrap_or_default();
        ensure!(shape.len() == 2, "input_ids must be [B, T], is {shape:?}");
        let cols = shape[1];
        let at = move |i: usize| format!("[{}][{}]", i / cols, i % cols);
        if let Some((i, bad)) = ids.iter().enumerate().find(|(_, t)| !(0..v).contains(*t)) {
            bail!(
                "input_ids{} = {bad} lies outside the vocabulary [0, {v}); \
                 was the batch made with another tokenizer?",
                at(i)
            );
        }
        if let Some(h) = &self.classify {
            h.check_labels(batch)?;
            if !batch.contains("pool_index") {
                let at = self.pool_positions(ids, cols);
                batch.insert(NamedTensor::i32("pool_index", vec![shape[0]], at));
            }
            let at = batch.i32("pool_index")?;
            if let Some((i, bad)) = at
                .iter()
                .enumerate()
                .find(|(_, p)| !(0..cols as i32).contains(*p))
            {
                bail!("pool_index[{i}] = {bad} lies outside the sequence [0, {cols})");
            }
            return Ok(());
        }
        if batch.contains("labels") && !batch.contains("targets") {
            // Hugging Face's GPT2LMHeadModel predicts labels[t + 1] at t.
            let labels = batch.remove("labels").expect("checked");
            ensure!(
                labels.shape == shape,
                "labels {:?} must have the shape of input_ids {shape:?}",
                labels.shape
            );
            let l = labels.i32_with_shape(&shape)?;
            let t = shape[1];
            let shifted: Vec<i32> = (0..l.len())
                .map(|i| {
                    if i % t + 1 < t {
                        l[i + 1]
                    } else {
                        IGNORE_INDEX
                    }
                })
                .collect();
            batch.insert(NamedTensor::i32("targets", shape.clone(), shifted));
        }
        if let Ok(t) = batch.i32("targets") {
            if let Some((i, bad)) = t
                .iter()
                .enumerate()
                .find(|(_, &x)| !((0..v).contains(&x) || x == IGNORE_INDEX || x == -1))
            {
                bail!(
                    "targets{} = {bad} is neither a token id in [0, {v}) nor −100/−1 \
                     (not predicted)",
                    at(i)
                );
            }
            ensure!(
                t.iter().any(|&x| x >= 0),
                "every target is ignored (−100 or −1): there is no token to compute a loss on"
            );
        }
        Ok(())
    }

    fn context_length(&self) -> Option<usize> {
        Some(self.cfg.n_positions)
    }

    fn canonical_name(&self, stored: &str) -> Option<String> {
        // The published gpt2 weights have no "transformer." prefix; the tied
        // head and the attention-mask buffers are not parameters.
        if stored.starts_with("score.") {
            return self.classify.is_some().then(|| stored.to_string());
        }
        if (stored == "lm_head.weight" && (self.cfg.tie_word_embeddings || self.classify.is_some()))
            || stored.ends_with(".attn.bias")
            || stored.ends_with(".attn.masked_bias")
        {
            return None;
        }
        if stored.starts_with("transformer.") || stored == "lm_head.weight" {
            Some(stored.to_string())
        } else {
            Some(format!("transformer.{stored}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::io::atomic::write_json_atomic;
    use crate::io::checkpoint::{save_safetensors, NamedTensor};
    use crate::train::checkpoint::{load_model, load_params, CONFIG_FILE, MODEL_FILE};

    #[test]
    fn published_names_and_tied_head_load_and_bad_shapes_are_named() {
        let cfg = GptConfig::new(11, 5, 4, 2, 1);
        let gpt = Gpt2::new(cfg.clone()).unwrap();
        let dir = std::env::temp_dir().join(format!("kiln-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let params = cfg.init_params(3);
        // Written the way the published gpt2 weights are: no prefix, plus the
        // tied head and mask buffers.
        let mut ts: Vec<NamedTensor> = cfg
            .param_shapes()
            .iter()
            .zip(&params)
            .map(|((n, s), (_, d))| {
                NamedTensor::f32(n.trim_start_matches("transformer."), s.clone(), d.clone())
            })
            .collect();
        ts.push(NamedTensor::f32(
            "lm_head.weight",
            vec![11, 4],
            params[0].1.clone(),
        ));
        ts.push(NamedTensor::f32(
            "h.0.attn.bias",
            vec![1, 1, 5, 5],
            vec![1.0; 25],
        ));
        save_safetensors(&dir.join(MODEL_FILE), &ts, &BTreeMap::new()).unwrap();
        write_json_atomic(&dir.join(CONFIG_FILE), &gpt.config_json()).unwrap();
        let (m, loaded) = load_model(&dir).unwrap();
        assert_eq!(m.config_json(), gpt.config_json());
        assert_eq!(loaded, params);
        // A config that does not match the tensors is refused with the name.
        let wrong = Gpt2::new(GptConfig::new(11, 5, 6, 2, 1)).unwrap();
        let err = load_params(&dir, &wrong).unwrap_err().to_string();
        assert!(
            err.contains("transformer.wte.weight") && err.contains("shape"),
            "{err}"
        );
        // The same parameter stored under two names is an error, not a guess.
        ts.push(NamedTensor::f32(
            "transformer.wte.weight",
            vec![11, 4],
            params[0].1.clone(),
        ));
        save_safetensors(&dir.join(MODEL_FILE), &ts, &BTreeMap::new()).unwrap();
        let err = format!("{:#}", load_params(&dir, &gpt).unwrap_err());
        assert!(err.contains("both transformer.wte.weight"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn config_fields_that_change_the_computation_are_honoured_or_refused() {
        let base = serde_json::json!({
            "model_type": "gpt2", "vocab_size": 11, "n_positions": 8, "n_embd": 8,
            "n_layer": 1, "n_head": 2,
        });
        let with = |k: &str, v: serde_json::Value| {
            let mut c = base.clone();
            c[k] = v;
            Gpt2::from_config_json(&c)
        };
        // n_inner sizes the MLP; null means 4·n_embd.
        let m = with("n_inner", 12.into()).unwrap();
        let shapes = crate::model::param_shapes(&m).unwrap();
        assert!(shapes.contains(&("transformer.h.0.mlp.c_fc.weight".into(), vec![8, 12])));
        let m = with("n_inner", serde_json::Value::Null).unwrap();
        let shapes = crate::model::param_shapes(&m).unwrap();
        assert!(shapes.contains(&("transformer.h.0.mlp.c_fc.weight".into(), vec![8, 32])));
        // The activation is honoured, or refused by name.
        assert!(with("activation_function", "gelu".into()).is_ok());
        let e = with("activation_function", "gelu_fast".into()).unwrap_err();
        assert!(format!("{e:#}").contains("gelu_fast"), "{e:#}");
        // An untied head is its own parameter.
        let m = with("tie_word_embeddings", false.into()).unwrap();
        let shapes = crate::model::param_shapes(&m).unwrap();
        assert!(shapes.iter().any(|(n, _)| n == "lm_head.weight"));
        // Switches Kiln does not implement are refused, not ignored.
        for (k, v) in [
            ("scale_attn_weights", false),
            ("scale_attn_by_inverse_layer_idx", true),
            ("add_cross_attention", true),
        ] {
            let e = with(k, v.into()).unwrap_err();
            assert!(format!("{e:#}").contains(k), "{e:#}");
        }
        assert!(
            with("n_embd", 7.into()).is_err(),
            "7 is not divisible by 2 heads"
        );
    }
}
