//! The GIN on molecules as the CLI drives it: attribute-masking pretraining
//! that stops and resumes bit for bit, regression fine-tuning from the
//! pretrained encoder (`--init-from`), `kiln grads` against the independent
//! PyTorch reference, and clear errors for bad input. The molecules here are
//! a few dozen small ones written for the test (the shared data sets are
//! used by `examples/gin_transfer.sh` and the SMILES tests).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kiln::io::checkpoint::{load_safetensors, save_safetensors, NamedTensor, TensorData};
use kiln::model::init_params;
use kiln::train::checkpoint::load_model;
use kiln::train::run::{init_from_checkpoint, run_training, RunOptions};
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
    let d = std::env::temp_dir().join(format!("kiln-mol-{name}-{}", std::process::id()));
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Small molecules and a label: 10 × (oxygens + nitrogens) + carbons, a
/// toy stand-in for a polar surface area.
const SMILES: [&str; 32] = [
    "CCO",
    "CC(=O)O",
    "c1ccccc1",
    "c1ccncc1",
    "c1cc[nH]c1",
    "CCN",
    "CCCC",
    "OCCO",
    "CC(C)O",
    "NCC(=O)O",
    "c1ccc(O)cc1",
    "c1ccc(N)cc1",
    "CC#N",
    "C1CCCCC1",
    "C1CCOC1",
    "CC(=O)N",
    "COC",
    "CCOC(=O)C",
    "c1ccc2ccccc2c1",
    "OC(=O)c1ccccc1",
    "CN(C)C",
    "C=CC=C",
    "ClCCl",
    "CS(=O)C",
    "C[N+](=O)[O-]",
    "NC(=O)N",
    "OCC(O)CO",
    "c1ccsc1",
    "c1ccoc1",
    "CCCCCCO",
    "N#CC#N",
    "CC(C)(C)O",
];

fn toy_label(smiles: &str) -> f32 {
    let up = smiles.to_ascii_uppercase();
    let polar = up.matches('O').count() + up.matches('N').count();
    let carbons = up.matches('C').count() - up.matches("CL").count();
    10.0 * polar as f32 + carbons as f32
}

/// `n` lines of the molecules (repeated), labelled when `labels`.
fn molecule_file(dir: &Path, n: usize, labels: bool) -> PathBuf {
    let mut text = String::from("# written by tests/molecules.rs\n");
    for i in 0..n {
        let m = SMILES[i % SMILES.len()];
        if labels {
            text += &format!("{m},{}\n", toy_label(m));
        } else {
            text += &format!("{m}\n");
        }
    }
    let p = dir.join(if labels {
        "labelled.csv"
    } else {
        "unlabelled.smi"
    });
    std::fs::write(&p, text).unwrap();
    p
}

