//! scatter.wgsl: the stable (id, position) sort, the segmented sum built on
//! it (scatter-add of rows), gather and the dense put, against the
//! references, bit for bit against the GPU's summation order, by finite
//! differences (gather and scatter are transposes), for determinism, and
//! with out-of-range ids.
//!
//! Tolerances. Gather and put copy or add a handful of values: the copy is
//! exact, the put's f32 sum of ≤ 3 terms within 1e-6. The scatter's sums run
//! up to ~14000 terms in [-1, 1] (all ids equal); against f64 their rounding
//! error grows like a random walk (≤ ~1e-4 observed at that length), so
//! 1e-4·√(terms/1000) absolute is allowed; the order itself is checked
//! exactly against `reference::scatter::segment_sum_f32`.

use crate::common::*;
use kiln::kernels::scatter::{self as sc, chunk_len, sort_passes, BLOCK};
use kiln::reference::scatter as r;
use kiln::runtime::DType;

fn read_u32(t: &kiln::runtime::Tensor) -> Vec<u32> {
    pollster::block_on(t.read_u32(gpu())).expect("readback")
}

/// N ids in [0, V) with, when `bad`, a few out of range (−1, V, a large one).
fn ids(rng: &mut Rng, n: usize, v: usize, bad: bool) -> Vec<i32> {
    let mut t: Vec<i32> = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    if bad && n > 3 {
        t[0] = -1;
        t[n / 2] = v as i32;
        t[n - 1] = i32::MAX;
    }
    t
}

/// (N, V): one id, primes, one block exactly, just past one block (a ragged
/// second block and one merge pass), several merge passes with ragged runs,
/// and > 65535 ids.
const SORT_CASES: [(usize, usize); 8] = [
    (1, 1),
    (7, 3),
    (BLOCK, 50),
    (BLOCK + 1, 2),
    (3001, 1),
    (5003, 7),
    (9001, 100_000),
    (70_001, 5),
];

#[test]
fn sort_ids_matches_reference() {
    let mut rng = Rng::new(71);
    for (n, v) in SORT_CASES {
        let id = ids(&mut rng, n, v, true);
        let t = upload_i32(&[n], &id);
        let (pairs, ds) = sc::sort_ids(gpu(), &t, v).unwrap();
        assert_eq!(ds.len(), sort_passes(n), "N={n}: dispatches");
        run_all(&ds);
        let got = read_u32(&pairs);
        let want: Vec<u32> = r::sorted_pairs(&id, v).into_iter().flatten().collect();
        assert_eq!(got, want, "N={n} V={v}: sorted pairs");
    }
}

/// (N, V, C): a single id, primes, many duplicates, one id everywhere
/// (a run crossing many chunks), one block + 1, C crossing a workgroup,
/// > 65535 ids.
const SCATTER_CASES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (7, 3, 5),
    (300, 4, 7),
    (1025, 1, 3),
    (2053, 2053, 2),
    (3001, 50, 257),
    (5000, 3, 1),
    (70_001, 5, 2),
];

fn scatter(id: &[i32], x: &[f32], v: usize, c: usize, init: &[f32], accumulate: bool) -> Vec<f32> {
    let n = id.len();
    let (ti, tx) = (upload_i32(&[n], id), upload(&[n, c], x));
    let out = upload(&[v, c], init);
    run_all(&sc::scatter_add_rows(gpu(), &ti, &tx, &out, accumulate).unwrap());
    read(&out)
}

#[test]
fn scatter_add_rows_matches_reference_in_gpu_order() {
    let mut rng = Rng::new(72);
    for (n, v, c) in SCATTER_CASES {
        let id = ids(&mut rng, n, v, true);
        let x = rand_vec(&mut rng, n * c);
        let init = rand_vec(&mut rng, v * c);
        let what = format!("N={n} V={v} C={c}");
        // Accumulate onto non-zero values.
        let got = scatter(&id, &x, v, c, &init, true);
        let mut want = init.clone();
        r::scatter_add_rows(&id, n, &x, v, c, &mut want);
        let terms = (n / v).max(1) as f64;
        assert_close(
            &what,
            &got,
            &want,
            1e-4 * (terms / 1000.0).sqrt().max(1.0),
            1e-5,
        );
        let mut exact = init.clone();
        r::segment_sum_f32(&id, &x, v, c, chunk_len(n), &mut exact);
        assert_same_bits(&format!("{what} order"), &got, &exact);
        // Overwrite: every row written, untouched ones zero.
        let got = scatter(&id, &x, v, c, &vec![f32::NAN; v * c], false);
        let mut exact = vec![0.0; v * c];
        r::segment_sum_f32(&id, &x, v, c, chunk_len(n), &mut exact);
        assert_same_bits(&format!("{what} overwrite"), &got, &exact);
    }
}

#[test]
fn scatter_add_rows_is_deterministic() {
    let mut rng = Rng::new(73);
    let (n, v, c) = (20_000, 300, 3);
    let id = ids(&mut rng, n, v, true);
    let x = rand_vec(&mut rng, n * c);
    let init = rand_vec(&mut rng, v * c);
    let a = scatter(&id, &x, v, c, &init, true);
    let b = scatter(&id, &x, v, c, &init, true);
    assert_same_bits("scatter twice", &a, &b);
}

