//! BERT for masked language modelling, exactly (`BertForMaskedLM`): word +
//! learned position + token-type embeddings and a LayerNorm, a post-LayerNorm
//! encoder (bidirectional attention over a key-padding mask, erf-GELU MLP),
//! and the MLM head (dense, activation, LayerNorm, a decoder tied to the word
//! embeddings with its own bias `cls.predictions.bias`). Names, layouts and
//! `config.json` are Hugging Face's.
//!
//! Inputs: `input_ids` [B, T] i32, `attention_mask` [B, T] i32 (1 = real
//! token; all ones when absent), `token_type_ids` [B, T] i32 (zeros when
//! absent), and for a loss `labels` [B, T] (−100 = not predicted).
//! Outputs: `loss`, `logits` [B, T, V], `accuracy` (of the predicted labels).
//!
//! `BertForSequenceClassification` (a config whose `architectures` names it):
//! the same encoder, the pooler (`bert.pooler.dense` and tanh on the [CLS]
//! state), dropout and `classifier` [num_labels, H]; `labels` [B] (class ids,
//! or f32 targets when num_labels = 1), `logits` [B, num_labels].

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, ensure, Result};
use serde::{Deserialize, Serialize};

use super::heads::ClassHead;
use super::transformer::{encoder, LayerNames, LayerSpec, Norm};
use super::vb::{LayerNorm, Linear, Vb};
use super::{Dims, Model, Outputs};
use crate::data::{Batch, InputSpec};
use crate::graph::{Graph, Init, TensorId};
use crate::ops::Activation;
use crate::runtime::DType;

/// `transformers.BertConfig`: the fields Kiln reads and writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    #[serde(default = "default_range")]
    pub initializer_range: f32,
    #[serde(default)]
    pub hidden_dropout_prob: f32,
    #[serde(default)]
    pub attention_probs_dropout_prob: f32,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
}

fn gelu() -> String {
    "gelu".into()
}
fn default_positions() -> usize {
    512
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f32 {
    1e-12
}
fn default_range() -> f32 {
    0.02
}
fn yes() -> bool {
    true
}

impl BertConfig {
    /// A configuration with BERT's defaults for everything but the sizes.
    pub fn new(vocab: usize, hidden: usize, layers: usize, heads: usize, positions: usize) -> Self {
        Self {
            vocab_size: vocab,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: 4 * hidden,
            hidden_act: gelu(),
            max_position_embeddings: positions,
            type_vocab_size: 2,
            layer_norm_eps: default_eps(),
            initializer_range: default_range(),
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            pad_token_id: 0,
            tie_word_embeddings: true,
        }
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.vocab_size > 0
                && self.hidden_size > 0
                && self.num_hidden_layers > 0
                && self.intermediate_size > 0
                && self.max_position_embeddings > 0
                && self.type_vocab_size > 0,
            "BERT config: sizes must be positive"
        );
        ensure!(
            self.num_attention_heads > 0
                && self.hidden_size.is_multiple_of(self.num_attention_heads),
            "BERT config: hidden_size ({}) must be divisible by num_attention_heads ({})",
            self.hidden_size,
            self.num_attention_heads
        );
        super::check_size(
            "BERT config",
            self.num_hidden_layers,
            self.hidden_size,
            self.intermediate_size,
            self.vocab_size
                .saturating_add(self.max_position_embeddings)
                .saturating_add(self.type_vocab_size),
        )?;
        Activation::from_hf(&self.hidden_act)?;
        ensure!(
            self.tie_word_embeddings,
            "BERT config: tie_word_embeddings = false is not supported (the MLM decoder is tied)"
        );
        Ok(())
    }
}

