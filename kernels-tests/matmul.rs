//! matmul.wgsl: every variant, layout, batch stride, bias, alpha and beta
//! against the f64 reference.
//!
//! Tolerance: inputs are uniform in [-1, 1), so each of the K products is at
//! most 1 in size and a sum has magnitude about √(K/9). f32 accumulation in
//! any fixed order errs by roughly K·2⁻²⁴·|partial sums| in the worst case and
//! far less typically; we allow max |err| ≤ 1e-5·√K·max(1, |alpha|) plus 1e-6
//! for the bias and beta·C additions. That is ~100× the error observed and
//! still far below what a wrong index (error ~0.1–1) produces.

use crate::common::*;
use kiln::kernels::matmul::{self as mm, MatmulSpec, MatmulVariant};
use kiln::reference::matmul as r;
use kiln::runtime::DType;

const SHAPES: [(usize, usize, usize); 5] = [
    (1, 1, 1),
    (1, 7, 13),
    (33, 65, 17),
    (130, 70, 257),
    (64, 64, 64),
];

const TRANSPOSES: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

fn tolerance(spec: &MatmulSpec) -> f64 {
    1e-5 * (spec.k as f64).sqrt() * (spec.alpha.abs() as f64).max(1.0) + 1e-6
}

/// Inputs for `spec`: A, B (uniform [-1, 1)), bias, and the initial C, sized
/// exactly to what the strides need. Gaps between batch items of C hold 7.0,
/// which must survive. With `poison`, C's initial contents are NaN.
struct Case {
    a: Vec<f32>,
    b: Vec<f32>,
    bias: Option<Vec<f32>>,
    c: Vec<f32>,
}

fn case(spec: &MatmulSpec, rng: &mut Rng, with_bias: bool, poison: bool) -> Case {
    let len = |stride: usize, size: usize| (spec.batch - 1) * stride + size;
    let a = rand_vec(rng, len(spec.stride_a, spec.m * spec.k));
    let b = rand_vec(rng, len(spec.stride_b, spec.k * spec.n));
    let bias = with_bias.then(|| rand_vec(rng, spec.n));
    let mut c = vec![7.0; len(spec.stride_c, spec.m * spec.n)];
    for item in 0..spec.batch {
        let start = item * spec.stride_c;
        let fill = rand_vec(rng, spec.m * spec.n);
        for (i, v) in fill.into_iter().enumerate() {
            c[start + i] = if poison { f32::NAN } else { v };
        }
    }
    Case { a, b, bias, c }
}

/// Runs `variant` on the case and returns the whole C buffer and the dispatch label.
fn run_gpu(spec: &MatmulSpec, variant: Option<MatmulVariant>, x: &Case) -> (Vec<f32>, String) {
    let (ta, tb) = (upload(&[x.a.len()], &x.a), upload(&[x.b.len()], &x.b));
    let tbias = x.bias.as_ref().map(|v| upload(&[v.len()], v));
    let tc = upload(&[x.c.len()], &x.c);
    let d = match variant {
        Some(v) => mm::matmul_with(gpu(), spec, v, &ta, &tb, tbias.as_ref(), &tc),
        None => mm::matmul(gpu(), spec, &ta, &tb, tbias.as_ref(), &tc),
    }
    .unwrap_or_else(|e| panic!("{spec:?}: {e:#}"));
    run(&d);
    (read(&tc), d.label.clone())
}

fn check(what: &str, spec: &MatmulSpec, variant: Option<MatmulVariant>, x: &Case) -> String {
    let (got, label) = run_gpu(spec, variant, x);
    let want = r::matmul(spec, &x.a, &x.b, x.bias.as_deref(), &x.c);
    let what = format!("{what} [{label}] {spec:?}");
    assert_close(&what, &got, &want, tolerance(spec), 0.0);
    label
}

#[test]
fn default_variant_matches_reference_for_all_transposes() {
    let mut rng = Rng::new(101);
    for (m, n, k) in SHAPES {
        for (ta, tb) in TRANSPOSES {
            let spec = MatmulSpec::new(m, n, k).trans_a(ta).trans_b(tb);
            let x = case(&spec, &mut rng, false, true);
            check("default", &spec, None, &x);
        }
    }
}

#[test]
fn bias_alpha_and_beta_accumulation() {
    let mut rng = Rng::new(102);
    for (m, n, k) in [(1, 7, 13), (33, 65, 17), (64, 64, 64)] {
        for (ta, tb) in TRANSPOSES {
            let base = MatmulSpec::new(m, n, k).trans_a(ta).trans_b(tb);
            // Bias and alpha, C overwritten (poisoned C must not leak).
            let spec = base.alpha(-1.75);
            check(
                "bias+alpha",
                &spec,
                None,
                &case(&spec, &mut rng, true, true),
            );
            // Gradient accumulation: C = 0.5·A·B + bias + 1·C, and beta ≠ 1.
            for beta in [1.0, -0.25] {
                let spec = base.alpha(0.5).beta(beta);
                check("beta", &spec, None, &case(&spec, &mut rng, true, false));
            }
        }
    }
}

