//! `kiln bench` end to end on the test adapter (lavapipe in CI): one tiny
//! shape per kernel family gives finite, positive numbers; the JSON report
//! has the documented shape; the training-step benchmark runs and reports
//! its memory plan; a model beyond the adapter's limits fails with Kiln's
//! error, not a crash. Timings are not asserted (shared CPUs), only that
//! they are finite and positive.

use std::sync::OnceLock;

use kiln::bench::cli::{run_on, BenchArgs};
use kiln::bench::kernels::{run_family, Family, SweepOptions};
use kiln::bench::peak::Peak;
use kiln::bench::timing::Timer;
use kiln::bench::train::{bench_train, TrainBenchOptions};
use kiln::{Gpu, GpuOptions};

/// One device for the whole binary, with WebGPU's default limits (as the
/// kernel tests), so that what passes here fits a browser too.
fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let opts = GpuOptions {
            limits: kiln::runtime::LimitsPolicy::WebGpuDefault,
            ..GpuOptions::from_env().expect("KILN_* environment")
        };
        pollster::block_on(Gpu::new(opts)).expect("a GPU adapter (lavapipe in CI)")
    })
}

fn tiny(f: Family) -> &'static str {
    match f {
        Family::Matmul => "16x24x8",
        Family::Attention => "1x2x8x4",
        Family::Layernorm | Family::Softmax | Family::Reduce => "6x10",
        Family::Gelu | Family::Adamw => "100",
        Family::Crossentropy => "5x30",
        Family::Embedding => "2x3x11x8",
    }
}

#[test]
fn every_family_runs_a_tiny_shape_with_finite_numbers() {
    let gpu = gpu();
    let peak = Peak {
        gflops: Some(1000.0),
        gbps: Some(100.0),
        source: "test".into(),
    };
    for f in Family::ALL {
        let mut opts = SweepOptions::for_gpu(gpu);
        opts.sizes = Some(f.parse_sizes(tiny(f)).unwrap());
        opts.measure.warmup = 0;
        opts.measure.iters = 1;
        let mut seen = 0;
        let res = run_family(gpu, f, &opts, &peak, &mut |_| seen += 1).unwrap();
        assert!(res.failures.is_empty(), "{}: {:?}", f.name(), res.failures);
        assert!(!res.rows.is_empty(), "{}: no rows", f.name());
        assert_eq!(seen, res.rows.len());
        for r in &res.rows {
            let ctx = format!("{} {} {}", r.op, r.shape, r.variant);
            assert_eq!(r.family, f.name());
            assert!(r.median_ms.is_finite() && r.median_ms > 0.0, "{ctx}: {r:?}");
            assert!(r.flops > 0.0 && r.bytes > 0.0, "{ctx}");
            assert!(r.gflops.is_finite() && r.gflops > 0.0, "{ctx}");
            assert!(r.gbps.is_finite() && r.gbps > 0.0, "{ctx}");
            let pf = r.pct_peak_flops.expect("peak given");
            assert!((pf - 100.0 * r.gflops / 1000.0).abs() < 1e-9, "{ctx}");
            assert!(r.pct_peak_bw.is_some(), "{ctx}");
            assert!(r.dispatches >= 1 && r.runs == 1, "{ctx}");
            assert!(r.default, "{ctx}: without --variant only defaults run");
        }
    }
}

#[test]
fn matmul_variant_all_marks_the_default_and_summarises_classes() {
    let gpu = gpu();
    let mut opts = SweepOptions::for_gpu(gpu);
    opts.sizes = Some(Family::Matmul.parse_sizes("8x8x8").unwrap());
    opts.variant = Some("naive,direct reg 4x4".into());
    opts.measure.warmup = 0;
    opts.measure.iters = 1;
    let peak = Peak::unknown("test");
    let res = run_family(gpu, Family::Matmul, &opts, &peak, &mut |_| {}).unwrap();
    let names: Vec<&str> = res.rows.iter().map(|r| r.variant.as_str()).collect();
    assert_eq!(names, ["naive", "direct reg 4x4 vec4"], "{names:?}");
    assert!(res.rows.iter().all(|r| r.pct_peak_flops.is_none()));
    assert!(res
        .rows
        .iter()
        .all(|r| r.class == Some("skinny (M or N < 64)")));
    let classes = kiln::bench::kernels::matmul_class_summary(&res.rows);
    assert_eq!(classes.len(), 1);
    assert!(classes[0].fastest_ratio == 1.0 && classes[0].shapes == 1);
    // A name that matches nothing is an error, not an empty table.
    opts.variant = Some("no such kernel".into());
    let e = run_family(gpu, Family::Matmul, &opts, &peak, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("naive"), "{e}");
    // Families with one implementation say so.
    opts.variant = Some("fast".into());
    let e = run_family(gpu, Family::Gelu, &opts, &peak, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("one implementation"), "{e}");
}

