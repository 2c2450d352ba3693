//! The request model CRS rules look at, built once per request from an [`HttpRequest`].
//!
//! Phase 1 sees the request line, URI, query arguments, headers and cookies. Before phase 2 the
//! body goes through the processor CRS expects (URL-encoded, JSON, multipart, a light XML text
//! extractor), chosen by `Content-Type` or by a `ctl:requestBodyProcessor` action; a body that
//! cannot be parsed sets `REQBODY_ERROR`, as in ModSecurity.

use crate::config::Limits;
use crate::input::HttpRequest;
use crate::transform::Transform;

/// A named value: a collection entry.
pub type Entry = (String, Vec<u8>);

/// The parsed request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `REQUEST_METHOD`.
    pub method: Vec<u8>,
    /// `REQUEST_URI_RAW`: the request target as sent.
    pub uri_raw: Vec<u8>,
    /// `REQUEST_URI`: the target without scheme and authority.
    pub uri: Vec<u8>,
    /// `REQUEST_FILENAME`: the path without the query string (not decoded).
    pub filename: Vec<u8>,
    /// `REQUEST_BASENAME`: the last path segment.
    pub basename: Vec<u8>,
    /// `QUERY_STRING`.
    pub query: Vec<u8>,
    /// `REQUEST_PROTOCOL`.
    pub protocol: Vec<u8>,
    /// `REQUEST_LINE`.
    pub request_line: Vec<u8>,
    /// `REQUEST_HEADERS` in wire order.
    pub headers: Vec<Entry>,
    /// `REQUEST_COOKIES`.
    pub cookies: Vec<Entry>,
    /// `ARGS`: the query arguments first (`ARGS_GET`), then the body arguments (`ARGS_POST`).
    pub args: Vec<Entry>,
    /// How many of `args` came from the query string.
    pub args_get_len: usize,
    /// `FILES`: field name → file name.
    pub files: Vec<Entry>,
    /// `FILES_SIZES`: field name → size.
    pub files_sizes: Vec<Entry>,
    /// `MULTIPART_PART_HEADERS`: part name → header line.
    pub multipart_part_headers: Vec<Entry>,
    /// `XML:/*` (the document's text) and `XML://@*` (attribute values).
    pub xml_text: Vec<Entry>,
    /// Attribute values of the XML body.
    pub xml_attrs: Vec<Entry>,
    /// `REQUEST_BODY` (available in phase 2).
    pub body: Vec<u8>,
    /// `REQUEST_BODY_LENGTH`.
    pub body_length: usize,
    /// The body as received (capped), kept for the phase-2 processors.
    raw_body: Vec<u8>,
    /// `REQBODY_PROCESSOR`.
    pub body_processor: String,
    /// `REQBODY_ERROR`.
    pub body_error: bool,
    /// `REQBODY_ERROR_MSG`.
    pub body_error_msg: String,
    /// `INBOUND_DATA_ERROR`: the body was longer than the inspection limit.
    pub inbound_data_error: bool,
    /// `MULTIPART_STRICT_ERROR` and friends, collapsed.
    pub multipart_error: bool,
    /// `REMOTE_ADDR`.
    pub remote_addr: Vec<u8>,
    /// Arguments dropped past the limit.
    pub args_truncated: bool,
    /// Entries of the request this one was refilled from, emptied, their buffers reused for
    /// this one's entries (see [`Request::refill`]).
    spare: Vec<Entry>,
}

/// A refilled request keeps at most this many spare entries, and byte buffers and entries of
/// at most this capacity: a large request does not pin its memory for the thread's next one.
const SPARE_ENTRIES: usize = 256;
const SPARE_BYTES: usize = 4096;
const SPARE_BODY_BYTES: usize = 64 * 1024;

fn hexval(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `application/x-www-form-urlencoded` decoding: `%XX` and `+`; invalid escapes kept.
pub fn form_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    form_decode_into(input, &mut out);
    out
}

