//! gRPC sessions with Tonic: the token travels in the `x-session-id` metadata header.
//!
//! ```text
//! cargo run --example tonic_greeter
//! ```
//!
//! The example starts a server on 127.0.0.1:50051 and calls it three times with one session: the
//! greeting count goes 1, 2, 3. No `protoc` is needed: the service code is written out in
//! `examples/greeter/mod.rs`.

mod greeter;

use greeter::{say_hello, Greeter, SESSION_HEADER};
use sessionforge::store::MemoryStore;
use sessionforge::SessionLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: std::net::SocketAddr = std::env::var("GREETER_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:50051".into())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let layer = SessionLayer::new(MemoryStore::new())
        .with_header(http::HeaderName::from_static(SESSION_HEADER));
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(Greeter)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    println!("greeter listening on {addr}");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut token = None;
    for name in ["Ada", "Grace", "Barbara"] {
        let (reply, new_token) = say_hello(channel.clone(), name, token.as_deref()).await?;
        token = token.or(new_token);
        println!(
            "{} (greeting #{} in this session)",
            reply.message, reply.count
        );
    }
    Ok(())
}
