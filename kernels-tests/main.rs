//! Kernel library tests: every kernel, forward and backward, against the CPU
//! reference in `kiln::reference` (f64 accumulation), on awkward shapes, plus
//! determinism (same inputs, same bits) and shader validation with naga.
//!
//! All cases share one device, opened with WebGPU's default limits so that a
//! kernel needing more than a browser grants fails here first.

mod common;

mod accuracy;
mod adamw;
mod attention;
mod crossentropy;
mod elementwise;
mod embedding;
mod gelu;
mod heads;
mod layernorm;
mod layout;
mod matmul;
mod reduce;
mod runtime;
mod scatter;
mod shaders;
mod softmax;
