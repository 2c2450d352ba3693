//! Operators (`@rx`, `@pm`, ...), compiled once at load.

use crate::macros::Macro;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use std::net::IpAddr;

/// A compiled operator.
#[derive(Debug)]
pub enum Operator {
    /// `@rx`: a linear-time regex (dot matches newline, bytes, ASCII classes).
    Rx(Rx),
    /// `@pm` / `@pmFromFile`: case-insensitive phrase match.
    Pm(Phrases),
    /// `@detectSQLi` (libinjection).
    DetectSqli,
    /// `@detectXSS` (libinjection).
    DetectXss,
    /// `@within`: the value is a substring of the parameter.
    Within(Macro),
    /// `@streq`.
    Streq(Macro),
    /// `@contains`.
    Contains(Macro),
    /// `@beginsWith`.
    BeginsWith(Macro),
    /// `@endsWith`.
    EndsWith(Macro),
    /// `@eq`.
    Eq(Macro),
    /// `@ge`.
    Ge(Macro),
    /// `@gt`.
    Gt(Macro),
    /// `@lt`.
    Lt(Macro),
    /// `@le`.
    Le(Macro),
    /// `@ipMatch`.
    IpMatch(Vec<(IpAddr, u8)>),
    /// `@validateByteRange`: matches when a byte is outside the allowed set.
    ValidateByteRange(Box<ByteRange>),
    /// `@validateUrlEncoding`: matches on an invalid `%` escape.
    ValidateUrlEncoding,
    /// `@validateUtf8Encoding`: matches on invalid UTF-8.
    ValidateUtf8Encoding,
    /// `@unconditionalMatch`.
    Unconditional,
    /// `@noMatch`.
    NoMatch,
}

/// When a rule set builds its matchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compile {
    /// Every regex and phrase automaton at load: a pattern that cannot be built is a load
    /// error. For hosts that load once and serve long (the origin proxy, the CLI).
    #[default]
    Eager,
    /// Patterns are checked (parsed) at load but built on first use. For the edge worker,
    /// whose first request pays for the load: the prefilter keeps most `@rx` and `@pm` rules
    /// from ever running on benign traffic, so most are never built. A pattern that parses
    /// but then exceeds the size limits when built never matches (none in CRS 4.28.0 does;
    /// the eager load in the tests checks that).
    Lazy,
}

/// An `@rx` regex, built at load or on first use ([`Compile`]).
#[derive(Debug)]
pub struct Rx {
    pattern: String,
    re: std::sync::OnceLock<Option<Regex>>,
    /// The pattern is `^.*$`, which matches every value whole (`.` matches newlines, as in
    /// ModSecurity's PCRE; CRS 920450 captures each header name so): no regex runs.
    whole: bool,
}

impl Rx {
    /// Checks the pattern and, for [`Compile::Eager`], builds it. `parsed`: the caller has
    /// already parsed it successfully in the byte-oriented form ([`crate::prefilter::parse_bytes`]),
    /// so a lazy load need not parse it again.
    pub fn new(pattern: &str, compile: Compile, parsed: bool) -> Result<Rx, String> {
        let rx = Rx {
            pattern: pattern.to_string(),
            re: std::sync::OnceLock::new(),
            whole: pattern == "^.*$",
        };
        match compile {
            Compile::Eager => {
                let re = compile_rx(pattern)?;
                let _ = rx.re.set(Some(re));
            }
            Compile::Lazy if parsed => {}
            Compile::Lazy => check_rx(pattern)?,
        }
        Ok(rx)
    }

    /// The compiled regex (built now if it was not yet).
    pub fn regex(&self) -> Option<&Regex> {
        self.re
            .get_or_init(|| compile_rx(&self.pattern).ok())
            .as_ref()
    }
}

/// Parses a pattern as [`compile_rx`] would read it, without building it.
fn check_rx(pattern: &str) -> Result<(), String> {
    let parse = |unicode: bool| {
        regex_syntax::ParserBuilder::new()
            .unicode(unicode)
            .utf8(unicode)
            .dot_matches_new_line(true)
            .build()
            .parse(&if unicode {
                pattern.to_string()
            } else {
                byte_pattern(pattern)
            })
            .map(|_| ())
            .map_err(|e| format!("regex does not compile: {e}"))
    };
    parse(false).or_else(|_| parse(true))
}

