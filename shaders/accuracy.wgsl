// Classification accuracy: the fraction of rows whose largest logit is at
// the target class, over rows whose target is valid (not ignore_index, in
// [0, V)). Two passes, fixed order, no atomics:
//   rows   one workgroup per row: argmax (ties go to the lowest index);
//          hits[row] = 1 if it equals the target, 0 if not, 2 if ignored
//   mean   one workgroup: acc = Σ hits / Σ valid (0 when no row is valid)
// Layout: logits [rows, V] (elem), targets [rows] i32, hits [rows] u32, acc [1] f32.

alias elem = f32;

struct Params {
    rows: u32,
    v: u32,
    ignore_index: i32,
    _pad: u32,
}

override WG: u32 = 64;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
// rows
@group(0) @binding(2) var<storage, read> logits: array<elem>;
@group(0) @binding(3) var<storage, read_write> hits: array<u32>;
// mean
@group(0) @binding(2) var<storage, read> hits_in: array<u32>;
@group(0) @binding(3) var<storage, read_write> acc: array<f32>;

var<workgroup> best: array<f32, WG>;
var<workgroup> at: array<u32, WG>;
var<workgroup> cnt: array<u32, WG>;
var<workgroup> ok: array<u32, WG>;

@compute @workgroup_size(WG)
fn rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wg.x + wg.y * nwg.x;
    if (row >= p.rows) { return; }
    let base = row * p.v;
    var m = -0x1.fffffep+127f;
    var k = 0xffffffffu;
    for (var j = lid; j < p.v; j = j + WG) {
        let x = f32(logits[base + j]);
        if (x > m || k == 0xffffffffu) { m = x; k = j; }
    }
    best[lid] = m;
    at[lid] = k;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            let bm = best[lid + s];
            let bk = at[lid + s];
            if (bk != 0xffffffffu && (bm > best[lid] || (bm == best[lid] && bk < at[lid]) || at[lid] == 0xffffffffu)) {
                best[lid] = bm;
                at[lid] = bk;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let t = targets[row];
        if (t == p.ignore_index || t < 0 || u32(t) >= p.v) {
            hits[row] = 2u;
        } else {
            hits[row] = select(0u, 1u, at[0] == u32(t));
        }
    }
}

@compute @workgroup_size(WG)
fn mean(@builtin(local_invocation_index) lid: u32) {
    var c = 0u;
    var h = 0u;
    for (var r = lid; r < p.rows; r = r + WG) {
        let x = hits_in[r];
        if (x != 2u) { c = c + 1u; h = h + x; }
    }
    cnt[lid] = c;
    ok[lid] = h;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            cnt[lid] = cnt[lid] + cnt[lid + s];
            ok[lid] = ok[lid] + ok[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        acc[0] = select(0.0, f32(ok[0]) / f32(cnt[0]), cnt[0] > 0u);
    }
}
