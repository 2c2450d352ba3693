//! Compiling many expressions into one [`Program`] that shares work across them.
//!
//! Each expression becomes a small boolean tree over *atoms* (`http.host eq "a"`,
//! `ip.src in $office`, …). Atoms are interned, so two rules that test the same thing test it once.
//! Atoms of the common shapes are *indexed*: per value (`http.user_agent`, `lower(http.host)`, …) the
//! program keeps one hash table for `eq`/`in` literals, one Aho-Corasick automaton for
//! `contains`/`starts_with`/`ends_with` literals and one `RegexSet` for `matches`/`wildcard`; `ip.src`
//! atoms share a prefix table. A request first runs one pass per indexed value, which marks the atoms
//! that hold; only the expressions that one of those atoms can make true (their *triggers*), plus the
//! few that no indexed atom guards (e.g. `not ...`), are evaluated at all. The cost of a request then
//! grows with the number of values read and atoms that fire, not with the number of rules.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use aho_corasick::AhoCorasick;
use ipnetwork::IpNetwork;
use regex::{Regex, RegexSet, RegexSetBuilder};

use super::ast::{CmpOp, ElemIndex, Expr, Field, Func, Lit, Literal, LogicOp};
use super::check::{build_regex, wildcard_to_regex, REGEX_SIZE_LIMIT};
use super::error::{ParseError, Span};
use super::view::RequestView;

/// The values of a named list, as the program needs them.
#[derive(Debug, Clone, Copy)]
pub enum ListValues<'a> {
    /// IP addresses and ranges.
    Ip(&'a [IpNetwork]),
    /// Strings.
    Str(&'a [String]),
}

/// Identifies one expression added to a [`ProgramBuilder`]: they are numbered from 0 in order.
pub type ExprId = usize;

#[derive(Debug, Clone)]
enum Val {
    Scalar(Field),
    Elem { field: Field, key: String, idx: u32 },
    Star,
    Lower(Box<Val>),
    Upper(Box<Val>),
}

impl Val {
    fn has_star(&self) -> bool {
        match self {
            Val::Star => true,
            Val::Lower(v) | Val::Upper(v) => v.has_star(),
            _ => false,
        }
    }

    fn eval<'s>(&self, view: &'s RequestView<'_>, star: Option<&'s str>) -> Option<Cow<'s, str>> {
        match self {
            Val::Scalar(f) => view.scalar(*f).map(Cow::Borrowed),
            Val::Elem { field, key, idx } => view
                .array(*field, key)
                .nth(*idx as usize)
                .map(Cow::Borrowed),
            Val::Star => star.map(Cow::Borrowed),
            Val::Lower(v) => v.eval(view, star).map(|s| match s {
                Cow::Borrowed(b) if !b.bytes().any(|c| c.is_ascii_uppercase()) && b.is_ascii() => {
                    Cow::Borrowed(b)
                }
                s => Cow::Owned(s.to_lowercase()),
            }),
            Val::Upper(v) => v.eval(view, star).map(|s| Cow::Owned(s.to_uppercase())),
        }
    }
}

#[derive(Debug, Clone)]
enum IntVal {
    StrLen(Val),
    ArrayLen { field: Field, key: String },
}

impl IntVal {
    fn eval(&self, view: &RequestView<'_>, star: Option<&str>) -> Option<i64> {
        match self {
            IntVal::StrLen(v) => v.eval(view, star).map(|s| s.len() as i64),
            IntVal::ArrayLen { field, key } => Some(view.array(*field, key).count() as i64),
        }
    }
}

#[derive(Debug, Clone)]
enum StrTest {
    Eq(String),
    Cmp(CmpOp, String),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    Regex(Regex),
    In(HashSet<String>),
}

#[derive(Debug, Clone)]
enum Atom {
    Str {
        val: Val,
        test: StrTest,
    },
    Int {
        val: IntVal,
        op: CmpOp,
        n: i64,
    },
    IntIn {
        val: IntVal,
        set: Vec<i64>,
    },
    IpEq(IpAddr),
    IpIn(Vec<IpNetwork>),
    Quant {
        all: bool,
        field: Field,
        key: String,
        body: Box<Node>,
    },
}

#[derive(Debug, Clone)]
enum Node {
    Const(bool),
    Atom(u32),
    Inline(Box<Atom>),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Xor(Box<Node>, Box<Node>),
}

enum Lhs {
    Str(Val),
    Int(IntVal),
    Ip,
}

