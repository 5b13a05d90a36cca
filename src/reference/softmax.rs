//! References for `shaders/softmax.wgsl`: softmax over rows of length n,
//! f64 accumulation.

/// y = softmax(scale·x) per row of x `[rows, n]`. With `causal = Some(t)`
/// (n == t), row r keeps entries j ≤ r % t and the rest are 0.
pub fn forward(x: &[f32], n: usize, scale: f32, causal: Option<usize>) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    for r in 0..x.len() / n {
        let valid = causal.map_or(n, |t| r % t + 1);
        let z: Vec<f64> = x[r * n..r * n + valid]
            .iter()
            .map(|v| scale as f64 * *v as f64)
            .collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|v| (v - m).exp()).sum();
        for (j, v) in z.iter().enumerate() {
            y[r * n + j] = ((v - m).exp() / sum) as f32;
        }
    }
    y
}

/// dx = y ⊙ (dy − Σ_j dy_j·y_j) per row.
pub fn backward(y: &[f32], dy: &[f32], n: usize) -> Vec<f32> {
    let mut dx = vec![0.0f32; y.len()];
    for r in 0..y.len() / n {
        let (yr, dr) = (&y[r * n..(r + 1) * n], &dy[r * n..(r + 1) * n]);
        let dot: f64 = yr.iter().zip(dr).map(|(a, b)| *a as f64 * *b as f64).sum();
        for j in 0..n {
            dx[r * n + j] = (yr[j] as f64 * (dr[j] as f64 - dot)) as f32;
        }
    }
    dx
}

/// Attention probabilities with a key-padding mask: y = softmax(scale·x)
/// per row of x [B·heads, n, n], row r seeing key j when mask[b·n + j] ≠ 0
/// (b = r / (heads·n)) and, if `causal`, j ≤ r % n. Hidden entries are 0; a
/// row that sees nothing is all zeros.
pub fn forward_masked(
    x: &[f32],
    n: usize,
    scale: f32,
    causal: bool,
    mask: &[i32],
    heads: usize,
) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    for r in 0..x.len() / n {
        let b = r / (heads * n);
        let visible = |j: usize| (!causal || j <= r % n) && mask[b * n + j] != 0;
        let z: Vec<(usize, f64)> = (0..n)
            .filter(|&j| visible(j))
            .map(|j| (j, scale as f64 * x[r * n + j] as f64))
            .collect();
        if z.is_empty() {
            continue;
        }
        let m = z.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|v| (v.1 - m).exp()).sum();
        for (j, v) in z {
            y[r * n + j] = ((v - m).exp() / sum) as f32;
        }
    }
    y
}
