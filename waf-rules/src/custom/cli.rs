//! The `test` and `check` commands for rules files, callable from any binary
//! (`waf-custom`, and `waf-rules test` / `waf-rules check`). Native only: they read files.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

use super::{CustomRules, Mode};

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
