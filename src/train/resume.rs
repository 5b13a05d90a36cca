//! What `--resume` continues with: the run's recorded settings, with the
//! flags given now applied where a running training may change them
//! (length, schedule, cadences, optimizer hyper-parameters) and refused
//! where it may not (model shape, tokenizer, data, seed, batch shape),
//! unless they equal the recorded value. Also the data fingerprint that
//! tells a resumed run its text changed.

use std::collections::BTreeSet;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::RunConfig;

/// One setting: its key in the run config, the flag that sets it (None:
/// only a --config file does), and whether a resumed run may change it.
pub struct Setting {
    pub key: &'static str,
    pub flag: Option<&'static str>,
    pub may_change: bool,
}

const fn s(key: &'static str, flag: Option<&'static str>, may_change: bool) -> Setting {
    Setting {
        key,
        flag,
        may_change,
    }
}

/// Every setting of a run config.
pub const SETTINGS: &[Setting] = &[
    s("model.arch", Some("--model"), false),
    s("model.n_layer", Some("--layers"), false),
    s("model.n_head", Some("--heads"), false),
    s("model.n_embd", Some("--embd"), false),
    s("model.n_positions", None, false),
    s("model.attention", Some("--attention"), true),
    s("model.patch_size", Some("--patch"), false),
    s("model.projection_dim", None, false),
    s("model.objective", Some("--objective"), false),
    s("model.mask_ratio", Some("--mask-ratio"), false),
    s("data.path", Some("--data"), false),
    s("data.tokenizer", Some("--tokenizer"), false),
    s("data.bpe_vocab", Some("--bpe-vocab"), false),
    s("data.val_fraction", Some("--val-fraction"), false),
    s("data.builtin_bytes", None, false),
    s("data.classes", Some("--classes"), false),
    s("data.label_fraction", Some("--label-fraction"), false),
    s("data.per_class", Some("--per-class"), false),
    s("data.test_fraction", Some("--test-fraction"), false),
    s("train.batch", Some("--batch"), false),
    s("train.seq", Some("--seq"), false),
    s("train.steps", Some("--steps"), true),
    s("train.grad_accum", Some("--grad-accum"), false),
    s("train.seed", Some("--seed"), false),
    s("train.eval_every", Some("--eval-every"), true),
    s("train.eval_batches", Some("--eval-batches"), true),
    s("train.log_every", Some("--log-every"), true),
    s("train.checkpoint_every", Some("--checkpoint-every"), true),
    s("train.sample_tokens", Some("--sample-tokens"), true),
    s("train.keep_checkpoints", Some("--keep-checkpoints"), true),
    s("train.on_nan", Some("--on-nan"), true),
    // Only a new run reads it (a resumed one has its own weights).
    s("train.init_from", Some("--init-from"), true),
    s("train.freeze", Some("--freeze"), false),
    s("train.scratch", Some("--scratch"), true),
    s("train.patience", Some("--patience"), true),
    s("train.keep_best", Some("--keep-best"), false),
    s("train.replace_head", Some("--replace-head"), true),
    s("optimizer.lr", Some("--lr"), true),
    s("optimizer.min_lr", Some("--min-lr"), true),
    s("optimizer.warmup_steps", Some("--warmup"), true),
    s("optimizer.decay_steps", None, true),
    s("optimizer.beta1", None, true),
    s("optimizer.beta2", None, true),
    s("optimizer.eps", None, true),
    s("optimizer.weight_decay", Some("--weight-decay"), true),
    s("optimizer.grad_clip", Some("--grad-clip"), true),
    s("optimizer.decay_all", None, true),
    s("optimizer.head_lr", Some("--head-lr"), true),
    s("optimizer.layer_decay", Some("--layer-decay"), true),
    s("distill.teacher", Some("--teacher"), false),
    s("distill.alpha", Some("--alpha"), false),
    s("distill.tau", Some("--tau"), false),
];

pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The keys (`section.field`) a TOML config file sets.
pub fn keys_in_toml(text: &str) -> Result<BTreeSet<String>> {
    let v: toml::Table = toml::from_str(text)?;
    let mut out = BTreeSet::new();
    for (section, fields) in &v {
        if let Some(t) = fields.as_table() {
            for k in t.keys() {
                out.insert(format!("{section}.{k}"));
            }
        }
    }
    Ok(out)
}

