//! Errors the edge answers with: a status, a reason safe to show, and the request id.

use worker::{Response, Result};

/// What went wrong at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EdgeError {
    /// The worker is deployed without a required setting; names the setting.
    Misconfigured(String),
    /// The origin could not be reached.
    OriginUnavailable,
}

impl EdgeError {
    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            EdgeError::Misconfigured(_) => 500,
            EdgeError::OriginUnavailable => 502,
        }
    }

    /// A reason safe to show to a shopper: never a secret or an internal address.
    pub fn reason(&self) -> String {
        match self {
            EdgeError::Misconfigured(setting) => format!("edge is misconfigured: {setting}"),
            EdgeError::OriginUnavailable => {
                "the shop is not reachable right now, please retry".into()
            }
        }
    }
}

/// A JSON error response carrying the reason and, when known, the request id.
pub fn respond(err: &EdgeError, request_id: Option<&str>) -> Result<Response> {
    let body = serde_json::json!({ "error": err.reason(), "request_id": request_id });
    let resp = Response::from_json(&body)?.with_status(err.status());
    resp.headers().set("cache-control", "no-store")?;
    if let Some(id) = request_id {
        resp.headers().set(edge_signature::REQUEST_ID_HEADER, id)?;
    }
    Ok(resp)
}
