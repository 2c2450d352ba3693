//! The edge signature: how the origin proxy knows a request came through the edge worker.
//!
//! The worker signs `method`, `path+query`, a timestamp (unix seconds) and the request id with
//! HMAC-SHA256 and sends the result in one header:
//!
//! ```text
//! X-Edge-Signature: t=1767225600,v1=<64 hex digits>
//! ```
//!
//! The signed message is the four fields joined by `\n`, so no field can bleed into another
//! (none of them may contain a newline: methods, request targets and request ids cannot).
//! The proxy recomputes the MAC with the same key, compares in constant time
//! ([`ring::hmac::verify`]) and rejects timestamps further than the allowed skew from its own
//! clock in either direction. Time is always passed in; this crate reads no clock, so it runs
//! unchanged in WASM at the edge and natively in the proxy.
#![warn(missing_docs)]

use ring::hmac;

/// Name of the header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-edge-signature";
/// Name of the request id header kept across all hops.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longest request id accepted from a client; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// Longest signature header accepted (a valid one is about 80 bytes).
const MAX_HEADER_LEN: usize = 256;

/// Why a signature was not accepted. The text is safe to return to a client: it never contains
/// the key or the expected MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No signature header on the request.
    #[error("missing edge signature")]
    Missing,
    /// The header is not `t=<secs>,v1=<hex>`.
    #[error("malformed edge signature header")]
    Malformed,
    /// The timestamp is outside the allowed window.
    #[error("edge signature timestamp is {age_secs}s away from now (allowed: {max_skew_secs}s)")]
    Stale {
        /// Distance between the signature's time and now, in seconds.
        age_secs: u64,
        /// The configured skew.
        max_skew_secs: u64,
    },
    /// The MAC does not match: wrong key, or the request was changed after signing.
    #[error("edge signature does not match the request")]
    Mismatch,
}

/// A signing key. Construct it once at start-up; signing and verifying do not allocate keys.
pub struct SigningKey {
    key: hmac::Key,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Smallest key accepted, in bytes. HMAC-SHA256 keys shorter than this are guessable.
    pub const MIN_LEN: usize = 16;

    /// A key from secret bytes. Returns `None` if the secret is shorter than [`Self::MIN_LEN`].
    pub fn new(secret: &[u8]) -> Option<Self> {
        (secret.len() >= Self::MIN_LEN).then(|| SigningKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    fn message(method: &str, path_and_query: &str, timestamp: u64, request_id: &str) -> String {
        format!("{method}\n{path_and_query}\n{timestamp}\n{request_id}")
    }

    /// The value of the [`SIGNATURE_HEADER`] for this request at `timestamp` (unix seconds).
    pub fn sign(
        &self,
        method: &str,
        path_and_query: &str,
        timestamp: u64,
        request_id: &str,
    ) -> String {
        let msg = Self::message(method, path_and_query, timestamp, request_id);
        let tag = hmac::sign(&self.key, msg.as_bytes());
        format!("t={timestamp},v1={}", hex::encode(tag.as_ref()))
    }

    /// Checks a [`SIGNATURE_HEADER`] value against the request and the current time `now`
    /// (unix seconds). `header` is `None` when the request carried no signature.
    pub fn verify(
        &self,
        header: Option<&str>,
        method: &str,
        path_and_query: &str,
        request_id: &str,
        now: u64,
        max_skew_secs: u64,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let (timestamp, mac) = parse_header(header)?;
        let age_secs = now.abs_diff(timestamp);
        if age_secs > max_skew_secs {
            return Err(SignatureError::Stale {
                age_secs,
                max_skew_secs,
            });
        }
        let msg = Self::message(method, path_and_query, timestamp, request_id);
        hmac::verify(&self.key, msg.as_bytes(), &mac).map_err(|_| SignatureError::Mismatch)
    }
}

/// Splits `t=<secs>,v1=<hex>` into the timestamp and the MAC bytes.
fn parse_header(header: &str) -> Result<(u64, Vec<u8>), SignatureError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp = None;
    let mut mac = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if timestamp.is_none() => {
                timestamp = Some(v.parse::<u64>().map_err(|_| SignatureError::Malformed)?)
            }
            Some(("v1", v)) if mac.is_none() => {
                mac = Some(hex::decode(v).map_err(|_| SignatureError::Malformed)?)
            }
            _ => return Err(SignatureError::Malformed),
        }
    }
    match (timestamp, mac) {
        (Some(t), Some(m)) if m.len() == 32 => Ok((t, m)),
        _ => Err(SignatureError::Malformed),
    }
}

