// Fused multi-head attention, FlashAttention-style: forward and backward
// without ever materialising the T×T score matrix.
//
// Layouts (head-major, as heads::to_heads produces them): q, k, v, o, dO,
// dq, dk, dv are [B·H, T, D] f32; lse is [B·H, T]; the optional key-padding
// mask km is [B, T] u32/i32 (nonzero = attend, 0 = padded key), and head bh
// reads mask row bh / H. Scores are s = scale·q·k (scale = 1/√D), masked
// (causal: key c > query r; padding: km = 0; and past the end of T) entries
// take no part.
//
// A workgroup owns a tile of OWN rows (queries in `forward` and `bwd_dq`,
// keys in `bwd_dkdv`) and streams tiles of STR rows of the other operand
// through workgroup memory. Thread `lid` works for owned row lid / TPR and
// head-dim columns lane + k·TPR (k < NCOL, at most MAXC), so its output
// accumulator lives in registers. Every sum runs in a fixed order and no
// atomics are used: same inputs, same bits.
//
// forward:   online softmax per query row (running max m, running sum l,
//            accumulator rescaled by exp(m_old − m_new)); writes o and
//            lse = m + log l. A row that sees no key writes o = 0 and
//            lse = −inf.
// bwd_delta: stats[2i] = lse_i, stats[2i+1] = Δ_i = Σ_d dO_i·O_i (one
//            buffer, so the next passes stay within 8 storage bindings).
// bwd_dkdv:  per key tile, over the query tiles: P = exp(s − lse),
//            dV += Pᵀ·dO, dS = P ⊙ (dO·Vᵀ − Δ), dK += dSᵀ·Q; dK scaled at the end.
// bwd_dq:    per query tile, over the key tiles: dQ += dS·K, scaled at the end.
// Causal: tiles entirely above the diagonal are skipped.

struct Params {
    bh: u32,        // batch·heads
    t: u32,         // sequence length
    heads: u32,     // heads per batch row: mask row of head bh is bh / heads
    causal: u32,    // 1: query r sees keys c ≤ r
    has_mask: u32,  // 1: km holds the [B, T] key-padding mask
    tiles: u32,     // owned tiles per head: ceil(t / OWN)
    scale: f32,     // 1/√D
    _pad: u32,
}

override D: u32 = 64;     // head dim (1..=128)
override OWN: u32 = 16;   // rows of the owned tile; divides WG
override STR: u32 = 16;   // rows of a streamed tile
override WG: u32 = 128;   // invocations per workgroup
override TPR: u32 = 8;    // threads per owned row = WG / OWN
override NCOL: u32 = 8;   // head-dim columns per thread = ceil(D / TPR) ≤ MAXC
const MAXC: u32 = 8u;

// A masked score. Stored, compared, never computed with.
const NEG: f32 = -3.0e38;

@group(0) @binding(0) var<uniform> p: Params;

// forward, bwd_dkdv, bwd_dq
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> km: array<u32>;
// forward
@group(0) @binding(5) var<storage, read_write> f_o: array<f32>;
@group(0) @binding(6) var<storage, read_write> f_lse: array<f32>;
// bwd_delta
@group(0) @binding(1) var<storage, read> d_o: array<f32>;
@group(0) @binding(2) var<storage, read> d_do: array<f32>;
@group(0) @binding(3) var<storage, read> d_lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> d_stats: array<f32>;
// bwd_dkdv (binding 7 = dk, 8 = dv) and bwd_dq (binding 7 = dq)
@group(0) @binding(5) var<storage, read> b_do: array<f32>;
@group(0) @binding(6) var<storage, read> b_stats: array<f32>;
@group(0) @binding(7) var<storage, read_write> b_out0: array<f32>;
@group(0) @binding(8) var<storage, read_write> b_out1: array<f32>;

var<workgroup> w_own0: array<f32, OWN * D>;
var<workgroup> w_own1: array<f32, OWN * D>;
var<workgroup> w_str0: array<f32, STR * D>;
var<workgroup> w_str1: array<f32, STR * D>;
var<workgroup> w_s: array<f32, OWN * STR>;
var<workgroup> w_ds: array<f32, OWN * STR>;
var<workgroup> w_lse: array<f32, OWN>;   // bwd_dq: lse of the owned query rows
var<workgroup> w_dlt: array<f32, OWN>;   // bwd_dq: Δ of the owned query rows
var<workgroup> w_slse: array<f32, STR>;  // bwd_dkdv: lse of the streamed query rows
var<workgroup> w_sdlt: array<f32, STR>;  // bwd_dkdv: Δ of the streamed query rows

fn linear_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

// Whether query qi sees key kc of the head whose mask row starts at mrow.
fn visible(qi: u32, kc: u32, mrow: u32) -> bool {
    if (qi >= p.t || kc >= p.t) { return false; }
    if (p.causal != 0u && kc > qi) { return false; }
    if (p.has_mask != 0u && km[mrow + kc] == 0u) { return false; }
    return true;
}

// Key tiles a query tile starting at r0 must visit.
fn key_tiles(r0: u32) -> u32 {
    var end = p.t;
    if (p.causal != 0u) { end = min(r0 + OWN, p.t); }
    return (end + STR - 1u) / STR;
}

