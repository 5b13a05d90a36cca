// Mean squared error loss = Σ (a − b)² / n over all elements, in two
// passes that reduce in a fixed order (same inputs, same bits):
//   partials*   G workgroups (grid-stride loops), each writes the sum of its
//               elements' squared differences to partials[group]; the
//               *_grad entries also write the gradients, elementwise:
//               g1 = k1·(a − b) (and g2 = k2·(a − b)), with k = ±2·seed/n
//   final       one workgroup: loss = Σ partials / n
// Written over an element type (a, b, gradients); partials and the loss are f32.

alias elem = f32;

struct Params {
    n: u32,
    groups: u32,
    k1: f32,
    k2: f32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;
@group(0) @binding(4) var<storage, read_write> g1: array<elem>;
@group(0) @binding(5) var<storage, read_write> g2: array<elem>;
// final
@group(0) @binding(1) var<storage, read> partials_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;

var<workgroup> red: array<f32, WG>;

fn tree_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
        workgroupBarrier();
    }
    return red[0];
}

fn group_of(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

@compute @workgroup_size(WG)
fn partials_only(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let g = group_of(wg, nwg);
    var s = 0.0;
    for (var i = g * WG + lid; i < p.n; i = i + p.groups * WG) {
        let d = f32(a[i]) - f32(b[i]);
        s = s + d * d;
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) { partials[g] = total; }
}

@compute @workgroup_size(WG)
fn partials_grad1(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let g = group_of(wg, nwg);
    var s = 0.0;
    for (var i = g * WG + lid; i < p.n; i = i + p.groups * WG) {
        let d = f32(a[i]) - f32(b[i]);
        s = s + d * d;
        g1[i] = elem(p.k1 * d);
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) { partials[g] = total; }
}

@compute @workgroup_size(WG)
fn partials_grad2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let g = group_of(wg, nwg);
    var s = 0.0;
    for (var i = g * WG + lid; i < p.n; i = i + p.groups * WG) {
        let d = f32(a[i]) - f32(b[i]);
        s = s + d * d;
        g1[i] = elem(p.k1 * d);
        g2[i] = elem(p.k2 * d);
    }
    let total = tree_sum(lid, s);
    if (lid == 0u) { partials[g] = total; }
}

@compute @workgroup_size(WG)
fn final_mean(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < p.groups; i = i + WG) { s = s + partials_in[i]; }
    let total = tree_sum(lid, s);
    if (lid == 0u) { loss[0] = total / f32(p.n); }
}
