//! GPT end to end on the GPU, checked the way llm.c does it:
//! - against PyTorch: logits, loss and every gradient from the reference
//!   state in `tests/fixtures/gpt_reference.safetensors` (written by
//!   `scripts/gpt_reference.py`), and the losses of 10 AdamW steps;
//! - against the independent f64 CPU reference (`kiln::reference::gpt`) on
//!   randomly drawn small configurations;
//! - determinism: two runs give identical bits, and save → load → resume
//!   gives the bits of an uninterrupted run;
//! - attention: the default is the fused kernel; the unfused path is checked
//!   against PyTorch and the CPU reference too, and against the fused one.
//!
//! Tolerances (PyTorch computes in f32 on the CPU with another summation
//! order; we accumulate in f32 on the GPU): logits max abs error ≤ 1e-4,
//! loss ≤ 1e-5, each gradient element within 1e-5 + 1e-3·|ref|, each of the
//! 10 step losses within 1e-4.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use std::sync::Arc;

use kiln::data::Batch;
use kiln::graph::{AttentionImpl, Executor};
use kiln::io::checkpoint::{load_safetensors, tensors_by_name, NamedTensor, TensorData};
use kiln::model::gpt2::{Gpt2, GptConfig};
use kiln::model::{build, upload_params, BuildOptions, Dims, Model};
use kiln::runtime::{Gpu, GpuOptions, LimitsPolicy};
use kiln::train::grads::{grads_pass, GradsResult};
use kiln::train::{OptimizerConfig, Trainer, TrainerOptions};
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

fn gpt(cfg: &GptConfig) -> Arc<dyn Model> {
    Arc::new(Gpt2::new(cfg.clone()).unwrap())
}

fn lm_batch(x: &[i32], y: &[i32], b: usize, t: usize) -> Batch {
    Batch::new()
        .with_i32("input_ids", &[b, t], x.to_vec())
        .with_i32("targets", &[b, t], y.to_vec())
}

/// A GPT trainer on micro-batches of [B, T] with `accum` micro-batches per step.
fn trainer(
    cfg: &GptConfig,
    opt: &OptimizerConfig,
    b: usize,
    t: usize,
    accum: usize,
    params: &[(String, Vec<f32>)],
) -> Trainer {
    let m = gpt(cfg);
    let layout = m.input_specs(Dims { batch: b, seq: t });
    Trainer::new(
        gpu(),
        m,
        opt,
        &layout,
        params,
        &TrainerOptions {
            grad_accum: accum,
            ..Default::default()
        },
    )
    .unwrap()
}

/// One forward and backward pass, everything read back.
#[allow(clippy::too_many_arguments)]
fn grads_with(
    cfg: &GptConfig,
    params: &[(String, Vec<f32>)],
    x: &[i32],
    y: &[i32],
    b: usize,
    t: usize,
    attention: AttentionImpl,
) -> GradsResult {
    pollster::block_on(grads_pass(
        gpu(),
        gpt(cfg).as_ref(),
        params,
        &lm_batch(x, y, b, t),
        attention,
    ))
    .unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

fn check_pytorch_parity(attention: AttentionImpl) {
    let r = Reference::load("gpt_reference.safetensors");
    let out = grads_with(
        &r.cfg, &r.params, &r.inputs, &r.targets, r.batch, r.seq, attention,
    );
    let logit_err = max_abs(out.output("logits").unwrap(), r.f32("logits"));
    let loss_err = (out.loss as f64 - r.f32("loss")[0] as f64).abs();
    eprintln!("{attention:?}: logits max abs err {logit_err:.3e}, loss err {loss_err:.3e}");
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
        eprintln!("{attention:?}: grad.{name}: worst error / tolerance = {worst:.4}");
    }
}

/// The default (fused attention) graph against PyTorch.
#[test]
fn logits_loss_and_every_gradient_match_pytorch() {
    assert_eq!(AttentionImpl::default(), AttentionImpl::Fused);
    check_pytorch_parity(AttentionImpl::default());
}

/// The unfused attention path stays selectable and exact.
#[test]
fn logits_loss_and_every_gradient_match_pytorch_with_unfused_attention() {
    check_pytorch_parity(AttentionImpl::Unfused);
}

