//! A graph isomorphism network with edge features (GIN-E, Hu et al.,
//! "Strategies for Pre-training Graph Neural Networks", ICLR 2020) for
//! molecules packed many to a batch.
//!
//! Per layer: every directed edge u→v carries the message h[u] + bond
//! embedding (type + in-ring); messages are summed at their destination by a
//! segment sum (edges sorted by destination, reduced in order: no atomics);
//! an MLP (Linear C→2C, ReLU, Linear 2C→C) and a LayerNorm update the node,
//! followed by ReLU except after the last layer. Each node has a self-loop
//! edge (type "self"), so its own state is part of its sum, as in Hu et al.
//! The input state of an atom is the sum of five embeddings (element,
//! degree, formal charge, hydrogen count, aromatic flag).
//!
//! Heads, by `task`:
//! - `attr_mask`: a linear layer on each node predicts the element of masked
//!   atoms (`atom_labels`, −100 where not predicted); accuracy is reported.
//! - `regression`: mean (or sum) pooling of the nodes of each graph and a
//!   linear layer to `num_labels` targets, mean squared error against
//!   standardised `labels`.
//!
//! Inputs for a batch of `G` graph slots and `N` node / `E` edge slots
//! (`Dims { batch: G, seq }`: N = G·seq, E = 3N): `atom_element`,
//! `atom_degree`, `atom_charge`, `atom_hydrogens`, `atom_aromatic` [N] i32
//! (−1 in unused slots: a zero embedding), `edge_src`, `edge_dst`,
//! `bond_type`, `bond_in_ring` [E] i32 (unused edges have `edge_dst` −1 and
//! are dropped), `node_graph` [N] i32 (graph slot of each node, −1 unused),
//! `graph_weight` [G] f32 (1/nodes of the graph for mean pooling, 0 for an
//! empty slot); for a loss `atom_labels` [N] i32 or `labels` [G, L] f32 with
//! `label_weight` [G] f32 (√(G/graphs) for a used slot, 0 for an empty one,
//! so the loss is the mean over real graphs).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, ensure, Result};
use serde::{Deserialize, Serialize};

use super::vb::{LayerNorm, Linear, Vb};
use super::{Dims, Model, Outputs};
use crate::data::{Batch, InputSpec};
use crate::graph::{Graph, Init, TensorId};
use crate::ops::Activation;
use crate::runtime::DType;

/// The atom features, in input order, and the bond features.
pub const ATOM_FEATURES: [&str; 5] = ["element", "degree", "charge", "hydrogens", "aromatic"];
pub const BOND_FEATURES: [&str; 2] = ["type", "in_ring"];

/// Edge slots per node slot: a self-loop plus two directed edges per bond,
/// with bonds ≤ atoms + rings; the packer stops filling a batch before
/// either budget is exceeded.
pub const EDGES_PER_NODE: usize = 3;

