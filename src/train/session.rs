//! The platform-neutral core of a training run, shared by `kiln train` and
//! the browser: the run configuration, the model, the data source and the
//! trainer, and the order in which batches are drawn. Nothing here blocks
//! or touches files; the CLI adds progress, metrics, checkpoints and charts
//! around it (`run.rs`), the web crate adds JavaScript bindings.

use std::sync::Arc;

use anyhow::{ensure, Result};

use super::config::RunConfig;
use super::trainer::{PendingStats, StepStats, Trainer, TrainerOptions};
use crate::data::{Batch, CausalLm, DataSource, TokenDataset};
use crate::model::{HostParams, Model};
use crate::runtime::Gpu;

pub struct Session {
    gpu: Gpu,
    pub cfg: RunConfig,
    pub model: Arc<dyn Model>,
    pub data: Box<dyn DataSource>,
    pub trainer: Trainer,
    /// For language models: the start of the validation text (at most half a
    /// context), which samples continue by default.
    pub prompt_tokens: Vec<u32>,
}

impl Session {
    /// A run of `model` on `data` as `cfg` describes it, starting from `init`.
    pub fn new(
        gpu: &Gpu,
        cfg: RunConfig,
        model: Arc<dyn Model>,
        data: Box<dyn DataSource>,
        init: &HostParams,
    ) -> Result<Self> {
        Self::with_teacher(gpu, cfg, model, data, init, None)
    }

    /// [`Session::new`] with a distillation teacher (see
    /// [`crate::model::distill`]).
    pub fn with_teacher(
        gpu: &Gpu,
        cfg: RunConfig,
        model: Arc<dyn Model>,
        data: Box<dyn DataSource>,
        init: &HostParams,
        teacher: Option<Arc<super::trainer::TeacherSpec>>,
    ) -> Result<Self> {
        // The graph's inputs are a batch as the model prepares it (CLIP adds
        // the pooled positions and the pairs, for instance).
        let mut example = data.train_batch(0)?;
        model.prepare_batch(&mut example)?;
        let frozen = frozen_names(model.as_ref(), &cfg.train.freeze)?;
        let trainer = Trainer::new(
            gpu,
            model.clone(),
            &cfg.optimizer_for_run(),
            &example.layout(),
            init,
            &TrainerOptions {
                grad_accum: cfg.train.grad_accum,
                attention: cfg.attention_for(gpu)?,
                frozen,
                seed: cfg.train.seed,
                teacher,
            },
        )?;
        Ok(Self {
            gpu: gpu.clone(),
            cfg,
            model,
            data,
            trainer,
            prompt_tokens: Vec::new(),
        })
    }

    /// A language-model run on a tokenized text of vocabulary `vocab`: the
    /// tail `cfg.data.val_fraction` is held out for validation; the model is
    /// the one `cfg` describes, initialised from `cfg.train.seed`, unless
    /// `from` gives a model and its parameters (resuming, fine-tuning).
    pub fn language_model(
        gpu: &Gpu,
        cfg: RunConfig,
        tokens: Vec<u32>,
        vocab: usize,
        from: Option<(Arc<dyn Model>, HostParams)>,
    ) -> Result<Self> {
        let data = TokenDataset::split(tokens, cfg.data.val_fraction)?;
        let (model, init) = match from {
            Some(m) => m,
            None => {
                let m = cfg.build_model(vocab)?;
                let init = crate::model::init_params(m.as_ref(), cfg.train.seed)?;
                (m, init)
            }
        };
        let t = &cfg.train;
        // The start of the validation text (the training text when there is
        // none): at least one token, at most half a context.
        let text = if data.val.is_empty() {
            &data.train
        } else {
            &data.val
        };
        let prompt = text[..text.len().min((t.seq / 2).max(1))].to_vec();
        let source = CausalLm {
            data,
            seed: t.seed,
            batch: t.batch,
            seq: t.seq,
        };
        let mut s = Self::new(gpu, cfg, model, Box::new(source), &init)?;
        s.prompt_tokens = prompt;
        Ok(s)
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Optimizer steps completed.
    pub fn step(&self) -> u64 {
        self.trainer.step
    }

    /// The micro-batches of optimizer step `step`: a function of the step
    /// alone, so a resumed run draws exactly the uninterrupted run's batches.
    pub fn micro_batches(&self, step: u64) -> Result<Vec<Batch>> {
        let k = self.cfg.train.grad_accum as u64;
        (0..k)
            .map(|i| self.data.train_batch(step * k + i))
            .collect()
    }

    /// Queues the next optimizer step; its statistics come back as a pending
    /// read when `want_stats`.
    pub fn submit_step(&mut self, want_stats: bool) -> Result<Option<PendingStats>> {
        let micro = self.micro_batches(self.trainer.step)?;
        self.trainer.train_step(&micro, want_stats)
    }

    /// Queues `n` optimizer steps and returns the last one's statistics as a
    /// pending read. Nothing here waits for the GPU.
    pub fn submit(&mut self, n: u32) -> Result<PendingStats> {
        ensure!(n >= 1, "at least one step");
        let mut last = None;
        for i in 0..n {
            last = self.submit_step(i + 1 == n)?;
        }
        Ok(last.expect("the last step asks for its statistics"))
    }

    /// Runs `n` optimizer steps and returns the statistics of the last.
    pub async fn steps(&mut self, n: u32) -> Result<StepStats> {
        let pending = self.submit(n)?;
        pending.get(&self.gpu).await
    }

    /// Tokens (or examples) per optimizer step.
    /// What `tokens_per_step` counts, for progress lines: tokens, images
    /// or image–text pairs.
    pub fn item_unit(&self) -> &'static str {
        let classify = matches!(
            self.cfg.model.objective.as_deref(),
            Some("classify" | "regression")
        );
        match self.cfg.model.arch.as_str() {
            "vit" => "images",
            "clip" if classify => "images",
            "gpt2" | "gpt" | "bert" if classify => "texts",
            "clip" => "pairs",
            "gin" => "molecules",
            _ => "tokens",
        }
    }

