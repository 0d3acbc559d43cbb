//! The DJForge demo API: who is logged in, a visit counter, login and logout, preferences, and the
//! user's sessions.

use crate::body::ExactJson;
use crate::error::AppError;
use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sessionforge::expiry::{Clock, SystemClock};
use sessionforge::Session;
use std::time::Duration;

/// Session keys holding preferences start with this.
const PREF: &str = "pref:";
/// How long "remember me" keeps a session: 30 days, idle and absolute.
const REMEMBER: Duration = Duration::from_secs(30 * 24 * 3600);

type Answer = Result<Json<Value>, AppError>;

/// `GET /api/me`: who is logged in, and how many times this session has asked. In the express format
/// `visits` and `user` are top-level fields, shared with a Node app that does
/// `req.session.visits += 1` and reads `req.session.user`.
pub async fn me(session: Session) -> Answer {
    // An increment, not get + insert: concurrent requests (several tabs) all count.
    let visits = session.increment("visits", 1).await?;
    let user = session.user().await?;
    Ok(Json(json!({ "user": user, "visits": visits })))
}

/// The body of `POST /api/login`.
#[derive(Deserialize)]
pub struct Login {
    user: String,
    #[serde(default)]
    remember: bool,
}

/// `POST /api/login` with `{"user":"alice"}` (and `"remember":true` for a 30-day session): a new
/// session id (against fixation) tied to the user.
pub async fn login(session: Session, body: Result<ExactJson<Login>, AppError>) -> Answer {
    let bad = || {
        AppError::BadRequest(
            "expected a JSON body like {\"user\":\"alice\"} (1 to 128 characters)".into(),
        )
    };
    let ExactJson(Login { user, remember }) = body.map_err(|_| bad())?;
    if user.trim().is_empty() || user.chars().count() > 128 {
        return Err(bad());
    }
    session.cycle_id().await?;
    session.set_user(Some(user.clone())).await?;
    if !remember {
        // The seed's answer, unchanged.
        return Ok(Json(json!({ "success": true, "user": user })));
    }
    session.set_idle_timeout(Some(REMEMBER)).await?;
    session
        .set_deadline(SystemClock.now().plus(REMEMBER))
        .await?;
    session.set_persistent(Some(true)).await?;
    Ok(Json(
        json!({ "success": true, "user": user, "remember": true }),
    ))
}

/// `POST /api/logout`: ends the session everywhere.
pub async fn logout(session: Session) -> Answer {
    session.destroy().await?;
    Ok(Json(json!({ "success": true, "message": "Logged out" })))
}

/// `GET /api/sessions-of-me`: the logged-in user's sessions ("your devices"), metadata only, with
/// this one marked.
pub async fn sessions_of_me(session: Session) -> Answer {
    let this = session.store_key().await?;
    let sessions: Vec<Value> = session
        .user_sessions()
        .await?
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
    let user = session.user().await?;
    Ok(Json(json!({ "user": user, "sessions": sessions })))
}

/// `POST /api/logout-everywhere`: ends every other session of the logged-in user.
pub async fn logout_everywhere(session: Session) -> Answer {
    let n = session.revoke_other_sessions().await?;
    Ok(Json(json!({
        "success": true,
        "revokedSessions": n,
        "message": format!("Logged out of {n} other sessions"),
    })))
}

fn valid_pref_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `PUT /api/prefs/{key}` with any JSON body: stores that one preference (only that key is saved, so
/// concurrent updates of different preferences all land).
pub async fn put_pref(
    session: Session,
    key: Result<Path<String>, PathRejection>,
    ExactJson(value): ExactJson<Value>,
) -> Answer {
    let Path(key) = key?;
    if !valid_pref_key(&key) {
        return Err(AppError::BadRequest(
            "preference keys are 1 to 64 characters of letters, digits, '-', '_' or '.'".into(),
        ));
    }
    session.insert(&format!("{PREF}{key}"), &value).await?;
    Ok(Json(json!({ "success": true, "key": key, "value": value })))
}

/// `GET /api/prefs`: every stored preference as one object.
pub async fn prefs(session: Session) -> Answer {
    let prefs: Map<String, Value> = session
        .data()
        .await?
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix(PREF).map(|k| (k.to_owned(), v)))
        .collect();
    Ok(Json(Value::Object(prefs)))
}
