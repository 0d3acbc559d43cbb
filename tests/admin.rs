//! The admin router and the public health check over real HTTP on loopback: the seed's curl commands,
//! mounting under Axum (`nest`, `merge`), plain Hyper and next to Tonic, pagination, delete, cleanup,
//! protection (auth modes, Host names, proxies, cross-site requests), errors, the dashboard and
//! `/metrics`.
#![cfg(feature = "axum")]

#[path = "../examples/greeter/mod.rs"]
mod greeter;

use axum::extract::ConnectInfo;
use axum::routing;
use axum::{Json, Router};
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use sessionforge::admin::{AdminAuth, AdminService, PeerAddr};
use sessionforge::expiry::{ManualClock, Timestamp};
use sessionforge::id::{StoreKey, Token};
use sessionforge::store::{
    ChangeSet, Created, Health, Loaded, MemoryStore, Page, Record, Replaced, Saved, SessionStore,
    StoreError, Summary, Usage, Version,
};
use sessionforge::{Session, SessionError, SessionLayer};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

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

    /// The body as text.
    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).expect("a UTF-8 body")
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

    /// The methods of the `Allow` header, whatever its spacing.
    fn allow(&self) -> BTreeSet<String> {
        allow_set(&self.headers)
    }
}

fn allow_set(headers: &HeaderMap) -> BTreeSet<String> {
    headers
        .get(header::ALLOW)
        .unwrap_or_else(|| panic!("no Allow header in {headers:?}"))
        .to_str()
        .unwrap()
        .split(',')
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

fn methods(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|m| (*m).to_owned()).collect()
}

/// The HTTP version a request goes out with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    /// HTTP/1.1, with a `Host` header naming the server's address (unless the test gives its own).
    H1,
    /// HTTP/2 without TLS (prior knowledge, as gRPC clients speak it): the host travels as the
    /// `:authority` pseudo-header (the server's address, or the `host` the test gives), and no
    /// `Host` header is sent.
    H2,
}

/// One request over a fresh connection.
async fn call(
    addr: SocketAddr,
    proto: Proto,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut req = Request::builder().method(method);
    match proto {
        Proto::H1 => {
            req = req.uri(path);
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
                req = req.header(header::HOST, addr.to_string());
            }
        }
        Proto::H2 => {
            // A `host` given by the test names the authority instead (HTTP/2 has no Host header).
            let authority = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("host"))
                .map_or_else(|| addr.to_string(), |(_, v)| (*v).to_owned());
            req = req.uri(format!("http://{authority}{path}"));
        }
    }
    for (k, v) in headers {
        if proto == Proto::H2 && k.eq_ignore_ascii_case("host") {
            continue;
        }
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let res = match proto {
        Proto::H1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        }
        Proto::H2 => {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            sender.send_request(req).await.unwrap()
        }
    };
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// One HTTP/1.1 request.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    call(addr, Proto::H1, method, path, headers, body).await
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

/// Serves `router` with plain Hyper (HTTP/1.1 and HTTP/2, hyper-util's auto builder): the router as a
/// Tower service through `TowerToHyperService`, with the socket peer inserted as [`PeerAddr`] into
/// every request of the connection.
async fn serve_hyper(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = listener.accept().await.unwrap();
            let router = router.clone();
            tokio::spawn(async move {
                let svc = router.map_request(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    req
                });
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// Serves a Tonic server on a free loopback port: the greeter (`greeter.Greeter/SayHello`, sessions in
/// `sessions` through the `x-session-id` metadata header) and, on the same port and the same
/// connections, the admin at `/api/sessions` and the public health at `/api/health`. HTTP/1.1 is
/// accepted beside gRPC's HTTP/2, for `curl`. The peer comes from Tonic's `TcpConnectInfo`, inserted as
/// [`PeerAddr`] by a small layer, so loopback mode works.
async fn serve_tonic(admin: &AdminService, sessions: MemoryStore) -> SocketAddr {
    use tonic::service::Routes;
    use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Routes::new(greeter::Greeter)
        .into_axum_router()
        .nest("/api/health", admin.health())
        .nest("/api/sessions", admin.router());
    let peer = tower::util::MapRequestLayer::new(|mut req: Request<tonic::body::Body>| {
        let remote = req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(|c| c.remote_addr());
        if let Some(remote) = remote {
            req.extensions_mut().insert(PeerAddr(remote));
        }
        req
    });
    let layer = SessionLayer::new(sessions)
        .with_header(http::HeaderName::from_static(greeter::SESSION_HEADER));
    tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(peer)
            .layer(layer)
            .add_routes(Routes::from(router))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

async fn me(session: Session) -> Result<Json<Value>, SessionError> {
    let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", visits).await?;
    Ok(Json(json!({ "visits": visits })))
}

/// The djforge shape: a session app at `/api/me`, `admin` at `/api/sessions`, its public health at
/// `/api/health`. The store's clock is the layer's.
fn app_with(store: MemoryStore, admin: &AdminService) -> Router {
    let layer = SessionLayer::new(store)
        .with_secure(false)
        .with_idle_timeout(Duration::from_secs(60));
    Router::new()
        .route("/api/me", routing::get(me))
        .layer(layer)
        .nest("/api/health", admin.health())
        .nest("/api/sessions", admin.router())
}

/// [`app_with`] over an admin of `store` with `admin_auth` (loopback-only by default).
fn app(store: MemoryStore, admin_auth: Option<AdminAuth>) -> Router {
    let mut admin = AdminService::new(store.clone());
    if let Some(a) = admin_auth {
        admin = admin.with_auth(a);
    }
    app_with(store, &admin)
}

/// A memory store on `clock`.
fn memory_at(clock: &ManualClock) -> MemoryStore {
    MemoryStore::builder().with_clock(clock.clone()).build()
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
    let mut r = Record::new(now, now.plus(ttl), now.plus(ttl * 2));
    r.user_agent = Some("test".into());
    r.user = Some("alice".into());
    r
}

/// Stores `n` sessions of alice in `store`, expiring in ten minutes.
async fn fill<S: SessionStore>(store: &S, n: usize) -> Vec<StoreKey> {
    let now = store.clock().now();
    let mut keys = Vec::new();
    for _ in 0..n {
        let k = Token::generate().store_key();
        let created = store
            .create(&k, &record(now, Duration::from_secs(600)))
            .await
            .unwrap();
        assert_eq!(created, Created::Created);
        keys.push(k);
    }
    keys
}

/// A request as a router sees it from `peer` (real traffic in these tests is all loopback). It asks
/// for `localhost:3001` unless `headers` name another host.
fn from_peer(
    method: Method,
    path: &str,
    peer: &str,
    headers: &[(&str, &str)],
) -> Request<axum::body::Body> {
    let mut req = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header(header::HOST, "localhost:3001");
    }
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
// Stores for the admin to report on: one shaped like Redis, one with only the core contract
// ---------------------------------------------------------------------------------------------------

/// Reports itself as Redis, with a configurable memory policy (and the warning the Redis store gives
/// for an `allkeys-*` one), cluster-style operator detail in its health, and can be switched "down".
#[derive(Clone)]
struct FakeRedis {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
    policy: Option<&'static str>,
}

/// What only operators may see: the fake's health detail names a host.
const FAKE_DETAIL_DOWN: &str = "Connection refused (os error 111) talking to 10.0.0.7:6379";

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
                backend: "redis",
                source: "Connection refused".into(),
            })
        } else {
            Ok(())
        }
    }
}

