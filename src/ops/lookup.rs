//! Embedding lookup for any table and any id tensor (token types,
//! positions, atom types): out[..., :] = table[ids[...], :]. An id outside
//! [0, V) gives a zero row and contributes no gradient. The backward is the
//! deterministic scatter-add of `kernels::scatter` (sort once, sum each id's
//! rows in position order, no atomics), added into d(table), so tied tables
//! and parameter gradients accumulate.

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::scatter;
use crate::reference::scatter as reference;
use crate::runtime::DType;

#[derive(Debug, Clone)]
pub struct Embedding;

impl Graph {
    /// table[ids]: `ids` i32 of any shape S, `table` [V, C] → S ++ [C].
    pub fn embedding(&mut self, ids: TensorId, table: TensorId) -> Result<TensorId> {
        let (is, ts) = (self.shape(ids).to_vec(), self.shape(table).to_vec());
        ensure!(
            self.dtype(ids) == DType::I32 && !is.is_empty(),
            "embedding: ids must be an i32 tensor, got {} {is:?}",
            self.dtype(ids).name()
        );
        ensure!(
            ts.len() == 2 && ts[0] > 0 && ts[1] > 0,
            "embedding: table {} must be [V, C], got {ts:?}",
            self.name(table)
        );
        let mut shape = is;
        shape.push(ts[1]);
        let name = format!("{}.lookup", self.name(table));
        let out = self.planned_typed(name, &shape, self.dtype(table));
        self.push_node(Embedding, &[ids, table], &[out]);
        Ok(out)
    }
}

impl Op for Embedding {
    fn name(&self) -> &'static str {
        "lookup"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (ids, table, out) = (io.input(0), io.input(1), io.output(0));
        cx.push(
            Step::new("gather_rows", move |gpu, r| {
                Ok(vec![scatter::gather_rows(
                    gpu,
                    &r(ids),
                    &r(table),
                    &r(out),
                    false,
                )?])
            })
            .reads([ids, table])
            .writes([out]),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let (ids, table) = (io.input(0), io.input(1));
        if !cx.needs_grad(table) {
            return Ok(());
        }
        let Some(dy) = cx.grad_tensor(io.output(0))? else {
            return Ok(());
        };
        let n = cx.g.desc(dy).numel() as u64;
        cx.contribute_with(table, |t, accumulate| {
            let s = Step::new("scatter_add_rows", move |gpu, r| {
                scatter::scatter_add_rows(gpu, &r(ids), &r(dy), &r(t), accumulate)
            })
            .reads([ids, dy])
            .flops(n);
            if accumulate {
                s.accumulates([t])
            } else {
                s.writes([t])
            }
        })
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let (ids, table) = (ins[0], ins[1]);
        let (v, c) = (table.shape[0], table.shape[1]);
        let ids: Vec<i32> = ids.data.iter().map(|x| *x as i32).collect();
        let out = reference::gather_rows(&ids, ids.len(), &table.data, v, c);
        let mut shape = ins[0].shape.clone();
        shape.push(c);
        Ok(vec![HostTensor::new(&shape, out)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::op::{HostTensor, Op};
    use crate::graph::{Graph, GraphOptions, Init};
    use crate::runtime::DType;

    #[test]
    fn lookup_shapes_errors_and_reference() {
        let mut g = Graph::new(GraphOptions::default());
        let table = g.param("types", &[3, 2], Init::Zeros).unwrap();
        let ids = g.input("ids", &[2, 4, 5], DType::I32);
        let y = g.embedding(ids, table).unwrap();
        assert_eq!(g.shape(y), [2, 4, 5, 2]);
        let fids = g.input("f", &[4], DType::F32);
        let err = g.embedding(fids, table).unwrap_err().to_string();
        assert!(err.contains("i32"), "{err}");
        let flat = g.reshape(table, &[6]).unwrap();
        let err = g.embedding(ids, flat).unwrap_err().to_string();
        assert!(err.contains("[V, C]"), "{err}");
        let t = HostTensor::new(&[3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let i = HostTensor::new(&[3], vec![2.0, 3.0, 0.0]).unwrap();
        let out = super::Embedding.reference(&[&i, &t]).unwrap();
        assert_eq!(out[0].shape, [3, 2]);
        assert_eq!(out[0].data, vec![5.0, 6.0, 0.0, 0.0, 1.0, 2.0]);
    }
}
