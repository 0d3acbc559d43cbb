//! The admin router (`AdminService::router()`, an axum `Router` behind its auth route layer) driven with
//! arbitrary methods, paths, query strings, headers, bodies and peers, under the four auth modes
//! (`loopback_only`, `bearer`, `bearer_or_loopback`, `insecure_open_to_anyone`), mounted at the root
//! or nested under `/api/sessions` beside the public health at `/api/health`. The store is a
//! `MemoryStore` (every capability) holding a fixed set of sessions, restored before each input.
//!
//! Checked on every request:
//!
//! * never a panic, never a 5xx: no 500, no 501 (the memory store can do everything), and a 503 only
//!   as the documented answer of `GET /redis-info` for a store with no backend information;
//! * a 4xx changes nothing, and neither does a safe method (`GET`, `HEAD`, `OPTIONS`: the cross-site
//!   rule lets those through, so they must not write);
//! * nothing adds, recreates or rewrites a session: requests can only delete;
//! * whatever changed the store or answered data (a 2xx other than the dashboard's assets and the
//!   public health) passed the mode's checks, as far as the request shows: the bearer token, or a
//!   loopback socket peer (axum's `ConnectInfo` or `PeerAddr`) asking for a loopback `Host` without
//!   proxy headers; and a state-changing request never passes with `Sec-Fetch-Site: cross-site` or an
//!   opaque `Origin`, in any mode;
//! * mounted at the root (the router's own answers): every response has `Cache-Control: no-store`,
//!   every error is JSON `{"error": "..."}`, every JSON body parses.
#![no_main]

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::Router;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use sessionforge::admin::{AdminAuth, AdminService, PeerAddr};
use sessionforge::expiry::{ManualClock, Timestamp};
use sessionforge::id::StoreKey;
use sessionforge::store::{Loaded, MemoryStore, Record, SessionStore};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;
use tower::ServiceExt;

const TOKEN: &str = "s3cret";
/// The store's (manual) clock: the sessions below never expire while the fuzzer runs.
const NOW: u64 = 1_752_360_300_000;
const HOUR: Duration = Duration::from_secs(3600);

/// The auth modes, in the order of `World::apps`.
const LOOPBACK: usize = 0;
const BEARER: usize = 1;
const BEARER_OR_LOOPBACK: usize = 2;
const OPEN: usize = 3;
const MODES: usize = 4;

/// The sessions the store holds before every input: (user, user agent, expired).
const SEEDS: [(Option<&str>, Option<&str>, bool); 6] = [
    (Some("alice"), Some("curl/8.5.0"), false),
    (Some("alice"), None, false),
    (
        Some("bob"),
        Some("Mozilla/5.0 <script>alert(1)</script>"),
        false,
    ),
    (Some("a/b %2F é?#"), None, false),
    (None, Some("anonymous"), false),
    (Some("alice"), None, true),
];

