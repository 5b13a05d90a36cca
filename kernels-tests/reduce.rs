//! reduce.wgsl: col_sum (two-stage), sum_squares over many tensors.
//!
//! Tolerance for every sum: |got − want| ≤ 1e-5 · Σ|terms| (+ 1e-30), want
//! from f64. Each kernel's sum is a tree of f32 additions whose longest chain
//! is under ~150 additions for the shapes here (col_sum: chunk/4 + 2 + chunks
//! ≤ 32 + 2 + 64 at 8192 rows; sum_squares:
//! ~12 + 8 + partials/256 + 8), so the classical worst-case bound is
//! ≤ 150 · 2⁻²⁴ · Σ|terms| ≈ 9e-6 · Σ|terms|. An element summed twice or
//! missed errs by ~|x| ≈ Σ|terms|/rows, far above this for every shape.

use crate::common::*;
use kiln::kernels::reduce as k;
use kiln::reference::reduce as r;
use kiln::{DType, Tensor};

const SHAPES: [(usize, usize); 7] = [
    (1, 1),
    (1, 7),
    (7, 1),
    (33, 65),
    (130, 257),
    (4099, 3),
    (8192, 33),
];

const REL: f64 = 1e-5;

/// Asserts |got − want| ≤ REL · scale[i] per element.
fn assert_sum_close(what: &str, got: &[f32], want: &[f32], scale: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for i in 0..got.len() {
        let err = (got[i] as f64 - want[i] as f64).abs();
        let tol = REL * scale[i] as f64 + 1e-30;
        assert!(
            err <= tol,
            "{what}: element {i}: got {}, want {} (|err| {err:.3e} > tol {tol:.3e})",
            got[i],
            want[i]
        );
    }
}

fn abs(x: &[f32]) -> Vec<f32> {
    x.iter().map(|v| v.abs()).collect()
}

fn col_sum_gpu(x: &Tensor, rows: usize, cols: usize, out: &Tensor, acc: bool) {
    run_all(&k::col_sum(gpu(), x, rows, cols, out, acc).unwrap());
}

#[test]
fn col_sum_matches_reference() {
    let mut rng = Rng::new(21);
    for (rows, cols) in SHAPES {
        let x = rand_vec(&mut rng, rows * cols);
        let tx = upload(&[rows, cols], &x);
        let out = poisoned(&[cols]);
        col_sum_gpu(&tx, rows, cols, &out, false);
        let what = format!("col_sum {rows}x{cols}");
        assert_sum_close(
            &what,
            &read(&out),
            &r::col_sum(&x, rows, cols),
            &r::col_sum(&abs(&x), rows, cols),
        );
    }
}

#[test]
fn col_sum_accumulates_into_out() {
    let mut rng = Rng::new(22);
    for (rows, cols) in [(1, 7), (33, 65), (8192, 33)] {
        let x = rand_vec(&mut rng, rows * cols);
        let before = rand_vec(&mut rng, cols);
        let out = upload(&[cols], &before);
        col_sum_gpu(&upload(&[rows, cols], &x), rows, cols, &out, true);
        let sums = r::col_sum(&x, rows, cols);
        let want: Vec<f32> = sums.iter().zip(&before).map(|(s, b)| s + b).collect();
        let scale: Vec<f32> = r::col_sum(&abs(&x), rows, cols)
            .iter()
            .zip(&before)
            .map(|(s, b)| s + b.abs())
            .collect();
        assert_sum_close(
            &format!("col_sum accumulate {rows}x{cols}"),
            &read(&out),
            &want,
            &scale,
        );
    }
}

/// The bias gradient of y = z + b (b broadcast over rows) accumulated over two
/// micro-batches equals the column sum over the whole batch, and satisfies
/// the adjoint identity ⟨col_sum(dy), u⟩ = ⟨dy, broadcast(u)⟩.
#[test]
fn col_sum_as_accumulated_bias_gradient() {
    let mut rng = Rng::new(23);
    let (rows, cols) = (300, 77);
    let dy = rand_vec(&mut rng, 2 * rows * cols);
    let (dy1, dy2) = dy.split_at(rows * cols);
    let db = poisoned(&[cols]);
    col_sum_gpu(&upload(&[rows, cols], dy1), rows, cols, &db, false);
    col_sum_gpu(&upload(&[rows, cols], dy2), rows, cols, &db, true);
    let got = read(&db);
    assert_sum_close(
        "bias gradient over two micro-batches",
        &got,
        &r::col_sum(&dy, 2 * rows, cols),
        &r::col_sum(&abs(&dy), 2 * rows, cols),
    );
    let u = rand_vec(&mut rng, cols);
    let lhs: f64 = got.iter().zip(&u).map(|(g, u)| *g as f64 * *u as f64).sum();
    let rhs: f64 = dy
        .iter()
        .enumerate()
        .map(|(i, d)| *d as f64 * u[i % cols] as f64)
        .sum();
    let scale: f64 = dy.iter().map(|d| d.abs() as f64).sum();
    assert!(
        (lhs - rhs).abs() <= REL * scale,
        "adjoint identity: {lhs} vs {rhs}"
    );
}

