//! Checks of a run's settings before anything is allocated: every bad value
//! is named with its flag and config key, and sizes are checked without
//! overflow, so no setting can make Kiln panic or hang.

use anyhow::{bail, ensure, Result};

use super::config::RunConfig;
use crate::model::Model;

/// Micro-batches per optimizer step at most: each has its own staging
/// buffers on the GPU. A larger effective batch: raise --batch.
pub const MAX_GRAD_ACCUM: usize = 1024;

/// Tokens in one micro-batch at most (token ids are i32 on the GPU).
pub const MAX_BATCH_TOKENS: u64 = 1 << 31;

/// Parameters, gradients and two AdamW moments, in bytes, at most: the
/// memory of the largest GPUs (192 GiB).
pub const MAX_TRAIN_STATE_BYTES: u64 = 192 << 30;

fn positive_finite(v: f32) -> bool {
    v.is_finite() && v > 0.0
}

fn non_negative_finite(v: f32) -> bool {
    v.is_finite() && v >= 0.0
}

/// The batch shape of a micro-batch: both at least 1, the product bounded.
pub fn check_batch_shape(batch: usize, seq: usize) -> Result<()> {
    ensure!(
        batch >= 1,
        "--batch (train.batch) must be at least 1, got {batch}"
    );
    ensure!(seq >= 1, "--seq (train.seq) must be at least 1, got {seq}");
    let tokens = (batch as u128) * (seq as u128);
    ensure!(
        tokens <= MAX_BATCH_TOKENS as u128,
        "--batch {batch} × --seq {seq} = {tokens} tokens per micro-batch, more than Kiln \
         supports ({MAX_BATCH_TOKENS}); use a smaller batch or sequence"
    );
    Ok(())
}

/// The model's training state (16 bytes per parameter: the parameter, its
/// gradient and AdamW's two moments) against [`MAX_TRAIN_STATE_BYTES`].
/// The model's own config checks bound its sizes first.
pub fn check_model_size(model: &dyn Model) -> Result<()> {
    let params: u128 = crate::model::param_shapes(model)?
        .iter()
        .map(|(_, s)| s.iter().map(|&d| d as u128).product::<u128>())
        .sum();
    let bytes = params * 16;
    ensure!(
        bytes <= MAX_TRAIN_STATE_BYTES as u128,
        "{} has {params} parameters: training needs {:.1} GiB for them, their gradients and \
         AdamW's moments, more than the largest GPUs hold ({} GiB); use fewer --layers or a \
         smaller --embd",
        model.describe(),
        bytes as f64 / (1u64 << 30) as f64,
        MAX_TRAIN_STATE_BYTES >> 30
    );
    Ok(())
}

