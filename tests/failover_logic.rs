//! The failover store's logic over two memory stores, with a primary that can be switched off. The
//! same store over a real redis-server and real files is tested in `failover.rs`.

#[path = "support/apps.rs"]
mod apps;
#[path = "support/http.rs"]
mod http_support;
#[path = "support/recording.rs"]
mod recording;

use http_support::{serve, Browser};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use recording::Recording;
use sessionforge::expiry::{Clock, SystemClock, Timestamp};
use sessionforge::id::Token;
use sessionforge::shutdown::Shutdown;
use sessionforge::store::{
    FailoverStore, HealthStatus, MemoryStore, Record, SessionStore, Summary,
};
use sessionforge::SessionLayer;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The failover and failback counters this thread emitted since the last look. The store emits
/// through the `metrics` facade; these tests run on a current-thread runtime, so a recorder local to
/// the test's thread sees every transition of the store under test and nothing of other tests.
fn transitions(snapshotter: &Snapshotter) -> (u64, u64) {
    let (mut failovers, mut failbacks) = (0, 0);
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let n = match value {
            DebugValue::Counter(n) => n,
            _ => continue,
        };
        match key.key().name() {
            "sessionforge_failovers_total" => failovers += n,
            "sessionforge_failbacks_total" => failbacks += n,
            _ => {}
        }
    }
    (failovers, failbacks)
}

/// A recorder for this thread until the guard drops, and its snapshotter.
fn record_metrics() -> (Snapshotter, metrics::LocalRecorderGuard<'static>) {
    let recorder: &'static DebuggingRecorder = Box::leak(Box::new(DebuggingRecorder::new()));
    (
        recorder.snapshotter(),
        metrics::set_default_local_recorder(recorder),
    )
}

/// A session record created now, living ten minutes, holding `data`.
fn session(user: Option<&str>, data: serde_json::Value) -> Record {
    let now = SystemClock.now();
    let mut r = Record::new(
        now,
        now.plus(Duration::from_secs(600)),
        now.plus(Duration::from_secs(6000)),
    );
    r.user = user.map(str::to_owned);
    r.data = data.as_object().unwrap().clone();
    r
}

/// Every entry of a store's listing (tombstones included, marked), one page.
async fn listing(store: &impl SessionStore) -> Vec<Summary> {
    let page = store.list(None, 1000).await.unwrap();
    assert!(page.next_cursor.is_none());
    page.sessions
}

type Store = FailoverStore<Recording<MemoryStore>, MemoryStore>;

async fn setup(
    primary_up: bool,
) -> (
    Store,
    Recording<MemoryStore>,
    MemoryStore,
    Browser,
    Shutdown,
) {
    let primary = Recording::new(MemoryStore::new());
    primary.fail.store(!primary_up, Ordering::SeqCst);
    let fallback = MemoryStore::new();
    let shutdown = Shutdown::new();
    let store = FailoverStore::builder(primary.clone(), fallback.clone())
        .with_check_interval(Duration::from_secs(3600))
        .start(&shutdown)
        .await;
    let app = apps::counter().layer(SessionLayer::new(store.clone()));
    let b = Browser::new(serve(app).await);
    (store, primary, fallback, b, shutdown)
}

fn key(b: &Browser) -> sessionforge::id::StoreKey {
    Token::parse(b.cookie.as_ref().unwrap())
        .unwrap()
        .store_key()
}

#[tokio::test]
async fn a_primary_down_at_start_serves_from_the_fallback() {
    let (store, _p, fallback, mut b, _s) = setup(false).await;
    assert!(store.is_on_fallback());
    assert_eq!(store.name(), "memory");
    assert_eq!(b.post("/incr", "").await.body, "1");
    assert!(fallback.load(&key(&b)).await.unwrap().is_some());
    let h = store.health().await;
    // The primary is listed as a backend under its own name (both stores here are "memory").
    assert_eq!(h.backend("memory"), Some(false));
    assert_eq!(h.serving, "memory");
    assert!(h.is_serving(), "{h:?}");
    assert_eq!(h.extra["lastTransition"]["kind"], "failover", "{h:?}");
}

