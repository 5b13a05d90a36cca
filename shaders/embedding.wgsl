// Token + position embedding, forward and a deterministic backward.
//
// Layout: tokens [B, T] i32 (N = B·T positions, position i = b·T + t),
// wte [V, C], wpe [maxT, C], out / dout [B, T, C], all f32 row-major.
// A token outside [0, V) is out of range: the forward writes wpe[t] alone
// for that row and the backward skips it; nothing is read out of bounds.
//
// Backward: d(wte) is the sort-based scatter-add of scatter.wgsl (sort the
// (token, position) pairs once, sum each token's rows in position order);
// this file adds the position table's part:
//   dwpe   one thread per (t, c): dwpe[t, c] += Σ_b dout[b, t, c], b in order.

struct Params {
    n: u32,     // N = B·T positions
    t: u32,     // T
    c: u32,     // C
    v: u32,     // V
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;

// forward
@group(0) @binding(1) var<storage, read> tokens: array<i32>;
@group(0) @binding(2) var<storage, read> wte: array<f32>;
@group(0) @binding(3) var<storage, read> wpe: array<f32>;
@group(0) @binding(4) var<storage, read_write> emb_out: array<f32>;
// dwpe
@group(0) @binding(1) var<storage, read> dout_p: array<f32>;
@group(0) @binding(2) var<storage, read_write> dwpe: array<f32>;

fn in_vocab(tok: i32) -> bool {
    return tok >= 0 && u32(tok) < p.v;
}

fn wg_index(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// out[i, c] = wte[tokens[i], c] + wpe[i mod T, c]; one thread per element.
@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let e = wg_index(wg, nwg) * WG + lid;
    if (e >= p.n * p.c) { return; }
    let row = e / p.c;
    let col = e % p.c;
    let tok = tokens[row];
    var w = 0.0;
    if (in_vocab(tok)) { w = wte[u32(tok) * p.c + col]; }
    emb_out[e] = w + wpe[(row % p.t) * p.c + col];
}

// dwpe[t, c] += Σ_b dout[b, t, c], b = 0, 1, …; one thread per (t, c).
@compute @workgroup_size(WG)
fn dwpe_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let e = wg_index(wg, nwg) * WG + lid;
    let tc = p.t * p.c;
    if (e >= tc) { return; }
    let batches = p.n / p.t;
    var acc = 0.0;
    for (var b = 0u; b < batches; b = b + 1u) {
        acc = acc + dout_p[b * tc + e];
    }
    dwpe[e] = dwpe[e] + acc;
}