/// The phrases of `@pm` / `@pmFromFile` and their automaton, built at load or on first use.
#[derive(Debug)]
pub struct Phrases {
    /// As written, in order (the automaton reports the first listed phrase at a position).
    source: Vec<String>,
    /// Lower-cased and deduplicated: the engine's prefilter takes them as the rule's literals.
    lower: Vec<Vec<u8>>,
    ac: std::sync::OnceLock<Option<AhoCorasick>>,
}

impl Phrases {
    /// The phrases, lower-cased.
    pub fn literals(&self) -> &[Vec<u8>] {
        &self.lower
    }

    fn automaton(&self) -> Option<&AhoCorasick> {
        self.ac
            .get_or_init(|| build_phrases(&self.source).ok())
            .as_ref()
    }
}

// A contiguous NFA builds several times faster than a DFA: rule sets load at cold start on the
// edge, and the engine's shared prefilter already decides whether a phrase occurs, so this
// automaton only runs to report the match.
fn build_phrases(phrases: &[String]) -> Result<AhoCorasick, String> {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostFirst)
        .kind(Some(aho_corasick::AhoCorasickKind::ContiguousNFA))
        .build(phrases)
        .map_err(|e| format!("phrase set does not build: {e}"))
}

/// A compiled `@rx` pattern: `regex-automata`'s meta regex (what `regex::bytes::Regex` wraps),
/// configured by [`compile_rx`].
pub type Regex = regex_automata::meta::Regex;

/// Compiles a regex the way CRS patterns are meant (PCRE with DOTALL, byte-oriented).
///
/// PCRE without UTF mode sees a non-ASCII character in a pattern as its UTF-8 bytes (so `[’]`
/// is a class of three bytes); writing those bytes as `\xHH` escapes gives the same meaning.
///
/// Configured as `regex::bytes::RegexBuilder` would (leftmost-first, empty matches at any byte,
/// 64 MiB for the NFA, 8 MiB for the lazy DFA's cache), but for what makes a build cost
/// more than it saves here. The regex's own literal prefilter, the full DFA it builds for
/// small patterns and the one-pass DFA for captures are left out: the engine's prefilter has
/// already found a pattern's literals in the value before the regex runs, most regexes run
/// on a few short values, and an isolate builds each regex its traffic reaches on a
/// shopper's request. Built so, CRS 4.28.0's `@rx` patterns build in about half the time.
pub fn compile_rx(pattern: &str) -> Result<Regex, String> {
    use regex_automata::{meta, util::syntax};
    let bytes_pattern = byte_pattern(pattern);
    let build = |unicode: bool| {
        meta::Builder::new()
            .configure(
                meta::Config::new()
                    .match_kind(regex_automata::MatchKind::LeftmostFirst)
                    .utf8_empty(false)
                    .nfa_size_limit(Some(64 << 20))
                    .hybrid_cache_capacity(8 << 20)
                    .auto_prefilter(false)
                    .dfa(false)
                    .onepass(false),
            )
            .syntax(
                syntax::Config::new()
                    .unicode(unicode)
                    .utf8(false)
                    .dot_matches_new_line(true),
            )
            .build(if unicode { pattern } else { &bytes_pattern })
            .map_err(|e| format!("regex does not compile: {e}"))
    };
    build(false).or_else(|_| build(true))
}

/// The pattern rewritten for a byte-oriented (Unicode off) regex: `\x{HH}` → `\xHH`, and
/// non-ASCII characters as their UTF-8 bytes.
pub fn byte_pattern(pattern: &str) -> String {
    let mut bytes_pattern = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch == '\\' {
            // `\x{e2}` is a code point to regex-syntax but a byte to PCRE: write `\xE2`.
            let rest: String = chars.clone().take(6).collect();
            if let Some(inner) = rest.strip_prefix("x{") {
                if let Some(end) = inner.find('}') {
                    let hex = &inner[..end];
                    if (1..=2).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        bytes_pattern.push_str(&format!("\\x{hex:0>2}"));
                        for _ in 0..end + 3 {
                            chars.next();
                        }
                        continue;
                    }
                }
            }
            bytes_pattern.push('\\');
            if let Some(n) = chars.next() {
                bytes_pattern.push(n);
            }
        } else if ch.is_ascii() {
            bytes_pattern.push(ch);
        } else {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                bytes_pattern.push_str(&format!("\\x{b:02X}"));
            }
        }
    }
    bytes_pattern
}

