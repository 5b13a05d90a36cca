//! The Vision Transformer for image classification, exactly
//! (`ViTForImageClassification`): a patch embedding (a stride-p, size-p
//! convolution with bias, computed as patchify + matmul), a learned [CLS]
//! token in front, learned position embeddings, a pre-LayerNorm encoder
//! (erf-GELU MLP), a final LayerNorm and a linear classifier on the [CLS]
//! state. Names, layouts (the convolution weight [H, C, p, p]) and
//! `config.json` are Hugging Face's.
//!
//! Inputs: `pixel_values` [B, C, H, W] f32, and for a loss `labels` [B] (i32
//! class ids; f32 targets when `num_labels` = 1: regression with mean squared
//! error, as Hugging Face's problem_type "regression").
//! Outputs: `loss`, `logits` [B, num_labels], `accuracy` (classification).

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

/// `transformers.ViTConfig`: the fields Kiln reads and writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "gelu")]
    pub hidden_act: String,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "three")]
    pub num_channels: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    #[serde(default = "default_range")]
    pub initializer_range: f32,
    #[serde(default)]
    pub hidden_dropout_prob: f32,
    #[serde(default)]
    pub attention_probs_dropout_prob: f32,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    /// Class names by id (`id2label`); its size is num_labels.
    #[serde(default)]
    pub id2label: BTreeMap<String, String>,
    /// Masked image modelling: the fraction of each image's patches masked
    /// (a Kiln field; 0 for a classifier).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mask_ratio: f32,
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

/// Masked image modelling's architecture name (Hugging Face's class with
/// the same parameters: `vit.embeddings.mask_token` and a 1×1-convolution
/// decoder `decoder.0` to each patch's pixels).
pub const MIM: &str = "ViTForMaskedImageModeling";

fn gelu() -> String {
    "gelu".into()
}
fn three() -> usize {
    3
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

impl VitConfig {
    /// A configuration with ViT's defaults for everything but the sizes;
    /// classes named by `labels`.
    pub fn new(
        hidden: usize,
        layers: usize,
        heads: usize,
        image: usize,
        patch: usize,
        channels: usize,
        labels: &[String],
    ) -> Self {
        Self {
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: 4 * hidden,
            hidden_act: gelu(),
            image_size: image,
            patch_size: patch,
            num_channels: channels,
            layer_norm_eps: default_eps(),
            initializer_range: default_range(),
            hidden_dropout_prob: 0.0,
            attention_probs_dropout_prob: 0.0,
            qkv_bias: true,
            id2label: labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), l.clone()))
                .collect(),
            mask_ratio: 0.0,
        }
    }

    pub fn num_labels(&self) -> usize {
        self.id2label.len().max(1)
    }

    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Class names in id order ("LABEL_i" where the config gives none).
    pub fn labels(&self) -> Vec<String> {
        (0..self.num_labels())
            .map(|i| {
                self.id2label
                    .get(&i.to_string())
                    .cloned()
                    .unwrap_or_else(|| format!("LABEL_{i}"))
            })
            .collect()
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.hidden_size > 0
                && self.num_hidden_layers > 0
                && self.intermediate_size > 0
                && self.num_channels > 0,
            "ViT config: sizes must be positive"
        );
        ensure!(
            self.num_attention_heads > 0
                && self.hidden_size.is_multiple_of(self.num_attention_heads),
            "ViT config: hidden_size ({}) must be divisible by num_attention_heads ({})",
            self.hidden_size,
            self.num_attention_heads
        );
        ensure!(
            self.patch_size > 0
                && self.image_size >= self.patch_size
                && self.image_size.is_multiple_of(self.patch_size),
            "ViT config: image_size ({}) must be a positive multiple of patch_size ({})",
            self.image_size,
            self.patch_size
        );
        super::check_size(
            "ViT config",
            self.num_hidden_layers,
            self.hidden_size,
            self.intermediate_size,
            self.num_patches() + self.num_channels * self.patch_size * self.patch_size,
        )?;
        Activation::from_hf(&self.hidden_act)?;
        Ok(())
    }
}

