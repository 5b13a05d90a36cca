//! layernorm.wgsl: forward (y, mean, rstd) and backward (dx, dγ, dβ) against
//! the f64 reference, by finite differences of the GPU forward, gradient
//! accumulation, determinism and argument errors.

use crate::common::*;
use kiln::kernels::layernorm::{layernorm_backward, layernorm_forward};
use kiln::reference::layernorm as r;
use kiln::runtime::{DType, Tensor};

const EPS: f32 = 1e-5;

/// (rows, C): 1, primes, sizes just past the 256-thread row width and the
/// 64-row chunk of the dγ/dβ pass, and a transformer width.
const SHAPES: [(usize, usize); 9] = [
    (1, 1),
    (1, 7),
    (4, 3),
    (3, 13),
    (33, 65),
    (130, 257),
    (5, 1031),
    (3, 768),
    (70, 1),
];

struct Case {
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dy: Vec<f32>,
}

fn case(rng: &mut Rng, rows: usize, c: usize) -> Case {
    Case {
        x: rng.vec_normal(rows * c, 1.0),
        gamma: rng.vec_uniform(c, 0.5, 1.5),
        beta: rand_vec(rng, c),
        dy: rand_vec(rng, rows * c),
    }
}

/// GPU forward: (y, mean, rstd).
fn gpu_forward(shape: &[usize], x: &[f32], gamma: &[f32], beta: &[f32]) -> [Vec<f32>; 3] {
    let c = *shape.last().unwrap();
    let rows = x.len() / c;
    let (y, mean, rstd) = (poisoned(shape), poisoned(&[rows]), poisoned(&[rows]));
    let (tx, tg, tb) = (upload(shape, x), upload(&[c], gamma), upload(&[c], beta));
    run(&layernorm_forward(gpu(), &tx, &tg, &tb, &y, &mean, &rstd, EPS).unwrap());
    [read(&y), read(&mean), read(&rstd)]
}

/// GPU forward then backward (overwriting dγ, dβ): (dx, dγ, dβ).
fn gpu_backward(shape: &[usize], k: &Case) -> [Vec<f32>; 3] {
    let c = *shape.last().unwrap();
    let rows = k.x.len() / c;
    let (tx, tg, tb) = (
        upload(shape, &k.x),
        upload(&[c], &k.gamma),
        upload(&[c], &k.beta),
    );
    let (y, mean, rstd) = (empty(shape), poisoned(&[rows]), poisoned(&[rows]));
    let (dx, dg, db) = (poisoned(shape), poisoned(&[c]), poisoned(&[c]));
    let tdy = upload(shape, &k.dy);
    let mut ds = vec![layernorm_forward(gpu(), &tx, &tg, &tb, &y, &mean, &rstd, EPS).unwrap()];
    ds.extend(
        layernorm_backward(gpu(), &tdy, &tx, &tg, &mean, &rstd, &dx, &dg, &db, false).unwrap(),
    );
    run_all(&ds);
    [read(&dx), read(&dg), read(&db)]
}

#[test]
fn forward_matches_reference() {
    let mut rng = Rng::new(21);
    for (rows, c) in SHAPES {
        let k = case(&mut rng, rows, c);
        let [y, mean, rstd] = gpu_forward(&[rows, c], &k.x, &k.gamma, &k.beta);
        let (wy, wm, wr) = r::forward(&k.x, &k.gamma, &k.beta, c, EPS);
        let what = format!("{rows}x{c}");
        // f32 tree sums over ≤ 1031 values of |x| ≲ 4, corrected mean:
        // 1e-6 measured on y; 1e-5·max(1, |y|) leaves ~10× slack.
        assert_close(&format!("y {what}"), &y, &wy, 1e-5, 1e-5);
        assert_close(&format!("mean {what}"), &mean, &wm, 1e-6, 1e-5);
        // rstd can be 1/sqrt(eps) ≈ 316 (C = 1): relative tolerance.
        assert_close(&format!("rstd {what}"), &rstd, &wr, 0.0, 1e-5);
    }
}

