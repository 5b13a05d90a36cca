//! Text sources: a built-in synthetic corpus with a known entropy rate, and
//! plain-text files.
//!
//! # The built-in corpus and its loss floor
//!
//! [`MarkovSource`] is a first-order Markov chain over a fixed list of
//! "words": generated pronounceable letter words, each followed by a space
//! (`"tavo "`), and punctuation words (`", "`, `". "`, `"; "`, `"! "`,
//! `"? "`, and `".\n"` — a full stop that ends a line). The text is the
//! concatenation of the words' strings.
//!
//! **Derivation of the floor.** Let `P` be the transition matrix and `π` its
//! stationary distribution (`π = πP`, found by power iteration; the chain is
//! irreducible and aperiodic by construction, see [`MarkovSource::new`], so
//! `π` is unique and the iteration converges). The entropy rate of the word
//! process is
//!
//! ```text
//! H_w = − Σ_i π_i Σ_j P_ij ln P_ij        (nats per word).
//! ```
//!
//! Every word string ends with exactly one separator (space or newline) and
//! contains none inside, so the map from word sequences to text is a
//! bijection (a prefix-free code): the text's bytes and the word sequence
//! carry the same information, and `−ln P(text) = −ln P(words)`. By the
//! ergodic theorem the number of bytes per word tends to
//! `L = Σ_i π_i len(w_i)`, and by Shannon–McMillan–Breiman
//! `−ln P(words)/#words → H_w`, so the entropy rate of the byte stream is
//!
//! ```text
//! H_b = H_w / L                            (nats per byte),
//! ```
//!
//! the lowest mean per-byte cross-entropy any model can reach on long text
//! (and, for a tokenizer, `H_b × bytes/token` per token). A model with a
//! finite context reaches it only after seeing the previous word: the first
//! few bytes of each training window are less predictable, so the mean loss
//! over a window of `T` bytes sits slightly above `H_b` (by roughly
//! `(H(W) − H_w)/T`, `H(W)` the marginal word entropy). The unit test
//! `empirical_nll_matches_entropy_rate` checks the formula on generated text.
//!
//! With the fixed seeds of [`builtin_corpus`] (86 words, 8–17 successors
//! each) `H_w` ≈ 2.217 nats/word, `L` ≈ 5.717 bytes/word and the floor is
//! `H_b` ≈ 0.388 nats/byte (printed by the test `builtin_floor_is_in_a_useful_range`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::Rng;

/// Number of generated letter words.
const LETTER_WORDS: usize = 80;
/// Punctuation words (each with its separator).
const PUNCTUATION: [&str; 6] = [", ", ". ", "; ", "! ", "? ", ".\n"];
/// Successors per word: between these (inclusive), before forced links.
const MIN_SUCC: u64 = 8;
const MAX_SUCC: u64 = 15;

/// A first-order Markov chain over words, with exactly computable entropy
/// rate (see the module documentation).
#[derive(Clone, Debug)]
pub struct MarkovSource {
    /// Word strings, each ending with its separator (`' '` or `'\n'`).
    words: Vec<String>,
    /// Sparse transition rows: (next word, probability), probabilities > 0
    /// summing to 1.
    next: Vec<Vec<(usize, f64)>>,
    stationary: Vec<f64>,
    rate_word: f64,
    mean_len: f64,
}

