//! Graph objectives on molecules (GIN): attribute masking on unlabelled
//! molecules (self-supervised pretraining, Hu et al. 2020) and regression
//! of a molecular property (mean squared error on the standardised target,
//! mean absolute error reported in the target's units).
//!
//! Data: a CSV/TSV/SMI file with a SMILES column (labels in numeric
//! columns), or a folder of them (every `.csv`, `.tsv`, `.smi` file, in name
//! order); by default `../shared/data/molecules` for attribute masking and
//! its `nci_first5k_tpsa.csv` for regression. The split is fixed: molecules
//! are shuffled with a constant seed and the last `val_fraction` held out,
//! whatever the run's seed, so runs with different seeds and label
//! fractions are tested on the same molecules.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, ensure, Context, Result};
use serde::Serialize;

use super::{Prepared, Report};
use crate::data::molecules::{
    atom_features, element_id_symbol, read_molecules, MoleculeSet, ATOM_FEATURE_SIZES,
    FEAT_ELEMENT, NUM_BOND_TYPE_IDS, NUM_ELEMENT_IDS, NUM_RING_IDS,
};
use crate::data::molgraph::{GraphTask, MoleculeGraphs};
use crate::data::Batch;
use crate::graph::exec::TensorMap;
use crate::graph::AttentionImpl;
use crate::model::gin::GinConfig;
use crate::model::{Model, ModelDims};
use crate::runtime::Gpu;
use crate::train::config::RunConfig;
use crate::train::infer::Inference;
use crate::train::resume::DataFingerprint;
use crate::util::Rng;

/// The split does not depend on the run's seed.
const SPLIT_SEED: u64 = 0x4d4f_4c53_504c; // "MOLSPL"

/// Where molecules are, when no `--data` says: `$KILN_DATA_DIR/molecules`,
/// then `../shared/data/molecules` (beside a checkout).
pub fn default_molecule_dir() -> Result<PathBuf> {
    super::find_data_dir("molecules", &[]).map_err(|tried| {
        anyhow!(
            "no molecule data: pass --data with a CSV/SMI file of SMILES (or a folder of them); \
             looked in {tried}"
        )
    })
}

/// The molecule files of `path`: itself, or a folder's CSV/TSV/SMI files.
fn molecule_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    ensure!(
        path.is_dir(),
        "molecule data {} does not exist (expected a CSV/SMI file or a folder of them)",
        path.display()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("csv" | "tsv" | "smi" | "txt")
                )
        })
        .collect();
    files.sort();
    ensure!(
        !files.is_empty(),
        "{} holds no .csv, .tsv or .smi molecule file",
        path.display()
    );
    Ok(files)
}

/// Every molecule of the files (labels kept only when every file has the
/// same label columns), with one summary line per file.
fn read_all(files: &[PathBuf]) -> Result<(MoleculeSet, Vec<String>, DataFingerprint)> {
    let mut all = MoleculeSet::default();
    let mut notes = Vec::new();
    let mut bytes = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let set = read_molecules(f, None, &[])?;
        notes.push(format!("{}: {}", f.display(), set.summary()));
        bytes.extend(std::fs::read(f)?);
        if i == 0 {
            all.label_names = set.label_names.clone();
        } else if all.label_names != set.label_names {
            all.label_names.clear();
        }
        all.rejected += set.rejected;
        all.mols.extend(set.mols);
        all.smiles.extend(set.smiles);
        all.labels.extend(set.labels);
    }
    if all.label_names.is_empty() {
        all.labels.iter_mut().for_each(Vec::clear);
    }
    ensure!(
        !all.mols.is_empty(),
        "no molecule could be read from {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let fp = DataFingerprint::of_bytes(&bytes);
    Ok((all, notes, fp))
}

/// (train, held-out) indices: a fixed shuffle, the last `fraction` held out.
fn split(n: usize, fraction: f64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(SPLIT_SEED).shuffle(&mut order);
    let held = ((n as f64) * fraction.clamp(0.0, 0.9)).round() as usize;
    let train = order[..n - held].to_vec();
    (train, order[n - held..].to_vec())
}

