//! Parity with Hugging Face transformers, the llm.c way, for every model:
//! each case in `tests/fixtures/hf/<case>/` is a checkpoint saved by
//! `save_pretrained` (written by `scripts/hf_reference.py`) plus
//! `reference.safetensors` with a batch, the loss, the outputs and every
//! gradient computed by PyTorch in float64, and the losses of 10 AdamW steps.
//! The GIN cases (`tests/fixtures/gin/`, `scripts/gin_reference.py`) come
//! from an independent PyTorch implementation written out in that script.
//! Kiln loads the checkpoint as a user would (`config.json` picks the model),
//! runs one forward and backward pass on the batch, then trains 10 steps.
//!
//! Tolerances: outputs (logits) ≤ 1e-4 absolute, loss ≤ 1e-5, every gradient
//! element within 1e-5 + 1e-3·|ref|, each trajectory loss within 1e-4.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln::data::Batch;
use kiln::graph::AttentionImpl;
use kiln::io::checkpoint::{load_safetensors, NamedTensor, TensorData};
use kiln::model::distill::Distilled;
use kiln::model::Model;
use kiln::runtime::{Gpu, GpuOptions, LimitsPolicy};
use kiln::train::checkpoint::load_model;
use kiln::train::grads::grads_pass;
use kiln::train::infer::Inference;
use kiln::train::trainer::TeacherSpec;
use kiln::train::{OptimizerConfig, Trainer, TrainerOptions};
use std::sync::Arc;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let mut opts = GpuOptions::from_env().expect("KILN_* environment");
        opts.limits = LimitsPolicy::WebGpuDefault;
        pollster::block_on(Gpu::new(opts)).unwrap_or_else(|e| {
            panic!("parity tests need a GPU adapter: {e:#}\n(apt-get install -y mesa-vulkan-drivers gives lavapipe)")
        })
    })
}

/// A fixture of `scripts/hf_reference.py` (tests/fixtures/hf) or of
/// `scripts/gin_reference.py` (tests/fixtures/gin).
fn case_dir(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let family = if name.starts_with("gin") { "gin" } else { "hf" };
    root.join(family).join(name)
}

struct Reference {
    t: BTreeMap<String, NamedTensor>,
    meta: BTreeMap<String, String>,
}

impl Reference {
    fn load(dir: &Path) -> Self {
        let (ts, meta) = load_safetensors(&dir.join("reference.safetensors")).unwrap();
        Self {
            t: ts.into_iter().map(|t| (t.name.clone(), t)).collect(),
            meta,
        }
    }
    fn f32(&self, name: &str) -> &[f32] {
        match &self.t[name].data {
            TensorData::F32(v) => v,
            _ => panic!("{name} is not f32"),
        }
    }
    fn batch(&self) -> Batch {
        let mut b = Batch::new();
        for (name, t) in &self.t {
            if let Some(n) = name.strip_prefix("batch.") {
                b.insert(NamedTensor {
                    name: n.to_string(),
                    ..t.clone()
                });
            }
        }
        b
    }
}

/// A distillation case: the student wrapped with the soft loss, the
/// teacher (saved in `teacher/`), and the batch with the teacher's logits
/// for the one-pass gradient check (the trainer computes them itself).
fn distilled(
    dir: &Path,
    r: &Reference,
    student: Arc<dyn Model>,
    batch: &Batch,
    attention: AttentionImpl,
) -> (Arc<dyn Model>, Arc<TeacherSpec>, Batch) {
    let f = |k: &str| r.meta[k].parse::<f32>().unwrap();
    let (teacher, tparams) = load_model(&dir.join("teacher")).unwrap();
    let model: Arc<dyn Model> = Arc::new(Distilled::new(student, f("alpha"), f("tau")).unwrap());
    let tmap = kiln::model::upload_params(
        gpu(),
        &kiln::model::param_shapes(teacher.as_ref()).unwrap(),
        &tparams,
    )
    .unwrap();
    let mut x = batch.clone();
    x.remove("labels");
    let inf = Inference::new(gpu(), teacher.clone(), &x, &tmap, &["logits"], attention).unwrap();
    let out = pollster::block_on(inf.run(&x)).unwrap();
    let (shape, logits) = &out["logits"];
    let mut with = batch.clone();
    with.insert(NamedTensor::f32(
        kiln::model::distill::TEACHER_LOGITS,
        shape.clone(),
        logits.clone(),
    ));
    let spec = Arc::new(TeacherSpec {
        model: teacher,
        params: tparams,
    });
    (model, spec, with)
}

