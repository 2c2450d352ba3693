//! The data `static-sync` writes into the worker's KV namespace (binding `SITE`), and the pure
//! rules the worker applies to it. This module depends on serde and serde_json only and builds
//! for `wasm32-unknown-unknown`, so `edge-worker` uses these very types.
//!
//! # Keys
//!
//! | key | value |
//! |---|---|
//! | `blob/<sha256 hex>` | the raw bytes of one file, keyed by the SHA-256 of its content ([`blob_key`]) |
//! | `manifest/<version-id>` | a [`Manifest`] as JSON ([`manifest_key`]) |
//! | `release` | a [`Release`] as JSON ([`RELEASE_KEY`]) |
//!
//! Blobs and manifests are immutable: a key is written once, before anything points at it, and
//! never rewritten. The only key that changes is `release`, and every change to it is one write.
//! That is why shoppers never see a mix of two versions: a version becomes reachable only when
//! `release` names it, and by then all its blobs and its manifest are in KV.
//!
//! # JSON shapes
//!
//! `manifest/<version-id>`:
//! ```json
//! {
//!   "version": "5d41402abc4b2a76",
//!   "files": {
//!     "/index.html": {
//!       "sha256": "<64 hex>", "size": 2048,
//!       "content_type": "text/html; charset=utf-8",
//!       "cache_control": "public, max-age=0, must-revalidate"
//!     },
//!     "/assets/app.3f2a9c1e.css": {
//!       "sha256": "<64 hex>", "size": 913,
//!       "content_type": "text/css; charset=utf-8",
//!       "cache_control": "public, max-age=31536000, immutable"
//!     }
//!   }
//! }
//! ```
//! File keys are URL paths: they start with `/`, use `/` separators and are not percent-encoded.
//!
//! `release`:
//! ```json
//! { "current": "5d41402abc4b2a76", "previous": null,
//!   "next": { "version": "7d793037a0760186", "at": 1767225600000 } }
//! ```
//! `current` is `null` only before any version was activated (then the worker serves its Workers
//! Static Assets baseline); `previous` is `null` when there is nothing to roll back to; `next` is
//! `null` when nothing is scheduled; `at` is Unix time in milliseconds.
//!
//! # What the worker does per request
//!
//! 1. Read `release` (cache it per isolate for a few seconds) and parse it with
//!    [`Release::from_json`].
//! 2. [`Release::live_version`]`(now_ms)`: `next.version` once `now >= next.at`, else `current`.
//!    No deploy and no write happens at go-live: the switch is this comparison.
//! 3. Read `manifest/<version>` (immutable: cache it per isolate without expiry) and call
//!    [`Manifest::resolve`] with the request path (`/` → `/index.html`, `/sale` → `/sale.html` or
//!    `/sale/index.html`).
//! 4. Read `blob/<sha256>` and answer with `content_type`, `cache_control` and
//!    `ETag: "<sha256>"` ([`FileEntry::etag`]).
//! 5. If the path is not in the live manifest, a page loaded just before a switch may still ask
//!    for the previous version's fingerprinted CSS or JS: [`Release::fallback_versions`] names
//!    the other versions to look in, and only entries with [`FileEntry::is_immutable`] may be
//!    served from them (never an HTML page the live version removed).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The KV key of the release pointer.
pub const RELEASE_KEY: &str = "release";
/// The prefix of content-addressed file blobs.
pub const BLOB_PREFIX: &str = "blob/";
/// The prefix of per-version manifests.
pub const MANIFEST_PREFIX: &str = "manifest/";
/// `Cache-Control` of fingerprinted assets: their name changes whenever their content does.
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of HTML and other files whose URL is public and stable (the Workers Static
/// Assets default): browsers revalidate every time, so a go-live is seen at once.
pub const CACHE_REVALIDATE: &str = "public, max-age=0, must-revalidate";

/// The KV key of the blob holding content with this SHA-256 (lowercase hex).
pub fn blob_key(sha256_hex: &str) -> String {
    format!("{BLOB_PREFIX}{sha256_hex}")
}

/// The KV key of a version's manifest.
pub fn manifest_key(version: &str) -> String {
    format!("{MANIFEST_PREFIX}{version}")
}

/// One file of a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// SHA-256 of the content, lowercase hex (64 characters); the blob is `blob/<sha256>`.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The `Content-Type` to answer with.
    pub content_type: String,
    /// The `Cache-Control` to answer with.
    pub cache_control: String,
}

impl FileEntry {
    /// The KV key of this file's content.
    pub fn blob_key(&self) -> String {
        blob_key(&self.sha256)
    }

    /// A strong `ETag` value, quotes included.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.sha256)
    }

    /// Whether the file is a fingerprinted asset (its URL names its content), which makes it
    /// safe to serve from another version than the live one.
    pub fn is_immutable(&self) -> bool {
        self.cache_control.contains("immutable")
    }
}

/// The files of one version, by URL path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The version id: the first 16 hex digits of the SHA-256 of the canonical JSON of `files`,
    /// so the same content always gets the same id.
    pub version: String,
    /// URL path (`/index.html`) → file.
    pub files: BTreeMap<String, FileEntry>,
}

