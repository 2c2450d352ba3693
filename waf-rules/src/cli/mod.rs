//! Subcommand dispatch. Each subcommand lives in its own function; `run` only routes.

mod eval;
mod ftw;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use waf_rules::{RuleSet, WafConfig};

#[derive(Parser)]
#[command(
    name = "waf-rules",
    about = "WAF rules: check, test and score OWASP CRS (SecLang)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Validate rule files (or directories of them); errors name file, line, column, directive.
    Check {
        /// `.conf` files or directories (a CRS directory is loaded as a whole).
        paths: Vec<PathBuf>,
    },
    /// Run go-ftw YAML regression tests in-process, configured as CRS's test harness.
    Ftw(ftw::FtwArgs),
    /// Run the CRS regression tests from the JSON Lines corpus (crs.jsonl + crs_meta.jsonl).
    CorpusFtw(ftw::CorpusArgs),
    /// Score JSON Lines corpora: detection, false positives, top false-positive rules.
    Eval(eval::EvalArgs),
    /// Show which rules matched one request and the transformed value that matched.
    Explain(eval::ExplainArgs),
}

/// Parses arguments and runs the subcommand.
pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { paths } => check(&paths),
        Cmd::Ftw(a) => ftw::ftw(&a),
        Cmd::CorpusFtw(a) => ftw::corpus(&a),
        Cmd::Eval(a) => eval::eval(&a),
        Cmd::Explain(a) => eval::explain(&a),
    }
}

/// Loads a CRS directory with a configuration, reporting unsupported rules on stderr.
pub fn load_crs(dir: &Path, config: &WafConfig) -> Result<RuleSet> {
    let rs = waf_rules::crs::load_dir(dir, config)
        .with_context(|| format!("loading CRS from {}", dir.display()))?;
    Ok(rs)
}

fn check(paths: &[PathBuf]) -> Result<ExitCode> {
    if paths.is_empty() {
        anyhow::bail!("give at least one rule file or directory");
    }
    let mut failed = false;
    for p in paths {
        let result = if p.join("rules").is_dir() {
            waf_rules::crs::load_dir(p, &WafConfig::default())
        } else {
            let mut files = Vec::new();
            let mut data = Vec::new();
            let list: Vec<PathBuf> = if p.is_dir() {
                let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .collect();
                v.sort();
                v
            } else {
                vec![p.clone()]
            };
            for f in &list {
                let text = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                let text = String::from_utf8_lossy(&text).into_owned();
                let name = f.display().to_string();
                if name.ends_with(".data") {
                    data.push((
                        f.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        text,
                    ));
                } else {
                    files.push((name, text));
                }
            }
            // Data files next to a single rule file are found too.
            if let Some(dir) = p.parent().filter(|_| p.is_file()) {
                if let Ok(rd) = std::fs::read_dir(dir) {
                    for e in rd.flatten() {
                        let path = e.path();
                        if path.extension().is_some_and(|x| x == "data") {
                            if let Ok(t) = std::fs::read(&path) {
                                data.push((
                                    e.file_name().to_string_lossy().into_owned(),
                                    String::from_utf8_lossy(&t).into_owned(),
                                ));
                            }
                        }
                    }
                }
            }
            RuleSet::from_sources(&files, &data, &WafConfig::default())
        };
        match result {
            Ok(rs) => {
                println!(
                    "{}: ok, {} rules, {} not runnable",
                    p.display(),
                    rs.rule_count(),
                    rs.unsupported().len()
                );
                for (id, why) in rs.unsupported() {
                    println!("  rule {id}: {why}");
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
