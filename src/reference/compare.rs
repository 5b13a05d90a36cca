//! Comparing a kernel's output with its reference: shared by the kernel
//! tests (`kernels-tests/`) and the browser tests (`web/tests/`).

/// Largest |got − want| and where; NaN anywhere counts as infinite error.
pub fn max_abs_err(got: &[f32], want: &[f32]) -> (f64, usize) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let mut worst = (0.0f64, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (*g as f64 - *w as f64).abs();
        let e = if e.is_nan() { f64::INFINITY } else { e };
        if e > worst.0 {
            worst = (e, i);
        }
    }
    worst
}

/// Asserts |got − want| ≤ atol + rtol·|want| elementwise; the panic names
/// `what`, the first failing element and the largest error.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f64, rtol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - *w as f64).abs();
        let tol = atol + rtol * (*w as f64).abs();
        assert!(
            err <= tol,
            "{what}: element {i}: got {g}, want {w} (|err| {err:.3e} > tol {tol:.3e}); max abs err {:?}",
            max_abs_err(got, want)
        );
    }
}
