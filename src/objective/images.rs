//! Image objectives on Fashion-MNIST (any folder of the four IDX files):
//! supervised classification (ViT) and contrastive image–text pretraining
//! (CLIP) with captions made from the class names, then zero-shot
//! classification by held-out prompts.

use std::path::Path;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use serde::Serialize;

use super::{default_image_dir, image_dims, Prepared, Report};
use crate::data::captions::{caption_corpus, ClipPairs, HELD_OUT_TEMPLATES};
use crate::data::images::{load_idx_dir, IdxDataset, ImageClassification, ImageSet, Normalization};
use crate::data::tokenizer::{load_tokenizer, tokenizer_by_name};
use crate::data::{Batch, DataSource};
use crate::graph::exec::TensorMap;
use crate::graph::AttentionImpl;
use crate::model::{Model, ModelDims};
use crate::runtime::Gpu;
use crate::train::config::RunConfig;
use crate::train::infer::{argmax_rows, Inference};
use crate::train::resume::DataFingerprint;

/// The file with the images' normalisation, saved with every checkpoint:
/// Hugging Face's image processor config (`AutoImageProcessor` reads it).
pub const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// The images of `cfg` (its `data.path`, or Fashion-MNIST where it is
/// usually found), the class subset and label fraction applied to the
/// training split, and the normalisation of the full training split.
pub fn load(cfg: &RunConfig) -> Result<(IdxDataset, Normalization, DataFingerprint)> {
    let dir = match &cfg.data.path {
        Some(p) => p.clone(),
        None => default_image_dir()?,
    };
    let mut ds = load_idx_dir(&dir)?;
    let fingerprint = {
        let mut bytes = ds.train.images.clone();
        bytes.extend(&ds.train.labels);
        DataFingerprint::of_bytes(&bytes)
    };
    // Normalised as the published training split, before any subset, so that
    // pretraining and fine-tuning runs see the same inputs.
    let norm = Normalization::of(&ds.train);
    let d = &cfg.data;
    if !d.classes.is_empty() {
        ds.train = ds.train.filter_classes(&d.classes)?;
        ds.test = ds.test.filter_classes(&d.classes)?;
    }
    if d.label_fraction < 1.0 {
        ds.train = ds.train.label_fraction(d.label_fraction, cfg.train.seed)?;
    }
    Ok((ds, norm, fingerprint))
}

/// The side of the (square) images.
fn square_side(ds: &IdxDataset) -> Result<usize> {
    ensure!(
        ds.train.rows == ds.train.cols,
        "images must be square, these are {}×{}",
        ds.train.rows,
        ds.train.cols
    );
    Ok(ds.train.rows)
}

fn preprocessor(norm: &Normalization, side: usize) -> Result<(String, Vec<u8>)> {
    let mut json = serde_json::to_vec_pretty(&norm.preprocessor_config(side, 1))?;
    json.push(b'\n');
    Ok((PREPROCESSOR_FILE.to_string(), json))
}