fn get<'a>(v: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let (section, field) = key.split_once('.')?;
    v.get(section)?.as_table()?.get(field)
}

fn show(v: Option<&toml::Value>) -> String {
    match v {
        Some(toml::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "(unset)".into(),
    }
}

/// The settings a resumed run continues with: `recorded` (the checkpoint's)
/// with every key in `given` taken from `requested` where it may change.
/// A fixed setting given with a different value is refused, naming it.
/// When `train.steps` changes and the cosine followed the old length, the
/// schedule (`optimizer.decay_steps`) follows the new one.
pub fn merge_for_resume(
    recorded: &RunConfig,
    requested: &RunConfig,
    given: &BTreeSet<String>,
) -> Result<RunConfig> {
    let to_table = |c: &RunConfig| -> Result<toml::Table> {
        toml::Table::try_from(c).map_err(|e| anyhow!("run config: {e}"))
    };
    let (rec, req) = (to_table(recorded)?, to_table(requested)?);
    let mut out = rec.clone();
    for key in given {
        let s = setting(key).ok_or_else(|| anyhow!("unknown setting {key}"))?;
        let (old, new) = (get(&rec, key), get(&req, key));
        if old == new {
            continue;
        }
        let name = match s.flag {
            Some(f) => format!("{f} ({key})"),
            None => key.to_string(),
        };
        if !s.may_change {
            bail!(
                "--resume: {name} is {} in this run and cannot change when resuming (it would \
                 change the model, the tokenizer or the data the run trains on); drop it, or \
                 start a new run with --overwrite or another --out",
                show(old)
            );
        }
        let (section, field) = key.split_once('.').expect("keys have a section");
        let table = out
            .get_mut(section)
            .and_then(|t| t.as_table_mut())
            .ok_or_else(|| anyhow!("run config has no [{section}]"))?;
        match new {
            Some(v) => table.insert(field.to_string(), v.clone()),
            None => table.remove(field),
        };
    }
    let mut merged: RunConfig = out
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("merging settings for --resume: {e}"))?;
    if given.contains("train.steps")
        && !given.contains("optimizer.decay_steps")
        && recorded.optimizer.decay_steps == recorded.train.steps
    {
        merged.optimizer.decay_steps = merged.train.steps;
    }
    merged.validate().context("--resume")?;
    Ok(merged)
}

/// The size and CRC-32 of a run's text, recorded with each checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    pub bytes: u64,
    pub crc32: String,
}

impl DataFingerprint {
    pub fn of(text: &str) -> Self {
        Self::of_bytes(text.as_bytes())
    }
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.len() as u64,
            crc32: crate::io::ckpt_store::crc32_hex(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn every_config_key_has_a_rule() {
        let t = toml::Table::try_from(RunConfig::default()).unwrap();
        for (section, fields) in &t {
            for k in fields.as_table().unwrap().keys() {
                let key = format!("{section}.{k}");
                assert!(setting(&key).is_some(), "{key} has no resume rule");
            }
        }
        // n_positions and data.path are None by default: listed anyway.
        assert!(setting("model.n_positions").is_some() && setting("data.path").is_some());
    }

    #[test]
    fn changeable_flags_apply_and_fixed_ones_are_refused() {
        let rec = RunConfig::default_for(true);
        let mut req = rec.clone();
        req.train.steps = 4000;
        req.train.checkpoint_every = 7;
        req.model.n_embd = 128; // not given: ignored
        let m = merge_for_resume(
            &rec,
            &req,
            &given(&["train.steps", "train.checkpoint_every"]),
        )
        .unwrap();
        assert_eq!(m.train.steps, 4000);
        assert_eq!(
            m.optimizer.decay_steps, 4000,
            "the schedule follows --steps"
        );
        assert_eq!(m.train.checkpoint_every, 7);
        assert_eq!(m.model.n_embd, rec.model.n_embd);
        let e = merge_for_resume(&rec, &req, &given(&["model.n_embd"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--embd") && e.contains("64") && e.contains("cannot change"),
            "{e}"
        );
        // The same value as recorded is fine.
        req.model.n_embd = rec.model.n_embd;
        merge_for_resume(&rec, &req, &given(&["model.n_embd"])).unwrap();
        // Bad values given on resume are still validated.
        req.optimizer.min_lr = 1.0;
        assert!(merge_for_resume(&rec, &req, &given(&["optimizer.min_lr"])).is_err());
    }
}
