//! embedding.wgsl: token + position embedding, forward and deterministic
//! backward, against the f64 reference, finite differences, determinism,
//! out-of-range tokens and argument checks.
//!
//! Tolerances. Forward: one f32 addition, so the result equals the
//! correctly rounded f64 sum exactly (tolerance 0). Backward: a sequential
//! f32 sum of up to ~90 terms in [-1, 1] (the N = 300, V = 4 case) plus the
//! initial value; its rounding errors add like a random walk, observed
//! ≤ 1.5e-6 against f64, so 1e-5 absolute + 1e-5 relative. The summation
//! order itself is checked bit-exactly against a CPU f32 sum in the
//! kernel's order (increasing position, split at the scatter's chunks).

use crate::common::*;
use kiln::kernels::embedding::{embedding_backward, embedding_forward};
use kiln::kernels::scatter::chunk_len;
use kiln::reference::embedding as r;

struct Case {
    b: usize,
    t: usize,
    max_t: usize,
    v: usize,
    c: usize,
}

// B = 1 and 3, T < maxT and T = maxT, C = 1, 7, 65, small V (many repeats),
// and N = B·T = 300 crossing the 64-position chunks of the segmented sum.
const CASES: [Case; 5] = [
    Case {
        b: 1,
        t: 5,
        max_t: 8,
        v: 11,
        c: 1,
    },
    Case {
        b: 3,
        t: 7,
        max_t: 7,
        v: 13,
        c: 65,
    },
    Case {
        b: 3,
        t: 4,
        max_t: 9,
        v: 3,
        c: 7,
    },
    Case {
        b: 1,
        t: 1,
        max_t: 1,
        v: 1,
        c: 7,
    },
    Case {
        b: 3,
        t: 100,
        max_t: 101,
        v: 4,
        c: 7,
    },
];

/// Random tokens in [0, V) with repeats, plus (when N > 2) one token = V and
/// one negative token, both out of range.
fn tokens(rng: &mut Rng, n: usize, v: usize) -> Vec<i32> {
    let mut t: Vec<i32> = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    if n > 2 {
        t[1] = v as i32;
        t[n - 1] = -3;
    }
    t
}

fn forward(tok: &[i32], case: &Case, wte: &[f32], wpe: &[f32]) -> Vec<f32> {
    let Case { b, t, max_t, v, c } = *case;
    let tt = upload_i32(&[b, t], tok);
    let (twte, twpe) = (upload(&[v, c], wte), upload(&[max_t, c], wpe));
    let out = poisoned(&[b, t, c]);
    run(&embedding_forward(gpu(), &tt, &twte, &twpe, &out).unwrap());
    read(&out)
}

/// Runs the backward on copies of the initial gradients; returns (dwte, dwpe).
fn backward(
    tok: &[i32],
    case: &Case,
    dout: &[f32],
    dwte0: &[f32],
    dwpe0: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let Case { b, t, max_t, v, c } = *case;
    let tt = upload_i32(&[b, t], tok);
    let td = upload(&[b, t, c], dout);
    let (dwte, dwpe) = (upload(&[v, c], dwte0), upload(&[max_t, c], dwpe0));
    run_all(&embedding_backward(gpu(), &tt, &td, &dwte, &dwpe).unwrap());
    (read(&dwte), read(&dwpe))
}

/// The same sums as the kernel in f32, in its order: each token's rows in
/// increasing position order, restarted at the scatter's chunk borders
/// (`reference::scatter::segment_sum_f32`); dwpe over b in order.
fn f32_sums(tok: &[i32], case: &Case, dout: &[f32], dwte: &mut [f32], dwpe: &mut [f32]) {
    let Case { b, t, v, c, .. } = *case;
    kiln::reference::scatter::segment_sum_f32(tok, dout, v, c, chunk_len(b * t), dwte);
    let mut gpe = vec![0f32; t * c];
    for tt in 0..t {
        for k in 0..c {
            for bb in 0..b {
                gpe[tt * c + k] += dout[(bb * t + tt) * c + k];
            }
        }
    }
    dwpe.iter_mut().zip(&gpe).for_each(|(d, g)| *d += g);
}

