//! Peak FP32 throughput and memory bandwidth, so that benchmark tables can
//! say how close a kernel gets to the hardware.
//!
//! The built-in table holds **vendor specification numbers** (data sheets and
//! product pages): FP32 throughput of the ordinary shader cores (no tensor
//! cores, no TF32, no sparsity) and peak DRAM bandwidth. Real kernels rarely
//! exceed ~70–80 % of either. Boost clocks, power limits and board variants
//! move the real ceiling; `--peak-gflops` / `--peak-gbps` override the table.
//! CPU adapters (lavapipe) have no entry: their peak is reported as unknown.

use serde::Serialize;

/// One row of the table: adapters whose name contains `pattern`
/// (case-insensitive, ignoring "(R)" and "(TM)") match. Earlier rows win, so
/// specific names ("H100 PCIe") come before general ones ("H100").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakSpec {
    pub pattern: &'static str,
    /// What the numbers describe.
    pub label: &'static str,
    /// FP32 (non-tensor) TFLOP/s; `None` where the vendor publishes none.
    pub tflops_fp32: Option<f64>,
    /// Memory bandwidth, GB/s.
    pub gbps: Option<f64>,
}

const fn row(
    pattern: &'static str,
    label: &'static str,
    tflops: Option<f64>,
    gbps: f64,
) -> PeakSpec {
    PeakSpec {
        pattern,
        label,
        tflops_fp32: tflops,
        gbps: Some(gbps),
    }
}

/// Vendor specification numbers (see the module docs). NVIDIA: data-center
/// data sheets and GeForce product pages; Apple: M-series launch
/// announcements, for the largest GPU configuration of each chip (smaller
/// configurations have proportionally fewer FLOP/s); AMD and Intel: product
/// pages (the Arc A770 figure is Intel's 32 Xe-cores × 128 FP32 lanes × 2
/// FLOP × 2.1 GHz graphics clock).
pub const PEAKS: &[PeakSpec] = &[
    // NVIDIA data center.
    row("h200 nvl", "NVIDIA H200 NVL", Some(60.0), 4800.0),
    row("h200", "NVIDIA H200 SXM", Some(67.0), 4800.0),
    row("h100 nvl", "NVIDIA H100 NVL", Some(60.0), 3900.0),
    row("h100 pcie", "NVIDIA H100 PCIe", Some(51.0), 2000.0),
    row("h100", "NVIDIA H100 SXM5", Some(67.0), 3350.0),
    row(
        "a100-sxm4-80gb",
        "NVIDIA A100 SXM4 80GB",
        Some(19.5),
        2039.0,
    ),
    row(
        "a100 80gb pcie",
        "NVIDIA A100 PCIe 80GB",
        Some(19.5),
        1935.0,
    ),
    row("a100", "NVIDIA A100 40GB", Some(19.5), 1555.0),
    row("v100-pcie", "NVIDIA V100 PCIe", Some(14.0), 900.0),
    row("v100", "NVIDIA V100 SXM2", Some(15.7), 900.0),
    row("l40s", "NVIDIA L40S", Some(91.6), 864.0),
    row("l40", "NVIDIA L40", Some(90.5), 864.0),
    row("nvidia l4", "NVIDIA L4", Some(30.3), 300.0),
    row("tesla t4", "NVIDIA T4", Some(8.1), 320.0),
    // NVIDIA GeForce.
    row("rtx 4090", "NVIDIA GeForce RTX 4090", Some(82.6), 1008.0),
    row(
        "rtx 3090 ti",
        "NVIDIA GeForce RTX 3090 Ti",
        Some(40.0),
        1008.0,
    ),
    row("rtx 3090", "NVIDIA GeForce RTX 3090", Some(35.6), 936.0),
    // Apple (unified memory; the largest GPU configuration of each chip).
    row(
        "apple m1 ultra",
        "Apple M1 Ultra (64-core GPU)",
        Some(21.0),
        800.0,
    ),
    row(
        "apple m1 max",
        "Apple M1 Max (32-core GPU)",
        Some(10.4),
        400.0,
    ),
    row(
        "apple m1 pro",
        "Apple M1 Pro (16-core GPU)",
        Some(5.2),
        200.0,
    ),
    row("apple m1", "Apple M1 (8-core GPU)", Some(2.6), 68.25),
    row(
        "apple m2 ultra",
        "Apple M2 Ultra (76-core GPU)",
        Some(27.2),
        800.0,
    ),
    row(
        "apple m2 max",
        "Apple M2 Max (38-core GPU)",
        Some(13.6),
        400.0,
    ),
    row(
        "apple m2 pro",
        "Apple M2 Pro (19-core GPU)",
        Some(6.8),
        200.0,
    ),
    row("apple m2", "Apple M2 (10-core GPU)", Some(3.6), 100.0),
    // Apple publishes no FP32 figure for the M3 family: bandwidth only.
    row("apple m3 ultra", "Apple M3 Ultra", None, 819.0),
    row("apple m3 max", "Apple M3 Max (40-core GPU)", None, 400.0),
    row("apple m3 pro", "Apple M3 Pro", None, 150.0),
    row("apple m3", "Apple M3", None, 100.0),
    // AMD.
    row("rx 7900 xtx", "AMD Radeon RX 7900 XTX", Some(61.4), 960.0),
    row("rx 7900 xt", "AMD Radeon RX 7900 XT", Some(51.6), 800.0),
    // Intel.
    row("arc a770", "Intel Arc A770 16GB", Some(17.2), 560.0),
];

