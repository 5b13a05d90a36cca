//! A whole training run from the command line: data → tokenizer → model →
//! steps with progress, validation, metrics, checkpoints, a loss curve and a
//! sample. Resuming continues bit-exactly where the last checkpoint left off.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Serialize;
use serde_json::json;

use super::checkpoint;
use super::config::RunConfig;
use super::nan_guard::{locate_nonfinite, NanStatus, OnNan};
use super::resume::merge_for_resume;
use super::run_dir;
use super::sample::{generate_on_gpu, SampleOptions};
use super::session::Session;
use super::trainer::{PendingStats, StepStats, Trainer};
use crate::data::tokenizer::Tokenizer;
use crate::data::Batch;
use crate::io::ckpt_store;
use crate::io::metrics::{read_metrics, MetricsLog};
use crate::objective::{self, Prepared, Report};
use crate::plot::{write_line_chart, ChartOptions, HLine, Series, PALETTE};
use crate::runtime::Gpu;

pub use super::run_dir::{
    TrainerState, CURVE_FILE, METRICS_FILE, RUN_CONFIG_FILE, STATE_FILE, TOKENIZER_DIR,
};

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub out: PathBuf,
    /// Continue from the checkpoint in `out`.
    pub resume: bool,
    /// Replace an existing run in `out`.
    pub overwrite: bool,
    /// Stop after this step even if `train.steps` is larger (to test resume).
    pub stop_after: Option<u64>,
    pub quiet: bool,
    /// With `resume`: the settings (`section.field`) the user gave now; they
    /// replace the recorded ones where a resumed run may change them (see
    /// [`merge_for_resume`]). Empty: the run continues with its own.
    pub given: BTreeSet<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub steps: u64,
    pub final_train_loss: Option<f32>,
    pub final_val_loss: Option<f32>,
    /// A reference loss (value, what it is): the built-in corpus's entropy
    /// rate, the unigram baseline of masked tokens.
    pub loss_floor: Option<(f64, String)>,
    pub tokens_per_second: f64,
    /// What `tokens_per_second` counts: tokens, images or pairs.
    pub unit: &'static str,
    pub seconds: f64,
    /// What the run measured or produced after training: a text sample, a
    /// fill-mask example, test accuracy and its confusion matrix, zero-shot
    /// accuracy; `sample_title` names it.
    pub sample: String,
    pub sample_title: &'static str,
    pub out: PathBuf,
    /// Steps skipped because the loss or gradient was not finite.
    pub nan_skipped: u32,
    /// Stopped early by Ctrl-C (after saving a checkpoint).
    pub interrupted: bool,
}

struct Progress {
    quiet: bool,
    tty: bool,
    total: u64,
    unit: &'static str,
}

