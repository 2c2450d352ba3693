//! The OWASP CRS v4.28.0 regression suite, run in-process against the engine.
//!
//! Data comes from the shared folder (`$FLASHEDGE_SHARED`, default `../shared` next to the
//! workspace): `crs-4.28.0/` for the rules and `waf-corpus/crs.jsonl` + `crs_meta.jsonl` for the
//! tests (the go-ftw YAML tests rebuilt as go-ftw sends them; `waf-rules ftw DIR` runs the YAML
//! itself). The harness configuration is the one CRS's own test setup uses (detection only,
//! blocking paranoia 4, argument length limits).
//!
//! `crs-known-failures.txt` lists the tests known to fail, each with a reason. This test fails
//! when a test not on the list fails, or when a listed test passes (so the list shrinks as the
//! engine improves). Without the shared folder it fails, unless `FLASHEDGE_ALLOW_NO_SHARED=1`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use waf_rules::harness::{self, CorpusEntry, CrsMeta};

fn shared_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FLASHEDGE_SHARED") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

fn known_failures() -> BTreeMap<String, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/crs-known-failures.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((id, why)) => (id.to_string(), why.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

#[test]
fn crs_regression_suite() {
    let shared = shared_dir();
    let crs = shared.join("crs-4.28.0");
    let corpus = shared.join("waf-corpus/crs.jsonl");
    let meta = shared.join("waf-corpus/crs_meta.jsonl");
    if !crs.join("rules").is_dir() || !corpus.is_file() || !meta.is_file() {
        if std::env::var("FLASHEDGE_ALLOW_NO_SHARED").as_deref() == Ok("1") {
            eprintln!(
                "shared data not found at {}; skipped because FLASHEDGE_ALLOW_NO_SHARED=1",
                shared.display()
            );
            return;
        }
        panic!(
            "CRS regression data not found under {} (set FLASHEDGE_SHARED, or \
             FLASHEDGE_ALLOW_NO_SHARED=1 to skip on purpose)",
            shared.display()
        );
    }
    let cfg = harness::ftw_config();
    let rs = waf_rules::crs::load_dir(&crs, &cfg).expect("CRS loads");
    let read = |p: &PathBuf| std::fs::read_to_string(p).expect("readable corpus");
    let entries: Vec<CorpusEntry> = harness::parse_jsonl(&read(&corpus)).expect("corpus parses");
    let metas: Vec<CrsMeta> = harness::parse_jsonl(&read(&meta)).expect("meta parses");
    let outcomes = harness::run_crs_corpus(&rs, &cfg, &entries, &metas);
    assert!(outcomes.len() > 4000, "only {} tests ran", outcomes.len());
    let known = known_failures();
    let mut new_failures = Vec::new();
    let mut fixed = Vec::new();
    let mut failed = 0;
    for o in &outcomes {
        match (&o.result, known.contains_key(&o.id)) {
            (Err(why), false) => new_failures.push(format!("{}: {why}", o.id)),
            (Ok(()), true) => fixed.push(o.id.clone()),
            _ => {}
        }
        failed += usize::from(o.result.is_err());
    }
    let passed = outcomes.len() - failed;
    eprintln!(
        "CRS regression: {passed} passed, {failed} failed ({:.2}%)",
        100.0 * passed as f64 / outcomes.len() as f64
    );
    assert!(
        new_failures.is_empty() && fixed.is_empty(),
        "failures not in crs-known-failures.txt:\n  {}\nlisted as failing but now pass \
         (remove them from the list):\n  {}",
        new_failures.join("\n  "),
        fixed.join("\n  ")
    );
}
