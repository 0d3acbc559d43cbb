//! Correctness checks of both caches against a real `redis-server`, each on a fresh one: what
//! `tests/redis_cache.rs` asks of ours, asked of redis-rs `cache-aio` too.
//!
//! 1. Another connection's `SET` / `DEL` of a cached key: is it seen by the very next load after the
//!    writer got its reply, and if not, how soon?
//! 2. `FLUSHALL`.
//! 3. A fetch overtaken by an invalidation (the reply is read, then the invalidation, then the fetch
//!    fills the cache): readers and writers hammer a few keys, then the writers stop and every key's
//!    cached value is compared with Redis's. A stale entry here stays: Redis sent its one
//!    invalidation already and tracks the key for that client again only when it reads it from Redis.
//! 4. The tracking connection killed (`CLIENT KILL`), then the key changed.
//! 5. A silent partition (a frozen relay: no FIN, no RST), then the key changed behind it.

use crate::proxy::Proxy;
use crate::sample_record;
use crate::subjects::{self, decode, AioReader, PREFIX};
use crate::support::RedisServer;
use redis::aio::MultiplexedConnection;
use sessionforge::expiry::Timestamp;
use sessionforge::id::{StoreKey, Token};
use sessionforge::store::redis::RedisStore;
use sessionforge::store::{Loaded, SessionStore};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A reader under test.
#[derive(Clone)]
enum Probe {
    Ours(RedisStore),
    /// `cache-aio` on a `ConnectionManager` or a bare `MultiplexedConnection`.
    Aio(AioReader),
}

/// The readers: ours, cache-aio on a `ConnectionManager`, on a bare `MultiplexedConnection`.
fn name(kind: usize) -> &'static str {
    match kind {
        0 => "ours",
        1 => "cache-aio (ConnectionManager)",
        _ => "cache-aio (MultiplexedConnection)",
    }
}

impl Probe {
    async fn new(kind: usize, url: &str) -> Probe {
        match kind {
            0 => {
                let store = subjects::store(url, None);
                // The first load opens the tracking connection in the background.
                let _ = store.load(&Token::generate().store_key()).await;
                let deadline = Instant::now() + Duration::from_secs(10);
                while store.read_cache_stats().is_none_or(|s| s.flushes == 0) {
                    assert!(Instant::now() < deadline, "no tracking connection");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Probe::Ours(store)
            }
            k => Probe::Aio(AioReader::connect(url, k == 1).await.expect("cache-aio")),
        }
    }

    async fn load(&mut self, key: &StoreKey) -> Result<Option<Loaded>, String> {
        match self {
            Probe::Ours(s) => s.load(key).await.map_err(|e| e.to_string()),
            Probe::Aio(r) => r.load(&format!("{PREFIX}{}", key.as_str())).await,
        }
    }

    /// The version loaded (`"-"`: no session), or the error.
    async fn version(&mut self, key: &StoreKey) -> Result<String, String> {
        Ok(self
            .load(key)
            .await?
            .map_or_else(|| "-".to_owned(), |l| l.version.as_str().to_owned()))
    }

    fn hits(&self) -> u64 {
        match self {
            Probe::Ours(s) => s.read_cache_stats().map_or(0, |s| s.hits),
            Probe::Aio(r) => r.stats().map_or(0, |s| s.0),
        }
    }
}

/// Plain RESP2 connection for the writer's side and the truth.
async fn direct(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Writes a session record with version (`lastAccess`) `version` under `key`, as another instance
/// would; answers the version as text.
async fn put(conn: &mut MultiplexedConnection, key: &StoreKey, version: u64) -> String {
    let mut r = sample_record(0);
    r.last_access = Timestamp::from_millis(version);
    let _: () = redis::cmd("SET")
        .arg(format!("{PREFIX}{}", key.as_str()))
        .arg(r.to_json())
        .arg("PX")
        .arg(86_400_000u64)
        .query_async(conn)
        .await
        .expect("SET");
    version.to_string()
}

async fn truth(conn: &mut MultiplexedConnection, key: &StoreKey) -> String {
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("{PREFIX}{}", key.as_str()))
        .query_async(conn)
        .await
        .expect("GET");
    decode(&sessionforge::format::native(), raw.as_deref())
        .map_or_else(|| "-".to_owned(), |l| l.version.as_str().to_owned())
}

fn base_version() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Loads `key` until it answers `want`; answers whether the first load did and how long it took.
async fn until_seen(p: &mut Probe, key: &StoreKey, want: &str) -> (bool, Option<Duration>) {
    let t0 = Instant::now();
    let mut first = true;
    loop {
        let got = p.version(key).await;
        if got.as_deref() == Ok(want) {
            return (first, Some(t0.elapsed()));
        }
        first = false;
        if t0.elapsed() > Duration::from_secs(2) {
            return (false, None);
        }
        // Not a sleep: tokio's timer has 1 ms granularity.
        tokio::task::yield_now().await;
    }
}

struct Seen {
    immediate: usize,
    max_delay: Option<Duration>,
    never: usize,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "next load fresh {} / {ROUNDS}; otherwise fresh within {}; never (2 s) {}",
            self.immediate,
            self.max_delay
                .map_or("–".into(), |d| format!("{:.0} µs", d.as_secs_f64() * 1e6)),
            self.never
        )
    }
}

