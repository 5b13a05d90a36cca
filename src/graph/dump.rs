//! A readable dump of a graph: tensors with shape, bytes and buffer slot,
//! then every kernel step with what it reads, writes and accumulates into.

use std::fmt::Write;

use super::plan::{naive_bytes, persistent_bytes, MemoryPlan};
use super::{Graph, Role, TensorId};

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0))
}

impl Graph {
    /// The graph as text; with a plan, also buffer assignments and totals.
    pub fn dump(&self, plan: Option<&MemoryPlan>) -> String {
        let mut s = String::new();
        let tname = |id: TensorId| {
            let d = self.desc(id);
            format!("{}#{}{:?}", d.name, id.0, d.shape)
        };
        let _ = writeln!(
            s,
            "graph: {} tensors, {} nodes, {} steps ({} forward), {} parameters",
            self.tensors.len(),
            self.nodes.len(),
            self.steps.len(),
            self.n_forward_steps,
            self.num_params()
        );
        let _ = writeln!(s, "\ntensors:");
        for (i, t) in self.tensors.iter().enumerate() {
            let place = match (t.view, t.role, plan.and_then(|p| p.slot_of[i])) {
                (Some(v), _, _) => format!("view of #{} at {}", v.base.0, v.offset),
                (None, Role::Planned, Some(slot)) => {
                    let (a, b) = plan.unwrap().live[i].unwrap_or((0, 0));
                    format!("slot {slot:<3} live {a}..={b}")
                }
                (None, Role::Planned, None) => "unused".to_string(),
                (None, r, _) => format!("{r:?}").to_lowercase(),
            };
            let _ = writeln!(
                s,
                "  #{i:<4} {:<40} {:<18} {:>4} {:>12} B  {place}",
                t.name,
                format!("{:?}", t.shape),
                t.dtype.name(),
                t.bytes()
            );
        }
        let _ = writeln!(s, "\nsteps:");
        for (i, st) in self.steps.iter().enumerate() {
            let phase = if i < self.n_forward_steps {
                "fwd"
            } else {
                "bwd"
            };
            let reads: Vec<String> = st.reads.iter().map(|t| tname(*t)).collect();
            let mut writes: Vec<String> = st.writes.iter().map(|t| tname(*t)).collect();
            writes.extend(st.accumulates.iter().map(|t| format!("+={}", tname(*t))));
            let _ = writeln!(
                s,
                "  {i:<4} {phase} {:<18} {} -> {}",
                st.name,
                reads.join(", "),
                writes.join(", ")
            );
        }
        if let Some(p) = plan {
            let _ = writeln!(
                s,
                "\nmemory: planned {} in {} buffers vs {} with one buffer per tensor ({:.1}x less); persistent (params, grads, io) {}",
                mib(p.planned_bytes()),
                p.slot_bytes.len(),
                mib(naive_bytes(self)),
                naive_bytes(self) as f64 / p.planned_bytes().max(1) as f64,
                mib(persistent_bytes(self))
            );
        }
        s
    }
}
