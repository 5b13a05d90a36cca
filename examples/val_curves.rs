//! Validation-loss curves of an experiment's runs, averaged over seeds: runs
//! named `<row>-<anything>-<seed>` under one folder (as the transfer
//! scripts write them), each with its `metrics.jsonl`; one line per row.
//! An optional run directory draws its final validation loss as a dashed
//! reference (a teacher's, say; `-` for none); an optional fifth argument
//! names another metric of metrics.jsonl (`val_accuracy`).
//!
//!     cargo run --release --example val_curves -- runs/distill/runs runs/distill/curves.svg \
//!         "student validation loss" runs/distill/teacher

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use kiln::plot::{write_line_chart, ChartOptions, HLine, Series, PALETTE};

fn val_points(run: &Path, key: &str) -> Result<Vec<(u64, f64)>> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl"))
        .with_context(|| format!("{}: no metrics.jsonl", run.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_u64()?, v.get(key)?.as_f64()?)))
        .collect())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, out, title, rest @ ..] = args.as_slice() else {
        bail!("usage: val_curves <runs folder> <out.svg> <title> [reference run|-] [metric]");
    };
    let key = rest.get(1).map_or("val_loss", String::as_str);
    // row -> step -> values over seeds
    let mut rows: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {dir}"))? {
        let path = e?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let parts: Vec<&str> = name.rsplitn(3, '-').collect();
        let [_, _, row] = parts.as_slice() else {
            continue;
        };
        let Ok(points) = val_points(&path, key) else {
            continue;
        };
        for (step, v) in points {
            rows.entry(row.to_string())
                .or_default()
                .entry(step)
                .or_default()
                .push(v);
        }
    }
    if rows.is_empty() {
        bail!("no runs with validation losses in {dir}");
    }
    let series: Vec<Series> = rows
        .iter()
        .enumerate()
        .map(|(i, (row, by_step))| Series {
            name: row.clone(),
            points: by_step
                .iter()
                .map(|(s, vs)| (*s as f64, vs.iter().sum::<f64>() / vs.len() as f64))
                .collect(),
            color: PALETTE[i % PALETTE.len()],
        })
        .collect();
    let mut hlines = Vec::new();
    if let Some(r) = rest.first().filter(|r| *r != "-") {
        if let Some(&(_, v)) = val_points(Path::new(r), key)?.last() {
            hlines.push(HLine {
                value: v,
                label: format!(
                    "{} ({v:.3})",
                    Path::new(r)
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                ),
                color: PALETTE[7],
            });
        }
    }
    write_line_chart(
        Path::new(out),
        &format!("{title}: mean over seeds"),
        "step",
        title,
        &series,
        &hlines,
        &ChartOptions::default(),
    )?;
    eprintln!("wrote {out}");
    Ok(())
}
