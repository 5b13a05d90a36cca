//! One row per sequence by an index tensor: x [B, T, C], idx [B] (i32) →
//! out [B, C] with out[b] = x[b, idx[b]] (CLS pooling with idx = 0, EOS
//! pooling with idx = the position of the end-of-text token). An index
//! outside [0, T) gives a zero row and no gradient. The backward writes
//! dout[b] into row idx[b] of a zero d(x) (or adds it into an existing one).

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::scatter;
use crate::runtime::DType;

#[derive(Debug, Clone)]
pub struct GatherRow;

impl Graph {
    /// x[b, idx[b], :] for x [B, T, C] and idx [B] (i32): [B, C].
    pub fn gather_row(&mut self, x: TensorId, idx: TensorId) -> Result<TensorId> {
        let (xs, is) = (self.shape(x).to_vec(), self.shape(idx).to_vec());
        ensure!(
            xs.len() == 3 && xs.iter().all(|&d| d > 0),
            "gather_row: x must be [B, T, C], got {xs:?}"
        );
        ensure!(
            self.dtype(idx) == DType::I32 && is == [xs[0]],
            "gather_row: idx must be i32 [{}] (one position per sequence of x {xs:?}), got {} {is:?}",
            xs[0],
            self.dtype(idx).name()
        );
        let name = format!("{}.row", self.name(x));
        let out = self.planned_typed(name, &[xs[0], xs[2]], self.dtype(x));
        self.push_node(GatherRow, &[x, idx], &[out]);
        Ok(out)
    }
}

impl Op for GatherRow {
    fn name(&self) -> &'static str {
        "gather_row"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (x, idx, out) = (io.input(0), io.input(1), io.output(0));
        let [b, _, c] = *cx.shape(x) else {
            unreachable!("checked by the builder")
        };
        cx.push(
            Step::new("gather_rows", move |gpu, r| {
                Ok(vec![scatter::gather_rows_grouped(
                    gpu,
                    &r(idx).reshape(&[b, 1])?,
                    &r(x),
                    &r(out).reshape(&[b, 1, c])?,
                    false,
                )?])
            })
            .reads([x, idx])
            .writes([out]),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let (x, idx) = (io.input(0), io.input(1));
        if !cx.needs_grad(x) {
            return Ok(());
        }
        let Some(dy) = cx.grad_tensor(io.output(0))? else {
            return Ok(());
        };
        let [b, _, c] = *cx.g.shape(x) else {
            unreachable!("checked by the builder")
        };
        cx.contribute_with(x, |t, accumulate| {
            let s = Step::new("put_rows", move |gpu, r| {
                Ok(vec![scatter::put_rows_grouped(
                    gpu,
                    &r(idx).reshape(&[b, 1])?,
                    &r(dy).reshape(&[b, 1, c])?,
                    &r(t),
                    accumulate,
                )?])
            })
            .reads([idx, dy]);
            if accumulate {
                s.accumulates([t])
            } else {
                s.writes([t])
            }
        })
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let (x, idx) = (ins[0], ins[1]);
        let (b, t, c) = (x.shape[0], x.shape[1], x.shape[2]);
        let mut out = vec![0.0; b * c];
        for bi in 0..b {
            let i = idx.data[bi];
            if i >= 0.0 && (i as usize) < t {
                let row = (bi * t + i as usize) * c;
                out[bi * c..(bi + 1) * c].copy_from_slice(&x.data[row..row + c]);
            }
        }
        Ok(vec![HostTensor::new(&[b, c], out)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{Graph, GraphOptions, Init};
    use crate::runtime::DType;

    #[test]
    fn gather_row_shapes_and_errors() {
        let mut g = Graph::new(GraphOptions::default());
        let x = g.param("x", &[3, 5, 4], Init::Zeros).unwrap();
        let idx = g.input("eos", &[3], DType::I32);
        let y = g.gather_row(x, idx).unwrap();
        assert_eq!(g.shape(y), [3, 4]);
        let bad = g.input("bad", &[3, 1], DType::I32);
        let err = g.gather_row(x, bad).unwrap_err().to_string();
        assert!(err.contains("i32 [3]"), "{err}");
        let fidx = g.input("f", &[3], DType::F32);
        assert!(g.gather_row(x, fidx).is_err());
    }
}
