//! attention.wgsl (fused, FlashAttention-style): forward and backward against
//! the f64 reference and against the unfused GPU path (matmul, scaled
//! softmax, matmul, as the graph lowers attention without fusion), causal and
//! bidirectional, T not a tile multiple, head dims 4..128, key-padding masks
//! including rows that see no key, finite differences of the GPU forward,
//! determinism and argument errors.
//!
//! Tolerances (inputs uniform in [-1, 1), so |o| ≤ 1 and |lse| ≲ log T + √D·scale):
//! - o: 2e-6 + 1e-5·|ref| against the reference, the same against the
//!   unfused GPU path (both are f32 with a different summation order);
//! - lse: 1e-5 + 1e-6·|ref|;
//! - dq, dk, dv: 1e-5 + 1e-4·|ref| (dk and dv sum over up to T queries).

use crate::common::*;
use kiln::kernels::attention::{attention_backward, attention_forward, AttentionSpec};
use kiln::kernels::matmul::{matmul, MatmulSpec};
use kiln::kernels::softmax::{softmax_backward, softmax_forward_scaled};
use kiln::ops::AttentionShape;
use kiln::reference::attention as r;
use kiln::runtime::{DType, Tensor};

const O_TOL: (f64, f64) = (2e-6, 1e-5);
const LSE_TOL: (f64, f64) = (1e-5, 1e-6);
const GRAD_TOL: (f64, f64) = (1e-5, 1e-4);

struct Inputs {
    spec: AttentionSpec,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    d_o: Vec<f32>,
    mask: Option<Vec<i32>>,
}

impl Inputs {
    fn new(spec: AttentionSpec, rng: &mut Rng) -> Self {
        let n = spec.batch_heads * spec.seq * spec.head_dim;
        Self {
            spec,
            q: rand_vec(rng, n),
            k: rand_vec(rng, n),
            v: rand_vec(rng, n),
            d_o: rand_vec(rng, n),
            mask: None,
        }
    }
    fn shape(&self) -> [usize; 3] {
        let s = &self.spec;
        [s.batch_heads, s.seq, s.head_dim]
    }
    fn name(&self) -> String {
        let s = &self.spec;
        format!(
            "B{} H{} T{} D{} {}{}",
            s.batch,
            s.heads,
            s.seq,
            s.head_dim,
            if s.causal { "causal" } else { "bidir" },
            if self.mask.is_some() { " masked" } else { "" }
        )
    }
    fn mask_tensor(&self) -> Option<Tensor> {
        self.mask
            .as_ref()
            .map(|m| upload_i32(&[self.spec.batch, self.spec.seq], m))
    }
}

/// (o, lse) from the fused GPU forward; outputs start as NaN.
fn gpu_forward(x: &Inputs, q: &[f32], k: &[f32], v: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let sh = x.shape();
    let (o, lse) = (poisoned(&sh), poisoned(&sh[..2]));
    let mask = x.mask_tensor();
    run_all(
        &attention_forward(
            gpu(),
            &x.spec,
            &upload(&sh, q),
            &upload(&sh, k),
            &upload(&sh, v),
            mask.as_ref(),
            &o,
            &lse,
        )
        .unwrap(),
    );
    (read(&o), read(&lse))
}

/// (o, lse, dq, dk, dv) from the fused GPU forward and backward.
#[allow(clippy::type_complexity)]
fn gpu_both(x: &Inputs) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let sh = x.shape();
    let (q, k, v, d_o) = (
        upload(&sh, &x.q),
        upload(&sh, &x.k),
        upload(&sh, &x.v),
        upload(&sh, &x.d_o),
    );
    let (o, lse) = (poisoned(&sh), poisoned(&sh[..2]));
    let (dq, dk, dv) = (poisoned(&sh), poisoned(&sh), poisoned(&sh));
    let mask = x.mask_tensor();
    let g = gpu();
    let mut ds = attention_forward(g, &x.spec, &q, &k, &v, mask.as_ref(), &o, &lse).unwrap();
    ds.extend(
        attention_backward(
            g,
            &x.spec,
            &q,
            &k,
            &v,
            &o,
            &lse,
            &d_o,
            mask.as_ref(),
            &dq,
            &dk,
            &dv,
        )
        .unwrap(),
    );
    run_all(&ds);
    (read(&o), read(&lse), read(&dq), read(&dk), read(&dv))
}

