//! The file store, end to end: real files in a tempdir, real HTTP on loopback through an Axum router
//! wrapped in `SessionLayer`.

use axum::extract::Path as UrlPath;
use axum::routing::{get, put};
use axum::{Json, Router};
use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sessionforge::expiry::{Clock, ManualClock, Timestamp};
use sessionforge::id::{StoreKey, Token};
use sessionforge::store::{
    ChangeSet, Created, FileStore, HealthStatus, Record, Saved, SessionStore, StoreError, Usage,
};
use sessionforge::{Session, SessionError, SessionLayer};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every test finishes within this, or fails.
const LIMIT: Duration = Duration::from_secs(30);

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test took too long")
}

// ---------------------------------------------------------------------------------------------------
// The application under test

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", n).await?;
    Ok(n.to_string())
}

async fn set(session: Session, UrlPath(key): UrlPath<String>) -> Result<(), SessionError> {
    session.insert(&key, true).await
}

async fn bump(session: Session) -> Result<String, SessionError> {
    Ok(session.increment("hits", 1).await?.to_string())
}

async fn data(session: Session) -> Result<Json<Value>, SessionError> {
    Ok(Json(Value::Object(session.data().await?)))
}

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route("/count", get(count))
        .route("/set/{key}", put(set))
        .route("/bump", put(bump))
        .route("/data", get(data))
        .layer(layer)
}

struct Server {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Reply {
    status: StatusCode,
    /// The `id` cookie set by the response, if any.
    cookie: Option<String>,
    body: String,
}

impl Server {
    async fn start(layer: SessionLayer) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app(layer)).await.unwrap();
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        Server { addr, client, task }
    }

    async fn send(&self, method: &str, path: &str, cookie: Option<&str>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, format!("id={c}"));
        }
        let res = self
            .client
            .request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let cookie = res
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("id="))
            .map(|v| v.split(';').next().unwrap().to_owned())
            .filter(|v| !v.is_empty());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            cookie,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        self.send("GET", path, cookie).await
    }
}

// ---------------------------------------------------------------------------------------------------
// Helpers

fn key_of(token: &str) -> StoreKey {
    Token::parse(token)
        .expect("the server sent a well-formed token")
        .store_key()
}

fn session_file(dir: &Path, key: &StoreKey) -> PathBuf {
    dir.join(format!("{key}.json"))
}

/// The directory of the store's cross-process lock files (one per lock stripe), inside its session
/// directory since the store takes `flock`s.
const LOCK_DIR: &str = ".locks";

/// The names in a session directory, but the store's lock directory.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != LOCK_DIR)
        .collect()
}

