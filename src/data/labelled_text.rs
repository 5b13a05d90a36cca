//! Labelled text for sequence classification (`kiln finetune` on BERT or
//! GPT-2): a folder of class subfolders of text files (one example per file,
//! the folder name is the class), or a CSV/TSV table of text and label. A
//! fixed stratified split (independent of the run seed, so every run and
//! seed is tested on the same examples) holds out a test and a validation
//! set; the training examples may be cut to a number per class or a
//! fraction of the labels (seeded, stratified).

use std::fs;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use super::images::EpochSampler;
use super::molecules::{split_fields, Delimiter};
use super::{Batch, DataSource, InputSpec, Tokenizer};
use crate::util::Rng;

/// Texts, their class ids and the class names.
#[derive(Clone, Debug, Default)]
pub struct LabelledTexts {
    pub texts: Vec<String>,
    pub labels: Vec<u32>,
    pub classes: Vec<String>,
    /// What was skipped while reading (empty files, bad lines), for a note.
    pub skipped: Vec<String>,
    /// Regression: each text's numeric target (then `classes` holds the
    /// target's name alone and every label is 0); empty for classes.
    pub targets: Vec<f32>,
}

impl LabelledTexts {
    pub fn class_counts(&self, idx: &[usize]) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for &i in idx {
            c[self.labels[i] as usize] += 1;
        }
        c
    }
}

/// Reads a folder of class subfolders, or a `.csv`/`.tsv` file.
pub fn read_labelled_texts(path: &Path) -> Result<LabelledTexts> {
    let meta = fs::metadata(path)
        .with_context(|| format!("labelled data {} does not exist", path.display()))?;
    let t = if meta.is_dir() {
        read_class_folders(path)?
    } else {
        read_table(path)?
    };
    ensure!(
        t.classes.len() >= 2,
        "{}: found {} class(es) ({}); classification needs at least two",
        path.display(),
        t.classes.len(),
        t.classes.join(", ")
    );
    Ok(t)
}

fn read_class_folders(dir: &Path) -> Result<LabelledTexts> {
    let mut classes: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    classes.sort();
    ensure!(
        !classes.is_empty(),
        "{} has no subfolders: give one folder per class holding its text files, or a \
         CSV/TSV file of text and label",
        dir.display()
    );
    let mut out = LabelledTexts::default();
    for (c, folder) in classes.iter().enumerate() {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<_> = fs::read_dir(folder)
            .with_context(|| format!("cannot list {}", folder.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        let before = out.texts.len();
        for f in files {
            let bytes = fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            if text.is_empty() {
                out.skipped.push(format!("{} is empty", f.display()));
                continue;
            }
            out.texts.push(text);
            out.labels.push(c as u32);
        }
        ensure!(
            out.texts.len() > before,
            "class folder {} holds no non-empty text file",
            folder.display()
        );
        out.classes.push(name);
    }
    Ok(out)
}

/// A CSV/TSV table of text and a numeric target (regression): the same
/// layout as for classes; a label that is not a finite number skips its
/// line (counted, the first named).
pub fn read_labelled_targets(path: &Path) -> Result<LabelledTexts> {
    ensure!(
        !path.is_dir(),
        "{}: regression reads a CSV/TSV file of text and a number, not class folders",
        path.display()
    );
    let (pairs, mut skipped, name) = table_pairs(path)?;
    let mut out = LabelledTexts::default();
    for (n, t, l) in pairs {
        match l.parse::<f32>() {
            Ok(y) if y.is_finite() => {
                out.texts.push(t);
                out.targets.push(y);
                out.labels.push(0);
            }
            _ => skipped.push(format!("line {n}: the target {l:?} is not a number")),
        }
    }
    ensure!(
        !out.texts.is_empty(),
        "{}: no line has a text and a numeric target ({} skipped{})",
        path.display(),
        skipped.len(),
        skipped
            .first()
            .map(|s| format!(", the first: {s}"))
            .unwrap_or_default()
    );
    out.skipped = skipped;
    out.classes = vec![name];
    Ok(out)
}

/// A CSV/TSV table: a header naming `text` (or `sentence`) and `label`
/// columns, or no header and two columns (text, label). Labels are names;
/// classes are sorted (numbers numerically).
fn read_table(path: &Path) -> Result<LabelledTexts> {
    let (pairs, skipped, _) = table_pairs(path)?;
    let mut out = LabelledTexts {
        skipped,
        ..Default::default()
    };
    let mut classes: Vec<String> = pairs.iter().map(|p| p.2.clone()).collect();
    classes.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y),
        _ => a.cmp(b),
    });
    classes.dedup();
    ensure!(
        classes.len() <= 10_000,
        "{}: {} distinct labels; is the label column really a class? (a numeric target is \
         --objective regression)",
        path.display(),
        classes.len()
    );
    for (_, t, l) in pairs {
        out.labels
            .push(classes.iter().position(|c| *c == l).expect("listed") as u32);
        out.texts.push(t);
    }
    out.classes = classes;
    Ok(out)
}

