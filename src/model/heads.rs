//! The task head of Hugging Face's `*ForSequenceClassification` and
//! `*ForImageClassification` classes, shared by every family: class names
//! (`id2label`, `label2id`), `problem_type`, and the loss. One label means
//! regression (mean squared error on f32 targets), more mean single-label
//! classification (cross-entropy on i32 class ids, −100 ignored), as
//! Hugging Face decides from `num_labels`.

use anyhow::{bail, ensure, Result};

use super::Outputs;
use crate::data::{Batch, InputSpec};
use crate::graph::{Graph, TensorId};
use crate::runtime::DType;

#[derive(Clone, Debug, PartialEq)]
pub struct ClassHead {
    /// Class names by id; a single entry is a regression target's name.
    pub labels: Vec<String>,
}

impl ClassHead {
    pub fn new(labels: Vec<String>) -> Result<Self> {
        ensure!(
            !labels.is_empty(),
            "a classification head needs at least one label (one label = regression)"
        );
        Ok(Self { labels })
    }

    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }

    pub fn is_regression(&self) -> bool {
        self.labels.len() == 1
    }

    /// The head a `config.json` describes: `id2label` (or `num_labels`,
    /// named LABEL_i as Hugging Face does); `None` when it gives neither.
    pub fn from_config(v: &serde_json::Value) -> Result<Option<Self>> {
        if let Some(map) = v.get("id2label").and_then(|m| m.as_object()) {
            let mut pairs = Vec::with_capacity(map.len());
            for (k, name) in map {
                let Ok(i) = k.parse::<usize>() else {
                    bail!("config.json id2label has the key {k:?}; keys must be class ids 0…n−1");
                };
                pairs.push((i, name.as_str().unwrap_or_default().to_string()));
            }
            pairs.sort();
            for (want, (i, _)) in pairs.iter().enumerate() {
                ensure!(
                    *i == want,
                    "config.json id2label lacks class id {want} (ids must be 0…{})",
                    pairs.len() - 1
                );
            }
            return Ok(Some(Self::new(pairs.into_iter().map(|p| p.1).collect())?));
        }
        if let Some(n) = v.get("num_labels").and_then(|n| n.as_u64()) {
            return Ok(Some(Self::new(
                (0..n).map(|i| format!("LABEL_{i}")).collect(),
            )?));
        }
        Ok(None)
    }

    /// Writes `id2label`, `label2id`, `num_labels` and `problem_type`.
    pub fn write_config(&self, v: &mut serde_json::Value) {
        let id2label: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, n)| (i.to_string(), n.clone().into()))
            .collect();
        let label2id: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i.into()))
            .collect();
        v["id2label"] = id2label.into();
        v["label2id"] = label2id.into();
        v["num_labels"] = self.num_labels().into();
        v["problem_type"] = if self.is_regression() {
            "regression"
        } else {
            "single_label_classification"
        }
        .into();
    }

    /// `labels` [B]: i32 class ids, or f32 targets for regression.
    pub fn label_spec(&self, batch: usize) -> InputSpec {
        let dtype = if self.is_regression() {
            DType::F32
        } else {
            DType::I32
        };
        InputSpec::new("labels", &[batch], dtype)
    }

    /// The loss (and accuracy, for classes) of `logits` [B, num_labels]
    /// against `inputs["labels"]` when present; `logits` always.
    pub fn outputs(
        &self,
        g: &mut Graph,
        logits: TensorId,
        labels: Option<TensorId>,
    ) -> Result<Outputs> {
        g.rename(logits, "logits");
        let mut out = Outputs::default();
        out.tensors.insert("logits".into(), logits);
        let Some(labels) = labels else {
            return Ok(out);
        };
        let b = g.shape(logits)[0];
        ensure!(
            g.shape(labels) == [b],
            "labels must be [B] = [{b}], is {:?}",
            g.shape(labels)
        );
        let loss = if self.is_regression() {
            ensure!(
                g.dtype(labels) == DType::F32,
                "a regression head (num_labels = 1) takes f32 labels"
            );
            let y = g.reshape(labels, &[b, 1])?;
            g.mse_loss(logits, y)?
        } else {
            ensure!(
                g.dtype(labels) == DType::I32,
                "a classification head takes i32 class ids as labels"
            );
            let loss = g.cross_entropy(logits, labels, -100)?;
            out.metrics
                .push(("accuracy".into(), g.accuracy(logits, labels, -100)?));
            loss
        };
        out.losses.push(("loss".into(), loss, 1.0));
        out.tensors.insert("loss".into(), loss);
        Ok(out)
    }

    /// Checks a batch's `labels`, when it has them: class ids in
    /// [0, num_labels) or −100, or finite regression targets.
    pub fn check_labels(&self, batch: &Batch) -> Result<()> {
        if batch.get("labels").is_none() {
            return Ok(());
        }
        if self.is_regression() {
            let y = batch.f32("labels")?;
            if let Some(i) = y.iter().position(|x| !x.is_finite()) {
                bail!("labels[{i}] is not a finite number");
            }
        } else {
            let n = self.num_labels() as i32;
            let l = batch.i32("labels")?;
            if let Some((i, bad)) = l
                .iter()
                .enumerate()
                .find(|(_, x)| !((0..n).contains(*x) || **x == -100))
            {
                bail!(
                    "labels[{i}] = {bad} is not a class id in [0, {n}) (the head has {n} labels: \
                     {})",
                    self.labels.join(", ")
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trip_and_bad_maps() {
        let h = ClassHead::new(vec!["moby".into(), "sotu".into()]).unwrap();
        let mut v = serde_json::json!({});
        h.write_config(&mut v);
        assert_eq!(v["problem_type"], "single_label_classification");
        assert_eq!(v["label2id"]["sotu"], 1);
        assert_eq!(ClassHead::from_config(&v).unwrap(), Some(h));
        let n = serde_json::json!({"num_labels": 3});
        assert_eq!(
            ClassHead::from_config(&n).unwrap().unwrap().labels,
            ["LABEL_0", "LABEL_1", "LABEL_2"]
        );
        let gap = serde_json::json!({"id2label": {"0": "a", "2": "c"}});
        let e = ClassHead::from_config(&gap).unwrap_err().to_string();
        assert!(e.contains("lacks class id 1"), "{e}");
        assert!(ClassHead::from_config(&serde_json::json!({}))
            .unwrap()
            .is_none());
        let r = ClassHead::new(vec!["tpsa".into()]).unwrap();
        let mut v = serde_json::json!({});
        r.write_config(&mut v);
        assert_eq!(v["problem_type"], "regression");
    }
}
