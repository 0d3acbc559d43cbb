//! Graceful shutdown: stop background tasks, let in-flight saves finish, under a deadline. Built on
//! tokio-util's [`CancellationToken`] (the signal) and [`TaskTracker`] (saves and tasks in flight).
//!
//! One [`Shutdown`] per process ties the pieces together:
//!
//! * [`Shutdown::signal`] is a future for the server's own graceful shutdown (Axum's
//!   `with_graceful_shutdown`, Tonic's `serve_with_shutdown`): it resolves once shutdown begins, from
//!   SIGINT/SIGTERM ([`Shutdown::listen_for_os_signals`]) or [`Shutdown::trigger`].
//! * The layer, given the handle ([`SessionLayer::with_shutdown`](crate::SessionLayer::with_shutdown)),
//!   counts saves in progress.
//! * Background tasks (the failover health monitor, the file store's reaper) are registered with
//!   [`Shutdown::register`] and watch [`Shutdown::signal`] to stop.
//! * [`Shutdown::drain`] waits for in-flight saves and for the tasks, up to a deadline, then aborts what
//!   is left and reports. Dropping the stores afterwards closes their connections.
//!
//! ```
//! use sessionforge::shutdown::Shutdown;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let shutdown = Shutdown::new();
//! let task = tokio::spawn({
//!     let s = shutdown.clone();
//!     async move { s.signal().await }
//! });
//! shutdown.register(task);
//! shutdown.trigger();
//! let report = shutdown.drain(Duration::from_secs(1)).await;
//! assert!(report.clean());
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

struct Inner {
    started: CancellationToken,
    /// Saves in flight, one token each.
    saves: TaskTracker,
    /// Registered background tasks (each tracked by a small waiter), and how to abort them.
    tasks: TaskTracker,
    aborts: Mutex<Vec<AbortHandle>>,
}

/// The process's shutdown coordinator. Cheap to clone; clones share one state.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("started", &self.is_started())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// What [`Shutdown::drain`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Saves still running when the deadline passed (0 when all finished).
    pub saves_abandoned: usize,
    /// Background tasks aborted because they did not stop in time.
    pub tasks_aborted: usize,
}

impl DrainReport {
    /// Whether everything finished in time.
    pub fn clean(&self) -> bool {
        self.saves_abandoned == 0 && self.tasks_aborted == 0
    }
}

impl Shutdown {
    /// A coordinator that has not started shutting down.
    pub fn new() -> Self {
        Shutdown {
            inner: Arc::new(Inner {
                started: CancellationToken::new(),
                saves: TaskTracker::new(),
                tasks: TaskTracker::new(),
                aborts: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Begins shutting down: every [`Shutdown::signal`] resolves.
    pub fn trigger(&self) {
        self.inner.started.cancel();
    }

    /// Whether shutdown has begun.
    pub fn is_started(&self) -> bool {
        self.inner.started.is_cancelled()
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub fn signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.inner.started.clone().cancelled_owned()
    }

    /// Triggers shutdown on SIGINT (Ctrl-C) or, on Unix, SIGTERM. Needs a Tokio runtime.
    pub fn listen_for_os_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = ctrl_c => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = ctrl_c.await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = ctrl_c.await;
            }
            tracing::info!("shutdown signal received");
            this.trigger();
        });
    }

    /// Registers a background task to wait for (and, past the deadline, abort) in [`Shutdown::drain`].
    /// The task should stop by itself once [`Shutdown::signal`] resolves.
    pub fn register(&self, task: JoinHandle<()>) {
        self.inner
            .aborts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task.abort_handle());
        self.inner.tasks.spawn(async move {
            let _ = task.await;
        });
    }

    /// Saves in progress.
    pub fn in_flight(&self) -> usize {
        self.inner.saves.len()
    }

    /// Marks a save in progress until the guard drops.
    pub(crate) fn save_guard(&self) -> SaveGuard {
        SaveGuard(self.inner.saves.token())
    }

    /// Triggers shutdown if it has not begun, waits up to `deadline` for in-flight saves and registered
    /// tasks, aborts whatever is left, and reports.
    pub async fn drain(&self, deadline: Duration) -> DrainReport {
        self.trigger();
        let end = tokio::time::Instant::now() + deadline;
        let inner = &self.inner;
        inner.saves.close();
        let _ = tokio::time::timeout_at(end, inner.saves.wait()).await;
        let saves_abandoned = inner.saves.len();
        inner.tasks.close();
        let tasks_aborted = match tokio::time::timeout_at(end, inner.tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => {
                let aborts =
                    std::mem::take(&mut *inner.aborts.lock().unwrap_or_else(|p| p.into_inner()));
                let left = aborts.iter().filter(|a| !a.is_finished()).count();
                for a in aborts {
                    a.abort();
                }
                left
            }
        };
        let report = DrainReport {
            saves_abandoned,
            tasks_aborted,
        };
        if report.clean() {
            tracing::info!("sessions drained; shutdown complete");
        } else {
            tracing::warn!(
                saves_abandoned,
                tasks_aborted,
                "shutdown deadline passed before everything finished"
            );
        }
        report
    }
}

/// Keeps a save counted as in flight while alive.
pub(crate) struct SaveGuard(#[allow(dead_code)] TaskTrackerToken);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_saves_in_flight() {
        let s = Shutdown::new();
        let guard = s.save_guard();
        assert_eq!(s.in_flight(), 1);
        let released = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(guard);
        });
        let report = s.drain(Duration::from_secs(5)).await;
        assert!(report.clean(), "{report:?}");
        assert_eq!(s.in_flight(), 0);
        released.await.unwrap();
    }

    #[tokio::test]
    async fn drain_gives_up_at_the_deadline_and_aborts_stuck_tasks() {
        let s = Shutdown::new();
        let _stuck_save = s.save_guard();
        s.register(tokio::spawn(std::future::pending()));
        let report = s.drain(Duration::from_millis(50)).await;
        assert_eq!(
            report,
            DrainReport {
                saves_abandoned: 1,
                tasks_aborted: 1
            }
        );
    }

    #[tokio::test]
    async fn signal_resolves_for_late_subscribers_too() {
        let s = Shutdown::new();
        s.trigger();
        tokio::time::timeout(Duration::from_secs(1), s.signal())
            .await
            .expect("an already-started shutdown resolves at once");
    }
}
