//! The HTTP/1.1 fast path: plain requests are proxied here, on Pingora's listener, without
//! Pingora's per-request session machinery; everything else goes to Pingora's proxy.
//!
//! `bench/proxy` split the gap between origin-proxy and nginx into its parts (see
//! `bench/README.md`): most of it was pingora-proxy's loop (a downstream and an upstream task
//! joined by channels, per request) and Pingora's HTTP/1 sessions (header maps, case maps,
//! re-serialising both heads). This path runs one task per connection that reads a request,
//! runs the same phases as the Pingora path ([`crate::phases`]: route, edge authentication,
//! admission, WAF, balancing, retries, passive health, metrics, access log), forwards the head
//! it read with the proxy's own headers added and hop-by-hop ones removed, and streams the
//! response back.
//!
//! **What it takes.** An HTTP/1.1 request whose head parses strictly (`httparse`, at most
//! [`MAX_HEAD`] bytes and [`MAX_HEADERS`] headers), with an origin-form target of plain
//! characters, no `Transfer-Encoding`, `Upgrade`, `Expect` or `TE`, at most one `Host` and one
//! `Content-Length`, a body of at most [`MAX_BODY`] bytes, and `Connection` saying at most
//! `close` or `keep-alive`. **Anything else** (HTTP/1.0, chunked or large bodies, upgrades,
//! h2c, malformed heads) is handed, with the bytes already read, to Pingora's proxy, which
//! serves the rest of that connection: Pingora decides on everything unusual, including the
//! 400s.
//!
//! **Responses** from a backend are framed by `Content-Length`, chunked encoding (checked
//! chunk by chunk, so the end of the message is known) or the end of the connection (then the
//! client's connection closes too). Heads above [`MAX_RESPONSE_HEAD`] bytes or
//! [`MAX_RESPONSE_HEADERS`] headers, bad lengths and bad chunks are a 502 (or a closed
//! connection once the response has started).
//!
//! **Caps and timeouts.** A client connection waits [`KEEPALIVE`] for its next request and
//! [`REQUEST_TIMEOUT`] for the rest of one once it has begun; writes to the client time out
//! after [`CLIENT_WRITE_TIMEOUT`]. Backend connect, read and write timeouts are the pool's.
//! Idle backend connections are kept per backend address, at most [`IDLE_PER_BACKEND`] each,
//! for at most [`IDLE_MAX_AGE`]. An idle connection the backend closed meanwhile is detected
//! when reused: an idempotent request is sent again on a new connection; a non-idempotent one
//! is only sent on an idle connection that a non-blocking read shows open.
//!
//! `http1-fast-path = false` in the config sends every connection to Pingora's proxy.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorType};
use std::future::Future;
use std::task::Poll;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::access_log::AccessLog;
use crate::metrics::Metrics;
use crate::phases::{self, Attempt, Head, Refusal};
use crate::proxy::{error_body, OriginProxy, RequestCtx};
use crate::state::SharedState;

/// Request heads larger than this go to Pingora's proxy.
pub const MAX_HEAD: usize = 16 * 1024;
/// Requests with more headers than this go to Pingora's proxy.
pub const MAX_HEADERS: usize = 64;
/// Request bodies larger than this go to Pingora's proxy (which streams them); it is also the
/// WAF's inspection cap, [`crate::waf::MAX_INSPECTED_BODY`].
pub const MAX_BODY: usize = crate::waf::MAX_INSPECTED_BODY;
/// The largest response head taken from a backend.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// The most headers taken in a backend's response.
pub const MAX_RESPONSE_HEADERS: usize = 128;
/// How long an idle client connection waits for its next request (Pingora's default).
pub const KEEPALIVE: Duration = Duration::from_secs(60);
/// How often a connection waiting for its next request looks whether the server is shutting
/// down (then it closes).
pub const SHUTDOWN_POLL: Duration = Duration::from_secs(1);
/// How long the rest of a request may take once its first byte arrived.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of each write to the client.
pub const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per backend address.
pub const IDLE_PER_BACKEND: usize = 128;
/// Idle backend connections older than this are closed instead of reused.
pub const IDLE_MAX_AGE: Duration = Duration::from_secs(30);

/// Idle backend connections by address, each with when it was parked.
type IdlePool = HashMap<SocketAddr, Vec<(TcpStream, Instant)>, foldhash::fast::RandomState>;

/// The listener's application: the fast path, and Pingora's proxy for everything else.
pub struct OriginApp {
    fallback: Arc<HttpProxy<OriginProxy>>,
    state: SharedState,
    metrics: Arc<Metrics>,
    access_log: AccessLog,
    /// Idle backend connections by address (configured addresses, not the client's: a fast
    /// hasher, where SipHash took 2 × 230 instructions a request).
    idle: Mutex<IdlePool>,
}

/// What happens to a client connection after a request.
enum Next {
    KeepAlive,
    Close,
    /// Pingora's proxy takes the connection over, with the bytes already read.
    Pingora,
}

impl OriginApp {
    /// The app over `proxy` (the fallback, sharing its state and metrics).
    pub fn new(
        fallback: HttpProxy<OriginProxy>,
        state: SharedState,
        metrics: Arc<Metrics>,
    ) -> Self {
        OriginApp {
            fallback: Arc::new(fallback),
            state,
            metrics,
            access_log: AccessLog,
            idle: Mutex::new(HashMap::default()),
        }
    }

    async fn hand_over(&self, stream: Stream, buf: BytesMut, shutdown: &ShutdownWatch) {
        self.metrics
            .pingora_handovers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(if *shutdown.borrow() {
            None
        } else {
            Some(KEEPALIVE.as_secs())
        });
        if !buf.is_empty() {
            session.set_pipelined_prefix(buf);
        }
        let mut result = self.fallback.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = result.map(|r| r.consume()) {
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            result = self.fallback.process_new_http(session, shutdown).await;
        }
    }

