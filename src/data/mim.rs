//! Masked image modelling batches (ViT self-supervised pretraining): the
//! images of an [`ImageClassification`] source without their labels, and
//! `bool_masked_pos` [B, N] with exactly `masked` of each image's N patches
//! set, drawn from (seed, batch index, row) so that batches are a function
//! of the step (exact resume). Validation batches are the test images with
//! masks from a fixed seed.

use anyhow::{ensure, Result};

use super::images::ImageClassification;
use super::{Batch, DataSource, InputSpec};
use crate::util::Rng;

pub struct MaskedPatches {
    pub images: ImageClassification,
    /// Patches per image and masked patches per image.
    pub patches: usize,
    pub masked: usize,
    pub seed: u64,
}

/// The seed of the validation masks (the same for every run).
const VAL_SEED: u64 = 0x3A5C_0FF1;

impl MaskedPatches {
    pub fn new(
        images: ImageClassification,
        patches: usize,
        masked: usize,
        seed: u64,
    ) -> Result<Self> {
        ensure!(
            masked >= 1 && masked < patches,
            "masked image modelling: mask between 1 and {} of {patches} patches, not {masked}",
            patches - 1
        );
        Ok(Self {
            images,
            patches,
            masked,
            seed,
        })
    }

    fn with_mask(&self, mut b: Batch, seed: u64, index: u64) -> Batch {
        b.remove("labels");
        let rows = self.images.batch;
        let mut rng = Rng::new(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut m = vec![0i32; rows * self.patches];
        for r in 0..rows {
            let mut idx: Vec<usize> = (0..self.patches).collect();
            rng.shuffle(&mut idx);
            for &i in &idx[..self.masked] {
                m[r * self.patches + i] = 1;
            }
        }
        b.with_i32("bool_masked_pos", &[rows, self.patches], m)
    }
}

impl DataSource for MaskedPatches {
    fn layout(&self) -> Vec<InputSpec> {
        let mut l: Vec<InputSpec> = self
            .images
            .layout()
            .into_iter()
            .filter(|s| s.name != "labels")
            .collect();
        l.push(InputSpec::new(
            "bool_masked_pos",
            &[self.images.batch, self.patches],
            crate::runtime::DType::I32,
        ));
        l.sort_by(|a, b| a.name.cmp(&b.name));
        l
    }

    fn train_batch(&self, index: u64) -> Result<Batch> {
        Ok(self.with_mask(self.images.train_batch(index)?, self.seed, index))
    }

    fn val_batches(&self, max: usize) -> Result<Vec<Batch>> {
        Ok(self
            .images
            .val_batches(max)?
            .into_iter()
            .enumerate()
            .map(|(k, b)| self.with_mask(b, VAL_SEED, k as u64))
            .collect())
    }

    fn items_per_batch(&self) -> u64 {
        self.images.batch as u64
    }

    fn describe(&self) -> String {
        format!(
            "{} unlabelled training images, {} of {} patches masked per image; validation on {} \
             test images",
            self.images.train.len(),
            self.masked,
            self.patches,
            self.images.test.len()
        )
    }
}