/// [`form_decode`], appending to `out`.
fn form_decode_into(input: &[u8], out: &mut Vec<u8>) {
    out.reserve(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(h), Some(l)) = (
                    input.get(i + 1).and_then(|&c| hexval(c)),
                    input.get(i + 2).and_then(|&c| hexval(c)),
                ) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
}

/// `%XX` decoding without `+` → space (paths); invalid escapes kept.
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    percent_decode_into(input, &mut out);
    out
}

/// [`percent_decode`], appending to `out`.
fn percent_decode_into(input: &[u8], out: &mut Vec<u8>) {
    out.reserve(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            if let (Some(h), Some(l)) = (
                input.get(i + 1).and_then(|&c| hexval(c)),
                input.get(i + 2).and_then(|&c| hexval(c)),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Appends `b` to `out`, invalid UTF-8 replaced as `String::from_utf8_lossy` does.
fn push_lossy(out: &mut String, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(t) => out.push_str(t),
        Err(_) => out.push_str(&String::from_utf8_lossy(b)),
    }
}

/// An empty entry, from `spare`'s buffers when it has one.
fn new_entry(spare: &mut Vec<Entry>) -> Entry {
    let mut e = spare.pop().unwrap_or_default();
    e.0.clear();
    e.1.clear();
    e
}

/// The entry (`name`, `value`), from `spare`'s buffers when it has one.
fn entry_of(spare: &mut Vec<Entry>, name: &str, value: &str) -> Entry {
    let mut e = new_entry(spare);
    e.0.push_str(name);
    e.1.extend_from_slice(value.as_bytes());
    e
}

fn parse_urlencoded(
    input: &[u8],
    out: &mut Vec<Entry>,
    max: usize,
    spare: &mut Vec<Entry>,
) -> bool {
    let mut scratch = Vec::new();
    for pair in input.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        if out.len() >= max {
            return false;
        }
        let (n, v) = match pair.iter().position(|&b| b == b'=') {
            Some(p) => (&pair[..p], &pair[p + 1..]),
            None => (pair, &b""[..]),
        };
        let mut e = new_entry(spare);
        scratch.clear();
        form_decode_into(n, &mut scratch);
        push_lossy(&mut e.0, &scratch);
        form_decode_into(v, &mut e.1);
        out.push(e);
    }
    true
}

/// The body processor ModSecurity's recommended configuration picks for a `Content-Type`.
pub fn processor_for(content_type: &str) -> &'static str {
    let ct = content_type.trim_start().to_ascii_lowercase();
    if ct.starts_with("application/x-www-form-urlencoded") {
        "URLENCODED"
    } else if ct.starts_with("multipart/form-data") {
        "MULTIPART"
    } else if let Some(rest) = ct.strip_prefix("application/") {
        let mime = rest.split(';').next().unwrap_or("").trim();
        if mime == "json" || mime.ends_with("+json") {
            "JSON"
        } else if mime == "xml" || mime.ends_with("+xml") {
            "XML"
        } else {
            ""
        }
    } else if ct.starts_with("text/xml") {
        "XML"
    } else {
        ""
    }
}

impl Request {
    /// Builds the phase-1 view of a request. The body is kept for [`Request::process_body`].
    pub fn new(req: &HttpRequest, limits: &Limits) -> Request {
        let mut r = Request::default();
        r.refill(req, limits);
        r
    }