#[tokio::test]
async fn a_request_that_meets_an_outage_is_served_from_the_fallback_without_error() {
    let (metrics, _recording) = record_metrics();
    let (store, primary, fallback, mut b, _s) = setup(true).await;
    assert!(!store.is_on_fallback());
    assert_eq!(b.post("/incr", "").await.body, "1");
    let before = b.cookie.clone();
    assert!(primary.inner.load(&key(&b)).await.unwrap().is_some());
    primary.fail.store(true, Ordering::SeqCst);
    // The load fails on the primary: the store switches and the request goes on in the fallback,
    // from the session's last known state: nothing acknowledged is lost.
    let r = b.post("/incr", "").await;
    assert_eq!(r.status, 200);
    assert!(store.is_on_fallback());
    assert_eq!(transitions(&metrics), (1, 0), "one failover, no failback");
    assert_eq!(r.body, "2");
    assert_eq!(b.cookie, before, "same session, same token");
    assert_eq!(
        fallback.load(&key(&b)).await.unwrap().unwrap().record.data["n"],
        2
    );
    assert_eq!(b.post("/incr", "").await.body, "3");
}

#[tokio::test]
async fn without_the_recent_cache_a_redis_only_session_starts_fresh_during_an_outage() {
    let primary = Recording::new(MemoryStore::new());
    let fallback = MemoryStore::new();
    let shutdown = Shutdown::new();
    let store = FailoverStore::builder(primary.clone(), fallback.clone())
        .with_recent_sessions(0)
        .with_check_interval(Duration::from_secs(3600))
        .start(&shutdown)
        .await;
    let k = Token::generate().store_key();
    let rec = session(None, serde_json::json!({"a": 1}));
    store.create(&k, &rec).await.unwrap();
    assert!(store.load(&k).await.unwrap().is_some());
    primary.fail.store(true, Ordering::SeqCst);
    assert!(store.load(&k).await.unwrap().is_none());
    assert!(store.is_on_fallback());
}

#[tokio::test]
async fn the_recent_cache_follows_merged_saves_and_forgets_deleted_sessions() {
    let (store, primary, _fallback, mut b, _s) = setup(true).await;
    b.post("/incr", "").await;
    let mut other = b.clone();
    // Two writers on one session through the primary, then a logout of a second session.
    b.post("/incr", "").await;
    other.post("/incr", "").await;
    let mut gone = Browser::new(b.base.trim_start_matches("http://").parse().unwrap());
    gone.post("/incr", "").await;
    let gone_token = gone.cookie.clone();
    gone.post("/logout", "").await;
    primary.fail.store(true, Ordering::SeqCst);
    assert_eq!(b.get("/read").await.body, "3");
    assert!(store.is_on_fallback());
    // The logged-out session is not restored from the cache.
    gone.cookie = gone_token;
    assert_eq!(gone.get("/read").await.body, "0");
}

