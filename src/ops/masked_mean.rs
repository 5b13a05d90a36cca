//! Masked mean pooling over the sequence: x [B, T, C] and an i32 mask
//! [B, T] (nonzero = a real token, as Hugging Face's `attention_mask`) give
//! [B, C] = Σ_t mask·x / max(Σ_t mask, 1), the sentence-transformers
//! pooling. A row with no real token pools to 0 and passes no gradient.

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::pooling;
use crate::reference::pooling as r;
use crate::runtime::{numel, DType};

#[derive(Debug, Clone)]
pub struct MaskedMean;

impl Graph {
    /// The mean of x [B, T, C] over the positions where mask [B, T] (i32) is
    /// nonzero: [B, C] (0 for a row without any).
    pub fn masked_mean(&mut self, x: TensorId, mask: TensorId) -> Result<TensorId> {
        let s = self.shape(x).to_vec();
        ensure!(
            s.len() == 3,
            "masked_mean: x must be [B, T, C], {} is {s:?}",
            self.name(x)
        );
        ensure!(
            self.shape(mask) == [s[0], s[1]] && self.dtype(mask) == DType::I32,
            "masked_mean: the mask must be i32 [B, T] = [{}, {}], {} is {} {:?}",
            s[0],
            s[1],
            self.name(mask),
            self.dtype(mask).name(),
            self.shape(mask)
        );
        let y = self.planned(format!("{}.mean", self.name(x)), &[s[0], s[2]]);
        let scale = self.planned(format!("{}.mean_scale", self.name(x)), &[s[0]]);
        self.push_node(MaskedMean, &[x, mask], &[y, scale]);
        Ok(y)
    }
}

impl Op for MaskedMean {
    fn name(&self) -> &'static str {
        "masked_mean"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (x, mask, y, scale) = (io.input(0), io.input(1), io.output(0), io.output(1));
        let n = numel(cx.shape(x)) as u64;
        cx.push(
            Step::new("masked_mean", move |gpu, r| {
                Ok(vec![pooling::forward(
                    gpu,
                    &r(x),
                    &r(mask),
                    &r(y),
                    &r(scale),
                )?])
            })
            .reads([x, mask])
            .writes([y, scale])
            .flops(n),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let (x, mask, y, scale) = (io.input(0), io.input(1), io.output(0), io.output(1));
        ensure!(
            cx.grad(scale).is_none(),
            "masked_mean: its saved scale is not differentiable"
        );
        let Some(dy) = cx.grad_tensor(y)? else {
            return Ok(());
        };
        if !cx.needs_grad(x) {
            return Ok(());
        }
        let n = numel(cx.g.shape(x)) as u64;
        cx.contribute_overwrite(x, |dx| {
            Step::new("masked_mean_backward", move |gpu, r| {
                Ok(vec![pooling::backward(
                    gpu,
                    &r(mask),
                    &r(scale),
                    &r(dy),
                    &r(dx),
                )?])
            })
            .reads([mask, scale, dy])
            .writes([dx])
            .flops(n)
        })
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let (x, mask) = (ins[0], ins[1]);
        let (b, t, c) = (x.shape[0], x.shape[1], x.shape[2]);
        let (y, scale) = r::masked_mean(&x.data, &mask.data, b, t, c);
        Ok(vec![
            HostTensor::new(&[b, c], y)?,
            HostTensor::new(&[b], scale)?,
        ])
    }
}
