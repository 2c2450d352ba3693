//! Loading: TOML → [`FileFormat`] → validated, compiled [`CustomRules`], with every error located.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use toml::Spanned;

use super::file::{
    ActionFormat, ExpectFormat, FileFormat, ListKindFormat, ModeFormat, OnExceedFormat,
    RateLimitFormat, ScopeFormat, TestFormat,
};
use super::testing::{Expect, TestCase};
use super::{
    CustomRules, KeyPart, LimitScope, Location, Mode, OnExceed, RateLimitSpec, Rule, RuleAction,
};
use crate::expr::{self, line_col, ListKind, ListValues, ParseError, ProgramBuilder};
use crate::input::HttpRequest;
use crate::ratelimit::Quota;

/// A rules file that cannot be loaded. Every variant names the file, line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not valid TOML, or not the shape of a rules file (unknown key, wrong type, missing field).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// File name.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A rule's expression does not parse or does not type-check.
    #[error("{file}:{line}:{column}: in the expression of rule `{rule}`: {source}")]
    Expression {
        /// File name.
        file: String,
        /// 1-based line in the file.
        line: usize,
        /// 1-based column in the file.
        column: usize,
        /// The rule's id.
        rule: String,
        /// The expression error (its own line and column count inside the expression).
        #[source]
        source: Box<ParseError>,
    },
    /// Well-formed but invalid: a bad address, a duplicate id, an unsupported action, …
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// File name.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl Error {
    /// The file, line and column the error points at.
    pub fn location(&self) -> (&str, usize, usize) {
        match self {
            Error::Syntax {
                file, line, column, ..
            }
            | Error::Expression {
                file, line, column, ..
            }
            | Error::Invalid {
                file, line, column, ..
            } => (file, *line, *column),
        }
    }
}

struct Src<'a> {
    name: &'a str,
    text: &'a str,
}

