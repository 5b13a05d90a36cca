//! The batch file of `kiln grads`: a safetensors file with `inputs` and
//! `targets`, both integer [B, T]. Every token id must lie in the model's
//! vocabulary; a target may also be -1 (ignored by the loss), but not all of
//! them.

use std::path::Path;

use anyhow::{anyhow, bail, ensure, Result};

use crate::io::checkpoint::{load_safetensors, parse_safetensors, tensors_by_name, NamedTensor};

/// The ignore index of the loss: a target of -1 contributes nothing.
pub const IGNORE: i32 = -1;

#[derive(Clone, Debug, PartialEq)]
pub struct BatchFile {
    pub batch: usize,
    pub seq: usize,
    pub inputs: Vec<i32>,
    pub targets: Vec<i32>,
}

/// Reads and checks a batch file against a vocabulary of `vocab` tokens.
pub fn read_batch_file(path: &Path, vocab: usize) -> Result<BatchFile> {
    let (tensors, _) = load_safetensors(path)?;
    check_batch(tensors, vocab)
}

/// [`read_batch_file`] on the file's bytes.
pub fn parse_batch_file(bytes: &[u8], vocab: usize) -> Result<BatchFile> {
    let (tensors, _) = parse_safetensors(bytes)?;
    check_batch(tensors, vocab)
}

fn check_batch(tensors: Vec<NamedTensor>, vocab: usize) -> Result<BatchFile> {
    let by = tensors_by_name(tensors)?;
    let get = |name: &str| {
        by.get(name)
            .ok_or_else(|| anyhow!("the file has no `{name}` tensor (integer [B, T])"))
    };
    let (inp, tgt) = (get("inputs")?, get("targets")?);
    if inp.shape.len() != 2 || inp.shape != tgt.shape {
        bail!(
            "inputs and targets must both be integer [B, T]; got {:?} and {:?}",
            inp.shape,
            tgt.shape
        );
    }
    let (b, t) = (inp.shape[0], inp.shape[1]);
    ensure!(
        b >= 1 && t >= 1,
        "inputs and targets are empty ([{b}, {t}])"
    );
    crate::train::validate::check_batch_shape(b, t)?;
    let inputs = inp.i32_with_shape(&[b, t])?.to_vec();
    let targets = tgt.i32_with_shape(&[b, t])?.to_vec();
    let v = vocab as i64;
    if let Some((i, x)) = inputs
        .iter()
        .enumerate()
        .find(|(_, &x)| !(0..v).contains(&(x as i64)))
    {
        bail!(
            "inputs[{}][{}] = {x} is not a token id of this model (0 to {})",
            i / t,
            i % t,
            v - 1
        );
    }
    if let Some((i, x)) = targets
        .iter()
        .enumerate()
        .find(|(_, &x)| x != IGNORE && !(0..v).contains(&(x as i64)))
    {
        bail!(
            "targets[{}][{}] = {x} is neither a token id of this model (0 to {}) nor {IGNORE} (ignored)",
            i / t,
            i % t,
            v - 1
        );
    }
    ensure!(
        targets.iter().any(|&x| x != IGNORE),
        "every target is {IGNORE} (ignored): there is no token to compute a loss on"
    );
    Ok(BatchFile {
        batch: b,
        seq: t,
        inputs,
        targets,
    })
}
