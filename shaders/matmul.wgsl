// Batched matrix multiply with optional transposes, bias and accumulation:
//
//   C[b] = alpha * op(A[b]) * op(B[b]) + bias + beta * C[b]     for b < batch
//
// op(A) is M x K: A is stored row-major as [M, K], or as [K, M] when TRANS_A.
// op(B) is K x N: B is stored row-major as [K, N], or as [N, K] when TRANS_B.
// C is [M, N] row-major; bias (optional) is [N], added to every row. Batch
// item b of X starts at element b * stride_x (stride 0 broadcasts one matrix).
// When beta == 0, C is only written, never read (stale NaN cannot leak in).
//
// Products accumulate in f32 in increasing k order, one thread per output
// element, so results are bit-for-bit reproducible for a given entry point and
// set of override constants (there is no split-K and no atomics).
//
// Grid: x = tiles along N, y = tiles along M (times `fold`), z = batch. When
// batch exceeds the per-dimension workgroup limit the wrapper folds it into y:
// batch item = wg.z + (wg.y / tiles_m) * num_workgroups.z.
//
// Entry points:
//   naive              one thread per output, 16x16 threads, reads straight from global memory.
//   tiled_{s,v}{s,v}   BM x BN output tile per workgroup, K walked in BK steps through
//                      workgroup memory; each thread owns a TM x TN register tile. For GPUs.
//   direct_{s,v}{s,v}  8 x 8 threads, each with a DM x DN register tile fed straight from
//                      global memory four steps of K at a time; no workgroup memory. For CPU
//                      adapters (lavapipe), where caches give the reuse and every memory
//                      access is a per-lane loop, so a workgroup-memory round trip only costs.
//   In both, the first letter says how A is loaded from global memory (s = scalar, v = vec4),
//   the second letter B. vec4 needs the operand's contiguous dimension and batch stride to be
//   multiples of 4 (the wrapper decides); scalar loads are correct for every shape.
//
// Register tiles are unrolled by hand: rows and column groups are written out, and the
// blocks beyond TM/TN (DM/DN) are guarded by conditions on override constants, which the
// compiler removes as dead code. Loops over them would be indexed dynamically: naga adds a
// guard counter to every WGSL loop (against infinite loops), which keeps drivers such as
// lavapipe from unrolling them, and the register arrays would then live in memory.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    tiles_m: u32,   // workgroups along y per batch fold (= ceil(M / tile rows))
    alpha: f32,
    beta: f32,
    has_bias: u32,  // 0: binding 3 is a placeholder and is not read
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// A, B: each entry point uses either the scalar or the vec4 view of a binding.
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

override TRANS_A: bool = false;
override TRANS_B: bool = false;

// Which batch item and output tile a workgroup computes.
struct Tile {
    item: u32,
    row0: u32,
    col0: u32,
}

fn tile_of(wg: vec3<u32>, nwg: vec3<u32>, rows: u32, cols: u32) -> Tile {
    let fold = wg.y / p.tiles_m;
    return Tile(wg.z + fold * nwg.z, (wg.y % p.tiles_m) * rows, wg.x * cols);
}

// Writes one output element: alpha * acc + bias[col] + beta * C (C read only if beta != 0).
fn write_out(item: u32, row: u32, col: u32, acc: f32) {
    let i = item * p.stride_c + row * p.n + col;
    var v = p.alpha * acc;
    if (p.has_bias != 0u) {
        v += bias[col];
    }
    if (p.beta != 0.0) {
        v += p.beta * c[i];
    }
    c[i] = v;
}

// ---------------------------------------------------------------- naive

override NX: u32 = 16;
override NY: u32 = 16;

