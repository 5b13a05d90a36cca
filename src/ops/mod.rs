//! The op set: one file per op, each holding its shape rule (a builder
//! method on [`Graph`](crate::graph::Graph)), its lowering to kernel steps,
//! its gradient rule and its f64 CPU reference. Models are written in these.
//!
//! Adding an op: write `src/ops/<name>.rs` with a builder (`impl Graph { pub
//! fn name(...) }`) and an [`Op`](crate::graph::Op) implementation, a WGSL
//! kernel in `shaders/` with its wrapper in `src/kernels/` if no existing
//! kernel serves, list it below and in the graph-level gradient check
//! (`tests/graph_grad.rs`).

pub mod accuracy;
pub mod activation;
pub mod add;
pub mod attention;
pub mod broadcast_to;
pub mod concat;
pub mod cross_entropy;
pub mod dropout;
pub mod embedding;
pub mod gather_row;
pub mod kl_div;
pub mod l2_normalize;
pub mod layernorm;
pub mod lookup;
pub mod masked_mean;
pub mod matmul;
pub mod mse;
pub mod mul;
pub mod patchify;
pub mod permute;
pub mod reshape;
pub mod segment_sum;
pub mod slice;

pub use activation::Activation;
pub use attention::AttentionShape;
