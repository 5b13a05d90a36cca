//! Axis permutation (rank ≤ 6): out.shape[i] = x.shape[perm[i]] (e.g.
//! transposing a [B, B] similarity matrix for CLIP's second cross-entropy
//! direction). A permutation that keeps the order of the axes longer than 1
//! moves no element and is a reshape (a view); any other is a strided copy
//! (`kernels::layout`). The gradient is the inverse permutation of d(out).

use anyhow::Result;

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::layout;
use crate::reference::layout as reference;

#[derive(Debug, Clone)]
pub struct Permute {
    pub perm: Vec<usize>,
}

impl Graph {
    /// x with its axes permuted: out.shape[i] = x.shape[perm[i]].
    pub fn permute(&mut self, x: TensorId, perm: &[usize]) -> Result<TensorId> {
        let xs = self.shape(x).to_vec();
        layout::check_perm("permute", perm, xs.len())?;
        let shape: Vec<usize> = perm.iter().map(|&a| xs[a]).collect();
        let moved: Vec<usize> = perm.iter().copied().filter(|&a| xs[a] > 1).collect();
        if moved.windows(2).all(|w| w[0] < w[1]) {
            return self.reshape(x, &shape);
        }
        let name = format!("{}.permute", self.name(x));
        let out = self.planned_typed(name, &shape, self.dtype(x));
        self.push_node(
            Permute {
                perm: perm.to_vec(),
            },
            &[x],
            &[out],
        );
        Ok(out)
    }

    /// x with axes `a` and `b` swapped.
    pub fn transpose(&mut self, x: TensorId, a: usize, b: usize) -> Result<TensorId> {
        let mut perm: Vec<usize> = (0..self.shape(x).len()).collect();
        anyhow::ensure!(
            a < perm.len() && b < perm.len(),
            "transpose: axes {a} and {b} of {} {:?}",
            self.name(x),
            self.shape(x)
        );
        perm.swap(a, b);
        self.permute(x, &perm)
    }
}

impl Op for Permute {
    fn name(&self) -> &'static str {
        "permute"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (x, out) = (io.input(0), io.output(0));
        let perm = self.perm.clone();
        let n = cx.g.desc(x).numel();
        cx.push(
            Step::new("permute", move |gpu, r| {
                Ok(vec![layout::permute(gpu, &r(x), &perm, &r(out), false)?])
            })
            .reads([x])
            .writes([out])
            .detail(format!("{n} elements")),
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
        let inv = layout::inverse_perm(&self.perm);
        cx.contribute_with(x, |t, accumulate| {
            let s = Step::new("permute", move |gpu, r| {
                Ok(vec![layout::permute(gpu, &r(dy), &inv, &r(t), accumulate)?])
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
        let shape: Vec<usize> = self.perm.iter().map(|&a| x.shape[a]).collect();
        let out = reference::permute(&x.data, &x.shape, &self.perm);
        Ok(vec![HostTensor::new(&shape, out)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{Graph, GraphOptions, Init};

    #[test]
    fn moving_only_size_one_axes_is_a_view() {
        let mut g = Graph::new(GraphOptions::default());
        let x = g.param("x", &[1, 3, 1, 4], Init::Zeros).unwrap();
        let v = g.permute(x, &[1, 0, 3, 2]).unwrap();
        assert_eq!(g.shape(v), [3, 1, 4, 1]);
        assert!(g.desc(v).view.is_some());
        assert_eq!(g.nodes.last().unwrap().op.name(), "reshape");
        let t = g.transpose(x, 1, 3).unwrap();
        assert_eq!(g.shape(t), [1, 4, 1, 3]);
        assert!(g.desc(t).view.is_none());
        assert_eq!(g.nodes.last().unwrap().op.name(), "permute");
        let err = g.permute(x, &[0, 1, 1, 2]).unwrap_err().to_string();
        assert!(err.contains("not a permutation"), "{err}");
        let err = g.transpose(x, 0, 4).unwrap_err().to_string();
        assert!(err.contains("axes 0 and 4"), "{err}");
    }
}