fn tiny(data: &Path, objective: &str) -> RunConfig {
    let mut c = RunConfig::default_for_model("gin", true).unwrap();
    c.data.path = Some(data.to_path_buf());
    c.model.objective = Some(objective.into());
    c.model.n_layer = 2;
    c.model.n_embd = 16;
    c.train.batch = 4;
    c.train.seq = 8;
    c.train.steps = 6;
    c.train.eval_every = 3;
    c.train.eval_batches = 2;
    c.train.log_every = 1;
    c.train.checkpoint_every = 3;
    c.data.val_fraction = 0.25;
    c.optimizer.warmup_steps = 2;
    c.optimizer.decay_steps = 6;
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

#[test]
fn attribute_masking_resumes_bit_exactly_and_fine_tuning_starts_from_it() {
    let dir = tmp("pretrain");
    let data = molecule_file(&dir, 96, false);
    let cfg = tiny(&data, "attr-mask");
    let (a, b) = (dir.join("whole"), dir.join("resumed"));
    let whole = run_training(gpu(), &cfg, &opts(&a)).unwrap();
    assert_eq!(whole.steps, 6);
    run_training(
        gpu(),
        &cfg,
        &RunOptions {
            stop_after: Some(3),
            ..opts(&b)
        },
    )
    .unwrap();
    let rest = run_training(
        gpu(),
        &cfg,
        &RunOptions {
            resume: true,
            ..opts(&b)
        },
    )
    .unwrap();
    assert_eq!(rest.steps, 6);
    assert_eq!(train_losses(&a), train_losses(&b), "loss trajectories");
    assert_eq!(train_losses(&a).len(), 6);
    assert!(
        std::fs::read(a.join("model.safetensors")).unwrap()
            == std::fs::read(b.join("model.safetensors")).unwrap(),
        "final parameters differ between the resumed and the uninterrupted run"
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["architecture"], "GINForAttributeMasking");
    let acc = results["val_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "masked-atom accuracy {acc}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "gin");
    assert_eq!(config["element_symbols"][2], "C", "the vocabulary is named");

    // Fine-tuning: the encoder comes from the pretrained run, bit for bit;
    // the regression head is new.
    let labelled = molecule_file(&dir, 64, true);
    let mut ft = tiny(&labelled, "regression");
    ft.train.init_from = Some(a.clone());
    let m =
        kiln::objective::build_model(&ft, &kiln::objective::prepare(&ft, None).unwrap()).unwrap();
    let mut init = init_params(m.as_ref(), ft.train.seed).unwrap();
    let fresh = init.clone();
    let note = init_from_checkpoint(m.as_ref(), &mut init, &a, false).unwrap();
    assert!(
        note.contains("new: graph_head.weight, graph_head.bias"),
        "{note}"
    );
    let (_, pre) = load_model(&a).unwrap();
    for (name, v) in &init {
        match pre.iter().find(|(n, _)| n == name) {
            Some((_, w)) => assert!(v == w, "{name} is not the pretrained tensor"),
            None => {
                assert!(name.starts_with("graph_head"), "{name}");
                assert!(fresh.iter().any(|(n, f)| n == name && f == v));
            }
        }
    }
    let out = dir.join("finetuned");
    let sum = run_training(gpu(), &ft, &opts(&out)).unwrap();
    assert_eq!(sum.sample_title, "test set");
    assert!(sum.sample.contains("test MAE"), "{}", sum.sample);
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let mae = results["test_mae"][0].as_f64().unwrap();
    let base = results["test"]["baseline_mae"][0].as_f64().unwrap();
    assert!(mae.is_finite() && mae > 0.0 && base > 0.0, "{results}");

    // A linear probe: the encoder frozen (no gradient, no optimizer
    // state) stays the pretrained tensors bit for bit; the head trains.
    let mut probe = ft.clone();
    probe.train.freeze = vec!["gnn".into()];
    let out = dir.join("probe");
    run_training(gpu(), &probe, &opts(&out)).unwrap();
    let (_, after) = load_model(&out).unwrap();
    for (name, v) in &after {
        let before = &init.iter().find(|(n, _)| n == name).unwrap().1;
        if name.starts_with("gnn.") {
            assert!(v == before, "frozen {name} changed");
        } else {
            assert!(v != before, "{name} did not train");
        }
    }
    let (opt, _) =
        load_safetensors(&out.join("checkpoints/step-00000006/optimizer.safetensors")).unwrap();
    assert!(
        opt.iter().all(|t| !t.name.contains("gnn.")),
        "frozen parameters have no optimizer state: {:?}",
        opt.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    let mut bad = ft.clone();
    bad.train.freeze = vec!["encoder".into()];
    let e = run_training(gpu(), &bad, &opts(&dir.join("bad-freeze")))
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("--freeze encoder"), "{e:#}");
    let _ = std::fs::remove_dir_all(dir);
}

fn f32s(t: &NamedTensor) -> &[f32] {
    match &t.data {
        TensorData::F32(v) => v,
        _ => panic!("{} is not f32", t.name),
    }
}

/// `kiln grads` on the GIN fixtures of `scripts/gin_reference.py` (an
/// independent PyTorch implementation in float64): loss, logits and every
/// gradient within the parity tolerances.
#[test]
fn kiln_grads_matches_the_pytorch_gin() {
    for case in ["gin_mask", "gin_regression"] {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gin")
            .join(case);
        let dir = tmp(&format!("grads-{case}"));
        let (ts, _) = load_safetensors(&fixture.join("reference.safetensors")).unwrap();
        let batch: Vec<NamedTensor> = ts
            .iter()
            .filter_map(|t| {
                t.name.strip_prefix("batch.").map(|n| NamedTensor {
                    name: n.to_string(),
                    ..t.clone()
                })
            })
            .collect();
        let bf = dir.join("batch.safetensors");
        save_safetensors(&bf, &batch, &Default::default()).unwrap();
        let out = dir.join("grads.safetensors");
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["grads", "--checkpoint", s(&fixture), "--batch", s(&bf)])
            .args(["--out", s(&out)])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let got: std::collections::BTreeMap<String, NamedTensor> = load_safetensors(&out)
            .unwrap()
            .0
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let mut checked = 0;
        for want in &ts {
            let name = if want.name == "loss" || want.name.starts_with("grad.") {
                want.name.clone()
            } else if let Some(o) = want.name.strip_prefix("out.") {
                o.to_string()
            } else {
                continue;
            };
            let g = got
                .get(&name)
                .unwrap_or_else(|| panic!("{case}: {name} missing"));
            let tol = |y: f32| match name.as_str() {
                "loss" => 1e-5,
                "logits" => 1e-4,
                _ => 1e-5 + 1e-3 * y.abs(),
            };
            for (x, y) in f32s(g).iter().zip(f32s(want)) {
                assert!((x - y).abs() <= tol(*y), "{case}: {name}: {x} vs {y}");
            }
            checked += 1;
        }
        assert!(checked > 10, "{case}: {checked} tensors compared");
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn bad_molecule_input_gets_clear_errors() {
    let dir = tmp("bad");
    // Nothing parses.
    let junk = dir.join("junk.csv");
    std::fs::write(&junk, "not a molecule\nC1CC\n((\n").unwrap();
    let e = run_training(gpu(), &tiny(&junk, "attr-mask"), &opts(&dir.join("a")))
        .err()
        .unwrap();
    assert!(
        format!("{e:#}").contains("no molecule could be read"),
        "{e:#}"
    );
    // A regression needs labels.
    let unlabelled = molecule_file(&dir, 40, false);
    let e = run_training(
        gpu(),
        &tiny(&unlabelled, "regression"),
        &opts(&dir.join("b")),
    )
    .err()
    .unwrap();
    assert!(
        format!("{e:#}").contains("no numeric label column"),
        "{e:#}"
    );
    // An unknown objective.
    let e = run_training(
        gpu(),
        &tiny(&unlabelled, "contrastive"),
        &opts(&dir.join("c")),
    )
    .err()
    .unwrap();
    assert!(format!("{e:#}").contains("attr-mask"), "{e:#}");
    // A checkpoint of another family: named as such.
    let mut cfg = tiny(&molecule_file(&dir, 40, true), "regression");
    cfg.train.init_from =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/bert_small"));
    let e = run_training(gpu(), &cfg, &opts(&dir.join("d")))
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("is a bert model"), "{e:#}");
    // A molecule larger than a whole batch names the flag to raise.
    let big = dir.join("big.smi");
    std::fs::write(&big, format!("{}\nCCO\nCCO\nCCO\n", "C".repeat(64))).unwrap();
    let e = run_training(gpu(), &tiny(&big, "attr-mask"), &opts(&dir.join("e")))
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("raise --seq"), "{e:#}");
    let _ = std::fs::remove_dir_all(dir);
}
