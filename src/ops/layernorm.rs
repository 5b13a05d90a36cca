//! LayerNorm over the last dimension (biased variance, eps inside the square
//! root), as `nn.LayerNorm`: y = (x − mean)·rstd·γ + β. Saves mean and rstd.

use anyhow::{ensure, Result};

use crate::graph::autodiff::{Backward, Target};
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::layernorm as ln;
use crate::runtime::numel;

#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub eps: f32,
}

impl Graph {
    /// LayerNorm of `x` over its last dimension with gain γ and bias β.
    pub fn layernorm(
        &mut self,
        x: TensorId,
        gamma: TensorId,
        beta: TensorId,
        eps: f32,
    ) -> Result<TensorId> {
        let shape = self.shape(x).to_vec();
        let c = *shape.last().unwrap_or(&0);
        ensure!(
            c > 0 && self.shape(gamma) == [c] && self.shape(beta) == [c],
            "layernorm: γ {:?} and β {:?} must be [{c}] for input {shape:?}",
            self.shape(gamma),
            self.shape(beta)
        );
        ensure!(
            eps.is_finite() && eps >= 0.0,
            "layernorm: eps must be finite and ≥ 0, got {eps}"
        );
        let rows = numel(&shape) / c;
        let name = self.name(gamma).trim_end_matches(".weight").to_string();
        let y = self.planned(format!("{name}.out"), &shape);
        let mean = self.planned(format!("{name}.mean"), &[rows]);
        let rstd = self.planned(format!("{name}.rstd"), &[rows]);
        self.push_node(LayerNorm { eps }, &[x, gamma, beta], &[y, mean, rstd]);
        Ok(y)
    }
}

impl Op for LayerNorm {
    fn name(&self) -> &'static str {
        "layernorm"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let [x, gamma, beta] = [io.input(0), io.input(1), io.input(2)];
        let [y, mean, rstd] = [io.output(0), io.output(1), io.output(2)];
        let eps = self.eps;
        let n = numel(cx.shape(x)) as u64;
        cx.push(
            Step::new("layernorm", move |gpu, r| {
                Ok(vec![ln::layernorm_forward(
                    gpu,
                    &r(x),
                    &r(gamma),
                    &r(beta),
                    &r(y),
                    &r(mean),
                    &r(rstd),
                    eps,
                )?])
            })
            .reads([x, gamma, beta])
            .writes([y, mean, rstd])
            .flops(8 * n),
        );
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let [x, gamma, beta] = [io.input(0), io.input(1), io.input(2)];
        let [y, mean, rstd] = [io.output(0), io.output(1), io.output(2)];
        let Some(dy) = cx.grad_tensor(y)? else {
            return Ok(());
        };
        let n = numel(cx.g.shape(x)) as u64;
        // The kernel writes dγ and dβ together: straight into their gradients
        // when both need one and both are new or both exist (parameters),
        // otherwise into temporaries that are then contributed.
        let (gn, bn) = (cx.needs_grad(gamma), cx.needs_grad(beta));
        let direct = gn && bn && cx.has_grad(gamma) == cx.has_grad(beta);
        let (dgamma, dbeta, accumulate) = if direct {
            let acc = cx.has_grad(gamma);
            let t = |t: Target| match t {
                Target::Fresh(t) | Target::Accumulate(t) => t,
            };
            (t(cx.target(gamma)?), t(cx.target(beta)?), acc)
        } else {
            (cx.temp_like(gamma), cx.temp_like(beta), false)
        };
        let build = move |dx: TensorId| {
            let s = Step::new("layernorm_backward", move |gpu, r| {
                ln::layernorm_backward(
                    gpu,
                    &r(dy),
                    &r(x),
                    &r(gamma),
                    &r(mean),
                    &r(rstd),
                    &r(dx),
                    &r(dgamma),
                    &r(dbeta),
                    accumulate,
                )
            })
            .reads([dy, x, gamma, mean, rstd])
            .writes([dx])
            .flops(8 * n);
            if accumulate {
                s.accumulates([dgamma, dbeta])
            } else {
                s.writes([dgamma, dbeta])
            }
        };
        if cx.needs_grad(x) {
            cx.contribute_overwrite(x, build)?;
        } else {
            let dx = cx.temp_like(x);
            cx.push(build(dx));
        }
        if !direct {
            for (p, d) in [(gamma, dgamma), (beta, dbeta)] {
                if cx.needs_grad(p) {
                    cx.contribute(p, d)?;
                }
            }
        }
        Ok(())
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let (x, gamma, beta) = (ins[0], ins[1], ins[2]);
        let c = x.last_dim();
        let rows = x.rows();
        let mut y = vec![0.0; x.numel()];
        let (mut means, mut rstds) = (vec![0.0; rows], vec![0.0; rows]);
        for r in 0..rows {
            let row = &x.data[r * c..(r + 1) * c];
            let mean = row.iter().sum::<f64>() / c as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c as f64;
            let rstd = 1.0 / (var + self.eps as f64).sqrt();
            for j in 0..c {
                y[r * c + j] = (row[j] - mean) * rstd * gamma.data[j] + beta.data[j];
            }
            means[r] = mean;
            rstds[r] = rstd;
        }
        Ok(vec![
            HostTensor::new(&x.shape, y)?,
            HostTensor::new(&[rows], means)?,
            HostTensor::new(&[rows], rstds)?,
        ])
    }
}
