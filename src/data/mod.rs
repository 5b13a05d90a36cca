//! The data layer: text sources, tokenizers, named batches and the data
//! sources that produce them for each objective. Pure CPU code, no GPU.
//!
//! - [`corpus`]: a built-in synthetic corpus (a Markov chain over generated
//!   words) whose entropy rate — the best loss any model can reach — is known
//!   exactly, and [`corpus::load_text`] for files and directories.
//! - [`tokenizer`]: the [`tokenizer::Tokenizer`] trait, a byte tokenizer and
//!   a byte-level BPE that reads, trains and writes Hugging Face GPT-2 files.
//! - [`hf_tokenizer`]: Hugging Face tokenizers (WordPiece for BERT,
//!   byte-level BPE for GPT-2 and CLIP) as `tokenizer.json`, and training them.
//! - [`loader`]: train/validation split and deterministic, resumable batches.
//! - [`source`]: the [`DataSource`] trait and causal LM (GPT) batches;
//!   [`mlm`]: masked LM (BERT); [`images`]: IDX image sets (Fashion-MNIST),
//!   image classification (ViT) and PNG input; [`captions`]: image–caption
//!   pairs and zero-shot prompts (CLIP). Batches use Hugging Face's forward
//!   argument names and depend only on `(seed, index)`.
//! - [`smiles`]: a SMILES reader (atoms, bonds, ring flags); [`molecules`]:
//!   molecule files with labels, atom/bond feature ids and packed graph
//!   batches (GIN); [`molgraph`]: packed molecule batches for attribute
//!   masking and regression.

pub mod batch;
pub mod captions;
pub mod corpus;
pub mod hf_tokenizer;
pub mod images;
pub mod labelled_text;
pub mod loader;
pub mod mim;
pub mod mlm;
pub mod molecules;
pub mod molgraph;
pub mod smiles;
pub mod source;
pub mod tokenizer;

pub use batch::{Batch, InputSpec};
pub use corpus::{builtin_corpus, load_text, MarkovSource};
pub use hf_tokenizer::{Flavour, HfTokenizer};
pub use loader::TokenDataset;
pub use source::{CausalLm, DataSource};
pub use tokenizer::{load_tokenizer, tokenizer_by_name, Bpe, ByteTokenizer, Tokenizer};

/// Where the shared (not committed) test data live, if present: the brief
/// puts them at `../shared/data` relative to the crate root; a git worktree
/// (`wt/<name>`) finds them two levels further up. `KILN_DATA_DIR`, when
/// set, is tried first.
#[cfg(test)]
pub(crate) fn shared_data(rel: &str) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("KILN_DATA_DIR")
        .map(std::path::PathBuf::from)
        .into_iter()
        .collect();
    dirs.extend(
        [
            "../shared/data",
            "../../shared/data",
            "../../../shared/data",
        ]
        .iter()
        .map(|d| root.join(d)),
    );
    dirs.into_iter().map(|d| d.join(rel)).find(|p| p.exists())
}

/// A shared text file (`text/<name>`), if present.
#[cfg(test)]
pub(crate) fn shared_text(name: &str) -> Option<std::path::PathBuf> {
    shared_data(&format!("text/{name}")).filter(|p| p.is_file())
}
