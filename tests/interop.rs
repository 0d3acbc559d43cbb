//! Live sessions shared with the real npm packages: the djforge example in the express format
//! (`SESSION_FORMAT=express`) next to `tests/node/app.js` (express 5, express-session 1.19,
//! connect-redis 9, node-redis 5, session-file-store 1.5) on one `redis-server` (or one session
//! directory), driven with one cookie jar.

#[path = "support/djforge.rs"]
mod djforge_support;
#[path = "support/http.rs"]
mod http_support;
#[path = "support/node.rs"]
mod node;
mod support;

use http::{Method, StatusCode};
use http_support::{Browser, Reply};
use node::NodeApp;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use support::RedisServer;

const PREFIX: &str = "djforge:sess:";
const COOKIE: &str = "connect.sid";

/// One browser's cookie for both apps (they share the cookie's name and domain).
#[derive(Default)]
struct Jar {
    cookie: Option<String>,
}

impl Jar {
    async fn send(
        &mut self,
        at: SocketAddr,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Reply {
        let mut b = Browser::new(at);
        b.cookie_name = COOKIE.into();
        b.cookie = self.cookie.clone();
        let r = b.send(method, path, body).await;
        assert!(
            !r.status.is_server_error(),
            "{path} on {at}: {} {}",
            r.status,
            r.body
        );
        self.cookie = b.cookie;
        r
    }

    async fn me(&mut self, at: SocketAddr) -> Value {
        self.send(at, Method::GET, "/api/me", None).await.json()
    }

    async fn login(&mut self, at: SocketAddr, user: &str) -> Reply {
        let body = json!({ "user": user }).to_string();
        let r = self.send(at, Method::POST, "/api/login", Some(&body)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r
    }

    async fn logout(&mut self, at: SocketAddr) {
        let r = self.send(at, Method::POST, "/api/logout", Some("")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    /// The sid in the cookie (`s%3A<sid>.<signature>`).
    fn sid(&self) -> String {
        let c = self.cookie.as_deref().expect("a session cookie");
        let signed = c.strip_prefix("s%3A").expect("a signed express cookie");
        signed.rsplit_once('.').unwrap().0.to_owned()
    }
}

/// Both apps on one Redis, the Rust one with `secrets`, the Node one with `node_secrets`.
struct Pair {
    redis: RedisServer,
    rust: djforge_support::Running,
    node: NodeApp,
    _dir: tempfile::TempDir,
}

async fn pair_with(secrets: &str, node_secrets: &str, node_max_age_ms: &str) -> Pair {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let rust = rust_app(&redis, dir.path(), secrets).await;
    let node = NodeApp::start(&[
        ("REDIS_URL", &redis.url()),
        ("SESSION_SECRET", node_secrets),
        ("SESSION_MAX_AGE_MS", node_max_age_ms),
    ]);
    Pair {
        redis,
        rust,
        node,
        _dir: dir,
    }
}

async fn pair() -> Pair {
    pair_with("keyboard cat", "keyboard cat", "3600000").await
}

async fn rust_app(
    redis: &RedisServer,
    dir: &std::path::Path,
    secrets: &str,
) -> djforge_support::Running {
    let port = redis.port().to_string();
    djforge_support::start(&[
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", &port),
        ("SESSION_DIR", dir.to_str().unwrap()),
        ("SESSION_FORMAT", "express"),
        ("SESSION_SECRET", secrets),
        ("SESSION_COOKIE_SECURE", "false"),
    ])
    .await
}

impl Pair {
    fn stored(&self, sid: &str) -> Option<Value> {
        let raw = self.redis.cli(&["GET", &format!("{PREFIX}{sid}")]);
        (!raw.is_empty()).then(|| serde_json::from_str(&raw).expect("stored JSON"))
    }

    fn pttl(&self, sid: &str) -> i64 {
        self.redis
            .cli(&["PTTL", &format!("{PREFIX}{sid}")])
            .parse()
            .unwrap()
    }
}

/// Milliseconds from now to an ISO time.
fn ms_until(iso: &Value) -> i64 {
    let t = humantime::parse_rfc3339(iso.as_str().expect("an ISO time")).unwrap();
    match t.duration_since(std::time::SystemTime::now()) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_node_carries_on_in_rust_and_back() {
    let p = pair().await;
    let (node, rust) = (p.node.addr, p.rust.addr);
    let mut jar = Jar::default();
    assert_eq!(jar.me(node).await["visits"], 1);
    jar.login(node, "alice").await;
    let sid = jar.sid();
    assert_eq!(jar.me(node).await, json!({"user": "alice", "visits": 1}));
    assert_eq!(jar.me(rust).await, json!({"user": "alice", "visits": 2}));
    assert_eq!(jar.sid(), sid, "Rust kept Node's session id");
    assert_eq!(jar.me(node).await, json!({"user": "alice", "visits": 3}));
    // What Rust wrote is what express-session reads: the cookie object first, the fields on top.
    let stored = p.stored(&sid).unwrap();
    assert!(stored["cookie"]["originalMaxAge"].is_u64(), "{stored}");
    assert_eq!(stored["user"], "alice");
    assert_eq!(stored["visits"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_rust_renews_the_id_and_carries_on_in_node() {
    let p = pair().await;
    let (node, rust) = (p.node.addr, p.rust.addr);
    let mut jar = Jar::default();
    assert_eq!(jar.me(rust).await["visits"], 1);
    let before = jar.sid();
    assert_eq!(before.len(), 32, "a uid-safe(24) style sid");
    jar.login(rust, "bob").await;
    let after = jar.sid();
    assert_ne!(before, after, "login renews the id, as regenerate does");
    assert!(p.stored(&before).is_none(), "the old id is gone");
    assert_eq!(jar.me(node).await, json!({"user": "bob", "visits": 2}));
    assert_eq!(jar.me(rust).await, json!({"user": "bob", "visits": 3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_either_side_ends_the_session_on_both() {
    let p = pair().await;
    let (node, rust) = (p.node.addr, p.rust.addr);
    for (login_on, logout_on, other) in [(node, node, rust), (rust, rust, node), (node, rust, node)]
    {
        let mut jar = Jar::default();
        jar.login(login_on, "carol").await;
        jar.me(other).await;
        let (cookie, sid) = (jar.cookie.clone(), jar.sid());
        jar.logout(logout_on).await;
        assert!(jar.cookie.is_none(), "the logout clears the cookie");
        assert!(p.stored(&sid).is_none(), "the session is gone from Redis");
        // The old cookie, presented again, is no one's session on either side.
        for at in [node, rust] {
            let mut stale = Jar {
                cookie: cookie.clone(),
            };
            assert_eq!(stale.me(at).await, json!({"user": null, "visits": 1}));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_signed_on_either_side_verify_on_the_other_across_a_secret_rotation() {
    // Rust and one Node app have rotated to "new" (still verifying "old"); a second Node app still
    // signs with "old" only.
    let p = pair_with("new,old", "new,old", "3600000").await;
    let legacy = NodeApp::start(&[("REDIS_URL", &p.redis.url()), ("SESSION_SECRET", "old")]);
    let (node, rust) = (p.node.addr, p.rust.addr);

    let mut jar = Jar::default();
    jar.login(legacy.addr, "dave").await;
    assert_eq!(
        jar.me(rust).await["user"],
        "dave",
        "Rust verifies an old-secret cookie"
    );
    assert_eq!(
        jar.me(node).await["user"],
        "dave",
        "and so does the rotated Node app"
    );

    let mut jar = Jar::default();
    jar.login(rust, "erin").await;
    let rust_cookie = jar.cookie.clone();
    assert_eq!(
        jar.me(node).await["user"],
        "erin",
        "Node verifies Rust's new-secret cookie"
    );
    // Signed with the first secret: the legacy app, which knows only "old", refuses it.
    let mut stale = Jar {
        cookie: rust_cookie,
    };
    assert_eq!(stale.me(legacy.addr).await["user"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_unsigned_cookie_is_refused_by_both() {
    let p = pair().await;
    let (node, rust) = (p.node.addr, p.rust.addr);
    let mut jar = Jar::default();
    jar.login(node, "frank").await;
    let good = jar.cookie.clone().unwrap();
    let sid = jar.sid();
    // The last signature character changed; the bare sid; the sid signed with another secret.
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for cookie in [
        tampered,
        sid.clone(),
        format!("s%3A{sid}.AAAA"),
        "s%3A".into(),
    ] {
        for at in [node, rust] {
            let mut j = Jar {
                cookie: Some(cookie.clone()),
            };
            let r = j.send(at, Method::GET, "/api/me", None).await;
            assert_eq!(r.status, StatusCode::OK, "{cookie} on {at}: {}", r.body);
            assert_eq!(
                r.json(),
                json!({"user": null, "visits": 1}),
                "{cookie} on {at}"
            );
        }
    }
    // The real session was not touched by any of it.
    let mut jar = Jar { cookie: Some(good) };
    assert_eq!(jar.me(rust).await, json!({"user": "frank", "visits": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_follows_cookie_expires_after_writes_and_touches_from_either_side() {
    // Node sessions of 6 s: express-session's touch (an unmodified request) only moves the TTL, so
    // the stored cookie.expires goes stale and the TTL is the truth.
    let p = pair_with("keyboard cat", "keyboard cat", "6000").await;
    let (node, rust) = (p.node.addr, p.rust.addr);
    let mut jar = Jar::default();
    jar.login(node, "grace").await;
    let sid = jar.sid();
    let close = |a: i64, b: i64| (a - b).abs() <= 1200;

    // A Node write: SET EX ceil(expires - now).
    let s = p.stored(&sid).unwrap();
    assert!(
        close(p.pttl(&sid), ms_until(&s["cookie"]["expires"])),
        "{s} {}",
        p.pttl(&sid)
    );

    // A Node touch after 3 s: EXPIRE only.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let r = jar.send(node, Method::GET, "/api/touch", None).await;
    assert_eq!(r.json()["user"], "grace");
    assert!(
        p.pttl(&sid) > 4500,
        "Node's touch moved the TTL: {}",
        p.pttl(&sid)
    );
    let stale = p.stored(&sid).unwrap();
    assert!(
        ms_until(&stale["cookie"]["expires"]) < 3500,
        "the stored expires is stale"
    );

    // Past the stale cookie.expires, inside the TTL: Rust still serves the session, and its write
    // sets cookie.expires and the TTL together again.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(ms_until(&stale["cookie"]["expires"]) < 0);
    assert_eq!(jar.me(rust).await, json!({"user": "grace", "visits": 1}));
    let s = p.stored(&sid).unwrap();
    assert!(
        close(p.pttl(&sid), ms_until(&s["cookie"]["expires"])),
        "{s} {}",
        p.pttl(&sid)
    );
    assert!(
        p.pttl(&sid) > 4000,
        "Rust's write moved the expiry: {}",
        p.pttl(&sid)
    );
    assert_eq!(
        s["cookie"]["originalMaxAge"], 6000,
        "the session's own idle window is kept"
    );

    // A Rust touch (a read-only request once a quarter of the idle window has passed) moves both.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let before = p.pttl(&sid);
    let r = jar.send(rust, Method::GET, "/api/prefs", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let s = p.stored(&sid).unwrap();
    assert!(
        p.pttl(&sid) > before + 1000,
        "Rust touched: {before} -> {}",
        p.pttl(&sid)
    );
    assert!(
        close(p.pttl(&sid), ms_until(&s["cookie"]["expires"])),
        "{s} {}",
        p.pttl(&sid)
    );
    assert_eq!(jar.me(node).await["user"], "grace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_only_fields_and_cookie_attributes_survive_rust_saves() {
    let p = pair().await;
    let (node, rust) = (p.node.addr, p.rust.addr);
    let mut jar = Jar::default();
    jar.login(node, "heidi").await;
    let r = jar
        .send(
            node,
            Method::PUT,
            "/api/node-field/cart",
            Some(r#"{"items":[1,2],"total":9.5}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A cookie domain and an attribute this crate does not model, as another Node app could set.
    let sid = jar.sid();
    let mut v = p.stored(&sid).unwrap();
    v["cookie"]["domain"] = json!("example.test");
    v["cookie"]["priority"] = json!("high");
    let ttl = p.pttl(&sid).to_string();
    p.redis
        .cli(&["SET", &format!("{PREFIX}{sid}"), &v.to_string(), "PX", &ttl]);

    assert_eq!(jar.me(rust).await["visits"], 1);
    let r = jar
        .send(rust, Method::PUT, "/api/prefs/theme", Some(r#""dark""#))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let after = p.stored(&sid).unwrap();
    assert_eq!(
        after["cart"],
        json!({"items": [1, 2], "total": 9.5}),
        "{after}"
    );
    assert_eq!(after["cookie"]["domain"], "example.test", "{after}");
    assert_eq!(after["cookie"]["priority"], "high", "{after}");
    assert_eq!(after["user"], "heidi");
    assert_eq!(after["visits"], 1);
    // And Node still reads everything, its field included.
    let mut b = Browser::new(node);
    b.cookie_name = COOKIE.into();
    b.cookie = jar.cookie.clone();
    let seen = b.get("/api/session").await.json();
    assert_eq!(seen["cart"]["total"], 9.5, "{seen}");
    assert_eq!(seen["user"], "heidi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_counts_and_lists_sessions_node_created() {
    let p = pair().await;
    let (node, rust) = (p.node.addr, p.rust.addr);
    for user in ["ivan", "judy", "ivan"] {
        Jar::default().login(node, user).await;
    }
    Jar::default().login(rust, "ivan").await;
    let mut admin = Browser::new(rust);
    let stats = admin.get("/api/sessions/stats").await.json();
    assert_eq!(stats["sessionCount"], 4, "{stats}");
    let list = admin.get("/api/sessions/sessions").await.json();
    assert_eq!(list["total"], 4, "{list}");
    let ivan = admin.get("/api/sessions/users/ivan/sessions").await.json();
    assert_eq!(ivan["total"], 3, "{ivan}");
    // Revoking from the admin ends Node's sessions too.
    let r = admin
        .send(Method::DELETE, "/api/sessions/users/ivan/sessions", None)
        .await;
    assert_eq!(r.json()["deletedSessions"], 3, "{}", r.body);
    let keys = p.redis.cli(&["--scan", "--pattern", &format!("{PREFIX}*")]);
    assert_eq!(
        keys.lines().count(),
        1,
        "only judy's session is left: {keys}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_file_store_reads_the_express_files_rust_writes_and_back() {
    // Redis is not there: the Rust app serves from files, in session-file-store's layout.
    let mut dead = RedisServer::start();
    dead.kill();
    let dir = tempfile::tempdir().unwrap();
    let rust = rust_app(&dead, dir.path(), "keyboard cat").await;
    let node = NodeApp::start(&[
        ("SESSION_STORE", "file"),
        ("SESSION_DIR", dir.path().to_str().unwrap()),
        ("SESSION_SECRET", "keyboard cat"),
    ]);
    let mut jar = Jar::default();
    jar.login(rust.addr, "mallory").await;
    assert_eq!(jar.me(rust.addr).await["visits"], 1);
    let file = dir.path().join(format!("{}.json", jar.sid()));
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(on_disk["__lastAccess"].is_u64(), "{on_disk}");
    assert!(on_disk["cookie"]["expires"].is_string(), "{on_disk}");
    assert_eq!(
        jar.me(node.addr).await,
        json!({"user": "mallory", "visits": 2})
    );
    assert_eq!(
        jar.me(rust.addr).await,
        json!({"user": "mallory", "visits": 3})
    );
    // A Node login is read by Rust.
    let mut other = Jar::default();
    other.login(node.addr, "niaj").await;
    assert_eq!(other.me(rust.addr).await["user"], "niaj");
    jar.logout(node.addr).await;
    assert!(!file.exists());
}

#[test]
fn express_mode_without_a_secret_is_a_startup_error_naming_it() {
    let out = djforge_support::Process::command(&[("SESSION_FORMAT", "express")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SESSION_SECRET"), "{err}");
}
