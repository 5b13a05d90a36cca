//! A whole training run from the command line: data → tokenizer → model →
//! steps with progress, validation, metrics, checkpoints, a loss curve and a
//! sample. Resuming continues bit-exactly where the last checkpoint left off.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::checkpoint::{self, STATE_FILE};
use super::config::RunConfig;
use super::sample::{generate_on_gpu, SampleOptions};
use super::session::Session;
use super::trainer::{PendingStats, StepStats, Trainer};
use crate::data::corpus::{builtin_corpus, load_text};
use crate::data::tokenizer::{load_tokenizer, tokenizer_by_name, Tokenizer};
use crate::io::atomic::write_json_atomic;
use crate::io::metrics::{read_metrics, MetricsLog};
use crate::plot::{write_line_chart, ChartOptions, HLine, Series, PALETTE};
use crate::runtime::Gpu;

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CURVE_FILE: &str = "loss.svg";
pub const RUN_CONFIG_FILE: &str = "run.toml";
pub const TOKENIZER_DIR: &str = "tokenizer";

/// What `trainer_state.json` records: enough to resume exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: u64,
    pub adamw_t: u32,
    pub seed: u64,
    pub tokens_seen: u64,
    pub best_val_loss: Option<f32>,
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub out: PathBuf,
    /// Continue from the checkpoint in `out`.
    pub resume: bool,
    /// Replace an existing run in `out`.
    pub overwrite: bool,
    /// Stop after this step even if `train.steps` is larger (to test resume).
    pub stop_after: Option<u64>,
    pub quiet: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub steps: u64,
    pub final_train_loss: Option<f32>,
    pub final_val_loss: Option<f32>,
    /// Entropy rate of the built-in corpus, when it was used (nats/token).
    pub loss_floor: Option<f64>,
    pub tokens_per_second: f64,
    pub seconds: f64,
    pub sample: String,
    pub out: PathBuf,
}

/// The text of a run, tokenized.
struct RunData {
    tokens: Vec<u32>,
    tok: Box<dyn Tokenizer>,
    /// Loss floor in nats per token, where known (built-in corpus, bytes).
    floor: Option<f64>,
}

/// Loads the text and tokenizer a run uses.
fn prepare_data(cfg: &RunConfig, out: &Path, resume: bool) -> Result<RunData> {
    let (text, floor) = match &cfg.data.path {
        Some(p) => (load_text(p)?, None),
        None => {
            let (t, f) = builtin_corpus(cfg.data.builtin_bytes);
            (t, Some(f))
        }
    };
    let tok_dir = out.join(TOKENIZER_DIR);
    let tok = if resume && tok_dir.is_dir() {
        load_tokenizer(&tok_dir)?
    } else {
        tokenizer_by_name(&cfg.data.tokenizer, Some(&text), cfg.data.bpe_vocab)?
    };
    tok.save(&tok_dir)?;
    let tokens = tok.encode(&text);
    // The floor is per byte; with a byte tokenizer that is per token.
    let floor = floor.filter(|_| tok.kind() == "byte");
    Ok(RunData { tokens, tok, floor })
}

struct Progress {
    start: Instant,
    quiet: bool,
    tty: bool,
    total: u64,
}

impl Progress {
    fn show(&self, s: &StepStats, tokens_per_s: f64, val: Option<f32>) {
        if self.quiet {
            return;
        }
        let done = s.step as f64 / self.total.max(1) as f64;
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = if done > 0.0 {
            elapsed * (1.0 - done) / done
        } else {
            0.0
        };
        let width = 24;
        let filled = (done * width as f64).round() as usize;
        let bar: String = "█".repeat(filled.min(width)) + &"·".repeat(width - filled.min(width));
        let val = val.map(|v| format!(" val {v:.4}")).unwrap_or_default();
        let val = val
            + &s.metrics
                .iter()
                .map(|(n, m)| format!(" {n} {m:.3}"))
                .collect::<String>();
        let line = format!(
            "[{bar}] step {}/{} loss {:.4}{val} | {:.0} tok/s | lr {:.2e} | eta {:.0}s",
            s.step, self.total, s.loss, tokens_per_s, s.lr, eta
        );
        if self.tty {
            print!("\r{line}\x1b[K");
            let _ = std::io::stdout().flush();
        } else {
            println!("{line}");
        }
    }
    fn finish(&self) {
        if self.tty && !self.quiet {
            println!();
        }
    }
}

