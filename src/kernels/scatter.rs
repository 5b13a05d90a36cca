//! Rows by index (`shaders/scatter.wgsl`): gather rows of a table by an id
//! tensor (an embedding lookup), and the deterministic scatter-add that is
//! its transpose (an embedding's backward, a segment sum), without atomics.
//!
//! An id outside `[0, V)` selects nothing: a gather gives a zero row, a
//! scatter drops the row. Nothing is read or written out of bounds.
//!
//! The scatter-add sorts (id, position) pairs once (a bitonic sort of each
//! block of [`BLOCK`] pairs in workgroup memory, then merge passes that place
//! every pair by binary search), then sums each id's rows in increasing
//! position order in chunks of [`chunk_len`] sorted positions. The work is
//! O(N log² N) integer steps for the sort (no O(N²) pass) plus one read of
//! every row; the result does not depend on scheduling: same inputs, same
//! bits. [`reference::scatter::segment_sum_f32`](crate::reference::scatter::segment_sum_f32)
//! reproduces its exact summation order on the CPU.

use anyhow::{bail, ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_dtype, check_float, check_u32, elementwise, MAX_ELEMENTS_PER_THREAD};
use crate::runtime::{grid_1d, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;
/// Pairs one workgroup sorts in workgroup memory (8 KiB).
pub const BLOCK: usize = 1024;
/// Fewest sorted positions per chunk of the segmented sum.
const MIN_CHUNK: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    m: u32,
    v: u32,
    c: u32,
    width: u32,
    chunk: u32,
    accumulate: u32,
    groups: u32,
}

/// Sorted positions per chunk of the segmented sum for `n` ids: at least
/// 64, and enough that there are at most 16384 chunks (one thread loops over
/// a chunk, another over the chunks a long run of one id crosses).
pub fn chunk_len(n: usize) -> usize {
    MIN_CHUNK.max(n.div_ceil(MAX_ELEMENTS_PER_THREAD as usize))
}

/// Dispatches of the sort for `n` ids: one block sort, then one merge pass
/// per doubling of the sorted run width from [`BLOCK`] up to `n`.
pub fn sort_passes(n: usize) -> usize {
    let mut passes = 1;
    let mut w = BLOCK;
    while w < n {
        passes += 1;
        w *= 2;
    }
    passes
}

/// The shape of one call: N = G·M ids in G groups of M, a table of G·V rows
/// of C elements.
#[derive(Clone, Copy, Debug)]
struct Dims {
    g: usize,
    m: usize,
    v: usize,
    c: usize,
}

impl Dims {
    fn n(&self) -> usize {
        self.g * self.m
    }
    fn params(&self, op: &str) -> Result<Params> {
        let n = self.n();
        check_u32(op, "ids × row width", n * self.c)?;
        check_u32(op, "table elements", self.g * self.v * self.c)?;
        ensure!(
            self.g * self.v < u32::MAX as usize,
            "{op}: {} table rows exceed 32-bit ids",
            self.g * self.v
        );
        ensure!(
            n <= 1 << 31,
            "{op}: {n} ids exceed the 2³¹ a sort pass can index"
        );
        Ok(Params {
            n: n as u32,
            m: self.m as u32,
            v: self.v as u32,
            c: self.c as u32,
            width: 0,
            chunk: chunk_len(n) as u32,
            accumulate: 0,
            groups: self.g as u32,
        })
    }
}

fn kernel(entry: &'static str, elem: DType) -> Kernel {
    Kernel::new("scatter", entry).constant("WG", WG).elem(elem)
}

fn grid(gpu: &Gpu, threads: usize) -> [u32; 3] {
    let groups = threads.div_ceil(WG as usize) as u32;
    grid_1d(groups, gpu.limits().max_compute_workgroups_per_dimension)
}

fn check_ids(op: &str, ids: &Tensor) -> Result<usize> {
    check_dtype(op, &[ids], DType::I32).map_err(|e| e.context(format!("{op}: ids must be i32")))?;
    ensure!(
        ids.numel() > 0,
        "{op}: ids has shape {:?}, expected at least one id",
        ids.shape()
    );
    Ok(ids.numel())
}

