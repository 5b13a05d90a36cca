//! Image–text pairs for CLIP from Fashion-MNIST: every image gets a caption
//! made from its class and attributes through varied templates; some
//! templates are held out for zero-shot evaluation.
//!
//! # Captions
//!
//! A caption is a template (`"a grayscale photo of a {}."`) filled with a
//! noun phrase: one of the class's names (`"pullover"`, `"sweater"`,
//! `"jumper"`), preceded with probability 0.6 by one of the class's
//! attributes (`"long-sleeved"`, `"knit"`, …); `a` becomes `an` before a
//! vowel. All templates, names and attributes are written here for Kiln.
//!
//! [`TRAIN_TEMPLATES`] make the training captions; [`HELD_OUT_TEMPLATES`]
//! never do (tested): zero-shot classification embeds one prompt per class
//! from a held-out template and the class's first name, without attributes
//! ([`zero_shot_prompts`]). Validation pairs use held-out prompts too.
//!
//! # Rows
//!
//! `input_ids` are `<|startoftext|>`, the caption's tokens, `<|endoftext|>`,
//! then the pad id up to `T`; `attention_mask` is 1 up to and including
//! `<|endoftext|>`. A caption longer than `T − 2` tokens is truncated to its
//! first `T − 2` so that every row keeps its end-of-text token (where the
//! text tower pools); [`ClipPairs::truncated`] counts the affected captions
//! and [`ClipPairs::describe`](super::DataSource::describe) reports it. The
//! pad id is `<|endoftext|>`, as in OpenAI's CLIP tokenizer (padding is
//! masked out, and the first end-of-text is the pooled one either way).

use anyhow::{anyhow, bail, Result};

use super::batch::{Batch, InputSpec};
use super::hf_tokenizer::{END_OF_TEXT, START_OF_TEXT};
use super::images::{EpochSampler, ImageSet, Normalization};
use super::mlm::{derive_seed, IGNORE};
use super::source::DataSource;
use super::tokenizer::Tokenizer;
use crate::runtime::DType;
use crate::util::Rng;

/// How a Fashion-MNIST class is described.
#[derive(Clone, Copy, Debug)]
pub struct ClassWords {
    /// Names; the first is the one zero-shot prompts use.
    pub names: &'static [&'static str],
    /// Attributes that can precede a name.
    pub attributes: &'static [&'static str],
}

/// Fashion-MNIST's classes, by label.
pub const FASHION_WORDS: [ClassWords; 10] = [
    ClassWords {
        names: &["t-shirt", "top", "tee"],
        attributes: &[
            "short-sleeved",
            "cotton",
            "crew-neck",
            "plain",
            "printed",
            "casual",
            "sleeveless",
            "loose",
            "striped",
            "v-neck",
            "graphic",
        ],
    },
    ClassWords {
        names: &["trouser", "pair of trousers", "pair of pants"],
        attributes: &[
            "long",
            "slim",
            "straight-leg",
            "denim",
            "wide-leg",
            "casual",
            "tailored",
            "dark",
            "baggy",
            "flared",
            "pleated",
        ],
    },
    ClassWords {
        names: &["pullover", "sweater", "jumper"],
        attributes: &[
            "long-sleeved",
            "knit",
            "wool",
            "warm",
            "cozy",
            "ribbed",
            "chunky",
            "crew-neck",
            "turtleneck",
            "thick",
            "soft",
        ],
    },
    ClassWords {
        names: &["dress", "frock", "gown"],
        attributes: &[
            "long",
            "short",
            "sleeveless",
            "summer",
            "flowing",
            "fitted",
            "pleated",
            "evening",
            "strapless",
            "knee-length",
            "elegant",
        ],
    },
    ClassWords {
        names: &["coat", "overcoat", "winter jacket"],
        attributes: &[
            "long",
            "warm",
            "heavy",
            "buttoned",
            "hooded",
            "padded",
            "zip-up",
            "belted",
            "wool",
            "double-breasted",
            "thick",
        ],
    },
    ClassWords {
        names: &["sandal", "summer shoe", "open shoe"],
        attributes: &[
            "open-toe",
            "strappy",
            "flat",
            "high-heeled",
            "leather",
            "lightweight",
            "buckled",
            "beach",
            "platform",
            "simple",
            "slip-on",
        ],
    },
    ClassWords {
        names: &["shirt", "blouse", "button-up shirt"],
        attributes: &[
            "collared",
            "button-down",
            "long-sleeved",
            "checked",
            "formal",
            "flannel",
            "linen",
            "short-sleeved",
            "plaid",
            "office",
            "denim",
        ],
    },
    ClassWords {
        names: &["sneaker", "trainer", "running shoe"],
        attributes: &[
            "low-top",
            "sporty",
            "lace-up",
            "canvas",
            "white",
            "rubber-soled",
            "casual",
            "chunky",
            "athletic",
            "light",
            "breathable",
        ],
    },
    ClassWords {
        names: &["bag", "handbag", "purse"],
        attributes: &[
            "leather",
            "small",
            "large",
            "shoulder",
            "tote",
            "zippered",
            "square",
            "handheld",
            "canvas",
            "structured",
            "quilted",
        ],
    },
    ClassWords {
        names: &["ankle boot", "short boot", "bootie"],
        attributes: &[
            "leather", "heeled", "lace-up", "chelsea", "suede", "winter", "zip-up", "chunky",
            "black", "pointed", "sturdy",
        ],
    },
];

