//! The BERT, ViT and CLIP objectives as the CLI drives them: tiny runs that
//! stop and resume bit for bit, the run directory they leave, `kiln grads`,
//! `fill-mask`, `classify` and `zero-shot` on it, and the clear errors for
//! bad input. Image tests need Fashion-MNIST in `../shared/data` and skip
//! with a printed reason without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kiln::io::checkpoint::{load_safetensors, save_safetensors, NamedTensor, TensorData};
use kiln::train::run::{run_training, RunOptions, RunSummary};
use kiln::train::RunConfig;
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
    let d = std::env::temp_dir().join(format!("kiln-obj-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        quiet: true,
        ..Default::default()
    }
}

fn fashion_mnist() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/images/fashion-mnist");
    if d.join("train-images-idx3-ubyte.gz").is_file() || d.join("train-images-idx3-ubyte").is_file()
    {
        Some(d)
    } else {
        eprintln!(
            "SKIPPED: Fashion-MNIST is absent from {} (the shared data directory is not beside the project)",
            d.display()
        );
        None
    }
}

fn kiln(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The shrunk default of `arch`: a few seconds of lavapipe per run.
fn tiny(arch: &str, data: Option<PathBuf>) -> RunConfig {
    let mut c = RunConfig::default_for_model(arch, true).unwrap();
    c.data.path = data;
    c.model.n_layer = 1;
    c.model.n_embd = 32;
    c.model.n_head = 2;
    c.train.batch = 8;
    c.train.steps = 6;
    c.train.eval_every = 3;
    c.train.eval_batches = 2;
    c.train.log_every = 1;
    c.train.checkpoint_every = 3;
    c.optimizer.warmup_steps = 2;
    c.optimizer.decay_steps = 6;
    match arch {
        "bert" => {
            c.train.seq = 24;
            c.data.bpe_vocab = 300;
            c.data.builtin_bytes = 40_000;
        }
        "clip" => {
            c.train.seq = 16;
            c.data.bpe_vocab = 600;
            c.data.classes = vec![0, 1, 7];
        }
        _ => c.data.classes = vec![0, 1, 7],
    }
    c
}

fn train_losses(dir: &Path) -> Vec<(u64, u32)> {
    kiln::io::metrics::read_metrics(&dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|r| {
            Some((
                r["step"].as_u64()?,
                (r.get("train_loss")?.as_f64()? as f32).to_bits(),
            ))
        })
        .collect()
}

/// Runs `cfg` whole into one directory and in two invocations (stopped at
/// step 3, then resumed) into another; both must agree bit for bit.
fn check_resume(cfg: &RunConfig, name: &str) -> (PathBuf, RunSummary) {
    let (a, b) = (
        tmp(&format!("{name}-whole")),
        tmp(&format!("{name}-resumed")),
    );
    let whole = run_training(gpu(), cfg, &opts(&a)).unwrap();
    assert_eq!(whole.steps, 6);
    let first = run_training(
        gpu(),
        cfg,
        &RunOptions {
            stop_after: Some(3),
            ..opts(&b)
        },
    )
    .unwrap();
    assert_eq!(first.steps, 3);
    let rest = run_training(
        gpu(),
        cfg,
        &RunOptions {
            resume: true,
            ..opts(&b)
        },
    )
    .unwrap();
    assert_eq!(rest.steps, 6);
    assert!(
        std::fs::read(a.join("model.safetensors")).unwrap()
            == std::fs::read(b.join("model.safetensors")).unwrap(),
        "{name}: final parameters differ between the resumed and the uninterrupted run"
    );
    let (la, lb) = (train_losses(&a), train_losses(&b));
    assert_eq!(la.len(), 6, "{name}: one metrics line per step");
    assert_eq!(la, lb, "{name}: loss trajectories differ after the resume");
    assert_eq!(
        whole.final_val_loss.map(f32::to_bits),
        rest.final_val_loss.map(f32::to_bits)
    );
    for f in ["config.json", "loss.svg", "results.json", "run.toml"] {
        assert!(a.join(f).is_file(), "{name}: {f} missing from the run");
    }
    let _ = std::fs::remove_dir_all(b);
    (a, whole)
}

fn config_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn bert_run_resumes_bit_exactly_and_fills_masks() {
    let cfg = tiny("bert", None);
    let (dir, _) = check_resume(&cfg, "bert");
    let c = config_json(&dir);
    assert_eq!(c["architectures"][0], "BertForMaskedLM");
    assert_eq!(c["model_type"], "bert");
    // Hugging Face's tokenizer files at the top level of the run.
    assert!(dir.join("tokenizer.json").is_file() && dir.join("tokenizer_config.json").is_file());
    let metrics = kiln::io::metrics::read_metrics(&dir.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.iter().any(|r| r.get("train_accuracy").is_some()),
        "masked-token accuracy is logged next to the loss"
    );

    let (ok, out, err) = kiln(&[
        "fill-mask",
        "--checkpoint",
        s(&dir),
        "--top-k",
        "3",
        "the [MASK] of the sea",
    ]);
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("[MASK] 1:"))
        .unwrap_or_else(|| panic!("no prediction line in {out:?}"));
    assert_eq!(line.matches(", ").count(), 2, "three guesses: {line}");

    let (ok, _, err) = kiln(&["fill-mask", "--checkpoint", s(&dir), "no mask here"]);
    assert!(!ok && err.contains("[MASK]"), "{err}");
    // A masked LM cannot classify images or generate text.
    let (ok, _, err) = kiln(&["classify", "--checkpoint", s(&dir), "0"]);
    assert!(!ok && err.contains("BertForMaskedLM"), "{err}");
    let (ok, _, err) = kiln(&["zero-shot", "--checkpoint", s(&dir)]);
    assert!(!ok && err.contains("BertForMaskedLM"), "{err}");
    let (ok, _, err) = kiln(&["sample", "--checkpoint", s(&dir)]);
    assert!(!ok && err.contains("BertForMaskedLM"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn vit_run_resumes_bit_exactly_and_classifies() {
    let Some(data) = fashion_mnist() else { return };
    let cfg = tiny("vit", Some(data.clone()));
    let (dir, summary) = check_resume(&cfg, "vit");
    let c = config_json(&dir);
    assert_eq!(c["architectures"][0], "ViTForImageClassification");
    assert_eq!(c["id2label"].as_object().map(|m| m.len()), Some(3));
    assert_eq!(c["id2label"]["2"], "Sneaker");
    assert!(dir.join("preprocessor_config.json").is_file());
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    let acc = results["test_accuracy"].as_f64().expect("test accuracy");
    assert!((0.0..=1.0).contains(&acc));
    let conf = results["test"]["confusion"]
        .as_array()
        .expect("confusion matrix");
    let total: u64 = conf
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|x| x.as_u64().unwrap())
        .sum();
    assert_eq!(
        total, 3000,
        "every test image of the three classes counted once"
    );
    let _ = summary;

    let (ok, out, err) = kiln(&[
        "classify",
        "--checkpoint",
        s(&dir),
        "--data",
        s(&data),
        "0",
        "17",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().filter(|l| l.contains(": ")).count(), 2, "{out}");
    let (ok, _, err) = kiln(&["classify", "--checkpoint", s(&dir), "/nonexistent.png"]);
    assert!(!ok && err.contains("/nonexistent.png"), "{err}");
    let (ok, _, err) = kiln(&["fill-mask", "--checkpoint", s(&dir), "a [MASK]"]);
    assert!(!ok && err.contains("ViTForImageClassification"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn clip_run_resumes_bit_exactly_and_classifies_zero_shot() {
    let Some(data) = fashion_mnist() else { return };
    let cfg = tiny("clip", Some(data.clone()));
    let (dir, _) = check_resume(&cfg, "clip");
    let c = config_json(&dir);
    assert_eq!(c["architectures"][0], "CLIPModel");
    let (ok, out, err) = kiln(&[
        "zero-shot",
        "--checkpoint",
        s(&dir),
        "--data",
        s(&data),
        "--json",
    ]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let top1 = r["top1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&top1), "{out}");
    // Zero-shot covers every class of the test set, also the seven the
    // model never saw a caption of.
    assert_eq!(r["images"], 10000);
    let (ok, _, err) = kiln(&["classify", "--checkpoint", s(&dir), "0"]);
    assert!(!ok && err.contains("CLIPModel"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_image_folder_without_idx_files_is_named() {
    let empty = tmp("no-idx");
    std::fs::create_dir_all(&empty).unwrap();
    for arch in ["vit", "clip"] {
        let cfg = tiny(arch, Some(empty.clone()));
        let err = format!(
            "{:#}",
            run_training(gpu(), &cfg, &opts(&tmp("no-idx-run"))).unwrap_err()
        );
        assert!(
            err.contains(s(&empty)) && err.contains("train-images-idx3-ubyte"),
            "{arch}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(empty);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

/// The batch of a Hugging Face parity fixture, by its forward-argument names.
fn fixture_batch(name: &str) -> (Vec<NamedTensor>, Vec<NamedTensor>) {
    let (ts, _) = load_safetensors(&fixture(name).join("reference.safetensors")).unwrap();
    let batch = ts
        .iter()
        .filter_map(|t| {
            t.name.strip_prefix("batch.").map(|n| NamedTensor {
                name: n.to_string(),
                ..t.clone()
            })
        })
        .collect();
    (batch, ts)
}

fn f32s(t: &NamedTensor) -> &[f32] {
    match &t.data {
        TensorData::F32(v) => v,
        _ => panic!("{} is not f32", t.name),
    }
}

/// `kiln grads` on checkpoints Hugging Face saved, as a user runs it: the
/// batch file holds the forward arguments by their HF names; the output
/// holds the loss, the logits and one gradient per tensor of the checkpoint,
/// each within the tolerances of transformers in float64.
#[test]
fn kiln_grads_matches_hugging_face_for_bert_vit_and_clip() {
    for (case, logits) in [
        ("bert_small", "logits"),
        ("vit_grey", "logits"),
        ("clip_small", "logits_per_image"),
    ] {
        let dir = tmp(&format!("grads-{case}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (batch, reference) = fixture_batch(case);
        let bf = dir.join("batch.safetensors");
        save_safetensors(&bf, &batch, &Default::default()).unwrap();
        let out = dir.join("grads.safetensors");
        let (ok, stdout, err) = kiln(&[
            "grads",
            "--checkpoint",
            s(&fixture(case)),
            "--batch",
            s(&bf),
            "--out",
            s(&out),
        ]);
        assert!(ok, "{case}: {err}");
        assert!(stdout.contains("loss"), "{stdout}");
        let got: std::collections::BTreeMap<String, NamedTensor> = load_safetensors(&out)
            .unwrap()
            .0
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let want: std::collections::BTreeMap<String, NamedTensor> =
            reference.into_iter().map(|t| (t.name.clone(), t)).collect();
        let (l, wl) = (f32s(&got["loss"])[0], f32s(&want["loss"])[0]);
        assert!((l - wl).abs() <= 1e-5, "{case}: loss {l} vs {wl}");
        let want_logits = f32s(&want[&format!("out.{logits}")]);
        assert_eq!(
            f32s(&got[logits]).len(),
            want_logits.len(),
            "{case}: {logits}"
        );
        for (g, w) in f32s(&got[logits]).iter().zip(want_logits) {
            assert!((g - w).abs() <= 1e-4, "{case}: {logits} {g} vs {w}");
        }
        let (weights, _) = load_safetensors(&fixture(case).join("model.safetensors")).unwrap();
        for t in &weights {
            let key = format!("grad.{}", t.name);
            let Some(w) = want.get(&key) else { continue };
            let g = got
                .get(&key)
                .unwrap_or_else(|| panic!("{case}: {key} missing from kiln grads' output"));
            assert_eq!(g.shape, w.shape, "{case}: {key}");
            for (x, y) in f32s(g).iter().zip(f32s(w)) {
                assert!(
                    (x - y).abs() <= 1e-5 + 1e-3 * y.abs(),
                    "{case}: {key}: {x} vs {y}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A CLIP text row must hold an end-of-text token (the text is pooled
/// there); without one the batch is refused by name, not pooled at a wrong
/// position.
#[test]
fn a_clip_batch_whose_row_lacks_end_of_text_is_refused() {
    let case = "clip_small";
    let dir = tmp("clip-no-eos");
    std::fs::create_dir_all(&dir).unwrap();
    let config = config_json(&fixture(case));
    let eos = config["text_config"]["eos_token_id"].as_i64().unwrap_or(2) as i32;
    let (mut batch, _) = fixture_batch(case);
    for t in &mut batch {
        if t.name == "input_ids" {
            if let TensorData::I32(v) = &mut t.data {
                let cols = t.shape[1];
                for x in &mut v[cols..2 * cols] {
                    if *x == eos {
                        *x = 1;
                    }
                }
            }
        }
    }
    let bf = dir.join("batch.safetensors");
    save_safetensors(&bf, &batch, &Default::default()).unwrap();
    let (ok, _, err) = kiln(&[
        "grads",
        "--checkpoint",
        s(&fixture(case)),
        "--batch",
        s(&bf),
        "--out",
        s(&dir.join("g.safetensors")),
    ]);
    assert!(!ok, "a row without end-of-text was accepted");
    assert!(
        err.contains("end-of-text") && err.contains("row 1"),
        "the error names the row and the missing token: {err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
