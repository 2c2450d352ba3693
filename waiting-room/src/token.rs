//! Signed ticket cookies and admission tokens, shared by the edge worker (wasm32) and the
//! origin proxy (native).
//!
//! # Format
//!
//! `base64url(payload) "." base64url(HMAC-SHA256(key, base64url(payload)))`, no padding, where
//! the payload is `|`-separated ASCII text:
//!
//! - ticket: `wr1|t|<key id>|<room>|<seq>|<issued_at>|<cursor_at_join>|<expires_at>`
//! - admission: `wr1|a|<key id>|<room>|<seq>|<expires_at>`
//!
//! Times are Unix milliseconds. The kind letter separates the two, so a ticket never passes as
//! an admission. Room ids cannot contain `|` ([`crate::RoomConfig`] allows `a-z0-9-_`), so the
//! payload is unambiguous; it is only parsed field by field after the MAC has been verified
//! (in constant time, by `ring::hmac::verify`), and only the key id is read before.
//!
//! # Keys and rotation
//!
//! [`Keys`] holds the current key (used to sign) and optionally the previous one (still
//! accepted). Rotate by deploying `(new, Some(old))`, and drop the old key once every token
//! signed with it has expired (one session length after the switch). Key ids travel in the
//! token, so verification picks the key directly.
//!
//! # What verification rejects
//!
//! Anything malformed or longer than [`MAX_TOKEN_LEN`]; an unknown key id; a bad MAC (forged or
//! tampered); the other kind; another room; and an expired token (`now >= expires_at`). An
//! admission token expires when its session ends, so replaying it afterwards fails.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

use crate::room::Ticket;

/// Longest token accepted, in bytes; longer input is rejected before any decoding.
pub const MAX_TOKEN_LEN: usize = 512;

/// Shortest secret accepted: HMAC-SHA256's output size.
pub const MIN_SECRET_LEN: usize = 32;

/// Suggested cookie name for the ticket.
pub const TICKET_COOKIE: &str = "wr_ticket";

/// Suggested cookie name for the admission token.
pub const ADMISSION_COOKIE: &str = "wr_admission";

const VERSION: &str = "wr1";

/// A bad key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key id is empty, longer than 32 bytes, or not `A-Za-z0-9_-`.
    #[error("key id `{0}`: use 1-32 characters of A-Z, a-z, 0-9, `-`, `_`")]
    BadId(String),
    /// A secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("key `{0}`: the secret must be at least 32 bytes")]
    ShortSecret(String),
    /// Current and previous keys share an id.
    #[error("current and previous keys share the id `{0}`")]
    DuplicateId(String),
}

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token of this format (or too long).
    #[error("malformed token")]
    Malformed,
    /// Signed with a key this verifier does not hold.
    #[error("unknown signing key `{0}`")]
    UnknownKey(String),
    /// The MAC does not match: forged or tampered.
    #[error("bad signature")]
    BadSignature,
    /// A ticket where an admission token was expected, or the reverse.
    #[error("wrong kind of token")]
    WrongKind,
    /// Bound to another room.
    #[error("token is for room `{0}`")]
    WrongRoom(String),
    /// Past its expiry.
    #[error("token expired at {0} (Unix ms)")]
    Expired(u64),
}

/// A verified admission token's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Room id.
    pub room: String,
    /// The ticket sequence number it was granted to.
    pub seq: u64,
    /// End of the session (Unix ms).
    pub expires_at: u64,
}

struct Key {
    id: String,
    key: hmac::Key,
}

/// The signing keys: one current, optionally one previous (accepted, never used to sign).
pub struct Keys {
    current: Key,
    previous: Option<Key>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("current", &self.current.id)
            .field("previous", &self.previous.as_ref().map(|k| &k.id))
            .finish()
    }
}

fn make_key((id, secret): (&str, &[u8])) -> Result<Key, KeyError> {
    if id.is_empty()
        || id.len() > 32
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(KeyError::BadId(id.to_string()));
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(KeyError::ShortSecret(id.to_string()));
    }
    Ok(Key {
        id: id.to_string(),
        key: hmac::Key::new(hmac::HMAC_SHA256, secret),
    })
}