/// Templates of the training captions (`{}` is the noun phrase).
pub const TRAIN_TEMPLATES: &[&str] = &[
    "a photo of a {}.",
    "a grayscale photo of a {}.",
    "a picture of a {}.",
    "a low resolution photo of a {}.",
    "a small image of a {}.",
    "a black and white picture of a {}.",
    "a {} on a dark background.",
    "a product photo of a {}.",
    "a close-up of a {}.",
    "this is a {}.",
    "a cropped photo of the {}.",
    "an old photo of a {}.",
    "a thumbnail of a {}.",
    "a pixelated image of a {}.",
    "a catalog image of a {}.",
    "the {} in a tiny picture.",
    "a centered photo of a {}.",
    "a 28 by 28 pixel image of a {}.",
    "a fashion photo of a {}.",
    "a blurry photo of a {}.",
    "a {}.",
    "a fashion item: a {}.",
    "a scan of a {}.",
    "a shop picture of one {}.",
];

/// Templates kept out of training, for zero-shot prompts and validation.
pub const HELD_OUT_TEMPLATES: &[&str] = &[
    "a good photo of a {}.",
    "a rendering of a {}.",
    "an image showing a {}.",
    "a monochrome snapshot of a {}.",
    "there is a {} in this picture.",
    "a photograph of the {}, seen from the front.",
];

/// Probability that a training caption's noun phrase has an attribute.
pub const ATTRIBUTE_RATE: f64 = 0.6;

const TAG_CLIP: u64 = 0x434c_4950; // "CLIP"

/// `template` with `{}` replaced by `phrase`; the article `a` becomes `an`
/// before a word starting with a vowel.
pub fn fill(template: &str, phrase: &str) -> String {
    let s = template.replace("{}", phrase);
    let words: Vec<&str> = s.split(' ').collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let next_vowel = words
            .get(i + 1)
            .and_then(|n| n.chars().next())
            .is_some_and(|c| "aeiou".contains(c));
        if *w == "a" && next_vowel {
            out.push_str("an");
        } else {
            out.push_str(w);
        }
    }
    out
}

/// One zero-shot prompt per class (by label) from held-out template
/// `template` and each class's first name: `"a good photo of a pullover."`.
pub fn zero_shot_prompts(template: usize) -> Result<Vec<String>> {
    let t = HELD_OUT_TEMPLATES.get(template).ok_or_else(|| {
        anyhow!(
            "held-out template {template} does not exist: there are {}",
            HELD_OUT_TEMPLATES.len()
        )
    })?;
    Ok(FASHION_WORDS.iter().map(|c| fill(t, c.names[0])).collect())
}

