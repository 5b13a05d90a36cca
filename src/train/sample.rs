//! Text generation from a causal language model: the forward graph at batch
//! 1 over the whole context window; only the logits row of the last real
//! position is read.

use anyhow::{bail, ensure, Result};

use crate::data::InputSpec;
use crate::graph::exec::{Executor, TensorMap};
use crate::model::{build, param_shapes, upload_params, BuildOptions, Model};
use crate::runtime::{DType, Gpu};
use crate::util::Rng;

#[derive(Clone, Debug)]
pub struct SampleOptions {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    pub seed: u64,
}

/// Picks the next token from one row of logits.
pub fn pick(logits: &[f32], temperature: f32, top_k: usize, rng: &mut Rng) -> u32 {
    if temperature <= 0.0 {
        let best = logits
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            );
        return best.0 as u32;
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    // Sort by logit, ties by index, so the choice is reproducible.
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if top_k > 0 {
        idx.truncate(top_k);
    }
    let max = logits[idx[0]] as f64;
    let w: Vec<f64> = idx
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / temperature as f64).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.uniform() * total;
    for (k, &wi) in w.iter().enumerate() {
        if u < wi {
            return idx[k] as u32;
        }
        u -= wi;
    }
    idx[idx.len() - 1] as u32
}

/// Continues `prompt` by up to `max_new_tokens` tokens from host
/// parameters; returns the new ones.
pub async fn generate(
    gpu: &Gpu,
    model: &dyn Model,
    params: &[(String, Vec<f32>)],
    prompt: &[u32],
    o: &SampleOptions,
) -> Result<Vec<u32>> {
    let p = upload_params(gpu, &param_shapes(model)?, params)?;
    generate_on_gpu(gpu, model, &p, prompt, o).await
}

/// [`generate`] from parameters already on the device (e.g. a trainer's,
/// which the sampling graph only reads): nothing is copied. The model must
/// take `input_ids` and give `logits` [1, T, V] over its whole context.
pub async fn generate_on_gpu(
    gpu: &Gpu,
    model: &dyn Model,
    params: &TensorMap,
    prompt: &[u32],
    o: &SampleOptions,
) -> Result<Vec<u32>> {
    ensure!(
        !prompt.is_empty(),
        "sampling needs a prompt of at least one token"
    );
    let Some(t) = model.context_length() else {
        bail!("{} does not generate text", model.architecture());
    };
    let layout = [InputSpec::new("input_ids", &[1, t], DType::I32)];
    let built = build(
        model,
        &layout,
        &BuildOptions {
            keep: vec!["logits".into()],
            ..Default::default()
        },
    )?;
    let (ids_id, logits_id) = (built.inputs["input_ids"], built.output("logits")?);
    let v = *built.graph.shape(logits_id).last().unwrap_or(&0);
    ensure!(
        prompt.iter().all(|&t| (t as usize) < v),
        "the prompt has token ids outside the model's vocabulary ({v})"
    );
    let exec = Executor::new(gpu, built.graph, params)?;
    let (tokens, logits) = (
        exec.tensor(ids_id).expect("inputs are allocated").clone(),
        exec.tensor(logits_id).expect("kept").clone(),
    );
    let v = v as u64;
    let mut rng = Rng::new(o.seed);
    let mut ctx: Vec<u32> = prompt.to_vec();
    let mut out = Vec::with_capacity(o.max_new_tokens);
    for _ in 0..o.max_new_tokens {
        let window = &ctx[ctx.len().saturating_sub(t)..];
        let mut row = vec![0i32; t];
        for (r, &c) in row.iter_mut().zip(window) {
            *r = c as i32;
        }
        tokens.write_i32(gpu, &row)?;
        exec.run();
        // Positions after the window only see earlier ones (causal), so the
        // padding never changes the row we read.
        let last = (window.len() - 1) as u64;
        let bytes = gpu
            .read_bytes(logits.buffer(), logits.offset() + last * v * 4, v * 4)
            .await?;
        let next = pick(
            bytemuck::cast_slice(&bytes),
            o.temperature,
            o.top_k,
            &mut rng,
        );
        ctx.push(next);
        out.push(next);
    }
    Ok(out)
}
