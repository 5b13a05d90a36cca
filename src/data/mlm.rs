//! Masked language modelling (BERT): rows of `[CLS]`, a window of the token
//! stream, `[SEP]`, with 15% of the ordinary tokens chosen for prediction.
//!
//! # Rows
//!
//! A row of length `T` is `[CLS]`, `T − 2` consecutive tokens of the stream,
//! `[SEP]`. Training rows start at offsets drawn uniformly from the training
//! split; validation rows are consecutive chunks of the validation split
//! (row `r` of batch `i` is chunk `i·B + r`).
//!
//! # Masking
//!
//! In each row, of the `n` positions holding a non-special token, `k` are
//! chosen, a uniformly random subset (as in the original BERT's
//! `create_pretraining_data.py`), where `k` is `0.15·n` rounded down or up
//! at random so that its mean is exactly `0.15·n`, and at least 1: a fixed
//! count rather than one Bernoulli draw per token, so no row and hence no
//! batch ever has zero predicted tokens (whose mean loss would be 0/0). A chosen position keeps its token as its label;
//! its input becomes `[MASK]` with probability 0.8, a uniformly random
//! non-special token with probability 0.1, and stays unchanged with
//! probability 0.1 (independently per position). Every other label is −100
//! (ignored by the loss, as in Hugging Face). Special tokens (`[CLS]`,
//! `[SEP]`, and any special id that occurs in the text, e.g. a literal
//! `[MASK]`) are never chosen.
//!
//! Training batch `k` draws its offsets and masks from a generator seeded by
//! `(seed, k)` alone: new masks every step, and a resumed run sees the
//! uninterrupted run's batches. Validation batches use a fixed seed (not the
//! run's), so their windows and masks are the same in every run.

use anyhow::{bail, Result};

use super::batch::{Batch, InputSpec};
use super::hf_tokenizer::{CLS, MASK, PAD, SEP};
use super::loader::TokenDataset;
use super::source::DataSource;
use super::tokenizer::Tokenizer;
use crate::runtime::DType;
use crate::util::Rng;

/// Label of a position the loss ignores (PyTorch's `ignore_index`).
pub const IGNORE: i32 = -100;
/// Fraction of ordinary tokens chosen for prediction.
pub const MASK_FRACTION: f64 = 0.15;
/// Of the chosen tokens: replaced by `[MASK]`…
pub const MASK_TOKEN_RATE: f64 = 0.8;
/// …replaced by a random token (the rest stay unchanged).
pub const RANDOM_TOKEN_RATE: f64 = 0.1;

const TAG_MLM: u64 = 0x4d4c_4d00; // "MLM"
/// Validation masks do not depend on the run's seed.
const VAL_SEED: u64 = 0x5641_4c00_1234;

/// A seed for stream `tag`, item `index` of a run seeded `seed`.
pub(crate) fn derive_seed(seed: u64, tag: u64, index: u64) -> u64 {
    let a = Rng::new(seed ^ tag.rotate_left(17)).next_u64();
    Rng::new(a ^ index.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// The ids BERT's inputs are built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlmSpecials {
    pub cls: u32,
    pub sep: u32,
    pub mask: u32,
    pub pad: u32,
}

impl MlmSpecials {
    /// The `[CLS]`, `[SEP]`, `[MASK]` and `[PAD]` ids of `tok`, or an error
    /// saying that masked LM needs a tokenizer that has them.
    pub fn from_tokenizer(tok: &dyn Tokenizer) -> Result<Self> {
        let id = |t: &str| {
            tok.token_to_id(t).ok_or_else(|| {
                anyhow::anyhow!(
                    "the {} tokenizer has no {t} token; masked language modelling needs one \
                     that does (--tokenizer wordpiece, or a BERT tokenizer.json)",
                    tok.kind()
                )
            })
        };
        Ok(Self {
            cls: id(CLS)?,
            sep: id(SEP)?,
            mask: id(MASK)?,
            pad: id(PAD)?,
        })
    }
}

/// What predicting the unigram distribution would score on the chosen
/// tokens, the baseline a masked LM must beat (nats per predicted token).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnigramBaseline {
    /// Entropy of the training split's unigram distribution over
    /// non-special tokens: the loss of predicting it on training tokens.
    pub train_entropy: f64,
    /// Cross-entropy of the validation split's non-special tokens under the
    /// training unigram distribution with add-one smoothing over the
    /// non-special vocabulary (finite for unseen tokens); `None` without
    /// validation tokens.
    pub val_cross_entropy: Option<f64>,
    /// Accuracy of always predicting the most frequent training token, on
    /// validation tokens (training tokens without validation).
    pub majority_accuracy: f64,
}

