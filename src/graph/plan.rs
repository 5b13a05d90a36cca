//! Memory planning: every planned tensor lives from the step that first
//! writes it to the step that last touches it; tensors whose lifetimes do
//! not overlap share a buffer ("slot"). A view has no memory of its own: its
//! reads and writes count for its base.
//!
//! At each step the step's new outputs get slots *before* the tensors it
//! last reads give theirs back, so no kernel ever reads and writes the same
//! buffer through two bindings (WebGPU forbids that aliasing).

use anyhow::{bail, Result};

use super::{Graph, Role, TensorId};

#[derive(Clone, Debug, Default)]
pub struct MemoryPlan {
    /// Slot index of each tensor (None for tensors not planned, views, or unused).
    pub slot_of: Vec<Option<usize>>,
    /// Bytes of each slot (the largest tensor it ever holds).
    pub slot_bytes: Vec<u64>,
    /// Live range [first, last] step of each planned tensor.
    pub live: Vec<Option<(usize, usize)>>,
}

impl MemoryPlan {
    /// Bytes of all slots together.
    pub fn planned_bytes(&self) -> u64 {
        self.slot_bytes.iter().sum()
    }
}

/// Whether `id` owns planned memory (a planned tensor that is not a view).
fn owns_planned(g: &Graph, id: TensorId) -> bool {
    let d = g.desc(id);
    d.role == Role::Planned && d.view.is_none()
}

/// Sum of the sizes of all planned tensors: what one buffer per tensor costs.
pub fn naive_bytes(g: &Graph) -> u64 {
    (0..g.tensors.len())
        .map(|i| TensorId(i as u32))
        .filter(|&id| owns_planned(g, id))
        .map(|id| g.desc(id).bytes())
        .sum()
}

/// Bytes of tensors that are not planned: parameters, their gradients,
/// inputs and outputs.
pub fn persistent_bytes(g: &Graph) -> u64 {
    g.tensors
        .iter()
        .filter(|t| t.role != Role::Planned && t.view.is_none())
        .map(|t| t.bytes())
        .sum()
}

pub fn plan(g: &Graph) -> Result<MemoryPlan> {
    let n = g.tensors.len();
    let mut live: Vec<Option<(usize, usize)>> = vec![None; n];
    for (i, s) in g.steps.iter().enumerate() {
        // Written first: a step that accumulates reads the old value, which
        // some earlier step must have written.
        for id in s.writes.iter().map(|&t| g.root(t)) {
            let e = &mut live[id.0 as usize];
            *e = Some(e.map_or((i, i), |(a, _)| (a, i)));
        }
        for (orig, id) in s.inputs().map(|t| (t, g.root(t))) {
            let e = &mut live[id.0 as usize];
            match e {
                Some((_, b)) => *b = i,
                None if owns_planned(g, id) => bail!(
                    "graph error: step {i} ({}) reads {} before anything writes it",
                    s.name,
                    g.desc(orig).name
                ),
                None => {}
            }
        }
    }
    for (i, l) in live.iter_mut().enumerate() {
        if !owns_planned(g, TensorId(i as u32)) {
            *l = None;
        }
    }

    // Tensors starting / ending at each step.
    let mut starts: Vec<Vec<TensorId>> = vec![Vec::new(); g.steps.len()];
    let mut ends: Vec<Vec<TensorId>> = vec![Vec::new(); g.steps.len()];
    for (i, l) in live.iter().enumerate() {
        if let Some((a, b)) = l {
            starts[*a].push(TensorId(i as u32));
            ends[*b].push(TensorId(i as u32));
        }
    }

    let mut slot_of = vec![None; n];
    let mut slot_bytes: Vec<u64> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    for step in 0..g.steps.len() {
        // Largest first, so big tensors take big slots.
        let mut new = starts[step].clone();
        new.sort_by_key(|id| std::cmp::Reverse(g.desc(*id).bytes()));
        for id in new {
            let need = g.desc(id).bytes();
            // Best fit among free slots; otherwise grow the largest free one;
            // otherwise a new slot.
            let fit = free
                .iter()
                .enumerate()
                .filter(|(_, &s)| slot_bytes[s] >= need)
                .min_by_key(|(_, &s)| slot_bytes[s])
                .map(|(k, _)| k)
                .or_else(|| {
                    free.iter()
                        .enumerate()
                        .max_by_key(|(_, &s)| slot_bytes[s])
                        .map(|(k, _)| k)
                });
            let slot = match fit {
                Some(k) => free.swap_remove(k),
                None => {
                    slot_bytes.push(0);
                    slot_bytes.len() - 1
                }
            };
            slot_bytes[slot] = slot_bytes[slot].max(need);
            slot_of[id.0 as usize] = Some(slot);
        }
        let mut gone = ends[step].clone();
        gone.sort();
        for id in gone {
            if let Some(s) = slot_of[id.0 as usize] {
                free.push(s);
            }
        }
    }
    Ok(MemoryPlan {
        slot_of,
        slot_bytes,
        live,
    })
}
