//! crossentropy.wgsl: fused softmax + cross-entropy against the f64
//! reference, by finite differences of the GPU mean loss, determinism,
//! ignored and out-of-range targets, grad_scale, argument checks.
//!
//! Tolerances. Per-row loss = (max + log Σexp) − logit[target]: each term is
//! exact to a few ulp of the largest logit magnitude M, so
//! |err| ≤ 1e-6·(1 + M) + 1e-5·|want| (the Σexp over V terms in f32 adds
//! ≲ log2(V)·ulp relative). dlogits = scale·(p − onehot) with p from one exp
//! and one multiply: |err| ≤ scale·(1e-6 + 1e-5·p), i.e. 1e-6·scale absolute
//! plus 1e-5 relative.

use crate::common::*;
use kiln::kernels::crossentropy::{cross_entropy, set_grad_scale};
use kiln::reference::crossentropy as r;

const IGNORE: i32 = -100;

struct Out {
    losses: Vec<f32>,
    mean: f32,
    dlogits: Option<Vec<f32>>,
}

fn run_ce(logits: &[f32], targets: &[i32], v: usize, grad: bool, grad_scale: f32) -> Out {
    let rows = targets.len();
    let tl = upload(&[rows, v], logits);
    let tt = upload_i32(&[rows], targets);
    let losses = poisoned(&[rows]);
    let mean = poisoned(&[1]);
    let dl = grad.then(|| poisoned(&[rows, v]));
    let ds = cross_entropy(
        gpu(),
        &tl,
        &tt,
        &losses,
        &mean,
        dl.as_ref(),
        IGNORE,
        grad_scale,
    )
    .unwrap();
    run_all(&ds);
    Out {
        losses: read(&losses),
        mean: read(&mean)[0],
        dlogits: dl.as_ref().map(read),
    }
}

/// Random targets with every 5th row ignored and, for rows ≥ 3, one target
/// out of range (treated as ignored).
fn targets(rng: &mut Rng, rows: usize, v: usize) -> Vec<i32> {
    let mut t: Vec<i32> = (0..rows).map(|_| rng.below(v as u64) as i32).collect();
    for (r, x) in t.iter_mut().enumerate() {
        if r % 5 == 4 {
            *x = IGNORE;
        }
    }
    if rows >= 3 {
        t[1] = if rows.is_multiple_of(2) { v as i32 } else { -7 };
    }
    t
}

fn check(what: &str, got: &Out, want: &r::CrossEntropy, logits: &[f32], grad_scale: f32) {
    let m = logits.iter().fold(0f64, |a, x| a.max(x.abs() as f64));
    let loss_atol = 1e-6 * (1.0 + m);
    assert_close(
        &format!("{what} losses"),
        &got.losses,
        &want.losses,
        loss_atol,
        1e-5,
    );
    assert_close(
        &format!("{what} mean"),
        &[got.mean],
        &[want.mean_loss],
        loss_atol,
        1e-5,
    );
    if let Some(d) = &got.dlogits {
        let scale = grad_scale.abs() as f64 / want.count.max(1) as f64;
        assert_close(
            &format!("{what} dlogits"),
            d,
            &want.dlogits,
            1e-6 * scale,
            1e-5,
        );
    }
}

#[test]
fn cross_entropy_matches_reference() {
    let mut rng = Rng::new(41);
    for v in [1, 2, 7, 257, 1031, 5003] {
        for rows in [1, 3, 37] {
            let logits = rng.vec_normal(rows * v, 2.0);
            let t = targets(&mut rng, rows, v);
            let gs = if rows == 3 { 0.25 } else { 1.0 };
            let want = r::cross_entropy(&logits, &t, v, IGNORE, gs);
            let got = run_ce(&logits, &t, v, true, gs);
            check(&format!("V={v} rows={rows}"), &got, &want, &logits, gs);
            // Evaluation only: the same losses, bit for bit.
            let eval = run_ce(&logits, &t, v, false, gs);
            assert_same_bits("eval losses", &eval.losses, &got.losses);
            assert_same_bits("eval mean", &[eval.mean], &[got.mean]);
        }
    }
}

#[test]
fn cross_entropy_large_logits_are_stable() {
    let mut rng = Rng::new(42);
    for (v, rows) in [(2, 3), (257, 5), (1031, 2)] {
        let mut logits = rng.vec_uniform(rows * v, -100.0, 100.0);
        logits[0] = 100.0;
        logits[1] = -100.0;
        let t: Vec<i32> = (0..rows).map(|_| rng.below(v as u64) as i32).collect();
        let want = r::cross_entropy(&logits, &t, v, IGNORE, 1.0);
        let got = run_ce(&logits, &t, v, true, 1.0);
        assert!(got.mean.is_finite(), "mean loss {}", got.mean);
        check(&format!("±100 V={v}"), &got, &want, &logits, 1.0);
    }
}

