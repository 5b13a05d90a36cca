// LayerNorm over the last dimension (as torch.nn.LayerNorm: biased variance,
// eps inside the square root), forward and backward.
//
// Row kernels (forward, backward_dx): a row of C elements is handled by TPR
// threads (a power of two ≤ WG), so one workgroup holds WG / TPR rows. Each
// thread strides over its row, then the TPR partial sums are combined by a
// fixed tree in workgroup memory, so results are bit-reproducible.
//
// Column kernels (backward_partials, backward_finish): dγ and dβ are sums over
// rows. Pass 1 sums each chunk of RPC consecutive rows per column into
// `partials` [2, chunks, C]; pass 2 sums the chunks of each column in order.
// No atomics, fixed order: the same inputs give the same bits.

struct Params {
    rows: u32,       // number of rows (numel / C)
    c: u32,          // row length C
    eps: f32,        // forward: added to the variance; unused elsewhere
    flag: u32,       // backward_finish: 1 = add into dγ/dβ, 0 = overwrite
    chunks: u32,     // backward column passes: number of row chunks
    rpc: u32,        // backward column passes: rows per chunk
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 256;   // invocations per workgroup (≤ 256)
override TPR: u32 = 256;  // threads per row, a power of two dividing WG

@group(0) @binding(0) var<uniform> p: Params;

// forward: x, γ, β -> y, mean, rstd
@group(0) @binding(1) var<storage, read> f_x: array<f32>;
@group(0) @binding(2) var<storage, read> f_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> f_beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> f_y: array<f32>;
@group(0) @binding(5) var<storage, read_write> f_mean: array<f32>;
@group(0) @binding(6) var<storage, read_write> f_rstd: array<f32>;

// backward_dx: dy, x, γ, mean, rstd -> dx
@group(0) @binding(1) var<storage, read> b_dy: array<f32>;
@group(0) @binding(2) var<storage, read> b_x: array<f32>;
@group(0) @binding(3) var<storage, read> b_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> b_mean: array<f32>;
@group(0) @binding(5) var<storage, read> b_rstd: array<f32>;
@group(0) @binding(6) var<storage, read_write> b_dx: array<f32>;

// backward_partials: dy, x, mean, rstd -> partials [2, chunks, C]
// (binding 5; 1..4 as backward_dx minus γ, so declared separately)
@group(0) @binding(1) var<storage, read> q_dy: array<f32>;
@group(0) @binding(2) var<storage, read> q_x: array<f32>;
@group(0) @binding(3) var<storage, read> q_mean: array<f32>;
@group(0) @binding(4) var<storage, read> q_rstd: array<f32>;
@group(0) @binding(5) var<storage, read_write> q_partials: array<f32>;

// backward_finish: partials -> dγ, dβ
@group(0) @binding(1) var<storage, read> s_partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> s_dgamma: array<f32>;
@group(0) @binding(3) var<storage, read_write> s_dbeta: array<f32>;

var<workgroup> red_a: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;

fn linear_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// Tree-sums red_a over each aligned segment of TPR slots; the segment's sum
// ends up in its first slot. Must be called in uniform control flow.
fn reduce_a(lid: u32) {
    let lane = lid % TPR;
    for (var s = TPR / 2u; s > 0u; s = s / 2u) {
        if (lane < s) { red_a[lid] = red_a[lid] + red_a[lid + s]; }
        workgroupBarrier();
    }
}

// As reduce_a, over red_a and red_b together.
fn reduce_ab(lid: u32) {
    let lane = lid % TPR;
    for (var s = TPR / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            red_a[lid] = red_a[lid] + red_a[lid + s];
            red_b[lid] = red_b[lid] + red_b[lid + s];
        }
        workgroupBarrier();
    }
}

