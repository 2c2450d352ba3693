//! The running ruleset and its version, replaced only by a ruleset that loads: the last good
//! version stays in force when a new one fails (a KV update at the edge, a config reload at the
//! origin), and the caller gets the error to log.

use std::sync::{Arc, Mutex};

use super::{CustomRules, Error};

/// A ruleset with the version it was loaded from.
#[derive(Debug)]
pub struct VersionedRules {
    /// The version label (a KV version, a file hash, a build id).
    pub version: String,
    /// The compiled rules.
    pub rules: CustomRules,
}

/// What [`LiveRules::try_update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The new version is now in force.
    Replaced {
        /// The version it replaced.
        previous: String,
    },
    /// The version is the one already in force; nothing was compiled.
    Unchanged,
}

/// The ruleset in force, shared by every request (`Send + Sync`). Requests take a cheap snapshot
/// with [`LiveRules::current`] and keep it for the whole request.
#[derive(Debug)]
pub struct LiveRules {
    current: Mutex<Arc<VersionedRules>>,
}

impl LiveRules {
    /// Starts with `rules` (e.g. compiled in at build time) as `version`.
    pub fn new(version: impl Into<String>, rules: CustomRules) -> Self {
        LiveRules {
            current: Mutex::new(Arc::new(VersionedRules {
                version: version.into(),
                rules,
            })),
        }
    }

    /// The ruleset in force now.
    pub fn current(&self) -> Arc<VersionedRules> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads `files` as `version` and puts it in force. On error the running version stays, and
    /// the error (with file, line and column) is returned for the host to log.
    pub fn try_update<N: AsRef<str>, T: AsRef<str>>(
        &self,
        version: &str,
        files: &[(N, T)],
    ) -> Result<UpdateOutcome, Error> {
        if self.current().version == version {
            return Ok(UpdateOutcome::Unchanged);
        }
        let rules = CustomRules::from_files(files)?;
        let fresh = Arc::new(VersionedRules {
            version: version.to_string(),
            rules,
        });
        let mut slot = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let previous = std::mem::replace(&mut *slot, fresh);
        Ok(UpdateOutcome::Replaced {
            previous: previous.version.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "[[rule]]\nid = \"a\"\nexpression = 'http.host eq \"x\"'\naction = \"block\"\n";
    const BAD: &str = "[[rule]]\nid = \"a\"\nexpression = 'http.host eq'\naction = \"block\"\n";

    #[test]
    fn a_bad_version_never_replaces_the_running_one() {
        let live = LiveRules::new("v1", CustomRules::from_toml("v1.toml", GOOD).unwrap());
        let err = live.try_update("v2", &[("v2.toml", BAD)]).unwrap_err();
        assert_eq!(err.location(), ("v2.toml", 3, 27));
        assert_eq!(live.current().version, "v1");
        assert_eq!(live.current().rules.len(), 1);
        assert_eq!(
            live.try_update("v3", &[("v3.toml", GOOD)]).unwrap(),
            UpdateOutcome::Replaced {
                previous: "v1".into()
            }
        );
        assert_eq!(live.current().version, "v3");
        assert_eq!(
            live.try_update("v3", &[("v3.toml", BAD)]).unwrap(),
            UpdateOutcome::Unchanged
        );
    }
}
