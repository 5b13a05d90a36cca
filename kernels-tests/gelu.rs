//! gelu.wgsl: both forms, forward and backward, against the f64 reference,
//! finite differences, determinism and argument checks.
//!
//! Tolerance (forward and backward): |err| ≤ 1e-6 + 2e-6·|want|. The f32
//! kernel's own rounding is a few ulp (≤ ~5e-7 relative); the erf form adds
//! the erfc approximation's ≤ 1.2e-7 (relative to erfc, so ≤ 1.2e-7·|x|
//! absolute in x·Φ(x)); and GPU exp may be a few ulp off (WGSL allows
//! 3 + 2|arg| ulp), which only matters where the tails are tiny.

use crate::common::*;
use kiln::kernels::gelu::{gelu_backward, gelu_forward, GeluKind};
use kiln::reference::gelu as r;

const KINDS: [GeluKind; 2] = [GeluKind::Tanh, GeluKind::Erf];
const ATOL: f64 = 1e-6;
const RTOL: f64 = 2e-6;

/// Random normals (σ = 3) followed by the awkward values: 0, ±tiny, the
/// saturation edges, ±10, ±30 and huge finite numbers.
fn inputs(rng: &mut Rng, n: usize) -> Vec<f32> {
    let special = [
        0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 5.0, -5.0, 10.0, -10.0, 19.9,
        -19.9, 20.0, -20.0, 20.1, -20.1, 30.0, -30.0, 1e10, -1e10, 3e38, -3e38,
    ];
    let mut x = rng.vec_normal(n, 3.0);
    x.extend_from_slice(&special);
    x
}

fn run_forward(x: &[f32], kind: GeluKind) -> Vec<f32> {
    let tx = upload(&[x.len()], x);
    let y = poisoned(&[x.len()]);
    run(&gelu_forward(gpu(), &tx, &y, kind).unwrap());
    read(&y)
}

fn run_backward(x: &[f32], dy: &[f32], kind: GeluKind) -> Vec<f32> {
    let (tx, tdy) = (upload(&[x.len()], x), upload(&[dy.len()], dy));
    let dx = poisoned(&[x.len()]);
    run(&gelu_backward(gpu(), &tx, &tdy, &dx, kind).unwrap());
    read(&dx)
}

#[test]
fn gelu_reference_erfc_matches_known_values() {
    // CPython's math.erfc (accurate to ~1 ulp).
    let known = [
        (0.0, 1.0),
        (0.5, 0.479_500_122_186_953_5),
        (1.0, 0.157_299_207_050_285_13),
        (1.999, 0.004_698_443_348_629_488),
        (2.0, 0.004_677_734_981_047_265),
        (3.0, 2.209_049_699_858_543_8e-5),
        (5.0, 1.537_459_794_428_035_1e-12),
        (-1.0, 1.842_700_792_949_715),
    ];
    for (z, want) in known {
        let got = r::erfc(z);
        assert!(
            ((got - want) / want).abs() < 1e-12,
            "erfc({z}) = {got}, want {want}"
        );
    }
}

#[test]
fn gelu_forward_matches_reference() {
    let mut rng = Rng::new(31);
    for kind in KINDS {
        for n in [1, 7, 257, 1031] {
            let x = inputs(&mut rng, n);
            let got = run_forward(&x, kind);
            let want = r::gelu_forward(&x, kind);
            assert_close(&format!("gelu {kind:?} n={n}"), &got, &want, ATOL, RTOL);
        }
    }
}

#[test]
fn gelu_backward_matches_reference() {
    let mut rng = Rng::new(32);
    for kind in KINDS {
        for n in [1, 7, 257, 1031] {
            let x = inputs(&mut rng, n);
            let dy = rand_vec(&mut rng, x.len());
            let got = run_backward(&x, &dy, kind);
            let want = r::gelu_backward(&x, &dy, kind);
            assert_close(&format!("gelu' {kind:?} n={n}"), &got, &want, ATOL, RTOL);
        }
    }
}

#[test]
fn gelu_backward_matches_finite_differences() {
    // L = Σ w·gelu(x); central differences with eps 1e-2 of the GPU forward.
    // gelu''' is bounded (|·| < 1), so truncation is ≲ 1e-4·|w|; f32 rounding
    // of y over 2·eps adds ~1e-5. Tolerance 1e-3 + 1e-2 relative.
    let mut rng = Rng::new(33);
    for kind in KINDS {
        let n = 37;
        let mut x = rng.vec_normal(n, 2.0);
        x[0] = 0.0;
        x[1] = -4.0;
        let w = rand_vec(&mut rng, n);
        let dx = run_backward(&x, &w, kind);
        let f = |xs: &[f32]| run_forward(xs, kind);
        let idx: Vec<usize> = (0..n).collect();
        let num = finite_diff(&f, &x, &w, &idx, 1e-2);
        assert_fd(&format!("gelu {kind:?}"), &dx, &num, &idx, 1e-3, 1e-2);
    }
}

#[test]
fn gelu_is_deterministic() {
    let mut rng = Rng::new(34);
    for kind in KINDS {
        let x = inputs(&mut rng, 1031);
        let dy = rand_vec(&mut rng, x.len());
        assert_same_bits("gelu", &run_forward(&x, kind), &run_forward(&x, kind));
        assert_same_bits(
            "gelu'",
            &run_backward(&x, &dy, kind),
            &run_backward(&x, &dy, kind),
        );
    }
}

#[test]
fn gelu_bad_arguments_are_clear_errors() {
    let x = upload(&[2, 3], &[0.0; 6]);
    let y = upload(&[3, 2], &[0.0; 6]);
    let err = gelu_forward(gpu(), &x, &y, GeluKind::Tanh)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gelu_forward") && err.contains("shape"),
        "{err}"
    );
    let i = upload_i32(&[2, 3], &[0; 6]);
    let err = gelu_backward(gpu(), &x, &i, &x, GeluKind::Erf)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gelu_backward") && err.contains("i32"),
        "{err}"
    );
    let err = gelu_backward(gpu(), &x, &x, &y, GeluKind::Erf)
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape"), "{err}");
    let err = gelu_backward(
        gpu(),
        &x,
        &y.reshape(&[2, 3]).unwrap(),
        &y.reshape(&[2, 3]).unwrap(),
        GeluKind::Tanh,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("in-place"), "{err}");
}
