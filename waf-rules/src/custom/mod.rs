//! A security team's own rules: a TOML file of named lists, rules in the [expression
//! language](crate::expr), rate limits and in-file tests, compiled into one [`CustomRules`].
//!
//! The file format is documented in [`file`](self#the-file-format). Loading is strict: unknown keys,
//! unknown fields or lists, ill-typed expressions, bad addresses, duplicate ids, unsupported actions
//! (`challenge`: this deployment has no challenge page) are errors naming the file, line and column,
//! and a ruleset that fails to load never yields a partial [`CustomRules`].
//!
//! **Evaluation** ([`CustomRules::evaluate`]) is pure: the host passes the request, the time and a
//! [`LimitStore`]. Rules run in file order (several files: in the order given), then the rate-limit
//! rules in file order. The first *enforced* `block`, `allow` or exceeded rate limit decides and
//! stops evaluation; `log` rules and every rule in `shadow` mode are recorded in
//! [`CustomVerdict::matches`] and change nothing. An enforced `allow` is an exception: the remaining
//! custom rules, the rate limits and the managed rules (CRS: see [`CustomVerdict::skip_managed`]) are
//! skipped for that request.
//!
//! # Use from a host
//!
//! ```
//! use waf_rules::{CustomAction, CustomRules, HttpRequest, RateLimiter};
//!
//! let text = r#"
//! [[rule]]
//! id = "login-brute-force"
//! expression = 'http.request.method eq "POST" and http.request.uri.path eq "/login"'
//! action = "rate_limit"
//! [rule.rate-limit]
//! key = ["ip"]
//! requests = 5
//! period = 60
//! "#;
//! // Load once per ruleset version; on error keep the last good ruleset and log `e`
//! // (it reads `file:line:column: ...`).
//! let rules = CustomRules::from_toml("shop.toml", text).expect("valid rules");
//! // One limiter per process (origin) or isolate (edge), shared by every request.
//! let limiter = RateLimiter::new(100_000);
//! let req = HttpRequest {
//!     method: "POST".into(),
//!     uri: "/login".into(),
//!     client_ip: "203.0.113.5".parse().ok(),
//!     ..Default::default()
//! };
//! let now_ms = 1_790_000_000_000; // the host's clock, Unix milliseconds
//! for _ in 0..5 {
//!     assert_eq!(rules.evaluate(&req, now_ms, &limiter).action, CustomAction::Pass);
//! }
//! let verdict = rules.evaluate(&req, now_ms, &limiter);
//! assert_eq!(verdict.action.status(), Some(429));
//! if let CustomAction::RateLimited { retry_after_secs, .. } = verdict.action {
//!     assert_eq!(retry_after_secs, 12); // answer 429 with `Retry-After: 12`
//! }
//! // Count every match for metrics: waf_matches_total{rule, action, mode}.
//! for m in &verdict.matches {
//!     let _labels = (&*m.rule_id, m.action.as_str(), m.mode.as_str());
//! }
//! // `verdict.skip_managed` tells the host to skip CRS (an `allow` exception matched).
//! ```
//!
//! # The file format
#![doc = "```toml"]
#![doc = include_str!("../../examples/shop-rules.toml")]
#![doc = "```"]

mod file;
mod load;
mod testing;

#[cfg(not(target_arch = "wasm32"))]
pub mod cli;

use std::net::IpAddr;
use std::sync::Arc;

pub use load::Error;
pub use testing::{TestOutcome, TestReport};

use crate::expr::{Program, RequestView};
use crate::input::HttpRequest;
use crate::ratelimit::{LimitStore, Quota};

/// What a rule does when its expression holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleAction {
    /// Answer 403.
    Block,
    /// Record the match only.
    Log,
    /// Exception: skip the remaining custom rules, the rate limits and the managed rules.
    Allow,
    /// Count the request against the rule's rate limit.
    RateLimit,
}

