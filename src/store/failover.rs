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
//! removed from the fallback. Until the copy is done, any request for a session moves that session
//! first, so no outage session goes missing, and no older copy Redis kept from before the outage is
//! read (or written over) in between.
//!
//! # What users see
//!
//! * During an outage, sessions this instance has served from Redis recently carry on from files: the
//!   store keeps the last state it read or wrote through Redis for each of them (a bounded cache,
//!   [`FailoverStore::with_recent_sessions`], 10,000 by default), and a lookup that misses in the files
//!   during an outage restores the session from it. So a single instance loses no acknowledged change
//!   when Redis dies. Sessions this instance has not served since (another instance's, or ones pushed
//!   out of the cache) cannot be read until Redis is back: their clients start fresh sessions. A
//!   request that was loading a session as Redis went away keeps it too: its view is written to files.
//! * With several instances, the cache only knows this instance's view: a session another instance
//!   deleted (logout, revoke) shortly before the outage can be restored here from the cache. Where
//!   that matters more than keeping users logged in through an outage, turn the cache off with
//!   `with_recent_sessions(0)`.
//! * After failback, sessions Redis kept (it was restarted with persistence, or only the network
//!   failed) are reachable again, and so are the ones created during the outage. Sessions deleted during
//!   the outage (logout, admin delete) are deleted from Redis too at failback, so they do not come back.
//! * Every transition is a `tracing` event, counted in `/metrics` (`sessionforge_failovers_total`,
//!   `sessionforge_failbacks_total`, and the admin service's `sessionforge_store_mode`) and visible in
//!   the health and stats routes (`sessionStore` is the backend serving now).

use super::{
    ChangeSet, Created, Loaded, ManagedStore, NodeHealth, Page, Record, RedisInfo, RedisNodeInfo,
    Saved, SessionStore, StoreError, StoreHealth, StoreKind, Summary, Usage, Version,
};
use crate::id::StoreKey;
use crate::metrics::{Event, Metrics};
use crate::shutdown::Shutdown;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most keys remembered as deleted during an outage (to delete from the primary at failback).
const MAX_TOMBSTONES: usize = 100_000;

/// A migration step's failure, with the side it came from: only the primary failing is a reason to
/// switch back to the fallback.
enum MigrateError {
    Primary(StoreError),
    Fallback(StoreError),
}

/// Per-key migration locks (striped).
const MIGRATE_LOCK_STRIPES: usize = 64;

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
    /// Users whose sessions were revoked during an outage (with the session kept, if any): their
    /// sessions in the primary are revoked at failback, before the outage's sessions move back.
    user_tombstones: Mutex<HashMap<String, Option<StoreKey>>>,
    failback: tokio::sync::Mutex<()>,
    /// Striped per-key locks: one migration of a key at a time, and none while a request settles it.
    migrate_locks: Vec<tokio::sync::Mutex<()>>,
    check_every: Duration,
    startup_timeout: Duration,
    recent: Mutex<Recent>,
}

/// The last known state of sessions served through the primary, to restore them from during an
/// outage. Bounded; the oldest entries go first. Records are shared with the requests that loaded or
/// saved them, so keeping one costs no copy.
struct Recent {
    capacity: usize,
    tick: u64,
    map: std::collections::HashMap<StoreKey, (Arc<Record>, u64)>,
    order: std::collections::VecDeque<(StoreKey, u64)>,
}

impl Recent {
    fn new(capacity: usize) -> Self {
        Recent {
            capacity,
            tick: 0,
            map: Default::default(),
            order: Default::default(),
        }
    }

    fn put(&mut self, key: &StoreKey, record: Arc<Record>) {
        if self.capacity == 0 {
            return;
        }
        self.tick += 1;
        self.map.insert(*key, (record, self.tick));
        self.order.push_back((*key, self.tick));
        while self.map.len() > self.capacity || self.order.len() > 2 * self.capacity.max(8) {
            let Some((k, t)) = self.order.pop_front() else {
                break;
            };
            // Only the newest mention of a key evicts it; older ones are stale order entries.
            if self.map.get(&k).is_some_and(|(_, newest)| *newest == t) {
                self.map.remove(&k);
            }
        }
    }

