//! The DJForge demo API and the router that mounts the admin and health services. Shared by the
//! `djforge` example's `main.rs` and its tests.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sessionforge::admin::{AdminAuth, AdminService};
use sessionforge::store::ManagedStore;
use sessionforge::{Session, SessionError, SessionLayer};

/// Session keys holding preferences start with this.
const PREF: &str = "pref:";

/// A JSON error answer.
fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// An error from the session (store down, oversized data) as its JSON answer.
fn session_error(e: SessionError) -> Response {
    e.into_response()
}

/// `GET /api/me`: who is logged in, and how many times this session has asked.
async fn me(session: Session) -> Result<Json<Value>, Response> {
    // An increment, not get + insert: concurrent requests (several tabs) all count.
    let visits = session
        .increment("visits", 1)
        .await
        .map_err(session_error)?;
    let user = session.user().await.map_err(session_error)?;
    Ok(Json(json!({ "user": user, "visits": visits })))
}

/// `POST /api/login` with `{"user":"alice"}`: a new session id (against fixation) tied to the user.
async fn login(session: Session, body: Bytes) -> Result<Json<Value>, Response> {
    let user = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("user").and_then(Value::as_str).map(str::to_owned))
        .filter(|u| !u.trim().is_empty() && u.len() <= 128)
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "expected a JSON body like {\"user\":\"alice\"} (1 to 128 characters)",
            )
        })?;
    session.cycle_id().await.map_err(session_error)?;
    session
        .set_user(Some(user.clone()))
        .await
        .map_err(session_error)?;
    Ok(Json(json!({ "success": true, "user": user })))
}

/// `POST /api/logout`: ends the session everywhere.
async fn logout(session: Session) -> Result<Json<Value>, Response> {
    session.destroy().await.map_err(session_error)?;
    Ok(Json(json!({ "success": true, "message": "Logged out" })))
}

/// `GET /api/sessions-of-me`: the logged-in user's sessions ("your devices"), metadata only, with
/// this one marked.
async fn sessions_of_me(session: Session) -> Result<Json<Value>, Response> {
    let this = session.store_key().await.map_err(session_error)?;
    let sessions: Vec<Value> = session
        .user_sessions()
        .await
        .map_err(session_error)?
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id.as_str(),
                "current": Some(&s.id) == this.as_ref(),
                "createdAt": s.created_at.to_rfc3339(),
                "lastAccess": s.last_access.to_rfc3339(),
                "expires": s.expires.to_rfc3339(),
                "userAgent": s.user_agent,
            })
        })
        .collect();
    let user = session.user().await.map_err(session_error)?;
    Ok(Json(json!({ "user": user, "sessions": sessions })))
}

/// `POST /api/logout-everywhere`: ends every other session of the logged-in user.
async fn logout_everywhere(session: Session) -> Result<Json<Value>, Response> {
    let n = session
        .revoke_other_sessions()
        .await
        .map_err(session_error)?;
    Ok(Json(
        json!({ "success": true, "revokedSessions": n, "message": format!("Logged out of {n} other sessions") }),
    ))
}

fn valid_pref_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `PUT /api/prefs/{key}` with any JSON body: stores that one preference (only that key is saved, so
/// concurrent updates of different preferences all land).
async fn put_pref(
    session: Session,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Response> {
    if !valid_pref_key(&key) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "preference keys are 1 to 64 characters of letters, digits, '-', '_' or '.'",
        ));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "the body must be JSON"))?;
    session
        .insert(&format!("{PREF}{key}"), &value)
        .await
        .map_err(session_error)?;
    Ok(Json(json!({ "success": true, "key": key, "value": value })))
}

/// `GET /api/prefs`: every stored preference as one object.
async fn prefs(session: Session) -> Result<Json<Value>, Response> {
    let data = session.data().await.map_err(session_error)?;
    let prefs: Map<String, Value> = data
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(PREF).map(|k| (k.to_owned(), v)))
        .collect();
    Ok(Json(Value::Object(prefs)))
}

/// The whole app: the demo API under the session layer, the admin service at `/api/sessions` and
/// health at `/api/health` (outside the session layer: they create no sessions).
pub fn router<S>(store: S, layer: SessionLayer, admin_auth: AdminAuth) -> Router
where
    S: ManagedStore + Clone,
{
    let admin = AdminService::new(store).with_auth(admin_auth);
    let health = admin.health_service();
    let api = Router::new()
        .route("/api/me", get(me))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/sessions-of-me", get(sessions_of_me))
        .route("/api/logout-everywhere", post(logout_everywhere))
        .route("/api/prefs", get(prefs))
        .route("/api/prefs/{key}", put(put_pref))
        .layer(layer);
    Router::new()
        .merge(api)
        .nest_service("/api/sessions", admin)
        .route_service("/api/health", health)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
}
