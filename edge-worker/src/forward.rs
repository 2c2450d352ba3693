//! Forwarding to the origin: the request id, the edge signature, and which headers go along.

use worker::{Fetch, Headers, Method, Request, RequestInit, RequestRedirect, Response, Result};

use crate::config::EdgeConfig;
use crate::error::{self, EdgeError};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and headers the edge sets itself: never copied from the
/// shopper's request.
const DROPPED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    edge_signature::SIGNATURE_HEADER,
    edge_signature::REQUEST_ID_HEADER,
];

/// Whether a shopper's header is passed to the origin.
pub fn keeps_header(name: &str) -> bool {
    !DROPPED_HEADERS.iter().any(|d| d.eq_ignore_ascii_case(name))
}

/// The request id to use: the shopper's if valid, else a fresh one.
pub fn request_id(sent: Option<&str>, fresh: impl FnOnce() -> String) -> String {
    match sent {
        Some(id) if edge_signature::is_valid_request_id(id) => id.to_owned(),
        _ => fresh(),
    }
}

/// `path?query` of a URL as it will appear on the origin's request line.
pub fn path_and_query(url: &worker::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

fn fresh_request_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // crypto.getRandomValues failed: fall back to the time, unique enough for an id.
        bytes[..8].copy_from_slice(&worker::Date::now().as_millis().to_le_bytes());
    }
    edge_signature::request_id_from_bytes(bytes)
}

/// Sends the shopper's request to the origin with the request id and the edge signature, and
/// returns the origin's response as is. A failed fetch becomes a 502 with the request id.
pub async fn to_origin(req: Request, cfg: &EdgeConfig, now_ms: u64) -> Result<Response> {
    let sent_id = req.headers().get(edge_signature::REQUEST_ID_HEADER)?;
    let id = request_id(sent_id.as_deref(), fresh_request_id);
    let url = req.url()?;
    let pq = path_and_query(&url);
    let method = req.method();

    let headers = Headers::new();
    for (name, value) in req.headers().entries() {
        if keeps_header(&name) {
            headers.append(&name, &value)?;
        }
    }
    if let Some(host) = url.host_str() {
        headers.set("x-forwarded-host", host)?;
    }
    headers.set("x-forwarded-proto", url.scheme())?;
    headers.set(edge_signature::REQUEST_ID_HEADER, &id)?;
    let signature = cfg
        .signing_key
        .sign(method.as_ref(), &pq, now_ms / 1000, &id);
    headers.set(edge_signature::SIGNATURE_HEADER, &signature)?;

    let mut init = RequestInit::new();
    init.with_method(method.clone())
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    if !matches!(method, Method::Get | Method::Head) {
        init.with_body(req.inner().body().map(Into::into));
    }
    let upstream = Request::new_with_init(&format!("{}{pq}", cfg.origin), &init)?;
    match Fetch::Request(upstream).send().await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            worker::console_error!("origin fetch failed for request {id}: {e}");
            error::respond(&EdgeError::OriginUnavailable, Some(&id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_edge_headers_are_dropped() {
        for h in [
            "Connection",
            "host",
            "X-Edge-Signature",
            "x-request-id",
            "Transfer-Encoding",
        ] {
            assert!(!keeps_header(h), "{h}");
        }
        for h in ["accept", "cookie", "content-type", "user-agent"] {
            assert!(keeps_header(h), "{h}");
        }
    }

    #[test]
    fn request_ids_are_kept_only_when_valid() {
        assert_eq!(request_id(Some("abc-123"), || "fresh".into()), "abc-123");
        assert_eq!(request_id(Some("bad id"), || "fresh".into()), "fresh");
        assert_eq!(request_id(None, || "fresh".into()), "fresh");
    }

    #[test]
    fn path_and_query_keeps_the_encoded_query() {
        let url = worker::Url::parse("https://shop.example/api/search?q=a%20b&x=1").expect("url");
        assert_eq!(path_and_query(&url), "/api/search?q=a%20b&x=1");
        let url = worker::Url::parse("https://shop.example/").expect("url");
        assert_eq!(path_and_query(&url), "/");
    }
}
