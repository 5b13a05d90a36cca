//! GPT checkpoints, loadable by Hugging Face:
//!
//! - `model.safetensors`: parameters under `GPT2LMHeadModel` names (the LM
//!   head is tied to `transformer.wte.weight` and not stored twice);
//! - `config.json`: `GPT2Config` fields;
//! - `optimizer.safetensors`: AdamW moments `m.<name>`, `v.<name>`;
//! - `trainer_state.json`: step, seeds and the settings needed to resume.
//!
//! This module turns them into bytes and back; [`crate::io::ckpt_store`]
//! saves one checkpoint's files as one transaction. Loading refuses
//! non-finite values, naming the tensor.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::io::atomic::write_atomic;
use crate::io::checkpoint::{load_safetensors, safetensors_bytes, NamedTensor, TensorData};
use crate::io::ckpt_store::SaveFile;
use crate::model::gpt::GptConfig;

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";

/// `config.json` as Hugging Face writes it for GPT-2 (the fields Kiln uses
/// plus the ones `transformers` needs to pick the class).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HfConfig {
    #[serde(default = "gpt2_type")]
    pub model_type: String,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub vocab_size: usize,
    pub n_positions: usize,
    #[serde(default)]
    pub n_ctx: Option<usize>,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default)]
    pub resid_pdrop: f32,
    #[serde(default)]
    pub embd_pdrop: f32,
    #[serde(default)]
    pub attn_pdrop: f32,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Written as null: Kiln's vocabularies have no special tokens unless a
    /// GPT-2 tokenizer brings them (`transformers` otherwise assumes 50256).
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

fn gpt2_type() -> String {
    "gpt2".into()
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

impl HfConfig {
    pub fn from_model(c: &GptConfig) -> Self {
        Self {
            model_type: gpt2_type(),
            architectures: vec!["GPT2LMHeadModel".into()],
            vocab_size: c.vocab_size,
            n_positions: c.n_positions,
            n_ctx: Some(c.n_positions),
            n_embd: c.n_embd,
            n_layer: c.n_layer,
            n_head: c.n_head,
            layer_norm_epsilon: c.layer_norm_epsilon,
            activation_function: default_act(),
            resid_pdrop: 0.0,
            embd_pdrop: 0.0,
            attn_pdrop: 0.0,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_id: None,
        }
    }

    pub fn to_model(&self) -> Result<GptConfig> {
        ensure!(
            self.model_type == "gpt2",
            "config.json describes a {:?} model; Kiln loads GPT-2 checkpoints",
            self.model_type
        );
        ensure!(
            self.activation_function == "gelu_new"
                || self.activation_function == "gelu_pytorch_tanh",
            "config.json asks for activation {:?}; Kiln's GPT uses tanh-GELU (gelu_new)",
            self.activation_function
        );
        let mut c = GptConfig::new(
            self.vocab_size,
            self.n_positions,
            self.n_embd,
            self.n_head,
            self.n_layer,
        );
        c.layer_norm_epsilon = self.layer_norm_epsilon;
        c.validate()?;
        Ok(c)
    }
}

/// Reads `config.json` from a run directory.
pub fn load_config(dir: &Path) -> Result<GptConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no {} in {} (is this a Kiln or Hugging Face GPT-2 checkpoint directory?)",
            CONFIG_FILE,
            dir.display()
        )
    })?;
    parse_config(&text).with_context(|| format!("{} is not a valid GPT-2 config", path.display()))
}

/// Parses the text of a `config.json`.
pub fn parse_config(text: &str) -> Result<GptConfig> {
    let hf: HfConfig = serde_json::from_str(text)?;
    hf.to_model()
}

/// Maps a stored tensor name to Kiln's (Hugging Face, prefixed) name.
/// Accepts the unprefixed names of the published `gpt2` weights
/// (`h.0.attn.c_attn.weight`, `wte.weight`); returns None for tensors that
/// are not parameters (the tied `lm_head.weight`, attention mask buffers).
pub fn canonical_name(stored: &str) -> Option<String> {
    if stored == "lm_head.weight"
        || stored.ends_with(".attn.bias")
        || stored.ends_with(".attn.masked_bias")
    {
        return None;
    }
    if stored.starts_with("transformer.") {
        Some(stored.to_string())
    } else {
        Some(format!("transformer.{stored}"))
    }
}

/// Loads GPT-2 parameters from `dir`/model.safetensors, checking that every
/// parameter is present with the right shape and finite values.
pub fn load_params(dir: &Path, cfg: &GptConfig) -> Result<Vec<(String, Vec<f32>)>> {
    load_params_file(&dir.join(MODEL_FILE), cfg)
}

/// [`load_params`] from a given safetensors file.
pub fn load_params_file(path: &Path, cfg: &GptConfig) -> Result<Vec<(String, Vec<f32>)>> {
    let (tensors, _) = load_safetensors(path)?;
    let mut by_name: BTreeMap<String, NamedTensor> = BTreeMap::new();
    let mut stored_as: BTreeMap<String, String> = BTreeMap::new();
    for t in tensors {
        let Some(n) = canonical_name(&t.name) else {
            continue;
        };
        if let Some(first) = stored_as.get(&n) {
            bail!(
                "{}: both {first} and {} hold parameter {n}; keep one of them (Kiln will not guess which)",
                path.display(),
                t.name
            );
        }
        stored_as.insert(n.clone(), t.name.clone());
        by_name.insert(n, t);
    }
    let mut out = Vec::new();
    for (name, shape) in cfg.param_shapes() {
        let t = by_name.remove(&name).ok_or_else(|| {
            anyhow!(
                "{} has no tensor {name} (or its unprefixed form): the checkpoint does not match config.json",
                path.display()
            )
        })?;
        ensure!(
            t.shape == shape,
            "{}: {name} has shape {:?}, config.json implies {shape:?}",
            path.display(),
            t.shape
        );
        let TensorData::F32(data) = t.data else {
            bail!("{}: {name} is not a floating-point tensor", path.display());
        };
        check_finite(path, &name, &data)?;
        out.push((name, data));
    }
    if !by_name.is_empty() {
        let extra: Vec<&str> = by_name.values().map(|t| t.name.as_str()).collect();
        log::warn!(
            "{}: ignoring {} tensor(s) that are not GPT-2 parameters: {}",
            path.display(),
            extra.len(),
            extra.join(", ")
        );
    }
    Ok(out)
}