/// Every held-out template's prompts (`[template][class]`), for prompt
/// ensembling (average the normalised text embeddings per class).
pub fn zero_shot_prompt_sets() -> Vec<Vec<String>> {
    (0..HELD_OUT_TEMPLATES.len())
        .map(|t| zero_shot_prompts(t).expect("index in range"))
        .collect()
}

/// Number of distinct training captions of class `c`.
fn combos(c: usize) -> usize {
    let w = &FASHION_WORDS[c];
    TRAIN_TEMPLATES.len() * w.names.len() * (w.attributes.len() + 1)
}

/// Training caption number `k` of class `c` (`k < combos(c)`; attribute
/// slot 0 means none).
fn caption_of(c: usize, k: usize) -> String {
    let w = &FASHION_WORDS[c];
    let na = w.attributes.len() + 1;
    let (t, rest) = (k / (w.names.len() * na), k % (w.names.len() * na));
    let (name, a) = (rest / na, rest % na);
    let phrase = if a == 0 {
        w.names[name].to_string()
    } else {
        format!("{} {}", w.attributes[a - 1], w.names[name])
    };
    fill(TRAIN_TEMPLATES[t], &phrase)
}

/// Every training caption of class `c` (each once).
pub fn training_captions(c: usize) -> Vec<String> {
    (0..combos(c)).map(|k| caption_of(c, k)).collect()
}

/// All training captions of all classes, one per line: the text to train
/// the CLIP tokenizer on (`HfTokenizer::train(Flavour::Clip, …)`). Held-out
/// templates are not in it (their words are still byte-level encodable).
pub fn caption_corpus() -> String {
    let mut s = String::new();
    for c in 0..FASHION_WORDS.len() {
        for cap in training_captions(c) {
            s.push_str(&cap);
            s.push('\n');
        }
    }
    s
}

/// Draws a training caption of class `c`: template, name and attribute
/// uniform, an attribute with probability [`ATTRIBUTE_RATE`].
fn draw_caption(c: usize, rng: &mut Rng) -> usize {
    let w = &FASHION_WORDS[c];
    let na = w.attributes.len() + 1;
    let t = rng.below(TRAIN_TEMPLATES.len() as u64) as usize;
    let name = rng.below(w.names.len() as u64) as usize;
    let a = if rng.uniform() < ATTRIBUTE_RATE {
        1 + rng.below(w.attributes.len() as u64) as usize
    } else {
        0
    };
    (t * w.names.len() + name) * na + a
}

/// Token ids of CLIP rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipIds {
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
}

impl ClipIds {
    /// `<|startoftext|>` and `<|endoftext|>` of `tok` (pad = end-of-text).
    pub fn from_tokenizer(tok: &dyn Tokenizer) -> Result<Self> {
        let id = |t: &str| {
            tok.token_to_id(t).ok_or_else(|| {
                anyhow!(
                    "the {} tokenizer has no {t} token; CLIP needs one that does \
                     (--tokenizer clip-bpe, or a CLIP tokenizer.json)",
                    tok.kind()
                )
            })
        };
        let eos = id(END_OF_TEXT)?;
        Ok(Self {
            bos: id(START_OF_TEXT)?,
            eos,
            pad: eos,
        })
    }
}

/// Fails unless every row of `input_ids` `[B, T]` holds `eos` at a
/// position where `attention_mask` is 1: the check a CLIP batch must pass.
pub fn check_clip_rows(batch: &Batch, eos: u32) -> Result<()> {
    let ids = batch.i32("input_ids")?;
    let mask = batch.i32("attention_mask")?;
    let shape = &batch.get("input_ids").expect("checked").shape;
    if shape.len() != 2 || mask.len() != ids.len() {
        bail!("a CLIP batch needs input_ids and attention_mask of the same shape [B, T]");
    }
    let t = shape[1];
    for (r, (row, m)) in ids.chunks(t).zip(mask.chunks(t)).enumerate() {
        if !row.iter().zip(m).any(|(&x, &m)| x == eos as i32 && m != 0) {
            bail!(
                "row {r} of the CLIP batch has no end-of-text token (id {eos}) among its \
                 attended positions: the text tower pools at that token, so every caption must \
                 end with it (truncate the caption, not the end-of-text)"
            );
        }
    }
    Ok(())
}

