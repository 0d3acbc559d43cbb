//! DJForge, rebuilt on sessionforge: a drop-in for the original Node app's session setup.
//!
//! ```text
//! cargo run --example djforge
//! ```
//!
//! * Listens on `PORT` (default 3001) on `HOST` (default 0.0.0.0).
//! * Sessions in Redis per `REDIS_URL`, or `REDIS_HOST` / `REDIS_PORT` / `REDIS_PASSWORD` /
//!   `REDIS_USERNAME` / `REDIS_DB` / `REDIS_TLS` (a cluster with `REDIS_CLUSTER_NODES`, Sentinel with
//!   `REDIS_SENTINELS` and `REDIS_SENTINEL_MASTER`), under the key prefix `djforge:sess:`. When Redis is
//!   not there it prints `⚠️  Redis unavailable, falling back to file-based sessions: <reason>` and serves
//!   from `SESSION_DIR` (default `./sessions`); when Redis comes back it fails back by itself.
//! * The admin API at `/api/sessions` (stats, sessions, cleanup, redis-info, health, metrics) takes the
//!   bearer token in `SESSION_ADMIN_TOKEN` when set, and otherwise answers only the local machine, so
//!   `curl http://localhost:3001/api/sessions/stats` works as the original docs show.
//! * Health at `/api/health`. Demo API: `GET /api/me`, `POST /api/login` `{"user":"alice"}`,
//!   `POST /api/logout`, `PUT /api/prefs/{key}` (JSON body), `GET /api/prefs`.
//! * `SESSION_COOKIE_SECURE=false` drops the `Secure` cookie flag for plain-HTTP hosts other than
//!   localhost. Ctrl-C or SIGTERM shuts down gracefully: open requests finish, their sessions are saved.

mod app;

use sessionforge::admin::AdminAuth;
use sessionforge::shutdown::Shutdown;
use sessionforge::store::redis::{RedisConfig, RedisStore};
use sessionforge::store::{FailoverStore, FileStore};
use sessionforge::SessionLayer;
use std::net::SocketAddr;
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads a variable, parsing it; a bad value is an error that names the variable.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value").into()),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sessionforge=info".into()),
        )
        .init();

    let port: u16 = env_or("PORT", 3001)?;
    let host: std::net::IpAddr = env_or("HOST", std::net::IpAddr::from([0, 0, 0, 0]))?;
    let secure: bool = env_or("SESSION_COOKIE_SECURE", true)?;
    let dir = std::env::var("SESSION_DIR").unwrap_or_else(|_| "./sessions".into());
    let redis_config = RedisConfig::from_env()?.with_prefix("djforge:sess:");
    let admin_auth = match std::env::var("SESSION_ADMIN_TOKEN") {
        Ok(token) if !token.is_empty() => AdminAuth::bearer(token),
        _ => AdminAuth::loopback_only(),
    };

    let shutdown = Shutdown::new();
    shutdown.listen_for_os_signals();

    let files = FileStore::new(&dir);
    files.init().await?;
    shutdown.register(files.spawn_reaper_until(Duration::from_secs(60), shutdown.signal()));
    let redis = RedisStore::new(redis_config.clone())?;
    let store = FailoverStore::new(redis, files)
        .with_check_interval(Duration::from_secs(5))
        .start(&shutdown)
        .await;
    if store.is_on_fallback() {
        println!("Sessions: file store in {dir} (failing back to Redis when it answers)");
    } else {
        println!("Sessions: Redis at {redis_config}");
    }

    let layer = SessionLayer::new(store.clone())
        .with_secure(secure)
        .with_shutdown(&shutdown);
    let app = app::router(store, layer, admin_auth);

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(host, port)).await?;
    println!("DJForge listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.signal())
    .await?;

    let report = shutdown.drain(Duration::from_secs(10)).await;
    println!(
        "DJForge stopped ({} saves abandoned, {} tasks aborted)",
        report.saves_abandoned, report.tasks_aborted
    );
    Ok(())
}
