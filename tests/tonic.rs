//! A real Tonic server with the session layer (header transport) and a real Tonic client on loopback.

#[path = "../examples/greeter/mod.rs"]
mod greeter;

#[path = "support/recording.rs"]
mod recording;

use greeter::{say_hello, Greeter, SESSION_HEADER};
use recording::Recording;
use sessionforge::store::{MemoryStore, SessionStore};
use sessionforge::SessionLayer;

async fn start(store: MemoryStore) -> tonic::transport::Channel {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let layer = SessionLayer::new(store).with_header(http::HeaderName::from_static(SESSION_HEADER));
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(Greeter)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tonic_client_keeps_its_session_through_the_metadata_header() {
    let store = MemoryStore::new();
    let channel = start(store.clone()).await;
    let (reply, token) = say_hello(channel.clone(), "Ada", None).await.unwrap();
    assert_eq!(reply.message, "Hello, Ada!");
    assert_eq!(reply.count, 1);
    let token = token.expect("a new session returns its token in metadata");
    assert_eq!(token.len(), 43, "a native token");
    assert!(sessionforge::id::Token::parse(&token).is_ok());

    let (reply, again) = say_hello(channel.clone(), "Ada", Some(&token))
        .await
        .unwrap();
    assert_eq!(reply.count, 2);
    assert!(again.is_none(), "a known token is not sent again");
    assert_eq!(store.count().await.unwrap(), 1);

    // A forged token gets a fresh session, not an error.
    let (reply, fresh) = say_hello(channel, "Eve", Some(&"A".repeat(43)))
        .await
        .unwrap();
    assert_eq!(reply.count, 1);
    assert!(fresh.is_some());
    assert_eq!(store.count().await.unwrap(), 2);
}

#[tokio::test]
async fn a_failed_save_reaches_a_grpc_client_as_unavailable_not_an_http_error() {
    let store = Recording::new(MemoryStore::new());
    store.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let layer =
        SessionLayer::new(store.clone()).with_header(http::HeaderName::from_static(SESSION_HEADER));
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(Greeter)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // No token: the handler runs without a load; the layer's create fails after it.
    let status = say_hello(channel, "Ada", None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "session store unavailable");
    assert_eq!(store.take().len(), 1, "exactly one (failed) create");
}
