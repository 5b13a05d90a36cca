//! The training-step benchmark: a whole GPT optimizer step (forward,
//! backward, gradient norm, AdamW) through [`Trainer`], on random tokens.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::peak::Peak;
use super::profile::profile_steps;
use super::timing::{median_min, process_cpu_s, Bracket, Timer};
use crate::data::Batch;
use crate::graph::plan::{naive_bytes, persistent_bytes};
use crate::graph::AttentionImpl;
use crate::graph::Executor;
use crate::model::{self, BuildOptions, Dims, ModelDims};
use crate::runtime::{DType, Gpu};
use crate::train::{OptimizerConfig, RunConfig, Trainer, TrainerOptions};
use crate::util::Rng;

/// A model size with its default batch shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Preset {
    pub name: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub vocab: usize,
    pub seq: usize,
    pub batch: usize,
}

/// The presets: the run presets (`tiny`, `small`: what `kiln train
/// --preset` and the browser page train, with the byte vocabulary) and
/// `gpt2-124m` (GPT-2 small at B = 8, T = 1024, as in llm.c's benchmarks).
pub const PRESETS: [&str; 3] = ["tiny", "small", "gpt2-124m"];

pub fn preset(name: &str) -> Result<Preset> {
    let name = name.trim().to_ascii_lowercase();
    if name == "gpt2-124m" {
        return Ok(Preset {
            name,
            n_layer: 12,
            n_embd: 768,
            n_head: 12,
            vocab: 50257,
            seq: 1024,
            batch: 8,
        });
    }
    let c = RunConfig::preset(&name).with_context(|| {
        format!(
            "unknown --preset {name:?}; expected one of {}",
            PRESETS.join(", ")
        )
    })?;
    Ok(Preset {
        name,
        n_layer: c.model.n_layer,
        n_embd: c.model.n_embd,
        n_head: c.model.n_head,
        vocab: 256,
        seq: c.train.seq,
        batch: c.train.batch,
    })
}

#[derive(Clone, Debug)]
pub struct TrainBenchOptions {
    pub preset: String,
    pub batch: Option<usize>,
    pub seq: Option<usize>,
    /// Timed steps (the median is reported).
    pub steps: usize,
    /// Untimed steps first (pipeline compilation, first-use allocations).
    pub warmup: usize,
    pub timer: Timer,
    /// Also time every graph step on its own (a throwaway executor).
    pub profile: bool,
    pub seed: u64,
    /// Attention kernels of the step.
    pub attention: AttentionImpl,
}

/// Memory of the training step, in bytes.
#[derive(Clone, Debug, Serialize)]
pub struct TrainMemory {
    /// High-water mark of Kiln's buffer pool since the device was opened
    /// (every tensor; not uniforms, readback or query buffers).
    pub pool_peak_bytes: u64,
    /// Pool bytes the trainer holds (allocated while building it).
    pub trainer_bytes: u64,
    /// Activations and temporaries as the memory plan places them (shared slots).
    pub activations_planned_bytes: u64,
    /// The same tensors with one buffer each.
    pub activations_naive_bytes: u64,
    /// Graph tensors outside the plan: parameters, their gradients, inputs, outputs.
    pub persistent_bytes: u64,
    /// AdamW's first and second moments.
    pub optimizer_state_bytes: u64,
}

/// Time of one kind of graph step in `--profile`.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileRow {
    pub kernel: String,
    pub steps: usize,
    pub ms: f64,
    pub gflops: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub preset: Preset,
    pub batch: usize,
    pub seq: usize,
    /// `fused` or `unfused`.
    pub attention: &'static str,
    pub params: usize,
    pub timer: &'static str,
    pub warmup_steps: usize,
    pub steps: usize,
    pub ms_per_step: f64,
    pub min_ms_per_step: f64,
    pub samples_ms: Vec<f64>,
    pub tokens_per_s: f64,
    /// Host time to record the step's command buffer (median), and per dispatch.
    pub cpu_encode_ms: f64,
    pub cpu_encode_us_per_dispatch: f64,
    /// Process CPU time per timed step (Linux): on a CPU adapter, the work
    /// of the step whatever else loads the machine.
    pub cpu_ms_per_step: Option<f64>,
    /// Host time of the whole `train_step` call (token upload, optimizer
    /// uniforms, encoding, submit), median.
    pub cpu_step_call_ms: f64,
    pub dispatches_per_step: usize,
    /// FLOPs of the graph's steps (forward + backward; nominal for
    /// non-matmul kernels; the optimizer not counted).
    pub gflop_per_step: f64,
    pub gflops: f64,
    pub pct_peak_flops: Option<f64>,
    pub memory: TrainMemory,
    /// Loss after an extra step with readback (a sanity check: ≈ ln V at the start).
    pub loss: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<ProfileRow>>,
}

