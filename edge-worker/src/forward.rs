//! Forwarding to the origin: the request id, the edge signature, and which headers go along.

use std::time::Duration;

use futures_util::future::{select, Either};
use worker::{
    AbortController, Context, Delay, Env, Fetch, Headers, Method, Request, RequestInit,
    RequestRedirect, Response, Result,
};

use crate::cache::{self, Lookup};
use crate::config::EdgeConfig;
use crate::error::{self, EdgeError};
use crate::pages;

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

/// The shopper's address as Cloudflare reports it (`CF-Connecting-IP`, set by the edge network
/// and not forgeable by the client there).
pub fn client_ip(req: &Request) -> Option<std::net::IpAddr> {
    req.headers()
        .get("cf-connecting-ip")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse().ok())
}

/// Reads a request body up to [`crate::waf::MAX_BODY_BYTES`]; `Err(413 response)` past it.
pub async fn read_body(
    req: &mut Request,
    id: &str,
) -> Result<std::result::Result<Option<Vec<u8>>, Response>> {
    if matches!(req.method(), Method::Get | Method::Head | Method::Options) {
        return Ok(Ok(None));
    }
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > crate::waf::MAX_BODY_BYTES) {
        return Ok(Err(too_large(id)?));
    }
    let body = req.bytes().await?;
    if body.len() > crate::waf::MAX_BODY_BYTES {
        return Ok(Err(too_large(id)?));
    }
    Ok(Ok(Some(body)))
}

fn too_large(id: &str) -> Result<Response> {
    let body = serde_json::json!({
        "error": format!("request body larger than {} bytes", crate::waf::MAX_BODY_BYTES),
        "request_id": id,
    });
    Ok(Response::from_json(&body)?.with_status(413))
}

/// `path?query` of a URL as it will appear on the origin's request line.
pub fn path_and_query(url: &worker::Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

/// A fresh random request id.
pub fn fresh_request_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // crypto.getRandomValues failed: fall back to the time, unique enough for an id.
        bytes[..8].copy_from_slice(&worker::Date::now().as_millis().to_le_bytes());
    }
    edge_signature::request_id_from_bytes(bytes)
}

/// Sends the shopper's request to the origin with the request id and the edge signature.
///
/// GETs go through the edge cache ([`crate::cache`]): a fresh copy is served without an origin
/// trip; when the origin fails (5xx, timeout, unreachable) a GET gets the last good copy or the
/// maintenance page, never a raw error. Other methods get the origin's answer as it is, or a
/// 502 with the request id when the origin cannot be reached.
pub async fn to_origin(
    req: Request,
    body: Option<Vec<u8>>,
    id: &str,
    env: &Env,
    ctx: &Context,
    cfg: &EdgeConfig,
    now_ms: u64,
) -> Result<Response> {
    let url = req.url()?;
    let pq = path_and_query(&url);
    let method = req.method();
    let is_get = matches!(method, Method::Get);

    let cached = if is_get {
        cache::lookup(url.as_str(), now_ms).await?
    } else {
        Lookup::Miss
    };
    if let Lookup::Fresh(resp) = cached {
        return mark(resp, id, "HIT");
    }

    let upstream = origin_request(&req, body, cfg, id, &url, &pq, now_ms)?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let fetch = Fetch::Request(upstream);
    let fetch = fetch.send_with_signal(&signal);
    let timeout = Delay::from(Duration::from_millis(cfg.origin_timeout_ms));
    let outcome = match select(Box::pin(fetch), timeout).await {
        Either::Left((result, _)) => result.map_err(|e| e.to_string()),
        Either::Right(((), _)) => {
            controller.abort();
            Err(format!("no answer within {} ms", cfg.origin_timeout_ms))
        }
    };

    match outcome {
        Ok(mut resp) if resp.status_code() < 500 => {
            if is_get {
                let h = resp.headers();
                let fresh = cache::cacheable_for(
                    resp.status_code(),
                    h.get("cache-control")?.as_deref(),
                    h.has("set-cookie")?,
                );
                if let Some(secs) = fresh {
                    let copy = resp.cloned()?;
                    let key = url.to_string();
                    ctx.wait_until(async move {
                        if let Err(e) = cache::store(key, copy, secs, now_ms).await {
                            worker::console_error!("edge cache store failed: {e}");
                        }
                    });
                }
            }
            Ok(resp)
        }
        Ok(resp) if !is_get => Ok(resp),
        Err(e) if !is_get => {
            worker::console_error!("origin fetch failed for request {id}: {e}");
            error::respond(&EdgeError::OriginUnavailable, Some(id))
        }
        failed => {
            let why = match failed {
                Ok(resp) => format!("status {}", resp.status_code()),
                Err(e) => e,
            };
            worker::console_error!("origin failed for GET {} (request {id}): {why}", url.path());
            match cached {
                Lookup::Stale(resp) => mark(resp, id, "STALE"),
                _ => pages::maintenance(env, now_ms, id).await,
            }
        }
    }
}

/// The request the origin sees: the shopper's headers minus hop-by-hop ones, plus the request
/// id, the forwarding headers and the signature.
fn origin_request(
    req: &Request,
    body: Option<Vec<u8>>,
    cfg: &EdgeConfig,
    id: &str,
    url: &worker::Url,
    pq: &str,
    now_ms: u64,
) -> Result<Request> {
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
    if let Some(ip) = client_ip(req) {
        headers.set("x-forwarded-for", &ip.to_string())?;
    }
    headers.set(edge_signature::REQUEST_ID_HEADER, id)?;
    let signature = cfg.signing_key.sign(method.as_ref(), pq, now_ms / 1000, id);
    headers.set(edge_signature::SIGNATURE_HEADER, &signature)?;

    let mut init = RequestInit::new();
    init.with_method(method.clone())
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    if let Some(body) = body {
        init.with_body(Some(
            worker::js_sys::Uint8Array::from(body.as_slice()).into(),
        ));
    }
    Request::new_with_init(&format!("{}{pq}", cfg.origin), &init)
}

/// A cached copy with this request's id and where it came from.
fn mark(resp: Response, id: &str, how: &str) -> Result<Response> {
    let h = resp.headers();
    h.set(edge_signature::REQUEST_ID_HEADER, id)?;
    h.set("x-edge-cache", how)?;
    Ok(resp)
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
