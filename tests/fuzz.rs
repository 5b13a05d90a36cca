//! Property tests of every parser users feed files to (issue 10): no input
//! makes Kiln panic; each either loads or is refused with an error.
//!
//! - safetensors (checkpoints, batch files): random bytes, mutations of a
//!   valid file, and headers built from random dtypes, shapes and offsets;
//! - `kiln grads` batch files: valid safetensors with random tensors;
//! - config.json, run.toml, checkpoint manifests, trainer_state.json:
//!   random text and random values for every known field;
//! - tokenizer files: vocab.json and merges.txt (random and mutated), then
//!   encoding and decoding with what loads.
//!
//! Bounded: `KILN_FUZZ_CASES` cases per property, times a small factor
//! (default 1000; the whole file takes a few seconds), so it runs in `cargo test` and CI. Raise it for a
//! longer search: `KILN_FUZZ_CASES=100000 cargo test --release --test fuzz`.
//!
//! The cases come from a fixed seed, so CI sees the same inputs on every run
//! (a failure reproduces); `KILN_FUZZ_SEED=<n>` draws another set, and
//! `KILN_FUZZ_SEED=random` a fresh one each run, for local searches.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use kiln::io::checkpoint::{parse_safetensors, safetensors_bytes, NamedTensor};

fn cases(scale: u32) -> u32 {
    std::env::var("KILN_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
        * scale
}

fn runner(scale: u32) -> TestRunner {
    let config = Config {
        cases: cases(scale),
        failure_persistence: None,
        ..Config::default()
    };
    let seed = std::env::var("KILN_FUZZ_SEED").unwrap_or_default();
    if seed == "random" {
        return TestRunner::new(config);
    }
    let n: u64 = seed.parse().unwrap_or(0x6b696c6e); // "kiln"
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (n.rotate_left(8 * (i as u32 % 8)) >> (i / 8)) as u8;
    }
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Runs `f` on every case of `strategy`; a panic fails the test with the input.
fn check<S: Strategy>(scale: u32, strategy: S, f: impl Fn(S::Value))
where
    S::Value: std::fmt::Debug,
{
    runner(scale)
        .run(&strategy, |v| {
            f(v);
            Ok(())
        })
        .unwrap();
}

fn valid_file() -> Vec<u8> {
    safetensors_bytes(
        &[
            NamedTensor::f32("w", vec![2, 3], vec![1.0, -2.0, 3.5, 0.0, 1e-3, 7.0]),
            NamedTensor::i32("ids", vec![4], vec![1, 2, 3, 4]),
        ],
        &[("k".to_string(), "v".to_string())].into(),
    )
    .unwrap()
}

#[test]
fn safetensors_random_bytes() {
    check(2, proptest::collection::vec(any::<u8>(), 0..200), |b| {
        let _ = parse_safetensors(&b);
    });
}

#[test]
fn safetensors_mutated_valid_file() {
    let good = valid_file();
    let n = good.len();
    let edits = proptest::collection::vec((0..n, any::<u8>()), 1..6);
    check(2, (edits, 0..=n), |(edits, cut)| {
        let mut b = good.clone();
        for (i, x) in edits {
            b[i] = x;
        }
        b.truncate(cut.max(1));
        let _ = parse_safetensors(&b);
    });
}

fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![0..6u64, Just(u32::MAX as u64), Just(u64::MAX), any::<u64>()]
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![0..80u64, Just(u64::MAX), any::<u64>()]
}

#[test]
fn safetensors_headers_with_random_dtypes_shapes_and_offsets() {
    let dtype = prop::sample::select(vec![
        "F32", "F16", "BF16", "F64", "I32", "I64", "U32", "U64", "I16", "U16", "I8", "U8", "BOOL",
        "F8_E4M3", "X",
    ]);
    let entry = (
        prop::sample::select(vec!["a", "b", "__metadata__", "c"]),
        dtype,
        proptest::collection::vec(dim(), 0..4),
        offset(),
        offset(),
    );
    let tensors = proptest::collection::vec(entry, 0..4);
    check(4, (tensors, 0..96usize), |(tensors, data_len)| {
        let body: Vec<String> = tensors
            .iter()
            .map(|(name, dtype, shape, s, e)| {
                format!(
                    "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[{s},{e}]}}"
                )
            })
            .collect();
        let header = format!("{{{}}}", body.join(","));
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0x3f, data_len));
        let _ = parse_safetensors(&b);
    });
}

