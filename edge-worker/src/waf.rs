//! The WAF at the edge: the security team's custom rules and rate limits, then the OWASP CRS,
//! both compiled into the worker at build time (see `build.rs`) and run by `waf-rules`.
//!
//! The engine is built once per isolate, on the first request that needs it, and kept: rules
//! never change without a deploy. Rate limits count per isolate (memory capped at
//! [`MAX_LIMIT_KEYS`] keys); a rule that needs one global count asks for a Durable Object
//! (not wired yet: such rules are counted per isolate and the log says so).
//!
//! A block answers 403 with a reference id (the request id, which the logs tie to the rule
//! ids); a rate limit answers 429 with `Retry-After`. Never the rule internals.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;

use waf_rules::custom::GlobalLimitCheck;
use waf_rules::{
    Action, CustomAction, CustomRules, HttpRequest, Mode, RateLimiter, RuleSet, WafConfig,
};
use worker::{Env, Response, Result};

use crate::error::EdgeError;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_rules.rs"));
}

/// Keys the per-isolate rate limiter keeps at most (least recently used evicted first).
pub const MAX_LIMIT_KEYS: usize = 50_000;
/// Longest request body the edge accepts and forwards.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// WAF settings of this deployment (vars `WAF_MODE`: off | detect | block, default block;
/// `WAF_PARANOIA`: 1..=4, default 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WafSettings {
    /// What CRS does with a request over the threshold.
    pub mode: Mode,
    /// CRS paranoia level.
    pub paranoia: u8,
}

impl WafSettings {
    /// Reads the settings from the environment.
    pub fn from_env(env: &Env) -> std::result::Result<Self, EdgeError> {
        let mode = match env.var("WAF_MODE").map(|v| v.to_string()) {
            Err(_) => Mode::Block,
            Ok(v) => match v.as_str() {
                "off" => Mode::Off,
                "detect" => Mode::Detect,
                "block" => Mode::Block,
                other => {
                    return Err(EdgeError::Misconfigured(format!(
                        "WAF_MODE must be off, detect or block, got {other:?}"
                    )))
                }
            },
        };
        let paranoia = match env.var("WAF_PARANOIA").map(|v| v.to_string()) {
            Err(_) => 1,
            Ok(v) => v
                .parse::<u8>()
                .ok()
                .filter(|p| (1..=4).contains(p))
                .ok_or_else(|| {
                    EdgeError::Misconfigured(format!("WAF_PARANOIA must be 1..=4, got {v:?}"))
                })?,
        };
        Ok(WafSettings { mode, paranoia })
    }
}

/// The compiled rules of this isolate.
pub struct Engine {
    settings: WafSettings,
    crs: Option<RuleSet>,
    custom: CustomRules,
    limiter: RateLimiter,
    counts: RefCell<BTreeMap<(String, &'static str, &'static str), u64>>,
}

thread_local! {
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
}

/// The engine for `settings`, built on first use in this isolate.
pub fn engine(settings: &WafSettings) -> std::result::Result<Rc<Engine>, EdgeError> {
    if let Some(e) = ENGINE
        .with(|e| e.borrow().clone())
        .filter(|e| &e.settings == settings)
    {
        return Ok(e);
    }
    let e = Rc::new(build(settings)?);
    ENGINE.with(|slot| *slot.borrow_mut() = Some(e.clone()));
    Ok(e)
}

fn owned(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect()
}

fn build(settings: &WafSettings) -> std::result::Result<Engine, EdgeError> {
    let custom = CustomRules::from_files(embedded::RULE_FILES)
        .map_err(|e| EdgeError::Misconfigured(format!("custom rules: {e}")))?;
    let crs = match (settings.mode, embedded::CRS_SOURCE) {
        (Mode::Off, _) => None,
        (_, None) => {
            worker::console_warn!(
                "WAF: this worker was built without the OWASP CRS; only custom rules run"
            );
            None
        }
        (mode, Some(source)) => {
            let config = WafConfig {
                mode,
                paranoia: settings.paranoia,
                ..WafConfig::default()
            };
            // Matchers are built on first use: the isolate's first request pays for the load,
            // and the prefilter keeps most of them from ever running on benign traffic. The
            // build script loads the same files eagerly, so a pattern that cannot be built
            // fails the build, not a request, and hands over its analysis of every `@rx`
            // pattern so that this load does not parse them again.
            let hints = waf_rules::prefilter::RxHints::from_rows(embedded::RX_HINTS);
            let rs = RuleSet::from_sources_hinted(
                &owned(embedded::CRS_FILES),
                &owned(embedded::CRS_DATA),
                &config,
                waf_rules::operator::Compile::Lazy,
                Some(&hints),
            )
            .map_err(|e| EdgeError::Misconfigured(format!("CRS from {source}: {e}")))?;
            for (id, why) in rs.unsupported() {
                worker::console_warn!("WAF: CRS rule {id} cannot run here: {why}");
            }
            Some(rs)
        }
    };
    Ok(Engine {
        settings: settings.clone(),
        crs,
        custom,
        limiter: RateLimiter::new(MAX_LIMIT_KEYS),
        counts: RefCell::new(BTreeMap::new()),
    })
}

/// What the WAF decided.
pub enum Decision {
    /// Forward the request.
    Pass,
    /// Answer with this status (403 or 429); `retry_after` for 429.
    Stop {
        /// 403 or 429.
        status: u16,
        /// Seconds for `Retry-After`.
        retry_after: Option<u64>,
    },
}

