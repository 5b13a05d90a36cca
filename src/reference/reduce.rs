//! References for `shaders/reduce.wgsl` (f64 accumulation).

/// out[j] = Σ_i x[i, j] over a row-major [rows, cols] array.
pub fn col_sum(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(x.len(), rows * cols, "col_sum: x is not [rows, cols]");
    (0..cols)
        .map(|j| (0..rows).map(|i| x[i * cols + j] as f64).sum::<f64>() as f32)
        .collect()
}

/// Σ_t Σ_i xs[t][i]², in f64 (the squared global gradient norm).
pub fn sum_squares(xs: &[&[f32]]) -> f64 {
    xs.iter()
        .flat_map(|x| x.iter())
        .map(|v| *v as f64 * *v as f64)
        .sum()
}
