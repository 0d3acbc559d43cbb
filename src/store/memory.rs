//! [`MemoryStore`]: sessions in process memory, for tests and development.
//!
//! Entries expire (checked on every access and removed by [`SessionStore::cleanup`]) and the store is
//! bounded: when it is full it first drops expired entries, then the entry closest to expiry, with a
//! warning. Sessions vanish with the process and are not shared between instances: use Redis for that.
//!
//! ```
//! use sessionforge::store::{MemoryStore, SessionStore};
//!
//! let store = MemoryStore::builder().with_capacity(10_000).build();
//! assert_eq!(store.name(), "memory");
//! ```

use super::provided::{merged, target};
use super::{
    sort_user_sessions, ChangeSet, Created, Loaded, Page, Record, Renewed, Replaced, Saved,
    SessionStore, StoreError, Summary, Usage, Version,
};
use crate::expiry::{Clock, SharedClock};
use crate::format::SharedFormat;
use crate::id::StoreKey;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug)]
struct Entry {
    /// Shared with the sessions that loaded it and the one that saved it; never changed in place
    /// while shared (a merge copies it first).
    record: Arc<Record>,
    /// Made when the entry is written, so a load hands out a clone of it.
    version: Version,
}

/// Settings of a [`MemoryStore`]: gathered first, then [`built`](MemoryConfig::build) once.
#[derive(Clone)]
#[must_use]
pub struct MemoryConfig {
    capacity: usize,
    clock: SharedClock,
    format: SharedFormat,
}

impl std::fmt::Debug for MemoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryConfig")
            .field("capacity", &self.capacity)
            .field("format", &self.format.name())
            .finish_non_exhaustive()
    }
}

impl MemoryConfig {
    /// At most `capacity` sessions (at least 1; default 100,000).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Reads time from `clock` (tests use [`ManualClock`](crate::expiry::ManualClock)); the layer
    /// over the store reads it too.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Issues and reads tokens of `format` (the memory store keeps records as they are, so only the
    /// format's tokens and keys matter).
    pub fn with_format(mut self, format: SharedFormat) -> Self {
        self.format = format;
        self
    }

    /// The store.
    pub fn build(self) -> MemoryStore {
        MemoryStore {
            inner: Arc::new(Inner {
                map: Mutex::new(BTreeMap::new()),
                config: self,
                next_version: AtomicU64::new(1),
            }),
        }
    }
}

struct Inner {
    map: Mutex<BTreeMap<StoreKey, Entry>>,
    config: MemoryConfig,
    next_version: AtomicU64,
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
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
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

/// Whether `entry` stands for a live session at `now` (not expired, not a tombstone).
fn live(entry: &Entry, now: crate::expiry::Timestamp) -> bool {
    !entry.record.is_expired(now) && !entry.record.tombstone
}

impl MemoryStore {
    /// An empty store with the default settings: at most 100,000 sessions, the system clock.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Settings to adjust before building a store.
    pub fn builder() -> MemoryConfig {
        MemoryConfig {
            capacity: 100_000,
            clock: crate::expiry::system_clock(),
            format: crate::format::native(),
        }
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<StoreKey, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (each operation is a single
        // insert or remove), so a poisoned lock is safe to keep using.
        self.inner.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> crate::expiry::Timestamp {
        self.inner.config.clock.now()
    }

    fn version(&self) -> Version {
        version_text(self.inner.next_version.fetch_add(1, Ordering::Relaxed))
    }

    fn entry(&self, record: Arc<Record>) -> Entry {
        Entry {
            record,
            version: self.version(),
        }
    }

    /// The entry under `key` if it has not expired (an expired one is dropped). Called with the lock.
    fn current<'m>(
        &self,
        map: &'m mut BTreeMap<StoreKey, Entry>,
        key: &StoreKey,
    ) -> Option<&'m mut Entry> {
        if map
            .get(key)
            .is_some_and(|e| e.record.is_expired(self.now()))
        {
            map.remove(key);
        }
        map.get_mut(key)
    }