fn phrase_matcher(mut source: Vec<String>, compile: Compile) -> Result<Operator, String> {
    source.retain(|p| !p.is_empty());
    let ac = std::sync::OnceLock::new();
    if compile == Compile::Eager {
        let _ = ac.set(Some(build_phrases(&source)?));
    }
    let mut lower: Vec<Vec<u8>> = source
        .iter()
        .map(|p| p.as_bytes().to_ascii_lowercase())
        .collect();
    lower.sort();
    lower.dedup();
    Ok(Operator::Pm(Phrases { source, lower, ac }))
}

/// Whether libinjection's XSS detector could flag `v` at all. It flags a doctype, a tag or a
/// comment (each opened by `<`) and an attribute value after a dangerous name (`name=value`);
/// a value with neither byte (most prose, addresses, identifiers) is never flagged, in any of
/// the five contexts it parses in. Property tests check this against the detector itself.
pub fn xss_possible(v: &[u8]) -> bool {
    memchr::memchr2(b'<', b'=', v).is_some()
}

/// Whether libinjection can only see `v` as one harmless token, so neither detector needs to
/// run: a run of digits, or a word of ASCII letters, digits, `_` and `.` that starts with a
/// letter or `_` and where no part before a `.` is an SQL keyword (`select.x` splits into a
/// keyword and more; `json.items.0.sku`, a JSON body's argument name, stays one bareword).
/// The SQLi tokenizer reads such a value as a single bareword, keyword or number, and the
/// only one-token fingerprint libinjection blacklists is `X` (a character it cannot parse),
/// which none of these bytes produce. The XSS parser sees text (no `<`) or one attribute
/// value with no attribute name before it, which it never flags. Most benign parameters
/// (`page=3`, `sort=price`) and JSON argument names take this path; the
/// `libinjection_shortcut_*` tests check it against the detectors themselves.
pub fn single_token(v: &[u8]) -> bool {
    /// The bytes of a dotted word: ASCII letters, digits, `_` and `.`.
    static WORD: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'.';
            b += 1;
        }
        t
    };
    match v.first() {
        None => false,
        Some(b) if b.is_ascii_digit() => v.iter().all(u8::is_ascii_digit),
        Some(&b) if b == b'_' || b.is_ascii_alphabetic() => {
            // Every prefix before a dot but the first holds a dot itself.
            v.iter().all(|&b| WORD[b as usize])
                && memchr::memchr_iter(b'.', v)
                    .enumerate()
                    .all(|(n, i)| !sql_keyword(&v[..i], n > 0))
        }
        Some(_) => false,
    }
}

/// Whether libinjection's word table gives `word` (case-insensitively) a type other than
/// bareword: the tokenizer splits a dotted word at such a prefix. `dotted`: whether `word`
/// holds a `.`. The table's non-bareword entries go into a set on first use (a few
/// milliseconds, once per process), with, for each first letter, the lengths its words have,
/// apart for the few words with a dot: most prefixes of a JSON argument name (`json.items`)
/// fail that test and are never hashed.
fn sql_keyword(word: &[u8], dotted: bool) -> bool {
    use libinjectionrs::sqli::sqli_data::{lookup_word, SQL_KEYWORDS};
    use libinjectionrs::sqli::TokenType;
    use std::collections::HashSet;
    // (A fixed table, so a fast hash: SipHash was a few per cent of a JSON body's cost.)
    type Words = HashSet<&'static [u8], std::hash::BuildHasherDefault<crate::engine::IntHasher>>;
    struct Table {
        words: Words,
        /// Bit `n` of entry `b`: some word starts with byte `b` (upper case) and has `n` bytes
        /// (bit 63: 63 bytes or more); `[0]` for words without a dot, `[1]` with.
        lengths: [[u64; 256]; 2],
    }
    static TABLE: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let words: Words = SQL_KEYWORDS
            .iter()
            .filter(|k| lookup_word(k.word) != TokenType::Bareword)
            .map(|k| k.word.as_bytes())
            .collect();
        let mut lengths = [[0u64; 256]; 2];
        for w in &words {
            if let Some(&b) = w.first() {
                let dotted = usize::from(w.contains(&b'.'));
                lengths[dotted][usize::from(b.to_ascii_uppercase())] |= 1 << w.len().min(63);
            }
        }
        Table { words, lengths }
    });
    let Some(&first) = word.first() else {
        return false;
    };
    let lengths = &table.lengths[usize::from(dotted)];
    if lengths[usize::from(first.to_ascii_uppercase())] & (1 << word.len().min(63)) == 0 {
        return false;
    }
    let mut upper = [0u8; 62];
    let Some(buf) = upper.get_mut(..word.len()) else {
        return lookup_word(&String::from_utf8_lossy(word)) != TokenType::Bareword;
    };
    buf.copy_from_slice(word);
    buf.make_ascii_uppercase();
    table.words.contains(&*buf)
}

