//! Hostile input against the session layer and the admin service, over real HTTP on loopback:
//! malformed, oversized, duplicated and non-UTF-8 cookies and headers, forged and tampered signed
//! tokens, tokens shaped like paths, huge session payloads, records with absurd field values, and admin
//! requests with odd methods, paths, queries and bodies. None may give a 5xx or a panic, and none may
//! reach data it was not given.
//!
//! (Corrupt data planted in Redis and in session files is in `tests/stores_hostile.rs`.)

#[path = "support/apps.rs"]
mod apps;
#[path = "support/http.rs"]
mod http_support;
#[path = "support/recording.rs"]
mod recording;

use axum::routing::post;
use axum::Router;
use http::{Request, StatusCode};
use http_body_util::Full;
use http_support::{raw, serve, Browser};
use recording::{Call, Recording};
use sessionforge::admin::{AdminAuth, AdminService};
use sessionforge::cookie::Key;
use sessionforge::expiry::{Clock, SystemClock, Timestamp};
use sessionforge::id::{StoreKey, Token};
use sessionforge::store::{MemoryStore, Record, SessionStore};
use sessionforge::{Session, SessionError, SessionLayer};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The length of a native token (43 base64url characters: 256 bits).
const TOKEN_LEN: usize = 43;

/// Runs a test body under a time limit, so a hang fails instead of stalling the suite.
async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("test took longer than 30 s")
}

