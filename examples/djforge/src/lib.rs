//! DJForge, rebuilt on sessionforge: a drop-in for the original Node app's session setup.
//!
//! ```text
//! cargo run --example djforge
//! ```
//!
//! * Listens on `PORT` (3001) on `HOST` (0.0.0.0).
//! * Sessions in Redis per `REDIS_URL`, or `REDIS_HOST` / `REDIS_PORT` / `REDIS_PASSWORD` /
//!   `REDIS_USERNAME` / `REDIS_DB` / `REDIS_TLS` (a cluster with `REDIS_CLUSTER_NODES`, Sentinel with
//!   `REDIS_SENTINELS` and `REDIS_SENTINEL_MASTER`), under the key prefix `djforge:sess:`, with a read
//!   cache of `SESSION_READ_CACHE` sessions (10,000; 0 turns it off). When Redis is not there it prints
//!   `⚠️  Redis unavailable, falling back to file-based sessions: <reason>` and serves from
//!   `SESSION_DIR` (`./sessions`); when Redis comes back it fails back by itself.
//! * `SESSION_FORMAT=express` (with `SESSION_SECRET`, comma-separated, the signing one first) shares
//!   live sessions with an express-session + connect-redis app on the same Redis: its `connect.sid`
//!   cookies, raw-sid keys and JSON (`SESSION_COOKIE_NAME` overrides the cookie name).
//! * `SESSION_IDLE_TIMEOUT` and `SESSION_ABSOLUTE_TIMEOUT` (humantime: `30m`, `7d`) set the timeouts;
//!   `POST /api/login` with `"remember":true` gives a 30-day session.
//! * The admin API at `/api/sessions` (stats, sessions, cleanup, redis-info, health, metrics, dashboard)
//!   takes the bearer token in `SESSION_ADMIN_TOKEN` when set, and otherwise answers only the local
//!   machine, so `curl http://localhost:3001/api/sessions/stats` works as the original docs show.
//! * Health at `/api/health`. Errors are JSON everywhere.

pub mod api;
pub mod body;
pub mod error;
pub mod settings;

use axum::routing::{get, post, put};
use axum::{middleware, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use sessionforge::admin::{AdminAuth, AdminService};
use sessionforge::format::{Express, SharedFormat};
use sessionforge::shutdown::Shutdown;
use sessionforge::store::redis::RedisStore;
use sessionforge::store::{FailoverStore, FileStore, SessionStore};
use sessionforge::SessionLayer;
use settings::{Format, Settings};
use std::sync::Arc;
use std::time::Duration;

pub use settings::SettingsError;

/// The key prefix of the original DJForge.
pub const PREFIX: &str = "djforge:sess:";
/// The largest request body the app reads.
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The store the app runs on: Redis, failing over to files.
pub type Store = FailoverStore<RedisStore, FileStore>;

/// The whole app: the demo API under the session layer, the admin API at `/api/sessions` and health at
/// `/api/health` (outside the session layer: they create no sessions).
pub fn router(layer: SessionLayer, admin: &AdminService) -> Router {
    let api = Router::new()
        .route("/api/me", get(api::me))
        .route("/api/login", post(api::login))
        .route("/api/logout", post(api::logout))
        .route("/api/sessions-of-me", get(api::sessions_of_me))
        .route("/api/logout-everywhere", post(api::logout_everywhere))
        .route("/api/prefs", get(api::prefs))
        .route("/api/prefs/{key}", put(api::put_pref))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(layer);
    Router::new()
        .merge(api)
        .nest("/api/sessions", admin.router())
        .nest("/api/health", admin.health())
        .fallback(|| async { error::AppError::NotFound })
        .layer(middleware::map_response(error::json_405))
}

/// The admin protection the settings ask for: the bearer token when set, loopback-only otherwise.
pub fn admin_auth(settings: &Settings) -> AdminAuth {
    match &settings.admin_token {
        Some(token) => AdminAuth::bearer(token),
        None => AdminAuth::loopback_only(),
    }
}

/// The format the settings ask for.
pub fn format(
    settings: &Settings,
) -> Result<SharedFormat, Box<dyn std::error::Error + Send + Sync>> {
    Ok(match &settings.format {
        Format::Native => sessionforge::format::native(),
        Format::Express { secrets } => {
            Arc::new(Express::new(secrets)?.with_cookie_attributes(settings.secure, "lax"))
        }
    })
}

/// The running app's parts.
pub struct App {
    /// The router to serve (with `into_make_service_with_connect_info::<SocketAddr>()`).
    pub router: Router,
    /// The store, to report its mode.
    pub store: Store,
    /// The admin's protection, to report at startup.
    pub admin_mode: &'static str,
}

/// Builds the app from its settings: the stores (starting on Redis when it answers, the file fallback
/// when not), the layer and the admin service. An unusable `SESSION_DIR` is an error naming it,
/// unless Redis serves: then the app starts on Redis with the fallback reported unavailable.
pub async fn build(
    settings: &Settings,
    shutdown: &Shutdown,
    metrics: Option<PrometheusHandle>,
) -> Result<App, Box<dyn std::error::Error + Send + Sync>> {
    let format = format(settings)?;
    let mut redis_config = settings
        .redis
        .clone()
        .with_prefix(PREFIX)
        .with_format(format.clone());
    if let Some(n) = settings.read_cache {
        redis_config = redis_config.with_read_cache(n);
    }
    let redis = redis_config.build()?;
    let files = FileStore::builder(&settings.dir)
        .with_format(format)
        .build();
    match files.init().await {
        Ok(()) => {
            shutdown.register(files.spawn_reaper_until(Duration::from_secs(60), shutdown.signal()))
        }
        Err(e) => {
            let problem = format!(
                "SESSION_DIR={} cannot hold session files: {e}",
                settings.dir.display()
            );
            let redis_health = redis.health().await;
            if !redis_health.is_serving() {
                return Err(format!(
                    "{problem}; and Redis does not answer either ({}), so there is nowhere to keep sessions",
                    redis_health.detail.unwrap_or_default()
                )
                .into());
            }
            tracing::error!(
                "{problem}; serving from Redis, with no file fallback until it is fixed"
            );
            eprintln!("⚠️  {problem}; serving from Redis, with no file fallback until it is fixed");
        }
    }
    let store = FailoverStore::builder(redis, files)
        .with_check_interval(Duration::from_secs(5))
        .start(shutdown)
        .await;
    let mut layer = SessionLayer::new(store.clone())
        .with_secure(settings.secure)
        .with_shutdown(shutdown);
    if let Some(name) = &settings.cookie_name {
        layer = layer.with_cookie_name(name.clone());
    }
    if let Some(idle) = settings.idle {
        layer = layer.with_idle_timeout(idle);
    }
    if let Some(absolute) = settings.absolute {
        layer = layer.with_absolute_timeout(absolute);
    }
    let auth = admin_auth(settings);
    let admin_mode = auth.mode();
    let mut admin = AdminService::new(store.clone()).with_auth(auth);
    if let Some(handle) = metrics {
        admin = admin.with_metrics(move || handle.render());
    }
    Ok(App {
        router: router(layer, &admin),
        store,
        admin_mode,
    })
}
