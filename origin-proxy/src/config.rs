//! The proxy's configuration: a TOML file (the format below), validated into [`Config`].
//!
//! ```toml
//! listen = "127.0.0.1:8080"          # where shoppers' traffic arrives from the edge
//! threads = 2                         # worker threads
//! access-log = "stdout"               # or "off"
//! http1-fast-path = true              # plain HTTP/1.1 requests skip Pingora's sessions (see `fast`)
//!
//! [admin]                             # optional: GET /metrics (Prometheus) and GET /health (JSON)
//! listen = "127.0.0.1:9090"
//!
//! [edge-auth]
//! signing-key-env = "EDGE_SIGNING_KEY" # env var holding the shared HMAC key (or signing-key-file)
//! max-skew-secs = 60                   # how far the signature's timestamp may be from now
//! allow-cidrs = ["10.0.0.0/8"]         # clients accepted without a signature
//!
//! [pools.shop]
//! # A backend is an address, or a table with a weight (1..=100, default 1).
//! backends = ["127.0.0.1:9001", { addr = "127.0.0.1:9002", weight = 3 }]
//! algorithm = "round-robin"            # round-robin (weighted) | least-connections | peak-ewma | hash
//! hash-key = "cookie:cart"             # for "hash": "cookie:NAME" or "header:NAME"
//! connect-timeout-ms = 1000
//! read-timeout-ms = 10000              # per read from the backend (the response head, each body chunk)
//! write-timeout-ms = 10000
//! total-timeout-ms = 30000             # optional: all attempts of one request together
//! retries = 2                          # extra attempts for idempotent requests on other backends
//! max-connections-per-backend = 512    # optional: in-flight requests per backend
//! max-in-flight = 2000                 # optional: concurrency limit; past it, 503 + Retry-After
//! retry-after-secs = 1                 # the Retry-After of sheds and "no backend left"
//! [pools.shop.health-check]            # optional active checks
//! path = "/healthz"
//! interval-ms = 1000
//! timeout-ms = 500
//! rise = 2                             # consecutive successes to bring a backend back
//! fall = 2                             # consecutive failures to take it out
//! [pools.shop.passive]                 # optional passive ejection (default: 3 failures, 5 s)
//! max-failures = 3                     # consecutive connect failures or 5xx answers
//! eject-ms = 5000                      # how long an ejected backend gets no traffic
//!
//! [[routes]]
//! host = "shop.example"                # optional; any host when absent
//! path-prefix = "/api/"
//! methods = ["GET", "POST"]            # optional; any method when absent
//! pool = "shop"                        # the primary pool
//! read-pool = "replicas"               # optional: safe methods (GET, HEAD, OPTIONS) go here
//! ```
//!
//! Unknown keys are errors (serde `deny_unknown_fields`), reported with their line and column.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// Why a configuration was refused. Every variant names the file and what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the format (unknown key, wrong type, bad address).
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said, naming the key.
        message: String,
    },
    /// The file parsed but its content is inconsistent.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The offending key, dotted (`pools.shop.backends`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The file format, as written by users.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: SocketAddr,
    #[serde(default = "default_threads")]
    threads: usize,
    #[serde(default)]
    access_log: AccessLogTarget,
    #[serde(default = "default_true")]
    http1_fast_path: bool,
    admin: Option<FileAdmin>,
    #[serde(default)]
    edge_auth: FileEdgeAuth,
    pools: BTreeMap<String, FilePool>,
    routes: Vec<FileRoute>,
    #[serde(default)]
    shutdown: FileShutdown,
    waf: Option<crate::waf::FileWaf>,
    admission: Option<crate::admission::FileAdmission>,
}

fn default_threads() -> usize {
    2
}

fn default_true() -> bool {
    true
}