fn make_word(rng: &mut Rng) -> String {
    const ONSETS: &[&str] = &[
        "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "sh", "th", "br",
        "kr", "st",
    ];
    const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ou"];
    const CODAS: &[&str] = &["n", "r", "s", "l", "k"];
    let pick = |rng: &mut Rng, xs: &[&'static str]| xs[rng.below(xs.len() as u64) as usize];
    let syllables = match rng.below(10) {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    };
    let mut w = String::new();
    for _ in 0..syllables {
        w.push_str(pick(rng, ONSETS));
        w.push_str(pick(rng, VOWELS));
        if rng.below(4) == 0 {
            w.push_str(pick(rng, CODAS));
        }
    }
    w
}

impl MarkovSource {
    /// A chain drawn from `seed`: 80 distinct generated letter words and 6
    /// punctuation words. Each letter word `i` has 8–15 random successors
    /// (letter or punctuation words) and always letter words `i+1` and
    /// `i+2` (mod 80); each punctuation word has 8–15 letter-word
    /// successors and is a successor of at least one letter word. Transition
    /// probabilities are Dirichlet(1) draws (normalised exponentials).
    ///
    /// Irreducible: the links `i → i+1` form a cycle through all letter
    /// words, and every punctuation word is entered from and leaves to a
    /// letter word. Aperiodic: that cycle has length 80 and, with one
    /// `i → i+2` link, there is a cycle of length 79; gcd(80, 79) = 1.
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut words: Vec<String> = Vec::new();
        while words.len() < LETTER_WORDS {
            let w = make_word(&mut rng) + " ";
            if !words.contains(&w) {
                words.push(w);
            }
        }
        words.extend(PUNCTUATION.iter().map(|p| p.to_string()));
        let n = words.len();
        let m = LETTER_WORDS;

        let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
        let add = |succ: &mut Vec<usize>, j: usize| {
            if !succ.contains(&j) {
                succ.push(j);
            }
        };
        for (i, s) in succ.iter_mut().enumerate() {
            let k = MIN_SUCC + rng.below(MAX_SUCC - MIN_SUCC + 1);
            if i < m {
                add(s, (i + 1) % m);
                add(s, (i + 2) % m);
                while (s.len() as u64) < k + 2 {
                    // Punctuation one time in five, like real text.
                    let j = if rng.below(5) == 0 {
                        m + rng.below(PUNCTUATION.len() as u64) as usize
                    } else {
                        rng.below(m as u64) as usize
                    };
                    add(s, j);
                }
            } else {
                while (s.len() as u64) < k {
                    add(s, rng.below(m as u64) as usize);
                }
            }
        }
        for p in 0..PUNCTUATION.len() {
            let i = (p * 13 + 5) % m;
            add(&mut succ[i], m + p);
        }
        let next: Vec<Vec<(usize, f64)>> = succ
            .into_iter()
            .map(|mut s| {
                s.sort_unstable();
                let w: Vec<f64> = s.iter().map(|_| -(1.0 - rng.uniform()).ln()).collect();
                let total: f64 = w.iter().sum();
                s.into_iter().zip(w).map(|(j, x)| (j, x / total)).collect()
            })
            .collect();

        let stationary = stationary_distribution(&next);
        let rate_word = stationary
            .iter()
            .zip(&next)
            .map(|(pi, row)| pi * row.iter().map(|&(_, p)| -p * p.ln()).sum::<f64>())
            .sum();
        let mean_len = stationary
            .iter()
            .zip(&words)
            .map(|(pi, w)| pi * w.len() as f64)
            .sum();
        Self {
            words,
            next,
            stationary,
            rate_word,
            mean_len,
        }
    }

    /// `n_bytes` bytes of text (ASCII): a chain run from `seed`, started in
    /// the stationary distribution, cut at `n_bytes` (the last word may be
    /// cut short).
    pub fn generate(&self, n_bytes: usize, seed: u64) -> String {
        let mut rng = Rng::new(seed);
        let mut text = String::with_capacity(n_bytes + 16);
        let mut w = sample(&mut rng, self.stationary.iter().copied().enumerate());
        while text.len() < n_bytes {
            text.push_str(&self.words[w]);
            w = sample(&mut rng, self.next[w].iter().copied());
        }
        text.truncate(n_bytes);
        text
    }

    /// `H_b = H_w / L`: the entropy rate of the text in nats per byte.
    pub fn entropy_rate_nats_per_byte(&self) -> f64 {
        self.rate_word / self.mean_len
    }

    /// `H_w`: the entropy rate of the word process in nats per word.
    pub fn entropy_rate_nats_per_word(&self) -> f64 {
        self.rate_word
    }

    /// `L`: the mean number of bytes per word (separator included).
    pub fn mean_bytes_per_word(&self) -> f64 {
        self.mean_len
    }

    /// The word strings (each with its trailing separator).
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Splits text back into word indices (the code is prefix-free, so this
    /// is unique). A trailing incomplete word is ignored; returns `None` if
    /// a complete piece is not a word of this chain.
    pub fn parse(&self, text: &str) -> Option<Vec<usize>> {
        let index: HashMap<&str, usize> = self
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.as_str(), i))
            .collect();
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(end) = rest.find([' ', '\n']) {
            out.push(*index.get(&rest[..=end])?);
            rest = &rest[end + 1..];
        }
        Some(out)
    }

    /// `−ln P(words)` under the chain, the first word drawn from `π`.
    /// Infinite if a transition is impossible.
    pub fn neg_log_likelihood(&self, words: &[usize]) -> f64 {
        let Some(&first) = words.first() else {
            return 0.0;
        };
        let mut nll = -self.stationary[first].ln();
        for w in words.windows(2) {
            let p = self.next[w[0]]
                .iter()
                .find(|&&(j, _)| j == w[1])
                .map_or(0.0, |&(_, p)| p);
            nll -= p.ln();
        }
        nll
    }
}

/// Index drawn from (index, probability) pairs summing to 1.
fn sample(rng: &mut Rng, probs: impl Iterator<Item = (usize, f64)>) -> usize {
    let u = rng.uniform();
    let mut acc = 0.0;
    let mut last = 0;
    for (j, p) in probs {
        acc += p;
        last = j;
        if u < acc {
            return j;
        }
    }
    last // rounding: u ≥ Σp ≈ 1
}

