//! `kiln bench`: the command-line front end of the kernel sweep and the
//! training-step benchmark (also used by `cargo bench --bench kernels` and
//! `--bench train_step`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::kernels::{run_family, Failure, Family, SweepOptions};
use super::peak::{resolve, Peak};
use super::report::{
    family_table, now_utc, timer_words, train_table, AdapterInfo, BenchReport, SCHEMA,
};
use super::timing::Timer;
use super::train::{bench_train, preset, TrainBenchOptions, TrainReport};
use crate::graph::AttentionImpl;
use crate::runtime::Gpu;

#[derive(clap::Args, Clone, Debug, Default)]
#[command(after_help = "\
Examples:
  kiln bench                                   every kernel family, sizes for this adapter
  kiln bench matmul --variant all              every matmul variant; fastest per shape class
  kiln bench matmul --sizes 1024,8192x768x3072 --json out.json
  kiln bench attention --sizes 8x12x1024x64
  kiln bench train --preset gpt2-124m --profile
  kiln bench train --preset tiny --batch 4 --seq 32 --steps 10

Shapes (--sizes, numbers joined by x): matmul M×N×K or S; attention B×H×T×D (causal);
layernorm, softmax, reduce rows×cols; crossentropy rows×V; embedding B×T×V×C; gelu, adamw N.
KILN_ADAPTER / KILN_BACKEND pick the adapter (see `kiln devices`).")]
pub struct BenchArgs {
    /// What to run: matmul, attention, layernorm, softmax, gelu, crossentropy,
    /// embedding, adamw, reduce, all (every kernel family: the default) or
    /// train (the GPT training step). Several may be given.
    #[arg(value_name = "FAMILY")]
    pub families: Vec<String>,
    /// Write machine-readable results (adapter, timer, peak, date, every row) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Peak FP32 GFLOP/s for the "% peak" columns [default: built-in table of
    /// vendor figures, by adapter name; unknown for CPU adapters].
    #[arg(long, value_name = "X")]
    pub peak_gflops: Option<f64>,
    /// Peak memory bandwidth in GB/s for the "% peak" columns [default: as --peak-gflops].
    #[arg(long, value_name = "Y")]
    pub peak_gbps: Option<f64>,
    /// Shapes for a single kernel family, comma-separated (see below)
    /// [default: small shapes on a CPU adapter, GPT-2-sized ones on a GPU].
    #[arg(long, value_name = "LIST")]
    pub sizes: Option<String>,
    /// Timed runs per case; fewer when runs are slow (--budget-s)
    /// [default: 3 on a CPU adapter, 20 on a GPU].
    #[arg(long, value_name = "N")]
    pub iters: Option<usize>,
    /// Untimed runs before timing [default: 1 on a CPU adapter, 3 on a GPU].
    #[arg(long, value_name = "N")]
    pub warmup: Option<usize>,
    /// Seconds of timed runs per case at most (one run is always made)
    /// [default: 3 on a CPU adapter, 1 on a GPU].
    #[arg(long, value_name = "S")]
    pub budget_s: Option<f64>,
    /// Implementations to time: default (what the library picks), all, or
    /// comma-separated name substrings (matmul: `kiln bench matmul --variant
    /// all` lists them; attention: unfused).
    #[arg(long, value_name = "NAME")]
    pub variant: Option<String>,
    /// Time with the host clock (submit + wait) even where GPU timestamps exist.
    #[arg(long)]
    pub wall: bool,
    /// Skip reading outputs back to check them for NaN and infinity.
    #[arg(long)]
    pub no_check: bool,
    /// train: model preset, tiny (2 layers, C 64, V 256, T 64, B 8), small
    /// (4 layers, C 128, V 256, T 128, B 8) — the presets of `kiln train` and
    /// the browser page — or gpt2-124m (12 layers, C 768, V 50257, T 1024, B 8).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// train: batch size [default: the preset's].
    #[arg(long)]
    pub batch: Option<usize>,
    /// train: sequence length [default: the preset's].
    #[arg(long)]
    pub seq: Option<usize>,
    /// train: timed steps [default: 5 on a CPU adapter (1 for gpt2-124m), 20 on a GPU].
    #[arg(long)]
    pub steps: Option<usize>,
    /// train: untimed steps first [default: 1 on a CPU adapter (0 for gpt2-124m), 3 on a GPU].
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// train: also time every kernel of the step on its own and print where the time goes.
    #[arg(long)]
    pub profile: bool,
    /// train: attention kernels, fused, unfused or auto (as `kiln train`:
    /// unfused on CPU adapters, where it measured faster; fused on GPUs).
    #[arg(long, default_value = "auto")]
    pub attention: String,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// What `families` asks for: kernel families (in order, deduplicated) and
/// whether to run the training step.
pub fn parse_families(names: &[String]) -> Result<(Vec<Family>, bool)> {
    let mut fams = Vec::new();
    let mut train = false;
    if names.is_empty() {
        return Ok((Family::ALL.to_vec(), false));
    }
    for n in names {
        match n.trim().to_ascii_lowercase().as_str() {
            "train" => train = true,
            "all" => fams.extend(Family::ALL),
            other => fams.push(Family::parse(other)?),
        }
    }
    let mut seen = std::collections::HashSet::new();
    fams.retain(|f| seen.insert(*f));
    Ok((fams, train))
}

/// Runs `kiln bench` on the adapter from `KILN_ADAPTER` / `KILN_BACKEND`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let gpu = pollster::block_on(Gpu::from_env())?;
    let report = run_on(&gpu, args, &mut |s| println!("{s}"))?;
    if let Some(path) = &args.json {
        write_json(path, &report)?;
        if !args.quiet {
            eprintln!("kiln bench: wrote {}", path.display());
        }
    }
    if let Some(f) = report.failures.first() {
        bail!(
            "{} benchmark case(s) failed (listed above); the first: {} at {}: {}",
            report.failures.len(),
            f.what,
            f.shape,
            f.error
        );
    }
    Ok(())
}