/// Collects expressions, then builds a [`Program`].
#[derive(Debug, Default)]
pub struct ProgramBuilder {
    atoms: Vec<Atom>,
    keys: HashMap<String, u32>,
    roots: Vec<Node>,
}

impl ProgramBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a type-checked expression (see [`super::check`]) read from `src`; `lists` gives the
    /// values of each `$name`.
    pub fn add<'l>(
        &mut self,
        src: &str,
        expr: &Expr,
        lists: &dyn Fn(&str) -> Option<ListValues<'l>>,
    ) -> Result<ExprId, ParseError> {
        let mut c = Compiler {
            src,
            lists,
            b: self,
        };
        let node = c.node(expr, false)?;
        self.roots.push(node);
        Ok(self.roots.len() - 1)
    }

    /// Builds the indexes and the triggers.
    pub fn build(self) -> Program {
        let ProgramBuilder { atoms, roots, .. } = self;
        let mut indexed = vec![false; atoms.len()];

        // Group indexable string atoms by the value they read.
        let mut groups: Vec<(Val, Vec<u32>)> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        let mut ip = IpIndex::default();
        for (i, atom) in atoms.iter().enumerate() {
            let id = i as u32;
            match atom {
                Atom::Str { val, test } if !val.has_star() => {
                    if matches!(test, StrTest::Cmp(..)) {
                        continue;
                    }
                    let key = format!("{val:?}");
                    let g = *group_of.entry(key).or_insert_with(|| {
                        groups.push((val.clone(), Vec::new()));
                        groups.len() - 1
                    });
                    groups[g].1.push(id);
                    indexed[i] = true;
                }
                Atom::IpEq(addr) => {
                    ip.insert(IpNetwork::from(*addr), id);
                    indexed[i] = true;
                }
                Atom::IpIn(nets) => {
                    for n in nets {
                        ip.insert(*n, id);
                    }
                    indexed[i] = true;
                }
                _ => {}
            }
        }
        let mut str_indexes = Vec::new();
        for (val, ids) in groups {
            let mut idx = StrIndex {
                val,
                eq: HashMap::new(),
                ac: None,
                ac_atoms: Vec::new(),
                set: None,
                set_atoms: Vec::new(),
            };
            let mut pats: Vec<String> = Vec::new();
            let mut pat_of: HashMap<String, usize> = HashMap::new();
            let mut regexes: Vec<(String, u32)> = Vec::new();
            for id in ids {
                let Atom::Str { test, .. } = &atoms[id as usize] else {
                    continue;
                };
                let mut add_pat = |p: &str, kind: AcKind| {
                    let n = *pat_of.entry(p.to_string()).or_insert_with(|| {
                        pats.push(p.to_string());
                        idx.ac_atoms.push(Vec::new());
                        pats.len() - 1
                    });
                    idx.ac_atoms[n].push((id, kind));
                };
                match test {
                    StrTest::Eq(s) => idx.eq.entry(s.clone()).or_default().push(id),
                    StrTest::In(set) => {
                        for s in set {
                            idx.eq.entry(s.clone()).or_default().push(id);
                        }
                    }
                    StrTest::Contains(p) => add_pat(p, AcKind::Contains),
                    StrTest::StartsWith(p) => add_pat(p, AcKind::Starts),
                    StrTest::EndsWith(p) => add_pat(p, AcKind::Ends),
                    StrTest::Regex(re) => regexes.push((re.as_str().to_string(), id)),
                    StrTest::Cmp(..) => {}
                }
            }
            if !pats.is_empty() {
                match AhoCorasick::new(&pats) {
                    Ok(ac) => idx.ac = Some(ac),
                    Err(_) => {
                        for list in &idx.ac_atoms {
                            for (id, _) in list {
                                indexed[*id as usize] = false;
                            }
                        }
                        idx.ac_atoms.clear();
                    }
                }
            }
            if !regexes.is_empty() {
                let set = RegexSetBuilder::new(regexes.iter().map(|(p, _)| p.as_str()))
                    .size_limit(REGEX_SIZE_LIMIT * 16)
                    .dfa_size_limit(REGEX_SIZE_LIMIT * 16)
                    .build();
                match set {
                    Ok(set) => {
                        idx.set = Some(set);
                        idx.set_atoms = regexes.iter().map(|(_, id)| *id).collect();
                    }
                    // Too big together: each regex is then run on its own when a rule needs it.
                    Err(_) => {
                        for (_, id) in &regexes {
                            indexed[*id as usize] = false;
                        }
                    }
                }
            }
            str_indexes.push(idx);
        }

        // Triggers: per expression, a set of indexed atoms at least one of which must hold for
        // the expression to hold. Prefer atoms that few expressions share (they fire less often).
        let mut usage = vec![0u32; atoms.len()];
        for r in &roots {
            let mut seen = HashSet::new();
            count_atoms(r, &mut seen);
            for a in seen {
                usage[a as usize] += 1;
            }
        }
        let mut atom_roots: Vec<Vec<u32>> = vec![Vec::new(); atoms.len()];
        let mut always = Vec::new();
        for (ri, r) in roots.iter().enumerate() {
            match trigger(r, &indexed, &usage) {
                Some((set, _)) => {
                    for a in set {
                        atom_roots[a as usize].push(ri as u32);
                    }
                }
                None => always.push(ri as u32),
            }
        }
        let template = indexed
            .iter()
            .map(|&i| if i { FALSE } else { UNKNOWN })
            .collect();
        Program {
            atoms,
            roots,
            str_indexes,
            ip,
            template,
            atom_roots,
            always,
        }
    }
}

