//! Files a training run reads and writes: checkpoints (safetensors),
//! crash-safe file replacement, and the metrics log.

pub mod atomic;
pub mod checkpoint;
pub mod ckpt_store;
pub mod crash;
pub mod metrics;

pub use atomic::{write_atomic, write_json_atomic};
pub use checkpoint::{
    load_safetensors, save_safetensors, tensors_by_name, NamedTensor, TensorData,
};
pub use metrics::{read_metrics, MetricsLog};
