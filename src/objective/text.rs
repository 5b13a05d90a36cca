//! Text objectives: causal (GPT-2) and masked (BERT) language modelling on
//! a text file, a folder of them, or the built-in corpus.

use std::path::Path;

use anyhow::{Context, Result};

use super::{Prepared, Report};
use crate::data::corpus::{builtin_corpus, load_text};
use crate::data::mlm::MaskedLm;
use crate::data::tokenizer::{load_tokenizer, tokenizer_by_name, Tokenizer};
use crate::data::{CausalLm, TokenDataset};
use crate::model::ModelDims;
use crate::train::config::RunConfig;
use crate::train::resume::DataFingerprint;

/// The text of a run and its tokenizer (a resumed run's own, or a new one).
struct Text {
    text: String,
    tok: Box<dyn Tokenizer>,
    /// Entropy rate of the built-in corpus (nats per byte), when used.
    floor: Option<f64>,
}

fn read(cfg: &RunConfig, tok_dir: Option<&Path>) -> Result<Text> {
    let (text, floor) = match &cfg.data.path {
        Some(p) => (load_text(p)?, None),
        None => {
            let (t, f) = builtin_corpus(cfg.data.builtin_bytes);
            (t, Some(f))
        }
    };
    let tok = match tok_dir {
        Some(d) => load_tokenizer(d)
            .with_context(|| format!("loading the run's tokenizer from {}", d.display()))?,
        None => tokenizer_by_name(&cfg.data.tokenizer, Some(&text), cfg.data.bpe_vocab)?,
    };
    Ok(Text { text, tok, floor })
}

/// GPT: windows of the token stream, the next token as target.
pub fn causal_lm(cfg: &RunConfig, tok_dir: Option<&Path>) -> Result<Prepared> {
    let Text { text, tok, floor } = read(cfg, tok_dir)?;
    let fingerprint = DataFingerprint::of(&text);
    let tokens = tok.encode(&text);
    // The floor is per byte; with a byte tokenizer that is per token.
    let floor = floor
        .filter(|_| tok.kind() == "byte")
        .map(|f| (f, format!("entropy floor {f:.3}")));
    let data = TokenDataset::split(tokens, cfg.data.val_fraction)?;
    let t = &cfg.train;
    // The final sample continues the start of the validation text (the
    // training text when there is none): at least one token, at most half
    // a context.
    let from = if data.val.is_empty() {
        &data.train
    } else {
        &data.val
    };
    let prompt = from[..from.len().min((t.seq / 2).max(1))].to_vec();
    let vocab = tok.vocab_size();
    let mut notes = Vec::new();
    if let Some((f, _)) = &floor {
        notes.push(format!("built-in corpus, entropy floor {f:.4} nats/token"));
    }
    Ok(Prepared {
        source: Box::new(CausalLm {
            data,
            seed: t.seed,
            batch: t.batch,
            seq: t.seq,
        }),
        tok: Some(tok),
        floor,
        fingerprint,
        prompt,
        files: Vec::new(),
        notes,
        dims: ModelDims {
            vocab_size: vocab,
            ..Default::default()
        },
        report: Report::Text,
    })
}

/// BERT: [CLS] window [SEP] rows, 15% of the tokens chosen (80% [MASK],
/// 10% random, 10% unchanged), new masks every step.
pub fn masked_lm(cfg: &RunConfig, tok_dir: Option<&Path>) -> Result<Prepared> {
    let Text { text, tok, .. } = read(cfg, tok_dir)?;
    let fingerprint = DataFingerprint::of(&text);
    let tokens = tok.encode(&text);
    let data = TokenDataset::split(tokens, cfg.data.val_fraction)?;
    let t = &cfg.train;
    let source = MaskedLm::new(data, tok.as_ref(), t.seed, t.batch, t.seq)
        .context("masked language modelling needs a tokenizer with [CLS], [SEP], [MASK] and [PAD] (--tokenizer wordpiece)")?;
    let base = source.unigram_baseline();
    let unigram = base.val_cross_entropy.unwrap_or(base.train_entropy);
    let notes = vec![format!(
        "masked-token baselines: unigram cross-entropy {unigram:.4} nats, always-the-most-frequent-token accuracy {:.3}",
        base.majority_accuracy
    )];
    let dims = ModelDims {
        vocab_size: tok.vocab_size(),
        pad: Some(source.specials.pad as i64),
        ..Default::default()
    };
    let prompt = source.data.val.iter().take(t.seq / 2).copied().collect();
    Ok(Prepared {
        source: Box::new(source),
        tok: Some(tok),
        floor: Some((unigram, format!("unigram baseline {unigram:.3}"))),
        fingerprint,
        prompt,
        files: Vec::new(),
        notes,
        dims,
        report: Report::Text,
    })
}

/// The top predictions at one `[MASK]` of a fill-mask query.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MaskFill {
    /// Position among the query's tokens (after `[CLS]`).
    pub position: usize,
    /// (token, probability), most likely first.
    pub top: Vec<(String, f32)>,
}

