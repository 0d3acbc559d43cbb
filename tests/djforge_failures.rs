//! Failure semantics on real processes: the djforge example binary and `redis-server`s frozen
//! (SIGSTOP), resumed, filled up and restarted. Nothing acknowledged is undone or stranded across a
//! restart, with one instance or several sharing a directory; a revoke never silently misses a live
//! session under any `maxmemory-policy`; what is accepted can be read back; a full Redis says so;
//! startup errors name what to fix.

#[path = "support/djforge.rs"]
mod djforge_support;
#[path = "support/http.rs"]
mod http_support;
mod support;

use djforge_support::Process;
use http::{Method, StatusCode};
use http_support::Browser;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::RedisServer;

fn spawn(redis: &RedisServer, dir: &Path) -> Process {
    let port = redis.port().to_string();
    Process::spawn(&[
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", &port),
        ("SESSION_DIR", dir.to_str().unwrap()),
    ])
}

fn stop(app: &mut Process) {
    app.signal("-TERM");
    let exit = app
        .wait(Duration::from_secs(20))
        .expect("djforge stops on SIGTERM");
    assert!(exit.success(), "{exit:?} {:?}", app.stderr());
}

/// Session files and outage markers left in the directory (not the lock files).
fn outage_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect()
}

async fn wait_until_empty(dir: &Path, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = outage_files(dir);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn at(b: &Browser, addr: SocketAddr) -> Browser {
    let mut other = Browser::new(addr);
    other.cookie = b.cookie.clone();
    other
}

#[test]
fn a_logout_during_an_outage_survives_a_restart_and_the_directory_empties() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut a = spawn(&redis, dir.path());
    let old = rt.block_on(async {
        let mut b = Browser::new(a.addr);
        assert_eq!(
            b.post("/api/login", r#"{"user":"alice"}"#).await.status,
            200
        );
        let r = b
            .send(Method::PUT, "/api/prefs/card", Some(r#""secret""#))
            .await;
        assert_eq!(r.status, 200);
        let old = b.clone();
        redis.pause();
        let r = b.post("/api/logout", "").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        old
    });
    stop(&mut a);
    assert!(
        a.stdout().iter().any(|l| l.contains("0 saves abandoned")),
        "{:?}",
        a.stdout()
    );
    assert!(
        !outage_files(dir.path()).is_empty(),
        "the logout is kept on disk"
    );
    redis.resume();

    let b = spawn(&redis, dir.path());
    rt.block_on(async {
        let mut again = at(&old, b.addr);
        let me = again.get("/api/me").await.json();
        assert_eq!(me["user"], Value::Null, "the logout was undone: {me}");
        assert_eq!(again.get("/api/prefs").await.json(), json!({}));
        let left = wait_until_empty(dir.path(), Duration::from_secs(15)).await;
        assert!(
            left.is_empty(),
            "outage work left in the directory: {left:?}"
        );
    });
    let keys = redis.cli(&["--scan", "--pattern", "djforge:sess:*"]);
    let old_key = sessionforge::id::Token::parse(old.cookie.as_deref().unwrap())
        .unwrap()
        .store_key();
    assert!(
        !keys.contains(old_key.as_str()),
        "the logged-out session is still in Redis"
    );
}

#[test]
fn writes_acknowledged_just_before_a_sigterm_in_an_outage_reach_redis_after_the_restart() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut a = spawn(&redis, dir.path());
    let addr = a.addr;
    // 8 clients, each writing an increasing number as fast as it is acknowledged.
    let clients = rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..8 {
            tasks.push(tokio::spawn(async move {
                let mut b = Browser::new(addr);
                b.post("/api/login", &format!(r#"{{"user":"writer{c}"}}"#))
                    .await;
                let (mut acked, mut tried) = (0u64, 0u64);
                let until = Instant::now() + Duration::from_secs(6);
                while Instant::now() < until {
                    tried += 1;
                    let body = tried.to_string();
                    match b.try_send(Method::PUT, "/api/prefs/n", Some(&body)).await {
                        Some(r) if r.status == 200 => acked = tried,
                        Some(r) => panic!(
                            "a write failed instead of failing over: {} {}",
                            r.status, r.body
                        ),
                        None => break, // the app is gone
                    }
                }
                (b, acked, tried)
            }));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        redis.pause();
        tokio::time::sleep(Duration::from_millis(300)).await;
        tasks
    });
    stop(&mut a);
    let clients: Vec<(Browser, u64, u64)> = rt.block_on(async {
        let mut out = Vec::new();
        for t in clients {
            out.push(t.await.unwrap());
        }
        out
    });
    redis.resume();
    let b = spawn(&redis, dir.path());
    rt.block_on(async {
        for (client, acked, tried) in &clients {
            assert!(*acked > 0);
            let mut c = at(client, b.addr);
            let n = c.get("/api/prefs").await.json()["n"].as_u64().unwrap_or(0);
            assert!(
                n == *acked || n == *tried,
                "acknowledged {acked} (last tried {tried}), Redis has {n}"
            );
        }
        let left = wait_until_empty(dir.path(), Duration::from_secs(15)).await;
        assert!(left.is_empty(), "stranded: {left:?}");
    });
}

#[test]
fn instances_sharing_a_directory_carry_each_others_outage_over_without_restarting() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = (spawn(&redis, dir.path()), spawn(&redis, dir.path()));
    rt.block_on(async {
        let mut on_a = Browser::new(a.addr);
        on_a.post("/api/login", r#"{"user":"carol"}"#).await;
        let mut on_b = Browser::new(b.addr);
        on_b.post("/api/login", r#"{"user":"dave"}"#).await;
        let carol = on_a.clone();
        redis.pause();
        // Carol logs out through B, which never served her session (it cannot read it during the
        // outage, and ends it all the same); Dave writes through B, which served his.
        let r = at(&carol, b.addr).post("/api/logout", "").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = on_b
            .send(Method::PUT, "/api/prefs/theme", Some(r#""dark""#))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        // And Dave writes through A, which never served his session: A finds B's outage copy in the
        // shared directory (a session no instance wrote during the outage would start afresh, with
        // a new cookie: documented). Whichever session the client holds now keeps the write.
        let mut dave_on_a = at(&on_b, a.addr);
        let r = dave_on_a
            .send(Method::PUT, "/api/prefs/lang", Some(r#""en""#))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        redis.resume();
        // Both instances keep running; their monitors fail back by themselves.
        let left = wait_until_empty(dir.path(), Duration::from_secs(20)).await;
        assert!(left.is_empty(), "outage work left: {left:?}");
        for addr in [a.addr, b.addr] {
            let me = at(&carol, addr).get("/api/me").await.json();
            assert_eq!(
                me["user"],
                Value::Null,
                "carol's logout undone on {addr}: {me}"
            );
            let prefs = at(&on_b, addr).get("/api/prefs").await.json();
            assert_eq!(
                prefs["theme"], "dark",
                "dave's write lost on {addr}: {prefs}"
            );
            let fresh = at(&dave_on_a, addr).get("/api/prefs").await.json();
            assert_eq!(
                fresh["lang"], "en",
                "the fresh session's write lost on {addr}: {fresh}"
            );
        }
    });
}

/// Fills Redis with other visitors' sessions until it evicts (or refuses) writes.
async fn fill(addr: SocketAddr, redis: &RedisServer) {
    let pad = format!("\"{}\"", "x".repeat(8 * 1024));
    let client = http_support::client();
    for i in 0..3000 {
        let mut b = Browser::new(addr);
        let r = b.send(Method::PUT, "/api/prefs/pad", Some(&pad)).await;
        assert!(!r.status.is_server_error() || r.status == 503, "{}", r.body);
        if i % 100 == 99 {
            let info = redis.cli(&["INFO", "stats"]);
            let evicted: u64 = info
                .lines()
                .find_map(|l| l.strip_prefix("evicted_keys:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mem = redis.cli(&["INFO", "memory"]);
            let used: f64 = field(&mem, "used_memory:");
            let max: f64 = field(&mem, "maxmemory:");
            if evicted > 200 || used > 0.97 * max {
                return;
            }
        }
    }
    let _ = client;
}

fn field(info: &str, name: &str) -> f64 {
    info.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_revoke_ends_every_live_session_or_says_it_cannot_under_every_eviction_policy() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for policy in ["volatile-lru", "allkeys-lru", "volatile-ttl", "noeviction"] {
        let redis = RedisServer::with_args(&["--maxmemory", "3mb", "--maxmemory-policy", policy]);
        let dir = tempfile::tempdir().unwrap();
        let app = spawn(&redis, dir.path());
        rt.block_on(async {
            // 20 users, 30 sessions, kept in use while memory fills.
            let mut victims = Vec::new();
            for i in 0..30 {
                let mut b = Browser::new(app.addr);
                let r = b
                    .post("/api/login", &format!(r#"{{"user":"victim{}"}}"#, i % 20))
                    .await;
                assert_eq!(r.status, 200, "{policy}: {}", r.body);
                victims.push((i % 20, b));
            }
            fill(app.addr, &redis).await;
            for (_, b) in victims.iter_mut() {
                b.get("/api/me").await;
            }
            fill(app.addr, &redis).await;
            let mut unsure = Vec::new();
            let mut admin = Browser::new(app.addr);
            eprintln!(
                "{policy}: before the revokes: {}",
                admin.get("/api/sessions/health").await.body
            );
            for u in 0..20 {
                let r = admin
                    .send(
                        Method::DELETE,
                        &format!("/api/sessions/users/victim{u}/sessions"),
                        None,
                    )
                    .await;
                match r.status {
                    StatusCode::OK => {}
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert!(r.json()["error"].is_string(), "{policy}: {}", r.body);
                        unsure.push(u);
                    }
                    s => panic!("{policy}: revoke answered {s}: {}", r.body),
                }
            }
            for (u, b) in &victims {
                if unsure.contains(u) {
                    continue;
                }
                let me = at(b, app.addr).get("/api/me").await.json();
                if me["user"] != Value::Null {
                    let key = sessionforge::id::Token::parse(b.cookie.as_deref().unwrap())
                        .unwrap()
                        .store_key();
                    eprintln!(
                        "{policy}: after: key {key} value {:?} set {:?} ttl {:?} evicted {:?}",
                        redis.cli(&["GET", &format!("djforge:sess:{key}")]),
                        redis.cli(&["ZRANGE", &format!("djforge:sess:user:victim{u}"), "0", "-1"]),
                        redis.cli(&["TTL", &format!("djforge:sess:{key}")]),
                        redis
                            .cli(&["INFO", "stats"])
                            .lines()
                            .find(|l| l.starts_with("evicted_keys"))
                            .map(str::to_owned),
                    );
                    eprintln!("{:?}", app.stderr());
                }
                assert_eq!(
                    me["user"],
                    Value::Null,
                    "{policy}: victim{u} still logged in after a revoke that answered 200"
                );
            }
            eprintln!("{policy}: {} of 20 revokes answered 503", unsure.len());
        });
    }
}

#[test]
fn a_value_too_deep_to_read_back_is_refused_at_insert_in_redis_and_file_mode() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let mut dead = RedisServer::start();
    let live = RedisServer::start();
    dead.kill();
    for (mode, redis) in [("redis", &live), ("file", &dead)] {
        let dir = tempfile::tempdir().unwrap();
        let app = spawn(redis, dir.path());
        rt.block_on(async {
            let mut b = Browser::new(app.addr);
            b.post("/api/login", r#"{"user":"erin"}"#).await;
            let r = b
                .send(Method::PUT, "/api/prefs/deep", Some(&nested(127)))
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{mode}: {}", r.body);
            assert!(r.json()["error"].is_string());
            let r = b
                .send(Method::PUT, "/api/prefs/ok", Some(&nested(60)))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{mode}: {}", r.body);
            let me = b.get("/api/me").await.json();
            assert_eq!(me["user"], "erin", "{mode}: the login was lost");
            let prefs = b.get("/api/prefs").await.json();
            assert_eq!(prefs["ok"].to_string(), nested(60), "{mode}");
            let stats = Browser::new(app.addr)
                .get("/api/sessions/stats")
                .await
                .json();
            if mode == "file" {
                assert_eq!(stats["diskUsage"]["setAside"], 0, "{stats}");
            }
        });
    }
}

#[test]
fn a_full_redis_is_said_so_writes_go_to_files_and_health_is_degraded() {
    let redis = RedisServer::with_args(&["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]);
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(&redis, dir.path());
    // Someone else's data fills Redis to its limit.
    let chunk = "y".repeat(64 * 1024);
    for i in 0..200 {
        let r = redis.cli(&["SET", &format!("other:{i}"), &chunk]);
        if r.contains("OOM") {
            break;
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Users keep working: their writes are served from files.
        let mut b = Browser::new(app.addr);
        let r = b.post("/api/login", r#"{"user":"frank"}"#).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(b.get("/api/me").await.json()["user"], "frank");
        let health = Browser::new(app.addr).get("/api/health").await;
        assert_eq!(health.status, StatusCode::OK);
        let h = health.json();
        assert_eq!(h["status"], "degraded", "{h}");
        assert!(h["reason"].as_str().unwrap_or("").contains("full"), "{h}");
        let stats = Browser::new(app.addr)
            .get("/api/sessions/health")
            .await
            .json();
        assert!(stats.to_string().contains("full"), "{stats}");
    });
    // The admin warns about the memory once Redis is the store again (no data lost meanwhile).
    redis.cli(&["FLUSHDB"]);
}

#[test]
fn an_unwritable_session_dir_is_named_and_redis_still_serves() {
    let redis = RedisServer::start();
    let port = redis.port().to_string();
    let bad = "/proc/sessionforge-cannot-create-this";
    // Redis healthy: starts on Redis and says the fallback is unavailable, naming the directory.
    let app = Process::spawn(&[
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", &port),
        ("SESSION_DIR", bad),
    ]);
    let said = app
        .wait_for_stderr(Duration::from_secs(5), |l| {
            l.contains("SESSION_DIR") && l.contains(bad)
        })
        .unwrap_or_else(|| panic!("no startup line names SESSION_DIR: {:?}", app.stderr()));
    assert!(said.contains("Redis"), "{said}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut b = Browser::new(app.addr);
        assert_eq!(
            b.post("/api/login", r#"{"user":"grace"}"#).await.status,
            200
        );
        assert_eq!(b.get("/api/me").await.json()["user"], "grace");
    });
    drop(app);
    // Redis not there either: nowhere to keep sessions, a clear error naming both.
    let mut dead = RedisServer::start();
    dead.kill();
    let port = dead.port().to_string();
    let out = Process::command(&[
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", &port),
        ("SESSION_DIR", bad),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SESSION_DIR") && err.contains(bad) && err.contains("Redis"),
        "{err}"
    );
}