impl RunConfig {
    /// Checks every setting that can be checked before the data is read.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        ensure!(
            m.n_layer >= 1,
            "--layers (model.n_layer) must be at least 1, got {}",
            m.n_layer
        );
        ensure!(
            m.n_head >= 1,
            "--heads (model.n_head) must be at least 1, got {}",
            m.n_head
        );
        ensure!(
            m.n_embd >= 1,
            "--embd (model.n_embd) must be at least 1, got {}",
            m.n_embd
        );
        ensure!(
            m.n_embd.is_multiple_of(m.n_head),
            "--embd {} (model.n_embd) must be divisible by --heads {} (model.n_head)",
            m.n_embd,
            m.n_head
        );
        // A transformer layer holds about 12·n_embd² parameters: refuse
        // sizes no machine could train before anything is built.
        let per_layer = (m.n_embd as u128).saturating_pow(2).saturating_mul(12);
        ensure!(
            (m.n_layer as u128).saturating_mul(per_layer) <= crate::model::MAX_PARAMS as u128,
            "--layers {} × --embd {} is more than {} parameters, beyond what Kiln can train; \
             use fewer --layers or a smaller --embd",
            m.n_layer,
            m.n_embd,
            crate::model::MAX_PARAMS
        );
        let t = &self.train;
        check_batch_shape(t.batch, t.seq)?;
        if let Some(p) = m.n_positions {
            ensure!(
                p >= t.seq,
                "model.n_positions {p} is shorter than --seq {} (train.seq)",
                t.seq
            );
        }
        ensure!(
            (1..=MAX_GRAD_ACCUM).contains(&t.grad_accum),
            "--grad-accum (train.grad_accum) must be between 1 and {MAX_GRAD_ACCUM}, got {} \
             (each micro-batch has its own buffers; raise --batch for a larger step)",
            t.grad_accum
        );
        ensure!(
            t.keep_checkpoints >= 1,
            "--keep-checkpoints (train.keep_checkpoints) must be at least 1, got 0"
        );
        ensure!(
            !t.scratch || t.init_from.is_some(),
            "--scratch (train.scratch) takes the architecture and tokenizer of a checkpoint: \
             give it with --from (train.init_from)"
        );
        ensure!(
            (t.patience == 0 && !t.keep_best) || t.eval_every > 0,
            "--patience and --keep-best compare evaluations: set --eval-every (train.eval_every) \
             above 0"
        );
        let d = &self.data;
        ensure!(
            d.val_fraction.is_finite() && (0.0..1.0).contains(&d.val_fraction),
            "--val-fraction (data.val_fraction) must be in [0, 1), got {}",
            d.val_fraction
        );
        ensure!(
            d.test_fraction.is_finite()
                && (0.0..1.0).contains(&d.test_fraction)
                && d.test_fraction + d.val_fraction < 1.0,
            "--test-fraction (data.test_fraction) must be in [0, 1) and leave training data with \
             --val-fraction {}, got {}",
            d.val_fraction,
            d.test_fraction
        );
        let o = &self.optimizer;
        ensure!(
            positive_finite(o.lr),
            "--lr (optimizer.lr) must be a positive number, got {}",
            o.lr
        );
        ensure!(
            non_negative_finite(o.min_lr) && o.min_lr <= o.lr,
            "--min-lr (optimizer.min_lr) must be between 0 and --lr ({}), got {}",
            o.lr,
            o.min_lr
        );
        ensure!(
            non_negative_finite(o.weight_decay),
            "--weight-decay (optimizer.weight_decay) must be a number ≥ 0, got {}",
            o.weight_decay
        );
        ensure!(
            non_negative_finite(o.grad_clip),
            "--grad-clip (optimizer.grad_clip) must be a number ≥ 0 (0 turns clipping off), got {}",
            o.grad_clip
        );
        ensure!(
            (0.0..1.0).contains(&o.beta1) && (0.0..1.0).contains(&o.beta2),
            "optimizer.beta1 and beta2 must be in [0, 1), got {} and {}",
            o.beta1,
            o.beta2
        );
        ensure!(
            non_negative_finite(o.eps),
            "optimizer.eps must be a number ≥ 0, got {}",
            o.eps
        );
        if let Err(e) = toml::to_string(self) {
            bail!(
                "a setting does not fit run.toml ({e}): integers must be below 2^63 \
                 (--steps, --seed and the cadences)"
            );
        }
        let arch = m.arch.as_str();
        ensure!(
            crate::model::ARCHITECTURES.contains(&arch) || arch == "gpt",
            "--model {arch:?} (model.arch): expected {}",
            crate::model::ARCHITECTURES.join(", ")
        );
        if matches!(arch, "vit" | "clip") {
            ensure!(
                (1..=64).contains(&m.patch_size),
                "--patch {} (model.patch_size) must be between 1 and 64 pixels",
                m.patch_size
            );
        }
        if let Some(o) = &m.objective {
            ensure!(
                arch == "gin"
                    || (matches!(arch, "gpt2" | "gpt" | "bert" | "clip") && o == "classify")
                    || (matches!(arch, "gpt2" | "gpt" | "bert") && o == "regression")
                    || (arch == "vit" && o == "masked-patch"),
                "--objective {o} (model.objective) chooses a graph model's task (attr-mask, \
                 regression), a text model's (classify: labelled text) or a ViT's (masked-patch); {arch} has no objective \
                 {o:?}"
            );
        }
        ensure!(
            d.label_fraction.is_finite() && d.label_fraction > 0.0 && d.label_fraction <= 1.0,
            "--label-fraction {} (data.label_fraction) must be in (0, 1]",
            d.label_fraction
        );
        let mut seen = d.classes.clone();
        seen.sort_unstable();
        seen.dedup();
        ensure!(
            seen.len() == d.classes.len(),
            "--classes {:?} (data.classes) lists a class twice",
            d.classes
        );
        if matches!(arch, "gpt2" | "gpt" | "bert") {
            // The smallest vocabulary the tokenizer can have: a model too
            // large even then is refused before any data is read.
            let vocab = if d.tokenizer == "bpe" {
                d.bpe_vocab.max(256)
            } else {
                256
            };
            check_model_size(self.build_model(vocab)?.as_ref())?;
        }
        match m.attention.as_str() {
            "fused" | "unfused" | "auto" | "" => {}
            other => {
                bail!("--attention {other:?} (model.attention): expected fused, unfused or auto")
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: &RunConfig) -> String {
        format!("{:#}", c.validate().unwrap_err())
    }

    #[test]
    fn every_bad_setting_is_named() {
        let ok = RunConfig::default_for(true);
        ok.validate().unwrap();
        type Edit = Box<dyn Fn(&mut RunConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("--embd", Box::new(|c| c.model.n_embd = 0)),
            ("--heads", Box::new(|c| c.model.n_head = 0)),
            ("--layers", Box::new(|c| c.model.n_layer = 0)),
            ("divisible", Box::new(|c| c.model.n_head = 3)),
            ("--batch", Box::new(|c| c.train.batch = usize::MAX)),
            ("--seq", Box::new(|c| c.train.seq = 0)),
            (
                "--grad-accum",
                Box::new(|c| c.train.grad_accum = usize::MAX),
            ),
            ("--min-lr", Box::new(|c| c.optimizer.min_lr = 1.0)),
            ("--lr", Box::new(|c| c.optimizer.lr = f32::NAN)),
            ("got -1", Box::new(|c| c.optimizer.grad_clip = -1.0)),
            ("got NaN", Box::new(|c| c.optimizer.grad_clip = f32::NAN)),
            ("--val-fraction", Box::new(|c| c.data.val_fraction = 1.0)),
            (
                "--keep-checkpoints",
                Box::new(|c| c.train.keep_checkpoints = 0),
            ),
            (
                "--attention",
                Box::new(|c| c.model.attention = "flash".into()),
            ),
        ];
        for (want, f) in cases {
            let mut c = ok.clone();
            f(&mut c);
            let e = err(&c);
            assert!(e.contains(want), "wanted {want:?} in {e}");
        }
        let mut c = ok.clone();
        c.optimizer.grad_clip = 0.0;
        c.validate().unwrap();
    }

    #[test]
    fn huge_models_are_refused_before_allocating() {
        // 10^8 layers: refused from the sizes alone, before any graph exists.
        let mut c = RunConfig::default_for(true);
        c.model.n_layer = 100_000_000;
        let e = err(&c);
        assert!(e.contains("parameters") && e.contains("--layers"), "{e}");
        // Large but buildable: the training state does not fit any GPU.
        let big = crate::model::for_run(
            "gpt2",
            &crate::model::ModelDims {
                n_layer: 40,
                n_head: 16,
                n_embd: 8192,
                n_positions: 1024,
                vocab_size: 50257,
                ..Default::default()
            },
        )
        .unwrap();
        let e = format!("{:#}", check_model_size(big.as_ref()).unwrap_err());
        assert!(e.contains("GiB") && e.contains("--layers"), "{e}");
        let small = crate::model::for_run(
            "gpt2",
            &crate::model::ModelDims {
                n_layer: 12,
                n_head: 12,
                n_embd: 768,
                n_positions: 1024,
                vocab_size: 50257,
                ..Default::default()
            },
        )
        .unwrap();
        check_model_size(small.as_ref()).unwrap();
        let mut c = RunConfig::default_for(true);
        c.model.n_embd = 0;
        assert!(c.validate().is_err());
    }
}
