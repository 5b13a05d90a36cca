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

/// The op through the graph: the trainer's side of the RNG contract is
/// played here by writing "kiln.rng" before each run. Two dropout layers
/// (streams 0 and 1); the forward matches the op's reference, the gradient
/// is the same masks applied to the output gradient, the same words give
/// the same bits, a new micro-batch counter new masks.
#[test]
fn dropout_op_follows_the_rng_contract_through_the_graph() {
    use kiln::graph::eval::{evaluate, Values};
    use kiln::graph::exec::TensorMap;
    use kiln::graph::{Executor, Graph, GraphOptions, HostTensor, Init};
    use kiln::ops::dropout::RNG_INPUT;

    let (rows, c, p) = (3, 50, 0.4f32);
    let mut rng = Rng::new(84);
    let xv: Vec<f32> = (0..rows * c).map(|i| 1.0 + (i % 5) as f32).collect();
    let wv = rand_vec(&mut rng, rows * c);
    let build = || {
        let mut g = Graph::new(GraphOptions {
            dropout: true,
            ..Default::default()
        });
        let x = g.param("x", &[rows, c], Init::Zeros).unwrap();
        let a = g.dropout(x, p).unwrap();
        let y = g.dropout(a, p).unwrap();
        g.keep(y);
        let w = g.input("w", &[rows * c, 1], DType::F32);
        let flat = g.reshape(y, &[1, rows * c]).unwrap();
        let s = g.linear(flat, w, None, false).unwrap();
        let loss = g.reshape(s, &[1]).unwrap();
        (g, x, y, w, loss)
    };
    let run_with = |words: [u32; 4]| -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (mut g, x, y, w, loss) = build();
        // The CPU reference of the same graph, same words.
        let mut values = Values::new();
        values.insert(x, HostTensor::from_f32(&[rows, c], &xv));
        values.insert(w, HostTensor::from_f32(&[rows * c, 1], &wv));
        let rng_id = g.rng_input();
        values.insert(
            rng_id,
            HostTensor::new(&[4], words.iter().map(|v| *v as f64).collect()).unwrap(),
        );
        evaluate(&g, &mut values).unwrap();
        let want = values[&y].to_f32();
        g.backward(&[(loss, 1.0)], 1.0).unwrap();
        let mut params = TensorMap::new();
        params.insert("x".into(), upload(&[rows, c], &xv));
        let exec = Executor::new(gpu(), g, &params).unwrap();
        exec.named("w").unwrap().write_f32(gpu(), &wv).unwrap();
        exec.named(RNG_INPUT)
            .unwrap()
            .write_bytes(gpu(), bytemuck::cast_slice(&words))
            .unwrap();
        exec.run();
        let got = read(exec.tensor(y).unwrap());
        assert_close("dropout op vs reference", &got, &want, 0.0, 1e-6);
        (got, read(exec.param_grad("x").unwrap()), want)
    };
    let words = [7, 0, 3, 0];
    let (y, dx, _) = run_with(words);
    // dL/dx = w ⊙ mask₀ ⊙ mask₁ · scale²: nonzero exactly where y is.
    let spec = DropoutSpec::new(p).unwrap();
    for i in 0..rows * c {
        let want = if y[i] != 0.0 {
            wv[i] * spec.scale * spec.scale
        } else {
            0.0
        };
        assert!(
            (dx[i] - want).abs() <= 1e-6 * want.abs(),
            "dx[{i}] = {}, want {want}",
            dx[i]
        );
    }
    let (y2, dx2, _) = run_with(words);
    assert_same_bits("same words, same masks", &y, &y2);
    assert_same_bits("same words, same gradient", &dx, &dx2);
    let (y3, _, _) = run_with([7, 0, 4, 0]);
    let differ = y
        .iter()
        .zip(&y3)
        .filter(|(a, b)| (**a == 0.0) != (**b == 0.0))
        .count();
    assert!(
        differ > 10,
        "the next micro-batch must draw new masks ({differ} differ)"
    );
}
