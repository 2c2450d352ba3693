//! The fields of the scheme, computed once per request from [`HttpRequest`].

use std::borrow::Cow;
use std::net::IpAddr;

use super::ast::Field;
use crate::input::HttpRequest;

/// Most query arguments and cookies read per request: a bound on work for hostile input.
pub const MAX_PAIRS: usize = 256;

/// The request as the expression language sees it. Build it once per request with
/// [`RequestView::new`]; every rule reads from it.
#[derive(Debug, Clone)]
pub struct RequestView<'r> {
    req: &'r HttpRequest,
    path: String,
    query: &'r str,
    args: Vec<(String, String)>,
    cookie: Cow<'r, str>,
    cookies: Vec<(&'r str, &'r str)>,
    host: &'r str,
    user_agent: &'r str,
}

impl<'r> RequestView<'r> {
    /// Computes the fields: splits path and query, decodes the path and the arguments, splits cookies.
    pub fn new(req: &'r HttpRequest) -> Self {
        let target = strip_origin(&req.uri);
        let target = target.split('#').next().unwrap_or("");
        let (raw_path, query) = match target.split_once('?') {
            Some((p, q)) => (p, q),
            None => (target, ""),
        };
        let args = query
            .split('&')
            .filter(|p| !p.is_empty())
            .take(MAX_PAIRS)
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode_form(k), decode_form(v))
            })
            .collect();
        let cookie_headers: Vec<&str> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .map(|(_, v)| v.as_str())
            .collect();
        let cookie = match cookie_headers.as_slice() {
            [] => Cow::Borrowed(""),
            [one] => Cow::Borrowed(*one),
            many => Cow::Owned(many.join("; ")),
        };
        let cookies = cookie_headers
            .iter()
            .flat_map(|h| h.split(';'))
            .take(MAX_PAIRS)
            .filter_map(|c| {
                let c = c.trim();
                if c.is_empty() {
                    return None;
                }
                Some(c.split_once('=').unwrap_or((c, "")))
            })
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        RequestView {
            req,
            path: normalize_path(raw_path),
            query,
            args,
            cookie,
            cookies,
            host: req.header("host").unwrap_or(""),
            user_agent: req.header("user-agent").unwrap_or(""),
        }
    }

    /// The request this view reads.
    pub fn request(&self) -> &'r HttpRequest {
        self.req
    }

    /// The value of a string field; `None` when the request has none (no country known).
    pub fn scalar(&self, field: Field) -> Option<&str> {
        Some(match field {
            Field::Method => &self.req.method,
            Field::Uri => &self.req.uri,
            Field::UriPath => &self.path,
            Field::UriQuery => self.query,
            Field::Host => self.host,
            Field::UserAgent => self.user_agent,
            Field::Cookie => &self.cookie,
            Field::IpSrcCountry => self.req.country.as_deref()?,
            Field::UriArgs | Field::Cookies | Field::Headers | Field::IpSrc => return None,
        })
    }

    /// The client address.
    pub fn ip(&self) -> Option<IpAddr> {
        self.req.client_ip
    }

    /// The values of a map field under `key` (header names compare case-insensitively), in order.
    pub fn array<'s: 'k, 'k>(
        &'s self,
        field: Field,
        key: &'k str,
    ) -> Box<dyn Iterator<Item = &'s str> + 'k> {
        match field {
            Field::UriArgs => Box::new(
                self.args
                    .iter()
                    .filter(move |(k, _)| k == key)
                    .map(|(_, v)| v.as_str()),
            ),
            Field::Cookies => Box::new(
                self.cookies
                    .iter()
                    .filter(move |(k, _)| *k == key)
                    .map(|(_, v)| *v),
            ),
            Field::Headers => Box::new(
                self.req
                    .headers
                    .iter()
                    .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v.as_str()),
            ),
            _ => Box::new(std::iter::empty()),
        }
    }
}

/// `http://host/path?q` → `/path?q`; an origin-form target is returned as is.
fn strip_origin(uri: &str) -> &str {
    for scheme in ["http://", "https://"] {
        // (Compared as bytes: a target may hold UTF-8 that a `str` slice would split.)
        let b = uri.as_bytes();
        if b.len() > scheme.len() && b[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes()) {
            let rest = &uri[scheme.len()..];
            return match rest.find(['/', '?']) {
                Some(i) => &rest[i..],
                None => "/",
            };
        }
    }
    uri
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes (invalid escapes stay as written); `plus` turns `+` into a space.
pub fn percent_decode(s: &str, plus: bool) -> String {
    if !s.contains(['%', '+']) {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                match (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn decode_form(s: &str) -> String {
    percent_decode(s, true)
}

/// The path as rules see it: percent-decoded, `.` and `..` segments resolved, repeated `/` merged,
/// so `/%61dmin`, `/x/../admin` and `//admin` all read `/admin`.
pub fn normalize_path(raw: &str) -> String {
    let decoded = percent_decode(raw, false);
    let decoded = decoded.replace('\\', "/");
    let mut segs: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (decoded.ends_with('/') && !segs.is_empty()) {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_normalisation() {
        assert_eq!(normalize_path("/%61dmin/"), "/admin/");
        assert_eq!(normalize_path("//admin/./x/../y"), "/admin/y");
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/a%2"), "/a%2");
        assert_eq!(normalize_path("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(normalize_path("/a\\..\\admin"), "/admin");
    }

    #[test]
    fn a_target_with_utf8_where_a_scheme_would_end_is_a_path() {
        // (Found by the rules_file fuzzer: slicing the text at the scheme's length panicked.)
        assert_eq!(strip_origin("#Co\u{77c}#C#Co"), "#Co\u{77c}#C#Co");
        assert_eq!(strip_origin("/caf\u{e9}s?x"), "/caf\u{e9}s?x");
        assert_eq!(strip_origin("HTTPS://h\u{e9}/p"), "/p");
    }

    #[test]
    fn fields_from_request() {
        let req = HttpRequest {
            method: "POST".into(),
            uri: "http://shop.example/search/?q=red+shoes&q=b%26w&page=2#frag".into(),
            headers: vec![
                ("Host".into(), "shop.example".into()),
                ("Cookie".into(), "sid=abc; cart=1".into()),
                ("X-Test".into(), "one".into()),
                ("cookie".into(), "lang=fr".into()),
                ("x-test".into(), "two".into()),
            ],
            ..Default::default()
        };
        let v = RequestView::new(&req);
        assert_eq!(v.scalar(Field::UriPath), Some("/search/"));
        assert_eq!(
            v.scalar(Field::UriQuery),
            Some("q=red+shoes&q=b%26w&page=2")
        );
        assert_eq!(
            v.array(Field::UriArgs, "q").collect::<Vec<_>>(),
            ["red shoes", "b&w"]
        );
        assert_eq!(v.array(Field::Cookies, "lang").collect::<Vec<_>>(), ["fr"]);
        assert_eq!(v.scalar(Field::Cookie), Some("sid=abc; cart=1; lang=fr"));
        assert_eq!(
            v.array(Field::Headers, "x-test").collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert_eq!(v.scalar(Field::Host), Some("shop.example"));
        assert_eq!(v.scalar(Field::IpSrcCountry), None);
        assert_eq!(v.scalar(Field::UserAgent), Some(""));
    }
}