/// libinjection's SQLi verdict and, for an injection, its fingerprint. The detector alone
/// decides benign values (half the work of `detect_sqli`, which fingerprints twice); an
/// injection runs `detect_sqli` again for the fingerprint it reports.
fn detect_sqli(v: &[u8]) -> Option<Vec<u8>> {
    use libinjectionrs::{SqliFlags, SqliState};
    if !SqliState::new(v, SqliFlags::FLAG_NONE).detect() {
        return None;
    }
    let r = libinjectionrs::detect_sqli(v);
    Some(
        r.fingerprint
            .map(|f| f.as_str().as_bytes().to_vec())
            .unwrap_or_default(),
    )
}

/// Parses a `@pm` parameter (space-separated phrases).
pub fn pm(param: &str, compile: Compile) -> Result<Operator, String> {
    let phrases: Vec<String> = param.split_whitespace().map(str::to_string).collect();
    phrase_matcher(phrases, compile)
}

/// Builds `@pmFromFile` from the data files' lines (`#` comments and blanks skipped).
pub fn pm_from_lines<'a>(
    lines: impl Iterator<Item = &'a str>,
    compile: Compile,
) -> Result<Operator, String> {
    let phrases: Vec<String> = lines
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    phrase_matcher(phrases, compile)
}

/// Parses `@ipMatch` networks.
pub fn ip_match(param: &str) -> Result<Operator, String> {
    let mut nets = Vec::new();
    for item in param
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (addr, bits) = match item.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (item, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("bad address `{item}` in @ipMatch"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("bad prefix length in `{item}`"))?,
            None => max,
        };
        nets.push((ip, bits));
    }
    Ok(Operator::IpMatch(nets))
}

/// Parses `@validateByteRange` (`1-255`, `9,10,32-126`).
pub fn byte_range(param: &str) -> Result<Operator, String> {
    let mut allowed = Box::new([false; 256]);
    for item in param.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (item, item),
        };
        let a: u8 = a.parse().map_err(|_| format!("bad byte range `{item}`"))?;
        let b: u8 = b.parse().map_err(|_| format!("bad byte range `{item}`"))?;
        if a > b {
            return Err(format!("bad byte range `{item}`"));
        }
        for x in a..=b {
            allowed[x as usize] = true;
        }
    }
    let outside: Vec<u8> = (0..=255u8).filter(|&b| !allowed[b as usize]).collect();
    // The classes of the bytes outside, when each of them has one (a value with none of
    // those classes has no byte outside the range).
    let needs = outside
        .iter()
        .try_fold(0, |acc, &b| match crate::transform::byte_class(b) {
            0 => None,
            c => Some(acc | c),
        });
    Ok(Operator::ValidateByteRange(Box::new(ByteRange {
        allowed: *allowed,
        outside,
        needs,
    })))
}

/// `@validateByteRange`'s allowed bytes, and the others listed (CRS's PL1 range `1-255`
/// leaves one: a search for up to three bytes is a vectorised `memchr`, not a table walk).
#[derive(Debug, Clone)]
pub struct ByteRange {
    allowed: [bool; 256],
    outside: Vec<u8>,
    /// See [`Operator::needs_classes`].
    needs: Option<u32>,
}

impl ByteRange {
    /// Whether `v` holds a byte outside the range.
    fn any_outside(&self, v: &[u8]) -> bool {
        match *self.outside.as_slice() {
            [] => false,
            [a] => memchr::memchr(a, v).is_some(),
            [a, b] => memchr::memchr2(a, b, v).is_some(),
            [a, b, c] => memchr::memchr3(a, b, c, v).is_some(),
            _ => v.iter().any(|&b| !self.allowed[b as usize]),
        }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            (u32::from(a) & m) == (u32::from(n) & m)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            (u128::from(a) & m) == (u128::from(n) & m)
        }
        _ => false,
    }
}