/// Refuses `config.json` switches that change the computation in ways
/// Kiln's BERT does not implement.
fn check_unsupported(v: &serde_json::Value) -> Result<()> {
    if let Some(p) = v.get("position_embedding_type").and_then(|p| p.as_str()) {
        ensure!(
            p == "absolute",
            "config.json sets position_embedding_type = {p:?}; Kiln's BERT has absolute positions only"
        );
    }
    for k in ["is_decoder", "add_cross_attention"] {
        if v.get(k).and_then(|x| x.as_bool()) == Some(true) {
            bail!("config.json sets {k} = true; Kiln's BERT is an encoder only");
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct Bert {
    pub cfg: BertConfig,
    /// `None`: the masked-LM head (`BertForMaskedLM`); a class head:
    /// `BertForSequenceClassification`.
    pub classify: Option<ClassHead>,
}

pub const SEQ_CLS: &str = "BertForSequenceClassification";

impl Bert {
    pub fn new(cfg: BertConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            classify: None,
        })
    }

    /// The same encoder with a sequence-classification head.
    pub fn classifier(cfg: BertConfig, head: ClassHead) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            classify: Some(head),
        })
    }

    pub fn from_config_json(v: &serde_json::Value) -> Result<Self> {
        check_unsupported(v)?;
        let cfg: BertConfig = serde_json::from_value(v.clone())
            .map_err(|e| anyhow!("config.json is not a valid BERT config: {e}"))?;
        if super::names_architecture(v, SEQ_CLS) {
            let head = ClassHead::from_config(v)?.ok_or_else(|| {
                anyhow!("config.json names {SEQ_CLS} but gives neither id2label nor num_labels")
            })?;
            return Self::classifier(cfg, head);
        }
        Self::new(cfg)
    }

    /// The classification head on the encoder's states `x` [B, T, H].
    fn classify_forward(
        &self,
        g: &mut Graph,
        head: &ClassHead,
        x: TensorId,
        labels: Option<TensorId>,
    ) -> Result<Outputs> {
        let c = &self.cfg;
        let h = c.hidden_size;
        let std = Init::Normal(c.initializer_range);
        let b = g.shape(x)[0];
        let cls = g.slice(x, 1, 0, 1)?;
        let cls = g.reshape(cls, &[b, h])?;
        let pooler = Linear::new(
            g,
            &Vb::root().pp("bert").pp("pooler").pp("dense"),
            h,
            h,
            true,
            std,
        )?;
        let pooled = pooler.forward(g, cls)?;
        let pooled = g.activation(pooled, Activation::Tanh);
        let pooled = g.dropout(pooled, c.hidden_dropout_prob)?;
        let classifier = Linear::new(
            g,
            &Vb::root().pp("classifier"),
            h,
            head.num_labels(),
            true,
            std,
        )?;
        let logits = classifier.forward(g, pooled)?;
        head.outputs(g, logits, labels)
    }

    /// The encoder (`bert.*`): [B, T] ids → hidden states [B, T, H]. Shared
    /// with the sequence-classification head.
    pub fn encode(&self, g: &mut Graph, inputs: &BTreeMap<String, TensorId>) -> Result<TensorId> {
        let c = &self.cfg;
        let ids = *inputs
            .get("input_ids")
            .ok_or_else(|| anyhow!("BERT needs `input_ids` (i32 [B, T])"))?;
        let s = g.shape(ids).to_vec();
        ensure!(
            s.len() == 2 && g.dtype(ids) == DType::I32,
            "input_ids must be i32 [B, T], is {} {s:?}",
            g.dtype(ids).name()
        );
        let (b, t) = (s[0], s[1]);
        ensure!(
            t <= c.max_position_embeddings,
            "sequence length {t} exceeds max_position_embeddings = {}",
            c.max_position_embeddings
        );
        let mask = inputs.get("attention_mask").copied();
        for (name, x) in [
            ("attention_mask", mask),
            ("token_type_ids", inputs.get("token_type_ids").copied()),
        ] {
            if let Some(x) = x {
                ensure!(
                    g.shape(x) == [b, t] && g.dtype(x) == DType::I32,
                    "{name} must be i32 [B, T] = [{b}, {t}], is {} {:?}",
                    g.dtype(x).name(),
                    g.shape(x)
                );
            }
        }
        let h = c.hidden_size;
        let std = Init::Normal(c.initializer_range);
        let eps = c.layer_norm_eps;
        let act = Activation::from_hf(&c.hidden_act)?;
        let vb = Vb::root().pp("bert");
        let e = vb.pp("embeddings");
        let words = e
            .pp("word_embeddings")
            .param(g, "weight", &[c.vocab_size, h], std)?;
        let positions =
            e.pp("position_embeddings")
                .param(g, "weight", &[c.max_position_embeddings, h], std)?;
        let types =
            e.pp("token_type_embeddings")
                .param(g, "weight", &[c.type_vocab_size, h], std)?;
        let ln = LayerNorm::new(g, &e.pp("LayerNorm"), h, eps)?;
        // embeddings = (words + token types) + positions, as Hugging Face adds them.
        let mut x = g.embedding(ids, words)?;
        let tt = match inputs.get("token_type_ids") {
            Some(&tt) => g.embedding(tt, types)?,
            None => {
                let zero = g.slice(types, 0, 0, 1)?;
                g.broadcast_to(zero, &[b, t, h])?
            }
        };
        x = g.add(x, tt)?;
        let pos = g.slice(positions, 0, 0, t)?;
        x = g.add(x, pos)?;
        x = ln.forward(g, x)?;
        x = g.dropout(x, c.hidden_dropout_prob)?;
        let spec = LayerSpec {
            hidden: h,
            inner: c.intermediate_size,
            heads: c.num_attention_heads,
            eps,
            act,
            norm: Norm::Post,
            causal: false,
            qkv_bias: true,
            dropout: c.hidden_dropout_prob,
            init: std,
            init_out: std,
        };
        let names = LayerNames::BERT;
        let layers = vb.pp("encoder").pp("layer");
        encoder(g, &layers, c.num_hidden_layers, &names, spec, x, mask)
    }
}

