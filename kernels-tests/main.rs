//! Kernel library tests: every kernel, forward and backward, against the CPU
//! reference in `kiln::reference` (f64 accumulation), on awkward shapes, plus
//! determinism (same inputs, same bits) and shader validation with naga.
//!
//! All cases share one device, opened with WebGPU's default limits so that a
//! kernel needing more than a browser grants fails here first.

mod common;

mod accuracy;
mod activation;
mod adamw;
mod attention;
mod attention_mask;
mod broadcast;
mod crossentropy;
mod dropout;
mod elementwise;
mod embedding;
mod gelu;
mod heads;
mod l2norm;
mod layernorm;
mod layout;
mod losses;
mod matmul;
mod pooling;
mod reduce;
mod runtime;
mod scatter;
mod shaders;
mod softmax;
