//! Sessions in plain Hyper 1 (hyper-util), no framework: a `tower::service_fn` wrapped in the layer.
//!
//! ```text
//! cargo run --example hyper_counter
//! curl -c jar -b jar http://127.0.0.1:3000/
//! ```
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use sessionforge::store::MemoryStore;
use sessionforge::{Session, SessionLayer};
use std::convert::Infallible;
use tokio::net::TcpListener;
use tower::ServiceBuilder;

/// Counts this visitor's requests.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let session = req
        .extensions()
        .get::<Session>()
        .expect("the SessionLayer wraps this service")
        .clone();
    let counted = async {
        let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
        session.insert("n", n).await?;
        Ok::<_, sessionforge::SessionError>(n)
    };
    Ok(match counted.await {
        Ok(n) => Response::new(Full::new(Bytes::from(format!("{n}\n")))),
        Err(e) => {
            let mut res = Response::new(Full::new(Bytes::from(e.public_message())));
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            res
        }
    })
}

/// Serves connections from `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    let service = ServiceBuilder::new()
        .layer(SessionLayer::new(MemoryStore::new()))
        .service_fn(handle);
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener).await;
    Ok(())
}
