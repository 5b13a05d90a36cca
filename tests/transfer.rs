//! Fine-tuning and distillation through the run loop, as `kiln finetune`
//! and `kiln distill` drive it: a classification head on a BERT saved by
//! Hugging Face (`tests/fixtures/hf/bert_pretrained`, written by
//! `scripts/hf_reference.py`) trains; a linear probe leaves every backbone
//! parameter bit-identical and keeps no optimizer state for it; early
//! stopping and --keep-best; a classifier refuses other labels unless its
//! head is replaced; a distilled student saves alone and resumes exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kiln::io::checkpoint::{load_safetensors, TensorData};
use kiln::io::ckpt_store::resolve;
use kiln::train::checkpoint::{load_model_config, load_optimizer};
use kiln::train::run::{run_training, RunOptions};
use kiln::train::RunConfig;
use kiln::util::Rng;
use kiln::Gpu;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        pollster::block_on(Gpu::from_env()).unwrap_or_else(|e| {
            panic!(
                "training tests need a GPU adapter: {e:#} (apt-get install -y mesa-vulkan-drivers)"
            )
        })
    })
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-transfer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        quiet: true,
        ..Default::default()
    }
}

fn hf_bert() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/bert_pretrained")
}

/// Two classes of short texts told apart by their words (all in the
/// fixture tokenizer's vocabulary): `warm` and `cool`, `n` files each.
fn word_classes(dir: &Path, n: usize, classes: &[(&str, &[&str])]) -> PathBuf {
    let data = dir.join("labelled");
    let mut rng = Rng::new(5);
    for (name, words) in classes {
        std::fs::create_dir_all(data.join(name)).unwrap();
        for i in 0..n {
            let text: Vec<&str> = (0..6)
                .map(|_| words[rng.below(words.len() as u64) as usize])
                .collect();
            std::fs::write(data.join(name).join(format!("{i:03}.txt")), text.join(" ")).unwrap();
        }
    }
    data
}

const WARM: (&str, &[&str]) = ("warm", &["red", "apple", "bright", "quick"]);
const COOL: (&str, &[&str]) = ("cool", &["blue", "river", "cloud", "slow"]);
const GREY: (&str, &[&str]) = ("grey", &["stone", "green"]);

fn finetune_cfg(from: &Path, data: &Path, arch: &str) -> RunConfig {
    let mut c = RunConfig::default_for_model(arch, true).unwrap();
    c.model.objective = Some("classify".into());
    c.model.attention = "unfused".into();
    c.data.path = Some(data.to_path_buf());
    c.train.init_from = Some(from.to_path_buf());
    c.train.batch = 8;
    c.train.seq = 12;
    c.train.steps = 40;
    c.train.eval_every = 10;
    c.train.eval_batches = 100;
    c.train.log_every = 1;
    c.train.checkpoint_every = 0;
    c.train.sample_tokens = 0;
    c.optimizer.lr = 3e-3;
    c.optimizer.min_lr = 3e-4;
    c.optimizer.warmup_steps = 5;
    c.optimizer.decay_steps = 40;
    c
}

