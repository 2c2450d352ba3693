//! The multi-rule literal prefilter.
//!
//! For every `@rx` rule, load time works out a small set of literals one of which any match
//! must contain (from the regex's syntax tree: concatenated literals, case-insensitive letters,
//! alternations). Rules that read values through the same transformation chain share one
//! Aho-Corasick automaton over all their literals. At request time one pass of that automaton
//! over a transformed value tells which of those rules can match it at all; the regex runs only
//! for those. The cost per value grows with the value, not with the number of rules.

use regex_syntax::hir::{Class, Hir, HirKind};

enum Need {
    /// The sub-pattern matches exactly this text (lower-cased).
    Exact(Vec<u8>),
    /// Any match contains one of these.
    OneOf(Vec<Vec<u8>>),
    /// Nothing useful is known.
    Unknown,
}

const MAX_SET: usize = 512;

/// A one-byte literal is selective enough when benign text rarely holds it.
fn rare_byte(b: u8) -> bool {
    !b.is_ascii_alphanumeric()
        && !matches!(
            b,
            b' ' | b'.' | b'/' | b'-' | b'_' | b'=' | b',' | b':' | b';' | b'&' | b'%' | b'+'
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

/// The bytes of a small class (at most four), or `None`.
fn class_bytes(c: &Class) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match c {
        Class::Bytes(b) => {
            for r in b.iter() {
                for x in r.start()..=r.end() {
                    out.push(x);
                    if out.len() > 4 {
                        return None;
                    }
                }
            }
        }
        Class::Unicode(u) => {
            for r in u.iter() {
                for x in u32::from(r.start())..=u32::from(r.end()) {
                    out.push(u8::try_from(x).ok().filter(u8::is_ascii)?);
                    if out.len() > 4 {
                        return None;
                    }
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
                    Need::OneOf(set)
                }
            },
            None => Need::Unknown,
        },
        HirKind::Capture(c) => analyze(&c.sub),
        HirKind::Repetition(r) => {
            if r.min == 0 {
                return Need::Unknown;
            }
            match analyze(&r.sub) {
                Need::Exact(e) if r.min == 1 && r.max == Some(1) => Need::Exact(e),
                Need::Exact(e) if e.is_empty() => Need::Exact(e),
                Need::Exact(e) => Need::OneOf(vec![e]),
                other => other,
            }
        }
        HirKind::Concat(items) => {
            let mut cur: Vec<u8> = Vec::new();
            let mut all_exact = true;
            let mut best: Option<Vec<Vec<u8>>> = None;
            let consider = |set: Vec<Vec<u8>>, best: &mut Option<Vec<Vec<u8>>>| {
                if set.is_empty() || set.iter().any(Vec::is_empty) {
                    return;
                }
                if best.as_ref().is_none_or(|b| score(&set) > score(b)) {
                    *best = Some(set);
                }
            };
            for it in items {
                match analyze(it) {
                    Need::Exact(e) => cur.extend(e),
                    other => {
                        all_exact = false;
                        if !cur.is_empty() {
                            consider(vec![std::mem::take(&mut cur)], &mut best);
                        }
                        if let Need::OneOf(s) = other {
                            consider(s, &mut best);
                        }
                    }
                }
            }
            if all_exact {
                return Need::Exact(cur);
            }
            if !cur.is_empty() {
                consider(vec![cur], &mut best);
            }
            match best {
                Some(s) => Need::OneOf(s),
                None => Need::Unknown,
            }
        }
        HirKind::Alternation(alts) => {
            let mut set = Vec::new();
            for a in alts {
                match analyze(a) {
                    Need::Exact(e) if !e.is_empty() => set.push(e),
                    Need::OneOf(s) => set.extend(s),
                    _ => return Need::Unknown,
                }
                if set.len() > MAX_SET {
                    return Need::Unknown;
                }
            }
            set.sort();
            set.dedup();
            Need::OneOf(set)
        }
    }
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
    let set = match analyze(hir) {
        Need::Exact(e) => vec![e],
        Need::OneOf(s) => s,
        Need::Unknown => return None,
    };
    if set.is_empty() || set.len() > MAX_SET || !set.iter().all(|l| selective(l)) {
        return None;
    }
    Some(set)
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
pub type Literals = Option<Vec<Vec<u8>>>;

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
            // The parser factors the common prefix out: `on(?:error|load)`.
            Some(vec!["error".into(), "load".into()])
        );
        assert_eq!(lits("^[a-z]+$"), None);
        assert_eq!(lits("a|b"), None);
        assert_eq!(lits("x*abc"), Some(vec!["abc".into()]));
        assert_eq!(lits("(?:ab)?cd"), Some(vec!["cd".into()]));
        assert_eq!(lits("[\\n\\r]"), Some(vec!["\n".into(), "\r".into()]));
        assert_eq!(lits("\\$\\{"), Some(vec!["${".into()]));
        assert_eq!(lits("[a.]"), None);
    }
}
