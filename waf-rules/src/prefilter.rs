//! The multi-rule literal prefilter.
//!
//! For every `@rx` rule, load time works out a small set of literals one of which any match
//! must contain (from the regex's syntax tree: concatenated literals, case-insensitive letters,
//! alternations, and small finite languages such as `7z[arx]?[ ,]` spelled out). Where a
//! pattern needs no literal in general, the same analysis of the pattern restricted to values
//! without a [`marked_byte`] often finds one (CRS's evasion-tolerant command names need `cat`
//! once quotes and backslashes cannot sit between the letters): such a rule skips unmarked
//! values without the literal and runs on every marked one. Rules that read values through the
//! same transformation chain share one
//! Aho-Corasick automaton over all their literals. At request time one pass of that automaton
//! over a transformed value tells which of those rules can match it at all; the regex runs only
//! for those. The cost per value grows with the value, not with the number of rules.

use regex_syntax::hir::{Class, Hir, HirKind};

enum Need {
    /// The sub-pattern matches exactly this text (lower-cased).
    Exact(Vec<u8>),
    /// The sub-pattern matches exactly one of these texts (lower-cased; may hold the empty
    /// text): a small finite language such as `ls|xz`, `7z[arx]?` or `[ ,]`.
    Set(Vec<Vec<u8>>),
    /// Any match contains one of these.
    OneOf(Vec<Vec<u8>>),
    /// Nothing useful is known.
    Unknown,
}

/// Largest finite language kept while concatenating (`Need::Set`).
const MAX_PRODUCT: usize = 512;

const MAX_SET: usize = 512;

/// A one-byte literal is selective enough when benign text rarely holds it.
fn rare_byte(b: u8) -> bool {
    !b.is_ascii_alphanumeric()
        && !matches!(
            b,
            b' ' | b'.' | b'/' | b'-' | b'_' | b',' | b':' | b';' | b'&' | b'%' | b'+'
        )
}

fn selective(l: &[u8]) -> bool {
    l.len() >= 2 || (l.len() == 1 && rare_byte(l[0]))
}

fn class_letter(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [b] => Some(b.to_ascii_lowercase()),
        [a, b] if a.eq_ignore_ascii_case(b) && a != b => Some(a.to_ascii_lowercase()),
        _ => None,
    }
}

/// Most distinct bytes (ASCII case folded) a class may have to be spelled out as a set.
const MAX_CLASS: usize = 8;

/// The bytes of a small class (at most [`MAX_CLASS`] once ASCII case is folded; under `(?i)`,
/// CRS 930100's `%[256aef]e` is 9 bytes, 6 folded), or `None`.
fn class_bytes(c: &Class) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut folded = [false; 128];
    let mut distinct = 0;
    let mut add = |x: u8, out: &mut Vec<u8>| -> Option<()> {
        if x.is_ascii() {
            let f = &mut folded[x.to_ascii_lowercase() as usize];
            if !*f {
                *f = true;
                distinct += 1;
            }
        } else {
            distinct += 1;
        }
        out.push(x);
        (distinct <= MAX_CLASS).then_some(())
    };
    match c {
        Class::Bytes(b) => {
            for r in b.iter() {
                for x in r.start()..=r.end() {
                    add(x, &mut out)?;
                }
            }
        }
        Class::Unicode(u) => {
            for r in u.iter() {
                for x in u32::from(r.start())..=u32::from(r.end()) {
                    add(u8::try_from(x).ok().filter(u8::is_ascii)?, &mut out)?;
                }
            }
        }
    }
    Some(out)
}

fn score(set: &[Vec<u8>]) -> (bool, usize, std::cmp::Reverse<usize>) {
    (
        set.iter().all(|l| selective(l)),
        set.iter().map(Vec::len).min().unwrap_or(0),
        std::cmp::Reverse(set.len()),
    )
}

/// `a` followed by `b`, as a finite language, unless it grows past [`MAX_PRODUCT`].
fn product(a: &[Vec<u8>], b: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if a.len() * b.len() > MAX_PRODUCT {
        return None;
    }
    let mut out: Vec<Vec<u8>> = a
        .iter()
        .flat_map(|x| b.iter().map(move |y| [x.as_slice(), y].concat()))
        .collect();
    out.sort();
    out.dedup();
    Some(out)
}

