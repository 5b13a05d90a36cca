//! One GPT training run on the GPU: the training graph, AdamW, and the
//! per-step command encoding. A whole optimizer step — every micro-batch's
//! forward and backward, the gradient norm and every update — is one
//! command encoder and one submit; the only readback is the loss, when the
//! caller asks for it, through an asynchronous mapping.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};

use super::nan_guard::{NanGuard, NanStatus};
use super::optimizer::{AdamW, OptimizerConfig};
use crate::graph::exec::{Executor, TensorMap};
use crate::graph::AttentionImpl;
use crate::model::gpt::{self, BuildOptions, GptConfig};
use crate::runtime::readback::PendingRead;
use crate::runtime::{DType, Gpu, Tensor};

/// A micro-batch: inputs and next-token targets, each [B·T] i32.
pub type Batch = (Vec<i32>, Vec<i32>);

pub struct Trainer {
    gpu: Gpu,
    pub model: GptConfig,
    pub batch: usize,
    pub seq: usize,
    pub grad_accum: usize,
    /// The attention kernels of the training (and evaluation) graph.
    pub attention: AttentionImpl,
    pub params: TensorMap,
    exec: Executor,
    pub opt: AdamW,
    /// Host-written copies of each micro-batch, copied into the graph's
    /// input tensors inside the step's encoder.
    staged: Vec<(Tensor, Tensor)>,
    /// Loss of each micro-batch, the gradient Σg², then the non-finite
    /// guard's counters (u32 words), for readback.
    step_stats: Tensor,
    /// Optimizer steps completed.
    pub step: u64,
    eval: Option<Arc<Executor>>,
}

/// Losses and gradient norm of one step, once read back.
#[derive(Clone, Debug)]
pub struct StepStats {
    pub step: u64,
    pub loss: f32,
    pub grad_norm: f32,
    pub lr: f32,
    /// The non-finite guard's counters after this step.
    pub nan: NanStatus,
}

/// A step's statistics on their way back from the GPU.
pub struct PendingStats {
    read: PendingRead,
    step: u64,
    lr: f32,
    micro: usize,
}

impl PendingStats {
    pub async fn get(self, gpu: &Gpu) -> Result<StepStats> {
        let bytes = self.read.get(gpu).await?;
        let v: &[f32] = bytemuck::cast_slice(&bytes);
        let loss = v[..self.micro].iter().map(|x| *x as f64).sum::<f64>() / self.micro as f64;
        let words: &[u32] = bytemuck::cast_slice(&bytes[4 * (self.micro + 1)..]);
        Ok(StepStats {
            step: self.step,
            loss: loss as f32,
            grad_norm: v[self.micro].max(0.0).sqrt(),
            lr: self.lr,
            nan: NanStatus::from_words(words),
        })
    }
}

impl Trainer {
    /// Uploads `init` (name, values) as the parameters and builds everything,
    /// with the default (fused) attention kernels.
    pub fn new(
        gpu: &Gpu,
        model: &GptConfig,
        opt_cfg: &OptimizerConfig,
        batch: usize,
        seq: usize,
        grad_accum: usize,
        init: &[(String, Vec<f32>)],
    ) -> Result<Self> {
        Self::with_attention(
            gpu,
            model,
            opt_cfg,
            batch,
            seq,
            grad_accum,
            init,
            AttentionImpl::default(),
        )
    }