    /// Reads, judges and forwards one request.
    async fn one(
        &self,
        down: &mut Stream,
        buf: &mut BytesMut,
        client: &Client,
        shutdown: &mut ShutdownWatch,
    ) -> Next {
        let client_ip = client.ip;
        let head = match read_request(down, buf, shutdown).await {
            Read::Request(h) => h,
            Read::Closed => return Next::Close,
            Read::Other => return Next::Pingora,
        };
        let head_len = head.len;
        let total = head_len + head.content_length;
        let raw = buf.split_to(total);
        let head = head.bind(&raw);
        let body = &raw[head_len..];
        let mut ctx = RequestCtx::new();
        let state = self.state.load_full();
        let gate = phases::admit(state, &self.metrics, &head, client_ip, &mut ctx)
            .and_then(|()| phases::check_admission(&ctx, &head))
            .and_then(|()| self.waf(&ctx, &head, body, client_ip));
        let client_close = head.close || *shutdown.borrow();
        let (status, error, close) = match gate {
            Err(refusal) => {
                let retry_after = refusal.retry_after.map(|s| s.to_string());
                let extra: Vec<(&str, &str)> = retry_after
                    .iter()
                    .map(|s| ("retry-after", s.as_str()))
                    .collect();
                let bytes = error_response(
                    refusal.status,
                    &refusal.reason,
                    &ctx.request_id,
                    &extra,
                    client_close,
                );
                let ok = write_client(down, &bytes).await;
                ctx.refused = Some(refusal.reason);
                (refusal.status, None, client_close || !ok)
            }
            Ok(()) => {
                self.forward(down, &head, body, client, &mut ctx, client_close)
                    .await
            }
        };
        phases::count_response(&self.metrics, status, &ctx, crate::monotonic_ms());
        self.metrics
            .fast_path_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.access_log
            .write(head.method(), head.path(), status, error, &ctx);
        if close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    fn waf(
        &self,
        ctx: &RequestCtx,
        head: &FastHead<'_>,
        body: &[u8],
        client_ip: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        let Some(waf) = ctx.state.as_ref().and_then(|s| s.config.waf.as_ref()) else {
            return Ok(());
        };
        let headers = head
            .headers()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).to_ascii_lowercase(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        let view = crate::waf::view(
            head.method(),
            head.path_and_query(),
            "HTTP/1.1".to_owned(),
            headers,
            body.to_vec(),
            client_ip,
        );
        match crate::waf::judge(waf, &view, &self.metrics, &ctx.request_id) {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// Sends the request to a backend (retrying as the pool allows) and its answer to the
    /// client. Returns the status sent, the error that ended the request, and whether the
    /// client connection must close.
    async fn forward(
        &self,
        down: &mut Stream,
        head: &FastHead<'_>,
        body: &[u8],
        client: &Client,
        ctx: &mut RequestCtx,
        client_close: bool,
    ) -> (u16, Option<&'static str>, bool) {
        let idempotent = phases::is_idempotent(head.method());
        let request = upstream_request(head, body, client.text.as_deref(), &ctx.request_id);
        let no_body = head.method() == "HEAD";
        loop {
            let attempt = match phases::pick_backend(ctx, crate::monotonic_ms()) {
                Ok(a) => a,
                Err(e) => return self.fail(down, ctx, &e).await,
            };
            let exchange = Exchange {
                attempt,
                request: &request,
                idempotent,
                no_body,
                client_close,
            };
            match self.exchange(down, ctx, &exchange).await {
                Ok(done) => return done,
                Err(e) if e.retry() => continue,
                Err(e) => return self.fail(down, ctx, &e).await,
            }
        }
    }

    /// Answers a request that could not be proxied, as [`phases::fail_to_proxy`] does.
    async fn fail(
        &self,
        down: &mut Stream,
        ctx: &RequestCtx,
        e: &Error,
    ) -> (u16, Option<&'static str>, bool) {
        let code = phases::failure_status(e);
        if code > 0 {
            let retry_after = phases::retry_after(ctx);
            let extra: &[(&str, &str)] = if code == 503 {
                &[("retry-after", retry_after.as_str())]
            } else {
                &[]
            };
            let bytes = error_response(
                code,
                phases::failure_reason(code),
                &ctx.request_id,
                extra,
                true,
            );
            write_client(down, &bytes).await;
        }
        (code, Some(e.etype().as_str()), true)
    }

    /// An idle connection to `addr`, if one is kept; when `check` is set, only one that a
    /// non-blocking read shows open and silent.
    fn take_idle(&self, addr: SocketAddr, check: bool) -> Option<TcpStream> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&addr)?;
        while let Some((stream, since)) = list.pop() {
            if since.elapsed() > IDLE_MAX_AGE {
                continue;
            }
            if check {
                let mut probe = [0u8; 1];
                match stream.try_read(&mut probe) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    _ => continue,
                }
            }
            return Some(stream);
        }
        None
    }