/// Each text of `set` followed by the first byte of each, when no text is empty: what two
/// texts of the set in a row always hold.
fn followed_by_first_byte(set: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if set.iter().any(Vec::is_empty) {
        return None;
    }
    let mut firsts: Vec<Vec<u8>> = set.iter().map(|t| t[..1].to_vec()).collect();
    firsts.sort();
    firsts.dedup();
    product(set, &firsts)
}

/// A requirement from a finite language: one of its texts, when none is empty.
fn contains_one_of(set: Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> {
    (!set.is_empty() && set.iter().all(|l| !l.is_empty())).then_some(set)
}

fn analyze(h: &Hir) -> Need {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Need::Exact(Vec::new()),
        HirKind::Literal(l) => Need::Exact(l.0.to_ascii_lowercase()),
        HirKind::Class(c) => match class_bytes(c) {
            Some(bytes) => match class_letter(&bytes) {
                Some(b) => Need::Exact(vec![b]),
                None => {
                    let mut set: Vec<Vec<u8>> =
                        bytes.iter().map(|b| vec![b.to_ascii_lowercase()]).collect();
                    set.sort();
                    set.dedup();
                    Need::Set(set)
                }
            },
            None => Need::Unknown,
        },
        HirKind::Capture(c) => analyze(&c.sub),
        HirKind::Repetition(r) => {
            let sub = analyze(&r.sub);
            if r.min == 0 {
                // `x?` over a finite language is finite; `x*` tells nothing.
                return match (r.max, sub) {
                    (Some(1), Need::Exact(e)) => Need::Set(vec![Vec::new(), e]),
                    (Some(1), Need::Set(mut s)) => {
                        s.push(Vec::new());
                        s.sort();
                        s.dedup();
                        Need::Set(s)
                    }
                    _ => Need::Unknown,
                };
            }
            match sub {
                Need::Exact(e) if r.min == 1 && r.max == Some(1) => Need::Exact(e),
                Need::Exact(e) if e.is_empty() => Need::Exact(e),
                Need::Exact(e) if r.max == Some(r.min) && r.min <= 8 => {
                    Need::Exact(e.repeat(r.min as usize))
                }
                // `x{2,3}` always holds `xx`.
                Need::Exact(e) => Need::OneOf(vec![e.repeat(r.min.min(8) as usize)]),
                Need::Set(s) if r.min == 1 && r.max == Some(1) => Need::Set(s),
                // At least two in a row: a match holds one text followed by another, or at
                // least by that other's first byte (CRS 930100's `(?:\.|%2e|…){2,3}`: too many
                // pairs to spell out, but every match holds `..`, `.%`, `%2` or the like).
                Need::Set(s) if r.min >= 2 => product(&s, &s)
                    .and_then(contains_one_of)
                    .or_else(|| followed_by_first_byte(&s))
                    .or_else(|| contains_one_of(s))
                    .map_or(Need::Unknown, Need::OneOf),
                Need::Set(s) => contains_one_of(s).map_or(Need::Unknown, Need::OneOf),
                other => other,
            }
        }
        HirKind::Concat(items) => match concat_needs(items) {
            Err(whole) => finite(whole),
            Ok(mut sets) => {
                best_of(&sets, None).map_or(Need::Unknown, |i| Need::OneOf(sets.swap_remove(i)))
            }
        },
        HirKind::Alternation(alts) => {
            let mut set = Vec::new();
            let mut finite = true;
            for a in alts {
                match analyze(a) {
                    Need::Exact(e) => set.push(e),
                    Need::Set(s) => set.extend(s),
                    Need::OneOf(s) => {
                        finite = false;
                        set.extend(s);
                    }
                    Need::Unknown => return Need::Unknown,
                }
                if set.len() > MAX_SET {
                    return Need::Unknown;
                }
            }
            set.sort();
            set.dedup();
            if finite {
                Need::Set(set)
            } else {
                contains_one_of(set).map_or(Need::Unknown, Need::OneOf)
            }
        }
    }
}

