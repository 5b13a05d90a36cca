//! A SMILES reader (OpenSMILES subset) for molecule graphs: atoms, bonds and
//! ring flags, enough to featurise molecules for a graph neural network
//! (GIN, Hu et al. 2020). Pure Rust, no RDKit.
//!
//! Supported: the organic subset (`B C N O P S F Cl Br I`, aromatic
//! `b c n o p s`) and `*`; bracket atoms `[isotope? symbol chirality?
//! hcount? charge? class?]` with any element of the periodic table (aromatic
//! `b c n o p s se as te`); bonds `- = # :` and `/ \` (single bonds);
//! implicit bonds; nested branches; ring closures `0`–`9` and `%nn`, with a
//! bond symbol on either side; `.` between disconnected parts. The
//! quadruple bond `$` is refused.
//!
//! Aromaticity is taken as written: there is no aromaticity perception and
//! no kekulisation. An implicit bond between two aromatic atoms is aromatic,
//! except that one that turns out not to lie on a ring (a bridge, as between
//! the two rings of `c1ccccc1c1ccccc1`) is single, as aromatic bonds only
//! exist in rings.
//!
//! Hydrogens: a bracket atom has exactly the count written (`[CH]` one,
//! `[C]` none). An organic-subset atom gets implicit hydrogens from its
//! standard valences (B 3; C 4; N 3, 5; O 2; P 3, 5; S 2, 4, 6; halogens 1):
//! with `s` the sum of its bond orders (an aromatic bond counting 1), a
//! non-aromatic atom gets `v − s` for the smallest valence `v ≥ s` (none if
//! `s` exceeds them all); an aromatic atom counts one more bond order
//! (`s + 1`, its share of the π system) and uses only its lowest valence.
//! So benzene's `c` has 1 H, pyridine's `n` 0, furan's `o` 0 and
//! thiophene's `s` 0, and pyrrole's N–H must be written `[nH]`.
//!
//! The parser never panics and never recurses (branches use an explicit
//! stack; ring flags come from an iterative bridge search), so any input,
//! however long or deeply nested, either parses or gives a [`SmilesError`]
//! that names what was wrong and where (1-based character position).

use std::fmt;

/// Element symbols by atomic number; 0 is the wildcard `*`.
pub const ELEMENT_SYMBOLS: [&str; 119] = [
    "*", "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S",
    "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge",
    "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd",
    "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd",
    "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg",
    "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm",
    "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn",
    "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
];

/// The symbol of an atomic number (`"*"` for 0, `"?"` past 118).
pub fn element_symbol(z: u8) -> &'static str {
    ELEMENT_SYMBOLS.get(z as usize).copied().unwrap_or("?")
}

/// The atomic number of an element symbol (exact case: `"Cl"`), if any.
pub fn atomic_number(symbol: &str) -> Option<u8> {
    ELEMENT_SYMBOLS
        .iter()
        .skip(1)
        .position(|&s| s == symbol)
        .map(|i| i as u8 + 1)
}

/// Tetrahedral chirality as written: `@` counter-clockwise, `@@` clockwise
/// (`@TH1`/`@AL1` and `@TH2`/`@AL2` likewise; the other classes, `@SP`,
/// `@TB`, `@OH`, are read and recorded as `None`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Chirality {
    #[default]
    None,
    Ccw,
    Cw,
}

/// One atom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Atom {
    /// Atomic number (0 for the wildcard `*`).
    pub element: u8,
    /// Written as aromatic (lowercase).
    pub aromatic: bool,
    /// Formal charge.
    pub charge: i8,
    /// Attached hydrogens not written as atoms: the bracket count, or the
    /// implicit count of an organic-subset atom (see the module docs).
    pub hydrogens: u8,
    pub isotope: Option<u16>,
    pub chirality: Chirality,
    /// Written in brackets.
    pub bracket: bool,
}

impl Atom {
    fn organic(element: u8, aromatic: bool) -> Atom {
        Atom {
            element,
            aromatic,
            charge: 0,
            hydrogens: 0,
            isotope: None,
            chirality: Chirality::None,
            bracket: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BondKind {
    Single,
    Double,
    Triple,
    Aromatic,
}

impl BondKind {
    /// The bond order for valence (hydrogen) counting: an aromatic bond is 1.
    pub fn valence(self) -> u8 {
        match self {
            BondKind::Single | BondKind::Aromatic => 1,
            BondKind::Double => 2,
            BondKind::Triple => 3,
        }
    }
}

/// A bond between atoms `a` and `b` (indices into [`Molecule::atoms`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bond {
    pub a: usize,
    pub b: usize,
    pub kind: BondKind,
    /// The bond lies on a ring: it is not a bridge of the molecular graph.
    pub in_ring: bool,
}

/// A molecule: atoms in the order written, bonds in the order they close.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Molecule {
    pub atoms: Vec<Atom>,
    pub bonds: Vec<Bond>,
}

impl Molecule {
    /// The number of heavy-atom (non-hydrogen) neighbours of atom `i`.
    pub fn degree(&self, i: usize) -> usize {
        self.bonds
            .iter()
            .filter_map(|b| {
                if b.a == i {
                    Some(b.b)
                } else if b.b == i {
                    Some(b.a)
                } else {
                    None
                }
            })
            .filter(|&j| self.atoms[j].element != 1)
            .count()
    }

