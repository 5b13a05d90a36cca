//! The batch file of `kiln grads`: a safetensors file holding a model's
//! inputs by their Hugging Face forward-argument names (GPT-2: `input_ids`
//! and `targets`, or `labels`; BERT: `input_ids`, `attention_mask`,
//! `token_type_ids`, `labels`; ViT: `pixel_values`, `labels`; CLIP:
//! `input_ids`, `attention_mask`, `pixel_values`). Kiln's first grads files
//! named GPT's ids `inputs`; that name is still read. The model checks every
//! id, label and mask before anything runs.

use std::path::Path;

use anyhow::{bail, ensure, Result};

use crate::data::Batch;
use crate::io::checkpoint::{load_safetensors, parse_safetensors, tensors_by_name, NamedTensor};
use crate::model::Model;

/// Reads and checks a batch file for `model`.
pub fn read_batch_file(path: &Path, model: &dyn Model) -> Result<Batch> {
    let (tensors, _) = load_safetensors(path)?;
    check_batch(tensors, model)
}

/// [`read_batch_file`] on the file's bytes.
pub fn parse_batch_file(bytes: &[u8], model: &dyn Model) -> Result<Batch> {
    let (tensors, _) = parse_safetensors(bytes)?;
    check_batch(tensors, model)
}

fn check_batch(tensors: Vec<NamedTensor>, model: &dyn Model) -> Result<Batch> {
    let by = tensors_by_name(tensors)?;
    ensure!(
        !by.is_empty(),
        "the file holds no tensors; {} takes its inputs by their Hugging Face names",
        model.architecture()
    );
    let mut accepted: Vec<String> = model
        .input_specs(crate::model::Dims { batch: 1, seq: 1 })
        .into_iter()
        .map(|s| s.name)
        .filter(|n| !n.starts_with("kiln."))
        .collect();
    accepted.push("labels".into());
    accepted.dedup();
    let mut batch = Batch::new();
    let mut rows = None;
    for (name, mut t) in by {
        if name == "inputs" {
            t.name = "input_ids".into();
        }
        ensure!(
            accepted.contains(&t.name),
            "`{name}` is not an input of {}; a batch file holds its inputs by their Hugging \
             Face names: {}",
            model.architecture(),
            accepted.join(", ")
        );
        ensure!(
            !t.shape.is_empty() && t.shape.iter().all(|&d| d >= 1),
            "`{}` has shape {:?}: every input needs a batch dimension and no empty one",
            t.name,
            t.shape
        );
        match rows {
            _ if !model.inputs_share_batch_dim() => {}
            None => rows = Some((t.shape[0], t.name.clone())),
            Some((b, ref first)) if b != t.shape[0] => bail!(
                "`{}` has {} rows but `{first}` has {b}: every input holds the same batch",
                t.name,
                t.shape[0]
            ),
            _ => {}
        }
        if t.numel() > 1 << 31 {
            bail!(
                "`{}` has {} values, more than Kiln takes in one batch",
                t.name,
                t.numel()
            );
        }
        batch.insert(t);
    }
    model.prepare_batch(&mut batch)?;
    Ok(batch)
}
