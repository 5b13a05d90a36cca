//! Elementwise activations, forward and backward: GELU (tanh form as GPT-2,
//! exact erf form as BERT/ViT), quick-GELU (CLIP), ReLU, tanh, sigmoid, and
//! exp with an optional upper bound (CLIP's learnable temperature,
//! `min(exp(logit_scale), 100)`). One kernel family for all:
//! `shaders/activation.wgsl`.

use anyhow::{bail, ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::activation::{self as act, ActKind};
use crate::kernels::gelu::GeluKind;

/// Which activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))): `gelu_new`, `gelu_pytorch_tanh`.
    GeluTanh,
    /// x·Φ(x): Hugging Face's `gelu`.
    GeluErf,
    /// x·σ(1.702x): CLIP's `quick_gelu`.
    QuickGelu,
    Relu,
    Tanh,
    Sigmoid,
    /// e^x (no Hugging Face activation; see [`Graph::exp`] for a bound).
    Exp,
}

impl Activation {
    /// The activation a Hugging Face config names (`hidden_act`,
    /// `activation_function`), or a clear error.
    pub fn from_hf(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            "gelu" => Self::GeluErf,
            "quick_gelu" => Self::QuickGelu,
            "relu" => Self::Relu,
            "tanh" => Self::Tanh,
            "sigmoid" => Self::Sigmoid,
            other => bail!(
                "activation {other:?} is not supported; Kiln has gelu, gelu_new, \
                 gelu_pytorch_tanh, quick_gelu, relu, tanh and sigmoid"
            ),
        })
    }

    /// The name Hugging Face configs use for it.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::GeluTanh => "gelu_new",
            Self::GeluErf => "gelu",
            Self::QuickGelu => "quick_gelu",
            Self::Relu => "relu",
            Self::Tanh => "tanh",
            Self::Sigmoid => "sigmoid",
            Self::Exp => "exp",
        }
    }

    /// The kernel's name for it.
    pub fn kernel_kind(self) -> ActKind {
        match self {
            Self::GeluTanh => ActKind::GeluTanh,
            Self::GeluErf => ActKind::GeluErf,
            Self::QuickGelu => ActKind::QuickGelu,
            Self::Relu => ActKind::Relu,
            Self::Tanh => ActKind::Tanh,
            Self::Sigmoid => ActKind::Sigmoid,
            Self::Exp => ActKind::Exp,
        }
    }

    /// Step names of the forward and backward kernels, for dumps and profiles.
    fn step_names(self) -> (&'static str, &'static str) {
        match self {
            Self::GeluTanh | Self::GeluErf => ("gelu", "gelu_backward"),
            Self::QuickGelu => ("quick_gelu", "quick_gelu_backward"),
            Self::Relu => ("relu", "relu_backward"),
            Self::Tanh => ("tanh", "tanh_backward"),
            Self::Sigmoid => ("sigmoid", "sigmoid_backward"),
            Self::Exp => ("exp", "exp_backward"),
        }
    }

    /// f(x) in f64.
    pub fn eval(self, x: f64) -> f64 {
        crate::reference::activation::eval(self.kernel_kind(), x, None)
    }
}

#[derive(Debug, Clone)]
pub struct Act {
    pub kind: Activation,
    /// exp only: y = min(e^x, bound).
    pub bound: Option<f32>,
}

impl Graph {
    /// y = f(x), elementwise.
    pub fn activation(&mut self, x: TensorId, kind: Activation) -> TensorId {
        let shape = self.shape(x).to_vec();
        let y = self.planned(format!("{}.{}", self.name(x), kind.hf_name()), &shape);
        self.push_node(Act { kind, bound: None }, &[x], &[y]);
        y
    }

    /// y = e^x, or min(e^x, max) with an upper bound (CLIP's temperature:
    /// `exp(logit_scale)` clamped to 100). Where the bound applies the
    /// gradient is 0, as torch.clamp's.
    pub fn exp(&mut self, x: TensorId, max: Option<f32>) -> Result<TensorId> {
        if let Some(m) = max {
            ensure!(
                m.is_finite() && m > 0.0,
                "exp: the upper bound must be finite and > 0, got {m}"
            );
        }
        let shape = self.shape(x).to_vec();
        let y = self.planned(format!("{}.exp", self.name(x)), &shape);
        self.push_node(
            Act {
                kind: Activation::Exp,
                bound: max,
            },
            &[x],
            &[y],
        );
        Ok(y)
    }

    pub fn gelu(&mut self, x: TensorId, kind: GeluKind) -> TensorId {
        self.activation(
            x,
            match kind {
                GeluKind::Tanh => Activation::GeluTanh,
                GeluKind::Erf => Activation::GeluErf,
            },
        )
    }
}

impl Op for Act {
    fn name(&self) -> &'static str {
        "activation"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (x, y) = (io.input(0), io.output(0));
        let (kind, bound) = (self.kind.kernel_kind(), self.bound);
        let n = cx.g.desc(x).numel() as u64;
        cx.push(
            Step::new(self.kind.step_names().0, move |gpu, r| {
                Ok(vec![act::forward(gpu, &r(x), &r(y), kind, bound)?])
            })
            .reads([x])
            .writes([y])
            .flops(kind.flops() * n),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let (x, y) = (io.input(0), io.output(0));
        let Some(dy) = cx.grad_tensor(y)? else {
            return Ok(());
        };
        if !cx.needs_grad(x) {
            return Ok(());
        }
        let (kind, bound) = (self.kind.kernel_kind(), self.bound);
        let n = cx.g.desc(x).numel() as u64;
        cx.contribute_overwrite(x, |dx| {
            Step::new(self.kind.step_names().1, move |gpu, r| {
                Ok(vec![act::backward(
                    gpu,
                    &r(x),
                    &r(dy),
                    &r(dx),
                    kind,
                    bound,
                )?])
            })
            .reads([x, dy])
            .writes([dx])
            .flops(kind.flops() * n)
        })
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let x = ins[0];
        let (kind, bound) = (self.kind.kernel_kind(), self.bound.map(f64::from));
        let data = x
            .data
            .iter()
            .map(|&v| crate::reference::activation::eval(kind, v, bound))
            .collect();
        Ok(vec![HostTensor::new(&x.shape, data)?])
    }
}
