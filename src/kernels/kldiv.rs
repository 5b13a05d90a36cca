//! Distillation loss (`shaders/kldiv.wgsl`): the KL divergence between the
//! softened teacher and student distributions,
//! loss = τ²/rows · Σ_r KL(softmax(t_r/τ) ‖ softmax(s_r/τ)),
//! PyTorch's `kl_div(log_softmax(s/τ, -1), softmax(t/τ, -1),
//! reduction="batchmean")·τ²` for [rows, V] logits (any leading shape is
//! flattened into rows, and the mean is over all of them; PyTorch's
//! batchmean divides by the first dimension only). Per-row losses are kept;
//! the gradients of a constant loss seed are written in the same pass.

use anyhow::{bail, ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_dtype, check_float, check_numel, check_same_shape, check_u32};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;
/// The row pass loops over a row four times (max, Σexp, KL, gradient): a
/// thread gets at most this many elements per loop (lavapipe's loop limit,
/// see `kernels::MAX_ELEMENTS_PER_THREAD`).
const MAX_PER_LOOP: u32 = 8192;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    v: u32,
    inv_tau: f32,
    tau2: f32,
    g: f32,
    _pad: [u32; 3],
}

/// Which gradients the row pass writes (overwritten), for the constant
/// loss gradient `seed`.
#[derive(Clone, Copy, Debug, Default)]
pub struct KlGrads<'a> {
    /// d(student logits).
    pub ds: Option<&'a Tensor>,
    /// d(teacher logits).
    pub dt: Option<&'a Tensor>,
    pub seed: f32,
}

/// `loss` [1] and `losses` [rows] (τ²·KL per row), f32, from student
/// logits `s` and teacher logits `t` (same shape, the last dimension the
/// classes) at temperature `tau` > 0. Returns the two passes, in order.
pub fn kl_div(
    gpu: &Gpu,
    s: &Tensor,
    t: &Tensor,
    tau: f32,
    losses: &Tensor,
    loss: &Tensor,
    grads: KlGrads<'_>,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "kl_div";
    let elem = check_float(OP, &[s, t])?;
    check_same_shape(OP, &[s, t])?;
    ensure!(
        tau.is_finite() && tau > 0.0,
        "{OP}: the temperature must be finite and > 0, got {tau}"
    );
    ensure!(grads.seed.is_finite(), "{OP}: the loss seed must be finite");
    let Some(&v) = s.shape().last() else {
        bail!("{OP}: logits must have a class dimension, got a scalar");
    };
    let rows = s.numel() / v.max(1);
    ensure!(v > 0 && rows > 0, "{OP}: logits {:?} are empty", s.shape());
    check_u32(OP, "element count", s.numel())?;
    check_dtype(OP, &[losses, loss], DType::F32)?;
    check_numel(OP, "losses", losses, rows)?;
    check_numel(OP, "loss", loss, 1)?;
    for d in [grads.ds, grads.dt].into_iter().flatten() {
        check_float(OP, &[s, d])?;
        check_same_shape(OP, &[s, d])?;
    }
    let (rows, v) = (rows as u32, v as u32);
    let wg = gpu
        .row_threads()
        .max(v.div_ceil(MAX_PER_LOOP).next_power_of_two())
        .min(WG);
    ensure!(
        v.div_ceil(wg) <= MAX_PER_LOOP,
        "{OP}: {v} classes exceed the {} one workgroup may cover",
        MAX_PER_LOOP * WG
    );
    let p = Params {
        rows,
        v,
        inv_tau: 1.0 / tau,
        tau2: tau * tau,
        g: grads.seed * tau / rows as f32,
        _pad: [0; 3],
    };
    let (entry, outs): (&'static str, Vec<&Tensor>) = match (grads.ds, grads.dt) {
        (None, None) => ("rows", vec![]),
        (Some(ds), None) => ("rows_grad_s", vec![ds]),
        (None, Some(dt)) => ("rows_grad_t", vec![dt]),
        (Some(ds), Some(dt)) => ("rows_grad_st", vec![ds, dt]),
    };
    let mut args = vec![
        Arg::Uniform(bytemuck::bytes_of(&p)),
        Arg::Read(s),
        Arg::Read(t),
        Arg::ReadWrite(losses),
    ];
    args.extend(outs.into_iter().map(Arg::ReadWrite));
    let first = gpu.dispatch(
        &Kernel::new("kldiv", entry).constant("WG", wg).elem(elem),
        &args,
        grid_1d(rows, gpu.limits().max_compute_workgroups_per_dimension),
    )?;
    let second = gpu.dispatch(
        &Kernel::new("kldiv", "mean").constant("WG", WG).elem(elem),
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(losses),
            Arg::ReadWrite(loss),
        ],
        [1, 1, 1],
    )?;
    Ok(vec![first, second])
}
