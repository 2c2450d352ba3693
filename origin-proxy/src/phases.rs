//! What the proxy does in each phase, as plain functions over the request and its context.

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::proxy::FailToProxy;
use pingora::ErrorType;
use ring::rand::SecureRandom;

use crate::config::EdgeAuth;
use crate::proxy::{error_body, OriginProxy, RequestCtx};

/// A request refused before it reaches a backend.
#[derive(Debug)]
pub struct Refusal {
    /// HTTP status to answer with.
    pub status: u16,
    /// A reason safe to show the client.
    pub reason: String,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

/// Request id, route and edge authentication: decides whether the request may go on.
pub fn admit(
    proxy: &OriginProxy,
    req: &RequestHeader,
    client: Option<&PeerAddr>,
    ctx: &mut RequestCtx,
) -> Result<(), Refusal> {
    let sent_id = header_str(req, edge_signature::REQUEST_ID_HEADER);
    ctx.request_id = match sent_id {
        Some(id) if edge_signature::is_valid_request_id(id) => id.to_owned(),
        _ => new_request_id(),
    };
    let host = header_str(req, "host").or_else(|| req.uri.host());
    let path = req.uri.path();
    let route = proxy
        .config
        .route(host, path)
        .ok_or_else(|| refuse(404, format!("no route for {path}")))?;
    ctx.route = Some(route.name.clone());
    ctx.pool = proxy.pool(&route.pool).cloned();
    let client_ip = client.and_then(|a| a.as_inet()).map(|a| a.ip());
    authenticate(&proxy.config.edge_auth, req, client_ip, sent_id, unix_now())
}

/// Accepts the request if the client is allowlisted or its edge signature is valid and fresh.
pub fn authenticate(
    auth: &EdgeAuth,
    req: &RequestHeader,
    client_ip: Option<IpAddr>,
    sent_id: Option<&str>,
    now: u64,
) -> Result<(), Refusal> {
    if let Some(ip) = client_ip {
        if auth.allow_cidrs.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
    }
    let Some(key) = &auth.key else {
        return Err(refuse(
            403,
            "client is not allowed and edge signatures are not configured",
        ));
    };
    let path_and_query = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    key.verify(
        header_str(req, edge_signature::SIGNATURE_HEADER),
        req.method.as_str(),
        path_and_query,
        sent_id.unwrap_or(""),
        now,
        auth.max_skew_secs,
    )
    .map_err(|e| refuse(403, e.to_string()))
}

/// The next backend for this request, or a 503 when every healthy backend has been tried.
pub fn pick_peer(ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    let pool = ctx
        .pool
        .clone()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no pool"))?;
    let Some(idx) = pool.select(&ctx.tried) else {
        return Err(Error::explain(
            ErrorType::HTTPStatus(503),
            format!("no healthy backend left in pool {}", pool.name),
        ));
    };
    ctx.backend = Some(idx);
    ctx.upstream_start = Some(Instant::now());
    let addr = pool.backends[idx].addr;
    let mut peer = HttpPeer::new(addr, false, String::new());
    peer.options.connection_timeout = Some(pool.config.connect_timeout);
    peer.options.read_timeout = Some(pool.config.read_timeout);
    Ok(Box::new(peer))
}

/// A connect failed: remember the backend, count the failure against it, and retry an
/// idempotent request elsewhere while retries remain.
pub fn on_connect_failure(
    req: &RequestHeader,
    ctx: &mut RequestCtx,
    mut e: Box<Error>,
) -> Box<Error> {
    let retry = note_failed_attempt(ctx, true) && req.method.is_idempotent();
    e.set_retry(retry);
    e
}

/// An error after connecting: idempotent requests are retried (on another backend) when the
/// connection was reused, as pingora does by default; others fail.
pub fn on_proxy_error(
    peer: &HttpPeer,
    req: &RequestHeader,
    body_truncated: bool,
    ctx: &mut RequestCtx,
    e: Box<Error>,
    client_reused: bool,
) -> Box<Error> {
    let mut e = e.more_context(format!("Peer: {peer}"));
    let retries_left = note_failed_attempt(ctx, false);
    if !req.method.is_idempotent() || body_truncated || !retries_left {
        e.set_retry(false);
    } else {
        e.retry.decide_reuse(client_reused);
    }
    e
}

/// Records the current backend as tried; `passive` also counts a health failure against it.
/// Returns whether another attempt is allowed.
fn note_failed_attempt(ctx: &mut RequestCtx, passive: bool) -> bool {
    let Some(pool) = &ctx.pool else { return false };
    if let Some(idx) = ctx.backend {
        if !ctx.tried.contains(&idx) {
            ctx.tried.push(idx);
        }
        if passive {
            let fall = pool.config.health_check.as_ref().map_or(1, |h| h.fall);
            if pool.backends[idx].record_failure(fall) {
                tracing::warn!(pool = %pool.name, backend = %pool.backends[idx].addr, by = "failed connects", "backend taken out of the pool");
            }
        }
    }
    ctx.tried.len() <= pool.config.retries
}

/// Headers the backend sees: the request id and the client address.
pub fn prepare_upstream_request(
    upstream: &mut RequestHeader,
    client: Option<&PeerAddr>,
    ctx: &RequestCtx,
) -> Result<()> {
    upstream.insert_header(edge_signature::REQUEST_ID_HEADER, &ctx.request_id)?;
    if let Some(ip) = client.and_then(|a| a.as_inet()).map(|a| a.ip()) {
        let xff = match header_str(upstream, "x-forwarded-for") {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        upstream.insert_header("x-forwarded-for", xff)?;
    }
    Ok(())
}

/// Answers a request that failed: 503 with `Retry-After` when no backend is left, 502/504 for
/// upstream failures, always with the request id.
pub async fn fail_to_proxy(session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
    let code = match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    };
    if code > 0 {
        let reason = match code {
            503 => "no backend available, retry shortly",
            504 => "the backend did not answer in time",
            502 => "the backend failed",
            400 => "bad request",
            _ => "internal error",
        };
        let extra: &[(&str, &str)] = if code == 503 {
            &[("retry-after", "1")]
        } else {
            &[]
        };
        if let Err(err) = respond(session, ctx, code, reason, extra).await {
            tracing::debug!(error = %err, "could not send the error response");
        }
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

/// Writes a complete JSON response carrying the reason and the request id.
pub async fn respond(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    reason: &str,
    extra: &[(&str, &str)],
) -> Result<()> {
    let body = error_body(reason, &ctx.request_id);
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header(edge_signature::REQUEST_ID_HEADER, &ctx.request_id)?;
    for (name, value) in extra {
        resp.insert_header(name.to_string(), *value)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_request_id() -> String {
    static RNG: std::sync::OnceLock<ring::rand::SystemRandom> = std::sync::OnceLock::new();
    let mut bytes = [0u8; 16];
    if RNG
        .get_or_init(ring::rand::SystemRandom::new)
        .fill(&mut bytes)
        .is_err()
    {
        // The OS refused randomness: fall back to time, which is unique enough for an id.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = nanos.to_le_bytes();
    }
    edge_signature::request_id_from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_signature::SigningKey;
    use std::sync::Arc;

    fn auth(cidrs: &[&str]) -> EdgeAuth {
        EdgeAuth {
            key: SigningKey::new(b"0123456789abcdef0123").map(Arc::new),
            max_skew_secs: 60,
            allow_cidrs: cidrs.iter().map(|c| c.parse().expect("cidr")).collect(),
        }
    }

    fn request(sig: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/api/catalog?page=2", None).expect("request");
        if let Some(s) = sig {
            req.insert_header("x-edge-signature", s).expect("header");
        }
        req
    }

    #[test]
    fn signed_requests_pass_and_others_get_403() {
        let a = auth(&[]);
        let key = SigningKey::new(b"0123456789abcdef0123").expect("key");
        let good = key.sign("GET", "/api/catalog?page=2", 1_000, "rid");
        let ip = Some("203.0.113.9".parse().expect("ip"));
        assert!(authenticate(&a, &request(Some(&good)), ip, Some("rid"), 1_010).is_ok());
        for (req, id, now) in [
            (request(None), Some("rid"), 1_010),
            (request(Some(&good)), Some("other"), 1_010),
            (request(Some(&good)), Some("rid"), 2_000),
            (request(Some("t=1,v1=00")), Some("rid"), 1_010),
        ] {
            let r = authenticate(&a, &req, ip, id, now).expect_err("refused");
            assert_eq!(r.status, 403);
        }
    }

    #[test]
    fn allowlisted_clients_need_no_signature() {
        let a = auth(&["10.0.0.0/8"]);
        assert!(authenticate(
            &a,
            &request(None),
            Some("10.1.2.3".parse().expect("ip")),
            None,
            0
        )
        .is_ok());
        assert!(authenticate(
            &a,
            &request(None),
            Some("11.1.2.3".parse().expect("ip")),
            None,
            0
        )
        .is_err());
    }
}
