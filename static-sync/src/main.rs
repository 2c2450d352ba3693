//! `static-sync`: the release engineer's tool around `wrangler`. See `static-sync --help` and
//! the library docs for the KV formats.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let json = args.json;
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            if json {
                let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": chain.join(": ") })
                );
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(2)
        }
    }
}
