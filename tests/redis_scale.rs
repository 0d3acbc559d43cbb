//! Scale check of the Redis store's count and listing with 1,000,000 sessions.
//!
//! Ignored in the regular suite (it loads ~1M keys, about 400 MB in Redis, and takes a minute or
//! two on two cores). Run it with:
//!
//! ```text
//! cargo test --release --test redis_scale -- --ignored --nocapture
//! ```
//!
//! It prints the time of `count` (one `ZCOUNT`), of a 100-entry page at the start and in the middle
//! of the index (the page script plus one `MGET`), of `cleanup` (batched `ZSCAN`/`SCAN` sweeps), and
//! the bytes the index costs per session (`MEMORY USAGE <prefix>index SAMPLES 0`). Set
//! `SCALE_SESSIONS` to load another number of sessions.

mod support;

use serde_json::json;
use sessionforge::expiry::{Clock, SystemClock};
use sessionforge::id::Token;
use sessionforge::store::redis::RedisConfig;
use sessionforge::store::{Record, SessionStore};
use std::time::{Duration, Instant};
use support::RedisServer;

const PREFIX: &str = "djforge:sess:";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "loads 1,000,000 sessions; run with --ignored (see the file's docs)"]
async fn count_and_list_stay_fast_with_a_million_sessions() {
    let n: u64 = std::env::var("SCALE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let server = RedisServer::start();
    let store = RedisConfig::new(server.url())
        .unwrap()
        .with_prefix(PREFIX)
        .with_command_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let index = format!("{PREFIX}index");
    let used = |s: &RedisServer| -> u64 {
        s.cli(&["INFO", "memory"])
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let before = used(&server);

    // Bulk load with the store's layout: SET PX of the record's JSON plus ZADD to the index,
    // pipelined in batches of 10,000.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let now = SystemClock.now();
    let started = Instant::now();
    let mut loaded = 0u64;
    while loaded < n {
        let mut pipe = redis::pipe();
        for i in loaded..(loaded + 10_000).min(n) {
            let key = Token::generate().store_key();
            let ttl = Duration::from_secs(3600) + Duration::from_millis(i % 600_000);
            let mut rec = Record::new(now, now.plus(ttl), now.plus(ttl * 7));
            rec.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0".into());
            rec.user = (i % 3 == 0).then(|| format!("user{i}"));
            rec.data = json!({"visits": i % 50, "theme": "dark"})
                .as_object()
                .unwrap()
                .clone();
            pipe.cmd("SET")
                .arg(format!("{PREFIX}{key}"))
                .arg(rec.to_json())
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .ignore();
            pipe.cmd("ZADD")
                .arg(&index)
                .arg(rec.expires.as_millis())
                .arg(key.as_str())
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
        loaded = (loaded + 10_000).min(n);
    }
    println!("loaded {n} sessions in {:?}", started.elapsed());

    let t = Instant::now();
    let count = store.count().await.unwrap();
    let count_took = t.elapsed();
    assert_eq!(count, n);

    let t = Instant::now();
    let first = store.list(None, 100).await.unwrap();
    let first_took = t.elapsed();
    assert_eq!(first.sessions.len(), 100);

    // A page from the middle: a cursor built from the member at rank n/2.
    let mid = server.cli(&[
        "ZRANGE",
        &index,
        &(n / 2).to_string(),
        &(n / 2).to_string(),
        "WITHSCORES",
    ]);
    let mut mid = mid.lines();
    let (member, score) = (mid.next().unwrap(), mid.next().unwrap());
    let cursor = format!("{score}:{member}");
    let t = Instant::now();
    let middle = store.list(Some(&cursor), 100).await.unwrap();
    let middle_took = t.elapsed();
    assert_eq!(middle.sessions.len(), 100);
    assert!(middle.next_cursor.is_some());

    let index_bytes: u64 = server
        .cli(&["MEMORY", "USAGE", &index, "SAMPLES", "0"])
        .parse()
        .unwrap();
    let sample_key = format!("{PREFIX}{}", first.sessions[0].id);
    let value_bytes: u64 = server
        .cli(&["MEMORY", "USAGE", &sample_key])
        .parse()
        .unwrap();
    let total = used(&server) - before;

    let t = Instant::now();
    let removed = store.cleanup().await.unwrap();
    let cleanup_took = t.elapsed();
    // Nothing was stale: the index is whole after the sweeps.
    assert_eq!(
        server.cli(&["ZCARD", &index]),
        n.to_string(),
        "cleanup keeps the index"
    );
    assert_eq!(removed, 0);
    assert_eq!(store.count().await.unwrap(), n);

    println!("count (ZCOUNT):                 {count_took:?}");
    println!("list first page of 100:         {first_took:?}");
    println!("list middle page of 100:        {middle_took:?}");
    println!("cleanup (ZSCAN+SCAN sweeps):    {cleanup_took:?}");
    println!(
        "index: {index_bytes} bytes = {:.1} bytes/session; one session value: {value_bytes} bytes; \
         used_memory grew by {total} bytes = {:.1} bytes/session",
        index_bytes as f64 / n as f64,
        total as f64 / n as f64
    );
    assert!(count_took < Duration::from_millis(100), "{count_took:?}");
    assert!(first_took < Duration::from_millis(200), "{first_took:?}");
    assert!(middle_took < Duration::from_millis(200), "{middle_took:?}");
}

/// The express format keeps no index of ours (Node would not maintain it): count, listing, a user's
/// sessions and cleanup scan the prefix with cursor-paged `SCAN`, never `KEYS`. This measures what
/// that costs at `SCALE_SESSIONS` (100,000 by default) sessions written the way connect-redis writes
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "loads 100,000 express sessions; run with --ignored (see the file's docs)"]
async fn express_format_scans_cost_at_a_hundred_thousand_sessions() {
    let n: u64 = std::env::var("SCALE_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let server = RedisServer::start();
    let express =
        std::sync::Arc::new(sessionforge::format::Express::new(["keyboard cat"]).unwrap());
    let store = RedisConfig::new(server.url())
        .unwrap()
        .with_prefix(PREFIX)
        .with_format(express)
        .with_command_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let started = Instant::now();
    let mut loaded = 0u64;
    let expires =
        humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_secs(3600));
    while loaded < n {
        let mut pipe = redis::pipe();
        for i in loaded..(loaded + 10_000).min(n) {
            // A 32-character sid, as uid-safe(24) makes them, and connect-redis's value and TTL.
            let token = Token::generate();
            let sid = &token.as_str()[..32];
            let value = json!({
                "cookie": {"originalMaxAge": 3_600_000, "expires": expires.to_string(),
                           "secure": false, "httpOnly": true, "path": "/", "sameSite": "lax"},
                "user": format!("user{}", i % 1000),
                "visits": i % 50,
            });
            pipe.cmd("SET")
                .arg(format!("{PREFIX}{sid}"))
                .arg(value.to_string())
                .arg("EX")
                .arg(3600)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
        loaded = (loaded + 10_000).min(n);
    }
    println!("loaded {n} express sessions in {:?}", started.elapsed());

    let t = Instant::now();
    let count = store.count().await.unwrap();
    let count_took = t.elapsed();
    assert_eq!(count, n);
    let t = Instant::now();
    let first = store.list(None, 100).await.unwrap();
    let first_took = t.elapsed();
    assert_eq!(first.sessions.len(), 100);
    // Follow the cursor for ten more pages.
    let t = Instant::now();
    let mut cursor = first.next_cursor.clone();
    for _ in 0..10 {
        let page = store.list(cursor.as_deref(), 100).await.unwrap();
        cursor = page.next_cursor;
    }
    let pages_took = t.elapsed() / 10;
    let t = Instant::now();
    let mine = store.user_sessions("user7").await.unwrap();
    let user_took = t.elapsed();
    assert_eq!(mine.len() as u64, n / 1000);
    let t = Instant::now();
    let removed = store.cleanup().await.unwrap();
    let cleanup_took = t.elapsed();
    assert_eq!(removed, 0);

    println!("express count (SCAN of every key):       {count_took:?}");
    println!("express list first page of 100:           {first_took:?}");
    println!("express list, next pages (mean):          {pages_took:?}");
    println!("express one user's sessions (SCAN):       {user_took:?}");
    println!("express cleanup (SCAN sweep):             {cleanup_took:?}");
}