/// (o, dq, dk, dv) from the unfused GPU path, step for step as the graph
/// lowers `Attention` with `AttentionImpl::Unfused` (no key mask there).
fn gpu_unfused(x: &Inputs) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let s = &x.spec;
    assert!(x.mask.is_none());
    let (bh, t, d) = (s.batch_heads, s.seq, s.head_dim);
    let shape = AttentionShape {
        batch: s.batch,
        seq: t,
        heads: s.heads,
        head_dim: d,
        causal: s.causal,
    };
    let (s_spec, y_spec) = shape.unfused_specs();
    let sh = x.shape();
    let g = gpu();
    let (q, k, v, d_o) = (
        upload(&sh, &x.q),
        upload(&sh, &x.k),
        upload(&sh, &x.v),
        upload(&sh, &x.d_o),
    );
    let (scores, probs, o) = (poisoned(&[bh, t, t]), poisoned(&[bh, t, t]), poisoned(&sh));
    let (dp, dsc) = (poisoned(&[bh, t, t]), poisoned(&[bh, t, t]));
    let (dq, dk, dv) = (poisoned(&sh), poisoned(&sh), poisoned(&sh));
    let scale = s.scale();
    let ds = vec![
        matmul(g, &s_spec, &q, &k, None, &scores).unwrap(),
        softmax_forward_scaled(g, &scores, &probs, scale, s.causal.then_some(t)).unwrap(),
        matmul(g, &y_spec, &probs, &v, None, &o).unwrap(),
        matmul(
            g,
            &MatmulSpec::new(t, t, d).batched(bh).trans_b(true),
            &d_o,
            &v,
            None,
            &dp,
        )
        .unwrap(),
        matmul(
            g,
            &MatmulSpec::new(t, d, t).batched(bh).trans_a(true),
            &probs,
            &d_o,
            None,
            &dv,
        )
        .unwrap(),
        softmax_backward(g, &probs, &dp, &dsc).unwrap(),
        matmul(
            g,
            &MatmulSpec::new(t, d, t).batched(bh).alpha(scale),
            &dsc,
            &k,
            None,
            &dq,
        )
        .unwrap(),
        matmul(
            g,
            &MatmulSpec::new(t, d, t)
                .batched(bh)
                .trans_a(true)
                .alpha(scale),
            &dsc,
            &q,
            None,
            &dk,
        )
        .unwrap(),
    ];
    run_all(&ds);
    (read(&o), read(&dq), read(&dk), read(&dv))
}

fn close(what: &str, got: &[f32], want: &[f32], tol: (f64, f64)) {
    assert_close(what, got, want, tol.0, tol.1);
}

/// The shapes: every T of {1, 2, 7, 17, 33, 64} at D = 4 and 8, both mask
/// kinds, B·H alternating 1 and 3; then D = 32, 64, 128 at smaller T.
fn cases() -> Vec<AttentionSpec> {
    let mut v = Vec::new();
    let mut i = 0;
    for t in [1, 2, 7, 17, 33, 64] {
        for d in [4, 8] {
            for causal in [true, false] {
                let (b, h) = [(1, 1), (1, 3), (3, 1)][i % 3];
                v.push(AttentionSpec::new(b, h, t, d, causal));
                i += 1;
            }
        }
    }
    for (d, ts) in [(32, &[17, 33][..]), (64, &[7, 33]), (128, &[1, 9, 17])] {
        for &t in ts {
            for causal in [true, false] {
                let (b, h) = [(1, 1), (1, 3), (3, 1)][i % 3];
                v.push(AttentionSpec::new(b, h, t, d, causal));
                i += 1;
            }
        }
    }
    v
}

/// Largest |got − want| over all elements, for the report.
fn worst(got: &[f32], want: &[f32]) -> f64 {
    max_abs_err(got, want).0
}

