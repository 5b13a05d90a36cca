//! Files a training run reads and writes: crash-safe file replacement and
//! the metrics log.

pub mod atomic;
pub mod metrics;

pub use atomic::{write_atomic, write_json_atomic};
pub use metrics::{read_metrics, MetricsLog};