/// Integer as ModSecurity reads it: leading whitespace and sign, digits; anything else is 0.
pub fn to_int(b: &[u8]) -> i64 {
    // `str::trim`'s ASCII whitespace: space and \t \n \x0b \x0c \r.
    let start = b
        .iter()
        .position(|&c| !(c == b' ' || (0x09..=0x0d).contains(&c)))
        .unwrap_or(b.len());
    let rest = &b[start..];
    if rest.first().is_some_and(|&c| c >= 0x80) {
        // Leading non-ASCII (Unicode whitespace, or not a number at all): the general path.
        return to_int_text(b);
    }
    let (neg, digits) = match rest.first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let n = digits.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 {
        return 0;
    }
    let mut v: i64 = 0;
    for &d in &digits[..n] {
        let d = i64::from(d - b'0');
        // Accumulate negatively so i64::MIN parses; out of range is 0, as a failed parse.
        v = match v.checked_mul(10).and_then(|x| x.checked_sub(d)) {
            Some(x) => x,
            None => return 0,
        };
    }
    if neg {
        v
    } else {
        v.checked_neg().unwrap_or(0)
    }
}

fn to_int_text(b: &[u8]) -> i64 {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    let mut end = 0;
    for (i, c) in s.char_indices() {
        if c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+')) {
            end = i + 1;
        } else {
            break;
        }
    }
    s[..end].parse().unwrap_or(0)
}

