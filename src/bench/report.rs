//! Benchmark output: Markdown tables for people, one JSON document for
//! machines (adapter, timer, peak, date, every row).

use serde::Serialize;

use super::kernels::{fastest_per_shape, matmul_class_summary, ClassSummary, Failure, Family, Row};
use super::peak::Peak;
use super::timing::Timer;
use super::train::TrainReport;
use crate::runtime::Gpu;

/// The adapter a benchmark ran on.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    /// `Gpu::describe()`: the one-line form BENCHMARKS.md quotes.
    pub describe: String,
    pub timestamp_queries: bool,
}

impl AdapterInfo {
    pub fn of(gpu: &Gpu) -> Self {
        let i = gpu.info();
        Self {
            name: i.name.clone(),
            backend: format!("{:?}", i.backend),
            device_type: format!("{:?}", i.device_type),
            driver: i.driver.clone(),
            driver_info: i.driver_info.clone(),
            describe: gpu.describe(),
            timestamp_queries: gpu.has_timestamps(),
        }
    }
}

/// The JSON that `--json` writes.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Format version of this document.
    pub schema: u32,
    pub kiln_version: &'static str,
    /// UTC, ISO 8601.
    pub date: String,
    /// The command line.
    pub command: Vec<String>,
    pub adapter: AdapterInfo,
    /// "timestamp" (GPU timestamp queries) or "wall" (host clock around a
    /// waited submit).
    pub timer: &'static str,
    pub peak: Peak,
    pub kernels: Vec<Row>,
    pub matmul_classes: Vec<ClassSummary>,
    pub failures: Vec<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainReport>,
}

pub const SCHEMA: u32 = 1;

/// What the timer column means.
pub fn timer_words(t: Timer) -> &'static str {
    match t {
        Timer::Timestamp => "GPU time from timestamp queries",
        Timer::Wall => "wall time around a submit and a wait for the device (no GPU timestamps)",
    }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.filter(|v| v.is_finite())
        .map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

/// Three significant digits or so, without scientific notation.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    let d = if a >= 100.0 {
        1
    } else if a >= 10.0 {
        2
    } else if a >= 0.1 {
        3
    } else {
        4
    };
    format!("{x:.d$}")
}

