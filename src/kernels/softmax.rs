//! Softmax over the last dimension (`shaders/softmax.wgsl`): forward with an
//! optional scale (attention scores) and causal mask, and backward.
//!
//! Layouts: `x`, `y`, `dy`, `dx` are `[.., n]` f32, rows = numel / n,
//! row-major. With `causal = Some(t)` the rows are grouped as `[.., t, n]`
//! (n == t) and row r is the query at position q = r % t.

use anyhow::{bail, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_f32, check_same_shape, check_u32};
use crate::runtime::{grid_1d, Arg, Dispatch, Gpu, Kernel, Tensor};

/// Invocations per workgroup.
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    scale: f32,
    causal: u32,
    heads: u32,
    _pad: [u32; 3],
}

/// (rows, n) of a `[.., n]` tensor, with the 32-bit indexing check.
fn rows_and_n(op: &str, x: &Tensor) -> Result<(u32, u32)> {
    let Some(&n) = x.shape().last() else {
        bail!("{op}: input must have at least one dimension (got a scalar)");
    };
    if n == 0 {
        bail!(
            "{op}: input has shape {:?}; the last dimension must be ≥ 1",
            x.shape()
        );
    }
    check_u32(op, "element count", x.numel())?;
    Ok(((x.numel() / n) as u32, n as u32))
}

fn launch(gpu: &Gpu, entry: &'static str, p: Params, tensors: Vec<Arg<'_>>) -> Result<Dispatch> {
    // Threads per row (see row_threads): short rows (causal attention over
    // few positions) share a workgroup.
    let tpr = super::row_threads(gpu, p.n, WG);
    let kernel = Kernel::new("softmax", entry)
        .constant("WG", WG)
        .constant("TPR", tpr);
    let mut args = vec![Arg::Uniform(bytemuck::bytes_of(&p))];
    args.extend(tensors);
    let groups = p.rows.div_ceil(WG / tpr);
    gpu.dispatch(
        &kernel,
        &args,
        grid_1d(groups, gpu.limits().max_compute_workgroups_per_dimension),
    )
}

/// y = softmax(x) per row. `causal = Some(t)`: rows grouped as `[.., t, n]`
/// with n == t; in row r (query q = r % t) entries j > q get probability
/// exactly 0. Numerically stable (the row max is subtracted).
pub fn softmax_forward(
    gpu: &Gpu,
    x: &Tensor,
    y: &Tensor,
    causal: Option<usize>,
) -> Result<Dispatch> {
    softmax_forward_scaled(gpu, x, y, 1.0, causal)
}

/// y = softmax(scale·x) per row (attention scores: scale = 1/sqrt(d)), with
/// the optional causal mask of [`softmax_forward`].
pub fn softmax_forward_scaled(
    gpu: &Gpu,
    x: &Tensor,
    y: &Tensor,
    scale: f32,
    causal: Option<usize>,
) -> Result<Dispatch> {
    let op = "softmax_forward";
    check_f32(op, &[x, y])?;
    check_same_shape(op, &[x, y])?;
    let (rows, n) = rows_and_n(op, x)?;
    if !scale.is_finite() {
        bail!("{op}: scale must be finite, got {scale}");
    }
    if y.shares_storage(x) {
        bail!("{op}: y shares its buffer with x; use a separate output tensor");
    }
    let causal = match causal {
        None => 0,
        Some(t) => {
            if t != n as usize {
                bail!(
                    "{op}: causal mask over t = {t} positions needs rows of length t, but x has \
                     shape {:?} (last dimension {n})",
                    x.shape()
                );
            }
            if !(rows as usize).is_multiple_of(t) {
                bail!(
                    "{op}: causal mask over t = {t} positions needs a multiple of t rows, but x \
                     has shape {:?} ({rows} rows)",
                    x.shape()
                );
            }
            n
        }
    };
    let p = Params {
        rows,
        n,
        scale,
        causal,
        heads: 1,
        _pad: [0; 3],
    };
    launch(gpu, "forward", p, vec![Arg::Read(x), Arg::ReadWrite(y)])
}

/// Attention probabilities with a key-padding mask: y = softmax(scale·x)
/// per row of the scores x [B·H, T, T] (`heads` = H), where row r (head
/// r / T, query r % T) sees key j only when `key_mask` [B, T] (i32, nonzero
/// = attend) has mask[b, j] ≠ 0 for b = r / (H·T), and, when `causal`,
/// j ≤ r % T. Hidden entries are exactly 0; a row that sees no key is all
/// zeros (its output and gradients are then 0, as the fused kernel's).
pub fn softmax_forward_masked(
    gpu: &Gpu,
    x: &Tensor,
    y: &Tensor,
    scale: f32,
    causal: bool,
    key_mask: &Tensor,
    heads: usize,
) -> Result<Dispatch> {
    let op = "softmax_forward_masked";
    check_f32(op, &[x, y])?;
    check_same_shape(op, &[x, y])?;
    let (rows, n) = rows_and_n(op, x)?;
    if !scale.is_finite() {
        bail!("{op}: scale must be finite, got {scale}");
    }
    let t = n as usize;
    if heads == 0 || !(rows as usize).is_multiple_of(heads * t) {
        bail!(
            "{op}: scores {:?} are not [B·{heads}, T, T] with T = {t}",
            x.shape()
        );
    }
    let b = rows as usize / (heads * t);
    super::check_dtype(op, &[key_mask], crate::runtime::DType::I32)
        .map_err(|e| e.context(format!("{op}: the key mask must be i32 [B, T]")))?;
    super::check_numel(op, "key_mask", key_mask, b * t)?;
    let p = Params {
        rows,
        n,
        scale,
        causal: if causal { n } else { 0 },
        heads: heads as u32,
        _pad: [0; 3],
    };
    launch(
        gpu,
        "forward_masked",
        p,
        vec![Arg::Read(x), Arg::Read(key_mask), Arg::ReadWrite(y)],
    )
}

/// dx = y ⊙ (dy − Σ_j dy_j·y_j) per row, from the forward output `y`;
/// entries with y = 0 (masked) get exactly 0. `dx` is overwritten.
pub fn softmax_backward(gpu: &Gpu, y: &Tensor, dy: &Tensor, dx: &Tensor) -> Result<Dispatch> {
    let op = "softmax_backward";
    check_f32(op, &[y, dy, dx])?;
    check_same_shape(op, &[y, dy, dx])?;
    let (rows, n) = rows_and_n(op, y)?;
    if dx.shares_storage(y) || dx.shares_storage(dy) {
        bail!("{op}: dx shares its buffer with y or dy; use a separate output tensor");
    }
    let p = Params {
        rows,
        n,
        scale: 1.0,
        causal: 0,
        heads: 1,
        _pad: [0; 3],
    };
    launch(
        gpu,
        "backward",
        p,
        vec![Arg::Read(y), Arg::Read(dy), Arg::ReadWrite(dx)],
    )
}
