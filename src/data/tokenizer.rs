//! Tokenizers: bytes, and byte-level BPE in the GPT-2 / Hugging Face format.
//!
//! # Byte-level BPE
//!
//! Text is first split into *pre-tokens* by GPT-2's pattern (see
//! [`pretokenize`]); each pre-token's UTF-8 bytes start as one symbol per
//! byte, and the merge with the lowest rank among adjacent symbol pairs is
//! applied (to every non-overlapping occurrence, left to right) until no
//! adjacent pair has a merge. This is the algorithm of GPT-2's `encoder.py`
//! and of Hugging Face `tokenizers`' BPE model, and it gives the same ids.
//!
//! On disk a BPE is two Hugging Face files: `vocab.json`, a JSON object from
//! token to id where a token's bytes are spelled with GPT-2's
//! `bytes_to_unicode` alphabet (each byte is one printable character: `Ġ` is
//! the space, `Ċ` the newline), and `merges.txt`, a `#version: 0.2` header
//! then one merge `left right` per line, by rank. [`Bpe::from_files`] reads
//! the files of GPT-2 itself or of any model in that format; [`Bpe::train`]
//! learns merges on a text and [`Tokenizer::save`] writes files that
//! `GPT2TokenizerFast(vocab_file=…, merges_file=…)` loads (checked by the
//! fixture test against ids that Hugging Face produced).
//!
//! Special tokens such as GPT-2's `<|endoftext|>` get no special treatment
//! here: they can be decoded, but encoding a string that spells one gives
//! its ordinary pieces. The Hugging Face tokenizers of
//! [`super::hf_tokenizer`] (`gpt2-bpe`, `wordpiece`, `clip-bpe`) give the
//! single special id; [`Tokenizer::to_hugging_face`] converts this one.

use std::collections::{BinaryHeap, HashMap};
use std::fs;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};

use super::hf_tokenizer::{Flavour, HfTokenizer, TOKENIZER_JSON as HF_JSON};

/// A text ↔ token-id mapping.
pub trait Tokenizer: Send + Sync {
    fn encode(&self, text: &str) -> Vec<u32>;
    /// Ids back to text. Bytes that are not valid UTF-8 (a multi-byte
    /// character cut between tokens) and unknown ids become U+FFFD.
    fn decode(&self, ids: &[u32]) -> String;
    /// Every id this tokenizer produces is `< vocab_size()`.
    fn vocab_size(&self) -> usize;
    /// `"byte"` or `"bpe"`, as written in `tokenizer_kind.json`.
    fn kind(&self) -> &'static str;
    /// The files [`load_tokenizer`] reads back: (name, contents).
    fn files(&self) -> Result<Vec<(String, Vec<u8>)>>;
    /// Writes [`Self::files`] into `dir` (created), each file atomically.
    fn save(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create tokenizer directory {}", dir.display()))?;
        for (name, bytes) in self.files()? {
            crate::io::atomic::write_atomic(&dir.join(name), &bytes)?;
        }
        Ok(())
    }
    /// The id of the token spelled exactly `token` (a special token such as
    /// `[MASK]` or `<|endoftext|>`), if this tokenizer has one.
    fn token_to_id(&self, _token: &str) -> Option<u32> {
        None
    }
    /// Ids of the special tokens (`[CLS]`, `[SEP]`, `[MASK]`, `[PAD]`,
    /// `[UNK]`, `<|endoftext|>`…): never masked, never drawn as random
    /// replacements. None for the byte and hand-written BPE tokenizers.
    fn special_ids(&self) -> Vec<u32> {
        Vec::new()
    }
    /// The same tokenizer (same ids) as a Hugging Face one, whose
    /// `tokenizer.json` `AutoTokenizer.from_pretrained` reads (see
    /// [`super::hf_tokenizer::save_pretrained`]).
    fn to_hugging_face(&self) -> Result<super::hf_tokenizer::HfTokenizer> {
        bail!("the {} tokenizer has no Hugging Face form", self.kind())
    }
}

pub(crate) const KIND_FILE: &str = "tokenizer_kind.json";
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

fn kind_file(kind: &str) -> (String, Vec<u8>) {
    let json = serde_json::json!({ "kind": kind });
    (KIND_FILE.to_string(), format!("{json}\n").into_bytes())
}

// ---------------------------------------------------------------------------
// Bytes

/// One token per byte: id = byte value, vocabulary 256.
#[derive(Clone, Copy, Debug, Default)]
pub struct ByteTokenizer;

impl Tokenizer for ByteTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len());
        for &id in ids {
            match u8::try_from(id) {
                Ok(b) => bytes.push(b),
                Err(_) => bytes.extend_from_slice(REPLACEMENT),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn vocab_size(&self) -> usize {
        256
    }

    fn kind(&self) -> &'static str {
        "byte"
    }

    fn files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(vec![kind_file(self.kind())])
    }

    /// A byte-level BPE with the 256 bytes (id = byte value) and no merges.
    fn to_hugging_face(&self) -> Result<super::hf_tokenizer::HfTokenizer> {
        let bytes = Bpe::from_parts((0..=255u8).map(|b| Some(vec![b])).collect(), Vec::new())?;
        super::hf_tokenizer::HfTokenizer::from_bpe(&bytes)
    }
}

