//! activation.wgsl: every kind (the GELU forms are also covered, under
//! their historical API, by gelu.rs), forward and backward against the f64
//! reference, finite differences, determinism, finiteness for every finite
//! input, exp's bound, f16 storage and argument checks.
//!
//! Tolerance: |err| ≤ 1e-6 + 4e-6·|want|: a few ulp of f32 rounding plus
//! GPU exp's allowance (WGSL: 3 + 2|arg| ulp), which only matters where
//! the tails are tiny; exp itself (whose argument reaches ±88) gets 1e-5
//! relative.

use crate::common::*;
use kiln::kernels::activation::{backward, forward, ActKind};
use kiln::reference::activation as r;

const ATOL: f64 = 1e-6;
const RTOL: f64 = 4e-6;

fn rtol(kind: ActKind) -> f64 {
    if kind == ActKind::Exp {
        1e-5
    } else {
        RTOL
    }
}

/// Random normals (σ = 3) followed by the awkward values: 0, ±tiny, the
/// polynomial/exp switch of tanh (0.625), the saturation edges, huge.
fn inputs(rng: &mut Rng, n: usize, kind: ActKind) -> Vec<f32> {
    let mut special = vec![
        0.0, -0.0, 1e-8, -1e-8, 1e-3, -1e-3, 0.5, -0.5, 0.624, 0.626, -0.625, 1.0, -1.0, 3.0, -3.0,
        10.0, -10.0, 20.1, -20.1, 59.9, -59.9, 60.1, -60.1,
    ];
    if kind != ActKind::Exp {
        special.extend([88.0, -88.0, 1e10, -1e10, 3e38, -3e38]);
    } else {
        special.extend([-88.0, -1e10, -3e38]);
    }
    let mut x = rng.vec_normal(n, 3.0);
    x.extend_from_slice(&special);
    x
}

fn run_forward(x: &[f32], kind: ActKind, bound: Option<f32>) -> Vec<f32> {
    let y = poisoned(&[x.len()]);
    run(&forward(gpu(), &upload(&[x.len()], x), &y, kind, bound).unwrap());
    read(&y)
}

fn run_backward(x: &[f32], dy: &[f32], kind: ActKind, bound: Option<f32>) -> Vec<f32> {
    let dx = poisoned(&[x.len()]);
    let (tx, tdy) = (upload(&[x.len()], x), upload(&[dy.len()], dy));
    run(&backward(gpu(), &tx, &tdy, &dx, kind, bound).unwrap());
    read(&dx)
}

#[test]
fn activation_forward_and_backward_match_reference() {
    let mut rng = Rng::new(41);
    for kind in ActKind::ALL {
        for n in [1, 7, 257, 1031] {
            let x = inputs(&mut rng, n, kind);
            let y = run_forward(&x, kind, None);
            let what = format!("{kind:?} n={n}");
            assert_close(&what, &y, &r::forward(&x, kind, None), ATOL, rtol(kind));
            let dy = rand_vec(&mut rng, x.len());
            let dx = run_backward(&x, &dy, kind, None);
            assert_close(
                &format!("{what} backward"),
                &dx,
                &r::backward(&x, &dy, kind, None),
                ATOL,
                rtol(kind),
            );
        }
    }
}

#[test]
fn activation_results_are_finite_for_every_finite_input() {
    // Exp overflows to +inf past x ≈ 88.7 (as PyTorch's); every other kind,
    // and every gradient, stays finite — even at ±f32::MAX.
    let mut rng = Rng::new(42);
    for kind in ActKind::ALL {
        let mut x = inputs(&mut rng, 300, kind);
        if kind != ActKind::Exp {
            x.extend([f32::MAX, -f32::MAX, f32::MIN_POSITIVE, -f32::MIN_POSITIVE]);
        }
        let y = run_forward(&x, kind, None);
        let dx = run_backward(&x, &vec![1.0; x.len()], kind, None);
        for (i, (a, b)) in y.iter().zip(&dx).enumerate() {
            assert!(
                a.is_finite() && b.is_finite(),
                "{kind:?}({}) = {a}, derivative {b}",
                x[i]
            );
        }
    }
    // ReLU's and a clamped exp's zero derivative is an exact 0 even for a
    // non-finite dy.
    let x = [-1.0, 0.0, 5.0];
    let dx = run_backward(&x, &[f32::NAN, f32::INFINITY, 1.0], ActKind::Relu, None);
    assert_eq!(dx, vec![0.0, 0.0, 1.0]);
    let dx = run_backward(&x, &[1.0, 1.0, f32::NAN], ActKind::Exp, Some(2.0));
    assert_eq!(dx[2], 0.0);
}