    /// Empties `self`, keeping its buffers (up to the `SPARE_*` sizes) for [`Request::refill`].
    pub fn clear(&mut self) {
        // Every field named (no `..`), so that a new one cannot be left holding the previous
        // request. In place: moving the whole struct out and back cost a bare GET 1.7 %.
        let Request {
            method,
            uri_raw,
            uri,
            filename,
            basename,
            query,
            protocol,
            request_line,
            headers,
            cookies,
            args,
            args_get_len,
            files,
            files_sizes,
            multipart_part_headers,
            xml_text,
            xml_attrs,
            body,
            body_length,
            raw_body,
            body_processor,
            body_error,
            body_error_msg,
            inbound_data_error,
            multipart_error,
            remote_addr,
            args_truncated,
            spare,
        } = self;
        for list in [
            headers,
            cookies,
            args,
            files,
            files_sizes,
            multipart_part_headers,
            xml_text,
            xml_attrs,
        ] {
            // Emptied into `spare`, the list kept unless it grew long.
            for (mut n, mut v) in list.drain(..) {
                if spare.len() < SPARE_ENTRIES
                    && n.capacity() <= SPARE_BYTES
                    && v.capacity() <= SPARE_BYTES
                {
                    n.clear();
                    v.clear();
                    spare.push((n, v));
                }
            }
            if list.capacity() > SPARE_ENTRIES {
                *list = Vec::new();
            }
        }
        for (buf, max) in [
            (method, SPARE_BYTES),
            (uri_raw, SPARE_BYTES),
            (uri, SPARE_BYTES),
            (filename, SPARE_BYTES),
            (basename, SPARE_BYTES),
            (query, SPARE_BYTES),
            (protocol, SPARE_BYTES),
            (request_line, SPARE_BYTES),
            (remote_addr, SPARE_BYTES),
            (body, SPARE_BODY_BYTES),
            (raw_body, SPARE_BODY_BYTES),
        ] {
            if buf.capacity() > max {
                *buf = Vec::new();
            }
            buf.clear();
        }
        *args_get_len = 0;
        *body_length = 0;
        body_processor.clear();
        *body_error = false;
        body_error_msg.clear();
        *inbound_data_error = false;
        *multipart_error = false;
        *args_truncated = false;
    }

    /// Makes `self` the phase-1 view of `req`, as [`Request::new`] does, reusing the buffers
    /// `self` holds (an evaluation keeps its request's for the thread's next one): a request
    /// is otherwise some forty allocations. Nothing of the previous request is kept but
    /// emptied buffers, and only those up to the `SPARE_*` sizes.
    pub fn refill(&mut self, req: &HttpRequest, limits: &Limits) {
        self.clear();
        let mut spare = std::mem::take(&mut self.spare);
        let r = self;
        r.method.extend_from_slice(req.method.as_bytes());
        r.uri_raw.extend_from_slice(req.uri.as_bytes());
        r.protocol.extend_from_slice(req.version.as_bytes());
        for part in [
            req.method.as_bytes(),
            b" ",
            req.uri.as_bytes(),
            b" ",
            req.version.as_bytes(),
        ] {
            r.request_line.extend_from_slice(part);
        }
        // Strip scheme and authority from an absolute-form target.
        let mut target = req.uri.as_str();
        if let Some(p) = target.find("://") {
            if target[..p].bytes().all(|b| b.is_ascii_alphabetic()) && p > 0 {
                let after = &target[p + 3..];
                target = match after.find('/') {
                    Some(s) => &after[s..],
                    None => "/",
                };
            }
        }
        r.uri.extend_from_slice(target.as_bytes());
        let (path, query) = match target.find('?') {
            Some(q) => (&target[..q], &target[q + 1..]),
            None => (target, ""),
        };
        let path = path.split('#').next().unwrap_or(path);
        // REQUEST_FILENAME is the percent-decoded path, as ModSecurity and Coraza expose it.
        percent_decode_into(path.as_bytes(), &mut r.filename);
        let base = match r.filename.iter().rposition(|&b| b == b'/' || b == b'\\') {
            Some(s) => s + 1,
            None => 0,
        };
        r.basename.extend_from_slice(&r.filename[base..]);
        r.query.extend_from_slice(query.as_bytes());
        if !parse_urlencoded(query.as_bytes(), &mut r.args, limits.max_args, &mut spare) {
            r.args_truncated = true;
        }
        r.args_get_len = r.args.len();
        for (n, v) in &req.headers {
            r.headers.push(entry_of(&mut spare, n, v));
            if n.eq_ignore_ascii_case("cookie") {
                for c in v.split(';') {
                    let c = c.trim_start();
                    if c.is_empty() {
                        continue;
                    }
                    let (cn, cv) = match c.find('=') {
                        Some(p) => (&c[..p], &c[p + 1..]),
                        None => (c, ""),
                    };
                    r.cookies.push(entry_of(&mut spare, cn, cv));
                }
            }
        }
        if let Some(ip) = req.client_ip {
            use std::io::Write;
            // (Writing to a Vec cannot fail.)
            let _ = write!(r.remote_addr, "{ip}");
        }
        r.body_length = req.body.len();
        let kept = req.body.len().min(limits.max_body_bytes);
        r.raw_body.extend_from_slice(&req.body[..kept]);
        if kept < req.body.len() {
            r.inbound_data_error = true;
        }
        r.body_processor
            .push_str(processor_for(req.header("content-type").unwrap_or("")));
        r.spare = spare;
    }

