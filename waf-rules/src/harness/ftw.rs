//! go-ftw YAML test files (the CRS regression format), turned into engine requests.
//!
//! Requests are built as go-ftw sends them: `autocomplete_headers` (default on) adds
//! `Connection: close`, a form `Content-Type` for bodies without one and `Content-Length`; form
//! bodies are percent-encoded unless they already are; newlines in multipart bodies become CRLF.
//! `encoded_request` (a base64 raw request) is parsed as sent.

use super::{judge, Outcome};
use crate::config::WafConfig;
use crate::input::HttpRequest;
use crate::RuleSet;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// One YAML file.
#[derive(Debug, Deserialize)]
pub struct TestFile {
    /// The rule under test (files without one hold no tests).
    #[serde(default)]
    pub rule_id: Option<u32>,
    /// Its tests.
    #[serde(default)]
    pub tests: Option<Vec<Test>>,
}

/// One test.
#[derive(Debug, Deserialize)]
pub struct Test {
    /// Its number.
    pub test_id: u32,
    /// Its stages (requests).
    #[serde(default)]
    pub stages: Option<Vec<Stage>>,
}

/// One stage: a request and what must be logged.
#[derive(Debug, Deserialize)]
pub struct Stage {
    /// The request.
    #[serde(default)]
    pub input: Option<Input>,
    /// The expectations.
    #[serde(default)]
    pub output: Option<Output>,
}

/// A request as go-ftw describes it.
#[derive(Debug, Default, Deserialize)]
pub struct Input {
    /// Method (default GET).
    #[serde(default, deserialize_with = "de_opt_string")]
    pub method: Option<String>,
    /// URI (default `/`).
    #[serde(default, deserialize_with = "de_opt_string")]
    pub uri: Option<String>,
    /// Version (default HTTP/1.1).
    #[serde(default, deserialize_with = "de_opt_string")]
    pub version: Option<String>,
    /// Headers in file order.
    #[serde(default, deserialize_with = "de_headers")]
    pub headers: Vec<(String, String)>,
    /// Body.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub data: Option<String>,
    /// Base64 of a raw request.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub encoded_request: Option<String>,
    /// Whether go-ftw completes headers (default true).
    #[serde(default)]
    pub autocomplete_headers: Option<bool>,
}

/// Expected output.
#[derive(Debug, Default, Deserialize)]
pub struct Output {
    /// Log expectations.
    #[serde(default)]
    pub log: Option<LogExpect>,
    /// Legacy `id "123"` form.
    #[serde(default)]
    pub log_contains: Option<String>,
    /// Legacy `id "123"` form.
    #[serde(default)]
    pub no_log_contains: Option<String>,
}

/// `output.log`.
#[derive(Debug, Default, Deserialize)]
pub struct LogExpect {
    /// Ids that must be logged.
    #[serde(default)]
    pub expect_ids: Vec<u32>,
    /// Ids that must not be logged.
    #[serde(default)]
    pub no_expect_ids: Vec<u32>,
}

struct Stringish;
impl Visitor<'_> for Stringish {
    type Value = String;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
}

struct S(String);
impl<'de> Deserialize<'de> for S {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<S, D::Error> {
        d.deserialize_any(Stringish).map(S)
    }
}

fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<S>::deserialize(d)?.map(|s| s.0))
}

fn de_headers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of headers")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = m.next_entry::<S, Option<S>>()? {
                out.push((k.0, v.map(|s| s.0).unwrap_or_default()));
            }
            Ok(out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V)
}

fn has_escape(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn form_encode(data: &str) -> String {
    if has_escape(data) {
        return data.to_string();
    }
    data.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((n, v)) => format!("{}={}", query_escape(n), query_escape(v)),
            None => query_escape(pair),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn parse_raw(raw: &[u8]) -> Option<HttpRequest> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)))
        .unwrap_or((raw.len(), 0));
    let head = String::from_utf8_lossy(&raw[..split.0]).into_owned();
    let body = raw.get(split.0 + split.1..).unwrap_or(&[]).to_vec();
    let mut lines = head.lines();
    let first = lines.next()?;
    let mut parts = first.splitn(3, ' ');
    let method = parts.next()?.to_string();
    let uri = parts.next().unwrap_or("/").to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").trim().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect();
    Some(HttpRequest {
        method,
        uri,
        version,
        headers,
        body,
        client_ip: "127.0.0.1".parse().ok(),
        country: None,
    })
}

