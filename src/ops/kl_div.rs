//! Knowledge-distillation loss between student and teacher logits at a
//! temperature τ: τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ)), summed
//! over the classes (last dimension) and averaged over rows — PyTorch's
//! `F.kl_div(F.log_softmax(s/τ, -1), F.softmax(t/τ, -1),
//! reduction="batchmean")·τ²` for [rows, V] logits (for more dimensions
//! every leading one counts as rows: reshape to [N, V] first to match
//! PyTorch, whose batchmean divides by the first dimension only). Outputs
//! the loss [1] and the per-row losses.
//!
//! Gradients go to the student and, when it needs one, the teacher; as a
//! loss of the graph (a constant gradient) the forward kernel writes them
//! in the same pass, as cross-entropy does.

use anyhow::{bail, ensure, Result};

use crate::graph::autodiff::{Backward, Grad};
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::kldiv::{self, KlGrads};
use crate::reference::losses as r;
use crate::runtime::{numel, DType};

#[derive(Debug, Clone)]
pub struct KlDiv {
    pub tau: f32,
    /// Set by the gradient rule: d(student), d(teacher), constant seed.
    fused_grad: Option<(Option<TensorId>, Option<TensorId>, f32)>,
}

impl Graph {
    /// τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ)), mean over rows;
    /// returns the loss tensor [1].
    pub fn kl_div(&mut self, student: TensorId, teacher: TensorId, tau: f32) -> Result<TensorId> {
        let s = self.shape(student).to_vec();
        ensure!(
            self.shape(teacher) == s,
            "kl_div: student {s:?} ({}) and teacher {:?} ({}) differ in shape",
            self.name(student),
            self.shape(teacher),
            self.name(teacher)
        );
        let v = s.last().copied().unwrap_or(0);
        ensure!(
            v > 0 && numel(&s) > 0,
            "kl_div: logits {s:?} need a class dimension ≥ 1 and at least one row"
        );
        ensure!(
            tau.is_finite() && tau > 0.0,
            "kl_div: the temperature must be finite and > 0, got {tau}"
        );
        let rows = numel(&s) / v;
        let loss = self.planned("kl_loss", &[1]);
        let losses = self.planned("kl_losses", &[rows]);
        self.push_node(
            KlDiv {
                tau,
                fused_grad: None,
            },
            &[student, teacher],
            &[loss, losses],
        );
        Ok(loss)
    }
}

impl Op for KlDiv {
    fn name(&self) -> &'static str {
        "kl_div"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (s, t, loss, losses) = (io.input(0), io.input(1), io.output(0), io.output(1));
        let (ds, dt, seed) = self.fused_grad.unwrap_or((None, None, 0.0));
        let tau = self.tau;
        let n = numel(cx.shape(s)) as u64;
        cx.push(
            Step::new("kl_div", move |gpu, r| {
                let (tds, tdt) = (ds.map(r), dt.map(r));
                kldiv::kl_div(
                    gpu,
                    &r(s),
                    &r(t),
                    tau,
                    &r(losses),
                    &r(loss),
                    KlGrads {
                        ds: tds.as_ref(),
                        dt: tdt.as_ref(),
                        seed,
                    },
                )
            })
            .reads([s, t])
            .writes([losses, loss])
            .writes(ds)
            .writes(dt)
            .flops(12 * n),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let (s, t) = (io.input(0), io.input(1));
        let (ns, nt) = (cx.needs_grad(s), cx.needs_grad(t));
        if !ns && !nt {
            return Ok(());
        }
        ensure!(
            cx.grad(io.output(1)).is_none(),
            "kl_div: the per-row losses are not differentiable; use the mean loss"
        );
        match cx.grad(io.output(0)) {
            None => Ok(()),
            Some(Grad::Const(c)) => {
                let shape = cx.g.shape(s).to_vec();
                let ds = ns.then(|| cx.temp("grad.kl.student", &shape, DType::F32));
                let dt = nt.then(|| cx.temp("grad.kl.teacher", &shape, DType::F32));
                self.fused_grad = Some((ds, dt, c));
                if let Some(ds) = ds {
                    cx.contribute(s, ds)?;
                }
                if let Some(dt) = dt {
                    cx.contribute(t, dt)?;
                }
                Ok(())
            }
            Some(Grad::Tensor(_)) => bail!(
                "kl_div: the loss feeds another computation; give it to backward as a \
                 weighted loss instead (its gradient must be a constant)"
            ),
        }
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let (s, t) = (ins[0], ins[1]);
        let v = s.last_dim();
        let (loss, losses, _, _) = r::kl_div(&s.data, &t.data, v, self.tau as f64);
        Ok(vec![
            HostTensor::scalar(loss),
            HostTensor::new(&[s.rows()], losses)?,
        ])
    }
}