#[test]
fn embedding_forward_matches_reference() {
    let mut rng = Rng::new(51);
    for case in &CASES {
        let n = case.b * case.t;
        let tok = tokens(&mut rng, n, case.v);
        let wte = rand_vec(&mut rng, case.v * case.c);
        let wpe = rand_vec(&mut rng, case.max_t * case.c);
        let got = forward(&tok, case, &wte, &wpe);
        let want = r::embedding_forward(&tok, case.t, &wte, &wpe, case.c);
        assert_close(
            &format!("B={} T={} C={}", case.b, case.t, case.c),
            &got,
            &want,
            0.0,
            0.0,
        );
    }
}

#[test]
fn embedding_backward_matches_reference_and_accumulates() {
    let mut rng = Rng::new(52);
    for case in &CASES {
        let n = case.b * case.t;
        let tok = tokens(&mut rng, n, case.v);
        let dout = rand_vec(&mut rng, n * case.c);
        // Non-zero initial gradients: the kernel must add, not overwrite.
        let dwte0 = rand_vec(&mut rng, case.v * case.c);
        let dwpe0 = rand_vec(&mut rng, case.max_t * case.c);
        let (got_te, got_pe) = backward(&tok, case, &dout, &dwte0, &dwpe0);
        let (mut want_te, mut want_pe) = (dwte0.clone(), dwpe0.clone());
        r::embedding_backward(&tok, case.t, &dout, &mut want_te, &mut want_pe, case.c);
        let what = format!("B={} T={} C={}", case.b, case.t, case.c);
        assert_close(&format!("{what} dwte"), &got_te, &want_te, 1e-5, 1e-5);
        assert_close(&format!("{what} dwpe"), &got_pe, &want_pe, 1e-5, 1e-5);
        // Rows t ≥ T of dwpe are untouched.
        assert_same_bits(
            "dwpe rows ≥ T",
            &got_pe[case.t * case.c..],
            &dwpe0[case.t * case.c..],
        );
        // Bit-exact against an f32 sum in increasing position order.
        let (mut te32, mut pe32) = (dwte0.clone(), dwpe0[..case.t * case.c].to_vec());
        f32_sums(&tok, case, &dout, &mut te32, &mut pe32);
        assert_same_bits(&format!("{what} dwte order"), &got_te, &te32);
        assert_same_bits(
            &format!("{what} dwpe order"),
            &got_pe[..case.t * case.c],
            &pe32,
        );
    }
}

#[test]
fn embedding_backward_matches_finite_differences() {
    // L = Σ w·out(wte, wpe) is linear in the tables, so central differences
    // (eps 1e-2) are exact up to f32 rounding of out (~1e-7 / 2e-2 per term,
    // a few terms): tolerance 1e-4 + 1e-2 relative.
    let mut rng = Rng::new(53);
    let case = Case {
        b: 3,
        t: 4,
        max_t: 6,
        v: 5,
        c: 3,
    };
    let n = case.b * case.t;
    let tok = tokens(&mut rng, n, case.v);
    let wte = rand_vec(&mut rng, case.v * case.c);
    let wpe = rand_vec(&mut rng, case.max_t * case.c);
    let w = rand_vec(&mut rng, n * case.c);
    let (dwte, dwpe) = backward(
        &tok,
        &case,
        &w,
        &vec![0.0; case.v * case.c],
        &vec![0.0; case.max_t * case.c],
    );
    let all_te: Vec<usize> = (0..wte.len()).collect();
    let f = |x: &[f32]| forward(&tok, &case, x, &wpe);
    let num = finite_diff(&f, &wte, &w, &all_te, 1e-2);
    assert_fd("dwte", &dwte, &num, &all_te, 1e-4, 1e-2);
    let all_pe: Vec<usize> = (0..wpe.len()).collect();
    let f = |x: &[f32]| forward(&tok, &case, &wte, x);
    let num = finite_diff(&f, &wpe, &w, &all_pe, 1e-2);
    assert_fd("dwpe", &dwpe, &num, &all_pe, 1e-4, 1e-2);
}