#[test]
fn col_sum_very_tall_uses_longer_chunks() {
    // 140_001 rows exceed 1024 chunks of 128 rows: chunks grow instead.
    let mut rng = Rng::new(24);
    let (rows, cols) = (140_001, 2);
    let x = rand_vec(&mut rng, rows * cols);
    let out = poisoned(&[cols]);
    col_sum_gpu(&upload(&[rows * cols], &x), rows, cols, &out, false);
    // Chains here are ~140 + 1024 additions long: allow 1e-4 · Σ|x|.
    let got = read(&out);
    let want = r::col_sum(&x, rows, cols);
    let scale = r::col_sum(&abs(&x), rows, cols);
    for j in 0..cols {
        let err = (got[j] as f64 - want[j] as f64).abs();
        assert!(
            err <= 1e-4 * scale[j] as f64,
            "col {j}: {} vs {}",
            got[j],
            want[j]
        );
    }
}

#[test]
fn sum_squares_over_many_tensors() {
    let mut rng = Rng::new(26);
    // Odd sizes, one with more than 1024·256·8 elements (grid-stride loops).
    let sizes = [1, 7, 255, 257, 2049, 65_537, 3_000_017];
    let data: Vec<Vec<f32>> = sizes.iter().map(|&n| rand_vec(&mut rng, n)).collect();
    let ts: Vec<Tensor> = data.iter().map(|d| upload(&[d.len()], d)).collect();
    let refs: Vec<&Tensor> = ts.iter().collect();
    let out = poisoned(&[1]);
    let ds = k::sum_squares(gpu(), &refs, &out).unwrap();
    assert_eq!(ds.len(), sizes.len() + 1, "one dispatch per tensor + final");
    run_all(&ds);
    let slices: Vec<&[f32]> = data.iter().map(|d| d.as_slice()).collect();
    let want = r::sum_squares(&slices);
    let got = read(&out)[0] as f64;
    // All terms are ≥ 0, so Σ|terms| = want.
    assert!(
        (got - want).abs() <= REL * want,
        "sum_squares: {got} vs {want}"
    );
    // Each tensor alone, including the single-element one.
    for (d, t) in data.iter().zip(&ts) {
        run_all(&k::sum_squares(gpu(), &[t], &out).unwrap());
        let want = r::sum_squares(&[d]);
        let got = read(&out)[0] as f64;
        assert!(
            (got - want).abs() <= REL * want,
            "sum_squares of {} elements: {got} vs {want}",
            d.len()
        );
    }
}

#[test]
fn reductions_are_deterministic() {
    let mut rng = Rng::new(27);
    let (rows, cols) = (8192, 33);
    let x = upload(&[rows, cols], &rand_vec(&mut rng, rows * cols));
    let y = upload(&[100_003], &rand_vec(&mut rng, 100_003));
    let run_once = || {
        let (c, s) = (poisoned(&[cols]), poisoned(&[1]));
        col_sum_gpu(&x, rows, cols, &c, false);
        run_all(&k::sum_squares(gpu(), &[&x, &y], &s).unwrap());
        (read(&c), read(&s))
    };
    let a = run_once();
    let b = run_once();
    assert_same_bits("col_sum", &a.0, &b.0);
    assert_same_bits("sum_squares", &a.1, &b.1);
}

#[test]
fn bad_arguments_give_clear_errors() {
    let g = gpu();
    let x = upload(&[4, 6], &[0.0; 24]);
    let out = poisoned(&[6]);
    let err = k::col_sum(g, &x, 4, 5, &out, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("col_sum") && err.contains("x has 24 elements"),
        "{err}"
    );
    let err = k::col_sum(g, &x, 6, 4, &out, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("out has 6 elements") && err.contains("expected 4"),
        "{err}"
    );
    let err = k::col_sum(g, &x, 0, 24, &out, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 1"), "{err}");
    let xi = upload_i32(&[24], &[0; 24]);
    let err = k::col_sum(g, &xi, 4, 6, &out, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("i32"), "{err}");
    let view = x.view(0, &[6]).unwrap();
    let err = k::col_sum(g, &x, 4, 6, &view, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("share"), "{err}");
    let err = k::sum_squares(g, &[], &out).unwrap_err().to_string();
    assert!(err.contains("at least one"), "{err}");
    let err = k::sum_squares(g, &[&x], &out).unwrap_err().to_string();
    assert!(err.contains("out has 6 elements"), "{err}");
    let scalar = g.empty(&[1], DType::F32).unwrap();
    let err = k::sum_squares(g, &[&x, &xi], &scalar)
        .unwrap_err()
        .to_string();
    assert!(err.contains("argument 1 is i32"), "{err}");
}
