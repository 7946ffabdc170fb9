//! gRPC and HTTP over nullport (the `http` feature): tonic clients whose every HTTP/2
//! connection is an end-to-end channel ([`Node::dial`]), and tonic, axum or plain hyper/tower
//! services served to the callers a node allows, each request carrying the caller's proven
//! identity ([`PeerIdentity`]) in its extensions.
//!
//! Calling a gRPC service on another node:
//!
//! ```no_run
//! # async fn example(node: std::sync::Arc<nullport_node::Node>, peer: nullport_protocol::NodeId) -> Result<(), Box<dyn std::error::Error>> {
//! // Every connection of this channel is `node.dial(peer, "greeter")`; hand it to any
//! // tonic client (`GreeterClient::new(channel)`).
//! let channel = tonic::transport::Endpoint::from_static("http://greeter.nullport")
//!     .connect_with_connector(nullport_node::http::connector(node.clone(), peer, "greeter"))
//!     .await?;
//! # drop(channel); Ok(()) }
//! ```
//!
//! Serving one to allowed callers (denied callers are refused in the handshake, before any
//! HTTP byte; see [`serve_tonic`]):
//!
//! ```no_run
//! # async fn example(node: nullport_node::Node, friend: nullport_protocol::NodeId, routes: tonic::service::Routes) -> Result<(), nullport_node::Error> {
//! let router = tonic::transport::Server::builder().add_routes(routes);
//! nullport_node::http::serve_tonic(&node, "greeter", router, move |peer, _| peer == friend).await?;
//! # Ok(()) }
//! ```
//!
//! In a handler, [`peer`] (or `request.extensions().get::<PeerIdentity>()`, or axum's
//! `Extension<PeerIdentity>`) names the caller: the NodeId the end-to-end handshake proved,
//! never anything the caller wrote into the request.
//!
//! Failures are the crate's [`Error`]: dialing fails as [`Error::Denied`],
//! [`Error::PeerOffline`] and the like, which tonic reports as an `Unavailable` status whose
//! source chain holds the error ([`node_error`] finds it); serving fails as [`Error::Http`].

mod client;
mod io;
mod server;

use nullport_protocol::NodeId;

pub use crate::error::HttpError;
pub use client::{Connector, connector};
pub use io::{Incoming, PeerChannel};
pub use server::{serve_connection, serve_http, serve_tonic};

#[cfg(doc)]
use crate::Node;
use crate::error::Error;

/// Who sent a request: the caller's NodeId as proven by the end-to-end handshake, and the
/// nullport service its channel was opened for. Inserted into the extensions of every request
/// served by [`serve_tonic`], [`serve_http`] and [`serve_connection`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// The caller.
    pub node_id: NodeId,
    /// The service the caller's channel was opened for.
    pub service: String,
}

/// Requests whose extensions [`peer`] can read: tonic's `Request` and `http::Request`.
pub trait HasExtensions {
    /// The `PeerIdentity` in this request's extensions, if any.
    fn peer_identity(&self) -> Option<&PeerIdentity>;
}

impl<T> HasExtensions for tonic::Request<T> {
    fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.extensions().get::<PeerIdentity>()
    }
}

impl<B> HasExtensions for http::Request<B> {
    fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.extensions().get::<PeerIdentity>()
    }
}

/// The caller of a request served over nullport (`None` for a request that did not come
/// through [`serve_tonic`], [`serve_http`] or [`serve_connection`]).
pub fn peer<R: HasExtensions + ?Sized>(request: &R) -> Option<&PeerIdentity> {
    request.peer_identity()
}

/// The node [`Error`] behind a failure, found anywhere in its source chain: for a tonic
/// `Status` from a call whose connection could not be made (`Denied`, `PeerOffline`, ...),
/// or any error that wraps one.
pub fn node_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<Error>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}
