//! accuracy.wgsl: argmax against targets over counted rows, as the f64
//! reference in `kiln::ops::accuracy` computes it; ties go to the lowest
//! index (torch.argmax); ignored and out-of-range targets are not counted.

use crate::common::*;
use kiln::graph::{HostTensor, Op};
use kiln::kernels::accuracy::accuracy;
use kiln::ops::accuracy::Accuracy;

fn reference(logits: &[f32], rows: usize, v: usize, t: &[i32], ignore: i32) -> f32 {
    let op = Accuracy {
        ignore_index: ignore,
    };
    let l = HostTensor::from_f32(&[rows, v], logits);
    let tt = HostTensor::from_i32(&[rows], t);
    op.reference(&[&l, &tt]).unwrap()[0].data[0] as f32
}

#[test]
fn accuracy_matches_reference_on_awkward_shapes() {
    let mut rng = Rng::new(31);
    for (rows, v) in [(1, 1), (3, 2), (17, 7), (5, 257), (70, 1000)] {
        let mut logits = rand_vec(&mut rng, rows * v);
        // Ties: some rows repeat their maximum; integer-valued logits tie often.
        for x in logits.iter_mut().take(rows * v / 2) {
            *x = (*x * 2.0).round();
        }
        let targets: Vec<i32> = (0..rows)
            .map(|r| match r % 5 {
                3 => -100,
                4 => v as i32 + 2, // out of range: not counted
                _ => rng.below(v as u64) as i32,
            })
            .collect();
        let (tl, tt, acc) = (
            upload(&[rows, v], &logits),
            upload_i32(&[rows], &targets),
            poisoned(&[1]),
        );
        run_all(&accuracy(gpu(), &tl, &tt, &acc, -100).unwrap());
        let want = reference(&logits, rows, v, &targets, -100);
        assert_eq!(read(&acc)[0], want, "rows {rows} V {v}");
    }
}

#[test]
fn every_target_hit_missed_or_ignored() {
    // Row r has its maximum at r % 3; targets hit rows 0 and 2, miss row 1.
    let logits = [5.0, 1.0, 1.0, 0.0, 2.0, 9.0, 3.0, 3.0, 0.0];
    let (tl, acc) = (upload(&[3, 3], &logits), poisoned(&[1]));
    for (targets, want) in [
        ([0, 2, 0], 1.0),
        ([0, 1, 0], 2.0 / 3.0),
        ([-100, -100, -100], 0.0),
    ] {
        let tt = upload_i32(&[3], &targets);
        run_all(&accuracy(gpu(), &tl, &tt, &acc, -100).unwrap());
        assert!((read(&acc)[0] - want).abs() < 1e-7, "{targets:?}");
    }
    // Ties go to the lowest index, as torch.argmax: row 2 is [3, 3, 0].
    let tt = upload_i32(&[3], &[-100, -100, 0]);
    run_all(&accuracy(gpu(), &tl, &tt, &acc, -100).unwrap());
    assert_eq!(read(&acc)[0], 1.0);
    let bad = upload_i32(&[2], &[0, 0]);
    assert!(accuracy(gpu(), &tl, &bad, &acc, -100).is_err());
}