/// The inputs of a batch of `n` node, `e` edge and `g` graph slots, in
/// name order (as a [`Batch`] lists them); `labels`: the regression targets
/// per graph, `None` for attribute masking.
pub fn input_specs(n: usize, e: usize, g: usize, labels: Option<usize>) -> Vec<InputSpec> {
    let mut v: Vec<InputSpec> = ATOM_FEATURES
        .iter()
        .map(|f| InputSpec::new(&format!("atom_{f}"), &[n], DType::I32))
        .collect();
    for name in ["edge_src", "edge_dst", "bond_type", "bond_in_ring"] {
        v.push(InputSpec::new(name, &[e], DType::I32));
    }
    v.push(InputSpec::new("node_graph", &[n], DType::I32));
    v.push(InputSpec::new("graph_weight", &[g], DType::F32));
    match labels {
        None => v.push(InputSpec::new("atom_labels", &[n], DType::I32)),
        Some(l) => {
            v.push(InputSpec::new("labels", &[g, l], DType::F32));
            v.push(InputSpec::new("label_weight", &[g], DType::F32));
        }
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// `config.json` of a Kiln GIN (`model_type` "gin").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GinConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    /// Rows of each atom feature table (in [`ATOM_FEATURES`] order), the
    /// mask value included.
    pub atom_vocab_sizes: Vec<usize>,
    /// Rows of each bond feature table ([`BOND_FEATURES`] order).
    pub bond_vocab_sizes: Vec<usize>,
    /// Element symbols by element id (the feature vocabulary).
    #[serde(default)]
    pub element_symbols: Vec<String>,
    /// `attr_mask` or `regression`.
    pub task: String,
    /// Regression targets per graph.
    #[serde(default = "one")]
    pub num_labels: usize,
    #[serde(default)]
    pub label_names: Vec<String>,
    /// Standardisation of the regression targets: a prediction p stands
    /// for p·std + mean in the target's units.
    #[serde(default)]
    pub target_mean: Vec<f32>,
    #[serde(default)]
    pub target_std: Vec<f32>,
    /// `mean` or `sum`.
    #[serde(default = "mean")]
    pub pooling: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f32,
    #[serde(default = "range")]
    pub initializer_range: f32,
}

fn one() -> usize {
    1
}
fn mean() -> String {
    "mean".into()
}
fn eps() -> f32 {
    1e-5
}
fn range() -> f32 {
    0.02
}

impl GinConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.hidden_size > 0 && self.num_layers > 0,
            "GIN config: hidden_size and num_layers must be positive"
        );
        super::check_size(
            "GIN config",
            self.num_layers,
            self.hidden_size,
            2 * self.hidden_size,
            self.atom_vocab_sizes.iter().sum(),
        )?;
        ensure!(
            self.atom_vocab_sizes.len() == ATOM_FEATURES.len()
                && self.atom_vocab_sizes.iter().all(|&v| v > 0),
            "GIN config: atom_vocab_sizes must give {} positive sizes ({}), got {:?}",
            ATOM_FEATURES.len(),
            ATOM_FEATURES.join(", "),
            self.atom_vocab_sizes
        );
        ensure!(
            self.bond_vocab_sizes.len() == BOND_FEATURES.len()
                && self.bond_vocab_sizes.iter().all(|&v| v > 0),
            "GIN config: bond_vocab_sizes must give {} positive sizes ({}), got {:?}",
            BOND_FEATURES.len(),
            BOND_FEATURES.join(", "),
            self.bond_vocab_sizes
        );
        match self.task.as_str() {
            "attr_mask" => {}
            "regression" => ensure!(
                self.num_labels > 0,
                "GIN config: a regression needs num_labels ≥ 1"
            ),
            other => bail!("GIN config: task {other:?}; expected attr_mask or regression"),
        }
        ensure!(
            matches!(self.pooling.as_str(), "mean" | "sum"),
            "GIN config: pooling {:?}; expected mean or sum",
            self.pooling
        );
        ensure!(
            self.target_mean.len() == self.target_std.len(),
            "GIN config: target_mean and target_std differ in length"
        );
        Ok(())
    }

    /// Rows of the element table (the mask id is the last).
    pub fn num_elements(&self) -> usize {
        self.atom_vocab_sizes[0]
    }
}

#[derive(Clone, Debug)]
pub struct Gin {
    pub cfg: GinConfig,
}

impl Gin {
    pub fn new(cfg: GinConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg })
    }

    pub fn from_config_json(v: &serde_json::Value) -> Result<Self> {
        let cfg: GinConfig = serde_json::from_value(v.clone())
            .map_err(|e| anyhow!("config.json is not a valid GIN config: {e}"))?;
        Self::new(cfg)
    }

    /// Node and edge slots of a batch of these dimensions.
    pub fn slots(d: Dims) -> (usize, usize) {
        let n = d.batch * d.seq.max(1);
        (n, EDGES_PER_NODE * n)
    }

    /// The encoder (`gnn.*`): node states [N, C] after the last layer.
    pub fn encode(&self, g: &mut Graph, inputs: &BTreeMap<String, TensorId>) -> Result<TensorId> {
        let c = &self.cfg;
        let get = |name: &str| {
            inputs
                .get(name)
                .copied()
                .ok_or_else(|| anyhow!("GIN needs the input `{name}` (see `kiln grads --help`)"))
        };
        let h_dim = c.hidden_size;
        let std = Init::Normal(c.initializer_range);
        let vb = Vb::root().pp("gnn");
        let mut h: Option<TensorId> = None;
        for (f, &rows) in ATOM_FEATURES.iter().zip(&c.atom_vocab_sizes) {
            let ids = get(&format!("atom_{f}"))?;
            // Embedding tables are not decayed (as BERT's and GPT-2's).
            let table = vb.pp("atom_embeddings").pp(f).param_decay(
                g,
                "weight",
                &[rows, h_dim],
                std,
                false,
            )?;
            let e = g.embedding(ids, table)?;
            h = Some(match h {
                None => e,
                Some(h) => g.add(h, e)?,
            });
        }
        let mut h = h.expect("five atom features");
        let n = g.shape(h)[0];
        let (src, dst) = (get("edge_src")?, get("edge_dst")?);
        let bond_ids = [get("bond_type")?, get("bond_in_ring")?];
        for l in 0..c.num_layers {
            let lb = vb.pp("layers").pp(l);
            let mut msg = g.embedding(src, h)?;
            for ((f, &rows), &ids) in BOND_FEATURES.iter().zip(&c.bond_vocab_sizes).zip(&bond_ids) {
                let table = lb.pp("bond_embeddings").pp(f).param_decay(
                    g,
                    "weight",
                    &[rows, h_dim],
                    std,
                    false,
                )?;
                let e = g.embedding(ids, table)?;
                msg = g.add(msg, e)?;
            }
            let agg = g.segment_sum(msg, dst, n)?;
            let mlp = lb.pp("mlp");
            let l1 = Linear::new(g, &mlp.pp(0), h_dim, 2 * h_dim, true, std)?;
            let l2 = Linear::new(g, &mlp.pp(2), 2 * h_dim, h_dim, true, std)?;
            let z = l1.forward(g, agg)?;
            let z = g.activation(z, Activation::Relu);
            let z = l2.forward(g, z)?;
            h = LayerNorm::new(g, &lb.pp("norm"), h_dim, c.layer_norm_eps)?.forward(g, z)?;
            if l + 1 < c.num_layers {
                h = g.activation(h, Activation::Relu);
            }
        }
        Ok(h)
    }
}