fn count_atoms(n: &Node, seen: &mut HashSet<u32>) {
    match n {
        Node::Atom(a) => {
            seen.insert(*a);
        }
        Node::Not(x) => count_atoms(x, seen),
        Node::And(xs) | Node::Or(xs) => xs.iter().for_each(|x| count_atoms(x, seen)),
        Node::Xor(a, b) => {
            count_atoms(a, seen);
            count_atoms(b, seen);
        }
        Node::Const(_) | Node::Inline(_) => {}
    }
}

fn trigger(n: &Node, indexed: &[bool], usage: &[u32]) -> Option<(Vec<u32>, u64)> {
    match n {
        Node::Const(false) => Some((Vec::new(), 0)),
        Node::Atom(a) if indexed[*a as usize] => Some((vec![*a], u64::from(usage[*a as usize]))),
        Node::And(xs) => xs
            .iter()
            .filter_map(|x| trigger(x, indexed, usage))
            .min_by_key(|(_, cost)| *cost),
        Node::Or(xs) => {
            let mut all = Vec::new();
            let mut cost = 0;
            for x in xs {
                let (s, c) = trigger(x, indexed, usage)?;
                all.extend(s);
                cost += c;
            }
            Some((all, cost))
        }
        Node::Xor(a, b) => {
            let (mut s1, c1) = trigger(a, indexed, usage)?;
            let (s2, c2) = trigger(b, indexed, usage)?;
            s1.extend(s2);
            Some((s1, c1 + c2))
        }
        _ => None,
    }
}

struct Compiler<'a, 'l> {
    src: &'a str,
    lists: &'a dyn Fn(&str) -> Option<ListValues<'l>>,
    b: &'a mut ProgramBuilder,
}

impl Compiler<'_, '_> {
    fn internal(&self, span: Span, what: &str) -> ParseError {
        ParseError::new(
            self.src,
            span,
            format!("expected a type-checked expression ({what})"),
        )
    }

    fn leaf(&mut self, key: String, atom: Atom, inline: bool) -> Node {
        if inline {
            return Node::Inline(Box::new(atom));
        }
        let next = self.b.atoms.len() as u32;
        let id = *self.b.keys.entry(key).or_insert(next);
        if id == next {
            self.b.atoms.push(atom);
        }
        Node::Atom(id)
    }

    fn lhs(&self, e: &Expr) -> Result<Lhs, ParseError> {
        Ok(match e {
            Expr::Field(Field::IpSrc, _) => Lhs::Ip,
            Expr::Call {
                func: Func::Len,
                args,
                span,
            } => {
                let arg = args.first().ok_or_else(|| self.internal(*span, "len"))?;
                match arg {
                    Expr::Index { base, key, .. } => match &**base {
                        Expr::Field(field, _) => Lhs::Int(IntVal::ArrayLen {
                            field: *field,
                            key: key.clone(),
                        }),
                        _ => return Err(self.internal(*span, "len of map")),
                    },
                    other => Lhs::Int(IntVal::StrLen(self.val(other)?)),
                }
            }
            other => Lhs::Str(self.val(other)?),
        })
    }

