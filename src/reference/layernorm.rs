//! References for `shaders/layernorm.wgsl`: LayerNorm over rows of length C
//! (biased variance, eps inside the square root), f64 accumulation.

/// Forward over x `[rows, C]`: returns (y, mean [rows], rstd [rows]).
pub fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    c: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / c;
    let mut y = vec![0.0f32; x.len()];
    let mut means = Vec::with_capacity(rows);
    let mut rstds = Vec::with_capacity(rows);
    for r in 0..rows {
        let row = &x[r * c..(r + 1) * c];
        let mean = row.iter().map(|v| *v as f64).sum::<f64>() / c as f64;
        let var = row.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for j in 0..c {
            let xh = (row[j] as f64 - mean) * rstd;
            y[r * c + j] = (xh * gamma[j] as f64 + beta[j] as f64) as f32;
        }
        means.push(mean as f32);
        rstds.push(rstd as f32);
    }
    (y, means, rstds)
}

/// Backward given dy: returns (dx, dγ, dβ). Recomputes mean and rstd from x
/// in f64 rather than trusting saved values.
pub fn backward(
    dy: &[f32],
    x: &[f32],
    gamma: &[f32],
    c: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / c;
    let mut dx = vec![0.0f32; x.len()];
    let mut dgamma = vec![0.0f64; c];
    let mut dbeta = vec![0.0f64; c];
    for r in 0..rows {
        let row = &x[r * c..(r + 1) * c];
        let drow = &dy[r * c..(r + 1) * c];
        let mean = row.iter().map(|v| *v as f64).sum::<f64>() / c as f64;
        let var = row.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        let xh: Vec<f64> = row.iter().map(|v| (*v as f64 - mean) * rstd).collect();
        let g: Vec<f64> = (0..c).map(|j| drow[j] as f64 * gamma[j] as f64).collect();
        let mg = g.iter().sum::<f64>() / c as f64;
        let mgx = (0..c).map(|j| g[j] * xh[j]).sum::<f64>() / c as f64;
        for j in 0..c {
            dx[r * c + j] = (rstd * (g[j] - mg - xh[j] * mgx)) as f32;
            dgamma[j] += drow[j] as f64 * xh[j];
            dbeta[j] += drow[j] as f64;
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|a| a as f32).collect();
    (dx, f(dgamma), f(dbeta))
}
