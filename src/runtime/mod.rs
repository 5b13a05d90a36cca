//! Device and runtime: adapter choice, tensors, the buffer pool, the pipeline
//! cache and asynchronous readback. Everything above (kernels, graph, models)
//! talks to wgpu only through this module.

pub mod context;
pub mod devices;
pub mod pipeline;
pub mod pool;
pub mod readback;
pub mod tensor;

pub use context::{Gpu, GpuOptions, LimitsPolicy};
pub use pipeline::{grid_1d, Arg, ArgKind, Dispatch, Kernel};
pub use pool::PoolStats;
pub use tensor::{numel, DType, Tensor};
