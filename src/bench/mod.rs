//! Benchmarks (native only): the kernel sweep and the training-step
//! benchmark behind `kiln bench` and the `cargo bench` targets, timing of
//! recorded dispatches on the GPU, a per-kernel profiler, and a table of
//! vendor peak figures.

pub mod cli;
pub mod kernels;
pub mod peak;
pub mod profile;
pub mod report;
pub mod timing;
pub mod train;
