//! [`MemoryStore`]: sessions in process memory, for tests and development.
//!
//! Entries expire (checked on every access and removed by [`ManagedStore::cleanup`]) and the store is
//! bounded: when it is full it first drops expired entries, then the entry closest to expiry, with a
//! warning. Sessions vanish with the process and are not shared between instances: use Redis for that.
//!
//! ```
//! use sessionforge::store::{MemoryStore, ManagedStore, StoreKind};
//!
//! let store = MemoryStore::new().with_capacity(10_000);
//! assert_eq!(store.kind(), StoreKind::Memory);
//! ```

use super::{
    ChangeSet, Created, Loaded, ManagedStore, Page, Record, Saved, SessionStore, StoreError,
    StoreHealth, StoreKind, Summary, Usage, Version,
};
use crate::expiry::{SharedClock, SystemClock};
use crate::id::StoreKey;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug)]
struct Entry {
    /// Shared with the sessions that loaded it and the one that saved it; never changed in place
    /// while shared (a merge copies it first).
    record: Arc<Record>,
    /// Made when the entry is written, so a load hands out a clone of it (no formatting, no allocation).
    version: Version,
}

struct Inner {
    map: Mutex<BTreeMap<StoreKey, Entry>>,
    capacity: usize,
    clock: SharedClock,
    next_version: std::sync::atomic::AtomicU64,
}

/// A version number as text, formatted on the stack (each write makes one).
fn version_text(mut n: u64) -> Version {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Version::new(std::str::from_utf8(&buf[i..]).unwrap_or("0"))
}

/// Sessions in process memory. Cheap to clone; clones share the same map.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store holding at most 100,000 sessions, on the system clock.
    pub fn new() -> Self {
        Self::build(100_000, Arc::new(SystemClock))
    }

    fn build(capacity: usize, clock: SharedClock) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                map: Mutex::new(BTreeMap::new()),
                capacity: capacity.max(1),
                clock,
                next_version: std::sync::atomic::AtomicU64::new(1),
            }),
        }
    }

    /// The same store emptied, holding at most `capacity` sessions.
    #[must_use]
    pub fn with_capacity(self, capacity: usize) -> Self {
        Self::build(capacity, self.inner.clock.clone())
    }

    /// The same store emptied, reading time from `clock` (for tests of expiry).
    #[must_use]
    pub fn with_clock(self, clock: impl crate::expiry::Clock) -> Self {
        Self::build(self.inner.capacity, Arc::new(clock))
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<StoreKey, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (each operation is a single
        // insert or remove), so a poisoned lock is safe to keep using.
        self.inner.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn version(&self) -> Version {
        version_text(
            self.inner
                .next_version
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Makes room for one more entry. Called with the lock held.
    fn make_room(&self, map: &mut BTreeMap<StoreKey, Entry>) {
        if map.len() < self.inner.capacity {
            return;
        }
        let now = self.inner.clock.now();
        map.retain(|_, e| !e.record.is_expired(now));
        if map.len() < self.inner.capacity {
            return;
        }
        if let Some(victim) = map
            .iter()
            .min_by_key(|(_, e)| e.record.expires)
            .map(|(k, _)| *k)
        {
            tracing::warn!(
                capacity = self.inner.capacity,
                "memory session store is full; dropping the session closest to expiry"
            );
            map.remove(&victim);
        }
    }
}

impl SessionStore for MemoryStore {
    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        let now = self.inner.clock.now();
        let mut map = self.map();
        match map.get(key) {
            Some(e) if e.record.is_expired(now) => {
                map.remove(key);
                Ok(None)
            }
            Some(e) => Ok(Some(Loaded {
                record: e.record.clone(),
                version: e.version.clone(),
            })),
            None => Ok(None),
        }
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        let now = self.inner.clock.now();
        let version = self.version();
        let mut map = self.map();
        if let Some(e) = map.get(key) {
            if !e.record.is_expired(now) {
                return Ok(Created::Exists);
            }
        }
        self.make_room(&mut map);
        map.insert(
            *key,
            Entry {
                record: Arc::new(record.clone()),
                version,
            },
        );
        Ok(Created::Created)
    }

    async fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        let now = self.inner.clock.now();
        let version = self.version();
        let mut map = self.map();
        let Some(entry) = map.get_mut(key) else {
            return Ok(Saved::Gone);
        };
        if entry.record.is_expired(now) {
            map.remove(key);
            return Ok(Saved::Gone);
        }
        if *base == entry.version {
            entry.record = Arc::clone(ours);
        } else {
            crate::metrics::Metrics::global().count(crate::metrics::Event::SaveConflict);
            Arc::make_mut(&mut entry.record).merge(changes, ours);
        }
        entry.version = version;
        Ok(Saved::Saved)
    }

    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let now = self.inner.clock.now();
        Ok(self
            .map()
            .remove(key)
            .is_some_and(|e| !e.record.is_expired(now)))
    }

    /// Scans the map under its lock (O(sessions)): there is no separate index to fall out of step.
    async fn user_sessions(&self, user: &str) -> Result<Vec<Summary>, StoreError> {
        let now = self.inner.clock.now();
        let mut sessions: Vec<Summary> = self
            .map()
            .iter()
            .filter(|(_, e)| !e.record.is_expired(now) && e.record.user.as_deref() == Some(user))
            .map(|(k, e)| e.record.summary(*k))
            .collect();
        super::sort_user_sessions(&mut sessions);
        Ok(sessions)
    }

    /// Deletes the user's sessions in one pass under the map's lock.
    async fn revoke_user_sessions(
        &self,
        user: &str,
        keep: Option<&StoreKey>,
    ) -> Result<u64, StoreError> {
        let now = self.inner.clock.now();
        let mut map = self.map();
        let before = map.len();
        let mut expired = 0;
        map.retain(|k, e| {
            let theirs = e.record.user.as_deref() == Some(user) && Some(k) != keep;
            if theirs && e.record.is_expired(now) {
                expired += 1;
            }
            !theirs
        });
        Ok((before - map.len() - expired) as u64)
    }
}

