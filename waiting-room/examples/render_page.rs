//! Prints the waiting page (or its JSON with `--json`) for a shopper in line, using the example
//! room file.
//!
//! `cargo run -p waiting-room --example render_page > /tmp/waiting.html`

use std::process::ExitCode;

use waiting_room::page::{render_waiting_page, WaitingStatus};
use waiting_room::{PollOutcome, RoomConfig};

fn main() -> ExitCode {
    let config =
        match RoomConfig::from_toml("examples/flash-sale.toml", include_str!("flash-sale.toml")) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
    let status = WaitingStatus::new(
        &config,
        &PollOutcome::Waiting {
            position: 1_284,
            estimated_wait_secs: 13 * 60,
            progress_permille: 420,
        },
    );
    if std::env::args().any(|a| a == "--json") {
        println!("{}", status.to_json());
    } else {
        println!("{}", render_waiting_page(&config, &status));
    }
    ExitCode::SUCCESS
}