/// Writes the report, creating the parent directory.
pub fn write_json(path: &std::path::Path, report: &BenchReport) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating directory {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// The benchmark on `gpu`: tables go to `out` as they complete, progress to
/// stderr (unless quiet); failed cases are recorded in the report, not
/// returned as errors. Errors are for bad arguments.
pub fn run_on(gpu: &Gpu, args: &BenchArgs, out: &mut dyn FnMut(&str)) -> Result<BenchReport> {
    let (families, train) = parse_families(&args.families)?;
    let mut opts = SweepOptions::for_gpu(gpu);
    if let Some(s) = &args.sizes {
        if families.len() != 1 {
            bail!(
                "--sizes needs exactly one kernel family (shape formats differ), got {}",
                if families.is_empty() {
                    "none".to_string()
                } else {
                    families
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        }
        opts.sizes = Some(families[0].parse_sizes(s)?);
    }
    if let Some(n) = args.iters {
        if n == 0 {
            bail!("--iters must be at least 1");
        }
        opts.measure.iters = n;
    }
    if let Some(n) = args.warmup {
        opts.measure.warmup = n;
    }
    if let Some(s) = args.budget_s {
        if s.is_nan() || s < 0.0 {
            bail!("--budget-s must be a number of seconds ≥ 0");
        }
        opts.measure.budget_s = s;
    }
    if args.wall {
        opts.measure.timer = Timer::Wall;
    }
    opts.variant = args.variant.clone();
    opts.check_finite = !args.no_check;
    for (flag, v) in [
        ("--peak-gflops", args.peak_gflops),
        ("--peak-gbps", args.peak_gbps),
    ] {
        if v.is_some_and(|x| !(x > 0.0 && x.is_finite())) {
            bail!("{flag} must be a positive number");
        }
    }
    if train {
        preset(&args.preset)?;
    }
    let peak: Peak = resolve(
        &gpu.info().name,
        gpu.is_cpu(),
        args.peak_gflops,
        args.peak_gbps,
    );
    let timer = opts.measure.timer;
    let quiet = args.quiet;
    let log = |s: &str| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    out(&format!("adapter: {}", gpu.describe()));
    out(&format!("timer: {}", timer_words(timer)));
    out(&format!(
        "peak: {} GFLOP/s FP32, {} GB/s ({})",
        peak.gflops.map_or("-".into(), |g| format!("{g:.0}")),
        peak.gbps.map_or("-".into(), |g| format!("{g:.0}")),
        peak.source
    ));
    out("");

    let mut report = BenchReport {
        schema: SCHEMA,
        kiln_version: env!("CARGO_PKG_VERSION"),
        date: now_utc(),
        command: std::env::args().collect(),
        adapter: AdapterInfo::of(gpu),
        timer: timer.name(),
        peak: peak.clone(),
        kernels: Vec::new(),
        matmul_classes: Vec::new(),
        failures: Vec::new(),
        train: None,
    };
    for fam in families {
        log(&format!("kiln bench: {} …", fam.name()));
        let res = run_family(gpu, fam, &opts, &peak, &mut |r| {
            log(&format!(
                "  {} {} {}: {:.3} ms ({} runs)",
                r.op, r.shape, r.variant, r.median_ms, r.runs
            ))
        })?;
        for f in &res.failures {
            log(&format!(
                "  FAILED {} {} {}: {}",
                f.family, f.shape, f.what, f.error
            ));
        }
        out(&family_table(fam, &res.rows, timer, gpu.is_cpu()));
        for f in &res.failures {
            out(&format!("- failed: {} at {}: {}", f.what, f.shape, f.error));
        }
        if !res.failures.is_empty() {
            out("");
        }
        if fam == Family::Matmul {
            report.matmul_classes = super::kernels::matmul_class_summary(&res.rows);
        }
        report.kernels.extend(res.rows);
        report.failures.extend(res.failures);
    }
    if train {
        match train_bench(gpu, args, timer, &peak, &log) {
            Ok(t) => {
                out(&train_table(&t));
                report.train = Some(t);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                log(&format!("  FAILED train {}: {msg}", args.preset));
                out(&format!("- failed: train --preset {}: {msg}", args.preset));
                report.failures.push(Failure {
                    family: "train",
                    shape: args.preset.clone(),
                    what: "train step".into(),
                    error: msg,
                });
            }
        }
    }
    Ok(report)
}

fn train_bench(
    gpu: &Gpu,
    args: &BenchArgs,
    timer: Timer,
    peak: &Peak,
    log: &dyn Fn(&str),
) -> Result<TrainReport> {
    let p = preset(&args.preset)?;
    let cpu = gpu.is_cpu();
    let big = p.name == "gpt2-124m";
    if cpu && big {
        log(&format!(
            "kiln bench: warning: gpt2-124m on a CPU adapter ({}) takes many minutes per step \
             at B 8, T 1024 and may exceed the adapter's buffer limits; running {} step(s). \
             Use --steps 1 --warmup-steps 0, or a smaller --batch/--seq.",
            gpu.info().name,
            args.steps.unwrap_or(1)
        ));
    }
    let o = TrainBenchOptions {
        preset: args.preset.clone(),
        batch: args.batch,
        seq: args.seq,
        steps: args
            .steps
            .unwrap_or(match (cpu, big) {
                (true, true) => 1,
                (true, false) => 5,
                (false, _) => 20,
            })
            .max(1),
        warmup: args.warmup_steps.unwrap_or(match (cpu, big) {
            (true, true) => 0,
            (true, false) => 1,
            (false, _) => 3,
        }),
        timer,
        profile: args.profile,
        seed: 1,
        attention: AttentionImpl::choose(&args.attention, gpu).context("--attention")?,
    };
    log(&format!("kiln bench: train --preset {} …", p.name));
    bench_train(gpu, &o, peak, &mut |s| log(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_families(&[]).unwrap(), (Family::ALL.to_vec(), false));
        assert_eq!(parse_families(&s(&["train"])).unwrap(), (Vec::new(), true));
        assert_eq!(
            parse_families(&s(&["softmax", "matmul", "softmax", "train"])).unwrap(),
            (vec![Family::Softmax, Family::Matmul], true)
        );
        assert_eq!(parse_families(&s(&["all"])).unwrap().0.len(), 9);
        let e = parse_families(&s(&["matmull"])).unwrap_err().to_string();
        assert!(e.contains("matmull") && e.contains("attention"), "{e}");
    }
}
