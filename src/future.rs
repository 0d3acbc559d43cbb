//! [`ResponseFuture`]: calls the inner service, then saves the session and sets the token.

use crate::commit::Outcome;
use crate::config::{LayerConfig, StoreErrorPolicy};
use crate::error::SessionError;
use crate::session::Session;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pin_project! {
    /// Response future of [`SessionService`](crate::SessionService).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // Waiting for the inner service.
        Inner {
            #[pin]
            fut: F,
            session: Option<Session>,
            config: Arc<LayerConfig>,
            grpc: bool,
        },
        // Saving the session; the response is inside.
        Saving {
            fut: BoxFuture<Response<SessionBody<B>>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn new(fut: F, session: Session, config: Arc<LayerConfig>, grpc: bool) -> Self {
        ResponseFuture {
            state: State::Inner {
                fut,
                session: Some(session),
                config,
                grpc,
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Send + 'static,
{
    type Output = Result<Response<SessionBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner {
                    fut,
                    session,
                    config,
                    grpc,
                } => {
                    let mut res = ready!(fut.poll(cx))?;
                    let session = session.take().expect("polled after completion");
                    if !session.touched() {
                        // The handler never used the session: nothing to save or send.
                        return Poll::Ready(Ok(res.map(SessionBody::inner)));
                    }
                    // It read session data: no shared cache may keep it for someone else.
                    config.transport.mark_private(res.headers_mut());
                    if session.nothing_to_commit() {
                        // Only read: nothing to save or send.
                        return Poll::Ready(Ok(res.map(SessionBody::inner)));
                    }
                    // Counted from here, so a drain that starts now waits for this save.
                    let guard = config.shutdown.as_ref().map(|s| s.save_guard());
                    let fut = Box::pin(finish(res, session, config.clone(), *grpc, guard));
                    this.state.set(State::Saving { fut });
                }
                StateProj::Saving { fut } => return fut.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

/// Saves the session and writes the token (or the error) into the response.
async fn finish<B>(
    res: Response<B>,
    session: Session,
    config: Arc<LayerConfig>,
    grpc: bool,
    _in_flight: Option<crate::shutdown::SaveGuard>,
) -> Response<SessionBody<B>> {
    let outcome = session.commit().await;
    let mut res = res.map(SessionBody::inner);
    match outcome {
        Ok(Outcome::Nothing) => {}
        Ok(Outcome::Send {
            token,
            expires,
            persistent,
            fresh,
        }) => {
            // Measured after the store call, so the cookie's `Max-Age` is what is left then.
            let now = config.session.clock.now();
            config.transport.send(
                res.headers_mut(),
                &*config.session.format,
                &config.signer,
                &token,
                expires,
                now,
                persistent,
                fresh,
            );
        }
        Ok(Outcome::Remove) => config.transport.remove(res.headers_mut()),
        Err(e) => {
            crate::log::save_failed(&e);
            if config.policy == StoreErrorPolicy::Fail {
                let mut err = error_response(&e, grpc);
                config.transport.mark_private(err.headers_mut());
                return err;
            }
        }
    }
    res
}

/// The answer for a session that could not be saved: JSON for HTTP, a trailers-only status for gRPC.
pub(crate) fn error_response<B>(e: &SessionError, grpc: bool) -> Response<SessionBody<B>> {
    if grpc {
        let code = if e.status() == http::StatusCode::SERVICE_UNAVAILABLE {
            "14"
        } else {
            "13"
        };
        let mut res = Response::new(SessionBody::full(Bytes::new()));
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from_static(code));
        h.insert("grpc-message", HeaderValue::from_static(e.public_message()));
        return res;
    }
    let mut res = Response::new(SessionBody::full(Bytes::from(e.json_body())));
    *res.status_mut() = e.status();
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

pin_project! {
    /// The response body of [`SessionService`](crate::SessionService): the handler's body, or the
    /// layer's own JSON error when the session could not be saved.
    pub struct SessionBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { #[pin] body: Full<Bytes> },
    }
}

impl<B> SessionBody<B> {
    fn inner(body: B) -> Self {
        SessionBody {
            kind: Kind::Inner { body },
        }
    }

    fn full(bytes: Bytes) -> Self {
        SessionBody {
            kind: Kind::Full {
                body: Full::new(bytes),
            },
        }
    }
}

impl<B> Body for SessionBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { body } => body
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { body } => body.size_hint(),
        }
    }
}

impl<B: Default> Default for SessionBody<B> {
    fn default() -> Self {
        SessionBody::inner(B::default())
    }
}

impl<B> std::fmt::Debug for SessionBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionBody")
    }
}