    fn park(&self, addr: SocketAddr, stream: TcpStream) {
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(addr).or_default();
            if list.len() >= IDLE_PER_BACKEND {
                list.remove(0);
            }
            list.push((stream, Instant::now()));
        }
    }

    /// One attempt on one backend. `Err` means nothing reached the client yet; the error has
    /// been through the phases, so its retry flag says whether to try another backend.
    async fn exchange(
        &self,
        down: &mut Stream,
        ctx: &mut RequestCtx,
        x: &Exchange<'_>,
    ) -> Result<(u16, Option<&'static str>, bool), Box<Error>> {
        let addr = x.attempt.addr;
        let mut fresh_only = false;
        let (mut up, reused, mut rbuf, resp) = loop {
            let idle = if fresh_only {
                None
            } else {
                self.take_idle(addr, !x.idempotent)
            };
            let (mut up, reused) = match idle {
                Some(s) => (s, true),
                None => match connect(addr, x.attempt.connect).await {
                    Ok(s) => (s, false),
                    Err(e) => {
                        let now = crate::monotonic_ms();
                        return Err(phases::on_connect_failure(x.idempotent, ctx, e, now));
                    }
                },
            };
            let mut rbuf = BytesMut::with_capacity(8192);
            let sent = send_and_read_head(&mut up, x, &mut rbuf).await;
            match sent {
                Ok(resp) => break (up, reused, rbuf, resp),
                // The backend closed the idle connection before it saw the request: send it
                // again on a new one, once.
                Err(e) if reused && x.idempotent && rbuf.is_empty() && !is_timeout(&e) => {
                    tracing::debug!(parent: &ctx.span, error = %e, "idle backend connection was closed; sending again");
                    fresh_only = true;
                }
                Err(e) => {
                    let now = crate::monotonic_ms();
                    let peer = PeerName(addr);
                    return Err(phases::on_proxy_error(
                        &peer,
                        x.idempotent,
                        false,
                        false,
                        ctx,
                        e,
                        reused,
                        now,
                    ));
                }
            }
        };
        let now = crate::monotonic_ms();
        phases::on_upstream_response(&self.metrics, resp.status, ctx, now);
        let framing = if x.no_body || resp.status == 204 || resp.status == 304 {
            Framing::Empty
        } else {
            resp.framing
        };
        let close_client = x.client_close || framing == Framing::Close;
        let mut resp = resp;
        let mut out = resp.client_head(&ctx.request_id, close_client);
        rbuf.advance(resp.len);
        let mut body = BodyState::new(framing);
        let taken = match body.feed(&rbuf) {
            Ok(n) => n,
            Err(e) => return Err(self.mid_body(ctx, addr, e, reused, x.idempotent)),
        };
        out.extend_from_slice(&rbuf[..taken]);
        let mut leftover = rbuf.len() > taken;
        rbuf.clear();
        let status = resp.status;
        if !write_client(down, &out).await {
            return Ok((status, Some("WriteError"), true));
        }
        while !body.done() {
            // After the head the buffer's tail may be small: read the body in large pieces.
            rbuf.reserve(16 * 1024);
            let read = timed(x.attempt.read, up.read_buf(&mut rbuf)).await;
            let n = match read {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    let e = Error::because(ErrorType::ReadError, "reading the response body", e)
                        .into_up();
                    self.mid_body(ctx, addr, e, reused, x.idempotent);
                    return Ok((status, Some("ReadError"), true));
                }
                Err(_) => {
                    let e = Error::new_up(ErrorType::ReadTimedout);
                    self.mid_body(ctx, addr, e, reused, x.idempotent);
                    return Ok((status, Some("ReadTimedout"), true));
                }
            };
            if n == 0 {
                if body.framing == Framing::Close {
                    break;
                }
                let e = Error::explain(ErrorType::ConnectionClosed, "backend closed mid-body")
                    .into_up();
                self.mid_body(ctx, addr, e, reused, x.idempotent);
                return Ok((status, Some("ConnectionClosed"), true));
            }
            let taken = match body.feed(&rbuf) {
                Ok(n) => n,
                Err(e) => {
                    self.mid_body(ctx, addr, e, reused, x.idempotent);
                    return Ok((status, Some("InvalidHTTPHeader"), true));
                }
            };
            leftover |= rbuf.len() > taken;
            if !write_client(down, &rbuf[..taken]).await {
                return Ok((status, Some("WriteError"), true));
            }
            rbuf.clear();
        }
        if resp.reusable && framing != Framing::Close && !leftover {
            self.park(addr, up);
        } else {
            let _ = up.shutdown().await;
        }
        Ok((status, None, close_client))
    }

    /// A backend failed after the response began: counted like any backend error (never
    /// retried, since the client already has part of the answer).
    fn mid_body(
        &self,
        ctx: &mut RequestCtx,
        addr: SocketAddr,
        e: Box<Error>,
        reused: bool,
        idempotent: bool,
    ) -> Box<Error> {
        let now = crate::monotonic_ms();
        phases::on_proxy_error(
            &PeerName(addr),
            idempotent,
            false,
            true,
            ctx,
            e,
            reused,
            now,
        )
    }
}

#[async_trait]
impl ServerApp for OriginApp {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if !self.state.load().config.http1_fast_path {
            self.hand_over(stream, BytesMut::new(), shutdown).await;
            return None;
        }
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let client = Client {
            ip,
            text: ip.map(|ip| ip.to_string()),
        };
        let mut buf = BytesMut::with_capacity(4096);
        let mut watch = shutdown.clone();
        loop {
            match self.one(&mut stream, &mut buf, &client, &mut watch).await {
                Next::KeepAlive => {}
                Next::Close => return None,
                Next::Pingora => {
                    self.hand_over(stream, buf, shutdown).await;
                    return None;
                }
            }
        }
    }

    async fn cleanup(&self) {
        self.fallback.http_cleanup().await;
    }
}

/// The client of a connection: its address, and that address as `X-Forwarded-For` writes it.
struct Client {
    ip: Option<IpAddr>,
    text: Option<String>,
}

/// The parts of one attempt that do not change between attempts.
struct Exchange<'a> {
    attempt: Attempt,
    request: &'a [u8],
    idempotent: bool,
    /// A HEAD request: the response has no body whatever its headers say.
    no_body: bool,
    client_close: bool,
}

/// A backend's address, as errors name it.
struct PeerName(SocketAddr);

impl std::fmt::Display for PeerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backend {}", self.0)
    }
}

/// Polls `fut` once.
async fn poll_once<F: Future + Unpin>(mut fut: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx))).await
}

/// `fut` under a timeout, without arming a timer when it completes at once (most socket
/// writes, and reads whose data is already there). Tokio's own timer: with one worker thread
/// under callgrind a request cost about 1,000 instructions less than with
/// `pingora_timeout::fast_timeout`, whose two timers a request arms took 1,350.
async fn timed<F: Future>(
    timeout: Duration,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut fut = std::pin::pin!(fut);
    match poll_once(fut.as_mut()).await {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => tokio::time::timeout(timeout, fut).await,
    }
}

fn is_timeout(e: &Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    )
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Box<Error>> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            // Small requests and answers go out at once.
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => {
            let etype = match e.kind() {
                ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                _ => ErrorType::ConnectError,
            };
            Err(Error::because(etype, format!("connecting to {addr}"), e).into_up())
        }
        Err(_) => Err(
            Error::explain(ErrorType::ConnectTimedout, format!("connecting to {addr}")).into_up(),
        ),
    }
}

