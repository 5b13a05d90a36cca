//! Molecule batches for the GIN ([`crate::model::gin`]): many small graphs
//! packed into fixed node and edge budgets (no padding of each molecule to
//! a maximum size; the unused tail of a budget is marked −1 and dropped by
//! the model), for two objectives:
//!
//! - attribute masking (Hu et al. 2020): 15% of each molecule's atoms
//!   (at least one) have their element replaced by the mask id, the bonds
//!   around them their type by the mask type; the model predicts the
//!   elements. New masks every step.
//! - regression of per-molecule targets, standardised by the training
//!   split's mean and standard deviation.
//!
//! Batch `k` depends only on `(seed, k)`: molecules are taken in a seeded
//! order, epoch after epoch, greedily packed until the graph, node or edge
//! budget would overflow; so a resumed run sees the batches an uninterrupted
//! one would.

use std::sync::Mutex;

use anyhow::{bail, ensure, Result};

use super::batch::{Batch, InputSpec};
use super::mlm::{derive_seed, IGNORE};
use super::molecules::{
    pack, BOND_MASK, BOND_SELF_LOOP, ELEMENT_MASK, FEAT_ELEMENT, NUM_ATOM_FEATURES,
};
use super::smiles::Molecule;
use super::DataSource;
use crate::model::gin::{input_specs, ATOM_FEATURES, EDGES_PER_NODE};
use crate::util::Rng;

/// Fraction of each molecule's atoms masked for attribute masking.
pub const ATOM_MASK_FRACTION: f64 = 0.15;

const TAG_ORDER: u64 = 0x4752_4f00; // "GRO"
const TAG_MASK: u64 = 0x474d_4b00; // "GMK"
/// Validation masks do not depend on the run's seed.
const VAL_SEED: u64 = 0x4741_4c00_5eed;

/// One pass over the training molecules: their order, and the (start, end)
/// positions in it of each batch.
type Epoch = (Vec<usize>, Vec<(usize, usize)>);

/// What a batch is for.
#[derive(Clone, Debug, PartialEq)]
pub enum GraphTask {
    AttrMask,
    /// Standardised targets per molecule (`[molecules][labels]`).
    Regression {
        targets: Vec<Vec<f32>>,
    },
}

/// Molecules split into training and validation sets, batched for the GIN.
pub struct MoleculeGraphs {
    pub mols: Vec<Molecule>,
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub task: GraphTask,
    pub seed: u64,
    /// Graph slots per batch.
    pub graphs: usize,
    /// Node slots per graph slot (the node budget is `graphs · nodes_per_graph`).
    pub nodes_per_graph: usize,
    /// Each epoch computed so far: its order and batch boundaries.
    epochs: Mutex<Vec<Epoch>>,
}

impl MoleculeGraphs {
    pub fn new(
        mols: Vec<Molecule>,
        train: Vec<usize>,
        val: Vec<usize>,
        task: GraphTask,
        seed: u64,
        graphs: usize,
        nodes_per_graph: usize,
    ) -> Result<Self> {
        ensure!(
            graphs > 0 && nodes_per_graph > 0,
            "molecule batches need at least one graph slot and one node per graph (got --batch \
             {graphs}, --seq {nodes_per_graph})"
        );
        ensure!(!train.is_empty(), "no training molecules");
        let (n_cap, e_cap) = (
            graphs * nodes_per_graph,
            EDGES_PER_NODE * graphs * nodes_per_graph,
        );
        if let Some(&i) = train
            .iter()
            .chain(&val)
            .find(|&&i| mols[i].atoms.len() > n_cap || edges_of(&mols[i]) > e_cap)
        {
            bail!(
                "molecule {} has {} atoms and {} bonds, more than a batch of {n_cap} atom slots \
                 ({graphs} graphs × {nodes_per_graph}) holds: raise --seq (atom slots per graph)",
                i + 1,
                mols[i].atoms.len(),
                mols[i].bonds.len()
            );
        }
        if let GraphTask::Regression { targets } = &task {
            ensure!(
                targets.len() == mols.len(),
                "{} targets for {} molecules",
                targets.len(),
                mols.len()
            );
        }
        Ok(Self {
            mols,
            train,
            val,
            task,
            seed,
            graphs,
            nodes_per_graph,
            epochs: Mutex::new(Vec::new()),
        })
    }