// ---------------------------------------------------------------------------
// GPT-2's byte ↔ unicode alphabet

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes (`!`..`~`, `¡`..`¬`,
/// `®`..`ÿ`) stand for themselves; the other 68 bytes, in increasing order,
/// get U+0100, U+0101, … (so the space 0x20 is `Ġ` U+0120, `\n` is `Ċ`).
pub fn byte_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let b = b as u32;
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let code = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        *slot = char::from_u32(code).expect("valid code point");
    }
    table
}

/// The inverse of [`byte_to_unicode`] (all its characters are below U+0144).
fn unicode_to_byte() -> Vec<Option<u8>> {
    let mut inv = vec![None; 0x144];
    for (b, c) in byte_to_unicode().iter().enumerate() {
        inv[*c as usize] = Some(b as u8);
    }
    inv
}

// ---------------------------------------------------------------------------
// Pre-tokenization

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_whitespace() {
        Class::Space
    } else if c.is_numeric() {
        // Before letters: Nl (e.g. Roman numeral Ⅻ) is Alphabetic in Rust
        // but \p{N}, not \p{L}, in the regex.
        Class::Number
    } else if c.is_alphabetic() {
        Class::Letter
    } else {
        Class::Other
    }
}

/// Splits text like GPT-2's pre-tokenization regex
///
/// ```text
/// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
/// ```
///
/// implemented by hand: at each position the first alternative that matches
/// wins. Contractions are lowercase-only (as in GPT-2); a single ASCII space
/// joins the letter/number/other run that follows it; a run of whitespace
/// followed by a non-space gives its last character back to the next piece
/// (`\s+(?!\S)`), unless the run is one character long (then `\s+` takes it).
/// The pieces concatenate to the input exactly.
///
/// Character classes use `char::is_whitespace` (the Unicode `White_Space`
/// property) for `\s`, `char::is_numeric` (categories Nd, Nl, No, exactly
/// `\p{N}`) for `\p{N}`, and `char::is_alphabetic` for `\p{L}`. The last is
/// the only inexact one: `Alphabetic` is `\p{L}` plus Nl (handled: numbers
/// are tested first) plus `Other_Alphabetic` — combining vowel signs of
/// Indic and other scripts (Mn/Mc, e.g. U+093E), U+0345, and the circled and
/// squared Latin letters Ⓐ–ⓩ, 🄰–🅉 (So). Those count as letters here and as
/// "other" in the regex, so text containing them can split differently from
/// GPT-2 (the bytes are always preserved; only ids can differ). Latin, Greek,
/// Cyrillic, CJK, Arabic letters, digits, emoji and punctuation agree.
pub fn pretokenize(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let classes: Vec<Class> = chars.iter().map(|&(_, c)| class(c)).collect();
    let n = chars.len();
    let at = |i: usize| if i < n { chars[i].0 } else { text.len() };
    let mut pieces = Vec::new();
    let mut i = 0;
    while i < n {
        let end = piece_end(&chars, &classes, i);
        pieces.push(&text[at(i)..at(end)]);
        i = end;
    }
    pieces
}

/// The end (exclusive, in chars) of the piece that starts at `i`.
fn piece_end(chars: &[(usize, char)], classes: &[Class], i: usize) -> usize {
    let n = chars.len();
    let ch = |k: usize| if k < n { Some(chars[k].1) } else { None };
    // 's|'t|'re|'ve|'m|'ll|'d
    if ch(i) == Some('\'') {
        match (ch(i + 1), ch(i + 2)) {
            (Some('s' | 't' | 'm' | 'd'), _) => return i + 2,
            (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => {
                return i + 3
            }
            _ => {}
        }
    }
    // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`
    let start = if ch(i) == Some(' ') && i + 1 < n && classes[i + 1] != Class::Space {
        i + 1
    } else {
        i
    };
    let k = classes[start];
    let mut j = start + 1;
    while j < n && classes[j] == classes[start] {
        j += 1;
    }
    if k != Class::Space {
        return j;
    }
    // `\s+(?!\S)|\s+`: j is the end of the whitespace run starting at i.
    if j < n && j - i > 1 {
        j - 1
    } else {
        j
    }
}

// ---------------------------------------------------------------------------
// BPE

/// Pre-token cache size beyond which the cache is emptied (bounds memory on
/// huge texts; typical corpora have far fewer distinct pre-tokens).
const CACHE_LIMIT: usize = 1 << 18;

/// A byte-level BPE tokenizer (GPT-2 / Hugging Face format).
pub struct Bpe {
    /// Bytes of each token by id; `None` for ids missing from a sparse vocab.
    tokens: Vec<Option<Vec<u8>>>,
    /// The id of each single-byte token.
    byte_ids: [u32; 256],
    /// Merges by rank: (left, right, merged).
    merges: Vec<(u32, u32, u32)>,
    /// (left, right) → (rank, merged).
    ranks: HashMap<(u32, u32), (u32, u32)>,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl std::fmt::Debug for Bpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bpe")
            .field("vocab_size", &self.tokens.len())
            .field("merges", &self.merges.len())
            .finish()
    }
}

/// 1-based line of the first occurrence of `needle` in `text`, if any.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.find(needle)
        .map(|pos| text[..pos].matches('\n').count() + 1)
}

