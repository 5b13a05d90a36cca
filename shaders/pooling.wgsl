// Masked mean pooling over the sequence:
//   forward   y[b, c] = Σ_t [mask[b, t] ≠ 0]·x[b, t, c] / max(count_b, 1),
//             count_b = #{t : mask[b, t] ≠ 0}; scale[b] = 1 / max(count_b, 1)
//             (a row with no real token gives y = 0)
//   backward  dx[b, t, c] = [mask[b, t] ≠ 0]·dy[b, c]·scale[b]
// Forward: one thread per (b, c) sums over t in order (coalesced across c);
// backward: one thread per element. Deterministic; no atomics. Written over
// an element type (x, y, dy, dx); scale is f32, the mask i32.

alias elem = f32;

struct Params {
    b: u32,
    t: u32,
    c: u32,
    _pad: u32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> mask: array<i32>;
// forward
@group(0) @binding(2) var<storage, read> x: array<elem>;
@group(0) @binding(3) var<storage, read_write> y: array<elem>;
@group(0) @binding(4) var<storage, read_write> scale: array<f32>;
// backward
@group(0) @binding(2) var<storage, read> b_scale: array<f32>;
@group(0) @binding(3) var<storage, read> b_dy: array<elem>;
@group(0) @binding(4) var<storage, read_write> b_dx: array<elem>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i >= p.b * p.c) { return; }
    let bi = i / p.c;
    let ci = i % p.c;
    var s = 0.0;
    var count = 0u;
    for (var ti = 0u; ti < p.t; ti = ti + 1u) {
        if (mask[bi * p.t + ti] != 0) {
            s = s + f32(x[(bi * p.t + ti) * p.c + ci]);
            count = count + 1u;
        }
    }
    let inv = 1.0 / f32(max(count, 1u));
    y[i] = elem(s * inv);
    if (ci == 0u) { scale[bi] = inv; }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i >= p.b * p.t * p.c) { return; }
    let ci = i % p.c;
    let bt = i / p.c;
    let bi = bt / p.t;
    var g = 0.0;
    if (mask[bt] != 0) { g = f32(b_dy[bi * p.c + ci]) * b_scale[bi]; }
    b_dx[i] = elem(g);
}
