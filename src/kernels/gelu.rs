//! GELU activation (`shaders/gelu.wgsl`), forward and backward, in GPT-2's
//! tanh form or the exact erf form, over f32 tensors of any shape.

use anyhow::{bail, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_f32, check_same_shape, check_u32};
use crate::runtime::{grid_1d, Arg, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;

/// Which GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluKind {
    /// GPT-2's approximation: 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))).
    Tanh,
    /// The exact form: 0.5x(1 + erf(x/√2)) = x·Φ(x).
    Erf,
}

impl GeluKind {
    fn code(self) -> u32 {
        match self {
            GeluKind::Tanh => 0,
            GeluKind::Erf => 1,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// A dispatch cannot bind one buffer both read-only and writable, so
/// in-place use is refused with a clear error instead of a validation panic.
fn check_not_aliased(op: &str, out: &Tensor, inputs: &[(&str, &Tensor)]) -> Result<()> {
    for (name, t) in inputs {
        if out.shares_storage(t) {
            bail!("{op}: the output shares its buffer with {name} (in-place is not supported)");
        }
    }
    Ok(())
}

fn launch(
    gpu: &Gpu,
    op: &str,
    entry: &'static str,
    kind: GeluKind,
    n: usize,
    tensors: Vec<Arg<'_>>,
) -> Result<Dispatch> {
    let p = Params {
        n: check_u32(op, "element count", n)?,
        _pad: [0; 3],
    };
    let mut args = vec![Arg::Uniform(bytemuck::bytes_of(&p))];
    args.extend(tensors);
    let kernel = Kernel::new("gelu", entry)
        .constant("WG", WG)
        .constant("KIND", kind.code());
    gpu.dispatch(
        &kernel,
        &args,
        grid_1d(
            p.n.div_ceil(WG),
            gpu.limits().max_compute_workgroups_per_dimension,
        ),
    )
}

/// y = gelu(x), elementwise; `x` and `y` have the same shape.
pub fn gelu_forward(gpu: &Gpu, x: &Tensor, y: &Tensor, kind: GeluKind) -> Result<Dispatch> {
    check_f32("gelu_forward", &[x, y])?;
    check_same_shape("gelu_forward", &[x, y])?;
    check_not_aliased("gelu_forward", y, &[("x", x)])?;
    launch(
        gpu,
        "gelu_forward",
        "forward",
        kind,
        x.numel(),
        vec![Arg::Read(x), Arg::ReadWrite(y)],
    )
}

/// dx = dy · gelu'(x), elementwise; `x`, `dy` and `dx` have the same shape.
pub fn gelu_backward(
    gpu: &Gpu,
    x: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    kind: GeluKind,
) -> Result<Dispatch> {
    check_f32("gelu_backward", &[x, dy, dx])?;
    check_same_shape("gelu_backward", &[x, dy, dx])?;
    check_not_aliased("gelu_backward", dx, &[("x", x), ("dy", dy)])?;
    launch(
        gpu,
        "gelu_backward",
        "backward",
        kind,
        x.numel(),
        vec![Arg::Read(x), Arg::Read(dy), Arg::ReadWrite(dx)],
    )
}
