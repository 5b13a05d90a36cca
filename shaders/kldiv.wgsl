// Distillation loss: τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) per row, averaged
// over rows (PyTorch: kl_div(log_softmax(s/τ), softmax(t/τ),
// reduction="batchmean")·τ² for [rows, V] logits), in two passes that
// reduce in a fixed order:
//   rows*   one workgroup per row: log-sum-exps of s/τ and t/τ, then
//           KL_r = Σ_j p_t(j)·(log p_t(j) − log p_s(j)); losses[r] = τ²·KL_r.
//           The *_grad entries also write, with g = seed·τ/rows,
//             ds_j = g·(p_s(j) − p_t(j))
//             dt_j = g·p_t(j)·(log p_t(j) − log p_s(j) − KL_r)
//   mean    one workgroup: loss = Σ_r losses[r] / rows
// Log-probabilities are formed as (z − max) − log Σ (never as the log of a
// probability, nor as z − lse, which loses digits when |z| is large), so
// an underflowing p_t contributes an exact 0·(finite) = 0, never NaN.
// Written over an element type (s, t, gradients); losses and loss are f32.

alias elem = f32;

struct Params {
    rows: u32,
    v: u32,
    inv_tau: f32,
    tau2: f32,     // τ²
    g: f32,        // gradient scale seed·τ/rows
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> s: array<elem>;
@group(0) @binding(2) var<storage, read> t: array<elem>;
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;
// rows_grad_s: ds; rows_grad_t: dt; rows_grad_st: ds, dt.
@group(0) @binding(4) var<storage, read_write> d4: array<elem>;
@group(0) @binding(5) var<storage, read_write> d5: array<elem>;
// mean
@group(0) @binding(1) var<storage, read> losses_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;

var<workgroup> red: array<vec2<f32>, WG>;

fn reduce_max2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    red[lid] = v;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k = k / 2u) {
        if (lid < k) { red[lid] = max(red[lid], red[lid + k]); }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    red[lid] = v;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k = k / 2u) {
        if (lid < k) { red[lid] = red[lid] + red[lid + k]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn row_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

struct RowStats {
    m: vec2<f32>,     // max of s/τ, t/τ
    ls: vec2<f32>,    // log Σ exp(z − max)
    kl: f32,
}

// log p_s(j) and log p_t(j) of element j of the row at `base`.
fn log_probs(st: RowStats, base: u32, j: u32) -> vec2<f32> {
    let z = vec2<f32>(f32(s[base + j]), f32(t[base + j])) * p.inv_tau;
    return (z - st.m) - st.ls;
}

// The row's statistics and KL_r; writes losses[row].
fn row_stats(row: u32, lid: u32) -> RowStats {
    let base = row * p.v;
    var st: RowStats;
    // −f32::MAX written exactly (browsers reject an infinite constant).
    var m = vec2<f32>(-0x1.fffffep+127f, -0x1.fffffep+127f);
    for (var j = lid; j < p.v; j = j + WG) {
        m = max(m, vec2<f32>(f32(s[base + j]), f32(t[base + j])) * p.inv_tau);
    }
    st.m = reduce_max2(lid, m);
    var e = vec2<f32>(0.0, 0.0);
    for (var j = lid; j < p.v; j = j + WG) {
        let z = vec2<f32>(f32(s[base + j]), f32(t[base + j])) * p.inv_tau;
        e = e + exp(z - st.m);
    }
    st.ls = log(reduce_sum2(lid, e));
    var kl = 0.0;
    for (var j = lid; j < p.v; j = j + WG) {
        let lp = log_probs(st, base, j);
        kl = kl + exp(lp.y) * (lp.y - lp.x);
    }
    st.kl = reduce_sum2(lid, vec2<f32>(kl, 0.0)).x;
    if (lid == 0u) { losses[row] = p.tau2 * st.kl; }
    return st;
}

@compute @workgroup_size(WG)
fn rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = row_index(wg, nwg);
    if (row >= p.rows) { return; }
    _ = row_stats(row, lid);
}

@compute @workgroup_size(WG)
fn rows_grad_s(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = row_index(wg, nwg);
    if (row >= p.rows) { return; }
    let st = row_stats(row, lid);
    let base = row * p.v;
    for (var j = lid; j < p.v; j = j + WG) {
        let lp = log_probs(st, base, j);
        let lps = lp.x;
        let lpt = lp.y;
        d4[base + j] = elem(p.g * (exp(lps) - exp(lpt)));
    }
}

@compute @workgroup_size(WG)
fn rows_grad_t(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = row_index(wg, nwg);
    if (row >= p.rows) { return; }
    let st = row_stats(row, lid);
    let base = row * p.v;
    for (var j = lid; j < p.v; j = j + WG) {
        let lp = log_probs(st, base, j);
        let lps = lp.x;
        let lpt = lp.y;
        d4[base + j] = elem(p.g * exp(lpt) * (lpt - lps - st.kl));
    }
}

@compute @workgroup_size(WG)
fn rows_grad_st(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let row = row_index(wg, nwg);
    if (row >= p.rows) { return; }
    let st = row_stats(row, lid);
    let base = row * p.v;
    for (var j = lid; j < p.v; j = j + WG) {
        let lp = log_probs(st, base, j);
        let lps = lp.x;
        let lpt = lp.y;
        let pt = exp(lpt);
        d4[base + j] = elem(p.g * (exp(lps) - pt));
        d5[base + j] = elem(p.g * pt * (lpt - lps - st.kl));
    }
}

@compute @workgroup_size(WG)
fn mean(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var r = lid; r < p.rows; r = r + WG) { acc = acc + losses_in[r]; }
    let total = reduce_sum2(lid, vec2<f32>(acc, 0.0)).x;
    if (lid == 0u) { loss[0] = total / f32(p.rows); }
}
