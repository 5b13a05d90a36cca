//! Patchify: NCHW images [B, C, H, W] into rows of p×p patches [B, N,
//! C·p·p], N = (H/p)·(W/p) in row-major patch order, each row ordered
//! (c, ky, kx) as PyTorch flattens a Conv2d weight [out, C, p, p]; so a
//! stride-p, size-p convolution (a ViT's patch embedding) is `patchify` then
//! `linear` with the weight seen as [out, C·p·p] (transposed). H and W must
//! be multiples of p. The gradient puts the rows back (unpatchify).

use anyhow::Result;

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::layout;
use crate::reference::layout as reference;

#[derive(Debug, Clone)]
pub struct Patchify {
    pub patch: usize,
}

impl Graph {
    /// Images x [B, C, H, W] → patch rows [B, (H/p)·(W/p), C·p·p].
    pub fn patchify(&mut self, x: TensorId, patch: usize) -> Result<TensorId> {
        let shape = layout::patch_shape("patchify", self.shape(x), patch)?;
        let name = format!("{}.patches", self.name(x));
        let out = self.planned_typed(name, &shape, self.dtype(x));
        self.push_node(Patchify { patch }, &[x], &[out]);
        Ok(out)
    }
}

impl Op for Patchify {
    fn name(&self) -> &'static str {
        "patchify"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (x, out) = (io.input(0), io.output(0));
        let p = self.patch;
        cx.push(
            Step::new("patchify", move |gpu, r| {
                Ok(vec![layout::patchify(gpu, &r(x), p, &r(out), false)?])
            })
            .reads([x])
            .writes([out]),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let x = io.input(0);
        if !cx.needs_grad(x) {
            return Ok(());
        }
        let Some(dy) = cx.grad_tensor(io.output(0))? else {
            return Ok(());
        };
        let p = self.patch;
        cx.contribute_with(x, |t, accumulate| {
            let s = Step::new("unpatchify", move |gpu, r| {
                Ok(vec![layout::unpatchify(gpu, &r(dy), p, &r(t), accumulate)?])
            })
            .reads([dy]);
            if accumulate {
                s.accumulates([t])
            } else {
                s.writes([t])
            }
        })
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let x = ins[0];
        let [b, c, h, w] = layout::patch_dims("patchify", &x.shape, self.patch)?;
        let shape = layout::patch_shape("patchify", &x.shape, self.patch)?;
        let out = reference::patchify(&x.data, [b, c, h, w], self.patch);
        Ok(vec![HostTensor::new(&shape, out)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{Graph, GraphOptions, Init};

    #[test]
    fn patchify_shapes_and_errors() {
        let mut g = Graph::new(GraphOptions::default());
        let x = g.param("x", &[2, 3, 8, 12], Init::Zeros).unwrap();
        let rows = g.patchify(x, 4).unwrap();
        assert_eq!(g.shape(rows), [2, 6, 48]);
        let err = g.patchify(x, 5).unwrap_err().to_string();
        assert!(
            err.contains("H = 8 and W = 12 must be positive multiples of 5"),
            "{err}"
        );
        let flat = g.reshape(x, &[6, 96]).unwrap();
        let err = g.patchify(flat, 2).unwrap_err().to_string();
        assert!(err.contains("[B, C, H, W]"), "{err}");
    }
}
