//! CLIP, exactly (`CLIPModel`): a causal text transformer pooled at the
//! end-of-text token, a vision transformer (class embedding in front of the
//! patch embeddings of a bias-free stride-p convolution, pre- and
//! post-LayerNorm), quick-GELU MLPs, bias-free projections into a shared
//! space, L2-normalised embeddings, and the symmetric contrastive loss over
//! the in-batch pairs with the learnable temperature exp(logit_scale)
//! (clamped to ≤ 100 as CLIP does). Names, layouts and `config.json` (with
//! its `text_config` and `vision_config`) are Hugging Face's.
//!
//! Inputs: `input_ids` [B, T] i32 (each row holding the end-of-text token),
//! `attention_mask` [B, T] i32 (1 = token; all ones when absent),
//! `pixel_values` [B, C, H, W] f32. Outputs: `loss`, `logits_per_image`
//! and `logits_per_text` [B, B], `text_embeds` and `image_embeds` [B, P]
//! (normalised), `accuracy` (image→text top-1 within the batch).

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

/// Input the batch preparation adds: the position of each row's end-of-text token.
pub const EOS_INDEX: &str = "kiln.eos_index";
/// Input the batch preparation adds: 0, 1, …, B−1 (the matching pair of each row).
pub const PAIRS: &str = "kiln.pairs";

/// `CLIPTextConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    #[serde(default = "default_eos")]
    pub eos_token_id: i64,
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
}

/// `CLIPVisionConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "three")]
    pub num_channels: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
}

/// `CLIPConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    pub text_config: ClipTextConfig,
    pub vision_config: ClipVisionConfig,
    pub projection_dim: usize,
    #[serde(default = "default_scale")]
    pub logit_scale_init_value: f32,
    #[serde(default = "one")]
    pub initializer_factor: f32,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f32 {
    1e-5
}
fn default_eos() -> i64 {
    2
}
fn three() -> usize {
    3
}
fn default_scale() -> f32 {
    2.6592
}
fn one() -> f32 {
    1.0
}

impl ClipConfig {
    pub fn validate(&self) -> Result<()> {
        let (t, v) = (&self.text_config, &self.vision_config);
        for (what, h, heads, layers) in [
            (
                "text",
                t.hidden_size,
                t.num_attention_heads,
                t.num_hidden_layers,
            ),
            (
                "vision",
                v.hidden_size,
                v.num_attention_heads,
                v.num_hidden_layers,
            ),
        ] {
            ensure!(
                h > 0 && layers > 0 && heads > 0 && h.is_multiple_of(heads),
                "CLIP {what} config: hidden_size ({h}) must be a positive multiple of num_attention_heads ({heads}), with ≥ 1 layer"
            );
        }
        ensure!(
            t.vocab_size > 0 && t.max_position_embeddings > 0 && self.projection_dim > 0,
            "CLIP config: vocab_size, max_position_embeddings and projection_dim must be positive"
        );
        ensure!(
            v.patch_size > 0
                && v.image_size >= v.patch_size
                && v.image_size.is_multiple_of(v.patch_size),
            "CLIP vision config: image_size ({}) must be a positive multiple of patch_size ({})",
            v.image_size,
            v.patch_size
        );
        super::check_size(
            "CLIP text config",
            t.num_hidden_layers,
            t.hidden_size,
            t.intermediate_size,
            t.vocab_size.saturating_add(t.max_position_embeddings),
        )?;
        super::check_size(
            "CLIP vision config",
            v.num_hidden_layers,
            v.hidden_size,
            v.intermediate_size,
            (v.image_size / v.patch_size).pow(2) + v.num_channels * v.patch_size * v.patch_size,
        )?;
        Activation::from_hf(&t.hidden_act)?;
        Activation::from_hf(&v.hidden_act)?;
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct Clip {
    pub cfg: ClipConfig,
}

/// CLIP's pre-LayerNorm layers (no dropout).
#[allow(clippy::too_many_arguments)]
fn layers(
    g: &mut Graph,
    vb: &Vb,
    n: usize,
    x: TensorId,
    h: usize,
    inner: usize,
    heads: usize,
    eps: f32,
    act: Activation,
    std: Init,
    causal: bool,
    mask: Option<TensorId>,
) -> Result<TensorId> {
    let spec = LayerSpec {
        hidden: h,
        inner,
        heads,
        eps,
        act,
        norm: Norm::Pre,
        causal,
        qkv_bias: true,
        dropout: 0.0,
        init: std,
        init_out: std,
    };
    encoder(
        g,
        &vb.pp("encoder").pp("layers"),
        n,
        &LayerNames::CLIP,
        spec,
        x,
        mask,
    )
}

impl Clip {
    pub fn new(cfg: ClipConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg })
    }

