//! One training run on the GPU, for any [`Model`]: the training graph,
//! AdamW, and the per-step command encoding. A whole optimizer step — every
//! micro-batch's forward and backward, the gradient norm and every update —
//! is one command encoder and one submit; the only readback is the loss,
//! when the caller asks for it, through an asynchronous mapping.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};

use super::eval::{EvalStats, Evaluator};
use super::nan_guard::{NanGuard, NanStatus};
use super::optimizer::{AdamW, OptimizerConfig};
use crate::data::{Batch, InputSpec};
use crate::graph::exec::{Executor, TensorMap};
use crate::graph::{AttentionImpl, TensorId};
use crate::model::{self, BuildOptions, Model};
use crate::runtime::readback::PendingRead;
use crate::runtime::{DType, Gpu, Tensor};

/// How the training graph is built.
#[derive(Clone, Debug)]
pub struct TrainerOptions {
    /// Micro-batches per optimizer step (their gradients add up).
    pub grad_accum: usize,
    pub attention: AttentionImpl,
    /// Parameters that are not trained (no gradient, no optimizer state).
    pub frozen: Vec<String>,
    /// Seed of the dropout masks (with the micro-batch counter, see
    /// `crate::ops::dropout`).
    pub seed: u64,
    /// Distillation: a frozen teacher run forward-only on each micro-batch,
    /// its logits copied into the model's `teacher_logits` input.
    pub teacher: Option<Arc<TeacherSpec>>,
}

/// A teacher model and its parameters (host copies, uploaded once).
#[derive(Debug)]
pub struct TeacherSpec {
    pub model: Arc<dyn Model>,
    pub params: crate::model::HostParams,
}

/// The teacher on the GPU: its forward graph, which of the batch's
/// staged inputs it reads (index into the layout, its input tensor), and
/// its logits.
struct Teacher {
    exec: Executor,
    inputs: Vec<(usize, Tensor)>,
    logits: Tensor,
}

impl Teacher {
    /// The forward graph of `spec` on the inputs of `layout` it takes (never
    /// labels: it computes no loss), its parameters uploaded once.
    fn new(
        gpu: &Gpu,
        spec: &TeacherSpec,
        layout: &[InputSpec],
        attention: AttentionImpl,
    ) -> Result<Self> {
        let takes: Vec<String> = spec
            .model
            .input_specs(model::Dims { batch: 1, seq: 1 })
            .into_iter()
            .map(|s| s.name)
            .filter(|n| !matches!(n.as_str(), "labels" | "targets"))
            .collect();
        let used: Vec<(usize, InputSpec)> = layout
            .iter()
            .cloned()
            .enumerate()
            .filter(|(_, s)| takes.contains(&s.name))
            .collect();
        let tl: Vec<InputSpec> = used.iter().map(|(_, s)| s.clone()).collect();
        let built = model::build(
            spec.model.as_ref(),
            &tl,
            &BuildOptions {
                keep: vec!["logits".into()],
                attention,
                ..Default::default()
            },
        )
        .context("building the teacher's forward graph")?;
        let logits = built.output("logits")?;
        let shapes = model::param_shapes(spec.model.as_ref())?;
        let params = model::upload_params(gpu, &shapes, &spec.params)?;
        let exec = Executor::new(gpu, built.graph, &params)
            .context("building the teacher's forward graph")?;
        let inputs = used
            .iter()
            .map(|(k, s)| Ok((*k, exec.named(&s.name)?.clone())))
            .collect::<Result<Vec<_>>>()?;
        let logits = exec.tensor(logits).expect("kept").clone();
        Ok(Self {
            exec,
            inputs,
            logits,
        })
    }
}

impl Default for TrainerOptions {
    fn default() -> Self {
        Self {
            grad_accum: 1,
            attention: AttentionImpl::default(),
            frozen: Vec::new(),
            seed: 0,
            teacher: None,
        }
    }
}