fn invalid_url_encoding(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            let ok =
                v.len() > i + 2 && v[i + 1].is_ascii_hexdigit() && v[i + 2].is_ascii_hexdigit();
            if !ok {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

/// An operator's parameter: used as written when it holds no macro, without a copy.
fn param<'a>(
    m: &'a Macro,
    expand: &dyn Fn(&'a Macro) -> std::borrow::Cow<'a, [u8]>,
) -> std::borrow::Cow<'a, [u8]> {
    match m.literal() {
        Some(l) => std::borrow::Cow::Borrowed(l),
        None => expand(m),
    }
}

/// What a successful operator run found: the matched text and, for `@rx`, its groups.
#[derive(Debug, Default, Clone)]
pub struct Found {
    /// Capture groups 0..=9 (for the `capture` action).
    pub captures: Vec<Vec<u8>>,
    /// The match is the whole value, which is group 0 (`captures` is then left empty, and
    /// the caller takes the value it passed).
    pub whole: bool,
}

impl Operator {
    /// Whether a run's result depends on the value alone (no parameter macro, no state), so
    /// that a miss can be remembered across requests: the detectors (`Some(true)`: costly at
    /// any length, so a host should reuse a result for an equal value within a request too),
    /// `@rx` and `@pm` (`Some(false)`: worth it on longer values only).
    pub fn value_only(&self) -> Option<bool> {
        match self {
            Operator::DetectSqli | Operator::DetectXss => Some(true),
            Operator::Rx(rx) if !rx.whole => Some(false),
            Operator::Pm(_) => Some(false),
            _ => None,
        }
    }

    /// Whether this is `@rx ^.*$`, which matches every value whole (see [`Rx`]).
    pub(crate) fn matches_every_value(&self) -> bool {
        matches!(self, Operator::Rx(rx) if rx.whole)
    }

    /// Whether the outcome on a value depends on that value alone, never on the transaction's
    /// state: every operator but those whose parameter expands a variable (`@within
    /// %{tx.allowed_methods}`). The evaluation remembers collection entries that no such
    /// operator of the rule set matches (see `engine::eval::clean`).
    pub fn pure(&self) -> bool {
        self.param_macro().is_none_or(|m| m.literal().is_some())
    }

    /// The byte classes ([`crate::transform::flags`]) of which a value needs one for the
    /// operator to match it, for the operators that can only match values holding certain
    /// bytes: `@validateByteRange` (a byte outside the range; CRS's PL1 `1-255` needs a NUL),
    /// `@validateUtf8Encoding` (a byte above 0x7f), `@validateUrlEncoding` (a `%`). A value's
    /// classes are known once per content: the evaluation skips the others without running
    /// the operator. `None`: any value may match.
    pub fn needs_classes(&self) -> Option<u32> {
        use crate::transform::flags::{NON_ASCII, PCT_PLUS};
        match self {
            Operator::ValidateByteRange(r) => r.needs,
            Operator::ValidateUtf8Encoding => Some(NON_ASCII),
            Operator::ValidateUrlEncoding => Some(PCT_PLUS),
            _ => None,
        }
    }

    /// Whether the operator has a check of a value, cheaper than running it, that tells it
    /// cannot match (`skips_value`).
    pub fn can_skip_values(&self) -> bool {
        matches!(self, Operator::DetectSqli | Operator::DetectXss) || self.needs_classes().is_some()
    }

    /// Whether the operator cannot match `v` (whose [`crate::transform::byte_flags`] are
    /// `flags`), told without running it: a value without the byte classes it needs
    /// (`needs_classes`), or one that libinjection can only read as a harmless token or that
    /// holds nothing its XSS detector flags (`single_token`, `xss_possible`). The evaluation
    /// drops such collection entries before a rule's value loop.
    pub fn skips_value(&self, flags: u32, v: &[u8]) -> bool {
        match self {
            Operator::DetectSqli => single_token(v),
            Operator::DetectXss => !xss_possible(v) || single_token(v),
            _ => self.needs_classes().is_some_and(|n| flags & n == 0),
        }
    }

    /// The parameter template, for operators that take one.
    pub fn param_macro(&self) -> Option<&Macro> {
        match self {
            Operator::Within(m)
            | Operator::Streq(m)
            | Operator::Contains(m)
            | Operator::BeginsWith(m)
            | Operator::EndsWith(m)
            | Operator::Eq(m)
            | Operator::Ge(m)
            | Operator::Gt(m)
            | Operator::Lt(m)
            | Operator::Le(m) => Some(m),
            _ => None,
        }
    }

    /// Runs the operator; `expand` resolves macros in the parameter (borrowing the value
    /// where it can: `@within %{tx.restricted_headers_basic}` reads a long list per header).
    pub fn run<'a>(
        &'a self,
        v: &[u8],
        want_captures: bool,
        expand: &dyn Fn(&'a Macro) -> std::borrow::Cow<'a, [u8]>,
    ) -> Option<Found> {
        let param = |m| param(m, expand);
        let yes = || Some(Found::default());
        let bool_found = |b: bool| if b { Some(Found::default()) } else { None };
        match self {
            Operator::Rx(rx) => {
                if rx.whole {
                    return Some(Found {
                        captures: Vec::new(),
                        whole: want_captures,
                    });
                }
                let re = rx.regex()?;
                if !re.is_match(v) {
                    return None;
                }
                if want_captures {
                    let mut caps = re.create_captures();
                    re.captures(v, &mut caps);
                    if !caps.is_match() {
                        return None;
                    }
                    let captures = (0..caps.group_len().min(10))
                        .map(|i| {
                            caps.get_group(i)
                                .map(|m| v[m.range()].to_vec())
                                .unwrap_or_default()
                        })
                        .collect();
                    Some(Found {
                        captures,
                        whole: false,
                    })
                } else {
                    yes()
                }
            }
            Operator::Pm(ph) => {
                let m = ph.automaton()?.find(v)?;
                Some(Found {
                    captures: vec![v[m.start()..m.end()].to_vec()],
                    whole: false,
                })
            }
            Operator::DetectSqli if single_token(v) => None,
            Operator::DetectXss if !xss_possible(v) || single_token(v) => None,
            Operator::DetectSqli => detect_sqli(v).map(|fp| Found {
                captures: vec![fp],
                whole: false,
            }),
            Operator::DetectXss => bool_found(libinjectionrs::detect_xss(v).is_injection()),
            Operator::Within(m) => {
                let p = param(m);
                bool_found(v.is_empty() || within(&p, v))
            }
            Operator::Streq(m) => bool_found(param(m) == v),
            Operator::Contains(m) => bool_found(contains(v, &param(m))),
            Operator::BeginsWith(m) => bool_found(v.starts_with(&param(m))),
            Operator::EndsWith(m) => bool_found(v.ends_with(&param(m))),
            Operator::Eq(m) => bool_found(to_int(v) == to_int(&param(m))),
            Operator::Ge(m) => bool_found(to_int(v) >= to_int(&param(m))),
            Operator::Gt(m) => bool_found(to_int(v) > to_int(&param(m))),
            Operator::Lt(m) => bool_found(to_int(v) < to_int(&param(m))),
            Operator::Le(m) => bool_found(to_int(v) <= to_int(&param(m))),
            Operator::IpMatch(nets) => {
                let ip: IpAddr = std::str::from_utf8(v).ok()?.trim().parse().ok()?;
                bool_found(nets.iter().any(|&(n, b)| in_net(ip, n, b)))
            }
            Operator::ValidateByteRange(r) => bool_found(r.any_outside(v)),
            Operator::ValidateUrlEncoding => bool_found(invalid_url_encoding(v)),
            Operator::ValidateUtf8Encoding => bool_found(std::str::from_utf8(v).is_err()),
            Operator::Unconditional => yes(),
            Operator::NoMatch => None,
        }
    }
}

/// `@within`'s search: a value (`needle`, from the request) in a list from the rules. For a
/// short value, from the places its second byte occurs in the list: building a `memmem`
/// searcher for each value cost about 1,300 instructions per header name in CRS 920450,
/// most of that rule's time. At most 64 bytes compared per place (CRS makes its values
/// `/name/`: `/sec-ch-ua-platform/` is 20 bytes, and most browsers send one that long).
fn within(list: &[u8], needle: &[u8]) -> bool {
    // Anchored on the value's second byte: CRS's lists separate their items with `/`, `|`,
    // `.` or spaces, which a value's first byte often is.
    match needle {
        [_, second, ..] if needle.len() <= 64 => {
            let Some(last_start) = list.len().checked_sub(needle.len()) else {
                return false;
            };
            memchr::memchr_iter(*second, &list[1..=last_start + 1])
                .any(|i| &list[i..i + needle.len()] == needle)
        }
        [one] => memchr::memchr(*one, list).is_some(),
        _ => contains(list, needle),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    // (A window-by-window comparison made @within cost a few hundred comparisons per
    // header name against CRS's restricted-header lists.)
    needle.is_empty() || memchr::memmem::find(hay, needle).is_some()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn to_int_reads_bytes_as_the_text_path_does(
            b in proptest::collection::vec(
                prop_oneof![Just(b' '), Just(b'\x0b'), Just(b'-'), Just(b'+'), b'0'..=b'9', any::<u8>()],
                0..24,
            )
        ) {
            prop_assert_eq!(to_int(&b), to_int_text(&b));
        }

        /// `@within`'s short-value search against the definition (a window equal to it).
        #[test]
        fn within_finds_exactly_the_windows_equal_to_the_value(
            list in proptest::collection::vec(prop_oneof![Just(b'/'), Just(b'a'), Just(b'b')], 0..100),
            v in proptest::collection::vec(prop_oneof![Just(b'/'), Just(b'a'), Just(b'b')], 0..70),
        ) {
            let want = v.is_empty() || list.windows(v.len()).any(|w| w == v.as_slice());
            prop_assert_eq!(super::within(&list, &v), want);
        }

        /// Ranges leaving out 0 to 5 bytes (the searched and the table forms) against the
        /// definition, on values made mostly of the bytes left out.
        #[test]
        fn byte_range_finds_exactly_the_bytes_outside(
            out in proptest::collection::btree_set(any::<u8>(), 0..6),
            v in proptest::collection::vec(prop_oneof![any::<u8>(), Just(0u8), Just(255u8)], 0..40),
        ) {
            let param: Vec<String> = (0..=255u8)
                .filter(|b| !out.contains(b))
                .map(|b| b.to_string())
                .collect();
            let Ok(super::Operator::ValidateByteRange(r)) = super::byte_range(&param.join(",")) else {
                panic!("parses");
            };
            prop_assert_eq!(r.any_outside(&v), v.iter().any(|b| out.contains(b)));
        }
    }

    #[test]
    fn to_int_edges() {
        for (t, n) in [
            ("42", 42),
            ("  -7x", -7),
            ("+5", 5),
            ("-", 0),
            ("", 0),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
            ("9223372036854775808", 0),
            ("\u{a0}12", 12),
        ] {
            assert_eq!(to_int(t.as_bytes()), n, "{t:?}");
        }
    }

    use super::*;

    fn run(op: &Operator, v: &str) -> bool {
        op.run(v.as_bytes(), false, &|m| {
            std::borrow::Cow::Borrowed(m.literal().unwrap_or_default())
        })
        .is_some()
    }

    #[test]
    fn rx_is_dotall_and_bytes() {
        // The whole-value shortcut answers as the regex does, captures included.
        let whole = Operator::Rx(Rx::new("^.*$", Compile::Eager, false).expect("compiles"));
        let re = compile_rx("^.*$").expect("compiles");
        for v in [&b""[..], b"host", b"a\nb\r\n", b"\xff\x00z"] {
            let found = whole.run(v, true, &|_| std::borrow::Cow::Borrowed(&[]));
            let m = re.find(v).expect("matches");
            let found = found.expect("matches");
            assert!(found.whole && found.captures.is_empty());
            assert_eq!(&v[m.range()], v);
        }
        let op = Operator::Rx(Rx::new("a.b", Compile::Eager, false).expect("compiles"));
        assert!(run(&op, "a\nb"));
        let op = Operator::Rx(Rx::new(r"\xff", Compile::Lazy, false).expect("compiles"));
        assert!(op
            .run(&[0xff], false, &|_| std::borrow::Cow::Borrowed(&[]))
            .is_some());
        // A non-ASCII character in a class is its bytes, as PCRE without UTF mode reads it.
        let op = Operator::Rx(Rx::new("^[’]{3}$", Compile::Lazy, false).expect("compiles"));
        assert!(run(&op, "’"));
    }

    #[test]
    fn pm_is_case_insensitive() {
        let op = pm("foo bar", Compile::Lazy).expect("builds");
        assert!(run(&op, "xxBARxx"));
        assert!(!run(&op, "baz"));
    }

    #[test]
    fn numbers_and_strings() {
        assert!(run(&Operator::Eq(Macro::lit("0")), "abc"));
        assert!(run(&Operator::Gt(Macro::lit("3")), "4"));
        assert!(run(&Operator::Within(Macro::lit("GET POST")), "POST"));
        assert!(!run(&Operator::Within(Macro::lit("GET POST")), "PUT"));
        assert!(run(&Operator::BeginsWith(Macro::lit("/a")), "/ab"));
    }

    #[test]
    fn validators() {
        let br = byte_range("32-126").expect("parses");
        assert!(run(&br, "a\u{1}"));
        assert!(!run(&br, "abc"));
        assert!(run(&Operator::ValidateUrlEncoding, "%zz"));
        assert!(!run(&Operator::ValidateUrlEncoding, "%41"));
        assert!(Operator::ValidateUtf8Encoding
            .run(&[0xc0, 0x80], false, &|_| std::borrow::Cow::Borrowed(&[]))
            .is_some());
        let ip = ip_match("127.0.0.1,10.0.0.0/8,::1").expect("parses");
        assert!(run(&ip, "10.2.3.4"));
        assert!(run(&ip, "::1"));
        assert!(!run(&ip, "11.0.0.1"));
    }

    #[test]
    fn libinjection() {
        assert!(run(&Operator::DetectSqli, "1' OR '1'='1"));
        assert!(!run(&Operator::DetectSqli, "hello world"));
        assert!(run(&Operator::DetectXss, "<script>alert(1)</script>"));
    }
}

#[cfg(test)]
mod crs_patterns {
    use super::*;

    #[test]
    fn byte_escapes_match_bytes() {
        let re = compile_rx(r"((?:(?:[!-\+\-:->@\[\]\^`\{-~]|\x{c2}\x{b4}|\x{e2}\x80[\x98\x99])[^!-\+\-:->@\[\]\^`\{-~]*?){12})").expect("compiles");
        let a = compile_rx(r"\x{e2}\x80[\x98\x99]").expect("c");
        assert!(a.is_match("’".as_bytes()), "a");
        let b = compile_rx(r"(?:(?:[!-\+\-:->@\[\]\^`\{-~]|\x{c2}\x{b4}|\x{e2}\x80[\x98\x99])[^!-\+\-:->@\[\]\^`\{-~]*?){5}").expect("c");
        assert!(b.is_match("1’ OR ’1’=’x’".as_bytes()), "b");
        assert!(re.is_match("1’ OR ’1’=’x’#;--()".as_bytes()));
    }
}
