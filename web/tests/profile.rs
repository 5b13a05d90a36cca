//! Where a training step's time goes on this adapter, kernel by kernel: the
//! `tiny` preset's step timed dispatch by dispatch (each submitted alone and
//! awaited, so per-dispatch overhead is included). Not a correctness test,
//! so ignored by default:
//!
//! ```sh
//! cargo test -p kiln-web --test profile -- --ignored --nocapture            # native
//! cargo test --target wasm32-unknown-unknown $WASM_BUILD_STD -p kiln-web \
//!     --test profile -- --include-ignored                                    # browser
//! ```

mod common;

use common::*;
use kiln::graph::exec::Executor;
use kiln::model::{build, BuildOptions};
use kiln::Gpu;
use kiln_web::Session;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

#[cfg(target_arch = "wasm32")]
fn now_ms() -> f64 {
    kiln_web::bindings::now_ms()
}

#[cfg(not(target_arch = "wasm32"))]
fn now_ms() -> f64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static T0: OnceLock<Instant> = OnceLock::new();
    T0.get_or_init(Instant::now).elapsed().as_secs_f64() * 1000.0
}

async fn profile_tiny_step(g: Gpu) {
    log(&format!("profiling on {}", g.describe()));
    let mut s = Session::new(&g, "tiny", None).unwrap();
    let t0 = now_ms();
    s.steps(1).await.unwrap();
    log(&format!(
        "first step (compiles every kernel): {:.0} ms",
        now_ms() - t0
    ));
    let n = 3;
    let t0 = now_ms();
    s.steps(n).await.unwrap();
    let per_step = (now_ms() - t0) / n as f64;
    log(&format!(
        "steady step: {per_step:.0} ms = {:.0} tokens/s",
        s.tokens_per_step() as f64 / per_step * 1000.0
    ));

    // The training graph exactly as the trainer builds it (forward + backward).
    let run = s.run();
    let model = run.model.as_ref();
    let opts = BuildOptions {
        training: true,
        attention: s.config().attention_for(&g).unwrap(),
        ..Default::default()
    };
    let built = build(model, &run.data.layout(), &opts).unwrap();
    let exec = Executor::new(&g, built.graph, &run.trainer.params).unwrap();
    let probe = zeros(&g, &[1]);
    let mut rows: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
    let reps = 2;
    for rep in 0..=reps {
        for d in exec.step_dispatches().iter().flatten() {
            g.submit(&[d]);
            read(&g, &probe).await;
            if rep == 0 {
                continue; // warm-up: pipelines compiled, caches hot
            }
            let t0 = now_ms();
            g.submit(&[d]);
            read(&g, &probe).await;
            let e = rows.entry(d.label.clone()).or_default();
            e.0 += (now_ms() - t0) / reps as f64;
            e.1 += 1;
        }
    }
    let mut v: Vec<_> = rows.into_iter().collect();
    v.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let total: f64 = v.iter().map(|r| r.1 .0).sum();
    log(&format!(
        "forward+backward, {} dispatches one by one: {total:.0} ms",
        exec.dispatch_count()
    ));
    for (label, (ms, count)) in &v {
        log(&format!(
            "{ms:9.1} ms {:5.1}%  ×{:<3} {label}",
            100.0 * ms / total,
            count / reps
        ));
    }
}

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen_test::wasm_bindgen_test]
#[ignore]
async fn tiny_step_profile() {
    profile_tiny_step(gpu().await).await;
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
#[ignore]
fn tiny_step_profile() {
    pollster::block_on(async { profile_tiny_step(gpu().await).await });
}