/// The (line number, text, label) rows of a CSV/TSV table, the lines
/// skipped, and the label column's name ("label" without a header).
#[allow(clippy::type_complexity)]
fn table_pairs(path: &Path) -> Result<(Vec<(usize, String, String)>, Vec<String>, String)> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, first)) = lines.next() else {
        bail!("{} is empty", path.display());
    };
    let delim = Delimiter::detect(path, first);
    ensure!(
        delim != Delimiter::Whitespace,
        "{}: expected a .csv or .tsv table of text and label (fields separated by commas or \
         tabs)",
        path.display()
    );
    let head = split_fields(first, delim).unwrap_or_default();
    let find = |names: &[&str]| {
        head.iter()
            .position(|h| names.iter().any(|n| h.eq_ignore_ascii_case(n)))
    };
    let (text_col, label_col, rows): (usize, usize, Vec<(usize, &str)>) = match (
        find(&["text", "sentence", "review"]),
        find(&["label", "class"]),
    ) {
        (Some(t), Some(l)) => (t, l, lines.collect()),
        _ => {
            let mut all = vec![(0, first)];
            all.extend(lines);
            (0, head.len().max(2) - 1, all)
        }
    };
    let label_name = head
        .get(label_col)
        .filter(|_| find(&["text", "sentence", "review"]).is_some())
        .cloned()
        .unwrap_or_else(|| "label".into());
    let mut pairs = Vec::new();
    let mut skipped = Vec::new();
    for (n, line) in rows {
        match split_fields(line, delim) {
            Ok(f) if f.len() > text_col.max(label_col) && !f[text_col].is_empty() => {
                pairs.push((n + 1, f[text_col].clone(), f[label_col].clone()))
            }
            Ok(f) => skipped.push(format!(
                "line {}: {} field(s), the text is column {} and the label column {}",
                n + 1,
                f.len(),
                text_col + 1,
                label_col + 1
            )),
            Err(e) => skipped.push(format!("line {}: {e}", n + 1)),
        }
    }
    ensure!(
        !pairs.is_empty(),
        "{}: no line has a text and a label ({} skipped{})",
        path.display(),
        skipped.len(),
        skipped
            .first()
            .map(|s| format!(", the first: {s}"))
            .unwrap_or_default()
    );
    Ok((pairs, skipped, label_name))
}

