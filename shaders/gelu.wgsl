// GELU activation, forward and backward, in two forms selected by the
// override constant KIND:
//   KIND = 0 (tanh, GPT-2): gelu(x) = 0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))
//   KIND = 1 (erf, exact):  gelu(x) = 0.5x(1 + erf(x/√2)) = x·Φ(x)
// One thread per element; the 1-D index is spread over a 2-D grid.
//
// Overflow safety: nothing here calls WGSL's tanh (which can return NaN for
// large |u| on some drivers). The tanh form uses 0.5(1 + tanh(u)) =
// sigmoid(2u) = 1/(1 + exp(-2u)) with the exp argument clamped to ±80, and
// both forms saturate to x or 0 beyond |x| = 20, so every intermediate stays
// finite for every finite x. The erf form uses erfc
// so that the left tail x·Φ(x), x ≪ 0, keeps its relative accuracy instead of
// cancelling in 1 + erf.

struct Params {
    n: u32,      // number of elements
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256;
override KIND: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// forward: y; backward: dy, then dx.
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const INV_SQRT_2: f32 = 0.7071067811865476;
const INV_SQRT_2PI: f32 = 0.3989422804014327;
const GELU_C: f32 = 0.044715;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG + lid;
}

// 1/(1 + exp(-z)), finite for every finite z (|z| clamped to 80, where the
// true value is within 2e-35 of 0 or 1).
fn sigmoid(z: f32) -> f32 {
    return 1.0 / (1.0 + exp(-clamp(z, -80.0, 80.0)));
}

// Complementary error function, Numerical Recipes' `erfcc` (Chebyshev fit):
// relative error < 1.2e-7 for every z in exact arithmetic (so both erfc and
// erf = 1 - erfc are accurate to ~1.2e-7 absolute; in f32 the exp adds a few
// ulp). |z| is clamped to 10, where erfc(10) ≈ 2e-45 is already 0 in f32.
fn erfc_approx(z: f32) -> f32 {
    let a = min(abs(z), 10.0);
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * exp(-a * a + poly);
    return select(2.0 - r, r, z >= 0.0);
}

// Standard normal CDF Φ(x) = 0.5·erfc(-x/√2).
fn normal_cdf(v: f32) -> f32 {
    return 0.5 * erfc_approx(-v * INV_SQRT_2);
}

// The inner argument u(x) of the tanh form and du/dx (callers keep |x| ≤ 20).
fn tanh_arg(v: f32) -> vec2<f32> {
    let u = SQRT_2_OVER_PI * (v + GELU_C * v * v * v);
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * v * v);
    return vec2<f32>(u, du);
}

// Beyond |x| = 20 both forms equal, correctly rounded in f32, x (x > 0) or
// 0 (x < 0): the tail is below e^-200. Saturating there keeps x·(tiny) from
// leaking through for huge |x|.
fn gelu(v: f32) -> f32 {
    if (abs(v) > 20.0) {
        return select(0.0, v, v > 0.0);
    }
    if (KIND == 0u) {
        return v * sigmoid(2.0 * tanh_arg(v).x);
    }
    return v * normal_cdf(v);
}

// d gelu / dx.
//   tanh: s + 2x·s·(1 - s)·u'(x) with s = sigmoid(2u), 1 - s = sigmoid(-2u)
//         (computed directly, not as 1 - s, so neither tail cancels);
//   erf:  Φ(x) + x·φ(x), φ(x) = exp(-x²/2)/√(2π).
fn gelu_grad(v: f32) -> f32 {
    if (abs(v) > 20.0) {
        return select(0.0, 1.0, v > 0.0);
    }
    if (KIND == 0u) {
        let ud = tanh_arg(v);
        let s = sigmoid(2.0 * ud.x);
        let sm = sigmoid(-2.0 * ud.x);
        return s + 2.0 * v * s * sm * ud.y;
    }
    return normal_cdf(v) + v * INV_SQRT_2PI * exp(-0.5 * v * v);
}

// y = gelu(x)
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i < p.n) { y[i] = gelu(x[i]); }
}

// dx = dy · gelu'(x)
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i < p.n) { dx[i] = dy[i] * gelu_grad(x[i]); }
}
