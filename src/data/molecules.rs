//! Molecules for graph neural networks (GIN, Hu et al. 2020): integer atom
//! and bond features, molecule files (CSV, TSV, `.smi`) with optional
//! numeric labels, and packing molecules into one graph batch.
//!
//! # Features
//!
//! Each atom is [`NUM_ATOM_FEATURES`] integer ids, in this order:
//!
//! | index | feature | ids |
//! |---|---|---|
//! | [`FEAT_ELEMENT`] | element | [`ELEMENTS`] in order (H B C N O F Si P S Cl Se Br I = 0..=12), then [`ELEMENT_OTHER`] (13: any other element, metals, `*`) and [`ELEMENT_MASK`] (14) |
//! | [`FEAT_DEGREE`] | heavy-atom neighbours | 0..=6, clipped |
//! | [`FEAT_CHARGE`] | formal charge | −2..=+2 clipped, as `charge + 2` |
//! | [`FEAT_HYDROGENS`] | hydrogens (implicit or bracket count) | 0..=4, clipped |
//! | [`FEAT_AROMATIC`] | written aromatic | 0, 1 |
//!
//! Each directed edge has a type ([`BOND_SINGLE`] 0, [`BOND_DOUBLE`] 1,
//! [`BOND_TRIPLE`] 2, [`BOND_AROMATIC`] 3, [`BOND_SELF_LOOP`] 4,
//! [`BOND_MASK`] 5) and a ring flag (0, 1; 0 for self loops).
//!
//! # Files
//!
//! [`read_molecules`] reads CSV (comma), TSV (tab) and `.smi` (whitespace)
//! files; see its docs for headers, columns and labels. A line that cannot
//! be read is counted and skipped, never fatal.
//!
//! # Batches
//!
//! [`pack`] concatenates the nodes of several molecules (no padding) and
//! lists every bond as two directed edges, plus optional self loops, sorted
//! by `(dst, src)` so that a segment sum over destinations always adds in
//! the same order (deterministic, no atomics).

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::smiles::{element_symbol, parse_smiles, BondKind, Molecule};

/// Integer features per atom.
pub const NUM_ATOM_FEATURES: usize = 5;
pub const FEAT_ELEMENT: usize = 0;
pub const FEAT_DEGREE: usize = 1;
pub const FEAT_CHARGE: usize = 2;
pub const FEAT_HYDROGENS: usize = 3;
pub const FEAT_AROMATIC: usize = 4;

/// The elements with their own id (atomic numbers), id = position:
/// H B C N O F Si P S Cl Se Br I.
pub const ELEMENTS: [u8; 13] = [1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 34, 35, 53];
/// Any element not in [`ELEMENTS`] (metals, noble gases, `*`).
pub const ELEMENT_OTHER: i32 = ELEMENTS.len() as i32;
/// The masked-atom id (masked-attribute pretraining).
pub const ELEMENT_MASK: i32 = ELEMENT_OTHER + 1;
pub const NUM_ELEMENT_IDS: usize = ELEMENTS.len() + 2;
pub const MAX_DEGREE: u8 = 6;
pub const NUM_DEGREE_IDS: usize = MAX_DEGREE as usize + 1;
pub const MIN_CHARGE: i8 = -2;
pub const MAX_CHARGE: i8 = 2;
pub const NUM_CHARGE_IDS: usize = (MAX_CHARGE - MIN_CHARGE) as usize + 1;
pub const MAX_HYDROGENS: u8 = 4;
pub const NUM_HYDROGEN_IDS: usize = MAX_HYDROGENS as usize + 1;
pub const NUM_AROMATIC_IDS: usize = 2;
/// The number of ids of each atom feature, in feature order.
pub const ATOM_FEATURE_SIZES: [usize; NUM_ATOM_FEATURES] = [
    NUM_ELEMENT_IDS,
    NUM_DEGREE_IDS,
    NUM_CHARGE_IDS,
    NUM_HYDROGEN_IDS,
    NUM_AROMATIC_IDS,
];

pub const BOND_SINGLE: i32 = 0;
pub const BOND_DOUBLE: i32 = 1;
pub const BOND_TRIPLE: i32 = 2;
pub const BOND_AROMATIC: i32 = 3;
pub const BOND_SELF_LOOP: i32 = 4;
pub const BOND_MASK: i32 = 5;
pub const NUM_BOND_TYPE_IDS: usize = 6;
pub const NUM_RING_IDS: usize = 2;

