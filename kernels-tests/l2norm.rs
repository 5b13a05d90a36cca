//! l2norm.wgsl: row normalisation forward and backward against the f64
//! reference on awkward row lengths (1, primes, across the 256-thread row
//! width), rows below eps (the clamped branch), finite differences of the
//! GPU forward, determinism and argument errors; both row widths (8 threads
//! per row on CPU adapters, 256 on GPUs).

use crate::common::*;
use kiln::kernels::l2norm;
use kiln::reference::l2norm as r;

const SHAPES: [(usize, usize); 7] = [
    (1, 1),
    (3, 7),
    (33, 65),
    (5, 257),
    (2, 1031),
    (40, 2),
    (1, 4099),
];

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|x| *x as f32).collect()
}

fn gpu_forward(rows: usize, n: usize, x: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let (y, norm) = (poisoned(&[rows, n]), poisoned(&[rows]));
    run(&l2norm::forward(gpu(), &upload(&[rows, n], x), &y, &norm, eps).unwrap());
    (read(&y), read(&norm))
}

fn gpu_backward(rows: usize, n: usize, x: &[f32], dy: &[f32], eps: f32) -> Vec<f32> {
    let (y, norm) = (empty(&[rows, n]), empty(&[rows]));
    run(&l2norm::forward(gpu(), &upload(&[rows, n], x), &y, &norm, eps).unwrap());
    let dx = poisoned(&[rows, n]);
    run(&l2norm::backward(gpu(), &y, &norm, &upload(&[rows, n], dy), &dx, eps).unwrap());
    read(&dx)
}

fn check_shapes() {
    let mut rng = Rng::new(61);
    for (rows, n) in SHAPES {
        let mut x = rand_vec(&mut rng, rows * n);
        // A zero row and a tiny one (norm below eps: the clamp holds).
        if rows > 2 {
            x[..n].iter_mut().for_each(|v| *v = 0.0);
            x[n..2 * n].iter_mut().for_each(|v| *v *= 1e-9);
        }
        let eps = 1e-6;
        let (y, norm) = gpu_forward(rows, n, &x, eps);
        let (wy, wn) = r::forward(&f64s(&x), n, eps as f64);
        assert_close(&format!("l2norm {rows}x{n}"), &y, &f32s(&wy), 1e-6, 1e-5);
        assert_close(
            &format!("l2norm norms {rows}x{n}"),
            &norm,
            &f32s(&wn),
            1e-7,
            1e-5,
        );
        let dy = rand_vec(&mut rng, rows * n);
        let dx = gpu_backward(rows, n, &x, &dy, eps);
        let want = f32s(&r::backward(&f64s(&x), &f64s(&dy), n, eps as f64));
        // dx scales with 1/‖x‖ (1/eps on clamped rows): relative tolerance.
        assert_close(&format!("l2norm' {rows}x{n}"), &dx, &want, 2e-6, 1e-4);
    }
}

#[test]
fn l2norm_matches_reference() {
    check_shapes();
    with_256_row_threads(check_shapes);
}

#[test]
fn l2norm_backward_matches_finite_differences() {
    let mut rng = Rng::new(62);
    let (rows, n) = (3, 11);
    let x = rng.vec_normal(rows * n, 1.0);
    let w = rand_vec(&mut rng, rows * n);
    let dx = gpu_backward(rows, n, &x, &w, 1e-12);
    let f = |xs: &[f32]| gpu_forward(rows, n, xs, 1e-12).0;
    let idx: Vec<usize> = (0..rows * n).collect();
    let num = finite_diff(&f, &x, &w, &idx, 1e-2);
    assert_fd("l2norm", &dx, &num, &idx, 2e-3, 2e-2);
}

#[test]
fn l2norm_is_deterministic() {
    let mut rng = Rng::new(63);
    let (rows, n) = (7, 1031);
    let x = rand_vec(&mut rng, rows * n);
    let dy = rand_vec(&mut rng, rows * n);
    assert_same_bits(
        "l2norm",
        &gpu_forward(rows, n, &x, 1e-12).0,
        &gpu_forward(rows, n, &x, 1e-12).0,
    );
    assert_same_bits(
        "l2norm'",
        &gpu_backward(rows, n, &x, &dy, 1e-12),
        &gpu_backward(rows, n, &x, &dy, 1e-12),
    );
}

#[test]
fn l2norm_bad_arguments_are_clear_errors() {
    let x = upload(&[2, 3], &[1.0; 6]);
    let err = l2norm::forward(gpu(), &x, &empty(&[2, 3]), &empty(&[3]), 1e-12)
        .unwrap_err()
        .to_string();
    assert!(err.contains("norm") && err.contains("3 elements"), "{err}");
    let err = l2norm::forward(gpu(), &x, &empty(&[2, 3]), &empty(&[2]), 0.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("eps"), "{err}");
    let err = l2norm::forward(gpu(), &x, &empty(&[3, 2]), &empty(&[2]), 1e-12)
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape"), "{err}");
}
