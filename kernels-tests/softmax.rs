//! softmax.wgsl: forward (plain, scaled, causal) and backward against the f64
//! reference, by finite differences of the GPU forward, extreme inputs,
//! determinism and argument errors.

use crate::common::*;
use kiln::kernels::softmax::{softmax_backward, softmax_forward, softmax_forward_scaled};
use kiln::reference::softmax as r;
use kiln::runtime::DType;

/// (rows, n): 1, primes, sizes around the 256-thread row width, an
/// attention width and a GPT-2 vocabulary row (looped over by each thread).
const SHAPES: [(usize, usize); 9] = [
    (1, 1),
    (1, 7),
    (3, 13),
    (33, 65),
    (130, 257),
    (5, 1031),
    (3, 768),
    (40, 2),
    (2, 50257),
];

/// Probabilities are ≤ 1 and computed as exp(z − max)/Σ with f32 sums of
/// ≤ 50257 terms: a few ulps of 1 ≈ 1e-6 absolute covers every entry.
const Y_ATOL: f64 = 1e-6;

fn gpu_forward(shape: &[usize], x: &[f32], scale: f32, causal: Option<usize>) -> Vec<f32> {
    let y = poisoned(shape);
    run(&softmax_forward_scaled(gpu(), &upload(shape, x), &y, scale, causal).unwrap());
    read(&y)
}

fn gpu_backward(shape: &[usize], y: &[f32], dy: &[f32]) -> Vec<f32> {
    let dx = poisoned(shape);
    run(&softmax_backward(gpu(), &upload(shape, y), &upload(shape, dy), &dx).unwrap());
    read(&dx)
}

