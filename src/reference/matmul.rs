//! Reference for `shaders/matmul.wgsl`: plain loops, f64 accumulation.

use crate::kernels::matmul::MatmulSpec;

/// Returns the new contents of `c` after
/// `C[b] = alpha · op(A[b]) · op(B[b]) + bias + beta · C[b]` for every batch
/// item, with the layouts and strides of `spec`. Elements of `c` outside the
/// batch items are returned unchanged; with `beta == 0` the old values of the
/// written elements are never read (so NaN there does not leak).
pub fn matmul(
    spec: &MatmulSpec,
    a: &[f32],
    b: &[f32],
    bias: Option<&[f32]>,
    c: &[f32],
) -> Vec<f32> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let mut out = c.to_vec();
    for item in 0..spec.batch {
        let (oa, ob, oc) = (
            item * spec.stride_a,
            item * spec.stride_b,
            item * spec.stride_c,
        );
        for i in 0..m {
            for j in 0..n {
                let mut sum = 0.0f64;
                for kk in 0..k {
                    let x = if spec.trans_a {
                        a[oa + kk * m + i]
                    } else {
                        a[oa + i * k + kk]
                    };
                    let y = if spec.trans_b {
                        b[ob + j * k + kk]
                    } else {
                        b[ob + kk * n + j]
                    };
                    sum += x as f64 * y as f64;
                }
                let mut v = spec.alpha as f64 * sum;
                if let Some(bias) = bias {
                    v += bias[j] as f64;
                }
                let idx = oc + i * n + j;
                if spec.beta != 0.0 {
                    v += spec.beta as f64 * c[idx] as f64;
                }
                out[idx] = v as f32;
            }
        }
    }
    out
}
