//! Line charts as PNG files, drawn by hand: no plotting crate, no system
//! fonts. Text uses a small built-in 5×7 bitmap font (with descenders),
//! drawn at ×2; lines are anti-aliased.
//!
//! ```ignore
//! use kiln::plot::{line_chart_png, ChartOptions, HLine, Series, PALETTE};
//! let loss: Vec<(f64, f64)> = (1..=100).map(|s| (s as f64, 4.0 / (s as f64).sqrt() + 1.5)).collect();
//! line_chart_png(
//!     "loss.png".as_ref(),
//!     "Training loss",
//!     "step",
//!     "loss (nats/token)",
//!     &[Series { name: "train".into(), points: loss, color: PALETTE[0] }],
//!     &[HLine { value: 1.5, label: "entropy floor".into(), color: [120, 120, 120] }],
//!     &ChartOptions::default(),
//! )
//! .unwrap();
//! ```

use std::path::Path;

use anyhow::{Context, Result};

use crate::io::write_atomic;

/// One line on the chart. Points with a NaN or infinite coordinate (or, on a
/// log axis, y ≤ 0) are skipped and break the line there.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: [u8; 3],
}

/// A dashed horizontal reference line across the whole chart, labelled on
/// the chart (e.g. the entropy floor of a corpus).
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

/// An 8-bit RGB picture, rows top to bottom.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

/// Draws a line chart and writes it to `path` as a PNG (atomically).
pub fn line_chart_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    hlines: &[HLine],
    opts: &ChartOptions,
) -> Result<()> {
    let img = render_line_chart(title, x_label, y_label, series, hlines, opts);
    let png = encode_png(&img).with_context(|| format!("encoding chart {}", path.display()))?;
    write_atomic(path, &png)
}

/// Encodes an image as an 8-bit RGB PNG.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, img.width, img.height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header()?;
    w.write_image_data(&img.pixels)?;
    w.finish()?;
    Ok(out)
}

const WHITE: [u8; 3] = [255, 255, 255];
const TEXT: [u8; 3] = [34, 34, 34];
const AXIS: [u8; 3] = [68, 68, 68];
const GRID: [u8; 3] = [228, 228, 228];
const MINOR_GRID: [u8; 3] = [243, 243, 243];
const SCALE: i32 = 2;
const LINE_WIDTH: f64 = 2.0;

/// Draws a line chart into an RGB buffer (see [`line_chart_png`]).
pub fn render_line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    hlines: &[HLine],
    opts: &ChartOptions,
) -> RgbImage {
    let mut img = RgbImage::new(opts.width.max(120), opts.height.max(100), WHITE);
    let lay = Layout::new(&img, title, x_label, y_label, series, hlines, opts);
    let (left, top, right, bottom) = (lay.left, lay.top, lay.right, lay.bottom);

    // Grid, then ticks and their labels.
    for &(v, major) in &lay.y_ticks {
        let y = lay.py(v).round() as i32;
        img.hline(left, right, y, if major { GRID } else { MINOR_GRID });
    }
    for &(v, _) in &lay.x_ticks {
        let x = lay.px(v).round() as i32;
        img.vline(x, top, bottom, GRID);
    }
    for &(v, major) in &lay.y_ticks {
        if !major {
            continue;
        }
        let y = lay.py(v).round() as i32;
        img.hline(left - 5, left - 1, y, AXIS);
        let label = lay.y_label_of(v);
        let w = text_width(&label, SCALE);
        draw_text(
            &mut img,
            left - 9 - w,
            y - 7 * SCALE / 2,
            &label,
            SCALE,
            TEXT,
        );
    }
    for &(v, _) in &lay.x_ticks {
        let x = lay.px(v).round() as i32;
        img.vline(x, bottom + 1, bottom + 5, AXIS);
        let label = format_tick(v, lay.x_step, lay.x_lo, lay.x_hi);
        let w = text_width(&label, SCALE);
        draw_text(&mut img, x - w / 2, bottom + 10, &label, SCALE, TEXT);
    }

    // Reference lines, dashed, labelled at the left end.
    for h in hlines {
        if !lay.y_ok(h.value) {
            continue;
        }
        let y = lay.py(h.value);
        if y < top as f64 || y > bottom as f64 {
            continue;
        }
        let mut cov = Coverage::new(&img);
        let mut x = left as f64;
        while x < right as f64 {
            let x1 = (x + 8.0).min(right as f64);
            cov.segment((x, y), (x1, y), 1.6, &lay);
            x += 14.0;
        }
        cov.composite(&mut img, h.color);
        if !h.label.is_empty() {
            let ty = if y - (top as f64) > 24.0 {
                y.round() as i32 - 6 - 7 * SCALE
            } else {
                y.round() as i32 + 6
            };
            draw_text_halo(&mut img, left + 8, ty, &h.label, SCALE, h.color);
        }
    }

    // The series, each in one pass so overlapping segments do not darken.
    for s in series {
        let mut cov = Coverage::new(&img);
        let pts: Vec<Option<(f64, f64)>> = s.points.iter().map(|&(x, y)| lay.to_px(x, y)).collect();
        for (i, p) in pts.iter().enumerate() {
            let Some(p) = *p else { continue };
            let prev = i.checked_sub(1).and_then(|j| pts[j]);
            let next = pts.get(i + 1).copied().flatten();
            match (prev, next) {
                (_, Some(q)) => cov.segment(p, q, LINE_WIDTH, &lay),
                // An isolated point (alone, or between gaps): a dot.
                (None, None) => cov.segment(p, p, 6.0, &lay),
                (Some(_), None) => {}
            }
        }
        cov.composite(&mut img, s.color);
    }

    // Frame on top of the data's edges.
    img.hline(left, right, top, AXIS);
    img.hline(left, right, bottom, AXIS);
    img.vline(left, top, bottom, AXIS);
    img.vline(right, top, bottom, AXIS);

    if lay.empty {
        let msg = "no data";
        let w = text_width(msg, SCALE);
        draw_text(
            &mut img,
            (left + right - w) / 2,
            (top + bottom) / 2 - 7,
            msg,
            SCALE,
            AXIS,
        );
    }

    draw_legend(&mut img, &lay, series);

    // Title (bold: drawn twice, one pixel apart) and axis labels.
    let iw = img.width as i32;
    let title = fit_text(title, SCALE, iw - 20);
    let tw = text_width(&title, SCALE) + 1;
    draw_text(&mut img, (iw - tw) / 2, 12, &title, SCALE, TEXT);
    draw_text(&mut img, (iw - tw) / 2 + 1, 12, &title, SCALE, TEXT);
    let x_label = fit_text(x_label, SCALE, right - left);
    let xw = text_width(&x_label, SCALE);
    let ih = img.height as i32;
    draw_text(
        &mut img,
        (left + right - xw) / 2,
        ih - 12 - 9 * SCALE,
        &x_label,
        SCALE,
        TEXT,
    );
    let y_label = fit_text(y_label, SCALE, bottom - top);
    let yw = text_width(&y_label, SCALE);
    draw_text_up(&mut img, 12, (top + bottom + yw) / 2, &y_label, SCALE, TEXT);
    img
}