/// The element id of an atomic number.
pub fn element_id(z: u8) -> i32 {
    ELEMENTS
        .iter()
        .position(|&e| e == z)
        .map_or(ELEMENT_OTHER, |i| i as i32)
}

/// The symbol of an element id, for printing predictions: `"C"`, or
/// `"other"` and `"[MASK]"` for the last two ids, `"?"` out of range.
pub fn element_id_symbol(id: i32) -> &'static str {
    match id {
        ELEMENT_OTHER => "other",
        ELEMENT_MASK => "[MASK]",
        _ => usize::try_from(id)
            .ok()
            .and_then(|i| ELEMENTS.get(i))
            .map_or("?", |&z| element_symbol(z)),
    }
}

/// The edge type id of a bond kind.
pub fn bond_type_id(kind: BondKind) -> i32 {
    match kind {
        BondKind::Single => BOND_SINGLE,
        BondKind::Double => BOND_DOUBLE,
        BondKind::Triple => BOND_TRIPLE,
        BondKind::Aromatic => BOND_AROMATIC,
    }
}

/// The feature ids of every atom of a molecule (see the module docs).
pub fn atom_features(mol: &Molecule) -> Vec<[i32; NUM_ATOM_FEATURES]> {
    let degrees = mol.degrees();
    mol.atoms
        .iter()
        .zip(degrees)
        .map(|(a, d)| {
            let mut f = [0i32; NUM_ATOM_FEATURES];
            f[FEAT_ELEMENT] = element_id(a.element);
            f[FEAT_DEGREE] = d.min(MAX_DEGREE as usize) as i32;
            f[FEAT_CHARGE] = (a.charge.clamp(MIN_CHARGE, MAX_CHARGE) - MIN_CHARGE) as i32;
            f[FEAT_HYDROGENS] = a.hydrogens.min(MAX_HYDROGENS) as i32;
            f[FEAT_AROMATIC] = a.aromatic as i32;
            f
        })
        .collect()
}

/// Molecules read from a file, with their SMILES and labels.
#[derive(Clone, Debug, Default)]
pub struct MoleculeSet {
    pub mols: Vec<Molecule>,
    /// The SMILES of each molecule, as written.
    pub smiles: Vec<String>,
    /// The labels of each molecule, one per label column (possibly none);
    /// an empty field is a missing label, NaN.
    pub labels: Vec<Vec<f32>>,
    pub label_names: Vec<String>,
    /// How many lines were refused.
    pub rejected: usize,
    /// The first five refused lines: 1-based line number and why.
    pub first_rejected: Vec<(usize, String)>,
}

impl MoleculeSet {
    pub fn len(&self) -> usize {
        self.mols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mols.is_empty()
    }

    /// One line: `"4999 molecules read, 1 rejected (line 17: …)"`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} molecules read, {} rejected",
            self.mols.len(),
            self.rejected
        );
        if let Some((line, why)) = self.first_rejected.first() {
            s.push_str(&format!(" (line {line}: {why})"));
        }
        s
    }

    fn reject(&mut self, line: usize, why: String) {
        self.rejected += 1;
        if self.first_rejected.len() < 5 {
            self.first_rejected.push((line, why));
        }
    }
}

/// How the fields of a line are separated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delimiter {
    Comma,
    Tab,
    Whitespace,
}

impl Delimiter {
    /// By extension (`.csv`; `.tsv`, `.tab`; `.smi`, `.smiles`, `.ism`,
    /// `.can`), else from the first data line: a tab, else a comma, else
    /// whitespace (a SMILES never holds a tab or a comma).
    pub fn detect(path: &Path, first_line: &str) -> Delimiter {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Delimiter::Comma,
            "tsv" | "tab" => Delimiter::Tab,
            "smi" | "smiles" | "ism" | "can" => Delimiter::Whitespace,
            _ if first_line.contains('\t') => Delimiter::Tab,
            _ if first_line.contains(',') => Delimiter::Comma,
            _ => Delimiter::Whitespace,
        }
    }
}