#[test]
fn forward_and_backward_match_reference() {
    let mut rng = Rng::new(61);
    let mut errs = [0.0f64; 5];
    for spec in cases() {
        let x = Inputs::new(spec, &mut rng);
        let what = x.name();
        let (o, lse, dq, dk, dv) = gpu_both(&x);
        let (ro, rlse) = r::forward(&spec, &x.q, &x.k, &x.v, None);
        let (rdq, rdk, rdv) = r::backward(&spec, &x.q, &x.k, &x.v, &x.d_o, None);
        close(&format!("{what}: o"), &o, &ro, O_TOL);
        close(&format!("{what}: lse"), &lse, &rlse, LSE_TOL);
        close(&format!("{what}: dq"), &dq, &rdq, GRAD_TOL);
        close(&format!("{what}: dk"), &dk, &rdk, GRAD_TOL);
        close(&format!("{what}: dv"), &dv, &rdv, GRAD_TOL);
        for (e, (g, w)) in errs.iter_mut().zip([
            (&o, &ro),
            (&lse, &rlse),
            (&dq, &rdq),
            (&dk, &rdk),
            (&dv, &rdv),
        ]) {
            *e = e.max(worst(g, w));
        }
    }
    eprintln!(
        "fused vs f64 reference, max abs err: o {:.2e} lse {:.2e} dq {:.2e} dk {:.2e} dv {:.2e}",
        errs[0], errs[1], errs[2], errs[3], errs[4]
    );
}

#[test]
fn forward_and_backward_match_the_unfused_gpu_path() {
    let mut rng = Rng::new(62);
    let mut errs = [0.0f64; 4];
    for spec in cases().into_iter().step_by(2).chain(
        // the GPT fixture's attention shape
        [AttentionSpec::new(2, 4, 64, 32, true)],
    ) {
        let x = Inputs::new(spec, &mut rng);
        let what = format!("{} vs unfused", x.name());
        let (o, _, dq, dk, dv) = gpu_both(&x);
        let (uo, udq, udk, udv) = gpu_unfused(&x);
        close(&format!("{what}: o"), &o, &uo, O_TOL);
        close(&format!("{what}: dq"), &dq, &udq, GRAD_TOL);
        close(&format!("{what}: dk"), &dk, &udk, GRAD_TOL);
        close(&format!("{what}: dv"), &dv, &udv, GRAD_TOL);
        for (e, (g, w)) in errs
            .iter_mut()
            .zip([(&o, &uo), (&dq, &udq), (&dk, &udk), (&dv, &udv)])
        {
            *e = e.max(worst(g, w));
        }
    }
    eprintln!(
        "fused vs unfused GPU, max abs diff: o {:.2e} dq {:.2e} dk {:.2e} dv {:.2e}",
        errs[0], errs[1], errs[2], errs[3]
    );
}

/// Batch row 0 pads its last keys, row 1 pads scattered keys including the
/// first (so under the causal mask query 0 sees nothing), row 2 pads every
/// key: those rows must give o = 0, lse = −∞ and zero gradients.
#[test]
fn key_padding_mask_including_fully_padded_rows() {
    let mut rng = Rng::new(63);
    for (t, d, causal) in [(17, 8, false), (17, 8, true), (33, 4, true), (9, 64, false)] {
        let (b, h) = (3, 2);
        let mut x = Inputs::new(AttentionSpec::new(b, h, t, d, causal), &mut rng);
        let mut mask = vec![1i32; b * t];
        mask[t - t / 3..t].fill(0);
        for j in 0..t {
            mask[t + j] = (j % 3 != 0) as i32;
            mask[2 * t + j] = 0;
        }
        x.mask = Some(mask.clone());
        let what = x.name();
        let (o, lse, dq, dk, dv) = gpu_both(&x);
        let m = Some(&mask[..]);
        let (ro, rlse) = r::forward(&x.spec, &x.q, &x.k, &x.v, m);
        let (rdq, rdk, rdv) = r::backward(&x.spec, &x.q, &x.k, &x.v, &x.d_o, m);
        close(&format!("{what}: o"), &o, &ro, O_TOL);
        close(&format!("{what}: dq"), &dq, &rdq, GRAD_TOL);
        close(&format!("{what}: dk"), &dk, &rdk, GRAD_TOL);
        close(&format!("{what}: dv"), &dv, &rdv, GRAD_TOL);
        for (i, (g, w)) in lse.iter().zip(&rlse).enumerate() {
            if *w == f32::NEG_INFINITY {
                assert_eq!(
                    *g,
                    f32::NEG_INFINITY,
                    "{what}: lse[{i}] of a row seeing no key"
                );
            } else {
                let tol = LSE_TOL.0 + LSE_TOL.1 * w.abs() as f64;
                assert!((g - w).abs() as f64 <= tol, "{what}: lse[{i}] {g} vs {w}");
            }
        }
        // Batch row 2 (heads 4 and 5) sees nothing: exact zeros everywhere.
        let hd = t * d;
        for (name, a) in [("o", &o), ("dq", &dq), ("dk", &dk), ("dv", &dv)] {
            assert!(
                a[4 * hd..].iter().all(|v| v.to_bits() == 0),
                "{what}: {name} of the fully padded batch row is not exactly 0"
            );
        }
        // Padded keys get no gradient.
        for bh in 0..b * h {
            for j in 0..t {
                if mask[(bh / h) * t + j] == 0 {
                    let row = (bh * t + j) * d..(bh * t + j + 1) * d;
                    assert!(
                        dk[row.clone()].iter().all(|v| *v == 0.0),
                        "{what}: dk of a padded key"
                    );
                    assert!(
                        dv[row].iter().all(|v| *v == 0.0),
                        "{what}: dv of a padded key"
                    );
                }
            }
        }
        if causal {
            // Query 0 of batch row 1 has its only visible key padded.
            assert_eq!(
                lse[2 * t],
                f32::NEG_INFINITY,
                "{what}: causal query 0, key 0 padded"
            );
        }
    }
}