#[test]
fn forward_takes_any_leading_dims() {
    let mut rng = Rng::new(22);
    let shape = [2, 3, 13];
    let k = case(&mut rng, 6, 13);
    let (tx, tg, tb) = (
        upload(&shape, &k.x),
        upload(&[13], &k.gamma),
        upload(&[13], &k.beta),
    );
    let (y, mean, rstd) = (poisoned(&shape), poisoned(&[2, 3]), poisoned(&[2, 3]));
    run(&layernorm_forward(gpu(), &tx, &tg, &tb, &y, &mean, &rstd, EPS).unwrap());
    let (wy, wm, wr) = r::forward(&k.x, &k.gamma, &k.beta, 13, EPS);
    assert_close("y [2,3,13]", &read(&y), &wy, 1e-5, 1e-5);
    assert_close("mean [2,3,13]", &read(&mean), &wm, 1e-6, 1e-5);
    assert_close("rstd [2,3,13]", &read(&rstd), &wr, 0.0, 1e-5);
}

#[test]
fn forward_is_stable_for_constant_and_offset_rows() {
    // Row 0 constant (variance 0, y = β up to rounding of the mean),
    // rows 1-2 at ±80 plus unit noise (a one-pass E[x²] − E[x]² would lose
    // about 4 digits here), row 3 tiny values (rstd saturates at 1/sqrt(eps)).
    let c = 301;
    let mut rng = Rng::new(23);
    let mut x = vec![-3.7f32; c];
    x.extend((0..c).map(|_| 80.0 + rng.range(-1.0, 1.0) as f32));
    x.extend((0..c).map(|_| -80.0 + rng.range(-1.0, 1.0) as f32));
    x.extend((0..c).map(|_| rng.range(-1e-4, 1e-4) as f32));
    let gamma = rng.vec_uniform(c, 0.5, 1.5);
    let beta = rand_vec(&mut rng, c);
    let [y, mean, rstd] = gpu_forward(&[4, c], &x, &gamma, &beta);
    let (wy, wm, wr) = r::forward(&x, &gamma, &beta, c, EPS);
    // The saved f32 mean near 80 is off by up to ½ulp(80) ≈ 3.8e-6 (inherent
    // to an f32 mean), which y multiplies by rstd·γ ≲ 2.6: 1e-5 measured.
    assert_close("y (extreme rows)", &y, &wy, 2e-5, 1e-5);
    assert_close("mean (extreme rows)", &mean, &wm, 1e-5, 1e-6);
    assert_close("rstd (extreme rows)", &rstd, &wr, 0.0, 1e-4);
    // Constant row: the corrected mean is exactly −3.7, so y = β exactly
    // (an uncorrected f32 mean is off by an ulp, times rstd ≈ 316).
    assert_same_bits("y (constant row)", &y[..c], &beta);
}

#[test]
fn backward_matches_reference() {
    let mut rng = Rng::new(24);
    for (rows, c) in SHAPES {
        let k = case(&mut rng, rows, c);
        let [dx, dg, db] = gpu_backward(&[rows, c], &k);
        let (wdx, wdg, wdb) = r::backward(&k.dy, &k.x, &k.gamma, c, EPS);
        let what = format!("{rows}x{c}");
        // dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) with |dx| ≲ 10: f32 rounding
        // of the two row sums and of rstd; 4e-7 measured, 1e-5 abs + rel.
        assert_close(&format!("dx {what}"), &dx, &wdx, 1e-5, 1e-5);
        // dγ, dβ: f32 sums of 64 rows per chunk, then over chunks, of terms
        // |dy·x̂| ≲ 4; 3.8e-6 measured at 130 rows, 2e-5 abs + rel.
        assert_close(&format!("dgamma {what}"), &dg, &wdg, 2e-5, 2e-5);
        assert_close(&format!("dbeta {what}"), &db, &wdb, 2e-5, 2e-5);
    }
}

