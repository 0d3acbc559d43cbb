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
use sessionforge::id::Token;
use sessionforge::shutdown::Shutdown;
use sessionforge::store::{
    ChangeSet, FailoverStore, ManagedStore, MemoryStore, Record, Saved, SessionStore,
};
use std::sync::atomic::Ordering;
use std::time::Duration;

type Store = FailoverStore<Recording<MemoryStore>, Recording<MemoryStore>>;

/// The request writes `c` on top of what it loaded; once the failback has run, `a` (before the
/// outage), `b` (during it) and `c` must all be in the primary.
async fn save_c_then_expect_every_change(
    store: &Store,
    key: &sessionforge::id::StoreKey,
    loaded: &sessionforge::store::Loaded,
    now: sessionforge::expiry::Timestamp,
) {
    let mut ours = (*loaded.record).clone();
    ours.last_access = now.plus(Duration::from_millis(20));
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
    let primary = Recording::new(MemoryStore::new());
    let fallback = Recording::new(MemoryStore::new());
    let shutdown = Shutdown::new();
    let store = FailoverStore::new(primary.clone(), fallback.clone())
        .with_check_interval(Duration::from_secs(3600))
        .start(&shutdown)
        .await;
    assert!(!store.is_on_fallback());

    // Before the outage: the session holds `a` in the primary.
    let key = Token::generate().store_key();
    let now = SystemClock.now();
    let before = Record {
        created_at: now,
        last_access: now,
        expires: now.plus(Duration::from_secs(600)),
        deadline: now.plus(Duration::from_secs(6000)),
        user_agent: None,
        user: None,
        data: json!({"a": true}).as_object().unwrap().clone(),
    };
    store.create(&key, &before).await.unwrap();

    // The outage: the primary goes away, the session is written in the fallback (`a` and `b`).
    primary.fail.store(true, Ordering::SeqCst);
    store.check_now().await;
    assert!(store.is_on_fallback());
    let mut during = before.clone();
    during.last_access = now.plus(Duration::from_millis(10));
    during.data.insert("b".into(), json!(true));
    fallback.inner.create(&key, &during).await.unwrap();

    // The primary is back, but the migration is cut short (the fallback hiccups during its listing).
    primary.fail.store(false, Ordering::SeqCst);
    fallback.fail.store(true, Ordering::SeqCst);
    store.check_now().await;
    fallback.fail.store(false, Ordering::SeqCst);
    assert!(!store.is_on_fallback());

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
    let primary = Recording::new(MemoryStore::new());
    let fallback = Recording::new(MemoryStore::new());
    let shutdown = Shutdown::new();
    let store = FailoverStore::new(primary.clone(), fallback.clone())
        .with_check_interval(Duration::from_secs(3600))
        .start(&shutdown)
        .await;
    let key = Token::generate().store_key();
    let now = SystemClock.now();
    let before = Record {
        created_at: now,
        last_access: now,
        expires: now.plus(Duration::from_secs(600)),
        deadline: now.plus(Duration::from_secs(6000)),
        user_agent: None,
        user: None,
        data: json!({"a": true}).as_object().unwrap().clone(),
    };
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
    primary.fail.store(false, Ordering::SeqCst);
    fallback.fail.store(true, Ordering::SeqCst);
    store.check_now().await;
    fallback.fail.store(false, Ordering::SeqCst);
    assert!(!store.is_on_fallback());
    // ... and only then does the request save `c`.
    save_c_then_expect_every_change(&store, &key, &loaded, now).await;
}
