//! `waf-rules`: check rule files, run the CRS regression tests, score corpora, explain verdicts.
//!
//! ```text
//! waf-rules check PATH...
//! waf-rules ftw DIR                     # go-ftw YAML tests, in-process
//! waf-rules corpus-ftw CORPUS META      # the same tests as JSON Lines (waf-corpus/crs*.jsonl)
//! waf-rules eval --crs DIR --paranoia N CORPUS.jsonl...
//! waf-rules explain --crs DIR REQUEST.json
//! ```

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
