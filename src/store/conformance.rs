//! The conformance kit (feature `test-util`): runs the whole [store contract](super) against a store.
//!
//! ```no_run
//! # #[tokio::main] async fn main() {
//! use sessionforge::expiry::ManualClock;
//! use sessionforge::store::{conformance::Conformance, MemoryStore};
//!
//! let clock = ManualClock::starting_now();
//! let store = MemoryStore::builder().with_clock(clock.clone()).build();
//! Conformance::new(store)
//!     .with_clock(clock)      // the store reads it: expiry is checked too
//!     .with_user_index()      // the capabilities the store claims
//!     .with_listing()
//!     .with_cleanup()
//!     .run()
//!     .await;                 // panics naming the first broken guarantee
//! # }
//! ```
//!
//! What it checks, in order: the round trip and create-if-absent; compare-and-swap (`replace`);
//! delete; concurrent writes to different keys (all land); concurrent increments (all count); no
//! resurrection (a save or renewal after a delete writes nothing); "empty means gone", decided on
//! what is stored; renewal with a concurrent change; and with a clock, expiry. Then each optional
//! capability claimed: tombstones (a failover fallback's: never saved over, never counted); the
//! per-user index and revoke; listing and count; cleanup. A capability not claimed must answer
//! [`StoreError::Unsupported`], never a wrong figure.
//!
//! Give the kit a store of its own (an empty Redis database, a fresh directory): it counts what it
//! finds.

use super::{
    ChangeSet, Created, Record, Renewed, Replaced, Saved, SessionStore, StoreError, Summary,
    Version,
};
use crate::expiry::{ManualClock, Timestamp};
use crate::id::StoreKey;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Concurrent requests in the concurrency checks.
const WRITERS: usize = 16;

/// A run of the contract against a store; see the [module docs](self).
#[must_use]
pub struct Conformance<S> {
    store: Arc<S>,
    clock: Option<ManualClock>,
    users: bool,
    listing: bool,
    cleanup: bool,
    tombstones: bool,
}

impl<S: SessionStore> Conformance<S> {
    /// The core contract, against `store`.
    pub fn new(store: S) -> Self {
        Conformance {
            store: Arc::new(store),
            clock: None,
            users: false,
            listing: false,
            cleanup: false,
            tombstones: false,
        }
    }

    /// The clock the store was built with: expiry is checked too (the clock is moved forward, and for
    /// a backend with its own clock, such as Redis TTLs, the run also waits a second and a half).
    pub fn with_clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The store claims a per-user index: `user_sessions` and revoke are checked.
    pub fn with_user_index(mut self) -> Self {
        self.users = true;
        self
    }

    /// The store claims listing and counting.
    pub fn with_listing(mut self) -> Self {
        self.listing = true;
        self
    }

    /// The store claims cleanup.
    pub fn with_cleanup(mut self) -> Self {
        self.cleanup = true;
        self
    }

    /// The store can serve as a [`FailoverStore`](super::FailoverStore)'s fallback: it keeps
    /// [tombstones](Record::tombstone) as records, never saves over one, and leaves them out of counts
    /// and user listings.
    pub fn with_tombstones(mut self) -> Self {
        self.tombstones = true;
        self
    }

    /// Runs every check; panics with the name of the first guarantee broken.
    pub async fn run(self) {
        self.round_trip().await;
        self.compare_and_swap().await;
        self.delete().await;
        self.disjoint_writes().await;
        self.increments().await;
        self.no_resurrection().await;
        self.empty_means_gone().await;
        self.renewal().await;
        if self.tombstones {
            self.tombstones().await;
        }
        if self.clock.is_some() {
            self.expiry().await;
        }
        self.user_index().await;
        self.listing().await;
        if self.cleanup && self.clock.is_some() {
            self.cleanup().await;
        }
    }

    fn now(&self) -> Timestamp {
        self.store.clock().now()
    }

    /// A fresh key, as the store's format derives one.
    fn key(&self) -> StoreKey {
        let format = self.store.format();
        format.store_key(&format.generate())
    }

