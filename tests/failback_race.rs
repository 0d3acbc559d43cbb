//! A regression found by the fault-injection run (`tests/faults.rs`): while the failover store fails
//! back, a session that Redis still holds in its pre-outage state and that was written in files during
//! the outage must be read as the files' newer copy, not Redis's stale one. Otherwise the request
//! writes on top of the stale copy, which then looks newer than the files' copy, and migration drops
//! every change acknowledged during the outage.

#[path = "support/recording.rs"]
mod recording;

use recording::Recording;
use serde_json::json;
use sessionforge::expiry::{Clock, SystemClock};
use sessionforge::id::{StoreKey, Token};
use sessionforge::shutdown::Shutdown;
use sessionforge::store::{
    ChangeSet, Created, FailoverStore, Health, Loaded, MemoryStore, Page, Record, Replaced, Saved,
    SessionStore, StoreError, Summary, Version,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A fallback whose loads can be made to fail while its listing still works: a failback then
/// switches to the primary (it reads the listing first, for the outage's revoke markers) and is cut
/// short when it reads the first session to move.
#[derive(Clone)]
struct FlakyLoads<S> {
    inner: S,
    fail_loads: Arc<AtomicBool>,
}

impl<S: SessionStore> SessionStore for FlakyLoads<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        if self.fail_loads.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                backend: "flaky",
                source: "injected read failure".into(),
            });
        }
        self.inner.load(key).await
    }
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        self.inner.create(key, record).await
    }
    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> Result<Replaced, StoreError> {
        self.inner.replace(key, expected, record).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
    async fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        self.inner.save(key, base, ours, changes).await
    }
    async fn user_sessions(&self, user: &str) -> Result<Vec<Summary>, StoreError> {
        self.inner.user_sessions(user).await
    }
    async fn count(&self) -> Result<u64, StoreError> {
        self.inner.count().await
    }
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        self.inner.list(cursor, limit).await
    }
    async fn health(&self) -> Health {
        self.inner.health().await
    }
    fn clock(&self) -> sessionforge::expiry::SharedClock {
        self.inner.clock()
    }
}

type Fallback = FlakyLoads<Recording<MemoryStore>>;
type Store = FailoverStore<Recording<MemoryStore>, Fallback>;

/// A store over a primary and a fallback that can each be made to fail, serving from the primary.
async fn setup() -> (Store, Recording<MemoryStore>, Fallback, Shutdown) {
    let primary = Recording::new(MemoryStore::new());
    let fallback = FlakyLoads {
        inner: Recording::new(MemoryStore::new()),
        fail_loads: Default::default(),
    };
    let shutdown = Shutdown::new();
    let store = FailoverStore::builder(primary.clone(), fallback.clone())
        .with_check_interval(Duration::from_secs(3600))
        .start(&shutdown)
        .await;
    assert!(!store.is_on_fallback());
    (store, primary, fallback, shutdown)
}

/// A session created `now`, holding `{"a": true}`.
fn before_the_outage(now: sessionforge::expiry::Timestamp) -> Record {
    let mut r = Record::new(
        now,
        now.plus(Duration::from_secs(600)),
        now.plus(Duration::from_secs(6000)),
    );
    r.data = json!({"a": true}).as_object().unwrap().clone();
    r
}

/// The failback starts (the primary is back) but is cut short before it moved the session: first,
/// with the fallback failing altogether, the store stays on the fallback (changed: the switch back
/// waits until the outage's revoke markers can be read from the fallback); then, with only the
/// fallback's reads failing, it switches and the migration stops at the first session.
async fn cut_short_failback(store: &Store, primary: &Recording<MemoryStore>, fallback: &Fallback) {
    primary.fail.store(false, Ordering::SeqCst);
    fallback.inner.fail.store(true, Ordering::SeqCst);
    store.check_now().await;
    fallback.inner.fail.store(false, Ordering::SeqCst);
    assert!(
        store.is_on_fallback(),
        "switched back without reading the fallback"
    );
    fallback.fail_loads.store(true, Ordering::SeqCst);
    store.check_now().await;
    fallback.fail_loads.store(false, Ordering::SeqCst);
    assert!(!store.is_on_fallback());
}