/// (V, C) of a [V, C] table.
fn table_vc(op: &str, what: &str, t: &Tensor) -> Result<(usize, usize)> {
    match *t.shape() {
        [v, c] if v > 0 && c > 0 => Ok((v, c)),
        _ => bail!(
            "{op}: {what} has shape {:?}, expected [V, C] with V, C ≥ 1",
            t.shape()
        ),
    }
}

/// `rows` must have shape `ids.shape ++ [c]`.
fn check_rows(op: &str, what: &str, rows: &Tensor, ids: &Tensor, c: usize) -> Result<()> {
    let mut want = ids.shape().to_vec();
    want.push(c);
    ensure!(
        rows.shape() == want,
        "{op}: {what} has shape {:?}, expected {want:?} (the ids' shape {:?} and a row of {c})",
        rows.shape(),
        ids.shape()
    );
    Ok(())
}

/// out[..., :] = table[ids[...], :] (or `+=` with `accumulate`); a zero row
/// (nothing added) for an id outside [0, V).
///
/// `ids` i32 of any shape S, `table` [V, C] f32 or f16, `out` S ++ [C] of the
/// table's type. One dispatch.
pub fn gather_rows(
    gpu: &Gpu,
    ids: &Tensor,
    table: &Tensor,
    out: &Tensor,
    accumulate: bool,
) -> Result<Dispatch> {
    const OP: &str = "gather_rows";
    let n = check_ids(OP, ids)?;
    let elem = check_float(OP, &[table, out])?;
    let (v, c) = table_vc(OP, "table", table)?;
    check_rows(OP, "out", out, ids, c)?;
    let d = Dims { g: 1, m: n, v, c };
    gather(gpu, OP, d, elem, ids, table, out, accumulate)
}

/// One row per group: out[g, m, :] = table[g, ids[g, m], :] (or `+=`), a
/// zero row for an id outside [0, V). `ids` [G, M] i32, `table` [G, V, C],
/// `out` [G, M, C]. One dispatch. (Gathering the row at position idx[b] of
/// each sequence of x [B, T, C] is G = B, M = 1, V = T.)
pub fn gather_rows_grouped(
    gpu: &Gpu,
    ids: &Tensor,
    table: &Tensor,
    out: &Tensor,
    accumulate: bool,
) -> Result<Dispatch> {
    const OP: &str = "gather_rows_grouped";
    check_ids(OP, ids)?;
    let elem = check_float(OP, &[table, out])?;
    let d = grouped_dims(OP, ids, table, "table", out, "out")?;
    gather(gpu, OP, d, elem, ids, table, out, accumulate)
}

/// Checks ids [G, M], table [G, V, C], rows [G, M, C].
fn grouped_dims(
    op: &str,
    ids: &Tensor,
    table: &Tensor,
    table_name: &str,
    rows: &Tensor,
    rows_name: &str,
) -> Result<Dims> {
    let [g, m] = *ids.shape() else {
        bail!("{op}: ids has shape {:?}, expected [G, M]", ids.shape());
    };
    let [g2, v, c] = *table.shape() else {
        bail!(
            "{op}: {table_name} has shape {:?}, expected [G, V, C]",
            table.shape()
        );
    };
    ensure!(
        g2 == g && v > 0 && c > 0,
        "{op}: {table_name} has shape {:?}, expected [{g}, V, C] with V, C ≥ 1 (G from ids {:?})",
        table.shape(),
        ids.shape()
    );
    ensure!(
        rows.shape() == [g, m, c],
        "{op}: {rows_name} has shape {:?}, expected {:?}",
        rows.shape(),
        [g, m, c]
    );
    Ok(Dims { g, m, v, c })
}

#[allow(clippy::too_many_arguments)]
fn gather(
    gpu: &Gpu,
    op: &str,
    d: Dims,
    elem: DType,
    ids: &Tensor,
    table: &Tensor,
    out: &Tensor,
    accumulate: bool,
) -> Result<Dispatch> {
    let mut p = d.params(op)?;
    p.accumulate = accumulate as u32;
    gpu.dispatch(
        &kernel("gather", elem),
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(ids),
            Arg::Read(table),
            Arg::ReadWrite(out),
        ],
        grid(gpu, d.n() * d.c),
    )
}

