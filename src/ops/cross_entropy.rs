//! Mean cross-entropy of logits [.., V] against integer targets (one per
//! row), ignoring rows whose target is `ignore_index` or outside [0, V):
//! works for a language model's [B, T, V] and a CLIP similarity matrix
//! [B, B] alike. Outputs the mean loss [1] and the per-row losses.
//!
//! When the loss is a loss of the graph (its gradient a constant), the
//! forward kernel also writes d(logits) = c·(softmax − onehot)/count in the
//! same pass, as llm.c does: no backward kernel at all.

use anyhow::{bail, ensure, Result};

use crate::graph::autodiff::{Backward, Grad};
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::crossentropy;
use crate::runtime::{numel, DType};

#[derive(Debug, Clone)]
pub struct CrossEntropy {
    pub ignore_index: i32,
    /// Set by the gradient rule: the forward also writes d(logits) here,
    /// scaled by this constant.
    fused_grad: Option<(TensorId, f32)>,
}

impl Graph {
    /// Mean cross-entropy; returns the loss tensor [1].
    pub fn cross_entropy(
        &mut self,
        logits: TensorId,
        targets: TensorId,
        ignore_index: i32,
    ) -> Result<TensorId> {
        let ls = self.shape(logits).to_vec();
        let v = ls.last().copied().unwrap_or(0);
        ensure!(
            v > 0 && !ls.is_empty(),
            "cross_entropy: logits {ls:?} need a last (class) dimension ≥ 1"
        );
        let rows = numel(&ls) / v;
        ensure!(
            numel(self.shape(targets)) == rows,
            "cross_entropy: {} targets for {rows} rows of logits {ls:?}",
            numel(self.shape(targets))
        );
        ensure!(
            self.dtype(targets) == DType::I32,
            "cross_entropy: targets must be i32 class ids, are {}",
            self.dtype(targets).name()
        );
        let loss = self.planned("loss", &[1]);
        let losses = self.planned("losses", &[rows]);
        self.push_node(
            CrossEntropy {
                ignore_index,
                fused_grad: None,
            },
            &[logits, targets],
            &[loss, losses],
        );
        Ok(loss)
    }
}

impl Op for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (logits, targets, loss, losses) =
            (io.input(0), io.input(1), io.output(0), io.output(1));
        let ignore = self.ignore_index;
        let (dl, scale) = match self.fused_grad {
            Some((d, s)) => (Some(d), s),
            None => (None, 1.0),
        };
        let n = cx.g.desc(logits).numel() as u64;
        cx.push(
            Step::new("cross_entropy", move |gpu, r| {
                let d = dl.map(r);
                crossentropy::cross_entropy(
                    gpu,
                    &r(logits),
                    &r(targets),
                    &r(losses),
                    &r(loss),
                    d.as_ref(),
                    ignore,
                    scale,
                )
            })
            .reads([logits, targets])
            .writes([losses, loss])
            .writes(dl)
            .flops(5 * n),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let logits = io.input(0);
        if !cx.needs_grad(logits) {
            return Ok(());
        }
        match cx.grad(io.output(0)) {
            None => Ok(()),
            Some(Grad::Const(c)) => {
                let shape = cx.g.shape(logits).to_vec();
                let dl = cx.temp("grad.logits", &shape, DType::F32);
                self.fused_grad = Some((dl, c));
                cx.contribute(logits, dl)
            }
            Some(Grad::Tensor(_)) => bail!(
                "cross_entropy: the loss feeds another computation; give it to backward \
                 as a weighted loss instead (its gradient must be a constant)"
            ),
        }
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let (logits, targets) = (ins[0], ins[1]);
        let v = logits.last_dim();
        let rows = logits.rows();
        let mut losses = vec![0.0; rows];
        let mut count = 0usize;
        for (r, loss) in losses.iter_mut().enumerate() {
            let t = targets.data[r] as i64;
            if t == self.ignore_index as i64 || t < 0 || t >= v as i64 {
                continue;
            }
            let row = &logits.data[r * v..(r + 1) * v];
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            *loss = lse - row[t as usize];
            count += 1;
        }
        let mean = if count == 0 {
            0.0
        } else {
            losses.iter().sum::<f64>() / count as f64
        };
        Ok(vec![
            HostTensor::scalar(mean),
            HostTensor::new(&[rows], losses)?,
        ])
    }
}