impl Keys {
    /// A key set from `(id, secret)` pairs.
    pub fn new(current: (&str, &[u8]), previous: Option<(&str, &[u8])>) -> Result<Keys, KeyError> {
        let current = make_key(current)?;
        let previous = previous.map(make_key).transpose()?;
        if let Some(p) = &previous {
            if p.id == current.id {
                return Err(KeyError::DuplicateId(p.id.clone()));
            }
        }
        Ok(Keys { current, previous })
    }

    /// The id of the key that signs.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    fn sign(&self, payload: &str) -> String {
        let body = URL_SAFE_NO_PAD.encode(payload);
        let tag = hmac::sign(&self.current.key, body.as_bytes());
        let mut out = body;
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
        out
    }

    /// Signs a ticket for the shopper's cookie; `expires_at` is typically the sale end plus a
    /// session length.
    pub fn sign_ticket(&self, ticket: &Ticket, expires_at: u64) -> String {
        self.sign(&format!(
            "{VERSION}|t|{}|{}|{}|{}|{}|{expires_at}",
            self.current.id, ticket.room, ticket.seq, ticket.issued_at, ticket.cursor_at_join
        ))
    }

    /// Signs an admission token for ticket `seq`, valid until `expires_at` (the session end
    /// from [`crate::PollOutcome::Admitted`]).
    pub fn sign_admission(&self, room: &str, seq: u64, expires_at: u64) -> String {
        self.sign(&format!(
            "{VERSION}|a|{}|{room}|{seq}|{expires_at}",
            self.current.id
        ))
    }

    /// Checks length, format, key and MAC; returns the payload's fields after the kind.
    fn open(&self, token: &str, kind: &str) -> Result<Vec<String>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let (body, mac) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenError::Malformed)?;
        let payload = String::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
        let mut fields = payload.split('|');
        if fields.next() != Some(VERSION) {
            return Err(TokenError::Malformed);
        }
        let token_kind = fields.next().ok_or(TokenError::Malformed)?;
        let kid = fields.next().ok_or(TokenError::Malformed)?;
        let key = if kid == self.current.id {
            &self.current
        } else {
            match &self.previous {
                Some(p) if p.id == kid => p,
                _ => return Err(TokenError::UnknownKey(kid.to_string())),
            }
        };
        hmac::verify(&key.key, body.as_bytes(), &mac).map_err(|_| TokenError::BadSignature)?;
        if token_kind != kind {
            return Err(TokenError::WrongKind);
        }
        Ok(fields.map(str::to_string).collect())
    }

    /// Verifies a ticket cookie for `room` at `now`.
    pub fn verify_ticket(&self, token: &str, room: &str, now: u64) -> Result<Ticket, TokenError> {
        let f = self.open(token, "t")?;
        let [r, seq, issued_at, cursor, exp] = f.as_slice() else {
            return Err(TokenError::Malformed);
        };
        let (seq, issued_at, cursor_at_join, exp) =
            (num(seq)?, num(issued_at)?, num(cursor)?, num(exp)?);
        check_room_and_expiry(r, room, exp, now)?;
        Ok(Ticket {
            room: r.clone(),
            seq,
            issued_at,
            cursor_at_join,
        })
    }

    /// Verifies an admission token for `room` at `now`: the origin proxy's check on guarded
    /// routes, and the edge's before it skips the queue.
    pub fn verify_admission(
        &self,
        token: &str,
        room: &str,
        now: u64,
    ) -> Result<Admission, TokenError> {
        let f = self.open(token, "a")?;
        let [r, seq, exp] = f.as_slice() else {
            return Err(TokenError::Malformed);
        };
        let (seq, expires_at) = (num(seq)?, num(exp)?);
        check_room_and_expiry(r, room, expires_at, now)?;
        Ok(Admission {
            room: r.clone(),
            seq,
            expires_at,
        })
    }
}

fn num(s: &str) -> Result<u64, TokenError> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    s.parse().map_err(|_| TokenError::Malformed)
}

