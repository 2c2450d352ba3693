//! `origin-proxy --config FILE [--check]`: runs the origin proxy, or only validates its config.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

// mimalloc instead of glibc malloc: pingora allocates per request (headers, buffers, tasks) and
// glibc's malloc/free showed up as ~12% of the proxy's CPU time under load (bench/proxy).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Pingora origin proxy: verifies the edge signature and balances the backends")]
struct Args {
    /// The TOML config file.
    #[arg(long, short)]
    config: PathBuf,
    /// Validate the config and exit: 0 if it is good, 2 with the reason if not.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    // Before anything else: from here on SIGHUP never terminates the process (its default
    // action), and one that arrives while the config loads triggers a reload once the reloader
    // runs (see origin_proxy::reload).
    let hangups = origin_proxy::reload::Hangups::catch();
    let args = Args::parse();
    let config = match origin_proxy::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("origin-proxy: invalid config: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!(
            "{}: ok ({} pools, {} routes)",
            args.config.display(),
            config.pools.len(),
            config.routes.len()
        );
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .fmt_fields(PlainFields)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    tracing::info!(listen = %config.listen, admin = ?config.admin_listen, "origin-proxy starting");
    let hangups = hangups
        .map_err(|e| tracing::error!(error = %e, "cannot catch SIGHUP at start-up"))
        .ok();
    origin_proxy::build_server(config, Some(args.config), hangups).run_forever()
}

/// Fields as `name=value` (an event's message bare), written straight. The default field
/// formatter styles each name for a terminal even with colours off, about 700 instructions a
/// field. The `log.*` fields of events from the `log` crate are left out, as the default
/// formatter leaves them out.
struct PlainFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for PlainFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = PlainVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'a, 'w> {
    writer: &'a mut tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl tracing::field::Visit for PlainVisitor<'_, '_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if name == "message" {
            write!(self.writer, "{sep}{value:?}")
        } else {
            write!(self.writer, "{sep}{name}={value:?}")
        };
    }
}
