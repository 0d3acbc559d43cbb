//! The admin API and health check: inspect, count, delete and clean up sessions over HTTP, as an
//! [`axum::Router`] to mount anywhere (`nest`), and an operators' dashboard.
//!
//! | route | answer |
//! |---|---|
//! | `GET /stats` | `{"sessionStore":"redis","sessionCount":5,"memoryUsage":{"used_memory":"1024000","used_memory_human":"1000.00K",…},"warnings":[],"timestamp":"2025-07-12T22:45:00.000Z"}`; the figures are the store's own, under the field it names (a file store's `diskUsage`) |
//! | `GET /sessions?limit=&cursor=` | `{"sessions":[{"id","createdAt","lastAccess","expires","userAgent","user"}],"total":N,"nextCursor":"…"\|null,"timestamp"}` |
//! | `DELETE /sessions/{id}` | `{"success":true,"message":"…"}`; 404 when there is no such session, 400 for an id that is not a store key |
//! | `POST /cleanup` | `{"success":true,"deletedSessions":N,"message":"…"}` |
//! | `GET /users/{user}/sessions` | `{"user":"alice","sessions":[…],"total":N,"timestamp"}` |
//! | `DELETE /users/{user}/sessions` | `{"success":true,"deletedSessions":N,"message":"…"}`: logs the user out everywhere |
//! | `GET /redis-info` | `{"redis":{"<section>":{"<field>":"<value>"}},"timestamp"}` (the store's own information); 503 when the store serving now has none |
//! | `GET /health` | the health below, with the operators' detail (error texts, cluster nodes, the last failover) |
//! | `GET /metrics` | the application's Prometheus text ([`AdminService::with_metrics`]); 404 without an exporter |
//! | `GET /dashboard` | the operators' page (see `dashboard.rs`) |
//!
//! Every error is `{"error":"…"}` with `content-type: application/json`: 404 for an unknown path, 405
//! with `Allow` for a wrong method, 400 for a bad `limit` or `cursor` (`limit` defaults to 50, at most
//! [`with_max_page`](AdminService::with_max_page), 1000 by default), 401/403 when [`AdminAuth`]
//! refuses, 501 for a route the store cannot serve (`{"error":"this session store cannot list
//! sessions"}`), 503 when the store is down or full and 500 when it fails otherwise. All responses
//! carry `cache-control: no-store`.
//!
//! The public health ([`AdminService::health`], e.g. at `/api/health`) answers
//! `{"status":"ok","timestamp":"…","sessionStore":"redis","redis":"healthy"}`: `"ok"` while the store
//! serves (also from its fallback), `"degraded"` with a short `reason` while it cannot write (full,
//! unreadable fallback), `"unavailable"` (503) when it cannot serve. It shows no backend error text.
//!
//! # Protection
//!
//! Everything but the dashboard's page and assets (which hold no data) requires what the
//! [`AdminAuth`] allows, as a layer on the routes; by default [`AdminAuth::loopback_only`]. See there
//! for what loopback mode refuses (proxied requests, foreign `Host` names) and for the cross-site
//! rule every mode applies.
//!
//! # Example
//!
//! ```
//! use axum::{extract::ConnectInfo, Router};
//! use http::{Request, StatusCode};
//! use http_body_util::BodyExt;
//! use sessionforge::admin::{AdminAuth, AdminService};
//! use sessionforge::store::MemoryStore;
//! use std::net::SocketAddr;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let admin = AdminService::new(MemoryStore::new()); // loopback-only
//! let app = Router::new()
//!     .nest("/api/health", admin.health())
//!     .nest("/api/sessions", admin.router());
//!
//! // What `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())` does for
//! // every request: record the socket peer.
//! let mut req = Request::get("/api/sessions/stats")
//!     .header("host", "localhost:3001")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
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
//! With plain Hyper (or next to Tonic), the router is a Tower service: wrap it in hyper-util's
//! `TowerToHyperService`, and insert a [`PeerAddr`] into each request where the connection is
//! accepted so that loopback mode can see the peer.
//!
//! # Pitfalls
//!
//! * **Behind a reverse proxy every peer is local.** Loopback mode refuses requests that carry proxy
//!   headers, but a proxy that adds none makes loopback mode open to whoever reaches the proxy: use
//!   [`AdminAuth::bearer`] there.
//! * **No peer address, no access.** Loopback mode needs [`PeerAddr`] or Axum's `ConnectInfo`;
//!   forgetting `into_make_service_with_connect_info` gives 403 with a message naming the fix.
//! * **Deleting is by store key, not by cookie.** Pasting a cookie value into `DELETE /sessions/{id}`
//!   gets 404: the ids are the digests shown by `GET /sessions`.