impl Src<'_> {
    fn loc(&self, offset: usize) -> Location {
        let (line, column) = line_col(self.text, offset);
        Location {
            file: Arc::from(self.name),
            line,
            column,
        }
    }

    fn invalid(&self, offset: usize, message: impl Into<String>) -> Error {
        let (line, column) = line_col(self.text, offset);
        Error::Invalid {
            file: self.name.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Maps a byte offset inside a string's value to the byte offset in the file, for a TOML string
/// whose value span is `span` (including its quotes). Escapes in basic strings are followed.
fn string_offset(text: &str, span: std::ops::Range<usize>, value_offset: usize) -> usize {
    let raw = text.get(span.clone()).unwrap_or("");
    let (delim, literal) = if raw.starts_with("'''") {
        (3, true)
    } else if raw.starts_with("\"\"\"") {
        (3, false)
    } else if raw.starts_with('\'') {
        (1, true)
    } else if raw.starts_with('"') {
        (1, false)
    } else {
        return span.start;
    };
    let mut start = span.start + delim;
    if delim == 3 {
        if text[start..].starts_with("\r\n") {
            start += 2;
        } else if text[start..].starts_with('\n') {
            start += 1;
        }
    }
    if literal {
        return (start + value_offset).min(span.end);
    }
    // Walk the raw text, counting how many value bytes each piece produces.
    let body = &text[start..span.end.saturating_sub(delim).max(start)];
    let mut produced = 0;
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if produced >= value_offset {
            return start + i;
        }
        if c != '\\' {
            produced += c.len_utf8();
            continue;
        }
        match chars.peek().map(|&(_, n)| n) {
            Some('u') | Some('U') => {
                let n = if chars.peek().map(|&(_, n)| n) == Some('u') {
                    4
                } else {
                    8
                };
                chars.next();
                let mut hex = String::new();
                for _ in 0..n {
                    if let Some((_, h)) = chars.next() {
                        hex.push(h);
                    }
                }
                produced += u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .map(char::len_utf8)
                    .unwrap_or(1);
            }
            Some('\n') | Some('\r') | Some(' ') | Some('\t') => {
                // Line-ending backslash: the newline and the following whitespace vanish.
                while let Some(&(_, w)) = chars.peek() {
                    if w.is_whitespace() {
                        chars.next();
                    } else {
                        break;
                    }
                }
            }
            _ => {
                chars.next();
                produced += 1;
            }
        }
    }
    start + body.len()
}

fn toml_error(name: &str, text: &str, e: &toml::de::Error) -> Error {
    let offset = e.span().map(|s| s.start).unwrap_or(0);
    let (line, column) = line_col(text, offset);
    Error::Syntax {
        file: name.to_string(),
        line,
        column,
        message: e.message().trim().to_string(),
    }
}

/// `YYYY-MM-DD` (optionally with a time and offset) → Unix milliseconds.
fn datetime_ms(dt: &toml::value::Datetime) -> Option<u64> {
    let date = dt.date?;
    let days = days_from_civil(
        i64::from(date.year),
        u32::from(date.month),
        u32::from(date.day),
    );
    let mut ms = days * 86_400_000;
    if let Some(t) = dt.time {
        ms += i64::from(t.hour) * 3_600_000
            + i64::from(t.minute) * 60_000
            + i64::from(t.second) * 1000
            + i64::from(t.nanosecond / 1_000_000);
    }
    if let Some(toml::value::Offset::Custom { minutes }) = dt.offset {
        ms -= i64::from(minutes) * 60_000;
    }
    u64::try_from(ms).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn parse_key_part(s: &str) -> Option<KeyPart> {
    let named = |prefix: &str| {
        s.strip_prefix(prefix)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    };
    Some(match s {
        "ip" => KeyPart::Ip,
        "path" => KeyPart::Path,
        "host" => KeyPart::Host,
        "country" => KeyPart::Country,
        _ => {
            if let Some(n) = named("header:") {
                KeyPart::Header(n)
            } else if let Some(n) = named("cookie:") {
                KeyPart::Cookie(n)
            } else if let Some(n) = named("arg:") {
                KeyPart::Arg(n)
            } else {
                return None;
            }
        }
    })
}

enum ListData {
    Ip(Vec<IpNetwork>),
    Str(Vec<String>),
}

pub(super) fn load(files: &[(&str, &str)]) -> Result<CustomRules, Error> {
    let mut parsed = Vec::new();
    for (name, text) in files {
        let f: FileFormat = toml::from_str(text).map_err(|e| toml_error(name, text, &e))?;
        parsed.push((Src { name, text }, f));
    }

    // Lists first: every file's expressions may use every list.
    let mut lists: HashMap<String, (ListData, Location)> = HashMap::new();
    for (src, f) in &parsed {
        for (name, list) in &f.lists {
            let at = src.loc(list.span().start);
            if !valid_id(name) {
                return Err(src.invalid(
                    list.span().start,
                    format!(
                        "expected a list name of letters, digits, `-`, `_` or `.`, found `{name}`"
                    ),
                ));
            }
            if let Some((_, first)) = lists.get(name) {
                return Err(src.invalid(
                    list.span().start,
                    format!("list `{name}` is defined twice (first at {first})"),
                ));
            }
            let list = list.get_ref();
            let data = match list.kind {
                ListKindFormat::Ip => {
                    let mut nets = Vec::new();
                    for item in &list.items {
                        let s = item.get_ref().trim();
                        let net = s
                            .parse::<IpNetwork>()
                            .or_else(|_| s.parse::<IpAddr>().map(IpNetwork::from))
                            .map_err(|_| {
                                src.invalid(item.span().start, format!("expected an IP address or CIDR range such as `192.0.2.0/24` in list `{name}`, found `{s}`"))
                            })?;
                        nets.push(net);
                    }
                    ListData::Ip(nets)
                }
                ListKindFormat::String => {
                    ListData::Str(list.items.iter().map(|i| i.get_ref().clone()).collect())
                }
            };
            lists.insert(name.clone(), (data, at));
        }
    }
    let kinds = |n: &str| {
        lists.get(n).map(|(d, _)| match d {
            ListData::Ip(_) => ListKind::Ip,
            ListData::Str(_) => ListKind::Str,
        })
    };
    let values = |n: &str| {
        lists.get(n).map(|(d, _)| match d {
            ListData::Ip(v) => ListValues::Ip(v),
            ListData::Str(v) => ListValues::Str(v),
        })
    };

    // Rules: validate, type-check; plain rules first, then rate limits, each in file order.
    let mut seen: HashMap<String, Location> = HashMap::new();
    let mut plain = Vec::new();
    let mut limited = Vec::new();
    let mut tests = Vec::new();
    for (src, f) in &parsed {
        for spanned in &f.rules {
            let r = spanned.get_ref();
            let id = r.id.get_ref().clone();
            if !valid_id(&id) {
                return Err(src.invalid(r.id.span().start, format!("expected a rule id of 1 to 64 letters, digits, `-`, `_` or `.`, found `{id}`")));
            }
            let location = src.loc(spanned.span().start);
            if let Some(first) = seen.get(&id) {
                return Err(src.invalid(
                    r.id.span().start,
                    format!("rule id `{id}` is used twice (first at {first})"),
                ));
            }
            seen.insert(id.clone(), location.clone());
            let action = match *r.action.get_ref() {
                ActionFormat::Block => RuleAction::Block,
                ActionFormat::Log => RuleAction::Log,
                ActionFormat::Allow => RuleAction::Allow,
                ActionFormat::RateLimit => RuleAction::RateLimit,
                ActionFormat::Challenge => {
                    return Err(src.invalid(r.action.span().start, "`challenge` is not supported: this deployment has no challenge page to send; expected `block`, `log`, `allow` or `rate_limit` (a rate limit with `on-exceed = \"429\"` slows bots without a challenge)"));
                }
            };
            let rate_limit = match (&r.rate_limit, action) {
                (Some(rl), RuleAction::RateLimit) => Some(rate_limit_spec(src, rl)?),
                (None, RuleAction::RateLimit) => {
                    return Err(src.invalid(r.action.span().start, format!("rule `{id}` has `action = \"rate_limit\"`: expected a `[rule.rate-limit]` table with `key`, `requests` and `period`")));
                }
                (Some(rl), _) => {
                    return Err(src.invalid(rl.span().start, format!("rule `{id}` has a `rate-limit` table but `action = \"{}\"`: expected `action = \"rate_limit\"`", action.as_str())));
                }
                (None, _) => None,
            };
            let expires_ms = match &r.expires {
                Some(e) => Some(datetime_ms(e.get_ref()).ok_or_else(|| {
                    src.invalid(
                        e.span().start,
                        "expected a date such as 2027-01-31 for `expires`",
                    )
                })?),
                None => None,
            };
            let text = r.expression.get_ref();
            let expr_err = |e: ParseError| {
                let at = string_offset(src.text, r.expression.span(), e.offset);
                let (line, column) = line_col(src.text, at);
                Error::Expression {
                    file: src.name.to_string(),
                    line,
                    column,
                    rule: id.clone(),
                    source: Box::new(e),
                }
            };
            let ast = expr::parse(text).map_err(expr_err)?;
            expr::check(text, &ast, &kinds).map_err(expr_err)?;
            let rule = Rule {
                id: Arc::from(id.as_str()),
                description: r.description.clone(),
                expression: text.clone(),
                action,
                mode: match r.mode {
                    ModeFormat::Enforce => Mode::Enforce,
                    ModeFormat::Shadow => Mode::Shadow,
                },
                expires_ms,
                rate_limit,
                location,
            };
            for t in &r.tests {
                tests.push(test_case(src, t, Some(&rule.id))?);
            }
            if action == RuleAction::RateLimit {
                limited.push((rule, ast, expr_err_ctx(src, &r.expression)));
            } else {
                plain.push((rule, ast, expr_err_ctx(src, &r.expression)));
            }
        }
        for t in &f.tests {
            tests.push(test_case(src, t, None)?);
        }
    }
    for t in &tests {
        if let Some(r) = &t.rule {
            if !seen.contains_key(r.as_ref()) {
                return Err(Error::Invalid {
                    file: t.location.file.to_string(),
                    line: t.location.line,
                    column: t.location.column,
                    message: format!("test `{}` names rule `{r}`, which no file defines", t.name),
                });
            }
        }
    }

    let mut builder = ProgramBuilder::new();
    let mut rules = Vec::new();
    for (rule, ast, ctx) in plain.into_iter().chain(limited) {
        builder.add(&rule.expression, &ast, &values).map_err(|e| {
            let at = string_offset(ctx.text, ctx.span.clone(), e.offset);
            let (line, column) = line_col(ctx.text, at);
            Error::Expression {
                file: ctx.name.to_string(),
                line,
                column,
                rule: rule.id.to_string(),
                source: Box::new(e),
            }
        })?;
        rules.push(rule);
    }
    Ok(CustomRules {
        rules,
        program: builder.build(),
        tests,
    })
}

struct ExprCtx<'a> {
    name: &'a str,
    text: &'a str,
    span: std::ops::Range<usize>,
}

fn expr_err_ctx<'a>(src: &Src<'a>, e: &Spanned<String>) -> ExprCtx<'a> {
    ExprCtx {
        name: src.name,
        text: src.text,
        span: e.span(),
    }
}

