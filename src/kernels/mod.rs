//! The kernel library: a thin Rust wrapper per WGSL kernel family in
//! `shaders/`. Each wrapper checks shapes and dtypes, then returns a
//! [`Dispatch`](crate::runtime::Dispatch) (or several, for multi-pass
//! kernels) that the caller submits once or records into a step.

pub mod accuracy;
pub mod activation;
pub mod adamw;
pub mod attention;
pub mod broadcast;
pub mod crossentropy;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gelu;
pub mod guard;
pub mod heads;
pub mod kldiv;
pub mod l2norm;
pub mod layernorm;
pub mod layout;
pub mod matmul;
pub mod matmul_tune;
pub mod mse;
pub mod pooling;
pub mod reduce;
pub mod scatter;
pub mod softmax;

use anyhow::{bail, Result};

use crate::runtime::{DType, Tensor};

/// Fails unless every tensor is f32.
pub fn check_f32(op: &str, ts: &[&Tensor]) -> Result<()> {
    check_dtype(op, ts, DType::F32)
}

/// Fails unless every tensor has the same floating-point element type (f32
/// or f16): the element type of a kernel written over `elem`.
pub fn check_float(op: &str, ts: &[&Tensor]) -> Result<DType> {
    let d = ts[0].dtype();
    if d != DType::F32 && d != DType::F16 {
        bail!(
            "{op}: argument 0 is {} {:?}, expected f32 or f16",
            d.name(),
            ts[0].shape()
        );
    }
    check_dtype(op, ts, d)?;
    Ok(d)
}

pub fn check_dtype(op: &str, ts: &[&Tensor], dtype: DType) -> Result<()> {
    for (i, t) in ts.iter().enumerate() {
        if t.dtype() != dtype {
            bail!(
                "{op}: argument {i} is {} {:?}, expected {}",
                t.dtype().name(),
                t.shape(),
                dtype.name()
            );
        }
    }
    Ok(())
}

/// Fails unless every tensor has the shape of the first.
pub fn check_same_shape(op: &str, ts: &[&Tensor]) -> Result<()> {
    let s0 = ts[0].shape();
    for (i, t) in ts.iter().enumerate().skip(1) {
        if t.shape() != s0 {
            bail!(
                "{op}: argument {i} has shape {:?}, expected {:?} like argument 0",
                t.shape(),
                s0
            );
        }
    }
    Ok(())
}

/// Fails unless `t` has exactly `shape`.
pub fn check_shape(op: &str, what: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape() != shape {
        bail!(
            "{op}: {what} has shape {:?}, expected {:?}",
            t.shape(),
            shape
        );
    }
    Ok(())
}

/// Fails unless `t` holds exactly `n` elements (any shape).
pub fn check_numel(op: &str, what: &str, t: &Tensor, n: usize) -> Result<()> {
    if t.numel() != n {
        bail!(
            "{op}: {what} has {} elements (shape {:?}), expected {n}",
            t.numel(),
            t.shape()
        );
    }
    Ok(())
}

/// Fails unless `n` fits in a u32 (kernel indices are 32-bit, as in WGSL).
pub fn check_u32(op: &str, what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| anyhow::anyhow!("{op}: {what} = {n} exceeds 32-bit indexing"))
}

/// Most elements one thread of a row kernel loops over. lavapipe stops an
/// invocation's loops after about 65535 iterations in total, silently
/// (found with one thread per 50257-wide row: the row's second pass stopped
/// at 65535 − 50257 elements), so a thread never gets more than this.
const MAX_ELEMENTS_PER_THREAD: u32 = 16384;

/// Most threads a row kernel (LayerNorm, softmax, cross-entropy) gives a
/// row of `n` elements: the device's [`Gpu::row_threads`](crate::Gpu::row_threads),
/// raised where needed so no thread gets more than [`MAX_ELEMENTS_PER_THREAD`].
pub(crate) fn row_threads_cap(gpu: &crate::Gpu, n: u32) -> u32 {
    gpu.row_threads()
        .max(n.div_ceil(MAX_ELEMENTS_PER_THREAD).next_power_of_two())
}

/// Threads for one row of `n` elements when short rows share a workgroup:
/// a power of two, the next ≥ n, at most [`row_threads_cap`] and `wg`.
pub(crate) fn row_threads(gpu: &crate::Gpu, n: u32, wg: u32) -> u32 {
    n.next_power_of_two().min(row_threads_cap(gpu, n)).min(wg)
}