/// CLIP pairs: Fashion-MNIST images with generated captions.
pub struct ClipPairs {
    pub train: ImageSet,
    pub test: ImageSet,
    pub norm: Normalization,
    pub batch: usize,
    /// Row length `T`, both special tokens included.
    pub seq: usize,
    pub ids: ClipIds,
    seed: u64,
    /// Token rows (unpadded, with bos and eos) of every training caption, by class.
    bank: Vec<Vec<Vec<u32>>>,
    /// Token rows of the held-out prompts, `[template][class]`.
    held_out: Vec<Vec<Vec<u32>>>,
    truncated: usize,
    sampler: EpochSampler,
}

impl ClipPairs {
    /// Pairs of `train` images (labels index [`FASHION_WORDS`]) with
    /// training captions; validation pairs `test` image `i` with the prompt
    /// of held-out template `i mod H` for its class. Captions are tokenized
    /// here once (`tok` needs `<|startoftext|>` and `<|endoftext|>`).
    pub fn new(
        train: ImageSet,
        test: ImageSet,
        norm: Normalization,
        tok: &dyn Tokenizer,
        seed: u64,
        batch: usize,
        seq: usize,
    ) -> Result<Self> {
        if batch < 2 {
            bail!("a contrastive batch needs at least 2 pairs, got {batch}");
        }
        if seq < 3 {
            bail!("seq {seq} is too short: a CLIP row needs <|startoftext|>, a token and <|endoftext|>");
        }
        if train.is_empty() {
            bail!("the training set is empty");
        }
        for set in [&train, &test] {
            if let Some(&l) = set
                .labels
                .iter()
                .find(|&&l| l as usize >= FASHION_WORDS.len())
            {
                bail!("label {l} has no caption words: CLIP pairs need Fashion-MNIST's 10 classes");
            }
        }
        let ids = ClipIds::from_tokenizer(tok)?;
        let mut truncated = 0;
        let mut row = |text: &str| {
            let mut body = tok.encode(text);
            if body.len() > seq - 2 {
                body.truncate(seq - 2);
                truncated += 1;
            }
            let mut r = Vec::with_capacity(body.len() + 2);
            r.push(ids.bos);
            r.extend(body);
            r.push(ids.eos);
            r
        };
        let bank: Vec<Vec<Vec<u32>>> = (0..FASHION_WORDS.len())
            .map(|c| training_captions(c).iter().map(|s| row(s)).collect())
            .collect();
        let held_out = zero_shot_prompt_sets()
            .iter()
            .map(|set| set.iter().map(|s| row(s)).collect())
            .collect();
        let sampler = EpochSampler::new(seed, train.len(), batch);
        Ok(Self {
            train,
            test,
            norm,
            batch,
            seq,
            ids,
            seed,
            bank,
            held_out,
            truncated,
            sampler,
        })
    }

    /// Captions (training and held-out) cut to fit `T`.
    pub fn truncated(&self) -> usize {
        self.truncated
    }

    fn text_rows(&self, rows: &[&[u32]]) -> (Vec<i32>, Vec<i32>) {
        let t = self.seq;
        let mut ids = Vec::with_capacity(rows.len() * t);
        let mut mask = Vec::with_capacity(rows.len() * t);
        for r in rows {
            ids.extend(r.iter().map(|&x| x as i32));
            ids.extend(std::iter::repeat_n(self.ids.pad as i32, t - r.len()));
            mask.extend(std::iter::repeat_n(1, r.len()));
            mask.extend(std::iter::repeat_n(0, t - r.len()));
        }
        (ids, mask)
    }

    fn pixels(&self, set: &ImageSet, items: &[Option<usize>]) -> Vec<f32> {
        let hw = set.rows * set.cols;
        let mut px = Vec::with_capacity(items.len() * hw);
        for it in items {
            match *it {
                Some(i) => px.extend(set.image(i).iter().map(|&p| self.norm.apply(p))),
                None => px.extend(std::iter::repeat_n(0.0, hw)),
            }
        }
        px
    }

