//! Unit tests of the graph machinery that need no GPU: what autodiff
//! emits for fan-out, tied weights, frozen parameters and several losses,
//! and what the planner does with lifetimes and views.

use super::plan::plan;
use super::*;
use crate::ops::Activation;

fn param(g: &mut Graph, name: &str, shape: &[usize]) -> TensorId {
    g.param(name, shape, Init::Zeros).unwrap()
}

/// Steps that write or accumulate into `t`, by name and whether they add.
fn contributions(g: &Graph, t: TensorId) -> Vec<(&'static str, bool)> {
    g.steps
        .iter()
        .filter_map(|s| {
            if s.accumulates.contains(&t) {
                Some((s.name, true))
            } else if s.writes.contains(&t) {
                Some((s.name, false))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn fan_out_creates_the_gradient_once_then_adds_into_it() {
    // x feeds two linears: dx = W1ᵀ·dy1 (fresh) + W2ᵀ·dy2 (accumulated).
    let mut g = Graph::new(GraphOptions::default());
    let x = param(&mut g, "x", &[3, 4]);
    let w1 = param(&mut g, "w1", &[4, 2]);
    let w2 = param(&mut g, "w2", &[4, 2]);
    let ids = g.input("t", &[3], DType::I32);
    let a = g.linear(x, w1, None, false).unwrap();
    let b = g.linear(x, w2, None, false).unwrap();
    let s = g.add(a, b).unwrap();
    let loss = g.cross_entropy(s, ids, -100).unwrap();
    g.backward(&[(loss, 1.0)], 1.0).unwrap();
    let dx = g.param_grads[&x];
    // A parameter's gradient is zeroed per step: every contribution adds.
    assert_eq!(
        contributions(&g, dx),
        vec![("matmul", true), ("matmul", true)]
    );
    // The add passed its gradient through to its first operand (no copy);
    // the second operand cannot share that tensor and gets one copy.
    assert_eq!(g.steps.iter().filter(|s| s.name == "copy").count(), 1);
    // The input needs no gradient: nothing reads or writes one.
    assert!(g.tensors.iter().all(|t| t.name != "grad.t"));
}

#[test]
fn activation_fan_out_accumulates_in_a_fixed_order() {
    let mut g = Graph::new(GraphOptions::default());
    let x = param(&mut g, "x", &[2, 4]);
    let w = param(&mut g, "w", &[4, 4]);
    let ids = g.input("t", &[2], DType::I32);
    let h = g.activation(x, Activation::GeluTanh);
    let a = g.linear(h, w, None, false).unwrap();
    let b = g.linear(h, w, None, true).unwrap(); // w used twice: tied
    let s = g.add(a, b).unwrap();
    let loss = g.cross_entropy(s, ids, -100).unwrap();
    g.backward(&[(loss, 1.0)], 1.0).unwrap();
    let dh = g
        .tensors
        .iter()
        .position(|t| t.name == format!("grad.{}", g.name(h)))
        .map(|i| TensorId(i as u32))
        .expect("h has a gradient");
    // First contribution overwrites, the second adds (β = 1 matmul).
    assert_eq!(
        contributions(&g, dh),
        vec![("matmul", false), ("matmul", true)]
    );
    // The tied weight gets both contributions into its one gradient.
    let dw = g.param_grads[&w];
    assert_eq!(
        contributions(&g, dw),
        vec![("matmul", true), ("matmul", true)]
    );
}

#[test]
fn frozen_parameters_and_inputs_get_nothing() {
    let mut g = Graph::new(GraphOptions::default());
    let x = g.input("x", &[2, 4], DType::F32);
    let w1 = param(&mut g, "w1", &[4, 4]);
    let w2 = param(&mut g, "w2", &[4, 3]);
    let ids = g.input("t", &[2], DType::I32);
    let h = g.linear(x, w1, None, false).unwrap();
    let y = g.linear(h, w2, None, false).unwrap();
    let loss = g.cross_entropy(y, ids, -100).unwrap();
    g.freeze(|n| n == "w1");
    g.backward(&[(loss, 1.0)], 1.0).unwrap();
    assert!(!g.param_grads.contains_key(&w1), "frozen: no gradient");
    assert!(g.param_grads.contains_key(&w2));
    // Nothing depends on a trainable parameter before w2: no dh, no dx.
    assert!(g.tensors.iter().all(|t| !t.name.starts_with("grad.w1")));
    let backward_matmuls = g.steps[g.n_forward_steps..]
        .iter()
        .filter(|s| s.name == "matmul")
        .count();
    assert_eq!(backward_matmuls, 1, "only dW2 is computed");
}

#[test]
fn several_weighted_losses_seed_their_ops() {
    let mut g = Graph::new(GraphOptions::default());
    let x = param(&mut g, "x", &[3, 5]);
    let t1 = g.input("t1", &[3], DType::I32);
    let t2 = g.input("t2", &[3], DType::I32);
    let l1 = g.cross_entropy(x, t1, -100).unwrap();
    let l2 = g.cross_entropy(x, t2, -100).unwrap();
    g.backward(&[(l1, 0.25), (l2, 0.75)], 0.5).unwrap();
    // Both losses are kept for reading; each cross-entropy writes its own
    // d(logits) in the forward pass, the second is added to the first.
    assert_eq!(g.desc(l1).role, Role::Output);
    assert_eq!(g.desc(l2).role, Role::Output);
    let dx = g.param_grads[&x];
    let adds = contributions(&g, dx);
    assert_eq!(adds, vec![("add_inplace", true), ("add_inplace", true)]);
    assert!(g.backward(&[(l1, 1.0)], 1.0).is_err(), "lowered once only");
}

#[test]
fn planner_reuses_memory_only_between_disjoint_lifetimes() {
    let mut g = Graph::new(GraphOptions::default());
    let x = param(&mut g, "x", &[4, 8]);
    let ids = g.input("t", &[4], DType::I32);
    let mut h = x;
    for _ in 0..4 {
        h = g.activation(h, Activation::GeluErf);
    }
    let loss = g.cross_entropy(h, ids, -100).unwrap();
    g.backward(&[(loss, 1.0)], 1.0).unwrap();
    let p = plan(&g).unwrap();
    // No two tensors that share a slot are alive at the same step.
    for i in 0..g.tensors.len() {
        for j in i + 1..g.tensors.len() {
            if let (Some(a), Some(b), Some((a0, a1)), Some((b0, b1))) =
                (p.slot_of[i], p.slot_of[j], p.live[i], p.live[j])
            {
                if a == b {
                    assert!(
                        a1 < b0 || b1 < a0,
                        "{} and {} share slot {a} while both alive",
                        g.tensors[i].name,
                        g.tensors[j].name
                    );
                }
            }
        }
    }
    // A chain of activations reuses memory: fewer slots than planned tensors.
    let planned = g
        .tensors
        .iter()
        .filter(|t| t.role == Role::Planned && t.view.is_none())
        .count();
    assert!(
        p.slot_bytes.len() < planned,
        "{} slots for {planned}",
        p.slot_bytes.len()
    );
}

#[test]
fn a_view_keeps_its_base_alive_and_has_no_memory_of_its_own() {
    let mut g = Graph::new(GraphOptions::default());
    let x = param(&mut g, "x", &[2, 3, 4]);
    let w = param(&mut g, "w", &[4, 4]);
    let ids = g.input("t", &[6], DType::I32);
    let h = g.activation(x, Activation::GeluErf);
    let flat = g.reshape(h, &[6, 4]).unwrap();
    let y = g.linear(flat, w, None, false).unwrap();
    let loss = g.cross_entropy(y, ids, -100).unwrap();
    g.forward_only().unwrap();
    let p = plan(&g).unwrap();
    assert_eq!(p.slot_of[flat.0 as usize], None, "a view has no slot");
    assert_eq!(g.root(flat), h);
    // h lives until the matmul reads it through the view.
    let matmul = g.steps.iter().position(|s| s.name == "matmul").unwrap();
    assert_eq!(p.live[h.0 as usize].unwrap().1, matmul);
    // A view must start on a 256-byte boundary.
    assert!(g.view(h, 1, &[4], "bad").is_err());
    let _ = loss;
}

#[test]
fn reading_before_writing_is_a_planning_error() {
    let mut g = Graph::new(GraphOptions::default());
    let x = g.planned("never_written", &[4]);
    let y = g.planned("y", &[4]);
    g.steps.push(
        step::Step::new("copy", |_, _| Ok(Vec::new()))
            .reads([x])
            .writes([y]),
    );
    let e = plan(&g).unwrap_err().to_string();
    assert!(
        e.contains("never_written") && e.contains("before anything writes it"),
        "{e}"
    );
}

#[test]
fn parameters_are_declared_once_and_decay_by_rank() {
    let mut g = Graph::new(GraphOptions::default());
    let w = g.param("w", &[3, 4], Init::Normal(0.02)).unwrap();
    let b = g.param("b", &[4], Init::Zeros).unwrap();
    assert_eq!(
        g.param("w", &[3, 4], Init::Zeros).unwrap(),
        w,
        "tied: same tensor"
    );
    assert!(
        g.param("w", &[4, 3], Init::Zeros).is_err(),
        "same name, other shape"
    );
    assert!(g.param_info(w).unwrap().decay && !g.param_info(b).unwrap().decay);
    let e = g
        .param_with("e", &[5, 4], Init::Zeros, Some(false))
        .unwrap();
    assert!(!g.param_info(e).unwrap().decay, "overridable");
    assert!(g.param("z", &[0, 4], Init::Zeros).is_err());
}
