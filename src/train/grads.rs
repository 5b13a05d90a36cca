//! One forward and backward pass on one batch, everything read back: the
//! inspection hook behind `kiln grads` and the parity tests, for any model.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};

use crate::data::Batch;
use crate::graph::exec::Executor;
use crate::graph::AttentionImpl;
use crate::model::{self, BuildOptions, Model};
use crate::runtime::Gpu;

pub struct GradsResult {
    /// The total loss Σ weight·term.
    pub loss: f32,
    /// Every named output of the model (`logits`, …): (shape, values).
    pub outputs: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    /// (name, shape, gradient) for every parameter, in declaration order.
    pub grads: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl GradsResult {
    /// A named output's values (`logits`).
    pub fn output(&self, name: &str) -> Result<&[f32]> {
        self.outputs
            .get(name)
            .map(|(_, v)| v.as_slice())
            .ok_or_else(|| anyhow!("no output {name:?}"))
    }
}

/// One forward and backward pass of `model` with `params` on `batch`, with
/// dropout off.
pub async fn grads_pass(
    gpu: &Gpu,
    model: &dyn Model,
    params: &[(String, Vec<f32>)],
    batch: &Batch,
    attention: AttentionImpl,
) -> Result<GradsResult> {
    let mut batch = batch.clone();
    model.prepare_batch(&mut batch)?;
    let shapes = model::param_shapes(model)?;
    let p = model::upload_params(gpu, &shapes, params)?;
    let probe = model::build(model, &batch.layout(), &BuildOptions::default())?;
    let keep: Vec<String> = probe
        .outputs
        .tensors
        .keys()
        .filter(|k| !probe.outputs.losses.iter().any(|(n, _, _)| n == *k))
        .cloned()
        .collect();
    drop(probe);
    let built = model::build(
        model,
        &batch.layout(),
        &BuildOptions {
            training: true,
            keep: keep.clone(),
            attention,
            // Gradients as a reference computes them in evaluation mode.
            dropout: Some(false),
            ..Default::default()
        },
    )?;
    let inputs = built.inputs.clone();
    let outs = built.outputs.clone();
    let exec = Executor::new(gpu, built.graph, &p)?;
    super::write_batch(gpu, &exec, &inputs, &batch)?;
    exec.run();
    let mut loss = 0.0f64;
    for (_, l, w) in &outs.losses {
        let t = exec.tensor(*l).expect("losses are kept");
        loss += *w as f64 * t.read_scalar(gpu).await? as f64;
    }
    let mut outputs = BTreeMap::new();
    for name in keep {
        let id = outs.tensors[&name];
        let t = exec.tensor(id).expect("kept outputs are allocated");
        outputs.insert(name, (t.shape().to_vec(), t.read_f32(gpu).await?));
    }
    let mut grads = Vec::new();
    for (name, shape) in shapes {
        if let Some(g) = exec.param_grad(&name) {
            grads.push((name, shape, g.read_f32(gpu).await?));
        }
    }
    Ok(GradsResult {
        loss: loss as f32,
        outputs,
        grads,
    })
}
