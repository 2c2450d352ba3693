//! The difference between a built manifest and what the edge serves now. Pure: the caller
//! supplies both manifests and the set of blobs already in the store.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::manifest::Manifest;

/// One path that is new or different.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathChange {
    /// URL path.
    pub path: String,
    /// Size in the new version (0 for a removal).
    pub size: u64,
}

/// A blob the store does not have yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Upload {
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// One path of the new version with this content (to read it from the build output).
    pub path: String,
}

/// What pushing and activating a manifest would change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The new version id.
    pub version: String,
    /// The version compared against, if any.
    pub against: Option<String>,
    /// Paths only in the new version.
    pub added: Vec<PathChange>,
    /// Paths in both whose content differs.
    pub changed: Vec<PathChange>,
    /// Paths only in the version compared against.
    pub removed: Vec<PathChange>,
    /// Paths with the same content in both.
    pub unchanged: usize,
    /// Blobs to upload, each content once, sorted by hash.
    pub uploads: Vec<Upload>,
    /// Sum of the upload sizes.
    pub upload_bytes: u64,
    /// Whether the store already has this version's manifest.
    pub manifest_present: bool,
}

impl Plan {
    /// Nothing to upload and no path changes.
    pub fn is_noop(&self) -> bool {
        self.uploads.is_empty()
            && self.manifest_present
            && self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
    }
}

/// Compares `new` with `current` (what the edge serves; `None` if nothing) given the blob
/// hashes the store already holds (`present_blobs`, hex without the `blob/` prefix) and whether
/// it holds `new`'s manifest.
pub fn diff(
    new: &Manifest,
    current: Option<&Manifest>,
    present_blobs: &HashSet<String>,
    manifest_present: bool,
) -> Plan {
    let empty = BTreeMap::new();
    let old_files = current.map_or(&empty, |m| &m.files);
    let mut plan = Plan {
        version: new.version.clone(),
        against: current.map(|m| m.version.clone()),
        manifest_present,
        ..Plan::default()
    };
    for (path, entry) in &new.files {
        match old_files.get(path) {
            None => plan.added.push(PathChange {
                path: path.clone(),
                size: entry.size,
            }),
            Some(old) if old.sha256 != entry.sha256 => plan.changed.push(PathChange {
                path: path.clone(),
                size: entry.size,
            }),
            Some(_) => plan.unchanged += 1,
        }
    }
    for (path, old) in old_files {
        if !new.files.contains_key(path) {
            plan.removed.push(PathChange {
                path: path.clone(),
                size: old.size,
            });
        }
    }
    let mut uploads: BTreeMap<&str, Upload> = BTreeMap::new();
    for (path, entry) in &new.files {
        if !present_blobs.contains(&entry.sha256) {
            uploads.entry(&entry.sha256).or_insert_with(|| Upload {
                sha256: entry.sha256.clone(),
                size: entry.size,
                path: path.clone(),
            });
        }
    }
    plan.upload_bytes = uploads.values().map(|u| u.size).sum();
    plan.uploads = uploads.into_values().collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FileEntry, CACHE_REVALIDATE};

    fn manifest(version: &str, files: &[(&str, &str, u64)]) -> Manifest {
        Manifest {
            version: version.into(),
            files: files
                .iter()
                .map(|(p, h, s)| {
                    (
                        (*p).to_owned(),
                        FileEntry {
                            sha256: (*h).to_owned(),
                            size: *s,
                            content_type: "text/plain".into(),
                            cache_control: CACHE_REVALIDATE.into(),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn first_push_adds_everything_and_uploads_each_content_once() {
        let new = manifest("n", &[("/a", "h1", 10), ("/b", "h1", 10), ("/c", "h2", 5)]);
        let plan = diff(&new, None, &HashSet::new(), false);
        assert_eq!(plan.added.len(), 3);
        assert!(plan.changed.is_empty() && plan.removed.is_empty());
        assert_eq!(plan.uploads.len(), 2);
        assert_eq!(plan.upload_bytes, 15);
        assert_eq!(plan.against, None);
    }

    #[test]
    fn diff_classifies_added_changed_removed_unchanged() {
        let old = manifest(
            "o",
            &[("/same", "s", 1), ("/edit", "e1", 2), ("/gone", "g", 3)],
        );
        let new = manifest(
            "n",
            &[("/same", "s", 1), ("/edit", "e2", 4), ("/new", "x", 8)],
        );
        let present: HashSet<String> = ["s", "e1", "g"].iter().map(|s| s.to_string()).collect();
        let plan = diff(&new, Some(&old), &present, false);
        assert_eq!(plan.unchanged, 1);
        assert_eq!(
            plan.added,
            vec![PathChange {
                path: "/new".into(),
                size: 8
            }]
        );
        assert_eq!(
            plan.changed,
            vec![PathChange {
                path: "/edit".into(),
                size: 4
            }]
        );
        assert_eq!(
            plan.removed,
            vec![PathChange {
                path: "/gone".into(),
                size: 3
            }]
        );
        assert_eq!(plan.upload_bytes, 12);
        assert_eq!(
            plan.uploads
                .iter()
                .map(|u| u.sha256.as_str())
                .collect::<Vec<_>>(),
            vec!["e2", "x"]
        );
        assert_eq!(plan.against.as_deref(), Some("o"));
    }

    #[test]
    fn blobs_already_in_the_store_are_not_uploaded_even_for_new_paths() {
        let old = manifest("o", &[("/a", "h", 1)]);
        let new = manifest("n", &[("/a", "h", 1), ("/copy", "h", 1)]);
        let present: HashSet<String> = ["h".to_string()].into();
        let plan = diff(&new, Some(&old), &present, true);
        assert_eq!(plan.added.len(), 1);
        assert!(plan.uploads.is_empty());
        assert_eq!(plan.upload_bytes, 0);
    }

    #[test]
    fn same_manifest_already_pushed_is_a_no_op() {
        let m = manifest("v", &[("/a", "h", 1)]);
        let present: HashSet<String> = ["h".to_string()].into();
        assert!(diff(&m, Some(&m), &present, true).is_noop());
        assert!(!diff(&m, Some(&m), &present, false).is_noop());
    }
}
