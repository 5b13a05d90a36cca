// Token + position embedding, forward and a deterministic backward.
//
// Layout: tokens [B, T] i32 (N = B·T positions, position i = b·T + t),
// wte [V, C], wpe [maxT, C], out / dout [B, T, C], all f32 row-major.
// A token outside [0, V) is out of range: the forward writes wpe[t] alone
// for that row and the backward skips it; nothing is read out of bounds.
//
// Backward without atomics, summing every token's rows in increasing
// position order (a stable counting sort built from integer work only):
//   rank   per position i: first (the first position holding the same token),
//          rank (how many earlier positions hold it) and count (how many hold
//          it). Each workgroup streams all tokens through a shared-memory
//          tile: N² integer compares, ~67M for GPT-2's N = 8192.
//   place  one workgroup: start[first] = exclusive prefix sum, over first
//          occurrences in position order, of their counts; then
//          perm[start[first_i] + rank_i] = i, so each token's positions lie
//          contiguous and in increasing order (every slot written once).
//   dwte   one workgroup per first occurrence (others exit): for each column,
//          sum dout over the token's positions in perm order, add to dwte.
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
// rank (tokens, info) and dwte (tokens, info, perm, dout, dwte). info is
// [4, N] u32: rows first, rank, count, start.
@group(0) @binding(2) var<storage, read_write> info: array<u32>;
@group(0) @binding(3) var<storage, read> perm: array<u32>;
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> dwte: array<f32>;
// place
@group(0) @binding(1) var<storage, read_write> info_p: array<u32>;
@group(0) @binding(2) var<storage, read_write> perm_p: array<u32>;
// dwpe
@group(0) @binding(1) var<storage, read> dout_p: array<f32>;
@group(0) @binding(2) var<storage, read_write> dwpe: array<f32>;

var<workgroup> tile: array<i32, WG>;
var<workgroup> scan: array<u32, WG>;

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

// info[i] = first, info[N + i] = rank, info[2N + i] = count, for each
// position i (first = i, rank = count = 0 for an out-of-range token).
@compute @workgroup_size(WG)
fn rank(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = wg_index(wg, nwg) * WG + lid;
    let n = p.n;
    var tok = -1;
    var ok = false;
    if (i < n) {
        tok = tokens[i];
        ok = in_vocab(tok);
    }
    var first_pos = i;
    var before = 0u;
    var count = 0u;
    for (var base = 0u; base < n; base = base + WG) {
        if (base + lid < n) { tile[lid] = tokens[base + lid]; }
        workgroupBarrier();
        if (ok) {
            let m = min(WG, n - base);
            for (var k = 0u; k < m; k = k + 1u) {
                if (tile[k] == tok) {
                    let j = base + k;
                    if (count == 0u) { first_pos = j; }
                    count = count + 1u;
                    if (j < i) { before = before + 1u; }
                }
            }
        }
        workgroupBarrier();
    }
    if (i < n) {
        info[i] = first_pos;
        info[n + i] = before;
        info[2u * n + i] = count;
    }
}

// One workgroup. start (info row 3) for first occurrences, then perm.
@compute @workgroup_size(WG)
fn place(@builtin(local_invocation_index) lid: u32) {
    let n = p.n;
    var carry = 0u;
    for (var base = 0u; base < n; base = base + WG) {
        let i = base + lid;
        var own = 0u;
        if (i < n && info_p[i] == i) { own = info_p[2u * n + i]; }
        scan[lid] = own;
        workgroupBarrier();
        // Inclusive Hillis–Steele scan of the counts (integers: exact).
        for (var off = 1u; off < WG; off = off * 2u) {
            var add = 0u;
            if (lid >= off) { add = scan[lid - off]; }
            workgroupBarrier();
            scan[lid] = scan[lid] + add;
            workgroupBarrier();
        }
        if (i < n) { info_p[3u * n + i] = carry + scan[lid] - own; }
        carry = carry + scan[WG - 1u];
        workgroupBarrier();
    }
    // Make every start[] written above visible to the whole workgroup.
    storageBarrier();
    for (var i = lid; i < n; i = i + WG) {
        if (info_p[2u * n + i] > 0u) {
            let first_pos = info_p[i];
            perm_p[info_p[3u * n + first_pos] + info_p[n + i]] = i;
        }
    }
}

// dwte[tok, :] += Σ dout[j, :] over the token's positions j, in increasing j.
@compute @workgroup_size(WG)
fn dwte_sum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let n = p.n;
    let i = wg_index(wg, nwg);
    if (i >= n) { return; }
    let count = info[2u * n + i];
    if (count == 0u || info[i] != i) { return; }
    let start = info[3u * n + i];
    let row = u32(tokens[i]) * p.c;
    for (var col = lid; col < p.c; col = col + WG) {
        var acc = 0.0;
        for (var s = 0u; s < count; s = s + 1u) {
            acc = acc + dout[perm[start + s] * p.c + col];
        }
        dwte[row + col] = dwte[row + col] + acc;
    }
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
