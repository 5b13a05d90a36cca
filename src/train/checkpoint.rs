//! Checkpoints in a run directory, loadable by Hugging Face, for any model:
//!
//! - `model.safetensors`: parameters under the model's Hugging Face names
//!   (tied weights are one parameter and stored once);
//! - `config.json`: the model's Hugging Face config (`model_type` picks it);
//! - `optimizer.safetensors`: AdamW moments `m.<name>`, `v.<name>`;
//! - `trainer_state.json`: step, seeds and the settings needed to resume.
//!
//! This module turns them into bytes and back; [`crate::io::ckpt_store`]
//! saves one checkpoint's files as one transaction. Loading refuses
//! non-finite values, naming the tensor.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::io::atomic::write_atomic;
use crate::io::checkpoint::{load_safetensors, safetensors_bytes, NamedTensor, TensorData};
use crate::io::ckpt_store::SaveFile;
use crate::model::{self, HostParams, Model};

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";

/// The model a directory's `config.json` describes.
pub fn load_model_config(dir: &Path) -> Result<Arc<dyn Model>> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no {} in {} (is this a Kiln or Hugging Face checkpoint directory?)",
            CONFIG_FILE,
            dir.display()
        )
    })?;
    parse_config(&text).with_context(|| format!("reading {}", path.display()))
}

/// The model the text of a `config.json` describes.
pub fn parse_config(text: &str) -> Result<Arc<dyn Model>> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow!("config.json is not valid JSON: {e}"))?;
    model::from_config_json(&v)
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

/// Loads every parameter of `model` from the safetensors file `path`,
/// checking names (through the model's aliases) and shapes.
pub fn load_params_file(path: &Path, model: &dyn Model) -> Result<HostParams> {
    let (tensors, _) = load_safetensors(path)?;
    let mut by_name: BTreeMap<String, NamedTensor> = BTreeMap::new();
    for t in tensors {
        let Some(n) = model.canonical_name(&t.name) else {
            continue;
        };
        if let Some(prev) = by_name.get(&n) {
            bail!(
                "{}: tensors {} and {} are both {n}; remove one of them",
                path.display(),
                prev.name,
                t.name
            );
        }
        by_name.insert(n, t);
    }
    let mut out = Vec::new();
    for (name, shape) in model::param_shapes(model)? {
        let t = by_name.remove(&name).ok_or_else(|| {
            anyhow!(
                "{} has no tensor {name}: the checkpoint does not match config.json",
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
            "{}: ignoring {} tensor(s) that {} does not use: {}",
            path.display(),
            extra.len(),
            model.architecture(),
            extra.join(", ")
        );
    }
    Ok(out)
}

/// Loads `model`'s parameters from `model.safetensors` in `dir`.
pub fn load_params(dir: &Path, model: &dyn Model) -> Result<HostParams> {
    load_params_file(&dir.join(MODEL_FILE), model)
}

/// The model and its parameters from a checkpoint directory.
pub fn load_model(dir: &Path) -> Result<(Arc<dyn Model>, HostParams)> {
    let model = load_model_config(dir)?;
    let params = load_params(dir, model.as_ref())?;
    Ok((model, params))
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
    model: &dyn Model,
    params: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<Vec<SaveFile>> {
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut config = serde_json::to_vec_pretty(&model.config_json())?;
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
    model: &dyn Model,
    params: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, bytes) in model_files(model, params)? {
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
