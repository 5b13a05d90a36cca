//! Broadcasting add and multiply (`shaders/broadcast.wgsl`) with numpy's
//! rules (shapes right-aligned, a dimension of size 1 stretches, rank ≤ 6),
//! and the reduction of a gradient back to an operand's shape: a sum over
//! the broadcast dimensions, optionally of a product with the other operand
//! (the gradient of a multiply), in a fixed order (no atomics). f32 or f16
//! storage; arithmetic in f32.

use anyhow::{bail, ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_float, check_u32};
use crate::runtime::{grid_1d, numel, Arg, DType, Dispatch, Gpu, Kernel, Tensor};

/// Most dimensions an operand of a broadcasting op may have.
pub const MAX_RANK: usize = 6;

const WG: u32 = 256;
/// Reduced elements summed by one stage-1 unit (a few hundred per thread on
/// CPU adapters, a few dozen on GPUs); longer reductions are split into
/// chunks whose partials a second pass adds in order.
const CHUNK: usize = 4096;
/// At most this many chunks per target element (the second pass loops over
/// them); longer reductions get longer chunks.
const MAX_CHUNKS: usize = 4096;

/// The binary op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Mul,
}

/// The shape `a` and `b` broadcast to (numpy's rule).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    ensure!(
        a.len() <= MAX_RANK && b.len() <= MAX_RANK,
        "broadcast: shapes {a:?} and {b:?}: at most {MAX_RANK} dimensions are supported"
    );
    let r = a.len().max(b.len());
    let dim = |s: &[usize], d: usize| {
        if d + s.len() >= r {
            s[d + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|d| {
            let (x, y) = (dim(a, d), dim(b, d));
            if x == y || y == 1 {
                Ok(x)
            } else if x == 1 {
                Ok(y)
            } else {
                bail!(
                    "broadcast: shapes {a:?} and {b:?} do not broadcast (dimension {d} of the \
                     right-aligned shapes: {x} vs {y})"
                )
            }
        })
        .collect()
}

/// `s` right-aligned to rank `r` (leading 1s).
fn padded(s: &[usize], r: usize) -> Vec<usize> {
    let mut v = vec![1; r - s.len()];
    v.extend_from_slice(s);
    v
}

/// Fails unless `x` broadcasts to `full` (padded, every dimension equal or 1).
fn check_broadcasts(op: &str, what: &str, x: &[usize], full: &[usize]) -> Result<Vec<usize>> {
    ensure!(
        x.len() <= full.len(),
        "{op}: {what} {x:?} has more dimensions than {full:?}"
    );
    let p = padded(x, full.len());
    for (d, (&a, &f)) in p.iter().zip(full).enumerate() {
        ensure!(
            a == f || a == 1,
            "{op}: {what} {x:?} does not broadcast to {full:?} (dimension {d})"
        );
    }
    Ok(p)
}

/// Dimensions of `full` (size > 1) merged where every operand broadcasts
/// alike: (size, per operand: broadcasts along it).
fn collapse(full: &[usize], ops: &[&[usize]]) -> Vec<(usize, Vec<bool>)> {
    let mut out: Vec<(usize, Vec<bool>)> = Vec::new();
    for (d, &size) in full.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let flags: Vec<bool> = ops.iter().map(|o| o[d] == 1).collect();
        match out.last_mut() {
            Some((s, f)) if *f == flags => *s *= size,
            _ => out.push((size, flags)),
        }
    }
    out
}

/// Element strides over collapsed dims for operand `k` (0 where it broadcasts).
fn strides(dims: &[(usize, Vec<bool>)], k: usize) -> Vec<usize> {
    let mut st = vec![0; dims.len()];
    let mut acc = 1;
    for (i, (size, flags)) in dims.iter().enumerate().rev() {
        if !flags[k] {
            st[i] = acc;
            acc *= size;
        }
    }
    st
}

