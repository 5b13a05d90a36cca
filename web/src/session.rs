//! A training session that runs the same on native adapters and in the
//! browser: presets, data, the [`Trainer`] and sampling, with no blocking
//! call and no file access. The JavaScript class `WebTrainer` wraps it; the
//! native tests drive it directly to produce the losses the browser must
//! reproduce.
//!
//! Data, initialisation, batches and the learning-rate schedule follow the
//! CLI run loop (`kiln::train::run::run_training`) exactly, so a session and
//! `kiln train` with the same [`RunConfig`] see the same losses.

use anyhow::{bail, ensure, Result};
use kiln::data::corpus::builtin_corpus;
use kiln::data::loader::TokenDataset;
use kiln::data::tokenizer::{ByteTokenizer, Tokenizer};
use kiln::model::gpt::GptConfig;
use kiln::train::sample::{generate_on_gpu, SampleOptions};
use kiln::train::{Batch, PendingStats, RunConfig, StepStats, Trainer};
use kiln::Gpu;

/// The model presets the page offers, smallest first.
pub const PRESETS: [&str; 2] = ["tiny", "small"];

/// Most optimizer steps one [`Session::submit`] call queues; the page asks
/// for a few at a time so it can redraw between them.
pub const MAX_STEPS_PER_CALL: u32 = 1000;

/// The run configuration of a preset (always the byte tokenizer):
///
/// - `tiny`: what `kiln train` uses by default on a CPU adapter — GPT with 2
///   layers, 4 heads, 64 dims, context 64, batch 8, AdamW 3e-3 → 3e-4 over
///   300 steps, on 400 kB of the built-in Markov corpus (≈ 0.1M parameters).
/// - `small`: 4 layers, 4 heads, 128 dims, context 128, batch 8, 1000 steps
///   (≈ 0.9M parameters), for a real GPU.
pub fn preset(name: &str) -> Result<RunConfig> {
    let mut c = RunConfig::default_for(true);
    match name {
        "tiny" => {}
        "small" => {
            c.model.n_layer = 4;
            c.model.n_head = 4;
            c.model.n_embd = 128;
            c.train.seq = 128;
            c.train.steps = 1000;
            c.optimizer.decay_steps = 1000;
            c.data.builtin_bytes = 1_000_000;
        }
        other => bail!(
            "unknown preset {other:?}; expected one of {}",
            PRESETS.join(", ")
        ),
    }
    Ok(c)
}

/// The model a run configuration describes, as `kiln::train::run::model_config`
/// builds it (that function is native-only, with the CLI).
pub fn model_config(cfg: &RunConfig, vocab: usize) -> GptConfig {
    GptConfig::new(
        vocab,
        cfg.model.n_positions.unwrap_or(cfg.train.seq),
        cfg.model.n_embd,
        cfg.model.n_head,
        cfg.model.n_layer,
    )
}

/// A GPT being trained on one text.
pub struct Session {
    gpu: Gpu,
    preset: String,
    cfg: RunConfig,
    model: GptConfig,
    data: TokenDataset,
    /// Loss floor (nats/token) of the built-in corpus; `None` for user text.
    floor: Option<f64>,
    trainer: Trainer,
    /// Samples drawn since the last reset (each gets its own seed).
    samples: u64,
}

impl Session {
    /// A session for a preset, on the built-in corpus (`text = None`) or on
    /// the given text with the byte tokenizer.
    pub fn new(gpu: &Gpu, preset_name: &str, text: Option<&str>) -> Result<Self> {
        let cfg = preset(preset_name)?;
        Self::with_config(gpu, preset_name, cfg, text)
    }

    /// A session for any byte-tokenizer configuration. `cfg.data.path` is
    /// ignored: the text is `text`, or the built-in corpus when `None`.
    pub fn with_config(
        gpu: &Gpu,
        preset_name: &str,
        cfg: RunConfig,
        text: Option<&str>,
    ) -> Result<Self> {
        ensure!(
            cfg.data.tokenizer == "byte",
            "the web session uses the byte tokenizer; got tokenizer {:?}",
            cfg.data.tokenizer
        );
        let (text, floor) = match text {
            Some(t) => {
                ensure!(!t.trim().is_empty(), "the training text is empty");
                (t.to_string(), None)
            }
            None => {
                let (t, f) = builtin_corpus(cfg.data.builtin_bytes);
                (t, Some(f))
            }
        };
        let tok = ByteTokenizer;
        let tokens = tok.encode(&text);
        let (seq, vf) = (cfg.train.seq, cfg.data.val_fraction);
        // TokenDataset::split's own checks, said in terms of pasted text.
        let fits = |n: usize| {
            let n_val = (n as f64 * vf).round() as usize;
            n.saturating_sub(n_val) > seq && (vf == 0.0 || n_val >= 2)
        };
        if !fits(tokens.len()) {
            let need = (1..1 << 20).find(|&n| fits(n)).unwrap_or(usize::MAX);
            bail!(
                "the text is too short: {} bytes, and this model needs at least {need} \
                 ({} of context plus one for the next-byte target, after holding out {:.0}% \
                 for validation); paste more text",
                tokens.len(),
                seq,
                vf * 100.0
            );
        }
        let data = TokenDataset::split(tokens, vf)?;
        let model = model_config(&cfg, tok.vocab_size());
        let trainer = build_trainer(gpu, &cfg, &model)?;
        Ok(Self {
            gpu: gpu.clone(),
            preset: preset_name.to_string(),
            cfg,
            model,
            data,
            floor,
            trainer,
            samples: 0,
        })
    }

