//! Kiln: a vendor-neutral GPU training engine.
//!
//! Layers, bottom up: [`runtime`] (device, tensors, pipelines) →
//! [`kernels`] (one WGSL family each, with a CPU [`reference`]) → [`graph`]
//! (nodes, autodiff, memory planning, execution) and [`ops`] (the op set,
//! one file each) → [`model`] (models declared once under Hugging Face
//! names) → [`train`] (one trainer for every model, the shared run session,
//! checkpoints), [`data`] (text, tokenizers, batches, data sources) → the
//! `kiln` CLI and the web front end.
// On wasm32 wgpu's handles are neither Send nor Sync and std::fs::File has
// no Drop, so two lints fire there that cannot on native, where the Arcs
// and explicit drops are what they should be.
#![cfg_attr(
    target_arch = "wasm32",
    allow(clippy::arc_with_non_send_sync, clippy::drop_non_drop)
)]

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
pub mod data;
pub mod graph;
pub mod io;
pub mod kernels;
pub mod model;
#[cfg(not(target_arch = "wasm32"))]
pub mod objective;
pub mod ops;
#[cfg(not(target_arch = "wasm32"))]
pub mod plot;
pub mod reference;
pub mod runtime;
pub mod shaders;
pub mod train;
pub mod util;

pub use runtime::{DType, Gpu, GpuOptions, Tensor};
