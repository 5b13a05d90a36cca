//! The kernel sweep behind `kiln bench` and `cargo bench --bench kernels`:
//! for each kernel family, a list of shapes; for each shape, the kernels of
//! the family (forward, backward, …) and, where a family has several
//! implementations, the variants asked for. Every case is timed on its own
//! ([`measure`]) and reported with GFLOP/s, GB/s and the share of the
//! adapter's peak.
//!
//! GB/s counts the bytes that *must* move: every input read once and every
//! output written once (compulsory traffic, not what a kernel actually moves;
//! unfused attention, for example, also writes and reads the T×T scores,
//! which the count leaves out, so it compares fairly with a fused kernel).
//! FLOPs are nominal counts per element (see each family), the same for
//! every variant of a family.

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use super::peak::Peak;
use super::timing::{measure, MeasureOptions, Timer};
use crate::kernels::attention as att;
use crate::kernels::gelu::GeluKind;
use crate::kernels::matmul::{self as mm, MatmulSpec, MatmulVariant};
use crate::kernels::{adamw, crossentropy, embedding, gelu, layernorm, reduce, softmax};
use crate::ops::AttentionShape;
use crate::runtime::{DType, Dispatch, Gpu, Tensor};
use crate::util::Rng;

/// A kernel family of the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Matmul,
    Attention,
    Layernorm,
    Softmax,
    Gelu,
    Crossentropy,
    Embedding,
    Adamw,
    Reduce,
}

impl Family {
    pub const ALL: [Family; 9] = [
        Family::Matmul,
        Family::Attention,
        Family::Layernorm,
        Family::Softmax,
        Family::Gelu,
        Family::Crossentropy,
        Family::Embedding,
        Family::Adamw,
        Family::Reduce,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Matmul => "matmul",
            Family::Attention => "attention",
            Family::Layernorm => "layernorm",
            Family::Softmax => "softmax",
            Family::Gelu => "gelu",
            Family::Crossentropy => "crossentropy",
            Family::Embedding => "embedding",
            Family::Adamw => "adamw",
            Family::Reduce => "reduce",
        }
    }

    pub fn parse(s: &str) -> Result<Family> {
        let s = s.trim().to_ascii_lowercase();
        Family::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .with_context(|| {
                format!(
                    "unknown benchmark family {s:?}; expected one of {}, train or all",
                    Family::ALL.map(|f| f.name()).join(", ")
                )
            })
    }

    /// What the numbers of a shape mean, e.g. `M×N×K`.
    pub fn shape_format(self) -> &'static str {
        match self {
            Family::Matmul => "M×N×K (or S for S×S×S)",
            Family::Attention => "B×H×T×D (causal)",
            Family::Layernorm => "rows×C",
            Family::Softmax => "rows×N",
            Family::Gelu => "N",
            Family::Crossentropy => "rows×V",
            Family::Embedding => "B×T×V×C",
            Family::Adamw => "N (parameters)",
            Family::Reduce => "rows×cols",
        }
    }

    /// Dimensions a shape of this family has.
    fn rank(self) -> usize {
        match self {
            Family::Matmul => 3,
            Family::Attention | Family::Embedding => 4,
            Family::Gelu | Family::Adamw => 1,
            _ => 2,
        }
    }

    /// The built-in sweep: small shapes on a CPU adapter (lavapipe runs at a
    /// few GFLOP/s), GPT-2-sized ones on a GPU.
    pub fn default_sizes(self, cpu: bool) -> Vec<Vec<usize>> {
        let v = |s: &[&[usize]]| s.iter().map(|x| x.to_vec()).collect();
        match (self, cpu) {
            (Family::Matmul, true) => v(&[&[128; 3], &[256; 3], &[512; 3], &[64, 768, 768]]),
            (Family::Matmul, false) => v(&[
                &[512; 3],
                &[1024; 3],
                &[2048; 3],
                &[4096; 3],
                // GPT-2 124M at B·T = 8192: qkv, attention proj, MLP up, MLP down, LM head.
                &[8192, 2304, 768],
                &[8192, 768, 768],
                &[8192, 3072, 768],
                &[8192, 768, 3072],
                &[8192, 50257, 768],
            ]),
            (Family::Attention, true) => v(&[&[1, 4, 64, 32], &[2, 4, 128, 64]]),
            (Family::Attention, false) => {
                v(&[&[8, 12, 1024, 64], &[4, 16, 1024, 64], &[1, 12, 2048, 64]])
            }
            (Family::Layernorm, true) => v(&[&[512, 256], &[2048, 768]]),
            (Family::Layernorm, false) => v(&[&[8192, 768], &[32768, 768], &[8192, 4096]]),
            (Family::Softmax, true) => v(&[&[1024, 128], &[512, 1024]]),
            // B·H·T rows of T scores for GPT-2 124M at B = 8, T = 1024.
            (Family::Softmax, false) => v(&[&[8192, 1024], &[98304, 1024]]),
            (Family::Gelu, true) => v(&[&[65536], &[1 << 20]]),
            (Family::Gelu, false) => v(&[&[1 << 20], &[8192 * 3072]]),
            (Family::Crossentropy, true) => v(&[&[512, 256], &[256, 4096]]),
            (Family::Crossentropy, false) => v(&[&[1024, 50257], &[8192, 50257]]),
            (Family::Embedding, true) => v(&[&[8, 64, 256, 64], &[8, 256, 4096, 256]]),
            (Family::Embedding, false) => v(&[&[8, 1024, 50257, 768]]),
            (Family::Adamw, true) => v(&[&[65536], &[1 << 20]]),
            // One MLP matrix of GPT-2 124M, and all 124M parameters at once.
            (Family::Adamw, false) => v(&[&[768 * 3072], &[124_439_808]]),
            (Family::Reduce, true) => v(&[&[1024, 256], &[4096, 768]]),
            (Family::Reduce, false) => v(&[&[8192, 768], &[8192, 3072]]),
        }
    }

    /// Parses `--sizes`: comma-separated shapes, numbers joined by `x`
    /// (or `×`); for matmul a single number S means S×S×S.
    pub fn parse_sizes(self, s: &str) -> Result<Vec<Vec<usize>>> {
        s.split(',')
            .filter(|x| !x.trim().is_empty())
            .map(|x| {
                let dims: Vec<usize> = x
                    .trim()
                    .replace('×', "x")
                    .split('x')
                    .map(|d| d.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("bad size {x:?} in --sizes {s:?}"))?;
                let dims = match (self, dims.as_slice()) {
                    (Family::Matmul, [s]) => vec![*s; 3],
                    _ => dims,
                };
                ensure!(
                    dims.len() == self.rank(),
                    "--sizes for {}: {x:?} has {} numbers, expected {}",
                    self.name(),
                    dims.len(),
                    self.shape_format()
                );
                ensure!(
                    dims.iter().all(|d| *d > 0),
                    "--sizes: every dimension must be at least 1 (got {x:?})"
                );
                Ok(dims)
            })
            .collect()
    }
}