/// A u32 mask means the same as an i32 one.
#[test]
fn u32_key_mask_is_accepted() {
    let mut rng = Rng::new(64);
    let spec = AttentionSpec::new(2, 1, 5, 4, false);
    let x = Inputs::new(spec, &mut rng);
    let sh = x.shape();
    let (q, k, v) = (upload(&sh, &x.q), upload(&sh, &x.k), upload(&sh, &x.v));
    let bits: Vec<u32> = vec![1, 1, 0, 1, 0, 0, 1, 1, 1, 1];
    let m = gpu().empty(&[2, 5], DType::U32).unwrap();
    m.write_bytes(gpu(), bytemuck::cast_slice(&bits)).unwrap();
    let (o, lse) = (poisoned(&sh), poisoned(&sh[..2]));
    run_all(&attention_forward(gpu(), &spec, &q, &k, &v, Some(&m), &o, &lse).unwrap());
    let mask: Vec<i32> = bits.iter().map(|b| *b as i32).collect();
    let (ro, _) = r::forward(&spec, &x.q, &x.k, &x.v, Some(&mask));
    close("u32 mask: o", &read(&o), &ro, O_TOL);
}

#[test]
fn backward_matches_finite_differences_of_forward() {
    let mut rng = Rng::new(65);
    for (spec, masked) in [
        (AttentionSpec::new(1, 2, 5, 4, true), false),
        (AttentionSpec::new(2, 1, 6, 3, false), true),
    ] {
        let mut x = Inputs::new(spec, &mut rng);
        if masked {
            x.mask = Some(vec![1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1]);
        }
        let what = x.name();
        // L = Σ w·o with w = d_o, so the backward's dq, dk, dv are dL/d·.
        let (_, _, dq, dk, dv) = gpu_both(&x);
        let n = x.q.len();
        let idx = probe_indices(n, 12, &mut rng);
        for (name, analytic, which) in [("dq", &dq, 0), ("dk", &dk, 1), ("dv", &dv, 2)] {
            let base = [x.q.clone(), x.k.clone(), x.v.clone()];
            let f = |xs: &[f32]| {
                let mut a = base.clone();
                a[which] = xs.to_vec();
                gpu_forward(&x, &a[0], &a[1], &a[2]).0
            };
            let num = finite_diff(&f, &base[which], &x.d_o, &idx, 1e-2);
            // eps 1e-2: truncation O(eps²) ≈ 1e-4, f32 rounding ≈ 1e-7/eps.
            assert_fd(&format!("{what}: {name}"), analytic, &num, &idx, 1e-3, 1e-2);
        }
    }
}

