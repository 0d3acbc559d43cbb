//! The djforge example: its app (the same `build` the binary runs) over real HTTP in Redis mode, in
//! file mode and on a Redis Cluster, and the example binary itself as a process.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/djforge.rs"]
mod djforge_support;
#[path = "support/http.rs"]
mod http_support;
mod support;

use http::{Method, Request, StatusCode};
use http_body_util::Full;
use http_support::{raw, Browser, Reply};
use serde_json::Value;
use sessionforge::id::Token;
use std::net::SocketAddr;
use std::time::Duration;
use support::RedisServer;

/// The example's app on `redis_port` with its file fallback in `dir`, as the binary builds it.
async fn start(
    redis_port: u16,
    dir: &std::path::Path,
    token: Option<&str>,
) -> djforge_support::Running {
    let port = redis_port.to_string();
    let dir = dir.to_str().unwrap();
    let mut vars = vec![
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", port.as_str()),
        ("SESSION_DIR", dir),
    ];
    if let Some(t) = token {
        vars.push(("SESSION_ADMIN_TOKEN", t));
    }
    djforge_support::start(&vars).await
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| humantime::parse_rfc3339(s).is_ok() && s.ends_with('Z'))
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut b = Browser::new(addr);
    b.get(path).await
}

async fn post(addr: SocketAddr, path: &str) -> Reply {
    let mut b = Browser::new(addr);
    b.post(path, "").await
}

