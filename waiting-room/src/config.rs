//! Room configuration: a TOML file format (kebab-case, unknown keys rejected) validated into
//! [`RoomConfig`], with errors that name the file, line, column and key.
//!
//! See `waiting-room/examples/flash-sale.toml` for a complete, commented file.

use std::net::IpAddr;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::net::Cidr;
use crate::timestamp::parse_rfc3339_ms;

/// Upper bound on `admitted-per-minute` and the closed-loop bounds: one room, one Durable
/// Object, one thread; a million admissions a minute is far beyond what a sale's origin takes.
pub const MAX_RATE_PER_MINUTE: u32 = 1_000_000;

/// An error in a room file. Every variant carries where it is; `Display` prints
/// `file:line:column: key: message` and the offending line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not valid TOML, or does not fit the file format (unknown key, missing key,
    /// wrong type).
    #[error("{file}:{line}:{column}: {message}\n  | {snippet}")]
    Syntax {
        /// The name the file was loaded under.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What is wrong, as the TOML parser says it.
        message: String,
        /// The offending line.
        snippet: String,
    },
    /// The file parses, but a value is out of range or inconsistent with another.
    #[error("{file}:{line}:{column}: {key}: {message}\n  | {snippet}")]
    Invalid {
        /// The name the file was loaded under.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// Dotted key, e.g. `admission.abandon-timeout-secs`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
        /// The offending line.
        snippet: String,
    },
}

/// What the edge does for a guarded path when the room cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// Let shoppers through to the origin (the origin proxy still sheds load).
    Open,
    /// Show the waiting page without a position; nobody is admitted.
    Closed,
}

/// How the line is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueingMethod {
    /// First come, first served, including shoppers who joined before the sale started.
    Fifo,
    /// Shoppers who joined before the sale started are put in a random order, drawn at the
    /// start from the room's recorded seed; everyone who joins later queues behind them, FIFO.
    PreQueueShuffle,
}

// ---------------------------------------------------------------------------------------------
// File format
// ---------------------------------------------------------------------------------------------