    /// Makes room for one more entry. Called with the lock held.
    fn make_room(&self, map: &mut BTreeMap<StoreKey, Entry>) {
        let capacity = self.inner.config.capacity;
        if map.len() < capacity {
            return;
        }
        let now = self.now();
        map.retain(|_, e| !e.record.is_expired(now));
        if map.len() < capacity {
            return;
        }
        if let Some(victim) = map
            .iter()
            .min_by_key(|(_, e)| e.record.expires)
            .map(|(k, _)| *k)
        {
            tracing::warn!(
                capacity,
                "memory session store is full; dropping the session closest to expiry"
            );
            map.remove(&victim);
        }
    }

    /// Applies `changes` to `key` under the lock: the provided save in one step.
    fn save_locked(
        &self,
        map: &mut BTreeMap<StoreKey, Entry>,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Saved {
        let Some(entry) = self.current(map, key).filter(|e| !e.record.tombstone) else {
            return Saved::Gone;
        };
        let record = if *base == entry.version {
            Arc::clone(ours)
        } else {
            crate::metrics::save_conflict();
            let mut r = Record::clone(&entry.record);
            r.merge(changes, ours);
            Arc::new(r)
        };
        if target(&record, changes).is_none() {
            map.remove(key);
            return Saved::Emptied;
        }
        *entry = self.entry(record);
        Saved::Saved
    }
}

impl SessionStore for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        let mut map = self.map();
        Ok(self
            .current(&mut map, key)
            .map(|e| Loaded::new(Arc::clone(&e.record), e.version.clone())))
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        let mut map = self.map();
        if self.current(&mut map, key).is_some() {
            return Ok(Created::Exists);
        }
        self.make_room(&mut map);
        let entry = self.entry(Arc::new(record.clone()));
        map.insert(*key, entry);
        Ok(Created::Created)
    }

    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> Result<Replaced, StoreError> {
        let mut map = self.map();
        let Some(entry) = self.current(&mut map, key) else {
            return Ok(Replaced::Gone);
        };
        if entry.version != *expected {
            return Ok(Replaced::Changed);
        }
        match record {
            Some(r) => *entry = self.entry(Arc::new(r.clone())),
            None => {
                map.remove(key);
            }
        }
        Ok(Replaced::Replaced)
    }

    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let now = self.now();
        Ok(self.map().remove(key).is_some_and(|e| live(&e, now)))
    }

    /// Compares and writes under the map's lock, keeping the `ours` record it is given.
    async fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        Ok(self.save_locked(&mut self.map(), key, base, ours, changes))
    }

    /// Moves the session under the map's lock: atomic, so no writer ever sees it in both places.
    async fn renew(
        &self,
        old: &StoreKey,
        new: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Renewed, StoreError> {
        let mut map = self.map();
        if self.current(&mut map, new).is_some() {
            return Err(StoreError::Conflict);
        }
        let current = self
            .current(&mut map, old)
            .map(|e| Loaded::new(Arc::clone(&e.record), e.version.clone()));
        let record = match current {
            Some(c) if c.version == *base && !c.record.tombstone => Arc::clone(ours),
            other => match merged(other, changes, ours) {
                Some((r, _)) => r,
                None => return Ok(Renewed::Gone),
            },
        };
        map.remove(old);
        let entry = self.entry(record);
        map.insert(*new, entry);
        Ok(Renewed::Renewed)
    }

    /// Scans the map under its lock (O(sessions)): there is no separate index to fall out of step.
    async fn user_sessions(&self, user: &str) -> Result<Vec<Summary>, StoreError> {
        let now = self.now();
        let mut sessions: Vec<Summary> = self
            .map()
            .iter()
            .filter(|(_, e)| live(e, now) && e.record.user.as_deref() == Some(user))
            .map(|(k, e)| e.record.summary(*k))
            .collect();
        sort_user_sessions(&mut sessions);
        Ok(sessions)
    }

    /// Deletes the user's sessions in one pass under the map's lock.
    async fn revoke_user_sessions(
        &self,
        user: &str,
        keep: Option<&StoreKey>,
    ) -> Result<u64, StoreError> {
        let now = self.now();
        let mut revoked = 0;
        self.map().retain(|k, e| {
            let theirs = live(e, now) && e.record.user.as_deref() == Some(user) && Some(k) != keep;
            revoked += u64::from(theirs);
            !theirs
        });
        Ok(revoked)
    }

    async fn count(&self) -> Result<u64, StoreError> {
        let now = self.now();
        Ok(self.map().values().filter(|e| live(e, now)).count() as u64)
    }

    /// Pages in key order (tombstones included, marked); the cursor is the last key of the previous
    /// page.
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let now = self.now();
        let start = match cursor.map(StoreKey::parse) {
            Some(Ok(k)) => Bound::Excluded(k),
            Some(Err(_)) => return Err(StoreError::InvalidCursor),
            None => Bound::Unbounded,
        };
        let map = self.map();
        let mut sessions = Vec::new();
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
        }
        let next = more
            .then(|| sessions.last().map(|s: &Summary| s.id.as_str().to_owned()))
            .flatten();
        Ok(Page::new(sessions, next))
    }

    async fn cleanup(&self) -> Result<u64, StoreError> {
        let now = self.now();
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, e| !e.record.is_expired(now));
        Ok((before - map.len()) as u64)
    }

    async fn usage(&self) -> Result<Usage, StoreError> {
        let map = self.map();
        let bytes: u64 = map.values().map(|e| e.record.to_json().len() as u64).sum();
        Ok(Usage::new("memoryUsage")
            .with("used_memory", bytes.to_string())
            .with("used_memory_human", super::human_bytes(bytes))
            .with("entries", map.len().to_string()))
    }

    fn format(&self) -> SharedFormat {
        self.inner.config.format.clone()
    }

    fn clock(&self) -> SharedClock {
        self.inner.config.clock.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiry::{ManualClock, Timestamp};
    use crate::id::Token;
    use crate::store::test_record as record;
    use std::time::Duration;

    #[test]
    fn version_numbers_are_their_decimal_text() {
        assert_eq!(version_text(0).as_str(), "0");
        assert_eq!(version_text(7).as_str(), "7");
        assert_eq!(version_text(1234567890).as_str(), "1234567890");
        assert_eq!(version_text(u64::MAX).as_str(), u64::MAX.to_string());
    }

    #[tokio::test]
    async fn entries_expire_on_the_store_clock() {
        let clock = ManualClock::new(Timestamp::from_millis(1_000));
        let store = MemoryStore::builder().with_clock(clock.clone()).build();
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
        let store = MemoryStore::builder()
            .with_clock(clock.clone())
            .with_capacity(2)
            .build();
        let (a, b, c) = (
            Token::generate().store_key(),
            Token::generate().store_key(),
            Token::generate().store_key(),
        );
        for (k, secs) in [(&a, 10), (&b, 5), (&c, 20)] {
            store
                .create(k, &record(clock.now(), Duration::from_secs(secs)))
                .await
                .unwrap();
        }
        assert_eq!(store.count().await.unwrap(), 2);
        assert!(store.load(&b).await.unwrap().is_none());
        assert!(store.load(&a).await.unwrap().is_some());
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

    #[cfg(feature = "test-util")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_memory_store_keeps_the_whole_contract() {
        let clock = ManualClock::starting_now();
        let store = MemoryStore::builder().with_clock(clock.clone()).build();
        crate::store::conformance::Conformance::new(store)
            .with_clock(clock)
            .with_user_index()
            .with_listing()
            .with_cleanup()
            .with_tombstones()
            .run()
            .await;
    }
}