/// Every path under `root` with its size, mode and modification time: a fingerprint of the tree.
fn tree(root: &Path) -> BTreeMap<PathBuf, (u64, u32, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            out.insert(
                e.path(),
                (m.len(), m.permissions().mode(), m.modified().unwrap()),
            );
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

fn record(now: Timestamp, ttl: Duration) -> Record {
    let mut r = Record::new(now, now.plus(ttl), now.plus(ttl * 10));
    r.user_agent = Some("test".into());
    r.data = json!({"n": 1}).as_object().unwrap().clone();
    r
}

/// `ours` for a save over `loaded`: its data with `changes` applied, one millisecond later (every
/// record written over a stored one must have a larger `last_access`).
fn ours_over(loaded: &Record, changes: &ChangeSet) -> Record {
    let mut ours = loaded.clone();
    changes.apply(&mut ours.data);
    ours.last_access = loaded.last_access.next();
    ours
}

/// The file store's usage figures: (files, bytes).
fn disk(u: Usage) -> (u64, u64) {
    assert_eq!(u.section, "diskUsage", "{u:?}");
    let figure = |name: &str| {
        u.figures[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {u:?}"))
    };
    (figure("files"), figure("bytes"))
}

// ---------------------------------------------------------------------------------------------------
// Over HTTP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_survives_requests_in_a_private_json_file() {
    bounded(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("sessions");
        let server = Server::start(SessionLayer::new(FileStore::new(&dir))).await;

        let first = server.get("/count", None).await;
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(first.body, "1");
        let token = first.cookie.expect("a new session sets a cookie");
        for n in 2..=4 {
            let r = server.get("/count", Some(&token)).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.body, n.to_string());
        }

        // The directory was created private, and holds exactly one file, named by the digest.
        let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700, "directory mode {dir_mode:o}");
        let locks_mode = std::fs::metadata(dir.join(LOCK_DIR))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(locks_mode, 0o700, "lock directory mode {locks_mode:o}");
        let key = key_of(&token);
        assert_eq!(names(&dir), BTreeSet::from([format!("{key}.json")]));
        assert!(!names(&dir).iter().any(|n| n.contains(&token)));

        let path = session_file(&dir, &key);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "file mode {mode:o}");
        let text = std::fs::read_to_string(&path).unwrap();
        let stored: Value = serde_json::from_str(&text).unwrap();
        // The native format writes its version, `lastAccess`, first.
        assert!(text.starts_with("{\"lastAccess\":"), "{text}");
        assert_eq!(stored["data"], json!({"n": 4}), "{text}");
        assert!(stored["expires"].as_u64().unwrap() > stored["createdAt"].as_u64().unwrap());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_writers_to_one_session_all_land() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(SessionLayer::new(FileStore::new(dir.path()))).await;
        let token = server.get("/count", None).await.cookie.unwrap();

        let mut tasks = tokio::task::JoinSet::new();
        let server = std::sync::Arc::new(server);
        for i in 0..64 {
            let (server, token) = (server.clone(), token.clone());
            tasks.spawn(async move {
                server
                    .send("PUT", &format!("/set/k{i}"), Some(&token))
                    .await
                    .status
            });
        }
        while let Some(status) = tasks.join_next().await {
            assert_eq!(status.unwrap(), StatusCode::OK);
        }

        let r = server.get("/data", Some(&token)).await;
        let data: Value = serde_json::from_str(&r.body).unwrap();
        let obj = data.as_object().unwrap();
        for i in 0..64 {
            assert_eq!(obj.get(&format!("k{i}")), Some(&json!(true)), "k{i} lost");
        }
        assert_eq!(obj["n"], json!(1));
        assert_eq!(obj.len(), 65);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_and_hostile_tokens_get_a_fresh_session_and_touch_nothing_outside() {
    bounded(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("sessions");
        std::fs::write(parent.path().join("secret.txt"), "keep me").unwrap();
        std::fs::write(parent.path().join("passwd.json"), "{}").unwrap();
        let store = FileStore::new(&dir);
        let server = Server::start(SessionLayer::new(store.clone())).await;

        // An existing session whose store key (as the admin listing shows it) must not work as a token.
        let victim = server.get("/count", None).await.cookie.unwrap();
        server.get("/count", Some(&victim)).await;
        let victim_key = key_of(&victim);

        let secret = parent.path().join("secret.txt");
        let hostile: Vec<String> = vec![
            "../../etc/passwd".into(),
            "..%2f..%2fsecret.txt".into(),
            "%2e%2e%2f%2e%2e%2fsecret.txt".into(),
            "/etc/passwd".into(),
            secret.display().to_string(),
            "../passwd".into(),
            format!("../{}", &"A".repeat(40)),
            ".".into(),
            "..".into(),
            "A".repeat(43),                   // well-formed, never issued
            victim_key.as_str().to_owned(),   // a store key is not a token
            "x".repeat(16 * 1024),            // very long
            format!("{}%00.json", "A".repeat(40)),
        ];
        let before = tree(parent.path());
        let outside = |t: &BTreeMap<PathBuf, _>| {
            t.keys()
                .filter(|p| !p.starts_with(&dir))
                .cloned()
                .collect::<Vec<_>>()
        };
        let before_outside: BTreeMap<_, _> = before
            .iter()
            .filter(|(p, _)| !p.starts_with(&dir))
            .map(|(p, v)| (p.clone(), *v))
            .collect();

        for bad in &hostile {
            let r = server.get("/count", Some(bad)).await;
            assert!(r.status.is_success(), "{bad:.60}: {}", r.status);
            assert_eq!(r.body, "1", "{bad:.60} reached an existing session");
            let fresh = r.cookie.expect("a fresh session");
            assert_ne!(&fresh, bad);
            assert!(Token::parse(&fresh).is_ok());
        }

        // A NUL byte cannot be put in an `http` header value, so send it raw. The server must refuse it
        // as a client error or give a fresh session, never 5xx.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET /count HTTP/1.1\r\nHost: x\r\nCookie: id=../..\0/etc/passwd\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8_lossy(&raw);
        let status: u16 = raw.split(' ').nth(1).unwrap().parse().unwrap();
        assert!((200..500).contains(&status), "{raw}");

        let after = tree(parent.path());
        let after_outside: BTreeMap<_, _> = after
            .iter()
            .filter(|(p, _)| !p.starts_with(&dir))
            .map(|(p, v)| (p.clone(), *v))
            .collect();
        assert_eq!(before_outside, after_outside, "something outside the directory changed");
        assert_eq!(outside(&after).len(), 2); // secret.txt and passwd.json; nothing new
        assert_eq!(
            std::fs::read_to_string(parent.path().join("secret.txt")).unwrap(),
            "keep me"
        );
        // Inside: only session files, named by store keys; the victim is untouched.
        for name in names(&dir) {
            let stem = name.strip_suffix(".json").expect("only session files");
            assert!(StoreKey::parse(stem).is_ok(), "{name}");
        }
        let victim_now = server.get("/data", Some(&victim)).await;
        assert_eq!(victim_now.body, r#"{"n":2}"#);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_quota_new_sessions_get_a_json_error_and_existing_ones_keep_working() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::builder(dir.path()).with_max_files(2).build();
        let server = Server::start(SessionLayer::new(store.clone())).await;
        let a = server.get("/count", None).await.cookie.unwrap();
        let b = server.get("/count", None).await.cookie.unwrap();
        let files_before: Vec<_> = [&a, &b]
            .iter()
            .map(|t| std::fs::read(session_file(dir.path(), &key_of(t))).unwrap())
            .collect();

        let refused = server.get("/count", None).await;
        // The layer answers a full store with a JSON 503 that says so; the client is not told a
        // session exists when none was stored.
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = serde_json::from_str(&refused.body).unwrap();
        assert_eq!(body, json!({"error": "session store full"}));
        assert_eq!(refused.cookie, None);
        assert_eq!(names(dir.path()).len(), 2);

        // Untouched by the refusal ...
        for (t, before) in [&a, &b].iter().zip(&files_before) {
            assert_eq!(
                &std::fs::read(session_file(dir.path(), &key_of(t))).unwrap(),
                before
            );
        }
        // ... and still working.
        assert_eq!(server.get("/count", Some(&a)).await.body, "2");
        assert_eq!(server.get("/count", Some(&b)).await.body, "2");
        assert_eq!(server.get("/count", Some(&a)).await.body, "3");

        // The store's own error says which limit.
        let err = store
            .create(
                &Token::generate().store_key(),
                &record(Timestamp::from_millis(0), Duration::from_secs(1 << 40)),
            )
            .await
            .unwrap_err();
        // Quota errors are `Full` now (was `QuotaExceeded`).
        assert!(
            matches!(
                err,
                StoreError::Full {
                    backend: "file",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_full());
        assert!(err.to_string().contains("limit"), "{err}");
        assert!(!err.is_unavailable());

        // Deleting one makes room again.
        assert!(store.delete(&key_of(&a)).await.unwrap());
        let c = server.get("/count", None).await;
        assert_eq!(c.status, StatusCode::OK);
        assert!(c.cookie.is_some());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_means_a_fresh_session_and_is_set_aside_then_cleaned_up() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let server = Server::start(SessionLayer::new(store.clone())).await;
        let token = server.get("/count", None).await.cookie.unwrap();
        assert_eq!(server.get("/count", Some(&token)).await.body, "2");
        let key = key_of(&token);
        std::fs::write(session_file(dir.path(), &key), b"{\"createdAt\": tru").unwrap();

        let r = server.get("/count", Some(&token)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, "1", "a corrupt session must not be reused");
        let fresh = r.cookie.unwrap();
        assert_ne!(fresh, token);

        let corrupt = dir.path().join(format!("{key}.corrupt"));
        assert!(corrupt.exists(), "set aside: {:?}", names(dir.path()));
        assert!(!session_file(dir.path(), &key).exists());
        // Listing and counting ignore it.
        assert_eq!(store.count().await.unwrap(), 1);
        let page = store.list(None, 10).await.unwrap();
        assert_eq!(page.sessions.len(), 1);
        assert_eq!(page.sessions[0].id, key_of(&fresh));

        // A corrupt file nobody asked for is found by cleanup as well.
        let other = Token::generate().store_key();
        std::fs::write(session_file(dir.path(), &other), b"[1,2,3]").unwrap();
        assert_eq!(store.cleanup().await.unwrap(), 2);
        assert!(!corrupt.exists());
        assert!(!session_file(dir.path(), &other).exists());
        assert_eq!(
            names(dir.path()),
            BTreeSet::from([format!("{}.json", key_of(&fresh))])
        );
        assert_eq!(server.get("/count", Some(&fresh)).await.body, "2");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_expires_on_the_store_clock_over_http() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        // The layer reads the store's clock (the layer has no clock of its own any more).
        let store = FileStore::builder(dir.path())
            .with_clock(clock.clone())
            .build();
        let layer = SessionLayer::new(store).with_idle_timeout(Duration::from_secs(60));
        let server = Server::start(layer).await;
        let token = server.get("/count", None).await.cookie.unwrap();
        clock.advance(Duration::from_secs(59));
        assert_eq!(server.get("/count", Some(&token)).await.body, "2");
        clock.advance(Duration::from_secs(61));
        let r = server.get("/count", Some(&token)).await;
        assert_eq!(r.body, "1");
        assert!(!session_file(dir.path(), &key_of(&token)).exists());
    })
    .await
}

// ---------------------------------------------------------------------------------------------------
// The store directly

#[tokio::test]
async fn a_save_after_delete_is_gone_and_recreates_nothing() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let key = Token::generate().store_key();
        let rec = record(
            sessionforge::expiry::SystemClock.now(),
            Duration::from_secs(60),
        );
        assert_eq!(store.create(&key, &rec).await.unwrap(), Created::Created);
        let base = store.load(&key).await.unwrap().unwrap().version;
        assert!(store.delete(&key).await.unwrap());

        let mut changes = ChangeSet::default();
        changes.entries.insert("late".into(), Some(json!(1)));
        let ours = ours_over(&rec, &changes);
        assert_eq!(
            store
                .save(&key, &base, &ours.clone().into(), &changes)
                .await
                .unwrap(),
            Saved::Gone
        );
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
        assert!(store.load(&key).await.unwrap().is_none());
        assert_eq!(disk(store.usage().await.unwrap()), (0, 0));
    })
    .await
}

