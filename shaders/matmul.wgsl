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
//   naive             one thread per output, 16x16 threads, reads straight from global memory.
//   tiled_{s,v}{s,v}  BM x BN output tile per workgroup, K walked in BK steps through
//                     workgroup memory; each thread owns a TM x TN register tile.
//                     The first letter says how A is loaded from global memory (s =
//                     scalar, v = vec4), the second letter B. vec4 needs the operand's
//                     contiguous dimension and batch stride to be multiples of 4 (the
//                     wrapper decides); scalar loads are correct for every shape.

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

// Register tile: row i, column group j (columns 4*(tx + j*TX) .. +3) at [i * 2 + j].
alias Acc = array<vec4<f32>, 16>;

// Loads A(row0 .. row0+BM, k0 .. k0+BK) into As, zero outside the matrix.
// Consecutive threads read consecutive addresses of A in both layouts.
fn load_a_s(base: u32, row0: u32, k0: u32, lid: u32) {
    let total = BM * BK;
    for (var r = 0u; r < (total + THREADS - 1u) / THREADS; r++) {
        let idx = lid + r * THREADS;
        if (idx < total) {
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
}

// As load_a_s with 16-byte loads. TRANS_A: vec4 along M (needs M % 4 == 0);
// else along K (needs K % 4 == 0), spread over four K rows of As.
fn load_a_v(base: u32, row0: u32, k0: u32, lid: u32) {
    let total = BM * BK / 4u;
    for (var r = 0u; r < (total + THREADS - 1u) / THREADS; r++) {
        let idx = lid + r * THREADS;
        if (idx < total) {
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
}

// Loads B(k0 .. k0+BK, col0 .. col0+BN) into Bs, zero outside the matrix.
fn load_b_s(base: u32, col0: u32, k0: u32, lid: u32) {
    let total = BN * BK;
    for (var r = 0u; r < (total + THREADS - 1u) / THREADS; r++) {
        let idx = lid + r * THREADS;
        if (idx < total) {
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
}

// As load_b_s with 16-byte loads. Not transposed: vec4 along N (needs N % 4 == 0);
// TRANS_B: along K (needs K % 4 == 0).
fn load_b_v(base: u32, col0: u32, k0: u32, lid: u32) {
    let total = BN * BK / 4u;
    for (var r = 0u; r < (total + THREADS - 1u) / THREADS; r++) {
        let idx = lid + r * THREADS;
        if (idx < total) {
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
}

// acc += As^T Bs over the BK rows of the current tiles, in increasing k.
fn multiply_tile(acc: ptr<function, Acc>, tx: u32, ty: u32) {
    for (var kk = 0u; kk < BK; kk++) {
        var bv: array<vec4<f32>, 2>;
        for (var j = 0u; j < TN / 4u; j++) {
            bv[j] = Bs[kk * (BN / 4u) + tx + j * TX];
        }
        for (var i4 = 0u; i4 < TM / 4u; i4++) {
            let av = As[kk * (BM / 4u) + ty * (TM / 4u) + i4];
            for (var j = 0u; j < TN / 4u; j++) {
                let i = i4 * 8u + j;
                (*acc)[i] = fma(vec4<f32>(av.x), bv[j], (*acc)[i]);
                (*acc)[i + 2u] = fma(vec4<f32>(av.y), bv[j], (*acc)[i + 2u]);
                (*acc)[i + 4u] = fma(vec4<f32>(av.z), bv[j], (*acc)[i + 4u]);
                (*acc)[i + 6u] = fma(vec4<f32>(av.w), bv[j], (*acc)[i + 6u]);
            }
        }
    }
}

fn store_tile(acc: ptr<function, Acc>, t: Tile, tx: u32, ty: u32) {
    for (var i = 0u; i < TM; i++) {
        let row = t.row0 + ty * TM + i;
        if (row < p.m) {
            for (var j = 0u; j < TN / 4u; j++) {
                let col = t.col0 + (tx + j * TX) * 4u;
                let v = (*acc)[i * 2u + j];
                for (var q = 0u; q < 4u; q++) {
                    if (col + q < p.n) {
                        write_out(t.item, row, col + q, v[q]);
                    }
                }
            }
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
