//! Test and corpus plumbing shared by the CLI and the regression test: the JSON Lines corpus
//! format (`waf-corpus/README.md`), the per-test CRS expectations, and the configuration the CRS
//! test harness uses.

use crate::config::{Mode, WafConfig};
use crate::engine::Verdict;
use crate::input::HttpRequest;
use serde::Deserialize;

/// The requests the benchmarks time beside `bench/proxy`'s load: (bare `GET /`, the GET with
/// a query string and the JSON POST of a 2 KiB checkout document that `bench/proxy` sends).
/// `crs_latency` times them natively, `wasm-probe`'s `bench.mjs` in V8.
pub fn bench_requests() -> [HttpRequest; 3] {
    let get = |uri: &str, headers: &[(&str, &str)]| HttpRequest {
        method: "GET".into(),
        uri: uri.into(),
        version: "HTTP/1.1".into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    };
    let checkout = include_str!("../../examples/checkout.json");
    let post = HttpRequest {
        method: "POST".into(),
        uri: "/api/cart".into(),
        version: "HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), "shop.example".into()),
            ("Accept".into(), "application/json".into()),
            ("Content-Type".into(), "application/json".into()),
            ("Content-Length".into(), checkout.len().to_string()),
        ],
        body: checkout.as_bytes().to_vec(),
        ..Default::default()
    };
    [
        get("/", &[("Host", "shop.example")]),
        get(
            "/api/products/2?ref=flash-sale&page=3&sort=price",
            &[("Host", "shop.example"), ("Accept", "application/json")],
        ),
        post,
    ]
}

/// One request of a corpus file.
#[derive(Debug, Clone, Deserialize)]
pub struct CorpusEntry {
    /// Unique id, e.g. `crs:920100:1`.
    pub id: String,
    /// Category (attack family or `legit/...`).
    #[serde(default)]
    pub category: String,
    /// Method as sent.
    pub method: String,
    /// Raw request target.
    pub uri: String,
    /// Header fields in wire order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Body text.
    #[serde(default)]
    pub body: String,
    /// `attack` or `benign`.
    #[serde(default)]
    pub expect: String,
    /// Protocol version, if given.
    #[serde(default)]
    pub version: Option<String>,
}

impl CorpusEntry {
    /// The engine input for this entry.
    pub fn to_request(&self) -> HttpRequest {
        HttpRequest {
            method: self.method.clone(),
            uri: self.uri.clone(),
            version: self.version.clone().unwrap_or_else(|| "HTTP/1.1".into()),
            headers: self.headers.clone(),
            body: self.body.as_bytes().to_vec(),
            client_ip: "127.0.0.1".parse().ok(),
            country: None,
        }
    }
}

/// What a CRS regression test expects (one line of `crs_meta.jsonl`).
#[derive(Debug, Clone, Deserialize)]
pub struct CrsMeta {
    /// Same id as the corpus entry.
    pub id: String,
    /// The rule under test.
    pub rule_id: u32,
    /// The test number.
    pub test_id: u32,
    /// The rule's paranoia level.
    #[serde(default)]
    pub paranoia_level: Option<u8>,
    /// HTTP version the test sends.
    #[serde(default)]
    pub version: Option<String>,
    /// Rules that must fire.
    #[serde(default)]
    pub expect_ids: Vec<u32>,
    /// Rules that must not fire.
    #[serde(default)]
    pub no_expect_ids: Vec<u32>,
    /// How the corpus body text maps to bytes (`utf-8` or `latin-1`).
    #[serde(default)]
    pub body_encoding: Option<String>,
}

/// The configuration CRS's test harness gives its WAFs (`tests/docker-compose.yml`): detection
/// only, blocking paranoia 4, argument length 400, total argument length 6400, file limits,
/// and the container image's defaults for argument name length (100) and count (255).
pub fn ftw_config() -> WafConfig {
    let mut c = WafConfig {
        mode: Mode::Detect,
        paranoia: 4,
        ..WafConfig::default()
    };
    c.limits.max_body_bytes = 13_107_200;
    for (k, v) in [
        ("arg_name_length", "100"),
        ("max_num_args", "255"),
        ("arg_length", "400"),
        ("total_arg_length", "6400"),
        ("max_file_size", "64100"),
        ("combined_file_sizes", "65535"),
    ] {
        c.tx.insert(k.into(), v.into());
    }
    c
}

