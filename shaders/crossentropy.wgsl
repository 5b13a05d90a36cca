// Fused softmax + cross-entropy over a vocabulary, in three passes that all
// reduce in a fixed order (same inputs, same bits):
//   count_valid   one workgroup: count = number of rows whose target is valid
//   rows / rows_grad   one workgroup per row: max, Σ exp (stable), the row's
//                 loss logsumexp − logit[target], and (rows_grad) dlogits
//   mean          one workgroup: mean_loss = Σ_r loss_r / count (0 if count = 0)
// A target is valid when it is not ignore_index and lies in [0, V). Targets
// outside [0, V) that are not ignore_index are treated exactly like ignored
// rows (not counted, loss 0, gradient 0) so nothing is read out of bounds;
// the host cannot check them without a readback.
//
// Layout: logits [rows, V] f32 row-major, targets [rows] i32, losses [rows]
// f32, count [1] u32 (scratch), mean_loss [1] f32, dlogits [rows, V] f32.
// WG must be a power of two (tree reductions).

struct Params {
    rows: u32,
    v: u32,              // vocabulary size V
    ignore_index: i32,
    grad_scale: f32,     // dlogits multiplier (e.g. 1 / accumulation steps)
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
// count_valid: binding 2 is written; everyone else reads it.
@group(0) @binding(2) var<storage, read_write> count_out: array<u32>;
@group(0) @binding(2) var<storage, read> count_in: array<u32>;
// rows / rows_grad
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read_write> losses: array<f32>;
@group(0) @binding(5) var<storage, read_write> dlogits: array<f32>;
// mean: binding 1 holds the per-row losses, binding 3 the result.
@group(0) @binding(1) var<storage, read> losses_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> mean_out: array<f32>;

var<workgroup> red: array<f32, WG>;
var<workgroup> red_u: array<u32, WG>;

fn is_valid(t: i32) -> bool {
    return t != p.ignore_index && t >= 0 && u32(t) < p.v;
}

// Tree reductions over red[0..WG); every invocation must call them. The
// result is read by all invocations, then a barrier makes `red` reusable.
fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn count_valid(@builtin(local_invocation_index) lid: u32) {
    var c = 0u;
    for (var r = lid; r < p.rows; r = r + WG) {
        if (is_valid(targets[r])) { c = c + 1u; }
    }
    red_u[lid] = c;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red_u[lid] = red_u[lid] + red_u[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u) { count_out[0] = red_u[0]; }
}

// (max, Σ exp(l − max)) of one row; each invocation strides over V, then a
// tree combines the partials.
fn row_stats(base: u32, lid: u32) -> vec2<f32> {
    // −f32::MAX written exactly: the decimal −3.4028235e38 lies just past it,
    // which naga rounds but browsers' WGSL compilers (Tint) reject.
    var m = -0x1.fffffep+127f;
    for (var j = lid; j < p.v; j = j + WG) { m = max(m, logits[base + j]); }
    m = reduce_max(lid, m);
    var s = 0.0;
    for (var j = lid; j < p.v; j = j + WG) { s = s + exp(logits[base + j] - m); }
    s = reduce_sum(lid, s);
    return vec2<f32>(m, s);
}

fn row_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// Writes losses[row]; returns (max, Σ exp) for the gradient.
fn row_loss(row: u32, lid: u32) -> vec2<f32> {
    let base = row * p.v;
    let ms = row_stats(base, lid);
    if (lid == 0u) {
        let t = targets[row];
        var loss = 0.0;
        if (is_valid(t)) { loss = ms.x + log(ms.y) - logits[base + u32(t)]; }
        losses[row] = loss;
    }
    return ms;
}

@compute @workgroup_size(WG)
fn rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = row_index(wg, nwg);
    if (row >= p.rows) { return; }
    _ = row_loss(row, lid);
}

// dlogits[row, j] = grad_scale · (softmax_j − [j = target]) / count for a
// valid target, 0 otherwise.
@compute @workgroup_size(WG)
fn rows_grad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let row = row_index(wg, nwg);
    if (row >= p.rows) { return; }
    let ms = row_loss(row, lid);
    let base = row * p.v;
    let t = targets[row];
    let count = count_in[0];
    var scale = 0.0;
    if (is_valid(t) && count > 0u) { scale = p.grad_scale / f32(count); }
    if (scale == 0.0) {
        // Ignored row (or grad_scale = 0): exact zeros, even for NaN logits.
        for (var j = lid; j < p.v; j = j + WG) { dlogits[base + j] = 0.0; }
        return;
    }
    let inv_sum = 1.0 / ms.y;
    for (var j = lid; j < p.v; j = j + WG) {
        let onehot = select(0.0, 1.0, i32(j) == t);
        dlogits[base + j] = scale * (exp(logits[base + j] - ms.x) * inv_sum - onehot);
    }
}

@compute @workgroup_size(WG)
fn mean(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var r = lid; r < p.rows; r = r + WG) { s = s + losses_in[r]; }
    s = reduce_sum(lid, s);
    if (lid == 0u) {
        let c = count_in[0];
        mean_out[0] = select(0.0, s / f32(c), c > 0u);
    }
}
