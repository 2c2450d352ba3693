//! `cargo bench -p static-sync --bench plan_build`
//!
//! `plan` and `build` on a generated 10,000-file storefront (`site::generate_site`), beside a
//! naive baseline: hashing every file once, the least any build or plan from files must do.

use std::collections::HashSet;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use static_sync::build::{build_site, write_output};
use static_sync::plan::diff;
use static_sync::push::{plan, push, Against, PushOptions};
use static_sync::site::{generate_site, sha256_hex};
use static_sync::store::DirStore;

fn benches(c: &mut Criterion) {
    let n = 10_000;
    let site = generate_site(n);
    let v1 = build_site(&site).expect("build");
    // Version 2: every 10th image changed (and so the stylesheets and pages that name them).
    let mut site2 = site.clone();
    for (i, (path, bytes)) in site2.iter_mut().enumerate() {
        if path.ends_with(".png") && i % 10 == 0 {
            bytes.push(1);
        }
    }
    let v2 = build_site(&site2).expect("build");
    let present: HashSet<String> = v1
        .manifest
        .files
        .values()
        .map(|f| f.sha256.clone())
        .collect();

    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    g.bench_function(BenchmarkId::new("build_site", n), |b| {
        b.iter(|| build_site(&site).expect("build"))
    });
    g.bench_function(BenchmarkId::new("baseline_hash_all", n), |b| {
        b.iter(|| site.values().map(|v| sha256_hex(v)).collect::<Vec<_>>())
    });
    g.finish();

    let mut g = c.benchmark_group("plan");
    g.bench_function(BenchmarkId::new("diff", n), |b| {
        b.iter(|| diff(&v2.manifest, Some(&v1.manifest), &present, false))
    });
    // The `plan` command's whole path against a directory store holding version 1: read
    // `release`, the live manifest and the blob listing, then diff.
    let tmp = tempfile::tempdir().expect("tempdir");
    let out1 = tmp.path().join("out1");
    write_output(&out1, &v1).expect("write");
    let store = DirStore::new(tmp.path().join("kv"));
    push(
        &store,
        &out1,
        &v1.manifest,
        &PushOptions::default(),
        &mut |_| {},
    )
    .expect("push");
    static_sync::push::change_release(&store, 0, |r| Ok(r.activate(&v1.manifest.version, 0)))
        .expect("activate");
    g.sample_size(20);
    g.bench_function(BenchmarkId::new("against_store", n), |b| {
        b.iter(|| plan(&store, &v2.manifest, &Against::Live, 1).expect("plan"))
    });
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