    /// `UNIQUE_ID`, derived from the request line (the engine has no randomness); made when a
    /// rule reads it (CRS does only when sampling), not for every request.
    pub fn unique_id(&self) -> Vec<u8> {
        let digest = sha1_smol::Sha1::from(&self.request_line)
            .digest()
            .to_string();
        digest.as_bytes()[..20].to_vec()
    }

    /// Runs the body processor (`processor` overrides the one chosen by `Content-Type`).
    /// `force_body` keeps `REQUEST_BODY` filled whatever the processor (it always is here,
    /// as in ModSecurity 3).
    pub fn process_body(&mut self, processor: Option<&str>, limits: &Limits) {
        if let Some(p) = processor {
            self.body_processor = p.to_ascii_uppercase();
        }
        let body = std::mem::take(&mut self.raw_body);
        if !body.is_empty() {
            self.parse_body(&body, limits);
        }
        // The body becomes REQUEST_BODY; REQUEST_BODY's emptied buffer, the raw body's.
        self.raw_body = std::mem::replace(&mut self.body, body);
        self.raw_body.clear();
    }

    fn parse_body(&mut self, body: &[u8], limits: &Limits) {
        let max = limits.max_args;
        match self.body_processor.as_str() {
            "URLENCODED"
                if !parse_urlencoded(
                    body,
                    &mut self.args,
                    max + self.args_get_len,
                    &mut self.spare,
                ) =>
            {
                self.args_truncated = true;
                self.set_error("too many arguments");
            }
            "JSON" => self.process_json(body, limits),
            "MULTIPART" => self.process_multipart(body, limits),
            "XML" => self.process_xml(body),
            _ => {}
        }
    }

    fn set_error(&mut self, msg: &str) {
        self.body_error = true;
        if self.body_error_msg.is_empty() {
            self.body_error_msg = msg.to_string();
        }
    }

    fn process_json(&mut self, body: &[u8], limits: &Limits) {
        let mut out = Vec::new();
        let mut too_deep = false;
        let mut path = String::from("json");
        let mut de = serde_json::Deserializer::from_slice(body);
        let parsed = serde::de::DeserializeSeed::deserialize(
            Flatten {
                path: &mut path,
                depth: 0,
                max_depth: limits.max_json_depth,
                out: &mut out,
                too_deep: &mut too_deep,
            },
            &mut de,
        )
        .and_then(|()| de.end());
        if let Err(e) = parsed {
            self.set_error(&format!("JSON parsing error: {e}"));
            return;
        }
        if too_deep {
            self.set_error("JSON nesting too deep");
        }
        let room = (limits.max_args + self.args_get_len).saturating_sub(self.args.len());
        if out.len() > room {
            out.truncate(room);
            self.args_truncated = true;
            self.set_error("too many arguments");
        }
        self.args.extend(out);
    }