/// The transpose of [`gather_rows_grouped`] for few ids per group:
/// dst[g, v, :] = Σ_m src[g, m, :] over the m with ids[g, m] = v, in
/// increasing m (or `+=` with `accumulate`; rows no id selects are then left
/// alone, else zeroed). One thread per element of `dst` loops over the M ids
/// of its group, so M ≤ 16384; for many ids per row use
/// [`scatter_add_rows`]. `ids` [G, M] i32, `src` [G, M, C], `dst` [G, V, C].
/// One dispatch.
pub fn put_rows_grouped(
    gpu: &Gpu,
    ids: &Tensor,
    src: &Tensor,
    dst: &Tensor,
    accumulate: bool,
) -> Result<Dispatch> {
    const OP: &str = "put_rows_grouped";
    check_ids(OP, ids)?;
    let elem = check_float(OP, &[src, dst])?;
    let d = grouped_dims(OP, ids, dst, "dst", src, "src")?;
    ensure!(
        d.m <= MAX_ELEMENTS_PER_THREAD as usize,
        "{OP}: {} ids per group; at most {MAX_ELEMENTS_PER_THREAD} (use scatter_add_rows)",
        d.m
    );
    let mut p = d.params(OP)?;
    p.accumulate = accumulate as u32;
    gpu.dispatch(
        &kernel("put", elem),
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(ids),
            Arg::Read(src),
            Arg::ReadWrite(dst),
        ],
        grid(gpu, d.g * d.v * d.c),
    )
}

/// Sorts the (id, position) pairs of `ids` (i32, any shape, N ids) by id,
/// then position; an id outside [0, V) sorts last with the id u32::MAX.
/// Returns the pairs tensor [N, 2] u32 (valid once the dispatches have run)
/// and the [`sort_passes`]`(N)` dispatches, to submit in order.
pub fn sort_ids(gpu: &Gpu, ids: &Tensor, v: usize) -> Result<(Tensor, Vec<Dispatch>)> {
    const OP: &str = "sort_ids";
    let n = check_ids(OP, ids)?;
    ensure!(v > 0, "{OP}: the id range V must be at least 1");
    sort(
        gpu,
        OP,
        Dims {
            g: 1,
            m: n,
            v,
            c: 1,
        },
        ids,
    )
}

fn sort(gpu: &Gpu, op: &str, d: Dims, ids: &Tensor) -> Result<(Tensor, Vec<Dispatch>)> {
    let n = d.n();
    let p = d.params(op)?;
    let a = gpu.empty(&[n, 2], DType::U32)?;
    let b = gpu.empty(&[n, 2], DType::U32)?;
    let blocks = n.div_ceil(BLOCK) as u32;
    let mut out = vec![gpu
        .dispatch(
            &kernel("sort_block", DType::F32),
            &[
                Arg::Uniform(bytemuck::bytes_of(&p)),
                Arg::Read(ids),
                Arg::ReadWrite(&a),
            ],
            grid_1d(blocks, gpu.limits().max_compute_workgroups_per_dimension),
        )?
        .keep(a.clone())];
    let (mut src, mut dst) = (a, b);
    let mut w = BLOCK;
    while w < n {
        let mut pm = p;
        pm.width = w as u32;
        out.push(
            gpu.dispatch(
                &kernel("merge", DType::F32),
                &[
                    Arg::Uniform(bytemuck::bytes_of(&pm)),
                    Arg::Read(&src),
                    Arg::ReadWrite(&dst),
                ],
                grid(gpu, n),
            )?
            .keep(src.clone())
            .keep(dst.clone()),
        );
        std::mem::swap(&mut src, &mut dst);
        w *= 2;
    }
    Ok((src, out))
}

/// out[key, :] += Σ x[pos, :] over the sorted `pairs` (key, pos) [N, 2] u32
/// (as [`sort_ids`] leaves them; keys u32::MAX are skipped, every other key
/// must be a row of `out`), summed in pair order in chunks of
/// [`chunk_len`]`(N)`. `x` [N, C] (any shape with N·C elements and last
/// dimension C), `out` [R, C]. Two dispatches.
pub fn segment_sum_sorted(
    gpu: &Gpu,
    pairs: &Tensor,
    x: &Tensor,
    out: &Tensor,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "segment_sum_sorted";
    check_dtype(OP, &[pairs], DType::U32)?;
    let elem = check_float(OP, &[x, out])?;
    let [n, 2] = *pairs.shape() else {
        bail!("{OP}: pairs has shape {:?}, expected [N, 2]", pairs.shape());
    };
    let (r, c) = table_vc(OP, "out", out)?;
    ensure!(
        n > 0 && x.numel() == n * c && x.shape().last() == Some(&c),
        "{OP}: x has shape {:?}, expected {n} rows of {c}",
        x.shape()
    );
    reduce(
        gpu,
        OP,
        Dims {
            g: 1,
            m: n,
            v: r,
            c,
        },
        elem,
        pairs,
        x,
        out,
    )
}