/// Runs the benchmark. `log` receives progress lines.
pub fn bench_train(
    gpu: &Gpu,
    o: &TrainBenchOptions,
    peak: &Peak,
    log: &mut dyn FnMut(&str),
) -> Result<TrainReport> {
    let p = preset(&o.preset)?;
    let batch = o.batch.unwrap_or(p.batch);
    let seq = o.seq.unwrap_or(p.seq);
    if batch == 0 || seq == 0 {
        bail!("--batch and --seq must be at least 1");
    }
    let m = model::for_run(
        "gpt2",
        &ModelDims {
            n_layer: p.n_layer,
            n_head: p.n_head,
            n_embd: p.n_embd,
            n_positions: seq.max(p.seq),
            vocab_size: p.vocab,
            ..Default::default()
        },
    )?;
    let shapes = model::param_shapes(m.as_ref())?;
    let params: usize = shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    let timer = if o.timer == Timer::Timestamp && !gpu.has_timestamps() {
        Timer::Wall
    } else {
        o.timer
    };
    log(&format!(
        "train {}: {} layers, C {}, {} heads, V {}, B {batch}, T {seq}: {:.2}M parameters, {:?} attention",
        p.name,
        p.n_layer,
        p.n_embd,
        p.n_head,
        p.vocab,
        params as f64 / 1e6,
        o.attention
    ));
    // Every parameter must fit the adapter's limits: check before spending
    // seconds on initialising 124M values.
    for (name, shape) in &shapes {
        gpu.check_tensor_size(shape, DType::F32).with_context(|| {
            format!(
                "{} (B {batch}, T {seq}) cannot run on {}: parameter {name}",
                p.name,
                gpu.info().name
            )
        })?;
    }
    let live0 = gpu.pool_stats().live_bytes;
    let init = model::init_params(m.as_ref(), o.seed)?;
    let layout = m.input_specs(Dims { batch, seq });
    let mut trainer = Trainer::new(
        gpu,
        m.clone(),
        &OptimizerConfig::default(),
        &layout,
        &init,
        &TrainerOptions {
            attention: o.attention,
            ..Default::default()
        },
    )
    .with_context(|| {
        format!(
            "building the {} training step (B {batch}, T {seq}) on {}",
            p.name,
            gpu.info().name
        )
    })?;
    drop(init);
    let trainer_bytes = gpu.pool_stats().live_bytes.saturating_sub(live0);
    let mut rng = Rng::new(o.seed ^ 0x70c3);
    let n = batch * seq;
    let tokens: Vec<i32> = (0..n + 1)
        .map(|_| rng.below(p.vocab as u64) as i32)
        .collect();
    let micro = vec![Batch::new()
        .with_i32("input_ids", &[batch, seq], tokens[..n].to_vec())
        .with_i32("targets", &[batch, seq], tokens[1..].to_vec())];
    let bracket = match timer {
        Timer::Timestamp => Some(Bracket::new(gpu)?),
        Timer::Wall => None,
    };
    let (mut gpu_ms, mut encode_ms, mut call_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut cpu_s = None;
    for i in 0..o.warmup + o.steps.max(1) {
        if i == o.warmup {
            cpu_s = process_cpu_s();
        }
        gpu.wait_idle()?;
        let t0 = Instant::now();
        let mut t_begin = None;
        let mut t_end = None;
        trainer.train_step_wrapped(
            &micro,
            false,
            &mut |enc| {
                t_begin = Some(Instant::now());
                if let Some(b) = &bracket {
                    b.begin(enc);
                }
            },
            &mut |enc| {
                t_end = Some(Instant::now());
                if let Some(b) = &bracket {
                    b.end(enc);
                }
            },
        )?;
        let t_call = t0.elapsed();
        gpu.wait_idle()?;
        let wall = t0.elapsed();
        gpu.check_errors()?;
        let ms = match &bracket {
            Some(b) => b.read_ms(gpu)?,
            None => wall.as_secs_f64() * 1e3,
        };
        let enc = match (t_begin, t_end) {
            (Some(a), Some(b)) => (b - a).as_secs_f64() * 1e3,
            _ => f64::NAN,
        };
        if i >= o.warmup {
            gpu_ms.push(ms);
            encode_ms.push(enc);
            call_ms.push(t_call.as_secs_f64() * 1e3);
        }
        log(&format!(
            "  step {}{}: {ms:.2} ms ({}), encode {enc:.2} ms",
            i + 1,
            if i < o.warmup { " (warm-up)" } else { "" },
            timer.name()
        ));
    }
    let cpu_ms_per_step = cpu_s
        .zip(process_cpu_s())
        .map(|(a, b)| (b - a) * 1e3 / gpu_ms.len().max(1) as f64);
    // One more step with the loss read back, as a sanity check.
    let stats = trainer
        .train_step(&micro, true)?
        .context("the trainer returned no statistics")?;
    let loss = pollster::block_on(stats.get(gpu))?.loss;
    if !loss.is_finite() {
        bail!("the training step produced a non-finite loss ({loss})");
    }

    let exec = trainer.executor();
    let gflop_per_step = exec.graph.steps.iter().map(|s| s.flops as f64).sum::<f64>() / 1e9;
    let dispatches = trainer.dispatches_per_step();
    let (ms, min_ms) = median_min(&gpu_ms);
    let (enc, _) = median_min(&encode_ms);
    let (call, _) = median_min(&call_ms);
    let gflops = gflop_per_step / (ms / 1e3);
    let memory = TrainMemory {
        pool_peak_bytes: gpu.pool_stats().peak_bytes,
        trainer_bytes,
        activations_planned_bytes: exec.plan.planned_bytes(),
        activations_naive_bytes: naive_bytes(&exec.graph),
        persistent_bytes: persistent_bytes(&exec.graph),
        optimizer_state_bytes: 2 * 4 * params as u64,
    };
    let profile = if o.profile {
        log("  profiling every graph step on its own (throwaway executor)…");
        let built = model::build(
            m.as_ref(),
            &layout,
            &BuildOptions {
                training: true,
                attention: o.attention,
                ..Default::default()
            },
        )?;
        let scratch = Executor::new(gpu, built.graph, &trainer.params)?;
        let iters = if gpu.is_cpu() { 1 } else { 5 };
        let shares = profile_steps(gpu, &scratch, iters)?;
        Some(
            shares
                .into_iter()
                .map(|s| ProfileRow {
                    kernel: s.name,
                    steps: s.steps,
                    ms: s.ms,
                    gflops: s.gflop / (s.ms / 1e3),
                })
                .collect(),
        )
    } else {
        None
    };
    Ok(TrainReport {
        preset: p.clone(),
        batch,
        seq,
        attention: match o.attention {
            AttentionImpl::Fused => "fused",
            AttentionImpl::Unfused => "unfused",
        },
        params,
        timer: timer.name(),
        warmup_steps: o.warmup,
        steps: gpu_ms.len(),
        ms_per_step: ms,
        min_ms_per_step: min_ms,
        samples_ms: gpu_ms,
        tokens_per_s: n as f64 / (ms / 1e3),
        cpu_encode_ms: enc,
        cpu_encode_us_per_dispatch: enc * 1e3 / dispatches.max(1) as f64,
        cpu_ms_per_step,
        cpu_step_call_ms: call,
        dispatches_per_step: dispatches,
        gflop_per_step,
        gflops,
        pct_peak_flops: peak.percent(gflops, 0.0).0,
        memory,
        loss,
        profile,
    })
}