/// Whether a client-supplied request id may be kept: 1 to [`MAX_REQUEST_ID_LEN`] characters of
/// `A-Z a-z 0-9 - _ . :`. Anything else (empty, too long, spaces, control characters) is
/// replaced by a fresh id so that logs cannot be forged or flooded through it.
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Formats 16 random bytes as a request id (32 lowercase hex digits).
pub fn request_id_from_bytes(bytes: [u8; 16]) -> String {
    // By table rather than `hex::encode`'s char iterator: the origin proxy makes one per request.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(32);
    for b in bytes {
        id.push(char::from(DIGITS[usize::from(b >> 4)]));
        id.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SigningKey {
        SigningKey::new(b"0123456789abcdef0123456789abcdef").expect("long enough")
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(SigningKey::new(b"short").is_none());
    }

    #[test]
    fn a_signature_verifies_and_has_the_documented_shape() {
        let k = key();
        let h = k.sign("GET", "/api/products?id=1", 1_000, "req-1");
        assert!(h.starts_with("t=1000,v1="));
        assert_eq!(h.len(), "t=1000,v1=".len() + 64);
        assert_eq!(
            k.verify(Some(&h), "GET", "/api/products?id=1", "req-1", 1_030, 60),
            Ok(())
        );
    }

    #[test]
    fn every_signed_field_matters() {
        let k = key();
        let h = k.sign("GET", "/a?x=1", 1_000, "req-1");
        for (m, p, id) in [
            ("POST", "/a?x=1", "req-1"),
            ("GET", "/a?x=2", "req-1"),
            ("GET", "/a?x=1", "req-2"),
        ] {
            assert_eq!(
                k.verify(Some(&h), m, p, id, 1_000, 60),
                Err(SignatureError::Mismatch)
            );
        }
        let other = SigningKey::new(b"another key of sixteen+ bytes").expect("long enough");
        assert_eq!(
            other.verify(Some(&h), "GET", "/a?x=1", "req-1", 1_000, 60),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let k = key();
        let h = k.sign("GET", "/", 1_000, "r");
        assert!(matches!(
            k.verify(Some(&h), "GET", "/", "r", 1_061, 60),
            Err(SignatureError::Stale { age_secs: 61, .. })
        ));
        assert!(matches!(
            k.verify(Some(&h), "GET", "/", "r", 939, 60),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(k.verify(Some(&h), "GET", "/", "r", 1_060, 60), Ok(()));
    }

    #[test]
    fn malformed_headers_are_named() {
        let k = key();
        for bad in [
            "",
            "t=1",
            "v1=00",
            "t=x,v1=00",
            "t=1,v1=zz",
            "t=1,v1=00",
            "t=1,t=2,v1=00",
        ] {
            assert_eq!(
                k.verify(Some(bad), "GET", "/", "r", 1, 60),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            k.verify(None, "GET", "/", "r", 1, 60),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn request_ids() {
        assert!(is_valid_request_id("3f2a-9c1e_x.y:z"));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("has space"));
        assert!(!is_valid_request_id("line\nbreak"));
        assert!(!is_valid_request_id(&"a".repeat(129)));
        assert_eq!(request_id_from_bytes([0xab; 16]).len(), 32);
        let bytes: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xf0);
        assert_eq!(request_id_from_bytes(bytes), hex::encode(bytes));
    }

    proptest! {
        #[test]
        fn verify_never_panics(header in ".{0,300}", now in any::<u64>()) {
            let _ = key().verify(Some(&header), "GET", "/", "r", now, 60);
        }

        #[test]
        fn sign_then_verify_round_trips(path in "/[ -~]{0,64}", t in 0u64..u64::MAX / 2, id in "[a-z0-9]{1,32}") {
            let k = key();
            let h = k.sign("GET", &path, t, &id);
            prop_assert_eq!(k.verify(Some(&h), "GET", &path, &id, t, 0), Ok(()));
        }
    }
}
