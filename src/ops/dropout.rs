//! Dropout with a counter-based generator: y = x·mask/(1 − p) in training
//! graphs ([`GraphOptions::dropout`](crate::graph::GraphOptions) true);
//! evaluation graphs get x itself (no node, no kernel).
//!
//! # The RNG contract
//!
//! Every dropout node of a graph reads one shared input tensor, created on
//! first use by [`Graph::rng_input`]: named `"kiln.rng"` ([`RNG_INPUT`]),
//! u32 [4] = `[seed lo, seed hi, counter lo, counter hi]`:
//!
//! - `seed`: the run's 64-bit seed (the same for the whole run);
//! - `counter`: a 64-bit micro-batch counter, unique per forward pass of
//!   the run: `optimizer_step · accumulation_steps + micro_batch` (0-based),
//!   so every micro-batch of every step draws new masks, and a resumed run
//!   computes the same counter, hence the same masks, as the uninterrupted
//!   one.
//!
//! The trainer writes it before each micro-batch's forward pass (the
//! forward and backward of one micro-batch are one submission and read the
//! same value). The mask of element i of the k-th dropout node of the graph
//! (its `stream`, in creation order) is word i mod 4 of
//! Philox4x32-10(counter = (i / 4, k, counter lo, counter hi), key = (seed
//! lo, seed hi)) compared with round(p·2³²): the same inputs give the same
//! mask on every device and run, and no two nodes or micro-batches share
//! one. A graph whose `kiln.rng` is never written reads zeros: valid, but
//! the same mask every step.
//!
//! The backward recomputes the mask (the same kernel applied to dy) rather
//! than storing it: Philox costs ~10 multiplies per 4 elements, far less
//! than writing and reading back a mask tensor, and nothing stays alive
//! between the passes but the 16-byte rng input.

use anyhow::{ensure, Result};

use crate::graph::autodiff::Backward;
use crate::graph::op::{HostTensor, NodeIo, Op};
use crate::graph::step::{Lowering, Step};
use crate::graph::{Graph, Role, TensorId};
use crate::kernels::dropout::{self, DropoutSpec};
use crate::reference::dropout as r;
use crate::runtime::{numel, DType};

/// The name of the graph's RNG input (see the module docs).
pub const RNG_INPUT: &str = "kiln.rng";

#[derive(Debug, Clone)]
pub struct Dropout {
    pub p: f32,
    /// Which dropout node of the graph this is (creation order).
    pub stream: u32,
    spec: DropoutSpec,
}

impl Graph {
    /// The graph's RNG input, u32 [4] named "kiln.rng", created on first
    /// call (see [`crate::ops::dropout`] for what the trainer writes).
    pub fn rng_input(&mut self) -> TensorId {
        let found = self
            .tensors
            .iter()
            .position(|t| t.name == RNG_INPUT && t.role == Role::Input);
        match found {
            Some(i) => TensorId(i as u32),
            None => self.input(RNG_INPUT, &[4], DType::U32),
        }
    }

    /// Dropout with drop probability `p` ∈ [0, 1): in a training graph
    /// (`GraphOptions::dropout`) y = x·mask/(1 − p); otherwise, or when
    /// p = 0, `x` itself.
    pub fn dropout(&mut self, x: TensorId, p: f32) -> Result<TensorId> {
        let spec = DropoutSpec::new(p)?;
        if !self.options.dropout || p == 0.0 {
            return Ok(x);
        }
        let stream = self
            .nodes
            .iter()
            .filter(|n| n.op.name() == "dropout")
            .count() as u32;
        let rng = self.rng_input();
        let shape = self.shape(x).to_vec();
        let y = self.planned(format!("{}.dropout", self.name(x)), &shape);
        self.push_node(Dropout { p, stream, spec }, &[x, rng], &[y]);
        Ok(y)
    }
}

fn step(
    src: TensorId,
    rng: TensorId,
    dst: TensorId,
    spec: DropoutSpec,
    stream: u32,
    n: u64,
) -> Step {
    Step::new("dropout", move |gpu, r| {
        Ok(vec![dropout::apply(
            gpu,
            &r(src),
            &r(rng),
            &r(dst),
            spec,
            stream,
        )?])
    })
    .reads([src, rng])
    .writes([dst])
    .flops(n)
}

impl Op for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn lower(&self, io: &NodeIo, cx: &mut Lowering<'_>) -> Result<()> {
        let (x, rng, y) = (io.input(0), io.input(1), io.output(0));
        let n = numel(cx.shape(x)) as u64;
        cx.push(step(x, rng, y, self.spec, self.stream, n));
        Ok(())
    }

    fn backward(&mut self, io: &NodeIo, cx: &mut Backward<'_>) -> Result<()> {
        let (x, rng, y) = (io.input(0), io.input(1), io.output(0));
        let Some(dy) = cx.grad_tensor(y)? else {
            return Ok(());
        };
        if !cx.needs_grad(x) {
            return Ok(());
        }
        let (spec, stream) = (self.spec, self.stream);
        let n = numel(cx.g.shape(x)) as u64;
        cx.contribute_overwrite(x, |dx| step(dy, rng, dx, spec, stream, n))
    }

    fn reference(&self, ins: &[&HostTensor]) -> Result<Vec<HostTensor>> {
        let (x, rng) = (ins[0], ins[1]);
        ensure!(rng.numel() == 4, "dropout: the rng input must hold 4 words");
        let words = [0, 1, 2, 3].map(|i| rng.data[i] as u32);
        let y = r::apply(
            &x.data,
            words,
            self.stream,
            self.spec.threshold,
            self.spec.scale as f64,
        );
        Ok(vec![HostTensor::new(&x.shape, y)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{Graph, GraphOptions, Init};
    use crate::runtime::DType;

    fn graph(dropout: bool) -> Graph {
        Graph::new(GraphOptions {
            dropout,
            ..Default::default()
        })
    }

    #[test]
    fn dropout_is_x_itself_in_evaluation_graphs_and_at_p_zero() {
        let mut g = graph(false);
        let x = g.param("x", &[2, 3], Init::Zeros).unwrap();
        assert_eq!(g.dropout(x, 0.5).unwrap(), x);
        assert!(g.nodes.is_empty() && g.inputs().is_empty());
        let mut g = graph(true);
        let x = g.param("x", &[2, 3], Init::Zeros).unwrap();
        assert_eq!(g.dropout(x, 0.0).unwrap(), x);
        assert!(g.nodes.is_empty());
        assert!(g.dropout(x, 1.0).is_err() && g.dropout(x, -0.1).is_err());
    }

    #[test]
    fn dropout_nodes_share_one_rng_input_and_get_their_own_streams() {
        let mut g = graph(true);
        let x = g.param("x", &[2, 3], Init::Zeros).unwrap();
        let a = g.dropout(x, 0.1).unwrap();
        let b = g.dropout(a, 0.2).unwrap();
        assert_ne!(a, b);
        let inputs = g.inputs();
        assert_eq!(inputs.len(), 1);
        let (name, rng) = &inputs[0];
        assert_eq!(name, super::RNG_INPUT);
        assert_eq!((g.shape(*rng), g.dtype(*rng)), (&[4usize][..], DType::U32));
        assert_eq!(g.rng_input(), *rng);
        let streams: Vec<String> = g.nodes.iter().map(|n| format!("{:?}", n.op)).collect();
        assert!(streams[0].contains("stream: 0") && streams[1].contains("stream: 1"));
        assert!(g.nodes.iter().all(|n| n.inputs[1] == *rng));
    }
}
