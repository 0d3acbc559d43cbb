//! The admin dashboard in a real headless Chromium (`tests/node/dashboard.mjs`, playwright-core
//! driving the system's `chromium`), against the djforge example binary in bearer mode on its own
//! `redis-server`: the count and the rows, a hostile user agent shown as text, ending a session and
//! revoking a user through the page (their clients are logged out), Redis killed and restarted (the
//! page shows file mode, then the failback), and the token required. Screenshots go to
//! `target/dashboard.png` and `target/dashboard-mobile.png`.

#[path = "support/djforge.rs"]
mod djforge_support;
#[path = "support/http.rs"]
mod http_support;
#[path = "support/node.rs"]
mod node;
mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use http_support::Browser;
use sessionforge::id::Token;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::RedisServer;

const TOKEN: &str = "dashboard-test-token";
const XSS_AGENT: &str = "<img src=x onerror=alert(1)>";
/// Every check the driver reports: its phases, then a clean console (no script error, no policy
/// violation) over the whole run.
const CHECKS: [&str; 8] = [
    "bearer-refused",
    "count",
    "xss",
    "end-session",
    "revoke-user",
    "failover",
    "screenshot",
    "console",
];

/// The Chromium binary, or a failed test saying how to install it.
fn chromium() -> PathBuf {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!(
            "no Chromium found: the dashboard test drives a real headless Chromium. Install it with \
             `sudo apt-get install -y chromium` (or run .ci/run, which does)"
        )
    })
}

/// A visitor with a session, by its cookie.
struct Visitor {
    browser: Browser,
    user: Option<&'static str>,
}

impl Visitor {
    fn key(&self) -> String {
        let token = self.browser.cookie.as_deref().expect("a session cookie");
        Token::parse(token).unwrap().store_key().as_str().to_owned()
    }
}

async fn visitors(addr: SocketAddr) -> Vec<Visitor> {
    let mut all = Vec::new();
    for user in [None, None, None, Some("alice"), Some("alice"), Some("bob")] {
        let mut browser = Browser::new(addr);
        assert_eq!(browser.get("/api/me").await.status, StatusCode::OK);
        if let Some(u) = user {
            let r = browser
                .post("/api/login", &format!(r#"{{"user":"{u}"}}"#))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        all.push(Visitor { browser, user });
    }
    // One session whose user agent is markup.
    let r = http_support::raw(
        &http_support::client(),
        Request::get(format!("http://{addr}/api/me"))
            .header("user-agent", XSS_AGENT)
            .body(Full::<Bytes>::default())
            .unwrap(),
    )
    .await;
    let mut browser = Browser::new(addr);
    browser.cookie = Some(r.cookie("id").expect("a session cookie"));
    all.push(Visitor {
        browser,
        user: None,
    });
    all
}

/// Whether the visitor is still logged in (as who it logged in as), by its next request.
async fn logged_in(v: &mut Visitor) -> bool {
    let me = v.browser.get("/api/me").await.json();
    me["visits"].as_u64() > Some(1) && me["user"].as_str() == v.user
}

#[test]
fn the_dashboard_shows_the_store_and_acts_on_sessions_in_a_real_chromium() {
    let chromium = chromium();
    node::packages();
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = redis.port().to_string();
    let app = djforge_support::Process::spawn(&[
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", &port),
        ("SESSION_DIR", dir.path().to_str().unwrap()),
        ("SESSION_ADMIN_TOKEN", TOKEN),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut people = rt.block_on(visitors(app.addr));

    // Bearer mode: the page itself loads, every API call it makes needs the token.
    rt.block_on(async {
        let mut anyone = Browser::new(app.addr);
        assert_eq!(
            anyone.get("/api/sessions/dashboard").await.status,
            StatusCode::OK
        );
        for path in [
            "/api/sessions/stats",
            "/api/sessions/sessions",
            "/api/sessions/health",
        ] {
            assert_eq!(
                anyone.get(path).await.status,
                StatusCode::UNAUTHORIZED,
                "{path}"
            );
        }
    });

    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target).unwrap();
    let (shot, mobile) = (
        target.join("dashboard.png"),
        target.join("dashboard-mobile.png"),
    );
    for s in [&shot, &mobile] {
        let _ = std::fs::remove_file(s);
    }
    let mut driver = Command::new(node::node())
        .arg("dashboard.mjs")
        .current_dir(node::dir())
        .env("BASE", format!("http://{}", app.addr))
        .env("DASHBOARD", "/api/sessions/dashboard")
        .env("TOKEN", TOKEN)
        .env("EXPECT_COUNT", people.len().to_string())
        .env("EXPECT_USER", "alice")
        .env("XSS_AGENT", XSS_AGENT)
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT", &shot)
        .env("SCREENSHOT_MOBILE", &mobile)
        .env("DEADLINE_MS", "150000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tests/node/dashboard.mjs");
    let mut stdin = driver.stdin.take().unwrap();
    let stderr = driver.stderr.take().unwrap();
    let diagnostics = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    let mut passed = BTreeSet::new();
    let mut failures = Vec::new();
    let started = Instant::now();
    for line in BufReader::new(driver.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the dashboard run hangs"
        );
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["CHECK", name, "ok"] => {
                passed.insert(name.to_string());
            }
            ["ENDED", id] => rt.block_on(async {
                // The session ended on the page is logged out on its next request; the others not.
                let i = people
                    .iter()
                    .position(|v| v.key() == *id)
                    .unwrap_or_else(|| panic!("the page ended {id}, no visitor's session"));
                let mut ended = people.remove(i);
                assert!(
                    !logged_in(&mut ended).await,
                    "the ended session still works"
                );
                let other = people.iter_mut().find(|v| v.user == Some("bob")).unwrap();
                assert!(logged_in(other).await, "another session ended too");
            }),
            ["REVOKED", user] => rt.block_on(async {
                for v in people.iter_mut() {
                    let theirs = v.user == Some(*user);
                    assert_eq!(
                        !logged_in(v).await,
                        theirs,
                        "{:?} after revoking {user}",
                        v.user
                    );
                }
            }),
            ["STEP", "kill-redis"] => {
                redis.kill();
                writeln!(stdin, "OK").unwrap();
            }
            ["STEP", "restart-redis"] => {
                // The restarted server is empty; visitors come back meanwhile (served from files
                // until the failback carries them over), so the page has rows to show again.
                redis.restart();
                people.extend(rt.block_on(visitors(app.addr)));
                writeln!(stdin, "OK").unwrap();
            }
            ["FAIL", ..] => failures.push(line.clone()),
            _ => {}
        }
    }
    let status = driver.wait().unwrap();
    let diagnostics = diagnostics.join().unwrap().join("\n");
    assert!(
        failures.is_empty() && status.success(),
        "{failures:?} ({status}); driver said:\n{diagnostics}"
    );
    let want: BTreeSet<String> = CHECKS.iter().map(|p| p.to_string()).collect();
    assert_eq!(passed, want, "driver said:\n{diagnostics}");
    for s in [&shot, &mobile] {
        let png = std::fs::read(s).unwrap_or_else(|e| panic!("{}: {e}", s.display()));
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{}",
            s.display()
        );
    }
}
