//! GPT end to end on the GPU, checked the way llm.c does it:
//! - against PyTorch: logits, loss and every gradient from the reference
//!   state in `tests/fixtures/gpt_reference.safetensors` (written by
//!   `scripts/gpt_reference.py`), and the losses of 10 AdamW steps;
//! - against the independent f64 CPU reference (`kiln::reference::gpt`) on
//!   randomly drawn small configurations;
//! - determinism: two runs give identical bits, and save → load → resume
//!   gives the bits of an uninterrupted run.
//!
//! Tolerances (PyTorch computes in f32 on the CPU with another summation
//! order; we accumulate in f32 on the GPU): logits max abs error ≤ 1e-4,
//! loss ≤ 1e-5, each gradient element within 1e-5 + 1e-3·|ref|, each of the
//! 10 step losses within 1e-4.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln::io::checkpoint::{load_safetensors, tensors_by_name, NamedTensor, TensorData};
use kiln::model::gpt::GptConfig;
use kiln::runtime::{Gpu, GpuOptions, LimitsPolicy};
use kiln::train::grads::grads_pass;
use kiln::train::{OptimizerConfig, Trainer};
use kiln::util::Rng;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let mut opts = GpuOptions::from_env().expect("KILN_* environment");
        opts.limits = LimitsPolicy::WebGpuDefault;
        pollster::block_on(Gpu::new(opts)).unwrap_or_else(|e| {
            panic!("GPT tests need a GPU adapter: {e:#}\n(apt-get install -y mesa-vulkan-drivers gives lavapipe)")
        })
    })
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

struct Reference {
    cfg: GptConfig,
    batch: usize,
    seq: usize,
    params: Vec<(String, Vec<f32>)>,
    inputs: Vec<i32>,
    targets: Vec<i32>,
    t: BTreeMap<String, NamedTensor>,
    meta: BTreeMap<String, String>,
}

impl Reference {
    fn load(name: &str) -> Self {
        let (tensors, meta) = load_safetensors(&fixture(name)).expect("reference fixture");
        let t = tensors_by_name(tensors).unwrap();
        let m = |k: &str| meta[k].parse::<usize>().unwrap();
        let cfg = GptConfig::new(
            m("vocab_size"),
            m("n_positions"),
            m("n_embd"),
            m("n_head"),
            m("n_layer"),
        );
        let (batch, seq) = (m("batch"), m("seq"));
        let params = cfg
            .param_shapes()
            .into_iter()
            .map(|(n, s)| {
                let d = t[&format!("param.{n}")]
                    .f32_with_shape(&s)
                    .unwrap()
                    .to_vec();
                (n, d)
            })
            .collect();
        let inputs = t["inputs"].i32_with_shape(&[batch, seq]).unwrap().to_vec();
        let targets = t["targets"].i32_with_shape(&[batch, seq]).unwrap().to_vec();
        Self {
            cfg,
            batch,
            seq,
            params,
            inputs,
            targets,
            t,
            meta,
        }
    }

    fn f32(&self, name: &str) -> &[f32] {
        match &self.t[name].data {
            TensorData::F32(v) => v,
            _ => panic!("{name} is not f32"),
        }
    }
}

fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

#[test]
fn logits_loss_and_every_gradient_match_pytorch() {
    let r = Reference::load("gpt_reference.safetensors");
    let out = pollster::block_on(grads_pass(
        gpu(),
        &r.cfg,
        &r.params,
        &r.inputs,
        &r.targets,
        r.batch,
        r.seq,
    ))
    .unwrap();
    let logit_err = max_abs(&out.logits, r.f32("logits"));
    let loss_err = (out.loss as f64 - r.f32("loss")[0] as f64).abs();
    eprintln!("logits max abs err {logit_err:.3e}, loss err {loss_err:.3e}");
    assert!(
        logit_err <= 1e-4,
        "logits max abs error {logit_err:e} > 1e-4"
    );
    assert!(loss_err <= 1e-5, "loss error {loss_err:e} > 1e-5");
    assert_eq!(out.grads.len(), r.cfg.param_shapes().len());
    for (name, _, g) in &out.grads {
        let want = r.f32(&format!("grad.{name}"));
        let mut worst = 0.0f64;
        for (i, (a, b)) in g.iter().zip(want).enumerate() {
            let tol = 1e-5 + 1e-3 * (*b as f64).abs();
            let err = (*a as f64 - *b as f64).abs();
            assert!(
                err <= tol,
                "grad.{name}[{i}]: got {a}, PyTorch {b} (err {err:e} > tol {tol:e})"
            );
            worst = worst.max(err / tol);
        }
        eprintln!("grad.{name}: worst error / tolerance = {worst:.4}");
    }
}

fn parity_optimizer(r: &Reference) -> OptimizerConfig {
    let f = |k: &str| r.meta[k].parse::<f32>().unwrap();
    OptimizerConfig {
        lr: f("lr"),
        min_lr: f("lr"),
        warmup_steps: 0,
        decay_steps: u64::MAX,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: f("weight_decay"),
        grad_clip: f("grad_clip"),
        decay_all: false,
    }
}

