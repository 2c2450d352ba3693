//! `cargo run -p static-sync --example gen_site -- DIR [N]`
//!
//! Writes the synthetic N-file storefront (default 10,000) used by the benchmark, to time the
//! real commands: `static-sync build DIR --out OUT`, `static-sync plan --manifest OUT/manifest.json`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: gen_site DIR [N]");
        return ExitCode::from(2);
    };
    let n = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    for (path, bytes) in static_sync::site::generate_site(n) {
        let p = std::path::Path::new(&dir).join(path);
        if let Err(e) = p
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&p, bytes))
        {
            eprintln!("error: cannot write {}: {e}", p.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