    /// Starts over from step 0 with freshly initialised parameters (the same
    /// seed, so the run repeats exactly).
    pub fn reset(&mut self) -> Result<()> {
        self.trainer = build_trainer(&self.gpu, &self.cfg, &self.model)?;
        self.samples = 0;
        Ok(())
    }

    /// The micro-batches of optimizer step `step`, as the CLI run loop draws them.
    pub fn micro_batches(&self, step: u64) -> Result<Vec<Batch>> {
        let t = &self.cfg.train;
        (0..t.grad_accum as u64)
            .map(|i| {
                self.data
                    .train_batch(t.seed, step * t.grad_accum as u64 + i, t.batch, t.seq)
            })
            .collect()
    }

    /// Queues `n` optimizer steps (one submit each) and returns the last
    /// one's statistics as a pending read. Nothing here waits for the GPU.
    pub fn submit(&mut self, n: u32) -> Result<PendingStats> {
        ensure!(
            (1..=MAX_STEPS_PER_CALL).contains(&n),
            "steps per call must be in 1..={MAX_STEPS_PER_CALL}, got {n}"
        );
        let mut last = None;
        for i in 0..n {
            let micro = self.micro_batches(self.trainer.step)?;
            last = self.trainer.train_step(&micro, i + 1 == n)?;
        }
        Ok(last.expect("the last step asks for its statistics"))
    }

    /// Runs `n` optimizer steps and returns the statistics of the last.
    pub async fn steps(&mut self, n: u32) -> Result<StepStats> {
        let pending = self.submit(n)?;
        pending.get(&self.gpu).await
    }

    /// Continues `prompt` by `n_tokens` bytes from the current parameters
    /// (top-k 40; temperature 0 = greedy) and returns only the new text.
    pub async fn sample(
        &mut self,
        prompt: &str,
        n_tokens: usize,
        temperature: f32,
    ) -> Result<String> {
        ensure!(
            !prompt.is_empty(),
            "the sample prompt is empty; give at least one character"
        );
        ensure!(
            (0.0..=10.0).contains(&temperature),
            "temperature must be in [0, 10], got {temperature}"
        );
        ensure!(
            n_tokens <= 4096,
            "at most 4096 tokens per sample, got {n_tokens}"
        );
        let tok = ByteTokenizer;
        let opts = SampleOptions {
            max_new_tokens: n_tokens,
            temperature,
            top_k: 40,
            seed: self.cfg.train.seed.wrapping_add(self.samples),
        };
        self.samples += 1;
        let ids = generate_on_gpu(
            &self.gpu,
            &self.model,
            &self.trainer.params,
            &tok.encode(prompt),
            &opts,
        )
        .await?;
        Ok(tok.decode(&ids))
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
    pub fn preset(&self) -> &str {
        &self.preset
    }
    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }
    pub fn model(&self) -> &GptConfig {
        &self.model
    }
    pub fn data(&self) -> &TokenDataset {
        &self.data
    }
    /// Optimizer steps completed.
    pub fn step(&self) -> u64 {
        self.trainer.step
    }
    pub fn tokens_per_step(&self) -> u64 {
        let t = &self.cfg.train;
        (t.batch * t.seq * t.grad_accum) as u64
    }
    /// The built-in corpus's entropy rate (the best loss reachable), if used.
    pub fn loss_floor(&self) -> Option<f64> {
        self.floor
    }

    /// A prompt from the start of the validation text, as `kiln train` picks
    /// the prompt of its final sample: the first non-empty line of the first
    /// seq/2 tokens, at most 40 characters.
    pub fn default_prompt(&self) -> String {
        let n = self.data.val.len().min(self.cfg.train.seq / 2);
        let text = ByteTokenizer.decode(&self.data.val[..n]);
        let line = text
            .split('\n')
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let p: String = line.chars().take(40).collect();
        if p.is_empty() {
            "\n".to_string()
        } else {
            p
        }
    }

    /// One line describing the model and data, for the page.
    pub fn describe(&self) -> String {
        let m = &self.model;
        let t = &self.cfg.train;
        format!(
            "GPT {} layers, {} heads, {} dims, context {}, vocab {} ({:.2}M params) · batch {} × {} · {} on {} train / {} val bytes",
            m.n_layer,
            m.n_head,
            m.n_embd,
            m.n_positions,
            m.vocab_size,
            m.num_params() as f64 / 1e6,
            t.batch,
            t.seq,
            if self.floor.is_some() { "built-in corpus" } else { "your text" },
            self.data.train.len(),
            self.data.val.len()
        )
    }
}

/// The trainer exactly as `run_training` builds it for a fresh run.
fn build_trainer(gpu: &Gpu, cfg: &RunConfig, model: &GptConfig) -> Result<Trainer> {
    let t = &cfg.train;
    let mut opt = cfg.optimizer.clone();
    if opt.decay_steps == 0 {
        opt.decay_steps = t.steps;
    }
    Trainer::with_attention(
        gpu,
        model,
        &opt,
        t.batch,
        t.seq,
        t.grad_accum,
        &model.init_params(t.seed),
        // Unfused on CPU adapters (SwiftShader, lavapipe), where it measured
        // faster; the fused kernels on real GPUs.
        cfg.attention_for(gpu)?,
    )
}