/// Masked-LM batches over a tokenized text.
pub struct MaskedLm {
    pub data: TokenDataset,
    pub seed: u64,
    pub batch: usize,
    /// Row length `T`, `[CLS]` and `[SEP]` included.
    pub seq: usize,
    pub specials: MlmSpecials,
    vocab_size: usize,
    /// `is_special[id]` for every id below `vocab_size`.
    is_special: Vec<bool>,
    /// Non-special ids: the random replacements.
    ordinary: Vec<u32>,
}

impl MaskedLm {
    /// A source over `data` (tokens of `tok`) with rows of length `seq`
    /// (≥ 3) in batches of `batch`. Fails if `tok` lacks BERT's special
    /// tokens or the training split is shorter than one row.
    pub fn new(
        data: TokenDataset,
        tok: &dyn Tokenizer,
        seed: u64,
        batch: usize,
        seq: usize,
    ) -> Result<Self> {
        let specials = MlmSpecials::from_tokenizer(tok)?;
        Self::with_specials(
            data,
            specials,
            &tok.special_ids(),
            tok.vocab_size(),
            seed,
            batch,
            seq,
        )
    }

    /// As [`MaskedLm::new`], with the ids given directly: `special` lists
    /// every id that must never be chosen or drawn as a replacement.
    pub fn with_specials(
        data: TokenDataset,
        specials: MlmSpecials,
        special: &[u32],
        vocab_size: usize,
        seed: u64,
        batch: usize,
        seq: usize,
    ) -> Result<Self> {
        if batch == 0 || seq < 3 {
            bail!("masked LM needs batch ≥ 1 and seq ≥ 3 ([CLS], a token, [SEP]); got batch {batch}, seq {seq}");
        }
        let mut is_special = vec![false; vocab_size];
        for &s in special
            .iter()
            .chain(&[specials.cls, specials.sep, specials.mask, specials.pad])
        {
            if (s as usize) >= vocab_size {
                bail!("special token id {s} is outside the vocabulary of {vocab_size}");
            }
            is_special[s as usize] = true;
        }
        let ordinary: Vec<u32> = (0..vocab_size as u32)
            .filter(|&i| !is_special[i as usize])
            .collect();
        if ordinary.is_empty() {
            bail!("the vocabulary has no ordinary (non-special) token");
        }
        if let Some(&t) = data
            .train
            .iter()
            .chain(&data.val)
            .find(|&&t| t as usize >= vocab_size)
        {
            bail!("token id {t} is outside the vocabulary of {vocab_size}");
        }
        let body = seq - 2;
        if data.train.len() < body {
            bail!(
                "training split has {} tokens; a row of seq {seq} needs {body} (plus [CLS] and \
                 [SEP]): use a longer text or a smaller --seq",
                data.train.len()
            );
        }
        Ok(Self {
            data,
            seed,
            batch,
            seq,
            specials,
            vocab_size,
            is_special,
            ordinary,
        })
    }

    fn is_special(&self, t: u32) -> bool {
        self.is_special.get(t as usize).copied().unwrap_or(true)
    }