    /// Applies a saved change-set the way the primary did: to the state it holds.
    fn apply(&mut self, key: &StoreKey, changes: &ChangeSet, ours: &Arc<Record>) {
        let merged = match self.map.get(key) {
            Some((current, _)) => {
                let mut r = Record::clone(current);
                r.merge(changes, ours);
                Arc::new(r)
            }
            None => Arc::clone(ours),
        };
        self.put(key, merged);
    }

    fn remove(&mut self, key: &StoreKey) -> Option<Arc<Record>> {
        self.map.remove(key).map(|(r, _)| r)
    }

    /// Forgets the user's sessions (revoked), except `keep`.
    fn remove_user(&mut self, user: &str, keep: Option<&StoreKey>) {
        self.map
            .retain(|k, (r, _)| r.user.as_deref() != Some(user) || Some(k) == keep);
    }

    fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
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
                user_tombstones: Mutex::new(HashMap::new()),
                failback: tokio::sync::Mutex::new(()),
                migrate_locks: (0..MIGRATE_LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                check_every: Duration::from_secs(5),
                startup_timeout: Duration::from_secs(2),
                recent: Mutex::new(Recent::new(10_000)),
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

    /// How many sessions' last known state to keep for restoring them during an outage (default 10,000;
    /// 0 turns it off). Each costs about the size of its record in memory.
    #[must_use]
    pub fn with_recent_sessions(self, capacity: usize) -> Self {
        self.with_inner(|i| i.recent = Mutex::new(Recent::new(capacity)))
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.inner.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Probes the primary (switching to the fallback with the warning line if it does not answer in
    /// time) and spawns the health monitor, which stops when `shutdown` begins. Needs a Tokio runtime.
    pub async fn start(self, shutdown: &Shutdown) -> Self {
        match tokio::time::timeout(self.inner.startup_timeout, self.inner.primary.health()).await {
            Ok(h) if h.redis_healthy != Some(false) => {
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
            self.fail_over(&e.root_cause());
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
            *self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            // What the cache knew predates the outage; the primary is the truth again.
            self.recent().clear();
            tracing::info!(
                to = %self.inner.primary.kind(),
                "primary session store healthy again; failing back"
            );
        }
        match self.migrate_all().await {
            Ok(moved) if !self.is_on_fallback() => {
                self.inner.migrating.store(false, Ordering::Release);
                tracing::info!(moved, "sessions from the outage moved to the primary store");
            }
            // A request found the primary gone again and switched: the next failback resumes.
            Ok(_) => {}
            Err(MigrateError::Primary(e)) => {
                tracing::warn!(error = %e, "failback interrupted; will resume on the next check");
                self.note_failure(&e);
            }
            Err(MigrateError::Fallback(e)) => {
                // The primary is fine: the remaining sessions move when requested (settle) or at
                // the next check.
                tracing::warn!(error = %e, "failback interrupted reading the fallback");
            }
        }
    }

    async fn migrate_all(&self) -> Result<u64, MigrateError> {
        use MigrateError::{Fallback, Primary};
        let tombstones: Vec<StoreKey> = self
            .inner
            .tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        for key in tombstones {
            self.inner.primary.delete(&key).await.map_err(Primary)?;
            self.inner
                .tombstones
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
        let users: Vec<(String, Option<StoreKey>)> = self
            .inner
            .user_tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(u, k)| (u.clone(), *k))
            .collect();
        for (user, keep) in users {
            // Only sessions from before the outage are in the primary (nothing was written to it
            // since): all of them were revoked. The outage's own sessions move over below.
            self.inner
                .primary
                .revoke_user_sessions(&user, keep.as_ref())
                .await
                .map_err(Primary)?;
            let mut t = self
                .inner
                .user_tombstones
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Unless revoked again meanwhile (with another session kept).
            if t.get(&user) == Some(&keep) {
                t.remove(&user);
            }
        }
        let mut moved = 0;
        let mut cursor: Option<String> = None;
        loop {
            // Pages resume after the cursor, so removing migrated keys behind it disturbs nothing.
            if self.is_on_fallback() {
                return Ok(moved);
            }
            let page = self
                .inner
                .fallback
                .list(cursor.as_deref(), 500)
                .await
                .map_err(Fallback)?;
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
    async fn migrate_one(&self, key: &StoreKey) -> Result<bool, MigrateError> {
        use MigrateError::{Fallback, Primary};
        // Held from reading the fallback's copy to deleting it: a second migration of the key (the
        // background pass and a request settling it) must not compare a stale snapshot with a write
        // the first one let through. Timestamps alone cannot order writes in the same millisecond.
        let stripe = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            h.finish() as usize % MIGRATE_LOCK_STRIPES
        };
        let _one_at_a_time = self.inner.migrate_locks[stripe].lock().await;
        if self.is_on_fallback() {
            // The primary went away again while we waited: the copy stays where it is served from.
            return Ok(false);
        }
        let Some(loaded) = self.inner.fallback.load(key).await.map_err(Fallback)? else {
            return Ok(false);
        };
        let rec = loaded.record;
        // What the primary holds afterwards, for the recent-state cache (cleared at failback).
        let mut now_held = rec.clone();
        if self
            .inner
            .primary
            .create(key, &rec)
            .await
            .map_err(Primary)?
            == Created::Exists
        {
            if let Some(current) = self.inner.primary.load(key).await.map_err(Primary)? {
                // The fallback's copy exists because the outage wrote it, so it wins unless the
                // primary's is strictly newer (another instance wrote it meanwhile): fast requests
                // share milliseconds, and a tie with a pre-outage copy must not drop an acknowledged
                // outage write. (Requests for this key wait in `settle` while we hold its lock, so
                // no write from this instance lands between our read and our write.)
                if current.record.last_access <= rec.last_access {
                    let changes = ChangeSet {
                        cleared: true,
                        entries: rec
                            .data
                            .iter()
                            .map(|(k, v)| (k.clone(), Some(v.clone())))
                            .collect(),
                        user: Some(rec.user.clone()),
                        deadline: Some(rec.deadline),
                        ..Default::default()
                    };
                    self.inner
                        .primary
                        .save(key, &current.version, &rec, &changes)
                        .await
                        .map_err(Primary)?;
                } else {
                    now_held = current.record;
                }
            }
        }
        self.inner.fallback.delete(key).await.map_err(Fallback)?;
        self.recent().put(key, now_held);
        Ok(true)
    }

    /// While failing back, moves `key`'s fallback copy (if any) into the primary before the primary
    /// is used for it: the primary may hold an older copy from before the outage, which must not be
    /// read, or written over with a newer timestamp, before the outage's copy is compared with it.
    ///
    /// When the primary fails meanwhile, the store fails over (the copy stays in the fallback, which
    /// serves the request): callers check the mode again afterwards.
    async fn settle(&self, key: &StoreKey) -> Result<(), StoreError> {
        if self.inner.migrating.load(Ordering::Acquire) {
            match self.migrate_one(key).await {
                Ok(_) => {}
                Err(MigrateError::Primary(e)) if e.is_unavailable() => self.note_failure(&e),
                Err(MigrateError::Primary(e) | MigrateError::Fallback(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// While failing back, whether a session the primary answered was deleted or revoked during the
    /// outage and not yet removed from the primary (the failback does that, but requests are served
    /// from the primary while it runs).
    fn revoked_in_outage(&self, key: &StoreKey, record: &Record) -> bool {
        if !self.inner.migrating.load(Ordering::Acquire) {
            return false;
        }
        if self
            .inner
            .tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
        {
            return true;
        }
        record.user.as_ref().is_some_and(|u| {
            self.inner
                .user_tombstones
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(u)
                .is_some_and(|keep| keep.as_ref() != Some(key))
        })
    }

    fn remember_revoked(&self, user: &str, keep: Option<&StoreKey>) {
        let mut t = self
            .inner
            .user_tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if t.len() < MAX_TOMBSTONES || t.contains_key(user) {
            t.insert(user.to_owned(), keep.cloned());
        }
    }

    fn remember_deleted(&self, key: &StoreKey) {
        let mut t = self
            .inner
            .tombstones
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if t.len() < MAX_TOMBSTONES {
            t.insert(*key);
        }
    }
}

impl<P: ManagedStore, F: ManagedStore> SessionStore for FailoverStore<P, F> {
    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        if !self.is_on_fallback() {
            self.settle(key).await?;
        }
        if !self.is_on_fallback() {
            match self.inner.primary.load(key).await {
                Ok(Some(l)) if self.revoked_in_outage(key, &l.record) => {
                    match self.inner.primary.delete(key).await {
                        Err(e) if e.is_unavailable() => self.note_failure(&e),
                        other => {
                            other?;
                            return Ok(None);
                        }
                    }
                }
                Ok(Some(l)) => {
                    self.recent().put(key, Arc::clone(&l.record));
                    return Ok(Some(Loaded {
                        record: l.record,
                        version: tag(FROM_PRIMARY, l.version),
                    }));
                }
                Ok(None) => {
                    self.recent().remove(key);
                    return Ok(None);
                }
                Err(e) if e.is_unavailable() => self.note_failure(&e),
                Err(e) => return Err(e),
            }
        }
        let mut loaded = self.inner.fallback.load(key).await?;
        if loaded.is_none() {
            // Served through the primary before the outage: carry on from its last known state.
            let known = self.recent().remove(key);
            let now = crate::expiry::Clock::now(&crate::expiry::SystemClock);
            if let Some(record) = known.filter(|r| !r.is_expired(now)) {
                self.inner.fallback.create(key, &record).await?;
                tracing::debug!(store_key = %key, "session restored from its last known state");
                loaded = self.inner.fallback.load(key).await?;
            }
        }
        Ok(loaded.map(|l| Loaded {
            record: l.record,
            version: tag(FROM_FALLBACK, l.version),
        }))
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        if !self.is_on_fallback() {
            match self.inner.primary.create(key, record).await {
                Ok(Created::Created) => {
                    self.recent().put(key, Arc::new(record.clone()));
                    return Ok(Created::Created);
                }
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
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        if !self.is_on_fallback() {
            self.settle(key).await?;
        }
        if !self.is_on_fallback() {
            let v = untag(base, FROM_PRIMARY);
            match self.inner.primary.save(key, &v, ours, changes).await {
                Ok(Saved::Saved) => {
                    self.recent().apply(key, changes, ours);
                    return Ok(Saved::Saved);
                }
                Ok(Saved::Gone) => {
                    self.recent().remove(key);
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
        self.recent().remove(key);
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

    /// From the backend serving now. While failing back, the sessions still waiting in the fallback
    /// are listed too (their fallback copy is the newer one).
    async fn user_sessions(&self, user: &str) -> Result<Vec<Summary>, StoreError> {
        if !self.is_on_fallback() {
            match self.inner.primary.user_sessions(user).await {
                Ok(mut sessions) => {
                    if self.inner.migrating.load(Ordering::Acquire) {
                        let waiting = self.inner.fallback.user_sessions(user).await?;
                        sessions.retain(|s| !waiting.iter().any(|w| w.id == s.id));
                        sessions.extend(waiting);
                        super::sort_user_sessions(&mut sessions);
                    }
                    return Ok(sessions);
                }
                Err(e) if e.is_unavailable() => self.note_failure(&e),
                Err(e) => return Err(e),
            }
        }
        self.inner.fallback.user_sessions(user).await
    }

    /// Revokes in both backends (the fallback may hold sessions waiting to move back) and forgets the
    /// user's sessions in the recent-sessions cache, so no later outage restores one. During an outage
    /// the user is remembered, and the sessions the primary still holds (which cannot be listed now)
    /// are revoked at failback, before any of them can be served again.
    async fn revoke_user_sessions(
        &self,
        user: &str,
        keep: Option<&StoreKey>,
    ) -> Result<u64, StoreError> {
        self.recent().remove_user(user, keep);
        if !self.is_on_fallback() {
            match self.inner.primary.revoke_user_sessions(user, keep).await {
                Ok(n) => {
                    let waiting = self
                        .inner
                        .fallback
                        .revoke_user_sessions(user, keep)
                        .await
                        .unwrap_or(0);
                    return Ok(n + waiting);
                }
                Err(e) if e.is_unavailable() => self.note_failure(&e),
                Err(e) => return Err(e),
            }
        }
        self.remember_revoked(user, keep);
        self.inner.fallback.revoke_user_sessions(user, keep).await
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

    /// The primary's nodes, on fallback too: which node is down is what an operator wants to know
    /// then.
    async fn node_health(&self) -> Vec<NodeHealth> {
        self.inner.primary.node_health().await
    }

    async fn redis_node_info(&self) -> Result<Option<RedisNodeInfo>, StoreError> {
        if self.is_on_fallback() {
            Ok(None)
        } else {
            self.inner.primary.redis_node_info().await
        }
    }
}