#[test]
fn backward_matches_finite_differences_of_forward() {
    let mut rng = Rng::new(25);
    for (rows, c) in [(3, 7), (2, 13), (1, 2)] {
        let shape = [rows, c];
        let k = case(&mut rng, rows, c);
        let [dx, dg, db] = gpu_backward(&shape, &k);
        let w = &k.dy; // L = Σ w·y, so dL/dy = w = dy.
        let what = format!("{rows}x{c}");
        // eps 1e-2 in f32: truncation O(eps²) and rounding O(1e-6/eps),
        // so 1e-3 abs + 1e-2 rel.
        let ix = probe_indices(rows * c, 8, &mut rng);
        let num = finite_diff(
            &|xs| gpu_forward(&shape, xs, &k.gamma, &k.beta)[0].clone(),
            &k.x,
            w,
            &ix,
            1e-2,
        );
        assert_fd(&format!("dx {what}"), &dx, &num, &ix, 1e-3, 1e-2);
        let ic = probe_indices(c, 6, &mut rng);
        let num = finite_diff(
            &|gs| gpu_forward(&shape, &k.x, gs, &k.beta)[0].clone(),
            &k.gamma,
            w,
            &ic,
            1e-2,
        );
        assert_fd(&format!("dgamma {what}"), &dg, &num, &ic, 1e-3, 1e-2);
        let num = finite_diff(
            &|bs| gpu_forward(&shape, &k.x, &k.gamma, bs)[0].clone(),
            &k.beta,
            w,
            &ic,
            1e-2,
        );
        assert_fd(&format!("dbeta {what}"), &db, &num, &ic, 1e-3, 1e-2);
    }
}

#[test]
fn backward_accumulates_into_dgamma_dbeta() {
    let mut rng = Rng::new(26);
    let (rows, c) = (70, 33);
    let k = case(&mut rng, rows, c);
    let (old_g, old_b) = (rand_vec(&mut rng, c), rand_vec(&mut rng, c));
    let (tx, tg, tb) = (
        upload(&[rows, c], &k.x),
        upload(&[c], &k.gamma),
        upload(&[c], &k.beta),
    );
    let (y, mean, rstd) = (empty(&[rows, c]), empty(&[rows]), empty(&[rows]));
    let (tdy, dx) = (upload(&[rows, c], &k.dy), poisoned(&[rows, c]));
    let (dg, db) = (upload(&[c], &old_g), upload(&[c], &old_b));
    let mut ds = vec![layernorm_forward(gpu(), &tx, &tg, &tb, &y, &mean, &rstd, EPS).unwrap()];
    ds.extend(
        layernorm_backward(gpu(), &tdy, &tx, &tg, &mean, &rstd, &dx, &dg, &db, true).unwrap(),
    );
    run_all(&ds);
    let (wdx, wdg, wdb) = r::backward(&k.dy, &k.x, &k.gamma, c, EPS);
    let add = |a: &[f32], b: &[f32]| -> Vec<f32> { a.iter().zip(b).map(|(a, b)| a + b).collect() };
    assert_close("dx (accumulate)", &read(&dx), &wdx, 1e-5, 1e-5);
    assert_close(
        "dgamma (accumulate)",
        &read(&dg),
        &add(&old_g, &wdg),
        1e-5,
        1e-5,
    );
    assert_close(
        "dbeta (accumulate)",
        &read(&db),
        &add(&old_b, &wdb),
        1e-5,
        1e-5,
    );
    // A second accumulation adds the same gradient again.
    run_all(&ds[1..]);
    let twice =
        |o: &[f32], g: &[f32]| -> Vec<f32> { o.iter().zip(g).map(|(o, g)| o + 2.0 * g).collect() };
    assert_close(
        "dgamma (2 accumulations)",
        &read(&dg),
        &twice(&old_g, &wdg),
        2e-5,
        1e-5,
    );
    assert_close(
        "dbeta (2 accumulations)",
        &read(&db),
        &twice(&old_b, &wdb),
        2e-5,
        1e-5,
    );
}

#[test]
fn zero_rows_give_zero_parameter_gradients() {
    let c = 5;
    let x = upload(&[0, c], &[]);
    let g = upload(&[c], &[1.0; 5]);
    let (mean, rstd, dx) = (upload(&[0], &[]), upload(&[0], &[]), upload(&[0, c], &[]));
    let (dg, db) = (poisoned(&[c]), poisoned(&[c]));
    run_all(
        &layernorm_backward(
            gpu(),
            &x,
            &x.clone(),
            &g,
            &mean,
            &rstd,
            &dx,
            &dg,
            &db,
            false,
        )
        .unwrap(),
    );
    assert_eq!(read(&dg), vec![0.0; c]);
    assert_eq!(read(&db), vec![0.0; c]);
}

