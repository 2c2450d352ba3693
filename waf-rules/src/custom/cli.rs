//! The `test` and `check` commands for rules files, callable from any binary
//! (`waf-custom`, and `waf-rules test` / `waf-rules check`). Native only: they read files.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use std::collections::BTreeMap;

use super::{CustomAction, CustomRules, Mode};
use crate::input::HttpRequest;
use crate::ratelimit::NoLimits;

/// Reads every file (errors name the path).
pub fn read_files(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read rules file {}", p.display()))?;
            Ok((p.display().to_string(), text))
        })
        .collect()
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Validates the files as one ruleset. Prints a summary (and warnings about expired rules) or the
/// error; returns whether they are valid. `Err` only for I/O.
pub fn check_command(paths: &[PathBuf], out: &mut dyn Write) -> anyhow::Result<bool> {
    let files = read_files(paths)?;
    match CustomRules::from_files(&files) {
        Ok(rules) => {
            let now = now_ms();
            for r in rules.rules() {
                if r.expires_ms.is_some_and(|e| now >= e) {
                    writeln!(
                        out,
                        "warning: {}: rule `{}` has expired and no longer applies",
                        r.location, r.id
                    )?;
                }
            }
            let shadow = rules
                .rules()
                .iter()
                .filter(|r| r.mode == Mode::Shadow)
                .count();
            writeln!(
                out,
                "ok: {} rules ({shadow} in shadow mode), {} test cases in {} file(s)",
                rules.len(),
                rules.test_count(),
                files.len()
            )?;
            Ok(true)
        }
        Err(e) => {
            writeln!(out, "error: {e}")?;
            Ok(false)
        }
    }
}

/// Runs every in-file test case of the files (loaded together as one ruleset) and prints one line
/// per case and a final `N passed, N failed`. Returns whether all passed (a file that fails to
/// load counts as a failure). `Err` only for I/O.
pub fn test_command(paths: &[PathBuf], out: &mut dyn Write) -> anyhow::Result<bool> {
    let files = read_files(paths)?;
    let rules = match CustomRules::from_files(&files) {
        Ok(r) => r,
        Err(e) => {
            writeln!(out, "error: {e}")?;
            writeln!(out, "0 passed, 1 failed")?;
            return Ok(false);
        }
    };
    let report = rules.run_tests(now_ms());
    for o in &report.outcomes {
        writeln!(out, "{o}")?;
    }
    writeln!(out, "{}", report.summary())?;
    Ok(report.failed() == 0)
}

/// One line of a corpus file (`waf-corpus/*.jsonl`).
#[derive(Debug, serde::Deserialize)]
struct CorpusLine {
    #[serde(default)]
    id: String,
    method: String,
    uri: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
    /// `attack` or `benign`.
    #[serde(default)]
    expect: String,
}

#[derive(Debug, Default)]
struct Tally {
    requests: usize,
    stopped: usize,
    allowed: usize,
    logged: usize,
}

/// Scores the rules (`.toml` files, loaded as one ruleset) against corpora (`.jsonl` files, one
/// request per line as in `waf-corpus/`), rate limits off. Prints per corpus and expectation how
/// many requests were stopped (block), let through by an `allow`, or only logged, plus the rules
/// that stopped benign requests (false positives). Returns whether the rules loaded. `Err` only for
/// I/O or malformed corpus lines.
pub fn eval_command(paths: &[PathBuf], out: &mut dyn Write) -> anyhow::Result<bool> {
    let (rule_paths, corpus_paths): (Vec<PathBuf>, Vec<PathBuf>) = paths
        .iter()
        .cloned()
        .partition(|p| p.extension().is_some_and(|e| e == "toml"));
    let files = read_files(&rule_paths)?;
    let rules = match CustomRules::from_files(&files) {
        Ok(r) => r,
        Err(e) => {
            writeln!(out, "error: {e}")?;
            return Ok(false);
        }
    };
    let now = now_ms();
    for corpus in &corpus_paths {
        let text = std::fs::read_to_string(corpus)
            .with_context(|| format!("cannot read corpus {}", corpus.display()))?;
        let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
        let mut false_positives: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let c: CorpusLine = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a corpus line", corpus.display(), n + 1))?;
            let req = HttpRequest {
                method: c.method,
                uri: c.uri,
                version: "HTTP/1.1".into(),
                headers: c.headers,
                body: c.body.into_bytes(),
                client_ip: None,
                country: None,
            };
            let v = rules.evaluate(&req, now, &NoLimits);
            let t = tallies.entry(c.expect.clone()).or_default();
            t.requests += 1;
            match &v.action {
                CustomAction::Block { rule_id } | CustomAction::RateLimited { rule_id, .. } => {
                    t.stopped += 1;
                    if c.expect != "attack" {
                        let fp = false_positives
                            .entry(rule_id.to_string())
                            .or_insert((0, c.id.clone()));
                        fp.0 += 1;
                    }
                }
                CustomAction::Allow { .. } => t.allowed += 1,
                CustomAction::Pass => {}
            }
            if !v.matches.is_empty() && v.action.status().is_none() {
                t.logged += 1;
            }
        }
        for (expect, t) in &tallies {
            writeln!(
                out,
                "{} [{}]: {} requests, {} stopped, {} allowed by exception, {} only logged",
                corpus.display(),
                if expect.is_empty() { "?" } else { expect },
                t.requests,
                t.stopped,
                t.allowed,
                t.logged
            )?;
        }
        for (rule, (count, example)) in &false_positives {
            writeln!(out, "  false positives: rule `{rule}` stopped {count} non-attack request(s), e.g. {example}")?;
        }
    }
    Ok(true)
}
