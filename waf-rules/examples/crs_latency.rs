//! Per-request latency of the CRS engine over a corpus mix: median, p90, p99 and mean.
//!
//! `cargo run --release -p waf-rules --example crs_latency -- [PL] [N]` (needs the shared
//! folder: `$FLASHEDGE_SHARED` or `../shared`). Each of the first N requests of
//! `legit-dev.jsonl` (default 200) is evaluated repeatedly; its time is the median of its
//! runs, and the figures are taken over those per-request times. Criterion's
//! `evaluate/benign-*` reports the mean over the same mix; this reports the distribution.
//! It also times the two requests `bench/proxy` sends (a GET with a query string, and a POST
//! of the 2 KiB checkout document in `checkout.json`), so engine time and proxy throughput
//! can be read side by side. With `--features mimalloc` it measures with the allocator
//! origin-proxy runs (glibc's otherwise): 6–8 % less at the stream's median (2026-12-07).
//!
//! The engine remembers operator misses, and the request entries no rule matches, across
//! requests (`waf_rules` engine, `memo` and `eval::clean`), and repeating one request makes
//! every later run a hit. So the figures come in two kinds: with
//! the memo off (every value as if new: the engine's whole work per request), and, for
//! legit-dev, as a stream: each request once, in the corpus's order, the memo holding what the
//! requests before it left (real traffic repeats its header and cookie values).
// With `--features mimalloc`: the allocator origin-proxy runs, which the engine then uses.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Instant;
use waf_rules::harness::{parse_jsonl, CorpusEntry};
use waf_rules::{HttpRequest, Mode, RuleSet, WafConfig};

