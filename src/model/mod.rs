//! Models: each declares its parameters once under their Hugging Face names
//! (through [`vb::Vb`]), reads and writes its Hugging Face `config.json`,
//! and builds its graph from named inputs to named outputs with the ops of
//! [`crate::ops`]. The trainer, checkpoints, evaluation, sampling and `kiln
//! grads` work for any [`Model`].
//!
//! Adding a model: a file here with its config (serde, HF field names), an
//! implementation of [`Model`], and a line in [`from_config_json`].

pub mod bert;
pub mod clip;
pub mod distill;
pub mod finetune;
pub mod gin;
pub mod gpt2;
pub mod heads;
pub mod transformer;
pub mod vb;
pub mod vit;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::data::{Batch, InputSpec};
use crate::graph::exec::TensorMap;
use crate::graph::{AttentionImpl, Graph, GraphOptions, Init, ParamInfo, TensorId};
use crate::runtime::Gpu;
use crate::util::Rng;

pub use gpt2::GptConfig;

/// The most parameters any model config may describe (2^36, 275 GB in
/// f32): beyond any single GPU, and a bound that keeps size computations
/// far from overflow.
pub const MAX_PARAMS: u64 = 1 << 36;

/// The most layers a model may have (the largest published ones have ~100).
pub const MAX_LAYERS: usize = 4096;

/// Refuses transformer sizes beyond [`MAX_PARAMS`] (≈ layers · 12·hidden² +
/// embeddings), computed without overflow, before any graph is built.
pub fn check_size(
    what: &str,
    layers: usize,
    hidden: usize,
    inner: usize,
    table_rows: usize,
) -> Result<()> {
    ensure!(
        layers <= MAX_LAYERS,
        "{what}: {layers} layers; Kiln builds at most {MAX_LAYERS}"
    );
    let (l, h, i, t) = (
        layers as u128,
        hidden as u128,
        inner as u128,
        table_rows as u128,
    );
    let n = l * (4 * h * h + 2 * h * i + 9 * h + i) + t * h;
    ensure!(
        n <= MAX_PARAMS as u128,
        "{what}: {layers} layers of {hidden} dims (MLP {inner}, {table_rows} embedding rows) is \
         about {n} parameters, more than the {MAX_PARAMS} Kiln can train or load"
    );
    Ok(())
}

/// Parameters on the host: (name, values) in declaration order.
pub type HostParams = Vec<(String, Vec<f32>)>;

/// The sizes a batch layout is made from (models ignore what they do not use:
/// an image model has no sequence length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub batch: usize,
    pub seq: usize,
}

/// What a model's graph produces.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// Loss terms (name, tensor, weight); the training loss is Σ weight·term.
    pub losses: Vec<(String, TensorId, f32)>,
    /// Named results: `logits`, embeddings.
    pub tensors: BTreeMap<String, TensorId>,
    /// Scalar metrics reported next to the loss (`accuracy`), averaged over
    /// micro-batches and evaluation batches.
    pub metrics: Vec<(String, TensorId)>,
}

/// A model Kiln can build, train, evaluate and save.
pub trait Model: Debug + Send + Sync {
    /// The Hugging Face class it matches (`GPT2LMHeadModel`).
    fn architecture(&self) -> &'static str;

    /// Its `config.json`, in that class's format.
    fn config_json(&self) -> serde_json::Value;

    /// One line for logs ("GPT-2 2 layers, 4 heads, 64 dims, …").
    fn describe(&self) -> String;

    /// The inputs of a batch of these dimensions (what a data source makes).
    fn input_specs(&self, dims: Dims) -> Vec<InputSpec>;

    /// Builds the forward computation on `g` from the named `inputs`
    /// (tensors already in `g`), declaring every parameter. Inputs a model
    /// can do without (labels, for inference) may be absent.
    fn forward(&self, g: &mut Graph, inputs: &BTreeMap<String, TensorId>) -> Result<Outputs>;

    /// Checks a host batch before it is uploaded (ids within the vocabulary,
    /// labels valid), and converts Hugging Face argument forms the graph does
    /// not take directly. The error names the tensor and the problem.
    fn prepare_batch(&self, batch: &mut Batch) -> Result<()> {
        let _ = batch;
        Ok(())
    }

    /// Whether every input's first dimension is the batch (examples): true
    /// for sequence and image models; a graph model's inputs have node,
    /// edge and graph dimensions, which its `prepare_batch` checks.
    fn inputs_share_batch_dim(&self) -> bool {
        true
    }

    /// The longest sequence the model takes, for text generation (`None`:
    /// the model does not generate text).
    fn context_length(&self) -> Option<usize> {
        None
    }

