//! The data layer: text sources, tokenizers, named batches and the data
//! sources that produce them for each objective. Pure CPU code, no GPU.
//!
//! - [`corpus`]: a built-in synthetic corpus (a Markov chain over generated
//!   words) whose entropy rate — the best loss any model can reach — is known
//!   exactly, and [`corpus::load_text`] for files and directories.
//! - [`tokenizer`]: the [`tokenizer::Tokenizer`] trait, a byte tokenizer and
//!   a byte-level BPE that reads, trains and writes Hugging Face GPT-2 files.
//! - [`loader`]: train/validation split and deterministic, resumable batches.

pub mod batch;
pub mod corpus;
pub mod loader;
pub mod source;
pub mod tokenizer;

pub use batch::{Batch, InputSpec};
pub use corpus::{builtin_corpus, load_text, MarkovSource};
pub use loader::TokenDataset;
pub use source::{CausalLm, DataSource};
pub use tokenizer::{load_tokenizer, tokenizer_by_name, Bpe, ByteTokenizer, Tokenizer};

/// Where the shared (not committed) test texts live, if present: the brief
/// puts them at `../shared/data` relative to the crate root; a git worktree
/// one level deeper (`wt/<name>`) finds them at `../../shared/data`.
#[cfg(test)]
pub(crate) fn shared_text(name: &str) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    ["../shared/data/text", "../../shared/data/text"]
        .iter()
        .map(|d| root.join(d).join(name))
        .find(|p| p.is_file())
}