impl Engine {
    /// Judges one request at `now_ms`, logs what matched (with the request id) and counts it.
    /// Also returns the checks of global rate limits the caller must make against the
    /// Durable Object ([`crate::limits`]) when the request is not stopped here.
    pub fn inspect(
        &self,
        req: &HttpRequest,
        now_ms: u64,
        request_id: &str,
    ) -> (Decision, Vec<GlobalLimitCheck>) {
        let custom = self.custom.evaluate(req, now_ms, &self.limiter);
        for m in &custom.matches {
            self.count(&m.rule_id, m.action.as_str(), m.mode.as_str());
        }
        let mut decision = match custom.action {
            CustomAction::Block { .. } => Decision::Stop {
                status: 403,
                retry_after: None,
            },
            CustomAction::RateLimited {
                retry_after_secs, ..
            } => Decision::Stop {
                status: 429,
                retry_after: Some(retry_after_secs),
            },
            CustomAction::Pass | CustomAction::Allow { .. } => Decision::Pass,
        };
        let mut crs_ids = Vec::new();
        let mut score = 0;
        if matches!(decision, Decision::Pass) && !custom.skip_managed {
            if let Some(crs) = &self.crs {
                let verdict = crs.evaluate(req);
                score = verdict.score;
                crs_ids = verdict.matches.iter().map(|m| m.id).collect();
                let (action, mode) = match (verdict.action, self.settings.mode) {
                    (Action::Block, _) => ("block", "enforce"),
                    (_, Mode::Detect) if !crs_ids.is_empty() => ("block", "shadow"),
                    _ => ("log", "enforce"),
                };
                for id in &crs_ids {
                    self.count(&id.to_string(), action, mode);
                }
                if verdict.action == Action::Block {
                    decision = Decision::Stop {
                        status: 403,
                        retry_after: None,
                    };
                }
            }
        }
        if !custom.matches.is_empty() || !crs_ids.is_empty() {
            let rules: Vec<_> = custom
                .matches
                .iter()
                .map(|m| serde_json::json!({ "rule": &*m.rule_id, "action": m.action.as_str(), "mode": m.mode.as_str() }))
                .collect();
            let outcome = match decision {
                Decision::Pass => "pass",
                Decision::Stop { status: 429, .. } => "rate_limit",
                Decision::Stop { .. } => "block",
            };
            worker::console_log!(
                "{}",
                serde_json::json!({ "waf": outcome, "request_id": request_id, "custom": rules, "crs": crs_ids, "score": score })
            );
        }
        let global = match decision {
            Decision::Pass => custom.global_limits,
            Decision::Stop { .. } => Vec::new(),
        };
        (decision, global)
    }

    /// Counts a match found outside [`Engine::inspect`] (an exceeded global limit).
    pub fn count_global(&self, rule: &str, mode: &'static str) {
        self.count(rule, "rate_limit", mode);
    }

    fn count(&self, rule: &str, action: &'static str, mode: &'static str) {
        *self
            .counts
            .borrow_mut()
            .entry((rule.to_owned(), action, mode))
            .or_default() += 1;
    }

    /// Matches counted by this isolate, as `{rule, action, mode, count}` objects.
    pub fn counts(&self) -> serde_json::Value {
        let counts = self.counts.borrow();
        serde_json::Value::Array(
            counts
                .iter()
                .map(|((rule, action, mode), n)| serde_json::json!({ "rule": rule, "action": action, "mode": mode, "count": n }))
                .collect(),
        )
    }

    /// A summary for the health endpoint.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": format!("{:?}", self.settings.mode).to_lowercase(),
            "paranoia": self.settings.paranoia,
            "crs": embedded::CRS_SOURCE.map(|_| self.crs.as_ref().map_or(0, RuleSet::rule_count)),
            "custom_rules": self.custom.len(),
            "rate_limit_keys": self.limiter.len(),
        })
    }
}

/// The engine's view of a request.
pub fn http_request(
    method: &str,
    path_and_query: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
    client_ip: Option<IpAddr>,
    country: Option<String>,
) -> HttpRequest {
    HttpRequest {
        method: method.to_owned(),
        uri: path_and_query.to_owned(),
        version: "HTTP/1.1".to_owned(),
        headers,
        body: body.to_vec(),
        client_ip,
        country,
    }
}

/// The answer for a stopped request: a short page (or JSON) with the reference id, never the
/// rule that matched.
pub fn stop_response(
    status: u16,
    retry_after: Option<u64>,
    request_id: &str,
    wants_json: bool,
) -> Result<Response> {
    let (title, text) = if status == 429 {
        ("Too many requests", "You are sending requests faster than the shop allows. Please wait a moment and try again.")
    } else {
        ("Request blocked", "This request was blocked by the shop's security rules. If you think this is a mistake, contact support and quote the reference below.")
    };
    let resp = if wants_json {
        Response::from_json(&serde_json::json!({ "error": title, "reference": request_id }))?
    } else {
        Response::from_html(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1><p>{text}</p><p>Reference: <code>{request_id}</code></p></body></html>"
        ))?
    };
    let resp = resp.with_status(status);
    let h = resp.headers();
    h.set("cache-control", "no-store")?;
    h.set(edge_signature::REQUEST_ID_HEADER, request_id)?;
    if let Some(secs) = retry_after {
        h.set("retry-after", &secs.max(1).to_string())?;
    }
    Ok(resp)
}