@compute @workgroup_size(WG)
fn forward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let gid = linear_group(wg, nwg);
    if (gid >= p.bh * p.tiles) { return; }
    let bh = gid / p.tiles;
    let r0 = (gid % p.tiles) * OWN;
    let t = p.t;
    let base = bh * t * D;
    let mrow = (bh / p.heads) * t;
    let row = lid / TPR;
    let lane = lid % TPR;

    for (var i = lid; i < OWN * D; i = i + WG) {
        var x = 0.0;
        if (r0 + i / D < t) { x = q[base + r0 * D + i]; }
        w_own0[i] = x;
    }

    var m = NEG;
    var l = 0.0;
    var acc: array<f32, MAXC>;
    let nk = key_tiles(r0);
    for (var j = 0u; j < nk; j = j + 1u) {
        let c0 = j * STR;
        workgroupBarrier();  // the previous tile is consumed
        for (var i = lid; i < STR * D; i = i + WG) {
            var kx = 0.0;
            var vx = 0.0;
            if (c0 + i / D < t) {
                kx = k[base + c0 * D + i];
                vx = v[base + c0 * D + i];
            }
            w_str0[i] = kx;
            w_str1[i] = vx;
        }
        workgroupBarrier();
        for (var e = lid; e < OWN * STR; e = e + WG) {
            let r = e / STR;
            let c = e % STR;
            var s = NEG;
            if (visible(r0 + r, c0 + c, mrow)) {
                var dot = 0.0;
                for (var d = 0u; d < D; d = d + 1u) {
                    dot = dot + w_own0[r * D + d] * w_str0[c * D + d];
                }
                s = p.scale * dot;
            }
            w_s[e] = s;
        }
        workgroupBarrier();
        // Online softmax for this thread's row; every thread of the row
        // computes the same m and l in the same order.
        var mt = m;
        for (var c = 0u; c < STR; c = c + 1u) { mt = max(mt, w_s[row * STR + c]); }
        let alpha = exp(m - mt);
        l = l * alpha;
        for (var kk = 0u; kk < NCOL; kk = kk + 1u) { acc[kk] = acc[kk] * alpha; }
        for (var c = 0u; c < STR; c = c + 1u) {
            let s = w_s[row * STR + c];
            if (s != NEG) {
                let pv = exp(s - mt);
                l = l + pv;
                for (var kk = 0u; kk < NCOL; kk = kk + 1u) {
                    let d = lane + kk * TPR;
                    if (d < D) { acc[kk] = acc[kk] + pv * w_str1[c * D + d]; }
                }
            }
        }
        m = mt;
    }

    let qi = r0 + row;
    if (qi < t) {
        let seen = l > 0.0;
        for (var kk = 0u; kk < NCOL; kk = kk + 1u) {
            let d = lane + kk * TPR;
            if (d < D) { f_o[base + qi * D + d] = select(0.0, acc[kk] / l, seen); }
        }
        if (lane == 0u) {
            // −∞ for a row that sees no key. Built from a runtime value:
            // browsers reject an infinite constant (e.g. bitcast<f32>(0xff800000u)).
            f_lse[bh * t + qi] = bitcast<f32>(select(0xff800000u, bitcast<u32>(m + log(l)), seen));
        }
    }
}

@compute @workgroup_size(WG)
fn bwd_delta(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_group(wg, nwg) * WG + lid;
    if (i >= p.bh * p.t) { return; }
    var s = 0.0;
    for (var d = 0u; d < D; d = d + 1u) { s = s + d_do[i * D + d] * d_o[i * D + d]; }
    d_stats[2u * i] = d_lse[i];
    d_stats[2u * i + 1u] = s;
}

