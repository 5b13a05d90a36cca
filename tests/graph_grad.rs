//! The graph-level gradient check: random small graphs drawn from the op
//! set, differentiated by Kiln's autodiff on the GPU and, independently, by
//! central finite differences of an f64 CPU evaluation of the same graph
//! (every node through its op's reference). Every op of the set appears in
//! at least one graph; graphs mix fan-out (one tensor used several times),
//! tied parameters, several weighted losses and inputs that need no
//! gradient, in both attention lowerings (with and without key-padding
//! masks), with dropout active (its mask a function of the "kiln.rng"
//! input, which the check writes).
//!
//! Tolerances: the GPU computes in f32, the reference in f64; finite
//! differences use h = 1e-4 on values of order 1. A gradient element passes
//! when |gpu − fd| ≤ 1e-3·|fd| + 5e-4·max|fd| (max over that parameter);
//! the loss itself within 1e-4 relative.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::Result;
use kiln::graph::eval::{total_loss, Values};
use kiln::graph::exec::TensorMap;
use kiln::graph::{AttentionImpl, Executor, Graph, GraphOptions, HostTensor, Init, TensorId};
use kiln::ops::Activation;
use kiln::runtime::{DType, Gpu, GpuOptions, LimitsPolicy};
use kiln::util::Rng;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let mut opts = GpuOptions::from_env().expect("KILN_* environment");
        opts.limits = LimitsPolicy::WebGpuDefault;
        pollster::block_on(Gpu::new(opts)).unwrap_or_else(|e| {
            panic!("the gradient check needs a GPU adapter: {e:#}\n(apt-get install -y mesa-vulkan-drivers gives lavapipe)")
        })
    })
}

/// A graph being drawn: the graph, its host values, and the sizes.
struct Draw {
    g: Graph,
    rng: Rng,
    values: Values,
    b: usize,
    t: usize,
    c: usize,
    /// Float tensors of shape [B, T, C] an op may take as input.
    pool: Vec<TensorId>,
    /// Extra loss terms an op adds (e.g. a cross-entropy), with weights.
    losses: Vec<(TensorId, f32)>,
    n: usize,
}

impl Draw {
    fn name(&mut self, what: &str) -> String {
        self.n += 1;
        format!("{what}{}", self.n)
    }

    /// A parameter with random values of order 1 (rounded to f32, as the GPU sees them).
    fn param(&mut self, shape: &[usize], scale: f64) -> TensorId {
        let name = self.name("p");
        let id = self.g.param(&name, shape, Init::Zeros).unwrap();
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|_| (scale * self.rng.normal()) as f32 as f64)
            .collect();
        self.values
            .insert(id, HostTensor::new(shape, data).unwrap());
        id
    }

    /// An input (no gradient) with the given values.
    fn input(&mut self, shape: &[usize], dtype: DType, data: Vec<f64>) -> TensorId {
        let name = self.name("in");
        let id = self.g.input(&name, shape, dtype);
        self.values
            .insert(id, HostTensor::new(shape, data).unwrap());
        id
    }

    fn ids(&mut self, shape: &[usize], below: usize) -> TensorId {
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|_| self.rng.below(below as u64) as f64)
            .collect();
        self.input(shape, DType::I32, data)
    }

    /// A random tensor of the pool (fan-out: the same one may be drawn again).
    fn pick(&mut self) -> TensorId {
        let i = self.rng.below(self.pool.len() as u64) as usize;
        self.pool[i]
    }

    fn bool(&mut self) -> bool {
        self.rng.below(2) == 1
    }

    /// A key-padding mask [B, T]: each key kept with probability 3/4 (at
    /// least one per batch row), and, with two batch rows, sometimes a row
    /// with no key at all.
    fn mask(&mut self) -> TensorId {
        let (b, t) = (self.b, self.t);
        let mut m: Vec<f64> = (0..b * t)
            .map(|_| (self.rng.below(4) != 0) as i32 as f64)
            .collect();
        for row in m.chunks_mut(t) {
            if row.iter().all(|v| *v == 0.0) {
                row[self.rng.below(t as u64) as usize] = 1.0;
            }
        }
        if b > 1 && self.rng.below(2) == 0 {
            let row = self.rng.below(b as u64) as usize;
            m[row * t..(row + 1) * t].iter_mut().for_each(|v| *v = 0.0);
        }
        self.input(&[b, t], DType::I32, m)
    }

    /// The graph's RNG input with random words (see `kiln::ops::dropout`).
    fn rng_input(&mut self) -> TensorId {
        let id = self.g.rng_input();
        let words = (0..4).map(|_| self.rng.next_u32() as f64).collect();
        self.values
            .insert(id, HostTensor::new(&[4], words).unwrap());
        id
    }
}

