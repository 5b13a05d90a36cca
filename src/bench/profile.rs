//! Where a graph's time goes: every step timed on its own, summed by kernel.

use std::collections::BTreeMap;

use anyhow::Result;

use super::timing::time_dispatches;
use crate::graph::Executor;
use crate::runtime::Gpu;

/// Time of one kind of step (e.g. `matmul`), over a whole pass.
#[derive(Clone, Debug)]
pub struct KernelShare {
    pub name: String,
    pub steps: usize,
    pub ms: f64,
    pub gflop: f64,
}

/// Times each step of `exec` in isolation (`iters` runs, median) and sums
/// by step kind, largest first. Running steps out of order leaves garbage in
/// the activations: use a throwaway executor.
pub fn profile_steps(gpu: &Gpu, exec: &Executor, iters: usize) -> Result<Vec<KernelShare>> {
    let mut by: BTreeMap<String, KernelShare> = BTreeMap::new();
    for (step, ds) in exec.graph.steps.iter().zip(exec.step_dispatches()) {
        let refs: Vec<_> = ds.iter().collect();
        let t = time_dispatches(gpu, &refs, 1, iters)?;
        let e = by.entry(step.name.to_string()).or_insert(KernelShare {
            name: step.name.to_string(),
            steps: 0,
            ms: 0.0,
            gflop: 0.0,
        });
        e.steps += 1;
        e.ms += t.median_ms;
        e.gflop += step.flops as f64 / 1e9;
    }
    let mut v: Vec<KernelShare> = by.into_values().collect();
    v.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(v)
}
