//! The admin and health services over real HTTP on loopback: the seed's curl commands, mounting in Axum
//! and in plain Hyper, pagination, delete, cleanup, protection, errors and `/metrics`.
#![cfg(feature = "axum")]

use axum::extract::ConnectInfo;
use axum::routing;
use axum::{Json, Router};
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use sessionforge::admin::{AdminAuth, AdminService, PeerAddr};
use sessionforge::expiry::{Clock, ManualClock, Timestamp};
use sessionforge::id::{StoreKey, Token};
use sessionforge::store::{
    ChangeSet, Created, Loaded, ManagedStore, MemoryStore, Page, Record, RedisInfo, Saved,
    SessionStore, StoreError, StoreHealth, StoreKind, Usage, Version,
};
use sessionforge::{Session, SessionError, SessionLayer};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt};

// ---------------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------------

/// Runs a test body under a time limit, so a hang fails instead of stalling the suite.
async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("test took longer than 20 s")
}

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    /// The body as JSON, checking the content type.
    fn json(&self) -> Value {
        assert_eq!(
            self.headers
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap()),
            Some("application/json"),
            "status {} body {:?}",
            self.status,
            self.body
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts a JSON error with `status` and answers its message.
    fn error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "body {:?}", self.body);
        let v = self.json();
        let obj = v.as_object().expect("an error is a JSON object");
        assert_eq!(obj.len(), 1, "{v}");
        obj["error"].as_str().expect("error is a string").to_owned()
    }

    /// The session cookie the server set, if any.
    fn cookie(&self) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("id="))
            .map(|c| c.split(';').next().unwrap().to_owned())
            .filter(|c| !c.is_empty())
    }
}

/// One request over a fresh HTTP/1.1 connection.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let res = sender.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, Method::GET, path, &[], "").await
}

