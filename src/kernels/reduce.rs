//! Reductions (`shaders/reduce.wgsl`): column sums (bias gradients) and the
//! sum of squares over many tensors (global gradient norm).
//!
//! Every sum is taken in a fixed order (per-thread loops, then fixed
//! workgroup trees, then a second pass over partials), never with atomics,
//! so the same inputs give the same bits on every run. The order depends
//! only on the shapes.

use anyhow::{bail, ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_f32, check_numel, check_u32};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

/// Threads per workgroup (a power of two: tree reductions).
const WG: u32 = 256;
/// col_sum stage 1: columns per workgroup and rows summed per chunk.
const COL_TILE: u32 = 64;
const CHUNK_ROWS: u32 = 128;
/// col_sum: at most this many chunks (rows of the partials array); taller
/// inputs get longer chunks instead.
const MAX_CHUNKS: u32 = 1024;
/// sum_squares stage 1: each thread covers at least this many elements, and a
/// tensor gets at most MAX_PARTIALS workgroups (grid-stride loops beyond).
const ELEMS_PER_THREAD: u32 = 8;
const MAX_PARTIALS: u32 = 1024;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ColParams {
    rows: u32,
    cols: u32,
    chunk_rows: u32,
    chunks: u32,
    tiles: u32,
    accumulate: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SqParams {
    n: u32,
    offset: u32,
    _pad: [u32; 2],
}

fn kernel(entry: &'static str) -> Kernel {
    Kernel::new("reduce", entry).constant("WG", WG)
}

fn max_dim(gpu: &Gpu) -> u32 {
    gpu.limits().max_compute_workgroups_per_dimension
}

/// Fails if an output shares its allocation with an input: WebGPU forbids
/// binding one buffer both read-only and read-write in a dispatch.
pub(crate) fn check_distinct(
    op: &str,
    out: (&str, &Tensor),
    ins: &[(&str, &Tensor)],
) -> Result<()> {
    for (name, t) in ins {
        if out.1.shares_storage(t) {
            bail!(
                "{op}: {} and {name} share one GPU buffer; WebGPU cannot bind a buffer as both \
                 read-only and read-write in one dispatch",
                out.0
            );
        }
    }
    Ok(())
}

/// Checks a [rows, cols] view of `x`; returns (rows, cols) as u32.
fn check_matrix(op: &str, x: &Tensor, rows: usize, cols: usize) -> Result<(u32, u32)> {
    ensure!(
        rows >= 1 && cols >= 1,
        "{op}: rows and cols must be at least 1 (got rows {rows}, cols {cols})"
    );
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| anyhow::anyhow!("{op}: rows·cols overflows"))?;
    check_numel(op, "x", x, n)?;
    check_u32(op, "rows·cols", n)?;
    Ok((rows as u32, cols as u32))
}

