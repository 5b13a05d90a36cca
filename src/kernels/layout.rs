//! Layout changes (`shaders/layout.wgsl`): one strided-copy kernel, and the
//! permute, slice, place (the slice's transpose) and patchify calls built on
//! it. Each is one dispatch over f32 or f16 tensors; with `accumulate` the
//! kernel adds into the destination instead of overwriting it (a gradient
//! that already holds a contribution).

use anyhow::{bail, ensure, Result};
use bytemuck::{Pod, Zeroable};

use super::{check_float, check_u32};
use crate::runtime::{grid_1d, numel, Arg, Dispatch, Gpu, Kernel, Tensor};

const WG: u32 = 256;
/// Most dimensions a strided copy walks.
pub const MAX_RANK: usize = 6;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    src_off: u32,
    dst_off: u32,
    accumulate: u32,
    shape: [u32; 8],
    src_stride: [u32; 8],
    dst_stride: [u32; 8],
}

/// A strided copy: walk `shape` (row-major); the element at multi-index q
/// comes from `src[src_offset + Σ q·src_strides]` and goes to
/// `dst[dst_offset + Σ q·dst_strides]` (strides in elements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Strided {
    pub shape: Vec<usize>,
    pub src_strides: Vec<usize>,
    pub src_offset: usize,
    pub dst_strides: Vec<usize>,
    pub dst_offset: usize,
}

/// Row-major strides of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// Last element touched + 1 (0 for an empty index space).
fn extent(shape: &[usize], strides: &[usize], offset: usize) -> usize {
    if shape.contains(&0) {
        return 0;
    }
    offset
        + shape
            .iter()
            .zip(strides)
            .map(|(n, s)| (n - 1) * s)
            .sum::<usize>()
        + 1
}

/// True when no two multi-indices map to one element: sorted by stride,
/// each dimension (of size > 1) steps past the whole span of the previous.
fn one_to_one(shape: &[usize], strides: &[usize]) -> bool {
    let mut dims: Vec<(usize, usize)> = strides
        .iter()
        .zip(shape)
        .filter(|(_, n)| **n > 1)
        .map(|(s, n)| (*s, *n))
        .collect();
    dims.sort_unstable();
    let mut span = 1; // elements covered by the dimensions so far
    for (s, n) in dims {
        if s < span {
            return false;
        }
        span += s * (n - 1);
    }
    true
}

/// The strided copy `s` from `src` into `dst` (`+=` with `accumulate`). Both
/// ranges must lie inside their tensors and the destination map must be
/// one-to-one (each output element written once). One dispatch.
pub fn copy_strided(
    gpu: &Gpu,
    src: &Tensor,
    dst: &Tensor,
    s: &Strided,
    accumulate: bool,
) -> Result<Dispatch> {
    const OP: &str = "copy_strided";
    let elem = check_float(OP, &[src, dst])?;
    let r = s.shape.len();
    ensure!(
        r <= MAX_RANK,
        "{OP}: {r} dimensions; at most {MAX_RANK} are supported"
    );
    ensure!(
        s.src_strides.len() == r && s.dst_strides.len() == r,
        "{OP}: shape {:?} with {} source and {} destination strides",
        s.shape,
        s.src_strides.len(),
        s.dst_strides.len()
    );
    let n = numel(&s.shape);
    let (se, de) = (
        extent(&s.shape, &s.src_strides, s.src_offset),
        extent(&s.shape, &s.dst_strides, s.dst_offset),
    );
    ensure!(
        se <= src.numel(),
        "{OP}: the source range (up to element {se}) runs past src {:?}",
        src.shape()
    );
    ensure!(
        de <= dst.numel(),
        "{OP}: the destination range (up to element {de}) runs past dst {:?}",
        dst.shape()
    );
    ensure!(
        one_to_one(&s.shape, &s.dst_strides),
        "{OP}: destination strides {:?} over {:?} write some element twice",
        s.dst_strides,
        s.shape
    );
    check_u32(OP, "elements", n.max(se).max(de))?;
    let mut p = Params {
        n: n as u32,
        src_off: s.src_offset as u32,
        dst_off: s.dst_offset as u32,
        accumulate: accumulate as u32,
        shape: [1; 8],
        src_stride: [0; 8],
        dst_stride: [0; 8],
    };
    for d in 0..r {
        let slot = MAX_RANK - r + d;
        p.shape[slot] = s.shape[d] as u32;
        p.src_stride[slot] = s.src_strides[d] as u32;
        p.dst_stride[slot] = s.dst_strides[d] as u32;
    }
    let groups = (n as u32).div_ceil(WG);
    gpu.dispatch(
        &Kernel::new("layout", "copy").constant("WG", WG).elem(elem),
        &[
            Arg::Uniform(bytemuck::bytes_of(&p)),
            Arg::Read(src),
            Arg::ReadWrite(dst),
        ],
        grid_1d(groups, gpu.limits().max_compute_workgroups_per_dimension),
    )
}