/// Writes the request and reads the response head (skipping interim 1xx answers).
async fn send_and_read_head(
    up: &mut TcpStream,
    x: &Exchange<'_>,
    rbuf: &mut BytesMut,
) -> Result<Response, Box<Error>> {
    match timed(x.attempt.write, up.write_all(x.request)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(Error::because(ErrorType::WriteError, "sending the request", e).into_up())
        }
        Err(_) => return Err(Error::new_up(ErrorType::WriteTimedout)),
    }
    loop {
        match parse_response(rbuf)? {
            Some(resp) if (100..200).contains(&resp.status) => {
                if resp.status == 101 {
                    return Err(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "backend switched protocols unasked",
                    )
                    .into_up());
                }
                rbuf.advance(resp.len);
                continue;
            }
            Some(resp) => return Ok(resp),
            None if rbuf.len() >= MAX_RESPONSE_HEAD => {
                return Err(
                    Error::explain(ErrorType::InvalidHTTPHeader, "response head too large")
                        .into_up(),
                )
            }
            None => {}
        }
        rbuf.reserve(4096);
        match timed(x.attempt.read, up.read_buf(rbuf)).await {
            Ok(Ok(0)) => {
                return Err(Error::explain(
                    ErrorType::ConnectionClosed,
                    "backend closed the connection before answering",
                )
                .into_up())
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(
                    Error::because(ErrorType::ReadError, "reading the response", e).into_up(),
                )
            }
            Err(_) => return Err(Error::new_up(ErrorType::ReadTimedout)),
        }
    }
}

/// Writes and flushes to the client; `false` when the client is gone or too slow.
async fn write_client(down: &mut Stream, bytes: &[u8]) -> bool {
    let write = async {
        down.write_all(bytes).await?;
        down.flush().await
    };
    matches!(timed(CLIENT_WRITE_TIMEOUT, write).await, Ok(Ok(())))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the proxy sets itself: never copied.
fn is_dropped(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"connection")
        || name.eq_ignore_ascii_case(b"keep-alive")
        || name.eq_ignore_ascii_case(b"proxy-connection")
        || name.eq_ignore_ascii_case(edge_signature::REQUEST_ID_HEADER.as_bytes())
}

/// The request as the backend gets it: the client's head without hop-by-hop headers, with the
/// request id and the client address added to `X-Forwarded-For`, then the body.
fn upstream_request(
    head: &FastHead<'_>,
    body: &[u8],
    client_ip: Option<&str>,
    request_id: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len + body.len() + 128);
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.path_and_query().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded: Option<&[u8]> = None;
    for (name, value) in head.headers() {
        if is_dropped(name) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            forwarded.get_or_insert(value);
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(edge_signature::REQUEST_ID_HEADER.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    if forwarded.is_some() || client_ip.is_some() {
        out.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prev) = forwarded {
            out.extend_from_slice(prev);
            if client_ip.is_some() {
                out.extend_from_slice(b", ");
            }
        }
        if let Some(ip) = client_ip {
            out.extend_from_slice(ip.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A complete JSON answer from the proxy itself, as [`phases::respond`] writes it.
fn error_response(
    status: u16,
    reason: &str,
    request_id: &str,
    extra: &[(&str, &str)],
    close: bool,
) -> Vec<u8> {
    let body = error_body(reason, request_id);
    let phrase = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\n{}: {request_id}\r\n",
        body.len(),
        edge_signature::REQUEST_ID_HEADER,
    );
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        out.push_str("connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// A request head the fast path takes: offsets into the bytes it was parsed from.
struct FastHead<'a> {
    raw: &'a [u8],
    len: usize,
    method: (u16, u16),
    target: (u16, u16),
    path_end: u16,
    /// The method and the target as text, once bound to `raw`.
    method_text: &'a str,
    target_text: &'a str,
    headers: [(u16, u16, u16, u16); MAX_HEADERS],
    count: usize,
    content_length: usize,
    close: bool,
}

impl FastHead<'_> {
    /// The head over the bytes it was parsed from.
    fn bind(self, raw: &[u8]) -> FastHead<'_> {
        // Both were checked to be ASCII when parsed.
        let text = |(start, end): (u16, u16)| {
            std::str::from_utf8(&raw[usize::from(start)..usize::from(end)]).unwrap_or("")
        };
        FastHead {
            raw,
            method_text: text(self.method),
            target_text: text(self.target),
            ..self
        }
    }

    /// Names (tokens, so ASCII) and values, in order.
    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers[..self.count].iter().map(|&(ns, ne, vs, ve)| {
            (
                &self.raw[usize::from(ns)..usize::from(ne)],
                &self.raw[usize::from(vs)..usize::from(ve)],
            )
        })
    }
}

impl Head for FastHead<'_> {
    fn method(&self) -> &str {
        self.method_text
    }
    fn path(&self) -> &str {
        let end = usize::from(self.path_end - self.target.0);
        self.target_text.get(..end).unwrap_or(self.target_text)
    }
    fn path_and_query(&self) -> &str {
        self.target_text
    }
    fn uri_host(&self) -> Option<&str> {
        None
    }
    fn for_each_value(&self, name: &str, f: &mut dyn FnMut(&[u8])) {
        for (n, v) in self.headers() {
            if n.eq_ignore_ascii_case(name.as_bytes()) {
                f(v);
            }
        }
    }
    fn header(&self, name: &str) -> Option<&str> {
        let (_, v) = self
            .headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))?;
        if phases::is_visible(v) {
            std::str::from_utf8(v).ok()
        } else {
            None
        }
    }
}

// The head lives on the task's stack: boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Read<'a> {
    Request(FastHead<'a>),
    Closed,
    Other,
}