#[test]
fn cross_entropy_all_rows_ignored_gives_zeros() {
    let mut rng = Rng::new(43);
    let (rows, v) = (4, 9);
    let logits = rng.vec_normal(rows * v, 1.0);
    // ignore_index and out-of-range targets only: count = 0.
    let t = vec![IGNORE, 9, -1, IGNORE];
    let got = run_ce(&logits, &t, v, true, 1.0);
    assert_eq!(got.mean.to_bits(), 0f32.to_bits(), "mean {}", got.mean);
    assert!(got.losses.iter().all(|x| *x == 0.0), "{:?}", got.losses);
    assert!(got.dlogits.unwrap().iter().all(|x| *x == 0.0));
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    // d mean_loss / d logits by central differences of the GPU forward
    // (eps 1e-2, rtol 1e-2): the loss is smooth, so the O(eps²) truncation is
    // ~1e-5 here; f32 rounding of a loss of ~2 over 2·eps adds ~1e-5·2, hence
    // atol 2e-4.
    let mut rng = Rng::new(44);
    for (v, rows) in [(7, 3), (2, 1), (31, 4)] {
        let logits = rng.vec_normal(rows * v, 1.0);
        let mut t: Vec<i32> = (0..rows).map(|_| rng.below(v as u64) as i32).collect();
        if rows > 2 {
            t[2] = IGNORE;
        }
        let d = run_ce(&logits, &t, v, true, 1.0).dlogits.unwrap();
        let f = |x: &[f32]| vec![run_ce(x, &t, v, false, 1.0).mean];
        let mut idx = probe_indices(rows * v, 8, &mut rng);
        // Include every target logit (the largest gradients).
        for (r, &tt) in t.iter().enumerate() {
            if tt >= 0 {
                idx.push(r * v + tt as usize);
            }
        }
        let num = finite_diff(&f, &logits, &[1.0], &idx, 1e-2);
        assert_fd(&format!("V={v} rows={rows}"), &d, &num, &idx, 2e-4, 1e-2);
    }
}

#[test]
fn cross_entropy_is_deterministic() {
    let mut rng = Rng::new(45);
    let (rows, v) = (37, 1031);
    let logits = rng.vec_normal(rows * v, 3.0);
    let t = targets(&mut rng, rows, v);
    let a = run_ce(&logits, &t, v, true, 1.0);
    let b = run_ce(&logits, &t, v, true, 1.0);
    assert_same_bits("losses", &a.losses, &b.losses);
    assert_same_bits("mean", &[a.mean], &[b.mean]);
    assert_same_bits("dlogits", &a.dlogits.unwrap(), &b.dlogits.unwrap());
}

#[test]
fn cross_entropy_grad_scale_can_be_updated_in_place() {
    let mut rng = Rng::new(46);
    let (rows, v) = (5, 13);
    let logits = rng.vec_normal(rows * v, 1.0);
    let t: Vec<i32> = (0..rows).map(|_| rng.below(v as u64) as i32).collect();
    let tl = upload(&[rows, v], &logits);
    let tt = upload_i32(&[rows], &t);
    let (losses, mean, dl) = (poisoned(&[rows]), poisoned(&[1]), poisoned(&[rows, v]));
    let ds = cross_entropy(gpu(), &tl, &tt, &losses, &mean, Some(&dl), IGNORE, 1.0).unwrap();
    run_all(&ds);
    let full = read(&dl);
    set_grad_scale(gpu(), &ds, &tl, IGNORE, 0.5).unwrap();
    run_all(&ds);
    // Halving is exact in binary floating point.
    let halved: Vec<f32> = full.iter().map(|x| x * 0.5).collect();
    assert_same_bits("grad_scale 0.5", &read(&dl), &halved);
    assert!(set_grad_scale(gpu(), &ds[..2], &tl, IGNORE, 1.0).is_err());
}

#[test]
fn cross_entropy_bad_arguments_are_clear_errors() {
    let g = gpu();
    let logits = upload(&[3, 5], &[0.0; 15]);
    let losses = upload(&[3], &[0.0; 3]);
    let mean = upload(&[1], &[0.0]);
    let t_f32 = upload(&[3], &[0.0; 3]);
    let err = cross_entropy(g, &logits, &t_f32, &losses, &mean, None, IGNORE, 1.0).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("i32") && msg.contains("targets"), "{msg}");
    let t4 = upload_i32(&[4], &[0; 4]);
    let err = cross_entropy(g, &logits, &t4, &losses, &mean, None, IGNORE, 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("targets") && err.contains("expected 3"),
        "{err}"
    );
    let t3 = upload_i32(&[3], &[0; 3]);
    let bad_dl = upload(&[5, 3], &[0.0; 15]);
    let err = cross_entropy(g, &logits, &t3, &losses, &mean, Some(&bad_dl), IGNORE, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("dlogits") && err.contains("[3, 5]"), "{err}");
    let err = cross_entropy(g, &logits, &t3, &losses, &losses, None, IGNORE, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mean_loss"), "{err}");
    // In-place (dlogits in the logits buffer) is refused, not a wgpu panic.
    let err = cross_entropy(g, &logits, &t3, &losses, &mean, Some(&logits), IGNORE, 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dlogits shares its buffer with logits"),
        "{err}"
    );
}

/// GPT-2's vocabulary (V = 50257) over 256 rows (51 MB of logits, inside
/// WebGPU's default 128 MiB binding limit; about 2 s on lavapipe).
#[test]
fn cross_entropy_gpt2_vocabulary() {
    let mut rng = Rng::new(47);
    let (rows, v) = (256, 50257);
    let logits = rng.vec_normal(rows * v, 2.0);
    let t = targets(&mut rng, rows, v);
    let t0 = std::time::Instant::now();
    let got = run_ce(&logits, &t, v, true, 1.0);
    eprintln!("cross-entropy rows={rows} V={v}: {:?}", t0.elapsed());
    let want = r::cross_entropy(&logits, &t, v, IGNORE, 1.0);
    check("GPT-2 V", &got, &want, &logits, 1.0);
}

/// The same reference checks with 256 threads per row (the GPU setting),
/// where the default device is a CPU adapter using fewer.
#[test]
fn cross_entropy_reference_checks_with_256_threads_per_row() {
    with_256_row_threads(|| {
        cross_entropy_matches_reference();
        cross_entropy_all_rows_ignored_gives_zeros();
        cross_entropy_is_deterministic();
    });
}