/// Where the JSON access log goes.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AccessLogTarget {
    /// One JSON line per request on standard output (the default).
    #[default]
    Stdout,
    /// No access log.
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileAdmin {
    listen: SocketAddr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileEdgeAuth {
    signing_key_env: Option<String>,
    signing_key_file: Option<PathBuf>,
    #[serde(default = "default_skew")]
    max_skew_secs: u64,
    #[serde(default)]
    allow_cidrs: Vec<IpNet>,
}

fn default_skew() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FilePool {
    backends: Vec<FileBackend>,
    #[serde(default)]
    algorithm: Algorithm,
    hash_key: Option<String>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_ms: u64,
    #[serde(default = "default_read_timeout")]
    read_timeout_ms: u64,
    #[serde(default = "default_read_timeout")]
    write_timeout_ms: u64,
    total_timeout_ms: Option<u64>,
    #[serde(default = "default_retries")]
    retries: usize,
    max_connections_per_backend: Option<usize>,
    max_in_flight: Option<usize>,
    #[serde(default = "default_retry_after")]
    retry_after_secs: u32,
    health_check: Option<FileHealthCheck>,
    #[serde(default)]
    passive: FilePassive,
}

fn default_connect_timeout() -> u64 {
    1_000
}
fn default_read_timeout() -> u64 {
    30_000
}
fn default_retries() -> usize {
    2
}
fn default_retry_after() -> u32 {
    1
}

/// A backend as written: `"127.0.0.1:9001"` or `{ addr = "127.0.0.1:9001", weight = 3 }`.
#[derive(Debug)]
struct FileBackend {
    addr: SocketAddr,
    weight: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileBackendTable {
    addr: SocketAddr,
    #[serde(default = "default_weight")]
    weight: u32,
}

fn default_weight() -> u32 {
    1
}

impl<'de> Deserialize<'de> for FileBackend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileBackend;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a socket address \"ip:port\" or a table { addr, weight }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileBackend, E> {
                let addr = v
                    .parse()
                    .map_err(|_| E::custom(format!("invalid socket address syntax: {v:?}")))?;
                Ok(FileBackend { addr, weight: 1 })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<FileBackend, A::Error> {
                let t = FileBackendTable::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(FileBackend {
                    addr: t.addr,
                    weight: t.weight,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// How a pool picks a backend. Every algorithm honours backend weights and skips backends that
/// are unhealthy, ejected, at their connection cap or already tried by this request.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Smooth weighted round robin (plain round robin when all weights are 1).
    #[default]
    #[serde(alias = "weighted", alias = "weighted-round-robin")]
    RoundRobin,
    /// The backend with the fewest in-flight requests per unit of weight.
    LeastConnections,
    /// The backend with the lowest peak-EWMA latency times its in-flight requests.
    PeakEwma,
    /// Weighted rendezvous hashing on the pool's `hash-key` (cart affinity); requests without
    /// the key fall back to round robin.
    Hash,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileHealthCheck {
    #[serde(default = "default_hc_path")]
    path: String,
    #[serde(default = "default_hc_interval")]
    interval_ms: u64,
    #[serde(default = "default_hc_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_threshold")]
    rise: u32,
    #[serde(default = "default_threshold")]
    fall: u32,
}

fn default_hc_path() -> String {
    "/healthz".into()
}
fn default_hc_interval() -> u64 {
    1_000
}
fn default_hc_timeout() -> u64 {
    500
}
fn default_threshold() -> u32 {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FilePassive {
    #[serde(default = "default_max_failures")]
    max_failures: u32,
    #[serde(default = "default_eject_ms")]
    eject_ms: u64,
}

impl Default for FilePassive {
    fn default() -> Self {
        FilePassive {
            max_failures: default_max_failures(),
            eject_ms: default_eject_ms(),
        }
    }
}

fn default_max_failures() -> u32 {
    3
}
fn default_eject_ms() -> u64 {
    5_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileRoute {
    host: Option<String>,
    #[serde(default = "default_prefix")]
    path_prefix: String,
    methods: Option<Vec<String>>,
    pool: String,
    read_pool: Option<String>,
}

fn default_prefix() -> String {
    "/".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileShutdown {
    #[serde(default)]
    grace_period_secs: u64,
    #[serde(default = "default_shutdown_timeout")]
    timeout_secs: u64,
}

impl Default for FileShutdown {
    fn default() -> Self {
        FileShutdown {
            grace_period_secs: 0,
            timeout_secs: default_shutdown_timeout(),
        }
    }
}

fn default_shutdown_timeout() -> u64 {
    5
}

/// The validated configuration the proxy runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listening address.
    pub listen: SocketAddr,
    /// Worker threads.
    pub threads: usize,
    /// Access log destination.
    pub access_log: AccessLogTarget,
    /// Whether plain HTTP/1.1 requests take the fast path ([`crate::fast`]); read per
    /// connection, so a reload changes it for new connections.
    pub http1_fast_path: bool,
    /// The admin listener (`/metrics`, `/health`), if any.
    pub admin_listen: Option<SocketAddr>,
    /// Who may reach the backends.
    pub edge_auth: EdgeAuth,
    /// Pools by name.
    pub pools: BTreeMap<String, PoolConfig>,
    /// Routes in file order; host routes win over host-less ones, then the longest prefix.
    pub routes: Vec<Route>,
    /// Seconds to keep accepting after SIGTERM before draining.
    pub grace_period_secs: u64,
    /// Seconds to wait for in-flight requests when shutting down.
    pub shutdown_timeout_secs: u64,
    /// The compiled WAF (`[waf]`), if configured.
    pub waf: Option<std::sync::Arc<crate::waf::OriginWaf>>,
    /// The waiting room's admission check (`[admission]`), if configured.
    pub admission: Option<crate::admission::Admission>,
}

/// How requests prove they came through the edge.
#[derive(Clone)]
pub struct EdgeAuth {
    /// The shared HMAC key; `None` means only allowlisted clients get through.
    pub key: Option<std::sync::Arc<edge_signature::SigningKey>>,
    /// Allowed distance between the signature's timestamp and now.
    pub max_skew_secs: u64,
    /// Client networks accepted without a signature.
    pub allow_cidrs: Vec<IpNet>,
}

impl std::fmt::Debug for EdgeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeAuth")
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .field("max_skew_secs", &self.max_skew_secs)
            .field("allow_cidrs", &self.allow_cidrs)
            .finish()
    }
}

/// One backend of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendConfig {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Relative share of traffic, 1..=100.
    pub weight: u32,
}

/// Where the hash algorithm finds its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A cookie's value.
    Cookie(String),
    /// A request header's value (name lowercased).
    Header(String),
}

/// One backend pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Backends in file order.
    pub backends: Vec<BackendConfig>,
    /// How a backend is picked.
    pub algorithm: Algorithm,
    /// The key of [`Algorithm::Hash`].
    pub hash_key: Option<HashKey>,
    /// Connect timeout per attempt.
    pub connect_timeout: Duration,
    /// Read timeout per attempt (each read from the backend).
    pub read_timeout: Duration,
    /// Write timeout per attempt (each write to the backend).
    pub write_timeout: Duration,
    /// Bound on all attempts of one request together; each attempt's timeouts are clipped to
    /// what remains.
    pub total_timeout: Option<Duration>,
    /// Extra attempts for idempotent requests, each on a backend not tried yet.
    pub retries: usize,
    /// In-flight requests allowed per backend.
    pub max_connections_per_backend: Option<usize>,
    /// In-flight requests allowed in the pool; past it requests are shed with a 503.
    pub max_in_flight: Option<usize>,
    /// `Retry-After` seconds of a shed or a "no backend left" answer.
    pub retry_after_secs: u32,
    /// Active health check, if configured.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive ejection.
    pub passive: PassiveConfig,
}

/// Active HTTP health check of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// Path requested with `GET`; a 2xx answer is healthy.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Time allowed for one check.
    pub timeout: Duration,
    /// Consecutive successes that bring a backend back.
    pub rise: u32,
    /// Consecutive failures that take a backend out.
    pub fall: u32,
}

/// Passive ejection: a backend that fails `max_failures` requests in a row (connect failures,
/// timeouts or 5xx answers) gets no traffic for `eject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveConfig {
    /// Consecutive failures that eject a backend.
    pub max_failures: u32,
    /// How long an ejection lasts.
    pub eject: Duration,
}

