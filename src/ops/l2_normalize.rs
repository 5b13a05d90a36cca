//! L2 normalisation over the last dimension, as PyTorch's
//! `F.normalize(x, dim=-1, eps=eps)`: y = x / max(‖x‖₂, eps) (CLIP divides
//! its embeddings by their norm). Saves each row's norm for the backward.

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::l2norm;
use crate::reference::l2norm as r;
use crate::runtime::numel;

#[derive(Debug, Clone)]
pub struct L2Normalize {
    pub eps: f32,
}

impl Graph {
    /// x / max(‖x‖₂, eps) per row of the last dimension (PyTorch's default
    /// eps is 1e-12).
    pub fn l2_normalize(&mut self, x: TensorId, eps: f32) -> Result<TensorId> {
        let shape = self.shape(x).to_vec();
        let c = shape.last().copied().unwrap_or(0);
        ensure!(
            c > 0,
            "l2_normalize: {} {shape:?} needs a last dimension ≥ 1",
            self.name(x)
        );
        ensure!(
            eps.is_finite() && eps > 0.0,
            "l2_normalize: eps must be finite and > 0, got {eps}"
        );
        let rows = numel(&shape) / c;
        let y = self.planned(format!("{}.normalized", self.name(x)), &shape);
        let norm = self.planned(format!("{}.norm", self.name(x)), &[rows]);
        self.push_node(L2Normalize { eps }, &[x], &[y, norm]);
        Ok(y)
    }
}

impl Op for L2Normalize {
    fn name(&self) -> &'static str {
        "l2_normalize"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (x, y, norm) = (io.input(0), io.output(0), io.output(1));
        let eps = self.eps;
        let n = numel(cx.shape(x)) as u64;
        cx.push(
            Step::new("l2_normalize", move |gpu, r| {
                Ok(vec![l2norm::forward(gpu, &r(x), &r(y), &r(norm), eps)?])
            })
            .reads([x])
            .writes([y, norm])
            .flops(3 * n),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let (x, y, norm) = (io.input(0), io.output(0), io.output(1));
        ensure!(
            cx.grad(norm).is_none(),
            "l2_normalize: its saved norm is not differentiable"
        );
        let Some(dy) = cx.grad_tensor(y)? else {
            return Ok(());
        };
        if !cx.needs_grad(x) {
            return Ok(());
        }
        let eps = self.eps;
        let n = numel(cx.g.shape(x)) as u64;
        cx.contribute_overwrite(x, |dx| {
            Step::new("l2_normalize_backward", move |gpu, r| {
                Ok(vec![l2norm::backward(
                    gpu,
                    &r(y),
                    &r(norm),
                    &r(dy),
                    &r(dx),
                    eps,
                )?])
            })
            .reads([y, norm, dy])
            .writes([dx])
            .flops(4 * n)
        })
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let x = ins[0];
        let c = x.last_dim();
        let (y, norms) = r::forward(&x.data, c, self.eps as f64);
        Ok(vec![
            HostTensor::new(&x.shape, y)?,
            HostTensor::new(&[x.rows()], norms)?,
        ])
    }
}
