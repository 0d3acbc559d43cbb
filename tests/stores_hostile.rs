//! Hostile data in the real stores: corrupt JSON, wrong types and absurd values planted in Redis and
//! in session files, symlinks and directories where session files belong, and cookies shaped like
//! paths. Every request still answers 2xx (a fresh session), the admin routes answer without a 5xx,
//! nothing panics, and nothing is read or written outside the store.

#[path = "support/load.rs"]
mod load;
mod support;

use axum::routing::{get, post};
use axum::Router;
use http::{Method, StatusCode};
use sessionforge::admin::{AdminAuth, AdminService};
use sessionforge::id::{StoreKey, Token};
use sessionforge::store::redis::{RedisConfig, RedisStore};
use sessionforge::store::{FileStore, SessionStore};
use sessionforge::{Session, SessionError, SessionLayer};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::RedisServer;

const LIMIT: Duration = Duration::from_secs(10);
const PREFIX: &str = "hostile:sess:";

/// How many of [`planted_values`] (the last ones) are well-formed records, which a store may serve.
const WELL_FORMED: usize = 2;

/// Corrupt or hostile values a store may find under a session's key.
fn planted_values() -> Vec<Vec<u8>> {
    vec![
        b"{".to_vec(),
        b"".to_vec(),
        b"null".to_vec(),
        b"[1,2,3,4]".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        br#"{"createdAt":1e400,"lastAccess":0,"expires":0,"deadline":0}"#.to_vec(),
        br#"{"createdAt":-1,"lastAccess":0,"expires":0,"deadline":0}"#.to_vec(),
        // Well-formed, with times past year 9999 and a user agent full of control characters.
        format!(
            r#"{{"createdAt":18446744073709551615,"lastAccess":18446744073709551615,"expires":18446744073709551615,"deadline":18446744073709551615,"userAgent":"\u0000\u001b[31m","user":"{}","data":{{"n":"not a number"}}}}"#,
            "u".repeat(10_000)
        )
        .into_bytes(),
        // Deeply nested data.
        format!(
            r#"{{"createdAt":1,"lastAccess":1,"expires":18446744073709551615,"deadline":18446744073709551615,"data":{{"n":{}1{}}}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        )
        .into_bytes(),
    ]
}

fn app<S: SessionStore + Clone>(store: S) -> Router {
    Router::new()
        .route(
            "/incr",
            post(|s: Session| async move {
                // A stored value of the wrong type counts as absent here, as an app would do it.
                let n: u64 = s.get("n").await.ok().flatten().unwrap_or(0) + 1;
                s.insert("n", n).await?;
                Ok::<_, SessionError>(n.to_string())
            }),
        )
        .route("/ping", get(|| async { "pong" }))
        .layer(SessionLayer::new(store.clone()).with_secure(false))
        .nest(
            "/api/sessions",
            AdminService::new(store)
                .with_auth(AdminAuth::insecure_open_to_anyone())
                // `/metrics` answers 404 without an exporter now; this one renders nothing of its
                // own, but the route still counts the store's sessions for its gauge first.
                .with_metrics(String::new)
                .router(),
        )
}

/// Where the Redis store keeps a session: `<prefix><store key>`.
fn redis_key(key: &StoreKey) -> String {
    format!("{PREFIX}{}", key.as_str())
}

/// The Redis store's index of sessions: `<prefix>index`.
fn index_key() -> String {
    format!("{PREFIX}index")
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Every admin route answers below 500 (and 200 for the read-only ones).
async fn admin_survives(addr: SocketAddr) {
    let http = load::client();
    for (method, path) in [
        (Method::GET, "/api/sessions/sessions?limit=1000"),
        (Method::GET, "/api/sessions/stats"),
        (Method::GET, "/api/sessions/health"),
        (Method::GET, "/api/sessions/metrics"),
        (Method::POST, "/api/sessions/cleanup"),
        (Method::GET, "/api/sessions/sessions"),
    ] {
        let o = load::send(&http, addr, method.clone(), path, None, LIMIT).await;
        assert_eq!(o.status, Some(StatusCode::OK), "{method} {path}");
    }
}

/// A request presenting `token` whose stored value is hostile answers 200; when the value is not a
/// well-formed record, with a fresh session.
async fn fresh_session_for(addr: SocketAddr, token: &str, well_formed: bool) {
    let http = load::client();
    let o = load::send(&http, addr, Method::POST, "/incr", Some(token), LIMIT).await;
    assert_eq!(o.status, Some(StatusCode::OK));
    let new = o.set_cookie.expect("a session cookie");
    if !well_formed {
        assert_ne!(new, token, "a corrupt session must not be adopted");
    }
}

/// Whether the `i`th planted token holds a well-formed record.
fn well_formed(i: usize) -> bool {
    (planted_values().len() - WELL_FORMED..planted_values().len()).contains(&i)
}

#[tokio::test]
async fn corrupt_values_planted_in_redis_are_absent_and_never_a_5xx() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let redis = RedisServer::start();
        let store: RedisStore = RedisConfig::new(redis.url())
            .unwrap()
            .with_prefix(PREFIX)
            .build()
            .unwrap();
        let addr = serve(app(store.clone())).await;
        let panics = load::count_panics();
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut tokens = Vec::new();
        for value in planted_values() {
            let token = Token::generate();
            let rkey = redis_key(&token.store_key());
            let _: () = redis::cmd("SET")
                .arg(&rkey)
                .arg(value)
                .query_async(&mut conn)
                .await
                .unwrap();
            let _: () = redis::cmd("ZADD")
                .arg(index_key())
                .arg(i64::MAX)
                .arg(token.store_key().as_str())
                .query_async(&mut conn)
                .await
                .unwrap();
            tokens.push(token);
        }
        // A key of the wrong type, and an index entry that is not a store key at all.
        let wrong = Token::generate();
        let _: () = redis::cmd("LPUSH")
            .arg(redis_key(&wrong.store_key()))
            .arg("x")
            .query_async(&mut conn)
            .await
            .unwrap();
        tokens.push(wrong);
        let _: () = redis::cmd("ZADD")
            .arg(index_key())
            .arg(1)
            .arg("../../etc/passwd")
            .query_async(&mut conn)
            .await
            .unwrap();

        admin_survives(addr).await;
        for (i, t) in tokens.iter().enumerate() {
            fresh_session_for(addr, t.as_str(), well_formed(i)).await;
        }
        admin_survives(addr).await;
        assert_eq!(load::count_panics(), panics, "no panics");
    })
    .await
    .expect("finished in time");
}