/// An activation case.
fn act(d: &mut Draw, kind: Activation) -> Result<TensorId> {
    let x = d.pick();
    Ok(d.g.activation(x, kind))
}

/// One op of the set in context: appends nodes to the draw and returns a
/// new [B, T, C] tensor.
struct OpCase {
    name: &'static str,
    apply: fn(&mut Draw) -> Result<TensorId>,
}

fn cases() -> Vec<OpCase> {
    vec![
        OpCase {
            name: "linear",
            apply: |d| {
                let x = d.pick();
                let c = d.c;
                let trans = d.bool();
                let w = d.param(&[c, c], 0.5);
                let b = d.param(&[c], 0.5);
                d.g.linear(x, w, Some(b), trans)
            },
        },
        OpCase {
            name: "matmul",
            apply: |d| {
                // (x·yᵀ)·z over the batch: [B, T, T] then [B, T, C].
                let (x, y, z) = (d.pick(), d.pick(), d.pick());
                let s = d.g.matmul(x, y, false, true, 0.5)?;
                d.g.matmul(s, z, false, false, 1.0)
            },
        },
        OpCase {
            name: "layernorm",
            apply: |d| {
                let x = d.pick();
                let c = d.c;
                let w = d.param(&[c], 1.0);
                let b = d.param(&[c], 0.5);
                d.g.layernorm(x, w, b, 1e-5)
            },
        },
        OpCase {
            name: "gelu_tanh",
            apply: |d| {
                let x = d.pick();
                Ok(d.g.activation(x, Activation::GeluTanh))
            },
        },
        OpCase {
            name: "gelu_erf",
            apply: |d| {
                let x = d.pick();
                Ok(d.g.activation(x, Activation::GeluErf))
            },
        },
        OpCase {
            name: "add",
            apply: |d| {
                let (a, b) = (d.pick(), d.pick());
                d.g.add(a, b)
            },
        },
        OpCase {
            name: "attention_packed",
            apply: |d| {
                let x = d.pick();
                let c = d.c;
                let w = d.param(&[c, 3 * c], 0.5);
                let qkv = d.g.linear(x, w, None, false)?;
                let causal = d.bool();
                d.g.self_attention(qkv, 2, causal)
            },
        },
        OpCase {
            name: "attention_separate",
            apply: |d| {
                let (x, y) = (d.pick(), d.pick());
                let c = d.c;
                let wq = d.param(&[c, c], 0.5);
                let wk = d.param(&[c, c], 0.5);
                let q = d.g.linear(x, wq, None, false)?;
                let k = d.g.linear(y, wk, None, false)?;
                let causal = d.bool();
                // v is y itself: a tensor feeding two consumers of one node.
                d.g.attention(q, k, y, 2, causal, None)
            },
        },
        OpCase {
            name: "token_position_embedding",
            apply: |d| {
                let (b, t, c) = (d.b, d.t, d.c);
                let v = 7;
                let ids = d.ids(&[b, t], v);
                let wte = d.param(&[v, c], 1.0);
                let wpe = d.param(&[t + 2, c], 1.0);
                let e = d.g.token_position_embedding(ids, wte, wpe)?;
                let x = d.pick();
                d.g.add(e, x)
            },
        },
        OpCase {
            name: "reshape",
            apply: |d| {
                let x = d.pick();
                let (b, t, c) = (d.b, d.t, d.c);
                let flat = d.g.reshape(x, &[b * t, c])?;
                let w = d.param(&[c, c], 0.5);
                let y = d.g.linear(flat, w, None, true)?;
                d.g.reshape(y, &[b, t, c])
            },
        },
        OpCase {
            name: "quick_gelu",
            apply: |d| act(d, Activation::QuickGelu),
        },
        OpCase {
            name: "relu",
            apply: |d| act(d, Activation::Relu),
        },
        OpCase {
            name: "tanh",
            apply: |d| act(d, Activation::Tanh),
        },
        OpCase {
            name: "sigmoid",
            apply: |d| act(d, Activation::Sigmoid),
        },
        OpCase {
            name: "exp",
            apply: |d| act(d, Activation::Exp),
        },
        OpCase {
            name: "exp_clamped_temperature",
            apply: |d| {
                // CLIP: logits · min(exp(logit_scale), max), a [1] parameter
                // broadcast over everything; the bound sometimes applies.
                let x = d.pick();
                let s = d.param(&[1], 1.0);
                let e = d.g.exp(s, Some(1.5))?;
                d.g.mul(x, e)
            },
        },
        OpCase {
            name: "add_bias",
            apply: |d| {
                let x = d.pick();
                let c = d.c;
                let b = d.param(&[c], 1.0);
                d.g.add(x, b)
            },
        },
        OpCase {
            name: "add_bias_wide",
            apply: |d| {
                // A bias over 64 columns: the two-stage column-sum gradient.
                let x = d.pick();
                let c = d.c;
                let w1 = d.param(&[c, 64], 0.3);
                let b = d.param(&[64], 1.0);
                let w2 = d.param(&[64, c], 0.3);
                let h = d.g.linear(x, w1, None, false)?;
                let h = d.g.add(b, h)?;
                d.g.linear(h, w2, None, false)
            },
        },
        OpCase {
            name: "add_position_table",
            apply: |d| {
                let x = d.pick();
                let (t, c) = (d.t, d.c);
                let p = d.param(&[t, c], 1.0);
                d.g.add(x, p)
            },
        },
        OpCase {
            name: "add_both_broadcast_and_scalar",
            apply: |d| {
                // [B, 1, C] + [T, 1] → [B, T, C], then + a scalar [1].
                let (b, t, c) = (d.b, d.t, d.c);
                let x = d.pick();
                let u = d.param(&[b, 1, c], 1.0);
                let v = d.param(&[t, 1], 1.0);
                let s = d.param(&[1], 1.0);
                let uv = d.g.add(u, v)?;
                let y = d.g.add(uv, x)?;
                d.g.add(s, y)
            },
        },
        OpCase {
            name: "mul_broadcast",
            apply: |d| {
                // A per-position scale [1, T, 1] and a per-channel one [C].
                let x = d.pick();
                let (t, c) = (d.t, d.c);
                let st = d.param(&[1, t, 1], 1.0);
                let sc = d.param(&[c], 1.0);
                let y = d.g.mul(st, x)?;
                d.g.mul(y, sc)
            },
        },
        OpCase {
            name: "mul_same_shape",
            apply: |d| {
                let (x, y) = (d.pick(), d.pick());
                d.g.mul(x, y)
            },
        },
        OpCase {
            name: "l2_normalize",
            apply: |d| {
                let x = d.pick();
                d.g.l2_normalize(x, 1e-12)
            },
        },
        OpCase {
            name: "masked_mean",
            apply: |d| {
                // Pool over T, then broadcast the [B, 1, C] result back.
                let x = d.pick();
                let y = d.pick();
                let (b, c) = (d.b, d.c);
                let m = d.mask();
                let pooled = d.g.masked_mean(x, m)?;
                let pooled = d.g.reshape(pooled, &[b, 1, c])?;
                d.g.add(y, pooled)
            },
        },
        OpCase {
            name: "dropout",
            apply: |d| {
                let x = d.pick();
                d.rng_input();
                d.g.dropout(x, 0.3)
            },
        },
        OpCase {
            name: "mse_loss",
            apply: |d| {
                let (x, y) = (d.pick(), d.pick());
                let loss = d.g.mse_loss(x, y)?;
                d.losses.push((loss, 0.7));
                Ok(x)
            },
        },
        OpCase {
            name: "kl_div",
            apply: |d| {
                // Student and teacher logits over C classes, τ = 2.
                let (x, y) = (d.pick(), d.pick());
                let loss = d.g.kl_div(x, y, 2.0)?;
                d.losses.push((loss, 0.5));
                Ok(y)
            },
        },
        OpCase {
            name: "cross_entropy_similarity_matrix",
            apply: |d| {
                // CLIP: a [N, N] similarity matrix of two embeddings (N =
                // B·T), each row's target its own index.
                let (x, y) = (d.pick(), d.pick());
                let (b, t, c) = (d.b, d.t, d.c);
                let n = b * t;
                let xe = d.g.reshape(x, &[n, c])?;
                let ye = d.g.reshape(y, &[n, c])?;
                let xe = d.g.l2_normalize(xe, 1e-12)?;
                let sim = d.g.matmul(xe, ye, false, true, 1.0)?;
                let targets = d.input(&[n], DType::I32, (0..n).map(|i| i as f64).collect());
                let loss = d.g.cross_entropy(sim, targets, -100)?;
                d.losses.push((loss, 0.5));
                Ok(x)
            },
        },
        OpCase {
            name: "attention_packed_masked",
            apply: |d| {
                let x = d.pick();
                let c = d.c;
                let w = d.param(&[c, 3 * c], 0.5);
                let qkv = d.g.linear(x, w, None, false)?;
                let causal = d.bool();
                let m = d.mask();
                d.g.self_attention_masked(qkv, 2, causal, Some(m))
            },
        },
        OpCase {
            name: "attention_separate_masked",
            apply: |d| {
                let (x, y) = (d.pick(), d.pick());
                let c = d.c;
                let wq = d.param(&[c, c], 0.5);
                let q = d.g.linear(x, wq, None, false)?;
                let causal = d.bool();
                let m = d.mask();
                d.g.attention(q, y, y, 1, causal, Some(m))
            },
        },
        OpCase {
            name: "cross_entropy",
            apply: |d| {
                // A second loss term on the way: logits from x, weight 0.5.
                let x = d.pick();
                let (b, t, c) = (d.b, d.t, d.c);
                let v = 5;
                let w = d.param(&[v, c], 0.5);
                let logits = d.g.linear(x, w, None, true)?;
                let targets = d.ids(&[b, t], v);
                let loss = d.g.cross_entropy(logits, targets, -100)?;
                d.losses.push((loss, 0.5));
                Ok(x)
            },
        },
        OpCase {
            name: "broadcast_to",
            apply: |d| {
                // A [1, 1, C] token repeated over the batch and a [T, 1] column
                // over the channels, added to x.
                let (b, t, c) = (d.b, d.t, d.c);
                let tok = d.param(&[1, 1, c], 1.0);
                let col = d.param(&[t, 1], 1.0);
                let x = d.pick();
                let tb = d.g.broadcast_to(tok, &[b, t, c])?;
                let cb = d.g.broadcast_to(col, &[b, t, c])?;
                let s = d.g.add(tb, cb)?;
                d.g.add(s, x)
            },
        },
        OpCase {
            name: "accuracy",
            apply: |d| {
                // A metric as a loss term: piecewise constant, no gradient.
                let x = d.pick();
                let (b, t, c) = (d.b, d.t, d.c);
                let targets = d.ids(&[b, t], c);
                let acc = d.g.accuracy(x, targets, -100)?;
                d.losses.push((acc, 0.3));
                Ok(x)
            },
        },
        OpCase {
            name: "embedding",
            apply: |d| {
                // Two lookups into one table (its gradient accumulates),
                // ids [B, T] and [B·T]; id V is out of range (a zero row).
                let (b, t, c) = (d.b, d.t, d.c);
                let v = 5;
                let table = d.param(&[v, c], 1.0);
                let ids = d.ids(&[b, t], v + 1);
                let e1 = d.g.embedding(ids, table)?;
                let ids = d.ids(&[b * t], v + 1);
                let e2 = d.g.embedding(ids, table)?;
                let e2 = d.g.reshape(e2, &[b, t, c])?;
                let x = d.pick();
                let s = d.g.add(e1, e2)?;
                d.g.add(s, x)
            },
        },
        OpCase {
            name: "segment_sum",
            apply: |d| {
                // B·T rows into B·T segments by random indices (repeats,
                // empty segments, index B·T out of range: dropped).
                let x = d.pick();
                let (b, t, c) = (d.b, d.t, d.c);
                let n = b * t;
                let flat = d.g.reshape(x, &[n, c])?;
                let idx = d.ids(&[n], n + 1);
                let s = d.g.segment_sum(flat, idx, n)?;
                d.g.reshape(s, &[b, t, c])
            },
        },
        OpCase {
            name: "gather_row",
            apply: |d| {
                // One row per sequence (index T: out of range, a zero row)
                // in front of the rest of another tensor.
                let (x, y) = (d.pick(), d.pick());
                let (b, t, c) = (d.b, d.t, d.c);
                let idx = d.ids(&[b], t + 1);
                let row = d.g.gather_row(x, idx)?;
                let row = d.g.reshape(row, &[b, 1, c])?;
                let rest = d.g.slice(y, 1, 1, t - 1)?;
                d.g.concat(&[row, rest], 1)
            },
        },
        OpCase {
            name: "slice",
            apply: |d| {
                // x[.., :k] ++ y[.., k:] along a random dimension: a slice at
                // element 0 is a view, the other a copy; plus a select.
                let (x, y) = (d.pick(), d.pick());
                let shape = [d.b, d.t, d.c];
                let mut dim = d.rng.below(3) as usize;
                if shape[dim] == 1 {
                    dim = 2;
                }
                let k = 1 + d.rng.below(shape[dim] as u64 - 1) as usize;
                let a = d.g.slice(x, dim, 0, k)?;
                let rest = d.g.slice(y, dim, k, shape[dim] - k)?;
                let joined = d.g.concat(&[a, rest], dim)?;
                let (b, t, c) = (d.b, d.t, d.c);
                let last = d.g.select(x, 1, t - 1)?; // [B, C]
                let last = d.g.reshape(last, &[b, 1, c])?;
                let head = d.g.slice(joined, 1, 0, t - 1)?;
                d.g.concat(&[head, last], 1)
            },
        },
        OpCase {
            name: "concat",
            apply: |d| {
                // A CLS token in front of x[:, :T-1], added to a tensor's
                // first half joined with itself (one input twice).
                let (x, y) = (d.pick(), d.pick());
                let (b, t, c) = (d.b, d.t, d.c);
                let cls = d.param(&[b, 1, c], 1.0);
                let rest = d.g.slice(x, 1, 0, t - 1)?;
                let z = d.g.concat(&[cls, rest], 1)?;
                let half = d.g.slice(y, 2, 0, c / 2)?;
                let twice = d.g.concat(&[half, half], 2)?;
                d.g.add(z, twice)
            },
        },
        OpCase {
            name: "permute",
            apply: |d| {
                // A random non-identity permutation of [B, T, C] (a view when
                // only size-1 axes move), seen again as [B, T, C].
                let x = d.pick();
                let (b, t, c) = (d.b, d.t, d.c);
                let perms = [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
                let perm = perms[d.rng.below(5) as usize];
                let y = d.g.permute(x, &perm)?;
                let z = d.g.transpose(y, 0, 1)?;
                d.g.reshape(z, &[b, t, c])
            },
        },
        OpCase {
            name: "patchify",
            apply: |d| {
                // x as NCHW images, 2×2 patches, a linear layer on the rows
                // (a stride-2 convolution), back to [B, T, C].
                let x = d.pick();
                let (b, t, c) = (d.b, d.t, d.c);
                let (h, w) = if (t * c) % 8 == 0 { (2, 4) } else { (2, 2) };
                let ch = t * c / (h * w);
                let img = d.g.reshape(x, &[b, ch, h, w])?;
                let rows = d.g.patchify(img, 2)?;
                let wt = d.param(&[ch * 4, ch * 4], 0.5);
                let y = d.g.linear(rows, wt, None, false)?;
                d.g.reshape(y, &[b, t, c])
            },
        },
    ]
}

/// Draws graph `seed`: 2–5 ops including `forced`, then the probe loss.
fn draw(seed: u64, forced: usize, attention: AttentionImpl) -> Result<Draw> {
    let mut rng = Rng::new(seed);
    let (b, t, c) = (
        1 + rng.below(2) as usize,
        2 + rng.below(3) as usize,
        4 * (1 + rng.below(2) as usize),
    );
    let mut d = Draw {
        g: Graph::new(GraphOptions {
            attention,
            dropout: true,
        }),
        rng,
        values: Values::new(),
        b,
        t,
        c,
        pool: Vec::new(),
        losses: Vec::new(),
        n: 0,
    };
    let x0 = d.param(&[b, t, c], 1.0);
    d.pool.push(x0);
    let cases = cases();
    let n_ops = 2 + d.rng.below(4) as usize;
    let at = d.rng.below(n_ops as u64) as usize;
    let mut last = x0;
    for i in 0..n_ops {
        let k = if i == at {
            forced
        } else {
            d.rng.below(cases.len() as u64) as usize
        };
        last = (cases[k].apply)(&mut d)?;
        d.pool.push(last);
    }
    // The probe: Σ w ⊙ last with fixed random w (an input: no gradient).
    let n = b * t * c;
    let w: Vec<f64> = (0..n).map(|_| d.rng.normal() as f32 as f64).collect();
    let wid = d.input(&[n, 1], DType::F32, w);
    let flat = d.g.reshape(last, &[1, n])?;
    let s = d.g.linear(flat, wid, None, false)?;
    let probe = d.g.reshape(s, &[1])?;
    d.losses.insert(0, (probe, 1.0));
    Ok(d)
}

/// Writes an input's host values (integers are held as f64).
fn write_input(t: &kiln::Tensor, v: &HostTensor, dt: DType) -> Result<()> {
    match dt {
        DType::I32 => t.write_i32(gpu(), &v.data.iter().map(|x| *x as i32).collect::<Vec<_>>()),
        DType::U32 => {
            let w: Vec<u32> = v.data.iter().map(|x| *x as u32).collect();
            t.write_bytes(gpu(), bytemuck::cast_slice(&w))
        }
        _ => t.write_f32(gpu(), &v.to_f32()),
    }
}

/// Loss and every parameter gradient on the GPU.
fn gpu_grads(d: Draw) -> Result<(f64, BTreeMap<String, Vec<f32>>)> {
    let Draw {
        mut g,
        values,
        losses,
        ..
    } = d;
    g.backward(&losses, 1.0)?;
    let mut params = TensorMap::new();
    for p in &g.params {
        let v = &values[&p.id];
        params.insert(p.name.clone(), gpu().upload_f32(&v.shape, &v.to_f32())?);
    }
    let inputs: Vec<(TensorId, HostTensor, DType)> = g
        .inputs()
        .into_iter()
        .map(|(_, id)| (id, values[&id].clone(), g.dtype(id)))
        .collect();
    let exec = if std::env::var("KILN_UNPLANNED").is_ok() {
        Executor::unplanned(gpu(), g, &params)?
    } else {
        Executor::new(gpu(), g, &params)?
    };
    if std::env::var("KILN_DUMP").is_ok() {
        eprintln!("{}", exec.graph.dump(Some(&exec.plan)));
    }
    for (id, v, dt) in inputs {
        let t = exec.tensor(id).unwrap();
        write_input(t, &v, dt)?;
    }
    exec.run();
    let mut loss = 0.0;
    for (l, w) in &losses {
        loss += *w as f64 * pollster::block_on(exec.tensor(*l).unwrap().read_scalar(gpu()))? as f64;
    }
    let mut grads = BTreeMap::new();
    for (name, t) in exec.param_grads() {
        grads.insert(name, pollster::block_on(t.read_f32(gpu()))?);
    }
    Ok((loss, grads))
}

/// The first node output whose GPU value (one buffer per tensor, forward
/// only) differs from the CPU reference: for diagnosing a failed check.
fn first_forward_mismatch(seed: u64, forced: usize, attention: AttentionImpl) -> String {
    let d = draw(seed, forced, attention).unwrap();
    let Draw { mut g, values, .. } = d;
    let mut cpu_vals = values.clone();
    kiln::graph::eval::evaluate(&g, &mut cpu_vals).unwrap();
    g.forward_only().unwrap();
    let mut params = TensorMap::new();
    for p in &g.params {
        let v = &values[&p.id];
        params.insert(
            p.name.clone(),
            gpu().upload_f32(&v.shape, &v.to_f32()).unwrap(),
        );
    }
    let outs: Vec<(usize, &'static str, TensorId)> = g
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (i, n.op.name(), *o)))
        .collect();
    let inputs: Vec<(TensorId, DType)> = g
        .inputs()
        .into_iter()
        .map(|(_, id)| (id, g.dtype(id)))
        .collect();
    let exec = Executor::unplanned(gpu(), g, &params).unwrap();
    for (id, dt) in inputs {
        let t = exec.tensor(id).unwrap();
        let v = &values[&id];
        write_input(t, v, dt).unwrap();
    }
    exec.run();
    for (i, op, id) in outs {
        let Some(t) = exec.tensor(id) else { continue };
        if t.dtype() != DType::F32 {
            continue;
        }
        let got = pollster::block_on(t.read_f32(gpu())).unwrap();
        let want = &cpu_vals[&id].data;
        for (j, (a, b)) in got.iter().zip(want).enumerate() {
            if (*a as f64 - b).abs() > 1e-3 * (1.0 + b.abs())
                && !(b.is_infinite() && a.is_infinite())
            {
                return format!(
                    "node {i} ({op}) output {} [{j}]: GPU {a}, CPU {b}",
                    exec.graph.name(id)
                );
            }
        }
    }
    "no node output differs".into()
}

