//! Command-line surface: parse, call the library, print (text or `--json`), pick the exit code.
//! Exit codes: 0 done, 1 problems found (`check` errors, `verify` mismatches), 2 failure.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use static_sync::build::{build_site, write_output};
use static_sync::check::{check_dir, has_errors, Problem, Severity};
use static_sync::manifest::{Manifest, Release};
use static_sync::plan::Plan;
use static_sync::push::{self, Against, PushOptions};
use static_sync::store::{read_manifest, read_release, DirStore, Store, Target, WranglerStore};
use static_sync::verify::{http_fetcher, verify};

/// Pre-push flash-sale pages to the edge, schedule their go-live, verify, roll back.
#[derive(Debug, Parser)]
#[command(name = "static-sync", version, about)]
pub struct Args {
    /// Print one JSON document on stdout instead of text (for CI).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a site folder: HTML parses, local links resolve, limits, no secrets or junk.
    Check {
        /// The site folder.
        dir: PathBuf,
    },
    /// Fingerprint assets, rewrite references, write `_headers` and `manifest.json` to OUT.
    Build {
        /// The site folder.
        dir: PathBuf,
        /// Output folder (what `wrangler deploy` uploads as assets, and what `push` reads).
        #[arg(long)]
        out: PathBuf,
        /// Build even if `check` finds errors.
        #[arg(long)]
        no_check: bool,
    },
    /// Show what pushing and activating a build would change at the edge.
    Plan {
        /// The build's manifest.
        #[arg(long, default_value = "dist/manifest.json")]
        manifest: PathBuf,
        /// Compare with: `current` (live now), `next` (scheduled), `none`, or a version id.
        #[arg(long, default_value = "current")]
        against: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Upload a build's missing files, then its manifest. Resumable; the live version is not
    /// changed unless --activate.
    Push {
        /// The build folder (with manifest.json).
        out: PathBuf,
        /// Make the pushed version live right after the upload (one pointer write).
        #[arg(long)]
        activate: bool,
        /// Ignore the local journal and trust only the store's key listing.
        #[arg(long)]
        no_journal: bool,
        /// Keys per upload batch.
        #[arg(long, default_value_t = 1000)]
        batch_keys: usize,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Schedule a pushed version to go live at a time (no deploy then: the worker switches).
    Schedule {
        /// The version id (from `build`/`push`).
        #[arg(long, required_unless_present = "cancel")]
        version: Option<String>,
        /// RFC 3339 (`2026-11-27T00:00:00+01:00`), `+30s`/`+15m`/`+2h`/`+1d`, or `@<unix ms>`.
        #[arg(long, required_unless_present = "cancel")]
        at: Option<String>,
        /// Cancel the pending schedule instead.
        #[arg(long, conflicts_with_all = ["version", "at"])]
        cancel: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Make a pushed version live now.
    Activate {
        /// The version id.
        #[arg(long)]
        version: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Back to the previous version, pending schedule cleared, in one write.
    Rollback {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show the release pointer: live, previous, scheduled.
    Status {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Fetch every file of the live version from the edge and compare SHA-256 with the manifest.
    Verify {
        /// Where the edge answers (`http://127.0.0.1:8787` for `wrangler dev`).
        #[arg(long)]
        base_url: String,
        /// Verify this manifest instead of the live version's (e.g. a Static Assets baseline).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Only HTML pages.
        #[arg(long)]
        pages_only: bool,
        /// Requests in flight.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Per-request timeout in seconds.
        #[arg(long, default_value_t = 20)]
        timeout: u64,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Which KV namespace to talk to, and how.
#[derive(Debug, clap::Args)]
struct StoreArgs {
    /// The wrangler program [default: ./node_modules/.bin/wrangler if present, else `wrangler`].
    #[arg(long, env = "STATIC_SYNC_WRANGLER")]
    wrangler: Option<PathBuf>,
    /// Wrangler config declaring the KV binding [default: edge-worker/wrangler.toml if present].
    #[arg(long, short = 'c', env = "STATIC_SYNC_WRANGLER_CONFIG")]
    config: Option<PathBuf>,
    /// Wrangler environment (`-e`).
    #[arg(long = "env", short = 'e')]
    wrangler_env: Option<String>,
    /// KV binding name.
    #[arg(long, default_value = "SITE")]
    binding: String,
    /// KV namespace id (instead of the binding).
    #[arg(long)]
    namespace_id: Option<String>,
    /// The local KV of `wrangler dev` (default unless CLOUDFLARE_API_TOKEN is set).
    #[arg(long, conflicts_with = "remote")]
    local: bool,
    /// The real KV namespace on Cloudflare (default when CLOUDFLARE_API_TOKEN is set).
    #[arg(long)]
    remote: bool,
    /// Local state directory, as given to `wrangler dev --persist-to`.
    #[arg(long, env = "STATIC_SYNC_PERSIST_TO")]
    persist_to: Option<PathBuf>,
    /// Seconds one wrangler call may take before it is killed.
    #[arg(long, default_value_t = 600)]
    wrangler_timeout: u64,
    /// Use a plain directory as the store instead of wrangler (dry runs, tests).
    #[arg(long, env = "STATIC_SYNC_STORE_DIR", conflicts_with_all = ["local", "remote"])]
    store_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn open(&self) -> Box<dyn Store> {
        if let Some(dir) = &self.store_dir {
            return Box::new(DirStore::new(dir));
        }
        let program = self.wrangler.clone().unwrap_or_else(|| {
            let local = Path::new("node_modules/.bin/wrangler");
            if local.exists() {
                local.to_owned()
            } else {
                PathBuf::from("wrangler")
            }
        });
        let config = self.config.clone().or_else(|| {
            let p = Path::new("edge-worker/wrangler.toml");
            p.exists().then(|| p.to_owned())
        });
        let remote =
            self.remote || (!self.local && std::env::var_os("CLOUDFLARE_API_TOKEN").is_some());
        let target = if remote {
            Target::Remote
        } else {
            Target::Local {
                persist_to: self.persist_to.clone(),
            }
        };
        Box::new(WranglerStore {
            program,
            config,
            env: self.wrangler_env.clone(),
            binding: self.binding.clone(),
            namespace_id: self.namespace_id.clone(),
            target,
            timeout: Duration::from_secs(self.wrangler_timeout.max(1)),
        })
    }
}

fn now_ms() -> u64 {
    if let Some(ms) = std::env::var("STATIC_SYNC_NOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return ms;
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Parses `--at`: RFC 3339, `+<n><ms|s|m|h|d>`, or `@<unix ms>`.
fn parse_at(s: &str, now: u64) -> Result<u64> {
    let s = s.trim();
    if let Some(ms) = s.strip_prefix('@') {
        return ms
            .parse()
            .with_context(|| format!("`{s}`: expected @<unix milliseconds>"));
    }
    if let Some(rel) = s.strip_prefix('+') {
        let split = rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len());
        let (num, unit) = rel.split_at(split);
        let n: u64 = num
            .parse()
            .with_context(|| format!("`{s}`: expected +<number><unit>"))?;
        let mult = match unit {
            "ms" => 1,
            "s" | "" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => bail!("`{s}`: unit must be ms, s, m, h or d"),
        };
        return Ok(now.saturating_add(n.saturating_mul(mult)));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!(
                "`{s}` is not an RFC 3339 time (e.g. 2026-11-27T00:00:00Z), +30s, or @<unix ms>"
            )
        })?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).context("time before 1970")
}

fn fmt_ms(ms: u64) -> String {
    i128::from(ms)
        .checked_mul(1_000_000)
        .and_then(|n| time::OffsetDateTime::from_unix_timestamp_nanos(n).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{ms}"))
}

fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

fn bar(total: u64, msg: &str, json: bool, as_bytes: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    let template = if as_bytes {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
    } else {
        "{msg} [{bar:30}] {pos}/{len} eta {eta}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg.to_owned());
    pb
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn print_problems(problems: &[Problem]) {
    for p in problems {
        println!("{p}");
    }
}

fn describe_release(r: &Release, now: u64) -> String {
    let mut s = format!(
        "live now:  {}\ncurrent:   {}\nprevious:  {}\n",
        r.live_version(now)
            .unwrap_or("(none: Static Assets baseline)"),
        r.current.as_deref().unwrap_or("-"),
        r.previous.as_deref().unwrap_or("-"),
    );
    match &r.next {
        Some(n) => {
            let when = if n.at > now {
                format!("in {}s", (n.at - now).div_ceil(1000))
            } else {
                "due: live now".to_owned()
            };
            s.push_str(&format!(
                "next:      {} at {} ({when})\n",
                n.version,
                fmt_ms(n.at)
            ));
        }
        None => s.push_str("next:      -\n"),
    }
    s
}

fn print_plan(plan: &Plan) {
    println!(
        "version {} against {}",
        plan.version,
        plan.against.as_deref().unwrap_or("nothing live")
    );
    for c in &plan.added {
        println!("  + {} ({})", c.path, bytes(c.size));
    }
    for c in &plan.changed {
        println!("  ~ {} ({})", c.path, bytes(c.size));
    }
    for c in &plan.removed {
        println!("  - {}", c.path);
    }
    println!(
        "{} added, {} changed, {} removed, {} unchanged; upload {} blobs, {}{}",
        plan.added.len(),
        plan.changed.len(),
        plan.removed.len(),
        plan.unchanged,
        plan.uploads.len(),
        bytes(plan.upload_bytes),
        if plan.manifest_present {
            " (manifest already pushed)"
        } else {
            ""
        }
    );
}

/// Runs one command.
pub fn run(args: Args) -> Result<ExitCode> {
    let json = args.json;
    match args.command {
        Command::Check { dir } => {
            let (files, problems) =
                check_dir(&dir).with_context(|| format!("checking {}", dir.display()))?;
            let failed = has_errors(&problems);
            if json {
                print_json(&json!({ "ok": !failed, "files": files.len(), "problems": problems }));
            } else {
                print_problems(&problems);
                let errors = problems
                    .iter()
                    .filter(|p| p.severity == Severity::Error)
                    .count();
                println!(
                    "{}: {} files, {errors} errors, {} warnings",
                    dir.display(),
                    files.len(),
                    problems.len() - errors
                );
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Build { dir, out, no_check } => {
            let (files, problems) =
                check_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
            if has_errors(&problems) && !no_check {
                if json {
                    print_json(&json!({ "ok": false, "problems": problems }));
                } else {
                    print_problems(&problems);
                    eprintln!(
                        "build refused: `static-sync check {}` finds errors (or pass --no-check)",
                        dir.display()
                    );
                }
                return Ok(ExitCode::from(1));
            }
            let built =
                build_site(&files).with_context(|| format!("building {}", dir.display()))?;
            write_output(&out, &built).with_context(|| format!("writing {}", out.display()))?;
            let fingerprinted = built.renamed.iter().filter(|(a, b)| a != b).count();
            if json {
                print_json(&json!({
                    "ok": true,
                    "version": built.manifest.version,
                    "files": built.manifest.files.len(),
                    "fingerprinted": fingerprinted,
                    "bytes": built.manifest.total_bytes(),
                    "out": out,
                    "warnings": built.warnings,
                }));
            } else {
                for w in &built.warnings {
                    eprintln!("warning: {w}");
                }
                println!(
                    "built version {} into {}: {} files ({} fingerprinted), {}",
                    built.manifest.version,
                    out.display(),
                    built.manifest.files.len(),
                    fingerprinted,
                    bytes(built.manifest.total_bytes())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            manifest,
            against,
            store,
        } => {
            let m = push::load_manifest(&manifest)?;
            let against = match against.as_str() {
                "current" | "live" => Against::Live,
                "next" => Against::Next,
                "none" => Against::Nothing,
                v => Against::Version(v.to_owned()),
            };
            let store = store.open();
            let plan =
                push::plan(store.as_ref(), &m, &against, now_ms()).context("reading the store")?;
            if json {
                print_json(&json!({ "ok": true, "plan": plan }));
            } else {
                print_plan(&plan);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Push {
            out,
            activate,
            no_journal,
            batch_keys,
            store,
        } => {
            let manifest_path = out.join("manifest.json");
            let m = push::load_manifest(&manifest_path).with_context(|| {
                format!(
                    "{} is not a build: run `static-sync build` first",
                    out.display()
                )
            })?;
            let store = store.open();
            let pb = bar(m.total_bytes(), "uploading", json, true);
            let opts = PushOptions {
                batch_keys: batch_keys.max(1),
                journal: !no_journal,
                ..PushOptions::default()
            };
            let report = push::push(store.as_ref(), &out, &m, &opts, &mut |p| {
                pb.set_length(p.total_bytes);
                pb.set_position(p.done_bytes);
            })
            .with_context(|| {
                format!(
                    "pushing version {} (run the same command again to resume)",
                    m.version
                )
            })?;
            pb.finish_and_clear();
            let now = now_ms();
            let change = if activate {
                Some(
                    push::change_release(store.as_ref(), now, |r| Ok(r.activate(&m.version, now)))
                        .context("activating")?,
                )
            } else {
                None
            };
            if json {
                print_json(
                    &json!({ "ok": true, "push": report, "release": change.as_ref().map(|c| &c.after) }),
                );
            } else {
                println!(
                    "pushed version {}: {} blobs uploaded ({}), {} already there, manifest {}",
                    report.version,
                    report.uploaded_blobs,
                    bytes(report.uploaded_bytes),
                    report.skipped_blobs,
                    if report.manifest_written {
                        "written"
                    } else {
                        "already there"
                    }
                );
                match change {
                    Some(c) => print!("activated.\n{}", describe_release(&c.after, now)),
                    None => println!(
                        "not live yet: `static-sync schedule --version {0} --at TIME` or `static-sync activate --version {0}`",
                        report.version
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schedule {
            version,
            at,
            cancel,
            store,
        } => {
            let store = store.open();
            let now = now_ms();
            let change = if cancel {
                push::change_release(store.as_ref(), now, |r| Ok(r.unschedule(now)))?
            } else {
                let (Some(version), Some(at)) = (version, at) else {
                    bail!("--version and --at are required");
                };
                let at_ms = parse_at(&at, now)?;
                push::change_release(store.as_ref(), now, |r| r.schedule(&version, at_ms, now))?
            };
            report_change(json, "scheduled", &change.after, now);
            Ok(ExitCode::SUCCESS)
        }
        Command::Activate { version, store } => {
            let store = store.open();
            let now = now_ms();
            let change =
                push::change_release(store.as_ref(), now, |r| Ok(r.activate(&version, now)))?;
            report_change(json, "activated", &change.after, now);
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback { store } => {
            let store = store.open();
            let now = now_ms();
            let change = push::change_release(store.as_ref(), now, |r| r.rollback(now))?;
            if !json {
                println!(
                    "rolled back from {}",
                    change.before.current.as_deref().unwrap_or("-")
                );
            }
            report_change(json, "rolled back", &change.after, now);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { store } => {
            let store = store.open();
            let now = now_ms();
            let r = read_release(store.as_ref())
                .context("reading `release`")?
                .unwrap_or_default();
            if json {
                print_json(
                    &json!({ "ok": true, "now": now, "live": r.live_version(now), "release": r }),
                );
            } else {
                print!("{}", describe_release(&r, now));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            base_url,
            manifest,
            pages_only,
            concurrency,
            timeout,
            store,
        } => {
            let m: Manifest = match manifest {
                Some(p) => push::load_manifest(&p)?,
                None => {
                    let store = store.open();
                    let now = now_ms();
                    let r = read_release(store.as_ref())
                        .context("reading `release`")?
                        .unwrap_or_default();
                    let Some(v) = r.live_version(now) else {
                        bail!("nothing is live from KV yet; pass --manifest OUT/manifest.json to verify a Static Assets build");
                    };
                    read_manifest(store.as_ref(), v)?.with_context(|| {
                        format!("the live version {v} has no manifest in the store")
                    })?
                }
            };
            let paths: Vec<String> = m
                .files
                .iter()
                .filter(|(_, e)| !pages_only || e.content_type.starts_with("text/html"))
                .map(|(p, _)| p.clone())
                .collect();
            let fetch = http_fetcher(&base_url, Duration::from_secs(timeout));
            let pb = bar(paths.len() as u64, "verifying", json, false);
            let report = verify(&m, &paths, &fetch, concurrency, &|| pb.inc(1));
            pb.finish_and_clear();
            let failed = !report.mismatches.is_empty();
            if json {
                print_json(&json!({ "ok": !failed, "verify": report }));
            } else {
                for x in &report.mismatches {
                    println!("MISMATCH {}: {}", x.path, x.problem);
                }
                println!(
                    "version {}: {} files checked at {base_url}, {} match, {} mismatches",
                    report.version,
                    report.checked,
                    report.ok,
                    report.mismatches.len()
                );
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn report_change(json: bool, what: &str, after: &Release, now: u64) {
    if json {
        print_json(&json!({ "ok": true, "release": after, "live": after.live_version(now) }));
    } else {
        print!("{what}.\n{}", describe_release(after, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_accepts_rfc3339_relative_and_millis() {
        assert_eq!(parse_at("+30s", 1000).unwrap(), 31_000);
        assert_eq!(parse_at("+2m", 0).unwrap(), 120_000);
        assert_eq!(parse_at("+500ms", 0).unwrap(), 500);
        assert_eq!(parse_at("@1700000000000", 0).unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_at("2026-11-27T00:00:00Z", 0).unwrap(),
            1_795_737_600_000
        );
        assert_eq!(
            parse_at("2026-11-27T01:00:00+01:00", 0).unwrap(),
            1_795_737_600_000
        );
        assert!(parse_at("tomorrow", 0).is_err());
        assert!(parse_at("+3y", 0).is_err());
        assert_eq!(fmt_ms(1_795_737_600_000), "2026-11-27T00:00:00Z");
    }
}