impl SessionStore for FakeRedis {
    fn name(&self) -> &'static str {
        "redis"
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        self.check()?;
        self.inner.load(key).await
    }
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        self.check()?;
        self.inner.create(key, record).await
    }
    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> Result<Replaced, StoreError> {
        self.check()?;
        self.inner.replace(key, expected, record).await
    }
    async fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        self.check()?;
        self.inner.save(key, base, ours, changes).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn user_sessions(&self, user: &str) -> Result<Vec<Summary>, StoreError> {
        self.check()?;
        self.inner.user_sessions(user).await
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
    async fn health(&self) -> Health {
        if self.down.load(Ordering::SeqCst) {
            Health::ok("redis")
                .unavailable("not answering")
                .with_backend("redis", false)
                .with_detail(FAKE_DETAIL_DOWN)
        } else {
            Health::ok("redis")
                .with_backend("redis", true)
                .with_detail("PING 0.2 ms at 10.0.0.7:6379")
                .with_extra(
                    "nodes",
                    json!([{"address": "10.0.0.7:6379", "role": "master", "status": "ok"}]),
                )
        }
    }
    async fn usage(&self) -> Result<Usage, StoreError> {
        self.check()?;
        let mut u = Usage::new("memoryUsage")
            .with("used_memory", "1024000")
            .with("used_memory_human", "1000.00K");
        if let Some(policy) = self.policy {
            u = u
                .with("maxmemory", "104857600")
                .with("maxmemory_policy", policy);
            if policy.starts_with("allkeys-") {
                u = u.warn(format!(
                    "Redis maxmemory-policy is {policy}: under memory pressure Redis evicts live \
                     sessions; use noeviction or volatile-lru"
                ));
            }
        }
        Ok(u)
    }
    async fn info(&self) -> Result<Option<Map<String, Value>>, StoreError> {
        self.check()?;
        let info = json!({"redis": {"server": {"redis_version": "7.2.4"}}});
        Ok(info.as_object().cloned())
    }
}

/// A store implementing only the core of the contract (name and the four primitives) over a memory
/// store: every optional capability answers "unsupported".
#[derive(Clone, Default)]
struct CoreOnly(MemoryStore);

impl SessionStore for CoreOnly {
    fn name(&self) -> &'static str {
        "core-only"
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        self.0.load(key).await
    }
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        self.0.create(key, record).await
    }
    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> Result<Replaced, StoreError> {
        self.0.replace(key, expected, record).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        self.0.delete(key).await
    }
}

