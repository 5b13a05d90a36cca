//! Training never writes NaN over good weights.
//!
//! Every optimizer step runs a one-thread guard kernel on the GPU
//! ([`crate::kernels::guard`]) between the gradient norm and the AdamW
//! updates: a non-finite loss or Σg² turns the step's updates into no-ops,
//! so the parameters and moments keep their last finite values. The guard
//! counts skipped steps and records the first bad one; the counts come back
//! with the step statistics. What happens next is the run's choice
//! ([`OnNan`]): stop (the default; after the first bad step every later
//! update is skipped too, so the weights stay those before it) or skip the
//! step and go on.
//!
//! When a run stops, [`locate_nonfinite`] re-runs the bad step's forward and
//! backward one kernel at a time on those weights and names the first
//! tensor that is not finite.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::data::Batch;
use crate::graph::exec::{Executor, TensorMap};
use crate::graph::AttentionImpl;
use crate::kernels::guard::{guard_uniform, nonfinite_guard, STATE_WORDS};
use crate::model::{BuildOptions, Model};
use crate::runtime::{DType, Dispatch, Gpu, Tensor};

/// What a run does when a step's loss or gradient is NaN or infinite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNan {
    /// Stop with an error naming the step and the first non-finite tensor;
    /// no checkpoint is written after the bad step.
    #[default]
    Stop,
    /// Skip the update (weights and moments unchanged) and continue,
    /// counting skipped steps.
    Skip,
}

impl OnNan {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "stop" => Ok(Self::Stop),
            "skip" => Ok(Self::Skip),
            other => bail!("--on-nan {other:?}: expected stop or skip"),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Skip => "skip",
        }
    }
}

/// The guard's counters, as read back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NanStatus {
    /// Steps whose update was skipped (since the run began).
    pub skipped: u32,
    /// The first step (counting from 1) whose loss or gradient was not finite.
    pub first_bad_step: Option<u64>,
    /// Whether the last step was skipped.
    pub last_skipped: bool,
}

impl NanStatus {
    pub fn from_words(w: &[u32]) -> Self {
        Self {
            skipped: w.first().copied().unwrap_or(0),
            first_bad_step: w.get(1).copied().filter(|&s| s != 0).map(u64::from),
            last_skipped: w.get(2).copied().unwrap_or(0) != 0,
        }
    }
}

/// The guard of one trainer: its dispatch and its state on the GPU.
pub struct NanGuard {
    state: Tensor,
    dispatch: Dispatch,
    n_losses: usize,
    pub on_nan: OnNan,
}

impl NanGuard {
    /// A guard over `losses[0..n_losses]` and `sumsq`, in skip mode.
    pub fn new(gpu: &Gpu, losses: &Tensor, n_losses: usize, sumsq: &Tensor) -> Result<Self> {
        let state = gpu.zeros(&[STATE_WORDS], DType::U32)?;
        let dispatch = nonfinite_guard(gpu, losses, n_losses, sumsq, &state, false)?;
        Ok(Self {
            state,
            dispatch,
            n_losses,
            on_nan: OnNan::Skip,
        })
    }

    /// Writes step `step` (from 0) into the guard's parameters.
    pub fn prepare(&self, gpu: &Gpu, step: u64) -> Result<()> {
        let sticky = self.on_nan == OnNan::Stop;
        self.dispatch
            .set_uniform(gpu, &guard_uniform(step, self.n_losses, sticky))
    }

    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.dispatch.encode(pass);
    }

    /// The u32 [STATE_WORDS] counters (see [`NanStatus::from_words`]).
    pub fn state(&self) -> &Tensor {
        &self.state
    }

    /// Restores the skipped-step count of a resumed run.
    pub fn restore(&self, gpu: &Gpu, skipped: u32) -> Result<()> {
        let mut w = [0u32; STATE_WORDS];
        w[0] = skipped;
        self.state.write_bytes(gpu, bytemuck::cast_slice(&w))
    }

    pub async fn status(&self, gpu: &Gpu) -> Result<NanStatus> {
        Ok(NanStatus::from_words(&self.state.read_u32(gpu).await?))
    }
}

/// Re-runs one optimizer step's forward and backward (`micro`, with the
/// weights in `params`) one kernel at a time and describes the first tensor
/// that is not finite: the op that wrote it and how many values are bad.
/// Dropout is off in the re-run (its masks do not change what overflows).
pub async fn locate_nonfinite(
    gpu: &Gpu,
    model: &dyn Model,
    params: &TensorMap,
    micro: &[Batch],
    attention: AttentionImpl,
) -> Result<String> {
    for (name, t) in params {
        if let Some(msg) = describe(&t.read_f32(gpu).await?) {
            return Ok(format!("parameter {name} ({msg})"));
        }
    }
    if micro.is_empty() {
        bail!("no micro-batches to re-run");
    }
    let mut prepared = Vec::with_capacity(micro.len());
    for b in micro {
        let mut b = b.clone();
        model.prepare_batch(&mut b)?;
        prepared.push(b);
    }
    let built = crate::model::build(
        model,
        &prepared[0].layout(),
        &BuildOptions {
            training: true,
            grad_scale: 1.0 / micro.len().max(1) as f32,
            attention,
            dropout: Some(false),
            ..Default::default()
        },
    )?;
    let inputs = built.inputs.clone();
    let exec = Executor::new(gpu, built.graph, params)?;
    let mut sumsq = 0f64;
    for (m, b) in prepared.iter().enumerate() {
        super::write_batch(gpu, &exec, &inputs, b)?;
        for (i, (step, dispatches)) in exec
            .graph
            .steps
            .iter()
            .zip(exec.step_dispatches())
            .enumerate()
        {
            let mut enc = gpu.device().create_command_encoder(&Default::default());
            if m == 0 && i == 0 {
                exec.encode_zero_grads(&mut enc);
            }
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for d in dispatches {
                    d.encode(&mut pass);
                }
            }
            gpu.queue().submit([enc.finish()]);
            for id in step.outputs() {
                let desc = &exec.graph.tensors[id.0 as usize];
                let Some(t) = exec.tensor(id) else { continue };
                if desc.dtype != DType::F32 {
                    continue;
                }
                if let Some(msg) = describe(&t.read_f32(gpu).await?) {
                    return Ok(format!(
                        "{} (written by kernel step {i}, {}, in micro-batch {}; {msg})",
                        desc.name,
                        step.name,
                        m + 1
                    ));
                }
            }
        }
    }
    for (_, g) in exec.param_grads() {
        sumsq += g
            .read_f32(gpu)
            .await?
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>();
    }
    Ok(format!(
        "none: every tensor is finite, but the squared gradient norm ({sumsq:.3e}) overflows f32"
    ))
}

/// "3 of 64 values are not finite, the first NaN at index 5", or None.
fn describe(v: &[f32]) -> Option<String> {
    let (i, x) = v.iter().enumerate().find(|(_, x)| !x.is_finite())?;
    let n = v.iter().filter(|x| !x.is_finite()).count();
    Some(format!(
        "{n} of {} values are not finite, the first {x} at index {i}",
        v.len()
    ))
}
