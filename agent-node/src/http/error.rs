//! [`HttpError`]: what fails while serving gRPC or HTTP over channels.

use std::sync::Arc;

use nullport_protocol::NodeId;

/// A failure of the HTTP layer, inside [`crate::Error::Http`]. Dialing failures are not here:
/// they are the node's own errors (`Denied`, `PeerOffline`, ...).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The tonic server stopped with an error.
    #[error("gRPC server for service {service:?} failed: {source}")]
    Server {
        /// The nullport service it served.
        service: String,
        /// tonic's error.
        source: Arc<tonic::transport::Error>,
    },
    /// Serving one HTTP connection (one channel) failed: the caller broke the protocol, or
    /// the channel ended before the exchange was complete.
    #[error("HTTP connection from {peer} to service {service:?} failed: {source}")]
    Connection {
        /// The caller.
        peer: NodeId,
        /// The service its channel was for.
        service: String,
        /// hyper's error (its source chain may hold the channel's `io::Error`).
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
}