    fn val(&self, e: &Expr) -> Result<Val, ParseError> {
        match e {
            Expr::Field(f, _) => Ok(Val::Scalar(*f)),
            Expr::Element { base, index, span } => match (&**base, index) {
                (Expr::Index { base: m, key, .. }, ElemIndex::At(n)) => match &**m {
                    Expr::Field(field, _) => Ok(Val::Elem {
                        field: *field,
                        key: key.clone(),
                        idx: *n,
                    }),
                    _ => Err(self.internal(*span, "element")),
                },
                (_, ElemIndex::Star) => Ok(Val::Star),
                _ => Err(self.internal(*span, "element")),
            },
            Expr::Call { func, args, span } => {
                let inner = args.first().ok_or_else(|| self.internal(*span, "call"))?;
                match func {
                    Func::Lower => Ok(Val::Lower(Box::new(self.val(inner)?))),
                    Func::Upper => Ok(Val::Upper(Box::new(self.val(inner)?))),
                    _ => Err(self.internal(*span, "string function")),
                }
            }
            other => Err(self.internal(other.span(), "value")),
        }
    }

    fn regex(&self, lit: &Lit, pattern: &str) -> Result<Regex, ParseError> {
        build_regex(pattern).map_err(|e| {
            ParseError::new(self.src, lit.span, format!("expected a valid regex: {e}"))
        })
    }

    fn node(&mut self, e: &Expr, inline: bool) -> Result<Node, ParseError> {
        Ok(match e {
            Expr::Bool(b, _) => Node::Const(*b),
            Expr::Not(inner, _) => Node::Not(Box::new(self.node(inner, inline)?)),
            Expr::Logic { op, lhs, rhs, .. } => {
                let l = self.node(lhs, inline)?;
                let r = self.node(rhs, inline)?;
                match op {
                    LogicOp::And => Node::And(flatten(l, r, true)),
                    LogicOp::Or => Node::Or(flatten(l, r, false)),
                    LogicOp::Xor => Node::Xor(Box::new(l), Box::new(r)),
                }
            }
            Expr::Compare { lhs, op, rhs, span } => {
                let negate = *op == CmpOp::Ne;
                let op = if negate { CmpOp::Eq } else { *op };
                let key = format!("{lhs} {} {}", op.name(), rhs.value);
                let atom = match (self.lhs(lhs)?, &rhs.value) {
                    (Lhs::Ip, Literal::Ip(a)) => Atom::IpEq(*a),
                    (Lhs::Int(val), Literal::Int(n)) => Atom::Int { val, op, n: *n },
                    (Lhs::Str(val), Literal::Str(s)) => {
                        let test = match op {
                            CmpOp::Eq => StrTest::Eq(s.clone()),
                            CmpOp::Contains => StrTest::Contains(s.clone()),
                            CmpOp::Matches => StrTest::Regex(self.regex(rhs, s)?),
                            CmpOp::Wildcard => {
                                StrTest::Regex(self.regex(rhs, &wildcard_to_regex(s))?)
                            }
                            other => StrTest::Cmp(other, s.clone()),
                        };
                        Atom::Str { val, test }
                    }
                    _ => return Err(self.internal(*span, "comparison")),
                };
                let inline = inline || matches!(&atom, Atom::Str { val, .. } if val.has_star());
                let leaf = self.leaf(key, atom, inline);
                if negate {
                    Node::Not(Box::new(leaf))
                } else {
                    leaf
                }
            }
            Expr::InSet { lhs, set, .. } => {
                let mut printed: Vec<String> = set.iter().map(|l| l.value.to_string()).collect();
                printed.sort();
                printed.dedup();
                let key = format!("{lhs} in {{{}}}", printed.join(" "));
                let lits = set.iter().map(|l| &l.value);
                let atom = self.set_atom(self.lhs(lhs)?, lits)?;
                let inline = inline || matches!(&atom, Atom::Str { val, .. } if val.has_star());
                self.leaf(key, atom, inline)
            }
            Expr::InList { lhs, list, span } => {
                let key = format!("{lhs} in ${list}");
                let values = (self.lists)(list).ok_or_else(|| {
                    ParseError::new(
                        self.src,
                        *span,
                        format!("expected a defined list; there is no list `${list}`"),
                    )
                })?;
                let lhs = self.lhs(lhs)?;
                let atom = match (lhs, values) {
                    (Lhs::Ip, ListValues::Ip(nets)) => Atom::IpIn(nets.to_vec()),
                    (Lhs::Str(val), ListValues::Str(items)) => Atom::Str {
                        val,
                        test: StrTest::In(items.iter().cloned().collect()),
                    },
                    _ => return Err(self.internal(*span, "list type")),
                };
                let inline = inline || matches!(&atom, Atom::Str { val, .. } if val.has_star());
                self.leaf(key, atom, inline)
            }
            Expr::Call { func, args, span } => match func {
                Func::StartsWith | Func::EndsWith => {
                    let (Some(v), Some(Expr::Str(p, _))) = (args.first(), args.get(1)) else {
                        return Err(self.internal(*span, "starts_with/ends_with"));
                    };
                    let val = self.val(v)?;
                    let key = e.to_string();
                    let test = if *func == Func::StartsWith {
                        StrTest::StartsWith(p.clone())
                    } else {
                        StrTest::EndsWith(p.clone())
                    };
                    let inline = inline || val.has_star();
                    self.leaf(key, Atom::Str { val, test }, inline)
                }
                Func::Any | Func::All => {
                    let body = args.first().ok_or_else(|| self.internal(*span, "any"))?;
                    let (field, key) =
                        star_array(body).ok_or_else(|| self.internal(*span, "[*]"))?;
                    let body = self.node(body, true)?;
                    let atom = Atom::Quant {
                        all: *func == Func::All,
                        field,
                        key,
                        body: Box::new(body),
                    };
                    self.leaf(e.to_string(), atom, inline)
                }
                _ => return Err(self.internal(*span, "condition")),
            },
            other => return Err(self.internal(other.span(), "condition")),
        })
    }

