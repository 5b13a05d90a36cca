//! References for `shaders/l2norm.wgsl`, in f64.

/// (y, norms): y = x / max(‖x‖, eps) per row of length n.
pub fn forward(x: &[f64], n: usize, eps: f64) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; x.len()];
    let mut norms = Vec::with_capacity(x.len() / n);
    for (row, out) in x.chunks(n).zip(y.chunks_mut(n)) {
        let nrm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        let d = nrm.max(eps);
        for (o, v) in out.iter_mut().zip(row) {
            *o = v / d;
        }
        norms.push(nrm);
    }
    (y, norms)
}

/// dx from x and dy: (dy − y·(y·dy)) / ‖x‖ where ‖x‖ ≥ eps, dy / eps elsewhere.
pub fn backward(x: &[f64], dy: &[f64], n: usize, eps: f64) -> Vec<f64> {
    let (y, norms) = forward(x, n, eps);
    let mut dx = vec![0.0; x.len()];
    for (r, &nrm) in norms.iter().enumerate() {
        let s = r * n..(r + 1) * n;
        let (yr, dr) = (&y[s.clone()], &dy[s.clone()]);
        let dot: f64 = yr.iter().zip(dr).map(|(a, b)| a * b).sum();
        for j in 0..n {
            dx[r * n + j] = if nrm >= eps {
                (dr[j] - yr[j] * dot) / nrm
            } else {
                dr[j] / eps
            };
        }
    }
    dx
}
