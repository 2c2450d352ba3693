//! Fault tests of the origin proxy alone (no edge): real demo shops and the real proxy on
//! loopback. Backends are killed, slowed, failed and swapped while requests flow; each test
//! asserts what a shopper would see (no failed idempotent request, a quick 503 with
//! `Retry-After`) and what the operator would see (admin `/health` and `/metrics`).
//!
//! The configs allow 127.0.0.0/8 without an edge signature; signatures are covered by
//! `stack.rs`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e_tests::{free_port, scratch_dir, test_key, wait_until, Proxy, Shop};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// A config template: `{listen}` and `{admin}` are filled by the harness, `{pool}` here.
fn config(pool: &str, routes: &str) -> String {
    format!(
        r#"listen = "{{listen}}"
threads = 2
[admin]
listen = "{{admin}}"
[edge-auth]
allow-cidrs = ["127.0.0.0/8"]
{pool}
{routes}
"#
    )
}

const ROUTE_ALL_TO_SHOP: &str = "[[routes]]\npath-prefix = \"/\"\npool = \"shop\"\n";

fn backends(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Pool ids of `pools.<name>` in /health.
fn healthy(proxy: &Proxy, pool: &str) -> Result<u64> {
    proxy.health()?["pools"][pool]["healthy"]
        .as_u64()
        .context("healthy count")
}

/// A steady stream of GETs from `tasks` concurrent loops until `stop`; failures are collected.
struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Stream {
    fn start(url: String, tasks: usize) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let http = client();
        let tasks = (0..tasks)
            .map(|t| {
                let (stop, sent, failures, http, url) = (
                    stop.clone(),
                    sent.clone(),
                    failures.clone(),
                    http.clone(),
                    url.clone(),
                );
                tokio::spawn(async move {
                    let mut n = 0u64;
                    // Bounded: a few thousand requests at most, whatever happens.
                    while !stop.load(Ordering::Relaxed) && n < 5_000 {
                        let path = format!("/api/products/{}?t={t}&n={n}", n % 4 + 1);
                        let r = http.get(format!("{url}{path}")).send().await;
                        match r {
                            Ok(resp) if resp.status() == 200 => {}
                            Ok(resp) => failures
                                .lock()
                                .expect("lock")
                                .push(format!("{path}: {}", resp.status())),
                            Err(e) => failures.lock().expect("lock").push(format!("{path}: {e}")),
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                    }
                })
            })
            .collect();
        Stream {
            stop,
            sent,
            failures,
            tasks,
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests have been sent.
    fn wait_for(&self, n: u64) -> Result<()> {
        let target = self.sent() + n;
        wait_until("requests sent", Duration::from_secs(20), || {
            Ok(self.sent() >= target)
        })
    }

    async fn finish(self) -> Result<(u64, Vec<String>)> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await?;
        }
        let failures = self.failures.lock().expect("lock").clone();
        Ok((self.sent.load(Ordering::Relaxed), failures))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_fails_no_idempotent_request_and_comes_back_when_restarted() -> Result<()>
{
    let dir = scratch_dir("proxy_kill")?;
    let mut a = Shop::start("shop-a", &dir)?;
    let b = Shop::start("shop-b", &dir)?;
    let a_addr = a.addr;
    let pool = format!(
        "[pools.shop]\nbackends = [{}]\nconnect-timeout-ms = 300\nread-timeout-ms = 3000\nretries = 1\n\
         [pools.shop.health-check]\ninterval-ms = 100\ntimeout-ms = 200\nrise = 2\nfall = 2\n",
        backends(&[a.addr, b.addr])
    );
    let proxy = Proxy::start_with_config(&config(&pool, ROUTE_ALL_TO_SHOP), &test_key(), &dir)?;
    let stream = Stream::start(proxy.url(), 4);
    stream.wait_for(40)?;
    ensure!(a.requests()? > 0 && b.requests()? > 0, "both shops serve");

    a.proc.kill_now();
    wait_until("shop-a leaves the pool", Duration::from_secs(10), || {
        Ok(healthy(&proxy, "shop")? == 1)
    })?;
    stream.wait_for(40)?;

    let a2 = Shop::start_with("shop-a", &dir, Some(a_addr), &[])?;
    wait_until(
        "shop-a is back in the pool",
        Duration::from_secs(10),
        || Ok(healthy(&proxy, "shop")? == 2),
    )?;
    wait_until("shop-a gets traffic again", Duration::from_secs(10), || {
        Ok(a2.requests()? > 0)
    })?;
    let (sent, failures) = stream.finish().await?;
    ensure!(
        failures.is_empty(),
        "{} of {sent} GETs failed: {failures:?}",
        failures.len()
    );
    let metrics = proxy.metrics()?;
    ensure!(
        metrics.contains(&format!(
            "backend_up{{pool=\"shop\",backend=\"{a_addr}\"}} 1"
        )),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_down_answers_503_with_retry_after_without_hanging() -> Result<()> {
    let dir = scratch_dir("proxy_all_down")?;
    // Ports that were free a moment ago: nothing listens there.
    let dead: Vec<std::net::SocketAddr> = (0..2)
        .map(|_| free_port().map(|p| ([127, 0, 0, 1], p).into()))
        .collect::<Result<_>>()?;
    let pool = format!(
        "[pools.shop]\nbackends = [{}]\nconnect-timeout-ms = 500\nretries = 1\nretry-after-secs = 3\n\
         [pools.shop.passive]\nmax-failures = 1\neject-ms = 60000\n",
        backends(&dead)
    );
    let proxy = Proxy::start_with_config(&config(&pool, ROUTE_ALL_TO_SHOP), &test_key(), &dir)?;
    let http = client();
    for attempt in ["connects fail", "backends ejected"] {
        let start = Instant::now();
        let resp = http
            .get(format!("{}/api/catalog?q=x", proxy.url()))
            .send()
            .await?;
        let took = start.elapsed();
        ensure!(resp.status() == 503, "{attempt}: status {}", resp.status());
        ensure!(
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                == Some("3"),
            "{attempt}: no Retry-After: {:?}",
            resp.headers()
        );
        // Two connect attempts of at most 500 ms each; anything near the client timeout is a hang.
        ensure!(took < Duration::from_secs(5), "{attempt}: took {took:?}");
        ensure!(resp.text().await?.contains("request_id"));
    }
    let health = proxy.health()?;
    ensure!(health["status"] == "down", "{health}");
    ensure!(health["pools"]["shop"]["healthy"] == 0, "{health}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_times_out_and_idempotent_requests_are_retried_elsewhere() -> Result<()> {
    let dir = scratch_dir("proxy_slow")?;
    let slow = Shop::start_with("shop-slow", &dir, None, &["--delay-ms", "3000"])?;
    let fast = Shop::start("shop-fast", &dir)?;
    let pools = format!(
        "[pools.shop]\nbackends = [{}]\nread-timeout-ms = 300\nretries = 1\n\
         [pools.shop.passive]\nmax-failures = 1000\n\
         [pools.slow]\nbackends = [{}]\nread-timeout-ms = 300\n",
        backends(&[slow.addr, fast.addr]),
        backends(&[slow.addr])
    );
    let routes = format!(
        "{ROUTE_ALL_TO_SHOP}[[routes]]\npath-prefix = \"/api/cart\"\nmethods = [\"POST\"]\npool = \"slow\"\n"
    );
    let proxy = Proxy::start_with_config(&config(&pools, &routes), &test_key(), &dir)?;
    let http = client();
    for n in 0..6 {
        let start = Instant::now();
        let resp = http
            .get(format!("{}/api/products/{}", proxy.url(), n % 4 + 1))
            .send()
            .await?;
        let took = start.elapsed();
        ensure!(resp.status() == 200, "GET {n}: {}", resp.status());
        ensure!(
            resp.headers()
                .get("x-served-by")
                .and_then(|v| v.to_str().ok())
                == Some("shop-fast"),
            "GET {n} not served by the fast shop"
        );
        ensure!(
            took < Duration::from_millis(2_500),
            "GET {n} waited for the slow shop: {took:?}"
        );
    }
    ensure!(
        slow.requests()? >= 2,
        "round robin never tried the slow shop"
    );
    let retried = || {
        proxy
            .access_log()
            .iter()
            .filter(|l| l["retries"] == 1 && l["status"] == 200)
            .count()
    };
    let _ = e2e_tests::wait_until("two retried GETs logged", Duration::from_secs(5), || {
        Ok(retried() >= 2)
    });
    ensure!(
        retried() >= 2,
        "no GET was retried: {:?}",
        proxy.access_log()
    );

    // A POST is not idempotent: the read timeout answers 504, with no second attempt.
    let resp = http
        .post(format!("{}/api/cart", proxy.url()))
        .header("content-type", "application/json")
        .body(r#"{"product":1,"quantity":1}"#)
        .send()
        .await?;
    ensure!(resp.status() == 504, "POST status {}", resp.status());
    // The access-log line is written after the response: wait for it.
    e2e_tests::wait_until("the POST's access-log line", Duration::from_secs(5), || {
        Ok(proxy.access_log().iter().any(|l| l["method"] == "POST"))
    })?;
    let post = proxy
        .access_log()
        .into_iter()
        .find(|l| l["method"] == "POST")
        .context("POST logged")?;
    ensure!(post["attempts"] == 1, "{post}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_fails_no_request_and_a_bad_config_never_replaces_a_good_one(
) -> Result<()> {
    let dir = scratch_dir("proxy_reload")?;
    let a = Shop::start("shop-a", &dir)?;
    let b = Shop::start("shop-b", &dir)?;
    let pool = |addr| {
        format!(
            "[pools.shop]\nbackends = [{}]\n[pools.shop.health-check]\ninterval-ms = 100\n",
            backends(&[addr])
        )
    };
    let proxy =
        Proxy::start_with_config(&config(&pool(a.addr), ROUTE_ALL_TO_SHOP), &test_key(), &dir)?;
    let stream = Stream::start(proxy.url(), 4);
    stream.wait_for(50)?;
    ensure!(b.requests()? == 0, "shop-b is not in the first config");

    proxy.reload_with(&config(&pool(b.addr), ROUTE_ALL_TO_SHOP))?;
    wait_until("shop-b gets traffic", Duration::from_secs(10), || {
        Ok(b.requests()? > 0)
    })?;
    let a_after = a.requests()?;
    stream.wait_for(50)?;
    ensure!(
        a.requests()? == a_after,
        "shop-a still gets new requests after the reload"
    );

    // A broken file is refused; the good config keeps serving.
    proxy.reload_with("listen = \"{listen}\"\n[pools.shop]\nbackends = []\n")?;
    let mut proc_errors = String::new();
    wait_until("the bad reload is refused", Duration::from_secs(10), || {
        proc_errors = proxy.proc.errors();
        Ok(proc_errors.contains("config reload refused"))
    })?;
    stream.wait_for(50)?;
    let (sent, failures) = stream.finish().await?;
    ensure!(
        failures.is_empty(),
        "{} of {sent} GETs failed: {failures:?}",
        failures.len()
    );
    let metrics = proxy.metrics()?;
    ensure!(metrics.contains("config_reloads_total 1"), "{metrics}");
    ensure!(
        metrics.contains("config_reload_failures_total 1"),
        "{metrics}"
    );
    ensure!(metrics.contains("config_generation 2"), "{metrics}");
    Ok(())
}

/// SIGHUP's default action is to terminate the process. One that arrives while the proxy is
/// still loading its config must neither kill it nor be lost: once running, the proxy reloads
/// the file as it is by then. The config is a FIFO, so the test knows the proxy is inside its
/// config load (it has opened the FIFO) when the signal goes out, with no timing involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_while_the_proxy_loads_its_config_is_not_fatal_and_reloads_once_it_runs(
) -> Result<()> {
    let dir = scratch_dir("proxy_early_sighup")?;
    let a = Shop::start("shop-a", &dir)?;
    let b = Shop::start("shop-b", &dir)?;
    let listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let config_for = |shop: SocketAddr| {
        config(
            &format!("[pools.shop]\nbackends = [{}]\n", backends(&[shop])),
            ROUTE_ALL_TO_SHOP,
        )
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string())
    };
    let path = dir.join("proxy.toml");
    let mkfifo = Command::new("mkfifo").arg(&path).status()?;
    ensure!(mkfifo.success(), "mkfifo {}: {mkfifo}", path.display());
    let mut proxy = Proxy::spawn(&path, listen, Some(admin), &test_key(), &dir)?;

    // The FIFO opens for writing once the proxy has opened it to read its config.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut fifo = loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => break f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                proxy.proc.ensure_running()?;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e).context("the proxy never opened its config"),
        }
    };
    // What a reload will read: shop-b instead of shop-a, renamed over the FIFO's name (the
    // proxy keeps reading the FIFO it has open).
    let next = dir.join("next.toml");
    std::fs::write(&next, config_for(b.addr))?;
    std::fs::rename(&next, &path)?;
    proxy.proc.signal(libc::SIGHUP);
    let written = fifo.write_all(config_for(a.addr).as_bytes());
    drop(fifo);
    proxy.proc.ensure_running()?;
    written.context("writing the config into the FIFO")?;

    proxy.wait_ready()?;
    wait_until("the early SIGHUP's reload", Duration::from_secs(10), || {
        Ok(proxy.metrics()?.contains("config_generation 2"))
    })?;
    let metrics = proxy.metrics()?;
    ensure!(metrics.contains("config_reloads_total 1"), "{metrics}");
    let resp = client()
        .get(format!("{}/api/catalog", proxy.url()))
        .send()
        .await?;
    ensure!(resp.status() == 200, "status {}", resp.status());
    ensure!(
        (a.requests()?, b.requests()?) == (0, 1),
        "the reloaded config (shop-b) is not in effect: shop-a {}, shop-b {}",
        a.requests()?,
        b.requests()?
    );
    proxy.proc.ensure_running()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_concurrency_limit_requests_are_shed_at_once_and_admitted_ones_complete(
) -> Result<()> {
    let dir = scratch_dir("proxy_shed")?;
    let shop = Shop::start("shop", &dir)?;
    let pool = format!(
        "[pools.shop]\nbackends = [{}]\nmax-in-flight = 2\nretry-after-secs = 2\n",
        backends(&[shop.addr])
    );
    let proxy = Proxy::start_with_config(&config(&pool, ROUTE_ALL_TO_SHOP), &test_key(), &dir)?;
    let http = client();
    let admitted: Vec<_> = (0..2)
        .map(|i| {
            let req = http
                .get(format!("{}/api/catalog?delay_ms=3000&i={i}", proxy.url()))
                .send();
            tokio::spawn(async move { req.await.map(|r| r.status().as_u16()) })
        })
        .collect();
    wait_until("two requests in flight", Duration::from_secs(10), || {
        Ok(proxy.health()?["pools"]["shop"]["in_flight"] == 2)
    })?;
    for i in 0..4 {
        let resp = http
            .get(format!("{}/api/catalog?i=excess{i}", proxy.url()))
            .send()
            .await?;
        ensure!(resp.status() == 503, "excess {i}: {}", resp.status());
        ensure!(
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                == Some("2"),
            "excess {i}: no Retry-After"
        );
    }
    // The sheds were answered while both admitted requests were still waiting on the shop.
    ensure!(
        admitted.iter().all(|h| !h.is_finished()),
        "a shed waited for an admitted request"
    );
    for h in admitted {
        ensure!(h.await?? == 200, "an admitted request failed");
    }
    let metrics = proxy.metrics()?;
    ensure!(
        metrics.contains("proxy_shed_total{pool=\"shop\"} 4"),
        "{metrics}"
    );
    let health = proxy.health()?;
    ensure!(health["shed"] == 4 && health["shed_total"] == 4, "{health}");
    Ok(())
}