/// Lower case without "(r)" and "(tm)", so that "Intel(R) Arc(TM) A770
/// Graphics" reads "intel arc a770 graphics".
fn normalize(name: &str) -> String {
    name.to_ascii_lowercase()
        .replace("(r)", "")
        .replace("(tm)", "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first table row whose pattern the adapter name contains.
pub fn lookup(adapter_name: &str) -> Option<&'static PeakSpec> {
    let n = normalize(adapter_name);
    PEAKS.iter().find(|p| n.contains(p.pattern))
}

/// The peak a benchmark divides by, and where it came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Peak {
    /// FP32 GFLOP/s.
    pub gflops: Option<f64>,
    /// GB/s.
    pub gbps: Option<f64>,
    /// "--peak-gflops/--peak-gbps", "vendor spec: <label>", or why unknown.
    pub source: String,
}

impl Peak {
    pub fn unknown(why: &str) -> Self {
        Self {
            gflops: None,
            gbps: None,
            source: why.to_string(),
        }
    }

    /// Percent of peak FLOP/s and of peak bandwidth for a measurement.
    pub fn percent(&self, gflops: f64, gbps: f64) -> (Option<f64>, Option<f64>) {
        let pct = |x: f64, p: Option<f64>| p.filter(|p| *p > 0.0).map(|p| 100.0 * x / p);
        (pct(gflops, self.gflops), pct(gbps, self.gbps))
    }
}