pub struct Trainer {
    gpu: Gpu,
    pub model: Arc<dyn Model>,
    /// The inputs of one micro-batch, as the graph was built for them.
    pub layout: Vec<InputSpec>,
    pub options: TrainerOptions,
    pub params: TensorMap,
    exec: Executor,
    /// Loss terms of the graph and their weights.
    losses: Vec<(TensorId, f32)>,
    /// Scalar metrics of the graph (reported, not trained).
    metrics: Vec<(String, TensorId)>,
    pub opt: AdamW,
    /// Host-written copies of each micro-batch's inputs, copied into the
    /// graph's input tensors inside the step's encoder: (staging, graph input).
    staged: Vec<Vec<(Tensor, Tensor)>>,
    /// Each micro-batch's loss terms and metrics, the gradient Σg², then
    /// the non-finite guard's counters (u32 words), for readback.
    step_stats: Tensor,
    /// The graph's dropout RNG input and one staging copy per micro-batch
    /// (when the model has dropout).
    rng: Option<(Tensor, Vec<Tensor>)>,
    /// Optimizer steps completed.
    pub step: u64,
    eval: Option<Evaluator>,
    /// The teacher and the student graph's `teacher_logits` input.
    teacher: Option<(Teacher, Tensor)>,
}

/// Loss and gradient norm of one step, once read back.
#[derive(Clone, Debug)]
pub struct StepStats {
    pub step: u64,
    /// Mean over micro-batches of Σ weight·term.
    pub loss: f32,
    pub grad_norm: f32,
    pub lr: f32,
    /// Each metric, averaged over the micro-batches.
    pub metrics: Vec<(String, f32)>,
    /// The non-finite guard's counters after this step.
    pub nan: NanStatus,
}

/// A step's statistics on their way back from the GPU.
pub struct PendingStats {
    read: PendingRead,
    step: u64,
    lr: f32,
    micro: usize,
    weights: Vec<f32>,
    metric_names: Vec<String>,
}

impl PendingStats {
    pub async fn get(self, gpu: &Gpu) -> Result<StepStats> {
        let bytes = self.read.get(gpu).await?;
        let v: &[f32] = bytemuck::cast_slice(&bytes);
        let k = self.weights.len();
        let per = k + self.metric_names.len();
        let total = |i: usize| -> f64 {
            (0..k)
                .map(|j| self.weights[j] as f64 * v[i * per + j] as f64)
                .sum()
        };
        let loss = (0..self.micro).map(total).sum::<f64>() / self.micro as f64;
        let metrics = self
            .metric_names
            .iter()
            .enumerate()
            .map(|(j, n)| {
                let m = (0..self.micro)
                    .map(|i| v[i * per + k + j] as f64)
                    .sum::<f64>();
                (n.clone(), (m / self.micro as f64) as f32)
            })
            .collect();
        let words: &[u32] = bytemuck::cast_slice(&bytes[4 * (self.micro * per + 1)..]);
        Ok(StepStats {
            step: self.step,
            loss: loss as f32,
            grad_norm: v[self.micro * per].max(0.0).sqrt(),
            lr: self.lr,
            metrics,
            nan: NanStatus::from_words(words),
        })
    }
}

/// Copies all of `src` into `dst` (tensors of the same size).
fn copy_whole(enc: &mut wgpu::CommandEncoder, src: &Tensor, dst: &Tensor) {
    enc.copy_buffer_to_buffer(
        src.buffer(),
        src.offset(),
        dst.buffer(),
        dst.offset(),
        src.bytes(),
    );
}

/// Copies one scalar tensor into `dst` at element `index`.
fn copy_scalar(enc: &mut wgpu::CommandEncoder, src: &Tensor, dst: &Tensor, index: usize) {
    enc.copy_buffer_to_buffer(
        src.buffer(),
        src.offset(),
        dst.buffer(),
        dst.offset() + 4 * index as u64,
        4,
    );
}

