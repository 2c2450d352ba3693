//! cargo run --release -p origin-proxy --example h1_loop -- pingora|own 127.0.0.1:8080 127.0.0.1:9001
//!
//! A measurement, not a proxy to deploy: how fast can one request after another go through
//! Pingora's listener on this machine, and what do Pingora's HTTP/1 sessions cost? `bench/proxy`
//! runs it as two rows beside the minimal Pingora proxy and nginx, so that the gap between
//! origin-proxy and nginx can be split into its parts:
//!
//! - `pingora`: Pingora's server and listener, Pingora's HTTP/1 server and client sessions
//!   (parsing, framing, keep-alive), and one task per connection that forwards each request and
//!   then its response in turn. What is left out, compared with the minimal proxy, is only
//!   pingora-proxy's loop (a downstream and an upstream task joined by channels, per-request peer
//!   and connector lookups).
//! - `own`: the same listener and loop, with a hand-written HTTP/1 forwarder in place of
//!   Pingora's sessions. It understands only what the benchmark sends: messages framed by
//!   `Content-Length` (or with no body), heads under 16 KiB. Anything else (chunked bodies,
//!   upgrades, a response without a length) closes the connection. None of the checks a real
//!   proxy needs are here (request smuggling, hop-by-hop headers, timeouts).
//!
//! Both keep idle upstream connections in one pool, and send a request again on a new
//! connection when an idle one turns out to be closed (as proxies do; nginx closes idle
//! keep-alive connections after 75 s). Same allocator and runtime settings as origin-proxy (one
//! thread, no work stealing).
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::v1::server::HttpSession as DownstreamSession;
use pingora::protocols::Stream;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The largest request or response head the `own` forwarder reads.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Clone, Copy)]
enum Codec {
    Pingora,
    Own,
}

struct Loop {
    codec: Codec,
    upstream: SocketAddr,
    idle: Mutex<Vec<Stream>>,
}

impl Loop {
    /// An idle upstream connection (`true`: it was used before) or a new one.
    async fn upstream(&self, fresh: bool) -> Option<(Stream, bool)> {
        if !fresh {
            if let Some(s) = self.idle.lock().ok()?.pop() {
                return Some((s, true));
            }
        }
        let tcp = tokio::net::TcpStream::connect(self.upstream).await.ok()?;
        tcp.set_nodelay(true).ok()?;
        Some((
            Box::new(pingora::protocols::l4::stream::Stream::from(tcp)),
            false,
        ))
    }

