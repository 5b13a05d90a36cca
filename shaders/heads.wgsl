// Moving attention heads between the token-major layout that linear layers
// use, [B, T, S] (a row of S values per token, of which one part of H·D
// columns starting at column `col` is one of q, k, v or the output), and the
// head-major layout batched matmuls want, [B, H, T, D].
//
//   to_heads:   dst[b, h, t, i]            = src[b, t, col + h·D + i]
//   from_heads: dst[b, t, col + h·D + i]   = src[b, h, t, i]
//
// from_heads writes only its own H·D columns of each row, so three calls fill
// the q, k and v thirds of a [B, T, 3C] gradient.

struct Params {
    b: u32,
    t: u32,
    h: u32,
    d: u32,
    s: u32,    // row stride of the token-major tensor
    col: u32,  // first column of the part being moved
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG + lid;
}

// One thread per element of the head-major tensor; e = ((b·H + h)·T + t)·D + i.
fn token_major(e: u32) -> u32 {
    let i = e % p.d;
    let t = (e / p.d) % p.t;
    let h = (e / (p.d * p.t)) % p.h;
    let b = e / (p.d * p.t * p.h);
    return (b * p.t + t) * p.s + p.col + h * p.d + i;
}

@compute @workgroup_size(WG)
fn to_heads(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let e = index(wg, nwg, lid);
    if (e < p.b * p.h * p.t * p.d) { dst[e] = src[token_major(e)]; }
}

@compute @workgroup_size(WG)
fn from_heads(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let e = index(wg, nwg, lid);
    if (e < p.b * p.h * p.t * p.d) { dst[token_major(e)] = src[e]; }
}