#[tokio::test]
async fn expired_files_are_absent_and_removed_by_cleanup() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Timestamp::from_millis(1_000_000));
        let store = FileStore::builder(dir.path())
            .with_clock(clock.clone())
            .build();
        let short: Vec<_> = (0..3).map(|_| Token::generate().store_key()).collect();
        let long = Token::generate().store_key();
        for k in &short {
            store
                .create(k, &record(clock.now(), Duration::from_secs(10)))
                .await
                .unwrap();
        }
        store
            .create(&long, &record(clock.now(), Duration::from_secs(100)))
            .await
            .unwrap();
        assert_eq!(store.count().await.unwrap(), 4);

        clock.advance(Duration::from_secs(10));
        // Expired: absent to load, and that load removes its file.
        assert!(store.load(&short[0]).await.unwrap().is_none());
        assert!(!session_file(dir.path(), &short[0]).exists());
        // The others are still on disk until cleanup.
        assert!(session_file(dir.path(), &short[1]).exists());
        assert_eq!(store.count().await.unwrap(), 1);
        // A save to an expired session does not bring it back.
        let stale = record(clock.now(), Duration::from_secs(10));
        assert_eq!(
            store
                .save(
                    &short[1],
                    &sessionforge::store::Version::new("x"),
                    &stale.clone().into(),
                    &ChangeSet::default()
                )
                .await
                .unwrap(),
            Saved::Gone
        );
        assert_eq!(store.cleanup().await.unwrap(), 1);
        assert_eq!(names(dir.path()), BTreeSet::from([format!("{long}.json")]));
        assert_eq!(disk(store.usage().await.unwrap()).0, 1);
        // An expired key is free for create again.
        assert_eq!(
            store
                .create(&short[0], &record(clock.now(), Duration::from_secs(10)))
                .await
                .unwrap(),
            Created::Created
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_removes_expired_files_periodically_and_stops_on_abort() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        let store = FileStore::builder(dir.path())
            .with_clock(clock.clone())
            .build();
        let keys: Vec<_> = (0..5).map(|_| Token::generate().store_key()).collect();
        for k in &keys {
            store
                .create(k, &record(clock.now(), Duration::from_secs(10)))
                .await
                .unwrap();
        }
        let reaper = store.spawn_reaper(Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(names(dir.path()).len(), 5, "nothing is expired yet");
        clock.advance(Duration::from_secs(11));
        while !names(dir.path()).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reaper.abort();
        assert!(reaper.await.unwrap_err().is_cancelled());
    })
    .await
}

