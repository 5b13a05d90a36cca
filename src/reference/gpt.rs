//! An independent CPU reference of GPT-2: forward pass, mean cross-entropy
//! loss and a hand-written backward pass, all in f64 (in the manner of
//! llm.c's `train_gpt2.c`). It checks the GPU engine on small, randomly drawn
//! configurations, so it favours the obvious loop over speed, and uses no
//! autodiff: every layer type has its own `*_forward` and `*_backward`.
//!
//! The architecture is exactly Hugging Face's `GPT2LMHeadModel` with the
//! parameter names and layouts of [`param_shapes`]: linear weights are stored
//! `[in, out]` (Conv1D), the LM head is tied to `wte`, GELU is the tanh
//! approximation, layer norms use the biased variance with `eps` inside the
//! square root. Everything here is row-major.

/// The model configuration the reference needs.
#[derive(Clone, Copy, Debug)]
pub struct GptShape {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_layer: usize,
    /// Layer-norm epsilon (GPT-2 uses 1e-5).
    pub eps: f64,
}

/// Names and shapes of every parameter, in Hugging Face `GPT2LMHeadModel`
/// names and layouts, in the order [`forward_backward`] takes them.
pub fn param_shapes(s: &GptShape) -> Vec<(String, Vec<usize>)> {
    let (v, p, c) = (s.vocab_size, s.n_positions, s.n_embd);
    let mut out = vec![
        ("transformer.wte.weight".to_string(), vec![v, c]),
        ("transformer.wpe.weight".to_string(), vec![p, c]),
    ];
    for l in 0..s.n_layer {
        let layer: [(&str, Vec<usize>); LAYER_PARAMS] = [
            ("ln_1.weight", vec![c]),
            ("ln_1.bias", vec![c]),
            ("attn.c_attn.weight", vec![c, 3 * c]),
            ("attn.c_attn.bias", vec![3 * c]),
            ("attn.c_proj.weight", vec![c, c]),
            ("attn.c_proj.bias", vec![c]),
            ("ln_2.weight", vec![c]),
            ("ln_2.bias", vec![c]),
            ("mlp.c_fc.weight", vec![c, 4 * c]),
            ("mlp.c_fc.bias", vec![4 * c]),
            ("mlp.c_proj.weight", vec![4 * c, c]),
            ("mlp.c_proj.bias", vec![c]),
        ];
        for (name, shape) in layer {
            out.push((format!("transformer.h.{l}.{name}"), shape));
        }
    }
    out.push(("transformer.ln_f.weight".to_string(), vec![c]));
    out.push(("transformer.ln_f.bias".to_string(), vec![c]));
    out
}

/// What [`forward_backward`] computes.
pub struct GptOutputs {
    /// `[B, T, V]`.
    pub logits: Vec<f64>,
    /// Mean cross-entropy over the counted (non-negative) targets.
    pub loss: f64,
    /// The gradient of `loss` for every parameter, named and ordered as
    /// [`param_shapes`].
    pub grads: Vec<(String, Vec<f64>)>,
}

