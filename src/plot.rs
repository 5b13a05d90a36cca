//! Line charts as SVG files: axes with round ticks, lines, a legend and
//! dashed reference lines, in a few dozen lines of text. Any browser or
//! image viewer shows them; the browser demo draws its own live chart.
//!
//! ```ignore
//! use kiln::plot::{write_line_chart, ChartOptions, HLine, Series, PALETTE};
//! let loss: Vec<(f64, f64)> = (1..=100).map(|s| (s as f64, 4.0 / (s as f64).sqrt() + 1.5)).collect();
//! write_line_chart(
//!     "loss.svg".as_ref(),
//!     "Training loss",
//!     "step",
//!     "loss (nats/token)",
//!     &[Series { name: "train".into(), points: loss, color: PALETTE[0] }],
//!     &[HLine { value: 1.5, label: "entropy floor".into(), color: [120, 120, 120] }],
//!     &ChartOptions::default(),
//! )
//! .unwrap();
//! ```

use std::fmt::Write;
use std::path::Path;

use anyhow::Result;

use crate::io::write_atomic;

/// One line on the chart. Points with a NaN or infinite coordinate (or, on a
/// log axis, y ≤ 0) are skipped and break the line there.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: [u8; 3],
}

/// A dashed horizontal reference line across the chart, labelled (e.g. the
/// entropy floor of a corpus).
#[derive(Debug, Clone, PartialEq)]
pub struct HLine {
    pub value: f64,
    pub label: String,
    pub color: [u8; 3],
}

/// Size and axis options.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartOptions {
    pub width: u32,
    pub height: u32,
    /// Logarithmic y axis (values ≤ 0 are skipped).
    pub y_log: bool,
}

impl Default for ChartOptions {
    fn default() -> Self {
        ChartOptions {
            width: 800,
            height: 500,
            y_log: false,
        }
    }
}

/// Distinct colours for series (Tableau 10), in order.
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];

