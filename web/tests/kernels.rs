//! The kernel library's core cases (fused attention included), small shapes, against the f64 CPU
//! references (`kiln::reference`): in the browser on WebGPU
//! (`cargo test --target wasm32-unknown-unknown -p kiln-web --test kernels`)
//! and natively (`cargo test -p kiln-web --test kernels`). The exhaustive
//! suite is `kernels-tests/` in the core crate; this one proves the same
//! WGSL runs correctly through the browser's WebGPU, with the tolerances
//! that suite derives (stated at each check).

mod common;

use common::*;
use kiln::kernels::adamw::{adamw_step, AdamWConfig};
use kiln::kernels::attention::{attention_backward, attention_forward, AttentionSpec};
use kiln::kernels::crossentropy::cross_entropy;
use kiln::kernels::elementwise as ew;
use kiln::kernels::embedding::{embedding_backward, embedding_forward};
use kiln::kernels::gelu::{gelu_backward, gelu_forward, GeluKind};
use kiln::kernels::layernorm::{layernorm_backward, layernorm_forward};
use kiln::kernels::matmul::{matmul, MatmulSpec};
use kiln::kernels::reduce::{col_sum, sum_squares};
use kiln::kernels::softmax::{softmax_backward, softmax_forward_scaled};
use kiln::reference as r;
use kiln::Gpu;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

const TRANSPOSES: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

async fn matmul_check(g: &Gpu, spec: MatmulSpec, bias: bool, rng: &mut Rng) {
    let len = |stride: usize, size: usize| (spec.batch - 1) * stride + size;
    let a = rand_vec(rng, len(spec.stride_a, spec.m * spec.k));
    let b = rand_vec(rng, len(spec.stride_b, spec.k * spec.n));
    let c0 = rand_vec(rng, len(spec.stride_c, spec.m * spec.n));
    let bias_v = bias.then(|| rand_vec(rng, spec.n));
    let (ta, tb) = (upload(g, &[a.len()], &a), upload(g, &[b.len()], &b));
    let tbias = bias_v.as_ref().map(|v| upload(g, &[v.len()], v));
    let tc = upload(g, &[c0.len()], &c0);
    let d = matmul(g, &spec, &ta, &tb, tbias.as_ref(), &tc)
        .unwrap_or_else(|e| panic!("{spec:?}: {e:#}"));
    g.submit(&[&d]);
    let got = read(g, &tc).await;
    let want = r::matmul::matmul(&spec, &a, &b, bias_v.as_deref(), &c0);
    let tol = 1e-5 * (spec.k as f64).sqrt() * (spec.alpha.abs() as f64).max(1.0) + 1e-6;
    assert_close(
        &format!("matmul [{}] {spec:?}", d.label),
        &got,
        &want,
        tol,
        0.0,
    );
}

/// Matmul: 1×1×1, primes and sizes off every tile edge, all four transpose
/// layouts; then bias with alpha, beta accumulation, and a batch with padded
/// and broadcast (stride 0) operands. |err| ≤ 1e-5·√K·max(1, |α|) + 1e-6
/// (f32 sums of K products of values in [-1, 1); ~100× the observed error).
async fn matmul_cases(g: Gpu) {
    let mut rng = Rng::new(101);
    for (m, n, k) in [(1, 1, 1), (1, 7, 13), (33, 65, 17), (20, 12, 36)] {
        for (ta, tb) in TRANSPOSES {
            let base = MatmulSpec::new(m, n, k).trans_a(ta).trans_b(tb);
            matmul_check(&g, base, false, &mut rng).await;
            matmul_check(&g, base.alpha(-1.75), true, &mut rng).await;
            matmul_check(&g, base.alpha(0.5).beta(-0.25), true, &mut rng).await;
        }
    }
    let (m, n, k) = (5, 9, 11);
    for (ta, tb) in TRANSPOSES {
        let base = MatmulSpec::new(m, n, k).trans_a(ta).trans_b(tb).batched(3);
        matmul_check(&g, base, false, &mut rng).await;
        matmul_check(&g, base.strides(0, k * n + 4, m * n + 6), false, &mut rng).await;
        matmul_check(
            &g,
            base.strides(m * k + 2, 0, m * n).beta(1.0),
            true,
            &mut rng,
        )
        .await;
    }
}

