// Softmax over the last dimension, forward (optionally scaled and causally
// masked, or with a key-padding mask too: forward_masked) and backward.
//
// A row of n elements is handled by TPR threads (a power of two ≤ WG), so one
// workgroup holds WG / TPR rows; long rows (a 50257-word vocabulary) are
// looped over. Reductions combine per-thread partials by a fixed tree in
// workgroup memory, so results are bit-reproducible.

struct Params {
    rows: u32,     // number of rows (numel / n)
    n: u32,        // row length
    scale: f32,    // forward: softmax(scale·x)
    causal: u32,   // forward: 0 = no mask; t > 0 = row r keeps j ≤ r % t
    heads: u32,    // forward_masked: rows are [B, heads, n, n]; row r reads
                   // key-mask row r / (heads·n)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256;   // invocations per workgroup (≤ 256)
override TPR: u32 = 256;  // threads per row, a power of two dividing WG

// Stands in for −∞ as "no element seen yet": exp(NEG_BIG − m) is 0 for any
// real m, and exp(NEG_BIG − NEG_BIG) = 1 multiplies a zero sum.
const NEG_BIG: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> p: Params;

// forward: x -> y
@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> f_y: array<f32>;

// forward_masked: x, key mask [B, n] (i32, nonzero = attend) -> y
@group(0) @binding(2) var<storage, read> m_mask: array<i32>;
@group(0) @binding(3) var<storage, read_write> m_y: array<f32>;

// backward: y, dy -> dx
@group(0) @binding(1) var<storage, read> b_y: array<f32>;
@group(0) @binding(2) var<storage, read> b_dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> b_dx: array<f32>;

var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;

fn linear_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// y = exp(z − max z) / Σ exp(z − max z), z = scale·x, over the unmasked
// entries; masked entries (j > r % t when causal) are written as exactly 0.
// One read pass keeps a running (max, Σexp) per thread (online softmax);
// the per-thread pairs are merged by a fixed tree; a second pass writes y.
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wg, nwg) * (WG / TPR) + lid / TPR;
    let lane = lid % TPR;
    let live = row < p.rows;
    let n = p.n;
    let base = row * n;
    let head = lid - lane;
    var valid = n;
    if (p.causal > 0u) { valid = row % p.causal + 1u; }

    var m = NEG_BIG;
    var s = 0.0;
    if (live) {
        for (var j = lane; j < valid; j = j + TPR) {
            let z = p.scale * f_x[base + j];
            if (z > m) {
                s = s * exp(m - z) + 1.0;
                m = z;
            } else {
                s = s + exp(z - m);
            }
        }
    }
    red_m[lid] = m;
    red_s[lid] = s;
    workgroupBarrier();
    for (var k = TPR / 2u; k > 0u; k = k / 2u) {
        if (lane < k) {
            let m1 = red_m[lid];
            let m2 = red_m[lid + k];
            let mm = max(m1, m2);
            red_s[lid] = red_s[lid] * exp(m1 - mm) + red_s[lid + k] * exp(m2 - mm);
            red_m[lid] = mm;
        }
        workgroupBarrier();
    }
    let row_max = red_m[head];
    let row_sum = red_s[head];

    if (live) {
        for (var j = lane; j < n; j = j + TPR) {
            var v = 0.0;
            if (j < valid) { v = exp(p.scale * f_x[base + j] - row_max) / row_sum; }
            f_y[base + j] = v;
        }
    }
}

// dx = y ⊙ (dy − Σ_j dy_j·y_j). Entries where y = 0 (masked) get exactly 0.
@compute @workgroup_size(WG)
fn backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wg, nwg) * (WG / TPR) + lid / TPR;
    let lane = lid % TPR;
    let live = row < p.rows;
    let n = p.n;
    let base = row * n;
    let head = lid - lane;

    var s = 0.0;
    if (live) {
        for (var j = lane; j < n; j = j + TPR) { s = s + b_dy[base + j] * b_y[base + j]; }
    }
    red_s[lid] = s;
    workgroupBarrier();
    for (var k = TPR / 2u; k > 0u; k = k / 2u) {
        if (lane < k) { red_s[lid] = red_s[lid] + red_s[lid + k]; }
        workgroupBarrier();
    }
    let dot = red_s[head];

    if (live) {
        for (var j = lane; j < n; j = j + TPR) {
            let y = b_y[base + j];
            // select keeps masked entries exactly 0 even if their dy is not finite
            b_dx[base + j] = select(y * (b_dy[base + j] - dot), 0.0, y == 0.0);
        }
    }
}

// forward with a key-padding mask (attention's unfused path): as forward,
// but entry j of row r is visible only when the causal rule allows it and
// m_mask[b·n + j] ≠ 0, b = r / (heads·n). Hidden entries are exactly 0; a
// row that sees no entry at all is all zeros (the fused kernel's o = 0).
@compute @workgroup_size(WG)
fn forward_masked(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wg, nwg) * (WG / TPR) + lid / TPR;
    let lane = lid % TPR;
    let live = row < p.rows;
    let n = p.n;
    let base = row * n;
    let mbase = (row / (p.heads * n)) * n;
    let head = lid - lane;
    var valid = n;
    if (p.causal > 0u) { valid = row % p.causal + 1u; }

    var m = NEG_BIG;
    var s = 0.0;
    if (live) {
        for (var j = lane; j < valid; j = j + TPR) {
            if (m_mask[mbase + j] == 0) { continue; }
            let z = p.scale * f_x[base + j];
            if (z > m) {
                s = s * exp(m - z) + 1.0;
                m = z;
            } else {
                s = s + exp(z - m);
            }
        }
    }
    red_m[lid] = m;
    red_s[lid] = s;
    workgroupBarrier();
    for (var k = TPR / 2u; k > 0u; k = k / 2u) {
        if (lane < k) {
            let m1 = red_m[lid];
            let m2 = red_m[lid + k];
            let mm = max(m1, m2);
            red_s[lid] = red_s[lid] * exp(m1 - mm) + red_s[lid + k] * exp(m2 - mm);
            red_m[lid] = mm;
        }
        workgroupBarrier();
    }
    let row_max = red_m[head];
    let row_sum = red_s[head];

    if (live) {
        for (var j = lane; j < n; j = j + TPR) {
            var v = 0.0;
            if (j < valid && m_mask[mbase + j] != 0 && row_sum > 0.0) {
                v = exp(p.scale * f_x[base + j] - row_max) / row_sum;
            }
            m_y[base + j] = v;
        }
    }
}
