//! One forward and backward pass on one batch, everything read back: the
//! inspection hook behind `kiln grads` and the parity tests.

use anyhow::{ensure, Result};

use crate::graph::exec::Executor;
use crate::graph::AttentionImpl;
use crate::model::gpt::{self, BuildOptions, GptConfig};
use crate::model::upload_params;
use crate::runtime::Gpu;

pub struct GradsResult {
    /// [B, T, V]
    pub logits: Vec<f32>,
    pub loss: f32,
    /// (name, shape, gradient) for every parameter, in the model's order.
    pub grads: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// One forward and backward pass with the default (fused) attention kernels.
pub async fn grads_pass(
    gpu: &Gpu,
    cfg: &GptConfig,
    params: &[(String, Vec<f32>)],
    inputs: &[i32],
    targets: &[i32],
    batch: usize,
    seq: usize,
) -> Result<GradsResult> {
    grads_pass_with(
        gpu,
        cfg,
        params,
        inputs,
        targets,
        batch,
        seq,
        AttentionImpl::default(),
    )
    .await
}

/// [`grads_pass`] with a choice of attention kernels.
#[allow(clippy::too_many_arguments)]
pub async fn grads_pass_with(
    gpu: &Gpu,
    cfg: &GptConfig,
    params: &[(String, Vec<f32>)],
    inputs: &[i32],
    targets: &[i32],
    batch: usize,
    seq: usize,
    attention: AttentionImpl,
) -> Result<GradsResult> {
    ensure!(
        inputs.len() == batch * seq && targets.len() == batch * seq,
        "inputs and targets must both be [B, T] = [{batch}, {seq}]"
    );
    ensure!(
        inputs
            .iter()
            .all(|&t| t >= 0 && (t as usize) < cfg.vocab_size),
        "inputs hold token ids outside [0, {})",
        cfg.vocab_size
    );
    let shapes = cfg.param_shapes();
    let p = upload_params(gpu, &shapes, params)?;
    let built = gpt::build(
        cfg,
        &BuildOptions {
            batch,
            seq,
            training: true,
            keep_logits: true,
            grad_scale: 1.0,
            attention,
        },
    )?;
    let exec = Executor::new(gpu, built.graph, &p)?;
    exec.named("tokens")?.write_i32(gpu, inputs)?;
    exec.named("targets")?.write_i32(gpu, targets)?;
    exec.run();
    let logits = exec.named("logits")?.read_f32(gpu).await?;
    let loss = exec.named("loss")?.read_scalar(gpu).await?;
    let mut grads = Vec::new();
    for (name, shape) in shapes {
        let g = exec
            .param_grad(&name)
            .ok_or_else(|| anyhow::anyhow!("no gradient for {name}"))?;
        grads.push((name, shape, g.read_f32(gpu).await?));
    }
    Ok(GradsResult {
        logits,
        loss,
        grads,
    })
}