fn gather(id: &[i32], shape: &[usize], table: &[f32], v: usize, c: usize) -> Vec<f32> {
    let ti = upload_i32(shape, id);
    let tt = upload(&[v, c], table);
    let mut os = shape.to_vec();
    os.push(c);
    let out = poisoned(&os);
    run(&sc::gather_rows(gpu(), &ti, &tt, &out, false).unwrap());
    read(&out)
}

#[test]
fn gather_rows_matches_reference_and_accumulates() {
    let mut rng = Rng::new(74);
    for (shape, v, c) in [
        (vec![1], 1, 1),
        (vec![2, 3, 5], 7, 3),
        (vec![13, 11], 4, 257),
        (vec![300], 2, 1),
    ] {
        let n: usize = shape.iter().product();
        let id = ids(&mut rng, n, v, true);
        let table = rand_vec(&mut rng, v * c);
        let got = gather(&id, &shape, &table, v, c);
        let want = r::gather_rows(&id, n, &table, v, c);
        assert_same_bits(&format!("{shape:?} gather"), &got, &want);
        // Accumulate: out += table[id], out-of-range rows untouched.
        let init = rand_vec(&mut rng, n * c);
        let ti = upload_i32(&shape, &id);
        let mut os = shape.clone();
        os.push(c);
        let out = upload(&os, &init);
        run(&sc::gather_rows(gpu(), &ti, &upload(&[v, c], &table), &out, true).unwrap());
        let want: Vec<f32> = init.iter().zip(&want).map(|(a, b)| a + b).collect();
        assert_same_bits(&format!("{shape:?} gather +="), &read(&out), &want);
    }
}

#[test]
fn grouped_gather_and_put_match_reference() {
    let mut rng = Rng::new(75);
    // (G, M, V, C): one row per sequence (M = 1) and a few with repeats.
    for (g, m, v, c) in [(1, 1, 1, 1), (3, 1, 5, 7), (2, 3, 2, 257), (5, 1, 300, 2)] {
        let id = ids(&mut rng, g * m, v, true);
        let table = rand_vec(&mut rng, g * v * c);
        let (ti, tt) = (upload_i32(&[g, m], &id), upload(&[g, v, c], &table));
        let out = poisoned(&[g, m, c]);
        run(&sc::gather_rows_grouped(gpu(), &ti, &tt, &out, false).unwrap());
        let what = format!("G={g} M={m} V={v} C={c}");
        assert_same_bits(&what, &read(&out), &r::gather_rows(&id, m, &table, v, c));
        // put: the transpose, overwriting then accumulating.
        let src = rand_vec(&mut rng, g * m * c);
        let ts = upload(&[g, m, c], &src);
        let dst = poisoned(&[g, v, c]);
        run(&sc::put_rows_grouped(gpu(), &ti, &ts, &dst, false).unwrap());
        let mut want = vec![0.0; g * v * c];
        r::scatter_add_rows(&id, m, &src, v, c, &mut want);
        assert_close(&format!("{what} put"), &read(&dst), &want, 1e-6, 0.0);
        let init = rand_vec(&mut rng, g * v * c);
        let dst = upload(&[g, v, c], &init);
        run(&sc::put_rows_grouped(gpu(), &ti, &ts, &dst, true).unwrap());
        let mut want = init.clone();
        r::scatter_add_rows(&id, m, &src, v, c, &mut want);
        assert_close(&format!("{what} put +="), &read(&dst), &want, 1e-6, 0.0);
    }
}

#[test]
fn scatter_and_put_are_the_gradients_of_gather() {
    // L = Σ w·gather(table) is linear in the table: central differences
    // (eps 1e-2) are exact up to f32 rounding: 1e-4 + 1e-2 relative.
    let mut rng = Rng::new(76);
    let (n, v, c) = (40, 6, 3);
    let id = ids(&mut rng, n, v, true);
    let table = rand_vec(&mut rng, v * c);
    let w = rand_vec(&mut rng, n * c);
    let grad = scatter(&id, &w, v, c, &vec![0.0; v * c], false);
    let all: Vec<usize> = (0..v * c).collect();
    let f = |t: &[f32]| gather(&id, &[n], t, v, c);
    let num = finite_diff(&f, &table, &w, &all, 1e-2);
    assert_fd("d table (scatter)", &grad, &num, &all, 1e-4, 1e-2);

    let (g, v) = (4, 5);
    let id = ids(&mut rng, g, v, true);
    let table = rand_vec(&mut rng, g * v * c);
    let w = rand_vec(&mut rng, g * c);
    let ti = upload_i32(&[g, 1], &id);
    let dst = poisoned(&[g, v, c]);
    run(&sc::put_rows_grouped(gpu(), &ti, &upload(&[g, 1, c], &w), &dst, false).unwrap());
    let grad = read(&dst);
    let f = |t: &[f32]| {
        let out = poisoned(&[g, 1, c]);
        run(&sc::gather_rows_grouped(gpu(), &ti, &upload(&[g, v, c], t), &out, false).unwrap());
        read(&out)
    };
    let all: Vec<usize> = (0..g * v * c).collect();
    let num = finite_diff(&f, &table, &w, &all, 1e-2);
    assert_fd("d table (put)", &grad, &num, &all, 1e-4, 1e-2);
}