impl Manifest {
    /// Parses a manifest from JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// The canonical JSON text (pretty, keys sorted), as written to `manifest.json` and KV.
    pub fn to_json(&self) -> String {
        // A map of strings to plain structs cannot fail to serialise.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Total size of all files in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// Finds the file for a request path (no query string), the way Workers Static Assets'
    /// `auto-trailing-slash` HTML handling does: the exact path, then `path.html`, then
    /// `path/index.html` (so `/` → `/index.html`). Returns the manifest path and entry.
    pub fn resolve(&self, request_path: &str) -> Option<(&str, &FileEntry)> {
        let path = if request_path.starts_with('/') {
            request_path.to_owned()
        } else {
            format!("/{request_path}")
        };
        let mut candidates = Vec::with_capacity(3);
        if path.ends_with('/') {
            candidates.push(format!("{path}index.html"));
        } else {
            candidates.push(path.clone());
            candidates.push(format!("{path}.html"));
            candidates.push(format!("{path}/index.html"));
        }
        candidates
            .into_iter()
            .find_map(|c| self.files.get_key_value(c.as_str()))
            .map(|(k, v)| (k.as_str(), v))
    }
}

impl Manifest {
    /// An exact, fingerprinted path in this manifest: what may be served from a version other
    /// than the live one (see [`Release::fallback_versions`]).
    pub fn resolve_immutable(&self, request_path: &str) -> Option<&FileEntry> {
        self.files.get(request_path).filter(|e| e.is_immutable())
    }
}

/// A version scheduled to go live at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduled {
    /// The version id.
    pub version: String,
    /// Go-live time, Unix milliseconds.
    pub at: u64,
}

/// The release pointer: which version is live, which one was, which one will be.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The live version (until `next` is due); `None` before any activation.
    pub current: Option<String>,
    /// The version `rollback` returns to.
    pub previous: Option<String>,
    /// The version that goes live at `next.at`.
    pub next: Option<Scheduled>,
}

/// Why a release transition cannot be made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransitionError {
    /// `rollback` with no previous version.
    NothingToRollBackTo,
    /// `schedule` with a time that is not in the future.
    TimeNotInFuture {
        /// The requested time, Unix ms.
        at: u64,
        /// Now, Unix ms.
        now: u64,
    },
}

impl std::fmt::Display for TransitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NothingToRollBackTo => {
                f.write_str("there is no previous version to roll back to")
            }
            Self::TimeNotInFuture { at, now } => write!(
                f,
                "go-live time {at} ms is not in the future (now is {now} ms); use `activate` to switch at once"
            ),
        }
    }
}

impl std::error::Error for TransitionError {}

impl Release {
    /// Parses the pointer from JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// The JSON text written to KV.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The version to serve at `now_ms`: `next` once it is due, else `current`. `None` means
    /// nothing was released through KV yet (serve the Static Assets baseline).
    pub fn live_version(&self, now_ms: u64) -> Option<&str> {
        match &self.next {
            Some(next) if now_ms >= next.at => Some(next.version.as_str()),
            _ => self.current.as_deref(),
        }
    }

