//! The Redis store's client-side read cache (RESP3 `CLIENT TRACKING`) on real redis-server processes:
//! two app instances share one Redis, each with its own cache, and neither ever serves a session
//! another instance changed or deleted once Redis has told it so.

#[path = "support/apps.rs"]
mod apps;
#[path = "support/http.rs"]
mod http_support;
mod support;

use http_support::Browser;
use sessionforge::store::redis::ReadCacheStats;
use sessionforge::store::{RedisConfig, RedisStore};
use sessionforge::SessionLayer;
use std::net::SocketAddr;
use std::time::Duration;
use support::RedisServer;

fn cached_store(server: &RedisServer) -> RedisStore {
    RedisStore::new(
        RedisConfig::new(server.url())
            .unwrap()
            .with_prefix("t:")
            .with_read_cache(100),
    )
    .unwrap()
}

async fn serve(store: RedisStore) -> SocketAddr {
    let app = apps::counter().layer(SessionLayer::new(store).with_secure(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn stats(store: &RedisStore) -> ReadCacheStats {
    store.read_cache_stats().expect("the read cache is on")
}

/// Waits until `cond` holds for the store's cache statistics: Redis pushes invalidations as it runs
/// the write, and the other instance applies them as its connection reads them. The deadline only
/// turns a lost message into a failure instead of a hang.
async fn until(store: &RedisStore, what: &str, cond: impl Fn(ReadCacheStats) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond(stats(store)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {what}: {:?}",
            stats(store)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Makes `browser` load its session through `store`'s instance and waits until that store's tracking
/// connection is open (the first load opens it in the background; opening it empties the cache,
/// which counts as a flush).
async fn tracking(browser: &mut Browser, store: &RedisStore) {
    browser.get("/read").await;
    until(store, "the tracking connection", |s| s.flushes >= 1).await;
}

/// One instance on its own Redis, with a session of `n = 1` that the cache holds and tracks.
async fn warmed() -> (RedisServer, RedisStore, Browser) {
    let server = RedisServer::start();
    let store = cached_store(&server);
    let addr = serve(store.clone()).await;
    let mut browser = Browser::new(addr);
    browser.post("/incr", "").await;
    tracking(&mut browser, &store).await;
    assert_eq!(browser.get("/read").await.body, "1");
    assert_eq!(browser.get("/read").await.body, "1");
    (server, store, browser)
}

fn at(browser: &Browser, addr: SocketAddr) -> Browser {
    let mut b = browser.clone();
    b.base = format!("http://{addr}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_and_a_logout_through_one_instance_are_seen_by_the_other() {
    let server = RedisServer::start();
    let (store_a, store_b) = (cached_store(&server), cached_store(&server));
    let (a, b) = (serve(store_a.clone()).await, serve(store_b.clone()).await);
    let mut via_a = Browser::new(a);
    assert_eq!(via_a.post("/incr", "").await.body, "1");

    // B loads the session once, then answers from its cache: no round trip.
    let mut via_b = at(&via_a, b);
    tracking(&mut via_b, &store_b).await;
    tracking(&mut via_a, &store_a).await;
    assert_eq!(via_b.get("/read").await.body, "1");
    let before = stats(&store_b);
    assert_eq!(via_b.get("/read").await.body, "1");
    assert_eq!(
        stats(&store_b).hits,
        before.hits + 1,
        "second read is a hit"
    );

    // An update through A: Redis invalidates B's copy, and B's next request reads the new value.
    let seen = stats(&store_b).invalidations;
    assert_eq!(via_a.post("/incr", "").await.body, "2");
    until(&store_b, "the invalidation", |s| s.invalidations > seen).await;
    assert_eq!(via_b.get("/read").await.body, "2");
    // ... and caches it again.
    let hits = stats(&store_b).hits;
    assert_eq!(via_b.get("/read").await.body, "2");
    assert_eq!(stats(&store_b).hits, hits + 1);

    // A's own write left A's cache holding the new value (the save re-reads in the same round trip),
    // and still tracked: a write through B afterwards reaches A.
    let hits = stats(&store_a).hits;
    assert_eq!(via_a.get("/read").await.body, "2");
    assert_eq!(
        stats(&store_a).hits,
        hits + 1,
        "a read after a write is a hit"
    );
    let seen = stats(&store_a).invalidations;
    assert_eq!(via_b.post("/incr", "").await.body, "3");
    until(&store_a, "the invalidation", |s| s.invalidations > seen).await;
    assert_eq!(via_a.get("/read").await.body, "3");
    // Writes alternating between the instances never lose an increment.
    for i in 4..10 {
        let (via, other) = if i % 2 == 0 {
            (&mut via_a, &store_b)
        } else {
            (&mut via_b, &store_a)
        };
        let seen = stats(other).invalidations;
        assert_eq!(via.post("/incr", "").await.body, i.to_string());
        until(other, "the invalidation", |s| s.invalidations > seen).await;
    }
    via_a.cookie = via_b.cookie.clone();

    // A logout through A: B's next request with the old cookie finds no session.
    let seen = stats(&store_b).invalidations;
    let old_cookie = via_a.cookie.clone();
    assert_eq!(via_a.post("/logout", "").await.body, "bye");
    assert!(via_a.cookie.is_none(), "A removed the cookie");
    until(&store_b, "the invalidation", |s| s.invalidations > seen).await;
    let mut stale = at(&via_a, b);
    stale.cookie = old_cookie;
    let reply = stale.get("/read").await;
    assert_eq!(reply.body, "0", "B must not serve a destroyed session");
    assert!(
        reply.set_cookies().iter().any(|c| c.contains("Max-Age=0")),
        "B tells the client to drop the dead token: {:?}",
        reply.set_cookies()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_in_redis_itself_reaches_the_cache() {
    let (server, store, mut browser) = warmed().await;
    assert!(stats(&store).hits >= 1);
    // An operator deletes every session key behind the application's back.
    let seen = stats(&store).invalidations;
    let keys = server.cli(&["KEYS", "t:*"]);
    for k in keys.lines().filter(|k| !k.ends_with("index")) {
        server.cli(&["DEL", k]);
    }
    until(&store, "the invalidation", |s| s.invalidations > seen).await;
    assert_eq!(browser.get("/read").await.body, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tracking_connection_empties_the_cache_so_missed_changes_are_not_served() {
    let server = RedisServer::start();
    let (writer, reader) = (cached_store(&server), cached_store(&server));
    let (a, b) = (serve(writer.clone()).await, serve(reader.clone()).await);
    let mut via_a = Browser::new(a);
    via_a.post("/incr", "").await;
    let mut via_b = at(&via_a, b);
    tracking(&mut via_b, &reader).await;
    assert_eq!(via_b.get("/read").await.body, "1");
    assert!(stats(&reader).entries >= 1);

    // The tracking connections are killed: invalidations sent now could be lost, so the reader must
    // forget everything it cached.
    let flushes = stats(&reader).flushes;
    let clients = server.cli(&["CLIENT", "LIST"]);
    let tracking: Vec<&str> = clients
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .collect();
    assert!(!tracking.is_empty(), "no tracking connection in {clients}");
    for id in tracking {
        server.cli(&["CLIENT", "KILL", "ID", id]);
    }
    until(&reader, "the flush", |s| s.flushes > flushes).await;
    assert_eq!(stats(&reader).entries, 0);
    // A change while the reader has no tracking connection is still seen.
    assert_eq!(via_a.post("/incr", "").await.body, "2");
    assert_eq!(via_b.get("/read").await.body, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_empties_the_cache() {
    let (server, store, mut browser) = warmed().await;
    let flushes = stats(&store).flushes;
    server.cli(&["FLUSHALL"]);
    until(&store, "the flush", |s| s.flushes > flushes).await;
    assert_eq!(browser.get("/read").await.body, "0");
}