impl RuleAction {
    /// The name used in files, logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Block => "block",
            RuleAction::Log => "log",
            RuleAction::Allow => "allow",
            RuleAction::RateLimit => "rate_limit",
        }
    }
}

/// Whether a rule acts or only records what it would have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The action applies.
    Enforce,
    /// The rule is evaluated and its matches recorded; nothing changes for the request.
    Shadow,
}

impl Mode {
    /// The name used in files, logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// One part of a rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// The client address (`ip`).
    Ip,
    /// The normalised path (`path`).
    Path,
    /// The `Host` header (`host`).
    Host,
    /// The client's country (`country`).
    Country,
    /// The first value of a header (`header:NAME`).
    Header(String),
    /// A cookie (`cookie:NAME`).
    Cookie(String),
    /// The first value of a query argument (`arg:NAME`).
    Arg(String),
}

/// What happens when a rate limit is exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnExceed {
    /// 429 Too Many Requests with `Retry-After`.
    TooManyRequests,
    /// 403, like a block.
    Block,
}

/// Where the count of a rate limit is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitScope {
    /// In the [`LimitStore`] passed to [`CustomRules::evaluate`] (per process / per isolate).
    Local,
    /// Also in one shared place: the verdict lists the check in
    /// [`CustomVerdict::global_limits`] for the host to forward (at the edge, to a Durable Object).
    Global,
}

/// The rate limit of a `rate_limit` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSpec {
    /// Requests per period, period, mitigation timeout.
    pub quota: Quota,
    /// The key: which requests share a count.
    pub key: Vec<KeyPart>,
    /// What to answer once exceeded.
    pub on_exceed: OnExceed,
    /// Where the count is kept.
    pub scope: LimitScope,
}

/// Where something was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file name as given to the loader.
    pub file: Arc<str>,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Stable id.
    pub id: Arc<str>,
    /// What it is for.
    pub description: String,
    /// The expression as written.
    pub expression: String,
    /// What it does.
    pub action: RuleAction,
    /// Enforce or shadow.
    pub mode: Mode,
    /// The rule no longer applies from this time on (Unix milliseconds).
    pub expires_ms: Option<u64>,
    /// For `rate_limit` rules.
    pub rate_limit: Option<RateLimitSpec>,
    /// Where the rule starts in its file.
    pub location: Location,
}

/// A rule that matched, for logs and metrics (`waf_matches_total{rule,action,mode}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// The rule's id.
    pub rule_id: Arc<str>,
    /// Its action (`rate_limit` for an exceeded limit).
    pub action: RuleAction,
    /// Whether it acted or only recorded.
    pub mode: Mode,
}

/// The decision of the custom rules for one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CustomAction {
    /// No custom rule decided: go on to the managed rules.
    #[default]
    Pass,
    /// An `allow` exception matched: let the request through, skip the managed rules.
    Allow {
        /// The `allow` rule.
        rule_id: Arc<str>,
    },
    /// Answer 403 (with a reference id the host makes up and logs).
    Block {
        /// The rule that blocked.
        rule_id: Arc<str>,
    },
    /// Answer 429 with `Retry-After: retry_after_secs`.
    RateLimited {
        /// The rate-limit rule.
        rule_id: Arc<str>,
        /// Seconds until the client may retry (at least 1).
        retry_after_secs: u64,
    },
}

impl CustomAction {
    /// The status to answer with, if the request is stopped: 403 or 429.
    pub fn status(&self) -> Option<u16> {
        match self {
            CustomAction::Block { .. } => Some(403),
            CustomAction::RateLimited { .. } => Some(429),
            CustomAction::Pass | CustomAction::Allow { .. } => None,
        }
    }

    /// The deciding rule, if any.
    pub fn rule_id(&self) -> Option<&str> {
        match self {
            CustomAction::Pass => None,
            CustomAction::Allow { rule_id }
            | CustomAction::Block { rule_id }
            | CustomAction::RateLimited { rule_id, .. } => Some(rule_id),
        }
    }
}