#[test]
fn segment_sum_sorted_reuses_one_sort() {
    // One sort serves two reductions (e.g. two feature tensors, same edges).
    let mut rng = Rng::new(77);
    let (n, v, c) = (1500, 40, 3);
    let id = ids(&mut rng, n, v, true);
    let (pairs, sort) = sc::sort_ids(gpu(), &upload_i32(&[n], &id), v).unwrap();
    run_all(&sort);
    for _ in 0..2 {
        let x = rand_vec(&mut rng, n * c);
        let out = upload(&[v, c], &vec![0.0; v * c]);
        run_all(&sc::segment_sum_sorted(gpu(), &pairs, &upload(&[n, c], &x), &out).unwrap());
        let mut want = vec![0.0; v * c];
        r::segment_sum_f32(&id, &x, v, c, chunk_len(n), &mut want);
        assert_same_bits("segment_sum_sorted", &read(&out), &want);
    }
}

#[test]
fn scatter_bad_arguments_are_clear_errors() {
    let g = gpu();
    let id = upload_i32(&[2, 3], &[0; 6]);
    let table = upload(&[5, 4], &[0.0; 20]);
    let rows = upload(&[2, 3, 4], &[0.0; 24]);
    let f_ids = upload(&[2, 3], &[0.0; 6]);
    let err = e(sc::gather_rows(g, &f_ids, &table, &rows, false));
    assert!(err.contains("i32"), "{err}");
    let err = e(sc::gather_rows(
        g,
        &id,
        &table,
        &upload(&[2, 4, 4], &[0.0; 32]),
        false,
    ));
    assert!(err.contains("[2, 3, 4]"), "{err}");
    let err = e(sc::scatter_add_rows(
        g,
        &id,
        &rows,
        &upload(&[5, 3], &[0.0; 15]),
        true,
    ));
    assert!(err.contains("x has shape [2, 3, 4]"), "{err}");
    let err = e(sc::scatter_add_rows(
        g,
        &id,
        &rows,
        &upload(&[20], &[0.0; 20]),
        true,
    ));
    assert!(err.contains("[V, C]"), "{err}");
    let err = e(sc::scatter_add_rows(
        g,
        &id,
        &rows,
        &rows.reshape(&[6, 4]).unwrap(),
        true,
    ));
    assert!(err.contains("same buffer"), "{err}");
    let i_table = upload_i32(&[5, 4], &[0; 20]);
    let err = e(sc::gather_rows(g, &id, &i_table, &rows, false));
    assert!(err.contains("f32 or f16"), "{err}");
    let err = e(sc::put_rows_grouped(
        g,
        &id,
        &rows,
        &upload(&[3, 5, 4], &[0.0; 60]),
        false,
    ));
    assert!(err.contains("[2, V, C]"), "{err}");
    let empty = g.empty(&[0], DType::I32).unwrap();
    let err = e(sc::sort_ids(g, &empty, 3));
    assert!(err.contains("at least one id"), "{err}");
}

/// The message of an expected error.
fn e<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(err) => format!("{err:#}"),
    }
}

/// f16 storage (f32 arithmetic), where the adapter has shader-f16: a gather
/// copies exactly; a scatter is the f32 sum in the same order, added to the
/// f16 value and rounded once.
#[test]
fn scatter_and_gather_in_f16() {
    if !gpu().features().contains(wgpu::Features::SHADER_F16) {
        eprintln!("skipped: {} has no shader-f16", gpu().describe());
        return;
    }
    let h =
        |v: &[f32]| -> Vec<f32> { v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect() };
    let read16 = |t: &kiln::Tensor| pollster::block_on(t.read_f16_as_f32(gpu())).unwrap();
    let mut rng = Rng::new(78);
    let (n, v, c) = (1500, 7, 3);
    let id = ids(&mut rng, n, v, true);
    let x = h(&rand_vec(&mut rng, n * c));
    let init = h(&rand_vec(&mut rng, v * c));
    let ti = upload_i32(&[n], &id);
    let out = gpu().upload_f16(&[v, c], &init).unwrap();
    let tx = gpu().upload_f16(&[n, c], &x).unwrap();
    run_all(&sc::scatter_add_rows(gpu(), &ti, &tx, &out, true).unwrap());
    let mut want = init.clone();
    r::segment_sum_f32(&id, &x, v, c, chunk_len(n), &mut want);
    assert_same_bits("scatter f16", &read16(&out), &h(&want));
    let rows = gpu().upload_f16(&[n, c], &vec![f32::NAN; n * c]).unwrap();
    run(&sc::gather_rows(gpu(), &ti, &out, &rows, false).unwrap());
    let table = read16(&out);
    assert_same_bits(
        "gather f16",
        &read16(&rows),
        &r::gather_rows(&id, n, &table, v, c),
    );
}
