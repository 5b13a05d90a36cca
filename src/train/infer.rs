//! Inference: a forward-only graph of any model for batches of one layout,
//! its named outputs read back (logits for classification, embeddings for
//! zero-shot, fill-mask). Parameters are read where they are.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;

use crate::data::{Batch, InputSpec};
use crate::graph::exec::{Executor, TensorMap};
use crate::graph::{AttentionImpl, TensorId};
use crate::model::{self, BuildOptions, Model};
use crate::runtime::Gpu;

pub struct Inference {
    gpu: Gpu,
    model: Arc<dyn Model>,
    layout: Vec<InputSpec>,
    exec: Executor,
    inputs: Vec<(String, TensorId)>,
    outputs: Vec<(String, TensorId)>,
}

/// Named outputs of one batch: (shape, values).
pub type Outputs = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

impl Inference {
    /// The forward graph of `model` for batches like `example` (as the
    /// model prepares them), keeping the outputs named in `keep`.
    pub fn new(
        gpu: &Gpu,
        model: Arc<dyn Model>,
        example: &Batch,
        params: &TensorMap,
        keep: &[&str],
        attention: AttentionImpl,
    ) -> Result<Self> {
        let mut ex = example.clone();
        model.prepare_batch(&mut ex)?;
        let layout = ex.layout();
        let built = model::build(
            model.as_ref(),
            &layout,
            &BuildOptions {
                keep: keep.iter().map(|k| k.to_string()).collect(),
                attention,
                ..Default::default()
            },
        )?;
        let outputs = keep
            .iter()
            .map(|k| Ok((k.to_string(), built.output(k)?)))
            .collect::<Result<Vec<_>>>()?;
        let inputs = built.inputs.clone().into_iter().collect();
        let exec = Executor::new(gpu, built.graph, params)?;
        Ok(Self {
            gpu: gpu.clone(),
            model,
            layout,
            exec,
            inputs,
            outputs,
        })
    }

    /// Runs one batch; returns every kept output.
    pub async fn run(&self, batch: &Batch) -> Result<Outputs> {
        let mut b = batch.clone();
        self.model.prepare_batch(&mut b)?;
        b.check_layout(&self.layout)?;
        let inputs = self.inputs.iter().map(|(n, id)| (n, id));
        super::write_batch(&self.gpu, &self.exec, inputs, &b)?;
        self.exec.run();
        let mut out = Outputs::new();
        for (name, id) in &self.outputs {
            let t = self.exec.tensor(*id).expect("kept outputs are allocated");
            out.insert(
                name.clone(),
                (t.shape().to_vec(), t.read_f32(&self.gpu).await?),
            );
        }
        Ok(out)
    }
}

/// The index of the largest value of each row of `v` (rows of `n`; ties go
/// to the lowest index, as torch.argmax).
pub fn argmax_rows(v: &[f32], n: usize) -> Vec<usize> {
    v.chunks(n.max(1))
        .map(|r| (0..r.len()).fold(0, |b, j| if r[j] > r[b] { j } else { b }))
        .collect()
}

/// The `k` largest values of `row` with their indices, largest first.
pub fn top_k(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, row[i])).collect()
}
