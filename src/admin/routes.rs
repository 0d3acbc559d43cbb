//! The admin routes' handlers. Each reads the store through the [contract](crate::store): a route the
//! store cannot serve answers 501 with the store's own "cannot" message, never a wrong figure.

use super::json::{self, Deleted, Removed, SessionList, UserSessions};
use super::AdminService as Admin;
use crate::id::StoreKey;
use crate::store::{StoreError, Usage};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Cursors longer than this are refused with 400 (no store hands out anything near it).
const MAX_CURSOR: usize = 1024;
/// User ids longer than this (in bytes, decoded) are refused with 400.
const MAX_USER: usize = 512;

fn bad_request(msg: impl Into<String>) -> Response {
    json::error(StatusCode::BAD_REQUEST, msg)
}

/// A path segment, percent-decoded, or what is wrong with it (a 400).
fn segment(path: Result<Path<String>, PathRejection>) -> Result<String, &'static str> {
    path.map(|Path(s)| s)
        .map_err(|_| "the path is not valid percent-encoded UTF-8")
}

/// `GET /stats`: the store serving now, how many sessions it holds, its resource figures (under the
/// section the store names) and warnings.
pub(super) async fn stats(State(admin): State<Admin>) -> Response {
    let store = &admin.store;
    let count = match store.count().await {
        Ok(n) => n,
        Err(e) => return json::store_error(&e),
    };
    let mut body = Map::new();
    body.insert("sessionStore".into(), store.name().into());
    body.insert("sessionCount".into(), count.into());
    let mut warnings = Vec::new();
    match store.usage().await {
        Ok(Usage {
            section,
            figures,
            warnings: w,
            ..
        }) => {
            body.insert(section.into(), Value::Object(figures));
            warnings = w;
        }
        // No figures rather than wrong ones.
        Err(StoreError::Unsupported { .. }) => {}
        Err(e) => return json::store_error(&e),
    }
    body.insert("warnings".into(), warnings.into());
    body.insert("timestamp".into(), json::now().into());
    json::json(StatusCode::OK, &Value::Object(body))
}