#[tokio::test]
async fn listing_pages_through_every_live_session_exactly_once() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        let store = FileStore::builder(dir.path())
            .with_clock(clock.clone())
            .build();
        let mut live = BTreeSet::new();
        for _ in 0..23 {
            let k = Token::generate().store_key();
            store
                .create(&k, &record(clock.now(), Duration::from_secs(100)))
                .await
                .unwrap();
            live.insert(k);
        }
        for _ in 0..4 {
            store
                .create(
                    &Token::generate().store_key(),
                    &record(clock.now(), Duration::from_secs(1)),
                )
                .await
                .unwrap();
        }
        clock.advance(Duration::from_secs(2));

        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = store.list(cursor.as_deref(), 7).await.unwrap();
            pages += 1;
            assert!(page.sessions.len() <= 7);
            seen.extend(page.sessions.iter().map(|s| s.id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
            assert!(pages < 10, "listing does not end");
        }
        assert_eq!(pages, 4);
        assert_eq!(seen.len(), 23, "each exactly once");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in key order");
        assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), live);
        assert_eq!(store.count().await.unwrap(), 23);

        // Store keys are 1 to 64 base64url characters now (formats other than the native one key
        // sessions differently), so a 44-character key is a valid cursor: 65 is not.
        for bad in ["../../etc", "", "not a key", &"A".repeat(65)] {
            let err = store.list(Some(bad), 5).await.unwrap_err();
            assert!(matches!(err, StoreError::InvalidCursor), "{bad}: {err:?}");
        }
        assert!(store.list(None, 0).await.unwrap().sessions.is_empty());
    })
    .await
}