/// A route: requests for `host` (any when `None`) whose path starts with `path_prefix` and whose
/// method is in `methods` (any when `None`) go to `pool`, or to `read_pool` for safe methods.
#[derive(Debug, Clone)]
pub struct Route {
    /// A name for logs and metrics: `host` + prefix.
    pub name: String,
    /// Lowercased host to match, without port.
    pub host: Option<String>,
    /// Path prefix.
    pub path_prefix: String,
    /// Uppercased methods to match.
    pub methods: Option<Vec<String>>,
    /// The primary pool (exists in [`Config::pools`]).
    pub pool: String,
    /// The replica pool for safe methods, if the route splits reads from writes.
    pub read_pool: Option<String>,
}

impl Route {
    /// The pool for a request with this method: safe methods go to the read pool when set.
    pub fn pool_for(&self, method: &str) -> &str {
        match &self.read_pool {
            Some(read) if is_safe(method) => read,
            _ => &self.pool,
        }
    }
}

/// Safe methods (RFC 9110 §9.2.1) that a read replica may serve.
pub fn is_safe(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

impl Config {
    /// Reads and validates a config file. The signing key is read from the environment or the
    /// key file named in it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(path, &text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates `text` as the config file `path`; `env` looks up environment variables.
    pub fn from_toml(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        if file.threads == 0 || file.threads > 256 {
            return Err(invalid("threads", "must be between 1 and 256".into()));
        }
        let key = signing_key_of(&file.edge_auth, env, &invalid)?;
        if key.is_none() && file.edge_auth.allow_cidrs.is_empty() {
            return Err(invalid(
                "edge-auth",
                "no signing key and no allow-cidrs: every request would be refused".into(),
            ));
        }
        let admin_listen = file.admin.map(|a| a.listen);
        if admin_listen == Some(file.listen) {
            return Err(invalid(
                "admin.listen",
                "must differ from the proxy's listen address".into(),
            ));
        }
        let mut pools = BTreeMap::new();
        for (name, p) in file.pools {
            let pool = pool_config(&format!("pools.{name}"), p, &invalid)?;
            pools.insert(name, pool);
        }
        if file.routes.is_empty() {
            return Err(invalid("routes", "needs at least one route".into()));
        }
        let mut routes = Vec::with_capacity(file.routes.len());
        for (i, r) in file.routes.into_iter().enumerate() {
            routes.push(route_config(i, r, &pools, &invalid)?);
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let waf = match file.waf {
            None => None,
            Some(w) => Some(std::sync::Arc::new(
                crate::waf::OriginWaf::load(w, base).map_err(|e| invalid("waf", e))?,
            )),
        };
        let admission = match file.admission {
            None => None,
            Some(a) => Some(
                crate::admission::Admission::load(a, env).map_err(|e| invalid("admission", e))?,
            ),
        };
        Ok(Config {
            admission,
            listen: file.listen,
            threads: file.threads,
            access_log: file.access_log,
            http1_fast_path: file.http1_fast_path,
            admin_listen,
            edge_auth: EdgeAuth {
                key: key.map(std::sync::Arc::new),
                max_skew_secs: file.edge_auth.max_skew_secs,
                allow_cidrs: file.edge_auth.allow_cidrs,
            },
            pools,
            routes,
            grace_period_secs: file.shutdown.grace_period_secs,
            shutdown_timeout_secs: file.shutdown.timeout_secs,
            waf,
        })
    }

    /// The index of the route for a request: host routes before host-less ones, then the
    /// longest prefix, then file order; routes with a method list only match those methods
    /// (`method` `None` matches any route).
    pub fn route_index(
        &self,
        host: Option<&str>,
        path: &str,
        method: Option<&str>,
    ) -> Option<usize> {
        let host = host.map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name));
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| path.starts_with(&r.path_prefix))
            .filter(|(_, r)| match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            })
            .filter(|(_, r)| match (&r.methods, method) {
                (Some(ms), Some(m)) => ms.iter().any(|want| want == m),
                _ => true,
            })
            .max_by_key(|(i, r)| (r.host.is_some(), r.path_prefix.len(), usize::MAX - i))
            .map(|(i, _)| i)
    }

    /// The route for a request with any method (see [`Config::route_index`]).
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.route_index(host, path, None).map(|i| &self.routes[i])
    }
}

