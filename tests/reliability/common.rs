//! Helpers of the reliability tests: the `kiln` binary, scratch
//! directories, a small text, and a model directory made without a GPU.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use kiln::data::tokenizer::{ByteTokenizer, Tokenizer};
use kiln::model::gpt2::{Gpt2, GptConfig};
use kiln::Gpu;

pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        pollster::block_on(Gpu::from_env()).unwrap_or_else(|e| {
            panic!("these tests need a GPU adapter: {e:#} (apt-get install -y mesa-vulkan-drivers)")
        })
    })
}

/// A fresh, empty scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-rel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `kiln` with `args`, its stdin closed, Mesa's probe quiet.
pub fn kiln(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env_remove("KILN_CRASH_AT")
        .env_remove("KILN_CRASH_LOG")
        .stdin(std::process::Stdio::null());
    c
}

pub fn run(args: &[&str]) -> Output {
    kiln(args).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A 20 kB text (the built-in Markov corpus) written to `dir`/text.txt.
pub fn text_file(dir: &Path) -> PathBuf {
    let p = dir.join("text.txt");
    std::fs::write(&p, kiln::data::corpus::builtin_corpus(20_000).0).unwrap();
    p
}

/// The tiny training flags every run test uses (1 layer, 32 dims).
pub fn tiny_args<'a>(data: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--out",
        out,
        "--steps",
        steps,
        "--layers",
        "1",
        "--embd",
        "32",
        "--heads",
        "2",
        "--seq",
        "32",
        "--batch",
        "4",
        "--log-every",
        "1",
        "--sample-tokens",
        "0",
        "--eval-batches",
        "1",
        "--eval-every",
        "0",
    ]
}

/// A GPT model directory (model.safetensors, config.json, tokenizer/) made
/// on the host; `edit` may change the weights before they are written.
pub fn model_dir(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    let cfg = GptConfig::new(256, 16, 8, 2, 1);
    let mut params: Vec<(String, Vec<usize>, Vec<f32>)> = cfg
        .param_shapes()
        .into_iter()
        .zip(cfg.init_params(1))
        .map(|((n, s), (_, d))| (n, s, d))
        .collect();
    edit(&mut params);
    kiln::train::checkpoint::save_model(dir, &Gpt2::new(cfg).unwrap(), &params).unwrap();
    ByteTokenizer.save(&dir.join("tokenizer")).unwrap();
}

/// Writes a `kiln grads` batch file.
pub fn batch_file(path: &Path, shape: [usize; 2], inputs: Vec<i32>, targets: Vec<i32>) {
    use kiln::io::checkpoint::{save_safetensors, NamedTensor};
    save_safetensors(
        path,
        &[
            NamedTensor::i32("inputs", shape.to_vec(), inputs),
            NamedTensor::i32("targets", shape.to_vec(), targets),
        ],
        &Default::default(),
    )
    .unwrap();
}

/// The bytes of a file in a run's current checkpoint.
pub fn current_file(run: &Path, name: &str) -> Vec<u8> {
    let dir = kiln::io::ckpt_store::resolve(run).unwrap();
    std::fs::read(dir.join(name)).unwrap()
}
