//! Request evaluation under CRS v4 at paranoia 4 (every rule): no input panics, and the
//! verdict is the same evaluated twice and with the prefilter and the precomputed prefix
//! switched off. CRS comes from `$FLASHEDGE_SHARED/crs-4.28.0` (default `../shared`
//! beside the workspace).
#![no_main]

use std::sync::LazyLock;
use waf_rules::fuzzing::{self, Pair};

static CRS: LazyLock<Pair> = LazyLock::new(|| {
    let shared = std::env::var_os("FLASHEDGE_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared").into());
    let dir = shared.join("crs-4.28.0");
    let (files, data) = waf_rules::crs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("CRS under {}: {e}", dir.display()));
    let config = waf_rules::WafConfig {
        paranoia: 4,
        ..Default::default()
    };
    Pair::load(&files, &data, &config).expect("CRS compiles")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(e) = CRS.check(&fuzzing::request(data)) {
        panic!("{e}");
    }
});
