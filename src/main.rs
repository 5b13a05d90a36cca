//! The `kiln` command line.

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Parser, Subcommand};

use kiln::runtime::devices::adapter_reports;
use kiln::train::run::{run_training, RunOptions};
use kiln::train::RunConfig;
use kiln::Gpu;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Kiln: pretrain and fine-tune neural networks on any GPU wgpu reaches",
    long_about = "Kiln: pretrain and fine-tune neural networks on any GPU wgpu reaches.\n\n\
        With no command, pretrains a small GPT on the built-in corpus and prints a sample.\n\
        KILN_BACKEND (vulkan, metal, dx12, gl) and KILN_ADAPTER (index or name) pick the GPU."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every GPU adapter wgpu can see, with the limits and features Kiln uses.
    Devices {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Pretrain a model: GPT-2 (causal LM), BERT (masked LM), ViT (image classification) or CLIP (image–text).
    Train(Box<TrainArgs>),
    /// Fine-tune a pretrained checkpoint (Kiln's or Hugging Face's) on labelled data with a new task head.
    Finetune(Box<FinetuneArgs>),
    /// Train a smaller student from a teacher's softened logits (knowledge distillation).
    Distill(Box<DistillArgs>),
    /// Generate text from a checkpoint.
    Sample(SampleArgs),
    /// Validation loss and perplexity of a checkpoint on a text.
    Eval(EvalArgs),
    /// One forward and backward pass on one batch; writes logits, loss and every gradient.
    Grads(GradsArgs),
    /// Benchmark kernels (GFLOP/s, GB/s, % of peak) and the GPT training step.
    Bench(Box<kiln::bench::cli::BenchArgs>),
    /// Fill each [MASK] of a text with a masked language model's (BERT's) most likely tokens.
    FillMask(FillMaskArgs),
    /// Classify images with an image classifier (ViT): PNG files, or indices into the test split.
    Classify(ClassifyArgs),
    /// Zero-shot classification of the Fashion-MNIST test split by a CLIP checkpoint (held-out prompts).
    ZeroShot(ZeroShotArgs),
    /// Print a GPT's graph: ops, shapes, bytes, buffer assignment and the memory plan (no GPU needed).
    Graph(GraphArgs),
}

#[derive(Args)]
struct FinetuneArgs {
    /// The pretrained checkpoint: a Kiln run or model directory, or a folder
    /// Hugging Face's save_pretrained wrote (config.json, model.safetensors,
    /// tokenizer.json). Its architecture, sizes and tokenizer are used.
    #[arg(long)]
    from: PathBuf,
    /// The from-scratch baseline: the checkpoint's architecture, sizes and
    /// tokenizer with fresh random weights.
    #[arg(long)]
    scratch: bool,
    /// Linear probe: freeze the whole backbone, train the head only.
    #[arg(long)]
    linear_probe: bool,
    /// Freeze the embeddings and the first N layers.
    #[arg(long)]
    freeze_layers: Option<usize>,
    /// The task head's peak learning rate (default: --lr).
    #[arg(long)]
    head_lr: Option<f32>,
    /// Layer-wise learning-rate decay: layer i of L trains at lr·d^(L−i),
    /// the embeddings at lr·d^(L+1) (e.g. 0.75; 1 = off).
    #[arg(long)]
    layer_decay: Option<f32>,
    /// Stop when the validation accuracy (else loss) has not improved for
    /// this many evaluations.
    #[arg(long)]
    patience: Option<u64>,
    /// Keep the best evaluation's model in OUT/best and report the test set with it.
    #[arg(long)]
    keep_best: bool,
    /// The checkpoint is a classifier with another number of classes:
    /// train a new head in place of its own.
    #[arg(long)]
    replace_head: bool,
    /// Labelled text: at most this many training examples per class.
    #[arg(long)]
    per_class: Option<usize>,
    /// Labelled text: the fraction of each class held out for testing (fixed split; default 0.2).
    #[arg(long)]
    test_fraction: Option<f64>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Args)]
struct DistillArgs {
    /// The teacher: a Kiln run or model directory (GPT-2, BERT or ViT). The
    /// student uses its tokenizer and, unless --layers/--embd/--heads say
    /// otherwise, half its layers and width.
    #[arg(long)]
    teacher: PathBuf,
    /// Weight of the teacher's soft term (the labels get 1 − alpha).
    #[arg(long)]
    alpha: Option<f32>,
    /// Softmax temperature of the soft term (its loss is scaled by τ²).
    #[arg(long)]
    tau: Option<f32>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Args)]