@compute @workgroup_size(NX, NY)
fn naive(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = tile_of(wg, nwg, NY, NX);
    let row = t.row0 + lid.y;
    let col = t.col0 + lid.x;
    if (t.item >= p.batch || row >= p.m || col >= p.n) {
        return;
    }
    let base_a = t.item * p.stride_a;
    let base_b = t.item * p.stride_b;
    var acc = 0.0;
    for (var kk = 0u; kk < p.k; kk++) {
        var ia = base_a + row * p.k + kk;
        if (TRANS_A) {
            ia = base_a + kk * p.m + row;
        }
        var ib = base_b + kk * p.n + col;
        if (TRANS_B) {
            ib = base_b + col * p.k + kk;
        }
        acc = fma(a[ia], b[ib], acc);
    }
    write_out(t.item, row, col, acc);
}

// ---------------------------------------------------------------- tiled

override BM: u32 = 64;  // output rows per workgroup (multiple of TM)
override BN: u32 = 64;  // output columns per workgroup (multiple of TN)
override BK: u32 = 16;  // K step (multiple of 4)
override TM: u32 = 4;   // rows per thread: 4 or 8
override TN: u32 = 4;   // columns per thread: 4 or 8
override TX: u32 = BN / TN;  // threads along N
override THREADS: u32 = (BM / TM) * TX;

// Tiles in workgroup memory, K-major and packed as vec4 along M (resp. N):
// As[kk * BM/4 + m/4][m % 4] = A(row0 + m, k0 + kk), likewise Bs with n.
var<workgroup> As: array<vec4<f32>, BK * BM / 4u>;
var<workgroup> Bs: array<vec4<f32>, BK * BN / 4u>;

// Register tile: thread (tx, ty) owns rows ty*TM + i and, for column group j,
// columns 4 * (tx + j * TX) .. +3 (strided, so a warp's reads of Bs and writes
// of C are contiguous). Row i, group j is at [i * 2 + j].
alias Acc = array<vec4<f32>, 16>;

// Loads A(row0 .. row0+BM, k0 .. k0+BK) into As, zero outside the matrix.
// Consecutive threads read consecutive addresses of A in both layouts.
fn load_a_s(base: u32, row0: u32, k0: u32, lid: u32) {
    let total = BM * BK;
    for (var idx = lid; idx < total; idx += THREADS) {
        var mm: u32;
        var kk: u32;
        if (TRANS_A) { kk = idx / BM; mm = idx % BM; } else { mm = idx / BK; kk = idx % BK; }
        let gm = row0 + mm;
        let gk = k0 + kk;
        var v = 0.0;
        if (gm < p.m && gk < p.k) {
            if (TRANS_A) { v = a[base + gk * p.m + gm]; } else { v = a[base + gm * p.k + gk]; }
        }
        As[kk * (BM / 4u) + mm / 4u][mm % 4u] = v;
    }
}

// As load_a_s with 16-byte loads. TRANS_A: vec4 along M (needs M % 4 == 0);
// else along K (needs K % 4 == 0), spread over four K rows of As.
fn load_a_v(base: u32, row0: u32, k0: u32, lid: u32) {
    let total = BM * BK / 4u;
    for (var idx = lid; idx < total; idx += THREADS) {
        if (TRANS_A) {
            let kk = idx / (BM / 4u);
            let m4 = idx % (BM / 4u);
            let gm = row0 + m4 * 4u;
            let gk = k0 + kk;
            var v = vec4<f32>(0.0);
            if (gm < p.m && gk < p.k) {
                v = a4[(base + gk * p.m + gm) / 4u];
            }
            As[idx] = v;
        } else {
            let mm = idx / (BK / 4u);
            let k4 = idx % (BK / 4u);
            let gm = row0 + mm;
            let gk = k0 + k4 * 4u;
            var v = vec4<f32>(0.0);
            if (gm < p.m && gk < p.k) {
                v = a4[(base + gm * p.k + gk) / 4u];
            }
            let s = (k4 * 4u) * (BM / 4u) + mm / 4u;
            let q = mm % 4u;
            As[s][q] = v.x;
            As[s + BM / 4u][q] = v.y;
            As[s + 2u * (BM / 4u)][q] = v.z;
            As[s + 3u * (BM / 4u)][q] = v.w;
        }
    }
}

