//! What the proxy does in each phase, as plain functions over the request and its context.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::proxy::FailToProxy;
use pingora::ErrorType;
use ring::rand::SecureRandom;

use crate::config::{EdgeAuth, HashKey};
use crate::metrics::Metrics;
use crate::proxy::{error_body, RequestCtx};
use crate::state::State;

/// A request refused before it reaches a backend.
#[derive(Debug)]
pub struct Refusal {
    /// HTTP status to answer with.
    pub status: u16,
    /// A reason safe to show the client.
    pub reason: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
        retry_after: None,
    }
}

/// Request id, route, edge authentication and the pool's concurrency limit: decides whether
/// the request may go on, and if so holds its slot in the pool.
pub fn admit(
    state: std::sync::Arc<State>,
    metrics: &Metrics,
    req: &dyn Head,
    client_ip: Option<IpAddr>,
    ctx: &mut RequestCtx,
) -> Result<(), Refusal> {
    let sent_id = req.header(edge_signature::REQUEST_ID_HEADER);
    ctx.request_id = match sent_id {
        Some(id) if edge_signature::is_valid_request_id(id) => id.to_owned(),
        _ => new_request_id(),
    };
    let host = req.header("host").or_else(|| req.uri_host());
    let path = req.path();
    let index = state.config.route_index(host, path, Some(req.method()));
    // A span per request, at debug level: an enabled span costs its fields' formatting and
    // the registry's bookkeeping on every request (about 3,000 instructions, 15 % of the
    // WAF-off proxy's own work), so it exists only under `RUST_LOG=origin_proxy=debug`; the
    // info and warn events of a request name its request id themselves.
    ctx.span = match index.and_then(|i| state.routes.get(i)) {
        Some(r) => {
            tracing::debug_span!("request", request_id = %ctx.request_id, route = %r.route.name)
        }
        None => {
            tracing::debug_span!("request", request_id = %ctx.request_id, route = tracing::field::Empty)
        }
    };
    ctx.state = Some(state.clone());
    let route = index
        .and_then(|i| state.routes.get(i))
        .ok_or_else(|| refuse(404, format!("no route for {} {path}", req.method())))?;
    ctx.route = index;
    authenticate(&state.config.edge_auth, req, client_ip, sent_id, unix_now)?;
    let pool = route.pool_for(req.method()).clone();
    if let Some(key) = &pool.config.hash_key {
        ctx.hash_key = hash_key(req, key);
    }
    ctx.pool_stats = state.pool_stats(&pool.name).cloned();
    match pool.try_admit() {
        Some(permit) => ctx.permit = Some(permit),
        None => {
            if let Some(s) = &ctx.pool_stats {
                s.sheds.fetch_add(1, Ordering::Relaxed);
            }
            metrics.window.shed(crate::monotonic_ms() / 1_000);
            tracing::debug!(parent: &ctx.span, pool = %pool.name, "shed: pool at its concurrency limit");
            let retry_after = Some(pool.config.retry_after_secs);
            ctx.pool = Some(pool);
            return Err(Refusal {
                status: 503,
                reason: "too busy, retry shortly".into(),
                retry_after,
            });
        }
    }
    ctx.pool = Some(pool);
    Ok(())
}

/// The waiting room's admission check, when the config has one: a request for a guarded path
/// needs a valid pass.
pub fn check_admission(ctx: &RequestCtx, req: &dyn Head) -> Result<(), Refusal> {
    let Some(admission) = ctx.state.as_ref().and_then(|s| s.config.admission.as_ref()) else {
        return Ok(());
    };
    admission.check(req.path(), req.header("cookie"), crate::waf::unix_ms())
}

