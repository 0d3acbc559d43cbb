//! The smallest Axum app with sessions: a per-visitor counter in memory.
//!
//! ```text
//! cargo run --example axum_counter
//! curl -c jar -b jar http://127.0.0.1:3000/    # 1, 2, 3 ... per cookie jar
//! ```
//!
//! The cookie is `Secure` by default; curl and browsers send it to `http://localhost` / `127.0.0.1`
//! anyway. For another plain-HTTP host, add `.with_secure(false)` during development.
#![allow(dead_code)]

use axum::routing::get;
use axum::Router;
use sessionforge::store::MemoryStore;
use sessionforge::{Session, SessionError, SessionLayer};

/// `GET /`: counts this visitor's requests.
async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", n).await?;
    Ok(format!("{n}\n"))
}

/// The app: one route, one layer.
pub fn app() -> Router {
    Router::new()
        .route("/", get(count))
        .layer(SessionLayer::new(MemoryStore::new()))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app()).await
}