#[allow(clippy::too_many_arguments)]
fn reduce(
    gpu: &Gpu,
    op: &str,
    d: Dims,
    elem: DType,
    pairs: &Tensor,
    x: &Tensor,
    out: &Tensor,
) -> Result<Vec<Dispatch>> {
    let n = d.n();
    let p = d.params(op)?;
    let k = chunk_len(n);
    let chunks = n.div_ceil(k);
    ensure!(
        k <= MAX_ELEMENTS_PER_THREAD as usize && chunks <= MAX_ELEMENTS_PER_THREAD as usize,
        "{op}: {n} ids are too many for one segmented sum (at most {})",
        (MAX_ELEMENTS_PER_THREAD as usize).pow(2)
    );
    check_u32(op, "partial sums", 2 * chunks * d.c)?;
    let partial = gpu.empty(&[2 * chunks, d.c], DType::F32)?;
    let pb = bytemuck::bytes_of(&p);
    let pieces = gpu
        .dispatch(
            &kernel("seg_pieces", elem),
            &[
                Arg::Uniform(pb),
                Arg::Read(pairs),
                Arg::Read(x),
                Arg::ReadWrite(&partial),
                Arg::ReadWrite(out),
            ],
            grid(gpu, chunks * d.c),
        )?
        .keep(pairs.clone())
        .keep(partial.clone());
    let spans = gpu
        .dispatch(
            &kernel("seg_spans", elem),
            &[
                Arg::Uniform(pb),
                Arg::Read(pairs),
                Arg::Read(&partial),
                Arg::ReadWrite(out),
            ],
            grid(gpu, chunks * d.c),
        )?
        .keep(pairs.clone())
        .keep(partial);
    Ok(vec![pieces, spans])
}

/// out[v, :] = Σ x[..., :] over the positions whose id is v (or `+=` with
/// `accumulate`), in increasing position order (split at fixed chunk
/// borders); ids outside [0, V) are dropped. The transpose of
/// [`gather_rows`]: an embedding's backward, a segment sum.
///
/// `ids` i32 of any shape S (N ids), `x` S ++ [C], `out` [V, C], f32 or f16.
/// Dispatches, in order: a zero fill (unless `accumulate`), the sort
/// ([`sort_passes`]`(N)`), and two for the sum. Scratch: 4·N u32 and
/// 2·⌈N / chunk_len(N)⌉·C f32, kept alive by the dispatches.
pub fn scatter_add_rows(
    gpu: &Gpu,
    ids: &Tensor,
    x: &Tensor,
    out: &Tensor,
    accumulate: bool,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "scatter_add_rows";
    let n = check_ids(OP, ids)?;
    let elem = check_float(OP, &[x, out])?;
    let (v, c) = table_vc(OP, "out", out)?;
    check_rows(OP, "x", x, ids, c)?;
    let d = Dims { g: 1, m: n, v, c };
    scatter(gpu, OP, d, elem, ids, x, out, accumulate)
}

#[allow(clippy::too_many_arguments)]
fn scatter(
    gpu: &Gpu,
    op: &str,
    d: Dims,
    elem: DType,
    ids: &Tensor,
    x: &Tensor,
    out: &Tensor,
    accumulate: bool,
) -> Result<Vec<Dispatch>> {
    let mut out_d = Vec::new();
    if !accumulate {
        out_d.push(elementwise::fill(gpu, out, 0.0)?);
    }
    let (pairs, sort) = sort(gpu, op, d, ids)?;
    out_d.extend(sort);
    out_d.extend(reduce(gpu, op, d, elem, &pairs, x, out)?);
    Ok(out_d)
}