// Loads B(k0 .. k0+BK, col0 .. col0+BN) into Bs, zero outside the matrix.
fn load_b_s(base: u32, col0: u32, k0: u32, lid: u32) {
    let total = BN * BK;
    for (var idx = lid; idx < total; idx += THREADS) {
        var nn: u32;
        var kk: u32;
        if (TRANS_B) { nn = idx / BK; kk = idx % BK; } else { kk = idx / BN; nn = idx % BN; }
        let gn = col0 + nn;
        let gk = k0 + kk;
        var v = 0.0;
        if (gn < p.n && gk < p.k) {
            if (TRANS_B) { v = b[base + gn * p.k + gk]; } else { v = b[base + gk * p.n + gn]; }
        }
        Bs[kk * (BN / 4u) + nn / 4u][nn % 4u] = v;
    }
}

// As load_b_s with 16-byte loads. Not transposed: vec4 along N (needs N % 4 == 0);
// TRANS_B: along K (needs K % 4 == 0).
fn load_b_v(base: u32, col0: u32, k0: u32, lid: u32) {
    let total = BN * BK / 4u;
    for (var idx = lid; idx < total; idx += THREADS) {
        if (TRANS_B) {
            let nn = idx / (BK / 4u);
            let k4 = idx % (BK / 4u);
            let gn = col0 + nn;
            let gk = k0 + k4 * 4u;
            var v = vec4<f32>(0.0);
            if (gn < p.n && gk < p.k) {
                v = b4[(base + gn * p.k + gk) / 4u];
            }
            let s = (k4 * 4u) * (BN / 4u) + nn / 4u;
            let q = nn % 4u;
            Bs[s][q] = v.x;
            Bs[s + BN / 4u][q] = v.y;
            Bs[s + 2u * (BN / 4u)][q] = v.z;
            Bs[s + 3u * (BN / 4u)][q] = v.w;
        } else {
            let kk = idx / (BN / 4u);
            let n4 = idx % (BN / 4u);
            let gn = col0 + n4 * 4u;
            let gk = k0 + kk;
            var v = vec4<f32>(0.0);
            if (gn < p.n && gk < p.k) {
                v = b4[(base + gk * p.n + gn) / 4u];
            }
            Bs[idx] = v;
        }
    }
}

// Rows i0 .. i0+3 of the register tile += av ⊗ (b0, b1).
fn tile_rows4(acc: ptr<function, Acc>, i0: u32, av: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>) {
    let r = i0 * 2u;
    (*acc)[r] = fma(vec4<f32>(av.x), b0, (*acc)[r]);
    (*acc)[r + 2u] = fma(vec4<f32>(av.y), b0, (*acc)[r + 2u]);
    (*acc)[r + 4u] = fma(vec4<f32>(av.z), b0, (*acc)[r + 4u]);
    (*acc)[r + 6u] = fma(vec4<f32>(av.w), b0, (*acc)[r + 6u]);
    if (TN > 4u) {
        (*acc)[r + 1u] = fma(vec4<f32>(av.x), b1, (*acc)[r + 1u]);
        (*acc)[r + 3u] = fma(vec4<f32>(av.y), b1, (*acc)[r + 3u]);
        (*acc)[r + 5u] = fma(vec4<f32>(av.z), b1, (*acc)[r + 5u]);
        (*acc)[r + 7u] = fma(vec4<f32>(av.w), b1, (*acc)[r + 7u]);
    }
}

// acc += As^T Bs over the BK rows of the current tiles, in increasing k.
fn multiply_tile(acc: ptr<function, Acc>, tx: u32, ty: u32) {
    for (var kk = 0u; kk < BK; kk++) {
        let b0 = Bs[kk * (BN / 4u) + tx];
        var b1 = vec4<f32>(0.0);
        if (TN > 4u) {
            b1 = Bs[kk * (BN / 4u) + tx + TX];
        }
        let arow = kk * (BM / 4u) + ty * (TM / 4u);
        tile_rows4(acc, 0u, As[arow], b0, b1);
        if (TM > 4u) {
            tile_rows4(acc, 4u, As[arow + 1u], b0, b1);
        }
    }
}