const ROUNDS: usize = 200;

/// Check 1: another connection's `SET` and `DEL` of a cached key.
async fn set_and_del(kind: usize) -> (String, Seen, Seen, u64) {
    let server = RedisServer::start();
    let mut p = Probe::new(kind, &server.url()).await;
    let mut w = direct(&server.url()).await;
    let (mut set, mut del) = (
        Seen {
            immediate: 0,
            max_delay: None,
            never: 0,
        },
        Seen {
            immediate: 0,
            max_delay: None,
            never: 0,
        },
    );
    let hits0 = p.hits();
    let v0 = base_version();
    let note = |s: &mut Seen, (first, delay): (bool, Option<Duration>)| match (first, delay) {
        (true, _) => s.immediate += 1,
        (false, Some(d)) => s.max_delay = s.max_delay.max(Some(d)),
        (false, None) => s.never += 1,
    };
    for i in 0..ROUNDS as u64 {
        let key = Token::generate().store_key();
        let v1 = put(&mut w, &key, v0 + 10 * i).await;
        // Cached: the second load is a hit.
        assert_eq!(p.version(&key).await.as_deref(), Ok(v1.as_str()));
        assert_eq!(p.version(&key).await.as_deref(), Ok(v1.as_str()));
        let v2 = put(&mut w, &key, v0 + 10 * i + 1).await;
        note(&mut set, until_seen(&mut p, &key, &v2).await);
        // Cached again, then deleted.
        p.version(&key).await.ok();
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{PREFIX}{}", key.as_str()))
            .query_async(&mut w)
            .await
            .unwrap();
        note(&mut del, until_seen(&mut p, &key, "-").await);
    }
    (name(kind).to_owned(), set, del, p.hits() - hits0)
}

