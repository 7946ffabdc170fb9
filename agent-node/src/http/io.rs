//! [`PeerChannel`] and [`Incoming`]: accepted channels as tonic's server takes them.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use nullport_protocol::NodeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tracing::Span;

use super::PeerIdentity;
use crate::channel::Channel;
#[cfg(doc)]
use crate::{Node, http::serve_tonic};

/// An accepted [`Channel`] as tonic's server takes it: tokio `AsyncRead` + `AsyncWrite`, and
/// tonic's `Connected` with the caller's [`PeerIdentity`] as connection info, which tonic
/// inserts into the extensions of every request on it. Carries the connection's tracing span
/// (`http`, with the caller and service), entered while it is read or written.
pub struct PeerChannel {
    channel: Channel,
    identity: PeerIdentity,
    span: Span,
}

impl std::fmt::Debug for PeerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerChannel")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl PeerChannel {
    /// Wraps an accepted channel; its identity is the channel's proven peer and service.
    pub fn new(channel: Channel) -> Self {
        let span = connection_span(channel.peer(), channel.service().as_str());
        Self::with_span(channel, span)
    }

    pub(super) fn with_span(channel: Channel, span: Span) -> Self {
        let identity = PeerIdentity {
            node_id: channel.peer(),
            service: channel.service().as_str().to_owned(),
        };
        Self {
            channel,
            identity,
            span,
        }
    }

    /// Who is on the other end.
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// The channel underneath.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

impl tonic::transport::server::Connected for PeerChannel {
    type ConnectInfo = PeerIdentity;

    fn connect_info(&self) -> PeerIdentity {
        self.identity.clone()
    }
}

impl AsyncRead for PeerChannel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        Pin::new(&mut this.channel).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerChannel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        Pin::new(&mut this.channel).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        Pin::new(&mut this.channel).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        Pin::new(&mut this.channel).poll_shutdown(cx)
    }
}

impl Drop for PeerChannel {
    fn drop(&mut self) {
        let (bytes_in, bytes_out) = self.channel.byte_counts();
        self.span
            .in_scope(|| tracing::debug!(bytes_in, bytes_out, "connection ended"));
    }
}

/// Accepted channels as the stream tonic's `serve_with_incoming` takes, fed through an mpsc
/// channel: for serving a tonic router from your own accept loop (for instance next to other
/// services in [`Node::serve`]'s handlers) rather than with [`serve_tonic`]. Ends when every
/// sender is dropped.
#[derive(Debug)]
pub struct Incoming {
    accepted: mpsc::Receiver<PeerChannel>,
}

impl Incoming {
    /// The stream of what is sent on `accepted`'s sender.
    pub fn new(accepted: mpsc::Receiver<PeerChannel>) -> Self {
        Self { accepted }
    }
}

impl futures_core::Stream for Incoming {
    type Item = Result<PeerChannel, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .accepted
            .poll_recv(cx)
            .map(|next| next.map(Ok))
    }
}

/// The tracing span of one HTTP connection: the caller and the service.
pub(super) fn connection_span(peer: NodeId, service: &str) -> Span {
    tracing::info_span!("http", peer = %peer.fmt_short(), service = %service)
}
