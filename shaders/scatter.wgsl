// Rows by index: gather (an embedding lookup), and a deterministic
// scatter-add (an embedding's backward, a segment sum) built without atomics
// by sorting once and reducing in order.
//
// Ids come in G groups of M (N = G·M ids, group g = i / M); an id selects
// row g·V + id of a [G·V, C] table, and an id outside [0, V) selects nothing
// (a gather gives a zero row, a scatter drops the row). An embedding lookup
// is G = 1; gathering one row per sequence is G = B, M = 1, V = T.
//
// Scatter-add, out[key] += Σ x[i] over the positions i with that key, in
// three steps:
//   sort_block   each workgroup sorts BLOCK (key, position) pairs in
//                workgroup memory (bitonic network). Out-of-range ids get the
//                key INVALID and sort last. Pairs are distinct (positions
//                are), so the order is total and the sort stable by position.
//   merge        one pass per doubling of the sorted run width: each pair
//                finds its place in the merged run from its rank in its own
//                run plus a binary search of the other (every slot written
//                once). ⌈log2(N / BLOCK)⌉ passes, O(N log N) work each at most.
//   seg_pieces   the sorted pairs in chunks of K: one thread per (chunk,
//                column) sums each key's rows in position order; a key wholly
//                inside the chunk is added to out here, the pieces of a key
//                that crosses a chunk border go to `partial`.
//   seg_spans    one thread per (chunk, column) where a crossing key starts:
//                adds its pieces chunk by chunk, then to out.
// So every sum runs in increasing position order, split only at the fixed
// chunk borders (multiples of K in sorted order): the same bits every run.
// Loops stay short (K and the chunk count are ≤ 16384; lavapipe stops an
// invocation's loops after ~65535 iterations).

alias elem = f32;

struct Params {
    n: u32,          // N ids
    m: u32,          // ids per group (M)
    v: u32,          // rows per group (the range of an id)
    c: u32,          // row width C
    width: u32,      // merge: sorted run width
    chunk: u32,      // seg_*: K sorted positions per chunk
    accumulate: u32, // gather / put: add into the output instead of overwriting
    groups: u32,     // G
}

override WG: u32 = 256;
const BLOCK: u32 = 1024u;
const INVALID: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;

// gather: ids, table [G·V, C], out [N, C]
// put:    ids, src [N, C], dst [G·V, C]
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> rows_in: array<elem>;
@group(0) @binding(3) var<storage, read_write> rows_out: array<elem>;
// sort_block: ids, pairs
@group(0) @binding(2) var<storage, read_write> pairs_out: array<vec2<u32>>;
// merge: src, dst
@group(0) @binding(1) var<storage, read> pairs: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> merged: array<vec2<u32>>;
// seg_pieces: pairs, x [N, C], partial [2·chunks, C] (f32), out [G·V, C]
@group(0) @binding(2) var<storage, read> x: array<elem>;
@group(0) @binding(3) var<storage, read_write> partial_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> out4: array<elem>;
// seg_spans: pairs, partial, out
@group(0) @binding(2) var<storage, read> partial: array<f32>;
@group(0) @binding(3) var<storage, read_write> out3: array<elem>;

var<workgroup> sh: array<vec2<u32>, BLOCK>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG + lid;
}

// Row of the table id i selects, or INVALID.
fn key_of(i: u32) -> u32 {
    let id = ids[i];
    if (id < 0 || u32(id) >= p.v) { return INVALID; }
    return (i / p.m) * p.v + u32(id);
}

fn less(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x < b.x || (a.x == b.x && a.y < b.y);
}

// out[i, c] = table[key(i), c] (0 for an invalid key); one thread per element.
@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let e = index(wg, nwg, lid);
    if (e >= p.n * p.c) { return; }
    let i = e / p.c;
    let col = e % p.c;
    let key = key_of(i);
    if (p.accumulate != 0u) {
        if (key != INVALID) {
            rows_out[e] = elem(f32(rows_out[e]) + f32(rows_in[key * p.c + col]));
        }
    } else {
        var val = elem(0.0);
        if (key != INVALID) { val = rows_in[key * p.c + col]; }
        rows_out[e] = val;
    }
}

// dst[g, v, c] (+)= Σ_m src[g, m, c] over the m with ids[g, m] = v, in
// increasing m: one thread per element of dst, a loop over the M ids of its
// group (a dense scatter, for small M).
@compute @workgroup_size(WG)
fn put(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let e = index(wg, nwg, lid);
    if (e >= p.groups * p.v * p.c) { return; }
    let col = e % p.c;
    let r = e / p.c;
    let v = r % p.v;
    let g = r / p.v;
    var acc = 0.0;
    var hit = false;
    for (var k = 0u; k < p.m; k = k + 1u) {
        let i = g * p.m + k;
        let id = ids[i];
        if (id >= 0 && u32(id) == v) {
            acc = acc + f32(rows_in[i * p.c + col]);
            hit = true;
        }
    }
    if (p.accumulate != 0u) {
        if (hit) { rows_out[e] = elem(f32(rows_out[e]) + acc); }
    } else {
        rows_out[e] = elem(acc);
    }
}

