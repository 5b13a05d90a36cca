//! What each architecture pretrains on, from a run configuration: the data
//! (read from files here, for the CLI), its tokenizer, the data source, the
//! model's data-given sizes, and what to report after training.
//!
//! - `gpt2`: causal language modelling on a text (next-token prediction);
//! - `bert`: masked language modelling on a text (15% of tokens, 80/10/10);
//! - `vit`: supervised classification of Fashion-MNIST images;
//! - `clip`: contrastive pretraining on Fashion-MNIST images paired with
//!   generated captions, zero-shot classification by held-out prompts;
//! - `gin`: attribute masking on molecules (self-supervised), or regression
//!   of a molecular property (`--objective regression`).

pub mod images;
pub mod molecules;
pub mod text;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};

use crate::data::tokenizer::Tokenizer;
use crate::data::DataSource;
use crate::io::ckpt_store::SaveFile;
use crate::model::{ImageDims, Model, ModelDims};
use crate::train::config::RunConfig;
use crate::train::resume::DataFingerprint;

/// A run's data, ready to train on.
pub struct Prepared {
    pub source: Box<dyn DataSource>,
    /// The tokenizer of text models (saved with every checkpoint).
    pub tok: Option<Box<dyn Tokenizer>>,
    /// A reference line for the loss chart (value, label): the entropy floor
    /// of the built-in corpus, the unigram baseline of masked tokens.
    pub floor: Option<(f64, String)>,
    pub fingerprint: DataFingerprint,
    /// Language models: the tokens the final sample continues.
    pub prompt: Vec<u32>,
    /// Files saved with every checkpoint besides the model's and the
    /// tokenizer's (an image model's `preprocessor_config.json`).
    pub files: Vec<SaveFile>,
    /// Lines to print before training (baselines, truncations).
    pub notes: Vec<String>,
    /// What the data decides about the model (vocabulary, ids, images).
    pub dims: ModelDims,
    /// Kept for the reports after training (images, prompts).
    pub report: Report,
}

/// What to measure after training, beyond the validation loss.
#[derive(Default)]
pub enum Report {
    #[default]
    None,
    /// Language models print a sample; masked ones fill a mask.
    Text,
    /// Test-set accuracy and the confusion matrix.
    Classes(images::ClassReport),
    /// Zero-shot top-1 on the test set with held-out prompts.
    ZeroShot(images::ZeroShotReport),
    /// Test-set mean absolute error in the target's units.
    Regression(Box<molecules::RegressionReport>),
    /// A text regression's test-set errors.
    TextRegression(Box<text::TextRegressionReport>),
}

/// The architecture a run trains (`model.arch`), checked.
pub fn arch(cfg: &RunConfig) -> Result<&str> {
    let a = cfg.model.arch.as_str();
    match a {
        "gpt2" | "gpt" | "bert" | "vit" | "clip" | "gin" => Ok(a),
        other => bail!("--model {other:?} (model.arch): expected gpt2, bert, vit, clip or gin"),
    }
}

/// Reads and tokenizes the data of `cfg`; `tok_dir` holds the tokenizer of a
/// resumed run (used as it is, never retrained).
pub fn prepare(cfg: &RunConfig, tok_dir: Option<&Path>) -> Result<Prepared> {
    match arch(cfg)? {
        "gpt2" | "gpt" | "bert" if labelled_text(cfg)? => text::classification(cfg, tok_dir),
        "gpt2" | "gpt" => text::causal_lm(cfg, tok_dir),
        "bert" => text::masked_lm(cfg, tok_dir),
        "vit" if cfg.model.objective.as_deref() == Some("masked-patch") => {
            images::masked_patches(cfg)
        }
        "vit" => images::classification(cfg),
        "clip" if classify(cfg)? => images::classification(cfg),
        "clip" => images::contrastive(cfg, tok_dir),
        "gin" => match molecules::task(cfg)? {
            "regression" => molecules::regression(cfg),
            _ => molecules::attr_mask(cfg),
        },
        _ => unreachable!("checked by arch()"),
    }
}

/// Whether a text model's run is sequence classification (`--objective
/// classify`, what `kiln finetune` sets) rather than language modelling.
pub fn classify(cfg: &RunConfig) -> Result<bool> {
    match cfg.model.objective.as_deref() {
        None | Some("lm") => Ok(false),
        Some("classify") => Ok(true),
        Some(other) => bail!(
            "--objective {other:?} for {}: expected classify (labelled text), regression (a \
             numeric target per text) or nothing (language modelling)",
            cfg.model.arch
        ),
    }
}

/// Whether a text model's run learns from labelled text: `classify`, or
/// `regression` (a numeric target per text).
pub fn labelled_text(cfg: &RunConfig) -> Result<bool> {
    if cfg.model.objective.as_deref() == Some("regression") {
        return Ok(true);
    }
    classify(cfg)
}