    /// [`Molecule::degree`] of every atom, in one pass over the bonds.
    pub fn degrees(&self) -> Vec<usize> {
        let mut d = vec![0; self.atoms.len()];
        for b in &self.bonds {
            if self.atoms[b.b].element != 1 {
                d[b.a] += 1;
            }
            if self.atoms[b.a].element != 1 {
                d[b.b] += 1;
            }
        }
        d
    }

    /// The neighbours of atom `i`, in bond order.
    pub fn neighbours(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        self.bonds.iter().filter_map(move |b| {
            if b.a == i {
                Some(b.b)
            } else if b.b == i {
                Some(b.a)
            } else {
                None
            }
        })
    }

    /// How many bonds of a kind the molecule has.
    pub fn count_bonds(&self, kind: BondKind) -> usize {
        self.bonds.iter().filter(|b| b.kind == kind).count()
    }
}

/// Why a SMILES string was refused: the message names what was wrong and
/// ends with the 1-based character position (`"unmatched ')' at 7"`);
/// `position` is that number (0 for an empty string).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmilesError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for SmilesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SmilesError {}

/// `what at N` for the character at 0-based index `i`.
fn err<T>(i: usize, what: impl fmt::Display) -> Result<T, SmilesError> {
    Err(SmilesError {
        position: i + 1,
        message: format!("{what} at {}", i + 1),
    })
}

/// A bond symbol as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sym {
    Single,
    Double,
    Triple,
    Aromatic,
    Up,
    Down,
}

impl Sym {
    fn kind(self) -> BondKind {
        match self {
            Sym::Single | Sym::Up | Sym::Down => BondKind::Single,
            Sym::Double => BondKind::Double,
            Sym::Triple => BondKind::Triple,
            Sym::Aromatic => BondKind::Aromatic,
        }
    }

    fn char(self) -> char {
        match self {
            Sym::Single => '-',
            Sym::Double => '=',
            Sym::Triple => '#',
            Sym::Aromatic => ':',
            Sym::Up => '/',
            Sym::Down => '\\',
        }
    }
}

/// What the previous token was (for the grammar checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Last {
    Start,
    Atom,
    Ring,
    Bond,
    Open,
    Close,
    Dot,
}

/// Standard valences of the organic subset (`None`: no implicit hydrogens).
fn standard_valences(z: u8) -> Option<&'static [u8]> {
    Some(match z {
        5 => &[3],
        6 => &[4],
        7 | 15 => &[3, 5],
        8 => &[2],
        16 => &[2, 4, 6],
        9 | 17 | 35 | 53 => &[1],
        _ => return None,
    })
}

/// Implicit hydrogens of an organic-subset atom (see the module docs).
fn implicit_hydrogens(z: u8, aromatic: bool, bond_sum: u32) -> u8 {
    let Some(valences) = standard_valences(z) else {
        return 0;
    };
    if aromatic {
        (valences[0] as u32).saturating_sub(bond_sum + 1) as u8
    } else {
        valences
            .iter()
            .map(|&v| v as u32)
            .find(|&v| v >= bond_sum)
            .map_or(0, |v| (v - bond_sum) as u8)
    }
}

/// A bond while parsing: `implicit` is true when no symbol was written.
struct RawBond {
    a: usize,
    b: usize,
    kind: BondKind,
    implicit: bool,
}

struct Parser {
    chars: Vec<char>,
    i: usize,
    atoms: Vec<Atom>,
    bonds: Vec<RawBond>,
    /// Neighbours of each atom (to refuse duplicate ring bonds).
    adj: Vec<Vec<usize>>,
}

/// An open ring bond: its atom, its bond symbol, where it was written.
#[derive(Clone, Copy)]
struct OpenRing {
    atom: usize,
    sym: Option<Sym>,
    pos: usize,
}

