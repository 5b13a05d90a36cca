//! Training: the optimizer and schedule, the per-step GPU work for any
//! model, checkpoints, sampling, the platform-neutral run session, and the
//! command-line run loop with validation, metrics, progress and a loss curve.

pub mod batch_file;
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod grads;
pub mod infer;
#[cfg(not(target_arch = "wasm32"))]
pub mod interrupt;
pub mod nan_guard;
pub mod optimizer;
pub mod resume;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
#[cfg(not(target_arch = "wasm32"))]
pub mod run_dir;
pub mod sample;
pub mod session;
pub mod trainer;
pub mod validate;

pub use config::RunConfig;
pub use eval::{EvalStats, Evaluator};
pub use optimizer::{AdamW, OptimizerConfig};
pub use session::Session;
pub use trainer::{PendingStats, StepStats, Trainer, TrainerOptions};

/// Writes a host tensor into a GPU tensor of the same shape and type.
pub(crate) fn write_tensor(
    gpu: &crate::runtime::Gpu,
    t: &crate::runtime::Tensor,
    data: &crate::io::checkpoint::TensorData,
) -> anyhow::Result<()> {
    use crate::io::checkpoint::TensorData;
    match data {
        TensorData::F32(v) => t.write_f32(gpu, v),
        TensorData::I32(v) => t.write_i32(gpu, v),
    }
}

/// Writes `batch`'s tensors into the executor's graph inputs (name → id);
/// the batch was checked against the graph's layout.
pub(crate) fn write_batch<'a>(
    gpu: &crate::runtime::Gpu,
    exec: &crate::graph::exec::Executor,
    inputs: impl IntoIterator<Item = (&'a String, &'a crate::graph::TensorId)>,
    batch: &crate::data::Batch,
) -> anyhow::Result<()> {
    for (name, id) in inputs {
        let t = exec
            .tensor(*id)
            .ok_or_else(|| anyhow::anyhow!("graph input {name} is not allocated"))?;
        let data = &batch
            .tensors
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("the batch has no {name}"))?
            .data;
        write_tensor(gpu, t, data)?;
    }
    Ok(())
}
