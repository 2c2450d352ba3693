//! `waf-rules eval` and `waf-rules explain`.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// CRS directory.
    #[arg(long)]
    pub crs: PathBuf,
    /// Paranoia level 1..4.
    #[arg(long, default_value_t = 1)]
    pub paranoia: u8,
    /// Inbound anomaly score threshold.
    #[arg(long, default_value_t = 5)]
    pub threshold: u32,
    /// JSON Lines corpora.
    #[arg(required = true)]
    pub corpora: Vec<PathBuf>,
}

/// Arguments of `explain`.
#[derive(Args)]
pub struct ExplainArgs {
    /// CRS directory.
    #[arg(long)]
    pub crs: PathBuf,
    /// Paranoia level 1..4.
    #[arg(long, default_value_t = 1)]
    pub paranoia: u8,
    /// A request as one corpus line (JSON object).
    pub request: PathBuf,
}

/// Runs `eval`.
pub fn eval(_a: &EvalArgs) -> Result<ExitCode> {
    anyhow::bail!("not yet")
}

/// Runs `explain`.
pub fn explain(a: &ExplainArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&a.request)
        .with_context(|| format!("reading {}", a.request.display()))?;
    let _ = text;
    anyhow::bail!("not yet")
}