/// Column sums: `out[j] = Σ_i x[i, j]` (or `out[j] += …` when `accumulate`)
/// over a row-major [rows, cols] view of `x`, e.g. the bias gradient from the
/// output gradient [B·T, C]. `out` holds `cols` elements.
///
/// Stage 1 splits the rows into chunks of `chunk_rows`; one workgroup sums one
/// chunk for 64 columns into `partials[chunk, col]`. Stage 2 adds the chunks in
/// order per column. With a single chunk, stage 1 writes `out` directly.
pub fn col_sum(
    gpu: &Gpu,
    x: &Tensor,
    rows: usize,
    cols: usize,
    out: &Tensor,
    accumulate: bool,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "col_sum";
    check_f32(OP, &[x, out])?;
    let (rows, cols) = check_matrix(OP, x, rows, cols)?;
    check_numel(OP, "out", out, cols as usize)?;
    check_distinct(OP, ("out", out), &[("x", x)])?;

    let chunks = rows.div_ceil(CHUNK_ROWS).min(MAX_CHUNKS);
    // Chunk length: a multiple of the 4 row lanes, so lanes stay aligned.
    let chunk_rows = rows.div_ceil(chunks).div_ceil(4) * 4;
    let chunks = rows.div_ceil(chunk_rows);
    let tiles = cols.div_ceil(COL_TILE);
    let groups = tiles
        .checked_mul(chunks)
        .ok_or_else(|| anyhow::anyhow!("{OP}: too many workgroups"))?;
    let mut p = ColParams {
        rows,
        cols,
        chunk_rows,
        chunks,
        tiles,
        accumulate: accumulate as u32,
        _pad: [0; 2],
    };
    let stage1 = |p: &ColParams, dst: &Tensor| {
        gpu.dispatch(
            &kernel("col_sum_chunks"),
            &[
                Arg::Uniform(bytemuck::bytes_of(p)),
                Arg::Read(x),
                Arg::ReadWrite(dst),
            ],
            grid_1d(groups, max_dim(gpu)),
        )
    };
    if chunks == 1 {
        return Ok(vec![stage1(&p, out)?]);
    }
    let partials = gpu.empty(&[chunks as usize, cols as usize], DType::F32)?;
    p.accumulate = 0;
    let first = stage1(&p, &partials)?.keep(partials.clone());
    p.accumulate = accumulate as u32;
    let second = gpu
        .dispatch(
            &kernel("col_sum_final"),
            &[
                Arg::Uniform(bytemuck::bytes_of(&p)),
                Arg::Read(&partials),
                Arg::ReadWrite(out),
            ],
            grid_1d(cols.div_ceil(WG), max_dim(gpu)),
        )?
        .keep(partials);
    Ok(vec![first, second])
}

/// Stage-1 workgroups for a tensor of `n` elements in sum_squares.
fn sumsq_groups(n: u32) -> u32 {
    n.div_ceil(WG * ELEMS_PER_THREAD).min(MAX_PARTIALS)
}

/// `out[0] = Σ_t Σ_i xs[t][i]²` over one or more f32 tensors of any shapes
/// (the squared global gradient norm); `out` holds one element.
///
/// One stage-1 dispatch per tensor binds only that tensor (there may be
/// hundreds, more than a dispatch may bind) and writes its workgroups' sums
/// into its own slots of a shared partials buffer (at most 1024 per tensor,
/// grid-stride loops beyond); one final workgroup adds all partials in order.
pub fn sum_squares(gpu: &Gpu, xs: &[&Tensor], out: &Tensor) -> Result<Vec<Dispatch>> {
    const OP: &str = "sum_squares";
    ensure!(!xs.is_empty(), "{OP}: needs at least one tensor");
    check_f32(OP, xs)?;
    check_f32(OP, &[out])?;
    check_numel(OP, "out", out, 1)?;
    let mut slots = Vec::with_capacity(xs.len());
    let mut total: u32 = 0;
    for (t, x) in xs.iter().enumerate() {
        let n = check_u32(OP, &format!("tensor {t}'s element count"), x.numel())?;
        let g = sumsq_groups(n);
        slots.push((n, total, g));
        total = total
            .checked_add(g)
            .ok_or_else(|| anyhow::anyhow!("{OP}: too many partial sums"))?;
    }
    let partials = gpu.empty(&[total.max(1) as usize], DType::F32)?;
    let mut ds = Vec::with_capacity(xs.len() + 1);
    for (x, &(n, offset, g)) in xs.iter().zip(&slots) {
        if g == 0 {
            continue; // an empty tensor adds nothing
        }
        let p = SqParams {
            n,
            offset,
            _pad: [0; 2],
        };
        let d = gpu.dispatch(
            &kernel("sum_squares_partials"),
            &[
                Arg::Uniform(bytemuck::bytes_of(&p)),
                Arg::Read(x),
                Arg::ReadWrite(&partials),
            ],
            [g, 1, 1],
        )?;
        ds.push(d.keep(partials.clone()));
    }
    let p = SqParams {
        n: total,
        offset: 0,
        _pad: [0; 2],
    };
    let d = gpu.dispatch(
        &kernel("sum_squares_final"),
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(&partials),
            Arg::ReadWrite(out),
        ],
        [1, 1, 1],
    )?;
    ds.push(d.keep(partials));
    Ok(ds)
}
