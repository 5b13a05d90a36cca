//! References for `shaders/broadcast.wgsl`, in f64: broadcasting add and
//! multiply, and the sum of a gradient back to an operand's shape.

use crate::runtime::numel;

/// `s` right-aligned to rank `r`.
fn padded(s: &[usize], r: usize) -> Vec<usize> {
    let mut v = vec![1; r - s.len()];
    v.extend_from_slice(s);
    v
}

/// Index into an operand of padded shape `s` for the multi-index `c` of
/// the full shape.
fn index(c: &[usize], s: &[usize]) -> usize {
    let mut i = 0;
    for (d, &size) in s.iter().enumerate() {
        i = i * size + if size == 1 { 0 } else { c[d] };
    }
    i
}

/// Multi-indices of `full` in row-major order.
fn coords(full: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    (0..numel(full)).map(move |mut i| {
        let mut c = vec![0; full.len()];
        for d in (0..full.len()).rev() {
            c[d] = i % full[d];
            i /= full[d];
        }
        c
    })
}

/// The broadcast shape of `a` and `b` (they must broadcast).
pub fn shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    let (pa, pb) = (padded(a, r), padded(b, r));
    pa.iter().zip(&pb).map(|(x, y)| *x.max(y)).collect()
}

/// f(a, b) elementwise with broadcasting; returns the values of the
/// broadcast shape.
pub fn binary(
    a: &[f64],
    a_shape: &[usize],
    b: &[f64],
    b_shape: &[usize],
    f: impl Fn(f64, f64) -> f64,
) -> Vec<f64> {
    let full = shape(a_shape, b_shape);
    let (pa, pb) = (padded(a_shape, full.len()), padded(b_shape, full.len()));
    coords(&full)
        .map(|c| f(a[index(&c, &pa)], b[index(&c, &pb)]))
        .collect()
}

/// Σ dy (· other) over the dimensions where `target` broadcasts to `full`
/// (the shape of dy): the gradient of a broadcast add (other = None) or
/// multiply for the operand of shape `target`.
pub fn reduce_to(
    dy: &[f64],
    full: &[usize],
    target: &[usize],
    other: Option<(&[f64], &[usize])>,
) -> Vec<f64> {
    let pt = padded(target, full.len());
    let mut out = vec![0.0; numel(target)];
    for (i, c) in coords(full).enumerate() {
        let w = match other {
            Some((o, os)) => o[index(&c, &padded(os, full.len()))],
            None => 1.0,
        };
        out[index(&c, &pt)] += dy[i] * w;
    }
    out
}
