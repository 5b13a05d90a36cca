// Dropout from a counter-based generator (Philox4x32-10, Salmon et al.,
// "Parallel random numbers: as easy as 1, 2, 3", SC'11; the generator of
// PyTorch's CUDA dropout): y = x·mask·scale, mask = [r ≥ threshold] with r
// a uniform u32, so P(keep) = 1 − threshold/2³².
//
// One thread per block of 4 elements: block i draws Philox(counter =
// (i, stream, rng[2], rng[3]), key = (rng[0], rng[1])), one word per
// element. rng = (seed lo, seed hi, micro-batch counter lo, hi) is the
// graph's "kiln.rng" input; stream tells a graph's dropout nodes apart. The
// mask is a pure function of (rng, stream, element index): the backward
// recomputes it by running this same kernel on dy.
//
// Written over an element type (x, y); rng is u32.

alias elem = f32;

struct Params {
    n: u32,          // elements
    threshold: u32,  // drop when r < threshold
    scale: f32,      // 1 / (1 − p)
    stream: u32,
}

override WG: u32 = 256;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rng: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<elem>;
@group(0) @binding(3) var<storage, read_write> y: array<elem>;

// High 32 bits of a·b (WGSL has no 64-bit integers): schoolbook on 16-bit halves.
fn mulhi(a: u32, b: u32) -> u32 {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    return p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var r = 0u; r < 10u; r = r + 1u) {
        if (r > 0u) {
            k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
        }
        let hi0 = mulhi(0xD2511F53u, c.x);
        let lo0 = 0xD2511F53u * c.x;
        let hi1 = mulhi(0xCD9E8D57u, c.z);
        let lo1 = 0xCD9E8D57u * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

@compute @workgroup_size(WG)
fn apply(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let block = (wg.x + wg.y * nwg.x) * WG + lid;
    let first = block * 4u;
    if (first >= p.n) { return; }
    let r = philox4x32_10(vec4<u32>(block, p.stream, rng[2], rng[3]), vec2<u32>(rng[0], rng[1]));
    for (var j = 0u; j < 4u; j = j + 1u) {
        let i = first + j;
        if (i < p.n) {
            var v = 0.0;
            if (r[j] >= p.threshold) { v = f32(x[i]) * p.scale; }
            y[i] = elem(v);
        }
    }
}
