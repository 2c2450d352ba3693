//! Criterion benchmarks for the CRS engine.
//!
//! `cargo bench -p waf-rules --bench crs` (needs the shared folder: `$FLASHEDGE_SHARED` or
//! `../shared`). Groups: `load` (parse and compile full CRS), `evaluate/benign-pl1`,
//! `evaluate/benign-pl4` (one request per iteration, cycling through the first 200 requests of
//! `legit-dev.jsonl`), `evaluate/attack-pl1` (a SQL injection in a query argument). The
//! cross-request memo of operator misses is off: cycling through 200 requests would make every
//! value a repeat, so these measure the engine's whole work per request (`crs_latency` reports
//! the memo on a stream of real requests).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::path::PathBuf;
use waf_rules::harness::{parse_jsonl, CorpusEntry};
use waf_rules::{HttpRequest, Mode, RuleSet, WafConfig};

fn shared() -> PathBuf {
    std::env::var_os("FLASHEDGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

fn config(paranoia: u8) -> WafConfig {
    WafConfig {
        mode: Mode::Block,
        paranoia,
        ..WafConfig::default()
    }
}

fn benign() -> Vec<HttpRequest> {
    let text = std::fs::read_to_string(shared().join("waf-corpus/legit-dev.jsonl"))
        .expect("legit-dev.jsonl (set FLASHEDGE_SHARED)");
    let entries: Vec<CorpusEntry> = parse_jsonl(&text).expect("corpus parses");
    entries
        .iter()
        .take(200)
        .map(CorpusEntry::to_request)
        .collect()
}

fn bench(c: &mut Criterion) {
    let dir = shared().join("crs-4.28.0");
    if !dir.join("rules").is_dir() {
        // Benchmarks measure; without the data there is nothing to measure (tests fail loudly
        // on a missing shared folder, benches only say so).
        eprintln!(
            "no CRS at {} (set FLASHEDGE_SHARED): nothing measured",
            dir.display()
        );
        return;
    }
    let (files, data) = waf_rules::crs::read_dir(&dir).expect("CRS directory");
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.bench_function("full-crs", |b| {
        b.iter(|| RuleSet::from_sources(&files, &data, &config(1)).expect("loads"))
    });
    g.finish();

    let reqs = benign();
    let mut g = c.benchmark_group("evaluate");
    for pl in [1u8, 4] {
        let mut rs = RuleSet::from_sources(&files, &data, &config(pl)).expect("loads");
        rs.set_memo(false);
        let mut i = 0;
        g.bench_function(BenchmarkId::new("benign", format!("pl{pl}")), |b| {
            b.iter(|| {
                i = (i + 1) % reqs.len();
                rs.evaluate(&reqs[i])
            })
        });
    }
    let mut rs = RuleSet::from_sources(&files, &data, &config(1)).expect("loads");
    rs.set_memo(false);
    let attack = HttpRequest {
        method: "GET".into(),
        uri: "/search?q=1%27%20UNION%20SELECT%20password%20FROM%20users--".into(),
        version: "HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), "shop.example".into()),
            ("User-Agent".into(), "Mozilla/5.0".into()),
            ("Accept".into(), "*/*".into()),
        ],
        ..Default::default()
    };
    g.bench_function(BenchmarkId::new("attack", "pl1"), |b| {
        b.iter(|| rs.evaluate(&attack))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