/// The normalisation a checkpoint was trained with (its preprocessor config).
pub fn load_normalization(dir: &Path) -> Result<Normalization> {
    let path = dir.join(PREPROCESSOR_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is missing: the checkpoint does not say how its images were normalised",
            path.display()
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let first = |k: &str| {
        v.get(k)
            .and_then(|x| x.get(0).or(Some(x)))
            .and_then(|x| x.as_f64())
            .map(|x| x as f32)
    };
    match (first("image_mean"), first("image_std")) {
        (Some(mean), Some(std)) if std > 0.0 => Ok(Normalization { mean, std }),
        _ => anyhow::bail!("{} lacks image_mean / image_std", path.display()),
    }
}

/// ViT: images and their labels; test accuracy and the confusion matrix after.
pub fn classification(cfg: &RunConfig) -> Result<Prepared> {
    let (ds, norm, fingerprint) = load(cfg)?;
    let classes = ds.train.classes.clone();
    let side = square_side(&ds)?;
    let t = &cfg.train;
    let source = ImageClassification::new(ds.train, ds.test, norm, t.seed, t.batch)?;
    let report = ClassReport {
        batches: source.val_batches(usize::MAX)?,
        classes: classes.clone(),
    };
    let counts = source.train.class_counts();
    let notes = vec![format!(
        "{} classes ({}), {} training images ({} to {} per class)",
        classes.len(),
        classes.join(", "),
        source.train.len(),
        counts.iter().min().unwrap_or(&0),
        counts.iter().max().unwrap_or(&0)
    )];
    Ok(Prepared {
        files: vec![preprocessor(&norm, side)?],
        source: Box::new(source),
        tok: None,
        floor: None,
        fingerprint,
        prompt: Vec::new(),
        notes,
        dims: ModelDims {
            image: image_dims(side),
            labels: classes,
            ..Default::default()
        },
        report: Report::Classes(report),
    })
}

/// ViT masked image modelling (self-supervised): every training image,
/// labels unused, `model.mask_ratio` of its patches masked; the loss is the
/// MSE of the masked patches' normalised pixels (predicting the mean pixel
/// scores about 1: the floor line of the chart).
pub fn masked_patches(cfg: &RunConfig) -> Result<Prepared> {
    let (ds, norm, fingerprint) = load(cfg)?;
    let side = square_side(&ds)?;
    let p = cfg.model.patch_size;
    ensure!(
        p > 0 && side % p == 0,
        "--patch {p} does not divide the {side}×{side} images"
    );
    let n = (side / p).pow(2);
    let r = cfg.model.mask_ratio;
    ensure!(
        r > 0.0 && r < 1.0,
        "--mask-ratio {r} (model.mask_ratio) must be in (0, 1)"
    );
    let masked = ((r * n as f32).round() as usize).clamp(1, n - 1);
    let t = &cfg.train;
    let images = ImageClassification::new(ds.train, ds.test, norm, t.seed, t.batch)?;
    let source = crate::data::mim::MaskedPatches::new(images, n, masked, t.seed)?;
    let notes = vec![format!(
        "masked image modelling: {masked} of {n} patches ({p}×{p} pixels) masked per image, \
         loss the MSE of their normalised pixels"
    )];
    Ok(Prepared {
        files: vec![preprocessor(&norm, side)?],
        source: Box::new(source),
        tok: None,
        floor: Some((1.0, "predicting the mean pixel".into())),
        fingerprint,
        prompt: Vec::new(),
        notes,
        dims: ModelDims {
            image: image_dims(side),
            ..Default::default()
        },
        report: Report::None,
    })
}

/// CLIP: images with generated captions; zero-shot top-1 after.
pub fn contrastive(cfg: &RunConfig, tok_dir: Option<&Path>) -> Result<Prepared> {
    let (ds, norm, fingerprint) = load(cfg)?;
    let side = ds.train.rows;
    let tok = match tok_dir {
        Some(d) => load_tokenizer(d)
            .with_context(|| format!("loading the run's tokenizer from {}", d.display()))?,
        None => tokenizer_by_name(
            &cfg.data.tokenizer,
            Some(&caption_corpus()),
            cfg.data.bpe_vocab,
        )?,
    };
    let t = &cfg.train;
    let source = ClipPairs::new(
        ds.train,
        ds.test,
        norm,
        tok.as_ref(),
        t.seed,
        t.batch,
        t.seq,
    )?;
    let report = ZeroShotReport {
        prompts: (0..HELD_OUT_TEMPLATES.len())
            .map(|k| source.prompt_batch(k))
            .collect::<Result<_>>()?,
        images: source.test_image_batches(usize::MAX),
        classes: source.train.classes.clone(),
    };
    let mut notes = vec![format!(
        "captions from {} training templates; zero-shot prompts from {} held-out ones",
        crate::data::captions::TRAIN_TEMPLATES.len(),
        HELD_OUT_TEMPLATES.len()
    )];
    if source.truncated() > 0 {
        notes.push(format!(
            "{} captions were cut to --seq {} (each keeps its end-of-text token)",
            source.truncated(),
            t.seq
        ));
    }
    let ids = source.ids;
    Ok(Prepared {
        files: vec![preprocessor(&norm, side)?],
        dims: ModelDims {
            vocab_size: tok.vocab_size(),
            image: image_dims(side),
            bos: Some(ids.bos as i64),
            eos: Some(ids.eos as i64),
            pad: Some(ids.pad as i64),
            projection_dim: cfg.model.projection_dim,
            ..Default::default()
        },
        source: Box::new(source),
        tok: Some(tok),
        floor: None,
        fingerprint,
        prompt: Vec::new(),
        notes,
        report: Report::ZeroShot(report),
    })
}

/// Test batches for the accuracy and confusion matrix of a classifier.
pub struct ClassReport {
    /// `pixel_values` and `labels` (−100 pads the last batch).
    pub batches: Vec<Batch>,
    pub classes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassResult {
    pub accuracy: f64,
    pub images: usize,
    pub classes: Vec<String>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

impl ClassResult {
    /// The confusion matrix as a text table with per-class recall.
    pub fn table(&self) -> String {
        let n = self.classes.len();
        let w = self
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{i} {c}").chars().count())
            .max()
            .unwrap_or(0)
            .max("true \\ predicted".len());
        let mut s = format!("{:>w$} │", "true \\ predicted");
        for j in 0..n {
            s += &format!(" {j:>5}");
        }
        s += "  recall\n";
        for (i, row) in self.confusion.iter().enumerate() {
            let total: u64 = row.iter().sum();
            s += &format!("{:>w$} │", format!("{i} {}", self.classes[i]));
            for x in row {
                s += &format!(" {x:>5}");
            }
            let recall = if total > 0 {
                row[i] as f64 / total as f64
            } else {
                0.0
            };
            s += &format!("  {:.3}\n", recall);
        }
        s
    }
}

/// Accuracy and confusion matrix of `model` (with `params`) on `r`.
pub async fn class_report(
    gpu: &Gpu,
    model: Arc<dyn Model>,
    params: &TensorMap,
    r: &ClassReport,
    attention: AttentionImpl,
) -> Result<ClassResult> {
    ensure!(!r.batches.is_empty(), "no test images");
    let n = r.classes.len();
    let strip = |b: &Batch| {
        let mut b = b.clone();
        let labels = b.remove("labels").expect("test batches carry labels");
        (b, labels.i32_with_shape(&labels.shape).map(|v| v.to_vec()))
    };
    let (first, _) = strip(&r.batches[0]);
    let inf = Inference::new(gpu, model, &first, params, &["logits"], attention)?;
    let mut confusion = vec![vec![0u64; n]; n];
    let (mut right, mut total) = (0u64, 0u64);
    for b in &r.batches {
        let (x, labels) = strip(b);
        let labels = labels?;
        let out = inf.run(&x).await?;
        let (shape, logits) = &out["logits"];
        let pred = argmax_rows(logits, *shape.last().unwrap_or(&1));
        for (p, &l) in pred.iter().zip(&labels) {
            if l < 0 {
                continue;
            }
            confusion[l as usize][(*p).min(n - 1)] += 1;
            right += (*p == l as usize) as u64;
            total += 1;
        }
    }
    Ok(ClassResult {
        accuracy: right as f64 / total.max(1) as f64,
        images: total as usize,
        classes: r.classes.clone(),
        confusion,
    })
}

/// Held-out prompts and test images for zero-shot classification.
pub struct ZeroShotReport {
    /// One text batch per held-out template: one prompt per class.
    pub prompts: Vec<Batch>,
    /// `pixel_values` and `labels` (−100 pads the last batch).
    pub images: Vec<Batch>,
    pub classes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ZeroShotResult {
    /// Top-1 with the class embeddings averaged over the templates (and
    /// normalised again), as CLIP ensembles prompts.
    pub top1: f64,
    /// Top-1 with each template's prompts alone.
    pub per_template: Vec<f64>,
    pub images: usize,
}

impl ZeroShotResult {
    /// One line: the ensembled top-1 and each template's.
    pub fn summary(&self) -> String {
        let each: Vec<String> = self
            .per_template
            .iter()
            .map(|x| format!("{x:.3}"))
            .collect();
        format!(
            "zero-shot top-1 {:.4} on {} test images (held-out prompts, ensembled; each template alone: {})",
            self.top1,
            self.images,
            each.join(", ")
        )
    }
}

fn normalise_rows(v: &mut [f32], n: usize) {
    for r in v.chunks_mut(n) {
        let norm = r
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        for x in r {
            *x = (*x as f64 / norm) as f32;
        }
    }
}

/// Zero-shot top-1 of a CLIP model on the test images: each image goes to
/// the class whose prompt embedding is most similar to its own.
pub async fn zero_shot(
    gpu: &Gpu,
    model: Arc<dyn Model>,
    params: &TensorMap,
    r: &ZeroShotReport,
    attention: AttentionImpl,
) -> Result<ZeroShotResult> {
    ensure!(
        !r.prompts.is_empty() && !r.images.is_empty(),
        "no prompts or no test images"
    );
    let text = Inference::new(
        gpu,
        model.clone(),
        &r.prompts[0],
        params,
        &["text_embeds"],
        attention,
    )?;
    let mut classes: Vec<Vec<f32>> = Vec::new(); // per template: [C, P]
    let mut p = 0;
    for b in &r.prompts {
        let out = text.run(b).await?;
        let (shape, v) = &out["text_embeds"];
        p = *shape.last().unwrap_or(&1);
        classes.push(v.clone());
    }
    let c = r.classes.len();
    let mut ensemble = vec![0.0f32; c * p];
    for t in &classes {
        for (e, x) in ensemble.iter_mut().zip(t) {
            *e += x;
        }
    }
    normalise_rows(&mut ensemble, p);
    let strip = |b: &Batch| {
        let mut b = b.clone();
        let labels = b.remove("labels").expect("test batches carry labels");
        (b, labels.i32_with_shape(&labels.shape).map(|v| v.to_vec()))
    };
    let (first, _) = strip(&r.images[0]);
    let image = Inference::new(gpu, model, &first, params, &["image_embeds"], attention)?;
    let (mut right, mut per, mut total) = (0u64, vec![0u64; classes.len()], 0u64);
    let score = |img: &[f32], cls: &[f32]| -> usize {
        let sims: Vec<f32> = cls
            .chunks(p)
            .map(|t| t.iter().zip(img).map(|(a, b)| a * b).sum())
            .collect();
        argmax_rows(&sims, c)[0]
    };
    for b in &r.images {
        let (x, labels) = strip(b);
        let labels = labels?;
        let out = image.run(&x).await?;
        let (_, emb) = &out["image_embeds"];
        for (img, &l) in emb.chunks(p).zip(&labels) {
            if l < 0 {
                continue;
            }
            total += 1;
            right += (score(img, &ensemble) == l as usize) as u64;
            for (k, t) in classes.iter().enumerate() {
                per[k] += (score(img, t) == l as usize) as u64;
            }
        }
    }
    let t = total.max(1) as f64;
    Ok(ZeroShotResult {
        top1: right as f64 / t,
        per_template: per.iter().map(|&x| x as f64 / t).collect(),
        images: total as usize,
    })
}

/// The images of `set` as one normalised batch (no labels), for classify.
pub fn images_batch(set: &ImageSet, norm: &Normalization, items: &[usize]) -> Batch {
    let hw = set.rows * set.cols;
    let mut px = Vec::with_capacity(items.len() * hw);
    for &i in items {
        px.extend(norm.image(set, i));
    }
    Batch::new().with_f32("pixel_values", &[items.len(), 1, set.rows, set.cols], px)
}

/// The classes of a classifier checkpoint, from its config (`id2label`).
fn class_names(model: &dyn Model) -> Result<Vec<String>> {
    let c = model.config_json();
    let map = c
        .get("id2label")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the checkpoint holds a {}, not an image classifier with named classes",
                model.architecture()
            )
        })?;
    Ok((0..map.len())
        .map(|i| {
            map.get(&i.to_string())
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string()
        })
        .collect())
}

/// An image model's input size and channels, from its config.
fn input_geometry(model: &dyn Model) -> Result<(usize, usize)> {
    let c = model.config_json();
    let v = c.get("vision_config").unwrap_or(&c);
    let get = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
    match (get("image_size"), get("num_channels")) {
        (Some(s), Some(ch)) => Ok((s, ch)),
        _ => anyhow::bail!("{} is not an image model", model.architecture()),
    }
}

/// One image to classify: a PNG file, or `N`: image N of the test split of
/// the IDX folder `data`.
pub fn image_input(
    spec: &str,
    data: Option<&Path>,
    size: usize,
    channels: usize,
    norm: &Normalization,
    invert: bool,
) -> Result<Vec<f32>> {
    if let Ok(i) = spec.parse::<usize>() {
        let dir = match data {
            Some(d) => d.to_path_buf(),
            None => default_image_dir()?,
        };
        let ds = load_idx_dir(&dir)?;
        ensure!(
            i < ds.test.len(),
            "image {i}: the test split of {} has {} images (0 to {})",
            dir.display(),
            ds.test.len(),
            ds.test.len().saturating_sub(1)
        );
        ensure!(
            ds.test.rows == size && ds.test.cols == size && channels == 1,
            "the model takes {channels}×{size}×{size} images, the test split has 1×{}×{}",
            ds.test.rows,
            ds.test.cols
        );
        return Ok(norm.image(&ds.test, i));
    }
    let mut img = crate::data::images::read_png(Path::new(spec))?;
    if invert {
        img.invert();
    }
    Ok(img.to_model_input(size, channels, norm))
}

/// `kiln classify`: the top `k` classes (with probabilities) of each input.
#[allow(clippy::too_many_arguments)]
pub fn classify(
    gpu: &Gpu,
    dir: &Path,
    model: Arc<dyn Model>,
    params: &[(String, Vec<f32>)],
    inputs: &[String],
    data: Option<&Path>,
    k: usize,
    invert: bool,
) -> Result<Vec<Vec<(String, f32)>>> {
    ensure!(
        !inputs.is_empty(),
        "give at least one image: a PNG file or a test-set index"
    );
    let classes = class_names(model.as_ref())?;
    let (size, channels) = input_geometry(model.as_ref())?;
    let norm = load_normalization(dir)?;
    let mut px = Vec::new();
    for s in inputs {
        px.extend(
            image_input(s, data, size, channels, &norm, invert)
                .with_context(|| format!("image {s}"))?,
        );
    }
    let batch = Batch::new().with_f32("pixel_values", &[inputs.len(), channels, size, size], px);
    let shapes = crate::model::param_shapes(model.as_ref())?;
    let gpu_params = crate::model::upload_params(gpu, &shapes, params)?;
    let inf = Inference::new(
        gpu,
        model,
        &batch,
        &gpu_params,
        &["logits"],
        AttentionImpl::choose("auto", gpu)?,
    )?;
    let out = pollster::block_on(inf.run(&batch))?;
    let (_, logits) = &out["logits"];
    let n = classes.len();
    Ok(logits
        .chunks(n)
        .map(|r| {
            let m = r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let z: f64 = r.iter().map(|&x| (x as f64 - m).exp()).sum();
            crate::train::infer::top_k(r, k)
                .into_iter()
                .map(|(i, x)| (classes[i].clone(), ((x as f64 - m).exp() / z) as f32))
                .collect()
        })
        .collect())
}

/// `kiln zero-shot`: a CLIP checkpoint's zero-shot top-1 on the test split
/// of `data` (Fashion-MNIST), with the held-out prompts.
pub fn zero_shot_checkpoint(
    gpu: &Gpu,
    dir: &Path,
    model: Arc<dyn Model>,
    params: &[(String, Vec<f32>)],
    data: Option<&Path>,
) -> Result<ZeroShotResult> {
    ensure!(
        model.architecture() == "CLIPModel",
        "the checkpoint holds a {}; zero-shot classification needs a CLIPModel",
        model.architecture()
    );
    let tok = load_tokenizer(&dir.join(crate::train::run::TOKENIZER_DIR))?;
    let c = model.config_json();
    let seq = c["text_config"]["max_position_embeddings"]
        .as_u64()
        .unwrap_or(24) as usize;
    let data_dir = match data {
        Some(d) => d.to_path_buf(),
        None => default_image_dir()?,
    };
    let ds = load_idx_dir(&data_dir)?;
    let norm = load_normalization(dir)?;
    let pairs = ClipPairs::new(ds.train, ds.test, norm, tok.as_ref(), 0, 64, seq)?;
    let report = ZeroShotReport {
        prompts: (0..HELD_OUT_TEMPLATES.len())
            .map(|k| pairs.prompt_batch(k))
            .collect::<Result<_>>()?,
        images: pairs.test_image_batches(usize::MAX),
        classes: pairs.train.classes.clone(),
    };
    let shapes = crate::model::param_shapes(model.as_ref())?;
    let gpu_params = crate::model::upload_params(gpu, &shapes, params)?;
    pollster::block_on(zero_shot(
        gpu,
        model,
        &gpu_params,
        &report,
        AttentionImpl::choose("auto", gpu)?,
    ))
}
