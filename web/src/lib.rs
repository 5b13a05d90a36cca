//! Kiln in the browser: the same engine and WGSL kernels, compiled to
//! `wasm32-unknown-unknown` and run on the browser's WebGPU, training a GPT
//! live in a web page (`web/www/`).
//!
//! - [`session`]: a platform-neutral training session (presets, data,
//!   trainer, sampling) with no blocking calls; native tests use it to
//!   produce the losses the browser must reproduce.
//! - `bindings` (wasm32 only): the JavaScript class `WebTrainer`.

pub mod session;

#[cfg(target_arch = "wasm32")]
pub mod bindings;

pub use session::{preset, Session, PRESETS};

/// Losses of the first [`PARITY_STEPS`] steps of the `tiny` preset (seed
/// 1337, built-in corpus), as lavapipe computes them natively. The native
/// test `tests/parity.rs` recomputes and asserts them (and that `kiln
/// train` gives the same); the browser test asserts that WebGPU reaches
/// them within [`PARITY_TOLERANCE`].
pub const PARITY_LOSSES: [f32; PARITY_STEPS] = [
    5.5456495, 5.5078387, 5.4162664, 5.2754755, 5.150026, 5.046804, 4.970173, 4.875193,
];

/// Steps in the parity run.
pub const PARITY_STEPS: usize = 8;

/// Largest |browser − native| loss difference allowed at any parity step.
/// Different float details (SwiftShader vs lavapipe: fused multiply-adds,
/// exp/tanh approximations, matmul kernel choice) move losses by ~1e-6 per
/// step; a wrong kernel moves them by far more than 1e-4.
pub const PARITY_TOLERANCE: f32 = 1e-4;