/// LayerNorm forward (y, mean, rstd) and backward (dx, dγ, dβ) over rows
/// of 1, 7, 65, 300 (past the 256-thread row) and 33·65 (past the 64-row
/// chunk of the dγ/dβ pass). Tolerances as kernels-tests/layernorm.rs:
/// y 1e-5 abs+rel, mean 1e-6 abs + 1e-5 rel, rstd 1e-5 rel, dx 1e-5,
/// dγ/dβ 2e-5 abs+rel.
async fn layernorm_cases(g: Gpu) {
    const EPS: f32 = 1e-5;
    let mut rng = Rng::new(21);
    for (rows, c) in [(1, 1), (1, 7), (3, 13), (33, 65), (70, 65), (4, 300)] {
        let x = rng.vec_normal(rows * c, 1.0);
        let gamma = rng.vec_uniform(c, 0.5, 1.5);
        let beta = rand_vec(&mut rng, c);
        let dy = rand_vec(&mut rng, rows * c);
        let (tx, tg, tb) = (
            upload(&g, &[rows, c], &x),
            upload(&g, &[c], &gamma),
            upload(&g, &[c], &beta),
        );
        let (y, mean, rstd) = (
            poisoned(&g, &[rows, c]),
            poisoned(&g, &[rows]),
            poisoned(&g, &[rows]),
        );
        let tdy = upload(&g, &[rows, c], &dy);
        let (dx, dg, db) = (
            poisoned(&g, &[rows, c]),
            poisoned(&g, &[c]),
            poisoned(&g, &[c]),
        );
        let mut ds = vec![layernorm_forward(&g, &tx, &tg, &tb, &y, &mean, &rstd, EPS).unwrap()];
        ds.extend(
            layernorm_backward(&g, &tdy, &tx, &tg, &mean, &rstd, &dx, &dg, &db, false).unwrap(),
        );
        run_all(&g, &ds);
        let (wy, wm, wr) = r::layernorm::forward(&x, &gamma, &beta, c, EPS);
        let (wdx, wdg, wdb) = r::layernorm::backward(&dy, &x, &gamma, c, EPS);
        let what = format!("{rows}x{c}");
        assert_close(
            &format!("ln y {what}"),
            &read(&g, &y).await,
            &wy,
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("ln mean {what}"),
            &read(&g, &mean).await,
            &wm,
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("ln rstd {what}"),
            &read(&g, &rstd).await,
            &wr,
            0.0,
            1e-5,
        );
        assert_close(
            &format!("ln dx {what}"),
            &read(&g, &dx).await,
            &wdx,
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("ln dgamma {what}"),
            &read(&g, &dg).await,
            &wdg,
            2e-5,
            2e-5,
        );
        assert_close(
            &format!("ln dbeta {what}"),
            &read(&g, &db).await,
            &wdb,
            2e-5,
            2e-5,
        );
    }
}