/// The `k` most likely tokens at every `[MASK]` of `ids` (a tokenized text
/// without `[CLS]`/`[SEP]`, which are added here).
pub fn fill_mask_ids(
    gpu: &crate::runtime::Gpu,
    model: std::sync::Arc<dyn crate::model::Model>,
    params: &crate::graph::exec::TensorMap,
    tok: &dyn Tokenizer,
    ids: &[u32],
    k: usize,
) -> Result<Vec<MaskFill>> {
    use crate::data::mlm::MlmSpecials;
    use crate::data::Batch;
    let sp = MlmSpecials::from_tokenizer(tok)?;
    let masks: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == sp.mask).collect();
    anyhow::ensure!(
        !masks.is_empty(),
        "the text has no [MASK] token: write [MASK] where the model should fill in a word"
    );
    let mut row = vec![sp.cls as i32];
    row.extend(ids.iter().map(|&x| x as i32));
    row.push(sp.sep as i32);
    let t = row.len();
    let batch = Batch::new()
        .with_i32("input_ids", &[1, t], row)
        .with_i32("attention_mask", &[1, t], vec![1; t])
        .with_i32("token_type_ids", &[1, t], vec![0; t]);
    let inf = crate::train::infer::Inference::new(
        gpu,
        model,
        &batch,
        params,
        &["logits"],
        crate::graph::AttentionImpl::choose("auto", gpu)?,
    )?;
    let out = pollster::block_on(inf.run(&batch))?;
    let (shape, logits) = &out["logits"];
    let v = *shape.last().unwrap_or(&1);
    Ok(masks
        .into_iter()
        .map(|i| {
            let r = &logits[(i + 1) * v..(i + 2) * v];
            let m = r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let z: f64 = r.iter().map(|&x| (x as f64 - m).exp()).sum();
            let top = crate::train::infer::top_k(r, k)
                .into_iter()
                .map(|(id, x)| (tok.decode(&[id as u32]), ((x as f64 - m).exp() / z) as f32))
                .collect();
            MaskFill { position: i, top }
        })
        .collect())
}

/// After BERT training: a validation window with one word masked, the
/// model's top `k` guesses and the word that was there.
pub fn fill_mask_example(
    gpu: &crate::runtime::Gpu,
    session: &crate::train::Session,
    tok: &dyn Tokenizer,
    k: usize,
) -> Result<String> {
    use crate::data::mlm::MlmSpecials;
    let sp = MlmSpecials::from_tokenizer(tok)?;
    let special = tok.special_ids();
    let ids: Vec<u32> = session.prompt_tokens.iter().take(16).copied().collect();
    // Mask a word (letters), not punctuation, from the middle on if possible.
    let word = |i: usize| tok.decode(&ids[i..i + 1]).chars().any(char::is_alphabetic);
    let order = || (ids.len() / 2..ids.len()).chain(0..ids.len() / 2);
    let pos = order()
        .find(|&i| !special.contains(&ids[i]) && word(i))
        .or_else(|| order().find(|&i| !special.contains(&ids[i])))
        .ok_or_else(|| anyhow::anyhow!("no token to mask in the validation text"))?;
    let truth = tok.decode(&ids[pos..pos + 1]);
    let mut q = ids.clone();
    q[pos] = sp.mask;
    let fills = fill_mask_ids(
        gpu,
        session.model.clone(),
        &session.trainer.params,
        tok,
        &q,
        k,
    )?;
    let shown = tok.decode(&q);
    let guesses: Vec<String> = fills[0]
        .top
        .iter()
        .map(|(w, p)| format!("{:?} {:.3}", w.trim(), p))
        .collect();
    Ok(format!(
        "fill-mask: {shown}\n  top {k}: {}\n  (the masked token was {:?})",
        guesses.join(", "),
        truth.trim()
    ))
}