    /// The other versions whose fingerprinted assets may still be requested by pages loaded
    /// before the last switch, in the order to try them.
    pub fn fallback_versions(&self, now_ms: u64) -> Vec<&str> {
        let live = self.live_version(now_ms);
        let mut out: Vec<&str> = Vec::new();
        let others = [
            self.current.as_deref(),
            self.next.as_ref().map(|n| n.version.as_str()),
            self.previous.as_deref(),
        ];
        for v in others.into_iter().flatten() {
            if Some(v) != live && !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    /// The same pointer with a due `next` folded into `current` (what the worker already
    /// serves). Every transition below starts from this, so a write never undoes a go-live.
    pub fn settled(&self, now_ms: u64) -> Release {
        match &self.next {
            Some(next) if now_ms >= next.at => {
                let previous = if self.current.as_deref() == Some(next.version.as_str()) {
                    self.previous.clone()
                } else {
                    self.current.clone().or_else(|| self.previous.clone())
                };
                Release {
                    current: Some(next.version.clone()),
                    previous,
                    next: None,
                }
            }
            _ => self.clone(),
        }
    }

    /// Makes `version` live at once. A pending schedule of another version stays pending.
    pub fn activate(&self, version: &str, now_ms: u64) -> Release {
        let s = self.settled(now_ms);
        if s.current.as_deref() == Some(version) {
            let mut same = s;
            if same.next.as_ref().is_some_and(|n| n.version == version) {
                same.next = None;
            }
            return same;
        }
        Release {
            previous: s.current.clone().or(s.previous),
            current: Some(version.to_owned()),
            next: s.next.filter(|n| n.version != version),
        }
    }

    /// Schedules `version` to go live at `at_ms` (replacing any pending schedule).
    pub fn schedule(
        &self,
        version: &str,
        at_ms: u64,
        now_ms: u64,
    ) -> Result<Release, TransitionError> {
        if at_ms <= now_ms {
            return Err(TransitionError::TimeNotInFuture {
                at: at_ms,
                now: now_ms,
            });
        }
        let mut s = self.settled(now_ms);
        s.next = Some(Scheduled {
            version: version.to_owned(),
            at: at_ms,
        });
        Ok(s)
    }

    /// Cancels a pending schedule.
    pub fn unschedule(&self, now_ms: u64) -> Release {
        let mut s = self.settled(now_ms);
        s.next = None;
        s
    }

    /// Back to the previous version, pending schedule cleared, in one write. The version rolled
    /// back from is not kept as `previous`, so a second rollback cannot bring it back by accident.
    pub fn rollback(&self, now_ms: u64) -> Result<Release, TransitionError> {
        let s = self.settled(now_ms);
        match s.previous {
            Some(previous) => Ok(Release {
                current: Some(previous),
                previous: None,
                next: None,
            }),
            None => Err(TransitionError::NothingToRollBackTo),
        }
    }

    /// Every version the pointer references (their blobs must never be deleted).
    pub fn referenced_versions(&self) -> Vec<&str> {
        let mut v: Vec<&str> = [
            self.current.as_deref(),
            self.previous.as_deref(),
            self.next.as_ref().map(|n| n.version.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sha: &str, cc: &str) -> FileEntry {
        FileEntry {
            sha256: sha.into(),
            size: 1,
            content_type: "text/html; charset=utf-8".into(),
            cache_control: cc.into(),
        }
    }

    #[test]
    fn release_json_shape_is_the_documented_one() {
        let r = Release {
            current: Some("a".into()),
            previous: None,
            next: Some(Scheduled {
                version: "b".into(),
                at: 5,
            }),
        };
        assert_eq!(
            r.to_json(),
            r#"{"current":"a","previous":null,"next":{"version":"b","at":5}}"#
        );
        assert_eq!(Release::from_json(r.to_json().as_bytes()).unwrap(), r);
    }

    #[test]
    fn live_version_switches_exactly_at_the_time() {
        let r = Release::default()
            .activate("a", 0)
            .schedule("b", 1000, 10)
            .unwrap();
        assert_eq!(r.live_version(999), Some("a"));
        assert_eq!(r.live_version(1000), Some("b"));
        assert_eq!(r.fallback_versions(1000), vec!["a"]);
        assert_eq!(Release::default().live_version(0), None);
    }

    #[test]
    fn rollback_after_a_due_schedule_returns_to_the_version_before_it() {
        let r = Release::default()
            .activate("a", 0)
            .schedule("b", 100, 10)
            .unwrap();
        let back = r.rollback(200).unwrap();
        assert_eq!(back.current.as_deref(), Some("a"));
        assert_eq!(back.next, None);
        assert_eq!(back.previous, None);
        assert_eq!(
            back.rollback(300),
            Err(TransitionError::NothingToRollBackTo)
        );
    }

    #[test]
    fn rollback_clears_a_pending_schedule() {
        let r = Release::default().activate("a", 0).activate("b", 1);
        let r = r.schedule("c", 1000, 2).unwrap();
        let back = r.rollback(3).unwrap();
        assert_eq!(back.current.as_deref(), Some("a"));
        assert_eq!(back.next, None);
    }

    #[test]
    fn schedule_in_the_past_is_refused() {
        assert!(matches!(
            Release::default().schedule("a", 5, 5),
            Err(TransitionError::TimeNotInFuture { .. })
        ));
    }

    #[test]
    fn activate_same_version_is_a_no_op_and_keeps_previous() {
        let r = Release::default().activate("a", 0).activate("b", 1);
        assert_eq!(r.activate("b", 2), r);
    }

    #[test]
    fn resolve_follows_static_assets_html_handling() {
        let mut files = BTreeMap::new();
        files.insert("/index.html".to_owned(), entry("1", CACHE_REVALIDATE));
        files.insert("/sale.html".to_owned(), entry("2", CACHE_REVALIDATE));
        files.insert(
            "/products/index.html".to_owned(),
            entry("3", CACHE_REVALIDATE),
        );
        let m = Manifest {
            version: "v".into(),
            files,
        };
        assert_eq!(m.resolve("/").unwrap().0, "/index.html");
        assert_eq!(m.resolve("/sale").unwrap().0, "/sale.html");
        assert_eq!(m.resolve("/sale.html").unwrap().0, "/sale.html");
        assert_eq!(m.resolve("/products").unwrap().0, "/products/index.html");
        assert_eq!(m.resolve("/products/").unwrap().0, "/products/index.html");
        assert!(m.resolve("/nope").is_none());
    }

    #[test]
    fn only_fingerprinted_assets_resolve_from_other_versions() {
        let mut files = BTreeMap::new();
        files.insert("/index.html".to_owned(), entry("1", CACHE_REVALIDATE));
        files.insert("/a.3f2a9c1e.css".to_owned(), entry("2", CACHE_IMMUTABLE));
        let m = Manifest {
            version: "v".into(),
            files,
        };
        assert!(m.resolve_immutable("/a.3f2a9c1e.css").is_some());
        assert!(m.resolve_immutable("/index.html").is_none());
        assert!(m.resolve_immutable("/").is_none());
    }
}
