//! Cookie and header extraction, through the public layer: arbitrary request headers reach a
//! `SessionLayer` over a `MemoryStore`, in four configurations: native tokens in an unsigned cookie, in
//! a signed cookie, in an `x-session-id` header, and express-session's signed `connect.sid` cookie
//! (`format::Express`). The handler always succeeds, so the layer must answer 200, never panic, never
//! adopt a token the server did not issue, only ever hand out well-formed tokens, and mark every
//! response private (`Cache-Control: no-store`, `Vary` on the token's carrier).
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, SET_COOKIE, VARY};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use sessionforge::cookie::{Cookie, CookieJar, Key};
use sessionforge::format::{Express, Format};
use sessionforge::id::Token;
use sessionforge::store::{MemoryStore, SessionStore};
use sessionforge::{Session, SessionLayer};
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use tower::{Layer, Service, ServiceExt};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Which layer configuration: 0 unsigned cookie, 1 signed cookie, 2 header `x-session-id`,
    /// 3 the express format's cookie.
    config: u8,
    /// Put the configuration's known-good token (issued at start-up) into the first cookie/header value.
    use_known: bool,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

const CONFIGS: usize = 4;
const SIGNED: usize = 1;
const HEADER: usize = 2;
const EXPRESS: usize = 3;

/// The cookie (or header) each configuration carries the token in.
const NAMES: [&str; CONFIGS] = ["id", "id", "x-session-id", "connect.sid"];

struct World {
    rt: tokio::runtime::Runtime,
    /// The native store (configurations 0 to 2) and the express one (3).
    native: MemoryStore,
    express_store: MemoryStore,
    express: Express,
    key: Key,
    /// Per configuration, what the client holds for the one session issued at start-up.
    known: [String; CONFIGS],
    layers: [SessionLayer; CONFIGS],
}

/// Marks the clean-up request that ends a session the fuzz input made (input cannot set extensions).
#[derive(Clone)]
struct Destroy;

async fn handler(req: Request<()>) -> Result<Response<Full<Bytes>>, Infallible> {
    let session = req
        .extensions()
        .get::<Session>()
        .expect("the layer adds a session")
        .clone();
    if req.extensions().get::<Destroy>().is_some() {
        session
            .destroy()
            .await
            .expect("the memory store does not fail");
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    let n: u64 = session.get("n").await.ok().flatten().unwrap_or(0);
    session
        .insert("n", n + 1)
        .await
        .expect("a small value fits");
    let mut res = Response::new(Full::new(Bytes::new()));
    res.headers_mut().insert("x-n", HeaderValue::from(n));
    Ok(res)
}

/// The values of the response's token for configuration `which` (a cookie's value, or the header),
/// leaving out removal cookies (empty values).
fn issued(which: usize, res: &Response<()>) -> Vec<String> {
    if which == HEADER {
        return res
            .headers()
            .get_all(NAMES[HEADER])
            .iter()
            .map(|v| v.to_str().expect("issued tokens are ASCII").to_owned())
            .collect();
    }
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| {
            let v = v.to_str().expect("issued cookies are ASCII");
            let c = Cookie::parse(v.to_owned()).expect("issued cookies parse");
            assert_eq!(c.name(), NAMES[which], "{v}");
            (!c.value().is_empty()).then(|| c.value().to_owned())
        })
        .collect()
}

/// The token inside an issued value: checks it is well-formed (and correctly signed) for the
/// configuration.
fn token_of(w: &World, which: usize, value: &str) -> Token {
    match which {
        SIGNED => {
            let mut jar = CookieJar::new();
            jar.add_original(Cookie::new("id", value.to_owned()));
            let inner = jar
                .signed(&w.key)
                .get("id")
                .unwrap_or_else(|| panic!("an issued signed cookie verifies: {value:?}"))
                .value()
                .to_owned();
            Token::parse(&inner).unwrap_or_else(|e| panic!("{e}: {inner:?}"))
        }
        EXPRESS => {
            let t = w
                .express
                .open(value)
                .unwrap_or_else(|| panic!("an issued express cookie opens: {value:?}"));
            // uid-safe's 24 bytes.
            assert_eq!(t.as_str().len(), 32, "{value:?}");
            t
        }
        _ => Token::parse(value).unwrap_or_else(|e| panic!("{e}: {value:?}")),
    }
}