impl Model for Gin {
    fn architecture(&self) -> &'static str {
        if self.cfg.task == "attr_mask" {
            "GINForAttributeMasking"
        } else {
            "GINForGraphRegression"
        }
    }

    fn config_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(&self.cfg).expect("config serialises");
        v["model_type"] = "gin".into();
        v["architectures"] = serde_json::json!([self.architecture()]);
        v["atom_features"] = serde_json::json!(ATOM_FEATURES);
        v["bond_features"] = serde_json::json!(BOND_FEATURES);
        v
    }

    fn head_prefixes(&self) -> Vec<String> {
        vec!["atom_head.".into(), "graph_head.".into()]
    }

    fn describe(&self) -> String {
        let c = &self.cfg;
        let head = if c.task == "attr_mask" {
            format!("masked-atom head over {} elements", c.num_elements())
        } else {
            format!(
                "{} pooling, {} regression target(s)",
                c.pooling, c.num_labels
            )
        };
        format!(
            "GIN {} layers, {} dims, {head}",
            c.num_layers, c.hidden_size
        )
    }

    fn input_specs(&self, d: Dims) -> Vec<InputSpec> {
        let (n, e) = Self::slots(d);
        let labels = (self.cfg.task != "attr_mask").then_some(self.cfg.num_labels);
        input_specs(n, e, d.batch, labels)
    }

    fn forward(&self, g: &mut Graph, inputs: &BTreeMap<String, TensorId>) -> Result<Outputs> {
        let c = &self.cfg;
        let h = self.encode(g, inputs)?;
        let n = g.shape(h)[0];
        let std = Init::Normal(c.initializer_range);
        let mut out = Outputs::default();
        out.tensors.insert("node_states".into(), h);
        if c.task == "attr_mask" {
            let head = Linear::new(
                g,
                &Vb::root().pp("atom_head"),
                c.hidden_size,
                c.num_elements(),
                true,
                std,
            )?;
            let logits = head.forward(g, h)?;
            g.rename(logits, "logits");
            out.tensors.insert("logits".into(), logits);
            if let Some(&labels) = inputs.get("atom_labels") {
                ensure!(
                    g.shape(labels) == [n],
                    "atom_labels must be [N] = [{n}], is {:?}",
                    g.shape(labels)
                );
                let loss = g.cross_entropy(logits, labels, -100)?;
                out.metrics
                    .push(("accuracy".into(), g.accuracy(logits, labels, -100)?));
                out.losses.push(("loss".into(), loss, 1.0));
                out.tensors.insert("loss".into(), loss);
            }
            return Ok(out);
        }
        let get = |name: &str| {
            inputs
                .get(name)
                .copied()
                .ok_or_else(|| anyhow!("GIN regression needs the input `{name}`"))
        };
        let (node_graph, weight) = (get("node_graph")?, get("graph_weight")?);
        let slots = g.shape(weight)[0];
        let pooled = g.segment_sum(h, node_graph, slots)?;
        let w = g.reshape(weight, &[slots, 1])?;
        let pooled = if c.pooling == "mean" {
            g.mul(pooled, w)?
        } else {
            pooled
        };
        out.tensors.insert("graph_states".into(), pooled);
        let head = Linear::new(
            g,
            &Vb::root().pp("graph_head"),
            c.hidden_size,
            c.num_labels,
            true,
            std,
        )?;
        let pred = head.forward(g, pooled)?;
        g.rename(pred, "logits");
        out.tensors.insert("logits".into(), pred);
        if let (Some(&labels), Some(&lw)) = (inputs.get("labels"), inputs.get("label_weight")) {
            ensure!(
                g.shape(labels) == [slots, c.num_labels],
                "labels must be [G, num_labels] = [{slots}, {}], is {:?}",
                c.num_labels,
                g.shape(labels)
            );
            // Empty slots weigh 0 and used ones √(G/graphs): the mean over
            // G slots of the weighted squares is the mean over real graphs.
            let lw = g.reshape(lw, &[slots, 1])?;
            let p = g.mul(pred, lw)?;
            let y = g.mul(labels, lw)?;
            let loss = g.mse_loss(p, y)?;
            out.losses.push(("loss".into(), loss, 1.0));
            out.tensors.insert("loss".into(), loss);
        }
        Ok(out)
    }

    fn inputs_share_batch_dim(&self) -> bool {
        false
    }

    fn prepare_batch(&self, batch: &mut Batch) -> Result<()> {
        let c = &self.cfg;
        // Node, edge and graph slots: every input of one kind has the same
        // length, the shapes `input_specs` gives.
        let len = |name: &str| -> Result<Vec<usize>> {
            Ok(batch
                .get(name)
                .ok_or_else(|| anyhow!("the batch lacks `{name}`"))?
                .shape
                .clone())
        };
        let n = len("atom_element")?;
        let e = len("edge_dst")?;
        let g = len("graph_weight")?;
        ensure!(
            n.len() == 1 && e.len() == 1 && g.len() == 1,
            "atom_element, edge_dst and graph_weight must be vectors [N], [E], [G]"
        );
        let mut expect: Vec<(String, Vec<usize>)> = ATOM_FEATURES
            .iter()
            .map(|f| (format!("atom_{f}"), n.clone()))
            .collect();
        for name in ["edge_src", "edge_dst", "bond_type", "bond_in_ring"] {
            expect.push((name.into(), e.clone()));
        }
        expect.push(("node_graph".into(), n.clone()));
        if c.task == "attr_mask" {
            expect.push(("atom_labels".into(), n.clone()));
        } else {
            expect.push(("labels".into(), vec![g[0], c.num_labels]));
            expect.push(("label_weight".into(), g.clone()));
        }
        for (name, shape) in expect {
            if let Some(t) = batch.get(&name) {
                ensure!(
                    t.shape == shape,
                    "`{name}` has shape {:?}; with {} node, {} edge and {} graph slots it must be {shape:?}",
                    t.shape,
                    n[0],
                    e[0],
                    g[0]
                );
            }
        }
        for (f, &rows) in ATOM_FEATURES.iter().zip(&c.atom_vocab_sizes) {
            let name = format!("atom_{f}");
            if let Some((i, bad)) = batch
                .i32(&name)?
                .iter()
                .enumerate()
                .find(|(_, &x)| x < -1 || x >= rows as i32)
            {
                bail!("{name}[{i}] = {bad} is outside [0, {rows}) (−1 marks an unused slot)");
            }
        }
        let n = batch.i32("atom_element")?.len() as i32;
        for name in ["edge_src", "edge_dst"] {
            if let Some((i, bad)) = batch
                .i32(name)?
                .iter()
                .enumerate()
                .find(|(_, &x)| x < -1 || x >= n)
            {
                bail!("{name}[{i}] = {bad} is not a node slot in [0, {n}) or −1");
            }
        }
        // Segment sums reduce in edge order; edges sorted by destination
        // make that order the same on every adapter and batch layout.
        let dst = batch.i32("edge_dst")?;
        let key = |x: i32| if x < 0 { i32::MAX } else { x };
        if let Some(i) = dst.windows(2).position(|w| key(w[0]) > key(w[1])) {
            bail!(
                "edge_dst must be sorted (unused edges, −1, last); edge {} ({}) comes before {} ({})",
                i,
                dst[i],
                i + 1,
                dst[i + 1]
            );
        }
        if c.task == "attr_mask" {
            if let Ok(l) = batch.i32("atom_labels") {
                let v = c.num_elements() as i32;
                if let Some((i, bad)) = l
                    .iter()
                    .enumerate()
                    .find(|(_, &x)| !((0..v).contains(&x) || x == -100))
                {
                    bail!("atom_labels[{i}] = {bad} is not an element id in [0, {v}) or −100");
                }
            }
        } else if let Ok(y) = batch.f32("labels") {
            if let Some(i) = y.iter().position(|x| !x.is_finite()) {
                bail!("labels[{i}] is not finite");
            }
        }
        Ok(())
    }
}