/// Runs every command of the seed document (`../shared/seed/redis-setup.md`) and checks the shapes.
async fn seed_commands(addr: SocketAddr, mode: &str) {
    // A few sessions, one with a user.
    let mut alice = Browser::new(addr);
    alice.get("/api/me").await;
    alice.post("/api/login", r#"{"user":"alice"}"#).await;
    let mut bob = Browser::new(addr);
    bob.get("/api/me").await;

    // curl http://localhost:3001/api/sessions/stats
    let r = get(addr, "/api/sessions/stats").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    let stats = r.json();
    assert_eq!(stats["sessionStore"], mode);
    assert_eq!(stats["sessionCount"], 2, "{stats}");
    assert!(is_rfc3339(&stats["timestamp"]), "{stats}");
    if mode == "redis" {
        let mem = &stats["memoryUsage"];
        assert!(
            mem["used_memory"].as_str().unwrap().parse::<u64>().is_ok(),
            "{stats}"
        );
        assert!(mem["used_memory_human"]
            .as_str()
            .unwrap()
            .ends_with(['K', 'M', 'G', 'B']));
    } else {
        let disk = &stats["diskUsage"];
        // The two sessions, and the record of alice's old id (renewed at login): a delete made
        // while Redis is away is kept as a small file until it is carried over to Redis.
        assert_eq!(disk["files"], 3, "{stats}");
        assert!(disk["bytes"].as_u64().unwrap() > 0);
    }

    // curl http://localhost:3001/api/sessions/sessions
    let r = get(addr, "/api/sessions/sessions").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let list = r.json();
    assert_eq!(list["total"], 2);
    assert!(list["nextCursor"].is_null());
    assert!(is_rfc3339(&list["timestamp"]));
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    for s in sessions {
        for field in ["createdAt", "lastAccess", "expires"] {
            assert!(is_rfc3339(&s[field]), "{field} in {s}");
        }
        assert_eq!(
            s["userAgent"],
            Value::Null,
            "the test client sends no User-Agent"
        );
        let id = s["id"].as_str().unwrap();
        assert_eq!(id.len(), 43);
        // The listing shows store keys, never a usable token.
        assert_ne!(Some(id), alice.cookie.as_deref());
        assert_ne!(Some(id), bob.cookie.as_deref());
    }
    assert!(sessions.iter().any(|s| s["user"] == "alice"));

    // curl -X POST http://localhost:3001/api/sessions/cleanup
    let r = post(addr, "/api/sessions/cleanup").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let c = r.json();
    assert_eq!(c["success"], true);
    assert!(c["deletedSessions"].is_u64());
    assert!(c["message"].is_string());

    // curl http://localhost:3001/api/sessions/redis-info
    let r = get(addr, "/api/sessions/redis-info").await;
    if mode == "redis" {
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let info = r.json();
        assert!(
            info["redis"]["server"]["redis_version"].is_string(),
            "{info}"
        );
        assert!(info["redis"]["memory"]["used_memory"].is_string());
        assert!(is_rfc3339(&info["timestamp"]));
    } else {
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.json()["error"].is_string());
    }

    // curl http://localhost:3001/api/health
    let r = get(addr, "/api/health").await;
    assert_eq!(r.status, StatusCode::OK);
    let h = r.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["sessionStore"], mode);
    assert!(is_rfc3339(&h["timestamp"]));
    if mode == "redis" {
        assert_eq!(h["redis"], "healthy");
    }

    // Metrics are Prometheus text.
    let r = get(addr, "/api/sessions/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(r
        .body
        .contains("# TYPE sessionforge_sessions_created_total counter"));

    // Delete alice's session: she is logged out on her next request.
    let alice_id = sessions.iter().find(|s| s["user"] == "alice").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut admin = Browser::new(addr);
    let r = admin
        .send(
            Method::DELETE,
            &format!("/api/sessions/sessions/{alice_id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["success"], true);
    let r = admin
        .send(
            Method::DELETE,
            &format!("/api/sessions/sessions/{alice_id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let me = alice.get("/api/me").await.json();
    assert_eq!(me["user"], Value::Null);
    assert_eq!(me["visits"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_commands_answer_as_documented_in_redis_mode() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = start(redis.port(), dir.path(), None).await;
    seed_commands(app.addr, "redis").await;
    // Sessions are readable JSON under the djforge prefix (the seed's inspection tip), never KEYS.
    let keys = redis.cli(&["--scan", "--pattern", "djforge:sess:*"]);
    let key = keys
        .lines()
        .find(|k| !k.ends_with("index"))
        .expect("a session key");
    let json: Value = serde_json::from_str(&redis.cli(&["GET", key])).unwrap();
    assert!(
        json["createdAt"].is_u64() && json["data"]["visits"].is_u64(),
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_commands_answer_as_documented_in_file_mode() {
    let mut redis = RedisServer::start();
    redis.kill();
    let dir = tempfile::tempdir().unwrap();
    let app = start(redis.port(), dir.path(), None).await;
    seed_commands(app.addr, "file").await;
    assert!(std::fs::read_dir(dir.path()).unwrap().count() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_api_counts_logs_in_keeps_prefs_and_logs_out() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = start(redis.port(), dir.path(), None).await;
    let mut b = Browser::new(app.addr);
    assert_eq!(
        b.get("/api/me").await.json(),
        serde_json::json!({"user": null, "visits": 1})
    );
    assert_eq!(b.get("/api/me").await.json()["visits"], 2);
    let before = b.cookie.clone().unwrap();
    let r = b.post("/api/login", r#"{"user":"alice"}"#).await;
    assert_eq!(
        r.json(),
        serde_json::json!({"success": true, "user": "alice"})
    );
    assert_ne!(
        b.cookie.as_deref(),
        Some(before.as_str()),
        "login renews the id"
    );
    let me = b.get("/api/me").await.json();
    assert_eq!(me, serde_json::json!({"user": "alice", "visits": 3}));

    // Two preferences written at once both land.
    let (mut x, mut y) = (b.clone(), b.clone());
    let (rx, ry) = tokio::join!(
        x.send(Method::PUT, "/api/prefs/theme", Some(r#""dark""#)),
        y.send(Method::PUT, "/api/prefs/lang", Some(r#"{"code":"en"}"#)),
    );
    assert_eq!(rx.status, 200);
    assert_eq!(ry.status, 200);
    assert_eq!(
        b.get("/api/prefs").await.json(),
        serde_json::json!({"theme": "dark", "lang": {"code": "en"}})
    );

    // Client mistakes are 4xx JSON, never 5xx.
    for (method, path, body) in [
        (Method::POST, "/api/login", "not json"),
        (Method::POST, "/api/login", r#"{"user":""}"#),
        (Method::PUT, "/api/prefs/..%2Fetc", r#"1"#),
        (Method::PUT, "/api/prefs/theme", "{"),
    ] {
        let r = b.send(method.clone(), path, Some(body)).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body}: {}",
            r.body
        );
        assert!(r.json()["error"].is_string());
    }
    let r = b.get("/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].is_string());

    let token = b.cookie.clone().unwrap();
    let r = b.post("/api/logout", "").await;
    assert_eq!(r.json()["success"], true);
    assert!(b.cookie.is_none(), "the cookie is removed");
    let key = format!(
        "djforge:sess:{}",
        Token::parse(&token).unwrap().store_key().as_str()
    );
    assert_eq!(redis.cli(&["EXISTS", &key]), "0");
    assert_eq!(
        b.get("/api/me").await.json(),
        serde_json::json!({"user": null, "visits": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_set_only_the_right_bearer_token_is_let_in() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = start(redis.port(), dir.path(), Some("s3cret-token")).await;
    let client = http_support::client();
    let send = |auth: Option<&str>| {
        let mut req = Request::builder().uri(format!("http://{}/api/sessions/stats", app.addr));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        raw(&client, req.body(Full::default()).unwrap())
    };
    let r = send(None).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a loopback peer needs the token too"
    );
    assert!(r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(
        send(Some("Bearer wrong")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(Some("Bearer s3cret-token")).await.status,
        StatusCode::OK
    );
    // Health stays open.
    assert_eq!(get(app.addr, "/api/health").await.status, StatusCode::OK);
}

#[test]
fn the_example_binary_falls_back_with_the_seed_warning_and_stops_on_sigterm() {
    let mut dead = RedisServer::start();
    dead.kill();
    let dir = tempfile::tempdir().unwrap();
    let port = dead.port().to_string();
    let mut app = djforge_support::Process::spawn(&[
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", &port),
        ("SESSION_DIR", dir.path().to_str().unwrap()),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (health, metrics) = rt.block_on(async {
        let mut b = Browser::new(app.addr);
        b.get("/api/me").await;
        (
            get(app.addr, "/api/health").await.json(),
            get(app.addr, "/api/sessions/metrics").await.body,
        )
    });
    assert_eq!(health["sessionStore"], "file");
    assert_eq!(health["redis"], "unhealthy");
    // The process's own recorder: the mode gauge names the store serving.
    assert!(
        metrics.contains("sessionforge_store_mode{store=\"file\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sessionforge_store_mode{store=\"redis\"} 0"),
        "{metrics}"
    );
    app.signal("-TERM");
    let exit = app
        .wait(Duration::from_secs(15))
        .expect("djforge did not stop after SIGTERM");
    assert!(exit.success(), "{exit:?}");
    let line = app
        .stderr()
        .into_iter()
        .find(|l| l.starts_with("⚠️  Redis unavailable, falling back to file-based sessions: "))
        .expect("the seed's warning line on stderr");
    assert!(line.contains("Connection refused"), "{line}");
    let out = app.stdout().join("\n");
    assert!(
        out.contains("Admin API: loopback"),
        "the admin mode is printed: {out}"
    );
    assert!(
        out.contains("DJForge stopped (0 saves abandoned, 0 tasks aborted)"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json"))
            .count(),
        1,
        "the session from /api/me is a file"
    );
}

#[test]
fn the_example_binary_names_a_bad_variable() {
    let out = djforge_support::Process::command(&[("REDIS_PORT", "abc")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("REDIS_PORT"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_api_lists_a_users_devices_and_logs_out_everywhere_else() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = start(redis.port(), dir.path(), None).await;
    let mut phone = Browser::new(app.addr);
    let mut laptop = Browser::new(app.addr);
    for b in [&mut phone, &mut laptop] {
        b.post("/api/login", r#"{"user":"alice"}"#).await;
    }
    let mine = laptop.get("/api/sessions-of-me").await.json();
    assert_eq!(mine["user"], "alice");
    let sessions = mine["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{mine}");
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);

    // curl http://localhost:3001/api/sessions/users/alice/sessions
    let r = get(app.addr, "/api/sessions/users/alice/sessions").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["total"], 2);

    let r = laptop.post("/api/logout-everywhere", "").await.json();
    assert_eq!(r["revokedSessions"], 1);
    assert_eq!(phone.get("/api/me").await.json()["user"], Value::Null);
    assert_eq!(laptop.get("/api/me").await.json()["user"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_cluster_the_example_serves_sessions_and_reports_every_node() {
    let c = cluster::RedisCluster::start(3, 1);
    let seeds = c.seeds().join(",");
    let dir = tempfile::tempdir().unwrap();
    let app = djforge_support::start(&[
        ("REDIS_CLUSTER_NODES", &seeds),
        ("SESSION_DIR", dir.path().to_str().unwrap()),
    ])
    .await;
    assert!(
        !app.store.is_on_fallback(),
        "the cluster answered the startup probe: {:?}",
        sessionforge::store::SessionStore::health(&app.store).await
    );
    let addr = app.addr;

    let mut browsers = Vec::new();
    for _ in 0..12 {
        let mut b = Browser::new(addr);
        assert_eq!(b.get("/api/me").await.json()["visits"], 1);
        assert_eq!(b.get("/api/me").await.json()["visits"], 2);
        browsers.push(b);
    }
    let r = browsers[0].post("/api/login", r#"{"user":"alice"}"#).await;
    assert_eq!(r.json()["user"], "alice");
    assert_eq!(browsers[0].get("/api/me").await.json()["user"], "alice");

    let stats = get(addr, "/api/sessions/stats").await.json();
    assert_eq!(stats["sessionStore"], "redis");
    assert_eq!(stats["sessionCount"], 12, "{stats}");

    // The public health says only ok; the admin's lists every node.
    let public = get(addr, "/api/health").await.json();
    assert_eq!(public["status"], "ok");
    assert!(
        public.get("nodes").is_none() && public.get("detail").is_none(),
        "{public}"
    );
    let h = get(addr, "/api/sessions/health").await;
    assert_eq!(h.status, StatusCode::OK);
    let h = h.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["redis"], "healthy");
    let nodes = h["nodes"].as_array().expect("health lists the nodes");
    assert_eq!(nodes.len(), 6, "{h}");
    assert_eq!(
        nodes.iter().filter(|n| n["role"] == "master").count(),
        3,
        "{h}"
    );
    assert!(nodes.iter().all(|n| n["status"] == "healthy"), "{h}");

    let info = get(addr, "/api/sessions/redis-info").await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.body);
    let info = info.json();
    let per_node = info["nodes"].as_object().expect("INFO per node");
    assert!(per_node.len() >= 3, "{info}");
    for (address, sections) in per_node {
        assert!(
            sections["server"]["redis_version"].is_string(),
            "{address}: {sections}"
        );
    }
}