/// Where everything goes: plot rectangle, axis ranges, ticks.
struct Layout {
    left: i32,
    top: i32,
    right: i32,
    bottom: i32,
    x_lo: f64,
    x_hi: f64,
    x_step: f64,
    /// In axis space: log10(y) on a log axis.
    y_lo: f64,
    y_hi: f64,
    y_step: f64,
    y_log: bool,
    x_ticks: Vec<(f64, bool)>,
    /// Values in data space; `false` marks minor (grid-only) ticks.
    y_ticks: Vec<(f64, bool)>,
    empty: bool,
}

impl Layout {
    fn new(
        img: &RgbImage,
        title: &str,
        x_label: &str,
        y_label: &str,
        series: &[Series],
        hlines: &[HLine],
        opts: &ChartOptions,
    ) -> Layout {
        let y_log = opts.y_log;
        let y_ok = |y: f64| y.is_finite() && (!y_log || y > 0.0);
        let ax = |y: f64| if y_log { y.log10() } else { y };
        let (mut xs, mut ys) = (Range::default(), Range::default());
        for s in series {
            for &(x, y) in &s.points {
                if x.is_finite() && y_ok(y) {
                    xs.add(x);
                    ys.add(ax(y));
                }
            }
        }
        let empty = xs.lo > xs.hi;
        for h in hlines {
            if y_ok(h.value) {
                ys.add(ax(h.value));
            }
        }
        let (x_lo, x_hi) = xs.padded(0.0);
        let (y_lo, y_hi) = ys.padded(0.05);

        let (w, h) = (img.width as i32, img.height as i32);
        let top = 12 + if title.is_empty() { 0 } else { 9 * SCALE + 10 };
        let x_label_room = if x_label.is_empty() {
            0
        } else {
            9 * SCALE + 10
        };
        let bottom = h - (12 + x_label_room + 7 * SCALE + 12);
        let mut lay = Layout {
            left: 0,
            top,
            right: w - 24,
            bottom,
            x_lo,
            x_hi,
            x_step: 1.0,
            y_lo,
            y_hi,
            y_step: 1.0,
            y_log,
            x_ticks: vec![],
            y_ticks: vec![],
            empty,
        };
        // y ticks first: their labels' width sets the left margin.
        let target_y = ((bottom - top) / 60).clamp(2, 8) as usize;
        if y_log {
            lay.y_ticks = log_ticks(y_lo, y_hi, target_y);
        } else {
            lay.y_step = nice_step(y_hi - y_lo, target_y);
            lay.y_ticks = linear_ticks(y_lo, y_hi, lay.y_step)
                .into_iter()
                .map(|v| (v, true))
                .collect();
        }
        let label_w = lay
            .y_ticks
            .iter()
            .filter(|t| t.1)
            .map(|&(v, _)| text_width(&lay.y_label_of(v), SCALE))
            .max()
            .unwrap_or(0);
        let y_label_room = if y_label.is_empty() {
            0
        } else {
            9 * SCALE + 12
        };
        lay.left = 12 + y_label_room + label_w + 10;
        // x ticks: as many as fit without their labels touching. Then, if
        // the last label would run off the picture, narrow the plot and
        // choose again.
        for _ in 0..2 {
            let plot_w = (lay.right - lay.left).max(1) as f64;
            let mut target_x = ((plot_w / 90.0) as usize).clamp(2, 10);
            loop {
                let step = nice_step(x_hi - x_lo, target_x);
                let ticks = linear_ticks(x_lo, x_hi, step);
                let widest = ticks
                    .iter()
                    .map(|&v| text_width(&format_tick(v, step, x_lo, x_hi), SCALE))
                    .max()
                    .unwrap_or(0) as f64;
                let spacing = step / (x_hi - x_lo) * plot_w;
                if spacing >= widest + 16.0 || target_x <= 2 {
                    lay.x_step = step;
                    lay.x_ticks = ticks.into_iter().map(|v| (v, true)).collect();
                    break;
                }
                target_x -= 1;
            }
            let overflow = lay.x_ticks.last().map_or(0, |&(v, _)| {
                let half = text_width(&format_tick(v, lay.x_step, x_lo, x_hi), SCALE) / 2;
                lay.px(v).round() as i32 + half + 8 - w
            });
            if overflow <= 0 {
                break;
            }
            lay.right -= overflow;
        }
        lay
    }