/// Softmax: plain rows (1, 13, 257 wide) and causal attention blocks
/// (t = 1, 5, 17, 260 > 256 threads; scaled), then backward. Probabilities
/// 1e-6 abs + 1e-5 rel; masked entries exactly 0; backward 1e-6 + 1e-5 rel.
async fn softmax_cases(g: Gpu) {
    let mut rng = Rng::new(31);
    for (shape, scale, causal) in [
        (vec![1, 1], 1.0f32, None),
        (vec![3, 13], 1.0, None),
        (vec![5, 257], 1.0, None),
        (vec![3, 1, 1], 1.0, Some(1)),
        (vec![4, 5, 5], 1.0, Some(5)),
        (vec![6, 17, 17], 0.25, Some(17)),
        (vec![2, 260, 260], 0.125, Some(260)),
    ] {
        let n = *shape.last().unwrap();
        let numel: usize = shape.iter().product();
        let x = rng.vec_normal(numel, 3.0);
        let (tx, y) = (upload(&g, &shape, &x), poisoned(&g, &shape));
        let d = softmax_forward_scaled(&g, &tx, &y, scale, causal).unwrap();
        g.submit(&[&d]);
        let got = read(&g, &y).await;
        let want = r::softmax::forward(&x, n, scale, causal);
        let what = format!("softmax {shape:?} causal {causal:?}");
        assert_close(&what, &got, &want, 1e-6, 1e-5);
        if let Some(t) = causal {
            for (i, v) in got.iter().enumerate() {
                let (row, j) = (i / t, i % t);
                if j > row % t {
                    assert_eq!(
                        v.to_bits(),
                        0,
                        "{what}: masked entry row {row} col {j} is {v}"
                    );
                }
            }
        }
        let dy = rand_vec(&mut rng, numel);
        let (tdy, dx) = (upload(&g, &shape, &dy), poisoned(&g, &shape));
        let d = softmax_backward(&g, &y, &tdy, &dx).unwrap();
        g.submit(&[&d]);
        let want_dx = r::softmax::backward(&got, &dy, n);
        assert_close(
            &format!("{what} backward"),
            &read(&g, &dx).await,
            &want_dx,
            1e-6,
            1e-5,
        );
    }
}

/// GELU, both forms, forward and backward, normals (σ 3) plus the awkward
/// values (0, ±tiny, saturation edges, ±30, huge): 1e-6 abs + 2e-6 rel.
async fn gelu_cases(g: Gpu) {
    let mut rng = Rng::new(61);
    let mut x = rng.vec_normal(1000, 3.0);
    x.extend_from_slice(&[
        0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 3.0, -3.0, 10.0, -10.0, 19.9, -19.9, 20.1, -20.1, 30.0,
        -30.0, 1e10, -1e10, 3e38, -3e38,
    ]);
    let n = x.len();
    let dy = rand_vec(&mut rng, n);
    let (tx, tdy) = (upload(&g, &[n], &x), upload(&g, &[n], &dy));
    for kind in [GeluKind::Tanh, GeluKind::Erf] {
        let (y, dx) = (poisoned(&g, &[n]), poisoned(&g, &[n]));
        let f = gelu_forward(&g, &tx, &y, kind).unwrap();
        let b = gelu_backward(&g, &tx, &tdy, &dx, kind).unwrap();
        g.submit(&[&f, &b]);
        let want_y = r::gelu::gelu_forward(&x, kind);
        let want_dx = r::gelu::gelu_backward(&x, &dy, kind);
        assert_close(
            &format!("gelu {kind:?}"),
            &read(&g, &y).await,
            &want_y,
            1e-6,
            2e-6,
        );
        assert_close(
            &format!("gelu' {kind:?}"),
            &read(&g, &dx).await,
            &want_dx,
            1e-6,
            2e-6,
        );
    }
}