/// Checks that `perm` is a permutation of 0..rank (rank ≤ 6).
pub fn check_perm(op: &str, perm: &[usize], rank: usize) -> Result<()> {
    ensure!(
        perm.len() == rank,
        "{op}: permutation {perm:?} has {} axes, the tensor {rank}",
        perm.len()
    );
    ensure!(
        rank <= MAX_RANK,
        "{op}: {rank} dimensions; at most {MAX_RANK} are supported"
    );
    let mut seen = vec![false; rank];
    for &a in perm {
        ensure!(
            a < rank && !seen[a],
            "{op}: {perm:?} is not a permutation of 0..{rank}"
        );
        seen[a] = true;
    }
    Ok(())
}

/// The inverse permutation.
pub fn inverse_perm(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &a) in perm.iter().enumerate() {
        inv[a] = i;
    }
    inv
}

/// out = x with its axes permuted: out.shape[i] = x.shape[perm[i]] (`+=`
/// with `accumulate`). One dispatch.
pub fn permute(
    gpu: &Gpu,
    x: &Tensor,
    perm: &[usize],
    out: &Tensor,
    accumulate: bool,
) -> Result<Dispatch> {
    const OP: &str = "permute";
    check_perm(OP, perm, x.shape().len())?;
    let shape: Vec<usize> = perm.iter().map(|&a| x.shape()[a]).collect();
    ensure!(
        out.shape() == shape,
        "{OP}: out has shape {:?}, expected {shape:?} (x {:?} permuted by {perm:?})",
        out.shape(),
        x.shape()
    );
    let xs = contiguous_strides(x.shape());
    let s = Strided {
        src_strides: perm.iter().map(|&a| xs[a]).collect(),
        src_offset: 0,
        dst_strides: contiguous_strides(&shape),
        dst_offset: 0,
        shape,
    };
    copy_strided(gpu, x, out, &s, accumulate)
}

/// The strided map between a whole tensor of shape `part` and the region
/// [start, start + part[dim]) along `dim` of a tensor of shape `whole`
/// (same rank, every other dimension equal): (part strides, whole strides,
/// offset into whole).
pub fn region(
    op: &str,
    whole: &[usize],
    part: &[usize],
    dim: usize,
    start: usize,
) -> Result<Strided> {
    ensure!(
        dim < whole.len(),
        "{op}: dimension {dim} of a {}-dimensional tensor",
        whole.len()
    );
    ensure!(
        whole.len() <= MAX_RANK,
        "{op}: {} dimensions; at most {MAX_RANK} are supported",
        whole.len()
    );
    let same =
        part.len() == whole.len() && (0..whole.len()).all(|d| d == dim || part[d] == whole[d]);
    if !same || start + part[dim] > whole[dim] {
        bail!("{op}: a {part:?} part cannot sit at {start} along dimension {dim} of {whole:?}");
    }
    let ws = contiguous_strides(whole);
    Ok(Strided {
        shape: part.to_vec(),
        src_strides: contiguous_strides(part),
        src_offset: 0,
        dst_offset: start * ws[dim],
        dst_strides: ws,
    })
}

/// The same map read the other way (from the region into the part).
fn swapped(s: Strided) -> Strided {
    Strided {
        shape: s.shape,
        src_strides: s.dst_strides,
        src_offset: s.dst_offset,
        dst_strides: s.src_strides,
        dst_offset: s.src_offset,
    }
}

/// out = x[.., start .. start + out.shape[dim], ..] along `dim` (`+=` with
/// `accumulate`). One dispatch.
pub fn slice(
    gpu: &Gpu,
    x: &Tensor,
    dim: usize,
    start: usize,
    out: &Tensor,
    accumulate: bool,
) -> Result<Dispatch> {
    let s = region("slice", x.shape(), out.shape(), dim, start)?;
    copy_strided(gpu, x, out, &swapped(s), accumulate)
}

