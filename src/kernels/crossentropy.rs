//! Fused softmax + cross-entropy over a vocabulary
//! (`shaders/crossentropy.wgsl`): per-row losses, their mean over the
//! non-ignored rows, and optionally the logit gradient, with no readback
//! (the count of valid rows is computed on the GPU).

use anyhow::{bail, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_dtype, check_f32, check_numel, check_shape, check_u32};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;

/// The parameter block shared by all three passes.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    v: u32,
    ignore_index: i32,
    grad_scale: f32,
}

const OP: &str = "cross_entropy";

/// (rows, V) of `logits`: the last dimension is the vocabulary, every other
/// dimension is a row (so [rows, V] and [B, T, V] both work).
fn rows_and_vocab(logits: &Tensor) -> Result<(u32, u32)> {
    let shape = logits.shape();
    let Some(&v) = shape.last() else {
        bail!("{OP}: logits must have at least one dimension (the vocabulary), got a scalar");
    };
    let rows = logits.numel() / v.max(1);
    if v == 0 || rows == 0 {
        bail!("{OP}: logits {shape:?} is empty; need at least one row and V ≥ 1");
    }
    check_u32(OP, "rows·V", logits.numel())?;
    Ok((check_u32(OP, "rows", rows)?, check_u32(OP, "V", v)?))
}

fn kernel(entry: &'static str, wg: u32) -> Kernel {
    Kernel::new("crossentropy", entry).constant("WG", wg)
}

/// Mean cross-entropy of `logits` against `targets`, and its gradient.
///
/// `logits` [rows, V] f32 (or any shape whose last dimension is V), `targets`
/// [rows] i32 (any shape with `rows` elements). Writes:
/// - `losses` [rows] f32: logsumexp(logits_r) − logits_r[target_r], or 0 when
///   the row is ignored;
/// - `mean_loss` [1] f32: Σ_r losses_r / count, where count is the number of
///   non-ignored rows (0 when count is 0);
/// - `dlogits` (same shape as `logits`, optional):
///   grad_scale · (softmax(logits_r) − onehot(target_r)) / count for counted
///   rows, 0 for ignored rows.
///
/// A row is ignored when its target equals `ignore_index` *or lies outside
/// [0, V)*: the host cannot see GPU targets, so the kernel never reads out of
/// bounds and simply leaves such rows out of the loss and the count.
///
/// Returns three dispatches (count, rows, mean) to submit in order. They
/// share one parameter block; [`set_grad_scale`] rewrites it in place.
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    losses: &Tensor,
    mean_loss: &Tensor,
    dlogits: Option<&Tensor>,
    ignore_index: i32,
    grad_scale: f32,
) -> Result<Vec<Dispatch>> {
    check_f32(OP, &[logits, losses, mean_loss])?;
    check_dtype(OP, &[targets], DType::I32)
        .map_err(|e| e.context(format!("{OP}: targets must be i32 token ids")))?;
    let (rows, v) = rows_and_vocab(logits)?;
    check_numel(OP, "targets", targets, rows as usize)?;
    check_numel(OP, "losses", losses, rows as usize)?;
    check_numel(OP, "mean_loss", mean_loss, 1)?;
    if let Some(d) = dlogits {
        check_f32(OP, &[d])?;
        check_shape(OP, "dlogits", d, logits.shape())?;
    }
    // A dispatch cannot bind one buffer both read-only and writable.
    let inputs = [("logits", logits), ("targets", targets)];
    let mut outputs = vec![("losses", losses), ("mean_loss", mean_loss)];
    outputs.extend(dlogits.map(|d| ("dlogits", d)));
    for (o, ot) in &outputs {
        for (i, it) in inputs.iter().chain(&[("losses", losses)]) {
            if o != i && ot.shares_storage(it) {
                bail!("{OP}: {o} shares its buffer with {i}; give it its own allocation");
            }
        }
    }
    let p = Params {
        rows,
        v,
        ignore_index,
        grad_scale,
    };
    let pb = bytemuck::bytes_of(&p);
    let count = gpu.empty(&[1], DType::U32)?;
    let c0 = gpu.dispatch(
        &kernel("count_valid", WG),
        &[Arg::Uniform(pb), Arg::Read(targets), Arg::ReadWrite(&count)],
        [1, 1, 1],
    )?;
    let grid = grid_1d(rows, gpu.limits().max_compute_workgroups_per_dimension);
    let mut row_args = vec![
        Arg::Uniform(pb),
        Arg::Read(targets),
        Arg::Read(&count),
        Arg::Read(logits),
        Arg::ReadWrite(losses),
    ];
    let entry = match dlogits {
        Some(d) => {
            row_args.push(Arg::ReadWrite(d));
            "rows_grad"
        }
        None => "rows",
    };
    // One workgroup per row, as wide as the device's row kernels use (256
    // on GPUs, fewer on CPU adapters, where barriers are expensive); a power
    // of two, as the tree reductions need.
    let wg = super::row_threads_cap(gpu, v).min(WG);
    let c1 = gpu.dispatch(&kernel(entry, wg), &row_args, grid)?;
    let c2 = gpu.dispatch(
        &kernel("mean", WG),
        &[
            Arg::Uniform(pb),
            Arg::Read(losses),
            Arg::Read(&count),
            Arg::ReadWrite(mean_loss),
        ],
        [1, 1, 1],
    )?;
    Ok(vec![
        c0.keep(count.clone()),
        c1.keep(count.clone()),
        c2.keep(count),
    ])
}

/// Rewrites `grad_scale` (and `ignore_index`) of dispatches built by
/// [`cross_entropy`] for these `logits`, without rebuilding them.
pub fn set_grad_scale(
    gpu: &Gpu,
    dispatches: &[Dispatch],
    logits: &Tensor,
    ignore_index: i32,
    grad_scale: f32,
) -> Result<()> {
    let (rows, v) = rows_and_vocab(logits)?;
    if dispatches.len() != 3
        || dispatches
            .iter()
            .any(|d| !d.label.starts_with("crossentropy::"))
    {
        bail!(
            "set_grad_scale: expected the 3 dispatches of cross_entropy, got {}",
            dispatches.len()
        );
    }
    let p = Params {
        rows,
        v,
        ignore_index,
        grad_scale,
    };
    for d in dispatches {
        d.set_uniform(gpu, bytemuck::bytes_of(&p))?;
    }
    Ok(())
}
