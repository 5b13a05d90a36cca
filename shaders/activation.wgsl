// Elementwise activations, forward and backward, selected by the override
// constant KIND:
//   KIND = 0 GELU, tanh form (GPT-2): 0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))
//   KIND = 1 GELU, erf form (exact):  0.5x(1 + erf(x/√2)) = x·Φ(x)
//   KIND = 2 quick-GELU (CLIP):       x·σ(1.702x)
//   KIND = 3 ReLU:                    max(x, 0), gradient 0 at x = 0 (as PyTorch)
//   KIND = 4 tanh
//   KIND = 5 sigmoid:                 σ(x) = 1/(1 + e^−x)
//   KIND = 6 exp, optionally clamped: min(e^x, bound) when p.has_bound = 1
//            (CLIP's learnable temperature); the gradient is 0 where the
//            bound applies (e^x > bound), as torch.clamp's.
// One thread per element; the 1-D index is spread over a 2-D grid.
// Written over an element type (f32, or f16 storage with f32 arithmetic).
//
// Overflow safety: nothing here calls WGSL's tanh (which can return NaN for
// large |u| on some drivers, and loses relative accuracy near 0). The GELU
// tanh form uses 0.5(1 + tanh(u)) = sigmoid(2u) = 1/(1 + exp(-2u)) with the
// exp argument clamped to ±80; GELU and quick-GELU saturate to x or 0 far
// out; tanh and sigmoid only ever exponentiate a non-positive number. So
// every intermediate stays finite for every finite x, and every result but
// exp's (which overflows to +inf past x ≈ 88.7, as in PyTorch) is finite.
// The erf form uses erfc so that the left tail x·Φ(x), x ≪ 0, keeps its
// relative accuracy instead of cancelling in 1 + erf.

alias elem = f32;

struct Params {
    n: u32,          // number of elements
    has_bound: u32,  // exp: 1 = clamp to `bound`
    bound: f32,      // exp: upper bound of the result
    _pad: u32,
}

override WG: u32 = 256;
override KIND: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<elem>;
// forward: y; backward: dy, then dx.
@group(0) @binding(2) var<storage, read_write> y: array<elem>;
@group(0) @binding(2) var<storage, read> dy: array<elem>;
@group(0) @binding(3) var<storage, read_write> dx: array<elem>;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const INV_SQRT_2: f32 = 0.7071067811865476;
const INV_SQRT_2PI: f32 = 0.3989422804014327;
const GELU_C: f32 = 0.044715;
const QUICK: f32 = 1.702;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG + lid;
}

// 1/(1 + exp(-z)), finite for every finite z (|z| clamped to 80, where the
// true value is within 2e-35 of 0 or 1). The GELU tanh form's, unchanged.
fn sigmoid(z: f32) -> f32 {
    return 1.0 / (1.0 + exp(-clamp(z, -80.0, 80.0)));
}

// σ(z) with full relative accuracy in both tails: only exp(−|z|) ∈ (0, 1]
// is computed, so nothing overflows; σ(z) for z ≪ 0 is e^z/(1 + e^z), not
// 1 − (something close to 1).
fn sigmoid_exact(z: f32) -> f32 {
    let e = exp(-abs(z));
    let r = 1.0 / (1.0 + e);
    return select(e * r, r, z >= 0.0);
}

// tanh(z): Cephes' tanhf. |z| < 0.625: an odd polynomial (relative error
// ~1e-7, no cancellation near 0); beyond: sign(z)·(1 − 2/(e^{2|z|} + 1)),
// with |z| clamped to 20, where tanh is 1 in f32.
fn tanh_exact(z: f32) -> f32 {
    let a = abs(z);
    if (a < 0.625) {
        let s = z * z;
        let poly = (((-5.70498872745e-3 * s + 2.06390887954e-2) * s - 5.37397155531e-2) * s
            + 1.33314422036e-1) * s - 3.33332819422e-1;
        return z + z * s * poly;
    }
    let t = 1.0 - 2.0 / (exp(2.0 * min(a, 20.0)) + 1.0);
    return select(-t, t, z >= 0.0);
}