/// Waits for and reads one request head and its body into `buf`; the head's offsets are into
/// `buf` (it is returned with an empty `raw`, set by the caller once it holds the bytes).
async fn read_request(
    down: &mut Stream,
    buf: &mut BytesMut,
    shutdown: &mut ShutdownWatch,
) -> Read<'static> {
    let mut began: Option<Instant> = None;
    loop {
        if !buf.is_empty() {
            began.get_or_insert_with(Instant::now);
            match parse_request(buf) {
                Parsed::Head(head) => {
                    let total = head.len + head.content_length;
                    if buf.len() >= total {
                        return Read::Request(head);
                    }
                }
                Parsed::Partial if buf.len() < MAX_HEAD => {}
                Parsed::Partial | Parsed::Other => return Read::Other,
            }
        }
        if buf.is_empty() && *shutdown.borrow() {
            return Read::Closed;
        }
        buf.reserve(4096);
        let read = match began {
            None => {
                // Waiting for the next request: the shutdown flag is looked at every
                // [`SHUTDOWN_POLL`] rather than awaited, which would register a waiter per request.
                let mut read = std::pin::pin!(down.read_buf(buf));
                let waiting = Instant::now();
                loop {
                    match timed(SHUTDOWN_POLL, read.as_mut()).await {
                        Ok(r) => break Ok(r),
                        Err(_) if *shutdown.borrow() || waiting.elapsed() >= KEEPALIVE => {
                            return Read::Closed
                        }
                        Err(_) => {}
                    }
                }
            }
            Some(t) => {
                let left = REQUEST_TIMEOUT.saturating_sub(t.elapsed());
                timed(left, down.read_buf(buf)).await
            }
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            // Closed, reset, or silent for too long: nothing to answer.
            _ => return Read::Closed,
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Parsed {
    Head(FastHead<'static>),
    Partial,
    /// Not for the fast path: Pingora's proxy decides.
    Other,
}

/// Target bytes the fast path forwards as they are: visible ASCII that `http::Uri` also takes.
fn plain_target_byte(b: u8) -> bool {
    (0x21..0x7f).contains(&b)
        && !matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

fn parse_request(buf: &[u8]) -> Parsed {
    // Left uninitialised: httparse writes the ones it fills (64 × 32 bytes of zeroing saved
    // per request).
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if len > MAX_HEAD || req.version != Some(1) {
        return Parsed::Other;
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start as u16, (start + s.len()) as u16)
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Parsed::Other;
    };
    if method == "CONNECT" || !target.starts_with('/') || !target.bytes().all(plain_target_byte) {
        return Parsed::Other;
    }
    let target_span = span(target.as_bytes());
    let path_end = target_span.0 + target.find('?').unwrap_or(target.len()) as u16;
    let mut head = FastHead {
        raw: &[],
        len,
        method: span(method.as_bytes()),
        target: target_span,
        path_end,
        method_text: "",
        target_text: "",
        headers: [(0, 0, 0, 0); MAX_HEADERS],
        count: 0,
        content_length: 0,
        close: false,
    };
    let mut hosts = 0;
    let mut lengths = 0;
    for h in req.headers.iter() {
        let name = h.name;
        let lower = |s: &str| name.eq_ignore_ascii_case(s);
        if lower("transfer-encoding")
            || lower("upgrade")
            || lower("expect")
            || lower("te")
            || lower("http2-settings")
        {
            return Parsed::Other;
        }
        if lower("host") {
            hosts += 1;
        } else if lower("content-length") {
            lengths += 1;
            let v = h.value;
            if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
                return Parsed::Other;
            }
            let n = v.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
            if n > MAX_BODY {
                return Parsed::Other;
            }
            head.content_length = n;
        } else if lower("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    return Parsed::Other;
                }
            }
        }
        let (ns, ne) = span(name.as_bytes());
        let (vs, ve) = span(h.value);
        head.headers[head.count] = (ns, ne, vs, ve);
        head.count += 1;
    }
    if hosts > 1 || lengths > 1 {
        return Parsed::Other;
    }
    Parsed::Head(head)
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    Close,
}

/// A backend's response head.
struct Response {
    len: usize,
    status: u16,
    framing: Framing,
    /// The backend keeps the connection open after this response.
    reusable: bool,
    /// The head as the client gets it, without the final empty line and the proxy's headers.
    head: Vec<u8>,
}

impl Response {
    /// The head as the client gets it (taken out of the response: call once).
    fn client_head(&mut self, request_id: &str, close: bool) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.head);
        out.extend_from_slice(edge_signature::REQUEST_ID_HEADER.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(request_id.as_bytes());
        out.extend_from_slice(b"\r\n");
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

fn bad_response(why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InvalidHTTPHeader, why).into_up()
}

/// Parses a response head; `Ok(None)` while incomplete.
fn parse_response(buf: &[u8]) -> Result<Option<Response>, Box<Error>> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Left uninitialised, as in `parse_request` (128 × 32 bytes).
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(bad_response("malformed response head")),
    };
    // httparse takes exactly three digits.
    let status = resp.code.unwrap_or(0);
    // Room for the proxy's headers and whatever of the body came with the head.
    let mut head = Vec::with_capacity(buf.len() + 128);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    head.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut reusable = resp.version == Some(1);
    for h in resp.headers.iter() {
        let lower = |s: &str| h.name.eq_ignore_ascii_case(s);
        if lower("content-length") {
            let text =
                std::str::from_utf8(h.value).map_err(|_| bad_response("bad content-length"))?;
            let n: u64 = text
                .trim()
                .parse()
                .map_err(|_| bad_response("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad_response("conflicting content-length"));
            }
            length = Some(n);
        } else if lower("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if lower("connection") {
            if h.value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                reusable = false;
            }
            continue;
        }
        if is_dropped(h.name.as_bytes()) || (lower("content-length") && chunked.is_some()) {
            continue;
        }
        head.extend_from_slice(h.name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(h.value);
        head.extend_from_slice(b"\r\n");
    }
    let framing = match (chunked, length) {
        (Some(true), _) => Framing::Chunked,
        (Some(false), _) => Framing::Close,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Close,
    };
    if chunked.is_some() && length.is_some() {
        // Both framings given: the chunked one wins, the length is dropped, and the
        // connection is not trusted again (RFC 9112 §6.3).
        reusable = false;
        head = strip_header(&head, "content-length");
    }
    Ok(Some(Response {
        len,
        status,
        framing,
        reusable,
        head,
    }))
}

/// `head` without any line for header `name`.
fn strip_header(head: &[u8], name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len());
    for (i, line) in head.split_inclusive(|&b| b == b'\n').enumerate() {
        let is_name = line
            .iter()
            .position(|&b| b == b':')
            .is_some_and(|c| line[..c].eq_ignore_ascii_case(name.as_bytes()));
        if i == 0 || !is_name {
            out.extend_from_slice(line);
        }
    }
    out
}

/// Where a response body stands: how much of what arrives belongs to it.
struct BodyState {
    framing: Framing,
    left: u64,
    chunk: Chunk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { value: u64, digits: u8, ext: bool },
    SizeLf { value: u64 },
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLineLf,
    EndLf,
    Done,
}

