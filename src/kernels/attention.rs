//! Fused multi-head attention (`shaders/attention.wgsl`), FlashAttention-style:
//! o = softmax(q·kᵀ·scale + mask)·v without materialising the T×T scores,
//! and its backward from the saved per-row log-sum-exp.
//!
//! Layouts: `q`, `k`, `v`, `o`, `d_o`, `dq`, `dk`, `dv` hold B·H·T·D f32 in
//! head-major order ([B·H, T, D] or [B, H, T, D], as
//! [`to_heads`](super::heads::to_heads) writes them); `lse` holds B·H·T f32
//! (per query row: log Σ exp of the scaled, masked scores). scale = 1/√D.
//!
//! Masks: `causal` hides keys after the query; `key_mask` (i32 or u32
//! [B, T], nonzero = attend, 0 = padded key) hides keys per batch row, head
//! bh using row bh / H. A query row that sees no key at all (every key
//! padded) gets o = 0, lse = −∞ and zero gradients.
//!
//! Inputs must be finite (a masked key's probability is an exact 0 that
//! multiplies its value). Head dims 1..=128 are supported; T is any ≥ 1.
//! Results are bit-reproducible: every sum runs in a fixed order and the
//! backward needs no atomics (dK/dV and dQ are separate passes).

use anyhow::{bail, ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_f32, check_numel, check_u32};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

/// Invocations per workgroup.
const WG: usize = 128;
/// Head-dim columns one thread accumulates (the shader's MAXC).
const MAX_COLS: usize = 8;
/// Largest supported head dim.
pub const MAX_HEAD_DIM: usize = 128;
/// Workgroup memory every tile choice fits (WebGPU's default limit).
pub const WORKGROUP_BYTES: usize = 16384;

/// The shape of one fused-attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionSpec {
    /// B·H: heads in all, one [T, D] slice each.
    pub batch_heads: usize,
    /// B: rows of the key mask.
    pub batch: usize,
    /// H: head bh reads key-mask row bh / H.
    pub heads: usize,
    /// T
    pub seq: usize,
    /// D
    pub head_dim: usize,
    pub causal: bool,
}

impl AttentionSpec {
    pub fn new(batch: usize, heads: usize, seq: usize, head_dim: usize, causal: bool) -> Self {
        Self {
            batch_heads: batch * heads,
            batch,
            heads,
            seq,
            head_dim,
            causal,
        }
    }

    /// 1/√D.
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    /// Multiply-adds × 2 of the forward: q·kᵀ and p·v, 2·T²·D each per head;
    /// half of it when causal (the skipped tiles above the diagonal).
    pub fn forward_flops(&self) -> u64 {
        let f = 4 * (self.batch_heads * self.seq * self.seq * self.head_dim) as u64;
        if self.causal {
            f / 2
        } else {
            f
        }
    }

    /// The backward recomputes q·kᵀ and adds dO·vᵀ, Pᵀ·dO, dSᵀ·Q (dK pass)
    /// and q·kᵀ, dO·vᵀ, dS·K (dQ pass): counted as 2.5× the forward.
    pub fn backward_flops(&self) -> u64 {
        self.forward_flops() * 5 / 2
    }

    fn check(&self, op: &str) -> Result<()> {
        let s = self;
        ensure!(
            s.batch >= 1 && s.heads >= 1 && s.seq >= 1,
            "{op}: batch ({}), heads ({}) and seq ({}) must be ≥ 1",
            s.batch,
            s.heads,
            s.seq
        );
        ensure!(
            s.batch_heads == s.batch * s.heads,
            "{op}: batch_heads = {} but batch × heads = {} × {} = {}",
            s.batch_heads,
            s.batch,
            s.heads,
            s.batch * s.heads
        );
        ensure!(
            (1..=MAX_HEAD_DIM).contains(&s.head_dim),
            "{op}: head_dim = {} is not supported (1..={MAX_HEAD_DIM})",
            s.head_dim
        );
        check_u32(op, "B·H·T·D", s.batch_heads * s.seq * s.head_dim)?;
        check_u32(op, "2·B·H·T", 2 * s.batch_heads * s.seq)?;
        Ok(())
    }
}

/// Rows per tile: `own` rows stay in a workgroup (queries in the forward and
/// dQ passes, keys in the dK/dV pass), `streamed` rows pass through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    pub own: usize,
    pub streamed: usize,
}

/// The passes, for [`workgroup_bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Forward,
    BackwardDkDv,
    BackwardDq,
}

/// Tiles of the forward and of the two backward passes for head dim `d`,
/// chosen so every pass fits 16 KiB of workgroup memory and each thread
/// accumulates at most 8 head-dim columns (own · d ≤ 8 · 128).
pub fn tiles(d: usize) -> (Tiles, Tiles) {
    let t = |own, streamed| Tiles { own, streamed };
    if d <= 32 {
        (t(16, 16), t(16, 16))
    } else if d <= 64 {
        (t(16, 16), t(16, 8))
    } else {
        (t(8, 8), t(8, 4))
    }
}