/// The Markdown table of one family, with a header naming the shape format
/// and the timer, and for several variants the fastest per shape (and for
/// matmul per shape class). `cpu_column` adds the process CPU time per run:
/// on a CPU adapter that is the kernel's work, whatever else loads the machine.
pub fn family_table(family: Family, rows: &[Row], timer: Timer, cpu_column: bool) -> String {
    let mut s = format!(
        "### {} — shape {}; time: {} (median of the runs)\n\n",
        family.name(),
        family.shape_format(),
        match timer {
            Timer::Timestamp => "GPU timestamps around the kernels' compute pass",
            Timer::Wall => "wall time around a submit + wait (includes submission overhead)",
        }
    );
    let several = {
        let mut seen = std::collections::HashMap::new();
        rows.iter().any(|r| {
            let c = seen.entry((r.op.clone(), r.shape.clone())).or_insert(0);
            *c += 1;
            *c > 1
        })
    };
    s += "| kernel | shape | variant | ms | GFLOP/s | GB/s | % peak FLOP/s | % peak GB/s | runs |";
    s += if cpu_column {
        " CPU ms/run |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    } else {
        "\n|---|---|---|---:|---:|---:|---:|---:|---:|\n"
    };
    for r in rows {
        let variant = if several && r.default {
            format!("{} (default)", r.variant)
        } else {
            r.variant.clone()
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.op,
            r.shape,
            variant,
            num(r.median_ms),
            num(r.gflops),
            num(r.gbps),
            opt(r.pct_peak_flops, 1),
            opt(r.pct_peak_bw, 1),
            r.runs
        );
        if cpu_column {
            s.pop();
            // 10 ms clock ticks: finer digits would be noise.
            s += &format!(" {} |\n", opt(r.cpu_ms, 0));
        }
    }
    if several {
        s += "\nFastest measured per shape:\n\n| kernel | shape | fastest | ms | default | ms |\n|---|---|---|---:|---|---:|\n";
        for (op, shape, best, bms, def, dms) in fastest_per_shape(rows) {
            s += &format!(
                "| {op} | {shape} | {best} | {} | {def} | {} |\n",
                num(bms),
                num(dms)
            );
        }
    }
    if family == Family::Matmul {
        let classes = matmul_class_summary(rows);
        if !classes.is_empty() {
            s += "\nFastest per shape class (geometric mean over the class's shapes of time ÷ \
                  the best time at that shape; 1.00 = fastest everywhere):\n\n\
                  | class | shapes | fastest | ratio | default picks | ratio |\n\
                  |---|---:|---|---:|---|---:|\n";
            for c in classes {
                s += &format!(
                    "| {} | {} | {} | {:.2} | {} | {:.2} |\n",
                    c.class, c.shapes, c.fastest, c.fastest_ratio, c.default, c.default_ratio
                );
            }
        }
    }
    s
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// The training-step report as Markdown.
pub fn train_table(t: &TrainReport) -> String {
    let p = &t.preset;
    let mut s = format!(
        "### train {} — {} layers, C {}, {} heads, V {}, B {}, T {} ({:.2}M parameters, {} attention)\n\n\
         Time: {} around the whole step (median of {} steps after {} warm-up).\n\n",
        p.name,
        p.n_layer,
        p.n_embd,
        p.n_head,
        p.vocab,
        t.batch,
        t.seq,
        t.params as f64 / 1e6,
        t.attention,
        if t.timer == "timestamp" {
            "GPU timestamps"
        } else {
            "wall time (host clock, submit to idle, including host-side preparation)"
        },
        t.steps,
        t.warmup_steps
    );
    s += "| ms/step | min ms | tokens/s | GFLOP/s | % peak FLOP/s | dispatches/step | CPU encode ms/step | CPU encode µs/dispatch | train_step call ms |\n";
    s += "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    s += &format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n\n",
        num(t.ms_per_step),
        num(t.min_ms_per_step),
        num(t.tokens_per_s),
        num(t.gflops),
        opt(t.pct_peak_flops, 1),
        t.dispatches_per_step,
        num(t.cpu_encode_ms),
        num(t.cpu_encode_us_per_dispatch),
        num(t.cpu_step_call_ms)
    );
    let m = &t.memory;
    s += &format!(
        "Memory: pool peak {} (trainer holds {}); activations {} as planned vs {} naive \
         ({:.1}× less); parameters + gradients + inputs/outputs {}; AdamW state {}.\n\
         GFLOP per step (graph, forward + backward): {:.2}. Loss after one more step: {:.4} \
         (ln V = {:.4}).{}\n",
        mib(m.pool_peak_bytes),
        mib(m.trainer_bytes),
        mib(m.activations_planned_bytes),
        mib(m.activations_naive_bytes),
        m.activations_naive_bytes as f64 / m.activations_planned_bytes.max(1) as f64,
        mib(m.persistent_bytes),
        mib(m.optimizer_state_bytes),
        t.gflop_per_step,
        t.loss,
        (p.vocab as f64).ln(),
        t.cpu_ms_per_step.map_or(String::new(), |c| format!(
            " Process CPU time per step: {} ms.",
            num(c)
        ))
    );
    if let Some(prof) = &t.profile {
        let total: f64 = prof.iter().map(|r| r.ms).sum();
        s += "\nPer kernel (every graph step timed on its own; the optimizer not included):\n\n\
              | kernel | steps | ms | share | GFLOP/s |\n|---|---:|---:|---:|---:|\n";
        for r in prof {
            s += &format!(
                "| {} | {} | {} | {:.1}% | {} |\n",
                r.kernel,
                r.steps,
                num(r.ms),
                100.0 * r.ms / total,
                if r.gflops > 0.0 {
                    num(r.gflops)
                } else {
                    "-".into()
                }
            );
        }
        s += &format!(
            "| total | | {} | | |\n\nThe step takes {} ms; the difference is AdamW and the \
             gradient norm, plus whatever running the kernels back to back saves or costs.\n",
            num(total),
            num(t.ms_per_step)
        );
    }
    s
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn iso_utc(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let r = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        r / 3600,
        r % 3600 / 60,
        r % 60
    )
}

pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    iso_utc(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        // date -u -d 2026-11-28T23:15:06Z +%s
        assert_eq!(iso_utc(1_795_907_706), "2026-11-28T23:15:06Z");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn numbers() {
        assert_eq!(num(1234.56), "1234.6");
        assert_eq!(num(12.345), "12.35");
        assert_eq!(num(0.5), "0.500");
        assert_eq!(num(0.01234), "0.0123");
        assert_eq!(num(f64::NAN), "-");
        assert_eq!(opt(None, 1), "-");
        assert_eq!(opt(Some(12.34), 1), "12.3");
    }
}