/// `π = πP` by power iteration from the uniform distribution.
fn stationary_distribution(next: &[Vec<(usize, f64)>]) -> Vec<f64> {
    let n = next.len();
    let mut pi = vec![1.0 / n as f64; n];
    for _ in 0..1_000_000 {
        let mut new = vec![0.0; n];
        for (i, row) in next.iter().enumerate() {
            for &(j, p) in row {
                new[j] += pi[i] * p;
            }
        }
        let total: f64 = new.iter().sum();
        new.iter_mut().for_each(|x| *x /= total);
        let diff: f64 = new.iter().zip(&pi).map(|(a, b)| (a - b).abs()).sum();
        pi = new;
        if diff < 1e-15 {
            break;
        }
    }
    pi
}

/// Seeds of the built-in corpus: the chain, and the sampled text.
const BUILTIN_CHAIN_SEED: u64 = 0x4B49_4C4E; // "KILN"
const BUILTIN_TEXT_SEED: u64 = 1;

/// The built-in corpus: `n_bytes` of text from the fixed Markov chain, and
/// its loss floor in nats per byte (see the module documentation).
pub fn builtin_corpus(n_bytes: usize) -> (String, f64) {
    let src = MarkovSource::new(BUILTIN_CHAIN_SEED);
    (
        src.generate(n_bytes, BUILTIN_TEXT_SEED),
        src.entropy_rate_nats_per_byte(),
    )
}

/// Reads training text from a file, or from a directory: all `*.txt` files
/// under it (recursively, sorted by path; symlinked directories are not
/// followed), joined with `"\n"`. Invalid UTF-8 is replaced by U+FFFD with
/// a warning on stderr; empty files in a directory are skipped with a
/// warning. Errors: a missing path, an empty file, a directory without
/// non-empty `*.txt` files.
pub fn load_text(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).with_context(|| {
        format!(
            "text path {} does not exist or cannot be read",
            path.display()
        )
    })?;
    if !meta.is_dir() {
        let text = read_text_file(path)?;
        if text.is_empty() {
            bail!("text file {} is empty", path.display());
        }
        return Ok(text);
    }
    let mut files = Vec::new();
    collect_txt(path, &mut files)?;
    files.sort();
    if files.is_empty() {
        bail!(
            "directory {} contains no *.txt files (searched recursively)",
            path.display()
        );
    }
    let mut parts = Vec::with_capacity(files.len());
    for f in &files {
        let text = read_text_file(f)?;
        if text.is_empty() {
            eprintln!("warning: skipping empty file {}", f.display());
        } else {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        bail!(
            "all {} *.txt files under {} are empty",
            files.len(),
            path.display()
        );
    }
    Ok(parts.join("\n"))
}

fn read_text_file(path: &Path) -> Result<String> {
    let bytes =
        fs::read(path).with_context(|| format!("cannot read text file {}", path.display()))?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            eprintln!(
                "warning: {} is not valid UTF-8 (first bad byte at offset {at}); invalid \
                 sequences were replaced with U+FFFD",
                path.display()
            );
            Ok(String::from_utf8_lossy(e.as_bytes()).into_owned())
        }
    }
}