#[test]
fn forward_and_backward_are_deterministic() {
    let mut rng = Rng::new(27);
    let (rows, c) = (200, 300);
    let k = case(&mut rng, rows, c);
    let shape = [rows, c];
    let outs = || {
        let [y, m, s] = gpu_forward(&shape, &k.x, &k.gamma, &k.beta);
        let [dx, dg, db] = gpu_backward(&shape, &k);
        [y, m, s, dx, dg, db]
    };
    let (a, b) = (outs(), outs());
    for (i, name) in ["y", "mean", "rstd", "dx", "dgamma", "dbeta"]
        .iter()
        .enumerate()
    {
        assert_same_bits(name, &a[i], &b[i]);
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let g = gpu();
    let x = upload(&[4, 6], &[0.0; 24]);
    let c6 = upload(&[6], &[1.0; 6]);
    let c5 = upload(&[5], &[1.0; 5]);
    let r4 = || upload(&[4], &[0.0; 4]);
    let y = empty(&[4, 6]);
    let err = |e: anyhow::Error| e.to_string();

    let e = err(layernorm_forward(g, &x, &c5, &c6, &y, &r4(), &r4(), EPS).unwrap_err());
    assert!(
        e.contains("gamma") && e.contains('5') && e.contains('6'),
        "{e}"
    );
    let e = err(
        layernorm_forward(g, &x, &c6, &c6, &y, &upload(&[3], &[0.0; 3]), &r4(), EPS).unwrap_err(),
    );
    assert!(e.contains("mean") && e.contains("expected 4"), "{e}");
    let e =
        err(layernorm_forward(g, &x, &c6, &c6, &empty(&[6, 4]), &r4(), &r4(), EPS).unwrap_err());
    assert!(e.contains("y has shape [6, 4]"), "{e}");
    let xi: Tensor = g.zeros(&[4, 6], DType::I32).unwrap();
    let e = err(layernorm_forward(g, &xi, &c6, &c6, &y, &r4(), &r4(), EPS).unwrap_err());
    assert!(e.contains("i32"), "{e}");
    let e = err(
        layernorm_forward(g, &upload(&[], &[1.0]), &c6, &c6, &y, &r4(), &r4(), EPS).unwrap_err(),
    );
    assert!(e.contains("scalar"), "{e}");
    let e = err(layernorm_forward(g, &x, &c6, &c6, &y, &r4(), &r4(), -1.0).unwrap_err());
    assert!(e.contains("eps"), "{e}");
    let m = r4();
    let e = err(layernorm_forward(g, &x, &c6, &c6, &y, &m, &m, EPS).unwrap_err());
    assert!(e.contains("shares"), "{e}");

    let (m, s) = (r4(), r4());
    let (dx, dg, db) = (empty(&[4, 6]), empty(&[6]), empty(&[6]));
    let e = err(
        layernorm_backward(g, &empty(&[4, 5]), &x, &c6, &m, &s, &dx, &dg, &db, false).unwrap_err(),
    );
    assert!(e.contains("dy has shape [4, 5]"), "{e}");
    let e = err(layernorm_backward(g, &y, &x, &c6, &m, &s, &dx, &c5, &db, false).unwrap_err());
    assert!(e.contains("dgamma"), "{e}");
    let e = err(layernorm_backward(g, &y, &x, &c6, &m, &s, &dx, &dg, &dg, false).unwrap_err());
    assert!(e.contains("shares"), "{e}");
}

/// The same reference checks with 256 threads per row (the GPU setting),
/// where the default device is a CPU adapter using fewer.
#[test]
fn reference_checks_with_256_threads_per_row() {
    with_256_row_threads(|| {
        forward_matches_reference();
        backward_matches_reference();
        backward_accumulates_into_dgamma_dbeta();
        forward_and_backward_are_deterministic();
    });
}
