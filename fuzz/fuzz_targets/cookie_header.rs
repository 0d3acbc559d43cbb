//! Cookie and header extraction, through the public layer: arbitrary request headers reach a
//! `SessionLayer` over a `MemoryStore` (cookie transport unsigned and signed, header transport). The
//! handler always succeeds, so the layer must answer 200, never panic, never adopt a token the server
//! did not issue, and only ever hand out well-formed tokens.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use sessionforge::cookie::Key;
use sessionforge::id::Token;
use sessionforge::store::{ManagedStore, MemoryStore};
use sessionforge::{Session, SessionLayer};
use std::convert::Infallible;
use std::sync::OnceLock;
use tower::{Layer, Service, ServiceExt};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Which layer configuration: 0 unsigned cookie, 1 signed cookie, 2 header `x-session-id`.
    config: u8,
    /// Put the one known-good token (issued at start-up) into the first cookie/header value.
    use_known: bool,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

struct World {
    rt: tokio::runtime::Runtime,
    store: MemoryStore,
    /// The token of the one session stored at start-up (unsigned, and its signed form).
    known: String,
    known_signed: String,
    layers: [SessionLayer; 3],
}

/// Marks the clean-up request that ends a session the fuzz input made (input cannot set extensions).
#[derive(Clone)]
struct Destroy;

async fn handler(req: Request<()>) -> Result<Response<Full<Bytes>>, Infallible> {
    let session = req.extensions().get::<Session>().expect("the layer adds a session").clone();
    if req.extensions().get::<Destroy>().is_some() {
        session.destroy().await.expect("the memory store does not fail");
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    let n: u64 = session.get("n").await.ok().flatten().unwrap_or(0);
    session.insert("n", n + 1).await.expect("a small value fits");
    Ok(Response::new(Full::new(Bytes::from(n.to_string()))))
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = MemoryStore::new();
        let key = Key::from(&[7u8; 64]);
        let layers = [
            SessionLayer::new(store.clone()),
            SessionLayer::new(store.clone()).with_signing_keys([key.clone()]),
            SessionLayer::new(store.clone())
                .with_header(HeaderName::from_static("x-session-id")),
        ];
        // Issue one session through each of the unsigned and signed layers.
        let issue = |layer: &SessionLayer| -> String {
            let mut svc = layer.layer(tower::service_fn(handler));
            let res = rt.block_on(async {
                svc.ready().await.unwrap();
                svc.call(Request::new(())).await.unwrap()
            });
            let c = res.headers()["set-cookie"].to_str().unwrap().to_owned();
            c.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
        };
        let known = issue(&layers[0]);
        let known_signed = issue(&layers[1]);
        World {
            rt,
            store,
            known,
            known_signed,
            layers,
        }
    })
}

fuzz_target!(|input: Input| {
    let w = world();
    let which = usize::from(input.config % 3);
    let mut req = Request::new(());
    let mut first = true;
    for (name, value) in input.headers.iter().take(16) {
        let Ok(name) = HeaderName::from_bytes(name) else {
            continue;
        };
        let mut value = value.clone();
        if first && input.use_known {
            let known = if which == 1 { &w.known_signed } else { &w.known };
            let mut v = if which == 2 {
                known.clone().into_bytes()
            } else {
                format!("id={known}; ").into_bytes()
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
    let mut svc = w.layers[which].layer(tower::service_fn(handler));
    let res = w.rt.block_on(async {
        svc.ready().await.unwrap();
        svc.call(req).await.unwrap()
    });
    assert_eq!(res.status(), StatusCode::OK);
    // A new token is only ever a well-formed one, and never one the client made up.
    let issued = match which {
        2 => res.headers().get("x-session-id"),
        _ => res.headers().get("set-cookie"),
    };
    if let Some(v) = issued {
        let v = v.to_str().expect("issued tokens are ASCII");
        let v = match which {
            2 => v,
            _ => v.split(';').next().unwrap().split_once('=').unwrap().1,
        };
        if which != 1 {
            assert!(Token::parse(v).is_ok(), "{v:?}");
        }
        let known = if which == 1 { &w.known_signed } else { &w.known };
        if v != known {
            // A fresh token: the client cannot have sent it (it has 256 bits of the server's randomness).
            assert!(!sent.iter().any(|s| s.contains(v)), "adopted a client's token {v:?}");
        }
    }
    // End the session this input made (so the store stays small), through the layer itself.
    if let Some(v) = issued.map(|v| v.to_str().unwrap().to_owned()) {
        let v = match which {
            2 => v,
            _ => v.split(';').next().unwrap().split_once('=').unwrap().1.to_owned(),
        };
        let known = if which == 1 { &w.known_signed } else { &w.known };
        if &v != known {
            let mut req = Request::new(());
            req.extensions_mut().insert(Destroy);
            let (name, value) = match which {
                2 => ("x-session-id", v),
                _ => ("cookie", format!("id={v}")),
            };
            req.headers_mut().insert(name, HeaderValue::from_str(&value).unwrap());
            let mut svc = w.layers[which].layer(tower::service_fn(handler));
            w.rt.block_on(async {
                svc.ready().await.unwrap();
                svc.call(req).await.unwrap()
            });
        }
    }
    // Only the two sessions issued at start-up remain: nothing the client sent became a key.
    assert_eq!(w.rt.block_on(w.store.count()).unwrap(), 2);
});