    fn pair_batch(&self, set: &ImageSet, items: &[usize], rows: &[&[u32]]) -> Batch {
        let b = items.len();
        let (ids, mask) = self.text_rows(rows);
        let some: Vec<Option<usize>> = items.iter().map(|&i| Some(i)).collect();
        Batch::new()
            .with_i32("input_ids", &[b, self.seq], ids)
            .with_i32("attention_mask", &[b, self.seq], mask)
            .with_f32(
                "pixel_values",
                &[b, 1, set.rows, set.cols],
                self.pixels(set, &some),
            )
    }

    /// Prompts of held-out template `template`, one row per class:
    /// `input_ids` and `attention_mask` i32 `[classes, T]`, for zero-shot
    /// classification (embed, normalise, compare with image embeddings).
    pub fn prompt_batch(&self, template: usize) -> Result<Batch> {
        let rows = self.held_out.get(template).ok_or_else(|| {
            anyhow!(
                "held-out template {template} does not exist: there are {}",
                self.held_out.len()
            )
        })?;
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let (ids, mask) = self.text_rows(&refs);
        let c = rows.len();
        Ok(Batch::new()
            .with_i32("input_ids", &[c, self.seq], ids)
            .with_i32("attention_mask", &[c, self.seq], mask))
    }

    /// Test images with their labels for zero-shot accuracy: `pixel_values`
    /// f32 `[B, 1, H, W]`, `labels` i32 `[B]`, in order, the last batch
    /// padded with zero images labelled −100 (skip them).
    pub fn test_image_batches(&self, max: usize) -> Vec<Batch> {
        let n = self.test.len().div_ceil(self.batch).min(max);
        (0..n)
            .map(|k| {
                let items: Vec<Option<usize>> = (k * self.batch..(k + 1) * self.batch)
                    .map(|i| (i < self.test.len()).then_some(i))
                    .collect();
                let labels = items
                    .iter()
                    .map(|i| i.map_or(IGNORE, |i| self.test.labels[i] as i32))
                    .collect();
                Batch::new()
                    .with_f32(
                        "pixel_values",
                        &[self.batch, 1, self.test.rows, self.test.cols],
                        self.pixels(&self.test, &items),
                    )
                    .with_i32("labels", &[self.batch], labels)
            })
            .collect()
    }
}

impl DataSource for ClipPairs {
    /// `input_ids`, `attention_mask` i32 `[B, T]`; `pixel_values` f32
    /// `[B, 1, H, W]`.
    fn layout(&self) -> Vec<InputSpec> {
        let (b, t) = (self.batch, self.seq);
        vec![
            InputSpec::new("attention_mask", &[b, t], DType::I32),
            InputSpec::new("input_ids", &[b, t], DType::I32),
            InputSpec::new(
                "pixel_values",
                &[b, 1, self.train.rows, self.train.cols],
                DType::F32,
            ),
        ]
    }

    fn train_batch(&self, index: u64) -> Result<Batch> {
        let items: Vec<usize> = self
            .sampler
            .rows(index)
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        let mut rng = Rng::new(derive_seed(self.seed, TAG_CLIP, index));
        let rows: Vec<&[u32]> = items
            .iter()
            .map(|&i| {
                let c = self.train.labels[i] as usize;
                self.bank[c][draw_caption(c, &mut rng)].as_slice()
            })
            .collect();
        Ok(self.pair_batch(&self.train, &items, &rows))
    }

    /// Test pairs with held-out prompts; only full batches (a contrastive
    /// loss over a padded batch would count the padding as pairs).
    fn val_batches(&self, max: usize) -> Result<Vec<Batch>> {
        let h = self.held_out.len();
        Ok((0..(self.test.len() / self.batch).min(max))
            .map(|k| {
                let items: Vec<usize> = (k * self.batch..(k + 1) * self.batch).collect();
                let rows: Vec<&[u32]> = items
                    .iter()
                    .map(|&i| self.held_out[i % h][self.test.labels[i] as usize].as_slice())
                    .collect();
                self.pair_batch(&self.test, &items, &rows)
            })
            .collect())
    }