/// A small app: a counter, a key setter, a payload sink, and admin at `/api/sessions` (open, since
/// these tests are about input, not access).
fn app(layer: SessionLayer, store: MemoryStore) -> Router {
    apps::counter()
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
        .route(
            "/put-json",
            post(
                |s: Session, axum::Json(v): axum::Json<serde_json::Value>| async move {
                    s.insert_value("doc", v).await?;
                    Ok::<_, SessionError>("stored")
                },
            ),
        )
        .layer(layer)
        .nest(
            "/api/sessions",
            AdminService::new(store)
                .with_auth(AdminAuth::insecure_open_to_anyone())
                .router(),
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
    let mut r = Record::new(t, expires, expires);
    r.user_agent = Some("planted".into());
    r
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

/// Sends `POST /incr` with the given raw header lines; answers status and body.
async fn incr_with(addr: SocketAddr, headers: &[u8]) -> (u16, String) {
    let mut req =
        b"POST /incr HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n".to_vec();
    req.extend_from_slice(headers);
    req.extend_from_slice(b"\r\n");
    raw_http(addr, &req).await
}

#[tokio::test]
async fn hostile_cookie_and_header_values_get_a_fresh_session_never_a_5xx() {
    bounded(async {
        let store = Recording::new(MemoryStore::new());
        let plain = serve(app(SessionLayer::new(store.clone()), MemoryStore::new())).await;
        let key = Key::generate();
        let signed = serve(app(
            SessionLayer::new(store.clone()).with_signing_keys([key.clone()]),
            MemoryStore::new(),
        ))
        .await;
        let header = serve(app(
            SessionLayer::new(store.clone())
                .with_header(http::HeaderName::from_static("x-session-id")),
            MemoryStore::new(),
        ))
        .await;

        // A real signed cookie, to tamper with.
        let mut b = Browser::new(signed);
        b.post("/incr", "").await;
        let good = b.cookie.clone().unwrap();
        let token = &good[good.len() - TOKEN_LEN..];
        let forged_sig = format!("{}{}", "A".repeat(good.len() - TOKEN_LEN), token);
        let other_key = {
            let mut jar = sessionforge::cookie::CookieJar::new();
            jar.signed_mut(&Key::generate())
                .add(sessionforge::cookie::Cookie::new("id", token.to_owned()));
            jar.get("id").unwrap().value().to_owned()
        };
        let path_token = format!("{}/../../etc", &"A".repeat(33));
        let long = "A".repeat(16 * 1024);
        let cookie_cases: Vec<(SocketAddr, Vec<u8>)> = vec![
            (signed, format!("cookie: id={forged_sig}\r\n").into_bytes()),
            (signed, format!("cookie: id={other_key}\r\n").into_bytes()),
            (signed, format!("cookie: id={token}\r\n").into_bytes()),
            (
                signed,
                format!("cookie: id={}\r\n", &good[..good.len() - 1]).into_bytes(),
            ),
            (signed, format!("cookie: id={path_token}\r\n").into_bytes()),
            (plain, format!("cookie: id={path_token}\r\n").into_bytes()),
            (plain, b"cookie: id=\xc3\x28\xa0\xa1\r\n".to_vec()),
            (plain, b"cookie: id=\"quoted\"; id=; =id\r\n".to_vec()),
            (plain, format!("cookie: id={long}\r\n").into_bytes()),
            // Many cookie headers, each with an unknown token.
            (
                plain,
                (0..50)
                    .map(|_| format!("cookie: id={}\r\n", Token::generate().as_str()))
                    .collect::<String>()
                    .into_bytes(),
            ),
            (header, b"x-session-id: \xff\xfe\r\n".to_vec()),
            (
                header,
                format!("x-session-id: {path_token}\r\n").into_bytes(),
            ),
            (header, format!("x-session-id: {long}\r\n").into_bytes()),
            (
                header,
                format!(
                    "x-session-id: {}\r\nx-session-id: {}\r\n",
                    Token::generate().as_str(),
                    Token::generate().as_str()
                )
                .into_bytes(),
            ),
            (header, b"x-session-id:\r\n".to_vec()),
        ];
        store.take();
        for (addr, headers) in &cookie_cases {
            let (status, text) = incr_with(*addr, headers).await;
            let shown = String::from_utf8_lossy(headers);
            // Hyper itself may refuse a header block it cannot take (431); the layer never fails.
            assert!(
                status == 200 || status == 431,
                "{shown:?} -> {status}: {text}"
            );
            if status == 200 {
                assert!(
                    text.ends_with("\r\n\r\n1"),
                    "{shown:?} reached data: {text}"
                );
            }
        }
        // Forged, foreign-key and path-shaped tokens never reached the store as a lookup; only the
        // 50 well-formed unknown tokens might, and then only the first that is looked up.
        let loads = store
            .take()
            .into_iter()
            .filter(|c| matches!(c, Call::Load(_)))
            .count();
        assert!(
            loads <= 1,
            "{loads} lookups for tokens the server never issued"
        );
    })
    .await
}

#[tokio::test]
async fn huge_payloads_hit_the_configured_limit_with_a_clear_error() {
    bounded(async {
        let store = MemoryStore::new();
        let addr = serve(app(
            SessionLayer::new(store.clone()).with_max_size(4096),
            store.clone(),
        ))
        .await;
        let mut b = Browser::new(addr);
        assert_eq!(b.post("/incr", "").await.body, "1");
        // One value over the limit.
        let r = b.post("/put", &"x".repeat(100_000)).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.json()["error"], "session data too large");
        // Many values, each small, together over the limit: refused at save, the old data kept.
        let r = b.post("/many/100", "").await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
        assert_eq!(r.json()["error"], "session data too large");
        assert_eq!(b.get("/read").await.body, "1");
        // A body larger than Axum's own limit is Axum's 413, not a crash.
        let r = b.post("/put", &"x".repeat(3 * 1024 * 1024)).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(b.get("/read").await.body, "1");
        assert_eq!(store.count().await.unwrap(), 1);
    })
    .await
}

#[tokio::test]
async fn odd_admin_methods_paths_queries_and_bodies_never_5xx_or_delete() {
    bounded(async {
        let store = MemoryStore::new();
        let now = SystemClock.now();
        let key: StoreKey = Token::generate().store_key();
        store
            .create(&key, &record_at(now, now.plus(Duration::from_secs(600))))
            .await
            .unwrap();
        let addr = serve(app(SessionLayer::new(store.clone()), store.clone())).await;
        let lines = [
            format!("DELETE /api/sessions/sessions/{key}/ HTTP/1.1"),
            format!("DELETE /api/sessions/sessions/{key}%00 HTTP/1.1"),
            format!("DELETE /api/sessions/sessions/{}x HTTP/1.1", key),
            format!("GET /api/sessions/sessions/{key} HTTP/1.1"),
            format!("PATCH /api/sessions/sessions/{key} HTTP/1.1"),
            "POST /api/sessions/cleanup?force=1&&=&%ff HTTP/1.1".into(),
            "GET /api/sessions/sessions?limit=-1 HTTP/1.1".into(),
            "GET /api/sessions/sessions?limit=99999999999999999999999 HTTP/1.1".into(),
            "GET /api/sessions/sessions?limit=0 HTTP/1.1".into(),
            format!(
                "GET /api/sessions/sessions?cursor={} HTTP/1.1",
                "c".repeat(5000)
            ),
            "TRACE /api/sessions/stats HTTP/1.1".into(),
            "CONNECT /api/sessions/stats HTTP/1.1".into(),
            "GET /api/sessions/sessions/%2F%2E%2E%2F HTTP/1.1".into(),
            "GET /api/sessions/\u{1F600} HTTP/1.1".into(),
        ];
        for line in &lines {
            for body in ["", "{\"id\":\"../../x\"}", "\u{0}\u{1}\u{2}"] {
                let req = format!(
                    "{line}\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let (status, text) = raw_http(addr, req.as_bytes()).await;
                // Cleanup ignores query and body (200, and it removes only expired sessions); every
                // other line is a client error.
                let ok = if line.starts_with("POST /api/sessions/cleanup") {
                    status == 200
                } else {
                    (400..500).contains(&status)
                };
                assert!(ok, "{line} -> {status}: {text}");
            }
        }
        assert!(store.load(&key).await.unwrap().is_some(), "nothing deleted");
    })
    .await
}

#[tokio::test]
async fn a_value_nested_too_deeply_is_a_400_and_the_session_is_kept() {
    bounded(async {
        let store = MemoryStore::new();
        let addr = serve(app(SessionLayer::new(store.clone()), store.clone())).await;
        let mut b = Browser::new(addr);
        assert_eq!(b.post("/incr", "").await.body, "1");
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        // 64 levels are kept ...
        let r = b.post("/put-json", &nested(64)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        // ... 65 are refused as the client's mistake, with nothing changed.
        let r = b.post("/put-json", &nested(65)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(r.json()["error"], "session value nested too deeply");
        let r = b.post("/put-json", &nested(120)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert_eq!(b.get("/read").await.body, "1");
        let key = Token::parse(b.cookie.as_deref().unwrap())
            .unwrap()
            .store_key();
        let stored = store.load(&key).await.unwrap().unwrap().record;
        assert_eq!(
            stored.data["doc"],
            serde_json::from_str::<serde_json::Value>(&nested(64)).unwrap()
        );
    })
    .await
}
