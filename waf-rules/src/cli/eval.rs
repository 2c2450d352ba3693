//! `waf-rules eval` and `waf-rules explain`.

use anyhow::{Context, Result};
use clap::Args;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use waf_rules::harness::{self, CorpusEntry};
use waf_rules::{Action, Mode, WafConfig};

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
    /// How many top false-positive rules to list.
    #[arg(long, default_value_t = 10)]
    pub top: usize,
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
    /// A request as a corpus line (JSON object); with `--id`, a JSON Lines corpus to pick from.
    pub request: PathBuf,
    /// Pick this entry id from a JSON Lines file.
    #[arg(long)]
    pub id: Option<String>,
}

fn config(paranoia: u8, threshold: u32) -> WafConfig {
    WafConfig {
        mode: Mode::Block,
        paranoia,
        inbound_threshold: threshold,
        ..WafConfig::default()
    }
}

#[derive(Default)]
struct Counts {
    attacks: usize,
    detected: usize,
    benign: usize,
    false_pos: usize,
}

/// Runs `eval`.
pub fn eval(a: &EvalArgs) -> Result<ExitCode> {
    let cfg = config(a.paranoia, a.threshold);
    let rs = super::load_crs(&a.crs, &cfg)?;
    let mut per_cat: BTreeMap<String, Counts> = BTreeMap::new();
    let mut total = Counts::default();
    let mut fp_rules: HashMap<u32, usize> = HashMap::new();
    let mut requests = 0usize;
    for path in &a.corpora {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8_lossy(&text);
        let entries: Vec<CorpusEntry> =
            harness::parse_jsonl(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for e in &entries {
            requests += 1;
            let v = rs.evaluate(&e.to_request());
            let blocked = v.action == Action::Block;
            let c = per_cat.entry(e.category.clone()).or_default();
            let attack = e.expect == "attack";
            for x in [&mut *c, &mut total] {
                if attack {
                    x.attacks += 1;
                    x.detected += usize::from(blocked);
                } else {
                    x.benign += 1;
                    x.false_pos += usize::from(blocked);
                }
            }
            if !attack && blocked {
                let mut seen = Vec::new();
                for m in &v.matches {
                    if m.id < 949000 && !seen.contains(&m.id) {
                        seen.push(m.id);
                        *fp_rules.entry(m.id).or_default() += 1;
                    }
                }
            }
        }
    }
    println!("per category (detected/attacks, false positives/benign):");
    for (cat, c) in &per_cat {
        println!(
            "  {cat}: attacks {}/{}, false positives {}/{}",
            c.detected, c.attacks, c.false_pos, c.benign
        );
    }
    let mut top: Vec<(u32, usize)> = fp_rules.into_iter().collect();
    top.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    println!("top false-positive rules:");
    for (id, n) in top.iter().take(a.top) {
        println!("  {id}: {n}");
    }
    let tpr = if total.attacks > 0 {
        total.detected as f64 / total.attacks as f64
    } else {
        f64::NAN
    };
    let tnr = if total.benign > 0 {
        1.0 - total.false_pos as f64 / total.benign as f64
    } else {
        f64::NAN
    };
    let ba = match (tpr.is_nan(), tnr.is_nan()) {
        (false, false) => (tpr + tnr) / 2.0,
        (true, false) => tnr,
        (false, true) => tpr,
        _ => f64::NAN,
    };
    let num = |x: f64| {
        if x.is_nan() {
            serde_json::Value::Null
        } else {
            serde_json::json!((x * 10000.0).round() / 10000.0)
        }
    };
    let summary = serde_json::json!({
        "tpr": num(tpr),
        "tnr": num(tnr),
        "balanced_accuracy": num(ba),
        "requests": requests,
        "attacks": total.attacks,
        "detected": total.detected,
        "benign": total.benign,
        "false_positives": total.false_pos,
        "paranoia": a.paranoia,
        "top_fp_rules": top.iter().take(a.top).map(|(id, n)| serde_json::json!([id, n])).collect::<Vec<_>>(),
    });
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// Runs `explain`.
pub fn explain(a: &ExplainArgs) -> Result<ExitCode> {
    let text =
        std::fs::read(&a.request).with_context(|| format!("reading {}", a.request.display()))?;
    let text = String::from_utf8_lossy(&text);
    let entry: CorpusEntry = match &a.id {
        Some(id) => harness::parse_jsonl::<CorpusEntry>(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.request.display()))?
            .into_iter()
            .find(|e| &e.id == id)
            .with_context(|| format!("no entry `{id}` in {}", a.request.display()))?,
        None => serde_json::from_str(text.trim())
            .with_context(|| format!("parsing {}", a.request.display()))?,
    };
    let cfg = config(a.paranoia, 5);
    let rs = super::load_crs(&a.crs, &cfg)?;
    let detect = WafConfig {
        mode: Mode::Detect,
        ..cfg.clone()
    };
    let v = rs.evaluate_with(&entry.to_request(), &detect);
    let blocking = rs.evaluate(&entry.to_request());
    println!("{} {}", entry.method, entry.uri);
    for m in &v.matches {
        println!(
            "  {} PL{} {:?}: {} [{} = {:?}]",
            m.id,
            m.paranoia,
            m.severity.map(|s| format!("{s:?}")).unwrap_or_default(),
            m.msg,
            m.variable,
            m.value_excerpt
        );
    }
    println!(
        "score {} → {}",
        blocking.score,
        match blocking.action {
            Action::Allow => "allow",
            Action::Block => "block",
        }
    );
    Ok(ExitCode::SUCCESS)
}