    fn caps(&self) -> (usize, usize) {
        let n = self.graphs * self.nodes_per_graph;
        (n, EDGES_PER_NODE * n)
    }

    /// Greedy packing of `order` into batches: (start, end) positions.
    fn boundaries(&self, order: &[usize]) -> Vec<(usize, usize)> {
        let (n_cap, e_cap) = self.caps();
        let mut out = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let (mut n, mut e, mut end) = (0, 0, start);
            while end < order.len() && end - start < self.graphs {
                let m = &self.mols[order[end]];
                let (dn, de) = (m.atoms.len(), edges_of(m));
                if n + dn > n_cap || e + de > e_cap {
                    break;
                }
                n += dn;
                e += de;
                end += 1;
            }
            out.push((start, end));
            start = end;
        }
        out
    }

    /// The molecules of training batch `index`.
    fn train_members(&self, index: u64) -> Vec<usize> {
        let mut epochs = self.epochs.lock().expect("epoch cache");
        let mut k = index as usize;
        let mut e = 0;
        loop {
            if e == epochs.len() {
                let mut order = self.train.clone();
                Rng::new(derive_seed(self.seed, TAG_ORDER, e as u64)).shuffle(&mut order);
                let b = self.boundaries(&order);
                epochs.push((order, b));
            }
            let (order, b) = &epochs[e];
            if k < b.len() {
                let (s, t) = b[k];
                return order[s..t].to_vec();
            }
            k -= b.len();
            e += 1;
        }
    }

    /// The packed batch of these molecules, masked by `rng` for attribute
    /// masking.
    fn make_batch(&self, members: &[usize], rng: &mut Rng) -> Batch {
        let (n_cap, e_cap) = self.caps();
        let g_cap = self.graphs;
        let mols: Vec<&Molecule> = members.iter().map(|&i| &self.mols[i]).collect();
        let mut p = pack(&mols, true);
        let n = p.num_nodes();
        let mut counts = vec![0usize; g_cap];
        for &g in &p.graph_of_node {
            counts[g as usize] += 1;
        }
        let mut b = Batch::new();
        if self.task == GraphTask::AttrMask {
            let mut labels = vec![IGNORE; n_cap];
            let mut masked = vec![false; n];
            for w in p.node_offsets.windows(2) {
                let (lo, hi) = (w[0] as usize, w[1] as usize);
                let mut atoms: Vec<usize> = (lo..hi).collect();
                let k = ((ATOM_MASK_FRACTION * atoms.len() as f64).round() as usize)
                    .clamp(1, atoms.len().max(1));
                for i in 0..k.min(atoms.len()) {
                    let j = i + rng.below((atoms.len() - i) as u64) as usize;
                    atoms.swap(i, j);
                }
                for &a in &atoms[..k.min(atoms.len())] {
                    labels[a] = p.node_feats[a][FEAT_ELEMENT];
                    p.node_feats[a][FEAT_ELEMENT] = ELEMENT_MASK;
                    masked[a] = true;
                }
            }
            // The bonds around a masked atom lose their type too (not its
            // self-loop, which says only "this node").
            for i in 0..p.num_edges() {
                let (s, d) = (p.edge_src[i] as usize, p.edge_dst[i] as usize);
                if p.edge_type[i] != BOND_SELF_LOOP && (masked[s] || masked[d]) {
                    p.edge_type[i] = BOND_MASK;
                }
            }
            b = b.with_i32("atom_labels", &[n_cap], labels);
        }
        for (k, f) in ATOM_FEATURES.iter().enumerate().take(NUM_ATOM_FEATURES) {
            let mut v = p.node_feature(k);
            v.resize(n_cap, -1);
            b = b.with_i32(&format!("atom_{f}"), &[n_cap], v);
        }
        let pad = |mut v: Vec<i32>, fill: i32| {
            v.resize(e_cap, fill);
            v
        };
        let ne = p.num_edges();
        b = b
            .with_i32("edge_src", &[e_cap], pad(p.edge_src, 0))
            .with_i32("edge_dst", &[e_cap], pad(p.edge_dst, -1))
            .with_i32("bond_type", &[e_cap], pad(p.edge_type, -1))
            .with_i32("bond_in_ring", &[e_cap], pad(p.edge_ring, -1));
        debug_assert!(ne <= e_cap);
        let mut graph_of_node = p.graph_of_node;
        graph_of_node.resize(n_cap, -1);
        b = b.with_i32("node_graph", &[n_cap], graph_of_node).with_f32(
            "graph_weight",
            &[g_cap],
            counts
                .iter()
                .map(|&c| if c > 0 { 1.0 / c as f32 } else { 0.0 })
                .collect(),
        );
        if let GraphTask::Regression { targets } = &self.task {
            let l = targets.first().map_or(1, Vec::len);
            let mut y = vec![0.0f32; g_cap * l];
            for (slot, &m) in members.iter().enumerate() {
                y[slot * l..(slot + 1) * l].copy_from_slice(&targets[m]);
            }
            let used = members.len().max(1);
            let w = ((g_cap as f64) / used as f64).sqrt() as f32;
            let weights = (0..g_cap)
                .map(|s| if s < members.len() { w } else { 0.0 })
                .collect();
            b = b
                .with_f32("labels", &[g_cap, l], y)
                .with_f32("label_weight", &[g_cap], weights);
        }
        b
    }

    /// Validation batches in a fixed order (at most `max`), with their
    /// members (for reports that map predictions back to molecules).
    pub fn val_batches_with_members(&self, max: usize) -> Vec<(Vec<usize>, Batch)> {
        self.boundaries(&self.val)
            .into_iter()
            .take(max)
            .enumerate()
            .map(|(k, (s, e))| {
                let members = self.val[s..e].to_vec();
                let mut rng = Rng::new(derive_seed(VAL_SEED, TAG_MASK, k as u64));
                let b = self.make_batch(&members, &mut rng);
                (members, b)
            })
            .collect()
    }

    /// Validation batches needed to cover the whole validation split.
    pub fn num_val_batches(&self) -> usize {
        self.boundaries(&self.val).len()
    }
}

