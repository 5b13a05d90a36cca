//! The browser's training session: Kiln's platform-neutral run session
//! (`kiln::train::Session`, the same one `kiln train` drives) on the
//! built-in corpus or a pasted text with the byte tokenizer, plus sampling.
//! No blocking call and no file access. The JavaScript class `WebTrainer`
//! wraps it; the native tests drive it directly to produce the losses the
//! browser must reproduce.

use anyhow::{bail, ensure, Result};
use kiln::data::corpus::builtin_corpus;
use kiln::data::tokenizer::{ByteTokenizer, Tokenizer};
use kiln::train::sample::{generate_on_gpu, SampleOptions};
use kiln::train::{PendingStats, RunConfig, StepStats};
use kiln::Gpu;

/// The model presets the page offers, smallest first (`RunConfig::preset`).
pub const PRESETS: [&str; 2] = RunConfig::PRESETS;

/// Most optimizer steps one [`Session::submit`] call queues; the page asks
/// for a few at a time so it can redraw between them.
pub const MAX_STEPS_PER_CALL: u32 = 1000;

/// The run configuration of a preset: `kiln::train::RunConfig::preset`.
pub fn preset(name: &str) -> Result<RunConfig> {
    RunConfig::preset(name)
}

/// A model being trained on one text.
pub struct Session {
    preset: String,
    tokens: Vec<u32>,
    /// Loss floor (nats/token) of the built-in corpus; `None` for user text.
    floor: Option<f64>,
    run: kiln::train::Session,
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
        let tokens = ByteTokenizer.encode(&text);
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
        let run = kiln::train::Session::language_model(
            gpu,
            cfg,
            tokens.clone(),
            ByteTokenizer.vocab_size(),
            None,
        )?;
        Ok(Self {
            preset: preset_name.to_string(),
            tokens,
            floor,
            run,
            samples: 0,
        })
    }

    /// Starts over from step 0 with freshly initialised parameters (the same
    /// seed, so the run repeats exactly).
    pub fn reset(&mut self) -> Result<()> {
        self.run = kiln::train::Session::language_model(
            &self.run.gpu().clone(),
            self.run.cfg.clone(),
            self.tokens.clone(),
            ByteTokenizer.vocab_size(),
            None,
        )?;
        self.samples = 0;
        Ok(())
    }

    /// Queues `n` optimizer steps (one submit each) and returns the last
    /// one's statistics as a pending read. Nothing here waits for the GPU.
    pub fn submit(&mut self, n: u32) -> Result<PendingStats> {
        ensure!(
            (1..=MAX_STEPS_PER_CALL).contains(&n),
            "steps per call must be in 1..={MAX_STEPS_PER_CALL}, got {n}"
        );
        self.run.submit(n)
    }

    /// Runs `n` optimizer steps and returns the statistics of the last.
    pub async fn steps(&mut self, n: u32) -> Result<StepStats> {
        let pending = self.submit(n)?;
        pending.get(self.run.gpu()).await
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
        let opts = SampleOptions {
            max_new_tokens: n_tokens,
            temperature,
            top_k: 40,
            seed: self.run.cfg.train.seed.wrapping_add(self.samples),
        };
        self.samples += 1;
        let ids = generate_on_gpu(
            self.run.gpu(),
            self.run.model.as_ref(),
            &self.run.trainer.params,
            &ByteTokenizer.encode(prompt),
            &opts,
        )
        .await?;
        Ok(ByteTokenizer.decode(&ids))
    }

    pub fn gpu(&self) -> &Gpu {
        self.run.gpu()
    }
    pub fn preset(&self) -> &str {
        &self.preset
    }
    pub fn config(&self) -> &RunConfig {
        &self.run.cfg
    }
    /// The platform-neutral run underneath.
    pub fn run(&self) -> &kiln::train::Session {
        &self.run
    }
    /// Optimizer steps completed.
    pub fn step(&self) -> u64 {
        self.run.step()
    }
    pub fn tokens_per_step(&self) -> u64 {
        self.run.tokens_per_step()
    }
    /// The built-in corpus's entropy rate (the best loss reachable), if used.
    pub fn loss_floor(&self) -> Option<f64> {
        self.floor
    }
    /// The longest prompt the model sees at once.
    pub fn context_length(&self) -> usize {
        self.run
            .model
            .context_length()
            .unwrap_or(self.run.cfg.train.seq)
    }

    /// A prompt from the start of the validation text, as `kiln train` picks
    /// the prompt of its final sample: the first non-empty line of the first
    /// seq/2 tokens, at most 40 characters.
    pub fn default_prompt(&self) -> String {
        let text = ByteTokenizer.decode(&self.run.prompt_tokens);
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
        let t = &self.run.cfg.train;
        let params: usize = self.run.trainer.params.values().map(|p| p.numel()).sum();
        format!(
            "{} ({:.2}M params) · batch {} × {} · {} on {}",
            self.run.model.describe(),
            params as f64 / 1e6,
            t.batch,
            t.seq,
            if self.floor.is_some() {
                "built-in corpus"
            } else {
                "your text"
            },
            self.run.data.describe(),
        )
    }
}