    fn park(&self, s: Stream) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(s);
        }
    }

    /// One request through Pingora's sessions; `None` when the connection cannot go on. The
    /// body is read whole first, so that a request sent on an idle connection the upstream
    /// has closed meanwhile can be sent again on a new one.
    async fn pingora_one(&self, down: &mut DownstreamSession) -> Option<()> {
        let mut body = Vec::new();
        while let Some(chunk) = down.read_body_bytes().await.ok()? {
            body.extend_from_slice(&chunk);
        }
        let mut fresh = false;
        let mut up = loop {
            let (s, reused) = self.upstream(fresh).await?;
            let mut up = UpstreamSession::new(s);
            let sent = async {
                up.write_request_header(Box::new(down.req_header().clone()))
                    .await
                    .ok()?;
                up.write_body(&body).await.ok()?;
                up.finish_body().await.ok()?;
                up.read_response().await.ok()
            };
            match sent.await {
                Some(_) => break up,
                None if reused => fresh = true,
                None => return None,
            }
        };
        let resp = Box::new(up.resp_header()?.clone());
        down.write_response_header(resp).await.ok()?;
        while let Some(chunk) = up.read_body_bytes().await.ok()? {
            down.write_body(&chunk).await.ok()?;
        }
        down.finish_body().await.ok()?;
        up.respect_keepalive();
        if let Some(s) = up.reuse().await {
            self.park(s);
        }
        Some(())
    }

    /// Requests through the hand-written forwarder until the client closes.
    async fn own(&self, mut down: Stream) -> Option<Stream> {
        let mut req = Vec::with_capacity(8192);
        let mut resp = Vec::with_capacity(8192);
        loop {
            // Whatever the client sent past the last request is the start of the next.
            let (len, filled) = read_message(&mut down, &mut req, Kind::Request).await?;
            let mut fresh = false;
            let (up, rlen, rfilled) = loop {
                let (mut up, reused) = self.upstream(fresh).await?;
                resp.clear();
                let answered = async {
                    up.write_all(&req[..len]).await.ok()?;
                    up.flush().await.ok()?;
                    read_message(&mut up, &mut resp, Kind::Response).await
                };
                match answered.await {
                    Some((rlen, rfilled)) => break (up, rlen, rfilled),
                    None if reused => fresh = true,
                    None => return None,
                }
            };
            down.write_all(&resp[..rlen]).await.ok()?;
            down.flush().await.ok()?;
            if rfilled == rlen {
                self.park(up);
            }
            req.copy_within(len..filled, 0);
            req.truncate(filled - len);
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Request,
    Response,
}

/// Reads one message framed by `Content-Length` into `buf` (which may already hold its start).
/// Returns the message's length and how many bytes `buf` holds; `None` at the end of the stream,
/// on a malformed or oversized head, or on framing this forwarder does not handle.
async fn read_message<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    kind: Kind,
) -> Option<(usize, usize)> {
    let mut filled = buf.len();
    loop {
        if let Some((head, body)) = parse_head(&buf[..filled], kind)? {
            let total = head + body;
            buf.resize(total.max(filled), 0);
            while filled < total {
                let n = s.read(&mut buf[filled..total]).await.ok()?;
                if n == 0 {
                    return None;
                }
                filled += n;
            }
            return Some((total, filled));
        }
        if filled >= MAX_HEAD {
            return None;
        }
        buf.resize(filled + 4096, 0);
        let n = s.read(&mut buf[filled..]).await.ok()?;
        buf.truncate(filled + n);
        if n == 0 {
            return None;
        }
        filled += n;
    }
}

/// `Some(None)`: head incomplete; `Some(Some((head length, body length)))`; `None`: give up.
fn parse_head(bytes: &[u8], kind: Kind) -> Option<Option<(usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let status = match kind {
        Kind::Request => httparse::Request::new(&mut headers).parse(bytes),
        Kind::Response => httparse::Response::new(&mut headers).parse(bytes),
    }
    .ok()?;
    let httparse::Status::Complete(head) = status else {
        return Some(None);
    };
    let mut length = None;
    for h in headers.iter().take_while(|h| !h.name.is_empty()) {
        if h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade")
        {
            return None;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()?,
            );
        }
    }
    match (kind, length) {
        (_, Some(n)) => Some(Some((head, n))),
        (Kind::Request, None) => Some(Some((head, 0))),
        (Kind::Response, None) => None,
    }
}

#[async_trait]
impl ServerApp for Loop {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        match self.codec {
            Codec::Own => self.own(stream).await,
            Codec::Pingora => {
                let mut down = DownstreamSession::new(stream);
                down.read_request().await.ok()??;
                self.pingora_one(&mut down).await?;
                // Hands the connection back to the listener, which calls again for its next request.
                let (s, _prefix) = down.reuse().await.ok()??.into_parts();
                Some(s)
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let codec = match args.first().map(String::as_str) {
        Some("pingora") => Codec::Pingora,
        Some("own") => Codec::Own,
        _ => {
            eprintln!("usage: h1_loop pingora|own LISTEN UPSTREAM");
            std::process::exit(2);
        }
    };
    let (Some(listen), Some(upstream)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: h1_loop pingora|own LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let Ok(upstream) = upstream.parse() else {
        eprintln!("h1_loop: UPSTREAM must be an address such as 127.0.0.1:9001, not {upstream:?}");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let app = Loop {
        codec,
        upstream,
        idle: Mutex::new(Vec::new()),
    };
    let mut service = Service::new("h1-loop".into(), app);
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever()
}