struct GraphArgs {
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 64)]
    embd: usize,
    #[arg(long, default_value_t = 256)]
    vocab: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    seq: usize,
    /// Forward pass only (no backward steps).
    #[arg(long)]
    forward_only: bool,
    /// Only the memory summary line.
    #[arg(long)]
    summary: bool,
    /// Unfused attention (q·kᵀ, softmax, p·v) instead of the fused kernels.
    #[arg(long)]
    unfused: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// What to pretrain: gpt2 (causal LM on text), bert (masked LM on text),
    /// vit (image classification, Fashion-MNIST) or clip (image–text
    /// contrastive, Fashion-MNIST with generated captions). Each has its own
    /// defaults for everything else.
    #[arg(long)]
    model: Option<String>,
    /// gin: attr-mask (self-supervised pretraining, the default) or
    /// regression (the data's numeric label columns); vit: masked-patch
    /// (masked image modelling on unlabelled images); gpt2, bert: classify
    /// (labelled text; what kiln finetune sets).
    #[arg(long)]
    objective: Option<String>,
    /// vit --objective masked-patch: the fraction of each image's patches masked (default 0.5).
    #[arg(long)]
    mask_ratio: Option<f32>,
    /// Start from the weights of this run or model directory (fine-tuning):
    /// every parameter it shares with the new model by name is loaded (shapes
    /// must agree), the others (a new head) are initialised as usual.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Freeze these parameters (no gradient, no optimizer state), by name or
    /// prefix, comma-separated: `--freeze gnn` trains only a GIN's head (a
    /// linear probe), `--freeze gnn.layers.0,gnn.atom_embeddings` the first layer and embeddings.
    #[arg(long, value_delimiter = ',')]
    freeze: Option<Vec<String>>,
    /// Image models: the side of a patch in pixels.
    #[arg(long)]
    patch: Option<usize>,
    /// Image models: train on these classes only, e.g. 0,1,2,3,4 (relabelled 0…).
    #[arg(long, value_delimiter = ',')]
    classes: Option<Vec<u8>>,
    /// Image models: the fraction of the training labels to use (a
    /// stratified, seeded subset).
    #[arg(long)]
    label_fraction: Option<f64>,
    /// TOML run config; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Text file or directory of .txt files (default: the built-in corpus).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output directory for checkpoints, metrics.jsonl and loss.svg.
    #[arg(long, default_value = "runs/gpt")]
    out: PathBuf,
    /// Tokenizer: byte, bpe (trained on the data) or gpt2:<dir with vocab.json and merges.txt>.
    #[arg(long)]
    tokenizer: Option<String>,
    #[arg(long)]
    bpe_vocab: Option<usize>,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long)]
    seq: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long)]
    layers: Option<usize>,
    #[arg(long)]
    heads: Option<usize>,
    #[arg(long)]
    embd: Option<usize>,
    /// Attention kernels: fused, unfused or auto (fused on GPUs, unfused on CPU adapters).
    #[arg(long)]
    attention: Option<String>,
    #[arg(long)]
    lr: Option<f32>,
    #[arg(long)]
    min_lr: Option<f32>,
    #[arg(long)]
    warmup: Option<u64>,
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Clip the global gradient norm (0 = off).
    #[arg(long)]
    grad_clip: Option<f32>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    eval_every: Option<u64>,
    #[arg(long)]
    eval_batches: Option<usize>,
    #[arg(long)]
    log_every: Option<u64>,
    #[arg(long)]
    checkpoint_every: Option<u64>,
    #[arg(long)]
    val_fraction: Option<f64>,
    #[arg(long)]
    sample_tokens: Option<usize>,
    /// Complete checkpoints to keep in --out/checkpoints (default 2).
    #[arg(long)]
    keep_checkpoints: Option<usize>,
    /// A NaN or infinite loss or gradient: stop (default; names the step and the
    /// first non-finite tensor, saves nothing after it) or skip (the update).
    #[arg(long)]
    on_nan: Option<String>,
    /// Continue the run in --out from its last complete checkpoint. Flags that
    /// may change (--steps, cadences, --lr and other optimizer settings,
    /// --keep-checkpoints, --on-nan) apply; model, data and batch flags must
    /// match the run's.
    #[arg(long)]
    resume: bool,
    /// Replace an existing run in --out.
    #[arg(long)]
    overwrite: bool,
    /// Stop after this step (the schedule still assumes --steps).
    #[arg(long)]
    stop_after: Option<u64>,
    /// Print the resolved config and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Args)]