#[test]
fn embedding_backward_is_deterministic() {
    let mut rng = Rng::new(54);
    let case = &CASES[4];
    let n = case.b * case.t;
    let tok = tokens(&mut rng, n, case.v);
    let dout = rand_vec(&mut rng, n * case.c);
    let dwte0 = rand_vec(&mut rng, case.v * case.c);
    let dwpe0 = rand_vec(&mut rng, case.max_t * case.c);
    let a = backward(&tok, case, &dout, &dwte0, &dwpe0);
    let b = backward(&tok, case, &dout, &dwte0, &dwpe0);
    assert_same_bits("dwte", &a.0, &b.0);
    assert_same_bits("dwpe", &a.1, &b.1);
}

#[test]
fn embedding_bad_arguments_are_clear_errors() {
    let g = gpu();
    let tok = upload_i32(&[2, 3], &[0; 6]);
    let wte = upload(&[5, 4], &[0.0; 20]);
    let wpe = upload(&[3, 4], &[0.0; 12]);
    let out = upload(&[2, 3, 4], &[0.0; 24]);
    let tok_f32 = upload(&[2, 3], &[0.0; 6]);
    let err = format!(
        "{:#}",
        embedding_forward(g, &tok_f32, &wte, &wpe, &out).unwrap_err()
    );
    assert!(err.contains("i32") && err.contains("tokens"), "{err}");
    let err = format!(
        "{:#}",
        embedding_backward(g, &tok_f32, &out, &wte, &wpe).unwrap_err()
    );
    assert!(err.contains("i32") && err.contains("tokens"), "{err}");
    let bad_out = upload(&[2, 4, 4], &[0.0; 32]);
    let err = embedding_forward(g, &tok, &wte, &wpe, &bad_out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("out") && err.contains("[2, 3, 4]"), "{err}");
    let short_wpe = upload(&[2, 4], &[0.0; 8]);
    let err = embedding_forward(g, &tok, &wte, &short_wpe, &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("T = 3") && err.contains("2 positions"),
        "{err}"
    );
    let err = embedding_backward(g, &tok, &out, &wte, &short_wpe)
        .unwrap_err()
        .to_string();
    assert!(err.contains("T = 3"), "{err}");
    let narrow_wpe = upload(&[3, 2], &[0.0; 6]);
    let err = embedding_forward(g, &tok, &wte, &narrow_wpe, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("wpe") && err.contains("[3, 2]"), "{err}");
    let flat_tok = upload_i32(&[6], &[0; 6]);
    let err = embedding_forward(g, &flat_tok, &wte, &wpe, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[B, T]"), "{err}");
    let err = embedding_backward(g, &tok, &out, &out.reshape(&[6, 4]).unwrap(), &wpe)
        .unwrap_err()
        .to_string();
    assert!(err.contains("dwte shares its buffer with dout"), "{err}");
}

/// GPT-2-sized token count (B·T = 8192, V = 50257) with a narrow C so the
/// tables fit WebGPU's default 128 MiB binding limit (about 2 s on lavapipe).
#[test]
fn embedding_backward_gpt2_token_count() {
    let mut rng = Rng::new(55);
    let case = Case {
        b: 8,
        t: 1024,
        max_t: 1024,
        v: 50257,
        c: 16,
    };
    let n = case.b * case.t;
    // Zipf-like repeats: half the positions draw from 64 frequent tokens.
    let tok: Vec<i32> = (0..n)
        .map(|i| {
            let range = if i % 2 == 0 { 64 } else { case.v as u64 };
            rng.below(range) as i32
        })
        .collect();
    let dout = rand_vec(&mut rng, n * case.c);
    let dwte0 = vec![0.0; case.v * case.c];
    let dwpe0 = vec![0.0; case.max_t * case.c];
    let t0 = std::time::Instant::now();
    let (got_te, got_pe) = backward(&tok, &case, &dout, &dwte0, &dwpe0);
    eprintln!("embedding backward N={n}: {:?}", t0.elapsed());
    let (mut te32, mut pe32) = (dwte0.clone(), dwpe0.clone());
    f32_sums(&tok, &case, &dout, &mut te32, &mut pe32);
    assert_same_bits("dwte", &got_te, &te32);
    assert_same_bits("dwpe", &got_pe, &pe32);
}
