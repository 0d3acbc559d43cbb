//! The Redis store against a real `redis-server` (started per test by `support::RedisServer` on a
//! free loopback port), through the store API and through real HTTP on loopback.
//!
//! The stores here run with the default settings, so the read cache (on by default) is part of every
//! test. Redis key names are built here from the documented layout: a session at
//! `<prefix><store key>`, the index at `<prefix>index`, a (readable) user's set at
//! `<prefix>user:<user>`.

mod support;

use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshot};
use serde_json::{json, Value};
use sessionforge::expiry::{Clock, SystemClock, Timestamp};
use sessionforge::id::{StoreKey, Token};
use sessionforge::store::redis::{ConfigError, RedisConfig, RedisStore};
use sessionforge::store::{
    ChangeSet, Created, HealthStatus, Record, Replaced, Saved, SessionStore, StoreError, Version,
    VersionRule,
};
use sessionforge::{Session, SessionError, SessionLayer};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::RedisServer;
use tokio::sync::Notify;

const PREFIX: &str = "test:sess:";
/// Short timeouts so the failure tests stay quick.
const TIMEOUT: Duration = Duration::from_millis(300);
/// Every HTTP exchange and store call in these tests ends within this, or the test fails.
const LIMIT: Duration = Duration::from_secs(10);

fn config(url: &str) -> RedisConfig {
    RedisConfig::new(url)
        .unwrap()
        .with_prefix(PREFIX)
        .with_connect_timeout(TIMEOUT)
        .with_command_timeout(TIMEOUT)
}

fn store(server: &RedisServer) -> RedisStore {
    config(&server.url()).build().unwrap()
}

fn record(ttl: Duration, data: Value) -> Record {
    let now = SystemClock.now();
    let mut r = Record::new(now, now.plus(ttl), now.plus(ttl * 10));
    r.user_agent = Some("test-agent".into());
    r.data = data.as_object().unwrap().clone();
    r
}

fn key() -> StoreKey {
    Token::generate().store_key()
}

/// The Redis key of a session (one server: `<prefix><store key>`).
fn rkey(k: &StoreKey) -> String {
    format!("{PREFIX}{k}")
}

/// The listing index.
fn index_key() -> String {
    format!("{PREFIX}index")
}

/// The set of a user with a readable id.
fn user_key(user: &str) -> String {
    format!("{PREFIX}user:{user}")
}

async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("no answer within the test's time limit")
}

/// The value of counter `name` in a metrics snapshot (0 when it was never incremented).
fn counter(snapshot: Snapshot, name: &str) -> u64 {
    snapshot
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == name)
        .map(|(.., v)| match v {
            DebugValue::Counter(n) => n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// An Axum app on loopback and a hand-driven client.

#[derive(Clone, Default)]
struct Gate {
    loaded: Arc<Notify>,
    go: Arc<Notify>,
}

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", n).await?;
    Ok(n.to_string())
}

async fn set_key(session: Session, Path(k): Path<String>) -> Result<&'static str, SessionError> {
    session.insert(&k, true).await?;
    Ok("ok")
}

async fn data(session: Session) -> Result<String, SessionError> {
    Ok(Value::Object(session.data().await?).to_string())
}

/// Loads the session, waits for the test to say go, then writes.
async fn gated_write(State(gate): State<Gate>, session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or(0);
    gate.loaded.notify_one();
    gate.go.notified().await;
    session.insert("late", n).await?;
    Ok("written".into())
}

