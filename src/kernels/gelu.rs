//! GELU, forward and backward, in GPT-2's tanh form or the exact erf form:
//! the GELU kinds of the activation kernels ([`super::activation`],
//! `shaders/activation.wgsl`), under their historical names.

use anyhow::Result;

use super::activation::{self, ActKind};
use crate::runtime::{Dispatch, Gpu, Tensor};

/// Which GELU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeluKind {
    /// GPT-2's approximation: 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))).
    Tanh,
    /// The exact form: 0.5x(1 + erf(x/√2)) = x·Φ(x).
    Erf,
}

impl GeluKind {
    pub fn act(self) -> ActKind {
        match self {
            GeluKind::Tanh => ActKind::GeluTanh,
            GeluKind::Erf => ActKind::GeluErf,
        }
    }
}

/// y = gelu(x), elementwise; `x` and `y` have the same shape.
pub fn gelu_forward(gpu: &Gpu, x: &Tensor, y: &Tensor, kind: GeluKind) -> Result<Dispatch> {
    activation::forward_as(gpu, "gelu_forward", x, y, kind.act(), None)
}

/// dx = dy · gelu'(x), elementwise; `x`, `dy` and `dx` have the same shape.
pub fn gelu_backward(
    gpu: &Gpu,
    x: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
    kind: GeluKind,
) -> Result<Dispatch> {
    activation::backward_as(gpu, "gelu_backward", x, dy, dx, kind.act(), None)
}
