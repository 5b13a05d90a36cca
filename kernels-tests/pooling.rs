//! pooling.wgsl: masked mean pooling forward and backward against the f64
//! reference (padding at the end, in the middle, an all-padded row, mask
//! values other than 1), finite differences, determinism, argument errors.

use crate::common::*;
use kiln::kernels::pooling;
use kiln::reference::pooling as r;

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|x| *x as f32).collect()
}

fn masks(rng: &mut Rng, b: usize, t: usize) -> Vec<i32> {
    let mut m: Vec<i32> = (0..b * t).map(|_| rng.below(2) as i32).collect();
    // Row 0: padding at the end; row 1: nothing real; row 2: mask value 7
    // counts as a real token (nonzero), a hole in the middle.
    for ti in 0..t {
        m[ti] = (ti < t.div_ceil(2)) as i32;
        if b > 1 {
            m[t + ti] = 0;
        }
        if b > 2 {
            m[2 * t + ti] = if ti == t / 2 { 0 } else { 7 };
        }
    }
    m
}

fn gpu_forward(b: usize, t: usize, c: usize, x: &[f32], m: &[i32]) -> (Vec<f32>, Vec<f32>) {
    let (y, s) = (poisoned(&[b, c]), poisoned(&[b]));
    run(&pooling::forward(
        gpu(),
        &upload(&[b, t, c], x),
        &upload_i32(&[b, t], m),
        &y,
        &s,
    )
    .unwrap());
    (read(&y), read(&s))
}

fn gpu_backward(b: usize, t: usize, c: usize, m: &[i32], dy: &[f32]) -> Vec<f32> {
    let (y, s) = (empty(&[b, c]), empty(&[b]));
    let tm = upload_i32(&[b, t], m);
    run(&pooling::forward(gpu(), &empty(&[b, t, c]), &tm, &y, &s).unwrap());
    let dx = poisoned(&[b, t, c]);
    run(&pooling::backward(gpu(), &tm, &s, &upload(&[b, c], dy), &dx).unwrap());
    read(&dx)
}

#[test]
fn masked_mean_matches_reference() {
    let mut rng = Rng::new(71);
    for (b, t, c) in [(1, 1, 1), (3, 7, 5), (4, 13, 257), (2, 300, 3), (5, 1, 64)] {
        let x = rand_vec(&mut rng, b * t * c);
        let m = masks(&mut rng, b, t);
        let mf: Vec<f64> = m.iter().map(|v| *v as f64).collect();
        let (y, s) = gpu_forward(b, t, c, &x, &m);
        let (wy, ws) = r::masked_mean(&f64s(&x), &mf, b, t, c);
        assert_close(
            &format!("masked mean {b}x{t}x{c}"),
            &y,
            &f32s(&wy),
            1e-6,
            1e-5,
        );
        assert_close(
            &format!("masked mean scale {b}x{t}x{c}"),
            &s,
            &f32s(&ws),
            0.0,
            1e-7,
        );
        if b > 1 {
            assert!(
                y[c..2 * c].iter().all(|v| *v == 0.0),
                "an all-padded row pools to 0"
            );
        }
        let dy = rand_vec(&mut rng, b * c);
        let dx = gpu_backward(b, t, c, &m, &dy);
        let want = f32s(&r::masked_mean_backward(&f64s(&dy), &mf, b, t, c));
        assert_close(&format!("masked mean' {b}x{t}x{c}"), &dx, &want, 0.0, 1e-6);
    }
}

#[test]
fn masked_mean_backward_matches_finite_differences() {
    let mut rng = Rng::new(72);
    let (b, t, c) = (3, 5, 4);
    let x = rand_vec(&mut rng, b * t * c);
    let m = masks(&mut rng, b, t);
    let w = rand_vec(&mut rng, b * c);
    let dx = gpu_backward(b, t, c, &m, &w);
    let f = |xs: &[f32]| gpu_forward(b, t, c, xs, &m).0;
    let idx: Vec<usize> = (0..b * t * c).collect();
    let num = finite_diff(&f, &x, &w, &idx, 1e-2);
    assert_fd("masked mean", &dx, &num, &idx, 1e-4, 1e-3);
}

#[test]
fn masked_mean_is_deterministic() {
    let mut rng = Rng::new(73);
    let (b, t, c) = (3, 333, 65);
    let x = rand_vec(&mut rng, b * t * c);
    let m = masks(&mut rng, b, t);
    assert_same_bits(
        "masked mean",
        &gpu_forward(b, t, c, &x, &m).0,
        &gpu_forward(b, t, c, &x, &m).0,
    );
}

#[test]
fn masked_mean_bad_arguments_are_clear_errors() {
    let x = upload(&[2, 3, 4], &[0.0; 24]);
    let m = upload_i32(&[2, 4], &[1; 8]);
    let err = pooling::forward(gpu(), &x, &m, &empty(&[2, 4]), &empty(&[2]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("mask") && err.contains("[2, 3]"), "{err}");
    let mf = upload(&[2, 3], &[1.0; 6]);
    let err = pooling::forward(gpu(), &x, &mf, &empty(&[2, 4]), &empty(&[2]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("i32"), "{err}");
    let m = upload_i32(&[2, 3], &[1; 6]);
    let err = pooling::forward(gpu(), &x, &m, &empty(&[2, 3]), &empty(&[2]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("y has shape"), "{err}");
}