/// Forward and hand-written backward of GPT-2 on one batch.
///
/// `params` are in [`param_shapes`] order (f32 values, computed in f64).
/// `inputs` and `targets` are `[batch * seq]` token ids; a target of `-1` is
/// ignored: it adds nothing to the loss and the loss is the mean over the
/// counted targets. If no target is counted the loss and every gradient are
/// 0 (PyTorch would give NaN). Panics on inconsistent shapes or ids.
pub fn forward_backward(
    s: &GptShape,
    params: &[Vec<f32>],
    inputs: &[i32],
    targets: &[i32],
    batch: usize,
    seq: usize,
) -> GptOutputs {
    let shapes = param_shapes(s);
    assert_eq!(params.len(), shapes.len(), "wrong number of parameters");
    for ((name, shape), p) in shapes.iter().zip(params) {
        let n: usize = shape.iter().product();
        assert_eq!(p.len(), n, "{name}: expected {shape:?}");
    }
    assert!(
        s.n_head > 0 && s.n_embd.is_multiple_of(s.n_head),
        "n_embd % n_head != 0"
    );
    assert!(seq <= s.n_positions, "seq {seq} > n_positions");
    let n = batch * seq;
    assert_eq!(inputs.len(), n, "inputs must be [batch * seq]");
    assert_eq!(targets.len(), n, "targets must be [batch * seq]");
    let v = s.vocab_size;
    for &t in inputs {
        assert!(t >= 0 && (t as usize) < v, "input token {t} out of range");
    }
    for &t in targets {
        assert!(
            t == -1 || (t >= 0 && (t as usize) < v),
            "target {t} out of range"
        );
    }

    let flat: Vec<Vec<f64>> = params
        .iter()
        .map(|p| p.iter().map(|&x| x as f64).collect())
        .collect();
    let w = Weights::from_flat(s, flat);
    let dims = Dims {
        b: batch,
        t: seq,
        c: s.n_embd,
        h: s.n_head,
    };

    let (acts, logits, loss) = forward(s, &w, &dims, inputs, targets);
    let grads = backward(s, &w, &dims, &acts, &logits, inputs, targets);
    let grads = shapes
        .into_iter()
        .map(|(name, _)| name)
        .zip(grads.into_flat())
        .collect();
    GptOutputs {
        logits,
        loss,
        grads,
    }
}

// ---------------------------------------------------------------------------
// Parameters (and, with the same layout, their gradients)

const LAYER_PARAMS: usize = 12;

struct LayerWeights {
    ln1_w: Vec<f64>,
    ln1_b: Vec<f64>,
    attn_w: Vec<f64>, // [C, 3C]
    attn_b: Vec<f64>,
    proj_w: Vec<f64>, // [C, C]
    proj_b: Vec<f64>,
    ln2_w: Vec<f64>,
    ln2_b: Vec<f64>,
    fc_w: Vec<f64>, // [C, 4C]
    fc_b: Vec<f64>,
    fcproj_w: Vec<f64>, // [4C, C]
    fcproj_b: Vec<f64>,
}

struct Weights {
    wte: Vec<f64>, // [V, C]
    wpe: Vec<f64>, // [P, C]
    layers: Vec<LayerWeights>,
    lnf_w: Vec<f64>,
    lnf_b: Vec<f64>,
}

impl Weights {
    fn from_flat(s: &GptShape, flat: Vec<Vec<f64>>) -> Weights {
        let mut it = flat.into_iter();
        let mut next = || it.next().expect("parameter count");
        let wte = next();
        let wpe = next();
        let layers = (0..s.n_layer)
            .map(|_| LayerWeights {
                ln1_w: next(),
                ln1_b: next(),
                attn_w: next(),
                attn_b: next(),
                proj_w: next(),
                proj_b: next(),
                ln2_w: next(),
                ln2_b: next(),
                fc_w: next(),
                fc_b: next(),
                fcproj_w: next(),
                fcproj_b: next(),
            })
            .collect();
        let lnf_w = next();
        let lnf_b = next();
        Weights {
            wte,
            wpe,
            layers,
            lnf_w,
            lnf_b,
        }
    }

    /// All zeros, shaped like the parameters of `s`.
    fn zeros(s: &GptShape) -> Weights {
        let flat = param_shapes(s)
            .iter()
            .map(|(_, shape)| vec![0.0; shape.iter().product()])
            .collect();
        Weights::from_flat(s, flat)
    }

    fn into_flat(self) -> Vec<Vec<f64>> {
        let mut out = vec![self.wte, self.wpe];
        for l in self.layers {
            out.extend([
                l.ln1_w, l.ln1_b, l.attn_w, l.attn_b, l.proj_w, l.proj_b, l.ln2_w, l.ln2_b, l.fc_w,
                l.fc_b, l.fcproj_w, l.fcproj_b,
            ]);
        }
        out.push(self.lnf_w);
        out.push(self.lnf_b);
        out
    }
}