fn gin_dims(task: &str) -> ModelDims {
    ModelDims {
        graph: Some(GinConfig {
            hidden_size: 0,
            num_layers: 0,
            atom_vocab_sizes: ATOM_FEATURE_SIZES.to_vec(),
            bond_vocab_sizes: vec![NUM_BOND_TYPE_IDS, NUM_RING_IDS],
            element_symbols: (0..NUM_ELEMENT_IDS as i32)
                .map(|i| element_id_symbol(i).to_string())
                .collect(),
            task: task.into(),
            num_labels: 1,
            label_names: Vec::new(),
            target_mean: Vec::new(),
            target_std: Vec::new(),
            pooling: "mean".into(),
            layer_norm_eps: 1e-5,
            initializer_range: 0.02,
        }),
        ..Default::default()
    }
}

/// Self-supervised pretraining: mask 15% of atoms' elements (and the bonds
/// around them), predict the elements.
pub fn attr_mask(cfg: &RunConfig) -> Result<Prepared> {
    let path = match &cfg.data.path {
        Some(p) => p.clone(),
        None => default_molecule_dir()?,
    };
    let (set, mut notes, fingerprint) = read_all(&molecule_files(&path)?)?;
    let (train, val) = split(set.mols.len(), cfg.data.val_fraction);
    // The baseline: always the most frequent element of the training atoms.
    let mut counts = [0u64; NUM_ELEMENT_IDS];
    for &i in &train {
        for f in atom_features(&set.mols[i]) {
            counts[f[FEAT_ELEMENT] as usize] += 1;
        }
    }
    let total: u64 = counts.iter().sum();
    let (top, &top_n) = counts
        .iter()
        .enumerate()
        .max_by_key(|(_, &c)| c)
        .expect("elements");
    let majority = top_n as f64 / total.max(1) as f64;
    notes.push(format!(
        "masked-atom baseline: always {} gives accuracy {majority:.3}",
        element_id_symbol(top as i32)
    ));
    let t = &cfg.train;
    let source = MoleculeGraphs::new(
        set.mols,
        train,
        val,
        GraphTask::AttrMask,
        t.seed,
        t.batch,
        t.seq,
    )?;
    Ok(Prepared {
        source: Box::new(source),
        tok: None,
        floor: None,
        fingerprint,
        prompt: Vec::new(),
        files: Vec::new(),
        notes,
        dims: gin_dims("attr_mask"),
        report: Report::None,
    })
}