struct SampleArgs {
    /// Run directory (config.json, model.safetensors, tokenizer/).
    #[arg(long, default_value = "runs/gpt")]
    checkpoint: PathBuf,
    #[arg(long, default_value = "\n")]
    prompt: String,
    #[arg(long, default_value_t = 200)]
    tokens: usize,
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long, default_value = "runs/gpt")]
    checkpoint: PathBuf,
    /// Text file or directory to evaluate on.
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Sequence length (default: the model's context).
    #[arg(long)]
    seq: Option<usize>,
    /// At most this many batches (0 = all of the text).
    #[arg(long, default_value_t = 0)]
    max_batches: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct FillMaskArgs {
    /// Run directory of a masked language model (BERT).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The text, with one or more [MASK] tokens.
    text: String,
    #[arg(long, default_value_t = 5)]
    top_k: usize,
}

#[derive(Args)]
struct ClassifyArgs {
    /// Run directory of an image classifier (ViT).
    #[arg(long)]
    checkpoint: PathBuf,
    /// PNG files, or numbers: images of the test split of --data.
    images: Vec<String>,
    /// Folder of the IDX files the numbers index (default: Fashion-MNIST where it usually is).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Invert PNGs (dark-on-light photos; Fashion-MNIST is light on black).
    #[arg(long)]
    invert: bool,
}

#[derive(Args)]
struct ZeroShotArgs {
    /// Run directory of a CLIP model.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Folder of Fashion-MNIST's IDX files (default: where it usually is).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct GradsArgs {
    /// A run directory, or a safetensors weights file with config.json beside it.
    #[arg(long)]
    checkpoint: PathBuf,
    /// safetensors with the model's inputs by their Hugging Face names (GPT-2:
    /// `input_ids` and `targets`, or `labels` as Hugging Face aligns them).
    #[arg(long, alias = "tokens")]
    batch: PathBuf,
    #[arg(long)]
    out: PathBuf,
}

fn main() {
    kiln::util::logger::init();
    if let Err(e) = real_main() {
        eprintln!("kiln: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        None => default_run(),
        Some(Cmd::Devices { json }) => devices(json),
        Some(Cmd::Train(a)) => train(*a),
        Some(Cmd::Finetune(a)) => finetune(*a),
        Some(Cmd::Distill(a)) => distill(*a),
        Some(Cmd::Sample(a)) => sample(a),
        Some(Cmd::Eval(a)) => eval(a),
        Some(Cmd::Grads(a)) => grads(a),
        Some(Cmd::Graph(a)) => graph(a),
        Some(Cmd::FillMask(a)) => fill_mask(a),
        Some(Cmd::Classify(a)) => classify(a),
        Some(Cmd::ZeroShot(a)) => zero_shot(a),
        Some(Cmd::Bench(a)) => kiln::bench::cli::run(&a),
    }
}

fn open_gpu() -> Result<Gpu> {
    pollster::block_on(Gpu::from_env())
}

fn devices(json: bool) -> Result<()> {
    let backends = kiln::runtime::GpuOptions::from_env()?.backends;
    let reports = pollster::block_on(adapter_reports(backends));
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
        return Ok(());
    }
    if reports.is_empty() {
        println!(
            "No GPU adapters found. Install a Vulkan/Metal/DX12 driver; on Linux without a GPU, \
             `apt-get install mesa-vulkan-drivers` provides lavapipe (a CPU Vulkan driver)."
        );
        return Ok(());
    }
    for r in &reports {
        println!("{}\n", r.pretty());
    }
    let gpu = open_gpu()?;
    println!(
        "Selected (KILN_ADAPTER / KILN_BACKEND to change): {}",
        gpu.describe()
    );
    Ok(())
}

/// `kiln` with no arguments: pretrain the built-in default and print a sample.
fn default_run() -> Result<()> {
    let gpu = open_gpu()?;
    let cfg = RunConfig::default_for(gpu.is_cpu());
    if gpu.is_cpu() {
        println!(
            "kiln: the adapter is a CPU ({}); using the small CPU-sized default.",
            gpu.info().name
        );
    }
    let out = PathBuf::from("runs/default");
    kiln::train::interrupt::install()?;
    let summary = run_training(
        &gpu,
        &cfg,
        &RunOptions {
            out,
            overwrite: true,
            ..Default::default()
        },
    )?;
    print_summary(&summary);
    if summary.interrupted {
        std::process::exit(kiln::train::interrupt::EXIT_INTERRUPTED);
    }
    Ok(())
}

fn print_summary(s: &kiln::train::run::RunSummary) {
    println!(
        "\nkiln: {} steps in {:.1}s ({:.0} {}/s); train loss {}, validation loss {}{}",
        s.steps,
        s.seconds,
        s.tokens_per_second,
        s.unit,
        s.final_train_loss.map_or("-".into(), |l| format!("{l:.4}")),
        s.final_val_loss.map_or("-".into(), |l| format!("{l:.4}")),
        s.loss_floor
            .as_ref()
            .map_or(String::new(), |(_, label)| format!(" ({label})")),
    );
    if s.interrupted {
        println!(
            "kiln: interrupted at step {}: checkpoint saved in {}; continue with --resume",
            s.steps,
            s.out.display()
        );
        return;
    }
    println!(
        "kiln: checkpoint, metrics.jsonl and loss.svg in {}",
        s.out.display()
    );
    if !s.sample.is_empty() {
        println!("\n--- {} ---\n{}\n--------------", s.sample_title, s.sample);
    }
}

fn train(a: TrainArgs) -> Result<()> {
    train_with_gpu(open_gpu()?, a, None, |_, _| Ok(()))
}

/// `kiln finetune`: the checkpoint's architecture with a task head for the
/// data; fine-tuning defaults, then the flags.
fn finetune(f: FinetuneArgs) -> Result<()> {
    let mut a = f.train;
    ensure!(
        a.init_from.is_none(),
        "kiln finetune takes the checkpoint as --from (--init-from is kiln train's spelling)"
    );
    let (_, cfg, ty) = checkpoint_family("--from", &f.from, a.model.as_deref())?;
    a.model = Some(ty.clone());
    if a.objective.is_none() {
        a.objective = match ty.as_str() {
            "bert" | "gpt2" | "clip" => Some("classify".into()),
            "gin" => Some("regression".into()),
            _ => None,
        };
    }
    a.init_from = Some(f.from.clone());
    if a.out == std::path::Path::new("runs/gpt") {
        a.out = PathBuf::from("runs/finetune");
    }
    let gpu = open_gpu()?;
    let mut base = RunConfig::default_for_model(&ty, gpu.is_cpu())?;
    // Fine-tuning: a short run at a small rate, evaluated often, no sample.
    base.train.steps = 300;
    base.train.eval_every = 50;
    base.train.eval_batches = 1000;
    base.train.checkpoint_every = 0;
    base.train.sample_tokens = 0;
    base.optimizer.lr = 1e-4;
    base.optimizer.min_lr = 1e-5;
    base.optimizer.warmup_steps = 30;
    base.optimizer.weight_decay = 0.01;
    if matches!(ty.as_str(), "bert" | "gpt2") {
        base.train.batch = 16;
        let ctx = cfg["max_position_embeddings"]
            .as_u64()
            .or(cfg["n_positions"].as_u64())
            .unwrap_or(128) as usize;
        base.train.seq = ctx.min(128);
        base.train.log_every = 10;
    }
    base.optimizer.decay_steps = base.train.steps;
    let mut freeze = Vec::new();
    if f.linear_probe {
        freeze.push("backbone".to_string());
    }
    if let Some(n) = f.freeze_layers {
        freeze.push(format!("layers:{n}"));
    }
    train_with_gpu(gpu, a, Some(base), move |c, given| {
        let mut set = |key: &str| {
            given.insert(key.to_string());
        };
        c.train.scratch = f.scratch;
        set("train.scratch");
        if !freeze.is_empty() {
            c.train.freeze.extend(freeze);
            set("train.freeze");
        }
        if let Some(v) = f.head_lr {
            c.optimizer.head_lr = Some(v);
            set("optimizer.head_lr");
        }
        if let Some(v) = f.layer_decay {
            c.optimizer.layer_decay = v;
            set("optimizer.layer_decay");
        }
        if let Some(v) = f.patience {
            c.train.patience = v;
            set("train.patience");
        }
        if f.keep_best {
            c.train.keep_best = true;
            set("train.keep_best");
        }
        if f.replace_head {
            c.train.replace_head = true;
            set("train.replace_head");
        }
        if let Some(v) = f.per_class {
            c.data.per_class = v;
            set("data.per_class");
        }
        if let Some(v) = f.test_fraction {
            c.data.test_fraction = v;
            set("data.test_fraction");
        }
        Ok(())
    })
}

/// `kiln distill`: a student of the teacher's family, half its size
/// unless told, trained on the teacher's softened logits and the labels.
fn distill(d: DistillArgs) -> Result<()> {
    let mut a = d.train;
    let (teacher, tc, ty) = checkpoint_family("--teacher", &d.teacher, a.model.as_deref())?;
    ensure!(
        matches!(ty.as_str(), "gpt2" | "bert" | "vit"),
        "--teacher {}: a {} ({ty}); kiln distill distils GPT-2, BERT and ViT (models with logits)",
        d.teacher.display(),
        teacher.architecture()
    );
    a.model = Some(ty.clone());
    if a.out == std::path::Path::new("runs/gpt") {
        a.out = PathBuf::from("runs/distill");
    }
    let num = |k: &[&str]| k.iter().find_map(|k| tc[*k].as_u64()).unwrap_or(0) as usize;
    let (layers, embd, heads) = (
        num(&["n_layer", "num_hidden_layers"]),
        num(&["n_embd", "hidden_size"]),
        num(&["n_head", "num_attention_heads"]),
    );
    let ctx = num(&["n_positions", "max_position_embeddings"]);
    let gpu = open_gpu()?;
    let mut base = RunConfig::default_for_model(&ty, gpu.is_cpu())?;
    base.model.n_layer = (layers / 2).max(1);
    base.model.n_head = (heads / 2).max(1);
    base.model.n_embd = (embd / 2).max(base.model.n_head);
    if ctx > 0 {
        base.train.seq = base.train.seq.min(ctx);
    }
    train_with_gpu(gpu, a, Some(base), move |c, given| {
        c.distill.teacher = Some(d.teacher.clone());
        given.insert("distill.teacher".into());
        if let Some(v) = d.alpha {
            c.distill.alpha = v;
            given.insert("distill.alpha".into());
        }
        if let Some(v) = d.tau {
            c.distill.tau = v;
            given.insert("distill.tau".into());
        }
        Ok(())
    })
}

/// The model a checkpoint given as `flag` holds, its config.json and its
/// family (`model_type`); a `--model` that names another family is refused.
fn checkpoint_family(
    flag: &str,
    path: &std::path::Path,
    model: Option<&str>,
) -> Result<(
    std::sync::Arc<dyn kiln::model::Model>,
    serde_json::Value,
    String,
)> {
    ensure!(
        path.exists(),
        "{flag} {}: no such run, checkpoint or model directory",
        path.display()
    );
    let dir = kiln::io::ckpt_store::resolve(path)?;
    let m = kiln::train::checkpoint::load_model_config(&dir)
        .with_context(|| format!("{flag} {}", path.display()))?;
    let cfg = m.config_json();
    let ty = cfg["model_type"].as_str().unwrap_or("gpt2").to_string();
    if let Some(want) = model {
        ensure!(
            want == ty || (want == "gpt" && ty == "gpt2"),
            "--model {want}: the checkpoint in {} is a {ty} model, and this command trains that \
             family (leave out --model)",
            path.display()
        );
    }
    Ok((m, cfg, ty))
}

type Given = std::collections::BTreeSet<String>;

/// `kiln train` with `base` as the default config (when no --config) and
/// `extra` applied after the flags.
fn train_with_gpu(
    gpu: kiln::runtime::Gpu,
    a: TrainArgs,
    base: Option<RunConfig>,
    extra: impl FnOnce(&mut RunConfig, &mut Given) -> Result<()>,
) -> Result<()> {
    // `--objective bert` is accepted for `--model bert` (an older spelling).
    let mut a = a;
    if a.model.is_none()
        && a.objective
            .as_deref()
            .is_some_and(|o| kiln::model::ARCHITECTURES.contains(&o) || o == "gpt")
    {
        a.model = a.objective.take();
    }
    let arch = match a.model.as_deref() {
        Some("gpt") | None => "gpt2",
        Some(m) => m,
    };
    let mut c = match (&a.config, base) {
        (Some(p), _) => RunConfig::from_toml_file(p)?,
        (None, Some(b)) => b,
        (None, None) => RunConfig::default_for_model(arch, gpu.is_cpu())?,
    };
    // The settings given explicitly: they matter to --resume.
    let mut given = std::collections::BTreeSet::new();
    if let Some(p) = &a.config {
        given = kiln::train::resume::keys_in_toml(&std::fs::read_to_string(p)?)?;
    }
    if a.model.is_some() {
        c.model.arch = arch.to_string();
        given.insert("model.arch".into());
    }
    macro_rules! set {
        ($($flag:ident => $sec:ident . $field:ident),* $(,)?) => {
            $(if let Some(v) = a.$flag.clone() {
                c.$sec.$field = v;
                given.insert(concat!(stringify!($sec), ".", stringify!($field)).to_string());
            })*
        };
    }
    set!(
        tokenizer => data.tokenizer, bpe_vocab => data.bpe_vocab, val_fraction => data.val_fraction,
        steps => train.steps, batch => train.batch, seq => train.seq, grad_accum => train.grad_accum,
        seed => train.seed, eval_every => train.eval_every, eval_batches => train.eval_batches,
        log_every => train.log_every, checkpoint_every => train.checkpoint_every,
        sample_tokens => train.sample_tokens, keep_checkpoints => train.keep_checkpoints,
        layers => model.n_layer, heads => model.n_head, embd => model.n_embd, attention => model.attention,
        patch => model.patch_size, classes => data.classes, label_fraction => data.label_fraction,
        mask_ratio => model.mask_ratio,
        lr => optimizer.lr, min_lr => optimizer.min_lr, warmup => optimizer.warmup_steps,
        weight_decay => optimizer.weight_decay, grad_clip => optimizer.grad_clip,
    );
    if let Some(v) = &a.on_nan {
        c.train.on_nan = kiln::train::nan_guard::OnNan::parse(v)?;
        given.insert("train.on_nan".into());
    }
    if a.data.is_some() {
        c.data.path = a.data.clone();
        given.insert("data.path".into());
    }
    if let Some(o) = &a.objective {
        c.model.objective = Some(o.clone());
        given.insert("model.objective".into());
        // A regression is tested on a fixed held-out 20% (Hu et al.'s
        // scaffold-free setting), unless told otherwise.
        if o == "regression" && a.val_fraction.is_none() && a.config.is_none() {
            c.data.val_fraction = 0.2;
        }
    }
    if let Some(f) = &a.freeze {
        c.train.freeze = f.clone();
        given.insert("train.freeze".into());
    }
    if a.init_from.is_some() {
        c.train.init_from = a.init_from.clone();
        given.insert("train.init_from".into());
    }
    if a.steps.is_some() || a.config.is_none() {
        c.optimizer.decay_steps = c.train.steps;
    }
    extra(&mut c, &mut given)?;
    if a.print_config {
        c.validate()?;
        print!("{}", c.to_toml());
        return Ok(());
    }
    if !a.resume {
        c.validate()?;
    }
    kiln::train::interrupt::install()?;
    let summary = run_training(
        &gpu,
        &c,
        &RunOptions {
            out: a.out,
            resume: a.resume,
            overwrite: a.overwrite,
            stop_after: a.stop_after,
            quiet: false,
            given,
        },
    )?;
    print_summary(&summary);
    if summary.interrupted {
        std::process::exit(kiln::train::interrupt::EXIT_INTERRUPTED);
    }
    Ok(())
}

/// A run or model directory's current checkpoint: (its directory, the
/// model its config.json describes, the weights).
fn load_run(
    path: &std::path::Path,
) -> Result<(
    PathBuf,
    std::sync::Arc<dyn kiln::model::Model>,
    kiln::model::HostParams,
)> {
    if !path.exists() {
        bail!(
            "no checkpoint at {}: no such file or directory",
            path.display()
        );
    }
    let dir = kiln::io::ckpt_store::resolve(path)?;
    let (model, params) = kiln::train::checkpoint::load_model(&dir)?;
    Ok((dir, model, params))
}

/// The context length of a language model, or an error naming what it is.
fn context_of(model: &dyn kiln::model::Model) -> Result<usize> {
    model.context_length().ok_or_else(|| {
        anyhow::anyhow!(
            "the checkpoint holds a {}, not a language model that generates text",
            model.architecture()
        )
    })
}

fn sample(a: SampleArgs) -> Result<()> {
    let (dir, model, params) = load_run(&a.checkpoint)?;
    context_of(model.as_ref())?;
    let tok = kiln::data::tokenizer::load_tokenizer(&dir.join(kiln::train::run::TOKENIZER_DIR))?;
    let prompt = tok.encode(&a.prompt);
    ensure!(
        !prompt.is_empty(),
        "--prompt is empty: the model needs at least one token to continue"
    );
    ensure!(
        a.temperature.is_finite() && a.temperature >= 0.0,
        "--temperature must be a number ≥ 0, got {}",
        a.temperature
    );
    let gpu = open_gpu()?;
    let opts = kiln::train::sample::SampleOptions {
        max_new_tokens: a.tokens,
        temperature: a.temperature,
        top_k: a.top_k,
        seed: a.seed,
    };
    let ids = pollster::block_on(kiln::train::sample::generate(
        &gpu,
        model.as_ref(),
        &params,
        &prompt,
        &opts,
    ))?;
    println!("{}{}", a.prompt, tok.decode(&ids));
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    use kiln::data::DataSource;
    let (dir, model, params) = load_run(&a.checkpoint)?;
    let context = context_of(model.as_ref())?;
    let seq = a.seq.unwrap_or(context);
    ensure!(
        (1..=context).contains(&seq),
        "--seq {seq}: must be between 1 and the model's context, {context}"
    );
    kiln::train::validate::check_batch_shape(a.batch, seq)?;
    let tok = kiln::data::tokenizer::load_tokenizer(&dir.join(kiln::train::run::TOKENIZER_DIR))?;
    let text = kiln::data::corpus::load_text(&a.data)?;
    let data = kiln::data::loader::TokenDataset {
        train: Vec::new(),
        val: tok.encode(&text),
    };
    let mut n = data.num_val_batches(a.batch, seq);
    if a.max_batches > 0 {
        n = n.min(a.max_batches);
    }
    if n == 0 {
        bail!(
            "{} has {} tokens; batch {} × seq {seq} needs at least {}: use a longer text or a smaller --batch/--seq",
            a.data.display(),
            data.val.len(),
            a.batch,
            a.batch * seq + 1
        );
    }
    let source = kiln::data::CausalLm {
        data,
        seed: 0,
        batch: a.batch,
        seq,
    };
    let batches = source.val_batches(n)?;
    // The model's own checks name an id outside its vocabulary (a tokenizer
    // that does not belong to this checkpoint) before anything runs.
    for b in &batches {
        let mut b = b.clone();
        model.prepare_batch(&mut b).with_context(|| {
            format!(
                "the tokenizer in {} does not fit this checkpoint",
                dir.display()
            )
        })?;
    }
    let gpu = open_gpu()?;
    let shapes = kiln::model::param_shapes(model.as_ref())?;
    let gpu_params = kiln::model::upload_params(&gpu, &shapes, &params)?;
    // Forward only: no gradients, no optimizer state.
    let eval = kiln::train::Evaluator::new(
        &gpu,
        model.clone(),
        &source.layout(),
        &gpu_params,
        kiln::graph::AttentionImpl::choose("auto", &gpu)?,
    )?;
    let loss = pollster::block_on(eval.mean_loss(&batches))?;
    let tokens = n * a.batch * seq;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"loss": loss, "perplexity": (loss as f64).exp(), "tokens": tokens, "batches": n})
        );
    } else {
        println!(
            "loss {loss:.4} · perplexity {:.3} · {tokens} tokens in {n} batches",
            (loss as f64).exp()
        );
    }
    Ok(())
}