    /// The checkpoint name a stored tensor stands for: the identity, unless
    /// the architecture has aliases (GPT-2's unprefixed names). `None` skips
    /// tensors that are not parameters (buffers, tied copies).
    fn canonical_name(&self, stored: &str) -> Option<String> {
        Some(stored.to_string())
    }

    /// Name prefixes of the task head (the part fine-tuning replaces, that
    /// `--head-lr` trains at its own rate and `--freeze backbone` leaves
    /// trainable); everything else is the backbone.
    fn head_prefixes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Refuses NaN or infinite `pixel_values`, naming the first.
pub(crate) fn check_pixels(px: &[f32]) -> Result<()> {
    if let Some(i) = px.iter().position(|x| !x.is_finite()) {
        bail!("pixel_values[{i}] is not finite");
    }
    Ok(())
}

/// Whether `config.json`'s `architectures` list names `class`.
pub fn names_architecture(v: &serde_json::Value, class: &str) -> bool {
    v.get("architectures")
        .and_then(|a| a.as_array())
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(class)))
}

/// Whether parameter `name` belongs to `model`'s task head.
pub fn is_head(model: &dyn Model, name: &str) -> bool {
    model
        .head_prefixes()
        .iter()
        .any(|p| name.starts_with(p.as_str()))
}

/// The depth of a parameter for layer-wise learning rates and `--freeze
/// layers:N`: 0 for what comes before the first layer (embeddings), i + 1 for
/// layer i (a `.layer.i.`, `.layers.i.` or `.h.i.` segment), and `layers + 1`
/// for everything after the last (final norms, poolers, heads).
pub fn layer_depth(name: &str, layers: usize) -> usize {
    if let Some(i) = layer_index(name) {
        return i + 1;
    }
    let before = |p: &str| p.contains("embed") || matches!(p, "wte" | "wpe" | "pre_layrnorm");
    if name.split('.').any(before) {
        0
    } else {
        layers + 1
    }
}

/// The layer a parameter belongs to: i for a `.layer.i.`, `.layers.i.` or
/// `.h.i.` segment of its name.
pub fn layer_index(name: &str) -> Option<usize> {
    let parts: Vec<&str> = name.split('.').collect();
    parts.windows(2).find_map(|w| {
        matches!(w[0], "layer" | "layers" | "h")
            .then(|| w[1].parse::<usize>().ok())
            .flatten()
    })
}

