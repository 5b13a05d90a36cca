//! Matmul variants head to head, in the spirit of llm.c's dev/cuda:
//!
//! ```text
//! cargo bench --bench matmul -- [--sizes 256,512,1024,8x768x3072] [--variants naive,vec4]
//!                               [--iters 10] [--warmup 1] [--budget-s 20] [--wall]
//! ```
//!
//! C = A·B (A [M, K], B [K, N]) for each size and variant on the default adapter
//! (`KILN_ADAPTER` / `KILN_BACKEND` choose another). `--variants` keeps the
//! variants whose name contains any of the given substrings, plus "default"
//! for the one `matmul()` picks. Each measurement is warmed up (lavapipe
//! compiles on first use), then repeated up to `--iters` times or until
//! `--budget-s` seconds are spent, and the median is reported. A size is `S`
//! (square, M = N = K = S) or `MxNxK`; sizes also come from `KILN_BENCH_SIZES`.
//! Every run is spot-checked against f64 dot products.
//!
//! `kiln bench matmul --variant all` (or `cargo bench --bench kernels --
//! matmul --variant all`) runs the same comparison through the shared sweep,
//! with % of peak, JSON output and a fastest-per-shape-class summary.

use anyhow::{bail, ensure, Context, Result};

use kiln::bench::timing::{MeasureOptions, Timer, Timing};
use kiln::kernels::matmul::{self as mm, MatmulSpec, MatmulVariant};
use kiln::util::Rng;
use kiln::Gpu;

struct Args {
    sizes: Vec<(usize, usize, usize)>,
    variants: Vec<String>,
    iters: usize,
    warmup: usize,
    budget_s: f64,
    wall: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        sizes: vec![(256, 256, 256), (512, 512, 512), (1024, 1024, 1024)],
        variants: Vec::new(),
        iters: 10,
        warmup: 1,
        budget_s: 20.0,
        wall: false,
    };
    if let Ok(s) = std::env::var("KILN_BENCH_SIZES") {
        args.sizes = parse_list(&s)?;
    }
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--sizes" => args.sizes = parse_list(&value("--sizes")?)?,
            "--variants" => {
                args.variants = value("--variants")?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect()
            }
            "--iters" => args.iters = value("--iters")?.parse()?,
            "--warmup" => args.warmup = value("--warmup")?.parse()?,
            "--budget-s" => args.budget_s = value("--budget-s")?.parse()?,
            "--wall" => args.wall = true,
            "--bench" => {} // passed by `cargo bench`
            "-h" | "--help" => {
                println!(
                    "cargo bench --bench matmul -- [--sizes 256,512,MxNxK] [--variants a,b] \
                     [--iters N] [--warmup N] [--budget-s S] [--wall]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    ensure!(args.iters >= 1, "--iters must be at least 1");
    Ok(args)
}

/// Parses `256,512,8x768x3072`: square sizes or M x N x K.
fn parse_list(s: &str) -> Result<Vec<(usize, usize, usize)>> {
    s.split(',')
        .map(|x| {
            let dims: Vec<usize> = x
                .trim()
                .split('x')
                .map(|d| d.parse::<usize>())
                .collect::<Result<_, _>>()
                .with_context(|| format!("bad size {x:?} in {s:?}"))?;
            match dims[..] {
                [s] => Ok((s, s, s)),
                [m, n, k] => Ok((m, n, k)),
                _ => bail!("bad size {x:?}: expected S or MxNxK"),
            }
        })
        .collect()
}

/// Measures one dispatch within the time budget (shared with `kiln bench`).
/// Returns the timing and, on Linux, the process CPU milliseconds per run.
fn measure(gpu: &Gpu, d: &kiln::runtime::Dispatch, args: &Args) -> Result<(Timing, Option<f64>)> {
    let timer = if args.wall || !gpu.has_timestamps() {
        Timer::Wall
    } else {
        Timer::Timestamp
    };
    let m = kiln::bench::timing::measure(
        gpu,
        &[d],
        &MeasureOptions {
            warmup: args.warmup,
            iters: args.iters,
            budget_s: args.budget_s,
            timer,
        },
    )?;
    Ok((m.timing, m.cpu_ms))
}

/// Compares a few elements of C with f64 dot products.
fn spot_check(spec: &MatmulSpec, a: &[f32], b: &[f32], c: &[f32], rng: &mut Rng) -> Result<()> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    for _ in 0..16 {
        let (i, j) = (rng.below(m as u64) as usize, rng.below(n as u64) as usize);
        let want: f64 = (0..k)
            .map(|kk| a[i * k + kk] as f64 * b[kk * n + j] as f64)
            .sum();
        let err = (c[i * n + j] as f64 - want).abs();
        ensure!(
            err <= 1e-5 * (k as f64).sqrt(),
            "C[{i}, {j}] = {} but the f64 dot product is {want}",
            c[i * n + j]
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let gpu = pollster::block_on(Gpu::from_env())?;
    let mut rng = Rng::new(7);
    let mut rows = Vec::new();
    let mut timers = std::collections::BTreeSet::new();
    eprintln!("adapter: {}", gpu.describe());
    for &(m, n, k) in &args.sizes {
        let spec = MatmulSpec::new(m, n, k);
        let shape = if m == n && n == k {
            format!("{m}³")
        } else {
            format!("{m}×{n}×{k}")
        };
        let mut list: Vec<(String, MatmulVariant)> = vec![(
            format!("default = {}", mm::default_variant(&gpu, &spec).name()),
            mm::default_variant(&gpu, &spec),
        )];
        list.extend(mm::variants());
        if !args.variants.is_empty() {
            list.retain(|(name, _)| args.variants.iter().any(|v| name.contains(v.as_str())));
        }
        let a = rng.vec_uniform(m * k, -1.0, 1.0);
        let b = rng.vec_uniform(k * n, -1.0, 1.0);
        let ta = gpu.upload_f32(&[m, k], &a)?;
        let tb = gpu.upload_f32(&[k, n], &b)?;
        let tc = gpu.zeros(&[m, n], kiln::DType::F32)?;
        for (name, variant) in list {
            let d = mm::matmul_with(&gpu, &spec, variant, &ta, &tb, None, &tc)?;
            let (t, cpu_ms) = measure(&gpu, &d, &args)?;
            let secs = t.median_ms / 1e3;
            let bytes = 4.0 * (m * k + k * n + m * n) as f64;
            let cpu = cpu_ms.map_or("-".to_string(), |c| format!("{c:.0}"));
            let row = format!(
                "| {shape} | {name} | {:.2} | {:.3} | {:.3} | {} | {cpu} |",
                t.median_ms,
                spec.flops() / secs / 1e9,
                bytes / secs / 1e9,
                t.samples_ms.len()
            );
            eprintln!("{row}");
            let c = pollster::block_on(tc.read_f32(&gpu))?;
            spot_check(&spec, &a, &b, &c, &mut rng)
                .with_context(|| format!("{name} at {shape}"))?;
            rows.push(row);
            timers.insert(t.timer.name());
        }
    }
    println!("adapter: {}", gpu.describe());
    println!(
        "timer: {} (median of the runs shown)",
        timers.into_iter().collect::<Vec<_>>().join(", ")
    );
    println!();
    println!("| shape | variant | ms | GFLOP/s | GB/s | runs | CPU ms/run |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
