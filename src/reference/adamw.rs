//! References for `shaders/adamw.wgsl`: AdamW as torch.optim.AdamW
//! (foreach=False) and clipping as torch.nn.utils.clip_grad_norm_, computed
//! in f64 from the f32 state, with the new state rounded to f32 (the GPU
//! stores f32 state too).

use crate::kernels::adamw::AdamWConfig;

/// min(1, max_norm / (sqrt(sumsq) + 1e-6)): the factor clip_grad_norm_
/// multiplies every gradient by, given Σ g² over all gradients.
pub fn clip_factor(sumsq: f64, max_norm: f32) -> f64 {
    (max_norm as f64 / (sumsq.sqrt() + 1e-6)).min(1.0)
}

/// grad · clip_factor(sumsq, max_norm)
pub fn clip_by_global_norm(grad: &[f32], sumsq: f64, max_norm: f32) -> Vec<f32> {
    let c = clip_factor(sumsq, max_norm);
    grad.iter().map(|g| (*g as f64 * c) as f32).collect()
}

/// One AdamW step `t` (≥ 1) in place. `clip = Some((sumsq, max_norm))`
/// scales the gradient by `clip_factor` first (without changing `grad`).
pub fn adamw_step(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    clip: Option<(f64, f32)>,
    cfg: &AdamWConfig,
    t: u32,
) {
    assert!(t >= 1, "adamw reference: t must be ≥ 1");
    let n = param.len();
    assert!(grad.len() == n && m.len() == n && v.len() == n);
    // Hyper-parameters as the decimals the user wrote (0.999, not the f32
    // 0.99900001287), as PyTorch holds them in Python floats.
    let dec = |x: f32| -> f64 { x.to_string().parse().unwrap() };
    let lr = dec(cfg.lr);
    let (b1, b2) = (dec(cfg.beta1), dec(cfg.beta2));
    let bias_correction1 = 1.0 - b1.powf(t as f64);
    let bias_correction2 = 1.0 - b2.powf(t as f64);
    let c = clip.map_or(1.0, |(s, max_norm)| clip_factor(s, max_norm));
    for i in 0..n {
        let g = grad[i] as f64 * c;
        let p = param[i] as f64 * (1.0 - lr * dec(cfg.weight_decay));
        let mi = b1 * m[i] as f64 + (1.0 - b1) * g;
        let vi = b2 * v[i] as f64 + (1.0 - b2) * g * g;
        let denom = vi.sqrt() / bias_correction2.sqrt() + dec(cfg.eps);
        param[i] = (p - lr / bias_correction1 * mi / denom) as f32;
        m[i] = mi as f32;
        v[i] = vi as f32;
    }
}
