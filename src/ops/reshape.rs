//! Reshape: the same elements under another shape. A view, never a copy:
//! the output shares the input's memory, and its gradient is the output
//! gradient seen under the input's shape.

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::Lowering;
use crate::graph::{Graph, TensorId};
use crate::runtime::numel;

#[derive(Debug, Clone)]
pub struct Reshape {
    pub shape: Vec<usize>,
}

impl Graph {
    /// `x` seen as `shape` (same number of elements; no copy).
    pub fn reshape(&mut self, x: TensorId, shape: &[usize]) -> Result<TensorId> {
        ensure!(
            numel(shape) == self.desc(x).numel(),
            "reshape: {} {:?} has {} elements, {shape:?} needs {}",
            self.name(x),
            self.shape(x),
            self.desc(x).numel(),
            numel(shape)
        );
        let name = format!("{}.view", self.name(x));
        let y = self.view(x, 0, shape, name)?;
        self.push_node(
            Reshape {
                shape: shape.to_vec(),
            },
            &[x],
            &[y],
        );
        Ok(y)
    }
}

impl Op for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }

    fn lower(&self, _: &NodeIo, _: &mut Lowering<'_>) -> Result<()> {
        Ok(()) // a view: nothing to compute
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let x = io.input(0);
        if let Some(dy) = cx.grad_tensor(io.output(0))? {
            if cx.needs_grad(x) {
                cx.contribute(x, dy)?;
            }
        }
        Ok(())
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        Ok(vec![HostTensor::new(&self.shape, ins[0].data.clone())?])
    }
}
