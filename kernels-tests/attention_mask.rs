//! Attention with a key-padding mask through the graph, in both lowerings:
//! the fused kernels and the unfused path (matmul, masked scaled softmax,
//! matmul) against the f64 reference of the attention op
//! (`src/ops/attention.rs`) and against each other, forward and gradients,
//! for padding at the end, a hole in the middle, a fully padded row (o = 0,
//! zero gradients) and causal + padding.

use std::collections::BTreeMap;

use crate::common::*;
use kiln::graph::eval::{evaluate, total_loss, Values};
use kiln::graph::exec::TensorMap;
use kiln::graph::{AttentionImpl, Executor, Graph, HostTensor, Init, TensorId};
use kiln::runtime::DType;

struct Case {
    b: usize,
    t: usize,
    heads: usize,
    c: usize,
    causal: bool,
    mask: Vec<i32>,
    qkv: [Vec<f32>; 3],
    w: Vec<f32>,
}

impl Case {
    fn new(b: usize, t: usize, heads: usize, c: usize, causal: bool, rng: &mut Rng) -> Self {
        let mut mask = vec![1; b * t];
        for j in 0..t {
            mask[j] = (j + 1 < t.max(2)) as i32; // the last key padded
            if b > 1 {
                mask[t + j] = 0; // nothing to attend to
            }
            if b > 2 {
                mask[2 * t + j] = (j != t / 2) as i32; // a hole in the middle
            }
        }
        let n = b * t * c;
        Self {
            b,
            t,
            heads,
            c,
            causal,
            mask,
            qkv: [rand_vec(rng, n), rand_vec(rng, n), rand_vec(rng, n)],
            w: rand_vec(rng, n),
        }
    }

    /// The graph: out = attention(q, k, v, mask); loss = Σ w ⊙ out.
    fn graph(&self, imp: AttentionImpl) -> (Graph, Values, TensorId, TensorId) {
        let (b, t, c) = (self.b, self.t, self.c);
        let mut g = Graph::with_attention(imp);
        let mut values = Values::new();
        let mut ids = Vec::new();
        for (name, data) in ["q", "k", "v"].iter().zip(&self.qkv) {
            let id = g.param(name, &[b, t, c], Init::Zeros).unwrap();
            values.insert(id, HostTensor::from_f32(&[b, t, c], data));
            ids.push(id);
        }
        let mask = g.input("mask", &[b, t], DType::I32);
        values.insert(mask, HostTensor::from_i32(&[b, t], &self.mask));
        let out = g
            .attention(ids[0], ids[1], ids[2], self.heads, self.causal, Some(mask))
            .unwrap();
        g.keep(out);
        let n = b * t * c;
        let w = g.input("w", &[n, 1], DType::F32);
        values.insert(w, HostTensor::from_f32(&[n, 1], &self.w));
        let flat = g.reshape(out, &[1, n]).unwrap();
        let s = g.linear(flat, w, None, false).unwrap();
        let loss = g.reshape(s, &[1]).unwrap();
        (g, values, out, loss)
    }

    /// (out, gradients by parameter name) on the GPU.
    fn gpu(&self, imp: AttentionImpl) -> (Vec<f32>, BTreeMap<String, Vec<f32>>) {
        let (mut g, values, out, loss) = self.graph(imp);
        g.backward(&[(loss, 1.0)], 1.0).unwrap();
        let mut params = TensorMap::new();
        for p in &g.params {
            let v = &values[&p.id];
            params.insert(p.name.clone(), upload(&v.shape, &v.to_f32()));
        }
        let inputs: Vec<(TensorId, DType)> = g
            .inputs()
            .into_iter()
            .map(|(_, id)| (id, g.dtype(id)))
            .collect();
        let exec = Executor::new(gpu(), g, &params).unwrap();
        for (id, dt) in inputs {
            let t = exec.tensor(id).unwrap();
            let v = &values[&id];
            if dt == DType::I32 {
                t.write_i32(gpu(), &v.data.iter().map(|x| *x as i32).collect::<Vec<_>>())
                    .unwrap();
            } else {
                t.write_f32(gpu(), &v.to_f32()).unwrap();
            }
        }
        exec.run();
        let o = read(exec.tensor(out).unwrap());
        let grads = exec
            .param_grads()
            .into_iter()
            .map(|(n, t)| (n, read(&t)))
            .collect();
        (o, grads)
    }

    fn name(&self) -> String {
        format!(
            "B{} T{} H{} C{} {}",
            self.b,
            self.t,
            self.heads,
            self.c,
            if self.causal { "causal" } else { "bidir" }
        )
    }
}

#[test]
fn attention_mask_fused_and_unfused_match_the_reference() {
    let mut rng = Rng::new(101);
    for (b, t, heads, c) in [(3, 5, 2, 8), (3, 1, 1, 4), (3, 17, 2, 8), (2, 33, 1, 4)] {
        for causal in [false, true] {
            let case = Case::new(b, t, heads, c, causal, &mut rng);
            let (g, mut values, out, _) = case.graph(AttentionImpl::Unfused);
            evaluate(&g, &mut values).unwrap();
            let want = values[&out].to_f32();
            let (of, gf) = case.gpu(AttentionImpl::Fused);
            let (ou, gu) = case.gpu(AttentionImpl::Unfused);
            let what = case.name();
            assert_close(&format!("{what} fused out"), &of, &want, 2e-6, 1e-5);
            assert_close(&format!("{what} unfused out"), &ou, &want, 2e-6, 1e-5);
            // A fully padded batch row attends to nothing: o = 0 exactly.
            let row = t * c;
            assert!(of[row..2 * row]
                .iter()
                .chain(&ou[row..2 * row])
                .all(|v| *v == 0.0));
            for name in ["q", "k", "v"] {
                let (f, u) = (&gf[name], &gu[name]);
                assert_close(
                    &format!("{what} d{name} fused vs unfused"),
                    f,
                    u,
                    1e-5,
                    1e-4,
                );
                assert!(
                    f[row..2 * row]
                        .iter()
                        .chain(&u[row..2 * row])
                        .all(|v| *v == 0.0),
                    "{what}: d{name} of the padded row is not 0"
                );
            }
        }
    }
}

#[test]
fn attention_mask_gradients_match_finite_differences() {
    // Central differences of the f64 reference graph (h = 1e-4) against the
    // unfused GPU gradients (the fused ones agree with them, above).
    let mut rng = Rng::new(102);
    let case = Case::new(3, 4, 2, 4, true, &mut rng);
    let (_, grads) = case.gpu(AttentionImpl::Unfused);
    let (mut g, values, _, loss) = case.graph(AttentionImpl::Unfused);
    g.backward(&[(loss, 1.0)], 1.0).unwrap();
    let h = 1e-4;
    for p in g.params.clone() {
        let base = values[&p.id].clone();
        let fd: Vec<f32> = (0..base.numel())
            .map(|i| {
                let at = |d: f64| {
                    let mut v = values.clone();
                    v.get_mut(&p.id).unwrap().data[i] = base.data[i] + d;
                    total_loss(&g, &mut v).unwrap()
                };
                ((at(h) - at(-h)) / (2.0 * h)) as f32
            })
            .collect();
        assert_close(&format!("d{}", p.name), &grads[&p.name], &fd, 1e-4, 1e-3);
    }
}
