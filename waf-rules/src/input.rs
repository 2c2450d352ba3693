//! The request as a host hands it to the engine: what was on the wire, nothing parsed yet.

use std::net::IpAddr;

/// One HTTP request as the host received it. Both front ends (SecLang/CRS and the custom rules
/// language) build their own views from this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method as sent, e.g. `GET`.
    pub method: String,
    /// The raw request target as sent on the wire (path and query, still percent-encoded).
    pub uri: String,
    /// The protocol, e.g. `HTTP/1.1`.
    pub version: String,
    /// Header fields in wire order; names keep their case.
    pub headers: Vec<(String, String)>,
    /// The request body (already capped by the host at its inspection limit).
    pub body: Vec<u8>,
    /// The client address, if known.
    pub client_ip: Option<IpAddr>,
    /// The client's country as an ISO 3166-1 alpha-2 code, if the host knows it.
    pub country: Option<String>,
}

impl HttpRequest {
    /// The first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_ignores_case() {
        let req = HttpRequest {
            headers: vec![("Content-Type".into(), "text/plain".into())],
            ..Default::default()
        };
        assert_eq!(req.header("content-type"), Some("text/plain"));
        assert_eq!(req.header("host"), None);
    }
}
