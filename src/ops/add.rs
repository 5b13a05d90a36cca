//! Addition with broadcasting (numpy rules, rank ≤ 6): the residual
//! connection (equal shapes), a bias row [C] over [N, C], a position table
//! [T, C] over [B, T, C], a per-channel [1, C, 1, 1] over [B, C, H, W], a
//! scalar [1] over anything.
//!
//! Gradient: an operand of the output's shape gets the output's gradient
//! passed through without a copy; a broadcast operand gets it summed over
//! the broadcast dimensions in a fixed order (the two-stage column sum for
//! the common suffix case, the general broadcast reduction otherwise).

use anyhow::{Context, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::broadcast::{self, BinaryOp};
use crate::kernels::{elementwise, reduce};
use crate::reference::broadcast as r;
use crate::runtime::numel;

#[derive(Debug, Clone)]
pub struct Add;

/// Checks that `a` and `b` broadcast; returns the output shape.
pub(crate) fn broadcast_output(
    g: &Graph,
    op: &str,
    a: TensorId,
    b: TensorId,
) -> Result<Vec<usize>> {
    broadcast::broadcast_shape(g.shape(a), g.shape(b))
        .with_context(|| format!("{op}: {} and {}", g.name(a), g.name(b)))
}

impl Graph {
    /// a + b, broadcasting (numpy rules). Equal shapes: the residual add.
    pub fn add(&mut self, a: TensorId, b: TensorId) -> Result<TensorId> {
        let shape = broadcast_output(self, "add", a, b)?;
        let name = if self.shape(a) == self.shape(b) {
            "residual"
        } else {
            "add"
        };
        let out = self.planned(name, &shape);
        self.push_node(Add, &[a, b], &[out]);
        Ok(out)
    }
}

/// Contributes to d`x` the gradient `dy` (of the broadcast output) summed
/// to `x`'s shape, each term multiplied by `other` (broadcast) when given.
pub(crate) fn contribute_reduced(
    cx: &mut Backward<'_>,
    x: TensorId,
    dy: TensorId,
    other: Option<TensorId>,
) -> Result<()> {
    let full = cx.g.shape(dy).to_vec();
    let xs = cx.g.shape(x).to_vec();
    let n = numel(&full) as u64;
    if other.is_none() {
        if numel(&xs) == numel(&full) {
            return cx.contribute(x, dy); // nothing to sum: pass through
        }
        if let Some((rows, cols)) = broadcast::suffix_split(&full, &xs) {
            if cols >= 64 {
                return cx.contribute_with(x, |t, acc| {
                    Step::new("col_sum", move |gpu, r| {
                        reduce::col_sum(gpu, &r(dy), rows, cols, &r(t), acc)
                    })
                    .reads([dy])
                    .writes((!acc).then_some(t))
                    .accumulates(acc.then_some(t))
                    .flops(n)
                });
            }
        }
    }
    let name = if other.is_some() {
        "broadcast_mul_backward"
    } else {
        "broadcast_reduce"
    };
    cx.contribute_with(x, |t, acc| {
        Step::new(name, move |gpu, r| {
            let o = other.map(r);
            broadcast::reduce_to(gpu, &r(dy), o.as_ref(), &r(t), acc)
        })
        .reads([dy])
        .reads(other)
        .writes((!acc).then_some(t))
        .accumulates(acc.then_some(t))
        .flops(2 * n)
    })
}

impl Op for Add {
    fn name(&self) -> &'static str {
        "add"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (a, b, out) = (io.input(0), io.input(1), io.output(0));
        let n = numel(cx.shape(out)) as u64;
        if cx.shape(a) == cx.shape(b) {
            cx.push(
                Step::new("add", move |gpu, r| {
                    Ok(vec![elementwise::add(gpu, &r(a), &r(b), &r(out))?])
                })
                .reads([a, b])
                .writes([out])
                .flops(n),
            );
        } else {
            cx.push(
                Step::new("broadcast_add", move |gpu, r| {
                    Ok(vec![broadcast::forward(
                        gpu,
                        BinaryOp::Add,
                        &r(a),
                        &r(b),
                        &r(out),
                    )?])
                })
                .reads([a, b])
                .writes([out])
                .flops(n),
            );
        }
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let Some(dy) = cx.grad_tensor(io.output(0))? else {
            return Ok(());
        };
        for x in [io.input(0), io.input(1)] {
            if cx.needs_grad(x) {
                contribute_reduced(cx, x, dy, None)?;
            }
        }
        Ok(())
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let (a, b) = (ins[0], ins[1]);
        let data = r::binary(&a.data, &a.shape, &b.data, &b.shape, |x, y| x + y);
        Ok(vec![HostTensor::new(&r::shape(&a.shape, &b.shape), data)?])
    }
}
