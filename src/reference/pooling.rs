//! References for `shaders/pooling.wgsl`, in f64.

/// (y [B, C], scale [B]): the mean of x [B, T, C] over the positions whose
/// mask is nonzero (0 for a row without any), scale = 1 / max(count, 1).
pub fn masked_mean(x: &[f64], mask: &[f64], b: usize, t: usize, c: usize) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; b * c];
    let mut scale = vec![0.0; b];
    for bi in 0..b {
        let count = (0..t).filter(|&ti| mask[bi * t + ti] != 0.0).count();
        let inv = 1.0 / count.max(1) as f64;
        for ti in (0..t).filter(|&ti| mask[bi * t + ti] != 0.0) {
            for ci in 0..c {
                y[bi * c + ci] += x[(bi * t + ti) * c + ci];
            }
        }
        for v in &mut y[bi * c..(bi + 1) * c] {
            *v *= inv;
        }
        scale[bi] = inv;
    }
    (y, scale)
}

/// dx [B, T, C] = mask·dy[b] / max(count, 1).
pub fn masked_mean_backward(dy: &[f64], mask: &[f64], b: usize, t: usize, c: usize) -> Vec<f64> {
    let mut dx = vec![0.0; b * t * c];
    for bi in 0..b {
        let count = (0..t).filter(|&ti| mask[bi * t + ti] != 0.0).count();
        let inv = 1.0 / count.max(1) as f64;
        for ti in (0..t).filter(|&ti| mask[bi * t + ti] != 0.0) {
            for ci in 0..c {
                dx[(bi * t + ti) * c + ci] = dy[bi * c + ci] * inv;
            }
        }
    }
    dx
}
