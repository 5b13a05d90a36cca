//! Mean squared error between two tensors of one shape, mean over every
//! element (PyTorch's `F.mse_loss(a, b)`): a loss [1], with a gradient to
//! both operands.
//!
//! As a loss of the graph (its gradient a constant), the forward kernel
//! also writes d`a` = c·2(a − b)/n and d`b` = −d`a` in the same pass: no
//! backward kernel at all.

use anyhow::{bail, ensure, Result};

use crate::graph::autodiff::{Backward, Grad};
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::mse::{self, MseGrads};
use crate::reference::losses as r;
use crate::runtime::{numel, DType};

#[derive(Debug, Clone, Default)]
pub struct MseLoss {
    /// Set by the gradient rule: the forward also writes d`a` and/or d`b`
    /// here, for the constant loss gradient `seed`.
    fused_grad: Option<(Option<TensorId>, Option<TensorId>, f32)>,
}

impl Graph {
    /// mean((a − b)²) over all elements; returns the loss tensor [1].
    pub fn mse_loss(&mut self, a: TensorId, b: TensorId) -> Result<TensorId> {
        ensure!(
            self.shape(a) == self.shape(b),
            "mse_loss: shapes {:?} ({}) and {:?} ({}) differ",
            self.shape(a),
            self.name(a),
            self.shape(b),
            self.name(b)
        );
        ensure!(
            numel(self.shape(a)) > 0,
            "mse_loss: {} is empty",
            self.name(a)
        );
        let loss = self.planned("mse_loss", &[1]);
        self.push_node(MseLoss::default(), &[a, b], &[loss]);
        Ok(loss)
    }
}

impl Op for MseLoss {
    fn name(&self) -> &'static str {
        "mse_loss"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (a, b, loss) = (io.input(0), io.input(1), io.output(0));
        let (da, db, seed) = self.fused_grad.unwrap_or((None, None, 0.0));
        let n = numel(cx.shape(a)) as u64;
        cx.push(
            Step::new("mse_loss", move |gpu, r| {
                let (ta, tb) = (da.map(r), db.map(r));
                mse::mse(
                    gpu,
                    &r(a),
                    &r(b),
                    &r(loss),
                    MseGrads {
                        da: ta.as_ref(),
                        db: tb.as_ref(),
                        seed,
                    },
                )
            })
            .reads([a, b])
            .writes([loss])
            .writes(da)
            .writes(db)
            .flops(3 * n),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let (a, b) = (io.input(0), io.input(1));
        let (na, nb) = (cx.needs_grad(a), cx.needs_grad(b));
        if !na && !nb {
            return Ok(());
        }
        match cx.grad(io.output(0)) {
            None => Ok(()),
            Some(Grad::Const(c)) => {
                let shape = cx.g.shape(a).to_vec();
                let da = na.then(|| cx.temp("grad.mse.a", &shape, DType::F32));
                let db = nb.then(|| cx.temp("grad.mse.b", &shape, DType::F32));
                self.fused_grad = Some((da, db, c));
                if let Some(da) = da {
                    cx.contribute(a, da)?;
                }
                if let Some(db) = db {
                    cx.contribute(b, db)?;
                }
                Ok(())
            }
            Some(Grad::Tensor(_)) => bail!(
                "mse_loss: the loss feeds another computation; give it to backward as a \
                 weighted loss instead (its gradient must be a constant)"
            ),
        }
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let (loss, _) = r::mse(&ins[0].data, &ins[1].data);
        Ok(vec![HostTensor::scalar(loss)])
    }
}
