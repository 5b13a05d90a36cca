// Elementwise kernels over flat arrays: add, in-place (residual) add,
// copy and fill. One thread per element; the 1-D index is spread over
// a 2-D grid so tensors beyond 65535 workgroups still fit one dispatch.
// Written over an element type (f32, or f16 storage with f32 arithmetic).

alias elem = f32;

struct Params {
    n: u32,          // number of elements
    scalar: f32,     // fill value
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;

// add / copy: binding 1 = input a, then b (add only), then the output.
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read_write> out3: array<elem>;
@group(0) @binding(2) var<storage, read_write> out2: array<elem>;
// in-place forms and fill: binding 1 is the tensor being modified.
@group(0) @binding(1) var<storage, read_write> acc: array<elem>;
@group(0) @binding(2) var<storage, read> addend: array<elem>;

fn index(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.x + wg.y * nwg.x) * WG + lid;
}

// out = a + b
@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i < p.n) { out3[i] = elem(f32(a[i]) + f32(b[i])); }
}

// acc += addend (residual connections, gradient accumulation)
@compute @workgroup_size(WG)
fn add_inplace(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i < p.n) { acc[i] = elem(f32(acc[i]) + f32(addend[i])); }
}

// out = a
@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i < p.n) { out2[i] = a[i]; }
}

// acc = scalar
@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wg, nwg, lid);
    if (i < p.n) { acc[i] = elem(p.scalar); }
}