/// Directed edges a molecule takes in a batch: two per bond, a self-loop per atom.
fn edges_of(m: &Molecule) -> usize {
    2 * m.bonds.len() + m.atoms.len()
}

impl DataSource for MoleculeGraphs {
    fn layout(&self) -> Vec<InputSpec> {
        let (n, e) = self.caps();
        let labels = match &self.task {
            GraphTask::AttrMask => None,
            GraphTask::Regression { targets } => Some(targets.first().map_or(1, Vec::len)),
        };
        input_specs(n, e, self.graphs, labels)
    }

    fn train_batch(&self, index: u64) -> Result<Batch> {
        let members = self.train_members(index);
        let mut rng = Rng::new(derive_seed(self.seed, TAG_MASK, index));
        Ok(self.make_batch(&members, &mut rng))
    }

    fn val_batches(&self, max: usize) -> Result<Vec<Batch>> {
        Ok(self
            .val_batches_with_members(max)
            .into_iter()
            .map(|(_, b)| b)
            .collect())
    }

    fn items_per_batch(&self) -> u64 {
        // Molecules per batch vary with their sizes; the mean over the
        // first epoch's batches.
        let members = self.train_members(0).len().max(1);
        members as u64
    }

    fn describe(&self) -> String {
        let (n, e) = self.caps();
        let what = match &self.task {
            GraphTask::AttrMask => "attribute masking (15% of atoms)",
            GraphTask::Regression { .. } => "regression",
        };
        format!(
            "{} train / {} val molecules, {what}, batches of ≤ {} molecules in {n} atom and {e} \
             edge slots",
            self.train.len(),
            self.val.len(),
            self.graphs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::smiles::parse_smiles;

    fn mols() -> Vec<Molecule> {
        [
            "CCO", "c1ccccc1", "CC(=O)O", "C#N", "OCC(O)CO", "c1ccncc1", "C", "CCCCCCCC",
        ]
        .iter()
        .map(|s| parse_smiles(s).unwrap())
        .collect()
    }

    fn source(task: GraphTask) -> MoleculeGraphs {
        MoleculeGraphs::new(mols(), (0..6).collect(), vec![6, 7], task, 7, 3, 6).unwrap()
    }

    #[test]
    fn batches_pack_within_budgets_and_repeat() {
        let s = source(GraphTask::AttrMask);
        let mut seen = vec![0usize; 6];
        // Two epochs' worth of batches cover every training molecule twice.
        let mut k = 0;
        while seen.iter().sum::<usize>() < 12 {
            let m = s.train_members(k);
            assert!(!m.is_empty() && m.len() <= 3);
            let atoms: usize = m.iter().map(|&i| s.mols[i].atoms.len()).sum();
            assert!(atoms <= 18, "node budget");
            for i in m {
                seen[i] += 1;
            }
            k += 1;
        }
        assert_eq!(seen, vec![2; 6]);
        let b = s.train_batch(1).unwrap();
        assert_eq!(b, s.train_batch(1).unwrap(), "same index, same batch");
        b.check_layout(&s.layout()).unwrap();
    }

    #[test]
    fn attribute_masking_masks_elements_and_their_bonds() {
        let s = source(GraphTask::AttrMask);
        let b = s.train_batch(0).unwrap();
        let (el, lab) = (
            b.i32("atom_element").unwrap(),
            b.i32("atom_labels").unwrap(),
        );
        let graphs = s.train_members(0).len();
        let masked: Vec<usize> = (0..el.len()).filter(|&i| lab[i] != IGNORE).collect();
        assert!(masked.len() >= graphs, "at least one atom per molecule");
        for &i in &masked {
            assert_eq!(el[i], ELEMENT_MASK);
        }
        let (src, dst, ty) = (
            b.i32("edge_src").unwrap(),
            b.i32("edge_dst").unwrap(),
            b.i32("bond_type").unwrap(),
        );
        for e in 0..dst.len() {
            if dst[e] < 0 {
                continue;
            }
            let touches = lab[src[e] as usize] != IGNORE || lab[dst[e] as usize] != IGNORE;
            if src[e] == dst[e] {
                assert_eq!(ty[e], BOND_SELF_LOOP);
            } else {
                assert_eq!(ty[e] == BOND_MASK, touches, "edge {e}");
            }
        }
        // Unused slots are −1 and last.
        let first_pad = dst.iter().position(|&d| d < 0).unwrap();
        assert!(dst[first_pad..].iter().all(|&d| d < 0));
        assert!(dst[..first_pad].windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn regression_weights_make_the_mean_over_real_graphs() {
        let targets: Vec<Vec<f32>> = (0..8).map(|i| vec![i as f32]).collect();
        let s = source(GraphTask::Regression { targets });
        for (members, b) in s.val_batches_with_members(10) {
            let w = b.f32("label_weight").unwrap();
            let g = w.len() as f32;
            let sq: f32 = w.iter().map(|x| x * x).sum();
            assert!((sq / g - 1.0).abs() < 1e-5, "Σw²/G = 1");
            let y = b.f32("labels").unwrap();
            for (slot, m) in members.iter().enumerate() {
                assert_eq!(y[slot], *m as f32);
            }
        }
    }

    #[test]
    fn a_molecule_larger_than_a_batch_is_a_clear_error() {
        let e = MoleculeGraphs::new(mols(), vec![7], vec![], GraphTask::AttrMask, 1, 1, 4)
            .err()
            .unwrap();
        assert!(e.to_string().contains("raise --seq"), "{e}");
    }
}