impl Trainer {
    /// Uploads `init` (name, values) as the parameters and builds the
    /// training graph of `model` for micro-batches of `layout`.
    pub fn new(
        gpu: &Gpu,
        model: Arc<dyn Model>,
        opt_cfg: &OptimizerConfig,
        layout: &[InputSpec],
        init: &[(String, Vec<f32>)],
        options: &TrainerOptions,
    ) -> Result<Self> {
        ensure!(
            options.grad_accum >= 1,
            "gradient accumulation steps must be at least 1"
        );
        // Batches are name-ordered maps; the layout follows the same order.
        let mut layout = layout.to_vec();
        layout.sort_by(|a, b| a.name.cmp(&b.name));
        let layout = layout.as_slice();
        let shapes = model::param_shapes(model.as_ref())?;
        let params = model::upload_params(gpu, &shapes, init)?;
        // The teacher's forward graph on the same batch layout; the student
        // takes its logits as one more input.
        let teacher = match &options.teacher {
            None => None,
            Some(t) => Some(Teacher::new(gpu, t, layout, options.attention)?),
        };
        let mut student_layout = layout.to_vec();
        if let Some(t) = &teacher {
            student_layout.push(InputSpec::new(
                crate::model::distill::TEACHER_LOGITS,
                t.logits.shape(),
                DType::F32,
            ));
        }
        let built = model::build(
            model.as_ref(),
            &student_layout,
            &BuildOptions {
                training: true,
                keep: Vec::new(),
                grad_scale: 1.0 / options.grad_accum as f32,
                attention: options.attention,
                frozen: options.frozen.clone(),
                dropout: None,
            },
        )?;
        let decay: std::collections::BTreeMap<String, bool> = built
            .graph
            .params
            .iter()
            .map(|p| (p.name.clone(), p.decay))
            .collect();
        let losses = built.graph.losses.clone();
        let metrics = built.outputs.metrics.clone();
        let exec =
            Executor::new(gpu, built.graph, &params).context("building the training graph")?;
        let grads = exec.param_grads();
        let scales = super::session::lr_scales(model.as_ref(), opt_cfg)?;
        let mut opt = AdamW::new(
            gpu,
            opt_cfg,
            &params,
            &grads,
            &|n: &str| decay.get(n).copied().unwrap_or(false),
            &scales,
        )?;
        let staged = (0..options.grad_accum)
            .map(|_| {
                layout
                    .iter()
                    .map(|s| Ok((gpu.zeros(&s.shape, s.dtype)?, exec.named(&s.name)?.clone())))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let teacher = match teacher {
            None => None,
            Some(t) => {
                let target = exec.named(crate::model::distill::TEACHER_LOGITS)?.clone();
                Some((t, target))
            }
        };
        let per = losses.len() + metrics.len();
        let scalars = options.grad_accum * per;
        let guard_words = crate::kernels::guard::STATE_WORDS;
        let step_stats = gpu.zeros(&[scalars + 1 + guard_words], DType::F32)?;
        // The guard checks every loss and metric of the step and Σg².
        opt.guard = Some(NanGuard::new(gpu, &step_stats, scalars, &opt.grad_sumsq)?);
        let rng = match exec.named(crate::ops::dropout::RNG_INPUT) {
            Ok(t) => Some((
                t.clone(),
                (0..options.grad_accum)
                    .map(|_| gpu.zeros(&[4], DType::U32))
                    .collect::<Result<Vec<_>>>()?,
            )),
            Err(_) => None,
        };
        Ok(Self {
            gpu: gpu.clone(),
            model,
            layout: layout.to_vec(),
            options: options.clone(),
            params,
            exec,
            losses,
            metrics,
            opt,
            staged,
            step_stats,
            rng,
            step: 0,
            eval: None,
            teacher,
        })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    pub fn executor(&self) -> &Executor {
        &self.exec
    }
    pub fn grad_accum(&self) -> usize {
        self.options.grad_accum
    }

    /// Dispatches per optimizer step.
    pub fn dispatches_per_step(&self) -> usize {
        self.exec.dispatch_count() * self.options.grad_accum + self.opt.dispatch_count()
    }

    /// The model's checks and conversions, then the layout check.
    fn prepared(&self, b: &Batch) -> Result<Batch> {
        let mut b = b.clone();
        self.model.prepare_batch(&mut b)?;
        b.check_layout(&self.layout)?;
        Ok(b)
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
            micro.len() == self.options.grad_accum,
            "expected {} micro-batches, got {}",
            self.options.grad_accum,
            micro.len()
        );
        for (b, staged) in micro.iter().zip(&self.staged) {
            let b = self.prepared(b)?;
            for ((stage, _), t) in staged.iter().zip(b.tensors.values()) {
                super::write_tensor(&self.gpu, stage, &t.data)?;
            }
        }
        if let Some((_, stages)) = &self.rng {
            // Dropout masks: (seed, step · accumulation + micro-batch).
            let seed = self.options.seed;
            for (i, stage) in stages.iter().enumerate() {
                let counter = self.step * self.options.grad_accum as u64 + i as u64;
                let words = [
                    seed as u32,
                    (seed >> 32) as u32,
                    counter as u32,
                    (counter >> 32) as u32,
                ];
                stage.write_bytes(&self.gpu, bytemuck::cast_slice(&words))?;
            }
        }
        let lr = self.opt.prepare(&self.gpu, self.step)?;
        let mut enc = self
            .gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("kiln train step"),
            });
        before(&mut enc);
        self.exec.encode_zero_grads(&mut enc);
        let per = self.losses.len() + self.metrics.len();
        for (i, staged) in self.staged.iter().enumerate() {
            if let Some((input, stages)) = &self.rng {
                enc.copy_buffer_to_buffer(
                    stages[i].buffer(),
                    stages[i].offset(),
                    input.buffer(),
                    input.offset(),
                    16,
                );
            }
            for (stage, input) in staged {
                copy_whole(&mut enc, stage, input);
            }
            if let Some((t, target)) = &self.teacher {
                for (k, input) in &t.inputs {
                    copy_whole(&mut enc, &staged[*k].0, input);
                }
                t.exec.encode(&mut enc);
                copy_whole(&mut enc, &t.logits, target);
            }
            self.exec.encode(&mut enc);
            let scalars = self.losses.iter().map(|(l, _)| *l);
            let scalars = scalars.chain(self.metrics.iter().map(|(_, m)| *m));
            for (j, id) in scalars.enumerate() {
                let t = self.exec.tensor(id).expect("losses and metrics are kept");
                copy_scalar(&mut enc, t, &self.step_stats, i * per + j);
            }
        }
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("kiln optimizer"),
                timestamp_writes: None,
            });
            self.opt.encode(&mut pass);
        }
        copy_scalar(
            &mut enc,
            &self.opt.grad_sumsq,
            &self.step_stats,
            self.options.grad_accum * per,
        );
        if let Some(g) = &self.opt.guard {
            enc.copy_buffer_to_buffer(
                g.state().buffer(),
                g.state().offset(),
                self.step_stats.buffer(),
                self.step_stats.offset() + 4 * (self.options.grad_accum * per + 1) as u64,
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
                micro: self.options.grad_accum,
                weights: self.losses.iter().map(|(_, w)| *w).collect(),
                metric_names: self.metrics.iter().map(|(n, _)| n.clone()).collect(),
            }
        }))
    }

    /// Mean loss (Σ weight·term) over `batches`, forward only, on a graph
    /// with no backward pass that reads the trainer's parameters.
    pub async fn eval_loss(&mut self, batches: &[Batch]) -> Result<f32> {
        Ok(self.evaluate(batches).await?.loss)
    }

    /// [`eval_loss`](Self::eval_loss) with the model's metrics.
    pub async fn evaluate(&mut self, batches: &[Batch]) -> Result<EvalStats> {
        if self.eval.is_none() {
            self.eval = Some(Evaluator::new(
                &self.gpu,
                self.model.clone(),
                &self.layout,
                &self.params,
                self.options.attention,
            )?);
        }
        self.eval
            .as_ref()
            .expect("built above")
            .evaluate(batches)
            .await
    }
}