    pub fn tokens_per_step(&self) -> u64 {
        self.data.items_per_batch() * self.cfg.train.grad_accum as u64
    }

    /// The validation batches the run evaluates on.
    pub fn val_batches(&self) -> Result<Vec<Batch>> {
        self.data.val_batches(self.cfg.train.eval_batches)
    }

    /// Mean validation loss over `batches` (forward only).
    pub async fn eval(&mut self, batches: &[Batch]) -> Result<f32> {
        self.trainer.eval_loss(batches).await
    }

    /// Mean validation loss and metrics over `batches` (forward only).
    pub async fn evaluate(&mut self, batches: &[Batch]) -> Result<super::eval::EvalStats> {
        self.trainer.evaluate(batches).await
    }
}

/// The parameters of `model` that `prefixes` name: a parameter is frozen
/// when its name is a prefix or begins with one followed by a dot (`gnn`
/// freezes `gnn.layers.0.mlp.0.weight`, not `gnn2.x`). A prefix that names
/// nothing, or one that would freeze everything, is an error.
pub fn frozen_names(model: &dyn Model, prefixes: &[String]) -> Result<Vec<String>> {
    if prefixes.is_empty() {
        return Ok(Vec::new());
    }
    let names = param_names(model)?;
    let layers = crate::model::layer_count(&names);
    let hit = |n: &str, p: &str| n == p || n.strip_prefix(p).is_some_and(|r| r.starts_with('.'));
    // `backbone`: all but the task head; `layers:N`: the embeddings and the
    // first N layers; otherwise a parameter name or name prefix.
    let frozen_by = |n: &str, p: &str| -> Result<bool> {
        if p == "backbone" {
            return Ok(!crate::model::is_head(model, n));
        }
        if let Some(k) = p.strip_prefix("layers:") {
            let k: usize = k.parse().map_err(|_| {
                anyhow::anyhow!("--freeze {p}: expected layers:N with N a number of layers")
            })?;
            ensure!(
                k <= layers,
                "--freeze {p}: this {} has {layers} layers",
                model.architecture()
            );
            let d = crate::model::layer_depth(n, layers);
            return Ok(d <= k && !crate::model::is_head(model, n));
        }
        Ok(hit(n, p))
    };
    for p in prefixes {
        if p == "backbone" {
            ensure!(
                !model.head_prefixes().is_empty(),
                "--freeze backbone: this {} has no task head to train alone",
                model.architecture()
            );
            continue;
        }
        if p.starts_with("layers:") {
            frozen_by("", p)?;
            continue;
        }
        ensure!(
            names.iter().any(|n| hit(n, p)),
            "--freeze {p}: no parameter of this {} is named {p} or starts with {p}. (its \
             parameters begin with: {}; or use `backbone` or `layers:N`)",
            model.architecture(),
            {
                let mut tops: Vec<&str> = names
                    .iter()
                    .map(|n| n.split('.').next().unwrap_or(n))
                    .collect();
                tops.dedup();
                tops.join(", ")
            }
        );
    }
    let mut frozen = Vec::new();
    for n in &names {
        let mut f = false;
        for p in prefixes {
            f |= frozen_by(n, p)?;
        }
        if f {
            frozen.push(n.clone());
        }
    }
    ensure!(
        frozen.len() < names.len(),
        "--freeze {} freezes every parameter: nothing would train",
        prefixes.join(",")
    );
    Ok(frozen)
}