/// What a concatenation's matches need: `Err` with its whole finite language when every piece
/// is finite, else the literal sets each match contains one of, in pattern order: the finite
/// runs between the other pieces and what those pieces need. Each comes from a different
/// stretch of the pattern, so a match contains one literal of every set.
fn concat_needs(items: &[Hir]) -> Result<Vec<Vec<Vec<u8>>>, Vec<Vec<u8>>> {
    // `cur`: the finite language of the run of finite pieces so far.
    let mut cur: Vec<Vec<u8>> = vec![Vec::new()];
    let mut all_finite = true;
    let mut sets: Vec<Vec<Vec<u8>>> = Vec::new();
    for it in items {
        let piece = match analyze(it) {
            Need::Exact(e) => vec![e],
            Need::Set(s) => s,
            other => {
                all_finite = false;
                sets.extend(contains_one_of(std::mem::replace(
                    &mut cur,
                    vec![Vec::new()],
                )));
                if let Need::OneOf(s) = other {
                    sets.push(s);
                }
                continue;
            }
        };
        match product(&cur, &piece) {
            Some(p) => cur = p,
            None => {
                // Too many combinations: keep what the run had, start anew.
                all_finite = false;
                sets.extend(contains_one_of(std::mem::replace(&mut cur, piece)));
            }
        }
    }
    if all_finite {
        return Err(cur);
    }
    sets.extend(contains_one_of(cur));
    Ok(sets)
}

/// A finite language as a need: one text, or a set of them.
fn finite(whole: Vec<Vec<u8>>) -> Need {
    match <[Vec<u8>; 1]>::try_from(whole) {
        Ok([e]) => Need::Exact(e),
        Err(set) => Need::Set(set),
    }
}

/// What `analyze` makes of `hir`, and, for a pattern that is a concatenation at its top, a
/// second literal set every match also holds one of, from another stretch of the pattern:
/// CRS 941120 needs `on` and `=`, 942151 a function name and `(` (an alternation's branches
/// need different things, so only a top-level concatenation has one). One analysis for both.
fn analyze_with_second(mut hir: &Hir) -> (Need, Option<Vec<Vec<u8>>>) {
    while let HirKind::Capture(c) = hir.kind() {
        hir = &c.sub;
    }
    let HirKind::Concat(items) = hir.kind() else {
        return (analyze(hir), None);
    };
    match concat_needs(items) {
        Err(whole) => (finite(whole), None),
        Ok(mut sets) => match best_of(&sets, None) {
            None => (Need::Unknown, None),
            Some(first) => {
                let second = best_of(&sets, Some(first)).map(|i| std::mem::take(&mut sets[i]));
                (Need::OneOf(sets.swap_remove(first)), second)
            }
        },
    }
}

/// The index of the best-scoring set but `except` (the first of equals).
fn best_of(sets: &[Vec<Vec<u8>>], except: Option<usize>) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, set) in sets.iter().enumerate() {
        if Some(i) != except && best.is_none_or(|b| score(set) > score(&sets[b])) {
            best = Some(i);
        }
    }
    best
}

/// Parses a pattern in the byte-oriented form the engine compiles (Unicode off, dot matches
/// newline), as the regex builder will read it.
pub fn parse_bytes(pattern: &str) -> Option<Hir> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .dot_matches_new_line(true)
        .build()
        .parse(pattern)
        .ok()
}

/// Literals (lower-cased) one of which every match of `pattern` contains, when such a set
/// exists and is selective (each literal at least two bytes). `pattern` is the byte-oriented
/// form the engine compiles (Unicode off).
pub fn required_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    literals_of(&parse_bytes(pattern)?)
}

/// [`required_literals`] of an already parsed pattern.
pub fn literals_of(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    need_literals(analyze(hir))
}

/// The literals a need gives the prefilter, when they are selective.
fn need_literals(need: Need) -> Option<Vec<Vec<u8>>> {
    let set = match need {
        Need::Exact(e) => vec![e],
        Need::Set(s) => contains_one_of(s)?,
        Need::OneOf(s) => s,
        Need::Unknown => return None,
    };
    selective_set(set)
}