/// Fused attention keeps no T×T tensor and needs fewer dispatches than the
/// unfused path; both give the same loss and gradients to f32 rounding.
#[test]
fn fused_attention_drops_the_txt_tensors_and_dispatches() {
    let r = Reference::load("gpt_reference.safetensors");
    let (b, t) = (r.batch, r.seq);
    let mut counts = Vec::new();
    for attention in [AttentionImpl::Unfused, AttentionImpl::Fused] {
        let m = gpt(&r.cfg);
        let built = build(
            m.as_ref(),
            &m.input_specs(Dims { batch: b, seq: t }),
            &BuildOptions {
                training: true,
                attention,
                ..Default::default()
            },
        )
        .unwrap();
        let txt = built
            .graph
            .tensors
            .iter()
            .filter(|d| d.shape.ends_with(&[t, t]))
            .count();
        let attn_steps = built
            .graph
            .steps
            .iter()
            .filter(|s| s.name.starts_with("attention"))
            .count();
        let params = upload_params(gpu(), &r.cfg.param_shapes(), &r.params).unwrap();
        let exec = Executor::new(gpu(), built.graph, &params).unwrap();
        let n = exec.dispatch_count();
        eprintln!(
            "{attention:?}: {n} dispatches per step, {txt} [.., T, T] tensors, {attn_steps} fused \
             attention steps, planned activations {:.2} MiB",
            exec.plan.planned_bytes() as f64 / (1 << 20) as f64
        );
        match attention {
            AttentionImpl::Unfused => assert_eq!(txt, 4 * r.cfg.n_layer),
            AttentionImpl::Fused => {
                assert_eq!(txt, 0, "the fused graph holds a T×T tensor");
                assert_eq!(attn_steps, 2 * r.cfg.n_layer);
            }
        }
        counts.push(n);
    }
    // Per layer: scores matmul + softmax + p·v become one forward dispatch;
    // two matmuls, softmax backward and two more become three backward passes.
    assert_eq!(counts[0] - counts[1], 4 * r.cfg.n_layer, "{counts:?}");

    let run = |attention| grads_with(&r.cfg, &r.params, &r.inputs, &r.targets, b, t, attention);
    let (u, f) = (run(AttentionImpl::Unfused), run(AttentionImpl::Fused));
    let logit_diff = max_abs(u.output("logits").unwrap(), f.output("logits").unwrap());
    eprintln!(
        "fused vs unfused: logits max abs diff {logit_diff:.3e}, loss {} vs {}",
        f.loss, u.loss
    );
    assert!(logit_diff <= 1e-5, "logits differ by {logit_diff:e}");
    assert!((u.loss - f.loss).abs() <= 1e-6);
    for ((name, _, gu), (_, _, gf)) in u.grads.iter().zip(&f.grads) {
        for (i, (a, b)) in gf.iter().zip(gu).enumerate() {
            let tol = 1e-6 + 1e-4 * (*b as f64).abs();
            assert!(
                (*a as f64 - *b as f64).abs() <= tol,
                "grad.{name}[{i}]: fused {a} vs unfused {b}"
            );
        }
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
        ..Default::default()
    }
}

