//! The WAF at the origin (defence in depth): the same `waf-rules` engine as the edge, with the
//! custom rules and rate limits first, then the OWASP CRS, configured in the `[waf]` section:
//!
//! ```toml
//! [waf]
//! mode = "block"               # off | detect | block (CRS); custom rules follow their own mode
//! paranoia = 1                 # CRS paranoia level, 1..=4
//! inbound-threshold = 5        # CRS inbound anomaly threshold
//! crs-dir = "../shared/crs-4.28.0"     # optional; relative to this file
//! rules = ["rules/shop-rules.toml"]    # custom rules files; relative to this file
//! rate-limit-keys = 100000     # keys the rate limiter keeps at most (LRU beyond that)
//! ```
//!
//! The rules are compiled when the config loads, so a broken rule file fails `--check` and a
//! reload keeps the running rules. Bodies are inspected up to [`MAX_INSPECTED_BODY`] bytes
//! (pingora's request retry buffer, which also carries the body on to the backend); larger
//! bodies are refused with 413 while the WAF runs. Rate limits count per process.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use waf_rules::custom::Mode as RuleMode;
use waf_rules::{
    Action, CustomAction, CustomRules, HttpRequest, Mode, RateLimiter, RuleSet, WafConfig,
};

/// Largest body the WAF inspects and forwards.
pub const MAX_INSPECTED_BODY: usize = 64 * 1024;

/// The `[waf]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileWaf {
    #[serde(default = "default_mode")]
    mode: Mode,
    #[serde(default = "default_paranoia")]
    paranoia: u8,
    #[serde(default = "default_threshold")]
    inbound_threshold: u32,
    crs_dir: Option<PathBuf>,
    #[serde(default)]
    rules: Vec<PathBuf>,
    #[serde(default = "default_keys")]
    rate_limit_keys: usize,
}

fn default_mode() -> Mode {
    Mode::Block
}
fn default_paranoia() -> u8 {
    1
}
fn default_threshold() -> u32 {
    5
}
fn default_keys() -> usize {
    100_000
}

/// The compiled WAF of one config generation.
pub struct OriginWaf {
    mode: Mode,
    crs: Option<RuleSet>,
    custom: CustomRules,
    limiter: RateLimiter,
    /// CRS rules that cannot run, reported at load.
    pub unsupported: Vec<(u32, String)>,
}

impl std::fmt::Debug for OriginWaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginWaf")
            .field("mode", &self.mode)
            .field("crs_rules", &self.crs.as_ref().map(RuleSet::rule_count))
            .field("custom_rules", &self.custom.len())
            .finish()
    }
}

/// One rule that matched: `(rule id, action, mode)` as the metrics label them.
pub type Match = (String, &'static str, &'static str);

/// What the WAF decided about one request.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every rule that matched, enforced or shadow.
    pub matches: Vec<Match>,
    /// The answer when the request is stopped: status and `Retry-After` seconds.
    pub stop: Option<(u16, Option<u64>)>,
}

impl OriginWaf {
    /// Compiles the section; paths are relative to `base` (the config file's directory). The
    /// error names the file and what is wrong.
    pub fn load(file: FileWaf, base: &Path) -> Result<OriginWaf, String> {
        if !(1..=4).contains(&file.paranoia) {
            return Err(format!("paranoia must be 1..=4, got {}", file.paranoia));
        }
        if file.rate_limit_keys == 0 {
            return Err("rate-limit-keys must be at least 1".into());
        }
        let resolve = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let mut texts = Vec::new();
        for p in &file.rules {
            let path = resolve(p);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("rules {}: {e}", path.display()))?;
            texts.push((path.display().to_string(), text));
        }
        let custom = CustomRules::from_files(&texts).map_err(|e| e.to_string())?;
        let (crs, unsupported) = match (&file.crs_dir, file.mode) {
            (Some(dir), mode) if mode != Mode::Off => {
                let config = WafConfig {
                    mode,
                    paranoia: file.paranoia,
                    inbound_threshold: file.inbound_threshold,
                    ..WafConfig::default()
                };
                let rs =
                    waf_rules::crs::load_dir(&resolve(dir), &config).map_err(|e| e.to_string())?;
                let unsupported = rs.unsupported().to_vec();
                (Some(rs), unsupported)
            }
            _ => (None, Vec::new()),
        };
        Ok(OriginWaf {
            mode: file.mode,
            crs,
            custom,
            limiter: RateLimiter::new(file.rate_limit_keys),
            unsupported,
        })
    }

    /// Judges one request at `now_ms` (Unix milliseconds).
    pub fn inspect(&self, req: &HttpRequest, now_ms: u64) -> Outcome {
        let mut out = Outcome::default();
        let verdict = self.custom.evaluate(req, now_ms, &self.limiter);
        out.matches.extend(
            verdict
                .matches
                .iter()
                .map(|m| (m.rule_id.to_string(), m.action.as_str(), m.mode.as_str())),
        );
        out.stop = match verdict.action {
            CustomAction::Block { .. } => Some((403, None)),
            CustomAction::RateLimited {
                retry_after_secs, ..
            } => Some((429, Some(retry_after_secs))),
            CustomAction::Pass | CustomAction::Allow { .. } => None,
        };
        if verdict
            .global_limits
            .iter()
            .any(|g| g.mode == RuleMode::Enforce)
        {
            tracing::debug!("global rate limits are counted per process at the origin");
        }
        if out.stop.is_some() || verdict.skip_managed {
            return out;
        }
        if let Some(crs) = &self.crs {
            let v = crs.evaluate(req);
            let (action, mode) = match (v.action, self.mode) {
                (Action::Block, _) => ("block", "enforce"),
                (_, Mode::Detect) => ("block", "shadow"),
                _ => ("log", "enforce"),
            };
            out.matches
                .extend(v.matches.iter().map(|m| (m.id.to_string(), action, mode)));
            if v.action == Action::Block {
                out.stop = Some((403, None));
            }
        }
        out
    }
}

