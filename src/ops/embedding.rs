//! Token plus learned-position embedding, fused (GPT-2's `wte` + `wpe`):
//! out[b, t] = wte[ids[b, t]] + wpe[t]. The backward is a deterministic
//! scatter-add without atomics (`kernels::embedding`).

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::{elementwise, embedding};
use crate::runtime::DType;

#[derive(Debug, Clone)]
pub struct TokenPositionEmbedding;

impl Graph {
    /// ids [B, T] (i32) → wte[ids] + wpe[0..T]: [B, T, C].
    pub fn token_position_embedding(
        &mut self,
        ids: TensorId,
        wte: TensorId,
        wpe: TensorId,
    ) -> Result<TensorId> {
        let (ts, es, ps) = (
            self.shape(ids).to_vec(),
            self.shape(wte).to_vec(),
            self.shape(wpe).to_vec(),
        );
        ensure!(
            ts.len() == 2 && es.len() == 2 && ps.len() == 2 && self.dtype(ids) == DType::I32,
            "embedding: ids must be i32 [B, T], wte [V, C] and wpe [P, C]; got {ts:?}, {es:?}, {ps:?}"
        );
        ensure!(
            ps[0] >= ts[1] && ps[1] == es[1],
            "embedding: wpe {ps:?} cannot serve T = {} with C = {}",
            ts[1],
            es[1]
        );
        let out = self.planned("embed", &[ts[0], ts[1], es[1]]);
        self.push_node(TokenPositionEmbedding, &[ids, wte, wpe], &[out]);
        Ok(out)
    }
}

fn zero_step(t: TensorId) -> Step {
    Step::new("fill", move |gpu, r| {
        Ok(vec![elementwise::fill(gpu, &r(t), 0.0)?])
    })
    .writes([t])
}

impl Op for TokenPositionEmbedding {
    fn name(&self) -> &'static str {
        "embedding"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (ids, wte, wpe, out) = (io.input(0), io.input(1), io.input(2), io.output(0));
        cx.push(
            Step::new("embedding", move |gpu, r| {
                Ok(vec![embedding::embedding_forward(
                    gpu,
                    &r(ids),
                    &r(wte),
                    &r(wpe),
                    &r(out),
                )?])
            })
            .reads([ids, wte, wpe])
            .writes([out]),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let (ids, wte, wpe) = (io.input(0), io.input(1), io.input(2));
        let Some(dy) = cx.grad_tensor(io.output(0))? else {
            return Ok(());
        };
        let (en, pn) = (cx.needs_grad(wte), cx.needs_grad(wpe));
        if !en && !pn {
            return Ok(());
        }
        // The kernel adds into both tables' gradients: parameters' gradients
        // directly, anything else through zeroed temporaries.
        let table =
            |x: TensorId, needed: bool, cx: &mut Backward<'_>| -> Result<(TensorId, bool)> {
                if needed && cx.g.param_grads.contains_key(&x) {
                    let crate::graph::autodiff::Target::Accumulate(t) = cx.target(x)? else {
                        unreachable!("a parameter's gradient always accumulates")
                    };
                    Ok((t, false))
                } else {
                    let t = cx.temp_like(x);
                    cx.push(zero_step(t));
                    Ok((t, needed))
                }
            };
        let (dwte, wte_tmp) = table(wte, en, cx)?;
        let (dwpe, wpe_tmp) = table(wpe, pn, cx)?;
        cx.push(
            Step::new("embedding_backward", move |gpu, r| {
                embedding::embedding_backward(gpu, &r(ids), &r(dy), &r(dwte), &r(dwpe))
            })
            .reads([ids, dy])
            .accumulates([dwte, dwpe]),
        );
        if wte_tmp {
            cx.contribute(wte, dwte)?;
        }
        if wpe_tmp {
            cx.contribute(wpe, dwpe)?;
        }
        Ok(())
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let (ids, wte, wpe) = (ins[0], ins[1], ins[2]);
        let (b, t) = (ids.shape[0], ids.shape[1]);
        let (v, c) = (wte.shape[0], wte.shape[1]);
        let mut out = vec![0.0; b * t * c];
        for i in 0..b * t {
            let tok = ids.data[i] as i64;
            for j in 0..c {
                let w = if (0..v as i64).contains(&tok) {
                    wte.data[tok as usize * c + j]
                } else {
                    0.0
                };
                out[i * c + j] = w + wpe.data[(i % t) * c + j];
            }
        }
        Ok(vec![HostTensor::new(&[b, t, c], out)?])
    }
}