impl BodyState {
    fn new(framing: Framing) -> Self {
        BodyState {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunk: Chunk::Size {
                value: 0,
                digits: 0,
                ext: false,
            },
        }
    }

    fn done(&self) -> bool {
        match self.framing {
            Framing::Empty => true,
            Framing::Length(_) => self.left == 0,
            Framing::Chunked => self.chunk == Chunk::Done,
            Framing::Close => false,
        }
    }

    /// Takes what belongs to the body from `bytes`; returns how many bytes that is.
    fn feed(&mut self, bytes: &[u8]) -> Result<usize, Box<Error>> {
        match self.framing {
            Framing::Empty => Ok(0),
            Framing::Close => Ok(bytes.len()),
            Framing::Length(_) => {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.left -= n as u64;
                Ok(n)
            }
            Framing::Chunked => self.feed_chunked(bytes),
        }
    }

    fn feed_chunked(&mut self, bytes: &[u8]) -> Result<usize, Box<Error>> {
        let bad = || bad_response("malformed chunked body");
        let mut i = 0;
        while i < bytes.len() && self.chunk != Chunk::Done {
            let b = bytes[i];
            self.chunk = match self.chunk {
                Chunk::Size { value, digits, ext } => match b {
                    b'\r' if digits > 0 => Chunk::SizeLf { value },
                    _ if ext => Chunk::Size { value, digits, ext },
                    b';' | b' ' | b'\t' if digits > 0 => Chunk::Size {
                        value,
                        digits,
                        ext: true,
                    },
                    _ => {
                        let d = (b as char).to_digit(16).ok_or_else(bad)?;
                        if digits >= 15 {
                            return Err(bad());
                        }
                        Chunk::Size {
                            value: value * 16 + u64::from(d),
                            digits: digits + 1,
                            ext,
                        }
                    }
                },
                Chunk::SizeLf { value } => match (b, value) {
                    (b'\n', 0) => Chunk::TrailerStart,
                    (b'\n', n) => {
                        self.left = n;
                        Chunk::Data
                    }
                    _ => return Err(bad()),
                },
                Chunk::Data => {
                    let n = usize::try_from(self.left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    self.left -= n as u64;
                    i += n;
                    if self.left == 0 {
                        self.chunk = Chunk::DataCr;
                    }
                    continue;
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::Size {
                    value: 0,
                    digits: 0,
                    ext: false,
                },
                Chunk::TrailerStart if b == b'\r' => Chunk::EndLf,
                Chunk::TrailerStart | Chunk::TrailerLine if b != b'\r' => Chunk::TrailerLine,
                Chunk::TrailerLine => Chunk::TrailerLineLf,
                Chunk::TrailerLineLf if b == b'\n' => Chunk::TrailerStart,
                Chunk::EndLf if b == b'\n' => Chunk::Done,
                _ => return Err(bad()),
            };
            i += 1;
        }
        Ok(i)
    }
}

/// The checks of the `http1` fuzz target (`origin-proxy/fuzz`), here so that
/// `tests/fuzz_replay.rs` runs them on stable over what the fuzzer kept
/// (`fuzz/regressions/http1/`: add what it finds there). To fuzz (cargo-fuzz, nightly Rust):
///
/// ```text
/// cd origin-proxy/fuzz
/// mkdir -p corpus/http1 && cp regressions/http1/* corpus/http1/
/// cargo +nightly fuzz run -O -s none -a http1 corpus/http1 -- -max_len=4096
/// ```
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Runs every fast-path parser on `data`; panics if one panics or contradicts itself.
    pub fn http1(data: &[u8]) {
        // A request head: whatever parses must be consistent with the bytes it came from.
        for bytes in [
            data.to_vec(),
            [&b"GET /p?q HTTP/1.1\r\nHost: x\r\n"[..], data].concat(),
        ] {
            if let Parsed::Head(h) = parse_request(&bytes) {
                let h = h.bind(&bytes);
                assert!(h.len <= bytes.len() && h.len <= MAX_HEAD);
                assert!(h.content_length <= MAX_BODY);
                assert!(h.path_and_query().starts_with(h.path()));
                assert!(h.path().starts_with('/'));
                let _ = (h.method(), h.header("host"), h.uri_host());
                let out = upstream_request(&h, b"", Some("127.0.0.1"), "id");
                // What the backend gets is a complete request with the same method and target
                // (two headers more than the client sent).
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS + 2];
                let mut again = httparse::Request::new(&mut headers);
                let parsed = again.parse(&out);
                assert!(
                    matches!(parsed, Ok(httparse::Status::Complete(n)) if n == out.len()),
                    "{:?}",
                    String::from_utf8_lossy(&out)
                );
                assert_eq!(again.method, Some(h.method()));
                assert_eq!(again.path, Some(h.path_and_query()));
            }
        }
        // A response head.
        if let Ok(Some(mut r)) = parse_response(data) {
            assert!(r.len <= data.len());
            let head = r.client_head("id", false);
            assert!(head.ends_with(b"\r\n\r\n"));
        }
        // A chunked body: fed whole or byte by byte, the same end (or the same error).
        let mut whole = BodyState::new(Framing::Chunked);
        let at_once = whole.feed(data).ok().filter(|_| whole.done());
        let mut bytewise = BodyState::new(Framing::Chunked);
        let mut taken = 0;
        let mut failed = false;
        for b in data {
            match bytewise.feed(std::slice::from_ref(b)) {
                Ok(n) => taken += n,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
            if bytewise.done() {
                break;
            }
        }
        let by_byte = (!failed && bytewise.done()).then_some(taken);
        assert_eq!(at_once, by_byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Parsed {
        parse_request(text.as_bytes())
    }

    #[test]
    fn plain_requests_take_the_fast_path_and_others_go_to_pingora() {
        let Parsed::Head(h) = head("POST /api/cart?x=1 HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello")
        else {
            panic!("plain POST is fast")
        };
        assert_eq!(h.content_length, 5);
        assert!(!h.close);
        let raw = b"POST /api/cart?x=1 HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello";
        let h = h.bind(raw);
        assert_eq!(h.method(), "POST");
        assert_eq!(h.path(), "/api/cart");
        assert_eq!(h.path_and_query(), "/api/cart?x=1");
        assert_eq!(h.header("HOST"), Some("shop.example"));
        assert!(matches!(
            head("GET / HTTP/1.1\r\nHost: a\r\n"),
            Parsed::Partial
        ));
        for other in [
            "GET / HTTP/1.0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET http://shop.example/ HTTP/1.1\r\n\r\n",
            "GET /a{b} HTTP/1.1\r\n\r\n",
            "CONNECT shop.example:443 HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(matches!(head(other), Parsed::Other), "{other:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(matches!(
            head(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Parsed::Other
        ));
    }

    #[test]
    fn the_backend_gets_the_head_without_hop_by_hop_headers_and_with_the_proxys_own() {
        let raw = b"GET /p?q=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive\r\nX-Request-Id: forged\r\nX-Forwarded-For: 198.51.100.7\r\nAccept: */*\r\n\r\n";
        let Parsed::Head(h) = parse_request(raw) else {
            panic!("fast")
        };
        let h = h.bind(raw);
        let out = upstream_request(&h, b"", Some("127.0.0.1"), "rid1");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "GET /p?q=1 HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\nx-request-id: rid1\r\n\
             x-forwarded-for: 198.51.100.7, 127.0.0.1\r\n\r\n"
        );
    }

    #[test]
    fn response_framing() {
        let mut r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.framing, Framing::Length(3));
        assert!(r.reusable);
        assert_eq!(
            String::from_utf8(r.client_head("id", false)).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nx-request-id: id\r\n\r\n"
        );
        let r = parse_response(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Close);
        assert!(!r.reusable);
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.framing, Framing::Chunked);
        assert!(!r.reusable);
        assert!(!String::from_utf8_lossy(&r.head)
            .to_ascii_lowercase()
            .contains("content-length"));
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )
        .is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        // Fed whole, and fed a byte at a time: the same end.
        let mut whole = BodyState::new(Framing::Chunked);
        assert_eq!(whole.feed(body).unwrap(), body.len() - 4);
        assert!(whole.done());
        let mut bytewise = BodyState::new(Framing::Chunked);
        let mut taken = 0;
        for b in body.iter() {
            taken += bytewise.feed(std::slice::from_ref(b)).unwrap();
            if bytewise.done() {
                break;
            }
        }
        assert_eq!(taken, body.len() - 4);
        for bad in [&b"x\r\n"[..], b"5\r\nhelloX", b"\r\n", b"1\n"] {
            assert!(
                BodyState::new(Framing::Chunked).feed(bad).is_err(),
                "{bad:?}"
            );
        }
        let mut len = BodyState::new(Framing::Length(3));
        assert_eq!(len.feed(b"abcdef").unwrap(), 3);
        assert!(len.done());
    }

    #[test]
    fn error_responses_carry_the_reason_and_the_request_id() {
        let out = String::from_utf8(error_response(
            503,
            "too busy",
            "rid",
            &[("retry-after", "1")],
            true,
        ))
        .unwrap();
        assert!(
            out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{out}"
        );
        assert!(out.contains("retry-after: 1\r\n") && out.contains("connection: close\r\n"));
        assert!(
            out.ends_with(r#"{"error":"too busy","request_id":"rid"}"#),
            "{out}"
        );
    }

    /// Chunked encodings of `body` with chunks of the given sizes and some extensions and
    /// trailers.
    fn encode(body: &[u8], sizes: &[usize], ext: bool, trailer: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes
                .get(i)
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            i += 1;
            out.extend_from_slice(format!("{n:x}").as_bytes());
            if ext {
                out.extend_from_slice(b";name=value");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n");
        if trailer {
            out.extend_from_slice(b"x-checksum: 1\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest::proptest! {
        #[test]
        fn a_chunked_body_ends_exactly_where_its_encoding_ends_however_it_arrives(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            sizes in proptest::collection::vec(1usize..64, 0..8),
            cuts in proptest::collection::vec(1usize..50, 0..20),
            ext in proptest::bool::ANY,
            trailer in proptest::bool::ANY,
            next in proptest::collection::vec(proptest::num::u8::ANY, 0..20),
        ) {
            let encoded = encode(&body, &sizes, ext, trailer);
            let mut wire = encoded.clone();
            wire.extend_from_slice(&next);
            let mut state = BodyState::new(Framing::Chunked);
            let mut taken = 0;
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < wire.len() && !state.done() {
                let n = cut.next().copied().unwrap_or(wire.len()).min(wire.len() - at);
                let piece = &wire[at..at + n];
                let used = state.feed(piece).expect("a valid encoding");
                proptest::prop_assert!(used <= piece.len());
                taken += used;
                at += n;
            }
            proptest::prop_assert!(state.done());
            proptest::prop_assert_eq!(taken, encoded.len());
        }

        #[test]
        fn parsers_never_panic_on_any_bytes(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        ) {
            let _ = parse_request(&bytes);
            let _ = parse_response(&bytes);
            let _ = BodyState::new(Framing::Chunked).feed(&bytes);
            let mut prefixed = b"GET /a?b HTTP/1.1\r\nHost: x\r\n".to_vec();
            prefixed.extend_from_slice(&bytes);
            if let Parsed::Head(h) = parse_request(&prefixed) {
                let h = h.bind(&prefixed);
                let _ = (h.path(), h.header("host"), h.path_and_query());
                let _ = upstream_request(&h, b"", Some("127.0.0.1"), "id");
            }
        }
    }

    /// Runs a future on a fresh single-thread runtime.
    fn block_on<F: Future>(fut: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    }

    /// `bytes` as a Pingora stream that yields them and then ends.
    fn wire(bytes: &[u8]) -> Stream {
        Box::new(std::io::Cursor::new(bytes.to_vec()))
    }

    /// Pingora's own reading of `bytes`: method, target, headers (name, value) and body.
    type PingoraView = (String, Vec<u8>, Vec<(String, Vec<u8>)>, Vec<u8>);

    fn pingora_reads(bytes: &[u8]) -> Option<PingoraView> {
        use pingora::protocols::http::v1::server::HttpSession;
        block_on(async {
            let mut session = HttpSession::new(wire(bytes));
            session.read_request().await.ok()??;
            let req = session.req_header();
            let method = req.method.as_str().to_owned();
            let target = req.raw_path().to_vec();
            let headers = req
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect();
            let mut body = Vec::new();
            while let Some(chunk) = session.read_body_bytes().await.ok()? {
                body.extend_from_slice(&chunk);
            }
            Some((method, target, headers, body))
        })
    }

    fn request_strategy() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let method = prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "get", "X-Verb",
        ]);
        let target =
            prop::string::string_regex("/[a-zA-Z0-9/?=&%._~;:@!$'()*+,-]{0,30}").expect("regex");
        let name = prop::sample::select(vec![
            "Host",
            "host",
            "Content-Length",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "Cookie",
            "X-Forwarded-For",
            "X-A",
            "Keep-Alive",
        ]);
        let value = prop::sample::select(vec![
            "0",
            "3",
            " 3",
            "3 ",
            "03",
            "+3",
            "3,3",
            "chunked",
            "close",
            "keep-alive",
            "Keep-Alive, close",
            "a=1; b=2",
            "",
            "\tv",
            "v\t",
            "\u{e9}",
        ]);
        let headers = prop::collection::vec((name, value), 0..6);
        (
            method,
            target,
            prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
            headers,
            prop::sample::select(vec!["\r\n", "\r\n", "\n"]),
            prop::collection::vec(b'a'..=b'z', 0..5),
        )
            .prop_map(|(m, t, v, hs, eol, body)| {
                let mut out = format!("{m} {t} {v}{eol}").into_bytes();
                for (n, val) in hs {
                    out.extend_from_slice(format!("{n}: {val}{eol}").as_bytes());
                }
                out.extend_from_slice(eol.as_bytes());
                out.extend_from_slice(&body);
                out
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        /// Whatever the fast path takes, Pingora's parser reads the same way: the same method,
        /// target, headers and body. (A request they would read differently could be used to
        /// smuggle one past the other.)
        #[test]
        fn pingora_reads_every_request_the_fast_path_takes_the_same_way(
            bytes in request_strategy(),
        ) {
            let Parsed::Head(h) = parse_request(&bytes) else {
                return Ok(());
            };
            if bytes.len() < h.len + h.content_length {
                return Ok(());
            }
            let h = h.bind(&bytes);
            let ours_body = &bytes[h.len..h.len + h.content_length];
            let theirs = pingora_reads(&bytes[..h.len + h.content_length]);
            let (method, target, headers, body) = match theirs {
                Some(t) => t,
                None => {
                    return Err(proptest::test_runner::TestCaseError::fail(format!(
                        "Pingora refused what the fast path took: {:?}",
                        String::from_utf8_lossy(&bytes)
                    )))
                }
            };
            proptest::prop_assert_eq!(method.as_str(), h.method());
            proptest::prop_assert_eq!(target.as_slice(), h.path_and_query().as_bytes());
            let mut ours: Vec<(String, Vec<u8>)> = h
                .headers()
                .map(|(n, v)| (String::from_utf8_lossy(n).to_ascii_lowercase(), v.to_vec()))
                .collect();
            let mut theirs = headers;
            ours.sort();
            theirs.sort();
            proptest::prop_assert_eq!(ours, theirs);
            proptest::prop_assert_eq!(body.as_slice(), ours_body);
        }
    }

    /// Pingora's client reading of a response: status and body.
    fn pingora_reads_response(bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
        use pingora::protocols::http::v1::client::HttpSession;
        block_on(async {
            let mut session = HttpSession::new(wire(bytes));
            session.read_response().await.ok()?;
            let status = session.resp_header()?.status.as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = session.read_body_bytes().await.ok()? {
                body.extend_from_slice(&chunk);
            }
            Some((status, body))
        })
    }

    /// The body inside a chunked encoding the fast path took whole.
    fn dechunk(mut wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line_end = wire.iter().position(|&b| b == b'\n').expect("size line");
            let line = std::str::from_utf8(&wire[..line_end]).expect("ascii");
            let size = line.trim_end().split([';', ' ', '\t']).next().unwrap_or("");
            let n = usize::from_str_radix(size, 16).expect("hex");
            wire = &wire[line_end + 1..];
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&wire[..n]);
            wire = &wire[n + 2..];
        }
    }

    fn response_strategy() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let status = prop::sample::select(vec![200u16, 201, 204, 304, 404, 500]);
        let header = prop::sample::select(vec![
            "Content-Length: 0",
            "Content-Length: 4",
            "Content-Length: 40",
            "Content-Length: 4, 4",
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: chunked, gzip",
            "Connection: close",
            "Connection: keep-alive",
            "X-A: b",
        ]);
        let body = prop_oneof![
            prop::collection::vec(b'a'..=b'z', 0..50),
            (
                prop::collection::vec(b'a'..=b'z', 0..50),
                prop::collection::vec(1usize..20, 0..4),
                prop::bool::ANY,
                prop::bool::ANY
            )
                .prop_map(|(b, sizes, ext, trailer)| encode(&b, &sizes, ext, trailer)),
        ];
        (status, prop::collection::vec(header, 0..4), body).prop_map(|(status, hs, body)| {
            let mut out = format!("HTTP/1.1 {status} X\r\n").into_bytes();
            for h in hs {
                out.extend_from_slice(format!("{h}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
            out
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        /// Whatever response the fast path takes whole, Pingora's client reads the same status
        /// and body from it.
        #[test]
        fn pingora_reads_every_response_the_fast_path_takes_the_same_way(
            bytes in response_strategy(),
        ) {
            let Ok(Some(resp)) = parse_response(&bytes) else {
                return Ok(());
            };
            let framing = if resp.status == 204 || resp.status == 304 {
                Framing::Empty
            } else {
                resp.framing
            };
            let rest = &bytes[resp.len..];
            let mut state = BodyState::new(framing);
            let Ok(n) = state.feed(rest) else {
                return Ok(());
            };
            if !state.done() && framing != Framing::Close {
                return Ok(());
            }
            let ours = match framing {
                Framing::Chunked => dechunk(&rest[..n]),
                _ => rest[..n].to_vec(),
            };
            let theirs = pingora_reads_response(&bytes[..resp.len + n]);
            proptest::prop_assert_eq!(
                theirs,
                Some((resp.status, ours)),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}
