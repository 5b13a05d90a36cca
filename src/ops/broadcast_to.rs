//! Broadcast a tensor to a larger shape (numpy rules: size-1 or missing
//! leading dimensions repeat): a [CLS] token [1, 1, C] in front of every
//! sequence of a batch, a class embedding over the batch. One strided copy
//! whose source stride is 0 along the repeated dimensions; the gradient sums
//! over them in a fixed order (the broadcast reduction of `add`).

use anyhow::{ensure, Result};

use super::add::contribute_reduced;
use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::broadcast::broadcast_shape;
use crate::kernels::layout::{contiguous_strides, copy_strided, Strided};
use crate::runtime::numel;

#[derive(Debug, Clone)]
pub struct BroadcastTo {
    pub shape: Vec<usize>,
}

/// Source strides of `from` read as `to` (0 where `from` repeats).
fn source_strides(from: &[usize], to: &[usize]) -> Vec<usize> {
    let lead = to.len() - from.len();
    let own = contiguous_strides(from);
    (0..to.len())
        .map(|d| {
            if d < lead || from[d - lead] == 1 {
                0
            } else {
                own[d - lead]
            }
        })
        .collect()
}

impl Graph {
    /// `x` repeated to `shape` (numpy broadcasting; no copy when equal).
    pub fn broadcast_to(&mut self, x: TensorId, shape: &[usize]) -> Result<TensorId> {
        let xs = self.shape(x).to_vec();
        if xs == shape {
            return Ok(x);
        }
        ensure!(
            xs.len() <= shape.len() && broadcast_shape(&xs, shape)? == shape,
            "broadcast_to: {} {xs:?} does not broadcast to {shape:?}",
            self.name(x)
        );
        let y = self.planned(format!("{}.broadcast", self.name(x)), shape);
        self.push_node(
            BroadcastTo {
                shape: shape.to_vec(),
            },
            &[x],
            &[y],
        );
        Ok(y)
    }
}

impl Op for BroadcastTo {
    fn name(&self) -> &'static str {
        "broadcast_to"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (x, y) = (io.input(0), io.output(0));
        let s = Strided {
            shape: self.shape.clone(),
            src_strides: source_strides(cx.shape(x), &self.shape),
            src_offset: 0,
            dst_strides: contiguous_strides(&self.shape),
            dst_offset: 0,
        };
        cx.push(
            Step::new("broadcast_to", move |gpu, r| {
                Ok(vec![copy_strided(gpu, &r(x), &r(y), &s, false)?])
            })
            .reads([x])
            .writes([y]),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let x = io.input(0);
        match cx.grad_tensor(io.output(0))? {
            Some(dy) if cx.needs_grad(x) => contribute_reduced(cx, x, dy, None),
            _ => Ok(()),
        }
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let x = ins[0];
        let st = source_strides(&x.shape, &self.shape);
        let n = numel(&self.shape);
        let mut out = vec![0.0; n];
        for (i, o) in out.iter_mut().enumerate() {
            let (mut rem, mut src) = (i, 0);
            for d in (0..self.shape.len()).rev() {
                src += (rem % self.shape[d]) * st[d];
                rem /= self.shape[d];
            }
            *o = x.data[src];
        }
        Ok(vec![HostTensor::new(&self.shape, out)?])
    }
}