type Invalid<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

fn signing_key_of(
    auth: &FileEdgeAuth,
    env: &dyn Fn(&str) -> Option<String>,
    invalid: &Invalid<'_>,
) -> Result<Option<edge_signature::SigningKey>, ConfigError> {
    match (&auth.signing_key_env, &auth.signing_key_file) {
        (Some(_), Some(_)) => Err(invalid(
            "edge-auth",
            "set signing-key-env or signing-key-file, not both".into(),
        )),
        (Some(var), None) => {
            let secret = env(var).ok_or_else(|| {
                invalid(
                    "edge-auth.signing-key-env",
                    format!("environment variable {var} is not set"),
                )
            })?;
            signing_key(
                secret.trim().as_bytes(),
                "edge-auth.signing-key-env",
                invalid,
            )
            .map(Some)
        }
        (None, Some(file_path)) => {
            let secret = std::fs::read(file_path).map_err(|e| {
                invalid(
                    "edge-auth.signing-key-file",
                    format!("cannot read {}: {e}", file_path.display()),
                )
            })?;
            signing_key(secret.trim_ascii(), "edge-auth.signing-key-file", invalid).map(Some)
        }
        (None, None) => Ok(None),
    }
}

fn pool_config(k: &str, p: FilePool, invalid: &Invalid<'_>) -> Result<PoolConfig, ConfigError> {
    if p.backends.is_empty() {
        return Err(invalid(
            &format!("{k}.backends"),
            "needs at least one backend".into(),
        ));
    }
    if p.backends.len() > 1_000 {
        return Err(invalid(
            &format!("{k}.backends"),
            "at most 1000 backends".into(),
        ));
    }
    for (i, b) in p.backends.iter().enumerate() {
        if !(1..=100).contains(&b.weight) {
            return Err(invalid(
                &format!("{k}.backends[{i}].weight"),
                format!("must be between 1 and 100, not {}", b.weight),
            ));
        }
        if p.backends[..i].iter().any(|o| o.addr == b.addr) {
            return Err(invalid(
                &format!("{k}.backends[{i}]"),
                format!("{} is listed twice", b.addr),
            ));
        }
    }
    if p.connect_timeout_ms == 0 || p.read_timeout_ms == 0 || p.write_timeout_ms == 0 {
        return Err(invalid(k, "timeouts must be greater than 0".into()));
    }
    if p.total_timeout_ms == Some(0) {
        return Err(invalid(
            &format!("{k}.total-timeout-ms"),
            "must be greater than 0".into(),
        ));
    }
    if p.max_connections_per_backend == Some(0) || p.max_in_flight == Some(0) {
        return Err(invalid(
            k,
            "max-connections-per-backend and max-in-flight must be greater than 0".into(),
        ));
    }
    let hash_key = match (&p.algorithm, p.hash_key) {
        (Algorithm::Hash, None) => {
            return Err(invalid(
                &format!("{k}.hash-key"),
                "algorithm \"hash\" needs hash-key = \"cookie:NAME\" or \"header:NAME\"".into(),
            ))
        }
        (Algorithm::Hash, Some(key)) => Some(parse_hash_key(&key).ok_or_else(|| {
            invalid(
                &format!("{k}.hash-key"),
                format!("expected \"cookie:NAME\" or \"header:NAME\", not {key:?}"),
            )
        })?),
        (_, Some(_)) => {
            return Err(invalid(
                &format!("{k}.hash-key"),
                "only used with algorithm = \"hash\"".into(),
            ))
        }
        (_, None) => None,
    };
    let health_check = match p.health_check {
        None => None,
        Some(h) => {
            if !h.path.starts_with('/') || h.path.bytes().any(|b| b.is_ascii_control() || b == b' ')
            {
                return Err(invalid(
                    &format!("{k}.health-check.path"),
                    format!("must start with '/' and hold no spaces: {:?}", h.path),
                ));
            }
            if h.interval_ms < 50 || h.timeout_ms == 0 || h.rise == 0 || h.fall == 0 {
                return Err(invalid(
                    &format!("{k}.health-check"),
                    "interval-ms must be >= 50; timeout-ms, rise and fall >= 1".into(),
                ));
            }
            Some(HealthCheckConfig {
                path: h.path,
                interval: Duration::from_millis(h.interval_ms),
                timeout: Duration::from_millis(h.timeout_ms),
                rise: h.rise,
                fall: h.fall,
            })
        }
    };
    if p.passive.max_failures == 0 {
        return Err(invalid(
            &format!("{k}.passive.max-failures"),
            "must be at least 1".into(),
        ));
    }
    Ok(PoolConfig {
        backends: p
            .backends
            .iter()
            .map(|b| BackendConfig {
                addr: b.addr,
                weight: b.weight,
            })
            .collect(),
        algorithm: p.algorithm,
        hash_key,
        connect_timeout: Duration::from_millis(p.connect_timeout_ms),
        read_timeout: Duration::from_millis(p.read_timeout_ms),
        write_timeout: Duration::from_millis(p.write_timeout_ms),
        total_timeout: p.total_timeout_ms.map(Duration::from_millis),
        retries: p.retries.min(16),
        max_connections_per_backend: p.max_connections_per_backend,
        max_in_flight: p.max_in_flight,
        retry_after_secs: p.retry_after_secs,
        health_check,
        passive: PassiveConfig {
            max_failures: p.passive.max_failures,
            eject: Duration::from_millis(p.passive.eject_ms),
        },
    })
}

