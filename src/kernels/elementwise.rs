//! Elementwise kernels (`shaders/elementwise.wgsl`): add, in-place add,
//! copy, fill over tensors of any shape, f32 or f16 (all operands of
//! one call share the element type; arithmetic is f32).

use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_float, check_same_shape};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    scalar: f32,
    _pad: [u32; 2],
}

fn params(n: usize, scalar: f32) -> Result<Params> {
    ensure!(
        n <= u32::MAX as usize,
        "elementwise: {n} elements exceed u32 indexing"
    );
    Ok(Params {
        n: n as u32,
        scalar,
        _pad: [0; 2],
    })
}

fn launch(
    gpu: &Gpu,
    entry: &'static str,
    n: usize,
    scalar: f32,
    tensors: Vec<Arg<'_>>,
) -> Result<Dispatch> {
    let elem = match &tensors[0] {
        Arg::Read(t) | Arg::ReadWrite(t) => t.dtype(),
        Arg::Uniform(_) => DType::F32,
    };
    let p = params(n, scalar)?;
    let mut args = vec![Arg::Uniform(bytemuck::bytes_of(&p))];
    args.extend(tensors);
    let groups = (n as u32).div_ceil(WG);
    gpu.dispatch(
        &Kernel::new("elementwise", entry).elem(elem),
        &args,
        grid_1d(groups, gpu.limits().max_compute_workgroups_per_dimension),
    )
}

/// out = a + b
pub fn add(gpu: &Gpu, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<Dispatch> {
    check_float("add", &[a, b, out])?;
    check_same_shape("add", &[a, b, out])?;
    launch(
        gpu,
        "add",
        a.numel(),
        0.0,
        vec![Arg::Read(a), Arg::Read(b), Arg::ReadWrite(out)],
    )
}

/// acc += addend (a residual connection, or accumulating a gradient).
pub fn add_inplace(gpu: &Gpu, acc: &Tensor, addend: &Tensor) -> Result<Dispatch> {
    check_float("add_inplace", &[acc, addend])?;
    check_same_shape("add_inplace", &[acc, addend])?;
    launch(
        gpu,
        "add_inplace",
        acc.numel(),
        0.0,
        vec![Arg::ReadWrite(acc), Arg::Read(addend)],
    )
}

/// out = a
pub fn copy(gpu: &Gpu, a: &Tensor, out: &Tensor) -> Result<Dispatch> {
    check_float("copy", &[a, out])?;
    check_same_shape("copy", &[a, out])?;
    launch(
        gpu,
        "copy",
        a.numel(),
        0.0,
        vec![Arg::Read(a), Arg::ReadWrite(out)],
    )
}

/// acc = value everywhere
pub fn fill(gpu: &Gpu, acc: &Tensor, value: f32) -> Result<Dispatch> {
    check_float("fill", &[acc])?;
    launch(gpu, "fill", acc.numel(), value, vec![Arg::ReadWrite(acc)])
}
