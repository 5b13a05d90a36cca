//! Concatenation along a dimension of tensors of the same rank, equal in
//! every other dimension (a CLS token in front of patch embeddings: [B, 1,
//! C] ++ [B, N, C] → [B, N + 1, C]). One strided copy per input places it
//! in the output; the gradient of each input is its slice of d(out).

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::layout;
use crate::reference::layout as reference;

#[derive(Debug, Clone)]
pub struct Concat {
    pub dim: usize,
}

impl Graph {
    /// `parts` joined along `dim`.
    pub fn concat(&mut self, parts: &[TensorId], dim: usize) -> Result<TensorId> {
        ensure!(!parts.is_empty(), "concat: nothing to concatenate");
        let first = self.shape(parts[0]).to_vec();
        let dtype = self.dtype(parts[0]);
        ensure!(
            dim < first.len(),
            "concat: dimension {dim} of {} {first:?}",
            self.name(parts[0])
        );
        ensure!(
            first.len() <= layout::MAX_RANK,
            "concat: {} dimensions; at most {} are supported",
            first.len(),
            layout::MAX_RANK
        );
        let mut shape = first.clone();
        shape[dim] = 0;
        for &p in parts {
            let s = self.shape(p);
            ensure!(
                s.len() == first.len()
                    && (0..s.len()).all(|d| d == dim || s[d] == first[d])
                    && self.dtype(p) == dtype,
                "concat along dimension {dim}: {} {} {s:?} does not match {} {} {first:?} \
                 (same rank, type and sizes but along {dim})",
                self.name(p),
                self.dtype(p).name(),
                self.name(parts[0]),
                dtype.name()
            );
            shape[dim] += s[dim];
        }
        let out = self.planned_typed("concat", &shape, dtype);
        self.push_node(Concat { dim }, parts, &[out]);
        Ok(out)
    }
}

impl Op for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let out = io.output(0);
        let dim = self.dim;
        let mut starts = Vec::new();
        let mut at = 0;
        for &p in &io.inputs {
            starts.push((p, at));
            at += cx.shape(p)[dim];
        }
        cx.push(
            Step::new("concat", move |gpu, r| {
                let o = r(out);
                starts
                    .iter()
                    .map(|&(p, s)| layout::place(gpu, &r(p), dim, s, &o, false))
                    .collect()
            })
            .reads(io.inputs.clone())
            .writes([out]),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let Some(dy) = cx.grad_tensor(io.output(0))? else {
            return Ok(());
        };
        let dim = self.dim;
        let mut start = 0;
        for &p in &io.inputs {
            let len = cx.g.shape(p)[dim];
            let s0 = start;
            start += len;
            if !cx.needs_grad(p) {
                continue;
            }
            cx.contribute_with(p, |t, accumulate| {
                let s = Step::new("slice", move |gpu, r| {
                    Ok(vec![layout::slice(
                        gpu,
                        &r(dy),
                        dim,
                        s0,
                        &r(t),
                        accumulate,
                    )?])
                })
                .reads([dy]);
                if accumulate {
                    s.accumulates([t])
                } else {
                    s.writes([t])
                }
            })?;
        }
        Ok(())
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let parts: Vec<&[f64]> = ins.iter().map(|t| t.data.as_slice()).collect();
        let shapes: Vec<Vec<usize>> = ins.iter().map(|t| t.shape.clone()).collect();
        let mut shape = shapes[0].clone();
        shape[self.dim] = shapes.iter().map(|s| s[self.dim]).sum();
        let out = reference::concat(&parts, &shapes, self.dim);
        Ok(vec![HostTensor::new(&shape, out)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{Graph, GraphOptions, Init};

    #[test]
    fn concat_checks_shapes_and_one_input_twice_accumulates() {
        let mut g = Graph::new(GraphOptions::default());
        let cls = g.param("cls", &[2, 1, 8], Init::Zeros).unwrap();
        let x = g.param("x", &[2, 5, 8], Init::Zeros).unwrap();
        let y = g.concat(&[cls, x, cls], 1).unwrap();
        assert_eq!(g.shape(y), [2, 7, 8]);
        let bad = g.param("bad", &[2, 5, 7], Init::Zeros).unwrap();
        let err = g.concat(&[x, bad], 1).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        let err = g.concat(&[], 0).unwrap_err().to_string();
        assert!(err.contains("nothing"), "{err}");
        let flat = g.reshape(y, &[112]).unwrap();
        let l = g.slice(flat, 0, 0, 1).unwrap();
        g.backward(&[(l, 1.0)], 1.0).unwrap();
        // cls appears twice: two slices of d(y) both add into its gradient.
        let dcls = g.param_grads[&cls];
        let adds = g
            .steps
            .iter()
            .filter(|s| s.name == "slice" && s.accumulates.contains(&dcls))
            .count();
        assert_eq!(adds, 2);
    }
}
