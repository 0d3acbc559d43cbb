//! The failover store over a real redis-server (started, killed, frozen and restarted by the tests) and
//! real files in a tempdir, driven over real HTTP on loopback.

#[path = "support/apps.rs"]
mod apps;
#[path = "support/http.rs"]
mod http_support;
mod support;

use http_support::Browser;
use sessionforge::id::Token;
use sessionforge::shutdown::Shutdown;
use sessionforge::store::redis::{RedisConfig, RedisStore};
use sessionforge::store::{FailoverStore, FileStore, SessionStore};
use sessionforge::SessionLayer;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::RedisServer;

const COMMAND_TIMEOUT: Duration = Duration::from_millis(300);
const CHECK_EVERY: Duration = Duration::from_millis(200);

type Store = FailoverStore<RedisStore, FileStore>;

struct App {
    store: Store,
    addr: SocketAddr,
    shutdown: Shutdown,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn app(redis_port: u16) -> App {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisConfig::new(format!("redis://127.0.0.1:{redis_port}"))
        .unwrap()
        .with_prefix("t:")
        .with_connect_timeout(COMMAND_TIMEOUT)
        .with_command_timeout(COMMAND_TIMEOUT)
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let store = FailoverStore::builder(redis, FileStore::new(dir.path()))
        .with_check_interval(CHECK_EVERY)
        .with_startup_timeout(Duration::from_secs(1))
        .start(&shutdown)
        .await;
    let router = apps::counter().layer(SessionLayer::new(store.clone()).with_shutdown(&shutdown));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let signal = shutdown.signal();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(signal)
            .await
            .unwrap();
    });
    App {
        store,
        addr,
        shutdown,
        server,
        _dir: dir,
    }
}

async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("test took over 60 s")
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// The last failover or failback, as the store's health reports it (`"failover"`, `"failback"`), or
/// `None` when there was none.
async fn last_transition(store: &Store) -> Option<String> {
    let h = store.health().await;
    h.extra
        .get("lastTransition")
        .map(|t| t["kind"].as_str().expect("a transition kind").to_owned())
}

/// What the session directory holds, but the file store's lock directory.
fn session_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".locks")
        .collect()
}