/// Example indices of a fixed stratified split.
#[derive(Clone, Debug, Default)]
pub struct Splits {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// The seed of the split, fixed so that every run sees the same test set.
pub const SPLIT_SEED: u64 = 0x5EED_7E57;

/// Per class, `test` then `val` fractions of its examples (at least one
/// each when the class has three or more), the rest for training.
pub fn split(labels: &[u32], classes: usize, val: f64, test: f64) -> Result<Splits> {
    ensure!(
        (0.0..1.0).contains(&val) && (0.0..1.0).contains(&test) && val + test < 1.0,
        "validation ({val}) and test ({test}) fractions must be in [0, 1) and leave training examples"
    );
    let mut rng = Rng::new(SPLIT_SEED);
    let mut s = Splits::default();
    for c in 0..classes as u32 {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        rng.shuffle(&mut idx);
        let n = idx.len();
        let at_least = |f: f64| {
            let k = (f * n as f64).round() as usize;
            if f > 0.0 && n >= 3 {
                k.max(1)
            } else {
                k
            }
        };
        let (nt, nv) = (at_least(test), at_least(val));
        s.test.extend(&idx[..nt]);
        s.val.extend(&idx[nt..nt + nv]);
        s.train.extend(&idx[nt + nv..]);
    }
    s.train.sort();
    s.val.sort();
    s.test.sort();
    Ok(s)
}

/// The training examples kept: `per_class` of each class (0 = all), then
/// a `fraction` of those (stratified, at least one per class), seeded.
pub fn label_subset(
    train: &[usize],
    labels: &[u32],
    classes: usize,
    per_class: usize,
    fraction: f64,
    seed: u64,
) -> Result<Vec<usize>> {
    ensure!(
        fraction > 0.0 && fraction <= 1.0,
        "--label-fraction must be in (0, 1], got {fraction}"
    );
    let mut rng = Rng::new(seed ^ 0x1abe1);
    let mut keep = Vec::new();
    for c in 0..classes as u32 {
        let mut idx: Vec<usize> = train.iter().copied().filter(|&i| labels[i] == c).collect();
        rng.shuffle(&mut idx);
        let mut k = idx.len();
        if per_class > 0 {
            k = k.min(per_class);
        }
        k = ((k as f64 * fraction).round() as usize).clamp(1.min(idx.len()), idx.len());
        keep.extend(&idx[..k]);
    }
    keep.sort();
    Ok(keep)
}

/// How a model takes a sequence: BERT's `[CLS] … [SEP]` with an attention
/// mask and token types, or GPT-2's plain tokens with the pooled position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextStyle {
    Bert,
    Gpt,
}

/// Tokenized examples as batches: BERT style gives `input_ids`,
/// `attention_mask`, `token_type_ids`, `labels`; GPT style `input_ids`,
/// `labels`, `pool_index` (the last real token). Training batches follow an
/// epoch permutation of the training examples (a function of (seed, index));
/// validation and test batches are the splits in order, the last one padded
/// with label −100.
pub struct TextClassification {
    pub style: TextStyle,
    /// Token ids of every example, formatted and cut to `seq`.
    pub ids: Vec<Vec<u32>>,
    pub labels: Vec<u32>,
    /// Regression targets (empty: classes).
    pub targets: Vec<f32>,
    pub classes: Vec<String>,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
    pub batch: usize,
    pub seq: usize,
    pub pad: u32,
    /// Examples longer than `seq` tokens (cut).
    pub truncated: usize,
    sampler: EpochSampler,
}