#[test]
fn batch_files() {
    let ints = proptest::collection::vec(
        prop_oneof![-3..300i32, Just(i32::MIN), Just(i32::MAX)],
        0..24,
    );
    let shape = proptest::collection::vec(0..5usize, 0..4);
    let name = prop::sample::select(vec!["inputs", "targets", "other"]);
    let tensor = (name, shape, ints, any::<bool>());
    check(
        2,
        (proptest::collection::vec(tensor, 0..3), 1..400usize),
        |(ts, vocab)| {
            let tensors: Vec<NamedTensor> = ts
                .into_iter()
                .map(|(name, shape, vals, float)| {
                    let n: usize = shape.iter().product();
                    let mut v = vals;
                    v.resize(n, 1);
                    if float {
                        NamedTensor::f32(name, shape, v.iter().map(|&x| x as f32).collect())
                    } else {
                        NamedTensor::i32(name, shape, v)
                    }
                })
                .collect();
            let model =
                kiln::model::gpt2::Gpt2::new(kiln::model::gpt2::GptConfig::new(vocab, 8, 8, 2, 1))
                    .unwrap();
            if let Ok(bytes) = safetensors_bytes(&tensors, &Default::default()) {
                if let Ok(b) = kiln::train::batch_file::parse_batch_file(&bytes, &model) {
                    let ids = b
                        .i32("input_ids")
                        .expect("a batch GPT-2 accepts has input_ids");
                    assert!(ids.iter().all(|&x| x >= 0 && (x as usize) < vocab));
                }
            }
        },
    );
}

/// A JSON value for a config field: numbers of every size and sign,
/// strings, nulls, nesting.
fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..2000u64).prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<u64>().prop_map(|v| v.to_string()),
        Just("18446744073709551616".to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        Just("-0.0".to_string()),
        Just("null".to_string()),
        Just("\"gpt2\"".to_string()),
        Just("\"bert\"".to_string()),
        Just("\"vit\"".to_string()),
        Just("\"clip\"".to_string()),
        Just("\"gelu_new\"".to_string()),
        "[a-z]{0,6}".prop_map(|s| format!("\"{s}\"")),
        Just("[]".to_string()),
        Just("{}".to_string()),
    ]
}

#[test]
fn config_json() {
    let keys = prop::sample::select(vec![
        "model_type",
        "vocab_size",
        "n_positions",
        "n_ctx",
        "n_embd",
        "n_layer",
        "n_head",
        "layer_norm_epsilon",
        "activation_function",
        "tie_word_embeddings",
        "bos_token_id",
        "n_inner",
        "hidden_size",
        "num_hidden_layers",
        "unknown",
    ]);
    let fields = proptest::collection::vec((keys, json_value()), 0..12);
    check(2, fields, |fields| {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let text = format!("{{{}}}", body.join(","));
        if let Ok(model) = kiln::train::checkpoint::parse_config(&text) {
            // A config that parses describes a model Kiln can declare.
            assert!(!model.describe().is_empty());
        }
    });
    check(1, ".{0,80}", |text| {
        let _ = kiln::train::checkpoint::parse_config(&text);
    });
}

#[test]
fn run_toml() {
    let keys = prop::sample::select(
        kiln::train::resume::SETTINGS
            .iter()
            .map(|s| s.key)
            .chain(["train.bogus", "nosection"])
            .collect::<Vec<_>>(),
    );
    let value = prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (0..70i64).prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}").replace("inf", "inf").to_lowercase()),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        "[a-z:/]{0,8}".prop_map(|s| format!("\"{s}\"")),
        Just("true".to_string()),
        Just("[1, 2]".to_string()),
    ];
    check(
        2,
        proptest::collection::vec((keys, value), 0..10),
        |fields| {
            let mut text = String::new();
            for (k, v) in fields {
                match k.split_once('.') {
                    Some((s, f)) => text += &format!("[{s}]\n{f} = {v}\n"),
                    None => text += &format!("{k} = {v}\n"),
                }
            }
            if let Ok(c) = kiln::train::RunConfig::from_toml_str(&text) {
                if c.validate().is_ok() {
                    let _ = c.to_toml();
                    let _ = kiln::train::resume::merge_for_resume(
                        &kiln::train::RunConfig::default(),
                        &c,
                        &kiln::train::resume::keys_in_toml(&text).unwrap_or_default(),
                    );
                }
            }
        },
    );
}

#[test]
fn manifests_and_trainer_state() {
    let entry = (
        prop_oneof![
            Just("model.safetensors".to_string()),
            Just("../escape".to_string()),
            Just("/abs".to_string()),
            Just("".to_string()),
            Just("MANIFEST.json".to_string()),
            "[a-z/.]{0,12}",
        ],
        json_value(),
        prop_oneof![
            Just("\"0badc0de\"".to_string()),
            "[0-9a-zA-Z]{0,9}".prop_map(|s| format!("\"{s}\""))
        ],
    );
    let m = (
        prop_oneof![Just("kiln-checkpoint/1".to_string()), "[a-z/0-9-]{0,20}"],
        json_value(),
        proptest::collection::vec(entry, 0..4),
    );
    check(2, m, |(format, step, files)| {
        let files: Vec<String> = files
            .iter()
            .map(|(n, b, c)| format!("{{\"name\":\"{n}\",\"bytes\":{b},\"crc32\":{c}}}"))
            .collect();
        let text = format!(
            "{{\"format\":\"{format}\",\"step\":{step},\"files\":[{}]}}",
            files.join(",")
        );
        if let Ok(m) = kiln::io::ckpt_store::parse_manifest(text.as_bytes()) {
            for f in &m.files {
                let p = std::path::Path::new(&f.name);
                assert!(
                    p.components()
                        .all(|c| matches!(c, std::path::Component::Normal(_))),
                    "{}",
                    f.name
                );
            }
        }
        let _ = kiln::train::run_dir::parse_state(&text);
    });
    check(1, ".{0,60}", |t| {
        let _ = kiln::io::ckpt_store::parse_manifest(t.as_bytes());
        let _ = kiln::train::run_dir::parse_state(&t);
    });
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bpe")
            .join(name),
    )
    .unwrap()
}