/// Split one line into trimmed fields. Comma and tab fields may be
/// double-quoted (`""` inside quotes is a quote); whitespace fields lose a
/// surrounding pair of quotes.
pub(crate) fn split_fields(
    line: &str,
    delim: Delimiter,
) -> std::result::Result<Vec<String>, String> {
    let sep = match delim {
        Delimiter::Whitespace => {
            return Ok(line
                .split_whitespace()
                .map(|f| {
                    f.strip_prefix('"')
                        .and_then(|g| g.strip_suffix('"'))
                        .unwrap_or(f)
                        .to_string()
                })
                .collect())
        }
        Delimiter::Comma => ',',
        Delimiter::Tab => '\t',
    };
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        while chars.peek().is_some_and(|&c| c != sep && c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
        }
        // The rest of the field (for a quoted field, anything after the
        // closing quote is kept, leniently).
        loop {
            match chars.next() {
                None => {
                    fields.push(field.trim().to_string());
                    return Ok(fields);
                }
                Some(c) if c == sep => break,
                Some(c) => field.push(c),
            }
        }
        fields.push(field.trim().to_string());
    }
}

/// `s`, shortened to about `n` characters for messages.
fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// A column by name: exact, then ignoring case.
fn find_column(header: &[String], name: &str) -> Option<usize> {
    header
        .iter()
        .position(|h| h == name)
        .or_else(|| header.iter().position(|h| h.eq_ignore_ascii_case(name)))
}

/// Read molecules from a CSV (comma), TSV (tab) or `.smi` (whitespace)
/// file (see [`Delimiter::detect`]). Blank lines and lines starting with
/// `#` are skipped; fields may be double-quoted.
///
/// Header: the first line is a header when a column is named
/// (`smiles_column` or `label_columns`), or when its first field is not a
/// valid SMILES and some field's name contains "smiles" (any case).
///
/// Columns: the SMILES column is `smiles_column`, else a header column named
/// "smiles" (any case), else one whose name contains "smiles", else the
/// first column. Labels are `label_columns` if given, else every other
/// column whose non-empty values are all numbers (at least one); without a
/// header they are named `column N` (1-based). An empty label field is NaN
/// (missing).
///
/// A line is rejected (counted, the first five kept with their line number
/// and reason) when its SMILES does not parse, a requested label is not a
/// number, or its quotes are unbalanced; reading goes on. A missing file, or
/// a named column absent from the header, is an error.
pub fn read_molecules(
    path: &Path,
    smiles_column: Option<&str>,
    label_columns: &[String],
) -> Result<MoleculeSet> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read molecule file {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    parse_molecules(&text, path, smiles_column, label_columns)
        .with_context(|| format!("reading molecules from {}", path.display()))
}

