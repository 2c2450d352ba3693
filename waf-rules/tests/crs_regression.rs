//! The OWASP CRS v4.28.0 regression suite, run in-process against the engine.
//!
//! Data comes from the shared folder (`$FLASHEDGE_SHARED`, default `../shared` next to the
//! workspace): `crs-4.28.0/` for the rules and `waf-corpus/crs.jsonl` + `crs_meta.jsonl` for the
//! tests (the go-ftw YAML tests rebuilt as go-ftw sends them), and the YAML files under
//! `crs-4.28.0/tests/regression/tests` run directly. The harness configuration is the one CRS's own test setup uses (detection only,
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

/// The CRS directory under the shared folder; `None` (the test returns) only when it is
/// missing and `FLASHEDGE_ALLOW_NO_SHARED=1` says that is on purpose.
fn crs_dir() -> Option<PathBuf> {
    let crs = shared_dir().join("crs-4.28.0");
    if crs.join("rules").is_dir() {
        return Some(crs);
    }
    assert_eq!(
        std::env::var("FLASHEDGE_ALLOW_NO_SHARED").as_deref(),
        Ok("1"),
        "CRS not found under {}",
        crs.display()
    );
    None
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

fn check_against_known(outcomes: &[harness::Outcome], what: &str) {
    let known = known_failures();
    let mut new_failures = Vec::new();
    let mut fixed = Vec::new();
    let mut failed = 0;
    for o in outcomes {
        match (&o.result, known.contains_key(&o.id)) {
            (Err(why), false) => new_failures.push(format!("{}: {why}", o.id)),
            (Ok(()), true) => fixed.push(o.id.clone()),
            _ => {}
        }
        failed += usize::from(o.result.is_err());
    }
    let passed = outcomes.len() - failed;
    eprintln!(
        "CRS regression ({what}): {passed} passed, {failed} failed ({:.2}%)",
        100.0 * passed as f64 / outcomes.len().max(1) as f64
    );
    assert!(
        new_failures.is_empty() && fixed.is_empty(),
        "{what}: failures not in crs-known-failures.txt:\n  {}\nlisted as failing but now pass \
         (remove them from the list):\n  {}",
        new_failures.join("\n  "),
        fixed.join("\n  ")
    );
}

/// The go-ftw YAML files themselves, through the same request builder as `waf-rules ftw`.
#[test]
fn crs_yaml_suite() {
    let shared = shared_dir();
    let crs = shared.join("crs-4.28.0");
    let tests = crs.join("tests/regression/tests");
    if !tests.is_dir() {
        assert_eq!(
            std::env::var("FLASHEDGE_ALLOW_NO_SHARED").as_deref(),
            Ok("1"),
            "CRS regression YAML not found under {} (set FLASHEDGE_SHARED)",
            tests.display()
        );
        return;
    }
    let cfg = harness::ftw_config();
    let rs = waf_rules::crs::load_dir(&crs, &cfg).expect("CRS loads");
    let mut files = Vec::new();
    let mut stack = vec![tests];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readable test dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut outcomes = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable yaml");
        let doc: Option<harness::ftw::TestFile> =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if let Some(doc) = doc {
            outcomes.extend(harness::ftw::run_file(&rs, &cfg, &doc).0);
        }
    }
    assert!(
        outcomes.len() > 4000,
        "only {} YAML tests ran",
        outcomes.len()
    );
    check_against_known(&outcomes, "YAML");
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
    // The edge worker's load (matchers built on first use, `@rx` analyses taken from the
    // eager load at build time) must judge exactly as the eager one.
    let (files, data) = waf_rules::crs::read_dir(&crs).expect("CRS reads");
    assert!(
        rs.rx_hints().len() >= 250,
        "{} @rx analyses recorded",
        rs.rx_hints().len()
    );
    let lazy = waf_rules::RuleSet::from_sources_hinted(
        &files,
        &data,
        &cfg,
        waf_rules::operator::Compile::Lazy,
        Some(rs.rx_hints()),
    )
    .expect("CRS loads lazily");
    assert!(
        lazy.rx_hints().is_empty(),
        "every pattern came from the hints"
    );
    let read = |p: &PathBuf| std::fs::read_to_string(p).expect("readable corpus");
    let entries: Vec<CorpusEntry> = harness::parse_jsonl(&read(&corpus)).expect("corpus parses");
    let metas: Vec<CrsMeta> = harness::parse_jsonl(&read(&meta)).expect("meta parses");
    let outcomes = harness::run_crs_corpus(&rs, &cfg, &entries, &metas);
    assert!(outcomes.len() > 4000, "only {} tests ran", outcomes.len());
    check_against_known(&outcomes, "JSON Lines");
    let lazy_outcomes = harness::run_crs_corpus(&lazy, &cfg, &entries, &metas);
    assert_eq!(lazy_outcomes.len(), outcomes.len());
    check_against_known(&lazy_outcomes, "JSON Lines, lazy load");
}

