//! With the `bench` feature: embeds a CRS directory, the analyses of its `@rx` patterns (as
//! the edge worker's build script does, from an eager load here) and the first requests of
//! `legit-dev.jsonl` for `bench.mjs` (`FLASHEDGE_SHARED`, default `../../../shared`). Without
//! it, nothing: the size probe stays the engine alone.
#[cfg(feature = "bench")]
use std::fmt::Write as _;
#[cfg(feature = "bench")]
use std::path::PathBuf;

/// legit-dev requests embedded: `bench.mjs` repeats the first 200 (as `crs_latency` does
/// natively) and sends all of them once as a stream.
#[cfg(feature = "bench")]
const LEGIT_REQUESTS: usize = 1000;

fn main() {
    println!("cargo:rerun-if-env-changed=FLASHEDGE_SHARED");
    #[cfg(feature = "bench")]
    embed();
}

#[cfg(feature = "bench")]
fn embed() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let shared = std::env::var_os("FLASHEDGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("../../../shared"));
    let crs = shared.join("crs-4.28.0");
    let mut conf = Vec::new();
    let mut data = Vec::new();
    for setup in ["crs-setup.conf", "crs-setup.conf.example"] {
        if crs.join(setup).is_file() {
            conf.push(crs.join(setup));
            break;
        }
    }
    let mut rules: Vec<PathBuf> = std::fs::read_dir(crs.join("rules"))
        .unwrap_or_else(|e| panic!("no CRS rules at {}: {e}", crs.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    rules.sort();
    for p in rules {
        match p.extension().and_then(|e| e.to_str()) {
            Some("conf") => conf.push(p),
            Some("data") => data.push(p),
            _ => {}
        }
    }
    let list = |ps: &[PathBuf]| {
        let mut s = String::from("&[");
        for p in ps {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = write!(
                s,
                "({name:?}, include_str!({:?})),",
                p.display().to_string()
            );
            println!("cargo:rerun-if-changed={}", p.display());
        }
        s.push(']');
        s
    };
    let legit = shared.join("waf-corpus/legit-dev.jsonl");
    let text = std::fs::read_to_string(&legit)
        .unwrap_or_else(|e| panic!("reading {}: {e}", legit.display()));
    let first: String = text
        .lines()
        .take(LEGIT_REQUESTS)
        .map(|l| format!("{l}\n"))
        .collect();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("legit.jsonl"), first).expect("writes OUT_DIR");
    let hints = waf_rules::crs::rx_hint_rows(&conf, &data)
        .unwrap_or_else(|e| panic!("the CRS at {} does not load: {e}", crs.display()));
    std::fs::write(out.join("hints.rs"), format!("&[\n{hints}]")).expect("writes OUT_DIR");
    let code = format!(
        "pub static CONF: &[(&str, &str)] = {};\npub static DATA: &[(&str, &str)] = {};\n\
         pub static LEGIT: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/legit.jsonl\"));\n\
         pub static RX_HINTS: &[waf_rules::prefilter::RxHintRow] = \
         include!(concat!(env!(\"OUT_DIR\"), \"/hints.rs\"));\n",
        list(&conf),
        list(&data)
    );
    std::fs::write(out.join("embedded.rs"), code).expect("writes OUT_DIR");
}
