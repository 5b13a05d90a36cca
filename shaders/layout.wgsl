// Strided copy: the one kernel behind permute, slice, concat and patchify.
// Walks an index space of up to 6 dimensions (row-major, last fastest); the
// element at multi-index q is read from src[src_off + Σ q_d·src_stride_d]
// and written to (or, with accumulate, added into) dst[dst_off + Σ
// q_d·dst_stride_d]. The wrapper checks that both ranges lie inside their
// tensors and that the destination map is one-to-one, so every output
// element has one writer: deterministic with no atomics.

alias elem = f32;

struct Params {
    n: u32,          // elements of the index space
    src_off: u32,
    dst_off: u32,
    accumulate: u32,
    // dims right-aligned in 6 slots (unused leading slots: size 1, stride 0)
    shape: array<vec4<u32>, 2>,
    src_stride: array<vec4<u32>, 2>,
    dst_stride: array<vec4<u32>, 2>,
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<elem>;
@group(0) @binding(2) var<storage, read_write> dst: array<elem>;

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    var rem = i;
    var s = p.src_off;
    var d = p.dst_off;
    for (var k = 0u; k < 6u; k = k + 1u) {
        let dim = 5u - k;
        let size = p.shape[dim / 4u][dim % 4u];
        let q = rem % size;
        rem = rem / size;
        s = s + q * p.src_stride[dim / 4u][dim % 4u];
        d = d + q * p.dst_stride[dim / 4u][dim % 4u];
    }
    if (p.accumulate != 0u) {
        dst[d] = elem(f32(dst[d]) + f32(src[s]));
    } else {
        dst[d] = src[s];
    }
}
