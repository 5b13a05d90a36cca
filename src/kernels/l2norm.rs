//! L2 normalisation of rows (`shaders/l2norm.wgsl`), as PyTorch's
//! `F.normalize(x, dim=-1, eps)`: y = x / max(‖x‖₂, eps) over the last
//! dimension, forward and backward. The forward also writes each row's norm
//! (f32, unclamped), which the backward reads with y.
//!
//! The sum of squares is taken in f32: rows with |x| beyond ~1e19 overflow.

use anyhow::{bail, ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_dtype, check_float, check_numel, check_same_shape, check_u32};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    eps: f32,
    _pad: u32,
}

fn params(op: &str, x: &Tensor, eps: f32) -> Result<Params> {
    let Some(&n) = x.shape().last() else {
        bail!("{op}: input must have at least one dimension (got a scalar)");
    };
    ensure!(n > 0, "{op}: input {:?} has empty rows", x.shape());
    ensure!(
        eps.is_finite() && eps > 0.0,
        "{op}: eps must be finite and > 0, got {eps}"
    );
    check_u32(op, "element count", x.numel())?;
    Ok(Params {
        rows: (x.numel() / n) as u32,
        n: n as u32,
        eps,
        _pad: 0,
    })
}

fn launch(
    gpu: &Gpu,
    entry: &'static str,
    p: Params,
    elem: DType,
    args: Vec<Arg<'_>>,
) -> Result<Dispatch> {
    let tpr = super::row_threads(gpu, p.n, WG);
    let kernel = Kernel::new("l2norm", entry)
        .constant("WG", WG)
        .constant("TPR", tpr)
        .elem(elem);
    let mut all = vec![Arg::Uniform(bytemuck::bytes_of(&p))];
    all.extend(args);
    gpu.dispatch(
        &kernel,
        &all,
        grid_1d(
            p.rows.div_ceil(WG / tpr),
            gpu.limits().max_compute_workgroups_per_dimension,
        ),
    )
}

/// y = x / max(‖x‖, eps) per row of the last dimension; `norm` (f32, one
/// per row) receives ‖x‖.
pub fn forward(gpu: &Gpu, x: &Tensor, y: &Tensor, norm: &Tensor, eps: f32) -> Result<Dispatch> {
    const OP: &str = "l2_normalize";
    let elem = check_float(OP, &[x, y])?;
    check_same_shape(OP, &[x, y])?;
    check_dtype(OP, &[norm], DType::F32)?;
    let p = params(OP, x, eps)?;
    check_numel(OP, "norm", norm, p.rows as usize)?;
    launch(
        gpu,
        "forward",
        p,
        elem,
        vec![Arg::Read(x), Arg::ReadWrite(y), Arg::ReadWrite(norm)],
    )
}

/// dx from the forward's `y` and `norm` and the output gradient `dy`
/// (overwritten): (dy − y·(y·dy)) / ‖x‖ where ‖x‖ ≥ eps, dy / eps elsewhere.
pub fn backward(
    gpu: &Gpu,
    y: &Tensor,
    norm: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    eps: f32,
) -> Result<Dispatch> {
    const OP: &str = "l2_normalize_backward";
    let elem = check_float(OP, &[y, dy, dx])?;
    check_same_shape(OP, &[y, dy, dx])?;
    check_dtype(OP, &[norm], DType::F32)?;
    let p = params(OP, y, eps)?;
    check_numel(OP, "norm", norm, p.rows as usize)?;
    launch(
        gpu,
        "backward",
        p,
        elem,
        vec![
            Arg::Read(y),
            Arg::Read(norm),
            Arg::Read(dy),
            Arg::ReadWrite(dx),
        ],
    )
}