/// Runs `steps` optimizer steps on the reference batch; returns each step's loss.
fn run_steps(trainer: &mut Trainer, r: &Reference, steps: usize) -> Vec<f32> {
    let batch = (r.inputs.clone(), r.targets.clone());
    (0..steps)
        .map(|_| {
            let p = trainer
                .train_step(std::slice::from_ref(&batch), true)
                .unwrap()
                .unwrap();
            pollster::block_on(p.get(gpu())).unwrap().loss
        })
        .collect()
}

#[test]
fn ten_adamw_steps_follow_pytorch_losses() {
    let r = Reference::load("gpt_reference.safetensors");
    let want = r.f32("losses").to_vec();
    let mut trainer = Trainer::new(
        gpu(),
        &r.cfg,
        &parity_optimizer(&r),
        r.batch,
        r.seq,
        1,
        &r.params,
    )
    .unwrap();
    let got = run_steps(&mut trainer, &r, want.len());
    eprintln!("kiln    {got:?}\npytorch {want:?}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-4, "step {i}: loss {g} vs PyTorch {w}");
    }
    assert!(
        got[9] < got[0] - 1.0,
        "the loss must fall over 10 steps on one batch"
    );
}

#[test]
fn same_seed_same_bits_and_resume_is_exact() {
    let r = Reference::load("gpt_small_v64.safetensors");
    let opt = parity_optimizer(&r);
    let grab = |t: &Trainer| pollster::block_on(kiln::model::download(gpu(), &t.params)).unwrap();
    // Two uninterrupted runs of 6 steps.
    let mut a = Trainer::new(gpu(), &r.cfg, &opt, r.batch, r.seq, 1, &r.params).unwrap();
    let la = run_steps(&mut a, &r, 6);
    let mut b = Trainer::new(gpu(), &r.cfg, &opt, r.batch, r.seq, 1, &r.params).unwrap();
    let lb = run_steps(&mut b, &r, 6);
    assert_eq!(
        la.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        lb.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    let (pa, pb) = (grab(&a), grab(&b));
    for ((n, _, x), (_, _, y)) in pa.iter().zip(&pb) {
        assert!(
            x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits()),
            "{n} differs between identical runs"
        );
    }
    // 3 steps, checkpoint to disk, a fresh trainer from the files, 3 more.
    let dir = std::env::temp_dir().join(format!("kiln-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut c = Trainer::new(gpu(), &r.cfg, &opt, r.batch, r.seq, 1, &r.params).unwrap();
    let mut lc = run_steps(&mut c, &r, 3);
    let state = kiln::train::run::TrainerState {
        step: c.step,
        adamw_t: c.opt.t,
        seed: 0,
        tokens_seen: 0,
        best_val_loss: None,
    };
    kiln::train::run::save_checkpoint(&c, &state, &dir).unwrap();
    drop(c);
    let cfg = kiln::train::checkpoint::load_config(&dir).unwrap();
    assert_eq!(cfg, r.cfg);
    let params = kiln::train::checkpoint::load_params(&dir, &cfg).unwrap();
    let (m, v, t) = kiln::train::checkpoint::load_optimizer(&dir).unwrap();
    let mut d = Trainer::new(gpu(), &cfg, &opt, r.batch, r.seq, 1, &params).unwrap();
    d.opt.load_state(gpu(), &m, &v, t).unwrap();
    d.step = state.step;
    lc.extend(run_steps(&mut d, &r, 3));
    assert_eq!(
        la.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        lc.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        "resumed losses differ: {la:?} vs {lc:?}"
    );
    for ((n, _, x), (_, _, y)) in pa.iter().zip(&grab(&d)) {
        assert!(
            x.iter().zip(y).all(|(u, v)| u.to_bits() == v.to_bits()),
            "{n} differs after resume"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn grads_match_the_cpu_reference_on_random_configs() {
    use kiln::reference::gpt::{forward_backward, GptShape};
    let mut rng = Rng::new(2026);
    for case in 0..4 {
        let heads = 1 + rng.below(3) as usize;
        let head_dim = 1 + rng.below(8) as usize;
        let cfg = GptConfig::new(
            2 + rng.below(60) as usize,
            1 + rng.below(12) as usize,
            heads * head_dim,
            heads,
            1 + rng.below(2) as usize,
        );
        let seq = 1 + rng.below(cfg.n_positions as u64) as usize;
        let batch = 1 + rng.below(3) as usize;
        let mut params = cfg.init_params(case);
        // Non-trivial biases and gains, so every path is exercised.
        for (_, d) in params.iter_mut() {
            for x in d.iter_mut() {
                *x += 0.05 * rng.normal() as f32;
            }
        }
        let inputs: Vec<i32> = (0..batch * seq)
            .map(|_| rng.below(cfg.vocab_size as u64) as i32)
            .collect();
        let targets: Vec<i32> = (0..batch * seq)
            .map(|i| {
                if i % 5 == 3 {
                    -1
                } else {
                    rng.below(cfg.vocab_size as u64) as i32
                }
            })
            .collect();
        let out = pollster::block_on(grads_pass(
            gpu(),
            &cfg,
            &params,
            &inputs,
            &targets,
            batch,
            seq,
        ))
        .unwrap();
        let shape = GptShape {
            vocab_size: cfg.vocab_size,
            n_positions: cfg.n_positions,
            n_embd: cfg.n_embd,
            n_head: cfg.n_head,
            n_layer: cfg.n_layer,
            eps: 1e-5,
        };
        let flat: Vec<Vec<f32>> = params.iter().map(|(_, d)| d.clone()).collect();
        let want = forward_backward(&shape, &flat, &inputs, &targets, batch, seq);
        let logits: Vec<f32> = want.logits.iter().map(|x| *x as f32).collect();
        let err = max_abs(&out.logits, &logits);
        assert!(
            err <= 1e-5,
            "case {case} {cfg:?} B={batch} T={seq}: logits err {err:e}"
        );
        assert!(
            (out.loss as f64 - want.loss).abs() <= 1e-5,
            "case {case}: loss {} vs {}",
            out.loss,
            want.loss
        );
        for ((name, _, g), (wname, w)) in out.grads.iter().zip(&want.grads) {
            assert_eq!(name, wname);
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                let tol = 1e-6 + 1e-3 * b.abs();
                assert!(
                    (*a as f64 - b).abs() <= tol,
                    "case {case} {cfg:?} B={batch} T={seq}: grad.{name}[{i}] = {a} vs reference {b}"
                );
            }
        }
    }
}

#[test]
fn gradient_accumulation_equals_one_big_batch() {
    // Two micro-batches of B rows with the loss scaled by 1/2 give the
    // gradient of one batch of 2B rows (all targets counted, equal counts).
    let r = Reference::load("gpt_small_v64.safetensors");
    let opt = parity_optimizer(&r);
    let n = r.batch * r.seq;
    let mut rng = Rng::new(5);
    let mut tok = |k: usize| -> Vec<i32> {
        (0..k)
            .map(|_| rng.below(r.cfg.vocab_size as u64) as i32)
            .collect()
    };
    let (x1, y1, x2, y2) = (tok(n), tok(n), tok(n), tok(n));
    let mut acc = Trainer::new(gpu(), &r.cfg, &opt, r.batch, r.seq, 2, &r.params).unwrap();
    let p = acc
        .train_step(&[(x1.clone(), y1.clone()), (x2.clone(), y2.clone())], true)
        .unwrap()
        .unwrap();
    let la = pollster::block_on(p.get(gpu())).unwrap();
    let mut big = Trainer::new(gpu(), &r.cfg, &opt, 2 * r.batch, r.seq, 1, &r.params).unwrap();
    let xb = [x1, x2].concat();
    let yb = [y1, y2].concat();
    let p = big.train_step(&[(xb, yb)], true).unwrap().unwrap();
    let lb = pollster::block_on(p.get(gpu())).unwrap();
    assert!(
        (la.loss - lb.loss).abs() < 1e-5,
        "loss {} vs {}",
        la.loss,
        lb.loss
    );
    assert!(
        (la.grad_norm - lb.grad_norm).abs() < 1e-5 * lb.grad_norm.max(1.0),
        "{} vs {}",
        la.grad_norm,
        lb.grad_norm
    );
    // Compare the gradients (still in place after the step); Adam's first
    // update, ±lr·sign(g), would amplify rounding in near-zero gradients.
    let (ga, gb) = (acc.executor().param_grads(), big.executor().param_grads());
    for ((n, a), (_, b)) in ga.iter().zip(&gb) {
        let (a, b) = (a.read_f32(gpu()), b.read_f32(gpu()));
        let (a, b) = (
            pollster::block_on(a).unwrap(),
            pollster::block_on(b).unwrap(),
        );
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let tol = 1e-7 + 1e-4 * y.abs();
            assert!(
                (x - y).abs() <= tol,
                "grad.{n}[{i}]: accumulated {x} vs big batch {y}"
            );
        }
    }
}

#[test]
fn learning_rate_schedule_warms_up_then_follows_a_cosine() {
    let o = OptimizerConfig {
        lr: 1.0,
        min_lr: 0.1,
        warmup_steps: 10,
        decay_steps: 110,
        ..Default::default()
    };
    assert!((o.lr_at(0) - 0.1).abs() < 1e-7);
    assert!((o.lr_at(9) - 1.0).abs() < 1e-7);
    assert!((o.lr_at(10) - 1.0).abs() < 1e-7);
    assert!(
        (o.lr_at(60) - 0.55).abs() < 1e-6,
        "halfway down the cosine: {}",
        o.lr_at(60)
    );
    assert!((o.lr_at(110) - 0.1).abs() < 1e-7 && (o.lr_at(1000) - 0.1).abs() < 1e-7);
    for s in 10..110 {
        assert!(o.lr_at(s + 1) <= o.lr_at(s), "not monotone at {s}");
    }
}