/// Checks one drawn graph; returns a line for the log.
fn check(seed: u64, forced: usize, attention: AttentionImpl) -> String {
    let name = cases()[forced].name;
    let ctx = format!("graph {seed} (forced op {name}, {attention:?})");
    let d = draw(seed, forced, attention).unwrap_or_else(|e| panic!("{ctx}: {e:#}"));
    // The CPU side sees the same graph: lower it once so its losses are set.
    let mut cpu = draw(seed, forced, attention).unwrap();
    cpu.g.backward(&cpu.losses.clone(), 1.0).unwrap();
    let params: Vec<(String, TensorId)> = cpu
        .g
        .params
        .iter()
        .map(|p| (p.name.clone(), p.id))
        .collect();
    let mut vals = cpu.values.clone();
    let want_loss = total_loss(&cpu.g, &mut vals).unwrap();
    let n_nodes = d.g.nodes.len();
    let ops: Vec<&str> = d.g.nodes.iter().map(|n| n.op.name()).collect();
    let ops = ops.join(" ");
    let (got_loss, grads) = gpu_grads(d).unwrap_or_else(|e| panic!("{ctx}: {e:#}"));
    assert!(
        (got_loss - want_loss).abs() <= 1e-4 * (1.0 + want_loss.abs()),
        "{ctx} [{ops}]: loss {got_loss} on the GPU vs {want_loss} on the CPU; {}",
        first_forward_mismatch(seed, forced, attention)
    );
    let h = 1e-4;
    let mut worst = 0.0f64;
    let mut largest = 0.0f64;
    for (pname, id) in &params {
        let base = cpu.values[id].clone();
        let fd: Vec<f64> = (0..base.numel())
            .map(|i| {
                let at = |delta: f64| {
                    let mut v = cpu.values.clone();
                    v.get_mut(id).unwrap().data[i] = base.data[i] + delta;
                    total_loss(&cpu.g, &mut v).unwrap()
                };
                (at(h) - at(-h)) / (2.0 * h)
            })
            .collect();
        let scale = fd.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        largest = largest.max(scale);
        let got = grads
            .get(pname)
            .unwrap_or_else(|| panic!("{ctx}: no gradient for {pname}"));
        for (i, (g, f)) in got.iter().zip(&fd).enumerate() {
            let tol = 1e-3 * f.abs() + 5e-4 * scale + 1e-6;
            let err = (*g as f64 - f).abs();
            assert!(
                err <= tol,
                "{ctx} [{ops}]: d{pname}[{i}] = {g} on the GPU, {f} by finite differences (tol {tol:.2e})"
            );
            worst = worst.max(err / tol);
        }
    }
    assert!(
        largest > 1e-3,
        "{ctx} [{ops}]: every gradient is ~0; the check would prove nothing"
    );
    format!("{ctx}: {n_nodes} nodes [{ops}], loss {want_loss:.5}, worst error/tol {worst:.2e}")
}

#[test]
fn random_graphs_match_finite_differences_for_every_op() {
    let n = cases().len();
    let mut seed = 1;
    for forced in 0..n {
        for attention in [AttentionImpl::Fused, AttentionImpl::Unfused] {
            eprintln!("{}", check(seed, forced, attention));
            seed += 1;
        }
    }
}
