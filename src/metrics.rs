//! What the crate measures, through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`,
//! on by default).
//!
//! The crate only emits; the application installs the recorder it wants
//! (`metrics-exporter-prometheus`, OpenTelemetry, statsd) and chooses its buckets. Without a recorder
//! every call is a no-op. The djforge example installs the Prometheus exporter and serves its text at
//! `/api/sessions/metrics` ([`AdminService::with_metrics`](crate::admin::AdminService::with_metrics)).
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `sessionforge_sessions_created_total` | counter | | sessions stored for the first time |
//! | `sessionforge_sessions_loaded_total` | counter | | stored sessions loaded by a request |
//! | `sessionforge_sessions_saved_total` | counter | | change-sets and expiry refreshes saved |
//! | `sessionforge_sessions_destroyed_total` | counter | | sessions ended (destroy, emptied, the per-user cap) |
//! | `sessionforge_sessions_renewed_total` | counter | | sessions moved to a new token (`cycle_id`) |
//! | `sessionforge_save_conflicts_total` | counter | | saves that met a concurrent writer and merged |
//! | `sessionforge_invalid_tokens_total` | counter | `reason`: `malformed`, `unknown` | presented tokens refused (bad shape or signature) or not found |
//! | `sessionforge_sessions_rejected_total` | counter | `reason`: `too_large`, `too_deep`, `other` | sessions not saved because of what the request put in them (a client's mistake, logged at most every 10 s) |
//! | `sessionforge_store_errors_total` | counter | `kind`: `unavailable`, `timeout`, `full`, `corrupt`, `other` | failed store calls |
//! | `sessionforge_store_call_duration_seconds` | histogram | `op`: `load`, `create`, `save`, `renew`, `delete`, … | store call latency (a call answered without waiting counts as 0) |
//! | `sessionforge_failovers_total` | counter | | switches from the primary store to the fallback |
//! | `sessionforge_failbacks_total` | counter | | switches back to the primary |
//! | `sessionforge_store_mode` | gauge | `store`: the store's name | 1 for the store serving sessions now, 0 for the other |
//! | `sessionforge_backend_up` | gauge | `backend`: e.g. `redis` | whether the failover store's primary answers its health check |
//! | `sessionforge_sessions` | gauge | | sessions stored, set by the admin service when metrics are scraped |
//!
//! Call [`describe`] once after installing a recorder to register these descriptions with it.

use std::time::Duration;

/// The counters of session events, by name (kept in one place for [`describe`]).
const CREATED: &str = "sessionforge_sessions_created_total";
const LOADED: &str = "sessionforge_sessions_loaded_total";
const SAVED: &str = "sessionforge_sessions_saved_total";
const DESTROYED: &str = "sessionforge_sessions_destroyed_total";
const RENEWED: &str = "sessionforge_sessions_renewed_total";
const CONFLICTS: &str = "sessionforge_save_conflicts_total";
const INVALID_TOKENS: &str = "sessionforge_invalid_tokens_total";
const REJECTED: &str = "sessionforge_sessions_rejected_total";
const STORE_ERRORS: &str = "sessionforge_store_errors_total";
const CALL_DURATION: &str = "sessionforge_store_call_duration_seconds";
const FAILOVERS: &str = "sessionforge_failovers_total";
const FAILBACKS: &str = "sessionforge_failbacks_total";
const STORE_MODE: &str = "sessionforge_store_mode";
const BACKEND_UP: &str = "sessionforge_backend_up";
const SESSIONS: &str = "sessionforge_sessions";

/// Registers the description of every metric above with the installed recorder.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
        describe_counter!(CREATED, "Sessions created.");
        describe_counter!(LOADED, "Stored sessions loaded.");
        describe_counter!(SAVED, "Session change-sets and expiry refreshes saved.");
        describe_counter!(DESTROYED, "Sessions ended.");
        describe_counter!(RENEWED, "Session ids renewed.");
        describe_counter!(CONFLICTS, "Saves that merged with a concurrent writer.");
        describe_counter!(
            INVALID_TOKENS,
            "Presented session tokens refused or unknown."
        );
        describe_counter!(
            REJECTED,
            "Sessions not saved because of the request's data."
        );
        describe_counter!(STORE_ERRORS, "Failed session store calls.");
        describe_histogram!(
            CALL_DURATION,
            Unit::Seconds,
            "Latency of session store calls."
        );
        describe_counter!(
            FAILOVERS,
            "Switches from the primary store to the fallback."
        );
        describe_counter!(FAILBACKS, "Switches from the fallback back to the primary.");
        describe_gauge!(
            STORE_MODE,
            "The store serving sessions now (1) and the other (0)."
        );
        describe_gauge!(BACKEND_UP, "Whether the primary store's backend answers.");
        describe_gauge!(SESSIONS, "Sessions stored now.");
    }
}

/// A session event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Created,
    Loaded,
    Saved,
    Destroyed,
    Renewed,
}

/// Counts one session event.
pub(crate) fn event(e: Event) {
    #[cfg(feature = "metrics")]
    metrics::counter!(match e {
        Event::Created => CREATED,
        Event::Loaded => LOADED,
        Event::Saved => SAVED,
        Event::Destroyed => DESTROYED,
        Event::Renewed => RENEWED,
    })
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = e;
}

