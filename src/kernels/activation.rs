//! Elementwise activations (`shaders/activation.wgsl`), forward and
//! backward, over tensors of any shape, f32 or f16 (all operands of one call
//! share the element type; arithmetic is f32): GELU (tanh and erf forms),
//! quick-GELU, ReLU, tanh, sigmoid and exp (optionally clamped from above).

use anyhow::{ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_float, check_same_shape, check_u32};
use crate::runtime::{grid_1d, Arg, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;

/// Which activation (the shader's KIND).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActKind {
    /// 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))) (GPT-2's `gelu_new`).
    GeluTanh,
    /// x·Φ(x) (the exact GELU).
    GeluErf,
    /// x·σ(1.702x) (CLIP).
    QuickGelu,
    /// max(x, 0); the gradient at 0 is 0, as PyTorch's.
    Relu,
    Tanh,
    Sigmoid,
    /// e^x, or min(e^x, bound) with a bound (gradient 0 where it applies).
    Exp,
}

impl ActKind {
    pub const ALL: [ActKind; 7] = [
        ActKind::GeluTanh,
        ActKind::GeluErf,
        ActKind::QuickGelu,
        ActKind::Relu,
        ActKind::Tanh,
        ActKind::Sigmoid,
        ActKind::Exp,
    ];

    fn code(self) -> u32 {
        match self {
            ActKind::GeluTanh => 0,
            ActKind::GeluErf => 1,
            ActKind::QuickGelu => 2,
            ActKind::Relu => 3,
            ActKind::Tanh => 4,
            ActKind::Sigmoid => 5,
            ActKind::Exp => 6,
        }
    }

    /// Nominal FLOPs per element, for profiles.
    pub fn flops(self) -> u64 {
        match self {
            ActKind::Relu => 1,
            ActKind::Exp | ActKind::Sigmoid | ActKind::Tanh => 4,
            _ => 10,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    has_bound: u32,
    bound: f32,
    _pad: u32,
}

fn launch(
    gpu: &Gpu,
    op: &str,
    entry: &'static str,
    kind: ActKind,
    bound: Option<f32>,
    x: &Tensor,
    tensors: Vec<Arg<'_>>,
) -> Result<Dispatch> {
    if let Some(b) = bound {
        ensure!(
            kind == ActKind::Exp,
            "{op}: only exp takes an upper bound, not {kind:?}"
        );
        ensure!(
            b.is_finite() && b > 0.0,
            "{op}: the bound of exp must be finite and > 0, got {b}"
        );
    }
    let p = Params {
        n: check_u32(op, "element count", x.numel())?,
        has_bound: bound.is_some() as u32,
        bound: bound.unwrap_or(0.0),
        _pad: 0,
    };
    let mut args = vec![Arg::Uniform(bytemuck::bytes_of(&p))];
    args.extend(tensors);
    let kernel = Kernel::new("activation", entry)
        .constant("WG", WG)
        .constant("KIND", kind.code())
        .elem(x.dtype());
    gpu.dispatch(
        &kernel,
        &args,
        grid_1d(
            p.n.div_ceil(WG),
            gpu.limits().max_compute_workgroups_per_dimension,
        ),
    )
}

/// y = act(x), elementwise; `x` and `y` have the same shape. `bound` (exp
/// only): y = min(e^x, bound).
pub fn forward(
    gpu: &Gpu,
    x: &Tensor,
    y: &Tensor,
    kind: ActKind,
    bound: Option<f32>,
) -> Result<Dispatch> {
    forward_as(gpu, "activation_forward", x, y, kind, bound)
}

/// [`forward`] whose errors name `op`.
pub(crate) fn forward_as(
    gpu: &Gpu,
    op: &str,
    x: &Tensor,
    y: &Tensor,
    kind: ActKind,
    bound: Option<f32>,
) -> Result<Dispatch> {
    check_float(op, &[x, y])?;
    check_same_shape(op, &[x, y])?;
    launch(
        gpu,
        op,
        "forward",
        kind,
        bound,
        x,
        vec![Arg::Read(x), Arg::ReadWrite(y)],
    )
}

/// dx = dy · act'(x), elementwise; `x`, `dy` and `dx` have the same shape.
/// Where act'(x) = 0 (ReLU for x ≤ 0, a clamped exp) dx is an exact 0.
pub fn backward(
    gpu: &Gpu,
    x: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    kind: ActKind,
    bound: Option<f32>,
) -> Result<Dispatch> {
    backward_as(gpu, "activation_backward", x, dy, dx, kind, bound)
}

/// [`backward`] whose errors name `op`.
pub(crate) fn backward_as(
    gpu: &Gpu,
    op: &str,
    x: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    kind: ActKind,
    bound: Option<f32>,
) -> Result<Dispatch> {
    check_float(op, &[x, dy, dx])?;
    check_same_shape(op, &[x, dy, dx])?;
    launch(
        gpu,
        op,
        "backward",
        kind,
        bound,
        x,
        vec![Arg::Read(x), Arg::Read(dy), Arg::ReadWrite(dx)],
    )
}