/// Refuses NaN or infinite values, naming the tensor and the first bad index.
pub fn check_finite(path: &Path, name: &str, data: &[f32]) -> Result<()> {
    if let Some((i, x)) = data.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        let count = data.iter().filter(|x| !x.is_finite()).count();
        bail!(
            "{}: tensor {name} holds non-finite values ({count} of {}, the first {x} at index {i}): \
             this checkpoint is unusable; use an earlier one",
            path.display(),
            data.len()
        );
    }
    Ok(())
}

fn named(prefix: &str, items: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<NamedTensor> {
    items
        .iter()
        .map(|(n, s, d)| NamedTensor {
            name: format!("{prefix}{n}"),
            shape: s.clone(),
            data: TensorData::F32(d.clone()),
        })
        .collect()
}

/// The bytes of `model.safetensors` and `config.json`.
pub fn model_files(
    cfg: &GptConfig,
    params: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<Vec<SaveFile>> {
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut config = serde_json::to_vec_pretty(&HfConfig::from_model(cfg))?;
    config.push(b'\n');
    Ok(vec![
        (
            MODEL_FILE.into(),
            safetensors_bytes(&named("", params), &meta)?,
        ),
        (CONFIG_FILE.into(), config),
    ])
}

/// Writes `model.safetensors` and `config.json` into `dir`, each atomically
/// (a bare model directory, not a training checkpoint).
pub fn save_model(
    dir: &Path,
    cfg: &GptConfig,
    params: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, bytes) in model_files(cfg, params)? {
        write_atomic(&dir.join(name), &bytes)?;
    }
    Ok(())
}

/// The bytes of `optimizer.safetensors`: the AdamW moments and step `t`.
pub fn optimizer_file(
    m: &[(String, Vec<usize>, Vec<f32>)],
    v: &[(String, Vec<usize>, Vec<f32>)],
    t: u32,
) -> Result<SaveFile> {
    let mut all = named("m.", m);
    all.extend(named("v.", v));
    let meta = BTreeMap::from([("adamw_t".to_string(), t.to_string())]);
    Ok((OPTIMIZER_FILE.into(), safetensors_bytes(&all, &meta)?))
}

/// Reads the AdamW moments: (m, v, t).
#[allow(clippy::type_complexity)]
pub fn load_optimizer(
    dir: &Path,
) -> Result<(BTreeMap<String, Vec<f32>>, BTreeMap<String, Vec<f32>>, u32)> {
    let path = dir.join(OPTIMIZER_FILE);
    ensure!(
        path.is_file(),
        "cannot resume from {}: {OPTIMIZER_FILE} (the optimizer state) is missing; \
         start the run again with --overwrite, or train a new run into another --out",
        dir.display()
    );
    let (tensors, meta) = load_safetensors(&path)?;
    let t = meta
        .get("adamw_t")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{} lacks the adamw_t metadata", path.display()))?;
    let (mut m, mut v) = (BTreeMap::new(), BTreeMap::new());
    for nt in tensors {
        let TensorData::F32(d) = nt.data else {
            bail!("{}: {} is not f32", path.display(), nt.name);
        };
        check_finite(&path, &nt.name, &d)?;
        if let Some(n) = nt.name.strip_prefix("m.") {
            m.insert(n.to_string(), d);
        } else if let Some(n) = nt.name.strip_prefix("v.") {
            v.insert(n.to_string(), d);
        }
    }
    Ok((m, v, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_gpt2_names_are_accepted() {
        assert_eq!(
            canonical_name("h.0.attn.c_attn.weight").as_deref(),
            Some("transformer.h.0.attn.c_attn.weight")
        );
        assert_eq!(
            canonical_name("wte.weight").as_deref(),
            Some("transformer.wte.weight")
        );
        assert_eq!(
            canonical_name("transformer.ln_f.bias").as_deref(),
            Some("transformer.ln_f.bias")
        );
        assert_eq!(canonical_name("lm_head.weight"), None);
        assert_eq!(canonical_name("h.3.attn.bias"), None);
        assert_eq!(canonical_name("h.3.attn.masked_bias"), None);
    }

    #[test]
    fn unprefixed_checkpoint_with_tied_head_loads_and_bad_shapes_are_named() {
        let cfg = GptConfig::new(11, 5, 4, 2, 1);
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
        crate::io::save_safetensors(&dir.join(MODEL_FILE), &ts, &BTreeMap::new()).unwrap();
        crate::io::write_json_atomic(&dir.join(CONFIG_FILE), &HfConfig::from_model(&cfg)).unwrap();
        assert_eq!(load_config(&dir).unwrap(), cfg);
        let loaded = load_params(&dir, &cfg).unwrap();
        assert_eq!(loaded, params);
        // A config that does not match the tensors is refused with the name.
        let wrong = GptConfig::new(11, 5, 6, 2, 1);
        let err = load_params(&dir, &wrong).unwrap_err().to_string();
        assert!(
            err.contains("transformer.wte.weight") && err.contains("shape"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