/// go-ftw semantics: every expected id fired and no forbidden id fired. Returns the reason
/// when the test fails.
pub fn judge(v: &Verdict, expect_ids: &[u32], no_expect_ids: &[u32]) -> Result<(), String> {
    let fired = |id: u32| v.matches.iter().any(|m| m.id == id);
    let missing: Vec<u32> = expect_ids.iter().copied().filter(|&i| !fired(i)).collect();
    let extra: Vec<u32> = no_expect_ids
        .iter()
        .copied()
        .filter(|&i| fired(i))
        .collect();
    if missing.is_empty() && extra.is_empty() {
        Ok(())
    } else {
        Err(format!("missing {missing:?}, unexpected {extra:?}"))
    }
}

/// Parses a JSON Lines file; bad lines are reported with their number.
pub fn parse_jsonl<T: for<'de> Deserialize<'de>>(text: &str) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?);
    }
    Ok(out)
}

/// The result of one regression test.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Test id, e.g. `920100-4` (rule id and test number, as go-ftw names them).
    pub id: String,
    /// The rule under test.
    pub rule_id: u32,
    /// That rule's paranoia level.
    pub paranoia: u8,
    /// `Ok` when passed, otherwise why not.
    pub result: Result<(), String>,
}

/// Runs the CRS regression tests given as JSON Lines (`crs.jsonl` + `crs_meta.jsonl`).
pub fn run_crs_corpus(
    rs: &crate::RuleSet,
    config: &WafConfig,
    corpus: &[CorpusEntry],
    meta: &[CrsMeta],
) -> Vec<Outcome> {
    let by_id: std::collections::HashMap<&str, &CorpusEntry> =
        corpus.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut out = Vec::new();
    for m in meta {
        let Some(entry) = by_id.get(m.id.as_str()) else {
            continue;
        };
        let mut req = entry.to_request();
        if let Some(v) = &m.version {
            req.version = v.clone();
        }
        if m.body_encoding.as_deref() == Some("latin-1") {
            // Each character is one byte; anything past U+00FF cannot have come from latin-1.
            req.body = entry
                .body
                .chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect();
        }
        let v = rs.evaluate_with(&req, config);
        out.push(Outcome {
            id: format!("{}-{}", m.rule_id, m.test_id),
            rule_id: m.rule_id,
            paranoia: m
                .paranoia_level
                .or_else(|| rs.rule_paranoia(m.rule_id))
                .unwrap_or(1),
            result: judge(&v, &m.expect_ids, &m.no_expect_ids),
        });
    }
    out
}

/// A printable summary: per rule family (`920`, `942`, ...) and per paranoia level, the
/// failing test ids, and the closing `N passed, N failed` line.
pub fn summary(outcomes: &[Outcome], skipped: usize) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let mut fam: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    let mut pl: BTreeMap<u8, (usize, usize)> = BTreeMap::new();
    for o in outcomes {
        let f = fam.entry(o.rule_id / 1000).or_default();
        let p = pl.entry(o.paranoia).or_default();
        if o.result.is_ok() {
            f.0 += 1;
            p.0 += 1;
        } else {
            f.1 += 1;
            p.1 += 1;
        }
    }
    let pct = |a: usize, b: usize| {
        if a + b == 0 {
            100.0
        } else {
            100.0 * a as f64 / (a + b) as f64
        }
    };
    let mut s = String::new();
    let _ = writeln!(s, "per rule family:");
    for (f, (a, b)) in &fam {
        let _ = writeln!(s, "  {f}: {a} passed, {b} failed ({:.1}%)", pct(*a, *b));
    }
    let _ = writeln!(s, "per paranoia level:");
    for (p, (a, b)) in &pl {
        let _ = writeln!(s, "  PL{p}: {a} passed, {b} failed ({:.1}%)", pct(*a, *b));
    }
    let failing: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    if !failing.is_empty() {
        let _ = writeln!(s, "failing tests:");
        for o in &failing {
            let _ = writeln!(
                s,
                "  {} ({})",
                o.id,
                o.result.as_ref().err().map(String::as_str).unwrap_or("")
            );
        }
    }
    let passed = outcomes.len() - failing.len();
    if skipped > 0 {
        let _ = writeln!(
            s,
            "{passed} passed, {} failed, {skipped} skipped",
            failing.len()
        );
    } else {
        let _ = writeln!(s, "{passed} passed, {} failed", failing.len());
    }
    s
}

pub mod ftw;
