//! Per-user sessions (issue 9) on every store: memory, files in a tempdir, a real redis-server, and the
//! failover store over both, driven over real HTTP on loopback.

#[path = "support/http.rs"]
mod http_support;
mod support;

use axum::routing::{get, post};
use axum::{Json, Router};
use http_support::Browser;
use serde_json::{json, Value};
use sessionforge::admin::{AdminAuth, AdminService};
use sessionforge::shutdown::Shutdown;
use sessionforge::store::redis::{RedisConfig, RedisStore};
use sessionforge::store::{FailoverStore, FileStore, MemoryStore, SessionStore};
use sessionforge::{Session, SessionError, SessionLayer};
use std::net::SocketAddr;
use std::time::Duration;
use support::RedisServer;

const PREFIX: &str = "u:";
const TIMEOUT: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    File,
    Redis,
    Failover,
}

const ALL: [Kind; 4] = [Kind::Memory, Kind::File, Kind::Redis, Kind::Failover];

/// A running app and what it needs kept alive.
struct Env {
    addr: SocketAddr,
    redis: Option<RedisServer>,
    failover: Option<FailoverStore<RedisStore, FileStore>>,
    _dir: tempfile::TempDir,
    _shutdown: Shutdown,
}

#[derive(Clone, Copy, Default)]
struct Opts {
    cap: Option<usize>,
    idle: Option<Duration>,
}