impl Bpe {
    fn from_parts(tokens: Vec<Option<Vec<u8>>>, merges: Vec<(u32, u32, u32)>) -> Result<Self> {
        let mut by_bytes: HashMap<&[u8], u32> = HashMap::new();
        for (id, t) in tokens.iter().enumerate() {
            if let Some(t) = t {
                by_bytes.entry(t.as_slice()).or_insert(id as u32);
            }
        }
        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = *by_bytes
                .get([b as u8].as_slice())
                .ok_or_else(|| anyhow!("vocabulary has no token for byte 0x{b:02X}"))?;
        }
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, &(a, b, m)) in merges.iter().enumerate() {
            // A repeated merge keeps its first (lowest) rank, as in HF.
            ranks.entry((a, b)).or_insert((rank as u32, m));
        }
        Ok(Self {
            tokens,
            byte_ids,
            merges,
            ranks,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Reads Hugging Face GPT-2 files: `vocab.json` (token → id, tokens
    /// spelled in GPT-2's byte-to-unicode alphabet) and `merges.txt`
    /// (optional `#version` first line, then `left right` per line by rank).
    /// Errors name the file and, where there is one, the line.
    pub fn from_files(vocab_json: &Path, merges_txt: &Path) -> Result<Self> {
        let vtext = fs::read_to_string(vocab_json)
            .with_context(|| format!("cannot read vocabulary file {}", vocab_json.display()))?;
        let mtext = fs::read_to_string(merges_txt)
            .with_context(|| format!("cannot read merges file {}", merges_txt.display()))?;
        Self::from_texts(
            &vtext,
            &vocab_json.display().to_string(),
            &mtext,
            &merges_txt.display().to_string(),
        )
    }

    /// [`Self::from_files`] on the files' contents; `vname` and `mname` name
    /// them in errors.
    pub fn from_texts(vtext: &str, vname: &str, mtext: &str, mname: &str) -> Result<Self> {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(vtext).map_err(|e| {
                anyhow!(
                    "{vname}: line {}, column {}: not a JSON object from token to id: {e}",
                    e.line(),
                    e.column()
                )
            })?;
        let where_token = |tok: &str| {
            let quoted = serde_json::to_string(tok).unwrap_or_default();
            match line_of(vtext, &quoted) {
                Some(l) => format!("{vname}: line {l}: token {quoted}"),
                None => format!("{vname}: token {quoted}"),
            }
        };
        let inv = unicode_to_byte();
        let mut tokens: Vec<Option<Vec<u8>>> = Vec::new();
        let mut ids: HashMap<&str, u32> = HashMap::with_capacity(map.len());
        for (tok, v) in &map {
            let id = v.as_u64().filter(|&id| id < (1 << 31)).ok_or_else(|| {
                anyhow!(
                    "{}: id {v} is not an integer in [0, 2^31)",
                    where_token(tok)
                )
            })? as u32;
            let mut bytes = Vec::with_capacity(tok.len());
            for c in tok.chars() {
                match inv.get(c as usize).copied().flatten() {
                    Some(b) => bytes.push(b),
                    None => bail!(
                        "{}: character {c:?} (U+{:04X}) is not in GPT-2's byte-to-unicode \
                         alphabet, so this is not a byte-level BPE vocabulary",
                        where_token(tok),
                        c as u32
                    ),
                }
            }
            let idx = id as usize;
            let bound = 2 * map.len() + 256;
            if idx >= bound {
                bail!(
                    "{}: id {id} would leave most ids unused (the file has {} tokens; ids must be below {bound})",
                    where_token(tok),
                    map.len()
                );
            }
            if tokens.len() <= idx {
                tokens.resize(idx + 1, None);
            }
            if tokens[idx].is_some() {
                let other = map
                    .iter()
                    .find(|(t, v)| v.as_u64() == Some(id as u64) && *t != tok)
                    .map(|(t, _)| t.as_str())
                    .unwrap_or("?");
                bail!(
                    "{}: id {id} is also used by token {other:?}",
                    where_token(tok)
                );
            }
            tokens[idx] = Some(bytes);
            ids.insert(tok.as_str(), id);
        }
        for (b, c) in byte_to_unicode().iter().enumerate() {
            if !ids.contains_key(c.to_string().as_str()) {
                bail!(
                    "{vname}: no token for byte 0x{b:02X} (spelled {c:?}); a byte-level BPE \
                     vocabulary must contain all 256 bytes"
                );
            }
        }

        let mut merges = Vec::new();
        for (lineno, line) in mtext.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if (lineno == 0 && line.starts_with("#version")) || line.is_empty() {
                continue;
            }
            let ln = lineno + 1;
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() != 2 || parts[0].is_empty() || parts[1].is_empty() {
                bail!(
                    "{mname}: line {ln}: expected two tokens separated by one space, got {line:?}"
                );
            }
            let id = |t: &str| {
                ids.get(t)
                    .copied()
                    .ok_or_else(|| anyhow!("{mname}: line {ln}: token {t:?} is not in {vname}"))
            };
            let (a, b) = (id(parts[0])?, id(parts[1])?);
            let merged = id(&format!("{}{}", parts[0], parts[1]))?;
            merges.push((a, b, merged));
        }
        Self::from_parts(tokens, merges)
            .with_context(|| format!("building BPE from {vname} and {mname}"))
    }

    /// Learns a byte-level BPE on `text`: 256 byte tokens (id = byte value)
    /// then merges until the vocabulary has `vocab_size` tokens or no pair of
    /// adjacent symbols is left. Each step merges the most frequent adjacent
    /// pair within pre-tokens (counted over the whole text); ties go to the
    /// smallest (left id, right id). A merge whose bytes equal an existing
    /// token reuses its id (as Hugging Face's trainer does), so the
    /// vocabulary can be smaller than 256 + number of merges.
    pub fn train(text: &str, vocab_size: usize) -> Result<Self> {
        if vocab_size < 256 {
            bail!(
                "BPE vocabulary size {vocab_size} is below 256 (one token per byte is the minimum)"
            );
        }
        if vocab_size > (1 << 31) {
            bail!("BPE vocabulary size {vocab_size} is too large");
        }
        // Distinct pre-tokens with counts, in a fixed order.
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for p in pretokenize(text) {
            *counts.entry(p).or_default() += 1;
        }
        let mut uniq: Vec<(&str, u64)> = counts.into_iter().collect();
        uniq.sort_unstable();
        let mut words: Vec<Vec<u32>> = uniq
            .iter()
            .map(|(w, _)| w.bytes().map(u32::from).collect())
            .collect();
        let freq: Vec<i64> = uniq.iter().map(|&(_, c)| c as i64).collect();

        let mut pair_count: HashMap<(u32, u32), i64> = HashMap::new();
        let mut pair_words: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
        for (wi, w) in words.iter().enumerate() {
            for p in w.windows(2) {
                let p = (p[0], p[1]);
                *pair_count.entry(p).or_default() += freq[wi];
                pair_words.entry(p).or_default().push(wi as u32);
            }
        }
        // Max-heap on (count, smallest pair); stale entries are skipped.
        let mut heap: BinaryHeap<(i64, std::cmp::Reverse<(u32, u32)>)> = pair_count
            .iter()
            .map(|(&p, &c)| (c, std::cmp::Reverse(p)))
            .collect();

        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut token_id: HashMap<Vec<u8>, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut merges: Vec<(u32, u32, u32)> = Vec::new();
        while tokens.len() < vocab_size {
            let Some((count, std::cmp::Reverse(pair))) = heap.pop() else {
                break;
            };
            if pair_count.get(&pair) != Some(&count) || count <= 0 {
                continue;
            }
            let (a, b) = pair;
            let bytes = [tokens[a as usize].as_slice(), tokens[b as usize].as_slice()].concat();
            let new = match token_id.get(&bytes) {
                Some(&id) => id,
                None => {
                    let id = tokens.len() as u32;
                    token_id.insert(bytes.clone(), id);
                    tokens.push(bytes);
                    id
                }
            };
            merges.push((a, b, new));

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
        Self::from_parts(tokens.into_iter().map(Some).collect(), merges)
    }

    /// Number of merges (ranks).
    pub fn num_merges(&self) -> usize {
        self.merges.len()
    }

    /// Bytes of each token by id (`None` for ids a sparse vocabulary lacks).
    pub fn token_bytes(&self) -> &[Option<Vec<u8>>] {
        &self.tokens
    }

    /// Merges by rank: (left id, right id, merged id).
    pub fn merge_ids(&self) -> &[(u32, u32, u32)] {
        &self.merges
    }

    /// BPE of one pre-token's bytes.
    fn encode_piece(&self, bytes: &[u8]) -> Vec<u32> {
        let mut syms: Vec<u32> = bytes.iter().map(|&b| self.byte_ids[b as usize]).collect();
        while syms.len() > 1 {
            let mut best: Option<(u32, u32)> = None; // (rank, merged)
            for p in syms.windows(2) {
                if let Some(&(rank, merged)) = self.ranks.get(&(p[0], p[1])) {
                    if best.is_none_or(|(r, _)| rank < r) {
                        best = Some((rank, merged));
                    }
                }
            }
            let Some((rank, merged)) = best else { break };
            let (a, b, _) = self.merges[rank as usize];
            let mut out = Vec::with_capacity(syms.len());
            let mut j = 0;
            while j < syms.len() {
                if j + 1 < syms.len() && syms[j] == a && syms[j + 1] == b {
                    out.push(merged);
                    j += 2;
                } else {
                    out.push(syms[j]);
                    j += 1;
                }
            }
            syms = out;
        }
        syms
    }

    /// A token's spelling in GPT-2's alphabet (as in `vocab.json`).
    fn spell(table: &[char; 256], bytes: &[u8]) -> String {
        bytes.iter().map(|&b| table[b as usize]).collect()
    }
}

impl Tokenizer for Bpe {
    fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for piece in pretokenize(text) {
            if let Some(ids) = cache.get(piece) {
                out.extend_from_slice(ids);
                continue;
            }
            let ids = self.encode_piece(piece.as_bytes());
            out.extend_from_slice(&ids);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(piece.to_owned(), ids);
        }
        out
    }

    fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.tokens.get(id as usize) {
                Some(Some(t)) => bytes.extend_from_slice(t),
                _ => bytes.extend_from_slice(REPLACEMENT),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    fn kind(&self) -> &'static str {
        "bpe"
    }

    /// `vocab.json` (sorted by id) and `merges.txt` in Hugging Face's
    /// GPT-2 format, plus `tokenizer_kind.json`.
    fn files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let table = byte_to_unicode();
        let mut vocab = String::from("{");
        let mut first = true;
        for (id, t) in self.tokens.iter().enumerate() {
            let Some(t) = t else { continue };
            if !first {
                vocab.push(',');
            }
            first = false;
            let key = serde_json::to_string(&Self::spell(&table, t))?;
            vocab.push_str(&format!("\n  {key}: {id}"));
        }
        vocab.push_str("\n}\n");

        let mut merges = String::from("#version: 0.2\n");
        for &(a, b, _) in &self.merges {
            let spelled = |id: u32| {
                Self::spell(
                    &table,
                    self.tokens[id as usize].as_deref().unwrap_or_default(),
                )
            };
            merges.push_str(&spelled(a));
            merges.push(' ');
            merges.push_str(&spelled(b));
            merges.push('\n');
        }
        Ok(vec![
            kind_file(self.kind()),
            ("vocab.json".to_string(), vocab.into_bytes()),
            ("merges.txt".to_string(), merges.into_bytes()),
        ])
    }

    fn to_hugging_face(&self) -> Result<super::hf_tokenizer::HfTokenizer> {
        super::hf_tokenizer::HfTokenizer::from_bpe(self)
    }
}

