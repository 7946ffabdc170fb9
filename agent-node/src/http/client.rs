//! The client side: [`Connector`], a tower service from URI to connection that dials a peer's
//! service, for tonic's `Endpoint::connect_with_connector` (and any hyper client).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use nullport_protocol::NodeId;
use tracing::Instrument;

use crate::channel::Channel;
use crate::error::Error;
use crate::node::Node;

/// Makes every connection of an HTTP client a channel to `service` on `peer`, dialed through
/// `node`'s relay: `Endpoint::from_static("http://peer").connect_with_connector(connector(node,
/// peer, "greeter"))` gives a tonic `Channel` over nullport. The URI is ignored (only the
/// `:authority` header carries it); tonic reconnects, by dialing again, when a connection
/// ends.
pub fn connector(node: Arc<Node>, peer: NodeId, service: &str) -> Connector {
    Connector {
        node,
        peer,
        service: Arc::from(service),
    }
}

/// A tower `Service<Uri>` whose every call is [`Node::dial`]: the response is the
/// end-to-end [`Channel`] (wrapped for hyper), the error the dial's [`Error`] (`Denied`,
/// `PeerOffline`, `Timeout`, ...). Made by [`connector`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Connector {
    node: Arc<Node>,
    peer: NodeId,
    service: Arc<str>,
}

impl Connector {
    /// The peer every connection goes to.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// The service every connection is opened for.
    pub fn service(&self) -> &str {
        &self.service
    }
}

/// What a [`Connector`] call returns.
type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<Channel>, Error>> + Send>>;

impl tower::Service<http::Uri> for Connector {
    type Response = TokioIo<Channel>;
    type Error = Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let (node, peer, service) = (self.node.clone(), self.peer, self.service.clone());
        let span =
            tracing::debug_span!("http_connect", peer = %peer.fmt_short(), service = %service);
        Box::pin(
            async move {
                match node.dial(peer, &service).await {
                    Ok(channel) => {
                        tracing::debug!("connected");
                        Ok(TokioIo::new(channel))
                    }
                    Err(e) => {
                        tracing::debug!("connect failed: {e}");
                        Err(e)
                    }
                }
            }
            .instrument(span),
        )
    }
}