    fn process_multipart(&mut self, body: &[u8], limits: &Limits) {
        let ct = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| lossy(v))
            .unwrap_or_default();
        let boundary = ct.split(';').skip(1).find_map(|p| {
            let p = p.trim();
            let (k, v) = p.split_once('=')?;
            if k.trim().eq_ignore_ascii_case("boundary") {
                Some(v.trim().trim_matches('"').to_string())
            } else {
                None
            }
        });
        let Some(boundary) = boundary.filter(|b| !b.is_empty()) else {
            self.set_error("multipart: no boundary");
            return;
        };
        let delim = format!("--{boundary}");
        let d = delim.as_bytes();
        let positions: Vec<usize> = find_all(body, d);
        if positions.is_empty() {
            self.set_error("multipart: boundary not found");
            self.multipart_error = true;
            return;
        }
        let mut finished = false;
        for w in 0..positions.len() {
            let start = positions[w] + d.len();
            if body[start..].starts_with(b"--") {
                finished = true;
                break;
            }
            let end = positions.get(w + 1).copied().unwrap_or(body.len());
            if end < start {
                continue;
            }
            let mut part = &body[start..end];
            part = part
                .strip_prefix(b"\r\n")
                .or_else(|| part.strip_prefix(b"\n"))
                .unwrap_or(part);
            part = part
                .strip_suffix(b"\r\n")
                .or_else(|| part.strip_suffix(b"\n"))
                .unwrap_or(part);
            let (head, content) = match find_all(part, b"\r\n\r\n").first() {
                Some(&p) => (&part[..p], &part[p + 4..]),
                None => match find_all(part, b"\n\n").first() {
                    Some(&p) => (&part[..p], &part[p + 2..]),
                    None => {
                        self.multipart_error = true;
                        self.set_error("multipart: part without header end");
                        continue;
                    }
                },
            };
            let mut name = None;
            let mut filename = None;
            let mut lines = Vec::new();
            for line in head.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    continue;
                }
                let l = lossy(line);
                if let Some((hn, hv)) = l.split_once(':') {
                    if hn.trim().eq_ignore_ascii_case("content-disposition") {
                        for (k, v) in disposition_params(hv) {
                            match k.to_ascii_lowercase().as_str() {
                                "name" => name = Some(v),
                                "filename" | "filename*" => filename = Some(v),
                                _ => {}
                            }
                        }
                    }
                }
                lines.push(l);
            }
            let name = name.unwrap_or_default();
            for l in lines {
                self.multipart_part_headers
                    .push((name.clone(), l.into_bytes()));
            }
            match filename {
                Some(f) => {
                    self.files.push((name.clone(), f.into_bytes()));
                    self.files_sizes
                        .push((name, content.len().to_string().into_bytes()));
                }
                None => {
                    if self.args.len() >= limits.max_args + self.args_get_len {
                        self.args_truncated = true;
                        self.set_error("too many arguments");
                        break;
                    }
                    self.args.push((name, content.to_vec()));
                }
            }
        }
        if !finished {
            self.multipart_error = true;
            self.set_error("multipart: final boundary missing");
        }
    }

    fn process_xml(&mut self, body: &[u8]) {
        // Not a validating parser: text nodes and attribute values, which is what CRS inspects.
        let mut text = Vec::new();
        let mut i = 0;
        let mut depth: i64 = 0;
        while i < body.len() {
            if body[i] == b'<' {
                let Some(rel) = body[i..].iter().position(|&b| b == b'>') else {
                    self.set_error("XML: unterminated tag");
                    break;
                };
                let tag = &body[i + 1..i + rel];
                if tag.first() == Some(&b'/') {
                    depth -= 1;
                } else if !matches!(tag.first(), Some(b'?' | b'!')) && !tag.ends_with(b"/") {
                    depth += 1;
                }
                let mut q = 0;
                while q < tag.len() {
                    if tag[q] == b'"' || tag[q] == b'\'' {
                        let quote = tag[q];
                        if let Some(e) = tag[q + 1..].iter().position(|&b| b == quote) {
                            self.xml_attrs.push((
                                "XML".into(),
                                Transform::HtmlEntityDecode.apply(&tag[q + 1..q + 1 + e]),
                            ));
                            q += e + 2;
                            continue;
                        }
                    }
                    q += 1;
                }
                i += rel + 1;
            } else {
                text.push(body[i]);
                i += 1;
            }
        }
        if depth != 0 {
            self.set_error("XML: unbalanced tags");
        }
        self.xml_text
            .push(("XML".into(), Transform::HtmlEntityDecode.apply(&text)));
    }

    /// `ARGS_COMBINED_SIZE`.
    pub fn args_combined_size(&self) -> usize {
        self.args.iter().map(|(n, v)| n.len() + v.len()).sum()
    }

    /// `FILES_COMBINED_SIZE`.
    pub fn files_combined_size(&self) -> usize {
        self.files_sizes
            .iter()
            .map(|(_, v)| {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// `form-data; name="a;b"; filename="x"` → [(name, a;b), (filename, x)]; quotes may hold `;`.
fn disposition_params(v: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b = v.as_bytes();
    let mut i = match v.find(';') {
        Some(p) => p + 1,
        None => return out,
    };
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t' || b[i] == b';') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b';' {
            i += 1;
        }
        let key = v[ks..i].trim().to_string();
        if i >= b.len() || b[i] == b';' {
            continue;
        }
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let vs = i;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            val.push_str(&v[vs..i.min(b.len())]);
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b';' {
                i += 1;
            }
            val.push_str(v[vs..i].trim());
        }
        out.push((key, val));
    }
    out
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    if needle.is_empty() || hay.len() < needle.len() {
        return out;
    }
    let finder = aho_corasick::AhoCorasick::new([needle]);
    if let Ok(f) = finder {
        for m in f.find_iter(hay) {
            out.push(m.start());
        }
    }
    out
}

