//! Text generation from a GPT: the forward graph at batch 1 over the whole
//! context window; only the logits row of the last real position is read.

use anyhow::{ensure, Result};

use crate::graph::exec::{Executor, TensorMap};
use crate::model::gpt::{self, BuildOptions, GptConfig};
use crate::model::upload_params;
use crate::runtime::Gpu;
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
    cfg: &GptConfig,
    params: &[(String, Vec<f32>)],
    prompt: &[u32],
    o: &SampleOptions,
) -> Result<Vec<u32>> {
    let p = upload_params(gpu, &cfg.param_shapes(), params)?;
    generate_on_gpu(gpu, cfg, &p, prompt, o).await
}

/// [`generate`] from parameters already on the device (e.g. a trainer's,
/// which the sampling graph only reads): nothing is copied.
pub async fn generate_on_gpu(
    gpu: &Gpu,
    cfg: &GptConfig,
    params: &TensorMap,
    prompt: &[u32],
    o: &SampleOptions,
) -> Result<Vec<u32>> {
    ensure!(
        !prompt.is_empty(),
        "sampling needs a prompt of at least one token"
    );
    ensure!(
        prompt.iter().all(|&t| (t as usize) < cfg.vocab_size),
        "the prompt has token ids outside the model's vocabulary ({})",
        cfg.vocab_size
    );
    let t = cfg.n_positions;
    let built = gpt::build(
        cfg,
        &BuildOptions {
            batch: 1,
            seq: t,
            training: false,
            keep_logits: true,
            grad_scale: 1.0,
            ..Default::default()
        },
    )?;
    let exec = Executor::new(gpu, built.graph, params)?;
    let (tokens, logits) = (exec.named("tokens")?, exec.named("logits")?);
    let v = cfg.vocab_size as u64;
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
