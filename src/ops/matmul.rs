//! Matrix multiplication: c = α·op(a)·op(b) (+ bias), batched, with either
//! operand transposed (`kernels::matmul`). `linear` is the layer form.

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, TensorId};
use crate::kernels::matmul::{self as mm, MatmulSpec};
use crate::kernels::reduce;
use crate::runtime::numel;

/// One matmul (inputs: a, b, and the bias if any).
#[derive(Debug, Clone)]
pub struct Matmul {
    pub spec: MatmulSpec,
    pub bias: bool,
    pub out_shape: Vec<usize>,
}

/// The matmul step `c = spec(a, b) (+ bias)`.
pub fn matmul_step(
    spec: MatmulSpec,
    a: TensorId,
    b: TensorId,
    bias: Option<TensorId>,
    c: TensorId,
) -> Step {
    let mut s = Step::new("matmul", move |gpu, r| {
        let bias_t = bias.map(r);
        Ok(vec![mm::matmul(
            gpu,
            &spec,
            &r(a),
            &r(b),
            bias_t.as_ref(),
            &r(c),
        )?])
    })
    .reads([a, b])
    .reads(bias)
    .flops(2 * (spec.batch * spec.m * spec.n * spec.k) as u64)
    .detail(format!(
        "{}x{}x{}{}",
        spec.m,
        spec.n,
        spec.k,
        if spec.batch > 1 {
            format!(" x{}", spec.batch)
        } else {
            String::new()
        }
    ));
    if spec.beta != 0.0 {
        s = s.accumulates([c]);
    } else {
        s = s.writes([c]);
    }
    s
}

impl Graph {
    /// y = x·W (+ b) over the last dimension of x, W stored [in, out] as in
    /// Hugging Face's GPT-2 Conv1D, or [out, in] as in `nn.Linear` with `trans_w`.
    pub fn linear(
        &mut self,
        x: TensorId,
        w: TensorId,
        bias: Option<TensorId>,
        trans_w: bool,
    ) -> Result<TensorId> {
        let xs = self.shape(x).to_vec();
        let ws = self.shape(w).to_vec();
        ensure!(
            ws.len() == 2,
            "linear: weight {} must be 2-D, is {ws:?}",
            self.name(w)
        );
        let (k_in, n_out) = if trans_w {
            (ws[1], ws[0])
        } else {
            (ws[0], ws[1])
        };
        let k = *xs.last().unwrap_or(&0);
        ensure!(
            k == k_in && k > 0,
            "linear: input {xs:?} has last dim {k} but weight {} {ws:?} expects {k_in}",
            self.name(w)
        );
        if let Some(b) = bias {
            ensure!(
                self.shape(b) == [n_out],
                "linear: bias {} must be [{n_out}], is {:?}",
                self.name(b),
                self.shape(b)
            );
        }
        let rows = numel(&xs) / k;
        let mut ys = xs.clone();
        *ys.last_mut().unwrap() = n_out;
        let name = self.name(w).trim_end_matches(".weight").to_string();
        let c = self.planned(format!("{name}.out"), &ys);
        let spec = MatmulSpec::new(rows, n_out, k).trans_b(trans_w);
        let mut ins = vec![x, w];
        ins.extend(bias);
        self.push_node(
            Matmul {
                spec,
                bias: bias.is_some(),
                out_shape: ys,
            },
            &ins,
            &[c],
        );
        Ok(c)
    }