    pub fn from_config_json(v: &serde_json::Value) -> Result<Self> {
        let cfg: ClipConfig = serde_json::from_value(v.clone())
            .map_err(|e| anyhow!("config.json is not a valid CLIP config: {e}"))?;
        Self::new(cfg)
    }

    /// Text embeddings [B, P] (before normalisation) from ids and mask.
    pub fn text_features(
        &self,
        g: &mut Graph,
        ids: TensorId,
        mask: Option<TensorId>,
        eos: TensorId,
    ) -> Result<TensorId> {
        let t = &self.cfg.text_config;
        let s = g.shape(ids).to_vec();
        ensure!(
            s.len() == 2 && g.dtype(ids) == DType::I32,
            "input_ids must be i32 [B, T], is {} {s:?}",
            g.dtype(ids).name()
        );
        ensure!(
            s[1] <= t.max_position_embeddings,
            "sequence length {} exceeds max_position_embeddings = {}",
            s[1],
            t.max_position_embeddings
        );
        let (h, f) = (t.hidden_size, self.cfg.initializer_factor);
        let std = Init::Normal(0.02 * f);
        let vb = Vb::root().pp("text_model");
        let e = vb.pp("embeddings");
        let tok = e
            .pp("token_embedding")
            .param(g, "weight", &[t.vocab_size, h], std)?;
        let pos =
            e.pp("position_embedding")
                .param(g, "weight", &[t.max_position_embeddings, h], std)?;
        let mut x = g.embedding(ids, tok)?;
        let p = g.slice(pos, 0, 0, s[1])?;
        x = g.add(x, p)?;
        let act = Activation::from_hf(&t.hidden_act)?;
        let (inner, heads, eps) = (t.intermediate_size, t.num_attention_heads, t.layer_norm_eps);
        x = layers(
            g,
            &vb,
            t.num_hidden_layers,
            x,
            h,
            inner,
            heads,
            eps,
            act,
            std,
            true,
            mask,
        )?;
        x = LayerNorm::new(g, &vb.pp("final_layer_norm"), h, t.layer_norm_eps)?.forward(g, x)?;
        let pooled = g.gather_row(x, eos)?;
        let proj = Linear::new(
            g,
            &Vb::root().pp("text_projection"),
            h,
            self.cfg.projection_dim,
            false,
            Init::Normal(0.02 * f),
        )?;
        proj.forward(g, pooled)
    }

    /// Image embeddings [B, P] (before normalisation) from pixels: the
    /// [CLS] state, `post_layernorm`, `visual_projection`.
    pub fn image_features(&self, g: &mut Graph, pixels: TensorId) -> Result<TensorId> {
        let v = &self.cfg.vision_config;
        let x = self.vision_states(g, pixels)?;
        let (b, h) = (g.shape(x)[0], v.hidden_size);
        let vb = Vb::root().pp("vision_model");
        let f = self.cfg.initializer_factor;
        let cls = g.slice(x, 1, 0, 1)?;
        let cls = g.reshape(cls, &[b, h])?;
        let cls =
            LayerNorm::new(g, &vb.pp("post_layernorm"), h, v.layer_norm_eps)?.forward(g, cls)?;
        let proj = Linear::new(
            g,
            &Vb::root().pp("visual_projection"),
            h,
            self.cfg.projection_dim,
            false,
            Init::Normal(0.02 * f),
        )?;
        proj.forward(g, cls)
    }

