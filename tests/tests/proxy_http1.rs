//! The origin proxy's HTTP/1.1 handling on the wire: what the fast path sends the backend, the
//! response framings it forwards (length, chunked, until close, HEAD), pipelined requests,
//! a backend's malformed answer, and the requests it hands to Pingora's proxy (HTTP/1.0, too
//! many headers). The backend is a small scripted HTTP/1.1 server in this test that records
//! the heads it receives; the proxy is the real binary on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use e2e_tests::{scratch_dir, test_key, Proxy};

/// Starts the scripted backend; returns its address and the heads it has received.
fn backend() -> Result<(SocketAddr, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || serve(conn, &log));
        }
    });
    Ok((addr, seen))
}

fn serve(conn: TcpStream, log: &Mutex<Vec<String>>) {
    let mut out = match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let length = header(&head, "content-length").map_or(0, |v| v.parse().unwrap_or(0));
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let target = head.split(' ').nth(1).unwrap_or("");
        let path = target.split('?').next().unwrap_or("").to_owned();
        log.lock().expect("log").push(head);
        let answer: Vec<u8> = match path.as_str() {
            "/length" => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: keep-alive\r\nX-Request-Id: from-backend\r\n\r\nfixed body".to_vec(),
            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6; ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
            "/echo" => {
                let mut a = format!("HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                a.extend_from_slice(&body);
                a
            }
            "/close" => b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end".to_vec(),
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n".to_vec(),
        };
        if out.write_all(&answer).is_err() || path == "/close" {
            return;
        }
    }
}

/// The first value of header `name` in a head, trimmed.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// One response from the proxy: status, head, decoded body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

fn read_answer(reader: &mut BufReader<TcpStream>, head_request: bool) -> Result<Answer> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed inside a head: {head:?}");
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("status")?;
    let mut body = Vec::new();
    if head_request {
    } else if header(&head, "transfer-encoding") == Some("chunked") {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
            if n == 0 {
                // Trailers up to the empty line.
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line)?;
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = header(&head, "content-length") {
        body = vec![0; n.parse()?];
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
    }
    Ok(Answer {
        status,
        head,
        body: String::from_utf8(body)?,
    })
}