#[test]
fn batched_with_gaps_and_broadcast() {
    let mut rng = Rng::new(103);
    for (m, n, k) in [(3, 5, 7), (33, 65, 17), (20, 12, 36)] {
        for (ta, tb) in TRANSPOSES {
            let base = MatmulSpec::new(m, n, k).trans_a(ta).trans_b(tb);
            let contiguous = base.batched(3);
            check(
                "contiguous batch",
                &contiguous,
                None,
                &case(&contiguous, &mut rng, true, true),
            );
            // Padded strides (C gaps keep their 7.0) and, separately, one
            // shared A or B for every item (stride 0).
            let (sa, sb, sc) = (m * k + 4, k * n + 8, m * n + 12);
            for strides in [(sa, sb, sc), (0, sb, sc), (sa, 0, sc)] {
                let spec = base.batched(4).strides(strides.0, strides.1, strides.2);
                check(
                    "strided batch",
                    &spec,
                    None,
                    &case(&spec, &mut rng, false, true),
                );
                let spec = spec.beta(1.0);
                check(
                    "strided batch, beta",
                    &spec,
                    None,
                    &case(&spec, &mut rng, false, false),
                );
            }
        }
    }
}

#[test]
fn every_variant_on_awkward_shapes() {
    // Shapes chosen so that, across the transposes, each operand is sometimes
    // vec4-aligned and sometimes not (all four tiled entry points run).
    let shapes = [
        (36, 44, 20),
        (33, 65, 17),
        (40, 65, 17),
        (37, 44, 19),
        (5, 3, 24),
    ];
    let mut rng = Rng::new(104);
    for (name, variant) in mm::variants() {
        let mut entries = std::collections::BTreeSet::new();
        for (m, n, k) in shapes {
            for (ta, tb) in TRANSPOSES {
                let spec = MatmulSpec::new(m, n, k).trans_a(ta).trans_b(tb).alpha(1.5);
                let label = check(
                    &name,
                    &spec,
                    Some(variant),
                    &case(&spec, &mut rng, true, true),
                );
                entries.insert(
                    label
                        .rsplit("::")
                        .next()
                        .unwrap()
                        .trim_end_matches(')')
                        .to_string(),
                );
            }
        }
        // A batched case with strides that break vec4 alignment.
        let spec = MatmulSpec::new(36, 44, 20)
            .batched(2)
            .strides(36 * 20 + 1, 20 * 44 + 2, 36 * 44 + 3)
            .beta(0.5);
        check(
            &name,
            &spec,
            Some(variant),
            &case(&spec, &mut rng, true, false),
        );
        if let MatmulVariant::Tiled { vec4: true, .. } | MatmulVariant::Direct { vec4: true, .. } =
            variant
        {
            assert_eq!(
                entries.len(),
                4,
                "{name}: expected all four of the _ss/_sv/_vs/_vv entry points to run, got {entries:?}"
            );
        }
    }
}

/// The autotuner may pick any variant per shape, so every variant must give
/// the very same bits: each sums its products with one fma per k in
/// increasing k from zero, and rows or steps of K past the matrix only add
/// exact zeros. (Shapes and layouts as in the test above, so its compiled
/// pipelines are reused.)
#[test]
fn every_variant_gives_the_same_bits() {
    let mut rng = Rng::new(107);
    for (m, n, k) in [(36, 44, 20), (33, 65, 17)] {
        for (ta, tb) in TRANSPOSES {
            let spec = MatmulSpec::new(m, n, k).trans_a(ta).trans_b(tb).alpha(1.5);
            let x = case(&spec, &mut rng, true, false);
            let (want, _) = run_gpu(&spec, Some(MatmulVariant::Naive), &x);
            for (name, variant) in mm::variants() {
                let (got, label) = run_gpu(&spec, Some(variant), &x);
                assert_same_bits(&format!("{name} [{label}] {spec:?}"), &got, &want);
            }
        }
    }
}

#[test]
fn batch_beyond_the_grid_limit_is_folded() {
    // 70_000 items > 65_535 workgroups along z: the wrapper folds the batch into y.
    let batch = 70_000;
    let spec = MatmulSpec::new(1, 2, 3).batched(batch).trans_b(true);
    let mut rng = Rng::new(105);
    let x = case(&spec, &mut rng, false, true);
    let (got, _) = run_gpu(&spec, Some(MatmulVariant::Naive), &x);
    let want = r::matmul(&spec, &x.a, &x.b, None, &x.c);
    assert_close("folded batch", &got, &want, tolerance(&spec), 0.0);
}

#[test]
fn runs_are_bit_identical() {
    let mut rng = Rng::new(106);
    let spec = MatmulSpec::new(130, 70, 257).batched(2).beta(0.5);
    let x = case(&spec, &mut rng, true, false);
    let variants = [
        None,
        Some(MatmulVariant::Naive),
        Some(MatmulVariant::Tiled {
            bm: 128,
            bn: 128,
            bk: 8,
            tm: 8,
            tn: 8,
            vec4: true,
        }),
        Some(MatmulVariant::Direct {
            tm: 16,
            tn: 16,
            vec4: true,
        }),
    ];
    for v in variants {
        let (first, label) = run_gpu(&spec, v, &x);
        let (second, _) = run_gpu(&spec, v, &x);
        assert_same_bits(&label, &first, &second);
    }
}

