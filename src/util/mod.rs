//! Small shared helpers.

#[cfg(not(target_arch = "wasm32"))]
pub mod logger;
pub mod mem;
pub mod rng;

pub use rng::Rng;
