//! The JSON bodies the admin routes answer with, and their error responses.

use crate::expiry::{Clock, SystemClock};
use crate::store::{Health, HealthStatus, StoreError, Summary};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

/// The current time as the admin API shows it: RFC 3339, UTC, milliseconds.
pub(super) fn now() -> String {
    SystemClock.now().to_rfc3339()
}

/// `value` as JSON with `status`, never cached (the figures change under the client).
pub(super) fn json(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value)
        .unwrap_or_else(|_| br#"{"error":"could not encode the response"}"#.to_vec());
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// `{"error": message}` with `status`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// A store failure as a response: 503 when the backend is down, slow or full, 400 for a bad cursor,
/// 501 for a capability the store lacks, 500 otherwise. The admin API is protected, so the message
/// names the cause for the operator.
pub(super) fn store_error(e: &StoreError) -> Response {
    let status = match e {
        StoreError::InvalidCursor => StatusCode::BAD_REQUEST,
        StoreError::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
        // Conflict: a store that kept meeting concurrent writers, or a revoke that could not be sure
        // it reached every session (they kept moving): passing, try again.
        e if e.is_unavailable() || e.is_full() || matches!(e, StoreError::Conflict) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
        tracing::warn!(error = %e, "admin request failed in the session store");
    }
    error(status, e.to_string())
}

/// One entry of `GET /sessions` and `GET /users/{user}/sessions`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionEntry {
    id: String,
    created_at: String,
    last_access: String,
    expires: String,
    user_agent: Option<String>,
    user: Option<String>,
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
pub(super) struct SessionList {
    pub(super) sessions: Vec<SessionEntry>,
    pub(super) total: u64,
    pub(super) next_cursor: Option<String>,
    pub(super) timestamp: String,
}

/// `GET /users/{user}/sessions`.
#[derive(Serialize)]
pub(super) struct UserSessions {
    pub(super) user: String,
    pub(super) sessions: Vec<SessionEntry>,
    pub(super) total: u64,
    pub(super) timestamp: String,
}

/// `DELETE /sessions/{id}`.
#[derive(Serialize)]
pub(super) struct Deleted {
    pub(super) success: bool,
    pub(super) message: String,
}

/// `POST /cleanup` and `DELETE /users/{user}/sessions`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Removed {
    pub(super) success: bool,
    pub(super) deleted_sessions: u64,
    pub(super) message: String,
}

/// `GET /health`: the seed's fields, and the backends behind the store by their names
/// (`"redis":"healthy"`). The public form adds only the short reason; the admin's (`full`) adds the
/// operator detail and whatever else the store reported (cluster nodes, the last transition).
pub(super) fn health(h: Health, full: bool) -> Response {
    let mut body = Map::new();
    let status = match h.status {
        HealthStatus::Ok => "ok",
        HealthStatus::Degraded => "degraded",
        _ => "unavailable",
    };
    body.insert("status".into(), status.into());
    body.insert("timestamp".into(), now().into());
    body.insert("sessionStore".into(), h.serving.into());
    for b in &h.backends {
        body.insert(
            b.name.into(),
            if b.healthy { "healthy" } else { "unhealthy" }.into(),
        );
    }
    if let Some(reason) = h.reason {
        body.insert("reason".into(), reason.into());
    }
    if full {
        if let Some(detail) = h.detail {
            body.insert("detail".into(), detail.into());
        }
        for (k, v) in h.extra {
            body.entry(k).or_insert(v);
        }
    }
    let code = if h.status == HealthStatus::Unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(code, &Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_the_status_a_client_can_act_on() {
        let down = StoreError::Timeout {
            backend: "redis",
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(store_error(&down).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            store_error(&StoreError::InvalidCursor).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            store_error(&StoreError::unsupported("list sessions")).status(),
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            store_error(&StoreError::Conflict).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
