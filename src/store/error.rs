//! [`StoreError`]: typed store failures that keep their source.

use std::fmt;
use std::time::Duration;

/// A boxed error, as sources are kept.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store failure. Keeps its source, names the backend by the store's own name (`"redis"`, `"file"`,
/// `"postgres"`…), and says what it means for the caller:
///
/// * [`is_unavailable`](StoreError::is_unavailable): the backend is down or too slow (a failover store
///   switches; the layer answers 503);
/// * [`is_full`](StoreError::is_full): the backend cannot take more (503, health degraded);
/// * [`StoreError::Corrupt`]: the stored data is bad (treated as no session);
/// * [`StoreError::Unsupported`]: the store does not have that capability (the admin answers 501).
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached or refused the connection.
    Unavailable {
        /// The store's name.
        backend: &'static str,
        /// Why.
        source: BoxError,
    },
    /// The backend did not answer in time.
    Timeout {
        /// The store's name.
        backend: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// A write was sent but its outcome is unknown (the connection failed before the answer, and what
    /// the backend holds now cannot tell whether it landed). Nothing is acknowledged; treated like an
    /// unavailable backend.
    Indeterminate {
        /// The store's name.
        backend: &'static str,
        /// What happened.
        detail: String,
    },
    /// The backend is full (a disk with no space, Redis at `maxmemory` under `noeviction`, a quota):
    /// nothing new can be written, reads still work.
    Full {
        /// The store's name.
        backend: &'static str,
        /// What is full.
        detail: String,
    },
    /// Stored data could not be decoded. Stores treat it as no session and set it aside.
    Corrupt {
        /// What was wrong.
        detail: &'static str,
        /// The decoder's error.
        source: Option<BoxError>,
    },
    /// The session is larger than the configured limit.
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A save kept meeting concurrent writers, or a create kept meeting taken keys.
    Conflict,
    /// A listing cursor the store did not hand out or cannot use: a client's mistake (400).
    InvalidCursor,
    /// The store cannot do this (it implements only part of the contract): the admin answers 501.
    Unsupported {
        /// What it cannot do, as in "this session store cannot {capability}".
        capability: &'static str,
    },
    /// Any other backend failure.
    Backend {
        /// The store's name.
        backend: &'static str,
        /// Why.
        source: BoxError,
    },
}

impl StoreError {
    /// Whether the error means the backend is down or too slow, or a write's outcome is unknown (so a
    /// failover store should switch), as opposed to a problem with this one session or request.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. }
                | StoreError::Timeout { .. }
                | StoreError::Indeterminate { .. }
        )
    }

    /// Whether the backend is full: nothing new can be written now.
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full { .. })
    }

    /// A backend failure of `backend` with `source`.
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            backend,
            source: source.into(),
        }
    }

    /// The error a store answers for an optional capability it lacks.
    pub fn unsupported(capability: &'static str) -> Self {
        StoreError::Unsupported { capability }
    }

    /// The innermost cause's message ("Connection refused (os error 111)"), or this error's own
    /// message when it has no source: what a log line should show.
    pub fn root_cause(&self) -> String {
        let mut err: &(dyn std::error::Error + 'static) = self;
        while let Some(next) = err.source() {
            err = next;
        }
        err.to_string()
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable { backend, source } => {
                write!(f, "{backend} session store unavailable: {source}")
            }
            StoreError::Timeout { backend, after } => {
                write!(f, "{backend} session store did not answer within {after:?}")
            }
            StoreError::Indeterminate { backend, detail } => {
                write!(f, "{backend} session store: outcome of a write unknown: {detail}")
            }
            StoreError::Full { backend, detail } => {
                write!(f, "{backend} session store is full: {detail}")
            }
            StoreError::Corrupt { detail, .. } => write!(f, "corrupt session data: {detail}"),
            StoreError::TooLarge { size, limit } => {
                write!(f, "session is {size} bytes, over the limit of {limit}")
            }
            StoreError::Conflict => {
                f.write_str("the store kept meeting concurrent writers or taken keys, or a revoke kept finding sessions that moved")
            }
            StoreError::InvalidCursor => f.write_str("invalid listing cursor"),
            StoreError::Unsupported { capability } => {
                write!(f, "this session store cannot {capability}")
            }
            StoreError::Backend { backend, source } => {
                write!(f, "{backend} session store failed: {source}")
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Unavailable { source, .. } | StoreError::Backend { source, .. } => {
                Some(source.as_ref())
            }
            StoreError::Corrupt {
                source: Some(s), ..
            } => Some(s.as_ref()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_cause_shows_the_innermost_message() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = StoreError::Unavailable {
            backend: "redis",
            source: Box::new(io),
        };
        assert_eq!(
            e.to_string(),
            "redis session store unavailable: Connection refused"
        );
        assert_eq!(e.root_cause(), "Connection refused");
        let t = StoreError::Timeout {
            backend: "redis",
            after: Duration::from_secs(1),
        };
        assert_eq!(t.root_cause(), t.to_string());
    }

    #[test]
    fn the_classes_say_what_to_do() {
        let unknown = StoreError::Indeterminate {
            backend: "redis",
            detail: "reply lost".into(),
        };
        assert!(unknown.is_unavailable() && !unknown.is_full());
        let full = StoreError::Full {
            backend: "file",
            detail: "no space".into(),
        };
        assert!(full.is_full() && !full.is_unavailable());
        assert_eq!(
            StoreError::unsupported("list sessions").to_string(),
            "this session store cannot list sessions"
        );
    }
}