impl TextClassification {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        data: &LabelledTexts,
        tok: &dyn Tokenizer,
        style: TextStyle,
        splits: Splits,
        train: Vec<usize>,
        seed: u64,
        batch: usize,
        seq: usize,
    ) -> Result<Self> {
        ensure!(batch > 0 && seq > 0, "--batch and --seq must be positive");
        ensure!(!train.is_empty(), "no training examples are left");
        let id = |s: &str| tok.token_to_id(s);
        let (cls, sep) = (id("[CLS]"), id("[SEP]"));
        let pad = id("[PAD]")
            .or_else(|| id("<|endoftext|>"))
            .or_else(|| id("<pad>"))
            .unwrap_or(0);
        if style == TextStyle::Bert {
            ensure!(
                seq >= 3,
                "--seq {seq} leaves no room for a token between [CLS] and [SEP]"
            );
        }
        let mut truncated = 0;
        let ids = data
            .texts
            .iter()
            .map(|t| {
                let mut x = tok.encode(t);
                let room = match (style, cls, sep) {
                    (TextStyle::Bert, Some(_), Some(_)) => seq - 2,
                    _ => seq,
                };
                if x.len() > room {
                    truncated += 1;
                    x.truncate(room);
                }
                if x.is_empty() {
                    x.push(pad);
                }
                match (style, cls, sep) {
                    (TextStyle::Bert, Some(c), Some(s)) => {
                        let mut y = Vec::with_capacity(x.len() + 2);
                        y.push(c);
                        y.extend(x);
                        y.push(s);
                        y
                    }
                    _ => x,
                }
            })
            .collect();
        Ok(Self {
            style,
            ids,
            labels: data.labels.clone(),
            targets: data.targets.clone(),
            classes: data.classes.clone(),
            sampler: EpochSampler::new(seed, train.len(), batch),
            train,
            val: splits.val,
            test: splits.test,
            batch,
            seq,
            pad,
            truncated,
        })
    }

    /// A batch of examples (`None` rows are padding, label −100).
    pub fn batch_of(&self, items: &[Option<usize>]) -> Batch {
        let (b, t) = (items.len(), self.seq);
        let mut ids = vec![self.pad as i32; b * t];
        let mut mask = vec![0i32; b * t];
        let mut labels = vec![-100i32; b];
        let mut targets = vec![0f32; b];
        let mut at = vec![0i32; b];
        for (r, item) in items.iter().enumerate() {
            let Some(i) = *item else {
                ids[r * t] = self.pad as i32;
                mask[r * t] = 1;
                continue;
            };
            let x = &self.ids[i];
            for (j, &tok) in x.iter().enumerate() {
                ids[r * t + j] = tok as i32;
                mask[r * t + j] = 1;
            }
            labels[r] = self.labels[i] as i32;
            if let Some(y) = self.targets.get(i) {
                targets[r] = *y;
            }
            at[r] = x.len() as i32 - 1;
        }
        let out = Batch::new().with_i32("input_ids", &[b, t], ids);
        let out = if self.targets.is_empty() {
            out.with_i32("labels", &[b], labels)
        } else {
            out.with_f32("labels", &[b], targets)
        };
        match self.style {
            TextStyle::Bert => out.with_i32("attention_mask", &[b, t], mask).with_i32(
                "token_type_ids",
                &[b, t],
                vec![0; b * t],
            ),
            TextStyle::Gpt => out.with_i32("pool_index", &[b], at),
        }
    }

    /// A split in order, in batches, the last one padded: with label −100
    /// for classes; for regression (a squared error has no ignored label)
    /// with the split's first examples again, so a padded row's error is a
    /// real one. Each batch comes with its number of new rows.
    pub fn batches_counted(&self, split: &[usize], max: usize) -> Vec<(Batch, usize)> {
        split
            .chunks(self.batch)
            .take(max)
            .map(|c| {
                let mut items: Vec<Option<usize>> = c.iter().map(|&i| Some(i)).collect();
                let fill = (0..self.batch - c.len())
                    .map(|k| (!self.targets.is_empty()).then(|| split[k % split.len()]));
                items.extend(fill);
                (self.batch_of(&items), c.len())
            })
            .collect()
    }

    /// [`Self::batches_counted`] without the counts.
    pub fn batches_of(&self, split: &[usize], max: usize) -> Vec<Batch> {
        self.batches_counted(split, max)
            .into_iter()
            .map(|(b, _)| b)
            .collect()
    }
}

impl DataSource for TextClassification {
    fn layout(&self) -> Vec<InputSpec> {
        self.batch_of(&vec![None; self.batch]).layout()
    }

    fn train_batch(&self, index: u64) -> Result<Batch> {
        let items: Vec<Option<usize>> = self
            .sampler
            .rows(index)
            .into_iter()
            .map(|(_, i)| Some(self.train[i]))
            .collect();
        Ok(self.batch_of(&items))
    }

    fn val_batches(&self, max: usize) -> Result<Vec<Batch>> {
        Ok(self.batches_of(&self.val, max))
    }

    fn items_per_batch(&self) -> u64 {
        self.batch as u64
    }

