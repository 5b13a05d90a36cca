//! The forward computation of a graph on the CPU in f64, node by node with
//! each op's reference: what the graph-level gradient check differentiates
//! by central finite differences.

use std::collections::HashMap;

use anyhow::{anyhow, ensure, Context, Result};

use super::op::HostTensor;
use super::{Graph, TensorId};

/// Values of tensors by id.
pub type Values = HashMap<TensorId, HostTensor>;

/// Evaluates every forward node in order. `values` must hold every
/// parameter and input the graph reads; it receives every node output.
pub fn evaluate(g: &Graph, values: &mut Values) -> Result<()> {
    let n = if g.steps.is_empty() {
        g.nodes.len()
    } else {
        g.n_forward_nodes
    };
    for (i, node) in g.nodes[..n].iter().enumerate() {
        let ins: Vec<&HostTensor> = node
            .inputs
            .iter()
            .map(|id| {
                values
                    .get(id)
                    .ok_or_else(|| anyhow!("no value for {} (node {i})", g.name(*id)))
            })
            .collect::<Result<_>>()?;
        let outs = node
            .op
            .reference(&ins)
            .with_context(|| format!("reference of node {i} ({})", node.op.name()))?;
        ensure!(
            outs.len() >= node.outputs.len(),
            "reference of {} gave {} outputs, the node has {}",
            node.op.name(),
            outs.len(),
            node.outputs.len()
        );
        for (id, v) in node.outputs.iter().zip(outs) {
            ensure!(
                v.shape.iter().product::<usize>() == g.desc(*id).numel(),
                "reference of {} gave {:?} for {} {:?}",
                node.op.name(),
                v.shape,
                g.name(*id),
                g.shape(*id)
            );
            values.insert(*id, v);
        }
    }
    Ok(())
}

/// The total loss Σ wᵢ·lossᵢ of a lowered training graph, evaluated on the CPU.
pub fn total_loss(g: &Graph, values: &mut Values) -> Result<f64> {
    evaluate(g, values)?;
    let mut total = 0.0;
    for (l, w) in &g.losses {
        total += *w as f64 * values[l].data[0];
    }
    Ok(total)
}
