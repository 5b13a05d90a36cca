//! Hugging Face tokenizers: WordPiece for BERT, byte-level BPE for GPT-2 and
//! CLIP, read and written as `tokenizer.json`, through Hugging Face's own
//! `tokenizers` crate, so a run directory loads with
//! `AutoTokenizer.from_pretrained(dir)` and gives the same ids.
//!
//! # Flavours
//!
//! | flavour | kind | pipeline (as in the Hugging Face model it copies) | special ids |
//! |---|---|---|---|
//! | [`Flavour::WordPiece`] | `wordpiece` | `bert-base-uncased`: BertNormalizer (clean text, CJK spacing, lowercase, strip accents), BertPreTokenizer, WordPiece (`##` continuation, `[UNK]`, 100 chars per word), `[CLS] A [SEP]` post-processing | `[PAD]` 0, `[UNK]` 1, `[CLS]` 2, `[SEP]` 3, `[MASK]` 4 |
//! | [`Flavour::Gpt2`] | `gpt2-bpe` | `gpt2`: ByteLevel pre-tokenizer (GPT-2's regex, no prefix space), BPE | `<\|endoftext\|>` = V−1 |
//! | [`Flavour::Clip`] | `clip-bpe` | `openai/clip-vit-base-patch32`: NFC, whitespace runs → one space, lowercase; CLIP's split regex then ByteLevel; BPE with `</w>` word ends; `<\|startoftext\|> A <\|endoftext\|>` post-processing | `<\|startoftext\|>` = V−2, `<\|endoftext\|>` = V−1 (also pad and unknown, as in CLIP) |
//!
//! Special tokens are Hugging Face *added tokens*: wherever their exact
//! spelling occurs in a text ("the [MASK] sat"), it encodes as that one id,
//! before normalization (so `[mask]` in lower case is ordinary text).
//!
//! # Training
//!
//! [`HfTokenizer::train`] counts the pre-tokens that the flavour's own
//! normalizer and pre-tokenizer produce (so training sees exactly what
//! encoding will) and learns BPE merges over them: each step merges the most
//! frequent adjacent pair; ties go to the pair with the smallest ids. The
//! `tokenizers` crate's own trainers are not used because they are not
//! deterministic: they give `##x` / `x</w>` symbols ids in the iteration
//! order of a randomly seeded hash map, and break ties between merges by
//! those ids, so two runs on the same text can learn different merges.
//! Here the same text and size always give the same file. For byte-level
//! GPT-2 the result is exactly [`crate::data::Bpe::train`]'s (tested).
//! WordPiece keeps every token the merges produce (Hugging Face's
//! WordPiece trainer works the same way: BPE with a `##` prefix, then the
//! vocabulary alone); encoding is greedy longest-match-first.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokenizers::{OffsetReferential, OffsetType, PreTokenizer};

use super::tokenizer::{byte_to_unicode, Bpe, Tokenizer};

pub const PAD: &str = "[PAD]";
pub const UNK: &str = "[UNK]";
pub const CLS: &str = "[CLS]";
pub const SEP: &str = "[SEP]";
pub const MASK: &str = "[MASK]";
pub const START_OF_TEXT: &str = "<|startoftext|>";
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// BERT's special tokens, in id order (0..5) in a trained WordPiece.
pub const BERT_SPECIALS: [&str; 5] = [PAD, UNK, CLS, SEP, MASK];

/// The file Hugging Face reads.
pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_JSON: &str = "tokenizer_config.json";
pub const SPECIAL_TOKENS_MAP_JSON: &str = "special_tokens_map.json";

/// CLIP's pre-tokenization pattern (its `Split` pre-tokenizer, inverted).
const CLIP_SPLIT: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Texts longer than this are encoded in pieces (at line starts that are
/// always pre-token boundaries), in parallel where threads exist.
const CHUNK_BYTES: usize = 1 << 16;

/// Which Hugging Face tokenizer this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// BERT (uncased) WordPiece.
    WordPiece,
    /// GPT-2 byte-level BPE.
    Gpt2,
    /// CLIP byte-level BPE with `</w>` word ends.
    Clip,
    /// Any other `tokenizer.json` (loaded, used as is).
    Other,
}

impl Flavour {
    /// The name written in `tokenizer_kind.json` and accepted by `--tokenizer`.
    pub fn kind(self) -> &'static str {
        match self {
            Flavour::WordPiece => "wordpiece",
            Flavour::Gpt2 => "gpt2-bpe",
            Flavour::Clip => "clip-bpe",
            Flavour::Other => "hf",
        }
    }

    pub fn from_kind(kind: &str) -> Option<Self> {
        [
            Flavour::WordPiece,
            Flavour::Gpt2,
            Flavour::Clip,
            Flavour::Other,
        ]
        .into_iter()
        .find(|f| f.kind() == kind)
    }

    /// The tokens that get their own ids at the start (WordPiece) or end
    /// (BPE flavours) of a trained vocabulary.
    pub fn specials(self) -> &'static [&'static str] {
        match self {
            Flavour::WordPiece => &BERT_SPECIALS,
            Flavour::Gpt2 => &[END_OF_TEXT],
            Flavour::Clip => &[START_OF_TEXT, END_OF_TEXT],
            Flavour::Other => &[],
        }
    }
}

/// A tokenizer of the `tokenizers` crate with what Kiln needs around it.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    flavour: Flavour,
    /// Largest id + 1 (model and added tokens).
    vocab_size: usize,
    special: Vec<u32>,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("flavour", &self.flavour)
            .field("vocab_size", &self.vocab_size)
            .field("special", &self.special)
            .finish()
    }
}

fn hf_err(e: tokenizers::Error) -> anyhow::Error {
    anyhow!("{e}")
}