impl Progress {
    /// One progress line; `steps_per_s` is the current rate (see
    /// [`RateWindow`]), which gives the throughput shown and the ETA.
    fn show(&self, s: &StepStats, steps_per_s: f64, per_step: u64, val: Option<f32>) {
        if self.quiet {
            return;
        }
        let done = s.step as f64 / self.total.max(1) as f64;
        let tokens_per_s = steps_per_s * per_step as f64;
        let eta = if steps_per_s > 0.0 {
            self.total.saturating_sub(s.step) as f64 / steps_per_s
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
            "[{bar}] step {}/{} loss {:.4}{val} | {:.0} {}/s | lr {:.2e} | eta {:.0}s",
            s.step, self.total, s.loss, tokens_per_s, self.unit, s.lr, eta
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
    if !opts.resume {
        // Before --overwrite removes anything.
        cfg.validate()?;
    }
    let from = run_dir::open(&opts.out, opts.resume, opts.overwrite)?;
    let cfg = match &from {
        Some(r) => merge_for_resume(&run_dir::load_run_config(&r.dir)?, cfg, &opts.given)?,
        None => cfg.clone(),
    };
    cfg.validate()?;

    // A resumed run keeps its own tokenizer (never retrained).
    let mut tok_dir = from
        .as_ref()
        .map(|r| r.dir.join(TOKENIZER_DIR))
        .filter(|d| d.is_dir());
    // A student reads its data with its teacher's tokenizer.
    if let (None, Some(t)) = (&from, &cfg.distill.teacher) {
        ensure!(
            t.exists(),
            "--teacher {}: no such run or model directory",
            t.display()
        );
        tok_dir = objective::checkpoint_tokenizer(t)?;
    }
    // A fine-tuned model reads its data with the checkpoint's tokenizer.
    if let (None, Some(src)) = (&from, &cfg.train.init_from) {
        tok_dir = objective::checkpoint_tokenizer(src)?;
    }
    let data = objective::prepare(&cfg, tok_dir.as_deref())?;
    let (model, init) = match &from {
        Some(r) => checkpoint::load_model(&r.dir)?,
        None => {
            let m = objective::build_model(&cfg, &data)?;
            super::validate::check_model_size(m.as_ref())?;
            let mut init = crate::model::init_params(m.as_ref(), cfg.train.seed)?;
            if let Some(src) = cfg.train.init_from.as_ref().filter(|_| !cfg.train.scratch) {
                let note =
                    init_from_checkpoint(m.as_ref(), &mut init, src, cfg.train.replace_head)?;
                if !opts.quiet {
                    println!("kiln: {note}");
                }
            }
            (m, init)
        }
    };
    super::validate::check_model_size(model.as_ref())?;
    // Distillation: the student wrapped with the soft loss; the teacher
    // loaded as it was saved (frozen, forward only).
    let (model, teacher) = match &cfg.distill.teacher {
        None => (model, None),
        Some(t) => {
            let tdir =
                ckpt_store::resolve(t).with_context(|| format!("--teacher {}", t.display()))?;
            let (tm, tparams) = checkpoint::load_model(&tdir)
                .with_context(|| format!("--teacher {}", t.display()))?;
            let specs = tm.input_specs(crate::model::Dims { batch: 1, seq: 1 });
            if crate::model::distill::logits_shape(tm.as_ref(), &specs).is_err() {
                bail!(
                    "--teacher {}: a {} has no logits to distil; the teacher must be a language \
                     model or a classifier",
                    t.display(),
                    tm.architecture()
                );
            }
            let d = &cfg.distill;
            let student: Arc<dyn crate::model::Model> = Arc::new(
                crate::model::distill::Distilled::new(model, d.alpha, d.tau)?,
            );
            if !opts.quiet {
                println!(
                    "kiln: teacher {} from {} (frozen, forward only); loss (1 − {a})·CE + {a}·τ²·KL at τ {}",
                    tm.describe(),
                    tdir.display(),
                    d.tau,
                    a = d.alpha
                );
            }
            let spec = super::trainer::TeacherSpec {
                model: tm,
                params: tparams,
            };
            (student, Some(Arc::new(spec)))
        }
    };
    let Prepared {
        source,
        tok,
        floor,
        fingerprint,
        prompt,
        files,
        notes,
        report: after,
        ..
    } = data;
    let tok = tok.as_deref();
    let t = &cfg.train;
    let attention = cfg.attention_for(gpu)?;
    let mut session =
        Session::with_teacher(gpu, cfg.clone(), model.clone(), source, &init, teacher)?;
    session.prompt_tokens = prompt;
    let n_params: usize = session.trainer.params.values().map(|p| p.numel()).sum();
    if let Some(g) = &mut session.trainer.opt.guard {
        g.on_nan = t.on_nan;
    }
    let mut state = TrainerState {
        seed: t.seed,
        data: Some(fingerprint.clone()),
        ..Default::default()
    };
    let mut metrics = if let Some(r) = &from {
        state = run_dir::load_state(&r.dir)?;
        let (m, v, adamw_t) = checkpoint::load_optimizer(&r.dir)?;
        run_dir::check_consistent(r, &state, adamw_t)?;
        session.trainer.opt.load_state(gpu, &m, &v, adamw_t)?;
        session.trainer.step = state.step;
        if let Some(g) = &session.trainer.opt.guard {
            g.restore(gpu, state.nan_skipped)?;
        }
        match &state.data {
            Some(old) if *old != fingerprint => log::warn!(
                "the training text changed since this run began ({} bytes, CRC-32 {} then; {} \
                 bytes, CRC-32 {} now): continuing on the new text, so the run no longer \
                 reproduces an uninterrupted one",
                old.bytes,
                old.crc32,
                fingerprint.bytes,
                fingerprint.crc32
            ),
            _ => {}
        }
        state.data = Some(fingerprint.clone());
        if !r.legacy {
            let view = run_dir::view_names(tok, &files)?;
            let view: Vec<&str> = view.iter().map(String::as_str).collect();
            ckpt_store::update_view(out, &r.dir, &view)?;
        }
        let mut log = MetricsLog::open_append(&out.join(METRICS_FILE))?;
        log.truncate_after_step(state.step)?;
        log
    } else {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        MetricsLog::create(&out.join(METRICS_FILE))?
    };
    // A copy for people to read (each checkpoint holds its own), written
    // once every check has passed.
    crate::io::atomic::write_atomic(&out.join(RUN_CONFIG_FILE), cfg.to_toml().as_bytes())?;
    if !opts.quiet {
        println!(
            "kiln: {} · {} ({:.2}M params, {:?} attention) · {} · {}{}",
            gpu.describe(),
            model.describe(),
            n_params as f64 / 1e6,
            attention,
            tok.map_or("no tokenizer".to_string(), |t| format!(
                "{} tokenizer",
                t.kind()
            )),
            session.data.describe(),
            if from.is_some() {
                format!(" · resuming at step {}", state.step)
            } else {
                String::new()
            }
        );
        for n in &notes {
            println!("kiln: {n}");
        }
    }

    let val_batches = session.val_batches()?;
    let end = opts.stop_after.map_or(t.steps, |s| s.min(t.steps));
    let tokens_per_step = session.tokens_per_step();
    let progress = Progress {
        quiet: opts.quiet,
        tty: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        total: t.steps,
        unit: session.item_unit(),
    };
    let started = Instant::now();
    let start_step = state.step;
    let mut pending: Option<PendingStats> = None;
    let mut last_train: Option<f32> = None;
    let mut last_val: Option<f32> = None;
    let mut last_val_metrics = serde_json::Map::new();
    let mut saved_step = from.as_ref().map(|_| state.step);
    let mut interrupted = false;
    let mut stop_early = false;
    // A bad step in --on-nan stop mode: name it and the first non-finite
    // tensor (the guard kept the weights from before it), save nothing.
    let nan_stop = |session: &Session, nan: &NanStatus, saved: Option<u64>| -> anyhow::Error {
        let bad = nan.first_bad_step.unwrap_or(0);
        let culprit = session
            .micro_batches(bad.saturating_sub(1))
            .and_then(|micro: Vec<Batch>| {
                pollster::block_on(locate_nonfinite(
                    gpu,
                    model.as_ref(),
                    &session.trainer.params,
                    &micro,
                    attention,
                ))
            });
        let culprit = culprit.unwrap_or_else(|e| format!("unknown ({e:#})"));
        let kept = match saved {
            Some(s) => format!("the checkpoint of step {s} in {} is intact", out.display()),
            None => "no checkpoint had been saved".to_string(),
        };
        anyhow!(
            "step {bad}: the loss or gradient norm is not finite (NaN or infinite); first \
             non-finite tensor: {culprit}. Training stopped (--on-nan stop) and saved nothing \
             after it: {kept}. Lower --lr, lengthen --warmup or set --grad-clip, or pass \
             --on-nan skip to skip such steps"
        )
    };

    // The progress line's rate: the last few reports, not the run average
    // that includes shader compilation and evaluations.
    let rate = std::cell::RefCell::new(RateWindow::default());
    let report = |p: PendingStats,
                  trainer: &Trainer,
                  val: Option<f32>,
                  metrics: &mut MetricsLog|
     -> Result<StepStats> {
        let s = pollster::block_on(p.get(trainer.gpu()))?;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let tps = (s.step - start_step) as f64 * tokens_per_step as f64 / secs;
        let now = rate.borrow_mut().push(s.step, secs);
        let now = now.unwrap_or((s.step - start_step) as f64 / secs);
        progress.show(&s, now, tokens_per_step, val);
        let mut row = json!({
            "step": s.step, "train_loss": s.loss, "grad_norm": s.grad_norm, "lr": s.lr,
            "tokens_per_s": tps, "tokens_per_s_now": now * tokens_per_step as f64,
            "elapsed_s": secs,
        });
        for (name, v) in &s.metrics {
            row[format!("train_{name}")] = json!(v);
        }
        if s.nan.skipped > 0 {
            row["nan_skipped"] = json!(s.nan.skipped);
        }
        if s.nan.last_skipped {
            row["step_skipped"] = json!(true);
        }
        if let Some(rss) = crate::util::mem::host_rss_bytes() {
            row["host_rss_mb"] = json!(rss as f64 / 1e6);
        }
        row["gpu_pool_mb"] = json!(trainer.gpu().pool_stats().live_bytes as f64 / 1e6);
        metrics.log(&row)?;
        Ok(s)
    };
    let stop_on = t.on_nan == OnNan::Stop;

    while state.step < end {
        let step = state.step;
        let last = step + 1 == end;
        let want = last || (step + 1).is_multiple_of(t.log_every.max(1));
        let p = session.submit_step(want)?;
        state.step += 1;
        state.tokens_seen += tokens_per_step;
        // Read the previous step's statistics only now, so the GPU already
        // has the next step queued and never waits for the CPU.
        let mut seen: Vec<StepStats> = Vec::new();
        if let Some(prev) = pending.take() {
            seen.push(report(prev, &session.trainer, None, &mut metrics)?);
        }
        pending = p;
        if super::interrupt::requested() {
            interrupted = true;
        }
        let eval_due = last || (t.eval_every > 0 && state.step.is_multiple_of(t.eval_every));
        let ckpt_due = last
            || interrupted
            || (t.checkpoint_every > 0 && state.step.is_multiple_of(t.checkpoint_every));
        if eval_due || ckpt_due {
            if let Some(prev) = pending.take() {
                seen.push(report(prev, &session.trainer, last_val, &mut metrics)?);
            }
        }
        if let Some(s) = seen.last() {
            last_train = Some(s.loss);
            if stop_on && s.nan.first_bad_step.is_some() {
                return Err(nan_stop(&session, &s.nan, saved_step));
            }
        }
        if ckpt_due {
            // The guard's counters, whether or not statistics were read.
            let guard = session.trainer.opt.guard.as_ref().expect("guard");
            let nan = pollster::block_on(guard.status(gpu))?;
            if stop_on && nan.first_bad_step.is_some() {
                return Err(nan_stop(&session, &nan, saved_step));
            }
            state.nan_skipped = nan.skipped;
        }
        if eval_due && !val_batches.is_empty() {
            let e = pollster::block_on(session.evaluate(&val_batches))?;
            let v = e.loss;
            last_val = Some(v);
            state.best_val_loss = Some(state.best_val_loss.map_or(v, |b| b.min(v)));
            let mut row = json!({ "step": state.step, "val_loss": v });
            for (name, m) in &e.metrics {
                row[format!("val_{name}")] = json!(m);
                last_val_metrics.insert(format!("val_{name}"), json!(m));
            }
            metrics.log(&row)?;
            if t.keep_best || t.patience > 0 {
                // Accuracy where the model reports one, else the loss.
                let score = e
                    .metrics
                    .iter()
                    .find(|(n, _)| n == "accuracy")
                    .map_or(-(v as f64), |(_, a)| *a as f64);
                let improved = state.best.as_ref().is_none_or(|b| score > b.score);
                if improved {
                    state.best = Some(run_dir::BestSoFar {
                        score,
                        step: state.step,
                        evals_since: 0,
                    });
                    if t.keep_best {
                        run_dir::save_best(&session.trainer, state.step, tok, &files, out)?;
                    }
                } else if let Some(b) = &mut state.best {
                    b.evals_since += 1;
                    if t.patience > 0 && b.evals_since >= t.patience && !last {
                        stop_early = true;
                        if !opts.quiet {
                            progress.finish();
                            println!(
                                "kiln: early stop at step {}: no better validation score for {} \
                                 evaluations (best {:.4} at step {})",
                                state.step, b.evals_since, b.score, b.step
                            );
                        }
                    }
                }
            }
        }
        if ckpt_due || stop_early {
            state.adamw_t = session.trainer.opt.t;
            run_dir::save_checkpoint(&session.trainer, &state, &cfg, tok, &files, out)?;
            saved_step = Some(state.step);
            plot_curve(out, floor.as_ref())?;
        }
        if interrupted || stop_early {
            break;
        }
    }
    if let Some(prev) = pending.take() {
        let s = report(prev, &session.trainer, last_val, &mut metrics)?;
        last_train = Some(s.loss);
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let run_tokens = (state.step - start_step) * tokens_per_step;
    if state.nan_skipped > 0 && !opts.quiet {
        println!(
            "kiln: {} step(s) skipped because the loss or gradient was not finite (--on-nan skip)",
            state.nan_skipped
        );
    }

    // --keep-best: the reports measure the best evaluation's weights.
    if let (true, false, Some(b)) = (t.keep_best, interrupted, &state.best) {
        if b.step != state.step {
            let best = ckpt_store::resolve(&out.join(run_dir::BEST_DIR))?;
            let host =
                checkpoint::load_params_file(&best.join(checkpoint::MODEL_FILE), model.as_ref())?;
            for (name, data) in &host {
                if let Some(p) = session.trainer.params.get(name) {
                    p.write_f32(gpu, data)?;
                }
            }
        }
        if !opts.quiet {
            println!(
                "kiln: best validation score {:.4} at step {} (kept in {})",
                b.score,
                b.step,
                out.join(run_dir::BEST_DIR).display()
            );
        }
    }

    // What the objective measures after training (skipped when interrupted).
    let mut sample = String::new();
    let mut sample_title = "sample";
    let mut results = serde_json::Map::new();
    if !interrupted {
        let done = |e: anyhow::Error, what: &str| {
            log::warn!("no {what}: {e:#} (training and its checkpoint are complete)");
        };
        match (&after, tok) {
            (Report::Text, Some(_)) if model.context_length().is_some() && t.sample_tokens == 0 => {
            }
            (Report::Text, Some(tok)) if model.context_length().is_some() => {
                match final_sample(gpu, &session, tok, t.sample_tokens, t.seed) {
                    Ok(s) => sample = s,
                    Err(e) => done(e, "sample"),
                }
            }
            (Report::Text, Some(tok)) if t.sample_tokens > 0 => {
                sample_title = "fill-mask";
                match objective::text::fill_mask_example(gpu, &session, tok, t.sample_tokens) {
                    Ok(s) => sample = s,
                    Err(e) => done(e, "fill-mask example"),
                }
            }
            (Report::Classes(r), _) => {
                let res = pollster::block_on(objective::images::class_report(
                    gpu,
                    model.clone(),
                    &session.trainer.params,
                    r,
                    attention,
                ))?;
                sample_title = "test set";
                sample = format!(
                    "test accuracy {:.4} on {} {}\n{}",
                    res.accuracy,
                    res.images,
                    session.item_unit(),
                    res.table()
                );
                results.insert("test_accuracy".into(), json!(res.accuracy));
                results.insert("test".into(), serde_json::to_value(&res)?);
            }
            (Report::Regression(r), _) => {
                let res = pollster::block_on(objective::molecules::regression_report(
                    gpu,
                    model.clone(),
                    &session.trainer.params,
                    r,
                    attention,
                ))?;
                sample_title = "test set";
                sample = res.summary();
                results.insert("test_mae".into(), json!(res.mae));
                results.insert("test".into(), serde_json::to_value(&res)?);
            }
            (Report::TextRegression(r), _) => {
                let res = pollster::block_on(objective::text::regression_report(
                    gpu,
                    model.clone(),
                    &session.trainer.params,
                    r,
                    attention,
                ))?;
                sample_title = "test set";
                sample = res.summary();
                results.insert("test_mae".into(), json!(res.mae));
                results.insert("test".into(), serde_json::to_value(&res)?);
            }
            (Report::ZeroShot(r), _) => {
                let res = pollster::block_on(objective::images::zero_shot(
                    gpu,
                    model.clone(),
                    &session.trainer.params,
                    r,
                    attention,
                ))?;
                sample_title = "zero-shot";
                sample = res.summary();
                results.insert("zero_shot_top1".into(), json!(res.top1));
                results.insert("zero_shot".into(), serde_json::to_value(&res)?);
            }
            _ => {}
        }
        // The run's final figures in one file, for scripts and comparisons.
        results.insert("architecture".into(), json!(model.architecture()));
        results.insert("step".into(), json!(state.step));
        if let Some(b) = &state.best {
            results.insert("best_step".into(), json!(b.step));
            results.insert("best_val_score".into(), json!(b.score));
            results.insert("early_stopped".into(), json!(stop_early));
        }
        results.insert("final_train_loss".into(), json!(last_train));
        results.insert("final_val_loss".into(), json!(last_val));
        results.extend(last_val_metrics);
        if let Some((v, label)) = &floor {
            results.insert("baseline".into(), json!({ "loss": v, "what": label }));
        }
        if !sample.is_empty() {
            results.insert(sample_title.into(), json!(sample));
        }
        crate::io::atomic::write_json_atomic(&out.join(RESULTS_FILE), &results)?;
    }
    Ok(RunSummary {
        steps: state.step,
        final_train_loss: last_train,
        final_val_loss: last_val,
        loss_floor: floor,
        tokens_per_second: run_tokens as f64 / seconds.max(1e-9),
        unit: session.item_unit(),
        seconds,
        sample,
        sample_title,
        out: out.clone(),
        nan_skipped: state.nan_skipped,
        interrupted,
    })
}

/// Steps per second over the last [`RateWindow::LEN`] reports.
#[derive(Default)]
struct RateWindow {
    points: std::collections::VecDeque<(u64, f64)>,
}

impl RateWindow {
    const LEN: usize = 10;

    /// Adds (step, seconds) and returns the rate over the window (`None`
    /// until it spans two reports).
    fn push(&mut self, step: u64, secs: f64) -> Option<f64> {
        self.points.push_back((step, secs));
        if self.points.len() > Self::LEN {
            self.points.pop_front();
        }
        let (&(s0, t0), &(s1, t1)) = (self.points.front()?, self.points.back()?);
        (s1 > s0 && t1 > t0).then(|| (s1 - s0) as f64 / (t1 - t0))
    }
}

/// Replaces the freshly initialised parameters `init` of `model` by those a
/// checkpoint (a run or model directory) holds under the same name: the
/// start of fine-tuning. A shared name with another shape is an error (the
/// checkpoint's sizes or vocabulary differ); parameters only the new model
/// has (a new head) keep their initialisation. Returns a one-line account.
pub fn init_from_checkpoint(
    model: &dyn crate::model::Model,
    init: &mut crate::model::HostParams,
    src: &Path,
    replace_head: bool,
) -> Result<String> {
    ensure!(
        src.exists(),
        "--init-from {}: no such run or model directory",
        src.display()
    );
    let dir = ckpt_store::resolve(src)?;
    let (pre, weights) =
        checkpoint::load_model(&dir).with_context(|| format!("--init-from {}", src.display()))?;
    let shapes: std::collections::BTreeMap<String, Vec<usize>> =
        crate::model::param_shapes(model)?.into_iter().collect();
    let pre_shapes: std::collections::BTreeMap<String, Vec<usize>> =
        crate::model::param_shapes(pre.as_ref())?
            .into_iter()
            .collect();
    let mut loaded = Vec::new();
    let mut replaced = Vec::new();
    for (name, data) in init.iter_mut() {
        let Some(w) = weights.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let (want, have) = (&shapes[name], &pre_shapes[name]);
        if want != have && crate::model::is_head(model, name) {
            // A task head with another number of labels: a new head, when
            // asked (as Hugging Face's ignore_mismatched_sizes).
            ensure!(
                replace_head,
                "--from {}: the checkpoint's head {name} is {have:?} ({} labels) and this data \
                 has {} classes: pass --replace-head to train a new head in its place",
                src.display(),
                have.first().copied().unwrap_or(0),
                want.first().copied().unwrap_or(0)
            );
            replaced.push(format!("{name} {have:?} → {want:?}"));
            continue;
        }
        ensure!(
            want == have,
            "--init-from {}: {name} is {have:?} in the {} there and {want:?} in this {}: the \
             checkpoint's sizes or feature vocabulary differ from this run's (use the same \
             --embd/--layers, and data with the same vocabulary)",
            src.display(),
            pre.architecture(),
            model.architecture()
        );
        data.clone_from(&w.1);
        loaded.push(name.clone());
    }
    ensure!(
        !loaded.is_empty(),
        "--init-from {}: the {} there shares no parameter with this {} (is it a checkpoint of \
         the same family?)",
        src.display(),
        pre.architecture(),
        model.architecture()
    );
    let fresh: Vec<&str> = init
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !loaded.iter().any(|l| l == n))
        .collect();
    let unused = weights.len() - loaded.len();
    let replaced = if replaced.is_empty() {
        String::new()
    } else {
        format!(" (replacing the head: {})", replaced.join(", "))
    };
    Ok(format!(
        "initialised {} of {} parameters from {} ({}); new: {}{replaced}; {unused} of its tensors unused",
        loaded.len(),
        init.len(),
        dir.display(),
        pre.architecture(),
        if fresh.is_empty() {
            "none".to_string()
        } else {
            fresh.join(", ")
        }
    ))
}

/// The sample printed after training: a prompt from the start of the
/// validation text (or the training text when there is none), at least one
/// token, at most half a context.
fn final_sample(
    gpu: &Gpu,
    session: &Session,
    tok: &dyn Tokenizer,
    tokens: usize,
    seed: u64,
) -> Result<String> {
    let source = &session.prompt_tokens;
    ensure!(
        !source.is_empty(),
        "the text has no tokens to start a sample from"
    );
    let mut prompt = first_line(&tok.decode(source));
    let mut ids = tok.encode(&prompt);
    if ids.is_empty() {
        ids = source[..1].to_vec();
        prompt = tok.decode(&ids);
    }
    let opts_s = SampleOptions {
        max_new_tokens: tokens,
        temperature: 0.8,
        top_k: 40,
        seed,
    };
    let out = pollster::block_on(generate_on_gpu(
        gpu,
        session.model.as_ref(),
        &session.trainer.params,
        &ids,
        &opts_s,
    ))?;
    Ok(format!("{prompt}{}", tok.decode(&out)))
}

fn first_line(s: &str) -> String {
    let line = s.split('\n').find(|l| !l.trim().is_empty()).unwrap_or("");
    line.chars().take(40).collect()
}

/// The measurements after training (test accuracy, zero-shot top-1).
pub const RESULTS_FILE: &str = "results.json";
/// Train and validation accuracy, for models that report one.
pub const ACCURACY_CURVE_FILE: &str = "accuracy.svg";

/// Draws train and validation loss from `metrics.jsonl` into `loss.svg`
/// (and accuracy into `accuracy.svg` when the model reports one).
pub fn plot_curve(out: &Path, floor: Option<&(f64, String)>) -> Result<()> {
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
        .map(|(f, label)| HLine {
            value: *f,
            label: label.clone(),
            color: [120, 120, 120],
        })
        .into_iter()
        .collect();
    write_line_chart(
        &out.join(CURVE_FILE),
        "Kiln training",
        "step",
        "loss (nats)",
        &series,
        &hlines,
        &ChartOptions::default(),
    )?;
    let (train_acc, val_acc) = (pick("train_accuracy"), pick("val_accuracy"));
    if !train_acc.is_empty() || !val_acc.is_empty() {
        let acc = vec![
            Series {
                name: "train".into(),
                points: train_acc,
                color: PALETTE[0],
            },
            Series {
                name: "validation".into(),
                points: val_acc,
                color: PALETTE[1],
            },
        ];
        write_line_chart(
            &out.join(ACCURACY_CURVE_FILE),
            "Kiln training: accuracy",
            "step",
            "accuracy",
            &acc,
            &[],
            &ChartOptions::default(),
        )?;
    }
    Ok(())
}