    fn set_atom<'x>(
        &self,
        lhs: Lhs,
        lits: impl Iterator<Item = &'x Literal>,
    ) -> Result<Atom, ParseError> {
        let lits: Vec<&Literal> = lits.collect();
        Ok(match lhs {
            Lhs::Ip => Atom::IpIn(
                lits.iter()
                    .filter_map(|l| match l {
                        Literal::Ip(a) => Some(IpNetwork::from(*a)),
                        Literal::Cidr(n) => Some(*n),
                        _ => None,
                    })
                    .collect(),
            ),
            Lhs::Int(val) => Atom::IntIn {
                val,
                set: lits
                    .iter()
                    .filter_map(|l| match l {
                        Literal::Int(n) => Some(*n),
                        _ => None,
                    })
                    .collect(),
            },
            Lhs::Str(val) => Atom::Str {
                val,
                test: StrTest::In(
                    lits.iter()
                        .filter_map(|l| match l {
                            Literal::Str(s) => Some(s.clone()),
                            _ => None,
                        })
                        .collect(),
                ),
            },
        })
    }
}

/// The map element `[*]` ranges over inside `any(...)`.
fn star_array(e: &Expr) -> Option<(Field, String)> {
    match e {
        Expr::Element {
            base,
            index: ElemIndex::Star,
            ..
        } => match &**base {
            Expr::Index { base: m, key, .. } => match &**m {
                Expr::Field(f, _) => Some((*f, key.clone())),
                _ => None,
            },
            _ => None,
        },
        Expr::Element { base, .. } | Expr::Index { base, .. } => star_array(base),
        Expr::Call { args, .. } => args.iter().find_map(star_array),
        Expr::Compare { lhs, .. } | Expr::InSet { lhs, .. } | Expr::InList { lhs, .. } => {
            star_array(lhs)
        }
        Expr::Not(x, _) => star_array(x),
        Expr::Logic { lhs, rhs, .. } => star_array(lhs).or_else(|| star_array(rhs)),
        _ => None,
    }
}

