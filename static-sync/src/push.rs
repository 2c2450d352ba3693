//! `push` and the release pointer: the I/O around [`crate::plan::diff`] and the pure
//! transitions of [`crate::manifest::Release`].
//!
//! Order of writes, which is what keeps shoppers on one whole version:
//! 1. blobs the store lacks (batched; after each batch its hashes go to the journal in
//!    `OUT/.static-sync/`, so an interrupted push resumes where it stopped),
//! 2. `manifest/<version>`, once every blob it names is in the store,
//! 3. `release`, only by `activate`/`schedule`/`rollback` (or `push --activate`), one write, and
//!    only to versions whose manifest is in the store.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::build::STATE_DIR;
use crate::error::StoreError;
use crate::manifest::{blob_key, manifest_key, Manifest, Release, TransitionError};
use crate::plan::{diff, Plan};
use crate::site::sha256_hex;
use crate::store::{present_blobs, read_manifest, read_release, write_release, Store};

/// What can go wrong pushing or moving the pointer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A build file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The push journal could not be written.
    #[error("cannot write the push journal {path}")]
    Journal {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `manifest.json` is not a manifest.
    #[error("{path} is not a static-sync manifest")]
    BadManifest {
        /// Which.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A file changed since `build`.
    #[error("{path} does not match manifest.json (sha256 {actual}, manifest says {expected}): run `static-sync build` again")]
    Corrupt {
        /// Which.
        path: PathBuf,
        /// From the manifest.
        expected: String,
        /// On disk.
        actual: String,
    },
    /// The version was never pushed to this store.
    #[error("version {0} is not in the store (no manifest/{0}): push it first")]
    UnknownVersion(String),
    /// A transition that makes no sense now.
    #[error(transparent)]
    Transition(#[from] TransitionError),
}

/// Reads `OUT/manifest.json`.
pub fn load_manifest(path: &Path) -> Result<Manifest, PushError> {
    let bytes = std::fs::read(path).map_err(|source| PushError::Read {
        path: path.to_owned(),
        source,
    })?;
    Manifest::from_json(&bytes).map_err(|source| PushError::BadManifest {
        path: path.to_owned(),
        source,
    })
}

/// Which version `plan` compares against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Against {
    /// What the edge serves now.
    Live,
    /// The scheduled version (or the live one if none).
    Next,
    /// A named version.
    Version(String),
    /// Nothing (everything is added).
    Nothing,
}

/// Plans a push of `manifest` against the store.
pub fn plan(
    store: &dyn Store,
    manifest: &Manifest,
    against: &Against,
    now_ms: u64,
) -> Result<Plan, PushError> {
    let release = read_release(store)?.unwrap_or_default();
    let version: Option<String> = match against {
        Against::Live => release.live_version(now_ms).map(str::to_owned),
        Against::Next => release
            .next
            .as_ref()
            .map(|n| n.version.clone())
            .or_else(|| release.live_version(now_ms).map(str::to_owned)),
        Against::Version(v) => Some(v.clone()),
        Against::Nothing => None,
    };
    let current = match &version {
        Some(v) => {
            Some(read_manifest(store, v)?.ok_or_else(|| PushError::UnknownVersion(v.clone()))?)
        }
        None => None,
    };
    let present = present_blobs(store)?;
    let manifest_present = store.get(&manifest_key(&manifest.version))?.is_some();
    Ok(diff(manifest, current.as_ref(), &present, manifest_present))
}

/// How `push` batches uploads.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// At most this many keys per batch (KV bulk writes take 10,000).
    pub batch_keys: usize,
    /// At most this many bytes of content per batch (a batch is one request of at most
    /// 100 MB after base64).
    pub batch_bytes: u64,
    /// Read and write the journal in `OUT/.static-sync/`.
    pub journal: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            batch_keys: 1000,
            batch_bytes: 48 * 1024 * 1024,
            journal: true,
        }
    }
}

/// What `push` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PushReport {
    /// The version pushed.
    pub version: String,
    /// Blobs uploaded now.
    pub uploaded_blobs: usize,
    /// Their bytes.
    pub uploaded_bytes: u64,
    /// Blobs of this version already in the store (or in the journal).
    pub skipped_blobs: usize,
    /// Whether the manifest was written now (false if it was already there).
    pub manifest_written: bool,
}

/// Progress of a push, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Bytes uploaded so far.
    pub done_bytes: u64,
    /// Bytes to upload in all.
    pub total_bytes: u64,
}