fn grads(a: GradsArgs) -> Result<()> {
    use kiln::io::checkpoint::{save_safetensors, NamedTensor};
    let (model, params) = if a.checkpoint.is_file() {
        // A weights file: config.json beside it, the weights from this file.
        let dir = a
            .checkpoint
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let model = kiln::train::checkpoint::load_model_config(dir)
            .with_context(|| format!("--checkpoint {}", a.checkpoint.display()))?;
        let params = kiln::train::checkpoint::load_params_file(&a.checkpoint, model.as_ref())?;
        (model, params)
    } else {
        let (_, model, params) = load_run(&a.checkpoint)?;
        (model, params)
    };
    let batch = kiln::train::batch_file::read_batch_file(&a.batch, model.as_ref())
        .with_context(|| format!("--batch {}", a.batch.display()))?;
    let gpu = open_gpu()?;
    let r = pollster::block_on(kiln::train::grads::grads_pass(
        &gpu,
        model.as_ref(),
        &params,
        &batch,
        kiln::graph::AttentionImpl::Fused,
    ))?;
    let mut out = vec![NamedTensor::f32("loss", vec![1], vec![r.loss])];
    for (name, (shape, v)) in &r.outputs {
        out.push(NamedTensor::f32(name.clone(), shape.clone(), v.clone()));
    }
    let n_out = out.len();
    for (name, shape, g) in r.grads {
        out.push(NamedTensor::f32(format!("grad.{name}"), shape, g));
    }
    save_safetensors(&a.out, &out, &Default::default())?;
    println!(
        "loss {:.6}; wrote loss, {} and {} gradients to {}",
        r.loss,
        r.outputs.keys().cloned().collect::<Vec<_>>().join(", "),
        out.len() - n_out,
        a.out.display()
    );
    Ok(())
}

