//! [`FailoverStore`]: a primary store (Redis) when it can, a fallback (files) when it must, and back
//! again by itself. Composes any two stores and reports them by their own names.
//!
//! The store serves from its *primary* and switches to its *fallback*:
//!
//! * **at startup**, when the primary does not answer a health check within a short timeout, with the
//!   warning the original DJForge printed: `⚠️  Redis unavailable, falling back to file-based sessions:
//!   <reason>` (in the stores' own names);
//! * **during a request**, the moment a primary call fails as unavailable, times out or finds the
//!   primary full: that same request is then served from the fallback, so the client sees no error;
//! * **from the health monitor**, which checks the primary every interval and switches before requests
//!   have to pay the timeout.
//!
//! When the monitor finds the primary healthy again, the store **fails back**: new requests go to the
//! primary, and what the outage left in the fallback is carried over: sessions created or written there
//! are copied into the primary (a copy the primary holds with a newer `lastAccess` is kept), sessions
//! deleted during the outage are deleted from the primary, users revoked during the outage have their
//! older sessions revoked there, and the fallback is emptied. Until that is done, any request for a
//! session moves that session first, and no session revoked during the outage is served.
//!
//! # Acknowledged means kept
//!
//! * **Deletes and revokes during an outage are durable**: a delete leaves a tombstone in the fallback
//!   under the session's key (so nothing can create the session there again, from any process), a
//!   revoke leaves a marker; both are ordinary [`Record`]s with [`Record::tombstone`] set, written
//!   before the request is answered.
//! * **Whichever process fails back carries the outage over**, including one that starts on a healthy
//!   primary and finds outage work in its fallback (its own from before a restart, or another
//!   instance's sharing the directory): the health monitor looks for such work on every check.
//! * **One order per session**: every operation on a session (load, save, renewal, delete, and its
//!   migration at failback) holds that session's lock for its whole length, and the switch back to the
//!   primary waits for every operation that began on the fallback, so nothing written to the fallback
//!   is missed by the migration.
//!
//! # What users see
//!
//! * During an outage, sessions this instance served from the primary recently carry on from the
//!   fallback: the store keeps the last state it read or wrote through the primary for each of them (a
//!   bounded cache, [`FailoverConfig::with_recent_sessions`], 10,000 by default). So a single instance
//!   loses no acknowledged change when the primary dies. Sessions this instance has not served (another
//!   instance's, or ones pushed out of the cache) cannot be read until the primary is back: their
//!   clients start fresh sessions, and get their old ones back after failback.
//! * With several instances, the cache only knows this instance's view: a session another instance
//!   deleted shortly before the outage can be carried on here for the outage's duration. Where that
//!   matters more than keeping users logged in through an outage, use `with_recent_sessions(0)`.
//! * **A full primary** (Redis at `maxmemory` under `noeviction`) is treated like an unavailable one:
//!   writes keep working from the fallback (the reasons: logins and saves go on, and nothing is
//!   refused that could be kept), health says `degraded` with the reason, and the store fails back
//!   once the primary reports itself healthy (for Redis: memory below 90% of `maxmemory`).
//! * Every transition is a `tracing` event, counted in the metrics (`sessionforge_failovers_total`,
//!   `sessionforge_failbacks_total`, `sessionforge_store_mode`) and visible in the health and stats
//!   routes (`sessionStore` is the store serving now; the last transition is in the admin's health).

mod fallback;
mod migrate;
mod monitor;
mod outage;
mod recent;

use super::{
    sort_user_sessions, ChangeSet, Created, Health, Loaded, Page, Record, Renewed, Replaced, Saved,
    SessionStore, StoreError, Summary, Usage, Version,
};
use crate::expiry::{SharedClock, Timestamp};
use crate::format::SharedFormat;
use crate::id::StoreKey;
use crate::shutdown::Shutdown;
use fallback::Copy;
use outage::{Revoked, RevokedUsers};
use recent::Recent;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{MutexGuard as KeyGuard, RwLockReadGuard};

