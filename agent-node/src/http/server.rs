//! The serving side: incoming channels for one service admitted by policy (the rest denied in
//! the handshake), each served as one HTTP connection whose requests carry the caller's
//! [`PeerIdentity`].

use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use nullport_protocol::{DenyReason, NodeId, ServiceName};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, Span};

use super::io::{Incoming, PeerChannel, connection_span};
use super::{HttpError, PeerIdentity};
use crate::channel::Channel;
use crate::error::Error;
use crate::handshake::IncomingChannel;
use crate::node::Node;

/// Errors of the services served (tonic's and hyper's `BoxError`).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Accepted channels waiting for tonic to take them.
const ACCEPTED_QUEUE: usize = 16;

/// Admits the incoming channels of one node for one service: callers `allow` admits are
/// accepted, every other caller (another service, or not allowed) is denied in the handshake,
/// before any application byte. Handshake verdicts run on tasks owned here.
struct Gate<'a, A> {
    node: &'a Node,
    service: ServiceName,
    allow: A,
    pending: JoinSet<Option<(Channel, Span)>>,
}

impl<'a, A> Gate<'a, A>
where
    A: Fn(NodeId, &str) -> bool,
{
    fn new(node: &'a Node, service: &str, allow: A) -> Result<Self, Error> {
        Ok(Self {
            node,
            service: ServiceName::new(service)?,
            allow,
            pending: JoinSet::new(),
        })
    }

    /// The next accepted channel, with its connection span; `None` once the node is shut
    /// down. Cancel-safe: a caller already admitted stays queued for the next call.
    async fn next(&mut self) -> Option<(Channel, Span)> {
        loop {
            let incoming = tokio::select! {
                Some(done) = self.pending.join_next() => match done {
                    Ok(Some(accepted)) => return Some(accepted),
                    // Denied, or the accept failed (logged in its span).
                    _ => continue,
                },
                incoming = self.node.accept() => incoming?,
            };
            self.admit(incoming);
        }
    }

    fn admit(&mut self, incoming: IncomingChannel) {
        let span = connection_span(incoming.peer(), incoming.service());
        let refusal = if incoming.service() != self.service.as_str() {
            Some(DenyReason::UnknownService)
        } else if !(self.allow)(incoming.peer(), incoming.service()) {
            Some(DenyReason::NotAllowed)
        } else {
            None
        };
        let task_span = span.clone();
        self.pending.spawn(
            async move {
                if let Some(reason) = refusal {
                    match incoming.deny(reason).await {
                        Ok(()) => tracing::info!("denied: {reason}"),
                        Err(e) => tracing::info!("denied ({reason}), but sending it failed: {e}"),
                    }
                    return None;
                }
                match incoming.accept().await {
                    Ok(channel) => {
                        tracing::debug!("accepted");
                        Some((channel, span))
                    }
                    Err(e) => {
                        tracing::info!("accept failed: {e}");
                        None
                    }
                }
            }
            .instrument(task_span),
        );
    }
}