fn fill_mask(a: FillMaskArgs) -> Result<()> {
    let (dir, model, params) = load_run(&a.checkpoint)?;
    ensure!(
        model.architecture() == "BertForMaskedLM",
        "the checkpoint holds a {}; fill-mask needs a masked language model (BertForMaskedLM)",
        model.architecture()
    );
    ensure!(a.top_k >= 1, "--top-k must be at least 1");
    let tok = kiln::data::tokenizer::load_tokenizer(&dir.join(kiln::train::run::TOKENIZER_DIR))?;
    let ids = tok.encode(&a.text);
    let gpu = open_gpu()?;
    let shapes = kiln::model::param_shapes(model.as_ref())?;
    let gpu_params = kiln::model::upload_params(&gpu, &shapes, &params)?;
    let fills = kiln::objective::text::fill_mask_ids(
        &gpu,
        model,
        &gpu_params,
        tok.as_ref(),
        &ids,
        a.top_k,
    )?;
    println!("{}", a.text);
    for (k, f) in fills.iter().enumerate() {
        let top: Vec<String> = f
            .top
            .iter()
            .map(|(w, p)| format!("{:?} {p:.3}", w.trim()))
            .collect();
        println!("[MASK] {}: {}", k + 1, top.join(", "));
    }
    Ok(())
}

