//! The small app most integration tests serve: a per-session counter.
#![allow(dead_code)]

use axum::routing::{get, post};
use axum::Router;
use sessionforge::{Session, SessionError};

/// `POST /incr` adds one to `n` and answers it (get, add, insert: last writer wins), `GET /read`
/// answers `n` without writing, `POST /logout` destroys the session. Add the layer yourself.
pub fn counter() -> Router {
    Router::new()
        .route("/incr", post(incr))
        .route("/read", get(read))
        .route("/logout", post(logout))
}

async fn incr(s: Session) -> Result<String, SessionError> {
    let n: u64 = s.get("n").await?.unwrap_or(0) + 1;
    s.insert("n", n).await?;
    Ok(n.to_string())
}

async fn read(s: Session) -> Result<String, SessionError> {
    Ok(s.get::<u64>("n").await?.unwrap_or(0).to_string())
}

async fn logout(s: Session) -> Result<&'static str, SessionError> {
    s.destroy().await?;
    Ok("bye")
}