struct Dims {
    b: usize,
    t: usize,
    c: usize,
    h: usize,
}

impl Dims {
    fn n(&self) -> usize {
        self.b * self.t
    }
}

// ---------------------------------------------------------------------------
// Whole model

/// What one layer's forward keeps for its backward.
struct LayerActs {
    x_in: Vec<f64>, // [N, C] residual stream entering the layer
    ln1: LayerNormActs,
    qkv: Vec<f64>,   // [N, 3C]
    att: Vec<f64>,   // [B, H, T, T] softmax probabilities (0 above the diagonal)
    atty: Vec<f64>,  // [N, C] attention output, heads merged
    x_mid: Vec<f64>, // [N, C] residual stream after the attention block
    ln2: LayerNormActs,
    fch: Vec<f64>,      // [N, 4C] before GELU
    fch_gelu: Vec<f64>, // [N, 4C] after GELU
}

struct Acts {
    layers: Vec<LayerActs>,
    x_final: Vec<f64>, // [N, C] residual stream entering ln_f
    lnf: LayerNormActs,
}

fn forward(
    s: &GptShape,
    w: &Weights,
    d: &Dims,
    inputs: &[i32],
    targets: &[i32],
) -> (Acts, Vec<f64>, f64) {
    let (n, c) = (d.n(), d.c);
    let mut x = encoder_forward(&w.wte, &w.wpe, inputs, d.b, d.t, c);
    let mut layers = Vec::with_capacity(s.n_layer);
    for lw in &w.layers {
        let ln1 = layernorm_forward(&x, &lw.ln1_w, &lw.ln1_b, c, s.eps);
        let qkv = matmul_forward(&ln1.out, &lw.attn_w, Some(&lw.attn_b), n, c, 3 * c);
        let (atty, att) = attention_forward(&qkv, d);
        let attproj = matmul_forward(&atty, &lw.proj_w, Some(&lw.proj_b), n, c, c);
        let x_mid = residual_forward(&x, &attproj);
        let ln2 = layernorm_forward(&x_mid, &lw.ln2_w, &lw.ln2_b, c, s.eps);
        let fch = matmul_forward(&ln2.out, &lw.fc_w, Some(&lw.fc_b), n, c, 4 * c);
        let fch_gelu = gelu_forward(&fch);
        let fcproj = matmul_forward(&fch_gelu, &lw.fcproj_w, Some(&lw.fcproj_b), n, 4 * c, c);
        let x_out = residual_forward(&x_mid, &fcproj);
        layers.push(LayerActs {
            x_in: x,
            ln1,
            qkv,
            att,
            atty,
            x_mid,
            ln2,
            fch,
            fch_gelu,
        });
        x = x_out;
    }
    let lnf = layernorm_forward(&x, &w.lnf_w, &w.lnf_b, c, s.eps);
    let logits = lm_head_forward(&lnf.out, &w.wte, n, c, s.vocab_size);
    let loss = crossentropy_forward(&logits, targets, s.vocab_size);
    let acts = Acts {
        layers,
        x_final: x,
        lnf,
    };
    (acts, logits, loss)
}