fn shared() -> PathBuf {
    std::env::var_os("FLASHEDGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The median time of `runs` evaluations of `r`, in µs.
fn median_us(rs: &RuleSet, r: &HttpRequest, runs: usize) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(rs.evaluate(std::hint::black_box(r)));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Prints the distribution of per-request times `per` (µs) under `label`.
fn report(label: &str, mut per: Vec<f64>) {
    let mean = per.iter().sum::<f64>() / per.len() as f64;
    per.sort_by(f64::total_cmp);
    println!(
        "{label} (µs per request): p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}",
        pct(&per, 0.5),
        pct(&per, 0.9),
        pct(&per, 0.99),
        per[per.len() - 1],
        mean
    );
}

/// `n` evaluations of `r`, in a function of its own so that a profiler can count just these.
#[inline(never)]
fn count_loop(rs: &RuleSet, r: &HttpRequest, n: u32) {
    for _ in 0..n {
        std::hint::black_box(rs.evaluate(std::hint::black_box(r)));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let pl: u8 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let dir = shared().join("crs-4.28.0");
    let (files, data) = match waf_rules::crs::read_dir(&dir) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("crs_latency: no CRS at {}: {e}", dir.display());
            std::process::exit(2);
        }
    };
    let cfg = WafConfig {
        mode: Mode::Block,
        paranoia: pl,
        ..WafConfig::default()
    };
    let t = Instant::now();
    let mut rs = RuleSet::from_sources(&files, &data, &cfg).expect("CRS loads");
    let eager_ms = t.elapsed().as_secs_f64() * 1e3;
    if std::env::var("CRS_LATENCY_LOOP").as_deref() == Ok("load") {
        // For profilers: the edge worker's load (lazy, hinted), over and over for five seconds.
        let t = Instant::now();
        while t.elapsed().as_secs() < 5 {
            std::hint::black_box(
                RuleSet::from_sources_hinted(
                    &files,
                    &data,
                    &cfg,
                    waf_rules::operator::Compile::Lazy,
                    Some(rs.rx_hints()),
                )
                .expect("CRS loads lazily"),
            );
        }
        return;
    }
    let t = Instant::now();
    let lazy = RuleSet::from_sources_hinted(
        &files,
        &data,
        &cfg,
        waf_rules::operator::Compile::Lazy,
        Some(rs.rx_hints()),
    )
    .expect("CRS loads lazily");
    let lazy_ms = t.elapsed().as_secs_f64() * 1e3;
    // The lazy load's first requests build the matchers they reach.
    let first_get = |r: &HttpRequest| {
        let t = Instant::now();
        lazy.evaluate(r);
        t.elapsed().as_secs_f64() * 1e3
    };
    let probe = HttpRequest {
        method: "GET".into(),
        uri: "/api/products/2?ref=newsletter&utm_source=mail".into(),
        version: "HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), "shop.example".into()),
            (
                "User-Agent".into(),
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/132.0".into(),
            ),
            ("Accept".into(), "text/html".into()),
        ],
        ..Default::default()
    };
    let (first_ms, second_ms) = (first_get(&probe), first_get(&probe));
    drop(lazy);
    println!(
        "PL{pl} load: {eager_ms:.0} ms eager (every matcher built), {lazy_ms:.0} ms lazy with \
         build-time @rx hints (the edge worker's load); the lazy set's first benign GET \
         {first_ms:.1} ms, its second {second_ms:.2} ms"
    );
    let text = std::fs::read_to_string(shared().join("waf-corpus/legit-dev.jsonl"))
        .expect("legit-dev.jsonl");
    let entries: Vec<CorpusEntry> = parse_jsonl(&text).expect("corpus parses");
    let reqs: Vec<HttpRequest> = entries
        .iter()
        .take(n)
        .map(CorpusEntry::to_request)
        .collect();
    let [bare_get, bench_get, bench_post] = waf_rules::harness::bench_requests();
    // Memo off unless asked for: see the top of this file.
    let memo = std::env::var("CRS_LATENCY_MEMO").as_deref() == Ok("1");
    rs.set_memo(memo);
    let mode = std::env::var("CRS_LATENCY_LOOP");
    if matches!(
        mode.as_deref(),
        Ok("legit") | Ok("stream") | Ok("novel") | Ok("warm")
    ) {
        // For profilers: each of the N legit-dev requests once, in `count_loop` (a count of
        // instructions over it, divided by N, is the mean per request).
        // Once each outside the count, memo off: the first evaluation runs the rule set's
        // prefix, and the regexes' lazy automata fill in (a long-running process has them
        // warm). `stream` then counts with the memo on, starting empty; `novel` with the memo
        // on and empty for each request. `warm` turns the memo on before those first passes
        // and counts the next: the steady state of a stream whose values repeat.
        let warm = mode.as_deref() == Ok("warm");
        rs.set_memo(warm);
        // (Twice when warm: an entry is checked for what matches it the second time it is
        // seen, and remembered from then on.)
        for _ in 0..1 + usize::from(warm) {
            for r in &reqs {
                std::hint::black_box(rs.evaluate(r));
            }
        }
        if !warm {
            rs.set_memo(mode.as_deref() == Ok("stream"));
        }
        // `CRS_LATENCY_THRASH=MiB`: before each request, write over that much memory outside
        // the count, as a proxy's or worker's own work between two evaluations does, so that
        // each evaluation starts with cold CPU caches (for `valgrind --cache-sim=yes`).
        let mut thrash = vec![
            0u8;
            std::env::var("CRS_LATENCY_THRASH")
                .ok()
                .and_then(|m| m.parse::<usize>().ok())
                .unwrap_or(0)
                << 20
        ];
        for r in &reqs {
            for (i, b) in thrash.iter_mut().enumerate().step_by(64) {
                *b = b.wrapping_add(i as u8);
            }
            std::hint::black_box(&thrash);
            // `novel`: the memo on but empty for every request (a new rule set id each time),
            // as when no value repeats: its lookups and notes with nothing to gain.
            if mode.as_deref() == Ok("novel") {
                rs.set_memo(true);
            }
            count_loop(&rs, r, 1);
        }
        return;
    }
    if let Ok(which) = std::env::var("CRS_LATENCY_LOOP") {
        // For profilers: evaluate one request (`get`, `post` or `bare`) for five seconds (`load`: load CRS lazily, over and over), then stop.
        let r = match which.as_str() {
            "post" => &bench_post,
            "bare" => &bare_get,
            _ => &bench_get,
        };
        if let Ok(n) = std::env::var("CRS_LATENCY_COUNT") {
            // A fixed number of evaluations (for allocation profilers), after a first one.
            std::hint::black_box(rs.evaluate(r));
            count_loop(&rs, r, n.parse().unwrap_or(1000));
            return;
        }
        let t = Instant::now();
        while t.elapsed().as_secs() < 5 {
            std::hint::black_box(rs.evaluate(std::hint::black_box(r)));
        }
        return;
    }
    for (name, r) in [
        ("bare GET / (fixed cost)", &bare_get),
        ("bench/proxy GET", &bench_get),
        ("bench/proxy POST", &bench_post),
    ] {
        rs.set_memo(false);
        let v = rs.evaluate(r);
        let cold = median_us(&rs, r, 201);
        rs.set_memo(true);
        let repeated = median_us(&rs, r, 201);
        println!(
            "PL{pl} {name}: median {cold:.1} µs, {repeated:.1} µs repeated with the memo (verdict {:?}, score {})",
            v.action,
            v.score
        );
    }
    rs.set_memo(false);
    // Warm up.
    for r in &reqs {
        std::hint::black_box(rs.evaluate(r));
    }
    let per: Vec<f64> = reqs.iter().map(|r| median_us(&rs, r, 21)).collect();
    report(
        &format!("PL{pl} over {} legit-dev requests, memo off", per.len()),
        per,
    );
    // The stream: each request once, in order (memo on: starting empty); five passes, each
    // request's figure the median of its five single runs. With the memo off too, measured the
    // same way, for comparison (single cold runs cost more than the repeated runs above).
    for memo in [false, true] {
        let mut runs: Vec<Vec<f64>> = vec![Vec::new(); reqs.len()];
        for _ in 0..5 {
            rs.set_memo(memo);
            for (i, r) in reqs.iter().enumerate() {
                let t = Instant::now();
                std::hint::black_box(rs.evaluate(std::hint::black_box(r)));
                runs[i].push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let per: Vec<f64> = runs
            .iter_mut()
            .map(|t| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            })
            .collect();
        let memo = if memo { "on" } else { "off" };
        report(
            &format!(
                "PL{pl} over {} legit-dev requests as a stream, memo {memo}",
                per.len()
            ),
            per,
        );
    }
}
