//! Evaluation: a forward-only graph over existing parameters — no backward
//! pass, no gradients, no optimizer state — and the mean loss over batches.

use std::sync::Arc;

use anyhow::{ensure, Result};

use crate::data::{Batch, InputSpec};
use crate::graph::exec::{Executor, TensorMap};
use crate::graph::{AttentionImpl, TensorId};
use crate::model::{self, BuildOptions, Model};
use crate::runtime::{DType, Gpu};

/// Mean loss and metrics over evaluation batches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalStats {
    pub loss: f32,
    pub metrics: Vec<(String, f32)>,
}

impl EvalStats {
    pub fn metric(&self, name: &str) -> Option<f32> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

pub struct Evaluator {
    gpu: Gpu,
    model: Arc<dyn Model>,
    layout: Vec<InputSpec>,
    exec: Executor,
    inputs: Vec<(String, TensorId)>,
    losses: Vec<(TensorId, f32)>,
    metrics: Vec<(String, TensorId)>,
}

impl Evaluator {
    /// The forward graph of `model` for batches of `layout`, reading `params`.
    pub fn new(
        gpu: &Gpu,
        model: Arc<dyn Model>,
        layout: &[InputSpec],
        params: &TensorMap,
        attention: AttentionImpl,
    ) -> Result<Self> {
        let mut layout = layout.to_vec();
        layout.sort_by(|a, b| a.name.cmp(&b.name));
        let built = model::build(
            model.as_ref(),
            &layout,
            &BuildOptions {
                attention,
                ..Default::default()
            },
        )?;
        ensure!(
            !built.outputs.losses.is_empty(),
            "{} computes no loss for inputs {:?} (are the labels missing?)",
            model.architecture(),
            layout.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
        );
        let inputs = built.inputs.clone().into_iter().collect();
        let losses = built
            .outputs
            .losses
            .iter()
            .map(|(_, l, w)| (*l, *w))
            .collect();
        let metrics = built.outputs.metrics.clone();
        let exec = Executor::new(gpu, built.graph, params)?;
        Ok(Self {
            gpu: gpu.clone(),
            model,
            layout,
            exec,
            inputs,
            losses,
            metrics,
        })
    }

    /// Mean over `batches` of the loss Σ weight·term.
    pub async fn mean_loss(&self, batches: &[Batch]) -> Result<f32> {
        Ok(self.evaluate(batches).await?.loss)
    }

    /// Mean over `batches` of the loss Σ weight·term and of every metric.
    pub async fn evaluate(&self, batches: &[Batch]) -> Result<EvalStats> {
        ensure!(!batches.is_empty(), "no evaluation batches");
        let mut prepared = Vec::with_capacity(batches.len());
        for b in batches {
            let mut b = b.clone();
            self.model.prepare_batch(&mut b)?;
            b.check_layout(&self.layout)?;
            prepared.push(b);
        }
        let k = self.losses.len();
        let per = k + self.metrics.len();
        let results = self.gpu.zeros(&[batches.len() * per], DType::F32)?;
        for (i, b) in prepared.iter().enumerate() {
            let inputs = self.inputs.iter().map(|(n, id)| (n, id));
            super::write_batch(&self.gpu, &self.exec, inputs, b)?;
            let mut enc = self
                .gpu
                .device()
                .create_command_encoder(&Default::default());
            self.exec.encode(&mut enc);
            let scalars = self.losses.iter().map(|(l, _)| *l);
            let scalars = scalars.chain(self.metrics.iter().map(|(_, m)| *m));
            for (j, id) in scalars.enumerate() {
                let t = self.exec.tensor(id).expect("losses and metrics are kept");
                enc.copy_buffer_to_buffer(
                    t.buffer(),
                    t.offset(),
                    results.buffer(),
                    results.offset() + 4 * (i * per + j) as u64,
                    4,
                );
            }
            self.gpu.queue().submit([enc.finish()]);
        }
        let v = results.read_f32(&self.gpu).await?;
        let n = batches.len() as f64;
        let total: f64 = (0..batches.len())
            .map(|i| {
                (0..k)
                    .map(|j| self.losses[j].1 as f64 * v[i * per + j] as f64)
                    .sum::<f64>()
            })
            .sum();
        let metrics = self
            .metrics
            .iter()
            .enumerate()
            .map(|(j, (name, _))| {
                let m: f64 = (0..batches.len()).map(|i| v[i * per + k + j] as f64).sum();
                (name.clone(), (m / n) as f32)
            })
            .collect();
        Ok(EvalStats {
            loss: (total / n) as f32,
            metrics,
        })
    }
}