#[derive(Arbitrary, Debug)]
enum MethodSel {
    Get,
    Head,
    Post,
    Delete,
    Put,
    Patch,
    Options,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum KeySel {
    /// One of the stored sessions' keys.
    Known(u8),
    /// A well-formed key that is not stored.
    Absent(u8),
    Text(String),
    /// Arbitrary bytes, percent-encoded.
    Encoded(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum UserSel {
    Known(u8),
    Text(String),
    Encoded(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Route {
    Root,
    Stats,
    Sessions,
    Session(KeySel),
    Cleanup,
    UserSessions(UserSel),
    RedisInfo,
    Health,
    Metrics,
    Dashboard,
    DashboardCss,
    DashboardJs,
    PublicHealth,
    /// The whole path, as given (not under the mount's prefix).
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum QueryPart {
    Limit(u16),
    LimitText(String),
    Cursor(KeySel),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum HostName {
    Localhost,
    Ipv4,
    Ipv6,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct HostSel {
    name: HostName,
    port: Option<u16>,
    upper: bool,
}

#[derive(Arbitrary, Debug)]
enum AuthSel {
    Bearer,
    LowerScheme,
    Padded,
    Wrong(String),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum IpSel {
    V4Loopback,
    V4LoopbackOther(u8, u8, u8),
    V6Loopback,
    Mapped,
    MappedRemote,
    Unspecified,
    Remote,
    Any(IpAddr),
}

#[derive(Arbitrary, Debug)]
struct PeerSel {
    /// Axum's `ConnectInfo<SocketAddr>` (what `into_make_service_with_connect_info` inserts), or the
    /// crate's `PeerAddr` (what a plain Hyper server inserts).
    connect_info: bool,
    ip: IpSel,
    port: u16,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Auth mode (`% 4`) and mount (`/ 4 % 2`: root, nested).
    app: u8,
    method: MethodSel,
    route: Route,
    suffix: Option<String>,
    query: Option<Vec<QueryPart>>,
    host: Option<HostSel>,
    /// Absolute-form URI (`http://<authority>/...`), as HTTP/2 names the host.
    authority: Option<HostSel>,
    auth: Option<AuthSel>,
    peer: Option<PeerSel>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

struct World {
    rt: tokio::runtime::Runtime,
    store: MemoryStore,
    keys: Vec<StoreKey>,
    /// `[mode]` mounted at the root, `[MODES + mode]` nested.
    apps: Vec<Router>,
}

/// What a request may not change: every seeded session as loaded (record and version), the live
/// count and the listing.
#[derive(Debug, PartialEq)]
struct Snapshot {
    loads: Vec<Option<Loaded>>,
    count: u64,
    listed: Vec<StoreKey>,
}

fn key(i: usize) -> StoreKey {
    StoreKey::digest_of(format!("fuzz-session-{i}").as_bytes(), 32)
}

fn record(i: usize) -> Record {
    let (user, ua, expired) = SEEDS[i];
    let now = Timestamp::from_millis(NOW);
    let created = Timestamp::from_millis(NOW - 60_000 * (i as u64 + 1));
    let mut r = if expired {
        Record::new(
            created,
            Timestamp::from_millis(NOW - 1),
            created.plus(2 * HOUR),
        )
    } else {
        Record::new(created, now.plus(HOUR), now.plus(2 * HOUR))
    };
    r.last_access = Timestamp::from_millis(NOW - 1000);
    r.user = user.map(str::to_owned);
    r.user_agent = ua.map(str::to_owned);
    r.data.insert("n".into(), (i as u64).into());
    r
}

/// Restores the seeded sessions (a previous input may have deleted some, or cleaned up the expired one).
fn refill(w: &World) {
    w.rt.block_on(async {
        for (i, k) in w.keys.iter().enumerate() {
            if w.store.load(k).await.unwrap().is_none() {
                w.store.create(k, &record(i)).await.unwrap();
            }
        }
    });
}

fn snapshot(w: &World) -> Snapshot {
    w.rt.block_on(async {
        let mut loads = Vec::new();
        for k in &w.keys {
            loads.push(w.store.load(k).await.unwrap());
        }
        Snapshot {
            loads,
            count: w.store.count().await.unwrap(),
            listed: w
                .store
                .list(None, 1000)
                .await
                .unwrap()
                .sessions
                .into_iter()
                .map(|s| s.id)
                .collect(),
        }
    })
}

/// Marks the public health's answers (open to anyone by design).
async fn mark_public(mut res: Response) -> Response {
    res.headers_mut()
        .insert("x-fuzz-public", HeaderValue::from_static("1"));
    res
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = MemoryStore::builder()
            .with_clock(ManualClock::new(Timestamp::from_millis(NOW)))
            .build();
        let services = [
            AdminService::new(store.clone()),
            AdminService::new(store.clone())
                .with_auth(AdminAuth::bearer(TOKEN))
                .with_metrics(|| "# TYPE x counter\nx 1\n".to_owned()),
            AdminService::new(store.clone()).with_auth(AdminAuth::bearer_or_loopback(TOKEN)),
            AdminService::new(store.clone())
                .with_auth(AdminAuth::insecure_open_to_anyone())
                .with_max_page(2)
                .with_metrics(String::new),
        ];
        let mut apps: Vec<Router> = services.iter().map(AdminService::router).collect();
        for admin in &services {
            apps.push(
                Router::new()
                    .nest(
                        "/api/health",
                        admin
                            .health()
                            .layer(axum::middleware::map_response(mark_public)),
                    )
                    .nest("/api/sessions", admin.router()),
            );
        }
        let w = World {
            rt,
            store,
            keys: (0..SEEDS.len()).map(key).collect(),
            apps,
        };
        refill(&w);
        sanity(&w);
        w
    })
}

/// The harness reaches what it means to: the right credentials are let in, and none are not.
fn sanity(w: &World) {
    let send = |app: usize, method: Method, path: &str, token: bool, peer: Option<&str>| {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost:3001");
        if token {
            req = req.header(AUTHORIZATION, format!("Bearer {TOKEN}"));
        }
        let mut req = req.body(Body::empty()).unwrap();
        if let Some(p) = peer {
            req.extensions_mut()
                .insert(ConnectInfo(p.parse::<SocketAddr>().unwrap()));
        }
        let status =
            w.rt.block_on(w.apps[app].clone().oneshot(req))
                .unwrap()
                .status();
        refill(w);
        status
    };
    let local = Some("127.0.0.1:40000");
    let remote = Some("203.0.113.9:40000");
    for nested in [false, true] {
        let at = |p: &str| {
            if nested {
                format!("/api/sessions{p}")
            } else {
                p.to_owned()
            }
        };
        let app = |mode: usize| if nested { MODES + mode } else { mode };
        let ok = StatusCode::OK;
        assert_eq!(
            send(app(LOOPBACK), Method::GET, &at("/stats"), false, local),
            ok
        );
        assert_eq!(
            send(app(LOOPBACK), Method::GET, &at("/stats"), true, remote),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(app(BEARER), Method::GET, &at("/stats"), true, remote),
            ok
        );
        assert_eq!(
            send(app(BEARER), Method::GET, &at("/stats"), false, local),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(
                app(BEARER_OR_LOOPBACK),
                Method::GET,
                &at("/sessions"),
                false,
                local
            ),
            ok
        );
        assert_eq!(
            send(
                app(BEARER_OR_LOOPBACK),
                Method::GET,
                &at("/sessions"),
                true,
                None
            ),
            ok
        );
        assert_eq!(
            send(app(OPEN), Method::GET, &at("/sessions"), false, None),
            ok
        );
        let delete = format!("/sessions/{}", key(0));
        assert_eq!(
            send(app(BEARER), Method::DELETE, &at(&delete), true, None),
            ok
        );
        assert_eq!(
            send(
                app(OPEN),
                Method::DELETE,
                &at("/users/alice/sessions"),
                false,
                None
            ),
            ok
        );
        assert_eq!(
            send(app(LOOPBACK), Method::POST, &at("/cleanup"), false, local),
            ok
        );
        assert_eq!(
            send(app(OPEN), Method::GET, &at("/redis-info"), false, None),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            send(app(LOOPBACK), Method::GET, &at("/dashboard"), false, None),
            ok
        );
    }
    assert_eq!(
        send(MODES + LOOPBACK, Method::GET, "/api/health", false, None),
        StatusCode::OK
    );
}

/// `bytes`, percent-encoded but for RFC 3986's unreserved characters.
fn encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn key_text(k: &KeySel) -> String {
    match k {
        KeySel::Known(i) => key(usize::from(*i) % SEEDS.len()).to_string(),
        KeySel::Absent(i) => key(usize::from(*i) + SEEDS.len()).to_string(),
        KeySel::Text(s) => s.clone(),
        KeySel::Encoded(b) => encode(b),
    }
}

fn host_text(h: &HostSel) -> String {
    let name = match &h.name {
        HostName::Localhost => "localhost",
        HostName::Ipv4 => "127.0.0.1",
        HostName::Ipv6 => "[::1]",
        HostName::Other(s) => s.as_str(),
    };
    let name = if h.upper {
        name.to_ascii_uppercase()
    } else {
        name.to_owned()
    };
    match h.port {
        Some(p) => format!("{name}:{p}"),
        None => name,
    }
}

fn ip_of(sel: &IpSel) -> IpAddr {
    match sel {
        IpSel::V4Loopback => Ipv4Addr::LOCALHOST.into(),
        IpSel::V4LoopbackOther(a, b, c) => Ipv4Addr::new(127, *a, *b, *c).into(),
        IpSel::V6Loopback => Ipv6Addr::LOCALHOST.into(),
        IpSel::Mapped => Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(),
        IpSel::MappedRemote => Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped().into(),
        IpSel::Unspecified => Ipv4Addr::UNSPECIFIED.into(),
        IpSel::Remote => Ipv4Addr::new(203, 0, 113, 9).into(),
        IpSel::Any(ip) => *ip,
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
    }
}

/// Whether the request could pass `mode`'s checks: a necessary condition only (each clause is implied
/// by what the auth layer requires, so a request refused here must not change or read anything).
fn may_pass(
    mode: usize,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
) -> bool {
    let changes_state = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state {
        if headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
        {
            return false;
        }
        if let Some(origin) = headers.get(ORIGIN) {
            if !origin.to_str().is_ok_and(|o| o.contains("://")) {
                return false;
            }
        }
    }
    if mode == OPEN {
        return true;
    }
    let token = headers.get_all(AUTHORIZATION).iter().any(|v| {
        v.as_bytes()
            .windows(TOKEN.len())
            .any(|w| w == TOKEN.as_bytes())
    });
    let loopback_host = |h: &[u8]| {
        let h = h.to_ascii_lowercase();
        [&b"localhost"[..], b"127.0.0.1", b"[::1]"]
            .iter()
            .any(|p| h.starts_with(p))
    };
    let host = headers
        .get_all(HOST)
        .iter()
        .any(|h| loopback_host(h.as_bytes()))
        || uri
            .authority()
            .is_some_and(|a| loopback_host(a.as_str().as_bytes()));
    let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h));
    let loopback = peer.is_some_and(is_loopback) && host && !proxied;
    match mode {
        LOOPBACK => loopback,
        BEARER => token,
        BEARER_OR_LOOPBACK => token || loopback,
        _ => unreachable!(),
    }
}

fuzz_target!(|input: Input| {
    let w = world();
    refill(w);
    let mode = usize::from(input.app) % MODES;
    let nested = (input.app / MODES as u8) % 2 == 1;

    let method = match &input.method {
        MethodSel::Get => Method::GET,
        MethodSel::Head => Method::HEAD,
        MethodSel::Post => Method::POST,
        MethodSel::Delete => Method::DELETE,
        MethodSel::Put => Method::PUT,
        MethodSel::Patch => Method::PATCH,
        MethodSel::Options => Method::OPTIONS,
        MethodSel::Other(m) => match Method::from_bytes(m.as_bytes()) {
            Ok(m) => m,
            Err(_) => return,
        },
    };
    let prefix = if nested { "/api/sessions" } else { "" };
    let mut path = match &input.route {
        Route::Root => prefix.to_owned(),
        Route::Stats => format!("{prefix}/stats"),
        Route::Sessions => format!("{prefix}/sessions"),
        Route::Session(k) => format!("{prefix}/sessions/{}", key_text(k)),
        Route::Cleanup => format!("{prefix}/cleanup"),
        Route::UserSessions(u) => {
            let user = match u {
                UserSel::Known(i) => encode(
                    SEEDS[usize::from(*i) % SEEDS.len()]
                        .0
                        .unwrap_or("nobody")
                        .as_bytes(),
                ),
                UserSel::Text(s) => s.clone(),
                UserSel::Encoded(b) => encode(b),
            };
            format!("{prefix}/users/{user}/sessions")
        }
        Route::RedisInfo => format!("{prefix}/redis-info"),
        Route::Health => format!("{prefix}/health"),
        Route::Metrics => format!("{prefix}/metrics"),
        Route::Dashboard => format!("{prefix}/dashboard"),
        Route::DashboardCss => format!("{prefix}/dashboard.css"),
        Route::DashboardJs => format!("{prefix}/dashboard.js"),
        Route::PublicHealth => if nested { "/api/health" } else { "/health" }.to_owned(),
        Route::Raw(p) => p.clone(),
    };
    if let Some(s) = &input.suffix {
        path.push_str(s);
    }
    if let Some(parts) = &input.query {
        let q: Vec<String> = parts
            .iter()
            .take(4)
            .map(|p| match p {
                QueryPart::Limit(n) => format!("limit={n}"),
                QueryPart::LimitText(s) => format!("limit={s}"),
                QueryPart::Cursor(k) => format!("cursor={}", key_text(k)),
                QueryPart::Raw(s) => s.clone(),
            })
            .collect();
        path.push('?');
        path.push_str(&q.join("&"));
    }
    let uri = match &input.authority {
        Some(h) => format!("http://{}{path}", host_text(h)),
        None => path,
    };
    let Ok(uri) = Uri::try_from(uri) else {
        return;
    };

    let mut headers = HeaderMap::new();
    if let Some(h) = &input.host {
        let Ok(v) = HeaderValue::from_str(&host_text(h)) else {
            return;
        };
        headers.append(HOST, v);
    }
    if let Some(a) = &input.auth {
        let v = match a {
            AuthSel::Bearer => HeaderValue::from_str(&format!("Bearer {TOKEN}")),
            AuthSel::LowerScheme => HeaderValue::from_str(&format!("bearer {TOKEN}")),
            AuthSel::Padded => HeaderValue::from_str(&format!("BEARER   {TOKEN} ")),
            AuthSel::Wrong(t) => HeaderValue::from_str(&format!("Bearer {t}")),
            AuthSel::Raw(b) => HeaderValue::from_bytes(b),
        };
        let Ok(v) = v else {
            return;
        };
        headers.append(AUTHORIZATION, v);
    }
    for (name, value) in input.headers.iter().take(8) {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let peer = input
        .peer
        .as_ref()
        .map(|p| (p.connect_info, SocketAddr::new(ip_of(&p.ip), p.port)));
    let passable = may_pass(mode, &method, &uri, &headers, peer.map(|(_, a)| a.ip()));

    let mut req = Request::new(Body::from(input.body.clone()));
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri.clone();
    *req.headers_mut() = headers;
    match peer {
        Some((true, addr)) => {
            req.extensions_mut().insert(ConnectInfo(addr));
        }
        Some((false, addr)) => {
            req.extensions_mut().insert(PeerAddr(addr));
        }
        None => {}
    }

    let before = snapshot(w);
    let app = w.apps[if nested { MODES + mode } else { mode }].clone();
    let (res, body) = w.rt.block_on(async {
        let res = app.oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("an admin body").to_bytes();
        (parts, body)
    });
    let after = snapshot(w);
    let status = res.status;
    let ctx = || {
        format!(
            "{status} {method} {uri} mode {mode} nested {nested}\nresponse {:?}\nbody {}",
            res.headers,
            String::from_utf8_lossy(&body)
        )
    };
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let error = json
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(serde_json::Value::as_str);

    // Never a 5xx, but the documented 503 of /redis-info over a store without backend information.
    if status.is_server_error() {
        let documented = status == StatusCode::SERVICE_UNAVAILABLE
            && matches!(method, Method::GET | Method::HEAD)
            && uri.path().ends_with("/redis-info")
            && (method == Method::HEAD
                || error.is_some_and(|e| e.starts_with("no backend information")));
        assert!(documented, "{}", ctx());
    }

    // Requests only ever delete: nothing added, recreated or rewritten.
    assert!(after.count <= before.count, "{}", ctx());
    assert!(
        after.listed.iter().all(|k| before.listed.contains(k)),
        "{}",
        ctx()
    );
    for (b, a) in before.loads.iter().zip(&after.loads) {
        assert!(
            a.is_none() || a == b,
            "{}\nbefore {b:?}\nafter {a:?}",
            ctx()
        );
    }
    let changed = before != after;
    if changed {
        assert!(
            !status.is_client_error(),
            "a refused request changed the store: {}",
            ctx()
        );
        assert!(
            !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS),
            "a safe method changed the store: {}",
            ctx()
        );
        assert!(
            passable,
            "the store changed for a request the mode refuses: {}",
            ctx()
        );
    }
    let public = res.headers.contains_key("x-fuzz-public")
        || res
            .headers
            .contains_key(http::header::CONTENT_SECURITY_POLICY);
    if status.is_success() && !public {
        assert!(
            passable,
            "data answered to a request the mode refuses: {}",
            ctx()
        );
    }

    // The router's own answers: private, and errors in JSON.
    if !nested {
        assert_eq!(
            res.headers.get(CACHE_CONTROL).map(HeaderValue::as_bytes),
            Some(&b"no-store"[..]),
            "{}",
            ctx()
        );
        let is_json = res
            .headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if status.as_u16() >= 400 {
            assert!(is_json, "{}", ctx());
        }
        if is_json && method != Method::HEAD {
            assert!(
                json.as_ref().is_some_and(serde_json::Value::is_object),
                "{}",
                ctx()
            );
            if status.as_u16() >= 400 {
                assert!(error.is_some(), "{}", ctx());
            }
        }
    }
});