    /// A session of `data`, expiring in ten minutes.
    fn record(&self, data: Value) -> Record {
        let now = self.now();
        let mut r = Record::new(
            now,
            now.plus(Duration::from_secs(600)),
            now.plus(Duration::from_secs(3600)),
        );
        r.data = data.as_object().cloned().unwrap_or_default();
        r
    }

    async fn stored(&self, key: &StoreKey) -> (Arc<Record>, Version) {
        let l = self
            .store
            .load(key)
            .await
            .unwrap_or_else(|e| panic!("conformance: load failed: {e}"))
            .unwrap_or_else(|| panic!("conformance: a stored session was not found"));
        (l.record, l.version)
    }

    async fn created(&self, data: Value) -> (StoreKey, Record) {
        let key = self.key();
        let rec = self.record(data);
        assert_eq!(
            self.store.create(&key, &rec).await.expect("create"),
            Created::Created,
            "conformance: create under a fresh key"
        );
        (key, rec)
    }

    /// A session that expires one second from now (by the store's clock).
    async fn created_for_a_second(&self) -> StoreKey {
        let key = self.key();
        let now = self.now();
        let mut rec = Record::new(
            now,
            now.plus(Duration::from_secs(1)),
            now.plus(Duration::from_secs(60)),
        );
        rec.data.insert("x".into(), json!(1));
        self.store.create(&key, &rec).await.unwrap();
        key
    }

    /// A request's view after setting `k` to `v`, as the layer builds it (a later `lastAccess`).
    fn ours(&self, loaded: &Record, changes: &ChangeSet) -> Arc<Record> {
        let mut r = loaded.clone();
        changes.apply(&mut r.data);
        if let Some(user) = &changes.user {
            r.user.clone_from(user);
        }
        r.last_access = self.now().max(loaded.last_access.next());
        Arc::new(r)
    }

    fn set(k: &str, v: Value) -> ChangeSet {
        let mut c = ChangeSet::default();
        c.entries.insert(k.into(), Some(v));
        c
    }

    async fn round_trip(&self) {
        let mut rec = self.record(json!({"visits": 3, "nested": {"a": [1, "x"]}}));
        rec.user = Some("alice".into());
        rec.user_agent = Some("kit/1.0".into());
        let key = self.key();
        assert_eq!(
            self.store.create(&key, &rec).await.unwrap(),
            Created::Created
        );
        let (got, _) = self.stored(&key).await;
        assert_eq!(got.data, rec.data, "conformance: round trip of the data");
        assert_eq!(got.user, rec.user, "conformance: round trip of the user");
        assert_eq!(
            got.user_agent, rec.user_agent,
            "conformance: round trip of the user agent"
        );
        assert_eq!(
            got.expires, rec.expires,
            "conformance: round trip of the expiry"
        );
        // (A create of exactly the stored value may answer Created: a store may take it for a
        // replay of its own create whose answer was lost.)
        let other = self.record(json!({"other": true}));
        assert_eq!(
            self.store.create(&key, &other).await.unwrap(),
            Created::Exists,
            "conformance: create clash: a taken key must answer Exists"
        );
        assert_eq!(self.stored(&key).await.0.data, rec.data);
        assert!(self.store.load(&self.key()).await.unwrap().is_none());
    }

    async fn compare_and_swap(&self) {
        let (key, _) = self.created(json!({"v": 1})).await;
        let (r1, v1) = self.stored(&key).await;
        let changes = Self::set("v", json!(2));
        let r2 = self.ours(&r1, &changes);
        assert_eq!(
            self.store.replace(&key, &v1, Some(&r2)).await.unwrap(),
            Replaced::Replaced,
            "conformance: replace at the stored version"
        );
        let (got, v2) = self.stored(&key).await;
        assert_eq!(got.data["v"], json!(2));
        assert_ne!(v2, v1, "conformance: a write must move the version");
        assert_eq!(
            self.store.replace(&key, &v1, Some(&r1)).await.unwrap(),
            Replaced::Changed,
            "conformance: replace at a stale version must write nothing"
        );
        assert_eq!(self.stored(&key).await.0.data["v"], json!(2));
        assert_eq!(
            self.store
                .replace(&self.key(), &v1, Some(&r1))
                .await
                .unwrap(),
            Replaced::Gone,
            "conformance: replace of an absent key"
        );
        assert_eq!(
            self.store.replace(&key, &v2, None).await.unwrap(),
            Replaced::Replaced,
            "conformance: replace with None removes"
        );
        assert!(self.store.load(&key).await.unwrap().is_none());
    }