/// The request writes `c` on top of what it loaded; once the failback has run, `a` (before the
/// outage), `b` (during it) and `c` must all be in the primary.
async fn save_c_then_expect_every_change(
    store: &Store,
    key: &sessionforge::id::StoreKey,
    loaded: &sessionforge::store::Loaded,
    now: sessionforge::expiry::Timestamp,
) {
    let mut ours = (*loaded.record).clone();
    ours.last_access = now
        .plus(Duration::from_millis(20))
        .max(loaded.record.last_access.next());
    ours.data.insert("c".into(), json!(true));
    let mut changes = ChangeSet::default();
    changes.entries.insert("c".into(), Some(json!(true)));
    assert_eq!(
        store
            .save(key, &loaded.version, &ours.clone().into(), &changes)
            .await
            .unwrap(),
        Saved::Saved
    );
    store.check_now().await;
    let after = store.primary().load(key).await.unwrap().unwrap().record;
    for k in ["a", "b", "c"] {
        assert!(after.data.contains_key(k), "{k} lost: {:?}", after.data);
    }
}

#[tokio::test]
async fn a_stale_primary_copy_is_not_served_while_the_outage_copy_waits_for_migration() {
    let (store, primary, fallback, _shutdown) = setup().await;

    // Before the outage: the session holds `a` in the primary.
    let key = Token::generate().store_key();
    let now = SystemClock.now();
    let before = before_the_outage(now);
    store.create(&key, &before).await.unwrap();

    // The outage: the primary goes away, the session is written in the fallback (`a` and `b`).
    primary.fail.store(true, Ordering::SeqCst);
    store.check_now().await;
    assert!(store.is_on_fallback());
    let mut during = before.clone();
    during.last_access = now.plus(Duration::from_millis(10));
    during.data.insert("b".into(), json!(true));
    fallback.inner.create(&key, &during).await.unwrap();

    // The primary is back, but the migration is cut short (the fallback hiccups).
    cut_short_failback(&store, &primary, &fallback).await;
    assert!(
        fallback.inner.inner.load(&key).await.unwrap().is_some(),
        "the outage copy still waits in the fallback"
    );

    // A request reads the session now, and writes `c` on top of what it read.
    let loaded = store.load(&key).await.unwrap().expect("the session exists");
    assert!(
        loaded.record.data.contains_key("b"),
        "read the stale pre-outage copy: {:?}",
        loaded.record.data
    );

    // The request saves, the migration finishes; every change is there.
    save_c_then_expect_every_change(&store, &key, &loaded, now).await;
    assert_eq!(store.fallback().count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_save_loaded_from_the_fallback_lands_on_the_outage_copy_after_failback() {
    let (store, primary, fallback, _shutdown) = setup().await;
    let key = Token::generate().store_key();
    let now = SystemClock.now();
    let before = before_the_outage(now);
    store.create(&key, &before).await.unwrap();
    primary.fail.store(true, Ordering::SeqCst);
    store.check_now().await;
    let mut during = before.clone();
    during.last_access = now.plus(Duration::from_millis(10));
    during.data.insert("b".into(), json!(true));
    fallback.inner.create(&key, &during).await.unwrap();

    // A request loads from the fallback during the outage ...
    let loaded = store.load(&key).await.unwrap().expect("the outage copy");
    assert!(loaded.record.data.contains_key("b"));
    // ... the primary comes back and the failback is cut short before this session moved ...
    cut_short_failback(&store, &primary, &fallback).await;
    assert!(fallback.inner.inner.load(&key).await.unwrap().is_some());
    // ... and only then does the request save `c`.
    save_c_then_expect_every_change(&store, &key, &loaded, now).await;
}