/// Calls every route of an admin over a [`MemoryStore`] (`store`, holding no sessions yet) mounted
/// at `prefix` (`""` when merged at the root), through `proto`, and checks each answer. `metrics`:
/// whether the admin has an exporter.
async fn every_route(
    addr: SocketAddr,
    proto: Proto,
    prefix: &str,
    store: &MemoryStore,
    metrics: bool,
) {
    let at = |p: &str| format!("{prefix}{p}");
    let go = |method: Method, path: String| async move {
        call(addr, proto, method, &path, &[], "").await
    };
    let keys = fill(store, 3).await;
    let ctx = format!("{proto:?} {prefix:?}");

    let r = go(Method::GET, at("/stats")).await;
    assert_eq!(r.status, StatusCode::OK, "{ctx}: {:?}", r.body);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let v = r.json();
    assert_eq!(v["sessionStore"], "memory", "{ctx}");
    assert_eq!(v["sessionCount"], 3, "{ctx}");
    assert!(v["memoryUsage"]["used_memory"].is_string(), "{ctx}: {v}");

    let v = go(Method::GET, at("/sessions?limit=2")).await.json();
    assert_eq!(v["total"], 3, "{ctx}");
    assert_eq!(v["sessions"].as_array().unwrap().len(), 2, "{ctx}");
    let cursor = v["nextCursor"].as_str().expect("a next page").to_owned();
    let v = go(
        Method::GET,
        at(&format!("/sessions?limit=2&cursor={cursor}")),
    )
    .await
    .json();
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1, "{ctx}");
    assert_eq!(v["nextCursor"], Value::Null, "{ctx}");

    let v = go(Method::GET, at("/users/alice/sessions")).await.json();
    assert_eq!(v["user"], "alice", "{ctx}");
    assert_eq!(v["total"], 3, "{ctx}");

    let v = go(Method::DELETE, at(&format!("/sessions/{}", keys[0])))
        .await
        .json();
    assert_eq!(v["success"], true, "{ctx}");
    go(Method::DELETE, at(&format!("/sessions/{}", keys[0])))
        .await
        .error(StatusCode::NOT_FOUND);

    let v = go(Method::DELETE, at("/users/alice/sessions")).await.json();
    assert_eq!(v["success"], true, "{ctx}");
    assert_eq!(v["deletedSessions"], 2, "{ctx}");
    assert_eq!(store.count().await.unwrap(), 0, "{ctx}");

    let v = go(Method::POST, at("/cleanup")).await.json();
    assert_eq!(v["success"], true, "{ctx}");
    assert_eq!(v["deletedSessions"], 0, "{ctx}");

    let msg = go(Method::GET, at("/redis-info"))
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(msg.contains("memory"), "{ctx}: {msg}");

    let v = go(Method::GET, at("/health")).await.json();
    assert_eq!(v["status"], "ok", "{ctx}");
    assert_eq!(v["sessionStore"], "memory", "{ctx}");

    let r = go(Method::GET, at("/metrics")).await;
    if metrics {
        assert_eq!(r.status, StatusCode::OK, "{ctx}: {:?}", r.body);
        assert_eq!(
            r.headers[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
    } else {
        let msg = r.error(StatusCode::NOT_FOUND);
        assert!(msg.contains("with_metrics"), "{ctx}: {msg}");
    }

    for (page, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard.css", "text/css"),
        ("/dashboard.js", "text/javascript"),
    ] {
        let r = go(Method::GET, at(page)).await;
        assert_eq!(r.status, StatusCode::OK, "{ctx} {page}");
        let ct = r.headers[header::CONTENT_TYPE].to_str().unwrap();
        assert!(ct.starts_with(kind), "{ctx} {page}: {ct}");
    }

    go(Method::GET, at("/no-such-route"))
        .await
        .error(StatusCode::NOT_FOUND);
    let r = go(Method::POST, at("/stats")).await;
    r.error(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.allow(), methods(&["GET", "HEAD"]), "{ctx}");
}

// ---------------------------------------------------------------------------------------------------
// The seed's commands
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn each_seed_command_answers_the_documented_json_shape() {
    bounded(async {
        let store = MemoryStore::new();
        let addr = serve_axum(app(store.clone(), None)).await;
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
        assert!(!get(addr, "/api/sessions/sessions")
            .await
            .text()
            .contains(&c1));
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
        assert!(v.get("detail").is_none(), "{v}");
    })
    .await
}

#[tokio::test]
async fn a_redis_store_reports_memory_info_and_its_warnings() {
    bounded(async {
        let store = FakeRedis::new(Some("allkeys-lru"));
        let addr = serve_hyper(
            Router::new().nest("/api/sessions", AdminService::new(store.clone()).router()),
        )
        .await;

        let v = get(addr, "/api/sessions/stats").await.json();
        assert_eq!(v["sessionStore"], "redis");
        assert_eq!(v["memoryUsage"]["used_memory"], "1024000");
        assert_eq!(v["memoryUsage"]["used_memory_human"], "1000.00K");
        assert_eq!(v["memoryUsage"]["maxmemory"], "104857600");
        assert_eq!(v["memoryUsage"]["maxmemory_policy"], "allkeys-lru");
        // The store's warnings are passed through as it words them (the Redis store's own wording
        // is checked in its unit tests).
        let warnings = v["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1, "{v}");
        assert!(warnings[0].as_str().unwrap().contains("allkeys-lru"));

        let v = get(addr, "/api/sessions/redis-info").await.json();
        assert_eq!(v["redis"]["server"]["redis_version"], "7.2.4");
        assert_rfc3339(&v["timestamp"]);

        let v = get(addr, "/api/sessions/health").await.json();
        assert_eq!(
            (v["status"].as_str(), v["redis"].as_str()),
            (Some("ok"), Some("healthy"))
        );

        // CONFIG forbidden: no policy known, no warning, no error (unnested: at the root).
        let quiet = serve_hyper(AdminService::new(FakeRedis::new(None)).router()).await;
        let v = get(quiet, "/stats").await.json();
        assert!(v["memoryUsage"].get("maxmemory_policy").is_none(), "{v}");
        assert_eq!(v["warnings"], json!([]));

        // A volatile policy is fine.
        let fine =
            serve_hyper(AdminService::new(FakeRedis::new(Some("volatile-lru"))).router()).await;
        assert_eq!(get(fine, "/stats").await.json()["warnings"], json!([]));
    })
    .await
}

/// Installs a Prometheus recorder for this thread (the test's current-thread runtime, where the
/// servers it spawns run too) and answers an admin's `with_metrics` renderer for it; histograms get
/// buckets.
#[cfg(feature = "metrics")]
fn prometheus() -> (
    metrics_exporter_prometheus::PrometheusRecorder,
    impl Fn() -> String + Send + Sync + 'static,
) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[0.0005, 0.005, 0.05, 0.5, 5.0])
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    (recorder, move || handle.render())
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread")]
async fn a_down_store_is_a_503_json_error_and_health_says_unavailable() {
    let (recorder, render) = prometheus();
    let _local = metrics::set_default_local_recorder(&recorder);
    bounded(async {
        let store = FakeRedis::new(None);
        let admin = AdminService::new(store.clone()).with_metrics(render);
        let addr = serve_hyper(
            Router::new()
                .nest("/api/health", admin.health())
                .merge(admin.router()),
        )
        .await;
        store.down.store(true, Ordering::SeqCst);
        for path in [
            "/stats",
            "/sessions",
            "/redis-info",
            "/users/alice/sessions",
        ] {
            let msg = get(addr, path).await.error(StatusCode::SERVICE_UNAVAILABLE);
            assert!(msg.contains("unavailable"), "{path}: {msg}");
        }
        send(addr, Method::POST, "/cleanup", &[], "")
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE);
        let key = Token::generate().store_key();
        send(addr, Method::DELETE, &format!("/sessions/{key}"), &[], "")
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE);
        // The admin's own health: for operators, with the detail.
        let r = get(addr, "/health").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        let v = r.json();
        assert_eq!(v["status"], "unavailable");
        assert_eq!(v["redis"], "unhealthy");
        assert_eq!(v["sessionStore"], "redis");
        assert_eq!(v["detail"], FAKE_DETAIL_DOWN);
        // The public one: the same verdict and a short reason, no backend text.
        let r = get(addr, "/api/health").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        let v = r.json();
        assert_eq!(v["status"], "unavailable");
        assert_eq!(v["redis"], "unhealthy");
        assert_eq!(v["sessionStore"], "redis");
        assert_eq!(v["reason"], "not answering");
        assert!(v.get("detail").is_none(), "{v}");
        assert!(!r.text().contains("10.0.0.7"), "{v}");
        // Metrics still answer while the store is down: the failed store calls are counted, and the
        // session gauge, which needs a count, is left unset rather than wrong.
        let r = get(addr, "/metrics").await;
        assert_eq!(r.status, StatusCode::OK);
        let text = r.text();
        let samples = parse_prometheus(&text);
        let errors: f64 = samples
            .iter()
            .filter(|(k, _)| {
                k.starts_with("sessionforge_store_errors_total")
                    && k.contains("kind=\"unavailable\"")
            })
            .map(|(_, v)| v)
            .sum();
        // One for each store call that failed: the count of /stats, the listing, the user's
        // sessions, cleanup, the delete, and the count before this rendering (health and backend
        // information are not store calls).
        assert_eq!(errors, 6.0, "{text}");
        assert!(!samples.contains_key("sessionforge_sessions"), "{text}");
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// Mounting
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn axum_serves_every_route_nested_at_api_sessions_and_admin_and_merged_at_the_root() {
    bounded(async {
        // Nested at /api/sessions, beside a session app and the public health (the djforge shape).
        let store = MemoryStore::new();
        let addr = serve_axum(app(store.clone(), None)).await;
        every_route(addr, Proto::H1, "/api/sessions", &store, false).await;
        // Not at the root, and not under another prefix.
        assert_eq!(get(addr, "/stats").await.status, StatusCode::NOT_FOUND);
        assert_eq!(
            get(addr, "/admin/stats").await.status,
            StatusCode::NOT_FOUND
        );

        // Nested at /admin, with an exporter.
        let store = MemoryStore::new();
        let admin = AdminService::new(store.clone()).with_metrics(|| "# empty\n".to_owned());
        let addr = serve_axum(
            Router::new()
                .route("/", routing::get(|| async { "home" }))
                .nest("/admin", admin.router()),
        )
        .await;
        every_route(addr, Proto::H1, "/admin", &store, true).await;
        assert_eq!(get(addr, "/").await.text(), "home");
        assert_eq!(
            get(addr, "/api/sessions/stats").await.status,
            StatusCode::NOT_FOUND
        );

        // Merged at the root of an application router.
        let store = MemoryStore::new();
        let admin = AdminService::new(store.clone());
        let addr = serve_axum(
            Router::new()
                .route("/api/me", routing::get(me))
                .layer(SessionLayer::new(store.clone()).with_secure(false))
                .merge(admin.router()),
        )
        .await;
        every_route(addr, Proto::H1, "", &store, false).await;
        // The application's own routes still answer beside it.
        visit(addr, None, "merged").await;
        assert_eq!(get(addr, "/stats").await.json()["sessionCount"], 1);
    })
    .await
}

#[tokio::test]
async fn plain_hyper_serves_the_unnested_router_at_its_root_and_a_nested_one_under_its_prefix() {
    bounded(async {
        // The router as it is: its routes at the root (there is no suffix matching any more).
        let store = MemoryStore::new();
        let addr = serve_hyper(AdminService::new(store.clone()).router()).await;
        every_route(addr, Proto::H1, "", &store, false).await;
        for path in ["/api/sessions/stats", "/admin/x/stats"] {
            get(addr, path).await.error(StatusCode::NOT_FOUND);
        }

        // Nested under a prefix: only there.
        let store = MemoryStore::new();
        let admin = AdminService::new(store.clone());
        let addr = serve_hyper(
            Router::new()
                .nest("/api/health", admin.health())
                .nest("/api/sessions", admin.router()),
        )
        .await;
        every_route(addr, Proto::H1, "/api/sessions", &store, false).await;
        assert_eq!(get(addr, "/stats").await.status, StatusCode::NOT_FOUND);
        assert_eq!(get(addr, "/api/health").await.json()["status"], "ok");

        // Loopback mode reads the PeerAddr the server inserted: a remote one is refused.
        let mut req = Request::get("/stats")
            .header(header::HOST, "localhost")
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut()
            .insert(PeerAddr("192.0.2.1:5000".parse().unwrap()));
        let res = AdminService::new(store)
            .router()
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    })
    .await
}

#[tokio::test]
async fn next_to_a_tonic_service_one_server_answers_grpc_and_admin_calls() {
    bounded(async {
        let sessions = MemoryStore::new();
        let admin = AdminService::new(sessions.clone());
        let addr = serve_tonic(&admin, sessions.clone()).await;

        // A real gRPC call, with a session.
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (reply, token) = greeter::say_hello(channel.clone(), "Ada", None)
            .await
            .unwrap();
        assert_eq!(reply.message, "Hello, Ada!");
        assert_eq!(reply.count, 1);
        let token = token.expect("a new session's token in the metadata");
        let (reply, _) = greeter::say_hello(channel.clone(), "Ada", Some(&token))
            .await
            .unwrap();
        assert_eq!(reply.count, 2);

        // The admin on the same port sees that session (over HTTP/1.1 here, as curl speaks it; HTTP/2
        // in `http2_clients_…`).
        for proto in [Proto::H1] {
            let r = call(addr, proto, Method::GET, "/api/sessions/stats", &[], "").await;
            assert_eq!(r.status, StatusCode::OK, "{proto:?}: {:?}", r.body);
            assert_eq!(r.json()["sessionCount"], 1, "{proto:?}");
            let v = call(addr, proto, Method::GET, "/api/sessions/sessions", &[], "")
                .await
                .json();
            let id = Token::parse(&token).unwrap().store_key();
            assert_eq!(v["sessions"][0]["id"], id.as_str(), "{proto:?}");
            let r = call(addr, proto, Method::GET, "/api/health", &[], "").await;
            assert_eq!(r.json()["status"], "ok", "{proto:?}");
        }

        // An admin delete ends the gRPC client's session: its next call starts afresh.
        let id = Token::parse(&token).unwrap().store_key();
        let v = send(
            addr,
            Method::DELETE,
            &format!("/api/sessions/sessions/{id}"),
            &[],
            "",
        )
        .await
        .json();
        assert_eq!(v["success"], true);
        let (reply, fresh) = greeter::say_hello(channel.clone(), "Ada", Some(&token))
            .await
            .unwrap();
        assert_eq!(reply.count, 1);
        assert!(fresh.is_some());

        assert_eq!(sessions.count().await.unwrap(), 1);

        // Every route.
        let store = MemoryStore::new();
        let admin = AdminService::new(store.clone());
        let addr = serve_tonic(&admin, MemoryStore::new()).await;
        every_route(addr, Proto::H1, "/api/sessions", &store, false).await;
    })
    .await
}

#[tokio::test]
async fn http2_clients_name_the_host_in_the_authority_and_are_served_in_loopback_mode() {
    bounded(async {
        // Over HTTP/2 the host travels as `:authority` (the request URI's authority), not as a Host
        // header. Where no host check applies, every route answers over HTTP/2 alike.
        let store = MemoryStore::new();
        let open = AdminService::new(store.clone()).with_auth(AdminAuth::insecure_open_to_anyone());
        let addr = serve_hyper(open.router()).await;
        every_route(addr, Proto::H2, "", &store, false).await;

        // Loopback mode must accept a loopback authority as it accepts a loopback Host, and a
        // same-origin Origin must compare equal to it: plain Hyper, unnested and nested ...
        let same_origin = |addr: SocketAddr| format!("http://{addr}");
        let store = MemoryStore::new();
        let addr = serve_hyper(AdminService::new(store.clone()).router()).await;
        let r = call(addr, Proto::H2, Method::GET, "/stats", &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "unnested: {:?}", r.body);
        let origin = same_origin(addr);
        let r = call(
            addr,
            Proto::H2,
            Method::POST,
            "/cleanup",
            &[("origin", origin.as_str())],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "same-origin POST: {:?}", r.body);
        every_route(addr, Proto::H2, "", &store, false).await;

        let store = MemoryStore::new();
        let admin = AdminService::new(store.clone());
        let addr = serve_hyper(
            Router::new()
                .nest("/api/health", admin.health())
                .nest("/api/sessions", admin.router()),
        )
        .await;
        every_route(addr, Proto::H2, "/api/sessions", &store, false).await;
        let r = call(addr, Proto::H2, Method::GET, "/api/health", &[], "").await;
        assert_eq!(r.json()["status"], "ok");
        // ... a foreign authority is refused as a foreign Host is (DNS rebinding).
        let r = call(
            addr,
            Proto::H2,
            Method::GET,
            "/api/sessions/stats",
            &[("host", "evil.example")],
            "",
        )
        .await;
        r.error(StatusCode::FORBIDDEN);

        // ... and next to Tonic, whose clients all speak HTTP/2.
        let store = MemoryStore::new();
        let admin = AdminService::new(store.clone());
        let addr = serve_tonic(&admin, MemoryStore::new()).await;
        every_route(addr, Proto::H2, "/api/sessions", &store, false).await;
    })
    .await
}

#[tokio::test]
async fn the_public_health_answers_at_its_mount_point() {
    bounded(async {
        let store = MemoryStore::new();
        fill(&store, 2).await;
        let addr = serve_axum(app(store, None)).await;
        assert_eq!(
            get(addr, "/api/sessions/stats").await.json()["sessionCount"],
            2
        );
        // (Only the mount point itself: Axum does not route `/api/health/` into a router nested at
        // `/api/health`; the old health service answered any path below it.)
        for path in ["/api/health"] {
            let r = get(addr, path).await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
            assert_eq!(r.json()["status"], "ok", "{path}");
            assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
        }
        // It is a router of its own now: paths below its mount point are not health checks (the old
        // health service answered whatever followed).
        get(addr, "/api/health/live")
            .await
            .error(StatusCode::NOT_FOUND);
        let r = send(addr, Method::POST, "/api/health", &[], "").await;
        r.error(StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.allow(), methods(&["GET", "HEAD"]));
        // Open to anyone, whatever the admin's protection.
        let app = app(MemoryStore::new(), Some(AdminAuth::bearer("tok")));
        let (status, _, v) = oneshot_status(
            &app,
            from_peer(
                Method::GET,
                "/api/health",
                "203.0.113.9:1",
                &[("host", "evil.example"), ("x-forwarded-for", "1.2.3.4")],
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["status"], "ok");
    })
    .await
}

#[tokio::test]
async fn the_public_health_shows_no_backend_detail_while_the_admins_health_does() {
    bounded(async {
        let store = FakeRedis::new(None);
        let admin = AdminService::new(store.clone());
        let addr = serve_axum(
            Router::new()
                .nest("/api/health", admin.health())
                .nest("/api/sessions", admin.router()),
        )
        .await;
        // Healthy: the admin's shows the detail and the extra fields (cluster nodes) ...
        let full = get(addr, "/api/sessions/health").await.json();
        assert_eq!(full["status"], "ok");
        assert_eq!(full["redis"], "healthy");
        assert_eq!(full["detail"], "PING 0.2 ms at 10.0.0.7:6379");
        assert_eq!(full["nodes"][0]["address"], "10.0.0.7:6379");
        // ... the public one the verdict only.
        let r = get(addr, "/api/health").await;
        let public = r.json();
        assert_eq!(public["status"], "ok");
        assert_eq!(public["sessionStore"], "redis");
        assert_eq!(public["redis"], "healthy");
        assert_rfc3339(&public["timestamp"]);
        let fields: BTreeSet<&str> = public
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            BTreeSet::from(["status", "timestamp", "sessionStore", "redis"]),
            "{public}"
        );
        assert!(!r.text().contains("10.0.0.7"), "{public}");

        // Down: the same split.
        store.down.store(true, Ordering::SeqCst);
        let r = get(addr, "/api/health").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        let public = r.json();
        assert_eq!(public["status"], "unavailable");
        assert_eq!(public["reason"], "not answering");
        assert!(public.get("detail").is_none(), "{public}");
        assert!(!r.text().contains("Connection refused"), "{public}");
        let r = get(addr, "/api/sessions/health").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.json()["detail"], FAKE_DETAIL_DOWN);

        // The admin's health is protected like every admin route; the public one is not.
        let app = Router::new()
            .nest("/api/health", admin.health())
            .nest("/api/sessions", admin.router());
        let remote = "198.51.100.2:4000";
        let (status, _, _) = oneshot_status(
            &app,
            from_peer(Method::GET, "/api/sessions/health", remote, &[]),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, v) =
            oneshot_status(&app, from_peer(Method::GET, "/api/health", remote, &[])).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(v.get("detail").is_none(), "{v}");
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// Listing, delete, cleanup, and what a store cannot do
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn following_next_cursor_visits_every_session_exactly_once() {
    bounded(async {
        let store = MemoryStore::new();
        let keys = fill(&store, 23).await;
        let admin = AdminService::new(store).with_max_page(10);
        let addr = serve_hyper(
            Router::new()
                .nest("/api/sessions", admin.router())
                .merge(admin.router()),
        )
        .await;
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
        // A parameter given twice is ambiguous: refused.
        get(addr, "/sessions?limit=1&limit=2")
            .await
            .error(StatusCode::BAD_REQUEST);
    })
    .await
}

#[tokio::test]
async fn a_bad_cursor_is_a_400_when_the_store_says_so() {
    bounded(async {
        let addr = serve_hyper(AdminService::new(FakeRedis::new(None)).router()).await;
        get(addr, "/sessions?cursor=garbage!")
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
        let addr = serve_hyper(AdminService::new(MemoryStore::new()).router()).await;
        for bad in [
            "garbage!".to_owned(),
            "..%2f..".to_owned(),
            "%00".to_owned(),
            "c".repeat(5000),
        ] {
            get(addr, &format!("/sessions?cursor={bad}"))
                .await
                .error(StatusCode::BAD_REQUEST);
        }
        // An empty cursor is the first page.
        assert_eq!(get(addr, "/sessions?cursor=").await.status, StatusCode::OK);
    })
    .await
}

#[tokio::test]
async fn a_deleted_session_is_gone_for_its_client() {
    bounded(async {
        let store = MemoryStore::new();
        let addr = serve_axum(app(store.clone(), None)).await;
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
        // A cookie value is no id: 404, nothing deleted.
        send(
            addr,
            Method::DELETE,
            &format!("/api/sessions/sessions/{cookie}"),
            &[],
            "",
        )
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
        let addr = serve_hyper(
            Router::new().nest("/api/sessions", AdminService::new(store.clone()).router()),
        )
        .await;
        // The store is "down": a request that reached it would be a 503, not a 400.
        store.down.store(true, Ordering::SeqCst);
        // Store keys are 1 to 64 base64url characters now (formats other than the native one key
        // sessions differently), so a 44-character run of letters is a well-formed key: the refused
        // ids are those with characters outside the alphabet, or too long.
        for bad in [
            "non.sense".to_owned(),
            "..%2f..%2fetc%2fpasswd".to_owned(),
            "a%20b".to_owned(),
            "%00".to_owned(),
            "A".repeat(65),
        ] {
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
        // Well-formed keys do reach the store.
        for key in [Token::generate().store_key().to_string(), "A".repeat(64)] {
            send(
                addr,
                Method::DELETE,
                &format!("/api/sessions/sessions/{key}"),
                &[],
                "",
            )
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE);
        }
    })
    .await
}

#[tokio::test]
async fn cleanup_removes_expired_sessions() {
    bounded(async {
        let clock = ManualClock::starting_now();
        let store = memory_at(&clock);
        let addr = serve_axum(app(store.clone(), None)).await;
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

#[tokio::test]
async fn a_store_with_only_the_core_answers_501_for_what_it_cannot_do() {
    bounded(async {
        let store = CoreOnly::default();
        let keys = fill(&store, 2).await;
        let admin = AdminService::new(store.clone());
        let addr = serve_axum(
            Router::new()
                .nest("/api/health", admin.health())
                .nest("/api/sessions", admin.router()),
        )
        .await;
        for (method, path, cannot) in [
            (Method::GET, "/api/sessions/stats", "count sessions"),
            (Method::GET, "/api/sessions/sessions", "list sessions"),
            (Method::POST, "/api/sessions/cleanup", "clean up sessions"),
            (
                Method::GET,
                "/api/sessions/users/alice/sessions",
                "list a user's sessions",
            ),
            (
                Method::DELETE,
                "/api/sessions/users/alice/sessions",
                "list a user's sessions",
            ),
        ] {
            let r = send(addr, method.clone(), path, &[], "").await;
            let msg = r.error(StatusCode::NOT_IMPLEMENTED);
            assert_eq!(
                msg,
                format!("this session store cannot {cannot}"),
                "{method} {path}"
            );
            assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
        }
        // What the core can do works: delete by id, health (ok by default).
        let v = send(
            addr,
            Method::DELETE,
            &format!("/api/sessions/sessions/{}", keys[0]),
            &[],
            "",
        )
        .await
        .json();
        assert_eq!(v["success"], true);
        assert!(store.0.load(&keys[0]).await.unwrap().is_none());
        assert!(store.0.load(&keys[1]).await.unwrap().is_some());
        for path in ["/api/health", "/api/sessions/health"] {
            let v = get(addr, path).await.json();
            assert_eq!(v["status"], "ok", "{path}");
            assert_eq!(v["sessionStore"], "core-only", "{path}");
        }
        // No backend information to show: 503 naming the store, not a 501.
        let msg = get(addr, "/api/sessions/redis-info")
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE);
        assert!(msg.contains("core-only"), "{msg}");
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// Protection
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn token_mode_wants_the_right_bearer_token_and_leaves_health_and_dashboard_open() {
    bounded(async {
        let store = MemoryStore::new();
        let admin = AdminService::new(store.clone())
            .with_auth(AdminAuth::bearer("s3cret-token"))
            .with_metrics(|| "# TYPE x counter\nx 1\n".to_owned());
        let addr = serve_axum(app_with(store, &admin)).await;
        for path in [
            "/api/sessions/stats",
            "/api/sessions/sessions",
            "/api/sessions/metrics",
            "/api/sessions/health",
            "/api/sessions/users/alice/sessions",
            "/api/sessions/redis-info",
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
            let want = if path.ends_with("redis-info") {
                StatusCode::SERVICE_UNAVAILABLE // authorised; a memory store has no information
            } else {
                StatusCode::OK
            };
            assert_eq!(r.status, want, "{path}");
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
        // Two Authorization headers are no token.
        let r = send(
            addr,
            Method::GET,
            "/api/sessions/stats",
            &[
                ("authorization", "Bearer s3cret-token"),
                ("authorization", "Bearer s3cret-token"),
            ],
            "",
        )
        .await;
        r.error(StatusCode::UNAUTHORIZED);
        // In bearer mode, the Host is no concern of the admin: a token from anywhere will do.
        let r = send(
            addr,
            Method::GET,
            "/api/sessions/stats",
            &[
                ("authorization", "Bearer s3cret-token"),
                ("host", "admin.example.com"),
                ("x-forwarded-for", "203.0.113.5"),
            ],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        // The public health and the dashboard's page hold no data: open.
        assert_eq!(get(addr, "/api/health").await.status, StatusCode::OK);
        assert_eq!(
            get(addr, "/api/sessions/dashboard").await.status,
            StatusCode::OK
        );
        // An empty token matches nothing: a service built from an unset variable fails closed.
        let closed = serve_axum(app(MemoryStore::new(), Some(AdminAuth::bearer("")))).await;
        for auth in ["Bearer ", "Bearer"] {
            let r = send(
                closed,
                Method::GET,
                "/api/sessions/stats",
                &[("authorization", auth)],
                "",
            )
            .await;
            r.error(StatusCode::UNAUTHORIZED);
        }
        get(closed, "/api/sessions/stats")
            .await
            .error(StatusCode::UNAUTHORIZED);
    })
    .await
}

#[tokio::test]
async fn loopback_mode_admits_local_peers_and_refuses_remote_ones_whatever_their_headers() {
    bounded(async {
        let store = MemoryStore::new();
        let app = app(store.clone(), None);
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
        // IPv4 loopback seen through a dual-stack socket is local.
        let req = from_peer(
            Method::GET,
            "/api/sessions/stats",
            "[::ffff:127.0.0.1]:5555",
            &[],
        );
        assert_eq!(oneshot_status(&app, req).await.0, StatusCode::OK);

        // Our own PeerAddr extension works the same way (Hyper / Tonic users).
        let router = AdminService::new(store.clone()).router();
        let with_peer = |peer: &str| {
            let mut req = Request::get("/stats")
                .header(header::HOST, "localhost")
                .body(axum::body::Body::empty())
                .unwrap();
            req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
            req
        };
        assert_eq!(
            router
                .clone()
                .oneshot(with_peer("10.0.0.2:1"))
                .await
                .unwrap()
                .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            router
                .clone()
                .oneshot(with_peer("[::1]:1"))
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );

        // No peer information at all: refused, saying how to fix it.
        let res = router
            .oneshot(
                Request::get("/stats")
                    .header(header::HOST, "localhost")
                    .header("x-forwarded-for", "127.0.0.1")
                    .body(axum::body::Body::empty())
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
async fn loopback_mode_serves_loopback_host_names_only() {
    bounded(async {
        let store = MemoryStore::new();
        let addr = serve_axum(app(store.clone(), None)).await;
        // A page on another name resolving to 127.0.0.1 (DNS rebinding) sends that name.
        for host in [
            "evil.example",
            "evil.example:3001",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1",
            "[::2]:3001",
        ] {
            let r = send(
                addr,
                Method::GET,
                "/api/sessions/stats",
                &[("host", host)],
                "",
            )
            .await;
            let msg = r.error(StatusCode::FORBIDDEN);
            assert!(
                msg.contains("Host") && msg.contains("token"),
                "{host}: {msg}"
            );
        }
        let key = fill(&store, 1).await[0];
        let r = send(
            addr,
            Method::DELETE,
            &format!("/api/sessions/sessions/{key}"),
            &[("host", "evil.example")],
            "",
        )
        .await;
        r.error(StatusCode::FORBIDDEN);
        assert_eq!(store.count().await.unwrap(), 1, "a refused delete deleted");
        // The loopback names, any port, any case.
        for host in [
            "localhost",
            "localhost:3001",
            "LocalHost:80",
            "127.0.0.1",
            "127.0.0.1:9",
            "[::1]",
            "[::1]:3001",
        ] {
            let r = send(
                addr,
                Method::GET,
                "/api/sessions/stats",
                &[("host", host)],
                "",
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{host}: {:?}", r.body);
        }
        // No Host at all (HTTP/1.0): no loopback name either.
        let (status, body) = raw(
            addr,
            b"GET /api/sessions/stats HTTP/1.0\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, 403, "{body}");
        // A name of this machine, once allowed.
        let allowed = serve_axum(app(
            MemoryStore::new(),
            Some(AdminAuth::loopback_only().allow_host("Admin.Internal")),
        ))
        .await;
        for (host, want) in [
            ("admin.internal:3001", StatusCode::OK),
            ("ADMIN.internal", StatusCode::OK),
            ("localhost", StatusCode::OK),
            ("evil.example", StatusCode::FORBIDDEN),
        ] {
            let r = send(
                allowed,
                Method::GET,
                "/api/sessions/stats",
                &[("host", host)],
                "",
            )
            .await;
            assert_eq!(r.status, want, "{host}");
        }
        // With bearer_or_loopback a foreign Host needs the token.
        let either = serve_axum(app(
            MemoryStore::new(),
            Some(AdminAuth::bearer_or_loopback("tok")),
        ))
        .await;
        let r = send(
            either,
            Method::GET,
            "/api/sessions/stats",
            &[("host", "evil.example")],
            "",
        )
        .await;
        r.error(StatusCode::FORBIDDEN);
        let r = send(
            either,
            Method::GET,
            "/api/sessions/stats",
            &[("host", "evil.example"), ("authorization", "Bearer tok")],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    })
    .await
}

#[tokio::test]
async fn loopback_mode_refuses_proxied_requests_and_says_to_set_a_token() {
    bounded(async {
        let store = MemoryStore::new();
        let key = fill(&store, 1).await[0];
        let addr = serve_axum(app(store.clone(), None)).await;
        // A reverse proxy on this machine makes every peer loopback; what it adds gives it away.
        for (name, value) in [
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "127.0.0.1"),
            ("forwarded", "for=203.0.113.9;proto=https"),
            ("x-real-ip", "203.0.113.9"),
        ] {
            for (method, path) in [
                (Method::GET, "/api/sessions/stats".to_owned()),
                (Method::GET, "/api/sessions/sessions".to_owned()),
                (Method::DELETE, format!("/api/sessions/sessions/{key}")),
                (Method::POST, "/api/sessions/cleanup".to_owned()),
            ] {
                let r = send(addr, method.clone(), &path, &[(name, value)], "").await;
                let msg = r.error(StatusCode::FORBIDDEN);
                assert!(
                    msg.contains("proxy") && msg.contains("token"),
                    "{name} {method} {path}: {msg}"
                );
            }
        }
        assert_eq!(store.count().await.unwrap(), 1, "a refused delete deleted");
        // The public health is for load balancers, which come through proxies.
        let r = send(
            addr,
            Method::GET,
            "/api/health",
            &[("x-forwarded-for", "203.0.113.9")],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        // With a token, proxied requests are fine.
        let either = serve_axum(app(
            MemoryStore::new(),
            Some(AdminAuth::bearer_or_loopback("tok")),
        ))
        .await;
        let proxied = [("x-forwarded-for", "203.0.113.9")];
        send(either, Method::GET, "/api/sessions/stats", &proxied, "")
            .await
            .error(StatusCode::FORBIDDEN);
        let r = send(
            either,
            Method::GET,
            "/api/sessions/stats",
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("authorization", "Bearer tok"),
            ],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    })
    .await
}

#[tokio::test]
async fn cross_site_state_changing_requests_are_refused_in_every_mode() {
    bounded(async {
        for (mode, auth, token) in [
            ("loopback_only", AdminAuth::loopback_only(), None),
            ("bearer", AdminAuth::bearer("tok"), Some("Bearer tok")),
            (
                "bearer_or_loopback",
                AdminAuth::bearer_or_loopback("tok"),
                Some("Bearer tok"),
            ),
            ("open", AdminAuth::insecure_open_to_anyone(), None),
        ] {
            let store = MemoryStore::new();
            let keys = fill(&store, 2).await;
            let addr = serve_axum(app(store.clone(), Some(auth))).await;
            let same_origin = format!("http://{addr}");
            let with = |extra: &[(&'static str, &'static str)]| {
                let mut h: Vec<(&str, &str)> = extra.to_vec();
                if let Some(t) = token {
                    h.push(("authorization", t));
                }
                h
            };
            let changes = [
                (Method::POST, "/api/sessions/cleanup".to_owned()),
                (
                    Method::DELETE,
                    format!("/api/sessions/sessions/{}", keys[0]),
                ),
                (
                    Method::DELETE,
                    "/api/sessions/users/alice/sessions".to_owned(),
                ),
            ];
            for cross in [
                &[("sec-fetch-site", "cross-site")][..],
                &[("sec-fetch-site", "Cross-Site")][..],
                &[("origin", "https://evil.example")][..],
                &[("origin", "null")][..],
                // The operator's own page on another port is another origin.
                &[("origin", "http://127.0.0.1:1")][..],
            ] {
                for (method, path) in &changes {
                    let r = send(addr, method.clone(), path, &with(cross), "").await;
                    let msg = r.error(StatusCode::FORBIDDEN);
                    assert!(
                        msg.contains("cross-site"),
                        "{mode} {cross:?} {method} {path}: {msg}"
                    );
                }
            }
            assert_eq!(
                store.count().await.unwrap(),
                2,
                "{mode}: a refused call deleted"
            );
            // Reads are not refused (the other site cannot read the answer anyway).
            let r = send(
                addr,
                Method::GET,
                "/api/sessions/stats",
                &with(&[("sec-fetch-site", "cross-site")]),
                "",
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{mode}");
            // The same origin (the dashboard's own calls), or no browser headers (curl): allowed.
            let mut h: Vec<(&str, &str)> = with(&[("sec-fetch-site", "same-origin")])
                .into_iter()
                .collect();
            h.push(("origin", same_origin.as_str()));
            let r = send(addr, Method::POST, "/api/sessions/cleanup", &h, "").await;
            assert_eq!(r.status, StatusCode::OK, "{mode}: {:?}", r.body);
            assert_eq!(r.json()["success"], true);
            let r = send(addr, Method::POST, "/api/sessions/cleanup", &with(&[]), "").await;
            assert_eq!(r.status, StatusCode::OK, "{mode}");
            let r = send(
                addr,
                Method::DELETE,
                &format!("/api/sessions/sessions/{}", keys[0]),
                &h,
                "",
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{mode}: {:?}", r.body);
            assert_eq!(store.count().await.unwrap(), 1, "{mode}");
        }
    })
    .await
}

#[tokio::test]
async fn token_or_loopback_mode_admits_a_remote_peer_only_with_the_token() {
    bounded(async {
        let app = app(
            MemoryStore::new(),
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
            Some(AdminAuth::insecure_open_to_anyone()),
        );
        for headers in [
            &[][..],
            &[
                ("host", "admin.example.com"),
                ("x-forwarded-for", "1.2.3.4"),
            ][..],
        ] {
            let (status, _, _) = oneshot_status(
                &app,
                from_peer(
                    Method::GET,
                    "/api/sessions/sessions",
                    "192.0.2.1:1",
                    headers,
                ),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{headers:?}");
        }
    })
    .await
}

#[tokio::test]
async fn the_dashboard_is_served_without_auth_under_a_strict_policy() {
    bounded(async {
        for auth in [
            AdminAuth::loopback_only(),
            AdminAuth::bearer("tok"),
            AdminAuth::bearer(""),
        ] {
            let app = app(MemoryStore::new(), Some(auth.clone()));
            for (page, kind) in [
                ("/api/sessions/dashboard", "text/html"),
                ("/api/sessions/dashboard.css", "text/css"),
                ("/api/sessions/dashboard.js", "text/javascript"),
            ] {
                // From another machine, for another host, without a token: the page holds no data.
                let res = app
                    .clone()
                    .oneshot(from_peer(
                        Method::GET,
                        page,
                        "203.0.113.1:1",
                        &[("host", "admin.example.com")],
                    ))
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::OK, "{auth:?} {page}");
                let h = res.headers();
                assert!(
                    h[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind),
                    "{page}: {h:?}"
                );
                let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
                for directive in [
                    "default-src 'self'",
                    "script-src 'self'",
                    "frame-ancestors 'none'",
                ] {
                    assert!(csp.contains(directive), "{page}: {csp}");
                }
                assert!(!csp.contains("unsafe-inline"), "{csp}");
                assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{page}");
                let body = res.into_body().collect().await.unwrap().to_bytes();
                assert!(!body.is_empty(), "{page}");
                if kind == "text/html" {
                    let html = String::from_utf8_lossy(&body);
                    // No inline script: what the policy would block anyway.
                    assert!(!html.contains("<script>"), "inline script in the page");
                }
            }
            // The data it shows is still protected.
            let (status, _, _) = oneshot_status(
                &app,
                from_peer(Method::GET, "/api/sessions/sessions", "203.0.113.1:1", &[]),
            )
            .await;
            assert!(
                status == StatusCode::FORBIDDEN || status == StatusCode::UNAUTHORIZED,
                "{auth:?}: {status}"
            );
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// Errors and odd inputs
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_in_json() {
    bounded(async {
        let nested = serve_axum(app(MemoryStore::new(), None)).await;
        let root = serve_hyper(AdminService::new(MemoryStore::new()).router()).await;
        for (addr, prefix) in [(nested, "/api/sessions"), (root, "")] {
            let mut paths = vec![
                format!("{prefix}/nope"),
                format!("{prefix}/stats/extra"),
                format!("{prefix}/sessions/a/b"),
                format!("{prefix}/users/alice"),
            ];
            if prefix.is_empty() {
                paths.push("/".to_owned());
            } else {
                paths.push(prefix.to_owned());
                // Axum does not route `/api/sessions/` into the router nested at `/api/sessions`:
                // that is the application's own 404, not the admin's.
                let r = get(addr, &format!("{prefix}/")).await;
                assert_eq!(r.status, StatusCode::NOT_FOUND);
            }
            for path in paths {
                let r = get(addr, &path).await;
                r.error(StatusCode::NOT_FOUND);
                assert_eq!(r.headers[header::CACHE_CONTROL], "no-store", "{path}");
            }
            for (method, path, allow) in [
                (Method::POST, "/stats", &["GET", "HEAD"][..]),
                (Method::GET, "/cleanup", &["POST"][..]),
                (Method::DELETE, "/sessions", &["GET", "HEAD"][..]),
                (Method::PUT, "/metrics", &["GET", "HEAD"][..]),
                (
                    Method::POST,
                    "/users/alice/sessions",
                    &["GET", "HEAD", "DELETE"][..],
                ),
                (Method::DELETE, "/dashboard", &["GET", "HEAD"][..]),
            ] {
                let path = format!("{prefix}{path}");
                let r = send(addr, method.clone(), &path, &[], "").await;
                let msg = r.error(StatusCode::METHOD_NOT_ALLOWED);
                assert_eq!(r.allow(), methods(allow), "{method} {path}");
                assert!(msg.contains(method.as_str()), "{method} {path}: {msg}");
            }
            let id = Token::generate().store_key();
            let r = get(addr, &format!("{prefix}/sessions/{id}")).await;
            r.error(StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(r.allow(), methods(&["DELETE"]));
        }
    })
    .await
}

#[tokio::test]
async fn odd_inputs_get_a_4xx_and_never_a_5xx() {
    bounded(async {
        let store = MemoryStore::new();
        fill(&store, 2).await;
        let axum_addr = serve_axum(app(store.clone(), None)).await;
        let admin = AdminService::new(store.clone());
        let hyper_addr = serve_hyper(
            Router::new()
                .nest("/api/health", admin.health())
                .nest("/api/sessions", admin.router()),
        )
        .await;
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
            "GET /api/sessions/users/%FF/sessions HTTP/1.1".into(),
            "OPTIONS * HTTP/1.1".into(),
            "BREW /api/sessions/stats HTTP/1.1".into(),
        ];
        // Both servers run an Axum router now (the admin is one); Axum serves it either way.
        for addr in [axum_addr, hyper_addr] {
            for line in &requests {
                let req = format!("{line}\r\nhost: localhost\r\nconnection: close\r\n\r\n");
                let (status, body) = raw(addr, req.as_bytes()).await;
                assert!((400..500).contains(&status), "{line} -> {status} {body}");
            }
            // Empty and unknown query parameters are ignored; a `limit` without a value is the default.
            let req = "GET /api/sessions/sessions?&&&=&limit&x=%zz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
            let (status, body) = raw(addr, req.as_bytes()).await;
            assert_eq!(status, 200, "{body}");
            // A body on a GET is ignored.
            let req = "GET /api/sessions/stats HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: 11\r\ncontent-type: application/json\r\n\r\n{\"a\":[1,2]}";
            let (status, body) = raw(addr, req.as_bytes()).await;
            assert_eq!(status, 200, "{body}");
            // Authorization and Host garbage is a 401/403, not a crash.
            for auth in ["Bearer", "Bearer  ", "Basic ???", "Bearer \u{7f}"] {
                let req = format!("GET /api/sessions/stats HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\nx-forwarded-for: 127.0.0.1\r\nauthorization: {auth}\r\n\r\n");
                let (status, _) = raw(addr, req.as_bytes()).await;
                assert!((400..500).contains(&status), "{auth:?} -> {status}");
            }
            for host in ["", "[", "[::1", ":", "localhost:x:y", "\u{7f}"] {
                let req = format!("POST /api/sessions/cleanup HTTP/1.1\r\nhost: {host}\r\norigin: http://localhost\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
                let (status, _) = raw(addr, req.as_bytes()).await;
                assert!((400..500).contains(&status), "host {host:?} -> {status}");
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

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread")]
async fn metrics_are_prometheus_text_with_the_session_gauge() {
    let (recorder, render) = prometheus();
    let _local = metrics::set_default_local_recorder(&recorder);
    sessionforge::metrics::describe();
    bounded(async {
        let store = MemoryStore::new();
        fill(&store, 4).await;
        let admin = AdminService::new(store.clone()).with_metrics(render);
        let addr = serve_axum(app_with(store, &admin)).await;
        let (_, cookie) = visit(addr, None, "x").await; // a created session, store calls
        visit(addr, Some(&cookie), "x").await; // a loaded and saved one
                                               // A malformed token (non-canonical base64url): counted, and a new session created.
        let bad = format!("id={}", "B".repeat(43));
        send(
            addr,
            Method::GET,
            "/api/me",
            &[("cookie", bad.as_str())],
            "",
        )
        .await;
        let r = get(addr, "/api/sessions/metrics").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(
            r.headers[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
        let text = r.text();
        let samples = parse_prometheus(&text);
        // 4 stored beforehand, 2 created by requests.
        assert_eq!(samples.get("sessionforge_sessions"), Some(&6.0), "{text}");
        assert_eq!(
            samples.get("sessionforge_sessions_created_total"),
            Some(&2.0),
            "{text}"
        );
        assert_eq!(
            samples.get("sessionforge_sessions_loaded_total"),
            Some(&1.0),
            "{text}"
        );
        assert_eq!(
            samples.get("sessionforge_sessions_saved_total"),
            Some(&1.0),
            "{text}"
        );
        assert_eq!(
            samples.get("sessionforge_invalid_tokens_total{reason=\"malformed\"}"),
            Some(&1.0),
            "{text}"
        );
        assert!(
            samples.keys().any(|k| k
                .starts_with("sessionforge_store_call_duration_seconds_bucket")
                && k.contains("op=\"load\"")),
            "{text}"
        );
        assert!(text.contains("# HELP sessionforge_sessions "), "{text}");
        // No failover store here: no backend or mode gauges.
        assert!(!text.contains("sessionforge_backend_up"), "{text}");
        assert!(!text.contains("sessionforge_store_mode"), "{text}");
        // Protected like the rest.
        let app = app_with(MemoryStore::new(), &admin);
        let (status, _, _) = oneshot_status(
            &app,
            from_peer(Method::GET, "/api/sessions/metrics", "203.0.113.3:1", &[]),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    })
    .await
}

#[tokio::test]
async fn metrics_are_a_404_without_an_exporter() {
    bounded(async {
        let addr = serve_axum(app(MemoryStore::new(), None)).await;
        let msg = get(addr, "/api/sessions/metrics")
            .await
            .error(StatusCode::NOT_FOUND);
        assert!(msg.contains("with_metrics"), "{msg}");
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
    let clock = ManualClock::starting_now();
    let store = FileStore::builder(dir.path())
        .with_clock(clock.clone())
        .build();
    let app = Router::new()
        .route(
            "/touch",
            routing::post(|s: Session| async move {
                s.insert("x", 1).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .layer(SessionLayer::new(store.clone()).with_idle_timeout(Duration::from_secs(60)))
        .nest("/api/sessions", AdminService::new(store.clone()).router());
    let addr = serve_axum(app).await;
    // The hyper client names the host from the URI, as every HTTP client does.
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let post = |path: &str| {
        let req = Request::post(format!("http://{addr}{path}"))
            .body(Full::default())
            .unwrap();
        let fut = client.request(req);
        async move {
            let res = fut.await.unwrap();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&body).unwrap_or_default()
        }
    };
    // Session files only (the store keeps its lock files beside them, in `.locks/`).
    let session_files = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".json")
            })
            .count()
    };
    post("/touch").await;
    post("/touch").await;
    assert_eq!(session_files(), 2);
    let nothing = post("/api/sessions/cleanup").await;
    assert_eq!(nothing["deletedSessions"], 0);
    clock.advance(Duration::from_secs(61));
    let cleaned = post("/api/sessions/cleanup").await;
    assert_eq!(cleaned["success"], true);
    assert_eq!(cleaned["deletedSessions"], 2, "{cleaned}");
    assert_eq!(session_files(), 0);
}