#[test]
fn forward_and_backward_are_deterministic() {
    let mut rng = Rng::new(66);
    for spec in [
        AttentionSpec::new(1, 3, 33, 64, true),
        AttentionSpec::new(3, 1, 17, 8, false),
    ] {
        let x = Inputs::new(spec, &mut rng);
        let a = gpu_both(&x);
        let b = gpu_both(&x);
        let what = x.name();
        assert_same_bits(&format!("{what}: o"), &a.0, &b.0);
        assert_same_bits(&format!("{what}: lse"), &a.1, &b.1);
        assert_same_bits(&format!("{what}: dq"), &a.2, &b.2);
        assert_same_bits(&format!("{what}: dk"), &a.3, &b.3);
        assert_same_bits(&format!("{what}: dv"), &a.4, &b.4);
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let g = gpu();
    let spec = AttentionSpec::new(2, 3, 5, 8, true);
    let sh = [6, 5, 8];
    let t = |s: &[usize]| empty(s);
    let (q, k, v, o, lse) = (t(&sh), t(&sh), t(&sh), t(&sh), t(&[6, 5]));
    let msg = |e: anyhow::Error| e.to_string();
    let fwd = |spec: &AttentionSpec, q: &Tensor, m: Option<&Tensor>, o: &Tensor, l: &Tensor| {
        attention_forward(g, spec, q, &k, &v, m, o, l).map(|_| ())
    };

    let e = msg(fwd(&spec, &t(&[6, 5, 7]), None, &o, &lse).unwrap_err());
    assert!(e.contains("attention_forward") && e.contains("q"), "{e}");
    let e = msg(fwd(&spec, &q, None, &o, &t(&[6, 4])).unwrap_err());
    assert!(e.contains("lse") && e.contains("30"), "{e}");
    let qi = g.zeros(&sh, DType::I32).unwrap();
    let e = msg(fwd(&spec, &qi, None, &o, &lse).unwrap_err());
    assert!(e.contains("i32"), "{e}");
    let bad = AttentionSpec {
        batch_heads: 5,
        ..spec
    };
    let e = msg(fwd(&bad, &q, None, &o, &lse).unwrap_err());
    assert!(e.contains("batch_heads"), "{e}");
    for d in [0, 129] {
        let bad = AttentionSpec {
            head_dim: d,
            ..spec
        };
        let e = msg(fwd(&bad, &q, None, &o, &lse).unwrap_err());
        assert!(e.contains("head_dim") && e.contains("128"), "{e}");
    }
    let bad = AttentionSpec { seq: 0, ..spec };
    let e = msg(fwd(&bad, &q, None, &o, &lse).unwrap_err());
    assert!(e.contains("seq"), "{e}");
    let e = msg(fwd(&spec, &q, Some(&t(&[2, 5])), &o, &lse).unwrap_err());
    assert!(e.contains("key_mask") && e.contains("f32"), "{e}");
    let e = msg(fwd(
        &spec,
        &q,
        Some(&g.zeros(&[3, 5], DType::I32).unwrap()),
        &o,
        &lse,
    )
    .unwrap_err());
    assert!(e.contains("key_mask") && e.contains("10"), "{e}");
    let e = msg(fwd(&spec, &q, None, &q, &lse).unwrap_err());
    assert!(e.contains("shares"), "{e}");

    let (d_o, dq, dk, dv) = (t(&sh), t(&sh), t(&sh), t(&sh));
    let e = msg(
        attention_backward(g, &spec, &q, &k, &v, &o, &lse, &d_o, None, &dq, &dq, &dv).unwrap_err(),
    );
    assert!(
        e.contains("attention_backward") && e.contains("shares"),
        "{e}"
    );
    let e = msg(
        attention_backward(g, &spec, &q, &k, &v, &o, &lse, &d_o, None, &dq, &dk, &v).unwrap_err(),
    );
    assert!(e.contains("dv") && e.contains("shares"), "{e}");
    let e = msg(attention_backward(
        g,
        &spec,
        &q,
        &k,
        &v,
        &o,
        &lse,
        &t(&[6, 5, 9]),
        None,
        &dq,
        &dk,
        &dv,
    )
    .unwrap_err());
    assert!(e.contains("d_o"), "{e}");
}