/// Streams a JSON value into `out` leaf by leaf, each named by its path (`json.items.0.sku`),
/// in document order and without building a tree. Duplicate keys each give an entry, as in
/// ModSecurity's parser: a tree keeps only one of them, and a backend that reads the other
/// would see a value the rules never did. `path` holds the value's name on entry and again on
/// return (one buffer serves the whole document). Values nested deeper than `max_depth` are
/// skipped and set `too_deep`.
struct Flatten<'a> {
    path: &'a mut String,
    depth: usize,
    max_depth: usize,
    out: &'a mut Vec<Entry>,
    too_deep: &'a mut bool,
}

impl Flatten<'_> {
    fn leaf(self, v: Vec<u8>) {
        self.out.push((self.path.clone(), v));
    }

    fn child(&mut self) -> Flatten<'_> {
        Flatten {
            path: &mut *self.path,
            depth: self.depth + 1,
            max_depth: self.max_depth,
            out: &mut *self.out,
            too_deep: &mut *self.too_deep,
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.depth > self.max_depth {
            *self.too_deep = true;
            return <serde::de::IgnoredAny as serde::Deserialize>::deserialize(d).map(|_| ());
        }
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.leaf(if v {
            b"true".to_vec()
        } else {
            b"false".to_vec()
        });
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.leaf(v.to_string().into_bytes());
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.leaf(v.to_string().into_bytes());
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        // As serde_json prints a number (`1.0`, `1e+100`); JSON has no NaN or infinity.
        let text = serde_json::Number::from_f64(v).map(|n| n.to_string());
        self.leaf(text.unwrap_or_default().into_bytes());
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.leaf(v.as_bytes().to_vec());
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.leaf(v.into_bytes());
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.leaf(Vec::new());
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        use std::fmt::Write;
        let at = self.path.len();
        for i in 0usize.. {
            let _ = write!(self.path, ".{i}");
            let more = seq.next_element_seed(self.child())?;
            self.path.truncate(at);
            if more.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let at = self.path.len();
        while map.next_key_seed(KeyInto(&mut *self.path))?.is_some() {
            map.next_value_seed(self.child())?;
            self.path.truncate(at);
        }
        Ok(())
    }
}

