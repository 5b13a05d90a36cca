//! mse.wgsl and kldiv.wgsl: losses and their fused gradients against the
//! f64 references (every combination of which gradients are written, one
//! and several stage-1 groups, extreme logits, temperatures), finite
//! differences of the GPU loss, determinism, argument errors; and
//! cross-entropy over a [B, B] similarity matrix in both directions (CLIP).

use crate::common::*;
use kiln::kernels::crossentropy::cross_entropy;
use kiln::kernels::kldiv::{kl_div, KlGrads};
use kiln::kernels::mse::{mse, MseGrads};
use kiln::reference::crossentropy as ce_ref;
use kiln::reference::losses as r;

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|x| *x as f32).collect()
}

/// (loss, da, db) on the GPU.
fn gpu_mse(
    a: &[f32],
    b: &[f32],
    ga: bool,
    gb: bool,
    seed: f32,
) -> (f32, Option<Vec<f32>>, Option<Vec<f32>>) {
    let n = a.len();
    let (ta, tb, loss) = (upload(&[n], a), upload(&[n], b), poisoned(&[1]));
    let da = ga.then(|| poisoned(&[n]));
    let db = gb.then(|| poisoned(&[n]));
    let g = MseGrads {
        da: da.as_ref(),
        db: db.as_ref(),
        seed,
    };
    run_all(&mse(gpu(), &ta, &tb, &loss, g).unwrap());
    (read(&loss)[0], da.as_ref().map(read), db.as_ref().map(read))
}

#[test]
fn mse_matches_reference() {
    let mut rng = Rng::new(91);
    for n in [1, 7, 2049, 100_003] {
        let (a, b) = (rng.vec_normal(n, 2.0), rng.vec_normal(n, 2.0));
        let (want, wg) = r::mse(&f64s(&a), &f64s(&b));
        for (ga, gb) in [(false, false), (true, false), (false, true), (true, true)] {
            let seed = 0.75;
            let (loss, da, db) = gpu_mse(&a, &b, ga, gb, seed);
            assert_close(&format!("mse n={n}"), &[loss], &[want as f32], 0.0, 1e-5);
            let wda: Vec<f32> = wg.iter().map(|g| (seed as f64 * g) as f32).collect();
            let wdb: Vec<f32> = wda.iter().map(|g| -g).collect();
            if let Some(da) = da {
                assert_close(&format!("mse da n={n}"), &da, &wda, 1e-9, 1e-5);
            }
            if let Some(db) = db {
                assert_close(&format!("mse db n={n}"), &db, &wdb, 1e-9, 1e-5);
            }
        }
    }
}

#[test]
fn mse_gradient_matches_finite_differences_and_is_deterministic() {
    let mut rng = Rng::new(92);
    let n = 23;
    let (a, b) = (rng.vec_normal(n, 1.0), rng.vec_normal(n, 1.0));
    let (_, da, db) = gpu_mse(&a, &b, true, true, 1.0);
    let idx: Vec<usize> = (0..n).collect();
    let fa = |xs: &[f32]| vec![gpu_mse(xs, &b, false, false, 0.0).0];
    let num = finite_diff(&fa, &a, &[1.0], &idx, 1e-2);
    assert_fd("mse a", &da.unwrap(), &num, &idx, 1e-4, 1e-2);
    let fb = |xs: &[f32]| vec![gpu_mse(&a, xs, false, false, 0.0).0];
    let num = finite_diff(&fb, &b, &[1.0], &idx, 1e-2);
    assert_fd("mse b", &db.unwrap(), &num, &idx, 1e-4, 1e-2);
    let (a, b) = (rng.vec_normal(50_001, 1.0), rng.vec_normal(50_001, 1.0));
    let x = gpu_mse(&a, &b, true, false, 1.0);
    let y = gpu_mse(&a, &b, true, false, 1.0);
    assert_same_bits("mse", &[x.0], &[y.0]);
    assert_same_bits("mse da", &x.1.unwrap(), &y.1.unwrap());
}

/// (loss, losses, ds, dt) on the GPU.
#[allow(clippy::type_complexity)]
fn gpu_kl(
    s: &[f32],
    t: &[f32],
    v: usize,
    tau: f32,
    gs: bool,
    gt: bool,
    seed: f32,
) -> (f32, Vec<f32>, Option<Vec<f32>>, Option<Vec<f32>>) {
    let rows = s.len() / v;
    let (ts, tt) = (upload(&[rows, v], s), upload(&[rows, v], t));
    let (losses, loss) = (poisoned(&[rows]), poisoned(&[1]));
    let ds = gs.then(|| poisoned(&[rows, v]));
    let dt = gt.then(|| poisoned(&[rows, v]));
    let g = KlGrads {
        ds: ds.as_ref(),
        dt: dt.as_ref(),
        seed,
    };
    run_all(&kl_div(gpu(), &ts, &tt, tau, &losses, &loss, g).unwrap());
    (
        read(&loss)[0],
        read(&losses),
        ds.as_ref().map(read),
        dt.as_ref().map(read),
    )
}

