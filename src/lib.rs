//! Kiln: a vendor-neutral GPU training engine.
//!
//! Layers, bottom up: [`runtime`] (device, tensors, pipelines) →
//! [`kernels`] (one WGSL family each, with a CPU [`reference`]) → [`graph`]
//! (ops, autodiff, memory planning, execution) → [`model`] → [`train`]
//! (optimizer, run loop, checkpoints), [`data`] (text, tokenizers, batches)
//! → the `kiln` CLI and the web front end.

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod data;
pub mod graph;
pub mod io;
pub mod kernels;
pub mod model;
pub mod plot;
pub mod reference;
pub mod runtime;
pub mod shaders;
pub mod train;
pub mod util;

pub use runtime::{DType, Gpu, GpuOptions, Tensor};