    /// The image tower's last hidden states [B, 1 + N, H] (Hugging Face's
    /// `last_hidden_state`: before `post_layernorm`).
    pub fn vision_states(&self, g: &mut Graph, pixels: TensorId) -> Result<TensorId> {
        let v = &self.cfg.vision_config;
        let s = g.shape(pixels).to_vec();
        ensure!(
            s.len() == 4
                && s[1] == v.num_channels
                && s[2] == v.image_size
                && s[3] == v.image_size
                && g.dtype(pixels) == DType::F32,
            "pixel_values must be f32 [B, {}, {}, {}], is {} {s:?}",
            v.num_channels,
            v.image_size,
            v.image_size,
            g.dtype(pixels).name()
        );
        let (b, h, p, ch) = (s[0], v.hidden_size, v.patch_size, v.num_channels);
        let n = (v.image_size / p).pow(2);
        let f = self.cfg.initializer_factor;
        let std = Init::Normal(0.02 * f);
        let vb = Vb::root().pp("vision_model");
        let e = vb.pp("embeddings");
        let class = e.param(
            g,
            "class_embedding",
            &[h],
            Init::Normal((h as f32).powf(-0.5) * f),
        )?;
        let w = e
            .pp("patch_embedding")
            .param(g, "weight", &[h, ch, p, p], std)?;
        let pos = e
            .pp("position_embedding")
            .param(g, "weight", &[n + 1, h], std)?;
        let patches = g.patchify(pixels, p)?;
        let w2 = g.reshape(w, &[h, ch * p * p])?;
        let x = g.linear(patches, w2, None, true)?;
        let class = g.reshape(class, &[1, 1, h])?;
        let class = g.broadcast_to(class, &[b, 1, h])?;
        let x = g.concat(&[class, x], 1)?;
        let mut x = g.add(x, pos)?;
        x = LayerNorm::new(g, &vb.pp("pre_layrnorm"), h, v.layer_norm_eps)?.forward(g, x)?;
        let act = Activation::from_hf(&v.hidden_act)?;
        let (inner, heads, eps) = (v.intermediate_size, v.num_attention_heads, v.layer_norm_eps);
        x = layers(
            g,
            &vb,
            v.num_hidden_layers,
            x,
            h,
            inner,
            heads,
            eps,
            act,
            std,
            false,
            None,
        )?;
        Ok(x)
    }
}

