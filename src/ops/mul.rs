//! Elementwise multiplication with broadcasting (numpy rules, rank ≤ 6): a
//! per-channel scale, a gate, a scalar tensor such as CLIP's temperature
//! (`logits · exp(logit_scale)`, the [1] tensor broadcast over [B, B]).
//!
//! Gradient: d`a` = Σ dy·b and d`b` = Σ dy·a, each summed over the
//! dimensions where that operand broadcasts, in a fixed order (one fused
//! kernel: product and sum, no temporary).

use anyhow::Result;

use super::add::{broadcast_output, contribute_reduced};
use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::broadcast::{self, BinaryOp};
use crate::reference::broadcast as r;
use crate::runtime::numel;

#[derive(Debug, Clone)]
pub struct Mul;

impl Graph {
    /// a · b, elementwise, broadcasting (numpy rules).
    pub fn mul(&mut self, a: TensorId, b: TensorId) -> Result<TensorId> {
        let shape = broadcast_output(self, "mul", a, b)?;
        let out = self.planned("mul", &shape);
        self.push_node(Mul, &[a, b], &[out]);
        Ok(out)
    }
}

impl Op for Mul {
    fn name(&self) -> &'static str {
        "mul"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (a, b, out) = (io.input(0), io.input(1), io.output(0));
        let n = numel(cx.shape(out)) as u64;
        cx.push(
            Step::new("broadcast_mul", move |gpu, r| {
                Ok(vec![broadcast::forward(
                    gpu,
                    BinaryOp::Mul,
                    &r(a),
                    &r(b),
                    &r(out),
                )?])
            })
            .reads([a, b])
            .writes([out])
            .flops(n),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let Some(dy) = cx.grad_tensor(io.output(0))? else {
            return Ok(());
        };
        let (a, b) = (io.input(0), io.input(1));
        for (x, other) in [(a, b), (b, a)] {
            if cx.needs_grad(x) {
                contribute_reduced(cx, x, dy, Some(other))?;
            }
        }
        Ok(())
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let (a, b) = (ins[0], ins[1]);
        let data = r::binary(&a.data, &a.shape, &b.data, &b.shape, |x, y| x * y);
        Ok(vec![HostTensor::new(&r::shape(&a.shape, &b.shape), data)?])
    }
}