/// Without threads (wasm32) the crate must not try to start a thread pool.
fn init_parallelism() {
    #[cfg(target_arch = "wasm32")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| tokenizers::utils::parallelism::set_parallelism(false));
    }
}

/// Splits `text` into pieces of about `CHUNK_BYTES` that end right before a
/// non-whitespace character following a newline. No pre-tokenizer used here
/// joins across such a point (GPT-2's regex lets only a plain space prefix a
/// word; a newline run ends before the next non-space), so encoding the
/// pieces separately gives the ids of the whole text.
pub(crate) fn chunks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    while text.len() - start > CHUNK_BYTES {
        let mut cut = None;
        let mut i = start + CHUNK_BYTES;
        while i < bytes.len() {
            if bytes[i - 1] == b'\n' && text.is_char_boundary(i) {
                let c = text[i..].chars().next().unwrap_or(' ');
                if !c.is_whitespace() {
                    cut = Some(i);
                    break;
                }
            }
            i += 1;
        }
        match cut {
            Some(c) => {
                out.push(&text[start..c]);
                start = c;
            }
            None => break,
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

impl HfTokenizer {
    /// Wraps a `tokenizers` tokenizer; the flavour is recognised from its
    /// model (WordPiece; BPE with a `</w>` suffix is CLIP; other BPE GPT-2).
    pub fn from_hf(inner: tokenizers::Tokenizer) -> Self {
        init_parallelism();
        let flavour = match inner.get_model() {
            tokenizers::ModelWrapper::WordPiece(_) => Flavour::WordPiece,
            tokenizers::ModelWrapper::BPE(b) if b.end_of_word_suffix.as_deref() == Some("</w>") => {
                Flavour::Clip
            }
            tokenizers::ModelWrapper::BPE(_) => Flavour::Gpt2,
            _ => Flavour::Other,
        };
        let vocab = inner.get_vocab(true);
        let vocab_size = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        let mut special: Vec<u32> = inner
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(&id, _)| id)
            .collect();
        special.sort_unstable();
        Self {
            inner,
            flavour,
            vocab_size,
            special,
        }
    }

    /// Parses a `tokenizer.json`.
    pub fn from_json(json: &str) -> Result<Self> {
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e| anyhow!("not a Hugging Face tokenizer.json: {e}"))?;
        Ok(Self::from_hf(inner))
    }

    /// Reads a `tokenizer.json` file, or the one in a directory.
    pub fn from_file(path: &Path) -> Result<Self> {
        let file = if path.is_dir() {
            path.join(TOKENIZER_JSON)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        Self::from_json(&text).with_context(|| format!("{}", file.display()))
    }

    /// `tokenizer.json` text (pretty-printed).
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(hf_err)
    }

    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The id of `token`, or an error saying this tokenizer lacks it.
    pub fn id(&self, token: &str) -> Result<u32> {
        self.inner
            .token_to_id(token)
            .ok_or_else(|| anyhow!("the {} tokenizer has no {token} token", self.flavour.kind()))
    }

    /// Encodes with the flavour's special tokens around the text, as the
    /// model saw them in training: `[CLS] … [SEP]` (BERT),
    /// `<|startoftext|> … <|endoftext|>` (CLIP); GPT-2 adds none.
    pub fn encode_with_specials(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, true)
            .map_err(hf_err)?
            .get_ids()
            .to_vec())
    }

    /// The token strings of `ids` (unknown ids as `None`), for display.
    pub fn tokens(&self, ids: &[u32]) -> Vec<Option<String>> {
        ids.iter().map(|&i| self.inner.id_to_token(i)).collect()
    }

    fn try_encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.len() <= CHUNK_BYTES {
            return Ok(self
                .inner
                .encode(text, false)
                .map_err(hf_err)?
                .get_ids()
                .to_vec());
        }
        let parts = chunks(text);
        let encs = self.inner.encode_batch(parts, false).map_err(hf_err)?;
        Ok(encs
            .iter()
            .flat_map(|e| e.get_ids().iter().copied())
            .collect())
    }

    /// Learns a tokenizer of `vocab_size` tokens (special tokens included)
    /// on `text`; see the module documentation. Errors if `vocab_size`
    /// cannot hold the base alphabet and the special tokens.
    pub fn train(flavour: Flavour, text: &str, vocab_size: usize) -> Result<Self> {
        init_parallelism();
        if vocab_size > (1 << 31) {
            bail!("vocabulary size {vocab_size} is too large");
        }
        // An empty shell of the flavour gives the normalizer and
        // pre-tokenizer that training must share with encoding.
        let shell = build(flavour, &[], &[])?;
        let mut counts: HashMap<String, u64> = HashMap::new();
        for chunk in chunks(text) {
            let mut pre = shell
                .inner
                .get_added_vocabulary()
                .extract_and_normalize(shell.inner.get_normalizer(), chunk);
            if let Some(p) = shell.inner.get_pre_tokenizer() {
                p.pre_tokenize(&mut pre).map_err(hf_err)?;
            }
            for (piece, _, toks) in pre.get_splits(OffsetReferential::Original, OffsetType::Byte) {
                if toks.is_none() && !piece.is_empty() {
                    *counts.entry(piece.to_owned()).or_default() += 1;
                }
            }
        }
        let mut words: Vec<(String, u64)> = counts.into_iter().collect();
        words.sort_unstable();

        let (mut names, symbols, merge_target) = match flavour {
            Flavour::Gpt2 | Flavour::Clip => {
                let table = byte_to_unicode();
                let mut names: Vec<String> = table.iter().map(|c| c.to_string()).collect();
                if flavour == Flavour::Clip {
                    names.extend(table.iter().map(|c| format!("{c}</w>")));
                }
                let n_special = flavour.specials().len();
                let min = names.len() + n_special;
                if vocab_size < min {
                    bail!(
                        "{} vocabulary size {vocab_size} is below {min} (every byte{} and {} \
                         special token{})",
                        flavour.kind(),
                        if flavour == Flavour::Clip {
                            " twice, inside and at the end of a word,"
                        } else {
                            ""
                        },
                        n_special,
                        if n_special == 1 { "" } else { "s" }
                    );
                }
                (names, Symbols::Bytes, vocab_size - n_special)
            }
            Flavour::WordPiece => {
                // Characters by frequency; keep as many as fit twice (word
                // start and `##` continuation) in half the vocabulary.
                let mut freq: HashMap<char, u64> = HashMap::new();
                for (w, c) in &words {
                    for ch in w.chars() {
                        *freq.entry(ch).or_default() += c;
                    }
                }
                let mut chars: Vec<(char, u64)> = freq.into_iter().collect();
                chars.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let room = vocab_size.saturating_sub(BERT_SPECIALS.len()) / 2;
                if room == 0 || chars.is_empty() {
                    bail!(
                        "wordpiece vocabulary size {vocab_size} leaves no room for the text's \
                         characters after the {} special tokens (or the text is empty)",
                        BERT_SPECIALS.len()
                    );
                }
                chars.truncate(room);
                let mut kept: Vec<char> = chars.into_iter().map(|(c, _)| c).collect();
                kept.sort_unstable();
                let mut names: Vec<String> = BERT_SPECIALS.iter().map(|s| s.to_string()).collect();
                names.extend(kept.iter().map(|c| c.to_string()));
                names.extend(kept.iter().map(|c| format!("##{c}")));
                (names, Symbols::WordPiece, vocab_size)
            }
            Flavour::Other => bail!("only wordpiece, gpt2-bpe and clip-bpe tokenizers are trained"),
        };
        let mut ids: HashMap<String, u32> = HashMap::new();
        for (i, n) in names.iter().enumerate() {
            ids.entry(n.clone()).or_insert(i as u32);
        }
        let byte_ids: HashMap<char, u32> = byte_to_unicode()
            .iter()
            .enumerate()
            .map(|(b, c)| (*c, b as u32))
            .collect();
        let mut learn_words = Vec::with_capacity(words.len());
        for (w, count) in &words {
            let chars: Vec<char> = w.chars().collect();
            let mut syms = Vec::with_capacity(chars.len());
            for (i, &c) in chars.iter().enumerate() {
                let id = match symbols {
                    Symbols::Bytes => {
                        let Some(&b) = byte_ids.get(&c) else {
                            bail!("byte-level pre-tokenizer produced {c:?}, not a byte symbol")
                        };
                        if flavour == Flavour::Clip && i + 1 == chars.len() {
                            Some(256 + b)
                        } else {
                            Some(b)
                        }
                    }
                    Symbols::WordPiece => {
                        let name = if i == 0 {
                            c.to_string()
                        } else {
                            format!("##{c}")
                        };
                        ids.get(&name).copied()
                    }
                };
                match id {
                    Some(id) => syms.push(id),
                    // A character left out of the alphabet: the word cannot
                    // be spelled (it will encode as [UNK]); skip it.
                    None => {
                        syms.clear();
                        break;
                    }
                }
            }
            if !syms.is_empty() {
                learn_words.push((syms, *count));
            }
        }
        let join: fn(&str, &str) -> String = match symbols {
            Symbols::Bytes => |a, b| format!("{a}{b}"),
            Symbols::WordPiece => |a, b| format!("{a}{}", b.strip_prefix("##").unwrap_or(b)),
        };
        let merges = learn_merges(learn_words, &mut names, &mut ids, merge_target, join);
        let merge_names: Vec<(String, String)> = merges
            .iter()
            .map(|&(a, b)| (names[a as usize].clone(), names[b as usize].clone()))
            .collect();
        if flavour != Flavour::WordPiece {
            names.extend(flavour.specials().iter().map(|s| s.to_string()));
        }
        build(flavour, &names, &merge_names)
    }

    /// The Hugging Face form of a hand-written byte-level [`Bpe`] (GPT-2
    /// files, or one trained by Kiln): same vocabulary, merges and ids. A
    /// vocabulary token spelled `<|endoftext|>` (GPT-2's 50256) becomes a
    /// special token, as in GPT-2's own `tokenizer.json`.
    pub fn from_bpe(bpe: &Bpe) -> Result<Self> {
        let table = byte_to_unicode();
        let spell = |b: &[u8]| -> String { b.iter().map(|&x| table[x as usize]).collect() };
        let mut names = Vec::with_capacity(bpe.token_bytes().len());
        for t in bpe.token_bytes() {
            // Ids missing from a sparse vocabulary get a placeholder that no
            // text can produce (a byte symbol run is never empty).
            names.push(t.as_deref().map(spell).unwrap_or_default());
        }
        let merges: Vec<(String, String)> = bpe
            .merge_ids()
            .iter()
            .map(|&(a, b, _)| (names[a as usize].clone(), names[b as usize].clone()))
            .collect();
        build(Flavour::Gpt2, &names, &merges)
    }

    /// `tokenizer_config.json`: the class `AutoTokenizer` instantiates and
    /// its special tokens.
    pub fn tokenizer_config(&self) -> Value {
        let has = |t: &str| self.inner.token_to_id(t).is_some();
        let mut cfg = match self.flavour {
            Flavour::WordPiece => json!({
                "tokenizer_class": "BertTokenizer",
                "do_lower_case": true,
                "tokenize_chinese_chars": true,
                "strip_accents": null,
                "clean_up_tokenization_spaces": true,
            }),
            Flavour::Gpt2 if has(END_OF_TEXT) => json!({
                "tokenizer_class": "GPT2Tokenizer",
                "add_prefix_space": false,
            }),
            Flavour::Clip => json!({ "tokenizer_class": "CLIPTokenizer" }),
            // No special tokens to declare: the generic fast class.
            _ => json!({ "tokenizer_class": "PreTrainedTokenizerFast" }),
        };
        let map = self.special_tokens_map();
        if let (Some(c), Some(m)) = (cfg.as_object_mut(), map.as_object()) {
            for (k, v) in m {
                c.insert(k.clone(), v.clone());
            }
        }
        cfg
    }

    /// `special_tokens_map.json`: role → token, for the roles this tokenizer has.
    pub fn special_tokens_map(&self) -> Value {
        let roles: &[(&str, &str)] = match self.flavour {
            Flavour::WordPiece => &[
                ("pad_token", PAD),
                ("unk_token", UNK),
                ("cls_token", CLS),
                ("sep_token", SEP),
                ("mask_token", MASK),
            ],
            Flavour::Gpt2 => &[
                ("bos_token", END_OF_TEXT),
                ("eos_token", END_OF_TEXT),
                ("unk_token", END_OF_TEXT),
            ],
            Flavour::Clip => &[
                ("bos_token", START_OF_TEXT),
                ("eos_token", END_OF_TEXT),
                ("unk_token", END_OF_TEXT),
                ("pad_token", END_OF_TEXT),
            ],
            Flavour::Other => &[],
        };
        let mut m = serde_json::Map::new();
        for (role, tok) in roles {
            if self.inner.token_to_id(tok).is_some() {
                m.insert(role.to_string(), json!(tok));
            }
        }
        Value::Object(m)
    }
}

