//! Benchmark support shared by `cargo bench` targets and the `kiln bench`
//! command: timing of recorded dispatches on the GPU.

#[cfg(not(target_arch = "wasm32"))]
pub mod profile;
#[cfg(not(target_arch = "wasm32"))]
pub mod timing;
