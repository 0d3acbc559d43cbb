//! The stress test behind `tests/races.rs`: many clients, each with two requests in flight on one
//! session, incrementing, setting and removing keys, renewing the id, logging in and out, while an
//! admin revokes users, against every store: memory, files, Redis (with the read cache) behind a proxy
//! that drops a share of the replies, and the failover store over that proxy going down and up
//! (failover and failback). Bounded in time; traffic only to 127.0.0.1.
//!
//! Every response is classified: applied (200, the session kept), not applied (the client is told to
//! drop its token: the session was gone), or unknown (5xx: the store could not say). At the end:
//!
//! * **lost**: a session holds fewer increments than were acknowledged to it;
//! * **doubled**: it holds more than were acknowledged or left unknown;
//! * **resurrected**: a session ended by an acknowledged logout or revoke answers again, or is stored.
//!
//! All three must be 0. The counts of each run are printed (`--nocapture`) and recorded in TESTING.md.

#[path = "support/chaos.rs"]
mod chaos;
mod support;

use axum::extract::Path;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use chaos::Chaos;
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sessionforge::store::redis::RedisConfig;
use sessionforge::store::{FailoverStore, FileStore, MemoryStore, SessionStore};
use sessionforge::{Session, SessionError, SessionLayer};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::ServiceExt;

const CLIENTS: usize = 12;
const USERS: usize = 4;
const RUN: Duration = Duration::from_secs(8);

static LABELS: AtomicU64 = AtomicU64::new(1);

/// The session's label (given at creation) and its counter, after the operation.
async fn op(
    session: Session,
    Path((kind, user)): Path<(String, String)>,
) -> Result<Json<Value>, SessionError> {
    let label = match session.get::<u64>("label").await? {
        Some(l) => l,
        None => {
            let l = LABELS.fetch_add(1, Ordering::Relaxed);
            session.insert("label", l).await?;
            l
        }
    };
    match kind.as_str() {
        "incr" => {
            session.increment("n", 1).await?;
        }
        "set" => session.insert("tmp", user.as_str()).await?,
        "remove" => {
            session.remove::<Value>("tmp").await?;
        }
        "renew" => session.cycle_id().await?,
        "login" => {
            session.cycle_id().await?;
            session.set_user(Some(user)).await?;
        }
        "logout" => session.destroy().await?,
        _ => {}
    }
    let n = session.get::<i64>("n").await?.unwrap_or(0);
    Ok(Json(json!({ "label": label, "n": n })))
}

#[derive(Debug, PartialEq)]
enum Answer {
    /// 200 and the session kept (the label it was applied to).
    Applied(u64),
    /// The client was told to drop its token: nothing was applied.
    Dropped,
    /// 5xx: unknown.
    Unknown,
}

#[derive(Default)]
struct Ledger {
    /// Per label: increments acknowledged, increments unknown.
    acked: HashMap<u64, u64>,
    unknown: HashMap<u64, u64>,
    /// Labels ended by an acknowledged logout, with when the logout finished.
    ended: HashMap<u64, Instant>,
    /// The user each label was last acknowledged logged in as, and when.
    user_of: HashMap<u64, (String, Instant)>,
    /// Acknowledged revokes: (user, started, finished).
    revokes: Vec<(String, Instant, Instant)>,
    /// Every revoke, acknowledged or not (one that failed may still have ended sessions).
    revokes_tried: Vec<(String, Instant, Instant)>,
    /// Every applied answer: (label, when its request started).
    seen: Vec<(u64, Instant)>,
    /// Per label, its last few requests (kind and outcome), to explain a problem.
    trail: HashMap<u64, Vec<String>>,
    /// Requests per outcome.
    applied: u64,
    dropped: u64,
    unknowns: u64,
}

struct Client {
    token: Mutex<Option<String>>,
    /// The label the current token was last seen with.
    label: Mutex<Option<u64>>,
}

