//! Kiln: a vendor-neutral GPU training engine.
//!
//! Layers, bottom up: [`runtime`] (device, tensors, pipelines) →
//! [`kernels`] (one WGSL family each, with a CPU [`reference`]) → graph and
//! autodiff → models and objectives → training, data, checkpoints → CLI and
//! web front end.

pub mod bench;
pub mod kernels;
pub mod reference;
pub mod runtime;
pub mod shaders;
pub mod util;

pub use runtime::{DType, Gpu, GpuOptions, Tensor};
