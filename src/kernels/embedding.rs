//! Token + position embedding (`shaders/embedding.wgsl`): forward, and a
//! deterministic backward without atomics (d(wte) by the sort-based
//! scatter-add of [`scatter`]).

use anyhow::{bail, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_dtype, check_f32, check_shape, check_u32, scatter};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    t: u32,
    c: u32,
    v: u32,
}

fn kernel(entry: &'static str) -> Kernel {
    Kernel::new("embedding", entry).constant("WG", WG)
}

/// (B, T) of `tokens`, checked to be an i32 [B, T] tensor with B, T ≥ 1.
fn tokens_bt(op: &str, tokens: &Tensor) -> Result<(usize, usize)> {
    check_dtype(op, &[tokens], DType::I32)
        .map_err(|e| e.context(format!("{op}: tokens must be i32 token ids")))?;
    match *tokens.shape() {
        [b, t] if b > 0 && t > 0 => Ok((b, t)),
        _ => bail!(
            "{op}: tokens has shape {:?}, expected [B, T] with B, T ≥ 1",
            tokens.shape()
        ),
    }
}

/// (V, C) of a [V, C] table and (maxT, C) of a [maxT, C] table, checked
/// against each other and against T.
fn tables(op: &str, wte: &Tensor, wpe: &Tensor, t: usize) -> Result<(usize, usize)> {
    check_f32(op, &[wte, wpe])?;
    let [v, c] = *wte.shape() else {
        bail!("{op}: wte has shape {:?}, expected [V, C]", wte.shape());
    };
    if v == 0 || c == 0 {
        bail!("{op}: wte has shape {:?}, expected V, C ≥ 1", wte.shape());
    }
    let [max_t, c2] = *wpe.shape() else {
        bail!("{op}: wpe has shape {:?}, expected [maxT, C]", wpe.shape());
    };
    if c2 != c {
        bail!(
            "{op}: wpe has shape {:?}, expected [maxT, {c}] (C of wte)",
            wpe.shape()
        );
    }
    if t > max_t {
        bail!("{op}: sequence length T = {t} exceeds the {max_t} positions of wpe [maxT, C]");
    }
    Ok((v, c))
}

fn params(op: &str, b: usize, t: usize, c: usize, v: usize) -> Result<Params> {
    let n = b * t;
    check_u32(op, "B·T·C", n * c)?;
    check_u32(op, "V·C", v * c)?;
    Ok(Params {
        n: n as u32,
        t: t as u32,
        c: c as u32,
        v: v as u32,
    })
}

/// out[b, t, :] = wte[tokens[b, t], :] + wpe[t, :].
///
/// `tokens` [B, T] i32, `wte` [V, C], `wpe` [maxT, C] with T ≤ maxT, `out`
/// [B, T, C]. A token outside [0, V) contributes nothing: its row of `out`
/// is wpe[t] alone (the kernel cannot report it; nothing is read out of
/// bounds).
pub fn embedding_forward(
    gpu: &Gpu,
    tokens: &Tensor,
    wte: &Tensor,
    wpe: &Tensor,
    out: &Tensor,
) -> Result<Dispatch> {
    const OP: &str = "embedding_forward";
    let (b, t) = tokens_bt(OP, tokens)?;
    let (v, c) = tables(OP, wte, wpe, t)?;
    check_f32(OP, &[out])?;
    check_shape(OP, "out", out, &[b, t, c])?;
    for (i, it) in [("tokens", tokens), ("wte", wte), ("wpe", wpe)] {
        if out.shares_storage(it) {
            bail!("{OP}: out shares its buffer with {i}; give it its own allocation");
        }
    }
    let p = params(OP, b, t, c, v)?;
    let groups = (p.n * p.c).div_ceil(WG);
    gpu.dispatch(
        &kernel("forward"),
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(tokens),
            Arg::Read(wte),
            Arg::Read(wpe),
            Arg::ReadWrite(out),
        ],
        grid_1d(groups, gpu.limits().max_compute_workgroups_per_dimension),
    )
}

/// Accumulates (+=) the embedding gradients; the caller zeroes `dwte` and
/// `dwpe` first (accumulation lets GPT-2's tied LM head add into `dwte`):
/// dwte[v] += Σ_{(b,t): tokens[b,t] = v} dout[b,t];  dwpe[t] += Σ_b dout[b,t].
///
/// `tokens` [B, T] i32, `dout` [B, T, C], `dwte` [V, C], `dwpe` [maxT, C]
/// with T ≤ maxT (rows t ≥ T of dwpe are left untouched). Tokens outside
/// [0, V) are skipped.
///
/// Deterministic, no atomics: dwte is [`scatter::scatter_add_rows`] (sort
/// the (token, position) pairs once, then sum each token's rows in
/// increasing position order, split at fixed chunk borders), dwpe one
/// thread per (t, c) summing over b in order. Dispatches, in order: the
/// sort ([`scatter::sort_passes`]`(B·T)`), two for the dwte sums, one for
/// dwpe.
pub fn embedding_backward(
    gpu: &Gpu,
    tokens: &Tensor,
    dout: &Tensor,
    dwte: &Tensor,
    dwpe: &Tensor,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "embedding_backward";
    let (b, t) = tokens_bt(OP, tokens)?;
    let (v, c) = tables(OP, dwte, dwpe, t)?;
    check_f32(OP, &[dout])?;
    check_shape(OP, "dout", dout, &[b, t, c])?;
    // A dispatch cannot bind one buffer both read-only and writable.
    for (o, ot) in [("dwte", dwte), ("dwpe", dwpe)] {
        for (i, it) in [("tokens", tokens), ("dout", dout)] {
            if ot.shares_storage(it) {
                bail!("{OP}: {o} shares its buffer with {i}; give it its own allocation");
            }
        }
    }
    let p = params(OP, b, t, c, v)?;
    let mut out = scatter::scatter_add_rows(gpu, tokens, dout, dwte, true)?;
    out.push(gpu.dispatch(
        &kernel("dwpe_sum"),
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(dout),
            Arg::ReadWrite(dwpe),
        ],
        grid_1d(
            (p.t * p.c).div_ceil(WG),
            gpu.limits().max_compute_workgroups_per_dimension,
        ),
    )?);
    Ok(out)
}