fn pack(op: &str, v: &[usize]) -> Result<[[u32; 4]; 2]> {
    let mut out = [[0u32; 4]; 2];
    for (i, &x) in v.iter().enumerate() {
        out[i / 4][i % 4] = check_u32(op, "a size or stride", x)?;
    }
    Ok(out)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    rank: u32,
    _pad: [u32; 2],
    dims: [[u32; 4]; 2],
    sa: [[u32; 4]; 2],
    sb: [[u32; 4]; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RParams {
    n_target: u32,
    n_reduce: u32,
    chunk: u32,
    chunks: u32,
    n_kept: u32,
    n_red: u32,
    accumulate: u32,
    _pad: u32,
    kdims: [[u32; 4]; 2],
    ko: [[u32; 4]; 2],
    kb: [[u32; 4]; 2],
    rdims: [[u32; 4]; 2],
    ro: [[u32; 4]; 2],
    rb: [[u32; 4]; 2],
}

fn max_dim(gpu: &Gpu) -> u32 {
    gpu.limits().max_compute_workgroups_per_dimension
}

/// out = a OP b with broadcasting; `out` must have the broadcast shape.
pub fn forward(gpu: &Gpu, op: BinaryOp, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<Dispatch> {
    let name = match op {
        BinaryOp::Add => "broadcast_add",
        BinaryOp::Mul => "broadcast_mul",
    };
    let elem = check_float(name, &[a, b, out])?;
    let full = broadcast_shape(a.shape(), b.shape()).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    ensure!(
        out.shape() == full.as_slice(),
        "{name}: out has shape {:?}, expected {full:?} (a {:?} with b {:?})",
        out.shape(),
        a.shape(),
        b.shape()
    );
    let n = check_u32(name, "element count", out.numel())?;
    let (pa, pb) = (padded(a.shape(), full.len()), padded(b.shape(), full.len()));
    let dims = collapse(&full, &[&pa, &pb]);
    let sizes: Vec<usize> = dims.iter().map(|d| d.0).collect();
    let p = Params {
        n,
        rank: dims.len() as u32,
        _pad: [0; 2],
        dims: pack(name, &sizes)?,
        sa: pack(name, &strides(&dims, 0))?,
        sb: pack(name, &strides(&dims, 1))?,
    };
    let kernel = Kernel::new("broadcast", "forward")
        .constant("WG", WG)
        .constant(
            "OP",
            match op {
                BinaryOp::Add => 0u32,
                BinaryOp::Mul => 1u32,
            },
        )
        .elem(elem);
    gpu.dispatch(
        &kernel,
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(a),
            Arg::Read(b),
            Arg::ReadWrite(out),
        ],
        grid_1d(n.div_ceil(WG), max_dim(gpu)),
    )
}

/// When reducing `full` to `target` is a sum over leading rows of a
/// row-major [rows, cols] matrix (a bias [C] over [N, C], a position table
/// [T, C] over [B, T, C]): Some((rows, cols)), the case
/// [`col_sum`](super::reduce::col_sum) serves.
pub fn suffix_split(full: &[usize], target: &[usize]) -> Option<(usize, usize)> {
    let first = target.iter().position(|&d| d != 1).unwrap_or(target.len());
    let t = &target[first..];
    if t.len() > full.len() || full[full.len() - t.len()..] != *t {
        return None;
    }
    let rows = numel(&full[..full.len() - t.len()]);
    (rows > 1).then_some((rows, numel(t)))
}

/// out (+)= dy summed to `out`'s shape over the dimensions where `out`
/// broadcasts (size 1 or absent), each term multiplied by `other`
/// (broadcast to dy's shape) when given: the gradient of a broadcast add
/// (`other` = None) or multiply (`other` = the other operand) for one
/// operand. `accumulate` adds into `out` instead of overwriting it.
/// One pass when each sum has at most 4096 terms; longer sums are split
/// into chunks, summed by a second pass in order.
pub fn reduce_to(
    gpu: &Gpu,
    dy: &Tensor,
    other: Option<&Tensor>,
    out: &Tensor,
    accumulate: bool,
) -> Result<Vec<Dispatch>> {
    const OP: &str = "broadcast_reduce";
    let elem = match other {
        Some(o) => check_float(OP, &[dy, o, out])?,
        None => check_float(OP, &[dy, out])?,
    };
    let full = dy.shape().to_vec();
    ensure!(
        full.len() <= MAX_RANK,
        "{OP}: dy {full:?} has more than {MAX_RANK} dimensions"
    );
    check_u32(OP, "dy's element count", dy.numel())?;
    let pt = check_broadcasts(OP, "out", out.shape(), &full)?;
    let po = match other {
        Some(o) => check_broadcasts(OP, "other", o.shape(), &full)?,
        None => vec![1; full.len()],
    };
    let dims = collapse(&full, &[&pt, &po]);
    // dy is dense: its stride over a collapsed dim is the product of the
    // sizes inside it.
    let mut so = vec![0; dims.len()];
    let mut acc = 1;
    for (i, (size, _)) in dims.iter().enumerate().rev() {
        so[i] = acc;
        acc *= size;
    }
    let sb = strides(&dims, 1);
    let (mut kd, mut ko, mut kb, mut rd, mut ro, mut rb) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (i, (size, flags)) in dims.iter().enumerate() {
        if flags[0] {
            rd.push(*size);
            ro.push(so[i]);
            rb.push(sb[i]);
        } else {
            kd.push(*size);
            ko.push(so[i]);
            kb.push(sb[i]);
        }
    }
    let n_target = out.numel();
    let n_reduce = numel(&rd);
    if n_target == 0 || n_reduce == 0 {
        return Ok(Vec::new());
    }
    let chunks = n_reduce.div_ceil(CHUNK).min(MAX_CHUNKS);
    let chunk = n_reduce.div_ceil(chunks);
    let chunks = n_reduce.div_ceil(chunk);
    let units = n_target
        .checked_mul(chunks)
        .ok_or_else(|| anyhow::anyhow!("{OP}: too many partial sums"))?;
    check_u32(OP, "partial sums", units)?;
    let tpr = super::row_threads(gpu, chunk as u32, WG);
    let mut p = RParams {
        n_target: n_target as u32,
        n_reduce: n_reduce as u32,
        chunk: chunk as u32,
        chunks: chunks as u32,
        n_kept: kd.len() as u32,
        n_red: rd.len() as u32,
        accumulate: accumulate as u32,
        _pad: 0,
        kdims: pack(OP, &kd)?,
        ko: pack(OP, &ko)?,
        kb: pack(OP, &kb)?,
        rdims: pack(OP, &rd)?,
        ro: pack(OP, &ro)?,
        rb: pack(OP, &rb)?,
    };
    let kernel = |entry: &'static str| {
        Kernel::new("broadcast", entry)
            .constant("WG", WG)
            .constant("TPR", tpr)
            .elem(elem)
    };
    let groups = (units as u32).div_ceil(WG / tpr);
    let stage1 = |p: &RParams, entry: &'static str, dst: &Tensor| {
        let mut args = vec![Arg::Uniform(bytemuck::bytes_of(p)), Arg::Read(dy)];
        args.extend(other.map(Arg::Read));
        args.push(Arg::ReadWrite(dst));
        gpu.dispatch(&kernel(entry), &args, grid_1d(groups, max_dim(gpu)))
    };
    let (out_entry, part_entry) = match other {
        Some(_) => ("reduce_mul_out", "reduce_mul_part"),
        None => ("reduce_sum_out", "reduce_sum_part"),
    };
    if chunks == 1 {
        return Ok(vec![stage1(&p, out_entry, out)?]);
    }
    let partials = gpu.empty(&[units], DType::F32)?;
    let first = stage1(&p, part_entry, &partials)?.keep(partials.clone());
    p.accumulate = accumulate as u32;
    let second = gpu
        .dispatch(
            &kernel("reduce_final"),
            &[
                Arg::Uniform(bytemuck::bytes_of(&p)),
                Arg::Read(&partials),
                Arg::ReadWrite(out),
            ],
            grid_1d((n_target as u32).div_ceil(WG), max_dim(gpu)),
        )?
        .keep(partials);
    Ok(vec![first, second])
}