// Writes the four columns col .. col+3 of one row that lie inside C.
fn store4(item: u32, row: u32, col: u32, v: vec4<f32>) {
    if (row < p.m) {
        for (var q = 0u; q < 4u; q++) {
            if (col + q < p.n) {
                write_out(item, row, col + q, v[q]);
            }
        }
    }
}

fn store_tile(acc: ptr<function, Acc>, t: Tile, tx: u32, ty: u32) {
    let out = *acc;
    for (var i = 0u; i < TM; i++) {
        let row = t.row0 + ty * TM + i;
        store4(t.item, row, t.col0 + tx * 4u, out[i * 2u]);
        if (TN > 4u) {
            store4(t.item, row, t.col0 + (tx + TX) * 4u, out[i * 2u + 1u]);
        }
    }
}

// The four entry points differ only in how A and B are loaded.

@compute @workgroup_size(THREADS)
fn tiled_ss(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let t = tile_of(wg, nwg, BM, BN);
    if (t.item >= p.batch) {
        return;
    }
    var acc: Acc;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        load_a_s(t.item * p.stride_a, t.row0, k0, lid);
        load_b_s(t.item * p.stride_b, t.col0, k0, lid);
        workgroupBarrier();
        multiply_tile(&acc, lid % TX, lid / TX);
        workgroupBarrier();
    }
    store_tile(&acc, t, lid % TX, lid / TX);
}

@compute @workgroup_size(THREADS)
fn tiled_vs(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let t = tile_of(wg, nwg, BM, BN);
    if (t.item >= p.batch) {
        return;
    }
    var acc: Acc;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        load_a_v(t.item * p.stride_a, t.row0, k0, lid);
        load_b_s(t.item * p.stride_b, t.col0, k0, lid);
        workgroupBarrier();
        multiply_tile(&acc, lid % TX, lid / TX);
        workgroupBarrier();
    }
    store_tile(&acc, t, lid % TX, lid / TX);
}

@compute @workgroup_size(THREADS)
fn tiled_sv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let t = tile_of(wg, nwg, BM, BN);
    if (t.item >= p.batch) {
        return;
    }
    var acc: Acc;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        load_a_s(t.item * p.stride_a, t.row0, k0, lid);
        load_b_v(t.item * p.stride_b, t.col0, k0, lid);
        workgroupBarrier();
        multiply_tile(&acc, lid % TX, lid / TX);
        workgroupBarrier();
    }
    store_tile(&acc, t, lid % TX, lid / TX);
}

@compute @workgroup_size(THREADS)
fn tiled_vv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let t = tile_of(wg, nwg, BM, BN);
    if (t.item >= p.batch) {
        return;
    }
    var acc: Acc;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        load_a_v(t.item * p.stride_a, t.row0, k0, lid);
        load_b_v(t.item * p.stride_b, t.col0, k0, lid);
        workgroupBarrier();
        multiply_tile(&acc, lid % TX, lid / TX);
        workgroupBarrier();
    }
    store_tile(&acc, t, lid % TX, lid / TX);
}

// ---------------------------------------------------------------- direct

override DM: u32 = 8;  // rows per thread: 4, 8, 12 or 16
override DN: u32 = 8;  // columns per thread: 4, 8, 12 or 16
override DX: u32 = 8;  // threads along N
override DY: u32 = 8;  // threads along M

// Register tile: [i * 4 + j] = columns 4j .. 4j+3 of row i (at most 16 x 16).
alias DAcc = array<vec4<f32>, 64>;
// Four steps of K. A: [i] = A(row i, k .. k+3). B: [q * 4 + j] = B(k + q, column group j).
alias Blk = array<vec4<f32>, 16>;