    fn items_per_batch(&self) -> u64 {
        self.batch as u64
    }

    fn describe(&self) -> String {
        format!(
            "{} train / {} test image–caption pairs, {} training and {} held-out templates, \
             captions of at most {} tokens{}",
            self.train.len(),
            self.test.len(),
            TRAIN_TEMPLATES.len(),
            HELD_OUT_TEMPLATES.len(),
            self.seq,
            if self.truncated > 0 {
                format!(" ({} captions truncated to fit)", self.truncated)
            } else {
                String::new()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::hf_tokenizer::{Flavour, HfTokenizer};
    use crate::data::images::FASHION_MNIST_CLASSES;

    fn tokenizer() -> HfTokenizer {
        HfTokenizer::train(Flavour::Clip, &caption_corpus(), 800).unwrap()
    }

    fn images(n: usize) -> ImageSet {
        ImageSet {
            images: (0..n * 16).map(|k| (k / 16 % 256) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            rows: 4,
            cols: 4,
            classes: FASHION_MNIST_CLASSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    fn pairs(tok: &HfTokenizer, seq: usize) -> ClipPairs {
        let set = images(40);
        let norm = Normalization::of(&set);
        ClipPairs::new(set.clone(), set, norm, tok, 5, 8, seq).unwrap()
    }

    #[test]
    fn templates_and_prompts() {
        assert_eq!(
            fill("a photo of a {}.", "ankle boot"),
            "a photo of an ankle boot."
        );
        assert_eq!(fill("a {}.", "old coat"), "an old coat.");
        assert_eq!(
            fill("a photo of a {}.", "pullover"),
            "a photo of a pullover."
        );
        let p = zero_shot_prompts(0).unwrap();
        assert_eq!(p.len(), 10);
        assert_eq!(p[2], "a good photo of a pullover.");
        assert_eq!(p[9], "a good photo of an ankle boot.");
        assert!(zero_shot_prompts(HELD_OUT_TEMPLATES.len()).is_err());
        // No held-out template text occurs in any training caption: neither
        // a whole prompt nor the template's fixed text around the class name.
        let train: Vec<String> = (0..10).flat_map(training_captions).collect();
        assert_eq!(train.len(), (0..10).map(combos).sum::<usize>());
        let set: std::collections::HashSet<&str> = train.iter().map(|s| s.as_str()).collect();
        // No training caption is a held-out template filled with any noun
        // phrase (name, or attribute + name, of any class).
        let phrases: Vec<String> = FASHION_WORDS
            .iter()
            .flat_map(|w| {
                w.names.iter().flat_map(move |n| {
                    std::iter::once(n.to_string())
                        .chain(w.attributes.iter().map(move |a| format!("{a} {n}")))
                })
            })
            .collect();
        for t in HELD_OUT_TEMPLATES {
            assert!(!TRAIN_TEMPLATES.contains(t));
            for np in &phrases {
                let held = fill(t, np);
                assert!(
                    !set.contains(held.as_str()),
                    "{held:?} is a training caption"
                );
            }
        }
        for prompts in zero_shot_prompt_sets() {
            for p in prompts {
                assert!(!set.contains(p.as_str()), "{p} is a training caption");
            }
        }
        // Captions name their class (some name of it).
        for (c, w) in FASHION_WORDS.iter().enumerate() {
            for cap in training_captions(c) {
                assert!(w.names.iter().any(|n| cap.contains(n)), "{cap}");
            }
        }
        let corpus = caption_corpus();
        assert!(!corpus.contains("good photo") && !corpus.contains("rendering"));
    }

    #[test]
    fn rows_have_bos_eos_padding_and_are_deterministic() {
        let tok = tokenizer();
        assert_eq!(
            tok.encode("a [MASK] <|endoftext|>").last(),
            Some(&tok.id(END_OF_TEXT).unwrap())
        );
        let p = pairs(&tok, 24);
        assert_eq!(p.truncated(), 0);
        let ids = p.ids;
        assert_eq!(
            (ids.bos as usize, ids.eos as usize),
            (tok.vocab_size() - 2, tok.vocab_size() - 1)
        );
        for index in 0..20 {
            let b = p.train_batch(index).unwrap();
            b.check_layout(&p.layout()).unwrap();
            check_clip_rows(&b, ids.eos).unwrap();
            let x = b.i32("input_ids").unwrap();
            let m = b.i32("attention_mask").unwrap();
            for r in 0..8 {
                let row = &x[r * 24..(r + 1) * 24];
                let mr = &m[r * 24..(r + 1) * 24];
                assert_eq!(row[0], ids.bos as i32);
                let end = row.iter().position(|&t| t == ids.eos as i32).unwrap();
                assert!(
                    mr[..=end].iter().all(|&v| v == 1) && mr[end + 1..].iter().all(|&v| v == 0)
                );
                assert!(row[end..].iter().all(|&t| t == ids.pad as i32));
                // CLIP decodes punctuation as separate words ("t - shirt"):
                // compare without spaces.
                let text = tok.decode(&row[1..end].iter().map(|&t| t as u32).collect::<Vec<_>>());
                let flat = text.replace(' ', "");
                let label = b.f32("pixel_values").unwrap()[r * 16];
                let img = ((label * p.norm.std + p.norm.mean) * 255.0).round() as usize % 10;
                assert!(
                    FASHION_WORDS[img]
                        .names
                        .iter()
                        .any(|n| flat.contains(&n.replace(' ', ""))),
                    "caption {text:?} does not name class {img}"
                );
            }
        }
        let a = p.train_batch(7).unwrap();
        assert_eq!(
            pairs(&tok, 24).train_batch(7).unwrap(),
            a,
            "resume-equivalent"
        );
        assert_ne!(p.train_batch(8).unwrap(), a);
        let v = p.val_batches(10).unwrap();
        assert_eq!(v.len(), 5);
        for b in &v {
            check_clip_rows(b, ids.eos).unwrap();
        }
        let q = p.prompt_batch(0).unwrap();
        assert_eq!(q.get("input_ids").unwrap().shape, vec![10, 24]);
        check_clip_rows(&q, ids.eos).unwrap();
        let first: Vec<u32> = q.i32("input_ids").unwrap()[..24]
            .iter()
            .map(|&t| t as u32)
            .filter(|&t| t != ids.pad && t != ids.bos)
            .collect();
        assert_eq!(tok.decode(&first), "a good photo of a t - shirt .");
        let t = p.test_image_batches(100);
        assert_eq!(t.len(), 5);
        assert_eq!(t[0].i32("labels").unwrap()[..3], [0, 1, 2]);
    }

    #[test]
    fn long_captions_are_truncated_keeping_eos() {
        let tok = tokenizer();
        let p = pairs(&tok, 6);
        assert!(p.truncated() > 0);
        assert!(p.describe().contains("truncated"));
        for index in 0..20 {
            let b = p.train_batch(index).unwrap();
            check_clip_rows(&b, p.ids.eos).unwrap();
            // Full rows end with the end-of-text token.
            let x = b.i32("input_ids").unwrap();
            let m = b.i32("attention_mask").unwrap();
            for r in 0..8 {
                if m[r * 6 + 5] == 1 {
                    assert_eq!(x[r * 6 + 5], p.ids.eos as i32);
                }
            }
        }
        // A row without its end-of-text token is refused.
        let b = p.train_batch(0).unwrap();
        let mut ids = b.i32("input_ids").unwrap().to_vec();
        ids[5] = 7;
        let bad = b.clone().with_i32("input_ids", &[8, 6], ids);
        let e = check_clip_rows(&bad, p.ids.eos).unwrap_err().to_string();
        assert!(e.contains("row 0") && e.contains("end-of-text"), "{e}");
        let e = ClipPairs::new(
            images(4),
            images(4),
            p.norm,
            &crate::data::ByteTokenizer,
            0,
            2,
            8,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("<|endoftext|>") && e.contains("clip-bpe"), "{e}");
    }
}