/// Runs `steps` optimizer steps on the reference batch; returns each step's loss.
fn run_steps(trainer: &mut Trainer, r: &Reference, steps: usize) -> Vec<f32> {
    let batch = lm_batch(&r.inputs, &r.targets, r.batch, r.seq);
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
    let mut trainer = trainer(&r.cfg, &parity_optimizer(&r), r.batch, r.seq, 1, &r.params);
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
    let mut a = trainer(&r.cfg, &opt, r.batch, r.seq, 1, &r.params);
    let la = run_steps(&mut a, &r, 6);
    let mut b = trainer(&r.cfg, &opt, r.batch, r.seq, 1, &r.params);
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
    let mut c = trainer(&r.cfg, &opt, r.batch, r.seq, 1, &r.params);
    let mut lc = run_steps(&mut c, &r, 3);
    let state = kiln::train::run::TrainerState {
        step: c.step,
        adamw_t: c.opt.t,
        ..Default::default()
    };
    kiln::train::run_dir::save_checkpoint(
        &c,
        &state,
        &kiln::train::RunConfig::default(),
        Some(&kiln::data::tokenizer::ByteTokenizer),
        &[],
        &dir,
    )
    .unwrap();
    drop(c);
    let dir = kiln::io::ckpt_store::resolve(&dir).unwrap();
    let (model, params) = kiln::train::checkpoint::load_model(&dir).unwrap();
    assert_eq!(model.config_json(), gpt(&r.cfg).config_json());
    let (m, v, t) = kiln::train::checkpoint::load_optimizer(&dir).unwrap();
    let mut d = trainer(&r.cfg, &opt, r.batch, r.seq, 1, &params);
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
        for attention in [AttentionImpl::Fused, AttentionImpl::Unfused] {
            let out = grads_with(&cfg, &params, &inputs, &targets, batch, seq, attention);
            let err = max_abs(out.output("logits").unwrap(), &logits);
            assert!(
                err <= 1e-5,
                "case {case} {attention:?} {cfg:?} B={batch} T={seq}: logits err {err:e}"
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
                    "case {case} {attention:?} {cfg:?} B={batch} T={seq}: grad.{name}[{i}] = {a} vs reference {b}"
                );
                }
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
    let mut acc = trainer(&r.cfg, &opt, r.batch, r.seq, 2, &r.params);
    let p = acc
        .train_step(
            &[
                lm_batch(&x1, &y1, r.batch, r.seq),
                lm_batch(&x2, &y2, r.batch, r.seq),
            ],
            true,
        )
        .unwrap()
        .unwrap();
    let la = pollster::block_on(p.get(gpu())).unwrap();
    let mut big = trainer(&r.cfg, &opt, 2 * r.batch, r.seq, 1, &r.params);
    let xb = [x1, x2].concat();
    let yb = [y1, y2].concat();
    let p = big
        .train_step(&[lm_batch(&xb, &yb, 2 * r.batch, r.seq)], true)
        .unwrap()
        .unwrap();
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

/// Dropout (GPT-2's embd_pdrop and resid_pdrop) in training: masks follow
/// the run's seed and the micro-batch counter, so the same seed gives the
/// same bits, another seed other losses, and a trainer restarted at step k
/// draws the masks of the uninterrupted run's step k. Evaluation has none.
#[test]
fn dropout_masks_follow_the_seed_and_the_step() {
    let r = Reference::load("gpt_small_v64.safetensors");
    let mut cfg = r.cfg.clone();
    cfg.embd_pdrop = 0.1;
    cfg.resid_pdrop = 0.2;
    let m = gpt(&cfg);
    let opt = parity_optimizer(&r);
    let batch = lm_batch(&r.inputs, &r.targets, r.batch, r.seq);
    let make = |seed: u64, params: &[(String, Vec<f32>)]| {
        Trainer::new(
            gpu(),
            m.clone(),
            &opt,
            &m.input_specs(Dims {
                batch: r.batch,
                seq: r.seq,
            }),
            params,
            &TrainerOptions {
                seed,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let steps = |t: &mut Trainer, n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| {
                let p = t
                    .train_step(std::slice::from_ref(&batch), true)
                    .unwrap()
                    .unwrap();
                pollster::block_on(p.get(gpu())).unwrap().loss.to_bits()
            })
            .collect()
    };
    let (mut a, mut b, mut c) = (make(7, &r.params), make(7, &r.params), make(8, &r.params));
    let la = steps(&mut a, 4);
    assert_eq!(la, steps(&mut b, 4), "same seed, same bits");
    assert_ne!(la, steps(&mut c, 4), "another seed, other masks");
    // Without dropout the losses are those of the plain model.
    let mut plain = trainer(&r.cfg, &opt, r.batch, r.seq, 1, &r.params);
    assert_ne!(
        la[0],
        steps(&mut plain, 1)[0],
        "dropout changed the first loss"
    );
    // Restarted at step 2 from the run's own state: the masks of steps 2, 3.
    let mut d = make(7, &r.params);
    let first = steps(&mut d, 2);
    let params = pollster::block_on(kiln::model::download(gpu(), &d.params)).unwrap();
    let host: Vec<(String, Vec<f32>)> = params.into_iter().map(|(n, _, v)| (n, v)).collect();
    let mm = pollster::block_on(kiln::model::download(gpu(), &d.opt.m)).unwrap();
    let vv = pollster::block_on(kiln::model::download(gpu(), &d.opt.v)).unwrap();
    let to_map =
        |x: Vec<(String, Vec<usize>, Vec<f32>)>| x.into_iter().map(|(n, _, v)| (n, v)).collect();
    let mut e = make(7, &host);
    e.opt
        .load_state(gpu(), &to_map(mm), &to_map(vv), d.opt.t)
        .unwrap();
    e.step = d.step;
    let rest = steps(&mut e, 2);
    assert_eq!([first, rest].concat(), la, "resumed masks differ");
    // Evaluation runs without dropout: the loss is the plain model's.
    let ev = pollster::block_on(a.eval_loss(std::slice::from_ref(&batch))).unwrap();
    let mut p2 = trainer(
        &r.cfg,
        &opt,
        r.batch,
        r.seq,
        1,
        &pollster::block_on(kiln::model::download(gpu(), &a.params))
            .unwrap()
            .into_iter()
            .map(|(n, _, v)| (n, v))
            .collect::<Vec<_>>(),
    );
    let ev_plain = pollster::block_on(p2.eval_loss(std::slice::from_ref(&batch))).unwrap();
    assert_eq!(ev.to_bits(), ev_plain.to_bits());
}