/// Hugging Face writes `num_labels` only through `id2label`; a config that
/// gives just `num_labels` gets LABEL_i names.
fn with_labels(mut v: serde_json::Value) -> serde_json::Value {
    if v.get("id2label").is_none() {
        if let Some(n) = v.get("num_labels").and_then(|n| n.as_u64()) {
            let map: serde_json::Map<String, serde_json::Value> = (0..n)
                .map(|i| (i.to_string(), format!("LABEL_{i}").into()))
                .collect();
            v["id2label"] = map.into();
        }
    }
    v
}

#[derive(Clone, Debug)]
pub struct Vit {
    pub cfg: VitConfig,
    /// Masked image modelling (self-supervised pretraining) instead of
    /// classification: inputs `pixel_values` and `bool_masked_pos` [B, N]
    /// (1 = masked), loss the mean squared error of the masked patches'
    /// pixels (Hugging Face's class uses L1; the objective here is MAE's
    /// MSE), output `reconstruction` [B, N, p·p·C].
    pub mim: bool,
}

impl Vit {
    pub fn new(cfg: VitConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg, mim: false })
    }

    /// The same encoder with the masked-image-modelling head.
    pub fn masked_image_modeling(cfg: VitConfig) -> Result<Self> {
        cfg.validate()?;
        ensure!(
            cfg.mask_ratio > 0.0 && cfg.mask_ratio < 1.0,
            "masked image modelling: mask_ratio must be in (0, 1), got {}",
            cfg.mask_ratio
        );
        Ok(Self { cfg, mim: true })
    }

    /// The classifier's labels and loss (one label: regression).
    fn class_head(&self) -> Result<ClassHead> {
        ClassHead::new(self.cfg.labels())
    }

    /// Patches masked per image.
    pub fn masked_patches(&self) -> usize {
        let n = self.cfg.num_patches();
        ((self.cfg.mask_ratio * n as f32).round() as usize).clamp(1, n)
    }

    pub fn from_config_json(v: &serde_json::Value) -> Result<Self> {
        let cfg: VitConfig = serde_json::from_value(with_labels(v.clone()))
            .map_err(|e| anyhow!("config.json is not a valid ViT config: {e}"))?;
        if super::names_architecture(v, MIM) {
            let mut cfg = cfg;
            if cfg.mask_ratio == 0.0 {
                cfg.mask_ratio = 0.5;
            }
            return Self::masked_image_modeling(cfg);
        }
        Self::new(cfg)
    }

    /// The encoder (`vit.*`): pixels [B, C, H, W] → final-normalised hidden
    /// states [B, 1 + N, H], the [CLS] state first.
    pub fn encode(&self, g: &mut Graph, pixels: TensorId) -> Result<TensorId> {
        self.encode_masked(g, pixels, None)
    }

    /// [`Vit::encode`], with masked patches' embeddings replaced by the
    /// mask token when `mask` = (keep, fill) [B, N, 1] (1 − m, m) is given:
    /// x·(1 − m) + token·m, as Hugging Face's ViTEmbeddings does.
    pub fn encode_masked(
        &self,
        g: &mut Graph,
        pixels: TensorId,
        mask: Option<(TensorId, TensorId)>,
    ) -> Result<TensorId> {
        let c = &self.cfg;
        let s = g.shape(pixels).to_vec();
        ensure!(
            s.len() == 4
                && s[1] == c.num_channels
                && s[2] == c.image_size
                && s[3] == c.image_size
                && g.dtype(pixels) == DType::F32,
            "pixel_values must be f32 [B, {}, {}, {}], is {} {s:?}",
            c.num_channels,
            c.image_size,
            c.image_size,
            g.dtype(pixels).name()
        );
        let b = s[0];
        let (h, p, ch) = (c.hidden_size, c.patch_size, c.num_channels);
        let n = c.num_patches();
        let std = Init::Normal(c.initializer_range);
        let eps = c.layer_norm_eps;
        let act = Activation::from_hf(&c.hidden_act)?;
        let vb = Vb::root().pp("vit");
        let e = vb.pp("embeddings");
        let cls = e.param(g, "cls_token", &[1, 1, h], std)?;
        let proj = e.pp("patch_embeddings").pp("projection");
        let w = proj.param(g, "weight", &[h, ch, p, p], std)?;
        let bias = proj.param(g, "bias", &[h], Init::Zeros)?;
        let pos = e.param(g, "position_embeddings", &[1, n + 1, h], std)?;
        // The stride-p convolution: patch rows (c, ky, kx) times the weight
        // seen as [H, C·p·p].
        let patches = g.patchify(pixels, p)?;
        let w2 = g.reshape(w, &[h, ch * p * p])?;
        let mut x = g.linear(patches, w2, Some(bias), true)?;
        if let Some((keep, fill)) = mask {
            let token = e.param(g, "mask_token", &[1, 1, h], Init::Zeros)?;
            let kept = g.mul(x, keep)?;
            let filled = g.mul(fill, token)?;
            x = g.add(kept, filled)?;
        }
        let cls = g.broadcast_to(cls, &[b, 1, h])?;
        let x = g.concat(&[cls, x], 1)?;
        let x = g.add(x, pos)?;
        let x = g.dropout(x, c.hidden_dropout_prob)?;
        let spec = LayerSpec {
            hidden: h,
            inner: c.intermediate_size,
            heads: c.num_attention_heads,
            eps,
            act,
            norm: Norm::Pre,
            causal: false,
            qkv_bias: c.qkv_bias,
            dropout: c.hidden_dropout_prob,
            init: std,
            init_out: std,
        };
        let x = encoder(
            g,
            &vb.pp("encoder").pp("layer"),
            c.num_hidden_layers,
            &LayerNames::VIT,
            spec,
            x,
            None,
        )?;
        LayerNorm::new(g, &vb.pp("layernorm"), h, eps)?.forward(g, x)
    }
}