fn check_case(name: &str, attention: AttentionImpl) {
    let dir = case_dir(name);
    let r = Reference::load(&dir);
    let (model, params) = load_model(&dir).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let batch = r.batch();
    let (model, teacher, pass_batch) = if name.starts_with("distill") {
        let (m, t, b) = distilled(&dir, &r, model, &batch, attention);
        (m, Some(t), b)
    } else {
        (model, None, batch.clone())
    };
    let out = pollster::block_on(grads_pass(
        gpu(),
        model.as_ref(),
        &params,
        &pass_batch,
        attention,
    ))
    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let loss_err = (out.loss as f64 - r.f32("loss")[0] as f64).abs();
    assert!(
        loss_err <= 1e-5,
        "{name}: loss {} vs {} (err {loss_err:e})",
        out.loss,
        r.f32("loss")[0]
    );
    for (k, t) in &r.t {
        let Some(o) = k.strip_prefix("out.") else {
            continue;
        };
        let got = out.output(o).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = r.f32(k);
        assert_eq!(
            got.len(),
            want.len(),
            "{name}: {o} has {} values, reference {:?}",
            got.len(),
            t.shape
        );
        let err = got
            .iter()
            .zip(want)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .fold(0.0, f64::max);
        eprintln!("{name} {attention:?}: {o} max abs err {err:.2e}");
        assert!(err <= 1e-4, "{name}: {o} max abs error {err:e} > 1e-4");
    }
    let mut checked = 0;
    for (pname, _, g) in &out.grads {
        let key = format!("grad.{pname}");
        let Some(t) = r.t.get(&key) else {
            panic!("{name}: the reference has no {key}");
        };
        let want = match &t.data {
            TensorData::F32(v) => v,
            _ => unreachable!(),
        };
        let mut worst = 0.0f64;
        for (i, (a, b)) in g.iter().zip(want).enumerate() {
            let tol = 1e-5 + 1e-3 * (*b as f64).abs();
            let err = (*a as f64 - *b as f64).abs();
            assert!(
                err <= tol,
                "{name}: {key}[{i}] = {a}, reference {b} (err {err:e} > {tol:e})"
            );
            worst = worst.max(err / tol);
        }
        checked += 1;
        let _ = worst;
    }
    let ref_grads = r.t.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(
        checked, ref_grads,
        "{name}: every reference gradient is checked"
    );

    // The AdamW trajectory on the same batch.
    let f = |k: &str| r.meta[k].parse::<f32>().unwrap();
    let opt = OptimizerConfig {
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
    };
    let mut prepared = batch.clone();
    model.prepare_batch(&mut prepared).unwrap();
    let mut trainer = Trainer::new(
        gpu(),
        model.clone(),
        &opt,
        &prepared.layout(),
        &params,
        &TrainerOptions {
            attention,
            teacher,
            ..Default::default()
        },
    )
    .unwrap();
    let want = r.f32("losses");
    for (i, w) in want.iter().enumerate() {
        let p = trainer
            .train_step(std::slice::from_ref(&batch), true)
            .unwrap()
            .unwrap();
        let got = pollster::block_on(p.get(gpu())).unwrap().loss;
        assert!(
            (got - w).abs() <= 1e-4,
            "{name}: AdamW step {i}: loss {got} vs {w}"
        );
    }
}

/// ViTForMaskedImageModeling's weights with Kiln's masked-patch MSE.
#[test]
fn vit_masked_image_modeling_matches() {
    check_case("vit_mim", AttentionImpl::Unfused);
}

#[test]
fn sequence_classifiers_saved_by_hugging_face_match() {
    check_case("bert_seqcls", AttentionImpl::Unfused);
    check_case("bert_regress", AttentionImpl::Unfused);
    check_case("gpt2_seqcls", AttentionImpl::Fused);
    check_case("clip_cls", AttentionImpl::Unfused);
}

/// The distillation loss, (1 − α)·CE + α·τ²·KL against PyTorch: the
/// student's loss and every gradient with the teacher's logits given, then
/// 10 AdamW steps with the teacher run inside each step by the trainer.
#[test]
fn distillation_loss_and_gradients_match_pytorch() {
    check_case("distill_gpt2", AttentionImpl::Unfused);
}

#[test]
fn gpt2_saved_by_hugging_face_with_n_inner_set_matches() {
    check_case("gpt2_ninner", AttentionImpl::Fused);
}

#[test]
fn gpt2_saved_by_hugging_face_with_defaults_matches_in_both_attention_paths() {
    check_case("gpt2_default", AttentionImpl::Fused);
    check_case("gpt2_default", AttentionImpl::Unfused);
}

#[test]
fn bert_for_masked_lm_matches_with_padding_and_token_types() {
    check_case("bert_small", AttentionImpl::Fused);
    check_case("bert_small", AttentionImpl::Unfused);
    check_case("bert_wide", AttentionImpl::Fused);
}

#[test]
fn vit_for_image_classification_matches_on_grey_and_rgb_images() {
    check_case("vit_grey", AttentionImpl::Fused);
    check_case("vit_rgb", AttentionImpl::Unfused);
}

#[test]
fn clip_model_matches_with_padding_and_eos_pooling() {
    check_case("clip_small", AttentionImpl::Fused);
    check_case("clip_rgb", AttentionImpl::Unfused);
}

#[test]
fn gin_matches_an_independent_pytorch_implementation() {
    // Attribute masking (3 layers, a masked element id, unused node and
    // edge slots) and regression (2 targets, mean pooling, an empty graph
    // slot); scripts/gin_reference.py computes both in float64.
    check_case("gin_mask", AttentionImpl::Unfused);
    check_case("gin_regression", AttentionImpl::Unfused);
}