// y = (x − mean)·rstd·γ + β, with mean and rstd = 1/sqrt(var + eps) saved.
// Corrected two-pass algorithm: pass 1 gives a rough mean m0; pass 2 sums
// d = x − m0 and d², then mean = m0 + Σd/C and var = (Σd² − (Σd)²/C)/C.
// The correction removes the rounding error of the f32 sum in pass 1, so
// rows far from zero (or constant rows, var = 0) stay accurate.
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wg, nwg) * (WG / TPR) + lid / TPR;
    let lane = lid % TPR;
    let live = row < p.rows;
    let c = p.c;
    let base = row * c;
    let head = lid - lane; // slot holding this row's reduced value

    var s = 0.0;
    if (live) {
        for (var j = lane; j < c; j = j + TPR) { s = s + f_x[base + j]; }
    }
    red_a[lid] = s;
    workgroupBarrier();
    reduce_a(lid);
    let m0 = red_a[head] / f32(c);
    workgroupBarrier(); // everyone has read m0 before red_a is reused

    var sd = 0.0;
    var sd2 = 0.0;
    if (live) {
        for (var j = lane; j < c; j = j + TPR) {
            let d = f_x[base + j] - m0;
            sd = sd + d;
            sd2 = sd2 + d * d;
        }
    }
    red_a[lid] = sd;
    red_b[lid] = sd2;
    workgroupBarrier();
    reduce_ab(lid);
    let sum_d = red_a[head];
    let mean = m0 + sum_d / f32(c);
    let var_ = max((red_b[head] - sum_d * sum_d / f32(c)) / f32(c), 0.0);
    let rstd = 1.0 / sqrt(var_ + p.eps);

    if (live) {
        for (var j = lane; j < c; j = j + TPR) {
            f_y[base + j] = (f_x[base + j] - mean) * rstd * f_gamma[j] + f_beta[j];
        }
        if (lane == 0u) {
            f_mean[row] = mean;
            f_rstd[row] = rstd;
        }
    }
}

// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·γ, x̂ = (x − mean)·rstd.
@compute @workgroup_size(WG)
fn backward_dx(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = linear_group(wg, nwg) * (WG / TPR) + lid / TPR;
    let lane = lid % TPR;
    let live = row < p.rows;
    let c = p.c;
    let base = row * c;
    let head = lid - lane;

    var mean = 0.0;
    var rstd = 0.0;
    var sg = 0.0;
    var sgx = 0.0;
    if (live) {
        mean = b_mean[row];
        rstd = b_rstd[row];
        for (var j = lane; j < c; j = j + TPR) {
            let g = b_dy[base + j] * b_gamma[j];
            let xh = (b_x[base + j] - mean) * rstd;
            sg = sg + g;
            sgx = sgx + g * xh;
        }
    }
    red_a[lid] = sg;
    red_b[lid] = sgx;
    workgroupBarrier();
    reduce_ab(lid);
    let mg = red_a[head] / f32(c);
    let mgx = red_b[head] / f32(c);

    if (live) {
        for (var j = lane; j < c; j = j + TPR) {
            let g = b_dy[base + j] * b_gamma[j];
            let xh = (b_x[base + j] - mean) * rstd;
            b_dx[base + j] = rstd * (g - mg - xh * mgx);
        }
    }
}

// One thread per (chunk, column): partials[0, chunk, col] = Σ dy·x̂ and
// partials[1, chunk, col] = Σ dy over the chunk's rows, in row order.
@compute @workgroup_size(WG)
fn backward_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wg, nwg) * WG + lid;
    let c = p.c;
    if (i >= p.chunks * c) { return; }
    let chunk = i / c;
    let col = i % c;
    let r0 = chunk * p.rpc;
    let r1 = min(r0 + p.rpc, p.rows);
    var dg = 0.0;
    var db = 0.0;
    for (var r = r0; r < r1; r = r + 1u) {
        let dy = q_dy[r * c + col];
        dg = dg + dy * (q_x[r * c + col] - q_mean[r]) * q_rstd[r];
        db = db + dy;
    }
    q_partials[i] = dg;
    q_partials[p.chunks * c + i] = db;
}

// One thread per column: dγ, dβ = Σ over chunks in order (+ old value when
// accumulating).
@compute @workgroup_size(WG)
fn backward_finish(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let col = linear_group(wg, nwg) * WG + lid;
    let c = p.c;
    if (col >= c) { return; }
    var dg = 0.0;
    var db = 0.0;
    for (var k = 0u; k < p.chunks; k = k + 1u) {
        dg = dg + s_partials[k * c + col];
        db = db + s_partials[(p.chunks + k) * c + col];
    }
    if (p.flag == 1u) {
        dg = s_dgamma[col] + dg;
        db = s_dbeta[col] + db;
    }
    s_dgamma[col] = dg;
    s_dbeta[col] = db;
}