/// Per-key locks (striped).
const KEY_LOCK_STRIPES: usize = 256;
/// Attempts of a loop that meets concurrent writers in the fallback.
const ATTEMPTS: usize = 8;

/// Which backend a loaded version came from, kept in the version's text.
const FROM_PRIMARY: &str = "p:";
const FROM_FALLBACK: &str = "f:";

/// Settings of a [`FailoverStore`]: gathered first, then built once ([`FailoverConfig::start`]).
#[must_use]
pub struct FailoverConfig<P, F> {
    primary: P,
    fallback: F,
    check_every: Duration,
    startup_timeout: Duration,
    recent: usize,
    tombstone_ttl: Duration,
}

impl<P, F> std::fmt::Debug for FailoverConfig<P, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverConfig")
            .field("check_every", &self.check_every)
            .field("startup_timeout", &self.startup_timeout)
            .field("recent", &self.recent)
            .field("tombstone_ttl", &self.tombstone_ttl)
            .finish_non_exhaustive()
    }
}

impl<P: SessionStore, F: SessionStore> FailoverConfig<P, F> {
    /// How often the health monitor checks the primary (default 5 s).
    pub fn with_check_interval(mut self, every: Duration) -> Self {
        self.check_every = every.max(Duration::from_millis(10));
        self
    }

    /// How long the startup probe waits for the primary (default 2 s).
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// How many sessions' last known state to keep for carrying them on during an outage (default
    /// 10,000; 0 turns it off). Each costs about the size of its record in memory.
    pub fn with_recent_sessions(mut self, capacity: usize) -> Self {
        self.recent = capacity;
        self
    }

    /// How long a tombstone or revoke marker of an outage is kept when the session's own expiry is not
    /// known (default 7 days: the longest a session lives by default). It is removed at failback.
    pub fn with_tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = ttl;
        self
    }

    /// The store, serving from the primary, with no health monitor: for tests that drive transitions
    /// themselves. Applications call [`FailoverConfig::start`].
    pub fn build(self) -> FailoverStore<P, F> {
        let clock = self.primary.clock();
        FailoverStore {
            inner: Arc::new(Inner {
                check_every: self.check_every,
                startup_timeout: self.startup_timeout,
                tombstone_ttl: self.tombstone_ttl,
                recent: Mutex::new(Recent::new(self.recent)),
                primary: self.primary,
                fallback: self.fallback,
                clock,
                on_fallback: AtomicBool::new(false),
                migrating: AtomicBool::new(false),
                primary_full: AtomicBool::new(false),
                status: Mutex::new(monitor::Status::default()),
                gate: tokio::sync::RwLock::new(()),
                key_locks: (0..KEY_LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                failback: tokio::sync::Mutex::new(()),
                revoked: Mutex::new(RevokedUsers::new()),
            }),
        }
    }

    /// Builds the store, probes the primary (switching to the fallback with the warning line if it
    /// does not answer in time, or carrying over outage work it finds in the fallback if it does), and
    /// spawns the health monitor, which stops when `shutdown` begins. Needs a Tokio runtime.
    pub async fn start(self, shutdown: &Shutdown) -> FailoverStore<P, F> {
        self.build().start(shutdown).await
    }
}

