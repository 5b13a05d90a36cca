//! Token datasets: a train/validation split and deterministic batches.
//!
//! Training batches are random windows whose offsets depend only on
//! `(seed, step)`, so batch `k` is the same whether a run went straight
//! through or was resumed from a checkpoint at step `j < k`. Validation
//! batches are fixed contiguous chunks of the validation split.

use anyhow::{bail, Result};

use crate::util::Rng;

/// Tokens split into a training part and a validation part (the tail).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenDataset {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

/// The seed of the generator that draws the offsets of batch `step`.
fn batch_seed(seed: u64, step: u64) -> u64 {
    let mut r = Rng::new(seed);
    let s = r.next_u64();
    Rng::new(s ^ step).next_u64()
}

fn to_i32(what: &str, t: u32) -> Result<i32> {
    i32::try_from(t).or_else(|_| bail!("{what} token id {t} does not fit in i32"))
}

fn check_shape(batch: usize, seq: usize) -> Result<()> {
    if batch == 0 || seq == 0 {
        bail!("batch ({batch}) and seq ({seq}) must both be at least 1");
    }
    Ok(())
}

impl TokenDataset {
    /// The last `val_fraction` of the tokens (rounded to the nearest token)
    /// becomes the validation split, the rest the training split.
    /// `val_fraction` must be in [0, 1); with 0 the validation split is
    /// empty. Errors if the training split, or a non-empty-by-request
    /// validation split, has fewer than 2 tokens (one input, one target).
    pub fn split(mut tokens: Vec<u32>, val_fraction: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&val_fraction) {
            bail!("--val-fraction must be in [0, 1), got {val_fraction}");
        }
        let n = tokens.len();
        let n_val = (n as f64 * val_fraction).round() as usize;
        if val_fraction > 0.0 && n_val < 2 {
            bail!(
                "validation split would have {n_val} tokens ({n} tokens × val-fraction \
                 {val_fraction}); it needs at least 2: use a longer text or a larger --val-fraction"
            );
        }
        if n - n_val < 2 {
            bail!(
                "training split would have {} tokens ({n} tokens, val-fraction {val_fraction}); \
                 it needs at least 2: use a longer text or a smaller --val-fraction",
                n - n_val
            );
        }
        let val = tokens.split_off(n - n_val);
        Ok(Self { train: tokens, val })
    }

    /// Random windows for training: `inputs[b·seq + t] = train[o_b + t]`,
    /// `targets[b·seq + t] = train[o_b + t + 1]`, with offsets `o_b` drawn
    /// uniformly from `[0, len − seq − 1]` by `Rng::new(hash(seed, step))`:
    /// the same `(seed, step)` always gives the same batch.
    pub fn train_batch(
        &self,
        seed: u64,
        step: u64,
        batch: usize,
        seq: usize,
    ) -> Result<(Vec<i32>, Vec<i32>)> {
        check_shape(batch, seq)?;
        let n = self.train.len();
        if n < seq + 1 {
            bail!(
                "training split has {n} tokens; seq {seq} needs {}: use a longer text or a \
                 smaller --val-fraction/--seq",
                seq + 1
            );
        }
        let mut rng = Rng::new(batch_seed(seed, step));
        let mut inputs = Vec::with_capacity(batch * seq);
        let mut targets = Vec::with_capacity(batch * seq);
        for _ in 0..batch {
            let o = rng.below((n - seq) as u64) as usize;
            for &t in &self.train[o..o + seq] {
                inputs.push(to_i32("training", t)?);
            }
            for &t in &self.train[o + 1..o + seq + 1] {
                targets.push(to_i32("training", t)?);
            }
        }
        Ok((inputs, targets))
    }

    /// Number of validation batches: `⌊(len − 1) / (batch·seq)⌋`.
    pub fn num_val_batches(&self, batch: usize, seq: usize) -> usize {
        let per = batch.saturating_mul(seq);
        if per == 0 {
            return 0;
        }
        self.val.len().saturating_sub(1) / per
    }

    /// The `index`-th validation batch: the contiguous chunk
    /// `val[index·B·T .. (index+1)·B·T]` as inputs (row `b` is
    /// `val[index·B·T + b·T ..][..T]`) and the same shifted by one token as
    /// targets.
    pub fn val_batch(
        &self,
        index: usize,
        batch: usize,
        seq: usize,
    ) -> Result<(Vec<i32>, Vec<i32>)> {
        check_shape(batch, seq)?;
        let count = self.num_val_batches(batch, seq);
        let per = batch * seq;
        if count == 0 {
            bail!(
                "validation split has {} tokens; batch {batch} × seq {seq} needs {}: use a \
                 longer text, a larger --val-fraction, or a smaller --batch/--seq",
                self.val.len(),
                per + 1
            );
        }
        if index >= count {
            bail!("validation batch {index} out of range: there are {count} (batch {batch} × seq {seq})");
        }
        let start = index * per;
        let inputs = self.val[start..start + per]
            .iter()
            .map(|&t| to_i32("validation", t))
            .collect::<Result<_>>()?;
        let targets = self.val[start + 1..start + per + 1]
            .iter()
            .map(|&t| to_i32("validation", t))
            .collect::<Result<_>>()?;
        Ok((inputs, targets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(n: usize, val_fraction: f64) -> TokenDataset {
        TokenDataset::split((0..n as u32).collect(), val_fraction).unwrap()
    }

    #[test]
    fn split_takes_the_tail() {
        let d = ds(100, 0.1);
        assert_eq!(d.train, (0..90).collect::<Vec<_>>());
        assert_eq!(d.val, (90..100).collect::<Vec<_>>());
        assert!(ds(10, 0.0).val.is_empty());
        let e = TokenDataset::split(vec![1; 10], 0.05)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("validation split would have 1 tokens")
                && e.contains("larger --val-fraction"),
            "{e}"
        );
        let e = TokenDataset::split(vec![1; 3], 0.9)
            .unwrap_err()
            .to_string();
        assert!(e.contains("training split would have 0 tokens"), "{e}");
        let e = TokenDataset::split(vec![1; 30], 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[0, 1)"), "{e}");
    }

    #[test]
    fn train_batches_are_windows_and_deterministic() {
        let d = ds(1000, 0.1);
        let (x, y) = d.train_batch(42, 7, 4, 16).unwrap();
        assert_eq!((x.len(), y.len()), (64, 64));
        for b in 0..4 {
            let row = &x[b * 16..(b + 1) * 16];
            let o = row[0];
            assert!(o >= 0 && (o as usize) + 16 < 900);
            for t in 0..16 {
                assert_eq!(row[t], o + t as i32);
                assert_eq!(y[b * 16 + t], o + t as i32 + 1);
            }
        }
        // Same (seed, step) → same batch, regardless of what came before.
        let _ = d.train_batch(42, 3, 4, 16).unwrap();
        assert_eq!(d.train_batch(42, 7, 4, 16).unwrap(), (x.clone(), y));
        assert_ne!(d.train_batch(42, 8, 4, 16).unwrap().0, x);
        assert_ne!(d.train_batch(43, 7, 4, 16).unwrap().0, x);
        // Every offset in range is reachable, including the last one.
        let small = ds(20, 0.0);
        let mut seen = [false; 4];
        for step in 0..200 {
            let (x, _) = small.train_batch(1, step, 1, 16).unwrap();
            seen[x[0] as usize] = true;
        }
        assert_eq!(seen, [true; 4]);
    }

    #[test]
    fn val_batches_are_contiguous_chunks() {
        let d = ds(1000, 0.2); // val = 800..1000
        assert_eq!(d.num_val_batches(2, 10), 9); // ⌊199 / 20⌋
        for i in 0..9 {
            let (x, y) = d.val_batch(i, 2, 10).unwrap();
            let start = 800 + 20 * i as i32;
            assert_eq!(x, (start..start + 20).collect::<Vec<_>>());
            assert_eq!(y, (start + 1..start + 21).collect::<Vec<_>>());
        }
        let e = d.val_batch(9, 2, 10).unwrap_err().to_string();
        assert!(
            e.contains("out of range") && e.contains("there are 9"),
            "{e}"
        );
        // Exactly B·T + 1 tokens give one batch.
        let d = TokenDataset {
            train: vec![0; 10],
            val: (0..21).collect(),
        };
        assert_eq!(d.num_val_batches(2, 10), 1);
        assert_eq!(d.val_batch(0, 2, 10).unwrap().1.last(), Some(&20));
    }

    #[test]
    fn errors_say_what_is_short_and_what_to_do() {
        let d = TokenDataset {
            train: vec![0; 50],
            val: vec![0; 100],
        };
        let e = d.val_batch(0, 4, 64).unwrap_err().to_string();
        assert_eq!(
            e,
            "validation split has 100 tokens; batch 4 × seq 64 needs 257: use a longer text, a \
             larger --val-fraction, or a smaller --batch/--seq"
        );
        let e = d.train_batch(0, 0, 4, 64).unwrap_err().to_string();
        assert_eq!(
            e,
            "training split has 50 tokens; seq 64 needs 65: use a longer text or a smaller \
             --val-fraction/--seq"
        );
        assert!(d
            .train_batch(0, 0, 0, 4)
            .unwrap_err()
            .to_string()
            .contains("at least 1"));
        assert!(d.val_batch(0, 1, 0).is_err());
        assert_eq!(d.num_val_batches(0, 5), 0);
        let big = TokenDataset {
            train: vec![u32::MAX; 10],
            val: vec![],
        };
        let e = big.train_batch(0, 0, 1, 4).unwrap_err().to_string();
        assert!(e.contains("does not fit in i32"), "{e}");
    }
}
