// AdamW (torch.optim.AdamW, foreach=False, amsgrad=False) and global-norm
// gradient clipping (torch.nn.utils.clip_grad_norm_). One thread per element;
// the 1-D index is spread over a 2-D grid. Element counts come from
// arrayLength (each tensor is bound with exactly its own bytes), so the
// parameter block does not depend on the tensor and one step's block can be
// written into every parameter's dispatch.
//
// A non-finite sumsq[0] (Σg² of the step) makes the update a no-op: the
// parameters and moments keep their values (PyTorch would write NaN).
//
// Per element, in PyTorch's order (scalars computed on the CPU in f64):
//   g = grad · clip                      clip = min(1, max_norm / (sqrt(sumsq) + 1e-6))
//   p = p · (1 − lr·wd)
//   m = lerp(m, g, 1 − β1)               = β1·m + (1 − β1)·g
//   v = v·β2 + (1 − β2)·g·g
//   denom = sqrt(v) / sqrt(1 − β2^t) + eps
//   p = p − (lr / (1 − β1^t))·m / denom

struct Params {
    decay: f32,            // 1 − lr·wd
    one_minus_beta1: f32,  // lerp weight of the new gradient in m
    beta2: f32,
    one_minus_beta2: f32,
    step_size: f32,        // lr / (1 − β1^t)
    bc2_sqrt: f32,         // sqrt(1 − β2^t)
    eps: f32,
    max_norm: f32,         // ≤ 0: no clipping (sumsq is still read: non-finite = skip)
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> sumsq: array<f32>;

// clip_grad: binding 1 is the gradient (modified in place), binding 2 sumsq [1].
struct ClipParams {
    max_norm: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}
@group(0) @binding(0) var<uniform> cp: ClipParams;
@group(0) @binding(1) var<storage, read_write> grad_rw: array<f32>;
@group(0) @binding(2) var<storage, read> clip_sumsq: array<f32>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG + lid;
}

// min(1, max_norm / (‖g‖ + 1e-6)), written so that a NaN norm gives NaN
// (as in PyTorch) rather than silently no clipping.
fn clip_factor(max_norm: f32, s: f32) -> f32 {
    let coef = max_norm / (sqrt(s) + 1e-6);
    return select(coef, 1.0, coef >= 1.0);
}

// torch.lerp on f32: start + w·(end − start) for |w| < 0.5, else
// end − (end − start)·(1 − w).
fn lerp(start: f32, end: f32, w: f32) -> f32 {
    if (abs(w) < 0.5) {
        return start + w * (end - start);
    }
    return end - (end - start) * (1.0 - w);
}

@compute @workgroup_size(WG)
fn adamw(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i >= arrayLength(&param)) {
        return;
    }
    // A non-finite Σg² means this step's gradient is unusable (or the
    // guard, guard.wgsl, skipped the step): no update at all.
    if ((bitcast<u32>(sumsq[0]) & 0x7f800000u) == 0x7f800000u) {
        return;
    }
    var g = grad[i];
    if (p.max_norm > 0.0) {
        g = g * clip_factor(p.max_norm, sumsq[0]);
    }
    let pd = param[i] * p.decay;
    let mi = lerp(m[i], g, p.one_minus_beta1);
    let vi = v[i] * p.beta2 + p.one_minus_beta2 * g * g;
    let denom = sqrt(vi) / p.bc2_sqrt + p.eps;
    m[i] = mi;
    v[i] = vi;
    param[i] = pd - (p.step_size * mi) / denom;
}

// grad ·= min(1, max_norm / (sqrt(sumsq[0]) + 1e-6))
@compute @workgroup_size(WG)
fn clip_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i >= arrayLength(&grad_rw)) {
        return;
    }
    grad_rw[i] = grad_rw[i] * clip_factor(cp.max_norm, clip_sumsq[0]);
}