fn routes() -> Router {
    Router::new()
        .route(
            "/login",
            post(|s: Session, user: String| async move {
                s.cycle_id().await?;
                s.set_user(Some(user)).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/me",
            get(|s: Session| async move {
                let visits: u64 = s.get("visits").await?.unwrap_or(0) + 1;
                s.insert("visits", visits).await?;
                Ok::<_, SessionError>(Json(json!({"user": s.user().await?, "visits": visits})))
            }),
        )
        .route(
            "/devices",
            get(|s: Session| async move {
                let this = s.store_key().await?.map(|k| k.as_str().to_owned());
                let ids: Vec<String> = s
                    .user_sessions()
                    .await?
                    .into_iter()
                    .map(|x| x.id.as_str().to_owned())
                    .collect();
                Ok::<_, SessionError>(Json(json!({"this": this, "ids": ids})))
            }),
        )
        .route(
            "/logout-others",
            post(|s: Session| async move {
                Ok::<_, SessionError>(s.revoke_other_sessions().await?.to_string())
            }),
        )
}

async fn serve<S: SessionStore + Clone>(store: S, opts: Opts) -> SocketAddr {
    let mut layer = SessionLayer::new(store.clone()).with_secure(false);
    if let Some(cap) = opts.cap {
        layer = layer.with_max_sessions_per_user(cap);
    }
    if let Some(idle) = opts.idle {
        layer = layer.with_idle_timeout(idle);
    }
    let admin = AdminService::new(store).with_auth(AdminAuth::insecure_open_to_anyone());
    http_support::serve(routes().layer(layer).nest("/admin", admin.router())).await
}

fn redis_store(server: &RedisServer) -> RedisStore {
    RedisConfig::new(server.url())
        .unwrap()
        .with_prefix(PREFIX)
        .with_connect_timeout(TIMEOUT)
        .with_command_timeout(TIMEOUT)
        .build()
        .unwrap()
}

async fn env(kind: Kind, opts: Opts) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = Shutdown::new();
    let (addr, redis, failover) = match kind {
        Kind::Memory => (serve(MemoryStore::new(), opts).await, None, None),
        Kind::File => (serve(FileStore::new(dir.path()), opts).await, None, None),
        Kind::Redis => {
            let server = RedisServer::start();
            (serve(redis_store(&server), opts).await, Some(server), None)
        }
        Kind::Failover => {
            let server = RedisServer::start();
            let store = FailoverStore::builder(redis_store(&server), FileStore::new(dir.path()))
                .with_check_interval(Duration::from_millis(200))
                .with_startup_timeout(Duration::from_secs(1))
                .start(&shutdown)
                .await;
            assert!(!store.is_on_fallback());
            (serve(store.clone(), opts).await, Some(server), Some(store))
        }
    };
    Env {
        addr,
        redis,
        failover,
        _dir: dir,
        _shutdown: shutdown,
    }
}

impl Env {
    fn browser(&self) -> Browser {
        Browser::new(self.addr)
    }

    async fn login(&self, user: &str) -> Browser {
        let mut b = self.browser();
        let r = b.post("/login", user).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(b.cookie.is_some(), "login sets a cookie");
        b
    }

    async fn admin_list(&self, user: &str) -> Value {
        let r = self
            .browser()
            .get(&format!("/admin/users/{user}/sessions"))
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    async fn admin_revoke(&self, user: &str) -> u64 {
        let r = self
            .browser()
            .send(
                http::Method::DELETE,
                &format!("/admin/users/{user}/sessions"),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["success"], true);
        v["deletedSessions"].as_u64().unwrap()
    }

    /// Every live session the store holds for `user`, by a full listing (not the per-user index).
    async fn sessions_by_scan(&self, user: &str) -> Vec<String> {
        let r = self.browser().get("/admin/sessions?limit=1000").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let mut ids: Vec<String> = r.json()["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["user"] == user)
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// The members of the user's Redis set (Redis-backed kinds only).
    fn redis_members(&self, user: &str) -> Option<Vec<String>> {
        let server = self.redis.as_ref()?;
        let out = server.cli(&["ZRANGE", &format!("{PREFIX}user:{user}"), "0", "-1"]);
        let mut members: Vec<String> = out
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        members.sort();
        Some(members)
    }
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

async fn me(b: &mut Browser) -> Value {
    let r = b.get("/me").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

async fn revoke_all_from_a_third_client(kind: Kind) {
    let env = env(kind, Opts::default()).await;
    let mut a = env.login("alice").await;
    let mut b = env.login("alice").await;
    let mut bob = env.login("bob").await;
    assert_eq!(me(&mut a).await["user"], "alice");
    let list = env.admin_list("alice").await;
    assert_eq!(list["user"], "alice");
    assert_eq!(list["total"], 2, "{kind:?}: {list}");
    assert!(
        !list.to_string().contains(a.cookie.as_deref().unwrap()),
        "a listing never shows a token"
    );
    let (old_a, old_b) = (a.cookie.clone(), b.cookie.clone());

    // The third client: the admin API.
    assert_eq!(env.admin_revoke("alice").await, 2, "{kind:?}");
    for (client, old) in [(&mut a, old_a), (&mut b, old_b)] {
        let v = me(client).await;
        assert_eq!(
            v["user"],
            Value::Null,
            "{kind:?}: revoked on the very next request"
        );
        assert_eq!(v["visits"], 1, "{kind:?}: a fresh session");
        assert_ne!(client.cookie, old, "{kind:?}: a new token");
    }
    assert_eq!(env.admin_list("alice").await["total"], 0);
    assert_eq!(
        me(&mut bob).await["user"],
        "bob",
        "other users are untouched"
    );
    if let Some(members) = env.redis_members("alice") {
        assert!(
            members.is_empty(),
            "{kind:?}: the user set is gone: {members:?}"
        );
    }

    // The third client: another of alice's sessions, logging out everywhere else.
    let mut a = env.login("alice").await;
    let mut b = env.login("alice").await;
    let mut c = env.login("alice").await;
    let devices: Value = c.get("/devices").await.json();
    assert_eq!(devices["ids"].as_array().unwrap().len(), 3, "{devices}");
    assert!(devices["ids"]
        .as_array()
        .unwrap()
        .contains(&devices["this"]));
    assert_eq!(c.post("/logout-others", "").await.body, "2");
    assert_eq!(me(&mut a).await["user"], Value::Null);
    assert_eq!(me(&mut b).await["user"], Value::Null);
    assert_eq!(
        me(&mut c).await["user"],
        "alice",
        "the current session stays"
    );
    assert_eq!(env.admin_list("alice").await["total"], 1);
}

async fn cap_evicts_the_oldest(kind: Kind) {
    let env = env(
        kind,
        Opts {
            cap: Some(2),
            ..Opts::default()
        },
    )
    .await;
    let mut first = env.login("alice").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut second = env.login("alice").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut third = env.login("alice").await;
    let list = env.admin_list("alice").await;
    assert_eq!(list["total"], 2, "{kind:?}: {list}");
    assert_eq!(
        me(&mut first).await["user"],
        Value::Null,
        "{kind:?}: oldest evicted"
    );
    assert_eq!(me(&mut second).await["user"], "alice");
    assert_eq!(me(&mut third).await["user"], "alice");
    // Another user's logins do not count against alice.
    let _bob = env.login("bob").await;
    assert_eq!(env.admin_list("alice").await["total"], 2);
    if let Some(members) = env.redis_members("alice") {
        assert_eq!(members, ids(&env.admin_list("alice").await), "{kind:?}");
    }
}

async fn index_shrinks_when_sessions_expire(kind: Kind) {
    let env = env(
        kind,
        Opts {
            idle: Some(Duration::from_millis(1200)),
            ..Opts::default()
        },
    )
    .await;
    let _a = env.login("alice").await;
    let _b = env.login("alice").await;
    assert_eq!(env.admin_list("alice").await["total"], 2);
    if let Some(members) = env.redis_members("alice") {
        assert_eq!(members.len(), 2);
        // The user set has no TTL of its own any more (on purpose: a `volatile-*` eviction policy
        // must never separate it from the sessions it lists, see src/store/redis/scripts.rs); it is
        // bounded by pruning instead, which the rest of this test checks.
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // An operator's cleanup, which never asks for alice's sessions: afterwards nothing of hers is
    // left, the user set included (it must not outlive its sessions in Redis for a user who never
    // comes back).
    let r = env.browser().post("/admin/cleanup", "").await;
    assert_eq!(r.status, 200, "{kind:?}: {}", r.body);
    assert_eq!(r.json()["success"], true);
    if let Some(server) = &env.redis {
        assert_eq!(
            server.cli(&["EXISTS", &format!("{PREFIX}user:alice")]),
            "0",
            "{kind:?}: the user set went with its last session at cleanup"
        );
    }
    assert_eq!(env.admin_list("alice").await["total"], 0, "{kind:?}");
    if let Some(server) = &env.redis {
        assert_eq!(
            server.cli(&["EXISTS", &format!("{PREFIX}user:alice")]),
            "0",
            "{kind:?}: the user set is gone once its sessions are"
        );
    }
}

async fn concurrent_logins_and_revokes_leave_no_orphan(kind: Kind) {
    let env = std::sync::Arc::new(env(kind, Opts::default()).await);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            if i % 6 == 5 {
                env.admin_revoke("alice").await;
            } else {
                let mut b = env.login("alice").await;
                // Reuse the session too (a save carrying the user) while revokes run.
                let _ = b.get("/me").await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The index and the sessions agree: every session of alice is listed, and nothing else is.
    let listed = ids(&env.admin_list("alice").await);
    assert_eq!(listed, env.sessions_by_scan("alice").await, "{kind:?}");
    if let Some(members) = env.redis_members("alice") {
        assert_eq!(members, listed, "{kind:?}: no stale member in the user set");
    }
    // And a final revoke reaches every one of them: none escaped the index.
    env.admin_revoke("alice").await;
    assert!(env.sessions_by_scan("alice").await.is_empty(), "{kind:?}");
    if let Some(members) = env.redis_members("alice") {
        assert!(members.is_empty(), "{kind:?}: {members:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_of_a_user_revoked_from_a_third_client_get_fresh_sessions_on_every_store() {
    for kind in ALL {
        revoke_all_from_a_third_client(kind).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_on_sessions_per_user_evicts_the_oldest_on_every_store() {
    for kind in ALL {
        cap_evicts_the_oldest(kind).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_index_shrinks_when_sessions_expire_on_every_store() {
    for kind in ALL {
        index_shrinks_when_sessions_expire(kind).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_and_revokes_leave_no_orphan_on_every_store() {
    for kind in ALL {
        concurrent_logins_and_revokes_leave_no_orphan(kind).await;
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_during_an_outage_reaches_the_sessions_left_in_redis_at_failback() {
    let env = env(Kind::Failover, Opts::default()).await;
    let store = env.failover.clone().unwrap();
    let mut a = env.login("alice").await;
    let mut b = env.login("alice").await;
    let mut bob = env.login("bob").await;
    env.redis.as_ref().unwrap().pause();
    wait_until("failover", || store.is_on_fallback()).await;

    // `a` carries on from files during the outage; `b` is not used, so it is only in Redis.
    assert_eq!(me(&mut a).await["user"], "alice");
    assert_eq!(
        env.admin_revoke("alice").await,
        1,
        "only a's copy is reachable now"
    );
    assert_eq!(me(&mut a).await["user"], Value::Null, "revoked at once");

    env.redis.as_ref().unwrap().resume();
    wait_until("failback", || !store.is_on_fallback()).await;
    // The failback revokes alice's sessions the primary still held before anything is served.
    assert_eq!(me(&mut b).await["user"], Value::Null, "b was revoked too");
    assert_eq!(
        me(&mut bob).await["user"],
        "bob",
        "other users keep their sessions"
    );
    assert_eq!(env.admin_list("alice").await["total"], 0);
    assert!(env.sessions_by_scan("alice").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_ids_of_any_shape_are_listed_and_revoked_and_bad_paths_are_400() {
    let env = env(Kind::Redis, Opts::default()).await;
    let odd = "Ünïcødé user/with:stuff*?[]";
    let mut a = env.login(odd).await;
    let enc: String =
        percent_encoding::utf8_percent_encode(odd, percent_encoding::NON_ALPHANUMERIC).to_string();
    let list = env.admin_list(&enc).await;
    assert_eq!(list["user"], odd);
    assert_eq!(list["total"], 1);
    // The odd id is hashed into the key name, never spliced in.
    let keys = env
        .redis
        .as_ref()
        .unwrap()
        .cli(&["--scan", "--pattern", "u:user:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
    assert!(
        keys.starts_with("u:user:#") && keys.len() == "u:user:#".len() + 40,
        "{keys}"
    );
    assert_eq!(env.admin_revoke(&enc).await, 1);
    assert_eq!(me(&mut a).await["user"], Value::Null);

    let mut admin = env.browser();
    for (method, path, status) in [
        (
            http::Method::GET,
            "/admin/users/%FF/sessions".to_owned(),
            400,
        ),
        (
            http::Method::GET,
            format!("/admin/users/{}/sessions", "x".repeat(600)),
            400,
        ),
        (
            http::Method::POST,
            "/admin/users/alice/sessions".to_owned(),
            405,
        ),
        // An empty user segment now reaches the route and is refused as a bad id (it was an unknown
        // path, 404, under the old suffix router): still a JSON client error.
        (http::Method::GET, "/admin/users//sessions".to_owned(), 400),
    ] {
        let r = admin.send(method.clone(), &path, None).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(
        env.admin_list("nobody").await["total"],
        0,
        "unknown user: empty list"
    );
}

/// Not an assertion about exact bytes (they vary by Redis version and encoding), but a bound: the
/// per-user index costs a small fraction of a session. Prints the figure (`--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_index_costs_little_redis_memory_per_session() {
    let env = env(Kind::Redis, Opts::default()).await;
    let server = env.redis.as_ref().unwrap();
    let mut browsers = Vec::new();
    for _ in 0..10 {
        browsers.push(env.login("alice@example.com").await);
    }
    let set: u64 = server
        .cli(&[
            "MEMORY",
            "USAGE",
            "u:user:alice@example.com",
            "SAMPLES",
            "0",
        ])
        .parse()
        .unwrap();
    let list = env.admin_list("alice@example.com").await;
    let one = list["sessions"][0]["id"].as_str().unwrap();
    let session: u64 = server
        .cli(&["MEMORY", "USAGE", &format!("u:{one}"), "SAMPLES", "0"])
        .parse()
        .unwrap();
    println!(
        "user set of 10 sessions: {set} bytes ({} per session); one session value: {session} bytes",
        set / 10
    );
    assert!(set / 10 < 200, "{set}");
}