#[tokio::test]
async fn the_byte_quota_refuses_new_sessions_but_lets_existing_ones_grow_a_little() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let now = sessionforge::expiry::SystemClock.now();
        let rec = record(now, Duration::from_secs(60));
        let size = rec.to_json().len() as u64;
        let store = FileStore::builder(dir.path())
            .with_max_bytes(size * 20)
            .build();
        let mut keys = Vec::new();
        loop {
            let k = Token::generate().store_key();
            match store.create(&k, &rec).await {
                Ok(Created::Created) => keys.push(k),
                // Quota errors are `Full` now (was `QuotaExceeded`).
                Err(StoreError::Full { detail, .. }) => {
                    assert!(detail.contains("byte limit"), "{detail}");
                    break;
                }
                other => panic!("{other:?}"),
            }
            assert!(keys.len() <= 20);
        }
        assert_eq!(keys.len(), 20);
        let (files, bytes) = disk(store.usage().await.unwrap());
        assert_eq!((files, bytes), (20, size * 20));

        // An existing session may grow into the reserve ...
        let base = store.load(&keys[0]).await.unwrap().unwrap().version;
        let mut changes = ChangeSet::default();
        changes
            .entries
            .insert("a".into(), Some(json!("x".repeat(size as usize))));
        let ours = ours_over(&rec, &changes);
        assert_eq!(
            store
                .save(&keys[0], &base, &ours.clone().into(), &changes)
                .await
                .unwrap(),
            Saved::Saved
        );
        // ... but not without bound; the refused save leaves the file as it was.
        let before = std::fs::read(session_file(dir.path(), &keys[1])).unwrap();
        let base = store.load(&keys[1]).await.unwrap().unwrap().version;
        let mut changes = ChangeSet::default();
        changes
            .entries
            .insert("a".into(), Some(json!("x".repeat(4 * size as usize))));
        let ours = ours_over(&rec, &changes);
        let err = store
            .save(&keys[1], &base, &ours.clone().into(), &changes)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Full { .. }), "{err:?}");
        assert_eq!(
            std::fs::read(session_file(dir.path(), &keys[1])).unwrap(),
            before
        );
        // Small saves still work.
        let mut changes = ChangeSet::default();
        changes.entries.insert("n".into(), Some(json!(2)));
        let ours = ours_over(&rec, &changes);
        assert_eq!(
            store
                .save(&keys[1], &base, &ours.clone().into(), &changes)
                .await
                .unwrap(),
            Saved::Saved
        );
    })
    .await
}

#[tokio::test]
async fn health_usage_and_a_vanished_directory() {
    bounded(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("s");
        let store = FileStore::new(&dir);
        assert_eq!(store.name(), "file");
        let h = store.health().await;
        assert_eq!(h.serving, "file");
        assert_eq!(h.backend("redis"), None);
        assert!(h.backends.is_empty(), "{h:?}");
        assert_eq!(h.detail, None, "a writable directory is healthy");
        assert_eq!(h.reason, None);
        assert_eq!(h.status, HealthStatus::Ok);
        assert!(h.is_serving());
        let rec = record(
            sessionforge::expiry::SystemClock.now(),
            Duration::from_secs(60),
        );
        let key = Token::generate().store_key();
        store.create(&key, &rec).await.unwrap();
        let usage = store.usage().await.unwrap();
        assert_eq!(
            usage.figures["directory"],
            json!(dir.display().to_string()),
            "{usage:?}"
        );
        assert_eq!(disk(usage), (1, rec.to_json().len() as u64));
        // The health probe leaves nothing behind.
        assert_eq!(names(&dir).len(), 1);

        std::fs::remove_dir_all(&dir).unwrap();
        let h = store.health().await;
        assert_eq!(h.status, HealthStatus::Unavailable, "{h:?}");
        assert!(!h.is_serving());
        // The public reason says what is wrong and names no path; the error is for operators.
        assert_eq!(
            h.reason.as_deref(),
            Some("session directory not writable"),
            "{h:?}"
        );
        assert!(h.detail.is_some(), "{h:?}");
        let err = store
            .create(&Token::generate().store_key(), &rec)
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        // Changed: every operation, reads too, now takes the session's lock file in the directory
        // (cross-process `flock`), so a load in a vanished directory fails as unavailable (was: no
        // session), as the module docs say of a missing directory. Either way nothing is served.
        let err = store.load(&key).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
    })
    .await
}