// 1 − tanh²(z) = 4e/(1 + e)², e = exp(−2|z|): accurate in the tails too.
fn sech2(z: f32) -> f32 {
    let e = exp(-2.0 * min(abs(z), 40.0));
    let d = 1.0 + e;
    return 4.0 * e / (d * d);
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

// Beyond |x| = 20 both GELU forms equal, correctly rounded in f32, x (x > 0)
// or 0 (x < 0): the tail is below e^-200. Quick-GELU's tail σ(−1.702|x|)
// is below e^-102 past |x| = 60. Saturating there keeps x·(tiny) from
// leaking through for huge |x|.
fn act(v: f32) -> f32 {
    switch KIND {
        case 0u: {
            if (abs(v) > 20.0) { return select(0.0, v, v > 0.0); }
            return v * sigmoid(2.0 * tanh_arg(v).x);
        }
        case 1u: {
            if (abs(v) > 20.0) { return select(0.0, v, v > 0.0); }
            return v * normal_cdf(v);
        }
        case 2u: {
            if (abs(v) > 60.0) { return select(0.0, v, v > 0.0); }
            return v * sigmoid_exact(QUICK * v);
        }
        case 3u: {
            return max(v, 0.0);
        }
        case 4u: {
            return tanh_exact(v);
        }
        case 5u: {
            return sigmoid_exact(v);
        }
        default: {
            let e = exp(v);
            if (p.has_bound != 0u && e > p.bound) { return p.bound; }
            return e;
        }
    }
}

// d act / dx.
//   GELU tanh: s + 2x·s·(1 - s)·u'(x) with s = sigmoid(2u), 1 - s = sigmoid(-2u)
//              (computed directly, not as 1 - s, so neither tail cancels);
//   GELU erf:  Φ(x) + x·φ(x), φ(x) = exp(-x²/2)/√(2π);
//   quick-GELU: σ(kx) + kx·σ(kx)·σ(−kx), k = 1.702;
//   tanh: sech²(x); sigmoid: σ(x)·σ(−x); exp: e^x (0 where clamped).
fn act_grad(v: f32) -> f32 {
    switch KIND {
        case 0u: {
            if (abs(v) > 20.0) { return select(0.0, 1.0, v > 0.0); }
            let ud = tanh_arg(v);
            let s = sigmoid(2.0 * ud.x);
            let sm = sigmoid(-2.0 * ud.x);
            return s + 2.0 * v * s * sm * ud.y;
        }
        case 1u: {
            if (abs(v) > 20.0) { return select(0.0, 1.0, v > 0.0); }
            return normal_cdf(v) + v * INV_SQRT_2PI * exp(-0.5 * v * v);
        }
        case 2u: {
            if (abs(v) > 60.0) { return select(0.0, 1.0, v > 0.0); }
            let z = QUICK * v;
            let s = sigmoid_exact(z);
            return s + z * s * sigmoid_exact(-z);
        }
        case 3u: {
            return select(0.0, 1.0, v > 0.0);
        }
        case 4u: {
            return sech2(v);
        }
        case 5u: {
            return sigmoid_exact(v) * sigmoid_exact(-v);
        }
        default: {
            let e = exp(v);
            if (p.has_bound != 0u && e > p.bound) { return 0.0; }
            return e;
        }
    }
}

// y = act(x)
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i < p.n) { y[i] = elem(act(f32(x[i]))); }
}

// dx = dy · act'(x)
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i < p.n) {
        let g = act_grad(f32(x[i]));
        // A zero derivative (ReLU's left half, a clamped exp) gives an exact
        // 0 even when dy is not finite.
        dx[i] = elem(select(f32(dy[i]) * g, 0.0, g == 0.0));
    }
}
