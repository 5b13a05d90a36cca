//! Elementwise addition of two tensors of the same shape (the residual
//! connection). Its gradient passes through: the first operand's gradient
//! is the output's, without a copy.

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::elementwise;

#[derive(Debug, Clone)]
pub struct Add;

impl Graph {
    /// a + b, same shapes.
    pub fn add(&mut self, a: TensorId, b: TensorId) -> Result<TensorId> {
        ensure!(
            self.shape(a) == self.shape(b),
            "add: shapes {:?} ({}) and {:?} ({}) differ",
            self.shape(a),
            self.name(a),
            self.shape(b),
            self.name(b)
        );
        let shape = self.shape(a).to_vec();
        let out = self.planned("residual", &shape);
        self.push_node(Add, &[a, b], &[out]);
        Ok(out)
    }
}

impl Op for Add {
    fn name(&self) -> &'static str {
        "add"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (a, b, out) = (io.input(0), io.input(1), io.output(0));
        cx.push(
            Step::new("add", move |gpu, r| {
                Ok(vec![elementwise::add(gpu, &r(a), &r(b), &r(out))?])
            })
            .reads([a, b])
            .writes([out]),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let Some(dy) = cx.grad_tensor(io.output(0))? else {
            return Ok(());
        };
        for x in [io.input(0), io.input(1)] {
            if cx.needs_grad(x) {
                cx.contribute(x, dy)?;
            }
        }
        Ok(())
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let data = ins[0]
            .data
            .iter()
            .zip(&ins[1].data)
            .map(|(x, y)| x + y)
            .collect();
        Ok(vec![HostTensor::new(&ins[0].shape, data)?])
    }
}