@compute @workgroup_size(WG)
fn bwd_dkdv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let gid = linear_group(wg, nwg);
    if (gid >= p.bh * p.tiles) { return; }
    let bh = gid / p.tiles;
    let c0 = (gid % p.tiles) * OWN;  // first key of the owned tile
    let t = p.t;
    let base = bh * t * D;
    let mrow = (bh / p.heads) * t;
    let row = lid / TPR;
    let lane = lid % TPR;

    for (var i = lid; i < OWN * D; i = i + WG) {
        var kx = 0.0;
        var vx = 0.0;
        if (c0 + i / D < t) {
            kx = k[base + c0 * D + i];
            vx = v[base + c0 * D + i];
        }
        w_own0[i] = kx;
        w_own1[i] = vx;
    }

    var dk: array<f32, MAXC>;
    var dv: array<f32, MAXC>;
    var i0 = 0u;
    if (p.causal != 0u) { i0 = c0 / STR; }
    let ni = (t + STR - 1u) / STR;
    for (var j = i0; j < ni; j = j + 1u) {
        let r0 = j * STR;
        workgroupBarrier();
        for (var i = lid; i < STR * D; i = i + WG) {
            var qx = 0.0;
            var gx = 0.0;
            if (r0 + i / D < t) {
                qx = q[base + r0 * D + i];
                gx = b_do[base + r0 * D + i];
            }
            w_str0[i] = qx;
            w_str1[i] = gx;
        }
        for (var i = lid; i < STR; i = i + WG) {
            var ls = 0.0;
            var dl = 0.0;
            if (r0 + i < t) {
                ls = b_stats[2u * (bh * t + r0 + i)];
                dl = b_stats[2u * (bh * t + r0 + i) + 1u];
            }
            w_slse[i] = ls;
            w_sdlt[i] = dl;
        }
        workgroupBarrier();
        // Entry e: streamed query r, owned key c.
        for (var e = lid; e < OWN * STR; e = e + WG) {
            let r = e / OWN;
            let c = e % OWN;
            var pv = 0.0;
            var ds = 0.0;
            if (visible(r0 + r, c0 + c, mrow)) {
                var sdot = 0.0;
                var gdot = 0.0;
                for (var d = 0u; d < D; d = d + 1u) {
                    sdot = sdot + w_str0[r * D + d] * w_own0[c * D + d];
                    gdot = gdot + w_str1[r * D + d] * w_own1[c * D + d];
                }
                pv = exp(p.scale * sdot - w_slse[r]);
                ds = pv * (gdot - w_sdlt[r]);
            }
            w_s[e] = pv;
            w_ds[e] = ds;
        }
        workgroupBarrier();
        for (var r = 0u; r < STR; r = r + 1u) {
            let pv = w_s[r * OWN + row];
            let ds = w_ds[r * OWN + row];
            for (var kk = 0u; kk < NCOL; kk = kk + 1u) {
                let d = lane + kk * TPR;
                if (d < D) {
                    dv[kk] = dv[kk] + pv * w_str1[r * D + d];
                    dk[kk] = dk[kk] + ds * w_str0[r * D + d];
                }
            }
        }
    }

    let kc = c0 + row;
    if (kc < t) {
        for (var kk = 0u; kk < NCOL; kk = kk + 1u) {
            let d = lane + kk * TPR;
            if (d < D) {
                b_out0[base + kc * D + d] = p.scale * dk[kk];
                b_out1[base + kc * D + d] = dv[kk];
            }
        }
    }
}

@compute @workgroup_size(WG)
fn bwd_dq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let gid = linear_group(wg, nwg);
    if (gid >= p.bh * p.tiles) { return; }
    let bh = gid / p.tiles;
    let r0 = (gid % p.tiles) * OWN;
    let t = p.t;
    let base = bh * t * D;
    let mrow = (bh / p.heads) * t;
    let row = lid / TPR;
    let lane = lid % TPR;

    for (var i = lid; i < OWN * D; i = i + WG) {
        var qx = 0.0;
        var gx = 0.0;
        if (r0 + i / D < t) {
            qx = q[base + r0 * D + i];
            gx = b_do[base + r0 * D + i];
        }
        w_own0[i] = qx;
        w_own1[i] = gx;
    }
    for (var i = lid; i < OWN; i = i + WG) {
        var ls = 0.0;
        var dl = 0.0;
        if (r0 + i < t) {
            ls = b_stats[2u * (bh * t + r0 + i)];
            dl = b_stats[2u * (bh * t + r0 + i) + 1u];
        }
        w_lse[i] = ls;
        w_dlt[i] = dl;
    }

    var dq: array<f32, MAXC>;
    let nk = key_tiles(r0);
    for (var j = 0u; j < nk; j = j + 1u) {
        let c0 = j * STR;
        workgroupBarrier();
        for (var i = lid; i < STR * D; i = i + WG) {
            var kx = 0.0;
            var vx = 0.0;
            if (c0 + i / D < t) {
                kx = k[base + c0 * D + i];
                vx = v[base + c0 * D + i];
            }
            w_str0[i] = kx;
            w_str1[i] = vx;
        }
        workgroupBarrier();
        for (var e = lid; e < OWN * STR; e = e + WG) {
            let r = e / STR;
            let c = e % STR;
            var ds = 0.0;
            if (visible(r0 + r, c0 + c, mrow)) {
                var sdot = 0.0;
                var gdot = 0.0;
                for (var d = 0u; d < D; d = d + 1u) {
                    sdot = sdot + w_own0[r * D + d] * w_str0[c * D + d];
                    gdot = gdot + w_own1[r * D + d] * w_str1[c * D + d];
                }
                let pv = exp(p.scale * sdot - w_lse[r]);
                ds = pv * (gdot - w_dlt[r]);
            }
            w_ds[e] = ds;
        }
        workgroupBarrier();
        for (var c = 0u; c < STR; c = c + 1u) {
            let ds = w_ds[row * STR + c];
            for (var kk = 0u; kk < NCOL; kk = kk + 1u) {
                let d = lane + kk * TPR;
                if (d < D) { dq[kk] = dq[kk] + ds * w_str0[c * D + d]; }
            }
        }
    }

    let qi = r0 + row;
    if (qi < t) {
        for (var kk = 0u; kk < NCOL; kk = kk + 1u) {
            let d = lane + kk * TPR;
            if (d < D) { b_out0[base + qi * D + d] = p.scale * dq[kk]; }
        }
    }
}