    fn y_ok(&self, y: f64) -> bool {
        y.is_finite() && (!self.y_log || y > 0.0)
    }

    fn px(&self, x: f64) -> f64 {
        self.left as f64
            + (x - self.x_lo) / (self.x_hi - self.x_lo) * (self.right - self.left) as f64
    }

    fn py(&self, y: f64) -> f64 {
        let a = if self.y_log { y.log10() } else { y };
        self.bottom as f64
            - (a - self.y_lo) / (self.y_hi - self.y_lo) * (self.bottom - self.top) as f64
    }

    /// Pixel position of a data point, or None if it cannot be drawn.
    fn to_px(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        if !x.is_finite() || !self.y_ok(y) {
            return None;
        }
        Some((self.px(x), self.py(y)))
    }

    fn y_label_of(&self, v: f64) -> String {
        if self.y_log {
            format_log_tick(v)
        } else {
            format_tick(v, self.y_step, self.y_lo, self.y_hi)
        }
    }
}

/// Min and max of finite values (empty: lo > hi).
struct Range {
    lo: f64,
    hi: f64,
}

impl Default for Range {
    fn default() -> Self {
        Range {
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
        }
    }
}

impl Range {
    fn add(&mut self, v: f64) {
        self.lo = self.lo.min(v);
        self.hi = self.hi.max(v);
    }

    /// The range widened by `frac` of its span on each side; a single value
    /// gets a span around it, and an empty range becomes 0..1.
    fn padded(&self, frac: f64) -> (f64, f64) {
        if self.lo > self.hi {
            return (0.0, 1.0);
        }
        let span = self.hi - self.lo;
        if span <= self.hi.abs().max(self.lo.abs()) * 1e-12 || span == 0.0 {
            let d = if self.lo == 0.0 {
                1.0
            } else {
                self.lo.abs() * 0.1
            };
            return (self.lo - d, self.hi + d);
        }
        (self.lo - span * frac, self.hi + span * frac)
    }
}

/// A 1-2-5 step giving about `target` intervals over `span`.
fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powi(raw.log10().floor() as i32);
    let norm = raw / mag;
    let m = if norm < 1.5 {
        1.0
    } else if norm < 3.5 {
        2.0
    } else if norm < 7.5 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Multiples of `step` within [lo, hi].
fn linear_ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last.min(first + 100))
        .map(|k| {
            let v = k as f64 * step;
            if v.abs() < step * 1e-9 {
                0.0
            } else {
                v
            }
        })
        .collect()
}

