//! Training: the optimizer and schedule, the per-step GPU work for any
//! model, checkpoints, sampling, the platform-neutral run session, and the
//! command-line run loop with validation, metrics, progress and a loss curve.

pub mod batch_file;
pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod grads;
pub mod infer;
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
pub mod session;
pub mod trainer;
pub mod validate;

pub use config::RunConfig;
pub use eval::{EvalStats, Evaluator};
pub use optimizer::{AdamW, OptimizerConfig};
pub use session::Session;
pub use trainer::{PendingStats, StepStats, Trainer, TrainerOptions};