/// `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json`:
/// what `AutoTokenizer.from_pretrained(dir)` reads, as (name, contents).
pub fn pretrained_files(tok: &HfTokenizer) -> Result<Vec<(String, Vec<u8>)>> {
    let pretty = |v: &Value| -> Result<Vec<u8>> {
        let mut b = serde_json::to_vec_pretty(v)?;
        b.push(b'\n');
        Ok(b)
    };
    let mut json = tok.to_json()?;
    json.push('\n');
    Ok(vec![
        (TOKENIZER_JSON.to_string(), json.into_bytes()),
        (
            TOKENIZER_CONFIG_JSON.to_string(),
            pretty(&tok.tokenizer_config())?,
        ),
        (
            SPECIAL_TOKENS_MAP_JSON.to_string(),
            pretty(&tok.special_tokens_map())?,
        ),
    ])
}

/// Writes [`pretrained_files`] into `dir` (created if needed), each atomically.
pub fn save_pretrained(tok: &HfTokenizer, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create tokenizer directory {}", dir.display()))?;
    for (name, bytes) in pretrained_files(tok)? {
        crate::io::atomic::write_atomic(&dir.join(name), &bytes)?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Symbols {
    Bytes,
    WordPiece,
}

/// BPE merges over counted words of symbol ids until `names` has `target`
/// entries or no pair is left. Each step merges the most frequent adjacent
/// pair (ties: smallest ids); a merge whose spelling already exists reuses
/// that id. The algorithm of [`Bpe::train`], over named symbols.
fn learn_merges(
    words: Vec<(Vec<u32>, u64)>,
    names: &mut Vec<String>,
    ids: &mut HashMap<String, u32>,
    target: usize,
    join: fn(&str, &str) -> String,
) -> Vec<(u32, u32)> {
    let freq: Vec<i64> = words.iter().map(|(_, c)| *c as i64).collect();
    let mut words: Vec<Vec<u32>> = words.into_iter().map(|(w, _)| w).collect();
    let mut pair_count: HashMap<(u32, u32), i64> = HashMap::new();
    let mut pair_words: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
    for (wi, w) in words.iter().enumerate() {
        for p in w.windows(2) {
            let p = (p[0], p[1]);
            *pair_count.entry(p).or_default() += freq[wi];
            pair_words.entry(p).or_default().push(wi as u32);
        }
    }
    let mut heap: BinaryHeap<(i64, std::cmp::Reverse<(u32, u32)>)> = pair_count
        .iter()
        .map(|(&p, &c)| (c, std::cmp::Reverse(p)))
        .collect();
    let mut merges = Vec::new();
    let mut seen_merges: HashSet<(u32, u32)> = HashSet::new();
    while names.len() < target {
        let Some((count, std::cmp::Reverse(pair))) = heap.pop() else {
            break;
        };
        if pair_count.get(&pair) != Some(&count) || count <= 0 {
            continue;
        }
        let (a, b) = pair;
        let spelled = join(&names[a as usize], &names[b as usize]);
        let new = match ids.get(&spelled) {
            Some(&id) => id,
            None => {
                let id = names.len() as u32;
                ids.insert(spelled.clone(), id);
                names.push(spelled);
                id
            }
        };
        if seen_merges.insert(pair) {
            merges.push(pair);
        }
        let mut delta: HashMap<(u32, u32), i64> = HashMap::new();
        let mut affected = pair_words.remove(&pair).unwrap_or_default();
        affected.sort_unstable();
        affected.dedup();
        for wi in affected {
            let w = &mut words[wi as usize];
            if !w.windows(2).any(|p| p[0] == a && p[1] == b) {
                continue;
            }
            let f = freq[wi as usize];
            for p in w.windows(2) {
                *delta.entry((p[0], p[1])).or_default() -= f;
            }
            let mut merged = Vec::with_capacity(w.len());
            let mut j = 0;
            while j < w.len() {
                if j + 1 < w.len() && w[j] == a && w[j + 1] == b {
                    merged.push(new);
                    j += 2;
                } else {
                    merged.push(w[j]);
                    j += 1;
                }
            }
            for p in merged.windows(2) {
                *delta.entry((p[0], p[1])).or_default() += f;
                if p[0] == new || p[1] == new {
                    pair_words.entry((p[0], p[1])).or_default().push(wi);
                }
            }
            *w = merged;
        }
        pair_count.remove(&pair);
        for (p, d) in delta {
            if d == 0 || p == pair {
                continue;
            }
            let c = pair_count.entry(p).or_default();
            *c += d;
            if *c > 0 {
                heap.push((*c, std::cmp::Reverse(p)));
            } else {
                pair_count.remove(&p);
            }
        }
    }
    merges
}

/// The `tokenizer.json` of `flavour` with vocabulary `names` (id = index;
/// empty names are skipped) and `merges`, parsed by the crate (which checks
/// it). Special tokens of the flavour that are in `names` become added
/// special tokens with their ids.
fn build(flavour: Flavour, names: &[String], merges: &[(String, String)]) -> Result<HfTokenizer> {
    let mut vocab = serde_json::Map::new();
    for (id, n) in names.iter().enumerate() {
        if !n.is_empty() && !vocab.contains_key(n) {
            vocab.insert(n.clone(), json!(id));
        }
    }
    let merges: Vec<Value> = merges.iter().map(|(a, b)| json!([a, b])).collect();
    let id_of = |t: &str| names.iter().position(|n| n == t);
    let added: Vec<Value> = flavour
        .specials()
        .iter()
        .filter_map(|t| id_of(t).map(|id| (t, id)))
        .map(|(t, id)| {
            json!({
                "id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true,
            })
        })
        .collect();
    let byte_level = |use_regex: bool| json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex });
    let bpe = |suffix: Value, unk: Value| {
        json!({
            "type": "BPE", "dropout": null, "unk_token": unk,
            "continuing_subword_prefix": null, "end_of_word_suffix": suffix,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        })
    };
    let pair = |t: &str| json!([t, id_of(t).unwrap_or(0)]);
    let tok = match flavour {
        Flavour::WordPiece => json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": {
                "type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                "strip_accents": null, "lowercase": true,
            },
            "pre_tokenizer": { "type": "BertPreTokenizer" },
            "post_processor": if id_of(CLS).is_some() && id_of(SEP).is_some() {
                json!({ "type": "BertProcessing", "sep": pair(SEP), "cls": pair(CLS) })
            } else {
                Value::Null
            },
            "decoder": { "type": "WordPiece", "prefix": "##", "cleanup": true },
            "model": {
                "type": "WordPiece", "unk_token": UNK, "continuing_subword_prefix": "##",
                "max_input_chars_per_word": 100, "vocab": vocab,
            },
        }),
        Flavour::Gpt2 => json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": byte_level(true),
            "post_processor": byte_level(true),
            "decoder": byte_level(true),
            "model": bpe(Value::Null, Value::Null),
        }),
        Flavour::Clip => json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": { "type": "Sequence", "normalizers": [
                { "type": "NFC" },
                { "type": "Replace", "pattern": { "Regex": r"\s+" }, "content": " " },
                { "type": "Lowercase" },
            ]},
            "pre_tokenizer": { "type": "Sequence", "pretokenizers": [
                { "type": "Split", "pattern": { "Regex": CLIP_SPLIT }, "behavior": "Removed", "invert": true },
                byte_level(false),
            ]},
            "post_processor": if id_of(START_OF_TEXT).is_some() && id_of(END_OF_TEXT).is_some() {
                json!({
                    "type": "RobertaProcessing", "sep": pair(END_OF_TEXT), "cls": pair(START_OF_TEXT),
                    "trim_offsets": false, "add_prefix_space": false,
                })
            } else {
                Value::Null
            },
            "decoder": byte_level(true),
            "model": bpe(json!("</w>"), if id_of(END_OF_TEXT).is_some() { json!(END_OF_TEXT) } else { Value::Null }),
        }),
        Flavour::Other => bail!("no built-in pipeline for other tokenizers"),
    };
    let hf = HfTokenizer::from_json(&tok.to_string())?;
    debug_assert_eq!(hf.flavour, flavour);
    Ok(hf)
}

