//! The callee's side once the caller is authenticated: its request, for a decision.

use std::fmt;

use crate::channel::Channel;
use crate::error::Error;
use crate::node_id::NodeId;
use crate::resume::tickets::{PendingTicket, UnacceptedOpen};
use crate::wire::{DenyReason, FrameType, ServiceName};

/// An authenticated caller's request, waiting for the callee's decision. No application
/// byte can flow until [`Request::accept`].
pub struct Request {
    pub(crate) channel: Channel,
    blob: Vec<u8>,
    /// The resumption secret of this full handshake, kept only if the request is accepted
    /// (a denied caller gets no cheaper way back).
    ticket: Option<PendingTicket>,
    /// The first bytes R1 of a resumed open carried (empty otherwise, or once taken).
    first: Vec<u8>,
    /// An earlier open of the same dial already reached this node.
    duplicate: bool,
    /// For a resumed open: records, unless accepted, that it took no effect.
    unaccepted: Option<UnacceptedOpen>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("peer", &self.channel.peer())
            .field("service", self.channel.service())
            .field("blob_len", &self.blob.len())
            .finish()
    }
}

impl Request {
    pub(crate) fn new(channel: Channel, blob: Vec<u8>, ticket: Option<PendingTicket>) -> Self {
        Self {
            channel,
            blob,
            ticket,
            first: Vec::new(),
            duplicate: false,
            unaccepted: None,
        }
    }

    pub(crate) fn unless_accepted(mut self, open: UnacceptedOpen) -> Self {
        self.unaccepted = Some(open);
        self
    }

    pub(crate) fn with_first(mut self, first: Vec<u8>) -> Self {
        self.first = first;
        self
    }

    pub(crate) fn duplicate_if(mut self, duplicate: bool) -> Self {
        self.duplicate = duplicate;
        self
    }

    /// True when this open named an earlier resumed open of the same dial (one a relay said
    /// had failed) that did reach this node and was accepted, or is still undecided (or is
    /// too old to tell): that one may have taken effect, so this one must be denied with
    /// [`DenyReason::Duplicate`] without the application seeing it.
    /// [`Request::accept`] refuses it.
    pub fn is_duplicate(&self) -> bool {
        self.duplicate
    }

    /// Takes the first bytes that R1 of a resumed open carried (empty for a full handshake,
    /// whose first bytes come as the channel's first frame). Hand them to the application
    /// as the channel's first data, and only after [`Request::accept`]; a denied request
    /// drops them unread.
    pub fn take_first(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.first)
    }

    /// The caller, as proven by the handshake.
    pub fn peer(&self) -> NodeId {
        self.channel.peer()
    }

    /// The requested service.
    pub fn service(&self) -> &ServiceName {
        self.channel.service()
    }

    /// The opaque blob (capability tokens) the caller sent.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// The Noise handshake hash of this channel.
    pub fn handshake_hash(&self) -> &[u8; 32] {
        self.channel.handshake_hash()
    }

    /// Accepts: appends the accept frame to `out` and returns the channel. A duplicate
    /// ([`Request::is_duplicate`]) cannot be accepted: [`Error::Duplicate`].
    pub fn accept(mut self, out: &mut Vec<u8>) -> Result<Channel, Error> {
        if self.duplicate {
            return Err(Error::Duplicate);
        }
        self.channel.write_frame(FrameType::Accept, &[], out)?;
        if let Some(open) = self.unaccepted.take() {
            open.accepted();
        }
        if let Some(ticket) = self.ticket.take() {
            ticket.keep();
        }
        Ok(self.channel)
    }

    /// Refuses: appends the deny frame (with only the reason code) to `out`.
    pub fn deny(mut self, reason: DenyReason, out: &mut Vec<u8>) -> Result<(), Error> {
        self.channel
            .write_frame(FrameType::Deny, &[reason.code()], out)
    }
}
