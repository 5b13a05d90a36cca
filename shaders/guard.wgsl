// The non-finite guard of a training step: one thread, run after the global
// gradient norm and before the AdamW updates. When a micro-batch loss or
// Σg² is NaN or infinite (or, in `sticky` mode, any earlier step was), it
// marks the step skipped by setting Σg² to +inf, which every AdamW update
// reads as "no update" (adamw.wgsl), so the weights never become
// non-finite. It counts skipped steps and records the first bad one.
//
// Non-finite is tested on the bits (exponent all ones), which no
// fast-math assumption about NaN can optimise away.

struct Params {
    step_plus1: u32,  // this step (from 0) + 1, recorded as the first bad step
    n_losses: u32,    // losses[0..n_losses] are this step's micro-batch losses
    sticky: u32,      // 1: once a step was bad, skip every later one too
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> losses: array<f32>;
@group(0) @binding(2) var<storage, read_write> sumsq: array<f32>;
// [0] steps skipped, [1] first bad step + 1 (0: none), [2] 1 if this step was skipped
@group(0) @binding(3) var<storage, read_write> state: array<u32>;

fn nonfinite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

@compute @workgroup_size(1)
fn guard() {
    var bad = nonfinite(sumsq[0]);
    for (var i = 0u; i < p.n_losses; i = i + 1u) {
        bad = bad || nonfinite(losses[i]);
    }
    let skip = bad || (p.sticky != 0u && state[1] != 0u);
    if (bad && state[1] == 0u) {
        state[1] = p.step_plus1;
    }
    if (skip) {
        state[0] = state[0] + 1u;
        state[2] = 1u;
        // +inf built from a runtime value: browsers' WGSL compilers (Tint)
        // reject an infinite constant expression.
        sumsq[0] = bitcast<f32>(0x7f800000u | (p._pad & 0u));
    } else {
        state[2] = 0u;
    }
}
