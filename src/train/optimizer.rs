//! AdamW over every parameter, with clipping by global gradient norm and a
//! warmup + cosine learning-rate schedule. Dispatches are built once; a step
//! only rewrites each update's small uniform block (lr, step counter).

use anyhow::{anyhow, ensure, Result};
use serde::{Deserialize, Serialize};

use crate::graph::exec::TensorMap;
use crate::kernels::adamw::{adamw_step, adamw_uniform, AdamWConfig};
use crate::kernels::reduce::sum_squares;
use crate::runtime::{DType, Dispatch, Gpu, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// Peak learning rate.
    pub lr: f32,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f32,
    pub warmup_steps: u64,
    /// Steps over which the cosine decays (usually the run length).
    pub decay_steps: u64,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub grad_clip: f32,
    /// Decay biases, LayerNorm parameters and embeddings too.
    #[serde(default)]
    pub decay_all: bool,
    /// Fine-tuning: the task head's peak learning rate (the same schedule,
    /// scaled); `None`: `lr`.
    #[serde(default)]
    pub head_lr: Option<f32>,
    /// Fine-tuning: layer-wise learning-rate decay; layer i of L trains at
    /// lr·decay^(L − i), embeddings at lr·decay^(L + 1). 1 = off.
    #[serde(default = "one")]
    pub layer_decay: f32,
}

fn one() -> f32 {
    1.0
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 20,
            decay_steps: 1000,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
            decay_all: false,
            head_lr: None,
            layer_decay: 1.0,
        }
    }
}

impl OptimizerConfig {
    /// Linear warmup over `warmup_steps`, then cosine decay to `min_lr` at
    /// `decay_steps`, constant after. `step` counts from 0.
    pub fn lr_at(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        if step >= self.decay_steps {
            return self.min_lr;
        }
        let span = (self.decay_steps - self.warmup_steps).max(1) as f64;
        let progress = (step - self.warmup_steps) as f64 / span;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        (self.min_lr as f64 + cosine * (self.lr - self.min_lr) as f64) as f32
    }

    fn adamw(&self, lr: f32, decay: bool) -> AdamWConfig {
        AdamWConfig {
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: if decay { self.weight_decay } else { 0.0 },
        }
    }
}

struct Update {
    decay: bool,
    /// This parameter's learning-rate multiplier (fine-tuning).
    lr_scale: f32,
    dispatch: Dispatch,
}

pub struct AdamW {
    pub cfg: OptimizerConfig,
    pub m: TensorMap,
    pub v: TensorMap,
    /// Σ g² over every gradient, computed on the GPU each step.
    pub grad_sumsq: Tensor,
    norm: Vec<Dispatch>,
    /// Runs between the norm and the updates: skips non-finite steps.
    pub guard: Option<super::nan_guard::NanGuard>,
    updates: Vec<Update>,
    /// Optimizer steps taken (AdamW's t after the last step).
    pub t: u32,
}

impl AdamW {
    /// `decays(name)` says whether a parameter gets weight decay;
    /// `lr_scales` gives learning-rate multipliers (absent: 1).
    pub fn new(
        gpu: &Gpu,
        cfg: &OptimizerConfig,
        params: &TensorMap,
        grads: &[(String, Tensor)],
        decays: &dyn Fn(&str) -> bool,
        lr_scales: &[(String, f32)],
    ) -> Result<Self> {
        ensure!(
            cfg.grad_clip.is_finite() && cfg.grad_clip >= 0.0,
            "optimizer.grad_clip (--grad-clip) must be a finite number ≥ 0 (0 turns clipping off), got {}",
            cfg.grad_clip
        );
        let grad_sumsq = gpu.zeros(&[1], DType::F32)?;
        let grad_refs: Vec<&Tensor> = grads.iter().map(|(_, g)| g).collect();
        let norm = sum_squares(gpu, &grad_refs, &grad_sumsq)?;
        let (mut m, mut v) = (TensorMap::new(), TensorMap::new());
        let mut updates = Vec::new();
        let clip = (cfg.grad_clip > 0.0).then_some(cfg.grad_clip);
        for (name, g) in grads {
            let p = params
                .get(name)
                .ok_or_else(|| anyhow!("no parameter for gradient {name}"))?;
            let mt = gpu.zeros(p.shape(), DType::F32)?;
            let vt = gpu.zeros(p.shape(), DType::F32)?;
            let decay = cfg.decay_all || decays(name);
            let dispatch = adamw_step(
                gpu,
                p,
                g,
                &mt,
                &vt,
                Some((&grad_sumsq, clip.unwrap_or(0.0))),
                &cfg.adamw(cfg.lr, decay),
                1,
            )?;
            let lr_scale = lr_scales
                .iter()
                .find(|(n, _)| n == name)
                .map_or(1.0, |(_, s)| *s);
            updates.push(Update {
                decay,
                lr_scale,
                dispatch,
            });
            m.insert(name.clone(), mt);
            v.insert(name.clone(), vt);
        }
        Ok(Self {
            cfg: cfg.clone(),
            m,
            v,
            grad_sumsq,
            norm,
            guard: None,
            updates,
            t: 0,
        })
    }

    /// Advances the step counter and writes this step's lr into every update.
    /// `step` (from 0) picks the scheduled learning rate.
    pub fn prepare(&mut self, gpu: &Gpu, step: u64) -> Result<f32> {
        self.t += 1;
        let lr = self.cfg.lr_at(step);
        let clip = (self.cfg.grad_clip > 0.0).then_some(self.cfg.grad_clip);
        if let Some(g) = &self.guard {
            g.prepare(gpu, step)?;
        }
        for u in &self.updates {
            u.dispatch.set_uniform(
                gpu,
                &adamw_uniform(&self.cfg.adamw(lr * u.lr_scale, u.decay), self.t, clip),
            )?;
        }
        Ok(lr)
    }

    /// The gradient norm, the non-finite guard, then every parameter
    /// update, into one pass.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.norm {
            d.encode(pass);
        }
        if let Some(g) = &self.guard {
            g.encode(pass);
        }
        for u in &self.updates {
            u.dispatch.encode(pass);
        }
    }

    /// Restores moments and the step counter saved by a checkpoint.
    pub fn load_state(
        &mut self,
        gpu: &Gpu,
        m: &std::collections::BTreeMap<String, Vec<f32>>,
        v: &std::collections::BTreeMap<String, Vec<f32>>,
        t: u32,
    ) -> Result<()> {
        for (name, mt) in &self.m {
            let d = m
                .get(name)
                .ok_or_else(|| anyhow!("optimizer state lacks m.{name}"))?;
            mt.write_f32(gpu, d)?;
        }
        for (name, vt) in &self.v {
            let d = v
                .get(name)
                .ok_or_else(|| anyhow!("optimizer state lacks v.{name}"))?;
            vt.write_f32(gpu, d)?;
        }
        self.t = t;
        Ok(())
    }

    pub fn dispatch_count(&self) -> usize {
        self.norm.len() + self.guard.is_some() as usize + self.updates.len()
    }
}
