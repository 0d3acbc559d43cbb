//! [`SessionService`]: the middleware a [`SessionLayer`](crate::SessionLayer) wraps around a service.

use crate::config::LayerConfig;
use crate::future::ResponseFuture;
use crate::session::Session;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// Middleware that gives each request a [`Session`] and saves it after the response.
///
/// The inner service is called from `call` itself (sessions load lazily, inside the handler), so the
/// service that `poll_ready` readied is the one called and no clone of it is needed. Its error type is
/// kept: store failures become responses, never errors of the service.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    config: Arc<LayerConfig>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> SessionService<S> {
    pub(crate) fn new(inner: S, config: Arc<LayerConfig>) -> Self {
        SessionService { inner, config }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Send + 'static,
{
    type Response = Response<crate::future::SessionBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let headers = req.headers();
        let config = &self.config;
        let presented = config
            .transport
            .extract(headers, &*config.session.format, &config.signer);
        // Kept as the header value (a reference-counted clone) and turned into text only if a new
        // session is created.
        let user_agent = headers.get(USER_AGENT).cloned();
        let grpc = headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let session = Session::new(config.session.clone(), presented, user_agent);
        req.extensions_mut().insert(session.clone());
        ResponseFuture::new(self.inner.call(req), session, self.config.clone(), grpc)
    }
}
