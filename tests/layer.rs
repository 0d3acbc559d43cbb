//! The session layer end to end: real Axum servers on loopback, a hand-held cookie, and stores that
//! record every call.

#[path = "support/apps.rs"]
mod apps;
#[path = "support/http.rs"]
mod http_support;
#[path = "support/recording.rs"]
mod recording;

use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use http_support::{raw, serve, Browser};
use recording::{Call, Recording};
use sessionforge::expiry::{Clock, ManualClock};
use sessionforge::id::StoreKey;
use sessionforge::id::Token;
use sessionforge::store::{
    ChangeSet, Created, Loaded, MemoryStore, Record, Renewed, Replaced, SessionStore, StoreError,
    Version,
};
use sessionforge::{Session, SessionError, SessionLayer, StoreErrorPolicy};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The length of a native token (43 base64url characters: 256 bits).
const TOKEN_LEN: usize = 43;

/// A memory store reading time from `clock` (the layer over it reads the same clock).
fn memory_at(clock: &ManualClock) -> MemoryStore {
    MemoryStore::builder().with_clock(clock.clone()).build()
}

fn app(layer: SessionLayer) -> Router {
    apps::counter()
        .route("/untouched", get(|| async { "hi" }))
        .route(
            "/set/{k}",
            post(|s: Session, Path(k): Path<String>| async move {
                s.insert(&k, true).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/keys",
            get(|s: Session| async move {
                let mut keys = s.keys().await?;
                keys.sort();
                Ok::<_, SessionError>(keys.join(","))
            }),
        )
        .route(
            "/login",
            post(|s: Session| async move {
                s.cycle_id().await?;
                s.set_user(Some("alice".into())).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/clear",
            post(|s: Session| async move {
                s.clear().await?;
                Ok::<_, SessionError>("cleared")
            }),
        )
        .route(
            "/cached",
            post(|s: Session| async move {
                s.insert("n", 1).await?;
                Ok::<_, SessionError>(([("cache-control", "private, max-age=5")], "ok"))
            }),
        )
        .route(
            "/big",
            post(|s: Session, body: String| async move {
                s.insert("big", body).await?;
                Ok::<_, SessionError>("stored")
            }),
        )
        .layer(layer)
}

async fn start(layer: SessionLayer) -> Browser {
    Browser::new(serve(app(layer)).await)
}

#[tokio::test]
async fn a_counter_survives_across_requests_through_axum() {
    let mut b = start(SessionLayer::new(MemoryStore::new())).await;
    for want in 1..=3 {
        let r = b.post("/incr", "").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, want.to_string());
    }
    assert_eq!(b.get("/read").await.body, "3");
    // A second browser has its own session.
    let mut other = Browser::new(b.base.trim_start_matches("http://").parse().unwrap());
    assert_eq!(other.post("/incr", "").await.body, "1");
}

#[tokio::test]
async fn the_cookie_carries_the_secure_defaults_and_no_store() {
    let mut b = start(SessionLayer::new(MemoryStore::new())).await;
    let r = b.post("/incr", "").await;
    let c = &r.set_cookies()[0];
    for part in [
        "id=",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(c.contains(part), "{c} lacks {part}");
    }
    let max_age: i64 = c
        .split("Max-Age=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((86_390..=86_400).contains(&max_age), "{c}");
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(b.cookie.as_ref().unwrap().len(), TOKEN_LEN);
}

#[tokio::test]
async fn cookie_options_are_applied() {
    let layer = SessionLayer::new(MemoryStore::new())
        .with_cookie_name("sid")
        .with_domain("example.test")
        .with_path("/app")
        .with_same_site(sessionforge::cookie::SameSite::Strict)
        .with_browser_session_cookie();
    let mut b = start(layer).await;
    let r = b.post("/incr", "").await;
    let c = &r.set_cookies()[0];
    assert!(c.starts_with("sid="), "{c}");
    for part in ["Domain=example.test", "Path=/app", "SameSite=Strict"] {
        assert!(c.contains(part), "{c} lacks {part}");
    }
    assert!(!c.contains("Max-Age"), "{c}");

    let layer = SessionLayer::new(MemoryStore::new())
        .with_domain("example.test")
        .with_secure(false)
        .with_host_prefix();
    let mut b = start(layer).await;
    let c = b.post("/incr", "").await.set_cookies()[0].clone();
    assert!(c.starts_with("__Host-id="), "{c}");
    assert!(c.contains("Secure") && c.contains("Path=/"), "{c}");
    assert!(!c.contains("Domain"), "{c}");
}

#[tokio::test]
async fn a_handlers_own_cache_control_is_kept() {
    let mut b = start(SessionLayer::new(MemoryStore::new())).await;
    let r = b.post("/cached", "").await;
    assert!(!r.set_cookies().is_empty());
    assert_eq!(r.headers["cache-control"], "private, max-age=5");
}

#[tokio::test]
async fn untouched_sessions_cost_no_store_call_and_set_no_cookie() {
    let store = Recording::new(MemoryStore::new());
    let mut b = start(SessionLayer::new(store.clone())).await;
    let r = b.get("/untouched").await;
    assert!(r.set_cookies().is_empty());
    assert!(store.take().is_empty());
    // Even with a valid cookie presented, an untouched session is not loaded.
    b.post("/incr", "").await;
    store.take();
    let r = b.get("/untouched").await;
    assert!(r.set_cookies().is_empty());
    assert_eq!(store.take(), vec![]);
}

#[tokio::test]
async fn an_empty_session_is_never_stored() {
    let store = Recording::new(MemoryStore::new());
    let mut b = start(SessionLayer::new(store.clone())).await;
    let r = b.get("/read").await;
    assert_eq!(r.body, "0");
    assert!(r.set_cookies().is_empty());
    // No cookie presented: nothing to load, nothing to create.
    assert_eq!(store.take(), vec![]);
    assert_eq!(store.inner.count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_read_only_request_writes_nothing_until_the_touch_interval() {
    let clock = ManualClock::starting_now();
    let store = Recording::new(memory_at(&clock));
    let layer = SessionLayer::new(store.clone()).with_idle_timeout(Duration::from_secs(400));
    let mut b = start(layer).await;
    b.post("/incr", "").await;
    store.take();
    let r = b.get("/read").await;
    assert_eq!(r.body, "1");
    assert!(r.set_cookies().is_empty());
    let calls = store.take();
    assert!(matches!(calls.as_slice(), [Call::Load(_)]), "{calls:?}");
    // A quarter of the idle window later, a read refreshes the expiry once.
    clock.advance(Duration::from_secs(100));
    let r = b.get("/read").await;
    let calls = store.take();
    assert!(
        matches!(calls.as_slice(), [Call::Load(_), Call::Save(_)]),
        "{calls:?}"
    );
    assert!(r.cookie("id").is_some(), "the touch refreshes Max-Age");
    // ... and the next read does not write again.
    b.get("/read").await;
    let calls = store.take();
    assert!(matches!(calls.as_slice(), [Call::Load(_)]), "{calls:?}");
}

#[tokio::test]
async fn a_write_inside_the_touch_window_keeps_the_expiry_and_sends_no_cookie() {
    let clock = ManualClock::starting_now();
    let store = memory_at(&clock);
    let layer = SessionLayer::new(store.clone()).with_idle_timeout(Duration::from_secs(400));
    let mut b = start(layer).await;
    b.post("/incr", "").await;
    let key = Token::parse(b.cookie.as_ref().unwrap())
        .unwrap()
        .store_key();
    let first = store.load(&key).await.unwrap().unwrap().record;
    // 99 s later (under a quarter of the idle window): the data is saved, the expiry stays, no cookie.
    clock.advance(Duration::from_secs(99));
    let r = b.post("/incr", "").await;
    assert_eq!(r.body, "2");
    assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
    let second = store.load(&key).await.unwrap().unwrap().record;
    assert_eq!(second.data["n"], 2);
    assert_eq!(second.expires, first.expires);
    assert_eq!(
        second.last_access,
        clock.now(),
        "last access still follows writes"
    );
    // Once the expiry can move by the window, a write moves it and sends the cookie again.
    clock.advance(Duration::from_secs(2));
    let r = b.post("/incr", "").await;
    let c = r.cookie("id").expect("the refreshed cookie");
    assert!(r.set_cookies()[0].contains("Max-Age=400"), "{c}");
    let third = store.load(&key).await.unwrap().unwrap().record;
    assert_eq!(third.expires, clock.now().plus(Duration::from_secs(400)));
    assert_eq!(third.data["n"], 3);
}

#[tokio::test]
async fn the_idle_timeout_ends_an_unused_session() {
    let clock = ManualClock::starting_now();
    let store = memory_at(&clock);
    let layer = SessionLayer::new(store)
        .with_idle_timeout(Duration::from_secs(60))
        .with_absolute_timeout(Duration::from_secs(3600));
    let mut b = start(layer).await;
    b.post("/incr", "").await;
    clock.advance(Duration::from_secs(59));
    assert_eq!(b.post("/incr", "").await.body, "2");
    // The write moved the idle window; 59 s later the session is still there.
    clock.advance(Duration::from_secs(59));
    assert_eq!(b.get("/read").await.body, "2");
    clock.advance(Duration::from_secs(61));
    assert_eq!(b.get("/read").await.body, "0");
}

#[tokio::test]
async fn the_absolute_timeout_ends_even_a_busy_session() {
    let clock = ManualClock::starting_now();
    let store = memory_at(&clock);
    let layer = SessionLayer::new(store)
        .with_idle_timeout(Duration::from_secs(60))
        .with_absolute_timeout(Duration::from_secs(150));
    let mut b = start(layer).await;
    for _ in 0..3 {
        b.post("/incr", "").await;
        clock.advance(Duration::from_secs(50));
    }
    // 150 s after creation, although it was used 50 s ago.
    assert_eq!(b.get("/read").await.body, "0");
    // The cookie's Max-Age never promised more than the deadline.
    let mut b2 = start(
        SessionLayer::new(memory_at(&clock))
            .with_idle_timeout(Duration::from_secs(60))
            .with_absolute_timeout(Duration::from_secs(30)),
    )
    .await;
    let c = b2.post("/incr", "").await.set_cookies()[0].clone();
    assert!(c.contains("Max-Age=30"), "{c}");
}

#[tokio::test]
async fn cycle_id_writes_the_new_key_before_deleting_the_old_one() {
    let store = Recording::new(MemoryStore::new());
    let mut b = start(SessionLayer::new(store.clone())).await;
    b.post("/incr", "").await;
    let old = b.cookie.clone().unwrap();
    store.take();
    b.post("/login", "").await;
    let new = b.cookie.clone().unwrap();
    assert_ne!(old, new);
    let old_key = Token::parse(&old).unwrap().store_key();
    let new_key = Token::parse(&new).unwrap().store_key();
    // The old key goes by a compare-and-swap to nothing (`replace(old, loaded version, None)`, the
    // provided `renew`), not an unconditional delete: a session changed meanwhile is merged and moved
    // again rather than lost. Still: the new key first, then the old one removed.
    assert_eq!(
        store.take(),
        vec![
            Call::Load(old_key),
            Call::Create(new_key),
            Call::Replace(old_key)
        ]
    );
    // The data moved with the session, the old token is dead.
    assert_eq!(b.get("/read").await.body, "1");
    assert!(store.inner.load(&old_key).await.unwrap().is_none());
    let rec = store.inner.load(&new_key).await.unwrap().unwrap().record;
    assert_eq!(rec.user.as_deref(), Some("alice"));
}

/// A memory store whose renewals, while `lose` is set, move the session and then answer
/// "unavailable": the answer lost on its way back, as over a dropped Redis connection.
#[derive(Clone)]
struct LostRenewals {
    inner: MemoryStore,
    lose: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SessionStore for LostRenewals {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        self.inner.load(key).await
    }
    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        self.inner.create(key, record).await
    }
    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> Result<Replaced, StoreError> {
        self.inner.replace(key, expected, record).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
    async fn renew(
        &self,
        old: &StoreKey,
        new: &StoreKey,
        base: &Version,
        ours: &std::sync::Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Renewed, StoreError> {
        let moved = self.inner.renew(old, new, base, ours, changes).await?;
        if self.lose.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                backend: "memory",
                source: format!("the answer ({moved:?}) was lost").into(),
            });
        }
        Ok(moved)
    }
}

#[tokio::test]
async fn a_renewal_whose_answer_was_lost_after_the_move_still_hands_out_the_new_token() {
    let store = LostRenewals {
        inner: MemoryStore::new(),
        lose: Default::default(),
    };
    let mut b = start(SessionLayer::new(store.clone())).await;
    b.post("/incr", "").await;
    b.post("/incr", "").await;
    let old = b.cookie.clone().unwrap();
    // The session moved to the new key; only the answer went missing. The client must be given the
    // token that reaches its session.
    store.lose.store(true, Ordering::SeqCst);
    let res = b.post("/login", "").await;
    store.lose.store(false, Ordering::SeqCst);
    assert_eq!(res.status, StatusCode::OK, "{}", res.body);
    let new = b.cookie.clone().unwrap();
    assert_ne!(old, new);
    let old_key = Token::parse(&old).unwrap().store_key();
    assert!(store.inner.load(&old_key).await.unwrap().is_none());
    assert_eq!(b.get("/read").await.body, "2");
}

#[tokio::test]
async fn destroy_deletes_server_side_and_sends_a_removal_cookie() {
    let store = MemoryStore::new();
    let mut b = start(SessionLayer::new(store.clone())).await;
    b.post("/incr", "").await;
    let token = b.cookie.clone().unwrap();
    let r = b.post("/logout", "").await;
    let c = r.set_cookies()[0].clone();
    assert!(c.starts_with("id=;"), "{c}");
    assert!(c.contains("Max-Age=0"), "{c}");
    assert!(b.cookie.is_none());
    let key = Token::parse(&token).unwrap().store_key();
    assert!(store.load(&key).await.unwrap().is_none());
    // Replaying the old cookie gets a fresh session.
    b.cookie = Some(token);
    assert_eq!(b.get("/read").await.body, "0");
}

#[tokio::test]
async fn clearing_every_key_removes_the_session() {
    let store = MemoryStore::new();
    let mut b = start(SessionLayer::new(store.clone())).await;
    b.post("/incr", "").await;
    let key = Token::parse(b.cookie.as_ref().unwrap())
        .unwrap()
        .store_key();
    let r = b.post("/clear", "").await;
    assert!(r.set_cookies()[0].contains("Max-Age=0"));
    assert!(store.load(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn bad_cookies_get_a_fresh_session_and_never_a_server_error() {
    let store = Recording::new(MemoryStore::new());
    let addr = serve(app(SessionLayer::new(store.clone()))).await;
    let client = http_support::client();
    let unknown = Token::generate();
    let huge = format!("id={}", "A".repeat(5000));
    let cases: Vec<Vec<u8>> = vec![
        format!("id={}", unknown.as_str()).into_bytes(),
        b"id=not-a-token".to_vec(),
        b"id=../../../etc/passwd".to_vec(),
        huge.into_bytes(),
        b"id=\xff\xfe\xfd".to_vec(),
        b"id=%00%00".to_vec(),
        b";;;;=;id".to_vec(),
        // Duplicates (cookie tossing): only the first well-formed one is looked up.
        format!(
            "id={}; id={}",
            Token::generate().as_str(),
            Token::generate().as_str()
        )
        .into_bytes(),
        // Non-canonical base64url: refused without a lookup.
        format!("id={}", "B".repeat(43)).into_bytes(),
    ];
    for cookie in cases {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/incr"))
            .header("cookie", http::HeaderValue::from_bytes(&cookie).unwrap())
            .body(Full::default())
            .unwrap();
        let r = raw(&client, req).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{:?}",
            String::from_utf8_lossy(&cookie)
        );
        assert_eq!(r.body, "1", "a bad cookie must not reach existing data");
        let new = r.cookie("id").expect("a fresh session");
        assert_ne!(new, unknown.as_str());
    }
    // Only well-formed tokens ever reached the store as a lookup.
    let loads = store
        .take()
        .into_iter()
        .filter(|c| matches!(c, Call::Load(_)))
        .count();
    assert_eq!(
        loads, 2,
        "the unknown token and the first of the duplicates"
    );
}

#[tokio::test]
async fn signed_cookies_rotate_keys_and_tampering_gets_a_fresh_session() {
    use sessionforge::cookie::Key;
    let store = MemoryStore::new();
    let old = Key::generate();
    let new = Key::generate();
    let mut b = start(SessionLayer::new(store.clone()).with_signing_keys([old.clone()])).await;
    b.post("/incr", "").await;
    let signed = b.cookie.clone().unwrap();
    assert!(signed.len() > TOKEN_LEN, "the cookie carries a signature");
    // Rotated: the new key signs, the old one still verifies.
    let mut rotated =
        start(SessionLayer::new(store.clone()).with_signing_keys([new.clone(), old])).await;
    rotated.cookie = Some(signed.clone());
    assert_eq!(rotated.post("/incr", "").await.body, "2");
    // Tampered, or the bare token without a signature: a fresh session.
    let mut tampered = signed.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let mut t = start(SessionLayer::new(store.clone()).with_signing_keys([new])).await;
    t.cookie = Some(String::from_utf8(tampered).unwrap());
    assert_eq!(t.post("/incr", "").await.body, "1");
    t.cookie = Some(signed[signed.len() - TOKEN_LEN..].to_owned());
    assert_eq!(t.post("/incr", "").await.body, "1");
}

#[tokio::test]
async fn concurrent_requests_setting_different_keys_all_land() {
    let mut b = start(SessionLayer::new(MemoryStore::new())).await;
    b.post("/incr", "").await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut c = b.clone();
        tasks.push(tokio::spawn(async move {
            c.post(&format!("/set/k{i:02}"), "").await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let keys = b.get("/keys").await.body;
    for i in 0..64 {
        assert!(keys.contains(&format!("k{i:02}")), "k{i:02} lost: {keys}");
    }
    assert!(keys.contains('n'));
}

#[tokio::test]
async fn a_failing_store_answers_a_json_503_not_an_empty_500() {
    let store = Recording::new(MemoryStore::new());
    let mut b = start(SessionLayer::new(store.clone())).await;
    b.post("/incr", "").await;
    store.fail.store(true, Ordering::SeqCst);
    // The load fails inside the handler: the handler returns the error.
    let r = b.post("/incr", "").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.json()["error"], "session store unavailable");
    // A new session whose save fails: the layer itself answers.
    let mut fresh = Browser::new(b.base.trim_start_matches("http://").parse().unwrap());
    let r = fresh.post("/incr", "").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"], "session store unavailable");
    assert!(r.set_cookies().is_empty());
}

#[tokio::test]
async fn the_ignore_policy_keeps_the_handlers_response() {
    let store = Recording::new(MemoryStore::new());
    store.fail.store(true, Ordering::SeqCst);
    let mut b =
        start(SessionLayer::new(store.clone()).with_store_error_policy(StoreErrorPolicy::Ignore))
            .await;
    // No cookie: nothing to load, the handler runs; the failed save is logged and ignored.
    let r = b.post("/incr", "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "1");
    assert!(r.set_cookies().is_empty());
}

#[tokio::test]
async fn an_oversized_session_is_refused_with_413_and_the_old_data_kept() {
    let mut b = start(SessionLayer::new(MemoryStore::new()).with_max_size(1024)).await;
    b.post("/incr", "").await;
    let r = b.post("/big", &"x".repeat(2000)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json()["error"], "session data too large");
    assert_eq!(b.get("/read").await.body, "1");
}

#[tokio::test]
async fn the_header_transport_returns_new_tokens_in_the_same_header() {
    let layer = SessionLayer::new(MemoryStore::new())
        .with_header(http::HeaderName::from_static("x-session-id"));
    let addr = serve(app(layer)).await;
    let client = http_support::client();
    let send = |token: Option<String>| {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{addr}/incr"));
        if let Some(t) = token {
            req = req.header("x-session-id", t);
        }
        raw(&client, req.body(Full::default()).unwrap())
    };
    let r = send(None).await;
    assert!(r.set_cookies().is_empty());
    let token = r.headers["x-session-id"].to_str().unwrap().to_owned();
    assert_eq!(token.len(), TOKEN_LEN);
    let r = send(Some(token.clone())).await;
    assert_eq!(r.body, "2");
    assert!(
        r.headers.get("x-session-id").is_none(),
        "a known token is not resent"
    );
    let r = send(Some("garbage".into())).await;
    assert_eq!(r.body, "1");
}

#[tokio::test]
async fn readiness_and_errors_of_the_inner_service_pass_through() {
    use tower::{Layer, Service};
    let (mock, mut handle) = tower_test::mock::pair::<Request<()>, http::Response<String>>();
    let mut svc = SessionLayer::new(MemoryStore::new()).layer(mock);
    handle.allow(0);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_pending());
    handle.allow(1);
    assert!(matches!(
        svc.poll_ready(&mut cx),
        std::task::Poll::Ready(Ok(()))
    ));
    let fut = svc.call(Request::new(()));
    let (req, send) = handle.next_request().await.unwrap();
    assert!(req.extensions().get::<Session>().is_some());
    send.send_error("inner failure");
    let err = fut.await.unwrap_err();
    assert_eq!(err.to_string(), "inner failure");
}

#[tokio::test]
async fn without_the_layer_the_extractor_says_what_is_missing() {
    let router = Router::new().route("/", get(|s: Session| async move { format!("{s:?}") }));
    let mut b = Browser::new(serve(router).await);
    let r = b.get("/").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.body.contains("SessionLayer missing"), "{}", r.body);
}

#[tokio::test]
async fn concurrent_increments_all_count_and_mix_with_sets_in_one_request() {
    let store = MemoryStore::new();
    let router = Router::new()
        .route(
            "/inc",
            post(|s: Session| async move {
                Ok::<_, SessionError>(s.increment("n", 1).await?.to_string())
            }),
        )
        .route(
            "/mix",
            post(|s: Session| async move {
                // +5, then set to 100, then +1: the request ends at an absolute 101.
                s.increment("m", 5).await?;
                s.insert("m", 100).await?;
                let v = s.increment("m", 1).await?;
                // An increment on a non-integer starts from 0.
                s.insert("t", "text").await?;
                let t = s.increment("t", -2).await?;
                Ok::<_, SessionError>(format!("{v} {t}"))
            }),
        )
        .layer(SessionLayer::new(store.clone()));
    let mut b = Browser::new(serve(router).await);
    assert_eq!(b.post("/inc", "").await.body, "1");
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let mut c = b.clone();
        tasks.push(tokio::spawn(async move { c.post("/inc", "").await.status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let key = Token::parse(b.cookie.as_ref().unwrap())
        .unwrap()
        .store_key();
    let data = store.load(&key).await.unwrap().unwrap().record.data.clone();
    assert_eq!(data["n"], 65, "every one of 65 increments counted");
    assert_eq!(b.post("/mix", "").await.body, "101 -2");
    let data = store.load(&key).await.unwrap().unwrap().record.data.clone();
    assert_eq!(
        (data["m"].clone(), data["t"].clone()),
        (101.into(), (-2).into())
    );
}

/// The first `Max-Age` of the `Set-Cookie` headers of `r`.
fn max_age_of(r: &http_support::Reply) -> i64 {
    let c = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("id="))
        .expect("a session cookie");
    c.split("Max-Age=")
        .nth(1)
        .unwrap_or_else(|| panic!("no Max-Age in {c}"))
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_response_that_used_the_session_is_private_and_varies_on_the_cookie() {
    let mut b = start(SessionLayer::new(MemoryStore::new())).await;
    // Untouched: no caching headers added.
    let r = b.get("/untouched").await;
    assert!(r.headers.get("cache-control").is_none(), "{:?}", r.headers);
    assert!(r.headers.get("vary").is_none(), "{:?}", r.headers);
    // Read, without any session: nothing stored, no cookie, but still private.
    let r = b.get("/read").await;
    assert!(r.set_cookies().is_empty());
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["vary"], "cookie");
    // Written (a cookie is set) ...
    let r = b.post("/incr", "").await;
    assert!(r.cookie("id").is_some());
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["vary"], "cookie");
    // ... and read back from the store, with nothing to write and no cookie sent.
    let r = b.get("/read").await;
    assert_eq!(r.body, "1");
    assert!(r.set_cookies().is_empty());
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers.get_all("vary").iter().count(), 1);
    assert_eq!(r.headers["vary"], "cookie");
    // A handler's own Cache-Control stands; Vary is added once.
    let r = b.post("/cached", "").await;
    assert_eq!(r.headers["cache-control"], "private, max-age=5");
    assert_eq!(r.headers["vary"], "cookie");

    // With the header transport the response varies on that header.
    let layer = SessionLayer::new(MemoryStore::new())
        .with_header(http::HeaderName::from_static("x-session-id"));
    let addr = serve(app(layer)).await;
    let req = Request::get(format!("http://{addr}/read"))
        .body(Full::default())
        .unwrap();
    let r = raw(&http_support::client(), req).await;
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["vary"], "x-session-id");
}

#[tokio::test]
async fn a_malformed_cookie_is_removed_when_the_handler_uses_the_session() {
    let store = Recording::new(MemoryStore::new());
    let addr = serve(app(SessionLayer::new(store.clone()))).await;
    let client = http_support::client();
    let send = |path: &str, cookie: Option<&str>| {
        let mut req = Request::get(format!("http://{addr}{path}"));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        raw(&client, req.body(Full::default()).unwrap())
    };
    // Used (read only): the client is told to drop the value it keeps sending.
    let r = send("/read", Some("theme=dark; id=malformed")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "0");
    let cookies = r.set_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(cookies[0].starts_with("id=;"), "{cookies:?}");
    assert!(cookies[0].contains("Max-Age=0"), "{cookies:?}");
    assert!(cookies[0].contains("Path=/"), "{cookies:?}");
    // Not used: the layer does nothing at all.
    let r = send("/untouched", Some("id=malformed")).await;
    assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
    // No cookie of ours: nothing to remove.
    let r = send("/read", Some("theme=dark")).await;
    assert!(r.set_cookies().is_empty(), "{:?}", r.set_cookies());
    // The malformed value never reached the store.
    assert_eq!(store.take(), vec![]);
}

#[tokio::test]
async fn a_live_sessions_cookie_never_gets_max_age_zero() {
    let clock = ManualClock::new(sessionforge::expiry::Timestamp::from_millis(1_000_000));
    let store = memory_at(&clock);
    let deadline_clock = clock.clone();
    let router = app(SessionLayer::new(store.clone())
        .with_idle_timeout(Duration::from_secs(1))
        .with_absolute_timeout(Duration::from_secs(1)));
    let mut b = start_router(router).await;
    // Created: the whole second.
    let r = b.post("/incr", "").await;
    assert_eq!(max_age_of(&r), 1);
    // 999 ms later the session expires in 1 ms; a renewal sends the cookie again: Max-Age rounds up
    // to 1, where rounding down would have told the browser to drop a live session.
    clock.advance(Duration::from_millis(999));
    let r = b.post("/login", "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(max_age_of(&r), 1, "{:?}", r.set_cookies());
    assert!(b.cookie.is_some(), "the browser keeps the cookie");
    assert_eq!(b.get("/read").await.body, "1", "the session is alive");
    // At its expiry it is gone.
    clock.advance(Duration::from_millis(1));
    assert_eq!(b.get("/read").await.body, "0");

    // A handler moving the deadline to 1 ms from now.
    let router = Router::new()
        .route(
            "/soon",
            post(move |s: Session| {
                let now = deadline_clock.now();
                async move {
                    s.insert("n", 1).await?;
                    s.set_deadline(now.plus(Duration::from_millis(1))).await?;
                    Ok::<_, SessionError>("ok")
                }
            }),
        )
        .layer(SessionLayer::new(store).with_idle_timeout(Duration::from_secs(1)));
    let mut b = start_router(router).await;
    let r = b.post("/soon", "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(max_age_of(&r), 1, "{:?}", r.set_cookies());

    // Every request touching (touch_after 0) with the expiry 1 ms away at the deadline.
    let router = app(SessionLayer::new(memory_at(&clock))
        .with_idle_timeout(Duration::from_secs(1))
        .with_absolute_timeout(Duration::from_secs(1))
        .with_touch_after(0.0));
    let mut b = start_router(router).await;
    b.post("/incr", "").await;
    clock.advance(Duration::from_millis(999));
    let r = b.get("/read").await;
    assert_eq!(r.body, "1");
    assert_eq!(max_age_of(&r), 1, "{:?}", r.set_cookies());
}

async fn start_router(router: Router) -> Browser {
    Browser::new(serve(router).await)
}