/// BERT or GPT-2 sequence classification of labelled text (a folder of
/// class subfolders, or a CSV/TSV of text and label): a fixed stratified
/// test split, a validation split, the training examples cut to
/// `data.per_class` and `data.label_fraction`; test accuracy after.
pub fn classification(cfg: &RunConfig, tok_dir: Option<&Path>) -> Result<Prepared> {
    use crate::data::labelled_text::{
        label_subset, read_labelled_texts, split, TextClassification, TextStyle,
    };
    let d = &cfg.data;
    let path = d.path.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "sequence classification needs labelled text: pass --data with a folder of class \
             subfolders of text files, or a CSV/TSV file of text and label"
        )
    })?;
    let regression = cfg.model.objective.as_deref() == Some("regression");
    let data = if regression {
        crate::data::labelled_text::read_labelled_targets(path)?
    } else {
        read_labelled_texts(path)?
    };
    let fingerprint = DataFingerprint::of(&data.texts.join("\n"));
    let tok = match tok_dir {
        Some(dir) => load_tokenizer(dir).with_context(|| {
            format!("loading the checkpoint's tokenizer from {}", dir.display())
        })?,
        None => tokenizer_by_name(&d.tokenizer, Some(&data.texts.join("\n")), d.bpe_vocab)?,
    };
    let splits = split(
        &data.labels,
        data.classes.len(),
        d.val_fraction,
        d.test_fraction,
    )?;
    let t = &cfg.train;
    let train = label_subset(
        &splits.train,
        &data.labels,
        data.classes.len(),
        d.per_class,
        d.label_fraction,
        t.seed,
    )?;
    let style = match super::arch(cfg)? {
        "bert" => TextStyle::Bert,
        _ => TextStyle::Gpt,
    };
    let counts = data.class_counts(&train);
    let mut notes = vec![if regression {
        format!(
            "regression of {:?}: {} training texts of {} available, {} validation, {} test (a \
             fixed split)",
            data.classes[0],
            train.len(),
            splits.train.len(),
            splits.val.len(),
            splits.test.len()
        )
    } else {
        format!(
        "{} classes ({}); {} training texts ({} to {} per class) of {} available, {} validation, \
         {} test (a fixed split)",
        data.classes.len(),
        data.classes.join(", "),
        train.len(),
        counts.iter().min().unwrap_or(&0),
        counts.iter().max().unwrap_or(&0),
        splits.train.len(),
        splits.val.len(),
        splits.test.len()
    )
    }];
    if !data.skipped.is_empty() {
        notes.push(format!(
            "skipped {} input(s); the first: {}",
            data.skipped.len(),
            data.skipped[0]
        ));
    }
    let source = TextClassification::new(
        &data,
        tok.as_ref(),
        style,
        splits,
        train,
        t.seed,
        t.batch,
        t.seq,
    )?;
    if source.truncated > 0 {
        notes.push(format!(
            "{} of {} texts were cut to --seq {} tokens",
            source.truncated,
            data.texts.len(),
            t.seq
        ));
    }
    let report = if regression {
        let train_mean = source
            .train
            .iter()
            .map(|&i| data.targets[i] as f64)
            .sum::<f64>()
            / source.train.len() as f64;
        Report::TextRegression(Box::new(TextRegressionReport {
            batches: source.batches_counted(&source.test, usize::MAX),
            targets: source.test.iter().map(|&i| data.targets[i]).collect(),
            train_mean,
            name: data.classes[0].clone(),
        }))
    } else {
        Report::Classes(super::images::ClassReport {
            batches: source.batches_of(&source.test, usize::MAX),
            classes: data.classes.clone(),
        })
    };
    Ok(Prepared {
        dims: ModelDims {
            vocab_size: tok.vocab_size(),
            labels: data.classes.clone(),
            pad: Some(source.pad as i64),
            ..Default::default()
        },
        source: Box::new(source),
        tok: Some(tok),
        floor: None,
        fingerprint,
        prompt: Vec::new(),
        files: Vec::new(),
        notes,
        report,
    })
}

/// The test set of a text regression: batches with their number of new
/// rows, the targets in order, the training mean (the baseline).
pub struct TextRegressionReport {
    pub batches: Vec<(crate::data::Batch, usize)>,
    pub targets: Vec<f32>,
    pub train_mean: f64,
    pub name: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct TextRegressionResult {
    pub mae: f64,
    pub rmse: f64,
    /// Always predicting the training mean.
    pub baseline_mae: f64,
    pub texts: usize,
    pub name: String,
}

impl TextRegressionResult {
    pub fn summary(&self) -> String {
        format!(
            "{}: test MAE {:.4}, RMSE {:.4} on {} texts (mean predictor MAE {:.4})",
            self.name, self.mae, self.rmse, self.texts, self.baseline_mae
        )
    }
}

/// The model's test-set errors against the targets.
pub async fn regression_report(
    gpu: &crate::runtime::Gpu,
    model: std::sync::Arc<dyn crate::model::Model>,
    params: &crate::graph::exec::TensorMap,
    r: &TextRegressionReport,
    attention: crate::graph::AttentionImpl,
) -> Result<TextRegressionResult> {
    anyhow::ensure!(!r.batches.is_empty(), "no test texts");
    let strip = |b: &crate::data::Batch| {
        let mut b = b.clone();
        b.remove("labels");
        b
    };
    let inf = crate::train::infer::Inference::new(
        gpu,
        model,
        &strip(&r.batches[0].0),
        params,
        &["logits"],
        attention,
    )?;
    let mut pred = Vec::with_capacity(r.targets.len());
    for (b, n) in &r.batches {
        let out = inf.run(&strip(b)).await?;
        pred.extend(out["logits"].1.iter().take(*n).map(|&x| x as f64));
    }
    let n = pred.len().min(r.targets.len()).max(1);
    let err = |p: &dyn Fn(usize) -> f64| -> (f64, f64) {
        let (mut a, mut s) = (0.0, 0.0);
        for (i, &y) in r.targets.iter().enumerate().take(n) {
            let e = p(i) - y as f64;
            a += e.abs();
            s += e * e;
        }
        (a / n as f64, (s / n as f64).sqrt())
    };
    let (mae, rmse) = err(&|i| pred[i]);
    let (baseline_mae, _) = err(&|_| r.train_mean);
    Ok(TextRegressionResult {
        mae,
        rmse,
        baseline_mae,
        texts: n,
        name: r.name.clone(),
    })
}