/// Check 2: `FLUSHALL` (20 cached sessions): stale answers right after the reply, and 100 ms later.
async fn flushall(kind: usize) -> (usize, usize) {
    let server = RedisServer::start();
    let mut p = Probe::new(kind, &server.url()).await;
    let mut w = direct(&server.url()).await;
    let keys: Vec<StoreKey> = (0..20).map(|_| Token::generate().store_key()).collect();
    for (i, k) in keys.iter().enumerate() {
        put(&mut w, k, base_version() + i as u64).await;
        p.version(k).await.ok();
        p.version(k).await.ok();
    }
    let _: () = redis::cmd("FLUSHALL").query_async(&mut w).await.unwrap();
    let mut first = 0;
    for k in &keys {
        if p.version(k).await.as_deref() != Ok("-") {
            first += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut later = 0;
    for k in &keys {
        if p.version(k).await.as_deref() != Ok("-") {
            later += 1;
        }
    }
    (first, later)
}

/// Check 3: fetches overtaken by invalidations. Answers (stale keys right after the writers stopped
/// and the invalidations drained, stale keys 2 s later, reader loads, writes).
async fn race(kind: usize, secs: f64) -> (usize, usize, u64, u64) {
    const KEYS: usize = 100;
    let server = RedisServer::start();
    let url = server.url();
    let p = Probe::new(kind, &url).await;
    let mut w = direct(&url).await;
    let keys: Arc<Vec<StoreKey>> =
        Arc::new((0..KEYS).map(|_| Token::generate().store_key()).collect());
    let version = Arc::new(AtomicU64::new(base_version()));
    for k in keys.iter() {
        put(&mut w, k, version.fetch_add(1, Ordering::Relaxed)).await;
    }
    let stop_writers = Arc::new(AtomicBool::new(false));
    let stop_readers = Arc::new(AtomicBool::new(false));
    let loads = Arc::new(AtomicU64::new(0));
    let writes = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for t in 0..32u64 {
        let (mut p, keys, stop, loads) =
            (p.clone(), keys.clone(), stop_readers.clone(), loads.clone());
        readers.push(tokio::spawn(async move {
            let mut i = t as usize;
            while !stop.load(Ordering::Relaxed) {
                i = (i * 7 + 13) % KEYS;
                let _ = p.load(&keys[i]).await;
                loads.fetch_add(1, Ordering::Relaxed);
                // A hit never waits: let the connection's reader and the other tasks in, as a
                // server's requests would (a task that never yields would hold its worker).
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut writers = Vec::new();
    for t in 0..2u64 {
        let mut w = direct(&url).await;
        let (keys, stop, version, writes) = (
            keys.clone(),
            stop_writers.clone(),
            version.clone(),
            writes.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut i = t as usize;
            while !stop.load(Ordering::Relaxed) {
                i = (i * 11 + 5) % KEYS;
                put(&mut w, &keys[i], version.fetch_add(1, Ordering::Relaxed)).await;
                writes.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop_writers.store(true, Ordering::Relaxed);
    for h in writers {
        h.await.unwrap();
    }
    // Every invalidation Redis sent is read by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_readers.store(true, Ordering::Relaxed);
    for h in readers {
        h.await.unwrap();
    }
    let mut p = p;
    let mut stale = 0;
    for k in keys.iter() {
        if p.version(k).await.ok() != Some(truth(&mut w, k).await) {
            stale += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut still = 0;
    for k in keys.iter() {
        if p.version(k).await.ok() != Some(truth(&mut w, k).await) {
            still += 1;
        }
    }
    (
        stale,
        still,
        loads.load(Ordering::Relaxed),
        writes.load(Ordering::Relaxed),
    )
}

/// What a run of loads over a window answered after the change.
#[derive(Default)]
struct Window {
    stale: usize,
    fresh: usize,
    errors: usize,
    last_stale: Option<Duration>,
    first_error: Option<String>,
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stale {} / fresh {} / errors {}; last stale answer at {}",
            self.stale,
            self.fresh,
            self.errors,
            self.last_stale
                .map_or("–".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
        )?;
        if let Some(e) = &self.first_error {
            write!(f, " (error: {})", e.chars().take(60).collect::<String>())?;
        }
        Ok(())
    }
}

/// Loads `key` every 50 ms for `secs` (each bounded to 3 s), sorting the answers.
async fn watch(p: &mut Probe, key: &StoreKey, old: &str, new: &str, secs: f64) -> Window {
    let mut out = Window::default();
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() < secs {
        match tokio::time::timeout(Duration::from_secs(3), p.version(key)).await {
            Ok(Ok(v)) if v == old => {
                out.stale += 1;
                out.last_stale = Some(t0.elapsed());
            }
            Ok(Ok(v)) if v == new => out.fresh += 1,
            Ok(Ok(v)) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert(format!("unexpected version {v}"));
            }
            Ok(Err(e)) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
            Err(_) => {
                out.errors += 1;
                out.first_error.get_or_insert("no answer in 3 s".into());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out
}

/// Check 4: the tracking connection killed by the server, then the key changed by another client.
async fn killed(kind: usize) -> Window {
    let server = RedisServer::start();
    let mut p = Probe::new(kind, &server.url()).await;
    let mut w = direct(&server.url()).await;
    let key = Token::generate().store_key();
    let v0 = base_version();
    let old = put(&mut w, &key, v0).await;
    p.version(&key).await.ok();
    p.version(&key).await.ok();
    let clients = server.cli(&["CLIENT", "LIST"]);
    for id in clients
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
    {
        server.cli(&["CLIENT", "KILL", "ID", id]);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let new = put(&mut w, &key, v0 + 1).await;
    watch(&mut p, &key, &old, &new, 2.0).await
}

/// Check 5: a silent partition between the reader and Redis (a frozen relay), then the key changed by
/// another client that still reaches Redis.
async fn partitioned(kind: usize) -> Window {
    let server = RedisServer::start();
    let relay = Proxy::start(server.port()).await;
    let mut p = Probe::new(kind, &relay.url()).await;
    let mut w = direct(&server.url()).await;
    let key = Token::generate().store_key();
    let v0 = base_version();
    let old = put(&mut w, &key, v0).await;
    p.version(&key).await.ok();
    assert_eq!(p.version(&key).await.as_deref(), Ok(old.as_str()));
    relay.freeze();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let new = put(&mut w, &key, v0 + 1).await;
    let out = watch(&mut p, &key, &old, &new, 5.0).await;
    drop(p);
    drop(relay);
    out
}

pub async fn all() {
    println!("## Correctness checks (each on a fresh redis-server)\n");
    let kinds = [0usize, 1, 2];

    println!("### 1. Another connection's SET / DEL of a cached key ({ROUNDS} rounds each)\n");
    println!("| reader | SET | DEL | cache hits |");
    println!("| --- | --- | --- | --- |");
    for k in kinds {
        let (n, set, del, hits) = set_and_del(k).await;
        println!("| {n} | {set} | {del} | {hits} |");
    }

    println!("\n### 2. FLUSHALL (20 cached sessions)\n");
    println!("| reader | stale right after the reply | stale 100 ms later |");
    println!("| --- | --- | --- |");
    for k in kinds {
        let (first, later) = flushall(k).await;
        println!("| {} | {first} / 20 | {later} / 20 |", name(k));
    }

    println!("\n### 3. Fetches overtaken by an invalidation (100 keys, 32 readers, 2 writers, 2 s; 3 rounds)\n");
    println!("| reader | round | loads | writes | stale keys after the writers stopped | still stale 2 s later |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for k in kinds {
        for round in 1..=3 {
            let (stale, still, loads, writes) = race(k, 2.0).await;
            println!(
                "| {} | {round} | {loads} | {writes} | {stale} / 100 | {still} / 100 |",
                name(k)
            );
        }
    }

    println!("\n### 4. Tracking connection killed (CLIENT KILL), then the key changed; loads every 50 ms for 2 s\n");
    println!("| reader | answers after the change |");
    println!("| --- | --- |");
    for k in kinds {
        println!("| {} | {} |", name(k), killed(k).await);
    }

    println!("\n### 5. Silent partition (frozen relay), then the key changed; loads every 50 ms for 5 s\n");
    println!("| reader | answers after the change |");
    println!("| --- | --- |");
    for k in kinds {
        println!("| {} | {} |", name(k), partitioned(k).await);
    }
    println!();
}
