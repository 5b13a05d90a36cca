//! Elementwise activations, forward and backward: GELU (tanh form as GPT-2,
//! exact erf form as BERT/ViT), quick-GELU (CLIP), ReLU, tanh, sigmoid.

use anyhow::{bail, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::gelu::{self, GeluKind};
use crate::reference::gelu::normal_cdf;

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
        }
    }

    fn gelu_kind(self) -> Result<GeluKind> {
        Ok(match self {
            Self::GeluTanh => GeluKind::Tanh,
            Self::GeluErf => GeluKind::Erf,
            other => bail!("activation {other:?} has no GPU kernel yet"),
        })
    }

    /// f(x) in f64.
    pub fn eval(self, x: f64) -> f64 {
        let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
        match self {
            Self::GeluTanh => {
                0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044_715 * x * x * x)).tanh())
            }
            Self::GeluErf => x * normal_cdf(x),
            Self::QuickGelu => x * sig(1.702 * x),
            Self::Relu => x.max(0.0),
            Self::Tanh => x.tanh(),
            Self::Sigmoid => sig(x),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Act {
    pub kind: Activation,
}

impl Graph {
    /// y = f(x), elementwise.
    pub fn activation(&mut self, x: TensorId, kind: Activation) -> TensorId {
        let shape = self.shape(x).to_vec();
        let y = self.planned(format!("{}.{}", self.name(x), kind.hf_name()), &shape);
        self.push_node(Act { kind }, &[x], &[y]);
        y
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
        let kind = self.kind.gelu_kind()?;
        let n = cx.g.desc(x).numel() as u64;
        cx.push(
            Step::new("gelu", move |gpu, r| {
                Ok(vec![gelu::gelu_forward(gpu, &r(x), &r(y), kind)?])
            })
            .reads([x])
            .writes([y])
            .flops(10 * n),
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
        let kind = self.kind.gelu_kind()?;
        let n = cx.g.desc(x).numel() as u64;
        cx.contribute_overwrite(x, |dx| {
            Step::new("gelu_backward", move |gpu, r| {
                Ok(vec![gelu::gelu_backward(gpu, &r(x), &r(dy), &r(dx), kind)?])
            })
            .reads([x, dy])
            .writes([dx])
            .flops(10 * n)
        })
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let x = ins[0];
        let data = x.data.iter().map(|&v| self.kind.eval(v)).collect();
        Ok(vec![HostTensor::new(&x.shape, data)?])
    }
}