/// Parse a SMILES string into a [`Molecule`]; see the module docs for what
/// is supported. Never panics.
pub fn parse_smiles(s: &str) -> Result<Molecule, SmilesError> {
    let mut p = Parser {
        chars: s.chars().collect(),
        i: 0,
        atoms: Vec::new(),
        bonds: Vec::new(),
        adj: Vec::new(),
    };
    p.parse()?;
    Ok(p.finish())
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.i + k).copied()
    }

    fn parse(&mut self) -> Result<(), SmilesError> {
        if self.chars.is_empty() {
            return Err(SmilesError {
                position: 0,
                message: "empty SMILES".into(),
            });
        }
        // The atom the next atom bonds to.
        let mut prev: Option<usize> = None;
        // A bond symbol waiting for its atom or ring number: (symbol, index).
        let mut pending: Option<(Sym, usize)> = None;
        // Saved `prev` and the position of each open '('.
        let mut branches: Vec<(Option<usize>, usize)> = Vec::new();
        let mut rings: Vec<Option<OpenRing>> = vec![None; 100];
        let mut last = Last::Start;
        // Whether a ring number may come now (right after an atom or ring
        // number, or after a bond symbol that followed one).
        let mut ring_ok = false;

        while let Some(c) = self.peek() {
            let at = self.i;
            match c {
                'A'..='Z' | 'a'..='z' | '[' | '*' => {
                    let atom = self.atom()?;
                    let idx = self.atoms.len();
                    self.atoms.push(atom);
                    self.adj.push(Vec::new());
                    match prev {
                        Some(p) => {
                            let sym = pending.take().map(|(s, _)| s);
                            self.add_bond(p, idx, sym);
                        }
                        None => {
                            if let Some((s, i)) = pending {
                                return err(
                                    i,
                                    format!("bond '{}' with no atom before it", s.char()),
                                );
                            }
                        }
                    }
                    prev = Some(idx);
                    last = Last::Atom;
                    ring_ok = true;
                }
                '-' | '=' | '#' | ':' | '/' | '\\' => {
                    let sym = match c {
                        '-' => Sym::Single,
                        '=' => Sym::Double,
                        '#' => Sym::Triple,
                        ':' => Sym::Aromatic,
                        '/' => Sym::Up,
                        _ => Sym::Down,
                    };
                    if let Some((s, _)) = pending {
                        return err(at, format!("bond '{c}' right after bond '{}'", s.char()));
                    }
                    if prev.is_none() {
                        return err(at, format!("bond '{c}' with no atom before it"));
                    }
                    pending = Some((sym, at));
                    last = Last::Bond;
                    self.i += 1;
                }
                '$' => return err(at, "quadruple bond '$' is not supported"),
                '(' => {
                    if let Some((s, _)) = pending {
                        return err(at, format!("bond '{}' before '('", s.char()));
                    }
                    if prev.is_none() || last == Last::Dot {
                        return err(at, "'(' with no atom before it");
                    }
                    if last == Last::Open {
                        return err(at, "'(' right after '('");
                    }
                    branches.push((prev, at));
                    last = Last::Open;
                    ring_ok = false;
                    self.i += 1;
                }
                ')' => {
                    if let Some((s, i)) = pending {
                        return err(i, format!("bond '{}' not followed by an atom", s.char()));
                    }
                    if last == Last::Dot {
                        return err(at - 1, "'.' not followed by an atom");
                    }
                    let Some((saved, open)) = branches.pop() else {
                        return err(at, "unmatched ')'");
                    };
                    if last == Last::Open {
                        return err(open, "empty branch '()'");
                    }
                    prev = saved;
                    last = Last::Close;
                    ring_ok = false;
                    self.i += 1;
                }
                '.' => {
                    if let Some((s, i)) = pending {
                        return err(i, format!("bond '{}' not followed by an atom", s.char()));
                    }
                    if last == Last::Dot || last == Last::Start {
                        return err(at, "'.' with no atom before it");
                    }
                    prev = None;
                    last = Last::Dot;
                    ring_ok = false;
                    self.i += 1;
                }
                '0'..='9' | '%' => {
                    let n = if c == '%' {
                        match (self.peek_at(1), self.peek_at(2)) {
                            (Some(d1 @ '0'..='9'), Some(d2 @ '0'..='9')) => {
                                self.i += 3;
                                (d1 as usize - '0' as usize) * 10 + (d2 as usize - '0' as usize)
                            }
                            _ => return err(at, "'%' must be followed by two digits"),
                        }
                    } else {
                        self.i += 1;
                        c as usize - '0' as usize
                    };
                    let Some(atom) = prev.filter(|_| ring_ok) else {
                        return err(at, format!("ring bond {n} does not follow an atom"));
                    };
                    let sym = pending.take().map(|(s, _)| s);
                    match rings[n].take() {
                        None => rings[n] = Some(OpenRing { atom, sym, pos: at }),
                        Some(open) => {
                            let sym = match (open.sym, sym) {
                                (Some(x), Some(y)) if x.kind() != y.kind() => {
                                    let (x, y) = (x.char(), y.char());
                                    let what = format!("ring bond {n} has conflicting bonds");
                                    return err(at, format!("{what} '{x}' and '{y}'"));
                                }
                                (x, y) => x.or(y),
                            };
                            if open.atom == atom {
                                return err(at, format!("ring bond {n} closes on its own atom"));
                            }
                            if self.adj[atom].contains(&open.atom) {
                                return err(
                                    at,
                                    format!(
                                        "ring bond {n} duplicates a bond between the same atoms"
                                    ),
                                );
                            }
                            self.add_bond(open.atom, atom, sym);
                        }
                    }
                    last = Last::Ring;
                }
                _ => return err(at, format!("unexpected character '{c}'")),
            }
            if last != Last::Bond && last != Last::Atom && last != Last::Ring {
                ring_ok = false;
            }
        }

        let end = self.chars.len();
        if let Some((s, i)) = pending {
            return err(i, format!("bond '{}' not followed by an atom", s.char()));
        }
        if last == Last::Dot {
            return err(end - 1, "'.' not followed by an atom");
        }
        if let Some(&(_, open)) = branches.last() {
            return err(open, "unclosed '('");
        }
        if let Some((n, r)) = rings
            .iter()
            .enumerate()
            .filter_map(|(n, r)| r.map(|r| (n, r)))
            .min_by_key(|(_, r)| r.pos)
        {
            return err(r.pos, format!("unclosed ring bond {n}"));
        }
        Ok(())
    }

    fn add_bond(&mut self, a: usize, b: usize, sym: Option<Sym>) {
        let (kind, implicit) = match sym {
            Some(s) => (s.kind(), false),
            None if self.atoms[a].aromatic && self.atoms[b].aromatic => (BondKind::Aromatic, true),
            None => (BondKind::Single, true),
        };
        self.adj[a].push(b);
        self.adj[b].push(a);
        self.bonds.push(RawBond {
            a,
            b,
            kind,
            implicit,
        });
    }

    /// One atom: organic subset, `*`, or a bracket atom.
    fn atom(&mut self) -> Result<Atom, SmilesError> {
        let at = self.i;
        let c = self.chars[at];
        if c == '[' {
            return self.bracket_atom();
        }
        let next = self.peek_at(1);
        let (z, aromatic, len) = match (c, next) {
            ('C', Some('l')) => (17, false, 2),
            ('B', Some('r')) => (35, false, 2),
            ('B', _) => (5, false, 1),
            ('C', _) => (6, false, 1),
            ('N', _) => (7, false, 1),
            ('O', _) => (8, false, 1),
            ('P', _) => (15, false, 1),
            ('S', _) => (16, false, 1),
            ('F', _) => (9, false, 1),
            ('I', _) => (53, false, 1),
            ('b', _) => (5, true, 1),
            ('c', _) => (6, true, 1),
            ('n', _) => (7, true, 1),
            ('o', _) => (8, true, 1),
            ('p', _) => (15, true, 1),
            ('s', _) => (16, true, 1),
            ('*', _) => (0, false, 1),
            ('A'..='Z', _) => {
                let mut sym = c.to_string();
                if let Some(l @ 'a'..='z') = next {
                    sym.push(l);
                }
                if atomic_number(&sym).is_some() {
                    return err(
                        at,
                        format!("element '{sym}' must be written in brackets ([{sym}])"),
                    );
                }
                return err(at, format!("unknown element '{sym}'"));
            }
            _ => {
                // "Na", "Cu": read as N or C followed by a stray letter.
                if let Some(u @ 'A'..='Z') = at.checked_sub(1).map(|j| self.chars[j]) {
                    let sym: String = [u, c].iter().collect();
                    if atomic_number(&sym).is_some() {
                        let what = format!("element '{sym}' must be written in brackets ([{sym}])");
                        return err(at - 1, what);
                    }
                }
                return err(at, format!("unexpected character '{c}'"));
            }
        };
        self.i += len;
        Ok(Atom::organic(z, aromatic))
    }

    /// `[isotope? symbol chirality? hcount? charge? class?]`.
    fn bracket_atom(&mut self) -> Result<Atom, SmilesError> {
        let open = self.i;
        self.i += 1;
        let unclosed = || -> Result<Atom, SmilesError> { err(open, "unclosed '['") };

        // Isotope.
        let mut isotope: Option<u16> = None;
        while let Some(d @ '0'..='9') = self.peek() {
            let v = isotope.unwrap_or(0) as u32 * 10 + (d as u32 - '0' as u32);
            if v > u16::MAX as u32 {
                return err(self.i, "isotope too large");
            }
            isotope = Some(v as u16);
            self.i += 1;
        }

        // Element symbol.
        let at = self.i;
        let (element, aromatic) = match self.peek() {
            None => return unclosed(),
            Some('*') => {
                self.i += 1;
                (0, false)
            }
            Some(u @ 'A'..='Z') => {
                let two = match self.peek_at(1) {
                    Some(l @ 'a'..='z') => {
                        let s: String = [u, l].iter().collect();
                        atomic_number(&s).map(|z| (z, s))
                    }
                    _ => None,
                };
                if let Some((z, _)) = two {
                    self.i += 2;
                    (z, false)
                } else if let Some(z) = atomic_number(&u.to_string()) {
                    self.i += 1;
                    (z, false)
                } else {
                    let mut sym = u.to_string();
                    if let Some(l @ 'a'..='z') = self.peek_at(1) {
                        sym.push(l);
                    }
                    return err(at, format!("unknown element '{sym}'"));
                }
            }
            Some(l @ 'a'..='z') => {
                let two: Option<u8> = match (l, self.peek_at(1)) {
                    ('s', Some('e')) => Some(34),
                    ('a', Some('s')) => Some(33),
                    ('t', Some('e')) => Some(52),
                    _ => None,
                };
                if let Some(z) = two {
                    self.i += 2;
                    (z, true)
                } else {
                    let z = match l {
                        'b' => 5,
                        'c' => 6,
                        'n' => 7,
                        'o' => 8,
                        'p' => 15,
                        's' => 16,
                        _ => {
                            let mut sym = l.to_string();
                            if let Some(m @ 'a'..='z') = self.peek_at(1) {
                                sym.push(m);
                            }
                            return err(at, format!("unknown aromatic element '{sym}'"));
                        }
                    };
                    self.i += 1;
                    (z, true)
                }
            }
            Some(']') => return err(at, "missing element symbol in '[]'"),
            Some(c) => return err(at, format!("unexpected character '{c}' in bracket atom")),
        };

        // Chirality.
        let mut chirality = Chirality::None;
        if self.peek() == Some('@') {
            self.i += 1;
            if self.peek() == Some('@') {
                self.i += 1;
                chirality = Chirality::Cw;
            } else if let (Some(a @ 'A'..='Z'), Some(b @ 'A'..='Z')) =
                (self.peek(), self.peek_at(1))
            {
                let class: String = [a, b].iter().collect();
                if !matches!(class.as_str(), "TH" | "AL" | "SP" | "TB" | "OH") {
                    return err(self.i, format!("unknown chirality class '@{class}'"));
                }
                self.i += 2;
                let start = self.i;
                let mut n = 0u32;
                while let Some(d @ '0'..='9') = self.peek() {
                    n = n.saturating_mul(10).saturating_add(d as u32 - '0' as u32);
                    self.i += 1;
                }
                if self.i == start {
                    return err(start, format!("chirality '@{class}' needs a number"));
                }
                chirality = match (class.as_str(), n) {
                    ("TH" | "AL", 1) => Chirality::Ccw,
                    ("TH" | "AL", 2) => Chirality::Cw,
                    _ => Chirality::None,
                };
            } else {
                chirality = Chirality::Ccw;
            }
        }

        // Hydrogen count.
        let mut hydrogens = 0u8;
        if self.peek() == Some('H') {
            self.i += 1;
            hydrogens = 1;
            if let Some(d @ '0'..='9') = self.peek() {
                hydrogens = d as u8 - b'0';
                self.i += 1;
            }
        }

        // Charge.
        let mut charge = 0i8;
        if let Some(sign @ ('+' | '-')) = self.peek() {
            let at = self.i;
            self.i += 1;
            let mut magnitude = 1u32;
            if let Some('0'..='9') = self.peek() {
                magnitude = 0;
                while let Some(d @ '0'..='9') = self.peek() {
                    magnitude = magnitude
                        .saturating_mul(10)
                        .saturating_add(d as u32 - '0' as u32);
                    self.i += 1;
                }
            } else {
                while self.peek() == Some(sign) {
                    magnitude += 1;
                    self.i += 1;
                }
            }
            if magnitude > 15 {
                return err(
                    at,
                    format!("charge {sign}{magnitude} out of range (at most 15)"),
                );
            }
            charge = if sign == '+' {
                magnitude as i8
            } else {
                -(magnitude as i8)
            };
        }

        // Atom class (ignored).
        if self.peek() == Some(':') {
            let at = self.i;
            self.i += 1;
            let start = self.i;
            while let Some('0'..='9') = self.peek() {
                self.i += 1;
            }
            if self.i == start {
                return err(at, "atom class ':' needs a number");
            }
        }

        match self.peek() {
            Some(']') => self.i += 1,
            None => return unclosed(),
            Some(c) => {
                return err(
                    self.i,
                    format!("unexpected character '{c}' in bracket atom"),
                )
            }
        }
        Ok(Atom {
            element,
            aromatic,
            charge,
            hydrogens,
            isotope,
            chirality,
            bracket: true,
        })
    }

    /// Implicit hydrogens, ring flags, and implicit aromatic bridges made single.
    fn finish(self) -> Molecule {
        let Parser {
            mut atoms,
            bonds: raw,
            ..
        } = self;
        let mut bond_sum = vec![0u32; atoms.len()];
        for b in &raw {
            bond_sum[b.a] += b.kind.valence() as u32;
            bond_sum[b.b] += b.kind.valence() as u32;
        }
        for (atom, &sum) in atoms.iter_mut().zip(&bond_sum) {
            if !atom.bracket {
                atom.hydrogens = implicit_hydrogens(atom.element, atom.aromatic, sum);
            }
        }
        let bridge = bridges(atoms.len(), &raw);
        let bonds = raw
            .iter()
            .zip(bridge)
            .map(|(b, is_bridge)| Bond {
                a: b.a,
                b: b.b,
                kind: if is_bridge && b.implicit && b.kind == BondKind::Aromatic {
                    BondKind::Single
                } else {
                    b.kind
                },
                in_ring: !is_bridge,
            })
            .collect();
        Molecule { atoms, bonds }
    }
}