async fn call(app: &Router, client: &Client, kind: &str, user: &str) -> Answer {
    let sent = client.token.lock().unwrap().clone();
    let mut req = Request::post(format!("/op/{kind}/{user}"));
    if let Some(t) = &sent {
        req = req.header(header::COOKIE, format!("id={t}"));
    }
    let res = app
        .clone()
        .oneshot(req.body(axum::body::Body::from(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let set: Vec<String> = res
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let removal = set.iter().any(|c| c.contains("Max-Age=0"));
    let fresh = set
        .iter()
        .find(|c| !c.contains("Max-Age=0"))
        .and_then(|c| c.split(';').next()?.strip_prefix("id=").map(str::to_owned));
    {
        let mut token = client.token.lock().unwrap();
        if let Some(f) = &fresh {
            *token = Some(f.clone());
        } else if removal && *token == sent {
            *token = None;
        }
    }
    if status.is_server_error() {
        return Answer::Unknown;
    }
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    if removal && kind != "logout" {
        return Answer::Dropped;
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    let label = v["label"].as_u64().unwrap();
    if kind == "logout" {
        assert!(
            removal || sent.is_none(),
            "a logout answered without a removal cookie"
        );
    } else {
        *client.label.lock().unwrap() = Some(label);
    }
    Answer::Applied(label)
}

/// How the backend misbehaves during a run.
#[derive(Clone)]
struct Trouble {
    chaos: Chaos,
    /// The share of replies the proxy drops.
    drops: f64,
    /// Whether the proxy also goes down and up (failover and failback).
    outages: bool,
}

/// Drives `store` for [`RUN`] while `trouble` happens, waits for `settled`, and checks the ledger
/// against what the store holds then.
async fn run<S: SessionStore + Clone>(
    name: &str,
    store: S,
    trouble: Option<Trouble>,
    settled: impl std::future::Future<Output = ()>,
) {
    let app = Router::new()
        .route("/op/{kind}/{user}", post(op))
        .layer(SessionLayer::new(store.clone()));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let clients: Vec<Arc<Client>> = (0..CLIENTS)
        .map(|_| {
            Arc::new(Client {
                token: Mutex::new(None),
                label: Mutex::new(None),
            })
        })
        .collect();
    let t0 = Instant::now();
    let until = t0 + RUN;
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        for w in 0..2 {
            let (app, client, ledger) = (app.clone(), client.clone(), ledger.clone());
            let user = format!("u{}", i % USERS);
            tasks.push(tokio::spawn(async move {
                let mut k = 0u64;
                while Instant::now() < until {
                    k += 1;
                    // The first of a client's two workers also renews, logs in and out (one
                    // browser tab at a time moves the session); both write concurrently.
                    let r = getrandom::u32().unwrap() % 100;
                    let kind = match r {
                        0..=54 => "incr",
                        55..=69 => "set",
                        70..=79 => "remove",
                        80..=87 if w == 0 => "renew",
                        88..=95 if w == 0 => "login",
                        96.. if w == 0 && k.is_multiple_of(3) => "logout",
                        _ => "incr",
                    };
                    let label_before = *client.label.lock().unwrap();
                    let token_before = client.token.lock().unwrap().clone();
                    let started = Instant::now();
                    let answer = call(&app, &client, kind, &user).await;
                    let finished = Instant::now();
                    let mut l = ledger.lock().unwrap();
                    let about = match &answer {
                        Answer::Applied(label) => Some(*label),
                        _ => label_before,
                    };
                    if let Some(label) = about {
                        let t = l.trail.entry(label).or_default();
                        let short = |t: &Option<String>| {
                            t.as_deref().map_or("-".to_owned(), |t| t[..6].to_owned())
                        };
                        let after = client.token.lock().unwrap().clone();
                        t.push(format!(
                            "{}ms w{w} {kind}:{answer:?} {}>{}",
                            (finished - t0).as_millis(),
                            short(&token_before),
                            short(&after)
                        ));
                        if t.len() > 6 {
                            t.remove(0);
                        }
                    }
                    match answer {
                        Answer::Applied(label) => {
                            l.applied += 1;
                            if kind == "logout" {
                                l.ended.insert(label, finished);
                            } else {
                                l.seen.push((label, started));
                                if kind == "incr" {
                                    *l.acked.entry(label).or_default() += 1;
                                }
                                if kind == "login" {
                                    l.user_of.insert(label, (user.clone(), finished));
                                }
                            }
                        }
                        Answer::Dropped => l.dropped += 1,
                        Answer::Unknown => {
                            l.unknowns += 1;
                            if let (Some(label), "incr") = (label_before, kind) {
                                *l.unknown.entry(label).or_default() += 1;
                            }
                        }
                    }
                }
            }));
        }
    }
    // The admin revokes a user now and then.
    {
        let (store, ledger) = (store.clone(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(700)).await;
                let user = format!("u{}", i % USERS);
                i += 1;
                let started = Instant::now();
                let ok = store.revoke_user_sessions(&user, None).await.is_ok();
                let mut l = ledger.lock().unwrap();
                let done = (user, started, Instant::now());
                l.revokes_tried.push(done.clone());
                if ok {
                    l.revokes.push(done);
                }
            }
        }));
    }
    // The backend misbehaves.
    if let Some(Trouble {
        chaos,
        drops,
        outages,
    }) = trouble.clone()
    {
        tasks.push(tokio::spawn(async move {
            chaos.drop_replies(drops);
            let mut down = false;
            while Instant::now() + Duration::from_millis(1500) < until {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                if outages {
                    eprintln!(
                        "{}ms proxy {}",
                        t0.elapsed().as_millis(),
                        if down { "up" } else { "down" }
                    );
                    down = !down;
                    if down {
                        chaos.go_down()
                    } else {
                        chaos.come_up()
                    }
                }
            }
            chaos.come_up();
            chaos.drop_replies(0.0);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    settled.await;

    // What the store holds now, by label.
    let mut stored: HashMap<u64, (i64, Option<String>)> = HashMap::new();
    let mut stored_at: HashMap<u64, String> = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.list(cursor.as_deref(), 500).await.expect("list");
        for s in &page.sessions {
            if let Some(l) = store.load(&s.id).await.expect("load") {
                if let Some(label) = l.record.data.get("label").and_then(Value::as_u64) {
                    let n = l.record.data.get("n").and_then(Value::as_i64).unwrap_or(0);
                    stored.insert(label, (n, l.record.user.clone()));
                    stored_at.insert(
                        label,
                        format!(
                            "{} (created {:?}, last {:?})",
                            s.id, l.record.created_at, l.record.last_access
                        ),
                    );
                }
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let l = ledger.lock().unwrap();
    let (mut lost, mut doubled, mut resurrected) = (0u64, 0u64, 0u64);
    let mut problems = Vec::new();
    // Ended by an acknowledged logout, or by a revoke of the user it was logged in as before the
    // revoke began: when it ended.
    let mut dead: HashMap<u64, Instant> = l.ended.clone();
    for (label, (user, at)) in &l.user_of {
        for (u, started, finished) in &l.revokes {
            if u == user && at < started {
                let t = dead.entry(*label).or_insert(*finished);
                *t = (*t).min(*finished);
            }
        }
    }
    // A later login of the same label (a renewal the revoke did not reach) would have moved it: a
    // label logged in again after its revoke is alive again only if that login was acknowledged.
    for (label, ended) in &dead {
        let relogged = l.user_of.get(label).is_some_and(|(_, at)| at > ended);
        if relogged {
            continue;
        }
        let answered_after = l
            .seen
            .iter()
            .filter(|(s, t)| s == label && t > ended)
            .count();
        if answered_after > 0 || stored.contains_key(label) {
            resurrected += 1;
            problems.push(format!(
                "label {label} ended, then answered {answered_after} times, stored: {:?} after {:?}",
                stored_at.get(label),
                l.trail.get(label)
            ));
        }
    }
    // A session with acknowledged increments that is neither ended nor stored vanished: lost. (A
    // session logged in before a revoke of its user finished may have been ended by it.)
    let maybe_revoked = |label: &u64| {
        l.user_of.get(label).is_some_and(|(user, at)| {
            l.revokes_tried
                .iter()
                .any(|(u, _, finished)| u == user && at < finished)
        })
    };
    for (label, acked) in &l.acked {
        if !dead.contains_key(label)
            && !maybe_revoked(label)
            && !stored.contains_key(label)
            && *acked > 0
        {
            lost += acked;
            problems.push(format!(
                "label {label}: {acked} acknowledged, the session vanished after {:?}",
                l.trail.get(label)
            ));
        }
    }
    let mut checked = HashSet::new();
    let answered: HashSet<u64> = l.seen.iter().map(|(label, _)| *label).collect();
    for (label, (n, _)) in &stored {
        // Never answered: created by a request that failed (5xx), nothing to hold it to.
        if dead.contains_key(label) || !answered.contains(label) {
            continue;
        }
        checked.insert(*label);
        let acked = l.acked.get(label).copied().unwrap_or(0) as i64;
        let unknown = l.unknown.get(label).copied().unwrap_or(0) as i64;
        if *n < acked {
            lost += (acked - n) as u64;
            problems.push(format!(
                "label {label}: {n} stored, {acked} acknowledged after {:?}",
                l.trail.get(label)
            ));
        }
        if *n > acked + unknown {
            doubled += (n - acked - unknown) as u64;
            problems.push(format!(
                "label {label}: {n} stored, {acked} acknowledged + {unknown} unknown"
            ));
        }
    }
    let dropped_replies = trouble.map_or(0, |t| t.chaos.dropped.load(Ordering::Relaxed));
    eprintln!(
        "stress {name}: {} applied, {} told to drop their token, {} unknown (5xx); {} replies dropped; \
         {} logouts, {} of {} revokes acknowledged; {} sessions checked; lost {lost}, doubled {doubled}, \
         resurrected {resurrected}",
        l.applied,
        l.dropped,
        l.unknowns,
        dropped_replies,
        l.ended.len(),
        l.revokes.len(),
        l.revokes_tried.len(),
        checked.len(),
    );
    assert!(
        l.applied > 500,
        "{name}: too little traffic to mean anything ({})",
        l.applied
    );
    assert!(
        lost == 0 && doubled == 0 && resurrected == 0,
        "{name}: lost {lost}, doubled {doubled}, resurrected {resurrected}: {problems:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_doubled_or_resurrected_in_memory() {
    run("memory", MemoryStore::new(), None, async {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_doubled_or_resurrected_in_files() {
    let dir = tempfile::tempdir().unwrap();
    run("files", FileStore::new(dir.path()), None, async {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_doubled_or_resurrected_in_redis_dropping_replies() {
    let server = support::RedisServer::start();
    let chaos = Chaos::default();
    let port = chaos::proxy(server.port(), chaos.clone()).await;
    let store = RedisConfig::new(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .with_command_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let trouble = Trouble {
        chaos,
        drops: 0.02,
        outages: false,
    };
    run("redis", store, Some(trouble), async {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_lost_doubled_or_resurrected_through_failovers_and_failbacks() {
    let server = support::RedisServer::start();
    let chaos = Chaos::default();
    let port = chaos::proxy(server.port(), chaos.clone()).await;
    let redis = RedisConfig::new(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .with_connect_timeout(Duration::from_millis(300))
        .with_command_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shutdown = sessionforge::shutdown::Shutdown::new();
    let store = FailoverStore::builder(redis, FileStore::new(dir.path()))
        .with_check_interval(Duration::from_millis(200))
        .start(&shutdown)
        .await;
    let trouble = Trouble {
        chaos,
        drops: 0.02,
        outages: true,
    };
    let settled = {
        let store = store.clone();
        async move {
            // Back on Redis, with every outage entry carried over.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let left = store
                    .fallback()
                    .list(None, 1)
                    .await
                    .map(|p| p.sessions.len());
                if !store.is_on_fallback() && left.as_ref().is_ok_and(|n| *n == 0) {
                    return;
                }
                assert!(Instant::now() < deadline, "no failback: {left:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    run("failover", store.clone(), Some(trouble), settled).await;
    let h = store.health().await;
    eprintln!("stress failover: health after {h:?}");
}
