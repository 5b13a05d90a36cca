// Reductions that always add in the same order (no atomics), so the same
// inputs give the same bits on every run:
//   col_sum     out[j] (+)= Σ_i x[i, j]   two stages: row chunks → partials → out
//   sum_squares out[0]   = Σ_t Σ_i x_t[i]² stage 1 per tensor into fixed slots of
//                                         a partials buffer, stage 2 one workgroup
// Tree reductions need WG to be a power of two (the Rust side uses 256).

override WG: u32 = 256;

var<workgroup> red: array<f32, WG>;

// Sums red[0..WG) pairwise in a fixed tree; every invocation gets the total.
// Callers store their value in red[lid] first and must be in uniform control flow.
fn tree_sum(lid: u32) -> f32 {
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        workgroupBarrier();
        if (lid < stride) {
            red[lid] = red[lid] + red[lid + stride];
        }
    }
    workgroupBarrier();
    return red[0];
}

// ---------------------------------------------------------------- col_sum
// Stage 1 workgroup: COL_TILE adjacent columns × ROW_LANES row lanes
// (= 256 threads, consecutive threads read consecutive columns). Lane l sums
// rows r0 + l, r0 + l + ROW_LANES, ... of its chunk in order; the four lanes
// are then added as (l0 + l1) + (l2 + l3).

const COL_TILE: u32 = 64u;
const ROW_LANES: u32 = 4u;

struct ColParams {
    rows: u32,
    cols: u32,
    chunk_rows: u32,   // rows per stage-1 chunk (a multiple of ROW_LANES)
    chunks: u32,       // number of chunks = rows of the partials array
    tiles: u32,        // ceil(cols / COL_TILE)
    accumulate: u32,   // 1: dst += sum; 0: dst = sum (dst's old value is never read)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> cp: ColParams;
// Stage 1: src = x [rows, cols], dst = partials [chunks, cols] (or out [cols]
// when there is a single chunk). Stage 2: src = partials, dst = out [cols].
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

var<workgroup> lanes: array<f32, 256>; // COL_TILE * ROW_LANES

fn store(k: u32, s: f32, accumulate: u32) {
    if (accumulate != 0u) {
        dst[k] = dst[k] + s;
    } else {
        dst[k] = s;
    }
}

// One workgroup per (chunk, column tile); the linear workgroup index is
// spread over a 2-D grid and bounds-checked.
@compute @workgroup_size(256)
fn col_sum_chunks(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let id = wg.x + wg.y * nwg.x;
    let tile = id % cp.tiles;
    let chunk = id / cp.tiles;
    if (chunk >= cp.chunks) {
        return; // uniform across the workgroup
    }
    let c = lid % COL_TILE;
    let lane = lid / COL_TILE;
    let j = tile * COL_TILE + c;
    let r0 = chunk * cp.chunk_rows;
    let r1 = min(r0 + cp.chunk_rows, cp.rows);
    var s = 0.0;
    if (j < cp.cols) {
        for (var r = r0 + lane; r < r1; r = r + ROW_LANES) {
            s = s + src[r * cp.cols + j];
        }
    }
    lanes[lid] = s;
    workgroupBarrier();
    if (lane == 0u && j < cp.cols) {
        let total = (lanes[c] + lanes[c + COL_TILE]) + (lanes[c + 2u * COL_TILE] + lanes[c + 3u * COL_TILE]);
        store(chunk * cp.cols + j, total, cp.accumulate);
    }
}

// Stage 2: one thread per column adds the partials of every chunk in order.
@compute @workgroup_size(WG)
fn col_sum_final(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let j = (wg.x + wg.y * nwg.x) * WG + lid;
    if (j >= cp.cols) {
        return;
    }
    var s = 0.0;
    for (var c = 0u; c < cp.chunks; c = c + 1u) {
        s = s + src[c * cp.cols + j];
    }
    store(j, s, cp.accumulate);
}

// ------------------------------------------------------------ sum_squares

struct SqParams {
    n: u32,       // stage 1: elements of this tensor; stage 2: number of partials
    offset: u32,  // stage 1: first partials slot of this tensor
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> sp: SqParams;

// Stage 1, one dispatch per tensor (src = the tensor, dst = partials), a 1-D
// grid of G workgroups: thread (w, l) adds x[i]² for i = w·WG + l, then every
// G·WG further (a grid-stride loop bounds G however large the tensor); the
// workgroup's tree sum goes to partials[offset + w].
@compute @workgroup_size(WG)
fn sum_squares_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let stride = nwg.x * WG;
    var s = 0.0;
    for (var i = wg.x * WG + lid; i < sp.n; i = i + stride) {
        let v = src[i];
        s = s + v * v;
    }
    red[lid] = s;
    let total = tree_sum(lid);
    if (lid == 0u) {
        dst[sp.offset + wg.x] = total;
    }
}

// Stage 2, one workgroup (src = partials, dst = out [1]): thread l adds
// partials l, l + WG, ... in order, then the tree sum.
@compute @workgroup_size(WG)
fn sum_squares_final(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var k = lid; k < sp.n; k = k + WG) {
        s = s + src[k];
    }
    red[lid] = s;
    let total = tree_sum(lid);
    if (lid == 0u) {
        dst[0] = total;
    }
}