fn connect(proxy: &Proxy) -> Result<(TcpStream, BufReader<TcpStream>)> {
    let s = TcpStream::connect(proxy.addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let r = BufReader::new(s.try_clone()?);
    Ok((s, r))
}

#[test]
fn http1_requests_are_forwarded_with_every_framing_and_unusual_ones_go_to_pingora() -> Result<()> {
    let dir = scratch_dir("proxy_http1")?;
    let (backend, seen) = backend()?;
    let config = format!(
        r#"listen = "{{listen}}"
[admin]
listen = "{{admin}}"
[edge-auth]
allow-cidrs = ["127.0.0.0/8"]
[pools.shop]
backends = ["{backend}"]
retries = 0
[[routes]]
path-prefix = "/"
pool = "shop"
"#
    );
    let proxy = Proxy::start_with_config(&config, &test_key(), &dir)?;
    let (mut s, mut r) = connect(&proxy)?;

    // Two pipelined requests in one write, answered in order on one connection.
    s.write_all(
        b"GET /length?a=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive\r\n\
          Keep-Alive: timeout=5\r\nX-Request-Id: forged!\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n\
          GET /chunked HTTP/1.1\r\nHost: shop.example\r\n\r\n",
    )?;
    let first = read_answer(&mut r, false)?;
    ensure!(
        first.status == 200 && first.body == "fixed body",
        "{}",
        first.head
    );
    let id = header(&first.head, "x-request-id").context("request id")?;
    ensure!(
        id.len() == 32 && id != "from-backend",
        "the proxy's id: {id}"
    );
    let second = read_answer(&mut r, false)?;
    ensure!(
        second.body == "hello world",
        "chunked body: {:?}",
        second.body
    );

    // HEAD: the length is kept but no body follows; the connection goes on.
    s.write_all(b"HEAD /length HTTP/1.1\r\nHost: shop.example\r\n\r\n")?;
    let head = read_answer(&mut r, true)?;
    ensure!(head.status == 200 && header(&head.head, "content-length") == Some("10"));
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 11\r\n\r\nq=flash+sale",
    )?;
    let echo = read_answer(&mut r, false)?;
    ensure!(
        echo.status == 201 && echo.body == "q=flash+sal",
        "{}{}",
        echo.head,
        echo.body
    );
    // The twelfth byte of that body starts the next request: a malformed one, which goes to
    // Pingora's proxy, which answers 400.
    s.write_all(b"\r\n\r\n")?;
    let bad = read_answer(&mut r, false)?;
    ensure!(bad.status == 400, "{}", bad.head);

    // What the backend saw: no hop-by-hop headers, the proxy's request id, the client appended.
    let heads = seen.lock().expect("seen").clone();
    let to_length = heads.first().context("backend saw nothing")?;
    ensure!(
        to_length.starts_with("GET /length?a=1 HTTP/1.1\r\n"),
        "{to_length}"
    );
    ensure!(
        header(to_length, "connection").is_none() && header(to_length, "keep-alive").is_none(),
        "{to_length}"
    );
    ensure!(header(to_length, "x-request-id") == Some(id), "{to_length}");
    ensure!(
        header(to_length, "x-forwarded-for") == Some("198.51.100.7, 127.0.0.1"),
        "{to_length}"
    );

    // A response that ends with its connection: forwarded whole, then the client's closes.
    let (mut s, mut r) = connect(&proxy)?;
    s.write_all(b"GET /close HTTP/1.1\r\nHost: shop.example\r\n\r\n")?;
    let until_close = read_answer(&mut r, false)?;
    ensure!(until_close.body == "until the end", "{}", until_close.body);
    ensure!(
        header(&until_close.head, "connection") == Some("close"),
        "{}",
        until_close.head
    );

    // A backend's malformed length: 502, and the connection closes.
    let (mut s, mut r) = connect(&proxy)?;
    s.write_all(b"GET /malformed HTTP/1.1\r\nHost: shop.example\r\n\r\n")?;
    let broken = read_answer(&mut r, false)?;
    ensure!(broken.status == 502, "{}", broken.head);

    let handovers = |proxy: &Proxy| -> Result<u64> {
        let metrics = proxy.metrics()?;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("pingora_handovers_total "))
            .context("no handover counter")?;
        Ok(line.rsplit(' ').next().unwrap_or("").parse()?)
    };
    let before = handovers(&proxy)?;
    // HTTP/1.0 and a head with too many headers go to Pingora's proxy, which answers them.
    let (mut s, mut r) = connect(&proxy)?;
    s.write_all(b"GET /length HTTP/1.0\r\nHost: shop.example\r\n\r\n")?;
    let old = read_answer(&mut r, false)?;
    ensure!(
        old.status == 200 && old.body == "fixed body",
        "{}{}",
        old.head,
        old.body
    );
    let many: String = (0..80).map(|i| format!("X-Extra-{i}: {i}\r\n")).collect();
    let (mut s, mut r) = connect(&proxy)?;
    s.write_all(format!("GET /length HTTP/1.1\r\nHost: shop.example\r\n{many}\r\n").as_bytes())?;
    let crowded = read_answer(&mut r, false)?;
    ensure!(
        crowded.status == 200 && crowded.body == "fixed body",
        "{}",
        crowded.head
    );
    let after = handovers(&proxy)?;
    ensure!(after == before + 2, "handovers {before} -> {after}");

    // Every request is in the access log, fast path and Pingora alike.
    let log = proxy.access_log();
    let statuses: Vec<u64> = log.iter().filter_map(|l| l["status"].as_u64()).collect();
    ensure!(
        statuses.iter().filter(|&&s| s == 502).count() == 1 && statuses.len() >= 8,
        "access log statuses: {statuses:?}"
    );
    Ok(())
}