fn check_room_and_expiry(got: &str, want: &str, exp: u64, now: u64) -> Result<(), TokenError> {
    if got != want {
        return Err(TokenError::WrongRoom(got.to_string()));
    }
    if now >= exp {
        return Err(TokenError::Expired(exp));
    }
    Ok(())
}

/// A `Set-Cookie` value: `name=value; Secure; HttpOnly; SameSite=Lax; Path=/; Max-Age=N`.
/// Token values are base64url and `.`, which need no quoting.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64) -> String {
    format!("{name}={value}; Secure; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_secs}")
}

/// `Max-Age` for a cookie that should live until `expires_at` (Unix ms), rounded up.
pub fn max_age_secs(expires_at: u64, now: u64) -> u64 {
    expires_at.saturating_sub(now).div_ceil(1000)
}

/// A `Set-Cookie` value that deletes the cookie.
pub fn clear_cookie(name: &str) -> String {
    set_cookie(name, "", 0)
}

/// Finds a cookie's value in a `Cookie` request header (`a=1; b=2`).
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const K1: &[u8] = b"0123456789abcdef0123456789abcdef";
    const K2: &[u8] = b"fedcba9876543210fedcba9876543210";
    const NOW: u64 = 1_795_770_000_000;

    fn keys() -> Keys {
        Keys::new(("k1", K1), None).unwrap()
    }

    fn ticket() -> Ticket {
        Ticket {
            room: "sale".into(),
            seq: 42,
            issued_at: NOW,
            cursor_at_join: 7,
        }
    }

    #[test]
    fn round_trips() {
        let k = keys();
        let t = k.sign_ticket(&ticket(), NOW + 1000);
        assert_eq!(k.verify_ticket(&t, "sale", NOW), Ok(ticket()));
        let a = k.sign_admission("sale", 42, NOW + 600_000);
        assert_eq!(
            k.verify_admission(&a, "sale", NOW + 599_999),
            Ok(Admission {
                room: "sale".into(),
                seq: 42,
                expires_at: NOW + 600_000
            })
        );
        assert!(a.len() < 120, "{a}");
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    }

    #[test]
    fn rejects_forged() {
        let forger = Keys::new(("k1", K2), None).unwrap();
        let a = forger.sign_admission("sale", 1, NOW + 1000);
        assert_eq!(
            keys().verify_admission(&a, "sale", NOW),
            Err(TokenError::BadSignature)
        );
        let unknown = Keys::new(("k9", K1), None).unwrap();
        let a = unknown.sign_admission("sale", 1, NOW + 1000);
        assert_eq!(
            keys().verify_admission(&a, "sale", NOW),
            Err(TokenError::UnknownKey("k9".into()))
        );
    }

    #[test]
    fn rejects_expired_and_replayed_after_session_end() {
        let k = keys();
        let a = k.sign_admission("sale", 1, NOW + 600_000);
        assert!(k.verify_admission(&a, "sale", NOW).is_ok());
        assert_eq!(
            k.verify_admission(&a, "sale", NOW + 600_000),
            Err(TokenError::Expired(NOW + 600_000))
        );
        let t = k.sign_ticket(&ticket(), NOW);
        assert_eq!(
            k.verify_ticket(&t, "sale", NOW),
            Err(TokenError::Expired(NOW))
        );
    }

    #[test]
    fn rejects_other_room_and_other_kind() {
        let k = keys();
        let a = k.sign_admission("sale", 1, NOW + 1000);
        assert_eq!(
            k.verify_admission(&a, "other", NOW),
            Err(TokenError::WrongRoom("sale".into()))
        );
        assert_eq!(k.verify_ticket(&a, "sale", NOW), Err(TokenError::WrongKind));
        let t = k.sign_ticket(&ticket(), NOW + 1000);
        assert_eq!(
            k.verify_admission(&t, "sale", NOW),
            Err(TokenError::WrongKind)
        );
    }

    #[test]
    fn rejects_tampered() {
        let k = keys();
        let a = k.sign_admission("sale", 1, NOW + 1000);
        let (body, mac) = a.split_once('.').unwrap();
        // Re-encode a payload with a later expiry and the old MAC.
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(body).unwrap()).unwrap();
        let longer = payload.replace(&(NOW + 1000).to_string(), &(NOW + 9_999_999).to_string());
        let forged = format!("{}.{mac}", URL_SAFE_NO_PAD.encode(longer));
        assert_eq!(
            k.verify_admission(&forged, "sale", NOW),
            Err(TokenError::BadSignature)
        );
        // Flip every character of the token in turn: never accepted.
        for i in 0..a.len() {
            let mut bytes = a.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(bytes).unwrap();
            if s != a {
                assert!(k.verify_admission(&s, "sale", NOW).is_err(), "{s}");
            }
        }
        for bad in ["", ".", "abc", "a.b.c", &"A".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(k.verify_admission(bad, "sale", NOW).is_err());
        }
    }

    #[test]
    fn rotation_accepts_both_keys_and_signs_with_the_new_one() {
        let old = keys();
        let old_token = old.sign_admission("sale", 1, NOW + 1000);
        let rotated = Keys::new(("k2", K2), Some(("k1", K1))).unwrap();
        assert!(rotated.verify_admission(&old_token, "sale", NOW).is_ok());
        let new_token = rotated.sign_admission("sale", 1, NOW + 1000);
        assert!(rotated.verify_admission(&new_token, "sale", NOW).is_ok());
        assert_eq!(rotated.current_id(), "k2");
        // The old verifier does not know k2; after retiring k1, old tokens fail.
        assert_eq!(
            old.verify_admission(&new_token, "sale", NOW),
            Err(TokenError::UnknownKey("k2".into()))
        );
        let retired = Keys::new(("k2", K2), None).unwrap();
        assert_eq!(
            retired.verify_admission(&old_token, "sale", NOW),
            Err(TokenError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn key_validation() {
        assert_eq!(
            Keys::new(("", K1), None).unwrap_err(),
            KeyError::BadId(String::new())
        );
        assert_eq!(
            Keys::new(("k|1", K1), None).unwrap_err(),
            KeyError::BadId("k|1".into())
        );
        assert_eq!(
            Keys::new(("k1", b"short"), None).unwrap_err(),
            KeyError::ShortSecret("k1".into())
        );
        assert_eq!(
            Keys::new(("k1", K1), Some(("k1", K2))).unwrap_err(),
            KeyError::DuplicateId("k1".into())
        );
        assert!(!format!("{:?}", keys()).contains("0123"));
    }

    #[test]
    fn cookies() {
        assert_eq!(
            set_cookie(ADMISSION_COOKIE, "abc.def", 600),
            "wr_admission=abc.def; Secure; HttpOnly; SameSite=Lax; Path=/; Max-Age=600"
        );
        assert_eq!(max_age_secs(NOW + 1500, NOW), 2);
        assert_eq!(max_age_secs(NOW, NOW + 5), 0);
        assert!(clear_cookie(TICKET_COOKIE).contains("Max-Age=0"));
        assert_eq!(
            cookie_value("a=1; wr_ticket=x.y;b=2", "wr_ticket"),
            Some("x.y")
        );
        assert_eq!(cookie_value("a=1", "wr_ticket"), None);
    }

    proptest! {
        #[test]
        fn garbage_never_verifies_or_panics(s in "\\PC{0,200}") {
            prop_assert!(keys().verify_admission(&s, "sale", NOW).is_err());
            prop_assert!(keys().verify_ticket(&s, "sale", NOW).is_err());
        }

        #[test]
        fn signed_fields_round_trip(seq: u64, issued in 0u64..u64::MAX / 2, cursor: u64) {
            let t = Ticket { room: "r-1_x".into(), seq, issued_at: issued, cursor_at_join: cursor };
            let k = keys();
            prop_assert_eq!(k.verify_ticket(&k.sign_ticket(&t, u64::MAX), "r-1_x", issued), Ok(t));
        }
    }
}
