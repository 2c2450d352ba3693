//! Criterion benchmarks for the CRS engine.
//!
//! `cargo bench -p waf-rules --bench crs` (needs the shared folder: `$FLASHEDGE_SHARED` or
//! `../shared`). Groups: `load` (parse and compile full CRS), `evaluate/benign-pl1`,
//! `evaluate/benign-pl4` (one request per iteration, cycling through the first 200 requests of
//! `legit-dev.jsonl`), `evaluate/attack-pl1` (a SQL injection in a query argument). The
//! cross-request memo of operator misses and remembered entries are off there: cycling through
//! 200 requests would make every value a repeat, so these measure the engine's whole work per
//! request. `evaluate/benign-stream/pl1` has them on, as in production, and cycles through all
//! 9,962 requests of `legit-dev.jsonl` (a value comes back only as often as the corpus repeats
//! it; the stores hold what their caps allow): the mean per request of a thread serving that
//! traffic (`crs_latency` reports the distribution). `--features mimalloc` measures with the
//! allocator origin-proxy runs.
// With `--features mimalloc`: the allocator origin-proxy runs, which the engine then uses.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// The first `n` requests of `legit-dev.jsonl`.
fn benign(n: usize) -> Vec<HttpRequest> {
    let text = std::fs::read_to_string(shared().join("waf-corpus/legit-dev.jsonl"))
        .expect("legit-dev.jsonl (set FLASHEDGE_SHARED)");
    let entries: Vec<CorpusEntry> = parse_jsonl(&text).expect("corpus parses");
    entries
        .iter()
        .take(n)
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

    let reqs = benign(200);
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
    // The production setting on the whole corpus, in order, over and over.
    let stream = benign(usize::MAX);
    let rs = RuleSet::from_sources(&files, &data, &config(1)).expect("loads");
    let mut i = 0;
    g.bench_function(BenchmarkId::new("benign-stream", "pl1"), |b| {
        b.iter(|| {
            i = (i + 1) % stream.len();
            rs.evaluate(&stream[i])
        })
    });
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
