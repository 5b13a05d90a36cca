//! References for `shaders/layout.wgsl`: permute, slice, concat and
//! patchify written as plain index loops (independent of the kernel's
//! strided map), over any element type; and a direct convolution, to show
//! that patchify + matmul is a stride-p, size-p convolution.

/// Row-major multi-index of flat index `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut q = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        q[d] = i % shape[d];
        i /= shape[d];
    }
    q
}

fn ravel(q: &[usize], shape: &[usize]) -> usize {
    q.iter().zip(shape).fold(0, |acc, (i, n)| acc * n + i)
}

/// out[q] = x[q permuted back]: out.shape[i] = shape[perm[i]].
pub fn permute<T: Copy>(x: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
    let n: usize = out_shape.iter().product();
    (0..n)
        .map(|i| {
            let q = unravel(i, &out_shape);
            let mut src = vec![0; shape.len()];
            for (k, &a) in perm.iter().enumerate() {
                src[a] = q[k];
            }
            x[ravel(&src, shape)]
        })
        .collect()
}

/// x[.., start .. start + len, ..] along `dim`.
pub fn slice<T: Copy>(x: &[T], shape: &[usize], dim: usize, start: usize, len: usize) -> Vec<T> {
    let mut out_shape = shape.to_vec();
    out_shape[dim] = len;
    let n: usize = out_shape.iter().product();
    (0..n)
        .map(|i| {
            let mut q = unravel(i, &out_shape);
            q[dim] += start;
            x[ravel(&q, shape)]
        })
        .collect()
}

/// The tensors `parts` (with shapes `shapes`, equal but along `dim`) joined
/// along `dim`.
pub fn concat<T: Copy>(parts: &[&[T]], shapes: &[Vec<usize>], dim: usize) -> Vec<T> {
    let mut out_shape = shapes[0].clone();
    out_shape[dim] = shapes.iter().map(|s| s[dim]).sum();
    let n: usize = out_shape.iter().product();
    (0..n)
        .map(|i| {
            let mut q = unravel(i, &out_shape);
            let mut k = 0;
            while q[dim] >= shapes[k][dim] {
                q[dim] -= shapes[k][dim];
                k += 1;
            }
            parts[k][ravel(&q, &shapes[k])]
        })
        .collect()
}

/// NCHW images [B, C, H, W] as rows of p×p patches [B, N, C·p·p]: row
/// (py·(W/p) + px) of image b holds x[b, c, py·p + ky, px·p + kx] at
/// column (c·p + ky)·p + kx.
pub fn patchify<T: Copy>(x: &[T], shape: [usize; 4], p: usize) -> Vec<T> {
    let [b, c, h, w] = shape;
    let (hp, wp) = (h / p, w / p);
    let cols = c * p * p;
    let mut out = Vec::with_capacity(x.len());
    for bi in 0..b {
        for py in 0..hp {
            for px in 0..wp {
                for col in 0..cols {
                    let (ci, ky, kx) = (col / (p * p), (col / p) % p, col % p);
                    out.push(x[((bi * c + ci) * h + py * p + ky) * w + px * p + kx]);
                }
            }
        }
    }
    out
}

/// The inverse of [`patchify`] (every pixel lies in exactly one patch).
pub fn unpatchify<T: Copy + Default>(rows: &[T], shape: [usize; 4], p: usize) -> Vec<T> {
    let [b, c, h, w] = shape;
    let (hp, wp) = (h / p, w / p);
    let cols = c * p * p;
    let mut x = vec![T::default(); rows.len()];
    for bi in 0..b {
        for n in 0..hp * wp {
            let (py, px) = (n / wp, n % wp);
            for col in 0..cols {
                let (ci, ky, kx) = (col / (p * p), (col / p) % p, col % p);
                x[((bi * c + ci) * h + py * p + ky) * w + px * p + kx] =
                    rows[(bi * hp * wp + n) * cols + col];
            }
        }
    }
    x
}

/// A stride-p, size-p 2-D convolution without padding, as
/// `torch.nn.functional.conv2d(x, weight, bias, stride=p)`, in f64: x [B, C,
/// H, W], weight [O, C, p, p], bias [O] → [B, O, H/p, W/p].
pub fn conv2d_patches(
    x: &[f32],
    shape: [usize; 4],
    weight: &[f32],
    bias: &[f32],
    p: usize,
) -> Vec<f64> {
    let [b, c, h, w] = shape;
    let o = bias.len();
    let (hp, wp) = (h / p, w / p);
    let mut out = vec![0.0; b * o * hp * wp];
    for bi in 0..b {
        for oi in 0..o {
            for py in 0..hp {
                for px in 0..wp {
                    let mut acc = bias[oi] as f64;
                    for ci in 0..c {
                        for ky in 0..p {
                            for kx in 0..p {
                                acc += x[((bi * c + ci) * h + py * p + ky) * w + px * p + kx]
                                    as f64
                                    * weight[((oi * c + ci) * p + ky) * p + kx] as f64;
                            }
                        }
                    }
                    out[((bi * o + oi) * hp + py) * wp + px] = acc;
                }
            }
        }
    }
    out
}