    async fn delete(&self) {
        let (key, _) = self.created(json!({"v": 1})).await;
        assert!(
            self.store.delete(&key).await.unwrap(),
            "conformance: delete of a live session"
        );
        assert!(
            !self.store.delete(&key).await.unwrap(),
            "conformance: second delete"
        );
        assert!(self.store.load(&key).await.unwrap().is_none());
    }

    async fn disjoint_writes(&self) {
        let (key, _) = self.created(json!({"base": true})).await;
        let (loaded, base) = self.stored(&key).await;
        let mut tasks = Vec::new();
        for i in 0..WRITERS {
            let store = Arc::clone(&self.store);
            let changes = Self::set(&format!("k{i}"), json!(i));
            let ours = self.ours(&loaded, &changes);
            let base = base.clone();
            tasks.push(tokio::spawn(async move {
                store.save(&key, &base, &ours, &changes).await
            }));
        }
        for t in tasks {
            let saved = t
                .await
                .expect("task")
                .unwrap_or_else(|e| panic!("save: {e}"));
            assert_eq!(saved, Saved::Saved, "conformance: concurrent save");
        }
        let (got, _) = self.stored(&key).await;
        for i in 0..WRITERS {
            assert_eq!(
                got.data.get(&format!("k{i}")),
                Some(&json!(i)),
                "conformance: concurrent writes to different keys must all land"
            );
        }
        assert_eq!(got.data["base"], json!(true));
    }