/// Held-out molecules to measure a regression on after training.
pub struct RegressionReport {
    pub source: MoleculeGraphs,
    /// Raw (unstandardised) targets of every molecule.
    pub raw: Vec<Vec<f32>>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub label_names: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RegressionResult {
    /// Mean absolute error per target, in the target's units.
    pub mae: Vec<f64>,
    /// The same for always predicting the training mean.
    pub baseline_mae: Vec<f64>,
    pub molecules: usize,
    pub label_names: Vec<String>,
}

impl RegressionResult {
    pub fn summary(&self) -> String {
        self.label_names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "{n}: test MAE {:.3} on {} molecules (mean predictor {:.3})",
                    self.mae[i], self.molecules, self.baseline_mae[i]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Supervised regression of the numeric label columns; `data.label_fraction`
/// of the training molecules keep their labels (a seeded subset).
pub fn regression(cfg: &RunConfig) -> Result<Prepared> {
    let path = match &cfg.data.path {
        Some(p) => p.clone(),
        None => default_molecule_dir()?.join("nci_first5k_tpsa.csv"),
    };
    let (set, mut notes, fingerprint) = read_all(&molecule_files(&path)?)?;
    ensure!(
        !set.label_names.is_empty(),
        "{} has no numeric label column to regress (a line is `SMILES,value[,value…]`)",
        path.display()
    );
    let l = set.label_names.len();
    let (all_train, val) = split(set.mols.len(), cfg.data.val_fraction);
    // Molecules whose labels are all present.
    let labelled = |i: &usize| set.labels[*i].iter().all(|x| x.is_finite());
    let mut train: Vec<usize> = all_train.into_iter().filter(labelled).collect();
    let val: Vec<usize> = val.into_iter().filter(labelled).collect();
    let frac = cfg.data.label_fraction;
    if frac < 1.0 {
        let keep = ((train.len() as f64) * frac).round().max(1.0) as usize;
        Rng::new(crate::data::mlm::derive_seed(cfg.train.seed, 0x4c46, 0)).shuffle(&mut train);
        train.truncate(keep);
        train.sort_unstable();
        notes.push(format!(
            "label fraction {frac}: {keep} labelled training molecules"
        ));
    }
    ensure!(!train.is_empty(), "no labelled training molecule");
    let (mut mean, mut std) = (vec![0f32; l], vec![0f32; l]);
    for j in 0..l {
        let xs: Vec<f64> = train.iter().map(|&i| set.labels[i][j] as f64).collect();
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64;
        mean[j] = m as f32;
        std[j] = (v.sqrt() as f32).max(1e-6);
    }
    let targets: Vec<Vec<f32>> = set
        .labels
        .iter()
        .map(|y| {
            (0..l)
                .map(|j| {
                    y.get(j).map_or(0.0, |&v| {
                        if v.is_finite() {
                            (v - mean[j]) / std[j]
                        } else {
                            0.0
                        }
                    })
                })
                .collect()
        })
        .collect();
    notes.push(format!(
        "targets {} standardised by the training mean {:?} and std {:?}",
        set.label_names.join(", "),
        mean,
        std
    ));
    let t = &cfg.train;
    let make = |train: Vec<usize>, val: Vec<usize>| {
        MoleculeGraphs::new(
            set.mols.clone(),
            train,
            val,
            GraphTask::Regression {
                targets: targets.clone(),
            },
            t.seed,
            t.batch,
            t.seq,
        )
    };
    let source = make(train.clone(), val.clone())?;
    let report = RegressionReport {
        source: make(train, val)?,
        raw: set.labels.clone(),
        mean: mean.clone(),
        std: std.clone(),
        label_names: set.label_names.clone(),
    };
    let mut dims = gin_dims("regression");
    if let Some(g) = &mut dims.graph {
        // Sum pooling: the properties molecules are asked about (a polar
        // surface area, a weight, a count) grow with the molecule, which a
        // mean over atoms cannot see.
        g.pooling = "sum".into();
        g.num_labels = l;
        g.label_names = set.label_names.clone();
        g.target_mean = mean;
        g.target_std = std;
    }
    Ok(Prepared {
        source: Box::new(source),
        tok: None,
        floor: None,
        fingerprint,
        prompt: Vec::new(),
        files: Vec::new(),
        notes,
        dims,
        report: Report::Regression(Box::new(report)),
    })
}

/// Test-set MAE in the target's units, and the mean predictor's.
pub async fn regression_report(
    gpu: &Gpu,
    model: Arc<dyn Model>,
    params: &TensorMap,
    r: &RegressionReport,
    attention: AttentionImpl,
) -> Result<RegressionResult> {
    let batches = r
        .source
        .val_batches_with_members(r.source.num_val_batches());
    ensure!(!batches.is_empty(), "no held-out molecules to test on");
    let strip = |b: &Batch| {
        let mut b = b.clone();
        b.remove("labels");
        b.remove("label_weight");
        b
    };
    let inf = Inference::new(
        gpu,
        model,
        &strip(&batches[0].1),
        params,
        &["logits"],
        attention,
    )?;
    let l = r.mean.len();
    let (mut err, mut base) = (vec![0f64; l], vec![0f64; l]);
    let mut n = 0usize;
    for (members, b) in &batches {
        let out = inf.run(&strip(b)).await?;
        let (_, pred) = &out["logits"];
        for (slot, &m) in members.iter().enumerate() {
            for j in 0..l {
                let p = pred[slot * l + j] as f64 * r.std[j] as f64 + r.mean[j] as f64;
                let y = r.raw[m][j] as f64;
                err[j] += (p - y).abs();
                base[j] += (r.mean[j] as f64 - y).abs();
            }
            n += 1;
        }
    }
    let k = n.max(1) as f64;
    Ok(RegressionResult {
        mae: err.iter().map(|e| e / k).collect(),
        baseline_mae: base.iter().map(|e| e / k).collect(),
        molecules: n,
        label_names: r.label_names.clone(),
    })
}

/// The architecture task of a GIN run: `attr-mask` (default) or `regression`.
pub fn task(cfg: &RunConfig) -> Result<&'static str> {
    match cfg.model.objective.as_deref() {
        None | Some("attr-mask" | "attr_mask") => Ok("attr_mask"),
        Some("regression") => Ok("regression"),
        Some(other) => Err(anyhow!(
            "--objective {other:?} for gin: expected attr-mask (self-supervised pretraining) or \
             regression (a numeric label column)"
        )),
    }
}