fn rate_limit_spec(src: &Src<'_>, rl: &Spanned<RateLimitFormat>) -> Result<RateLimitSpec, Error> {
    let f = rl.get_ref();
    if f.key.is_empty() {
        return Err(src.invalid(rl.span().start, "expected at least one `key` part: ip, path, host, country, header:NAME, cookie:NAME or arg:NAME"));
    }
    let mut key = Vec::new();
    for part in &f.key {
        let p = parse_key_part(part.get_ref()).ok_or_else(|| {
            src.invalid(part.span().start, format!("expected a key part (ip, path, host, country, header:NAME, cookie:NAME, arg:NAME), found `{}`", part.get_ref()))
        })?;
        key.push(match p {
            KeyPart::Header(n) => KeyPart::Header(n.to_ascii_lowercase()),
            p => p,
        });
    }
    let requests = *f.requests.get_ref();
    if requests == 0 {
        return Err(src.invalid(f.requests.span().start, "expected `requests` of at least 1"));
    }
    let period = *f.period.get_ref();
    if !(1..=86_400).contains(&period) {
        return Err(src.invalid(
            f.period.span().start,
            "expected a `period` between 1 and 86400 seconds",
        ));
    }
    if f.mitigation_timeout > 86_400 {
        return Err(src.invalid(
            rl.span().start,
            "expected a `mitigation-timeout` of at most 86400 seconds",
        ));
    }
    Ok(RateLimitSpec {
        quota: Quota {
            requests,
            period_ms: period * 1000,
            mitigation_ms: f.mitigation_timeout * 1000,
        },
        key,
        on_exceed: match f.on_exceed {
            OnExceedFormat::TooManyRequests => OnExceed::TooManyRequests,
            OnExceedFormat::Block => OnExceed::Block,
        },
        scope: match f.scope {
            ScopeFormat::Local => LimitScope::Local,
            ScopeFormat::Global => LimitScope::Global,
        },
    })
}

