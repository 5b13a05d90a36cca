//! References for `shaders/elementwise.wgsl`.

pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 + *y as f64) as f32)
        .collect()
}