/// Makes a directory unwritable for the test's lifetime, even for root (`chattr +i`), and undoes
/// it on drop so the temporary directory can be removed. `None` when this machine allows neither.
struct Unwritable(PathBuf, bool);

impl Unwritable {
    fn make(dir: &Path) -> Option<Unwritable> {
        let writable = |d: &Path| {
            let probe = d.join(".probe");
            let ok = std::fs::write(&probe, b"x").is_ok();
            let _ = std::fs::remove_file(&probe);
            ok
        };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        if !writable(dir) {
            return Some(Unwritable(dir.to_path_buf(), false));
        }
        // Root ignores the mode bits: an immutable directory refuses even root.
        let immutable = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if immutable && !writable(dir) {
            return Some(Unwritable(dir.to_path_buf(), true));
        }
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(dir)
            .status();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        None
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        }
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700));
    }
}

#[tokio::test]
async fn an_unusable_directory_is_unavailable_and_the_init_error_names_it() {
    bounded(async {
        let parent = tempfile::tempdir().unwrap();
        let rec = record(
            sessionforge::expiry::SystemClock.now(),
            Duration::from_secs(60),
        );

        // A regular file where the directory's parent should be: nothing can create it.
        let blocker = parent.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let dir = blocker.join("sessions");
        let store = FileStore::new(&dir);
        let err = store.init().await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "the init error names the directory: {err}"
        );
        let h = store.health().await;
        assert_eq!(h.status, HealthStatus::Unavailable, "{h:?}");
        assert!(h
            .detail
            .as_deref()
            .is_some_and(|d| d.contains(&dir.display().to_string())));
        assert!(
            !h.reason
                .as_deref()
                .unwrap_or_default()
                .contains(&parent.path().display().to_string()),
            "the public reason names no path: {h:?}"
        );
        let err = store
            .create(&Token::generate().store_key(), &rec)
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");

        // An existing directory nobody may write in.
        let dir = parent.path().join("locked");
        std::fs::create_dir(&dir).unwrap();
        let Some(_guard) = Unwritable::make(&dir) else {
            eprintln!("cannot make a directory unwritable here (neither mode bits nor chattr)");
            return;
        };
        let store = FileStore::new(&dir);
        let err = store.init().await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "the init error names the directory: {err}"
        );
        let h = store.health().await;
        assert_eq!(h.status, HealthStatus::Unavailable, "{h:?}");
        assert_eq!(
            h.reason.as_deref(),
            Some("session directory not writable"),
            "{h:?}"
        );
        let err = store
            .create(&Token::generate().store_key(), &rec)
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(names(&dir).is_empty(), "{:?}", names(&dir));
    })
    .await
}

#[tokio::test]
async fn a_directory_made_unwritable_after_start_is_unavailable() {
    bounded(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("s");
        let store = FileStore::new(&dir);
        store.init().await.unwrap();
        let rec = record(
            sessionforge::expiry::SystemClock.now(),
            Duration::from_secs(60),
        );
        let key = Token::generate().store_key();
        store.create(&key, &rec).await.unwrap();
        let Some(_guard) = Unwritable::make(&dir) else {
            eprintln!("cannot make a directory unwritable here (neither mode bits nor chattr)");
            return;
        };
        let h = store.health().await;
        assert_eq!(h.status, HealthStatus::Unavailable, "{h:?}");
        assert_eq!(
            h.reason.as_deref(),
            Some("session directory not writable"),
            "{h:?}"
        );
        let err = store
            .create(&Token::generate().store_key(), &rec)
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        // What is there can still be read.
        let loaded = store.load(&key).await.unwrap().unwrap();
        assert_eq!(loaded.record.data["n"], 1);
    })
    .await
}

