//! Rate-limited logging of failures that a flood of requests could repeat: one line per kind and
//! interval, with how many were left out.
//!
//! A client's mistake (a value over the size limit, nested too deeply) is not an error of ours: it is
//! logged at `WARN`. A store failure is an `ERROR`. Either way a burst of 10,000 costs a line every ten
//! seconds, not 10,000 lines; the metrics count every one.

use crate::error::SessionError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest time between two lines of one kind.
const INTERVAL: Duration = Duration::from_secs(10);

/// One kind of repeated log line.
pub(crate) struct Limited {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Limited {
    pub(crate) const fn new() -> Self {
        Limited {
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether to log now; answers how many lines were left out since the last one.
    pub(crate) fn admit(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// A session that could not be saved.
pub(crate) fn save_failed(e: &SessionError) {
    static SERVER: Limited = Limited::new();
    if e.is_client_error() {
        note_refused(e);
    } else if let Some(suppressed) = SERVER.admit() {
        tracing::error!(error = %e, suppressed, "failed to save the session");
    }
}

/// A change refused because of what the request put in the session (a client's mistake): counted,
/// logged at `WARN` at most once an interval. Answers the error, for the caller to return.
pub(crate) fn refused(e: SessionError) -> SessionError {
    note_refused(&e);
    e
}

fn note_refused(e: &SessionError) {
    static CLIENT: Limited = Limited::new();
    crate::metrics::rejected(match e {
        SessionError::TooLarge { .. } => "too_large",
        SessionError::TooDeep { .. } => "too_deep",
        _ => "other",
    });
    if let Some(suppressed) = CLIENT.admit() {
        tracing::warn!(error = %e, suppressed, "session data refused: the request's data was over a limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_logs_one_line_and_counts_the_rest() {
        let l = Limited::new();
        assert_eq!(l.admit(), Some(0));
        for _ in 0..9_999 {
            assert_eq!(l.admit(), None);
        }
        // After the interval the next line reports what was left out.
        *l.last.lock().unwrap() = Some(Instant::now() - INTERVAL);
        assert_eq!(l.admit(), Some(9_999));
        assert_eq!(l.admit(), None);
    }
}
