//! dropout.wgsl: the Philox mask bit for bit against the CPU reference, the
//! RNG contract (same seed and counter: same mask; a different counter,
//! stream or seed: another mask), the keep rate and the preserved
//! expectation, scaling, and argument errors.

use crate::common::*;
use kiln::kernels::dropout::{apply, DropoutSpec};
use kiln::reference::dropout as r;
use kiln::runtime::{DType, Tensor};

fn rng_tensor(words: [u32; 4]) -> Tensor {
    let t = gpu().zeros(&[4], DType::U32).unwrap();
    t.write_bytes(gpu(), bytemuck::cast_slice(&words)).unwrap();
    t
}

fn run_dropout(x: &[f32], p: f32, words: [u32; 4], stream: u32) -> Vec<f32> {
    let y = poisoned(&[x.len()]);
    let spec = DropoutSpec::new(p).unwrap();
    run(&apply(
        gpu(),
        &upload(&[x.len()], x),
        &rng_tensor(words),
        &y,
        spec,
        stream,
    )
    .unwrap());
    read(&y)
}

fn kept(y: &[f32]) -> Vec<bool> {
    y.iter().map(|v| *v != 0.0).collect()
}

#[test]
fn dropout_mask_matches_the_reference_bit_for_bit() {
    let mut rng = Rng::new(81);
    for (n, p) in [(1, 0.5), (5, 0.1), (1031, 0.3), (4099, 0.9)] {
        let words = [rng.next_u32(), rng.next_u32(), rng.next_u32(), u32::MAX - 3];
        let stream = rng.below(5) as u32;
        // Inputs never 0, so a kept element is told from a dropped one.
        let x: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32).collect();
        let y = run_dropout(&x, p, words, stream);
        let spec = DropoutSpec::new(p).unwrap();
        let want = r::mask(n, words, stream, spec.threshold);
        assert_eq!(kept(&y), want, "n={n} p={p}");
        for (i, v) in y.iter().enumerate() {
            if want[i] {
                assert_eq!(*v, x[i] * spec.scale, "kept element {i} is x/(1 − p)");
            }
        }
    }
}

#[test]
fn dropout_masks_follow_the_rng_contract() {
    let n = 4096;
    let x = vec![1.0f32; n];
    let base = [12345, 0, 7, 0];
    let m = kept(&run_dropout(&x, 0.5, base, 0));
    assert_eq!(
        m,
        kept(&run_dropout(&x, 0.5, base, 0)),
        "same seed and counter"
    );
    for (what, words, stream) in [
        ("next micro-batch", [12345, 0, 8, 0], 0),
        ("counter high word", [12345, 0, 7, 1], 0),
        ("another seed", [12346, 0, 7, 0], 0),
        ("seed high word", [12345, 1, 7, 0], 0),
        ("another dropout node", base, 1),
    ] {
        let other = kept(&run_dropout(&x, 0.5, words, stream));
        // Independent masks at p = 0.5 differ in about half the places.
        let differ = m.iter().zip(&other).filter(|(a, b)| a != b).count();
        assert!(
            (1500..2600).contains(&differ),
            "{what}: {differ} of {n} elements differ"
        );
    }
}

#[test]
fn dropout_keep_rate_and_expectation() {
    // Keep rate within 5σ of 1 − p; the mean of dropout(1) within 5σ of 1.
    let n = 200_003;
    let x = vec![1.0f32; n];
    for (i, p) in [0.1f32, 0.5, 0.9].into_iter().enumerate() {
        let y = run_dropout(&x, p, [99, 1, i as u32, 0], 0);
        let keep = kept(&y).iter().filter(|k| **k).count() as f64 / n as f64;
        let q = 1.0 - p as f64;
        let sigma = (q * (1.0 - q) / n as f64).sqrt();
        assert!((keep - q).abs() < 5.0 * sigma, "p={p}: keep rate {keep}");
        let mean = y.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 5.0 * sigma / q, "p={p}: mean {mean}");
    }
}

#[test]
fn dropout_bad_arguments_are_clear_errors() {
    for p in [1.0, -0.1, f32::NAN, 1.5] {
        let err = DropoutSpec::new(p).unwrap_err().to_string();
        assert!(err.contains("[0, 1)"), "{err}");
    }
    assert_eq!(DropoutSpec::new(0.0).unwrap().threshold, 0);
    let spec = DropoutSpec::new(0.5).unwrap();
    let x = upload(&[3], &[1.0; 3]);
    let wrong = upload_i32(&[4], &[0; 4]);
    let err = apply(gpu(), &x, &wrong, &empty(&[3]), spec, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rng") && err.contains("u32"), "{err}");
    let short = gpu().zeros(&[2], DType::U32).unwrap();
    let err = apply(gpu(), &x, &short, &empty(&[3]), spec, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rng"), "{err}");
}