// Sorts (key, position) pairs in blocks of BLOCK; one workgroup per block.
@compute @workgroup_size(WG)
fn sort_block(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let base = (wg.x + wg.y * nwg.x) * BLOCK;
    if (base >= p.n) { return; } // uniform across the workgroup
    for (var q = lid; q < BLOCK; q = q + WG) {
        let i = base + q;
        var e = vec2<u32>(INVALID, INVALID); // padding sorts after every pair
        if (i < p.n) { e = vec2<u32>(key_of(i), i); }
        sh[q] = e;
    }
    workgroupBarrier();
    for (var k = 2u; k <= BLOCK; k = k << 1u) {
        for (var j = k >> 1u; j > 0u; j = j >> 1u) {
            for (var q = lid; q < BLOCK / 2u; q = q + WG) {
                let i = (q / j) * 2u * j + (q % j);
                let l = i + j;
                let a = sh[i];
                let b = sh[l];
                if (less(b, a) == ((i & k) == 0u)) {
                    sh[i] = b;
                    sh[l] = a;
                }
            }
            workgroupBarrier();
        }
    }
    for (var q = lid; q < BLOCK; q = q + WG) {
        let i = base + q;
        if (i < p.n) { pairs_out[i] = sh[q]; }
    }
}

// Merges sorted runs [a0, a0 + w) and [a0 + w, a0 + 2w) (clipped to N):
// one thread per pair, placed at a0 + (its rank in its own run) + (the
// number of pairs of the other run that sort before it).
@compute @workgroup_size(WG)
fn merge(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let e = index(wg, nwg, lid);
    if (e >= p.n) { return; }
    let w = p.width;
    let a0 = (e / (2u * w)) * (2u * w);
    let a1 = min(a0 + w, p.n);
    let b1 = min(a1 + w, p.n);
    let it = pairs[e];
    var lo = a0;
    var hi = a1;
    var r = e - a1;
    if (e < a1) {
        lo = a1;
        hi = b1;
        r = e - a0;
    }
    let first = lo;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (less(pairs[mid], it)) { lo = mid + 1u; } else { hi = mid; }
    }
    merged[a0 + r + (lo - first)] = it;
}

// Pass 1 of the segmented sum; see the header.
@compute @workgroup_size(WG)
fn seg_pieces(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let e = index(wg, nwg, lid);
    let chunks = (p.n + p.chunk - 1u) / p.chunk;
    if (e >= chunks * p.c) { return; }
    let k = e / p.c;
    let col = e % p.c;
    let j0 = k * p.chunk;
    let j1 = min(j0 + p.chunk, p.n);
    var acc = 0.0;
    var start = j0;
    for (var j = j0; j < j1; j = j + 1u) {
        let s = pairs[j];
        if (s.x == INVALID) { break; } // only invalid keys follow
        acc = acc + f32(x[s.y * p.c + col]);
        var last = j + 1u == j1;
        if (!last) { last = pairs[j + 1u].x != s.x; }
        if (last) {
            let before = start == j0 && j0 > 0u && pairs[j0 - 1u].x == s.x;
            let after = j + 1u == j1 && j1 < p.n && pairs[j1].x == s.x;
            if (before) {
                partial_out[2u * k * p.c + col] = acc;
            } else if (after) {
                partial_out[(2u * k + 1u) * p.c + col] = acc;
            } else {
                let o = s.x * p.c + col;
                out4[o] = elem(f32(out4[o]) + acc);
            }
            acc = 0.0;
            start = j + 1u;
        }
    }
}

// Pass 2: keys that cross chunk borders, from the chunk where they start.
@compute @workgroup_size(WG)
fn seg_spans(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let e = index(wg, nwg, lid);
    let chunks = (p.n + p.chunk - 1u) / p.chunk;
    if (e >= chunks * p.c) { return; }
    let k = e / p.c;
    let col = e % p.c;
    let j0 = k * p.chunk;
    let j1 = min(j0 + p.chunk, p.n);
    if (j1 >= p.n) { return; }
    let key = pairs[j1 - 1u].x;
    if (key == INVALID || pairs[j1].x != key) { return; }
    if (j0 > 0u && pairs[j0].x == key && pairs[j0 - 1u].x == key) { return; }
    var acc = partial[(2u * k + 1u) * p.c + col];
    var kk = k + 1u;
    loop {
        acc = acc + partial[2u * kk * p.c + col];
        let end = min((kk + 1u) * p.chunk, p.n);
        if (end < p.n && pairs[end].x == key) {
            kk = kk + 1u;
        } else {
            break;
        }
    }
    let o = key * p.c + col;
    out3[o] = elem(f32(out3[o]) + acc);
}