/// Appends `.key` to a path as the key is read.
struct KeyInto<'a>(&'a mut String);

impl<'de> serde::de::DeserializeSeed<'de> for KeyInto<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push('.');
        self.0.push_str(v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            uri: uri.into(),
            version: "HTTP/1.1".into(),
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: body.to_vec(),
            ..Default::default()
        }
    }

    fn req(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Request {
        let h = http(method, uri, headers, body.as_bytes());
        let limits = Limits::default();
        let mut r = Request::new(&h, &limits);
        r.process_body(None, &limits);
        r
    }

    #[test]
    fn a_refilled_request_is_the_request_made_new() {
        let http = |method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]| HttpRequest {
            client_ip: Some([192, 0, 2, 7].into()),
            ..http(method, uri, headers, body)
        };
        let long = "v".repeat(SPARE_BYTES + 10);
        let big_body = vec![b'x'; SPARE_BODY_BYTES + 10];
        let requests = [
            http(
                "POST",
                "/a%20b/c.php?x=1&y=%FF&z",
                &[
                    ("Cookie", "a=1; b=x=y; c"),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("X-Long", &long),
                ],
                b"p=%27or&q=2",
            ),
            http("GET", "/", &[("Host", "h")], b""),
            http(
                "POST",
                "http://h/j",
                &[("Content-Type", "application/json")],
                br#"{"a":[1,{"b":"c"}]}"#,
            ),
            http(
                "POST",
                "/m",
                &[("Content-Type", "multipart/form-data; boundary=B")],
                b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\r\nhi\r\n--B--\r\n",
            ),
            http("PUT", "/big", &[("Content-Type", "text/plain")], &big_body),
            http("GET", "/?only=query", &[], b""),
        ];
        let limits = Limits {
            max_body_bytes: SPARE_BODY_BYTES + 5,
            ..Limits::default()
        };
        let shown = |r: &Request| {
            let mut r = r.clone();
            r.spare.clear();
            format!("{r:?}")
        };
        let mut reused = Request::default();
        // Each request after each other one (and after itself).
        for a in &requests {
            for b in &requests {
                reused.refill(a, &limits);
                reused.process_body(None, &limits);
                reused.refill(b, &limits);
                let mut new = Request::new(b, &limits);
                assert_eq!(shown(&reused), shown(&new), "{} after {}", b.uri, a.uri);
                reused.process_body(None, &limits);
                new.process_body(None, &limits);
                assert_eq!(shown(&reused), shown(&new), "{} after {}", b.uri, a.uri);
                assert!(reused.spare.len() <= SPARE_ENTRIES);
                assert!(reused
                    .spare
                    .iter()
                    .all(|(n, v)| n.is_empty() && v.is_empty()));
            }
        }
        reused.clear();
        assert_eq!(shown(&reused), shown(&Request::default()));
        // Nothing grown past the caps is kept.
        assert!(reused
            .spare
            .iter()
            .all(|(n, v)| n.capacity() <= SPARE_BYTES && v.capacity() <= SPARE_BYTES));
        assert!(reused.body.capacity() <= SPARE_BODY_BYTES);
        assert!(reused.raw_body.capacity() <= SPARE_BODY_BYTES);
    }

    #[test]
    fn uri_parts_and_query_args() {
        let r = req("GET", "http://h/a/b.php?x=1+2&y=%3Cs%3E&z", &[], "");
        assert_eq!(r.uri, b"/a/b.php?x=1+2&y=%3Cs%3E&z");
        assert_eq!(r.filename, b"/a/b.php");
        let d = req("GET", "/a%20b/c%2Ed?x", &[], "");
        assert_eq!(d.filename, b"/a b/c.d");
        assert_eq!(d.basename, b"c.d");
        assert_eq!(r.basename, b"b.php");
        assert_eq!(r.args[0], ("x".into(), b"1 2".to_vec()));
        assert_eq!(r.args[1].1, b"<s>");
        assert_eq!(r.args[2], ("z".into(), Vec::new()));
        assert_eq!(
            r.request_line,
            b"GET http://h/a/b.php?x=1+2&y=%3Cs%3E&z HTTP/1.1"
        );
    }

    #[test]
    fn cookies_and_urlencoded_body() {
        let r = req(
            "POST",
            "/",
            &[
                ("Cookie", "a=1; b=x=y"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            "p=%27or",
        );
        assert_eq!(r.cookies[1], ("b".into(), b"x=y".to_vec()));
        assert_eq!(r.args[0], ("p".into(), b"'or".to_vec()));
        assert_eq!(r.args_get_len, 0);
        assert_eq!(r.body_processor, "URLENCODED");
    }

    #[test]
    fn json_body_and_error() {
        let r = req(
            "POST",
            "/",
            &[("Content-Type", "application/json")],
            r#"{"a":{"b":[1,"x"]}}"#,
        );
        assert_eq!(r.args[1], ("json.a.b.1".into(), b"x".to_vec()));
        let bad = req("POST", "/", &[("Content-Type", "application/json")], "{");
        assert!(bad.body_error);
    }

    #[test]
    fn json_leaves_in_document_order_with_every_duplicate_key() {
        let ct = [("Content-Type", "application/json")];
        let body = r#"{"z":"first","a":[true,null,-3,2.5,1e100,{"q":"x"}],"z":"second"}"#;
        let r = req("POST", "/", &ct, body);
        let got: Vec<(&str, &str)> = r
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), std::str::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("json.z", "first"),
                ("json.a.0", "true"),
                ("json.a.1", ""),
                ("json.a.2", "-3"),
                ("json.a.3", "2.5"),
                // Numbers as serde_json prints them, not as the document spells them.
                ("json.a.4", "1e+100"),
                ("json.a.5.q", "x"),
                ("json.z", "second"),
            ]
        );
        assert!(!r.body_error);
        // Escapes in keys and values are decoded; a scalar document is one leaf named `json`.
        let r = req("POST", "/", &ct, r#"{"k\u0065y":"v\"al"}"#);
        assert_eq!(r.args, [("json.key".to_string(), b"v\"al".to_vec())]);
        let r = req("POST", "/", &ct, "42");
        assert_eq!(r.args, [("json".to_string(), b"42".to_vec())]);
        // Anything after the document is an error, and an error leaves no arguments.
        for bad in [r#"{"a":"b"} x"#, r#"{"a":"b""#, r#"{"a":}"#] {
            let r = req("POST", "/", &ct, bad);
            assert!(r.body_error, "{bad}");
            assert!(r.args.is_empty(), "{bad}");
        }
    }

    #[test]
    fn json_nesting_past_the_limit_is_skipped_and_flagged() {
        let deep = format!(
            "{{\"a\":\"x\",\"d\":{}1{}}}",
            "[".repeat(70),
            "]".repeat(70)
        );
        let r = req("POST", "/", &[("Content-Type", "application/json")], &deep);
        assert!(r.body_error);
        assert!(
            r.body_error_msg.contains("too deep"),
            "{}",
            r.body_error_msg
        );
        assert_eq!(r.args, [("json.a".to_string(), b"x".to_vec())]);
    }

    #[test]
    fn multipart_body() {
        let body = "--xx\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--xx\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.php\"\r\nContent-Type: text/plain\r\n\r\n<?php\r\n--xx--\r\n";
        let r = req(
            "POST",
            "/",
            &[("Content-Type", "multipart/form-data; boundary=xx")],
            body,
        );
        assert_eq!(r.args[0], ("a".into(), b"hello".to_vec()));
        assert_eq!(r.files[0], ("f".into(), b"x.php".to_vec()));
        assert_eq!(r.multipart_part_headers.len(), 3);
        assert_eq!(
            disposition_params(r#"form-data; name="a;b"; filename="x""#),
            vec![
                ("name".into(), "a;b".into()),
                ("filename".into(), "x".into())
            ]
        );
        assert!(!r.body_error);
    }
}
