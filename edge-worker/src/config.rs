//! The worker's settings, read from its environment (`wrangler.toml` vars and secrets).

use worker::Env;

use crate::error::EdgeError;

/// Settings for one request, read from the environment.
pub struct EdgeConfig {
    /// Base URL of the origin proxy, e.g. `https://origin.shop.example`.
    pub origin: String,
    /// Key for the edge signature (secret `EDGE_SIGNING_KEY`).
    pub signing_key: edge_signature::SigningKey,
    /// How long to wait for the origin before serving a stale copy or the maintenance page
    /// (var `ORIGIN_TIMEOUT_MS`, default 10 s, capped at 60 s).
    pub origin_timeout_ms: u64,
}

/// Default origin timeout.
pub const DEFAULT_ORIGIN_TIMEOUT_MS: u64 = 10_000;
/// Longest origin timeout accepted.
pub const MAX_ORIGIN_TIMEOUT_MS: u64 = 60_000;

impl EdgeConfig {
    /// Reads `ORIGIN_URL` (var) and `EDGE_SIGNING_KEY` (secret).
    pub fn from_env(env: &Env) -> Result<Self, EdgeError> {
        let origin = env
            .var("ORIGIN_URL")
            .map(|v| v.to_string())
            .map_err(|_| EdgeError::Misconfigured("ORIGIN_URL is not set".into()))?;
        let origin = validate_origin(&origin)?;
        let secret = env
            .secret("EDGE_SIGNING_KEY")
            .map(|s| s.to_string())
            .map_err(|_| EdgeError::Misconfigured("secret EDGE_SIGNING_KEY is not set".into()))?;
        let signing_key =
            edge_signature::SigningKey::new(secret.trim().as_bytes()).ok_or_else(|| {
                EdgeError::Misconfigured(format!(
                    "EDGE_SIGNING_KEY must be at least {} bytes",
                    edge_signature::SigningKey::MIN_LEN
                ))
            })?;
        let origin_timeout_ms = match env.var("ORIGIN_TIMEOUT_MS") {
            Err(_) => DEFAULT_ORIGIN_TIMEOUT_MS,
            Ok(v) => v
                .to_string()
                .parse::<u64>()
                .ok()
                .filter(|ms| (1..=MAX_ORIGIN_TIMEOUT_MS).contains(ms))
                .ok_or_else(|| {
                    EdgeError::Misconfigured(format!(
                        "ORIGIN_TIMEOUT_MS must be 1..={MAX_ORIGIN_TIMEOUT_MS} milliseconds"
                    ))
                })?,
        };
        Ok(EdgeConfig {
            origin,
            signing_key,
            origin_timeout_ms,
        })
    }
}

/// Checks that `ORIGIN_URL` is an http(s) base URL and strips a trailing slash.
pub fn validate_origin(origin: &str) -> Result<String, EdgeError> {
    let trimmed = origin.trim().trim_end_matches('/');
    let ok = (trimmed.starts_with("http://") || trimmed.starts_with("https://"))
        && trimmed.len() > "https://".len()
        && !trimmed.contains(['?', '#', ' ']);
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(EdgeError::Misconfigured(format!(
            "ORIGIN_URL must be an http(s) base URL without query, got {origin:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_urls() {
        assert_eq!(
            validate_origin("http://127.0.0.1:8080/").as_deref(),
            Ok("http://127.0.0.1:8080")
        );
        assert!(validate_origin("ftp://x").is_err());
        assert!(validate_origin("https://").is_err());
        assert!(validate_origin("https://a/?q").is_err());
    }
}