/// `512³` for a cube, else the numbers joined by `×`.
pub fn shape_name(dims: &[usize]) -> String {
    if dims.len() == 3 && dims.iter().all(|d| *d == dims[0]) {
        format!("{}³", dims[0])
    } else {
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×")
    }
}

/// How to run a sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Shapes for every family run (`None`: [`Family::default_sizes`]).
    pub sizes: Option<Vec<Vec<usize>>>,
    /// `None` or "default": the variant the library picks; "all": every
    /// variant; otherwise comma-separated name substrings.
    pub variant: Option<String>,
    pub measure: MeasureOptions,
    /// Read back part of each output and fail on non-finite values.
    pub check_finite: bool,
}

impl SweepOptions {
    /// Sensible defaults for the adapter: few runs on a CPU adapter, more on
    /// a GPU; timestamps when the adapter has them.
    pub fn for_gpu(gpu: &Gpu) -> Self {
        let cpu = gpu.is_cpu();
        Self {
            sizes: None,
            variant: None,
            measure: MeasureOptions {
                warmup: if cpu { 1 } else { 3 },
                iters: if cpu { 3 } else { 20 },
                budget_s: if cpu { 3.0 } else { 1.0 },
                timer: if gpu.has_timestamps() {
                    Timer::Timestamp
                } else {
                    Timer::Wall
                },
            },
            check_finite: true,
        }
    }
}

/// One measured kernel at one shape.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub family: &'static str,
    /// The kernel (e.g. `layernorm_backward`).
    pub op: String,
    pub shape: String,
    pub dims: Vec<usize>,
    pub variant: String,
    /// Whether this is what the library uses for this shape on this device.
    pub default: bool,
    /// Matmul only: the shape class of the fastest-per-class summary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<&'static str>,
    pub dispatches: usize,
    pub timer: &'static str,
    pub median_ms: f64,
    pub min_ms: f64,
    pub runs: usize,
    pub flops: f64,
    pub bytes: f64,
    pub gflops: f64,
    pub gbps: f64,
    pub pct_peak_flops: Option<f64>,
    pub pct_peak_bw: Option<f64>,
    /// Process CPU ms per run (Linux); on a CPU adapter, the work itself.
    pub cpu_ms: Option<f64>,
}