/// The number of layers a model's parameter names show (one past the
/// largest layer index).
pub fn layer_count(names: &[String]) -> usize {
    names
        .iter()
        .filter_map(|n| layer_index(n))
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

/// A model from its Hugging Face `config.json` (`model_type` picks it).
pub fn from_config_json(v: &serde_json::Value) -> Result<Arc<dyn Model>> {
    let ty = v
        .get("model_type")
        .and_then(|t| t.as_str())
        .unwrap_or("gpt2");
    match ty {
        "gpt2" => Ok(Arc::new(gpt2::Gpt2::from_config_json(v)?)),
        "bert" => Ok(Arc::new(bert::Bert::from_config_json(v)?)),
        "vit" => Ok(Arc::new(vit::Vit::from_config_json(v)?)),
        "clip" if names_architecture(v, clip::IMAGE_CLS) => {
            Ok(Arc::new(clip::ClipImageClassifier::from_config_json(v)?))
        }
        "clip" => Ok(Arc::new(clip::Clip::from_config_json(v)?)),
        "gin" => Ok(Arc::new(gin::Gin::from_config_json(v)?)),
        other => bail!(
            "config.json describes a {other:?} model; Kiln knows gpt2 (GPT2LMHeadModel), \
             bert (BertForMaskedLM), vit (ViTForImageClassification), clip (CLIPModel) and gin \
             (a graph isomorphism network)"
        ),
    }
}

/// The sizes a run configuration gives a model (`[model]` in run.toml),
/// and what the data decides (vocabulary, special ids, image size, classes).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelDims {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    /// Context length (rows of a position table).
    pub n_positions: usize,
    pub vocab_size: usize,
    /// Images: side, channels and patch size (ViT, CLIP).
    pub image: Option<ImageDims>,
    /// Class names (ViT); a single class means regression.
    pub labels: Vec<String>,
    /// Special token ids a config records (CLIP pools at `eos`).
    pub bos: Option<i64>,
    pub eos: Option<i64>,
    pub pad: Option<i64>,
    /// The joint embedding size (CLIP); `n_embd` when unset.
    pub projection_dim: Option<usize>,
    /// Graph models: the feature vocabularies, task and targets (the sizes
    /// `hidden_size`/`num_layers` come from `n_embd`/`n_layer`).
    pub graph: Option<gin::GinConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageDims {
    pub size: usize,
    pub channels: usize,
    pub patch: usize,
}

/// The architectures [`for_run`] builds.
pub const ARCHITECTURES: [&str; 5] = ["gpt2", "bert", "vit", "clip", "gin"];

/// A freshly configured model of architecture `arch` (gpt2, bert, vit,
/// clip or gin) and these sizes, with each architecture's defaults for the rest.
pub fn for_run(arch: &str, d: &ModelDims) -> Result<Arc<dyn Model>> {
    let image = || {
        d.image
            .ok_or_else(|| anyhow!("model {arch:?} needs the image size, channels and patch size"))
    };
    match arch {
        "gpt2" | "gpt" => Ok(Arc::new(gpt2::Gpt2::new(GptConfig::new(
            d.vocab_size,
            d.n_positions,
            d.n_embd,
            d.n_head,
            d.n_layer,
        ))?)),
        "bert" => {
            let mut c =
                bert::BertConfig::new(d.vocab_size, d.n_embd, d.n_layer, d.n_head, d.n_positions);
            c.pad_token_id = d.pad.unwrap_or(0).max(0) as usize;
            Ok(Arc::new(bert::Bert::new(c)?))
        }
        "vit" => {
            let im = image()?;
            ensure!(
                !d.labels.is_empty(),
                "model \"vit\" needs the class names of its data"
            );
            let c = vit::VitConfig::new(
                d.n_embd,
                d.n_layer,
                d.n_head,
                im.size,
                im.patch,
                im.channels,
                &d.labels,
            );
            Ok(Arc::new(vit::Vit::new(c)?))
        }
        "clip" => {
            let im = image()?;
            let text = clip::ClipTextConfig {
                vocab_size: d.vocab_size,
                hidden_size: d.n_embd,
                intermediate_size: 4 * d.n_embd,
                num_hidden_layers: d.n_layer,
                num_attention_heads: d.n_head,
                max_position_embeddings: d.n_positions,
                hidden_act: "quick_gelu".into(),
                layer_norm_eps: 1e-5,
                eos_token_id: d
                    .eos
                    .ok_or_else(|| anyhow!("model \"clip\" needs the end-of-text id"))?,
                bos_token_id: d.bos,
                pad_token_id: d.pad,
            };
            let vision = clip::ClipVisionConfig {
                hidden_size: d.n_embd,
                intermediate_size: 4 * d.n_embd,
                num_hidden_layers: d.n_layer,
                num_attention_heads: d.n_head,
                image_size: im.size,
                patch_size: im.patch,
                num_channels: im.channels,
                hidden_act: "quick_gelu".into(),
                layer_norm_eps: 1e-5,
            };
            Ok(Arc::new(clip::Clip::new(clip::ClipConfig {
                text_config: text,
                vision_config: vision,
                projection_dim: d.projection_dim.unwrap_or(d.n_embd),
                logit_scale_init_value: 2.6592,
                initializer_factor: 1.0,
            })?))
        }
        "gin" => {
            let mut c = d.graph.clone().ok_or_else(|| {
                anyhow!("model \"gin\" needs the feature vocabularies of its data")
            })?;
            c.hidden_size = d.n_embd;
            c.num_layers = d.n_layer;
            Ok(Arc::new(gin::Gin::new(c)?))
        }
        other => bail!(
            "model {other:?} is not available; Kiln trains {}",
            ARCHITECTURES.join(", ")
        ),
    }
}

/// Options for [`build`].
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Append the backward pass.
    pub training: bool,
    /// Named outputs to keep readable after a step (costs their memory).
    pub keep: Vec<String>,
    /// Scale of the loss gradient (1 / gradient-accumulation steps).
    pub grad_scale: f32,
    pub attention: AttentionImpl,
    /// Parameters to freeze (no gradient, no optimizer state), by name.
    pub frozen: Vec<String>,
    /// Dropout active: `None` follows `training`; `kiln grads` turns it off
    /// so its gradients compare with a reference in evaluation mode.
    pub dropout: Option<bool>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            training: false,
            keep: Vec::new(),
            grad_scale: 1.0,
            attention: AttentionImpl::default(),
            frozen: Vec::new(),
            dropout: None,
        }
    }
}

/// A built graph with its inputs and outputs by name.
#[derive(Debug)]
pub struct Built {
    pub graph: Graph,
    pub inputs: BTreeMap<String, TensorId>,
    pub outputs: Outputs,
}