#[test]
fn crs_blocks_attacks_and_allows_plain_browsing_at_pl1() {
    let Some(crs) = crs_dir() else { return };
    let rs = waf_rules::crs::load_dir(&crs, &waf_rules::WafConfig::default()).expect("CRS loads");
    let req = |uri: &str| waf_rules::HttpRequest {
        method: "GET".into(),
        uri: uri.into(),
        version: "HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), "shop.example".into()),
            (
                "User-Agent".into(),
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0".into(),
            ),
            ("Accept".into(), "text/html".into()),
        ],
        client_ip: "192.0.2.1".parse().ok(),
        ..Default::default()
    };
    let ok = rs.evaluate(&req("/products/42?color=blue"));
    assert_eq!(ok.action, waf_rules::Action::Allow, "{ok:?}");
    assert_eq!(ok.score, 0);
    let bad = rs.evaluate(&req(
        "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--",
    ));
    assert_eq!(bad.action, waf_rules::Action::Block);
    assert!(bad.score >= 5);
    assert!(
        bad.matches.iter().any(|m| m.id == 942100),
        "{:?}",
        bad.matches
    );
    assert!(bad.matches.iter().any(|m| m.id == 949110));
    let detect = waf_rules::WafConfig {
        mode: waf_rules::Mode::Detect,
        ..Default::default()
    };
    let v = rs.evaluate_with(&req("/?q=<script>alert(1)</script>"), &detect);
    assert_eq!(v.action, waf_rules::Action::Allow);
    assert!(v.score >= 5);
}

