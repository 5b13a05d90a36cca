//! LayerNorm over the last dimension (`shaders/layernorm.wgsl`), as
//! `torch.nn.LayerNorm`: biased variance, eps inside the square root.
//!
//! Layouts: `x`, `y`, `dy`, `dx` are `[.., C]` (rows = numel / C, row-major);
//! `gamma`, `beta`, `dgamma`, `dbeta` hold C elements; `mean` and `rstd` hold
//! one value per row (any shape). All f32.

use anyhow::{bail, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_f32, check_numel, check_u32};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

/// Invocations per workgroup.
const WG: u32 = 256;
/// Rows per chunk in the first pass of the dγ/dβ reduction.
const ROWS_PER_CHUNK: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    eps: f32,
    flag: u32,
    chunks: u32,
    rpc: u32,
    _pad: [u32; 2],
}

/// Threads cooperating on one row (see [`super::row_threads`]).
pub(crate) fn threads_per_row(gpu: &Gpu, c: u32) -> u32 {
    super::row_threads(gpu, c, WG)
}

/// (rows, C) of a `[.., C]` tensor, with the 32-bit indexing check.
fn rows_and_c(op: &str, x: &Tensor) -> Result<(u32, u32)> {
    let Some(&c) = x.shape().last() else {
        bail!("{op}: x must have at least one dimension (got a scalar)");
    };
    if c == 0 {
        bail!(
            "{op}: x has shape {:?}; the last dimension (C) must be ≥ 1",
            x.shape()
        );
    }
    check_u32(op, "x element count", x.numel())?;
    Ok(((x.numel() / c) as u32, c as u32))
}

fn check_no_alias(op: &str, outputs: &[(&str, &Tensor)], all: &[(&str, &Tensor)]) -> Result<()> {
    for (on, o) in outputs {
        for (n, t) in all {
            if on != n && o.shares_storage(t) {
                bail!("{op}: output {on} shares its buffer with {n}; use separate tensors");
            }
        }
    }
    Ok(())
}

fn row_kernel(entry: &'static str, tpr: u32) -> Kernel {
    Kernel::new("layernorm", entry)
        .constant("WG", WG)
        .constant("TPR", tpr)
}

fn row_grid(gpu: &Gpu, rows: u32, tpr: u32) -> [u32; 3] {
    let groups = rows.div_ceil(WG / tpr);
    grid_1d(groups, gpu.limits().max_compute_workgroups_per_dimension)
}

/// y = (x − mean)·rstd·γ + β per row of x `[rows, C]`; saves `mean` `[rows]`
/// and `rstd` `[rows]` = 1/sqrt(var + eps) (biased variance) for backward.
///
/// Mean and variance by the corrected two-pass algorithm (re-reads the row),
/// accurate for rows far from zero; one workgroup tree reduction per row.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    y: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    eps: f32,
) -> Result<Dispatch> {
    let op = "layernorm_forward";
    check_f32(op, &[x, gamma, beta, y, mean, rstd])?;
    let (rows, c) = rows_and_c(op, x)?;
    super::check_shape(op, "y", y, x.shape())?;
    check_numel(op, "gamma", gamma, c as usize)?;
    check_numel(op, "beta", beta, c as usize)?;
    check_numel(op, "mean", mean, rows as usize)?;
    check_numel(op, "rstd", rstd, rows as usize)?;
    if !(eps.is_finite() && eps >= 0.0) {
        bail!("{op}: eps must be finite and ≥ 0, got {eps}");
    }
    let all = [
        ("x", x),
        ("gamma", gamma),
        ("beta", beta),
        ("y", y),
        ("mean", mean),
        ("rstd", rstd),
    ];
    check_no_alias(op, &[("y", y), ("mean", mean), ("rstd", rstd)], &all)?;
    let p = Params {
        rows,
        c,
        eps,
        flag: 0,
        chunks: 0,
        rpc: 0,
        _pad: [0; 2],
    };
    let tpr = threads_per_row(gpu, c);
    gpu.dispatch(
        &row_kernel("forward", tpr),
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(x),
            Arg::Read(gamma),
            Arg::Read(beta),
            Arg::ReadWrite(y),
            Arg::ReadWrite(mean),
            Arg::ReadWrite(rstd),
        ],
        row_grid(gpu, rows, tpr),
    )
}