impl Tokenizer for HfTokenizer {
    /// Ids without the post-processor's special tokens (a stream of text);
    /// special tokens spelled in the text are still single ids.
    fn encode(&self, text: &str) -> Vec<u32> {
        self.try_encode(text)
            .unwrap_or_else(|e| panic!("{} tokenizer failed: {e}", self.flavour.kind()))
    }

    fn decode(&self, ids: &[u32]) -> String {
        // Runs of known ids go through the crate's decoder; unknown ids
        // become U+FFFD.
        let mut out = String::new();
        let mut run: Vec<u32> = Vec::new();
        let flush = |run: &mut Vec<u32>, out: &mut String| {
            if run.is_empty() {
                return;
            }
            let mut s = self.inner.decode(run, false).unwrap_or_default();
            if self.flavour == Flavour::Clip {
                s = s.replace("</w>", " ").trim_end().to_owned();
            }
            out.push_str(&s);
            run.clear();
        };
        for &id in ids {
            if self.inner.id_to_token(id).is_some() {
                run.push(id);
            } else {
                flush(&mut run, &mut out);
                out.push('\u{FFFD}');
            }
        }
        flush(&mut run, &mut out);
        out
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn kind(&self) -> &'static str {
        self.flavour.kind()
    }

    /// `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`
    /// and `tokenizer_kind.json`.
    fn files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut f = pretrained_files(self)?;
        let kind = format!("{}\n", json!({ "kind": self.kind() }));
        f.push((super::tokenizer::KIND_FILE.to_string(), kind.into_bytes()));
        Ok(f)
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    fn special_ids(&self) -> Vec<u32> {
        self.special.clone()
    }