impl ManagedStore for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let now = self.inner.clock.now();
        Ok(self
            .map()
            .values()
            .filter(|e| !e.record.is_expired(now))
            .count() as u64)
    }

    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let now = self.inner.clock.now();
        let start = match cursor.map(StoreKey::parse) {
            Some(Ok(k)) => Bound::Excluded(k),
            Some(Err(_)) => return Err(StoreError::InvalidCursor),
            None => Bound::Unbounded,
        };
        let map = self.map();
        let mut sessions = Vec::new();
        let mut last = None;
        let mut more = false;
        for (k, e) in map.range((start, Bound::Unbounded)) {
            if e.record.is_expired(now) {
                continue;
            }
            if sessions.len() == limit {
                more = true;
                break;
            }
            sessions.push(e.record.summary(*k));
            last = Some(k.as_str().to_owned());
        }
        Ok(Page {
            sessions,
            next_cursor: if more { last } else { None },
        })
    }

    async fn cleanup(&self) -> Result<u64, StoreError> {
        let now = self.inner.clock.now();
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, e| !e.record.is_expired(now));
        Ok((before - map.len()) as u64)
    }

    async fn health(&self) -> StoreHealth {
        StoreHealth {
            serving: StoreKind::Memory,
            healthy: true,
            redis_healthy: None,
            detail: None,
        }
    }

    async fn usage(&self) -> Result<Usage, StoreError> {
        let map = self.map();
        let bytes = map.values().map(|e| e.record.to_json().len() as u64).sum();
        Ok(Usage::Memory {
            entries: map.len() as u64,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_are_their_decimal_text() {
        assert_eq!(version_text(0).as_str(), "0");
        assert_eq!(version_text(7).as_str(), "7");
        assert_eq!(version_text(1234567890).as_str(), "1234567890");
        assert_eq!(version_text(u64::MAX).as_str(), u64::MAX.to_string());
    }
    use crate::expiry::{Clock, ManualClock, Timestamp};
    use crate::id::Token;

    use std::time::Duration;

    use crate::store::test_record as record;

    #[tokio::test]
    async fn entries_expire_on_the_store_clock() {
        let clock = ManualClock::new(Timestamp::from_millis(1_000));
        let store = MemoryStore::new().with_clock(clock.clone());
        let key = Token::generate().store_key();
        store
            .create(&key, &record(clock.now(), Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(store.load(&key).await.unwrap().is_some());
        clock.advance(Duration::from_secs(5));
        assert!(store.load(&key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_full_store_drops_the_session_closest_to_expiry() {
        let clock = ManualClock::new(Timestamp::from_millis(0));
        let store = MemoryStore::new()
            .with_clock(clock.clone())
            .with_capacity(2);
        let (a, b, c) = (
            Token::generate().store_key(),
            Token::generate().store_key(),
            Token::generate().store_key(),
        );
        store
            .create(&a, &record(clock.now(), Duration::from_secs(10)))
            .await
            .unwrap();
        store
            .create(&b, &record(clock.now(), Duration::from_secs(5)))
            .await
            .unwrap();
        store
            .create(&c, &record(clock.now(), Duration::from_secs(20)))
            .await
            .unwrap();
        assert_eq!(store.count().await.unwrap(), 2);
        assert!(store.load(&b).await.unwrap().is_none());
        assert!(store.load(&a).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_save_against_an_old_version_merges_instead_of_overwriting() {
        let store = MemoryStore::new();
        crate::store::assert_stale_saves_merge(&store, crate::expiry::SystemClock.now()).await;
    }

    /// A store holding one live session: the store, its key and the record created.
    async fn one_session() -> (MemoryStore, StoreKey, Record) {
        let store = MemoryStore::new();
        let key = Token::generate().store_key();
        let rec = record(crate::expiry::SystemClock.now(), Duration::from_secs(60));
        store.create(&key, &rec).await.unwrap();
        (store, key, rec)
    }

    #[tokio::test]
    async fn loads_share_the_stored_record_and_no_change_reaches_it_in_place() {
        let (store, key, _) = one_session().await;
        let a = store.load(&key).await.unwrap().unwrap();
        let b = store.load(&key).await.unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&a.record, &b.record),
            "a read copied the record"
        );

        // A request changes its view: copied on write, the stored record stays as it was.
        let mut ours = Arc::clone(&a.record);
        Arc::make_mut(&mut ours)
            .data
            .insert("x".into(), serde_json::json!(1));
        let stored = store.load(&key).await.unwrap().unwrap();
        assert!(!stored.record.data.contains_key("x"));

        // Saved, the store keeps that very record ...
        let mut changes = ChangeSet::default();
        changes
            .entries
            .insert("x".into(), Some(serde_json::json!(1)));
        let saved = store.save(&key, &a.version, &ours, &changes).await.unwrap();
        assert_eq!(saved, Saved::Saved);
        let after = store.load(&key).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&after.record, &ours));
        // ... and a later change through it (a handler's clone of the session outliving its
        // request) copies again instead of writing into the store behind its back.
        Arc::make_mut(&mut ours)
            .data
            .insert("y".into(), serde_json::json!(2));
        let last = store.load(&key).await.unwrap().unwrap();
        assert!(last.record.data.contains_key("x"));
        assert!(!last.record.data.contains_key("y"));

        // A merge (the base version is stale) copies the shared record before changing it.
        let mut other = ChangeSet::default();
        other.entries.insert("z".into(), Some(serde_json::json!(3)));
        let held = Arc::clone(&last.record);
        store.save(&key, &a.version, &ours, &other).await.unwrap();
        assert!(
            !held.data.contains_key("z"),
            "a merge changed a shared record"
        );
        assert!(store
            .load(&key)
            .await
            .unwrap()
            .unwrap()
            .record
            .data
            .contains_key("z"));
    }

    #[tokio::test]
    async fn a_save_after_delete_does_not_resurrect() {
        let (store, key, rec) = one_session().await;
        let base = store.load(&key).await.unwrap().unwrap().version;
        assert!(store.delete(&key).await.unwrap());
        let saved = store
            .save(&key, &base, &Arc::new(rec), &ChangeSet::default())
            .await
            .unwrap();
        assert_eq!(saved, Saved::Gone);
        assert!(store.load(&key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn listing_pages_through_every_session_once() {
        let store = MemoryStore::new();
        let now = crate::expiry::SystemClock.now();
        for _ in 0..25 {
            store
                .create(
                    &Token::generate().store_key(),
                    &record(now, Duration::from_secs(60)),
                )
                .await
                .unwrap();
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = store.list(cursor.as_deref(), 10).await.unwrap();
            assert!(page.sessions.len() <= 10);
            for s in &page.sessions {
                assert!(seen.insert(s.id));
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
    }
}
