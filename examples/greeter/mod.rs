//! A hand-written gRPC `greeter.Greeter` service: the code `tonic-build` would generate from
//!
//! ```proto
//! syntax = "proto3";
//! package greeter;
//! service Greeter { rpc SayHello (HelloRequest) returns (HelloReply); }
//! message HelloRequest { string name = 1; }
//! message HelloReply { string message = 1; uint64 count = 2; }
//! ```
//!
//! written out by hand so the example needs no `protoc` on a fresh machine. Shared by the
//! `tonic_greeter` example and its test.
#![allow(dead_code)]

use sessionforge::Session;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// The request message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// Who to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// The reply message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
    /// How many times this session has been greeted.
    #[prost(uint64, tag = "2")]
    pub count: u64,
}

/// The gRPC method path.
pub const SAY_HELLO: &str = "/greeter.Greeter/SayHello";

/// The header (gRPC metadata key) carrying the session token.
pub const SESSION_HEADER: &str = "x-session-id";

/// The greeter: counts greetings per session.
#[derive(Clone, Default)]
pub struct Greeter;

impl Greeter {
    async fn say_hello(req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let session = req
            .extensions()
            .get::<Session>()
            .cloned()
            .ok_or_else(|| Status::internal("SessionLayer missing"))?;
        let count: u64 = session.get("count").await.map_err(status)?.unwrap_or(0) + 1;
        session.insert("count", count).await.map_err(status)?;
        let name = req.into_inner().name;
        Ok(Response::new(HelloReply {
            message: format!("Hello, {name}!"),
            count,
        }))
    }
}

/// A session error as a gRPC status: UNAVAILABLE when the store is down, INTERNAL otherwise.
fn status(e: sessionforge::SessionError) -> Status {
    if e.status() == http::StatusCode::SERVICE_UNAVAILABLE {
        Status::unavailable(e.public_message())
    } else {
        Status::internal(e.public_message())
    }
}

impl NamedService for Greeter {
    const NAME: &'static str = "greeter.Greeter";
}

impl tower::Service<http::Request<Body>> for Greeter {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() != SAY_HELLO {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let method = tower::service_fn(Greeter::say_hello);
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default());
            Ok(grpc.unary(UnaryFn(method), req).await)
        })
    }
}

/// Adapts a `tower::Service<Request<M>>` to tonic's `UnaryService`.
struct UnaryFn<S>(S);

impl<S, M, R> tonic::server::UnaryService<M> for UnaryFn<S>
where
    S: tower::Service<Request<M>, Response = Response<R>, Error = Status>,
{
    type Response = R;
    type Future = S::Future;

    fn call(&mut self, request: Request<M>) -> Self::Future {
        self.0.call(request)
    }
}

/// A client call: says hello, carrying `token` if given; answers the reply and the token the server
/// sent back (only for a new session).
pub async fn say_hello(
    channel: tonic::transport::Channel,
    name: &str,
    token: Option<&str>,
) -> Result<(HelloReply, Option<String>), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = Request::new(HelloRequest { name: name.into() });
    if let Some(t) = token {
        req.metadata_mut().insert(
            SESSION_HEADER,
            t.parse()
                .map_err(|_| Status::invalid_argument("bad token"))?,
        );
    }
    let res = grpc
        .unary(
            req,
            http::uri::PathAndQuery::from_static(SAY_HELLO),
            ProstCodec::<HelloRequest, HelloReply>::default(),
        )
        .await?;
    let token = res
        .metadata()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((res.into_inner(), token))
}
