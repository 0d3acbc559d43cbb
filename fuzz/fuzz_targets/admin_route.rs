//! Admin request routing: arbitrary methods, paths, query strings, headers and peers reach an
//! `AdminService` over a `MemoryStore` holding a few sessions. Never a panic, never a 5xx; a refused
//! request changes nothing, and nothing ever adds a session.
#![no_main]

use arbitrary::Arbitrary;
use http::{HeaderName, HeaderValue, Method, Request};
use libfuzzer_sys::fuzz_target;
use sessionforge::admin::{AdminAuth, AdminService, PeerAddr};
use sessionforge::expiry::{Clock, SystemClock};
use sessionforge::id::Token;
use sessionforge::store::{ManagedStore, MemoryStore, Record, SessionStore};
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;
use tower::{Service, ServiceExt};

#[derive(Arbitrary, Debug)]
struct Input {
    auth: u8,
    method: Vec<u8>,
    path: String,
    query: Option<String>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// None: no peer address; Some(true): 127.0.0.1; Some(false): a remote address.
    peer: Option<bool>,
    body: Vec<u8>,
}

struct World {
    rt: tokio::runtime::Runtime,
    store: MemoryStore,
    services: [AdminService<MemoryStore>; 4],
}

const SESSIONS: u64 = 3;

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = MemoryStore::new();
        let services = [
            AdminService::new(store.clone()),
            AdminService::new(store.clone()).with_auth(AdminAuth::bearer("s3cret")),
            AdminService::new(store.clone()).with_auth(AdminAuth::bearer_or_loopback("s3cret")),
            AdminService::new(store.clone())
                .with_auth(AdminAuth::insecure_open_to_anyone())
                .with_max_page(2),
        ];
        World {
            rt,
            store,
            services,
        }
    })
}

fn refill(w: &World) {
    w.rt.block_on(async {
        while w.store.count().await.unwrap() < SESSIONS {
            let now = SystemClock.now();
            let r = Record {
                created_at: now,
                last_access: now,
                expires: now.plus(Duration::from_secs(3600)),
                deadline: now.plus(Duration::from_secs(7200)),
                user_agent: Some("fuzz".into()),
                user: Some("u".into()),
                data: Default::default(),
            };
            w.store.create(&Token::generate().store_key(), &r).await.unwrap();
        }
    });
}

fuzz_target!(|input: Input| {
    let w = world();
    refill(w);
    let Ok(method) = Method::from_bytes(&input.method) else {
        return;
    };
    let uri = match &input.query {
        Some(q) => format!("{}?{}", input.path, q),
        None => input.path.clone(),
    };
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in input.headers.iter().take(8) {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            builder = builder.header(n, v);
        }
    }
    let Ok(mut req) = builder.body(input.body.clone()) else {
        return;
    };
    match input.peer {
        None => {}
        Some(true) => {
            req.extensions_mut().insert(PeerAddr("127.0.0.1:5000".parse::<SocketAddr>().unwrap()));
        }
        Some(false) => {
            req.extensions_mut().insert(PeerAddr("203.0.113.9:5000".parse::<SocketAddr>().unwrap()));
        }
    }
    let mut svc = w.services[usize::from(input.auth % 4)].clone();
    let res = w.rt.block_on(async {
        ServiceExt::<Request<Vec<u8>>>::ready(&mut svc).await.unwrap();
        svc.call(req).await.unwrap()
    });
    let status = res.status().as_u16();
    assert!(status < 500, "{status} for {input:?}");
    if (400..500).contains(&status) {
        // Refused or unroutable: nothing deleted.
        assert_eq!(w.rt.block_on(w.store.count()).unwrap(), SESSIONS);
    }
    assert!(w.rt.block_on(w.store.count()).unwrap() <= SESSIONS);
});
