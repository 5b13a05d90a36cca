//! Data sources: what feeds a trainer. A source turns a dataset into named
//! batches for one objective; training batches depend only on their index
//! (and the seed), so a resumed run sees exactly the batches of an
//! uninterrupted one.

use anyhow::Result;

use super::batch::{Batch, InputSpec};
use super::loader::TokenDataset;
use crate::runtime::DType;

/// Batches for a trainer.
pub trait DataSource: Send {
    /// Name, shape and type of every tensor of one micro-batch.
    fn layout(&self) -> Vec<InputSpec>;
    /// Micro-batch number `index` (counted over the whole run) for training.
    fn train_batch(&self, index: u64) -> Result<Batch>;
    /// The fixed validation batches (at most `max`; none if the split is empty).
    fn val_batches(&self, max: usize) -> Result<Vec<Batch>>;
    /// Tokens (or examples) in one micro-batch, for throughput figures.
    fn items_per_batch(&self) -> u64;
    /// What the data is, in a few words ("9000 train / 1000 val tokens").
    fn describe(&self) -> String;
}

/// Causal language modelling (GPT): random windows of a token stream as
/// `input_ids`, the next token at each position as `targets`.
pub struct CausalLm {
    pub data: TokenDataset,
    pub seed: u64,
    pub batch: usize,
    pub seq: usize,
}

fn lm_batch(b: usize, t: usize, (x, y): (Vec<i32>, Vec<i32>)) -> Batch {
    Batch::new()
        .with_i32("input_ids", &[b, t], x)
        .with_i32("targets", &[b, t], y)
}

impl DataSource for CausalLm {
    fn layout(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::new("input_ids", &[self.batch, self.seq], DType::I32),
            InputSpec::new("targets", &[self.batch, self.seq], DType::I32),
        ]
    }

    fn train_batch(&self, index: u64) -> Result<Batch> {
        let xy = self
            .data
            .train_batch(self.seed, index, self.batch, self.seq)?;
        Ok(lm_batch(self.batch, self.seq, xy))
    }

    fn val_batches(&self, max: usize) -> Result<Vec<Batch>> {
        let n = self.data.num_val_batches(self.batch, self.seq).min(max);
        (0..n)
            .map(|i| {
                Ok(lm_batch(
                    self.batch,
                    self.seq,
                    self.data.val_batch(i, self.batch, self.seq)?,
                ))
            })
            .collect()
    }

    fn items_per_batch(&self) -> u64 {
        (self.batch * self.seq) as u64
    }

    fn describe(&self) -> String {
        format!(
            "{} train / {} val tokens",
            self.data.train.len(),
            self.data.val.len()
        )
    }
}
