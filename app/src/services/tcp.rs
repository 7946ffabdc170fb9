//! `tcp`: each channel is a TCP connection to a local address (SSH, HTTP, a database),
//! optionally started with a PROXY protocol v2 header naming the caller, or relayed as HTTP
//! with the caller named in a header ([`super::http_peer`]).

use std::io;
use std::time::Duration;

use nullport_protocol::DenyReason;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::http_peer::{CallerHeaders, HttpRelay, Target};
use super::io::{Counted, connect_tcp, forward};
use super::{Caller, Kind, Ready};

/// A `tcp` service.
#[derive(Debug)]
pub struct Tcp<'a> {
    /// `host:port` to connect to.
    pub addr: &'a str,
    /// Start with a PROXY v2 header naming the caller.
    pub proxy_protocol: bool,
    /// Relay HTTP/1.1 requests, each with `X-Nullport-Peer` naming the caller.
    pub http_peer_header: bool,
}

/// A connection made for one channel, and how the channel is served over it.
pub enum Connected {
    /// Bytes copied both ways.
    Bytes(TcpStream),
    /// HTTP requests relayed, the caller named in each.
    Http(TcpStream, Box<HttpRelay>),
}

impl Kind for Tcp<'_> {
    type Ready = Connected;

    async fn prepare(&self, caller: &Caller<'_>) -> Result<Connected, DenyReason> {
        let mut tcp = connect_tcp(self.addr).await.map_err(|e| {
            tracing::warn!("service target {} unavailable: {e}", self.addr);
            DenyReason::Unavailable
        })?;
        let proxy_header = self
            .proxy_protocol
            .then(|| proxy_v2_header(&caller.peer, caller.alias));
        if let Some(header) = &proxy_header {
            tcp.write_all(header).await.map_err(|e| {
                tracing::warn!("writing the PROXY header to {}: {e}", self.addr);
                DenyReason::Unavailable
            })?;
        }
        if !self.http_peer_header {
            return Ok(Connected::Bytes(tcp));
        }
        let target = Target {
            addr: self.addr.to_owned(),
            proxy_header,
        };
        let relay = HttpRelay::new(target, CallerHeaders::new(&caller.peer, caller.alias));
        Ok(Connected::Http(tcp, Box::new(relay)))
    }
}

impl Ready for Connected {
    fn abandon(self) {
        let (Connected::Bytes(tcp) | Connected::Http(tcp, _)) = &self;
        crate::services::io::reset_on_drop(tcp);
    }

    async fn run(self, mut channel: Counted<nullport_node::Channel>) -> io::Result<()> {
        let mut tcp = match self {
            Connected::Bytes(tcp) => tcp,
            Connected::Http(tcp, relay) => return (*relay).run(channel, tcp).await,
        };
        let ended = forward(&mut channel, &mut tcp).await.map(drop);
        if ended.is_ok() {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), channel.get_mut().shutdown()).await;
        } else {
            // One side failed: neither may look like a complete stream to the other (the
            // channel, dropped without its close frame, reads as reset at the caller).
            crate::services::io::reset_on_drop(&tcp);
        }
        ended
    }
}

/// PROXY protocol v2 TLV type carrying the caller's NodeId (the application-specific range).
pub const PP2_TYPE_NULLPORT_PEER: u8 = 0xE0;
/// PROXY protocol v2 TLV type carrying the caller's alias on this node, if it has one.
pub const PP2_TYPE_NULLPORT_ALIAS: u8 = 0xE1;
/// PROXY protocol v2 `PP2_TYPE_UNIQUE_ID`: also the caller's NodeId, for receivers that log
/// only the standard TLVs.
pub const PP2_TYPE_UNIQUE_ID: u8 = 0x05;

/// A PROXY protocol v2 header for a connection made on behalf of `peer`: command PROXY,
/// family UNSPEC (there is no caller address: the caller is a key), and TLVs naming the
/// caller (its NodeId as `PP2_TYPE_UNIQUE_ID` and [`PP2_TYPE_NULLPORT_PEER`], its alias as
/// [`PP2_TYPE_NULLPORT_ALIAS`]).
pub fn proxy_v2_header(peer: &nullport_protocol::NodeId, alias: Option<&str>) -> Vec<u8> {
    const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
    let id = peer.to_string();
    let mut tlvs = Vec::new();
    let mut tlv = |kind: u8, value: &[u8]| {
        let value = &value[..value.len().min(255)];
        tlvs.push(kind);
        tlvs.extend_from_slice(&(value.len() as u16).to_be_bytes());
        tlvs.extend_from_slice(value);
    };
    tlv(PP2_TYPE_UNIQUE_ID, id.as_bytes());
    tlv(PP2_TYPE_NULLPORT_PEER, id.as_bytes());
    if let Some(alias) = alias {
        tlv(PP2_TYPE_NULLPORT_ALIAS, alias.as_bytes());
    }
    let mut header = Vec::with_capacity(16 + tlvs.len());
    header.extend_from_slice(&SIGNATURE);
    header.push(0x21); // version 2, command PROXY
    header.push(0x00); // AF_UNSPEC, UNSPEC
    header.extend_from_slice(&(tlvs.len() as u16).to_be_bytes());
    header.extend_from_slice(&tlvs);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_v2_header_layout() {
        let peer = nullport_protocol::Identity::from_seed([5; 32]).node_id();
        let h = proxy_v2_header(&peer, Some("laptop"));
        assert_eq!(&h[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(h[12], 0x21);
        assert_eq!(h[13], 0x00);
        let len = usize::from(u16::from_be_bytes([h[14], h[15]]));
        assert_eq!(len, h.len() - 16);
        let id = peer.to_string();
        let mut tlvs = &h[16..];
        let mut seen = Vec::new();
        while let [kind, a, b, rest @ ..] = tlvs {
            let n = usize::from(u16::from_be_bytes([*a, *b]));
            seen.push((*kind, String::from_utf8_lossy(&rest[..n]).into_owned()));
            tlvs = &rest[n..];
        }
        assert_eq!(
            seen,
            vec![(0x05, id.clone()), (0xE0, id), (0xE1, "laptop".to_owned())]
        );
    }
}
