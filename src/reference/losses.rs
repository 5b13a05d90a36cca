//! References for `shaders/mse.wgsl` and `shaders/kldiv.wgsl`, in f64.

/// mean((a − b)²) and its gradient for a (d b is its negative).
pub fn mse(a: &[f64], b: &[f64]) -> (f64, Vec<f64>) {
    let n = a.len() as f64;
    let loss = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / n;
    let grad = a.iter().zip(b).map(|(x, y)| 2.0 * (x - y) / n).collect();
    (loss, grad)
}

fn log_softmax(z: &[f64], inv_tau: f64) -> Vec<f64> {
    let m = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b * inv_tau));
    let lse = m + z.iter().map(|x| (x * inv_tau - m).exp()).sum::<f64>().ln();
    z.iter().map(|x| x * inv_tau - lse).collect()
}

/// Distillation KL over rows of length v: (loss, per-row τ²·KL, d s, d t)
/// for loss = τ²/rows·Σ_r KL(softmax(t_r/τ) ‖ softmax(s_r/τ)).
pub fn kl_div(s: &[f64], t: &[f64], v: usize, tau: f64) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
    let rows = s.len() / v;
    let g = tau / rows as f64;
    let mut losses = vec![0.0; rows];
    let (mut ds, mut dt) = (vec![0.0; s.len()], vec![0.0; s.len()]);
    for r in 0..rows {
        let span = r * v..(r + 1) * v;
        let lps = log_softmax(&s[span.clone()], 1.0 / tau);
        let lpt = log_softmax(&t[span], 1.0 / tau);
        let kl: f64 = lpt.iter().zip(&lps).map(|(a, b)| a.exp() * (a - b)).sum();
        losses[r] = tau * tau * kl;
        for j in 0..v {
            let (ps, pt) = (lps[j].exp(), lpt[j].exp());
            ds[r * v + j] = g * (ps - pt);
            dt[r * v + j] = g * pt * (lpt[j] - lps[j] - kl);
        }
    }
    let loss = losses.iter().sum::<f64>() / rows as f64;
    (loss, losses, ds, dt)
}
