//! adamw.wgsl: AdamW steps (t = 1..5, with and without weight decay, with
//! clipping off, active and inactive) against the f64 reference and against
//! numbers produced by PyTorch; clip_by_global_norm; determinism; errors.
//!
//! Tolerances. The reference does each step in f64 from the same f32 state
//! and rounds the new state to f32; the kernel does ~10 f32 operations per
//! element (WGSL: ≤ 2.5 ulp for division, ≤ 2 ulp for sqrt), so a step
//! differs by a few ulps of the largest intermediate (|p| ≲ 1.5, |m| ≲ 1,
//! v ≲ 1), growing at most linearly through the f32 state over 5 steps:
//!   param: 2e-7 + 4e-6·|want|, m: 1e-7 + 4e-6·|want|, v: 1e-10 + 4e-6·|want|
//! (on lavapipe the largest error is 1/10 of this against the reference,
//! 1/30 against the PyTorch numbers).
//! Formulation errors are orders of magnitude larger: with lr = 0.01 an
//! update is ~1e-2, and a wrong bias correction, decay or clip factor changes
//! it by ≥ 1e-3 relative; 1 − β2 from the f32 β2 instead of the decimal 0.999
//! shifts v by 1.3e-5 relative (caught by `torch_parity`).

use crate::common::*;
use kiln::kernels::adamw::{adamw_step, adamw_uniform, clip_by_global_norm, AdamWConfig};
use kiln::kernels::reduce::sum_squares;
use kiln::reference::adamw as r;
use kiln::reference::reduce::sum_squares as ref_sum_squares;
use kiln::{DType, Tensor};

const P_TOL: (f64, f64) = (2e-7, 4e-6);
const M_TOL: (f64, f64) = (1e-7, 4e-6);
const V_TOL: (f64, f64) = (1e-10, 4e-6);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Clip {
    Off,
    /// max_norm well below ‖g‖: the gradient is scaled down.
    Active,
    /// max_norm well above ‖g‖: clip_grad_norm_ leaves the gradient alone.
    Inactive,
}

/// Parameters of several sizes (one global norm over all their gradients).
const SIZES: [usize; 3] = [1, 257, 4099];

