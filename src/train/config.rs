//! The settings of a training run, readable from TOML and overridable by flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::optimizer::OptimizerConfig;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// Architecture: `gpt2`, `bert`, `vit`, `clip` or `gin`.
    pub arch: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    /// Context length (rows of the position table); defaults to `train.seq`.
    pub n_positions: Option<usize>,
    /// `fused`, `unfused` or `auto`: fused on GPUs; unfused on CPU adapters,
    /// where it measured faster (BENCHMARKS.md) and T×T memory is cheap.
    pub attention: String,
    /// Image models: the side of a square patch, in pixels.
    pub patch_size: usize,
    /// CLIP: the size of the joint embedding space (default `n_embd`).
    pub projection_dim: Option<usize>,
    /// GIN: `attr-mask` (self-supervised pretraining, the default) or
    /// `regression` (the data's numeric label columns); BERT and GPT-2:
    /// `classify` (sequence classification of labelled text); ViT:
    /// `masked-patch` (masked image modelling, self-supervised).
    pub objective: Option<String>,
    /// ViT masked image modelling: the fraction of patches masked.
    pub mask_ratio: f32,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            arch: "gpt2".into(),
            n_layer: 4,
            n_head: 4,
            n_embd: 256,
            n_positions: None,
            attention: "auto".into(),
            patch_size: 7,
            projection_dim: None,
            objective: None,
            mask_ratio: 0.5,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// Text models: a text file or a directory of them (None = the built-in
    /// corpus). Image models: a folder of IDX files (None = Fashion-MNIST
    /// where it is usually found).
    pub path: Option<PathBuf>,
    /// `byte`, `bpe` (trained on the corpus), `gpt2:<dir>`, `wordpiece`,
    /// `gpt2-bpe`, `clip-bpe` (Hugging Face tokenizers trained on the
    /// corpus) or `hf:<tokenizer.json>`.
    pub tokenizer: String,
    /// Vocabulary size when training a tokenizer.
    pub bpe_vocab: usize,
    /// Fraction of the tokens held out for validation (the end of the text).
    pub val_fraction: f64,
    /// Size of the built-in corpus in bytes.
    pub builtin_bytes: usize,
    /// Image models: train on these classes only (empty: all), relabelled 0…
    pub classes: Vec<u8>,
    /// Image models and labelled text: the fraction of the training labels
    /// used (a stratified, seeded subset; 1 = all).
    pub label_fraction: f64,
    /// Labelled text: at most this many training examples per class (0 = all).
    pub per_class: usize,
    /// Labelled text: the fraction of each class held out as the test set
    /// (fixed, whatever the seed).
    pub test_fraction: f64,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            path: None,
            tokenizer: "byte".into(),
            bpe_vocab: 1024,
            val_fraction: 0.1,
            builtin_bytes: 2_000_000,
            classes: Vec::new(),
            label_fraction: 1.0,
            per_class: 0,
            test_fraction: 0.2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    pub batch: usize,
    pub seq: usize,
    pub steps: u64,
    pub grad_accum: usize,
    pub seed: u64,
    /// Validation loss every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Validation batches per evaluation (at most what the split holds).
    pub eval_batches: usize,
    /// Read the training loss back every this many steps.
    pub log_every: u64,
    /// Checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Tokens in the sample printed at the end.
    pub sample_tokens: usize,
    /// Complete checkpoints kept in `checkpoints/` (the newest ones).
    pub keep_checkpoints: usize,
    /// A NaN or infinite loss or gradient: `stop` (an error naming the step
    /// and the first non-finite tensor) or `skip` (the update, counting it).
    pub on_nan: super::nan_guard::OnNan,
    /// Start from the parameters of this run or model directory that the
    /// new model shares by name (fine-tuning); the rest are initialised.
    pub init_from: Option<PathBuf>,
    /// Parameters to freeze (no gradient, no optimizer state), by name or
    /// name prefix (`gnn` freezes the whole encoder: a linear probe),
    /// `backbone` (all but the task head) or `layers:N` (the embeddings and
    /// the first N layers).
    pub freeze: Vec<String>,
    /// With `init_from`: take the checkpoint's architecture, sizes and
    /// tokenizer but not its weights (the from-scratch baseline).
    pub scratch: bool,
    /// Stop when the validation metric (accuracy, else the loss) has not
    /// improved for this many evaluations (0 = never).
    pub patience: u64,
    /// Keep the best evaluation's weights in `best/`, and report the test
    /// set with them.
    pub keep_best: bool,
    /// With `init_from`: a task head whose number of labels differs from
    /// the data's is replaced by a new one (otherwise an error).
    pub replace_head: bool,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            batch: 16,
            seq: 128,
            steps: 1000,
            grad_accum: 1,
            seed: 1337,
            eval_every: 100,
            eval_batches: 8,
            log_every: 10,
            checkpoint_every: 500,
            sample_tokens: 300,
            keep_checkpoints: 2,
            on_nan: Default::default(),
            init_from: None,
            freeze: Vec::new(),
            scratch: false,
            patience: 0,
            keep_best: false,
            replace_head: false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSection,
    pub data: DataSection,
    pub train: TrainSection,
    pub optimizer: OptimizerConfig,
    pub distill: DistillSection,
}