#[test]
fn bad_arguments_give_clear_errors() {
    let g = gpu();
    let spec = MatmulSpec::new(4, 5, 6);
    let a = upload(&[4, 6], &[0.5; 24]);
    let b = upload(&[6, 5], &[0.5; 30]);
    let c = upload(&[4, 5], &[0.0; 20]);
    let err = |r: anyhow::Result<kiln::runtime::Dispatch>| r.unwrap_err().to_string();

    let small_b = upload(&[5, 5], &[0.0; 25]);
    let e = err(mm::matmul(g, &spec, &a, &small_b, None, &c));
    assert!(e.contains("B has 25 elements") && e.contains("30"), "{e}");
    let e = err(mm::matmul(g, &spec.batched(2), &a, &b, None, &c));
    assert!(e.contains("A has 24 elements") && e.contains("48"), "{e}");
    let bias = upload(&[4], &[0.0; 4]);
    let e = err(mm::matmul(g, &spec, &a, &b, Some(&bias), &c));
    assert!(e.contains("bias") && e.contains("expected N = 5"), "{e}");
    let ai = g.empty(&[24], DType::I32).unwrap();
    let e = err(mm::matmul(g, &spec, &ai, &b, None, &c));
    assert!(e.contains("i32"), "{e}");
    let e = err(mm::matmul(g, &MatmulSpec::new(4, 0, 6), &a, &b, None, &c));
    assert!(e.contains("at least 1"), "{e}");
    let e = err(mm::matmul(g, &spec, &a, &b, None, &a));
    assert!(e.contains("shares its buffer"), "{e}");
    let e = err(mm::matmul(
        g,
        &spec.batched(2).strides(0, 0, 0),
        &a,
        &b,
        None,
        &c,
    ));
    assert!(e.contains("stride_c"), "{e}");
    let bad = MatmulVariant::Tiled {
        bm: 64,
        bn: 64,
        bk: 16,
        tm: 3,
        tn: 4,
        vec4: false,
    };
    let e = err(mm::matmul_with(g, &spec, bad, &a, &b, None, &c));
    assert!(e.contains("register tile"), "{e}");
    let odd = MatmulVariant::Direct {
        tm: 6,
        tn: 8,
        vec4: true,
    };
    let e = err(mm::matmul_with(g, &spec, odd, &a, &b, None, &c));
    assert!(e.contains("register tile"), "{e}");
    let huge = MatmulVariant::Tiled {
        bm: 128,
        bn: 128,
        bk: 32,
        tm: 8,
        tn: 8,
        vec4: true,
    };
    let e = err(mm::matmul_with(g, &spec, huge, &a, &b, None, &c));
    assert!(e.contains("workgroup memory"), "{e}");
}

/// Issue 10's soak found host memory growing 15 MB per training step on
/// lavapipe: Mesa 22.3 leaks 2.3 MB on every dispatch of the 16-wide
/// transposed-A direct kernel. The default variant avoids it; this checks
/// that repeated dispatches of a weight-gradient shape do not grow the
/// process (Linux only; elsewhere there is no RSS to read).
#[test]
fn default_transposed_a_matmul_does_not_grow_host_memory() {
    use kiln::kernels::matmul::{matmul, MatmulSpec};
    let Some(_) = kiln::util::mem::host_rss_bytes() else {
        eprintln!("SKIPPED: no /proc/self/statm here");
        return;
    };
    let g = gpu();
    let (m, n, k) = (32, 32, 128);
    let spec = MatmulSpec::new(m, n, k).trans_a(true).beta(1.0);
    let a = g.upload_f32(&[k, m], &vec![0.5; m * k]).unwrap();
    let b = g.upload_f32(&[k, n], &vec![0.5; n * k]).unwrap();
    let c = g.upload_f32(&[m, n], &vec![0.0; m * n]).unwrap();
    let d = matmul(g, &spec, &a, &b, None, &c).unwrap();
    let run = |times: usize| {
        for _ in 0..times {
            let mut enc = g.device().create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                d.encode(&mut pass);
            }
            g.queue().submit([enc.finish()]);
            let _ = g.device().poll(wgpu::PollType::wait_indefinitely());
        }
    };
    run(5);
    // Other tests share the process: the least growth of three windows is
    // this kernel's (a leak grows every window by ~90 MB).
    let grown = (0..3)
        .map(|_| {
            let before = kiln::util::mem::host_rss_bytes().unwrap();
            run(40);
            kiln::util::mem::host_rss_bytes()
                .unwrap()
                .saturating_sub(before)
        })
        .min()
        .unwrap();
    assert!(
        grown < 16 << 20,
        "{}: 40 dispatches grew the process by {:.1} MB",
        d.label,
        grown as f64 / 1e6
    );
}