/// `set` with no literal that holds another (a value holding `abcd` holds `cd`), when it is
/// small and every literal is selective.
fn selective_set(set: Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> {
    if set.is_empty() || set.len() > MAX_SET || !set.iter().all(|l| selective(l)) {
        return None;
    }
    // A value holding `abcd` holds `cd`: keep only literals with no other one inside them.
    let mut by_len = set;
    by_len.sort_by_key(Vec::len);
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(by_len.len());
    for l in by_len {
        if !kept
            .iter()
            .any(|k| l.windows(k.len()).any(|w| w == k.as_slice()))
        {
            kept.push(l);
        }
    }
    kept.sort();
    Some(kept)
}

/// Bytes that make a value "marked": the quoting, grouping, escaping and separator characters
/// injections are made of, and control bytes. Benign parameters rarely hold any (names,
/// addresses, numbers, identifiers, prose), and many CRS patterns that need no literal in
/// general need one in a value without these bytes: `b["')\[\x5c]*u["')\[\x5c]*s...`
/// needs `bus...` once the evasion classes cannot match.
#[inline]
pub fn marked_byte(b: u8) -> bool {
    MARKED[b as usize]
}

/// [`marked_byte`] as a table (one load per byte of a value).
static MARKED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = is_marked_byte(b as u8);
        b += 1;
    }
    t
};

/// The definition of [`marked_byte`], for tables built at compile time.
pub(crate) const fn is_marked_byte(c: u8) -> bool {
    c < 0x20
        || c == 0x7f
        || matches!(
            c,
            b'"' | b'\''
                | b'('
                | b')'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'<'
                | b'>'
                | b'\\'
                | b'$'
                | b'|'
                | b'&'
                | b';'
                | b'`'
                | b'^'
                | b'*'
        )
}

/// Whether `h` matches nothing at all (an empty class).
fn is_fail(h: &Hir) -> bool {
    match h.kind() {
        HirKind::Class(Class::Bytes(c)) => c.ranges().is_empty(),
        HirKind::Class(Class::Unicode(c)) => c.ranges().is_empty(),
        _ => false,
    }
}

/// `h` restricted to the strings without a marked byte: what it can match in an unmarked
/// value. Classes lose their marked bytes, a piece that needs one matches nothing, and an
/// optional piece that needs one drops out. Looks (`^`, `\b`) stay: they read only
/// neighbouring bytes of the value itself.
pub fn unmarked(h: &Hir) -> Hir {
    use regex_syntax::hir::{ClassBytes, ClassBytesRange, ClassUnicode, ClassUnicodeRange};
    let marked: Vec<u8> = (0..=255u8).filter(|&b| marked_byte(b)).collect();
    let bytes = ClassBytes::new(marked.iter().map(|&b| ClassBytesRange::new(b, b)));
    let uni = ClassUnicode::new(
        marked
            .iter()
            .map(|&b| ClassUnicodeRange::new(char::from(b), char::from(b))),
    );
    restrict(h, &bytes, &uni)
}

fn restrict(
    h: &Hir,
    bytes: &regex_syntax::hir::ClassBytes,
    uni: &regex_syntax::hir::ClassUnicode,
) -> Hir {
    let unmarked = |h: &Hir| restrict(h, bytes, uni);
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => h.clone(),
        HirKind::Literal(l) => {
            if l.0.iter().any(|&b| marked_byte(b)) {
                Hir::fail()
            } else {
                h.clone()
            }
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut c = c.clone();
            c.difference(bytes);
            Hir::class(Class::Bytes(c))
        }
        HirKind::Class(Class::Unicode(c)) => {
            let mut c = c.clone();
            c.difference(uni);
            Hir::class(Class::Unicode(c))
        }
        HirKind::Capture(c) => unmarked(&c.sub),
        HirKind::Repetition(r) => {
            let sub = unmarked(&r.sub);
            if is_fail(&sub) {
                if r.min == 0 {
                    Hir::empty()
                } else {
                    Hir::fail()
                }
            } else {
                let mut r = r.clone();
                r.sub = Box::new(sub);
                Hir::repetition(r)
            }
        }
        HirKind::Concat(items) => {
            let items: Vec<Hir> = items.iter().map(unmarked).collect();
            if items.iter().any(is_fail) {
                Hir::fail()
            } else {
                Hir::concat(items)
            }
        }
        HirKind::Alternation(alts) => {
            let alts: Vec<Hir> = alts.iter().map(unmarked).filter(|a| !is_fail(a)).collect();
            if alts.is_empty() {
                Hir::fail()
            } else {
                Hir::alternation(alts)
            }
        }
    }
}

