//! The djforge example as an attacker and a careless client meet it: the admin's loopback mode against
//! cross-site requests, DNS rebinding and a proxy on the same host; public health with a broken Redis
//! password; private responses and caches; "remember me"; `Max-Age` rounding; a malformed cookie; the
//! example's JSON errors; and a flood of client mistakes in the log.

#[path = "support/djforge.rs"]
mod djforge_support;
#[path = "support/http.rs"]
mod http_support;
mod support;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::Full;
use http_support::{raw, Browser, Reply};
use std::net::SocketAddr;
use std::time::Duration;
use support::RedisServer;

async fn app(
    redis: &RedisServer,
    dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> djforge_support::Running {
    let port = redis.port().to_string();
    let mut vars = vec![
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", port.as_str()),
        ("SESSION_DIR", dir.to_str().unwrap()),
    ];
    vars.extend_from_slice(extra);
    djforge_support::start(&vars).await
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", format!("localhost:{}", addr.port()));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    raw(
        &http_support::client(),
        req.body(Full::new(Bytes::from(body.to_owned()))).unwrap(),
    )
    .await
}

/// `PUT path` with a JSON body.
async fn put_json(addr: SocketAddr, path: &str, body: &str) -> Reply {
    send(
        addr,
        Method::PUT,
        path,
        &[("content-type", "application/json")],
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_mode_refuses_cross_site_rebinding_and_proxied_requests() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = app(&redis, dir.path(), &[]).await;
    let a = app.addr;
    // The operator's own curl works.
    assert_eq!(
        send(a, Method::POST, "/api/sessions/cleanup", &[], "")
            .await
            .status,
        StatusCode::OK
    );
    // 1. A page in the operator's browser posting across sites.
    for headers in [
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
        ][..],
        &[("origin", "https://evil.example")][..],
        &[("sec-fetch-site", "cross-site")][..],
        &[("origin", "null")][..],
    ] {
        let r = send(a, Method::POST, "/api/sessions/cleanup", headers, "").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{headers:?}: {}", r.body);
        assert!(r.json()["error"].is_string());
        let r = send(
            a,
            Method::DELETE,
            "/api/sessions/users/alice/sessions",
            headers,
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    // 2. DNS rebinding: a foreign Host name, even from a loopback peer.
    let r = send(
        a,
        Method::GET,
        "/api/sessions/stats",
        &[("host", "evil.example:3001")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    for host in ["127.0.0.1:1", "[::1]:3001", "LOCALHOST"] {
        let r = send(a, Method::GET, "/api/sessions/stats", &[("host", host)], "").await;
        assert_eq!(r.status, StatusCode::OK, "{host}: {}", r.body);
    }
    // 3. A reverse proxy on the same host: its headers deny, with a hint to use a token.
    for h in ["forwarded", "x-forwarded-for", "x-real-ip"] {
        let r = send(
            a,
            Method::GET,
            "/api/sessions/stats",
            &[(h, "203.0.113.9")],
            "",
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{h}");
        let msg = r.json()["error"].as_str().unwrap().to_owned();
        assert!(
            msg.contains("SESSION_ADMIN_TOKEN") || msg.contains("token"),
            "{msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_health_shows_no_backend_detail_for_a_wrong_redis_password() {
    let redis = RedisServer::with_args(&["--requirepass", "right-password"]);
    let dir = tempfile::tempdir().unwrap();
    let app = app(&redis, dir.path(), &[("REDIS_PASSWORD", "wrong-password")]).await;
    let public = send(app.addr, Method::GET, "/api/health", &[], "").await;
    assert_eq!(
        public.status,
        StatusCode::OK,
        "served from files: {}",
        public.body
    );
    let text = public.body.to_lowercase();
    for leak in [
        "password",
        "wrongpass",
        "auth",
        "denied",
        "127.0.0.1",
        "redis://",
    ] {
        assert!(
            !text.contains(leak),
            "public health leaks {leak:?}: {}",
            public.body
        );
    }
    let h = public.json();
    assert_eq!(h["sessionStore"], "file");
    assert_eq!(h["redis"], "unhealthy");
    // The operators' health, behind the admin's protection, says why.
    let full = send(app.addr, Method::GET, "/api/sessions/health", &[], "").await;
    assert!(full.body.to_lowercase().contains("pass"), "{}", full.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_read_a_session_are_private_and_not_cached() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = app(&redis, dir.path(), &[]).await;
    let mut b = Browser::new(app.addr);
    b.get("/api/me").await;
    for path in ["/api/prefs", "/api/me", "/api/sessions-of-me"] {
        let r = b.get(path).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store", "{path}");
        let vary = r
            .headers
            .get(header::VARY)
            .map(|v| v.to_str().unwrap().to_lowercase());
        assert_eq!(vary.as_deref(), Some("cookie"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remember_me_gives_thirty_days_in_the_cookie_and_in_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = app(&redis, dir.path(), &[("SESSION_IDLE_TIMEOUT", "1h")]).await;
    let thirty_days = 30 * 24 * 3600;
    let mut b = Browser::new(app.addr);
    let r = b
        .post("/api/login", r#"{"user":"alice","remember":true}"#)
        .await;
    assert_eq!(r.json()["remember"], true);
    let cookie = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("id="))
        .unwrap();
    let max_age: u64 = cookie
        .split("; ")
        .find_map(|p| p.strip_prefix("Max-Age="))
        .expect("a persistent cookie")
        .parse()
        .unwrap();
    assert!(max_age >= thirty_days, "{cookie}");
    let key = sessionforge::id::Token::parse(b.cookie.as_deref().unwrap())
        .unwrap()
        .store_key();
    let ttl: u64 = redis
        .cli(&["TTL", &format!("djforge:sess:{key}")])
        .parse()
        .unwrap();
    assert!(ttl + 5 >= thirty_days, "Redis keeps it 30 days: {ttl}");
    // It lasts through the layer's idle hour because it is its own policy, on every later request.
    let r = b.get("/api/me").await;
    assert_eq!(r.json()["user"], "alice");
    // Without `remember`: the layer's hour.
    let mut plain = Browser::new(app.addr);
    let r = plain.post("/api/login", r#"{"user":"bob"}"#).await;
    let cookie = r
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("id="))
        .unwrap();
    assert!(cookie.contains("Max-Age=3600"), "{cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_never_gets_max_age_zero() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = app(&redis, dir.path(), &[("SESSION_IDLE_TIMEOUT", "2s")]).await;
    for _ in 0..50 {
        let r = Browser::new(app.addr).get("/api/me").await;
        let cookie = r
            .set_cookies()
            .into_iter()
            .find(|c| c.starts_with("id="))
            .unwrap();
        let max_age: u64 = cookie
            .split("; ")
            .find_map(|p| p.strip_prefix("Max-Age="))
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&max_age), "{cookie}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_cookie_is_removed_the_first_time_the_session_is_used() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = app(&redis, dir.path(), &[]).await;
    let r = send(
        app.addr,
        Method::GET,
        "/api/prefs",
        &[("cookie", "id=malformed")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let removal = r.set_cookies();
    assert!(
        removal
            .iter()
            .any(|c| c.starts_with("id=;") && c.contains("Max-Age=0")),
        "{removal:?}"
    );
    // Health does not use the session: nothing to say about the cookie.
    let r = send(
        app.addr,
        Method::GET,
        "/api/health",
        &[("cookie", "id=malformed")],
        "",
    )
    .await;
    assert!(r.set_cookies().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_errors_are_json_and_its_limits_count_characters() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = app(&redis, dir.path(), &[]).await;
    let a = app.addr;
    let json_error = |r: &Reply, status: StatusCode| {
        assert_eq!(r.status, status, "{}", r.body);
        assert!(
            r.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{r:?}"
        );
        assert!(r.json()["error"].is_string(), "{}", r.body);
    };
    // A body over the 2 MB limit.
    let big = format!("\"{}\"", "x".repeat(3 * 1024 * 1024));
    let r = put_json(a, "/api/prefs/theme", &big).await;
    json_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
    // A path that is not UTF-8 once decoded.
    let r = put_json(a, "/api/prefs/%FF%FE", "1").await;
    json_error(&r, StatusCode::BAD_REQUEST);
    // A session over the 64 KiB session limit.
    let r = put_json(
        a,
        "/api/prefs/theme",
        &format!("\"{}\"", "x".repeat(100 * 1024)),
    )
    .await;
    json_error(&r, StatusCode::PAYLOAD_TOO_LARGE);
    // An integer JSON cannot keep exactly is refused, not rounded.
    let r = put_json(a, "/api/prefs/n", "123456789012345678901234567890").await;
    json_error(&r, StatusCode::BAD_REQUEST);
    // The user limit is 128 characters, not bytes.
    let mut b = Browser::new(a);
    let user = "é".repeat(65);
    let r = b
        .post("/api/login", &format!(r#"{{"user":"{user}"}}"#))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["user"], user.as_str());
    let r = b
        .post(
            "/api/login",
            &format!(r#"{{"user":"{}"}}"#, "é".repeat(129)),
        )
        .await;
    json_error(&r, StatusCode::BAD_REQUEST);
}

#[test]
fn a_flood_of_client_mistakes_is_a_few_rate_limited_warnings_and_a_metric() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = redis.port().to_string();
    let app = djforge_support::Process::spawn(&[
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", &port),
        ("SESSION_DIR", dir.path().to_str().unwrap()),
        ("RUST_LOG", "info"),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    const N: usize = 1000;
    let body = format!("\"{}\"", "x".repeat(70 * 1024));
    rt.block_on(async {
        let client = http_support::client();
        for _ in 0..N {
            let r = raw(
                &client,
                Request::put(format!("http://{}/api/prefs/big", app.addr))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.clone())))
                    .unwrap(),
            )
            .await;
            assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let lines = app.stderr();
    let errors = lines.iter().filter(|l| l.contains("ERROR")).count();
    let about_size: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("session data refused"))
        .collect();
    assert_eq!(errors, 0, "a client's mistake is not our error: {lines:?}");
    assert!(
        !about_size.is_empty() && about_size.len() <= 5,
        "{} lines for {N} oversized sessions: {about_size:?} (all: {lines:?})",
        about_size.len()
    );
    assert!(
        about_size.iter().all(|l| l.contains("WARN")),
        "{about_size:?}"
    );
    let metrics = rt.block_on(async {
        let mut b = Browser::new(app.addr);
        b.get("/api/sessions/metrics").await.body
    });
    let rejected: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("sessionforge_") && l.contains("too_large"))
        .collect();
    assert!(
        rejected.iter().any(|l| l.ends_with(&format!(" {N}"))),
        "the mistakes are counted: {rejected:?}"
    );
}