impl Built {
    /// A named output (`logits`), or an error listing what there is.
    pub fn output(&self, name: &str) -> Result<TensorId> {
        self.outputs.tensors.get(name).copied().ok_or_else(|| {
            anyhow!(
                "the model has no output {name:?} (it has: {})",
                self.outputs
                    .tensors
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

/// Builds `model`'s graph for inputs of `layout`, lowered for training or
/// inference.
pub fn build(model: &dyn Model, layout: &[InputSpec], o: &BuildOptions) -> Result<Built> {
    let mut g = Graph::new(GraphOptions {
        attention: o.attention,
        dropout: o.dropout.unwrap_or(o.training),
    });
    let mut inputs = BTreeMap::new();
    for s in layout {
        ensure!(
            s.shape.iter().all(|&d| d > 0),
            "input {} has an empty dimension: {:?}",
            s.name,
            s.shape
        );
        inputs.insert(s.name.clone(), g.input(&s.name, &s.shape, s.dtype));
    }
    let outputs = model
        .forward(&mut g, &inputs)
        .with_context(|| format!("building {}", model.architecture()))?;
    for (_, l, _) in &outputs.losses {
        g.keep(*l);
    }
    for (_, m) in &outputs.metrics {
        g.keep(*m);
    }
    for name in &o.keep {
        let id = outputs
            .tensors
            .get(name)
            .ok_or_else(|| anyhow!("the model has no output {name:?} to keep"))?;
        g.keep(*id);
    }
    if o.training {
        ensure!(
            !outputs.losses.is_empty(),
            "{} has no loss for these inputs (are the labels missing from the batch?)",
            model.architecture()
        );
        if !o.frozen.is_empty() {
            let frozen = o.frozen.clone();
            g.freeze(|n| frozen.iter().any(|f| f == n));
        }
        let losses: Vec<(TensorId, f32)> =
            outputs.losses.iter().map(|(_, l, w)| (*l, *w)).collect();
        g.backward(&losses, o.grad_scale)?;
    } else {
        g.forward_only()?;
    }
    Ok(Built {
        graph: g,
        inputs,
        outputs,
    })
}

/// Every parameter the model declares (name, shape, initialiser, group),
/// in declaration order, from a graph built at the smallest dimensions.
pub fn param_specs(model: &dyn Model) -> Result<Vec<(ParamInfo, Vec<usize>)>> {
    let layout = model.input_specs(Dims { batch: 1, seq: 1 });
    let (g, _) = declare(model, &layout)?;
    Ok(g.params
        .iter()
        .map(|p| (p.clone(), g.shape(p.id).to_vec()))
        .collect())
}

/// `model`'s forward computation on inputs `layout`, declared and not
/// lowered: its parameters, and its outputs' shapes.
pub fn declare(model: &dyn Model, layout: &[InputSpec]) -> Result<(Graph, Outputs)> {
    // Declaration only: the unfused attention has no kernel size limits.
    let mut g = Graph::new(GraphOptions {
        attention: AttentionImpl::Unfused,
        dropout: false,
    });
    let mut inputs = BTreeMap::new();
    for s in layout {
        inputs.insert(s.name.clone(), g.input(&s.name, &s.shape, s.dtype));
    }
    let out = model.forward(&mut g, &inputs)?;
    Ok((g, out))
}

/// (name, shape) of every parameter, in declaration order.
pub fn param_shapes(model: &dyn Model) -> Result<Vec<(String, Vec<usize>)>> {
    Ok(param_specs(model)?
        .into_iter()
        .map(|(p, s)| (p.name, s))
        .collect())
}

/// Initial values of every parameter, drawn in declaration order from one
/// generator seeded with `seed` (only normal initialisers draw).
pub fn init_params(model: &dyn Model, seed: u64) -> Result<HostParams> {
    let mut rng = Rng::new(seed);
    Ok(param_specs(model)?
        .into_iter()
        .map(|(p, shape)| {
            let n: usize = shape.iter().product();
            let data = match p.init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::Const(c) => vec![c; n],
                Init::Normal(std) => rng.vec_normal(n, std),
            };
            (p.name, data)
        })
        .collect())
}

/// Uploads host parameters (name, data) with the shapes in `shapes`.
pub fn upload_params(
    gpu: &Gpu,
    shapes: &[(String, Vec<usize>)],
    data: &[(String, Vec<f32>)],
) -> Result<TensorMap> {
    let mut out = TensorMap::new();
    for (name, shape) in shapes {
        let (_, d) = data
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| anyhow!("parameter {name} is missing"))?;
        let n: usize = shape.iter().product();
        ensure!(
            d.len() == n,
            "parameter {name}: {} values for shape {shape:?}",
            d.len()
        );
        out.insert(name.clone(), gpu.upload_f32(shape, d)?);
    }
    Ok(out)
}

/// Reads every tensor of a map back to the host, in name order.
pub async fn download(gpu: &Gpu, map: &TensorMap) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>> {
    let mut out = Vec::with_capacity(map.len());
    for (name, t) in map {
        out.push((name.clone(), t.shape().to_vec(), t.read_f32(gpu).await?));
    }
    Ok(out)
}
