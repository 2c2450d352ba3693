//! The end-to-end harness: starts the real pieces as processes on 127.0.0.1 — the demo shop,
//! the Pingora origin proxy, the Rust worker in workerd through `wrangler dev` — waits until
//! each answers, and tears every one down when dropped (the whole process group, so that
//! wrangler's workerd children go too).
//!
//! The binaries must be built first (`scripts/test.sh` does it): `target/debug/demo-shop`,
//! `target/debug/origin-proxy` and the worker in `edge-worker/build/`. The harness never builds
//! anything itself, so that a test cannot hang on cargo's build lock.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where cargo put the binaries of this test build.
pub fn bin(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => root().join("target"),
    };
    let path = dir.join("debug").join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it first with `cargo build -p {name}` (scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// A directory for one test's logs and files, emptied first: `target/e2e/<name>`.
pub fn scratch_dir(name: &str) -> Result<PathBuf> {
    let dir = root().join("target").join("e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(l.local_addr()?.port())
}

/// Waits until `addr` accepts TCP connections or `timeout` passes.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration, what: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not start listening on {addr} within {timeout:?}")
}

/// A child process in its own process group, killed (group and all) on drop.
pub struct Proc {
    child: Child,
    /// What it is, for messages.
    pub name: String,
    /// Its standard output, captured to a file.
    pub stdout: PathBuf,
    /// Its standard error, captured to a file.
    pub stderr: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with output captured under `dir`.
    pub fn spawn(mut cmd: Command, name: &str, dir: &Path) -> Result<Proc> {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .process_group(0);
        let child = cmd.spawn().with_context(|| format!("spawning {name}"))?;
        Ok(Proc {
            child,
            name: name.to_owned(),
            stdout,
            stderr,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process group at once (SIGKILL), as a crash would.
    pub fn kill_now(&mut self) {
        signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Sends `sig` to the process itself (not its group).
    pub fn signal(&self, sig: i32) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // kill(2) on our own child; an error (already gone) is ignored.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Waits until the process's stderr contains `text`, failing if it exits or `timeout` passes.
    pub fn wait_for_stderr(&mut self, text: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.errors().contains(text) {
                return Ok(());
            }
            self.ensure_running()?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not log {text:?} within {timeout:?}:\n{}",
                    self.name,
                    self.errors()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `addr` accepts TCP connections, failing if the process exits or `timeout`
    /// passes.
    pub fn wait_for_port(&mut self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not start listening on {addr} within {timeout:?}:\n{}",
                    self.name,
                    self.errors()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Standard output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Standard error so far.
    pub fn errors(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Fails with the process's stderr if it has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}:\n{}", self.name, self.errors());
        }
        Ok(())
    }
}

fn signal_group(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // kill(2) on our own child's process group; an error (already gone) is ignored.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            signal_group(self.child.id(), libc::SIGKILL);
            return;
        }
        signal_group(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                signal_group(self.child.id(), libc::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// One demo-shop instance.
pub struct Shop {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Shop {
    /// Starts an instance on a free port.
    pub fn start(name: &str, dir: &Path) -> Result<Shop> {
        Shop::start_with(name, dir, None, &[])
    }

    /// Starts an instance on `addr` (a free port when `None`) with extra arguments, such as
    /// `--delay-ms 2000` or `--fail-status 500`.
    pub fn start_with(
        name: &str,
        dir: &Path,
        addr: Option<SocketAddr>,
        extra: &[&str],
    ) -> Result<Shop> {
        let addr = match addr {
            Some(a) => a,
            None => ([127, 0, 0, 1], free_port()?).into(),
        };
        let mut cmd = Command::new(bin("demo-shop")?);
        cmd.args(["--listen", &addr.to_string(), "--name", name]);
        cmd.args(extra);
        let proc = Proc::spawn(cmd, name, dir)?;
        wait_for_port(addr, Duration::from_secs(20), name)?;
        Ok(Shop { proc, addr })
    }

    /// The shop's own counters (`GET /__demo/stats`).
    pub fn stats(&self) -> Result<serde_json::Value> {
        let mut s = TcpStream::connect(self.addr)?;
        use std::io::{Read, Write};
        write!(
            s,
            "GET /__demo/stats HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .context("no body")?;
        serde_json::from_str(body).with_context(|| format!("stats body: {body}"))
    }

    /// Requests counted so far (health checks and stats excluded).
    pub fn requests(&self) -> Result<u64> {
        self.stats()?["requests"].as_u64().context("requests count")
    }
}

/// A 32-byte hex key for a test run.
pub fn test_key() -> String {
    let mut bytes = [0u8; 32];
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("randomness");
    hex::encode(bytes)
}

/// Settings of the proxy config a test writes.
pub struct ProxySettings<'a> {
    /// Backends of the one pool.
    pub backends: &'a [SocketAddr],
    /// Health check interval in ms.
    pub hc_interval_ms: u64,
}

/// The origin proxy.
pub struct Proxy {
    /// The process.
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its admin listener, when the config has one.
    pub admin: Option<SocketAddr>,
    /// Its config file.
    pub config_path: PathBuf,
}

impl Proxy {
    /// Writes a config for these settings and starts the proxy with `key` as its signing key.
    pub fn start(settings: &ProxySettings<'_>, key: &str, dir: &Path) -> Result<Proxy> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let backends: Vec<String> = settings
            .backends
            .iter()
            .map(|b| format!("\"{b}\""))
            .collect();
        let config = format!(
            r#"listen = "{addr}"
threads = 2
[edge-auth]
signing-key-env = "EDGE_SIGNING_KEY"
max-skew-secs = 60
[pools.shop]
backends = [{backends}]
connect-timeout-ms = 500
read-timeout-ms = 5000
retries = 2
[pools.shop.health-check]
path = "/healthz"
interval-ms = {interval}
timeout-ms = 300
rise = 2
fall = 2
[[routes]]
path-prefix = "/"
pool = "shop"
"#,
            backends = backends.join(", "),
            interval = settings.hc_interval_ms,
        );
        Proxy::launch(addr, None, &config, key, dir)
    }

    /// Starts the proxy on a config written by the test: `{listen}` and `{admin}` in `template`
    /// are replaced by free addresses. Returns once both listen and the proxy is ready for
    /// SIGHUP.
    pub fn start_with_config(template: &str, key: &str, dir: &Path) -> Result<Proxy> {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let has_admin = template.contains("{admin}");
        let config = template
            .replace("{listen}", &addr.to_string())
            .replace("{admin}", &admin.to_string());
        let path = dir.join("proxy.toml");
        std::fs::write(&path, config)?;
        let mut proxy = Proxy::spawn(&path, addr, has_admin.then_some(admin), key, dir)?;
        proxy.wait_ready()?;
        Ok(proxy)
    }

    /// Starts the proxy on the config file at `path`, which says it listens on `addr` (and
    /// `admin`), and returns at once: before it has read the file or listens. The file may be
    /// one the test has not written yet, such as a FIFO.
    pub fn spawn(
        path: &Path,
        addr: SocketAddr,
        admin: Option<SocketAddr>,
        key: &str,
        dir: &Path,
    ) -> Result<Proxy> {
        let mut cmd = Command::new(bin("origin-proxy")?);
        cmd.arg("--config")
            .arg(path)
            .env("EDGE_SIGNING_KEY", key)
            .env("ROOM_SIGNING_KEY", format!("{key}-room"))
            .env("RUST_LOG", "info");
        let proc = Proc::spawn(cmd, "origin-proxy", dir)?;
        Ok(Proxy {
            proc,
            addr,
            admin,
            config_path: path.to_owned(),
        })
    }

    /// Waits until the proxy listens, its admin listener too, and it is ready for SIGHUP;
    /// fails at once, with its exit status, if it exits.
    pub fn wait_ready(&mut self) -> Result<()> {
        self.proc
            .wait_for_port(self.addr, Duration::from_secs(20))?;
        if let Some(admin) = self.admin {
            self.proc.wait_for_port(admin, Duration::from_secs(20))?;
        }
        self.proc.wait_for_stderr(
            "ready to reload the config on SIGHUP",
            Duration::from_secs(20),
        )
    }

    fn launch(
        addr: SocketAddr,
        admin: Option<SocketAddr>,
        config: &str,
        key: &str,
        dir: &Path,
    ) -> Result<Proxy> {
        let path = dir.join("proxy.toml");
        std::fs::write(&path, config)?;
        let mut proxy = Proxy::spawn(&path, addr, admin, key, dir)?;
        proxy.proc.wait_for_port(addr, Duration::from_secs(20))?;
        Ok(proxy)
    }

    /// Rewrites the config file (same `{listen}`/`{admin}` addresses) and sends SIGHUP.
    pub fn reload_with(&self, template: &str) -> Result<()> {
        let mut config = template.replace("{listen}", &self.addr.to_string());
        if let Some(admin) = self.admin {
            config = config.replace("{admin}", &admin.to_string());
        }
        std::fs::write(&self.config_path, config)?;
        self.proc.signal(libc::SIGHUP);
        Ok(())
    }

    /// `GET /health` on the admin listener, parsed.
    pub fn health(&self) -> Result<serde_json::Value> {
        let admin = self.admin.context("the proxy has no admin listener")?;
        let (_, body) = http_get(admin, "/health")?;
        serde_json::from_str(&body).with_context(|| format!("health body: {body}"))
    }

    /// `GET /metrics` on the admin listener.
    pub fn metrics(&self) -> Result<String> {
        let admin = self.admin.context("the proxy has no admin listener")?;
        let (status, body) = http_get(admin, "/metrics")?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(body)
    }

    /// The access-log lines written so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        let Ok(f) = File::open(&self.proc.stdout) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(|l| l.ok())
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The admin token the tests give the edge (`/__edge/waf`).
pub const EDGE_ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

/// The edge worker in workerd, through `wrangler dev`.
pub struct Edge {
    /// The wrangler process (its group holds workerd).
    pub proc: Proc,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Edge {
    /// Starts `wrangler dev` on the prebuilt worker with `origin` as `ORIGIN_URL` and `key` as
    /// the signing secret (from an env file in `dir`, never on the command line).
    pub fn start(origin: &str, key: &str, dir: &Path) -> Result<Edge> {
        Edge::start_with(origin, key, dir, "")
    }

    /// Like [`Edge::start`], with extra `NAME="value"` lines for the worker's env file (vars
    /// and secrets; `\n` in double quotes is a newline).
    pub fn start_with(origin: &str, key: &str, dir: &Path, extra: &str) -> Result<Edge> {
        let worker_dir = root().join("edge-worker");
        if !worker_dir.join("build/index.js").exists() {
            bail!(
                "edge-worker/build is missing: run scripts/build-worker.sh (scripts/test.sh does)"
            );
        }
        let wrangler = root().join("node_modules/.bin/wrangler");
        if !wrangler.exists() {
            bail!(
                "{} is missing: run `npm ci` (scripts/bootstrap.sh does)",
                wrangler.display()
            );
        }
        let env_file = dir.join("edge.env");
        std::fs::write(
            &env_file,
            format!(
                "EDGE_SIGNING_KEY={key}\nROOM_SIGNING_KEY={key}-room\nEDGE_ADMIN_TOKEN={EDGE_ADMIN_TOKEN}\n{extra}"
            ),
        )?;
        // `wrangler dev` builds, starts the runtime, then (its watcher ready) builds again and
        // restarts it; now and then (in one of three fresh-clone CI runs on 2026-12-07) that
        // restart ends with "The Workers runtime failed to start" and wrangler exits. Such an
        // exit during startup gets one more start, on new ports; anything else fails the test.
        for attempt in 1..=2 {
            let port = free_port()?;
            let inspector = free_port()?;
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut cmd = Command::new(&wrangler);
            cmd.current_dir(&worker_dir)
                .args(["dev", "--ip", "127.0.0.1", "--port", &port.to_string()])
                .args(["--inspector-port", &inspector.to_string()])
                .arg("--env-file")
                .arg(&env_file)
                .arg("--persist-to")
                .arg(dir.join("state"))
                .args(["--var", &format!("ORIGIN_URL:{origin}")])
                .args([
                    "--show-interactive-dev-session=false",
                    "--log-level",
                    "info",
                ])
                .env("FLASHEDGE_WORKER_PREBUILT", "1")
                .env("WRANGLER_SEND_METRICS", "false")
                .env("CI", "true");
            let mut proc = Proc::spawn(cmd, "wrangler", dir)?;
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                if let Ok(200) = http_status(addr, "/__edge/health") {
                    return Ok(Edge { proc, addr });
                }
                if let Err(e) = proc.ensure_running() {
                    if attempt == 1 {
                        eprintln!(
                            "wrangler dev exited while starting; starting it once more: {e:#}"
                        );
                        break;
                    }
                    return Err(e);
                }
                if Instant::now() > deadline {
                    bail!(
                        "wrangler dev did not answer /__edge/health on {addr}:\n{}",
                        proc.errors()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        bail!("wrangler dev did not start")
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Status of a plain `GET path` (blocking, for readiness checks).
pub fn http_status(addr: SocketAddr, path: &str) -> Result<u16> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf)?;
    let text = std::str::from_utf8(&buf)?;
    Ok(text.get(9..12).context("short status line")?.parse()?)
}

/// Status and body of a plain `GET path` with `Connection: close` (blocking).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.get(9..12).context("short status line")?.parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The whole answer to `METHOD path` with `Connection: close`, read to the end (blocking): what
/// was on the wire, so that a `HEAD` answer that carries a body shows it.
pub fn http_raw(addr: SocketAddr, method: &str, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

/// Polls `check` every 20 ms until it returns `Ok(true)` or `timeout` passes.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => last = None,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match last {
        Some(e) => Err(e.context(format!("{what}: not reached within {timeout:?}"))),
        None => bail!("{what}: not reached within {timeout:?}"),
    }
}

/// Signs a request as the edge would, for tests that talk to the proxy directly.
pub fn sign(
    key: &str,
    method: &str,
    path_and_query: &str,
    request_id: &str,
    unix_secs: u64,
) -> String {
    edge_signature::SigningKey::new(key.as_bytes())
        .expect("test keys are long enough")
        .sign(method, path_and_query, unix_secs, request_id)
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The shared test data (`../shared` beside the repo, or `$FLASHEDGE_SHARED`): the OWASP CRS
/// and the WAF corpora. Fails, naming the path, when it is absent.
pub fn shared_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("FLASHEDGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"));
    if !dir.join("crs-4.28.0").is_dir() {
        bail!(
            "{} has no crs-4.28.0: set FLASHEDGE_SHARED to the shared data folder",
            dir.display()
        );
    }
    Ok(dir)
}

/// The origin half most end-to-end tests start from: one demo shop behind the origin proxy
/// (health checks every second), a fresh scratch directory and a fresh signing key.
pub struct Origin {
    /// The test's scratch directory.
    pub dir: PathBuf,
    /// The edge signing key the proxy checks (`{key}-room` is the room key).
    pub key: String,
    /// The demo shop.
    pub shop: Shop,
    /// The origin proxy in front of it.
    pub proxy: Proxy,
}

impl Origin {
    /// Starts it in `target/e2e/<name>`.
    pub fn start(name: &str) -> Result<Origin> {
        let dir = scratch_dir(name)?;
        let key = test_key();
        let shop = Shop::start("shop-a", &dir)?;
        let settings = ProxySettings {
            backends: &[shop.addr],
            hc_interval_ms: 1000,
        };
        let proxy = Proxy::start(&settings, &key, &dir)?;
        Ok(Origin {
            dir,
            key,
            shop,
            proxy,
        })
    }
}

/// The env-file line that sets the worker's `ROOM_CONFIG` to this TOML (wrangler's env files
/// expand `\n` inside double quotes but not `\"`, so TOML's double quotes become single ones).
pub fn room_config_env(toml: &str) -> String {
    format!(
        "ROOM_CONFIG=\"{}\"\n",
        toml.replace('"', "'").replace('\n', "\\n")
    )
}
