//! Masked mean pooling over the sequence (`shaders/pooling.wgsl`): x
//! [B, T, C] and an i32 mask [B, T] (nonzero = a real token, as Hugging
//! Face's `attention_mask`) give y [B, C] = Σ_t mask·x / max(Σ_t mask, 1),
//! the sentence-embedding pooling of sentence-transformers. A row with no
//! real token gives y = 0 (and a zero gradient). The forward also writes
//! scale [B] = 1 / max(count, 1) (f32) for the backward.

use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_dtype, check_float, check_shape, check_u32};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    b: u32,
    t: u32,
    c: u32,
    _pad: u32,
}

fn params(op: &str, x_shape: &[usize], mask: &Tensor) -> Result<Params> {
    ensure!(
        x_shape.len() == 3,
        "{op}: x must be [B, T, C], is {x_shape:?}"
    );
    let (b, t, c) = (x_shape[0], x_shape[1], x_shape[2]);
    check_dtype(op, &[mask], DType::I32)
        .map_err(|e| e.context(format!("{op}: the mask must be i32")))?;
    check_shape(op, "mask", mask, &[b, t])?;
    ensure!(
        t as u32 <= super::MAX_ELEMENTS_PER_THREAD,
        "{op}: sequences of {t} positions exceed the {} one thread may loop over",
        super::MAX_ELEMENTS_PER_THREAD
    );
    check_u32(op, "element count", b * t * c)?;
    Ok(Params {
        b: b as u32,
        t: t as u32,
        c: c as u32,
        _pad: 0,
    })
}

fn launch(
    gpu: &Gpu,
    entry: &'static str,
    p: Params,
    n: u32,
    elem: DType,
    args: Vec<Arg<'_>>,
) -> Result<Dispatch> {
    let mut all = vec![Arg::Uniform(bytemuck::bytes_of(&p))];
    all.extend(args);
    gpu.dispatch(
        &Kernel::new("pooling", entry).constant("WG", WG).elem(elem),
        &all,
        grid_1d(
            n.div_ceil(WG),
            gpu.limits().max_compute_workgroups_per_dimension,
        ),
    )
}

/// y [B, C] = masked mean of x [B, T, C] over T; scale [B] (f32) =
/// 1 / max(count, 1).
pub fn forward(
    gpu: &Gpu,
    x: &Tensor,
    mask: &Tensor,
    y: &Tensor,
    scale: &Tensor,
) -> Result<Dispatch> {
    const OP: &str = "masked_mean";
    let elem = check_float(OP, &[x, y])?;
    let p = params(OP, x.shape(), mask)?;
    check_shape(OP, "y", y, &[p.b as usize, p.c as usize])?;
    check_dtype(OP, &[scale], DType::F32)?;
    check_shape(OP, "scale", scale, &[p.b as usize])?;
    launch(
        gpu,
        "forward",
        p,
        p.b * p.c,
        elem,
        vec![
            Arg::Read(mask),
            Arg::Read(x),
            Arg::ReadWrite(y),
            Arg::ReadWrite(scale),
        ],
    )
}

/// dx [B, T, C] (overwritten) = mask·dy[b]·scale[b].
pub fn backward(
    gpu: &Gpu,
    mask: &Tensor,
    scale: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
) -> Result<Dispatch> {
    const OP: &str = "masked_mean_backward";
    let elem = check_float(OP, &[dy, dx])?;
    let p = params(OP, dx.shape(), mask)?;
    check_shape(OP, "dy", dy, &[p.b as usize, p.c as usize])?;
    check_dtype(OP, &[scale], DType::F32)?;
    check_shape(OP, "scale", scale, &[p.b as usize])?;
    launch(
        gpu,
        "backward",
        p,
        p.b * p.t * p.c,
        elem,
        vec![
            Arg::Read(mask),
            Arg::Read(scale),
            Arg::Read(dy),
            Arg::ReadWrite(dx),
        ],
    )
}