#[tokio::test]
async fn cleanup_removes_stale_temp_files_but_leaves_foreign_files_alone() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        store.init().await.unwrap();
        let key = Token::generate().store_key();
        let stale = dir.path().join(format!(".{key}.1.1.tmp"));
        let fresh = dir.path().join(format!(".{key}.1.2.tmp"));
        std::fs::write(&stale, b"half").unwrap();
        std::fs::write(&fresh, b"in flight").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::fs::write(dir.path().join("README"), b"mine").unwrap();
        std::fs::write(dir.path().join("notes.json"), b"not a session").unwrap();

        let removed = store.cleanup().await.unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists(), "a temp file in flight is left alone");
        assert!(dir.path().join("README").exists());
        assert!(
            dir.path().join("notes.json").exists(),
            "a foreign file the store did not write was removed: {:?}",
            names(dir.path())
        );
        assert_eq!(removed, 1, "only the stale temporary file");
        assert_eq!(store.count().await.unwrap(), 0);
    })
    .await
}

#[tokio::test]
async fn a_directory_symlink_or_fifo_under_a_session_name_is_corrupt_not_followed() {
    bounded(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("sessions");
        let secret = parent.path().join("secret.json");
        let now = sessionforge::expiry::SystemClock.now();
        // A valid record outside: following the link would "load" it.
        std::fs::write(&secret, record(now, Duration::from_secs(600)).to_json()).unwrap();
        let store = FileStore::new(&dir);
        store.init().await.unwrap();

        let (d, l, f) = (
            Token::generate().store_key(),
            Token::generate().store_key(),
            Token::generate().store_key(),
        );
        std::fs::create_dir(session_file(&dir, &d)).unwrap();
        std::os::unix::fs::symlink(&secret, session_file(&dir, &l)).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(session_file(&dir, &f))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);

        let before = std::fs::read(&secret).unwrap();
        assert!(store.load(&d).await.unwrap().is_none());
        assert!(store.load(&l).await.unwrap().is_none());
        if fifo {
            assert!(store.load(&f).await.unwrap().is_none());
        }
        assert_eq!(std::fs::read(&secret).unwrap(), before);
        assert!(!session_file(&dir, &l).exists());
        assert!(dir
            .join(format!("{l}.corrupt"))
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink());

        // Creating under those names works and writes a regular file, not through the link.
        let rec = record(now, Duration::from_secs(60));
        assert_eq!(store.create(&l, &rec).await.unwrap(), Created::Created);
        assert!(session_file(&dir, &l).symlink_metadata().unwrap().is_file());
        assert_eq!(std::fs::read(&secret).unwrap(), before);

        // Cleanup removes what it can and does not fail on the rest.
        store.cleanup().await.unwrap();
        assert!(!dir.join(format!("{l}.corrupt")).exists());
        assert!(secret.exists());
        assert_eq!(store.count().await.unwrap(), 1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaper_registered_with_shutdown_stops_by_itself_and_the_drain_is_clean() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::starting_now();
        let store = FileStore::builder(dir.path())
            .with_clock(clock.clone())
            .build();
        let key = Token::generate().store_key();
        store
            .create(&key, &record(clock.now(), Duration::from_secs(1)))
            .await
            .unwrap();
        let shutdown = sessionforge::shutdown::Shutdown::new();
        shutdown.register(store.spawn_reaper_until(Duration::from_millis(20), shutdown.signal()));
        clock.advance(Duration::from_secs(2));
        while !names(dir.path()).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shutdown.trigger();
        let report = shutdown.drain(Duration::from_secs(5)).await;
        assert!(report.clean(), "{report:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_directory_never_lose_an_increment() {
    bounded(async {
        // Two stores on one directory stand for two processes sharing a volume: each has its own
        // in-process locks, so only the lock files (`flock`) keep their read-merge-write steps apart.
        let dir = tempfile::tempdir().unwrap();
        let a = Server::start(SessionLayer::new(FileStore::new(dir.path()))).await;
        let b = Server::start(SessionLayer::new(FileStore::new(dir.path()))).await;
        let token = a.get("/count", None).await.cookie.unwrap();
        let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
        const EACH: usize = 40;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..2 * EACH {
            let server = if i % 2 == 0 { a.clone() } else { b.clone() };
            let token = token.clone();
            tasks.spawn(async move { server.send("PUT", "/bump", Some(&token)).await.status });
        }
        while let Some(status) = tasks.join_next().await {
            assert_eq!(status.unwrap(), StatusCode::OK);
        }
        for server in [&a, &b] {
            let r = server.get("/data", Some(&token)).await;
            let data: Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(
                data,
                json!({"n": 1, "hits": 2 * EACH}),
                "an increment was lost"
            );
        }
        assert_eq!(names(dir.path()).len(), 1);
    })
    .await
}

#[tokio::test]
async fn a_tombstone_is_listed_marked_but_not_counted_and_takes_no_save() {
    bounded(async {
        // The failover store writes tombstones into its fallback during an outage; the file store
        // keeps them like records, lists them marked, and leaves them out of counts.
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let now = sessionforge::expiry::SystemClock.now();
        let (live, dead) = (Token::generate().store_key(), Token::generate().store_key());
        let mut rec = record(now, Duration::from_secs(60));
        rec.user = Some("alice".into());
        store.create(&live, &rec).await.unwrap();
        let mut tomb = Record::new(
            now,
            now.plus(Duration::from_secs(60)),
            now.plus(Duration::from_secs(60)),
        );
        tomb.tombstone = true;
        tomb.user = Some("alice".into());
        assert_eq!(store.create(&dead, &tomb).await.unwrap(), Created::Created);
        // Nothing can be created over it.
        assert_eq!(store.create(&dead, &rec).await.unwrap(), Created::Exists);

        assert_eq!(store.count().await.unwrap(), 1);
        let page = store.list(None, 10).await.unwrap();
        let mut listed: Vec<_> = page.sessions.iter().map(|s| (s.id, s.tombstone)).collect();
        listed.sort();
        let mut want = vec![(live, false), (dead, true)];
        want.sort();
        assert_eq!(listed, want);
        let alice = store.user_sessions("alice").await.unwrap();
        assert_eq!(alice.iter().map(|s| s.id).collect::<Vec<_>>(), vec![live]);

        // A save on it writes nothing.
        let loaded = store.load(&dead).await.unwrap().unwrap();
        assert!(loaded.record.tombstone);
        let before = std::fs::read(session_file(dir.path(), &dead)).unwrap();
        let mut changes = ChangeSet::default();
        changes.entries.insert("x".into(), Some(json!(1)));
        let ours = ours_over(&loaded.record, &changes);
        assert_eq!(
            store
                .save(&dead, &loaded.version, &ours.into(), &changes)
                .await
                .unwrap(),
            Saved::Gone
        );
        assert_eq!(
            std::fs::read(session_file(dir.path(), &dead)).unwrap(),
            before
        );
        // Deleting it removes the file but reports no live session.
        assert!(!store.delete(&dead).await.unwrap());
        assert!(!session_file(dir.path(), &dead).exists());
    })
    .await
}

/// A tmpfs of `size` mounted on a directory for the test's lifetime (unmounted on drop); `None` when
/// this machine does not let the test mount one (not root, or in a container without the right).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        let mounted = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_is_full_not_unavailable_and_existing_sessions_stay_readable() {
    bounded(async {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("s");
        std::fs::create_dir(&dir).unwrap();
        let Some(_disk) = SmallDisk::mount(&dir, "64k") else {
            eprintln!("cannot mount a small tmpfs here: the full-disk case is not exercised");
            return;
        };
        // No quota of the store's own: only the disk can refuse.
        let store = FileStore::new(&dir);
        store.init().await.unwrap();
        let now = sessionforge::expiry::SystemClock.now();
        let mut rec = record(now, Duration::from_secs(600));
        rec.data.insert("pad".into(), json!("x".repeat(3000)));
        let mut keys = Vec::new();
        let err = loop {
            let k = Token::generate().store_key();
            match store.create(&k, &rec).await {
                Ok(Created::Created) => keys.push(k),
                Ok(other) => panic!("{other:?}"),
                Err(e) => break e,
            }
            assert!(keys.len() < 100, "a 64 KiB disk never filled up");
        };
        assert!(!keys.is_empty());
        assert!(
            matches!(
                err,
                StoreError::Full {
                    backend: "file",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_full() && !err.is_unavailable(), "{err:?}");
        // Health: still serving (reads work), degraded with a short public reason.
        let h = store.health().await;
        assert_eq!(h.status, HealthStatus::Degraded, "{h:?}");
        assert_eq!(h.reason.as_deref(), Some("store full"), "{h:?}");
        assert!(h.is_serving());
        // The refused write left nothing half-written behind.
        assert_eq!(names(&dir).len(), keys.len(), "{:?}", names(&dir));
        for k in &keys {
            let loaded = store.load(k).await.unwrap().unwrap();
            assert_eq!(loaded.record.data["pad"], rec.data["pad"]);
        }
        // Deleting one makes room again.
        assert!(store.delete(&keys[0]).await.unwrap());
        assert_eq!(
            store
                .create(&Token::generate().store_key(), &rec)
                .await
                .unwrap(),
            Created::Created
        );
    })
    .await
}