/// Runs (or resumes) a training run described by `cfg` into `opts.out`.
pub fn run_training(gpu: &Gpu, cfg: &RunConfig, opts: &RunOptions) -> Result<RunSummary> {
    let out = &opts.out;
    let has_run = out.join(STATE_FILE).is_file();
    if has_run && !opts.resume && !opts.overwrite {
        bail!(
            "{} already holds a training run; pass --resume to continue it or --overwrite to replace it",
            out.display()
        );
    }
    if opts.resume && !has_run {
        bail!(
            "--resume: no checkpoint in {} ({} is missing)",
            out.display(),
            STATE_FILE
        );
    }
    let resume = opts.resume && has_run;
    let cfg = if resume {
        RunConfig::from_toml_file(&out.join(RUN_CONFIG_FILE))
            .context("resuming needs the run's own run.toml")?
    } else {
        cfg.clone()
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    crate::io::atomic::write_atomic(&out.join(RUN_CONFIG_FILE), cfg.to_toml().as_bytes())?;

    let RunData { tokens, tok, floor } = prepare_data(&cfg, out, resume)?;
    let from = if resume {
        Some(checkpoint::load_model(out)?)
    } else {
        None
    };
    let attention = cfg.attention_for(gpu)?;
    let t = cfg.train.clone();
    let mut session = Session::language_model(gpu, cfg.clone(), tokens, tok.vocab_size(), from)?;
    let model = session.model.clone();
    let n_params: usize = session.trainer.params.values().map(|p| p.numel()).sum();
    let mut state = TrainerState {
        step: 0,
        adamw_t: 0,
        seed: t.seed,
        tokens_seen: 0,
        best_val_loss: None,
    };
    let mut metrics = if resume {
        state = serde_json::from_str(&std::fs::read_to_string(out.join(STATE_FILE))?)
            .with_context(|| format!("{} is corrupt", out.join(STATE_FILE).display()))?;
        let (m, v, adamw_t) = checkpoint::load_optimizer(out)?;
        ensure!(
            adamw_t == state.adamw_t,
            "optimizer and trainer state disagree on the step"
        );
        session.trainer.opt.load_state(gpu, &m, &v, adamw_t)?;
        session.trainer.step = state.step;
        let mut log = MetricsLog::open_append(&out.join(METRICS_FILE))?;
        log.truncate_after_step(state.step)?;
        log
    } else {
        MetricsLog::create(&out.join(METRICS_FILE))?
    };
    if !opts.quiet {
        println!(
            "kiln: {} · {} ({:.2}M params, {:?} attention) · {} tokenizer · {}{}",
            gpu.describe(),
            model.describe(),
            n_params as f64 / 1e6,
            attention,
            tok.kind(),
            session.data.describe(),
            if resume {
                format!(" · resuming at step {}", state.step)
            } else {
                String::new()
            }
        );
        if let Some(f) = floor {
            println!("kiln: built-in corpus, entropy floor {f:.4} nats/token");
        }
    }

    let val_batches = session.val_batches()?;
    let end = opts.stop_after.map_or(t.steps, |s| s.min(t.steps));
    let tokens_per_step = session.tokens_per_step();
    let progress = Progress {
        start: Instant::now(),
        quiet: opts.quiet,
        tty: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        total: t.steps,
    };
    let started = Instant::now();
    let start_step = state.step;
    let mut pending: Option<PendingStats> = None;
    let mut last_train: Option<f32> = None;
    let mut last_val: Option<f32> = None;

    let report = |p: PendingStats, val: Option<f32>, metrics: &mut MetricsLog| -> Result<f32> {
        let s = pollster::block_on(p.get(gpu))?;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let tps = (s.step - start_step) as f64 * tokens_per_step as f64 / secs;
        progress.show(&s, tps, val);
        let mut row = json!({
            "step": s.step, "train_loss": s.loss, "grad_norm": s.grad_norm, "lr": s.lr,
            "tokens_per_s": tps, "elapsed_s": secs,
        });
        for (name, v) in &s.metrics {
            row[format!("train_{name}")] = json!(v);
        }
        metrics.log(&row)?;
        Ok(s.loss)
    };

    while state.step < end {
        let step = state.step;
        let last = step + 1 == end;
        let want = last || (step + 1).is_multiple_of(t.log_every.max(1));
        let p = session.submit_step(want)?;
        state.step += 1;
        state.tokens_seen += tokens_per_step;
        // Read the previous step's statistics only now, so the GPU already
        // has the next step queued and never waits for the CPU.
        if let Some(prev) = pending.take() {
            last_train = Some(report(prev, None, &mut metrics)?);
        }
        pending = p;
        let eval_due = last || (t.eval_every > 0 && state.step.is_multiple_of(t.eval_every));
        if eval_due && !val_batches.is_empty() {
            if let Some(prev) = pending.take() {
                last_train = Some(report(prev, None, &mut metrics)?);
            }
            let e = pollster::block_on(session.evaluate(&val_batches))?;
            let v = e.loss;
            last_val = Some(v);
            state.best_val_loss = Some(state.best_val_loss.map_or(v, |b| b.min(v)));
            let mut row = json!({ "step": state.step, "val_loss": v });
            for (name, m) in &e.metrics {
                row[format!("val_{name}")] = json!(m);
            }
            metrics.log(&row)?;
        }
        let ckpt_due =
            last || (t.checkpoint_every > 0 && state.step.is_multiple_of(t.checkpoint_every));
        if ckpt_due {
            if let Some(prev) = pending.take() {
                last_train = Some(report(prev, last_val, &mut metrics)?);
            }
            state.adamw_t = session.trainer.opt.t;
            save_checkpoint(&session.trainer, &state, out)?;
            plot_curve(out, floor)?;
        }
    }
    if let Some(prev) = pending.take() {
        last_train = Some(report(prev, last_val, &mut metrics)?);
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let run_tokens = (state.step - start_step) * tokens_per_step;

    let sample = if t.sample_tokens > 0 && model.context_length().is_some() {
        let prompt = first_line(&tok.decode(&session.prompt_tokens));
        let opts_s = SampleOptions {
            max_new_tokens: t.sample_tokens,
            temperature: 0.8,
            top_k: 40,
            seed: t.seed,
        };
        let ids = pollster::block_on(generate_on_gpu(
            gpu,
            model.as_ref(),
            &session.trainer.params,
            &tok.encode(&prompt),
            &opts_s,
        ))?;
        format!("{prompt}{}", tok.decode(&ids))
    } else {
        String::new()
    };
    Ok(RunSummary {
        steps: state.step,
        final_train_loss: last_train,
        final_val_loss: last_val,
        loss_floor: floor,
        tokens_per_second: run_tokens as f64 / seconds.max(1e-9),
        seconds,
        sample,
        out: out.clone(),
    })
}

fn first_line(s: &str) -> String {
    let line = s.split('\n').find(|l| !l.trim().is_empty()).unwrap_or("");
    line.chars().take(40).collect()
}

/// Downloads parameters and optimizer state and writes the checkpoint
/// (trainer state last, so an interrupted save leaves the previous one valid).
pub fn save_checkpoint(trainer: &Trainer, state: &TrainerState, out: &Path) -> Result<()> {
    let gpu = trainer.gpu();
    let params = pollster::block_on(crate::model::download(gpu, &trainer.params))?;
    let m = pollster::block_on(crate::model::download(gpu, &trainer.opt.m))?;
    let v = pollster::block_on(crate::model::download(gpu, &trainer.opt.v))?;
    checkpoint::save_model(out, trainer.model.as_ref(), &params)?;
    checkpoint::save_optimizer(out, &m, &v, state.adamw_t)?;
    write_json_atomic(&out.join(STATE_FILE), state)
}

/// Draws train and validation loss from `metrics.jsonl` into `loss.svg`.
pub fn plot_curve(out: &Path, floor: Option<f64>) -> Result<()> {
    let rows = read_metrics(&out.join(METRICS_FILE))?;
    let pick = |key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
            .collect()
    };
    let series = vec![
        Series {
            name: "train".into(),
            points: pick("train_loss"),
            color: PALETTE[0],
        },
        Series {
            name: "validation".into(),
            points: pick("val_loss"),
            color: PALETTE[1],
        },
    ];
    let hlines: Vec<HLine> = floor
        .map(|f| HLine {
            value: f,
            label: format!("entropy floor {f:.3}"),
            color: [120, 120, 120],
        })
        .into_iter()
        .collect();
    write_line_chart(
        &out.join(CURVE_FILE),
        "Kiln training",
        "step",
        "loss (nats/token)",
        &series,
        &hlines,
        &ChartOptions::default(),
    )
}