struct Pos {
    item: u32,
    row0: u32,  // first row of this thread's tile
    col0: u32,  // first column of this thread's tile
}

fn direct_pos(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Pos {
    let t = tile_of(wg, nwg, DY * DM, DX * DN);
    return Pos(t.item, t.row0 + (lid / DX) * DM, t.col0 + (lid % DX) * DN);
}

// Rows and columns past the matrix are clamped to the last one: they are
// loaded and multiplied like the others, and never stored. Steps of K past K
// (only in the `tail` step) read as zero.

fn a_at(base: u32, r: u32, kq: u32, tail: bool) -> f32 {
    if (tail && kq >= p.k) {
        return 0.0;
    }
    if (TRANS_A) {
        return a[base + kq * p.m + r];
    }
    return a[base + r * p.k + kq];
}

fn b_at(base: u32, c: u32, kq: u32, tail: bool) -> f32 {
    if (tail && kq >= p.k) {
        return 0.0;
    }
    if (TRANS_B) {
        return b[base + c * p.k + kq];
    }
    return b[base + kq * p.n + c];
}

// Row i of A(., k .. k+3) with scalar loads.
fn a_row_s(ab: ptr<function, Blk>, i: u32, base: u32, row0: u32, k: u32, tail: bool) {
    let r = min(row0 + i, p.m - 1u);
    (*ab)[i] = vec4<f32>(a_at(base, r, k, tail), a_at(base, r, k + 1u, tail),
                         a_at(base, r, k + 2u, tail), a_at(base, r, k + 3u, tail));
}

fn a_rows4_s(ab: ptr<function, Blk>, i0: u32, base: u32, row0: u32, k: u32, tail: bool) {
    a_row_s(ab, i0, base, row0, k, tail);
    a_row_s(ab, i0 + 1u, base, row0, k, tail);
    a_row_s(ab, i0 + 2u, base, row0, k, tail);
    a_row_s(ab, i0 + 3u, base, row0, k, tail);
}

fn a4_at(base: u32, g: u32, kq: u32, tail: bool) -> vec4<f32> {
    if (tail && kq >= p.k) {
        return vec4<f32>(0.0);
    }
    return a4[(base + kq * p.m) / 4u + g];
}

// Rows i0 .. i0+3 of A(., k .. k+3) with vec4 loads.
fn a_rows4_v(ab: ptr<function, Blk>, i0: u32, base: u32, row0: u32, k: u32, tail: bool) {
    if (TRANS_A) {
        // Along M (M % 4 == 0, row0 % 4 == 0): one load per step of K, transposed here.
        let g = min((row0 + i0) / 4u, p.m / 4u - 1u);
        let v0 = a4_at(base, g, k, tail);
        let v1 = a4_at(base, g, k + 1u, tail);
        let v2 = a4_at(base, g, k + 2u, tail);
        let v3 = a4_at(base, g, k + 3u, tail);
        (*ab)[i0] = vec4<f32>(v0.x, v1.x, v2.x, v3.x);
        (*ab)[i0 + 1u] = vec4<f32>(v0.y, v1.y, v2.y, v3.y);
        (*ab)[i0 + 2u] = vec4<f32>(v0.z, v1.z, v2.z, v3.z);
        (*ab)[i0 + 3u] = vec4<f32>(v0.w, v1.w, v2.w, v3.w);
    } else {
        // Along K (K % 4 == 0, so there is no tail step): one load per row.
        (*ab)[i0] = a4[(base + min(row0 + i0, p.m - 1u) * p.k + k) / 4u];
        (*ab)[i0 + 1u] = a4[(base + min(row0 + i0 + 1u, p.m - 1u) * p.k + k) / 4u];
        (*ab)[i0 + 2u] = a4[(base + min(row0 + i0 + 2u, p.m - 1u) * p.k + k) / 4u];
        (*ab)[i0 + 3u] = a4[(base + min(row0 + i0 + 3u, p.m - 1u) * p.k + k) / 4u];
    }
}

// Column group j (columns col0 + 4j .. +3) of B(k .. k+3, .) with scalar loads.
fn b_cols4_s(bb: ptr<function, Blk>, j: u32, base: u32, col0: u32, k: u32, tail: bool) {
    let c0 = min(col0 + 4u * j, p.n - 1u);
    let c1 = min(col0 + 4u * j + 1u, p.n - 1u);
    let c2 = min(col0 + 4u * j + 2u, p.n - 1u);
    let c3 = min(col0 + 4u * j + 3u, p.n - 1u);
    (*bb)[j] = vec4<f32>(b_at(base, c0, k, tail), b_at(base, c1, k, tail),
                         b_at(base, c2, k, tail), b_at(base, c3, k, tail));
    (*bb)[4u + j] = vec4<f32>(b_at(base, c0, k + 1u, tail), b_at(base, c1, k + 1u, tail),
                              b_at(base, c2, k + 1u, tail), b_at(base, c3, k + 1u, tail));
    (*bb)[8u + j] = vec4<f32>(b_at(base, c0, k + 2u, tail), b_at(base, c1, k + 2u, tail),
                              b_at(base, c2, k + 2u, tail), b_at(base, c3, k + 2u, tail));
    (*bb)[12u + j] = vec4<f32>(b_at(base, c0, k + 3u, tail), b_at(base, c1, k + 3u, tail),
                               b_at(base, c2, k + 3u, tail), b_at(base, c3, k + 3u, tail));
}

fn b4_at(base: u32, g: u32, kq: u32, tail: bool) -> vec4<f32> {
    if (tail && kq >= p.k) {
        return vec4<f32>(0.0);
    }
    return b4[(base + kq * p.n) / 4u + g];
}

// Column group j of B(k .. k+3, .) with vec4 loads.
fn b_cols4_v(bb: ptr<function, Blk>, j: u32, base: u32, col0: u32, k: u32, tail: bool) {
    if (TRANS_B) {
        // Along K (K % 4 == 0, no tail step): one load per column, transposed here.
        let w0 = b4[(base + min(col0 + 4u * j, p.n - 1u) * p.k + k) / 4u];
        let w1 = b4[(base + min(col0 + 4u * j + 1u, p.n - 1u) * p.k + k) / 4u];
        let w2 = b4[(base + min(col0 + 4u * j + 2u, p.n - 1u) * p.k + k) / 4u];
        let w3 = b4[(base + min(col0 + 4u * j + 3u, p.n - 1u) * p.k + k) / 4u];
        (*bb)[j] = vec4<f32>(w0.x, w1.x, w2.x, w3.x);
        (*bb)[4u + j] = vec4<f32>(w0.y, w1.y, w2.y, w3.y);
        (*bb)[8u + j] = vec4<f32>(w0.z, w1.z, w2.z, w3.z);
        (*bb)[12u + j] = vec4<f32>(w0.w, w1.w, w2.w, w3.w);
    } else {
        // Along N (N % 4 == 0, col0 % 4 == 0): one load per step of K.
        let g = min(col0 / 4u + j, p.n / 4u - 1u);
        (*bb)[j] = b4_at(base, g, k, tail);
        (*bb)[4u + j] = b4_at(base, g, k + 1u, tail);
        (*bb)[8u + j] = b4_at(base, g, k + 2u, tail);
        (*bb)[12u + j] = b4_at(base, g, k + 3u, tail);
    }
}

fn direct_a_s(ab: ptr<function, Blk>, base: u32, row0: u32, k: u32, tail: bool) {
    a_rows4_s(ab, 0u, base, row0, k, tail);
    if (DM > 4u) { a_rows4_s(ab, 4u, base, row0, k, tail); }
    if (DM > 8u) { a_rows4_s(ab, 8u, base, row0, k, tail); }
    if (DM > 12u) { a_rows4_s(ab, 12u, base, row0, k, tail); }
}

fn direct_a_v(ab: ptr<function, Blk>, base: u32, row0: u32, k: u32, tail: bool) {
    a_rows4_v(ab, 0u, base, row0, k, tail);
    if (DM > 4u) { a_rows4_v(ab, 4u, base, row0, k, tail); }
    if (DM > 8u) { a_rows4_v(ab, 8u, base, row0, k, tail); }
    if (DM > 12u) { a_rows4_v(ab, 12u, base, row0, k, tail); }
}

fn direct_b_s(bb: ptr<function, Blk>, base: u32, col0: u32, k: u32, tail: bool) {
    b_cols4_s(bb, 0u, base, col0, k, tail);
    if (DN > 4u) { b_cols4_s(bb, 1u, base, col0, k, tail); }
    if (DN > 8u) { b_cols4_s(bb, 2u, base, col0, k, tail); }
    if (DN > 12u) { b_cols4_s(bb, 3u, base, col0, k, tail); }
}

fn direct_b_v(bb: ptr<function, Blk>, base: u32, col0: u32, k: u32, tail: bool) {
    b_cols4_v(bb, 0u, base, col0, k, tail);
    if (DN > 4u) { b_cols4_v(bb, 1u, base, col0, k, tail); }
    if (DN > 8u) { b_cols4_v(bb, 2u, base, col0, k, tail); }
    if (DN > 12u) { b_cols4_v(bb, 3u, base, col0, k, tail); }
}

// acc[i][j] += sum over q of A(i, k+q) · B(k+q, j), in increasing q.
fn cell(acc: ptr<function, DAcc>, i: u32, j: u32, av: vec4<f32>, bb: ptr<function, Blk>) {
    var s = (*acc)[i * 4u + j];
    s = fma(vec4<f32>(av.x), (*bb)[j], s);
    s = fma(vec4<f32>(av.y), (*bb)[4u + j], s);
    s = fma(vec4<f32>(av.z), (*bb)[8u + j], s);
    s = fma(vec4<f32>(av.w), (*bb)[12u + j], s);
    (*acc)[i * 4u + j] = s;
}

fn row(acc: ptr<function, DAcc>, i: u32, ab: ptr<function, Blk>, bb: ptr<function, Blk>) {
    let av = (*ab)[i];
    cell(acc, i, 0u, av, bb);
    if (DN > 4u) { cell(acc, i, 1u, av, bb); }
    if (DN > 8u) { cell(acc, i, 2u, av, bb); }
    if (DN > 12u) { cell(acc, i, 3u, av, bb); }
}

fn rows4(acc: ptr<function, DAcc>, i0: u32, ab: ptr<function, Blk>, bb: ptr<function, Blk>) {
    row(acc, i0, ab, bb);
    row(acc, i0 + 1u, ab, bb);
    row(acc, i0 + 2u, ab, bb);
    row(acc, i0 + 3u, ab, bb);
}

// acc += ab · bb: four steps of K for the whole register tile.
fn direct_fma(acc: ptr<function, DAcc>, ab: ptr<function, Blk>, bb: ptr<function, Blk>) {
    rows4(acc, 0u, ab, bb);
    if (DM > 4u) { rows4(acc, 4u, ab, bb); }
    if (DM > 8u) { rows4(acc, 8u, ab, bb); }
    if (DM > 12u) { rows4(acc, 12u, ab, bb); }
}

fn direct_store(acc: ptr<function, DAcc>, pos: Pos) {
    let out = *acc;
    for (var i = 0u; i < DM; i++) {
        for (var j = 0u; j < DN / 4u; j++) {
            store4(pos.item, pos.row0 + i, pos.col0 + 4u * j, out[i * 4u + j]);
        }
    }
}

// The four entry points differ only in how A and B are loaded.

@compute @workgroup_size(DX * DY)
fn direct_ss(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let pos = direct_pos(wg, nwg, lid);
    if (pos.item >= p.batch || pos.row0 >= p.m || pos.col0 >= p.n) {
        return;
    }
    let base_a = pos.item * p.stride_a;
    let base_b = pos.item * p.stride_b;
    var acc: DAcc;
    var ab: Blk;
    var bb: Blk;
    let k_full = p.k & ~3u;  // steps with all four k inside
    for (var k = 0u; k < k_full; k += 4u) {
        direct_a_s(&ab, base_a, pos.row0, k, false);
        direct_b_s(&bb, base_b, pos.col0, k, false);
        direct_fma(&acc, &ab, &bb);
    }
    if (k_full < p.k) {
        direct_a_s(&ab, base_a, pos.row0, k_full, true);
        direct_b_s(&bb, base_b, pos.col0, k_full, true);
        direct_fma(&acc, &ab, &bb);
    }
    direct_store(&acc, pos);
}

@compute @workgroup_size(DX * DY)
fn direct_sv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let pos = direct_pos(wg, nwg, lid);
    if (pos.item >= p.batch || pos.row0 >= p.m || pos.col0 >= p.n) {
        return;
    }
    let base_a = pos.item * p.stride_a;
    let base_b = pos.item * p.stride_b;
    var acc: DAcc;
    var ab: Blk;
    var bb: Blk;
    let k_full = p.k & ~3u;  // steps with all four k inside
    for (var k = 0u; k < k_full; k += 4u) {
        direct_a_s(&ab, base_a, pos.row0, k, false);
        direct_b_v(&bb, base_b, pos.col0, k, false);
        direct_fma(&acc, &ab, &bb);
    }
    if (k_full < p.k) {
        direct_a_s(&ab, base_a, pos.row0, k_full, true);
        direct_b_v(&bb, base_b, pos.col0, k_full, true);
        direct_fma(&acc, &ab, &bb);
    }
    direct_store(&acc, pos);
}

