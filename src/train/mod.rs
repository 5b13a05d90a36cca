//! Training: the optimizer and schedule, the per-step GPU work for any
//! model, checkpoints, sampling, the platform-neutral run session, and the
//! command-line run loop with validation, metrics, progress and a loss curve.

pub mod checkpoint;
pub mod config;
pub mod eval;
pub mod grads;
pub mod optimizer;
#[cfg(not(target_arch = "wasm32"))]
pub mod run;
pub mod sample;
pub mod session;
pub mod trainer;

pub use config::RunConfig;
pub use eval::{EvalStats, Evaluator};
pub use optimizer::{AdamW, OptimizerConfig};
pub use session::Session;
pub use trainer::{PendingStats, StepStats, Trainer, TrainerOptions};