fn backward(
    s: &GptShape,
    w: &Weights,
    d: &Dims,
    acts: &Acts,
    logits: &[f64],
    inputs: &[i32],
    targets: &[i32],
) -> Weights {
    let (n, c) = (d.n(), d.c);
    let mut g = Weights::zeros(s);

    let dlogits = crossentropy_backward(logits, targets, s.vocab_size);
    // Tied head: this is the first of wte's two gradient contributions.
    let dlnf = lm_head_backward(
        &mut g.wte,
        &dlogits,
        &acts.lnf.out,
        &w.wte,
        n,
        c,
        s.vocab_size,
    );
    // `dx` is the gradient of the residual stream, walked back layer by layer.
    let mut dx = vec![0.0; n * c];
    layernorm_backward(
        &mut dx,
        &mut g.lnf_w,
        &mut g.lnf_b,
        &dlnf,
        &acts.x_final,
        &w.lnf_w,
        &acts.lnf,
        c,
    );

    for ((lw, lg), la) in w.layers.iter().zip(&mut g.layers).zip(&acts.layers).rev() {
        // MLP block: x_out = x_mid + fcproj(gelu(fc(ln2(x_mid)))). The
        // residual passes dx through unchanged; the branch adds to it.
        let dfch_gelu = matmul_backward(
            &mut lg.fcproj_w,
            Some(&mut lg.fcproj_b),
            &dx,
            &la.fch_gelu,
            &lw.fcproj_w,
            n,
            4 * c,
            c,
        );
        let dfch = gelu_backward(&dfch_gelu, &la.fch);
        let dln2 = matmul_backward(
            &mut lg.fc_w,
            Some(&mut lg.fc_b),
            &dfch,
            &la.ln2.out,
            &lw.fc_w,
            n,
            c,
            4 * c,
        );
        layernorm_backward(
            &mut dx,
            &mut lg.ln2_w,
            &mut lg.ln2_b,
            &dln2,
            &la.x_mid,
            &lw.ln2_w,
            &la.ln2,
            c,
        );

        // Attention block: x_mid = x_in + proj(attention(qkv(ln1(x_in)))).
        let datty = matmul_backward(
            &mut lg.proj_w,
            Some(&mut lg.proj_b),
            &dx,
            &la.atty,
            &lw.proj_w,
            n,
            c,
            c,
        );
        let dqkv = attention_backward(&datty, &la.qkv, &la.att, d);
        let dln1 = matmul_backward(
            &mut lg.attn_w,
            Some(&mut lg.attn_b),
            &dqkv,
            &la.ln1.out,
            &lw.attn_w,
            n,
            c,
            3 * c,
        );
        layernorm_backward(
            &mut dx,
            &mut lg.ln1_w,
            &mut lg.ln1_b,
            &dln1,
            &la.x_in,
            &lw.ln1_w,
            &la.ln1,
            c,
        );
    }

    // Embedding: wte's second contribution, and wpe.
    encoder_backward(&mut g.wte, &mut g.wpe, &dx, inputs, d.b, d.t, c);
    g
}

// ---------------------------------------------------------------------------
// Layers

/// `out[b, t] = wte[inputs[b, t]] + wpe[t]`, `[B*T, C]`.
fn encoder_forward(
    wte: &[f64],
    wpe: &[f64],
    inputs: &[i32],
    b: usize,
    t: usize,
    c: usize,
) -> Vec<f64> {
    let mut out = vec![0.0; b * t * c];
    for bi in 0..b {
        for ti in 0..t {
            let row = bi * t + ti;
            let tok = inputs[row] as usize;
            let o = &mut out[row * c..(row + 1) * c];
            for i in 0..c {
                o[i] = wte[tok * c + i] + wpe[ti * c + i];
            }
        }
    }
    out
}

/// Scatter-adds `dout` into the rows of `dwte` and `dwpe` that were read.
fn encoder_backward(
    dwte: &mut [f64],
    dwpe: &mut [f64],
    dout: &[f64],
    inputs: &[i32],
    b: usize,
    t: usize,
    c: usize,
) {
    for bi in 0..b {
        for ti in 0..t {
            let row = bi * t + ti;
            let tok = inputs[row] as usize;
            for i in 0..c {
                dwte[tok * c + i] += dout[row * c + i];
                dwpe[ti * c + i] += dout[row * c + i];
            }
        }
    }
}

struct LayerNormActs {
    out: Vec<f64>,  // [N, C]
    mean: Vec<f64>, // [N]
    rstd: Vec<f64>, // [N], 1 / sqrt(biased variance + eps)
}

