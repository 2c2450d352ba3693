//! What the cargo-fuzz targets (`waf-rules/fuzz`) run, here so that the tests can run it too:
//! `tests/fuzz_replay.rs` replays the inputs the fuzzers found (`fuzz/regressions/`) and the
//! WAF corpora through the same checks on a stable toolchain.
//!
//! Each `check_*` function panics when the engine misbehaves, which is what a fuzzer reports:
//! a panic inside the engine, or a verdict that depends on how it was computed.

use crate::{CustomRules, HttpRequest, LoadError, RuleSet, WafConfig};

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "PATCH", "PROPFIND",
];

/// Content types whose body processors CRS switches on (and two that none reads).
const BODY_TYPES: [Option<&str>; 8] = [
    None,
    Some("application/x-www-form-urlencoded"),
    Some("application/json"),
    Some("multipart/form-data; boundary=xYz"),
    Some("text/xml"),
    Some("text/plain"),
    Some("application/x-www-form-urlencoded; charset=utf-8"),
    Some("application/soap+xml"),
];

/// A request made from fuzzer bytes. Byte 0 picks the method, byte 1 the body's content type,
/// byte 2 the client address; the rest is split at NUL bytes into the request target, then
/// header lines (`Name: value`) up to an empty part, then the body (everything after it).
/// A `Host` header is added unless the input has one, a `Content-Length` when there is a body.
pub fn request(data: &[u8]) -> HttpRequest {
    let at = |i: usize| data.get(i).copied().unwrap_or(0) as usize;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (target, mut rest) = split_nul(data.get(3..).unwrap_or_default());
    let uri = text(target);
    let mut headers = Vec::new();
    let mut body: &[u8] = &[];
    while let Some(r) = rest {
        let (part, after) = split_nul(r);
        rest = after;
        if part.is_empty() {
            body = after.unwrap_or_default();
            break;
        }
        let (name, value) = match part.iter().position(|&b| b == b':') {
            Some(c) => (&part[..c], part[c + 1..].trim_ascii_start()),
            None => (part, &b""[..]),
        };
        headers.push((text(name), text(value)));
    }
    if let Some(ct) = BODY_TYPES[at(1) % BODY_TYPES.len()] {
        headers.push(("Content-Type".into(), ct.into()));
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        headers.insert(0, ("Host".into(), "shop.example".into()));
    }
    if !body.is_empty() {
        headers.push(("Content-Length".into(), body.len().to_string()));
    }
    HttpRequest {
        method: METHODS[at(0) % METHODS.len()].into(),
        uri,
        version: "HTTP/1.1".into(),
        headers,
        body: body.to_vec(),
        client_ip: Some(std::net::IpAddr::from([127, 0, 0, at(2) as u8])),
        country: None,
    }
}

/// The bytes up to the first NUL, and those after it (`None` when there is no NUL).
fn split_nul(b: &[u8]) -> (&[u8], Option<&[u8]>) {
    match b.iter().position(|&c| c == 0) {
        Some(p) => (&b[..p], Some(&b[p + 1..])),
        None => (b, None),
    }
}

/// The rule set twice: as hosts load it, and without the prefilter or the cross-request memo
/// of operator misses, to compare against.
pub struct Pair {
    /// Loaded as the edge and the origin load it.
    pub full: RuleSet,
    /// The same rules without the literal prefilter and the memo: every rule runs its operator
    /// on every value.
    pub plain: RuleSet,
}

impl Pair {
    /// Loads `files` (with `data` files) twice under `config`.
    pub fn load(
        files: &[(String, String)],
        data: &[(String, String)],
        config: &WafConfig,
    ) -> Result<Pair, LoadError> {
        let full = RuleSet::from_sources(files, data, config)?;
        let mut plain = RuleSet::from_sources(files, data, config)?;
        plain.drop_prefilter();
        plain.set_memo(false);
        Ok(Pair { full, plain })
    }

    /// Evaluates `req` three ways and says how they differ, if they do: as hosts do (the
    /// prefilter, the rule set's precomputed prefix, a recycled per-request cache, the misses
    /// remembered from earlier requests), once more (a cache that served the previous request,
    /// and this request's misses remembered), and with every rule run on every value from
    /// scratch.
    pub fn check(&self, req: &HttpRequest) -> Result<(), String> {
        let first = self.full.evaluate(req);
        let again = self.full.evaluate(req);
        if first != again {
            return Err(format!(
                "a second evaluation differs:\n{first:?}\n{again:?}"
            ));
        }
        let reference = self.plain.evaluate_every_rule(req, self.plain.config());
        if first != reference {
            return Err(format!(
                "the prefilter or the prefix changed the verdict:\nwith: {first:?}\nwithout: {reference:?}"
            ));
        }
        Ok(())
    }
}

/// Parses `data` as a SecLang file. A file that loads is evaluated against two requests (one
/// made from its own bytes); one that does not must say where, within the file.
pub fn check_seclang(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let lines = text.lines().count().max(1);
    let files = [("fuzz.conf".to_string(), text)];
    match RuleSet::from_sources(&files, &[], &WafConfig::default()) {
        Ok(rs) => {
            let _ = rs.evaluate(&request(
                b"\x01\x02\x03/a?b=c\0Cookie: d=e\0\0{\"f\":[1,\"g\"]}",
            ));
            let _ = rs.evaluate(&request(data));
        }
        Err(LoadError::Parse { location, .. } | LoadError::MissingDataFile { location, .. }) => {
            assert_eq!(location.file, "fuzz.conf");
            assert!(
                (1..=lines + 1).contains(&location.line) && location.column >= 1,
                "error at {location} outside a file of {lines} lines"
            );
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

/// Parses `data` as a custom rules file: it loads, or fails naming a place in the file. One
/// that loads runs its own tests and judges a request made from its bytes.
pub fn check_rules_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match CustomRules::from_toml("fuzz.toml", text) {
        Ok(rules) => {
            let _ = rules.run_tests(1_790_000_000_000);
            let limits = crate::RateLimiter::new(64);
            let _ = rules.evaluate(&request(data), 1_790_000_000_000, &limits);
        }
        Err(e) => {
            let (file, line, column) = e.location();
            assert_eq!(file, "fuzz.toml");
            assert!(line >= 1 && column >= 1, "error at {line}:{column}");
        }
    }
}

/// Parses `data` as a rule expression: what parses prints as text that parses to the same
/// printed form, and type-checks without panicking.
pub fn check_expr(data: &[u8]) {
    use crate::expr::{check, parse, ListKind};
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(e) = parse(src) else {
        return;
    };
    let printed = e.to_string();
    let again = parse(&printed).unwrap_or_else(|err| panic!("{printed:?} does not parse: {err}"));
    assert_eq!(again.to_string(), printed);
    let _ = check(src, &e, &|name: &str| {
        Some(if name.starts_with('i') {
            ListKind::Ip
        } else {
            ListKind::Str
        })
    });
}
