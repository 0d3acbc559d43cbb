//! The failover store's transitions: the startup probe, the health monitor, failing over, and the
//! store's own health.

use super::{FailoverStore, Side};
use crate::expiry::Timestamp;
use crate::shutdown::Shutdown;
use crate::store::{Health, HealthStatus, SessionStore, StoreError};
use std::sync::atomic::Ordering;

/// What the monitor last saw of the primary, and the last transition.
#[derive(Default)]
pub(super) struct Status {
    /// The primary's health at the last check; `None` before the first.
    pub(super) primary: Option<Health>,
    /// Why the store last failed over.
    pub(super) last_error: Option<String>,
    /// The last failover or failback, and when.
    pub(super) last_transition: Option<(&'static str, Timestamp)>,
}

/// `s` with its first letter in upper case: `"redis"` → `"Redis"`.
fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl<P: SessionStore, F: SessionStore> FailoverStore<P, F> {
    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.inner.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Probes the primary (switching to the fallback with the warning line if it does not answer in
    /// time) and spawns the health monitor, which stops when `shutdown` begins.
    pub(super) async fn start(self, shutdown: &Shutdown) -> Self {
        let timeout = self.inner.startup_timeout;
        match tokio::time::timeout(timeout, self.inner.primary.health()).await {
            Ok(h) if h.is_serving() => {
                tracing::info!(store = self.inner.primary.name(), "session store connected");
                self.status().primary = Some(h);
                // Outage work left in the fallback (by this process before a restart, or by another
                // instance) goes over now.
                if self.fallback_has_work().await {
                    let this = self.clone();
                    shutdown.register(tokio::spawn(async move { this.fail_back().await }));
                }
            }
            Ok(h) => {
                let reason = h
                    .detail
                    .clone()
                    .or(h.reason.clone())
                    .unwrap_or_else(|| "health check failed".into());
                self.fail_over_because(&reason, false);
            }
            Err(_) => self.fail_over_because(&format!("no answer within {timeout:?}"), false),
        }
        crate::metrics::store_mode(
            self.name(),
            &[self.inner.primary.name(), self.inner.fallback.name()],
        );
        let this = self.clone();
        let stop = shutdown.signal();
        shutdown.register(tokio::spawn(async move {
            tokio::select! {
                _ = stop => {}
                _ = this.monitor() => {}
            }
        }));
        self
    }

    async fn monitor(&self) {
        let mut tick = tokio::time::interval(self.inner.check_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.check_now().await;
        }
    }

    /// Runs one health check now: fails over if the primary is down, fails back if it is healthy
    /// again (or carries over outage work found in the fallback). The monitor calls it every interval.
    #[cfg(any(test, feature = "test-util"))]
    #[doc(hidden)]
    pub async fn check_now(&self) {
        self.check().await
    }

    #[cfg(not(any(test, feature = "test-util")))]
    async fn check_now(&self) {
        self.check().await
    }

    async fn check(&self) {
        let health = self.inner.primary.health().await;
        let status = health.status;
        crate::metrics::backend_up(self.inner.primary.name(), health.is_serving());
        let reason = health
            .detail
            .clone()
            .or(health.reason.clone())
            .unwrap_or_else(|| "health check failed".into());
        self.status().primary = Some(health);
        let on_fallback = self.is_on_fallback();
        match status {
            HealthStatus::Unavailable if !on_fallback => self.fail_over_because(&reason, false),
            HealthStatus::Ok if on_fallback || self.migrating() => self.fail_back().await,
            HealthStatus::Ok if self.fallback_has_work().await => self.fail_back().await,
            _ => {}
        }
    }

    /// Whether the fallback holds anything (outage work to carry over).
    async fn fallback_has_work(&self) -> bool {
        match self.inner.fallback.list(None, 1).await {
            Ok(page) => !page.sessions.is_empty(),
            Err(e) => {
                tracing::debug!(error = %e, "could not look for outage work in the fallback");
                false
            }
        }
    }

    /// Switches to the fallback after the primary failed with `e`.
    pub(super) fn fail_over(&self, e: &StoreError) {
        self.fail_over_because(&e.root_cause(), e.is_full());
    }

    /// Switches to the fallback (once; later calls while on the fallback only note the reason).
    pub(super) fn fail_over_because(&self, reason: &str, full: bool) {
        let inner = &self.inner;
        inner.primary_full.store(full, Ordering::Release);
        {
            let mut status = self.status();
            status.last_error = Some(reason.to_owned());
            if let Some(h) = status.primary.as_mut() {
                if !full {
                    h.status = HealthStatus::Unavailable;
                }
            }
        }
        if inner.on_fallback.swap(true, Ordering::AcqRel) {
            return;
        }
        let (primary, fallback) = (inner.primary.name(), inner.fallback.name());
        self.status().last_transition = Some(("failover", inner.clock.now()));
        crate::metrics::transition(true, primary, fallback);
        tracing::warn!(
            from = primary,
            to = fallback,
            reason,
            "session store failover"
        );
        // The line the original DJForge printed, kept for whoever greps for it.
        eprintln!(
            "⚠️  {} unavailable, falling back to {fallback}-based sessions: {reason}",
            capitalised(primary)
        );
    }

    /// Switches back to the primary (the caller checked it is healthy).
    pub(super) fn switched_back(&self) {
        let inner = &self.inner;
        inner.primary_full.store(false, Ordering::Release);
        {
            let mut status = self.status();
            status.last_error = None;
            status.last_transition = Some(("failback", inner.clock.now()));
        }
        crate::metrics::transition(false, inner.primary.name(), inner.fallback.name());
        tracing::info!(
            to = inner.primary.name(),
            "primary session store healthy again; failing back"
        );
    }

    /// A failback step that failed: a primary failure switches to the fallback again; a fallback
    /// failure leaves the rest to the next check (requests move their own sessions meanwhile).
    pub(super) fn interrupted(&self, side: Side) {
        match side {
            Side::Primary(e) => {
                tracing::warn!(error = %e, "failback interrupted; will resume on the next check");
                if super::fails_over(&e) {
                    self.fail_over(&e);
                }
            }
            Side::Fallback(e) => {
                tracing::warn!(error = %e, "failback interrupted reading the fallback");
            }
        }
    }

    /// The store's health: the store serving now and its state, the primary as a backend, and for
    /// operators the last error and transition.
    pub(super) async fn health_now(&self) -> Health {
        let inner = &self.inner;
        let (primary, last_error, last_transition) = {
            let s = self.status();
            (s.primary.clone(), s.last_error.clone(), s.last_transition)
        };
        // Until the first check, the primary is up if the store serves from it.
        let primary_up = primary
            .as_ref()
            .map_or(!self.is_on_fallback(), Health::is_serving);
        let mut health = if self.is_on_fallback() {
            let fb = inner.fallback.health().await;
            let mut h = Health::ok(inner.fallback.name());
            if !fb.is_serving() {
                h = h.unavailable(fb.reason.unwrap_or_else(|| "fallback store down".into()));
            } else if let Some(reason) = fb.reason.filter(|_| fb.status == HealthStatus::Degraded) {
                h = h.degraded(reason);
            }
            if inner.primary_full.load(Ordering::Acquire) {
                h = h.degraded(format!(
                    "{} is full; serving from the {} store",
                    inner.primary.name(),
                    inner.fallback.name()
                ));
            }
            h.detail = fb.detail;
            h
        } else {
            let mut h = Health::ok(inner.primary.name());
            if let Some(p) = &primary {
                if p.status == HealthStatus::Degraded {
                    h = h.degraded(p.reason.clone().unwrap_or_default());
                }
                h.extra = p.extra.clone();
                h.detail = p.detail.clone();
            }
            if self.migrating() {
                let fb = inner.fallback.health().await;
                if fb.status != HealthStatus::Ok {
                    h = h.degraded(format!(
                        "the {} store cannot be read while moving the outage's sessions back",
                        inner.fallback.name()
                    ));
                }
                h.detail = Some(format!(
                    "moving the outage's sessions back to the {} store",
                    inner.primary.name()
                ));
            }
            h
        };
        health = health.with_backend(inner.primary.name(), primary_up);
        if let Some(e) = last_error {
            health.detail = Some(e);
        }
        if let Some((kind, at)) = last_transition {
            health = health.with_extra(
                "lastTransition",
                serde_json::json!({ "kind": kind, "at": at.to_rfc3339() }),
            );
        }
        health
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_names_are_capitalised_for_the_warning_line() {
        assert_eq!(super::capitalised("redis"), "Redis");
        assert_eq!(super::capitalised(""), "");
    }
}