/// A rate-limit check the host should also make against a shared store (rules with
/// `scope = "global"`); the local check has already passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalLimitCheck {
    /// The rate-limit rule.
    pub rule_id: Arc<str>,
    /// The key, already including the rule id: pass it to the shared store's [`LimitStore::check`].
    pub key: Vec<u8>,
    /// The quota.
    pub quota: Quota,
    /// What to answer if the shared store says the limit is exceeded (unless the rule is in shadow
    /// mode: then only record it).
    pub on_exceed: OnExceed,
    /// The rule's mode.
    pub mode: Mode,
}

/// Everything the custom rules decided about one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomVerdict {
    /// What to do.
    pub action: CustomAction,
    /// True when an enforced `allow` matched: the host must not run the managed rules (CRS).
    pub skip_managed: bool,
    /// Every rule that matched, enforced or shadow, in evaluation order.
    pub matches: Vec<RuleMatch>,
    /// Checks for the host to make against a shared store.
    pub global_limits: Vec<GlobalLimitCheck>,
}

/// A compiled, validated set of custom rules. Immutable and `Send + Sync`: build it once per
/// ruleset version and share it; replace it whole when a new version loads.
#[derive(Debug, Clone)]
pub struct CustomRules {
    rules: Vec<Rule>,
    program: Program,
    tests: Vec<testing::TestCase>,
}

impl CustomRules {
    /// Loads one rules file. `file_name` is used in error messages and test reports.
    pub fn from_toml(file_name: &str, text: &str) -> Result<CustomRules, Error> {
        load::load(&[(file_name, text)])
    }