async fn serve(store: RedisStore, gate: Gate) -> SocketAddr {
    let app = Router::new()
        .route("/count", get(count))
        .route("/set/{k}", put(set_key))
        .route("/data", get(data))
        .route("/gated", put(gated_write))
        .with_state(gate)
        .layer(SessionLayer::new(store).with_idle_timeout(Duration::from_secs(60)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Reply {
    status: StatusCode,
    /// The `id` cookie value the server set, if any (empty when it removed the cookie).
    cookie: Option<String>,
    body: String,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn call(
    client: &HttpClient,
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("user-agent", "sessionforge-test/1.0");
    if let Some(c) = cookie {
        req = req.header("cookie", format!("id={c}"));
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    let res = bounded(client.request(req)).await.expect("HTTP request");
    let status = res.status();
    let cookie = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("id="))
        .map(|v| v.split(';').next().unwrap_or("").to_owned());
    let body = bounded(res.into_body().collect()).await.unwrap().to_bytes();
    Reply {
        status,
        cookie,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn redis_key_of(token: &str) -> String {
    rkey(&Token::parse(token).unwrap().store_key())
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn an_http_session_is_stored_as_readable_json_with_a_millisecond_ttl() {
    let server = RedisServer::start();
    let addr = serve(store(&server), Gate::default()).await;
    let client = client();

    let first = call(&client, addr, "GET", "/count", None).await;
    assert_eq!((first.status, first.body.as_str()), (StatusCode::OK, "1"));
    let token = first.cookie.expect("a new session sets a cookie");
    let second = call(&client, addr, "GET", "/count", Some(&token)).await;
    assert_eq!(second.body, "2");

    let rkey = redis_key_of(&token);
    let raw = server.cli(&["GET", &rkey]);
    // New in this release: the native JSON starts with its version, `{"lastAccess":<ms>`.
    assert!(raw.starts_with("{\"lastAccess\":"), "{raw}");
    let stored: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(stored["data"], json!({"n": 2}));
    assert_eq!(stored["userAgent"], "sessionforge-test/1.0");
    for field in ["createdAt", "lastAccess", "expires", "deadline"] {
        assert!(stored[field].as_u64().is_some(), "{field} in {stored}");
    }
    let pttl: i64 = server.cli(&["PTTL", &rkey]).parse().unwrap();
    assert!((50_000..=60_000).contains(&pttl), "PTTL {pttl}");
    // The token itself is never a key: only its digest is.
    assert_eq!(server.cli(&["EXISTS", &format!("{PREFIX}{token}")]), "0");
    // The index holds the store key scored by the expiry.
    let score: u64 = server
        .cli(&["ZSCORE", &index_key(), &rkey[PREFIX.len()..]])
        .parse()
        .unwrap();
    assert_eq!(score, stored["expires"].as_u64().unwrap());
}

#[tokio::test]
async fn create_on_a_taken_key_answers_exists_and_keeps_the_first_value() {
    let server = RedisServer::start();
    let store = store(&server);
    let k = key();
    let first = record(Duration::from_secs(60), json!({"who": "first"}));
    let second = record(Duration::from_secs(60), json!({"who": "second"}));
    assert_eq!(store.create(&k, &first).await.unwrap(), Created::Created);
    assert_eq!(store.create(&k, &second).await.unwrap(), Created::Exists);
    let loaded = store.load(&k).await.unwrap().unwrap();
    assert_eq!(loaded.record.data["who"], "first");
    // The same create again (a retry after a dropped connection lost the first answer) succeeded.
    assert_eq!(store.create(&k, &first).await.unwrap(), Created::Created);
    // Changed in this release: a native value's version is its `lastAccess` integer (no longer the
    // stored bytes or their SHA-1), read from the first bytes of the value.
    let stored = server.cli(&["GET", &rkey(&k)]);
    let last_access = first.last_access.as_millis().to_string();
    assert_eq!(loaded.version.as_str(), last_access);
    assert!(
        stored.starts_with(&format!("{{\"lastAccess\":{last_access},")),
        "{stored}"
    );

    // A value that does not start with `{"lastAccess":` (written by an older release, whose JSON
    // began with `createdAt`) is versioned by its digest: Redis's own sha1hex of the stored bytes, on
    // both ends of the compare-and-swap. A save against it is not a conflict.
    let mut legacy: serde_json::Map<String, Value> = serde_json::Map::new();
    let current: Value = serde_json::from_str(&stored).unwrap();
    for field in [
        "createdAt",
        "lastAccess",
        "expires",
        "deadline",
        "userAgent",
        "data",
    ] {
        legacy.insert(field.into(), current[field].clone());
    }
    let legacy = Value::Object(legacy).to_string();
    assert!(legacy.starts_with("{\"createdAt\":"), "{legacy}");
    server.cli(&["SET", &rkey(&k), &legacy, "PX", "60000"]);
    let old = store.load(&k).await.unwrap().unwrap();
    assert_eq!(old.record.data["who"], "first");
    assert_eq!(old.version.as_str().len(), 40);
    let lua = server.cli(&[
        "EVAL",
        "return redis.sha1hex(redis.call('GET', KEYS[1]))",
        "1",
        &rkey(&k),
    ]);
    assert_eq!(lua, old.version.as_str());
    assert_eq!(
        VersionRule::Digest.version_of(legacy.as_bytes()),
        old.version
    );
    saves_without_conflict(
        &server,
        &store,
        &k,
        &old.version,
        &old.record,
        "who",
        "digest",
    )
    .await;
    let after = store.load(&k).await.unwrap().unwrap();
    assert_eq!(after.record.data["who"], "digest");
    // Written back in the native form, so versioned by its lastAccess again, which moved on.
    let rewritten = server.cli(&["GET", &rkey(&k)]);
    assert!(rewritten.starts_with("{\"lastAccess\":"), "{rewritten}");
    assert_eq!(
        after.version.as_str(),
        after.record.last_access.as_millis().to_string()
    );
    assert!(after.record.last_access > old.record.last_access);

    // A large value is versioned the same way (nothing is hashed), and saves against it work alike.
    let pad = json!("x".repeat(2000));
    let saved = save_field(&store, &k, &after.version, &after.record, "pad", pad, false).await;
    assert_eq!(saved, Saved::Saved);
    let big = store.load(&k).await.unwrap().unwrap();
    assert!(server.cli(&["STRLEN", &rkey(&k)]).parse::<u64>().unwrap() > 2000);
    assert_eq!(
        big.version.as_str(),
        big.record.last_access.as_millis().to_string()
    );
    assert_ne!(big.version, after.version);
    saves_without_conflict(&server, &store, &k, &big.version, &big.record, "who", "big").await;
    assert_eq!(
        store.load(&k).await.unwrap().unwrap().record.data["who"],
        "big"
    );
}

/// Saves `field = value` against `version` and checks it was stored by one run of the script (a
/// conflict would have run it again).
async fn saves_without_conflict(
    server: &RedisServer,
    store: &RedisStore,
    k: &StoreKey,
    version: &Version,
    base: &Record,
    field: &str,
    value: &str,
) {
    server.cli(&["CONFIG", "RESETSTAT"]);
    let saved = save_field(store, k, version, base, field, json!(value), false).await;
    assert_eq!(saved, Saved::Saved);
    assert_eq!(
        script_calls(server),
        1,
        "a conflict would have run the script again"
    );
}

/// Saves `field = value` over `base` as a request that changed only that key would, against
/// `version`, with `expiry_kept` as given; answers what the store said.
async fn save_field(
    store: &RedisStore,
    k: &StoreKey,
    version: &Version,
    base: &Record,
    field: &str,
    value: Value,
    expiry_kept: bool,
) -> Saved {
    let mut changes = ChangeSet::default();
    changes.entries.insert(field.into(), Some(value.clone()));
    changes.expiry_kept = expiry_kept;
    let mut ours = base.clone();
    ours.data.insert(field.into(), value);
    // Every record written over a stored one has a later lastAccess (the store's version).
    ours.last_access = base.last_access.next();
    store
        .save(k, version, &Arc::new(ours), &changes)
        .await
        .unwrap()
}

/// `EVALSHA` calls that ran a script since the last `CONFIG RESETSTAT` on `server` (a `NOSCRIPT`
/// answer, before the script is loaded, does not count).
fn script_calls(server: &RedisServer) -> u64 {
    let info = server.cli(&["INFO", "commandstats"]);
    let Some(fields) = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("cmdstat_evalsha:"))
    else {
        return 0;
    };
    let field = |name: &str| -> u64 {
        fields
            .split(',')
            .find_map(|f| f.strip_prefix(name))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    field("calls=") - field("failed_calls=") - field("rejected_calls=")
}

/// Metrics are recorded per thread here (a local recorder on a current-thread runtime), so the
/// conflicts counted are this test's alone.
#[test]
fn a_stale_save_merges_with_the_concurrent_writer_and_counts_a_conflict() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = RedisServer::start();
        let store = store(&server);
        let k = key();
        let base_record = record(Duration::from_secs(60), json!({"n": 1}));
        store.create(&k, &base_record).await.unwrap();
        let loaded = store.load(&k).await.unwrap().unwrap();
        // Two requests loaded the same version; each changes its own key.
        for key_name in ["a", "b"] {
            let mut changes = ChangeSet::default();
            changes
                .entries
                .insert(key_name.into(), Some(json!(key_name)));
            let mut ours = (*loaded.record).clone();
            changes.apply(&mut ours.data);
            ours.last_access = loaded.record.last_access.next();
            let saved = store
                .save(&k, &loaded.version, &Arc::new(ours), &changes)
                .await
                .unwrap();
            assert_eq!(saved, Saved::Saved);
        }
        let data = store.load(&k).await.unwrap().unwrap().record.data.clone();
        assert_eq!(Value::Object(data), json!({"n": 1, "a": "a", "b": "b"}));
    });
    // The second save met the first one's write: one merge.
    assert_eq!(
        counter(snapshotter.snapshot(), "sessionforge_save_conflicts_total"),
        1
    );
}

#[tokio::test]
async fn sixty_four_concurrent_requests_on_one_session_all_land() {
    let server = RedisServer::start();
    let addr = serve(store(&server), Gate::default()).await;
    let client = client();
    let token = call(&client, addr, "GET", "/count", None)
        .await
        .cookie
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let (client, token) = (client.clone(), token.clone());
        tasks.spawn(async move {
            let reply = call(&client, addr, "PUT", &format!("/set/k{i}"), Some(&token)).await;
            (reply.status, reply.body)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (status, body) = done.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let data: Value =
        serde_json::from_str(&call(&client, addr, "GET", "/data", Some(&token)).await.body)
            .unwrap();
    let keys = data.as_object().unwrap();
    assert_eq!(keys.len(), 65, "{data}");
    for i in 0..64 {
        assert_eq!(keys[&format!("k{i}")], true);
    }
    let stored: Value = serde_json::from_str(&server.cli(&["GET", &redis_key_of(&token)])).unwrap();
    assert_eq!(stored["data"].as_object().unwrap().len(), 65);
}

#[tokio::test]
async fn a_save_after_a_delete_never_brings_the_session_back() {
    let server = RedisServer::start();
    let store = store(&server);
    let k = key();
    let rec = record(Duration::from_secs(60), json!({"n": 1}));
    store.create(&k, &rec).await.unwrap();
    let loaded = store.load(&k).await.unwrap().unwrap();
    assert!(store.delete(&k).await.unwrap());
    assert!(!store.delete(&k).await.unwrap());
    let mut changes = ChangeSet::default();
    changes.entries.insert("x".into(), Some(json!(1)));
    let mut ours = (*loaded.record).clone();
    changes.apply(&mut ours.data);
    ours.last_access = loaded.record.last_access.next();
    assert_eq!(
        store
            .save(&k, &loaded.version, &Arc::new(ours), &changes)
            .await
            .unwrap(),
        Saved::Gone
    );
    assert_eq!(server.cli(&["EXISTS", &rkey(&k)]), "0");
    assert_eq!(
        server.cli(&["ZSCORE", &index_key(), k.as_str()]),
        "",
        "no index entry either"
    );
    assert!(store.load(&k).await.unwrap().is_none());
}

#[tokio::test]
async fn replace_and_an_emptying_save_keep_the_index_and_the_user_sets_in_step() {
    let server = RedisServer::start();
    let store = store(&server);
    let score = |set: &str, k: &StoreKey| server.cli(&["ZSCORE", set, k.as_str()]);
    let k = key();
    let mut rec = record(Duration::from_secs(600), json!({"n": 1}));
    rec.user = Some("alice".into());
    store.create(&k, &rec).await.unwrap();
    let loaded = store.load(&k).await.unwrap().unwrap();
    let mut next = (*loaded.record).clone();
    next.last_access = loaded.record.last_access.next();
    next.user = Some("bob".into());
    next.data.insert("n".into(), json!(2));

    // A version that is not the stored one: nothing is written.
    assert_eq!(
        store
            .replace(&k, &Version::new("1"), Some(&next))
            .await
            .unwrap(),
        Replaced::Changed
    );
    assert_eq!(store.load(&k).await.unwrap().unwrap().record.data["n"], 1);
    // The loaded version: written, and the session moves from alice's set to bob's.
    assert_eq!(
        store
            .replace(&k, &loaded.version, Some(&next))
            .await
            .unwrap(),
        Replaced::Replaced
    );
    let now = store.load(&k).await.unwrap().unwrap();
    assert_eq!(now.record.data["n"], 2);
    assert_eq!(now.record.user.as_deref(), Some("bob"));
    assert_eq!(
        now.version.as_str(),
        next.last_access.as_millis().to_string()
    );
    let expires = rec.expires.as_millis().to_string();
    assert_eq!(score(&user_key("alice"), &k), "");
    assert_eq!(score(&user_key("bob"), &k), expires);
    assert_eq!(score(&index_key(), &k), expires);
    // The version it had before: changed, so nothing is removed either.
    assert_eq!(
        store.replace(&k, &loaded.version, None).await.unwrap(),
        Replaced::Changed
    );
    assert_eq!(server.cli(&["EXISTS", &rkey(&k)]), "1");
    // Removing it at its current version takes its index entries with it.
    assert_eq!(
        store.replace(&k, &now.version, None).await.unwrap(),
        Replaced::Replaced
    );
    assert_eq!(server.cli(&["EXISTS", &rkey(&k)]), "0");
    assert_eq!(score(&index_key(), &k), "");
    assert_eq!(score(&user_key("bob"), &k), "");
    // Gone: a replace never writes it again.
    assert_eq!(
        store.replace(&k, &now.version, Some(&next)).await.unwrap(),
        Replaced::Gone
    );
    assert_eq!(server.cli(&["EXISTS", &rkey(&k)]), "0");

    // New in this release: a save whose changes leave the session with no data and no user removes
    // it (the store decides, on what it holds), with its index entry.
    let k = key();
    store
        .create(&k, &record(Duration::from_secs(600), json!({"n": 1})))
        .await
        .unwrap();
    let loaded = store.load(&k).await.unwrap().unwrap();
    let mut changes = ChangeSet::default();
    changes.entries.insert("n".into(), None);
    let mut ours = (*loaded.record).clone();
    changes.apply(&mut ours.data);
    ours.last_access = loaded.record.last_access.next();
    assert_eq!(
        store
            .save(&k, &loaded.version, &Arc::new(ours), &changes)
            .await
            .unwrap(),
        Saved::Emptied
    );
    assert_eq!(server.cli(&["EXISTS", &rkey(&k)]), "0");
    assert_eq!(score(&index_key(), &k), "");
    assert!(store.load(&k).await.unwrap().is_none());
}

#[tokio::test]
async fn a_session_deleted_in_redis_stays_deleted_through_http() {
    let server = RedisServer::start();
    let gate = Gate::default();
    let addr = serve(store(&server), gate.clone()).await;
    let client = client();

    // Deleted while a request that loaded it is in flight.
    let token = call(&client, addr, "GET", "/count", None)
        .await
        .cookie
        .unwrap();
    let rkey = redis_key_of(&token);
    let in_flight = {
        let (client, token) = (client.clone(), token.clone());
        tokio::spawn(async move { call(&client, addr, "PUT", "/gated", Some(&token)).await })
    };
    bounded(gate.loaded.notified()).await;
    assert_eq!(server.cli(&["DEL", &rkey]), "1");
    gate.go.notify_one();
    let reply = bounded(in_flight).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.cookie.as_deref(), Some(""), "the cookie is removed");
    assert_eq!(server.cli(&["EXISTS", &rkey]), "0", "not resurrected");

    // Deleted between requests: the next write starts a new session under a new token.
    let token = call(&client, addr, "GET", "/count", None)
        .await
        .cookie
        .unwrap();
    let rkey = redis_key_of(&token);
    assert_eq!(server.cli(&["DEL", &rkey]), "1");
    let reply = call(&client, addr, "PUT", "/set/x", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let fresh = reply.cookie.expect("a fresh session");
    assert_ne!(fresh, token);
    assert_eq!(server.cli(&["EXISTS", &rkey]), "0", "not resurrected");
    assert_eq!(server.cli(&["EXISTS", &redis_key_of(&fresh)]), "1");
}

#[tokio::test]
async fn two_app_instances_on_one_redis_share_sessions() {
    let server = RedisServer::start();
    let a = serve(store(&server), Gate::default()).await;
    let b = serve(store(&server), Gate::default()).await;
    let client = client();
    let token = call(&client, a, "GET", "/count", None)
        .await
        .cookie
        .unwrap();
    for (i, addr) in [b, a, b, a, b].into_iter().enumerate() {
        let reply = call(&client, addr, "GET", "/count", Some(&token)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, (i + 2).to_string().as_str()),
            "request {i}, through {addr}"
        );
    }
}

#[tokio::test]
async fn password_with_special_characters_and_db_1_from_the_environment() {
    let password = "p@ss:w/rd";
    let server = RedisServer::with_args(&["--requirepass", password]);
    let port = server.port().to_string();
    let env = |name: &str| match name {
        "REDIS_HOST" => Some("127.0.0.1".to_owned()),
        "REDIS_PORT" => Some(port.clone()),
        "REDIS_PASSWORD" => Some(password.to_owned()),
        "REDIS_DB" => Some("1".to_owned()),
        _ => None,
    };
    let cfg = RedisConfig::from_lookup(env).unwrap().with_prefix(PREFIX);
    assert!(!format!("{cfg:?}").contains(password));
    let store = cfg.build().unwrap();
    let k = key();
    store
        .create(&k, &record(Duration::from_secs(60), json!({"db": 1})))
        .await
        .unwrap();
    let in_db1: Value = serde_json::from_str(&server.cli(&["-n", "1", "GET", &rkey(&k)])).unwrap();
    assert_eq!(in_db1["data"]["db"], 1);
    assert_eq!(server.cli(&["-n", "0", "EXISTS", &rkey(&k)]), "0");
    assert_eq!(store.load(&k).await.unwrap().unwrap().record.data["db"], 1);

    // A wrong password is a typed error, not a hang or a panic.
    let wrong = config(&format!("redis://:nope@127.0.0.1:{}", server.port()))
        .build()
        .unwrap();
    let err = bounded(wrong.load(&k)).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let health = bounded(wrong.health()).await;
    assert_eq!(health.status, HealthStatus::Unavailable, "{health:?}");
    assert_eq!(health.backend("redis"), Some(false));
}

#[tokio::test]
async fn redis_url_wins_over_the_other_variables() {
    let server = RedisServer::start();
    let url = server.url();
    let env = |name: &str| match name {
        "REDIS_URL" => Some(url.clone()),
        "REDIS_PORT" => Some("abc".to_owned()),
        "REDIS_DB" => Some("x".to_owned()),
        _ => None,
    };
    let store = RedisConfig::from_lookup(env).unwrap().build().unwrap();
    let health = bounded(store.health()).await;
    assert_eq!(health.status, HealthStatus::Ok, "{health:?}");
    assert_eq!(health.backend("redis"), Some(true));
    assert!(bounded(store.load(&key())).await.unwrap().is_none());
    // Without REDIS_URL the same bad values are errors naming their variable.
    let err = RedisConfig::from_lookup(|n| env(n).filter(|_| n != "REDIS_URL")).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::InvalidVar {
                var: "REDIS_PORT",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn redis_down_at_start_answers_503_quickly_and_recovers_without_a_rebuild() {
    let mut server = RedisServer::start();
    server.kill();
    let store = store(&server); // built while Redis is down
    let addr = serve(store.clone(), Gate::default()).await;
    let client = client();

    let started = Instant::now();
    let reply = call(&client, addr, "GET", "/count", None).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error"], "session store unavailable");
    assert!(started.elapsed() < TIMEOUT * 2 + Duration::from_millis(500));
    let err = store.load(&key()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unavailable {
                backend: "redis",
                ..
            }
        ),
        "{err:?}"
    );
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Unavailable, "{health:?}");
    assert_eq!(health.serving, "redis");
    assert_eq!(health.backend("redis"), Some(false));

    server.restart();
    // The very next call connects: a failed connect is not remembered.
    let reply = call(&client, addr, "GET", "/count", None).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Ok, "{health:?}");
    assert_eq!(health.backend("redis"), Some(true));

    // Killed again while connected: errors, then the same store recovers after a restart.
    server.kill();
    assert!(store.load(&key()).await.unwrap_err().is_unavailable());
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut failures = 0;
    while store.load(&key()).await.is_err() {
        failures += 1;
        assert!(Instant::now() < deadline, "no recovery after restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failures <= 1, "{failures} failed calls after the restart");
}

#[tokio::test]
async fn a_frozen_redis_times_out_within_the_command_timeout() {
    let server = RedisServer::start();
    let connected = store(&server);
    assert!(connected.load(&key()).await.unwrap().is_none());
    let fresh = store(&server);
    server.pause();

    let started = Instant::now();
    let err = connected.load(&key()).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, StoreError::Timeout { .. }), "{err:?}");
    assert!(took < TIMEOUT + Duration::from_millis(300), "{took:?}");

    // A store that must connect first is bounded by the connect timeout instead.
    let started = Instant::now();
    let err = fresh.load(&key()).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(started.elapsed() < TIMEOUT * 2 + Duration::from_millis(300));

    // Health is bounded the same way, and says so.
    let started = Instant::now();
    let health = connected.health().await;
    assert_eq!(health.status, HealthStatus::Unavailable, "{health:?}");
    assert_eq!(health.backend("redis"), Some(false));
    assert!(started.elapsed() < TIMEOUT * 2 + Duration::from_millis(300));

    server.resume();
    let deadline = Instant::now() + Duration::from_secs(3);
    while connected.load(&key()).await.is_err() {
        assert!(Instant::now() < deadline, "no recovery after SIGCONT");
    }
    assert!(fresh.load(&key()).await.unwrap().is_none());
}

#[tokio::test]
async fn corrupt_values_give_a_fresh_session_and_cleanup_removes_them() {
    let server = RedisServer::start();
    let store = store(&server);
    let addr = serve(store.clone(), Gate::default()).await;
    let client = client();

    let planted = Token::generate();
    let planted_key = rkey(&planted.store_key());
    server.cli(&["SET", &planted_key, "{not json"]);
    let reply = call(&client, addr, "GET", "/count", Some(planted.as_str())).await;
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "1"));
    let fresh = reply.cookie.expect("a fresh session");
    assert_ne!(fresh, planted.as_str());
    assert_eq!(
        server.cli(&["GET", &planted_key]),
        "{not json",
        "left for cleanup"
    );

    // A value of the wrong type is ignored as well.
    let hash_key = key();
    server.cli(&["HSET", &rkey(&hash_key), "a", "b"]);
    assert!(store.load(&hash_key).await.unwrap().is_none());
    // A save against a corrupt value treats it as gone rather than overwriting or merging.
    let rec = record(Duration::from_secs(60), json!({}));
    let saved = store
        .save(
            &planted.store_key(),
            &Version::new("x"),
            &Arc::new(rec),
            &ChangeSet::default(),
        )
        .await
        .unwrap();
    assert_eq!(saved, Saved::Gone);
    assert_eq!(server.cli(&["GET", &planted_key]), "{not json");
    // Keys under the prefix that are not shaped like store keys are not ours: left alone.
    server.cli(&["SET", &format!("{PREFIX}foreign"), "hello"]);

    let removed = store.cleanup().await.unwrap();
    assert_eq!(server.cli(&["EXISTS", &planted_key]), "0");
    assert_eq!(server.cli(&["EXISTS", &rkey(&hash_key)]), "0");
    assert_eq!(
        server.cli(&["GET", &format!("{PREFIX}foreign")]),
        "hello",
        "a foreign key under the prefix is not a session"
    );
    assert_eq!(server.cli(&["EXISTS", &redis_key_of(&fresh)]), "1");
    // The index is not a session either: the fresh session keeps its entry.
    let fresh_key = Token::parse(&fresh).unwrap().store_key();
    assert_ne!(
        server.cli(&["ZSCORE", &index_key(), fresh_key.as_str()]),
        "",
        "cleanup removed the index <prefix>index"
    );
    assert_eq!(removed, 2, "the corrupt value and the hash");
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_save_that_keeps_the_expiry_leaves_the_index_and_the_user_set_alone() {
    let server = RedisServer::start();
    let store = store(&server);
    let k = key();
    let mut rec = record(Duration::from_secs(600), json!({"n": 1}));
    rec.user = Some("alice".into());
    store.create(&k, &rec).await.unwrap();
    let score = |set: &str| server.cli(&["ZSCORE", set, k.as_str()]);
    let user_set = user_key("alice");
    let expires = rec.expires.as_millis().to_string();
    assert_eq!(score(&index_key()), expires);
    assert_eq!(score(&user_set), expires);

    // A data change under the same expiry: the value is written, the sets are not touched.
    let loaded = store.load(&k).await.unwrap().unwrap();
    server.cli(&["CONFIG", "RESETSTAT"]);
    let saved = save_field(
        &store,
        &k,
        &loaded.version,
        &loaded.record,
        "n",
        json!(2),
        true,
    )
    .await;
    assert_eq!(saved, Saved::Saved);
    let stats = server.cli(&["INFO", "commandstats"]);
    assert!(!stats.contains("cmdstat_zadd"), "{stats}");
    assert_eq!(store.load(&k).await.unwrap().unwrap().record.data["n"], 2);

    // A refresh moves the expiry: both sets follow.
    let loaded = store.load(&k).await.unwrap().unwrap();
    let mut moved = (*loaded.record).clone();
    moved.expires = moved.expires.plus(Duration::from_secs(60));
    let saved = save_field(&store, &k, &loaded.version, &moved, "n", json!(3), false).await;
    assert_eq!(saved, Saved::Saved);
    let moved = moved.expires.as_millis().to_string();
    assert_eq!(score(&index_key()), moved);
    assert_eq!(score(&user_set), moved);
}

#[tokio::test]
async fn the_index_and_the_user_sets_carry_no_ttl() {
    let server = RedisServer::start();
    let store = store(&server);
    let k = key();
    let mut rec = record(Duration::from_secs(600), json!({"n": 1}));
    rec.user = Some("alice".into());
    store.create(&k, &rec).await.unwrap();
    let pttl = |key: &str| -> i64 { server.cli(&["PTTL", key]).parse().unwrap() };
    assert!(
        pttl(&rkey(&k)) > 500_000,
        "the session expires with its record"
    );
    // Changed in this release: the user sets no longer carry a TTL (neither does the index), so a
    // volatile-* eviction policy cannot evict them away from their sessions.
    assert_eq!(pttl(&index_key()), -1);
    assert_eq!(pttl(&user_key("alice")), -1);
    // A save that moves the session to another user does not give the new set one either.
    let loaded = store.load(&k).await.unwrap().unwrap();
    let mut ours = (*loaded.record).clone();
    ours.user = Some("bob".into());
    ours.last_access = loaded.record.last_access.next();
    let mut changes = ChangeSet::default();
    changes.user = Some(Some("bob".into()));
    assert_eq!(
        store
            .save(&k, &loaded.version, &Arc::new(ours), &changes)
            .await
            .unwrap(),
        Saved::Saved
    );
    assert_eq!(pttl(&user_key("bob")), -1);
    assert_eq!(server.cli(&["EXISTS", &user_key("alice")]), "0");
    assert_eq!(pttl(&index_key()), -1);
    let bob = store.user_sessions("bob").await.unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].id, k);
    assert!(store.user_sessions("alice").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_page_after_a_vanished_cursor_among_tied_expiries_neither_repeats_nor_skips() {
    let server = RedisServer::start();
    let store = store(&server);
    // Twelve sessions with one expiry: the index orders them by member alone.
    let expires = SystemClock.now().plus(Duration::from_secs(600));
    for _ in 0..12 {
        let mut rec = record(Duration::from_secs(600), json!({"n": 1}));
        rec.expires = expires;
        store.create(&key(), &rec).await.unwrap();
    }
    let first = store.list(None, 5).await.unwrap();
    assert_eq!(first.sessions.len(), 5);
    let cursor = first.next_cursor.clone().expect("more pages");
    // The cursor's session vanishes with its index entry before the next page is asked for.
    let last = first.sessions.last().unwrap().id;
    server.cli(&["DEL", &rkey(&last)]);
    server.cli(&["ZREM", &index_key(), last.as_str()]);
    let mut seen: Vec<StoreKey> = first.sessions.iter().map(|s| s.id).collect();
    let mut cursor = Some(cursor);
    while let Some(c) = cursor {
        let page = store.list(Some(&c), 5).await.unwrap();
        seen.extend(page.sessions.iter().map(|s| s.id));
        cursor = page.next_cursor;
    }
    let unique: HashSet<&StoreKey> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an entry was listed twice");
    assert_eq!(
        seen.len(),
        12,
        "every session once, the vanished one on the first page only"
    );
}

#[tokio::test]
async fn count_and_list_page_through_live_sessions_and_cleanup_drops_stale_index_entries() {
    let server = RedisServer::start();
    let store = store(&server);
    let now = SystemClock.now();
    let mut live = HashSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2_000u64 {
        let (store, k) = (store.clone(), key());
        live.insert(k);
        // Distinct expiries, plus a block of 300 sharing one (ties in the index).
        let ttl = Duration::from_millis(60_000 + if i < 300 { 0 } else { i * 7 });
        tasks.spawn(async move {
            let mut rec = record(ttl, json!({"i": i}));
            rec.expires = now.plus(ttl);
            store.create(&k, &rec).await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    // Already expired when created: Redis drops the value at once, and the create script's
    // amortised trim drops the index entry in the same step.
    let mut rec = record(Duration::from_secs(1), json!({}));
    rec.expires = Timestamp::from_millis(now.as_millis() - 1_000);
    store.create(&key(), &rec).await.unwrap();
    assert_eq!(server.cli(&["ZCARD", &index_key()]), "2000");
    // Five that expire shortly: counted while alive, not after, index entries left for cleanup.
    for _ in 0..5 {
        store
            .create(&key(), &record(Duration::from_millis(200), json!({})))
            .await
            .unwrap();
    }
    assert_eq!(store.count().await.unwrap(), 2_005);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.count().await.unwrap(), 2_000);

    // Ten sessions deleted behind the store's back: orphaned index entries.
    let orphans: Vec<StoreKey> = live.iter().take(10).cloned().collect();
    for k in &orphans {
        server.cli(&["DEL", &rkey(k)]);
        live.remove(k);
    }
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store.list(cursor.as_deref(), 100).await.unwrap();
        pages += 1;
        assert!(page.sessions.len() <= 100);
        let mut last = 0;
        for s in &page.sessions {
            assert!(seen.insert(s.id), "listed twice: {:?}", s.id);
            assert!(s.expires.as_millis() >= last, "ordered by expiry");
            last = s.expires.as_millis();
            assert_eq!(s.user_agent.as_deref(), Some("test-agent"));
            assert!(!s.tombstone);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 100, "paging does not end");
    }
    assert_eq!(seen, live, "every live session exactly once");
    // The listing dropped the orphans it met; the expired entries go with cleanup.
    assert_eq!(store.count().await.unwrap(), 1_990);
    let removed = store.cleanup().await.unwrap();
    assert_eq!(
        server.cli(&["ZCARD", &index_key()]),
        "1990",
        "cleanup keeps the index, less the expired entries"
    );
    assert_eq!(removed, 5, "the five expired index entries");

    // An orphan the listing never met is found by cleanup's sweep.
    let k = *live.iter().next().unwrap();
    server.cli(&["DEL", &rkey(&k)]);
    assert_eq!(store.cleanup().await.unwrap(), 1);
    assert_eq!(store.count().await.unwrap(), 1_989);

    // A cursor that is not one of ours is a client's mistake, not a panic.
    assert!(matches!(
        store.list(Some("garbage"), 10).await,
        Err(StoreError::InvalidCursor)
    ));
}

#[tokio::test]
async fn usage_info_and_health_come_from_the_server() {
    let server =
        RedisServer::with_args(&["--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru"]);
    let store = store(&server);
    assert_eq!(store.name(), "redis");
    // Changed in this release: usage is open data, the figures as INFO writes them (text).
    let usage = store.usage().await.unwrap();
    assert_eq!(usage.section, "memoryUsage");
    let figure = |name: &str| -> String {
        usage.figures[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} in {:?}", usage.figures))
            .to_owned()
    };
    assert!(figure("used_memory").parse::<u64>().unwrap() > 0);
    assert!(!figure("used_memory_human").is_empty());
    assert_eq!(figure("maxmemory"), (64 * 1024 * 1024).to_string());
    assert_eq!(figure("maxmemory_policy"), "volatile-lru");
    assert!(usage.warnings.is_empty(), "{:?}", usage.warnings);
    // `info()` answers `{"redis": INFO by section}`.
    let info = store.info().await.unwrap().unwrap();
    let server_info = &info["redis"]["server"];
    assert!(server_info["redis_version"]
        .as_str()
        .unwrap()
        .starts_with(|c: char| c.is_ascii_digit()));
    assert_eq!(server_info["tcp_port"], server.port().to_string());
    let started = Instant::now();
    let health = store.health().await;
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    assert_eq!(health.serving, "redis");
    assert_eq!(health.status, HealthStatus::Ok, "{health:?}");
    assert!(health.is_serving());
    assert_eq!(health.backend("redis"), Some(true));
    assert_eq!(health.reason, None);
}

#[tokio::test]
async fn a_redis_at_maxmemory_under_noeviction_is_full_and_health_says_degraded() {
    let server = RedisServer::with_args(&["--maxmemory-policy", "noeviction"]);
    let store = store(&server);
    let addr = serve(store.clone(), Gate::default()).await;
    let client = client();
    let k = key();
    store
        .create(&k, &record(Duration::from_secs(600), json!({"n": 1})))
        .await
        .unwrap();
    let loaded = store.load(&k).await.unwrap().unwrap();

    // Fill Redis past a limit set below what it uses: every write is refused for memory now.
    server.cli(&[
        "EVAL",
        "redis.call('SET', KEYS[1], string.rep('x', tonumber(ARGV[1])))",
        "1",
        "filler",
        "4000000",
    ]);
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "1mb"]), "OK");
    assert!(server.cli(&["SET", "probe", "x"]).starts_with("OOM"));

    // New in this release: a write Redis refuses for memory is `StoreError::Full`, not a backend
    // error nor an outage (nothing to fail over for).
    let err = store
        .create(&key(), &record(Duration::from_secs(600), json!({"n": 1})))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Full {
                backend: "redis",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_full() && !err.is_unavailable());
    let err = save_field_err(&store, &k, &loaded.version, &loaded.record).await;
    assert!(err.is_full(), "{err:?}");
    // Reads still work, and nothing was written.
    let still = store.load(&k).await.unwrap().unwrap();
    assert_eq!(Value::Object(still.record.data.clone()), json!({"n": 1}));
    // Through HTTP: 503 with the public message.
    let reply = call(&client, addr, "GET", "/count", None).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["error"], "session store full");

    // Health: still serving (reads work), degraded, Redis itself answering.
    let health = store.health().await;
    assert_eq!(health.status, HealthStatus::Degraded, "{health:?}");
    assert!(health.is_serving());
    assert_eq!(health.reason.as_deref(), Some("store full"));
    assert_eq!(health.backend("redis"), Some(true));
    let usage = store.usage().await.unwrap();
    assert!(
        usage.warnings.iter().any(|w| w.contains("of maxmemory")),
        "{:?}",
        usage.warnings
    );

    // Room again: writes go through and health is ok.
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
    assert_eq!(store.health().await.status, HealthStatus::Ok);
    assert_eq!(
        save_field(
            &store,
            &k,
            &loaded.version,
            &loaded.record,
            "n",
            json!(2),
            false
        )
        .await,
        Saved::Saved
    );
    assert_eq!(store.load(&k).await.unwrap().unwrap().record.data["n"], 2);
}

/// As [`save_field`] (setting `n = 2`), for a save that must fail: answers the error.
async fn save_field_err(
    store: &RedisStore,
    k: &StoreKey,
    version: &Version,
    base: &Record,
) -> StoreError {
    let mut changes = ChangeSet::default();
    changes.entries.insert("n".into(), Some(json!(2)));
    let mut ours = base.clone();
    changes.apply(&mut ours.data);
    ours.last_access = base.last_access.next();
    store
        .save(k, version, &Arc::new(ours), &changes)
        .await
        .unwrap_err()
}