/// A case that could not be built or run (e.g. beyond the device limits).
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub family: &'static str,
    pub shape: String,
    pub what: String,
    pub error: String,
}

/// Everything one family produced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FamilyResult {
    pub rows: Vec<Row>,
    pub failures: Vec<Failure>,
}

/// One kernel (or sequence of kernels) to time.
pub struct Case {
    pub op: String,
    pub variant: String,
    pub default: bool,
    pub flops: f64,
    pub bytes: f64,
    pub dispatches: Vec<Dispatch>,
    /// Sampled for non-finite values after timing.
    pub output: Option<Tensor>,
}

/// Matmul shape classes for the fastest-variant summary; the thresholds are
/// those of [`mm::default_variant`] on GPUs.
pub fn matmul_class(m: usize, n: usize) -> &'static str {
    if m >= 128 && n >= 128 {
        "large (M, N ≥ 128)"
    } else if m >= 64 && n >= 64 {
        "medium (M, N ≥ 64)"
    } else {
        "skinny (M or N < 64)"
    }
}

/// Runs `family` over its shapes. `on_row` sees each row as it is measured
/// (progress output); a case that fails to build or run is recorded in
/// `failures` and the sweep goes on.
pub fn run_family(
    gpu: &Gpu,
    family: Family,
    opts: &SweepOptions,
    peak: &Peak,
    on_row: &mut dyn FnMut(&Row),
) -> Result<FamilyResult> {
    check_variant_name(family, opts.variant.as_deref())?;
    let sizes = opts
        .sizes
        .clone()
        .unwrap_or_else(|| family.default_sizes(gpu.is_cpu()));
    let mut out = FamilyResult::default();
    let mut rng = Rng::new(0x5eed ^ family as u64);
    for dims in sizes {
        let shape = shape_name(&dims);
        let fail = |what: &str, e: anyhow::Error| Failure {
            family: family.name(),
            shape: shape.clone(),
            what: what.to_string(),
            error: format!("{e:#}"),
        };
        let cases = match cases(gpu, family, &dims, opts.variant.as_deref(), &mut rng) {
            Ok(c) => c,
            Err(e) => {
                out.failures.push(fail("setup", e));
                continue;
            }
        };
        for case in cases {
            let what = format!("{} {}", case.op, case.variant);
            match run_case(gpu, family, &dims, &shape, case, opts, peak) {
                Ok(row) => {
                    on_row(&row);
                    out.rows.push(row);
                }
                Err(e) => out.failures.push(fail(&what, e)),
            }
        }
    }
    Ok(out)
}

fn run_case(
    gpu: &Gpu,
    family: Family,
    dims: &[usize],
    shape: &str,
    case: Case,
    opts: &SweepOptions,
    peak: &Peak,
) -> Result<Row> {
    let refs: Vec<&Dispatch> = case.dispatches.iter().collect();
    let m = measure(gpu, &refs, &opts.measure)?;
    if opts.check_finite {
        if let Some(out) = &case.output {
            check_finite(gpu, out)
                .with_context(|| format!("{} ({}) at {shape}", case.op, case.variant))?;
        }
    }
    let t = &m.timing;
    let secs = t.median_ms / 1e3;
    let (gflops, gbps) = (case.flops / secs / 1e9, case.bytes / secs / 1e9);
    let (pct_peak_flops, pct_peak_bw) = peak.percent(gflops, gbps);
    Ok(Row {
        family: family.name(),
        op: case.op,
        shape: shape.to_string(),
        dims: dims.to_vec(),
        variant: case.variant,
        default: case.default,
        class: (family == Family::Matmul).then(|| matmul_class(dims[0], dims[1])),
        dispatches: refs.iter().filter(|d| !d.workgroups.contains(&0)).count(),
        timer: t.timer.name(),
        median_ms: t.median_ms,
        min_ms: t.min_ms,
        runs: t.samples_ms.len(),
        flops: case.flops,
        bytes: case.bytes,
        gflops,
        gbps,
        pct_peak_flops,
        pct_peak_bw,
        cpu_ms: m.cpu_ms,
    })
}

