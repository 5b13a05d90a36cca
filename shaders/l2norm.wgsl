// L2 normalisation of rows, as torch.nn.functional.normalize(x, dim=-1):
//   forward   y = x / max(‖x‖₂, eps), and norm = ‖x‖₂ per row (unclamped)
//   backward  dx = (dy − y·(y·dy)) / ‖x‖   where ‖x‖ ≥ eps
//             dx = dy / eps                where ‖x‖ < eps (the clamp holds)
//
// A row of n elements is handled by TPR threads (a power of two ≤ WG), so
// one workgroup holds WG / TPR rows; long rows are looped over. Sums combine
// per-thread partials by a fixed tree: bit-reproducible. Written over an
// element type (x, y, dy, dx); norms are f32.

alias elem = f32;

struct Params {
    rows: u32,
    n: u32,
    eps: f32,
    _pad: u32,
}

override WG: u32 = 256;
override TPR: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
// forward: x -> y, norm
@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;
@group(0) @binding(3) var<storage, read_write> norm: array<f32>;
// backward: y, norm, dy -> dx
@group(0) @binding(1) var<storage, read> b_y: array<elem>;
@group(0) @binding(2) var<storage, read> b_norm: array<f32>;
@group(0) @binding(3) var<storage, read> b_dy: array<elem>;
@group(0) @binding(4) var<storage, read_write> b_dx: array<elem>;

var<workgroup> red: array<f32, WG>;

// The row this invocation works on, and its lane.
fn row_lane(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> vec2<u32> {
    return vec2<u32>((wg.x + wg.y * nwg.x) * (WG / TPR) + lid / TPR, lid % TPR);
}

// Sum over each row's TPR lanes by a fixed tree; every invocation calls it.
fn row_tree(lid: u32, v: f32) -> f32 {
    let lane = lid % TPR;
    red[lid] = v;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s = s / 2u) {
        if (lane < s) { red[lid] = red[lid] + red[lid + s]; }
        workgroupBarrier();
    }
    return red[lid - lane];
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let rl = row_lane(wg, nwg, lid);
    let live = rl.x < p.rows;
    let base = rl.x * p.n;
    var s = 0.0;
    if (live) {
        for (var j = rl.y; j < p.n; j = j + TPR) {
            let v = f32(x[base + j]);
            s = s + v * v;
        }
    }
    let nrm = sqrt(row_tree(lid, s));
    if (live) {
        let inv = 1.0 / max(nrm, p.eps);
        for (var j = rl.y; j < p.n; j = j + TPR) {
            y[base + j] = elem(f32(x[base + j]) * inv);
        }
        if (rl.y == 0u) { norm[rl.x] = nrm; }
    }
}

@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let rl = row_lane(wg, nwg, lid);
    let live = rl.x < p.rows;
    let base = rl.x * p.n;
    var s = 0.0;
    if (live) {
        for (var j = rl.y; j < p.n; j = j + TPR) {
            s = s + f32(b_y[base + j]) * f32(b_dy[base + j]);
        }
    }
    let dot = row_tree(lid, s);
    if (live) {
        let nrm = b_norm[rl.x];
        if (nrm >= p.eps) {
            let inv = 1.0 / nrm;
            for (var j = rl.y; j < p.n; j = j + TPR) {
                b_dx[base + j] = elem((f32(b_dy[base + j]) - f32(b_y[base + j]) * dot) * inv);
            }
        } else {
            let inv = 1.0 / p.eps;
            for (var j = rl.y; j < p.n; j = j + TPR) {
                b_dx[base + j] = elem(f32(b_dy[base + j]) * inv);
            }
        }
    }
}
