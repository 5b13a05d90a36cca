//! The table and chart of a transfer experiment from its run directories.
//!
//! Runs are named `<row>-<fraction>-<seed>` under one folder (as
//! `examples/gin_transfer.sh` writes them), each with the `results.json`
//! that `kiln train` leaves. For each row and label fraction this prints the
//! mean ± standard deviation (over seeds, n−1) of a metric as a Markdown
//! table and draws it against the fraction as an SVG chart.
//!
//!     cargo run --release --example transfer_table -- runs/gin-transfer test_mae "TPSA MAE (Å²)"
//!
//! A fourth argument `per-class` reads the middle part as labelled
//! examples per class instead of a fraction of the labels; `steps`, as
//! training steps.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use kiln::plot::{write_line_chart, ChartOptions, HLine, Series, PALETTE};

/// The metric's value in a results.json: a number, or the first of a list.
fn metric(v: &serde_json::Value, key: &str) -> Option<f64> {
    match v.get(key)? {
        serde_json::Value::Array(a) => a.first()?.as_f64(),
        x => x.as_f64(),
    }
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, key) = match args.as_slice() {
        [d, k, ..] => (Path::new(d), k.as_str()),
        _ => bail!("usage: transfer_table <runs folder> <metric key> [axis label]"),
    };
    let label = args.get(2).cloned().unwrap_or_else(|| key.to_string());
    let mode = args.get(3).map_or("fraction", String::as_str);
    let per_class = mode != "fraction";
    // Column heading and chart position of a run name's middle part.
    let column = |f: &str| {
        let x = f.parse::<f64>().unwrap_or(0.0);
        if mode == "steps" {
            format!("after {x} steps")
        } else if per_class {
            format!("{x} labels per class")
        } else {
            format!("{}% of labels", x * 100.0)
        }
    };
    let position = |f: &str| {
        let x = f.parse::<f64>().unwrap_or(1.0);
        if per_class {
            x.log10()
        } else {
            (x * 100.0).log10()
        }
    };
    // row -> fraction (as text, for exact grouping) -> values over seeds.
    let mut cells: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut baseline = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = e?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let parts: Vec<&str> = name.rsplitn(3, '-').collect();
        let [_seed, fraction, row] = parts.as_slice() else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(path.join("results.json")) else {
            eprintln!("skipping {name}: no results.json (unfinished run?)");
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let Some(x) = metric(&v, key) else {
            eprintln!("skipping {name}: no {key} in results.json");
            continue;
        };
        if let Some(b) = v
            .get("test")
            .and_then(|t| t.get("baseline_mae"))
            .and_then(|b| b.get(0))
            .and_then(|b| b.as_f64())
        {
            baseline.push(b);
        }
        cells
            .entry(row.to_string())
            .or_default()
            .entry(fraction.to_string())
            .or_default()
            .push(x);
    }
    if cells.is_empty() {
        bail!(
            "no finished runs named <row>-<fraction>-<seed> in {}",
            dir.display()
        );
    }
    let mut fractions: Vec<String> = cells.values().flat_map(|c| c.keys().cloned()).collect();
    fractions.sort_by(|a, b| {
        a.parse::<f64>()
            .unwrap_or(0.0)
            .total_cmp(&b.parse().unwrap_or(0.0))
    });
    fractions.dedup();
    let mut table = format!("| {label} | ");
    table += &fractions
        .iter()
        .map(|f| column(f))
        .collect::<Vec<_>>()
        .join(" | ");
    table += " |\n|---|";
    table += &"---|".repeat(fractions.len());
    table.push('\n');
    let mut series = Vec::new();
    for (i, (row, by_f)) in cells.iter().enumerate() {
        table += &format!("| {row} |");
        let mut points = Vec::new();
        for f in &fractions {
            match by_f.get(f) {
                Some(xs) => {
                    let (m, s) = mean_std(xs);
                    table += &format!(" {m:.2} ± {s:.2} (n={}) |", xs.len());
                    points.push((position(f), m));
                }
                None => table += " — |",
            }
        }
        table.push('\n');
        series.push(Series {
            name: row.clone(),
            points,
            color: PALETTE[i % PALETTE.len()],
        });
    }
    let mut hlines = Vec::new();
    if !baseline.is_empty() {
        let (m, _) = mean_std(&baseline);
        table += &format!("\nMean predictor (training mean): {m:.2}\n");
        hlines.push(HLine {
            value: m,
            label: "mean predictor".into(),
            color: PALETTE[7],
        });
    }
    print!("{table}");
    std::fs::write(dir.join("table.md"), &table)?;
    let chart = dir.join("transfer.svg");
    write_line_chart(
        &chart,
        &format!("{label}: mean over seeds"),
        if mode == "steps" {
            "log10(training steps)"
        } else if per_class {
            "log10(labelled examples per class)"
        } else {
            "log10(% of training labels)"
        },
        &label,
        &series,
        &hlines,
        &ChartOptions::default(),
    )?;
    eprintln!(
        "wrote {} and {}",
        dir.join("table.md").display(),
        chart.display()
    );
    Ok(())
}