    /// [`Trainer::new`] with a choice of attention kernels.
    #[allow(clippy::too_many_arguments)]
    pub fn with_attention(
        gpu: &Gpu,
        model: &GptConfig,
        opt_cfg: &OptimizerConfig,
        batch: usize,
        seq: usize,
        grad_accum: usize,
        init: &[(String, Vec<f32>)],
        attention: AttentionImpl,
    ) -> Result<Self> {
        ensure!(
            grad_accum >= 1,
            "gradient accumulation steps must be at least 1"
        );
        let params = crate::model::upload_params(gpu, &model.param_shapes(), init)?;
        let built = gpt::build(
            model,
            &BuildOptions {
                batch,
                seq,
                training: true,
                keep_logits: false,
                grad_scale: 1.0 / grad_accum as f32,
                attention,
            },
        )?;
        let exec =
            Executor::new(gpu, built.graph, &params).context("building the training graph")?;
        let grads = exec.param_grads();
        let mut opt = AdamW::new(gpu, opt_cfg, &params, &grads, &GptConfig::decays)?;
        let staged = (0..grad_accum)
            .map(|_| {
                Ok((
                    gpu.zeros(&[batch, seq], DType::I32)?,
                    gpu.zeros(&[batch, seq], DType::I32)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let guard_words = crate::kernels::guard::STATE_WORDS;
        let step_stats = gpu.zeros(&[grad_accum + 1 + guard_words], DType::F32)?;
        opt.guard = Some(NanGuard::new(
            gpu,
            &step_stats,
            grad_accum,
            &opt.grad_sumsq,
        )?);
        Ok(Self {
            gpu: gpu.clone(),
            model: model.clone(),
            batch,
            seq,
            grad_accum,
            attention,
            params,
            exec,
            opt,
            staged,
            step_stats,
            step: 0,
            eval: None,
        })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// Dispatches per optimizer step.
    pub fn dispatches_per_step(&self) -> usize {
        self.exec.dispatch_count() * self.grad_accum + self.opt.dispatch_count()
    }

    /// Runs one optimizer step over `grad_accum` micro-batches. Returns the
    /// step's statistics as a pending read when `want_stats`; otherwise
    /// nothing is read back.
    pub fn train_step(
        &mut self,
        micro: &[Batch],
        want_stats: bool,
    ) -> Result<Option<PendingStats>> {
        self.train_step_wrapped(micro, want_stats, &mut |_| {}, &mut |_| {})
    }

    /// [`train_step`](Self::train_step) with `before` called on the step's
    /// command encoder before its first command and `after` after its last
    /// (before the statistics readback and the submit). Benchmarks use it to
    /// put GPU timestamps around the whole step and to time the encoding.
    pub fn train_step_wrapped(
        &mut self,
        micro: &[Batch],
        want_stats: bool,
        before: &mut dyn FnMut(&mut wgpu::CommandEncoder),
        after: &mut dyn FnMut(&mut wgpu::CommandEncoder),
    ) -> Result<Option<PendingStats>> {
        ensure!(
            micro.len() == self.grad_accum,
            "expected {} micro-batches, got {}",
            self.grad_accum,
            micro.len()
        );
        let n = self.batch * self.seq;
        for ((x, y), (tx, ty)) in micro.iter().zip(&self.staged) {
            ensure!(
                x.len() == n && y.len() == n,
                "a micro-batch must hold {n} inputs and targets"
            );
            let v = self.model.vocab_size as i32;
            ensure!(
                x.iter().chain(y.iter()).all(|&t| (0..v).contains(&t)),
                "token ids must lie in [0, {v}) for this model's vocabulary"
            );
            tx.write_i32(&self.gpu, x)?;
            ty.write_i32(&self.gpu, y)?;
        }
        let lr = self.opt.prepare(&self.gpu, self.step)?;
        let tokens = self.exec.named("tokens")?.clone();
        let targets = self.exec.named("targets")?.clone();
        let loss = self.exec.named("loss")?.clone();
        let mut enc = self
            .gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kiln train step"),
            });
        before(&mut enc);
        self.exec.encode_zero_grads(&mut enc);
        for (i, (tx, ty)) in self.staged.iter().enumerate() {
            enc.copy_buffer_to_buffer(
                tx.buffer(),
                tx.offset(),
                tokens.buffer(),
                tokens.offset(),
                tx.bytes(),
            );
            enc.copy_buffer_to_buffer(
                ty.buffer(),
                ty.offset(),
                targets.buffer(),
                targets.offset(),
                ty.bytes(),
            );
            self.exec.encode(&mut enc);
            enc.copy_buffer_to_buffer(
                loss.buffer(),
                loss.offset(),
                self.step_stats.buffer(),
                self.step_stats.offset() + 4 * i as u64,
                4,
            );
        }
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("kiln optimizer"),
                timestamp_writes: None,
            });
            self.opt.encode(&mut pass);
        }
        let s = &self.opt.grad_sumsq;
        enc.copy_buffer_to_buffer(
            s.buffer(),
            s.offset(),
            self.step_stats.buffer(),
            self.step_stats.offset() + 4 * self.grad_accum as u64,
            4,
        );
        if let Some(g) = &self.opt.guard {
            enc.copy_buffer_to_buffer(
                g.state().buffer(),
                g.state().offset(),
                self.step_stats.buffer(),
                self.step_stats.offset() + 4 * (self.grad_accum as u64 + 1),
                g.state().bytes(),
            );
        }
        after(&mut enc);
        let pending =
            want_stats.then(|| PendingRead::encode(&self.gpu, &mut enc, &self.step_stats));
        self.gpu.queue().submit([enc.finish()]);
        self.step += 1;
        Ok(pending.map(|mut p| {
            p.start();
            PendingStats {
                read: p,
                step: self.step,
                lr,
                micro: self.grad_accum,
            }
        }))
    }

    /// Mean validation loss over `batches` (forward only, same batch shape).
    pub async fn eval_loss(&mut self, batches: &[Batch]) -> Result<f32> {
        ensure!(!batches.is_empty(), "no validation batches");
        if self.eval.is_none() {
            let built = gpt::build(
                &self.model,
                &BuildOptions {
                    batch: self.batch,
                    seq: self.seq,
                    training: false,
                    keep_logits: false,
                    grad_scale: 1.0,
                    attention: self.attention,
                },
            )?;
            self.eval = Some(Arc::new(Executor::new(
                &self.gpu,
                built.graph,
                &self.params,
            )?));
        }
        let ev = self.eval.clone().expect("built above");
        let losses = self.gpu.zeros(&[batches.len()], DType::F32)?;
        let (tokens, targets, loss) =
            (ev.named("tokens")?, ev.named("targets")?, ev.named("loss")?);
        for (i, (x, y)) in batches.iter().enumerate() {
            tokens.write_i32(&self.gpu, x)?;
            targets.write_i32(&self.gpu, y)?;
            let mut enc = self
                .gpu
                .device()
                .create_command_encoder(&Default::default());
            ev.encode(&mut enc);
            enc.copy_buffer_to_buffer(
                loss.buffer(),
                loss.offset(),
                losses.buffer(),
                4 * i as u64,
                4,
            );
            self.gpu.queue().submit([enc.finish()]);
        }
        let v = losses.read_f32(&self.gpu).await?;
        Ok((v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64) as f32)
    }
}
