//! Checkpoints in a run directory, loadable by Hugging Face, for any model:
//!
//! - `model.safetensors`: parameters under the model's Hugging Face names
//!   (tied weights are one parameter and stored once);
//! - `config.json`: the model's Hugging Face config (`model_type` picks it);
//! - `optimizer.safetensors`: AdamW moments `m.<name>`, `v.<name>`;
//! - `trainer_state.json`: step, seeds and the settings needed to resume.
//!
//! Every file is written atomically (temporary file, then rename); the
//! trainer state goes last, so a checkpoint is only "there" once complete.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::io::atomic::write_atomic;
use crate::io::checkpoint::{load_safetensors, save_safetensors, NamedTensor, TensorData};
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
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    model::from_config_json(&v).with_context(|| format!("reading {}", path.display()))
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
        out.push((name, data));
    }
    for (name, t) in &by_name {
        log::warn!(
            "{}: ignoring tensor {} ({name}), which {} does not use",
            path.display(),
            t.name,
            model.architecture()
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

/// Writes `model.safetensors` and `config.json`.
pub fn save_model(
    dir: &Path,
    model: &dyn Model,
    params: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    save_safetensors(&dir.join(MODEL_FILE), &named("", params), &meta)?;
    let mut json = serde_json::to_vec_pretty(&model.config_json())?;
    json.push(b'\n');
    write_atomic(&dir.join(CONFIG_FILE), &json)
}

/// Writes the AdamW moments.
pub fn save_optimizer(
    dir: &Path,
    m: &[(String, Vec<usize>, Vec<f32>)],
    v: &[(String, Vec<usize>, Vec<f32>)],
    t: u32,
) -> Result<()> {
    let mut all = named("m.", m);
    all.extend(named("v.", v));
    let meta = BTreeMap::from([("adamw_t".to_string(), t.to_string())]);
    save_safetensors(&dir.join(OPTIMIZER_FILE), &all, &meta)
}

/// Reads the AdamW moments: (m, v, t).
#[allow(clippy::type_complexity)]
pub fn load_optimizer(
    dir: &Path,
) -> Result<(BTreeMap<String, Vec<f32>>, BTreeMap<String, Vec<f32>>, u32)> {
    let path = dir.join(OPTIMIZER_FILE);
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
        if let Some(n) = nt.name.strip_prefix("m.") {
            m.insert(n.to_string(), d);
        } else if let Some(n) = nt.name.strip_prefix("v.") {
            v.insert(n.to_string(), d);
        }
    }
    Ok((m, v, t))
}