/// Every file under `dir`, recursively, with its contents.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            } else {
                out.push((p, b"<link>".to_vec()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn corrupt_files_symlinks_and_path_shaped_cookies_stay_inside_the_file_store() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("sessions");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // A valid record outside the store, with a counter at 41, which nothing may read or change.
        let secret = br#"{"createdAt":1,"lastAccess":1,"expires":18446744073709551615,"deadline":18446744073709551615,"data":{"n":41}}"#;
        std::fs::write(outside.join("victim.json"), secret).unwrap();

        let store = FileStore::new(&dir);
        let addr = serve(app(store.clone())).await;
        let panics = load::count_panics();
        let mut tokens = Vec::new();
        for value in planted_values() {
            let token = Token::generate();
            std::fs::write(dir.join(format!("{}.json", token.store_key())), value).unwrap();
            tokens.push(token);
        }
        // A directory, and a symlink to the victim, where session files belong.
        let as_dir = Token::generate();
        std::fs::create_dir(dir.join(format!("{}.json", as_dir.store_key()))).unwrap();
        tokens.push(as_dir);
        let as_link = Token::generate();
        std::os::unix::fs::symlink(
            outside.join("victim.json"),
            dir.join(format!("{}.json", as_link.store_key())),
        )
        .unwrap();
        tokens.push(as_link);
        // Files that are not sessions at all.
        std::fs::write(dir.join("README"), b"not a session").unwrap();
        std::fs::write(dir.join("..json"), b"{").unwrap();

        let outside_before = snapshot(&outside);
        admin_survives(addr).await;
        for (i, t) in tokens.iter().enumerate() {
            fresh_session_for(addr, t.as_str(), well_formed(i)).await;
        }
        // The symlinked "session" was not adopted: a fresh one started at 1, not at 42.
        let http = load::client();
        let o = load::send(&http, addr, Method::POST, "/incr", Some(as_link.as_str()), LIMIT).await;
        assert_eq!(o.status, Some(StatusCode::OK));

        // Cookies shaped like paths, pointing outside the store.
        for cookie in [
            "../outside/victim",
            "../../../../../../etc/passwd",
            "..%2foutside%2fvictim",
            "/tmp/x",
            "....................../outside/victim.json",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/../..",
        ] {
            let o = load::send(&http, addr, Method::POST, "/incr", Some(cookie), LIMIT).await;
            assert_eq!(o.status, Some(StatusCode::OK), "{cookie}");
            let new = o.set_cookie.expect("a fresh session");
            assert!(StoreKey::parse(Token::parse(&new).unwrap().store_key().as_str()).is_ok());
        }
        // Admin delete with path-shaped ids.
        for id in ["..%2foutside%2fvictim", "%2e%2e", "victim", "..json"] {
            let o = load::send(
                &http,
                addr,
                Method::DELETE,
                &format!("/api/sessions/sessions/{id}"),
                None,
                LIMIT,
            )
            .await;
            let s = o.status.expect("an answer");
            assert!(s.is_client_error(), "DELETE {id} -> {s}");
        }
        admin_survives(addr).await;

        // Nothing outside the store was read into a session or changed.
        assert_eq!(snapshot(&outside), outside_before);
        for (p, _) in snapshot(root.path()) {
            assert!(
                p.starts_with(&dir) || p.starts_with(&outside),
                "a file appeared outside the store: {}",
                p.display()
            );
        }
        // The files it did not make are left alone.
        assert!(dir.join("README").exists());
        assert_eq!(load::count_panics(), panics, "no panics");
    })
    .await
    .expect("finished in time");
}