fn flatten(l: Node, r: Node, and: bool) -> Vec<Node> {
    let mut out = Vec::new();
    for n in [l, r] {
        match n {
            Node::And(xs) if and => out.extend(xs),
            Node::Or(xs) if !and => out.extend(xs),
            n => out.push(n),
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum AcKind {
    Contains,
    Starts,
    Ends,
}

#[derive(Debug, Clone)]
struct StrIndex {
    val: Val,
    eq: HashMap<String, Vec<u32>>,
    ac: Option<AhoCorasick>,
    ac_atoms: Vec<Vec<(u32, AcKind)>>,
    set: Option<RegexSet>,
    set_atoms: Vec<u32>,
}

/// `ip.src` atoms by prefix length: one hash lookup per distinct length.
#[derive(Debug, Clone, Default)]
struct IpIndex {
    v4: Vec<(u8, HashMap<u32, Vec<u32>>)>,
    v6: Vec<(u8, HashMap<u128, Vec<u32>>)>,
}

fn mask4(a: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask6(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(len)))
    }
}

impl IpIndex {
    fn insert(&mut self, net: IpNetwork, atom: u32) {
        let len = net.prefix();
        match net.ip() {
            IpAddr::V4(a) => {
                let slot = match self.v4.iter().position(|(l, _)| *l == len) {
                    Some(i) => i,
                    None => {
                        self.v4.push((len, HashMap::new()));
                        self.v4.len() - 1
                    }
                };
                let ids = self.v4[slot].1.entry(mask4(u32::from(a), len)).or_default();
                if !ids.contains(&atom) {
                    ids.push(atom);
                }
            }
            IpAddr::V6(a) => {
                let slot = match self.v6.iter().position(|(l, _)| *l == len) {
                    Some(i) => i,
                    None => {
                        self.v6.push((len, HashMap::new()));
                        self.v6.len() - 1
                    }
                };
                let ids = self.v6[slot]
                    .1
                    .entry(mask6(u128::from(a), len))
                    .or_default();
                if !ids.contains(&atom) {
                    ids.push(atom);
                }
            }
        }
    }

    fn lookup(&self, ip: IpAddr, mut hit: impl FnMut(u32)) {
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is matched as IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                for (len, map) in &self.v4 {
                    if let Some(ids) = map.get(&mask4(a, *len)) {
                        ids.iter().for_each(|&i| hit(i));
                    }
                }
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                for (len, map) in &self.v6 {
                    if let Some(ids) = map.get(&mask6(a, *len)) {
                        ids.iter().for_each(|&i| hit(i));
                    }
                }
            }
        }
    }
}

const UNKNOWN: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;

/// Many compiled expressions sharing their atoms and indexes. Immutable, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Program {
    atoms: Vec<Atom>,
    roots: Vec<Node>,
    str_indexes: Vec<StrIndex>,
    ip: IpIndex,
    template: Vec<u8>,
    atom_roots: Vec<Vec<u32>>,
    always: Vec<u32>,
}

impl Program {
    /// Number of expressions.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Whether there are no expressions.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// Number of distinct atoms after interning.
    pub fn atom_count(&self) -> usize {
        self.atoms.len()
    }

    /// Runs the shared passes over `view` and returns an evaluation from which expressions are
    /// evaluated on demand.
    pub fn start<'p, 'v, 'r>(&'p self, view: &'v RequestView<'r>) -> Evaluation<'p, 'v, 'r> {
        let mut state = self.template.clone();
        let mut fired: Vec<u32> = Vec::new();
        let mut mark = |a: u32, state: &mut Vec<u8>| {
            if let Some(s) = state.get_mut(a as usize) {
                if *s != TRUE {
                    *s = TRUE;
                    fired.push(a);
                }
            }
        };
        for idx in &self.str_indexes {
            let Some(value) = idx.val.eval(view, None) else {
                continue;
            };
            let value: &str = &value;
            if let Some(ids) = idx.eq.get(value) {
                ids.iter().for_each(|&a| mark(a, &mut state));
            }
            if let Some(ac) = &idx.ac {
                for m in ac.find_overlapping_iter(value) {
                    for &(a, kind) in idx
                        .ac_atoms
                        .get(m.pattern().as_usize())
                        .into_iter()
                        .flatten()
                    {
                        let holds = match kind {
                            AcKind::Contains => true,
                            AcKind::Starts => m.start() == 0,
                            AcKind::Ends => m.end() == value.len(),
                        };
                        if holds {
                            mark(a, &mut state);
                        }
                    }
                }
            }
            if let Some(set) = &idx.set {
                for i in set.matches(value).iter() {
                    if let Some(&a) = idx.set_atoms.get(i) {
                        mark(a, &mut state);
                    }
                }
            }
        }
        if let Some(ip) = view.ip() {
            self.ip.lookup(ip, |a| mark(a, &mut state));
        }
        let mut candidates = self.always.clone();
        for a in &fired {
            if let Some(rs) = self.atom_roots.get(*a as usize) {
                candidates.extend_from_slice(rs);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        Evaluation {
            prog: self,
            view,
            state,
            candidates,
        }
    }

    /// Evaluates one expression on its own (no shared passes): the naive baseline, and a
    /// cross-check for tests.
    pub fn eval_naive(&self, id: ExprId, view: &RequestView<'_>) -> bool {
        let mut ev = Evaluation {
            prog: self,
            view,
            state: vec![UNKNOWN; self.atoms.len()],
            candidates: Vec::new(),
        };
        ev.eval(id)
    }
}

/// One request's evaluation of a [`Program`].
#[derive(Debug)]
pub struct Evaluation<'p, 'v, 'r> {
    prog: &'p Program,
    view: &'v RequestView<'r>,
    state: Vec<u8>,
    candidates: Vec<u32>,
}

