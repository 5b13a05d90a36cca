//! References for `shaders/gelu.wgsl`, in f64.

use crate::kernels::gelu::GeluKind;

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;

/// erfc(z) in f64 to ~1e-14 relative: the Taylor series of erf for |z| < 2,
/// the continued fraction of erfc beyond (where the series would cancel).
pub fn erfc(z: f64) -> f64 {
    if z < 0.0 {
        return 2.0 - erfc(-z);
    }
    if z < 2.0 {
        // erf(z) = 2/√π Σ (-1)^n z^(2n+1) / (n! (2n+1))
        let (mut term, mut sum) = (z, z);
        for n in 1..80 {
            term *= -z * z / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        return 1.0 - sum * std::f64::consts::FRAC_2_SQRT_PI;
    }
    // erfc(z) = exp(-z²)/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + ...))))
    let mut k = z;
    for n in (1..200).rev() {
        k = z + (n as f64 / 2.0) / k;
    }
    (-z * z).exp() / (std::f64::consts::PI.sqrt() * k)
}

/// Standard normal CDF Φ(x).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

fn gelu1(x: f64, kind: GeluKind) -> f64 {
    match kind {
        GeluKind::Tanh => 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_C * x * x * x)).tanh()),
        GeluKind::Erf => x * normal_cdf(x),
    }
}

fn gelu_grad1(x: f64, kind: GeluKind) -> f64 {
    match kind {
        GeluKind::Tanh => {
            let t = (SQRT_2_OVER_PI * (x + GELU_C * x * x * x)).tanh();
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
        }
        GeluKind::Erf => {
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            normal_cdf(x) + x * pdf
        }
    }
}

/// y = gelu(x)
pub fn gelu_forward(x: &[f32], kind: GeluKind) -> Vec<f32> {
    x.iter().map(|&v| gelu1(v as f64, kind) as f32).collect()
}

/// dx = dy · gelu'(x)
pub fn gelu_backward(x: &[f32], dy: &[f32], kind: GeluKind) -> Vec<f32> {
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| (g as f64 * gelu_grad1(v as f64, kind)) as f32)
        .collect()
}