impl Model for Bert {
    fn architecture(&self) -> &'static str {
        match self.classify {
            None => "BertForMaskedLM",
            Some(_) => SEQ_CLS,
        }
    }

    fn config_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.cfg).expect("config serialises");
        v["model_type"] = "bert".into();
        v["architectures"] = serde_json::json!([self.architecture()]);
        v["position_embedding_type"] = "absolute".into();
        if let Some(h) = &self.classify {
            h.write_config(&mut v);
        }
        v
    }

    fn head_prefixes(&self) -> Vec<String> {
        match self.classify {
            None => vec!["cls.".into()],
            Some(_) => vec!["bert.pooler.".into(), "classifier.".into()],
        }
    }

    fn describe(&self) -> String {
        let c = &self.cfg;
        format!(
            "BERT {} layers, {} heads, {} dims, {} positions, vocab {}",
            c.num_hidden_layers,
            c.num_attention_heads,
            c.hidden_size,
            c.max_position_embeddings,
            c.vocab_size
        )
    }

    fn input_specs(&self, d: Dims) -> Vec<InputSpec> {
        let mut specs: Vec<InputSpec> = ["input_ids", "attention_mask", "token_type_ids"]
            .iter()
            .map(|n| InputSpec::new(n, &[d.batch, d.seq], DType::I32))
            .collect();
        specs.push(match &self.classify {
            None => InputSpec::new("labels", &[d.batch, d.seq], DType::I32),
            Some(h) => h.label_spec(d.batch),
        });
        specs
    }

    fn forward(&self, g: &mut Graph, inputs: &BTreeMap<String, TensorId>) -> Result<Outputs> {
        let c = &self.cfg;
        let x = self.encode(g, inputs)?;
        if let Some(head) = &self.classify {
            return self.classify_forward(g, head, x, inputs.get("labels").copied());
        }
        let h = c.hidden_size;
        let std = Init::Normal(c.initializer_range);
        let p = Vb::root().pp("cls").pp("predictions");
        let dense = Linear::new(g, &p.pp("transform").pp("dense"), h, h, true, std)?;
        let ln = LayerNorm::new(g, &p.pp("transform").pp("LayerNorm"), h, c.layer_norm_eps)?;
        let bias = p.param(g, "bias", &[c.vocab_size], Init::Zeros)?;
        let words = g
            .param_id("bert.embeddings.word_embeddings.weight")
            .expect("declared by the encoder");
        let y = dense.forward(g, x)?;
        let y = g.activation(y, Activation::from_hf(&c.hidden_act)?);
        let y = ln.forward(g, y)?;
        // The decoder is tied to the word embeddings, with its own bias.
        let logits = g.linear(y, words, Some(bias), true)?;
        g.rename(logits, "logits");
        let mut out = Outputs::default();
        out.tensors.insert("logits".into(), logits);
        if let Some(&labels) = inputs.get("labels") {
            ensure!(
                g.shape(labels) == g.shape(inputs["input_ids"]),
                "labels {:?} must have the shape of input_ids",
                g.shape(labels)
            );
            let loss = g.cross_entropy(logits, labels, -100)?;
            out.losses.push(("loss".into(), loss, 1.0));
            out.tensors.insert("loss".into(), loss);
            let acc = g.accuracy(logits, labels, -100)?;
            out.metrics.push(("accuracy".into(), acc));
        }
        Ok(out)
    }

    fn prepare_batch(&self, batch: &mut Batch) -> Result<()> {
        let v = self.cfg.vocab_size as i32;
        let ids = batch.i32("input_ids")?;
        if let Some((i, bad)) = ids.iter().enumerate().find(|(_, t)| !(0..v).contains(*t)) {
            bail!("input_ids[{i}] = {bad} lies outside the vocabulary [0, {v})");
        }
        if let Ok(tt) = batch.i32("token_type_ids") {
            let n = self.cfg.type_vocab_size as i32;
            if let Some((i, bad)) = tt.iter().enumerate().find(|(_, t)| !(0..n).contains(*t)) {
                bail!("token_type_ids[{i}] = {bad} lies outside [0, {n})");
            }
        }
        if let Ok(m) = batch.i32("attention_mask") {
            if let Some((i, bad)) = m.iter().enumerate().find(|(_, x)| **x != 0 && **x != 1) {
                bail!("attention_mask[{i}] = {bad}; it must hold 1 (token) or 0 (padding)");
            }
        }
        if let Some(h) = &self.classify {
            return h.check_labels(batch);
        }
        if let Ok(l) = batch.i32("labels") {
            if let Some((i, bad)) = l
                .iter()
                .enumerate()
                .find(|(_, x)| !((0..v).contains(*x) || **x == -100))
            {
                bail!("labels[{i}] = {bad} is neither a token id in [0, {v}) nor −100 (not predicted)");
            }
        }
        Ok(())
    }

    fn canonical_name(&self, stored: &str) -> Option<String> {
        if self.classify.is_some() {
            // A classifier keeps its pooler; a pretraining head is not used.
            return (!stored.starts_with("cls.")).then(|| stored.to_string());
        }
        // The decoder is tied to the word embeddings and its bias to
        // cls.predictions.bias: Hugging Face may store either copy.
        if stored == "cls.predictions.decoder.weight" || stored == "cls.predictions.decoder.bias" {
            return None;
        }
        // bert-base checkpoints carry the pooler, which the MLM model does not use.
        if stored.starts_with("bert.pooler.") || stored.starts_with("cls.seq_relationship.") {
            return None;
        }
        Some(stored.to_string())
    }
}
