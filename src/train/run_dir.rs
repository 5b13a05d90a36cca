//! A training run's directory: which files make a checkpoint, saving one as
//! a transaction ([`crate::io::ckpt_store`]), finding the one to resume
//! from (including runs written before checkpoints were transactions, with
//! every file at the top of the directory), and what `--overwrite` removes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::checkpoint::{model_files, optimizer_file, CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE};
use super::config::RunConfig;
use super::resume::DataFingerprint;
use super::trainer::Trainer;
use crate::data::tokenizer::Tokenizer;
use crate::io::ckpt_store::{self, SaveFile, SaveOptions, CHECKPOINTS_DIR};

pub use super::checkpoint::STATE_FILE;
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const CURVE_FILE: &str = "loss.svg";
pub const RUN_CONFIG_FILE: &str = "run.toml";
pub const TOKENIZER_DIR: &str = "tokenizer";

/// What `trainer_state.json` records: enough to resume exactly.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: u64,
    pub adamw_t: u32,
    pub seed: u64,
    pub tokens_seen: u64,
    pub best_val_loss: Option<f32>,
    /// Steps whose update was skipped because the loss or gradient was not
    /// finite (`--on-nan skip`).
    #[serde(default)]
    pub nan_skipped: u32,
    /// Size and checksum of the text the run trains on.
    #[serde(default)]
    pub data: Option<DataFingerprint>,
    /// Early stopping and `--keep-best`: the best validation score so far
    /// (accuracy, else −loss), its step, and evaluations since.
    #[serde(default)]
    pub best: Option<BestSoFar>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BestSoFar {
    pub score: f64,
    pub step: u64,
    pub evals_since: u64,
}

/// The folder `--keep-best` keeps the best evaluation's model in (itself a
/// checkpoint store: `best/model.safetensors`, `best/config.json`, …).
pub const BEST_DIR: &str = "best";

/// Saves the trainer's current weights (with the tokenizer and companion
/// files, no optimizer state) as the one checkpoint of `out/best`.
pub fn save_best(
    trainer: &Trainer,
    step: u64,
    tok: Option<&dyn Tokenizer>,
    extra: &[SaveFile],
    out: &Path,
) -> Result<PathBuf> {
    let params = pollster::block_on(crate::model::download(trainer.gpu(), &trainer.params))?;
    let mut files: Vec<SaveFile> = model_files(trainer.model.as_ref(), &params)?;
    files.extend(companion_files(tok, extra)?);
    let view = view_names(tok, extra)?;
    let view: Vec<&str> = view.iter().map(String::as_str).collect();
    ckpt_store::save(
        &out.join(BEST_DIR),
        step,
        &files,
        &SaveOptions {
            keep: 1,
            view: &view,
            obsolete: &[],
        },
    )
}

/// Where a run resumes from.
#[derive(Clone, Debug)]
pub struct Resumable {
    /// The checkpoint directory (or the run itself, in the older layout).
    pub dir: PathBuf,
    /// Files at the top of the run directory, from before checkpoints were
    /// transactions.
    pub legacy: bool,
}

/// The checkpoint to resume `out` from; None when it has none. An error
/// when checkpoints exist but none is complete (the reasons are listed).
pub fn find(out: &Path) -> Result<Option<Resumable>> {
    if ckpt_store::has_checkpoints(out) {
        let c = ckpt_store::current(out)?.expect("has checkpoints");
        return Ok(Some(Resumable {
            dir: c.dir,
            legacy: false,
        }));
    }
    if out.join(STATE_FILE).is_file() {
        return Ok(Some(Resumable {
            dir: out.to_path_buf(),
            legacy: true,
        }));
    }
    Ok(None)
}

/// Decides what `out` holds and what to do with it: the checkpoint to
/// resume from (with `resume`), or a fresh start (refusing to clobber an
/// existing run or model without `overwrite`, removing it with).
pub fn open(out: &Path, resume: bool, overwrite: bool) -> Result<Option<Resumable>> {
    ckpt_store::clean_leftovers(out);
    let existing = existing_entries(out);
    if resume {
        let found = find(out).with_context(|| {
            format!(
                "--resume: {} cannot be resumed; start over with --overwrite",
                out.display()
            )
        })?;
        return match found {
            Some(r) => Ok(Some(r)),
            None if existing.is_empty() => bail!(
                "--resume: no checkpoint in {} (no run has been trained there)",
                out.display()
            ),
            None => bail!(
                "--resume: no complete checkpoint in {} (it holds {}, but the run saved no \
                 checkpoint before it stopped); start over with --overwrite",
                out.display(),
                existing.join(", ")
            ),
        };
    }
    if !existing.is_empty() {
        if !overwrite {
            let what = if find(out).ok().flatten().is_some() || existing.contains(&METRICS_FILE) {
                "a training run"
            } else {
                "a model or other Kiln files"
            };
            bail!(
                "{} already holds {what} ({}); pass --resume to continue it or --overwrite to \
                 replace it (or choose another --out)",
                out.display(),
                existing.join(", ")
            );
        }
        remove_run(out)?;
    }
    Ok(None)
}