/// Backward of [`layernorm_forward`], three dispatches to run in order:
/// 1. `dx` (overwritten) = rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·γ;
/// 2. per-chunk column sums of dy·x̂ and dy over chunks of 64 rows into a
///    scratch tensor (kept alive by the dispatches);
/// 3. dγ, dβ = the chunk sums added in order — written, or added to the
///    existing values when `accumulate` (gradient accumulation).
///
/// Deterministic: fixed reduction order, no atomics.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    gpu: &Gpu,
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dx: &Tensor,
    dgamma: &Tensor,
    dbeta: &Tensor,
    accumulate: bool,
) -> Result<Vec<Dispatch>> {
    let op = "layernorm_backward";
    check_f32(op, &[dy, x, gamma, mean, rstd, dx, dgamma, dbeta])?;
    let (rows, c) = rows_and_c(op, x)?;
    super::check_shape(op, "dy", dy, x.shape())?;
    super::check_shape(op, "dx", dx, x.shape())?;
    check_numel(op, "gamma", gamma, c as usize)?;
    check_numel(op, "dgamma", dgamma, c as usize)?;
    check_numel(op, "dbeta", dbeta, c as usize)?;
    check_numel(op, "mean", mean, rows as usize)?;
    check_numel(op, "rstd", rstd, rows as usize)?;
    let all = [
        ("dy", dy),
        ("x", x),
        ("gamma", gamma),
        ("mean", mean),
        ("rstd", rstd),
        ("dx", dx),
        ("dgamma", dgamma),
        ("dbeta", dbeta),
    ];
    check_no_alias(
        op,
        &[("dx", dx), ("dgamma", dgamma), ("dbeta", dbeta)],
        &all,
    )?;

    // At least one chunk, so that rows = 0 still writes dγ = dβ = 0.
    let chunks = rows.div_ceil(ROWS_PER_CHUNK).max(1);
    check_u32(op, "dγ/dβ scratch size", 2 * chunks as usize * c as usize)?;
    let partials = gpu.empty(&[2, chunks as usize, c as usize], DType::F32)?;
    let p = Params {
        rows,
        c,
        eps: 0.0,
        flag: accumulate as u32,
        chunks,
        rpc: ROWS_PER_CHUNK,
        _pad: [0; 2],
    };
    let pb = bytemuck::bytes_of(&p);
    let max_dim = gpu.limits().max_compute_workgroups_per_dimension;
    let tpr = threads_per_row(gpu, c);

    let d_dx = gpu.dispatch(
        &row_kernel("backward_dx", tpr),
        &[
            Arg::Uniform(pb),
            Arg::Read(dy),
            Arg::Read(x),
            Arg::Read(gamma),
            Arg::Read(mean),
            Arg::Read(rstd),
            Arg::ReadWrite(dx),
        ],
        row_grid(gpu, rows, tpr),
    )?;
    let col_kernel = |entry| Kernel::new("layernorm", entry).constant("WG", WG);
    let d_partials = gpu
        .dispatch(
            &col_kernel("backward_partials"),
            &[
                Arg::Uniform(pb),
                Arg::Read(dy),
                Arg::Read(x),
                Arg::Read(mean),
                Arg::Read(rstd),
                Arg::ReadWrite(&partials),
            ],
            grid_1d((chunks * c).div_ceil(WG), max_dim),
        )?
        .keep(partials.clone());
    let d_finish = gpu
        .dispatch(
            &col_kernel("backward_finish"),
            &[
                Arg::Uniform(pb),
                Arg::Read(&partials),
                Arg::ReadWrite(dgamma),
                Arg::ReadWrite(dbeta),
            ],
            grid_1d(c.div_ceil(WG), max_dim),
        )?
        .keep(partials);
    Ok(vec![d_dx, d_partials, d_finish])
}
