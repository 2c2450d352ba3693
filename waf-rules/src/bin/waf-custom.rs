//! `waf-custom`: check and test custom-rules files.
//!
//! ```text
//! waf-custom check FILE...   validate the files as one ruleset (exit 1 with file:line:column on error)
//! waf-custom test FILE...    run every in-file test case; ends with `N passed, N failed`
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use waf_rules::custom::cli::{check_command, test_command};

const USAGE: &str = "usage: waf-custom <check|test> FILE...";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let cmd = args.next().and_then(|a| a.into_string().ok());
    let paths: Vec<PathBuf> = args.map(PathBuf::from).collect();
    let mut out = std::io::stdout();
    let result = match cmd.as_deref() {
        Some("check") if !paths.is_empty() => check_command(&paths, &mut out),
        Some("test") if !paths.is_empty() => test_command(&paths, &mut out),
        Some("-h") | Some("--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
