//! The admin and health services: inspect, count, delete and clean up sessions over HTTP.
//!
//! [`AdminService`] is a plain Tower service (always ready, `Error = Infallible`, any request body), so
//! it mounts in Axum, Hyper or Tonic. It answers JSON under whatever prefix it is mounted at, with the
//! prefix stripped (Axum's `nest_service`) or not (a Hyper `service_fn` that forwards every path):
//!
//! | route | answer |
//! |---|---|
//! | `GET /stats` | `{"sessionStore":"redis","sessionCount":5,"memoryUsage":{"used_memory":"1024000","used_memory_human":"1000.00K",…},"warnings":[],"timestamp":"2025-07-12T22:45:00.000Z"}`; a file store reports `"diskUsage":{"directory","files","bytes","human"}` instead of `memoryUsage` |
//! | `GET /sessions?limit=&cursor=` | `{"sessions":[{"id","createdAt","lastAccess","expires","userAgent","user"}],"total":N,"nextCursor":"…"\|null,"timestamp"}` |
//! | `DELETE /sessions/{id}` | `{"success":true,"message":"…"}`; 404 when there is no such session, 400 for an id that is not a store key |
//! | `POST /cleanup` | `{"success":true,"deletedSessions":N,"message":"…"}` |
//! | `GET /users/{user}/sessions` | `{"user":"alice","sessions":[…entries as in /sessions…],"total":N,"timestamp"}`; a user without sessions gets an empty list (200) |
//! | `DELETE /users/{user}/sessions` | `{"success":true,"deletedSessions":N,"message":"…"}`: logs the user out everywhere; their next request, on any instance, starts a fresh session |
//! | `GET /redis-info` | `{"redis":{"<section>":{"<field>":"<value>"}},"timestamp"}`; 503 when no Redis serves sessions |
//! | `GET /health` | `{"status":"ok","timestamp","sessionStore":"redis","redis":"healthy"}` (see [`HealthService`]) |
//! | `GET /metrics` | Prometheus text: the [`Metrics`](crate::metrics::Metrics) counters plus `sessionforge_sessions` |
//!
//! Routes are recognised by the end of the path (`…/stats`, `…/sessions/{id}`), which is what makes any
//! prefix work. Ids in the listing and in `DELETE` are store keys: digests of the session tokens, which
//! cannot be used as cookies. Every error is `{"error":"…"}` with `content-type: application/json`: 404
//! for an unknown path, 405 with `Allow` for a wrong method, 400 for a bad `limit` or `cursor` (`limit`
//! defaults to 50 and may be at most [`with_max_page`](AdminService::with_max_page), 1000 by default),
//! 401/403 when [`AdminAuth`] refuses, 503 when the store is unavailable and 500 when it fails otherwise.
//! All responses carry `cache-control: no-store`.
//!
//! # Protection
//!
//! Everything except `/health` requires what the [`AdminAuth`] allows; by default that is
//! [`AdminAuth::loopback_only`]: requests whose **socket** peer is on this machine. `stats`,
//! `redis-info` and `metrics` are protected too: they reveal the size of the user base and details of
//! the Redis server. A Prometheus server scraping from elsewhere sends a bearer token
//! (`authorization: {credentials: …}` in its scrape config). Health is open to anyone: it says only
//! whether the store works, which a load balancer must be able to ask.
//!
//! # Example: Axum
//!
//! ```
//! use axum::{extract::ConnectInfo, routing::get, Router};
//! use http::{Request, StatusCode};
//! use http_body_util::BodyExt;
//! use sessionforge::admin::{AdminAuth, AdminService};
//! use sessionforge::store::MemoryStore;
//! use std::net::SocketAddr;
//! use tower::ServiceExt;
//!
//! # #[cfg(not(feature = "axum"))] fn main() {} // ConnectInfo is read with the `axum` feature
//! # #[cfg(feature = "axum")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = MemoryStore::new();
//! let admin = AdminService::new(store.clone()); // loopback-only
//! let app = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .nest_service("/api/health", admin.health_service())
//!     .nest_service("/api/sessions", admin);
//!
//! // What `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())` does for
//! // every request: record the socket peer.
//! let mut req = Request::get("/api/sessions/stats").body(axum::body::Body::empty()).unwrap();
//! req.extensions_mut().insert(ConnectInfo("127.0.0.1:40000".parse::<SocketAddr>().unwrap()));
//! let res = app.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! let body = res.into_body().collect().await.unwrap().to_bytes();
//! let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(stats["sessionStore"], "memory");
//! assert_eq!(stats["sessionCount"], 0);
//!
//! // From another machine: refused.
//! let mut req = Request::get("/api/sessions/sessions").body(axum::body::Body::empty()).unwrap();
//! req.extensions_mut().insert(ConnectInfo("203.0.113.9:40000".parse::<SocketAddr>().unwrap()));
//! assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::FORBIDDEN);
//! # }
//! ```
//!
//! Serving it for real, with the peer address recorded (without `with_connect_info` every loopback-only
//! request is refused, with a message saying so):
//!
//! ```no_run
//! # use axum::Router;
//! # use sessionforge::admin::{AdminAuth, AdminService};
//! # use sessionforge::store::MemoryStore;
//! # use std::net::SocketAddr;
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! let auth = match std::env::var("SESSION_ADMIN_TOKEN") {
//!     Ok(token) if !token.is_empty() => AdminAuth::bearer(token),
//!     _ => AdminAuth::loopback_only(),
//! };
//! let admin = AdminService::new(MemoryStore::new()).with_auth(auth);
//! let app = Router::new().nest_service("/api/sessions", admin);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:3001").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! # }
//! ```
//!
//! # Example: plain Hyper
//!
//! With plain Hyper (or Tonic), insert a [`PeerAddr`] into each request's extensions where you accept
//! the connection. Every path can go to the service unchanged: it finds its routes at the end.
//!
//! ```no_run
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use sessionforge::admin::{AdminService, PeerAddr};
//! use sessionforge::store::MemoryStore;
//! use tower::Service;
//!
//! # #[tokio::main]
//! # async fn main() -> std::io::Result<()> {
//! let admin = AdminService::new(MemoryStore::new());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
//! loop {
//!     let (tcp, peer) = listener.accept().await?;
//!     let admin = admin.clone();
//!     tokio::spawn(async move {
//!         let svc = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
//!             req.extensions_mut().insert(PeerAddr(peer));
//!             admin.clone().call(req) // `/api/sessions/stats` and `/stats` both reach stats
//!         });
//!         let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
//!             .serve_connection(TokioIo::new(tcp), svc)
//!             .await;
//!     });
//! }
//! # }
//! ```
//!
//! Tonic records the peer as `tonic::transport::server::TcpConnectInfo`; a small layer that copies its
//! `remote_addr()` into a [`PeerAddr`] makes loopback-only work there.
//!
//! # Pitfalls
//!
//! * **Behind a reverse proxy every peer is local.** nginx, Caddy or a sidecar on the same host connect
//!   from 127.0.0.1, so loopback-only admits the whole internet. Use [`AdminAuth::bearer`] there, or do
//!   not route `/api/sessions` through the proxy. `X-Forwarded-For` is never consulted: anyone can send it.
//! * **No peer address, no access.** Loopback-only needs [`PeerAddr`] or Axum's `ConnectInfo`; forgetting
//!   `into_make_service_with_connect_info` gives 403 with a message naming the fix, never an open door.
//! * **A wrong token is not rescued by being local.** With [`AdminAuth::bearer_or_loopback`], a local
//!   request that sends a wrong `Authorization` header gets 401, so a stale token shows up at once.
//! * **Deleting is by store key, not by cookie.** Pasting a cookie value into `DELETE /sessions/{id}`
//!   gets 404: the ids are the digests shown by `GET /sessions`.
//! * **`allkeys-*` eviction logs users out.** When Redis reports such a `maxmemory-policy` (the seed's
//!   troubleshooting tip sets `allkeys-lru`), `/stats` carries a warning: prefer `volatile-lru`,
//!   `volatile-ttl` or `noeviction`.
//! * **Health `detail` is public.** `/health` is open, and its `detail` is the store's own message;
//!   stores keep credentials out of it.
//! * **Suffix routing.** Routes are matched on the end of the path, so mounting at the root of a
//!   router that has its own `/health` or `/metrics` is ambiguous: mount under a prefix.

mod auth;
mod json;
mod routes;

pub use auth::{AdminAuth, PeerAddr};

use auth::Denied;
use bytes::Bytes;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use json::Resp;
use routes::Route;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

use crate::store::ManagedStore;

/// The default and the ceiling of [`AdminService::with_max_page`].
const DEFAULT_MAX_PAGE: usize = 1000;

/// The admin API over a [`ManagedStore`]; see the [module docs](self) for routes, protection and an
/// example.
///
/// Cheap to clone (the store is held in an `Arc`).
#[must_use]
pub struct AdminService<S> {
    store: Arc<S>,
    auth: AdminAuth,
    max_page: usize,
}

impl<S> Clone for AdminService<S> {
    fn clone(&self) -> Self {
        AdminService {
            store: self.store.clone(),
            auth: self.auth.clone(),
            max_page: self.max_page,
        }
    }
}

impl<S> fmt::Debug for AdminService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminService")
            .field("auth", &self.auth)
            .field("max_page", &self.max_page)
            .finish_non_exhaustive()
    }
}

