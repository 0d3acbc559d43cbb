//! The Redis store's client-side read cache (RESP3 `CLIENT TRACKING`) on real redis-server processes:
//! two app instances share one Redis, each with its own cache, and neither ever serves a session
//! another instance changed or deleted once Redis has told it so.

#[path = "support/apps.rs"]
mod apps;
#[path = "support/http.rs"]
mod http_support;
mod support;

use http_support::Browser;
use sessionforge::id::Token;
use sessionforge::store::redis::{ReadCacheStats, RedisConfig, RedisStore};
use sessionforge::store::{Record, SessionStore};
use sessionforge::SessionLayer;
use std::net::SocketAddr;
use std::time::Duration;
use support::RedisServer;

/// A store with the default settings: the read cache is on by default (changed in this release).
fn cached_store(server: &RedisServer) -> RedisStore {
    RedisConfig::new(server.url())
        .unwrap()
        .with_prefix("t:")
        .build()
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

    // Changed in this release: writes go through the main connection, and A drops what it wrote
    // from its own cache, so A's next read reads Redis once (a miss) and caches the new value; the
    // read after it is a hit. It is tracked again: a write through B afterwards reaches A.
    let before = stats(&store_a);
    assert_eq!(via_a.get("/read").await.body, "2");
    let after = stats(&store_a);
    assert_eq!(
        (after.hits, after.misses),
        (before.hits, before.misses + 1),
        "a read after its own write goes to Redis once"
    );
    assert_eq!(via_a.get("/read").await.body, "2");
    assert_eq!(stats(&store_a).hits, after.hits + 1, "then it is cached");
    let seen = stats(&store_a).invalidations;
    assert_eq!(via_b.post("/incr", "").await.body, "3");
    until(&store_a, "the invalidation", |s| s.invalidations > seen).await;
    assert_eq!(via_a.get("/read").await.body, "3");
    // Writes alternating between the instances never lose an increment. After each, the other
    // instance holds no stale copy: Redis invalidated the one it had, or it had none (an instance
    // keeps nothing of its own last write, and Redis tracks a key for it only once it reads it).
    for i in 4..10 {
        let (via, other) = if i % 2 == 0 {
            (&mut via_a, &store_b)
        } else {
            (&mut via_b, &store_a)
        };
        let seen = stats(other).invalidations;
        assert_eq!(via.post("/incr", "").await.body, i.to_string());
        until(other, "the invalidation", |s| {
            s.invalidations > seen || s.entries == 0
        })
        .await;
    }
    via_a.cookie = via_b.cookie.clone();

    // B reads the session again and serves it from its cache ...
    assert_eq!(via_b.get("/read").await.body, "9");
    let hits = stats(&store_b).hits;
    assert_eq!(via_b.get("/read").await.body, "9");
    assert_eq!(stats(&store_b).hits, hits + 1, "B holds the session");

    // ... then a logout through A: B's next request with the old cookie finds no session.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_on_by_default_holds_at_most_its_size_and_zero_turns_it_off() {
    let server = RedisServer::start();
    // On by default.
    assert!(cached_store(&server).read_cache_stats().is_some());
    // Off at 0: every load goes to Redis.
    let off = RedisConfig::new(server.url())
        .unwrap()
        .with_prefix("t:")
        .with_read_cache(0)
        .build()
        .unwrap();
    assert_eq!(off.read_cache_stats(), None);

    // A cache of two sessions never holds more than two, however many are read.
    let small = RedisConfig::new(server.url())
        .unwrap()
        .with_prefix("t:")
        .with_read_cache(2)
        .build()
        .unwrap();
    let now = sessionforge::expiry::Clock::now(&sessionforge::expiry::SystemClock);
    let mut keys = Vec::new();
    for i in 0..5 {
        let key = Token::generate().store_key();
        let mut record = Record::new(
            now,
            now.plus(Duration::from_secs(60)),
            now.plus(Duration::from_secs(600)),
        );
        record.data.insert("i".into(), i.into());
        small.create(&key, &record).await.unwrap();
        keys.push(key);
    }
    // The first load opens the tracking connection in the background (which flushes).
    small.load(&keys[0]).await.unwrap().unwrap();
    until(&small, "the tracking connection", |s| s.flushes >= 1).await;
    for _ in 0..2 {
        for (i, key) in keys.iter().enumerate() {
            let loaded = small.load(key).await.unwrap().expect("stored");
            assert_eq!(loaded.record.data["i"], i);
            assert!(stats(&small).entries <= 2, "{:?}", stats(&small));
        }
    }
    let s = stats(&small);
    assert_eq!(s.entries, 2, "{s:?}");
    assert!(s.misses >= 5, "{s:?}");
    // The last key read is cached: reading it again is a hit.
    let hits = s.hits;
    small.load(&keys[4]).await.unwrap().unwrap();
    assert_eq!(stats(&small).hits, hits + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_redis_evicts_is_not_served_from_the_cache() {
    // Under `volatile-ttl`, memory pressure evicts keys with a TTL (sessions) and never the filler.
    let server = RedisServer::with_args(&["--maxmemory-policy", "volatile-ttl"]);
    let store = cached_store(&server);
    let addr = serve(store.clone()).await;
    let mut browser = Browser::new(addr);
    browser.post("/incr", "").await;
    tracking(&mut browser, &store).await;
    assert_eq!(browser.get("/read").await.body, "1");
    let hits = stats(&store).hits;
    assert_eq!(browser.get("/read").await.body, "1");
    assert_eq!(stats(&store).hits, hits + 1, "the session is cached");
    let session = server
        .cli(&["KEYS", "t:*"])
        .lines()
        .find(|k| !k.ends_with("index"))
        .expect("the session's key")
        .to_owned();

    // Redis runs out of memory and evicts the session.
    let seen = stats(&store).invalidations;
    server.cli(&[
        "EVAL",
        "redis.call('SET', KEYS[1], string.rep('x', tonumber(ARGV[1])))",
        "1",
        "filler",
        "4000000",
    ]);
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "1mb"]), "OK");
    server.cli(&["GET", "filler-probe"]);
    assert_eq!(server.cli(&["EXISTS", &session]), "0", "evicted");
    assert_ne!(
        server
            .cli(&["INFO", "stats"])
            .lines()
            .find(|l| l.starts_with("evicted_keys:"))
            .unwrap_or_default()
            .trim(),
        "evicted_keys:0"
    );
    until(&store, "the eviction's invalidation", |s| {
        s.invalidations > seen
    })
    .await;
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
    // The cache does not serve what Redis no longer holds.
    let reply = browser.get("/read").await;
    assert_eq!(reply.body, "0", "an evicted session is not served");
}
