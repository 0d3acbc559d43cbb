//! A load driver for the reliability tests: an app with a session, clients that remember every change
//! the server acknowledged, and the check that each of those changes is in the store afterwards.
//!
//! Include it with `#[path = "support/load.rs"] mod load;`.
#![allow(dead_code)]

use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use sessionforge::id::Token;
use sessionforge::store::SessionStore;
use sessionforge::{Session, SessionError};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// Panics seen anywhere in this test process since [`count_panics`] was first called.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Installs (once) a panic hook that counts panics and then reports them as usual; answers the count.
pub fn count_panics() -> usize {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info)
        }));
    });
    PANICS.load(Ordering::SeqCst)
}

/// The app under load: `POST /set/{key}` stores `key` (and bumps a shared counter), `GET /keys`
/// lists the keys, `POST /logout` destroys the session.
pub fn app() -> Router {
    Router::new()
        .route(
            "/set/{key}",
            post(|s: Session, Path(key): Path<String>| async move {
                s.insert(&key, true).await?;
                // Two counters: one read-modify-write (last writer wins under concurrency), one
                // incremented (applied to the stored value: every increment counts).
                let hits: u64 = s.get("hits").await?.unwrap_or(0);
                s.insert("hits", hits + 1).await?;
                s.increment("counted", 1).await?;
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
            "/logout",
            post(|s: Session| async move {
                s.destroy().await?;
                Ok::<_, SessionError>("bye")
            }),
        )
}

/// What one request ended with.
#[derive(Debug)]
pub struct Outcome {
    /// The status, or `None` when the request failed at the transport (refused, reset, timed out).
    pub status: Option<StatusCode>,
    /// How long it took.
    pub elapsed: Duration,
    /// The session cookie the response set, if any (`Some("")` for a removal).
    pub set_cookie: Option<String>,
    /// The response body (empty when the request failed at the transport): an error's message.
    pub body: String,
}

/// An HTTP client for loopback, one connection pool.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request with `cookie`, never panicking: transport failures are outcomes too.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    limit: Duration,
) -> Outcome {
    let start = Instant::now();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("id={c}"));
    }
    let req = req.body(Full::default()).expect("a well-formed request");
    let res = tokio::time::timeout(limit, async {
        let res = client.request(req).await.ok()?;
        let status = res.status();
        let set_cookie = res
            .headers()
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|c| c.split(';').next()?.strip_prefix("id=").map(str::to_owned))
            .next_back();
        // Read the body whole: the exchange is done only then.
        let body = res.into_body().collect().await.ok()?.to_bytes();
        Some((
            status,
            set_cookie,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    })
    .await
    .ok()
    .flatten();
    let elapsed = start.elapsed();
    match res {
        Some((status, set_cookie, body)) => Outcome {
            status: Some(status),
            elapsed,
            set_cookie,
            body,
        },
        None => Outcome {
            status: None,
            elapsed,
            set_cookie: None,
            body: String::new(),
        },
    }
}

/// Figures of a load run.
#[derive(Debug, Default)]
pub struct Tally {
    pub sent: usize,
    pub ok: usize,
    /// Non-2xx answers and transport failures.
    pub non_2xx: usize,
    pub transport_errors: usize,
    /// Responses that started a fresh session for a client that had one (its session was out of
    /// reach, e.g. only in a Redis that was down).
    pub fresh_sessions: usize,
    pub longest: Duration,
    /// Every change the server acknowledged: (token that holds it, key).
    pub acked: Vec<(String, String)>,
    /// Statuses of non-2xx answers, for the report.
    pub bad: Vec<String>,
}

impl Tally {
    pub fn absorb(&mut self, other: Tally) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.non_2xx += other.non_2xx;
        self.transport_errors += other.transport_errors;
        self.fresh_sessions += other.fresh_sessions;
        self.longest = self.longest.max(other.longest);
        self.acked.extend(other.acked);
        self.bad.extend(other.bad);
    }
}

/// One client: sends `POST /set/<name>-<i>` one after another until `stop` says so or `max` requests
/// are sent, following the cookie it is given, and records every acknowledged key under the token
/// that holds it.
pub async fn run_client(
    addr: SocketAddr,
    name: String,
    max: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    limit: Duration,
) -> Tally {
    let client = client();
    let mut cookie: Option<String> = None;
    let mut t = Tally::default();
    for i in 0..max {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let key = format!("{name}-{i}");
        let o = send(
            &client,
            addr,
            Method::POST,
            &format!("/set/{key}"),
            cookie.as_deref(),
            limit,
        )
        .await;
        t.sent += 1;
        t.longest = t.longest.max(o.elapsed);
        match o.status {
            Some(s) if s.is_success() => {
                t.ok += 1;
                if let Some(new) = o.set_cookie.filter(|c| !c.is_empty()) {
                    if cookie.as_ref().is_some_and(|old| *old != new) {
                        t.fresh_sessions += 1;
                    }
                    cookie = Some(new);
                }
                let holder = cookie.clone().expect("a session after a write");
                t.acked.push((holder, key));
            }
            Some(s) => {
                t.non_2xx += 1;
                t.bad.push(format!("{s} after {:?}: {}", o.elapsed, o.body));
            }
            None => {
                t.non_2xx += 1;
                t.transport_errors += 1;
                t.bad.push(format!("transport error after {:?}", o.elapsed));
            }
        }
    }
    t
}

/// Checks every acknowledged change against `store`: answers (keys lost, sessions lost).
pub async fn verify<S: SessionStore>(store: &S, acked: &[(String, String)]) -> (usize, usize) {
    let mut by_token: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (tok, key) in acked {
        by_token.entry(tok).or_default().push(key);
    }
    let (mut keys_lost, mut sessions_lost) = (0, 0);
    for (tok, keys) in by_token {
        let key = Token::parse(tok)
            .expect("the server issues well-formed tokens")
            .store_key();
        match store.load(&key).await {
            Ok(Some(loaded)) => {
                keys_lost += keys
                    .iter()
                    .filter(|k| !loaded.record.data.contains_key(**k))
                    .count()
            }
            _ => {
                sessions_lost += 1;
                keys_lost += keys.len();
            }
        }
    }
    (keys_lost, sessions_lost)
}

/// Shared handle for an outcome log.
pub type Shared<T> = Arc<Mutex<T>>;