fn check_kl() {
    let mut rng = Rng::new(93);
    for (rows, v, tau) in [
        (1, 1, 1.0f32),
        (3, 7, 2.0),
        (4, 257, 0.5),
        (2, 1031, 4.0),
        (1, 50257, 1.0),
    ] {
        let (s, t) = (rng.vec_normal(rows * v, 3.0), rng.vec_normal(rows * v, 3.0));
        let (want, wl, wds, wdt) = r::kl_div(&f64s(&s), &f64s(&t), v, tau as f64);
        let seed = 0.5;
        for (gs, gt) in [(false, false), (true, false), (false, true), (true, true)] {
            let what = format!("kl {rows}x{v} τ={tau} grads {gs}/{gt}");
            let (loss, losses, ds, dt) = gpu_kl(&s, &t, v, tau, gs, gt, seed);
            // KL ≥ 0 is a difference of log-probabilities of size ~|z|/τ.
            let atol = 2e-6 * (1.0 + (3.0 * 4.0 / tau as f64)) * (tau * tau) as f64;
            assert_close(&format!("{what} loss"), &[loss], &[want as f32], atol, 1e-4);
            assert_close(&format!("{what} losses"), &losses, &f32s(&wl), atol, 1e-4);
            let g =
                |w: &[f64]| -> Vec<f32> { w.iter().map(|x| (seed as f64 * x) as f32).collect() };
            let gtol = 1e-6 * (tau as f64) / rows as f64;
            if let Some(ds) = ds {
                assert_close(&format!("{what} ds"), &ds, &g(&wds), gtol, 1e-4);
            }
            if let Some(dt) = dt {
                assert_close(
                    &format!("{what} dt"),
                    &dt,
                    &g(&wdt),
                    gtol * (1.0 + 12.0 / tau as f64),
                    1e-4,
                );
            }
        }
    }
    // Extreme logits: an underflowing teacher probability adds 0, not NaN.
    let s = vec![0.0, 100.0, -100.0, 3.0];
    let t = vec![-1e4, 1e4, 0.0, 1e4];
    let (loss, _, ds, dt) = gpu_kl(&s, &t, 4, 1.0, true, true, 1.0);
    let (want, _, _, _) = r::kl_div(&f64s(&s), &f64s(&t), 4, 1.0);
    assert!(
        loss.is_finite()
            && ds
                .unwrap()
                .iter()
                .chain(&dt.unwrap())
                .all(|x| x.is_finite())
    );
    assert_close("kl extreme", &[loss], &[want as f32], 1e-3, 1e-5);
}

#[test]
fn kl_div_matches_reference() {
    check_kl();
    with_256_row_threads(check_kl);
}

#[test]
fn kl_div_gradients_match_finite_differences_and_are_deterministic() {
    let mut rng = Rng::new(94);
    let (rows, v, tau) = (3, 5, 2.0);
    let (s, t) = (rng.vec_normal(rows * v, 1.5), rng.vec_normal(rows * v, 1.5));
    let (_, _, ds, dt) = gpu_kl(&s, &t, v, tau, true, true, 1.0);
    let idx: Vec<usize> = (0..rows * v).collect();
    let fs = |xs: &[f32]| vec![gpu_kl(xs, &t, v, tau, false, false, 0.0).0];
    let num = finite_diff(&fs, &s, &[1.0], &idx, 1e-2);
    assert_fd("kl student", &ds.unwrap(), &num, &idx, 2e-4, 1e-2);
    let ft = |xs: &[f32]| vec![gpu_kl(&s, xs, v, tau, false, false, 0.0).0];
    let num = finite_diff(&ft, &t, &[1.0], &idx, 1e-2);
    assert_fd("kl teacher", &dt.unwrap(), &num, &idx, 2e-4, 1e-2);
    let (s, t) = (rng.vec_normal(9 * 1031, 2.0), rng.vec_normal(9 * 1031, 2.0));
    let a = gpu_kl(&s, &t, 1031, 2.0, true, true, 1.0);
    let b = gpu_kl(&s, &t, 1031, 2.0, true, true, 1.0);
    assert_same_bits("kl", &[a.0], &[b.0]);
    assert_same_bits("kl ds", &a.2.unwrap(), &b.2.unwrap());
    assert_same_bits("kl dt", &a.3.unwrap(), &b.3.unwrap());
}

#[test]
fn losses_bad_arguments_are_clear_errors() {
    let (a, b) = (upload(&[2, 3], &[0.0; 6]), upload(&[3, 2], &[0.0; 6]));
    let err = mse(gpu(), &a, &b, &empty(&[1]), MseGrads::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("mse_loss") && err.contains("shape"), "{err}");
    let err = kl_div(
        gpu(),
        &a,
        &a,
        0.0,
        &empty(&[2]),
        &empty(&[1]),
        KlGrads::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("temperature"), "{err}");
    let err = kl_div(
        gpu(),
        &a,
        &a,
        1.0,
        &empty(&[3]),
        &empty(&[1]),
        KlGrads::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("losses"), "{err}");
}

/// CLIP's loss: cross-entropy over a [B, B] similarity matrix with targets
/// 0..B, image→text (rows) and text→image (the transpose).
#[test]
fn cross_entropy_over_a_square_similarity_matrix() {
    let mut rng = Rng::new(95);
    for b in [1, 2, 7, 33] {
        let logits = rng.vec_normal(b * b, 4.0);
        let transposed: Vec<f32> = (0..b * b).map(|i| logits[(i % b) * b + i / b]).collect();
        let targets: Vec<i32> = (0..b as i32).collect();
        for (what, l) in [("rows", &logits), ("columns", &transposed)] {
            let (tl, tt) = (upload(&[b, b], l), upload_i32(&[b], &targets));
            let (losses, mean, dl) = (poisoned(&[b]), poisoned(&[1]), poisoned(&[b, b]));
            run_all(&cross_entropy(gpu(), &tl, &tt, &losses, &mean, Some(&dl), -100, 0.5).unwrap());
            let want = ce_ref::cross_entropy(l, &targets, b, -100, 0.5);
            let what = format!("clip loss B={b} {what}");
            assert_close(&what, &read(&losses), &want.losses, 1e-5, 1e-5);
            assert_close(&what, &read(&mean), &[want.mean_loss], 1e-5, 1e-5);
            assert_close(&what, &read(&dl), &want.dlogits, 1e-7, 1e-5);
        }
    }
}
