//! The waiting room's admission pass, checked again at the origin: nobody skips the line by
//! calling the origin directly. Configured in the `[admission]` section:
//!
//! ```toml
//! [admission]
//! room = "flash-sale-demo"            # the room id the edge's gate uses
//! cookie = "fe_admit"                 # the edge's admission cookie (default)
//! key-env = "ROOM_SIGNING_KEY"        # env var with the room signing key (32+ bytes)
//! previous-key-env = "ROOM_SIGNING_KEY_PREVIOUS"   # optional: the key being rotated out
//! paths = ["/sale", "/sale/"]         # guarded: exact paths, or prefixes ending in "/"
//! ```
//!
//! A request to a guarded path without a valid, unexpired pass for this room (signed with the
//! current or the previous key) is refused with 403 before it reaches a backend.

use serde::Deserialize;
use waiting_room::config::normalize_path;
use waiting_room::token::{cookie_value, Keys};

use crate::phases::Refusal;

/// The `[admission]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileAdmission {
    room: String,
    #[serde(default = "default_cookie")]
    cookie: String,
    key_env: String,
    previous_key_env: Option<String>,
    paths: Vec<String>,
}

fn default_cookie() -> String {
    "fe_admit".into()
}

/// The validated admission check.
#[derive(Clone)]
pub struct Admission {
    room: String,
    cookie: String,
    keys: Keys,
    paths: Vec<String>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("room", &self.room)
            .field("cookie", &self.cookie)
            .field("paths", &self.paths)
            .finish()
    }
}

impl Admission {
    /// Validates the section, reading the keys through `env`.
    pub fn load(
        file: FileAdmission,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Admission, String> {
        let current = env(&file.key_env)
            .ok_or_else(|| format!("environment variable {} is not set", file.key_env))?;
        let previous = match &file.previous_key_env {
            Some(var) => {
                Some(env(var).ok_or_else(|| format!("environment variable {var} is not set"))?)
            }
            None => None,
        };
        let keys = Keys::new(
            ("k1", current.trim().as_bytes()),
            previous.as_deref().map(|p| ("k0", p.trim().as_bytes())),
        )
        .map_err(|e| e.to_string())?;
        if file.paths.is_empty() || file.paths.iter().any(|p| !p.starts_with('/')) {
            return Err("paths must be a non-empty list of paths starting with '/'".into());
        }
        let paths = file.paths.iter().map(|p| normalize_path(p)).collect();
        Ok(Admission {
            room: file.room,
            cookie: file.cookie,
            keys,
            paths,
        })
    }

    /// Whether the path is guarded (after the same normalisation the edge applies).
    pub fn guards(&self, path: &str) -> bool {
        let path = normalize_path(path);
        self.paths.iter().any(|p| {
            if p.ends_with('/') {
                path.starts_with(p.as_str())
            } else {
                path == *p
            }
        })
    }

    /// Refuses a guarded request without a valid pass.
    pub fn check(
        &self,
        path: &str,
        cookie_header: Option<&str>,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        if !self.guards(path) {
            return Ok(());
        }
        let pass = cookie_header.and_then(|h| cookie_value(h, &self.cookie));
        match pass.map(|p| self.keys.verify_admission(p, &self.room, now_ms)) {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(Refusal {
                status: 403,
                reason: format!("waiting-room pass refused: {e}"),
                retry_after: None,
            }),
            None => Err(Refusal {
                status: 403,
                reason: "this page is behind the waiting room: join the queue at the edge".into(),
                retry_after: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef-room";

    fn admission() -> Admission {
        let file: FileAdmission =
            toml::from_str("room = \"r1\"\nkey-env = \"K\"\npaths = [\"/sale\", \"/sale/\"]")
                .expect("section");
        Admission::load(file, &|v| (v == "K").then(|| KEY.to_owned())).expect("loads")
    }

    #[test]
    fn guarded_paths_need_a_valid_pass() {
        let a = admission();
        let keys = Keys::new(("k1", KEY.as_bytes()), None).expect("keys");
        let good = format!("fe_admit={}", keys.sign_admission("r1", 7, 10_000));
        assert!(a.check("/catalog", None, 0).is_ok());
        assert!(a.check("/sale/x", Some(&good), 5_000).is_ok());
        assert!(
            a.check("/SALE/%78", None, 5_000).is_err(),
            "case and escapes do not dodge the check"
        );
        assert!(a.check("/sale", Some(&good), 20_000).is_err(), "expired");
        let other_room = format!("fe_admit={}", keys.sign_admission("r2", 7, 10_000));
        assert!(a.check("/sale/x", Some(&other_room), 5_000).is_err());
        let forged = Keys::new(("k1", b"another key that is 32 bytes long!!"), None).expect("keys");
        let forged = format!("fe_admit={}", forged.sign_admission("r1", 7, 10_000));
        assert_eq!(
            a.check("/sale/x", Some(&forged), 5_000)
                .map_err(|r| r.status),
            Err(403)
        );
    }

    #[test]
    fn rotation_accepts_the_previous_key() {
        let file: FileAdmission = toml::from_str(
            "room = \"r1\"\nkey-env = \"K\"\nprevious-key-env = \"P\"\npaths = [\"/sale/\"]",
        )
        .expect("section");
        let old = "an older room key of 32+ bytes, rotated out";
        let a = Admission::load(file, &|v| match v {
            "K" => Some(KEY.to_owned()),
            "P" => Some(old.to_owned()),
            _ => None,
        })
        .expect("loads");
        let old_keys = Keys::new(("k0", old.as_bytes()), None).expect("keys");
        let pass = format!("fe_admit={}", old_keys.sign_admission("r1", 1, 10_000));
        assert!(a.check("/sale/x", Some(&pass), 1_000).is_ok());
    }
}