/// [`read_molecules`] on text already in memory; `path` only chooses the
/// delimiter by its extension.
pub fn parse_molecules(
    text: &str,
    path: &Path,
    smiles_column: Option<&str>,
    label_columns: &[String],
) -> Result<MoleculeSet> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .collect();
    let mut set = MoleculeSet::default();
    let Some(&(_, first_line)) = lines.first() else {
        if smiles_column.is_some() || !label_columns.is_empty() {
            bail!("the file has no header line (columns were named)");
        }
        return Ok(set);
    };
    let delim = Delimiter::detect(path, first_line);
    let mut records: Vec<(usize, std::result::Result<Vec<String>, String>)> = lines
        .iter()
        .map(|&(n, l)| (n, split_fields(l, delim)))
        .collect();

    // Header.
    let named = smiles_column.is_some() || !label_columns.is_empty();
    let header: Option<Vec<String>> = match &records[0].1 {
        Ok(fields) => {
            let looks_like_header = fields.first().is_none_or(|f| parse_smiles(f).is_err())
                && fields
                    .iter()
                    .any(|f| f.to_ascii_lowercase().contains("smiles"));
            (named || looks_like_header).then(|| fields.clone())
        }
        Err(e) if named => bail!("line {}: header: {e}", records[0].0),
        Err(_) => None,
    };
    if header.is_some() {
        let _header_line = records.remove(0);
    }

    // Columns.
    let smiles_col = match (&header, smiles_column) {
        (Some(h), Some(name)) => find_column(h, name).with_context(|| {
            format!("no SMILES column '{name}' in the header ({})", h.join(", "))
        })?,
        (Some(h), None) => find_column(h, "smiles")
            .or_else(|| {
                h.iter()
                    .position(|f| f.to_ascii_lowercase().contains("smiles"))
            })
            .unwrap_or(0),
        (None, _) => 0,
    };
    let (label_cols, label_names): (Vec<usize>, Vec<String>) = if !label_columns.is_empty() {
        let h = header.as_deref().unwrap_or(&[]);
        let mut cols = Vec::new();
        for name in label_columns {
            cols.push(find_column(h, name).with_context(|| {
                format!("no label column '{name}' in the header ({})", h.join(", "))
            })?);
        }
        (cols, label_columns.to_vec())
    } else {
        let width = header.as_ref().map_or_else(
            || {
                records
                    .iter()
                    .filter_map(|(_, r)| r.as_ref().ok().map(Vec::len))
                    .max()
                    .unwrap_or(0)
            },
            Vec::len,
        );
        (0..width)
            .filter(|&c| c != smiles_col)
            .filter(|&c| {
                let mut values = records
                    .iter()
                    .filter_map(|(_, r)| r.as_ref().ok())
                    .filter_map(|f| f.get(c))
                    .filter(|v| !v.is_empty())
                    .peekable();
                values.peek().is_some() && values.all(|v| v.parse::<f32>().is_ok())
            })
            .map(|c| {
                let name = header
                    .as_ref()
                    .and_then(|h| h.get(c))
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .unwrap_or_else(|| format!("column {}", c + 1));
                (c, name)
            })
            .unzip()
    };
    set.label_names = label_names;

    // Molecules.
    'lines: for (line, record) in records {
        let fields = match record {
            Ok(f) => f,
            Err(e) => {
                set.reject(line, e);
                continue;
            }
        };
        let smiles = match fields.get(smiles_col) {
            Some(s) if !s.is_empty() => s,
            _ => {
                set.reject(line, format!("no SMILES in column {}", smiles_col + 1));
                continue;
            }
        };
        let mol = match parse_smiles(smiles) {
            Ok(m) => m,
            Err(e) => {
                set.reject(line, format!("{e} in \"{}\"", shorten(smiles, 60)));
                continue;
            }
        };
        let mut labels = Vec::with_capacity(label_cols.len());
        for (&c, name) in label_cols.iter().zip(&set.label_names) {
            match fields.get(c).map(String::as_str) {
                None | Some("") => labels.push(f32::NAN),
                Some(v) => match v.parse::<f32>() {
                    Ok(x) => labels.push(x),
                    Err(_) => {
                        let why = format!("label '{name}' is not a number: \"{}\"", shorten(v, 30));
                        set.reject(line, why);
                        continue 'lines;
                    }
                },
            }
        }
        set.mols.push(mol);
        set.smiles.push(smiles.clone());
        set.labels.push(labels);
    }
    Ok(set)
}

/// Several molecules as one graph: nodes concatenated, edges sorted by
/// destination. All index vectors are `i32`, ready for the GPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphBatch {
    pub num_graphs: usize,
    /// Feature ids of each node (see the module docs).
    pub node_feats: Vec<[i32; NUM_ATOM_FEATURES]>,
    /// The graph (0-based position in the packed slice) of each node.
    pub graph_of_node: Vec<i32>,
    /// The first node of each graph; `num_graphs + 1` entries.
    pub node_offsets: Vec<i32>,
    pub edge_src: Vec<i32>,
    pub edge_dst: Vec<i32>,
    pub edge_type: Vec<i32>,
    pub edge_ring: Vec<i32>,
    /// CSR row starts over destinations: the edges into node `v` are
    /// `dst_offsets[v]..dst_offsets[v + 1]`; `num_nodes + 1` entries.
    pub dst_offsets: Vec<i32>,
}

impl GraphBatch {
    pub fn num_nodes(&self) -> usize {
        self.node_feats.len()
    }

    pub fn num_edges(&self) -> usize {
        self.edge_dst.len()
    }

    /// One feature of every node (`FEAT_ELEMENT`, …), as its own vector.
    pub fn node_feature(&self, k: usize) -> Vec<i32> {
        self.node_feats.iter().map(|f| f[k]).collect()
    }
}

fn idx(i: usize) -> i32 {
    i32::try_from(i).expect("graph batch larger than i32 indices")
}