fn param_names(model: &dyn Model) -> Result<Vec<String>> {
    Ok(crate::model::param_shapes(model)?
        .into_iter()
        .map(|(n, _)| n)
        .collect())
}

/// Each parameter's learning-rate multiplier: `head_lr / lr` for the task
/// head, `layer_decay^(L + 1 − depth)` for the rest (depth 0 = embeddings,
/// i + 1 = layer i, L + 1 = after the last layer), as in BEiT/ELECTRA's
/// layer-wise decay. Empty when every multiplier is 1.
pub fn lr_scales(
    model: &dyn Model,
    opt: &super::optimizer::OptimizerConfig,
) -> Result<Vec<(String, f32)>> {
    let decay = opt.layer_decay;
    ensure!(
        decay > 0.0 && decay <= 1.0,
        "--layer-decay must be in (0, 1] (1 = the same rate for every layer), got {decay}"
    );
    if let Some(h) = opt.head_lr {
        ensure!(
            h.is_finite() && h >= 0.0,
            "--head-lr must be a finite rate ≥ 0, got {h}"
        );
        ensure!(
            !model.head_prefixes().is_empty(),
            "--head-lr: this {} has no separate task head",
            model.architecture()
        );
    }
    if decay == 1.0 && opt.head_lr.is_none() {
        return Ok(Vec::new());
    }
    let names = param_names(model)?;
    let layers = crate::model::layer_count(&names);
    Ok(names
        .into_iter()
        .map(|n| {
            let s = if crate::model::is_head(model, &n) {
                opt.head_lr
                    .map_or(1.0, |h| h / opt.lr.max(f32::MIN_POSITIVE))
            } else {
                let d = crate::model::layer_depth(&n, layers);
                decay.powi((layers + 1 - d.min(layers + 1)) as i32)
            };
            (n, s)
        })
        .collect())
}

#[cfg(test)]
mod finetune_tests {
    use super::*;
    use crate::model::bert::{Bert, BertConfig};
    use crate::model::heads::ClassHead;

    fn classifier() -> Bert {
        let cfg = BertConfig::new(50, 16, 3, 2, 12);
        Bert::classifier(cfg, ClassHead::new(vec!["a".into(), "b".into()]).unwrap()).unwrap()
    }

    #[test]
    fn freeze_layers_backbone_and_lr_scales_follow_depth() {
        let m = classifier();
        let f = frozen_names(&m, &["layers:1".into()]).unwrap();
        assert!(f.iter().any(|n| n.starts_with("bert.embeddings.")));
        assert!(f.iter().any(|n| n.starts_with("bert.encoder.layer.0.")));
        assert!(!f.iter().any(|n| n.starts_with("bert.encoder.layer.1.")));
        assert!(!f
            .iter()
            .any(|n| n.starts_with("classifier") || n.contains("pooler")));
        let b = frozen_names(&m, &["backbone".into()]).unwrap();
        assert!(b
            .iter()
            .all(|n| !n.starts_with("classifier") && !n.contains("pooler")));
        assert!(b.iter().any(|n| n.starts_with("bert.encoder.layer.2.")));
        let e = frozen_names(&m, &["layers:4".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 3 layers"), "{e}");

        let opt = crate::train::OptimizerConfig {
            lr: 1e-3,
            head_lr: Some(4e-3),
            layer_decay: 0.5,
            ..Default::default()
        };
        let s: std::collections::BTreeMap<String, f32> =
            lr_scales(&m, &opt).unwrap().into_iter().collect();
        assert_eq!(s["classifier.weight"], 4.0);
        assert_eq!(s["bert.pooler.dense.weight"], 4.0);
        assert_eq!(s["bert.encoder.layer.2.output.dense.weight"], 0.5);
        assert_eq!(s["bert.encoder.layer.0.output.dense.weight"], 0.125);
        assert_eq!(s["bert.embeddings.word_embeddings.weight"], 0.0625);
        let bad = crate::train::OptimizerConfig {
            layer_decay: 1.5,
            ..Default::default()
        };
        assert!(lr_scales(&m, &bad).is_err());
    }
}
