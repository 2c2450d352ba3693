//! The fuzz targets' checks (`waf_rules::fuzzing`, run by `waf-rules/fuzz`) on a stable
//! toolchain: every input the fuzzers found and kept (`fuzz/regressions/<target>/`), and the
//! WAF corpora through the differential check (the prefilter, the precomputed prefix and the
//! per-request caches never change a verdict).
//!
//! CRS comes from the shared folder (`$FLASHEDGE_SHARED`, default `../shared`); without it the
//! CRS tests fail, unless `FLASHEDGE_ALLOW_NO_SHARED=1`.

use std::path::PathBuf;
use waf_rules::fuzzing::{self, Pair};
use waf_rules::harness::{self, CorpusEntry};
use waf_rules::WafConfig;

fn shared_dir() -> PathBuf {
    match std::env::var_os("FLASHEDGE_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    }
}

/// CRS loaded twice (with and without the prefilter) at `paranoia`; `None` only when the
/// shared folder is missing on purpose.
fn crs_pair(paranoia: u8) -> Option<Pair> {
    let dir = shared_dir().join("crs-4.28.0");
    if !dir.join("rules").is_dir() {
        assert_eq!(
            std::env::var("FLASHEDGE_ALLOW_NO_SHARED").as_deref(),
            Ok("1"),
            "CRS not found under {}",
            dir.display()
        );
        return None;
    }
    let (files, data) = waf_rules::crs::read_dir(&dir).expect("CRS loads");
    let config = WafConfig {
        paranoia,
        ..WafConfig::default()
    };
    Some(Pair::load(&files, &data, &config).expect("CRS compiles"))
}

/// The files kept under `fuzz/regressions/<target>/`, sorted by name.
fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.expect("directory entry").path();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn request_bytes_split_into_target_headers_and_body() {
    let r = fuzzing::request(b"\x01\x02\x05/cart?x=1\0X-A: b\0Host: h\0\0{\"q\":1}\0tail");
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri, "/cart?x=1");
    assert_eq!(r.client_ip, Some([127, 0, 0, 5].into()));
    assert_eq!(r.body, b"{\"q\":1}\0tail");
    assert_eq!(r.header("x-a"), Some("b"));
    assert_eq!(r.header("host"), Some("h"), "the input's own Host is kept");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("content-length"), Some("12"));
    // Short inputs still make a request.
    let r = fuzzing::request(b"");
    assert_eq!((r.method.as_str(), r.uri.as_str()), ("GET", ""));
    assert_eq!(r.header("host"), Some("shop.example"));
}

#[test]
fn seclang_inputs_the_fuzzer_kept_load_or_fail_with_a_location() {
    let found = regressions("parse");
    assert!(!found.is_empty());
    for (name, bytes) in found {
        eprintln!("{name}");
        fuzzing::check_seclang(&bytes);
    }
}

#[test]
fn rules_file_and_expression_inputs_the_fuzzers_kept_are_handled() {
    for (target, check) in [
        ("rules_file", fuzzing::check_rules_file as fn(&[u8])),
        ("expr_parse", fuzzing::check_expr),
    ] {
        let found = regressions(target);
        assert!(!found.is_empty());
        for (name, bytes) in found {
            eprintln!("{name}");
            check(&bytes);
        }
    }
}

#[test]
fn requests_the_fuzzer_kept_get_one_verdict_however_computed() {
    let found = regressions("evaluate");
    assert!(!found.is_empty());
    let Some(pair) = crs_pair(4) else { return };
    for (name, bytes) in found {
        if let Err(e) = pair.check(&fuzzing::request(&bytes)) {
            panic!("{name}: {e}");
        }
    }
}

/// Every gotestwaf request and every 16th legit-dev one, at paranoia 1 (what the tiers run) and
/// 4 (every rule): the prefilter and the caches agree with running every rule on every value.
#[test]
fn the_prefilter_never_changes_a_verdict_on_the_corpora() {
    let corpus = shared_dir().join("waf-corpus");
    let read = |name: &str| -> Vec<CorpusEntry> {
        let text =
            std::fs::read_to_string(corpus.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        harness::parse_jsonl(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    for paranoia in [1, 4] {
        let Some(pair) = crs_pair(paranoia) else {
            return;
        };
        let attacks = read("gotestwaf.jsonl");
        let legit = read("legit-dev.jsonl");
        let sample = attacks.iter().chain(legit.iter().step_by(16));
        let mut n = 0;
        let mut differ = Vec::new();
        for e in sample {
            if let Err(why) = pair.check(&e.to_request()) {
                differ.push(format!("{}: {why}", e.id));
            }
            n += 1;
        }
        assert!(n > 1000, "{n} requests checked");
        assert!(
            differ.is_empty(),
            "PL{paranoia}: {} of {n} requests differ; the first: {}",
            differ.len(),
            differ
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