/// Pack molecules into one [`GraphBatch`]: every bond becomes two directed
/// edges (a→b and b→a, same type and ring flag); with `self_loops` each
/// node also gets an edge to itself of type [`BOND_SELF_LOOP`], ring flag 0.
/// Edges are sorted by `(dst, src)` (stable), so the result depends only on
/// the molecules and their order.
pub fn pack(mols: &[&Molecule], self_loops: bool) -> GraphBatch {
    let mut batch = GraphBatch {
        num_graphs: mols.len(),
        node_offsets: vec![0],
        ..GraphBatch::default()
    };
    // (dst, src, type, ring)
    let mut edges: Vec<(i32, i32, i32, i32)> = Vec::new();
    for (g, mol) in mols.iter().enumerate() {
        let base = batch.node_feats.len();
        batch.node_feats.extend(atom_features(mol));
        batch
            .graph_of_node
            .extend(std::iter::repeat_n(idx(g), mol.atoms.len()));
        for b in &mol.bonds {
            let (a, c) = (idx(base + b.a), idx(base + b.b));
            let (t, r) = (bond_type_id(b.kind), b.in_ring as i32);
            edges.push((c, a, t, r));
            edges.push((a, c, t, r));
        }
        if self_loops {
            for v in base..base + mol.atoms.len() {
                edges.push((idx(v), idx(v), BOND_SELF_LOOP, 0));
            }
        }
        batch.node_offsets.push(idx(batch.node_feats.len()));
    }
    edges.sort_by_key(|&(dst, src, _, _)| (dst, src));
    let n = batch.node_feats.len();
    let mut counts = vec![0i32; n + 1];
    for &(dst, src, t, r) in &edges {
        counts[dst as usize + 1] += 1;
        batch.edge_dst.push(dst);
        batch.edge_src.push(src);
        batch.edge_type.push(t);
        batch.edge_ring.push(r);
    }
    for v in 0..n {
        counts[v + 1] += counts[v];
    }
    batch.dst_offsets = counts;
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::smiles::parse_smiles;
    use std::path::PathBuf;

    fn mol(s: &str) -> Molecule {
        parse_smiles(s).unwrap()
    }

    /// A file under the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let p =
                std::env::temp_dir().join(format!("kiln-molecules-{}-{name}", std::process::id()));
            std::fs::write(&p, text).unwrap();
            TempFile(p)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn molecules_vocab() {
        assert_eq!(NUM_ELEMENT_IDS, 15);
        assert_eq!((ELEMENT_OTHER, ELEMENT_MASK), (13, 14));
        assert_eq!(ATOM_FEATURE_SIZES, [15, 7, 5, 5, 2]);
        assert_eq!(element_id(6), 2);
        assert_eq!(element_id(53), 12);
        assert_eq!(element_id(11), ELEMENT_OTHER);
        assert_eq!(element_id(0), ELEMENT_OTHER);
        let symbols: Vec<&str> = (0..NUM_ELEMENT_IDS as i32).map(element_id_symbol).collect();
        assert_eq!(
            symbols,
            [
                "H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Se", "Br", "I", "other",
                "[MASK]"
            ]
        );
        assert_eq!(element_id_symbol(-1), "?");
        assert_eq!(element_id_symbol(99), "?");
        for (z, &e) in ELEMENTS.iter().enumerate() {
            assert_eq!(element_id(e), z as i32);
        }
    }

    #[test]
    fn molecules_atom_features() {
        // Nitromethane: C, N+ (3 neighbours), =O, O-.
        let f = atom_features(&mol("C[N+](=O)[O-]"));
        assert_eq!(
            f,
            [
                [2, 1, 2, 3, 0],
                [3, 3, 3, 0, 0],
                [4, 1, 2, 0, 0],
                [4, 1, 1, 0, 0]
            ]
        );
        // Pyridine's nitrogen; clipping of charge, hydrogens and degree.
        let f = atom_features(&mol("c1ccncc1"));
        assert_eq!(f[3], [3, 2, 2, 0, 1]);
        assert_eq!(f[0], [2, 2, 2, 1, 1]);
        let f = atom_features(&mol("[Fe+3]"));
        assert_eq!(f[0], [ELEMENT_OTHER, 0, 4, 0, 0]);
        let f = atom_features(&mol("[CH5-3]"));
        assert_eq!(f[0], [2, 0, 0, 4, 0]);
        let f = atom_features(&mol("[Fe](C)(C)(C)(C)(C)(C)(C)C"));
        assert_eq!(f[0][FEAT_DEGREE], 6);
    }

    #[test]
    fn molecules_pack() {
        let ethanol = mol("CCO");
        let water = mol("O");
        let acid = mol("CC(=O)O");
        let b = pack(&[&ethanol, &water, &acid], true);
        assert_eq!(b.num_graphs, 3);
        assert_eq!(b.num_nodes(), 3 + 1 + 4);
        // 2 per bond (2 + 0 + 3 bonds) plus one self loop per node.
        assert_eq!(b.num_edges(), 2 * 5 + 8);
        assert_eq!(b.graph_of_node, [0, 0, 0, 1, 2, 2, 2, 2]);
        assert_eq!(b.node_offsets, [0, 3, 4, 8]);
        assert_eq!(b.dst_offsets, [0, 2, 5, 7, 8, 10, 14, 16, 18]);
        assert_eq!(b.dst_offsets.len(), b.num_nodes() + 1);
        let pairs: Vec<(i32, i32)> = b
            .edge_dst
            .iter()
            .copied()
            .zip(b.edge_src.iter().copied())
            .collect();
        assert!(
            pairs.windows(2).all(|w| w[0] < w[1]),
            "sorted by (dst, src)"
        );
        for v in 0..b.num_nodes() {
            let (lo, hi) = (b.dst_offsets[v] as usize, b.dst_offsets[v + 1] as usize);
            assert!(b.edge_dst[lo..hi].iter().all(|&d| d == v as i32));
        }
        // Edges stay within their graph.
        for (&s, &d) in b.edge_src.iter().zip(&b.edge_dst) {
            assert_eq!(b.graph_of_node[s as usize], b.graph_of_node[d as usize]);
        }
        // The edges into the carbonyl carbon (node 5): 4, 5 (self), 6 (=O), 7.
        assert_eq!(&b.edge_src[10..14], [4, 5, 6, 7]);
        assert_eq!(
            &b.edge_type[10..14],
            [BOND_SINGLE, BOND_SELF_LOOP, BOND_DOUBLE, BOND_SINGLE]
        );
        assert_eq!(b.node_feature(FEAT_ELEMENT), [2, 2, 4, 4, 2, 2, 4, 4]);

        let plain = pack(&[&ethanol, &water, &acid], false);
        assert_eq!(plain.num_edges(), 10);
        assert!(plain.edge_type.iter().all(|&t| t != BOND_SELF_LOOP));
        assert_eq!(plain.dst_offsets, [0, 1, 3, 4, 4, 5, 8, 9, 10]);

        // Ring flags travel with both directions.
        let benzene = mol("c1ccccc1");
        let b = pack(&[&benzene], false);
        assert_eq!(b.num_edges(), 12);
        assert!(b.edge_ring.iter().all(|&r| r == 1));
        assert!(b.edge_type.iter().all(|&t| t == BOND_AROMATIC));

        assert_eq!(pack(&[], true).dst_offsets, [0]);
        assert_eq!(
            pack(&[&acid, &benzene], true),
            pack(&[&acid, &benzene], true)
        );
    }

    #[test]
    fn molecules_read_files() {
        // A header found by its "smiles" column, quotes, a comment, a blank
        // line, a missing label, a rejected line; labels from numeric
        // columns only.
        let f = TempFile::new(
            "a.csv",
            "# comment\nname,SMILES,logP,note\n\"eth, anol\",CCO,-0.31,x\n\nwater,O,,y\nbad,C1CC,1.0,z\n\"acid\",\"CC(=O)O\",0.17,\"q\"\"\"\n",
        );
        let set = read_molecules(&f.0, None, &[]).unwrap();
        assert_eq!(set.smiles, ["CCO", "O", "CC(=O)O"]);
        assert_eq!(set.label_names, ["logP"]);
        assert_eq!(set.labels[0], [-0.31]);
        assert!(set.labels[1][0].is_nan());
        assert_eq!(set.rejected, 1);
        assert_eq!(
            set.first_rejected,
            [(6, "unclosed ring bond 1 at 2 in \"C1CC\"".to_string())]
        );
        assert_eq!(
            set.summary(),
            "3 molecules read, 1 rejected (line 6: unclosed ring bond 1 at 2 in \"C1CC\")"
        );

        // Named columns.
        let set = read_molecules(&f.0, Some("smiles"), &["logP".to_string()]).unwrap();
        assert_eq!(set.len(), 3);
        let e = read_molecules(&f.0, Some("smi"), &[]).unwrap_err();
        assert!(format!("{e:#}").contains("no SMILES column 'smi'"), "{e:#}");
        let e = read_molecules(&f.0, None, &["pIC50".to_string()]).unwrap_err();
        assert!(
            format!("{e:#}").contains("no label column 'pIC50'"),
            "{e:#}"
        );
        // A requested label that is not a number rejects its line.
        let set = read_molecules(&f.0, None, &["note".to_string()]).unwrap();
        assert_eq!(set.len(), 0);
        assert_eq!(set.rejected, 4);

        // No header: SMILES first, numeric columns as labels.
        let f = TempFile::new(
            "b.tsv",
            "CCO\t1.5\tethanol\nc1ccccc1\t2\tbenzene\nXx\t3\tjunk\n",
        );
        let set = read_molecules(&f.0, None, &[]).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.label_names, ["column 2"]);
        assert_eq!(set.labels, [[1.5], [2.0]]);
        assert_eq!(set.first_rejected[0].0, 3);
        assert!(set.first_rejected[0]
            .1
            .starts_with("unknown element 'Xx' at 1"));

        // .smi: whitespace, names.
        let f = TempFile::new("c.smi", "CCO ethanol\r\nC1CCCCC1   cyclohexane\r\n");
        let set = read_molecules(&f.0, None, &[]).unwrap();
        assert_eq!(set.smiles, ["CCO", "C1CCCCC1"]);
        assert!(set.label_names.is_empty() && set.labels.iter().all(Vec::is_empty));

        // A missing file names its path.
        let missing = std::env::temp_dir().join("kiln-no-such-dir/none.csv");
        let e = read_molecules(&missing, None, &[]).unwrap_err();
        assert!(
            format!("{e:#}").contains("kiln-no-such-dir/none.csv"),
            "{e:#}"
        );
    }

    /// The shared files: `nci_first5k_tpsa.csv` (a `#` comment, then
    /// `SMILES,TPSA`, no header; 4999 molecules) reads all 4999 with their
    /// TPSA labels; `wehi_10k.csv` (`"SMILES","WEHI-ID"`, no header, no
    /// numeric column) reads all 10000, with no labels.
    #[test]
    fn molecules_shared_files() {
        let Some(nci) = crate::data::shared_data("molecules/nci_first5k_tpsa.csv") else {
            println!("skipping: ../shared/data/molecules not found");
            return;
        };
        let set = read_molecules(&nci, None, &[]).unwrap();
        println!("nci: {}; {:?}", set.summary(), set.first_rejected);
        assert_eq!((set.len(), set.rejected), (NCI_READ, NCI_REJECTED));
        assert!(set.len() * 100 >= 99 * (set.len() + set.rejected));
        assert_eq!(set.label_names, ["column 2"]);
        assert!(set
            .labels
            .iter()
            .all(|l| l.len() == 1 && l[0].is_finite() && l[0] >= 0.0));
        assert_eq!(set.smiles[0], "CC1=CC(=O)C=CC1=O");
        assert_eq!(set.labels[0], [34.14]);

        let Some(wehi) = crate::data::shared_data("molecules/wehi_10k.csv") else {
            println!("skipping: ../shared/data/molecules not found");
            return;
        };
        let set = read_molecules(&wehi, None, &[]).unwrap();
        println!("wehi: {}; {:?}", set.summary(), set.first_rejected);
        assert_eq!((set.len(), set.rejected), (WEHI_READ, WEHI_REJECTED));
        assert!(set.len() * 100 >= 99 * (set.len() + set.rejected));
        assert!(set.label_names.is_empty());
        assert_eq!(set.smiles[0], "N(NC(=O)C1CCC1)c2ccc(cc2)C(C)(C)C");

        // Every molecule packs.
        let mols: Vec<&Molecule> = set.mols.iter().collect();
        let b = pack(&mols, true);
        assert_eq!(b.num_graphs, set.len());
        assert!(b.node_feats.iter().all(|f| f
            .iter()
            .zip(ATOM_FEATURE_SIZES)
            .all(|(&x, n)| x >= 0 && (x as usize) < n)));
    }

    const NCI_READ: usize = 4999;
    const NCI_REJECTED: usize = 0;
    const WEHI_READ: usize = 10000;
    const WEHI_REJECTED: usize = 0;
}
