//! Micro-benchmarks of the per-request CPU work: `cargo bench --bench micro`.
//!
//! * tokens: generation (CSPRNG + base64url), strict parsing, the SHA-256 store key;
//! * cookie extraction: a request through the layer whose handler never touches the session, so what is
//!   measured is finding, verifying and parsing the token plus the layer's own per-request work (plain
//!   and signed cookies);
//! * a whole request through the layer on the memory store: read-only and write (read and increment);
//! * record encode/decode (the JSON a store keeps);
//! * change-set merge (what a store does when another writer got there first).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{header, Request, Response};
use serde_json::json;
use sessionforge::expiry::Timestamp;
use sessionforge::id::Token;
use sessionforge::store::{ChangeSet, MemoryStore, Record};
use sessionforge::{Session, SessionLayer};
use std::convert::Infallible;
use std::hint::black_box;
use tower::{Layer, Service, ServiceExt};

fn tokens(c: &mut Criterion) {
    let mut g = c.benchmark_group("token");
    g.bench_function("generate", |b| b.iter(Token::generate));
    let token = Token::generate();
    let text = token.as_str().to_owned();
    g.bench_function("parse", |b| b.iter(|| Token::parse(black_box(&text))));
    g.bench_function("parse_invalid", |b| {
        b.iter(|| Token::parse(black_box("../../etc/passwd")))
    });
    g.bench_function("store_key", |b| b.iter(|| black_box(&token).store_key()));
    g.finish();
}

fn record(small: bool) -> Record {
    let data = if small {
        json!({"counter": 41})
    } else {
        json!({
            "counter": 41,
            "user": {"id": 12345, "name": "alice", "roles": ["admin", "editor"]},
            "cart": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
            "prefs": {"theme": "dark", "lang": "en-GB", "tz": "Europe/London"},
            "csrf": "3q2+7w3q2+7w3q2+7w3q2+7w3q2+7w",
        })
    };
    let mut r = Record::new(
        Timestamp::from_millis(1_752_360_300_000),
        Timestamp::from_millis(1_752_446_700_000),
        Timestamp::from_millis(1_752_965_100_000),
    );
    r.user_agent =
        Some("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".into());
    r.user = Some("alice".into());
    r.data = data.as_object().unwrap().clone();
    r
}

fn records(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    for (name, small) in [("small", true), ("medium", false)] {
        let r = record(small);
        let bytes = r.to_json();
        g.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| black_box(&r).to_json())
        });
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| Record::from_json(black_box(&bytes)).unwrap())
        });
    }
    g.finish();
}

fn merges(c: &mut Criterion) {
    let mut g = c.benchmark_group("changeset");
    let stored = record(false);
    let mut ours = record(false);
    ours.last_access = Timestamp::from_millis(1_752_360_400_000);
    let mut changes = ChangeSet::default();
    changes.entries.insert("counter".into(), Some(json!(42)));
    changes.entries.insert("csrf".into(), None);
    changes.entries.insert("flash".into(), Some(json!("saved")));
    g.bench_function("merge_3_keys", |b| {
        b.iter_batched_ref(
            || stored.clone(),
            |s| s.merge(black_box(&changes), &ours),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("apply_3_keys", |b| {
        b.iter_batched_ref(
            || stored.data.clone(),
            |d| changes.apply(black_box(d)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

type Body = String;

async fn untouched(_req: Request<Body>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Body::new()))
}

async fn read(req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let s = req.extensions().get::<Session>().unwrap();
    let n: u64 = s.get("counter").await.unwrap().unwrap_or(0);
    Ok(Response::new(n.to_string()))
}

async fn incr(req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let s = req.extensions().get::<Session>().unwrap();
    let n: u64 = s.get("counter").await.unwrap().unwrap_or(0);
    s.insert("counter", n + 1).await.unwrap();
    Ok(Response::new(n.to_string()))
}

/// The cookie a fresh session gets, from one write request through `layer`.
fn session_cookie(rt: &tokio::runtime::Runtime, layer: &SessionLayer) -> String {
    let svc = layer.layer(tower::service_fn(incr));
    let res = rt.block_on(svc.oneshot(Request::new(Body::new()))).unwrap();
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

fn requests(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("layer");
    let plain = SessionLayer::new(MemoryStore::new());
    let signed = SessionLayer::new(MemoryStore::new())
        .with_signing_keys([sessionforge::cookie::Key::generate()]);
    for (name, layer) in [("plain", &plain), ("signed", &signed)] {
        let cookie = format!("theme=dark; {}; _ga=GA1.2.3", session_cookie(&rt, layer));
        let mut svc = layer.layer(tower::service_fn(untouched));
        g.bench_function(format!("cookie_extract_{name}"), |b| {
            b.iter(|| {
                let req = Request::builder()
                    .header(header::COOKIE, &cookie)
                    .body(Body::new())
                    .unwrap();
                rt.block_on(svc.call(req)).unwrap()
            })
        });
    }
    let cookie = session_cookie(&rt, &plain);
    let read_svc = plain.layer(tower::service_fn(read));
    bench_service(&mut g, &rt, "memory_read_request", &cookie, read_svc);
    let write_svc = plain.layer(tower::service_fn(incr));
    bench_service(&mut g, &rt, "memory_write_request", &cookie, write_svc);
    bench_service(
        &mut g,
        &rt,
        "no_layer_request",
        &cookie,
        tower::service_fn(untouched),
    );
    g.finish();
}

fn bench_service<S>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    cookie: &str,
    mut svc: S,
) where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    g.bench_function(name, |b| {
        b.iter(|| {
            let req = Request::builder()
                .header(header::COOKIE, cookie)
                .body(Body::new())
                .unwrap();
            rt.block_on(svc.call(req)).unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = tokens, records, merges, requests
}
criterion_main!(benches);