/// Fused softmax cross-entropy with ignored (−100) and out-of-range targets
/// and a grad scale: losses 1e-6·(1 + max|logit|) + 1e-5 rel, dlogits
/// 1e-6·scale/count + 1e-5 rel.
async fn cross_entropy_cases(g: Gpu) {
    const IGNORE: i32 = -100;
    let mut rng = Rng::new(41);
    for (v, rows, gs) in [(1, 1, 1.0f32), (7, 3, 0.25), (257, 37, 1.0), (1031, 5, 1.0)] {
        let logits = rng.vec_normal(rows * v, 2.0);
        let mut t: Vec<i32> = (0..rows).map(|_| rng.below(v as u64) as i32).collect();
        for (i, x) in t.iter_mut().enumerate() {
            if i % 5 == 4 {
                *x = IGNORE;
            }
        }
        if rows >= 3 {
            t[1] = v as i32;
        }
        let tl = upload(&g, &[rows, v], &logits);
        let tt = upload_i32(&g, &[rows], &t);
        let (losses, mean, dl) = (
            poisoned(&g, &[rows]),
            poisoned(&g, &[1]),
            poisoned(&g, &[rows, v]),
        );
        let ds = cross_entropy(&g, &tl, &tt, &losses, &mean, Some(&dl), IGNORE, gs).unwrap();
        run_all(&g, &ds);
        let want = r::crossentropy::cross_entropy(&logits, &t, v, IGNORE, gs);
        let m = logits.iter().fold(0f64, |a, x| a.max(x.abs() as f64));
        let atol = 1e-6 * (1.0 + m);
        let what = format!("cross-entropy V={v} rows={rows}");
        assert_close(
            &format!("{what} losses"),
            &read(&g, &losses).await,
            &want.losses,
            atol,
            1e-5,
        );
        assert_close(
            &format!("{what} mean"),
            &read(&g, &mean).await,
            &[want.mean_loss],
            atol,
            1e-5,
        );
        let scale = gs.abs() as f64 / want.count.max(1) as f64;
        assert_close(
            &format!("{what} dlogits"),
            &read(&g, &dl).await,
            &want.dlogits,
            1e-6 * scale,
            1e-5,
        );
    }
}

/// Token + position embedding forward (exact: one f32 add) and the
/// deterministic backward accumulating into non-zero gradients (1e-5 abs +
/// rel), with repeated and out-of-range tokens and N = 300 crossing tiles.
async fn embedding_cases(g: Gpu) {
    let mut rng = Rng::new(51);
    for (b, t, max_t, v, c) in [(1, 5, 8, 11, 1), (3, 7, 7, 13, 65), (3, 100, 101, 4, 7)] {
        let n = b * t;
        let mut tok: Vec<i32> = (0..n).map(|_| rng.below(v as u64) as i32).collect();
        tok[1] = v as i32;
        tok[n - 1] = -3;
        let wte = rand_vec(&mut rng, v * c);
        let wpe = rand_vec(&mut rng, max_t * c);
        let dout = rand_vec(&mut rng, n * c);
        let dwte0 = rand_vec(&mut rng, v * c);
        let dwpe0 = rand_vec(&mut rng, max_t * c);
        let tt = upload_i32(&g, &[b, t], &tok);
        let out = poisoned(&g, &[b, t, c]);
        // Every input tensor stays bound to a name until the work is read
        // back: a dropped tensor's buffer returns to the pool for reuse.
        let (twte, twpe) = (upload(&g, &[v, c], &wte), upload(&g, &[max_t, c], &wpe));
        let tdout = upload(&g, &[b, t, c], &dout);
        let (dwte, dwpe) = (upload(&g, &[v, c], &dwte0), upload(&g, &[max_t, c], &dwpe0));
        let mut ds = vec![embedding_forward(&g, &tt, &twte, &twpe, &out).unwrap()];
        ds.extend(embedding_backward(&g, &tt, &tdout, &dwte, &dwpe).unwrap());
        run_all(&g, &ds);
        let what = format!("embedding B={b} T={t} V={v} C={c}");
        let want = r::embedding::embedding_forward(&tok, t, &wte, &wpe, c);
        assert_close(
            &format!("{what} forward"),
            &read(&g, &out).await,
            &want,
            0.0,
            0.0,
        );
        let (mut want_te, mut want_pe) = (dwte0.clone(), dwpe0.clone());
        r::embedding::embedding_backward(&tok, t, &dout, &mut want_te, &mut want_pe, c);
        assert_close(
            &format!("{what} dwte"),
            &read(&g, &dwte).await,
            &want_te,
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("{what} dwpe"),
            &read(&g, &dwpe).await,
            &want_pe,
            1e-5,
            1e-5,
        );
    }
}

