//! Slice along a dimension: x[.., start .. start + len, ..]. When the slice
//! is one contiguous block starting on a 256-byte boundary (a slice of the
//! leading dimension, or the whole tensor) it is a view, no copy; otherwise
//! a strided copy (`kernels::layout`). The gradient writes d(out) into its
//! region of d(x), zero elsewhere (or adds it into an existing d(x)).

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::{elementwise, layout};
use crate::reference::layout as reference;
use crate::runtime::pool::ALIGN;

#[derive(Debug, Clone)]
pub struct Slice {
    pub dim: usize,
    pub start: usize,
    pub len: usize,
    /// The output is a view of the input (nothing to compute).
    pub view: bool,
}

impl Graph {
    /// x[.., start .. start + len, ..] along `dim` (same rank as x).
    pub fn slice(&mut self, x: TensorId, dim: usize, start: usize, len: usize) -> Result<TensorId> {
        let shape = self.shape(x).to_vec();
        ensure!(
            dim < shape.len(),
            "slice: dimension {dim} of {} {shape:?}",
            self.name(x)
        );
        ensure!(
            len > 0 && start + len <= shape[dim],
            "slice: [{start}, {}) is not a non-empty range of dimension {dim} of {} {shape:?}",
            start + len,
            self.name(x)
        );
        ensure!(
            shape.len() <= layout::MAX_RANK,
            "slice: {} dimensions; at most {} are supported",
            shape.len(),
            layout::MAX_RANK
        );
        let mut out_shape = shape.clone();
        out_shape[dim] = len;
        let name = format!("{}[{dim}:{start}+{len}]", self.name(x));
        // Contiguous: nothing before `dim` varies, or the slice is all of x.
        let contiguous = shape[..dim].iter().all(|&d| d == 1) || len == shape[dim];
        let offset = start * layout::contiguous_strides(&shape)[dim];
        let bytes = (self.root_offset(x) + offset) * self.dtype(x).size();
        let view = contiguous && bytes.is_multiple_of(ALIGN as usize);
        let out = if view {
            self.view(x, offset, &out_shape, name)?
        } else {
            self.planned_typed(name, &out_shape, self.dtype(x))
        };
        self.push_node(
            Slice {
                dim,
                start,
                len,
                view,
            },
            &[x],
            &[out],
        );
        Ok(out)
    }

    /// x[.., index, ..] along `dim`, that dimension dropped (a slice of
    /// length 1, then a reshape).
    pub fn select(&mut self, x: TensorId, dim: usize, index: usize) -> Result<TensorId> {
        let s = self.slice(x, dim, index, 1)?;
        let mut shape = self.shape(x).to_vec();
        shape.remove(dim);
        if shape.is_empty() {
            shape.push(1);
        }
        self.reshape(s, &shape)
    }
}

impl Op for Slice {
    fn name(&self) -> &'static str {
        "slice"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        if self.view {
            return Ok(());
        }
        let (x, out) = (io.input(0), io.output(0));
        let (dim, start) = (self.dim, self.start);
        cx.push(
            Step::new("slice", move |gpu, r| {
                Ok(vec![layout::slice(gpu, &r(x), dim, start, &r(out), false)?])
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
        let (dim, start) = (self.dim, self.start);
        cx.contribute_with(x, |t, accumulate| {
            let s = Step::new("place", move |gpu, r| {
                let dx = r(t);
                let mut d = Vec::new();
                if !accumulate {
                    d.push(elementwise::fill(gpu, &dx, 0.0)?);
                }
                d.push(layout::place(gpu, &r(dy), dim, start, &dx, accumulate)?);
                Ok(d)
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
        let mut shape = x.shape.clone();
        shape[self.dim] = self.len;
        let out = reference::slice(&x.data, &x.shape, self.dim, self.start, self.len);
        Ok(vec![HostTensor::new(&shape, out)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{Graph, GraphOptions, Init};

    #[test]
    fn a_contiguous_aligned_slice_is_a_view_any_other_a_copy() {
        let mut g = Graph::new(GraphOptions::default());
        let x = g.param("x", &[4, 3, 64], Init::Zeros).unwrap();
        // Rows 2..4 of the leading dimension start at 2·192·4 bytes: a view.
        let a = g.slice(x, 0, 2, 2).unwrap();
        assert_eq!(g.desc(a).view.map(|v| (v.base, v.offset)), Some((x, 384)));
        // Row 1 starts at 768 bytes: a view; a slice of a later dimension,
        // or an unaligned start, is a copy.
        let b = g.slice(x, 0, 1, 1).unwrap();
        assert!(g.desc(b).view.is_some());
        let c = g.slice(x, 1, 1, 1).unwrap();
        assert!(g.desc(c).view.is_none());
        let flat = g.reshape(x, &[768]).unwrap();
        let d = g.slice(flat, 0, 3, 5).unwrap();
        assert!(g.desc(d).view.is_none());
        // The whole tensor is a view.
        let e = g.slice(x, 2, 0, 64).unwrap();
        assert_eq!(g.desc(e).view.map(|v| v.offset), Some(0));
        let s = g.select(x, 1, 2).unwrap();
        assert_eq!(g.shape(s), [4, 64]);
        let err = g.slice(x, 1, 2, 2).unwrap_err().to_string();
        assert!(
            err.contains("[2, 4)") && err.contains("dimension 1"),
            "{err}"
        );
        let err = g.slice(x, 3, 0, 1).unwrap_err().to_string();
        assert!(err.contains("dimension 3"), "{err}");
    }

    #[test]
    fn the_gradient_of_a_slice_is_zero_filled_once_then_added_into() {
        // x feeds two slices: d(x) is created (zero + place) then added to.
        let mut g = Graph::new(GraphOptions::default());
        let x = g.param("x", &[2, 3], Init::Zeros).unwrap();
        let y = g.linear(x, x, None, true).unwrap(); // [2, 2], needs a gradient
        let a = g.slice(y, 1, 0, 1).unwrap();
        let b = g.slice(y, 1, 1, 1).unwrap();
        let s = g.add(a, b).unwrap();
        let l = g.reshape(s, &[2]).unwrap();
        let l = g.slice(l, 0, 0, 1).unwrap();
        g.backward(&[(l, 1.0)], 1.0).unwrap();
        let places: Vec<(bool, bool)> = g
            .steps
            .iter()
            .filter(|s| s.name == "place")
            .map(|s| (!s.writes.is_empty(), !s.accumulates.is_empty()))
            .collect();
        // The last slice's, then the two of y: one fresh, one accumulating.
        assert_eq!(places.len(), 3);
        assert!(places.contains(&(false, true)));
    }
}