/// Which bonds are bridges (their removal disconnects the graph): Tarjan's
/// low-link search, iterative so that no molecule can overflow the stack.
fn bridges(n: usize, bonds: &[RawBond]) -> Vec<bool> {
    let mut adj: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
    for (e, b) in bonds.iter().enumerate() {
        adj[b.a].push((b.b, e));
        adj[b.b].push((b.a, e));
    }
    const UNSEEN: usize = usize::MAX;
    let mut disc = vec![UNSEEN; n];
    let mut low = vec![0usize; n];
    let mut is_bridge = vec![false; bonds.len()];
    let mut time = 0usize;
    // (vertex, the bond we came by, next neighbour to look at)
    let mut stack: Vec<(usize, usize, usize)> = Vec::new();
    for root in 0..n {
        if disc[root] != UNSEEN {
            continue;
        }
        disc[root] = time;
        low[root] = time;
        time += 1;
        stack.push((root, UNSEEN, 0));
        while let Some(top) = stack.last_mut() {
            let (v, via, k) = *top;
            if k < adj[v].len() {
                top.2 += 1;
                let (w, e) = adj[v][k];
                if e == via {
                    continue;
                }
                if disc[w] == UNSEEN {
                    disc[w] = time;
                    low[w] = time;
                    time += 1;
                    stack.push((w, e, 0));
                } else {
                    low[v] = low[v].min(disc[w]);
                }
            } else {
                stack.pop();
                if let Some(&(p, _, _)) = stack.last() {
                    low[p] = low[p].min(low[v]);
                    if low[v] > disc[p] {
                        is_bridge[via] = true;
                    }
                }
            }
        }
    }
    is_bridge
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mol(s: &str) -> Molecule {
        parse_smiles(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn kinds(m: &Molecule) -> [usize; 4] {
        [
            m.count_bonds(BondKind::Single),
            m.count_bonds(BondKind::Double),
            m.count_bonds(BondKind::Triple),
            m.count_bonds(BondKind::Aromatic),
        ]
    }

    fn hs(m: &Molecule) -> Vec<u8> {
        m.atoms.iter().map(|a| a.hydrogens).collect()
    }

    fn ring_bonds(m: &Molecule) -> usize {
        m.bonds.iter().filter(|b| b.in_ring).count()
    }

    #[test]
    fn smiles_periodic_table() {
        assert_eq!(atomic_number("H"), Some(1));
        assert_eq!(atomic_number("Cl"), Some(17));
        assert_eq!(atomic_number("Og"), Some(118));
        assert_eq!(atomic_number("Xx"), None);
        assert_eq!(element_symbol(26), "Fe");
        assert_eq!(element_symbol(200), "?");
    }

    #[test]
    fn smiles_ethanol_and_acetic_acid() {
        let m = mol("CCO");
        assert_eq!(m.atoms.len(), 3);
        assert_eq!(kinds(&m), [2, 0, 0, 0]);
        assert_eq!(hs(&m), [3, 2, 1]);
        assert_eq!(ring_bonds(&m), 0);
        assert_eq!(m.degree(1), 2);

        let m = mol("CC(=O)O");
        assert_eq!(m.atoms.len(), 4);
        assert_eq!(kinds(&m), [2, 1, 0, 0]);
        assert_eq!(hs(&m), [3, 0, 0, 1]);
        assert_eq!(m.degree(1), 3);
        assert_eq!((m.bonds[1].a, m.bonds[1].b), (1, 2));
        assert_eq!(m.bonds[1].kind, BondKind::Double);
        assert_eq!((m.bonds[2].a, m.bonds[2].b), (1, 3));
    }

    #[test]
    fn smiles_aromatic_rings() {
        let m = mol("c1ccccc1");
        assert_eq!(m.atoms.len(), 6);
        assert_eq!(kinds(&m), [0, 0, 0, 6]);
        assert_eq!(ring_bonds(&m), 6);
        assert!(m
            .atoms
            .iter()
            .all(|a| a.aromatic && a.hydrogens == 1 && a.element == 6));

        let m = mol("c1ccncc1");
        assert_eq!(kinds(&m), [0, 0, 0, 6]);
        assert_eq!(hs(&m), [1, 1, 1, 0, 1, 1]);
        assert_eq!(m.atoms[3].element, 7);

        let m = mol("c1cc[nH]c1");
        assert_eq!(m.atoms.len(), 5);
        assert_eq!(kinds(&m), [0, 0, 0, 5]);
        assert_eq!(hs(&m), [1, 1, 1, 1, 1]);
        assert!(m.atoms[3].bracket && m.atoms[3].aromatic);

        let m = mol("c1ccoc1");
        assert_eq!(hs(&m), [1, 1, 1, 0, 1]);
        let m = mol("c1ccsc1");
        assert_eq!(hs(&m), [1, 1, 1, 0, 1]);
        let m = mol("c1cc[se]c1");
        assert_eq!((m.atoms[3].element, m.atoms[3].aromatic), (34, true));

        // Naphthalene: 11 aromatic bonds, all in rings; the fusion atoms
        // have no hydrogens.
        let m = mol("c1ccc2ccccc2c1");
        assert_eq!(m.atoms.len(), 10);
        assert_eq!(kinds(&m), [0, 0, 0, 11]);
        assert_eq!(ring_bonds(&m), 11);
        assert_eq!(hs(&m), [1, 1, 1, 0, 1, 1, 1, 1, 0, 1]);
        assert_eq!(m.degree(3), 3);

        // Biphenyl without a bond symbol: the bond between the rings is
        // a bridge, so single.
        let m = mol("c1ccccc1c1ccccc1");
        assert_eq!(kinds(&m), [1, 0, 0, 12]);
        assert_eq!(ring_bonds(&m), 12);
        assert!(!m.bonds[6].in_ring);
    }

    #[test]
    fn smiles_rings() {
        let m = mol("C1CCCCC1");
        assert_eq!(kinds(&m), [6, 0, 0, 0]);
        assert_eq!(ring_bonds(&m), 6);
        assert_eq!(hs(&m), [2; 6]);

        let m = mol("C%10CCCCC%10");
        assert_eq!(kinds(&m), [6, 0, 0, 0]);
        assert_eq!(ring_bonds(&m), 6);
        assert_eq!(m, mol("C1CCCCC1"));

        // A bond symbol on a ring closure, on either side.
        for s in ["C=1CCCCC1", "C1CCCCC=1", "C=1CCCCC=1"] {
            let m = mol(s);
            assert_eq!(kinds(&m), [5, 1, 0, 0], "{s}");
            assert_eq!(ring_bonds(&m), 6, "{s}");
            assert_eq!(hs(&m), [1, 2, 2, 2, 2, 1], "{s}");
        }

        // Methylcyclohexane: the methyl bond is not in the ring.
        let m = mol("CC1CCCCC1");
        assert_eq!(ring_bonds(&m), 6);
        assert!(!m.bonds[0].in_ring);

        // Ring numbers can be reused once closed.
        let m = mol("C1CC1C1CC1");
        assert_eq!(m.atoms.len(), 6);
        assert_eq!(ring_bonds(&m), 6);
        assert_eq!(kinds(&m), [7, 0, 0, 0]);
    }

    #[test]
    fn smiles_bracket_atoms() {
        let m = mol("[NH4+]");
        assert_eq!(m.atoms.len(), 1);
        let a = &m.atoms[0];
        assert_eq!(
            (a.element, a.hydrogens, a.charge, a.bracket),
            (7, 4, 1, true)
        );

        let a = &mol("[13CH4]").atoms[0];
        assert_eq!((a.element, a.hydrogens, a.isotope), (6, 4, Some(13)));

        let a = &mol("[2H]").atoms[0];
        assert_eq!((a.element, a.hydrogens, a.isotope), (1, 0, Some(2)));

        for (s, z, q) in [
            ("[Zn++]", 30, 2),
            ("[Fe+3]", 26, 3),
            ("[O-]", 8, -1),
            ("[N+]", 7, 1),
            ("[Sb-3]", 51, -3),
            ("[Co]", 27, 0),
            ("[Sc]", 21, 0),
            ("[C]", 6, 0),
        ] {
            let a = &mol(s).atoms[0];
            assert_eq!((a.element, a.charge, a.hydrogens), (z, q, 0), "{s}");
        }
        assert_eq!(mol("[CH]").atoms[0].hydrogens, 1);
        assert_eq!(mol("[CH3:7]").atoms[0].hydrogens, 3);
        assert_eq!(mol("[C@H](F)(Cl)Br").atoms[0].chirality, Chirality::Ccw);
        assert_eq!(mol("[C@TH2H](F)(Cl)Br").atoms[0].chirality, Chirality::Cw);

        // Alanine.
        let m = mol("N[C@@H](C)C(=O)O");
        assert_eq!(m.atoms.len(), 6);
        assert_eq!(kinds(&m), [4, 1, 0, 0]);
        assert_eq!(hs(&m), [2, 1, 3, 0, 0, 1]);
        assert_eq!(m.atoms[1].chirality, Chirality::Cw);
        assert_eq!(m.degree(1), 3);

        // A salt: two parts, no bonds.
        let m = mol("[Na+].[Cl-]");
        assert_eq!(m.atoms.len(), 2);
        assert!(m.bonds.is_empty());
        assert_eq!((m.atoms[0].element, m.atoms[0].charge), (11, 1));
        assert_eq!((m.atoms[1].element, m.atoms[1].charge), (17, -1));
        assert_eq!(hs(&m), [0, 0]);

        // Nitromethane, charge-separated.
        let m = mol("C[N+](=O)[O-]");
        assert_eq!(kinds(&m), [2, 1, 0, 0]);
        let q: Vec<i8> = m.atoms.iter().map(|a| a.charge).collect();
        assert_eq!(q, [0, 1, 0, -1]);
        assert_eq!(hs(&m), [3, 0, 0, 0]);

        // Acetylene.
        let m = mol("C#C");
        assert_eq!(kinds(&m), [0, 0, 1, 0]);
        assert_eq!(hs(&m), [1, 1]);
    }

    #[test]
    fn smiles_misc_syntax() {
        // Directional bonds are single.
        let m = mol("F/C=C/F");
        assert_eq!(kinds(&m), [2, 1, 0, 0]);
        let m = mol("F/C=C\\F");
        assert_eq!(kinds(&m), [2, 1, 0, 0]);
        // Nested branches.
        let m = mol("CC(C(C)(C)C)(O)N");
        assert_eq!(m.atoms.len(), 8);
        assert_eq!(m.degree(1), 4);
        assert_eq!(m.degree(2), 4);
        // A dot inside a branch.
        let m = mol("C(.N)O");
        assert_eq!(m.bonds.len(), 1);
        assert_eq!((m.bonds[0].a, m.bonds[0].b), (0, 2));
        // Sulfur valences: DMSO and sulfuric acid.
        assert_eq!(hs(&mol("CS(=O)C")), [3, 0, 0, 3]);
        assert_eq!(hs(&mol("OS(=O)(=O)O")), [1, 0, 0, 0, 1]);
        // A heavy-atom degree ignores explicit hydrogens.
        let m = mol("[H]C([H])([H])O");
        assert_eq!(m.degree(1), 1);
        assert_eq!(m.degrees()[1], 1);
        // Ferrocene-style ring numbers on a bracket atom.
        let m = mol("C12C3=C4C5=C1[Fe]23456789C%10C6=C7C8=C9%10");
        assert_eq!(m.atoms.len(), 11);
    }

    #[test]
    fn smiles_malformed() {
        for (s, want) in [
            ("C1CC", "unclosed ring bond 1 at 2"),
            ("C(C", "unclosed '(' at 2"),
            ("C)", "unmatched ')' at 2"),
            ("[C", "unclosed '[' at 1"),
            ("Xx", "unknown element 'Xx' at 1"),
            ("CC[Xx]", "unknown element 'Xx' at 4"),
            ("C%1", "'%' must be followed by two digits at 2"),
            ("", "empty SMILES"),
            (")", "unmatched ')' at 1"),
            ("%1", "'%' must be followed by two digits at 1"),
            ("[", "unclosed '[' at 1"),
            ("C%", "'%' must be followed by two digits at 2"),
            ("Na", "element 'Na' must be written in brackets ([Na]) at 1"),
            (
                "CCu",
                "element 'Cu' must be written in brackets ([Cu]) at 2",
            ),
            ("Zn", "element 'Zn' must be written in brackets ([Zn]) at 1"),
            ("C=", "bond '=' not followed by an atom at 2"),
            ("=C", "bond '=' with no atom before it at 1"),
            ("C==C", "bond '=' right after bond '=' at 3"),
            ("C$C", "quadruple bond '$' is not supported at 2"),
            ("C()C", "empty branch '()' at 2"),
            ("C((C))", "'(' right after '(' at 3"),
            ("(C)", "'(' with no atom before it at 1"),
            ("C.", "'.' not followed by an atom at 2"),
            (".C", "'.' with no atom before it at 1"),
            ("C..C", "'.' with no atom before it at 3"),
            ("C11", "ring bond 1 closes on its own atom at 3"),
            (
                "C1C1",
                "ring bond 1 duplicates a bond between the same atoms at 4",
            ),
            (
                "C=1CCCCC#1",
                "ring bond 1 has conflicting bonds '=' and '#' at 10",
            ),
            ("1CC", "ring bond 1 does not follow an atom at 1"),
            ("[]", "missing element symbol in '[]' at 2"),
            ("[C+99]", "charge +99 out of range (at most 15) at 3"),
            ("[99999C]", "isotope too large at 6"),
            ("CCé", "unexpected character 'é' at 3"),
            ("CC O", "unexpected character ' ' at 3"),
            ("[xy]", "unknown aromatic element 'xy' at 2"),
        ] {
            match parse_smiles(s) {
                Ok(m) => panic!("{s:?} parsed: {m:?}"),
                Err(e) => assert_eq!(e.to_string(), want, "{s:?}"),
            }
        }
    }

    #[test]
    fn smiles_random_input_never_panics() {
        let mut rng = crate::util::Rng::new(0x5eed_5a11);
        let alphabet: Vec<char> = "CNOSPFIBrcl nosp[]()=#-:/\\.@+%0123456789H*$Zxe\u{e9}"
            .chars()
            .collect();
        let mut parsed = 0;
        for case in 0..20_000 {
            let len = rng.below(24) as usize;
            let s: String = if case % 4 == 0 {
                let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                    .collect()
            };
            if let Ok(m) = parse_smiles(&s) {
                parsed += 1;
                for b in &m.bonds {
                    assert!(
                        b.a < m.atoms.len() && b.b < m.atoms.len() && b.a != b.b,
                        "{s:?}"
                    );
                }
            }
        }
        assert!(parsed > 0);

        // Long and deeply nested inputs: no recursion, no stack overflow.
        let chain = "C".repeat(200_000);
        assert_eq!(parse_smiles(&chain).unwrap().bonds.len(), 199_999);
        let deep = format!("C{}", "(C".repeat(100_000)) + &")".repeat(100_000);
        assert_eq!(parse_smiles(&deep).unwrap().atoms.len(), 100_001);
        let ring = format!("C1{}C1", "C".repeat(100_000));
        assert!(parse_smiles(&ring).unwrap().bonds.iter().all(|b| b.in_ring));
    }
}
