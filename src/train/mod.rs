//! Training: the optimizer and schedule, the per-step GPU work, checkpoints,
//! sampling, and the command-line run loop with validation, metrics,
//! progress and a loss curve.

pub mod checkpoint;
pub mod config;
pub mod grads;
pub mod nan_guard;
pub mod optimizer;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
pub mod sample;
pub mod trainer;

pub use config::RunConfig;
pub use optimizer::{AdamW, OptimizerConfig};
pub use trainer::{Batch, PendingStats, StepStats, Trainer};