impl<S: ManagedStore> AdminService<S> {
    /// The admin API over `store`, open to loopback peers only ([`AdminAuth::loopback_only`]), pages
    /// of at most 1000 sessions.
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// Like [`AdminService::new`], for a store already shared through an `Arc`.
    pub fn from_arc(store: Arc<S>) -> Self {
        AdminService {
            store,
            auth: AdminAuth::loopback_only(),
            max_page: DEFAULT_MAX_PAGE,
        }
    }

    /// Who may use the protected routes (everything but `/health`).
    ///
    /// ```
    /// use sessionforge::admin::{AdminAuth, AdminService};
    /// use sessionforge::store::MemoryStore;
    ///
    /// let admin = AdminService::new(MemoryStore::new()).with_auth(AdminAuth::bearer("s3cret"));
    /// assert!(format!("{admin:?}").contains("bearer"));
    /// ```
    pub fn with_auth(mut self, auth: AdminAuth) -> Self {
        if auth.is_open_to_anyone() {
            tracing::warn!(
                "session admin API is open to anyone who can reach it (AdminAuth::insecure_open_to_anyone)"
            );
        }
        self.auth = auth;
        self
    }

    /// The largest `limit` that `GET /sessions` accepts (at least 1). Larger requests get 400; the
    /// default page is 50 sessions, or `max` when that is smaller.
    pub fn with_max_page(mut self, max: usize) -> Self {
        self.max_page = max.max(1);
        self
    }