// ---------------------------------------------------------------------------
// Loading by directory or name

/// Reads a tokenizer written by [`Tokenizer::save`]: `tokenizer_kind.json`
/// (`{"kind":"byte"}`, `{"kind":"bpe"}`, or a Hugging Face flavour:
/// `wordpiece`, `gpt2-bpe`, `clip-bpe`, `hf`) and, for BPE, `vocab.json` and
/// `merges.txt`, for the Hugging Face flavours `tokenizer.json`. A directory
/// without the kind file is read from its `tokenizer.json`, or else as BPE
/// from `vocab.json` and `merges.txt` (as downloaded from Hugging Face).
pub fn load_tokenizer(dir: &Path) -> Result<Box<dyn Tokenizer>> {
    let kind_path = dir.join(KIND_FILE);
    let kind = if kind_path.is_file() {
        let text = fs::read_to_string(&kind_path)
            .with_context(|| format!("cannot read {}", kind_path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            anyhow!(
                "{}: line {}: invalid JSON: {e}",
                kind_path.display(),
                e.line()
            )
        })?;
        v.get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| {
                anyhow!(
                    "{}: expected {{\"kind\": \"byte\"}} or {{\"kind\": \"bpe\"}}",
                    kind_path.display()
                )
            })?
            .to_owned()
    } else if dir.join(HF_JSON).is_file() {
        "hf".to_owned()
    } else if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() {
        "bpe".to_owned()
    } else {
        bail!(
            "{} has no {KIND_FILE} (nor tokenizer.json, nor vocab.json + merges.txt): not a \
             saved tokenizer",
            dir.display()
        );
    };
    if Flavour::from_kind(&kind).is_some() {
        return Ok(Box::new(HfTokenizer::from_file(&dir.join(HF_JSON))?));
    }
    match kind.as_str() {
        "byte" => Ok(Box::new(ByteTokenizer)),
        "bpe" => Ok(Box::new(Bpe::from_files(
            &dir.join("vocab.json"),
            &dir.join("merges.txt"),
        )?)),
        other => bail!(
            "{}: unknown tokenizer kind {other:?} (expected \"byte\", \"bpe\", \"wordpiece\", \
             \"gpt2-bpe\", \"clip-bpe\" or \"hf\")",
            kind_path.display()
        ),
    }
}