/// CRS's leading initialisation rules run once per rule set (`RuleSet::tx_prefix_len`); every
/// request then starts from what they left. Verdicts must be those of running every rule.
#[test]
fn running_the_tx_prefix_once_and_remembering_entries_change_no_verdict() {
    let shared = shared_dir();
    let Some(crs) = crs_dir() else { return };
    let mut entries: Vec<CorpusEntry> = Vec::new();
    for (file, take) in [("legit-dev.jsonl", 400), ("gotestwaf.jsonl", usize::MAX)] {
        let text = std::fs::read_to_string(shared.join("waf-corpus").join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let all: Vec<CorpusEntry> = harness::parse_jsonl(&text).expect("corpus parses");
        entries.extend(all.into_iter().take(take));
    }
    for paranoia in [1, 2] {
        let cfg = waf_rules::WafConfig {
            paranoia,
            ..Default::default()
        };
        let rs = waf_rules::crs::load_dir(&crs, &cfg).expect("CRS loads");
        assert!(
            rs.tx_prefix_len() >= 20,
            "the initialisation rules should run once per rule set (prefix {})",
            rs.tx_prefix_len()
        );
        // Twice, the second time in reverse: the entries the first pass saw are remembered
        // with what matches them (the engine's `clean` entries), and the attacks then come
        // among requests whose headers and cookies are remembered.
        let mut blocked = 0;
        for pass in 0..2 {
            let order: Box<dyn Iterator<Item = &CorpusEntry>> = if pass == 0 {
                Box::new(entries.iter())
            } else {
                Box::new(entries.iter().rev())
            };
            for e in order {
                let req = e.to_request();
                let fast = rs.evaluate(&req);
                let full = rs.evaluate_every_rule(&req, &cfg);
                assert_eq!(fast, full, "PL{paranoia} pass {pass}: {:?}", req.uri);
                blocked += usize::from(fast.action == waf_rules::Action::Block);
            }
        }
        // The comparison covered blocked requests as well as allowed ones.
        assert!(blocked > 200, "PL{paranoia}: only {blocked} blocked");
    }
}

/// `operator::compile_rx` builds CRS's patterns without the regex crate's own prefilter and
/// extra automata (a cold-start saving). On every `@rx` pattern of CRS, over values from its
/// regression tests (raw and percent-decoded) and from legit-dev, it must answer as
/// `regex::bytes::Regex` with its defaults: the same matches and the same capture groups.
#[test]
fn tuned_regexes_answer_as_the_regex_crate_on_every_crs_pattern() {
    let Some(crs) = crs_dir() else { return };
    let mut patterns = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(crs.join("rules"))
        .expect("rules dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("rule file");
        for d in waf_rules::seclang::lex(&f.display().to_string(), &text).expect("lexes") {
            if d.name.eq_ignore_ascii_case("SecRule") && d.args.len() >= 2 {
                let op = waf_rules::seclang::parse_operator(&d.args[1].text);
                if op.name == "rx" {
                    patterns.push(op.param);
                }
            }
        }
    }
    patterns.sort();
    patterns.dedup();
    assert!(patterns.len() > 250, "{} patterns", patterns.len());

    let decode = |s: &str| waf_rules::transform::Transform::UrlDecode.apply(s.as_bytes());
    let mut values: Vec<Vec<u8>> = Vec::new();
    for (file, take) in [("crs.jsonl", 400), ("legit-dev.jsonl", 100)] {
        let path = shared_dir().join("waf-corpus").join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let entries: Vec<CorpusEntry> = harness::parse_jsonl(&text).expect("corpus parses");
        // Spread over the file: CRS's tests come grouped by rule family.
        let step = (entries.len() / take).max(1);
        for e in entries.iter().step_by(step).take(take) {
            values.push(e.uri.as_bytes().to_vec());
            values.push(decode(&e.uri));
            if !e.body.is_empty() {
                values.push(decode(&e.body));
            }
            for (_, v) in e.headers.iter().take(4) {
                values.push(v.as_bytes().to_vec());
            }
        }
    }

    let mut matched = 0;
    for p in &patterns {
        let tuned = waf_rules::operator::compile_rx(p).expect("CRS pattern builds");
        let reference = regex::bytes::RegexBuilder::new(&waf_rules::operator::byte_pattern(p))
            .unicode(false)
            .dot_matches_new_line(true)
            .build()
            .or_else(|_| {
                regex::bytes::RegexBuilder::new(p)
                    .dot_matches_new_line(true)
                    .build()
            })
            .expect("CRS pattern builds");
        let mut caps = tuned.create_captures();
        for v in &values {
            let want = reference.captures(v);
            assert_eq!(
                tuned.is_match(v),
                want.is_some(),
                "/{p}/ on {:?}",
                String::from_utf8_lossy(v)
            );
            tuned.captures(v.as_slice(), &mut caps);
            let Some(want) = want else { continue };
            matched += 1;
            let got: Vec<_> = (0..caps.group_len())
                .map(|i| caps.get_group(i).map(|s| s.range()))
                .collect();
            let want: Vec<_> = (0..want.len())
                .map(|i| want.get(i).map(|m| m.range()))
                .collect();
            assert_eq!(got, want, "/{p}/ on {:?}", String::from_utf8_lossy(v));
        }
    }
    // The values do reach the patterns: many match.
    assert!(matched > 500, "only {matched} matches");
}

/// CRS 920450 and, at PL2, 920451 (a TX name made for every header name, then a chain over
/// those names) run in a form of their own. On any header names (restricted ones in any case,
/// repeated, empty, non-ASCII, with the bytes HTTP forbids), CRS must decide as its general
/// evaluation does, the first time a name is seen and once it is remembered.
#[test]
fn crs_header_name_rules_decide_as_the_general_evaluation_on_any_names() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let Some(crs) = crs_dir() else { return };
    let cfg = waf_rules::WafConfig {
        paranoia: 2,
        ..Default::default()
    };
    let rs = waf_rules::crs::load_dir(&crs, &cfg).expect("CRS loads");
    let pool = prop::sample::select(vec![
        "Proxy",
        "PROXY",
        "proxy",
        "Content-Encoding",
        "Lock-Token",
        "If",
        "X-HTTP-Method-Override",
        "Expect",
        "Accept-Charset",
        "Accept",
        "User-Agent",
        "Proxy-Authorization",
        "x-proxy",
    ]);
    let name = prop_oneof![
        pool.prop_map(str::to_string),
        "[ -~]{0,12}",
        "\\PC{0,6}",
        "[a-z/ ]{0,8}",
    ];
    let headers = prop::collection::vec((name, "[ -~]{0,16}"), 0..8);
    let mut runner = TestRunner::new(Config {
        cases: 96,
        ..Config::default()
    });
    let blocked = std::cell::Cell::new(0);
    runner
        .run(&headers, |hs| {
            let mut req = waf_rules::HttpRequest {
                method: "GET".into(),
                uri: "/api/products/2".into(),
                version: "HTTP/1.1".into(),
                headers: vec![("Host".into(), "shop.example".into())],
                ..Default::default()
            };
            req.headers.extend(hs);
            for _ in 0..2 {
                let fast = rs.evaluate(&req);
                let full = rs.evaluate_every_rule(&req, &cfg);
                prop_assert_eq!(&fast, &full, "{:?}", req.headers);
                blocked
                    .set(blocked.get() + usize::from(fast.matches.iter().any(|m| m.id == 920450)));
            }
            Ok(())
        })
        .expect("the two evaluations agree");
    // The restricted names came up (each case is evaluated twice).
    let blocked = blocked.get();
    assert!(
        blocked >= 10,
        "920450 matched in only {blocked} evaluations"
    );
}
