//! One accepted connection, served with hyper's HTTP/1.1 connection driver over a
//! [`TimedIo`], with request and response bodies that keep the connection's [`Phase`]
//! current. The service is any axum-style `Service` (a `Router`), so what produces the
//! response (and how it streams files) stays the caller's business.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use super::Shared;
use super::phase::Phase;
use super::timed_io::TimedIo;
use super::zero_copy::{Jobs, PlaceholderBody, SendFile};

/// Serves `stream` until the client leaves, a deadline passes or `shutdown` fires (then
/// the request in progress finishes first). Holds `permit` (a slot under the cap) throughout.
pub(super) async fn serve<S>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    service: S,
    shutdown: CancellationToken,
    permit: OwnedSemaphorePermit,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // Small API answers should not wait for Nagle.
    let _ = stream.set_nodelay(true);
    shared.metrics.opened();
    let phase = Arc::new(Phase::new());
    let mut io = TimedIo::new(
        stream,
        phase.clone(),
        shared.limits,
        shared.refusals,
        shared.metrics.clone(),
    );
    let jobs = shared.zero_copy.then(|| Arc::new(Jobs::default()));
    if let Some(jobs) = &jobs {
        io = io.with_zero_copy(jobs.clone());
    }
    let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
        phase.request_started();
        let (parts, body) = req.into_parts();
        let body = Body::new(Watched::request(body, phase.clone()));
        let mut req = Request::from_parts(parts, body);
        req.extensions_mut().insert(ConnectInfo(peer));
        let call = service.clone().oneshot(req);
        let phase = phase.clone();
        let jobs = jobs.clone();
        async move {
            let resp = zero_copy(call.await?, jobs.as_deref());
            Ok::<_, Infallible>(resp.map(|b| Watched::response(b, phase)))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), handler);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    shared.metrics.closed();
    drop(permit);
    if let Err(e) = result {
        tracing::debug!(listener = shared.name, %peer, error = %e, "connection closed on an error");
    }
}

/// On a zero-copy connection, a response that offers a [`SendFile`] gets placeholder bytes
/// for its body, and the file range is queued to be sent in their place.
fn zero_copy(mut resp: Response<Body>, jobs: Option<&Jobs>) -> Response<Body> {
    let Some(send) = resp.extensions_mut().remove::<SendFile>() else {
        return resp;
    };
    let Some(jobs) = jobs else {
        return resp;
    };
    let len = send.len;
    jobs.push(send);
    // The streaming body (and its descriptor) is dropped here, unused.
    resp.map(|_| Body::new(PlaceholderBody::new(len)))
}

/// Which side of the exchange a [`Watched`] body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The client's request body: the handler waiting on it waits on the client.
    Request,
    /// Our response body: its end (or drop) ends the request.
    Response,
}

/// A body that reports to the connection's [`Phase`].
struct Watched<B> {
    inner: B,
    phase: Arc<Phase>,
    role: Role,
}

impl<B> Watched<B> {
    fn request(inner: B, phase: Arc<Phase>) -> Self {
        Self {
            inner,
            phase,
            role: Role::Request,
        }
    }

    fn response(inner: B, phase: Arc<Phase>) -> Self {
        Self {
            inner,
            phase,
            role: Role::Response,
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        match this.role {
            Role::Request => this.phase.waiting_for_body(poll.is_pending()),
            Role::Response if matches!(poll, Poll::Ready(None)) => this.phase.response_done(),
            Role::Response => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        match self.role {
            Role::Request => self.phase.waiting_for_body(false),
            Role::Response => self.phase.response_done(),
        }
    }
}