/// Ticks for a log axis spanning 10^lo..10^hi: labelled (major) values and
/// unlabelled minor grid values, in data space.
fn log_ticks(lo: f64, hi: f64, target: usize) -> Vec<(f64, bool)> {
    let (d0, d1) = (lo.floor() as i32, hi.ceil() as i32);
    let inside = |v: f64| {
        let a = v.log10();
        a >= lo - 1e-9 && a <= hi + 1e-9
    };
    let with = |mults: &[f64]| -> Vec<f64> {
        (d0..=d1)
            .flat_map(|d| mults.iter().map(move |m| m * 10f64.powi(d)))
            .filter(|&v| inside(v))
            .collect()
    };
    let decades = (d1 - d0).max(1) as usize;
    let mut major = with(&[1.0]);
    if major.len() > target {
        let every = decades.div_ceil(target);
        major.retain(|v| (v.log10().round() as i32).rem_euclid(every as i32) == 0);
    }
    if major.len() < 3 {
        major = with(&[1.0, 2.0, 5.0]);
    }
    if major.len() < 3 {
        major = with(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    }
    let minor = if decades <= 6 {
        with(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    } else {
        with(&[1.0])
    };
    let is_major = |v: f64| major.iter().any(|&m| (m / v - 1.0).abs() < 1e-9);
    let mut out: Vec<(f64, bool)> = minor
        .into_iter()
        .filter(|&v| !is_major(v))
        .map(|v| (v, false))
        .collect();
    out.extend(major.into_iter().map(|v| (v, true)));
    out
}

/// A tick value on a linear axis, with as many decimals as the step needs;
/// large values get an SI suffix (250k, 1.5M), tiny or huge ones
/// scientific notation (2e-5).
fn format_tick(v: f64, step: f64, lo: f64, hi: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let big = lo.abs().max(hi.abs());
    let decimals = |step: f64| (-(step.log10() + 1e-9).floor()).max(0.0) as usize;
    if (1e5..1e12).contains(&big) && step >= 1.0 {
        let (unit, suffix) = if big >= 1e9 {
            (1e9, "G")
        } else if big >= 1e6 {
            (1e6, "M")
        } else {
            (1e3, "k")
        };
        let dec = decimals(step / unit);
        return format!("{:.dec$}{suffix}", v / unit);
    }
    if !(1e-3..1e12).contains(&big) || step < 1e-4 {
        let e = (big.log10() + 1e-9).floor() as i32;
        let dec = decimals(step / 10f64.powi(e));
        return format!("{:.dec$}e{e}", v / 10f64.powi(e));
    }
    let dec = decimals(step);
    format!("{v:.dec$}")
}

/// A tick on a log axis: plain numbers from 0.001 to 100000, else "2e-5".
fn format_log_tick(v: f64) -> String {
    let e = (v.log10() + 1e-9).floor() as i32;
    let m = (v / 10f64.powi(e) * 1e6).round() / 1e6;
    if (-3..=5).contains(&e) {
        let dec = (-e).max(0) as usize;
        format!("{v:.dec$}")
    } else if m == 1.0 {
        format!("1e{e}")
    } else {
        format!("{m}e{e}")
    }
}

fn draw_legend(img: &mut RgbImage, lay: &Layout, series: &[Series]) {
    let entries: Vec<&Series> = series.iter().filter(|s| !s.name.is_empty()).collect();
    if entries.is_empty() {
        return;
    }
    let row = 9 * SCALE + 4;
    let swatch = 26;
    let w = 10
        + swatch
        + 8
        + entries
            .iter()
            .map(|s| text_width(&s.name, SCALE))
            .max()
            .unwrap_or(0)
        + 10;
    let h = 8 + row * entries.len() as i32 + 2;
    let m = 10;
    // The corner that hides the fewest points, top-right first.
    let corners = [
        (lay.right - m - w, lay.top + m),
        (lay.left + m, lay.top + m),
        (lay.right - m - w, lay.bottom - m - h),
        (lay.left + m, lay.bottom - m - h),
    ];
    let hidden = |&(x0, y0): &(i32, i32)| -> usize {
        let (x0, y0) = (x0 as f64 - 4.0, y0 as f64 - 4.0);
        let (x1, y1) = (x0 + w as f64 + 8.0, y0 + h as f64 + 8.0);
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter_map(|&(x, y)| lay.to_px(x, y))
            .filter(|&(px, py)| px >= x0 && px <= x1 && py >= y0 && py <= y1)
            .count()
    };
    let (x0, y0) = *corners.iter().min_by_key(|c| hidden(c)).unwrap();
    img.fill_rect(x0, y0, w, h, WHITE);
    img.hline(x0, x0 + w, y0, [200, 200, 200]);
    img.hline(x0, x0 + w, y0 + h, [200, 200, 200]);
    img.vline(x0, y0, y0 + h, [200, 200, 200]);
    img.vline(x0 + w, y0, y0 + h, [200, 200, 200]);
    for (i, s) in entries.iter().enumerate() {
        let ty = y0 + 8 + row * i as i32;
        let cy = (ty + 7 * SCALE / 2) as f64;
        let mut cov = Coverage::new(img);
        cov.segment(
            ((x0 + 10) as f64, cy),
            ((x0 + 10 + swatch) as f64, cy),
            LINE_WIDTH + 1.0,
            lay,
        );
        cov.composite(img, s.color);
        draw_text(img, x0 + 10 + swatch + 8, ty, &s.name, SCALE, TEXT);
    }
}

/// Per-pixel line coverage for one colour, combined by max so that joints
/// and overlaps are not drawn twice.
struct Coverage {
    w: i32,
    h: i32,
    a: Vec<f32>,
}

impl Coverage {
    fn new(img: &RgbImage) -> Self {
        Coverage {
            w: img.width as i32,
            h: img.height as i32,
            a: vec![0.0; (img.width * img.height) as usize],
        }
    }

    /// A segment of the given width with round caps, clipped to the plot area.
    fn segment(&mut self, p: (f64, f64), q: (f64, f64), width: f64, lay: &Layout) {
        let r = width / 2.0;
        let pad = r + 1.0;
        let clip = |v: f64, lo: i32, hi: i32| v.clamp(lo as f64, hi as f64) as i32;
        let x0 = clip(p.0.min(q.0) - pad, lay.left, lay.right);
        let x1 = clip(p.0.max(q.0) + pad, lay.left, lay.right);
        let y0 = clip(p.1.min(q.1) - pad, lay.top, lay.bottom);
        let y1 = clip(p.1.max(q.1) + pad, lay.top, lay.bottom);
        let (dx, dy) = (q.0 - p.0, q.1 - p.1);
        let len2 = dx * dx + dy * dy;
        for y in y0..=y1.min(self.h - 1) {
            for x in x0..=x1.min(self.w - 1) {
                // Distance from the pixel centre to the segment.
                let (cx, cy) = (x as f64 + 0.5, y as f64 + 0.5);
                let t = if len2 > 0.0 {
                    (((cx - p.0) * dx + (cy - p.1) * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (ex, ey) = (cx - p.0 - t * dx, cy - p.1 - t * dy);
                let d = (ex * ex + ey * ey).sqrt();
                let c = (r + 0.5 - d).clamp(0.0, 1.0) as f32;
                if c > 0.0 {
                    let a = &mut self.a[(y * self.w + x) as usize];
                    *a = a.max(c);
                }
            }
        }
    }

    fn composite(&self, img: &mut RgbImage, color: [u8; 3]) {
        for (i, &a) in self.a.iter().enumerate() {
            if a > 0.0 {
                img.blend_index(i, color, a);
            }
        }
    }
}

impl RgbImage {
    pub fn new(width: u32, height: u32, color: [u8; 3]) -> Self {
        RgbImage {
            width,
            height,
            pixels: color
                .iter()
                .copied()
                .cycle()
                .take((width * height * 3) as usize)
                .collect(),
        }
    }

    /// The colour at (x, y).
    pub fn get(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    fn blend_index(&mut self, i: usize, c: [u8; 3], a: f32) {
        let p = &mut self.pixels[i * 3..i * 3 + 3];
        for k in 0..3 {
            p[k] = (p[k] as f32 * (1.0 - a) + c[k] as f32 * a).round() as u8;
        }
    }

    fn set(&mut self, x: i32, y: i32, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as u32) < self.width && (y as u32) < self.height {
            let i = ((y as u32 * self.width + x as u32) * 3) as usize;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    fn hline(&mut self, x0: i32, x1: i32, y: i32, c: [u8; 3]) {
        for x in x0..=x1 {
            self.set(x, y, c);
        }
    }

    fn vline(&mut self, x: i32, y0: i32, y1: i32, c: [u8; 3]) {
        for y in y0..=y1 {
            self.set(x, y, c);
        }
    }

    fn fill_rect(&mut self, x0: i32, y0: i32, w: i32, h: i32, c: [u8; 3]) {
        for y in y0..y0 + h {
            self.hline(x0, x0 + w - 1, y, c);
        }
    }
}

// ---------------------------------------------------------------------------
// Text: a 5×7 bitmap font with two rows of descender, drawn at integer scale.

/// Rows of a glyph, top to bottom, `#` = ink; 7 rows (cap height) or 9
/// (with descender).
fn glyph_art(c: char) -> &'static str {
    match c {
        '0' => ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
        '1' => "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
        '2' => ".###.|#...#|....#|...#.|..#..|.#...|#####",
        '3' => "#####|...#.|..#..|...#.|....#|#...#|.###.",
        '4' => "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
        '5' => "#####|#....|####.|....#|....#|#...#|.###.",
        '6' => "..##.|.#...|#....|####.|#...#|#...#|.###.",
        '7' => "#####|....#|...#.|..#..|.#...|.#...|.#...",
        '8' => ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
        '9' => ".###.|#...#|#...#|.####|....#|...#.|.##..",
        'A' => ".###.|#...#|#...#|#####|#...#|#...#|#...#",
        'B' => "####.|#...#|#...#|####.|#...#|#...#|####.",
        'C' => ".###.|#...#|#....|#....|#....|#...#|.###.",
        'D' => "####.|#...#|#...#|#...#|#...#|#...#|####.",
        'E' => "#####|#....|#....|####.|#....|#....|#####",
        'F' => "#####|#....|#....|####.|#....|#....|#....",
        'G' => ".###.|#...#|#....|#.###|#...#|#...#|.####",
        'H' => "#...#|#...#|#...#|#####|#...#|#...#|#...#",
        'I' => ".###.|..#..|..#..|..#..|..#..|..#..|.###.",
        'J' => "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
        'K' => "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#",
        'L' => "#....|#....|#....|#....|#....|#....|#####",
        'M' => "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#",
        'N' => "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
        'O' => ".###.|#...#|#...#|#...#|#...#|#...#|.###.",
        'P' => "####.|#...#|#...#|####.|#....|#....|#....",
        'Q' => ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#",
        'R' => "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
        'S' => ".####|#....|#....|.###.|....#|....#|####.",
        'T' => "#####|..#..|..#..|..#..|..#..|..#..|..#..",
        'U' => "#...#|#...#|#...#|#...#|#...#|#...#|.###.",
        'V' => "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
        'W' => "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.",
        'X' => "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
        'Y' => "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..",
        'Z' => "#####|....#|...#.|..#..|.#...|#....|#####",
        'a' => ".....|.....|.###.|....#|.####|#...#|.####",
        'b' => "#....|#....|####.|#...#|#...#|#...#|####.",
        'c' => ".....|.....|.###.|#....|#....|#...#|.###.",
        'd' => "....#|....#|.####|#...#|#...#|#...#|.####",
        'e' => ".....|.....|.###.|#...#|#####|#....|.###.",
        'f' => "..##.|.#..#|.#...|###..|.#...|.#...|.#...",
        'g' => ".....|.....|.####|#...#|#...#|#...#|.####|....#|.###.",
        'h' => "#....|#....|#.##.|##..#|#...#|#...#|#...#",
        'i' => "..#..|.....|.##..|..#..|..#..|..#..|.###.",
        'j' => "...#.|.....|..##.|...#.|...#.|...#.|...#.|#..#.|.##..",
        'k' => "#....|#....|#..#.|#.#..|##...|#.#..|#..#.",
        'l' => ".##..|..#..|..#..|..#..|..#..|..#..|.###.",
        'm' => ".....|.....|##.#.|#.#.#|#.#.#|#.#.#|#.#.#",
        'n' => ".....|.....|#.##.|##..#|#...#|#...#|#...#",
        'o' => ".....|.....|.###.|#...#|#...#|#...#|.###.",
        'p' => ".....|.....|####.|#...#|#...#|#...#|####.|#....|#....",
        'q' => ".....|.....|.####|#...#|#...#|#...#|.####|....#|....#",
        'r' => ".....|.....|#.##.|##..#|#....|#....|#....",
        's' => ".....|.....|.####|#....|.###.|....#|####.",
        't' => ".#...|.#...|###..|.#...|.#...|.#..#|..##.",
        'u' => ".....|.....|#...#|#...#|#...#|#..##|.##.#",
        'v' => ".....|.....|#...#|#...#|#...#|.#.#.|..#..",
        'w' => ".....|.....|#...#|#...#|#.#.#|#.#.#|.#.#.",
        'x' => ".....|.....|#...#|.#.#.|..#..|.#.#.|#...#",
        'y' => ".....|.....|#...#|#...#|#...#|#...#|.####|....#|.###.",
        'z' => ".....|.....|#####|...#.|..#..|.#...|#####",
        ' ' => ".....|.....|.....|.....|.....|.....|.....",
        '.' => ".....|.....|.....|.....|.....|.##..|.##..",
        ',' => ".....|.....|.....|.....|.....|.##..|.##..|..#..|.#...",
        ':' => ".....|.##..|.##..|.....|.##..|.##..|.....",
        ';' => ".....|.##..|.##..|.....|.##..|.##..|..#..|.#...",
        '-' => ".....|.....|.....|.####|.....|.....|.....",
        '+' => ".....|..#..|..#..|#####|..#..|..#..|.....",
        '=' => ".....|.....|#####|.....|#####|.....|.....",
        '_' => ".....|.....|.....|.....|.....|.....|.....|#####",
        '(' => "...#.|..#..|.#...|.#...|.#...|..#..|...#.",
        ')' => ".#...|..#..|...#.|...#.|...#.|..#..|.#...",
        '[' => ".###.|.#...|.#...|.#...|.#...|.#...|.###.",
        ']' => ".###.|...#.|...#.|...#.|...#.|...#.|.###.",
        '{' => "...#.|..#..|..#..|.#...|..#..|..#..|...#.",
        '}' => ".#...|..#..|..#..|...#.|..#..|..#..|.#...",
        '/' => ".....|....#|...#.|..#..|.#...|#....|.....",
        '\\' => ".....|#....|.#...|..#..|...#.|....#|.....",
        '%' => "##...|##..#|...#.|..#..|.#...|#..##|...##",
        '\'' => "..#..|..#..|.#...|.....|.....|.....|.....",
        '"' => ".#.#.|.#.#.|.#.#.|.....|.....|.....|.....",
        '`' => ".#...|..#..|.....|.....|.....|.....|.....",
        '!' => "..#..|..#..|..#..|..#..|..#..|.....|..#..",
        '?' => ".###.|#...#|....#|...#.|..#..|.....|..#..",
        '<' => "...#.|..#..|.#...|#....|.#...|..#..|...#.",
        '>' => ".#...|..#..|...#.|....#|...#.|..#..|.#...",
        '*' => ".....|..#..|#.#.#|.###.|#.#.#|..#..|.....",
        '#' => ".#.#.|.#.#.|#####|.#.#.|#####|.#.#.|.#.#.",
        '&' => ".##..|#..#.|#.#..|.#...|#.#.#|#..#.|.##.#",
        '^' => "..#..|.#.#.|#...#|.....|.....|.....|.....",
        '~' => ".....|.....|.#...|#.#.#|...#.|.....|.....",
        '|' => "..#..|..#..|..#..|..#..|..#..|..#..|..#..",
        '@' => ".###.|#...#|....#|.##.#|#.#.#|#.#.#|.###.",
        '$' => "..#..|.####|#.#..|.###.|..#.#|####.|..#..",
        // Anything else: a hollow box.
        _ => "#####|#...#|#...#|#...#|#...#|#...#|#####",
    }
}

/// A glyph's ink rows (bit 4 = leftmost column), first inked column and
/// advance width in font pixels.
fn glyph(c: char) -> ([u8; 9], i32, i32) {
    let mut rows = [0u8; 9];
    for (r, line) in glyph_art(c).split('|').enumerate().take(9) {
        for (k, ch) in line.bytes().enumerate().take(5) {
            if ch == b'#' {
                rows[r] |= 1 << (4 - k);
            }
        }
    }
    if c == ' ' {
        return (rows, 0, 3);
    }
    if c.is_ascii_digit() {
        // Digits keep a fixed width so numbers line up.
        return (rows, 0, 6);
    }
    let ink = rows.iter().fold(0u8, |a, &r| a | r);
    let first = (0..5).find(|&k| ink & (1 << (4 - k)) != 0).unwrap_or(0);
    let last = (0..5)
        .rev()
        .find(|&k| ink & (1 << (4 - k)) != 0)
        .unwrap_or(4);
    (rows, first, last - first + 2)
}

fn text_width(text: &str, scale: i32) -> i32 {
    let w: i32 = text.chars().map(|c| glyph(c).2).sum();
    // No spacing column after the last glyph.
    (w - 1).max(0) * scale
}

/// Shortens `text` with "..." so it fits in `max` pixels.
fn fit_text(text: &str, scale: i32, max: i32) -> String {
    if text_width(text, scale) <= max {
        return text.to_string();
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let s: String = chars.iter().collect::<String>() + "...";
        if text_width(&s, scale) <= max {
            return s;
        }
    }
    String::new()
}

/// Draws `text` with its cap top at `y`, calling `plot(dx, dy)` for each
/// font pixel at offset (dx along the text, dy down from the cap top).
fn for_each_text_pixel(text: &str, mut plot: impl FnMut(i32, i32)) {
    let mut pen = 0;
    for c in text.chars() {
        let (rows, first, adv) = glyph(c);
        for (r, bits) in rows.iter().enumerate() {
            for k in 0..5 {
                if bits & (1 << (4 - k)) != 0 {
                    plot(pen + k - first, r as i32);
                }
            }
        }
        pen += adv;
    }
}

fn draw_text(img: &mut RgbImage, x: i32, y: i32, text: &str, scale: i32, c: [u8; 3]) {
    for_each_text_pixel(text, |dx, dy| {
        for sy in 0..scale {
            for sx in 0..scale {
                img.set(x + dx * scale + sx, y + dy * scale + sy, c);
            }
        }
    });
}

/// Text on a white outline, readable over grid lines and data.
fn draw_text_halo(img: &mut RgbImage, x: i32, y: i32, text: &str, scale: i32, c: [u8; 3]) {
    for (ox, oy) in [
        (-2, 0),
        (2, 0),
        (0, -2),
        (0, 2),
        (-1, -1),
        (1, 1),
        (-1, 1),
        (1, -1),
    ] {
        draw_text(img, x + ox, y + oy, text, scale, WHITE);
    }
    draw_text(img, x, y, text, scale, c);
}

/// Text reading bottom to top, starting at (x, y) = (left of the cap top
/// line when turned, bottom end).
fn draw_text_up(img: &mut RgbImage, x: i32, y: i32, text: &str, scale: i32, c: [u8; 3]) {
    for_each_text_pixel(text, |dx, dy| {
        for sy in 0..scale {
            for sx in 0..scale {
                img.set(x + dy * scale + sy, y - dx * scale - sx, c);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> RgbImage {
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        RgbImage {
            width: info.width,
            height: info.height,
            pixels: buf,
        }
    }

    fn red_line() -> Vec<Series> {
        vec![Series {
            name: "".into(),
            points: vec![
                (0.0, 0.0),
                (1.0, 1.0),
                (f64::NAN, 3.0),
                (2.0, f64::INFINITY),
                (2.0, 2.0),
            ],
            color: [255, 0, 0],
        }]
    }

    #[test]
    fn png_round_trip_and_line_position() {
        let dir = std::env::temp_dir().join(format!("kiln-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("chart.png");
        let opts = ChartOptions::default();
        line_chart_png(&p, "t", "x", "y", &red_line(), &[], &opts).unwrap();
        let img = decode(&std::fs::read(&p).unwrap());
        assert_eq!((img.width, img.height), (800, 500));
        assert_eq!(
            img,
            render_line_chart("t", "x", "y", &red_line(), &[], &opts)
        );

        let lay = Layout::new(&img, "t", "x", "y", &red_line(), &[], &opts);
        let is_red = |x: f64, y: f64| {
            let [r, g, b] = img.get(x as u32, y as u32);
            r > 200 && g < 60 && b < 60
        };
        // Along the drawn segment (0,0)-(1,1): red.
        for t in [0.1, 0.3, 0.5, 0.7, 0.9] {
            let (x, y) = lay.to_px(t, t).unwrap();
            assert!(is_red(x, y), "no line at ({t}, {t}) → pixel ({x}, {y})");
        }
        // (1,1) → (2,2) is not joined: the NaN point breaks the line, and
        // (2,2) is a lone dot.
        let (x, y) = lay.to_px(1.5, 1.5).unwrap();
        assert!(!is_red(x, y));
        let (x, y) = lay.to_px(2.0, 2.0).unwrap();
        assert!(is_red(x - 0.5, y));
        // Off the line: not red.
        let (x, y) = lay.to_px(0.5, 0.1).unwrap();
        assert!(!is_red(x, y));
        // Corners of the picture stay white.
        assert_eq!(img.get(0, 0), WHITE);
        assert_eq!(img.get(799, 499), WHITE);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn degenerate_inputs_render() {
        let opts = ChartOptions::default();
        let one = [Series {
            name: "one".into(),
            points: vec![(3.0, 7.0)],
            color: [0, 0, 255],
        }];
        let flat = [Series {
            name: "flat".into(),
            points: vec![(0.0, 2.0), (5.0, 2.0)],
            color: [0, 0, 255],
        }];
        let none = [Series {
            name: "nan".into(),
            points: vec![(f64::NAN, 1.0)],
            color: [0, 0, 255],
        }];
        for s in [&one[..], &flat[..], &none[..], &[]] {
            let img = render_line_chart("", "", "", s, &[], &opts);
            assert_eq!(img.pixels.len(), 800 * 500 * 3);
        }
        // Lone point: drawn as a dot at its place.
        let img = render_line_chart("", "", "", &one, &[], &opts);
        let lay = Layout::new(&img, "", "", "", &one, &[], &opts);
        let (x, y) = lay.to_px(3.0, 7.0).unwrap();
        assert_eq!(img.get(x as u32, y as u32), [0, 0, 255]);
        // Log axis with a non-positive value, plus a reference line.
        let log = ChartOptions {
            y_log: true,
            ..opts
        };
        let s = [Series {
            name: "l".into(),
            points: vec![(0.0, 100.0), (1.0, 0.0), (2.0, 0.5)],
            color: [0, 0, 255],
        }];
        let h = [HLine {
            value: 1.0,
            label: "floor".into(),
            color: [0, 128, 0],
        }];
        let img = render_line_chart("log", "x", "y", &s, &h, &log);
        let lay = Layout::new(&img, "log", "x", "y", &s, &h, &log);
        assert!(lay.y_ticks.iter().any(|&(v, major)| major && v == 1.0));
        let y = lay.py(1.0).round() as u32;
        let green = (lay.left as u32..lay.right as u32)
            .filter(|&x| img.get(x, y) == [0, 128, 0])
            .count();
        assert!(green > 100, "dashed floor line drawn ({green} px)");
    }

    #[test]
    fn ticks() {
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(1.0, 4), 0.2);
        assert_eq!(nice_step(7000.0, 6), 1000.0);
        assert_eq!(
            linear_ticks(-0.05, 1.05, 0.2),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(format_tick(0.6000000000000001, 0.2, 0.0, 1.0), "0.6");
        assert_eq!(format_tick(2000.0, 1000.0, 0.0, 7000.0), "2000");
        assert_eq!(format_tick(2.5e6, 5e5, 0.0, 3e6), "2.5M");
        assert_eq!(format_tick(150000.0, 50000.0, 0.0, 2e5), "150k");
        assert_eq!(format_tick(6e-4, 1e-4, 0.0, 6e-4), "6e-4");
        assert_eq!(format_tick(2.5e13, 5e12, 0.0, 3e13), "2.5e13");
        assert_eq!(format_log_tick(0.01), "0.01");
        assert_eq!(format_log_tick(1e-7), "1e-7");
        assert_eq!(format_log_tick(5e7), "5e7");
        let t = log_ticks(0.3, 0.8, 5); // 2..6.3
        let major: Vec<f64> = t.iter().filter(|t| t.1).map(|t| t.0).collect();
        assert!(major.len() >= 3, "{major:?}");
    }

    #[test]
    fn font_covers_printable_ascii() {
        for c in (32u8..127).map(char::from) {
            let art = glyph_art(c);
            assert_ne!(art, glyph_art('\u{1}'), "no glyph for {c:?}");
            let rows: Vec<&str> = art.split('|').collect();
            assert!(
                rows.len() == 7 || rows.len() == 8 || rows.len() == 9,
                "{c:?}"
            );
            assert!(rows.iter().all(|r| r.len() == 5), "{c:?}");
        }
    }

    /// Writes sample charts for a person to look at:
    /// `cargo test --lib plot::tests::sample_charts -- --ignored`, then open
    /// the PNGs in $TMPDIR/kiln-plot-samples.
    #[test]
    #[ignore]
    fn sample_charts() {
        let dir = std::env::temp_dir().join("kiln-plot-samples");
        std::fs::create_dir_all(&dir).unwrap();
        let mut rng = crate::util::Rng::new(7);
        let train: Vec<(f64, f64)> = (0..=3000)
            .map(|s| {
                let s = s as f64;
                let noise = rng.normal() * 0.08;
                (
                    s,
                    1.45 + 3.0 * (-s / 500.0).exp() + 0.15 * (-s / 3000.0).exp() + noise,
                )
            })
            .collect();
        let val: Vec<(f64, f64)> = (0..=30)
            .map(|k| {
                let s = k as f64 * 100.0;
                (
                    s,
                    1.55 + 3.0 * (-s / 500.0).exp() + 0.2 * (-s / 3000.0).exp(),
                )
            })
            .collect();
        let series = [
            Series {
                name: "train loss".into(),
                points: train,
                color: PALETTE[0],
            },
            Series {
                name: "validation loss".into(),
                points: val,
                color: PALETTE[1],
            },
        ];
        let floor = [HLine {
            value: 1.30,
            label: "entropy floor 1.30 nats".into(),
            color: [90, 90, 90],
        }];
        let opts = ChartOptions::default();
        line_chart_png(
            &dir.join("loss.png"),
            "GPT-tiny on Shakespeare: loss per token",
            "step",
            "loss (nats/token)",
            &series,
            &floor,
            &opts,
        )
        .unwrap();
        let log = ChartOptions {
            y_log: true,
            ..opts.clone()
        };
        line_chart_png(
            &dir.join("loss_log.png"),
            "Same run, log y",
            "step",
            "loss",
            &series,
            &floor,
            &log,
        )
        .unwrap();
        let lr: Vec<(f64, f64)> = (0..=2000)
            .map(|s| (s as f64, 6e-4 * (s as f64 / 200.0).min(1.0)))
            .collect();
        line_chart_png(
            &dir.join("lr.png"),
            "Learning rate (warm-up)",
            "step",
            "lr",
            &[Series {
                name: "lr".into(),
                points: lr,
                color: PALETTE[2],
            }],
            &[],
            &opts,
        )
        .unwrap();
        let one = [Series {
            name: "single point".into(),
            points: vec![(5.0, 2.0)],
            color: PALETTE[3],
        }];
        line_chart_png(
            &dir.join("one.png"),
            "One point",
            "x",
            "y",
            &one,
            &[],
            &opts,
        )
        .unwrap();
        let text = [
            Series {
                name: "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz".into(),
                points: vec![(0.0, -1.0), (1.0, 1.0)],
                color: PALETTE[4],
            },
            Series {
                name: "0123456789 .,:;-+=_()[]{}/\\%'\"`!?<>*#&^~|@$".into(),
                points: vec![(0.0, 1.0), (1.0, -1.0)],
                color: PALETTE[5],
            },
        ];
        line_chart_png(
            &dir.join("font.png"),
            "Font: The quick brown fox jumps over the lazy dog",
            "x (jpqgy)",
            "y",
            &text,
            &[],
            &opts,
        )
        .unwrap();
        // The legend of font.png, zoomed ×2, to check the glyphs.
        let img = render_line_chart(
            "Font: The quick brown fox jumps over the lazy dog",
            "x (jpqgy)",
            "y",
            &text,
            &[],
            &opts,
        );
        let (x0, y0, w, h) = (90, 0, 700, 110);
        let mut zoom = RgbImage::new(w * 2, h * 2, WHITE);
        for y in 0..h * 2 {
            for x in 0..w * 2 {
                let c = img.get(x0 + x / 2, y0 + y / 2);
                zoom.set(x as i32, y as i32, c);
            }
        }
        std::fs::write(dir.join("font_zoom.png"), encode_png(&zoom).unwrap()).unwrap();
        // Negative values, big x, a reference line near the top.
        let wave: Vec<(f64, f64)> = (0..=500)
            .map(|k| (k as f64 * 5000.0, -3.0 + (k as f64 / 40.0).sin() * 2.0))
            .collect();
        let top = [HLine {
            value: -0.9,
            label: "ceiling".into(),
            color: PALETTE[3],
        }];
        line_chart_png(
            &dir.join("wave.png"),
            "",
            "tokens seen",
            "",
            &[Series {
                name: "".into(),
                points: wave,
                color: PALETTE[0],
            }],
            &top,
            &ChartOptions {
                width: 640,
                height: 360,
                y_log: false,
            },
        )
        .unwrap();
    }
}