fn store_key(b: &Browser) -> sessionforge::id::StoreKey {
    Token::parse(b.cookie.as_ref().unwrap())
        .unwrap()
        .store_key()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_at_start_files_serve_and_failback_carries_the_sessions_over() {
    bounded(async {
        let mut redis = RedisServer::start();
        redis.kill();
        let app = app(redis.port()).await;
        assert!(app.store.is_on_fallback());
        assert_eq!(app.store.name(), "file");
        assert_eq!(
            last_transition(&app.store).await.as_deref(),
            Some("failover")
        );
        let mut b = Browser::new(app.addr);
        for want in 1..=3 {
            assert_eq!(b.post("/incr", "").await.body, want.to_string());
        }
        let k = store_key(&b);
        assert!(app.store.fallback().load(&k).await.unwrap().is_some());

        redis.restart();
        let ready = Instant::now();
        let store = app.store.clone();
        let took = wait_until("failback", Duration::from_secs(10), || {
            !store.is_on_fallback()
        })
        .await;
        assert!(
            took <= 2 * CHECK_EVERY + Duration::from_millis(300),
            "failback took {took:?} (monitor interval {CHECK_EVERY:?})"
        );
        // The copy follows the switch; wait for it, then look at Redis itself.
        wait_until("migration", Duration::from_secs(5), || {
            redis.cli(&["EXISTS", &format!("t:{}", k.as_str())]) == "1"
        })
        .await;
        let json: serde_json::Value =
            serde_json::from_str(&redis.cli(&["GET", &format!("t:{}", k.as_str())])).unwrap();
        assert_eq!(json["data"]["n"], 3);
        let pttl: i64 = redis
            .cli(&["PTTL", &format!("t:{}", k.as_str())])
            .parse()
            .unwrap();
        assert!(
            pttl > 0,
            "the outage session keeps its remaining TTL: {pttl}"
        );
        wait_until("fallback emptied", Duration::from_secs(5), || {
            session_files(app._dir.path()).is_empty()
        })
        .await;
        // The client carries on, now from Redis.
        assert_eq!(b.post("/incr", "").await.body, "4");
        assert_eq!(app.store.name(), "redis");
        // A failover at startup, then a failback (was: transitions() >= 2).
        assert_eq!(
            last_transition(&app.store).await.as_deref(),
            Some("failback")
        );
        let h = app.store.health().await;
        assert_eq!(h.backend("redis"), Some(true), "{h:?}");
        eprintln!(
            "failback {took:?} after the check could see Redis; total {:?}",
            ready.elapsed()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_fails_no_request_and_loses_no_acknowledged_change() {
    bounded(async {
        let mut redis = RedisServer::start();
        let app = app(redis.port()).await;
        assert!(!app.store.is_on_fallback());
        const CLIENTS: usize = 4;
        const REQUESTS: u64 = 120;
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let mut kill_tx = Some(kill_tx);
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let mut b = Browser::new(app.addr);
            let kill = if c == 0 { kill_tx.take() } else { None };
            clients.push(tokio::spawn(async move {
                let mut kill = kill;
                let mut slowest = Duration::ZERO;
                for want in 1..=REQUESTS {
                    if want == REQUESTS / 3 {
                        if let Some(k) = kill.take() {
                            let _ = k.send(());
                        }
                    }
                    let start = Instant::now();
                    let r = b.post("/incr", "").await;
                    slowest = slowest.max(start.elapsed());
                    assert_eq!(r.status, 200, "request {want}: {}", r.body);
                    assert_eq!(r.body, want.to_string(), "a counter went back");
                }
                (b, slowest)
            }));
        }
        kill_rx.await.unwrap();
        redis.kill();
        let mut browsers = Vec::new();
        let mut slowest = Duration::ZERO;
        for c in clients {
            let (b, s) = c.await.unwrap();
            slowest = slowest.max(s);
            browsers.push(b);
        }
        assert!(app.store.is_on_fallback());
        eprintln!(
            "{} requests, 0 failed, slowest {slowest:?} (command timeout {COMMAND_TIMEOUT:?})",
            CLIENTS as u64 * REQUESTS
        );
        assert!(slowest < COMMAND_TIMEOUT + Duration::from_secs(2));

        // Redis comes back empty (it never persisted): the failback fills it from the files.
        redis.restart();
        let store = app.store.clone();
        wait_until("failback", Duration::from_secs(10), || {
            !store.is_on_fallback()
        })
        .await;
        for b in &mut browsers {
            let k = store_key(b);
            wait_until("migration", Duration::from_secs(5), || {
                redis.cli(&["EXISTS", &format!("t:{}", k.as_str())]) == "1"
            })
            .await;
            assert_eq!(b.get("/read").await.body, REQUESTS.to_string());
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_one_timeout_then_files_answer() {
    bounded(async {
        let redis = RedisServer::start();
        let app = app(redis.port()).await;
        let mut b = Browser::new(app.addr);
        b.post("/incr", "").await;
        redis.pause();
        let start = Instant::now();
        let r = b.post("/incr", "").await;
        let first = start.elapsed();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "2", "carried on from the last known state");
        assert!(
            first < COMMAND_TIMEOUT + Duration::from_secs(1),
            "the request that met the frozen Redis took {first:?}"
        );
        let start = Instant::now();
        assert_eq!(b.post("/incr", "").await.body, "3");
        let next = start.elapsed();
        assert!(
            next < COMMAND_TIMEOUT,
            "later requests skip Redis: {next:?}"
        );
        eprintln!("frozen Redis: first request {first:?}, next {next:?}");
        redis.resume();
        let store = app.store.clone();
        wait_until("failback after SIGCONT", Duration::from_secs(10), || {
            !store.is_on_fallback()
        })
        .await;
        assert_eq!(b.post("/incr", "").await.body, "4");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_persists_every_acknowledged_change() {
    bounded(async {
        let redis = RedisServer::start();
        let app = app(redis.port()).await;
        let mut clients = Vec::new();
        for _ in 0..8 {
            let mut b = Browser::new(app.addr);
            clients.push(tokio::spawn(async move {
                let mut acknowledged = 0u64;
                // Until the server stops answering; bounded by the count too.
                for _ in 0..10_000 {
                    match b.try_send(http::Method::POST, "/incr", None).await {
                        Some(r) if r.status == 200 => acknowledged = r.body.parse().unwrap(),
                        _ => break,
                    }
                }
                (b, acknowledged)
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.shutdown.trigger();
        app.server.await.unwrap();
        let report = app.shutdown.drain(Duration::from_secs(5)).await;
        assert!(report.clean(), "{report:?}");
        let redis_store = app.store.primary().clone();
        let mut total = 0;
        for c in clients {
            let (b, acknowledged) = c.await.unwrap();
            if acknowledged == 0 {
                continue;
            }
            total += acknowledged;
            let rec = redis_store.load(&store_key(&b)).await.unwrap().unwrap();
            assert_eq!(rec.record.data["n"], acknowledged);
        }
        assert!(
            total > 0,
            "the clients got some requests in before shutdown"
        );
        eprintln!("{total} acknowledged increments, all in Redis after shutdown");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_not_an_outage() {
    bounded(async {
        let redis = RedisServer::start();
        let app = app(redis.port()).await;
        let mut b = Browser::new(app.addr);
        for round in 1..=5u64 {
            assert_eq!(b.post("/incr", "").await.body, round.to_string());
            // What a proxy's idle timeout or an operator's CLIENT KILL does to our connection.
            let killed: u64 = redis
                .cli(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
                .parse()
                .unwrap();
            assert!(killed >= 1, "the store's connection was killed");
        }
        assert_eq!(b.post("/incr", "").await.body, "6");
        assert!(!app.store.is_on_fallback());
        assert_eq!(
            last_transition(&app.store).await,
            None,
            "no failover for a dropped connection"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_during_an_outage_is_a_tombstone_in_the_files_and_a_delete_in_redis_at_failback() {
    bounded(async {
        let redis = RedisServer::start();
        let app = app(redis.port()).await;
        let mut b = Browser::new(app.addr);
        assert_eq!(b.post("/incr", "").await.body, "1");
        assert_eq!(b.post("/incr", "").await.body, "2");
        let token = b.cookie.clone().unwrap();
        let k = store_key(&b);
        let rkey = format!("t:{}", k.as_str());
        assert_eq!(redis.cli(&["EXISTS", &rkey]), "1");

        // Frozen, Redis keeps its copy; the logout is served from the files.
        redis.pause();
        let r = b.post("/logout", "").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(app.store.is_on_fallback());
        assert_eq!(b.cookie, None, "the cookie was removed");
        // New: the delete is durable, a tombstone record under the session's key in the fallback's
        // directory; the failover store's own listing and count leave it out.
        let file = app._dir.path().join(format!("{}.json", k.as_str()));
        let stored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(stored["tombstone"], true, "{stored}");
        let page = app.store.fallback().list(None, 10).await.unwrap();
        assert_eq!(page.sessions.len(), 1);
        assert!(page.sessions[0].tombstone);
        assert!(app.store.list(None, 10).await.unwrap().sessions.is_empty());
        assert_eq!(app.store.count().await.unwrap(), 0);
        // The old token is not served during the outage.
        b.cookie = Some(token.clone());
        assert_eq!(b.get("/read").await.body, "0");

        redis.resume();
        let store = app.store.clone();
        wait_until("failback", Duration::from_secs(10), || {
            !store.is_on_fallback()
        })
        .await;
        // The failback carries the delete over to Redis and removes the tombstone.
        wait_until("delete carried over", Duration::from_secs(5), || {
            redis.cli(&["EXISTS", &rkey]) == "0"
        })
        .await;
        wait_until("fallback emptied", Duration::from_secs(5), || {
            session_files(app._dir.path()).is_empty()
        })
        .await;
        b.cookie = Some(token);
        assert_eq!(
            b.get("/read").await.body,
            "0",
            "the deleted session came back"
        );
        assert_eq!(
            last_transition(&app.store).await.as_deref(),
            Some("failback")
        );
    })
    .await
}