fn journal_path(out: &Path, store: &dyn Store) -> PathBuf {
    let id = sha256_hex(store.identity().as_bytes());
    out.join(STATE_DIR)
        .join(format!("pushed-{}.txt", &id[..16]))
}

fn read_journal(path: &Path) -> HashSet<String> {
    std::fs::read_to_string(path)
        .map(|s| {
            s.lines()
                .filter(|l| l.len() == 64)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Uploads the build in `out` (its `manifest.json` is `manifest`): missing blobs, then the
/// manifest. Does not touch `release`.
pub fn push(
    store: &dyn Store,
    out: &Path,
    manifest: &Manifest,
    opts: &PushOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<PushReport, PushError> {
    let journal = journal_path(out, store);
    let mut present = present_blobs(store)?;
    if opts.journal {
        present.extend(read_journal(&journal));
    }
    let manifest_present = store.get(&manifest_key(&manifest.version))?.is_some();
    let plan = diff(manifest, None, &present, manifest_present);
    let unique: HashSet<&str> = manifest.files.values().map(|f| f.sha256.as_str()).collect();
    let mut report = PushReport {
        version: manifest.version.clone(),
        skipped_blobs: unique.len() - plan.uploads.len(),
        ..PushReport::default()
    };
    let total_bytes = plan.upload_bytes;
    progress(Progress {
        done_bytes: 0,
        total_bytes,
    });
    let mut journal_file = None;
    if opts.journal && !plan.uploads.is_empty() {
        let dir = out.join(STATE_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| PushError::Journal { path: dir, source })?;
        journal_file = Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&journal)
                .map_err(|source| PushError::Journal {
                    path: journal.clone(),
                    source,
                })?,
        );
    }
    let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0u64;
    let mut hashes: Vec<&str> = Vec::new();
    let mut flush = |batch: &mut Vec<(String, Vec<u8>)>,
                     hashes: &mut Vec<&str>,
                     batch_bytes: &mut u64,
                     report: &mut PushReport|
     -> Result<(), PushError> {
        if batch.is_empty() {
            return Ok(());
        }
        store.put_many(batch)?;
        report.uploaded_blobs += batch.len();
        report.uploaded_bytes += *batch_bytes;
        if let Some(f) = journal_file.as_mut() {
            let mut text = hashes.join("\n");
            text.push('\n');
            f.write_all(text.as_bytes())
                .and_then(|()| f.flush())
                .map_err(|source| PushError::Journal {
                    path: journal.clone(),
                    source,
                })?;
        }
        batch.clear();
        hashes.clear();
        *batch_bytes = 0;
        progress(Progress {
            done_bytes: report.uploaded_bytes,
            total_bytes,
        });
        Ok(())
    };
    for upload in &plan.uploads {
        let path = out.join(upload.path.trim_start_matches('/'));
        let bytes = std::fs::read(&path).map_err(|source| PushError::Read {
            path: path.clone(),
            source,
        })?;
        let actual = sha256_hex(&bytes);
        if actual != upload.sha256 {
            return Err(PushError::Corrupt {
                path,
                expected: upload.sha256.clone(),
                actual,
            });
        }
        if !batch.is_empty()
            && (batch.len() >= opts.batch_keys
                || batch_bytes + bytes.len() as u64 > opts.batch_bytes)
        {
            flush(&mut batch, &mut hashes, &mut batch_bytes, &mut report)?;
        }
        batch_bytes += bytes.len() as u64;
        batch.push((blob_key(&upload.sha256), bytes));
        hashes.push(&upload.sha256);
    }
    flush(&mut batch, &mut hashes, &mut batch_bytes, &mut report)?;
    if !manifest_present {
        store.put(
            &manifest_key(&manifest.version),
            manifest.to_json().as_bytes(),
        )?;
        report.manifest_written = true;
    }
    Ok(report)
}

/// The pointer before and after a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReleaseChange {
    /// Before (settled to now).
    pub before: Release,
    /// After (as written).
    pub after: Release,
}

/// Applies a transition to `release` and writes it (one write). Every version the new pointer
/// names must have its manifest in the store.
pub fn change_release(
    store: &dyn Store,
    now_ms: u64,
    transition: impl FnOnce(&Release) -> Result<Release, TransitionError>,
) -> Result<ReleaseChange, PushError> {
    let before = read_release(store)?.unwrap_or_default();
    let after = transition(&before)?;
    for v in after.referenced_versions() {
        if store.get(&manifest_key(v))?.is_none() {
            return Err(PushError::UnknownVersion(v.to_owned()));
        }
    }
    write_release(store, &after)?;
    Ok(ReleaseChange {
        before: before.settled(now_ms),
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{build_site, write_output};
    use crate::site::SiteFiles;
    use crate::store::MemoryStore;

    fn built(dir: &Path, variant: &str) -> Manifest {
        let mut s = SiteFiles::new();
        s.insert(
            "index.html".into(),
            format!("<link rel=stylesheet href=a.css>{variant}").into_bytes(),
        );
        s.insert("a.css".into(), b"body{}".to_vec());
        for i in 0..25 {
            s.insert(format!("img/{i}.bin"), vec![i as u8, 0xff, 0xfe]);
        }
        let out = build_site(&s).unwrap();
        write_output(dir, &out).unwrap();
        out.manifest
    }

    #[test]
    fn push_uploads_blobs_then_manifest_and_never_the_pointer() {
        let dir = tempfile::tempdir().unwrap();
        let m = built(dir.path(), "v1");
        let store = MemoryStore::new();
        let r = push(&store, dir.path(), &m, &PushOptions::default(), &mut |_| {}).unwrap();
        assert_eq!(r.uploaded_blobs, 27);
        assert!(r.manifest_written);
        let snap = store.snapshot();
        assert!(!snap.contains_key("release"));
        for f in m.files.values() {
            assert!(snap.contains_key(&f.blob_key()));
        }
        assert_eq!(
            Manifest::from_json(&snap[&manifest_key(&m.version)]).unwrap(),
            m
        );
        // Pushing again uploads nothing.
        let again = push(&store, dir.path(), &m, &PushOptions::default(), &mut |_| {}).unwrap();
        assert_eq!(
            (
                again.uploaded_blobs,
                again.manifest_written,
                again.skipped_blobs
            ),
            (0, false, 27)
        );
    }

    #[test]
    fn an_interrupted_push_resumes_without_reuploading_and_writes_no_manifest_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let m = built(dir.path(), "v1");
        let opts = PushOptions {
            batch_keys: 10,
            ..PushOptions::default()
        };
        let mut store = MemoryStore::new();
        store.fail_after_batches = Some(2);
        assert!(push(&store, dir.path(), &m, &opts, &mut |_| {}).is_err());
        assert!(!store.snapshot().contains_key(&manifest_key(&m.version)));
        assert_eq!(read_journal(&journal_path(dir.path(), &store)).len(), 20);
        // Resume: a store that keeps the first 20 blobs and works again.
        let resumed = MemoryStore::new();
        for (k, v) in store.snapshot() {
            resumed.put(&k, &v).unwrap();
        }
        let r = push(&resumed, dir.path(), &m, &opts, &mut |_| {}).unwrap();
        assert_eq!(r.uploaded_blobs, 7);
        assert_eq!(r.skipped_blobs, 20);
        assert!(r.manifest_written);
    }

    #[test]
    fn a_file_changed_after_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = built(dir.path(), "v1");
        std::fs::write(dir.path().join("index.html"), "tampered").unwrap();
        let err = push(
            &MemoryStore::new(),
            dir.path(),
            &m,
            &PushOptions::default(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(matches!(err, PushError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn pointer_changes_need_pushed_versions_and_plan_compares_with_live() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let m1 = built(d1.path(), "v1");
        let m2 = built(d2.path(), "v2");
        let store = MemoryStore::new();
        assert!(matches!(
            change_release(&store, 0, |r| Ok(r.activate(&m1.version, 0))),
            Err(PushError::UnknownVersion(_))
        ));
        push(&store, d1.path(), &m1, &PushOptions::default(), &mut |_| {}).unwrap();
        change_release(&store, 0, |r| Ok(r.activate(&m1.version, 0))).unwrap();
        let p = plan(&store, &m2, &Against::Live, 0).unwrap();
        assert_eq!(p.against.as_deref(), Some(m1.version.as_str()));
        assert_eq!(p.changed.len(), 1);
        assert_eq!(p.uploads.len(), 1);
        assert!(!p.manifest_present);
        push(&store, d2.path(), &m2, &PushOptions::default(), &mut |_| {}).unwrap();
        let c = change_release(&store, 10, |r| r.schedule(&m2.version, 1000, 10)).unwrap();
        assert_eq!(c.after.live_version(999), Some(m1.version.as_str()));
        assert_eq!(c.after.live_version(1000), Some(m2.version.as_str()));
        let rb = change_release(&store, 2000, |r| r.rollback(2000)).unwrap();
        assert_eq!(rb.after.current.as_deref(), Some(m1.version.as_str()));
        assert_eq!(rb.before.current.as_deref(), Some(m2.version.as_str()));
    }
}