    fn describe(&self) -> String {
        format!(
            "{} train / {} val / {} test texts, {} classes",
            self.train.len(),
            self.val.len(),
            self.test.len(),
            self.classes.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ByteTokenizer;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-lt-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn folders_tables_and_their_errors() {
        let d = tmp("folders");
        for (c, texts) in [
            ("neg", ["bad", "awful", ""]),
            ("pos", ["good", "fine", "great"]),
        ] {
            fs::create_dir_all(d.join(c)).unwrap();
            for (i, t) in texts.iter().enumerate() {
                fs::write(d.join(c).join(format!("{i}.txt")), t).unwrap();
            }
        }
        let t = read_labelled_texts(&d).unwrap();
        assert_eq!(t.classes, ["neg", "pos"]);
        assert_eq!(t.texts, ["bad", "awful", "good", "fine", "great"]);
        assert_eq!(t.labels, [0, 0, 1, 1, 1]);
        assert_eq!(t.skipped.len(), 1, "the empty file is skipped");

        let csv = d.join("x.csv");
        fs::write(&csv, "label,text\n1,\"a, b\"\n0,c\n10,d\n1,e\nbroken\n").unwrap();
        let t = read_labelled_texts(&csv).unwrap();
        assert_eq!(
            t.classes,
            ["0", "1", "10"],
            "numeric labels sort as numbers"
        );
        assert_eq!(t.texts, ["a, b", "c", "d", "e"]);
        assert_eq!(t.labels, [1, 0, 2, 1]);
        assert_eq!(t.skipped.len(), 1);

        let tsv = d.join("y.tsv");
        fs::write(&tsv, "one text\tx\nanother\ty\n").unwrap();
        assert_eq!(read_labelled_texts(&tsv).unwrap().classes, ["x", "y"]);

        let one = d.join("one.csv");
        fs::write(&one, "a,x\nb,x\n").unwrap();
        let e = read_labelled_texts(&one).unwrap_err().to_string();
        assert!(e.contains("at least two"), "{e}");
        let e = read_labelled_texts(&d.join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        let flat = tmp("flat");
        fs::write(flat.join("a.txt"), "x").unwrap();
        let e = read_labelled_texts(&flat).unwrap_err().to_string();
        assert!(e.contains("no subfolders"), "{e}");
    }

    #[test]
    fn splits_are_fixed_stratified_and_subsets_seeded() {
        let labels: Vec<u32> = (0..300).map(|i| (i % 3) as u32).collect();
        let s = split(&labels, 3, 0.1, 0.2).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (210, 30, 60));
        let again = split(&labels, 3, 0.1, 0.2).unwrap();
        assert_eq!(s.test, again.test);
        let mut all: Vec<usize> = [s.train.clone(), s.val.clone(), s.test.clone()].concat();
        all.sort();
        all.dedup();
        assert_eq!(
            all.len(),
            300,
            "the splits are disjoint and cover everything"
        );
        let a = label_subset(&s.train, &labels, 3, 50, 1.0, 1).unwrap();
        let b = label_subset(&s.train, &labels, 3, 50, 1.0, 2).unwrap();
        assert_eq!(a.len(), 150);
        assert_ne!(a, b, "another seed draws other examples");
        let counts = a.iter().fold([0; 3], |mut c, &i| {
            c[labels[i] as usize] += 1;
            c
        });
        assert_eq!(counts, [50; 3]);
        assert_eq!(
            label_subset(&s.train, &labels, 3, 0, 0.1, 1).unwrap().len(),
            21
        );
    }

    #[test]
    fn batches_pad_cut_and_pool_at_the_last_token() {
        let data = LabelledTexts {
            texts: vec!["hello".into(), "a much longer text".into(), "b".into()],
            labels: vec![0, 1, 1],
            classes: vec!["x".into(), "y".into()],
            skipped: vec![],
            targets: vec![],
        };
        let s = Splits {
            train: vec![0, 1, 2],
            val: vec![2],
            test: vec![],
        };
        let src = TextClassification::new(
            &data,
            &ByteTokenizer,
            TextStyle::Gpt,
            s,
            vec![0, 1, 2],
            7,
            2,
            8,
        )
        .unwrap();
        assert_eq!(src.truncated, 1);
        let b = src.batch_of(&[Some(0), Some(1)]);
        assert_eq!(b.i32("pool_index").unwrap(), [4, 7]);
        assert_eq!(b.i32("labels").unwrap(), [0, 1]);
        assert_eq!(
            &b.i32("input_ids").unwrap()[..6],
            &[104, 101, 108, 108, 111, 0]
        );
        let v = src.val_batches(10).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].i32("labels").unwrap(), [1, -100]);
        assert_eq!(src.train_batch(5).unwrap().layout(), src.layout());
    }
}