/// The hash key of a request: a cookie's or a header's value.
fn hash_key(req: &dyn Head, key: &HashKey) -> Option<Vec<u8>> {
    match key {
        HashKey::Header(name) => {
            let mut first = None;
            req.for_each_value(name, &mut |v| {
                first.get_or_insert_with(|| v.to_vec());
            });
            first
        }
        HashKey::Cookie(name) => {
            let mut found = None;
            req.for_each_value("cookie", &mut |v| {
                let Ok(v) = std::str::from_utf8(v) else {
                    return;
                };
                if found.is_some() || !is_visible(v.as_bytes()) {
                    return;
                }
                found = v
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_bytes().to_vec());
            });
            found
        }
    }
}

/// Accepts the request if the client is allowlisted or its edge signature is valid and fresh.
pub fn authenticate(
    auth: &EdgeAuth,
    req: &dyn Head,
    client_ip: Option<IpAddr>,
    sent_id: Option<&str>,
    now: impl FnOnce() -> u64,
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
    key.verify(
        req.header(edge_signature::SIGNATURE_HEADER),
        req.method(),
        req.path_and_query(),
        sent_id.unwrap_or(""),
        now(),
        auth.max_skew_secs,
    )
    .map_err(|e| refuse(403, e.to_string()))
}

/// One attempt at a backend: where it listens and the timeouts it gets.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// The backend's address.
    pub addr: std::net::SocketAddr,
    /// Connect timeout, clipped to what the total timeout leaves.
    pub connect: Duration,
    /// Timeout of each read, clipped likewise.
    pub read: Duration,
    /// Timeout of each write, clipped likewise.
    pub write: Duration,
}

/// The next backend for this request as a Pingora peer (see [`pick_backend`]).
pub fn pick_peer(ctx: &mut RequestCtx, now_ms: u64) -> Result<Box<HttpPeer>> {
    let attempt = pick_backend(ctx, now_ms)?;
    let lease = ctx
        .lease
        .as_ref()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "attempt without a lease"))?;
    let mut peer = Box::new(lease.backend().peer.clone());
    peer.options.connection_timeout = Some(attempt.connect);
    peer.options.read_timeout = Some(attempt.read);
    peer.options.write_timeout = Some(attempt.write);
    Ok(peer)
}

/// The next backend for this request, with timeouts clipped to what the total timeout leaves;
/// a 503 when no eligible backend is left, a 504 when the total timeout is spent.
pub fn pick_backend(ctx: &mut RequestCtx, now_ms: u64) -> Result<Attempt> {
    let pool = ctx
        .pool
        .clone()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no pool"))?;
    let cfg = &pool.config;
    let remaining = match cfg.total_timeout {
        Some(total) => {
            let left = total.saturating_sub(ctx.start.elapsed());
            if left.is_zero() {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(504),
                    format!("total timeout of pool {} spent", pool.name),
                ));
            }
            left
        }
        None => Duration::MAX,
    };
    // The previous attempt's slot goes back before the next one is taken.
    ctx.lease = None;
    let Some((idx, lease)) = pool.pick(ctx.hash_key.as_deref(), &ctx.tried, now_ms) else {
        return Err(Error::explain(
            ErrorType::HTTPStatus(503),
            format!("no backend available in pool {}", pool.name),
        ));
    };
    let attempt = Attempt {
        addr: lease.backend().addr,
        connect: cfg.connect_timeout.min(remaining),
        read: cfg.read_timeout.min(remaining),
        write: cfg.write_timeout.min(remaining),
    };
    ctx.lease = Some(lease);
    ctx.backend = Some(idx);
    ctx.attempts += 1;
    ctx.upstream_start = Some(Instant::now());
    Ok(attempt)
}

/// A connect failed: count it against the backend and retry an idempotent request elsewhere
/// while retries remain.
pub fn on_connect_failure(
    idempotent: bool,
    ctx: &mut RequestCtx,
    mut e: Box<Error>,
    now_ms: u64,
) -> Box<Error> {
    note_passive_failure(ctx, now_ms);
    let retry = note_tried(ctx) && idempotent;
    e.set_retry(retry);
    if retry {
        count_retry(ctx);
    }
    e
}