    /// Loads several files as one ruleset: their lists share one namespace, rule ids must be
    /// unique across them, and rules keep the order of the files.
    pub fn from_files<N: AsRef<str>, T: AsRef<str>>(
        files: &[(N, T)],
    ) -> Result<CustomRules, Error> {
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(n, t)| (n.as_ref(), t.as_ref()))
            .collect();
        load::load(&files)
    }

    /// A ruleset with no rules: every request passes.
    pub fn empty() -> CustomRules {
        CustomRules {
            rules: Vec::new(),
            program: crate::expr::ProgramBuilder::new().build(),
            tests: Vec::new(),
        }
    }

    /// The rules in evaluation order (plain rules, then rate-limit rules).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of in-file test cases.
    pub fn test_count(&self) -> usize {
        self.tests.len()
    }

    /// Decides about one request at `now_ms` (Unix milliseconds), counting rate limits in `limits`.
    pub fn evaluate(
        &self,
        req: &HttpRequest,
        now_ms: u64,
        limits: &dyn LimitStore,
    ) -> CustomVerdict {
        let view = RequestView::new(req);
        let mut ev = self.program.start(&view);
        let candidates: Vec<u32> = ev.candidates().to_vec();
        let mut verdict = CustomVerdict::default();
        for ri in candidates {
            let Some(rule) = self.rules.get(ri as usize) else {
                continue;
            };
            if rule.expires_ms.is_some_and(|exp| now_ms >= exp) {
                continue;
            }
            if !ev.eval(ri as usize) {
                continue;
            }
            let record = |verdict: &mut CustomVerdict| {
                verdict.matches.push(RuleMatch {
                    rule_id: rule.id.clone(),
                    action: rule.action,
                    mode: rule.mode,
                });
            };
            let enforce = rule.mode == Mode::Enforce;
            match (rule.action, &rule.rate_limit) {
                (RuleAction::RateLimit, Some(spec)) => {
                    let key = limit_key(&rule.id, &spec.key, &view);
                    let decision = limits.check(&key, &spec.quota, now_ms);
                    if decision.is_limited() {
                        record(&mut verdict);
                        if enforce {
                            verdict.action = match spec.on_exceed {
                                OnExceed::TooManyRequests => CustomAction::RateLimited {
                                    rule_id: rule.id.clone(),
                                    retry_after_secs: decision.retry_after_secs(),
                                },
                                OnExceed::Block => CustomAction::Block {
                                    rule_id: rule.id.clone(),
                                },
                            };
                            return verdict;
                        }
                    } else if spec.scope == LimitScope::Global {
                        verdict.global_limits.push(GlobalLimitCheck {
                            rule_id: rule.id.clone(),
                            key,
                            quota: spec.quota,
                            on_exceed: spec.on_exceed,
                            mode: rule.mode,
                        });
                    }
                }
                (RuleAction::RateLimit, None) | (RuleAction::Log, _) => record(&mut verdict),
                (RuleAction::Block, _) => {
                    record(&mut verdict);
                    if enforce {
                        verdict.action = CustomAction::Block {
                            rule_id: rule.id.clone(),
                        };
                        return verdict;
                    }
                }
                (RuleAction::Allow, _) => {
                    record(&mut verdict);
                    if enforce {
                        verdict.action = CustomAction::Allow {
                            rule_id: rule.id.clone(),
                        };
                        verdict.skip_managed = true;
                        return verdict;
                    }
                }
            }
        }
        verdict
    }

    /// Runs every in-file test case; each case starts with a fresh rate limiter, its requests sent
    /// at `now_ms`, `now_ms + interval`, …
    pub fn run_tests(&self, now_ms: u64) -> TestReport {
        testing::run(self, now_ms)
    }

    /// Evaluates every rule on its own, without the shared passes: the naive baseline for the
    /// benchmark, and a cross-check in tests. Returns the ids of the rules whose expression holds.
    pub fn matching_rules_naive(&self, req: &HttpRequest) -> Vec<Arc<str>> {
        let view = RequestView::new(req);
        (0..self.rules.len())
            .filter(|&i| self.program.eval_naive(i, &view))
            .map(|i| self.rules[i].id.clone())
            .collect()
    }

    /// The ids of the rules whose expression holds, through the shared passes (ignores actions,
    /// modes, expiry and rate limits).
    pub fn matching_rules(&self, req: &HttpRequest) -> Vec<Arc<str>> {
        let view = RequestView::new(req);
        let mut ev = self.program.start(&view);
        let candidates: Vec<u32> = ev.candidates().to_vec();
        candidates
            .into_iter()
            .filter(|&i| ev.eval(i as usize))
            .filter_map(|i| self.rules.get(i as usize).map(|r| r.id.clone()))
            .collect()
    }
}

impl Default for CustomRules {
    fn default() -> Self {
        CustomRules::empty()
    }
}

/// The bytes that identify a rate-limit bucket: the rule id, then each key part.
fn limit_key(rule_id: &str, parts: &[KeyPart], view: &RequestView<'_>) -> Vec<u8> {
    use crate::expr::Field;
    let mut key = Vec::with_capacity(64);
    key.extend_from_slice(rule_id.as_bytes());
    for part in parts {
        key.push(0);
        let ip_text;
        let value: &str = match part {
            KeyPart::Ip => {
                ip_text = view
                    .ip()
                    .map(|ip: IpAddr| ip.to_string())
                    .unwrap_or_default();
                &ip_text
            }
            KeyPart::Path => view.scalar(Field::UriPath).unwrap_or(""),
            KeyPart::Host => view.scalar(Field::Host).unwrap_or(""),
            KeyPart::Country => view.scalar(Field::IpSrcCountry).unwrap_or(""),
            KeyPart::Header(n) => view.array(Field::Headers, n).next().unwrap_or(""),
            KeyPart::Cookie(n) => view.array(Field::Cookies, n).next().unwrap_or(""),
            KeyPart::Arg(n) => view.array(Field::UriArgs, n).next().unwrap_or(""),
        };
        // Bounded: a key never holds more than 256 bytes of one attacker-chosen value.
        let value = value.as_bytes();
        key.extend_from_slice(&value[..value.len().min(256)]);
    }
    key
}