/// The room file as written. Field docs are the reference for the file format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RoomFile {
    /// Room id: 1-64 characters of `a-z 0-9 - _`. Tokens are bound to it.
    id: Spanned<String>,
    /// `open` or `closed`: what the edge does when the room cannot be reached.
    failure_mode: FailureMode,
    /// Which request paths the room guards.
    paths: PathsFile,
    /// Admission rate, caps and timings.
    admission: AdmissionFile,
    /// The event schedule.
    schedule: ScheduleFile,
    /// Requests that never queue.
    #[serde(default)]
    bypass: BypassFile,
    /// Bounds and tuning for the origin-health feedback loop. Absent: the rate is fixed.
    closed_loop: Option<ClosedLoopFile>,
    /// Text of the waiting page.
    #[serde(default)]
    page: PageFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PathsFile {
    /// Paths guarded exactly (compared case-insensitively).
    #[serde(default)]
    exact: Vec<Spanned<String>>,
    /// Path prefixes guarded (compared case-insensitively). `/sale/` guards `/sale/x`.
    #[serde(default)]
    prefix: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct AdmissionFile {
    /// New shoppers admitted per minute (the starting rate when the closed loop is on).
    admitted_per_minute: Spanned<u32>,
    /// Most shoppers with a live session at once.
    max_active: Spanned<u64>,
    /// How long an admission lasts, in seconds.
    session_duration_secs: Spanned<u64>,
    /// How often a waiting shopper's page polls, in seconds.
    poll_interval_secs: Spanned<u64>,
    /// How long a called shopper has to claim the turn before it passes to the next, seconds.
    abandon_timeout_secs: Spanned<u64>,
    /// `fifo` or `pre-queue-shuffle`.
    queueing: QueueingMethod,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ScheduleFile {
    /// When shoppers may start joining (RFC 3339, quoted). Absent: at `sale-starts`.
    pre_queue_opens: Option<Spanned<String>>,
    /// When admission starts (RFC 3339, quoted).
    sale_starts: Spanned<String>,
    /// When the room closes to new shoppers and polls (RFC 3339, quoted).
    sale_ends: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct BypassFile {
    /// Path prefixes that never queue (compared case-insensitively).
    #[serde(default)]
    path_prefixes: Vec<Spanned<String>>,
    /// Client addresses or CIDR blocks that never queue.
    #[serde(default)]
    ips: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ClosedLoopFile {
    /// The rate never goes below this (per minute).
    min_admitted_per_minute: Spanned<u32>,
    /// The rate never goes above this (per minute).
    max_admitted_per_minute: Spanned<u32>,
    /// The origin is hurting when its p99 latency exceeds this, in milliseconds.
    target_p99_latency_ms: Spanned<u32>,
    /// The origin is hurting when its 5xx share exceeds this (0.0-1.0).
    max_error_rate: Spanned<f64>,
    /// The origin is hurting when it shed more requests than this since the last report.
    #[serde(default)]
    max_shed_count: u64,
    /// Multiplicative decrease on a bad report (0 < factor < 1). Default 0.7.
    decrease_factor: Option<Spanned<f64>>,
    /// Additive increase per minute of good reports, in admissions per minute.
    /// Default: a tenth of `max-admitted-per-minute`.
    increase_per_minute: Option<Spanned<u32>>,
    /// Least time between two decreases, seconds. Default: 10.
    decrease_cooldown_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PageFile {
    /// Page title. Default: "You are in line".
    title: Option<Spanned<String>>,
    /// A line of text under the title.
    message: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------------
// Validated config
// ---------------------------------------------------------------------------------------------

/// A validated room configuration. Build it with [`RoomConfig::from_toml`]; every field has
/// been checked, times are Unix milliseconds and paths are lower-cased.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RoomConfig {
    /// Room id (`a-z 0-9 - _`, 1-64 characters).
    pub id: String,
    /// Guarded exact paths, lower-cased.
    pub exact_paths: Vec<String>,
    /// Guarded path prefixes, lower-cased.
    pub prefix_paths: Vec<String>,
    /// Starting admission rate, per minute.
    pub admitted_per_minute: u32,
    /// Most shoppers with a live session at once.
    pub max_active: u64,
    /// Session length, milliseconds.
    pub session_ms: u64,
    /// Polling interval of the waiting page, milliseconds.
    pub poll_interval_ms: u64,
    /// Time a called shopper has to claim the turn, milliseconds.
    pub abandon_timeout_ms: u64,
    /// When joining opens (Unix ms); equals `sale_starts_ms` without a pre-queue.
    pub pre_queue_opens_ms: u64,
    /// When admission starts (Unix ms).
    pub sale_starts_ms: u64,
    /// When the room closes (Unix ms).
    pub sale_ends_ms: u64,
    /// Queue order.
    pub queueing: QueueingMethod,
    /// What the edge does when the room is unreachable.
    pub failure_mode: FailureMode,
    /// Bypassed path prefixes, lower-cased.
    pub bypass_path_prefixes: Vec<String>,
    /// Bypassed client networks.
    #[serde(with = "cidr_strings")]
    pub bypass_ips: Vec<Cidr>,
    /// Closed-loop bounds and tuning (fixed rate when the file has no `[closed-loop]`).
    pub closed_loop: ClosedLoop,
    /// Waiting page title.
    pub page_title: String,
    /// Waiting page message (may be empty).
    pub page_message: String,
}

/// Bounds and tuning of the admission-rate feedback loop (see [`crate::Room::observe_origin`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClosedLoop {
    /// Lowest rate, per minute.
    pub min_per_minute: u32,
    /// Highest rate, per minute.
    pub max_per_minute: u32,
    /// Latency threshold, ms.
    pub target_p99_latency_ms: u32,
    /// 5xx share threshold.
    pub max_error_rate: f64,
    /// Shed-count threshold per report.
    pub max_shed_count: u64,
    /// Multiplicative decrease factor.
    pub decrease_factor: f64,
    /// Additive increase, per minute of healthy reports.
    pub increase_per_minute: u32,
    /// Least time between two decreases, ms.
    pub decrease_cooldown_ms: u64,
}

mod cidr_strings {
    use super::Cidr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Cidr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cidr>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| Cidr::parse(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn locate(&self, span: Range<usize>) -> (usize, usize, String) {
        let start = span.start.min(self.text.len());
        let before = &self.text[..floor_char(self.text, start)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let snippet = self.text[line_start..]
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        (line, column, snippet)
    }

    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, column, snippet) = self.locate(span);
        ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
            snippet,
        }
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl RoomConfig {
    /// Parses and validates a room file. `name` is how errors refer to the file (a path, or
    /// a KV key).
    pub fn from_toml(name: &str, text: &str) -> Result<RoomConfig, ConfigError> {
        let ctx = Ctx { file: name, text };
        let file: RoomFile = toml::from_str(text).map_err(|e| {
            let (line, column, snippet) = ctx.locate(e.span().unwrap_or(0..0));
            ConfigError::Syntax {
                file: name.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
                snippet,
            }
        })?;
        validate(&ctx, file)
    }

    /// When a ticket cookie should expire (Unix ms): the sale end, after which the room
    /// answers every ticket with `Closed`.
    pub fn ticket_expires_at(&self) -> u64 {
        self.sale_ends_ms
    }

    /// Whether the room guards this request path, after [`normalize_path`] (so case, `%`
    /// escapes of plain characters, `//` and dot segments cannot dodge it).
    pub fn guards(&self, path: &str) -> bool {
        let path = normalize_path(path);
        self.exact_paths.contains(&path)
            || self
                .prefix_paths
                .iter()
                .any(|p| path.starts_with(p.as_str()))
    }

    /// Whether this request skips the queue: its [normalised](normalize_path) path starts
    /// with a bypass prefix, or its client address is in the bypass list.
    pub fn bypasses(&self, path: &str, client: Option<IpAddr>) -> bool {
        let path = normalize_path(path);
        self.bypass_path_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
            || client.is_some_and(|ip| self.bypass_ips.iter().any(|c| c.contains(ip)))
    }
}

/// The form of a request path that guard and bypass checks compare: query and fragment cut,
/// `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) decoded, ASCII lower-cased,
/// repeated `/` collapsed, and `.` / `..` segments resolved (never above the root). Other
/// escapes (`%2F`, non-ASCII) are kept, lower-cased with the rest, so `%2f` and `%2F` compare
/// equal. A trailing `/` is kept. Idempotent.
pub fn normalize_path(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    // Decode on a stack, re-checking the tail after each decode, so that an escape spelled
    // with escapes (`%%32e`) is decoded too and the result is a fixpoint. Linear time.
    let hex = |c: u8| (c as char).to_digit(16);
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    for &b in path.as_bytes() {
        decoded.push(b);
        while let [.., b'%', h, l] = decoded[..] {
            let (Some(h), Some(l)) = (hex(h), hex(l)) else {
                break;
            };
            let c = (h * 16 + l) as u8;
            if !(c.is_ascii_alphanumeric() || b"-._~".contains(&c)) {
                break;
            }
            decoded.truncate(decoded.len() - 3);
            decoded.push(c);
        }
    }
    let text = String::from_utf8_lossy(&decoded).to_ascii_lowercase();
    let mut segments: Vec<&str> = Vec::new();
    for seg in text.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(text.len() + 1);
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    // Keep a trailing slash (it distinguishes "/sale/" from "/sale"), and the root.
    let trailing = text.ends_with('/') || text.ends_with("/.") || text.ends_with("/..");
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    out
}

fn check_path(ctx: &Ctx<'_>, key: &str, p: &Spanned<String>) -> Result<String, ConfigError> {
    let v = p.get_ref();
    if !v.starts_with('/') {
        return Err(ctx.err(p.span(), key, format!("`{v}` must start with `/`")));
    }
    if v.len() > 1024 || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ctx.err(
            p.span(),
            key,
            "paths are at most 1024 bytes, without spaces or control characters",
        ));
    }
    Ok(normalize_path(v))
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    ctx: &Ctx<'_>,
    key: &str,
    v: &Spanned<T>,
    lo: T,
    hi: T,
) -> Result<T, ConfigError> {
    let x = *v.get_ref();
    if x < lo || x > hi {
        return Err(ctx.err(v.span(), key, format!("{x} is out of range {lo}..={hi}")));
    }
    Ok(x)
}

fn time(ctx: &Ctx<'_>, key: &str, v: &Spanned<String>) -> Result<u64, ConfigError> {
    parse_rfc3339_ms(v.get_ref()).map_err(|m| ctx.err(v.span(), key, m))
}

fn validate(ctx: &Ctx<'_>, f: RoomFile) -> Result<RoomConfig, ConfigError> {
    let id = f.id.get_ref();
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(ctx.err(
            f.id.span(),
            "id",
            format!("`{id}`: use 1-64 characters of a-z, 0-9, `-` and `_`"),
        ));
    }

    let exact_paths = f
        .paths
        .exact
        .iter()
        .map(|p| check_path(ctx, "paths.exact", p))
        .collect::<Result<Vec<_>, _>>()?;
    let prefix_paths = f
        .paths
        .prefix
        .iter()
        .map(|p| check_path(ctx, "paths.prefix", p))
        .collect::<Result<Vec<_>, _>>()?;
    if exact_paths.is_empty() && prefix_paths.is_empty() {
        return Err(ctx.err(
            0..0,
            "paths",
            "the room guards no path: give `paths.exact` or `paths.prefix`",
        ));
    }

    let a = &f.admission;
    let rate = check_range(
        ctx,
        "admission.admitted-per-minute",
        &a.admitted_per_minute,
        1,
        MAX_RATE_PER_MINUTE,
    )?;
    let max_active = check_range(ctx, "admission.max-active", &a.max_active, 1, u64::MAX / 4)?;
    let poll = check_range(
        ctx,
        "admission.poll-interval-secs",
        &a.poll_interval_secs,
        1,
        300,
    )?;
    let abandon = check_range(
        ctx,
        "admission.abandon-timeout-secs",
        &a.abandon_timeout_secs,
        2 * poll,
        3600,
    )
    .map_err(|_| {
        ctx.err(
            a.abandon_timeout_secs.span(),
            "admission.abandon-timeout-secs",
            format!(
                "must be between twice poll-interval-secs ({}) and 3600, so that a shopper who \
                 keeps polling never loses a turn",
                2 * poll
            ),
        )
    })?;
    let session = check_range(
        ctx,
        "admission.session-duration-secs",
        &a.session_duration_secs,
        2 * abandon,
        7 * 24 * 3600,
    )
    .map_err(|_| {
        ctx.err(
            a.session_duration_secs.span(),
            "admission.session-duration-secs",
            format!(
                "must be between twice abandon-timeout-secs ({}) and a week",
                2 * abandon
            ),
        )
    })?;

    let s = &f.schedule;
    let sale_starts_ms = time(ctx, "schedule.sale-starts", &s.sale_starts)?;
    let sale_ends_ms = time(ctx, "schedule.sale-ends", &s.sale_ends)?;
    let pre_queue_opens_ms = match &s.pre_queue_opens {
        Some(p) => {
            let t = time(ctx, "schedule.pre-queue-opens", p)?;
            if t > sale_starts_ms {
                return Err(ctx.err(
                    p.span(),
                    "schedule.pre-queue-opens",
                    "the pre-queue must open no later than the sale starts",
                ));
            }
            t
        }
        None => sale_starts_ms,
    };
    if sale_ends_ms <= sale_starts_ms {
        return Err(ctx.err(
            s.sale_ends.span(),
            "schedule.sale-ends",
            "the sale must end after it starts",
        ));
    }

    let bypass_path_prefixes = f
        .bypass
        .path_prefixes
        .iter()
        .map(|p| check_path(ctx, "bypass.path-prefixes", p))
        .collect::<Result<Vec<_>, _>>()?;
    let bypass_ips = f
        .bypass
        .ips
        .iter()
        .map(|c| Cidr::parse(c.get_ref()).map_err(|m| ctx.err(c.span(), "bypass.ips", m)))
        .collect::<Result<Vec<_>, _>>()?;

    let closed_loop = match &f.closed_loop {
        None => ClosedLoop {
            min_per_minute: rate,
            max_per_minute: rate,
            target_p99_latency_ms: u32::MAX,
            max_error_rate: 1.0,
            max_shed_count: u64::MAX,
            decrease_factor: 0.7,
            increase_per_minute: 0,
            decrease_cooldown_ms: 10_000,
        },
        Some(c) => {
            let k = "closed-loop.min-admitted-per-minute";
            let min = check_range(ctx, k, &c.min_admitted_per_minute, 1, rate)?;
            let k = "closed-loop.max-admitted-per-minute";
            let max = check_range(
                ctx,
                k,
                &c.max_admitted_per_minute,
                rate,
                MAX_RATE_PER_MINUTE,
            )?;
            let k = "closed-loop.target-p99-latency-ms";
            let target = check_range(ctx, k, &c.target_p99_latency_ms, 1, 600_000)?;
            let k = "closed-loop.max-error-rate";
            let err_rate = check_range(ctx, k, &c.max_error_rate, 0.0, 1.0)?;
            let decrease_factor = match &c.decrease_factor {
                None => 0.7,
                Some(d) => {
                    let k = "closed-loop.decrease-factor";
                    check_range(ctx, k, d, 0.05, 0.99)?
                }
            };
            let increase_per_minute = match &c.increase_per_minute {
                None => (max / 10).max(1),
                Some(i) => {
                    let k = "closed-loop.increase-per-minute";
                    check_range(ctx, k, i, 0, MAX_RATE_PER_MINUTE)?
                }
            };
            let decrease_cooldown_ms = match &c.decrease_cooldown_secs {
                None => 10_000,
                Some(d) => {
                    let k = "closed-loop.decrease-cooldown-secs";
                    check_range(ctx, k, d, 0, 3600)? * 1000
                }
            };
            ClosedLoop {
                min_per_minute: min,
                max_per_minute: max,
                target_p99_latency_ms: target,
                max_error_rate: err_rate,
                max_shed_count: c.max_shed_count,
                decrease_factor,
                increase_per_minute,
                decrease_cooldown_ms,
            }
        }
    };

    // The pending-turn window holds about rate x abandon-timeout ranks; keep it within half
    // the room's bound so abandonment can double it without throttling calls.
    let pending = u64::from(closed_loop.max_per_minute) * (abandon + 1) / 60;
    if pending > crate::room::MAX_PENDING_RANKS / 2 {
        return Err(ctx.err(
            a.abandon_timeout_secs.span(),
            "admission.abandon-timeout-secs",
            format!(
                "at up to {} admissions a minute, turns open for {abandon} s would be {pending} \
                 at once, more than the room tracks ({}): shorten the timeout",
                closed_loop.max_per_minute,
                crate::room::MAX_PENDING_RANKS / 2
            ),
        ));
    }

    let text_field = |v: &Option<Spanned<String>>, key: &str, default: &str| match v {
        None => Ok(default.to_string()),
        Some(t) if t.get_ref().chars().count() > 500 => {
            Err(ctx.err(t.span(), key, "at most 500 characters"))
        }
        Some(t) => Ok(t.get_ref().clone()),
    };
    let page_title = text_field(&f.page.title, "page.title", "You are in line")?;
    let page_message = text_field(&f.page.message, "page.message", "")?;

    Ok(RoomConfig {
        id: id.clone(),
        exact_paths,
        prefix_paths,
        admitted_per_minute: rate,
        max_active,
        session_ms: session * 1000,
        poll_interval_ms: poll * 1000,
        abandon_timeout_ms: abandon * 1000,
        pre_queue_opens_ms,
        sale_starts_ms,
        sale_ends_ms,
        queueing: a.queueing,
        failure_mode: f.failure_mode,
        bypass_path_prefixes,
        bypass_ips,
        closed_loop,
        page_title,
        page_message,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = include_str!("../examples/flash-sale.toml");

    /// A small valid file for tests; tests derive variants by text substitution.
    pub(crate) fn minimal() -> String {
        r#"
id = "test-room"
failure-mode = "closed"

[paths]
exact = ["/Checkout"]
prefix = ["/sale/"]

[admission]
admitted-per-minute = 600
max-active = 1000
session-duration-secs = 600
poll-interval-secs = 5
abandon-timeout-secs = 15
queueing = "fifo"

[schedule]
pre-queue-opens = "2026-11-27T08:45:00Z"
sale-starts = "2026-11-27T09:00:00Z"
sale-ends = "2026-11-27T10:00:00Z"
"#
        .to_string()
    }

    #[test]
    fn example_file_is_valid() {
        let c = RoomConfig::from_toml("flash-sale.toml", EXAMPLE).unwrap();
        assert_eq!(c.queueing, QueueingMethod::PreQueueShuffle);
        assert!(c.pre_queue_opens_ms < c.sale_starts_ms);
        assert!(c.closed_loop.min_per_minute <= c.admitted_per_minute);
    }

    #[test]
    fn minimal_file_parses_and_normalises() {
        let c = RoomConfig::from_toml("t.toml", &minimal()).unwrap();
        assert_eq!(c.id, "test-room");
        assert_eq!(c.exact_paths, vec!["/checkout"]);
        assert_eq!(c.sale_starts_ms, 1_795_770_000_000);
        assert_eq!(c.pre_queue_opens_ms, 1_795_770_000_000 - 15 * 60_000);
        assert_eq!(c.session_ms, 600_000);
        assert_eq!(c.closed_loop.min_per_minute, 600);
        assert_eq!(c.closed_loop.max_per_minute, 600);
        assert!(c.guards("/CHECKOUT"));
        assert!(c.guards("/checkout?x=1"));
        assert!(c.guards("/Sale/item/1"));
        assert!(!c.guards("/checkout/x"));
        assert!(!c.guards("/"));
    }

    #[test]
    fn bypass_by_path_and_ip() {
        let text = minimal()
            + "\n[bypass]\npath-prefixes = [\"/Static/\"]\nips = [\"10.0.0.0/8\", \"2001:db8::1\"]\n";
        let c = RoomConfig::from_toml("t.toml", &text).unwrap();
        assert!(c.bypasses("/static/app.js", None));
        assert!(c.bypasses("/sale/x", Some("10.2.3.4".parse().unwrap())));
        assert!(c.bypasses("/sale/x", Some("2001:db8::1".parse().unwrap())));
        assert!(!c.bypasses("/sale/x", Some("11.2.3.4".parse().unwrap())));
        assert!(!c.bypasses("/sale/x", None));
    }

    fn err(text: &str) -> ConfigError {
        RoomConfig::from_toml("room.toml", text).unwrap_err()
    }

    fn invalid_key(e: &ConfigError) -> (&str, usize, usize) {
        match e {
            ConfigError::Invalid {
                key, line, column, ..
            } => (key.as_str(), *line, *column),
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn unknown_key_is_a_syntax_error_with_position() {
        let text = minimal().replace("queueing = \"fifo\"", "queueing = \"fifo\"\nspeed = 3");
        match err(&text) {
            ConfigError::Syntax {
                file,
                line,
                message,
                ..
            } => {
                assert_eq!(file, "room.toml");
                assert_eq!(line, 16);
                assert!(message.contains("speed"), "{message}");
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn validation_errors_name_key_line_and_column() {
        let e = err(&minimal().replace("abandon-timeout-secs = 15", "abandon-timeout-secs = 6"));
        assert_eq!(invalid_key(&e), ("admission.abandon-timeout-secs", 14, 24));
        assert!(e
            .to_string()
            .starts_with("room.toml:14:24: admission.abandon-timeout-secs"));
        assert!(e.to_string().contains("| abandon-timeout-secs = 6"));

        let e = err(&minimal().replace("\"test-room\"", "\"Test Room\""));
        assert_eq!(invalid_key(&e).0, "id");

        let e = err(&minimal().replace("/sale/", "sale/"));
        assert_eq!(invalid_key(&e).0, "paths.prefix");

        let e = err(&minimal().replace("10:00:00Z", "08:00:00Z"));
        assert_eq!(invalid_key(&e).0, "schedule.sale-ends");

        let e = err(&minimal().replace("08:45:00Z", "09:45:00Z"));
        assert_eq!(invalid_key(&e).0, "schedule.pre-queue-opens");

        let e = err(&minimal().replace("2026-11-27T09:00:00Z", "tomorrow"));
        assert_eq!(invalid_key(&e).0, "schedule.sale-starts");

        let e = err(&minimal().replace("admitted-per-minute = 600", "admitted-per-minute = 0"));
        assert_eq!(invalid_key(&e).0, "admission.admitted-per-minute");

        let e =
            err(&minimal().replace("session-duration-secs = 600", "session-duration-secs = 20"));
        assert_eq!(invalid_key(&e).0, "admission.session-duration-secs");

        let e =
            err(&minimal().replace("admitted-per-minute = 600", "admitted-per-minute = 900000"));
        assert_eq!(invalid_key(&e).0, "admission.abandon-timeout-secs");

        let e = err(&(minimal() + "[bypass]\nips = [\"10.0.0.1/8\"]\n"));
        assert_eq!(invalid_key(&e).0, "bypass.ips");

        let cl = "[closed-loop]\nmin-admitted-per-minute = 700\nmax-admitted-per-minute = 900\n\
                  target-p99-latency-ms = 500\nmax-error-rate = 0.05\n";
        let e = err(&(minimal() + cl));
        assert_eq!(
            invalid_key(&e),
            ("closed-loop.min-admitted-per-minute", 22, 27)
        );
    }

    #[test]
    fn missing_and_mistyped_keys_are_syntax_errors() {
        for text in [
            minimal().replace("max-active = 1000\n", ""),
            minimal().replace("max-active = 1000", "max-active = \"lots\""),
            minimal().replace("\"fifo\"", "\"lifo\""),
            minimal().replace("\"closed\"", "\"maybe\""),
            "id = ".to_string(),
        ] {
            assert!(matches!(err(&text), ConfigError::Syntax { .. }), "{text}");
        }
    }

    #[test]
    fn without_pre_queue_joining_opens_at_sale_start() {
        let text = minimal().replace("pre-queue-opens = \"2026-11-27T08:45:00Z\"\n", "");
        let c = RoomConfig::from_toml("t.toml", &text).unwrap();
        assert_eq!(c.pre_queue_opens_ms, c.sale_starts_ms);
    }

    #[test]
    fn validated_config_round_trips_through_serde() {
        let c = RoomConfig::from_toml("flash-sale.toml", EXAMPLE).unwrap();
        let json = serde_json::to_string(&c).unwrap();
        let back: RoomConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn path_tricks_do_not_dodge_the_guard() {
        let c = RoomConfig::from_toml("t.toml", &minimal()).unwrap();
        for p in [
            "/checkout",
            "/CheckOut",
            "//checkout",
            "/x/../checkout",
            "/./checkout",
            "/%63heckout",
            "/%63HECKOUT?a=b",
            "/sale/%2e%2e/sale/x",
            "/static/../sale/x",
            "/../../sale/x",
        ] {
            assert!(c.guards(p), "{p} not guarded");
        }
        for p in ["/", "/checkout/", "/sale", "/sale%2fx", "/salesforce"] {
            assert!(!c.guards(p), "{p} guarded");
        }
        assert_eq!(normalize_path("/a/b/.."), "/a/");
        assert_eq!(normalize_path("/a//b/"), "/a/b/");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/%2F/%7e"), "/%2f/~");
        assert_eq!(normalize_path("/%%32e%%32e/sale/"), "/sale/");
        assert_eq!(normalize_path("/%4%31"), "/a");
    }

    proptest::proptest! {
        #[test]
        fn normalize_path_is_idempotent(p in "[/a-fA-F.%0-9~?-]{0,40}") {
            let once = normalize_path(&p);
            proptest::prop_assert!(once.starts_with('/'));
            proptest::prop_assert_eq!(normalize_path(&once), once.clone());
        }

        #[test]
        fn never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = RoomConfig::from_toml("fuzz.toml", &text);
        }

        #[test]
        fn never_panics_on_mutated_example(line in 0usize..80, junk in "[ -~]{0,12}") {
            let mut lines: Vec<&str> = EXAMPLE.lines().collect();
            let i = line % lines.len();
            let mutated = format!("{}{junk}", lines[i]);
            lines[i] = &mutated;
            let text = lines.join("\n");
            if let Err(e) = RoomConfig::from_toml("flash-sale.toml", &text) {
                proptest::prop_assert!(e.to_string().starts_with("flash-sale.toml:"));
            }
        }
    }
}