/// An error after connecting (a read timeout, a reset, a closed connection). An idempotent
/// request whose response has not started and whose body is still buffered is retried on
/// another backend; anything else fails. A failure on a fresh connection, or a timeout, counts
/// against the backend; an error on a reused keepalive connection does not (the backend may
/// simply have closed it).
#[allow(clippy::too_many_arguments)]
pub fn on_proxy_error(
    peer: &dyn std::fmt::Display,
    idempotent: bool,
    body_truncated: bool,
    response_started: bool,
    ctx: &mut RequestCtx,
    e: Box<Error>,
    client_reused: bool,
    now_ms: u64,
) -> Box<Error> {
    let mut e = e.more_context(format!("Peer: {peer}"));
    // The client going away is not the backend's fault, and nobody is left to retry for.
    let upstream = e.esource() == &ErrorSource::Upstream;
    let timeout = matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    );
    if upstream && (timeout || !client_reused) {
        note_passive_failure(ctx, now_ms);
    }
    let retries_left = note_tried(ctx);
    let retry = upstream && idempotent && !body_truncated && !response_started && retries_left;
    e.set_retry(retry);
    if retry {
        count_retry(ctx);
        tracing::info!(parent: &ctx.span, request_id = %ctx.request_id, error = %e.etype().as_str(), "retrying on another backend");
    }
    e
}

/// The backend answered: record latency (histograms and the peak EWMA) and whether the answer
/// counts as a passive failure (5xx) or a success.
pub fn on_upstream_response(metrics: &Metrics, status: u16, ctx: &mut RequestCtx, now_ms: u64) {
    ctx.upstream_status = Some(status);
    let latency = ctx.upstream_start.map(|t| t.elapsed());
    if let (Some(latency), Some(stats)) = (latency, &ctx.pool_stats) {
        let secs = latency.as_secs_f64();
        stats.latency.observe(secs);
        metrics.window.latency(secs, now_ms / 1_000);
    }
    let Some(lease) = &ctx.lease else { return };
    let backend = lease.backend();
    if let Some(latency) = latency {
        backend.record_latency(latency.as_secs_f64() * 1e6, now_ms);
    }
    if status >= 500 {
        note_passive_failure(ctx, now_ms);
    } else {
        backend.record_passive_success();
    }
}

/// Records the current backend as tried. Returns whether another attempt is allowed.
fn note_tried(ctx: &mut RequestCtx) -> bool {
    let Some(pool) = &ctx.pool else { return false };
    if let Some(idx) = ctx.backend {
        if !ctx.tried.contains(&idx) {
            ctx.tried.push(idx);
        }
    }
    ctx.tried.len() <= pool.config.retries
}