impl Vit {
    /// Masked image modelling: each patch token's state → its p·p·C pixels
    /// through `decoder.0` (a 1×1 convolution, stored [p·p·C, H, 1, 1]; its
    /// output channels in (c, ky, kx) order are what PixelShuffle places,
    /// and what `patchify` makes of the target).
    fn mim_forward(&self, g: &mut Graph, inputs: &BTreeMap<String, TensorId>) -> Result<Outputs> {
        let c = &self.cfg;
        let pixels = *inputs
            .get("pixel_values")
            .ok_or_else(|| anyhow!("ViT needs `pixel_values` (f32 [B, C, H, W])"))?;
        let mask = match (inputs.get("patch_keep"), inputs.get("patch_fill")) {
            (Some(&k), Some(&f)) => Some((k, f)),
            _ => None,
        };
        let x = self.encode_masked(g, pixels, mask)?;
        let n = c.num_patches();
        let (h, pp) = (c.hidden_size, c.patch_size * c.patch_size * c.num_channels);
        let tokens = g.slice(x, 1, 1, n)?;
        let d = Vb::root().pp("decoder").pp(0);
        let w = d.param(
            g,
            "weight",
            &[pp, h, 1, 1],
            Init::Normal(c.initializer_range),
        )?;
        let bias = d.param(g, "bias", &[pp], Init::Zeros)?;
        let w = g.reshape(w, &[pp, h])?;
        let pred = g.linear(tokens, w, Some(bias), true)?;
        g.rename(pred, "reconstruction");
        let mut out = Outputs::default();
        out.tensors.insert("reconstruction".into(), pred);
        if let Some((_, fill)) = mask {
            // MSE over the masked patches only: both sides zeroed elsewhere,
            // the mean over everything scaled by N / masked.
            let target = g.patchify(pixels, c.patch_size)?;
            let p = g.mul(pred, fill)?;
            let t = g.mul(target, fill)?;
            let loss = g.mse_loss(p, t)?;
            let w = n as f32 / self.masked_patches() as f32;
            out.losses.push(("loss".into(), loss, w));
            out.tensors.insert("loss".into(), loss);
        }
        Ok(out)
    }
}