/// Workgroup memory of one pass (the shader's arrays that pass uses).
pub fn workgroup_bytes(pass: Pass, d: usize, t: Tiles) -> usize {
    let (o, s) = (t.own, t.streamed);
    let floats = match pass {
        // q tile, k and v tiles, scores
        Pass::Forward => o * d + 2 * s * d + o * s,
        // k, v owned; q, dO streamed; P and dS; lse and Δ of the streamed rows
        Pass::BackwardDkDv => 2 * o * d + 2 * s * d + 2 * o * s + 2 * s,
        // q, dO owned; k, v streamed; dS; lse and Δ of the owned rows
        Pass::BackwardDq => 2 * o * d + 2 * s * d + o * s + 2 * o,
    };
    4 * floats
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    bh: u32,
    t: u32,
    heads: u32,
    causal: u32,
    has_mask: u32,
    tiles: u32,
    scale: f32,
    _pad: u32,
}

fn kernel(entry: &'static str, d: usize, t: Tiles) -> Kernel {
    let tpr = WG / t.own;
    debug_assert!(
        d.div_ceil(tpr) <= MAX_COLS,
        "d = {d}: too many columns per thread"
    );
    Kernel::new("attention", entry)
        .constant("D", d as u32)
        .constant("OWN", t.own as u32)
        .constant("STR", t.streamed as u32)
        .constant("WG", WG as u32)
        .constant("TPR", tpr as u32)
        .constant("NCOL", d.div_ceil(tpr) as u32)
}

fn params(spec: &AttentionSpec, has_mask: bool, own: usize) -> Params {
    Params {
        bh: spec.batch_heads as u32,
        t: spec.seq as u32,
        heads: spec.heads as u32,
        causal: spec.causal as u32,
        has_mask: has_mask as u32,
        tiles: spec.seq.div_ceil(own) as u32,
        scale: spec.scale(),
        _pad: 0,
    }
}

/// The mask to bind: the caller's (checked), or a 1-element stand-in that
/// the shader never reads.
fn mask_arg(
    gpu: &Gpu,
    op: &str,
    spec: &AttentionSpec,
    key_mask: Option<&Tensor>,
) -> Result<Tensor> {
    match key_mask {
        Some(m) => {
            if !matches!(m.dtype(), DType::I32 | DType::U32) {
                bail!(
                    "{op}: key_mask is {} {:?}, expected i32 or u32 [B, T] = [{}, {}]",
                    m.dtype().name(),
                    m.shape(),
                    spec.batch,
                    spec.seq
                );
            }
            check_numel(op, "key_mask", m, spec.batch * spec.seq)?;
            Ok(m.clone())
        }
        None => gpu.empty(&[1], DType::U32),
    }
}

/// Fails if an output shares its buffer with any other argument.
fn check_no_alias(op: &str, outputs: &[(&str, &Tensor)], all: &[(&str, &Tensor)]) -> Result<()> {
    for (on, o) in outputs {
        for (n, t) in all {
            if on != n && o.shares_storage(t) {
                bail!("{op}: {on} shares its buffer with {n}; use separate tensors");
            }
        }
    }
    Ok(())
}

fn owned_grid(gpu: &Gpu, spec: &AttentionSpec, own: usize) -> Result<[u32; 3]> {
    let groups = spec.batch_heads * spec.seq.div_ceil(own);
    let groups = check_u32("attention", "workgroup count", groups)?;
    Ok(grid_1d(
        groups,
        gpu.limits().max_compute_workgroups_per_dimension,
    ))
}

/// o = softmax(q·kᵀ/√D + mask)·v per head, and lse (kept for the backward).
/// Overwrites `o` and `lse`. One dispatch.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    gpu: &Gpu,
    spec: &AttentionSpec,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_mask: Option<&Tensor>,
    o: &Tensor,
    lse: &Tensor,
) -> Result<Vec<Dispatch>> {
    let op = "attention_forward";
    spec.check(op)?;
    check_f32(op, &[q, k, v, o, lse])?;
    let n = spec.batch_heads * spec.seq * spec.head_dim;
    for (what, t) in [("q", q), ("k", k), ("v", v), ("o", o)] {
        check_numel(op, what, t, n)?;
    }
    check_numel(op, "lse", lse, spec.batch_heads * spec.seq)?;
    let mask = mask_arg(gpu, op, spec, key_mask)?;
    check_no_alias(
        op,
        &[("o", o), ("lse", lse)],
        &[
            ("q", q),
            ("k", k),
            ("v", v),
            ("key_mask", &mask),
            ("o", o),
            ("lse", lse),
        ],
    )?;
    let (t, _) = tiles(spec.head_dim);
    let p = params(spec, key_mask.is_some(), t.own);
    let d = gpu.dispatch(
        &kernel("forward", spec.head_dim, t),
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(q),
            Arg::Read(k),
            Arg::Read(v),
            Arg::Read(&mask),
            Arg::ReadWrite(o),
            Arg::ReadWrite(lse),
        ],
        owned_grid(gpu, spec, t.own)?,
    )?;
    Ok(vec![d.keep(mask)])
}

