//! Reference for `shaders/crossentropy.wgsl`, in f64.

/// What [`cross_entropy`] returns.
pub struct CrossEntropy {
    /// Per-row loss (0 for ignored rows).
    pub losses: Vec<f32>,
    /// Σ losses / count (0 when count is 0).
    pub mean_loss: f32,
    /// grad_scale · (softmax − onehot) / count for counted rows, 0 elsewhere.
    pub dlogits: Vec<f32>,
    /// Number of rows whose target is neither ignore_index nor outside [0, V).
    pub count: usize,
}

/// `logits` is [rows, v] row-major, `targets` [rows]. A target equal to
/// `ignore_index` or outside [0, v) ignores its row, as the kernel does.
pub fn cross_entropy(
    logits: &[f32],
    targets: &[i32],
    v: usize,
    ignore_index: i32,
    grad_scale: f32,
) -> CrossEntropy {
    let rows = targets.len();
    assert_eq!(logits.len(), rows * v, "logits must be [rows, v]");
    let valid = |t: i32| t != ignore_index && t >= 0 && (t as usize) < v;
    let count = targets.iter().filter(|&&t| valid(t)).count();
    let mut losses = vec![0f32; rows];
    let mut dlogits = vec![0f32; rows * v];
    let mut total = 0f64;
    for r in 0..rows {
        let t = targets[r];
        if !valid(t) {
            continue;
        }
        let row = &logits[r * v..(r + 1) * v];
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
        let sum: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
        let lse = m + sum.ln();
        let loss = lse - row[t as usize] as f64;
        losses[r] = loss as f32;
        total += loss;
        let scale = grad_scale as f64 / count as f64;
        for j in 0..v {
            let p = (row[j] as f64 - lse).exp();
            let onehot = if j == t as usize { 1.0 } else { 0.0 };
            dlogits[r * v + j] = (scale * (p - onehot)) as f32;
        }
    }
    let mean_loss = if count == 0 {
        0.0
    } else {
        (total / count as f64) as f32
    };
    CrossEntropy {
        losses,
        mean_loss,
        dlogits,
        count,
    }
}