/// Three AdamW steps over two parameters with weight decay and active
/// global-norm clipping (Σg² from the GPU's sum_squares, checked to 1e-5
/// relative). param 2e-7 + 4e-6 rel, m 1e-7 + 4e-6 rel, v 1e-10 + 4e-6 rel.
async fn adamw_cases(g: Gpu) {
    let mut rng = Rng::new(71);
    let cfg = AdamWConfig {
        lr: 0.01,
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let sizes = [257usize, 1031];
    let mut p: Vec<Vec<f32>> = sizes.iter().map(|&n| rand_vec(&mut rng, n)).collect();
    let mut m: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
    let mut v = m.clone();
    let tp: Vec<_> = p.iter().map(|x| upload(&g, &[x.len()], x)).collect();
    let tm: Vec<_> = sizes.iter().map(|&n| zeros(&g, &[n])).collect();
    let tv: Vec<_> = sizes.iter().map(|&n| zeros(&g, &[n])).collect();
    let tg: Vec<_> = sizes.iter().map(|&n| poisoned(&g, &[n])).collect();
    let sumsq = poisoned(&g, &[1]);
    let max_norm = 5.0f32;
    for t in 1..=3u32 {
        let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| rand_vec(&mut rng, n)).collect();
        for (tg, gv) in tg.iter().zip(&grads) {
            tg.write_f32(&g, gv).unwrap();
        }
        let refs: Vec<_> = tg.iter().collect();
        let mut ds = sum_squares(&g, &refs, &sumsq).unwrap();
        for k in 0..sizes.len() {
            ds.push(
                adamw_step(
                    &g,
                    &tp[k],
                    &tg[k],
                    &tm[k],
                    &tv[k],
                    Some((&sumsq, max_norm)),
                    &cfg,
                    t,
                )
                .unwrap(),
            );
        }
        run_all(&g, &ds);
        let gpu_sumsq = read(&g, &sumsq).await[0] as f64;
        let slices: Vec<&[f32]> = grads.iter().map(|x| x.as_slice()).collect();
        let exact = r::reduce::sum_squares(&slices);
        assert!(
            (gpu_sumsq - exact).abs() <= 1e-5 * exact,
            "sum_squares {gpu_sumsq} vs {exact}"
        );
        assert!(
            r::adamw::clip_factor(gpu_sumsq, max_norm) < 0.5,
            "clipping must be active"
        );
        for k in 0..sizes.len() {
            r::adamw::adamw_step(
                &mut p[k],
                &grads[k],
                &mut m[k],
                &mut v[k],
                Some((gpu_sumsq, max_norm)),
                &cfg,
                t,
            );
            let what = format!("adamw t={t} size {}", sizes[k]);
            assert_close(
                &format!("{what} param"),
                &read(&g, &tp[k]).await,
                &p[k],
                2e-7,
                4e-6,
            );
            assert_close(
                &format!("{what} m"),
                &read(&g, &tm[k]).await,
                &m[k],
                1e-7,
                4e-6,
            );
            assert_close(
                &format!("{what} v"),
                &read(&g, &tv[k]).await,
                &v[k],
                1e-10,
                4e-6,
            );
        }
    }
}