    /// `[CLS] window [SEP]` for each window, then masking by `rng`.
    fn make_batch(&self, windows: &[&[u32]], rng: &mut Rng) -> Batch {
        let (b, t) = (self.batch, self.seq);
        let mut ids = Vec::with_capacity(b * t);
        let mut labels = vec![IGNORE; b * t];
        for w in windows {
            let row_start = ids.len();
            ids.push(self.specials.cls as i32);
            ids.extend(w.iter().map(|&x| x as i32));
            ids.push(self.specials.sep as i32);
            let mut cand: Vec<usize> = (1..t - 1).filter(|&p| !self.is_special(w[p - 1])).collect();
            if cand.is_empty() {
                continue;
            }
            let x = MASK_FRACTION * cand.len() as f64;
            let n_pick =
                (x.floor() as usize + (rng.uniform() < x.fract()) as usize).clamp(1, cand.len());
            // Partial Fisher–Yates: the first n_pick of cand are a uniform subset.
            for i in 0..n_pick {
                let j = i + rng.below((cand.len() - i) as u64) as usize;
                cand.swap(i, j);
            }
            for &p in &cand[..n_pick] {
                let at = row_start + p;
                labels[at] = ids[at];
                let u = rng.uniform();
                if u < MASK_TOKEN_RATE {
                    ids[at] = self.specials.mask as i32;
                } else if u < MASK_TOKEN_RATE + RANDOM_TOKEN_RATE {
                    let k = rng.below(self.ordinary.len() as u64) as usize;
                    ids[at] = self.ordinary[k] as i32;
                }
            }
        }
        Batch::new()
            .with_i32("input_ids", &[b, t], ids)
            .with_i32("attention_mask", &[b, t], vec![1; b * t])
            .with_i32("token_type_ids", &[b, t], vec![0; b * t])
            .with_i32("labels", &[b, t], labels)
    }

    /// Number of validation batches: `⌊len(val) / (B·(T−2))⌋`.
    pub fn num_val_batches(&self) -> usize {
        self.data.val.len() / (self.batch * (self.seq - 2))
    }

    /// The unigram baselines of the chosen tokens (see [`UnigramBaseline`]).
    /// Chosen positions are a uniform sample of the non-special positions,
    /// so the statistics are computed over all non-special tokens (exact,
    /// not sampled).
    pub fn unigram_baseline(&self) -> UnigramBaseline {
        let mut counts = vec![0u64; self.vocab_size];
        let mut n = 0u64;
        for &t in &self.data.train {
            if !self.is_special(t) {
                counts[t as usize] += 1;
                n += 1;
            }
        }
        let nf = n.max(1) as f64;
        let train_entropy = counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / nf;
                -p * p.ln()
            })
            .sum();
        let (argmax, _) = counts
            .iter()
            .enumerate()
            .max_by_key(|&(i, &c)| (c, std::cmp::Reverse(i)))
            .unwrap_or((0, &0));
        let denom = (n + self.ordinary.len() as u64) as f64;
        let mut ce = 0.0;
        let mut hits = 0u64;
        let mut m = 0u64;
        for &t in &self.data.val {
            if !self.is_special(t) {
                ce -= ((counts[t as usize] + 1) as f64 / denom).ln();
                hits += (t as usize == argmax) as u64;
                m += 1;
            }
        }
        let majority_accuracy = if m > 0 {
            hits as f64 / m as f64
        } else {
            counts[argmax] as f64 / nf
        };
        UnigramBaseline {
            train_entropy,
            val_cross_entropy: (m > 0).then(|| ce / m as f64),
            majority_accuracy,
        }
    }
}

impl DataSource for MaskedLm {
    /// `input_ids`, `attention_mask` (all 1: rows are never padded),
    /// `token_type_ids` (all 0), `labels` (−100 where not predicted); all
    /// i32 `[B, T]`.
    fn layout(&self) -> Vec<InputSpec> {
        let s = [self.batch, self.seq];
        vec![
            InputSpec::new("attention_mask", &s, DType::I32),
            InputSpec::new("input_ids", &s, DType::I32),
            InputSpec::new("labels", &s, DType::I32),
            InputSpec::new("token_type_ids", &s, DType::I32),
        ]
    }

