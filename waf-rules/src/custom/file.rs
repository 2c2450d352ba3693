//! The rules file format (TOML). These structs mirror the file; [`super::load`] turns them into the
//! validated [`super::CustomRules`].
//!
//! ```toml
//! [lists.office]                 # a named list: kind = "ip" (addresses, CIDR ranges) or "string"
//! kind = "ip"
//! items = ["192.0.2.0/24", "2001:db8:1::/48"]
//!
//! [[rule]]
//! id = "admin-office-only"       # stable id: logs, metrics and tests name it
//! description = "The back office is reachable from the office only"
//! expression = '''starts_with(http.request.uri.path, "/admin") and not ip.src in $office'''
//! action = "block"               # block | log | allow | rate_limit   (challenge is refused)
//! mode = "enforce"               # enforce (default) | shadow: evaluate and record, change nothing
//! expires = 2027-01-01           # optional: the rule stops applying at 00:00 UTC that day
//!
//! [[rule.test]]                  # in-file test cases, run by `waf-custom test`
//! name = "a visitor is kept out"
//! uri = "/admin/orders"
//! ip = "198.51.100.7"
//! expect = "block"               # pass | allow | block | rate-limit | log
//!
//! [[rule]]
//! id = "login-brute-force"
//! expression = 'http.request.method eq "POST" and http.request.uri.path eq "/login"'
//! action = "rate_limit"
//! [rule.rate-limit]
//! key = ["ip"]                   # any of: ip, path, host, country, header:NAME, cookie:NAME, arg:NAME
//! requests = 5                   # per period
//! period = 60                    # seconds
//! mitigation-timeout = 600       # seconds to keep rejecting once exceeded (default 0)
//! on-exceed = "429"              # "429" (Too Many Requests + Retry-After) or "block" (403)
//! scope = "local"                # local (per process / isolate) or global (host keeps a shared count)
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct FileFormat {
    /// Named lists, referenced as `$name` in expressions.
    #[serde(default)]
    pub lists: BTreeMap<String, Spanned<ListFormat>>,
    /// Rules, in evaluation order.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RuleFormat>>,
    /// Test cases about the whole ruleset.
    #[serde(default, rename = "test")]
    pub tests: Vec<Spanned<TestFormat>>,
}

/// `ip` or `string`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ListKindFormat {
    Ip,
    String,
}

/// One named list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ListFormat {
    /// What the list holds.
    pub kind: ListKindFormat,
    /// What the list is for.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    /// The items: addresses / CIDR ranges, or strings.
    pub items: Vec<Spanned<String>>,
}

/// What a rule does when its expression holds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ActionFormat {
    Block,
    Log,
    Allow,
    Challenge,
    #[serde(alias = "rate-limit")]
    RateLimit,
}

/// `enforce` or `shadow`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ModeFormat {
    #[default]
    Enforce,
    Shadow,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RuleFormat {
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: String,
    pub expression: Spanned<String>,
    pub action: Spanned<ActionFormat>,
    #[serde(default)]
    pub mode: ModeFormat,
    #[serde(default)]
    pub expires: Option<Spanned<toml::value::Datetime>>,
    #[serde(default)]
    pub rate_limit: Option<Spanned<RateLimitFormat>>,
    #[serde(default, rename = "test")]
    pub tests: Vec<Spanned<TestFormat>>,
}

/// `"429"` or `"block"`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub(crate) enum OnExceedFormat {
    #[default]
    #[serde(rename = "429")]
    TooManyRequests,
    #[serde(rename = "block")]
    Block,
}

/// `local` or `global`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ScopeFormat {
    #[default]
    Local,
    Global,
}

/// The rate limit of a `rate_limit` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RateLimitFormat {
    pub key: Vec<Spanned<String>>,
    pub requests: Spanned<u32>,
    pub period: Spanned<u64>,
    #[serde(default)]
    pub mitigation_timeout: u64,
    #[serde(default)]
    pub on_exceed: OnExceedFormat,
    #[serde(default)]
    pub scope: ScopeFormat,
}

/// What a test expects.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ExpectFormat {
    Pass,
    Allow,
    Block,
    RateLimit,
    Log,
}

fn default_method() -> String {
    "GET".into()
}

fn default_uri() -> String {
    "/".into()
}

fn one() -> u32 {
    1
}

/// One test case: a request (sent `repeat` times) and the expected outcome of the last one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct TestFormat {
    pub name: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_uri")]
    pub uri: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub ip: Option<Spanned<String>>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default = "one")]
    pub repeat: u32,
    #[serde(default)]
    pub interval_ms: u64,
    pub expect: ExpectFormat,
    /// For file-level tests: the rule expected to decide (or to log).
    #[serde(default)]
    pub rule: Option<String>,
}
