//! broadcast.wgsl: add and multiply with numpy broadcasting against the
//! f64 reference (exact: one f32 rounding), and the reductions of a
//! gradient back to an operand's shape (plain and times the other operand,
//! overwrite and accumulate, one pass and chunked) on awkward shapes,
//! determinism and argument errors.

use crate::common::*;
use kiln::kernels::broadcast::{self as bc, BinaryOp};
use kiln::reference::broadcast as r;

/// (a, b): a bias row, a position table, a per-channel scale, a scalar,
/// both sides broadcasting, a workgroup-crossing column, rank 6, 1 × 1.
const CASES: [(&[usize], &[usize]); 9] = [
    (&[5, 7], &[7]),
    (&[3, 4, 6], &[4, 6]),
    (&[2, 3, 5, 4], &[1, 3, 1, 1]),
    (&[1], &[2, 3, 5]),
    (&[3, 1, 5], &[1, 4, 1]),
    (&[257, 3], &[257, 1]),
    (&[2, 1, 2, 1, 3, 1], &[1, 3, 1, 2, 1, 2]),
    (&[1], &[1]),
    (&[300, 1], &[1, 1, 7]),
];

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|x| *x as f32).collect()
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

#[test]
fn broadcast_forward_matches_reference_exactly() {
    let mut rng = Rng::new(51);
    for (sa, sb) in CASES {
        let full = bc::broadcast_shape(sa, sb).unwrap();
        assert_eq!(full, r::shape(sa, sb));
        let (a, b) = (rand_vec(&mut rng, numel(sa)), rand_vec(&mut rng, numel(sb)));
        for (op, f) in [
            (BinaryOp::Add, (|x, y| x + y) as fn(f64, f64) -> f64),
            (BinaryOp::Mul, |x, y| x * y),
        ] {
            for (x, xs, y, ys) in [(&a, sa, &b, sb), (&b, sb, &a, sa)] {
                let out = poisoned(&full);
                run(&bc::forward(gpu(), op, &upload(xs, x), &upload(ys, y), &out).unwrap());
                let want = f32s(&r::binary(&f64s(x), xs, &f64s(y), ys, f));
                assert_close(
                    &format!("{op:?} {xs:?} {ys:?}"),
                    &read(&out),
                    &want,
                    0.0,
                    0.0,
                );
            }
        }
    }
}

fn run_reduce(
    dy: &[f32],
    full: &[usize],
    target: &[usize],
    other: Option<(&[f32], &[usize])>,
    init: Option<&[f32]>,
) -> Vec<f32> {
    let out = match init {
        Some(v) => upload(target, v),
        None => poisoned(target),
    };
    let o = other.map(|(v, s)| upload(s, v));
    run_all(&bc::reduce_to(gpu(), &upload(full, dy), o.as_ref(), &out, init.is_some()).unwrap());
    read(&out)
}

/// Sums of up to ~20000 terms of order 1 in f32, in a fixed tree: 1e-5
/// absolute per unit of magnitude is generous.
fn tol(terms: usize) -> f64 {
    1e-6 * (terms as f64).sqrt().max(1.0) * 4.0
}

#[test]
fn broadcast_reduce_matches_reference() {
    check_reduce();
    // Up to 256 threads per sum (the GPU setting) instead of 8.
    with_256_row_threads(check_reduce);
}

