//! `waf-rules ftw` and `waf-rules corpus-ftw`: the CRS regression tests, in-process.

use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use waf_rules::harness::{self, CorpusEntry, CrsMeta, Outcome};

/// Arguments of `ftw`.
#[derive(Args)]
pub struct FtwArgs {
    /// Directory of go-ftw YAML tests (searched recursively), e.g. crs/tests/regression/tests.
    pub dir: PathBuf,
    /// CRS directory (default: three levels above DIR, as in the CRS repository layout).
    #[arg(long)]
    pub crs: Option<PathBuf>,
    /// Only tests whose rule id starts with this.
    #[arg(long)]
    pub rule: Option<String>,
}

/// Arguments of `corpus-ftw`.
#[derive(Args)]
pub struct CorpusArgs {
    /// crs.jsonl
    pub corpus: PathBuf,
    /// crs_meta.jsonl
    pub meta: PathBuf,
    /// CRS directory.
    #[arg(long)]
    pub crs: PathBuf,
}

fn read(p: &Path) -> Result<String> {
    let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

/// Runs `corpus-ftw`.
pub fn corpus(a: &CorpusArgs) -> Result<ExitCode> {
    let cfg = harness::ftw_config();
    let rs = super::load_crs(&a.crs, &cfg)?;
    let corpus: Vec<CorpusEntry> = harness::parse_jsonl(&read(&a.corpus)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.corpus.display()))?;
    let meta: Vec<CrsMeta> = harness::parse_jsonl(&read(&a.meta)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.meta.display()))?;
    let out = harness::run_crs_corpus(&rs, &cfg, &corpus, &meta);
    print!("{}", harness::summary(&out, 0));
    Ok(exit(&out))
}

fn exit(out: &[Outcome]) -> ExitCode {
    if out.iter().all(|o| o.result.is_ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `ftw`.
pub fn ftw(a: &FtwArgs) -> Result<ExitCode> {
    let crs = match &a.crs {
        Some(c) => c.clone(),
        None => a
            .dir
            .ancestors()
            .find(|p| p.join("rules").is_dir())
            .map(Path::to_path_buf)
            .context("no CRS directory above DIR; pass --crs")?,
    };
    let cfg = harness::ftw_config();
    let rs = super::load_crs(&crs, &cfg)?;
    let mut files = Vec::new();
    walk(&a.dir, &mut files)?;
    files.sort();
    let mut outcomes = Vec::new();
    let mut skipped = 0;
    for f in &files {
        let text = read(f)?;
        let doc: Option<waf_rules::harness::ftw::TestFile> =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
        // A file that is all comments holds no tests.
        let Some(doc) = doc else { continue };
        if let (Some(r), Some(id)) = (&a.rule, doc.rule_id) {
            if !id.to_string().starts_with(r.as_str()) {
                continue;
            }
        }
        let (o, s) = waf_rules::harness::ftw::run_file(&rs, &cfg, &doc);
        outcomes.extend(o);
        skipped += s;
    }
    print!("{}", harness::summary(&outcomes, skipped));
    Ok(exit(&outcomes))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    Ok(())
}