fn test_case(
    src: &Src<'_>,
    t: &Spanned<TestFormat>,
    owner: Option<&Arc<str>>,
) -> Result<TestCase, Error> {
    let f = t.get_ref();
    let location = src.loc(t.span().start);
    let client_ip = match &f.ip {
        Some(ip) => Some(ip.get_ref().trim().parse::<IpAddr>().map_err(|_| {
            src.invalid(
                ip.span().start,
                format!("expected an IP address for `ip`, found `{}`", ip.get_ref()),
            )
        })?),
        None => None,
    };
    if f.repeat == 0 || f.repeat > 10_000 {
        return Err(src.invalid(t.span().start, "expected `repeat` between 1 and 10000"));
    }
    let expect = match f.expect {
        ExpectFormat::Pass => Expect::Pass,
        ExpectFormat::Allow => Expect::Allow,
        ExpectFormat::Block => Expect::Block,
        ExpectFormat::RateLimit => Expect::RateLimit,
        ExpectFormat::Log => Expect::Log,
    };
    if owner.is_none() && expect == Expect::Log && f.rule.is_none() {
        return Err(src.invalid(
            t.span().start,
            "a file-level test expecting `log` must name the `rule` that logs",
        ));
    }
    let mut headers: Vec<(String, String)> = f
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.sort_by_key(|(k, _)| !k.eq_ignore_ascii_case("host"));
    Ok(TestCase {
        name: f.name.clone(),
        location,
        owner: owner.cloned(),
        rule: f.rule.as_deref().map(Arc::from),
        request: HttpRequest {
            method: f.method.clone(),
            uri: f.uri.clone(),
            version: "HTTP/1.1".into(),
            headers,
            body: f.body.clone().into_bytes(),
            client_ip,
            country: f.country.clone(),
        },
        repeat: f.repeat,
        interval_ms: f.interval_ms,
        expect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 22) * 86_400, 1_795_305_600);
    }

    #[test]
    fn string_offsets_follow_quotes_and_escapes() {
        let text = "e = 'abc'\nf = \"a\\\"bc\"\ng = '''\nxy'''\n";
        // literal string: value offset 2 is `c`
        let s = text.find('\'').unwrap();
        assert_eq!(&text[string_offset(text, s..s + 5, 2)..][..1], "c");
        let s = text.find('"').unwrap();
        let e = text[s + 1..].find("\"\n").unwrap() + s + 2;
        // value `a"bc`: offset 2 is `b`, after the escape
        assert_eq!(&text[string_offset(text, s..e, 2)..][..1], "b");
        let s = text.find("'''").unwrap();
        assert_eq!(&text[string_offset(text, s..s + 9, 1)..][..1], "y");
    }
}