fn parse_hash_key(text: &str) -> Option<HashKey> {
    let (kind, name) = text.split_once(':')?;
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    match kind.trim() {
        "cookie" => Some(HashKey::Cookie(name.to_owned())),
        "header" => Some(HashKey::Header(name.to_ascii_lowercase())),
        _ => None,
    }
}

fn route_config(
    i: usize,
    r: FileRoute,
    pools: &BTreeMap<String, PoolConfig>,
    invalid: &Invalid<'_>,
) -> Result<Route, ConfigError> {
    for (key, pool) in [("pool", Some(&r.pool)), ("read-pool", r.read_pool.as_ref())] {
        if let Some(pool) = pool {
            if !pools.contains_key(pool) {
                return Err(invalid(
                    &format!("routes[{i}].{key}"),
                    format!("no pool named {pool:?}"),
                ));
            }
        }
    }
    if !r.path_prefix.starts_with('/') {
        return Err(invalid(
            &format!("routes[{i}].path-prefix"),
            format!("must start with '/': {:?}", r.path_prefix),
        ));
    }
    let methods = match r.methods {
        None => None,
        Some(ms) => {
            if ms.is_empty() {
                return Err(invalid(
                    &format!("routes[{i}].methods"),
                    "an empty list matches nothing; leave it out to match any method".into(),
                ));
            }
            let mut out = Vec::with_capacity(ms.len());
            for m in ms {
                if http::Method::from_bytes(m.as_bytes()).is_err() || m.is_empty() {
                    return Err(invalid(
                        &format!("routes[{i}].methods"),
                        format!("not an HTTP method: {m:?}"),
                    ));
                }
                out.push(m.to_ascii_uppercase());
            }
            Some(out)
        }
    };
    let host = r.host.map(|h| h.to_ascii_lowercase());
    let mut name = format!("{}{}", host.as_deref().unwrap_or("*"), r.path_prefix);
    if let Some(ms) = &methods {
        name = format!("{name} {}", ms.join(","));
    }
    Ok(Route {
        name,
        host,
        path_prefix: r.path_prefix,
        methods,
        pool: r.pool,
        read_pool: r.read_pool,
    })
}

