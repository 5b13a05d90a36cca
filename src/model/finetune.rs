//! The model a fine-tuning run trains: a pretrained checkpoint's backbone
//! (its `config.json`, Kiln's or one saved by Hugging Face) with the head
//! the labelled data asks for, as `AutoModelFor….from_pretrained(dir,
//! num_labels=…)` builds it: `BertForSequenceClassification`,
//! `GPT2ForSequenceClassification`, `ViTForImageClassification` with the
//! data's classes, the GIN's regression head.

use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Result};

use super::heads::ClassHead;
use super::{bert, gin, gpt2, vit, Model, ModelDims};

/// `pre`: the checkpoint's config.json; `d`: what the data decides
/// (vocabulary of the tokenizer, classes, image size, graph features);
/// `seq`: the sequence length of the batches.
pub fn for_finetune(pre: &serde_json::Value, d: &ModelDims, seq: usize) -> Result<Arc<dyn Model>> {
    let ty = pre
        .get("model_type")
        .and_then(|t| t.as_str())
        .unwrap_or("gpt2");
    let head = || ClassHead::new(d.labels.clone());
    let vocab = |have: usize| -> Result<()> {
        ensure!(
            have == d.vocab_size,
            "the checkpoint's vocabulary has {have} tokens and the tokenizer {}: use the \
             tokenizer saved with the checkpoint",
            d.vocab_size
        );
        Ok(())
    };
    let context = |have: usize| -> Result<()> {
        ensure!(
            seq <= have,
            "--seq {seq} is longer than the checkpoint's {have} positions: pass --seq {have} or less"
        );
        Ok(())
    };
    match ty {
        "bert" => {
            let cfg = bert::Bert::from_config_json(pre)?.cfg;
            vocab(cfg.vocab_size)?;
            context(cfg.max_position_embeddings)?;
            if d.labels.is_empty() {
                // No labels: more masked-LM pretraining from the checkpoint.
                return Ok(Arc::new(bert::Bert::new(cfg)?));
            }
            Ok(Arc::new(bert::Bert::classifier(cfg, head()?)?))
        }
        "gpt2" => {
            let cfg = gpt2::Gpt2::from_config_json(pre)?.cfg;
            vocab(cfg.vocab_size)?;
            context(cfg.n_positions)?;
            if d.labels.is_empty() {
                // No labels: more causal-LM training from the checkpoint.
                return Ok(Arc::new(gpt2::Gpt2::new(cfg)?));
            }
            Ok(Arc::new(gpt2::Gpt2::classifier(cfg, head()?, d.pad)?))
        }
        "vit" => {
            let im = d
                .image
                .ok_or_else(|| anyhow!("a ViT fine-tunes on images; the data has none"))?;
            let mut v = pre.clone();
            for k in [
                "id2label",
                "label2id",
                "num_labels",
                "problem_type",
                "encoder_stride",
                "mask_ratio",
            ] {
                if let Some(o) = v.as_object_mut() {
                    o.remove(k);
                }
            }
            v["architectures"] = serde_json::json!(["ViTForImageClassification"]);
            head()?.write_config(&mut v);
            let m = vit::Vit::from_config_json(&v)?;
            ensure!(
                m.cfg.image_size == im.size && m.cfg.num_channels == im.channels,
                "the checkpoint takes {0}×{0} images with {1} channel(s); the data's are {2}×{2} \
                 with {3}",
                m.cfg.image_size,
                m.cfg.num_channels,
                im.size,
                im.channels
            );
            Ok(Arc::new(m))
        }
        "gin" => {
            let pre_cfg = gin::Gin::from_config_json(pre)?.cfg;
            let mut c = d
                .graph
                .clone()
                .ok_or_else(|| anyhow!("a GIN fine-tunes on molecules; the data has none"))?;
            ensure!(
                c.atom_vocab_sizes == pre_cfg.atom_vocab_sizes
                    && c.bond_vocab_sizes == pre_cfg.bond_vocab_sizes,
                "the checkpoint's feature vocabularies ({:?}, {:?}) differ from the data's ({:?}, \
                 {:?})",
                pre_cfg.atom_vocab_sizes,
                pre_cfg.bond_vocab_sizes,
                c.atom_vocab_sizes,
                c.bond_vocab_sizes
            );
            c.hidden_size = pre_cfg.hidden_size;
            c.num_layers = pre_cfg.num_layers;
            Ok(Arc::new(gin::Gin::new(c)?))
        }
        "clip" => {
            let im = d.image.ok_or_else(|| {
                anyhow!("CLIP's image tower fine-tunes on images; the data has none")
            })?;
            let mut v = pre.clone();
            for k in ["id2label", "label2id", "num_labels", "problem_type"] {
                if let Some(o) = v.as_object_mut() {
                    o.remove(k);
                }
            }
            let clip = super::clip::Clip::from_config_json(&v)?;
            if d.labels.is_empty() {
                // No labels: more contrastive pretraining from the checkpoint.
                vocab(clip.cfg.text_config.vocab_size)?;
                context(clip.cfg.text_config.max_position_embeddings)?;
                return Ok(Arc::new(clip));
            }
            // The image tower with a classifier (CLIPForImageClassification).
            let vc = &clip.cfg.vision_config;
            ensure!(
                vc.image_size == im.size && vc.num_channels == im.channels,
                "the checkpoint's image tower takes {0}×{0} images with {1} channel(s); the data's \
                 are {2}×{2} with {3}",
                vc.image_size,
                vc.num_channels,
                im.size,
                im.channels
            );
            Ok(Arc::new(super::clip::ClipImageClassifier {
                clip,
                head: head()?,
            }))
        }
        other => {
            bail!("the checkpoint is a {other:?} model; Kiln fine-tunes gpt2, bert, vit and gin")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ImageDims, Model};

    fn dims(vocab: usize, labels: &[&str], image: Option<usize>) -> ModelDims {
        ModelDims {
            vocab_size: vocab,
            labels: labels.iter().map(|s| s.to_string()).collect(),
            image: image.map(|size| ImageDims {
                size,
                channels: 1,
                patch: 7,
            }),
            pad: Some(0),
            ..Default::default()
        }
    }

    #[test]
    fn heads_by_family_and_what_does_not_fit_is_named() {
        let bert = bert::Bert::new(bert::BertConfig::new(50, 16, 2, 2, 32)).unwrap();
        let pre = bert.config_json();
        let m = for_finetune(&pre, &dims(50, &["a", "b"], None), 16).unwrap();
        assert_eq!(m.architecture(), "BertForSequenceClassification");
        let e = for_finetune(&pre, &dims(60, &["a", "b"], None), 16)
            .unwrap_err()
            .to_string();
        assert!(e.contains("50 tokens") && e.contains("60"), "{e}");
        let e = for_finetune(&pre, &dims(50, &["a", "b"], None), 64)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--seq 64") && e.contains("32 positions"), "{e}");
        // No labels: the language model itself (continued pretraining).
        let m = for_finetune(&pre, &dims(50, &[], None), 16).unwrap();
        assert_eq!(m.architecture(), "BertForMaskedLM");

        let gpt = gpt2::Gpt2::new(gpt2::GptConfig::new(40, 16, 16, 2, 1)).unwrap();
        let m = for_finetune(&gpt.config_json(), &dims(40, &["x", "y", "z"], None), 16).unwrap();
        assert_eq!(m.architecture(), "GPT2ForSequenceClassification");
        assert_eq!(m.config_json()["num_labels"], 3);

        let labels: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let vit = vit::Vit::new(vit::VitConfig::new(16, 1, 2, 28, 7, 1, &labels)).unwrap();
        let m = for_finetune(&vit.config_json(), &dims(0, &["a", "b"], Some(28)), 1).unwrap();
        assert_eq!(m.config_json()["id2label"]["1"], "b");
        let e = for_finetune(&vit.config_json(), &dims(0, &["a", "b"], Some(32)), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("28×28") && e.contains("32×32"), "{e}");
        let e = for_finetune(&vit.config_json(), &dims(50, &["a", "b"], None), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("images"), "{e}");

        let e = for_finetune(
            &serde_json::json!({"model_type": "t5"}),
            &dims(1, &[], None),
            1,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"t5\""), "{e}");
    }
}