fn args(v: &[&str]) -> BenchArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: BenchArgs,
    }
    let mut argv = vec!["bench"];
    argv.extend(v);
    Cli::try_parse_from(argv).expect("valid flags").a
}

#[test]
fn json_report_has_the_documented_shape() {
    let gpu = gpu();
    let a = args(&[
        "gelu",
        "train",
        "--sizes",
        "64",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--peak-gbps",
        "50",
        "--batch",
        "2",
        "--seq",
        "8",
        "--steps",
        "1",
        "--warmup-steps",
        "0",
        "--quiet",
    ]);
    let mut text = String::new();
    let report = run_on(gpu, &a, &mut |s| {
        text += s;
        text += "\n"
    })
    .unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(
        text.contains("### gelu") && text.contains("### train tiny"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(v["schema"], 1);
    let date = v["date"].as_str().unwrap();
    assert!(date.len() == 20 && date.ends_with('Z') && date.as_bytes()[10] == b'T');
    for k in [
        "name",
        "backend",
        "device_type",
        "driver",
        "driver_info",
        "describe",
    ] {
        assert!(v["adapter"][k].is_string(), "adapter.{k}");
    }
    assert!(["timestamp", "wall"].contains(&v["timer"].as_str().unwrap()));
    assert_eq!(v["peak"]["gbps"], 50.0);
    assert!(v["peak"]["source"]
        .as_str()
        .unwrap()
        .contains("--peak-gbps"));
    let rows = v["kernels"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "gelu forward and backward");
    for r in rows {
        for k in [
            "median_ms",
            "min_ms",
            "gflops",
            "gbps",
            "flops",
            "bytes",
            "pct_peak_bw",
        ] {
            assert!(
                r[k].as_f64().is_some_and(|x| x.is_finite() && x > 0.0),
                "{k}: {r}"
            );
        }
        assert_eq!(r["dims"], serde_json::json!([64]));
        assert_eq!(r["family"], "gelu");
        assert!(r["op"].is_string() && r["variant"].is_string() && r["default"].is_boolean());
    }
    let t = &v["train"];
    assert_eq!(t["preset"]["name"], "tiny");
    assert_eq!((t["batch"].as_u64(), t["seq"].as_u64()), (Some(2), Some(8)));
    for k in [
        "ms_per_step",
        "tokens_per_s",
        "cpu_encode_ms",
        "gflop_per_step",
    ] {
        assert!(
            t[k].as_f64().is_some_and(|x| x.is_finite() && x > 0.0),
            "train.{k}: {t}"
        );
    }
    assert!(t["dispatches_per_step"].as_u64().unwrap() > 50);
    let m = &t["memory"];
    let planned = m["activations_planned_bytes"].as_u64().unwrap();
    let naive = m["activations_naive_bytes"].as_u64().unwrap();
    assert!(0 < planned && planned < naive, "{m}");
    assert!(m["pool_peak_bytes"].as_u64().unwrap() >= m["trainer_bytes"].as_u64().unwrap());
    assert!(m["trainer_bytes"].as_u64().unwrap() >= planned);
    // Loss of random tokens at initialisation: near ln 256 = 5.55.
    let loss = t["loss"].as_f64().unwrap();
    assert!((loss - 256f64.ln()).abs() < 0.5, "loss {loss}");
}

#[test]
fn sizes_need_one_family_and_the_right_rank() {
    let gpu = gpu();
    let e = run_on(gpu, &args(&["--sizes", "64", "--quiet"]), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("exactly one kernel family"), "{e}");
    let e = Family::Attention.parse_sizes("8x12x1024").unwrap_err();
    assert!(e.to_string().contains("B×H×T×D"), "{e}");
    assert_eq!(
        Family::Matmul.parse_sizes("256, 8x768x3072").unwrap(),
        [vec![256; 3], vec![8, 768, 3072]]
    );
}

#[test]
fn a_model_beyond_the_adapter_limits_fails_clearly() {
    let gpu = gpu();
    // GPT-2's 50257×768 token table is 154 MB: more than WebGPU's default
    // 128 MiB storage binding (and lavapipe's), so no kernel could bind it.
    let o = TrainBenchOptions {
        preset: "gpt2-124m".into(),
        batch: Some(1),
        seq: Some(8),
        steps: 1,
        warmup: 0,
        timer: Timer::Wall,
        profile: false,
        seed: 1,
        attention: kiln::graph::AttentionImpl::Fused,
    };
    let limit = gpu.limits().max_storage_buffer_binding_size;
    if limit >= 50257 * 768 * 4 {
        eprintln!("skipped: this adapter binds {limit} bytes; gpt2-124m fits");
        return;
    }
    let e = bench_train(gpu, &o, &Peak::unknown("test"), &mut |_| {}).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("transformer.wte.weight") && msg.contains("max_storage_buffer_binding_size"),
        "{msg}"
    );
}