#[tokio::test]
async fn a_session_loaded_just_before_the_outage_is_kept_alive_in_the_fallback() {
    let (store, primary, fallback, _b, _s) = setup(true).await;
    let k = Token::generate().store_key();
    let rec = session(Some("alice"), serde_json::json!({"cart": 3}));
    store.create(&k, &rec).await.unwrap();
    let loaded = store.load(&k).await.unwrap().unwrap();
    primary.fail.store(true, Ordering::SeqCst);
    let mut changes = sessionforge::store::ChangeSet::default();
    changes
        .entries
        .insert("cart".into(), Some(serde_json::json!(4)));
    let mut ours = (*loaded.record).clone();
    changes.apply(&mut ours.data);
    ours.last_access = loaded.record.last_access.next();
    let saved = store
        .save(&k, &loaded.version, &ours.clone().into(), &changes)
        .await
        .unwrap();
    assert_eq!(saved, sessionforge::store::Saved::Saved);
    assert!(store.is_on_fallback());
    let kept = fallback.load(&k).await.unwrap().unwrap().record;
    assert_eq!(kept.data["cart"], 4);
    assert_eq!(kept.user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn failback_moves_outage_sessions_into_the_primary_and_empties_the_fallback() {
    let (store, primary, fallback, mut b, _s) = setup(false).await;
    b.post("/incr", "").await;
    b.post("/incr", "").await;
    let k = key(&b);
    let mut others = Vec::new();
    for _ in 0..7 {
        let mut o = Browser::new(b.base.trim_start_matches("http://").parse().unwrap());
        o.post("/incr", "").await;
        others.push(o);
    }
    assert_eq!(fallback.count().await.unwrap(), 8);
    primary.fail.store(false, Ordering::SeqCst);
    store.check_now().await;
    assert!(!store.is_on_fallback());
    assert_eq!(primary.inner.count().await.unwrap(), 8);
    assert_eq!(fallback.count().await.unwrap(), 0);
    assert_eq!(
        primary.inner.load(&k).await.unwrap().unwrap().record.data["n"],
        2
    );
    // The client carries on, now from the primary.
    assert_eq!(b.post("/incr", "").await.body, "3");
    let h = store.health().await;
    assert_eq!(h.backend("memory"), Some(true), "{h:?}");
    assert_eq!(h.status, HealthStatus::Ok, "{h:?}");
    assert_eq!(h.extra["lastTransition"]["kind"], "failback", "{h:?}");
}

#[tokio::test]
async fn failback_does_not_overwrite_newer_data_in_the_primary() {
    let (store, primary, fallback, _b, _s) = setup(false).await;
    let k = Token::generate().store_key();
    let mk = |at: u64, v: u64| {
        let mut r = session(None, serde_json::json!({ "v": v }));
        r.last_access = Timestamp::from_millis(r.created_at.as_millis() + at);
        r
    };
    // The primary kept a newer copy; the fallback has an older one.
    primary.inner.create(&k, &mk(5_000, 2)).await.unwrap();
    fallback.create(&k, &mk(1_000, 1)).await.unwrap();
    // And the other way round for a second key.
    let k2 = Token::generate().store_key();
    primary.inner.create(&k2, &mk(1_000, 1)).await.unwrap();
    fallback.create(&k2, &mk(5_000, 2)).await.unwrap();
    primary.fail.store(false, Ordering::SeqCst);
    store.check_now().await;
    assert_eq!(
        primary.inner.load(&k).await.unwrap().unwrap().record.data["v"],
        2
    );
    assert_eq!(
        primary.inner.load(&k2).await.unwrap().unwrap().record.data["v"],
        2
    );
}

#[tokio::test]
async fn a_session_deleted_during_the_outage_does_not_come_back_at_failback() {
    let (store, primary, fallback, mut b, _s) = setup(true).await;
    b.post("/incr", "").await;
    let k = key(&b);
    primary.fail.store(true, Ordering::SeqCst);
    store.check_now().await;
    assert!(store.is_on_fallback());
    // An admin deletes the session while Redis is away (it still holds it).
    assert!(store.delete(&k).await.unwrap(), "the session was known");
    // New: the delete is durable, a tombstone in the fallback under the session's key; the
    // failover store's own listing and count leave it out.
    let tombs = listing(&fallback).await;
    assert_eq!(tombs.len(), 1, "{tombs:?}");
    assert_eq!((tombs[0].id, tombs[0].tombstone), (k, true));
    assert!(listing(&store).await.is_empty());
    assert_eq!(store.count().await.unwrap(), 0);
    assert!(store.load(&k).await.unwrap().is_none());
    // The client's next request gets a fresh session, never the deleted one.
    assert_eq!(b.post("/incr", "").await.body, "1");
    assert_ne!(key(&b), k);
    primary.fail.store(false, Ordering::SeqCst);
    store.check_now().await;
    assert!(!store.is_on_fallback());
    assert!(primary.inner.load(&k).await.unwrap().is_none());
    // The tombstone is gone from the fallback with the rest of the outage.
    assert!(listing(&fallback).await.is_empty());
    assert!(store.load(&k).await.unwrap().is_none());
}

#[tokio::test]
async fn a_revoke_during_the_outage_leaves_a_marker_and_reaches_the_primary_at_failback() {
    let (store, primary, fallback, _b, _s) = setup(true).await;
    // Before the outage: two sessions of alice's and one of bob's, in the primary.
    let (a1, a2, bob) = (
        Token::generate().store_key(),
        Token::generate().store_key(),
        Token::generate().store_key(),
    );
    for (k, user) in [(a1, "alice"), (a2, "alice"), (bob, "bob")] {
        store
            .create(&k, &session(Some(user), serde_json::json!({"x": 1})))
            .await
            .unwrap();
    }
    primary.fail.store(true, Ordering::SeqCst);
    store.check_now().await;
    assert!(store.is_on_fallback());
    // "Log out everywhere but here" while the primary is away: a1 is kept.
    store
        .revoke_user_sessions("alice", Some(&a1))
        .await
        .unwrap();
    // New: the revoke is durable, a marker record (a tombstone carrying the user) in the
    // fallback; the failover store's own listing leaves it out.
    let markers: Vec<_> = listing(&fallback)
        .await
        .into_iter()
        .filter(|s| s.tombstone)
        .collect();
    assert_eq!(markers.len(), 1, "{markers:?}");
    assert_eq!(markers[0].user.as_deref(), Some("alice"));
    assert!(
        listing(&store).await.is_empty(),
        "the marker is all there is"
    );
    // The revoked session is not carried on from the recent-state cache.
    assert!(store.load(&a2).await.unwrap().is_none());
    assert!(store.load(&a1).await.unwrap().is_some());

    primary.fail.store(false, Ordering::SeqCst);
    store.check_now().await;
    assert!(!store.is_on_fallback());
    assert!(primary.inner.load(&a2).await.unwrap().is_none(), "revoked");
    assert!(primary.inner.load(&a1).await.unwrap().is_some(), "kept");
    assert!(
        primary.inner.load(&bob).await.unwrap().is_some(),
        "another user"
    );
    assert!(store.load(&a2).await.unwrap().is_none());
    assert!(
        listing(&fallback).await.is_empty(),
        "the marker went at failback"
    );
}

#[tokio::test]
async fn a_request_racing_a_failback_keeps_its_session_whichever_comes_first() {
    let (store, primary, fallback, mut b, _s) = setup(false).await;
    b.post("/incr", "").await;
    let k = key(&b);
    // The request and the failback race: if the switch comes first and the copy later, the lookup
    // misses in the primary and reads through to the fallback; either way the session is found.
    primary.fail.store(false, Ordering::SeqCst);
    let moved_before_copy = store.clone();
    let check = tokio::spawn(async move { moved_before_copy.check_now().await });
    assert_eq!(b.post("/incr", "").await.body, "2");
    check.await.unwrap();
    assert!(fallback.load(&k).await.unwrap().is_none());
    assert_eq!(
        primary.inner.load(&k).await.unwrap().unwrap().record.data["n"],
        2
    );
}

#[tokio::test]
async fn the_monitor_fails_back_by_itself_and_stops_at_shutdown() {
    let primary = Recording::new(MemoryStore::new());
    primary.fail.store(true, Ordering::SeqCst);
    let shutdown = Shutdown::new();
    let store = FailoverStore::builder(primary.clone(), MemoryStore::new())
        .with_check_interval(Duration::from_millis(50))
        .start(&shutdown)
        .await;
    assert!(store.is_on_fallback());
    primary.fail.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.is_on_fallback() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !store.is_on_fallback(),
        "no failback within 5 s at a 50 ms interval"
    );
    let report = shutdown.drain(Duration::from_secs(2)).await;
    assert!(report.clean(), "{report:?}");
}

#[tokio::test]
async fn an_outage_write_in_the_same_millisecond_as_the_primarys_copy_still_wins_at_failback() {
    // A frozen clock: the write before the outage and the one during it share a timestamp, as fast
    // requests do in real life. The outage's copy must not lose the comparison to the stale one.
    let clock = sessionforge::expiry::ManualClock::starting_now();
    let primary = Recording::new(MemoryStore::builder().with_clock(clock.clone()).build());
    let fallback = MemoryStore::builder().with_clock(clock.clone()).build();
    let shutdown = Shutdown::new();
    let store = FailoverStore::builder(primary.clone(), fallback.clone())
        .with_check_interval(Duration::from_secs(3600))
        .start(&shutdown)
        .await;
    // The layer reads the store's clock, which is the primary's.
    let app = apps::counter().layer(SessionLayer::new(store.clone()));
    let mut b = Browser::new(serve(app).await);
    assert_eq!(b.post("/incr", "").await.body, "1");
    primary.fail.store(true, Ordering::SeqCst);
    assert_eq!(b.post("/incr", "").await.body, "2");
    assert!(store.is_on_fallback());
    primary.fail.store(false, Ordering::SeqCst);
    store.check_now().await;
    assert!(!store.is_on_fallback());
    let rec = primary.inner.load(&key(&b)).await.unwrap().unwrap().record;
    assert_eq!(rec.data["n"], 2, "the acknowledged outage write was lost");
    assert_eq!(b.post("/incr", "").await.body, "3");
}

#[tokio::test]
async fn a_session_moved_back_at_failback_carries_on_through_the_next_outage_untouched() {
    let (store, primary, _fallback, mut b, _s) = setup(false).await;
    assert_eq!(b.post("/incr", "").await.body, "1");
    assert_eq!(b.post("/incr", "").await.body, "2");
    // Failback moves it into the primary; nobody uses it there before the next outage.
    primary.fail.store(false, Ordering::SeqCst);
    store.check_now().await;
    assert!(!store.is_on_fallback());
    primary.fail.store(true, Ordering::SeqCst);
    store.check_now().await;
    assert!(store.is_on_fallback());
    // Its state as moved is known: the client carries on instead of starting fresh.
    assert_eq!(b.post("/incr", "").await.body, "3");
}

#[tokio::test]
async fn health_is_degraded_while_failback_cannot_read_the_fallback() {
    let primary = Recording::new(MemoryStore::new());
    primary.fail.store(true, Ordering::SeqCst);
    let fallback = Recording::new(MemoryStore::new());
    let shutdown = Shutdown::new();
    let store = FailoverStore::builder(primary.clone(), fallback.clone())
        .with_check_interval(Duration::from_secs(3600))
        .start(&shutdown)
        .await;
    let app = apps::counter().layer(SessionLayer::new(store.clone()));
    let mut b = Browser::new(serve(app).await);
    assert_eq!(b.post("/incr", "").await.body, "1");
    assert!(store.is_on_fallback());
    // Redis is back, but the fallback's sessions cannot be read: they cannot move yet.
    fallback.fail_loads.store(true, Ordering::SeqCst);
    primary.fail.store(false, Ordering::SeqCst);
    store.check_now().await;
    let h = store.health().await;
    assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
    assert!(
        h.reason
            .as_deref()
            .is_some_and(|r| r.contains("cannot be read")),
        "{h:?}"
    );
    assert!(!store.is_on_fallback());
    // Readable again: the next check finishes the failback and health is ok.
    fallback.fail_loads.store(false, Ordering::SeqCst);
    store.check_now().await;
    assert_eq!(b.post("/incr", "").await.body, "2");
    let h = store.health().await;
    assert_eq!(h.status, HealthStatus::Ok, "{h:?}");
    assert_eq!(primary.inner.count().await.unwrap(), 1);
}
