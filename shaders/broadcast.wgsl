// Broadcasting binary ops (numpy rules) and their reductions back to an
// operand's shape. Written over an element type (f32, or f16 storage with
// f32 arithmetic); stage-1 partial sums are always f32.
//
//   forward          out[i] = a[ia(i)] OP b[ib(i)], OP = + (OP = 0) or · (OP = 1)
//   reduce_*         out[t] (+)= Σ_k dy[o(t, k)] (· other[ob(t, k)] for *_mul)
//   reduce_final     out[t] (+)= Σ_c partials[t·chunks + c]
//
// Shapes arrive collapsed by the host (adjacent dimensions that broadcast
// alike are merged, size-1 dimensions dropped), at most 6 dimensions, as
// sizes and element strides (0 where an operand broadcasts).
//
// The reduction sums over the dimensions where the target operand has size
// 1: target element t (its kept coordinates) and reduced index k (the
// reduced coordinates) locate one element of dy. Each (target, chunk) unit
// is summed by TPR threads (lane l takes k = l, l + TPR, … of the chunk, in
// order), then a fixed tree; with more than one chunk, reduce_final adds
// the chunks' partials in order. No atomics: same inputs, same bits.

alias elem = f32;

struct Params {
    n: u32,          // output elements
    rank: u32,       // collapsed dimensions
    _pad0: u32,
    _pad1: u32,
    dims: array<vec4<u32>, 2>,  // output sizes, outermost first
    sa: array<vec4<u32>, 2>,    // strides of a (0: broadcast)
    sb: array<vec4<u32>, 2>,    // strides of b
}

struct RParams {
    n_target: u32,   // elements of the target (the reduced operand)
    n_reduce: u32,   // elements summed into each
    chunk: u32,      // reduced elements per stage-1 unit
    chunks: u32,     // units per target (partials per target)
    n_kept: u32,     // kept dimensions
    n_red: u32,      // reduced dimensions
    accumulate: u32, // 1: out += sum; 0: out = sum
    _pad: u32,
    kdims: array<vec4<u32>, 2>,  // kept sizes, outermost first
    ko: array<vec4<u32>, 2>,     // their strides in dy
    kb: array<vec4<u32>, 2>,     // their strides in other
    rdims: array<vec4<u32>, 2>,  // reduced sizes
    ro: array<vec4<u32>, 2>,
    rb: array<vec4<u32>, 2>,
}

override WG: u32 = 256;
override OP: u32 = 0u;   // forward: 0 = add, 1 = multiply
override TPR: u32 = 1u;  // reduce: threads per unit, a power of two dividing WG

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(0) var<uniform> rp: RParams;

// forward
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read_write> out: array<elem>;

// reduce_sum_*: dy, then the destination; reduce_mul_*: dy, other, destination.
@group(0) @binding(1) var<storage, read> dy: array<elem>;
@group(0) @binding(2) var<storage, read_write> out2: array<elem>;
@group(0) @binding(2) var<storage, read_write> part2: array<f32>;
@group(0) @binding(2) var<storage, read> other: array<elem>;
@group(0) @binding(3) var<storage, read_write> part3: array<f32>;
// reduce_final: partials, then the destination.
@group(0) @binding(1) var<storage, read> part_in: array<f32>;

var<workgroup> red: array<f32, WG>;

fn at(v: array<vec4<u32>, 2>, d: u32) -> u32 {
    return v[d >> 2u][d & 3u];
}

fn linear_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// ---------------------------------------------------------------- forward

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wg, nwg) * WG + lid;
    if (i >= p.n) { return; }
    var rem = i;
    var ia = 0u;
    var ib = 0u;
    for (var d = p.rank; d > 0u; d = d - 1u) {
        let size = at(p.dims, d - 1u);
        let c = rem % size;
        rem = rem / size;
        ia = ia + c * at(p.sa, d - 1u);
        ib = ib + c * at(p.sb, d - 1u);
    }
    let x = f32(a[ia]);
    let y = f32(b[ib]);
    var r: f32;
    if (OP == 0u) { r = x + y; } else { r = x * y; }
    out[i] = elem(r);
}

// ---------------------------------------------------------------- reduce

// Offsets in dy and other of target element t (its kept coordinates).
fn kept_base(t: u32) -> vec2<u32> {
    var rem = t;
    var o = 0u;
    var ob = 0u;
    for (var d = rp.n_kept; d > 0u; d = d - 1u) {
        let size = at(rp.kdims, d - 1u);
        let c = rem % size;
        rem = rem / size;
        o = o + c * at(rp.ko, d - 1u);
        ob = ob + c * at(rp.kb, d - 1u);
    }
    return vec2<u32>(o, ob);
}