mod auth;
mod dashboard;
mod json;
mod routes;

pub use auth::{AdminAuth, PeerAddr};

use crate::store::dynamic::SharedStore;
use crate::store::SessionStore;
use axum::routing::{get, post};
use axum::{middleware, Router};
use std::fmt;
use std::sync::Arc;

/// The default and the ceiling of [`AdminService::with_max_page`].
const DEFAULT_MAX_PAGE: usize = 1000;

/// Renders the application's metrics exporter's text.
type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The admin API over a store: a builder for its [`router`](AdminService::router) and the public
/// [`health`](AdminService::health) check. See the [module docs](self). Cheap to clone.
#[derive(Clone)]
#[must_use]
pub struct AdminService {
    store: SharedStore,
    auth: AdminAuth,
    max_page: usize,
    metrics: Option<Render>,
}

impl fmt::Debug for AdminService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminService")
            .field("store", &self.store.name())
            .field("auth", &self.auth)
            .field("max_page", &self.max_page)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl AdminService {
    /// The admin API over `store`, open to loopback requests only ([`AdminAuth::loopback_only`]),
    /// pages of at most 1000 sessions.
    pub fn new(store: impl SessionStore) -> Self {
        AdminService {
            store: Arc::new(store),
            auth: AdminAuth::loopback_only(),
            max_page: DEFAULT_MAX_PAGE,
            metrics: None,
        }
    }

    /// Who may use the protected routes.
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

    /// Serves `GET /metrics` with `render`'s text: the application's exporter (for example
    /// `metrics-exporter-prometheus`'s handle, `move || handle.render()`). The store's own gauges
    /// (the session count) are set just before each rendering.
    pub fn with_metrics(mut self, render: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.metrics = Some(Arc::new(render));
        self
    }

    /// The admin routes (see the [module docs](self)), protected by the [`AdminAuth`], to `nest` under
    /// any prefix (`/api/sessions`, `/admin`) or `merge` at the root.
    pub fn router(&self) -> Router {
        let protected = Router::new()
            .route("/stats", get(routes::stats))
            .route("/sessions", get(routes::list))
            .route("/sessions/{id}", axum::routing::delete(routes::delete))
            .route("/cleanup", post(routes::cleanup))
            .route(
                "/users/{user}/sessions",
                get(routes::user_sessions).delete(routes::revoke_user),
            )
            .route("/redis-info", get(routes::info))
            .route("/health", get(routes::full_health))
            .route("/metrics", get(routes::metrics))
            .route_layer(middleware::from_fn_with_state(
                self.auth.clone(),
                auth::layer,
            ));
        protected
            .route("/dashboard", get(dashboard::page))
            .route("/dashboard.css", get(dashboard::style))
            .route("/dashboard.js", get(dashboard::script))
            .fallback(routes::not_found)
            .layer(middleware::map_response(routes::json_405))
            .with_state(self.clone())
    }

    /// The public health check at the root of its own router (`nest("/api/health", …)`): open to
    /// anyone, as a load balancer must be able to ask; it says whether the store serves, never why in
    /// the backend's words.
    pub fn health(&self) -> Router {
        Router::new()
            .route("/", get(routes::public_health))
            .fallback(routes::not_found)
            .layer(middleware::map_response(routes::json_405))
            .with_state(self.clone())
    }
}