impl Model for Vit {
    fn architecture(&self) -> &'static str {
        if self.mim {
            MIM
        } else {
            "ViTForImageClassification"
        }
    }

    fn config_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.cfg).expect("config serialises");
        v["model_type"] = "vit".into();
        v["architectures"] = serde_json::json!([self.architecture()]);
        if self.mim {
            v["encoder_stride"] = self.cfg.patch_size.into();
            if let Some(o) = v.as_object_mut() {
                o.remove("id2label");
            }
            return v;
        }
        let label2id: serde_json::Map<String, serde_json::Value> = self
            .cfg
            .labels()
            .into_iter()
            .enumerate()
            .map(|(i, l)| (l, i.into()))
            .collect();
        v["label2id"] = label2id.into();
        if self.cfg.num_labels() == 1 {
            v["problem_type"] = "regression".into();
        }
        v
    }

    fn head_prefixes(&self) -> Vec<String> {
        if self.mim {
            vec!["decoder.".into(), "vit.embeddings.mask_token".into()]
        } else {
            vec!["classifier.".into()]
        }
    }

    fn describe(&self) -> String {
        let c = &self.cfg;
        let task = if self.mim {
            format!(
                "masked image modelling ({} of {} patches)",
                self.masked_patches(),
                c.num_patches()
            )
        } else {
            format!("{} classes", c.num_labels())
        };
        format!(
            "ViT {} layers, {} heads, {} dims, {}×{}×{} images in {}×{} patches, {task}",
            c.num_hidden_layers,
            c.num_attention_heads,
            c.hidden_size,
            c.num_channels,
            c.image_size,
            c.image_size,
            c.patch_size,
            c.patch_size,
        )
    }

    fn input_specs(&self, d: Dims) -> Vec<InputSpec> {
        let c = &self.cfg;
        if self.mim {
            let n = c.num_patches();
            return vec![
                InputSpec::new(
                    "pixel_values",
                    &[d.batch, c.num_channels, c.image_size, c.image_size],
                    DType::F32,
                ),
                InputSpec::new("bool_masked_pos", &[d.batch, n], DType::I32),
                InputSpec::new("patch_keep", &[d.batch, n, 1], DType::F32),
                InputSpec::new("patch_fill", &[d.batch, n, 1], DType::F32),
            ];
        }
        let labels = if c.num_labels() == 1 {
            InputSpec::new("labels", &[d.batch], DType::F32)
        } else {
            InputSpec::new("labels", &[d.batch], DType::I32)
        };
        vec![
            InputSpec::new(
                "pixel_values",
                &[d.batch, c.num_channels, c.image_size, c.image_size],
                DType::F32,
            ),
            labels,
        ]
    }

    fn forward(&self, g: &mut Graph, inputs: &BTreeMap<String, TensorId>) -> Result<Outputs> {
        if self.mim {
            return self.mim_forward(g, inputs);
        }
        let c = &self.cfg;
        let pixels = *inputs
            .get("pixel_values")
            .ok_or_else(|| anyhow!("ViT needs `pixel_values` (f32 [B, C, H, W])"))?;
        let x = self.encode(g, pixels)?;
        let b = g.shape(x)[0];
        let cls = g.slice(x, 1, 0, 1)?;
        let cls = g.reshape(cls, &[b, c.hidden_size])?;
        let head = Linear::new(
            g,
            &Vb::root().pp("classifier"),
            c.hidden_size,
            c.num_labels(),
            true,
            Init::Normal(c.initializer_range),
        )?;
        let logits = head.forward(g, cls)?;
        self.class_head()?
            .outputs(g, logits, inputs.get("labels").copied())
    }

    fn prepare_batch(&self, batch: &mut Batch) -> Result<()> {
        super::check_pixels(batch.f32("pixel_values")?)?;
        if self.mim {
            // bool_masked_pos → the (1 − m, m) weights the graph mixes with.
            let n = self.cfg.num_patches();
            let Ok(m) = batch.i32("bool_masked_pos") else {
                return Ok(());
            };
            let b = m.len() / n;
            ensure!(
                m.len() == b * n,
                "bool_masked_pos must be [B, {n}] (one flag per patch)"
            );
            if let Some((i, bad)) = m.iter().enumerate().find(|(_, x)| **x != 0 && **x != 1) {
                bail!("bool_masked_pos[{i}] = {bad}; it must be 0 (seen) or 1 (masked)");
            }
            let k = self.masked_patches() as i32;
            for (r, row) in m.chunks(n).enumerate() {
                let got: i32 = row.iter().sum();
                ensure!(
                    got == k,
                    "bool_masked_pos row {r} masks {got} patches; this model's loss is scaled \
                     for {k} (mask_ratio {} of {n})",
                    self.cfg.mask_ratio
                );
            }
            let fill: Vec<f32> = m.iter().map(|&x| x as f32).collect();
            let keep: Vec<f32> = fill.iter().map(|x| 1.0 - x).collect();
            batch.insert(NamedTensor::f32("patch_keep", vec![b, n, 1], keep));
            batch.insert(NamedTensor::f32("patch_fill", vec![b, n, 1], fill));
            return Ok(());
        }
        self.class_head()?.check_labels(batch)
    }
}