/// The engine's view of a request that reached the proxy. The client address is the first
/// `X-Forwarded-For` entry (set by the edge, which is the only signed sender) or the peer.
pub fn http_request(
    req: &pingora::http::RequestHeader,
    body: Vec<u8>,
    peer: Option<IpAddr>,
) -> HttpRequest {
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let uri = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    view(
        req.method.as_str(),
        uri,
        format!("{:?}", req.version),
        headers,
        body,
        peer,
    )
}

/// The engine's view of a request from its parts (header names lowercase).
pub fn view(
    method: &str,
    uri: &str,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    peer: Option<IpAddr>,
) -> HttpRequest {
    let first = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let forwarded = first("x-forwarded-for")
        .and_then(|v| v.split(',').next())
        .and_then(|ip| ip.trim().parse().ok());
    let country = first("cf-ipcountry").cloned();
    HttpRequest {
        method: method.to_owned(),
        uri: uri.to_owned(),
        version,
        headers,
        body,
        client_ip: forwarded.or(peer),
        country,
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The WAF phase: reads the body (up to [`MAX_INSPECTED_BODY`], kept for the backend by pingora's
/// retry buffer), judges the request, counts every match in the metrics and returns the refusal
/// for a stopped request.
pub async fn check(
    session: &mut pingora::proxy::Session,
    waf: &OriginWaf,
    metrics: &crate::metrics::Metrics,
    request_id: &str,
) -> pingora::Result<Option<crate::phases::Refusal>> {
    let refusal = |status: u16, reason: &str, retry_after: Option<u32>| crate::phases::Refusal {
        status,
        reason: reason.to_owned(),
        retry_after,
    };
    let req = session.req_header();
    let declared = req
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_INSPECTED_BODY) {
        return Ok(Some(refusal(
            413,
            "request body too large to inspect",
            None,
        )));
    }
    let mut body = Vec::new();
    if !session.as_mut().is_body_empty() {
        session.as_mut().enable_retry_buffering();
        while let Some(chunk) = session.read_request_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_INSPECTED_BODY {
                return Ok(Some(refusal(
                    413,
                    "request body too large to inspect",
                    None,
                )));
            }
        }
    }
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let view = http_request(session.req_header(), body, peer);
    Ok(judge(waf, &view, metrics, request_id))
}

/// Judges a request's view, counts every match in the metrics (and logs them with the request
/// id) and returns the refusal for a stopped request.
pub fn judge(
    waf: &OriginWaf,
    view: &HttpRequest,
    metrics: &crate::metrics::Metrics,
    request_id: &str,
) -> Option<crate::phases::Refusal> {
    let refusal = |status: u16, reason: &str, retry_after: Option<u32>| crate::phases::Refusal {
        status,
        reason: reason.to_owned(),
        retry_after,
    };
    let now_ms = unix_ms();
    let outcome = waf.inspect(view, now_ms);
    for (rule, action, mode) in &outcome.matches {
        metrics.record_waf_match(rule, action, mode);
    }
    if !outcome.matches.is_empty() {
        tracing::info!(request_id, rules = ?outcome.matches, stopped = outcome.stop.is_some(), "waf matches");
    }
    outcome.stop.map(|(status, retry_after)| match status {
        429 => refusal(
            429,
            "too many requests",
            retry_after.map(|s| s.max(1).min(u64::from(u32::MAX)) as u32),
        ),
        _ => refusal(status, "blocked by the shop's security rules", None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waf(rules: &str) -> OriginWaf {
        let dir =
            std::env::temp_dir().join(format!("origin-waf-{}-{}", std::process::id(), rules.len()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("r.toml"), rules).expect("rules");
        let file: FileWaf = toml::from_str("rules = [\"r.toml\"]").expect("section");
        OriginWaf::load(file, &dir).expect("loads")
    }

    fn get(path: &str, ip: &str) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            uri: path.into(),
            version: "HTTP/1.1".into(),
            headers: vec![("host".into(), "shop.example".into())],
            body: Vec::new(),
            client_ip: ip.parse().ok(),
            country: None,
        }
    }

    const RULES: &str = r#"
[[rule]]
id = "no-admin"
expression = 'starts_with(http.request.uri.path, "/admin")'
action = "block"

[[rule]]
id = "watch-search"
expression = 'http.request.uri.path eq "/search"'
action = "block"
mode = "shadow"
"#;

    #[test]
    fn custom_rules_block_and_shadow() {
        let w = waf(RULES);
        let blocked = w.inspect(&get("/admin/x", "203.0.113.1"), 0);
        assert_eq!(blocked.stop, Some((403, None)));
        assert_eq!(
            blocked.matches,
            vec![("no-admin".to_owned(), "block", "enforce")]
        );
        let shadowed = w.inspect(&get("/search?q=1", "203.0.113.1"), 0);
        assert_eq!(shadowed.stop, None);
        assert_eq!(
            shadowed.matches,
            vec![("watch-search".to_owned(), "block", "shadow")]
        );
    }

    #[test]
    fn a_broken_rules_file_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("origin-waf-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("bad.toml"),
            "[[rule]]\nid = \"x\"\nexpression = 'http.nope eq 1'\naction = \"block\"\n",
        )
        .expect("rules");
        let file: FileWaf = toml::from_str("rules = [\"bad.toml\"]").expect("section");
        let err = OriginWaf::load(file, &dir).expect_err("refused");
        assert!(err.contains("bad.toml"), "{err}");
    }
}
