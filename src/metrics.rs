//! Process-wide counters, rendered as Prometheus text by the admin service's `GET /metrics`.
//!
//! Everything is a relaxed atomic: recording costs a few nanoseconds and never locks. The layer counts
//! sessions and store errors; stores count their calls and time them; the failover store counts its
//! transitions. Which backend serves now belongs to a store, not to the process: the admin service
//! adds it (`sessionforge_store_mode`) from the store it serves.
//!
//! ```
//! use sessionforge::metrics::{Metrics, Op};
//! use std::time::Duration;
//!
//! let m = Metrics::global();
//! let before = m.render();
//! m.observe_store_call(Op::Load, Duration::from_micros(300));
//! assert!(m.render().contains("sessionforge_store_call_duration_seconds_count{op=\"load\"}"));
//! # let _ = before;
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

/// A store operation, for the latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `load`.
    Load,
    /// `create`.
    Create,
    /// `save`.
    Save,
    /// `delete`.
    Delete,
}

const OPS: [(Op, &str); 4] = [
    (Op::Load, "load"),
    (Op::Create, "create"),
    (Op::Save, "save"),
    (Op::Delete, "delete"),
];

/// Histogram bucket upper bounds, in microseconds.
const BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

/// The counters. One set per process: [`Metrics::global`].
#[derive(Default)]
pub struct Metrics {
    sessions_created: AtomicU64,
    sessions_loaded: AtomicU64,
    sessions_saved: AtomicU64,
    sessions_destroyed: AtomicU64,
    sessions_renewed: AtomicU64,
    save_conflicts: AtomicU64,
    store_errors: AtomicU64,
    failovers: AtomicU64,
    failbacks: AtomicU64,
    latency: [Histogram; OPS.len()],
}

/// Counters the layer and stores bump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new session was stored.
    Created,
    /// A stored session was loaded.
    Loaded,
    /// A change-set (or a touch) was saved.
    Saved,
    /// A session was destroyed.
    Destroyed,
    /// A session got a new id.
    Renewed,
    /// A save found the stored session changed meanwhile and merged.
    SaveConflict,
    /// A store call failed.
    StoreError,
    /// The failover store switched from Redis to files.
    Failover,
    /// The failover store switched back to Redis.
    Failback,
}

impl Metrics {
    /// The process-wide counters.
    pub fn global() -> &'static Metrics {
        static GLOBAL: OnceLock<Metrics> = OnceLock::new();
        GLOBAL.get_or_init(Metrics::default)
    }

    fn counter(&self, e: Event) -> &AtomicU64 {
        match e {
            Event::Created => &self.sessions_created,
            Event::Loaded => &self.sessions_loaded,
            Event::Saved => &self.sessions_saved,
            Event::Destroyed => &self.sessions_destroyed,
            Event::Renewed => &self.sessions_renewed,
            Event::SaveConflict => &self.save_conflicts,
            Event::StoreError => &self.store_errors,
            Event::Failover => &self.failovers,
            Event::Failback => &self.failbacks,
        }
    }

    /// Counts one event.
    pub fn count(&self, e: Event) {
        self.counter(e).fetch_add(1, Relaxed);
    }

    /// The current value of an event counter.
    pub fn get(&self, e: Event) -> u64 {
        self.counter(e).load(Relaxed)
    }

    /// Calls observed for `op` and their summed time in µs (for tests).
    #[cfg(test)]
    pub(crate) fn latency(&self, op: Op) -> (u64, u64) {
        let i = OPS.iter().position(|(o, _)| *o == op).unwrap_or(0);
        let h = &self.latency[i];
        (h.count.load(Relaxed), h.sum_us.load(Relaxed))
    }

    /// Records how long a store call took.
    pub fn observe_store_call(&self, op: Op, took: Duration) {
        let i = OPS.iter().position(|(o, _)| *o == op).unwrap_or(0);
        let h = &self.latency[i];
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if let Some(b) = BUCKETS_US.iter().position(|&le| us <= le) {
            h.buckets[b].fetch_add(1, Relaxed);
        }
        h.count.fetch_add(1, Relaxed);
        h.sum_us.fetch_add(us, Relaxed);
    }

    /// Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &str, Event); 9] = [
            (
                "sessionforge_sessions_created_total",
                "Sessions created.",
                Event::Created,
            ),
            (
                "sessionforge_sessions_loaded_total",
                "Stored sessions loaded.",
                Event::Loaded,
            ),
            (
                "sessionforge_sessions_saved_total",
                "Session change-sets and touches saved.",
                Event::Saved,
            ),
            (
                "sessionforge_sessions_destroyed_total",
                "Sessions destroyed.",
                Event::Destroyed,
            ),
            (
                "sessionforge_sessions_renewed_total",
                "Session ids renewed.",
                Event::Renewed,
            ),
            (
                "sessionforge_save_conflicts_total",
                "Saves that merged with a concurrent writer.",
                Event::SaveConflict,
            ),
            (
                "sessionforge_store_errors_total",
                "Failed store calls.",
                Event::StoreError,
            ),
            (
                "sessionforge_failovers_total",
                "Switches from Redis to the file fallback.",
                Event::Failover,
            ),
            (
                "sessionforge_failbacks_total",
                "Switches from the file fallback back to Redis.",
                Event::Failback,
            ),
        ];
        for (name, help, e) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                self.get(e)
            );
        }
        let name = "sessionforge_store_call_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Latency of session store calls.\n# TYPE {name} histogram"
        );
        for ((_, op), h) in OPS.iter().zip(&self.latency) {
            let mut cumulative = 0;
            for (le, b) in BUCKETS_US.iter().zip(&h.buckets) {
                cumulative += b.load(Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{op=\"{op}\",le=\"{}\"}} {cumulative}",
                    *le as f64 / 1e6
                );
            }
            let count = h.count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{op=\"{op}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(
                out,
                "{name}_sum{{op=\"{op}\"}} {}",
                h.sum_us.load(Relaxed) as f64 / 1e6
            );
            let _ = writeln!(out, "{name}_count{{op=\"{op}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let m = Metrics::default();
        m.observe_store_call(Op::Save, Duration::from_micros(50));
        m.observe_store_call(Op::Save, Duration::from_millis(3));
        m.observe_store_call(Op::Save, Duration::from_secs(5));
        let text = m.render();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .unwrap_or_else(|| panic!("no {needle} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let n = "sessionforge_store_call_duration_seconds";
        assert_eq!(
            line(&format!("{n}_bucket{{op=\"save\",le=\"0.0001\"}}")),
            "1"
        );
        assert_eq!(
            line(&format!("{n}_bucket{{op=\"save\",le=\"0.005\"}}")),
            "2"
        );
        assert_eq!(line(&format!("{n}_bucket{{op=\"save\",le=\"+Inf\"}}")), "3");
        assert_eq!(line(&format!("{n}_count{{op=\"save\"}}")), "3");
    }

    #[test]
    fn counters_are_rendered() {
        let m = Metrics::default();
        m.count(Event::Failover);
        let text = m.render();
        assert!(text.contains("sessionforge_failovers_total 1"));
    }
}