fn results(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    load_safetensors(path)
        .unwrap()
        .0
        .into_iter()
        .filter_map(|t| match t.data {
            TensorData::F32(v) => Some((t.name, v)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_head_on_a_hugging_face_bert_trains_and_a_linear_probe_keeps_the_backbone() {
    let dir = tmp("hf-bert");
    let data = word_classes(&dir, 40, &[WARM, COOL]);

    // Full fine-tuning: the words decide the class, so it must be learnt.
    let out = dir.join("full");
    let s = run_training(gpu(), &finetune_cfg(&hf_bert(), &data, "bert"), &opts(&out)).unwrap();
    assert_eq!(s.steps, 40);
    let r = results(&out);
    assert_eq!(r["architecture"], "BertForSequenceClassification");
    let acc = r["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "test accuracy {acc} after fine-tuning");
    let cfg = load_model_config(&out).unwrap().config_json();
    assert_eq!(cfg["id2label"]["0"], "cool");
    assert_eq!(cfg["problem_type"], "single_label_classification");

    // Linear probe: the backbone bit for bit, no optimizer state for it.
    let out = dir.join("probe");
    let mut c = finetune_cfg(&hf_bert(), &data, "bert");
    c.train.freeze = vec!["backbone".into()];
    c.train.steps = 10;
    c.optimizer.decay_steps = 10;
    run_training(gpu(), &c, &opts(&out)).unwrap();
    let pre = tensors(&hf_bert().join("model.safetensors"));
    let after = tensors(&resolve(&out).unwrap().join("model.safetensors"));
    let mut same = 0;
    for (name, v) in &after {
        if name.starts_with("bert.pooler") || name.starts_with("classifier") {
            continue;
        }
        let p = &pre[name];
        assert!(
            p.iter().zip(v).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name} changed under --freeze backbone"
        );
        same += 1;
    }
    assert!(same > 20, "only {same} backbone tensors compared");
    let (m, _, _) = load_optimizer(&resolve(&out).unwrap()).unwrap();
    let mut trained: Vec<&String> = m.keys().collect();
    trained.sort();
    assert_eq!(
        trained,
        [
            "bert.pooler.dense.bias",
            "bert.pooler.dense.weight",
            "classifier.bias",
            "classifier.weight"
        ],
        "only the head has optimizer state"
    );
    assert!(after["classifier.weight"].iter().all(|x| x.is_finite()));
}

#[test]
fn early_stopping_keeps_the_best_and_heads_are_replaced_only_when_asked() {
    let dir = tmp("early");
    let data = word_classes(&dir, 30, &[WARM, COOL]);
    // A rate so small that validation accuracy cannot improve after the
    // first evaluation: patience 1 stops at the second.
    let out = dir.join("stop");
    let mut c = finetune_cfg(&hf_bert(), &data, "bert");
    c.optimizer.lr = 1e-9;
    c.optimizer.min_lr = 1e-9;
    c.train.eval_every = 2;
    c.train.patience = 1;
    c.train.keep_best = true;
    let s = run_training(gpu(), &c, &opts(&out)).unwrap();
    assert_eq!(s.steps, 4, "stopped at the second evaluation");
    let r = results(&out);
    assert_eq!(r["early_stopped"], true);
    assert_eq!(r["best_step"], 2);
    assert!(out.join("best/model.safetensors").is_file());
    assert!(
        out.join("best/tokenizer.json").is_file(),
        "best/ is a usable checkpoint"
    );

    // The 2-class classifier on 3-class data: refused, then replaced.
    let three = word_classes(&dir.join("three"), 20, &[WARM, COOL, GREY]);
    let out3 = dir.join("three-run");
    let mut c = finetune_cfg(&out, &three, "bert");
    c.train.steps = 4;
    c.optimizer.decay_steps = 4;
    let e = run_training(gpu(), &c, &opts(&out3)).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("--replace-head") && e.contains("classifier.weight"),
        "{e}"
    );
    c.train.replace_head = true;
    run_training(
        gpu(),
        &c,
        &RunOptions {
            overwrite: true,
            ..opts(&out3)
        },
    )
    .unwrap();
    let cfg = load_model_config(&out3).unwrap().config_json();
    assert_eq!(cfg["num_labels"], 3);

    // Clear errors: another family's checkpoint; --scratch without --from.
    let mut c = finetune_cfg(&hf_bert(), &data, "gpt2");
    c.train.steps = 2;
    let e = format!(
        "{:#}",
        run_training(gpu(), &c, &opts(&dir.join("wrong"))).unwrap_err()
    );
    assert!(e.contains("is a bert model") && e.contains("gpt2"), "{e}");
    let mut c = finetune_cfg(&hf_bert(), &data, "bert");
    c.train.init_from = None;
    c.train.scratch = true;
    let e = format!(
        "{:#}",
        run_training(gpu(), &c, &opts(&dir.join("s"))).unwrap_err()
    );
    assert!(e.contains("--scratch"), "{e}");
}

#[test]
fn a_distilled_student_saves_alone_and_resumes_exactly() {
    let dir = tmp("distill");
    let teacher = dir.join("teacher");
    let mut t = RunConfig::default_for(true);
    t.model.attention = "unfused".into();
    t.model.n_layer = 2;
    t.model.n_embd = 32;
    t.train.steps = 8;
    t.train.seq = 16;
    t.train.eval_every = 0;
    t.train.sample_tokens = 0;
    t.data.builtin_bytes = 20_000;
    run_training(gpu(), &t, &opts(&teacher)).unwrap();

    let mut c = t.clone();
    c.model.n_layer = 1;
    c.model.n_head = 2;
    c.model.n_embd = 16;
    c.train.steps = 6;
    c.train.checkpoint_every = 3;
    c.train.log_every = 1;
    c.optimizer.decay_steps = 6;
    c.distill.teacher = Some(teacher.clone());
    c.distill.alpha = 0.7;
    c.distill.tau = 2.0;
    let straight = dir.join("straight");
    let s = run_training(gpu(), &c, &opts(&straight)).unwrap();
    assert!(s.final_val_loss.unwrap().is_finite());
    let halves = dir.join("halves");
    run_training(
        gpu(),
        &c,
        &RunOptions {
            stop_after: Some(3),
            ..opts(&halves)
        },
    )
    .unwrap();
    run_training(
        gpu(),
        &c,
        &RunOptions {
            resume: true,
            ..opts(&halves)
        },
    )
    .unwrap();
    let a = std::fs::read(resolve(&straight).unwrap().join("model.safetensors")).unwrap();
    let b = std::fs::read(resolve(&halves).unwrap().join("model.safetensors")).unwrap();
    assert!(
        a == b,
        "the resumed student differs from the uninterrupted one"
    );
    // The student alone: a plain GPT-2 of its own sizes.
    let cfg = load_model_config(&straight).unwrap().config_json();
    assert_eq!(
        (cfg["n_layer"].as_u64(), cfg["n_embd"].as_u64()),
        (Some(1), Some(16))
    );
    let names = tensors(&resolve(&straight).unwrap().join("model.safetensors"));
    assert!(
        names.keys().all(|n| n.starts_with("transformer.")),
        "{names:?}"
    );
    // The soft term is part of the training loss: with α = 1 and the
    // teacher as its own student the KL starts at 0, so the first loss is 0.
    let mut same = t.clone();
    same.train.steps = 1;
    same.train.log_every = 1;
    same.train.init_from = Some(teacher.clone());
    same.distill.teacher = Some(teacher.clone());
    same.distill.alpha = 1.0;
    let s = run_training(gpu(), &same, &opts(&dir.join("self"))).unwrap();
    let first = s.final_train_loss.unwrap();
    assert!(first.abs() < 1e-5, "KL of the teacher with itself: {first}");
}

/// Text regression (`--objective regression`, a CSV of text and a number)
/// on a GPT-2 classifier head built from scratch: the target is the number
/// of times "red" occurs; the test error must beat the mean predictor.
#[test]
fn text_regression_from_a_csv_beats_the_mean() {
    let dir = tmp("regress");
    let mut rng = Rng::new(9);
    let mut csv = String::from("text,score\n");
    let words = ["red", "blue", "stone", "river"];
    for _ in 0..160 {
        let t: Vec<&str> = (0..6).map(|_| words[rng.below(4) as usize]).collect();
        let score = t.iter().filter(|w| **w == "red").count();
        csv += &format!("{},{score}\n", t.join(" "));
    }
    csv += "bad line without a number,x\n";
    let data = dir.join("scores.csv");
    std::fs::write(&data, csv).unwrap();
    let mut c = RunConfig::default_for_model("gpt2", true).unwrap();
    c.model.objective = Some("regression".into());
    c.model.attention = "unfused".into();
    c.model.n_layer = 1;
    c.model.n_embd = 32;
    c.data.path = Some(data);
    c.train.batch = 16;
    c.train.seq = 40;
    c.train.steps = 80;
    c.train.eval_every = 0;
    c.train.sample_tokens = 0;
    c.train.checkpoint_every = 0;
    c.optimizer.lr = 3e-3;
    c.optimizer.min_lr = 3e-4;
    c.optimizer.decay_steps = 80;
    let out = dir.join("run");
    run_training(gpu(), &c, &opts(&out)).unwrap();
    let r = results(&out);
    let (mae, base) = (
        r["test"]["mae"].as_f64().unwrap(),
        r["test"]["baseline_mae"].as_f64().unwrap(),
    );
    assert!(
        mae < 0.8 * base,
        "test MAE {mae} against the mean predictor's {base}"
    );
    let cfg = load_model_config(&out).unwrap().config_json();
    assert_eq!(cfg["architectures"][0], "GPT2ForSequenceClassification");
    assert_eq!(cfg["problem_type"], "regression");
    assert_eq!(cfg["id2label"]["0"], "score");
}