/// A tokenizer from a command-line spec: `byte`; `bpe` (trained on
/// `corpus_for_training` up to `vocab` tokens); `gpt2:<dir>` (a directory
/// with Hugging Face `vocab.json` and `merges.txt`, e.g. GPT-2's own);
/// `wordpiece`, `gpt2-bpe`, `clip-bpe` (Hugging Face tokenizers trained on
/// the corpus, `vocab` tokens including the special ones, see
/// [`HfTokenizer::train`]); `hf:<path>` (a `tokenizer.json`, or a directory
/// holding one).
pub fn tokenizer_by_name(
    spec: &str,
    corpus_for_training: Option<&str>,
    vocab: usize,
) -> Result<Box<dyn Tokenizer>> {
    if spec == "byte" {
        return Ok(Box::new(ByteTokenizer));
    }
    if spec == "bpe" {
        let corpus = corpus_for_training.ok_or_else(|| {
            anyhow!("tokenizer \"bpe\" is trained on the corpus, but none was given")
        })?;
        return Ok(Box::new(Bpe::train(corpus, vocab)?));
    }
    if let Some(flavour) = Flavour::from_kind(spec).filter(|f| *f != Flavour::Other) {
        let corpus = corpus_for_training.ok_or_else(|| {
            anyhow!("tokenizer {spec:?} is trained on the corpus, but none was given")
        })?;
        return Ok(Box::new(HfTokenizer::train(flavour, corpus, vocab)?));
    }
    if let Some(path) = spec.strip_prefix("hf:") {
        return Ok(Box::new(HfTokenizer::from_file(Path::new(path))?));
    }
    if let Some(dir) = spec.strip_prefix("gpt2:") {
        let dir = Path::new(dir);
        return Ok(Box::new(Bpe::from_files(
            &dir.join("vocab.json"),
            &dir.join("merges.txt"),
        )?));
    }
    bail!(
        "unknown tokenizer {spec:?}: expected \"byte\", \"bpe\" (trained on the corpus), \
         \"gpt2:<dir>\" (a directory with vocab.json and merges.txt), \"wordpiece\", \
         \"gpt2-bpe\" or \"clip-bpe\" (Hugging Face tokenizers trained on the corpus), or \
         \"hf:<path>\" (a tokenizer.json or a directory holding one)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::Rng;
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-tok-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bpe")
    }

    #[test]
    fn byte_to_unicode_matches_gpt2() {
        let t = byte_to_unicode();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[0], 'Ā');
        assert_eq!(t[b'!' as usize], '!');
        assert_eq!(t[0xAD], 'Ń'); // soft hyphen, the last non-printable < 0xFF
        assert_eq!(t[0xFF], 'ÿ');
        let inv = unicode_to_byte();
        for (b, c) in t.iter().enumerate() {
            assert_eq!(inv[*c as usize], Some(b as u8));
        }
    }

    #[test]
    fn pretokenize_follows_gpt2_pattern() {
        let cases: &[(&str, &[&str])] = &[
            ("Hello world", &["Hello", " world"]),
            ("I'm here's 'll", &["I", "'m", " here", "'s", " '", "ll"]),
            ("DON'T", &["DON", "'", "T"]),
            ("abc123 456", &["abc", "123", " 456"]),
            ("a  b", &["a", " ", " b"]),
            ("a\n\nb", &["a", "\n", "\n", "b"]),
            ("a \n b", &["a", " \n", " b"]),
            ("x   ", &["x", "   "]),
            ("\tx", &["\t", "x"]),
            ("hi!!! ?!", &["hi", "!!!", " ?!"]),
            ("héllo wörld 你好", &["héllo", " wörld", " 你好"]),
            ("Ⅻ1", &["Ⅻ1"]),
            ("😀😀 x", &["😀😀", " x"]),
            ("", &[]),
            ("a\u{a0}b \u{1c}!", &["a", "\u{a0}", "b", " \u{1c}!"]),
        ];
        for (text, want) in cases {
            assert_eq!(pretokenize(text), *want, "pretokenize({text:?})");
        }
    }

    /// Where `char::is_alphabetic` and `\p{L}` disagree (documented on
    /// [`pretokenize`]); Hugging Face's pieces, from its ByteLevel
    /// pre-tokenizer, are in the comments.
    #[test]
    fn known_differences_from_gpt2_regex() {
        assert_eq!(pretokenize("aⒶb"), ["aⒶb"]); // HF: a, Ⓐ, b
        assert_eq!(pretokenize("a\u{345}b"), ["a\u{345}b"]); // HF: a, U+0345, b
                                                             // HF: नमस, ्, त, े (the vowel sign U+0947 is Other_Alphabetic;
                                                             // the virama U+094D is not alphabetic for either).
        assert_eq!(pretokenize("नमस्ते"), ["नमस", "\u{94d}", "ते"]);
    }

    fn random_text(rng: &mut Rng, len: usize) -> String {
        const POOL: &[char] = &[
            'a', 'b', 'Z', ' ', ' ', '\n', '\t', '\r', '\'', 's', 't', 'l', '0', '7', '.', ',',
            '!', '\u{0}', '\u{7}', '\u{7f}', 'é', 'ß', 'Ж', '你', '好', '😀', '🚀', '\u{301}',
            '\u{a0}', '\u{3000}', '\u{200b}', '\u{fffd}', '½', 'Ⅻ', '\u{1c}', '\u{85}', '\u{2028}',
            '\u{180e}', // Other_Alphabetic: letters to us, "other" to the regex.
            'Ⓐ', '\u{947}', '\u{345}',
        ];
        (0..len)
            .map(|_| {
                if rng.below(8) == 0 {
                    // any Unicode scalar value
                    loop {
                        if let Some(c) = char::from_u32(rng.below(0x11_0000) as u32) {
                            break c;
                        }
                    }
                } else {
                    POOL[rng.below(POOL.len() as u64) as usize]
                }
            })
            .collect()
    }

    #[test]
    fn roundtrip_arbitrary_utf8() {
        let (corpus, _) = crate::data::builtin_corpus(20_000);
        let bpe = Bpe::train(&corpus, 300).unwrap();
        let mut rng = Rng::new(7);
        for i in 0..300 {
            let s = random_text(&mut rng, 1 + i % 40);
            let pieces: String = pretokenize(&s).concat();
            assert_eq!(pieces, s);
            for tok in [&ByteTokenizer as &dyn Tokenizer, &bpe] {
                let ids = tok.encode(&s);
                assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
                assert_eq!(tok.decode(&ids), s, "{} roundtrip of {s:?}", tok.kind());
            }
        }
    }

    #[test]
    fn decode_unknown_ids_and_split_chars_give_replacement() {
        assert_eq!(ByteTokenizer.decode(&[104, 105, 300]), "hi\u{FFFD}");
        let bpe = Bpe::train("aaa", 257).unwrap();
        assert_eq!(bpe.decode(&[97, 100_000, 98]), "a\u{FFFD}b");
        // The first byte of 'é' alone is invalid UTF-8.
        assert_eq!(ByteTokenizer.decode(&[0xC3, 104]), "\u{FFFD}h");
    }

    #[test]
    fn train_small_known_merges() {
        // One pre-token "aaabdaaabac": (a,a) ×4 first; then (a,b) and (Z,a)
        // tie at 2 and the smaller pair (97, 98) wins.
        let bpe = Bpe::train("aaabdaaabac", 258).unwrap();
        assert_eq!(bpe.vocab_size(), 258);
        assert_eq!(bpe.merges, vec![(97, 97, 256), (97, 98, 257)]);
        assert_eq!(
            bpe.encode("aaabdaaabac"),
            vec![256, 257, 100, 256, 257, 97, 99]
        );
        // Training stops when no pair is left.
        let tiny = Bpe::train("ab", 1000).unwrap();
        assert_eq!(tiny.vocab_size(), 257);
        assert!(Bpe::train("x", 255)
            .unwrap_err()
            .to_string()
            .contains("below 256"));
    }

    #[test]
    fn train_is_deterministic_and_compresses() {
        let (corpus, _) = crate::data::builtin_corpus(50_000);
        let a = Bpe::train(&corpus, 400).unwrap();
        let b = Bpe::train(&corpus, 400).unwrap();
        assert_eq!(a.merges, b.merges);
        assert_eq!(a.vocab_size(), 400);
        let ids = a.encode(&corpus);
        assert_eq!(ids, b.encode(&corpus));
        assert!(
            ids.len() * 3 < corpus.len(),
            "{} tokens for {} bytes",
            ids.len(),
            corpus.len()
        );
        assert_eq!(a.decode(&ids), corpus);
    }

    #[test]
    fn save_and_load_roundtrip() {
        let dir = temp_dir("save");
        let (corpus, _) = crate::data::builtin_corpus(20_000);
        let bpe = Bpe::train(&corpus, 320).unwrap();
        bpe.save(&dir.join("bpe")).unwrap();
        let loaded = load_tokenizer(&dir.join("bpe")).unwrap();
        assert_eq!(loaded.kind(), "bpe");
        assert_eq!(loaded.vocab_size(), 320);
        let text = "kiln's 42 tokens,\n  héllo 😀";
        assert_eq!(loaded.encode(&corpus[..2000]), bpe.encode(&corpus[..2000]));
        assert_eq!(loaded.encode(text), bpe.encode(text));
        let merges = fs::read_to_string(dir.join("bpe/merges.txt")).unwrap();
        assert!(merges.starts_with("#version: 0.2\n"));

        ByteTokenizer.save(&dir.join("byte")).unwrap();
        let loaded = load_tokenizer(&dir.join("byte")).unwrap();
        assert_eq!(loaded.kind(), "byte");
        assert_eq!(loaded.encode("hi"), vec![104, 105]);

        let spec = format!("gpt2:{}", dir.join("bpe").display());
        let by_name = tokenizer_by_name(&spec, None, 0).unwrap();
        assert_eq!(by_name.encode(text), bpe.encode(text));
        assert_eq!(
            tokenizer_by_name("byte", None, 0).unwrap().vocab_size(),
            256
        );
        assert_eq!(
            tokenizer_by_name("bpe", Some(&corpus), 300)
                .unwrap()
                .vocab_size(),
            300
        );
        let e = tokenizer_by_name("bpe", None, 300)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("none was given"), "{e}");
        let e = tokenizer_by_name("sentencepiece", None, 300)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("unknown tokenizer") && e.contains("gpt2:<dir>"),
            "{e}"
        );
        let e = load_tokenizer(&dir.join("nothing"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a saved tokenizer"), "{e}");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn malformed_files_name_file_and_line() {
        let dir = temp_dir("bad");
        let bpe = Bpe::train("ab ab ab", 258).unwrap();
        bpe.save(&dir).unwrap();
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        let err = |v: &Path, m: &Path| format!("{:#}", Bpe::from_files(v, m).unwrap_err());

        let bad = dir.join("bad_merges.txt");
        fs::write(&bad, "#version: 0.2\na b\nab\n").unwrap();
        let e = err(&vocab, &bad);
        assert!(
            e.contains("bad_merges.txt: line 3") && e.contains("two tokens"),
            "{e}"
        );
        fs::write(&bad, "#version: 0.2\na q\n").unwrap();
        let e = err(&vocab, &bad);
        // "q" exists (a byte) but "aq" is no token.
        assert!(
            e.contains("bad_merges.txt: line 2") && e.contains("\"aq\""),
            "{e}"
        );

        let badv = dir.join("bad_vocab.json");
        fs::write(&badv, "{\n  \"a\": 1,\n  \"b\" 2\n}").unwrap();
        let e = err(&badv, &merges);
        assert!(e.contains("bad_vocab.json: line 3"), "{e}");
        let text = fs::read_to_string(&vocab).unwrap();
        fs::write(&badv, text.replace("\"a\": 97", "\"a\": -1")).unwrap();
        let e = err(&badv, &merges);
        assert!(
            e.contains("bad_vocab.json: line ") && e.contains("\"a\""),
            "{e}"
        );
        fs::write(&badv, text.replace("\"a\": 97", "\"a\": 98")).unwrap();
        let e = err(&badv, &merges);
        assert!(e.contains("id 98 is also used"), "{e}");
        fs::write(&badv, text.replace("\"Ġ\": 32,", "")).unwrap();
        let e = err(&badv, &merges);
        assert!(
            e.contains("bad_vocab.json") && e.contains("byte 0x20"),
            "{e}"
        );
        let e = err(&dir.join("missing.json"), &merges);
        assert!(e.contains("missing.json"), "{e}");
        fs::remove_dir_all(&dir).ok();
    }

    /// Text for the Hugging Face fixture: only our generated corpus plus
    /// generated variations (capitals, numbers, contractions, spacing).
    fn fixture_training_text() -> String {
        let (corpus, _) = crate::data::builtin_corpus(60_000);
        let mut rng = Rng::new(2024);
        let mut extra = String::new();
        let words: Vec<&str> = corpus.split_whitespace().take(3000).collect();
        for chunk in words.chunks(6) {
            for (i, w) in chunk.iter().enumerate() {
                match rng.below(9) {
                    0 => extra.push_str(&format!(" {}", rng.below(100_000))),
                    1 => extra.push_str(&format!(" {w}'s")),
                    2 => extra.push_str(&format!(" {w}n't")),
                    3 => extra.push_str(&format!("  {}", w.to_uppercase())),
                    4 if i > 0 => extra.push_str(&format!(" ({w})")),
                    _ => {
                        let mut c = w.chars();
                        let cap: String = c
                            .next()
                            .map(|f| f.to_uppercase().chain(c).collect())
                            .unwrap_or_default();
                        extra.push_str(&format!(" {cap}"));
                    }
                }
            }
            extra.push_str(if rng.below(3) == 0 { ".\n\n" } else { ".\n" });
        }
        corpus + "\n" + &extra
    }

    /// Regenerates tests/fixtures/bpe/{vocab.json, merges.txt} (run by
    /// scripts/make_bpe_fixture.py, which then adds Hugging Face's ids).
    /// With KILN_BPE_FUZZ_OUT set, also writes random strings and our ids
    /// there for the script's wider comparison.
    #[test]
    #[ignore]
    fn write_bpe_fixture() {
        let out = std::env::var("KILN_BPE_FIXTURE_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|_| fixture_dir());
        let bpe = Bpe::train(&fixture_training_text(), 512).unwrap();
        bpe.save(&out).unwrap();
        if let Ok(fuzz) = std::env::var("KILN_BPE_FUZZ_OUT") {
            let mut rng = Rng::new(99);
            let (corpus, _) = crate::data::builtin_corpus(30_000);
            let mut cases = Vec::new();
            for i in 0..3000 {
                let s = if i % 3 == 0 {
                    let start = rng.below(29_000) as usize;
                    corpus[start..start + 1 + i % 200].to_string()
                } else {
                    random_text(&mut rng, 1 + i % 60)
                };
                let ids = bpe.encode(&s);
                cases.push(serde_json::json!({ "text": s, "ids": ids }));
            }
            fs::write(fuzz, serde_json::to_string(&cases).unwrap()).unwrap();
        }
        if let Ok(path) = std::env::var("KILN_BPE_TEXT_OUT") {
            fs::write(path, fixture_training_text()).unwrap();
        }
    }

    #[test]
    fn matches_hugging_face_on_fixture() {
        let dir = fixture_dir();
        let bpe = Bpe::from_files(&dir.join("vocab.json"), &dir.join("merges.txt")).unwrap();
        // The committed files are what our trainer writes today.
        let retrained = Bpe::train(&fixture_training_text(), 512).unwrap();
        assert_eq!(
            bpe.merges, retrained.merges,
            "fixture is stale: rerun scripts/make_bpe_fixture.py"
        );
        let expected: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
        let cases = expected["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                bpe.encode(text),
                want,
                "encoding of {text:?} differs from Hugging Face"
            );
            assert_eq!(bpe.decode(&want), text);
        }
    }

    #[test]
    fn moby_dick_roundtrip() {
        let Some(path) = crate::data::shared_text("moby.txt") else {
            println!("skipped: ../shared/data/text/moby.txt not found");
            return;
        };
        let text = crate::data::load_text(&path).unwrap();
        let ids = ByteTokenizer.encode(&text);
        assert_eq!(ids.len(), text.len());
        assert_eq!(ByteTokenizer.decode(&ids), text);
        let sample = &text[..text.len().min(300_000)];
        let bpe = Bpe::train(sample, 1024).unwrap();
        let ids = bpe.encode(&text);
        assert_eq!(bpe.decode(&ids), text);
        let bytes_per_token = text.len() as f64 / ids.len() as f64;
        println!(
            "moby: {} bytes, {} BPE-1024 tokens ({bytes_per_token:.2} bytes/token)",
            text.len(),
            ids.len()
        );
        assert!(bytes_per_token > 2.5, "{bytes_per_token}");
    }
}
