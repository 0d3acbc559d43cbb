//! [`SessionError`]: why a session operation failed, and how it is answered.

use crate::store::StoreError;
use std::fmt;

/// Why a session operation failed.
///
/// With the `axum` feature it is a response (`IntoResponse`): `{"error":"…"}` with [`status`]
/// (503 for a store that is down or full, 413 for an oversized session, 400 for a value nested too
/// deeply, 500 otherwise), and a message safe to show a client ([`public_message`]).
///
/// [`status`]: SessionError::status
/// [`public_message`]: SessionError::public_message
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed (see [`StoreError::is_unavailable`]).
    Store(StoreError),
    /// A value could not be converted to or from JSON.
    Json(serde_json::Error),
    /// The session would exceed the configured size limit.
    TooLarge {
        /// The size it would have, in bytes of JSON.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A value is nested more deeply than a session keeps: refused so that everything stored can
    /// be read back.
    TooDeep {
        /// The most levels of arrays and objects a value may have.
        limit: usize,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Store(e) => write!(f, "{e}"),
            SessionError::Json(e) => write!(f, "session value is not valid for its type: {e}"),
            SessionError::TooLarge { size, limit } => {
                write!(
                    f,
                    "session would be {size} bytes, over the limit of {limit}"
                )
            }
            SessionError::TooDeep { limit } => {
                write!(f, "session value is nested more than {limit} levels deep")
            }
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Store(e) => Some(e),
            SessionError::Json(e) => Some(e),
            SessionError::TooLarge { .. } | SessionError::TooDeep { .. } => None,
        }
    }
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooLarge { size, limit } => SessionError::TooLarge { size, limit },
            e => SessionError::Store(e),
        }
    }
}

impl SessionError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            SessionError::Store(e)
                if e.is_unavailable() || e.is_full() || matches!(e, StoreError::Conflict) =>
            {
                StatusCode::SERVICE_UNAVAILABLE
            }
            SessionError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            SessionError::TooDeep { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short message safe to show a client (no internals).
    pub fn public_message(&self) -> &'static str {
        match self {
            SessionError::Store(e) if e.is_full() => "session store full",
            SessionError::Store(StoreError::Indeterminate { .. }) => {
                "session store unavailable; the change may not have been kept"
            }
            SessionError::Store(e) if e.is_unavailable() => "session store unavailable",
            SessionError::Store(StoreError::Conflict) => {
                "the session kept changing under concurrent requests; try again"
            }
            SessionError::Store(_) => "session store error",
            SessionError::Json(_) => "session value has an unexpected type",
            SessionError::TooLarge { .. } => "session data too large",
            SessionError::TooDeep { .. } => "session value nested too deeply",
        }
    }

    /// Whether the client caused it (a value too large or too deep), rather than the server: such
    /// errors are logged quietly (a flood of them is a client's problem, not an incident).
    pub fn is_client_error(&self) -> bool {
        self.status().is_client_error()
    }

    /// The JSON body of the error's response: `{"error":"<public message>"}`.
    pub fn json_body(&self) -> String {
        serde_json::json!({ "error": self.public_message() }).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_messages_name_the_class_not_the_internals() {
        let full = SessionError::Store(StoreError::Full {
            backend: "redis",
            detail: "OOM command not allowed at 10.0.0.1".into(),
        });
        assert_eq!(full.status(), 503);
        assert_eq!(full.public_message(), "session store full");
        assert!(!full.json_body().contains("10.0.0.1"));
        let deep = SessionError::TooDeep { limit: 64 };
        assert_eq!(deep.status(), 400);
        assert!(deep.is_client_error());
        let big: SessionError = StoreError::TooLarge { size: 9, limit: 1 }.into();
        assert_eq!(big.status(), 413);
        // Contention is passing: try again.
        assert_eq!(
            SessionError::Store(StoreError::Conflict).status(),
            http::StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