/// Layer norm over the last axis of `inp` `[N, C]`.
fn layernorm_forward(inp: &[f64], w: &[f64], b: &[f64], c: usize, eps: f64) -> LayerNormActs {
    let n = inp.len() / c;
    let mut out = vec![0.0; n * c];
    let mut mean = vec![0.0; n];
    let mut rstd = vec![0.0; n];
    for r in 0..n {
        let x = &inp[r * c..(r + 1) * c];
        let m = x.iter().sum::<f64>() / c as f64;
        let var = x.iter().map(|&v| (v - m) * (v - m)).sum::<f64>() / c as f64;
        let rs = 1.0 / (var + eps).sqrt();
        for i in 0..c {
            out[r * c + i] = (x[i] - m) * rs * w[i] + b[i];
        }
        mean[r] = m;
        rstd[r] = rs;
    }
    LayerNormActs { out, mean, rstd }
}

/// Adds the input gradient to `dinp` and the weight and bias gradients to
/// `dw`, `db`. With `xhat = (x - mean) * rstd` and `g = dout * w`:
/// `dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`.
#[allow(clippy::too_many_arguments)]
fn layernorm_backward(
    dinp: &mut [f64],
    dw: &mut [f64],
    db: &mut [f64],
    dout: &[f64],
    inp: &[f64],
    w: &[f64],
    acts: &LayerNormActs,
    c: usize,
) {
    let n = inp.len() / c;
    for r in 0..n {
        let (m, rs) = (acts.mean[r], acts.rstd[r]);
        let x = &inp[r * c..(r + 1) * c];
        let dy = &dout[r * c..(r + 1) * c];
        let mut mean_g = 0.0;
        let mut mean_gx = 0.0;
        for i in 0..c {
            let xhat = (x[i] - m) * rs;
            let g = dy[i] * w[i];
            mean_g += g;
            mean_gx += g * xhat;
            dw[i] += dy[i] * xhat;
            db[i] += dy[i];
        }
        mean_g /= c as f64;
        mean_gx /= c as f64;
        for i in 0..c {
            let xhat = (x[i] - m) * rs;
            let g = dy[i] * w[i];
            dinp[r * c + i] += rs * (g - mean_g - xhat * mean_gx);
        }
    }
}

/// `out[N, OC] = inp[N, IC] · w[IC, OC] + bias[OC]` (Conv1D layout: `w` is
/// stored `[in, out]`).
fn matmul_forward(
    inp: &[f64],
    w: &[f64],
    bias: Option<&[f64]>,
    n: usize,
    ic: usize,
    oc: usize,
) -> Vec<f64> {
    let mut out = vec![0.0; n * oc];
    for r in 0..n {
        let o = &mut out[r * oc..(r + 1) * oc];
        if let Some(bias) = bias {
            o.copy_from_slice(bias);
        }
        for i in 0..ic {
            let a = inp[r * ic + i];
            let wrow = &w[i * oc..(i + 1) * oc];
            for j in 0..oc {
                o[j] += a * wrow[j];
            }
        }
    }
    out
}

/// Backward of [`matmul_forward`]: adds `inpᵀ · dout` to `dw` and the column
/// sums of `dout` to `dbias`, and returns `dinp = dout · wᵀ`.
#[allow(clippy::too_many_arguments)]
fn matmul_backward(
    dw: &mut [f64],
    dbias: Option<&mut [f64]>,
    dout: &[f64],
    inp: &[f64],
    w: &[f64],
    n: usize,
    ic: usize,
    oc: usize,
) -> Vec<f64> {
    let mut dinp = vec![0.0; n * ic];
    for r in 0..n {
        let dy = &dout[r * oc..(r + 1) * oc];
        for i in 0..ic {
            let wrow = &w[i * oc..(i + 1) * oc];
            dinp[r * ic + i] = dy.iter().zip(wrow).map(|(a, b)| a * b).sum();
            let a = inp[r * ic + i];
            let dwrow = &mut dw[i * oc..(i + 1) * oc];
            for j in 0..oc {
                dwrow[j] += a * dy[j];
            }
        }
    }
    if let Some(dbias) = dbias {
        for r in 0..n {
            for j in 0..oc {
                dbias[j] += dout[r * oc + j];
            }
        }
    }
    dinp
}