/// Sends `raw` bytes as a request and answers the status code and body (for requests a well-behaved
/// client would not build).
async fn raw(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Serves an Axum router on a free loopback port, recording peer addresses.
async fn serve_axum(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

/// Serves `admin` with plain Hyper: every path goes to it unchanged (no prefix stripping), and the
/// socket peer is inserted as [`PeerAddr`].
async fn serve_hyper<S: ManagedStore>(admin: AdminService<S>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let admin = admin.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(PeerAddr(peer));
                        admin.clone().call(req)
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

async fn me(session: Session) -> Result<Json<Value>, SessionError> {
    let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    Ok(Json(json!({ "visits": visits })))
}

/// The djforge shape: a session app at `/api/me`, admin at `/api/sessions`, health at `/api/health`.
fn app(store: MemoryStore, clock: Option<ManualClock>, admin_auth: Option<AdminAuth>) -> Router {
    let mut layer = SessionLayer::new(store.clone())
        .with_secure(false)
        .with_idle_timeout(Duration::from_secs(60));
    if let Some(c) = clock {
        layer = layer.with_clock(c);
    }
    let mut admin = AdminService::new(store);
    if let Some(a) = admin_auth {
        admin = admin.with_auth(a);
    }
    Router::new()
        .route("/api/me", routing::get(me))
        .layer(layer)
        .nest_service("/api/health", admin.health_service())
        .nest_service("/api/sessions", admin)
}

/// A visit to `/api/me` with `cookie` (or none); answers the visit count and the cookie to use next.
async fn visit(addr: SocketAddr, cookie: Option<&str>, ua: &str) -> (u64, String) {
    let cookie_header = cookie.map(|c| format!("id={c}"));
    let mut headers = vec![("user-agent", ua)];
    if let Some(c) = &cookie_header {
        headers.push(("cookie", c.as_str()));
    }
    let r = send(addr, Method::GET, "/api/me", &headers, "").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let visits = r.json()["visits"].as_u64().unwrap();
    let next = r
        .cookie()
        .or_else(|| cookie.map(str::to_owned))
        .expect("a session cookie");
    (visits, next)
}

fn assert_rfc3339(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"));
}

fn record(now: Timestamp, ttl: Duration) -> Record {
    Record {
        created_at: now,
        last_access: now,
        expires: now.plus(ttl),
        deadline: now.plus(ttl * 2),
        user_agent: Some("test".into()),
        user: Some("alice".into()),
        data: Default::default(),
    }
}

async fn fill(store: &MemoryStore, n: usize) -> Vec<StoreKey> {
    let now = sessionforge::expiry::SystemClock.now();
    let mut keys = Vec::new();
    for _ in 0..n {
        let k = Token::generate().store_key();
        store
            .create(&k, &record(now, Duration::from_secs(600)))
            .await
            .unwrap();
        keys.push(k);
    }
    keys
}

/// A request as a router sees it from `peer` (real traffic in these tests is all loopback).
fn from_peer(
    method: Method,
    path: &str,
    peer: &str,
    headers: &[(&str, &str)],
) -> Request<axum::body::Body> {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(axum::body::Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    req
}

async fn oneshot_status(
    app: &Router,
    req: Request<axum::body::Body>,
) -> (StatusCode, HeaderMap, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (parts.status, parts.headers, v)
}

// ---------------------------------------------------------------------------------------------------
// A Redis-shaped store, to exercise the Redis answers without a Redis
// ---------------------------------------------------------------------------------------------------

/// Reports itself as Redis, with configurable memory policy, and can be switched "down".
#[derive(Clone)]
struct FakeRedis {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
    policy: Option<&'static str>,
}

impl FakeRedis {
    fn new(policy: Option<&'static str>) -> Self {
        FakeRedis {
            inner: MemoryStore::new(),
            down: Arc::new(AtomicBool::new(false)),
            policy,
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable {
                backend: StoreKind::Redis,
                source: "Connection refused".into(),
            })
        } else {
            Ok(())
        }
    }
}

impl SessionStore for FakeRedis {
    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        self.check()?;
        self.inner.load(key).await
    }
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        self.check()?;
        self.inner.create(key, record).await
    }
    async fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &std::sync::Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        self.check()?;
        self.inner.save(key, base, ours, changes).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn user_sessions(
        &self,
        user: &str,
    ) -> Result<Vec<sessionforge::store::Summary>, StoreError> {
        self.check()?;
        self.inner.user_sessions(user).await
    }
}

impl ManagedStore for FakeRedis {
    fn kind(&self) -> StoreKind {
        StoreKind::Redis
    }
    async fn count(&self) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.count().await
    }
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        self.check()?;
        if cursor.is_some_and(|c| StoreKey::parse(c).is_err()) {
            return Err(StoreError::InvalidCursor);
        }
        self.inner.list(cursor, limit).await
    }
    async fn cleanup(&self) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.cleanup().await
    }
    async fn health(&self) -> StoreHealth {
        let down = self.down.load(Ordering::SeqCst);
        StoreHealth {
            serving: StoreKind::Redis,
            healthy: !down,
            redis_healthy: Some(!down),
            detail: down.then(|| "Connection refused".to_owned()),
        }
    }
    async fn usage(&self) -> Result<Usage, StoreError> {
        self.check()?;
        Ok(Usage::Redis {
            used_memory: 1_024_000,
            used_memory_human: "1000.00K".into(),
            maxmemory: self.policy.map(|_| 104_857_600),
            maxmemory_policy: self.policy.map(str::to_owned),
        })
    }
    async fn redis_info(&self) -> Result<Option<RedisInfo>, StoreError> {
        self.check()?;
        let mut info = RedisInfo::new();
        let mut server = BTreeMap::new();
        server.insert("redis_version".to_owned(), "7.2.4".to_owned());
        info.insert("server".to_owned(), server);
        Ok(Some(info))
    }
}