/// Masked entries (j > r % t) must be exactly 0, not just small.
fn assert_masked_zero(what: &str, y: &[f32], t: usize) {
    for (i, v) in y.iter().enumerate() {
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

#[test]
fn forward_matches_reference() {
    let mut rng = Rng::new(31);
    for (rows, n) in SHAPES {
        // std 3: peaked rows, probabilities spanning many orders of magnitude.
        let x = rng.vec_normal(rows * n, 3.0);
        let y = gpu_forward(&[rows, n], &x, 1.0, None);
        let want = r::forward(&x, n, 1.0, None);
        assert_close(&format!("softmax {rows}x{n}"), &y, &want, Y_ATOL, 1e-5);
        // The plain entry point is scale 1.
        let y1 = poisoned(&[rows, n]);
        run(&softmax_forward(gpu(), &upload(&[rows, n], &x), &y1, None).unwrap());
        assert_same_bits(&format!("softmax_forward {rows}x{n}"), &read(&y1), &y);
    }
}

#[test]
fn scaled_forward_matches_reference() {
    let mut rng = Rng::new(32);
    for (rows, n, scale) in [
        (4, 64, 0.125f32),
        (3, 300, 1.0 / 8.0f32.sqrt()),
        (2, 9, -2.0),
    ] {
        let x = rng.vec_normal(rows * n, 4.0);
        let y = gpu_forward(&[rows, n], &x, scale, None);
        let want = r::forward(&x, n, scale, None);
        assert_close(
            &format!("softmax({scale}·x) {rows}x{n}"),
            &y,
            &want,
            Y_ATOL,
            1e-5,
        );
    }
}

#[test]
fn causal_forward_masks_and_matches_reference() {
    let mut rng = Rng::new(33);
    // t = 1 (every row is a single entry), 5, 17, and 260 (> 256 threads);
    // several groups of t rows, with a leading batch dimension.
    for (groups, t, scale) in [(3, 1, 1.0f32), (4, 5, 1.0), (6, 17, 0.25), (2, 260, 0.125)] {
        let shape = [groups, t, t];
        let x = rng.vec_normal(groups * t * t, 3.0);
        let y = gpu_forward(&shape, &x, scale, Some(t));
        let want = r::forward(&x, t, scale, Some(t));
        let what = format!("causal t={t} groups={groups}");
        assert_close(&what, &y, &want, Y_ATOL, 1e-5);
        assert_masked_zero(&what, &y, t);
        // Row q of each group holds q + 1 probabilities summing to 1; the
        // first row is exactly [1, 0, ...].
        assert_eq!(y[0], 1.0, "{what}: row 0 keeps only its first entry");
    }
}

#[test]
fn forward_is_stable_for_extreme_rows() {
    let n = 300;
    let mut rng = Rng::new(34);
    let mut x = Vec::new();
    // ±80 at random: exp(160) would overflow f32 without the max shift.
    x.extend((0..n).map(|_| if rng.below(2) == 0 { 80.0f32 } else { -80.0 }));
    // One 80 among −80s: y = [.., 1, ..] and exp(−160) = 0 elsewhere.
    x.extend((0..n).map(|j| if j == 123 { 80.0f32 } else { -80.0 }));
    // Identical values: exactly uniform up to the division.
    x.extend(std::iter::repeat_n(-80.0f32, n));
    x.extend(std::iter::repeat_n(55.5f32, n));
    // Large spread of magnitudes.
    x.extend(rng.vec_uniform(n, -80.0, 80.0));
    let rows = x.len() / n;
    let y = gpu_forward(&[rows, n], &x, 1.0, None);
    let want = r::forward(&x, n, 1.0, None);
    assert_close("extreme rows", &y, &want, Y_ATOL, 1e-5);
    assert!(y.iter().all(|v| v.is_finite()), "a non-finite probability");
    assert_eq!(
        y[n + 123],
        1.0,
        "a single dominant entry takes probability 1"
    );
    for row in 2..4 {
        for v in &y[row * n..(row + 1) * n] {
            assert!(
                (*v as f64 - 1.0 / n as f64).abs() < 1e-9,
                "constant row: {v}"
            );
        }
    }
}

#[test]
fn backward_matches_reference() {
    let mut rng = Rng::new(35);
    for (rows, n) in SHAPES {
        let x = rng.vec_normal(rows * n, 3.0);
        let y = r::forward(&x, n, 1.0, None);
        let dy = rand_vec(&mut rng, rows * n);
        let dx = gpu_backward(&[rows, n], &y, &dy);
        // |dx| ≤ y·2 and the row dot Σ dy·y rounds by ~1e-7: 1e-6 abs.
        assert_close(
            &format!("softmax bwd {rows}x{n}"),
            &dx,
            &r::backward(&y, &dy, n),
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn causal_backward_is_zero_where_masked() {
    let mut rng = Rng::new(36);
    let (groups, t) = (3, 17);
    let shape = [groups, t, t];
    let x = rng.vec_normal(groups * t * t, 2.0);
    let y = gpu_forward(&shape, &x, 1.0, Some(t));
    let dy = rand_vec(&mut rng, groups * t * t);
    let dx = gpu_backward(&shape, &y, &dy);
    assert_close("causal bwd", &dx, &r::backward(&y, &dy, t), 1e-6, 1e-5);
    assert_masked_zero("causal bwd", &dx, t);
}

#[test]
fn backward_matches_finite_differences_of_forward() {
    let mut rng = Rng::new(37);
    for (shape, scale, causal) in [
        (vec![2, 5], 1.0f32, None),
        (vec![1, 7], 0.5, None),
        (vec![1, 1], 1.0, None),
        (vec![2, 4, 4], 0.7, Some(4)),
    ] {
        let n: usize = shape.iter().product();
        let x = rng.vec_normal(n, 1.0);
        let w = rand_vec(&mut rng, n);
        // dL/dx = scale · softmax_backward(y, w) for L = Σ w·softmax(scale·x).
        let y = gpu_forward(&shape, &x, scale, causal);
        let dz = gpu_backward(&shape, &y, &w);
        let dx: Vec<f32> = dz.iter().map(|v| v * scale).collect();
        let idx = probe_indices(n, 10, &mut rng);
        let num = finite_diff(
            &|xs| gpu_forward(&shape, xs, scale, causal),
            &x,
            &w,
            &idx,
            1e-2,
        );
        // eps 1e-2: truncation O(eps²) ≈ 1e-4, rounding ~1e-7/eps ≈ 1e-5.
        assert_fd(
            &format!("softmax {shape:?} scale {scale}"),
            &dx,
            &num,
            &idx,
            1e-3,
            1e-2,
        );
    }
}

#[test]
fn forward_and_backward_are_deterministic() {
    let mut rng = Rng::new(38);
    for (shape, causal) in [(vec![3, 50257], None), (vec![2, 33, 33], Some(33))] {
        let n: usize = shape.iter().product();
        let x = rng.vec_normal(n, 3.0);
        let dy = rand_vec(&mut rng, n);
        let y1 = gpu_forward(&shape, &x, 0.3, causal);
        let y2 = gpu_forward(&shape, &x, 0.3, causal);
        assert_same_bits("softmax fwd", &y1, &y2);
        let d1 = gpu_backward(&shape, &y1, &dy);
        let d2 = gpu_backward(&shape, &y1, &dy);
        assert_same_bits("softmax bwd", &d1, &d2);
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let g = gpu();
    let x = upload(&[2, 3, 3], &[0.0; 18]);
    let y = empty(&[2, 3, 3]);
    let msg = |e: anyhow::Error| e.to_string();

    let e = msg(softmax_forward(g, &x, &empty(&[2, 9]), None).unwrap_err());
    assert!(e.contains("shape"), "{e}");
    let e =
        msg(softmax_forward(g, &g.zeros(&[2, 3, 3], DType::I32).unwrap(), &y, None).unwrap_err());
    assert!(e.contains("i32"), "{e}");
    let e = msg(softmax_forward(g, &x, &y, Some(4)).unwrap_err());
    assert!(e.contains("t = 4") && e.contains("last dimension 3"), "{e}");
    let x3 = upload(&[4, 3], &[0.0; 12]);
    let e = msg(softmax_forward(g, &x3, &empty(&[4, 3]), Some(3)).unwrap_err());
    assert!(e.contains("multiple of t") && e.contains("4 rows"), "{e}");
    let e = msg(softmax_forward(g, &x, &x, None).unwrap_err());
    assert!(e.contains("shares"), "{e}");
    let e = msg(softmax_forward(g, &upload(&[], &[1.0]), &empty(&[]), None).unwrap_err());
    assert!(e.contains("scalar"), "{e}");
    let e = msg(softmax_forward_scaled(g, &x, &y, f32::NAN, None).unwrap_err());
    assert!(e.contains("scale"), "{e}");
    let e = msg(softmax_backward(g, &x, &empty(&[2, 3, 3]), &empty(&[18])).unwrap_err());
    assert!(e.contains("softmax_backward") && e.contains("shape"), "{e}");
}

/// The same reference checks with 256 threads per row (the GPU setting),
/// where the default device is a CPU adapter using fewer.
#[test]
fn reference_checks_with_256_threads_per_row() {
    with_256_row_threads(|| {
        forward_matches_reference();
        scaled_forward_matches_reference();
        causal_forward_masks_and_matches_reference();
        backward_matches_reference();
        forward_and_backward_are_deterministic();
    });
}

/// Key-padding masks as attention's unfused path uses them: scores
/// [B·H, T, T], mask [B, T]; padding at the end, a hole in the middle, a
/// fully padded row (its probabilities all 0), with and without causal.
#[test]
fn masked_forward_matches_reference() {
    check_masked();
    with_256_row_threads(check_masked);
}

fn check_masked() {
    use kiln::kernels::softmax::softmax_forward_masked;
    let mut rng = Rng::new(39);
    for (b, h, t) in [(1, 1, 1), (3, 2, 5), (3, 1, 13), (2, 3, 40), (3, 1, 300)] {
        let mut mask: Vec<i32> = (0..b * t).map(|_| (rng.below(4) != 0) as i32).collect();
        for j in 0..t {
            mask[j] = (j < t.div_ceil(2)) as i32; // padding at the end
            if b > 1 {
                mask[t + j] = 0; // nothing to attend to
            }
            if b > 2 {
                mask[2 * t + j] = (j != t / 2) as i32 * 3; // a hole; 3 = attend
            }
        }
        let shape = [b * h, t, t];
        let x = rng.vec_normal(b * h * t * t, 3.0);
        for causal in [false, true] {
            let scale = 0.3;
            let y = poisoned(&shape);
            run(&softmax_forward_masked(
                gpu(),
                &upload(&shape, &x),
                &y,
                scale,
                causal,
                &upload_i32(&[b, t], &mask),
                h,
            )
            .unwrap());
            let y = read(&y);
            let again = poisoned(&shape);
            run(&softmax_forward_masked(
                gpu(),
                &upload(&shape, &x),
                &again,
                scale,
                causal,
                &upload_i32(&[b, t], &mask),
                h,
            )
            .unwrap());
            assert_same_bits("masked softmax", &read(&again), &y);
            let want = r::forward_masked(&x, t, scale, causal, &mask, h);
            let what = format!("masked softmax B={b} H={h} T={t} causal={causal}");
            assert_close(&what, &y, &want, Y_ATOL, 1e-5);
            for (i, w) in want.iter().enumerate() {
                if *w == 0.0 {
                    assert_eq!(y[i].to_bits(), 0, "{what}: hidden entry {i} is {}", y[i]);
                }
            }
            // The backward of an all-zero row is all zero.
            let dx = gpu_backward(&shape, &y, &rng.vec_normal(y.len(), 1.0));
            if b > 1 {
                let row = h * t * t; // batch row 1 starts here
                assert!(
                    dx[row..2 * row].iter().all(|v| *v == 0.0),
                    "{what}: padded gradient"
                );
            }
        }
    }
    // Shapes that are not [B·H, T, T] over a [B, T] mask are refused.
    let err = softmax_forward_masked(
        gpu(),
        &upload(&[2, 3, 3], &[0.0; 18]),
        &empty(&[2, 3, 3]),
        1.0,
        false,
        &upload_i32(&[1, 3], &[1; 3]),
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("key_mask"), "{err}");
}
