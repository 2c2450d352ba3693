//! Test and corpus plumbing shared by the CLI and the regression test: the JSON Lines corpus
//! format (`waf-corpus/README.md`), the per-test CRS expectations, and the configuration the CRS
//! test harness uses.

use crate::config::{Mode, WafConfig};
use crate::engine::Verdict;
use crate::input::HttpRequest;
use serde::Deserialize;

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
}

/// The configuration CRS's test harness gives its WAFs (`tests/docker-compose.yml`): detection
/// only, blocking paranoia 4, argument length 400, total argument length 6400, file limits.
pub fn ftw_config() -> WafConfig {
    let mut c = WafConfig {
        mode: Mode::Detect,
        paranoia: 4,
        ..WafConfig::default()
    };
    c.limits.max_body_bytes = 13_107_200;
    for (k, v) in [
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