fn signing_key(
    secret: &[u8],
    key: &str,
    invalid: &Invalid<'_>,
) -> Result<edge_signature::SigningKey, ConfigError> {
    edge_signature::SigningKey::new(secret).ok_or_else(|| {
        invalid(
            key,
            format!(
                "the signing key must be at least {} bytes",
                edge_signature::SigningKey::MIN_LEN
            ),
        )
    })
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:8080"
[edge-auth]
signing-key-env = "KEY"
allow-cidrs = ["10.0.0.0/8"]
[pools.shop]
backends = ["127.0.0.1:9001", "127.0.0.1:9002"]
[pools.shop.health-check]
path = "/healthz"
[pools.admin]
backends = ["127.0.0.1:9003"]
[[routes]]
path-prefix = "/"
pool = "shop"
[[routes]]
host = "Admin.Example"
path-prefix = "/"
pool = "admin"
[[routes]]
path-prefix = "/api/"
pool = "shop"
"#;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "a-secret-of-more-than-16-bytes".to_owned())
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("proxy.toml"), text, &env)
    }

    #[test]
    fn a_good_config_loads() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.pools["shop"].backends.len(), 2);
        assert!(c.edge_auth.key.is_some());
        assert_eq!(c.edge_auth.max_skew_secs, 60);
    }

    #[test]
    fn routes_prefer_host_then_longest_prefix() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(
            c.route(Some("admin.example:443"), "/x")
                .map(|r| r.pool.as_str()),
            Some("admin")
        );
        assert_eq!(
            c.route(Some("shop.example"), "/api/x")
                .map(|r| r.path_prefix.as_str()),
            Some("/api/")
        );
        assert_eq!(
            c.route(None, "/x").map(|r| r.path_prefix.as_str()),
            Some("/")
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_position() {
        let text = GOOD.replace("[pools.admin]", "[pools.admin]\nbakends = []");
        let err = parse(&text).expect_err("unknown key").to_string();
        assert!(err.contains("bakends"), "{err}");
        assert!(err.starts_with("proxy.toml:11:"), "{err}");
    }

    #[test]
    fn an_unparsable_address_is_named() {
        let text = GOOD.replace("127.0.0.1:9003", "127.0.0.1:99999");
        let err = parse(&text).expect_err("bad address").to_string();
        assert!(err.contains("socket address"), "{err}");
        assert!(err.contains("proxy.toml:11:"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let err =
            parse(&GOOD.replace("pool = \"admin\"", "pool = \"nope\"")).expect_err("bad pool");
        assert!(err.to_string().contains("routes[1].pool"), "{err}");
        let err = Config::from_toml(Path::new("p.toml"), GOOD, &|_| None).expect_err("no key");
        assert!(err.to_string().contains("KEY is not set"), "{err}");
        let err = Config::from_toml(Path::new("p.toml"), GOOD, &|_| Some("short".into()))
            .expect_err("short");
        assert!(err.to_string().contains("at least 16 bytes"), "{err}");
    }

    #[test]
    fn pools_take_weights_algorithms_and_limits() {
        let text = GOOD.replace(
            "backends = [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]",
            "backends = [\"127.0.0.1:9001\", { addr = \"127.0.0.1:9002\", weight = 3 }]\nalgorithm = \"hash\"\nhash-key = \"cookie:cart\"\nmax-in-flight = 10\nmax-connections-per-backend = 4\ntotal-timeout-ms = 2000\n[pools.shop.passive]\nmax-failures = 5",
        );
        let c = parse(&text).expect("valid");
        let shop = &c.pools["shop"];
        assert_eq!(shop.backends[1].weight, 3);
        assert_eq!(shop.algorithm, Algorithm::Hash);
        assert_eq!(shop.hash_key, Some(HashKey::Cookie("cart".into())));
        assert_eq!(shop.max_in_flight, Some(10));
        assert_eq!(shop.max_connections_per_backend, Some(4));
        assert_eq!(shop.total_timeout, Some(Duration::from_secs(2)));
        assert_eq!(shop.passive.max_failures, 5);
        assert_eq!(c.pools["admin"].algorithm, Algorithm::RoundRobin);
    }

    #[test]
    fn routes_split_reads_and_match_methods() {
        let text = GOOD.replace(
            "path-prefix = \"/api/\"\npool = \"shop\"",
            "path-prefix = \"/api/\"\nmethods = [\"get\", \"POST\"]\npool = \"shop\"\nread-pool = \"admin\"",
        );
        let c = parse(&text).expect("valid");
        let api = c.route_index(None, "/api/x", Some("GET")).expect("route");
        assert_eq!(c.routes[api].pool_for("GET"), "admin");
        assert_eq!(c.routes[api].pool_for("POST"), "shop");
        let del = c
            .route_index(None, "/api/x", Some("DELETE"))
            .expect("route");
        assert_eq!(
            c.routes[del].path_prefix, "/",
            "DELETE falls through to the / route"
        );
    }

    #[test]
    fn bad_pool_settings_name_the_key() {
        for (from, to, key) in [
            (
                "[pools.admin]\n",
                "[pools.admin]\nalgorithm = \"hash\"\n",
                "pools.admin.hash-key",
            ),
            (
                "[pools.admin]\n",
                "[pools.admin]\nhash-key = \"cookie:x\"\n",
                "pools.admin.hash-key",
            ),
            (
                "\"127.0.0.1:9003\"",
                "{ addr = \"127.0.0.1:9003\", weight = 0 }",
                "pools.admin.backends[0].weight",
            ),
            (
                "\"127.0.0.1:9003\"",
                "\"127.0.0.1:9003\", \"127.0.0.1:9003\"",
                "pools.admin.backends[1]",
            ),
            (
                "pool = \"admin\"",
                "pool = \"admin\"\nread-pool = \"nope\"",
                "routes[1].read-pool",
            ),
            (
                "pool = \"admin\"",
                "pool = \"admin\"\nmethods = [\"GE T\"]",
                "routes[1].methods",
            ),
            (
                "[pools.admin]\n",
                "[pools.admin]\nmax-in-flight = 0\n",
                "pools.admin",
            ),
        ] {
            let err = parse(&GOOD.replace(from, to)).expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let err = parse(&GOOD.replace(
            "\"127.0.0.1:9003\"",
            "{ addr = \"127.0.0.1:9003\", wieght = 2 }",
        ))
        .expect_err("unknown key in a backend table")
        .to_string();
        assert!(err.contains("wieght"), "{err}");
    }
}