@compute @workgroup_size(DX * DY)
fn direct_vs(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let pos = direct_pos(wg, nwg, lid);
    if (pos.item >= p.batch || pos.row0 >= p.m || pos.col0 >= p.n) {
        return;
    }
    let base_a = pos.item * p.stride_a;
    let base_b = pos.item * p.stride_b;
    var acc: DAcc;
    var ab: Blk;
    var bb: Blk;
    let k_full = p.k & ~3u;  // steps with all four k inside
    for (var k = 0u; k < k_full; k += 4u) {
        direct_a_v(&ab, base_a, pos.row0, k, false);
        direct_b_s(&bb, base_b, pos.col0, k, false);
        direct_fma(&acc, &ab, &bb);
    }
    if (k_full < p.k) {
        direct_a_v(&ab, base_a, pos.row0, k_full, true);
        direct_b_s(&bb, base_b, pos.col0, k_full, true);
        direct_fma(&acc, &ab, &bb);
    }
    direct_store(&acc, pos);
}

@compute @workgroup_size(DX * DY)
fn direct_vv(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let pos = direct_pos(wg, nwg, lid);
    if (pos.item >= p.batch || pos.row0 >= p.m || pos.col0 >= p.n) {
        return;
    }
    let base_a = pos.item * p.stride_a;
    let base_b = pos.item * p.stride_b;
    var acc: DAcc;
    var ab: Blk;
    var bb: Blk;
    let k_full = p.k & ~3u;  // steps with all four k inside
    for (var k = 0u; k < k_full; k += 4u) {
        direct_a_v(&ab, base_a, pos.row0, k, false);
        direct_b_v(&bb, base_b, pos.col0, k, false);
        direct_fma(&acc, &ab, &bb);
    }
    if (k_full < p.k) {
        direct_a_v(&ab, base_a, pos.row0, k_full, true);
        direct_b_v(&bb, base_b, pos.col0, k_full, true);
        direct_fma(&acc, &ab, &bb);
    }
    direct_store(&acc, pos);
}
