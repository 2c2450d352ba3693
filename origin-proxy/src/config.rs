//! The proxy's configuration: a TOML file (the format below), validated into [`Config`].
//!
//! ```toml
//! listen = "127.0.0.1:8080"          # where shoppers' traffic arrives from the edge
//! threads = 2                         # worker threads
//!
//! [edge-auth]
//! signing-key-env = "EDGE_SIGNING_KEY" # env var holding the shared HMAC key (or signing-key-file)
//! max-skew-secs = 60                   # how far the signature's timestamp may be from now
//! allow-cidrs = ["10.0.0.0/8"]         # clients accepted without a signature
//!
//! [pools.shop]
//! backends = ["127.0.0.1:9001", "127.0.0.1:9002"]
//! connect-timeout-ms = 1000
//! read-timeout-ms = 10000
//! retries = 2                          # extra attempts for idempotent requests on other backends
//! [pools.shop.health-check]
//! path = "/healthz"
//! interval-ms = 1000
//! timeout-ms = 500
//! rise = 2                             # consecutive successes to bring a backend back
//! fall = 2                             # consecutive failures to take it out
//!
//! [[routes]]
//! host = "shop.example"                # optional; any host when absent
//! path-prefix = "/api/"
//! pool = "shop"
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
    #[serde(default)]
    edge_auth: FileEdgeAuth,
    pools: BTreeMap<String, FilePool>,
    routes: Vec<FileRoute>,
    #[serde(default)]
    shutdown: FileShutdown,
}

fn default_threads() -> usize {
    2
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
    backends: Vec<SocketAddr>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_ms: u64,
    #[serde(default = "default_read_timeout")]
    read_timeout_ms: u64,
    #[serde(default = "default_retries")]
    retries: usize,
    health_check: Option<FileHealthCheck>,
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
struct FileRoute {
    host: Option<String>,
    #[serde(default = "default_prefix")]
    path_prefix: String,
    pool: String,
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
    /// Who may reach the backends.
    pub edge_auth: EdgeAuth,
    /// Pools by name.
    pub pools: BTreeMap<String, PoolConfig>,
    /// Routes in file order; the first match wins (longest prefix first within a host).
    pub routes: Vec<Route>,
    /// Seconds to keep accepting after SIGTERM before draining.
    pub grace_period_secs: u64,
    /// Seconds to wait for in-flight requests when shutting down.
    pub shutdown_timeout_secs: u64,
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

/// One backend pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Backend addresses.
    pub backends: Vec<SocketAddr>,
    /// Connect timeout per attempt.
    pub connect_timeout: Duration,
    /// Read timeout per attempt.
    pub read_timeout: Duration,
    /// Extra attempts for idempotent requests, each on a backend not tried yet.
    pub retries: usize,
    /// Active health check, if configured.
    pub health_check: Option<HealthCheckConfig>,
}

/// Active HTTP health check of a pool.
#[derive(Debug, Clone)]
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

/// A route: requests for `host` (any when `None`) whose path starts with `path_prefix` go to `pool`.
#[derive(Debug, Clone)]
pub struct Route {
    /// A name for logs: `host` + prefix.
    pub name: String,
    /// Lowercased host to match, without port.
    pub host: Option<String>,
    /// Path prefix.
    pub path_prefix: String,
    /// Pool name (exists in [`Config::pools`]).
    pub pool: String,
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
        let key = match (
            &file.edge_auth.signing_key_env,
            &file.edge_auth.signing_key_file,
        ) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "edge-auth",
                    "set signing-key-env or signing-key-file, not both".into(),
                ))
            }
            (Some(var), None) => {
                let secret = env(var).ok_or_else(|| {
                    invalid(
                        "edge-auth.signing-key-env",
                        format!("environment variable {var} is not set"),
                    )
                })?;
                Some(signing_key(
                    secret.trim().as_bytes(),
                    "edge-auth.signing-key-env",
                    &invalid,
                )?)
            }
            (None, Some(file_path)) => {
                let secret = std::fs::read(file_path).map_err(|e| {
                    invalid(
                        "edge-auth.signing-key-file",
                        format!("cannot read {}: {e}", file_path.display()),
                    )
                })?;
                Some(signing_key(
                    secret.trim_ascii(),
                    "edge-auth.signing-key-file",
                    &invalid,
                )?)
            }
            (None, None) => None,
        };
        if key.is_none() && file.edge_auth.allow_cidrs.is_empty() {
            return Err(invalid(
                "edge-auth",
                "no signing key and no allow-cidrs: every request would be refused".into(),
            ));
        }
        let mut pools = BTreeMap::new();
        for (name, p) in file.pools {
            let k = format!("pools.{name}");
            if p.backends.is_empty() {
                return Err(invalid(
                    &format!("{k}.backends"),
                    "needs at least one backend".into(),
                ));
            }
            if p.connect_timeout_ms == 0 || p.read_timeout_ms == 0 {
                return Err(invalid(&k, "timeouts must be greater than 0".into()));
            }
            let health_check = match p.health_check {
                None => None,
                Some(h) => {
                    if !h.path.starts_with('/') {
                        return Err(invalid(
                            &format!("{k}.health-check.path"),
                            format!("must start with '/': {:?}", h.path),
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
            pools.insert(
                name,
                PoolConfig {
                    backends: p.backends,
                    connect_timeout: Duration::from_millis(p.connect_timeout_ms),
                    read_timeout: Duration::from_millis(p.read_timeout_ms),
                    retries: p.retries.min(16),
                    health_check,
                },
            );
        }
        if file.routes.is_empty() {
            return Err(invalid("routes", "needs at least one route".into()));
        }
        let mut routes = Vec::with_capacity(file.routes.len());
        for (i, r) in file.routes.into_iter().enumerate() {
            if !pools.contains_key(&r.pool) {
                return Err(invalid(
                    &format!("routes[{i}].pool"),
                    format!("no pool named {:?}", r.pool),
                ));
            }
            if !r.path_prefix.starts_with('/') {
                return Err(invalid(
                    &format!("routes[{i}].path-prefix"),
                    format!("must start with '/': {:?}", r.path_prefix),
                ));
            }
            let host = r.host.map(|h| h.to_ascii_lowercase());
            routes.push(Route {
                name: format!("{}{}", host.as_deref().unwrap_or("*"), r.path_prefix),
                host,
                path_prefix: r.path_prefix,
                pool: r.pool,
            });
        }
        Ok(Config {
            listen: file.listen,
            threads: file.threads,
            access_log: file.access_log,
            edge_auth: EdgeAuth {
                key: key.map(std::sync::Arc::new),
                max_skew_secs: file.edge_auth.max_skew_secs,
                allow_cidrs: file.edge_auth.allow_cidrs,
            },
            pools,
            routes,
            grace_period_secs: file.shutdown.grace_period_secs,
            shutdown_timeout_secs: file.shutdown.timeout_secs,
        })
    }

    /// The route for a request: host routes before host-less ones, then the longest prefix.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let host = host.map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name));
        self.routes
            .iter()
            .filter(|r| path.starts_with(&r.path_prefix))
            .filter(|r| match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            })
            .max_by_key(|r| (r.host.is_some(), r.path_prefix.len()))
    }
}

fn signing_key(
    secret: &[u8],
    key: &str,
    invalid: &dyn Fn(&str, String) -> ConfigError,
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
}