struct State {
    p: Vec<Vec<f32>>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// Runs 5 AdamW steps the way the training loop does (dispatches built once,
/// the step advanced with set_uniform, new gradients written into the same
/// tensors), checking param, m and v against the reference after every step.
fn simulate(cfg: AdamWConfig, clip: Clip, seed: u64) -> State {
    let g = gpu();
    let mut rng = Rng::new(seed);
    let mut want = State {
        p: SIZES.iter().map(|&n| rand_vec(&mut rng, n)).collect(),
        m: SIZES.iter().map(|&n| vec![0.0; n]).collect(),
        v: SIZES.iter().map(|&n| vec![0.0; n]).collect(),
    };
    let params: Vec<Tensor> = want.p.iter().map(|p| upload(&[p.len()], p)).collect();
    let grads: Vec<Tensor> = SIZES.iter().map(|&n| poisoned(&[n])).collect();
    let zeros = |n: usize| g.zeros(&[n], DType::F32).unwrap();
    let ms: Vec<Tensor> = SIZES.iter().map(|&n| zeros(n)).collect();
    let vs: Vec<Tensor> = SIZES.iter().map(|&n| zeros(n)).collect();
    let sumsq = poisoned(&[1]);
    let grad_refs: Vec<&Tensor> = grads.iter().collect();
    let norm_ds = sum_squares(g, &grad_refs, &sumsq).unwrap();
    // ‖g‖ ≈ sqrt(4357 / 3) ≈ 38 for gradients uniform in [-1, 1).
    let max_norm = match clip {
        Clip::Off => None,
        Clip::Active => Some(5.0),
        Clip::Inactive => Some(1000.0),
    };
    let steps: Vec<_> = (0..SIZES.len())
        .map(|k| {
            let gs = max_norm.map(|mn| (&sumsq, mn));
            adamw_step(g, &params[k], &grads[k], &ms[k], &vs[k], gs, &cfg, 1).unwrap()
        })
        .collect();
    for t in 1..=5u32 {
        let gvals: Vec<Vec<f32>> = SIZES.iter().map(|&n| rand_vec(&mut rng, n)).collect();
        for (tg, gv) in grads.iter().zip(&gvals) {
            tg.write_f32(g, gv).unwrap();
        }
        for d in &steps {
            d.set_uniform(g, &adamw_uniform(&cfg, t, max_norm)).unwrap();
        }
        run_all(&norm_ds);
        run_all(&steps);
        // The reference clips with the GPU's Σg² (checked against f64 here),
        // isolating the AdamW kernel from the reduction's rounding.
        let gpu_sumsq = read(&sumsq)[0] as f64;
        let slices: Vec<&[f32]> = gvals.iter().map(|v| v.as_slice()).collect();
        let exact = ref_sum_squares(&slices);
        assert!(
            (gpu_sumsq - exact).abs() <= 1e-5 * exact,
            "Σg² {gpu_sumsq} vs {exact}"
        );
        let rclip = max_norm.map(|mn| (gpu_sumsq, mn));
        if let Some((s, mn)) = rclip {
            let f = r::clip_factor(s, mn);
            match clip {
                Clip::Active => assert!(f < 0.2, "clipping should be active, factor {f}"),
                _ => assert_eq!(f, 1.0, "clipping should be inactive"),
            }
        }
        for k in 0..SIZES.len() {
            let (p, m, v) = (&mut want.p[k], &mut want.m[k], &mut want.v[k]);
            r::adamw_step(p, &gvals[k], m, v, rclip, &cfg, t);
            let what = format!("{clip:?} wd {} t {t} size {}", cfg.weight_decay, SIZES[k]);
            assert_close(
                &format!("param {what}"),
                &read(&params[k]),
                p,
                P_TOL.0,
                P_TOL.1,
            );
            assert_close(&format!("m {what}"), &read(&ms[k]), m, M_TOL.0, M_TOL.1);
            assert_close(&format!("v {what}"), &read(&vs[k]), v, V_TOL.0, V_TOL.1);
        }
    }
    State {
        p: params.iter().map(read).collect(),
        m: ms.iter().map(read).collect(),
        v: vs.iter().map(read).collect(),
    }
}

fn cfg(weight_decay: f32) -> AdamWConfig {
    AdamWConfig {
        lr: 0.01,
        weight_decay,
        ..AdamWConfig::default()
    }
}

fn assert_state_bits(what: &str, a: &State, b: &State) {
    for k in 0..SIZES.len() {
        assert_same_bits(&format!("{what} param {k}"), &a.p[k], &b.p[k]);
        assert_same_bits(&format!("{what} m {k}"), &a.m[k], &b.m[k]);
        assert_same_bits(&format!("{what} v {k}"), &a.v[k], &b.v[k]);
    }
}

#[test]
fn adamw_five_steps_match_reference_without_weight_decay() {
    for clip in [Clip::Off, Clip::Active] {
        simulate(cfg(0.0), clip, 31);
    }
}

#[test]
fn adamw_five_steps_match_reference_with_weight_decay() {
    let off = simulate(cfg(0.1), Clip::Off, 32);
    // Inactive clipping multiplies by exactly 1: same bits as no clipping.
    let inactive = simulate(cfg(0.1), Clip::Inactive, 32);
    assert_state_bits("inactive clip vs none", &off, &inactive);
    // Active clipping really changes the moments.
    let active = simulate(cfg(0.1), Clip::Active, 32);
    let (m_off, m_act) = (off.m[2][0] as f64, active.m[2][0] as f64);
    assert!(
        (m_act - m_off).abs() > 0.5 * m_off.abs(),
        "clipping had no effect on m: {m_act} vs {m_off}"
    );
}

#[test]
fn adamw_is_deterministic() {
    let a = simulate(cfg(0.1), Clip::Active, 33);
    let b = simulate(cfg(0.1), Clip::Active, 33);
    assert_state_bits("two runs", &a, &b);
}

/// A dispatch built with clipping can switch it off through the uniform
/// alone (same block size), giving the bits of a dispatch built without it.
#[test]
fn set_uniform_switches_clipping_off() {
    let g = gpu();
    let mut rng = Rng::new(34);
    let n = 300;
    let (p0, gv) = (rand_vec(&mut rng, n), rand_vec(&mut rng, n));
    let c = cfg(0.1);
    assert_eq!(
        adamw_uniform(&c, 1, None).len(),
        adamw_uniform(&c, 7, Some(1.0)).len()
    );
    let grad = upload(&[n], &gv);
    let sumsq = upload(&[1], &[1e6]); // ‖g‖ = 1000: clipping to 1 would be active
    let run_one = |clip: Option<(&Tensor, f32)>, switch_off: bool| {
        let (p, m, v) = (
            upload(&[n], &p0),
            upload(&[n], &vec![0.0; n]),
            upload(&[n], &vec![0.0; n]),
        );
        let d = adamw_step(g, &p, &grad, &m, &v, clip, &c, 1).unwrap();
        if switch_off {
            d.set_uniform(g, &adamw_uniform(&c, 1, None)).unwrap();
        }
        run(&d);
        (read(&p), read(&m))
    };
    let plain = run_one(None, false);
    let switched = run_one(Some((&sumsq, 1.0)), true);
    let clipped = run_one(Some((&sumsq, 1.0)), false);
    assert_same_bits("switched-off param", &switched.0, &plain.0);
    assert_same_bits("switched-off m", &switched.1, &plain.1);
    // Sanity: with clipping on, m = 0.1·g·1e-3 instead of 0.1·g.
    let want: Vec<f32> = gv.iter().map(|x| (0.1 * *x as f64 * 1e-3) as f32).collect();
    assert_close("clipped m", &clipped.1, &want, 1e-9, 1e-4);
}

/// PyTorch 2.x, torch.optim.AdamW(foreach=False) for 3 steps on 8 values,
/// optionally after torch.nn.utils.clip_grad_norm_ every step (script in the
/// comment of `torch_parity`). Tolerance as for the reference.
mod torch_golden {
    pub const P0: [f32; 8] = [
        -0.00748682,
        0.5364436,
        -0.82304513,
        -0.735939,
        -0.38515437,
        0.26815736,
        -0.01981318,
        0.7928895,
    ];
    pub const G: [[f32; 8]; 3] = [
        [
            -0.088744044,
            0.26461256,
            -0.30221307,
            -0.19656539,
            -0.9553485,
            -0.6622821,
            -0.4122231,
            0.03704357,
        ],
        [
            0.7906704,
            1.2000456,
            -1.3558822,
            -0.87092566,
            0.72643423,
            1.6607759,
            -0.41160035,
            1.4966235,
        ],
        [
            -0.48355007,
            0.3174423,
            2.7164288,
            -2.783011,
            -1.8886138,
            -0.75949574,
            -1.1693999,
            2.5920024,
        ],
    ];
    /// lr 0.01, wd 0.1, clip_grad_norm_(max_norm = 0.5): (param, m, v) after step 3.
    pub const WD_CLIP: [[f32; 8]; 3] = [
        [
            -0.0046413066,
            0.5067885,
            -0.80042315,
            -0.704692,
            -0.36417925,
            0.27744707,
            0.008566579,
            0.76390696,
        ],
        [
            0.003728668,
            0.027942836,
            -0.002451213,
            -0.044674054,
            -0.03720106,
            -0.004384788,
            -0.02955828,
            0.04669669,
        ],
        [
            1.8321294e-05,
            4.5731013e-05,
            0.00012412376,
            9.379235e-05,
            0.0001765219,
            0.00013495675,
            4.0932544e-05,
            0.00011487012,
        ],
    ];
    /// lr 0.05, wd 0, no clipping: (param, m, v) after step 3.
    pub const PLAIN: [[f32; 8]; 3] = [
        [
            0.003913708,
            0.40231544,
            -0.74254495,
            -0.60154986,
            -0.3023399,
            0.29272977,
            0.12600136,
            0.6625081,
        ],
        [
            0.015617064,
            0.16118196,
            0.12513423,
            -0.3726062,
            -0.20086554,
            0.0198754,
            -0.1873741,
            0.3968969,
        ],
        [
            0.00086621504,
            0.0016093189,
            0.009306714,
            0.008541465,
            0.0050049075,
            0.003769993,
            0.0017063298,
            0.008957488,
        ],
    ];
}

/// Matches numbers from PyTorch, produced by:
/// ```python
/// g = torch.Generator().manual_seed(0)
/// p0 = torch.rand(8, generator=g) * 2 - 1
/// grads = [(torch.rand(8, generator=g) * 2 - 1) * (k + 1) for k in range(3)]
/// p = torch.nn.Parameter(p0.clone())
/// opt = torch.optim.AdamW([p], lr=lr, betas=(0.9, 0.999), eps=1e-8,
///                         weight_decay=wd, foreach=False)
/// for k in range(3):
///     p.grad = grads[k].clone()
///     if max_norm is not None:
///         torch.nn.utils.clip_grad_norm_([p], max_norm, foreach=False)
///     opt.step()
/// # then p, opt.state[p]['exp_avg'], opt.state[p]['exp_avg_sq']
/// ```
#[test]
fn torch_parity() {
    use torch_golden::*;
    let g = gpu();
    for (lr, wd, max_norm, want) in [(0.01, 0.1, Some(0.5), WD_CLIP), (0.05, 0.0, None, PLAIN)] {
        let c = AdamWConfig {
            lr,
            weight_decay: wd,
            ..AdamWConfig::default()
        };
        let (p, grad, sumsq) = (upload(&[8], &P0), poisoned(&[8]), poisoned(&[1]));
        let (m, v) = (upload(&[8], &[0.0; 8]), upload(&[8], &[0.0; 8]));
        let norm = sum_squares(g, &[&grad], &sumsq).unwrap();
        let step =
            adamw_step(g, &p, &grad, &m, &v, max_norm.map(|mn| (&sumsq, mn)), &c, 1).unwrap();
        for (k, gk) in G.iter().enumerate() {
            grad.write_f32(g, gk).unwrap();
            step.set_uniform(g, &adamw_uniform(&c, k as u32 + 1, max_norm))
                .unwrap();
            run_all(&norm);
            run(&step);
        }
        let what = format!("torch lr {lr} wd {wd} clip {max_norm:?}");
        assert_close(
            &format!("param {what}"),
            &read(&p),
            &want[0],
            P_TOL.0,
            P_TOL.1,
        );
        assert_close(&format!("m {what}"), &read(&m), &want[1], M_TOL.0, M_TOL.1);
        assert_close(&format!("v {what}"), &read(&v), &want[2], V_TOL.0, V_TOL.1);
    }
}

#[test]
fn clip_by_global_norm_matches_reference() {
    let g = gpu();
    let mut rng = Rng::new(35);
    let sizes = [1, 255, 1031];
    let data: Vec<Vec<f32>> = sizes.iter().map(|&n| rand_vec(&mut rng, n)).collect();
    let ts: Vec<Tensor> = data.iter().map(|d| upload(&[d.len()], d)).collect();
    let refs: Vec<&Tensor> = ts.iter().collect();
    let sumsq = poisoned(&[1]);
    run_all(&sum_squares(g, &refs, &sumsq).unwrap());
    let s = read(&sumsq)[0] as f64;
    // ‖g‖ ≈ 19: 2.0 clips (factor ≈ 0.1), 100.0 does not (factor exactly 1).
    for max_norm in [2.0f32, 100.0] {
        for (d, t) in data.iter().zip(&ts) {
            t.write_f32(g, d).unwrap();
            run(&clip_by_global_norm(g, t, &sumsq, max_norm).unwrap());
            let got = read(t);
            let want = r::clip_by_global_norm(d, s, max_norm);
            // One f32 multiply by a factor computed in f32: ≤ 3 ulps.
            assert_close(
                &format!("clip {max_norm} size {}", d.len()),
                &got,
                &want,
                0.0,
                4e-7,
            );
            if max_norm == 100.0 {
                assert_same_bits("unclipped gradient", &got, d);
            }
        }
    }
}

#[test]
fn bad_arguments_give_clear_errors() {
    let g = gpu();
    let c = AdamWConfig::default();
    let t4 = || upload(&[4], &[0.0; 4]);
    let (p, gr, m, v) = (t4(), t4(), t4(), t4());
    let s = upload(&[1], &[1.0]);
    let err = |r: anyhow::Result<kiln::runtime::Dispatch>| r.unwrap_err().to_string();

    let e = err(adamw_step(g, &p, &gr, &m, &v, None, &c, 0));
    assert!(e.contains("t must be ≥ 1"), "{e}");
    let short = upload(&[3], &[0.0; 3]);
    let e = err(adamw_step(g, &p, &short, &m, &v, None, &c, 1));
    assert!(e.contains("adamw_step") && e.contains("shape [3]"), "{e}");
    let e = err(adamw_step(
        g,
        &p,
        &gr,
        &m,
        &upload(&[2, 2], &[0.0; 4]),
        None,
        &c,
        1,
    ));
    assert!(e.contains("shape [2, 2]"), "{e}");
    let gi = upload_i32(&[4], &[0; 4]);
    let e = err(adamw_step(g, &p, &gi, &m, &v, None, &c, 1));
    assert!(e.contains("i32"), "{e}");
    // 0 = no clipping (issue 10, defect 7: it was refused); negative or NaN are named.
    assert!(adamw_step(g, &p, &gr, &m, &v, Some((&s, 0.0)), &c, 1).is_ok());
    let e = err(adamw_step(g, &p, &gr, &m, &v, Some((&s, -1.0)), &c, 1));
    assert!(e.contains("max_norm") && e.contains("got -1"), "{e}");
    let e = err(adamw_step(g, &p, &gr, &m, &v, Some((&s, f32::NAN)), &c, 1));
    assert!(e.contains("got NaN"), "{e}");
    let e = err(adamw_step(g, &p, &gr, &m, &v, Some((&t4(), 1.0)), &c, 1));
    assert!(e.contains("sumsq has 4 elements"), "{e}");
    let bad = AdamWConfig { beta2: 1.0, ..c };
    let e = err(adamw_step(g, &p, &gr, &m, &v, None, &bad, 1));
    assert!(e.contains("beta2"), "{e}");
    // param and grad as views of one buffer cannot be bound together.
    let both = g.zeros(&[128], DType::F32).unwrap();
    let (pv, gv) = (both.view(0, &[4]).unwrap(), both.view(64, &[4]).unwrap());
    let e = err(adamw_step(g, &pv, &gv, &m, &v, None, &c, 1));
    assert!(e.contains("share"), "{e}");

    let e = err(clip_by_global_norm(g, &p, &t4(), 1.0));
    assert!(
        e.contains("clip_by_global_norm") && e.contains("sumsq"),
        "{e}"
    );
    let e = err(clip_by_global_norm(g, &p, &s, f32::NAN));
    assert!(e.contains("max_norm"), "{e}");
}

/// Issue 10: a non-finite loss or Σg² makes the step a no-op (parameters
/// and moments keep their bits), the guard counts it and records the first
/// bad step; sticky mode skips every later step too.
#[test]
fn guard_skips_non_finite_steps_and_counts_them() {
    use kiln::kernels::guard::{guard_uniform, nonfinite_guard, STATE_WORDS};
    let g = gpu();
    let c = AdamWConfig::default();
    let p0 = [0.5f32, -1.0, 2.0, 0.25];
    let (p, m, v) = (
        upload(&[4], &p0),
        upload(&[4], &[0.0; 4]),
        upload(&[4], &[0.0; 4]),
    );
    let grad = upload(&[4], &[0.1, 0.2, -0.3, 0.4]);
    let sumsq = upload(&[1], &[0.0]);
    let losses = upload(&[2], &[1.0, 2.0]);
    let state = g.zeros(&[STATE_WORDS], DType::U32).unwrap();
    let norm = sum_squares(g, &[&grad], &sumsq).unwrap();
    let update = adamw_step(g, &p, &grad, &m, &v, Some((&sumsq, 0.0)), &c, 1).unwrap();
    let run = |sticky: bool, step: u64, loss: [f32; 2], gr: [f32; 4]| {
        let guard = nonfinite_guard(g, &losses, 2, &sumsq, &state, sticky).unwrap();
        guard
            .set_uniform(g, &guard_uniform(step, 2, sticky))
            .unwrap();
        losses.write_f32(g, &loss).unwrap();
        grad.write_f32(g, &gr).unwrap();
        let mut enc = g.device().create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in &norm {
                d.encode(&mut pass);
            }
            guard.encode(&mut pass);
            update.encode(&mut pass);
        }
        g.queue().submit([enc.finish()]);
        let read = |t: &Tensor| pollster::block_on(t.read_f32(g)).unwrap();
        let words = pollster::block_on(state.read_u32(g)).unwrap();
        (read(&p), read(&m), words)
    };
    let fine = [0.1, 0.2, -0.3, 0.4];
    let (p1, m1, w) = run(false, 0, [1.0, 2.0], fine);
    assert_ne!(p1, p0.to_vec(), "a finite step updates");
    assert_eq!(w[..3], [0, 0, 0]);
    for (i, (loss, gr)) in [
        ([f32::NAN, 1.0], fine),
        ([1.0, f32::INFINITY], fine),
        ([1.0, 1.0], [0.1, f32::NAN, 0.0, 0.0]),
        ([1.0, 1.0], [3e38, 3e38, 0.0, 0.0]), // Σg² overflows
    ]
    .into_iter()
    .enumerate()
    {
        let (p2, m2, w) = run(false, 7 + i as u64, loss, gr);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p2), bits(&p1), "case {i}: parameters unchanged");
        assert_eq!(bits(&m2), bits(&m1), "case {i}: moments unchanged");
        assert_eq!(
            w[..3],
            [i as u32 + 1, 8, 1],
            "case {i}: counted, first bad step 8"
        );
    }
    // Not sticky: a finite step updates again. Sticky: it is skipped.
    let (p3, _, w) = run(false, 20, [1.0, 1.0], fine);
    assert_ne!(p3, p1);
    assert_eq!(w[..3], [4, 8, 0]);
    let (p4, _, w) = run(true, 21, [1.0, 1.0], fine);
    assert_eq!(p4, p3, "sticky: every step after a bad one is skipped");
    assert_eq!(w[..3], [5, 8, 1]);
}