#[test]
fn exp_bound_clamps_and_stops_the_gradient() {
    // CLIP: min(exp(logit_scale), 100); exp(5) ≈ 148 is clamped, exp(4) ≈ 55 not.
    let x = [4.0f32, 4.6, 4.7, 5.0, 100.0, -3.0];
    let y = run_forward(&x, ActKind::Exp, Some(100.0));
    assert_close(
        "bounded exp",
        &y,
        &r::forward(&x, ActKind::Exp, Some(100.0)),
        ATOL,
        1e-5,
    );
    assert_eq!(&y[2..5], &[100.0, 100.0, 100.0]);
    let dx = run_backward(&x, &[2.0; 6], ActKind::Exp, Some(100.0));
    assert_close(
        "bounded exp backward",
        &dx,
        &r::backward(&x, &[2.0; 6], ActKind::Exp, Some(100.0)),
        ATOL,
        1e-5,
    );
    assert_eq!(&dx[2..5], &[0.0, 0.0, 0.0]);
    for bad in [0.0, -1.0, f32::INFINITY, f32::NAN] {
        let err = forward(
            gpu(),
            &upload(&[1], &[0.0]),
            &empty(&[1]),
            ActKind::Exp,
            Some(bad),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bound"), "{err}");
    }
    let err = forward(
        gpu(),
        &upload(&[1], &[0.0]),
        &empty(&[1]),
        ActKind::Relu,
        Some(1.0),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("only exp"), "{err}");
}

#[test]
fn activation_backward_matches_finite_differences() {
    // L = Σ w·act(x), central differences (eps 1e-2) of the GPU forward;
    // points near ReLU's kink and exp's bound are avoided.
    let mut rng = Rng::new(43);
    for kind in ActKind::ALL {
        let n = 37;
        let bound = (kind == ActKind::Exp).then_some(3.0f32);
        let x: Vec<f32> = rng
            .vec_normal(n, 1.5)
            .into_iter()
            .map(|v| if v.abs() < 0.05 { v + 0.1 } else { v })
            .map(|v| {
                if bound.is_some() && (v - 3f32.ln()).abs() < 0.05 {
                    v + 0.1
                } else {
                    v
                }
            })
            .collect();
        let w = rand_vec(&mut rng, n);
        let dx = run_backward(&x, &w, kind, bound);
        let f = |xs: &[f32]| run_forward(xs, kind, bound);
        let idx: Vec<usize> = (0..n).collect();
        let num = finite_diff(&f, &x, &w, &idx, 1e-2);
        assert_fd(&format!("{kind:?}"), &dx, &num, &idx, 2e-3, 1e-2);
    }
}

#[test]
fn activation_is_deterministic() {
    let mut rng = Rng::new(44);
    for kind in ActKind::ALL {
        let x = inputs(&mut rng, 1031, kind);
        let dy = rand_vec(&mut rng, x.len());
        assert_same_bits(
            &format!("{kind:?}"),
            &run_forward(&x, kind, None),
            &run_forward(&x, kind, None),
        );
        assert_same_bits(
            &format!("{kind:?}'"),
            &run_backward(&x, &dy, kind, None),
            &run_backward(&x, &dy, kind, None),
        );
    }
}

/// f16 storage, f32 arithmetic: the f32 result rounded once to f16.
#[test]
fn activation_f16_variant_rounds_the_f32_result() {
    if !gpu().features().contains(wgpu::Features::SHADER_F16) {
        eprintln!("skipped: {} has no shader-f16", gpu().describe());
        return;
    }
    let h =
        |v: &[f32]| -> Vec<f32> { v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect() };
    let mut rng = Rng::new(45);
    for kind in ActKind::ALL {
        let x = h(&rng.vec_normal(300, 2.0));
        let tx = gpu().upload_f16(&[300], &x).unwrap();
        let ty = gpu().upload_f16(&[300], &vec![f32::NAN; 300]).unwrap();
        run(&forward(gpu(), &tx, &ty, kind, None).unwrap());
        let got = pollster::block_on(ty.read_f16_as_f32(gpu())).unwrap();
        let want = h(&run_forward(&x, kind, None));
        // One f16 rounding of (nearly) the same f32 value: equal, or one
        // f16 ulp apart where the f32 value sits on a rounding boundary.
        assert_close(&format!("{kind:?} f16"), &got, &want, 1e-7, 1e-3);
    }
}

#[test]
fn activation_bad_arguments_are_clear_errors() {
    let x = upload(&[2, 3], &[0.0; 6]);
    let y = upload(&[3, 2], &[0.0; 6]);
    let err = forward(gpu(), &x, &y, ActKind::Tanh, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("activation_forward") && err.contains("shape"),
        "{err}"
    );
    let i = upload_i32(&[2, 3], &[0; 6]);
    let err = backward(gpu(), &x, &i, &x, ActKind::Sigmoid, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("i32"), "{err}");
    let err = forward(gpu(), &x, &x, ActKind::Relu, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("in-place"), "{err}");
}