/// The query of `GET /sessions`; a parameter given twice is refused.
#[derive(Deserialize)]
pub(super) struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /sessions?limit=&cursor=`.
pub(super) async fn list(
    State(admin): State<Admin>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return bad_request("invalid query: give limit and cursor at most once each, as UTF-8");
    };
    let max = admin.max_page;
    let limit = match q.limit.as_deref() {
        None | Some("") => 50.min(max),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => return bad_request(format!("limit must be a whole number from 1 to {max}")),
        },
    };
    let cursor = q.cursor.filter(|c| !c.is_empty());
    if cursor
        .as_ref()
        .is_some_and(|c| c.len() > MAX_CURSOR || c.chars().any(char::is_control))
    {
        return bad_request("invalid cursor");
    }
    let store = &admin.store;
    let page = match store.list(cursor.as_deref(), limit).await {
        Ok(p) => p,
        Err(e) => return json::store_error(&e),
    };
    let total = match store.count().await {
        Ok(n) => n,
        Err(e) => return json::store_error(&e),
    };
    json::json(
        StatusCode::OK,
        &SessionList {
            sessions: page
                .sessions
                .into_iter()
                .filter(|s| !s.tombstone)
                .map(Into::into)
                .collect(),
            total,
            next_cursor: page.next_cursor,
            timestamp: json::now(),
        },
    )
}

/// `DELETE /sessions/{id}`: 404 when there is no such session.
pub(super) async fn delete(
    State(admin): State<Admin>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match segment(id) {
        Ok(id) => id,
        Err(why) => return bad_request(why),
    };
    // Parsed before the store sees it: nothing but a well-formed store key reaches a backend.
    let Ok(key) = StoreKey::parse(&id) else {
        return bad_request("not a session id: ids are the store keys shown by GET /sessions");
    };
    match admin.store.delete(&key).await {
        Ok(true) => json::json(
            StatusCode::OK,
            &Deleted {
                success: true,
                message: format!("Session {key} deleted"),
            },
        ),
        Ok(false) => json::error(
            StatusCode::NOT_FOUND,
            format!(
                "no session {key} (already gone, or a cookie value rather than an id from GET /sessions)"
            ),
        ),
        Err(e) => json::store_error(&e),
    }
}

/// `{"success":true,"deletedSessions":n,"message":…}`.
fn removed(n: u64, message: String) -> Response {
    json::json(
        StatusCode::OK,
        &Removed {
            success: true,
            deleted_sessions: n,
            message,
        },
    )
}

/// `POST /cleanup`.
pub(super) async fn cleanup(State(admin): State<Admin>) -> Response {
    match admin.store.cleanup().await {
        Ok(n) => removed(n, format!("Cleaned up {n} expired sessions")),
        Err(e) => json::store_error(&e),
    }
}

/// The user of a `/users/{user}/…` path, or what is wrong with it (a 400).
fn user_of(path: Result<Path<String>, PathRejection>) -> Result<String, &'static str> {
    let user = segment(path)?;
    if user.is_empty() {
        return Err("empty user id");
    }
    if user.len() > MAX_USER {
        return Err("user id too long");
    }
    Ok(user)
}

/// `GET /users/{user}/sessions`: 200 with an empty list for a user without sessions (whether the user
/// exists is not the session store's to say).
pub(super) async fn user_sessions(
    State(admin): State<Admin>,
    user: Result<Path<String>, PathRejection>,
) -> Response {
    let user = match user_of(user) {
        Ok(u) => u,
        Err(why) => return bad_request(why),
    };
    match admin.store.user_sessions(&user).await {
        Ok(sessions) => json::json(
            StatusCode::OK,
            &UserSessions {
                user,
                total: sessions.len() as u64,
                sessions: sessions.into_iter().map(Into::into).collect(),
                timestamp: json::now(),
            },
        ),
        Err(e) => json::store_error(&e),
    }
}

/// `DELETE /users/{user}/sessions`: logs the user out everywhere.
pub(super) async fn revoke_user(
    State(admin): State<Admin>,
    user: Result<Path<String>, PathRejection>,
) -> Response {
    let user = match user_of(user) {
        Ok(u) => u,
        Err(why) => return bad_request(why),
    };
    match admin.store.revoke_user_sessions(&user, None).await {
        Ok(n) => {
            tracing::info!(sessions = n, "admin revoked a user's sessions");
            removed(n, format!("Revoked {n} sessions of the user"))
        }
        Err(e) => json::store_error(&e),
    }
}

/// `GET /redis-info`: the backend's own information, as the store gives it; 503 while the store
/// serving sessions has none (a failover store on its files).
pub(super) async fn info(State(admin): State<Admin>) -> Response {
    match admin.store.info().await {
        Ok(Some(mut fields)) => {
            fields.insert("timestamp".into(), json::now().into());
            json::json(StatusCode::OK, &Value::Object(fields))
        }
        Ok(None) => json::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no backend information: the {} store is serving sessions",
                admin.store.name()
            ),
        ),
        Err(e) => json::store_error(&e),
    }
}

/// `GET /health` under the admin: the full detail, for operators.
pub(super) async fn full_health(State(admin): State<Admin>) -> Response {
    let h = admin.store.health().await;
    json::health(h, true)
}

/// The public health: the seed's fields and a short reason, no backend error text (that goes to the
/// log and the admin's own health).
pub(super) async fn public_health(State(admin): State<Admin>) -> Response {
    let h = admin.store.health().await;
    if let Some(detail) = &h.detail {
        if h.status != crate::store::HealthStatus::Ok {
            tracing::warn!(
                store = h.serving,
                detail,
                "session store health: {:?}",
                h.status
            );
        }
    }
    json::health(h, false)
}

/// `GET /metrics`: the application's exporter's text, with the gauges only the store knows set
/// first. 404 when no exporter was given.
pub(super) async fn metrics(State(admin): State<Admin>) -> Response {
    let Some(render) = admin.metrics.clone() else {
        return json::error(
            StatusCode::NOT_FOUND,
            "no metrics exporter installed (AdminService::with_metrics)",
        );
    };
    // A failing count leaves its gauge as it was rather than failing the scrape: metrics matter
    // most while the store is in trouble.
    if let Ok(n) = admin.store.count().await {
        crate::metrics::sessions(n);
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        render(),
    )
        .into_response()
}

/// Unknown paths.
pub(super) async fn not_found() -> Response {
    json::error(
        StatusCode::NOT_FOUND,
        "no such admin route (try stats, sessions, cleanup, redis-info, health, metrics, dashboard)",
    )
}

/// Axum answers a known path with a wrong method with an empty 405 and its `Allow` header: the same,
/// as JSON.
pub(super) async fn json_405(method: axum::http::Method, res: Response) -> Response {
    if res.status() != StatusCode::METHOD_NOT_ALLOWED {
        return res;
    }
    // axum adds the `Allow` header outside this layer: it reaches the client, not this message.
    let mut out = json::error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed here; the Allow header lists the methods this path takes"),
    );
    if let Some(allow) = res.headers().get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}