fn check_reduce() {
    let mut rng = Rng::new(52);
    let mut cases: Vec<(Vec<usize>, Vec<usize>)> = CASES
        .iter()
        .flat_map(|(a, b)| {
            let full = bc::broadcast_shape(a, b).unwrap();
            [(full.clone(), a.to_vec()), (full, b.to_vec())]
        })
        .collect();
    // Longer than one chunk (4096 terms): split, then added in order.
    cases.push((vec![9001, 3], vec![3]));
    cases.push((vec![5, 4099], vec![1]));
    cases.push((vec![2, 5000, 2], vec![2, 1, 2]));
    for (full, target) in cases {
        let n = numel(&full);
        let dy = rand_vec(&mut rng, n);
        let terms = n / numel(&target);
        let want = f32s(&r::reduce_to(&f64s(&dy), &full, &target, None));
        let got = run_reduce(&dy, &full, &target, None, None);
        assert_close(
            &format!("sum {full:?} -> {target:?}"),
            &got,
            &want,
            tol(terms),
            1e-6,
        );
        // Accumulate mode adds to what is there.
        let init = rand_vec(&mut rng, numel(&target));
        let got = run_reduce(&dy, &full, &target, None, Some(&init));
        let want_acc: Vec<f32> = want.iter().zip(&init).map(|(a, b)| a + b).collect();
        assert_close(
            &format!("sum+= {full:?} -> {target:?}"),
            &got,
            &want_acc,
            tol(terms),
            1e-6,
        );
        // Times another operand (a multiply's gradient): the full shape,
        // or a broadcast one.
        for os in [full.clone(), target.clone(), vec![*full.last().unwrap()]] {
            let o = rand_vec(&mut rng, numel(&os));
            let want = f32s(&r::reduce_to(
                &f64s(&dy),
                &full,
                &target,
                Some((&f64s(&o), &os)),
            ));
            let got = run_reduce(&dy, &full, &target, Some((&o, &os)), None);
            assert_close(
                &format!("dot {full:?} -> {target:?} × {os:?}"),
                &got,
                &want,
                tol(terms),
                1e-6,
            );
        }
    }
}

#[test]
fn broadcast_is_deterministic() {
    let mut rng = Rng::new(53);
    let (full, target) = (vec![7, 3001, 3], vec![1, 1, 3]);
    let dy = rand_vec(&mut rng, numel(&full));
    let o = rand_vec(&mut rng, numel(&full));
    let a = run_reduce(&dy, &full, &target, Some((&o, &full)), None);
    let b = run_reduce(&dy, &full, &target, Some((&o, &full)), None);
    assert_same_bits("broadcast reduce", &a, &b);
    let a = run_reduce(&dy, &full, &[1], None, None);
    let b = run_reduce(&dy, &full, &[1], None, None);
    assert_same_bits("broadcast full sum", &a, &b);
}

#[test]
fn suffix_split_finds_the_column_sum_case() {
    assert_eq!(bc::suffix_split(&[4, 5, 6], &[6]), Some((20, 6)));
    assert_eq!(bc::suffix_split(&[4, 5, 6], &[1, 5, 6]), Some((4, 30)));
    assert_eq!(bc::suffix_split(&[4, 5, 6], &[1]), Some((120, 1)));
    assert_eq!(bc::suffix_split(&[4, 5, 6], &[4, 1, 6]), None);
    assert_eq!(bc::suffix_split(&[4, 5, 6], &[4, 5, 6]), None);
    assert_eq!(bc::suffix_split(&[1, 5, 6], &[5, 6]), None);
}

#[test]
fn broadcast_bad_arguments_are_clear_errors() {
    let a = upload(&[2, 3], &[0.0; 6]);
    let b = upload(&[2], &[0.0; 2]);
    let err = bc::forward(gpu(), BinaryOp::Add, &a, &b, &empty(&[2, 3]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not broadcast"), "{err}");
    let c = upload(&[3], &[0.0; 3]);
    let err = bc::forward(gpu(), BinaryOp::Mul, &a, &c, &empty(&[3, 2]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("out has shape [3, 2]"), "{err}");
    let err = bc::broadcast_shape(&[1; 7], &[1]).unwrap_err().to_string();
    assert!(err.contains("at most 6"), "{err}");
    let err = bc::reduce_to(gpu(), &a, None, &upload(&[2, 2], &[0.0; 4]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not broadcast"), "{err}");
    let i = upload_i32(&[3], &[0; 3]);
    let err = bc::forward(gpu(), BinaryOp::Add, &a, &i, &empty(&[2, 3]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("i32"), "{err}");
}