    /// A [`HealthService`] over the same store, to mount on its own (e.g. at `/api/health`).
    pub fn health_service(&self) -> HealthService<S> {
        HealthService::from_arc(self.store.clone())
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }
}

impl<S, B> Service<Request<B>> for AdminService<S>
where
    S: ManagedStore,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The body is never read: dropping it here keeps `B` out of the future.
        let (parts, _body) = req.into_parts();
        let route = match routes::route(&parts.method, parts.uri.path()) {
            Ok(r) => r,
            Err(rejected) => return ResponseFuture::ready(rejected.into_response()),
        };
        if !route.is_public() {
            if let Err(denied) = self.auth.check(&parts.headers, &parts.extensions) {
                tracing::debug!(?denied, path = parts.uri.path(), "admin request refused");
                return ResponseFuture::ready(refusal(denied));
            }
        }
        let store = self.store.clone();
        match route {
            Route::Stats => ResponseFuture::boxed(routes::stats(store)),
            Route::List => match routes::list_query(parts.uri.query(), self.max_page) {
                Ok((limit, cursor)) => ResponseFuture::boxed(routes::list(store, limit, cursor)),
                Err(rejected) => ResponseFuture::ready(rejected.into_response()),
            },
            Route::Delete(id) => ResponseFuture::boxed(routes::delete(store, id)),
            Route::Cleanup => ResponseFuture::boxed(routes::cleanup(store)),
            Route::UserSessions(raw) => match routes::user_segment(&raw) {
                Ok(user) => ResponseFuture::boxed(routes::user_sessions(store, user)),
                Err(rejected) => ResponseFuture::ready(rejected.into_response()),
            },
            Route::RevokeUser(raw) => match routes::user_segment(&raw) {
                Ok(user) => ResponseFuture::boxed(routes::revoke_user(store, user)),
                Err(rejected) => ResponseFuture::ready(rejected.into_response()),
            },
            Route::RedisInfo => ResponseFuture::boxed(routes::redis_info(store)),
            Route::Health => ResponseFuture::boxed(routes::health(store)),
            Route::Metrics => ResponseFuture::boxed(routes::metrics(store)),
        }
    }
}