// Offsets in dy and other of reduced index k.
fn reduced_offset(k: u32) -> vec2<u32> {
    var rem = k;
    var o = 0u;
    var ob = 0u;
    for (var d = rp.n_red; d > 0u; d = d - 1u) {
        let size = at(rp.rdims, d - 1u);
        let c = rem % size;
        rem = rem / size;
        o = o + c * at(rp.ro, d - 1u);
        ob = ob + c * at(rp.rb, d - 1u);
    }
    return vec2<u32>(o, ob);
}

struct Unit {
    t: u32,      // target element
    c: u32,      // chunk
    unit: u32,   // t·chunks + c
    live: bool,
}

fn unit_of(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Unit {
    let u = linear_group(wg, nwg) * (WG / TPR) + lid / TPR;
    var r: Unit;
    r.unit = u;
    r.t = u / rp.chunks;
    r.c = u % rp.chunks;
    r.live = r.t < rp.n_target;
    return r;
}

// Sums red over each unit's TPR lanes in a fixed tree; returns the unit's
// total (valid in every lane). Every invocation must call it.
fn unit_tree(lid: u32, v: f32) -> f32 {
    let lane = lid % TPR;
    red[lid] = v;
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s = s / 2u) {
        if (lane < s) { red[lid] = red[lid] + red[lid + s]; }
        workgroupBarrier();
    }
    return red[lid - lane];
}

// This lane's share of a unit: Σ dy over its k, in order.
fn lane_sum(u: Unit, lane: u32) -> f32 {
    var s = 0.0;
    if (!u.live) { return s; }
    let base = kept_base(u.t).x;
    let k0 = u.c * rp.chunk;
    let k1 = min(k0 + rp.chunk, rp.n_reduce);
    for (var k = k0 + lane; k < k1; k = k + TPR) {
        s = s + f32(dy[base + reduced_offset(k).x]);
    }
    return s;
}

// The same for Σ dy·other (a separate function: an entry point that binds
// no `other` must not reference it).
fn lane_dot(u: Unit, lane: u32) -> f32 {
    var s = 0.0;
    if (!u.live) { return s; }
    let base = kept_base(u.t);
    let k0 = u.c * rp.chunk;
    let k1 = min(k0 + rp.chunk, rp.n_reduce);
    for (var k = k0 + lane; k < k1; k = k + TPR) {
        let off = base + reduced_offset(k);
        s = s + f32(dy[off.x]) * f32(other[off.y]);
    }
    return s;
}

fn store_out2(t: u32, s: f32) {
    if (rp.accumulate != 0u) {
        out2[t] = elem(f32(out2[t]) + s);
    } else {
        out2[t] = elem(s);
    }
}

fn store_out3(t: u32, s: f32) {
    if (rp.accumulate != 0u) {
        out[t] = elem(f32(out[t]) + s);
    } else {
        out[t] = elem(s);
    }
}

// One chunk: straight into the output.
@compute @workgroup_size(WG)
fn reduce_sum_out(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let u = unit_of(wg, nwg, lid);
    let s = unit_tree(lid, lane_sum(u, lid % TPR));
    if (u.live && lid % TPR == 0u) { store_out2(u.t, s); }
}

@compute @workgroup_size(WG)
fn reduce_sum_part(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let u = unit_of(wg, nwg, lid);
    let s = unit_tree(lid, lane_sum(u, lid % TPR));
    if (u.live && lid % TPR == 0u) { part2[u.unit] = s; }
}

@compute @workgroup_size(WG)
fn reduce_mul_out(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let u = unit_of(wg, nwg, lid);
    let s = unit_tree(lid, lane_dot(u, lid % TPR));
    if (u.live && lid % TPR == 0u) { store_out3(u.t, s); }
}

@compute @workgroup_size(WG)
fn reduce_mul_part(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let u = unit_of(wg, nwg, lid);
    let s = unit_tree(lid, lane_dot(u, lid % TPR));
    if (u.live && lid % TPR == 0u) { part3[u.unit] = s; }
}

// One thread per target element adds its chunks' partials in order.
@compute @workgroup_size(WG)
fn reduce_final(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let t = linear_group(wg, nwg) * WG + lid;
    if (t >= rp.n_target) { return; }
    var s = 0.0;
    for (var c = 0u; c < rp.chunks; c = c + 1u) {
        s = s + part_in[t * rp.chunks + c];
    }
    store_out2(t, s);
}