/// Knowledge distillation (`kiln distill`): the model trains as a student
/// of `teacher` (see `crate::model::distill`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillSection {
    /// The teacher's run or model directory (same family and vocabulary).
    pub teacher: Option<PathBuf>,
    /// Weight of the teacher's soft term; 1 − alpha weighs the labels.
    pub alpha: f32,
    /// Softmax temperature of the soft term.
    pub tau: f32,
}

impl Default for DistillSection {
    fn default() -> Self {
        Self {
            teacher: None,
            alpha: 0.5,
            tau: 2.0,
        }
    }
}

impl RunConfig {
    /// The built-in default: a small GPT on the built-in corpus, sized for a
    /// minute or two on a GPU, or a few minutes when the adapter is a CPU.
    pub fn default_for(cpu_adapter: bool) -> Self {
        let mut c = Self::default();
        if cpu_adapter {
            c.model = ModelSection {
                n_layer: 2,
                n_head: 4,
                n_embd: 64,
                ..ModelSection::default()
            };
            c.train.batch = 8;
            c.train.seq = 64;
            c.train.steps = 300;
            c.train.eval_every = 100;
            c.train.eval_batches = 4;
            c.train.checkpoint_every = 0;
            c.train.sample_tokens = 200;
            c.data.builtin_bytes = 400_000;
            c.optimizer.lr = 3e-3;
            c.optimizer.min_lr = 3e-4;
        }
        c.optimizer.decay_steps = c.train.steps;
        c
    }