/// Counts a session not saved because of what the request put in it.
pub(crate) fn rejected(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(REJECTED, "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// Counts a save that met a concurrent writer.
pub(crate) fn save_conflict() {
    #[cfg(feature = "metrics")]
    metrics::counter!(CONFLICTS).increment(1);
}

/// Counts a presented token that was refused (`"malformed"`) or not found (`"unknown"`).
pub(crate) fn invalid_token(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(INVALID_TOKENS, "reason" => reason).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// Records a store call's latency and, when it failed, its error kind.
pub(crate) fn store_call(
    op: &'static str,
    took: Duration,
    error: Option<&crate::store::StoreError>,
) {
    #[cfg(feature = "metrics")]
    {
        use crate::store::StoreError;
        metrics::histogram!(CALL_DURATION, "op" => op).record(took.as_secs_f64());
        if let Some(e) = error {
            let kind = match e {
                StoreError::Unavailable { .. } | StoreError::Indeterminate { .. } => "unavailable",
                StoreError::Timeout { .. } => "timeout",
                StoreError::Full { .. } => "full",
                StoreError::Corrupt { .. } => "corrupt",
                _ => "other",
            };
            metrics::counter!(STORE_ERRORS, "kind" => kind).increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (op, took, error);
}

/// Counts a failover (`to_fallback`) or a failback, and moves the store-mode gauge.
pub(crate) fn transition(to_fallback: bool, primary: &'static str, fallback: &'static str) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!(if to_fallback { FAILOVERS } else { FAILBACKS }).increment(1);
        store_mode(
            if to_fallback { fallback } else { primary },
            &[primary, fallback],
        );
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (to_fallback, primary, fallback);
}

/// Sets the store-mode gauge: 1 for `serving`, 0 for the other stores named.
pub(crate) fn store_mode(serving: &'static str, stores: &[&'static str]) {
    #[cfg(feature = "metrics")]
    for &s in stores {
        metrics::gauge!(STORE_MODE, "store" => s).set(if s == serving { 1.0 } else { 0.0 });
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (serving, stores);
}

/// Sets whether the backend named `backend` answers.
pub(crate) fn backend_up(backend: &'static str, up: bool) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(BACKEND_UP, "backend" => backend).set(if up { 1.0 } else { 0.0 });
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, up);
}

/// Sets the session-count gauge (from the admin's count, feature `axum`).
#[cfg_attr(not(feature = "axum"), allow(dead_code))]
pub(crate) fn sessions(n: u64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!(SESSIONS).set(n as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = n;
}

#[cfg(all(test, feature = "metrics"))]
pub(crate) mod testing {
    //! A per-test recorder: what the code under test emitted, with no global state.
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    /// Installs a fresh recorder for this thread until the guard drops (tests on a current-thread
    /// runtime), answering its snapshotter.
    pub(crate) fn local() -> (Snapshotter, metrics::LocalRecorderGuard<'static>) {
        let recorder = Box::leak(Box::new(DebuggingRecorder::new()));
        let snapshotter = recorder.snapshotter();
        (snapshotter, metrics::set_default_local_recorder(recorder))
    }

    /// What was emitted since the last look (a snapshot drains the recorder).
    pub(crate) struct Observed(Vec<(metrics_util::CompositeKey, DebugValue)>);

    /// Takes what was emitted so far.
    pub(crate) fn take(s: &Snapshotter) -> Observed {
        Observed(
            s.snapshot()
                .into_vec()
                .into_iter()
                .map(|(k, _, _, v)| (k, v))
                .collect(),
        )
    }

    impl Observed {
        fn values<'a>(
            &'a self,
            name: &'a str,
            labels: &'a [(&'a str, &'a str)],
        ) -> impl Iterator<Item = &'a DebugValue> + 'a {
            self.0
                .iter()
                .filter(move |(k, _)| {
                    k.key().name() == name
                        && labels.iter().all(|(n, v)| {
                            k.key().labels().any(|l| l.key() == *n && l.value() == *v)
                        })
                })
                .map(|(_, v)| v)
        }

        /// Counter `name` over the label sets that include `labels`, summed.
        pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            self.values(name, labels)
                .map(|v| match v {
                    DebugValue::Counter(c) => *c,
                    _ => 0,
                })
                .sum()
        }

        /// The observations of histogram `name` whose labels include `labels`.
        pub(crate) fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
            self.values(name, labels)
                .flat_map(|v| match v {
                    DebugValue::Histogram(h) => h.iter().map(|f| f.into_inner()).collect(),
                    _ => Vec::new(),
                })
                .collect()
        }
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    #[test]
    fn events_store_errors_and_latency_reach_the_installed_recorder_only() {
        let (snap, _guard) = testing::local();
        event(Event::Created);
        event(Event::Created);
        invalid_token("malformed");
        let down = crate::store::StoreError::Timeout {
            backend: "redis",
            after: Duration::from_secs(1),
        };
        store_call("load", Duration::from_millis(3), Some(&down));
        store_call("load", Duration::ZERO, None);
        let seen = testing::take(&snap);
        assert_eq!(seen.counter(CREATED, &[]), 2);
        assert_eq!(seen.counter(INVALID_TOKENS, &[("reason", "malformed")]), 1);
        assert_eq!(seen.counter(STORE_ERRORS, &[("kind", "timeout")]), 1);
        assert_eq!(
            seen.histogram(CALL_DURATION, &[("op", "load")]),
            vec![0.003, 0.0]
        );
        // Another thread's recorder (another test) sees none of it.
        let other = std::thread::spawn(|| {
            let (snap, _guard) = testing::local();
            testing::take(&snap).counter(CREATED, &[])
        })
        .join()
        .unwrap();
        assert_eq!(other, 0);
    }
}