/// Causal multi-head self-attention on `qkv` `[B, T, 3C]` (q, k, v each `C`
/// wide, heads of `C / H` in order). Returns the merged output `[B, T, C]`
/// and the softmax probabilities `[B, H, T, T]` (zero where masked).
fn attention_forward(qkv: &[f64], d: &Dims) -> (Vec<f64>, Vec<f64>) {
    let (b, t, c, h) = (d.b, d.t, d.c, d.h);
    let hs = c / h;
    let scale = 1.0 / (hs as f64).sqrt();
    let mut out = vec![0.0; b * t * c];
    let mut att = vec![0.0; b * h * t * t];
    let row = |bi: usize, ti: usize| (bi * t + ti) * 3 * c;
    for bi in 0..b {
        for hi in 0..h {
            for t1 in 0..t {
                let q = &qkv[row(bi, t1) + hi * hs..][..hs];
                let p = &mut att[((bi * h + hi) * t + t1) * t..][..t];
                // Scores over the visible keys, then a stable softmax.
                let mut max = f64::NEG_INFINITY;
                for (t2, pv) in p.iter_mut().enumerate().take(t1 + 1) {
                    let k = &qkv[row(bi, t2) + c + hi * hs..][..hs];
                    let sc = q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() * scale;
                    *pv = sc;
                    max = max.max(sc);
                }
                let mut sum = 0.0;
                for pv in p.iter_mut().take(t1 + 1) {
                    *pv = (*pv - max).exp();
                    sum += *pv;
                }
                for pv in p.iter_mut().take(t1 + 1) {
                    *pv /= sum;
                }
                // y = P · v
                let y = &mut out[(bi * t + t1) * c + hi * hs..][..hs];
                for (t2, &pv) in p.iter().enumerate().take(t1 + 1) {
                    let v = &qkv[row(bi, t2) + 2 * c + hi * hs..][..hs];
                    for i in 0..hs {
                        y[i] += pv * v[i];
                    }
                }
            }
        }
    }
    (out, att)
}

/// Backward of [`attention_forward`]: returns `dqkv` `[B, T, 3C]`.
fn attention_backward(dout: &[f64], qkv: &[f64], att: &[f64], d: &Dims) -> Vec<f64> {
    let (b, t, c, h) = (d.b, d.t, d.c, d.h);
    let hs = c / h;
    let scale = 1.0 / (hs as f64).sqrt();
    let mut dqkv = vec![0.0; b * t * 3 * c];
    let row = |bi: usize, ti: usize| (bi * t + ti) * 3 * c;
    let mut dp = vec![0.0; t];
    for bi in 0..b {
        for hi in 0..h {
            for t1 in 0..t {
                let p = &att[((bi * h + hi) * t + t1) * t..][..t];
                let dy = &dout[(bi * t + t1) * c + hi * hs..][..hs];
                // Through y = P · v: dP = dy · vᵀ, dv += Pᵀ · dy.
                for t2 in 0..=t1 {
                    let vo = row(bi, t2) + 2 * c + hi * hs;
                    dp[t2] = dy.iter().zip(&qkv[vo..vo + hs]).map(|(a, b)| a * b).sum();
                    for i in 0..hs {
                        dqkv[vo + i] += p[t2] * dy[i];
                    }
                }
                // Through the softmax: ds = P ⊙ (dP - Σ P dP).
                let dot: f64 = (0..=t1).map(|t2| p[t2] * dp[t2]).sum();
                // Through s = scale · q · kᵀ.
                let qo = row(bi, t1) + hi * hs;
                for t2 in 0..=t1 {
                    let ds = p[t2] * (dp[t2] - dot) * scale;
                    let ko = row(bi, t2) + c + hi * hs;
                    for i in 0..hs {
                        dqkv[qo + i] += ds * qkv[ko + i];
                        dqkv[ko + i] += ds * qkv[qo + i];
                    }
                }
            }
        }
    }
    dqkv
}

