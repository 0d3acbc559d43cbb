//! Hostile input against the session layer and the admin service, over real HTTP on loopback:
//! malformed, oversized, duplicated and non-UTF-8 cookies and headers, forged and tampered signed
//! tokens, tokens shaped like paths, huge session payloads, records with absurd field values, and admin
//! requests with odd methods, paths, queries and bodies. None may give a 5xx or a panic, and none may
//! reach data it was not given.
//!
//! (Corrupt data planted in Redis and in session files is in `tests/stores_hostile.rs`.)

#[path = "support/http.rs"]
mod http_support;
#[path = "support/recording.rs"]
mod recording;

use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use http_support::{raw, serve, Browser};
use recording::{Call, Recording};
use sessionforge::admin::{AdminAuth, AdminService};
use sessionforge::cookie::Key;
use sessionforge::expiry::{Clock, SystemClock, Timestamp};
use sessionforge::id::{StoreKey, Token};
use sessionforge::store::{ManagedStore, MemoryStore, Record, SessionStore};
use sessionforge::{Session, SessionError, SessionLayer};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs a test body under a time limit, so a hang fails instead of stalling the suite.
async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("test took longer than 30 s")
}

/// A small app: a counter, a key setter, a payload sink, and admin at `/api/sessions` (open, since
/// these tests are about input, not access).
fn app(layer: SessionLayer, store: MemoryStore) -> Router {
    Router::new()
        .route(
            "/incr",
            post(|s: Session| async move {
                let n: u64 = s.get("n").await?.unwrap_or(0) + 1;
                s.insert("n", n).await?;
                Ok::<_, SessionError>(n.to_string())
            }),
        )
        .route(
            "/read",
            get(|s: Session| async move {
                let n: u64 = s.get("n").await?.unwrap_or(0);
                Ok::<_, SessionError>(n.to_string())
            }),
        )
        .route(
            "/put",
            post(|s: Session, body: String| async move {
                s.insert("payload", body).await?;
                Ok::<_, SessionError>("stored")
            }),
        )
        .route(
            "/many/{n}",
            post(
                |s: Session, axum::extract::Path(n): axum::extract::Path<usize>| async move {
                    // Many small keys, each under the limit, together over it.
                    for i in 0..n {
                        s.insert(&format!("k{i}"), "x".repeat(100)).await?;
                    }
                    Ok::<_, SessionError>("stored")
                },
            ),
        )
        .layer(layer)
        .nest_service(
            "/api/sessions",
            AdminService::new(store).with_auth(AdminAuth::insecure_open_to_anyone()),
        )
}

/// Sends raw bytes as one HTTP/1.1 request and answers the status (0 when the server closed the
/// connection without answering, which would mean a panic in a handler).
async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn record_at(t: Timestamp, expires: Timestamp) -> Record {
    Record {
        created_at: t,
        last_access: t,
        expires,
        deadline: expires,
        user_agent: Some("planted".into()),
        user: None,
        data: Default::default(),
    }
}

#[tokio::test]
async fn a_record_with_times_past_year_9999_is_listed_not_a_panic() {
    bounded(async {
        let store = MemoryStore::new();
        let far = Timestamp::from_millis(u64::MAX);
        let key = Token::generate().store_key();
        store.create(&key, &record_at(far, far)).await.unwrap();
        let addr = serve(app(SessionLayer::new(store.clone()), store.clone())).await;
        let client = http_support::client();
        for path in ["/api/sessions/sessions", "/api/sessions/stats"] {
            let req = Request::get(format!("http://{addr}{path}"))
                .body(Full::default())
                .unwrap();
            let r = raw(&client, req).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
        }
        let req = Request::get(format!("http://{addr}/api/sessions/sessions"))
            .body(Full::default())
            .unwrap();
        let listing = raw(&client, req).await.json();
        assert_eq!(listing["sessions"][0]["id"], key.as_str());
        let created = listing["sessions"][0]["createdAt"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(created).is_ok(), "{created}");
    })
    .await
}
