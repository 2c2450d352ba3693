//! The edge cache for cacheable dynamic GETs (catalog, product pages), with stale-if-error.
//!
//! A response the origin marks cacheable (`200`, `Cache-Control` with `public` or `max-age`/
//! `s-maxage` > 0, no `private`/`no-store`/`no-cache`, no `Set-Cookie`) is stored in the Cache
//! API for [`STALE_WINDOW_SECS`], with the time it was fetched and its own max-age beside it.
//! While it is fresh by the origin's max-age it is served without an origin trip
//! (`x-edge-cache: HIT`); afterwards the origin is asked again, and if the origin fails (5xx,
//! timeout, unreachable) the stored copy is served anyway (`x-edge-cache: STALE`). The Cache API
//! itself does not implement stale-if-error, hence the longer storage lifetime.

use worker::{Cache, Response, Result};

/// How long a copy is kept for stale-if-error after it stops being fresh.
pub const STALE_WINDOW_SECS: u64 = 24 * 3600;
const STORED_AT: &str = "x-edge-stored-at";
const FRESH_FOR: &str = "x-edge-fresh-secs";
const ORIGINAL_CC: &str = "x-edge-original-cache-control";

/// Seconds the origin allows a shared cache to keep this response, if it is cacheable.
pub fn cacheable_for(status: u16, cache_control: Option<&str>, sets_cookie: bool) -> Option<u64> {
    if status != 200 || sets_cookie {
        return None;
    }
    let cc = cache_control?.to_ascii_lowercase();
    let mut max_age = None;
    let mut s_maxage = None;
    let mut public = false;
    for directive in cc.split(',').map(str::trim) {
        match directive.split_once('=') {
            Some(("max-age", v)) => max_age = v.trim_matches('"').parse::<u64>().ok(),
            Some(("s-maxage", v)) => s_maxage = v.trim_matches('"').parse::<u64>().ok(),
            None if matches!(directive, "private" | "no-store" | "no-cache") => return None,
            None if directive == "public" => public = true,
            _ => {}
        }
    }
    let secs = s_maxage.or(max_age)?;
    (secs > 0 && (public || max_age.is_some() || s_maxage.is_some())).then_some(secs)
}

/// What the cache holds for a URL.
pub enum Lookup {
    /// Fresh by the origin's max-age: serve it.
    Fresh(Response),
    /// Too old to serve unless the origin fails.
    Stale(Response),
    /// Nothing stored.
    Miss,
}

/// Looks up `url` at time `now_ms`.
pub async fn lookup(url: &str, now_ms: u64) -> Result<Lookup> {
    let Some(resp) = Cache::default().get(url, false).await? else {
        return Ok(Lookup::Miss);
    };
    let h = resp.headers();
    let stored_at = h
        .get(STORED_AT)?
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let fresh_secs = h
        .get(FRESH_FOR)?
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let fresh = now_ms.saturating_sub(stored_at) < fresh_secs.saturating_mul(1000);
    let resp = restore(resp)?;
    Ok(if fresh {
        Lookup::Fresh(resp)
    } else {
        Lookup::Stale(resp)
    })
}

/// Gives a stored copy back its own headers and marks where it came from.
fn restore(resp: Response) -> Result<Response> {
    let headers = resp.headers().clone();
    if let Some(cc) = headers.get(ORIGINAL_CC)? {
        headers.set("cache-control", &cc)?;
    }
    for h in [STORED_AT, FRESH_FOR, ORIGINAL_CC] {
        headers.delete(h)?;
    }
    let (_, body) = resp.into_parts();
    Ok(Response::from_body(body)?.with_headers(headers))
}

/// Stores a copy of `resp` (already known cacheable for `fresh_secs`) under `url`.
pub async fn store(url: String, resp: Response, fresh_secs: u64, now_ms: u64) -> Result<()> {
    let headers = resp.headers().clone();
    if let Some(cc) = headers.get("cache-control")? {
        headers.set(ORIGINAL_CC, &cc)?;
    }
    headers.set(
        "cache-control",
        &format!("public, max-age={STALE_WINDOW_SECS}"),
    )?;
    headers.set(STORED_AT, &now_ms.to_string())?;
    headers.set(FRESH_FOR, &fresh_secs.to_string())?;
    let (_, body) = resp.into_parts();
    let copy = Response::from_body(body)?.with_headers(headers);
    Cache::default().put(url.as_str(), copy).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_cacheable() {
        assert_eq!(
            cacheable_for(200, Some("public, max-age=30"), false),
            Some(30)
        );
        assert_eq!(
            cacheable_for(200, Some("max-age=10, s-maxage=60"), false),
            Some(60)
        );
        assert_eq!(cacheable_for(200, Some("public, max-age=30"), true), None);
        assert_eq!(cacheable_for(200, Some("private, max-age=30"), false), None);
        assert_eq!(cacheable_for(200, Some("no-store"), false), None);
        assert_eq!(cacheable_for(200, Some("public, max-age=0"), false), None);
        assert_eq!(cacheable_for(200, Some("public"), false), None);
        assert_eq!(cacheable_for(200, None, false), None);
        assert_eq!(cacheable_for(404, Some("public, max-age=30"), false), None);
    }
}
