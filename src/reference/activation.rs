//! References for `shaders/activation.wgsl`, in f64: every activation and
//! its derivative.

use super::gelu::normal_cdf;
use crate::kernels::activation::ActKind;

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;
const QUICK: f64 = 1.702;

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// act(x); `bound` clamps exp from above.
pub fn eval(kind: ActKind, x: f64, bound: Option<f64>) -> f64 {
    match kind {
        ActKind::GeluTanh => 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_C * x * x * x)).tanh()),
        ActKind::GeluErf => x * normal_cdf(x),
        ActKind::QuickGelu => x * sigmoid(QUICK * x),
        ActKind::Relu => x.max(0.0),
        ActKind::Tanh => x.tanh(),
        ActKind::Sigmoid => sigmoid(x),
        ActKind::Exp => {
            let e = x.exp();
            match bound {
                Some(b) if e > b => b,
                _ => e,
            }
        }
    }
}

/// act'(x): 0 at ReLU's kink (as PyTorch) and where the exp bound applies.
pub fn grad(kind: ActKind, x: f64, bound: Option<f64>) -> f64 {
    match kind {
        ActKind::GeluTanh => {
            let t = (SQRT_2_OVER_PI * (x + GELU_C * x * x * x)).tanh();
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x);
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
        }
        ActKind::GeluErf => {
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            normal_cdf(x) + x * pdf
        }
        ActKind::QuickGelu => {
            let z = QUICK * x;
            let s = sigmoid(z);
            s + z * s * sigmoid(-z)
        }
        ActKind::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        ActKind::Tanh => {
            // 1 − tanh² as 4e/(1 + e)², e = exp(−2|x|): no cancellation.
            let e = (-2.0 * x.abs()).exp();
            4.0 * e / ((1.0 + e) * (1.0 + e))
        }
        ActKind::Sigmoid => sigmoid(x) * sigmoid(-x),
        ActKind::Exp => {
            let e = x.exp();
            match bound {
                Some(b) if e > b => 0.0,
                _ => e,
            }
        }
    }
}

/// y = act(x)
pub fn forward(x: &[f32], kind: ActKind, bound: Option<f32>) -> Vec<f32> {
    let b = bound.map(|b| b as f64);
    x.iter().map(|&v| eval(kind, v as f64, b) as f32).collect()
}

/// dx = dy · act'(x) (an exact 0 where act'(x) = 0)
pub fn backward(x: &[f32], dy: &[f32], kind: ActKind, bound: Option<f32>) -> Vec<f32> {
    let b = bound.map(|b| b as f64);
    x.iter()
        .zip(dy)
        .map(|(&v, &g)| {
            let d = grad(kind, v as f64, b);
            if d == 0.0 {
                0.0
            } else {
                (g as f64 * d) as f32
            }
        })
        .collect()
}