struct Inner<P, F> {
    primary: P,
    fallback: F,
    clock: SharedClock,
    check_every: Duration,
    startup_timeout: Duration,
    tombstone_ttl: Duration,
    on_fallback: AtomicBool,
    /// Outage work is being carried over to the primary.
    migrating: AtomicBool,
    /// The last failover was for a full primary.
    primary_full: AtomicBool,
    /// What the monitor last saw, and the last transition.
    status: Mutex<monitor::Status>,
    /// Held (shared) by every operation for its whole length; the switch back to the primary takes it
    /// exclusively, so no operation that began on the fallback is still writing there when the
    /// migration lists it.
    gate: tokio::sync::RwLock<()>,
    /// One operation per session at a time (striped): loads, saves, deletes and migration.
    key_locks: Box<[tokio::sync::Mutex<()>]>,
    /// One failback at a time.
    failback: tokio::sync::Mutex<()>,
    recent: Mutex<Recent>,
    /// Users revoked during the outage, while their older sessions may still wait in the primary.
    revoked: Mutex<RevokedUsers>,
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
/// let store = FailoverStore::builder(redis, files)
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

/// `v` marked as coming from `origin` (built without a temporary string when short).
fn tag(origin: &str, v: &Version) -> Version {
    let text = v.as_str();
    if origin.len() + text.len() <= Version::INLINE {
        let mut buf = [0u8; Version::INLINE];
        buf[..origin.len()].copy_from_slice(origin.as_bytes());
        buf[origin.len()..origin.len() + text.len()].copy_from_slice(text.as_bytes());
        Version::new(std::str::from_utf8(&buf[..origin.len() + text.len()]).unwrap_or_default())
    } else {
        Version::new(format!("{origin}{text}"))
    }
}

/// The version to hand the backend `origin`, if `base` came from it.
fn untag(base: &Version, origin: &str) -> Option<Version> {
    base.as_str().strip_prefix(origin).map(Version::new)
}

/// Whether a primary failure is a reason to serve from the fallback: it is down, too slow or full.
/// A write whose outcome is unknown is not (the primary answers; writing the change to the fallback
/// could apply it twice): the request fails instead.
fn fails_over(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Unavailable { .. } | StoreError::Timeout { .. } | StoreError::Full { .. }
    )
}

/// The failure of a step that touches both stores, with the side it came from: only the primary
/// failing is a reason to switch back to the fallback.
enum Side {
    Primary(StoreError),
    Fallback(StoreError),
}

impl<P: SessionStore, F: SessionStore> FailoverStore<P, F> {
    /// Settings for a store over `primary` and `fallback`.
    pub fn builder(primary: P, fallback: F) -> FailoverConfig<P, F> {
        FailoverConfig {
            primary,
            fallback,
            check_every: Duration::from_secs(5),
            startup_timeout: Duration::from_secs(2),
            recent: 10_000,
            tombstone_ttl: Duration::from_secs(7 * 24 * 3600),
        }
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

    fn migrating(&self) -> bool {
        self.inner.migrating.load(Ordering::Acquire)
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.inner.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn revoked_users(&self) -> MutexGuard<'_, RevokedUsers> {
        self.inner.revoked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared hold every operation takes (see `Inner::gate`).
    async fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.inner.gate.read().await
    }

    /// The lock of `key`'s stripe.
    async fn lock(&self, key: &StoreKey) -> KeyGuard<'_, ()> {
        self.inner.key_locks[stripe(key)].lock().await
    }