impl Evaluation<'_, '_, '_> {
    /// The expressions that may hold, in ascending order; every other one is false.
    pub fn candidates(&self) -> &[u32] {
        &self.candidates
    }

    /// Evaluates expression `id` (false for an unknown id).
    pub fn eval(&mut self, id: ExprId) -> bool {
        let prog = self.prog;
        match prog.roots.get(id) {
            Some(node) => self.node(node, None),
            None => false,
        }
    }

    fn node(&mut self, n: &Node, star: Option<&str>) -> bool {
        match n {
            Node::Const(b) => *b,
            Node::Atom(a) => {
                let i = *a as usize;
                match self.state.get(i).copied() {
                    Some(TRUE) => true,
                    Some(FALSE) => false,
                    Some(_) => {
                        let prog = self.prog;
                        let v = prog
                            .atoms
                            .get(i)
                            .map(|atom| self.atom(atom, None))
                            .unwrap_or(false);
                        self.state[i] = if v { TRUE } else { FALSE };
                        v
                    }
                    None => false,
                }
            }
            Node::Inline(atom) => self.atom(atom, star),
            Node::Not(x) => !self.node(x, star),
            Node::And(xs) => xs.iter().all(|x| self.node(x, star)),
            Node::Or(xs) => xs.iter().any(|x| self.node(x, star)),
            Node::Xor(a, b) => self.node(a, star) ^ self.node(b, star),
        }
    }

    fn atom(&mut self, atom: &Atom, star: Option<&str>) -> bool {
        let view = self.view;
        match atom {
            Atom::Str { val, test } => {
                let Some(v) = val.eval(view, star) else {
                    return false;
                };
                let v: &str = &v;
                match test {
                    StrTest::Eq(s) => v == s,
                    StrTest::Cmp(op, s) => match op {
                        CmpOp::Lt => v < s.as_str(),
                        CmpOp::Le => v <= s.as_str(),
                        CmpOp::Gt => v > s.as_str(),
                        CmpOp::Ge => v >= s.as_str(),
                        _ => false,
                    },
                    StrTest::Contains(s) => v.contains(s.as_str()),
                    StrTest::StartsWith(s) => v.starts_with(s.as_str()),
                    StrTest::EndsWith(s) => v.ends_with(s.as_str()),
                    StrTest::Regex(re) => re.is_match(v),
                    StrTest::In(set) => set.contains(v),
                }
            }
            Atom::Int { val, op, n } => {
                let Some(v) = val.eval(view, star) else {
                    return false;
                };
                match op {
                    CmpOp::Eq => v == *n,
                    CmpOp::Lt => v < *n,
                    CmpOp::Le => v <= *n,
                    CmpOp::Gt => v > *n,
                    CmpOp::Ge => v >= *n,
                    _ => false,
                }
            }
            Atom::IntIn { val, set } => val.eval(view, star).is_some_and(|v| set.contains(&v)),
            Atom::IpEq(a) => view
                .ip()
                .is_some_and(|ip| normalize_ip(ip) == normalize_ip(*a)),
            Atom::IpIn(nets) => view.ip().is_some_and(|ip| {
                let ip = normalize_ip(ip);
                nets.iter().any(|n| n.contains(ip))
            }),
            Atom::Quant {
                all,
                field,
                key,
                body,
            } => {
                let items: Vec<&str> = view.array(*field, key).collect();
                if items.is_empty() {
                    return false;
                }
                if *all {
                    items.iter().all(|it| self.node(body, Some(it)))
                } else {
                    items.iter().any(|it| self.node(body, Some(it)))
                }
            }
        }
    }
}

fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::{check, ListKind};
    use super::super::parse::parse;
    use super::*;
    use crate::input::HttpRequest;

    fn program(exprs: &[&str]) -> Program {
        let office: Vec<IpNetwork> = vec!["192.0.2.0/24".parse().unwrap()];
        let bots: Vec<String> = vec!["sqlmap".into(), "nikto".into()];
        let kinds = |n: &str| match n {
            "office" => Some(ListKind::Ip),
            "bots" => Some(ListKind::Str),
            _ => None,
        };
        let values = |n: &str| match n {
            "office" => Some(ListValues::Ip(&office)),
            "bots" => Some(ListValues::Str(&bots)),
            _ => None,
        };
        let mut b = ProgramBuilder::new();
        for src in exprs {
            let e = parse(src).unwrap();
            check(src, &e, &kinds).unwrap();
            b.add(src, &e, &values).unwrap();
        }
        b.build()
    }

    fn req(method: &str, uri: &str, ip: &str, headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            uri: uri.into(),
            version: "HTTP/1.1".into(),
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: Vec::new(),
            client_ip: ip.parse().ok(),
            country: Some("FR".into()),
        }
    }

    /// Every expression gives the same answer through the shared passes as on its own.
    fn agree(p: &Program, r: &HttpRequest) -> Vec<bool> {
        let view = RequestView::new(r);
        let mut ev = p.start(&view);
        let cands: Vec<u32> = ev.candidates().to_vec();
        (0..p.len())
            .map(|i| {
                let fast = cands.contains(&(i as u32)) && ev.eval(i);
                assert_eq!(fast, p.eval_naive(i, &view), "expression {i}");
                fast
            })
            .collect()
    }

    #[test]
    fn shared_passes_agree_with_naive() {
        let p = program(&[
            r#"http.request.method eq "POST" and http.request.uri.path eq "/login""#,
            r#"starts_with(http.request.uri.path, "/admin") and not ip.src in $office"#,
            r#"lower(http.user_agent) contains "sqlmap" or lower(http.user_agent) in $bots"#,
            r#"http.user_agent matches "(?i)nikto|masscan""#,
            r#"ends_with(http.request.uri.path, ".php")"#,
            r#"ip.src in {10.0.0.0/8 2001:db8::/32} or ip.src eq 198.51.100.7"#,
            r#"any(lower(http.request.headers["x-forwarded-for"][*]) contains "127.0.0.1")"#,
            r#"len(http.request.uri.args["q"][0]) gt 10 and http.request.uri.path eq "/search""#,
            r#"http.request.uri.args["q"][0] ne "x""#,
            r#"http.host wildcard "*.EXAMPLE.com" xor ip.src.country eq "FR""#,
            r#"len(http.request.headers["cookie"]) ge 2"#,
            r#"http.request.cookies["sid"][0] eq "abc" and http.request.uri.query contains "card=""#,
        ]);
        let cases = [
            req("POST", "/login", "203.0.113.9", &[]),
            req(
                "GET",
                "/admin/users",
                "203.0.113.9",
                &[("User-Agent", "SQLMap/1.0")],
            ),
            req("GET", "/%61dmin", "192.0.2.10", &[("User-Agent", "nikto")]),
            req(
                "GET",
                "/index.php",
                "10.1.2.3",
                &[("Host", "shop.example.com")],
            ),
            req(
                "GET",
                "/search?q=aaaaaaaaaaaaaaa",
                "2001:db8::1",
                &[("X-Forwarded-For", "10.0.0.1, 127.0.0.1")],
            ),
            req(
                "GET",
                "/pay?card=1",
                "::ffff:198.51.100.7",
                &[("Cookie", "sid=abc"), ("cookie", "x=y")],
            ),
            req("GET", "/", "", &[]),
        ];
        let got: Vec<Vec<bool>> = cases.iter().map(|r| agree(&p, r)).collect();
        let expected = [
            (0, 0, true, ""),
            (1, 1, true, ""),
            (1, 2, true, ""),
            (2, 1, false, "office address"),
            (2, 2, true, ""),
            (2, 3, true, ""),
            (3, 4, true, ""),
            (3, 5, true, ""),
            (4, 5, true, ""),
            (4, 6, true, ""),
            (4, 7, true, ""),
            (5, 5, true, "v4-mapped address"),
            (5, 10, true, ""),
            (5, 11, true, ""),
            (6, 8, true, "missing arg is not equal"),
            (6, 5, false, "no address"),
            (0, 9, true, ""),
        ];
        for (case, expr, want, why) in expected {
            assert_eq!(got[case][expr], want, "case {case} expression {expr} {why}");
        }
    }

    #[test]
    fn atoms_are_shared() {
        let p = program(&[
            r#"http.request.method eq "POST" and http.request.uri.path eq "/a""#,
            r#"http.request.method eq "POST" and http.request.uri.path eq "/b""#,
            r#"http.request.method == "POST""#,
        ]);
        assert_eq!(p.atom_count(), 3);
        // The path atoms are the triggers: a POST elsewhere evaluates only the third expression.
        let r = req("POST", "/c", "192.0.2.1", &[]);
        let view = RequestView::new(&r);
        assert_eq!(p.start(&view).candidates(), &[2]);
    }
}