impl Model for Clip {
    fn architecture(&self) -> &'static str {
        "CLIPModel"
    }

    fn config_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.cfg).expect("config serialises");
        v["model_type"] = "clip".into();
        v["architectures"] = serde_json::json!(["CLIPModel"]);
        v["text_config"]["model_type"] = "clip_text_model".into();
        v["vision_config"]["model_type"] = "clip_vision_model".into();
        v
    }

    fn describe(&self) -> String {
        let (t, v) = (&self.cfg.text_config, &self.cfg.vision_config);
        format!(
            "CLIP text {} layers × {} dims (ctx {}, vocab {}), vision {} layers × {} dims ({}×{} patches of {}×{}), {}-dim joint space",
            t.num_hidden_layers,
            t.hidden_size,
            t.max_position_embeddings,
            t.vocab_size,
            v.num_hidden_layers,
            v.hidden_size,
            v.image_size / v.patch_size,
            v.image_size / v.patch_size,
            v.patch_size,
            v.patch_size,
            self.cfg.projection_dim
        )
    }

    fn input_specs(&self, d: Dims) -> Vec<InputSpec> {
        let v = &self.cfg.vision_config;
        vec![
            InputSpec::new("input_ids", &[d.batch, d.seq], DType::I32),
            InputSpec::new("attention_mask", &[d.batch, d.seq], DType::I32),
            InputSpec::new(
                "pixel_values",
                &[d.batch, v.num_channels, v.image_size, v.image_size],
                DType::F32,
            ),
            InputSpec::new(EOS_INDEX, &[d.batch], DType::I32),
            InputSpec::new(PAIRS, &[d.batch], DType::I32),
        ]
    }

    fn forward(&self, g: &mut Graph, inputs: &BTreeMap<String, TensorId>) -> Result<Outputs> {
        let get = |n: &str| {
            inputs
                .get(n)
                .copied()
                .ok_or_else(|| anyhow!("CLIP needs `{n}`"))
        };
        let mut out = Outputs::default();
        let text = match inputs.get("input_ids") {
            Some(&ids) => {
                let eos = get(EOS_INDEX)?;
                let t = self.text_features(g, ids, inputs.get("attention_mask").copied(), eos)?;
                Some(g.l2_normalize(t, 1e-12)?)
            }
            None => None,
        };
        let image = match inputs.get("pixel_values") {
            Some(&px) => {
                let i = self.image_features(g, px)?;
                Some(g.l2_normalize(i, 1e-12)?)
            }
            None => None,
        };
        // logit_scale is declared even for one tower, so checkpoints agree.
        let scale = g.param(
            "logit_scale",
            &[],
            Init::Const(self.cfg.logit_scale_init_value),
        )?;
        if let Some(t) = text {
            out.tensors.insert("text_embeds".into(), t);
        }
        if let Some(i) = image {
            out.tensors.insert("image_embeds".into(), i);
        }
        let (Some(t), Some(i)) = (text, image) else {
            return Ok(out);
        };
        ensure!(
            g.shape(t)[0] == g.shape(i)[0],
            "CLIP needs as many texts as images (pairs), got {} and {}",
            g.shape(t)[0],
            g.shape(i)[0]
        );
        // logits_per_text = exp(logit_scale)·text·imageᵀ; per image: its transpose.
        let s = g.exp(scale, Some(100.0))?;
        let sim = g.matmul(t, i, false, true, 1.0)?;
        let per_text = g.mul(sim, s)?;
        let per_image = g.permute(per_text, &[1, 0])?;
        g.rename(per_text, "logits_per_text");
        g.rename(per_image, "logits_per_image");
        out.tensors.insert("logits_per_text".into(), per_text);
        out.tensors.insert("logits_per_image".into(), per_image);
        if let Some(&pairs) = inputs.get(PAIRS) {
            let lt = g.cross_entropy(per_text, pairs, -100)?;
            let li = g.cross_entropy(per_image, pairs, -100)?;
            out.losses.push(("text_loss".into(), lt, 0.5));
            out.losses.push(("image_loss".into(), li, 0.5));
            out.metrics
                .push(("accuracy".into(), g.accuracy(per_image, pairs, -100)?));
        }
        Ok(out)
    }

    fn prepare_batch(&self, batch: &mut Batch) -> Result<()> {
        let t = &self.cfg.text_config;
        if let Some(ids_t) = batch.get("input_ids") {
            ensure!(
                ids_t.shape.len() == 2,
                "input_ids must be [B, T], is {:?}",
                ids_t.shape
            );
            let (b, n) = (ids_t.shape[0], ids_t.shape[1]);
            let ids = batch.i32("input_ids")?.to_vec();
            let v = t.vocab_size as i32;
            if let Some((i, bad)) = ids.iter().enumerate().find(|(_, x)| !(0..v).contains(*x)) {
                bail!("input_ids[{i}] = {bad} lies outside the vocabulary [0, {v})");
            }
            // The pooled position, as Hugging Face finds it: the largest id
            // when eos_token_id is the legacy 2, else the first eos token.
            let mut eos = Vec::with_capacity(b);
            for r in 0..b {
                let row = &ids[r * n..(r + 1) * n];
                let at = if t.eos_token_id == 2 {
                    (0..n).fold(0, |best, j| if row[j] > row[best] { j } else { best })
                } else {
                    row.iter()
                        .position(|&x| x as i64 == t.eos_token_id)
                        .ok_or_else(|| {
                            anyhow!(
                                "row {r} of input_ids has no end-of-text token (id {}); CLIP pools there — \
                                 end every caption with it",
                                t.eos_token_id
                            )
                        })?
                };
                eos.push(at as i32);
            }
            batch.insert(NamedTensor::i32(EOS_INDEX, vec![b], eos));
            if let Ok(m) = batch.i32("attention_mask") {
                if let Some((i, bad)) = m.iter().enumerate().find(|(_, x)| **x != 0 && **x != 1) {
                    bail!("attention_mask[{i}] = {bad}; it must hold 1 (token) or 0 (padding)");
                }
            }
            if batch.contains("pixel_values") {
                batch.insert(NamedTensor::i32(PAIRS, vec![b], (0..b as i32).collect()));
            }
        }
        if let Ok(px) = batch.f32("pixel_values") {
            super::check_pixels(px)?;
        }
        Ok(())
    }
}