    /// The locks of two keys, in stripe order (one when they share a stripe).
    async fn lock2(&self, a: &StoreKey, b: &StoreKey) -> Vec<KeyGuard<'_, ()>> {
        let mut stripes = [stripe(a), stripe(b)];
        stripes.sort_unstable();
        let mut guards = vec![self.inner.key_locks[stripes[0]].lock().await];
        if stripes[1] != stripes[0] {
            guards.push(self.inner.key_locks[stripes[1]].lock().await);
        }
        guards
    }

    /// While failing back, whether a session the primary answered belongs to a user revoked during the
    /// outage (the failback revokes it there, but requests are served from the primary meanwhile).
    fn revoked_during_outage(&self, key: &StoreKey, record: &Record) -> bool {
        self.migrating() && outage::revoked(&self.revoked_users(), key, record)
    }

    /// The primary's answer to `res`, or `None` when it failed over (the caller goes on with the
    /// fallback).
    fn answered<T>(&self, res: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
        match res {
            Ok(v) => Ok(Some(v)),
            Err(e) if fails_over(&e) => {
                self.fail_over(&e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// While failing back, moves `key`'s outage copy (if any) into the primary before the primary is
    /// used for it. The caller holds the key's lock. When the primary fails meanwhile, the store fails
    /// over: callers check the mode again afterwards.
    async fn settle(&self, key: &StoreKey) -> Result<(), StoreError> {
        if !self.migrating() {
            return Ok(());
        }
        match self.migrate_locked(key).await {
            Ok(_) => Ok(()),
            Err(Side::Primary(e)) if fails_over(&e) => {
                self.fail_over(&e);
                Ok(())
            }
            Err(Side::Primary(e) | Side::Fallback(e)) => Err(e),
        }
    }
}

fn stripe(key: &StoreKey) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish() as usize % KEY_LOCK_STRIPES
}

impl<P: SessionStore, F: SessionStore> SessionStore for FailoverStore<P, F> {
    fn name(&self) -> &'static str {
        if self.is_on_fallback() {
            self.inner.fallback.name()
        } else {
            self.inner.primary.name()
        }
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        let _gate = self.gate().await;
        let _key = self.lock(key).await;
        if !self.is_on_fallback() {
            self.settle(key).await?;
        }
        if !self.is_on_fallback() {
            let primary = &self.inner.primary;
            match self.answered(primary.load(key).await)? {
                // Revoked during the outage: deleted now; if the primary cannot take the delete, the
                // fallback answers (where the revocation is recorded).
                Some(Some(l)) if self.revoked_during_outage(key, &l.record) => {
                    let deleted = self.answered(primary.delete(key).await)?;
                    if deleted.is_some() {
                        return Ok(None);
                    }
                }
                Some(Some(l)) => {
                    let version = tag(FROM_PRIMARY, &l.version);
                    self.recent()
                        .put_version(key, Arc::clone(&l.record), Some(l.version));
                    return Ok(Some(Loaded::new(l.record, version)));
                }
                Some(None) => {
                    // Gone from the primary (expired, deleted elsewhere): not to be carried on.
                    self.recent().ended(key);
                    return Ok(None);
                }
                None => {}
            }
        }
        Ok(match self.fallback_copy(key).await? {
            Copy::Live(l) => Some(Loaded::new(l.record, tag(FROM_FALLBACK, &l.version))),
            Copy::Tomb | Copy::Absent => None,
        })
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        let _gate = self.gate().await;
        let _key = self.lock(key).await;
        if !self.is_on_fallback() {
            match self.answered(self.inner.primary.create(key, record).await)? {
                Some(Created::Created) => {
                    self.recent().put(key, Arc::new(record.clone()));
                    return Ok(Created::Created);
                }
                Some(other) => return Ok(other),
                None => {}
            }
        }
        self.inner.fallback.create(key, record).await
    }

    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> Result<Replaced, StoreError> {
        let _gate = self.gate().await;
        let _key = self.lock(key).await;
        if !self.is_on_fallback() {
            self.settle(key).await?;
        }
        if !self.is_on_fallback() {
            let v = untag(expected, FROM_PRIMARY).unwrap_or_else(Version::none);
            let res = self.inner.primary.replace(key, &v, record).await;
            if let Some(answer) = self.answered(res)? {
                if record.is_none() && answer != Replaced::Changed {
                    self.recent().ended(key);
                } else {
                    self.recent().remove(key);
                }
                return Ok(answer);
            }
        }
        match untag(expected, FROM_FALLBACK) {
            Some(v) => self.inner.fallback.replace(key, &v, record).await,
            None => Ok(Replaced::Changed),
        }
    }

    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let _gate = self.gate().await;
        let _key = self.lock(key).await;
        let known = self.recent().get(key).is_some();
        self.recent().ended(key);
        if !self.is_on_fallback() {
            if let Some(found) = self.answered(self.inner.primary.delete(key).await)? {
                let waiting = self.drop_fallback_copy(key).await?;
                return Ok(found || waiting);
            }
        }
        Ok(self.bury(key).await? || known)
    }

    async fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        let _gate = self.gate().await;
        let _key = self.lock(key).await;
        if !self.is_on_fallback() {
            self.settle(key).await?;
        }
        if !self.is_on_fallback() {
            let v = untag(base, FROM_PRIMARY).unwrap_or_else(Version::none);
            let res = self.inner.primary.save(key, &v, ours, changes).await;
            match self.answered(res)? {
                Some(Saved::Saved) => {
                    self.recent().apply(key, &v, changes, ours);
                    return Ok(Saved::Saved);
                }
                Some(other) => {
                    self.recent().ended(key);
                    return Ok(other);
                }
                None => {}
            }
        }
        let fallback = &self.inner.fallback;
        if let Some(v) = untag(base, FROM_FALLBACK) {
            return fallback.save(key, &v, ours, changes).await;
        }
        // Ended through this store while the request ran (its delete reached the primary, so the
        // fallback holds no tombstone): never carried on.
        if self.recent().has_ended(key, ours) {
            return Ok(Saved::Gone);
        }
        // Loaded from the primary before it went away: carry on from what the fallback holds, the
        // last known state, or this request's view, in that order, and apply the changes to it.
        for _ in 0..ATTEMPTS {
            match self.fallback_copy(key).await? {
                Copy::Live(_) => return fallback.save(key, &Version::none(), ours, changes).await,
                Copy::Tomb => return Ok(Saved::Gone),
                Copy::Absent => {
                    if fallback.create(key, ours).await? == Created::Created {
                        return Ok(Saved::Saved);
                    }
                }
            }
        }
        Err(StoreError::Conflict)
    }

    async fn renew(
        &self,
        old: &StoreKey,
        new: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Renewed, StoreError> {
        let _gate = self.gate().await;
        let _keys = self.lock2(old, new).await;
        if !self.is_on_fallback() {
            self.settle(old).await?;
        }
        if !self.is_on_fallback() {
            let v = untag(base, FROM_PRIMARY).unwrap_or_else(Version::none);
            let res = self.inner.primary.renew(old, new, &v, ours, changes).await;
            if let Some(renewed) = self.answered(res)? {
                let mut recent = self.recent();
                // The old key is over either way (moved, or gone): a request still holding it must
                // not carry it on into the fallback.
                let prior = recent.get_version(old);
                recent.ended(old);
                if renewed == Renewed::Renewed {
                    // What the primary did: the changes applied to what it held.
                    if let Some((prior, version)) = prior {
                        recent.put_version(new, prior, version);
                    }
                    recent.apply(new, &v, changes, ours);
                }
                return Ok(renewed);
            }
        }
        let fallback = &self.inner.fallback;
        let base = match untag(base, FROM_FALLBACK) {
            Some(v) => v,
            None => match self.fallback_copy(old).await? {
                Copy::Live(_) => Version::none(),
                Copy::Tomb => return Ok(Renewed::Gone),
                Copy::Absent if self.recent().has_ended(old, ours) => return Ok(Renewed::Gone),
                Copy::Absent => {
                    // Neither the fallback nor this instance knows the session: it may live only in
                    // the primary. Move this request's view, and let the old key die at failback.
                    if fallback.create(old, ours).await? != Created::Created {
                        return Err(StoreError::Conflict);
                    }
                    Version::none()
                }
            },
        };
        let renewed = fallback.renew(old, new, &base, ours, changes).await?;
        self.recent().ended(old);
        if renewed == Renewed::Renewed {
            // The primary's copy of the old key must not serve the old token after failback.
            self.bury(old).await?;
        }
        Ok(renewed)
    }

    /// From the store serving now. While failing back, the sessions still waiting in the fallback are
    /// listed too (their copy there is the newer one), and sessions revoked during the outage are not.
    async fn user_sessions(&self, user: &str) -> Result<Vec<Summary>, StoreError> {
        let _gate = self.gate().await;
        if !self.is_on_fallback() {
            if let Some(mut sessions) =
                self.answered(self.inner.primary.user_sessions(user).await)?
            {
                if self.migrating() {
                    let waiting = self.inner.fallback.user_sessions(user).await?;
                    let revoked = self.revoked_users();
                    sessions.retain(|s| {
                        !waiting.iter().any(|w| w.id == s.id)
                            && !revoked.get(user).is_some_and(|r| {
                                r.keep.as_ref() != Some(&s.id) && s.created_at <= r.at
                            })
                    });
                    drop(revoked);
                    sessions.extend(waiting);
                    sort_user_sessions(&mut sessions);
                }
                return Ok(sessions);
            }
        }
        self.inner.fallback.user_sessions(user).await
    }

    /// Revokes in both stores and forgets the user's sessions in the recent-state cache, so no later
    /// outage carries one on. During an outage (or while failing back) the revocation is also
    /// remembered durably, and the primary's sessions of the user are revoked at failback before any of
    /// them is served again.
    async fn revoke_user_sessions(
        &self,
        user: &str,
        keep: Option<&StoreKey>,
    ) -> Result<u64, StoreError> {
        let _gate = self.gate().await;
        self.recent().revoked(user, self.now(), keep);
        let revoked = Revoked {
            keep: keep.copied(),
            at: self.now(),
        };
        if !self.is_on_fallback() {
            if self.migrating() {
                self.remember_revoked(user, revoked.clone()).await?;
            }
            let res = self.inner.primary.revoke_user_sessions(user, keep).await;
            if let Some(n) = self.answered(res)? {
                let waiting = match self.inner.fallback.revoke_user_sessions(user, keep).await {
                    Ok(m) => m,
                    Err(e) if e.is_unavailable() && !self.migrating() => 0,
                    Err(e) => return Err(e),
                };
                return Ok(n + waiting);
            }
        }
        self.remember_revoked(user, revoked).await?;
        self.inner.fallback.revoke_user_sessions(user, keep).await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        if !self.is_on_fallback() {
            if let Some(n) = self.answered(self.inner.primary.count().await)? {
                return Ok(n);
            }
        }
        self.inner.fallback.count().await
    }

    /// From the store serving now, tombstones left out.
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let mut page = match self.is_on_fallback() {
            false => match self.answered(self.inner.primary.list(cursor, limit).await)? {
                Some(page) => page,
                None => self.inner.fallback.list(cursor, limit).await?,
            },
            true => self.inner.fallback.list(cursor, limit).await?,
        };
        page.sessions.retain(|s| !s.tombstone);
        Ok(page)
    }

    async fn cleanup(&self) -> Result<u64, StoreError> {
        // Both: the fallback keeps expired files from the last outage until cleaned.
        let fallback = self.inner.fallback.cleanup().await?;
        let primary = if self.is_on_fallback() {
            0
        } else {
            self.answered(self.inner.primary.cleanup().await)?
                .unwrap_or(0)
        };
        Ok(fallback + primary)
    }

    async fn usage(&self) -> Result<Usage, StoreError> {
        if self.is_on_fallback() {
            self.inner.fallback.usage().await
        } else {
            self.inner.primary.usage().await
        }
    }

    async fn health(&self) -> Health {
        self.health_now().await
    }

    async fn info(&self) -> Result<Option<serde_json::Map<String, serde_json::Value>>, StoreError> {
        if self.is_on_fallback() {
            self.inner.fallback.info().await
        } else {
            self.inner.primary.info().await
        }
    }

    fn format(&self) -> SharedFormat {
        self.inner.primary.format()
    }

    fn clock(&self) -> SharedClock {
        self.inner.clock.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_tagged_with_their_origin_and_untagged_only_for_it() {
        let v = Version::new("1752360300000");
        let p = tag(FROM_PRIMARY, &v);
        assert_eq!(p.as_str(), "p:1752360300000");
        assert_eq!(untag(&p, FROM_PRIMARY), Some(v.clone()));
        assert_eq!(untag(&p, FROM_FALLBACK), None);
        let long = Version::new("x".repeat(40));
        assert_eq!(untag(&tag(FROM_FALLBACK, &long), FROM_FALLBACK), Some(long));
    }
}