/// The prefilter's knowledge of one pattern: literals (lower-cased) one of which a match
/// contains. With `unmarked_only`, that holds only for values without a [`marked_byte`]
/// (a value with one must run the regex); an empty list then means the pattern cannot match
/// an unmarked value at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Required {
    /// The literals.
    pub literals: Vec<Vec<u8>>,
    /// Whether they hold only for unmarked values.
    pub unmarked_only: bool,
    /// A second set every match also holds one of (from another stretch of a concatenation; empty: none). Only
    /// with `unmarked_only` false.
    pub also: Vec<Vec<u8>>,
}

/// What the prefilter can use for a parsed pattern: its required literals, or failing that,
/// those of its unmarked restriction.
pub fn required_of(hir: &Hir) -> Option<Required> {
    let (need, second) = analyze_with_second(hir);
    if let Some(literals) = need_literals(need) {
        return Some(Required {
            literals,
            unmarked_only: false,
            also: second.and_then(selective_set).unwrap_or_default(),
        });
    }
    let u = unmarked(hir);
    let literals = if is_fail(&u) {
        Vec::new()
    } else {
        literals_of(&u)?
    };
    Some(Required {
        literals,
        unmarked_only: true,
        also: Vec::new(),
    })
}

/// What load-time analysis found for each `@rx` pattern that parsed: the literals the
/// prefilter uses (or none). An eager load records them ([`crate::RuleSet::rx_hints`]); a
/// build step can embed them so that a later lazy load (the edge worker's cold start) skips
/// parsing the patterns at all. Keyed by two independent 64-bit hashes of the pattern text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RxHints {
    map: std::collections::HashMap<(u64, u64), Literals>,
}

/// A pattern's prefilter literals, if it has a selective set.
pub type Literals = Option<Required>;

/// One analysis as a build script embeds it ([`RxHints::write_rows`]): the pattern's key,
/// then, if it has a selective set, its literals, whether they hold only for unmarked values,
/// and the second set ([`Required`]).
pub type RxHintRow = (
    u64,
    u64,
    Option<(&'static [&'static [u8]], bool, &'static [&'static [u8]])>,
);