/// dst[.., start .. start + src.shape[dim], ..] = src along `dim` (`+=` with
/// `accumulate`); the rest of `dst` is left alone. The transpose of
/// [`slice`]: a concat's forward, a slice's backward. One dispatch.
pub fn place(
    gpu: &Gpu,
    src: &Tensor,
    dim: usize,
    start: usize,
    dst: &Tensor,
    accumulate: bool,
) -> Result<Dispatch> {
    let s = region("place", dst.shape(), src.shape(), dim, start)?;
    copy_strided(gpu, src, dst, &s, accumulate)
}

/// (B, C, H, W) of an NCHW image batch cut into p×p patches, checked.
pub fn patch_dims(op: &str, x: &[usize], p: usize) -> Result<[usize; 4]> {
    let [b, c, h, w] = *x else {
        bail!("{op}: images have shape {x:?}, expected [B, C, H, W]");
    };
    ensure!(p > 0, "{op}: the patch size must be at least 1");
    ensure!(
        b > 0 && c > 0 && h > 0 && w > 0 && h % p == 0 && w % p == 0,
        "{op}: images {x:?} cannot be cut into {p}×{p} patches: H = {h} and W = {w} must be \
         positive multiples of {p}"
    );
    Ok([b, c, h, w])
}

/// The patch rows' shape [B, N, C·p·p] for images `x` [B, C, H, W].
pub fn patch_shape(op: &str, x: &[usize], p: usize) -> Result<Vec<usize>> {
    let [b, c, h, w] = patch_dims(op, x, p)?;
    Ok(vec![b, (h / p) * (w / p), c * p * p])
}

/// The map from patch rows (index space [B, H/p, W/p, C, p, p], contiguous:
/// [B, N, C·p·p]) to the images' elements.
fn patch_map(b: usize, c: usize, h: usize, w: usize, p: usize) -> Strided {
    let shape = vec![b, h / p, w / p, c, p, p];
    Strided {
        src_strides: vec![c * h * w, p * w, p, h * w, w, 1],
        src_offset: 0,
        dst_strides: contiguous_strides(&shape),
        dst_offset: 0,
        shape,
    }
}

/// Cuts NCHW images `x` [B, C, H, W] into rows of p×p patches, `out` [B, N,
/// C·p·p] with N = (H/p)·(W/p) patches in row-major order, each row ordered
/// (c, ky, kx) as PyTorch flattens a Conv2d weight [out, C, p, p]: a
/// stride-p, size-p convolution is `patchify` then a matmul with the weight
/// seen as [out, C·p·p] (transposed). `+=` with `accumulate`. One dispatch.
pub fn patchify(
    gpu: &Gpu,
    x: &Tensor,
    p: usize,
    out: &Tensor,
    accumulate: bool,
) -> Result<Dispatch> {
    const OP: &str = "patchify";
    let [b, c, h, w] = patch_dims(OP, x.shape(), p)?;
    let want = patch_shape(OP, x.shape(), p)?;
    ensure!(
        out.shape() == want,
        "{OP}: out has shape {:?}, expected {want:?}",
        out.shape()
    );
    copy_strided(gpu, x, out, &patch_map(b, c, h, w, p), accumulate)
}

/// The transpose of [`patchify`]: patch rows `rows` [B, N, C·p·p] back into
/// images `x` [B, C, H, W] (`+=` with `accumulate`). One dispatch.
pub fn unpatchify(
    gpu: &Gpu,
    rows: &Tensor,
    p: usize,
    x: &Tensor,
    accumulate: bool,
) -> Result<Dispatch> {
    const OP: &str = "unpatchify";
    let [b, c, h, w] = patch_dims(OP, x.shape(), p)?;
    let want = patch_shape(OP, x.shape(), p)?;
    ensure!(
        rows.shape() == want,
        "{OP}: rows has shape {:?}, expected {want:?} for images {:?}",
        rows.shape(),
        x.shape()
    );
    copy_strided(gpu, rows, x, &swapped(patch_map(b, c, h, w, p)), accumulate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_and_one_to_one() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[]), Vec::<usize>::new());
        assert!(one_to_one(&[2, 3], &[3, 1]));
        assert!(one_to_one(&[2, 3], &[1, 2]));
        assert!(!one_to_one(&[2, 3], &[2, 1]));
        assert!(!one_to_one(&[2], &[0]));
        assert!(one_to_one(&[1, 5], &[0, 1]));
        // The patch map's image strides are a permutation of a layout.
        let s = patch_map(2, 3, 4, 6, 2);
        assert!(one_to_one(&s.shape, &s.src_strides));
        assert_eq!(extent(&s.shape, &s.src_strides, 0), 2 * 3 * 4 * 6);
        assert_eq!(inverse_perm(&[2, 0, 1]), vec![1, 2, 0]);
    }
}
