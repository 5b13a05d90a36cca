//! Classification accuracy of logits [.., V] against integer targets, a
//! metric for reports (masked-token accuracy, image accuracy): the fraction
//! of counted rows whose largest logit is at the target. Piecewise constant,
//! so its gradient is zero: nothing flows back through it.

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::accuracy;
use crate::runtime::{numel, DType};

#[derive(Debug, Clone)]
pub struct Accuracy {
    pub ignore_index: i32,
}

impl Graph {
    /// Accuracy [1] of `logits` against `targets` (rows whose target is
    /// `ignore_index` or out of range are not counted).
    pub fn accuracy(
        &mut self,
        logits: TensorId,
        targets: TensorId,
        ignore_index: i32,
    ) -> Result<TensorId> {
        let ls = self.shape(logits).to_vec();
        let v = ls.last().copied().unwrap_or(0);
        ensure!(v > 0, "accuracy: logits {ls:?} need a class dimension");
        ensure!(
            numel(self.shape(targets)) == numel(&ls) / v && self.dtype(targets) == DType::I32,
            "accuracy: targets must be i32 with one per row of logits {ls:?}"
        );
        let acc = self.planned("accuracy", &[1]);
        self.push_node(Accuracy { ignore_index }, &[logits, targets], &[acc]);
        Ok(acc)
    }
}

impl Op for Accuracy {
    fn name(&self) -> &'static str {
        "accuracy"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (logits, targets, acc) = (io.input(0), io.input(1), io.output(0));
        let ignore = self.ignore_index;
        cx.push(
            Step::new("accuracy", move |gpu, r| {
                accuracy::accuracy(gpu, &r(logits), &r(targets), &r(acc), ignore)
            })
            .reads([logits, targets])
            .writes([acc]),
        );
        Ok(())
    }

    fn backward(&mut self, _: &NodeIo, _: &mut Backward<'_>) -> Result<()> {
        Ok(()) // zero almost everywhere
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let (logits, targets) = (ins[0], ins[1]);
        let v = logits.last_dim();
        let (mut hit, mut n) = (0usize, 0usize);
        for r in 0..logits.rows() {
            let t = targets.data[r] as i64;
            if t == self.ignore_index as i64 || t < 0 || t >= v as i64 {
                continue;
            }
            let row = &logits.data[r * v..(r + 1) * v];
            let arg = (0..v).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            n += 1;
            hit += (arg == t as usize) as usize;
        }
        Ok(vec![HostTensor::scalar(if n == 0 {
            0.0
        } else {
            hit as f64 / n as f64
        })])
    }
}