const GELU_SCALE: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)
const GELU_CUBE: f64 = 0.044715;

/// GELU, tanh approximation: `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
fn gelu_forward(inp: &[f64]) -> Vec<f64> {
    inp.iter()
        .map(|&x| 0.5 * x * (1.0 + (GELU_SCALE * (x + GELU_CUBE * x * x * x)).tanh()))
        .collect()
}

/// Returns `dinp = dout · gelu'(inp)`.
fn gelu_backward(dout: &[f64], inp: &[f64]) -> Vec<f64> {
    dout.iter()
        .zip(inp)
        .map(|(&dy, &x)| {
            let th = (GELU_SCALE * (x + GELU_CUBE * x * x * x)).tanh();
            let du = GELU_SCALE * (1.0 + 3.0 * GELU_CUBE * x * x);
            dy * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du)
        })
        .collect()
}

fn residual_forward(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Tied LM head: `logits[N, V] = inp[N, C] · wteᵀ`.
fn lm_head_forward(inp: &[f64], wte: &[f64], n: usize, c: usize, v: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * v];
    for r in 0..n {
        let x = &inp[r * c..(r + 1) * c];
        for j in 0..v {
            let e = &wte[j * c..(j + 1) * c];
            out[r * v + j] = x.iter().zip(e).map(|(a, b)| a * b).sum();
        }
    }
    out
}

/// Backward of [`lm_head_forward`]: adds `doutᵀ · inp` to `dwte` and returns
/// `dinp = dout · wte`.
fn lm_head_backward(
    dwte: &mut [f64],
    dout: &[f64],
    inp: &[f64],
    wte: &[f64],
    n: usize,
    c: usize,
    v: usize,
) -> Vec<f64> {
    let mut dinp = vec![0.0; n * c];
    for r in 0..n {
        let x = &inp[r * c..(r + 1) * c];
        for j in 0..v {
            let dy = dout[r * v + j];
            if dy == 0.0 {
                continue;
            }
            for i in 0..c {
                dinp[r * c + i] += dy * wte[j * c + i];
                dwte[j * c + i] += dy * x[i];
            }
        }
    }
    dinp
}

fn counted(targets: &[i32]) -> usize {
    targets.iter().filter(|&&t| t >= 0).count()
}

/// Mean over the counted targets (`-1` is ignored) of
/// `logsumexp(logits[r]) - logits[r, target[r]]`; 0 when none is counted.
fn crossentropy_forward(logits: &[f64], targets: &[i32], v: usize) -> f64 {
    let count = counted(targets);
    if count == 0 {
        return 0.0;
    }
    let mut total = 0.0;
    for (r, &tg) in targets.iter().enumerate() {
        if tg < 0 {
            continue;
        }
        let z = &logits[r * v..(r + 1) * v];
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|&x| (x - max).exp()).sum::<f64>().ln();
        total += lse - z[tg as usize];
    }
    total / count as f64
}

/// `dlogits[r] = (softmax(logits[r]) - onehot(target[r])) / count`, and 0
/// for ignored rows.
fn crossentropy_backward(logits: &[f64], targets: &[i32], v: usize) -> Vec<f64> {
    let mut d = vec![0.0; logits.len()];
    let count = counted(targets);
    if count == 0 {
        return d;
    }
    let inv = 1.0 / count as f64;
    for (r, &tg) in targets.iter().enumerate() {
        if tg < 0 {
            continue;
        }
        let z = &logits[r * v..(r + 1) * v];
        let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|&x| (x - max).exp()).sum();
        let dr = &mut d[r * v..(r + 1) * v];
        for j in 0..v {
            dr[j] = (z[j] - max).exp() / sum * inv;
        }
        dr[tg as usize] -= inv;
    }
    d
}