// ---------------------------------------------------------------------------------------------------
// The seed's commands
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_seed_command_answers_the_documented_json_shape() {
    bounded(async {
        let store = MemoryStore::new();
        let addr = serve_axum(app(store.clone(), None, None)).await;
        let (_, c1) = visit(addr, None, "curl/8.5.0").await;
        visit(addr, None, "Mozilla/5.0").await;

        // curl http://localhost:3001/api/sessions/stats
        let r = get(addr, "/api/sessions/stats").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
        let v = r.json();
        assert_eq!(v["sessionStore"], "memory");
        assert_eq!(v["sessionCount"], 2);
        let mem = &v["memoryUsage"];
        assert!(
            mem["used_memory"].as_str().unwrap().parse::<u64>().unwrap() > 0,
            "{v}"
        );
        assert!(mem["used_memory_human"].is_string(), "{v}");
        assert_eq!(v["warnings"], json!([]));
        assert_rfc3339(&v["timestamp"]);

        // curl http://localhost:3001/api/sessions/sessions
        let v = get(addr, "/api/sessions/sessions").await.json();
        assert_eq!(v["total"], 2);
        assert_eq!(v["nextCursor"], Value::Null);
        assert_rfc3339(&v["timestamp"]);
        let sessions = v["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 2);
        let mut agents = HashSet::new();
        for s in sessions {
            let id = s["id"].as_str().unwrap();
            assert!(StoreKey::parse(id).is_ok(), "{id}");
            assert_ne!(id, c1, "the listing must not show a token");
            for f in ["createdAt", "lastAccess", "expires"] {
                assert_rfc3339(&s[f]);
            }
            assert_eq!(s["user"], Value::Null);
            agents.insert(s["userAgent"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            agents,
            HashSet::from(["curl/8.5.0".to_owned(), "Mozilla/5.0".to_owned()])
        );
        assert!(
            !String::from_utf8_lossy(&get(addr, "/api/sessions/sessions").await.body).contains(&c1)
        );
        let my_id = Token::parse(&c1).unwrap().store_key();
        assert!(sessions.iter().any(|s| s["id"] == my_id.as_str()));

        // curl -X POST http://localhost:3001/api/sessions/cleanup
        let v = send(addr, Method::POST, "/api/sessions/cleanup", &[], "")
            .await
            .json();
        assert_eq!(v["success"], true);
        assert_eq!(v["deletedSessions"], 0);
        assert!(v["message"].is_string());

        // curl http://localhost:3001/api/sessions/redis-info (no Redis here)
        let msg = get(addr, "/api/sessions/redis-info")
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE);
        assert!(msg.contains("memory"), "{msg}");

        // curl http://localhost:3001/api/health
        let r = get(addr, "/api/health").await;
        assert_eq!(r.status, StatusCode::OK);
        let v = r.json();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["sessionStore"], "memory");
        assert_rfc3339(&v["timestamp"]);
        assert!(v.get("redis").is_none(), "{v}");
    })
    .await
}

#[tokio::test]
async fn a_redis_store_reports_memory_info_and_warns_about_allkeys_eviction() {
    bounded(async {
        let store = FakeRedis::new(Some("allkeys-lru"));
        let addr = serve_hyper(AdminService::new(store.clone())).await;

        let v = get(addr, "/api/sessions/stats").await.json();
        assert_eq!(v["sessionStore"], "redis");
        assert_eq!(v["memoryUsage"]["used_memory"], "1024000");
        assert_eq!(v["memoryUsage"]["used_memory_human"], "1000.00K");
        assert_eq!(v["memoryUsage"]["maxmemory"], "104857600");
        assert_eq!(v["memoryUsage"]["maxmemory_policy"], "allkeys-lru");
        let warnings = v["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1, "{v}");
        assert!(warnings[0].as_str().unwrap().contains("volatile-lru"));

        let v = get(addr, "/api/sessions/redis-info").await.json();
        assert_eq!(v["redis"]["server"]["redis_version"], "7.2.4");
        assert_rfc3339(&v["timestamp"]);

        let v = get(addr, "/api/sessions/health").await.json();
        assert_eq!(
            (v["status"].as_str(), v["redis"].as_str()),
            (Some("ok"), Some("healthy"))
        );

        // CONFIG forbidden: no policy known, no warning, no error.
        let quiet = serve_hyper(AdminService::new(FakeRedis::new(None))).await;
        let v = get(quiet, "/stats").await.json();
        assert!(v["memoryUsage"].get("maxmemory_policy").is_none(), "{v}");
        assert_eq!(v["warnings"], json!([]));

        // A volatile policy is fine.
        let fine = serve_hyper(AdminService::new(FakeRedis::new(Some("volatile-lru")))).await;
        assert_eq!(get(fine, "/stats").await.json()["warnings"], json!([]));
    })
    .await
}

#[tokio::test]
async fn a_down_store_is_a_503_json_error_and_health_says_unavailable() {
    bounded(async {
        let store = FakeRedis::new(None);
        let addr = serve_hyper(AdminService::new(store.clone())).await;
        store.down.store(true, Ordering::SeqCst);
        for path in ["/stats", "/sessions", "/redis-info"] {
            let msg = get(addr, path).await.error(StatusCode::SERVICE_UNAVAILABLE);
            assert!(msg.contains("unavailable"), "{path}: {msg}");
        }
        send(addr, Method::POST, "/cleanup", &[], "")
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE);
        let r = get(addr, "/health").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        let v = r.json();
        assert_eq!(v["status"], "unavailable");
        assert_eq!(v["redis"], "unhealthy");
        assert_eq!(v["sessionStore"], "redis");
        assert!(v["detail"].is_string());
        // Metrics still answer while the store is down, reporting Redis as down.
        let r = get(addr, "/metrics").await;
        assert_eq!(r.status, StatusCode::OK);
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        assert!(text.contains("\nsessionforge_redis_up 0\n"), "{text}");
        assert!(!text.contains("\nsessionforge_sessions "), "{text}");
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// Mounting
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn plain_hyper_without_prefix_stripping_reaches_every_route() {
    bounded(async {
        let store = MemoryStore::new();
        let keys = fill(&store, 3).await;
        let addr = serve_hyper(AdminService::new(store.clone())).await;
        for path in ["/api/sessions/stats", "/stats", "/admin/x/stats"] {
            assert_eq!(get(addr, path).await.json()["sessionCount"], 3, "{path}");
        }
        for path in ["/api/sessions/sessions", "/sessions"] {
            assert_eq!(get(addr, path).await.json()["total"], 3, "{path}");
        }
        let r = send(
            addr,
            Method::DELETE,
            &format!("/api/sessions/sessions/{}", keys[0]),
            &[],
            "",
        )
        .await;
        assert_eq!(r.json()["success"], true);
        let r = send(
            addr,
            Method::DELETE,
            &format!("/sessions/{}", keys[1]),
            &[],
            "",
        )
        .await;
        assert_eq!(r.json()["success"], true);
        assert_eq!(store.count().await.unwrap(), 1);
        assert_eq!(
            get(addr, "/api/sessions/health").await.json()["status"],
            "ok"
        );
    })
    .await
}

#[tokio::test]
async fn axum_nest_service_strips_the_prefix_and_health_answers_at_its_mount_point() {
    bounded(async {
        let store = MemoryStore::new();
        fill(&store, 2).await;
        let addr = serve_axum(app(store, None, None)).await;
        assert_eq!(
            get(addr, "/api/sessions/stats").await.json()["sessionCount"],
            2
        );
        // The health service answers at its mount point, whatever follows.
        for path in ["/api/health", "/api/health/", "/api/health/live"] {
            let r = get(addr, path).await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
            assert_eq!(r.json()["status"], "ok", "{path}");
        }
        let r = send(addr, Method::POST, "/api/health", &[], "").await;
        r.error(StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers[header::ALLOW], "GET, HEAD");
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// Listing, delete, cleanup
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn following_next_cursor_visits_every_session_exactly_once() {
    bounded(async {
        let store = MemoryStore::new();
        let keys = fill(&store, 23).await;
        let addr = serve_hyper(AdminService::new(store).with_max_page(10)).await;
        let mut seen = HashSet::new();
        let mut path = "/api/sessions/sessions?limit=5".to_owned();
        let mut pages = 0;
        loop {
            let v = get(addr, &path).await.json();
            pages += 1;
            assert_eq!(v["total"], 23);
            let page = v["sessions"].as_array().unwrap();
            assert!(page.len() <= 5 && !page.is_empty(), "{v}");
            for s in page {
                assert!(
                    seen.insert(s["id"].as_str().unwrap().to_owned()),
                    "seen twice: {s}"
                );
            }
            match v["nextCursor"].as_str() {
                Some(c) => path = format!("/api/sessions/sessions?limit=5&cursor={c}"),
                None => break,
            }
            assert!(pages < 10, "the cursor never ends");
        }
        assert_eq!(pages, 5);
        let expected: HashSet<String> = keys.iter().map(|k| k.to_string()).collect();
        assert_eq!(seen, expected);

        // Bounds: the default page is capped by the maximum, beyond it is a 400.
        assert_eq!(
            get(addr, "/sessions").await.json()["sessions"]
                .as_array()
                .unwrap()
                .len(),
            10
        );
        assert_eq!(
            get(addr, "/sessions?limit=10").await.json()["sessions"]
                .as_array()
                .unwrap()
                .len(),
            10
        );
        for bad in [
            "limit=11",
            "limit=0",
            "limit=-3",
            "limit=ten",
            "limit=99999999999999999999999",
        ] {
            let msg = get(addr, &format!("/sessions?{bad}"))
                .await
                .error(StatusCode::BAD_REQUEST);
            assert!(msg.contains("1 to 10"), "{bad}: {msg}");
        }
    })
    .await
}

#[tokio::test]
async fn a_bad_cursor_is_a_400_when_the_store_says_so() {
    bounded(async {
        let addr = serve_hyper(AdminService::new(FakeRedis::new(None))).await;
        get(addr, "/sessions?cursor=garbage")
            .await
            .error(StatusCode::BAD_REQUEST);
        get(addr, "/sessions?cursor=%01")
            .await
            .error(StatusCode::BAD_REQUEST);
    })
    .await
}

#[tokio::test]
async fn a_garbage_cursor_on_the_memory_store_is_a_400() {
    bounded(async {
        let addr = serve_hyper(AdminService::new(MemoryStore::new())).await;
        get(addr, "/sessions?cursor=garbage")
            .await
            .error(StatusCode::BAD_REQUEST);
    })
    .await
}

#[tokio::test]
async fn a_deleted_session_is_gone_for_its_client() {
    bounded(async {
        let store = MemoryStore::new();
        let addr = serve_axum(app(store.clone(), None, None)).await;
        let (n, cookie) = visit(addr, None, "browser").await;
        assert_eq!(n, 1);
        let (n, cookie) = visit(addr, Some(&cookie), "browser").await;
        assert_eq!(n, 2);
        let id = Token::parse(&cookie).unwrap().store_key();

        let path = format!("/api/sessions/sessions/{id}");
        let v = send(addr, Method::DELETE, &path, &[], "").await.json();
        assert_eq!(v["success"], true);
        assert!(v["message"].as_str().unwrap().contains(id.as_str()));
        // Twice: now absent.
        send(addr, Method::DELETE, &path, &[], "")
            .await
            .error(StatusCode::NOT_FOUND);

        // The client's cookie no longer finds anything: it starts over with a fresh session.
        let (n, fresh) = visit(addr, Some(&cookie), "browser").await;
        assert_eq!(n, 1);
        assert_ne!(fresh, cookie);
        assert_eq!(store.count().await.unwrap(), 1);
    })
    .await
}

#[tokio::test]
async fn an_id_that_is_not_a_store_key_never_reaches_the_store() {
    bounded(async {
        let store = FakeRedis::new(None);
        let addr = serve_hyper(AdminService::new(store.clone())).await;
        // The store is "down": a request that reached it would be a 503, not a 400.
        store.down.store(true, Ordering::SeqCst);
        for bad in ["nonsense", "..%2f..%2fetc%2fpasswd", &"A".repeat(44)] {
            send(
                addr,
                Method::DELETE,
                &format!("/api/sessions/sessions/{bad}"),
                &[],
                "",
            )
            .await
            .error(StatusCode::BAD_REQUEST);
        }
        // A well-formed key does reach the store.
        let key = Token::generate().store_key();
        send(addr, Method::DELETE, &format!("/sessions/{key}"), &[], "")
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE);
    })
    .await
}

#[tokio::test]
async fn cleanup_removes_expired_sessions() {
    bounded(async {
        let clock = ManualClock::starting_now();
        let store = MemoryStore::new().with_clock(clock.clone());
        let addr = serve_axum(app(store.clone(), Some(clock.clone()), None)).await;
        visit(addr, None, "a").await;
        visit(addr, None, "b").await;
        clock.advance(Duration::from_secs(61)); // past the 60 s idle timeout
        visit(addr, None, "c").await;
        assert_eq!(
            get(addr, "/api/sessions/stats").await.json()["sessionCount"],
            1
        );

        let v = send(addr, Method::POST, "/api/sessions/cleanup", &[], "")
            .await
            .json();
        assert_eq!(v["success"], true);
        assert_eq!(v["deletedSessions"], 2);
        let v = send(addr, Method::POST, "/api/sessions/cleanup", &[], "")
            .await
            .json();
        assert_eq!(v["deletedSessions"], 0);
        let v = get(addr, "/api/sessions/sessions").await.json();
        assert_eq!(v["sessions"].as_array().unwrap().len(), 1);
        assert_eq!(v["sessions"][0]["userAgent"], "c");
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// Protection
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn token_mode_wants_the_right_bearer_token_and_leaves_health_open() {
    bounded(async {
        let addr = serve_axum(app(
            MemoryStore::new(),
            None,
            Some(AdminAuth::bearer("s3cret-token")),
        ))
        .await;
        for path in [
            "/api/sessions/stats",
            "/api/sessions/sessions",
            "/api/sessions/metrics",
        ] {
            let r = get(addr, path).await;
            let msg = r.error(StatusCode::UNAUTHORIZED);
            assert!(msg.contains("Bearer"), "{msg}");
            let challenge = r.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(challenge.starts_with("Bearer"), "{challenge}");

            let r = send(
                addr,
                Method::GET,
                path,
                &[("authorization", "Bearer wrong")],
                "",
            )
            .await;
            r.error(StatusCode::UNAUTHORIZED);
            assert!(r.headers[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_token"));

            let r = send(
                addr,
                Method::GET,
                path,
                &[("authorization", "Bearer s3cret-token")],
                "",
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
        }
        send(addr, Method::POST, "/api/sessions/cleanup", &[], "")
            .await
            .error(StatusCode::UNAUTHORIZED);
        send(
            addr,
            Method::POST,
            "/api/sessions/cleanup",
            &[("authorization", "bearer s3cret-token")],
            "",
        )
        .await
        .json();
        // Health is not sensitive.
        assert_eq!(get(addr, "/api/health").await.status, StatusCode::OK);
        assert_eq!(
            get(addr, "/api/sessions/health").await.status,
            StatusCode::OK
        );
    })
    .await
}

#[tokio::test]
async fn loopback_mode_admits_local_peers_and_refuses_remote_ones_whatever_their_headers() {
    bounded(async {
        let store = MemoryStore::new();
        let app = app(store.clone(), None, None);
        // Over real HTTP every peer is loopback: admitted.
        let addr = serve_axum(app.clone()).await;
        assert_eq!(
            get(addr, "/api/sessions/sessions").await.status,
            StatusCode::OK
        );

        // From elsewhere: 403, and X-Forwarded-For / Forwarded claiming localhost do not help.
        for headers in [
            &[][..],
            &[("x-forwarded-for", "127.0.0.1")][..],
            &[("forwarded", "for=127.0.0.1"), ("x-real-ip", "127.0.0.1")][..],
        ] {
            let req = from_peer(
                Method::GET,
                "/api/sessions/sessions",
                "203.0.113.7:5555",
                headers,
            );
            let (status, _, v) = oneshot_status(&app, req).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
            assert!(v["error"].is_string());
        }
        let req = from_peer(
            Method::DELETE,
            &format!("/api/sessions/sessions/{}", fill(&store, 1).await[0]),
            "[2001:db8::1]:1",
            &[],
        );
        assert_eq!(oneshot_status(&app, req).await.0, StatusCode::FORBIDDEN);
        assert_eq!(store.count().await.unwrap(), 1, "a refused delete deleted");

        // Our own PeerAddr extension works the same way (Hyper / Tonic users).
        let admin = AdminService::new(store.clone());
        let mut req = Request::get("/stats").body(()).unwrap();
        req.extensions_mut()
            .insert(PeerAddr("10.0.0.2:1".parse().unwrap()));
        assert_eq!(
            admin.clone().oneshot(req).await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
        let mut req = Request::get("/stats").body(()).unwrap();
        req.extensions_mut()
            .insert(PeerAddr("[::1]:1".parse().unwrap()));
        assert_eq!(
            admin.clone().oneshot(req).await.unwrap().status(),
            StatusCode::OK
        );

        // No peer information at all: refused, saying how to fix it.
        let res = admin
            .oneshot(
                Request::get("/stats")
                    .header("x-forwarded-for", "127.0.0.1")
                    .body(())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let msg = String::from_utf8_lossy(&body);
        assert!(
            msg.contains("into_make_service_with_connect_info") && msg.contains("PeerAddr"),
            "{msg}"
        );
    })
    .await
}

#[tokio::test]
async fn token_or_loopback_mode_admits_a_remote_peer_only_with_the_token() {
    bounded(async {
        let app = app(
            MemoryStore::new(),
            None,
            Some(AdminAuth::bearer_or_loopback("tok")),
        );
        let remote = "198.51.100.4:40000";
        let (status, headers, v) = oneshot_status(
            &app,
            from_peer(Method::GET, "/api/sessions/stats", remote, &[]),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        assert!(v["error"].is_string());
        let (status, _, v) = oneshot_status(
            &app,
            from_peer(
                Method::GET,
                "/api/sessions/stats",
                remote,
                &[("authorization", "Bearer tok")],
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["sessionStore"], "memory");
        let (status, _, _) = oneshot_status(
            &app,
            from_peer(
                Method::GET,
                "/api/sessions/stats",
                remote,
                &[("x-forwarded-for", "127.0.0.1")],
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // A local peer needs no token, over real HTTP ...
        let addr = serve_axum(app.clone()).await;
        assert_eq!(
            get(addr, "/api/sessions/stats").await.status,
            StatusCode::OK
        );
        // ... but a wrong one is reported rather than ignored.
        send(
            addr,
            Method::GET,
            "/api/sessions/stats",
            &[("authorization", "Bearer nope")],
            "",
        )
        .await
        .error(StatusCode::UNAUTHORIZED);
    })
    .await
}

#[tokio::test]
async fn open_mode_answers_everyone() {
    bounded(async {
        let app = app(
            MemoryStore::new(),
            None,
            Some(AdminAuth::insecure_open_to_anyone()),
        );
        let (status, _, _) = oneshot_status(
            &app,
            from_peer(Method::GET, "/api/sessions/sessions", "192.0.2.1:1", &[]),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// Errors and odd inputs
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_in_json() {
    bounded(async {
        let addr = serve_axum(app(MemoryStore::new(), None, None)).await;
        for path in [
            "/api/sessions",
            "/api/sessions/",
            "/api/sessions/nope",
            "/api/sessions/stats/extra",
        ] {
            get(addr, path).await.error(StatusCode::NOT_FOUND);
        }
        for (method, path, allow) in [
            (Method::POST, "/api/sessions/stats", "GET, HEAD"),
            (Method::GET, "/api/sessions/cleanup", "POST"),
            (Method::DELETE, "/api/sessions/sessions", "GET, HEAD"),
            (Method::PUT, "/api/sessions/metrics", "GET, HEAD"),
        ] {
            let r = send(addr, method.clone(), path, &[], "").await;
            let msg = r.error(StatusCode::METHOD_NOT_ALLOWED);
            assert!(msg.contains(method.as_str()), "{msg}");
            assert_eq!(r.headers[header::ALLOW], allow, "{method} {path}");
        }
        let id = Token::generate().store_key();
        let r = get(addr, &format!("/api/sessions/sessions/{id}")).await;
        r.error(StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers[header::ALLOW], "DELETE");
    })
    .await
}

#[tokio::test]
async fn odd_inputs_get_a_4xx_and_never_a_5xx() {
    bounded(async {
        let store = MemoryStore::new();
        fill(&store, 2).await;
        let axum_addr = serve_axum(app(store.clone(), None, None)).await;
        let hyper_addr = serve_hyper(AdminService::new(store.clone())).await;
        let long = format!("/api/sessions/{}/stats", "x".repeat(4000));
        let requests: Vec<String> = vec![
            "GET // HTTP/1.1".into(),
            "GET /api/sessions//stats HTTP/1.1".into(),
            "GET /api/sessions/%2e%2e/%2e%2e/stats%2f HTTP/1.1".into(),
            "GET /api/sessions/../../etc/passwd HTTP/1.1".into(),
            format!("GET {long} HTTP/1.1"),
            "GET /api/sessions/sessions?limit=%%%&cursor=%ff%fe HTTP/1.1".into(),
            "GET /api/sessions/sessions?limit=1&limit=2 HTTP/1.1".into(),
            "GET /api/sessions/sessions?cursor=%00 HTTP/1.1".into(),
            "DELETE /api/sessions/sessions/%2e%2e%2f%2e%2e%2fetc%2fpasswd HTTP/1.1".into(),
            "DELETE /api/sessions/sessions/ HTTP/1.1".into(),
            "OPTIONS * HTTP/1.1".into(),
            "BREW /api/sessions/stats HTTP/1.1".into(),
        ];
        // Axum normalises some paths before the service sees them (`/api/sessions//stats` reaches
        // `/stats`), so there only "never a 5xx" holds; the Hyper server passes paths through untouched
        // and every one of these must be a 4xx.
        for (addr, strict) in [(axum_addr, false), (hyper_addr, true)] {
            for line in &requests {
                let req = format!("{line}\r\nhost: x\r\nconnection: close\r\n\r\n");
                let (status, body) = raw(addr, req.as_bytes()).await;
                assert!(status < 500, "{line} -> {status} {body}");
                if strict {
                    assert!((400..500).contains(&status), "{line} -> {status} {body}");
                }
            }
            // Empty and unknown query parameters are ignored; a `limit` without a value is the default.
            let req = "GET /api/sessions/sessions?&&&=&limit&x=%zz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
            let (status, body) = raw(addr, req.as_bytes()).await;
            assert_eq!(status, 200, "{body}");
            // A body on a GET is ignored.
            let req = "GET /api/sessions/stats HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 11\r\ncontent-type: application/json\r\n\r\n{\"a\":[1,2]}";
            let (status, body) = raw(addr, req.as_bytes()).await;
            assert_eq!(status, 200, "{body}");
            // Authorization garbage is a 401/403, not a crash.
            for auth in ["Bearer", "Bearer  ", "Basic ???", "Bearer \u{7f}"] {
                let req = format!("GET /api/sessions/stats HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-forwarded-for: 127.0.0.1\r\nauthorization: {auth}\r\n\r\n");
                let (status, _) = raw(addr, req.as_bytes()).await;
                assert!(status < 500, "{auth:?} -> {status}");
            }
        }
        assert_eq!(store.count().await.unwrap(), 2);
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------------

/// Checks Prometheus text exposition 0.0.4: every sample line is `name{labels} value` with a numeric
/// value, and every sample's metric family has a `# TYPE` line before it. Answers the samples.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value not numeric: {line}")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                for pair in labels.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "{line}"
                    );
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "{line}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name: {line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s).filter(|base| {
                    types
                        .get(*base)
                        .is_some_and(|t| t == "histogram" || t == "summary")
                })
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE for {family}: {line}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_session_gauge() {
    bounded(async {
        let store = MemoryStore::new();
        fill(&store, 4).await;
        let addr = serve_axum(app(store, None, None)).await;
        visit(addr, None, "x").await; // some store calls for the histogram
        let r = get(addr, "/api/sessions/metrics").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.headers[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        let samples = parse_prometheus(&text);
        assert_eq!(samples.get("sessionforge_sessions"), Some(&5.0), "{text}");
        assert!(
            samples.contains_key("sessionforge_sessions_created_total"),
            "{text}"
        );
        assert!(
            samples
                .keys()
                .any(|k| k.starts_with("sessionforge_store_call_duration_seconds_bucket")),
            "{text}"
        );
        // No Redis behind a memory store: no redis_up gauge.
        assert!(!text.contains("sessionforge_redis_up"));
    })
    .await
}

#[test]
fn the_prometheus_checker_rejects_malformed_text() {
    for bad in [
        "no_type 1\n",
        "# TYPE x counter\nx one\n",
        "# TYPE x counter\nx{a=b} 1\n",
        "# TYPE x counter\nx{a=\"b\" 1\n",
        "# TYPE x counter\nx\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_prometheus(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
    assert_eq!(
        parse_prometheus("# TYPE x gauge\nx{a=\"b\"} 2.5\n").len(),
        1
    );
}

#[tokio::test]
async fn cleanup_through_the_admin_api_removes_expired_session_files() {
    use sessionforge::store::FileStore;
    let dir = tempfile::tempdir().unwrap();
    let clock = sessionforge::expiry::ManualClock::starting_now();
    let store = FileStore::new(dir.path()).with_clock(clock.clone());
    let app = axum::Router::new()
        .route(
            "/touch",
            axum::routing::post(|s: sessionforge::Session| async move {
                s.insert("x", 1).await?;
                Ok::<_, sessionforge::SessionError>("ok")
            }),
        )
        .layer(
            sessionforge::SessionLayer::new(store.clone())
                .with_clock(clock.clone())
                .with_idle_timeout(std::time::Duration::from_secs(60)),
        )
        .nest_service("/api/sessions", AdminService::new(store.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let post = |path: &str| {
        let req = http::Request::post(format!("http://{addr}{path}"))
            .body(http_body_util::Full::default())
            .unwrap();
        let fut = client.request(req);
        async move {
            use http_body_util::BodyExt;
            let res = fut.await.unwrap();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default()
        }
    };
    post("/touch").await;
    post("/touch").await;
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    let nothing = post("/api/sessions/cleanup").await;
    assert_eq!(nothing["deletedSessions"], 0);
    clock.advance(std::time::Duration::from_secs(61));
    let cleaned = post("/api/sessions/cleanup").await;
    assert_eq!(cleaned["success"], true);
    assert_eq!(cleaned["deletedSessions"], 2, "{cleaned}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
