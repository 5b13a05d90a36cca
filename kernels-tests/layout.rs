//! layout.wgsl: permute, slice, place and patchify (one strided-copy
//! kernel) against index-loop references, exact (they move values; with
//! accumulate, one f32 addition, checked against the f32 sum); their
//! transposes by finite differences; patchify + matmul against a direct f64
//! convolution; determinism; argument checks.

use crate::common::*;
use kiln::kernels::layout::{self as lay, Strided};
use kiln::kernels::matmul::{matmul, MatmulSpec};
use kiln::reference::layout as r;

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

fn all_perms(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in all_perms(n - 1) {
        for i in 0..n {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

#[test]
fn permute_matches_reference_and_accumulates() {
    let mut rng = Rng::new(81);
    let mut cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![1], vec![0]),
        (vec![7], vec![0]),
        (vec![33, 65], vec![1, 0]),
        (vec![2, 1, 3, 2, 1, 5], vec![5, 3, 0, 2, 4, 1]),
        (vec![3, 2, 2, 2, 2, 3], vec![1, 0, 3, 2, 5, 4]),
    ];
    for p in all_perms(3) {
        cases.push((vec![2, 3, 5], p));
    }
    for (shape, perm) in cases {
        let n: usize = shape.iter().product();
        let x = rand_vec(&mut rng, n);
        let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
        let tx = upload(&shape, &x);
        let out = poisoned(&out_shape);
        run(&lay::permute(gpu(), &tx, &perm, &out, false).unwrap());
        let want = r::permute(&x, &shape, &perm);
        let what = format!("{shape:?} by {perm:?}");
        assert_same_bits(&what, &read(&out), &want);
        let init = rand_vec(&mut rng, n);
        let out = upload(&out_shape, &init);
        run(&lay::permute(gpu(), &tx, &perm, &out, true).unwrap());
        assert_same_bits(&format!("{what} +="), &read(&out), &add(&init, &want));
    }
}

#[test]
fn slice_and_place_match_reference() {
    let mut rng = Rng::new(82);
    // (shape, dim, start, len): every dimension, awkward offsets, a slice
    // crossing a workgroup, the whole dimension.
    for (shape, dim, start, len) in [
        (vec![1], 0, 0, 1),
        (vec![7, 3], 0, 2, 5),
        (vec![7, 3], 1, 1, 1),
        (vec![2, 5, 3], 1, 1, 3),
        (vec![2, 3, 257], 2, 3, 254),
        (vec![3, 300], 1, 0, 300),
        (vec![2, 1, 3, 2, 2, 3], 5, 1, 2),
    ] {
        let n: usize = shape.iter().product();
        let x = rand_vec(&mut rng, n);
        let mut ps = shape.clone();
        ps[dim] = len;
        let what = format!("{shape:?}[{dim}: {start}+{len}]");
        let tx = upload(&shape, &x);
        let out = poisoned(&ps);
        run(&lay::slice(gpu(), &tx, dim, start, &out, false).unwrap());
        let want = r::slice(&x, &shape, dim, start, len);
        assert_same_bits(&what, &read(&out), &want);
        // place: the region of dst gets (or gains) the part, the rest stays.
        let part = rand_vec(&mut rng, want.len());
        let init = rand_vec(&mut rng, n);
        for accumulate in [false, true] {
            let dst = upload(&shape, &init);
            run(&lay::place(gpu(), &upload(&ps, &part), dim, start, &dst, accumulate).unwrap());
            let got = read(&dst);
            let region = r::slice(&init, &shape, dim, start, len);
            let placed = if accumulate {
                add(&region, &part)
            } else {
                part.clone()
            };
            assert_same_bits(
                &format!("{what} place"),
                &r::slice(&got, &shape, dim, start, len),
                &placed,
            );
            // Outside the region: compare with the region zeroed on both sides.
            let zero = vec![0.0; part.len()];
            let mask = upload(&shape, &got);
            run(&lay::place(gpu(), &upload(&ps, &zero), dim, start, &mask, false).unwrap());
            let keep = upload(&shape, &init);
            run(&lay::place(gpu(), &upload(&ps, &zero), dim, start, &keep, false).unwrap());
            assert_same_bits(&format!("{what} outside"), &read(&mask), &read(&keep));
        }
    }
}

#[test]
fn concat_by_places_matches_reference() {
    // The CLS token in front of patch embeddings: [B, 1, C] ++ [B, N, C].
    let mut rng = Rng::new(83);
    let (b, n, c) = (3, 5, 7);
    let cls = rand_vec(&mut rng, b * c);
    let patches = rand_vec(&mut rng, b * n * c);
    let out = poisoned(&[b, n + 1, c]);
    let ds = vec![
        lay::place(gpu(), &upload(&[b, 1, c], &cls), 1, 0, &out, false).unwrap(),
        lay::place(gpu(), &upload(&[b, n, c], &patches), 1, 1, &out, false).unwrap(),
    ];
    run_all(&ds);
    let want = r::concat(&[&cls, &patches], &[vec![b, 1, c], vec![b, n, c]], 1);
    assert_same_bits("cls ++ patches", &read(&out), &want);
}

#[test]
fn patchify_matches_reference_and_unpatchify_inverts_it() {
    let mut rng = Rng::new(84);
    for (shape, p) in [
        ([1, 1, 2, 2], 2),
        ([2, 3, 6, 4], 2),
        ([1, 2, 9, 6], 3),
        ([2, 1, 3, 5], 1),
        ([1, 3, 16, 32], 16),
    ] {
        let n: usize = shape.iter().product();
        let x = rand_vec(&mut rng, n);
        let rows_shape = lay::patch_shape("test", &shape, p).unwrap();
        let what = format!("{shape:?} p={p}");
        let tx = upload(&shape, &x);
        let rows = poisoned(&rows_shape);
        run(&lay::patchify(gpu(), &tx, p, &rows, false).unwrap());
        let want = r::patchify(&x, shape, p);
        assert_same_bits(&what, &read(&rows), &want);
        let back = poisoned(&shape);
        run(&lay::unpatchify(gpu(), &rows, p, &back, false).unwrap());
        assert_same_bits(&format!("{what} unpatchify"), &read(&back), &x);
        assert_same_bits(
            &format!("{what} reference inverse"),
            &r::unpatchify(&want, shape, p),
            &x,
        );
        let init = rand_vec(&mut rng, n);
        let acc = upload(&shape, &init);
        run(&lay::unpatchify(gpu(), &rows, p, &acc, true).unwrap());
        assert_same_bits(
            &format!("{what} unpatchify +="),
            &read(&acc),
            &add(&init, &x),
        );
    }
}

#[test]
fn patchify_then_matmul_is_a_strided_convolution() {
    // x [B, C, H, W], weight [O, C, p, p], bias [O]: conv2d(stride p) equals
    // patchify → [B·N, C·p·p] times weightᵀ (the weight seen as [O, C·p·p])
    // plus bias, up to the order of the output axes ([B, N, O] vs [B, O, N]).
    // f32 dot products of 48 terms in [-1, 1]: 1e-5 absolute.
    let mut rng = Rng::new(85);
    let (b, c, h, w, p, o) = (2, 3, 8, 12, 4, 5);
    let x = rand_vec(&mut rng, b * c * h * w);
    let weight = rand_vec(&mut rng, o * c * p * p);
    let bias = rand_vec(&mut rng, o);
    let rows_shape = lay::patch_shape("conv", &[b, c, h, w], p).unwrap();
    let (nb, k) = (rows_shape[1], rows_shape[2]);
    let rows = poisoned(&rows_shape);
    run(&lay::patchify(gpu(), &upload(&[b, c, h, w], &x), p, &rows, false).unwrap());
    let out = poisoned(&[b * nb, o]);
    let spec = MatmulSpec::new(b * nb, o, k).trans_b(true);
    let (tw, tb) = (upload(&[o, k], &weight), upload(&[o], &bias));
    run(&matmul(gpu(), &spec, &rows, &tw, Some(&tb), &out).unwrap());
    let got = read(&out);
    let conv = r::conv2d_patches(&x, [b, c, h, w], &weight, &bias, p);
    // [B, O, N] → [B, N, O]
    let want: Vec<f32> = r::permute(&conv, &[b, o, nb], &[0, 2, 1])
        .into_iter()
        .map(|v| v as f32)
        .collect();
    assert_close("conv2d = patchify + matmul", &got, &want, 1e-5, 0.0);
}

#[test]
fn layout_transposes_match_finite_differences() {
    // Each backward is the forward's transpose: for L = Σ w·f(x), dL/dx =
    // fᵀ(w). f is linear: central differences (eps 1e-2) are exact up to f32
    // rounding: 1e-4 + 1e-2 relative.
    let mut rng = Rng::new(86);
    let shape = [2, 3, 4, 2];
    let n: usize = shape.iter().product();
    let x = rand_vec(&mut rng, n);
    let all: Vec<usize> = (0..n).collect();
    // permute; the transpose is the inverse permutation.
    let perm = [2, 0, 3, 1];
    let ps: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
    let w = rand_vec(&mut rng, n);
    let f = |x: &[f32]| {
        let out = poisoned(&ps);
        run(&lay::permute(gpu(), &upload(&shape, x), &perm, &out, false).unwrap());
        read(&out)
    };
    let dx = poisoned(&shape);
    run(&lay::permute(
        gpu(),
        &upload(&ps, &w),
        &lay::inverse_perm(&perm),
        &dx,
        false,
    )
    .unwrap());
    let num = finite_diff(&f, &x, &w, &all, 1e-2);
    assert_fd("permute", &read(&dx), &num, &all, 1e-4, 1e-2);
    // slice; the transpose places into zeros.
    let (dim, start, len) = (2, 1, 2);
    let mut ss = shape.to_vec();
    ss[dim] = len;
    let w = rand_vec(&mut rng, n / 2);
    let f = |x: &[f32]| {
        let out = poisoned(&ss);
        run(&lay::slice(gpu(), &upload(&shape, x), dim, start, &out, false).unwrap());
        read(&out)
    };
    let dx = upload(&shape, &vec![0.0; n]);
    run(&lay::place(gpu(), &upload(&ss, &w), dim, start, &dx, false).unwrap());
    let num = finite_diff(&f, &x, &w, &all, 1e-2);
    assert_fd("slice", &read(&dx), &num, &all, 1e-4, 1e-2);
    // patchify; the transpose is unpatchify.
    let rows_shape = lay::patch_shape("fd", &shape, 2).unwrap();
    let w = rand_vec(&mut rng, n);
    let f = |x: &[f32]| {
        let out = poisoned(&rows_shape);
        run(&lay::patchify(gpu(), &upload(&shape, x), 2, &out, false).unwrap());
        read(&out)
    };
    let dx = poisoned(&shape);
    run(&lay::unpatchify(gpu(), &upload(&rows_shape, &w), 2, &dx, false).unwrap());
    let num = finite_diff(&f, &x, &w, &all, 1e-2);
    assert_fd("patchify", &read(&dx), &num, &all, 1e-4, 1e-2);
}

#[test]
fn layout_copies_are_deterministic() {
    let mut rng = Rng::new(87);
    let shape = [4, 6, 30, 20];
    let n: usize = shape.iter().product();
    let x = rand_vec(&mut rng, n);
    let init = rand_vec(&mut rng, n);
    let once = || {
        let out = upload(&lay::patch_shape("det", &shape, 2).unwrap(), &init);
        run(&lay::patchify(gpu(), &upload(&shape, &x), 2, &out, true).unwrap());
        read(&out)
    };
    assert_same_bits("patchify twice", &once(), &once());
}

#[test]
fn layout_bad_arguments_are_clear_errors() {
    let g = gpu();
    let x = upload(&[2, 3, 4], &[0.0; 24]);
    let err = e(lay::permute(
        g,
        &x,
        &[0, 0, 1],
        &upload(&[2, 2, 3], &[0.0; 12]),
        false,
    ));
    assert!(err.contains("not a permutation"), "{err}");
    let err = e(lay::permute(
        g,
        &x,
        &[2, 0, 1],
        &upload(&[2, 3, 4], &[0.0; 24]),
        false,
    ));
    assert!(err.contains("expected [4, 2, 3]"), "{err}");
    let err = e(lay::slice(
        g,
        &x,
        1,
        2,
        &upload(&[2, 2, 4], &[0.0; 16]),
        false,
    ));
    assert!(err.contains("cannot sit at 2 along dimension 1"), "{err}");
    let err = e(lay::slice(g, &x, 3, 0, &x, false));
    assert!(err.contains("dimension 3"), "{err}");
    let img = upload(&[1, 2, 6, 5], &[0.0; 60]);
    let err = e(lay::patchify(
        g,
        &img,
        2,
        &upload(&[1, 6, 8], &[0.0; 48]),
        false,
    ));
    assert!(
        err.contains("multiples of 2") && err.contains("W = 5"),
        "{err}"
    );
    let err = e(lay::patchify(g, &x, 2, &x, false));
    assert!(err.contains("[B, C, H, W]"), "{err}");
    let seven = upload(&[1; 7], &[0.0]);
    let err = e(lay::permute(
        g,
        &seven,
        &[0, 1, 2, 3, 4, 5, 6],
        &seven,
        false,
    ));
    assert!(err.contains("at most 6"), "{err}");
    let twice = Strided {
        shape: vec![2, 3],
        src_strides: vec![3, 1],
        src_offset: 0,
        dst_strides: vec![1, 1],
        dst_offset: 0,
    };
    let err = e(lay::copy_strided(
        g,
        &x,
        &upload(&[8], &[0.0; 8]),
        &twice,
        false,
    ));
    assert!(err.contains("write some element twice"), "{err}");
    let past = Strided {
        dst_strides: vec![3, 1],
        dst_offset: 20,
        ..twice
    };
    let err = e(lay::copy_strided(
        g,
        &x,
        &x.reshape(&[24]).unwrap(),
        &past,
        false,
    ));
    assert!(err.contains("runs past dst"), "{err}");
    let i = upload_i32(&[2, 3, 4], &[0; 24]);
    let err = e(lay::permute(g, &i, &[0, 1, 2], &x, false));
    assert!(err.contains("f32 or f16"), "{err}");
}

/// The message of an expected error.
fn e<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(err) => format!("{err:#}"),
    }
}

/// f16 storage, where the adapter has shader-f16: a permute moves the
/// values exactly; accumulating adds in f32 and rounds once.
#[test]
fn permute_in_f16() {
    if !gpu().features().contains(wgpu::Features::SHADER_F16) {
        eprintln!("skipped: {} has no shader-f16", gpu().describe());
        return;
    }
    let h =
        |v: &[f32]| -> Vec<f32> { v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect() };
    let read16 = |t: &kiln::Tensor| pollster::block_on(t.read_f16_as_f32(gpu())).unwrap();
    let mut rng = Rng::new(88);
    let (shape, perm) = ([3, 5, 7], [2, 0, 1]);
    let x = h(&rand_vec(&mut rng, 105));
    let init = h(&rand_vec(&mut rng, 105));
    let out = gpu().upload_f16(&[7, 3, 5], &init).unwrap();
    let tx = gpu().upload_f16(&shape, &x).unwrap();
    run(&lay::permute(gpu(), &tx, &perm, &out, true).unwrap());
    let want = add(&init, &r::permute(&x, &shape, &perm));
    assert_same_bits("permute += f16", &read16(&out), &h(&want));
}