/// Draws a line chart and writes it to `path` as SVG (atomically).
pub fn write_line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    hlines: &[HLine],
    opts: &ChartOptions,
) -> Result<()> {
    let svg = line_chart_svg(title, x_label, y_label, series, hlines, opts);
    write_atomic(path, svg.as_bytes())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn rgb(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// Round tick values covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about `n` of them.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The chart as an SVG document (see [`write_line_chart`]).
pub fn line_chart_svg(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    hlines: &[HLine],
    opts: &ChartOptions,
) -> String {
    let (w, h) = (opts.width as f64, opts.height as f64);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 55.0);
    let ty = |y: f64| if opts.y_log { y.log10() } else { y };
    let ok = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!opts.y_log || y > 0.0);
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter().filter(|p| ok(p)));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(ty(y)), y1.max(ty(y)));
    }
    for l in hlines
        .iter()
        .filter(|l| l.value.is_finite() && (!opts.y_log || l.value > 0.0))
    {
        (y0, y1) = (y0.min(ty(l.value)), y1.max(ty(l.value)));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    (y0, y1) = (y0 - pad, y1 + pad);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| top + (y1 - ty(y)) / (y1 - y0) * (h - top - bottom);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    // Grid and tick labels.
    for x in nice_ticks(x0, x1, 8) {
        let _ = writeln!(
            s,
            r##"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="#e4e4e4"/><text x="{0:.1}" y="{3}" text-anchor="middle">{4}</text>"##,
            px(x),
            top,
            h - bottom,
            h - bottom + 16.0,
            label(x)
        );
    }
    let yticks: Vec<f64> = if opts.y_log {
        nice_ticks(y0, y1, 6)
            .into_iter()
            .filter(|e| e.fract() == 0.0)
            .map(|e| 10f64.powf(e))
            .collect()
    } else {
        nice_ticks(y0, y1, 6)
    };
    for y in yticks {
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="{1:.1}" x2="{2}" y2="{1:.1}" stroke="#e4e4e4"/><text x="{3}" y="{4:.1}" text-anchor="end">{5}</text>"##,
            left,
            py(y),
            w - right,
            left - 6.0,
            py(y) + 4.0,
            label(y)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        w - left - right,
        h - top - bottom
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + w - right) / 2.0,
        h - 12.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (top + h - bottom) / 2.0,
        esc(y_label)
    );
    for l in hlines
        .iter()
        .filter(|l| l.value.is_finite() && (!opts.y_log || l.value > 0.0))
    {
        let y = py(l.value);
        let _ = writeln!(
            s,
            r#"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{c}" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" text-anchor="end" fill="{c}">{}</text>"#,
            w - right,
            w - right - 4.0,
            y - 5.0,
            esc(&l.label),
            c = rgb(l.color)
        );
    }
    // Lines: a gap wherever a point is skipped.
    for se in series {
        let mut run: Vec<String> = Vec::new();
        let flush = |run: &mut Vec<String>, s: &mut String| {
            if run.len() > 1 {
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
                    rgb(se.color),
                    run.join(" ")
                );
            } else if let Some(p) = run.first() {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x}" cy="{y}" r="2" fill="{}"/>"#,
                    rgb(se.color)
                );
            }
            run.clear();
        };
        for p in &se.points {
            if ok(p) {
                run.push(format!("{:.1},{:.1}", px(p.0), py(p.1)));
            } else {
                flush(&mut run, &mut s);
            }
        }
        flush(&mut run, &mut s);
    }
    // Legend, top right.
    for (i, se) in series.iter().enumerate() {
        let y = top + 16.0 + 18.0 * i as f64;
        let x = w - right - 150.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x + 20.0,
            rgb(se.color),
            x + 26.0,
            y + 4.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(points: Vec<(f64, f64)>) -> Vec<Series> {
        vec![Series {
            name: "train <loss>".into(),
            points,
            color: PALETTE[0],
        }]
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        let t = nice_ticks(1.3, 1.9, 3);
        assert_eq!(t.len(), 3);
        for (a, b) in t.iter().zip([1.4, 1.6, 1.8]) {
            assert!((a - b).abs() < 1e-9, "{t:?}");
        }
        assert_eq!(nice_ticks(3.0, 3.0, 5), vec![3.0]);
        for t in nice_ticks(-0.37, 12.9, 7) {
            assert!((-0.37..=12.9).contains(&t));
        }
    }

    #[test]
    fn svg_has_every_part_and_escapes_text() {
        let s = line_chart_svg(
            "loss & more",
            "step",
            "nats",
            &line((1..=50).map(|i| (i as f64, 3.0 / i as f64)).collect()),
            &[HLine {
                value: 0.5,
                label: "floor".into(),
                color: [1, 2, 3],
            }],
            &ChartOptions::default(),
        );
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("loss &amp; more") && s.contains("train &lt;loss&gt;"));
        assert_eq!(s.matches("<polyline").count(), 1);
        assert!(s.contains("stroke-dasharray") && s.contains("#010203"));
    }

    #[test]
    fn non_finite_points_break_the_line_and_empty_charts_draw() {
        let pts = vec![
            (1.0, 1.0),
            (2.0, 2.0),
            (3.0, f64::NAN),
            (4.0, 1.0),
            (5.0, 0.5),
        ];
        let s = line_chart_svg("t", "x", "y", &line(pts), &[], &ChartOptions::default());
        assert_eq!(s.matches("<polyline").count(), 2);
        let empty = line_chart_svg("t", "x", "y", &line(vec![]), &[], &ChartOptions::default());
        assert!(empty.contains("</svg>") && !empty.contains("NaN"));
        let log = ChartOptions {
            y_log: true,
            ..Default::default()
        };
        let s = line_chart_svg(
            "t",
            "x",
            "y",
            &line(vec![(1.0, 10.0), (2.0, 0.0), (3.0, 1.0)]),
            &[],
            &log,
        );
        assert!(!s.contains("NaN") && !s.contains("inf"), "{s}");
    }

    #[test]
    fn writes_atomically() {
        let dir = std::env::temp_dir().join(format!("kiln-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("loss.svg");
        write_line_chart(
            &p,
            "t",
            "x",
            "y",
            &line(vec![(0.0, 1.0), (1.0, 2.0)]),
            &[],
            &ChartOptions::default(),
        )
        .unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("<polyline"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