/// Reads up to 64 Ki elements from each end of `t` and fails on NaN or ±∞.
fn check_finite(gpu: &Gpu, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Ok(());
    }
    const PART: usize = 1 << 16;
    let n = t.numel();
    let mut parts = vec![(0, n.min(PART))];
    if n > 2 * PART {
        // Views start on 256-byte (64-element) boundaries.
        let start = (n - PART) / 64 * 64;
        parts.push((start, n - start));
    }
    for (start, len) in parts {
        let flat = t.reshape(&[n])?;
        let v = pollster::block_on(flat.view(start, &[len])?.read_f32(gpu))?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            bail!(
                "output element {} of {:?} is {} (not finite)",
                start + i,
                t.shape(),
                v[i]
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Variants.

/// An implementation of attention for the benchmark: builds the dispatches
/// computing `io.y` from `io.q`, `io.k`, `io.v`.
pub struct AttentionVariant {
    pub name: &'static str,
    /// What the model graph uses today.
    pub default: bool,
    pub build: fn(&Gpu, &AttentionIo) -> Result<Vec<Dispatch>>,
}

/// Inputs and output of one attention forward: q, k, v and y head-major
/// `[B, H, T, D]` f32 (the layout the graph's attention works in).
pub struct AttentionIo {
    pub shape: AttentionShape,
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub y: Tensor,
}

/// Every attention implementation to compare. A fused kernel is one more
/// entry here (and one function like [`unfused_attention`] that calls it);
/// mark it `default` once the graph uses it.
pub fn attention_variants() -> Vec<AttentionVariant> {
    vec![
        AttentionVariant {
            name: "fused",
            default: true,
            build: fused_attention,
        },
        AttentionVariant {
            name: "unfused",
            default: false,
            build: unfused_attention,
        },
    ]
}

/// The graph's default: one FlashAttention-style kernel (online softmax over
/// key tiles); the per-row log-sum-exp is the only extra output.
pub fn fused_attention(gpu: &Gpu, io: &AttentionIo) -> Result<Vec<Dispatch>> {
    let a = io.shape;
    let spec = crate::kernels::attention::AttentionSpec::new(
        a.batch, a.heads, a.seq, a.head_dim, a.causal,
    );
    let lse = gpu.empty(&[a.batch * a.heads, a.seq], DType::F32)?;
    let mut ds = crate::kernels::attention::attention_forward(
        gpu, &spec, &io.q, &io.k, &io.v, None, &io.y, &lse,
    )?;
    let last = ds.pop().expect("at least one dispatch").keep(lse);
    ds.push(last);
    Ok(ds)
}

/// The graph's unfused attention forward: scores = q·kᵀ (batched matmul),
/// p = softmax(scores / √D) with the causal mask, y = p·v. The T×T scores and
/// probabilities live as long as the dispatches.
pub fn unfused_attention(gpu: &Gpu, io: &AttentionIo) -> Result<Vec<Dispatch>> {
    let a = io.shape;
    let (s_spec, y_spec) = a.unfused_specs();
    let tt = [a.batch * a.heads, a.seq, a.seq];
    let scores = gpu.empty(&tt, DType::F32)?;
    let probs = gpu.empty(&tt, DType::F32)?;
    let qk = mm::matmul(gpu, &s_spec, &io.q, &io.k, None, &scores)?;
    let sm = softmax::softmax_forward_scaled(
        gpu,
        &scores,
        &probs,
        1.0 / (a.head_dim as f32).sqrt(),
        a.causal.then_some(a.seq),
    )?;
    let pv = mm::matmul(gpu, &y_spec, &probs, &io.v, None, &io.y)?;
    Ok(vec![qk.keep(scores), sm, pv.keep(probs)])
}

/// Whether `wanted` (a `--variant` value) selects the variant `name`.
fn selects(wanted: Option<&str>, name: &str, default: bool) -> bool {
    match wanted.map(str::trim) {
        None | Some("") | Some("default") => default,
        Some("all") => true,
        Some(w) => w
            .split(',')
            .map(str::trim)
            .any(|p| !p.is_empty() && name.contains(p)),
    }
}

/// Fails early on a `--variant` that selects nothing in this family.
fn check_variant_name(family: Family, wanted: Option<&str>) -> Result<()> {
    let w = match wanted.map(str::trim) {
        None | Some("") | Some("default") | Some("all") => return Ok(()),
        Some(w) => w,
    };
    let names: Vec<String> = match family {
        Family::Matmul => mm::variants().into_iter().map(|(n, _)| n).collect(),
        Family::Attention => attention_variants()
            .iter()
            .map(|v| v.name.to_string())
            .collect(),
        _ => Vec::new(),
    };
    // Matmul defaults may be outside the list (e.g. `direct reg 4x16 vec4`).
    let matmul_default = family == Family::Matmul && w.contains("direct reg");
    if names.iter().any(|n| selects(Some(w), n, false)) || matmul_default {
        return Ok(());
    }
    if names.is_empty() {
        bail!(
            "--variant {w:?}: {} has one implementation only (use default or all)",
            family.name()
        );
    }
    bail!(
        "--variant {w:?} matches no {} variant; available: all, default, {}",
        family.name(),
        names.join(", ")
    )
}

/// The matmul variants to time for `spec`: the default alone, every variant
/// (plus the default when it is not in [`mm::variants`]), or those whose
/// names contain one of the comma-separated substrings.
fn matmul_variants(
    gpu: &Gpu,
    spec: &MatmulSpec,
    wanted: Option<&str>,
) -> Vec<(String, MatmulVariant, bool)> {
    let def = mm::default_variant(gpu, spec);
    let mut list: Vec<(String, MatmulVariant, bool)> = mm::variants()
        .into_iter()
        .map(|(n, v)| (n, v, v == def))
        .collect();
    if !list.iter().any(|(_, _, d)| *d) {
        list.push((def.name(), def, true));
    }
    list.retain(|(n, _, d)| selects(wanted, n, *d));
    list
}

// ---------------------------------------------------------------------------
// Cases.

/// Uniform values in [lo, hi): at most 1 Mi fresh values, repeated beyond
/// that (large GPU shapes would otherwise spend seconds in the generator).
fn random(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    const FRESH: usize = 1 << 20;
    let block = rng.vec_uniform(n.min(FRESH), lo, hi);
    if n <= FRESH {
        return block;
    }
    block.iter().copied().cycle().take(n).collect()
}

fn upload(gpu: &Gpu, rng: &mut Rng, shape: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    gpu.upload_f32(shape, &random(rng, n, lo, hi))
}

fn token_ids(rng: &mut Rng, n: usize, v: usize) -> Vec<i32> {
    (0..n).map(|_| rng.below(v as u64) as i32).collect()
}

/// Builds the cases of one family at one shape.
pub fn cases(
    gpu: &Gpu,
    family: Family,
    dims: &[usize],
    variant: Option<&str>,
    rng: &mut Rng,
) -> Result<Vec<Case>> {
    ensure!(
        dims.len() == family.rank(),
        "{}: shape {dims:?} should be {}",
        family.name(),
        family.shape_format()
    );
    let f = |x: usize| x as f64;
    let case = |op: &str, flops: f64, bytes: f64, ds: Vec<Dispatch>, out: &Tensor| Case {
        op: op.to_string(),
        variant: "default".to_string(),
        default: true,
        flops,
        bytes,
        dispatches: ds,
        output: Some(out.clone()),
    };
    let mut cases = Vec::new();
    match family {
        Family::Matmul => {
            let (m, n, k) = (dims[0], dims[1], dims[2]);
            let spec = MatmulSpec::new(m, n, k);
            let a = upload(gpu, rng, &[m, k], -1.0, 1.0)?;
            let b = upload(gpu, rng, &[k, n], -1.0, 1.0)?;
            let c = gpu.empty(&[m, n], DType::F32)?;
            for (name, v, default) in matmul_variants(gpu, &spec, variant) {
                let d = mm::matmul_with(gpu, &spec, v, &a, &b, None, &c)?;
                cases.push(Case {
                    op: "matmul".into(),
                    variant: name,
                    default,
                    flops: spec.flops(),
                    bytes: 4.0 * f(m * k + k * n + m * n),
                    dispatches: vec![d],
                    output: Some(c.clone()),
                });
            }
        }
        Family::Attention => {
            let (b, h, t, d) = (dims[0], dims[1], dims[2], dims[3]);
            let shape = AttentionShape {
                batch: b,
                heads: h,
                seq: t,
                head_dim: d,
                causal: true,
            };
            let bhtd = [b, h, t, d];
            let io = AttentionIo {
                shape,
                q: upload(gpu, rng, &bhtd, -1.0, 1.0)?,
                k: upload(gpu, rng, &bhtd, -1.0, 1.0)?,
                v: upload(gpu, rng, &bhtd, -1.0, 1.0)?,
                y: gpu.empty(&bhtd, DType::F32)?,
            };
            // FlashAttention's convention: 4·B·H·T²·D, halved when causal.
            let flops = 4.0 * f(b * h) * f(t) * f(t) * f(d) / 2.0;
            for v in attention_variants() {
                if !selects(variant, v.name, v.default) {
                    continue;
                }
                cases.push(Case {
                    op: "attention_forward".into(),
                    variant: v.name.into(),
                    default: v.default,
                    flops,
                    bytes: 4.0 * 4.0 * f(b * h * t * d),
                    dispatches: (v.build)(gpu, &io)
                        .with_context(|| format!("building attention variant {}", v.name))?,
                    output: Some(io.y.clone()),
                });
            }
            // The fused backward (dQ, dK, dV from the saved log-sum-exp),
            // timed alone: it reads what one forward run wrote.
            if selects(variant, "fused", true) {
                let spec = att::AttentionSpec::new(b, h, t, d, true);
                let o = gpu.empty(&bhtd, DType::F32)?;
                let lse = gpu.empty(&[b * h, t], DType::F32)?;
                let fwd = att::attention_forward(gpu, &spec, &io.q, &io.k, &io.v, None, &o, &lse)?;
                gpu.submit(&fwd.iter().collect::<Vec<_>>());
                let d_o = upload(gpu, rng, &bhtd, -1.0, 1.0)?;
                let (dq, dk, dv) = (
                    gpu.empty(&bhtd, DType::F32)?,
                    gpu.empty(&bhtd, DType::F32)?,
                    gpu.empty(&bhtd, DType::F32)?,
                );
                let mut bwd = att::attention_backward(
                    gpu, &spec, &io.q, &io.k, &io.v, &o, &lse, &d_o, None, &dq, &dk, &dv,
                )?;
                // Keep the inputs and the other outputs out of the pool while
                // the dispatches exist.
                let last = bwd.pop().expect("at least one dispatch");
                bwd.push(last.keep(o).keep(lse).keep(d_o).keep(dk).keep(dv));
                cases.push(Case {
                    op: "attention_backward".into(),
                    variant: "fused".into(),
                    default: true,
                    flops: spec.backward_flops() as f64,
                    // reads q, k, v, o, dO (and lse); writes dq, dk, dv
                    bytes: 4.0 * (8.0 * f(b * h * t * d) + f(b * h * t)),
                    dispatches: bwd,
                    output: Some(dq),
                });
            }
        }
        Family::Layernorm => {
            let (r, c) = (dims[0], dims[1]);
            let x = upload(gpu, rng, &[r, c], -2.0, 2.0)?;
            let gamma = upload(gpu, rng, &[c], 0.5, 1.5)?;
            let beta = upload(gpu, rng, &[c], -0.5, 0.5)?;
            let y = gpu.empty(&[r, c], DType::F32)?;
            let mean = gpu.empty(&[r], DType::F32)?;
            let rstd = gpu.empty(&[r], DType::F32)?;
            let fwd = layernorm::layernorm_forward(gpu, &x, &gamma, &beta, &y, &mean, &rstd, 1e-5)?;
            // Nominal: 8 FLOPs per element (mean, variance, normalise, affine).
            let n = f(r * c);
            cases.push(case(
                "layernorm_forward",
                8.0 * n,
                4.0 * (2.0 * n + 2.0 * f(c) + 2.0 * f(r)),
                vec![fwd],
                &y,
            ));
            // The backward reads what the forward saved: run it once first.
            let dy = upload(gpu, rng, &[r, c], -1.0, 1.0)?;
            let dx = gpu.empty(&[r, c], DType::F32)?;
            let dgamma = gpu.zeros(&[c], DType::F32)?;
            let dbeta = gpu.zeros(&[c], DType::F32)?;
            let bwd = layernorm::layernorm_backward(
                gpu, &dy, &x, &gamma, &mean, &rstd, &dx, &dgamma, &dbeta, false,
            )?;
            gpu.submit(&[&cases[0].dispatches[0]]);
            cases.push(case(
                "layernorm_backward",
                8.0 * n,
                4.0 * (3.0 * n + 3.0 * f(c) + 2.0 * f(r)),
                bwd,
                &dx,
            ));
        }
        Family::Softmax => {
            let (r, n) = (dims[0], dims[1]);
            let x = upload(gpu, rng, &[r, n], -4.0, 4.0)?;
            let y = gpu.empty(&[r, n], DType::F32)?;
            let e = f(r * n);
            let fwd = softmax::softmax_forward(gpu, &x, &y, None)?;
            gpu.submit(&[&fwd]);
            cases.push(case("softmax_forward", 5.0 * e, 8.0 * e, vec![fwd], &y));
            let dy = upload(gpu, rng, &[r, n], -1.0, 1.0)?;
            let dx = gpu.empty(&[r, n], DType::F32)?;
            let bwd = softmax::softmax_backward(gpu, &y, &dy, &dx)?;
            cases.push(case("softmax_backward", 5.0 * e, 12.0 * e, vec![bwd], &dx));
        }
        Family::Gelu => {
            let n = dims[0];
            let x = upload(gpu, rng, &[n], -4.0, 4.0)?;
            let y = gpu.empty(&[n], DType::F32)?;
            let fwd = gelu::gelu_forward(gpu, &x, &y, GeluKind::Tanh)?;
            cases.push(case("gelu_forward", 10.0 * f(n), 8.0 * f(n), vec![fwd], &y));
            let dy = upload(gpu, rng, &[n], -1.0, 1.0)?;
            let dx = gpu.empty(&[n], DType::F32)?;
            let bwd = gelu::gelu_backward(gpu, &x, &dy, &dx, GeluKind::Tanh)?;
            cases.push(case(
                "gelu_backward",
                10.0 * f(n),
                12.0 * f(n),
                vec![bwd],
                &dx,
            ));
        }
        Family::Crossentropy => {
            let (r, v) = (dims[0], dims[1]);
            let logits = upload(gpu, rng, &[r, v], -4.0, 4.0)?;
            let targets = gpu.upload_i32(&[r], &token_ids(rng, r, v))?;
            let losses = gpu.empty(&[r], DType::F32)?;
            let loss = gpu.empty(&[1], DType::F32)?;
            let dlogits = gpu.empty(&[r, v], DType::F32)?;
            let e = f(r * v);
            // Reads logits and targets, writes per-row losses and the mean.
            let base = 4.0 * (e + 2.0 * f(r) + 1.0);
            let fwd =
                crossentropy::cross_entropy(gpu, &logits, &targets, &losses, &loss, None, -1, 1.0)?;
            cases.push(case("cross_entropy", 3.0 * e, base, fwd, &losses));
            let both = crossentropy::cross_entropy(
                gpu,
                &logits,
                &targets,
                &losses,
                &loss,
                Some(&dlogits),
                -1,
                1.0,
            )?;
            cases.push(case(
                "cross_entropy+grad",
                5.0 * e,
                base + 4.0 * e,
                both,
                &dlogits,
            ));
        }
        Family::Embedding => {
            let (b, t, v, c) = (dims[0], dims[1], dims[2], dims[3]);
            let ids = token_ids(rng, b * t, v);
            let distinct = ids.iter().collect::<std::collections::HashSet<_>>().len();
            let tokens = gpu.upload_i32(&[b, t], &ids)?;
            let wte = upload(gpu, rng, &[v, c], -0.1, 0.1)?;
            let wpe = upload(gpu, rng, &[t, c], -0.1, 0.1)?;
            let out = gpu.empty(&[b, t, c], DType::F32)?;
            let fwd = embedding::embedding_forward(gpu, &tokens, &wte, &wpe, &out)?;
            let (btc, tc) = (f(b * t * c), f(t * c));
            // Reads the token ids, the B·T gathered rows of wte and wpe; writes out.
            cases.push(case(
                "embedding_forward",
                btc,
                4.0 * (f(b * t) + 2.0 * btc + tc),
                vec![fwd],
                &out,
            ));
            let dout = upload(gpu, rng, &[b, t, c], -1.0, 1.0)?;
            let dwte = gpu.zeros(&[v, c], DType::F32)?;
            let dwpe = gpu.zeros(&[t, c], DType::F32)?;
            let bwd = embedding::embedding_backward(gpu, &tokens, &dout, &dwte, &dwpe)?;
            // Reads ids and dout; read-modify-writes the rows of dwte that
            // occur (distinct ids) and all of dwpe.
            cases.push(case(
                "embedding_backward",
                2.0 * btc,
                4.0 * (f(b * t) + btc + 2.0 * f(distinct * c) + 2.0 * tc),
                bwd,
                &dwpe,
            ));
        }
        Family::Adamw => {
            let n = dims[0];
            let p = upload(gpu, rng, &[n], -0.1, 0.1)?;
            let g = upload(gpu, rng, &[n], -0.01, 0.01)?;
            let m = upload(gpu, rng, &[n], -0.01, 0.01)?;
            let v = upload(gpu, rng, &[n], 0.0, 1e-4)?;
            let sumsq = gpu.upload_f32(&[1], &[1e-3])?;
            let cfg = adamw::AdamWConfig::default();
            let d = adamw::adamw_step(gpu, &p, &g, &m, &v, Some((&sumsq, 1.0)), &cfg, 1)?;
            // Reads p, g, m, v; writes p, m, v. ~15 FLOPs per parameter.
            cases.push(case("adamw", 15.0 * f(n), 28.0 * f(n), vec![d], &p));
        }
        Family::Reduce => {
            let (r, c) = (dims[0], dims[1]);
            let x = upload(gpu, rng, &[r, c], -1.0, 1.0)?;
            let e = f(r * c);
            let cols = gpu.empty(&[c], DType::F32)?;
            let d = reduce::col_sum(gpu, &x, r, c, &cols, false)?;
            cases.push(case("col_sum", e, 4.0 * (e + f(c)), d, &cols));
            let s = gpu.empty(&[1], DType::F32)?;
            let d = reduce::sum_squares(gpu, &[&x], &s)?;
            cases.push(case("sum_squares", 2.0 * e, 4.0 * (e + 1.0), d, &s));
        }
    }
    Ok(cases)
}

/// The fastest variant of each (op, shape) with several variants measured,
/// and the default's time there: `(op, shape, fastest, fastest ms, default,
/// default ms)`.
pub fn fastest_per_shape(rows: &[Row]) -> Vec<(String, String, String, f64, String, f64)> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in rows {
        let k = (r.op.clone(), r.shape.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut out = Vec::new();
    for (op, shape) in keys {
        let same: Vec<&Row> = rows
            .iter()
            .filter(|r| r.op == op && r.shape == shape)
            .collect();
        if same.len() < 2 {
            continue;
        }
        let best = same
            .iter()
            .min_by(|a, b| a.median_ms.total_cmp(&b.median_ms))
            .expect("two rows");
        let (dn, dms) = same
            .iter()
            .find(|r| r.default)
            .map_or(("-".to_string(), f64::NAN), |r| {
                (r.variant.clone(), r.median_ms)
            });
        out.push((op, shape, best.variant.clone(), best.median_ms, dn, dms));
    }
    out
}

/// Per matmul shape class: the variant with the lowest geometric mean of
/// (its time / the best time at that shape) over the class's shapes, that
/// mean, the variants the default rule picked, and their mean.
#[derive(Clone, Debug, Serialize)]
pub struct ClassSummary {
    pub class: &'static str,
    pub shapes: usize,
    pub fastest: String,
    pub fastest_ratio: f64,
    pub default: String,
    pub default_ratio: f64,
}

pub fn matmul_class_summary(rows: &[Row]) -> Vec<ClassSummary> {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.family == "matmul").collect();
    let mut classes: Vec<&'static str> = Vec::new();
    for r in &rows {
        if let Some(c) = r.class {
            if !classes.contains(&c) {
                classes.push(c);
            }
        }
    }
    let mut out = Vec::new();
    for class in classes {
        let in_class: Vec<&&Row> = rows.iter().filter(|r| r.class == Some(class)).collect();
        let mut shapes: Vec<&str> = Vec::new();
        for r in &in_class {
            if !shapes.contains(&r.shape.as_str()) {
                shapes.push(&r.shape);
            }
        }
        let best = |shape: &str| {
            in_class
                .iter()
                .filter(|r| r.shape == shape)
                .map(|r| r.median_ms)
                .fold(f64::INFINITY, f64::min)
        };
        // Only shapes where several variants ran say anything.
        let shapes: Vec<&str> = shapes
            .into_iter()
            .filter(|s| in_class.iter().filter(|r| r.shape == *s).count() > 1)
            .collect();
        if shapes.is_empty() {
            continue;
        }
        let geo = |pick: &dyn Fn(&Row) -> bool| -> Option<f64> {
            let mut logs = Vec::new();
            for s in &shapes {
                let r = in_class.iter().find(|r| r.shape == *s && pick(r))?;
                logs.push((r.median_ms / best(s)).ln());
            }
            Some((logs.iter().sum::<f64>() / logs.len() as f64).exp())
        };
        let mut names: Vec<&str> = Vec::new();
        for r in &in_class {
            if !names.contains(&r.variant.as_str()) {
                names.push(&r.variant);
            }
        }
        let (fastest, fastest_ratio) = names
            .iter()
            .filter_map(|n| geo(&|r: &Row| r.variant == *n).map(|g| (n.to_string(), g)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or(("-".into(), f64::NAN));
        let mut defaults: Vec<&str> = Vec::new();
        for r in in_class.iter().filter(|r| r.default) {
            if !defaults.contains(&r.variant.as_str()) {
                defaults.push(&r.variant);
            }
        }
        out.push(ClassSummary {
            class,
            shapes: shapes.len(),
            fastest,
            fastest_ratio,
            default: defaults.join(", "),
            default_ratio: geo(&|r: &Row| r.default).unwrap_or(f64::NAN),
        });
    }
    out
}