/// Fused attention forward and backward (FlashAttention-style) against the
/// f64 reference: head dims 32, 64 and 128, causal and bidirectional, T = 1
/// and T not a tile multiple, and a key-padding mask whose last batch row
/// pads every key (o = 0, lse = −∞, zero gradients there). Tolerances as in
/// `kernels-tests/attention.rs`: o 2e-6 + 1e-5·|ref|, lse 1e-5 + 1e-6·|ref|,
/// dq/dk/dv 1e-5 + 1e-4·|ref|.
async fn attention_cases(g: Gpu) {
    let mut rng = Rng::new(64);
    let cases = [
        (1, 2, 17, 32, true, false),
        (2, 1, 1, 64, false, false),
        (1, 1, 33, 128, true, false),
        (2, 2, 19, 64, false, true),
    ];
    for (b, h, t, d, causal, masked) in cases {
        let spec = AttentionSpec::new(b, h, t, d, causal);
        let what = format!("attention B{b} H{h} T{t} D{d} causal {causal} mask {masked}");
        let n = b * h * t * d;
        let sh = [b * h, t, d];
        let (q, k, v, d_o) = (
            rand_vec(&mut rng, n),
            rand_vec(&mut rng, n),
            rand_vec(&mut rng, n),
            rand_vec(&mut rng, n),
        );
        let mask: Option<Vec<i32>> = masked.then(|| {
            // row 0 pads its last third; the last row pads every key
            let mut m = vec![1i32; b * t];
            m[t - t / 3..t].fill(0);
            m[(b - 1) * t..].fill(0);
            m
        });
        let tm = mask.as_ref().map(|m| upload_i32(&g, &[b, t], m));
        let (tq, tk, tv, tdo) = (
            upload(&g, &sh, &q),
            upload(&g, &sh, &k),
            upload(&g, &sh, &v),
            upload(&g, &sh, &d_o),
        );
        let (o, lse) = (poisoned(&g, &sh), poisoned(&g, &sh[..2]));
        let (dq, dk, dv) = (poisoned(&g, &sh), poisoned(&g, &sh), poisoned(&g, &sh));
        let mut ds = attention_forward(&g, &spec, &tq, &tk, &tv, tm.as_ref(), &o, &lse)
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        ds.extend(
            attention_backward(
                &g,
                &spec,
                &tq,
                &tk,
                &tv,
                &o,
                &lse,
                &tdo,
                tm.as_ref(),
                &dq,
                &dk,
                &dv,
            )
            .unwrap_or_else(|e| panic!("{what}: {e:#}")),
        );
        run_all(&g, &ds);
        let m = mask.as_deref();
        let (ro, rlse) = r::attention::forward(&spec, &q, &k, &v, m);
        let (rdq, rdk, rdv) = r::attention::backward(&spec, &q, &k, &v, &d_o, m);
        assert_close(&format!("{what}: o"), &read(&g, &o).await, &ro, 2e-6, 1e-5);
        for (i, (got, want)) in read(&g, &lse).await.iter().zip(&rlse).enumerate() {
            if *want == f32::NEG_INFINITY {
                assert_eq!(
                    *got,
                    f32::NEG_INFINITY,
                    "{what}: lse[{i}] of a row seeing no key"
                );
            } else {
                let tol = 1e-5 + 1e-6 * want.abs() as f64;
                assert!(
                    (got - want).abs() as f64 <= tol,
                    "{what}: lse[{i}] {got} vs {want}"
                );
            }
        }
        for (name, got, want) in [("dq", &dq, &rdq), ("dk", &dk, &rdk), ("dv", &dv, &rdv)] {
            assert_close(
                &format!("{what}: {name}"),
                &read(&g, got).await,
                want,
                1e-5,
                1e-4,
            );
        }
    }
    g.check_errors()
        .expect("no wgpu error may have been raised");
}