/// Counts a failure against the current backend; ejects it after enough in a row.
fn note_passive_failure(ctx: &RequestCtx, now_ms: u64) {
    let (Some(pool), Some(lease)) = (&ctx.pool, &ctx.lease) else {
        return;
    };
    let passive = pool.config.passive;
    let backend = lease.backend();
    let eject_ms = u64::try_from(passive.eject.as_millis()).unwrap_or(u64::MAX);
    if backend.record_passive_failure(passive.max_failures, eject_ms, now_ms) {
        if let Some(s) = &ctx.pool_stats {
            s.ejections.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(parent: &ctx.span, request_id = %ctx.request_id, pool = %pool.name, backend = %backend.addr, eject_ms, "backend taken out of the pool (ejected after consecutive failures)");
    }
}

fn count_retry(ctx: &mut RequestCtx) {
    ctx.retries += 1;
    if let Some(s) = &ctx.pool_stats {
        s.retries.fetch_add(1, Ordering::Relaxed);
    }
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

/// Answers a request that failed: 503 with `Retry-After` when no backend is left or none could
/// be connected to, 504 for timeouts after connecting, 502 for other upstream failures, always
/// with the request id.
pub async fn fail_to_proxy(session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
    let code = failure_status(e);
    // Once the response has started, the only honest thing left is to close the connection.
    if code > 0 && session.response_written().is_none() {
        // The connection is closed after this answer: say so, or a client that pools
        // connections sends its next request into a closed socket.
        session.set_keepalive(None);
        let retry_after = retry_after(ctx);
        let extra: &[(&str, &str)] = if code == 503 {
            &[("retry-after", retry_after.as_str())]
        } else {
            &[]
        };
        if let Err(err) = respond(session, ctx, code, failure_reason(code), extra).await {
            tracing::debug!(parent: &ctx.span, error = %err, "could not send the error response");
        }
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

/// The `Retry-After` seconds of a 503 for this request: its pool's, or 1.
pub fn retry_after(ctx: &RequestCtx) -> String {
    ctx.pool
        .as_ref()
        .map_or(1, |p| p.config.retry_after_secs)
        .to_string()
}

/// What a client is told when its request failed: 503 when no backend is left or none could be
/// connected to, 504 for timeouts after connecting, 502 for other upstream failures, 400 for a
/// malformed request, 0 when the client went away (nobody to answer).
pub fn failure_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        // No backend could be reached: nothing was sent, so a later retry is safe.
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
            if e.esource() == &ErrorSource::Upstream =>
        {
            503
        }
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
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
    }
}

/// The reason given with a [`failure_status`].
pub fn failure_reason(code: u16) -> &'static str {
    match code {
        503 => "no backend available, retry shortly",
        504 => "the backend did not answer in time",
        502 => "the backend failed",
        400 => "bad request",
        _ => "internal error",
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

/// Counts the finished request: by route and status, and in the recent window.
pub fn count_response(metrics: &Metrics, status: u16, ctx: &RequestCtx, now_ms: u64) {
    if let (Some(state), Some(i)) = (&ctx.state, ctx.route) {
        if let Some(r) = state.routes.get(i) {
            r.stats.count(status);
        }
    }
    metrics.window.response(status, now_ms / 1_000);
}

fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// What the phases read of a request head: Pingora's parsed header, or the HTTP/1 fast path's
/// (see [`crate::fast`]). Both answer alike: lowercase names, the first value of a header, and
/// values as text only when they are visible ASCII (as `HeaderValue::to_str`).
pub trait Head {
    /// The method, as sent.
    fn method(&self) -> &str;
    /// The path, without the query.
    fn path(&self) -> &str;
    /// Path and query as sent (`/` when empty).
    fn path_and_query(&self) -> &str;
    /// The host of an absolute-form target.
    fn uri_host(&self) -> Option<&str>;
    /// Calls `f` with each value of header `name` (lowercase), in order.
    fn for_each_value(&self, name: &str, f: &mut dyn FnMut(&[u8]));
    /// The first value of header `name` (lowercase), if it is text.
    fn header(&self, name: &str) -> Option<&str>;
}

impl Head for RequestHeader {
    fn method(&self) -> &str {
        self.method.as_str()
    }
    fn path(&self) -> &str {
        self.uri.path()
    }
    fn path_and_query(&self) -> &str {
        self.uri.path_and_query().map_or("/", |pq| pq.as_str())
    }
    fn uri_host(&self) -> Option<&str> {
        self.uri.host()
    }
    fn for_each_value(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        for v in self.headers.get_all(name) {
            f(v.as_bytes());
        }
    }
    fn header(&self, name: &str) -> Option<&str> {
        header_str(self, name)
    }
}

/// Whether header bytes are text as `HeaderValue::to_str` sees it: tab or visible ASCII.
pub fn is_visible(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// Whether a method is idempotent (RFC 9110): such requests may be sent again elsewhere.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh request id: 8 random bytes drawn once per process, then a counter. Ids must be
/// unique, not secret, and this keeps a syscall off every request.
fn new_request_id() -> String {
    static PREFIX: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
            // The OS refused randomness: fall back to time, which is unique enough for an id.
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes = (nanos as u64).to_le_bytes();
        }
        bytes
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(prefix);
    bytes[8..].copy_from_slice(&n.to_be_bytes());
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
        assert!(authenticate(&a, &request(Some(&good)), ip, Some("rid"), || 1_010).is_ok());
        for (req, id, now) in [
            (request(None), Some("rid"), 1_010),
            (request(Some(&good)), Some("other"), 1_010),
            (request(Some(&good)), Some("rid"), 2_000),
            (request(Some("t=1,v1=00")), Some("rid"), 1_010),
        ] {
            let r = authenticate(&a, &req, ip, id, || now).expect_err("refused");
            assert_eq!(r.status, 403);
        }
    }

    fn pool(total_ms: Option<u64>) -> Arc<crate::balance::Pool> {
        let text = format!(
            "listen = \"127.0.0.1:8080\"\n[edge-auth]\nallow-cidrs = [\"127.0.0.0/8\"]\n\
             [pools.shop]\nbackends = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n\
             read-timeout-ms = 30000\nretries = 1\n{}\n[[routes]]\npool = \"shop\"\n",
            total_ms.map_or(String::new(), |t| format!("total-timeout-ms = {t}"))
        );
        let c = crate::config::Config::from_toml(std::path::Path::new("p.toml"), &text, &|_| None)
            .expect("valid");
        Arc::new(crate::balance::Pool::new("shop", c.pools["shop"].clone()))
    }

    #[test]
    fn attempts_go_to_untried_backends_and_their_timeouts_fit_the_total() {
        let mut ctx = RequestCtx::new();
        ctx.pool = Some(pool(Some(1_000)));
        let first = pick_peer(&mut ctx, 0).expect("first attempt");
        assert!(first.options.read_timeout.expect("set") <= Duration::from_secs(1));
        let failed = ctx.backend;
        let e = on_connect_failure(
            is_idempotent("GET"),
            &mut ctx,
            Error::new(ErrorType::ConnectRefused),
            0,
        );
        assert!(e.retry(), "an idempotent request is retried");
        assert_eq!(ctx.retries, 1);
        pick_peer(&mut ctx, 0).expect("second attempt");
        assert_ne!(ctx.backend, failed, "the retry lands elsewhere");
        let e = on_connect_failure(
            is_idempotent("GET"),
            &mut ctx,
            Error::new(ErrorType::ConnectRefused),
            0,
        );
        assert!(!e.retry(), "retries = 1 allows two attempts");

        // A spent total timeout ends the request with a 504 before another attempt.
        let mut late = RequestCtx::new();
        late.pool = Some(pool(Some(1_000)));
        late.start = Instant::now() - Duration::from_secs(2);
        let e = pick_peer(&mut late, 0).expect_err("too late");
        assert_eq!(e.etype(), &ErrorType::HTTPStatus(504));
    }

    #[test]
    fn a_post_is_never_retried() {
        let mut ctx = RequestCtx::new();
        ctx.pool = Some(pool(None));
        pick_peer(&mut ctx, 0).expect("attempt");
        let e = on_connect_failure(
            is_idempotent("POST"),
            &mut ctx,
            Error::new(ErrorType::ConnectRefused),
            0,
        );
        assert!(!e.retry());
    }

    #[test]
    fn fresh_request_ids_are_valid_and_unique() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert!(edge_signature::is_valid_request_id(&a), "{a}");
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn allowlisted_clients_need_no_signature() {
        let a = auth(&["10.0.0.0/8"]);
        assert!(authenticate(
            &a,
            &request(None),
            Some("10.1.2.3".parse().expect("ip")),
            None,
            || 0
        )
        .is_ok());
        assert!(authenticate(
            &a,
            &request(None),
            Some("11.1.2.3".parse().expect("ip")),
            None,
            || 0
        )
        .is_err());
    }
}
