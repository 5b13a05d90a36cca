//! Reference for `shaders/attention.wgsl`: plain softmax attention per head,
//! materialising the T×T probabilities, f64 throughout.
//!
//! Layout as the kernel: q, k, v, o, dO are [B·H, T, D]; lse is [B·H, T];
//! the key mask is [B, T] (nonzero = attend) and head bh uses row bh / H.

use crate::kernels::attention::AttentionSpec;

/// Whether query i of head bh sees key j.
fn visible(s: &AttentionSpec, mask: Option<&[i32]>, bh: usize, i: usize, j: usize) -> bool {
    !(s.causal && j > i) && mask.is_none_or(|m| m[(bh / s.heads) * s.seq + j] != 0)
}

/// Probabilities P[bh][i][j] (0 where masked; a row that sees no key is all 0)
/// and the row log-sum-exp (−∞ for such rows).
fn probs(s: &AttentionSpec, q: &[f32], k: &[f32], mask: Option<&[i32]>) -> (Vec<f64>, Vec<f64>) {
    let (t, d) = (s.seq, s.head_dim);
    let scale = 1.0 / (d as f64).sqrt();
    let mut p = vec![0.0f64; s.batch_heads * t * t];
    let mut lse = vec![f64::NEG_INFINITY; s.batch_heads * t];
    for bh in 0..s.batch_heads {
        let at = |x: &[f32], r: usize, c: usize| x[(bh * t + r) * d + c] as f64;
        for i in 0..t {
            let z: Vec<Option<f64>> = (0..t)
                .map(|j| {
                    visible(s, mask, bh, i, j)
                        .then(|| scale * (0..d).map(|c| at(q, i, c) * at(k, j, c)).sum::<f64>())
                })
                .collect();
            let m = z
                .iter()
                .flatten()
                .cloned()
                .fold(f64::NEG_INFINITY, f64::max);
            if m == f64::NEG_INFINITY {
                continue;
            }
            let sum: f64 = z.iter().flatten().map(|x| (x - m).exp()).sum();
            lse[bh * t + i] = m + sum.ln();
            for (j, zj) in z.iter().enumerate() {
                if let Some(zj) = zj {
                    p[(bh * t + i) * t + j] = (zj - m).exp() / sum;
                }
            }
        }
    }
    (p, lse)
}

/// (o, lse): o = softmax(q·kᵀ/√D + mask)·v; rows that see no key give o = 0
/// and lse = −∞.
pub fn forward(
    s: &AttentionSpec,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[i32]>,
) -> (Vec<f32>, Vec<f32>) {
    let (t, d) = (s.seq, s.head_dim);
    let (p, lse) = probs(s, q, k, mask);
    let mut o = vec![0.0f32; s.batch_heads * t * d];
    for bh in 0..s.batch_heads {
        for i in 0..t {
            for c in 0..d {
                let acc: f64 = (0..t)
                    .map(|j| p[(bh * t + i) * t + j] * v[(bh * t + j) * d + c] as f64)
                    .sum();
                o[(bh * t + i) * d + c] = acc as f32;
            }
        }
    }
    (o, lse.iter().map(|x| *x as f32).collect())
}

/// (dq, dk, dv) of [`forward`] for the output gradient `d_o`.
pub fn backward(
    s: &AttentionSpec,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d_o: &[f32],
    mask: Option<&[i32]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (t, d) = (s.seq, s.head_dim);
    let scale = 1.0 / (d as f64).sqrt();
    let (p, _) = probs(s, q, k, mask);
    let n = s.batch_heads * t * d;
    let (mut dq, mut dk, mut dv) = (vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n]);
    for bh in 0..s.batch_heads {
        let row = |r: usize| (bh * t + r) * d;
        for i in 0..t {
            let pr = &p[(bh * t + i) * t..(bh * t + i + 1) * t];
            // dP_ij = dO_i·V_j; dS = P ⊙ (dP − Σ_j P_ij dP_ij)
            let dp: Vec<f64> = (0..t)
                .map(|j| {
                    (0..d)
                        .map(|c| d_o[row(i) + c] as f64 * v[row(j) + c] as f64)
                        .sum()
                })
                .collect();
            let dot: f64 = pr.iter().zip(&dp).map(|(a, b)| a * b).sum();
            for j in 0..t {
                let ds = pr[j] * (dp[j] - dot);
                for c in 0..d {
                    dv[row(j) + c] += pr[j] * d_o[row(i) + c] as f64;
                    dq[row(i) + c] += scale * ds * k[row(j) + c] as f64;
                    dk[row(j) + c] += scale * ds * q[row(i) + c] as f64;
                }
            }
        }
    }
    let f = |x: Vec<f64>| x.into_iter().map(|v| v as f32).collect();
    (f(dq), f(dk), f(dv))
}
