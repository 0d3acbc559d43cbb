//! [`FailoverStore`]: Redis when it can, files when it must, and back again by itself.
//!
//! The store serves from its *primary* (Redis) and switches to its *fallback* (files):
//!
//! * **at startup**, when the primary does not answer a health check within a short timeout, with the
//!   warning the original DJForge printed:
//!   `⚠️  Redis unavailable, falling back to file-based sessions: <reason>`;
//! * **during a request**, the moment a primary call fails as unavailable or times out: that same
//!   request is then served from the fallback, so the client sees no error;
//! * **from the health monitor**, which checks the primary every interval and switches before requests
//!   have to pay the timeout.
//!
//! When the monitor finds the primary healthy again, the store **fails back**: new requests go to the
//! primary at once, and the sessions created or written in the fallback during the outage are copied
//! into the primary (a session the primary already holds with a newer `lastAccess` is left alone), then
//! removed from the fallback. Until the copy is done, a lookup that misses in the primary reads through
//! to the fallback and moves that session first, so no outage session goes missing in between.
//!
//! # What users see
//!
//! * During an outage, sessions that lived only in Redis cannot be read. A client whose session is read
//!   then starts a fresh one in files; a client whose session is *written* by a request that was loading
//!   it as Redis went away keeps it: the request's view is written to files under the same key.
//! * After failback, sessions Redis kept (it was restarted with persistence, or only the network
//!   failed) are reachable again, and so are the ones created during the outage. Sessions deleted during
//!   the outage (logout, admin delete) are deleted from Redis too at failback, so they do not come back.
//! * Every transition is a `tracing` event, counted in `/metrics`
//!   (`sessionforge_failovers_total`, `sessionforge_failbacks_total`, `sessionforge_store_mode`) and
//!   visible in the health and stats routes (`sessionStore` is the backend serving now).

use super::{
    ChangeSet, Created, Loaded, ManagedStore, Page, Record, RedisInfo, Saved, SessionStore,
    StoreError, StoreHealth, StoreKind, Usage, Version,
};
use crate::id::StoreKey;
use crate::metrics::{Event, Metrics};
use crate::shutdown::Shutdown;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most keys remembered as deleted during an outage (to delete from the primary at failback).
const MAX_TOMBSTONES: usize = 100_000;

/// Which backend a loaded version came from, kept in the version's text.
const FROM_PRIMARY: &str = "p:";
const FROM_FALLBACK: &str = "f:";

struct Inner<P, F> {
    primary: P,
    fallback: F,
    on_fallback: AtomicBool,
    migrating: AtomicBool,
    primary_healthy: AtomicBool,
    transitions: AtomicU64,
    last_error: Mutex<Option<String>>,
    tombstones: Mutex<HashSet<StoreKey>>,
    failback: tokio::sync::Mutex<()>,
    check_every: Duration,
    startup_timeout: Duration,
}

/// A store that fails over from a primary (Redis) to a fallback (files) and back. Cheap to clone.
///
/// ```no_run
/// use sessionforge::shutdown::Shutdown;
/// use sessionforge::store::{FailoverStore, MemoryStore};
/// use std::time::Duration;
///
/// # async fn demo(redis: MemoryStore, files: MemoryStore) {
/// let shutdown = Shutdown::new();
/// let store = FailoverStore::new(redis, files)
///     .with_check_interval(Duration::from_secs(5))
///     .start(&shutdown)
///     .await;
/// # }
/// ```
pub struct FailoverStore<P, F> {
    inner: Arc<Inner<P, F>>,
}

impl<P, F> Clone for FailoverStore<P, F> {
    fn clone(&self) -> Self {
        FailoverStore {
            inner: self.inner.clone(),
        }
    }
}