#[test]
fn tokenizer_files() {
    use kiln::data::tokenizer::{Bpe, Tokenizer};
    let (vocab, merges) = (fixture("vocab.json"), fixture("merges.txt"));
    let use_it = |t: &Bpe, text: &str| {
        let ids = t.encode(text);
        assert!(ids.iter().all(|&i| (i as usize) < t.vocab_size()));
        let _ = t.decode(&ids);
        let _ = t.decode(&[0, 1, u32::MAX]);
    };
    // Mutations of a real vocabulary and merge list.
    let vn = vocab.len();
    let mn = merges.len();
    let edits = (
        proptest::collection::vec((0..vn, any::<char>()), 0..4),
        proptest::collection::vec((0..mn, any::<char>()), 0..4),
        0..=mn,
        ".{0,30}",
    );
    check(1, edits, |(ve, me, cut, text)| {
        let mut v: Vec<char> = vocab.chars().collect();
        for (i, c) in ve {
            let i = i % v.len();
            v[i] = c;
        }
        let mut m: Vec<char> = merges.chars().collect();
        for (i, c) in me {
            if !m.is_empty() {
                let i = i % m.len();
                m[i] = c;
            }
        }
        m.truncate(cut.min(m.len()));
        let (v, m): (String, String) = (v.into_iter().collect(), m.into_iter().collect());
        if let Ok(t) = Bpe::from_texts(&v, "vocab.json", &m, "merges.txt") {
            use_it(&t, &text);
        }
    });
    // Small random vocabularies (every byte present or not) and merges.
    let table = kiln::data::tokenizer::byte_to_unicode();
    let extra = proptest::collection::vec(("[a-zĠ]{1,3}", 0..600u64), 0..6);
    let merges_s = proptest::collection::vec("[a-zĠ]{1,2} [a-zĠ]{1,2}|[a-z ]{0,5}", 0..6);
    check(
        1,
        (extra, merges_s, any::<bool>(), 0..300u64),
        |(extra, ms, all, big)| {
            let mut entries: Vec<String> = table
                .iter()
                .enumerate()
                .filter(|(i, _)| all || i % 7 != 0)
                .map(|(i, c)| format!("{}: {i}", serde_json::to_string(&c.to_string()).unwrap()))
                .collect();
            for (tok, id) in extra {
                entries.push(format!(
                    "{}: {}",
                    serde_json::to_string(&tok).unwrap(),
                    id + big
                ));
            }
            let v = format!("{{{}}}", entries.join(","));
            let m = format!("#version: 0.2\n{}\n", ms.join("\n"));
            if let Ok(t) = Bpe::from_texts(&v, "vocab.json", &m, "merges.txt") {
                use_it(&t, "hello world, abc Ġ");
            }
        },
    );
}

#[test]
fn tokenizer_kind_file() {
    let dir = std::env::temp_dir().join(format!("kiln-fuzz-kind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = prop_oneof![
        Just("{\"kind\":\"byte\"}".to_string()),
        Just("{\"kind\":\"bpe\"}".to_string()),
        Just("{\"kind\":3}".to_string()),
        ".{0,30}",
    ];
    check(1, text, |t| {
        std::fs::write(dir.join("tokenizer_kind.json"), &t).unwrap();
        let _ = kiln::data::tokenizer::load_tokenizer(&dir);
    });
    let _ = std::fs::remove_dir_all(dir);
}

/// SMILES and molecule files: random strings over SMILES's alphabet and
/// random bytes never panic; a molecule that parses has bonds between its
/// own atoms, and a file's bad lines are counted, never fatal.
#[test]
fn smiles_and_molecule_files() {
    use kiln::data::molecules::parse_molecules;
    use kiln::data::smiles::parse_smiles;
    check(2, "[CNOSPFIBrcnos()=#\\[\\]@+\\-0-9%.:/\\\\H]{0,40}", |s| {
        if let Ok(m) = parse_smiles(&s) {
            for b in &m.bonds {
                assert!(b.a < m.atoms.len() && b.b < m.atoms.len() && b.a != b.b);
            }
        }
    });
    check(1, ".{0,60}", |s| {
        let _ = parse_smiles(&s);
    });
    check(
        1,
        "([CNOc1()=,#\"]{0,12}(,[0-9.e\\-]{0,6})?\n){0,8}",
        |text| {
            if let Ok(set) = parse_molecules(&text, std::path::Path::new("x.csv"), None, &[]) {
                assert_eq!(set.mols.len(), set.smiles.len());
                assert_eq!(set.mols.len(), set.labels.len());
            }
        },
    );
}