    async fn increments(&self) {
        let (key, _) = self.created(json!({"n": 0})).await;
        let (loaded, base) = self.stored(&key).await;
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            let store = Arc::clone(&self.store);
            let mut changes = ChangeSet::default();
            changes.increments.insert("n".into(), 1);
            let ours = self.ours(&loaded, &changes);
            let base = base.clone();
            tasks.push(tokio::spawn(async move {
                store.save(&key, &base, &ours, &changes).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task").unwrap(), Saved::Saved);
        }
        assert_eq!(
            self.stored(&key).await.0.data["n"],
            json!(WRITERS),
            "conformance: concurrent increments must all count, once"
        );
    }

    async fn no_resurrection(&self) {
        let (key, _) = self.created(json!({"a": 1})).await;
        let (loaded, base) = self.stored(&key).await;
        assert!(self.store.delete(&key).await.unwrap());
        let changes = Self::set("b", json!(2));
        let ours = self.ours(&loaded, &changes);
        assert_eq!(
            self.store.save(&key, &base, &ours, &changes).await.unwrap(),
            Saved::Gone,
            "conformance: a save after a delete must answer Gone"
        );
        let fresh = self.key();
        assert_eq!(
            self.store
                .renew(&key, &fresh, &base, &ours, &changes)
                .await
                .unwrap(),
            Renewed::Gone,
            "conformance: a renewal after a delete must answer Gone"
        );
        assert!(
            self.store.load(&key).await.unwrap().is_none(),
            "conformance: a deleted session came back"
        );
        assert!(
            self.store.load(&fresh).await.unwrap().is_none(),
            "conformance: a deleted session came back under the renewal's key"
        );
    }

    async fn empty_means_gone(&self) {
        // Alone: removing the last key removes the session.
        let (key, _) = self.created(json!({"x": 1})).await;
        let (loaded, base) = self.stored(&key).await;
        let mut remove = ChangeSet::default();
        remove.entries.insert("x".into(), None);
        let ours = self.ours(&loaded, &remove);
        assert_eq!(
            self.store.save(&key, &base, &ours, &remove).await.unwrap(),
            Saved::Emptied,
            "conformance: a save that empties the session removes it"
        );
        assert!(self.store.load(&key).await.unwrap().is_none());
        // With a concurrent writer's key stored meanwhile, the session stays: emptiness is decided on
        // what is stored.
        let (key, _) = self.created(json!({"x": 1})).await;
        let (loaded, base) = self.stored(&key).await;
        let other = Self::set("y", json!(2));
        let theirs = self.ours(&loaded, &other);
        assert_eq!(
            self.store.save(&key, &base, &theirs, &other).await.unwrap(),
            Saved::Saved
        );
        let ours = self.ours(&loaded, &remove);
        assert_eq!(
            self.store.save(&key, &base, &ours, &remove).await.unwrap(),
            Saved::Saved,
            "conformance: a concurrent writer's key keeps the session"
        );
        assert_eq!(
            Value::Object(self.stored(&key).await.0.data.clone()),
            json!({"y": 2})
        );
    }

    async fn renewal(&self) {
        let (old, _) = self.created(json!({"a": 1})).await;
        let (loaded, base) = self.stored(&old).await;
        // Another request writes after this one loaded.
        let other = Self::set("b", json!(2));
        let theirs = self.ours(&loaded, &other);
        self.store.save(&old, &base, &theirs, &other).await.unwrap();
        let mine = Self::set("c", json!(3));
        let ours = self.ours(&loaded, &mine);
        let new = self.key();
        assert_eq!(
            self.store
                .renew(&old, &new, &base, &ours, &mine)
                .await
                .unwrap(),
            Renewed::Renewed,
            "conformance: renewal"
        );
        assert!(
            self.store.load(&old).await.unwrap().is_none(),
            "conformance: the old key must be gone after a renewal"
        );
        assert_eq!(
            Value::Object(self.stored(&new).await.0.data.clone()),
            json!({"a": 1, "b": 2, "c": 3}),
            "conformance: a renewal keeps the concurrent change"
        );
    }

    async fn tombstones(&self) {
        let key = self.key();
        let now = self.now();
        let mut tomb = Record::new(
            now,
            now.plus(Duration::from_secs(600)),
            now.plus(Duration::from_secs(600)),
        );
        tomb.tombstone = true;
        assert_eq!(
            self.store.create(&key, &tomb).await.unwrap(),
            Created::Created
        );
        let (stored, base) = self.stored(&key).await;
        assert!(
            stored.tombstone,
            "conformance: a tombstone must load as one"
        );
        let live = self.record(json!({"a": 1}));
        assert_eq!(
            self.store.create(&key, &live).await.unwrap(),
            Created::Exists,
            "conformance: nothing may be created over a tombstone"
        );
        let changes = Self::set("a", json!(1));
        let ours = self.ours(&live, &changes);
        let stale = Version::new("stale");
        assert_eq!(
            self.store
                .save(&key, &stale, &ours, &changes)
                .await
                .unwrap(),
            Saved::Gone,
            "conformance: a save must never write over a tombstone"
        );
        let _ = base;
        assert!(self.stored(&key).await.0.tombstone);
        if self.users {
            assert!(
                self.store
                    .user_sessions("")
                    .await
                    .unwrap()
                    .iter()
                    .all(|s| s.id != key),
                "conformance: a tombstone is no user's session"
            );
        }
        if self.listing {
            let before = self.store.count().await.unwrap();
            self.store.delete(&key).await.unwrap();
            assert_eq!(
                self.store.count().await.unwrap(),
                before,
                "conformance: a tombstone is not counted"
            );
        }
    }

    async fn expiry(&self) {
        let clock = self.clock.clone().expect("a clock");
        let key = self.created_for_a_second().await;
        assert!(self.store.load(&key).await.unwrap().is_some());
        clock.advance(Duration::from_secs(2));
        // A backend with its own clock (Redis TTLs) forgets by real time.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            self.store.load(&key).await.unwrap().is_none(),
            "conformance: an expired session must not load"
        );
        let again = self.record(json!({"again": true}));
        assert_eq!(
            self.store.create(&key, &again).await.unwrap(),
            Created::Created,
            "conformance: an expired session's key is free again"
        );
    }

    async fn user_index(&self) {
        let user = format!("kit-user-{}", self.key());
        if !self.users {
            assert!(
                matches!(
                    self.store.user_sessions(&user).await,
                    Err(StoreError::Unsupported { .. })
                ),
                "conformance: a store without a per-user index must answer Unsupported"
            );
            return;
        }
        let mut keys = Vec::new();
        for i in 0..3u64 {
            let key = self.key();
            let mut rec = self.record(json!({"i": i}));
            rec.user = Some(user.clone());
            rec.created_at = Timestamp::from_millis(rec.created_at.as_millis() - (10 - i));
            self.store.create(&key, &rec).await.unwrap();
            keys.push(key);
        }
        let (other, _) = self.created(json!({})).await;
        let listed: Vec<Summary> = self.store.user_sessions(&user).await.unwrap();
        assert_eq!(
            listed.iter().map(|s| s.id).collect::<Vec<_>>(),
            keys,
            "conformance: a user's sessions, every one, oldest first"
        );
        assert!(listed
            .iter()
            .all(|s| s.user.as_deref() == Some(user.as_str())));
        assert_eq!(
            self.store
                .revoke_user_sessions(&user, Some(&keys[1]))
                .await
                .unwrap(),
            2,
            "conformance: revoke ends every other session of the user"
        );
        assert_eq!(
            self.store.user_sessions(&user).await.unwrap().len(),
            1,
            "conformance: the kept session stays"
        );
        assert!(self.store.load(&keys[0]).await.unwrap().is_none());
        assert!(self.store.load(&other).await.unwrap().is_some());
        assert!(self
            .store
            .user_sessions("kit-nobody")
            .await
            .unwrap()
            .is_empty());
    }

    async fn listing(&self) {
        if !self.listing {
            for res in [
                self.store.count().await.map(|_| ()),
                self.store.list(None, 10).await.map(|_| ()),
            ] {
                assert!(
                    matches!(res, Err(StoreError::Unsupported { .. })),
                    "conformance: a store without listing must answer Unsupported"
                );
            }
            return;
        }
        let before = self.store.count().await.unwrap();
        let mut mine = std::collections::HashSet::new();
        for _ in 0..25 {
            mine.insert(self.created(json!({"l": 1})).await.0);
        }
        assert_eq!(
            self.store.count().await.unwrap(),
            before + 25,
            "conformance: count follows creates"
        );
        let mut seen = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let page = self.store.list(cursor.as_deref(), 10).await.unwrap();
            assert!(
                page.sessions.len() <= 10,
                "conformance: a page holds at most `limit`"
            );
            for s in page.sessions.iter().filter(|s| !s.tombstone) {
                assert!(
                    seen.insert(s.id),
                    "conformance: a listing repeated a session"
                );
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert!(
            mine.is_subset(&seen),
            "conformance: a listing must reach every session"
        );
        assert!(
            matches!(
                self.store.list(Some("\u{0}not a cursor\u{0}"), 10).await,
                Err(StoreError::InvalidCursor)
            ),
            "conformance: a cursor the store did not hand out is InvalidCursor"
        );
    }

    async fn cleanup(&self) {
        let clock = self.clock.clone().expect("a clock");
        let key = self.created_for_a_second().await;
        let (live, _) = self.created(json!({"stays": true})).await;
        clock.advance(Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        self.store
            .cleanup()
            .await
            .unwrap_or_else(|e| panic!("conformance: cleanup failed: {e}"));
        assert!(self.store.load(&key).await.unwrap().is_none());
        assert!(
            self.store.load(&live).await.unwrap().is_some(),
            "conformance: cleanup must keep live sessions"
        );
    }
}