/// The response to a refused request.
fn refusal(denied: Denied) -> Resp {
    match denied {
        Denied::Unauthorized { token_sent } => {
            let (msg, challenge) = if token_sent {
                (
                    "invalid admin token",
                    r#"Bearer realm="sessionforge admin", error="invalid_token""#,
                )
            } else {
                (
                    "admin token required: send Authorization: Bearer <token>",
                    r#"Bearer realm="sessionforge admin""#,
                )
            };
            let mut res = json::error(StatusCode::UNAUTHORIZED, msg);
            res.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            res
        }
        Denied::NotLoopback => json::error(
            StatusCode::FORBIDDEN,
            "the session admin API only answers requests from this machine",
        ),
        Denied::NoPeerAddr => {
            tracing::warn!(
                "session admin API refused a request: loopback-only mode needs the peer address \
                 (Axum: serve with into_make_service_with_connect_info::<SocketAddr>(); Hyper/Tonic: \
                 insert sessionforge::admin::PeerAddr into request extensions)"
            );
            json::error(
                StatusCode::FORBIDDEN,
                "the server does not record peer addresses, so the loopback-only admin API refuses \
                 everyone: serve with Axum's into_make_service_with_connect_info::<SocketAddr>() or \
                 insert sessionforge::admin::PeerAddr, or configure a bearer token",
            )
        }
    }
}

/// The health check on its own, open to anyone: it answers the health JSON at whatever path it is
/// mounted, for `GET` and `HEAD` (other methods get 405).
///
/// `{"status":"ok","timestamp":"…","sessionStore":"redis","redis":"healthy"}` with 200 while the
/// backend serving sessions works. In file mode `{"status":"ok","timestamp":"…","sessionStore":"file"}`,
/// plus `"redis":"unhealthy"` when a Redis exists but is down and files serve meanwhile, and a
/// `"detail"` when the store has something to say. `"status":"unavailable"` with 503 only when Redis
/// serves sessions and does not answer, so a load balancer takes the instance out of rotation.
///
/// ```
/// use http::{Request, StatusCode};
/// use sessionforge::admin::HealthService;
/// use sessionforge::store::MemoryStore;
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let health = HealthService::new(MemoryStore::new());
/// let res = health.oneshot(Request::get("/anything").body(()).unwrap()).await.unwrap();
/// assert_eq!(res.status(), StatusCode::OK);
/// # }
/// ```
#[must_use]
pub struct HealthService<S> {
    store: Arc<S>,
}

impl<S> Clone for HealthService<S> {
    fn clone(&self) -> Self {
        HealthService {
            store: self.store.clone(),
        }
    }
}

impl<S> fmt::Debug for HealthService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthService").finish_non_exhaustive()
    }
}

impl<S: ManagedStore> HealthService<S> {
    /// The health check of `store`.
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// Like [`HealthService::new`], for a store already shared through an `Arc`.
    pub fn from_arc(store: Arc<S>) -> Self {
        HealthService { store }
    }
}

impl<S, B> Service<Request<B>> for HealthService<S>
where
    S: ManagedStore,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let m = req.method();
        if m != http::Method::GET && m != http::Method::HEAD {
            let mut res = json::error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {m} not allowed here; use GET, HEAD"),
            );
            res.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return ResponseFuture::ready(res);
        }
        ResponseFuture::boxed(routes::health(self.store.clone()))
    }
}

/// The future of [`AdminService`] and [`HealthService`]: ready at once for refusals and routing
/// errors, otherwise the store calls of the route.
pub struct ResponseFuture {
    state: State,
}

enum State {
    Ready(Option<Resp>),
    Pending(Pin<Box<dyn Future<Output = Resp> + Send>>),
}

impl ResponseFuture {
    fn ready(res: Resp) -> Self {
        ResponseFuture {
            state: State::Ready(Some(res)),
        }
    }

    fn boxed(fut: impl Future<Output = Resp> + Send + 'static) -> Self {
        ResponseFuture {
            state: State::Pending(Box::pin(fut)),
        }
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Full<Bytes>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            // Polled again after completion: answer a 500 rather than panic.
            State::Ready(res) => Poll::Ready(Ok(res.take().unwrap_or_else(|| {
                json::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "response polled after completion",
                )
            }))),
            State::Pending(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}