/// Files and directories Kiln writes into a run directory.
const RUN_ENTRIES: &[&str] = &[
    CHECKPOINTS_DIR,
    STATE_FILE,
    MODEL_FILE,
    CONFIG_FILE,
    OPTIMIZER_FILE,
    TOKENIZER_DIR,
    METRICS_FILE,
    RUN_CONFIG_FILE,
    CURVE_FILE,
];

/// The Kiln (or Hugging Face) files `out` already holds.
pub fn existing_entries(out: &Path) -> Vec<&'static str> {
    RUN_ENTRIES
        .iter()
        .copied()
        .filter(|e| out.join(e).exists())
        .collect()
}

/// `--overwrite`: removes every file a run keeps in `out` (nothing else), so
/// no part of the old run can mix with the new one.
pub fn remove_run(out: &Path) -> Result<()> {
    for e in RUN_ENTRIES {
        let p = out.join(e);
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else if p.exists() {
            std::fs::remove_file(&p)
        } else {
            continue;
        };
        r.with_context(|| format!("--overwrite: cannot remove {}", p.display()))?;
    }
    Ok(())
}

/// Reads a checkpoint's trainer state.
pub fn load_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    parse_state(&text).with_context(|| format!("{} is corrupt", path.display()))
}

pub fn parse_state(text: &str) -> Result<TrainerState> {
    Ok(serde_json::from_str(text)?)
}

/// The run config a checkpoint was trained with.
pub fn load_run_config(dir: &Path) -> Result<RunConfig> {
    RunConfig::from_toml_file(&dir.join(RUN_CONFIG_FILE))
        .context("resuming needs the run's own run.toml")
}

/// Checks that the optimizer state matches the trainer state, with a way out.
pub fn check_consistent(r: &Resumable, state: &TrainerState, adamw_t: u32) -> Result<()> {
    if adamw_t == state.adamw_t {
        return Ok(());
    }
    if r.legacy {
        bail!(
            "{}: the optimizer state is at step {adamw_t} but {STATE_FILE} at step {}: a save \
             was interrupted in a run directory written before Kiln's checkpoints were \
             transactions, so this run cannot continue exactly. Its weights still load for \
             sample and eval; to train again start over with --overwrite (or use another --out)",
            r.dir.display(),
            state.adamw_t
        );
    }
    bail!(
        "{}: the optimizer state is at step {adamw_t} but {STATE_FILE} at step {}; the \
         checkpoint's manifest verified, so it was written that way; start over with --overwrite",
        r.dir.display(),
        state.adamw_t
    )
}

/// Files of a checkpoint besides the model's, the optimizer's and the
/// trainer's: the tokenizer (in `tokenizer/`, and as Hugging Face's
/// `tokenizer.json` & co. at the top where it has that form) and `extra`
/// (an image model's `preprocessor_config.json`).
pub fn companion_files(tok: Option<&dyn Tokenizer>, extra: &[SaveFile]) -> Result<Vec<SaveFile>> {
    let mut files = extra.to_vec();
    if let Some(tok) = tok {
        for (name, bytes) in tok.files()? {
            files.push((format!("{TOKENIZER_DIR}/{name}"), bytes));
        }
        if let Ok(hf) = tok.to_hugging_face() {
            files.extend(crate::data::hf_tokenizer::pretrained_files(&hf)?);
        }
    }
    Ok(files)
}

/// The files of a checkpoint shown at the top of the run directory: the
/// weights, config.json, the tokenizer and the companions (what Hugging
/// Face's `from_pretrained` loads).
pub fn view_names(tok: Option<&dyn Tokenizer>, extra: &[SaveFile]) -> Result<Vec<String>> {
    let mut v = vec![MODEL_FILE.to_string(), CONFIG_FILE.to_string()];
    v.extend(companion_files(tok, extra)?.into_iter().map(|(n, _)| n));
    Ok(v)
}

/// Saves one checkpoint of `trainer` (weights, optimizer, trainer state,
/// run config, tokenizer, `extra` files) as one transaction, keeping the
/// newest `keep`.
pub fn save_checkpoint(
    trainer: &Trainer,
    state: &TrainerState,
    cfg: &RunConfig,
    tok: Option<&dyn Tokenizer>,
    extra: &[SaveFile],
    out: &Path,
) -> Result<PathBuf> {
    let gpu = trainer.gpu();
    let params = pollster::block_on(crate::model::download(gpu, &trainer.params))?;
    let m = pollster::block_on(crate::model::download(gpu, &trainer.opt.m))?;
    let v = pollster::block_on(crate::model::download(gpu, &trainer.opt.v))?;
    let mut files: Vec<SaveFile> = model_files(trainer.model.as_ref(), &params)?;
    files.push(optimizer_file(&m, &v, state.adamw_t)?);
    let mut st = serde_json::to_vec_pretty(state)?;
    st.push(b'\n');
    files.push((STATE_FILE.into(), st));
    files.push((RUN_CONFIG_FILE.into(), cfg.to_toml().into_bytes()));
    files.extend(companion_files(tok, extra)?);
    let view = view_names(tok, extra)?;
    let view: Vec<&str> = view.iter().map(String::as_str).collect();
    ckpt_store::save(
        out,
        state.step,
        &files,
        &SaveOptions {
            keep: cfg.train.keep_checkpoints,
            view: &view,
            obsolete: &[OPTIMIZER_FILE, STATE_FILE],
        },
    )
}