/// One request through configuration `which`: the response's status and headers (the handler's body
/// is empty).
fn call(w: &World, which: usize, req: Request<()>) -> Response<()> {
    let mut svc = w.layers[which].layer(tower::service_fn(handler));
    w.rt.block_on(async {
        svc.ready().await.unwrap();
        svc.call(req).await.unwrap().map(|_| ())
    })
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let native = MemoryStore::new();
        let express = Express::new(["secret"]).unwrap();
        let express_store = MemoryStore::builder()
            .with_format(Arc::new(express.clone()))
            .build();
        let key = Key::from(&[7u8; 64]);
        let layers = [
            SessionLayer::new(native.clone()),
            SessionLayer::new(native.clone()).with_signing_keys([key.clone()]),
            SessionLayer::new(native.clone()).with_header(HeaderName::from_static("x-session-id")),
            SessionLayer::new(express_store.clone()),
        ];
        let mut w = World {
            rt,
            native,
            express_store,
            express,
            key,
            known: Default::default(),
            layers,
        };
        // Issue one session through each cookie configuration; the header one shares the unsigned
        // cookie's store and token.
        for which in [0, SIGNED, EXPRESS] {
            let res = call(&w, which, Request::new(()));
            assert_eq!(res.status(), StatusCode::OK);
            let v = issued(which, &res);
            assert_eq!(v.len(), 1, "{:?}", res.headers());
            token_of(&w, which, &v[0]);
            w.known[which] = v[0].clone();
        }
        w.known[HEADER] = w.known[0].clone();
        // The known sessions are found again through their own configuration.
        for which in 0..CONFIGS {
            let mut req = Request::new(());
            let (name, value) = carrier(which, &w.known[which]);
            req.headers_mut()
                .insert(name, HeaderValue::from_str(&value).unwrap());
            let res = call(&w, which, req);
            assert_ne!(res.headers()["x-n"], "0", "configuration {which}");
        }
        w
    })
}

/// The header that presents `value` in configuration `which`.
fn carrier(which: usize, value: &str) -> (&'static str, String) {
    match which {
        HEADER => ("x-session-id", value.to_owned()),
        _ => ("cookie", format!("{}={value}", NAMES[which])),
    }
}

fn counts(w: &World) -> (u64, u64) {
    w.rt.block_on(async {
        (
            w.native.count().await.unwrap(),
            w.express_store.count().await.unwrap(),
        )
    })
}

fuzz_target!(|input: Input| {
    let w = world();
    let which = usize::from(input.config) % CONFIGS;
    let known = &w.known[which];
    let mut req = Request::new(());
    let mut first = true;
    for (name, value) in input.headers.iter().take(16) {
        let Ok(name) = HeaderName::from_bytes(name) else {
            continue;
        };
        let mut value = value.clone();
        if first && input.use_known {
            let mut v = if which == HEADER {
                known.clone().into_bytes()
            } else {
                format!("{}={known}; ", NAMES[which]).into_bytes()
            };
            v.extend_from_slice(&value);
            value = v;
        }
        first = false;
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            continue;
        };
        req.headers_mut().append(name, value);
    }
    let sent: Vec<String> = req
        .headers()
        .iter()
        .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let res = call(w, which, req);
    assert_eq!(res.status(), StatusCode::OK);
    // The handler used the session: the response is private.
    assert_eq!(
        res.headers().get(CACHE_CONTROL).map(HeaderValue::as_bytes),
        Some(&b"no-store"[..]),
        "{:?}",
        res.headers()
    );
    assert!(
        res.headers().get_all(VARY).iter().any(|v| {
            let carrier = if which == HEADER {
                "x-session-id"
            } else {
                "cookie"
            };
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|f| f.trim().eq_ignore_ascii_case(carrier)))
        }),
        "{:?}",
        res.headers()
    );
    // A new token is only ever a well-formed one, and never one the client made up.
    let values = issued(which, &res);
    assert!(values.len() <= 1, "{values:?}");
    let fresh: Vec<String> = values.into_iter().filter(|v| v != known).collect();
    for v in &fresh {
        let t = token_of(w, which, v);
        // The client cannot have sent it (the server's randomness: 256 bits, or express's 192).
        assert!(
            !sent.iter().any(|s| s.contains(t.as_str())),
            "adopted a client's token {v:?}"
        );
        // End the session this input made (so the store stays small), through the layer itself.
        let mut req = Request::new(());
        req.extensions_mut().insert(Destroy);
        let (name, value) = carrier(which, v);
        req.headers_mut()
            .insert(name, HeaderValue::from_str(&value).unwrap());
        let res = call(w, which, req);
        assert_eq!(res.status(), StatusCode::OK);
    }
    // Only the sessions issued at start-up remain: nothing the client sent became a key.
    assert_eq!(counts(w), (2, 1));
});
