//! heads.wgsl: token-major ↔ head-major moves are exact permutations.

use crate::common::*;
use kiln::kernels::heads::{from_heads, to_heads, HeadLayout};
use kiln::reference::heads as r;

#[test]
fn qkv_split_and_merge_match_reference_and_invert() {
    let mut rng = Rng::new(31);
    for (b, t, h, d) in [(1, 1, 1, 1), (2, 5, 3, 4), (3, 17, 2, 8), (1, 33, 4, 16)] {
        let c = h * d;
        let s = 3 * c;
        let qkv = rand_vec(&mut rng, b * t * s);
        let src = upload(&[b, t, s], &qkv);
        let back = poisoned(&[b, t, s]);
        for part in 0..3 {
            let l = HeadLayout {
                batch: b,
                seq: t,
                heads: h,
                head_dim: d,
                row_stride: s,
                col: part * c,
            };
            let hm = poisoned(&[b, h, t, d]);
            run(&to_heads(gpu(), &l, &src, &hm).unwrap());
            let got = read(&hm);
            assert_same_bits(
                "to_heads",
                &got,
                &r::to_heads(&qkv, b, t, h, d, s, part * c),
            );
            run(&from_heads(gpu(), &l, &hm, &back).unwrap());
        }
        // The three parts together rebuild every column exactly.
        assert_same_bits("from_heads∘to_heads", &read(&back), &qkv);
    }
}

#[test]
fn from_heads_leaves_other_columns_alone() {
    let (b, t, h, d) = (2, 3, 2, 2);
    let s = 3 * h * d;
    let dst = upload(&[b, t, s], &vec![7.0; b * t * s]);
    let src: Vec<f32> = (0..b * h * t * d).map(|i| i as f32).collect();
    let l = HeadLayout {
        batch: b,
        seq: t,
        heads: h,
        head_dim: d,
        row_stride: s,
        col: h * d,
    };
    run(&from_heads(gpu(), &l, &upload(&[b, h, t, d], &src), &dst).unwrap());
    let mut want = vec![7.0; b * t * s];
    r::from_heads(&src, &mut want, b, t, h, d, s, h * d);
    assert_same_bits("from_heads middle third", &read(&dst), &want);
}

#[test]
fn bad_layouts_are_refused() {
    let x = upload(&[2, 3, 12], &[0.0; 72]);
    let y = upload(&[2, 2, 3, 4], &[0.0; 48]);
    let l = HeadLayout {
        batch: 2,
        seq: 3,
        heads: 2,
        head_dim: 4,
        row_stride: 12,
        col: 8,
    };
    let err = to_heads(gpu(), &l, &x, &y).unwrap_err().to_string();
    assert!(err.contains("do not fit"), "{err}");
    let l = HeadLayout {
        col: 0,
        seq: 4,
        ..l
    };
    assert!(to_heads(gpu(), &l, &x, &y).is_err());
}
