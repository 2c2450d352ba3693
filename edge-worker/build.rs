//! Embeds the WAF rules into the worker at build time: the OWASP CRS directory and the custom
//! rules files. Nothing is read at run time, so the deployed worker needs no storage to start.
//!
//! - `FLASHEDGE_CRS_DIR`: a CRS v4 directory (`crs-setup.conf[.example]`, `rules/*.conf`,
//!   `rules/*.data`). Default: `../../shared/crs-4.28.0` from this crate. When it does not exist
//!   the worker is built without CRS and says so in its logs and at `/__edge/health`. The
//!   rules are loaded here once with every matcher built (the worker builds them on first
//!   use), so a rule the engine cannot load fails the build.
//! - `FLASHEDGE_EDGE_RULES`: `:`-separated custom rules files (TOML). Default:
//!   `../waf-rules/examples/shop-rules.toml`. They are loaded here once, so a broken file fails
//!   the build (and `wrangler deploy`) with its file, line and column: the worker that is
//!   running keeps running.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=FLASHEDGE_CRS_DIR");
    println!("cargo:rerun-if-env-changed=FLASHEDGE_EDGE_RULES");
    let here =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let crs_dir = std::env::var_os("FLASHEDGE_CRS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("../../shared/crs-4.28.0"));
    let rules: Vec<PathBuf> = match std::env::var("FLASHEDGE_EDGE_RULES") {
        Ok(list) => list
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect(),
        Err(_) => vec![here.join("../waf-rules/examples/shop-rules.toml")],
    };

    let mut out = String::new();
    let (files, data) = crs_files(&crs_dir);
    let source = if files.is_empty() {
        println!(
            "cargo:warning=no CRS at {} (set FLASHEDGE_CRS_DIR): the worker is built without the OWASP CRS",
            crs_dir.display()
        );
        "None".to_owned()
    } else {
        format!("Some({:?})", crs_dir.display().to_string())
    };
    let _ = writeln!(out, "/// Where the embedded CRS came from, if any.\npub static CRS_SOURCE: Option<&str> = {source};");
    if !files.is_empty() {
        // The worker builds its matchers lazily; build them all here once, so a pattern that
        // cannot be built fails the build naming the rule file, not a shopper's request.
        let rows = waf_rules::crs::rx_hint_rows(&files, &data)
            .unwrap_or_else(|e| panic!("the CRS at {} does not load: {e}", crs_dir.display()));
        // The precompiled part: what the analysis of each `@rx` pattern found (the literals
        // the prefilter needs), so the worker's load does not parse the patterns again.
        let _ = writeln!(
            out,
            "/// `@rx` analyses recorded at build time (see `waf_rules::prefilter::RxHints`).\n\
             pub static RX_HINTS: &[waf_rules::prefilter::RxHintRow] = &["
        );
        out.push_str(&rows);
        let _ = writeln!(out, "];");
    } else {
        let _ = writeln!(
            out,
            "/// No CRS embedded.\npub static RX_HINTS: &[waf_rules::prefilter::RxHintRow] = &[];"
        );
    }
    emit(&mut out, "CRS_FILES", &files);
    emit(&mut out, "CRS_DATA", &data);
    let mut texts = Vec::new();
    for r in &rules {
        let text = std::fs::read_to_string(r)
            .unwrap_or_else(|e| panic!("FLASHEDGE_EDGE_RULES names {}: {e}", r.display()));
        texts.push((r.display().to_string(), text));
    }
    // A ruleset that does not load never ships: the build fails naming file, line and column.
    if let Err(e) = waf_rules::CustomRules::from_files(&texts) {
        panic!("the custom rules do not load: {e}");
    }
    emit(&mut out, "RULE_FILES", &rules);
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("embedded_rules.rs");
    std::fs::write(&dest, out).expect("writing embedded_rules.rs");
}

/// CRS files in load order (setup, then `rules/*.conf` by name) and its data files.
fn crs_files(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let setup = ["crs-setup.conf", "crs-setup.conf.example"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file());
    let Ok(listing) = std::fs::read_dir(dir.join("rules")) else {
        return (Vec::new(), Vec::new());
    };
    println!("cargo:rerun-if-changed={}", dir.join("rules").display());
    let mut paths: Vec<PathBuf> = listing.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut files: Vec<PathBuf> = setup.into_iter().collect();
    files.extend(
        paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .cloned(),
    );
    let data = paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "data"))
        .collect();
    (files, data)
}

/// `pub static NAME: &[(&str, &str)] = &[(file name, include_str!(path)), ...];`
fn emit(out: &mut String, name: &str, paths: &[PathBuf]) {
    let _ = writeln!(
        out,
        "/// Embedded at build time by build.rs.\npub static {name}: &[(&str, &str)] = &["
    );
    for p in paths {
        println!("cargo:rerun-if-changed={}", p.display());
        let abs = p.canonicalize().unwrap_or_else(|_| p.clone());
        let file_name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "    ({file_name:?}, include_str!({:?})),",
            abs.display().to_string()
        );
    }
    let _ = writeln!(out, "];");
}