fn collect_txt(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        fs::read_dir(dir).with_context(|| format!("cannot list directory {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list directory {}", dir.display()))?;
        let path = entry.path();
        let ft = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if ft.is_dir() {
            collect_txt(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("txt"))
            && path.is_file()
        {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Period of an irreducible chain: gcd over edges u→v of
    /// level(u) + 1 − level(v), levels from a BFS.
    fn period_and_reach(next: &[Vec<(usize, f64)>]) -> (u64, usize) {
        let n = next.len();
        let mut level = vec![usize::MAX; n];
        level[0] = 0;
        let mut queue = std::collections::VecDeque::from([0]);
        while let Some(u) = queue.pop_front() {
            for &(v, _) in &next[u] {
                if level[v] == usize::MAX {
                    level[v] = level[u] + 1;
                    queue.push_back(v);
                }
            }
        }
        fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 {
                a
            } else {
                gcd(b, a % b)
            }
        }
        let mut g = 0;
        for (u, row) in next.iter().enumerate() {
            for &(v, _) in row {
                g = gcd(g, (level[u] as i64 + 1 - level[v] as i64).unsigned_abs());
            }
        }
        (g, level.iter().filter(|&&l| l != usize::MAX).count())
    }

    #[test]
    fn chain_is_irreducible_aperiodic_and_well_formed() {
        for seed in [BUILTIN_CHAIN_SEED, 1, 2, 3] {
            let src = MarkovSource::new(seed);
            let n = src.words.len();
            assert_eq!(n, LETTER_WORDS + PUNCTUATION.len());
            // Reachable from word 0 in the chain and in its reverse.
            let (period, reach) = period_and_reach(&src.next);
            assert_eq!(reach, n, "seed {seed}: not all words reachable");
            assert_eq!(period, 1, "seed {seed}: periodic");
            let mut rev = vec![Vec::new(); n];
            for (u, row) in src.next.iter().enumerate() {
                for &(v, p) in row {
                    rev[v].push((u, p));
                }
            }
            assert_eq!(period_and_reach(&rev).1, n, "seed {seed}: not irreducible");
            for row in &src.next {
                let s: f64 = row.iter().map(|&(_, p)| p).sum();
                assert!((s - 1.0).abs() < 1e-12 && row.iter().all(|&(_, p)| p > 0.0));
            }
            // π is stationary.
            let mut pi_p = vec![0.0; n];
            for (i, row) in src.next.iter().enumerate() {
                for &(j, p) in row {
                    pi_p[j] += src.stationary[i] * p;
                }
            }
            let resid: f64 = pi_p
                .iter()
                .zip(&src.stationary)
                .map(|(a, b)| (a - b).abs())
                .sum();
            assert!(resid < 1e-12, "residual {resid}");
            // Separators only at the end of each word: a prefix-free code.
            for w in &src.words {
                let body = &w[..w.len() - 1];
                assert!(
                    w.ends_with([' ', '\n']) && !body.contains([' ', '\n']) && !body.is_empty()
                );
            }
        }
    }

    #[test]
    fn builtin_floor_is_in_a_useful_range() {
        let src = MarkovSource::new(BUILTIN_CHAIN_SEED);
        let hb = src.entropy_rate_nats_per_byte();
        println!(
            "builtin chain: H_w = {:.4} nats/word, L = {:.4} bytes/word, H_b = {hb:.4} nats/byte",
            src.entropy_rate_nats_per_word(),
            src.mean_bytes_per_word()
        );
        assert!((0.3..0.8).contains(&hb), "{hb}");
        let (text, floor) = builtin_corpus(1000);
        assert_eq!(text.len(), 1000);
        assert_eq!(floor, hb);
        assert_eq!(builtin_corpus(1000).0, text, "deterministic");
        assert!(text.is_ascii() && text.contains(". ") && text.contains('\n'));
    }

    #[test]
    fn empirical_nll_matches_entropy_rate() {
        for (chain_seed, text_seed) in [(BUILTIN_CHAIN_SEED, 11), (5, 12)] {
            let src = MarkovSource::new(chain_seed);
            let text = src.generate(1 << 20, text_seed);
            let words = src.parse(&text).expect("generated text parses");
            let bytes: usize = words.iter().map(|&w| src.words[w].len()).sum();
            assert!(text.len() - bytes < 32, "only the cut last word is dropped");
            let empirical = src.neg_log_likelihood(&words) / bytes as f64;
            let exact = src.entropy_rate_nats_per_byte();
            let rel = (empirical - exact).abs() / exact;
            println!("chain {chain_seed}: empirical {empirical:.5} vs exact {exact:.5} nats/byte ({:.3}%)", rel * 100.0);
            assert!(rel < 0.01, "empirical {empirical} vs exact {exact}");
        }
    }

    #[test]
    fn load_text_files_and_directories() {
        let dir = std::env::temp_dir().join(format!("kiln-text-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("b/c")).unwrap();
        fs::write(dir.join("b/c/z.txt"), "third").unwrap();
        fs::write(dir.join("a.txt"), "first").unwrap();
        fs::write(dir.join("b/a.TXT"), b"sec\xFFond").unwrap();
        fs::write(dir.join("b/empty.txt"), "").unwrap();
        fs::write(dir.join("b/skip.md"), "not text").unwrap();
        assert_eq!(load_text(&dir).unwrap(), "first\nsec\u{FFFD}ond\nthird");
        assert_eq!(load_text(&dir.join("a.txt")).unwrap(), "first");

        let e = load_text(&dir.join("nope.txt")).unwrap_err().to_string();
        assert!(
            e.contains("nope.txt") && e.contains("does not exist"),
            "{e}"
        );
        let e = load_text(&dir.join("b/empty.txt")).unwrap_err().to_string();
        assert!(e.contains("empty.txt") && e.contains("is empty"), "{e}");
        fs::create_dir_all(dir.join("d")).unwrap();
        fs::write(dir.join("d/x.md"), "x").unwrap();
        let e = load_text(&dir.join("d")).unwrap_err().to_string();
        assert!(e.contains("no *.txt files"), "{e}");
        fs::write(dir.join("d/y.txt"), "").unwrap();
        let e = load_text(&dir.join("d")).unwrap_err().to_string();
        assert!(e.contains("are empty"), "{e}");
        fs::remove_dir_all(&dir).ok();
    }
}
