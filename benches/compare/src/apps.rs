//! The apps the DJForge binary is compared with, both with DJForge's routes and JSON answers and the
//! same app shell (a 2 MB body limit, JSON 405s):
//!
//! * [`tower_sessions`]: the same app on tower-sessions 0.14 with tower-sessions-redis-store 0.16, set
//!   up as its documentation does (a fred pool of 6 connections, default expiry). tower-sessions has no
//!   way to list a session's keys, so the preferences live in one map under the key `prefs` (the
//!   idiomatic way there); the answers are the same JSON.
//! * [`no_sessions`]: the same routes with no session layer at all; the state (visits and
//!   preferences) is one process-wide value, so each answer has the same shape and size.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{middleware, Json, Router};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tower_sessions::{Session, SessionManagerLayer};
use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
use tower_sessions_redis_store::RedisStore;

/// DJForge's body limit.
const BODY_LIMIT: usize = 2 * 1024 * 1024;

type Answer = Result<Json<Value>, Response>;

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json!({ "error": message }).to_string(),
    )
        .into_response()
}

fn unavailable<E>(_: E) -> Response {
    json_error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
}

/// As DJForge: a 405 becomes a JSON answer keeping its `Allow` header.
async fn json_405(res: Response) -> Response {
    if res.status() != StatusCode::METHOD_NOT_ALLOWED {
        return res;
    }
    let allow = res.headers().get(header::ALLOW).cloned();
    let mut out = json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

fn valid_pref_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[allow(clippy::result_large_err)] // an axum Response, answered at once
/// The body of `PUT /api/prefs/{key}`, and the key, checked as DJForge does.
fn pref(key: &str, body: &[u8]) -> Result<Value, Response> {
    if !valid_pref_key(key) {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            "preference keys are 1 to 64 characters of letters, digits, '-', '_' or '.'",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        json_error(
            StatusCode::BAD_REQUEST,
            &format!("the body is not the JSON expected: {e}"),
        )
    })
}

fn shell(api: Router) -> Router {
    Router::new()
        .merge(api.layer(DefaultBodyLimit::max(BODY_LIMIT)))
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::map_response(json_405))
}

// ---- tower-sessions ----

/// `GET /api/me`: `visits` read and incremented (a write every request), and the user.
async fn ts_me(session: Session) -> Answer {
    let visits: u64 = session
        .get("visits")
        .await
        .map_err(unavailable)?
        .unwrap_or(0)
        + 1;
    session
        .insert("visits", visits)
        .await
        .map_err(unavailable)?;
    let user: Option<String> = session.get("user").await.map_err(unavailable)?;
    Ok(Json(json!({ "user": user, "visits": visits })))
}

/// `GET /api/prefs`: every preference as one object.
async fn ts_prefs(session: Session) -> Answer {
    let prefs: Map<String, Value> = session
        .get("prefs")
        .await
        .map_err(unavailable)?
        .unwrap_or_default();
    Ok(Json(Value::Object(prefs)))
}

/// `PUT /api/prefs/{key}`: stores one preference.
async fn ts_put_pref(session: Session, Path(key): Path<String>, body: Bytes) -> Answer {
    let value = pref(&key, &body)?;
    let mut prefs: Map<String, Value> = session
        .get("prefs")
        .await
        .map_err(unavailable)?
        .unwrap_or_default();
    prefs.insert(key.clone(), value.clone());
    session.insert("prefs", prefs).await.map_err(unavailable)?;
    Ok(Json(json!({ "success": true, "key": key, "value": value })))
}

/// The DJForge routes on tower-sessions with its Redis store on `url`.
pub async fn tower_sessions(url: &str) -> Router {
    // As tower-sessions-redis-store's documentation sets it up: a fred pool of 6.
    let pool =
        Pool::new(Config::from_url(url).expect("url"), None, None, None, 6).expect("fred pool");
    // The connection tasks run on their own; the handle is not needed.
    drop(pool.connect());
    pool.wait_for_connect().await.expect("connect");
    let layer = SessionManagerLayer::new(RedisStore::new(pool)).with_secure(false);
    shell(
        Router::new()
            .route("/api/me", get(ts_me))
            .route("/api/prefs", get(ts_prefs))
            .route("/api/prefs/{key}", put(ts_put_pref))
            .layer(layer),
    )
}

// ---- no sessions ----

#[derive(Default)]
struct Shared {
    visits: AtomicU64,
    prefs: RwLock<Map<String, Value>>,
}

/// The DJForge routes without sessions: one process-wide counter and preference map.
pub fn no_sessions() -> Router {
    let state = Arc::new(Shared::default());
    let me = {
        let state = state.clone();
        move || {
            let visits = state.visits.fetch_add(1, Ordering::Relaxed) + 1;
            async move { Json(json!({ "user": Option::<String>::None, "visits": visits })) }
        }
    };
    let prefs = {
        let state = state.clone();
        move || {
            let prefs = state.prefs.read().expect("prefs").clone();
            async move { Json(Value::Object(prefs)) }
        }
    };
    let put_pref = move |Path(key): Path<String>, body: Bytes| {
        let state = state.clone();
        async move {
            let value = pref(&key, &body)?;
            state
                .prefs
                .write()
                .expect("prefs")
                .insert(key.clone(), value.clone());
            Answer::Ok(Json(json!({ "success": true, "key": key, "value": value })))
        }
    };
    shell(
        Router::new()
            .route("/api/me", get(me))
            .route("/api/prefs", get(prefs))
            .route("/api/prefs/{key}", put(put_pref)),
    )
}