/// `CLIPForImageClassification`: CLIP's image tower (`vision_model.*`) and
/// a linear `classifier` on the mean of its patch states (the [CLS] state
/// left out, before `post_layernorm`), as Hugging Face builds it. Inputs
/// `pixel_values`, `labels` [B]; `patch_mask` [B, 1 + N] (0 for [CLS], 1
/// for patches) is added by `prepare_batch`.
#[derive(Clone, Debug)]
pub struct ClipImageClassifier {
    pub clip: Clip,
    pub head: ClassHead,
}

pub const IMAGE_CLS: &str = "CLIPForImageClassification";

impl ClipImageClassifier {
    pub fn from_config_json(v: &serde_json::Value) -> Result<Self> {
        let clip = Clip::from_config_json(v)?;
        let head = ClassHead::from_config(v)?.ok_or_else(|| {
            anyhow!("config.json names {IMAGE_CLS} but gives neither id2label nor num_labels")
        })?;
        Ok(Self { clip, head })
    }

    fn patches(&self) -> usize {
        let v = &self.clip.cfg.vision_config;
        (v.image_size / v.patch_size).pow(2)
    }
}

impl Model for ClipImageClassifier {
    fn architecture(&self) -> &'static str {
        IMAGE_CLS
    }

    fn config_json(&self) -> serde_json::Value {
        let mut v = self.clip.config_json();
        v["architectures"] = serde_json::json!([IMAGE_CLS]);
        self.head.write_config(&mut v);
        v
    }

    fn describe(&self) -> String {
        let v = &self.clip.cfg.vision_config;
        format!(
            "CLIP image tower {} layers, {} dims, {}×{} images in {}×{} patches, {} classes",
            v.num_hidden_layers,
            v.hidden_size,
            v.image_size,
            v.image_size,
            v.patch_size,
            v.patch_size,
            self.head.num_labels()
        )
    }

    fn input_specs(&self, d: Dims) -> Vec<InputSpec> {
        let v = &self.clip.cfg.vision_config;
        vec![
            InputSpec::new(
                "pixel_values",
                &[d.batch, v.num_channels, v.image_size, v.image_size],
                DType::F32,
            ),
            self.head.label_spec(d.batch),
            InputSpec::new("patch_mask", &[d.batch, 1 + self.patches()], DType::I32),
        ]
    }

    fn forward(&self, g: &mut Graph, inputs: &BTreeMap<String, TensorId>) -> Result<Outputs> {
        let pixels = *inputs
            .get("pixel_values")
            .ok_or_else(|| anyhow!("{IMAGE_CLS} needs `pixel_values` (f32 [B, C, H, W])"))?;
        let mask = *inputs
            .get("patch_mask")
            .ok_or_else(|| anyhow!("{IMAGE_CLS} needs `patch_mask` (prepare_batch adds it)"))?;
        let x = self.clip.vision_states(g, pixels)?;
        let pooled = g.masked_mean(x, mask)?;
        let h = self.clip.cfg.vision_config.hidden_size;
        let f = self.clip.cfg.initializer_factor;
        let classifier = Linear::new(
            g,
            &Vb::root().pp("classifier"),
            h,
            self.head.num_labels(),
            true,
            Init::Normal(0.02 * f),
        )?;
        let logits = classifier.forward(g, pooled)?;
        self.head.outputs(g, logits, inputs.get("labels").copied())
    }

    fn prepare_batch(&self, batch: &mut Batch) -> Result<()> {
        super::check_pixels(batch.f32("pixel_values")?)?;
        let b = batch
            .get("pixel_values")
            .map(|t| t.shape.first().copied().unwrap_or(0))
            .unwrap_or(0);
        self.head.check_labels(batch)?;
        let n = 1 + self.patches();
        let mask: Vec<i32> = (0..b * n).map(|i| (i % n != 0) as i32).collect();
        batch.insert(NamedTensor::i32("patch_mask", vec![b, n], mask));
        Ok(())
    }

    fn canonical_name(&self, stored: &str) -> Option<String> {
        // The text tower, projections and temperature belong to CLIPModel;
        // the post-LayerNorm is not on the classifier's path.
        let unused = [
            "text_model.",
            "text_projection.",
            "visual_projection.",
            "logit_scale",
        ];
        if unused.iter().any(|u| stored.starts_with(u))
            || stored.starts_with("vision_model.post_layernorm.")
        {
            return None;
        }
        Some(stored.to_string())
    }

    fn head_prefixes(&self) -> Vec<String> {
        vec!["classifier.".into()]
    }
}
