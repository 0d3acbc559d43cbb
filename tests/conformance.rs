//! The store conformance kit against every built-in store, on real backends: memory, files in a
//! temporary directory, a real `redis-server` (with and without the read cache), and the failover
//! store over Redis and files.

mod support;

use sessionforge::expiry::ManualClock;
use sessionforge::shutdown::Shutdown;
use sessionforge::store::conformance::Conformance;
use sessionforge::store::redis::RedisConfig;
use sessionforge::store::{FailoverStore, FileStore, MemoryStore, SessionStore};
use std::time::Duration;
use support::RedisServer;

/// The kit with every optional capability a built-in store claims (the user index, listing and
/// cleanup), on the store's clock; tombstones are added where the store keeps them.
fn every_capability<S: SessionStore>(store: S, clock: ManualClock) -> Conformance<S> {
    Conformance::new(store)
        .with_clock(clock)
        .with_user_index()
        .with_listing()
        .with_cleanup()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_conforms() {
    let clock = ManualClock::starting_now();
    let store = MemoryStore::builder().with_clock(clock.clone()).build();
    every_capability(store, clock).with_tombstones().run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let store = FileStore::builder(dir.path())
        .with_clock(clock.clone())
        .build();
    every_capability(store, clock).with_tombstones().run().await;
}

fn redis(
    server: &RedisServer,
    clock: &ManualClock,
    cache: usize,
) -> sessionforge::store::redis::RedisStore {
    RedisConfig::new(server.url())
        .unwrap()
        .with_prefix("kit:")
        .with_clock(clock.clone())
        .with_read_cache(cache)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_conforms_with_its_read_cache() {
    let server = RedisServer::start();
    let clock = ManualClock::starting_now();
    every_capability(redis(&server, &clock, 10_000), clock)
        .with_tombstones()
        .run()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_conforms_without_a_read_cache() {
    let server = RedisServer::start();
    let clock = ManualClock::starting_now();
    every_capability(redis(&server, &clock, 0), clock)
        .with_tombstones()
        .run()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_conforms_under_an_allkeys_eviction_policy() {
    // The index is not trusted then: counts, listings and user lookups scan.
    let server = RedisServer::with_args(&["--maxmemory-policy", "allkeys-lru"]);
    let clock = ManualClock::starting_now();
    every_capability(redis(&server, &clock, 0), clock)
        .with_tombstones()
        .run()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failover_store_conforms_on_its_primary_and_on_its_fallback() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let shutdown = Shutdown::new();
    let store = FailoverStore::builder(
        redis(&server, &clock, 10_000),
        FileStore::builder(dir.path())
            .with_clock(clock.clone())
            .build(),
    )
    .with_check_interval(Duration::from_secs(3600))
    .start(&shutdown)
    .await;
    assert!(!store.is_on_fallback());
    every_capability(store.clone(), clock.clone()).run().await;
    // Down: the same contract from the files.
    let mut server = server;
    server.kill();
    store.check_now().await;
    assert!(store.is_on_fallback());
    every_capability(store, clock).run().await;
}

fn express() -> sessionforge::format::SharedFormat {
    std::sync::Arc::new(sessionforge::format::Express::new(["kit-secret"]).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_conforms_in_the_express_format() {
    // Raw sids as keys, express-session's JSON, no index of ours: counts, listings and a user's
    // sessions come from SCAN.
    let server = RedisServer::start();
    let clock = ManualClock::starting_now();
    let store = RedisConfig::new(server.url())
        .unwrap()
        .with_prefix("djforge:sess:")
        .with_clock(clock.clone())
        .with_format(express())
        .build()
        .unwrap();
    every_capability(store, clock).with_tombstones().run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_store_conforms_in_the_express_format() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let store = FileStore::builder(dir.path())
        .with_clock(clock.clone())
        .with_format(express())
        .build();
    every_capability(store, clock).with_tombstones().run().await;
}