/// Serves a tonic router (`Server::builder().add_service(...)`, with any layers and settings)
/// to the callers of `service` on `node` that `allow(peer, service)` admits, until the node
/// shuts down. Every other caller of the node, whatever its service, is denied in the handshake
/// (`NotAllowed`, or `UnknownService`), so this serves the node's whole incoming side: to
/// serve several services from one node, accept channels yourself (or use [`Node::serve`])
/// and feed this service's to `router.serve_with_incoming(Incoming::new(..))`.
///
/// Every request carries the caller's [`PeerIdentity`] in its extensions. Fails at once with
/// `Error::Protocol` for an invalid service name, and with [`HttpError::Server`] if tonic
/// stops with an error.
pub async fn serve_tonic<L, ResBody, A>(
    node: &Node,
    service: &str,
    router: tonic::transport::server::Router<L>,
    allow: A,
) -> Result<(), Error>
where
    A: Fn(NodeId, &str) -> bool + Send + Sync + 'static,
    L: tower::Layer<tonic::service::Routes>,
    L::Service: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error: Into<BoxError> + Send,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let mut gate = Gate::new(node, service, allow)?;
    let (send, accepted) = mpsc::channel(ACCEPTED_QUEUE);
    let accepting = async move {
        while let Some((channel, span)) = gate.next().await {
            if send
                .send(PeerChannel::with_span(channel, span))
                .await
                .is_err()
            {
                break;
            }
        }
        // Dropping `send` here ends the stream, and tonic returns.
    };
    let serving = router.serve_with_incoming(Incoming::new(accepted));
    tokio::pin!(serving);
    let served = tokio::select! {
        served = &mut serving => served,
        () = accepting => serving.await,
    };
    served.map_err(|e| {
        Error::Http(HttpError::Server {
            service: service.to_owned(),
            source: Arc::new(e),
        })
    })
}

/// Serves an HTTP service (an axum `Router`, or any tower service of `http::Request`s) to the
/// callers of `service` on `node` that `allow(peer, service)` admits, until the node shuts
/// down; each accepted channel is one HTTP/1.1 or HTTP/2 connection (told apart by its first
/// bytes), served on a task owned by this future. As with [`serve_tonic`], every other caller
/// of the node is denied in the handshake; within [`Node::serve`]'s handlers use
/// [`serve_connection`] instead.
///
/// Every request carries the caller's [`PeerIdentity`] in its extensions (with axum:
/// `Extension<PeerIdentity>`). A connection that fails is logged in its span and ends alone.
/// Fails only at once, with `Error::Protocol`, for an invalid service name.
pub async fn serve_http<S, B, A>(node: &Node, service: &str, svc: S, allow: A) -> Result<(), Error>
where
    A: Fn(NodeId, &str) -> bool + Send + Sync + 'static,
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut gate = Gate::new(node, service, allow)?;
    let mut connections = JoinSet::new();
    loop {
        let next = tokio::select! {
            next = gate.next() => next,
            Some(_) = connections.join_next() => continue,
        };
        let Some((channel, span)) = next else {
            break;
        };
        let svc = svc.clone();
        connections.spawn(
            async move {
                match serve_channel(channel, svc).await {
                    Ok(()) => tracing::debug!("connection ended"),
                    Err(e) => tracing::info!("{e}"),
                }
            }
            .instrument(span),
        );
    }
    Ok(())
}

/// Serves one HTTP/1.1 or HTTP/2 connection on an accepted channel (for instance in a
/// [`Node::serve`] handler), every request carrying the caller's [`PeerIdentity`]; returns
/// when the connection ends. Fails with [`HttpError::Connection`] if the caller broke the
/// protocol or the channel failed.
pub async fn serve_connection<S, B>(channel: Channel, svc: S) -> Result<(), Error>
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let span = connection_span(channel.peer(), channel.service().as_str());
    serve_channel(channel, svc).instrument(span).await
}

async fn serve_channel<S, B>(channel: Channel, svc: S) -> Result<(), Error>
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let peer = PeerIdentity {
        node_id: channel.peer(),
        service: channel.service().as_str().to_owned(),
    };
    let svc = TowerToHyperService::new(WithPeer {
        inner: svc,
        peer: peer.clone(),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer bounds how long a caller may take to send a request's headers.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    tracing::debug!("serving HTTP");
    let served = builder.serve_connection(TokioIo::new(channel), svc).await;
    served.map_err(|e| {
        Error::Http(HttpError::Connection {
            peer: peer.node_id,
            service: peer.service,
            source: Arc::from(e),
        })
    })
}

/// Inserts the caller's identity into every request before the service sees it.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: PeerIdentity,
}

impl<S, B> tower::Service<http::Request<B>> for WithPeer<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        self.inner.call(request)
    }
}
