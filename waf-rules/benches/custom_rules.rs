//! Custom rules: cost of one request against 10, 100 and 1,000 generated rules.
//!
//! `cargo bench -p waf-rules --bench custom_rules -- --warm-up-time 1 --measurement-time 3`
//!
//! Groups: `evaluate/{10,100,1000}` (the shared passes: one hash / Aho-Corasick / RegexSet pass per
//! field), `evaluate_naive/{10,100,1000}` (every rule's expression on its own, the loop a simple
//! engine would run), `compile/{10,100,1000}` (load the TOML) and `parse` (one expression).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use waf_rules::custom::CustomRules;
use waf_rules::ratelimit::RateLimiter;
use waf_rules::HttpRequest;

/// `n` rules of the shapes a shop writes, all with distinct literals.
fn ruleset(n: usize) -> String {
    let mut s = String::from("[lists.office]\nkind = \"ip\"\nitems = [\"192.0.2.0/24\"]\n\n");
    for i in 0..n {
        let (expr, action) = match i % 7 {
            0 => (
                format!(r#"http.request.uri.path eq "/blocked/{i}""#),
                "block",
            ),
            1 => (
                format!(r#"lower(http.user_agent) contains "badbot{i}""#),
                "block",
            ),
            2 => (
                format!(
                    r#"starts_with(http.request.uri.path, "/private{i}/") and http.request.method eq "POST""#
                ),
                "block",
            ),
            3 => (
                format!("ip.src in {{10.{}.{}.0/24}}", i / 256, i % 256),
                "block",
            ),
            4 => (
                format!(r#"http.request.uri.args["q"][0] eq "attack{i}""#),
                "log",
            ),
            5 => (
                format!(r#"http.user_agent matches "evil{i}[0-9]+""#),
                "block",
            ),
            _ => (
                format!(r#"http.request.uri.path eq "/admin{i}" and not ip.src in $office"#),
                "block",
            ),
        };
        s.push_str(&format!(
            "[[rule]]\nid = \"r{i}\"\nexpression = '{expr}'\naction = \"{action}\"\n\n"
        ));
    }
    s
}

fn request() -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        uri: "/products/123?q=running+shoes&page=2".into(),
        version: "HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), "shop.example.com".into()),
            (
                "User-Agent".into(),
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36".into(),
            ),
            ("Accept".into(), "text/html,application/xhtml+xml".into()),
            ("Cookie".into(), "session=3f2a9c; lang=en".into()),
        ],
        body: Vec::new(),
        client_ip: "203.0.113.7".parse().ok(),
        country: Some("FR".into()),
    }
}

fn bench(c: &mut Criterion) {
    let req = request();
    let sizes = [10usize, 100, 1000];
    let sets: Vec<(usize, String, CustomRules)> = sizes
        .iter()
        .map(|&n| {
            let text = ruleset(n);
            let rules = CustomRules::from_toml("bench.toml", &text).expect("generated rules load");
            (n, text, rules)
        })
        .collect();

    let mut g = c.benchmark_group("evaluate");
    for (n, _, rules) in &sets {
        let limiter = RateLimiter::new(10_000);
        g.bench_with_input(BenchmarkId::from_parameter(n), rules, |b, rules| {
            b.iter(|| rules.evaluate(black_box(&req), 1_790_000_000_000, &limiter))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("evaluate_naive");
    for (n, _, rules) in &sets {
        g.bench_with_input(BenchmarkId::from_parameter(n), rules, |b, rules| {
            b.iter(|| rules.matching_rules_naive(black_box(&req)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    for (n, text, _) in &sets {
        g.bench_with_input(BenchmarkId::from_parameter(n), text, |b, text| {
            b.iter(|| CustomRules::from_toml("bench.toml", black_box(text)))
        });
    }
    g.finish();

    c.bench_function("parse", |b| {
        let src = r#"starts_with(lower(http.request.uri.path), "/admin") and not ip.src in {192.0.2.0/24 2001:db8::/32} or any(http.request.headers["x-forwarded-for"][*] contains "127.0.0.1")"#;
        b.iter(|| waf_rules::expr::parse(black_box(src)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
