//! Classification accuracy (`shaders/accuracy.wgsl`): the fraction of rows
//! of logits [rows, V] whose argmax (lowest index on ties, as torch.argmax)
//! equals the target, over rows whose target is valid.

use anyhow::{bail, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_dtype, check_float, check_numel, check_u32};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    v: u32,
    ignore_index: i32,
    _pad: u32,
}

/// Writes the accuracy into `acc` [1] f32. Two dispatches (rows, mean); a
/// scratch buffer of one u32 per row is kept alive by them. A target equal to
/// `ignore_index` or outside [0, V) is not counted; with no counted row the
/// accuracy is 0.
pub fn accuracy(
    gpu: &Gpu,
    logits: &Tensor,
    targets: &Tensor,
    acc: &Tensor,
    ignore_index: i32,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "accuracy";
    let elem = check_float(OP, &[logits])?;
    check_dtype(OP, &[targets], DType::I32)?;
    check_dtype(OP, &[acc], DType::F32)?;
    let Some(&v) = logits.shape().last() else {
        bail!("{OP}: logits must have a class dimension");
    };
    if v == 0 {
        bail!("{OP}: logits {:?} have no classes", logits.shape());
    }
    let rows = logits.numel() / v;
    check_numel(OP, "targets", targets, rows)?;
    check_numel(OP, "acc", acc, 1)?;
    let p = Params {
        rows: check_u32(OP, "rows", rows)?,
        v: check_u32(OP, "V", v)?,
        ignore_index,
        _pad: 0,
    };
    let hits = gpu.empty(&[rows.max(1)], DType::U32)?;
    let pb = bytemuck::bytes_of(&p);
    let k = |e: &'static str| Kernel::new("accuracy", e).constant("WG", WG).elem(elem);
    let a = gpu.dispatch(
        &k("rows"),
        &[
            Arg::Uniform(pb),
            Arg::Read(targets),
            Arg::Read(logits),
            Arg::ReadWrite(&hits),
        ],
        grid_1d(p.rows, gpu.limits().max_compute_workgroups_per_dimension),
    )?;
    let b = gpu.dispatch(
        &Kernel::new("accuracy", "mean")
            .constant("WG", WG)
            .elem(elem),
        &[
            Arg::Uniform(pb),
            Arg::Read(targets),
            Arg::Read(&hits),
            Arg::ReadWrite(acc),
        ],
        [1, 1, 1],
    )?;
    Ok(vec![a.keep(hits.clone()), b.keep(hits)])
}