/// dq, dk, dv of the forward above for the output gradient `d_o`, from the
/// forward's `o` and `lse` (probabilities are recomputed, never stored).
/// Overwrites `dq`, `dk`, `dv`. Three dispatches: Δ = rowsum(dO ⊙ O) (with
/// lse, into a scratch buffer kept alive by the dispatches), dK and dV over
/// key tiles, dQ over query tiles.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    gpu: &Gpu,
    spec: &AttentionSpec,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &Tensor,
    lse: &Tensor,
    d_o: &Tensor,
    key_mask: Option<&Tensor>,
    dq: &Tensor,
    dk: &Tensor,
    dv: &Tensor,
) -> Result<Vec<Dispatch>> {
    let op = "attention_backward";
    spec.check(op)?;
    check_f32(op, &[q, k, v, o, lse, d_o, dq, dk, dv])?;
    let n = spec.batch_heads * spec.seq * spec.head_dim;
    for (what, t) in [
        ("q", q),
        ("k", k),
        ("v", v),
        ("o", o),
        ("d_o", d_o),
        ("dq", dq),
        ("dk", dk),
        ("dv", dv),
    ] {
        check_numel(op, what, t, n)?;
    }
    let rows = spec.batch_heads * spec.seq;
    check_numel(op, "lse", lse, rows)?;
    let mask = mask_arg(gpu, op, spec, key_mask)?;
    check_no_alias(
        op,
        &[("dq", dq), ("dk", dk), ("dv", dv)],
        &[
            ("q", q),
            ("k", k),
            ("v", v),
            ("o", o),
            ("lse", lse),
            ("d_o", d_o),
            ("key_mask", &mask),
            ("dq", dq),
            ("dk", dk),
            ("dv", dv),
        ],
    )?;
    let (_, t) = tiles(spec.head_dim);
    let p = params(spec, key_mask.is_some(), t.own);
    let uniform = bytemuck::bytes_of(&p);
    // (lse, Δ) interleaved per row: one binding instead of two keeps the
    // dK/dV pass at 8 storage buffers.
    let stats = gpu.empty(&[rows * 2], DType::F32)?;
    let max_dim = gpu.limits().max_compute_workgroups_per_dimension;
    let delta = gpu.dispatch(
        &kernel("bwd_delta", spec.head_dim, t),
        &[
            Arg::Uniform(uniform),
            Arg::Read(o),
            Arg::Read(d_o),
            Arg::Read(lse),
            Arg::ReadWrite(&stats),
        ],
        grid_1d((rows as u32).div_ceil(WG as u32), max_dim),
    )?;
    let grid = owned_grid(gpu, spec, t.own)?;
    let dkdv = gpu.dispatch(
        &kernel("bwd_dkdv", spec.head_dim, t),
        &[
            Arg::Uniform(uniform),
            Arg::Read(q),
            Arg::Read(k),
            Arg::Read(v),
            Arg::Read(&mask),
            Arg::Read(d_o),
            Arg::Read(&stats),
            Arg::ReadWrite(dk),
            Arg::ReadWrite(dv),
        ],
        grid,
    )?;
    let dqd = gpu.dispatch(
        &kernel("bwd_dq", spec.head_dim, t),
        &[
            Arg::Uniform(uniform),
            Arg::Read(q),
            Arg::Read(k),
            Arg::Read(v),
            Arg::Read(&mask),
            Arg::Read(d_o),
            Arg::Read(&stats),
            Arg::ReadWrite(dq),
        ],
        grid,
    )?;
    Ok(vec![
        delta.keep(stats.clone()),
        dkdv.keep(stats.clone()).keep(mask.clone()),
        dqd.keep(stats).keep(mask),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_head_dim_fits_the_default_limits() {
        for d in 1..=MAX_HEAD_DIM {
            let (f, b) = tiles(d);
            for (pass, t) in [
                (Pass::Forward, f),
                (Pass::BackwardDkDv, b),
                (Pass::BackwardDq, b),
            ] {
                let bytes = workgroup_bytes(pass, d, t);
                assert!(bytes <= WORKGROUP_BYTES, "{pass:?} d={d} {t:?}: {bytes} B");
                assert_eq!(WG % t.own, 0, "own rows must divide the workgroup");
                assert!(
                    d.div_ceil(WG / t.own) <= MAX_COLS,
                    "{pass:?} d={d}: columns"
                );
            }
        }
    }
}
