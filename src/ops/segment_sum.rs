//! Segment sum (scatter-add of rows by an index tensor; message passing on
//! graphs): out[s, :] = Σ x[i, :] over the i with idx[i] = s, for S
//! segments. An index outside [0, S) drops its row. Deterministic without
//! atomics: the indices are sorted once and each segment summed in
//! increasing position order (`kernels::scatter`). Its gradient gathers
//! rows: dx[i] = dout[idx[i]] (zero for a dropped row).

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::scatter;
use crate::runtime::DType;

#[derive(Debug, Clone)]
pub struct SegmentSum {
    pub segments: usize,
}

impl Graph {
    /// Σ of the rows of `x` (shape S ++ [C]) by `idx` (i32, shape S) into
    /// `segments` rows: [segments, C].
    pub fn segment_sum(&mut self, x: TensorId, idx: TensorId, segments: usize) -> Result<TensorId> {
        let (xs, is) = (self.shape(x).to_vec(), self.shape(idx).to_vec());
        ensure!(
            self.dtype(idx) == DType::I32,
            "segment_sum: indices must be i32, got {}",
            self.dtype(idx).name()
        );
        ensure!(
            !is.is_empty() && xs.len() == is.len() + 1 && xs[..is.len()] == is[..],
            "segment_sum: x {xs:?} must be the index shape {is:?} plus a row dimension"
        );
        ensure!(
            segments > 0 && xs[is.len()] > 0,
            "segment_sum: {segments} segments of {} columns; both must be at least 1",
            xs[is.len()]
        );
        let c = xs[is.len()];
        let name = format!("{}.segsum", self.name(x));
        let out = self.planned_typed(name, &[segments, c], self.dtype(x));
        self.push_node(SegmentSum { segments }, &[x, idx], &[out]);
        Ok(out)
    }
}

impl Op for SegmentSum {
    fn name(&self) -> &'static str {
        "segment_sum"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (x, idx, out) = (io.input(0), io.input(1), io.output(0));
        let n = cx.g.desc(x).numel() as u64;
        cx.push(
            Step::new("scatter_add_rows", move |gpu, r| {
                scatter::scatter_add_rows(gpu, &r(idx), &r(x), &r(out), false)
            })
            .reads([x, idx])
            .writes([out])
            .flops(n),
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
        cx.contribute_with(x, |t, accumulate| {
            let s = Step::new("gather_rows", move |gpu, r| {
                Ok(vec![scatter::gather_rows(
                    gpu,
                    &r(idx),
                    &r(dy),
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
        let c = x.last_dim();
        let mut out = vec![0.0; self.segments * c];
        for (i, &s) in idx.data.iter().enumerate() {
            if s >= 0.0 && (s as usize) < self.segments {
                let s = s as usize;
                for k in 0..c {
                    out[s * c + k] += x.data[i * c + k];
                }
            }
        }
        Ok(vec![HostTensor::new(&[self.segments, c], out)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::op::{HostTensor, Op};
    use crate::graph::{Graph, GraphOptions, Init};
    use crate::runtime::DType;

    #[test]
    fn segment_sum_shapes_errors_and_reference() {
        let mut g = Graph::new(GraphOptions::default());
        let x = g.param("x", &[2, 3, 4], Init::Zeros).unwrap();
        let idx = g.input("dst", &[2, 3], DType::I32);
        let y = g.segment_sum(x, idx, 5).unwrap();
        assert_eq!(g.shape(y), [5, 4]);
        let short = g.input("short", &[6], DType::I32);
        let err = g.segment_sum(x, short, 5).unwrap_err().to_string();
        assert!(err.contains("index shape [6]"), "{err}");
        let op = super::SegmentSum { segments: 2 };
        let x = HostTensor::new(&[3, 1], vec![1.0, 2.0, 4.0]).unwrap();
        let idx = HostTensor::new(&[3], vec![1.0, -1.0, 1.0]).unwrap();
        let out = op.reference(&[&x, &idx]).unwrap();
        assert_eq!(out[0].data, vec![0.0, 5.0]);
    }
}