    /// Batched matrix product of [.., M, K] and [.., K, N] (or transposed
    /// operands), scaled by `alpha`: the leading dimensions must agree.
    pub fn matmul(
        &mut self,
        a: TensorId,
        b: TensorId,
        trans_a: bool,
        trans_b: bool,
        alpha: f32,
    ) -> Result<TensorId> {
        let (as_, bs) = (self.shape(a).to_vec(), self.shape(b).to_vec());
        ensure!(
            as_.len() >= 2 && as_.len() == bs.len() && as_[..as_.len() - 2] == bs[..bs.len() - 2],
            "matmul: shapes {as_:?} and {bs:?} need the same leading dimensions and rank ≥ 2"
        );
        let r = as_.len();
        let (m, ka) = if trans_a {
            (as_[r - 1], as_[r - 2])
        } else {
            (as_[r - 2], as_[r - 1])
        };
        let (kb, n) = if trans_b {
            (bs[r - 1], bs[r - 2])
        } else {
            (bs[r - 2], bs[r - 1])
        };
        ensure!(
            ka == kb,
            "matmul: inner dimensions differ ({as_:?} · {bs:?})"
        );
        let batch = numel(&as_[..r - 2]);
        let spec = MatmulSpec::new(m, n, ka)
            .batched(batch)
            .trans_a(trans_a)
            .trans_b(trans_b)
            .alpha(alpha);
        let mut cs = as_[..r - 2].to_vec();
        cs.extend([m, n]);
        let c = self.planned("matmul.out", &cs);
        self.push_node(
            Matmul {
                spec,
                bias: false,
                out_shape: cs,
            },
            &[a, b],
            &[c],
        );
        Ok(c)
    }
}

impl Op for Matmul {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let bias = self.bias.then(|| io.input(2));
        cx.push(matmul_step(
            self.spec,
            io.input(0),
            io.input(1),
            bias,
            io.output(0),
        ));
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let (a, b, c) = (io.input(0), io.input(1), io.output(0));
        let Some(dc) = cx.grad_tensor(c)? else {
            return Ok(());
        };
        let spec = self.spec;
        let (m, n, k, bt, al) = (spec.m, spec.n, spec.k, spec.batch, spec.alpha);
        if cx.needs_grad(b) {
            // dB = op(A)ᵀ·dC, or dCᵀ·op(A) when B is stored transposed.
            let (s, x, y) = if spec.trans_b {
                (
                    MatmulSpec::new(n, k, m).trans_a(true).trans_b(spec.trans_a),
                    dc,
                    a,
                )
            } else {
                (MatmulSpec::new(k, n, m).trans_a(!spec.trans_a), a, dc)
            };
            let s = s.batched(bt).alpha(al);
            cx.contribute_with(b, |t, acc| {
                matmul_step(s.beta(acc as u8 as f32), x, y, None, t)
            })?;
        }
        if self.bias {
            let bias = io.input(2);
            if cx.needs_grad(bias) {
                let rows = bt * m;
                cx.contribute_with(bias, |t, acc| {
                    Step::new("col_sum", move |gpu, r| {
                        reduce::col_sum(gpu, &r(dc), rows, n, &r(t), acc)
                    })
                    .reads([dc])
                    .flops((rows * n) as u64)
                    .writes((!acc).then_some(t))
                    .accumulates(acc.then_some(t))
                })?;
            }
        }
        if cx.needs_grad(a) {
            // dA = dC·op(B)ᵀ, or op(B)·dCᵀ when A is stored transposed.
            let (s, x, y) = if spec.trans_a {
                (
                    MatmulSpec::new(k, m, n).trans_a(spec.trans_b).trans_b(true),
                    b,
                    dc,
                )
            } else {
                (MatmulSpec::new(m, k, n).trans_b(!spec.trans_b), dc, b)
            };
            let s = s.batched(bt).alpha(al);
            cx.contribute_with(a, |t, acc| {
                matmul_step(s.beta(acc as u8 as f32), x, y, None, t)
            })?;
        }
        Ok(())
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let s = &self.spec;
        let (a, b) = (ins[0], ins[1]);
        let mut c = vec![0.0; s.batch * s.m * s.n];
        for item in 0..s.batch {
            let (oa, ob) = (item * s.m * s.k, item * s.k * s.n);
            for i in 0..s.m {
                for j in 0..s.n {
                    let mut sum = 0.0;
                    for kk in 0..s.k {
                        let x = if s.trans_a {
                            a.data[oa + kk * s.m + i]
                        } else {
                            a.data[oa + i * s.k + kk]
                        };
                        let y = if s.trans_b {
                            b.data[ob + j * s.k + kk]
                        } else {
                            b.data[ob + kk * s.n + j]
                        };
                        sum += x * y;
                    }
                    let bias = if self.bias { ins[2].data[j] } else { 0.0 };
                    c[item * s.m * s.n + i * s.n + j] = s.alpha as f64 * sum + bias;
                }
            }
        }
        Ok(vec![HostTensor::new(&self.out_shape, c)?])
    }
}