    fn train_batch(&self, index: u64) -> Result<Batch> {
        let body = self.seq - 2;
        let mut rng = Rng::new(derive_seed(self.seed, TAG_MLM, index));
        let n = self.data.train.len();
        let windows: Vec<&[u32]> = (0..self.batch)
            .map(|_| {
                let o = rng.below((n - body + 1) as u64) as usize;
                &self.data.train[o..o + body]
            })
            .collect();
        Ok(self.make_batch(&windows, &mut rng))
    }

    fn val_batches(&self, max: usize) -> Result<Vec<Batch>> {
        let body = self.seq - 2;
        let per = self.batch * body;
        (0..self.num_val_batches().min(max))
            .map(|i| {
                let windows: Vec<&[u32]> = (0..self.batch)
                    .map(|r| &self.data.val[i * per + r * body..][..body])
                    .collect();
                let mut rng = Rng::new(derive_seed(VAL_SEED, TAG_MLM, i as u64));
                Ok(self.make_batch(&windows, &mut rng))
            })
            .collect()
    }

    fn items_per_batch(&self) -> u64 {
        (self.batch * self.seq) as u64
    }

    fn describe(&self) -> String {
        format!(
            "{} train / {} val tokens, rows of {} ([CLS] + {} + [SEP]), {:.0}% masked",
            self.data.train.len(),
            self.data.val.len(),
            self.seq,
            self.seq - 2,
            MASK_FRACTION * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: MlmSpecials = MlmSpecials {
        pad: 0,
        cls: 2,
        sep: 3,
        mask: 4,
    };
    const V: usize = 50;

    /// Ordinary tokens 5..V, with a literal special (id 1, "[UNK]") sprinkled in.
    fn source(seed: u64, batch: usize, seq: usize) -> MaskedLm {
        let mut rng = Rng::new(1);
        let tokens: Vec<u32> = (0..20_000)
            .map(|i| {
                if i % 37 == 0 {
                    1
                } else {
                    5 + rng.below((V - 5) as u64) as u32
                }
            })
            .collect();
        let data = TokenDataset::split(tokens, 0.1).unwrap();
        MaskedLm::with_specials(data, SP, &[0, 1, 2, 3, 4], V, seed, batch, seq).unwrap()
    }

    #[test]
    fn deterministic_and_resume_equivalent() {
        let s = source(7, 4, 33);
        let a = s.train_batch(5).unwrap();
        a.check_layout(&s.layout()).unwrap();
        let _ = s.train_batch(2).unwrap();
        assert_eq!(
            s.train_batch(5).unwrap(),
            a,
            "same (seed, index), same batch"
        );
        // A fresh source (a resumed run) gives the same batch.
        assert_eq!(source(7, 4, 33).train_batch(5).unwrap(), a);
        assert_ne!(s.train_batch(6).unwrap(), a, "new masks every step");
        assert_ne!(source(8, 4, 33).train_batch(5).unwrap(), a);
        // Validation: fixed windows and masks, independent of the run seed.
        let v = s.val_batches(100).unwrap();
        assert_eq!(v.len(), s.num_val_batches());
        assert_eq!(v.len(), 2000 / (4 * 31));
        assert_eq!(source(99, 4, 33).val_batches(100).unwrap(), v);
        assert_eq!(s.val_batches(2).unwrap(), v[..2]);
    }

    #[test]
    fn rows_are_cls_window_sep_and_labels_align() {
        let s = source(3, 8, 17);
        for index in 0..50 {
            let b = s.train_batch(index).unwrap();
            let ids = b.i32("input_ids").unwrap();
            let labels = b.i32("labels").unwrap();
            assert!(b.i32("attention_mask").unwrap().iter().all(|&m| m == 1));
            assert!(b.i32("token_type_ids").unwrap().iter().all(|&m| m == 0));
            for r in 0..8 {
                let row = &ids[r * 17..(r + 1) * 17];
                let lab = &labels[r * 17..(r + 1) * 17];
                assert_eq!(row[0], 2);
                assert_eq!(row[16], 3);
                assert_eq!((lab[0], lab[16]), (IGNORE, IGNORE));
                // The original window: the label where chosen, the input elsewhere.
                let orig: Vec<u32> = (1..16)
                    .map(|p| if lab[p] != IGNORE { lab[p] } else { row[p] } as u32)
                    .collect();
                let found = s.data.train.windows(15).any(|w| w == orig.as_slice());
                assert!(found, "row {r} of batch {index} is not a window");
                for p in 1..16 {
                    if lab[p] != IGNORE {
                        assert!(lab[p] >= 5, "special token {} chosen", lab[p]);
                        assert!(
                            row[p] == 4 || row[p] >= 5,
                            "replacement {} is special",
                            row[p]
                        );
                    } else {
                        assert_ne!(row[p], 4, "[MASK] where no label");
                    }
                }
                let n_ordinary = orig.iter().filter(|&&t| t >= 5).count();
                let chosen = lab.iter().filter(|&&l| l != IGNORE).count();
                let x = 0.15 * n_ordinary as f64;
                assert!(
                    chosen == (x.floor() as usize).max(1) || chosen == (x.ceil() as usize).max(1),
                    "{chosen} of {n_ordinary}"
                );
            }
        }
    }

    /// Over 2000 batches of 8 × 128 (≈ 1.9M ordinary positions, ≈ 290k
    /// chosen): chosen 15% ± 0.2 points (exact in expectation);
    /// of the chosen, [MASK] 80% ± 0.5, random 10% ± 0.5, unchanged 10% ±
    /// 0.5 (a random replacement equal to the original counts as
    /// unchanged: 1/45 of the random ones here, so ≈ 9.8% / 10.2%).
    #[test]
    fn masking_rates() {
        let s = source(11, 8, 128);
        let (mut ordinary, mut chosen, mut masked, mut random, mut same) = (0, 0, 0, 0, 0);
        for index in 0..2000 {
            let b = s.train_batch(index).unwrap();
            let ids = b.i32("input_ids").unwrap();
            let labels = b.i32("labels").unwrap();
            for (&x, &l) in ids.iter().zip(labels) {
                if l == IGNORE {
                    ordinary += (x >= 5) as u64;
                    continue;
                }
                ordinary += 1;
                chosen += 1;
                if x == 4 {
                    masked += 1;
                } else if x == l {
                    same += 1;
                } else {
                    random += 1;
                }
            }
        }
        let pct = |a: u64, b: u64| 100.0 * a as f64 / b as f64;
        let (c, m, r, u) = (
            pct(chosen, ordinary),
            pct(masked, chosen),
            pct(random, chosen),
            pct(same, chosen),
        );
        println!("chosen {c:.3}% of {ordinary}; [MASK] {m:.2}%, random {r:.2}%, unchanged {u:.2}%");
        assert!((c - 15.0).abs() < 0.2, "{c}");
        assert!((m - 80.0).abs() < 0.5, "{m}");
        assert!((r - 9.8).abs() < 0.5, "{r}");
        assert!((u - 10.2).abs() < 0.5, "{u}");
    }

    #[test]
    fn unigram_baseline_of_uniform_tokens() {
        let s = source(1, 2, 10);
        let b = s.unigram_baseline();
        // 45 equiprobable ordinary tokens: entropy ≈ ln 45, accuracy ≈ 1/45.
        let h = (45f64).ln();
        assert!((b.train_entropy - h).abs() < 0.01, "{b:?}");
        assert!((b.val_cross_entropy.unwrap() - h).abs() < 0.02, "{b:?}");
        assert!((b.majority_accuracy - 1.0 / 45.0).abs() < 0.01, "{b:?}");
    }

    #[test]
    fn errors_are_clear() {
        let data = TokenDataset::split((5..15).collect(), 0.0).unwrap();
        let e = MaskedLm::with_specials(data.clone(), SP, &[], V, 0, 2, 20)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("training split has 10 tokens") && e.contains("--seq"),
            "{e}"
        );
        let e = MaskedLm::with_specials(data.clone(), SP, &[], V, 0, 2, 2)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("seq ≥ 3"), "{e}");
        let e = MaskedLm::new(data, &crate::data::ByteTokenizer, 0, 2, 8)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("no [CLS] token") && e.contains("wordpiece"),
            "{e}"
        );
    }
}
