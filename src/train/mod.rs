//! Training: the optimizer and schedule, the per-step GPU work, checkpoints,
//! sampling, and the command-line run loop with validation, metrics,
//! progress and a loss curve.

pub mod batch_file;
pub mod checkpoint;
pub mod config;
pub mod grads;
#[cfg(not(target_arch = "wasm32"))]
pub mod interrupt;
pub mod nan_guard;
pub mod optimizer;
pub mod resume;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
#[cfg(not(target_arch = "wasm32"))]
pub mod run_dir;
pub mod sample;
pub mod trainer;
pub mod validate;

pub use config::RunConfig;
pub use optimizer::{AdamW, OptimizerConfig};
pub use trainer::{Batch, PendingStats, StepStats, Trainer};