    /// The default run of `arch` (gpt2, bert, vit or clip) on this kind of
    /// adapter: sizes that train to a useful result in minutes (tens of
    /// minutes on a CPU adapter), each with its data and tokenizer.
    pub fn default_for_model(arch: &str, cpu_adapter: bool) -> Result<Self> {
        let mut c = Self::default_for(cpu_adapter);
        c.model.arch = arch.to_string();
        match arch {
            "gpt2" | "gpt" => {}
            "bert" => {
                c.data.tokenizer = "wordpiece".into();
                c.data.bpe_vocab = 2048;
                c.model.n_layer = if cpu_adapter { 2 } else { 4 };
                c.model.n_embd = if cpu_adapter { 128 } else { 256 };
                c.train.batch = 16;
                c.train.seq = 64;
                c.train.steps = if cpu_adapter { 600 } else { 3000 };
                c.train.sample_tokens = 5;
                c.optimizer.lr = 1e-3;
                c.optimizer.min_lr = 1e-4;
            }
            "vit" => {
                c.model.n_layer = if cpu_adapter { 2 } else { 6 };
                c.model.n_head = 4;
                c.model.n_embd = if cpu_adapter { 64 } else { 192 };
                c.model.patch_size = if cpu_adapter { 7 } else { 4 };
                c.train.batch = 64;
                c.train.seq = 1;
                c.train.steps = if cpu_adapter { 2600 } else { 10_000 };
                c.train.eval_every = if cpu_adapter { 500 } else { 1000 };
                c.train.eval_batches = 16;
                c.train.sample_tokens = 0;
                c.optimizer.lr = 2e-3;
                c.optimizer.min_lr = 1e-4;
                c.optimizer.warmup_steps = 100;
            }
            "clip" => {
                c.data.tokenizer = "clip-bpe".into();
                c.data.bpe_vocab = 1024;
                c.model.n_layer = 2;
                c.model.n_head = 4;
                c.model.n_embd = if cpu_adapter { 64 } else { 128 };
                c.model.patch_size = 7;
                c.train.batch = 64;
                c.train.seq = 24;
                c.train.steps = if cpu_adapter { 1500 } else { 6000 };
                c.train.eval_every = 500;
                c.train.eval_batches = 8;
                c.train.sample_tokens = 0;
                c.optimizer.lr = 2e-3;
                c.optimizer.min_lr = 1e-4;
                c.optimizer.warmup_steps = 100;
            }
            "gin" => {
                // Hu et al. use 5 layers × 300; a CPU adapter gets a
                // smaller network. Batches: 32 molecule slots of 48 atom
                // slots each on average (1536 atoms, 4608 edges).
                c.model.n_layer = if cpu_adapter { 3 } else { 5 };
                c.model.n_embd = if cpu_adapter { 128 } else { 300 };
                c.model.n_head = 1;
                c.train.batch = 32;
                c.train.seq = 48;
                c.train.steps = if cpu_adapter { 1000 } else { 5000 };
                c.train.eval_every = 250;
                c.train.eval_batches = 16;
                c.train.sample_tokens = 0;
                c.data.val_fraction = 0.05;
                c.optimizer.lr = 1e-3;
                c.optimizer.min_lr = 1e-4;
                c.optimizer.warmup_steps = 50;
                c.optimizer.weight_decay = 0.0;
            }
            other => anyhow::bail!(
                "--model {other:?}: expected {}",
                crate::model::ARCHITECTURES.join(", ")
            ),
        }
        c.optimizer.decay_steps = c.train.steps;
        Ok(c)
    }

    /// The presets, smallest first: `tiny` is what `kiln train` uses by
    /// default on a CPU adapter (2 layers, 4 heads, 64 dims, context 64,
    /// batch 8, AdamW 3e-3 → 3e-4 over 300 steps, 400 kB of the built-in
    /// corpus); `small` has 4 layers, 128 dims, context 128, 1000 steps. The
    /// browser page, `kiln train --preset` and `kiln bench train` share them.
    pub const PRESETS: [&'static str; 2] = ["tiny", "small"];

    /// A preset by name (see [`RunConfig::PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        let mut c = Self::default_for(true);
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
            other => anyhow::bail!(
                "unknown preset {other:?}; expected one of {}",
                Self::PRESETS.join(", ")
            ),
        }
        Ok(c)
    }

    /// The text model this configuration describes, for a vocabulary of
    /// `vocab` (image models need their data: see `crate::objective`).
    pub fn build_model(&self, vocab: usize) -> Result<std::sync::Arc<dyn crate::model::Model>> {
        let m = &self.model;
        crate::model::for_run(
            &m.arch,
            &crate::model::ModelDims {
                n_layer: m.n_layer,
                n_head: m.n_head,
                n_embd: m.n_embd,
                n_positions: m.n_positions.unwrap_or(self.train.seq),
                vocab_size: vocab,
                pad: Some(0),
                ..Default::default()
            },
        )
    }

    /// The optimizer settings with the decay length defaulting to the run length.
    pub fn optimizer_for_run(&self) -> OptimizerConfig {
        let mut o = self.optimizer.clone();
        if o.decay_steps == 0 {
            o.decay_steps = self.train.steps;
        }
        o
    }

    /// The attention implementation `model.attention` asks for on `gpu`.
    pub fn attention_for(&self, gpu: &crate::runtime::Gpu) -> Result<crate::graph::AttentionImpl> {
        crate::graph::AttentionImpl::choose(&self.model.attention, gpu)
            .context("model.attention in the run config")
    }

    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::from_toml_str(&text)
            .with_context(|| format!("{} is not a valid Kiln run config", path.display()))
    }

    /// Parses the text of a run config (not yet validated).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }
}
