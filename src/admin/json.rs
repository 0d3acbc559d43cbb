//! The JSON bodies the admin service answers with, and response helpers.

use crate::expiry::{Clock, SystemClock};
use crate::store::{StoreError, Summary};
use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;
use std::collections::BTreeMap;

/// What every admin response is.
pub(crate) type Resp = Response<Full<Bytes>>;

/// The current time as the admin API shows it: RFC 3339, UTC, milliseconds.
pub(crate) fn now() -> String {
    SystemClock.now().to_rfc3339()
}

/// A response with `body` and `content_type`, never cached (the figures change under the client).
pub(crate) fn with_body(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Resp {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `value` as JSON with `status`.
pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Resp {
    match serde_json::to_vec(value) {
        Ok(body) => with_body(status, "application/json", body),
        // Not reachable with the bodies below (strings, numbers, string maps), but never a panic.
        Err(_) => with_body(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            br#"{"error":"could not encode the response"}"#.to_vec(),
        ),
    }
}

/// `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    #[derive(Serialize)]
    struct ErrorBody {
        error: String,
    }
    json(
        status,
        &ErrorBody {
            error: message.into(),
        },
    )
}

/// A request refused before any store call: a small value turned into a response at the edge.
#[derive(Debug)]
pub(crate) struct Reject {
    pub status: StatusCode,
    pub message: String,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl Reject {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Reject {
            status,
            message: message.into(),
            allow: None,
        }
    }

    pub(crate) fn into_response(self) -> Resp {
        let mut res = error(self.status, self.message);
        if let Some(allow) = self.allow {
            res.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static(allow));
        }
        res
    }
}

/// A store failure as a response: 503 when the backend is down or slow, 400 for a bad cursor, 500
/// otherwise. The admin API is protected, so the message names the cause for the operator.
pub(crate) fn store_error(e: &StoreError) -> Resp {
    let status = if e.is_unavailable() {
        StatusCode::SERVICE_UNAVAILABLE
    } else if matches!(e, StoreError::InvalidCursor) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    if status.is_server_error() {
        tracing::warn!(error = %e, "admin request failed in the session store");
    }
    error(status, e.to_string())
}

pub(crate) use crate::store::human_bytes;

/// `GET /stats`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stats {
    pub session_store: &'static str,
    pub session_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_usage: Option<BTreeMap<&'static str, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_usage: Option<DiskUsage>,
    pub warnings: Vec<String>,
    pub timestamp: String,
}

/// The file store's figures in `GET /stats`.
#[derive(Serialize)]
pub(crate) struct DiskUsage {
    pub directory: String,
    pub files: u64,
    pub bytes: u64,
    pub human: String,
}

/// One entry of `GET /sessions`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionEntry {
    pub id: String,
    pub created_at: String,
    pub last_access: String,
    pub expires: String,
    pub user_agent: Option<String>,
    pub user: Option<String>,
}

impl From<Summary> for SessionEntry {
    fn from(s: Summary) -> Self {
        SessionEntry {
            id: s.id.as_str().to_owned(),
            created_at: s.created_at.to_rfc3339(),
            last_access: s.last_access.to_rfc3339(),
            expires: s.expires.to_rfc3339(),
            user_agent: s.user_agent,
            user: s.user,
        }
    }
}

/// `GET /sessions`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionList {
    pub sessions: Vec<SessionEntry>,
    pub total: u64,
    pub next_cursor: Option<String>,
    pub timestamp: String,
}

/// `GET /users/{user}/sessions`.
#[derive(Serialize)]
pub(crate) struct UserSessions {
    pub user: String,
    pub sessions: Vec<SessionEntry>,
    pub total: u64,
    pub timestamp: String,
}

/// `DELETE /sessions/{id}`.
#[derive(Serialize)]
pub(crate) struct Deleted {
    pub success: bool,
    pub message: String,
}

/// `POST /cleanup`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Cleanup {
    pub success: bool,
    pub deleted_sessions: u64,
    pub message: String,
}

/// `GET /redis-info`.
#[derive(Serialize)]
pub(crate) struct RedisInfoBody {
    pub redis: crate::store::RedisInfo,
    /// Cluster mode: `INFO` of each node, keyed by `host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<crate::store::RedisNodeInfo>,
    pub timestamp: String,
}

/// One node in `/health` (cluster mode).
#[derive(Serialize)]
pub(crate) struct NodeBody {
    pub address: String,
    pub role: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /health`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Health {
    pub status: &'static str,
    pub timestamp: String,
    pub session_store: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Cluster mode: every node with its own status.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeBody>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_reads_like_redis() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1024), "1.00K");
        assert_eq!(human_bytes(1_024_000), "1000.00K");
        assert_eq!(human_bytes(1024 * 1024 * 3 / 2), "1.50M");
        assert_eq!(human_bytes(u64::MAX), "16384.00P");
    }

    #[test]
    fn errors_are_json_objects_with_an_error_field() {
        let res = error(StatusCode::NOT_FOUND, "no \"such\" route");
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
    }

    #[test]
    fn an_unavailable_store_is_503_and_a_bad_cursor_400() {
        let down = StoreError::Timeout {
            backend: crate::store::StoreKind::Redis,
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(store_error(&down).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            store_error(&StoreError::InvalidCursor).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            store_error(&StoreError::Conflict).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