impl RxHints {
    /// The key of a pattern (as written in the rule).
    pub fn key(pattern: &str) -> (u64, u64) {
        let mut a = 0xcbf2_9ce4_8422_2325u64;
        let mut b = 0x8422_2325_cbf2_9ce4u64 ^ pattern.len() as u64;
        for &x in pattern.as_bytes() {
            a = (a ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
            b = (b.rotate_left(7) ^ u64::from(x)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        (a, b)
    }

    /// Records what a pattern's analysis found.
    pub fn insert(&mut self, key: (u64, u64), literals: Literals) {
        self.map.insert(key, literals);
    }

    /// What was recorded for `pattern`, if anything.
    pub fn get(&self, pattern: &str) -> Option<&Literals> {
        self.map.get(&Self::key(pattern))
    }

    /// Every entry, sorted by key (for embedding).
    pub fn entries(&self) -> Vec<((u64, u64), &Literals)> {
        let mut v: Vec<_> = self.map.iter().map(|(k, l)| (*k, l)).collect();
        v.sort_by_key(|e| e.0);
        v
    }

    /// Writes every entry, sorted by key, as the items of a Rust slice of [`RxHintRow`]s, one
    /// per line: a build script puts them between `static HINTS: &[RxHintRow] = &[` and `];`,
    /// and the program reads them back with [`RxHints::from_rows`].
    pub fn write_rows(&self, out: &mut String) {
        use std::fmt::Write as _;
        let list = |ls: &[Vec<u8>]| -> String {
            let items: Vec<String> = ls.iter().map(|l| format!("&{l:?}")).collect();
            items.join(", ")
        };
        for ((a, b), req) in self.entries() {
            let _ = match req {
                None => writeln!(out, "({a}, {b}, None),"),
                Some(r) => writeln!(
                    out,
                    "({a}, {b}, Some((&[{}], {}, &[{}]))),",
                    list(&r.literals),
                    r.unmarked_only,
                    list(&r.also)
                ),
            };
        }
    }

    /// The hints a build script embedded with [`RxHints::write_rows`].
    pub fn from_rows(rows: &[RxHintRow]) -> Self {
        let own = |ls: &[&[u8]]| -> Vec<Vec<u8>> { ls.iter().map(|l| l.to_vec()).collect() };
        let mut hints = Self::default();
        for &(a, b, req) in rows {
            hints.insert(
                (a, b),
                req.map(|(ls, unmarked_only, also)| Required {
                    literals: own(ls),
                    unmarked_only,
                    also: own(also),
                }),
            );
        }
        hints
    }

    /// How many patterns are recorded.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_written_as_rows_read_back_the_same() {
        let mut hints = RxHints::default();
        let sel = RxHints::key("(?i)union\\s+select");
        let none = RxHints::key("^.*$");
        hints.insert(
            sel,
            Some(Required {
                literals: vec![b"select".to_vec()],
                unmarked_only: false,
                also: vec![b"union".to_vec(), b"\"q".to_vec()],
            }),
        );
        hints.insert(none, None);
        let mut text = String::new();
        hints.write_rows(&mut text);
        // What a build script embeds: these rows, as the compiler reads them.
        let mut rows: [RxHintRow; 2] = [
            (
                sel.0,
                sel.1,
                Some((&[b"select"], false, &[b"union", b"\"q"])),
            ),
            (none.0, none.1, None),
        ];
        rows.sort_by_key(|&(a, b, _)| (a, b));
        let expected: String = rows
            .iter()
            .map(|&(a, b, r)| match r {
                None => format!("({a}, {b}, None),\n"),
                Some(_) => format!(
                    "({a}, {b}, Some((&[&[115, 101, 108, 101, 99, 116]], false, \
                     &[&[117, 110, 105, 111, 110], &[34, 113]]))),\n"
                ),
            })
            .collect();
        assert_eq!(text, expected);
        assert_eq!(RxHints::from_rows(&rows), hints);
    }

    fn lits(p: &str) -> Option<Vec<String>> {
        required_literals(p).map(|v| {
            v.into_iter()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .collect()
        })
    }

    #[test]
    fn extracts_required_literals() {
        assert_eq!(lits("(?i)union\\s+select"), Some(vec!["select".into()]));
        assert_eq!(
            lits("(?i)(?:onload|onerror)\\s*="),
            // The parser factors the common prefix out (`on(?:error|load)`); the finite
            // language puts it back.
            Some(vec!["onerror".into(), "onload".into()])
        );
        assert_eq!(lits("\\.{2}/"), Some(vec!["../".into()]));
        assert_eq!(lits("\\.{2,3}/"), Some(vec!["..".into()]));
        assert_eq!(lits("(?:^|[/;])\\.{2,3}"), Some(vec!["..".into()]));
        assert_eq!(
            lits("(?i)(?:ls|7z[ax]?)[ ,]"),
            Some(vec![
                "7z ".into(),
                "7z,".into(),
                "7za ".into(),
                "7za,".into(),
                "7zx ".into(),
                "7zx,".into(),
                "ls ".into(),
                "ls,".into()
            ])
        );
        assert_eq!(lits("d(?:n)?f"), Some(vec!["df".into(), "dnf".into()]));
        assert_eq!(
            lits("a(?:b)?"),
            None,
            "the bare `a` is all a match must hold"
        );
        assert_eq!(lits("^[a-z]+$"), None);
        assert_eq!(lits("a|b"), None);
        assert_eq!(lits("x*abc"), Some(vec!["abc".into()]));
        assert_eq!(lits("(?:ab)?cd"), Some(vec!["cd".into()]));
        assert_eq!(lits("[\\n\\r]"), Some(vec!["\n".into(), "\r".into()]));
        assert_eq!(lits("\\$\\{"), Some(vec!["${".into()]));
        assert_eq!(lits("[a.]"), None);
    }

    #[test]
    fn classes_of_up_to_eight_bytes_are_spelled_out_case_folded() {
        // Under `(?i)`, `[256aef]` is nine bytes and six once folded: a set.
        assert_eq!(
            lits("(?i)%[25a]e"),
            Some(vec!["%2e".into(), "%5e".into(), "%ae".into()])
        );
        assert_eq!(lits("x[a-h]y").map(|l| l.len()), Some(8));
        // Nine distinct bytes are too many: what the class stands between is kept instead.
        assert_eq!(lits("abc[a-i]xyz"), Some(vec!["abc".into()]));
    }

    #[test]
    fn a_repeated_set_too_large_to_pair_needs_a_text_and_the_next_ones_first_byte() {
        // CRS 930100's shape: a dot in one of dozens of encodings, two or three in a row.
        let encodings: Vec<String> = (0..30).map(|i| format!("%u{i:04x}")).collect();
        let pattern = format!(r"(?:\.|{}){{2,3}}", encodings.join("|"));
        let l = lits(&pattern).expect("literals");
        assert!(l.contains(&"..".to_string()) && l.contains(&".%".to_string()));
        assert!(l.contains(&"%u0007%".to_string()) && l.contains(&"%u0007.".to_string()));
        assert_eq!(l.len(), 31 * 2);
        let re = regex::bytes::Regex::new(&pattern).expect("compiles");
        for v in ["a..b", "x.%u0003y", "%u0001%u0002", "%u0004."] {
            assert!(re.is_match(v.as_bytes()));
            assert!(l.iter().any(|x| v.contains(x.as_str())), "{v}");
        }
        // A set holding the empty text needs nothing of the kind.
        assert_eq!(followed_by_first_byte(&[b"a".to_vec(), Vec::new()]), None);
    }

    fn also(p: &str) -> Vec<String> {
        let req = required_of(&parse_bytes(p).expect("parses")).expect("has literals");
        req.also
            .into_iter()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .collect()
    }

    #[test]
    fn a_second_set_comes_from_another_stretch_of_a_concatenation() {
        // CRS 941120's shape: an event handler needs `on` after a separator and, further on,
        // `=`.
        let handler = r"(?i)[ ;/]on[a-z]{3,25}[\s;]*?=[^=]";
        assert_eq!(
            lits(handler),
            Some(vec![" on".into(), "/on".into(), ";on".into()])
        );
        assert_eq!(also(handler), vec!["=".to_string()]);
        // 942151's: a function name, then `(`; inside a capture group too.
        let call = r"(?i)(\b(?:abs|ascii)[^0-9a-z]*\()";
        assert_eq!(lits(call), Some(vec!["abs".into(), "ascii".into()]));
        assert_eq!(also(call), vec!["(".to_string()]);
        // An alternation's branches need different things; a finite pattern is one need;
        // an unselective second need (a lone letter) is no need.
        assert!(also("(?i)on[a-z]+=|javascript:").is_empty());
        assert!(also("(?:foo|bar)baz").is_empty());
        assert!(also("foo.*b").is_empty());
    }

    fn unmarked_lits(p: &str) -> Option<(bool, Vec<String>)> {
        required_of(&parse_bytes(p)?).map(|r| {
            (
                r.unmarked_only,
                r.literals
                    .into_iter()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .collect(),
            )
        })
    }

    #[test]
    fn unmarked_values_need_literals_the_whole_pattern_does_not() {
        // CRS's evasion-tolerant command names: quotes and backslashes may sit between the
        // letters, so no literal is needed in general, but a value without them needs `cat`.
        assert_eq!(
            unmarked_lits("c[\"'\\\\]*a[\"'\\\\]*t"),
            Some((true, vec!["cat".into()]))
        );
        // A pattern that needs a marked byte cannot match an unmarked value at all.
        assert_eq!(
            unmarked_lits("[;|]\\s*id"),
            Some((false, vec!["id".into()]))
        );
        assert_eq!(unmarked_lits("[;|][a-z]"), Some((true, vec![])));
        // A pattern with literals of its own keeps them for every value.
        assert_eq!(
            unmarked_lits("select"),
            Some((false, vec!["select".into()]))
        );
        assert_eq!(unmarked_lits("[a-z]+"), None);
        for b in [
            b'"', b'\'', b'(', b';', b'|', b'&', b'$', b'`', b'\\', b'<', b'\n', 0,
        ] {
            assert!(marked_byte(b), "{b}");
        }
        for b in [
            b'a', b'Z', b'0', b' ', b'.', b'-', b'_', b'/', b'@', b'+', b',', 0xc3,
        ] {
            assert!(!marked_byte(b), "{b}");
        }
    }
}