/// Where a fine-tuning run's tokenizer is: a Kiln run or checkpoint's
/// `tokenizer/`, or a Hugging Face directory's `tokenizer.json`.
pub fn checkpoint_tokenizer(src: &Path) -> Result<Option<PathBuf>> {
    let dir = crate::io::ckpt_store::resolve(src)?;
    for d in [
        dir.join(crate::train::run::TOKENIZER_DIR),
        src.join(crate::train::run::TOKENIZER_DIR),
    ] {
        if d.is_dir() {
            return Ok(Some(d));
        }
    }
    Ok(dir.join("tokenizer.json").is_file().then_some(dir))
}

/// The model a fresh run of `cfg` trains on `data`: with `train.init_from`
/// (fine-tuning), the checkpoint's architecture and sizes with the head
/// the data asks for; otherwise the sizes of `[model]`.
pub fn build_model(cfg: &RunConfig, data: &Prepared) -> Result<Arc<dyn Model>> {
    if let Some(src) = &cfg.train.init_from {
        let dir = crate::io::ckpt_store::resolve(src)
            .with_context(|| format!("--init-from {}", src.display()))?;
        let pre = crate::train::checkpoint::load_model_config(&dir)
            .with_context(|| format!("--init-from {}", src.display()))?
            .config_json();
        let ty = pre["model_type"].as_str().unwrap_or("gpt2");
        let want = if cfg.model.arch == "gpt" {
            "gpt2"
        } else {
            cfg.model.arch.as_str()
        };
        ensure!(
            ty == want,
            "--init-from {}: the checkpoint is a {ty} model and this run trains {want} \
             (`kiln finetune` takes the architecture from the checkpoint)",
            src.display()
        );
        return crate::model::finetune::for_finetune(&pre, &data.dims, cfg.train.seq)
            .with_context(|| format!("fine-tuning {}", src.display()));
    }
    let m = &cfg.model;
    if arch(cfg)? == "vit" && m.objective.as_deref() == Some("masked-patch") {
        let im = data.dims.image.expect("image data");
        let mut c = crate::model::vit::VitConfig::new(
            m.n_embd,
            m.n_layer,
            m.n_head,
            im.size,
            m.patch_size,
            im.channels,
            &[],
        );
        c.mask_ratio = m.mask_ratio;
        return Ok(Arc::new(crate::model::vit::Vit::masked_image_modeling(c)?));
    }
    let mut d = data.dims.clone();
    d.n_layer = m.n_layer;
    d.n_head = m.n_head;
    d.n_embd = m.n_embd;
    d.n_positions = m.n_positions.unwrap_or(cfg.train.seq);
    if let Some(im) = &mut d.image {
        im.patch = m.patch_size;
    }
    if let Some(gc) = &mut d.graph {
        gc.hidden_size = m.n_embd;
        gc.num_layers = m.n_layer;
    }
    let m = crate::model::for_run(arch(cfg)?, &d)?;
    if matches!(arch(cfg)?, "gpt2" | "gpt" | "bert") && labelled_text(cfg)? {
        // A text classifier from scratch: the configured transformer with
        // the head the data asks for.
        return crate::model::finetune::for_finetune(&m.config_json(), &d, cfg.train.seq);
    }
    Ok(m)
}

/// Where Fashion-MNIST is, when no `--data` says: `$KILN_DATA_DIR/images/
/// fashion-mnist`, `../shared/data/images/fashion-mnist` (beside a checkout),
/// then Debian's `dataset-fashion-mnist` package.
pub fn default_image_dir() -> Result<PathBuf> {
    find_data_dir(
        "images/fashion-mnist",
        &["/usr/share/datasets/fashion-mnist"],
    )
    .map_err(|tried| {
        anyhow::anyhow!(
            "no image data: pass --data with a folder holding Fashion-MNIST's four IDX files \
             (train-images-idx3-ubyte.gz …); looked in {tried}"
        )
    })
}

/// The first folder that exists of `$KILN_DATA_DIR/<sub>`,
/// `../shared/data/<sub>` (beside a checkout) and `also`; or the list of
/// places tried, for the caller's error.
pub fn find_data_dir(sub: &str, also: &[&str]) -> std::result::Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Ok(d) = std::env::var("KILN_DATA_DIR") {
        candidates.push(Path::new(&d).join(sub));
    }
    candidates.push(Path::new("../shared/data").join(sub));
    candidates.extend(also.iter().map(PathBuf::from));
    match candidates.iter().find(|c| c.is_dir()) {
        Some(c) => Ok(c.clone()),
        None => Err(candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")),
    }
}

/// An image model's sizes from its data: side, one channel, the patch size.
fn image_dims(side: usize) -> Option<ImageDims> {
    Some(ImageDims {
        size: side,
        channels: 1,
        patch: 0,
    })
}