impl<P, F> std::fmt::Debug for FailoverStore<P, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverStore")
            .field(
                "on_fallback",
                &self.inner.on_fallback.load(Ordering::Relaxed),
            )
            .field("migrating", &self.inner.migrating.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn tag(origin: &str, v: Version) -> Version {
    Version::new(format!("{origin}{}", v.as_str()))
}

/// The version to hand a backend: the inner version if it came from that backend, else one that
/// matches nothing (so the backend merges the change-set into what it holds).
fn untag(base: &Version, origin: &str) -> Version {
    match base.as_str().strip_prefix(origin) {
        Some(v) => Version::new(v),
        None => Version::new(""),
    }
}

impl<P: ManagedStore, F: ManagedStore> FailoverStore<P, F> {
    /// A store over `primary` and `fallback`, serving from the primary until told otherwise. Call
    /// [`FailoverStore::start`] to probe the primary and run the health monitor.
    pub fn new(primary: P, fallback: F) -> Self {
        FailoverStore {
            inner: Arc::new(Inner {
                primary,
                fallback,
                on_fallback: AtomicBool::new(false),
                migrating: AtomicBool::new(false),
                primary_healthy: AtomicBool::new(true),
                transitions: AtomicU64::new(0),
                last_error: Mutex::new(None),
                tombstones: Mutex::new(HashSet::new()),
                failback: tokio::sync::Mutex::new(()),
                check_every: Duration::from_secs(5),
                startup_timeout: Duration::from_secs(2),
            }),
        }
    }

    fn with_inner(self, f: impl FnOnce(&mut Inner<P, F>)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("configure a FailoverStore before cloning or starting it"));
        f(&mut inner);
        FailoverStore {
            inner: Arc::new(inner),
        }
    }

    /// How often the health monitor checks the primary (default 5 s).
    #[must_use]
    pub fn with_check_interval(self, every: Duration) -> Self {
        self.with_inner(|i| i.check_every = every)
    }

    /// How long the startup probe waits for the primary (default 2 s).
    #[must_use]
    pub fn with_startup_timeout(self, timeout: Duration) -> Self {
        self.with_inner(|i| i.startup_timeout = timeout)
    }

    /// Probes the primary (switching to the fallback with the warning line if it does not answer in
    /// time) and spawns the health monitor, which stops when `shutdown` begins. Needs a Tokio runtime.
    pub async fn start(self, shutdown: &Shutdown) -> Self {
        match tokio::time::timeout(self.inner.startup_timeout, self.inner.primary.health()).await {
            Ok(h) if h.redis_healthy != Some(false) => {
                Metrics::global().set_mode(self.inner.primary.kind());
                tracing::info!(store = %self.inner.primary.kind(), "session store connected");
            }
            Ok(h) => self.fail_over(h.detail.as_deref().unwrap_or("health check failed")),
            Err(_) => self.fail_over(&format!(
                "no answer within {:?}",
                self.inner.startup_timeout
            )),
        }
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

    /// The primary store.
    pub fn primary(&self) -> &P {
        &self.inner.primary
    }

    /// The fallback store.
    pub fn fallback(&self) -> &F {
        &self.inner.fallback
    }

    /// Whether sessions are served from the fallback now.
    pub fn is_on_fallback(&self) -> bool {
        self.inner.on_fallback.load(Ordering::Acquire)
    }

    /// How many times the store has switched (either way).
    pub fn transitions(&self) -> u64 {
        self.inner.transitions.load(Ordering::Relaxed)
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

    /// Runs one health check now: fails over if the primary is down, fails back if it is up again.
    pub async fn check_now(&self) {
        let health = self.inner.primary.health().await;
        let healthy = health.redis_healthy != Some(false);
        self.inner.primary_healthy.store(healthy, Ordering::Release);
        match (healthy, self.is_on_fallback()) {
            (true, true) => self.fail_back().await,
            (false, false) => {
                self.fail_over(health.detail.as_deref().unwrap_or("health check failed"))
            }
            (true, false) if self.inner.migrating.load(Ordering::Acquire) => {
                // A failback was cut short; finish moving the outage's sessions.
                self.fail_back().await
            }
            _ => {}
        }
    }

    /// Switches to the fallback (once; later calls while on the fallback do nothing).
    fn fail_over(&self, reason: &str) {
        self.inner.primary_healthy.store(false, Ordering::Release);
        *self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
        if self.inner.on_fallback.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.transitions.fetch_add(1, Ordering::Relaxed);
        let m = Metrics::global();
        m.count(Event::Failover);
        m.set_mode(self.inner.fallback.kind());
        tracing::warn!(
            from = %self.inner.primary.kind(),
            to = %self.inner.fallback.kind(),
            reason,
            "session store failover"
        );
        // The line the original DJForge printed, kept for whoever greps for it.
        eprintln!("⚠️  Redis unavailable, falling back to file-based sessions: {reason}");
    }

    fn note_failure(&self, e: &StoreError) {
        if e.is_unavailable() {
            self.fail_over(&e.to_string());
        }
    }

    /// Switches back to the primary and moves the outage's sessions into it.
    async fn fail_back(&self) {
        let Ok(_one_at_a_time) = self.inner.failback.try_lock() else {
            return;
        };
        self.inner.migrating.store(true, Ordering::Release);
        if self.inner.on_fallback.swap(false, Ordering::AcqRel) {
            self.inner.transitions.fetch_add(1, Ordering::Relaxed);
            let m = Metrics::global();
            m.count(Event::Failback);
            m.set_mode(self.inner.primary.kind());
            *self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            tracing::info!(
                to = %self.inner.primary.kind(),
                "primary session store healthy again; failing back"
            );
        }
        match self.migrate_all().await {
            Ok(moved) => {
                self.inner.migrating.store(false, Ordering::Release);
                tracing::info!(moved, "sessions from the outage moved to the primary store");
            }
            Err(e) => {
                tracing::warn!(error = %e, "failback interrupted; will resume on the next check");
                // Only the primary going away again is a reason to switch; a fallback error leaves
                // the remaining sessions to read-through and the next check.
                if self.inner.primary.health().await.redis_healthy == Some(false) {
                    self.note_failure(&e);
                }
            }
        }
    }

    async fn migrate_all(&self) -> Result<u64, StoreError> {
        let tombstones: Vec<StoreKey> = self
            .inner
            .tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        for key in tombstones {
            self.inner.primary.delete(&key).await?;
            self.inner
                .tombstones
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
        let mut moved = 0;
        let mut cursor: Option<String> = None;
        loop {
            // Pages resume after the cursor, so removing migrated keys behind it disturbs nothing.
            let page = self.inner.fallback.list(cursor.as_deref(), 500).await?;
            for s in &page.sessions {
                if self.migrate_one(&s.id).await? {
                    moved += 1;
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(moved),
            }
        }
    }

    /// Moves one session from the fallback into the primary, unless the primary holds a newer copy.
    /// Answers whether the primary now has it.
    async fn migrate_one(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let Some(loaded) = self.inner.fallback.load(key).await? else {
            return Ok(false);
        };
        let rec = loaded.record;
        if self.inner.primary.create(key, &rec).await? == Created::Exists {
            if let Some(current) = self.inner.primary.load(key).await? {
                if current.record.last_access < rec.last_access {
                    // The fallback's copy is newer: it replaces the data the primary kept.
                    let changes = ChangeSet {
                        cleared: true,
                        entries: rec
                            .data
                            .iter()
                            .map(|(k, v)| (k.clone(), Some(v.clone())))
                            .collect(),
                        user: Some(rec.user.clone()),
                        deadline: Some(rec.deadline),
                    };
                    self.inner
                        .primary
                        .save(key, &current.version, &rec, &changes)
                        .await?;
                }
            }
        }
        self.inner.fallback.delete(key).await?;
        Ok(true)
    }

    fn remember_deleted(&self, key: &StoreKey) {
        let mut t = self
            .inner
            .tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if t.len() < MAX_TOMBSTONES {
            t.insert(key.clone());
        }
    }
}

impl<P: ManagedStore, F: ManagedStore> SessionStore for FailoverStore<P, F> {
    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        if !self.is_on_fallback() {
            match self.inner.primary.load(key).await {
                Ok(Some(_)) if self.inner.migrating.load(Ordering::Acquire) => {
                    // Failing back: the primary may hold a pre-outage copy while the fallback holds
                    // the newer one written during the outage. Move that first (it replaces an older
                    // primary copy), or this request would build on the stale one and migration
                    // would then keep the stale one as the newer.
                    self.migrate_one(key).await?;
                    let l = self.inner.primary.load(key).await?;
                    return Ok(l.map(|l| Loaded {
                        record: l.record,
                        version: tag(FROM_PRIMARY, l.version),
                    }));
                }
                Ok(Some(l)) => {
                    return Ok(Some(Loaded {
                        record: l.record,
                        version: tag(FROM_PRIMARY, l.version),
                    }))
                }
                Ok(None) if self.inner.migrating.load(Ordering::Acquire) => {
                    // Failing back: the session may still be in the fallback. Move it first.
                    if self.migrate_one(key).await? {
                        let l = self.inner.primary.load(key).await?;
                        return Ok(l.map(|l| Loaded {
                            record: l.record,
                            version: tag(FROM_PRIMARY, l.version),
                        }));
                    }
                    return Ok(None);
                }
                Ok(None) => return Ok(None),
                Err(e) if e.is_unavailable() => self.note_failure(&e),
                Err(e) => return Err(e),
            }
        }
        Ok(self.inner.fallback.load(key).await?.map(|l| Loaded {
            record: l.record,
            version: tag(FROM_FALLBACK, l.version),
        }))
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        if !self.is_on_fallback() {
            match self.inner.primary.create(key, record).await {
                Err(e) if e.is_unavailable() => self.note_failure(&e),
                other => return other,
            }
        }
        self.inner.fallback.create(key, record).await
    }

    async fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Record,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        if !self.is_on_fallback() {
            if base.as_str().starts_with(FROM_FALLBACK) {
                // Loaded from the fallback before a failback: move the fallback's copy (newer than any
                // pre-outage copy in the primary) first, so the change lands on top of it.
                self.migrate_one(key).await?;
            }
            let v = untag(base, FROM_PRIMARY);
            match self.inner.primary.save(key, &v, ours, changes).await {
                Ok(Saved::Gone) if base.as_str().starts_with(FROM_FALLBACK) => {
                    // Loaded from the fallback, not moved yet: move it, then save.
                    if self.migrate_one(key).await? {
                        return self.inner.primary.save(key, &v, ours, changes).await;
                    }
                    return Ok(Saved::Gone);
                }
                Err(e) if e.is_unavailable() => self.note_failure(&e),
                other => return other,
            }
        }
        let v = untag(base, FROM_FALLBACK);
        match self.inner.fallback.save(key, &v, ours, changes).await? {
            Saved::Gone if base.as_str().starts_with(FROM_PRIMARY) => {
                // Loaded from the primary just before it went away: keep the session alive in the
                // fallback with this request's view of it.
                match self.inner.fallback.create(key, ours).await? {
                    Created::Created => Ok(Saved::Saved),
                    _ => self.inner.fallback.save(key, &v, ours, changes).await,
                }
            }
            other => Ok(other),
        }
    }

    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        if !self.is_on_fallback() {
            match self.inner.primary.delete(key).await {
                Ok(found) => {
                    // A copy may wait in the fallback for migration; it must not come back.
                    let in_fallback = self.inner.fallback.delete(key).await.unwrap_or(false);
                    return Ok(found || in_fallback);
                }
                Err(e) if e.is_unavailable() => self.note_failure(&e),
                Err(e) => return Err(e),
            }
        }
        self.remember_deleted(key);
        self.inner.fallback.delete(key).await
    }
}

impl<P: ManagedStore, F: ManagedStore> ManagedStore for FailoverStore<P, F> {
    fn kind(&self) -> StoreKind {
        if self.is_on_fallback() {
            self.inner.fallback.kind()
        } else {
            self.inner.primary.kind()
        }
    }

    async fn count(&self) -> Result<u64, StoreError> {
        if self.is_on_fallback() {
            self.inner.fallback.count().await
        } else {
            self.inner.primary.count().await
        }
    }

    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        if self.is_on_fallback() {
            self.inner.fallback.list(cursor, limit).await
        } else {
            self.inner.primary.list(cursor, limit).await
        }
    }

    async fn cleanup(&self) -> Result<u64, StoreError> {
        // Both: the fallback keeps expired files from the last outage until cleaned.
        let files = self.inner.fallback.cleanup().await?;
        let primary = if self.is_on_fallback() {
            0
        } else {
            self.inner.primary.cleanup().await?
        };
        Ok(files + primary)
    }

    async fn health(&self) -> StoreHealth {
        let redis_healthy = self.inner.primary_healthy.load(Ordering::Acquire);
        let mut detail = self
            .inner
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .or_else(|| {
                self.inner
                    .migrating
                    .load(Ordering::Acquire)
                    .then(|| "moving outage sessions back to the primary".to_owned())
            });
        let healthy = if self.is_on_fallback() {
            // Serving from the fallback: its own health is what counts.
            let fb = self.inner.fallback.health().await;
            if !fb.healthy {
                detail = fb.detail.or(detail);
            }
            fb.healthy
        } else {
            redis_healthy
        };
        StoreHealth {
            serving: self.kind(),
            healthy,
            redis_healthy: Some(redis_healthy),
            detail,
        }
    }

    async fn usage(&self) -> Result<Usage, StoreError> {
        if self.is_on_fallback() {
            self.inner.fallback.usage().await
        } else {
            self.inner.primary.usage().await
        }
    }

    async fn redis_info(&self) -> Result<Option<RedisInfo>, StoreError> {
        if self.is_on_fallback() {
            Ok(None)
        } else {
            self.inner.primary.redis_info().await
        }
    }
}
