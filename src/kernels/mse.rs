//! Mean squared error (`shaders/mse.wgsl`): loss = Σ (a − b)² / n over all
//! elements of two tensors of one shape, and optionally its gradients in
//! the same pass, scaled by a constant loss seed: d`a` = seed·2(a − b)/n,
//! d`b` = −d`a` (PyTorch's `F.mse_loss(a, b)`, reduction "mean").
//! Fixed-order reductions: same inputs, same bits.

use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_dtype, check_float, check_numel, check_same_shape, check_u32};
use crate::runtime::{Arg, DType, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;
/// Each stage-1 thread covers at least this many elements; at most
/// MAX_GROUPS workgroups (grid-stride loops beyond).
const ELEMS_PER_THREAD: u32 = 8;
const MAX_GROUPS: u32 = 1024;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    groups: u32,
    k1: f32,
    k2: f32,
}

/// Which gradients the forward writes, scaled by `seed` (the constant
/// gradient of the loss).
#[derive(Clone, Copy, Debug, Default)]
pub struct MseGrads<'a> {
    pub da: Option<&'a Tensor>,
    pub db: Option<&'a Tensor>,
    pub seed: f32,
}

/// `loss` [1] (f32) = mean((a − b)²); with `grads`, also d`a` and/or d`b`
/// (overwritten). Returns the two passes, to submit in order.
pub fn mse(
    gpu: &Gpu,
    a: &Tensor,
    b: &Tensor,
    loss: &Tensor,
    grads: MseGrads<'_>,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "mse_loss";
    let elem = check_float(OP, &[a, b])?;
    check_same_shape(OP, &[a, b])?;
    check_dtype(OP, &[loss], DType::F32)?;
    check_numel(OP, "loss", loss, 1)?;
    for g in [grads.da, grads.db].into_iter().flatten() {
        check_float(OP, &[a, g])?;
        check_same_shape(OP, &[a, g])?;
    }
    ensure!(grads.seed.is_finite(), "{OP}: the loss seed must be finite");
    let n = check_u32(OP, "element count", a.numel())?;
    ensure!(n > 0, "{OP}: the inputs are empty");
    let groups = n.div_ceil(WG * ELEMS_PER_THREAD).min(MAX_GROUPS);
    let k = grads.seed * 2.0 / n as f32;
    let (entry, k1, k2, outs): (&'static str, f32, f32, Vec<&Tensor>) = match (grads.da, grads.db) {
        (None, None) => ("partials_only", 0.0, 0.0, vec![]),
        (Some(da), None) => ("partials_grad1", k, 0.0, vec![da]),
        (None, Some(db)) => ("partials_grad1", -k, 0.0, vec![db]),
        (Some(da), Some(db)) => ("partials_grad2", k, -k, vec![da, db]),
    };
    let p = Params { n, groups, k1, k2 };
    let partials = gpu.empty(&[groups as usize], DType::F32)?;
    let mut args = vec![
        Arg::Uniform(bytemuck::bytes_of(&p)),
        Arg::Read(a),
        Arg::Read(b),
        Arg::ReadWrite(&partials),
    ];
    args.extend(outs.into_iter().map(Arg::ReadWrite));
    let kernel = |e: &'static str| Kernel::new("mse", e).constant("WG", WG).elem(elem);
    let first = gpu
        .dispatch(&kernel(entry), &args, [groups, 1, 1])?
        .keep(partials.clone());
    let second = gpu
        .dispatch(
            &kernel("final_mean"),
            &[
                Arg::Uniform(bytemuck::bytes_of(&p)),
                Arg::Read(&partials),
                Arg::ReadWrite(loss),
            ],
            [1, 1, 1],
        )?
        .keep(partials);
    Ok(vec![first, second])
}