    fn to_hugging_face(&self) -> Result<HfTokenizer> {
        HfTokenizer::from_json(&self.to_json()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tokenizer::{load_tokenizer, tokenizer_by_name, ByteTokenizer};
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-hftok-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn corpus() -> String {
        crate::data::builtin_corpus(40_000).0
    }

    /// Short captions in the style of CLIP's training text.
    fn caption_like() -> String {
        let mut s = String::new();
        for t in [
            "a photo of a {}.",
            "a picture of the {}.",
            "a {} on a dark background.",
        ] {
            for a in ["", "knit ", "long-sleeved ", "leather "] {
                for n in [
                    "pullover",
                    "sweater",
                    "coat",
                    "bag",
                    "ankle boot",
                    "t-shirt",
                ] {
                    s.push_str(&t.replace("{}", &format!("{a}{n}")));
                    s.push('\n');
                }
            }
        }
        s
    }

    #[test]
    fn wordpiece_like_bert_uncased() {
        let text = corpus() + "\nThe Cat sat on the mat. Café, naïve!\n";
        // The built-in corpus has few distinct words: merges run out (every
        // word a token) before 600.
        let tok = HfTokenizer::train(Flavour::WordPiece, &text, 600).unwrap();
        assert_eq!(tok.flavour(), Flavour::WordPiece);
        assert_eq!(tok.kind(), "wordpiece");
        assert!(
            tok.vocab_size() <= 600 && tok.vocab_size() > 250,
            "{}",
            tok.vocab_size()
        );
        assert_eq!(
            HfTokenizer::train(Flavour::WordPiece, &text, 200)
                .unwrap()
                .vocab_size(),
            200
        );
        for (i, s) in BERT_SPECIALS.iter().enumerate() {
            assert_eq!(tok.token_to_id(s), Some(i as u32), "{s}");
        }
        assert_eq!(tok.special_ids(), vec![0, 1, 2, 3, 4]);
        // Special tokens in text are single ids; the rest is lowercased.
        let ids = tok.encode("the [MASK] sat");
        assert_eq!(
            ids.iter().filter(|&&i| i == 4).count(),
            1,
            "{:?}",
            tok.tokens(&ids)
        );
        assert_eq!(ids, tok.encode("THE [MASK] Sat"));
        assert_eq!(tok.decode(&ids), "the [MASK] sat");
        let with = tok.encode_with_specials("the cat").unwrap();
        assert_eq!((with[0], *with.last().unwrap()), (2, 3));
        assert_eq!(with[1..with.len() - 1], tok.encode("the cat"));
        // Accents are stripped, punctuation split off, "##" continuations.
        assert_eq!(tok.decode(&tok.encode("Café, naïve!")), "cafe, naive!");
        let pieces = tok.tokens(&tok.encode("unbelievableness"));
        assert!(
            pieces
                .iter()
                .skip(1)
                .all(|p| p.as_ref().unwrap().starts_with("##")),
            "{pieces:?}"
        );
        // Characters never seen become [UNK].
        assert_eq!(tok.encode("☃"), vec![1]);
    }

    #[test]
    fn training_is_deterministic() {
        let text = corpus();
        for (flavour, size) in [
            (Flavour::WordPiece, 250),
            (Flavour::Gpt2, 450),
            (Flavour::Clip, 650),
        ] {
            let a = HfTokenizer::train(flavour, &text, size).unwrap();
            let b = HfTokenizer::train(flavour, &text, size).unwrap();
            assert_eq!(a.to_json().unwrap(), b.to_json().unwrap(), "{flavour:?}");
            assert_eq!(a.vocab_size(), size, "{flavour:?}");
        }
        let e = HfTokenizer::train(Flavour::Clip, &text, 300)
            .unwrap_err()
            .to_string();
        assert!(e.contains("below 514"), "{e}");
        let e = HfTokenizer::train(Flavour::WordPiece, &text, 6)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no room"), "{e}");
    }

    /// The generic trainer on byte-level GPT-2 is the hand-written
    /// [`Bpe::train`] (same merges, same ids), plus `<|endoftext|>`.
    #[test]
    fn gpt2_flavour_matches_hand_written_bpe() {
        let text = corpus() + "\nIt's 2024; they'll say \"héllo\"  world!\n\n  indented\n";
        let bpe = Bpe::train(&text, 450).unwrap();
        let hf = HfTokenizer::train(Flavour::Gpt2, &text, 451).unwrap();
        let conv = HfTokenizer::from_bpe(&bpe).unwrap();
        let mut vocab = hf.inner().get_vocab(true);
        vocab.remove(END_OF_TEXT);
        assert_eq!(vocab, conv.inner().get_vocab(true));
        let merges = |t: &HfTokenizer| -> Value {
            serde_json::from_str::<Value>(&t.to_json().unwrap()).unwrap()["model"]["merges"].clone()
        };
        assert_eq!(merges(&hf), merges(&conv));
        assert_eq!(merges(&hf).as_array().unwrap().len(), bpe.num_merges());
        assert_eq!(hf.vocab_size(), 451);
        assert_eq!(hf.token_to_id(END_OF_TEXT), Some(450));
        let sample = &text[..5000];
        assert_eq!(hf.encode(sample), bpe.encode(sample));
        assert_eq!(conv.encode(sample), bpe.encode(sample));
        let eot = hf.encode("a<|endoftext|>b");
        assert_eq!(eot.len(), 3, "{eot:?}");
        assert_eq!(hf.decode(&eot), "a<|endoftext|>b");
        // A Kiln-trained BPE has no such token: ordinary pieces.
        assert!(conv.encode("x<|endoftext|>").len() > 2);
    }

    /// The crate's byte-level BPE, given the committed fixture's vocab.json
    /// and merges.txt, reproduces the ids Hugging Face produced for it.
    #[test]
    fn crate_bpe_reproduces_fixture_ids() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bpe");
        let bpe = Bpe::from_files(&dir.join("vocab.json"), &dir.join("merges.txt")).unwrap();
        let hf = HfTokenizer::from_bpe(&bpe).unwrap();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        for case in expected["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(hf.encode(text), want, "{text:?}");
            assert_eq!(hf.decode(&want), text);
        }
    }

    #[test]
    fn clip_flavour() {
        let text = caption_like();
        let tok = HfTokenizer::train(Flavour::Clip, &text, 900).unwrap();
        let v = tok.vocab_size() as u32;
        assert_eq!(tok.token_to_id(START_OF_TEXT), Some(v - 2));
        assert_eq!(tok.token_to_id(END_OF_TEXT), Some(v - 1));
        assert_eq!(tok.special_ids(), vec![v - 2, v - 1]);
        let ids = tok.encode_with_specials("A Photo of a  PULLOVER.").unwrap();
        assert_eq!((ids[0], *ids.last().unwrap()), (v - 2, v - 1));
        let pieces = tok.tokens(&ids[1..ids.len() - 1]);
        assert!(
            pieces.iter().any(|p| p.as_deref() == Some("pullover</w>")),
            "{pieces:?}"
        );
        assert_eq!(
            tok.decode(&ids[1..ids.len() - 1]),
            "a photo of a pullover ."
        );
        let e = tok.encode("x<|endoftext|>");
        assert_eq!(e.last(), Some(&(v - 1)));
        // Bytes never seen still encode (every byte has a token, at word
        // end too); nothing becomes unknown.
        let odd = tok.encode("ß😀 zz");
        assert!(!odd.contains(&(v - 1)), "{odd:?}");
        // (CLIP decodes each pre-token as a word: letters and symbols split.)
        assert_eq!(tok.decode(&odd), "ß 😀 zz");
    }

    #[test]
    fn save_load_and_names() {
        let dir = temp_dir("save");
        let text = corpus();
        for flavour in [Flavour::WordPiece, Flavour::Gpt2, Flavour::Clip] {
            let tok = tokenizer_by_name(flavour.kind(), Some(&text), 700).unwrap();
            assert_eq!(tok.kind(), flavour.kind());
            let d = dir.join(flavour.kind());
            tok.save(&d).unwrap();
            for f in [
                TOKENIZER_JSON,
                TOKENIZER_CONFIG_JSON,
                SPECIAL_TOKENS_MAP_JSON,
                "tokenizer_kind.json",
            ] {
                assert!(d.join(f).is_file(), "{f}");
            }
            let back = load_tokenizer(&d).unwrap();
            assert_eq!(back.kind(), flavour.kind());
            assert_eq!(back.vocab_size(), tok.vocab_size());
            let s = &text[100..2000];
            assert_eq!(back.encode(s), tok.encode(s));
            assert_eq!(back.special_ids(), tok.special_ids());
            // A directory with only tokenizer.json (as from the Hub) loads too.
            std::fs::remove_file(d.join("tokenizer_kind.json")).unwrap();
            assert_eq!(load_tokenizer(&d).unwrap().encode(s), tok.encode(s));
            let by_path =
                tokenizer_by_name(&format!("hf:{}", d.join(TOKENIZER_JSON).display()), None, 0)
                    .unwrap();
            assert_eq!(by_path.encode(s), tok.encode(s));
            let cfg: Value = serde_json::from_str(
                &std::fs::read_to_string(d.join(TOKENIZER_CONFIG_JSON)).unwrap(),
            )
            .unwrap();
            let class = cfg["tokenizer_class"].as_str().unwrap();
            match flavour {
                Flavour::WordPiece => {
                    assert_eq!(class, "BertTokenizer");
                    assert_eq!(cfg["mask_token"], "[MASK]");
                }
                Flavour::Gpt2 => assert_eq!(class, "GPT2Tokenizer"),
                _ => {
                    assert_eq!(class, "CLIPTokenizer");
                    assert_eq!(cfg["pad_token"], END_OF_TEXT);
                }
            }
        }
        let e = format!(
            "{:#}",
            HfTokenizer::from_file(&dir.join("nope.json")).unwrap_err()
        );
        assert!(e.contains("nope.json"), "{e}");
        std::fs::write(dir.join("bad.json"), "{\"model\": 3}").unwrap();
        let e = format!(
            "{:#}",
            HfTokenizer::from_file(&dir.join("bad.json")).unwrap_err()
        );
        assert!(
            e.contains("bad.json") && e.contains("tokenizer.json"),
            "{e}"
        );
        let e = tokenizer_by_name("wordpiece", None, 100)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("none was given"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn kiln_tokenizers_convert_to_hugging_face() {
        let dir = temp_dir("convert");
        let hf = ByteTokenizer.to_hugging_face().unwrap();
        let s = "héllo\n  wörld 😀";
        assert_eq!(hf.encode(s), ByteTokenizer.encode(s));
        assert_eq!(hf.vocab_size(), 256);
        save_pretrained(&hf, &dir).unwrap();
        let cfg = std::fs::read_to_string(dir.join(TOKENIZER_CONFIG_JSON)).unwrap();
        assert!(cfg.contains("PreTrainedTokenizerFast"), "{cfg}");
        let back = HfTokenizer::from_file(&dir).unwrap();
        assert_eq!(back.encode(s), ByteTokenizer.encode(s));
        let bpe = Bpe::train(&corpus(), 300).unwrap();
        let t: &dyn Tokenizer = &bpe;
        assert_eq!(t.to_hugging_face().unwrap().encode(s), bpe.encode(s));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn long_texts_encode_in_chunks_like_whole() {
        let base = corpus();
        let mut text = String::new();
        let mut i = 0;
        while text.len() < 3 * CHUNK_BYTES {
            text.push_str(&base[i % 1000..i % 1000 + 300]);
            text.push_str(["\n", "\n\n  ", " \n\tx", "\n's", "\n\n\n"][i % 5]);
            i += 1;
        }
        let parts = chunks(&text);
        assert!(parts.len() >= 3, "{}", parts.len());
        assert_eq!(parts.concat(), text);
        for flavour in [Flavour::WordPiece, Flavour::Gpt2, Flavour::Clip] {
            let tok = HfTokenizer::train(flavour, &base, 700).unwrap();
            let whole = tok
                .inner()
                .encode(text.as_str(), false)
                .unwrap()
                .get_ids()
                .to_vec();
            assert_eq!(tok.encode(&text), whole, "{flavour:?}");
        }
    }

    /// Writes a trained tokenizer of each flavour (and the byte tokenizer's
    /// conversion) with sample texts and Kiln's ids into
    /// `$KILN_HF_TOKENIZER_CHECK`, for scripts/check_hf_tokenizers.py, which
    /// loads them with `AutoTokenizer.from_pretrained` and compares.
    #[test]
    #[ignore]
    fn write_hf_tokenizer_check() {
        let out = PathBuf::from(
            std::env::var("KILN_HF_TOKENIZER_CHECK").expect("set KILN_HF_TOKENIZER_CHECK"),
        );
        let text = corpus() + "\n" + &caption_like();
        let samples = [
            "the [MASK] sat on the mat.",
            "Hello World! It's 2024; they'll say \"héllo\"  wörld 😀\n\n  indented",
            "a photo of a pullover.<|endoftext|>",
            "<|startoftext|>A Long-Sleeved KNIT pullover<|endoftext|>",
            &text[1000..1600],
        ];
        let mut toks: Vec<(String, Box<dyn Tokenizer>)> =
            [Flavour::WordPiece, Flavour::Gpt2, Flavour::Clip]
                .into_iter()
                .map(|f| {
                    (
                        f.kind().to_string(),
                        Box::new(HfTokenizer::train(f, &text, 900).unwrap()) as Box<dyn Tokenizer>,
                    )
                })
                .collect();
        toks.push((
            "byte".into(),
            Box::new(ByteTokenizer.to_hugging_face().unwrap()),
        ));
        let mut cases = Vec::new();
        for (name, tok) in &toks {
            let dir = out.join(name);
            tok.save(&dir).unwrap();
            let hf = HfTokenizer::from_file(&dir).unwrap();
            for s in samples {
                cases.push(json!({
                    "tokenizer": name, "text": s, "ids": tok.encode(s),
                    "ids_with_specials": hf.encode_with_specials(s).unwrap(),
                    "decoded": tok.decode(&tok.encode(s)),
                }));
            }
        }
        std::fs::write(
            out.join("cases.json"),
            serde_json::to_string_pretty(&cases).unwrap(),
        )
        .unwrap();
    }

    /// Training on the whole of shakespeare.txt (5.1 MB), vocabulary 8192,
    /// with times: `cargo test --lib shakespeare_tokenizers -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn shakespeare_tokenizers() {
        let Some(path) = crate::data::shared_text("shakespeare.txt") else {
            println!("skipped: ../shared/data/text/shakespeare.txt not found");
            return;
        };
        let text = crate::data::load_text(&path).unwrap();
        for flavour in [Flavour::WordPiece, Flavour::Gpt2, Flavour::Clip] {
            let t = std::time::Instant::now();
            let tok = HfTokenizer::train(flavour, &text, 8192).unwrap();
            let train_s = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            let ids = tok.encode(&text);
            println!(
                "shakespeare {}: trained 8192 on {:.1} MB in {train_s:.1}s; {} tokens ({:.2} \
                 bytes/token), encoded in {:.1}s",
                flavour.kind(),
                text.len() as f64 / 1e6,
                ids.len(),
                text.len() as f64 / ids.len() as f64,
                t.elapsed().as_secs_f64()
            );
        }
        let t = std::time::Instant::now();
        let bpe = Bpe::train(&text, 8192).unwrap();
        println!(
            "shakespeare bpe (hand-written): trained 8192 in {:.1}s, {} merges",
            t.elapsed().as_secs_f64(),
            bpe.num_merges()
        );
    }

    /// Training time and compression on shared texts (skipped when absent).
    #[test]
    fn shared_corpus_tokenizers() {
        let Some(path) = crate::data::shared_text("moby.txt") else {
            println!("skipped: ../shared/data/text/moby.txt not found");
            return;
        };
        let text = crate::data::load_text(&path).unwrap();
        let sample = &text[..text.len().min(400_000)];
        for (flavour, vocab) in [
            (Flavour::WordPiece, 4096),
            (Flavour::Gpt2, 4096),
            (Flavour::Clip, 4096),
        ] {
            let t = std::time::Instant::now();
            let tok = HfTokenizer::train(flavour, sample, vocab).unwrap();
            let train_s = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            let ids = tok.encode(&text);
            let enc_s = t.elapsed().as_secs_f64();
            println!(
                "moby {}: trained {vocab} on {} KB in {train_s:.2}s; encoded {} bytes → {} tokens \
                 ({:.2} bytes/token) in {enc_s:.2}s",
                flavour.kind(),
                sample.len() / 1000,
                text.len(),
                ids.len(),
                text.len() as f64 / ids.len() as f64
            );
            assert!(text.len() as f64 / ids.len() as f64 > 2.5);
            if flavour == Flavour::Gpt2 {
                assert_eq!(tok.decode(&ids), text);
            }
        }
    }
}
