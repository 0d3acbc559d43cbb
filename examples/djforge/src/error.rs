//! The app's errors, every one a JSON answer: `{"error":"…"}` with its status.

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sessionforge::SessionError;

/// Why a request failed.
#[derive(Debug)]
pub enum AppError {
    /// The session could not be read or saved (store down or full, data too large or too deep).
    Session(SessionError),
    /// The client sent something unusable: 400 with what was wrong.
    BadRequest(String),
    /// The body is larger than the app accepts: 413.
    TooLarge,
    /// No such route: 404.
    NotFound,
}

impl From<SessionError> for AppError {
    fn from(e: SessionError) -> Self {
        AppError::Session(e)
    }
}

impl From<BytesRejection> for AppError {
    fn from(e: BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::TooLarge
        } else {
            AppError::BadRequest("the request body could not be read".into())
        }
    }
}

impl From<PathRejection> for AppError {
    fn from(_: PathRejection) -> Self {
        AppError::BadRequest("the path is not valid percent-encoded UTF-8".into())
    }
}

/// `{"error": message}` with `status`, never cached.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::json!({ "error": message }).to_string(),
    )
        .into_response()
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            // The library's own JSON answer (503 for a store that is down or full, 413, 400, …).
            AppError::Session(e) => e.into_response(),
            AppError::BadRequest(msg) => json_error(StatusCode::BAD_REQUEST, &msg),
            AppError::TooLarge => json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than 2 MB",
            ),
            AppError::NotFound => json_error(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

/// Axum answers a known path with a wrong method with an empty 405 and its `Allow` header: the same,
/// as JSON.
pub async fn json_405(res: Response) -> Response {
    if res.status() != StatusCode::METHOD_NOT_ALLOWED {
        return res;
    }
    let allow = res.headers().get(header::ALLOW).cloned();
    let mut out = json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}