/// The peak for an adapter: command-line values first (each on its own),
/// then the built-in table; CPU adapters are never looked up.
pub fn resolve(adapter_name: &str, is_cpu: bool, gflops: Option<f64>, gbps: Option<f64>) -> Peak {
    let spec = if is_cpu { None } else { lookup(adapter_name) };
    let mut sources = Vec::new();
    if gflops.is_some() {
        sources.push("--peak-gflops".to_string());
    }
    if gbps.is_some() {
        sources.push("--peak-gbps".to_string());
    }
    let from_table = (gflops.is_none() && spec.is_some_and(|s| s.tflops_fp32.is_some()))
        || (gbps.is_none() && spec.is_some_and(|s| s.gbps.is_some()));
    if let (true, Some(s)) = (from_table, spec) {
        sources.push(format!("vendor spec: {}", s.label));
    }
    let gflops = gflops.or_else(|| spec.and_then(|s| s.tflops_fp32).map(|t| t * 1e3));
    let gbps = gbps.or_else(|| spec.and_then(|s| s.gbps));
    let source = if !sources.is_empty() {
        sources.join(", ")
    } else if is_cpu {
        "unknown (CPU adapter)".to_string()
    } else {
        "unknown (adapter not in the built-in table; pass --peak-gflops/--peak-gbps)".to_string()
    };
    Peak {
        gflops,
        gbps,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_names_win_over_general_ones() {
        let l = |n: &str| lookup(n).map(|p| p.label);
        assert_eq!(l("NVIDIA H100 PCIe"), Some("NVIDIA H100 PCIe"));
        assert_eq!(l("NVIDIA H100 80GB HBM3"), Some("NVIDIA H100 SXM5"));
        assert_eq!(l("NVIDIA H200"), Some("NVIDIA H200 SXM"));
        assert_eq!(l("NVIDIA H200 NVL"), Some("NVIDIA H200 NVL"));
        assert_eq!(l("NVIDIA A100-SXM4-80GB"), Some("NVIDIA A100 SXM4 80GB"));
        assert_eq!(l("NVIDIA A100-PCIE-40GB"), Some("NVIDIA A100 40GB"));
        assert_eq!(l("NVIDIA L40S"), Some("NVIDIA L40S"));
        assert_eq!(l("NVIDIA L4"), Some("NVIDIA L4"));
        assert_eq!(
            l("NVIDIA GeForce RTX 3090 Ti"),
            Some("NVIDIA GeForce RTX 3090 Ti")
        );
        assert_eq!(
            l("NVIDIA GeForce RTX 3090"),
            Some("NVIDIA GeForce RTX 3090")
        );
        assert_eq!(l("Apple M1 Pro"), Some("Apple M1 Pro (16-core GPU)"));
        assert_eq!(l("Apple M2"), Some("Apple M2 (10-core GPU)"));
        assert_eq!(l("AMD Radeon RX 7900 XTX"), Some("AMD Radeon RX 7900 XTX"));
        assert_eq!(
            l("Intel(R) Arc(TM) A770 Graphics"),
            Some("Intel Arc A770 16GB")
        );
        assert_eq!(l("llvmpipe (LLVM 15.0.6, 256 bits)"), None);
    }

    #[test]
    fn every_pattern_is_normalized_and_reachable() {
        for (i, p) in PEAKS.iter().enumerate() {
            assert_eq!(p.pattern, normalize(p.pattern), "{p:?}");
            // No earlier row shadows this one.
            let first = PEAKS.iter().position(|q| p.pattern.contains(q.pattern));
            assert_eq!(first, Some(i), "{} is shadowed", p.pattern);
            assert!(p.gbps.is_some_and(|g| g > 0.0));
            assert!(p.tflops_fp32.is_none_or(|t| t > 0.0));
        }
    }

    #[test]
    fn resolve_prefers_flags_and_skips_cpus() {
        let p = resolve("NVIDIA H200", false, None, None);
        assert_eq!(p.gflops, Some(67_000.0));
        assert_eq!(p.gbps, Some(4800.0));
        assert_eq!(p.source, "vendor spec: NVIDIA H200 SXM");
        let p = resolve("NVIDIA H200", false, Some(50_000.0), None);
        assert_eq!((p.gflops, p.gbps), (Some(50_000.0), Some(4800.0)));
        assert!(p.source.contains("--peak-gflops") && p.source.contains("H200"));
        let p = resolve("llvmpipe (LLVM 15.0.6, 256 bits)", true, None, None);
        assert_eq!((p.gflops, p.gbps), (None, None));
        assert_eq!(p.percent(1.0, 1.0), (None, None));
        let p = resolve("llvmpipe", true, None, Some(20.0));
        assert_eq!(p.gbps, Some(20.0));
        let (f, b) = p.percent(3.0, 5.0);
        assert_eq!(f, None);
        assert!((b.unwrap() - 25.0).abs() < 1e-12);
        let p = resolve("Some Future GPU", false, None, None);
        assert!(p.source.starts_with("unknown"));
        // Apple M3: bandwidth from the table, FLOP/s unknown.
        let p = resolve("Apple M3 Max", false, None, None);
        assert_eq!((p.gflops, p.gbps), (None, Some(400.0)));
    }
}