/// Builds the request a stage sends.
pub fn build_request(input: &Input) -> Option<HttpRequest> {
    if let Some(enc) = &input.encoded_request {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(enc.trim())
            .ok()?;
        return parse_raw(&raw);
    }
    let mut headers = input.headers.clone();
    let has = |h: &[(String, String)], n: &str| h.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let auto = input.autocomplete_headers.unwrap_or(true);
    let method = input.method.clone().unwrap_or_else(|| "GET".into());
    let mut body = input.data.clone().unwrap_or_default();
    if auto {
        if !body.is_empty() && !has(&headers, "content-type") && method != "GET" {
            headers.push((
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
        }
        let ct = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.to_ascii_lowercase())
            .unwrap_or_default();
        if ct.starts_with("application/x-www-form-urlencoded") {
            body = form_encode(&body);
        } else if ct.starts_with("multipart/") && !body.contains("\r\n") {
            body = body.replace('\n', "\r\n");
        }
        if !has(&headers, "connection") {
            headers.push(("Connection".into(), "close".into()));
        }
        if !body.is_empty() && !has(&headers, "content-length") {
            headers.push(("Content-Length".into(), body.len().to_string()));
        }
    }
    Some(HttpRequest {
        method,
        uri: input.uri.clone().unwrap_or_else(|| "/".into()),
        version: input.version.clone().unwrap_or_else(|| "HTTP/1.1".into()),
        headers,
        body: body.into_bytes(),
        client_ip: "127.0.0.1".parse().ok(),
        country: None,
    })
}

fn legacy_id(s: &Option<String>) -> Option<u32> {
    let s = s.as_deref()?;
    let p = s.find("id \"")?;
    s[p + 4..].split('"').next()?.parse().ok()
}

/// Runs every test of a file. Returns the outcomes and how many stages were skipped (no log
/// expectation, i.e. status-only tests, and tests of response-phase rules: both need a real
/// server).
pub fn run_file(rs: &RuleSet, config: &WafConfig, f: &TestFile) -> (Vec<Outcome>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    let Some(rule_id) = f.rule_id else {
        return (out, 0);
    };
    // Tests of rules the engine does not run (response phases) need a real backend: skipped.
    if rs.rule_paranoia(rule_id).is_none() && rs.unsupported().iter().any(|(id, _)| *id == rule_id)
    {
        let stages = f
            .tests
            .iter()
            .flatten()
            .map(|t| t.stages.as_ref().map_or(0, Vec::len))
            .sum();
        return (out, stages);
    }
    let pl = rs.rule_paranoia(rule_id).unwrap_or(1);
    for t in f.tests.iter().flatten() {
        for st in t.stages.iter().flatten() {
            let output = st.output.as_ref();
            let mut expect: Vec<u32> = output
                .and_then(|o| o.log.as_ref())
                .map(|l| l.expect_ids.clone())
                .unwrap_or_default();
            let mut no_expect: Vec<u32> = output
                .and_then(|o| o.log.as_ref())
                .map(|l| l.no_expect_ids.clone())
                .unwrap_or_default();
            expect.extend(output.and_then(|o| legacy_id(&o.log_contains)));
            no_expect.extend(output.and_then(|o| legacy_id(&o.no_log_contains)));
            let Some(input) = st.input.as_ref() else {
                skipped += 1;
                continue;
            };
            if expect.is_empty() && no_expect.is_empty() {
                skipped += 1;
                continue;
            }
            let id = format!("{}-{}", rule_id, t.test_id);
            let result = match build_request(input) {
                Some(req) => judge(&rs.evaluate_with(&req, config), &expect, &no_expect),
                None => Err("request could not be built".into()),
            };
            out.push(Outcome {
                id,
                rule_id,
                paranoia: pl,
                result,
            });
        }
    }
    (out, skipped)
}