/// col_sum (two-stage, overwrite and accumulate) and sum_squares over tensors
/// of odd sizes: |err| ≤ 1e-5·Σ|terms| (f32 trees of < 150 additions).
async fn reduce_cases(g: Gpu) {
    let mut rng = Rng::new(81);
    for (rows, cols) in [(1, 1), (7, 1), (33, 65), (130, 257), (4099, 3)] {
        let x = rand_vec(&mut rng, rows * cols);
        let tx = upload(&g, &[rows, cols], &x);
        let init = rand_vec(&mut rng, cols);
        for acc in [false, true] {
            let out = upload(&g, &[cols], &init);
            run_all(&g, &col_sum(&g, &tx, rows, cols, &out, acc).unwrap());
            let got = read(&g, &out).await;
            let mut want = r::reduce::col_sum(&x, rows, cols);
            let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let mut scale = r::reduce::col_sum(&abs, rows, cols);
            if acc {
                for j in 0..cols {
                    want[j] = (want[j] as f64 + init[j] as f64) as f32;
                    scale[j] += init[j].abs();
                }
            }
            for j in 0..cols {
                let err = (got[j] as f64 - want[j] as f64).abs();
                assert!(
                    err <= 1e-5 * scale[j] as f64 + 1e-30,
                    "col_sum {rows}x{cols} acc {acc} col {j}: got {} want {}",
                    got[j],
                    want[j]
                );
            }
        }
    }
    let sizes = [1usize, 7, 255, 257, 2049, 65_537];
    let data: Vec<Vec<f32>> = sizes.iter().map(|&n| rand_vec(&mut rng, n)).collect();
    let ts: Vec<_> = data.iter().map(|d| upload(&g, &[d.len()], d)).collect();
    let refs: Vec<_> = ts.iter().collect();
    let out = poisoned(&g, &[1]);
    run_all(&g, &sum_squares(&g, &refs, &out).unwrap());
    let slices: Vec<&[f32]> = data.iter().map(|d| d.as_slice()).collect();
    let want = r::reduce::sum_squares(&slices);
    let got = read(&g, &out).await[0] as f64;
    assert!(
        (got - want).abs() <= 1e-5 * want,
        "sum_squares {got} vs {want}"
    );
}

/// add, add_inplace, copy, fill: exact in f32.
async fn elementwise_cases(g: Gpu) {
    let mut rng = Rng::new(11);
    for n in [1usize, 7, 255, 256, 257, 10_007] {
        let a = rand_vec(&mut rng, n);
        let b = rand_vec(&mut rng, n);
        let (ta, tb, out) = (
            upload(&g, &[n], &a),
            upload(&g, &[n], &b),
            poisoned(&g, &[n]),
        );
        g.submit(&[&ew::add(&g, &ta, &tb, &out).unwrap()]);
        assert_close(
            "add",
            &read(&g, &out).await,
            &r::elementwise::add(&a, &b),
            0.0,
            0.0,
        );
        g.submit(&[&ew::copy(&g, &ta, &out).unwrap()]);
        assert_close("copy", &read(&g, &out).await, &a, 0.0, 0.0);
        g.submit(&[&ew::add_inplace(&g, &ta, &tb).unwrap()]);
        let sum = r::elementwise::add(&a, &b);
        assert_close("add_inplace", &read(&g, &ta).await, &sum, 0.0, 0.0);
        g.submit(&[&ew::fill(&g, &out, 3.25).unwrap()]);
        assert!(read(&g, &out).await.iter().all(|v| *v == 3.25), "fill");
    }
}

/// A tensor past the device's limits fails with Kiln's message, not a
/// WebGPU validation error.
async fn limits_are_clear_errors(g: Gpu) {
    let max = g.limits().max_buffer_size;
    let n = (max / 4 + 1024) as usize;
    let err = g
        .empty(&[n], kiln::DType::F32)
        .expect_err("a tensor past max_buffer_size must be refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("max_buffer_size"), "unhelpful error: {msg}");
    g.check_errors()
        .expect("no wgpu error may have been raised");
}

gpu_test!(matmul_matches_reference, matmul_cases);
gpu_test!(layernorm_forward_backward_match_reference, layernorm_cases);
gpu_test!(softmax_plain_and_causal_match_reference, softmax_cases);
gpu_test!(gelu_matches_reference, gelu_cases);
gpu_test!(cross_entropy_matches_reference, cross_entropy_cases);
gpu_test!(embedding_forward_backward_match_reference, embedding_cases);
gpu_test!(adamw_with_clipping_matches_reference, adamw_cases);
gpu_test!(col_sum_and_sum_squares_match_reference, reduce_cases);
gpu_test!(
    fused_attention_forward_backward_match_reference,
    attention_cases
);
gpu_test!(elementwise_matches_reference, elementwise_cases);
gpu_test!(
    oversized_tensors_fail_with_kiln_message,
    limits_are_clear_errors
);
