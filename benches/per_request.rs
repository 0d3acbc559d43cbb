//! Runs N requests through the layer in process (memory store, no HTTP; with `PER_REQUEST_REDIS=<url>`
//! a Redis store, and `PER_REQUEST_CACHE=1` its read cache; with `PER_REQUEST_FAILOVER=1` that store
//! behind a failover store with files as the fallback), for counting the allocations and
//! instructions a request costs under valgrind:
//!
//! ```text
//! cargo bench --bench per_request --no-run   # prints the binary's path
//! valgrind --tool=dhat --dhat-out-file=/dev/null <binary> write 1000   # and again with 2000
//! ```
//!
//! The difference between the two totals divided by 1000 is the cost of one request (see
//! BENCHMARKS.md). Kinds: `none` (no layer), `untouched` (layer, handler ignores the session), `read`,
//! `write` (read and increment a counter). Without arguments (as under `cargo test --benches`) it runs
//! each kind a few times and exits.

use http::{header, Request, Response};
use sessionforge::store::MemoryStore;
use sessionforge::{Session, SessionLayer};
use std::convert::Infallible;
use tower::{Layer, Service, ServiceExt};

type Body = String;

async fn untouched(_req: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Body::new()))
}

async fn read(req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let s = req.extensions().get::<Session>().expect("layer");
    let n: u64 = s.get("counter").await.expect("get").unwrap_or(0);
    Ok(Response::new(n.to_string()))
}

async fn write(req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let s = req.extensions().get::<Session>().expect("layer");
    let n: u64 = s.get("counter").await.expect("get").unwrap_or(0);
    s.insert("counter", n + 1).await.expect("insert");
    Ok(Response::new(n.to_string()))
}

async fn drive<S>(mut svc: S, cookie: &str, n: usize)
where
    S: Service<Request<Body>, Response = Response<sessionforge::SessionBody<Body>>>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        let req = Request::builder()
            .header(header::COOKIE, cookie)
            .header(header::USER_AGENT, "per-request/1.0")
            .body(Body::new())
            .expect("request");
        let res = svc.call(req).await.expect("call");
        std::hint::black_box(res);
    }
}

/// The layer over `store`, or over a failover store in front of it when `PER_REQUEST_FAILOVER` is set.
async fn with_failover<S: sessionforge::store::SessionStore>(
    store: S,
    dir: &std::path::Path,
    shutdown: &sessionforge::shutdown::Shutdown,
) -> SessionLayer {
    if std::env::var_os("PER_REQUEST_FAILOVER").is_none() {
        return SessionLayer::new(store);
    }
    let files = sessionforge::store::FileStore::new(dir);
    files.init().await.expect("file store directory");
    SessionLayer::new(
        sessionforge::store::FailoverStore::builder(store, files)
            .start(shutdown)
            .await,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kinds, n): (Vec<&str>, usize) = match args.as_slice() {
        [kind, n] => (vec![kind.as_str()], n.parse().expect("a count")),
        _ => (vec!["none", "untouched", "read", "write"], 3),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let shutdown = sessionforge::shutdown::Shutdown::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let layer = match std::env::var("PER_REQUEST_REDIS") {
            Ok(url) => {
                // The read cache is on by default now: off unless asked for, as before.
                let cache = if std::env::var("PER_REQUEST_CACHE").is_ok() {
                    10_000
                } else {
                    0
                };
                let store = sessionforge::store::redis::RedisConfig::new(&url)
                    .expect("redis url")
                    .with_read_cache(cache)
                    .build()
                    .expect("redis store");
                with_failover(store, dir.path(), &shutdown).await
            }
            Err(_) => with_failover(MemoryStore::new(), dir.path(), &shutdown).await,
        }
        .with_secure(false);
        let res = layer
            .layer(tower::service_fn(write))
            .oneshot(Request::new(Body::new()))
            .await
            .expect("first request");
        let set = res.headers()[header::SET_COOKIE].to_str().expect("ascii");
        let cookie = format!("theme=dark; {}", set.split(';').next().expect("pair"));
        for kind in kinds {
            match kind {
                "none" => {
                    let mut svc = tower::service_fn(untouched);
                    for _ in 0..n {
                        let req = Request::builder()
                            .header(header::COOKIE, &cookie)
                            .header(header::USER_AGENT, "per-request/1.0")
                            .body(Body::new())
                            .expect("request");
                        std::hint::black_box(svc.call(req).await.expect("call"));
                    }
                }
                "untouched" => drive(layer.layer(tower::service_fn(untouched)), &cookie, n).await,
                "read" => drive(layer.layer(tower::service_fn(read)), &cookie, n).await,
                "write" => drive(layer.layer(tower::service_fn(write)), &cookie, n).await,
                other => panic!("unknown kind {other}"),
            }
        }
    });
}