fn classify(a: ClassifyArgs) -> Result<()> {
    let (dir, model, params) = load_run(&a.checkpoint)?;
    ensure!(a.top_k >= 1, "--top-k must be at least 1");
    let gpu = open_gpu()?;
    let rows = kiln::objective::images::classify(
        &gpu,
        &dir,
        model,
        &params,
        &a.images,
        a.data.as_deref(),
        a.top_k,
        a.invert,
    )?;
    for (img, top) in a.images.iter().zip(rows) {
        let t: Vec<String> = top.iter().map(|(c, p)| format!("{c} {p:.3}")).collect();
        println!("{img}: {}", t.join(", "));
    }
    Ok(())
}

fn zero_shot(a: ZeroShotArgs) -> Result<()> {
    let (dir, model, params) = load_run(&a.checkpoint)?;
    let gpu = open_gpu()?;
    let r = kiln::objective::images::zero_shot_checkpoint(
        &gpu,
        &dir,
        model,
        &params,
        a.data.as_deref(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("{}", r.summary());
    }
    Ok(())
}

fn graph(a: GraphArgs) -> Result<()> {
    use kiln::graph::AttentionImpl;
    use kiln::model::{build, for_run, BuildOptions, Dims, ModelDims};
    kiln::train::validate::check_batch_shape(a.batch, a.seq)?;
    let model = for_run(
        "gpt2",
        &ModelDims {
            n_layer: a.layers,
            n_head: a.heads,
            n_embd: a.embd,
            n_positions: a.seq,
            vocab_size: a.vocab,
            ..Default::default()
        },
    )?;
    kiln::train::validate::check_model_size(model.as_ref())?;
    let layout = model.input_specs(Dims {
        batch: a.batch,
        seq: a.seq,
    });
    let built = build(
        model.as_ref(),
        &layout,
        &BuildOptions {
            training: !a.forward_only,
            attention: if a.unfused {
                AttentionImpl::Unfused
            } else {
                AttentionImpl::Fused
            },
            ..Default::default()
        },
    )?;
    let plan = kiln::graph::plan::plan(&built.graph)?;
    let text = built.graph.dump(Some(&plan));
    if a.summary {
        println!(
            "{}",
            text.lines()
                .find(|l| l.starts_with("memory:"))
                .unwrap_or("")
        );
    } else {
        print!("{text}");
    }
    Ok(())
}
